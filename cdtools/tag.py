"""``python -m cdtools.tag SOURCE TARGET [TARGET …]``: docker tag, through the API."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from . import cli, reference
from .console import Console
from .engine import Engine
from .errors import APIError, CdtoolsError, UsageError
from .settings import Settings

PROG = "cdtools tag"


@dataclass(frozen=True)
class TagResult:
    source: str
    targets: Sequence[str]


def run(engine: Engine, source: str, targets: Sequence[str], *, console: Console) -> TagResult:
    """Tag image ``source`` (a reference or an id) as each of ``targets``."""
    if not targets:
        raise UsageError("nothing to tag: give at least one TARGET")
    parsed = []
    for text in targets:
        ref = reference.parse(text)
        if ref.digest:
            raise UsageError(f"target {text!r}: a tag can't be a digest")
        parsed.append(ref if ref.tag else ref.with_tag("latest"))
    done = []
    for ref in parsed:
        try:
            engine.tag(source, ref.repository, ref.tag or "latest")
        except APIError as exc:
            raise CdtoolsError(f"tagging {source} as {ref} failed ({exc.status}): {exc.message}") from None
        console.line(f"tagged {source} as {ref}")
        done.append(str(ref))
    return TagResult(source=source, targets=tuple(done))


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Give an image more names (docker tag semantics).")
    p.add_argument("source", help="image reference or id")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="NAME[:TAG] to add")
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        run(cli.engine_for(args, settings), args.source, args.targets, console=cli.console_for(args))
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
