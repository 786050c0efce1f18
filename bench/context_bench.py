"""Build-context benchmark: a realistic Jenkins workspace, packed and built several ways.

    python bench/context_bench.py [--workspace DIR] [--repeat 7] [--rss-gib 1] [--builds] [--keep]

Generates (seeded, reused when already there) the workspace issue 3 describes:
``src/`` 8,000 text files of 0.5-8 KB, ``node_modules/`` 12,000, ``.git/objects/`` 3,000,
``docs/`` 1,000 (.md/.txt/.rst/.html), ``target/app.jar`` 64 MiB random, ``build.log``
64 MiB of text; ``.dockerignore``: node_modules, .git, **/*.log, docs/**/*.md,
!docs/d000/e00/*.md; ``Dockerfile``: FROM scratch + COPY target/app.jar /app.jar.

Prints medians of:

* planning (walk + .dockerignore), full and Dockerfile-aware;
* pack throughput into a pipe (``| cat >/dev/null``) of the same files: cdtools'
  stream, GNU ``tar -cf - … | cat >/dev/null`` (not ``-f /dev/null``: GNU tar then skips
  reading), and a plain ``tarfile`` loop for reference;
* peak RSS of a process that plans and streams a ~1 GiB context (``RUSAGE_SELF`` of a
  child process), plain and gzip;
* with ``--builds`` (needs the daemon on /var/run/docker.sock and Debian's
  /usr/bin/docker): wall time of a no-cache build with ``docker build`` (DOCKER_BUILDKIT=0),
  docker-py ``APIClient.build`` when installed, and cdtools, full and Dockerfile-aware,
  for a Dockerfile copying only the jar and one with ``COPY . /app``.

The "cdtools" build rows run the real build step, ``cdtools.build.run``.

Targets from the issue: pack >= 0.7x GNU tar; RSS <= 64 MB at 1 GiB; jar-only build
<= 0.2x docker build's wall time; COPY . <= 1.0x. Figures only, no asserts.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdtools.build import run as run_build  # noqa: E402
from cdtools.console import Console  # noqa: E402
from cdtools.context import ContextPlan, plan_context, stream_context  # noqa: E402
from cdtools.engine import connect  # noqa: E402
from cdtools.settings import Settings  # noqa: E402

SEED = 3
LAYOUT_VERSION = "1"
MIB = 1024 * 1024
IGNORE = "node_modules\n.git\n**/*.log\ndocs/**/*.md\n!docs/d000/e00/*.md\n"
DOCKERFILE_JAR = "FROM scratch\nCOPY target/app.jar /app.jar\n"
DOCKERFILE_ALL = "FROM scratch\nCOPY . /app\n"
DOCKER_CLI = "/usr/bin/docker"
SOCKET = "/var/run/docker.sock"
IMAGE_PREFIX = "cdtbench-ctx"
WORDS = ("alpha beta gamma delta build deploy jenkins stage docker image layer context "
         "cache commit branch release tag push pull test suite module class import").split()


# ------------------------------------------------------------------ the workspace

def _text(rng: random.Random, size: int) -> bytes:
    out: List[str] = []
    n = 0
    while n < size:
        word = rng.choice(WORDS)
        out.append(word)
        n += len(word) + 1
    return (" ".join(out)[:size] + "\n").encode()


def generate_workspace(root: Path) -> None:
    """The issue's workspace, reproducible from SEED; skipped when a marker says it is there."""
    marker = root / ".bench-layout"
    if marker.exists() and marker.read_text() == f"{LAYOUT_VERSION}:{SEED}":
        return
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(SEED)
    t0 = time.monotonic()

    def put(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    for i in range(8000):
        put(f"src/p{i // 100:03d}/f{i:05d}.txt", _text(rng, rng.randint(512, 8192)))
    for i in range(12000):
        put(f"node_modules/m{i // 50:04d}/lib/f{i:05d}.js", _text(rng, rng.randint(200, 4000)))
    for i in range(3000):
        put(f".git/objects/{i % 256:02x}/{rng.getrandbits(152):038x}", rng.getrandbits(8 * 600).to_bytes(600, "big"))
    exts = (".md", ".txt", ".rst", ".html")
    for i in range(1000):
        put(f"docs/d{i // 100:03d}/e{(i // 10) % 10:02d}/f{i:04d}{exts[i % 4]}", _text(rng, rng.randint(300, 3000)))
    block = rng.getrandbits(8 * MIB).to_bytes(MIB, "big")
    with open(_mkparent(root / "target" / "app.jar"), "wb") as jar:
        for i in range(64):
            jar.write(bytes(b ^ i for b in block[:4096]) + block[4096:])  # not one repeated MiB
    with open(root / "build.log", "wb") as log:
        line = _text(rng, 200)
        for _ in range(64 * MIB // len(line)):
            log.write(line)
    (root / ".dockerignore").write_text(IGNORE)
    (root / "Dockerfile").write_text(DOCKERFILE_JAR)
    marker.write_text(f"{LAYOUT_VERSION}:{SEED}")
    print(f"generated {root} in {time.monotonic() - t0:.1f}s")


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def generate_big(root: Path, gib: float) -> None:
    """About ``gib`` GiB: 64 MiB files plus 64 KiB files, a quarter of the bytes in the small ones."""
    marker = root / ".bench-layout"
    if marker.exists() and marker.read_text() == f"big:{gib}":
        return
    if root.exists():
        shutil.rmtree(root)
    total = int(gib * 1024 * MIB)
    rng = random.Random(SEED)
    block = rng.getrandbits(8 * MIB).to_bytes(MIB, "big")
    big = total * 3 // 4 // (64 * MIB)
    for i in range(big):
        with open(_mkparent(root / "big" / f"b{i:03d}.bin"), "wb") as out:
            for _ in range(64):
                out.write(block)
    small = (total - big * 64 * MIB) // (64 * 1024)
    for i in range(small):
        _mkparent(root / "small" / f"d{i // 200:03d}" / f"s{i:05d}.bin").write_bytes(block[(i % 16) * 65536:][:65536])
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /x\n")
    marker.write_text(f"big:{gib}")


# ------------------------------------------------------------------ measurements

def median_time(fn: Callable[[], object], repeat: int, warmup: bool = True) -> float:
    return measure(fn, repeat, warmup)[0]


def measure(fn: Callable[[], object], repeat: int, warmup: bool = True) -> Tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process and its children)."""
    return measure_rounds({"": fn}, repeat, warmup)[""]


def measure_rounds(fns: Dict[str, Callable[[], object]], repeat: int, warmup: bool = True) -> Dict[str, Tuple[float, float]]:
    """Each function once per round, ``repeat`` rounds (+1 warm-up): medians of wall and CPU seconds.

    Rounds, not one function's runs back to back, so that a change in the machine's load
    falls on every method alike.
    """
    import resource

    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    walls: Dict[str, List[float]] = {name: [] for name in fns}
    cpus: Dict[str, List[float]] = {name: [] for name in fns}
    for round_no in range(repeat + (1 if warmup else 0)):
        for name, fn in fns.items():
            c0, t0 = cpu(), time.perf_counter()
            fn()
            wall, used = time.perf_counter() - t0, cpu() - c0
            if round_no or not warmup:
                walls[name].append(wall)
                cpus[name].append(used)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in fns}


def pack_cdtools(plan: ContextPlan) -> int:
    """cdtools' stream into ``cat``, each chunk written whole as the transport's sendall does."""
    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert cat.stdin is not None
    fd = cat.stdin.fileno()
    n = 0
    for chunk in stream_context(plan, warn=lambda m: None):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
        n += len(chunk)
    cat.stdin.close()
    cat.wait()
    return n


def pack_gnu_tar(root: str, listing: str) -> None:
    subprocess.run(
        f"tar -C {root} --no-recursion --null -T {listing} -cf - | cat >/dev/null", shell=True, check=True
    )


def pack_tarfile(plan: ContextPlan) -> None:
    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert cat.stdin is not None
    with tarfile.open(fileobj=cat.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in plan.entries:
            tar.add(os.path.join(plan.root, rel), arcname=rel, recursive=False)
    cat.stdin.close()
    cat.wait()


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec
_HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"

_RSS_CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from cdtools.context import plan_context, stream_context
plan = plan_context(sys.argv[2])
fd = os.open(os.devnull, os.O_WRONLY)
n = 0
for chunk in stream_context(plan, compress=sys.argv[3] == "1", warn=lambda m: None):
    os.write(fd, chunk)
    n += len(chunk)
print(n, len(plan.entries), HWM)
""".replace("HWM", _HWM)

_BASELINE_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
import cdtools.context
print(HWM)
""".replace("HWM", _HWM)


def peak_rss(root: Path, compress: bool) -> Tuple[int, int, float, float]:
    """(bytes streamed, entries, peak RSS KiB, seconds) of a child that plans and streams ``root``."""
    repo = str(Path(__file__).resolve().parent.parent)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, repo, str(root), "1" if compress else "0"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2]), time.perf_counter() - t0


def baseline_rss() -> int:
    repo = str(Path(__file__).resolve().parent.parent)
    return int(subprocess.run([sys.executable, "-c", _BASELINE_CHILD, repo], capture_output=True, text=True, check=True).stdout)


# ------------------------------------------------------------------------ builds

def _cdtools_build(workspace: Path, tag: str, prune: bool) -> str:
    """The real build step (``cdtools.build.run``), no cache, its output discarded."""
    engine = connect(Settings(docker_host=f"unix://{SOCKET}"))
    quiet = Console(io.StringIO(), tty=False, quiet=True)
    return run_build(engine, str(workspace), console=quiet, tags=[tag], no_cache=True, full_context=not prune).image_id


def _docker_cli_build(workspace: Path, tag: str) -> None:
    env = dict(os.environ, DOCKER_BUILDKIT="0", DOCKER_HOST=f"unix://{SOCKET}")
    subprocess.run([DOCKER_CLI, "build", "-q", "--no-cache", "-t", tag, str(workspace)], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def _docker_py_build(workspace: Path, tag: str) -> None:
    import docker  # type: ignore[import-not-found]

    client = docker.APIClient(base_url=f"unix://{SOCKET}", version="1.41")
    for record in client.build(path=str(workspace), tag=tag, nocache=True, rm=True, decode=True):
        if "error" in record:
            raise RuntimeError(record["error"])


def run_builds(workspace: Path, repeat: int) -> None:
    import importlib.util

    have_docker_py = importlib.util.find_spec("docker") is not None
    tag = f"{IMAGE_PREFIX}:latest"
    env = dict(os.environ, DOCKER_HOST=f"unix://{SOCKET}")
    methods: List[Tuple[str, Callable[[], object]]] = [("docker build (classic)", lambda: _docker_cli_build(workspace, tag))]
    if have_docker_py:
        methods.append(("docker-py APIClient.build", lambda: _docker_py_build(workspace, tag)))
    methods.append(("cdtools, full context", lambda: _cdtools_build(workspace, tag, prune=False)))
    methods.append(("cdtools, Dockerfile-aware", lambda: _cdtools_build(workspace, tag, prune=True)))
    results: Dict[Tuple[str, str], List[float]] = {}
    try:
        for label, text in (("COPY app.jar", DOCKERFILE_JAR), ("COPY . /app", DOCKERFILE_ALL)):
            (workspace / "Dockerfile").write_text(text)
            # round-robin, one warm-up round, each image deleted after its build: no method
            # pays for the layers the others left behind
            for round_no in range(repeat + 1):
                for how, fn in methods:
                    t0 = time.perf_counter()
                    fn()
                    elapsed = time.perf_counter() - t0
                    subprocess.run([DOCKER_CLI, "rmi", "-f", tag], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    if round_no:
                        results.setdefault((label, how), []).append(elapsed)
        print(f"\nbuilds, no cache, median of {repeat} rounds (+1 warm-up), methods interleaved:")
        for (label, how), times in results.items():
            seconds = statistics.median(times)
            base = statistics.median(results[(label, "docker build (classic)")])
            print(f"  {label:14} {how:28} {seconds:7.2f} s   {seconds / base:5.2f}x docker build")
        if not have_docker_py:
            print("  (docker-py not installed: its rows are missing)")
    finally:
        (workspace / "Dockerfile").write_text(DOCKERFILE_JAR)
        subprocess.run([DOCKER_CLI, "rmi", "-f", tag], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


# ---------------------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=os.path.join(tempfile.gettempdir(), "cdtools-bench-workspace"))
    parser.add_argument("--big", default=os.path.join(tempfile.gettempdir(), "cdtools-bench-1gib"))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rss-gib", type=float, default=1.0)
    parser.add_argument("--builds", action="store_true", help="also time builds on the local daemon")
    parser.add_argument("--keep", action="store_true", help="keep the generated trees for the next run")
    args = parser.parse_args(argv)

    workspace, big = Path(args.workspace), Path(args.big)
    generate_workspace(workspace)
    try:
        full = plan_context(str(workspace), warn=lambda m: None)
        pruned = plan_context(str(workspace), prune=True, warn=lambda m: None)
        files = [e for e in full.entries if not os.path.isdir(os.path.join(full.root, e))]
        size = sum(os.lstat(os.path.join(full.root, e)).st_size for e in files)
        print(f"workspace {workspace}: {len(files)} files, {size / 1e6:.0f} MB sent in full; {pruned.pruned_reason}")

        t_plan = median_time(lambda: plan_context(str(workspace), warn=lambda m: None), args.repeat)
        t_prune = median_time(lambda: plan_context(str(workspace), prune=True, warn=lambda m: None), args.repeat)
        print(f"plan (walk + .dockerignore): {t_plan * 1000:.0f} ms; Dockerfile-aware: {t_prune * 1000:.0f} ms")

        with tempfile.NamedTemporaryFile("wb", suffix=".list", delete=False) as listing:
            listing.write(b"".join(os.fsencode(e) + b"\0" for e in full.entries))
        try:
            packs = measure_rounds({"cdtools": lambda: pack_cdtools(full),
                                    "tar": lambda: pack_gnu_tar(full.root, listing.name)}, args.repeat)
            (t_ours, c_ours), (t_tar, c_tar) = packs["cdtools"], packs["tar"]
            t_tarfile, c_tarfile = measure(lambda: pack_tarfile(full), max(1, args.repeat // 2))
        finally:
            os.unlink(listing.name)
        mb = size / 1e6
        print(f"pack into a pipe ({len(full.entries)} entries, {mb:.0f} MB), median of {args.repeat} rounds; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs:")
        print(f"  GNU tar -cf - | cat   {t_tar:6.3f} s  {mb / t_tar:6.0f} MB/s   cpu {c_tar:6.3f} s")
        print(f"  cdtools stream | cat  {t_ours:6.3f} s  {mb / t_ours:6.0f} MB/s   cpu {c_ours:6.3f} s   "
              f"= {t_tar / t_ours:.2f}x GNU tar by wall time, {c_tar / c_ours:.2f}x by CPU time (target >= 0.7x)")
        print(f"  python tarfile | cat  {t_tarfile:6.3f} s  {mb / t_tarfile:6.0f} MB/s   cpu {c_tarfile:6.3f} s")

        generate_big(big, args.rss_gib)
        base = baseline_rss()
        for compress in (False, True):
            n, entries, rss, seconds = peak_rss(big, compress)
            print(f"peak RSS streaming {n / 2**30:.2f} GiB ({entries} entries{', gzip' if compress else ''}): "
                  f"{rss / 1024:.1f} MiB in {seconds:.1f}s (python + cdtools imported alone: {base / 1024:.1f} MiB; target <= 64 MB)")

        if args.builds:
            run_builds(workspace, max(1, min(args.repeat, 3)))
        else:
            print("\n(builds skipped: --builds times docker build, docker-py and cdtools on the local daemon)")
    finally:
        if not args.keep:
            shutil.rmtree(workspace, ignore_errors=True)
            shutil.rmtree(big, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
