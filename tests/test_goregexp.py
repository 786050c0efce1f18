"""Go regexp syntax in Python: matches and refusals as Go's ``regexp.Compile`` has them.

The reference for .dockerignore is the docker CLI (``test_dockerignore.py`` compares
uploads); these pin the translation itself, quickly, with Go's documented behaviour.
"""
from __future__ import annotations

import re
from typing import List

import pytest

from cdtools import goregexp
from cdtools.errors import UsageError


def go_matches(expr: str, text: str) -> bool:
    return re.search(goregexp.translate(expr, what="test"), text) is not None


@pytest.mark.parametrize("expr, matching, other", [
    ("^x{,2}y$", ["x{,2}y"], ["y", "xy", "xxy"]),  # {,n} is not a repeat in Go: literal text
    ("^a{2,}$", ["aa", "aaaa"], ["a", "a{2,}"]),
    ("^a{01}$", ["a{01}"], ["a"]),  # a leading zero: not a repeat either
    ("^a|b$", ["ab", "xb", "b"], ["ba", "x"]),  # Go searches: the alternation splits the anchors
    ("^[[:digit:]x]$", ["5", "x"], [":", "]"]),
    ("^[^[:^lower:]]$", ["q"], ["Q", "5"]),
    ("^[\\w-z]$", ["a", "-", "z", "_"], ["+", "é"]),  # - after a class escape is a literal
    ("^\\w\\d\\s$", ["a1 ", "_9\t"], ["é1 ", "a١ ", "a1\v"]),  # ASCII classes, \s without \v
    ("^\\W$", ["é", "-"], ["a", "_"]),
    ("^a\\b", ["a", "a-", "aé"], ["ab", "a_"]),  # an ASCII word boundary: é is not a word character
    ("^\\x41\\x{1F600}\\101\\0$", ["A\U0001F600A\0"], ["x41"]),
    ("^\\Q*+?\\E$", ["*+?"], ["", "*"]),
    ("^\\.$", ["."], ["a"]),
    ("^.$", ["a", "\udcff"], ["\n", "ab"]),  # any rune but a newline, an invalid byte too
    ("^\ufffd$", ["\ufffd", "\udc80"], ["a"]),  # U+FFFD stands for any byte that is not UTF-8
    ("^[^a]$", ["\n", "\udcff"], ["a"]),
    ("^a+?b*?$", ["ab", "aab"], ["b"]),  # a lazy repeat is one repeat
    ("^(ab)+$", ["abab"], ["aba"]),
    ("^[]a]$", ["]", "a"], ["b"]),  # a ] first in a class is literal
    ("^[a-]$", ["a", "-"], ["b"]),
])
def test_matches_as_go_does(expr: str, matching: List[str], other: List[str]) -> None:
    for text in matching:
        assert go_matches(expr, text), (expr, text)
    for text in other:
        assert not go_matches(expr, text), (expr, text)


@pytest.mark.parametrize("expr, reason", [
    ("a**", "invalid nested repetition operator"),
    ("a++", "invalid nested repetition operator"),
    ("a{2}{3}", "invalid nested repetition operator"),
    ("a{2}*", "invalid nested repetition operator"),
    ("*a", "missing argument to repetition operator"),
    ("(+a)", "missing argument to repetition operator"),
    ("a|*", "missing argument to repetition operator"),
    ("a{1001}", "invalid repeat count"),
    ("a{3,2}", "invalid repeat count"),
    ("(a", "missing closing )"),
    ("a)", "unexpected )"),
    ("[a", "missing closing ]"),
    ("[z-a]", "invalid character class range"),
    ("[[:nope:]]", "invalid character class range"),
    ("\\é", "invalid escape sequence"),
    ("\\8", "invalid escape sequence"),
    ("\\C", "invalid escape sequence"),
    ("[\\b]", "invalid escape sequence"),
    ("\\xZ1", "invalid escape sequence"),
    ("\\x{110000}", "invalid escape sequence"),
    ("a\\", "trailing backslash at end of expression"),
])
def test_refuses_what_go_refuses_with_its_reason(expr: str, reason: str) -> None:
    with pytest.raises(UsageError, match=re.escape(reason)):
        goregexp.translate(expr, what="pattern")


@pytest.mark.parametrize("expr", ["(?i)a", "(?P<n>a)", "\\pL", "[\\p{Greek}]"])
def test_syntax_not_translated_is_refused_and_says_so(expr: str) -> None:
    with pytest.raises(UsageError, match="cdtools does not support"):
        goregexp.translate(expr, what="pattern")
