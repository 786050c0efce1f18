"""A deploy lock that lives on the target daemon itself.

Two Jenkins jobs deploying the same name must not interleave.  The lock is a
container named ``NAME-cdtools-lock``, created and never started: the daemon
gives a name to exactly one create request and answers every other one 409, so
taking the lock is atomic with no other service.  Its labels say who holds it
(``BUILD_URL``, job, host and pid) and since when.  Creating a container needs
a local image; the caller passes one it has (the image being deployed).

Released on exit, on error and on SIGTERM (what a Jenkins abort sends):
:func:`sigterm_raises` turns SIGTERM into :class:`Terminated` so ``finally``
blocks run.  A lock left behind by a process that died from SIGKILL (or a host
crash) stays until someone removes it: ``--break-lock`` on deploy/rollback, or
``python -m cdtools.container rm NAME-cdtools-lock``; the error names its holder
and its age so a person can tell whether it is stale.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from types import FrameType
from typing import Any, Callable, ContextManager, Dict, Iterator, Mapping, Optional

from .console import Console
from .engine import Engine
from .errors import Conflict, LockError, NotFound

SUFFIX = "-cdtools-lock"
LABEL_LOCK = "cdtools.lock"
LABEL_HOLDER = "cdtools.lock.holder"
LABEL_SINCE = "cdtools.lock.since"
LABEL_PID = "cdtools.lock.pid"
LABEL_HOST = "cdtools.lock.host"

#: seconds between attempts while another deploy holds the lock
POLL = 0.5


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a Jenkins abort); raised like Ctrl-C so every ``finally`` runs."""


def lock_name(name: str) -> str:
    return name + SUFFIX


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def holder_labels(name: str, build_url: str = "", job_name: str = "") -> Dict[str, str]:
    """Who is taking the lock: the Jenkins build when there is one, else host and pid."""
    host = socket.gethostname()
    who = build_url or (f"{job_name} on {host} pid {os.getpid()}" if job_name else f"{host} pid {os.getpid()}")
    return {LABEL_LOCK: name, LABEL_HOLDER: who, LABEL_SINCE: utc_now(), LABEL_PID: str(os.getpid()),
            LABEL_HOST: host}


def describe(doc: Mapping[str, Any]) -> str:
    """"BUILD_URL since 2026-… (42 s ago)" for a lock container's inspect."""
    labels = (doc.get("Config") or {}).get("Labels") or {}
    who = labels.get(LABEL_HOLDER) or "an unknown holder"
    since = labels.get(LABEL_SINCE) or str(doc.get("Created", ""))[:19]
    age = ""
    try:
        then = datetime.strptime(since[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
        age = f" ({int((datetime.now(timezone.utc) - then).total_seconds())} s ago)"
    except ValueError:
        pass
    return f"{who} since {since}{age}"


class NamedLock:
    """A lock held by creating an object whose name the daemon gives to one caller only.

    Subclasses say what the object is (:meth:`_create`, :meth:`_held`,
    :meth:`_remove`, :meth:`describe`); waiting, breaking, releasing and the
    SIGTERM-safe ``with`` block are the same for all of them.
    """

    #: what the messages call the thing being deployed ("web", "service web")
    what = ""
    #: how a person removes a stale lock by hand
    remove_hint = ""

    def __init__(self, engine: Engine, name: str, labels: Mapping[str, str], *, wait: float = 0.0,
                 break_lock: bool = False, console: Optional[Console] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.engine = engine
        self.name = name
        self.lock_name = lock_name(name)
        self.labels = dict(labels)
        self.wait = wait
        self.break_lock = break_lock
        self.console = console
        self._clock = clock
        self._sleep = sleep
        self.id: Optional[str] = None

    def _create(self) -> str:
        """Create the lock object; Conflict when it exists.  Returns its id."""
        raise NotImplementedError

    def _held(self) -> Optional[Dict[str, Any]]:
        """The lock object as the daemon shows it, None when there is none."""
        raise NotImplementedError

    def _remove(self, lock_id: str) -> None:
        raise NotImplementedError

    def describe(self, held: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.line(text)

    def acquire(self) -> None:
        deadline = self._clock() + max(0.0, self.wait)
        told = False
        if self.break_lock:
            held = self._held()
            if held is not None:
                self._say(f"breaking the lock {self.lock_name} held by {self.describe(held)} (--break-lock)")
                try:
                    self._remove(str(held.get("Id") or held.get("ID")))
                except NotFound:
                    pass
        while True:
            try:
                self.id = self._create()
                return
            except Conflict:
                pass
            held = self._held()
            if held is None:
                continue  # released between our create and our look: try again at once
            if self._clock() >= deadline:
                waited = f" after waiting {self.wait:g} s" if self.wait > 0 else ""
                raise LockError(f"{self.what or self.name} is being deployed by {self.describe(held)}{waited}; "
                                f"retry later, raise --lock-wait, or if that deploy is dead, --break-lock")
            if not told:
                self._say(f"waiting up to {self.wait:g} s for the lock {self.lock_name}, held by {self.describe(held)}")
                told = True
            self._sleep(min(POLL, max(0.0, deadline - self._clock())))

    def release(self) -> Optional[str]:
        """Remove the lock if it is ours; returns a warning instead of raising."""
        if self.id is None:
            return None
        lock_id, self.id = self.id, None
        try:
            self._remove(lock_id)
        except NotFound:
            return f"the lock {self.lock_name} was already gone (broken by someone with --break-lock?)"
        except Exception as exc:  # noqa: BLE001 - a release failure must not hide the deploy's own outcome
            return f"could not remove the lock {self.lock_name}: {exc}; {self.remove_hint}"
        return None

    def __enter__(self) -> "NamedLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        # a second SIGTERM must not cut the release short
        with deferred_sigterm():
            warning = self.release()
        if warning:
            self._say(f"warning: {warning}")


class Lock(NamedLock):
    """``with Lock(...):`` holds NAME-cdtools-lock, a never-started container, on the daemon for the block."""

    remove_hint = "remove it by hand"

    def __init__(self, engine: Engine, name: str, image: str, labels: Mapping[str, str], **kw: Any) -> None:
        super().__init__(engine, name, labels, **kw)
        self.image = image

    @property
    def container(self) -> str:
        return self.lock_name

    def _create(self) -> str:
        body = {
            "Image": self.image,
            # never started: the entrypoint need not exist, and no network is set up for it
            "Entrypoint": ["/cdtools-lock"],
            "Cmd": [],
            "NetworkDisabled": True,
            "Labels": self.labels,
            "HostConfig": {"NetworkMode": "none"},
        }
        return str(self.engine.create_container(self.lock_name, body)["Id"])

    def _held(self) -> Optional[Dict[str, Any]]:
        return self.engine.find_container(self.lock_name)

    def _remove(self, lock_id: str) -> None:
        self.engine.remove_container(lock_id, force=True)

    def describe(self, held: Mapping[str, Any]) -> str:
        return describe(held)


def _raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
    # Once is enough: ignore further TERMs so the rollback and the lock release that
    # the first one started can finish (Jenkins sends SIGKILL if it loses patience).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("SIGTERM")


def sigterm_raises() -> ContextManager[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only)."""
    return _sigterm_handled_by(_raise_terminated)


def deferred_sigterm() -> ContextManager[None]:
    """Within the block SIGTERM is ignored: for the steps that put the old container back."""
    return _sigterm_handled_by(signal.SIG_IGN)


@contextmanager
def _sigterm_handled_by(handler: Any) -> Iterator[None]:
    """SIGTERM goes to ``handler`` within the block, and back to what it was after."""
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
