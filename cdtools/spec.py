"""The container spec: one container-create body, from files, ``docker run``-like flags, or a running container.

Sources, laid over each other in this order:

1. ``--spec FILE``: the create JSON people already write for the Engine API.  A
   file may also hold both of the seed's bodies, ``{"create": {…}, "start": {…}}``.
2. ``--start-spec FILE``: the old start body (``PortBindings``, ``RestartPolicy``,
   ``Binds`` …).  A daemon refuses a start request with a body since API 1.24
   (recorded: 400 "starting container with non-empty request body was deprecated
   since API v1.22 and removed in v1.24"), so its fields move into the create
   request's ``HostConfig``, where they have lived since; start goes with no body.
3. ``--inherit``: instead of 1 and 2, the running container's own configuration
   (from inspect), less the old image's defaults so that the new image's apply.
4. Flags (``-p``, ``-e``, ``-v`` …), which override all of the above.

The result is a :class:`Spec`: the create body without ``Image``, plus the names
of ``Env`` variables whose values must never be printed.  :func:`effective_hash`
is what the deploy labels carry to skip an unchanged re-run.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from .config import read_json
from .errors import UsageError

Json = Dict[str, Any]

#: labels cdtools writes; never part of the effective spec, never inherited
LABEL_PREFIX = "cdtools."
LABEL_NAME = "cdtools.name"
LABEL_HASH = "cdtools.spec-hash"
LABEL_IMAGE = "cdtools.image"
LABEL_IMAGE_ID = "cdtools.image-id"
LABEL_DEPLOYED_AT = "cdtools.deployed-at"
LABEL_BUILD_URL = "cdtools.build-url"
LABEL_JOB = "cdtools.job"
LABEL_BUILD_NUMBER = "cdtools.build-number"
#: names (never values) of Env variables to keep out of output, comma-separated
LABEL_SECRET_ENV = "cdtools.secret-env"
#: this container's own RestartPolicy (JSON): it is set to "no" while it waits as NAME-previous
LABEL_RESTART = "cdtools.restart-policy"
#: the RestartPolicy the container it replaced had (JSON), for a rollback to give back
LABEL_PREVIOUS_RESTART = "cdtools.previous-restart-policy"
#: other label keys cdtools added (comma-separated), e.g. the OCI revision/source
LABEL_ADDED = "cdtools.added-labels"

OCI_REVISION = "org.opencontainers.image.revision"
OCI_SOURCE = "org.opencontainers.image.source"

#: Env names that look secret: their values are redacted everywhere cdtools prints
SECRET_NAME = re.compile(r"PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|PRIVATE|CERT|SALT|SIGNATURE", re.IGNORECASE)
REDACTED = "<redacted>"

#: top-level fields of a create body (API 1.41)
CONFIG_FIELDS = frozenset("""
Hostname Domainname User AttachStdin AttachStdout AttachStderr ExposedPorts Tty OpenStdin StdinOnce Env Cmd
Healthcheck ArgsEscaped Image Volumes WorkingDir Entrypoint NetworkDisabled MacAddress OnBuild Labels StopSignal
StopTimeout Shell HostConfig NetworkingConfig
""".split())

#: HostConfig fields (API 1.41); the old start body was a HostConfig
HOST_CONFIG_FIELDS = frozenset("""
Binds ContainerIDFile LogConfig NetworkMode PortBindings RestartPolicy AutoRemove VolumeDriver VolumesFrom Mounts
CapAdd CapDrop CgroupnsMode Dns DnsOptions DnsSearch ExtraHosts GroupAdd IpcMode Cgroup Links OomScoreAdj PidMode
Privileged PublishAllPorts ReadonlyRootfs SecurityOpt StorageOpt Tmpfs UTSMode UsernsMode ShmSize Sysctls Runtime
ConsoleSize Isolation CpuShares Memory NanoCpus CgroupParent BlkioWeight BlkioWeightDevice BlkioDeviceReadBps
BlkioDeviceWriteBps BlkioDeviceReadIOps BlkioDeviceWriteIOps CpuPeriod CpuQuota CpuRealtimePeriod CpuRealtimeRuntime
CpusetCpus CpusetMems Devices DeviceCgroupRules DeviceRequests KernelMemory KernelMemoryTCP MemoryReservation
MemorySwap MemorySwappiness OomKillDisable Init PidsLimit Ulimits CpuCount CpuPercent IOMaximumIOps
IOMaximumBandwidth MaskedPaths ReadonlyPaths
""".split())

#: fields of old API versions that no current daemon reproduces
REMOVED_FIELDS: Dict[str, str] = {
    "LxcConf": "the LXC driver was removed from Docker in 1.10",
    "PortSpecs": "removed in API 1.19; use ExposedPorts and HostConfig.PortBindings",
}

#: HostConfig values the daemon fills in by itself; dropped from an inherited spec and from diffs
_DAEMON_DEFAULTS: Dict[str, Callable[[Any], bool]] = {
    "ContainerIDFile": lambda v: True,
    "ConsoleSize": lambda v: True,
    "MaskedPaths": lambda v: True,
    "ReadonlyPaths": lambda v: True,
    "NetworkMode": lambda v: v in ("default", "bridge"),
    "LogConfig": lambda v: isinstance(v, dict) and v.get("Type") in ("", "json-file") and not v.get("Config"),
    "RestartPolicy": lambda v: isinstance(v, dict) and v.get("Name") in ("", "no", None),
    "IpcMode": lambda v: v in ("private", "shareable"),
    "CgroupnsMode": lambda v: v in ("host", "private"),
    "Runtime": lambda v: v == "runc",
    "ShmSize": lambda v: v == 64 * 1024 * 1024,
}


@dataclass
class Spec:
    """A create body (``Image`` is set by the caller) and what must not be printed."""

    body: Json = field(default_factory=dict)
    #: Env names whose values are secret: by name, from --env-file, --secret-env, or recorded in a label
    secret_env: Set[str] = field(default_factory=set)
    #: where it came from, for the plan: "file", "inherit", "flags"
    origin: str = "flags"

    def host_config(self) -> Json:
        host: Json = self.body.setdefault("HostConfig", {})
        return host

    def env(self) -> Dict[str, str]:
        return env_dict(self.body.get("Env"))

    def secret_values(self) -> List[str]:
        """The values to scrub from container logs cdtools prints."""
        env = self.env()
        return [v for k, v in env.items() if self.is_secret(k) and len(v) >= 4]

    def is_secret(self, name: str) -> bool:
        return name in self.secret_env or bool(SECRET_NAME.search(name))


# -- reading files ------------------------------------------------------------------------------


def load(spec_file: Optional[str], start_file: Optional[str]) -> Spec:
    """The create body from ``--spec`` and ``--start-spec`` files (either may be None)."""
    create: Json = {}
    start: Optional[Json] = None
    if spec_file:
        doc = read_json(spec_file, "--spec")
        if not isinstance(doc, dict):
            raise UsageError(f"--spec {spec_file}: expected a JSON object (a container-create body)")
        if "create" in doc and isinstance(doc.get("create"), dict):
            # the seed's two bodies in one document
            extra = sorted(set(doc) - {"create", "start"})
            if extra:
                raise UsageError(f"--spec {spec_file}: unknown key {extra[0]!r} next to \"create\" (expected "
                                 f"\"create\" and \"start\")")
            create = doc["create"]
            start = doc.get("start")
            if start is not None and not isinstance(start, dict):
                raise UsageError(f"--spec {spec_file}: \"start\" must be an object (the old start body)")
        else:
            create = doc
    create = normalise_create(create, f"--spec {spec_file}" if spec_file else "spec")
    if start_file:
        doc = read_json(start_file, "--start-spec")
        if not isinstance(doc, dict):
            raise UsageError(f"--start-spec {start_file}: expected a JSON object (the old start body)")
        start = doc if start is None else {**start, **doc}
    if start:
        merge_start(create, start, f"--start-spec {start_file}" if start_file else f"--spec {spec_file} \"start\"")
    return Spec(body=create, origin="file" if (spec_file or start_file) else "flags")


def normalise_create(body: Mapping[str, Any], where: str) -> Json:
    """A create body with HostConfig fields written at the top level moved into HostConfig.

    Old Engine API examples put ``Binds``, ``PortBindings`` and friends next to
    ``Image``; the daemon ignores them there today, silently.  Unknown fields are
    refused, naming them, for the same reason: a typo must not do nothing.
    """
    out: Json = {}
    host = dict(body.get("HostConfig") or {})
    for key, value in body.items():
        if key == "HostConfig":
            continue
        if key in REMOVED_FIELDS:
            raise UsageError(f"{where}: field {key!r} can't be reproduced: {REMOVED_FIELDS[key]}")
        if key in CONFIG_FIELDS:
            out[key] = copy.deepcopy(value)
        elif key in HOST_CONFIG_FIELDS:
            host.setdefault(key, copy.deepcopy(value))
        else:
            raise UsageError(f"{where}: unknown field {key!r} in a container-create body")
    _check_host_config(host, where)
    if host:
        out["HostConfig"] = _normalise_host_config(host)
    if "Env" in out:
        out["Env"] = env_list(_env_value(out["Env"], where))
    if "ExposedPorts" in out and isinstance(out["ExposedPorts"], list):
        out["ExposedPorts"] = {_port_key(str(p)): {} for p in out["ExposedPorts"]}
    _expose_bound_ports(out)
    return out


def merge_start(create: Json, start: Mapping[str, Any], where: str) -> None:
    """Move the old start body's fields into the create body's HostConfig (start's win, as they did)."""
    if "HostConfig" in start and isinstance(start["HostConfig"], dict):
        start = {**start["HostConfig"], **{k: v for k, v in start.items() if k != "HostConfig"}}
    host = create.setdefault("HostConfig", {})
    for key, value in start.items():
        if key in REMOVED_FIELDS:
            raise UsageError(f"{where}: field {key!r} can't be reproduced: {REMOVED_FIELDS[key]}")
        if key not in HOST_CONFIG_FIELDS:
            raise UsageError(f"{where}: field {key!r} is not a start/HostConfig field")
        host[key] = copy.deepcopy(value)
    _check_host_config(host, where)
    create["HostConfig"] = _normalise_host_config(host)
    _expose_bound_ports(create)


def _check_host_config(host: Mapping[str, Any], where: str) -> None:
    for key in host:
        if key in REMOVED_FIELDS:
            raise UsageError(f"{where}: field HostConfig.{key} can't be reproduced: {REMOVED_FIELDS[key]}")
        if key not in HOST_CONFIG_FIELDS:
            raise UsageError(f"{where}: unknown field HostConfig.{key}")


def _normalise_host_config(host: Json) -> Json:
    """Shapes people write that the daemon refuses or misreads, made exact."""
    out = dict(host)
    if "RestartPolicy" in out and isinstance(out["RestartPolicy"], str):
        out["RestartPolicy"] = restart_policy(out["RestartPolicy"])
    if isinstance(out.get("PortBindings"), dict):
        fixed: Json = {}
        for port, bindings in out["PortBindings"].items():
            items = bindings if isinstance(bindings, list) else [bindings] if bindings else []
            fixed[_port_key(str(port))] = [
                {"HostIp": str((b or {}).get("HostIp") or ""), "HostPort": str((b or {}).get("HostPort") or "")}
                for b in items
            ] or [{"HostIp": "", "HostPort": ""}]
        out["PortBindings"] = fixed
    return out


def _expose_bound_ports(body: Json) -> None:
    # docker run exposes every published port; a binding for an unexposed port is easy to misread
    bindings = (body.get("HostConfig") or {}).get("PortBindings") or {}
    if bindings:
        exposed = body.setdefault("ExposedPorts", {}) or {}
        for port in bindings:
            exposed.setdefault(port, {})
        body["ExposedPorts"] = exposed


def _port_key(port: str) -> str:
    return port if "/" in port else port + "/tcp"


# -- small parsers, docker run's syntax ---------------------------------------------------------


def env_dict(env: Any) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item in env or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def env_list(env: Mapping[str, str]) -> List[str]:
    return [f"{k}={v}" for k, v in env.items()]


def _env_value(value: Any, where: str) -> Dict[str, str]:
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        return env_dict(value)
    raise UsageError(f"{where}: Env must be a list of \"K=V\" (or an object)")


def restart_policy(text: str) -> Json:
    """``no``, ``always``, ``unless-stopped``, ``on-failure[:N]`` -> RestartPolicy."""
    name, _, count = text.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure", ""):
        raise UsageError(f"--restart {text!r}: expected no, always, unless-stopped or on-failure[:N]")
    if count and name != "on-failure":
        raise UsageError(f"--restart {text!r}: only on-failure takes a retry count")
    try:
        retries = int(count) if count else 0
    except ValueError:
        raise UsageError(f"--restart {text!r}: the retry count must be a number") from None
    return {"Name": name or "no", "MaximumRetryCount": retries}


def parse_port(text: str) -> Tuple[str, Json]:
    """``[IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`` -> ("8080/tcp", {"HostIp", "HostPort"})."""
    rest, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise UsageError(f"-p {text!r}: protocol must be tcp, udp or sctp")
    ip = ""
    if rest.startswith("["):  # [::1]:8080:80
        close = rest.find("]")
        if close < 0:
            raise UsageError(f"-p {text!r}: unclosed [")
        ip, rest = rest[1:close], rest[close + 1:].lstrip(":")
        parts = rest.split(":")
        parts = [ip] + parts if len(parts) == 2 else parts
    else:
        parts = rest.split(":")
    if len(parts) == 1:
        host_ip, host_port, container = "", "", parts[0]
    elif len(parts) == 2:
        host_ip, (host_port, container) = "", parts
    elif len(parts) == 3:
        host_ip, host_port, container = parts
    else:
        raise UsageError(f"-p {text!r}: expected [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]")
    for value, what in ((container, "container port"), (host_port, "host port")):
        if value and not (value.isdigit() and 0 < int(value) < 65536):
            if "-" in value:
                raise UsageError(f"-p {text!r}: port ranges are not supported; give one -p per port")
            raise UsageError(f"-p {text!r}: {what} {value!r} is not a port number")
    if not container:
        raise UsageError(f"-p {text!r}: no container port")
    return f"{container}/{proto}", {"HostIp": host_ip, "HostPort": host_port}


def parse_volume(text: str) -> Tuple[Optional[str], str]:
    """``-v`` -> (bind string for HostConfig.Binds, destination); an anonymous volume gives (None, dest)."""
    parts = text.split(":")
    if len(parts) == 1:
        dest = parts[0]
        bind = None
    elif len(parts) in (2, 3):
        src, dest = parts[0], parts[1]
        if not src:
            raise UsageError(f"-v {text!r}: empty source")
        bind = text
    else:
        raise UsageError(f"-v {text!r}: expected [SOURCE:]DEST[:OPTIONS]")
    if not dest.startswith("/"):
        raise UsageError(f"-v {text!r}: the destination {dest!r} must be an absolute path")
    return bind, dest


def parse_mount(text: str) -> Json:
    """``--mount type=volume,source=data,target=/data[,readonly]`` -> a HostConfig.Mounts entry."""
    mount: Json = {"Type": "volume"}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if key in ("readonly", "ro"):
            mount["ReadOnly"] = not sep or value.lower() in ("1", "true")
        elif key == "type":
            if value not in ("volume", "bind", "tmpfs"):
                raise UsageError(f"--mount {text!r}: type must be volume, bind or tmpfs")
            mount["Type"] = value
        elif key in ("source", "src"):
            mount["Source"] = value
        elif key in ("target", "destination", "dst"):
            mount["Target"] = value
        elif key == "volume-nocopy":
            mount.setdefault("VolumeOptions", {})["NoCopy"] = not sep or value.lower() in ("1", "true")
        elif key == "bind-propagation":
            mount.setdefault("BindOptions", {})["Propagation"] = value
        elif key == "tmpfs-size":
            mount.setdefault("TmpfsOptions", {})["SizeBytes"] = _bytes(value, f"--mount {text!r}")
        else:
            raise UsageError(f"--mount {text!r}: unknown option {key!r}")
    if not str(mount.get("Target", "")).startswith("/"):
        raise UsageError(f"--mount {text!r}: target=/ABSOLUTE/PATH is required")
    if mount["Type"] == "bind" and not mount.get("Source"):
        raise UsageError(f"--mount {text!r}: a bind mount needs source=")
    return mount


def _bytes(text: str, where: str) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)b?", text.strip().lower())
    if not m:
        raise UsageError(f"{where}: {text!r} is not a size like 64m")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2)]


def duration_ns(text: str, what: str) -> int:
    """``30s``, ``500ms``, ``1m``, or plain seconds -> nanoseconds (Healthcheck fields)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise UsageError(f"{what} {text!r}: expected a duration like 5s, 500ms or 1m")
    scale = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return int(float(m.group(1)) * scale * 1e9)


def read_env_file(path: str, lookup: Callable[[str], Optional[str]]) -> Dict[str, str]:
    """``--env-file``: ``K=V`` lines, ``#`` comments, a bare ``K`` takes the variable from the environment."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --env-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--env-file {path} is not UTF-8 text") from None
    out: Dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = line.lstrip().partition("=")
        if not key or " " in key.strip():
            # never echo the line: it may hold a secret
            raise UsageError(f"--env-file {path}: line {number} is not KEY=VALUE")
        _set_env(out, key, sep, value, lookup)
    return out


def _set_env(env: Dict[str, str], key: str, sep: str, value: str, lookup: Callable[[str], Optional[str]]) -> None:
    """Docker's ``K=V`` or bare ``K``: a bare name takes the variable from the environment, if it is set."""
    if sep:
        env[key] = value
        return
    found = lookup(key)
    if found is not None:
        env[key] = found


# -- flags --------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The container flags, as ``docker run`` spells them."""
    g = p.add_argument_group("container (docker run's flags; they override --spec/--start-spec/--inherit)")
    g.add_argument("--spec", metavar="FILE", help="container-create JSON (or {\"create\":…, \"start\":…})")
    g.add_argument("--start-spec", metavar="FILE",
                   help="the old start body (PortBindings, RestartPolicy, …): moved into HostConfig")
    g.add_argument("--inherit", action="store_true",
                   help="take the running container's config and change only the image")
    g.add_argument("-p", "--publish", dest="ports", action="append", default=[], metavar="[IP:]HOST:CONTAINER",
                   help="publish a container port (repeatable)")
    g.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="set a variable; a bare K takes it from this environment (repeatable)")
    g.add_argument("--env-file", dest="env_files", action="append", default=[], metavar="FILE",
                   help="K=V lines; every value from it is treated as a secret in output")
    g.add_argument("--secret-env", action="append", default=[], metavar="K[=VAR]",
                   help="set K from environment variable VAR (default K), never printed")
    g.add_argument("-v", "--volume", dest="volumes", action="append", default=[], metavar="SRC:DEST[:OPTS]")
    g.add_argument("--mount", dest="mounts", action="append", default=[], metavar="type=…,source=…,target=…")
    g.add_argument("--network", metavar="NAME", help="network to join")
    g.add_argument("--network-alias", dest="network_aliases", action="append", default=[], metavar="ALIAS")
    g.add_argument("--restart", metavar="POLICY", help="no, always, unless-stopped, on-failure[:N]")
    g.add_argument("-l", "--label", dest="labels", action="append", default=[], metavar="K=V")
    g.add_argument("--health-cmd", metavar="CMD", help="HEALTHCHECK command (run by /bin/sh in the container)")
    g.add_argument("--health-interval", metavar="DURATION", help="time between checks (e.g. 2s)")
    g.add_argument("--health-retries", type=int, metavar="N", help="failures before unhealthy")
    g.add_argument("--health-start-period", metavar="DURATION", help="grace time before failures count")
    g.add_argument("--health-check-timeout", metavar="DURATION",
                   help="one check's time limit (docker run's --health-timeout; here that name is the gate's)")
    g.add_argument("--no-healthcheck", action="store_true", help="disable the image's HEALTHCHECK")
    g.add_argument("--entrypoint", metavar="CMD", help="override the image's entrypoint")
    g.add_argument("--user", metavar="USER[:GROUP]")
    g.add_argument("-w", "--workdir", metavar="DIR")
    g.add_argument("--hostname", metavar="NAME")
    g.add_argument("--add-host", dest="add_hosts", action="append", default=[], metavar="HOST:IP")
    g.add_argument("--stop-signal", metavar="SIGNAL")
    g.add_argument("--init", action="store_true", default=None,
                   help="run an init as PID 1 (forwards SIGTERM, reaps children)")
    g.add_argument("command", nargs="*", metavar="-- COMMAND", help="command and arguments (after --)")


def from_args(args: argparse.Namespace, lookup: Callable[[str], Optional[str]], *,
              base: Optional[Spec] = None) -> Spec:
    """The spec the flags describe, over ``base`` (an inherited spec) or the --spec files."""
    if base is not None:
        if getattr(args, "spec", None) or getattr(args, "start_spec", None):
            raise UsageError("--inherit takes the running container's config: it can't be combined with "
                             "--spec or --start-spec")
        spec = Spec(body=copy.deepcopy(base.body), secret_env=set(base.secret_env), origin=base.origin)
    else:
        spec = load(getattr(args, "spec", None), getattr(args, "start_spec", None))
    apply_flags(spec, args, lookup)
    return spec


def apply_flags(spec: Spec, args: argparse.Namespace, lookup: Callable[[str], Optional[str]]) -> None:
    body = spec.body
    host = spec.host_config()

    env = spec.env()
    for path in getattr(args, "env_files", None) or []:
        values = read_env_file(path, lookup)
        env.update(values)
        spec.secret_env.update(values)
    for item in getattr(args, "env", None) or []:
        key, sep, value = item.partition("=")
        if not key:
            # never echo the item: its value may be a secret (-e "=$DB_PASSWORD")
            raise UsageError("-e with an empty name: expected K=V or K")
        _set_env(env, key, sep, value, lookup)
    for item in getattr(args, "secret_env", None) or []:
        key, _, var = item.partition("=")
        var = var or key
        found = lookup(var)
        if found is None:
            raise UsageError(f"--secret-env {key}: environment variable {var} is not set")
        env[key] = found
        spec.secret_env.add(key)
    if env or "Env" in body:
        body["Env"] = env_list(env)

    ports = getattr(args, "ports", None) or []
    if ports:
        bindings = host.setdefault("PortBindings", {})
        fresh: Set[str] = set()
        for text in ports:
            key, binding = parse_port(text)
            if key not in fresh:  # a flag replaces what the spec said for that port
                bindings[key] = []
                fresh.add(key)
            bindings[key].append(binding)
        _expose_bound_ports(body)

    for text in getattr(args, "volumes", None) or []:
        bind, dest = parse_volume(text)
        if bind is None:
            body.setdefault("Volumes", {})[dest] = {}
            continue
        binds = [b for b in host.get("Binds") or [] if b.split(":")[1:2] != [dest]]
        binds.append(bind)
        host["Binds"] = binds
    for text in getattr(args, "mounts", None) or []:
        mount = parse_mount(text)
        mounts = [m for m in host.get("Mounts") or [] if m.get("Target") != mount["Target"]]
        mounts.append(mount)
        host["Mounts"] = mounts

    network = getattr(args, "network", None)
    aliases = getattr(args, "network_aliases", None) or []
    if network:
        host["NetworkMode"] = network
        endpoint: Json = {}
        if aliases:
            endpoint["Aliases"] = list(aliases)
        if network not in ("bridge", "host", "none", "default") and not network.startswith("container:"):
            body["NetworkingConfig"] = {"EndpointsConfig": {network: endpoint}}
        else:
            body.pop("NetworkingConfig", None)
    elif aliases:
        raise UsageError("--network-alias needs --network")

    if getattr(args, "restart", None):
        host["RestartPolicy"] = restart_policy(args.restart)

    labels = dict(body.get("Labels") or {})
    for item in getattr(args, "labels", None) or []:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"--label {item!r}: expected K=V")
        if key.startswith(LABEL_PREFIX):
            raise UsageError(f"--label {key}: the {LABEL_PREFIX}* labels are cdtools' own")
        labels[key] = value
    if labels:
        body["Labels"] = labels

    if getattr(args, "no_healthcheck", False):
        if getattr(args, "health_cmd", None):
            raise UsageError("--health-cmd and --no-healthcheck contradict each other")
        body["Healthcheck"] = {"Test": ["NONE"]}
    else:
        check = dict(body.get("Healthcheck") or {})
        if getattr(args, "health_cmd", None):
            check["Test"] = ["CMD-SHELL", args.health_cmd]
        for flag, key in (("health_interval", "Interval"), ("health_start_period", "StartPeriod"),
                          ("health_check_timeout", "Timeout")):
            if getattr(args, flag, None):
                check[key] = duration_ns(getattr(args, flag), "--" + flag.replace("_", "-"))
        if getattr(args, "health_retries", None) is not None:
            check["Retries"] = args.health_retries
        if check:
            if "Test" not in check:
                raise UsageError("--health-interval/--health-retries/… need --health-cmd (or a spec Healthcheck)")
            body["Healthcheck"] = check

    if getattr(args, "entrypoint", None) is not None:
        body["Entrypoint"] = [args.entrypoint] if args.entrypoint else [""]
    if getattr(args, "command", None):
        body["Cmd"] = list(args.command)
    for flag, key in (("user", "User"), ("workdir", "WorkingDir"), ("hostname", "Hostname"),
                      ("stop_signal", "StopSignal")):
        if getattr(args, flag, None):
            body[key] = getattr(args, flag)
    for item in getattr(args, "add_hosts", None) or []:
        name, sep, ip = item.partition(":")
        if not sep or not name or not ip:
            raise UsageError(f"--add-host {item!r}: expected HOST:IP")
        host.setdefault("ExtraHosts", []).append(f"{name}:{ip}")
    if getattr(args, "init", None):
        host["Init"] = True
    if not host:
        body.pop("HostConfig", None)
    if host.get("AutoRemove"):
        raise UsageError("HostConfig.AutoRemove: an auto-removed container vanishes when it stops, so it "
                         "can't be kept as NAME-previous for a rollback; drop it from the spec")


# -- inherit ------------------------------------------------------------------------------------


def inherit(container: Mapping[str, Any], image: Optional[Mapping[str, Any]], *, strict: bool = True) -> Spec:
    """The create body that reproduces ``container`` on another image.

    Whatever equals the old image's defaults (Env entries, Cmd, Entrypoint,
    Labels, ExposedPorts, Volumes, WorkingDir, User …) is left out so the new
    image's defaults apply.  Ports, mounts, networks with aliases, restart policy
    and log config are kept.  Anonymous volumes are mounted by their name, so
    their data stays.  With ``strict``, anything that can't be reproduced raises
    UsageError naming the field; without, it is skipped (for a plan's diff).
    """
    cfg: Mapping[str, Any] = container.get("Config") or {}
    img: Mapping[str, Any] = (image or {}).get("Config") or {}
    labels_in = dict(cfg.get("Labels") or {})
    name = str(container.get("Name", "")).lstrip("/")
    cid = str(container.get("Id", ""))

    def refuse(fieldname: str, why: str) -> None:
        if strict:
            raise UsageError(f"--inherit from {name}: {fieldname} can't be reproduced: {why}")

    if any(k.startswith("com.docker.swarm.") for k in labels_in):
        refuse("Config.Labels com.docker.swarm.*", "the container belongs to a swarm service; update the service")

    body: Json = {}
    img_env = set(img.get("Env") or [])
    env = [e for e in cfg.get("Env") or [] if e not in img_env]
    if env:
        body["Env"] = env
    for key in ("Cmd", "Entrypoint", "WorkingDir", "User", "StopSignal", "Shell", "OnBuild", "Healthcheck",
                "ArgsEscaped"):
        value = cfg.get(key)
        if value in (None, "", [], {}) or value == img.get(key):
            continue
        body[key] = copy.deepcopy(value)
    if cfg.get("StopTimeout") is not None:
        body["StopTimeout"] = cfg["StopTimeout"]
    for key in ("Tty", "OpenStdin", "StdinOnce"):
        if cfg.get(key):
            body[key] = True
    if cfg.get("Hostname") and cfg.get("Hostname") != cid[:12]:
        body["Hostname"] = cfg["Hostname"]
    if cfg.get("Domainname"):
        body["Domainname"] = cfg["Domainname"]
    if cfg.get("MacAddress"):
        body["MacAddress"] = cfg["MacAddress"]

    added = set(filter(None, labels_in.get(LABEL_ADDED, "").split(",")))
    img_labels = img.get("Labels") or {}
    labels = {k: v for k, v in labels_in.items()
              if not k.startswith(LABEL_PREFIX) and k not in added and img_labels.get(k) != v}
    if labels:
        body["Labels"] = labels
    for key in ("ExposedPorts", "Volumes"):
        own = {k: v for k, v in (cfg.get(key) or {}).items() if k not in (img.get(key) or {})}
        if own:
            body[key] = own

    host: Json = {}
    for key, value in (container.get("HostConfig") or {}).items():
        if key not in HOST_CONFIG_FIELDS or _empty(value):
            continue
        if key in _DAEMON_DEFAULTS and _DAEMON_DEFAULTS[key](value):
            continue
        host[key] = copy.deepcopy(value)
    if host.get("AutoRemove"):
        refuse("HostConfig.AutoRemove", "an auto-removed container can't be kept as NAME-previous")
        host.pop("AutoRemove", None)
    if host.get("Links"):
        # inspect says "/db:/web/db"; create wants "db:db"
        host["Links"] = [f"{src.lstrip('/')}:{dst.rsplit('/', 1)[-1]}"
                         for src, _, dst in (link.partition(":") for link in host["Links"])]
    # anonymous volumes (image VOLUME or -v /path): mount the same volume by name so the data stays
    binds = list(host.get("Binds") or [])
    covered = {b.split(":")[1] for b in binds if ":" in b} | {m.get("Target") for m in host.get("Mounts") or []}
    for mount in container.get("Mounts") or []:
        dest = mount.get("Destination")
        if mount.get("Type") != "volume" or dest in covered:
            continue
        if not mount.get("Name"):
            refuse(f"Mounts {dest}", "a volume with no name")
            continue
        if mount.get("Driver") not in (None, "", "local"):
            refuse(f"Mounts {dest}", f"an anonymous volume of driver {mount.get('Driver')!r}")
            continue
        binds.append(f"{mount['Name']}:{dest}" + ("" if mount.get("RW", True) else ":ro"))
    if binds:
        host["Binds"] = binds
    if host:
        body["HostConfig"] = host

    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    mode = (container.get("HostConfig") or {}).get("NetworkMode") or "default"
    endpoints: Json = {}
    for net, ep in networks.items():
        if net in ("bridge", "host", "none") and net in (mode, "bridge") and not (ep or {}).get("IPAMConfig"):
            continue
        out: Json = {}
        aliases = [a for a in (ep or {}).get("Aliases") or [] if a not in (cid[:12], name)]
        if aliases:
            out["Aliases"] = aliases
        for key in ("IPAMConfig", "Links", "DriverOpts"):
            if not _empty((ep or {}).get(key)):
                out[key] = copy.deepcopy(ep[key])
        if "Links" in out:
            out["Links"] = [f"{s.lstrip('/')}:{d.rsplit('/', 1)[-1]}"
                            for s, _, d in (link.partition(":") for link in out["Links"])]
        endpoints[net] = out
    if endpoints:
        body["NetworkingConfig"] = {"EndpointsConfig": endpoints}

    secret = set(filter(None, labels_in.get(LABEL_SECRET_ENV, "").split(",")))
    return Spec(body=body, secret_env=secret, origin="inherit")


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {} or value is False or value == 0


# -- hash, labels, output -----------------------------------------------------------------------


def effective(body: Mapping[str, Any]) -> Json:
    """The part of a create body that decides what runs: no Image name, no cdtools labels."""
    out = copy.deepcopy(dict(body))
    out.pop("Image", None)
    labels = dict(out.get("Labels") or {})
    added = set(filter(None, labels.get(LABEL_ADDED, "").split(",")))
    labels = {k: v for k, v in labels.items() if not k.startswith(LABEL_PREFIX) and k not in added}
    if labels:
        out["Labels"] = labels
    else:
        out.pop("Labels", None)
    return out


def effective_hash(body: Mapping[str, Any], image_id: str) -> str:
    """sha256 of the effective spec and the image id: equal means a re-run would change nothing."""
    doc = {"spec": effective(body), "image": image_id}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def redacted(body: Mapping[str, Any], spec: Spec) -> Json:
    """A copy of ``body`` fit to print: secret Env values replaced."""
    out = copy.deepcopy(dict(body))
    if out.get("Env"):
        out["Env"] = [f"{k}={REDACTED if spec.is_secret(k) else v}" for k, v in env_dict(out["Env"]).items()]
    return out


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` (container logs, daemon messages) with every secret value replaced."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if value:
            text = text.replace(value, REDACTED)
    return text


def comparable(body: Mapping[str, Any]) -> Json:
    """A body normalised for a diff: daemon defaults and empty values dropped, Env as a dict."""
    out = effective(body)
    host = {k: v for k, v in (out.get("HostConfig") or {}).items()
            if not _empty(v) and not (k in _DAEMON_DEFAULTS and _DAEMON_DEFAULTS[k](v))}
    out["HostConfig"] = host
    out = {k: v for k, v in out.items() if not _empty(v)}
    return out


def diff(old: Optional[Mapping[str, Any]], new: Mapping[str, Any], spec: Spec) -> List[str]:
    """Human lines: what changes from ``old`` to ``new`` (both create bodies), secrets redacted."""
    a = _flatten(comparable(old or {}))
    b = _flatten(comparable(new))
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        secret = key.startswith("Env.") and spec.is_secret(key[4:])
        before = "(unset)" if key not in a else REDACTED if secret else a[key]
        after = "(unset)" if key not in b else REDACTED if secret else b[key]
        if secret and key in a and key in b:
            after += " (changed)"
        lines.append(f"{key}: {before} -> {after}")
    return lines


def _flatten(body: Mapping[str, Any]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for key, value in body.items():
        if key == "Env":
            for k, v in env_dict(value).items():
                out[f"Env.{k}"] = v
        elif key in ("HostConfig", "Labels", "NetworkingConfig") and isinstance(value, dict):
            for k, v in value.items():
                out[f"{key}.{k}"] = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
        else:
            out[key] = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return out
