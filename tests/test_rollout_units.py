"""Rollout pieces that need no daemon: the host list, {host} in a probe, per-host output, exit codes, config."""
from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from cdtools import config, deploy, rollout
from cdtools.console import Console
from cdtools.errors import DeployError, LockError, RolledBack, TransportError, UsageError
from cdtools.transport import parse_host


def test_hosts_are_kept_in_order_and_each_once() -> None:
    assert rollout.parse_hosts(" unix:///a.sock, tcp://10.0.0.2:2375 ,ssh://ci@b ") == [
        "unix:///a.sock", "tcp://10.0.0.2:2375", "ssh://ci@b"]
    with pytest.raises(UsageError, match="listed twice"):
        rollout.parse_hosts("tcp://h:2375,tcp://h:2375")
    with pytest.raises(UsageError, match="comma-separated"):
        rollout.parse_hosts(" , ")


@pytest.mark.parametrize("host, address", [
    ("unix:///var/run/docker.sock", "127.0.0.1"),
    ("tcp://10.215.3.2:2375", "10.215.3.2"),
    ("tcp://[fd00::2]:2376", "[fd00::2]"),
    ("ssh://deploy@web3.example:2222", "web3.example"),
    ("ssh://web4.example", "web4.example"),
])
def test_probe_says_host_for_the_host_being_deployed(host: str, address: str) -> None:
    endpoint = parse_host(host)
    assert rollout.probe_for("http://{host}:8080/health", endpoint) == f"http://{address}:8080/health"
    assert rollout.probe_for(None, endpoint) is None


def test_each_host_line_is_prefixed_and_whole() -> None:
    out = io.StringIO()
    base = Console(out, tty=False)
    guard = threading.Lock()
    a, b = rollout.HostConsole(base, "tcp://a:2375", guard), rollout.HostConsole(base, "tcp://b:2375", guard)
    a.step("deploy")
    b.line("pulled")
    a.text("line one\nline two\n")
    assert out.getvalue().splitlines() == ["==> [tcp://a:2375] deploy", "[tcp://b:2375] pulled",
                                           "[tcp://a:2375] line one", "[tcp://a:2375] line two"]


@pytest.mark.parametrize("error, kind, code", [
    (RolledBack("x"), RolledBack, 6), (DeployError("x"), DeployError, 7), (LockError("x"), LockError, 8),
    (TransportError("x"), TransportError, 3), (UsageError("x"), UsageError, 2),
])
def test_the_rollout_ends_with_the_failed_hosts_exit_code(error: Exception, kind: type, code: int) -> None:
    made = rollout._error_like(error, "rollout stopped at h2: x")  # type: ignore[arg-type]
    assert type(made) is kind and made.exit_code == code and str(made) == "rollout stopped at h2: x"


def test_release_config_takes_hosts_and_service_settings(tmp_path: Path) -> None:
    doc = {"image": "registry.example:5000/team/app", "deploy": {
        "target": "service:web", "replicas": 3, "publish_mode": "host", "converge_timeout": 120,
        "update": {"parallelism": 2, "delay": 1.5, "order": "start-first", "failure_action": "rollback",
                   "monitor": 5}}}
    path = tmp_path / "cdtools.json"
    path.write_text(json.dumps(doc))
    cfg, base = config.load(str(path), lambda name: None, sections={"deploy": deploy.CONFIG_KEYS})
    argv = deploy.config_argv(cfg["deploy"], "registry.example:5000/team/app@sha256:" + "e" * 64, base)
    assert "--name" not in argv  # the target names the service
    flags = " ".join(argv)
    for expected in ("--target service:web", "--replicas 3", "--publish-mode host", "--converge-timeout 120",
                     "--parallelism 2", "--update-delay 1.5", "--update-order start-first",
                     "--failure-action rollback", "--monitor 5"):
        assert expected in flags

    hosts = {"name": "web", "hosts": ["unix:///var/run/docker.sock", "tcp://10.0.0.2:2375"], "max_parallel": 2}
    argv = deploy.config_argv(hosts, "app@sha256:" + "e" * 64, str(tmp_path))
    assert argv[:2] == ["--name", "web"]
    assert "--hosts unix:///var/run/docker.sock,tcp://10.0.0.2:2375 --max-parallel 2" in " ".join(argv)


def test_release_config_refuses_an_unknown_update_key(tmp_path: Path) -> None:
    path = tmp_path / "cdtools.json"
    path.write_text(json.dumps({"deploy": {"target": "service:web", "update": {"odrer": "start-first"}}}))
    with pytest.raises(UsageError, match="deploy.update.odrer: unknown key"):
        config.load(str(path), lambda name: None, sections={"deploy": deploy.CONFIG_KEYS})


def test_release_config_with_host_and_hosts_is_refused(tmp_path: Path) -> None:
    cfg = {"name": "web", "host": "tcp://a:2375", "hosts": ["tcp://b:2375"]}
    with pytest.raises(UsageError, match="deploy.host and deploy.hosts"):
        deploy.run_from_config(None, cfg, image="app:1", base=str(tmp_path),  # type: ignore[arg-type]
                               default_host=None, credentials=None, console=Console(io.StringIO()))


def test_a_rollout_without_a_name_is_a_usage_error(capsys: Any) -> None:
    assert deploy.main(["--hosts", "tcp://a:2375", "--image", "app:1"]) == 2
    assert "--name is required" in capsys.readouterr().err
