"""What cdtools prints, and how: plain lines in CI, live lines on a terminal.

Output goes through one :class:`Console`; nothing else writes to stdout.
Errors are printed by :func:`cdtools.cli.run`, one line on stderr.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional, TextIO


class Console:
    def __init__(self, out: Optional[TextIO] = None, *, tty: Optional[bool] = None,
                 timestamps: bool = False, quiet: bool = False) -> None:
        self.out = out if out is not None else sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.timestamps = timestamps
        self.quiet = quiet
        self._partial = False  # a build "stream" record may end mid-line

    def _prefix(self) -> str:
        if not self.timestamps:
            return ""
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + " "

    def line(self, text: str) -> None:
        """One line of output."""
        if self.quiet:
            return
        if self._partial:
            self.out.write("\n")
            self._partial = False
        self.out.write(self._prefix() + text + "\n")
        self.out.flush()

    def step(self, text: str) -> None:
        """The start of a step."""
        self.line(("\033[1m==> " + text + "\033[0m") if self.tty else "==> " + text)

    def text(self, chunk: str) -> None:
        """Free text as the daemon sends it (build output), kept line by line."""
        if self.quiet or not chunk:
            return
        for piece in chunk.splitlines(keepends=True):
            if not self._partial:
                self.out.write(self._prefix())
            if not self.tty:
                piece = _strip_ansi(piece)
            self.out.write(piece)
            self._partial = not piece.endswith("\n")
        self.out.flush()


class LayerProgress:
    """Per-layer progress of a push or pull.

    In CI (no terminal): one line per layer each time its state changes, no
    carriage-return spam, so a Jenkins log reads top to bottom.  On a terminal:
    one live line per layer, redrawn in place with its progress bar.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._state: Dict[str, str] = {}
        #: terminal mode: the layers of the block being redrawn, in order of appearance
        self._live: Dict[str, str] = {}

    def feed(self, record: Dict[str, Any]) -> None:
        status = str(record.get("status") or "")
        layer = record.get("id")
        if not status:
            return
        if not layer:
            self._live = {}  # a plain line ends the live block; the next layers start a new one
            self.console.line(status)
            return
        if self.console.tty and not self.console.quiet:
            self._redraw(str(layer), f"{layer}: {status} {record.get('progress') or ''}".rstrip())
            return
        if self._state.get(layer) == status:
            return
        self._state[layer] = status
        self.console.line(f"{layer}: {status}")

    def _redraw(self, layer: str, text: str) -> None:
        out = self.console.out
        if layer in self._live:
            # up to this layer's line, rewrite it, back down to below the block
            up = len(self._live) - list(self._live).index(layer)
            out.write(f"\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")
        else:
            out.write(f"{text}\n")
        self._live[layer] = text
        out.flush()


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
