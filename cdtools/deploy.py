"""``python -m cdtools.deploy --name NAME --image IMAGE …``: replace a container without losing the service.

The order never leaves the service without a container that can serve::

    pull on the target (X-Registry-Auth always)      old serves
    lock NAME-cdtools-lock                           old serves
    create NAME-cdtools-new on network none          old serves
    start it; wait until it listens                  old serves; the new program starts
    stop NAME (its stop timeout)                     outage starts
    connect NAME-cdtools-new to its networks         outage ends (ports published once it can answer)
    health gate                                      HEALTHCHECK / --probe / still running after N s
    keep NAME as NAME-previous (stopped)             its volumes and config are the rollback
    rename NAME-cdtools-new to NAME

That is "start first" (cdtools.startfirst: why, measured, and where it is valid).
Elsewhere (host network, overlay networks, --link, Podman, --no-start-first) and
when a program exits without its network, the classic order: create, stop NAME,
start NAME-cdtools-new (the outage then includes the program's start-up).

When the new container fails (exits, unhealthy, port taken, SIGTERM from a
Jenkins abort), its last log lines and health log are printed, it is removed,
the old container is renamed back and started again, and the step ends with
:class:`~cdtools.errors.RolledBack` (exit 6); if the old one can't be brought
back, :class:`~cdtools.errors.DeployError` (exit 7).

Labels on the new container carry the effective-spec hash and image id (a
re-run with both unchanged does nothing unless ``--force``), the build's
history (OCI revision/source, BUILD_URL, deployed-at) and the restart policies
a rollback needs.  ``--dry-run`` (and ``python -m cdtools.plan``) print the same
steps and the config difference, secrets redacted, and change nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

from . import cli, health, lock, reference, spec as spec_mod, startfirst
from .console import Console, LayerProgress
from .engine import Engine, connect
from .errors import APIError, CdtoolsError, DeployError, NotFound, RolledBack, StreamError, UsageError
from .health import Gate
from .settings import Settings
from .spec import Spec

PROG = "cdtools deploy"
TEMP_SUFFIX = "-cdtools-new"
PREVIOUS_SUFFIX = "-previous"
#: docker's own default when a container sets no StopTimeout
DEFAULT_STOP_TIMEOUT = 10
#: container names the daemon accepts
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_IMAGE_ID_RE = re.compile(r"(sha256:)?[0-9a-f]{12,64}")

Json = Dict[str, Any]

if TYPE_CHECKING:
    from .rollout import RolloutResult
    from .service import ServiceResult

    #: what a deploy from the release config gives back: each has ``.container`` and ``.action``
    Deployed = Union["DeployResult", ServiceResult, RolloutResult]


# -- options ------------------------------------------------------------------------------------


@dataclass
class DeployOptions:
    name: str
    image: str
    #: the container flags (spec.add_arguments); --inherit re-applies them over the inherited spec
    spec_args: argparse.Namespace
    inherit: bool = False
    stop_timeout: Optional[int] = None
    gate: Gate = field(default_factory=Gate)
    lock_wait: float = 0.0
    break_lock: bool = False
    force: bool = False
    #: auto, always, missing, never
    pull: str = "auto"
    #: kill a container at once when its PID 1 would ignore the stop signal (local daemons only)
    fast_kill: bool = True
    prune_keep: Optional[int] = None
    log_lines: int = 30
    #: start the new container (network none) before the old one stops, where valid (cdtools.startfirst)
    start_first: bool = True
    #: how long a started-first container gets to listen before the old one is stopped anyway
    start_first_wait: float = 10.0

    def check(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise UsageError(f"--name {self.name!r}: container names are letters, digits, '_', '.', '-'")
        for suffix in (TEMP_SUFFIX, lock.SUFFIX):
            if self.name.endswith(suffix):
                raise UsageError(f"--name {self.name!r}: names ending in {suffix} are cdtools' own")
        if self.stop_timeout is not None and self.stop_timeout < 0:
            raise UsageError("--stop-timeout must be 0 or more seconds")
        if self.gate.timeout <= 0 or self.gate.settle < 0:
            raise UsageError("--health-timeout must be positive and --settle 0 or more")
        if not self.gate.probe and self.gate.settle > self.gate.timeout:
            raise UsageError(f"--settle {self.gate.settle:g} is longer than --health-timeout {self.gate.timeout:g}")
        if self.pull not in ("auto", "always", "missing", "never"):
            raise UsageError(f"--pull {self.pull!r}: expected auto, always, missing or never")
        if self.start_first_wait < 0:
            raise UsageError("--start-first-wait must be 0 or more seconds")
        if self.prune_keep is not None and self.prune_keep < 0:
            raise UsageError("--prune-keep must be 0 or more")


@dataclass
class Plan:
    """What a deploy would do, computed without changing anything."""

    name: str
    image: str
    image_id: str = ""
    #: why the image is (or is not) pulled
    pull: bool = False
    pull_reason: str = ""
    registry: str = ""
    old: Optional[Json] = None
    previous: Optional[Json] = None
    leftover: Optional[Json] = None
    lock_holder: str = ""
    spec: Spec = field(default_factory=Spec)
    body: Json = field(default_factory=dict)
    hash: str = ""
    #: create (first deploy), replace, unchanged
    action: str = "create"
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    has_healthcheck: Optional[bool] = None
    #: set when the new container starts before the old one stops (cdtools.startfirst)
    staging: Optional[startfirst.Staging] = None
    #: why it does not, when there is a running container to replace
    start_first_why: str = ""
    steps: List[str] = field(default_factory=list)
    changes: List[str] = field(default_factory=list)

    @property
    def temp_name(self) -> str:
        return self.name + TEMP_SUFFIX

    @property
    def previous_name(self) -> str:
        return self.name + PREVIOUS_SUFFIX

    @property
    def old_running(self) -> bool:
        return bool(self.old and (self.old.get("State") or {}).get("Running"))


@dataclass
class DeployResult:
    name: str
    #: deployed, unchanged, planned
    action: str
    container_id: str = ""
    image_id: str = ""
    previous_id: str = ""
    stop_seconds: Optional[float] = None
    killed: bool = False
    plan: Optional[Plan] = None
    #: where the container answers: "127.0.0.1:18080 -> 8080/tcp", from its inspect
    addresses: List[str] = field(default_factory=list)

    @property
    def container(self) -> str:
        return self.name


# -- plan ---------------------------------------------------------------------------------------


def _short(container_id: str) -> str:
    return container_id.replace("sha256:", "")[:12]


def _names_registry(text: str) -> bool:
    """Does the reference text itself name a registry (not Docker Hub by default)?"""
    first, sep, _ = text.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _local_image(engine: Engine, ref: str) -> Optional[Json]:
    try:
        return engine.inspect_image(ref)
    except NotFound:
        return None


def _pull_decision(engine: Engine, image: str, policy: str) -> Tuple[bool, str, Optional[Json], str]:
    """(pull?, why, the local image if any, registry)."""
    if _IMAGE_ID_RE.fullmatch(image):
        local = _local_image(engine, image)
        if local is not None:
            return False, "an image id: used as it is on the daemon", local, ""
    ref = reference.parse(image)
    local = _local_image(engine, image)
    named = _names_registry(image)
    if policy == "never":
        if local is None:
            raise UsageError(f"--pull never: {image} is not on the daemon")
        return False, "--pull never", local, ref.registry
    if policy == "always":
        return True, "--pull always", local, ref.registry
    if local is None:
        return True, "not on the daemon yet", None, ref.registry
    if policy == "missing":
        return False, "present on the daemon (--pull missing)", local, ref.registry
    if ref.digest and ref.digest in " ".join(local.get("RepoDigests") or []):
        return False, "present on the daemon by digest, which can't change", local, ref.registry
    if named:
        return True, "a registry is named: the tag may have moved since the last pull", local, ref.registry
    return False, ("present on the daemon and the reference names no registry (not asking Docker Hub; "
                   "--pull always to refresh)"), local, ref.registry


def _inherited(engine: Engine, opts: DeployOptions, old: Optional[Json], settings: Settings) -> Spec:
    if old is None:
        raise UsageError(f"--inherit: there is no container named {opts.name} to inherit from")
    old_image = _local_image(engine, str(old.get("Image") or ""))
    if old_image is None:
        raise UsageError(f"--inherit from {opts.name}: Config can't be reproduced: its image {old.get('Image')} "
                         f"is gone, so the image's defaults can't be told from the container's own settings")
    base = spec_mod.inherit(old, old_image)
    return spec_mod.from_args(opts.spec_args, settings.lookup, base=base)


def _history_labels(settings: Settings) -> Dict[str, str]:
    labels = {spec_mod.OCI_REVISION: settings.git_commit, spec_mod.OCI_SOURCE: settings.git_url}
    return {k: v for k, v in labels.items() if v}


def final_body(plan: Plan, opts: DeployOptions, settings: Settings) -> Json:
    """The create request: the spec, the image, and cdtools' labels."""
    body: Json = json.loads(json.dumps(plan.spec.body))  # a deep copy
    body["Image"] = plan.image
    if opts.stop_timeout is not None:
        body["StopTimeout"] = opts.stop_timeout
    labels = dict(body.get("Labels") or {})
    added = {k: v for k, v in _history_labels(settings).items() if k not in labels}
    labels.update(added)
    restart = (body.get("HostConfig") or {}).get("RestartPolicy") or {"Name": "no"}
    old_restart = ((plan.old or {}).get("HostConfig") or {}).get("RestartPolicy")
    labels.update({
        spec_mod.LABEL_NAME: plan.name,
        spec_mod.LABEL_IMAGE: plan.image,
        spec_mod.LABEL_IMAGE_ID: plan.image_id,
        spec_mod.LABEL_HASH: plan.hash,
        spec_mod.LABEL_DEPLOYED_AT: lock.utc_now(),
        spec_mod.LABEL_RESTART: json.dumps(restart, sort_keys=True),
    })
    if old_restart is not None:
        labels[spec_mod.LABEL_PREVIOUS_RESTART] = json.dumps(old_restart, sort_keys=True)
    for key, value in ((spec_mod.LABEL_BUILD_URL, settings.build_url), (spec_mod.LABEL_JOB, settings.job_name),
                       (spec_mod.LABEL_BUILD_NUMBER, settings.build_number)):
        if value:
            labels[key] = value
    if added:
        labels[spec_mod.LABEL_ADDED] = ",".join(sorted(added))
    secret = sorted(k for k in plan.spec.env() if plan.spec.is_secret(k))
    if secret:
        labels[spec_mod.LABEL_SECRET_ENV] = ",".join(secret)
    body["Labels"] = labels
    return body


def make_plan(engine: Engine, opts: DeployOptions, settings: Settings, *, image_id: Optional[str] = None,
              pulled: bool = False) -> Plan:
    """Everything deploy would do, from what the daemon holds now; changes nothing."""
    opts.check()
    plan = Plan(name=opts.name, image=opts.image)
    if pulled:
        plan.pull, plan.pull_reason = True, "pulled"
        local = _local_image(engine, opts.image)
        plan.registry = "" if _IMAGE_ID_RE.fullmatch(opts.image) else reference.parse(opts.image).registry
    else:
        plan.pull, plan.pull_reason, local, plan.registry = _pull_decision(engine, opts.image, opts.pull)
    plan.image_id = image_id or (str(local["Id"]) if local else "")

    plan.old = engine.find_container(opts.name)
    plan.previous = engine.find_container(plan.previous_name)
    plan.leftover = engine.find_container(plan.temp_name)
    held = engine.find_container(lock.lock_name(opts.name))
    plan.lock_holder = lock.describe(held) if held else ""

    plan.spec = (_inherited(engine, opts, plan.old, settings) if opts.inherit
                 else spec_mod.from_args(opts.spec_args, settings.lookup))
    if opts.stop_timeout is not None:
        plan.spec.body["StopTimeout"] = opts.stop_timeout
    plan.hash = spec_mod.effective_hash(plan.spec.body, plan.image_id) if plan.image_id else ""
    plan.body = final_body(plan, opts, settings)
    if "StopTimeout" not in plan.body and engine.podman_before("4.7"):
        # Podman before 4.7 gives a container created without StopTimeout a stop timeout of 0,
        # so every stop is a SIGKILL at once (containers/podman#19139): say docker's default
        plan.body["StopTimeout"] = DEFAULT_STOP_TIMEOUT

    old_labels = ((plan.old or {}).get("Config") or {}).get("Labels") or {}
    if plan.old is None:
        plan.action = "create"
    elif (plan.old_running and plan.hash and not opts.force and old_labels.get(spec_mod.LABEL_HASH) == plan.hash
          and old_labels.get(spec_mod.LABEL_IMAGE_ID) == plan.image_id):
        plan.action = "unchanged"
    else:
        plan.action = "replace"

    old_cfg = (plan.old or {}).get("Config") or {}
    if opts.stop_timeout is not None:
        plan.stop_timeout = opts.stop_timeout
    elif stop_timeout_of(engine, old_cfg) is not None:
        plan.stop_timeout = int(old_cfg["StopTimeout"])
    if "Healthcheck" in plan.body:
        test = plan.body["Healthcheck"].get("Test") or []
        plan.has_healthcheck = bool(test) and test[0] != "NONE"
    elif local is not None:
        # Podman's image inspect leaves HEALTHCHECK out (its containers still get it): unknown there
        plan.has_healthcheck = health.has_healthcheck(local) or (None if engine.podman_version else False)

    if plan.action == "replace" and plan.old_running:
        if opts.start_first:
            plan.staging, plan.start_first_why = startfirst.plan(engine, plan.body)
        else:
            plan.start_first_why = "--no-start-first"

    plan.changes = _changes(engine, plan)
    plan.steps = _steps(plan, opts, local=engine.endpoint.scheme == "unix")
    return plan


def stop_timeout_of(engine: Engine, config: Mapping[str, Any]) -> Optional[int]:
    """A container's own StopTimeout (its inspect's Config); None when it has none.

    Podman before 4.7 reports 0 for a container created through the Docker API without
    one (containers/podman#19139): a 0 nobody chose, so it counts as none there.
    """
    value = config.get("StopTimeout")
    if value is None or (int(value) == 0 and engine.podman_before("4.7")):
        return None
    return int(value)


def _changes(engine: Engine, plan: Plan) -> List[str]:
    new = dict(plan.body)
    if plan.old is None:
        return spec_mod.diff({}, new, plan.spec)
    old_image = _local_image(engine, str(plan.old.get("Image") or ""))
    old_body = spec_mod.inherit(plan.old, old_image, strict=False).body
    lines = spec_mod.diff(old_body, new, plan.spec)
    old_ref = ((plan.old.get("Config") or {}).get("Image")) or ""
    old_id = str(plan.old.get("Image") or "")
    if old_id != plan.image_id or old_ref != plan.image:
        new_id = _short(plan.image_id) if plan.image_id else "id known after the pull"
        lines.insert(0, f"Image: {old_ref} ({_short(old_id)}) -> {plan.image} ({new_id})")
    return lines


def _steps(plan: Plan, opts: DeployOptions, *, local: bool) -> List[str]:
    steps = []
    if plan.pull:
        steps.append(f"pull {plan.image} ({plan.pull_reason})")
    else:
        steps.append(f"use {plan.image} {_short(plan.image_id)} ({plan.pull_reason})")
    steps.append(f"lock {lock.lock_name(plan.name)}")
    if plan.action == "unchanged":
        steps.append(f"nothing to do: {plan.name} already runs this image with this spec (--force to redeploy)")
        return steps
    if plan.leftover is not None:
        steps.append(f"remove {plan.temp_name} left by an interrupted deploy")
    stop = ""
    if plan.old_running:
        assert plan.old is not None
        stop = f"stop {plan.name} ({_short(plan.old['Id'])}, stop timeout {plan.stop_timeout} s)"
    if plan.staging is not None:
        wait = startfirst.ready_condition(plan.staging, opts.start_first_wait, local=local,
                                          has_healthcheck=plan.has_healthcheck)
        steps.append(f"create {plan.temp_name} from {plan.image} on network {startfirst.STAGING_NETWORK} "
                     f"(its own networks come at the swap)")
        steps.append(f"start {plan.temp_name} while {plan.name} serves; {wait}")
        steps.append(stop)
        steps.append(f"connect {plan.temp_name} to {plan.staging.network_names()}")
    else:
        steps.append(f"create {plan.temp_name} from {plan.image}")
        if stop:
            steps.append(stop)
        steps.append(f"start {plan.temp_name}")
    steps.append(f"health gate: {opts.gate.describe(plan.has_healthcheck)}")
    if plan.old is not None:
        if plan.previous is not None:
            steps.append(f"remove {plan.previous_name} ({_short(plan.previous['Id'])})")
        steps.append(f"keep {plan.name} as {plan.previous_name} (stopped, restart policy off)")
    steps.append(f"rename {plan.temp_name} to {plan.name}")
    return steps


def start_first_note(plan: Plan) -> str:
    return (f"start first: no ({plan.start_first_why}): {plan.temp_name} starts after {plan.name} "
            f"has stopped")


def print_plan(plan: Plan, console: Console, where: str) -> None:
    old = plan.old
    if old is None:
        head = f"first deploy of {plan.name}"
    else:
        state = (old.get("State") or {}).get("Status", "?")
        head = f"{plan.action} {plan.name} ({_short(old['Id'])}, {state}, image {(old.get('Config') or {}).get('Image')})"
    console.line(f"plan on {where}: {head}")
    if plan.lock_holder:
        console.line(f"lock: {lock.lock_name(plan.name)} is held by {plan.lock_holder}")
    for number, step in enumerate(plan.steps, 1):
        console.line(f"  {number}. {step}")
    if plan.start_first_why and plan.action == "replace":
        console.line(start_first_note(plan))
    if plan.changes:
        console.line("changes:")
        for line in plan.changes:
            console.line(f"  {line}")
    else:
        console.line("changes: none")
    console.line("create request (secrets redacted):")
    for line in json.dumps(spec_mod.redacted(plan.body, plan.spec), indent=2, sort_keys=True).splitlines():
        console.line("  " + line)


# -- the swap -----------------------------------------------------------------------------------


class _GateFailed(Exception):
    """The new container did not pass the health gate (internal: ends as RolledBack/DeployError)."""

    def __init__(self, verdict: health.Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


def _pid1_ignores(engine: Engine, doc: Json) -> Optional[str]:
    """Why the stop signal can't reach PID 1 of ``doc``, or None (also when cdtools can't tell).

    PID 1 of a PID namespace gets only the signals it has a handler for; a
    program with none (busybox httpd, many shell scripts) sits out the whole
    stop timeout and is then killed.  Read from /proc, so only for a daemon on
    this machine, and only when /proc/PID/cgroup proves the pid is that
    container's (a Jenkins agent in a container sees other pids).
    """
    if engine.endpoint.scheme != "unix":
        return None
    state = doc.get("State") or {}
    pid = int(state.get("Pid") or 0)
    if pid <= 0 or ((doc.get("HostConfig") or {}).get("PidMode") or "") == "host":
        return None
    name = str((doc.get("Config") or {}).get("StopSignal") or "SIGTERM").upper()
    # Podman reports the stop signal by its number ("15")
    name = name if name.startswith("SIG") or name.isdigit() else "SIG" + name
    try:
        signum = int(name) if name.isdigit() else int(signal.Signals[name])
        name = signal.Signals(signum).name
    except (KeyError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as fh:
            if str(doc.get("Id")) not in fh.read():
                return None
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            status = dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
        caught = int(status["SigCgt"].strip(), 16)
    except (OSError, KeyError, ValueError):
        return None
    if caught & (1 << (signum - 1)):
        return None
    return f"PID 1 of {str(doc.get('Name', '')).lstrip('/')} has no {name} handler, so the signal would be ignored"


def stop_container(engine: Engine, container_id: str, name: str, timeout: int, *, fast_kill: bool,
                   console: Console) -> Tuple[float, bool]:
    """Stop within ``timeout`` seconds; (seconds taken, whether it ended by SIGKILL). Says which."""
    ignored = _pid1_ignores(engine, engine.inspect_container(container_id)) if fast_kill else None
    started = time.monotonic()
    killed = False
    if ignored and timeout > 0:
        console.line(f"{ignored}: killing it now instead of waiting {timeout} s (--no-fast-kill to wait)")
        try:
            engine.kill(container_id)
        except APIError as exc:
            if exc.status != 409:  # 409: it stopped by itself meanwhile
                raise
        engine.wait(container_id)
        killed = True
    else:
        engine.stop(container_id, timeout=timeout)
    seconds = time.monotonic() - started
    code = (engine.inspect_container(container_id).get("State") or {}).get("ExitCode")
    if killed:
        console.line(f"killed {name} in {seconds:.1f} s (exit {code})")
    elif code == 137 and seconds >= timeout - 0.5:
        killed = True
        console.line(f"{name} did not exit on its stop signal within {timeout} s; the daemon killed it (exit 137). "
                     f"Make PID 1 handle SIGTERM (e.g. --init) or lower --stop-timeout")
    else:
        console.line(f"stopped {name} in {seconds:.1f} s (exit {code})")
    return seconds, killed


def _only_staged(doc: Json) -> bool:
    """A container started first that never got its networks: it serves nothing (cdtools.startfirst)."""
    networks = list(((doc.get("NetworkSettings") or {}).get("Networks") or {}))
    mode = (doc.get("HostConfig") or {}).get("NetworkMode") or "default"
    return networks in ([], [startfirst.STAGING_NETWORK]) and mode != startfirst.STAGING_NETWORK


class _Swap:
    """The steps that change the daemon, and how to undo them."""

    def __init__(self, engine: Engine, plan: Plan, opts: DeployOptions, console: Console, *,
                 existing: Optional[Json] = None) -> None:
        self.engine = engine
        self.plan = plan
        self.opts = opts
        self.console = console
        #: rollback: NAME-previous comes back instead of a new container being created
        self.existing = existing
        #: how messages name what failed
        self.what = f"rollback of {plan.name}" if existing is not None else f"deploy of {plan.image} to {plan.name}"
        self.new_id = ""
        self.old_stop_requested = False
        self.old_renamed = False
        self.result = DeployResult(name=plan.name, action="deployed", image_id=plan.image_id, plan=plan)
        self._steps = iter(plan.steps[2:])  # pull/use and lock were printed by the caller

    def step(self) -> None:
        self.console.step(next(self._steps))

    def skip(self) -> None:
        """A planned step that no longer applies (a started-first container fell back to the classic order)."""
        next(self._steps)

    def warn(self, text: str) -> None:
        self.console.line(f"warning: {text}")

    def run(self) -> DeployResult:
        plan = self.plan
        if plan.leftover is not None:
            self.step()
            if (plan.leftover.get("State") or {}).get("Running") and not _only_staged(plan.leftover):
                raise DeployError(
                    f"{plan.temp_name} is running: an earlier deploy was killed in the middle of its swap and it may "
                    f"be what serves now; check, then remove it (python -m cdtools.container rm {plan.temp_name} "
                    f"--force) or rename it to {plan.name}")
            self.engine.remove_container(plan.leftover["Id"], force=True)
        try:
            self._swap()
        except BaseException as exc:  # noqa: BLE001 - SIGTERM/Ctrl-C too: the old container must come back
            self._roll_back(exc)
            raise  # not reached: _roll_back raises
        return self.result

    def _swap(self) -> None:
        plan, engine = self.plan, self.engine
        self.step()  # create (rollback: rename NAME-previous to the temporary name)
        if self.existing is not None:
            self.new_id = str(self.existing["Id"])
            self.result.container_id = self.new_id
            engine.rename(self.new_id, plan.temp_name)
        else:
            self._create(staged=plan.staging is not None)
        if plan.staging is not None and self.existing is None:
            self._start_first(plan.staging)
        else:
            if plan.old_running:
                self.step()  # stop
                self._stop_old()
            self.step()  # start
            engine.start(self.new_id)
        self.step()  # gate
        verdict = health.wait(engine, self.new_id, self.opts.gate)
        if not verdict.ok:
            raise _GateFailed(verdict)
        self.console.line(f"{plan.temp_name} passed the gate after {verdict.seconds:.1f} s")

        with lock.deferred_sigterm():  # renames are quick; half-done they would confuse the next deploy
            if plan.old is not None:
                if plan.previous is not None:
                    self.step()
                    self._remove_previous()
                self.step()
                engine.rename(plan.old["Id"], plan.previous_name)
                self.old_renamed = True
                self.result.previous_id = str(plan.old["Id"])
            self.step()
            engine.rename(self.new_id, plan.name)
            if plan.old is not None:
                # A stopped "always" container is started again when the daemon restarts, and
                # would fight the new one for its ports: NAME-previous waits with no policy.
                try:
                    engine.update_container(plan.old["Id"], {"RestartPolicy": {"Name": "no"}})
                except CdtoolsError as exc:
                    self.warn(f"could not turn off the restart policy of {plan.previous_name}: {exc}")

    def _start_first(self, staging: startfirst.Staging) -> None:
        """Start the new container with no network while the old one serves; swap the network only.

        See cdtools.startfirst for why and where.  If it exits, restarts or turns unhealthy
        before it has its network, the deploy fails with NAME never stopped: a broken image
        must not cost an outage.  (A program that needs its network to start says so the
        same way; ``--no-start-first`` deploys it in the classic order.)
        """
        plan, engine = self.plan, self.engine
        self.step()  # start while NAME serves; wait until ready
        engine.start(self.new_id)
        ready = startfirst.wait_ready(engine, self.new_id, staging, self.opts.start_first_wait)
        if ready.failed:
            raise _GateFailed(health.Verdict(
                ok=False, reason=f"{ready.failed} before it had its network (if the program needs its network "
                                 f"to start, deploy with --no-start-first)"))
        self.console.line(f"{plan.temp_name}: {ready.seen}")
        startfirst.unplug(engine, self.new_id)
        self.step()  # stop
        self._stop_old()
        if not ready.confirmed:
            # nothing said it got past its start-up: it may have given up without a network meanwhile
            doc = engine.inspect_container(self.new_id)
            failed = health.not_running(doc.get("State") or {})
            if not failed and int(doc.get("RestartCount") or 0) > 0:
                failed = f"its restart policy restarted it {doc['RestartCount']} time(s)"
            if failed:
                self._unstage(failed)
                self._start_classic()
                return
        self.step()  # connect
        startfirst.connect(engine, self.new_id, staging)

    def _unstage(self, why: str) -> None:
        """The started-first container failed without its network: replace it by a classic one."""
        plan = self.plan
        self.console.line(f"{plan.temp_name}: {why} while it had no network; it may need one to start, so it is "
                          f"created again and started after {plan.name} has stopped (the classic order)")
        try:
            lines = self.engine.logs(self.new_id, tail=min(self.opts.log_lines, 10)).splitlines()
        except CdtoolsError:
            lines = []
        for line in lines:
            self.console.line("  | " + spec_mod.scrub(line, plan.spec.secret_values()))
        self.engine.remove_container(self.new_id, force=True)
        self.new_id = ""
        self._create()

    def _start_classic(self) -> None:
        self.skip()  # the planned connect: the new container was created with its networks
        self.console.step(f"start {self.plan.temp_name}")
        self.engine.start(self.new_id)

    def _create(self, *, staged: bool = False) -> None:
        plan, engine = self.plan, self.engine
        body = startfirst.staged_body(plan.body) if staged else dict(plan.body)
        endpoints = dict(((body.get("NetworkingConfig") or {}).get("EndpointsConfig")) or {})
        extra: List[Tuple[str, Json]] = []
        if len(endpoints) > 1:
            # one network per create request before API 1.44; the others are connected after
            mode = (body.get("HostConfig") or {}).get("NetworkMode")
            first = mode if mode in endpoints else next(iter(endpoints))
            extra = [(k, v) for k, v in endpoints.items() if k != first]
            body["NetworkingConfig"] = {"EndpointsConfig": {first: endpoints[first]}}
        created = engine.create_container(plan.temp_name, body)
        self.new_id = str(created["Id"])
        self.result.container_id = self.new_id
        for warning in created.get("Warnings") or []:
            self.warn(f"daemon: {warning}")
        for net, endpoint in extra:
            engine.connect_network(net, self.new_id, endpoint)
        got = str(engine.inspect_container(self.new_id).get("Image") or "")
        if plan.image_id and got != plan.image_id:
            raise DeployError(f"{plan.image} changed while deploying (now {_short(got)}, pulled "
                              f"{_short(plan.image_id)}): someone retagged it; nothing was stopped")

    def _stop_old(self) -> None:
        assert self.plan.old is not None
        self.old_stop_requested = True
        seconds, killed = stop_container(self.engine, str(self.plan.old["Id"]), self.plan.name,
                                         self.plan.stop_timeout, fast_kill=self.opts.fast_kill, console=self.console)
        self.result.stop_seconds, self.result.killed = seconds, killed

    def _remove_previous(self) -> None:
        plan = self.plan
        assert plan.previous is not None
        prev_id = str(plan.previous["Id"])
        try:
            self.engine.remove_container(prev_id, force=True)
            return
        except NotFound:
            return
        except CdtoolsError as exc:
            # cleanup never fails a deploy; park it under another name instead
            parked = f"{plan.previous_name}-{_short(prev_id)}"
            self.warn(f"could not remove the older {plan.previous_name} ({_short(prev_id)}): {exc}; "
                      f"renaming it to {parked}")
        self.engine.rename(prev_id, parked)

    def _roll_back(self, exc: BaseException) -> None:
        with lock.deferred_sigterm():
            self._restore(exc)

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, _GateFailed):
            return f"{self.plan.temp_name} failed the health gate: {exc.verdict.reason}"
        if isinstance(exc, lock.Terminated):
            return "interrupted by SIGTERM (a Jenkins abort?)"
        if isinstance(exc, KeyboardInterrupt):
            return "interrupted"
        if isinstance(exc, APIError):
            return f"the daemon refused: {exc.message}"
        return str(exc) or exc.__class__.__name__

    def _restore(self, exc: BaseException) -> None:
        plan, engine = self.plan, self.engine
        reason = spec_mod.scrub(self._reason(exc), plan.spec.secret_values())
        self.console.line(f"deploy failed: {reason}")
        if self.new_id:
            self._show_failure(exc)
            if self.existing is not None:
                self._park_existing()
            else:
                try:
                    engine.remove_container(self.new_id, force=True)
                except NotFound:
                    pass
                except CdtoolsError as err:
                    self.warn(f"could not remove {plan.temp_name}: {err}")
        if plan.old is None:
            raise DeployError(f"{self.what} failed: {reason}; there was no earlier "
                              f"container to go back to") from None
        old_id = str(plan.old["Id"])
        try:
            if self.old_renamed:
                engine.rename(old_id, plan.name)
            if plan.old_running:
                if self.old_stop_requested:
                    self._wait_stopped(old_id)
                engine.start(old_id)
                state = engine.inspect_container(old_id).get("State") or {}
                if not state.get("Running"):
                    raise DeployError(f"it exited again with code {state.get('ExitCode')}")
        except CdtoolsError as err:
            raise DeployError(f"{self.what} failed: {reason}; and the earlier container "
                              f"{_short(old_id)} could not be restored: {err}") from None
        what = "runs again" if plan.old_running else "is back (it was not running before)"
        if not self.old_stop_requested and plan.old_running:
            what = "was never stopped"
        raise RolledBack(f"{self.what} failed: {reason}; rolled back: {plan.name} "
                         f"({_short(old_id)}, {(plan.old.get('Config') or {}).get('Image')}) {what}") from None

    def _park_existing(self) -> None:
        """Rollback: the container that failed to come back waits as NAME-previous again."""
        plan, engine = self.plan, self.engine
        try:
            if (engine.inspect_container(self.new_id).get("State") or {}).get("Running"):
                engine.kill(self.new_id)
                engine.wait(self.new_id)
        except CdtoolsError as err:
            self.warn(f"could not stop {plan.temp_name}: {err}")
        try:
            engine.rename(self.new_id, plan.previous_name)
        except CdtoolsError as err:
            self.warn(f"could not rename {plan.temp_name} back to {plan.previous_name}: {err}")

    def _wait_stopped(self, container_id: str) -> None:
        # A stop cut short on our side (SIGTERM) goes on in the daemon; starting before it is
        # done answers 304 and the container dies a moment later.
        deadline = time.monotonic() + self.plan.stop_timeout + 15
        while time.monotonic() < deadline:
            if not (self.engine.inspect_container(container_id).get("State") or {}).get("Running"):
                return
            time.sleep(0.1)

    def _show_failure(self, exc: BaseException) -> None:
        secrets = self.plan.spec.secret_values()
        try:
            doc = self.engine.inspect_container(self.new_id)
            logs = self.engine.logs(self.new_id, tail=self.opts.log_lines)
        except CdtoolsError as err:
            self.warn(f"could not read the logs of {self.plan.temp_name}: {err}")
            return
        lines = logs.splitlines()
        self.console.line(f"last {len(lines)} log line(s) of {self.plan.temp_name}:" if lines
                          else f"{self.plan.temp_name} wrote no log lines")
        for line in lines:
            self.console.line("  | " + spec_mod.scrub(line, secrets))
        hlog = exc.verdict.health_log if isinstance(exc, _GateFailed) else health.health_log(doc)
        if hlog:
            self.console.line("health log:")
            for line in hlog:
                self.console.line("  | " + spec_mod.scrub(line, secrets))


# -- run ----------------------------------------------------------------------------------------


def _pull(engine: Engine, plan: Plan, credentials: Any, console: Console) -> None:
    if _IMAGE_ID_RE.fullmatch(plan.image) and not plan.registry:
        raise UsageError(f"{plan.image} is not on the daemon, and an image id can't be pulled")
    ref = reference.parse(plan.image)
    header = credentials.header() if credentials is not None else "e30="  # e30= is {}: anonymous
    source = getattr(credentials, "source", "none (anonymous)")
    console.line(f"credentials for {ref.registry}: {source}")
    layers = LayerProgress(console)
    tag = ref.digest or ref.tag or "latest"
    try:
        for record in engine.pull(ref.repository, tag, header):
            layers.feed(record)
    except (StreamError, APIError) as exc:
        message = exc.message if isinstance(exc, (StreamError, APIError)) else str(exc)
        # nothing was touched: exit 1 (the daemon refused), not 7 (which says the service may be down)
        raise CdtoolsError(f"pull of {plan.image} from {ref.registry} failed: {message}; nothing was changed") from None


def pull(engine: Engine, plan: Plan, credentials: Any, console: Console) -> None:
    """Pull ``plan.image`` as run() does, for callers that pull ahead (a rollout, on every host first)."""
    _pull(engine, plan, credentials, console)


def run(engine: Engine, opts: DeployOptions, settings: Settings, *, console: Console,
        credentials: Any = None, dry_run: bool = False) -> DeployResult:
    """Deploy ``opts.image`` as ``opts.name``; see the module docstring for the order."""
    plan = make_plan(engine, opts, settings)
    if dry_run:
        print_plan(plan, console, str(engine.endpoint))
        return DeployResult(name=opts.name, action="planned", image_id=plan.image_id, plan=plan)

    console.step(plan.steps[0])
    if plan.pull:
        _pull(engine, plan, credentials, console)
    image = _local_image(engine, opts.image)
    if image is None:
        raise DeployError(f"{opts.image} is not on the daemon after the pull")
    image_id = str(image["Id"])

    holder = lock.holder_labels(opts.name, settings.build_url, settings.job_name)
    console.step(plan.steps[1])
    with lock.Lock(engine, opts.name, image_id, holder, wait=opts.lock_wait, break_lock=opts.break_lock,
                   console=console):
        # what the daemon holds may have changed while we pulled or waited for the lock
        plan = make_plan(engine, opts, settings, image_id=image_id, pulled=plan.pull)
        if plan.pull:
            plan.pull_reason = "pulled"
        if plan.action == "unchanged":
            console.line(plan.steps[-1])
            result = DeployResult(name=opts.name, action="unchanged", image_id=image_id,
                                  container_id=str((plan.old or {}).get("Id", "")), plan=plan)
        else:
            if plan.start_first_why:
                console.line(start_first_note(plan))
            result = _Swap(engine, plan, opts, console).run()
    if result.action == "deployed":
        console.line(f"deployed {plan.image} ({_short(image_id)}) as {plan.name} ({_short(result.container_id)})")
    say_where(engine, result, console)
    if opts.prune_keep is not None and result.action == "deployed":
        _prune(engine, plan, opts.prune_keep, console)
    return result


def published(doc: Mapping[str, Any]) -> List[str]:
    """The published ports of an inspected container: ``127.0.0.1:18080 -> 8080/tcp``, ``[::]:80 -> 80/tcp``."""
    out = []
    for port, bindings in sorted(((doc.get("NetworkSettings") or {}).get("Ports") or {}).items()):
        for binding in bindings or []:
            host = str(binding.get("HostIp") or "0.0.0.0")
            host = f"[{host}]" if ":" in host else host
            out.append(f"{host}:{binding.get('HostPort')} -> {port}")
    return out


def say_where(engine: Engine, result: DeployResult, console: Console) -> None:
    """Print where the deployed container answers, from its inspect (a failure to look is a warning)."""
    try:
        doc = engine.inspect_container(result.container_id or result.name)
    except CdtoolsError as exc:
        console.line(f"warning: could not inspect {result.name} to say where it answers: {exc}")
        return
    result.addresses = published(doc)
    if result.addresses:
        console.line(f"{result.name} answers on {', '.join(result.addresses)}")
        return
    networks = (doc.get("NetworkSettings") or {}).get("Networks") or {}
    where = ", ".join(f"{net} {ep.get('IPAddress')}" for net, ep in sorted(networks.items())
                      if (ep or {}).get("IPAddress"))
    console.line(f"{result.name} publishes no ports" + (f"; on its networks: {where}" if where else ""))


def _prune(engine: Engine, plan: Plan, keep: int, console: Console) -> None:
    from . import prune  # a cleanup helper; imported late so deploy never depends on it to start

    try:
        prune.run(engine, plan.name, keep=keep, console=console)
    except Exception as exc:  # noqa: BLE001 - cleanup failures are warnings, never a failed deploy
        console.line(f"warning: prune after deploy failed: {exc}")


# -- command line -------------------------------------------------------------------------------


def add_deploy_arguments(p: argparse.ArgumentParser) -> None:
    # required for a container; checked in options_from_args, since --target service:NAME names a service
    p.add_argument("--name", help="container name (required)")
    p.add_argument("--image", required=True, help="image reference or id to run")
    p.add_argument("--deploy-host", metavar="HOST", help="daemon to deploy to (overrides -H; same TLS settings)")
    spec_mod.add_arguments(p)
    g = p.add_argument_group("swap")
    g.add_argument("--stop-timeout", type=int, metavar="S",
                   help="seconds the old container gets to stop before it is killed (default: its own "
                        "StopTimeout, else 10); also set on the new container")
    g.add_argument("--no-fast-kill", dest="fast_kill", action="store_false",
                   help="wait the stop timeout even when PID 1 has no handler for the stop signal")
    g.add_argument("--health-timeout", type=float, default=60.0, metavar="S",
                   help="how long the new container gets to pass the gate (default 60)")
    g.add_argument("--settle", type=float, default=3.0, metavar="S",
                   help="with no HEALTHCHECK and no --probe: still running after S seconds (default 3)")
    g.add_argument("--probe", metavar="URL", help="http://HOST:PORT/PATH (2xx/3xx) or tcp://HOST:PORT")
    g.add_argument("--lock-wait", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for another deploy of NAME to finish (default 0)")
    g.add_argument("--break-lock", action="store_true",
                   help="remove a lock left by a deploy that died (check its holder first)")
    g.add_argument("--force", action="store_true", help="redeploy even when image and spec are unchanged")
    g.add_argument("--pull", default="auto", choices=("auto", "always", "missing", "never"),
                   help="auto: pull when the reference names a registry or the image is missing")
    g.add_argument("--prune-keep", type=int, metavar="N", help="afterwards, keep N images of the repository")
    g.add_argument("--log-lines", type=int, default=30, metavar="N",
                   help="log lines of a failed container to print (default 30)")
    g.add_argument("--no-start-first", dest="start_first", action="store_false",
                   help="start the new container only after the old one has stopped (by default, on local "
                        "bridge networks, it starts first with no network and only the network is swapped)")
    g.add_argument("--start-first-wait", type=float, default=10.0, metavar="S",
                   help="how long a container started first gets to listen on its published ports before "
                        "the old one is stopped anyway (default 10)")
    # for the pull; resolved only when a pull happens (_LazyCredentials), the password read once
    cli.add_credential_args(p)


def options_from_args(args: argparse.Namespace) -> DeployOptions:
    if not args.name:
        raise UsageError("--name is required: the container to deploy")
    if args.username and not (args.password_stdin or args.password_file):
        # Checked now, not at the pull: with a local image there is no pull, and `-u 1000` (docker
        # run's --user) would otherwise be dropped without a word.
        raise UsageError("--username/-u is the registry user and needs --password-stdin or --password-file "
                         "(the container's user is --user)")
    probe = health.check_probe_url(args.probe) if args.probe else None
    opts = DeployOptions(
        name=args.name, image=args.image, spec_args=args, inherit=args.inherit, stop_timeout=args.stop_timeout,
        gate=Gate(timeout=args.health_timeout, settle=args.settle, probe=probe), lock_wait=args.lock_wait,
        break_lock=args.break_lock, force=args.force, pull=args.pull, fast_kill=args.fast_kill,
        prune_keep=args.prune_keep, log_lines=args.log_lines, start_first=args.start_first,
        start_first_wait=args.start_first_wait)
    opts.check()
    return opts


def _credentials(args: argparse.Namespace, settings: Settings, image: str) -> Any:
    if _IMAGE_ID_RE.fullmatch(image):
        return None
    return cli.credentials_for(args, settings, reference.parse(image).registry)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = cli.parser(prog, description)
    add_deploy_arguments(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from . import targets  # it builds on this module: imported here, not at the top

    p = build_parser(PROG, "Replace a container with one running a new image, without losing the service.")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    targets.add_arguments(p)
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        if targets.chosen(args):
            return _other_target(args, settings, targets)
        opts = options_from_args(args)
        console = cli.console_for(args)
        engine = connect(settings, host=args.deploy_host or args.host, timeout=args.timeout)
        with lock.sigterm_raises():
            creds = None if args.dry_run else _lazy_credentials(args, settings, opts.image)
            result = run(engine, opts, settings, console=console, credentials=creds, dry_run=args.dry_run)
        if args.quiet and result.action != "planned":
            print(result.container_id)
        return 0

    return cli.run(PROG, work)


def _other_target(args: argparse.Namespace, settings: Settings, targets: Any) -> int:
    """A swarm service or several hosts (cdtools.targets), with deploy's credentials and SIGTERM handling."""
    console = cli.console_for(args)
    with lock.sigterm_raises():
        creds = None if args.dry_run else _lazy_credentials(args, settings, args.image)
        result = targets.run(args, settings, console=console, credentials=creds, dry_run=args.dry_run,
                             host=args.deploy_host or args.host, timeout=args.timeout)
    if args.quiet and result.action != "planned":
        print(result.container)
    return 0


class _LazyCredentials:
    """Resolved only when a pull happens: a local image needs no config.json or password."""

    def __init__(self, resolve: Any) -> None:
        self._resolve = resolve
        self._value: Any = None

    def _get(self) -> Any:
        if self._value is None:
            self._value = self._resolve()
        return self._value

    @property
    def source(self) -> str:
        return str(getattr(self._get(), "source", ""))

    def header(self) -> str:
        return str(self._get().header())


def _lazy_credentials(args: argparse.Namespace, settings: Settings, image: str) -> Any:
    return _LazyCredentials(lambda: _credentials(args, settings, image)) if not _IMAGE_ID_RE.fullmatch(image) else None


# -- the release config's "deploy" section ----------------------------------------------------

_S, _B, _N, _MAP, _LIST = (str,), (bool,), (int, float), "strmap", "strlist"

#: deploy keys of cdtools.json: key -> (type, description); the same meaning as the flags
CONFIG_KEYS: Dict[str, Any] = {
    "name": (_S, "container name (required)"),
    "host": (_S, "daemon to deploy to (default: the top-level host, then DOCKER_HOST)"),
    "spec": (_S, "container-create JSON file (relative to the config)"),
    "start_spec": (_S, "the old start body (PortBindings, RestartPolicy …)"),
    "inherit": (_B, "take the running container's config and change only the image"),
    "ports": (_LIST, "-p values"),
    "env": (_MAP, "environment variables"),
    "env_files": (_LIST, "--env-file files (values are secret)"),
    "secret_env": (_LIST, "--secret-env K[=VAR]"),
    "volumes": (_LIST, "-v values"),
    "mounts": (_LIST, "--mount values"),
    "network": (_S, "network to join"),
    "network_aliases": (_LIST, "aliases on that network"),
    "restart": (_S, "restart policy"),
    "labels": (_MAP, "container labels"),
    "health_cmd": (_S, "HEALTHCHECK command"),
    "health_interval": (_S, "time between checks"),
    "command": (_LIST, "command and arguments"),
    "stop_timeout": (_N, "seconds to stop the old container"),
    "health_timeout": (_N, "seconds for the health gate"),
    "settle": (_N, "still running after N seconds"),
    "probe": (_S, "http:// or tcp:// probe"),
    "lock_wait": (_N, "seconds to wait for the deploy lock"),
    "force": (_B, "redeploy even when unchanged"),
    "pull": (_S, "auto, always, missing, never"),
    "prune_keep": (_N, "keep N images of the repository afterwards"),
    "start_first": (_B, "start the new container before the old one stops, where valid (default true)"),
    "start_first_wait": (_N, "seconds a container started first gets to listen (default 10)"),
    # cdtools.targets: a swarm service, or several hosts
    "target": (_S, "container (default) or service:NAME, a swarm service through the manager at host"),
    "hosts": (_LIST, "daemons to deploy the container to, one after another (instead of host)"),
    "max_parallel": (_N, "with hosts: how many at a time (default 1)"),
    "replicas": (_N, "service tasks to run (default: the service's own; 1 on create)"),
    "publish_mode": (_S, "service ports: ingress (default) or host"),
    "converge_timeout": (_N, "seconds to follow a service update (default 300)"),
    "update": {
        "parallelism": (_N, "service tasks updated at a time"),
        "delay": (_N, "seconds between batches"),
        "order": (_S, "start-first or stop-first"),
        "failure_action": (_S, "rollback or pause"),
        "monitor": (_N, "seconds a new task must keep running"),
    },
}


def config_argv(cfg: Mapping[str, Any], image: str, base: str) -> List[str]:
    """The deploy flags a config section means (parsed by the same parser, so the meaning is one)."""
    target = str(cfg.get("target") or "container")
    if not cfg.get("name") and not target.startswith("service:"):
        raise UsageError("deploy.name: required")
    argv = (["--name", str(cfg["name"])] if cfg.get("name") else []) + ["--image", image]

    def path(value: str) -> str:
        return value if os.path.isabs(value) else os.path.join(base, value)

    flags = {"spec": "--spec", "start_spec": "--start-spec", "network": "--network", "restart": "--restart",
             "health_cmd": "--health-cmd", "health_interval": "--health-interval", "probe": "--probe",
             "pull": "--pull", "stop_timeout": "--stop-timeout", "health_timeout": "--health-timeout",
             "settle": "--settle", "lock_wait": "--lock-wait", "prune_keep": "--prune-keep",
             "start_first_wait": "--start-first-wait"}
    for key, flag in flags.items():
        if cfg.get(key) is not None:
            value = cfg[key]
            if key in ("stop_timeout", "prune_keep"):
                value = int(value)
            argv += [flag, path(value) if key in ("spec", "start_spec") else str(value)]
    lists = {"ports": "-p", "volumes": "-v", "mounts": "--mount", "network_aliases": "--network-alias",
             "secret_env": "--secret-env"}
    for key, flag in lists.items():
        for value in cfg.get(key) or []:
            argv += [flag, value]
    for value in cfg.get("env_files") or []:
        argv += ["--env-file", path(value)]
    for k, v in (cfg.get("env") or {}).items():
        argv += ["-e", f"{k}={v}"]
    for k, v in (cfg.get("labels") or {}).items():
        argv += ["--label", f"{k}={v}"]
    for key in ("inherit", "force"):
        if cfg.get(key):
            argv.append("--" + key)
    if cfg.get("start_first") is False:
        argv.append("--no-start-first")
    argv += _target_argv(cfg)
    if cfg.get("command"):
        argv += ["--"] + list(cfg["command"])
    return argv


def _target_argv(cfg: Mapping[str, Any]) -> List[str]:
    """The cdtools.targets flags of a deploy section."""
    argv: List[str] = []
    if cfg.get("target") is not None:
        argv += ["--target", str(cfg["target"])]
    if cfg.get("hosts"):
        argv += ["--hosts", ",".join(cfg["hosts"])]
    whole = ("max_parallel", "replicas", "parallelism")
    update = cfg.get("update") or {}
    pairs = [(cfg, "max_parallel", "--max-parallel"), (cfg, "replicas", "--replicas"),
             (cfg, "publish_mode", "--publish-mode"), (cfg, "converge_timeout", "--converge-timeout"),
             (update, "parallelism", "--parallelism"), (update, "delay", "--update-delay"),
             (update, "order", "--update-order"), (update, "failure_action", "--failure-action"),
             (update, "monitor", "--monitor")]
    for section, key, flag in pairs:
        if section.get(key) is not None:
            argv += [flag, str(int(section[key]) if key in whole else section[key])]
    return argv


def run_from_config(settings: Settings, cfg: Mapping[str, Any], *, image: str, base: str,
                    default_host: Optional[str], credentials: Any, console: Console,
                    timeout: Optional[float] = None, dry_run: bool = False) -> "Deployed":
    """The release step's deploy: ``cfg`` is the validated "deploy" section."""
    from . import targets  # it builds on this module: imported here, not at the top

    p = build_parser(PROG, "deploy (from the release config)")
    targets.add_arguments(p)
    try:
        args = p.parse_args(config_argv(cfg, image, base))
    except SystemExit:
        raise UsageError("the release config's deploy section does not make valid deploy flags") from None
    if cfg.get("hosts") and cfg.get("host"):
        raise UsageError("deploy.host and deploy.hosts both say where to deploy: give one")
    if targets.chosen(args):
        with lock.sigterm_raises():
            return targets.run(args, settings, console=console, credentials=credentials, dry_run=dry_run,
                               host=cfg.get("host") or default_host, timeout=timeout)
    opts = options_from_args(args)
    engine = connect(settings, host=cfg.get("host") or default_host, timeout=timeout)
    with lock.sigterm_raises():
        return run(engine, opts, settings, console=console, credentials=credentials, dry_run=dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
