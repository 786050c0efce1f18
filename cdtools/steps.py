"""The fixed table of steps (verb modules), and dispatching to them.

One table in one place: ``python -m cdtools`` lists it, and the zipapp's
``__main__.py`` (written by :mod:`cdtools.vendor`) dispatches
``python3 cdtools.pyz STEP ARGS…`` through :func:`main` to ``cdtools.STEP.main``.

The table names every step cdtools has or will have, so the listing reads the
same in every copy; a step whose module is not in this copy (an older zipapp, a
partial folder copy) is refused with one line and exit code 2 when it is asked
for, never with a traceback.
"""
from __future__ import annotations

import difflib
import importlib
import sys
from typing import Callable, List, NamedTuple, Optional, Sequence, TextIO, Tuple

from . import __version__
from .cli import run
from .console import Console
from .errors import UsageError
from .settings import Settings

#: what a step module's ``main`` looks like
StepMain = Callable[[Optional[List[str]]], int]


class Step(NamedTuple):
    name: str
    summary: str

    @property
    def module(self) -> str:
        return f"{__package__}.{self.name}"


#: every step, in the order a release runs them, then the by-hand tools
STEPS: Tuple[Step, ...] = (
    Step("build", "build an image from a context directory, honouring .dockerignore"),
    Step("tag", "give an image another name"),
    Step("push", "push an image to a registry and print its digest"),
    Step("deploy", "replace a container with one from a new image; roll back on failure"),
    Step("release", "build, tag, push and deploy from one cdtools.json"),
    Step("plan", "show what a deploy would change, without changing anything"),
    Step("rollback", "swap a container back to its previous version"),
    Step("history", "list what was deployed under a container name, and from which build"),
    Step("container", "single container calls: create, start, stop, rm"),
    Step("image", "single image calls: rm"),
    Step("prune", "remove old images of a repository, keeping the ones in use"),
    Step("vendor", "write cdtools as one reproducible zipapp file (cdtools.pyz)"),
)


def names() -> Tuple[str, ...]:
    return tuple(step.name for step in STEPS)


def find(name: str) -> Step:
    """The step called ``name``; a usage error naming the closest ones otherwise."""
    for step in STEPS:
        if step.name == name:
            return step
    close = difflib.get_close_matches(name, names(), n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UsageError(f"unknown step {name!r}{hint}; run without arguments to list the steps")


def load(name: str) -> StepMain:
    """Import a step's module and return its ``main``."""
    step = find(name)
    try:
        module = importlib.import_module(step.module)
    except ModuleNotFoundError as exc:
        # Only the step module itself being absent is the user's situation (an older
        # or partial copy); a module missing *inside* a step is a bug and propagates.
        if exc.name != step.module:
            raise
        raise UsageError(f"step {name!r} is not in this copy of cdtools {__version__}") from None
    main = getattr(module, "main", None)
    if not callable(main):
        raise UsageError(f"step {name!r} has no main() in this copy of cdtools {__version__}")
    return main  # type: ignore[no-any-return]


def listing(prog: str) -> List[str]:
    """The lines ``python -m cdtools`` prints: usage, then one line per step."""
    width = max(len(step.name) for step in STEPS)
    lines = [f"usage: {prog} STEP [ARGS...]", "", f"cdtools {__version__} steps:"]
    lines += [f"  {step.name.ljust(width)}  {step.summary}" for step in STEPS]
    lines += ["", f"'{prog} STEP --help' tells more about one step."]
    return lines


def main(argv: Optional[Sequence[str]] = None, *, prog: str = "python -m cdtools",
         out: Optional[TextIO] = None) -> int:
    """List the steps (no arguments, -h, --help) or run ``STEP ARGS…`` (``help STEP`` too)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["help"] and len(args) > 1:
        args = [args[1], "--help"]
    if not args or args[0] in ("-h", "--help", "help"):
        console = Console(out)
        for line in listing(prog):
            console.line(line)
        return 0
    if args[0] == "--version":
        Console(out).line(f"cdtools {__version__}")
        return 0

    found: List[StepMain] = []

    def resolve(_settings: Settings) -> int:
        found.append(load(args[0]))
        return 0

    # cli.run turns a UsageError (unknown or absent step) into one line and exit 2
    code = run(prog, resolve)
    if not found:
        return code
    return found[0](args[1:])
