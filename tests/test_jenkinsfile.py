"""The Jenkinsfile's ``sh`` commands, taken out in order and run against the real engine.

Jenkins runs each ``sh`` step as ``sh -xe SCRIPT`` in the workspace with the
pipeline's ``environment`` block and its own job variables set; the tests below
do the same in a copy of this checkout, so the pipeline is tested, not only read.
The shared-library step's command (``jenkins/vars/cdRelease.groovy``) is run the
same way, with the variables its ``withEnv`` and ``withCredentials`` would set.

The commands are read by a small lexer for the Groovy the pipeline files use:
comments, the four quoted string forms, ``stage('…')``, ``environment { K = '…' }``,
``sh '…'`` and ``sh(script: '…')``. A string Groovy would interpolate is refused:
what it becomes is only known inside Jenkins (and test_groovy forbids it anyway).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = "examples/hello/cdtools.json"

# -- reading the pipeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "ident", "string", "punct"
    text: str
    line: int
    #: a double-quoted string with an unescaped $: Groovy would substitute into it
    interpolated: bool = False


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", "'": "'", '"': '"', "$": "$"}
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


def _string(text: str, pos: int, line: int) -> Tuple[Token, int]:
    """The string literal starting at ``pos``; returns it and the position after it."""
    quote = text[pos]
    delim = quote * 3 if text.startswith(quote * 3, pos) else quote
    i = pos + len(delim)
    out: List[str] = []
    interpolated = False
    while True:
        if i >= len(text) or (len(delim) == 1 and text[i] == "\n"):
            raise ValueError(f"line {line}: unterminated string")
        if text.startswith(delim, i):
            break
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt == "u":
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            if nxt == "\n":  # a line continuation inside a string
                i += 2
                continue
            if nxt not in _ESCAPES:
                raise ValueError(f"line {line}: unknown escape \\{nxt}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        if ch == "$" and quote == '"':
            interpolated = True
        out.append(ch)
        i += 1
    value = "".join(out)
    return Token("string", value, line, interpolated), i + len(delim)


def tokens(text: str) -> Iterator[Token]:
    i, line = 0, 1
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError(f"line {line}: unterminated comment")
            line += text.count("\n", i, end)
            i = end + 2
        elif ch in "'\"":
            token, end = _string(text, i, line)
            line += text.count("\n", i, end)
            i = end
            yield token
        else:
            match = _IDENT.match(text, i)
            if match:
                yield Token("ident", match.group(), line)
                i = match.end()
            else:
                yield Token("punct", ch, line)
                i += 1


def _plain(token: Token, what: str) -> str:
    if token.kind != "string":
        raise ValueError(f"line {token.line}: {what} is not a string literal")
    if token.interpolated:
        raise ValueError(f"line {token.line}: {what} is a Groovy-interpolated string; use single quotes")
    return token.text


@dataclass(frozen=True)
class Pipeline:
    environment: Dict[str, str]
    #: (stage name, command) in file order
    commands: List[Tuple[str, str]]


def read_pipeline(text: str) -> Pipeline:
    toks = list(tokens(text))
    env: Dict[str, str] = {}
    commands: List[Tuple[str, str]] = []
    stage = ""

    def at(i: int) -> Optional[Token]:
        return toks[i] if i < len(toks) else None

    i = 0
    while i < len(toks):
        tok = toks[i]
        nxt = at(i + 1)
        if tok.kind == "ident" and tok.text == "stage" and nxt is not None and nxt.text == "(":
            name = at(i + 2)
            if name is None:
                raise ValueError(f"line {tok.line}: stage without a name")
            stage = _plain(name, "stage name")
            i += 3
        elif tok.kind == "ident" and tok.text == "environment" and nxt is not None and nxt.text == "{":
            i += 2
            while at(i) is not None and toks[i].text != "}":
                key, eq, value = toks[i], at(i + 1), at(i + 2)
                if key.kind != "ident" or eq is None or eq.text != "=" or value is None:
                    raise ValueError(f"line {key.line}: environment entries must be NAME = 'value'")
                env[key.text] = _plain(value, f"environment {key.text}")
                i += 3
            i += 1
        elif tok.kind == "ident" and tok.text == "sh" and nxt is not None:
            if nxt.kind == "string":
                commands.append((stage, _plain(nxt, "sh script")))
                i += 2
            elif nxt.text == "(":
                # sh('…') or sh(script: '…', returnStatus: true)
                j = i + 2
                depth = 1
                script: Optional[str] = None
                first = at(j)
                if first is not None and first.kind == "string":
                    script = _plain(first, "sh script")
                while depth and at(j) is not None:
                    t = toks[j]
                    depth += {"(": 1, ")": -1}.get(t.text, 0) if t.kind == "punct" else 0
                    if t.kind == "ident" and t.text == "script" and at(j + 1) is not None and toks[j + 1].text == ":":
                        value = at(j + 2)
                        if value is None:
                            raise ValueError(f"line {t.line}: sh(script:) without a value")
                        script = _plain(value, "sh script")
                    j += 1
                if script is None:
                    raise ValueError(f"line {tok.line}: sh(...) without a script")
                commands.append((stage, script))
                i = j
            else:
                i += 1
        else:
            i += 1
    return Pipeline(env, commands)


# -- unit tests of the reader --------------------------------------------------------------------


def test_reader_takes_commands_in_order_with_their_stages() -> None:
    text = r"""
    // sh 'commented out'
    /* sh 'also
       commented out' */
    pipeline {
        environment { CI = 'true'
                      GREETING = "hello" }
        stages {
            stage('One') { steps { sh 'echo "one" # it\'s' } }
            stage("Two") {
                steps {
                    sh '''
                        set -u
                        echo two
                    '''
                    sh(script: 'echo three', returnStatus: true)
                    sh("echo four \u00e9")
                    junit 'x.xml'
                }
            }
        }
    }
    """
    pipeline = read_pipeline(text)
    assert pipeline.environment == {"CI": "true", "GREETING": "hello"}
    assert pipeline.commands == [
        ("One", "echo \"one\" # it's"),
        ("Two", "\n                        set -u\n                        echo two\n                    "),
        ("Two", "echo three"),
        ("Two", "echo four \u00e9"),
    ]


@pytest.mark.parametrize("text, error", [
    ('stage("x") { sh "docker login -p ${env.PASSWORD}" }', "interpolated"),
    ("sh 'no end\n", "unterminated string"),
    ("sh(returnStatus: true)", "without a script"),
])
def test_reader_refuses_what_it_cannot_reproduce(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read_pipeline(text)


def test_the_jenkinsfile_has_the_three_stages_and_their_commands() -> None:
    pipeline = read_pipeline((REPO / "Jenkinsfile").read_text())
    stages = list(dict.fromkeys(stage for stage, _ in pipeline.commands))
    assert stages == ["Test", "Zipapp", "Rehearse"]
    by_stage: Dict[str, List[str]] = {}
    for stage, command in pipeline.commands:
        by_stage.setdefault(stage, []).append(command)
    assert by_stage["Test"][0].startswith("python3 -m pytest")
    assert by_stage["Zipapp"][0] == "python3 -m cdtools.vendor -o dist/cdtools.pyz"
    assert by_stage["Rehearse"][0].startswith(
        f"python3 -I -S dist/cdtools.pyz release --config {EXAMPLE_CONFIG} --dry-run")
    assert pipeline.environment.get("CI") == "true"


# -- running the commands ------------------------------------------------------------------------


def _workspace(tmp_path: Path) -> Path:
    """A checkout as Jenkins would have it: the repository's files, no build leftovers."""
    ws = tmp_path / "workspace"
    shutil.copytree(REPO, ws, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", "dist", "reports", "*.pyz"))
    return ws


def _jenkins_env(ws: Path, tmp_path: Path, docker_host: str, extra: Dict[str, str]) -> Dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # the agent's python3 is the interpreter running these tests (it has pytest)
    python3 = bin_dir / "python3"
    if not python3.exists():
        python3.symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "SOURCE_DATE_EPOCH"}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}",
        "WORKSPACE": str(ws),
        "JENKINS_URL": "http://127.0.0.1:8080/",
        "JOB_NAME": "cdtools",
        "BUILD_NUMBER": "17",
        "BUILD_URL": "http://127.0.0.1:8080/job/cdtools/17/",
        "GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "GIT_BRANCH": "origin/main",
        "DOCKER_HOST": docker_host,
    })
    env.update(extra)
    return env


def _sh(command: str, ws: Path, env: Dict[str, str], tmp_path: Path, timeout: float = 600
        ) -> "subprocess.CompletedProcess[str]":
    """One ``sh`` step as Jenkins runs it: the script in a file, ``sh -xe``, in the workspace."""
    script = tmp_path / "script.sh"
    script.write_text(command + "\n")
    return subprocess.run(["sh", "-xe", str(script)], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _needs_release(ws: Path) -> None:
    # The Rehearse stage needs the lead's release verb with --dry-run and the example's
    # config. Until both exist this FAILS on purpose: a skip would hide the gap for good.
    missing = [p for p in ("cdtools/release.py", EXAMPLE_CONFIG) if not (ws / p).exists()]
    if missing:
        pytest.fail(f"the Rehearse stage needs {', '.join(missing)} (issue 6, release config)", pytrace=False)


def _daemon_state(engine_api: Any) -> Tuple[Any, Any]:
    """What a dry run must leave alone: every image with its tags, every container with its state."""
    images = sorted((i["Id"], tuple(sorted(i.get("RepoTags") or [])))
                    for i in engine_api.expect("GET", "/images/json").json())
    containers = sorted((c["Id"], tuple(c.get("Names") or []), c.get("State"))
                        for c in engine_api.expect("GET", "/containers/json?all=1").json())
    return images, containers


def _junit_cases(path: Path) -> List[ET.Element]:
    return list(ET.parse(path).getroot().iter("testcase"))


@pytest.mark.e2e
def test_jenkinsfile_commands_run_in_order_against_the_real_engine(
        tmp_path: Path, engine_api: Any, engine_available: Any) -> None:
    ws = _workspace(tmp_path)
    _needs_release(ws)
    pipeline = read_pipeline((ws / "Jenkinsfile").read_text())
    env = _jenkins_env(ws, tmp_path, engine_available.docker_host, pipeline.environment)

    for stage, command in pipeline.commands:
        if " -m pytest" in command:
            # The Test stage is this very suite: running it here would recurse. Its
            # command line is still checked by pytest collecting the copied suite.
            command += " --collect-only -q"
        before = _daemon_state(engine_api) if "--dry-run" in command else None
        proc = _sh(command, ws, env, tmp_path)
        assert proc.returncode == 0, f"stage {stage}: {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if before is not None:
            # a rehearsal changes nothing on the daemon (not a container, not a tag)
            assert _daemon_state(engine_api) == before, f"stage {stage}: the dry run changed the daemon"

    pyz = ws / "dist" / "cdtools.pyz"
    assert pyz.is_file()
    cases = _junit_cases(ws / "reports" / "release.xml")
    assert cases, "the rehearsal wrote no test case"
    assert not [c for c in cases if c.find("failure") is not None]
    report = json.loads((ws / "reports" / "release.json").read_text())
    assert report["status"] == "ok"


@pytest.mark.e2e
def test_cdrelease_library_command_runs_with_what_jenkins_binds(
        tmp_path: Path, engine_available: Any, engine_api: Any) -> None:
    ws = _workspace(tmp_path)
    _needs_release(ws)
    library = read_pipeline((REPO / "jenkins" / "vars" / "cdRelease.groovy").read_text())
    assert len(library.commands) == 1
    command = library.commands[0][1]

    vendored = subprocess.run([sys.executable, "-m", "cdtools.vendor", "-q", "-o", str(ws / "cdtools.pyz")],
                              cwd=ws, capture_output=True, text=True, timeout=120)
    assert vendored.returncode == 0, vendored.stderr
    password = "not-a-real-secret-4f1d9c"
    env = _jenkins_env(ws, tmp_path, engine_available.docker_host, {
        # what cdRelease's withEnv sets (dryRun: true)
        "CDRELEASE_PYTHON": "python3",
        "CDRELEASE_PYZ": "cdtools.pyz",
        "CDRELEASE_CONFIG": EXAMPLE_CONFIG,
        "CDRELEASE_REPORT": "out/report.json",
        "CDRELEASE_JUNIT": "out/report.xml",
        "CDRELEASE_FLAGS": "--dry-run",
        # and what withCredentials binds
        "CDTOOLS_REGISTRY_USERNAME": "ci",
        "CDTOOLS_REGISTRY_PASSWORD": password,
    })
    before = _daemon_state(engine_api)
    proc = _sh(command, ws, env, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _daemon_state(engine_api) == before
    # `sh -x` echoes the command as the shell ran it: the variable names, never the value
    written = (ws / "out" / "report.json").read_text() + (ws / "out" / "report.xml").read_text()
    for text in (proc.stdout, proc.stderr, written):
        assert password not in text
    assert _junit_cases(ws / "out" / "report.xml")
