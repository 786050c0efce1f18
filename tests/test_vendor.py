"""The one-file zipapp: same source, same bytes; runs with ``python3 -I -S`` alone."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from cdtools import vendor
from cdtools.steps import STEPS

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "cdtools"


def _env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH" and not k.startswith("PYTHON")}
    env.update(extra)
    return env


def _py(*args: str, cwd: Path, env: Optional[Dict[str, str]] = None) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or _env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(dest: Path) -> Path:
    """A copy of the package as it is now: other work may change cdtools/ while tests run."""
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _snapshot(tmp_path_factory.mktemp("src") / "cdtools")


@pytest.fixture(scope="module")
def pyz(snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "cdtools.pyz"
    vendor.run(str(out), source=str(snapshot))
    return out


def _no_traceback(proc: "subprocess.CompletedProcess[str]") -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


# -- same source, same bytes ---------------------------------------------------------------------


def test_vendoring_twice_gives_identical_bytes(tmp_path: Path) -> None:
    # the command a Jenkinsfile runs, twice, from the checkout
    outputs = []
    for name in ("one", "two"):
        out = tmp_path / name / "cdtools.pyz"  # a missing folder is made, as dist/ in the Jenkinsfile
        proc = _py("-m", "cdtools.vendor", "-o", str(out), cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        # the printed checksum is the file's: a user can compare it with an artifact's
        assert f"sha256 {_sha256(out)}" in proc.stdout
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_checkout_metadata_does_not_change_the_bytes(tmp_path: Path) -> None:
    a = _snapshot(tmp_path / "a" / "cdtools")
    b = tmp_path / "b" / "cdtools"
    shutil.copytree(a, b)
    # what differs between two checkouts of the same commit, or a checkout after a test run
    later = time.time() + 86400 * 400
    for path in b.rglob("*"):
        os.utime(path, (later, later))
    (b / "steps.py").chmod(0o755)
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "steps.cpython-311.pyc").write_bytes(b"\x00junk")
    (b / "steps.py~").write_text("editor backup")
    (b / ".steps.py.swp").write_bytes(b"vim")

    pa, pb = tmp_path / "a.pyz", tmp_path / "b.pyz"
    ra = vendor.run(str(pa), source=str(a))
    rb = vendor.run(str(pb), source=str(b))
    assert pa.read_bytes() == pb.read_bytes()
    assert ra.sha256 == rb.sha256 == _sha256(pa)

    # and the check can fail: one changed byte of source is a different archive
    (b / "steps.py").write_bytes((b / "steps.py").read_bytes() + b"\n")
    assert vendor.run(str(pb), source=str(b)).sha256 != ra.sha256


def test_archive_layout_is_pinned(pyz: Path, snapshot: Path) -> None:
    data = pyz.read_bytes()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert pyz.stat().st_mode & 0o111 == 0o111  # ./cdtools.pyz runs too

    with zipfile.ZipFile(pyz) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert names[0] == "__main__.py"
        expected = {f"cdtools/{p.relative_to(snapshot).as_posix()}" for p in snapshot.rglob("*.py")}
        assert set(names) == expected | {"__main__.py"}
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
            assert info.external_attr >> 16 == stat.S_IFREG | 0o644, info.filename
            assert info.compress_type == zipfile.ZIP_STORED
        assert zf.read("cdtools/steps.py") == (snapshot / "steps.py").read_bytes()


def test_source_date_epoch_sets_the_stamp(tmp_path: Path, snapshot: Path) -> None:
    out = tmp_path / "cdtools.pyz"
    proc = _py("-m", "cdtools.vendor", "-o", str(out), "--source", str(snapshot), cwd=REPO,
               env=_env(SOURCE_DATE_EPOCH="1700000001"))
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as zf:
        # 2023-11-14T22:13:21Z, rounded down to zip's two-second resolution
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def test_bad_source_date_epoch_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "cdtools.pyz"
    proc = _py("-m", "cdtools.vendor", "-o", str(out), cwd=REPO, env=_env(SOURCE_DATE_EPOCH="yesterday"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "cdtools vendor: error: SOURCE_DATE_EPOCH='yesterday': expected whole seconds since 1970"]
    assert not out.exists()


def test_output_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    proc = _py("-m", "cdtools.vendor", "-o", str(tmp_path), cwd=REPO)
    assert proc.returncode == 2
    assert "is a directory" in proc.stderr
    _no_traceback(proc)


def test_compress_is_smaller_and_still_runs(tmp_path: Path, snapshot: Path, pyz: Path) -> None:
    small = tmp_path / "small.pyz"
    vendor.run(str(small), source=str(snapshot), compress=True)
    assert small.stat().st_size < pyz.stat().st_size
    proc = _py("-I", "-S", str(small), cwd=tmp_path)
    assert proc.returncode == 0 and "vendor" in proc.stdout


# -- running from the archive alone --------------------------------------------------------------


def test_pyz_without_arguments_lists_every_step(pyz: Path, tmp_path: Path) -> None:
    proc = _py("-I", "-S", str(pyz), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "usage: cdtools.pyz STEP [ARGS...]"
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    assert listed == [step.name for step in STEPS]


def _present(snapshot: Path) -> List[str]:
    return [step.name for step in STEPS if (snapshot / f"{step.name}.py").exists()]


@pytest.mark.parametrize("step", [s.name for s in STEPS])
def test_every_step_in_the_archive_answers_help(step: str, pyz: Path, snapshot: Path, tmp_path: Path) -> None:
    if step not in _present(snapshot):
        pytest.skip(f"cdtools/{step}.py is not written yet")
    # -I -S: no site-packages, no PYTHONPATH, no current folder; only the archive
    proc = _py("-I", "-S", str(pyz), step, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    _no_traceback(proc)


def test_unknown_step_is_one_line_and_exit_2(pyz: Path, tmp_path: Path) -> None:
    proc = _py("-I", "-S", str(pyz), "biuld", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "cdtools.pyz: error: unknown step 'biuld' (did you mean build?); run without arguments to list the steps"]


def test_a_step_missing_from_the_copy_is_refused_cleanly(tmp_path: Path) -> None:
    partial = _snapshot(tmp_path / "src" / "cdtools")
    (partial / "vendor.py").unlink()
    out = tmp_path / "partial.pyz"
    vendor.run(str(out), source=str(partial))
    proc = _py("-I", "-S", str(out), "vendor", "--help", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("partial.pyz: error: step 'vendor' is not in this copy of cdtools")
    _no_traceback(proc)


def test_the_pyz_writes_a_byte_identical_copy_of_itself(pyz: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.pyz"
    proc = _py("-I", "-S", str(pyz), "vendor", "-o", str(copy), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert copy.read_bytes() == pyz.read_bytes()


def test_pyz_runs_as_an_executable(pyz: Path, tmp_path: Path) -> None:
    if shutil.which("python3") is None:
        pytest.skip("no python3 on PATH for the shebang")
    proc = subprocess.run([str(pyz), "--version"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("cdtools ")


def test_source_may_be_a_zipapp(pyz: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.pyz"
    result = vendor.run(str(again), source=str(pyz))
    assert again.read_bytes() == pyz.read_bytes()
    with zipfile.ZipFile(pyz) as zf:
        assert result.files == len(zf.namelist())


def test_source_that_is_not_a_package_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _py("-m", "cdtools.vendor", "-o", str(tmp_path / "x.pyz"), "--source", str(tmp_path / "empty"), cwd=REPO)
    assert proc.returncode == 2
    assert "not a Python package directory" in proc.stderr
    _no_traceback(proc)
