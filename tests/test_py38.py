"""The Python 3.8 floor: vermin over cdtools/, and a real 3.8 where the machine has one.

vermin reads the source for library members, syntax and builtins newer than the
target; it cannot know the type of every receiver (``s.removeprefix`` on an
untyped ``s`` passes it), so when a ``python3.8`` is at hand every module is
also imported under it and the zipapp run with it.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import pytest

from cdtools import vendor
from cdtools.steps import STEPS
from conftest import unavailable

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "cdtools"


def _find_python38() -> Optional[str]:
    """A working 3.8 interpreter's real path; pyenv's shim on PATH may not run one."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [shutil.which("python3.8")] + sorted(glob.glob(os.path.join(root, "versions", "3.8*", "bin", "python3.8")))
    for candidate in candidates:
        if not candidate:
            continue
        try:
            proc = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8)); print(sys.executable)"],
                                  capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = proc.stdout.split("\n")
        if proc.returncode == 0 and lines[0] == "True":
            return lines[1]
    return None


# found at import, while HOME and PATH are still the machine's (clean_env swaps HOME)
PYTHON38 = _find_python38()


def _need_vermin() -> str:
    found = shutil.which("vermin")
    if found is None:
        message = "vermin is not installed (pip install vermin)"
        unavailable(message)
    return found


def _need_python38() -> str:
    if PYTHON38 is None:
        pytest.skip("no Python 3.8 interpreter on this machine (vermin still checks the floor)")
    return PYTHON38


def _vermin(*paths: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([_need_vermin(), "-t=3.8-", "--no-tips", "--violations", *paths],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_vermin_finds_nothing_newer_than_3_8_in_cdtools() -> None:
    proc = _vermin(str(PACKAGE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "requires" not in proc.stdout, proc.stdout


def test_the_vermin_check_fails_on_a_3_9_feature(tmp_path: Path) -> None:
    bad = tmp_path / "pkg"
    bad.mkdir()
    (bad / "newer.py").write_text(
        "import functools\n\n@functools.cache\ndef f() -> int:\n    return 1\n\nmerged = {} | {}\n")
    proc = _vermin(str(bad))
    assert proc.returncode != 0
    assert "functools.cache" in proc.stdout and "dict union" in proc.stdout


def _modules() -> List[str]:
    return sorted(f"cdtools.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__main__")


def test_every_module_imports_under_python_3_8(tmp_path: Path) -> None:
    python38 = _need_python38()
    script = (
        "import importlib, json, sys, traceback\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "failed = {}\n"
        "for name in sys.argv[2:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException:\n"
        "        failed[name] = traceback.format_exc(limit=-2)\n"
        "print(json.dumps(failed))\n"
    )
    # -I -S: the floor is checked on the standard library alone, as an agent runs it
    proc = subprocess.run([python38, "-I", "-S", "-c", script, str(REPO), *_modules()],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    failed = json.loads(proc.stdout)
    assert failed == {}, "\n".join(f"{name}:\n{tb}" for name, tb in failed.items())


def test_the_zipapp_runs_under_python_3_8(tmp_path: Path) -> None:
    python38 = _need_python38()
    src = tmp_path / "src" / "cdtools"
    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyz = tmp_path / "cdtools.pyz"
    vendor.run(str(pyz), source=str(src))

    def run38(*args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([python38, "-I", "-S", str(pyz), *args], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)

    listing = run38()
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[0] for line in listing.stdout.splitlines() if line.startswith("  ")] == [
        step.name for step in STEPS]

    broken = {}
    for step in STEPS:
        if not (src / f"{step.name}.py").exists():
            continue
        proc = run38(step.name, "--help")
        if proc.returncode != 0 or not proc.stdout.startswith("usage:"):
            broken[step.name] = proc.stderr
    assert broken == {}, broken

    # written by 3.8, the archive is the same bytes as written by this Python
    copy = tmp_path / "by38.pyz"
    proc = run38("vendor", "-o", str(copy))
    assert proc.returncode == 0, proc.stderr
    assert copy.read_bytes() == pyz.read_bytes()

