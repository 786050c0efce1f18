"""`.dockerignore` exactly as the docker 20.10 CLI reads and applies it.

Reference: docker CLI 20.10.24 (``cli/command/image/build/dockerignore.go``) with the
moby 20.10 ``pkg/fileutils`` matcher and buildkit's ``dockerignore.ReadAll`` it vendors.
The daemon that ships with it (Debian ``docker.io``, classic builder) is the observed
truth: ``tests/data/dockerignore.json``.

What is exact here, on purpose, including what other clients get wrong:

* reading: a UTF-8 BOM is stripped from the first line; a line is a comment only when
  ``#`` is its *first* character (before trimming); lines are trimmed with Go's
  ``strings.TrimSpace``; each pattern goes through Go's ``filepath.Clean`` and loses one
  leading ``/`` (``!`` kept in front);
* matching is case-sensitive, ``*``/``?`` never cross ``/``, ``**`` spans directories;
  a pattern is a Go regular expression after ``* ? . $ \\`` are translated, so other
  regexp characters (``+ ( ) | { } [ ]``) act as Go regexp syntax, as in Docker
  (``a+b`` excludes ``ab`` but keeps ``a+b``; ``x[1].txt`` never matches ``x[1].txt``),
  read by ``cdtools.goregexp`` as Go reads them;
* a path is also excluded when its first N parent components match an N-component
  pattern -- only that one prefix is tried, so ``foo/**/bar`` hides ``foo/x/y/bar/z``
  only through walk pruning, never by itself (20.10's ``Matches``, not the later
  ``MatchesOrParentMatches``);
* an excluded directory is walked into only when an exception pattern, as text,
  starts with ``<dir>/`` (``!*/a.py`` never reopens ``foo/``).
"""
from __future__ import annotations

import re
from typing import List, Optional, Pattern, Sequence, Tuple

from cdtools import goregexp
from cdtools.errors import UsageError

#: what Go's ``unicode.IsSpace`` accepts, for ``strings.TrimSpace``
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_UTF8_BOM = b"\xef\xbb\xbf"
#: bufio.Scanner's default token limit: a longer line fails the CLI's read
_MAX_LINE = 64 * 1024 - 1


def go_trim_space(text: str) -> str:
    """Go's ``strings.TrimSpace``: Python's ``str.strip()`` also eats U+001C..U+001F."""
    return text.strip(GO_SPACE)


def go_clean(path: str) -> str:
    """Go's ``path/filepath.Clean`` for '/' paths (``posixpath.normpath`` keeps ``//``)."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: List[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(comp)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def parse(data: bytes) -> List[str]:
    """The patterns of a ``.dockerignore`` file's bytes (buildkit ``ReadAll``, v0.8)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # bufio.ScanLines yields no empty token after a final newline
    patterns: List[str] = []
    for number, raw in enumerate(lines):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 0 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM):]
        if len(raw) > _MAX_LINE:
            raise UsageError(f".dockerignore: line {number + 1} is longer than {_MAX_LINE} bytes")
        # surrogateescape: names on disk decode the same way, so bytes compare as bytes
        text = raw.decode("utf-8", "surrogateescape")
        if text.startswith("#"):  # before trimming: " # x" is a pattern, as in Docker
            continue
        text = go_trim_space(text)
        if text == "":
            continue
        invert = text[0] == "!"
        if invert:
            text = go_trim_space(text[1:])
        if text:
            text = go_clean(text)
            if len(text) > 1 and text[0] == "/":
                text = text[1:]
        patterns.append("!" + text if invert else text)
    return patterns


def read(root: str) -> List[str]:
    """The patterns of ``<root>/.dockerignore``; none when the file does not exist."""
    path = root.rstrip("/") + "/.dockerignore"
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse(data)


class IgnorePattern:
    """One compiled pattern: its cleaned text, whether it is a ``!`` exception, its regexp."""

    __slots__ = ("text", "exclusion", "dirs", "_regex")

    def __init__(self, text: str, exclusion: bool) -> None:
        self.text = text
        self.exclusion = exclusion
        self.dirs = len(text.split("/"))
        self._regex = _compile(text)

    def match(self, path: str) -> bool:
        # Go's MatchString searches: "a|b" compiles to ^a|b$, which matches "xb"
        return self._regex.search(path) is not None

    def __repr__(self) -> str:
        return f"IgnorePattern({'!' if self.exclusion else ''}{self.text!r})"


class PatternMatcher:
    """A list of patterns applied in order; the last pattern that matches decides."""

    def __init__(self, patterns: Sequence[str]) -> None:
        compiled: List[IgnorePattern] = []
        for raw in patterns:
            # NewPatternMatcher trims and cleans again, '!' included: "!../../a" -> "a"
            text = go_trim_space(raw)
            if text == "":
                continue
            text = go_clean(text)
            exclusion = text[0] == "!"
            if exclusion:
                if len(text) == 1:
                    raise UsageError('.dockerignore: illegal exclusion pattern: "!"')
                text = text[1:]
            if not _valid_go_glob(text):
                raise UsageError(f".dockerignore: syntax error in pattern {raw!r}")
            compiled.append(IgnorePattern(text, exclusion))
        self.patterns: Tuple[IgnorePattern, ...] = tuple(compiled)
        self.exclusions = any(p.exclusion for p in compiled)
        self._exception_prefixes = tuple(p.text + "/" for p in compiled if p.exclusion)

    def matches(self, path: str) -> bool:
        """Whether the clean, '/'-separated relative ``path`` is excluded (20.10 ``Matches``)."""
        matched = False
        slash = path.rfind("/")
        parents: Optional[List[str]] = path[:slash].split("/") if slash > 0 else None
        for pattern in self.patterns:
            hit = pattern.match(path)
            if not hit and parents is not None and pattern.dirs <= len(parents):
                # only the first `dirs` parent components are tried: the 20.10 behaviour
                hit = pattern.match("/".join(parents[: pattern.dirs]))
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_reopen(self, directory: str) -> bool:
        """Whether an excluded ``directory`` must still be walked for a ``!`` exception."""
        if not self.exclusions:
            return False
        prefix = directory + "/"
        return any(text.startswith(prefix) for text in self._exception_prefixes)


def matches(path: str, patterns: Sequence[str]) -> bool:
    """Go's ``fileutils.Matches``: whether ``path`` is excluded; False for "." and bad patterns.

    The CLI and the daemon both call it and ignore its error, so a bad pattern is
    "not matched" here; the walk reports the bad pattern.
    """
    try:
        matcher = PatternMatcher(patterns)
    except UsageError:
        return False
    path = go_clean(path)
    if path == ".":
        return False
    return matcher.matches(path)


def keep_build_files(patterns: Sequence[str], dockerfile: str) -> List[str]:
    """The CLI's ``TrimBuildFilesFromExcludes``: ``!`` exceptions so both files are sent.

    The daemon removes them again after reading them when the original patterns
    exclude them (``daemon_removes``).
    """
    result = list(patterns)
    if matches(".dockerignore", result):
        result.append("!.dockerignore")
    if matches(dockerfile, result):
        result.append("!" + dockerfile)
    return result


def daemon_removes(patterns: Sequence[str], dockerfile: str) -> Tuple[str, ...]:
    """Which of ``.dockerignore`` and the Dockerfile the daemon deletes from the context."""
    return tuple(name for name in (".dockerignore", dockerfile) if matches(name, patterns))


def _compile(text: str) -> Pattern[str]:
    """moby's ``Pattern.compile``: the pattern as a Go regexp, then that regexp in Python's ``re``."""
    what = f".dockerignore pattern {text!r}"
    source = goregexp.translate(_go_regexp(text), what=what)
    try:
        return re.compile(source)
    except re.error as exc:  # Go accepts it (translate did), Python can't say it
        raise UsageError(f"{what} uses regexp syntax cdtools does not support ({exc})") from exc


def _go_regexp(text: str) -> str:
    """The Go regexp source moby 20.10's ``Pattern.compile`` writes for a cleaned pattern.

    It reads the pattern with Go's ``text/scanner``, which skips a BOM as the very first
    character and reads a byte that is not UTF-8 as U+FFFD; ``* ** ? . $`` and ``\\x``
    are rewritten, every other character goes into the regexp as it is.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    out = ["^"]
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in ".$":
            out.append("\\" + ch)
        elif ch == "\\":
            # a trailing backslash is rejected earlier by the glob syntax check
            out.append("\\" + _scanned(text[i]) if i < n else "\\")
            i += 1
        else:
            out.append(_scanned(ch))
    out.append("$")
    return "".join(out)


def _scanned(ch: str) -> str:
    """A pattern character as text/scanner reads it: a byte that is not UTF-8 is U+FFFD."""
    return "\ufffd" if "\udc80" <= ch <= "\udcff" else ch


def _valid_go_glob(pattern: str) -> bool:
    """Whether Go's ``filepath.Match`` accepts ``pattern`` (the CLI checks it up front)."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                return False
            i += 2
        elif ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < n and pattern[i] == "]" and ranges > 0:
                    i += 1
                    break
                i = _glob_class_char(pattern, i)
                if i < 0:
                    return False
                if pattern[i] == "-":
                    i = _glob_class_char(pattern, i + 1)
                    if i < 0:
                        return False
                ranges += 1
        else:
            i += 1
    return True


def _glob_class_char(pattern: str, i: int) -> int:
    """Go's ``getEsc``: the index after one class character, or -1 for a bad pattern."""
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        return -1
    if pattern[i] == "\\":
        i += 1
        if i >= n:
            return -1
    if "\udc80" <= pattern[i] <= "\udcff":  # an invalid UTF-8 byte
        return -1
    i += 1
    return i if i < n else -1
