"""Deploy, plan, rollback and history against the real engine (``scripts/local-stack up``)."""
from __future__ import annotations

import json
import re
import signal
import socket
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from cdtools import deploy, history, plan, rollback
from tests.deploy_fixtures import (Images, free_port, get, images, inspect, read_until, run_deploy_process, run_main,  # noqa: F401
                                   start_deploy)

pytestmark = pytest.mark.e2e


def run_deploy(capsys: pytest.CaptureFixture[str], *argv: str, main: Any = deploy.main) -> Tuple[int, str, str]:
    return run_main(capsys, main, *argv)


def steps(out: str) -> List[str]:
    return [line[4:] for line in out.splitlines() if line.startswith("==> ")]


def test_deploy_serves_new_page_and_keeps_previous(capsys, images: Images, unique: str, engine_api) -> None:
    port = free_port()
    v1, v2 = images.httpd("1"), images.httpd("2")
    url = f"http://127.0.0.1:{port}/"
    common = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--restart", "always", "--probe", url]

    code, out, err = run_deploy(capsys, *common, "--image", v1)
    assert code == 0, err
    assert get(url) == "page 1"

    code, out, err = run_deploy(capsys, *common, "--image", v2)
    assert code == 0, err
    assert get(url) == "page 2"
    current = inspect(engine_api, unique)
    previous = inspect(engine_api, f"{unique}-previous")
    assert current["Config"]["Image"] == v2 and current["State"]["Running"]
    assert current["HostConfig"]["RestartPolicy"]["Name"] == "always"
    # the kept one waits stopped, and is not started again by a daemon restart
    assert previous["Config"]["Image"] == v1 and not previous["State"]["Running"]
    assert previous["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert inspect(engine_api, f"{unique}-cdtools-new") is None
    assert inspect(engine_api, f"{unique}-cdtools-lock") is None


def test_rerun_with_same_image_and_spec_skips_unless_forced(capsys, images: Images, unique: str, engine_api) -> None:
    port = free_port()
    args = ["--name", unique, "--image", images.httpd("1"), "-p", f"127.0.0.1:{port}:8080", "-e", "A=1",
            "--probe", f"http://127.0.0.1:{port}/"]
    assert run_deploy(capsys, *args)[0] == 0
    first = inspect(engine_api, unique)["Id"]

    code, out, _ = run_deploy(capsys, *args)
    assert code == 0
    assert "nothing to do" in out
    assert inspect(engine_api, unique)["Id"] == first

    code, out, _ = run_deploy(capsys, *args, "-e", "A=2")  # a changed spec is a change
    assert code == 0 and "nothing to do" not in out
    second = inspect(engine_api, unique)["Id"]
    assert second != first

    code, out, _ = run_deploy(capsys, *args, "-e", "A=2", "--force")
    assert code == 0 and "nothing to do" not in out
    assert inspect(engine_api, unique)["Id"] != second


def test_crash_at_start_rolls_back_and_old_serves_again(capsys, images: Images, unique: str, engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    base = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--settle", "2"]
    assert run_deploy(capsys, *base, "--image", images.httpd("1"), "--probe", url)[0] == 0
    old_id = inspect(engine_api, unique)["Id"]

    code, out, err = run_deploy(capsys, *base, "--image", images.httpd("2"), "-e", "DB_PASSWORD=hunter2-xyz",
                                "--", "sh", "-c", 'echo "starting with $DB_PASSWORD"; echo boom >&2; exit 3')
    assert code == 6
    assert "rolled back" in err and "exited with code 3" in err
    assert "boom" in out  # the new container's last log lines
    assert "hunter2-xyz" not in out + err  # a secret-looking variable never reaches the output
    assert get(url) == "page 1"
    now = inspect(engine_api, unique)
    assert now["Id"] == old_id and now["State"]["Running"]
    assert inspect(engine_api, f"{unique}-cdtools-new") is None
    assert inspect(engine_api, f"{unique}-cdtools-lock") is None


def test_first_deploy_that_fails_leaves_nothing_and_says_so(capsys, images: Images, unique: str, engine_api) -> None:
    code, out, err = run_deploy(capsys, "--name", unique, "--image", images.httpd("1"), "--settle", "2",
                                "--", "sh", "-c", "exit 4")
    assert code == 7
    assert "no earlier container" in err
    assert inspect(engine_api, unique) is None
    assert inspect(engine_api, f"{unique}-cdtools-new") is None


def test_unhealthy_healthcheck_rolls_back(capsys, images: Images, unique: str, engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    sick = images.httpd("sick", extra="HEALTHCHECK --interval=1s --timeout=1s --retries=2 "
                                      "CMD wget -q -O /dev/null http://127.0.0.1:8080/health || exit 1")
    assert run_deploy(capsys, "--name", unique, "--image", images.httpd("1"), "-p", f"127.0.0.1:{port}:8080",
                      "--probe", url)[0] == 0

    code, out, err = run_deploy(capsys, "--name", unique, "--image", sick, "-p", f"127.0.0.1:{port}:8080",
                                "--health-timeout", "60")
    assert code == 6
    assert "unhealthy" in err
    assert "health log:" in out and "404" in out  # wget's own words, from the daemon's health log
    assert get(url) == "page 1"


def test_host_port_taken_by_another_process_rolls_back(capsys, images: Images, unique: str, engine_api) -> None:
    port, taken = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/"
    assert run_deploy(capsys, "--name", unique, "--image", images.httpd("1"), "-p", f"127.0.0.1:{port}:8080",
                      "--probe", url)[0] == 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("0.0.0.0", taken))
        squatter.listen(1)
        code, out, err = run_deploy(capsys, "--name", unique, "--image", images.httpd("2"), "-p", f"{taken}:8080")
    assert code == 6
    assert "rolled back" in err and "address already in use" in err
    assert get(url) == "page 1"
    assert inspect(engine_api, f"{unique}-cdtools-new") is None


def test_seed_two_body_json_deploys_with_port_and_restart_policy(capsys, images: Images, unique: str,
                                                                 engine_api, tmp_path: Path) -> None:
    port = free_port()
    # what the seed's curl notes send: a create body, then a start body
    seed = {
        "create": {"Image": "ignored:by-image-flag", "Env": ["GREETING=hi"], "ExposedPorts": {"8080/tcp": {}}},
        "start": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
                  "RestartPolicy": {"Name": "always"}},
    }
    seed["create"].pop("Image")
    spec_file = tmp_path / "seed.json"
    spec_file.write_text(json.dumps(seed))
    code, out, err = run_deploy(capsys, "--name", unique, "--image", images.httpd("1"), "--spec", str(spec_file),
                                "--probe", f"http://127.0.0.1:{port}/")
    assert code == 0, err
    assert get(f"http://127.0.0.1:{port}/") == "page 1"
    doc = inspect(engine_api, unique)
    assert doc["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert doc["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] == str(port)
    assert "GREETING=hi" in doc["Config"]["Env"]


def test_separate_start_spec_file_moves_into_host_config(capsys, images: Images, unique: str,
                                                         engine_api, tmp_path: Path) -> None:
    port = free_port()
    create = tmp_path / "create.json"
    start = tmp_path / "start.json"
    create.write_text(json.dumps({"Cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"]}))
    start.write_text(json.dumps({"PortBindings": {"8080": [{"HostPort": port}]}, "RestartPolicy": "on-failure:2"}))
    code, _, err = run_deploy(capsys, "--name", unique, "--image", images.httpd("1"), "--spec", str(create),
                              "--start-spec", str(start), "--probe", f"http://127.0.0.1:{port}/")
    assert code == 0, err
    doc = inspect(engine_api, unique)
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert get(f"http://127.0.0.1:{port}/") == "page 1"


def test_two_concurrent_deploys_serialise_or_name_the_holder(images: Images, unique: str, engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    v1, v2 = images.httpd("1"), images.httpd("2")
    first = start_deploy(["--name", unique, "--image", v1, "-p", f"127.0.0.1:{port}:8080", "--settle", "4"],
                         BUILD_URL="https://jenkins.example/job/a/1/")
    try:
        read_until(first, "==> health gate")
        # a second job that will not wait is refused, naming the first
        hasty = run_deploy_process(["--name", unique, "--image", v2, "-p", f"127.0.0.1:{port}:8080"],
                                   BUILD_URL="https://jenkins.example/job/b/7/")
        assert hasty.returncode == 8
        assert "https://jenkins.example/job/a/1/" in hasty.stderr
        # a patient one waits its turn, then deploys
        patient = start_deploy(["--name", unique, "--image", v2, "-p", f"127.0.0.1:{port}:8080", "--lock-wait", "60",
                                "--probe", url], BUILD_URL="https://jenkins.example/job/c/9/")
        p_out, p_err = patient.communicate(timeout=120)
        f_out, f_err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, f_err
    assert patient.returncode == 0, p_err
    assert "waiting up to 60 s for the lock" in p_out and "https://jenkins.example/job/a/1/" in p_out
    assert get(url) == "page 2"
    assert inspect(engine_api, f"{unique}-cdtools-lock") is None


def test_sigterm_mid_deploy_keeps_old_serving_and_releases_lock(images: Images, unique: str, engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    done = run_deploy_process(["--name", unique, "--image", images.httpd("1"), "-p", f"127.0.0.1:{port}:8080",
                               "--probe", url])
    assert done.returncode == 0, done.stderr
    old_id = inspect(engine_api, unique)["Id"]

    proc = start_deploy(["--name", unique, "--image", images.httpd("2"), "-p", f"127.0.0.1:{port}:8080",
                         "--settle", "30", "--health-timeout", "60"])
    read_until(proc, "==> health gate")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert "SIGTERM" in err and "rolled back" in err
    assert get(url) == "page 1"
    now = inspect(engine_api, unique)
    assert now["Id"] == old_id and now["State"]["Running"]
    assert inspect(engine_api, f"{unique}-cdtools-lock") is None
    assert inspect(engine_api, f"{unique}-cdtools-new") is None


def test_inherit_keeps_named_volume_data_port_and_env(capsys, images: Images, unique: str, engine_api) -> None:
    port = free_port()
    volume = f"{unique}-data"
    v1 = images.httpd("1", extra="ENV VERSION=1\nRUN ln -s /data /www/data")
    v2 = images.httpd("2", extra="ENV VERSION=2\nRUN ln -s /data /www/data")
    try:
        code, _, err = run_deploy(capsys, "--name", unique, "--image", v1, "-p", f"127.0.0.1:{port}:8080",
                                  "-v", f"{volume}:/data", "-e", "MODE=blue", "--restart", "unless-stopped",
                                  "--probe", f"http://127.0.0.1:{port}/")
        assert code == 0, err
        # the running service writes to its volume
        wrote = engine_api.request("POST", f"/containers/{unique}/exec",
                                   body={"Cmd": ["sh", "-c", "echo kept > /data/state.txt"]}).json()["Id"]
        engine_api.expect("POST", f"/exec/{wrote}/start", (200,), body={"Detach": False})
        assert get(f"http://127.0.0.1:{port}/data/state.txt") == "kept"

        code, out, err = run_deploy(capsys, "--name", unique, "--image", v2, "--inherit",
                                    "--probe", f"http://127.0.0.1:{port}/")
        assert code == 0, err
        assert get(f"http://127.0.0.1:{port}/") == "page 2"
        assert get(f"http://127.0.0.1:{port}/data/state.txt") == "kept"
        doc = inspect(engine_api, unique)
        env = doc["Config"]["Env"]
        assert "MODE=blue" in env
        assert "VERSION=2" in env and "VERSION=1" not in env  # the new image's defaults apply
        assert doc["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert doc["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] == str(port)
    finally:
        for name in (unique, f"{unique}-previous"):
            engine_api.request("DELETE", f"/containers/{name}?force=1")
        engine_api.request("DELETE", f"/volumes/{volume}")


def test_plan_prints_what_deploy_then_does_and_redacts_secrets(capsys, images: Images, unique: str, engine_api,
                                                                tmp_path: Path) -> None:
    port = free_port()
    env_file = tmp_path / "app.env"
    env_file.write_text("# from a Jenkins secret file\nDATABASE_URL=postgres://app:pw-in-file-77@db/app\n")
    base = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--probe", f"http://127.0.0.1:{port}/"]
    assert run_deploy(capsys, *base, "--image", images.httpd("1"))[0] == 0

    args = [*base, "--image", images.httpd("2"), "--env-file", str(env_file), "-e", "API_TOKEN=tok-secret-55",
            "-e", "COLOR=green"]
    code, planned, err = run_deploy(capsys, *args, main=plan.main)
    assert code == 0, err
    assert "pw-in-file-77" not in planned and "tok-secret-55" not in planned
    assert "Env.COLOR: (unset) -> green" in planned
    assert "Env.DATABASE_URL: (unset) -> <redacted>" in planned
    assert re.search(r"Image: \S+-httpd:1 \(\w+\) -> \S+-httpd:2 \(\w+\)", planned)
    planned_steps = re.findall(r"^  \d+\. (.*)$", planned, re.M)

    code, dry, _ = run_deploy(capsys, *args, "--dry-run")
    assert code == 0 and re.findall(r"^  \d+\. (.*)$", dry, re.M) == planned_steps
    assert inspect(engine_api, unique)["Config"]["Image"].endswith("-httpd:1")  # dry run changed nothing

    code, out, err = run_deploy(capsys, *args)
    assert code == 0, err
    assert steps(out) == planned_steps
    assert "pw-in-file-77" not in out and "tok-secret-55" not in out
    assert "COLOR=green" in inspect(engine_api, unique)["Config"]["Env"]


def test_rollback_command_restores_previous_version_and_its_policy(capsys, images: Images, unique: str,
                                                                   engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    base = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--probe", url]
    assert run_deploy(capsys, *base, "--image", images.httpd("1"), "--restart", "always")[0] == 0
    assert run_deploy(capsys, *base, "--image", images.httpd("2"), "--restart", "on-failure:3")[0] == 0
    assert get(url) == "page 2"

    code, out, err = run_deploy(capsys, "--name", unique, "--probe", url, main=rollback.main)
    assert code == 0, err
    assert get(url) == "page 1"
    current, previous = inspect(engine_api, unique), inspect(engine_api, f"{unique}-previous")
    assert current["Config"]["Image"].endswith("-httpd:1")
    assert current["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert previous["Config"]["Image"].endswith("-httpd:2") and not previous["State"]["Running"]
    assert previous["HostConfig"]["RestartPolicy"]["Name"] == "no"

    code, out, err = run_deploy(capsys, "--name", unique, "--probe", url, main=rollback.main)  # and forth again
    assert code == 0, err
    assert get(url) == "page 2"
    assert inspect(engine_api, unique)["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                                         "MaximumRetryCount": 3}


def test_history_lists_deploys_with_build_labels(capsys, images: Images, unique: str, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv("BUILD_URL", "https://jenkins.example/job/app/42/")
    monkeypatch.setenv("GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("GIT_URL", "https://git.example/app.git")
    base = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--probe", f"http://127.0.0.1:{port}/"]
    assert run_deploy(capsys, *base, "--image", images.httpd("1"))[0] == 0
    assert run_deploy(capsys, *base, "--image", images.httpd("2"))[0] == 0

    code, out, err = run_deploy(capsys, "--name", unique, "--json", main=history.main)
    assert code == 0, err
    entries = json.loads(out)
    assert [e["name"] for e in entries] == [unique, f"{unique}-previous"]
    assert entries[0]["image"].endswith("-httpd:2") and entries[1]["image"].endswith("-httpd:1")
    assert entries[0]["build_url"] == "https://jenkins.example/job/app/42/"
    assert entries[0]["revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert entries[0]["source"] == "https://git.example/app.git"


def test_deploy_pulls_from_the_registry_with_credentials_and_a_refused_pull_changes_nothing(
        capsys, images: Images, unique: str, registry, engine_api, monkeypatch) -> None:
    import base64
    import urllib.parse

    repo = f"{registry.host}/{unique}/app"
    local = images.httpd("1")
    engine_api.expect("POST", f"/images/{local}/tag?repo={urllib.parse.quote(repo, safe='')}&tag=1", (201,))
    auth = base64.urlsafe_b64encode(json.dumps({"username": registry.user, "password": registry.password,
                                                "serveraddress": registry.host}).encode()).decode()
    pushed = engine_api.expect("POST", f"/images/{urllib.parse.quote(repo, safe='')}/push?tag=1", (200,),
                               headers={"X-Registry-Auth": auth})
    assert b"errorDetail" not in pushed.body
    engine_api.expect("DELETE", f"/images/{urllib.parse.quote(repo + ':1', safe='')}", (200,))

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    monkeypatch.setenv("CDTOOLS_REGISTRY_USERNAME", registry.user)
    monkeypatch.setenv("CDTOOLS_REGISTRY_PASSWORD", registry.password)
    code, out, err = run_deploy(capsys, "--name", unique, "--image", f"{repo}:1", "-p", f"127.0.0.1:{port}:8080",
                                "--probe", url)
    assert code == 0, err
    assert f"==> pull {repo}:1 (not on the daemon yet)" in out
    assert "environment CDTOOLS_REGISTRY_PASSWORD" in out
    assert registry.password not in out + err
    assert get(url) == "page 1"

    monkeypatch.setenv("CDTOOLS_REGISTRY_PASSWORD", "wrong-" + registry.password)
    code, out, err = run_deploy(capsys, "--name", unique, "--image", f"{repo}:1", "-p", f"127.0.0.1:{port}:8080",
                                "--probe", url, "--force")
    assert code == 1  # nothing changed: not 7, which tells Jenkins the service may be down
    assert f"pull of {repo}:1" in err and "nothing was changed" in err
    assert registry.password not in out + err
    assert get(url) == "page 1"


class CountingStdin:
    """Standard input that counts how often it is read (the password must be read once, if at all)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.reads = 0

    def read(self, *_: Any) -> str:
        self.reads += 1
        return self.text if self.reads == 1 else ""


def test_password_stdin_is_read_once_for_the_pull_and_never_shown(
        capsys, images: Images, unique: str, registry, engine_api, monkeypatch) -> None:
    import urllib.parse

    repo = f"{registry.host}/{unique}/app"
    local = images.httpd("1")
    engine_api.expect("POST", f"/images/{local}/tag?repo={urllib.parse.quote(repo, safe='')}&tag=1", (201,))
    from cdtools import push  # the same credential flags: push it with them too

    stdin = CountingStdin(registry.password + "\n")
    monkeypatch.setattr("sys.stdin", stdin)
    assert push.main([f"{repo}:1", "--username", registry.user, "--password-stdin"]) == 0
    engine_api.expect("DELETE", f"/images/{urllib.parse.quote(repo + ':1', safe='')}", (200,))
    capsys.readouterr()

    port = free_port()
    stdin = CountingStdin(registry.password + "\n")
    monkeypatch.setattr("sys.stdin", stdin)
    code, out, err = run_deploy(capsys, "--name", unique, "--image", f"{repo}:1", "-p", f"127.0.0.1:{port}:8080",
                                "--probe", f"http://127.0.0.1:{port}/", "-u", registry.user, "--password-stdin")
    assert code == 0, err
    assert f"==> pull {repo}:1 (not on the daemon yet)" in out and "--password-stdin" in out
    assert stdin.reads == 1
    assert registry.password not in out + err
    assert get(f"http://127.0.0.1:{port}/") == "page 1"


def test_a_local_image_needs_no_password_and_stdin_is_left_alone(capsys, images: Images, unique: str,
                                                                 monkeypatch) -> None:
    port = free_port()
    stdin = CountingStdin("not-needed\n")
    monkeypatch.setattr("sys.stdin", stdin)
    code, out, err = run_deploy(capsys, "--name", unique, "--image", images.httpd("1"), "-p", f"127.0.0.1:{port}:8080",
                                "--probe", f"http://127.0.0.1:{port}/", "--username", "ci", "--password-stdin")
    assert code == 0, err
    assert stdin.reads == 0
    assert get(f"http://127.0.0.1:{port}/") == "page 1"


@pytest.mark.parametrize("argv, says", [
    (["--password", "hunter2-on-argv"], "a password on the command line is visible to every user"),
    (["--password=hunter2-on-argv"], "a password on the command line is visible to every user"),
    (["-u", "1000"], "--username/-u is the registry user and needs --password-stdin or --password-file"),
    (["--username", "ci", "--password-env", "X"], "--username/-u is the registry user"),
])
def test_credential_flag_mistakes_end_before_anything_runs(capsys, monkeypatch, argv: List[str], says: str) -> None:
    # no daemon at this address: refused before any connection
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    try:
        code = deploy.main(["--name", "web", "--image", "app:1", *argv])
    except SystemExit as exc:  # refused by the parser itself
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert says in err
    assert "hunter2-on-argv" not in out + err
