"""Where a deploy goes: one container (deploy itself), a swarm service, or one container on several hosts.

``python -m cdtools.deploy`` takes ``--target service:NAME`` (:mod:`cdtools.service`)
and ``--hosts H1,H2,…`` (:mod:`cdtools.rollout`); this module declares those
flags, checks that they go together, and runs the deploy they ask for, so
that deploy's own single-container path stays as it is.
"""
from __future__ import annotations

import argparse
from typing import Any, List, Optional, Union

from . import deploy, rollout, service
from .console import Console
from .engine import connect
from .errors import UsageError
from .settings import Settings

Result = Union[service.ServiceResult, rollout.RolloutResult]

#: service flags (dest, default): given without --target service they would do nothing
_SERVICE_ONLY = (("replicas", None), ("publish_mode", "ingress"), ("parallelism", None), ("update_delay", None),
                 ("update_order", None), ("failure_action", None), ("monitor", None), ("converge_timeout", 300.0))


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target (default: one container on -H/--deploy-host)")
    g.add_argument("--target", default="container", metavar="container|service:NAME",
                   help="deploy a container (default) or update/create the swarm service NAME through the "
                        "manager at -H/--deploy-host")
    g.add_argument("--hosts", metavar="H1,H2,…",
                   help="deploy the container to each of these daemons in turn, stopping at the first failure "
                        "(same TLS settings for all; --probe may say {host})")
    g.add_argument("--max-parallel", type=int, default=1, metavar="N",
                   help="with --hosts: deploy N hosts at a time (default 1)")
    service.add_arguments(p)


def chosen(args: argparse.Namespace) -> bool:
    """Whether the flags ask for anything but deploy's own single container; checks they go together."""
    name = service.parse_target(args.target)
    if name is None:
        for dest, default in _SERVICE_ONLY:
            if getattr(args, dest) != default:
                raise UsageError(f"--{dest.replace('_', '-')} is for --target service:NAME")
    if args.max_parallel != 1 and not args.hosts:
        raise UsageError("--max-parallel is for --hosts")
    if name is not None:
        # a service's health gate is the swarm's own: HEALTHCHECK, --monitor, --failure-action
        for flag, given in (("--probe", args.probe), ("--prune-keep", args.prune_keep is not None)):
            if given:
                raise UsageError(f"{flag} is for containers: a swarm service is checked by its HEALTHCHECK and "
                                 f"--monitor, and its images are the nodes' own")
    if name is not None and args.hosts:
        raise UsageError("--hosts is for containers: a swarm service is deployed through one manager "
                         "(-H/--deploy-host), which spreads its tasks over the nodes")
    if args.hosts and (args.deploy_host or args.host):
        raise UsageError("--hosts and -H/--deploy-host both say where to deploy: give one")
    return name is not None or bool(args.hosts)


def run(args: argparse.Namespace, settings: Settings, *, console: Console, credentials: Any,
        dry_run: bool, host: Optional[str], timeout: Optional[float]) -> Result:
    """Run the deploy ``args`` ask for (``chosen(args)`` is true)."""
    name = service.parse_target(args.target)
    if name is not None:
        if args.name and args.name != name:
            raise UsageError(f"--name {args.name} and --target service:{name} name different services")
        opts = service.options_from_args(args, name)
        engine = connect(settings, host=host, timeout=timeout)
        return service.run(engine, opts, settings, console=console, credentials=credentials, dry_run=dry_run)
    hosts: List[str] = rollout.parse_hosts(args.hosts)
    container_opts = deploy.options_from_args(args)
    engines = [connect(settings, host=h, timeout=timeout) for h in hosts]
    return rollout.run(engines, container_opts, settings, console=console, credentials=credentials,
                       dry_run=dry_run, max_parallel=args.max_parallel)
