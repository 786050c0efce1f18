"""Progress output: plain state-change lines in CI, live redrawn lines on a terminal."""
from __future__ import annotations

import io
from pathlib import Path

from cdtools.console import Console, LayerProgress
from cdtools.jsonstream import objects

PUSH = list(objects([(Path(__file__).parent / "data" / "engine-1.41" / "push-ok.body").read_bytes()]))


def test_ci_output_is_one_line_per_layer_state_change_without_terminal_codes():
    out = io.StringIO()
    progress = LayerProgress(Console(out, tty=False))
    for record in PUSH:
        progress.feed(record)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # two "Pushing" records for one layer give one line
    assert lines.count("ad2203f98667: Pushing") == 1
    assert "ad2203f98667: Pushed" in lines and "beb5bf2cfbe4: Mounted from bars/push" in lines
    assert lines[0] == "The push refers to repository [127.0.0.1:5000/cap/app]"


def test_terminal_output_redraws_each_layer_in_place():
    out = io.StringIO()
    progress = LayerProgress(Console(out, tty=True))
    for record in PUSH:
        progress.feed(record)
    text = out.getvalue()
    assert "\x1b[" in text and "[==================================================>]" in text
    # three layers, each drawn once as a new line; every later update is an in-place rewrite
    assert text.count("Preparing\n") == 3
    assert "\x1b[3A\r\x1b[2Kad2203f98667: Pushing" in text
