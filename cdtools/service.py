"""Swarm services: ``python -m cdtools.deploy --target service:NAME --image IMAGE …``.

An update, in this order (the docker CLI's, with what it leaves implicit said)::

    IMAGE -> NAME:TAG@sha256:… (GET /distribution, X-Registry-Auth)   nothing has changed yet
    lock: the swarm config NAME-cdtools-lock                          one deploy of NAME at a time
    GET /services/NAME                                                its Spec and Version.Index
    Spec.TaskTemplate.ContainerSpec.Image = the pinned reference     (+ the update settings asked for)
    POST /services/NAME/update?version=INDEX, X-Registry-Auth         "update out of sequence": GET, resend
    follow: UpdateStatus.State and the service's running tasks       converged: the up-to-date tasks running
                                                                      the new image equal the replicas, and
                                                                      still do after the monitor period

The image is pinned by digest because the daemon does not resolve a tag for
API >= 1.30, and an unchanged image string rolls nothing out: a tag that moved
would never reach the nodes.  ``rollback_completed`` ends as
:class:`~cdtools.errors.RolledBack` (exit 6) once the previous spec runs
again; ``paused`` and ``rollback_paused`` as :class:`~cdtools.errors.DeployError`
(exit 7), the service left as the swarm holds it.  Both name the failed tasks
with their errors, and print the first one's last log lines.

The health gate of a service is the swarm's own: the image's (or spec's)
HEALTHCHECK decides when a task counts as running, the monitor period how long
it must stay so, ``--failure-action`` what a failure does.

On the first deploy the service is created from the same spec as a container
(``--spec`` and the docker run flags), translated to a service spec; what a
service can't express (``Privileged``, a host IP in a port binding …) is
refused, naming the field.  ``--publish-mode host`` publishes ports on each
node's own address instead of through the ingress routing mesh.  A created
service that does not converge is removed again (there was nothing before it).
On an update the spec, when one is given, replaces the container part of the
service's spec (its ContainerSpec, ports, networks, restart policy, resources,
log driver); with ``--image`` alone only the image changes.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import time
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from . import lock, pinning, reference, spec as spec_mod
from .console import Console
from .engine import Engine
from .errors import APIError, CdtoolsError, DeployError, NotFound, RolledBack, UsageError
from .settings import Settings

Json = Dict[str, Any]

NS = 1_000_000_000
#: swarmkit's default monitor period, which the docker CLI also waits when the spec sets none
DEFAULT_MONITOR = 5.0
#: seconds between looks at the service while following it (the docker CLI's 200 ms, a little kinder)
POLL = 0.3
#: "update out of sequence": someone else updated the service between our GET and POST
SEQUENCE_RETRIES = 5
ORDERS = ("start-first", "stop-first")
#: "continue" exists too, but it would let a failed update look like a deploy that worked
FAILURE_ACTIONS = ("rollback", "pause")
PUBLISH_MODES = ("ingress", "host")
_IMAGE_ID_RE = re.compile(r"(sha256:)?[0-9a-f]{12,64}")
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")

#: task states in their order (the docker CLI's numbering); later than running is over
TASK_STATES = {name: number for number, name in enumerate(
    "new allocated pending assigned accepted preparing ready starting running complete shutdown failed rejected"
    .split(), 1)}
RUNNING = TASK_STATES["running"]


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateSettings:
    """The rolling-update settings asked for; None keeps what the service has."""

    parallelism: Optional[int] = None
    delay: Optional[float] = None
    order: Optional[str] = None
    failure_action: Optional[str] = None
    monitor: Optional[float] = None

    def check(self) -> None:
        if self.parallelism is not None and self.parallelism < 0:
            raise UsageError("--parallelism must be 0 (all at once) or more")
        for value, flag in ((self.delay, "--update-delay"), (self.monitor, "--monitor")):
            if value is not None and value < 0:
                raise UsageError(f"{flag} must be 0 or more seconds")
        if self.order is not None and self.order not in ORDERS:
            raise UsageError(f"--update-order {self.order!r}: expected start-first or stop-first")
        if self.failure_action is not None and self.failure_action not in FAILURE_ACTIONS:
            raise UsageError(f"--failure-action {self.failure_action!r}: expected rollback or pause")

    def apply(self, config: Optional[Mapping[str, Any]], *, rollback: bool = False) -> Json:
        """``config`` (an UpdateConfig or RollbackConfig) with these settings laid over it."""
        out: Json = dict(config or {})
        if self.parallelism is not None:
            out["Parallelism"] = self.parallelism
        if self.delay is not None:
            out["Delay"] = int(self.delay * NS)
        if self.order is not None:
            out["Order"] = self.order
        if self.failure_action is not None and not rollback:
            out["FailureAction"] = self.failure_action
        if self.monitor is not None:
            out["Monitor"] = int(self.monitor * NS)
        return out


#: a service cdtools creates gets settings that never lose it and undo a failed update
CREATE_DEFAULTS = UpdateSettings(parallelism=1, delay=0.0, order="start-first", failure_action="rollback",
                                 monitor=DEFAULT_MONITOR)


@dataclass
class ServiceOptions:
    name: str
    image: str
    #: the container flags (spec.add_arguments): the spec of a created service, or of an update
    spec_args: argparse.Namespace
    update: UpdateSettings = field(default_factory=UpdateSettings)
    replicas: Optional[int] = None
    publish_mode: str = "ingress"
    stop_timeout: Optional[int] = None
    force: bool = False
    #: seconds to wait for the service to converge
    timeout: float = 300.0
    lock_wait: float = 0.0
    break_lock: bool = False
    log_lines: int = 20

    def check(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise UsageError(f"service name {self.name!r}: letters, digits, '_', '.', '-'")
        if self.name.endswith(lock.SUFFIX):
            raise UsageError(f"service name {self.name!r}: names ending in {lock.SUFFIX} are cdtools' own")
        self.update.check()
        if self.replicas is not None and self.replicas < 0:
            raise UsageError("--replicas must be 0 or more")
        if self.publish_mode not in PUBLISH_MODES:
            raise UsageError(f"--publish-mode {self.publish_mode!r}: expected ingress or host")
        if self.timeout <= 0:
            raise UsageError("--converge-timeout must be positive")
        if getattr(self.spec_args, "inherit", False):
            raise UsageError("--inherit is for containers: a service keeps its own spec when only --image is given")


@dataclass
class ServiceResult:
    name: str
    #: created, updated, unchanged, planned
    action: str
    service_id: str = ""
    image: str = ""
    previous_image: str = ""

    @property
    def container(self) -> str:
        """What the release report calls the deployed thing."""
        return self.name


def parse_target(text: str) -> Optional[str]:
    """``--target``: None for ``container``, the service name for ``service:NAME``."""
    if text == "container":
        return None
    kind, sep, name = text.partition(":")
    if kind == "service" and sep and name:
        return name
    raise UsageError(f"--target {text!r}: expected container or service:NAME")


# -- the service spec from a container spec ---------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {} or value is False or value == 0


#: container-create fields with a place in a service's ContainerSpec
_CONTAINER_FIELDS = {"Hostname": "Hostname", "User": "User", "Env": "Env", "Cmd": "Args", "Entrypoint": "Command",
                     "Healthcheck": "Healthcheck", "WorkingDir": "Dir", "Labels": "Labels",
                     "StopSignal": "StopSignal", "Tty": "TTY", "OpenStdin": "OpenStdin"}
#: fields that mean nothing to a service task (documentation, or the build's)
_IGNORED_FIELDS = {"ExposedPorts", "ArgsEscaped", "Shell", "Image", "AttachStdin", "AttachStdout", "AttachStderr",
                   "StdinOnce"}
#: HostConfig fields the daemon fills in by itself, with their default values
_HOST_DEFAULTS: Dict[str, Callable[[Any], bool]] = {
    "NetworkMode": lambda v: v in ("default", "bridge", ""),
    "RestartPolicy": lambda v: isinstance(v, dict) and v.get("Name") in ("", None),
    "LogConfig": lambda v: isinstance(v, dict) and not v.get("Type"),
    "IpcMode": lambda v: v in ("", "private", "shareable"),
    "CgroupnsMode": lambda v: v in ("", "host", "private"),
    "Runtime": lambda v: v in ("", "runc"),
    "ConsoleSize": lambda v: True,
    "ContainerIDFile": lambda v: v == "",
}


def _refuse(field_name: str, why: str) -> UsageError:
    return UsageError(f"{field_name} can't be expressed in a swarm service spec: {why}")


def _ports(bindings: Mapping[str, Any], mode: str) -> List[Json]:
    ports: List[Json] = []
    for key, items in bindings.items():
        number, _, proto = key.partition("/")
        for item in items or [{}]:
            if (item or {}).get("HostIp"):
                raise _refuse(f"HostConfig.PortBindings {key} HostIp {item['HostIp']}",
                              "a service publishes on every address of a node")
            port: Json = {"Protocol": proto or "tcp", "TargetPort": int(number), "PublishMode": mode}
            if (item or {}).get("HostPort"):
                host_port = str(item["HostPort"])
                if "-" in host_port:
                    raise _refuse(f"HostConfig.PortBindings {key} HostPort {host_port}", "a range")
                port["PublishedPort"] = int(host_port)
            ports.append(port)
    return ports


def _bind_mount(bind: str) -> Json:
    parts = bind.split(":")
    if len(parts) < 2:
        raise _refuse(f"HostConfig.Binds {bind!r}", "expected SOURCE:TARGET[:OPTIONS]")
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) > 2 else []
    mount: Json = {"Type": "bind" if source.startswith("/") else "volume", "Source": source, "Target": target}
    if "ro" in options:
        mount["ReadOnly"] = True
    return mount


def service_spec(spec: spec_mod.Spec, name: str, image: str, *, replicas: Optional[int], publish_mode: str,
                 update: UpdateSettings, labels: Mapping[str, str]) -> Json:
    """The ServiceSpec that runs ``spec`` (a container-create body) as service ``name``."""
    body = spec.body
    container: Json = {"Image": image}
    task: Json = {"ContainerSpec": container}
    out: Json = {"Name": name, "Labels": dict(labels), "TaskTemplate": task,
                 "Mode": {"Replicated": {"Replicas": 1 if replicas is None else replicas}}}
    for key, value in body.items():
        if key == "HostConfig" or _empty(value):
            continue
        if key in _CONTAINER_FIELDS:
            container[_CONTAINER_FIELDS[key]] = copy.deepcopy(value)
        elif key in _IGNORED_FIELDS:
            continue
        elif key == "StopTimeout":
            container["StopGracePeriod"] = int(value) * NS
        elif key == "Volumes":
            mounts = container.setdefault("Mounts", [])
            mounts.extend({"Type": "volume", "Target": target} for target in value)
        elif key == "NetworkingConfig":
            continue  # with NetworkMode below
        else:
            raise _refuse(key, "no service field holds it")

    host: Mapping[str, Any] = body.get("HostConfig") or {}
    resources: Json = {}
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    for key, value in host.items():
        if _empty(value) or (key in _HOST_DEFAULTS and _HOST_DEFAULTS[key](value)):
            continue
        where = f"HostConfig.{key}"
        if key == "PortBindings":
            out["EndpointSpec"] = {"Ports": _ports(value, publish_mode)}
        elif key == "Binds":
            container.setdefault("Mounts", []).extend(_bind_mount(b) for b in value)
        elif key == "Mounts":
            container.setdefault("Mounts", []).extend(copy.deepcopy(value))
        elif key == "Tmpfs":
            container.setdefault("Mounts", []).extend({"Type": "tmpfs", "Target": t} for t in value)
        elif key == "RestartPolicy":
            policy = value.get("Name")
            condition = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}.get(policy)
            if condition is None:
                raise _refuse(f"{where} {policy!r}", "expected no, always, unless-stopped or on-failure")
            restart: Json = {"Condition": condition}
            if value.get("MaximumRetryCount"):
                restart["MaxAttempts"] = int(value["MaximumRetryCount"])
            task["RestartPolicy"] = restart
        elif key == "NetworkMode":
            if value in ("host", "none") or str(value).startswith("container:"):
                raise _refuse(f"{where} {value!r}", "tasks join networks by name")
            target: Json = {"Target": value}
            aliases = (endpoints.get(value) or {}).get("Aliases")
            if aliases:
                target["Aliases"] = list(aliases)
            task["Networks"] = [target]
        elif key == "Init":
            container["Init"] = bool(value)
        elif key == "ExtraHosts":
            # docker run's HOST:IP is a hosts-file line, IP HOST, in a service
            container["Hosts"] = [" ".join(reversed(h.split(":", 1))) for h in value]
        elif key in ("Dns", "DnsSearch", "DnsOptions"):
            dns = container.setdefault("DNSConfig", {})
            dns[{"Dns": "Nameservers", "DnsSearch": "Search", "DnsOptions": "Options"}[key]] = list(value)
        elif key in ("CapAdd", "CapDrop"):
            container["CapabilityAdd" if key == "CapAdd" else "CapabilityDrop"] = list(value)
        elif key in ("Sysctls", "Ulimits"):
            container[key] = copy.deepcopy(value)
        elif key == "ReadonlyRootfs":
            container["ReadOnly"] = True
        elif key == "Memory":
            resources.setdefault("Limits", {})["MemoryBytes"] = int(value)
        elif key == "NanoCpus":
            resources.setdefault("Limits", {})["NanoCPUs"] = int(value)
        elif key == "MemoryReservation":
            resources.setdefault("Reservations", {})["MemoryBytes"] = int(value)
        elif key == "LogConfig":
            task["LogDriver"] = {"Name": value.get("Type"), "Options": dict(value.get("Config") or {})}
        else:
            raise _refuse(where, "no service field holds it")
    if resources:
        task["Resources"] = resources
    out["UpdateConfig"] = update.apply(None)
    out["RollbackConfig"] = update.apply(None, rollback=True)
    return out


#: the parts of a service spec that a given container spec replaces on an update
_TASK_PARTS = ("ContainerSpec", "RestartPolicy", "Networks", "Resources", "LogDriver")


def updated_spec(current: Mapping[str, Any], image: str, opts: ServiceOptions, fresh: Optional[Json],
                 labels: Mapping[str, str]) -> Json:
    """The complete spec to send: ``current`` with the new image, settings and (if given) container spec."""
    spec: Json = copy.deepcopy(dict(current))
    task = spec.setdefault("TaskTemplate", {})
    if fresh is not None:
        for part in _TASK_PARTS:
            if part in fresh["TaskTemplate"]:
                task[part] = fresh["TaskTemplate"][part]
            else:
                task.pop(part, None)
        ports = (fresh.get("EndpointSpec") or {}).get("Ports")
        endpoint = spec.setdefault("EndpointSpec", {})
        if ports:
            endpoint["Ports"] = ports
        else:
            endpoint.pop("Ports", None)
    task.setdefault("ContainerSpec", {})["Image"] = image
    for key, rollback in (("UpdateConfig", False), ("RollbackConfig", True)):
        merged = opts.update.apply(spec.get(key), rollback=rollback)
        if merged or key in spec:
            spec[key] = merged
    if opts.replicas is not None:
        mode = spec.get("Mode") or {}
        if "Replicated" not in mode:
            raise UsageError(f"--replicas: service {opts.name} is not replicated ({', '.join(mode) or 'no mode'})")
        mode["Replicated"]["Replicas"] = opts.replicas
    spec["Labels"] = {**(spec.get("Labels") or {}), **labels}
    if opts.force:
        # what `docker service update --force` does: a changed counter restarts every task
        task["ForceUpdate"] = int(task.get("ForceUpdate") or 0) + 1
    return spec


#: values the manager writes into a spec by itself (or the docker CLI sends), which mean "not set"
_SPEC_DEFAULTS = {("Isolation", "default"), ("Runtime", "container"), ("Mode", "vip")}


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items() if not (isinstance(v, str) and (k, v) in _SPEC_DEFAULTS)}
        return {k: v for k, v in out.items() if not _empty(v)}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _comparable(spec: Mapping[str, Any]) -> Any:
    """A spec with cdtools' own labels and unset-meaning values left out: equal means nothing to roll out."""
    out: Json = json.loads(json.dumps(spec))
    out["Labels"] = {k: v for k, v in (out.get("Labels") or {}).items() if not k.startswith(spec_mod.LABEL_PREFIX)}
    return _pruned(out)


def _labels(name: str, image: str, settings: Settings) -> Dict[str, str]:
    labels = {spec_mod.LABEL_NAME: name, spec_mod.LABEL_IMAGE: image, spec_mod.LABEL_DEPLOYED_AT: lock.utc_now()}
    for key, value in ((spec_mod.LABEL_BUILD_URL, settings.build_url), (spec_mod.LABEL_JOB, settings.job_name),
                       (spec_mod.LABEL_BUILD_NUMBER, settings.build_number),
                       (spec_mod.OCI_REVISION, settings.git_commit), (spec_mod.OCI_SOURCE, settings.git_url)):
        if value:
            labels[key] = value
    return labels


def _host_mode_ports(spec: Mapping[str, Any]) -> bool:
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    return any(p.get("PublishMode") == "host" and p.get("PublishedPort") for p in ports)


def describe_update(spec: Mapping[str, Any]) -> str:
    """"parallelism 1, delay 0 s, start-first, on failure rollback, monitor 5 s" of a spec."""
    cfg = spec.get("UpdateConfig") or {}
    return (f"parallelism {cfg.get('Parallelism', 1)}, delay {int(cfg.get('Delay') or 0) / NS:g} s, "
            f"{cfg.get('Order') or 'stop-first'}, on failure {cfg.get('FailureAction') or 'pause'}, "
            f"monitor {int(cfg.get('Monitor') or DEFAULT_MONITOR * NS) / NS:g} s")


def redacted(spec: Mapping[str, Any], secret: spec_mod.Spec) -> Json:
    """A service spec fit to print: secret Env values hidden."""
    out: Json = json.loads(json.dumps(spec))
    container = (out.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    if container.get("Env"):
        container["Env"] = [item if not secret.is_secret(item.partition("=")[0])
                            else f"{item.partition('=')[0]}={spec_mod.REDACTED}" for item in container["Env"]]
    return out


# -- the image, the manager, the lock ---------------------------------------------------------


def require_manager(engine: Engine) -> None:
    """The daemon is a swarm manager that speaks the API service deploys need."""
    swarm = engine.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        state = swarm.get("LocalNodeState") or "inactive"
        role = "a worker" if state == "active" else f"not in a swarm ({state})"
        raise UsageError(f"{engine.endpoint} is {role}: --target service needs a swarm manager "
                         f"(-H/--deploy-host a manager, or `docker swarm init` there)")
    if not engine.api_version_at_least("1.30"):
        raise UsageError(f"{engine.endpoint} speaks API {engine.api_version}: pinning a service's image by "
                         f"digest needs 1.30 or newer")


def check_image(image: str) -> reference.Reference:
    """A service's image must be a reference that every node can pull."""
    if _IMAGE_ID_RE.fullmatch(image):
        raise UsageError(f"--image {image}: a service's tasks pull their image on whichever node runs them; "
                         f"give a pushed reference (REPO@sha256:… or REPO:TAG), not an image id")
    return reference.parse(image)


def pin(engine: Engine, image: str, auth_header: str, console: Console) -> str:
    """``image`` pinned by digest: as given when it has one, else the registry's digest for its tag."""
    ref = check_image(image)
    if ref.digest:
        return str(ref)
    digest = pinning.registry_digest(engine, ref, auth_header, unchanged="nothing was changed")
    pinned = str(reference.Reference(ref.domain, ref.path, tag=ref.tag, digest=digest))
    console.line(f"{image} is {digest} in {ref.registry}")
    return pinned


def find_service(engine: Engine, name: str) -> Optional[Json]:
    try:
        doc = engine.inspect_service(name)
    except NotFound:
        return None
    # the manager also matches id prefixes; only the exact name or id counts
    if (doc.get("Spec") or {}).get("Name") != name and doc.get("ID") != name:
        return None
    return doc


class ServiceLock(lock.NamedLock):
    """``with ServiceLock(...):`` holds the swarm config NAME-cdtools-lock for the block.

    A swarm config name is given to exactly one create request (every other
    one is answered 409), as a container name is on one daemon; a config needs
    no image on the manager and is seen by every manager of the swarm.
    """

    def __init__(self, engine: Engine, name: str, labels: Mapping[str, str], **kw: Any) -> None:
        super().__init__(engine, name, labels, **kw)
        self.what = f"service {name}"
        self.remove_hint = f"remove it with docker config rm {self.lock_name}"

    @property
    def config(self) -> str:
        return self.lock_name

    def _create(self) -> str:
        return self.engine.create_config(self.lock_name, b"cdtools deploy lock\n", self.labels)

    def _held(self) -> Optional[Json]:
        try:
            return self.engine.inspect_config(self.lock_name)
        except NotFound:
            return None

    def _remove(self, lock_id: str) -> None:
        self.engine.remove_config(lock_id)

    def describe(self, held: Mapping[str, Any]) -> str:
        return lock.describe({"Config": {"Labels": (held.get("Spec") or {}).get("Labels") or {}},
                              "Created": held.get("CreatedAt", "")})


# -- following the swarm ----------------------------------------------------------------------


def _state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "")


def _task_image(task: Mapping[str, Any]) -> str:
    return str(((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Image") or "")


def latest_tasks(tasks: List[Json], active_nodes: Set[str], *, by_node: bool = False) -> Dict[Any, Json]:
    """One task per slot (per node for a global service), as the docker CLI picks it.

    Of several tasks in a slot the one with the lowest desired state wins, and the
    observed state breaks a tie (start-first runs two in a slot for a while);
    tasks on nodes that are down don't count.
    """
    out: Dict[Any, Json] = {}
    for task in tasks:
        desired, observed = TASK_STATES.get(str(task.get("DesiredState"))), TASK_STATES.get(_state(task))
        if not desired or not observed:
            continue
        key = task.get("NodeID") if by_node else task.get("Slot")
        held = out.get(key)
        if held is not None:
            held_desired, held_observed = TASK_STATES[str(held["DesiredState"])], TASK_STATES[_state(held)]
            if held_desired < desired or (held_desired == desired and held_observed <= observed):
                continue
        if task.get("NodeID") and task["NodeID"] not in active_nodes:
            continue
        out[key] = task
    return out


def count_running(spec: Mapping[str, Any], tasks: List[Json], active_nodes: Set[str],
                  image: Optional[str]) -> Tuple[int, int]:
    """(running tasks at ``image`` (any when None), tasks wanted) of the service's up-to-date tasks."""
    mode = spec.get("Mode") or {}
    is_global = "Global" in mode
    latest = latest_tasks(tasks, active_nodes, by_node=is_global)
    running = sum(1 for t in latest.values()
                  if TASK_STATES[str(t["DesiredState"])] <= RUNNING and _state(t) == "running"
                  and (image is None or _task_image(t) == image))
    wanted = len(latest) if is_global else int((mode.get("Replicated") or {}).get("Replicas") or 0)
    return running, wanted


@dataclass
class Convergence:
    """How following a service ended."""

    #: converged, rolled_back, paused, rollback_paused, failed (a created service's task failed), timeout
    state: str
    message: str = ""
    running: int = 0
    wanted: int = 0
    seconds: float = 0.0


def follow(engine: Engine, service_id: str, name: str, image: str, *, timeout: float, console: Console,
           stale_status: Optional[str] = None, created: bool = False,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Convergence:
    """Watch ``service_id`` until it converges on ``image`` (and stays so for the monitor period) or fails.

    ``stale_status`` is the UpdateStatus.StartedAt seen before our update: a status
    left from an earlier update is not this one's.  ``created``: a task of the new
    service that fails is a failure at once (there is no previous spec to go back to).
    """
    start = clock()
    deadline = start + timeout
    converged_at: Optional[float] = None
    rolling_back = False
    #: why the swarm rolls back ("update rolled back due to failure … of task ID"); later messages say less
    why = ""
    shown: Optional[Tuple[int, int, bool]] = None
    while True:
        svc = engine.inspect_service(service_id)
        spec = svc.get("Spec") or {}
        monitor = int((spec.get("UpdateConfig") or {}).get("Monitor") or DEFAULT_MONITOR * NS) / NS
        status = svc.get("UpdateStatus") or {}
        if stale_status is not None and status.get("StartedAt") == stale_status:
            status = {}
        state, message = str(status.get("State") or ""), str(status.get("Message") or "")
        elapsed = clock() - start
        if state in ("paused", "rollback_paused"):
            return Convergence(state, message, seconds=elapsed)
        if state in ("rollback_started", "rollback_completed"):
            if not rolling_back:
                why = message
                console.line(f"{name}: the swarm rolls back: {message or state}")
            rolling_back = True
            converged_at = None
        elif state == "updating":
            rolling_back = False

        tasks = engine.tasks(filters={"service": [service_id], "_up-to-date": ["true"]})
        active = {str(n.get("ID")) for n in engine.nodes() if (n.get("Status") or {}).get("State") != "down"}
        running, wanted = count_running(spec, tasks, active, None if rolling_back else image)
        if shown != (running, wanted, rolling_back):
            what = "the previous spec" if rolling_back else "the new image"
            console.line(f"{name}: {running} of {wanted} task(s) running {what}")
            shown = (running, wanted, rolling_back)
        if created and any(_state(t) in ("failed", "rejected") for t in tasks):
            return Convergence("failed", "a task of the new service failed", running, wanted, elapsed)
        converged = running == wanted and (wanted > 0 or "Global" not in (spec.get("Mode") or {}))
        if converged and rolling_back and state == "rollback_completed":
            return Convergence("rolled_back", why or message, running, wanted, elapsed)
        if converged and not rolling_back and state != "updating":
            if converged_at is None:
                converged_at = clock()
                console.line(f"{name}: converged; checking that the tasks stay up for the monitor period "
                             f"({monitor:g} s)")
            elif clock() - converged_at >= monitor:
                return Convergence("converged", message, running, wanted, clock() - start)
        elif converged_at is not None and not converged:
            console.line(f"{name}: a task went down during the monitor period")
            converged_at = None
        if clock() >= deadline:
            return Convergence("timeout", message or state, running, wanted, elapsed)
        sleep(POLL)


def failed_tasks(engine: Engine, service_id: str, image: str, before: AbstractSet[str] = frozenset()) -> List[Json]:
    """The service's tasks at ``image`` that failed or were rejected, oldest first; ``before``: ids to leave out
    (tasks of an earlier deploy of the same image)."""
    tasks = engine.tasks(filters={"service": [service_id]})
    bad = [t for t in tasks if _task_image(t) == image and str(t.get("ID")) not in before
           and (_state(t) in ("failed", "rejected") or (t.get("Status") or {}).get("Err"))]
    return sorted(bad, key=lambda t: str((t.get("Status") or {}).get("Timestamp") or ""))


def describe_task(task: Mapping[str, Any], name: str) -> str:
    """"web.2 (k3j2…) failed: task: non-zero exit (3)"."""
    status = task.get("Status") or {}
    text = f"{name}.{task.get('Slot') or str(task.get('NodeID', ''))[:12]} ({str(task.get('ID', ''))[:12]}) {_state(task)}"
    err = str(status.get("Err") or status.get("Message") or "")
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if err:
        text += f": {err}"
    if code and f"({code})" not in err:
        text += f" (exit code {code})"
    return text


def _task_summary(tasks: List[Json], name: str, limit: int = 5) -> str:
    if not tasks:
        return "no task of the new image failed (the swarm gave no task error)"
    shown = [describe_task(t, name) for t in tasks[-limit:]]
    more = f" and {len(tasks) - limit} more" if len(tasks) > limit else ""
    return "failed tasks: " + "; ".join(shown) + more


def _show_logs(engine: Engine, tasks: List[Json], name: str, lines: int, console: Console,
               secrets: List[str]) -> None:
    if not tasks or lines <= 0:
        return
    task = tasks[-1]
    try:
        logs = engine.task_logs(str(task["ID"]), tail=lines)
    except CdtoolsError as err:
        console.line(f"warning: could not read the logs of task {str(task['ID'])[:12]}: {err}")
        return
    text = logs.splitlines()
    label = f"{name}.{task.get('Slot', '')} ({str(task['ID'])[:12]})"
    console.line(f"last {len(text)} log line(s) of {label}:" if text else f"{label} wrote no log lines")
    for line in text:
        console.line("  | " + spec_mod.scrub(line, secrets))


# -- run ----------------------------------------------------------------------------------------


def _fresh_spec(opts: ServiceOptions, settings: Settings) -> spec_mod.Spec:
    spec = spec_mod.from_args(opts.spec_args, settings.lookup)
    if opts.stop_timeout is not None:
        spec.body["StopTimeout"] = opts.stop_timeout
    return spec


def _header(credentials: Any) -> str:
    return str(credentials.header()) if credentials is not None else "e30="  # e30= is {}: anonymous


def run(engine: Engine, opts: ServiceOptions, settings: Settings, *, console: Console, credentials: Any = None,
        dry_run: bool = False) -> ServiceResult:
    """Deploy ``opts.image`` as swarm service ``opts.name``; see the module docstring for the order."""
    opts.check()
    check_image(opts.image)
    require_manager(engine)
    spec = _fresh_spec(opts, settings)
    if dry_run:
        return _plan(engine, opts, settings, spec, console)
    header = _header(credentials)
    if credentials is not None:
        console.line(f"credentials for {reference.parse(opts.image).registry}: "
                     f"{getattr(credentials, 'source', 'none (anonymous)')}")
    console.step(f"pin {opts.image} by its digest")
    image = pin(engine, opts.image, header, console)
    holder = lock.holder_labels(opts.name, settings.build_url, settings.job_name)
    console.step(f"lock {lock.lock_name(opts.name)} (a swarm config)")
    with ServiceLock(engine, opts.name, holder, wait=opts.lock_wait, break_lock=opts.break_lock, console=console):
        current = find_service(engine, opts.name)
        labels = _labels(opts.name, image, settings)
        if current is None:
            return _create(engine, opts, spec, image, labels, header, console)
        return _update(engine, opts, spec, current, image, labels, header, console)


def _plan(engine: Engine, opts: ServiceOptions, settings: Settings, spec: spec_mod.Spec,
          console: Console) -> ServiceResult:
    current = find_service(engine, opts.name)
    image = opts.image if reference.parse(opts.image).digest else f"{opts.image} (pinned by its digest at deploy)"
    labels = _labels(opts.name, opts.image, settings)
    console.line(f"plan on {engine.endpoint}: " + (f"create service {opts.name}" if current is None
                                                    else f"update service {opts.name}"))
    if current is None:
        body = service_spec(spec, opts.name, opts.image, replicas=opts.replicas, publish_mode=opts.publish_mode,
                            update=_create_settings(opts, spec), labels=labels)
    else:
        old = ((current.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec", {}).get("Image", "")
        console.line(f"  image: {old} -> {image}")
        fresh = None if not spec.body else service_spec(
            spec, opts.name, opts.image, replicas=None, publish_mode=opts.publish_mode, update=opts.update,
            labels=labels)
        body = updated_spec(current.get("Spec") or {}, opts.image, opts, fresh, labels)
        console.line(f"  POST /services/{current.get('ID')}/update?version={(current.get('Version') or {}).get('Index')}")
    console.line(f"  update settings: {describe_update(body)}")
    console.line("service spec (secrets redacted):")
    for line in json.dumps(redacted(body, spec), indent=2, sort_keys=True).splitlines():
        console.line("  " + line)
    return ServiceResult(name=opts.name, action="planned", image=opts.image,
                         service_id=str((current or {}).get("ID", "")))


def _create_settings(opts: ServiceOptions, spec: spec_mod.Spec) -> UpdateSettings:
    """The settings of a new service: cdtools' defaults under the flags given."""
    base = CREATE_DEFAULTS
    given = opts.update
    order = given.order or base.order
    bindings = (spec.body.get("HostConfig") or {}).get("PortBindings") or {}
    if given.order is None and opts.publish_mode == "host" and any(
            (b or {}).get("HostPort") for items in bindings.values() for b in items or []):
        # two tasks can't hold one host port on a node: the new one could never start first
        order = "stop-first"
    return UpdateSettings(
        parallelism=base.parallelism if given.parallelism is None else given.parallelism,
        delay=base.delay if given.delay is None else given.delay, order=order,
        failure_action=given.failure_action or base.failure_action,
        monitor=base.monitor if given.monitor is None else given.monitor)


def _warn_host_ports(spec: Mapping[str, Any], console: Console) -> None:
    cfg = spec.get("UpdateConfig") or {}
    if cfg.get("Order") == "start-first" and _host_mode_ports(spec):
        console.line("warning: start-first with host-mode published ports: a node can start the new task only "
                     "once the old one has freed the port, so each node needs a spare node to move to")


def _create(engine: Engine, opts: ServiceOptions, spec: spec_mod.Spec, image: str, labels: Mapping[str, str],
            header: str, console: Console) -> ServiceResult:
    body = service_spec(spec, opts.name, image, replicas=opts.replicas, publish_mode=opts.publish_mode,
                        update=_create_settings(opts, spec), labels=labels)
    console.step(f"create service {opts.name} from {image} ({describe_update(body)})")
    _warn_host_ports(body, console)
    try:
        created = engine.create_service(body, header)
    except APIError as exc:
        raise DeployError(f"the manager refused to create service {opts.name}: {exc.message}") from None
    service_id = str(created.get("ID", ""))
    for warning in created.get("Warnings") or []:
        console.line(f"warning: daemon: {warning}")
    result = ServiceResult(name=opts.name, action="created", service_id=service_id, image=image)
    console.step(f"follow {opts.name} until its tasks run (up to {opts.timeout:g} s)")
    try:
        outcome = follow(engine, service_id, opts.name, image, timeout=opts.timeout, console=console, created=True)
    except BaseException:
        # SIGTERM/Ctrl-C: a first deploy leaves nothing half-made behind, as a container deploy does
        with lock.deferred_sigterm():
            _remove_created(engine, service_id, opts.name, console)
        raise
    if outcome.state == "converged":
        console.line(f"deployed {image} as service {opts.name} ({outcome.running} task(s) running)")
        return result
    failed = failed_tasks(engine, service_id, image)
    _show_logs(engine, failed, opts.name, opts.log_lines, console, spec.secret_values())
    with lock.deferred_sigterm():
        _remove_created(engine, service_id, opts.name, console)
    why = (f"did not converge within {opts.timeout:g} s ({outcome.running} of {outcome.wanted} running)"
           if outcome.state == "timeout" else f"failed ({outcome.message or outcome.state})")
    raise DeployError(f"new service {opts.name} at {image} {why}: {_task_summary(failed, opts.name)}; "
                      f"it was removed again (there was no earlier service to go back to)")


def _remove_created(engine: Engine, service_id: str, name: str, console: Console) -> None:
    try:
        engine.remove_service(service_id)
        console.line(f"removed the new service {name}")
    except CdtoolsError as err:
        console.line(f"warning: could not remove the new service {name}: {err}; docker service rm {name}")


def _update(engine: Engine, opts: ServiceOptions, spec: spec_mod.Spec, current: Json, image: str,
            labels: Mapping[str, str], header: str, console: Console) -> ServiceResult:
    service_id = str(current.get("ID", ""))
    fresh = None
    if spec.body:
        fresh = service_spec(spec, opts.name, image, replicas=None, publish_mode=opts.publish_mode,
                             update=opts.update, labels=labels)
    old_image = str(((current.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec", {}).get("Image", ""))
    result = ServiceResult(name=opts.name, action="updated", service_id=service_id, image=image,
                           previous_image=old_image)
    answer: Json = {}
    stale: Optional[str] = None
    before = {str(t.get("ID")) for t in engine.tasks(filters={"service": [service_id]})}
    for attempt in range(1, SEQUENCE_RETRIES + 1):
        body = updated_spec(current.get("Spec") or {}, image, opts, fresh, labels)
        if attempt == 1:
            if _comparable(body) == _comparable(current.get("Spec") or {}):
                console.line(f"nothing to do: service {opts.name} already runs {image} with this spec "
                             f"(--force to restart its tasks)")
                result.action = "unchanged"
                return result
            console.step(f"update service {opts.name}: {old_image} -> {image} ({describe_update(body)})")
            _warn_host_ports(body, console)
        stale = (current.get("UpdateStatus") or {}).get("StartedAt")
        version = int((current.get("Version") or {}).get("Index") or 0)
        try:
            answer = engine.update_service(service_id, version, body, header)
            break
        except APIError as exc:
            if "update out of sequence" not in exc.message:
                raise CdtoolsError(f"the manager refused the update of service {opts.name}: {exc.message}; "
                                   f"nothing was changed") from None
            if attempt == SEQUENCE_RETRIES:
                raise CdtoolsError(f"service {opts.name} kept changing under the update ({SEQUENCE_RETRIES} times "
                                   f"\"update out of sequence\"); nothing was changed") from None
            console.line(f"service {opts.name} changed since it was read (update out of sequence): reading it again")
            current = engine.inspect_service(service_id)
    for warning in answer.get("Warnings") or []:
        console.line(f"warning: daemon: {warning}")
    console.step(f"follow {opts.name} until it converges (up to {opts.timeout:g} s)")
    try:
        outcome = follow(engine, service_id, opts.name, image, timeout=opts.timeout, console=console,
                         stale_status=stale)
    except BaseException:
        with lock.deferred_sigterm():
            _roll_back_interrupted(engine, service_id, opts.name, header, console)
        raise
    if outcome.state == "converged":
        console.line(f"deployed {image} as service {opts.name} ({outcome.running} task(s) running)")
        return result
    failed = failed_tasks(engine, service_id, image, before)
    _show_logs(engine, failed, opts.name, opts.log_lines, console, spec.secret_values())
    tasks = _task_summary(failed, opts.name)
    said = f" ({outcome.message})" if outcome.message else ""
    if outcome.state == "rolled_back":
        raise RolledBack(f"update of service {opts.name} to {image} failed and the swarm rolled it back{said}: "
                         f"{tasks}; {opts.name} runs {old_image} again")
    if outcome.state == "paused":
        raise DeployError(f"update of service {opts.name} to {image} was paused by the swarm{said}: {tasks}; "
                          f"the service is left as it stands, partly updated (--failure-action pause): deploy "
                          f"again, or docker service rollback {opts.name}")
    if outcome.state == "rollback_paused":
        raise DeployError(f"update of service {opts.name} to {image} failed, and its rollback was paused{said}: "
                          f"{tasks}")
    raise DeployError(f"service {opts.name} did not converge on {image} within {opts.timeout:g} s "
                      f"({outcome.running} of {outcome.wanted} running; update state {outcome.message or 'none'}); "
                      f"{tasks}; the swarm goes on with the update: docker service ps {opts.name}")


def _roll_back_interrupted(engine: Engine, service_id: str, name: str, header: str, console: Console) -> None:
    """SIGTERM/Ctrl-C while following an update: ask the manager for the previous spec, as deploy restores."""
    try:
        current = engine.inspect_service(service_id)
        engine.update_service(service_id, int((current.get("Version") or {}).get("Index") or 0),
                              current.get("Spec") or {}, header, rollback=True)
        console.line(f"interrupted: asked the swarm to roll service {name} back to its previous spec")
    except CdtoolsError as err:
        console.line(f"warning: interrupted, and could not ask the swarm to roll service {name} back: {err}")


# -- command line -------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("swarm service (--target service:NAME)")
    g.add_argument("--replicas", type=int, metavar="N", help="tasks to run (default: the service's own; 1 on create)")
    g.add_argument("--publish-mode", choices=PUBLISH_MODES, default="ingress",
                   help="publish -p ports through the routing mesh (ingress) or on each node (host)")
    g.add_argument("--parallelism", type=int, metavar="N", help="tasks updated at a time (0: all at once)")
    g.add_argument("--update-delay", type=float, metavar="S", help="seconds between batches of tasks")
    g.add_argument("--update-order", choices=ORDERS,
                   help="start the new task before stopping the old one, or the other way round")
    g.add_argument("--failure-action", choices=FAILURE_ACTIONS, help="what the swarm does when a task fails")
    g.add_argument("--monitor", type=float, metavar="S",
                   help="seconds a new task must keep running to count as updated (and cdtools waits)")
    g.add_argument("--converge-timeout", type=float, default=300.0, metavar="S",
                   help="how long cdtools follows the update before it gives up (default 300)")


def options_from_args(args: argparse.Namespace, name: str) -> ServiceOptions:
    opts = ServiceOptions(
        name=name, image=args.image, spec_args=args,
        update=UpdateSettings(parallelism=args.parallelism, delay=args.update_delay, order=args.update_order,
                              failure_action=args.failure_action, monitor=args.monitor),
        replicas=args.replicas, publish_mode=args.publish_mode, stop_timeout=args.stop_timeout, force=args.force,
        timeout=args.converge_timeout, lock_wait=args.lock_wait, break_lock=args.break_lock,
        log_lines=args.log_lines)
    opts.check()
    return opts
