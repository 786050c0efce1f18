"""Helpers and fixtures for the deploy tests: httpd images built from busybox, free ports, page reads.

Images are built with Debian's docker CLI and the classic builder (no pull:
``FROM busybox`` is the offline base image of the test bed), tagged
``<unique>-httpd:<tag>`` so that conftest's ``unique`` cleanup removes them.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKER_CLI = "/usr/bin/docker"

HTTPD_CMD = '["httpd", "-f", "-p", "8080", "-h", "/www"]'


def free_port() -> int:
    """A host port nobody listens on now (bind to :0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_image(tag: str, page: str, *, extra: str = "", cmd: str = HTTPD_CMD) -> str:
    """Build a busybox httpd image serving ``page`` at / on port 8080; returns its id."""
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "index.html").write_text(page + "\n")
        Path(ctx, "Dockerfile").write_text(
            "FROM busybox\nCOPY index.html /www/\nEXPOSE 8080\n" + extra + f"\nCMD {cmd}\n")
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        env.pop("DOCKER_HOST", None)
        proc = subprocess.run([DOCKER_CLI, "build", "-q", "-t", tag, ctx], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail(f"docker build {tag}: {proc.stdout}", pytrace=False)
        return proc.stdout.strip().splitlines()[-1]


def get(url: str, timeout: float = 10.0) -> Optional[str]:
    """The body at ``url``, retried for ``timeout`` seconds (docker-proxy may need a moment); None if never."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=2) as resp:
                return resp.read().decode().strip()
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def deploy_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def start_deploy(argv: List[str], **env: str) -> "subprocess.Popen[str]":
    """``python -m cdtools.deploy ARGV`` as a child process, output piped line by line."""
    return subprocess.Popen([sys.executable, "-m", "cdtools.deploy", *argv], env=deploy_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            cwd=str(REPO_ROOT))


def run_deploy_process(argv: List[str], timeout: float = 120, **env: str) -> "subprocess.CompletedProcess[str]":
    """``python -m cdtools.deploy ARGV`` to its end."""
    return subprocess.run([sys.executable, "-m", "cdtools.deploy", *argv], env=deploy_env(**env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                          cwd=str(REPO_ROOT))


def read_until(proc: "subprocess.Popen[str]", needle: str, timeout: float = 60.0) -> List[str]:
    """Lines of ``proc``'s stdout up to and including the first that contains ``needle``."""
    assert proc.stdout is not None
    lines: List[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if needle in line:
            return lines
    proc.send_signal(signal.SIGKILL)
    pytest.fail(f"never saw {needle!r} in the deploy's output:\n" + "\n".join(lines), pytrace=False)
    return lines


@pytest.fixture
def images(unique: str, engine_available: object) -> Iterator["Images"]:
    yield Images(unique)


class Images:
    """Builds ``<unique>-httpd:<tag>`` images on demand, once each."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.built: Dict[str, str] = {}

    def httpd(self, tag: str, page: Optional[str] = None, *, extra: str = "", cmd: str = HTTPD_CMD) -> str:
        ref = f"{self.prefix}-httpd:{tag}"
        if ref not in self.built:
            self.built[ref] = build_image(ref, page if page is not None else f"page {tag}", extra=extra, cmd=cmd)
        return ref


def run_main(capsys: pytest.CaptureFixture[str], main: Callable[[List[str]], int], *argv: str) -> Tuple[int, str, str]:
    """A step's main() in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def inspect(engine_api: Any, name: str) -> Any:
    """A container's inspect, None when there is none."""
    resp = engine_api.request("GET", f"/containers/{name}/json")
    return resp.json() if resp.status == 200 else None
