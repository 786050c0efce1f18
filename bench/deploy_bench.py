"""Outage during a redeploy: cdtools vs the seed's naive sequence (stop, rm, create, start), same run.

A client polls http://127.0.0.1:PORT/ every 10 ms (a new connection each time,
one request at a time, --client-timeout 0.5 s) while the service goes from page
v1 to page v2.  For each way of deploying it prints the longest outage the
client saw (the longest time between two answers, as they arrived: a refused
request and an answer that took a second both count), how many rounds had a
request that hung (0.3 s or more, answered late or never), the time of the
deploy call, and the time until the polling client got v2; for a program that
exits on SIGTERM and for one that ignores it (busybox httpd as PID 1).  The
last lines compare each cdtools way's longest outage with the naive
sequence's, in the same run (the issue's target: <= 0.5).

    python bench/deploy_bench.py [--rounds 5] [--port 18480] [--client-timeout 0.5]

A hung request is docker-proxy's: it accepts a connection before the new
container's interface exists, and its SYN to the container is lost until TCP's
1 s retry (see cdtools/startfirst.py).  A longer --client-timeout lets the
client wait that out (~1.0-1.2 s outage) instead of giving up at 0.5 s.

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
NAIVE = "naive stop/rm/create/start"
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

    def __init__(self, port: int, timeout: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.timeout = timeout
        #: (when the request was sent, the page or None, seconds it took)
        self.samples: List[Tuple[float, Optional[str], float]] = []
        self._done = threading.Event()

    def once(self) -> Optional[str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
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
            sent = time.monotonic()
            body = self.once()
            self.samples.append((sent, body, time.monotonic() - sent))
            tick += 0.010
            time.sleep(max(0.0, tick - time.monotonic()))

    def stop(self) -> None:
        self._done.set()
        self.join()

    def longest_outage(self) -> float:
        """Longest time the client went without an answer: between two answers as they arrived.

        Counted from arrivals, not from when requests were sent, so that an answer that
        took a second (docker-proxy waiting out TCP's SYN retry) counts as the second
        of outage the user saw, with any client timeout.  With no outage this is the
        polling interval plus one request, ~10-15 ms.
        """
        longest = 0.0
        last_ok: Optional[float] = None
        for sent, body, took in self.samples:
            if body is None:
                continue
            arrived = sent + took
            if last_ok is not None:
                longest = max(longest, arrived - last_ok)
            last_ok = arrived
        if self.samples and last_ok is not None and self.samples[-1][1] is None:  # never came back
            sent, _, took = self.samples[-1]
            longest = max(longest, sent + took - last_ok)
        return longest

    def wait_for(self, page: str, timeout: float = 30.0) -> None:
        """Until this client itself has been served ``page`` (another client may be served sooner)."""
        deadline = time.monotonic() + timeout
        while not any(body == page for _, body, _ in self.samples[-50:]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} never served {page!r} to the polling client")
            time.sleep(0.01)

    def hung(self) -> int:
        """Requests that waited 0.3 s or more (answered late, or not before the client gave up)."""
        return sum(1 for _, _, took in self.samples if took >= min(0.3, self.timeout * 0.9))


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
              port: int, client_timeout: float = 0.5) -> Tuple[float, float, float, int]:
    name = f"{PREFIX}-svc"
    remove(engine, name)
    how(engine, name, v1, port)
    wait_serving(port, "v1")
    poller = Poller(port, client_timeout)
    poller.start()
    time.sleep(0.3)
    started = time.monotonic()
    how(engine, name, v2, port)
    total = time.monotonic() - started
    # The polling client, not a fresh one: its request may hang on docker-proxy while a new
    # connection is served at once, and stopping it then would cut its outage short.
    poller.wait_for("v2")
    answers = time.monotonic() - started
    time.sleep(0.3)
    poller.stop()
    remove(engine, name)
    return poller.longest_outage(), total, answers, poller.hung()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--port", type=int, default=18480)
    p.add_argument("--client-timeout", type=float, default=0.5, metavar="S",
                   help="how long the polling client waits for one answer (default 0.5)")
    args = p.parse_args(argv)
    engine = connect(current())
    images = {}
    for kind, cmd in (("term", HANDLES_TERM), ("ignore", IGNORES_TERM)):
        for version in ("v1", "v2"):
            tag = f"{PREFIX}-{kind}:{version}"
            build(tag, version, cmd)
            images[(kind, version)] = tag
    probe = ["--probe", f"http://127.0.0.1:{args.port}/"]
    classic = ["--no-start-first"]
    ways: List[Tuple[str, str, Callable[[Engine, str, str, int], None]]] = [
        ("term", NAIVE, naive),
        ("term", "cdtools --probe", cdtools_deploy(probe)),
        ("term", "cdtools (settle gate 3 s)", cdtools_deploy([])),
        ("term", "cdtools --probe --no-start-first", cdtools_deploy(probe + classic)),
        ("ignore", NAIVE, naive),
        ("ignore", "cdtools --probe", cdtools_deploy(probe)),
        ("ignore", "cdtools --probe --no-fast-kill", cdtools_deploy(probe + ["--no-fast-kill"])),
        ("ignore", "cdtools --probe --no-start-first", cdtools_deploy(probe + classic)),
    ]
    results: Dict[Tuple[str, str], List[Tuple[float, float, float, int]]] = {}
    try:
        for _ in range(args.rounds):
            for kind, label, how in ways:
                results.setdefault((kind, label), []).append(
                    one_round(engine, how, images[(kind, "v1")], images[(kind, "v2")], args.port,
                              args.client_timeout))
    finally:
        remove(engine, f"{PREFIX}-svc")
        for tag in images.values():
            try:
                engine.remove_image(tag, force=True)
            except NotFound:
                pass
    print(f"outage seen by a client polling every 10 ms ({args.client_timeout:g} s client timeout); "
          f"{args.rounds} round(s); port {args.port}; figures are median (max)")
    print(f"{'program':<17}{'deploy':<34}{'longest outage':>18}{'hung':>7}{'deploy call':>16}"
          f"{'until v2 answers':>19}")
    for (kind, label), rows in results.items():
        program = "exits on SIGTERM" if kind == "term" else "ignores SIGTERM"
        cols = []
        for i, unit in ((0, "ms"), (1, "s"), (2, "s")):
            values = [r[i] * (1000 if unit == "ms" else 1) for r in rows]
            fmt = "{:.0f}" if unit == "ms" else "{:.2f}"
            cols.append(f"{fmt.format(statistics.median(values))} ({fmt.format(max(values))}) {unit}")
        hung = f"{sum(1 for r in rows if r[3])}/{len(rows)}"
        print(f"{program:<17}{label:<34}{cols[0]:>18}{hung:>7}{cols[1]:>16}{cols[2]:>19}")
    print("longest outage over all rounds, cdtools / naive (target <= 0.5):")
    for (kind, label), rows in results.items():
        if label == NAIVE:
            continue
        worst = max(r[0] for r in rows)
        naive_worst = max(r[0] for r in results[(kind, NAIVE)])
        ratio = worst / naive_worst if naive_worst else float("inf")
        print(f"  {kind:<7}{label:<34}{worst * 1000:6.0f} / {naive_worst * 1000:.0f} ms = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
