"""The health gate: is the new container fit to keep?

One of, in this order of preference:

- the image's (or the spec's) Docker ``HEALTHCHECK``: wait for ``healthy``,
  fail on ``unhealthy``;
- a probe from cdtools itself: ``--probe http://127.0.0.1:8080/health`` (any
  2xx/3xx answer) or ``--probe tcp://127.0.0.1:5432`` (a connection);
- otherwise: still running after ``settle`` seconds.

Whatever the check, the gate fails at once when the container exits, is
restarting, or has been restarted by its restart policy.  A TCP probe through
a published port says little: docker-proxy accepts connections before the
program listens.  Prefer an HTTP probe.
"""
from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional
from urllib.parse import urlsplit

from .engine import Engine
from .errors import CdtoolsError, UsageError

#: seconds one probe may take
PROBE_TIMEOUT = 2.0
#: docker's HEALTHCHECK interval when the image sets none
DEFAULT_CHECK_INTERVAL = 30.0


@dataclass(frozen=True)
class Gate:
    """What the new container must show, and for how long cdtools waits for it."""

    timeout: float = 60.0
    #: "still running after N s" when there is neither a HEALTHCHECK nor a probe
    settle: float = 3.0
    probe: Optional[str] = None
    interval: float = 0.2

    def describe(self, has_healthcheck: Optional[bool]) -> str:
        if self.probe:
            what = f"probe {self.probe} answers"
            if has_healthcheck:
                what = "HEALTHCHECK healthy and " + what
        elif has_healthcheck:
            what = "HEALTHCHECK reports healthy"
        elif has_healthcheck is None:
            what = f"HEALTHCHECK healthy if the image has one, else still running after {self.settle:g} s"
        else:
            what = f"still running after {self.settle:g} s"
        return f"{what} (up to {self.timeout:g} s)"


@dataclass
class Verdict:
    ok: bool
    reason: str = ""
    #: the last HEALTHCHECK results, "exit N: output" (newest last)
    health_log: List[str] = field(default_factory=list)
    seconds: float = 0.0


def check_probe_url(url: str) -> str:
    """Validate ``--probe``; returns it."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return url
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        return url
    raise UsageError(f"--probe {url!r}: expected http://HOST:PORT/PATH or tcp://HOST:PORT")


def probe_once(url: str, timeout: float = PROBE_TIMEOUT) -> Optional[str]:
    """None when the probe passes, else why not."""
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        try:
            with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=timeout):
                return None
        except OSError as exc:
            return f"tcp connect: {exc.strerror or exc}"
    # no proxy: a probe goes to the deploy target, never through HTTP_PROXY
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            resp.read(65536)
            return None if resp.status < 400 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return f"{getattr(reason, 'strerror', None) or reason}"
    except (OSError, ValueError) as exc:
        return f"{exc.__class__.__name__}: {exc}"


def has_healthcheck(container: Mapping[str, Any]) -> bool:
    test = ((container.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def health_log(container: Mapping[str, Any], last: int = 5) -> List[str]:
    entries = ((container.get("State") or {}).get("Health") or {}).get("Log") or []
    out = []
    for entry in entries[-last:]:
        output = " ".join(str(entry.get("Output") or "").split())
        out.append(f"exit {entry.get('ExitCode')}: {output[:300]}")
    return out


def _last_check(container: Mapping[str, Any]) -> Optional[str]:
    """When the newest logged HEALTHCHECK started (None before the first)."""
    entries = ((container.get("State") or {}).get("Health") or {}).get("Log") or []
    return str(entries[-1].get("Start")) if entries else None


def _check_interval(container: Mapping[str, Any]) -> float:
    nanos = ((container.get("Config") or {}).get("Healthcheck") or {}).get("Interval") or 0
    return nanos / 1e9 if nanos > 0 else DEFAULT_CHECK_INTERVAL


def _podman_check(engine: Engine, container: str, doc: Dict[str, Any],
                  last_seen: Optional[str]) -> Dict[str, Any]:
    """Run the HEALTHCHECK when Podman ran none itself during the last interval; the new inspect."""
    if _last_check(doc) != last_seen:
        return doc  # the daemon's own timer ran one: nothing to make up for
    try:
        engine.run_healthcheck(container)
    except CdtoolsError:
        return doc  # it could not run; the gate's timeout then says the check never passed
    return engine.inspect_container(container)


def check_interval(container: Mapping[str, Any]) -> float:
    """Seconds between a container's HEALTHCHECKs (docker's 30 when it sets none)."""
    return _check_interval(container)


def not_running(state: Mapping[str, Any]) -> Optional[str]:
    """Why a container with this ``State`` is not running (exited, restarting), or None."""
    return _not_running(state)


def _not_running(state: Mapping[str, Any]) -> Optional[str]:
    if state.get("Restarting"):
        return f"it is restarting (last exit code {state.get('ExitCode')})"
    if not state.get("Running"):
        reason = f"it exited with code {state.get('ExitCode')}"
        if state.get("OOMKilled"):
            reason += " (killed: out of memory)"
        if state.get("Error"):
            reason += f": {state['Error']}"
        return reason
    return None


def wait(engine: Engine, container: str, gate: Gate, *,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Verdict:
    """Watch ``container`` until the gate passes or fails."""
    start = clock()
    deadline = start + gate.timeout
    probe_error: Optional[str] = "not tried yet"
    next_check: Optional[float] = None
    last_seen: Optional[str] = None
    while True:
        doc = engine.inspect_container(container)
        state = doc.get("State") or {}
        elapsed = clock() - start
        stopped = _not_running(state)
        if stopped:
            return Verdict(False, stopped, health_log(doc), elapsed)
        if int(doc.get("RestartCount") or 0) > 0:
            return Verdict(False, f"its restart policy restarted it {doc['RestartCount']} time(s)",
                           health_log(doc), elapsed)
        checked = has_healthcheck(doc)
        status = ((state.get("Health") or {}).get("Status")) if checked else None
        if checked and next_check is None:
            next_check, last_seen = start + _check_interval(doc), _last_check(doc)
        if (checked and status not in ("healthy", "unhealthy") and next_check is not None
                and clock() >= next_check and engine.podman_version):
            # Podman runs HEALTHCHECKs from systemd timers; with no systemd (a CI container)
            # they never run and the status stays "starting".  Make up for each interval in
            # which the daemon logged no check of its own.
            doc = _podman_check(engine, container, doc, last_seen)
            last_seen, next_check = _last_check(doc), clock() + _check_interval(doc)
            state = doc.get("State") or {}
            status = (state.get("Health") or {}).get("Status")
        if status == "unhealthy":
            return Verdict(False, "HEALTHCHECK reports unhealthy", health_log(doc), elapsed)
        health_ok = not checked or status == "healthy"
        if gate.probe and probe_error is not None:
            probe_error = probe_once(gate.probe)
        probe_ok = not gate.probe or probe_error is None
        settled = checked or bool(gate.probe) or elapsed >= gate.settle
        if health_ok and probe_ok and settled:
            return Verdict(True, "", health_log(doc), clock() - start)
        if clock() >= deadline:
            waiting = []
            if not health_ok:
                waiting.append(f"HEALTHCHECK still {status or 'starting'}")
            if not probe_ok:
                waiting.append(f"probe {gate.probe}: {probe_error}")
            if not waiting:
                waiting.append(f"it ran {elapsed:.1f} s of the {gate.settle:g} s settle time")
            return Verdict(False, f"not ready after {gate.timeout:g} s: " + "; ".join(waiting),
                           health_log(doc), elapsed)
        sleep(min(gate.interval, max(0.0, deadline - clock())))
