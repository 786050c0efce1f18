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
        if len(raw) > _MAX_LINE:  # measured as the scanner reads it: with its \r and BOM
            raise UsageError(f".dockerignore: line {number + 1} is longer than {_MAX_LINE} bytes")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 0 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM):]
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
            if not _glob_accepted(text):
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
    except RecursionError:  # Go allows 998 nested groups; Python's compiler gives up near 500
        raise UsageError(f"{what} nests groups deeper than cdtools supports") from None


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
            # a trailing backslash escapes the closing $, as in Go (when the glob check let it pass)
            out.append("\\" + _scanned(text[i]) if i < n else "\\")
            i += 1
        else:
            out.append(_scanned(ch))
    out.append("$")
    return "".join(out)


def _scanned(ch: str) -> str:
    """A pattern character as text/scanner reads it: a byte that is not UTF-8 is U+FFFD."""
    return "\ufffd" if "\udc80" <= ch <= "\udcff" else ch


def _glob_accepted(pattern: str) -> bool:
    """Whether ``filepath.Match(pattern, ".")`` returns no error: the check the CLI makes.

    Go (1.19, which built Debian's 20.10 CLI) checks only what it reads while matching:
    the whole of each chunk it tries, but nothing after a chunk that fails outside a
    ``*``. So ``[a-]`` and ``a[a-]`` are refused while ``a*[a-]`` passes (its regexp is fine
    too, so Docker applies it). Worked on the pattern's bytes, as Go does.
    """
    pat = pattern.encode("utf-8", "surrogateescape")
    name = b"."
    while pat:
        star, chunk, pat = _scan_chunk(pat)
        if star and not chunk:
            return True  # a trailing star matches, or not, without more checks
        rest, ok, bad = _match_chunk(chunk, name)
        if bad:
            return False
        if ok and (not rest or pat):
            name = rest
            continue
        skipped = False  # after a star: the chunk matches further on, so matching goes on
        if star:
            for i in range(len(name)):
                if name[i:i + 1] == b"/":
                    break
                rest, ok, bad = _match_chunk(chunk, name[i + 1:])
                if ok and (pat or not rest):
                    name, skipped = rest, True
                    break
                if bad:
                    return False
        if not skipped:
            return True  # no match, and Go looks no further
    return True


def _scan_chunk(pat: bytes) -> Tuple[bool, bytes, bytes]:
    """Go's ``scanChunk``: (leading stars?, the chunk up to the next star outside a class, the rest)."""
    star = False
    while pat[:1] == b"*":
        pat, star = pat[1:], True
    in_range, i = False, 0
    while i < len(pat):
        c = pat[i:i + 1]
        if c == b"\\":
            if i + 1 < len(pat):
                i += 1
        elif c == b"[":
            in_range = True
        elif c == b"]":
            in_range = False
        elif c == b"*" and not in_range:
            break
        i += 1
    return star, pat[:i], pat[i:]


def _match_chunk(chunk: bytes, s: bytes) -> Tuple[bytes, bool, bool]:
    """Go's ``matchChunk``: (rest of ``s``, matched, bad pattern); it reads all of the chunk."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[:1]
        if c == b"[":
            r = -1
            if not failed:
                r, n = _decode_rune(s)
                s = s[n:]
            chunk = chunk[1:]
            negated = chunk[:1] == b"^"
            if negated:
                chunk = chunk[1:]
            match, ranges = False, 0
            while True:
                if chunk[:1] == b"]" and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk, bad = _get_esc(chunk)
                if bad:
                    return b"", False, True
                hi = lo
                if chunk[:1] == b"-":
                    hi, chunk, bad = _get_esc(chunk[1:])
                    if bad:
                        return b"", False, True
                if lo <= r <= hi:
                    match = True
                ranges += 1
            if match == negated:
                failed = True
        elif c == b"?":
            if not failed:
                if s[:1] == b"/":
                    failed = True
                s = s[_decode_rune(s)[1]:]
            chunk = chunk[1:]
        else:
            if c == b"\\":
                chunk = chunk[1:]
                if not chunk:
                    return b"", False, True
            if not failed:
                if chunk[:1] != s[:1]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return b"", False, False
    return s, True, False


def _get_esc(chunk: bytes) -> Tuple[int, bytes, bool]:
    """Go's ``getEsc``: (one class character, the rest, bad pattern)."""
    if not chunk or chunk[:1] in (b"-", b"]"):
        return 0, chunk, True
    if chunk[:1] == b"\\":
        chunk = chunk[1:]
        if not chunk:
            return 0, chunk, True
    r, n = _decode_rune(chunk)
    rest = chunk[n:]
    return r, rest, r == 0xFFFD and n == 1 or not rest


def _decode_rune(data: bytes) -> Tuple[int, int]:
    """Go's ``utf8.DecodeRune``: (rune, bytes read); (U+FFFD, 1) for a byte that starts none."""
    for n in (1, 2, 3, 4):
        try:
            return ord(data[:n].decode("utf-8")), n
        except UnicodeDecodeError:
            continue
    return 0xFFFD, 1 if data else 0
