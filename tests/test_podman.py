"""cdtools against Podman's Docker-compatible API, a second real engine (scripts/podman-service).

The service runs as root on a private unix socket with its own configuration,
storage and bridge, so the Docker daemon's state is never touched; it is
stopped by pid and removed at the end of the session.  ``busybox:latest`` is
built on it by the script from busybox-static.  The registry is the stack's
(127.0.0.1:5000, listed as plain http in the service's own registries.conf).

Podman differences met here, and what the tests pin down:

* HEALTHCHECKs run from systemd timers; with no systemd they never run and the
  status stays "starting": the health gate runs the check itself
  (``/libpod/containers/{id}/healthcheck``) when the daemon logs none;
* before Podman 4.7 a container created without ``StopTimeout`` has 0, so every
  stop is an instant SIGKILL (containers/podman#19139): deploy sets docker's 10 s;
* ``StopSignal`` is reported as a number ("15");
* errors are ``{"cause","message","response"}``, some failures an error status
  with a progress stream as the body;
* ``POST /containers/{id}/update`` does not exist (404) before Podman 5: the
  restart policy of NAME-previous stays as it was, with a warning;
* no swarm: ``/info`` says ``inactive`` (the swarm endpoints answer a plain-text
  404), so ``deploy --target service:NAME`` is refused in one line;
* ``X-Registry-Auth`` is decoded as base64url, as Docker does (a registry of the
  session's own has a password whose header holds ``-`` and ``_``).

The fakes at the end cover what the real service here can't be made to show on
demand: a daemon whose systemd timers do run checks, a 500 with a stream body.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import fakes
from cdtools import auth, engine as engine_mod, push, settings as settings_mod
from cdtools.health import Gate, wait
from conftest import EngineAPI, Registry, exported, unavailable
from registry_fixtures import PrivateRegistry, free_host, missing_tools, private_registry

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "podman-service"
EXAMPLE = REPO / "examples" / "hello"


@dataclass(frozen=True)
class Podman:
    dir: Path
    socket_path: str
    #: a registry of its own whose password makes X-Registry-Auth hold "-" and "_"
    url_safe_registry: PrivateRegistry

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def api(self) -> EngineAPI:
        return EngineAPI(self.socket_path)


def _unavailable(reason: str) -> None:
    unavailable(f"Podman service unavailable: {reason}")


def url_safe_password(user: str, host: str) -> str:
    """A password whose X-Registry-Auth (base64url) holds "-" and "_": standard base64 would have "+" "/"."""
    for i in range(1000):
        candidate = f"p>?{i}~>>??w"
        header = auth.Credentials(registry=host, source="test", username=user, password=candidate).header()
        if "-" in header and "_" in header:
            return candidate
    raise AssertionError("no candidate password gives a header with - and _")


@pytest.fixture(scope="session")
def podman(engine_available: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """The Podman service, started once per session (after the stack: it pushes to its registry)."""
    if os.geteuid() != 0:
        _unavailable("needs root (a rootful Podman service)")
    if shutil.which("podman") is None:
        _unavailable("no podman (apt-get install podman)")
    if missing_tools():
        _unavailable(missing_tools())
    host = free_host()
    password = url_safe_password("pod", host)
    with private_registry(tmp_path_factory.mktemp("podman-registry"), "pod", password, host) as reg:
        # short: the socket lives in it, and unix socket paths are limited to 107 bytes
        d = Path(tempfile.mkdtemp(prefix="cdtpm-", dir="/tmp"))
        d.rmdir()
        started = subprocess.run([sys.executable, str(SCRIPT), "start", str(d), "--insecure-registry", reg.host],
                                 capture_output=True, text=True, timeout=300)
        try:
            if started.returncode != 0:
                _unavailable(f"scripts/podman-service start exited {started.returncode}: {started.stderr.strip()}")
            env = exported(started.stdout)
            yield Podman(dir=d, socket_path=env["DOCKER_HOST"][len("unix://"):], url_safe_registry=reg)
        finally:
            subprocess.run([sys.executable, str(SCRIPT), "stop", str(d)], timeout=180)


def cdtools(step: str, *args: str, env: Dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    """``python -m cdtools.STEP ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", f"cdtools.{step}", *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def user_env(podman: Podman, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "CDTOOLS_"))}
    env.update(DOCKER_HOST=podman.host, PYTHONPATH=str(REPO), CI="true", **extra)
    return env


def page(url: str, timeout: float = 10.0) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError as exc:
            if time.monotonic() > deadline:
                return f"<nothing: {exc}>"
            time.sleep(0.2)


def registry_tags(registry: Registry, repository: str) -> List[str]:
    req = urllib.request.Request(f"{registry.url}/v2/{repository}/tags/list",
                                 headers={"Authorization": registry.basic_auth()})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        return list(json.loads(resp.read())["tags"])


@pytest.fixture
def app(tmp_path: Path, unique: str) -> Dict[str, Any]:
    """examples/hello with a release config of this test's own names and a free port."""
    ctx = tmp_path / "hello"
    shutil.copytree(EXAMPLE, ctx)
    port = fakes.free_port()
    config = json.loads((ctx / "cdtools.json").read_text())
    config["image"] = f"127.0.0.1:5000/{unique}/hello"
    config["deploy"].update(name=f"{unique}-hello", ports=[f"127.0.0.1:{port}:8080"])
    (ctx / "cdtools.json").write_text(json.dumps(config))
    return {"dir": ctx, "config": ctx / "cdtools.json", "port": port, "name": f"{unique}-hello",
            "repository": f"{unique}/hello"}


# -- the release, end to end ---------------------------------------------------------------------


@pytest.mark.e2e
def test_release_on_podman_serves_the_page_and_a_second_release_swaps(podman: Podman, app: Dict[str, Any],
                                                                     registry: Registry, engine_api: EngineAPI,
                                                                     tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(registry.password)
    env = user_env(podman)
    args = ["--config", str(app["config"]), "--username", registry.user, "--password-file", str(pw)]
    url = f"http://127.0.0.1:{app['port']}/"

    first = cdtools("release", *args, "-t", "1", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "hello from cdtools" in page(url)
    assert "1" in registry_tags(registry, app["repository"])
    api = podman.api()
    doc = api.expect("GET", f"/containers/{app['name']}/json").json()
    # deployed by the digest the registry confirmed, not by a tag
    assert "@sha256:" in doc["Config"]["Image"]
    # the image's HEALTHCHECK ran although Podman has no systemd timers here
    assert doc["State"]["Health"]["Status"] == "healthy", doc["State"]["Health"]
    # a real stop timeout, not Podman 4.3's 0 (an instant SIGKILL on every stop)
    assert doc["Config"]["StopTimeout"] == 10
    # all of it happened on Podman: the Docker daemon never saw the image
    assert engine_api.request("GET", f"/images/127.0.0.1:5000/{app['repository']}:1/json").status == 404

    (app["dir"] / "index.html").write_text("<h1>second release</h1>\n")
    second = cdtools("release", *args, "-t", "2", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "second release" in page(url)
    assert {"1", "2"} <= set(registry_tags(registry, app["repository"]))
    # the old one was stopped (PID 1 is busybox httpd: no SIGTERM handler, killed at once,
    # which needs the numeric StopSignal Podman reports to be understood) and kept
    assert "has no SIGTERM handler" in second.stdout, second.stdout
    previous = api.expect("GET", f"/containers/{app['name']}-previous/json").json()
    assert previous["Id"] == doc["Id"] and not previous["State"]["Running"]
    # Podman before 5 has no /containers/{id}/update: said, not hidden
    assert "could not turn off the restart policy" in second.stdout


@pytest.mark.e2e
def test_crash_on_podman_rolls_back_and_the_old_page_serves_again(podman: Podman, app: Dict[str, Any],
                                                                 registry: Registry, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(registry.password)
    env = user_env(podman)
    args = ["--config", str(app["config"]), "--username", registry.user, "--password-file", str(pw)]
    url = f"http://127.0.0.1:{app['port']}/"
    assert cdtools("release", *args, "-t", "good", env=env).returncode == 0
    assert "hello from cdtools" in page(url)

    (app["dir"] / "Dockerfile").write_text((app["dir"] / "Dockerfile").read_text() + 'CMD ["false"]\n')
    crashed = cdtools("release", *args, "-t", "bad", env=env)
    assert crashed.returncode == 6, crashed.stdout + crashed.stderr
    err = crashed.stderr.strip().splitlines()
    assert len(err) == 1 and "rolled back" in err[0] and "exited with code 1" in err[0], err
    assert "hello from cdtools" in page(url)
    running = podman.api().expect("GET", f"/containers/{app['name']}/json").json()
    assert running["State"]["Running"]


@pytest.mark.e2e
def test_failures_on_podman_are_one_line_with_its_reason(podman: Podman, registry: Registry, unique: str,
                                                         tmp_path: Path) -> None:
    env = user_env(podman)
    ctx = tmp_path / "broken"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN exit 2\n")
    built = cdtools("build", "-t", f"{unique}-broken:1", str(ctx), env=env)
    assert built.returncode == 4
    assert built.stderr.count("\n") == 1 and 'RUN exit 2' in built.stderr and "exit status 2" in built.stderr

    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY Dockerfile /\n")
    image = f"{registry.host}/{unique}/app:1"
    assert cdtools("build", "-t", image, str(ctx), env=env).returncode == 0
    pushed = cdtools("push", image, "--username", registry.user, "--password-stdin", env=env,
                     stdin="wrong-" + registry.password)
    assert pushed.returncode == 5
    assert pushed.stderr.count("\n") == 1
    assert "unauthorized" in pushed.stderr and registry.host in pushed.stderr
    assert registry.password not in pushed.stdout + pushed.stderr

    # Podman's {"cause","message","response"}: its message, once
    tagged = cdtools("tag", f"{unique}-absent:1", f"{unique}-x:1", env=env)
    assert tagged.returncode == 1
    assert tagged.stderr.count("\n") == 1 and "image not known" in tagged.stderr and '"cause"' not in tagged.stderr

    # no swarm in Podman: a service deploy is refused before anything is asked of a registry
    service = cdtools("deploy", "--name", f"{unique}-svc", "--image", "busybox:latest",
                      "--target", f"service:{unique}-svc", env=env)
    assert service.returncode == 2 and service.stderr.count("\n") == 1 and "not in a swarm" in service.stderr


@pytest.mark.e2e
def test_podman_decodes_x_registry_auth_as_base64url_like_docker(podman: Podman, unique: str) -> None:
    reg = podman.url_safe_registry
    header = auth.Credentials(registry=reg.host, source="test", username=reg.user, password=reg.password).header()
    assert "-" in header and "_" in header  # a standard-base64 decoder would choke on these
    image = f"{reg.host}/{unique}/bb:1"
    env = user_env(podman)
    assert cdtools("tag", "busybox:latest", image, env=env).returncode == 0
    pushed = cdtools("push", image, "--username", reg.user, "--password-stdin", env=env, stdin=reg.password)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "1" in reg.tags(f"{unique}/bb")
    # and a pull with it, which deploy does before it creates anything
    pulled = podman.api().request("POST", f"/images/create?fromImage={reg.host}/{unique}/bb&tag=1",
                                  headers={"X-Registry-Auth": header})
    assert pulled.status == 200 and b"error" not in pulled.body, pulled.body[-300:]


# -- fakes: what the real service can't be made to do -------------------------------------------


def _fake_podman(httpserver: Any, inspect: Any, *, libpod: bool = True) -> Dict[str, int]:
    """A daemon (Podman or, with libpod=False, Docker) whose container "c1" inspects as ``inspect()``."""
    calls = {"healthcheck": 0}
    headers = {"Api-Version": "1.41"}
    if libpod:
        headers.update({"Libpod-Api-Version": "4.3.1", "Server": "Libpod/4.3.1 (linux)"})
    httpserver.expect_request("/_ping").respond_with_data("OK", headers=headers)

    def inspect_handler(request: Any) -> Any:
        from werkzeug import Response
        return Response(json.dumps(inspect(calls)), content_type="application/json")

    def healthcheck_handler(request: Any) -> Any:
        from werkzeug import Response
        calls["healthcheck"] += 1
        return Response(json.dumps({"Status": "healthy", "FailingStreak": 0, "Log": None}),
                        content_type="application/json")

    httpserver.expect_request("/v1.41/containers/c1/json").respond_with_handler(inspect_handler)
    httpserver.expect_request("/v1.41/libpod/containers/c1/healthcheck").respond_with_handler(healthcheck_handler)
    return calls


def _container(status: str, log: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"Id": "c1", "Name": "/c1", "RestartCount": 0,
            "Config": {"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 100_000_000}},
            "State": {"Running": True, "Health": {"Status": status, "FailingStreak": 0, "Log": log}}}


def _engine(httpserver: Any) -> engine_mod.Engine:
    return engine_mod.connect(settings_mod.from_env({"DOCKER_HOST": f"tcp://127.0.0.1:{httpserver.port}"}))


def test_gate_runs_the_check_itself_when_podman_never_does(httpserver: Any) -> None:
    # no systemd: nothing ever runs the check until the gate asks for it
    calls = _fake_podman(httpserver, lambda c: _container("healthy" if c["healthcheck"] else "starting", []))
    verdict = wait(_engine(httpserver), "c1", Gate(timeout=20, interval=0.02))
    assert verdict.ok, verdict.reason
    assert calls["healthcheck"] == 1


def test_gate_leaves_podman_alone_when_its_timers_run_checks(httpserver: Any) -> None:
    # systemd timers run the check: a new log entry each look, still "starting", then healthy
    looks = {"n": 0}

    def inspect(calls: Dict[str, int]) -> Dict[str, Any]:
        looks["n"] += 1
        log = [{"Start": f"t{looks['n']}", "ExitCode": 1, "Output": ""}]
        return _container("healthy" if looks["n"] > 30 else "starting", log)

    calls = _fake_podman(httpserver, inspect)
    verdict = wait(_engine(httpserver), "c1", Gate(timeout=20, interval=0.01))
    assert verdict.ok, verdict.reason
    assert calls["healthcheck"] == 0


def test_gate_never_asks_docker_for_podmans_endpoint(httpserver: Any) -> None:
    calls = _fake_podman(httpserver, lambda c: _container("starting", []), libpod=False)
    verdict = wait(_engine(httpserver), "c1", Gate(timeout=0.5, interval=0.05))
    assert not verdict.ok and "HEALTHCHECK still starting" in verdict.reason
    assert calls["healthcheck"] == 0


def test_podman_is_told_apart_by_its_ping_header(httpserver: Any) -> None:
    _fake_podman(httpserver, lambda c: {}, libpod=True)
    engine = _engine(httpserver)
    assert engine.ping() == "1.41"
    assert engine.podman_version == "4.3.1" and engine.podman_before("4.7") and not engine.podman_before("4.3")


def test_push_refused_with_an_error_status_and_a_stream_body_says_the_last_error(httpserver: Any,
                                                                                  monkeypatch: Any,
                                                                                  capsys: Any) -> None:
    # Podman answers some failed pushes with 500 and the progress stream so far as the body
    httpserver.expect_request("/_ping").respond_with_data("OK", headers={"Api-Version": "1.41",
                                                                         "Libpod-Api-Version": "4.9.3"})
    body = (b'{"status":"The push refers to repository [127.0.0.1:5000/cap/app:1]"}\n'
            b'{"errorDetail":{"message":"denied: requested access to the resource is denied"},'
            b'"error":"denied: requested access to the resource is denied"}\n')
    httpserver.expect_request("/v1.41/images/127.0.0.1:5000/cap/app/push", method="POST").respond_with_data(
        body, status=500, content_type="application/json")
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{httpserver.port}")
    assert push.main(["127.0.0.1:5000/cap/app:1"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cdtools push: error: push of 127.0.0.1:5000/cap/app:1 to 127.0.0.1:5000 refused (500): "
                   "denied: requested access to the resource is denied"]
    # what was sent: the anonymous X-Registry-Auth, as to Docker
    req, _ = httpserver.log[-1]
    assert base64.urlsafe_b64decode(req.headers["X-Registry-Auth"]) == b"{}"
