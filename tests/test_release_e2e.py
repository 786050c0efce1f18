"""The release pipeline end to end on the real engine and registry (issue 2 and 6's done-when).

Each test releases a copy of examples/hello under its own ``cdt-…`` names and a
free host port, and checks what a release engineer would: the page on the port,
the tags in the registry, the exit code and the one-line reason, the reports.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

import pytest

from deploy_fixtures import free_port, get

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello"


def make_app(tmp_path: Path, unique: str, registry, page: str, *, port: int,
             dockerfile_extra: str = "", cmd: str = "") -> Path:
    app = tmp_path / "app"
    if app.exists():
        shutil.rmtree(app)
    shutil.copytree(EXAMPLE, app)
    (app / "index.html").write_text(page + "\n")
    if dockerfile_extra or cmd:
        text = (app / "Dockerfile").read_text()
        if cmd:
            text = text.replace('CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]', f"CMD {cmd}")
        (app / "Dockerfile").write_text(text + dockerfile_extra)
    config = {
        "image": f"{registry.host}/{unique}/hello",
        "build": {"context": "."},
        "deploy": {"name": f"{unique}-hello", "ports": [f"127.0.0.1:{port}:8080"], "health_timeout": 30},
    }
    (app / "cdtools.json").write_text(json.dumps(config, indent=2))
    return app


def release(app: Path, registry, *extra: str, env: Dict[str, str] = None, password: str = None,
            python: List[str] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()}
    environ["PYTHONPATH"] = str(REPO)
    environ["CDTOOLS_REGISTRY_USERNAME"] = registry.user
    environ["CDTOOLS_REGISTRY_PASSWORD"] = registry.password if password is None else password
    environ.update(env or {})
    argv = (python or [sys.executable, "-m", "cdtools.release"]) + ["--config", str(app / "cdtools.json"), *extra]
    return subprocess.run(argv, env=environ, cwd=str(app), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def registry_tags(registry, repo: str) -> List[str]:
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/tags/list",
                                 headers={"Authorization": registry.basic_auth()})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        return sorted(json.loads(resp.read())["tags"] or [])


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_release_serves_the_page_and_a_second_release_replaces_it(tmp_path, unique, registry):
    port = free_port()
    app = make_app(tmp_path, unique, registry, "first page", port=port)
    env = {"BUILD_NUMBER": "7", "GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567"}
    first = release(app, registry, "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert get(f"http://127.0.0.1:{port}/") == "first page"
    # Jenkins conventions: BUILD_NUMBER, short GIT_COMMIT, latest
    assert registry_tags(registry, f"{unique}/hello") == ["0123456", "7", "latest"]
    report = json.loads((tmp_path / "r.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert [steps[n]["status"] for n in ("build", "tag", "push", "deploy")] == ["ok"] * 4
    assert steps["push"]["digest"].startswith("sha256:")
    assert steps["deploy"]["container"] == f"{unique}-hello"
    suite = ET.parse(str(tmp_path / "r.xml")).getroot()
    assert len(list(suite.iter("testcase"))) == 4 and not list(suite.iter("failure"))

    # the container runs the pushed digest, not a tag
    inspect = subprocess.run(["/usr/bin/docker", "inspect", "-f", "{{.Config.Image}}", f"{unique}-hello"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    assert inspect == f"{registry.host}/{unique}/hello@{steps['push']['digest']}"

    make_app(tmp_path, unique, registry, "second page", port=port)
    second = release(app, registry, env={"BUILD_NUMBER": "8"})
    assert second.returncode == 0, second.stdout + second.stderr
    assert get(f"http://127.0.0.1:{port}/") == "second page"
    assert "8" in registry_tags(registry, f"{unique}/hello")


def test_failed_run_step_fails_the_build_with_the_daemons_message(tmp_path, unique, registry):
    app = make_app(tmp_path, unique, registry, "never", port=free_port(), dockerfile_extra="RUN exit 2\n")
    proc = release(app, registry, "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"))
    assert proc.returncode == 4
    line = one_error_line(proc)
    assert "returned a non-zero code: 2" in line
    steps = {s["name"]: s for s in json.loads((tmp_path / "r.json").read_text())["steps"]}
    assert steps["build"]["status"] == "failed" and "non-zero code: 2" in steps["build"]["message"]
    assert [steps[n]["status"] for n in ("tag", "push", "deploy")] == ["skipped"] * 3
    failures = list(ET.parse(str(tmp_path / "r.xml")).getroot().iter("failure"))
    assert len(failures) == 1 and "non-zero code: 2" in failures[0].get("message", "")


def test_wrong_registry_password_fails_the_push(tmp_path, unique, registry):
    app = make_app(tmp_path, unique, registry, "never pushed", port=free_port())
    proc = release(app, registry, password="not-the-password")
    assert proc.returncode == 5
    line = one_error_line(proc)
    assert registry.host in line and ("unauthorized" in line or "authentication required" in line)
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_image_that_exits_at_once_rolls_back_to_the_serving_container(tmp_path, unique, registry):
    port = free_port()
    app = make_app(tmp_path, unique, registry, "good page", port=port)
    assert release(app, registry).returncode == 0
    assert get(f"http://127.0.0.1:{port}/") == "good page"

    make_app(tmp_path, unique, registry, "bad page", port=port, cmd='["sh", "-c", "echo dying >&2; exit 3"]')
    proc = release(app, registry)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert "rolled back" in one_error_line(proc)
    assert "dying" in proc.stdout + proc.stderr  # the new container's last log lines are shown
    assert get(f"http://127.0.0.1:{port}/") == "good page"


def test_dry_run_changes_nothing(tmp_path, unique, registry):
    app = make_app(tmp_path, unique, registry, "rehearsal", port=free_port())
    proc = release(app, registry, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "POST /v1." in proc.stdout and "/build?" in proc.stdout and "/push?" in proc.stdout
    assert registry.password not in proc.stdout + proc.stderr
    ps = subprocess.run(["/usr/bin/docker", "ps", "-a", "--filter", f"name={unique}", "-q"],
                        stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    images = subprocess.run(["/usr/bin/docker", "images", "-q", f"{registry.host}/{unique}/hello"],
                            stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    assert ps == "" and images == ""


def test_release_from_the_zipapp_with_only_config_and_jenkins_env(tmp_path, unique, registry):
    pyz = tmp_path / "cdtools.pyz"
    subprocess.run([sys.executable, "-m", "cdtools.vendor", "-o", str(pyz), "-q"], cwd=str(REPO), check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    port = free_port()
    app = make_app(tmp_path, unique, registry, "from the zipapp", port=port)
    env = {"BUILD_NUMBER": "41", "GIT_COMMIT": "fedcba9876543210fedcba9876543210fedcba98",
           "BUILD_URL": "http://jenkins.invalid/job/x/41/", "JOB_NAME": "x", "PYTHONPATH": ""}
    proc = release(app, registry, "--report", str(tmp_path / "r.json"), env=env,
                   python=[sys.executable, "-I", "-S", str(pyz), "release"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert get(f"http://127.0.0.1:{port}/") == "from the zipapp"
    assert registry_tags(registry, f"{unique}/hello") == ["41", "fedcba9", "latest"]
    labels = json.loads(subprocess.run(
        ["/usr/bin/docker", "inspect", "-f", "{{json .Config.Labels}}", f"{unique}-hello"],
        stdout=subprocess.PIPE, text=True, check=True).stdout)
    assert labels.get("org.opencontainers.image.revision") == "fedcba9876543210fedcba9876543210fedcba98"


def test_no_push_builds_and_tags_but_deploys_nothing(tmp_path, unique, registry):
    app = make_app(tmp_path, unique, registry, "local only", port=free_port())
    proc = release(app, registry, "--no-push", "--report", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    steps = {s["name"]: s for s in json.loads((tmp_path / "r.json").read_text())["steps"]}
    assert [steps[n]["status"] for n in ("build", "tag", "push", "deploy")] == ["ok", "ok", "skipped", "skipped"]
    assert "nothing was pushed" in steps["deploy"]["message"]
    ps = subprocess.run(["/usr/bin/docker", "ps", "-a", "--filter", f"name={unique}", "-q"],
                        stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    assert ps == ""


def test_a_named_password_variable_that_is_unset_fails_before_the_build(tmp_path, unique, registry):
    app = make_app(tmp_path, unique, registry, "never built", port=free_port())
    config = json.loads((app / "cdtools.json").read_text())
    config["push"] = {"username_env": "NU_REGISTRY_USER", "password_env": "NU_REGISTRY_PASSWORD"}
    (app / "cdtools.json").write_text(json.dumps(config))
    proc = release(app, registry)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "NU_REGISTRY_USER and NU_REGISTRY_PASSWORD" in line and "not set" in line
    assert "==> build" not in proc.stdout
