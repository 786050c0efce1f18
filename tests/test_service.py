"""Swarm service deploys against the real engine as a single-node swarm manager (issue 7's done-when).

The ingress routing mesh does not answer on this machine, and with host-mode
publishing only one task of a node can hold a port; so "keeps answering" is
measured on the tasks themselves: every 50 ms the test lists the tasks the
swarm wants running and asks each running one for its page at its own bridge
address, as a load balancer in front of them would (a task told to shut down
is out of the rotation even while its container stops).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

from cdtools import deploy
from deploy_fixtures import free_port, get
from service_fixtures import (BROKEN_CMD, Pushed, pushed, registry_env, remove_service, serving_tasks,  # noqa: F401
                              swarm)

pytestmark = pytest.mark.e2e


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Tuple[int, str, str]:
    code = deploy.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def service(api: Any, name: str) -> Any:
    resp = api.request("GET", f"/services/{name}")
    return resp.json() if resp.status == 200 else None


def image_of(api: Any, name: str) -> str:
    return service(api, name)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def pages(api: Any, name: str) -> List[str]:
    """The page each task the swarm wants running answers, at its own address."""
    return sorted(get(f"http://{ip}:8080/", timeout=5) or "<no answer>" for _, ip in serving_tasks(api, name))


class Poller(threading.Thread):
    """Samples (tasks running and wanted, pages they answered) every 50 ms until stopped."""

    def __init__(self, api: Any, name: str) -> None:
        super().__init__(daemon=True)
        self.api, self.name = api, name
        self.samples: List[Tuple[int, List[str]]] = []
        self.done = threading.Event()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            while not self.done.is_set():
                running = [ip for state, ip in serving_tasks(self.api, self.name) if state == "running" and ip]
                answered = [page for page in (get(f"http://{ip}:8080/", timeout=0) for ip in running)
                            if page is not None]
                self.samples.append((len(running), answered))
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> None:
        self.done.set()
        self.join(30)


@pytest.fixture
def svc(swarm: Any, unique: str) -> Any:
    name = f"{unique}-svc"
    yield name
    remove_service(swarm, name)


def test_three_replicas_move_to_the_new_digest_start_first_and_keep_answering(capsys, swarm, svc, pushed: Pushed,
                                                                              registry_env) -> None:
    v1 = pushed.httpd("1")
    pushed.httpd("2")
    code, out, err = run(capsys, "--target", f"service:{svc}", "--image", v1, "--replicas", "3", "--monitor", "1",
                         "--stop-timeout", "1")
    assert code == 0, err
    assert pages(swarm, svc) == ["page 1"] * 3

    poller = Poller(swarm, svc)
    poller.start()
    try:
        # by tag: cdtools asks the registry for its digest and pins it
        code, out, err = run(capsys, "--target", f"service:{svc}", "--image", pushed.tag("2"),
                             "--update-order", "start-first", "--parallelism", "1", "--monitor", "1")
    finally:
        poller.stop()
    assert code == 0, err
    assert poller.error is None, poller.error
    assert image_of(swarm, svc) == f"{pushed.tag('2')}@{pushed.digests['2']}"
    doc = service(swarm, svc)
    assert doc["Spec"]["UpdateConfig"]["Order"] == "start-first"
    assert doc["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    assert pages(swarm, svc) == ["page 2"] * 3

    samples = poller.samples
    assert len(samples) > 20, samples
    # start-first: a new task runs before an old one is told to stop, so never fewer than the replicas
    assert min(n for n, _ in samples) >= 3, samples
    # and at every moment some task answered; the pages moved from 1 to 2
    assert all(answered for _, answered in samples), [s for s in samples if not s[1]]
    seen = [set(answered) for _, answered in samples]
    assert seen[0] == {"page 1"} and seen[-1] == {"page 2"}
    assert "converged" in out and "update service" in out


def test_broken_image_is_rolled_back_and_the_failed_tasks_are_named(capsys, swarm, svc, pushed: Pushed,
                                                                    registry_env) -> None:
    v1 = pushed.httpd("1")
    broken = pushed.httpd("broken", cmd=BROKEN_CMD)
    code, _, err = run(capsys, "--target", f"service:{svc}", "--image", v1, "--replicas", "2", "--monitor", "1",
                       "--stop-timeout", "1")
    assert code == 0, err
    before = service(swarm, svc)["Version"]["Index"]

    code, out, err = run(capsys, "--target", f"service:{svc}", "--image", broken, "--update-order", "start-first",
                         "--failure-action", "rollback", "--monitor", "2")
    assert code == 6, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert "rolled it back" in lines[0]
    assert f"{svc}." in lines[0] and "non-zero exit (3)" in lines[0]  # the failed task, by name, and its error
    assert "cdtools-broken-marker" in out  # its last log lines
    # the previous version runs again, on every replica
    doc = service(swarm, svc)
    assert doc["Version"]["Index"] > before
    assert image_of(swarm, svc) == v1
    assert doc["UpdateStatus"]["State"] == "rollback_completed"
    assert pages(swarm, svc) == ["page 1"] * 2


def test_first_deploy_creates_the_service_from_the_spec_with_host_mode_ports(capsys, swarm, svc, pushed: Pushed,
                                                                              registry_env, tmp_path: Path) -> None:
    port = free_port()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "Env": ["GREETING=hello"],
        "Labels": {"team": "web"},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": str(port)}]},
                       "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}},
    }))
    v1, v2 = pushed.httpd("1"), pushed.httpd("2")
    code, out, err = run(capsys, "--target", f"service:{svc}", "--image", v1, "--spec", str(spec),
                         "--publish-mode", "host", "--monitor", "1", "--stop-timeout", "1")
    assert code == 0, err
    doc = service(swarm, svc)
    task = doc["Spec"]["TaskTemplate"]
    assert task["ContainerSpec"]["Env"] == ["GREETING=hello"]
    assert task["ContainerSpec"]["Labels"] == {"team": "web"}
    assert task["RestartPolicy"] == {"Condition": "on-failure", "MaxAttempts": 2}
    assert doc["Spec"]["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": port, "PublishMode": "host"}]
    # a host port can't be held by two tasks on one node: cdtools chose stop-first for it
    assert doc["Spec"]["UpdateConfig"]["Order"] == "stop-first"
    assert doc["Spec"]["UpdateConfig"]["FailureAction"] == "rollback"
    assert get(f"http://127.0.0.1:{port}/") == "page 1"

    code, out, err = run(capsys, "--target", f"service:{svc}", "--image", v2, "--spec", str(spec),
                         "--publish-mode", "host", "--monitor", "1")
    assert code == 0, err
    assert get(f"http://127.0.0.1:{port}/") == "page 2"

    # the same again changes nothing
    version = service(swarm, svc)["Version"]["Index"]
    code, out, err = run(capsys, "--target", f"service:{svc}", "--image", v2, "--spec", str(spec),
                         "--publish-mode", "host", "--monitor", "1")
    assert code == 0, err
    assert "nothing to do" in out
    assert service(swarm, svc)["Version"]["Index"] == version


def test_a_new_service_whose_tasks_fail_is_removed_and_named(capsys, swarm, svc, pushed: Pushed,
                                                             registry_env) -> None:
    broken = pushed.httpd("broken", cmd=BROKEN_CMD)
    code, out, err = run(capsys, "--target", f"service:{svc}", "--image", broken)
    assert code == 7, (out, err)
    assert f"{svc}.1" in err and "non-zero exit (3)" in err and "removed" in err
    assert service(swarm, svc) is None
    assert swarm.request("GET", f"/configs/{svc}-cdtools-lock").status == 404  # the lock went too


def test_a_tag_the_registry_does_not_have_changes_nothing(capsys, swarm, svc, pushed: Pushed, registry_env) -> None:
    code, out, err = run(capsys, "--target", f"service:{svc}", "--image", pushed.tag("never-pushed"))
    assert code == 1, (out, err)  # nothing changed
    assert "digest" in err and "nothing was changed" in err
    assert service(swarm, svc) is None

