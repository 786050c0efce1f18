"""``python -m cdtools.container create|start|stop|rm NAME …``: the seed's single calls, one by one.

For people who script the Engine API calls themselves.  ``create`` takes the
same spec as deploy (``--spec``, ``--start-spec`` whose fields move into
HostConfig, docker run's flags); ``start`` sends no body (refused since API
1.24).  Errors end as one line and an exit code, as in every step.
"""
from __future__ import annotations

import argparse
from typing import List, Optional

from . import cli, spec as spec_mod
from .console import Console
from .engine import Engine
from .errors import UsageError
from .settings import Settings

PROG = "cdtools container"


def _add_create(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("create", help="create a container (not started)")
    p.add_argument("name")
    p.add_argument("--image", required=True)
    spec_mod.add_arguments(p)
    p.set_defaults(handler=_cmd_create)


def _cmd_create(engine: Engine, args: argparse.Namespace, settings: Settings, console: Console) -> int:
    if args.inherit:
        raise UsageError("container create: --inherit is for deploy (it needs a running container to replace)")
    spec = spec_mod.from_args(args, settings.lookup)
    body = dict(spec.body)
    body["Image"] = args.image
    created = engine.create_container(args.name, body)
    for warning in created.get("Warnings") or []:
        console.line(f"warning: daemon: {warning}")
    print(created["Id"])
    return 0


def _add_start(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("start", help="start a container (no request body)")
    p.add_argument("name")
    p.set_defaults(handler=_cmd_start)


def _cmd_start(engine: Engine, args: argparse.Namespace, settings: Settings, console: Console) -> int:
    if not engine.start(args.name):
        console.line(f"{args.name} was already running")
    return 0


def _add_stop(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("stop", help="stop a container")
    p.add_argument("name")
    p.add_argument("-t", "--stop-timeout", type=int, metavar="S", help="seconds before SIGKILL (default: its own)")
    p.set_defaults(handler=_cmd_stop)


def _cmd_stop(engine: Engine, args: argparse.Namespace, settings: Settings, console: Console) -> int:
    if not engine.stop(args.name, timeout=args.stop_timeout):
        console.line(f"{args.name} was not running")
    return 0


def _add_rm(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("rm", help="remove a container")
    p.add_argument("name")
    p.add_argument("-f", "--force", action="store_true", help="kill it first if it runs")
    p.add_argument("-v", "--volumes", action="store_true", help="remove its anonymous volumes too")
    p.set_defaults(handler=_cmd_rm)


def _cmd_rm(engine: Engine, args: argparse.Namespace, settings: Settings, console: Console) -> int:
    engine.remove_container(args.name, force=args.force, volumes=args.volumes)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Single container calls: create, start, stop, rm.")
    sub = p.add_subparsers(dest="command_name", metavar="create|start|stop|rm")
    sub.required = True
    for add in (_add_create, _add_start, _add_stop, _add_rm):
        add(sub)
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        engine = cli.engine_for(args, settings)
        return int(args.handler(engine, args, settings, cli.console_for(args)))

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
