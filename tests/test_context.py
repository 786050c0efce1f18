"""The build context: the plan (what is sent), the tar stream, and Dockerfile-aware pruning.

The stream is checked by reading it back with ``tarfile``, against the bytes the docker
20.10 CLI uploads for the same tree (captured by a fake daemon on a unix socket), and on
the real daemon: images built from a pruned context equal those built from the full one.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from contextkit import FileTable, build_with_plan, image_files
from cdtools.context import ContextPlan, plan_context, stream_context
from cdtools.dockerfile import ImageConfig
from cdtools.errors import UsageError
from conftest import unavailable



def write(path: Path, content: "str | bytes" = "x", mode: Optional[int] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    if mode is not None:
        path.chmod(mode)
    return path


def members(data: bytes) -> Dict[str, Tuple[tarfile.TarInfo, bytes]]:
    out: Dict[str, Tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            out[member.name] = (member, handle.read() if handle else b"")
    return out


def tar_of(plan: ContextPlan, **kw: Any) -> bytes:
    return b"".join(stream_context(plan, **kw))


def quiet(message: str) -> None:
    pass


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Every kind of entry the stream handles."""
    root = tmp_path / "ctx"
    write(root / "Dockerfile", "FROM scratch\nCOPY . /ctx/\n")
    write(root / "bin" / "run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    write(root / "empty.txt", "")
    write(root / "data" / "blob.bin", bytes(range(256)) * 20)
    os.link(root / "data" / "blob.bin", root / "data" / "hard.bin")
    os.symlink("data/blob.bin", root / "link")
    os.symlink("nowhere/none", root / "broken")
    write(root / ("deep/" + "d" * 90 + "/" + "f" * 60 + ".txt"), "long")  # fits ustar's prefix + name
    write(root / ("n" * 120 + ".txt"), "longer")  # one component over 100 bytes: PAX
    write(root / "ünïcødé.txt", "unicode")
    os.symlink("t" * 150, root / "longlink")
    (root / "emptydir").mkdir()
    os.chown(root / "empty.txt", 1000, 1000)
    return root


# ------------------------------------------------------------------------ the stream

def test_stream_reads_back_with_the_clis_header_fields(tree: Path) -> None:
    plan = plan_context(str(tree), warn=quiet)
    got = members(tar_of(plan))
    names = {n.rstrip("/") for n in got}
    assert names == set(plan.entries)
    for rel in plan.entries:
        member, content = got[rel]
        st = os.lstat(tree / rel)
        assert (member.uid, member.gid) == (0, 0)  # owner 0:0, as the CLI sends
        assert member.uname == _user(st.st_uid) and member.mtime == int(st.st_mtime)
        assert member.mode == (st.st_mode & 0o7777) | stat.S_IFMT(st.st_mode)  # type bits too, as Go writes them
        if member.isfile():
            assert content == (tree / rel).read_bytes() and member.size == st.st_size
    assert got["bin/run.sh"][0].mode & 0o777 == 0o755
    assert got["link"][0].issym() and got["link"][0].linkname == "data/blob.bin"
    assert got["broken"][0].issym() and got["broken"][0].linkname == "nowhere/none"
    assert got["data/hard.bin"][0].islnk() and got["data/hard.bin"][0].linkname == "data/blob.bin"
    assert got["longlink"][0].linkname == "t" * 150 and "linkpath" in got["longlink"][0].pax_headers
    long_name = next(n for n in got if n.startswith("deep/d") and n.endswith(".txt"))
    assert got[long_name][1] == b"long" and not got[long_name][0].pax_headers  # Go splits it, as here
    assert got["n" * 120 + ".txt"][0].pax_headers["path"] == "n" * 120 + ".txt"
    assert got["ünïcødé.txt"][0].pax_headers["path"] == "ünïcødé.txt"
    assert got["emptydir"][0].isdir()
    assert got["empty.txt"][0].uname == _user(1000)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def test_entries_come_in_the_sorted_walk_order(tmp_path: Path) -> None:
    for name in ["b", "a.txt", "a/z", "a/b", "A", "_"]:
        write(tmp_path / name)
    write(tmp_path / "Dockerfile", "FROM scratch\n")
    assert plan_context(str(tmp_path)).entries == ("A", "Dockerfile", "_", "a", "a/b", "a/z", "a.txt", "b")


def test_gzip_round_trip(tree: Path) -> None:
    plan = plan_context(str(tree), warn=quiet)
    packed = tar_of(plan, compress=True)
    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == tar_of(plan)


def test_chunks_stay_bounded_for_a_big_file(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM scratch\n")
    write(tmp_path / "big.bin", os.urandom(3 * 1024 * 1024 + 7))
    sizes = [len(c) for c in stream_context(plan_context(str(tmp_path)), chunk_size=64 * 1024)]
    assert len(sizes) > 40
    assert max(sizes) <= 64 * 1024 + 2048  # a chunk, plus at most a few headers and padding


def test_fifo_and_socket_are_skipped_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM scratch\n")
    os.mkfifo(tmp_path / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        warnings: List[str] = []
        plan = plan_context(str(tmp_path), warn=warnings.append)
    finally:
        sock.close()
    assert plan.entries == ("Dockerfile",)
    assert any("pipe" in w for w in warnings) and any("sock" in w for w in warnings)
    assert set(members(tar_of(plan))) == {"Dockerfile"}


def test_a_file_that_vanished_fails_with_its_path(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM scratch\n")
    gone = write(tmp_path / "sub" / "gone.txt")
    plan = plan_context(str(tmp_path))
    gone.unlink()
    with pytest.raises(UsageError, match=str(gone)):
        tar_of(plan)


def test_a_file_that_shrinks_while_sent_fails_and_one_that_grows_is_cut(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM scratch\n")
    big = write(tmp_path / "big.bin", b"a" * (4 * 4096))
    plan = plan_context(str(tmp_path))

    stream = stream_context(plan, chunk_size=4096)
    next(stream), next(stream)  # headers, then the first 4 KiB of big.bin
    big.write_bytes(b"a" * 100)
    with pytest.raises(UsageError, match="big.bin shrank"):
        list(stream)

    big.write_bytes(b"a" * (4 * 4096))
    warnings: List[str] = []
    stream = stream_context(plan, chunk_size=4096, warn=warnings.append)
    first = [next(stream), next(stream)]
    with big.open("ab") as handle:
        handle.write(b"b" * 1000)
    data = b"".join(first + list(stream))
    assert members(data)["big.bin"][1] == b"a" * (4 * 4096)
    assert any("big.bin grew" in w for w in warnings)


SETPRIV = "/usr/bin/setpriv"


def _without_dac_override(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run code as root without CAP_DAC_OVERRIDE/READ_SEARCH: mode 000 then really means unreadable."""
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin:/bin"}
    cmd = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_unreadable_file_and_directory_fail_naming_them(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not os.path.exists(SETPRIV):
        unavailable("needs root and setpriv (util-linux)")
    root = tmp_path / "ctx"
    write(root / "Dockerfile", "FROM scratch\n")
    secret = write(root / "secret.txt", "s", mode=0o000)
    code = (
        "import sys\nfrom cdtools.context import plan_context, stream_context\nfrom cdtools.errors import UsageError\n"
        "try:\n    b''.join(stream_context(plan_context('.')))\nexcept UsageError as e:\n    print(e); sys.exit(e.exit_code)\n"
    )
    proc = _without_dac_override(code, root)
    assert proc.returncode == 2 and str(secret) in proc.stdout, proc.stdout + proc.stderr
    secret.unlink()
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0o000)
    try:
        proc = _without_dac_override(code, root)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 2 and str(locked) in proc.stdout, proc.stdout + proc.stderr


# -------------------------------------------------------------------- the Dockerfile

def test_missing_context_or_dockerfile_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nope"):
        plan_context(str(tmp_path / "nope"))
    write(tmp_path / "file")
    with pytest.raises(UsageError, match="must be a directory"):
        plan_context(str(tmp_path / "file"))
    with pytest.raises(UsageError, match=str(tmp_path / "Dockerfile")):
        plan_context(str(tmp_path))
    with pytest.raises(UsageError, match="Other.df"):
        plan_context(str(tmp_path), str(tmp_path / "Other.df"))


def test_lower_case_dockerfile_is_found_and_a_symlinked_one_resolved(tmp_path: Path) -> None:
    write(tmp_path / "dockerfile", "FROM scratch\n")
    assert plan_context(str(tmp_path)).dockerfile == "dockerfile"
    write(tmp_path / "ci" / "Dockerfile.prod", "FROM scratch\n")
    os.symlink("ci/Dockerfile.prod", tmp_path / "Dockerfile")
    assert plan_context(str(tmp_path)).dockerfile == "ci/Dockerfile.prod"


def test_dockerfile_outside_the_context_travels_under_a_generated_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context = tmp_path / "ctx"
    write(context / "a.txt")
    outside = write(tmp_path / "build" / "Dockerfile", "FROM scratch\nCOPY a.txt /\n")
    monkeypatch.chdir(tmp_path / "build")
    plan = plan_context(str(context), "Dockerfile")  # -f is relative to the current directory
    assert plan.dockerfile.startswith(".dockerfile.") and len(plan.dockerfile) == len(".dockerfile.") + 20
    assert plan.dockerfile_source == str(outside)
    got = members(tar_of(plan))
    assert got[plan.dockerfile][1] == outside.read_bytes() and got[plan.dockerfile][0].mode & 0o777 == 0o600
    # a .dockerignore that makes the daemon delete the generated file again
    assert got[".dockerignore"][1] == f".dockerignore\n{plan.dockerfile}\n".encode()

    write(context / ".dockerignore", "*.log")
    os.link(context / ".dockerignore", context / "z_copy")
    plan = plan_context(str(context), str(outside))
    got = members(tar_of(plan))
    assert got[".dockerignore"][1] == f"*.log\n{plan.dockerfile}\n".encode()
    # a second name of the rewritten file links to it, as the CLI sends it: both hold the new text
    assert got["z_copy"][0].islnk() and got["z_copy"][0].linkname == ".dockerignore"


def test_buildkit_dockerfile_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM scratch\nRUN --mount=type=cache,target=/c true\n")
    with pytest.raises(UsageError, match="BuildKit"):
        plan_context(str(tmp_path))


# ------------------------------------------------------------- what the CLI uploads

def test_stream_is_byte_identical_to_the_cli_upload(tree: Path, cli_upload: Any) -> None:
    write(tree / ".dockerignore", "data/*.bin\n!data/hard.bin\n*.txt\n!ünïcødé.txt\nDockerfile\n")
    write(tree / "data" / "keep.md", "kept")
    body, query = cli_upload(tree)
    plan = plan_context(str(tree), warn=quiet)
    assert "dockerfile=Dockerfile" in query
    assert tar_of(plan) == body


def test_custom_dockerfile_excluded_by_the_patterns_is_still_sent_like_the_cli(tree: Path, cli_upload: Any) -> None:
    write(tree / "ci" / "Dockerfile.x", "FROM scratch\n")
    write(tree / ".dockerignore", "ci\n*\n!bin\n")
    body, query = cli_upload(tree, tree / "ci" / "Dockerfile.x")
    plan = plan_context(str(tree), str(tree / "ci" / "Dockerfile.x"), warn=quiet)
    assert "dockerfile=ci%2FDockerfile.x" in query
    assert "ci/Dockerfile.x" in plan.entries and tar_of(plan) == body



#: a VFS_CAP_REVISION_2 ``security.capability`` value: cap_net_raw permitted and effective
_CAP_NET_RAW = bytes.fromhex("01000002") + (1 << 13).to_bytes(4, "little") + bytes(12)


def test_headers_off_the_common_path_are_byte_identical_to_the_cli(tree: Path, cli_upload: Any) -> None:
    """The stream's fast path serves the common file; these take the general one, and still match."""
    old = write(tree / "old.txt", "1960")
    os.utime(old, (-315619200, -315619200))  # before 1970: no ustar mtime
    future = write(tree / "future.txt", "2300")
    os.utime(future, (10_413_792_000, 10_413_792_000))  # past 8**11 seconds
    capped = write(tree / "bin" / "ping", b"\x7fELF" + bytes(600), mode=0o755)
    try:
        os.setxattr(capped, "security.capability", _CAP_NET_RAW)
    except OSError as exc:  # not root, or a filesystem without xattrs
        unavailable(f"cannot set security.capability: {exc}")
    os.link(capped, tree / "bin" / "ping6")  # a link entry carries the capability too
    (tree / "capdir").mkdir()
    os.setxattr(tree / "capdir", "security.capability", _CAP_NET_RAW)  # as do directories
    os.symlink("bin/ping", tree / "capsym")
    os.setxattr(tree / "capsym", "security.capability", _CAP_NET_RAW, follow_symlinks=False)  # and symlinks
    write(tree / "é", "all of the last name is non-ASCII: Go names its PAX header 'PaxHeaders.0'")
    write(tree / ("h" * 86 + "/" + "t" * 120), "the PAX header name is cut to 100 bytes just after a '/'")
    for i, (uid, gid) in enumerate(((0, 0), (1000, 1000), (0, 1000), (54321, 54321))):
        owned = write(tree / "owners" / f"f{i}.txt", "o" * (500 + i))  # the 4th owner has no names
        os.chown(owned, uid, gid)
    write(tree / "big.bin", os.urandom(200_000))  # read in several chunks
    body, _ = cli_upload(tree)
    plan = plan_context(str(tree), warn=quiet)
    got = tar_of(plan)
    for capable in ("bin/ping", "bin/ping6", "capdir", "capsym"):
        assert members(got)[capable][0].pax_headers["SCHILY.xattr.security.capability"]
    assert got == body


def test_names_with_newlines_and_invalid_utf8_are_sent_like_the_cli(tmp_path: Path, cli_upload: Any) -> None:
    """Go's strings are bytes: a name that is not UTF-8 goes as it is, and patterns match it byte for byte."""
    root = tmp_path / "odd"
    write(root / "Dockerfile", "FROM scratch\nCOPY . /ctx/\n")
    base = os.fsencode(root)
    for name in (b"new\nline.txt", b"bad\xff.txt", b"bad\xfe.log", b"d\xe9j\xe0/vu.txt", b"tab\there.log",
                 b"keep\xff.log", b"nl\n/inner.txt"):
        path = os.path.join(base, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(name)
    (root / ".dockerignore").write_bytes(b"*.log\n!keep\xff.log\nnl?\n")
    body, _ = cli_upload(root)
    plan = plan_context(str(root), warn=quiet)
    sent = {os.fsencode(rel) for rel in plan.entries}
    assert {b"new\nline.txt", b"bad\xff.txt", b"keep\xff.log", b"d\xe9j\xe0/vu.txt"} <= sent
    assert not sent & {b"bad\xfe.log", b"tab\there.log", b"nl\n/inner.txt"}
    assert tar_of(plan) == body


# ------------------------------------------------------------- Dockerfile-aware pruning

@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write(root / "target" / "app.jar", b"\x50\x4b" + bytes(1000))
    write(root / "target" / "classes" / "A.class", "A")
    for i in range(5):
        write(root / "src" / f"m{i}.py", f"print({i})")
    (root / "src" / "empty").mkdir()
    os.symlink("m0.py", root / "src" / "alias.py")
    write(root / "conf" / "a.conf", "a")
    write(root / "conf.d" / "b.conf", "b")
    write(root / "docs" / "x.md", "doc")
    write(root / "lib" / "v2" / "lib.so", "so")
    os.symlink("v2", root / "lib" / "current")
    write(root / "build.log", "log")
    write(root / "node_modules" / "m" / "index.js", "js")
    write(root / ".dockerignore", "node_modules\n**/*.log\n")
    return root


def plan_for(root: Path, dockerfile: str, **kw: Any) -> ContextPlan:
    write(root / "Dockerfile", dockerfile)
    return plan_context(str(root), prune=True, warn=quiet, **kw)


def test_pruning_sends_only_what_copy_reads(workspace: Path) -> None:
    plan = plan_for(workspace, "FROM scratch\nCOPY target/app.jar /app.jar\n")
    assert plan.entries == (".dockerignore", "Dockerfile", "target", "target/app.jar")
    assert plan.full_reason is None
    full = plan_context(str(workspace), warn=quiet)
    files = sum(1 for e in full.entries if not (workspace / e).is_dir() or (workspace / e).is_symlink())
    assert plan.pruned_reason == f"Dockerfile-aware: 3 of {files} files"


def test_a_directory_source_takes_its_subtree_with_links_as_links(workspace: Path) -> None:
    plan = plan_for(workspace, "FROM scratch\nARG SRC=src\nCOPY ${SRC}/ /app/\n")
    assert [e for e in plan.entries if e.startswith("src")] == [
        "src", "src/alias.py", "src/empty", "src/m0.py", "src/m1.py", "src/m2.py", "src/m3.py", "src/m4.py",
    ]


def test_wildcards_follow_go_filepath_match(workspace: Path) -> None:
    plan = plan_for(workspace, "FROM scratch\nCOPY conf* /c/\nCOPY */*.md /d/\n")
    assert set(plan.entries) == {
        ".dockerignore", "Dockerfile", "conf", "conf/a.conf", "conf.d", "conf.d/b.conf", "docs", "docs/x.md",
    }


def test_a_symlinked_source_brings_its_link_and_target(workspace: Path) -> None:
    plan = plan_for(workspace, "FROM scratch\nCOPY lib/current/ /lib/\n")
    assert set(plan.entries) == {".dockerignore", "Dockerfile", "lib", "lib/current", "lib/v2", "lib/v2/lib.so"}


def test_dockerignore_still_applies_to_a_pruned_context(workspace: Path) -> None:
    plan = plan_for(workspace, "FROM scratch\nCOPY node_modules build.log /x/\nCOPY . /all/\n")
    assert "build.log" not in plan.entries and not any(e.startswith("node_modules") for e in plan.entries)
    assert plan.entries == plan_context(str(workspace), warn=quiet).entries  # "." is everything


def test_unknown_base_image_sends_the_full_context_and_says_why(workspace: Path) -> None:
    plan = plan_for(workspace, "FROM busybox\nCOPY target/app.jar /app.jar\n")
    assert plan.pruned_reason is None and plan.full_reason is not None and "busybox" in plan.full_reason
    assert plan.entries == plan_context(str(workspace), warn=quiet).entries

    plan = plan_for(workspace, "FROM busybox\nCOPY target/app.jar /app.jar\n",
                    inspect_image=lambda name: ImageConfig(env=("PATH=/bin",), onbuild=()))
    assert plan.full_reason is None and "target/app.jar" in plan.entries and "src" not in plan.entries


def test_an_unresolvable_source_sends_the_full_context(workspace: Path) -> None:
    plan = plan_for(workspace, "FROM scratch\nCOPY ${NOPE:?unset} /x\n")
    assert plan.full_reason is not None and plan.pruned_reason is None
    assert plan.entries == plan_context(str(workspace), warn=quiet).entries


# ---------------------------------------------- pruned and full builds give one image

SYSTEM_FILES = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"}


def _content(table: FileTable) -> FileTable:
    return {p: v for p, v in table.items() if p not in SYSTEM_FILES and not p.startswith(("dev", "proc", "sys"))}


PRUNING_CASES = [
    ("jar", "FROM scratch\nCOPY target/app.jar /app.jar\n", {}),
    ("arg-dir-run", "FROM busybox\nARG SRC=src\nCOPY ${SRC}/ /app/\nRUN ls -laR /app > /listing\n", {}),
    ("wildcards-links-stages",
     "FROM scratch AS build\nCOPY conf* /conf/\nFROM scratch\nCOPY --from=build /conf /c\nCOPY lib/current/ /lib/\nCOPY src/alias.py docs/*.md /d/\n",
     {}),
    ("target", "FROM scratch AS a\nCOPY conf /a\nFROM scratch AS b\nCOPY docs /b\nFROM scratch AS c\nCOPY src /c\n", {"target": "b"}),
    ("add-archive", "FROM scratch\nADD bundle.tar /x/\nCOPY target/classes /classes\n", {}),
    ("build-arg", "FROM busybox\nARG JAR=none\nCOPY $JAR /app.jar\nRUN test -s /app.jar\n", {"build_args": {"JAR": "target/app.jar"}}),
]


@pytest.mark.e2e
@pytest.mark.parametrize("name, dockerfile, options", PRUNING_CASES, ids=[c[0] for c in PRUNING_CASES])
def test_pruned_context_builds_the_same_image(workspace: Path, engine_api: Any, unique: str, name: str, dockerfile: str, options: Dict[str, Any]) -> None:
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w") as tar:
        info = tarfile.TarInfo("inside/file.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    write(workspace / "bundle.tar", bundle.getvalue())

    def inspect(ref: str) -> Optional[ImageConfig]:
        resp = engine_api.request("GET", f"/images/{ref}/json")
        return ImageConfig.from_inspect(resp.json()) if resp.status == 200 else None

    write(workspace / "Dockerfile", dockerfile)
    full = plan_context(str(workspace), warn=quiet, **options)
    pruned = plan_context(str(workspace), prune=True, warn=quiet, inspect_image=inspect, **options)
    assert pruned.full_reason is None and len(pruned.entries) < len(full.entries)

    query = {}
    if options.get("target"):
        query["target"] = options["target"]
    if options.get("build_args"):
        query["buildargs"] = json.dumps(options["build_args"])
    images = [build_with_plan(engine_api, plan, f"{unique}-{kind}:latest", **query) for kind, plan in (("full", full), ("pruned", pruned))]
    tables = [_content(image_files(engine_api, image, f"{unique}-{i}")) for i, image in enumerate(images)]
    assert tables[0] and tables[0] == tables[1]
