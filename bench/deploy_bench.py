"""Outage during a redeploy: cdtools vs the seed's naive sequence (stop, rm, create, start), same run.

A client polls http://127.0.0.1:PORT/ every 10 ms (a new connection each time)
while the service goes from page v1 to page v2.  For each way of deploying it
prints the longest outage the client saw (last answer before the gap to the
first answer after it) and the total time of the deploy call, for a program
that exits on SIGTERM and for one that ignores it (busybox httpd as PID 1).

    python bench/deploy_bench.py [--rounds 3] [--port 18480]

Needs the local test bed (busybox:latest on the daemon, Debian's docker CLI
for the image builds).  Everything it creates is named cdtools-bench-* and
removed at the end.
"""
from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdtools import deploy  # noqa: E402
from cdtools.console import Console  # noqa: E402
from cdtools.engine import Engine, connect  # noqa: E402
from cdtools.errors import NotFound  # noqa: E402
from cdtools.settings import current  # noqa: E402

PREFIX = "cdtools-bench"
DOCKER_CLI = "/usr/bin/docker"
# exits on SIGTERM: the shell is PID 1 and has a handler
HANDLES_TERM = ('["sh", "-c", "httpd -f -p 8080 -h /www & pid=$!; trap \'kill $pid; exit 0\' TERM; '
                'wait $pid"]')
# ignores SIGTERM: busybox httpd as PID 1 has no handler, so the kernel drops the signal
IGNORES_TERM = '["httpd", "-f", "-p", "8080", "-h", "/www"]'


def build(tag: str, page: str, cmd: str) -> None:
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "index.html").write_text(page + "\n")
        Path(ctx, "Dockerfile").write_text(f"FROM busybox\nCOPY index.html /www/\nEXPOSE 8080\nCMD {cmd}\n")
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        subprocess.run([DOCKER_CLI, "build", "-q", "-t", tag, ctx], env=env, check=True, stdout=subprocess.DEVNULL)


class Poller(threading.Thread):
    """GET / every 10 ms on a fresh connection; remembers (time, body or None)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: List[Tuple[float, Optional[str]]] = []
        self._done = threading.Event()

    def once(self) -> Optional[str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read().decode().strip()
            return body if resp.status == 200 else None
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def run(self) -> None:
        tick = time.monotonic()
        while not self._done.is_set():
            self.samples.append((time.monotonic(), self.once()))
            tick += 0.010
            time.sleep(max(0.0, tick - time.monotonic()))

    def stop(self) -> None:
        self._done.set()
        self.join()

    def longest_outage(self) -> float:
        """Longest span from the last answer before a failure to the first answer after it."""
        longest = 0.0
        last_ok: Optional[float] = None
        failed = False
        for t, body in self.samples:
            if body is None:
                failed = True
                continue
            if failed and last_ok is not None:
                longest = max(longest, t - last_ok)
            last_ok, failed = t, False
        if failed and last_ok is not None:  # never came back
            longest = max(longest, self.samples[-1][0] - last_ok)
        return longest


def wait_serving(port: int, page: str, timeout: float = 30.0) -> None:
    p = Poller(port)
    deadline = time.monotonic() + timeout
    while p.once() != page:
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} never served {page!r}")
        time.sleep(0.02)


def remove(engine: Engine, name: str) -> None:
    for n in (name, name + "-previous", name + deploy.TEMP_SUFFIX, name + "-cdtools-lock"):
        try:
            engine.remove_container(n, force=True)
        except NotFound:
            pass


def naive_body(image: str, port: int) -> Dict[str, object]:
    return {"Image": image, "ExposedPorts": {"8080/tcp": {}},
            "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}}}


def naive(engine: Engine, name: str, image: str, port: int) -> None:
    """The seed's sequence: stop (docker's default timeout), remove, create, start."""
    try:
        engine.stop(name)
        engine.remove_container(name)
    except NotFound:
        pass
    engine.create_container(name, naive_body(image, port))
    engine.start(name)


def cdtools_deploy(extra: List[str]) -> Callable[[Engine, str, str, int], None]:
    def go(engine: Engine, name: str, image: str, port: int) -> None:
        argv = ["--name", name, "--image", image, "-p", f"127.0.0.1:{port}:8080", *extra]
        args = deploy.build_parser("bench", "").parse_args(argv)
        opts = deploy.options_from_args(args)
        deploy.run(engine, opts, current(), console=Console(io.StringIO(), tty=False))
    return go


def one_round(engine: Engine, how: Callable[[Engine, str, str, int], None], v1: str, v2: str,
              port: int) -> Tuple[float, float, float]:
    name = f"{PREFIX}-svc"
    remove(engine, name)
    how(engine, name, v1, port)
    wait_serving(port, "v1")
    poller = Poller(port)
    poller.start()
    time.sleep(0.3)
    started = time.monotonic()
    how(engine, name, v2, port)
    total = time.monotonic() - started
    wait_serving(port, "v2")
    answers = time.monotonic() - started
    time.sleep(0.3)
    poller.stop()
    remove(engine, name)
    return poller.longest_outage(), total, answers


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--port", type=int, default=18480)
    args = p.parse_args(argv)
    engine = connect(current())
    images = {}
    for kind, cmd in (("term", HANDLES_TERM), ("ignore", IGNORES_TERM)):
        for version in ("v1", "v2"):
            tag = f"{PREFIX}-{kind}:{version}"
            build(tag, version, cmd)
            images[(kind, version)] = tag
    probe = ["--probe", f"http://127.0.0.1:{args.port}/"]
    ways: List[Tuple[str, str, Callable[[Engine, str, str, int], None]]] = [
        ("term", "naive stop/rm/create/start", naive),
        ("term", "cdtools --probe", cdtools_deploy(probe)),
        ("term", "cdtools (settle gate 3 s)", cdtools_deploy([])),
        ("ignore", "naive stop/rm/create/start", naive),
        ("ignore", "cdtools --probe", cdtools_deploy(probe)),
        ("ignore", "cdtools --probe --no-fast-kill", cdtools_deploy(probe + ["--no-fast-kill"])),
    ]
    results: Dict[Tuple[str, str], List[Tuple[float, float, float]]] = {}
    try:
        for _ in range(args.rounds):
            for kind, label, how in ways:
                results.setdefault((kind, label), []).append(
                    one_round(engine, how, images[(kind, "v1")], images[(kind, "v2")], args.port))
    finally:
        remove(engine, f"{PREFIX}-svc")
        for tag in images.values():
            try:
                engine.remove_image(tag, force=True)
            except NotFound:
                pass
    print(f"outage seen by a client polling every 10 ms (0.5 s client timeout); {args.rounds} round(s); "
          f"port {args.port}; figures are median (max)")
    print(f"{'program':<17}{'deploy':<32}{'longest outage':>18}{'deploy call':>18}{'until v2 answers':>20}")
    for (kind, label), rows in results.items():
        program = "exits on SIGTERM" if kind == "term" else "ignores SIGTERM"
        cols = []
        for i, unit in ((0, "ms"), (1, "s"), (2, "s")):
            values = [r[i] * (1000 if unit == "ms" else 1) for r in rows]
            fmt = "{:.0f}" if unit == "ms" else "{:.2f}"
            cols.append(f"{fmt.format(statistics.median(values))} ({fmt.format(max(values))}) {unit}")
        print(f"{program:<17}{label:<32}{cols[0]:>18}{cols[1]:>18}{cols[2]:>20}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
