"""The runtime package type-checks under ``mypy --strict`` (annotations are checked, not decoration)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_cdtools_passes_mypy_strict():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "cdtools/"],
                          cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: int) -> str:\n    return x\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(bad)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 1 and "Incompatible return value type" in proc.stdout
