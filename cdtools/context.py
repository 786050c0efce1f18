"""The build context: which files are sent, and the tar stream that sends them.

``plan_context`` decides, ``stream_context`` sends. The plan follows the docker 20.10
CLI (``docker build``, classic builder) exactly: the context directory and the
Dockerfile are resolved through symlinks, ``.dockerignore`` is applied with the walk
rules of moby 20.10's ``TarWithOptions`` (an excluded directory is entered only when an
exception pattern's text starts with it), and the Dockerfile and ``.dockerignore`` are
always sent: the CLI adds them back as exceptions and the daemon deletes them again
after reading them when the patterns exclude them. A Dockerfile outside the context is
sent under a generated name, ``.dockerfile.<20 hex>``, which is also appended to the
``.dockerignore`` sent so that the daemon removes it, as the CLI does.

With ``prune=True`` only the files the Dockerfile's COPY/ADD can read are sent (see
``cdtools.dockerfile``); when that can't be known for certain the whole context goes
and ``full_reason`` says why.

The stream is written as it is read: a tar header built per entry and file data read
in chunks, so memory stays bounded whatever the context size. Headers carry what the
CLI sends -- uid/gid 0, the owner's user and group *names*, the mode with its type
bits, mtime in whole seconds, hard links as link entries, symlinks as links, PAX
records for long or non-ASCII names and for ``security.capability`` -- so the daemon's
per-file checksums, and so its build cache, match a ``docker build`` of the same tree.

Not as the CLI: FIFOs, sockets and device files are skipped with a warning (the CLI
sends FIFOs and devices), and a file that cannot be read fails the plan or the stream
with ``UsageError`` naming it (the CLI logs and carries on with a broken tar).
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import secrets
import stat
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

from cdtools import dockerfile as dockerfile_mod
from cdtools import dockerignore
from cdtools.dockerignore import go_clean
from cdtools.errors import UsageError

DEFAULT_CHUNK = 32 * 1024
#: gzip level used with compress=True: level 1 keeps pace with a LAN link
GZIP_LEVEL = 1

_DIR, _FILE, _LINK = "dir", "file", "link"
_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_END = bytes(2 * _BLOCK)  # Go's tar writer ends with two zero blocks, no record padding
_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12x")
_MAX_OCTAL_11 = 0o77777777777
_GO_ZERO_TIME = -62135596800  # time.Time{}.Unix()
_CAP_XATTR = "security.capability"


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class ContextPlan:
    """What will be sent as the build context, and why it is not the whole directory."""

    root: str  # absolute context directory, symlinks resolved
    dockerfile: str  # path of the Dockerfile inside the tar, posix, as passed in ?dockerfile=
    entries: Tuple[str, ...]  # posix relative paths sent (files, links, dirs), in sorted-walk order
    pruned_reason: Optional[str]  # None when the full context is sent, else "Dockerfile-aware: N of M files"
    full_reason: Optional[str]  # why the full context was sent although pruning was asked, else None
    dockerfile_source: Optional[str] = None  # absolute path of a Dockerfile outside the context
    excludes: Tuple[str, ...] = ()  # the .dockerignore patterns as read
    dockerfile_data: bytes = b""  # the Dockerfile's bytes, as read once for the plan


def plan_context(
    root: str,
    dockerfile: Optional[str] = None,
    *,
    prune: bool = False,
    build_args: Mapping[str, str] = {},
    target: Optional[str] = None,
    warn: Callable[[str], None] = _warn_stderr,
    inspect_image: Optional[Callable[[str], Optional[dockerfile_mod.ImageConfig]]] = None,
) -> ContextPlan:
    """Decide what ``docker build [-f DOCKERFILE] ROOT`` sends.

    ``dockerfile`` is taken like ``docker build -f``: relative to the current directory
    (or absolute); None means ``ROOT/Dockerfile`` (or ``ROOT/dockerfile`` when only that
    exists). ``inspect_image(name)`` lets pruning see a base image's ENV and ONBUILD
    triggers (``ImageConfig.from_inspect`` of ``GET /images/{name}/json``; None when the
    image is not present); without it pruning applies only to stages built ``FROM
    scratch`` or from earlier stages. Raises UsageError for a missing context or
    Dockerfile, a broken ``.dockerignore``, an unreadable directory, and a Dockerfile
    that needs BuildKit.
    """
    root_abs = _resolve_root(root)
    rel_dockerfile, source = _resolve_dockerfile(root_abs, dockerfile)
    excludes = dockerignore.read(root_abs)
    matcher = dockerignore.PatternMatcher(dockerignore.keep_build_files(excludes, rel_dockerfile))
    walked = _walk(root_abs, matcher, warn)

    tar_dockerfile = rel_dockerfile
    if source is not None:
        tar_dockerfile = ".dockerfile." + secrets.token_hex(10)
    data = _read_dockerfile(source or os.path.join(root_abs, rel_dockerfile))
    parsed = dockerfile_mod.parse(data)
    dockerfile_mod.check_classic(parsed, name=dockerfile or "Dockerfile")

    entries = tuple(rel for rel, _ in walked)
    pruned_reason = full_reason = None
    if prune:
        sources = dockerfile_mod.context_sources(
            parsed, build_args=build_args, target=target, inspect_image=inspect_image
        )
        if sources.reason is not None:
            full_reason = sources.reason
        else:
            keep = {".dockerignore", rel_dockerfile}
            selected = _select(root_abs, walked, sources.paths, keep)
            files_all = sum(1 for _, kind in walked if kind != _DIR)
            files_sent = sum(1 for rel, kind in walked if kind != _DIR and rel in selected)
            entries = tuple(rel for rel, _ in walked if rel in selected)
            pruned_reason = f"Dockerfile-aware: {files_sent} of {files_all} files"
    return ContextPlan(
        root=root_abs,
        dockerfile=tar_dockerfile,
        entries=entries,
        pruned_reason=pruned_reason,
        full_reason=full_reason,
        dockerfile_source=source,
        excludes=tuple(excludes),
        dockerfile_data=data,
    )


def _resolve_root(root: str) -> str:
    path = os.path.abspath(root)
    try:
        real = os.path.realpath(path)
        st = os.lstat(real)
    except OSError as exc:
        raise UsageError(f"unable to prepare context: path {root!r} not found") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"context must be a directory: {path}")
    return real


def _resolve_dockerfile(root: str, given: Optional[str]) -> Tuple[str, Optional[str]]:
    """(path relative to the context, posix; absolute path when it lies outside, else None)."""
    if given is None:
        path = os.path.join(root, "Dockerfile")
        if not os.path.lexists(path) and os.path.lexists(os.path.join(root, "dockerfile")):
            path = os.path.join(root, "dockerfile")  # the CLI's lower-case fallback
    else:
        path = os.path.abspath(given)
    real = os.path.realpath(path)
    if not os.path.lexists(real):
        raise UsageError(f"Cannot locate Dockerfile: {path}")
    rel = os.path.relpath(real, root)
    if rel == ".." or rel.startswith("../"):
        return rel, real
    return rel.replace(os.sep, "/"), None


def _read_dockerfile(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read Dockerfile {path}: {exc.strerror or exc}") from exc


def _name_key(entry: "os.DirEntry[str]") -> bytes:
    return os.fsencode(entry.name)  # Go sorts names as bytes


def _walk(root: str, matcher: dockerignore.PatternMatcher, warn: Callable[[str], None]) -> List[Tuple[str, str]]:
    """The entries ``TarWithOptions`` sends, in its order: sorted names, parents first."""
    out: List[Tuple[str, str]] = []
    stack = [iter(_listdir(root, ""))]
    prefixes = [""]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            prefixes.pop()
            continue
        rel = prefixes[-1] + entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            kind = _DIR if is_dir else _LINK if entry.is_symlink() else _FILE if entry.is_file(follow_symlinks=False) else ""
        except OSError as exc:
            raise _unreadable(entry.path, exc) from exc
        if matcher.matches(rel):
            # an excluded directory is still entered when an exception may reopen it
            if not (is_dir and matcher.may_reopen(rel)):
                continue
        else:
            if kind == "":
                warn(f"skipping {entry.path}: sockets, FIFOs and devices are not sent")
                continue
            out.append((rel, kind))
            if not is_dir:
                continue
        stack.append(iter(_listdir(root, rel)))
        prefixes.append(rel + "/")
    return out


def _listdir(root: str, rel: str) -> List["os.DirEntry[str]"]:
    path = os.path.join(root, rel) if rel else root
    try:
        with os.scandir(path) as it:
            return sorted(it, key=_name_key)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: str, exc: OSError) -> UsageError:
    return UsageError(f"cannot read {path} from the build context: {exc.strerror or exc}")


# ------------------------------------------------------------ Dockerfile-aware pruning

def _select(root: str, walked: List[Tuple[str, str]], sources: Iterable[str], keep: Set[str]) -> Set[str]:
    """The entries COPY/ADD of ``sources`` can read, plus ``keep`` and the parents of all."""
    included = {rel for rel, _ in walked}
    exact: Set[str] = set(keep)
    trees: Set[str] = set()
    present: Optional[List[str]] = None
    for source in sources:
        # the classic builder trims one leading "/" then one "./"
        if source.startswith("/"):
            source = source[1:]
        if source.startswith("./"):
            source = source[2:]
        if dockerfile_mod.contains_wildcards(source):
            if present is None:
                present = _present_paths(included)
            regex = dockerfile_mod.glob_regex(source)
            matched = [p for p in present if regex is not None and regex.match(p)]
        else:
            matched = [source]
        for path in matched:
            final, links = _follow_in_scope(root, path)
            if final == "":
                return included  # the whole context
            exact.update(links)
            trees.add(final)
    selected: Set[str] = set()
    for rel in included:
        if rel in exact or _within(rel, trees):
            selected.add(rel)
    for rel in list(selected):
        parent = rel.rpartition("/")[0]
        while parent and parent not in selected:
            if parent in included:
                selected.add(parent)
            parent = parent.rpartition("/")[0]
    return selected


def _present_paths(included: Set[str]) -> List[str]:
    """What the daemon's context holds after unpacking: the entries and the parents it creates."""
    present = set(included)
    for rel in included:
        parent = rel.rpartition("/")[0]
        while parent and parent not in present:
            present.add(parent)
            parent = parent.rpartition("/")[0]
    return sorted(present)


def _within(rel: str, trees: Set[str]) -> bool:
    path = rel
    while path:
        if path in trees:
            return True
        path = path.rpartition("/")[0]
    return False


def _follow_in_scope(root: str, rel: str) -> Tuple[str, List[str]]:
    """moby's ``FollowSymlinkInScope`` on the real tree: (resolved path, symlinks passed)."""
    pending = go_clean("/" + rel)
    resolved = ""  # Go's buffer `b`: raw components, each followed by "/"
    links: List[str] = []
    for _ in range(256):
        if not pending:
            break
        head, _, pending = pending.partition("/")
        if head == "":
            continue
        clean = go_clean("/" + resolved + head)
        if clean == "/":
            resolved = ""
            continue
        try:
            st = os.lstat(root + clean)
        except OSError:
            resolved += head + "/"  # missing: accepted as is, the daemon fails the same way
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved += head + "/"
            continue
        links.append(clean[1:])
        try:
            target = os.readlink(root + clean)
        except OSError:
            resolved += head + "/"
            continue
        if target.startswith("/"):
            resolved = ""
        pending = target + "/" + pending
    return go_clean("/" + resolved)[1:], links


# -------------------------------------------------------------------------- stream

def stream_context(
    plan: ContextPlan,
    *,
    compress: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    warn: Callable[[str], None] = _warn_stderr,
) -> Iterator[bytes]:
    """The context as a tar stream (gzip when ``compress``), yielded in chunks as it is read.

    Nothing is buffered beyond about ``chunk_size`` bytes. A file that vanished or can't
    be read raises UsageError naming it; one that shrank while being read also does.
    """
    chunks = _tar_chunks(plan, chunk_size, warn)
    if compress:
        return _gzip(chunks)
    return chunks


def _gzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip framing
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


class _Owner:
    """One (uid, gid) pair's names, and the constant part of a plain file header for it.

    The CLI's Go tar looks each name up once; so do we. ``plain`` says both names fit
    their ustar fields as they are; then a regular file's header is built from ``tail``
    (typeflag "0" to the end of the block, the same for every file of this owner) and
    ``tail_sum``, its share of the header checksum.
    """

    __slots__ = ("uname", "gname", "plain", "tail", "tail_sum")

    def __init__(self, uid: int, gid: int) -> None:
        try:
            self.uname = pwd.getpwuid(uid).pw_name.encode("utf-8", "surrogateescape")
        except KeyError:
            self.uname = b""
        try:
            self.gname = grp.getgrgid(gid).gr_name.encode("utf-8", "surrogateescape")
        except KeyError:
            self.gname = b""
        self.plain = len(self.uname) <= 32 and len(self.gname) <= 32 and self.uname.isascii() and self.gname.isascii()
        self.tail = _block(b"", 0, 0, 0, b"0", b"", self.uname, self.gname)[_TAIL_AT:] if self.plain else b""
        # the checksum counts the checksum field as eight spaces, and the zero uid and gid fields
        self.tail_sum = sum(self.tail) + sum(b" " * 8) + sum(_UID_GID)


#: open flags for an entry: never follow a link (ELOOP says "symlink"), never block on a FIFO
#: that replaced a file since the plan, never take a terminal
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
#: a plain file header up to its typeflag: name, mode, uid + gid, size, mtime, checksum
_HEAD = struct.Struct("100s8s16s12s12s8s")
_TAIL_AT = _HEAD.size
_UID_GID = b"0000000\0" * 2
#: the padding after a file's data, by its length
_PADS = [_ZEROS[:n] for n in range(_BLOCK)]


def _tar_chunks(plan: ContextPlan, chunk_size: int, warn: Callable[[str], None]) -> Iterator[bytes]:
    owners: Dict[Tuple[int, int], _Owner] = {}
    uid = gid = -1
    owner = _Owner(-1, -1)  # replaced at the first entry: no real uid is -1
    seen_inodes: Dict[Tuple[int, int], bytes] = {}
    # header fields that repeat from file to file: (field, its byte sum), by value
    mode_fields: Dict[int, Tuple[bytes, int]] = {}
    mtime_fields: Dict[int, Tuple[bytes, int]] = {}
    pieces: List[bytes] = []
    pending = 0
    no_xattrs: Set[int] = set()  # devices whose filesystem has no extended attributes
    rewrite_ignore = plan.dockerfile_source is not None
    ignore_sent = False
    extra_ignore = b"\n" + plan.dockerfile.encode() + b"\n"
    base = plan.root.rstrip("/") + "/"
    # bound once: this loop runs per file and its overhead is most of the pack time
    os_open, os_read, os_close, fstat, lstat, fsencode = os.open, os.read, os.close, os.fstat, os.lstat, os.fsencode
    listxattr, pack_head, pads, append = os.listxattr, _HEAD.pack, _PADS, pieces.append
    # os.fsencode's own checks cost more than the encoding: same codec, bound once
    fs_codec, fs_errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    s_ifmt, s_ifreg, s_ifdir, s_iflnk = 0o170000, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
    max_size = _MAX_OCTAL_11

    for rel in plan.entries:
        if pending >= chunk_size:
            yield b"".join(pieces)
            pieces.clear()
            pending = 0
        path = base + rel
        name = rel.encode(fs_codec, fs_errors)
        # one open per entry; fstat and listxattr on it spare two more walks of the path
        try:
            fd = os_open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise _unreadable(path, exc) from exc
            fd = -1  # a symlink
        try:
            try:
                st = fstat(fd) if fd >= 0 else lstat(path)
            except OSError as exc:
                raise _unreadable(path, exc) from exc
            mode = st.st_mode
            kind = mode & s_ifmt
            mtime = st.st_mtime_ns // 1_000_000_000
            if st.st_uid != uid or st.st_gid != gid:
                uid, gid = st.st_uid, st.st_gid
                owner = owners.get((uid, gid)) or owners.setdefault((uid, gid), _Owner(uid, gid))
            uname, gname = owner.uname, owner.gname
            if kind != s_ifreg and kind != s_ifdir and kind != s_iflnk:
                warn(f"skipping {path}: sockets, FIFOs and devices are not sent")
                continue
            # the CLI reads security.capability for every entry, directories and links too
            cap: Optional[bytes] = None
            if st.st_dev not in no_xattrs:
                # listxattr answers [] for the common file with no attributes; getxattr would
                # raise ENODATA, and building that exception costs twice the system call
                try:
                    if fd >= 0:
                        if _CAP_XATTR in listxattr(fd):
                            cap = os.getxattr(fd, _CAP_XATTR)
                    elif _CAP_XATTR in listxattr(path, follow_symlinks=False):
                        cap = os.getxattr(path, _CAP_XATTR, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                        no_xattrs.add(st.st_dev)  # this filesystem has none; stop asking it
                if cap is not None and len(cap) > 3 and cap[3] == 3:
                    # VFS_CAP_REVISION_3 -> 2: root uid means nothing outside this namespace
                    cap = cap[:3] + b"\x02" + cap[4:20]
            if kind == s_ifdir:
                header = _header(name + b"/", mode, 0, mtime, b"5", b"", uname, gname, cap=cap)
                append(header)
                pending += len(header)
                continue
            if rewrite_ignore and rel == ".dockerignore":
                # the CLI rewrites this entry's content and keeps the rest of its header; a later
                # name of the same file goes as a link to it (the CLI fails when it is the later name)
                ignore_sent = True
                content = _read_small(path) + extra_ignore
                header = _header(name, s_ifreg | (mode & 0o7777), len(content), mtime, b"0", b"", uname, gname, cap=cap)
                append(header)
                append(content + _padding(len(content)))
                pending += len(header) + len(pieces[-1])
                if st.st_nlink > 1:
                    seen_inodes.setdefault((st.st_dev, st.st_ino), name)
                continue
            # a second name of the same inode goes as a link entry to the first, as the CLI does
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = seen_inodes.get(key)
                if first is not None:
                    header = _header(name, mode, 0, mtime, b"1", first, uname, gname, cap=cap)
                    append(header)
                    pending += len(header)
                    continue
                seen_inodes[key] = name
            if kind == s_iflnk:
                try:
                    target = fsencode(os.readlink(path))
                except OSError as exc:
                    raise _unreadable(path, exc) from exc
                header = _header(name, mode, 0, mtime, b"2", target, uname, gname, cap=cap)
                append(header)
                pending += len(header)
                continue
            size = st.st_size
            mtime_f = mtime_fields.get(mtime)
            if mtime_f is None:
                field = b"%011o\0" % mtime if 0 <= mtime <= _MAX_OCTAL_11 else b""  # b"": needs PAX
                mtime_f = mtime_fields[mtime] = (field, sum(field))
            if owner.plain and cap is None and len(name) <= 100 and name.isascii() and size <= max_size and mtime_f[0]:
                # the common case, as _block would build it with fewer steps: what repeats is cached
                mode_f = mode_fields.get(mode)
                if mode_f is None:
                    field = b"%07o\0" % ((mode & 0o7777) | s_ifreg)
                    mode_f = mode_fields[mode] = (field, sum(field))
                size_f = b"%011o\0" % size
                checksum = owner.tail_sum + sum(name) + mode_f[1] + mtime_f[1] + sum(size_f)
                append(pack_head(name, mode_f[0], _UID_GID, size_f, mtime_f[0], b"%06o\0 " % checksum))
                append(owner.tail)
                pending += _BLOCK
            else:
                header = _header(name, mode, size, mtime, b"0", b"", uname, gname, cap=cap)
                append(header)
                pending += len(header)
            if 0 < size < chunk_size:
                # the common small file: one read, one byte more to tell a file that grew
                try:
                    data = os_read(fd, size + 1)
                except OSError as exc:
                    raise _unreadable(path, exc) from exc
                if len(data) != size:
                    if len(data) < size:
                        raise UsageError(f"{path} shrank while it was being sent; the build context would be corrupt")
                    warn(f"{path} grew while it was being sent; sent its first {size} bytes")
                    data = data[:size]
                append(data)
                pad = -size % _BLOCK
                if pad:
                    append(pads[pad])
                pending += size + pad
                continue
            remaining = size
            while remaining > 0:
                last = remaining <= chunk_size
                # one byte more on the last read tells a file that grew meanwhile
                try:
                    data = os_read(fd, remaining + 1 if last else chunk_size)
                except OSError as exc:
                    raise _unreadable(path, exc) from exc
                got = len(data)
                if got == 0:
                    raise UsageError(f"{path} shrank while it was being sent; the build context would be corrupt")
                if got > remaining:
                    warn(f"{path} grew while it was being sent; sent its first {size} bytes")
                    data, got = data[:remaining], remaining
                remaining -= got
                if got >= chunk_size:
                    # big reads go out as they are: no copy
                    if pieces:
                        yield b"".join(pieces)
                        pieces.clear()
                        pending = 0
                    yield data
                else:
                    append(data)
                    pending += got
                    if pending >= chunk_size and remaining:
                        yield b"".join(pieces)
                        pieces.clear()
                        pending = 0
            pad = -size % _BLOCK
            if pad:
                append(pads[pad])
                pending += pad
        finally:
            if fd >= 0:
                os_close(fd)

    if plan.dockerfile_source is not None:
        for extra in _outside_dockerfile_entries(plan, ignore_sent):
            append(extra)
    append(_END)
    yield b"".join(pieces)


def _outside_dockerfile_entries(plan: ContextPlan, ignore_sent: bool) -> Iterator[bytes]:
    """The Dockerfile from outside the context, and a .dockerignore that hides it again."""
    assert plan.dockerfile_source is not None
    path = plan.dockerfile_source
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    content = _read_small(path)
    mode = stat.S_IFREG | 0o600
    mtime = st.st_mtime_ns // 1_000_000_000
    yield _header(plan.dockerfile.encode(), mode, len(content), mtime, b"0", b"", b"", b"")
    yield content + _padding(len(content))
    if not ignore_sent:
        ignore = b".dockerignore\n" + plan.dockerfile.encode() + b"\n"
        yield _header(b".dockerignore", mode, len(ignore), mtime, b"0", b"", b"", b"")
        yield ignore + _padding(len(ignore))


def _read_small(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _padding(size: int) -> bytes:
    return _ZEROS[: -size % _BLOCK]


def _ascii(value: bytes) -> bytes:
    """Go's ``toASCII``: what a ustar field gets when the real value goes in a PAX record."""
    return bytes(b for b in value if b < 0x80)


def _header(
    name: bytes,
    mode: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
    *,
    cap: Optional[bytes] = None,
) -> bytes:
    """One tar entry's header block(s): PAX records first when a value does not fit ustar."""
    if (
        cap is None and len(name) <= 100 and len(linkname) <= 100 and len(uname) <= 32 and len(gname) <= 32
        and size <= _MAX_OCTAL_11 and 0 <= mtime <= _MAX_OCTAL_11
        and name.isascii() and linkname.isascii() and uname.isascii() and gname.isascii()
    ):
        return _block(name, (mode & 0o7777) | stat.S_IFMT(mode), size, mtime, typeflag, linkname, uname, gname)
    # Go's zero time (0001-01-01) is written as 0, with no PAX record
    seconds = 0 if mtime == _GO_ZERO_TIME else mtime
    # Go's archive/tar: plain USTAR whenever every value fits it (a long ASCII path may
    # be split into prefix + name); otherwise PAX records for the values that do not fit
    records: Dict[str, bytes] = {}
    ustar = True
    prefix, short = b"", name
    if len(name) > 100 or not name.isascii():
        records["path"] = name
        split = _split_ustar_path(name)
        if split is None:
            ustar = False
        else:
            prefix, short = split
    if len(linkname) > 100 or not linkname.isascii():
        records["linkpath"], ustar = linkname, False
    if len(uname) > 32 or not uname.isascii():
        records["uname"], ustar = uname, False
    if len(gname) > 32 or not gname.isascii():
        records["gname"], ustar = gname, False
    if size > _MAX_OCTAL_11:
        records["size"], ustar = b"%d" % size, False
    if not 0 <= seconds <= _MAX_OCTAL_11:
        records["mtime"], ustar = b"%d" % seconds, False
    if cap is not None:
        records["SCHILY.xattr." + _CAP_XATTR], ustar = cap, False
    mode = (mode & 0o7777) | stat.S_IFMT(mode)
    if ustar:
        return _block(short, mode, size, seconds, typeflag, linkname, uname, gname, prefix=prefix)
    block = _block(
        _ascii(name)[:100], mode, 0 if "size" in records else size, 0 if "mtime" in records else seconds,
        typeflag, _ascii(linkname)[:100], _ascii(uname)[:32], _ascii(gname)[:32],
    )
    data = b"".join(_pax_record(key, records[key]) for key in sorted(records))
    # Go: path.Join(path.Split(name)[0], "PaxHeaders.0", file); a directory's "dir/" has no file part
    # then, as its writeRawFile: ASCII only, 100 bytes at most, no trailing "/"
    head, slash, tail = name.rpartition(b"/")
    pax_name = _ascii(head + slash + b"PaxHeaders.0" + (b"/" + tail if tail else b""))[:100].rstrip(b"/")
    return _block(pax_name, 0, len(data), 0, b"x", b"", b"", b"", dev=b"") + data + _padding(len(data)) + block


def _split_ustar_path(name: bytes) -> Optional[Tuple[bytes, bytes]]:
    """Go's ``splitUSTARPath``: (prefix <= 155, name <= 100) split at a '/', or None."""
    length = len(name)
    if length <= 100 or not name.isascii():
        return None
    if length > 156:
        length = 156
    elif name[length - 1:length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    suffix = len(name) - i - 1
    if i <= 0 or suffix > 100 or suffix == 0 or i > 155:
        return None
    return name[:i], name[i + 1:]


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) > len(str(len(body))):
        length += 1
    return b"%d" % length + body


def _block(
    name: bytes, mode: int, size: int, mtime: int, typeflag: bytes, linkname: bytes, uname: bytes, gname: bytes,
    dev: bytes = b"0000000\0",  # Go leaves the device fields empty in PAX header blocks
    prefix: bytes = b"",
) -> bytes:
    mode_f, size_f, mtime_f = b"%07o\0" % mode, b"%011o\0" % size, b"%011o\0" % mtime
    # the checksum sums every byte of the block; zero padding adds nothing, so the
    # fields alone give it, and the block is packed once (the pack rate feels this)
    checksum = _CONSTANT_SUM + sum(b"".join((name, mode_f, size_f, mtime_f, typeflag, linkname, uname, gname, dev, dev, prefix)))
    return _HEADER.pack(
        name, mode_f, b"0000000\0", b"0000000\0", size_f, mtime_f,
        b"%06o\0 " % checksum, typeflag, linkname, b"ustar\0", b"00", uname, gname, dev, dev, prefix,
    )


#: uid and gid fields, eight spaces standing for the checksum, magic and version
_CONSTANT_SUM = sum(b"0000000\0" * 2 + b"        " + b"ustar\0" + b"00")
