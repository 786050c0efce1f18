"""``python -m cdtools``: the fixed table of steps, and dispatching through it."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cdtools import steps
from cdtools.errors import UsageError
from cdtools.steps import STEPS, Step

REPO = Path(__file__).resolve().parent.parent


def _cdtools(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "cdtools", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_python_m_cdtools_lists_each_step_once_with_its_line() -> None:
    proc = _cdtools()
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(None, 1) for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert [(name, summary.strip()) for name, summary in rows] == [(s.name, s.summary) for s in STEPS]
    assert {"build", "tag", "push", "deploy", "release", "vendor"} <= {s.name for s in STEPS}


def test_help_step_shows_that_steps_help() -> None:
    proc = _cdtools("help", "vendor")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: cdtools vendor")


def test_unknown_step_is_one_line_and_exit_2() -> None:
    proc = _cdtools("pussh")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "python -m cdtools: error: unknown step 'pussh' (did you mean push?); run without arguments to list the steps"]


def test_every_verb_module_is_in_the_table() -> None:
    # a new step module that nobody added to STEPS would be unreachable from the zipapp
    verbs = sorted(p.stem for p in (REPO / "cdtools").glob("*.py")
                   if p.stem != "__main__" and re.search(r"^if __name__ == .__main__.:", p.read_text(), re.M))
    assert verbs, "no verb modules found"
    missing = [name for name in verbs if name not in steps.names()]
    assert missing == []


def test_a_step_whose_module_is_absent_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "STEPS", STEPS + (Step("ghost", "not written"),))
    with pytest.raises(UsageError, match="step 'ghost' is not in this copy of cdtools"):
        steps.load("ghost")
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert steps.main(["ghost"], prog="cdtools.pyz", out=out) == 2
    assert err.getvalue().startswith("cdtools.pyz: error: step 'ghost' is not in this copy")


def test_a_module_missing_inside_a_step_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    # a step that imports something absent is a bug in cdtools, not the user's copy:
    # it must surface, not read as "step not in this copy"
    def broken_import(name: str) -> None:
        raise ModuleNotFoundError("No module named 'yaml'", name="yaml")

    monkeypatch.setattr(steps.importlib, "import_module", broken_import)
    with pytest.raises(ModuleNotFoundError):
        steps.load("vendor")
