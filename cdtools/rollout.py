"""Several hosts: ``python -m cdtools.deploy --hosts H1,H2,… --name NAME --image IMAGE …``.

The same container goes to each host in turn, with the whole single-host
deploy on each (its lock, the swap that creates before it stops, the health
gate, the rollback)::

    pin IMAGE by digest (the first host asks the registry)     every host gets the same bytes
    check every host: it answers, NAME's lock is free, no      nothing has changed on any host yet
      interrupted swap is left, IMAGE is there or pulls
    deploy host by host (--max-parallel N at a time)           deploy.run on each; its gate decides
    stop at the first failure                                  that host rolled itself back; hosts not
                                                               started yet keep the old version
    one report line per host

A host that fails leaves the hosts deployed before it on the new version (each
passed its gate) and says how to take them back (``cdtools.rollback``).  With
``--max-parallel N`` the hosts already under way when one fails finish their
own deploy (or roll themselves back); no new one starts.

Hosts are DOCKER_HOST addresses (``unix://``, ``tcp://``, ``ssh://``) and share
the TLS settings.  ``--probe`` may say ``{host}`` for the address of the host
being deployed: ``--probe http://{host}:8080/health`` (``127.0.0.1`` for a unix
socket).
"""
from __future__ import annotations

import dataclasses
import re
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import deploy, pinning, reference
from .console import Console
from .engine import Engine
from .errors import (CdtoolsError, DeployError, LockError, RolledBack, StreamTimeout, TransportError,
                     UsageError)
from .settings import Settings
from .transport import Endpoint

#: hosts listed at most: more is a typo, or a job for a swarm
MAX_HOSTS = 100
_IMAGE_ID_RE = re.compile(r"(sha256:)?[0-9a-f]{12,64}")


@dataclass
class HostOutcome:
    host: str
    #: deployed, unchanged, rolled back, failed, not touched, planned
    status: str = "not touched"
    detail: str = ""
    #: what ran there before (the image reference of NAME), for the report
    before: str = ""
    error: Optional[CdtoolsError] = field(default=None, repr=False)


@dataclass
class RolloutResult:
    name: str
    image: str
    #: deployed, planned
    action: str
    hosts: List[HostOutcome] = field(default_factory=list)

    @property
    def container(self) -> str:
        """What the release report calls the deployed thing."""
        return self.name


def parse_hosts(text: str) -> List[str]:
    """``--hosts h1,h2``: daemon addresses, in order, each once."""
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts:
        raise UsageError("--hosts: expected a comma-separated list of daemon addresses")
    if len(hosts) > MAX_HOSTS:
        raise UsageError(f"--hosts: {len(hosts)} hosts; at most {MAX_HOSTS}")
    seen = set()
    for host in hosts:
        if host in seen:
            raise UsageError(f"--hosts: {host} is listed twice")
        seen.add(host)
    return hosts


def host_address(endpoint: Endpoint) -> str:
    """The address a probe reaches the host's published ports on."""
    if endpoint.scheme == "unix":
        return "127.0.0.1"
    address = endpoint.address.rpartition("@")[2]
    if address.startswith("["):
        return address[:address.index("]") + 1]
    return address.rpartition(":")[0] if ":" in address else address


def probe_for(probe: Optional[str], endpoint: Endpoint) -> Optional[str]:
    return probe.replace("{host}", host_address(endpoint)) if probe else probe


class HostConsole(Console):
    """Lines of one host's deploy, prefixed with the host, whole lines at a time (hosts may run in parallel)."""

    def __init__(self, base: Console, label: str, guard: threading.Lock) -> None:
        super().__init__(base.out, tty=base.tty, timestamps=base.timestamps, quiet=base.quiet)
        self.base = base
        self.label = label
        self.guard = guard

    def line(self, text: str) -> None:
        with self.guard:
            self.base.line(f"[{self.label}] {text}")

    def step(self, text: str) -> None:
        with self.guard:
            self.base.step(f"[{self.label}] {text}")

    def text(self, chunk: str) -> None:
        for piece in chunk.splitlines():
            self.line(piece)


def pin(engine: Engine, image: str, credentials: Any, console: Console) -> str:
    """``image`` as every host must run it: by digest when it names a registry."""
    if _IMAGE_ID_RE.fullmatch(image):
        console.line(f"{image} is an image id: every host must have it already (an id can't be pulled)")
        return image
    ref = reference.parse(image)
    if ref.digest:
        return str(ref.with_digest(ref.digest))
    if ref.domain == reference.DEFAULT_DOMAIN and not image.startswith(reference.DEFAULT_DOMAIN + "/"):
        # a bare name: deploy does not ask Docker Hub for it, so neither does a rollout
        console.line(f"warning: {image} names no registry: each host runs whatever it has under that name")
        return image
    header = credentials.header() if credentials is not None else "e30="
    digest = pinning.registry_digest(engine, ref, header, unchanged="no host was changed")
    pinned = str(ref.with_digest(digest))
    console.line(f"{image} is {pinned}: every host runs that")
    return pinned


def _host_options(opts: deploy.DeployOptions, image: str, endpoint: Endpoint) -> deploy.DeployOptions:
    gate = dataclasses.replace(opts.gate, probe=probe_for(opts.gate.probe, endpoint))
    return dataclasses.replace(opts, image=image, gate=gate)


def _prepare(engine: Engine, opts: deploy.DeployOptions, settings: Settings, credentials: Any,
             console: Console, outcome: HostOutcome) -> deploy.Plan:
    """Everything that can fail before a host is touched: reach it, its lock, leftovers, the image."""
    plan = deploy.make_plan(engine, opts, settings)
    outcome.before = str(((plan.old or {}).get("Config") or {}).get("Image") or "")
    if plan.lock_holder and opts.lock_wait <= 0 and not opts.break_lock:
        raise LockError(f"{opts.name} is being deployed on {engine.endpoint} by {plan.lock_holder}")
    if plan.leftover is not None and (plan.leftover.get("State") or {}).get("Running"):
        raise DeployError(f"{plan.temp_name} is running on {engine.endpoint}: an earlier deploy was killed in the "
                          f"middle of its swap there; check it first")
    if plan.pull:
        console.step(f"pull {opts.image} ({plan.pull_reason})")
        deploy.pull(engine, plan, credentials, console)
    elif plan.image_id:
        console.line(f"{opts.image} is there ({plan.pull_reason})")
    return plan


def _error_like(exc: CdtoolsError, message: str) -> CdtoolsError:
    """The rollout's error: the failed host's kind (so its exit code), the whole rollout's message."""
    for kind in (RolledBack, LockError, StreamTimeout, TransportError, UsageError, DeployError):
        if isinstance(exc, kind):
            return kind(message)
    return CdtoolsError(message)  # refused before anything changed: exit 1


def run(engines: List[Engine], opts: deploy.DeployOptions, settings: Settings, *, console: Console,
        credentials: Any = None, dry_run: bool = False, max_parallel: int = 1) -> RolloutResult:
    """Deploy ``opts.image`` as ``opts.name`` on every host of ``engines``, in order."""
    opts.check()
    if max_parallel < 1:
        raise UsageError("--max-parallel must be 1 or more")
    labels = [str(e.endpoint) for e in engines]
    outcomes = [HostOutcome(host) for host in labels]
    guard = threading.Lock()
    consoles = [HostConsole(console, label, guard) for label in labels]
    result = RolloutResult(name=opts.name, image=opts.image, action="planned" if dry_run else "deployed",
                           hosts=outcomes)

    if dry_run:
        for engine, host_console, outcome in zip(engines, consoles, outcomes):
            plan = deploy.make_plan(engine, _host_options(opts, opts.image, engine.endpoint), settings)
            deploy.print_plan(plan, host_console, str(engine.endpoint))
            outcome.status = "planned"
        console.line(f"rollout plan: {len(engines)} host(s) in this order, {max_parallel} at a time, stopping at "
                     f"the first that fails")
        return result

    console.step(f"rollout of {opts.image} as {opts.name} to {len(engines)} host(s), {max_parallel} at a time")
    image = pin(engines[0], opts.image, credentials, console)
    result.image = image
    host_opts = [_host_options(opts, image, e.endpoint) for e in engines]

    console.step("check every host before changing any")
    for index, engine in enumerate(engines):
        try:
            _prepare(engine, host_opts[index], settings, credentials, consoles[index], outcomes[index])
        except CdtoolsError as exc:
            outcomes[index].status, outcomes[index].detail = "failed", str(exc)
            _report(result, console)
            raise _error_like(exc, f"rollout of {image} as {opts.name} stopped before any host was changed: "
                                   f"{labels[index]}: {exc}") from None

    console.step("deploy host by host")
    try:
        failures = _deploy_all(engines, host_opts, settings, consoles, outcomes, credentials, max_parallel)
    finally:
        _report(result, console)  # also when SIGTERM cut the rollout short
    if failures:
        first = failures[0]
        outcome = outcomes[first]
        assert outcome.error is not None
        deployed = [o.host for o in outcomes if o.status in ("deployed", "unchanged")]
        untouched = [o.host for o in outcomes if o.status == "not touched"]
        text = (f"rollout of {image} as {opts.name} stopped at {outcome.host} (host {first + 1} of {len(engines)}): "
                f"{outcome.error}")
        if untouched:
            text += f"; not touched, still on the old version: {', '.join(untouched)}"
        if deployed:
            text += (f"; already on the new version: {', '.join(deployed)} (python -m cdtools.rollback --name "
                     f"{opts.name} -H HOST takes one back)")
        raise _error_like(outcome.error, text)
    console.line(f"rolled out {image} as {opts.name} to {len(engines)} host(s)")
    return result


def _deploy_one(engine: Engine, opts: deploy.DeployOptions, settings: Settings, console: Console,
                outcome: HostOutcome, credentials: Any) -> None:
    console.step(f"deploy {opts.image} as {opts.name}")
    try:
        done = deploy.run(engine, opts, settings, console=console, credentials=credentials)
    except RolledBack as exc:
        outcome.status, outcome.detail, outcome.error = "rolled back", str(exc), exc
        return
    except CdtoolsError as exc:
        outcome.status, outcome.detail, outcome.error = "failed", str(exc), exc
        return
    outcome.status = "unchanged" if done.action == "unchanged" else "deployed"
    outcome.detail = done.container_id.replace("sha256:", "")[:12]


def _deploy_all(engines: List[Engine], host_opts: List[deploy.DeployOptions], settings: Settings,
                consoles: List[HostConsole], outcomes: List[HostOutcome], credentials: Any,
                max_parallel: int) -> List[int]:
    """Deploy in order, up to ``max_parallel`` at once; no new host starts after one failed. The failed indexes."""
    failed: List[int] = []
    if max_parallel == 1:
        # in the main thread, so SIGTERM reaches the host being deployed and it rolls back
        for index, engine in enumerate(engines):
            _deploy_one(engine, host_opts[index], settings, consoles[index], outcomes[index], credentials)
            if outcomes[index].error is not None:
                return [index]
        return failed
    pending = list(range(len(engines)))
    running: Dict["Future[None]", int] = {}
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="cdtools-host") as pool:
        while pending or running:
            while pending and len(running) < max_parallel and not failed:
                index = pending.pop(0)
                running[pool.submit(_deploy_one, engines[index], host_opts[index], settings, consoles[index],
                                    outcomes[index], credentials)] = index
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                future.result()  # _deploy_one keeps cdtools errors; anything else is a bug to show
                if outcomes[index].error is not None:
                    failed.append(index)
    return sorted(failed)


def _report(result: RolloutResult, console: Console) -> None:
    console.line(f"rollout of {result.image} as {result.name}:")
    width = max(len(o.host) for o in result.hosts)
    for outcome in result.hosts:
        if outcome.status in ("deployed", "unchanged"):
            detail = f"{outcome.status} ({outcome.detail})" if outcome.detail else outcome.status
        elif outcome.status == "not touched":
            detail = "not touched" + (f": still runs {outcome.before}" if outcome.before else ": nothing ran there")
        else:
            detail = f"{outcome.status}: {outcome.detail}"
        console.line(f"  {outcome.host.ljust(width)}  {detail}")

