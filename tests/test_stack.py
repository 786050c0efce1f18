"""The test bed itself: what every end-to-end test takes for granted.

Checked once here so that a broken stack shows up as one clear failure, not as
fifty puzzling ones elsewhere.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from email.message import Message
from typing import Dict, Optional, Tuple

import pytest

STACK_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "local-stack"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def registry_get(
    host: str, method: str, path: str, headers: Optional[Dict[str, str]] = None
) -> Tuple[int, Message]:
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.headers  # case-insensitive lookups
    finally:
        conn.close()


@pytest.mark.e2e
def test_daemon_answers_ping_with_api_version(engine_api):
    resp = engine_api.ping()
    assert (resp.status, resp.body) == (200, b"OK")
    version = resp.headers.get("Api-Version", "")
    assert re.fullmatch(r"1\.\d+", version), resp.headers
    # the recorded exchanges in tests/data/engine-1.41 are what cdtools is built against
    assert tuple(int(part) for part in version.split(".")) >= (1, 41)


@pytest.mark.e2e
def test_busybox_runs_echo(engine_api, unique):
    name = f"{unique}-echo"
    code, out = engine_api.run("busybox:latest", ["echo", "hello from busybox"], name=name)
    assert (code, out) == (0, b"hello from busybox\n")
    assert engine_api.request("GET", f"/containers/{name}/json").status == 404


@pytest.mark.e2e
def test_busybox_has_what_the_example_app_uses(engine_api, unique):
    # examples/hello serves with httpd and checks its health with wget
    code, out = engine_api.run(
        "busybox:latest", ["which", "httpd", "wget"], name=f"{unique}-applets"
    )
    assert (code, out.split()) == (0, [b"/bin/httpd", b"/bin/wget"])


@pytest.mark.e2e
def test_registry_asks_for_basic_credentials(registry):
    status, headers = registry_get(registry.host, "GET", "/v2/")
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Basic realm=")


@pytest.mark.e2e
def test_registry_accepts_its_user(registry):
    status, headers = registry_get(
        registry.host, "GET", "/v2/", {"Authorization": registry.basic_auth()}
    )
    assert status == 200
    assert headers.get("Docker-Distribution-Api-Version") == "registry/2.0"


@pytest.mark.e2e
def test_registry_rejects_a_wrong_password(registry):
    wrong = base64.b64encode(f"{registry.user}:{registry.password}x".encode()).decode()
    status, _ = registry_get(registry.host, "GET", "/v2/", {"Authorization": f"Basic {wrong}"})
    assert status == 401


@pytest.mark.e2e
def test_daemon_pushes_to_registry_with_credentials(engine_api, registry, unique):
    repo = f"{registry.host}/{unique}/busybox"
    engine_api.expect("POST", f"/images/busybox:latest/tag?repo={repo}&tag=1", (201,))
    auth = json.dumps(
        {"username": registry.user, "password": registry.password, "serveraddress": registry.host}
    )
    resp = engine_api.expect(
        "POST",
        f"/images/{repo}/push?tag=1",
        headers={"X-Registry-Auth": base64.urlsafe_b64encode(auth.encode()).decode()},
    )
    records = [json.loads(line) for line in resp.body.splitlines() if line.strip()]
    assert not [r for r in records if "error" in r or "errorDetail" in r]
    digests = [r["aux"]["Digest"] for r in records if "Digest" in (r.get("aux") or {})]
    assert len(digests) == 1 and digests[0].startswith("sha256:"), records

    path = f"/v2/{unique}/busybox/manifests"
    authz = {"Authorization": registry.basic_auth(), "Accept": MANIFEST_V2}
    status, headers = registry_get(registry.host, "HEAD", f"{path}/1", authz)
    assert (status, headers.get("Docker-Content-Digest")) == (200, digests[0])
    # leave the registry as we found it (the local tag goes with `unique`)
    status, _ = registry_get(registry.host, "DELETE", f"{path}/{digests[0]}", authz)
    assert status == 202


@pytest.mark.e2e
def test_htpasswd_is_bcrypt_and_private(registry, stack_state_dir):
    htpasswd = stack_state_dir / "htpasswd"
    if not htpasswd.exists():
        pytest.skip(f"the registry on {registry.host} was not started by local-stack")
    lines = htpasswd.read_text().splitlines()
    # distribution's htpasswd auth accepts bcrypt only
    assert len(lines) == 1
    assert re.fullmatch(rf"{re.escape(registry.user)}:\$2[aby]\$\d\d\$[./A-Za-z0-9]{{53}}", lines[0])
    assert registry.password not in htpasswd.read_text()
    for secret in (htpasswd, stack_state_dir / "registry-password"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


@pytest.mark.e2e
def test_status_says_what_answers(engine_available, registry):
    proc = subprocess.run(
        [str(STACK_SCRIPT), "status"],
        env={**os.environ, "CDTOOLS_STACK_DOCKER_SOCK": engine_available.socket_path},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    assert f"dockerd: answering on {engine_available.socket_path}" in proc.stdout
    assert "image: busybox:latest present" in proc.stdout
    assert f"registry: answering on {registry.host}" in proc.stdout


def test_env_prints_exports_but_never_the_password(tmp_path):
    state = tmp_path / "state dir"  # a space: the exports must be quoted for eval
    canary = "Canary+Pass/word=="
    env = {
        "PATH": os.environ["PATH"],
        "CDTOOLS_STACK_DIR": str(state),
        "CDTOOLS_STACK_PASSWORD": canary,
    }
    script = f'eval "$({STACK_SCRIPT} env)" && env'
    proc = subprocess.run(
        ["bash", "-c", script], env=env, stdout=subprocess.PIPE, text=True, check=True
    )
    assert canary not in proc.stdout.replace(f"CDTOOLS_STACK_PASSWORD={canary}", "")
    seen = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert seen["CDTOOLS_TEST_DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert seen["CDTOOLS_TEST_REGISTRY"] == "127.0.0.1:5000"
    assert seen["CDTOOLS_TEST_REGISTRY_USER"] == "ci"
    assert seen["CDTOOLS_TEST_REGISTRY_PASSWORD_FILE"] == str(state / "registry-password")
