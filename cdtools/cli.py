"""Command-line plumbing shared by every step: common flags and the main wrapper.

A step's ``main(argv)`` builds its parser with :func:`parser`, then hands its
work to :func:`run`, which turns every :class:`~cdtools.errors.CdtoolsError`
into one line on stderr and the error's exit code; never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional, TextIO

from . import engine as engine_mod
from .console import Console
from .errors import CdtoolsError, UsageError
from .settings import Settings, current


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    g = p.add_argument_group("daemon")
    g.add_argument("-H", "--host", help="daemon socket (default: DOCKER_HOST or unix:///var/run/docker.sock)")
    g.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="fail the step when it runs longer than S seconds (default: no limit)")
    o = p.add_argument_group("output")
    o.add_argument("--timestamps", action="store_true", help="prefix each output line with a UTC timestamp")
    o.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    return p


def console_for(args: argparse.Namespace, out: Optional[TextIO] = None) -> Console:
    return Console(out, timestamps=getattr(args, "timestamps", False), quiet=getattr(args, "quiet", False))


def engine_for(args: argparse.Namespace, settings: Settings) -> engine_mod.Engine:
    return engine_mod.connect(settings, host=getattr(args, "host", None), timeout=getattr(args, "timeout", None))


def key_values(items: Optional[List[str]], what: str) -> "dict[str, str]":
    """K=V flags into a dict; a bare K is a usage error."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def run(prog: str, work: Callable[[Settings], int], *, settings: Optional[Settings] = None) -> int:
    """Run a step; errors end as one line on stderr and their exit code."""
    try:
        return work(settings if settings is not None else current())
    except CdtoolsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
