"""report.json and JUnit report.xml: what Jenkins and a person read after a release."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List

import pytest

from cdtools.errors import BuildError, PushError, RolledBack, UsageError
from cdtools.report import FAILED, OK, SKIPPED, Report, jenkins_properties
from cdtools.settings import from_env


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def report(clock: FakeClock) -> Report:
    # 2024-05-01T12:00:00Z, so the timestamps are known
    return Report("release", clock=clock, wallclock=lambda: 1714564800.0,
                  properties={"build_number": "41", "git_commit": "0123456789abcdef"})


def _run_failing_release(report: Report, clock: FakeClock) -> None:
    with report.step("build") as rec:
        clock.now += 2.5
        rec.image_id = "sha256:" + "a" * 64
        rec.tags = ["127.0.0.1:5000/hello:41", "127.0.0.1:5000/hello:0123456"]
    with pytest.raises(PushError):
        with report.step("push") as rec:
            clock.now += 1.25
            raise PushError("push of 127.0.0.1:5000/hello:41 denied: requested access to the resource is denied")
    report.skip_rest(["build", "tag", "push", "deploy"])


def _cases(xml: bytes) -> List[ET.Element]:
    return ET.fromstring(xml).findall("./testsuite/testcase")


def test_a_step_that_raises_is_recorded_failed_and_the_error_goes_on(report: Report, clock: FakeClock) -> None:
    _run_failing_release(report, clock)

    assert [(r.name, r.status) for r in report.steps] == [
        ("build", OK), ("push", FAILED), ("tag", SKIPPED), ("deploy", SKIPPED)]
    push = report.steps[1]
    assert push.exit_code == 5 and push.error == "PushError"
    assert "denied" in push.message
    assert report.steps[0].duration_s == pytest.approx(2.5)
    assert push.duration_s == pytest.approx(1.25)
    assert report.exit_code == 5 and not report.ok
    assert report.steps[2].message == "not run: step 'push' failed"


def test_report_json_describes_each_step(report: Report, clock: FakeClock, tmp_path: Path) -> None:
    _run_failing_release(report, clock)
    path = tmp_path / "out" / "report.json"  # folders are made: --report reports/x.json
    report.write(json_path=str(path))

    doc = json.loads(path.read_text())
    assert doc["status"] == "failed" and doc["exit_code"] == 5
    assert doc["started_at"] == "2024-05-01T12:00:00Z"
    assert doc["properties"] == {"build_number": "41", "git_commit": "0123456789abcdef"}
    build, push = doc["steps"][0], doc["steps"][1]
    assert build == {
        "name": "build", "status": "ok", "duration_s": 2.5, "image_id": "sha256:" + "a" * 64,
        "digest": None, "tags": ["127.0.0.1:5000/hello:41", "127.0.0.1:5000/hello:0123456"],
        "container": None, "message": "", "exit_code": None, "error": None,
    }
    assert push["status"] == "failed" and push["exit_code"] == 5 and push["error"] == "PushError"
    assert [s["status"] for s in doc["steps"][2:]] == ["skipped", "skipped"]


def test_junit_xml_has_one_testcase_per_step_and_a_failure_for_the_failed_one(
        report: Report, clock: FakeClock, tmp_path: Path) -> None:
    _run_failing_release(report, clock)
    path = tmp_path / "report.xml"
    report.write(junit_path=str(path))

    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    # the counts the Jenkins JUnit plugin shows in the build summary
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "0", "2")
    assert suite.get("timestamp") == "2024-05-01T12:00:00"
    assert {p.get("name"): p.get("value") for p in suite.iter("property")} == {
        "build_number": "41", "git_commit": "0123456789abcdef"}

    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("cdtools.release", "build"), ("cdtools.release", "push"),
        ("cdtools.release", "tag"), ("cdtools.release", "deploy")]
    assert float(cases[0].get("time") or "nan") == pytest.approx(2.5)
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    assert "image: sha256:" + "a" * 64 in (cases[0].findtext("system-out") or "")

    failures = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["push"]
    failure = failures[0].find("failure")
    assert failure is not None
    assert failure.get("message") == ("push of 127.0.0.1:5000/hello:41 denied: "
                                      "requested access to the resource is denied")
    assert failure.get("type") == "PushError"
    assert [c.get("name") for c in cases if c.find("skipped") is not None] == ["tag", "deploy"]


def test_xml_escapes_markup_and_drops_what_xml_cannot_carry(report: Report) -> None:
    # Build output quoted in a message carries markup characters, terminal colours
    # and even NULs; any of them unescaped makes the plugin reject the whole file.
    nasty = 'step "<x> & \'y\'" \x1b[31mred\x1b[0m nul\x00 bell\x07 end'
    with pytest.raises(BuildError):
        with report.step("build"):
            raise BuildError(nasty)
    xml = report.to_junit()

    failure = _cases(xml)[0].find("failure")
    assert failure is not None
    assert failure.get("message") == "step \"<x> & 'y'\" red nul\ufffd bell\ufffd end"
    assert failure.text == failure.get("message")
    assert b"\x1b" not in xml and b"\x00" not in xml


def test_multiline_text_survives_in_xml(report: Report) -> None:
    rec = report.skip("deploy", "unchanged:\r\nsame image, same spec")
    rec.container = "hello"
    case = _cases(report.to_junit())[0]
    skipped = case.find("skipped")
    assert skipped is not None and skipped.get("message") == "unchanged:\nsame image, same spec"
    assert case.findtext("system-out") == "container: hello"


def test_other_exceptions_and_interrupts_are_recorded_too(report: Report) -> None:
    with pytest.raises(ValueError):
        with report.step("tag"):
            raise ValueError("bad  value\nsecond line")
    with pytest.raises(KeyboardInterrupt):
        with report.step("deploy"):
            raise KeyboardInterrupt()
    tag, deploy = report.steps
    assert (tag.status, tag.message, tag.exit_code, tag.error) == (
        FAILED, "ValueError: bad value second line", 1, "ValueError")
    # an aborted Jenkins build still shows which step it stopped in
    assert (deploy.status, deploy.message, deploy.exit_code) == (FAILED, "interrupted", 130)
    assert report.exit_code == 1  # the first failure decides


def test_a_step_may_mark_itself_skipped(report: Report) -> None:
    with report.step("deploy") as rec:
        rec.status = SKIPPED
        rec.message = "unchanged: nothing to do"
    assert report.ok and report.exit_code == 0
    case = _cases(report.to_junit())[0]
    assert case.find("skipped") is not None and case.find("failure") is None


def test_rolled_back_deploy_keeps_its_own_exit_code(report: Report) -> None:
    with pytest.raises(RolledBack):
        with report.step("deploy") as rec:
            rec.container = "hello"
            raise RolledBack("new container exited (code 1); previous container hello is running again")
    doc = report.to_json()
    assert doc["exit_code"] == 6
    assert doc["steps"][0]["container"] == "hello"


def test_all_ok_report(report: Report, clock: FakeClock) -> None:
    for name in ("build", "tag", "push", "deploy"):
        with report.step(name):
            clock.now += 1
    root = ET.fromstring(report.to_junit())
    assert root.get("failures") == "0" and root.get("tests") == "4"
    assert report.to_json()["status"] == "ok"
    assert float(root.get("time") or "nan") == pytest.approx(4.0)


def test_unwritable_report_path_is_a_usage_error(report: Report, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot write the report"):
        report.write_json(str(blocker / "report.json"))


def test_jenkins_properties_come_from_settings_and_skip_empty_ones() -> None:
    settings = from_env({"BUILD_NUMBER": "41", "GIT_COMMIT": "abc", "BRANCH_NAME": "main",
                         "JOB_NAME": "hello/main", "HOME": "/nonexistent"})
    assert jenkins_properties(settings) == {
        "job_name": "hello/main", "build_number": "41", "git_commit": "abc", "git_branch": "main"}
