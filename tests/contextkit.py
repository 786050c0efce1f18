"""Helpers for the build-context tests: case trees, builds on the real daemon, image contents.

Builds go two ways: through cdtools' own plan and tar stream (``build_with_plan``, the
classic builder via ``POST /build``) and through the Debian docker 20.10 CLI with
``DOCKER_BUILDKIT=0`` (``build_with_cli``), which is the reference.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import socketserver
import subprocess
import tarfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

DOCKER_CLI = "/usr/bin/docker"  # Debian's docker.io 20.10 client, not a newer one on PATH
COPY_ALL = "FROM scratch\nCOPY . /ctx/\n"

#: path -> (type, mode, sha256 of content or link target); what a user compares in two images
FileTable = Dict[str, Tuple[str, int, str]]


def make_case_tree(root: Path, case: Mapping[str, Any]) -> None:
    """A dockerignore.json case on disk: each file holds its own path; the Dockerfile copies all."""
    root.mkdir(parents=True, exist_ok=True)
    for d in case.get("dirs", ()):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in case.get("files", ()):
        path = root / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f, encoding="utf-8")
    for link, target in (case.get("symlinks") or {}).items():
        path = root / link
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
    if "dockerignore_hex" in case:
        (root / ".dockerignore").write_bytes(bytes.fromhex(case["dockerignore_hex"]))
    elif "dockerignore" in case:
        (root / ".dockerignore").write_text(case["dockerignore"], encoding="utf-8")
    dockerfile = root / case.get("dockerfile", "Dockerfile")
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    dockerfile.write_text(COPY_ALL)


def build_with_plan(api: Any, plan: Any, tag: str, **query: str) -> str:
    """Build on the daemon from a cdtools plan and stream; the image id (fails on any error record)."""
    from cdtools.context import stream_context

    body = b"".join(stream_context(plan, warn=lambda message: None))
    params = {"dockerfile": plan.dockerfile, "t": tag, "rm": "1", "forcerm": "1", **query}
    resp = api.request(
        "POST", "/build?" + urllib.parse.urlencode(params), body=body, headers={"Content-Type": "application/x-tar"}
    )
    assert resp.status == 200, f"build: HTTP {resp.status}: {resp.body[:500]!r}"
    image = None
    for line in resp.body.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        assert "error" not in record and "errorDetail" not in record, record
        image = (record.get("aux") or {}).get("ID", image)
    assert image, resp.body[-500:]
    return str(image)


def build_with_cli(docker_host: str, home: Path, context: Path, tag: str, dockerfile: Optional[Path] = None) -> Tuple[int, str]:
    """``docker build`` (classic builder) of the reference CLI: (exit code, output)."""
    cmd = [DOCKER_CLI, "build", "-q", "-t", tag]
    if dockerfile is not None:
        cmd += ["-f", str(dockerfile)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_HOST": docker_host, "DOCKER_BUILDKIT": "0"}
    proc = subprocess.run(cmd + [str(context)], env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def image_files(api: Any, image: str, container_name: str, under: str = "") -> FileTable:
    """Regular files and symlinks of an image (``GET /containers/{id}/export``), below ``under``."""
    q = urllib.parse.urlencode({"name": container_name})
    resp = api.request("POST", f"/containers/create?{q}", body={"Image": image, "Cmd": ["/none"]})
    assert resp.status == 201, resp.body
    cid = resp.json()["Id"]
    try:
        exported = api.request("GET", f"/containers/{cid}/export")
        assert exported.status == 200, exported.body[:300]
    finally:
        api.request("DELETE", f"/containers/{cid}?force=1")
    return tar_files(exported.body, under)


def tar_files(data: bytes, under: str = "") -> FileTable:
    table: FileTable = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            name = member.name.rstrip("/")
            if under:
                if not name.startswith(under + "/"):
                    continue
                name = name[len(under) + 1 :]
            mode = member.mode & 0o7777
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                table[name] = ("file", mode, hashlib.sha256(handle.read()).hexdigest())
            elif member.issym():
                table[name] = ("symlink", mode, member.linkname)
            elif member.islnk():
                table[name] = ("hardlink", mode, member.linkname)
            elif member.isdir():
                table[name] = ("dir", mode, "")
    return table


def remove_image(api: Any, ref: str) -> None:
    api.request("DELETE", f"/images/{urllib.parse.quote(ref, safe='')}?force=1&noprune=0")


# ------------------------------------------------------------- what the CLI uploads

class CLICapture(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    body = b""
    query = ""

    def get_request(self) -> Any:
        conn, _ = super().get_request()
        return conn, ("local", 0)


class _UploadReceiver(http.server.BaseHTTPRequestHandler):
    """Answers the docker CLI enough to receive one /build upload."""

    protocol_version = "HTTP/1.1"
    server: CLICapture

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Api-Version", "1.41")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._send(200, b"")

    def do_GET(self) -> None:
        self._send(200 if "_ping" in self.path else 404, b"OK" if "_ping" in self.path else b"{}")

    def do_POST(self) -> None:
        data = b""
        if self.headers.get("Transfer-Encoding") == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.body, self.server.query = data, self.path
        self._send(200, json.dumps({"aux": {"ID": "sha256:" + "0" * 64}}).encode() + b"\n")

    def log_message(self, *args: Any) -> None:
        pass


class CLIRefused(Exception):
    """The reference CLI refused the build before uploading anything; the message is its output."""


def cli_uploader(workdir: Path) -> Iterator[Any]:
    """``upload(context, dockerfile=None) -> (body, query)`` as the docker 20.10 CLI sends them.

    A fake daemon on a unix socket under ``workdir`` receives the upload; a CLI that exits
    non-zero raises :class:`CLIRefused` with its output.
    """
    sock = str(workdir / "fake.sock")
    server = CLICapture(sock, _UploadReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def upload(context: Path, dockerfile: Optional[Path] = None) -> Tuple[bytes, str]:
        cmd = [DOCKER_CLI, "build", "-q"] + (["-f", str(dockerfile)] if dockerfile else []) + [str(context)]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise CLIRefused((proc.stdout + proc.stderr).strip())
        return server.body, server.query

    try:
        yield upload
    finally:
        server.shutdown()
        server.server_close()
