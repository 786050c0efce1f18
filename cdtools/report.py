"""What a release did, step by step: ``report.json`` and JUnit ``report.xml``.

A :class:`Report` collects one :class:`StepRecord` per step::

    report = Report("release", properties=jenkins_properties(settings))
    try:
        with report.step("build") as rec:
            result = build.run(...)
            rec.image_id = result.image_id
            rec.tags = list(result.tags)
        with report.step("push") as rec:
            ...
    finally:
        report.skip_rest(["build", "tag", "push", "deploy"])
        report.write(json_path=args.report, junit_path=args.junit)

``step()`` times the block and, when it raises, marks the record failed with the
error's one-line message and exit code, then re-raises: the report never hides
an error, and the caller's error handling stays as it was.

The JUnit file is what Jenkins' ``junit`` step reads: one ``<testcase>`` per
step, a ``<failure>`` for the failed one, ``<skipped>`` for the ones not run,
so the build page shows which step broke.  Text is cleaned of terminal codes and
of the characters XML 1.0 cannot carry (build output has both), which would
otherwise make the whole file unreadable to the plugin.
"""
from __future__ import annotations

import json
import os
import re
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional

from . import __version__
from .errors import CdtoolsError, UsageError
from .settings import Settings

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES = (OK, FAILED, SKIPPED)

#: the ``report.json`` layout; raised when a field changes meaning
FORMAT_VERSION = 1


@dataclass
class StepRecord:
    """One step of a run, as report.json and report.xml show it."""

    name: str
    status: str = OK
    duration_s: float = 0.0
    image_id: Optional[str] = None
    digest: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    container: Optional[str] = None
    #: why it failed or was skipped; or a note on success
    message: str = ""
    #: the exit code the failure maps to (README "Exit codes"); None unless failed
    exit_code: Optional[int] = None
    #: the error's class name (``BuildError``, ``RolledBack`` …); None unless failed
    error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "image_id": self.image_id,
            "digest": self.digest,
            "tags": list(self.tags),
            "container": self.container,
            "message": clean(self.message),
            "exit_code": self.exit_code,
            "error": self.error,
        }


def describe(exc: BaseException) -> str:
    """One line for the report; cdtools errors already are one secret-free line."""
    if isinstance(exc, CdtoolsError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, SystemExit):
        return f"exited with status {exc.code}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, CdtoolsError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, SystemExit) and isinstance(exc.code, int):
        return exc.code
    return 1


def jenkins_properties(settings: Settings) -> Dict[str, str]:
    """The Jenkins job context worth keeping next to the steps (only the ones set)."""
    found = {
        "job_name": settings.job_name,
        "build_number": settings.build_number,
        "build_url": settings.build_url,
        "git_commit": settings.git_commit,
        "git_branch": settings.git_branch,
    }
    return {key: value for key, value in found.items() if value}


class Report:
    """The steps of one run, in the order they ran."""

    def __init__(self, name: str = "release", *, suite: Optional[str] = None,
                 properties: Optional[Mapping[str, str]] = None,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.name = name
        #: JUnit classname: Jenkins groups test cases as package.class
        self.suite = suite if suite is not None else f"cdtools.{name}"
        self.properties: Dict[str, str] = dict(properties or {})
        self.steps: List[StepRecord] = []
        self._clock = clock
        self._start = clock()
        self.started_at = wallclock()

    # -- collecting ------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """Record the block as step ``name``; an exception fails the step and goes on up."""
        rec = StepRecord(name=name)
        self.steps.append(rec)
        start = self._clock()
        try:
            yield rec
        except BaseException as exc:  # Ctrl-C and SIGTERM-as-exit too: Jenkins aborts show up
            rec.status = FAILED
            rec.message = describe(exc)
            rec.exit_code = exit_code_of(exc)
            rec.error = type(exc).__name__
            raise
        finally:
            rec.duration_s = max(0.0, self._clock() - start)
        if rec.status not in STATUSES:
            raise ValueError(f"step {name!r}: status {rec.status!r} is not one of {STATUSES}")

    def skip(self, name: str, message: str = "") -> StepRecord:
        """A step that did not run (not asked for, or nothing to do)."""
        rec = StepRecord(name=name, status=SKIPPED, message=message)
        self.steps.append(rec)
        return rec

    def skip_rest(self, planned: Iterable[str], message: Optional[str] = None) -> None:
        """Mark every planned step that has no record yet as skipped, so Jenkins lists it."""
        seen = {rec.name for rec in self.steps}
        failed = self.failed
        if message is None:
            message = f"not run: step {failed.name!r} failed" if failed is not None else "not run"
        for name in planned:
            if name not in seen:
                self.skip(name, message)

    # -- reading ---------------------------------------------------------

    @property
    def failed(self) -> Optional[StepRecord]:
        """The first failed step, if any."""
        for rec in self.steps:
            if rec.status == FAILED:
                return rec
        return None

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def exit_code(self) -> int:
        failed = self.failed
        if failed is None:
            return 0
        return failed.exit_code if failed.exit_code is not None else 1

    def duration_s(self) -> float:
        return max(0.0, self._clock() - self._start)

    def _count(self, status: str) -> int:
        return sum(1 for rec in self.steps if rec.status == status)

    def to_json(self) -> Dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "cdtools": __version__,
            "name": self.name,
            "status": OK if self.ok else FAILED,
            "exit_code": self.exit_code,
            "started_at": _iso(self.started_at) + "Z",
            "duration_s": round(self.duration_s(), 3),
            "properties": dict(self.properties),
            "steps": [rec.to_json() for rec in self.steps],
        }

    def to_junit(self) -> bytes:
        """The JUnit XML document (UTF-8) that Jenkins' ``junit`` step reads."""
        total = f"{self.duration_s():.3f}"
        counts = {
            "tests": str(len(self.steps)),
            "failures": str(self._count(FAILED)),
            "errors": "0",
            "skipped": str(self._count(SKIPPED)),
            "time": total,
        }
        root = ET.Element("testsuites", {"name": xml_text(f"cdtools {self.name}"), **counts})
        suite = ET.SubElement(root, "testsuite", {
            "name": xml_text(self.suite), **counts,
            # the JUnit schema's timestamp: ISO 8601 without a zone
            "timestamp": _iso(self.started_at),
        })
        if self.properties:
            props = ET.SubElement(suite, "properties")
            for key, value in self.properties.items():
                ET.SubElement(props, "property", {"name": xml_text(key), "value": xml_text(value)})
        for rec in self.steps:
            case = ET.SubElement(suite, "testcase", {
                "classname": xml_text(self.suite),
                "name": xml_text(rec.name),
                "time": f"{rec.duration_s:.3f}",
            })
            message = xml_text(rec.message)
            if rec.status == FAILED:
                failure = ET.SubElement(case, "failure", {
                    "message": message,
                    "type": xml_text(rec.error or "Failure"),
                })
                failure.text = message
            elif rec.status == SKIPPED:
                ET.SubElement(case, "skipped", {"message": message})
            details = _details(rec)
            if details:
                ET.SubElement(case, "system-out").text = xml_text(details)
        document: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
        return document + b"\n"

    # -- writing ---------------------------------------------------------

    def write_json(self, path: str) -> None:
        _write(path, (json.dumps(self.to_json(), indent=2) + "\n").encode("utf-8"))

    def write_junit(self, path: str) -> None:
        _write(path, self.to_junit())

    def write(self, *, json_path: Optional[str] = None, junit_path: Optional[str] = None) -> None:
        """Write whichever of the two files was asked for."""
        if json_path:
            self.write_json(json_path)
        if junit_path:
            self.write_junit(junit_path)


def _details(rec: StepRecord) -> str:
    lines = []
    if rec.image_id:
        lines.append(f"image: {rec.image_id}")
    if rec.digest:
        lines.append(f"digest: {rec.digest}")
    if rec.tags:
        lines.append("tags: " + ", ".join(rec.tags))
    if rec.container:
        lines.append(f"container: {rec.container}")
    if rec.message and rec.status == OK:
        lines.append(rec.message)
    return "\n".join(lines)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")
#: everything XML 1.0 forbids (its Char production), even as a character reference
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: str) -> str:
    """Text as a person reads it: no terminal codes, ``\\n`` line ends."""
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def xml_text(text: str) -> str:
    """``clean`` text with the characters XML 1.0 cannot hold replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", clean(text))


def _write(path: str, data: bytes) -> None:
    """Replace ``path`` atomically: Jenkins may pick the file up while a step still runs."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            partial.write_bytes(data)
            os.replace(partial, target)
        finally:
            if partial.exists():
                partial.unlink()
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report: {exc.strerror or exc}") from None
