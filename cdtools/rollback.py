"""``python -m cdtools.rollback --name NAME``: swap back to ``NAME-previous`` by hand.

The same swap as a deploy, with the kept container in the new one's place:
``NAME-previous`` is renamed to a temporary name, ``NAME`` is stopped, the
previous one is started and must pass the same health gate, then ``NAME``
waits as ``NAME-previous`` (so running rollback twice swaps forth and back).
If the previous container fails the gate, it goes back to being
``NAME-previous`` and ``NAME`` is started again (exit 6).

The restart policy the previous container had before it was demoted comes
from its own ``cdtools.restart-policy`` label, else from the
``cdtools.previous-restart-policy`` label cdtools put on its replacement.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from . import cli, deploy, health, lock, spec as spec_mod
from .console import Console
from .engine import Engine, connect
from .errors import CdtoolsError, DeployError, UsageError
from .health import Gate
from .settings import Settings
from .spec import Spec

PROG = "cdtools rollback"


def make_plan(engine: Engine, opts: deploy.DeployOptions) -> deploy.Plan:
    name = opts.name
    previous = engine.find_container(name + deploy.PREVIOUS_SUFFIX)
    if previous is None:
        raise UsageError(f"there is no {name}{deploy.PREVIOUS_SUFFIX} to roll back to")
    cfg = previous.get("Config") or {}
    labels = cfg.get("Labels") or {}
    plan = deploy.Plan(name=name, image=str(cfg.get("Image") or previous.get("Image")),
                       image_id=str(previous.get("Image") or ""), pull_reason="the image of the kept container")
    plan.old = engine.find_container(name)
    plan.leftover = engine.find_container(plan.temp_name)
    held = engine.find_container(lock.lock_name(name))
    plan.lock_holder = lock.describe(held) if held else ""
    # only for keeping its secrets out of what is printed
    plan.spec = Spec(body={"Env": list(cfg.get("Env") or [])},
                     secret_env=set(filter(None, labels.get(spec_mod.LABEL_SECRET_ENV, "").split(","))))
    plan.action = "rollback"
    old_cfg = (plan.old or {}).get("Config") or {}
    if opts.stop_timeout is not None:
        plan.stop_timeout = opts.stop_timeout
    elif deploy.stop_timeout_of(engine, old_cfg) is not None:
        plan.stop_timeout = int(old_cfg["StopTimeout"])
    plan.has_healthcheck = health.has_healthcheck(previous)
    prev_short = deploy._short(str(previous["Id"]))
    plan.steps = [f"roll back {name} to {plan.previous_name} ({prev_short}, image {plan.image})",
                  f"lock {lock.lock_name(name)}",
                  f"rename {plan.previous_name} to {plan.temp_name}"]
    if plan.old_running:
        assert plan.old is not None
        plan.steps.append(f"stop {name} ({deploy._short(plan.old['Id'])}, stop timeout {plan.stop_timeout} s)")
    plan.steps += [f"start {plan.temp_name}", f"health gate: {opts.gate.describe(plan.has_healthcheck)}"]
    if plan.old is not None:
        plan.steps.append(f"keep {name} as {plan.previous_name} (stopped, restart policy off)")
    plan.steps.append(f"rename {plan.temp_name} to {name}")
    plan.previous = None  # the kept container is what comes back: nothing to remove
    plan.body = previous
    return plan


def _restart_policy(plan: deploy.Plan, came_back: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    own = ((came_back.get("Config") or {}).get("Labels") or {}).get(spec_mod.LABEL_RESTART)
    other = (((plan.old or {}).get("Config") or {}).get("Labels") or {}).get(spec_mod.LABEL_PREVIOUS_RESTART)
    for text in (own, other):
        if text:
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def run(engine: Engine, opts: deploy.DeployOptions, settings: Settings, *, console: Console,
        dry_run: bool = False) -> deploy.DeployResult:
    plan = make_plan(engine, opts)
    if dry_run:
        for number, step in enumerate(plan.steps, 1):
            console.line(f"  {number}. {step}")
        return deploy.DeployResult(name=opts.name, action="planned", plan=plan)
    console.step(plan.steps[0])
    holder = lock.holder_labels(opts.name, settings.build_url, settings.job_name)
    console.step(plan.steps[1])
    with lock.Lock(engine, opts.name, plan.image_id, holder, wait=opts.lock_wait, break_lock=opts.break_lock,
                   console=console):
        plan = make_plan(engine, opts)  # as it is now that we hold the lock
        if plan.leftover is not None:
            raise DeployError(f"{plan.temp_name} exists: an earlier deploy was interrupted; remove it first "
                              f"(python -m cdtools.container rm {plan.temp_name} --force)")
        existing = plan.body
        result = deploy._Swap(engine, plan, opts, console, existing=existing).run()
        policy = _restart_policy(plan, existing)
        if policy is None:
            console.line(f"warning: the restart policy {opts.name} had before it was kept is not recorded; "
                         f"it stays {json.dumps((existing.get('HostConfig') or {}).get('RestartPolicy'))}")
        else:
            try:
                engine.update_container(result.container_id, {"RestartPolicy": policy})
            except CdtoolsError as exc:
                console.line(f"warning: could not restore the restart policy of {opts.name}: {exc}")
    result.action = "rolled back"
    console.line(f"rolled back: {opts.name} runs {plan.image} ({deploy._short(result.container_id)}) again")
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Swap NAME back to NAME-previous, through the same health gate as a deploy.")
    p.add_argument("--name", required=True, help="container name")
    p.add_argument("--deploy-host", metavar="HOST", help="daemon (overrides -H)")
    p.add_argument("--stop-timeout", type=int, metavar="S", help="seconds NAME gets to stop (default: its own, else 10)")
    p.add_argument("--no-fast-kill", dest="fast_kill", action="store_false",
                   help="wait the stop timeout even when PID 1 has no handler for the stop signal")
    p.add_argument("--health-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--settle", type=float, default=3.0, metavar="S")
    p.add_argument("--probe", metavar="URL", help="http://HOST:PORT/PATH or tcp://HOST:PORT")
    p.add_argument("--lock-wait", type=float, default=0.0, metavar="S")
    p.add_argument("--break-lock", action="store_true", help="remove a lock left by a deploy that died")
    p.add_argument("--dry-run", action="store_true", help="print the steps and change nothing")
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        probe = health.check_probe_url(args.probe) if args.probe else None
        opts = deploy.DeployOptions(name=args.name, image="", spec_args=args, stop_timeout=args.stop_timeout,
                                    gate=Gate(timeout=args.health_timeout, settle=args.settle, probe=probe),
                                    lock_wait=args.lock_wait, break_lock=args.break_lock, fast_kill=args.fast_kill)
        opts.check()
        engine = connect(settings, host=args.deploy_host or args.host, timeout=args.timeout)
        with lock.sigterm_raises():
            run(engine, opts, settings, console=cli.console_for(args), dry_run=args.dry_run)
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
