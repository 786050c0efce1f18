"""``python -m cdtools.image rm REF [--force]``: the seed's image removal, with the steps' error handling."""
from __future__ import annotations

import argparse
from typing import List, Optional

from . import cli
from .console import Console
from .engine import Engine
from .settings import Settings

PROG = "cdtools image"


def _add_rm(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("rm", help="remove an image (a tag, or an id)")
    p.add_argument("ref", nargs="+", metavar="REF")
    p.add_argument("-f", "--force", action="store_true", help="also when containers use it or it has other tags")
    p.set_defaults(handler=_cmd_rm)


def _cmd_rm(engine: Engine, args: argparse.Namespace, console: Console) -> int:
    for ref in args.ref:
        for record in engine.remove_image(ref, force=args.force):
            for key in ("Untagged", "Deleted"):
                if record.get(key):
                    console.line(f"{key.lower()}: {record[key]}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Single image calls: rm.")
    sub = p.add_subparsers(dest="command_name", metavar="rm")
    sub.required = True
    _add_rm(sub)
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        return int(args.handler(cli.engine_for(args, settings), args, cli.console_for(args)))

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
