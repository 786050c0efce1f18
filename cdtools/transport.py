"""Connections to a Docker daemon: unix socket, tcp, TLS and ssh, on ``http.client``.

This is the one place where ``OSError``, ``ssl.SSLError`` and
``http.client.HTTPException`` become :class:`~cdtools.errors.TransportError`.
The engine client above it only builds requests and reads responses.

A transport opens one connection per request: over a unix socket that costs
nothing measurable, and it keeps a long build stream from tying up a
connection that a later call would want.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from .errors import StreamTimeout, TransportError, UsageError, api_error

Body = Union[None, bytes, Iterable[bytes]]

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon is, parsed from DOCKER_HOST / -H."""

    scheme: str  # "unix", "tcp", "ssh"
    address: str  # socket path, "host:port" or ssh destination
    tls: bool = False
    tls_verify: bool = False
    cert_path: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.address}"
        if self.scheme == "ssh":
            return f"ssh://{self.address}"
        return f"{'https' if self.tls else 'tcp'}://{self.address}"

    @property
    def is_local(self) -> bool:
        """A unix socket: compressing the context would only cost CPU."""
        return self.scheme == "unix"


def parse_host(url: str, *, tls: bool = False, tls_verify: bool = False, cert_path: str = "") -> Endpoint:
    """Parse DOCKER_HOST the way the docker CLI does.

    As there, ``host:port`` with no scheme means tcp, and an empty host means
    localhost.  A missing port is 2375, or 2376 with TLS (the docker CLI says
    2375 either way; 2376 is the port every TLS daemon is set up on).
    """
    if "://" not in url:
        if not url or url.startswith("/"):
            raise UsageError(f"DOCKER_HOST/-H {url!r}: expected unix:///path, tcp://host:port or ssh://user@host")
        url = "tcp://" + url
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"DOCKER_HOST {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "unix":
        path = parts.path or "/var/run/docker.sock"
        return Endpoint("unix", path)
    if scheme in ("tcp", "http", "https"):
        use_tls = tls or tls_verify or scheme == "https"
        if parts.path not in ("", "/"):
            raise UsageError(f"DOCKER_HOST/-H {url!r}: a tcp address has no path")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"DOCKER_HOST/-H {url!r}: bad port") from None
        port = port or (2376 if use_tls else 2375)
        host = parts.hostname or "localhost"
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return Endpoint("tcp", f"{host}:{port}", tls=use_tls, tls_verify=tls_verify, cert_path=cert_path)
    if scheme == "ssh":
        if not parts.hostname:
            raise UsageError(f"DOCKER_HOST/-H {url!r}: no host name")
        if parts.path not in ("", "/") or parts.query:
            raise UsageError(f"DOCKER_HOST/-H {url!r}: an ssh address has no path (ssh://[user@]host[:port])")
        return Endpoint("ssh", parts.netloc)
    raise UsageError(f"DOCKER_HOST/-H {url!r}: unsupported scheme {scheme!r} (unix, tcp or ssh)")


class _BodyFailed(Exception):
    """Carries an exception raised by the request body's own iterator (not the network)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _guard_body(body: Iterable[bytes]) -> Iterator[bytes]:
    # The body generator reads files; its errors are the user's, not the network's,
    # and must reach the caller unchanged.
    try:
        for chunk in body:
            yield chunk
    except Exception as exc:  # noqa: BLE001 - re-raised unchanged by Transport.request
        raise _BodyFailed(exc) from exc


def _describe(exc: BaseException, endpoint: Endpoint, *, client_cert: bool = False,
              before_answer: bool = False) -> str:
    """One line saying what went wrong with the connection, for a user.

    ``before_answer``: nothing has been answered on this daemon yet.  Over TLS 1.3
    that is where a daemon's verdict on the client certificate lands: the
    client's side of the handshake is over before the daemon checks the cert,
    and a reset can swallow the alert saying why.  Once the daemon has answered
    anything, the certificate is not what went wrong.
    """
    where = str(endpoint)
    certs = endpoint.cert_path or "DOCKER_CERT_PATH"
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = str(exc)
        if getattr(exc, "verify_code", None) in (62, 64) or "mismatch" in text.lower():
            return (f"TLS: the daemon's certificate does not match the host name in {where} "
                    f"({exc.verify_message}); use a name or address the certificate lists")
        if getattr(exc, "verify_code", None) in (9, 10):  # not yet valid, expired
            return f"TLS: the daemon's certificate is not valid now ({exc.verify_message}); check its dates and the clock"
        return f"TLS: the daemon's certificate is not trusted by the CA in {certs}/ca.pem ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        text = str(exc).upper()
        if any(alert in text for alert in ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA",
                                            "CERTIFICATE_UNKNOWN")):
            return _client_cert_refused(where, certs, client_cert, certain=True)
        if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text:
            return f"TLS: {where} does not speak TLS (try without DOCKER_TLS_VERIFY / DOCKER_TLS)"
        return f"TLS error talking to {where}: {exc.reason or exc}"
    if endpoint.tls and before_answer and isinstance(
            exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        # The alert was lost in the reset; the daemon hung up right after the handshake.
        return _client_cert_refused(where, certs, client_cert, certain=False)
    if isinstance(exc, FileNotFoundError) and endpoint.scheme == "unix":
        return f"no Docker daemon socket at {endpoint.address} (is dockerd running? set DOCKER_HOST or -H)"
    if isinstance(exc, PermissionError) and endpoint.scheme == "unix":
        return f"permission denied on {endpoint.address} (is this user in the docker group?)"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where} (is the daemon listening there?)"
    if isinstance(exc, socket.timeout):
        return f"timed out talking to {where}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host in {where}: {exc.strerror}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return f"the daemon at {where} closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the connection to {where} broke in the middle of a response"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)):
        return f"the connection to {where} was reset"
    if isinstance(exc, OSError):
        return f"cannot talk to {where}: {exc.strerror or exc}"
    return f"bad HTTP from {where}: {exc.__class__.__name__} {exc}"


def _client_cert_refused(where: str, certs: str, client_cert: bool, *, certain: bool) -> str:
    if not client_cert:
        verdict = "requires a client certificate" if certain else "closed the connection: it probably requires a client certificate"
        return f"TLS: the daemon at {where} {verdict}, and there is no cert.pem/key.pem in {certs}"
    verdict = "rejected" if certain else "closed the connection: it probably rejected"
    return f"TLS: the daemon at {where} {verdict} the client certificate {certs}/cert.pem (not signed by a CA it trusts?)"


def _connect_timeout(timeout: Optional[float]) -> float:
    return CONNECT_TIMEOUT if timeout is None else min(CONNECT_TIMEOUT, timeout)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_connect_timeout(self.timeout))
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.timeout)
        self.sock = sock


class _TCPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), _connect_timeout(self.timeout))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.timeout)


class _TLSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), _connect_timeout(self.timeout))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise
        self.sock.settimeout(self.timeout)


class _SSHConnection(http.client.HTTPConnection):
    """HTTP over ``ssh … -- HOST docker system dial-stdio``, as the docker CLI does.

    ssh reads the user's ~/.ssh/config (keys, known_hosts, ProxyJump…) as usual;
    ``BatchMode=yes`` because a CI job has nobody to type a password, and a
    prompt would hang the step instead of failing it.  The remote ``docker`` is
    whichever the remote PATH finds first: ``dial-stdio`` only pipes bytes to the
    remote daemon's socket, so any CLI since 18.09 serves.
    """

    def __init__(self, destination: str, ssh_path: str, options: Sequence[str], timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._destination = destination
        self._ssh_path = ssh_path
        self._options = list(options)
        self._proc: Optional["subprocess.Popen[bytes]"] = None
        self._stderr: Optional[IO[bytes]] = None
        #: set by close(): ssh's exit status (None while running or when it had to be killed) and stderr
        self.returncode: Optional[int] = None
        self.stderr_text = ""

    def argv(self) -> List[str]:
        parts = urlsplit(f"ssh://{self._destination}")
        argv = [self._ssh_path or "ssh", "-T", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={math.ceil(_connect_timeout(self.timeout))}", *self._options]
        if parts.username:
            argv += ["-l", parts.username]
        if parts.port:
            argv += ["-p", str(parts.port)]
        return argv + ["--", parts.hostname or "", "docker", "system", "dial-stdio"]

    def connect(self) -> None:
        ours, theirs = socket.socketpair()
        # a file, not a pipe: nobody reads ssh's stderr while the request runs,
        # and a full pipe would stall ssh
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(self.argv(), stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=self._stderr,
                                          close_fds=True)
        except FileNotFoundError:
            ours.close()
            raise TransportError(f"cannot reach ssh://{self._destination}: no {self._ssh_path or 'ssh'} "
                                 f"program on PATH (install an OpenSSH client)") from None
        finally:
            theirs.close()
        ours.settimeout(self.timeout)
        self.sock = ours

    def diagnosis(self) -> str:
        """ssh's exit status and the last line it wrote on stderr (after :meth:`close`)."""
        if self.returncode is None or self.returncode == 0 and not self.stderr_text:
            return ""
        lines = [line.strip() for line in self.stderr_text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("Warning: Permanently added")]
        last = lines[-1] if lines else ""
        return f"ssh exited with {self.returncode}" + (f": {last}" if last else "")

    def close(self) -> None:
        super().close()  # ssh sees EOF on its stdin and ends
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                self.returncode = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()  # ours to end: it outlived its connection; its status means nothing
                proc.wait()
        if self._stderr is not None:
            self._stderr.seek(0)
            self.stderr_text = self._stderr.read(65536).decode("utf-8", "replace")
            self._stderr.close()
            self._stderr = None


def _explain(exc: BaseException, conn: http.client.HTTPConnection, endpoint: Endpoint, *,
             client_cert: bool, before_answer: bool) -> str:
    text = _describe(exc, endpoint, client_cert=client_cert, before_answer=before_answer)
    if isinstance(conn, _SSHConnection):
        conn.close()  # lets ssh finish, so that its exit status and last words are known
        why = conn.diagnosis()
        if why:
            # what ssh said is the useful part: auth refused, host down, no docker there
            return f"cannot talk to the daemon over {endpoint}: {why}"
    return text


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """The client TLS context from DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)."""
    ca = os.path.join(endpoint.cert_path, "ca.pem")
    cert = os.path.join(endpoint.cert_path, "cert.pem")
    key = os.path.join(endpoint.cert_path, "key.pem")
    if endpoint.tls_verify:
        if not os.path.isfile(ca):
            raise UsageError(f"DOCKER_TLS_VERIFY is set but {ca} does not exist (set DOCKER_CERT_PATH)")
        try:
            ctx = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"TLS: cannot read the CA certificate {ca}: {exc}") from None
        # Python 3.13 turns on strict X.509 checks that Go (dockerd, the docker CLI)
        # does not make; certificates made by the docs' openssl recipe fail them.
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if os.path.isfile(cert) and os.path.isfile(key):
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"TLS: cannot load the client certificate {cert} / {key}: {exc}") from None
    elif os.path.exists(cert) != os.path.exists(key):
        raise UsageError(f"TLS: {cert} and {key} must both exist")
    return ctx


class Response:
    """A response whose reads turn network failures into TransportError."""

    def __init__(self, raw: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 endpoint: Endpoint, deadline: Optional[float], client_cert: bool = False) -> None:
        self._raw = raw
        self._conn = conn
        self._endpoint = endpoint
        self._deadline = deadline
        self._client_cert = client_cert
        self.status: int = raw.status
        self.reason: str = raw.reason

    def header(self, name: str) -> Optional[str]:
        return self._raw.getheader(name)

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise StreamTimeout(f"no end from {self._endpoint} within the step's --timeout")

    def _failed(self, exc: BaseException) -> TransportError:
        return TransportError(_explain(exc, self._conn, self._endpoint, client_cert=self._client_cert,
                                       before_answer=False))

    def read(self) -> bytes:
        """The whole body."""
        try:
            return self._raw.read()
        except socket.timeout:
            self._check_deadline()
            raise self._failed(socket.timeout()) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._failed(exc) from exc
        finally:
            self.close()

    def iter_chunks(self, size: int = 65536) -> Iterator[bytes]:
        """The body as it arrives; ends when the daemon ends the response."""
        try:
            while True:
                self._check_deadline()
                try:
                    chunk = self._raw.read1(size)
                except socket.timeout:
                    self._check_deadline()
                    raise
                if not chunk:
                    return
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise self._failed(exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        self._raw.close()
        self._conn.close()


class Transport:
    """Sends one HTTP request to the daemon and returns its :class:`Response`.

    ``timeout`` is the whole step's deadline (``--timeout``), counted from now;
    None lets streams run as long as the daemon keeps them going.
    ``ssh_options`` are extra ``ssh`` arguments (say ``["-F", "ssh_config"]``) for
    callers that can't rely on ~/.ssh/config.
    """

    def __init__(self, endpoint: Endpoint, *, ssh_path: str = "ssh", ssh_options: Sequence[str] = (),
                 timeout: Optional[float] = None) -> None:
        self.endpoint = endpoint
        self._ssh_path = ssh_path
        self._ssh_options = tuple(ssh_options)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._tls: Optional[ssl.SSLContext] = tls_context(endpoint) if endpoint.tls else None
        self._client_cert = self._tls is not None and _has_client_cert(endpoint)
        #: the daemon has answered a request: a later hang-up is not about the TLS handshake
        self._answered = False

    def _remaining(self) -> Optional[float]:
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise StreamTimeout(f"no end from {self.endpoint} within the step's --timeout")
        return left

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        ep = self.endpoint
        if ep.scheme == "unix":
            return _UnixConnection(ep.address, timeout)
        if ep.scheme == "ssh":
            return _SSHConnection(ep.address, self._ssh_path, self._ssh_options, timeout)
        host, _, port = ep.address.rpartition(":")
        host = host.strip("[]")
        if self._tls is not None:
            return _TLSConnection(host, int(port), timeout=timeout, context=self._tls)
        return _TCPConnection(host, int(port), timeout=timeout)

    def request(self, method: str, path: str, *, headers: Optional[Mapping[str, str]] = None,
                body: Body = None, read_timeout: Optional[float] = None) -> Response:
        """Send a request; ``body`` may be an iterable of chunks (sent chunked)."""
        remaining = self._remaining()
        timeout = read_timeout if remaining is None else min(x for x in (read_timeout, remaining) if x is not None)
        conn = self._connection(timeout)
        hdrs = dict(headers or {})
        send_body: Body = body
        if body is not None and not isinstance(body, (bytes, bytearray)):
            send_body = _guard_body(body)
        try:
            try:
                conn.request(method, path, body=send_body, headers=hdrs)
            except _BodyFailed as failed:
                conn.close()
                raise failed.original from None
            except (OSError, http.client.HTTPException) as exc:
                # The daemon may have answered (say, 400) and closed before reading the
                # whole upload; that answer is the useful message.  Over TLS the
                # answer may instead be an alert saying why it hung up.
                early, read_error = self._early_answer(conn)
                if early is not None:
                    conn.close()
                    status, message = early
                    raise api_error(status, f"{message} (the daemon closed the connection during the upload)",
                                    method=method, path=path) from None
                if isinstance(read_error, ssl.SSLError) and not isinstance(read_error, ssl.SSLEOFError):
                    exc = read_error
                raise exc
            raw = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, socket.timeout) and self._past_deadline():
                conn.close()
                raise StreamTimeout(f"no answer from {self.endpoint} within the step's --timeout") from None
            message = _explain(exc, conn, self.endpoint, client_cert=self._client_cert,
                               before_answer=not self._answered)
            conn.close()
            raise TransportError(message) from exc
        except BaseException:
            conn.close()
            raise
        self._answered = True
        return Response(raw, conn, self.endpoint, self._deadline, self._client_cert)

    @staticmethod
    def _early_answer(conn: http.client.HTTPConnection) -> Tuple[Optional[Tuple[int, str]], Optional[BaseException]]:
        """An answer already sent when the upload failed, or what reading it raised."""
        try:
            if conn.sock is not None:
                conn.sock.settimeout(2.0)
            raw = conn.getresponse()
            body = raw.read(4096)
        except Exception as exc:  # noqa: BLE001 - best effort: there may be no answer at all
            return None, exc
        return (raw.status, error_message(body)), None


def _has_client_cert(endpoint: Endpoint) -> bool:
    return os.path.isfile(os.path.join(endpoint.cert_path, "cert.pem"))


TransportFactory = Callable[[Endpoint], Transport]


def error_message(body: bytes) -> str:
    """The daemon's reason from an error body: Docker's ``{"message"}``, Podman's
    ``{"cause","message","response"}``, a progress stream's last error (Podman answers
    some failed pushes with an error status and a stream body), or plain text (old API
    versions)."""

    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return _stream_error(text) or text or "(no message)"
    if isinstance(doc, dict):
        detail = doc.get("errorDetail")
        if isinstance(detail, dict) and isinstance(detail.get("message"), str) and detail["message"]:
            return str(detail["message"])
        for key in ("message", "error", "cause"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return value
    return text


def _stream_error(text: str) -> str:
    """The last error of a body that is a progress stream (JSON records, one a line); '' if none."""
    found = ""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            return ""  # not a stream: plain text
        if isinstance(record, dict):
            detail = record.get("errorDetail")
            if isinstance(detail, dict) and isinstance(detail.get("message"), str) and detail["message"]:
                found = detail["message"]
            elif isinstance(record.get("error"), str) and record["error"]:
                found = record["error"]
            elif isinstance(record.get("message"), str) and record["message"]:
                found = record["message"]
    return found
