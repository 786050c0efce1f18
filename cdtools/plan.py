"""``python -m cdtools.plan --name NAME --image IMAGE …``: what deploy would do; changes nothing.

Takes exactly deploy's flags and prints the steps deploy would take (the same
lines deploy prints as it takes them), the configuration difference between
the running container and the new one, and the create request, with every
secret ``Env`` value redacted (names that look secret, and everything from
``--env-file`` / ``--secret-env``).  Same as ``deploy --dry-run``.
"""
from __future__ import annotations

from typing import List, Optional

from . import cli
from . import deploy
from .console import Console
from .engine import Engine, connect
from .settings import Settings

PROG = "cdtools plan"


def run(engine: Engine, opts: deploy.DeployOptions, settings: Settings, *, console: Console) -> deploy.Plan:
    plan = deploy.make_plan(engine, opts, settings)
    deploy.print_plan(plan, console, str(engine.endpoint))
    return plan


def main(argv: Optional[List[str]] = None) -> int:
    p = deploy.build_parser(PROG, "Print what a deploy would do, with the config difference; change nothing.")
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        opts = deploy.options_from_args(args)
        engine = connect(settings, host=args.deploy_host or args.host, timeout=args.timeout)
        run(engine, opts, settings, console=cli.console_for(args))
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
