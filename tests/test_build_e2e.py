"""Build against the real engine: private base images pulled with X-Registry-Config."""
from __future__ import annotations

import base64
import json
import subprocess

import pytest

from cdtools import build, push, tag

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_base(unique, registry, monkeypatch):
    """busybox pushed as REGISTRY/unique/base:1, then removed from the daemon so a build must pull it."""
    ref = f"{registry.host}/{unique}/base:1"
    monkeypatch.setenv("CDTOOLS_REGISTRY_USERNAME", registry.user)
    monkeypatch.setenv("CDTOOLS_REGISTRY_PASSWORD", registry.password)
    assert tag.main(["busybox:latest", ref, "-q"]) == 0
    assert push.main([ref, "-q"]) == 0
    subprocess.run(["/usr/bin/docker", "rmi", ref], check=True, stdout=subprocess.DEVNULL)
    monkeypatch.delenv("CDTOOLS_REGISTRY_USERNAME")
    monkeypatch.delenv("CDTOOLS_REGISTRY_PASSWORD")
    return ref


def write_context(tmp_path, base):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"ARG BASE={base}\nFROM $BASE\nRUN echo built > /built\n")
    return ctx


def test_private_base_image_is_pulled_with_config_json_credentials(tmp_path, unique, registry, private_base,
                                                                   monkeypatch, capsys):
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    token = base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    ctx = write_context(tmp_path, private_base)
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    assert build.main([str(ctx), "-t", f"{unique}/app:1"]) == 0, capsys.readouterr().err
    assert registry.password not in capsys.readouterr().out


def test_private_base_image_without_credentials_fails_the_build(tmp_path, unique, private_base, capsys):
    ctx = write_context(tmp_path, private_base)
    assert build.main([str(ctx), "-t", f"{unique}/app:1"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("no basic auth credentials" in err[0] or "unauthorized" in err[0])


def test_sigterm_during_a_build_ends_with_143_and_one_line(tmp_path, unique):
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    ctx = tmp_path / "slow"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN sleep 8\n")
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "cdtools.build", str(ctx), "-t", f"{unique}/slow:1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert err.strip().splitlines() == ["cdtools build: terminated (SIGTERM)"]


def test_a_lower_case_dockerfile_builds(tmp_path, unique, capsys):
    # the build reads the Dockerfile the plan found, not "Dockerfile" again (the CLI's fallback holds)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "dockerfile").write_text("FROM busybox:latest\nRUN echo lower > /lower\n")
    assert build.main([str(ctx), "-t", f"{unique}/lower:1", "-q"]) == 0, capsys.readouterr().err
