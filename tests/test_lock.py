"""The deploy lock on the real daemon: exactly one holder, a named holder in the refusal, release, SIGTERM."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from cdtools import lock
from cdtools.engine import connect
from cdtools.errors import LockError
from cdtools.settings import from_env

BASE = "busybox:latest"


@pytest.fixture
def engine(engine_available):
    return connect(from_env({"DOCKER_HOST": engine_available.docker_host}))


@pytest.mark.e2e
def test_second_taker_is_refused_naming_the_holder_then_gets_it_after_release(engine, unique: str) -> None:
    first = lock.Lock(engine, unique, BASE, lock.holder_labels(unique, "https://jenkins.example/job/a/1/"))
    first.acquire()
    try:
        doc = engine.inspect_container(f"{unique}-cdtools-lock")
        assert doc["State"]["Status"] == "created"  # never started
        second = lock.Lock(engine, unique, BASE, lock.holder_labels(unique, "https://jenkins.example/job/b/2/"))
        with pytest.raises(LockError) as err:
            second.acquire()
        assert "https://jenkins.example/job/a/1/" in str(err.value)
        assert err.value.exit_code == 8
    finally:
        assert first.release() is None
    with lock.Lock(engine, unique, BASE, lock.holder_labels(unique, "b")):
        assert engine.find_container(f"{unique}-cdtools-lock") is not None
    assert engine.find_container(f"{unique}-cdtools-lock") is None


@pytest.mark.e2e
def test_waiting_taker_gets_the_lock_when_the_holder_lets_go(engine, unique: str) -> None:
    first = lock.Lock(engine, unique, BASE, lock.holder_labels(unique, "first"))
    first.acquire()
    timer = threading.Timer(1.0, first.release)
    timer.start()
    try:
        with lock.Lock(engine, unique, BASE, lock.holder_labels(unique, "second"), wait=30) as second:
            labels = engine.inspect_container(second.container)["Config"]["Labels"]
            assert labels[lock.LABEL_HOLDER] == "second"
    finally:
        timer.cancel()
        first.release()


@pytest.mark.e2e
def test_break_lock_removes_a_stale_lock(engine, unique: str) -> None:
    stale = lock.Lock(engine, unique, BASE, lock.holder_labels(unique, "dead job"))
    stale.acquire()
    with lock.Lock(engine, unique, BASE, lock.holder_labels(unique, "rescuer"), break_lock=True) as rescuer:
        assert engine.inspect_container(rescuer.container)["Config"]["Labels"][lock.LABEL_HOLDER] == "rescuer"
    assert engine.find_container(f"{unique}-cdtools-lock") is None


@pytest.mark.e2e
def test_sigterm_inside_the_lock_releases_it(engine, unique: str) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(lock.Terminated):
        with lock.sigterm_raises():
            with lock.Lock(engine, unique, BASE, lock.holder_labels(unique, "job")):
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pause()  # the handler raises; never returns
    assert engine.find_container(f"{unique}-cdtools-lock") is None
    assert signal.getsignal(signal.SIGTERM) == before  # the process's own handling is back
