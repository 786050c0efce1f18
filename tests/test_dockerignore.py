""".dockerignore semantics: unit tables, the 33 observed cases, and a differential test
against the Debian docker 20.10 CLI and daemon (classic builder)."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import pytest

from contextkit import (
    DOCKER_CLI,
    CLIRefused,
    build_with_cli,
    build_with_plan,
    image_files,
    make_case_tree,
    remove_image,
)
from cdtools import dockerignore
from cdtools.context import ContextPlan, plan_context, stream_context
from cdtools.errors import UsageError

CASES = json.loads((Path(__file__).parent / "data" / "dockerignore.json").read_text())["cases"]


# ------------------------------------------------------------------------- reading

@pytest.mark.parametrize(
    "data, patterns",
    [
        (b"\xef\xbb\xbf*.log\n", ["*.log"]),  # BOM stripped
        (b"# comment\n #not-a-comment\n", ["#not-a-comment"]),  # '#' only counts in column 0
        (b"  foo/  \r\n", ["foo"]),  # trimmed, CRLF, Clean drops the trailing slash
        (b"/abs/path\n", ["abs/path"]),
        (b"!/x/../y\n", ["!y"]),
        (b"! spaced\n", ["!spaced"]),
        (b"../a.py\n/../b.py\n./c\n", ["../a.py", "b.py", "c"]),
        (b"\n\n   \n", []),
        (b"a\x1c\n", ["a\x1c"]),  # Go's TrimSpace keeps U+001C, Python's strip() would not
        (b"a\xc2\xa0\n", ["a"]),  # but it trims a no-break space
        (b"x\n\xef\xbb\xbfy\n", ["x", "\ufeffy"]),  # a BOM is only special on line 1
    ],
)
def test_reading_patterns(data: bytes, patterns: List[str]) -> None:
    assert dockerignore.parse(data) == patterns


def test_missing_file_means_no_patterns(tmp_path: Path) -> None:
    assert dockerignore.read(str(tmp_path)) == []


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").mkdir()
    with pytest.raises(UsageError, match=r"\.dockerignore"):
        dockerignore.read(str(tmp_path))


# ------------------------------------------------------------------------ matching

@pytest.mark.parametrize(
    "path, patterns, excluded",
    [
        ("README.md", ["readme.md"], False),  # case-sensitive
        ("a.py", ["*.PY"], False),
        ("dir/file", ["dir"], True),  # a parent matches
        ("a/b/c.log", ["**/*.log"], True),
        ("c.log", ["**/*.log"], True),
        ("foo/x/bar/z", ["foo/**/bar"], True),  # parent prefix of the pattern's length matches
        ("foo/x/y/bar/z", ["foo/**/bar"], False),  # 20.10 tries only that one prefix
        ("docs/a/b.md", ["docs/**/*.md"], True),
        ("ab", ["a+b"], True),  # regexp characters act as regexp, as in Docker
        ("a+b", ["a+b"], False),
        ("x1.txt", ["x[1].txt"], True),
        ("x[1].txt", ["x[1].txt"], False),
        ("a.py", ["*.py", "!a.py"], False),  # the last match decides
        ("a.py", ["!a.py", "*.py"], True),
        ("sub/a.py", ["*.py"], False),  # '*' does not cross '/'
        ("a", ["!../../a"], True),  # the matcher cleans "!../../a" to "a": not an exception
        ("a*b", ["a\\*b"], True),
        ("axb", ["a\\*b"], False),
    ],
)
def test_matching(path: str, patterns: List[str], excluded: bool) -> None:
    assert dockerignore.PatternMatcher(patterns).matches(path) is excluded


def test_exceptions_reopen_a_directory_only_by_text_prefix() -> None:
    assert dockerignore.PatternMatcher(["foo", "!foo/bar/a.py"]).may_reopen("foo")
    assert not dockerignore.PatternMatcher(["*", "!*/a.py"]).may_reopen("foo")
    assert not dockerignore.PatternMatcher(["foo"]).may_reopen("foo")


@pytest.mark.parametrize("pattern", ["!", "a[", "[]a]", "x\\", "[a-]"])
def test_bad_patterns_are_usage_errors(pattern: str) -> None:
    with pytest.raises(UsageError, match="pattern"):
        dockerignore.PatternMatcher([pattern])


def test_build_files_are_kept_and_the_daemon_removes_them() -> None:
    assert dockerignore.keep_build_files(["*"], "sub/Dockerfile") == ["*", "!.dockerignore", "!sub/Dockerfile"]
    assert dockerignore.keep_build_files(["*.py"], "Dockerfile") == ["*.py"]
    assert dockerignore.daemon_removes(["*"], "Dockerfile") == (".dockerignore", "Dockerfile")
    assert dockerignore.daemon_removes(["Dockerfile"], "Dockerfile") == ("Dockerfile",)


def test_go_clean() -> None:
    assert [dockerignore.go_clean(p) for p in ["", "a//b/", "/../a", "../../a", "a/../..", "//x"]] == [
        ".", "a/b", "/a", "../../a", "..", "/x",
    ]


# ------------------------------------------------------------ the observed 33 cases

def sent_files(plan: ContextPlan) -> Set[str]:
    """Regular files and symlinks the plan sends."""
    return {rel for rel in plan.entries if not os.path.isdir(os.path.join(plan.root, rel)) or os.path.islink(os.path.join(plan.root, rel))}


def expected_in_image(plan: ContextPlan) -> Set[str]:
    """What ``COPY . /ctx/`` sees: the daemon deletes an excluded Dockerfile and .dockerignore."""
    return sent_files(plan) - set(dockerignore.daemon_removes(plan.excludes, plan.dockerfile))


def plan_case(root: Path, case: Dict[str, Any]) -> ContextPlan:
    dockerfile = str(root / case["dockerfile"]) if "dockerfile" in case else None
    return plan_context(str(root), dockerfile, warn=lambda message: None)


def test_the_cases_file_has_all_33_cases() -> None:
    assert len(CASES) == 33


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_observed_case(tmp_path: Path, case: Dict[str, Any]) -> None:
    root = tmp_path / "ctx"
    make_case_tree(root, case)
    plan = plan_case(root, case)
    assert sorted(expected_in_image(plan)) == sorted(case["kept"])
    # the Dockerfile and .dockerignore always travel, excluded or not
    assert plan.dockerfile in plan.entries
    if (root / ".dockerignore").exists():
        assert ".dockerignore" in plan.entries


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_observed_case_on_the_daemon(tmp_path: Path, case: Dict[str, Any], engine_api: Any, unique: str) -> None:
    root = tmp_path / "ctx"
    make_case_tree(root, case)
    image = build_with_plan(engine_api, plan_case(root, case), f"{unique}-case:latest")
    files = image_files(engine_api, image, f"{unique}-export", under="ctx")
    assert sorted(n for n, (kind, _, _) in files.items() if kind != "dir") == sorted(case["kept"])
    for link, target in (case.get("symlinks") or {}).items():
        assert files[link] == ("symlink", 0o777, target)


# ------------------------------------------- regexp syntax: what Go's regexp makes of it

#: (.dockerignore, files): characters that are not glob syntax act as Go regexp syntax in
#: Docker; Python's re reads each of these differently (a reviewer's repros, checked on the CLI)
REGEXP_DIALECT = {
    "bom-opens-a-later-pattern": (b"# c\n\xef\xbb\xbfsecret.txt\n", ["secret.txt", "\ufeffsecret.txt"]),
    "bom-after-bang": (b"*.txt\n!\xef\xbb\xbfkeep.txt\n", ["keep.txt", "\ufeffkeep.txt"]),
    "brace-without-min-is-literal": (b"x{,2}y\nz{,}\n", ["y", "xy", "x{,2}y", "z", "z{,}"]),
    "brace-repeat": (b"a{2}\nb{1,2}c\n", ["a", "aa", "a{2}", "bc", "bbc", "bbbc"]),
    "posix-class": (b"[[:digit:]].txt\n", ["5.txt", "d].txt", ":].txt"]),
    "posix-class-negated": (b"[[:^alpha:]]\n", ["5", "a", "_"]),
    "perl-class-in-brackets": (b"a[\\s_]b\nc[\\S]d\n", ["a_b", "a b", "c_d", "c d"]),
    "perl-classes-are-ascii": (b"a\\w\nb\\d\nc\\W\n", ["ab", "a\u00e9", "b1", "b\u0663", "c\u00e9", "c_"]),
    "class-escape-then-dash": (b"[\\w-z]\n", ["a", "-", "z", "+"]),
    "alternation-searches": (b"a|b\n", ["xb", "ax", "b"]),
    "alternation-empty-side": (b"zz|\n", ["other", "zz"]),
    "alternation-with-glob": (b"nomatch|*.log\n", ["sub/x.log", "y.txt"]),
    "plus-and-group": (b"(ab)+c\nd+\n", ["abc", "ababc", "ac", "d", "ddd", "d+"]),
    "escapes": (b"\\x41\n\\x{42}\n\\103\n\\Q*\\E\n", ["A", "B", "C", "*", "x41"]),
    "repeat-of-a-repeat-across-an-empty-quote": (b"a+\\Q\\E+\nb{2}\\Q\\E{2}\n", ["a", "aa", "bb", "bbbb", "bbb", "c"]),
    "nested-counts-up-to-1000": (b"(a{2}){500}\n(b{0}){1000}\n(c{2,}){500}\n((d{600}){0}){2}\n",
                                 ["aa", "a", "b", "cc", "ccc", "d", "e"]),
    "escaped-surrogates-match-nothing": (b"zz|\\x{DC80}\na*\\x{D800}\n(\\x{DC80})\n", ["\ufffd", "a\ufffd", "x"]),
    # Go's filepath.Match checks only what it reads: nothing after a chunk that fails
    "glob-checked-up-to-the-first-miss": (b"a*[a-]\ntab*/[\\d-]*\nb*\\\n", ["a", "ab", "a-", "tab/5", "tab/-", "b$"]),
}


@pytest.mark.parametrize("ignore, files", list(REGEXP_DIALECT.values()), ids=list(REGEXP_DIALECT))
def test_regexp_syntax_in_patterns_is_read_as_go_reads_it(tmp_path: Path, cli_upload: Any, ignore: bytes,
                                                          files: List[str]) -> None:
    root = tmp_path / "ctx"
    make_case_tree(root, {"files": files})
    (root / ".dockerignore").write_bytes(ignore)
    body, _ = cli_upload(root)
    plan = plan_context(str(root), warn=lambda message: None)
    assert b"".join(stream_context(plan, warn=lambda message: None)) == body


@pytest.mark.parametrize("pattern", [b"a++", b"a*+", b"a**b{2}{3}", "\\\u00e9".encode(), b"a{1001}", b"[\\b]",
                                     b"[[:nope:]]", b"(a", b"a)", b"[z-a]", b"+a|+b", b"\\8",
                                     b"[a-]", b"a[a-]", b"*/[a-]", b".*[a-]", b"a?[a-]", b"a\\",
                                     b"(a{2}){501}", b"((a{2}){2}){251}", b"(a{3,}){500}", b"(x|a{10}){101}",
                                     pytest.param(b"(" * 999 + b"a" + b")" * 999, id="999-nested-groups")])
def test_patterns_go_refuses_are_refused_as_the_cli_does(tmp_path: Path, cli_upload: Any, pattern: bytes) -> None:
    root = tmp_path / "ctx"
    make_case_tree(root, {"files": ["a"]})
    (root / ".dockerignore").write_bytes(pattern + b"\n")
    with pytest.raises(CLIRefused, match="syntax error in pattern|error checking context"):
        cli_upload(root)
    with pytest.raises(UsageError, match="syntax error"):
        plan_context(str(root), warn=lambda message: None)


def test_groups_nested_deeper_than_python_compiles_are_refused_in_one_line(tmp_path: Path) -> None:
    # Go takes 998 levels; Python's re compiler gives up near 500: a UsageError, not a traceback
    with pytest.raises(UsageError, match="deeper than cdtools supports"):
        dockerignore.PatternMatcher(["(" * 998 + "a" + ")" * 998])


@pytest.mark.parametrize("line, accepted", [
    pytest.param(b"a" * 65534 + b"\r\n", True, id="65534+CRLF"),
    pytest.param(b"a" * 65535 + b"\r\n", False, id="65535+CRLF"),  # 64 KiB holds the line with its \r
    pytest.param(b"a" * 65535, True, id="65535"),
    pytest.param(b"a" * 65536, False, id="65536"),
    pytest.param(b"\xef\xbb\xbf" + b"a" * 65532 + b"\n", True, id="BOM+65532+LF"),
    pytest.param(b"\xef\xbb\xbf" + b"a" * 65533 + b"\n", False, id="BOM+65533+LF"),  # and the BOM it strips later
])
def test_the_line_length_limit_is_the_clis(tmp_path: Path, cli_upload: Any, line: bytes, accepted: bool) -> None:
    root = tmp_path / "ctx"
    make_case_tree(root, {"files": ["a"]})
    (root / ".dockerignore").write_bytes(line)
    if accepted:
        body, _ = cli_upload(root)
        plan = plan_context(str(root), warn=lambda message: None)
        assert b"".join(stream_context(plan, warn=lambda message: None)) == body
    else:
        with pytest.raises(CLIRefused, match="token too long"):
            cli_upload(root)
        with pytest.raises(UsageError, match="longer than"):
            plan_context(str(root), warn=lambda message: None)


# --------------------------------------------------- differential: the docker CLI

NAMES = ["a", "b", "foo", "bar", "x.py", "y.txt", "Ab.PY", "ü.txt", "a+b", "x[1]", "sp ace", "#h", ".hid", "Dockerfile.x",
         "new\nline", "tab\tx"]
TOKENS = [
    "*", "**", "?", "[a-c]", "[!x]", "foo", "bar", "*.py", "*.txt", "a", "b", "ü*", ".hid", "a+b", "x[1]", "sp ace",
    "d", "e", "x.p?", "[^a]*", "A*", "new?line", "tab*", "x[",  # "x[" fails docker's pattern check: both sides must refuse it
    # Go regexp syntax, as Docker lets it through: both sides must read (or refuse) it alike
    "a+", "(a|b)*", "fo{2}", "[[:alpha:]]*", "\\w*", "b|c", "x{,1}", "[\\d-]*",
]


def random_case(rng: random.Random, number: int) -> Dict[str, Any]:
    files: List[str] = []
    dirs: List[str] = []
    for _ in range(rng.randint(4, 18)):
        depth = rng.choice([0, 0, 1, 1, 2, 3])
        parts = [rng.choice(NAMES[:5] + ["d", "e"]) for _ in range(depth)] + [rng.choice(NAMES)]
        path = "/".join(parts)
        if any(path == f or f.startswith(path + "/") or path.startswith(f + "/") for f in files):
            continue
        files.append(path)
    if rng.random() < 0.4:
        empty = rng.choice(["empty", "foo/empty", "d/e/empty"])
        if not any(empty.startswith(f + "/") or f.startswith(empty + "/") or f == empty for f in files):
            dirs.append(empty)
    lines: List[str] = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.random()
        if kind < 0.08:
            lines.append("# " + rng.choice(TOKENS))
        elif kind < 0.13:
            lines.append(rng.choice(["", "   "]))
        else:
            depth = rng.choice([1, 1, 1, 2, 2, 3])
            pattern = "/".join(rng.choice(TOKENS) for _ in range(depth))
            if rng.random() < 0.15:
                pattern = "/" + pattern
            if rng.random() < 0.1:
                pattern += "/"
            if rng.random() < 0.08:
                pattern = rng.choice(["./", "../", "x/../"]) + pattern
            if rng.random() < 0.3:
                pattern = "!" + pattern
            if rng.random() < 0.1:
                pattern = " " + pattern + " "
            lines.append(pattern)
    text = "\n".join(lines) + rng.choice(["\n", "", "\r\n"])
    case: Dict[str, Any] = {"name": f"random-{number}", "files": files, "dirs": dirs}
    data = text.encode()
    if rng.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
    case["dockerignore_hex"] = data.hex()
    if rng.random() < 0.15 and not any(f == "sub" or f.startswith("sub/") for f in files):
        case["files"] = files + ["sub/Dockerfile.ci"]
        case["dockerfile"] = "sub/Dockerfile.ci"
    return case


def cdtools_outcome(tmp: Path, case: Dict[str, Any]) -> Optional[List[str]]:
    root = tmp / "mine"
    shutil.rmtree(root, ignore_errors=True)
    make_case_tree(root, case)
    try:
        return sorted(expected_in_image(plan_case(root, case)))
    except UsageError:
        return None


def docker_outcome(tmp: Path, case: Dict[str, Any], api: Any, docker_host: str, home: Path, tag: str) -> Optional[List[str]]:
    root = tmp / "theirs"
    shutil.rmtree(root, ignore_errors=True)
    make_case_tree(root, case)
    dockerfile = root / case["dockerfile"] if "dockerfile" in case else None
    code, output = build_with_cli(docker_host, home, root, tag, dockerfile)
    if code != 0:
        return None
    try:
        files = image_files(api, tag, tag.replace(":", "-") + "-x", under="ctx")
    finally:
        remove_image(api, tag)
    return sorted(n for n, (kind, _, _) in files.items() if kind != "dir")


def shrink(case: Dict[str, Any], differs: Any) -> Dict[str, Any]:
    """The smallest case (fewer pattern lines, then fewer files) that still differs."""
    best = dict(case)
    changed = True
    while changed:
        changed = False
        lines = bytes.fromhex(best["dockerignore_hex"]).split(b"\n")
        for i in range(len(lines)):
            trial = dict(best, dockerignore_hex=b"\n".join(lines[:i] + lines[i + 1 :]).hex())
            if differs(trial):
                best, changed = trial, True
                break
        if changed:
            continue
        for i, f in enumerate(best["files"]):
            if f == best.get("dockerfile"):
                continue
            trial = dict(best, files=best["files"][:i] + best["files"][i + 1 :])
            if differs(trial):
                best, changed = trial, True
                break
    return best


@pytest.mark.e2e
@pytest.mark.skipif(not os.path.exists(DOCKER_CLI) and os.environ.get("CI") != "true", reason=f"{DOCKER_CLI} (Debian docker.io) is not installed")
def test_differential_against_the_docker_cli(tmp_path: Path, engine_api: Any, engine_available: Any, unique: str, clean_env: Path) -> None:
    rng = random.Random(20240603)
    tag = f"{unique}-diff:latest"
    failures = []
    for number in range(40):
        case = random_case(rng, number)

        def differs(trial: Dict[str, Any]) -> bool:
            mine = cdtools_outcome(tmp_path, trial)
            theirs = docker_outcome(tmp_path, trial, engine_api, engine_available.docker_host, clean_env, tag)
            return mine != theirs

        if differs(case):
            small = shrink(case, differs)
            small["dockerignore_text"] = bytes.fromhex(small["dockerignore_hex"]).decode("utf-8", "replace")
            mine = cdtools_outcome(tmp_path, small)
            theirs = docker_outcome(tmp_path, small, engine_api, engine_available.docker_host, clean_env, tag)
            failures.append(f"{json.dumps(small, ensure_ascii=False)}\n  cdtools: {mine}\n  docker:  {theirs}")
            if len(failures) >= 3:
                break
    assert not failures, "smallest differing cases:\n" + "\n".join(failures)


def test_random_cases_are_reproducible() -> None:
    first = [random_case(random.Random(7), n) for n in range(3)]
    again = [random_case(random.Random(7), n) for n in range(3)]
    assert first == again and all(case["files"] for case in first)
