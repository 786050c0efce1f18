"""The Jenkinsfile and the shared-library step compile with Groovy's real compiler.

Debian's ``groovy`` package (``apt-get install groovy``; .ci/run installs it) is
the parser Jenkins' own is built on. ``tests/data/check_pipeline.groovy`` compiles
each file without running it (pipeline steps such as ``sh`` are plain method calls
to the compiler) and also refuses an ``sh`` script that Groovy would interpolate.
Each check is shown to fail on a broken copy, so a green run means something.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import unavailable

REPO = Path(__file__).resolve().parent.parent
CHECKER = Path(__file__).resolve().parent / "data" / "check_pipeline.groovy"


def _pipeline_files() -> List[Path]:
    return [REPO / "Jenkinsfile", *sorted((REPO / "jenkins" / "vars").glob("*.groovy"))]


def _java_env() -> Dict[str, str]:
    """The environment with a JAVA_HOME that exists.

    Debian's groovy launcher defaults to /usr/lib/jvm/default-java, which only the
    default-jre package creates; a machine with another JDK as `java` lacks it.
    """
    env = dict(os.environ)
    home = env.get("JAVA_HOME", "")
    if not home or not os.path.exists(os.path.join(home, "bin", "java")):
        java = shutil.which("java")
        if java is not None:
            env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
    return env


@pytest.fixture(scope="module")
def groovy() -> str:
    found = shutil.which("groovy")
    if found is None:
        message = "groovy is not installed (apt-get install groovy)"
        unavailable(message)
    return found


def _check(groovy: str, *files: Path) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([groovy, str(CHECKER), *map(str, files)], env=_java_env(), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=REPO)


def _verdicts(proc: "subprocess.CompletedProcess[str]") -> Dict[str, str]:
    """{file: 'ok' | 'FAILED'} from the checker's output."""
    found = {}
    for line in proc.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("ok", "FAILED"):
            found[rest.split(": ", 1)[0]] = word
    return found


def test_jenkinsfile_and_library_steps_compile(groovy: str) -> None:
    files = _pipeline_files()
    assert (REPO / "jenkins" / "vars" / "cdRelease.groovy") in files
    proc = _check(groovy, *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _verdicts(proc) == {str(f): "ok" for f in files}


def _broken_copies(tmp_path: Path) -> Dict[str, Path]:
    jenkinsfile = (REPO / "Jenkinsfile").read_text()
    step = (REPO / "jenkins" / "vars" / "cdRelease.groovy").read_text()
    assert jenkinsfile.rstrip().endswith("}")
    assert "CDRELEASE_FLAGS'\n" in step
    broken = {
        # a lost closing brace, as an editor merge leaves it
        "unbalanced": jenkinsfile.rstrip()[:-1],
        # an unterminated string in the library step's sh line
        "unterminated": step.replace("CDRELEASE_FLAGS'\n", "CDRELEASE_FLAGS\n", 1),
        # the leak this project guards against: the password pasted in by Groovy
        "interpolated": step.replace(
            "sh '\"$CDRELEASE_PYTHON\"",
            "sh \"echo ${env.CDTOOLS_REGISTRY_PASSWORD}\"\n                sh '\"$CDRELEASE_PYTHON\"", 1),
    }
    assert broken["interpolated"] != step
    paths = {}
    for name, text in broken.items():
        path = tmp_path / f"{name}.groovy"
        path.write_text(text)
        paths[name] = path
    return paths


def test_broken_files_fail_the_check(groovy: str, tmp_path: Path) -> None:
    broken = _broken_copies(tmp_path)
    good = REPO / "Jenkinsfile"
    proc = _check(groovy, good, *broken.values())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _verdicts(proc) == {str(good): "ok", **{str(p): "FAILED" for p in broken.values()}}
    assert f"FAILED {broken['interpolated']}: line" in proc.stdout
    assert "GStringExpression" in proc.stdout
    # one broken file alone fails the run too
    alone = _check(groovy, broken["unbalanced"])
    assert alone.returncode == 1 and "does not compile" in alone.stdout
