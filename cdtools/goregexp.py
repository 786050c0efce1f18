"""Go ``regexp`` syntax translated to Python ``re``: same matches, same refusals.

Docker turns each ``.dockerignore`` pattern into a Go regular expression (moby's
``fileutils``), so the characters that are not glob syntax -- ``+ | ( ) { } [ ]`` and
escapes -- act as RE2 syntax, parsed with Go's ``syntax.Perl`` flags. Python's ``re``
reads the same text differently in places: ``{,2}`` is a repeat there and a literal in
Go, ``a++`` is possessive there and an error in Go, ``[[:digit:]]`` is a POSIX class only
in Go, ``\\w`` and ``\\d`` are Unicode there and ASCII in Go, ``[\\w-z]`` is an error
there. :func:`translate` parses the Go syntax and writes the Python pattern that
matches what Go's would, or refuses what Go refuses, with Go's reason.

Matching must use ``search``: Go's ``MatchString`` looks anywhere, so ``^a|b$`` matches
``xb``. Go reads a byte that is not UTF-8 as U+FFFD; Python's names carry such bytes as
the surrogates U+DC80..U+DCFF (``surrogateescape``), so wherever U+FFFD matches, those do
too. Not translated (refused as unsupported): ``(?`` groups and flags, ``\\p``/``\\P``
Unicode classes.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

from cdtools.errors import UsageError

Ranges = List[Tuple[int, int]]

_MAX_RUNE = 0x10FFFF
_RUNE_ERROR = 0xFFFD
_INVALID_BYTES = (0xDC80, 0xDCFF)  # surrogateescape's stand-ins for bytes that are not UTF-8
_MAX_REPEAT = 1000
_MAX_NESTING = 998  # Go 1.19 refuses deeper groups: "expression nests too deeply"

_PERL = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_POSIX = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
_SIMPLE_ESCAPES = {"a": 0x07, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}


def translate(expr: str, *, what: str) -> str:
    """The Python ``re`` pattern matching what Go's ``regexp.Compile(expr)`` matches.

    ``what`` names the source in errors (".dockerignore pattern 'x+'"). Raises
    UsageError where Go's compile fails, or for syntax not translated here.
    """
    return _Translator(expr, what).run()


def _merge(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _gaps(ranges: Ranges) -> Ranges:
    """The runes up to U+10FFFF that merged ``ranges`` leave out."""
    out: Ranges = []
    nxt = 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return out


def _normalise(ranges: Ranges) -> Ranges:
    """Merged, without surrogates; the invalid-byte stand-ins wherever U+FFFD is."""
    kept: Ranges = []
    for lo, hi in _merge(ranges):  # Go never yields a surrogate rune: a surrogate's bytes read as U+FFFD
        if lo < 0xD800:
            kept.append((lo, min(hi, 0xD7FF)))
        if hi > 0xDFFF:
            kept.append((max(lo, 0xE000), hi))
    if any(lo <= _RUNE_ERROR <= hi for lo, hi in kept):
        kept = _merge(kept + [_INVALID_BYTES])
    return kept


def _complement(ranges: Ranges) -> Ranges:
    return _gaps(_normalise(ranges))


def _class(ranges: Ranges) -> str:
    """A Python character class for ``ranges``: ``[...]``, or ``[^...]`` when that is shorter."""
    ranges = _normalise(ranges)
    if not ranges:
        return "(?!)"  # an empty class matches nothing, as in Go
    # the runes outside it, leaving out the surrogates no name holds (only the stand-ins occur)
    outside = _gaps(_merge(ranges + [(0xD800, 0xDFFF)]))
    if not any(lo <= _RUNE_ERROR <= hi for lo, hi in ranges):
        outside = _merge(outside + [_INVALID_BYTES])
    if not outside:
        return "(?s:.)"  # every rune
    if len(outside) < len(ranges):
        return "[^" + _class_items(outside) + "]"
    return "[" + _class_items(ranges) + "]"


def _class_items(ranges: Ranges) -> str:
    return "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in ranges)


def _char(code: int) -> str:
    """One rune in Python pattern syntax, inside a class or out."""
    if 0x20 <= code < 0x7F:
        return re.escape(chr(code))
    return f"\\U{code:08x}"


def _literal(code: int) -> str:
    if code == _RUNE_ERROR:
        return _class([(_RUNE_ERROR, _RUNE_ERROR)])
    if 0xD800 <= code <= 0xDFFF:
        return "(?!)"  # a surrogate (only an escape can write one): Go reads none from a name
    return _char(code)


class _Translator:
    """RE2's parser (``regexp/syntax``, Perl flags), writing Python syntax as it goes."""

    def __init__(self, expr: str, what: str) -> None:
        self.s = expr
        self.i = 0
        self.what = what
        self.out: List[str] = []
        # what a repeat would apply to: (where it starts in out, its weight), None after ( or |;
        # the weight is the largest product of {n,m} counts nested in it (Go caps it at 1000)
        self.operand: Optional[Tuple[int, int]] = None
        self.repeated = False  # the operand ends in a repeat: another one needs it grouped
        self.last_repeat = False  # the last token was a repeat (Go refuses a** and a++)
        self.groups: List[Tuple[int, List[int]]] = []  # open groups: (where, the weights of the items before it)
        self.items: List[int] = []  # the weights of the operands of the group being read

    # errors ---------------------------------------------------------------------
    def fail(self, reason: str, start: int, end: Optional[int] = None) -> UsageError:
        piece = self.s[start:end if end is not None else self.i]
        return UsageError(f"{self.what}: syntax error: {reason}: `{piece}`")

    def unsupported(self, construct: str) -> UsageError:
        return UsageError(f"{self.what} uses {construct}, which cdtools does not support")

    # the expression ----------------------------------------------------------------
    def run(self) -> str:
        s, n = self.s, len(self.s)
        while self.i < n:
            ch = s[self.i]
            start = self.i
            if ch == "(":
                if s.startswith("?", self.i + 1):
                    raise self.unsupported("a regexp group or flag '(?'")
                self.i += 1
                if len(self.groups) >= _MAX_NESTING:
                    raise self.fail("expression nests too deeply", 0, n)
                self.groups.append((len(self.out), self.items))
                self.items = []
                self.emit("(", operand=False)
            elif ch == ")":
                if not self.groups:
                    self.i += 1
                    raise self.fail("unexpected )", start)
                self.i += 1
                at, outside = self.groups.pop()
                inside = max(self.items, default=1)
                self.items = outside
                self.items.append(inside)
                self.out.append(")")
                self.operand, self.repeated, self.last_repeat = (at, inside), False, False
            elif ch == "|":
                self.i += 1
                self.emit("|", operand=False)
            elif ch in "*+?":
                self.i += 1
                self.repeat(ch, start)
            elif ch == "{":
                bounds = self.parse_repeat()
                if bounds is None:
                    self.i += 1
                    self.emit("\\{")  # not a repeat: a literal brace, as in Go
                else:
                    low, high = bounds
                    if low > _MAX_REPEAT or high > _MAX_REPEAT or 0 <= high < low:
                        raise self.fail("invalid repeat count", start)
                    op = "{%d}" % low if high == low else "{%d,}" % low if high < 0 else "{%d,%d}" % (low, high)
                    self.repeat(op, start, bounds=(low, high))
            elif ch == "^":
                self.i += 1
                self.emit("(?:^)")  # grouped: Go lets a repeat apply to an assertion, Python only to a group
            elif ch == "$":
                self.i += 1
                self.emit("(?:\\Z)")  # Go's one-line $: the end of the text only
            elif ch == ".":
                self.i += 1
                self.emit(".")  # any rune but \n in both (Python's matches the invalid-byte stand-ins too)
            elif ch == "[":
                self.emit(_class(self.parse_class()))
            elif ch == "\\":
                self.escape()
            else:
                self.i += 1
                self.emit(_literal(ord(ch)))
        if self.groups:
            raise self.fail("missing closing )", 0, n)
        return "".join(self.out)

    def emit(self, text: str, *, operand: bool = True) -> None:
        self.operand = (len(self.out), 1) if operand else None
        if operand:
            self.items.append(1)
        self.out.append(text)
        self.repeated = self.last_repeat = False

    def repeat(self, op: str, start: int, *, bounds: Optional[Tuple[int, int]] = None) -> None:
        """Apply ``op`` to the operand; a {n,m} gives its ``bounds`` (m -1 when open)."""
        lazy = self.s.startswith("?", self.i)
        if lazy:
            self.i += 1
        if self.last_repeat:
            raise self.fail("invalid nested repetition operator", start)
        if self.operand is None:
            raise self.fail("missing argument to repetition operator", start)
        at, weight = self.operand
        if bounds is not None:  # Go's repeatIsValid: the counts nested along any path multiply
            low, high = bounds
            if high == 0:
                weight = 1  # {0} hides what it holds from the checks above it
            else:
                weight *= max(high if high > 0 else low, 1)
                if (low >= 2 or high >= 2) and weight > _MAX_REPEAT:
                    raise self.fail("invalid repeat count", start)
        if self.repeated:  # a repeat of a repeat (a+\Q\E+): Python needs the first one grouped
            self.out[at:] = ["(?:" + "".join(self.out[at:]) + ")"]
        self.out.append(op + ("?" if lazy else ""))
        self.operand, self.repeated, self.last_repeat = (at, weight), True, True
        self.items[-1] = weight

    def parse_repeat(self) -> Optional[Tuple[int, int]]:
        """``{n}``, ``{n,}`` (high -1) or ``{n,m}`` at the cursor, which moves past it; else None."""
        s, j = self.s, self.i + 1
        low, j = _parse_int(s, j)
        if low is None or j >= len(s):
            return None
        if s[j] == ",":
            j += 1
            if j >= len(s):
                return None
            if s[j] == "}":
                high: Optional[int] = -1
            else:
                high, j = _parse_int(s, j)
                if high is None:
                    return None
        else:
            high = low
        if j >= len(s) or s[j] != "}":
            return None
        self.i = j + 1
        assert high is not None
        return low, high

    # escapes ---------------------------------------------------------------------------
    def escape(self) -> None:
        s, start = self.s, self.i
        if self.i + 1 >= len(s):
            self.i += 1
            raise self.fail("trailing backslash at end of expression", start)
        c = s[self.i + 1]
        if c in "AbBz":
            self.i += 2
            # grouped, as ^ above; \b and \B are ASCII word boundaries in Go
            self.emit({"A": "(?:\\A)", "z": "(?:\\Z)", "b": "(?a:\\b)", "B": "(?a:\\B)"}[c])
        elif c == "Q":
            end = s.find("\\E", self.i + 2)
            text = s[self.i + 2:] if end < 0 else s[self.i + 2:end]
            self.i = len(s) if end < 0 else end + 2
            self.last_repeat = False  # a token even when empty: a+\Q\E+ is (a+)+ in Go
            for char in text:
                self.emit(_literal(ord(char)))
        else:
            ranges = self.class_escape()
            self.emit(_class(ranges) if ranges is not None else _literal(self.parse_escape()))

    def class_escape(self) -> Optional[Ranges]:
        """At a backslash: the runes of a Perl class (\\d \\s \\w, or upper case for the rest), which
        it reads, or None for any other escape, which it leaves. Unicode classes are refused."""
        c = self.s[self.i + 1]
        if c in "pP":
            raise self.unsupported(f"the Unicode class \\{c}")
        if c.lower() not in _PERL:
            return None
        self.i += 2
        ranges = _PERL[c.lower()]
        return _complement(ranges) if c.isupper() else ranges

    def parse_escape(self) -> int:
        """RE2's ``parseEscape`` at a backslash: the rune it stands for."""
        s, start = self.s, self.i
        c = s[self.i + 1]
        self.i += 2
        if c in "1234567" and self.i < len(s) and "0" <= s[self.i] <= "7" or c == "0":
            digits = c
            while len(digits) < 3 and self.i < len(s) and "0" <= s[self.i] <= "7":
                digits += s[self.i]
                self.i += 1
            return int(digits, 8)
        if c == "x":
            if s.startswith("{", self.i):
                end = s.find("}", self.i + 1)
                digits = s[self.i + 1:end] if end > 0 else ""
                if end < 0 or not digits or not all(d in "0123456789abcdefABCDEF" for d in digits) \
                        or int(digits, 16) > _MAX_RUNE:
                    self.i = len(s) if end < 0 else end + 1
                    raise self.fail("invalid escape sequence", start)
                self.i = end + 1
                return int(digits, 16)
            digits = s[self.i:self.i + 2]
            if len(digits) < 2 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail("invalid escape sequence", start)
            self.i += 2
            return int(digits, 16)
        if c in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[c]
        if ord(c) < 0x80 and not c.isalnum():
            return ord(c)  # escaped punctuation (or space, or a control) stands for itself
        raise self.fail("invalid escape sequence", start)

    # classes ------------------------------------------------------------------------
    def parse_class(self) -> Ranges:
        """RE2's ``parseClass`` at ``[``: the runes it matches."""
        s, start = self.s, self.i
        self.i += 1
        negate = s.startswith("^", self.i)
        if negate:
            self.i += 1
        ranges: Ranges = []
        first = True
        while first or self.i >= len(s) or s[self.i] != "]":
            if self.i >= len(s):
                raise self.fail("missing closing ]", start, len(s))
            first = False
            if s.startswith("[:", self.i):
                end = s.find(":]", self.i + 2)
                if end >= 0:
                    name = s[self.i + 2:end]
                    negated = name.startswith("^")
                    group = _POSIX.get(name[1:] if negated else name)
                    if group is None:
                        class_at, self.i = self.i, end + 2
                        raise self.fail("invalid character class range", class_at)
                    ranges += _complement(group) if negated else group
                    self.i = end + 2
                    continue
            if s.startswith("\\", self.i) and self.i + 1 < len(s):
                escaped = self.class_escape()
                if escaped is not None:
                    ranges += escaped
                    continue
            range_start = self.i
            low = self.class_char(start)
            high = low
            if self.i + 1 < len(s) and s[self.i] == "-" and s[self.i + 1] != "]":
                self.i += 1
                high = self.class_char(start)
                if high < low:
                    raise self.fail("invalid character class range", range_start)
            ranges.append((low, high))
        self.i += 1
        return _complement(ranges) if negate else ranges

    def class_char(self, class_start: int) -> int:
        s = self.s
        if self.i >= len(s):
            raise self.fail("missing closing ]", class_start, len(s))
        if s[self.i] == "\\":
            if self.i + 1 >= len(s):
                self.i += 1
                raise self.fail("trailing backslash at end of expression", self.i - 1)
            return self.parse_escape()
        self.i += 1
        code = ord(s[self.i - 1])
        return _RUNE_ERROR if _INVALID_BYTES[0] <= code <= _INVALID_BYTES[1] else code


def _parse_int(s: str, j: int) -> Tuple[Optional[int], int]:
    """RE2's ``parseInt``: decimal digits, no leading zero; over 8 digits reads as too big."""
    k = j
    while k < len(s) and "0" <= s[k] <= "9":
        k += 1
    digits = s[j:k]
    if not digits or len(digits) > 1 and digits[0] == "0":
        return None, j
    if len(digits) > 8:
        return _MAX_REPEAT + 1, k
    return int(digits), k
