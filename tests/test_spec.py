"""The container spec: files, the old start body, docker run's flags, --inherit, the hash, redaction."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from cdtools import spec
from cdtools.errors import UsageError

DATA = Path(__file__).parent / "data" / "engine-1.41"


def parse(argv: List[str], env: Optional[Dict[str, str]] = None) -> spec.Spec:
    p = argparse.ArgumentParser()
    spec.add_arguments(p)
    return spec.from_args(p.parse_args(argv), (env or {}).get)


def test_old_start_body_moves_into_host_config(tmp_path: Path) -> None:
    doc = {
        "create": {"Image": "app:1", "Env": ["A=1"]},
        "start": {"PortBindings": {"8080": [{"HostPort": 80}]}, "RestartPolicy": "always",
                  "Binds": ["data:/data"]},
    }
    (tmp_path / "seed.json").write_text(json.dumps(doc))
    s = parse(["--spec", str(tmp_path / "seed.json")])
    host = s.body["HostConfig"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "80"}]}
    assert host["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert host["Binds"] == ["data:/data"]
    assert s.body["ExposedPorts"] == {"8080/tcp": {}}  # a bound port is exposed, as docker run does


def test_start_spec_file_wins_over_create_host_config_and_flags_win_over_both(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"HostConfig": {"RestartPolicy": {"Name": "no"}}}))
    (tmp_path / "s.json").write_text(json.dumps({"RestartPolicy": {"Name": "always"}}))
    s = parse(["--spec", str(tmp_path / "c.json"), "--start-spec", str(tmp_path / "s.json")])
    assert s.body["HostConfig"]["RestartPolicy"]["Name"] == "always"
    s = parse(["--spec", str(tmp_path / "c.json"), "--start-spec", str(tmp_path / "s.json"),
               "--restart", "on-failure:5"])
    assert s.body["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}


@pytest.mark.parametrize("doc, words", [
    ({"Imagee": "x"}, "unknown field 'Imagee'"),
    ({"HostConfig": {"PortBinding": {}}}, "HostConfig.PortBinding"),
    ({"LxcConf": []}, "LXC"),
])
def test_bad_spec_fields_are_refused_by_name(tmp_path: Path, doc: dict, words: str) -> None:
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=words):
        parse(["--spec", str(tmp_path / "c.json")])


def test_top_level_host_config_fields_of_old_examples_move_into_host_config(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"Binds": ["/srv:/srv:ro"], "Memory": 1 << 26}))
    s = parse(["--spec", str(tmp_path / "c.json")])
    assert s.body == {"HostConfig": {"Binds": ["/srv:/srv:ro"], "Memory": 1 << 26}}


@pytest.mark.parametrize("text, key, binding", [
    ("8080", "8080/tcp", {"HostIp": "", "HostPort": ""}),
    ("80:8080", "8080/tcp", {"HostIp": "", "HostPort": "80"}),
    ("127.0.0.1:80:8080/udp", "8080/udp", {"HostIp": "127.0.0.1", "HostPort": "80"}),
    ("127.0.0.1::8080", "8080/tcp", {"HostIp": "127.0.0.1", "HostPort": ""}),
    ("[::1]:80:8080", "8080/tcp", {"HostIp": "::1", "HostPort": "80"}),
])
def test_publish_flags(text: str, key: str, binding: dict) -> None:
    assert spec.parse_port(text) == (key, binding)


@pytest.mark.parametrize("text", ["80:http", "1:2:3:4", "99999:80", "8000-8001:80-81", "80:8080/icmp"])
def test_bad_publish_flags(text: str) -> None:
    with pytest.raises(UsageError, match=f"-p '{text}'"):
        spec.parse_port(text)


def test_flags_build_a_create_body() -> None:
    s = parse(["-p", "127.0.0.1:8000:80", "-e", "A=1", "-e", "FROM_ENV", "-v", "data:/data:ro", "-v", "/cache",
               "--mount", "type=tmpfs,target=/tmp,tmpfs-size=64m", "--network", "backend", "--network-alias", "web",
               "--label", "team=x", "--health-cmd", "wget -q -O- localhost", "--health-interval", "2s",
               "--health-retries", "3", "--user", "1000", "--init", "--", "httpd", "-f"],
              env={"FROM_ENV": "yes"})
    b = s.body
    assert b["Env"] == ["A=1", "FROM_ENV=yes"]
    assert b["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}]}
    assert b["HostConfig"]["Binds"] == ["data:/data:ro"]
    assert b["Volumes"] == {"/cache": {}}
    assert b["HostConfig"]["Mounts"] == [{"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 1 << 26}}]
    assert b["HostConfig"]["NetworkMode"] == "backend"
    assert b["NetworkingConfig"] == {"EndpointsConfig": {"backend": {"Aliases": ["web"]}}}
    assert b["Labels"] == {"team": "x"}
    assert b["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q -O- localhost"], "Interval": 2_000_000_000,
                                "Retries": 3}
    assert b["User"] == "1000" and b["HostConfig"]["Init"] is True and b["Cmd"] == ["httpd", "-f"]


def test_env_file_values_are_secret_and_never_echoed(tmp_path: Path) -> None:
    f = tmp_path / "app.env"
    f.write_text("# comment\nDATABASE_URL=postgres://u:pw@db/x\n\nFROM_ENV\n")
    s = parse(["--env-file", str(f), "-e", "API_TOKEN=t0k", "-e", "COLOR=red"], env={"FROM_ENV": "v"})
    assert s.env() == {"DATABASE_URL": "postgres://u:pw@db/x", "FROM_ENV": "v", "API_TOKEN": "t0k", "COLOR": "red"}
    shown = json.dumps(spec.redacted(s.body, s))
    assert "pw@db" not in shown and "t0k" not in shown and "COLOR=red" in shown
    f.write_text("A=1\nthis line has a s3cret in it\n")
    with pytest.raises(UsageError) as err:
        parse(["--env-file", str(f)])
    assert "line 2" in str(err.value) and "s3cret" not in str(err.value)


def test_secret_env_comes_from_the_environment_never_argv() -> None:
    s = parse(["--secret-env", "DB_PASS=JENKINS_DB"], env={"JENKINS_DB": "hunter2"})
    assert s.env() == {"DB_PASS": "hunter2"} and s.is_secret("DB_PASS")
    with pytest.raises(UsageError, match="JENKINS_DB is not set"):
        parse(["--secret-env", "DB_PASS=JENKINS_DB"])


def test_auto_remove_is_refused_because_it_leaves_nothing_to_roll_back_to(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"HostConfig": {"AutoRemove": True}}))
    with pytest.raises(UsageError, match="AutoRemove"):
        parse(["--spec", str(tmp_path / "c.json")])


def test_hash_ignores_cdtools_labels_and_changes_with_spec_or_image() -> None:
    body = {"Env": ["A=1"], "Labels": {"team": "x"}}
    h = spec.effective_hash(body, "sha256:1")
    with_labels = dict(body, Labels={"team": "x", "cdtools.deployed-at": "now", "cdtools.spec-hash": h})
    assert spec.effective_hash(with_labels, "sha256:1") == h
    assert spec.effective_hash(dict(body, Image="other:tag"), "sha256:1") == h
    assert spec.effective_hash(body, "sha256:2") != h
    assert spec.effective_hash(dict(body, Env=["A=2"]), "sha256:1") != h


def _recorded_inspect() -> dict:
    return json.loads((DATA / "inspect-running.body").read_bytes())


def test_inherit_subtracts_image_defaults_and_keeps_what_the_container_set() -> None:
    doc = _recorded_inspect()
    doc["Config"]["Env"] = ["PATH=/usr/bin:/bin", "MODE=blue", "VERSION=1"]
    doc["Config"]["Labels"] = {"team": "x", "img": "1", "cdtools.spec-hash": "sha256:0",
                               "org.opencontainers.image.revision": "abc", "cdtools.added-labels":
                               "org.opencontainers.image.revision"}
    doc["HostConfig"]["PortBindings"] = {"8080/tcp": [{"HostIp": "", "HostPort": "80"}]}
    doc["HostConfig"]["RestartPolicy"] = {"Name": "always", "MaximumRetryCount": 0}
    doc["HostConfig"]["Binds"] = ["data:/data"]
    doc["Mounts"] = [{"Type": "volume", "Name": "data", "Destination": "/data", "Driver": "local", "RW": True},
                     {"Type": "volume", "Name": "f" * 64, "Destination": "/cache", "Driver": "local", "RW": True}]
    image = {"Config": {"Env": ["PATH=/usr/bin:/bin", "VERSION=1"], "Cmd": ["sleep", "60"],
                        "Labels": {"img": "1"}}}
    b = spec.inherit(doc, image).body
    assert b["Env"] == ["MODE=blue"]
    assert "Cmd" not in b  # equal to the old image's: the new image's CMD applies
    assert b["Labels"] == {"team": "x"}
    host = b["HostConfig"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "80"}]}
    assert host["RestartPolicy"]["Name"] == "always"
    # the anonymous volume is mounted by name, so its data stays
    assert host["Binds"] == ["data:/data", "f" * 64 + ":/cache"]
    # what the daemon fills in by itself is not pinned
    for key in ("MaskedPaths", "ReadonlyPaths", "ConsoleSize", "LogConfig", "NetworkMode", "ShmSize"):
        assert key not in host
    assert "Hostname" not in b  # the short id the daemon chose


def test_inherit_keeps_network_aliases_and_refuses_swarm_tasks() -> None:
    doc = _recorded_inspect()
    doc["HostConfig"]["NetworkMode"] = "backend"
    doc["NetworkSettings"]["Networks"] = {"backend": {"Aliases": [doc["Id"][:12], "web"], "NetworkID": "n",
                                                      "IPAddress": "10.0.0.2"}}
    b = spec.inherit(doc, {"Config": {}}).body
    assert b["NetworkingConfig"] == {"EndpointsConfig": {"backend": {"Aliases": ["web"]}}}
    assert b["HostConfig"]["NetworkMode"] == "backend"
    doc["Config"]["Labels"] = {"com.docker.swarm.service.id": "x"}
    with pytest.raises(UsageError, match="swarm"):
        spec.inherit(doc, {"Config": {}})


def test_diff_names_changes_and_redacts_secret_values() -> None:
    s = spec.Spec(body={}, secret_env={"DATABASE_URL"})
    old = {"Env": ["COLOR=red", "DB_PASSWORD=old-pw", "DATABASE_URL=x"],
           "HostConfig": {"RestartPolicy": {"Name": "no"}}}
    new = {"Env": ["COLOR=green", "DB_PASSWORD=new-pw", "DATABASE_URL=y"],
           "HostConfig": {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}}
    lines = spec.diff(old, new, s)
    text = "\n".join(lines)
    assert "Env.COLOR: red -> green" in lines
    assert "Env.DB_PASSWORD: <redacted> -> <redacted> (changed)" in lines
    assert "Env.DATABASE_URL: <redacted> -> <redacted> (changed)" in lines
    assert "old-pw" not in text and "new-pw" not in text
    assert any(line.startswith("HostConfig.RestartPolicy: (unset) -> ") and "always" in line for line in lines)


def test_scrub_removes_secret_values_from_log_text() -> None:
    s = spec.Spec(body={"Env": ["API_KEY=abcd1234", "COLOR=red"]})
    assert spec.scrub("key abcd1234 color red", s.secret_values()) == "key <redacted> color red"
