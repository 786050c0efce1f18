"""A private registry for a test module: distribution (``docker-registry``) on a free loopback port,
one htpasswd user with the password the test chooses, stopped by pid.

The stack's registry has one fixed password; tests that need another (a canary that
must never be shown, a password whose X-Registry-Auth holds ``-`` and ``_``) start
one of these.  The password goes to ``htpasswd`` on stdin, never in argv.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List

import fakes


@dataclass(frozen=True)
class PrivateRegistry:
    host: str
    user: str
    password: str = field(repr=False)

    def tags(self, repository: str) -> List[str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        req = urllib.request.Request(f"http://{self.host}/v2/{repository}/tags/list",
                                     headers={"Authorization": f"Basic {token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return list(json.loads(resp.read()).get("tags") or [])


def missing_tools() -> str:
    """Why no private registry can start here ('' when it can)."""
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        return "docker-registry and htpasswd are needed (scripts/local-stack up installs them)"
    return ""


def _status(host: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host}/v2/", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def free_host() -> str:
    return f"127.0.0.1:{fakes.free_port()}"


@contextmanager
def private_registry(d: Path, user: str, password: str, host: str = "") -> Iterator[PrivateRegistry]:
    """Serve a registry from ``d`` (made if missing) on ``host`` (default: a free port) while in the block."""
    host = host or free_host()
    d.mkdir(parents=True, exist_ok=True)
    hashed = subprocess.run([str(shutil.which("htpasswd")), "-niB", user], input=password + "\n",
                            capture_output=True, text=True, check=True, timeout=60).stdout
    (d / "htpasswd").write_text("".join(line + "\n" for line in hashed.splitlines() if line))
    (d / "config.yml").write_text(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {d}/data
  delete:
    enabled: true
http:
  addr: {host}
auth:
  htpasswd:
    realm: cdtools-private-registry
    path: {d}/htpasswd
""")
    with open(d / "registry.log", "wb") as log:
        proc = subprocess.Popen([str(shutil.which("docker-registry")), "serve", str(d / "config.yml")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while _status(host) != 401:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private registry on {host} did not start: "
                                   f"{(d / 'registry.log').read_text()[-500:]}")
            time.sleep(0.1)
        yield PrivateRegistry(host, user, password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
