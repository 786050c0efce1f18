"""Session fixtures for every cdtools test: the real test bed and a clean environment.

End-to-end tests carry ``@pytest.mark.e2e`` and run against the stack that
``scripts/local-stack up`` brings up: a Docker Engine on a unix socket, an offline
``busybox:latest``, and a registry with htpasswd auth on ``127.0.0.1:5000``.

Fixtures:

* ``engine_available`` (session): the stack answers; started by ``local-stack up``
  if it did not, and then stopped again (only what this session started) at the end.
  An e2e test needs it implicitly. When the stack cannot come up, e2e tests FAIL
  under ``CI=true`` and skip with the reason elsewhere.
* ``registry``: host, user and password of the test registry (password hidden from repr).
* ``engine_api``: a tiny stdlib Engine API client for tests that check what the
  daemon really holds, independent of cdtools' own client.
* ``unique``: a name prefix ``cdt-<hex>``; at the end of the test every container
  named with it and every image tag with it is removed.
* ``clean_env`` (autouse): no DOCKER_*, CDTOOLS_* or Jenkins variables, and HOME in
  a temporary directory, so ``~/.docker/config.json`` of the machine is never read.
  Requested by name it gives that HOME.
* ``data_dir``: ``tests/data``; ``stack_state_dir``: local-stack's state dir.

The stack's location is read from the environment once, at import, before
``clean_env`` hides it from the tests: ``CDTOOLS_STACK_DIR``,
``CDTOOLS_STACK_DOCKER_SOCK``, ``CDTOOLS_TEST_REGISTRY``,
``CDTOOLS_TEST_REGISTRY_USER``, ``CDTOOLS_STACK_PASSWORD`` (as for local-stack;
otherwise the password file local-stack wrote, otherwise the default).
"""
from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import socket
import subprocess
import urllib.parse
import uuid
from email.message import Message
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, NoReturn, Optional, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO_ROOT / "scripts" / "local-stack"
DATA_DIR = Path(__file__).resolve().parent / "data"
BASE_IMAGE = "busybox:latest"

# The environment as pytest found it; clean_env removes these names from the
# tests' view, and local-stack must still get them.
_ENV: Dict[str, str] = dict(os.environ)
IN_CI = _ENV.get("CI", "").strip().lower() in ("true", "1", "yes")
STATE_DIR = Path(_ENV.get("CDTOOLS_STACK_DIR") or "/var/tmp/cdtools-stack")
DOCKER_SOCK = _ENV.get("CDTOOLS_STACK_DOCKER_SOCK") or "/var/run/docker.sock"
REGISTRY_HOST = (
    _ENV.get("CDTOOLS_TEST_REGISTRY") or _ENV.get("CDTOOLS_STACK_REGISTRY") or "127.0.0.1:5000"
)
REGISTRY_USER = _ENV.get("CDTOOLS_TEST_REGISTRY_USER") or _ENV.get("CDTOOLS_STACK_USER") or "ci"
DEFAULT_PASSWORD = "s3cret"

# Variables a test must set itself if it wants them (exact names and prefixes).
_JENKINS_VARS = frozenset(
    {
        "WORKSPACE",
        "NODE_NAME",
        "NODE_LABELS",
        "EXECUTOR_NUMBER",
        "BRANCH_NAME",
        "BRANCH_IS_PRIMARY",
        "TAG_NAME",
        "TAG_DATE",
        "TAG_TIMESTAMP",
        "TAG_UNIXTIME",
        "STAGE_NAME",
        "RUN_DISPLAY_URL",
        "RUN_ARTIFACTS_DISPLAY_URL",
        "RUN_CHANGES_DISPLAY_URL",
        "RUN_TESTS_DISPLAY_URL",
    }
)
_HIDDEN_PREFIXES = ("DOCKER_", "CDTOOLS_", "JENKINS_", "HUDSON_", "BUILD_", "JOB_", "GIT_", "CHANGE_")


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in an ini file, so it holds whichever config file pytest picks.
    config.addinivalue_line(
        "markers",
        "e2e: needs the real stack (scripts/local-stack up); fails under CI=true if it is missing",
    )


# -- a stdlib Engine API client ------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket; the host name only fills the Host header."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    headers: Message  # case-insensitive get(), as HTTP means header names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclasses.dataclass(frozen=True)
class EngineAPI:
    """One method per need, on ``http.client``; independent of cdtools' client on purpose."""

    socket_path: str
    timeout: float = 60.0

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Any] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """Send one request; a dict/list body goes as JSON. Raises OSError if nothing answers."""
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            sent_headers = dict(headers or {})
            data: Optional[bytes] = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                sent_headers.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=sent_headers)
            resp = conn.getresponse()
            # resp.headers looks names up case-insensitively, as HTTP means them
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def expect(self, method: str, path: str, status: Tuple[int, ...] = (200,), **kw: Any) -> Response:
        """``request`` that fails the test on any other status, with the daemon's message."""
        resp = self.request(method, path, **kw)
        if resp.status not in status:
            pytest.fail(
                f"{method} {path}: HTTP {resp.status}: {resp.body[:500]!r}", pytrace=False
            )
        return resp

    def ping(self) -> Response:
        return self.request("GET", "/_ping")

    def run(self, image: str, cmd: List[str], name: str) -> Tuple[int, bytes]:
        """Create, start, wait for and remove a container; its exit code and stdout."""
        q = urllib.parse.urlencode({"name": name})
        cid = self.expect(
            "POST", f"/containers/create?{q}", (201,), body={"Image": image, "Cmd": cmd}
        ).json()["Id"]
        try:
            self.expect("POST", f"/containers/{cid}/start", (204,))
            code = self.expect("POST", f"/containers/{cid}/wait").json()["StatusCode"]
            raw = self.expect("GET", f"/containers/{cid}/logs?stdout=1&stderr=0").body
            return code, _demux_stdout(raw)
        finally:
            self.request("DELETE", f"/containers/{cid}?force=1&v=1")


def _demux_stdout(raw: bytes) -> bytes:
    """The stdout frames of a non-tty log stream (8-byte headers: stream, 0, 0, 0, size)."""
    out = bytearray()
    pos = 0
    while pos + 8 <= len(raw):
        stream, size = raw[pos], int.from_bytes(raw[pos + 4 : pos + 8], "big")
        if stream == 1:
            out += raw[pos + 8 : pos + 8 + size]
        pos += 8 + size
    return bytes(out)


# -- the stack -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Registry:
    """The test registry: ``host`` as it goes into an image reference."""

    host: str
    user: str
    password: str = dataclasses.field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def basic_auth(self) -> str:
        """The value of an ``Authorization`` header for this user."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"


@dataclasses.dataclass(frozen=True)
class Engine:
    """Where the stack's Docker Engine answers."""

    socket_path: str

    @property
    def docker_host(self) -> str:
        """The value to give ``DOCKER_HOST`` in a test."""
        return f"unix://{self.socket_path}"


def _registry_password() -> str:
    if "CDTOOLS_STACK_PASSWORD" in _ENV:
        return _ENV["CDTOOLS_STACK_PASSWORD"]
    try:
        return (STATE_DIR / "registry-password").read_text().rstrip("\n")
    except OSError:
        return DEFAULT_PASSWORD


def _registry_status(host: str, auth: Optional[str] = None) -> int:
    """HTTP status of ``GET /v2/``; 0 when nothing answers. No proxy: the host is loopback."""
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request("GET", "/v2/", headers={"Authorization": auth} if auth else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def _stack_problems(api: EngineAPI) -> List[str]:
    """What keeps the stack from being usable; empty when it is."""
    problems = []
    try:
        if api.ping().status != 200:
            problems.append(f"the Docker Engine on {api.socket_path} does not answer /_ping with 200")
        elif api.request("GET", f"/images/{BASE_IMAGE}/json").status != 200:
            problems.append(f"{BASE_IMAGE} is missing")
    except OSError as exc:
        problems.append(f"no Docker Engine on {api.socket_path} ({exc.__class__.__name__}: {exc})")
    status = _registry_status(REGISTRY_HOST)
    if status != 401:
        problems.append(
            f"registry {REGISTRY_HOST} answers /v2/ with {status or 'nothing'} (expected 401)"
        )
    return problems


def _started_by_stack() -> Dict[str, int]:
    """Running processes that local-stack started: {component: pid}."""
    try:
        proc = _stack("started", timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    live = {}
    for line in proc.stdout.splitlines():
        name, _, pid = line.partition(" ")
        if pid.isdigit():
            live[name] = int(pid)
    return live


def _stack(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK_SCRIPT), *args],
        env=_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def unavailable(reason: str) -> NoReturn:
    """What a test needs is missing here: a failure under CI=true (CI must have it), else a skip."""
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def exported(stdout: str) -> Dict[str, str]:
    """The ``export K=V`` lines a ``scripts/* start`` command prints, as a dict."""
    return dict(line[len("export "):].split("=", 1) for line in stdout.splitlines() if line.startswith("export "))


def _unavailable(reason: str) -> None:
    unavailable(f"end-to-end stack unavailable (scripts/local-stack up as root brings it): {reason}")


@pytest.fixture(scope="session")
def engine_available(request: pytest.FixtureRequest) -> Engine:
    """The stack answers; brought up once per session if needed, and taken down after."""
    api = EngineAPI(DOCKER_SOCK)
    problems = _stack_problems(api)
    if not problems:
        return Engine(DOCKER_SOCK)

    before = _started_by_stack()
    try:
        # Installing packages on a fresh machine takes minutes; a build of busybox seconds.
        proc = _stack("up", timeout=1200)
        output, code = proc.stdout, proc.returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        output, code = f"{exc.__class__.__name__}: {exc}", -1
    after = _started_by_stack()
    started = [name for name, pid in after.items() if before.get(name) != pid]
    if started:
        # Stop what this session started even when `up` failed half-way.
        def stop() -> None:
            done = _stack("down", *started, timeout=180)
            if done.returncode != 0:
                raise RuntimeError(f"scripts/local-stack down {' '.join(started)}:\n{done.stdout}")

        request.addfinalizer(stop)
    if code != 0:
        tail = "\n".join(output.splitlines()[-20:])
        _unavailable(f"scripts/local-stack up exited {code}:\n{tail}")
    problems = _stack_problems(api)
    if problems:
        _unavailable("; ".join(problems))
    return Engine(DOCKER_SOCK)


@pytest.fixture(autouse=True)
def _e2e_needs_stack(request: pytest.FixtureRequest) -> None:
    # An e2e test gets the stack without naming the fixture; a forgotten
    # fixture must not turn into a test that passes without a daemon.
    if request.node.get_closest_marker("e2e") is not None:
        request.getfixturevalue("engine_available")


@pytest.fixture
def registry(engine_available: Engine) -> Registry:
    return Registry(REGISTRY_HOST, REGISTRY_USER, _registry_password())


@pytest.fixture
def engine_api(engine_available: Engine) -> EngineAPI:
    return EngineAPI(engine_available.socket_path)


@pytest.fixture
def cli_upload(tmp_path: Path) -> Iterator[Any]:
    """``upload(context, dockerfile=None) -> (body, query)``: what Debian's docker 20.10 CLI uploads."""
    import contextkit

    if not os.path.exists(contextkit.DOCKER_CLI):
        unavailable(f"{contextkit.DOCKER_CLI} (Debian docker.io) is not installed")
    yield from contextkit.cli_uploader(tmp_path)


# -- per test ------------------------------------------------------------------------------------


def _repository_path(tag: str) -> str:
    """``127.0.0.1:5000/cdt-x/app:1`` -> ``cdt-x/app``: the repository without registry host."""
    name = tag.rsplit("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.rsplit(":", 1)[0]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return name


def _remove_prefixed(api: EngineAPI, prefix: str) -> List[str]:
    """Remove containers named ``prefix*`` and image tags ``[host/]prefix*``; errors as text."""
    errors = []
    filters = urllib.parse.quote(json.dumps({"name": [f"^/{prefix}"]}))
    for c in api.request("GET", f"/containers/json?all=1&filters={filters}").json() or []:
        if not any(n.lstrip("/").startswith(prefix) for n in c.get("Names") or []):
            continue
        resp = api.request("DELETE", f"/containers/{c['Id']}?force=1&v=1")
        if resp.status not in (204, 404):
            errors.append(f"container {c['Names']}: HTTP {resp.status} {resp.body[:200]!r}")
    for img in api.request("GET", "/images/json").json() or []:
        for tag in img.get("RepoTags") or []:
            if not _repository_path(tag).startswith(prefix):
                continue
            resp = api.request("DELETE", f"/images/{urllib.parse.quote(tag, safe='')}?force=1")
            if resp.status not in (200, 404):
                errors.append(f"image {tag}: HTTP {resp.status} {resp.body[:200]!r}")
    return errors


@pytest.fixture
def unique() -> Iterator[str]:
    """``cdt-<hex>``: name containers and image repositories with it; they go at the end."""
    prefix = f"cdt-{uuid.uuid4().hex[:10]}"
    yield prefix
    api = EngineAPI(DOCKER_SOCK)
    try:
        errors = _remove_prefixed(api, prefix)
    except OSError:
        return  # no engine: nothing of this test's can be on it
    if errors:
        pytest.fail(f"cleanup of {prefix}*: " + "; ".join(errors), pytrace=False)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hide the developer's DOCKER_*, CDTOOLS_* and Jenkins variables; HOME is a fresh dir."""
    for name in list(os.environ):
        if name.startswith(_HIDDEN_PREFIXES) or name in _JENKINS_VARS:
            monkeypatch.delenv(name)
    # DOCKER_CONFIG is unset above, so config.json would come from $HOME/.docker:
    # an empty directory of this test's, never the machine's.
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture
def stack_state_dir() -> Path:
    """local-stack's state dir: pid files, logs, htpasswd, registry data."""
    return STATE_DIR
