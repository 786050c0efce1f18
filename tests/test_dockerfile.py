"""Dockerfile parsing and the COPY/ADD sources the classic builder reads (no daemon)."""
from __future__ import annotations

from typing import Dict, Optional

import pytest

from cdtools import dockerfile as df
from cdtools.errors import UsageError


def sources(text: str, **kw: object) -> df.Sources:
    return df.context_sources(df.parse(text.encode()), **kw)  # type: ignore[arg-type]


def paths(text: str, **kw: object) -> tuple:
    result = sources(text, **kw)
    assert result.reason is None, result.reason
    return result.paths


# ------------------------------------------------------------------------- parser

def test_continuations_comments_and_empty_lines_join_one_instruction() -> None:
    parsed = df.parse(
        b"FROM scratch\n"
        b"COPY a \\\n"
        b"  # a comment inside is dropped\n"
        b"\n"
        b"     b \\\n"
        b"  /dst/\n"
    )
    copy = parsed.instructions[1]
    assert (copy.cmd, copy.args, copy.line) == ("copy", ("a", "b", "/dst/"), 2)


def test_escape_directive_switches_to_backtick() -> None:
    parsed = df.parse(b"# escape=`\nFROM scratch\nCOPY a `\n  b /d/\nCOPY c\\ /e/\n")
    assert parsed.escape == "`"
    assert parsed.instructions[1].args == ("a", "b", "/d/")
    # with ` as escape a trailing backslash is an ordinary character
    assert parsed.instructions[2].args == ("c\\", "/e/")


def test_directive_only_counts_before_anything_else() -> None:
    parsed = df.parse(b"FROM scratch\n# escape=`\nCOPY a \\\n b /d/\n")
    assert parsed.escape == "\\"
    assert parsed.instructions[1].args == ("a", "b", "/d/")


def test_bom_crlf_and_case_insensitive_instructions() -> None:
    parsed = df.parse(b"\xef\xbb\xbffrom scratch\r\ncOpY ./x /y\r\n")
    assert [(i.cmd, i.args) for i in parsed.instructions] == [("from", ("scratch",)), ("copy", ("./x", "/y"))]


def test_json_and_shell_forms() -> None:
    parsed = df.parse(b'FROM scratch\nCOPY ["a b", "c", "/d/"]\nCOPY [a b] /x/\nRUN ["echo", "hi"]\nRUN echo hi\n')
    json_copy, shell_copy, json_run, shell_run = parsed.instructions[1:]
    assert (json_copy.json, json_copy.args) == (True, ("a b", "c", "/d/"))
    assert (shell_copy.json, shell_copy.args) == (False, ("[a", "b]", "/x/"))
    assert (json_run.json, json_run.args) == (True, ("echo", "hi"))
    assert (shell_run.json, shell_run.args) == (False, ("echo hi",))


def test_flags_are_split_off() -> None:
    ins = df.parse(b"FROM scratch\nCOPY --from=build --chown=1:1 a /b\n").instructions[1]
    assert ins.flags == ("--from=build", "--chown=1:1")
    assert ins.args == ("a", "/b")


def test_env_forms_keep_quotes_for_substitution() -> None:
    parsed = df.parse(b'FROM scratch\nENV A="x y" B=z\nENV C  old form  value\n')
    assert parsed.instructions[1].args == ("A", '"x y"', "B", "z")
    assert parsed.instructions[2].args == ("C", "old form  value")


@pytest.mark.parametrize(
    "word, env, expected",
    [
        ("$A", {"A": "1"}, "1"),
        ("${A}b", {"A": "1"}, "1b"),
        ("${A:-dflt}", {}, "dflt"),
        ("${A:-dflt}", {"A": ""}, "dflt"),
        ("${A:+alt}", {"A": "1"}, "alt"),
        ("${A:+alt}", {}, ""),
        ("$UNSET/x", {}, "/x"),
        ("'$A'", {"A": "1"}, "$A"),
        ('"$A b"', {"A": "1"}, "1 b"),
        ("\\$A", {"A": "1"}, "$A"),
        ("a\\ b", {}, "a b"),
        ("$", {}, "$"),
        ("${A}${B}", {"A": "x", "B": "y"}, "xy"),
    ],
)
def test_word_substitution_like_the_classic_builder(word: str, env: Dict[str, str], expected: str) -> None:
    assert df.expand_word(word, env) == expected


@pytest.mark.parametrize("word", ["${A", "${}", "'open", '"open', "${A:?must}", "${A%%x}"])
def test_word_substitution_errors(word: str) -> None:
    with pytest.raises(ValueError):
        df.expand_word(word, {})


# ----------------------------------------------------------------- BuildKit-only

@pytest.mark.parametrize(
    "text, needle",
    [
        ("# syntax=docker/dockerfile:1\nFROM scratch\n", "syntax"),
        ("FROM scratch\nRUN --mount=type=cache,target=/c true\n", "RUN --mount"),
        ("FROM scratch\nRUN --network=none true\n", "RUN --network"),
        ("FROM scratch\nCOPY --chmod=755 a /b\n", "COPY --chmod"),
        ("FROM scratch\nCOPY --link a /b\n", "COPY --link"),
        ("FROM scratch\nADD --checksum=sha256:00 http://x/y /z\n", "ADD --checksum"),
        ("FROM scratch\nRUN <<EOF\necho hi\nEOF\n", "heredoc"),
        ("FROM scratch\nCOPY <<EOF /x\nhello\nEOF\n", "heredoc"),
        ("FROM scratch\nONBUILD RUN --mount=type=tmpfs,target=/t true\n", "RUN --mount"),
    ],
)
def test_buildkit_only_features_are_refused_early(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        df.check_classic(df.parse(text.encode()), name="ci/Dockerfile")
    message = str(info.value)
    assert needle in message and "BuildKit" in message and "ci/Dockerfile" in message


@pytest.mark.parametrize(
    "text",
    [
        "FROM scratch\nCOPY --chmod= a /b\n",  # an empty --chmod passes the classic builder
        "FROM scratch\nRUN cat <<<here\n",  # a bash here-string, not a heredoc
        "# a comment\n# syntax=ignored-after-a-comment\nFROM scratch\n",
        'FROM scratch\nRUN ["sh", "-c", "cat <<EOF"]\n',
    ],
)
def test_classic_features_pass(text: str) -> None:
    df.check_classic(df.parse(text.encode()))


# ---------------------------------------------------------------------- sources

def test_copy_and_add_sources_without_from_or_urls() -> None:
    text = (
        "FROM scratch AS build\n"
        "COPY a.txt b/ /x/\n"
        'COPY ["c d", "/y/"]\n'
        "ADD https://example.invalid/f.tgz e.tar /z/\n"
        "FROM scratch\n"
        "COPY --from=build /x /x\n"
        "COPY --from=0 /y /y\n"
        "COPY --chown=1:2 ./f /f\n"
    )
    assert paths(text) == ("a.txt", "b/", "c d", "e.tar", "./f")


def test_arg_defaults_build_args_and_env_precedence() -> None:
    text = (
        "FROM scratch\n"
        "ARG JAR=target/app.jar\n"
        "COPY ${JAR} /app.jar\n"
        "ENV JAR=from-env.jar\n"
        "COPY $JAR /second.jar\n"
        "ARG DIR\n"
        "COPY ${DIR:-conf}/x /x\n"
    )
    assert paths(text) == ("target/app.jar", "from-env.jar", "conf/x")
    assert paths(text, build_args={"JAR": "other.jar", "DIR": "etc"}) == ("other.jar", "from-env.jar", "etc/x")


def test_meta_args_need_redeclaring_in_the_stage() -> None:
    text = "ARG V=meta.txt\nFROM scratch\nCOPY x$V /a\nARG V\nCOPY $V /b\n"
    # 20.10: an undeclared meta arg expands to nothing; redeclared it takes the meta value
    assert paths(text) == ("x", "meta.txt")
    assert paths(text, build_args={"V": "cli.txt"}) == ("x", "cli.txt")


def test_meta_args_name_the_base_stage() -> None:
    text = "ARG BASE=one\nFROM scratch AS one\nCOPY a /a\nFROM scratch AS two\nCOPY b /b\nFROM $BASE\nCOPY c /c\n"
    assert paths(text) == ("a", "b", "c")


def test_env_is_inherited_from_an_earlier_stage() -> None:
    text = "FROM scratch AS base\nENV SRC=lib\nFROM base\nCOPY $SRC /lib\n"
    assert paths(text) == ("lib",)


def test_target_stops_at_its_stage_and_earlier_stages_still_count() -> None:
    text = "FROM scratch AS a\nCOPY one /\nFROM scratch AS b\nCOPY two /\nFROM scratch AS c\nCOPY three /\n"
    assert paths(text, target="B") == ("one", "two")
    with pytest.raises(UsageError, match="failed to reach build target nope"):
        sources(text, target="nope")


def test_onbuild_of_an_earlier_stage_runs_in_the_stage_built_from_it() -> None:
    text = "FROM scratch AS base\nONBUILD COPY trig /t\nFROM base\nARG X=1\nCOPY y /y\n"
    assert paths(text) == ("trig", "y")


def test_base_image_needs_inspection() -> None:
    text = "FROM busybox\nCOPY a /a\n"
    unknown = sources(text)
    assert unknown.paths == () and unknown.reason is not None and "busybox" in unknown.reason

    seen = []

    def inspect(name: str) -> Optional[df.ImageConfig]:
        seen.append(name)
        return df.ImageConfig(env=("APP=srv",), onbuild=("COPY . /app",))

    # the image's ONBUILD copies the whole context: "." is a source
    assert paths(text, inspect_image=inspect) == (".", "a")
    assert seen == ["busybox"]
    assert paths("FROM busybox\nCOPY $APP /x\n", inspect_image=inspect) == (".", "srv")
    assert sources(text, inspect_image=lambda name: None).reason is not None


def test_image_config_from_inspect() -> None:
    config = df.ImageConfig.from_inspect({"Config": {"Env": ["A=1"], "OnBuild": None}})
    assert config == df.ImageConfig(env=("A=1",), onbuild=())


@pytest.mark.parametrize(
    "text, reason",
    [
        ("FROM scratch\nCOPY ${A /x\n", "missing"),
        ("FROM scratch\nFOO bar\nCOPY a /b\n", "unknown instruction FOO"),
        ("FROM scratch\nCOPY --weird=1 a /b\n", "flag"),
        ("COPY a /b\nFROM scratch\n", "before the first FROM"),
        ("FROM scratch\nCOPY a\n", "source and a destination"),
        ("# escape=x\nFROM scratch\n", "escape"),
        ("", "no instructions"),
    ],
)
def test_what_cannot_be_known_gives_a_reason(text: str, reason: str) -> None:
    result = sources(text)
    assert result.paths == ()
    assert result.reason is not None and reason in result.reason


# ----------------------------------------------------------------- source matching

@pytest.mark.parametrize(
    "pattern, name, matched",
    [
        ("*.py", "a.py", True),
        ("*.py", "d/a.py", False),
        ("*/a.py", "d/a.py", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "dx", True),
        ("[^a-c]x", "bx", False),
        ("\\*", "*", True),
        ("x[1].txt", "x1.txt", True),
        ("x[1].txt", "x[1].txt", False),
        ("a[", "a[", False),  # a bad pattern matches nothing, as COPY ignores the error
    ],
)
def test_go_filepath_match(pattern: str, name: str, matched: bool) -> None:
    assert df.go_match(pattern, name) is matched


@pytest.mark.parametrize("source, wild", [("a*", True), ("a?", True), ("[ab]", True), ("a\\*", False), ("plain/x", False)])
def test_contains_wildcards(source: str, wild: bool) -> None:
    assert df.contains_wildcards(source) is wild
