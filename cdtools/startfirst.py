"""Start first: the new container's program runs before the old one stops; only its network waits.

Why.  When Docker 20.10 starts a container with a published port, dockerd starts
docker-proxy for the port *before* the container's network interface exists (the
namespace is wired up later, by runc's prestart hook, ~150 ms on the test bed).  A
client that connects in between is accepted by docker-proxy, which then sends its
SYN to the container's address over a link with no carrier: the SYN is lost and TCP
retries after its 1 s initial timeout.  Seen with ``ss`` during a start: docker-proxy
in SYN-SENT to 172.17.0.3:8080 for 1.0 s, while ``curl`` waited 1.009 s for a page
the program was serving after ~0.2 s.  That hang, not the stop or the start, made
most of a redeploy's outage.

Measured (``python bench/deploy_bench.py --rounds 5``, Docker 20.10, a client polling
every 10 ms): the longest outage was 0.68-0.75 s for the naive stop/rm/create/start and
for the classic order (--no-start-first), a request hung in every round, with a 0.5 s
client timeout; 1.18-1.23 s when the client waits 2 s.  Started first: 0.19-0.26 s,
no hung request, with either timeout (0.27-0.37 of the naive's).

Not the cause: the MAC address.  On a bridge network docker derives it from the IP
(172.17.0.3 -> 02:42:ac:11:00:03), so when the new container gets the old one's
address the host's neighbour entry is already right; giving it the old MAC changes
nothing, and a different IP would only add an ARP round.

Connecting a *running* container to a network happens in the other order: its
interface is moved into the namespace and configured, then docker-proxy starts.  So::

    create NAME-cdtools-new on the "none" network         its HostConfig (NetworkMode, PortBindings)
                                                          is the user's; a create request's
                                                          EndpointsConfig replaces the NetworkMode one
    start it while NAME serves                            loopback only: no port is bound, no clash
    wait until it listens on its published TCP ports      /proc/PID/net/tcp{,6} on a local daemon,
        or its HEALTHCHECK is healthy (--start-first-wait)  else no wait
    disconnect it from none                               loopback stays; ~20 ms, still before the stop
    stop NAME                                             its stop timeout, as before
    connect its networks                                  same eth0, /etc/hosts line and resolv.conf
                                                          as a container started there

The outage is then the old one's stop plus one network connect, with no
docker-proxy hang, however long the program takes to start.

Where it is valid (else the classic order: stop, then start): a Docker daemon (not
Podman, whose networks work differently), a running container to replace, local
``bridge``-driver networks only (the default bridge or user-defined ones; not host,
none, container:…, overlay or macvlan), no legacy ``--link`` (set up only when a
container starts), no fixed MacAddress, and nothing writable the old container has
too (a named volume, a bind mount, --volumes-from, a device): two programs must not
run on the same data at once.  Read-only mounts, tmpfs and anonymous volumes are fine.

What a program sees: it starts with loopback only, and gets its networks once the
old container has stopped.  A program that exits (or turns unhealthy) without its
network is not a failed deploy: the staged container is removed and the deploy goes
on in the classic order, so nothing that deployed before fails now.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from . import health
from .engine import Engine
from .errors import NotFound

Json = Dict[str, Any]

#: the network a staged container starts on
STAGING_NETWORK = "none"
#: seconds between looks at a staged container
POLL = 0.05


@dataclass
class Staging:
    """How a new container starts first: what it joins at the swap and what tells it is ready."""

    #: (network, endpoint settings) to connect at the swap, the NetworkMode network first
    networks: List[Tuple[str, Json]] = field(default_factory=list)
    #: published TCP container ports it must listen on before the old one is stopped
    ports: List[int] = field(default_factory=list)

    def network_names(self) -> str:
        return ", ".join(name for name, _ in self.networks)


def _mode(body: Mapping[str, Any]) -> str:
    return str((body.get("HostConfig") or {}).get("NetworkMode") or "default")


def networks_of(body: Mapping[str, Any]) -> List[Tuple[str, Json]]:
    """The networks a container made from ``body`` joins, NetworkMode's first, with their endpoint settings."""
    mode = _mode(body)
    first = "bridge" if mode == "default" else mode
    endpoints = ((body.get("NetworkingConfig") or {}).get("EndpointsConfig")) or {}
    out = [(first, dict(endpoints.get(first) or {}))]
    out += [(name, dict(ep or {})) for name, ep in endpoints.items() if name != first]
    return out


def published_tcp_ports(body: Mapping[str, Any]) -> List[int]:
    ports = set()
    for key, bindings in ((body.get("HostConfig") or {}).get("PortBindings") or {}).items():
        number, _, proto = str(key).partition("/")
        if bindings and (proto or "tcp") == "tcp" and number.isdigit():
            ports.add(int(number))
    return sorted(ports)


def shared_writable(body: Mapping[str, Any]) -> str:
    """A writable volume, bind mount or device the new container would share with the old one ("" if none).

    Two programs must not run on the same data at once (a database, SQLite, any lock-free
    file store): such a container is started only after the old one has stopped.  Anonymous
    volumes and tmpfs are the container's own; read-only mounts can't be harmed.
    """
    host = body.get("HostConfig") or {}
    for bind in host.get("Binds") or []:
        parts = str(bind).split(":")  # SOURCE:DEST[:OPTIONS]
        if "ro" not in (parts[2].split(",") if len(parts) > 2 else []):
            return f"-v {bind}"
    for mount in host.get("Mounts") or []:
        if mount.get("Type", "volume") in ("volume", "bind") and not mount.get("ReadOnly"):
            return f"--mount target={mount.get('Target')}"
    for source in host.get("VolumesFrom") or []:
        if not str(source).endswith(":ro"):
            return f"--volumes-from {source}"
    for device in host.get("Devices") or []:
        return f"--device {device.get('PathOnHost')}"
    return ""


def plan(engine: Engine, body: Mapping[str, Any]) -> Tuple[Optional[Staging], str]:
    """(staging, "") when a container made from ``body`` can start first, else (None, why not).

    Reads the networks (read-only), so a dry run can say what a deploy will do.
    """
    if engine.podman_version:
        return None, "Podman's networks work differently"
    if body.get("NetworkDisabled"):
        return None, "its network is disabled"
    mode = _mode(body)
    if mode == "host":
        return None, "host network: the old container holds the ports until it stops"
    if mode == "none":
        return None, "it has no network"
    if mode.startswith("container:"):
        return None, "it shares another container's network"
    if (body.get("HostConfig") or {}).get("Links"):
        return None, "legacy --link is set up only when a container starts"
    if not published_tcp_ports(body) and not any(ep.get("Aliases") for _, ep in networks_of(body)):
        # Start first exists to keep something answering (a published port, a network alias);
        # with neither, a worker (a queue consumer, a cron-like job) must not run twice.
        return None, "nothing reaches it (no published port, no network alias): two copies must not run at once"
    shared = shared_writable(body)
    if shared:
        return None, f"{shared} is writable and the old container has it too: two programs must not run on it at once"
    networks = networks_of(body)
    if body.get("MacAddress") or any(ep.get("MacAddress") for _, ep in networks):
        return None, "a fixed MacAddress"
    for name, endpoint in networks:
        if endpoint.get("Links"):
            return None, "legacy --link is set up only when a container starts"
        try:
            net = engine.inspect_network(name)
        except NotFound:
            return None, f"network {name} does not exist"
        driver, scope = net.get("Driver"), net.get("Scope") or "local"
        if driver != "bridge" or scope != "local":
            return None, f"network {name} is {driver} ({scope}), not a local bridge network"
    return Staging(networks=networks, ports=published_tcp_ports(body)), ""


def staged_body(body: Mapping[str, Any]) -> Json:
    """``body`` created on the none network only; HostConfig (NetworkMode, PortBindings) unchanged."""
    out = dict(body)
    out["NetworkingConfig"] = {"EndpointsConfig": {STAGING_NETWORK: {}}}
    return out


def _died_meanwhile(engine: Engine, container: str, doc: Mapping[str, Any],
                    sleep: Callable[[float], None]) -> str:
    """Why a local container stopped between its inspect and the look at /proc ('' if it did not).

    Its PID 1 gone from /proc may just be a pid this machine can't see (an agent in a
    container); the daemon's word decides, asked a few times while it records the exit.
    """
    pid = int((doc.get("State") or {}).get("Pid") or 0)
    if engine.endpoint.scheme != "unix" or pid <= 0 or os.path.exists(f"/proc/{pid}"):
        return ""
    for _ in range(5):
        state = engine.inspect_container(container).get("State") or {}
        stopped = health.not_running(state)
        if stopped:
            return stopped
        sleep(POLL)
    return ""


def local_pid(engine: Engine, doc: Mapping[str, Any]) -> Optional[int]:
    """PID 1 of ``doc`` as this machine's /proc shows it; None when cdtools can't see it.

    Only for a daemon on this machine, and only when /proc/PID/cgroup proves the pid
    is that container's (a Jenkins agent in a container sees other pids).
    """
    if engine.endpoint.scheme != "unix":
        return None
    pid = int((doc.get("State") or {}).get("Pid") or 0)
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as fh:
            if str(doc.get("Id")) not in fh.read():
                return None
    except OSError:
        return None
    return pid


def listening(pid: int) -> Optional[Set[int]]:
    """TCP ports with a listening socket in the network namespace of ``pid``; None if unreadable."""
    ports: Set[int] = set()
    read_any = False
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii", errors="replace") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st …; st 0A is LISTEN
            if len(fields) > 3 and fields[3] == "0A":
                try:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
                except (IndexError, ValueError):
                    continue
    return ports if read_any else None


@dataclass
class Readiness:
    #: why the staged container can't go on (it exited, restarted, turned unhealthy); "" if it can
    failed: str = ""
    #: what was seen, for the log
    seen: str = ""
    #: it listens (or is healthy): it is past the start-up in which a program may give up without a network
    confirmed: bool = False


def wait_ready(engine: Engine, container: str, staging: Staging, wait: float, *,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Readiness:
    """Watch a staged container until it is ready, fails, or ``wait`` seconds pass."""
    start = clock()
    want = set(staging.ports)
    while True:
        doc = engine.inspect_container(container)
        state = doc.get("State") or {}
        elapsed = clock() - start
        stopped = health.not_running(state)
        if stopped:
            return Readiness(failed=stopped)
        if int(doc.get("RestartCount") or 0) > 0:
            return Readiness(failed=f"its restart policy restarted it {doc['RestartCount']} time(s)")
        checked = health.has_healthcheck(doc)
        status = ((state.get("Health") or {}).get("Status")) if checked else None
        if status == "unhealthy":
            return Readiness(failed="HEALTHCHECK reports unhealthy")
        if status == "healthy":
            return Readiness(seen=f"HEALTHCHECK healthy after {elapsed:.1f} s", confirmed=True)
        pid = local_pid(engine, doc) if want else None
        ports = listening(pid) if pid else None
        if ports is None and want:
            died = _died_meanwhile(engine, container, doc, sleep)
            if died:
                return Readiness(failed=died)
        if ports is not None and want <= ports:
            return Readiness(seen=f"listening on {_ports(want)} after {elapsed:.1f} s", confirmed=True)
        # a first check that can't come within the wait tells nothing (docker's default interval is 30 s)
        if ports is None and not (checked and health.check_interval(doc) <= wait):
            return Readiness(seen="nothing here tells when it is ready (its sockets can't be read from this "
                                  "machine and no HEALTHCHECK runs within the wait): going on at once")
        if elapsed >= wait:
            missing = f"not listening on {_ports(want - ports)}" if ports is not None else f"HEALTHCHECK {status}"
            return Readiness(seen=f"{missing} after {wait:g} s without its network: going on, it may need it")
        sleep(POLL)


def _ports(ports: Set[int]) -> str:
    return ", ".join(f"{p}/tcp" for p in sorted(ports))


def ready_condition(staging: Staging, wait: float, *, local: bool, has_healthcheck: Optional[bool]) -> str:
    """How the plan words the wait."""
    signs = []
    if staging.ports and local:
        signs.append(f"it listens on {_ports(set(staging.ports))}")
    if has_healthcheck is not False:
        signs.append("its HEALTHCHECK is healthy" if has_healthcheck else "its HEALTHCHECK (if any) is healthy")
    if not signs:
        return "nothing tells when it is ready, so no wait"
    return f"wait up to {wait:g} s until " + " or ".join(signs)


def unplug(engine: Engine, container: str) -> None:
    """Take a staged container off the none network (it keeps loopback), before the old one stops.

    Out of none before its own networks come, the container gets what starting there
    gives: eth0, its /etc/hosts line (docker writes it for the first network joined) and
    the same resolv.conf; done before the stop, it costs the outage nothing (~20 ms).
    """
    engine.disconnect_network(STAGING_NETWORK, container)


def connect(engine: Engine, container: str, staging: Staging) -> None:
    """Give an unplugged container its own networks, each with its endpoint settings (the swap)."""
    for name, endpoint in staging.networks:
        engine.connect_network(name, container, endpoint or None)
