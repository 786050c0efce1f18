"""Faults a real daemon can't be made to produce on demand, against the fakes in tests/fakes.py.

Each fault must end as one clear line and a non-zero exit code, never a
traceback: at the engine level the test checks the exception class and its
text; through ``cli.run`` (what every step's ``main`` uses) it checks stderr
and the exit code.
"""
from __future__ import annotations

import io
import json
import tarfile
from typing import Any, Iterator, Optional

import pytest

import fakes
from cdtools import cli, engine as engine_mod, settings as settings_mod
from cdtools.errors import APIError, StreamError, StreamTimeout, TransportError


def connect(host: str, *, timeout: Optional[float] = None) -> engine_mod.Engine:
    return engine_mod.connect(settings_mod.from_env({"DOCKER_HOST": host}), timeout=timeout)


def tiny_context() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"FROM busybox\nRUN true\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def drain(records: Iterator[Any]) -> list:
    return list(records)


def run_cli(work: Any, capsys: Any) -> "tuple[int, str, str]":
    """What a step's main does with an error: one line on stderr, an exit code."""
    code = cli.run("cdtools fault", lambda settings: work())
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str) -> str:
    assert err.endswith("\n")
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- connection refused ----------------------------------------------------------------------------


def test_connection_refused_names_the_address(capsys):
    host = f"tcp://127.0.0.1:{fakes.free_port()}"
    with pytest.raises(TransportError) as caught:
        connect(host).ping()
    assert str(caught.value) == f"connection refused by {host} (is the daemon listening there?)"

    code, out, err = run_cli(lambda: connect(host).ping(), capsys)
    assert code == 3
    assert assert_one_line(err) == f"cdtools fault: error: connection refused by {host} (is the daemon listening there?)"
    assert out == ""


def test_missing_unix_socket_says_so(tmp_path):
    sock = tmp_path / "nothing.sock"
    with pytest.raises(TransportError, match=f"no Docker daemon socket at {sock}"):
        connect(f"unix://{sock}").ping()


# -- reset mid-upload --------------------------------------------------------------------------------


def test_answer_before_upload_then_reset_reports_the_answer(capsys):
    """The daemon refuses the build before reading the context and closes: its 400 is the message."""
    handler = fakes.route({("POST", "/build"): fakes.reject_upload(
        400, "Bad Request", "Cannot locate specified Dockerfile: nope")})
    with fakes.RawDaemon(handler) as daemon:
        eng = connect(daemon.host)
        with pytest.raises(APIError) as caught:
            drain(eng.build(fakes.big_body(), dockerfile="nope"))
        code, _, err = run_cli(lambda: drain(connect(daemon.host).build(fakes.big_body(), dockerfile="nope")), capsys)
    assert not daemon.errors
    assert caught.value.status == 400
    assert caught.value.message.startswith("Cannot locate specified Dockerfile: nope")
    assert "closed the connection during the upload" in str(caught.value)
    assert code == 1
    assert assert_one_line(err).startswith("cdtools fault: error: daemon answered 400: Cannot locate specified Dockerfile")
    # the upload really was cut: far less than the 64 MiB body reached the daemon
    assert all(r.path in ("/_ping", "/build") for r in daemon.requests)


@pytest.mark.e2e
def test_real_daemon_refusing_a_build_mid_upload_is_reported():
    """The real thing: dockerd checks the tags before reading the context, answers, and hangs up
    on the rest of a 64 MiB upload; the user sees its answer, not a broken pipe."""
    eng = connect("unix:///var/run/docker.sock")
    with pytest.raises(APIError) as caught:
        drain(eng.build(fakes.big_body(), tags=["Bad:Tag:x"]))
    assert str(caught.value) == ("daemon answered 500: invalid reference format: repository name must be lowercase "
                                 "(the daemon closed the connection during the upload)")


def test_reset_mid_upload_without_an_answer_is_a_transport_error():
    def reset_at_once(req: fakes.Request, conn: fakes.Conn) -> None:
        conn.sock.recv(1, __import__("socket").MSG_PEEK)
        conn.reset()

    with fakes.RawDaemon(fakes.route({("POST", "/build"): reset_at_once})) as daemon:
        with pytest.raises(TransportError) as caught:
            drain(connect(daemon.host).build(fakes.big_body()))
    assert str(caught.value) in (
        f"the connection to {daemon.host} was reset",
        f"the daemon at {daemon.host} closed the connection without answering",
    )


# -- streams cut -------------------------------------------------------------------------------------


@pytest.mark.parametrize("then, expected", [
    ("reset", "the connection to {host} was reset"),
    ("close", "the connection to {host} broke in the middle of a response"),
])
def test_stream_cut_after_some_records(then, expected, capsys):
    records = fakes.recorded("build-ok").records()[:5]
    handler = fakes.route({("POST", "/build"): fakes.stream(records, then=then)})
    seen = []
    with fakes.RawDaemon(handler) as daemon:
        with pytest.raises(TransportError) as caught:
            for record in connect(daemon.host).build([tiny_context()]):
                seen.append(record)
        code, _, err = run_cli(lambda: drain(connect(daemon.host).build([tiny_context()])), capsys)
    # the records that did arrive were delivered before the failure
    assert [r["stream"] for r in seen] == [json.loads(r)["stream"] for r in records]
    assert str(caught.value) == expected.format(host=daemon.host)
    assert code == 3
    assert assert_one_line(err) == "cdtools fault: error: " + expected.format(host=daemon.host)


def test_truncated_json_record(capsys):
    records = fakes.recorded("build-ok").records()[:3]
    handler = fakes.route({("POST", "/build"): fakes.stream(records, then="truncate")})
    with fakes.RawDaemon(handler) as daemon:
        with pytest.raises(TransportError) as caught:
            drain(connect(daemon.host).build([tiny_context()]))
        code, _, err = run_cli(lambda: drain(connect(daemon.host).build([tiny_context()])), capsys)
    assert str(caught.value) == """the daemon's stream ended in the middle of a record: '{"stream":"Remov'"""
    assert code == 3
    assert assert_one_line(err).startswith("cdtools fault: error: the daemon's stream ended in the middle of a record")


def test_error_record_after_200_fails_even_when_more_follows():
    records = fakes.recorded("build-fail").records()
    handler = fakes.route({("POST", "/build"): fakes.stream(records + [b'{"stream":"never seen"}\r\n'])})
    with fakes.RawDaemon(handler) as daemon:
        with pytest.raises(StreamError) as caught:
            drain(connect(daemon.host).build([tiny_context()]))
    assert caught.value.message == "The command '/bin/sh -c exit 2' returned a non-zero code: 2"
    assert caught.value.code == 2


# -- streams that never end ----------------------------------------------------------------------------


def test_endless_stream_ends_at_the_step_timeout(capsys):
    with fakes.RawDaemon(fakes.route({("POST", "/build"): fakes.endless()})) as daemon:
        seen = []
        with pytest.raises(StreamTimeout) as caught:
            for record in connect(daemon.host, timeout=1.0).build([tiny_context()]):
                seen.append(record)
        code, _, err = run_cli(lambda: drain(connect(daemon.host, timeout=0.5).build([tiny_context()])), capsys)
    assert seen and all(r == {"stream": "still working\n"} for r in seen)
    assert str(caught.value) == f"no end from {daemon.host} within the step's --timeout"
    assert code == 3
    assert assert_one_line(err) == f"cdtools fault: error: no end from {daemon.host} within the step's --timeout"


def test_silent_stream_ends_at_the_step_timeout():
    """Headers, then nothing at all: the socket read itself must give up at the deadline."""
    handler = fakes.route({("POST", "/build"): fakes.stream([], then="hang")})
    with fakes.RawDaemon(handler) as daemon:
        with pytest.raises(StreamTimeout):
            drain(connect(daemon.host, timeout=0.5).build([tiny_context()]))


def test_daemon_that_never_answers_ends_at_the_step_timeout():
    def silent(req: fakes.Request, conn: fakes.Conn) -> None:
        fakes._wait_for_client_to_leave(conn)

    with fakes.RawDaemon(fakes.route({("GET", "/version"): silent})) as daemon:
        with pytest.raises(StreamTimeout, match="no answer from"):
            connect(daemon.host, timeout=0.5).version()


# -- error answers -------------------------------------------------------------------------------------


def test_500_answer_carries_the_daemons_message(capsys):
    handler = fakes.route({("POST", "/build"): fakes.replay("build-bad-dockerfile-name")})
    with fakes.RawDaemon(handler) as daemon:
        with pytest.raises(APIError) as caught:
            drain(connect(daemon.host).build([tiny_context()], dockerfile="nope"))
        code, _, err = run_cli(lambda: drain(connect(daemon.host).build([tiny_context()], dockerfile="nope")), capsys)
    assert caught.value.status == 500
    assert str(caught.value) == "daemon answered 500: Cannot locate specified Dockerfile: nope"
    assert code == 1
    assert assert_one_line(err) == "cdtools fault: error: daemon answered 500: Cannot locate specified Dockerfile: nope"


def test_500_with_plain_text_body():
    def plain(req: fakes.Request, conn: fakes.Conn) -> None:
        conn.answer(500, "Internal Server Error", b"runtime error: invalid memory address\n", "text/plain")

    with fakes.RawDaemon(fakes.route({("GET", "/version"): plain})) as daemon:
        with pytest.raises(APIError, match="^daemon answered 500: runtime error: invalid memory address$"):
            connect(daemon.host).version()


def test_disk_full_on_the_daemon_is_a_stream_error():
    records = fakes.recorded("build-ok").records()[:4] + [
        json.dumps({"errorDetail": {"message": "write /var/lib/docker/tmp/x: no space left on device"},
                    "error": "write /var/lib/docker/tmp/x: no space left on device"}).encode() + b"\r\n"]
    with fakes.RawDaemon(fakes.route({("POST", "/build"): fakes.stream(records)})) as daemon:
        with pytest.raises(StreamError) as caught:
            drain(connect(daemon.host).build([tiny_context()]))
    assert caught.value.message == "write /var/lib/docker/tmp/x: no space left on device"


def test_fake_replays_the_recorded_stream_faithfully():
    """The fakes are only worth something if a good stream decodes as the real one did."""
    with fakes.RawDaemon(fakes.route({("POST", "/build"): fakes.replay("build-ok")})) as daemon:
        got = drain(connect(daemon.host).build([tiny_context()]))
    assert got == fakes.recorded("build-ok").json_records()
    assert any(r.get("aux", {}).get("ID") for r in got)


# -- through a step's main: exit code and one line on stderr --------------------------------------------------

PUSH = ("POST", "/images/127.0.0.1:5000/cdfault/push")


def push_main(daemon: fakes.RawDaemon, monkeypatch: Any, capsys: Any, *extra: str) -> "tuple[int, str, str]":
    from cdtools import push

    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    code = push.main(["127.0.0.1:5000/cdfault:1", *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("then, expected", [
    ("reset", "the connection to {host} was reset"),
    ("close", "the connection to {host} broke in the middle of a response"),
    ("truncate", "the daemon's stream ended in the middle of a record: '{{\"stream\":\"Remov'"),
])
def test_push_stream_cut_fails_the_step(monkeypatch, capsys, then, expected):
    records = fakes.recorded("push-ok").records()[:4]
    with fakes.RawDaemon(fakes.route({PUSH: fakes.stream(records, then=then)})) as daemon:
        code, out, err = push_main(daemon, monkeypatch, capsys)
    assert code == 3
    line = assert_one_line(err)
    assert line == ("cdtools push: error: push of 127.0.0.1:5000/cdfault:1 to 127.0.0.1:5000: "
                    + expected.format(host=daemon.host))
    assert "pushed" not in out


def test_push_stream_that_never_ends_stops_at_timeout(monkeypatch, capsys):
    with fakes.RawDaemon(fakes.route({PUSH: fakes.endless(b'{"status":"Waiting","id":"ad2203f98667"}\r\n')})) as daemon:
        code, _, err = push_main(daemon, monkeypatch, capsys, "--timeout", "1")
    assert code == 3
    assert assert_one_line(err) == (f"cdtools push: error: push of 127.0.0.1:5000/cdfault:1 to 127.0.0.1:5000: "
                                    f"no end from {daemon.host} within the step's --timeout")


def test_push_500_fails_the_step(monkeypatch, capsys):
    handler = fakes.answer_json(500, "Internal Server Error", {"message": "write /var/lib/docker/x: no space left on device"})
    with fakes.RawDaemon(fakes.route({PUSH: handler})) as daemon:
        code, _, err = push_main(daemon, monkeypatch, capsys)
    assert code == 5
    assert assert_one_line(err) == ("cdtools push: error: push of 127.0.0.1:5000/cdfault:1 to 127.0.0.1:5000 "
                                    "refused (500): write /var/lib/docker/x: no space left on device")


def test_push_connection_refused_fails_the_step(monkeypatch, capsys):
    from cdtools import push

    host = f"tcp://127.0.0.1:{fakes.free_port()}"
    monkeypatch.setenv("DOCKER_HOST", host)
    code = push.main(["127.0.0.1:5000/cdfault:1"])
    out, err = capsys.readouterr()
    assert code == 3
    assert assert_one_line(err) == (f"cdtools push: error: push of 127.0.0.1:5000/cdfault:1 to 127.0.0.1:5000: "
                                    f"connection refused by {host} (is the daemon listening there?)")


def test_tag_on_a_daemon_that_resets_at_once(monkeypatch, capsys):
    from cdtools import tag

    def reset(req: fakes.Request, conn: fakes.Conn) -> None:
        conn.reset()

    with fakes.RawDaemon(fakes.route({("POST", "/images/busybox:latest/tag"): reset})) as daemon:
        monkeypatch.setenv("DOCKER_HOST", daemon.host)
        code = tag.main(["busybox:latest", "cdfault:1"])
    err = capsys.readouterr().err
    assert code == 3
    assert assert_one_line(err) in (f"cdtools tag: error: the connection to {daemon.host} was reset",
                                    f"cdtools tag: error: the daemon at {daemon.host} closed the connection without answering")


# -- through the build step --------------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY index.html /www/index.html\n")
    (tmp_path / "index.html").write_text("hello\n")
    return tmp_path


def build_main(daemon: fakes.RawDaemon, monkeypatch: Any, capsys: Any, app: Any, *extra: str) -> "tuple[int, str, str]":
    from cdtools import build

    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    code = build.main([str(app), "-t", "cdfault:1", *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("handler, code, expected", [
    # answered before the upload was read, then the daemon hung up on the rest
    (fakes.reject_upload(400, "Bad Request", "invalid reference format: repository name must be lowercase",
                         wait_for_body=False),
     4, "build refused by the daemon (400): invalid reference format: repository name must be lowercase"),
    (fakes.replay("build-bad-dockerfile-name"), 4,
     "build refused by the daemon (500): Cannot locate specified Dockerfile: nope"),
    (fakes.stream(fakes.recorded("build-ok").records()[:6] + [
        b'{"errorDetail":{"message":"failed to copy files: write /var/lib/docker/overlay2/x/diff/www/index.html: '
        b'no space left on device"},"error":"failed to copy files: write /var/lib/docker/overlay2/x/diff/www/'
        b'index.html: no space left on device"}\r\n']),
     4, "build failed: failed to copy files: write /var/lib/docker/overlay2/x/diff/www/index.html: "
        "no space left on device"),
    (fakes.stream(fakes.recorded("build-ok").records()[:6], then="reset"), 3, "the connection to {host} was reset"),
    (fakes.stream(fakes.recorded("build-ok").records()[:6], then="close"), 3,
     "the connection to {host} broke in the middle of a response"),
    (fakes.stream(fakes.recorded("build-ok").records()[:6], then="truncate"), 3,
     "the daemon's stream ended in the middle of a record: '{{\"stream\":\"Remov'"),
], ids=["answer-then-reset-mid-upload", "500", "disk-full", "reset-mid-stream", "closed-mid-stream", "truncated-json"])
def test_build_step_faults(app, monkeypatch, capsys, handler, code, expected):
    with fakes.RawDaemon(fakes.route({("POST", "/build"): handler})) as daemon:
        got, out, err = build_main(daemon, monkeypatch, capsys, app)
    assert not daemon.errors
    assert got == code
    line = assert_one_line(err)
    # a context this small may be sent whole before the hang-up: then the note is not added
    upload = " (the daemon closed the connection during the upload)"
    if line.endswith(upload):
        line = line[: -len(upload)]
    assert line == "cdtools build: error: " + expected.format(host=daemon.host)
    assert "built sha256" not in out


def test_build_step_stream_that_never_ends_stops_at_timeout(app, monkeypatch, capsys):
    with fakes.RawDaemon(fakes.route({("POST", "/build"): fakes.endless()})) as daemon:
        code, out, err = build_main(daemon, monkeypatch, capsys, app, "--timeout", "1")
    assert code == 3
    assert assert_one_line(err) == f"cdtools build: error: no end from {daemon.host} within the step's --timeout"
    assert "still working" in out  # what did arrive was shown as it came


def test_build_step_connection_refused(app, monkeypatch, capsys):
    from cdtools import build

    host = f"tcp://127.0.0.1:{fakes.free_port()}"
    monkeypatch.setenv("DOCKER_HOST", host)
    code = build.main([str(app), "-t", "cdfault:1"])
    err = capsys.readouterr().err
    assert code == 3
    assert assert_one_line(err) == f"cdtools build: error: connection refused by {host} (is the daemon listening there?)"
