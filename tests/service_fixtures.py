"""Fixtures for the swarm service and several-host tests: pushed images, a swarm, extra Docker hosts.

* ``pushed`` builds busybox httpd images (``deploy_fixtures.build_image``) as
  ``127.0.0.1:5000/<unique>-httpd:<tag>`` and pushes them with Debian's docker CLI
  (its own DOCKER_CONFIG, logged in by --password-stdin); it gives the
  ``repo@sha256:…`` the registry confirmed.  Their HEALTHCHECK makes a task or
  container count as up only once httpd answers.
* ``swarm`` (module): the local engine as a single-node swarm manager.  When it is
  not one, ``POST /swarm/init`` (listening and advertising on 127.0.0.1 only) and,
  at the end, ``POST /swarm/leave?force=1`` and the ``docker_gwbridge`` network the
  swarm made; a swarm that was there before is left alone.  Test sessions take
  turns (an flock in the stack's state dir), so one never leaves the swarm under
  another's services.
* ``netns_hosts`` (module): two extra dockerd in network namespaces of their own
  (``scripts/netns-daemon``), each with the stack's registry on its loopback;
  stopped by pid and removed at the end.
* ``registry_env``: the registry user and password in the CDTOOLS_REGISTRY_* variables.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import DOCKER_SOCK, STATE_DIR, EngineAPI, Registry, exported, unavailable
from deploy_fixtures import DOCKER_CLI, build_image

REPO_ROOT = Path(__file__).resolve().parent.parent
NETNS_DAEMON = REPO_ROOT / "scripts" / "netns-daemon"

#: busybox httpd counts as healthy once it answers (1 s between checks keeps the tests quick)
HEALTHY = "HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"
#: a program that says one line on stderr and exits 3 at once
BROKEN_CMD = '["sh", "-c", "echo cdtools-broken-marker >&2; exit 3"]'


class Pushed:
    """Images built and pushed once each; ``ref(tag)`` is ``repo:tag``, the result ``repo@digest``."""

    def __init__(self, prefix: str, registry: Registry, config_dir: str) -> None:
        self.repo = f"{registry.host}/{prefix}-httpd"
        self.config_dir = config_dir
        self.digests: Dict[str, str] = {}

    def tag(self, tag: str) -> str:
        return f"{self.repo}:{tag}"

    def httpd(self, tag: str, page: Optional[str] = None, *, cmd: Optional[str] = None) -> str:
        """Build and push; ``repo@sha256:…``."""
        if tag not in self.digests:
            ref = self.tag(tag)
            kw = {"cmd": cmd} if cmd else {}
            build_image(ref, page if page is not None else f"page {tag}", extra=HEALTHY, **kw)
            proc = subprocess.run([DOCKER_CLI, "push", ref], env=_cli_env(self.config_dir), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=300)
            found = re.search(r"digest: (sha256:[0-9a-f]{64})", proc.stdout)
            if proc.returncode != 0 or not found:
                pytest.fail(f"docker push {ref}: {proc.stdout}", pytrace=False)
            self.digests[tag] = found.group(1)
        return f"{self.repo}@{self.digests[tag]}"


def _cli_env(config_dir: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = config_dir
    return env


@pytest.fixture
def pushed(unique: str, registry: Registry) -> Iterator[Pushed]:
    with tempfile.TemporaryDirectory() as config_dir:
        proc = subprocess.run([DOCKER_CLI, "login", "-u", registry.user, "--password-stdin", registry.host],
                              input=registry.password + "\n", env=_cli_env(config_dir), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)
        if proc.returncode != 0:
            pytest.fail(f"docker login {registry.host}: {proc.stdout}", pytrace=False)
        yield Pushed(unique, registry, config_dir)


@pytest.fixture
def registry_env(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("CDTOOLS_REGISTRY_USERNAME", registry.user)
    monkeypatch.setenv("CDTOOLS_REGISTRY_PASSWORD", registry.password)
    return registry


# -- the swarm ------------------------------------------------------------------------------------


def swarm_state(api: EngineAPI) -> Tuple[str, bool]:
    swarm = api.expect("GET", "/info").json().get("Swarm") or {}
    return str(swarm.get("LocalNodeState") or "inactive"), bool(swarm.get("ControlAvailable"))


def _has_network(api: EngineAPI, name: str) -> bool:
    return api.request("GET", f"/networks/{name}").status == 200


@contextmanager
def _swarm_turn() -> Iterator[None]:
    """One test session at a time uses the shared engine's swarm: another's `swarm leave` would pull it
    from under this one's services.  An flock in the stack's state dir, held for the module."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "swarm-tests.lock", "w") as fh:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another test session held the swarm tests' lock for 10 minutes", pytrace=False)
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def swarm(engine_available: object) -> Iterator[EngineAPI]:
    with _swarm_turn():
        yield from _swarm()


def _swarm() -> Iterator[EngineAPI]:
    api = EngineAPI(DOCKER_SOCK)
    state, manager = swarm_state(api)
    if state == "active":
        if not manager:
            unavailable("the local engine is a swarm worker, not a manager: the service tests need a manager")
        yield api
        return
    had_gwbridge = _has_network(api, "docker_gwbridge")
    resp = api.request("POST", "/swarm/init", body={"ListenAddr": "127.0.0.1:2377", "AdvertiseAddr": "127.0.0.1"})
    if resp.status != 200:
        unavailable(f"docker swarm init on the local engine: HTTP {resp.status} {resp.body[:300]!r}")
    try:
        yield api
    finally:
        left = api.request("POST", "/swarm/leave?force=1")
        if not had_gwbridge and _has_network(api, "docker_gwbridge"):
            api.request("DELETE", "/networks/docker_gwbridge")
        if left.status != 200:
            pytest.fail(f"docker swarm leave: HTTP {left.status} {left.body[:300]!r}", pytrace=False)


def remove_service(api: EngineAPI, name: str) -> None:
    """Remove a service and wait until its containers are gone (the `unique` cleanup must not race them)."""
    if api.request("DELETE", f"/services/{name}").status not in (200, 404):
        return
    filters = urllib.parse.quote(json.dumps({"label": [f"com.docker.swarm.service.name={name}"]}))
    deadline = time.monotonic() + 60
    while api.expect("GET", f"/containers/json?all=1&filters={filters}").json() and time.monotonic() < deadline:
        time.sleep(0.2)
    api.request("DELETE", f"/configs/{name}-cdtools-lock")


def task_containers(api: EngineAPI, name: str) -> List[dict]:
    """The running containers of service ``name``'s tasks."""
    filters = urllib.parse.quote(json.dumps({"label": [f"com.docker.swarm.service.name={name}"],
                                             "status": ["running"]}))
    return api.expect("GET", f"/containers/json?filters={filters}").json() or []


def serving_tasks(api: EngineAPI, name: str) -> List[Tuple[str, str]]:
    """(task state, container IP) of service ``name``'s tasks that the swarm wants running.

    A task told to shut down is out of the service (the routing mesh stops sending it
    requests) even while its container is still stopping; it does not count here either.
    """
    filters = urllib.parse.quote(json.dumps({"service": [name], "desired-state": ["running"]}))
    tasks = api.expect("GET", f"/tasks?filters={filters}").json() or []
    ips = {c["Id"]: container_ip(c) for c in task_containers(api, name)}
    out = []
    for task in tasks:
        status = task.get("Status") or {}
        cid = (status.get("ContainerStatus") or {}).get("ContainerID") or ""
        out.append((str(status.get("State")), ips.get(cid, "")))
    return out


def container_ip(container: dict) -> str:
    for network in ((container.get("NetworkSettings") or {}).get("Networks") or {}).values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    return ""


def exec_output(api: EngineAPI, container: str, cmd: List[str]) -> Tuple[int, str]:
    """Run ``cmd`` in a running container; (exit code, stdout)."""
    created = api.expect("POST", f"/containers/{container}/exec", (201,),
                         body={"Cmd": cmd, "AttachStdout": True, "AttachStderr": False}).json()
    raw = api.expect("POST", f"/exec/{created['Id']}/start", body={"Detach": False, "Tty": False}).body
    code = api.expect("GET", f"/exec/{created['Id']}/json").json()["ExitCode"]
    out = bytearray()
    pos = 0
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos + 4:pos + 8], "big")
        if raw[pos] == 1:
            out += raw[pos + 8:pos + 8 + size]
        pos += 8 + size
    return int(code), out.decode().strip()


def page_in(api: EngineAPI, container: str) -> str:
    """The page httpd serves, fetched from inside the container (its ports need not be published)."""
    code, out = exec_output(api, container, ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"])
    return out if code == 0 else f"<wget exit {code}>"


# -- extra hosts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """One Docker host of the rollout tests: where cdtools connects, and a socket for the test's own look."""

    docker_host: str
    api: EngineAPI


def start_netns_daemon(directory: str, *, registry: bool = True) -> Host:
    argv = [str(NETNS_DAEMON), "start", directory]
    if registry:
        argv += ["--registry-config", str(STATE_DIR / "registry.yml")]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    if proc.returncode != 0:
        unavailable(f"scripts/netns-daemon start: {proc.stdout.strip()[-800:]}")
    env = exported(proc.stdout)
    return Host(env["DOCKER_HOST"], EngineAPI(env["CDTOOLS_NETNS_SOCK"]))


def stop_netns_daemon(directory: str) -> None:
    proc = subprocess.run([str(NETNS_DAEMON), "stop", directory], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)
    if proc.returncode != 0 or os.path.exists(directory):
        pytest.fail(f"scripts/netns-daemon stop {directory}: {proc.stdout}", pytrace=False)


@pytest.fixture(scope="module")
def netns_hosts(engine_available: object) -> Iterator[List[Host]]:
    if os.geteuid() != 0:
        unavailable("extra Docker hosts in network namespaces need root")
    if not (STATE_DIR / "registry.yml").exists():
        unavailable(f"{STATE_DIR}/registry.yml is missing: the namespaced hosts serve the stack's registry from it")
    dirs = [tempfile.mkdtemp(prefix="cdtns-", dir="/tmp") for _ in range(2)]
    for d in dirs:
        os.rmdir(d)  # netns-daemon makes it; a short path under /tmp keeps containerd's socket path short
    hosts: List[Host] = []
    try:
        for d in dirs:
            hosts.append(start_netns_daemon(d))
        yield hosts
    finally:
        for d in dirs:
            stop_netns_daemon(d)


def local_host() -> Host:
    return Host(f"unix://{DOCKER_SOCK}", EngineAPI(DOCKER_SOCK))

