"""``python -m cdtools.vendor -o cdtools.pyz``: cdtools as one reproducible file.

The file is a zipapp: a shebang line, then a zip archive holding the ``cdtools``
package and a ``__main__.py`` that runs ``python3 cdtools.pyz STEP ARGS…``
through :func:`cdtools.steps.main`.  Build agents without pip run it with
``python3 -I -S cdtools.pyz release …``: nothing but the standard library.

Same source, same bytes, so an agent image or an archived artifact can be
checked against a rebuild: entries are sorted by name; every entry gets the same
time stamp (1980-01-01, the earliest a zip can hold, or ``SOURCE_DATE_EPOCH``)
and mode 0644 whatever the checkout's were; ``__pycache__`` and other files a
checkout collects are left out; entries are stored uncompressed by default,
because deflate output depends on the zlib build (``--compress`` trades that
guarantee for a smaller file).  Patterned on CPython's ``Lib/zipapp.py`` and
shiv's ``builder.py``.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import time
import zipfile
import zipimport
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from . import cli
from .console import Console
from .errors import UsageError
from .settings import Settings

PROG = "cdtools vendor"
PACKAGE = "cdtools"
DEFAULT_OUTPUT = "cdtools.pyz"
DEFAULT_INTERPRETER = "/usr/bin/env python3"
#: the earliest time a zip entry can carry (DOS date); the default stamp
EPOCH_1980 = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644

#: the archive's own entry point; written out verbatim so its bytes never vary
MAIN_PY = b'''\
# Written by cdtools.vendor: "python3 cdtools.pyz STEP ARGS..." runs cdtools.STEP.main.
import os
import sys

if sys.version_info < (3, 8):
    sys.exit("cdtools needs Python 3.8 or newer; this is " + sys.version.split()[0])

from cdtools.steps import main

sys.exit(main(prog=os.path.basename(sys.argv[0]) or "cdtools.pyz"))
'''

#: files a checkout or an editor leaves behind, never part of the package
_SKIP_DIRS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".orig", ".rej")

Entry = Tuple[str, bytes]


@dataclass(frozen=True)
class VendorResult:
    path: str
    sha256: str
    size: int
    #: entries in the archive, __main__.py included
    files: int


def package_source() -> Path:
    """Where this running cdtools package lives (a directory, or a path inside a zipapp)."""
    return Path(__file__).resolve().parent


def _keep(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(_SKIP_SUFFIXES)


def collect_dir(source: Path) -> List[Entry]:
    """``(archive name, content)`` for every file of the package directory ``source``."""
    if not (source / "__init__.py").is_file():
        raise UsageError(f"{source}: not a Python package directory (no __init__.py)")
    entries: List[Entry] = []
    for root, dirs, files in os.walk(source):
        # prune in place so os.walk never descends into caches or hidden folders
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in files:
            path = Path(root, name)
            if not _keep(name) or not path.is_file():
                continue
            relative = path.relative_to(source).as_posix()
            entries.append((f"{PACKAGE}/{relative}", path.read_bytes()))
    return entries


def collect_zip(archive: Path) -> List[Entry]:
    """The package entries of an existing zipapp: a pyz can rebuild itself, byte for byte."""
    with zipfile.ZipFile(archive) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()
                if info.filename.startswith(PACKAGE + "/") and not info.is_dir()
                and all(_keep(part) and part not in _SKIP_DIRS for part in info.filename.split("/"))]


def _running_archive() -> Optional[Path]:
    """The zipapp this module was imported from, if it was."""
    loader = globals().get("__loader__")
    if isinstance(loader, zipimport.zipimporter):
        return Path(loader.archive)
    return None


def date_time(source_date_epoch: str) -> Tuple[int, int, int, int, int, int]:
    """The stamp for every entry: SOURCE_DATE_EPOCH in UTC, clamped to zip's range."""
    if source_date_epoch == "":
        return EPOCH_1980
    try:
        seconds = int(source_date_epoch)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={source_date_epoch!r}: expected whole seconds since 1970") from None
    if seconds < 0:
        raise UsageError(f"SOURCE_DATE_EPOCH={source_date_epoch!r}: expected whole seconds since 1970")
    # a zip stores local-time fields with 2-second resolution, years 1980..2107
    stamp = time.gmtime(seconds)[:6]
    if stamp < EPOCH_1980:
        return EPOCH_1980
    if stamp[0] > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return (stamp[0], stamp[1], stamp[2], stamp[3], stamp[4], stamp[5] - stamp[5] % 2)


def build(entries: List[Entry], *, interpreter: str = DEFAULT_INTERPRETER,
          stamp: Tuple[int, int, int, int, int, int] = EPOCH_1980, compress: bool = False) -> bytes:
    """The zipapp's bytes: shebang, then the sorted entries with pinned metadata."""
    if "\n" in interpreter or not interpreter.strip():
        raise UsageError(f"interpreter {interpreter!r}: expected one line such as {DEFAULT_INTERPRETER}")
    names = [name for name, _ in entries]
    if "__main__.py" in names or len(set(names)) != len(names):
        raise UsageError("duplicate entries in the package source")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    buf = io.BytesIO()
    buf.write(b"#!" + interpreter.encode("utf-8") + b"\n")
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in sorted(entries + [("__main__.py", MAIN_PY)]):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = method
            info.create_system = 3  # unix, so external_attr carries a mode on every host
            info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
            zf.writestr(info, data, compresslevel=9 if compress else None)
    return buf.getvalue()


def run(output: str, *, source: Optional[str] = None, interpreter: str = DEFAULT_INTERPRETER,
        compress: bool = False, source_date_epoch: str = "") -> VendorResult:
    """Write the zipapp to ``output`` (parent folders made; replaced atomically, mode 0755).

    ``source`` is a ``cdtools`` package directory or a ``.pyz``; by default the
    package this code runs from, so a zipapp can write a copy of itself.
    """
    stamp = date_time(source_date_epoch)
    if source is not None:
        src = Path(source)
        if src.is_file() and zipfile.is_zipfile(src):
            entries = collect_zip(src)
        elif src.is_dir():
            entries = collect_dir(src)
        else:
            raise UsageError(f"{source}: no such package directory or zipapp")
    else:
        archive = _running_archive()
        entries = collect_zip(archive) if archive is not None else collect_dir(package_source())
    if not entries:
        raise UsageError(f"{source}: no files to vendor")
    data = build(entries, interpreter=interpreter, stamp=stamp, compress=compress)

    target = Path(output)
    if target.is_dir():
        raise UsageError(f"{output}: is a directory; give the file to write, e.g. {target / DEFAULT_OUTPUT}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            partial.write_bytes(data)
            os.chmod(partial, 0o755)
            # a reader (an agent image build, a Jenkins archive step) never sees half a file
            os.replace(partial, target)
        finally:
            if partial.exists():
                partial.unlink()
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror or exc}") from None
    return VendorResult(path=str(target), sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                        files=len(entries) + 1)


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.ArgumentParser(
        prog=PROG,
        description="Write cdtools as one reproducible zipapp: same source, same bytes. "
                    "Run it with 'python3 -I -S cdtools.pyz STEP ARGS...'.")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="FILE",
                   help=f"file to write (default: {DEFAULT_OUTPUT}); missing folders are made")
    p.add_argument("--source", metavar="DIR_OR_PYZ",
                   help="cdtools package folder or zipapp to vendor (default: the running cdtools)")
    p.add_argument("-p", "--python", default=DEFAULT_INTERPRETER, metavar="INTERPRETER",
                   help=f"interpreter for the shebang line (default: {DEFAULT_INTERPRETER})")
    p.add_argument("--compress", action="store_true",
                   help="deflate the entries: smaller, but the bytes then depend on the zlib build")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        result = run(args.output, source=args.source, interpreter=args.python, compress=args.compress,
                     source_date_epoch=settings.source_date_epoch)
        Console(quiet=args.quiet).line(
            f"wrote {result.path}: {result.files} files, {result.size} bytes, sha256 {result.sha256}")
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    sys.exit(main())
