"""The seed's single calls and the cleanup verb against the real engine (``scripts/local-stack up``).

``python -m cdtools.container create|start|stop|rm``, ``python -m cdtools.image rm``,
``python -m cdtools.prune`` and deploy's ``--mount``: what a user scripting them checks
afterwards on the daemon, and the one-line errors when the daemon says no.
"""
from __future__ import annotations

import io
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any, List

import pytest

from cdtools import container, deploy, image, prune
from cdtools.console import Console
from cdtools.engine import connect
from cdtools.settings import current
from tests.deploy_fixtures import Images, free_port, get, images, inspect, run_main  # noqa: F401

pytestmark = pytest.mark.e2e




def image_exists(engine_api: Any, ref: str) -> bool:
    return engine_api.request("GET", f"/images/{urllib.parse.quote(ref, safe='')}/json").status == 200


# -- container create|start|stop|rm ---------------------------------------------------------------


def test_container_verbs_one_by_one(capsys, images: Images, unique: str, engine_api, tmp_path: Path) -> None:
    port = free_port()
    name = f"{unique}-one"
    start_spec = tmp_path / "start.json"
    # the seed's start body: its fields go into the create request's HostConfig
    start_spec.write_text(json.dumps({"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
                                      "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}}))
    code, out, err = run_main(capsys, container.main, "create", name, "--image", images.httpd("1"),
                              "--start-spec", str(start_spec), "-e", "COLOR=blue")
    assert code == 0, err
    created = inspect(engine_api, name)
    assert out.strip() == created["Id"]
    assert created["State"]["Status"] == "created"
    assert "COLOR=blue" in created["Config"]["Env"]
    assert created["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}

    code, out, err = run_main(capsys, container.main, "start", name)
    assert code == 0, err
    assert get(f"http://127.0.0.1:{port}/") == "page 1"
    code, out, err = run_main(capsys, container.main, "start", name)
    assert code == 0 and "already running" in out

    # busybox httpd as PID 1 ignores SIGTERM: -t 1 ends it by SIGKILL after a second
    code, out, err = run_main(capsys, container.main, "stop", name, "-t", "1")
    assert code == 0, err
    state = inspect(engine_api, name)["State"]
    assert not state["Running"] and state["ExitCode"] == 137
    code, out, err = run_main(capsys, container.main, "stop", name)
    assert code == 0 and "was not running" in out

    code, out, err = run_main(capsys, container.main, "rm", name)
    assert code == 0, err
    assert inspect(engine_api, name) is None


def test_container_verbs_say_what_the_daemon_refused_in_one_line(capsys, images: Images, unique: str,
                                                                 engine_api) -> None:
    name = f"{unique}-busy"
    assert run_main(capsys, container.main, "create", name, "--image", images.httpd("1"))[0] == 0
    assert run_main(capsys, container.main, "start", name)[0] == 0

    code, out, err = run_main(capsys, container.main, "rm", name)  # running, no --force
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "cdtools container: error:" in err
    assert "cannot remove a running container" in err
    assert inspect(engine_api, name)["State"]["Running"]

    code, _, err = run_main(capsys, container.main, "rm", name, "--force")
    assert code == 0, err
    assert inspect(engine_api, name) is None

    code, _, err = run_main(capsys, container.main, "start", f"{unique}-nobody")
    assert code == 1 and "No such container" in err and "Traceback" not in err

    code, _, err = run_main(capsys, container.main, "create", name, "--image", images.httpd("1"), "--inherit")
    assert code == 2 and "--inherit is for deploy" in err
    assert inspect(engine_api, name) is None


# -- image rm [--force] ---------------------------------------------------------------------------


def test_image_rm_untags_refuses_an_image_in_use_and_force_removes_it(capsys, images: Images, unique: str,
                                                                    engine_api) -> None:
    ref = images.httpd("1")
    extra = f"{unique}-httpd:extra"
    repo, tag = extra.rsplit(":", 1)
    engine_api.expect("POST", f"/images/{ref}/tag?repo={repo}&tag={tag}", (201,))
    image_id = engine_api.expect("GET", f"/images/{ref}/json").json()["Id"]

    code, out, err = run_main(capsys, image.main, "rm", extra)  # one of two tags: only the tag goes
    assert code == 0, err
    assert f"untagged: {extra}" in out
    assert not image_exists(engine_api, extra) and image_exists(engine_api, ref)

    # a stopped container still uses the image: the daemon refuses without --force
    assert run_main(capsys, container.main, "create", f"{unique}-user", "--image", ref)[0] == 0
    code, out, err = run_main(capsys, image.main, "rm", ref)
    assert code == 1
    assert "cdtools image: error:" in err and "must force" in err and len(err.strip().splitlines()) == 1
    assert image_exists(engine_api, ref)

    code, out, err = run_main(capsys, image.main, "rm", ref, "--force")
    assert code == 0, err
    assert f"untagged: {ref}" in out and f"deleted: {image_id}" in out
    # forced, docker deletes it although the stopped container still names it
    assert not image_exists(engine_api, ref) and not image_exists(engine_api, image_id)

    code, _, err = run_main(capsys, image.main, "rm", f"{unique}-httpd:never-built")
    assert code == 1 and "No such image" in err


# -- prune ----------------------------------------------------------------------------------------


def _deploy(capsys: pytest.CaptureFixture[str], name: str, ref: str, port: int) -> None:
    code, _, err = run_main(capsys, deploy.main, "--name", name, "--image", ref, "-p", f"127.0.0.1:{port}:8080",
                            "--probe", f"http://127.0.0.1:{port}/")
    assert code == 0, err


def _newer(images: Images, *tags: str) -> List[str]:
    """Build in order, a second apart: /images/json gives Created in whole seconds."""
    refs = []
    for tag in tags:
        time.sleep(1.1)
        refs.append(images.httpd(tag))
    return refs


def test_prune_never_removes_what_the_service_or_its_previous_uses(capsys, images: Images, unique: str,
                                                                   engine_api) -> None:
    port = free_port()
    v1 = images.httpd("1")
    v2, v3, v4 = _newer(images, "2", "3", "4")
    _deploy(capsys, unique, v1, port)
    _deploy(capsys, unique, v2, port)  # unique runs v2, unique-previous keeps v1

    code, out, err = run_main(capsys, prune.main, "--name", unique, "--keep", "0")
    assert code == 0, err
    assert not image_exists(engine_api, v3) and not image_exists(engine_api, v4)
    assert image_exists(engine_api, v1) and image_exists(engine_api, v2)  # in use: kept, --keep 0 or not
    assert f"removed {v3}" in out and f"removed {v4}" in out
    assert get(f"http://127.0.0.1:{port}/") == "page 2"
    assert inspect(engine_api, f"{unique}-previous")["Config"]["Image"] == v1


def test_prune_keeps_the_newest_and_a_refused_removal_is_a_warning(capsys, images: Images, unique: str,
                                                                   engine_api) -> None:
    port = free_port()
    v1 = images.httpd("1")
    v2, v3, v4 = _newer(images, "2", "3", "4")
    _deploy(capsys, unique, v1, port)

    class SquattingConsole(Console):
        """When prune says it keeps the newest (v4), a container starts using v3: its removal is refused."""

        def line(self, text: str) -> None:
            if text.startswith("keep ") and v4 in text:
                engine_api.expect("POST", f"/containers/create?name={unique}-squat", (201,), body={"Image": v3})
            super().line(text)

    printed = io.StringIO()
    result = prune.run(connect(current()), unique, keep=1, console=SquattingConsole(printed, tty=False))
    text = printed.getvalue()
    assert image_exists(engine_api, v4)  # the newest
    assert image_exists(engine_api, v1)  # the running one
    assert not image_exists(engine_api, v2)  # neither newest nor in use
    assert image_exists(engine_api, v3)  # the daemon refused: a container uses it
    assert len(result.warnings) == 1 and f"warning: could not remove {v3}" in text
    assert result.removed == [v2]


# -- --mount --------------------------------------------------------------------------------------


def test_deploy_mounts_bind_volume_and_tmpfs_and_keeps_the_volume_across_a_redeploy(
        capsys, images: Images, unique: str, engine_api, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    site = tmp_path / "site"
    site.mkdir()
    (site / "from-host.html").write_text("bound from the host\n")
    volume = f"{unique}-data"
    # the page links into the volume, so the service shows what the volume holds
    v1 = images.httpd("1", extra="RUN ln -s /data /www/data")
    v2 = images.httpd("2", extra="RUN ln -s /data /www/data")
    mounts = ["--mount", f"type=bind,source={site},target=/www/host,readonly",
              "--mount", f"type=volume,source={volume},target=/data",
              "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m"]
    try:
        code, out, err = run_main(capsys, deploy.main, "--name", unique, "--image", v1, "-p", f"127.0.0.1:{port}:8080",
                                  *mounts, "--probe", f"{url}/")
        assert code == 0, err
        assert get(f"{url}/host/from-host.html") == "bound from the host"
        wrote = engine_api.request("POST", f"/containers/{unique}/exec",
                                   body={"Cmd": ["sh", "-c", "echo kept > /data/state.txt; "
                                                 "touch /www/host/nope 2>/dev/null && echo writable || echo ro"],
                                         "AttachStdout": True}).json()["Id"]
        said = engine_api.expect("POST", f"/exec/{wrote}/start", (200,), body={"Detach": False}).body
        assert b"ro" in said and b"writable" not in said  # the bind mount is read-only

        code, out, err = run_main(capsys, deploy.main, "--name", unique, "--image", v2, "-p", f"127.0.0.1:{port}:8080",
                                  *mounts, "--probe", f"{url}/")
        assert code == 0, err
        assert get(f"{url}/") == "page 2"
        assert get(f"{url}/data/state.txt") == "kept"  # the named volume came along
        doc = inspect(engine_api, unique)
        by_target = {m["Destination"]: m for m in doc["Mounts"]}
        assert by_target["/www/host"]["Type"] == "bind" and by_target["/www/host"]["RW"] is False
        assert by_target["/data"]["Type"] == "volume" and by_target["/data"]["Name"] == volume
        tmpfs = [m for m in doc["HostConfig"]["Mounts"] if m["Target"] == "/scratch"]
        assert tmpfs and tmpfs[0]["Type"] == "tmpfs" and tmpfs[0]["TmpfsOptions"]["SizeBytes"] == 1024 * 1024
    finally:
        for name in (unique, f"{unique}-previous"):
            engine_api.request("DELETE", f"/containers/{name}?force=1")
        engine_api.request("DELETE", f"/volumes/{volume}")


def test_mount_flag_mistakes_are_usage_errors_before_anything_runs(capsys, unique: str, engine_api) -> None:
    for bad, says in (("type=volume,source=x", "target=/ABSOLUTE/PATH is required"),
                      ("type=nfs,target=/x", "type must be volume, bind or tmpfs"),
                      ("type=bind,target=/x", "a bind mount needs source="),
                      ("type=volume,target=/x,colour=red", "unknown option 'colour'")):
        code, out, err = run_main(capsys, deploy.main, "--name", unique, "--image", "busybox", "--mount", bad)
        assert code == 2, bad
        assert says in err
    assert inspect(engine_api, unique) is None
