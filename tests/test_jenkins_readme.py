"""jenkins/README.md says what the code does: its exit-code table is errors.EXIT_CODES."""
from __future__ import annotations

import re
from pathlib import Path

from cdtools.errors import EXIT_CODES

README = Path(__file__).resolve().parent.parent / "jenkins" / "README.md"


def test_exit_code_table_matches_the_error_tree() -> None:
    text = README.read_text()
    section = text.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M)
    assert {int(code): meaning for code, meaning in rows} == EXIT_CODES
