"""Fake Docker daemons for what a real engine cannot be made to do on demand.

Two tools, both built from the real responses recorded in ``tests/data/engine-1.41``:

* :func:`engine_model` turns a pytest-httpserver into an engine of any API
  version: ``/_ping`` advertises it (or not), and every ``/vX.Y`` request outside
  ``[min_api, api]`` is answered 400 the way a real daemon answers it
  (Engine 29.0: API 1.52, minimum 1.44, so ``/v1.41`` gets a 400).
* :class:`RawDaemon` is a tiny HTTP/1.1 server on a raw socket, for faults
  that an HTTP server library will not produce: an answer sent before the
  upload was read followed by a reset, a connection reset or closed mid-stream,
  a stream cut inside a JSON record, a stream that never ends.

A handler gets the parsed :class:`Request` and a :class:`Conn` and writes
whatever bytes it likes; :func:`route` maps ``(METHOD, path)`` to handlers with
the ``/vX.Y`` prefix stripped, and answers ``/_ping`` by itself.
"""
from __future__ import annotations

import array
import fcntl
import json
import re
import socket
import ssl
import struct
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

DATA = Path(__file__).parent / "data" / "engine-1.41"


# -- recorded responses ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One response recorded from the real daemon (NAME.headers + NAME.body)."""

    status: int
    reason: str
    headers: Tuple[Tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def chunked(self) -> bool:
        return (self.header("Transfer-Encoding") or "").lower() == "chunked"

    def records(self) -> List[bytes]:
        """A recorded stream's records, each with its line ending, as the daemon sent them."""
        return [line for line in self.body.splitlines(keepends=True) if line.strip()]

    def json_records(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.records()]


def recorded(name: str) -> Recorded:
    head = (DATA / f"{name}.headers").read_bytes().decode("latin-1")
    body_file = DATA / f"{name}.body"
    body = body_file.read_bytes() if body_file.exists() else b""
    lines = [line for line in head.split("\r\n") if line]
    _, status, reason = lines[0].split(" ", 2)
    headers = tuple(tuple(line.split(": ", 1)) for line in lines[1:])
    return Recorded(int(status), reason, headers, body)  # type: ignore[arg-type]


# -- engine versions on pytest-httpserver -------------------------------------------------------------

_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")


def _vt(version: str) -> Tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


@dataclass
class EngineModel:
    """What one engine version answers; see :func:`engine_model`."""

    api: Optional[str]
    min_api: str
    #: False: /_ping carries no Api-Version header (daemons before API 1.25)
    advertise: bool = True
    #: unversioned path -> JSON document answered with 200
    documents: Dict[str, Any] = field(default_factory=dict)
    #: every versioned path the client asked for, in order
    paths: List[str] = field(default_factory=list)

    def __call__(self, request: Any) -> Any:
        from werkzeug import Response

        if request.path == "/_ping":
            headers = {"Api-Version": self.api} if self.api and self.advertise else {}
            return Response("OK", status=200, headers=headers, content_type="text/plain; charset=utf-8")
        m = _VERSIONED.match(request.path)
        rest = request.path
        if m:
            self.paths.append(request.path)
            asked = (int(m.group(1)), int(m.group(2)))
            rest = m.group(3)
            asked_text = f"{asked[0]}.{asked[1]}"
            if asked < _vt(self.min_api):
                text = (f"client version {asked_text} is too old. Minimum supported API version is "
                        f"{self.min_api}, please upgrade your client to a newer version")
                if self.api is not None and _vt(self.api) <= (1, 41):
                    # 20.10 answers "too old" in plain text (see version-too-old.body)
                    return Response(text + "\n", status=400, content_type="text/plain; charset=utf-8")
                return Response(json.dumps({"message": text}) + "\n", status=400, content_type="application/json")
            if self.api and asked > _vt(self.api):
                return Response(json.dumps({"message": f"client version {asked_text} is too new. "
                                                       f"Maximum supported API version is {self.api}"}) + "\n",
                                status=400, content_type="application/json")
        if rest in self.documents:
            return Response(json.dumps(self.documents[rest]) + "\n", status=200, content_type="application/json")
        return Response(json.dumps({"message": f"page not found: {rest}"}) + "\n", status=404,
                        content_type="application/json")


def engine_model(httpserver: Any, api: Optional[str], *, min_api: str = "1.12", advertise: bool = True,
                 version_doc: Optional[Dict[str, Any]] = None) -> EngineModel:
    """Make ``httpserver`` answer like an engine speaking ``api`` (minimum ``min_api``).

    ``advertise=False`` (or ``api=None``) models a daemon whose ``/_ping`` has no
    ``Api-Version`` header; ``/version`` then tells (``version_doc``, by default
    the recorded 1.41 document with ``ApiVersion`` replaced).
    """
    doc = version_doc
    if doc is None:
        doc = json.loads(recorded("version").body)
        if api:
            doc["ApiVersion"] = api
        doc["MinAPIVersion"] = min_api
    model = EngineModel(api=api, min_api=min_api, documents={"/version": doc}, advertise=advertise)
    httpserver.expect_request(re.compile(".*")).respond_with_handler(model)
    return model


# -- raw-socket daemon ----------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: Dict[str, str]

    @property
    def path(self) -> str:
        """The path without the query and without the /vX.Y prefix."""
        path = self.target.split("?", 1)[0]
        m = _VERSIONED.match(path)
        return m.group(3) if m else path

    @property
    def version_prefix(self) -> Optional[str]:
        m = _VERSIONED.match(self.target)
        return f"{m.group(1)}.{m.group(2)}" if m else None


class Conn:
    """The server side of one connection, with helpers to write HTTP by hand."""

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self._rest = rest  # bytes read past the request head
        self.body_bytes_read = 0

    # reading
    def recv_some(self, n: int = 65536) -> bytes:
        if self._rest:
            data, self._rest = self._rest[:n], self._rest[n:]
        else:
            data = self.sock.recv(n)
        self.body_bytes_read += len(data)
        return data

    def drain(self) -> int:
        """Read until the client stops sending (EOF or the end of a chunked body)."""
        total = 0
        tail = b""
        while True:
            data = self.recv_some()
            if not data:
                return total
            total += len(data)
            tail = (tail + data)[-7:]
            if tail.endswith(b"\r\n0\r\n\r\n") or tail == b"0\r\n\r\n":
                return total

    # writing
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self, status: int, reason: str, headers: Iterable[Tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def answer(self, status: int, reason: str, body: bytes, content_type: str = "application/json",
               extra: Iterable[Tuple[str, str]] = ()) -> None:
        self.head(status, reason, [("Api-Version", "1.41"), ("Content-Type", content_type),
                                   ("Content-Length", str(len(body))), *extra])
        self.send(body)

    def stream_head(self) -> None:
        """The head of a 200 progress stream, as the recorded build/push streams start."""
        self.head(200, "OK", [("Api-Version", "1.41"), ("Content-Type", "application/json"),
                              ("Transfer-Encoding", "chunked")])

    def chunk(self, data: bytes) -> None:
        if data:
            self.send(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunks(self) -> None:
        self.send(b"0\r\n\r\n")

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN (SO_LINGER 0), once what was sent has arrived.

        An RST throws away whatever still waits in the send queue; waiting for
        it to drain makes the cut land exactly after the bytes the test sent.
        """
        self.flush()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def flush(self, cap: float = 5.0) -> None:
        """Wait until the peer's kernel has acknowledged everything sent (TIOCOUTQ is 0)."""
        if self.sock.family != socket.AF_INET:
            return
        stop = time.monotonic() + cap
        buf = array.array("i", [0])
        while time.monotonic() < stop:
            fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, buf, True)
            if buf[0] == 0:
                return
            time.sleep(0.005)

    def hang_up_unread(self, delay: float = 0.2) -> None:
        """What Go's net/http does after answering a request whose body it did not read:
        a FIN, a short wait for the client to read the answer (its rstAvoidanceDelay),
        then close — which, with the upload still unread, the kernel turns into an RST."""
        self.flush()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        time.sleep(delay)
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


Handler = Callable[[Request, Conn], None]


def ping(api: Optional[str] = "1.41") -> Handler:
    """``/_ping`` as recorded, advertising ``api`` (None: no Api-Version header)."""
    rec = recorded("ping")

    def handle(req: Request, conn: Conn) -> None:
        headers = [(k, v) for k, v in rec.headers if k.lower() != "api-version" or api is not None]
        headers = [(k, (api if k.lower() == "api-version" else v)) for k, v in headers]  # type: ignore[misc]
        conn.head(rec.status, rec.reason, headers)
        conn.send(rec.body)
    return handle


def replay(name: str, *, read_body: bool = True) -> Handler:
    """Answer exactly what the real daemon answered (streams re-chunked record by record)."""
    rec = recorded(name)

    def handle(req: Request, conn: Conn) -> None:
        if read_body:
            _read_request_body(req, conn)
        conn.head(rec.status, rec.reason, rec.headers)
        if rec.chunked:
            for record in rec.records():
                conn.chunk(record)
            conn.end_chunks()
        else:
            conn.send(rec.body)
    return handle


def answer_json(status: int, reason: str, doc: Any, *, read_body: bool = True) -> Handler:
    def handle(req: Request, conn: Conn) -> None:
        if read_body:
            _read_request_body(req, conn)
        conn.answer(status, reason, (json.dumps(doc) + "\n").encode())
    return handle


def reject_upload(status: int, reason: str, message: str, *, wait_for_body: bool = True) -> Handler:
    """Answer before reading the upload, then hang up with it unread (the kernel resets).

    This is what dockerd does when it refuses a build early (a bad tag): the
    client is still sending the context when the connection goes away, and the
    only useful thing left is the answer already in its receive buffer.
    """

    def handle(req: Request, conn: Conn) -> None:
        if wait_for_body:
            # make sure the client is mid-upload, so the close is a reset and not a polite FIN
            conn.recv_some(1)
        conn.answer(status, reason, (json.dumps({"message": message}) + "\n").encode())
        conn.hang_up_unread()
    return handle


def stream(records: Iterable[bytes], *, then: str = "end", read_body: bool = True) -> Handler:
    """A 200 progress stream of ``records``, then:

    ``end`` — the proper end; ``reset`` — a TCP reset; ``close`` — a FIN with no
    final chunk; ``truncate`` — half of one more record, then the proper end;
    ``hang`` — nothing more, the connection kept open (until the client leaves).
    """

    def handle(req: Request, conn: Conn) -> None:
        if read_body:
            _read_request_body(req, conn)
        conn.stream_head()
        for record in records:
            conn.chunk(record)
        if then == "end":
            conn.end_chunks()
        elif then == "reset":
            conn.reset()
        elif then == "close":
            conn.close()
        elif then == "truncate":
            conn.chunk(b'{"stream":"Step 3/3 : COPY f /f"}\r\n{"stream":"Remov')
            conn.end_chunks()
        elif then == "hang":
            _wait_for_client_to_leave(conn)
        else:
            raise ValueError(then)
    return handle


def endless(record: bytes = b'{"stream":"still working\\n"}\r\n', *, every: float = 0.1,
            cap: float = 60.0) -> Handler:
    """A stream that never ends: one record every ``every`` seconds.

    ``cap`` only keeps a broken client from holding a test forever; a test that
    sees the stream end normally has failed.
    """

    def handle(req: Request, conn: Conn) -> None:
        _read_request_body(req, conn)
        conn.stream_head()
        stop = time.monotonic() + cap
        try:
            while time.monotonic() < stop:
                conn.chunk(record)
                time.sleep(every)
        except OSError:
            return  # the client gave up: that is the point
        conn.end_chunks()
    return handle


def _wait_for_client_to_leave(conn: Conn, cap: float = 60.0) -> None:
    conn.sock.settimeout(cap)
    try:
        while conn.sock.recv(65536):
            pass
    except OSError:
        pass


def _read_request_body(req: Request, conn: Conn) -> None:
    length = req.headers.get("content-length")
    if length is not None:
        left = int(length) - len(conn._rest)
        conn.body_bytes_read += len(conn._rest)
        conn._rest = b""
        while left > 0:
            data = conn.sock.recv(min(left, 65536))
            if not data:
                return
            conn.body_bytes_read += len(data)
            left -= len(data)
    elif req.headers.get("transfer-encoding", "").lower() == "chunked":
        conn.drain()


def route(routes: Mapping[Tuple[str, str], Handler], *, api: Optional[str] = "1.41") -> Handler:
    """Dispatch on ``(METHOD, path)`` (``/vX.Y`` stripped); ``/_ping`` answered with ``api``."""
    ping_handler = ping(api)

    def handle(req: Request, conn: Conn) -> None:
        handler = routes.get((req.method, req.path))
        if handler is None and req.path == "/_ping":
            handler = ping_handler
        if handler is None:
            answer_json(404, "Not Found", {"message": f"page not found: {req.method} {req.path}"})(req, conn)
            return
        handler(req, conn)
    return handle


class RawDaemon:
    """A fake daemon on 127.0.0.1:<free port>; one thread per connection.

    ``with RawDaemon(handler) as d:`` … ``d.host`` is the DOCKER_HOST to use
    (``unix_path=`` serves a unix socket instead; ``tls=`` a server SSLContext wraps
    every connection);
    ``d.requests`` lists every request head it read.
    """

    def __init__(self, handler: Handler, *, unix_path: Optional[str] = None,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: List[Request] = []
        self.errors: List[BaseException] = []
        self.unix_path = unix_path
        if unix_path is not None:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(unix_path)
            self.port = 0
        else:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(("127.0.0.1", 0))
            self.port = int(self._listener.getsockname()[1])
        self._listener.listen(16)
        self._threads: List[threading.Thread] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def host(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def shown(self) -> str:
        """The address as cdtools names it in messages (https:// when TLS)."""
        return self.host.replace("tcp://", "https://") if self.tls is not None else self.host

    def __enter__(self) -> "RawDaemon":
        self._acceptor.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closed = True
        try:
            # shutdown() wakes the thread blocked in accept()
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._acceptor.join(5)
        for t in self._threads:
            t.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            if self._closed:
                sock.close()
                return
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(60)
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's servers do
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    sock.close()
                    return
                buf += data
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            req = Request(method, target, headers)
            self.requests.append(req)
            conn = Conn(sock, rest)
            self.handler(req, conn)
        except OSError:
            pass  # the client went away; what the client saw is what the test checks
        except BaseException as exc:  # a broken handler must fail the test, not vanish in a thread
            self.errors.append(exc)
        finally:
            try:
                sock.close()
            except OSError:
                pass


def json_response(doc: Any, status: int = 200) -> Any:
    """A daemon's JSON answer, as a werkzeug response (pytest-httpserver handlers)."""
    from werkzeug import Response

    return Response(json.dumps(doc) + "\n", status=status, content_type="application/json")


class HandlerDaemon:
    """Base of the fake daemons that pytest-httpserver calls for every request.

    It answers ``/_ping`` (API 1.41), records ``(method, path)`` without the ``/vX.Y``
    prefix in ``calls``, and hands the request and that path to :meth:`handle`.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[str, str]] = []

    def __call__(self, request: Any) -> Any:
        from werkzeug import Response

        if request.path == "/_ping":
            return Response("OK", headers={"Api-Version": "1.41"}, content_type="text/plain")
        path = _VERSIONED.match(request.path).group(3)  # type: ignore[union-attr]
        self.calls.append((request.method, path))
        return self.handle(request, path)

    def handle(self, request: Any, path: str) -> Any:
        raise NotImplementedError


def free_port() -> int:
    """A port nothing listens on right now (for 'connection refused')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def big_body(total: int = 64 * 1024 * 1024, chunk: int = 64 * 1024) -> Iterable[bytes]:
    """A lazily made upload larger than any socket buffer (so the sender is mid-upload)."""
    block = b"\0" * chunk
    sent = 0
    while sent < total:
        yield block
        sent += chunk
