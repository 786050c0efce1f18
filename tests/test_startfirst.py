"""Start first (cdtools.startfirst): the new program runs before the old one stops; only the network swaps.

Against the real engine: what a user checks afterwards (the page, the container's
networks, its own name in /etc/hosts, the old one never stopped when the new one
can't start, even when it fails before it has its network), and the classic order
with --no-start-first for a program that needs its network to start.  A fake daemon answers what this machine can't make: an overlay network.
"""
from __future__ import annotations

import datetime
import re
import signal
from typing import Any, Dict, List, Tuple

import pytest

from cdtools import deploy, plan, startfirst
from cdtools.engine import connect
from cdtools.settings import current
from tests.deploy_fixtures import (Images, free_port, get, images, inspect, read_until, run_main,  # noqa: F401
                                   start_deploy)

e2e = pytest.mark.e2e


def run_deploy(capsys: pytest.CaptureFixture[str], *argv: str, main: Any = deploy.main) -> Tuple[int, str, str]:
    return run_main(capsys, main, *argv)


def when(stamp: str) -> datetime.datetime:
    """An inspect time (RFC 3339, up to nanoseconds, trailing zeros dropped) to compare."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}")


def steps(out: str) -> List[str]:
    return [line[4:] for line in out.splitlines() if line.startswith("==> ")]


def exec_out(engine_api: Any, name: str, cmd: List[str]) -> str:
    """stdout and stderr of ``cmd`` run in container ``name``."""
    eid = engine_api.expect("POST", f"/containers/{name}/exec", (201,),
                            body={"Cmd": cmd, "AttachStdout": True, "AttachStderr": True}).json()["Id"]
    raw = engine_api.expect("POST", f"/exec/{eid}/start", (200,), body={"Detach": False}).body
    out, pos = bytearray(), 0
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos + 4:pos + 8], "big")
        out += raw[pos + 8:pos + 8 + size]
        pos += 8 + size
    return out.decode()


@e2e
def test_new_program_starts_while_the_old_serves_and_ends_like_a_normal_start(
        capsys, images: Images, unique: str, engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    common = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--probe", url]
    assert run_deploy(capsys, *common, "--image", images.httpd("1"))[0] == 0

    code, out, err = run_deploy(capsys, *common, "--image", images.httpd("2"))
    assert code == 0, err
    assert get(url) == "page 2"
    assert [s.split(" ")[0] for s in steps(out)][2:6] == ["create", "start", "stop", "connect"]
    assert f"{unique}-cdtools-new: listening on 8080/tcp after" in out
    assert f"{unique} answers on 127.0.0.1:{port} -> 8080/tcp" in out

    new, old = inspect(engine_api, unique), inspect(engine_api, f"{unique}-previous")
    # the new program ran before the old one was stopped
    assert when(new["State"]["StartedAt"]) < when(old["State"]["FinishedAt"])
    # and the container is what starting it on the default bridge gives
    assert list(new["NetworkSettings"]["Networks"]) == ["bridge"]
    assert new["NetworkSettings"]["Ports"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    ip = new["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert exec_out(engine_api, unique, ["hostname", "-i"]).split() == [ip]
    assert f"{ip}/" in exec_out(engine_api, unique, ["ip", "-o", "-4", "addr", "show", "eth0"])
    code, normal = engine_api.run(images.httpd("1"), ["cat", "/etc/resolv.conf"], f"{unique}-normal")
    assert code == 0 and exec_out(engine_api, unique, ["cat", "/etc/resolv.conf"]) == normal.decode()


@e2e
def test_user_defined_network_keeps_its_alias_for_the_other_containers(capsys, images: Images, unique: str,
                                                                       engine_api) -> None:
    net = f"{unique}-net"
    engine_api.expect("POST", "/networks/create", (201,), body={"Name": net, "Driver": "bridge"})
    try:
        common = ["--name", unique, "--network", net, "--network-alias", "web", "--settle", "1"]
        assert run_deploy(capsys, *common, "--image", images.httpd("1"))[0] == 0
        code, out, err = run_deploy(capsys, *common, "--image", images.httpd("2"))
        assert code == 0, err
        assert f"==> connect {unique}-cdtools-new to {net}" in out
        assert f"{unique} publishes no ports; on its networks: {net} " in out
        doc = inspect(engine_api, unique)
        assert list(doc["NetworkSettings"]["Networks"]) == [net]
        assert "web" in doc["NetworkSettings"]["Networks"][net]["Aliases"]
        # a neighbour on the network reaches the new one by its alias
        client = engine_api.expect("POST", f"/containers/create?name={unique}-client", (201,), body={
            "Image": images.httpd("1"), "Cmd": ["wget", "-q", "-O", "-", "http://web:8080/"],
            "HostConfig": {"NetworkMode": net}}).json()["Id"]
        engine_api.expect("POST", f"/containers/{client}/start", (204,))
        assert engine_api.expect("POST", f"/containers/{client}/wait").json()["StatusCode"] == 0
        logs = engine_api.expect("GET", f"/containers/{client}/logs?stdout=1").body
        assert b"page 2" in logs
    finally:
        for name in (f"{unique}-client", unique, f"{unique}-previous"):
            engine_api.request("DELETE", f"/containers/{name}?force=1")
        engine_api.request("DELETE", f"/networks/{net}")


NEEDS_A_ROUTE = ('["sh", "-c", "ip route | grep -q default || { echo no route, giving up >&2; exit 1; }; '
                 'exec httpd -f -p 8080 -h /www"]')


@e2e
def test_program_that_fails_without_its_network_never_stops_the_old_and_deploys_classic_when_asked(
        capsys, images: Images, unique: str, engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    common = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--probe", url]
    assert run_deploy(capsys, *common, "--image", images.httpd("1"))[0] == 0
    old_id = inspect(engine_api, unique)["Id"]

    routed = images.httpd("routed", "page routed", cmd=NEEDS_A_ROUTE)
    code, out, err = run_deploy(capsys, *common, "--image", routed)
    assert code == 6, err
    assert "before it had its network" in err and "--no-start-first" in err
    assert "no route, giving up" in out + err  # its own words, from the staged container's log
    old = inspect(engine_api, unique)
    assert old["Id"] == old_id and old["State"]["Running"] and old["State"]["FinishedAt"].startswith("0001")
    assert get(url) == "page 1"

    code, out, err = run_deploy(capsys, *common, "--image", routed, "--no-start-first")
    assert code == 0, err
    assert get(url) == "page routed"
    said = steps(out)
    assert said.index(f"start {unique}-cdtools-new") > [s.split(" ")[0] for s in said].index("stop")
    assert not any(s.startswith("connect ") for s in said)
    assert inspect(engine_api, f"{unique}-cdtools-new") is None


@e2e
def test_sigterm_while_the_new_one_starts_first_never_stops_the_old(images: Images, unique: str,
                                                                   engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    first = start_deploy(["--name", unique, "--image", images.httpd("1"), "-p", f"127.0.0.1:{port}:8080",
                          "--probe", url])
    assert first.wait(timeout=120) == 0
    old = inspect(engine_api, unique)

    # never listens: the deploy waits for it, the old one serving meanwhile
    proc = start_deploy(["--name", unique, "--image", images.httpd("2"), "-p", f"127.0.0.1:{port}:8080",
                         "--start-first-wait", "60", "--", "sleep", "300"])
    read_until(proc, "==> start ")
    assert get(url) == "page 1"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert "SIGTERM" in err and "was never stopped" in err
    now = inspect(engine_api, unique)
    assert now["Id"] == old["Id"] and now["State"]["StartedAt"] == old["State"]["StartedAt"]
    assert get(url) == "page 1"
    assert inspect(engine_api, f"{unique}-cdtools-new") is None
    assert inspect(engine_api, f"{unique}-cdtools-lock") is None


@e2e
def test_a_staged_container_left_by_a_killed_deploy_is_cleared(capsys, images: Images, unique: str,
                                                              engine_api) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    common = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--probe", url]
    assert run_deploy(capsys, *common, "--image", images.httpd("1"))[0] == 0
    # what a deploy killed by SIGKILL while its new container started first leaves: running, on none
    left = engine_api.expect("POST", f"/containers/create?name={unique}-cdtools-new", (201,), body={
        "Image": images.httpd("2"), "HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": str(port)}]}},
        "NetworkingConfig": {"EndpointsConfig": {"none": {}}}}).json()["Id"]
    engine_api.expect("POST", f"/containers/{left}/start", (204,))

    code, out, err = run_deploy(capsys, *common, "--image", images.httpd("3"))
    assert code == 0, err
    assert f"==> remove {unique}-cdtools-new left by an interrupted deploy" in out
    assert get(url) == "page 3"
    assert engine_api.request("GET", f"/containers/{left}/json").status == 404


@e2e
def test_a_writable_volume_is_never_used_by_two_programs_at_once(capsys, images: Images, unique: str,
                                                                 engine_api) -> None:
    port = free_port()
    volume = f"{unique}-data"
    common = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--probe", f"http://127.0.0.1:{port}/",
              "-v", f"{volume}:/data"]
    try:
        assert run_deploy(capsys, *common, "--image", images.httpd("1"))[0] == 0
        code, out, err = run_deploy(capsys, *common, "--image", images.httpd("2"))
        assert code == 0, err
        assert f"start first: no (-v {volume}:/data is writable and the old container has it too" in out
        new, old = inspect(engine_api, unique), inspect(engine_api, f"{unique}-previous")
        assert when(old["State"]["FinishedAt"]) < when(new["State"]["StartedAt"])
        assert get(f"http://127.0.0.1:{port}/") == "page 2"
    finally:
        for name in (unique, f"{unique}-previous"):
            engine_api.request("DELETE", f"/containers/{name}?force=1")
        engine_api.request("DELETE", f"/volumes/{volume}")


@e2e
def test_plan_says_when_and_why_the_classic_order_is_used(capsys, images: Images, unique: str) -> None:
    port = free_port()
    common = ["--name", unique, "-p", f"127.0.0.1:{port}:8080", "--probe", f"http://127.0.0.1:{port}/"]
    assert run_deploy(capsys, *common, "--image", images.httpd("1"))[0] == 0

    code, planned, err = run_deploy(capsys, *common, "--image", images.httpd("2"), main=plan.main)
    assert code == 0, err
    assert "on network none" in planned and "wait up to 10 s until it listens on 8080/tcp" in planned
    assert "start first: no" not in planned

    code, planned, err = run_deploy(capsys, *common, "--image", images.httpd("2"), "--no-start-first",
                                    main=plan.main)
    assert code == 0, err
    assert (f"start first: no (--no-start-first): {unique}-cdtools-new starts after {unique} has stopped"
            in planned)
    numbered = re.findall(r"^  \d+\. (\S+)", planned, re.M)
    assert numbered.index("stop") < numbered.index("start") and "connect" not in numbered


@e2e
@pytest.mark.parametrize("change, why", [
    ({"HostConfig": {"NetworkMode": "host"}}, "host network"),
    ({"HostConfig": {"NetworkMode": "none"}}, "it has no network"),
    ({"HostConfig": {"NetworkMode": "container:somebody"}}, "shares another container's network"),
    ({"HostConfig": {"Links": ["db:db"]}}, "legacy --link"),
    ({"MacAddress": "02:42:ac:11:00:99"}, "a fixed MacAddress"),
    ({"HostConfig": {"NetworkMode": "cdt-no-such-net"}}, "network cdt-no-such-net does not exist"),
    ({"HostConfig": {"Binds": ["data:/data"]}}, "-v data:/data is writable"),
    ({"HostConfig": {"Binds": ["/srv/app:/data:z,rw"]}}, "-v /srv/app:/data:z,rw is writable"),
    ({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "d", "Target": "/d"}]}}, "--mount target=/d"),
    ({"HostConfig": {"VolumesFrom": ["db"]}}, "--volumes-from db"),
    ({"HostConfig": {"Devices": [{"PathOnHost": "/dev/ttyS0", "PathInContainer": "/dev/ttyS0"}]}},
     "--device /dev/ttyS0"),
    ({"HostConfig": {"Binds": ["/srv/site:/www:ro"], "VolumesFrom": ["assets:ro"], "Mounts": [
        {"Type": "tmpfs", "Target": "/tmp"}, {"Type": "bind", "Source": "/etc/ssl", "Target": "/ssl", "ReadOnly": True}]},
      "Volumes": {"/cache": {}}}, ""),
    ({}, ""),
    ({"HostConfig": {"NetworkMode": "bridge"}}, ""),
    ({"HostConfig": {"PortBindings": {}}}, "nothing reaches it"),
    ({"HostConfig": {"PortBindings": {}}, "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["web"]}}}},
     ""),
])
def test_where_start_first_is_valid_on_the_real_engine(change: Any, why: str) -> None:
    # a served container (one published port) unless the case says otherwise
    body: Dict[str, Any] = {"Image": "busybox", **change}
    body["HostConfig"] = {"PortBindings": {"8080/tcp": [{"HostPort": "18080"}]}, **(change.get("HostConfig") or {})}
    staging, said = startfirst.plan(connect(current()), body)
    assert (staging is None) == bool(why)
    assert why in said


def test_a_network_that_is_not_a_local_bridge_keeps_the_classic_order(httpserver: Any, monkeypatch) -> None:
    httpserver.expect_request("/_ping").respond_with_data("OK", headers={"Api-Version": "1.41"})
    httpserver.expect_request("/v1.41/networks/apps").respond_with_json({"Name": "apps", "Driver": "overlay",
                                                                         "Scope": "swarm"})
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{httpserver.port}")
    staging, why = startfirst.plan(connect(current()), {"Image": "x", "HostConfig": {
        "NetworkMode": "apps", "PortBindings": {"8080/tcp": [{"HostPort": "80"}]}}})
    assert staging is None
    assert why == "network apps is overlay (swarm), not a local bridge network"


def test_networks_and_ports_a_staged_container_gets_at_the_swap() -> None:
    body = {"HostConfig": {"NetworkMode": "apps", "PortBindings": {
        "8080/tcp": [{"HostPort": "80"}], "53/udp": [{"HostPort": "53"}], "9000": [{"HostPort": "9000"}],
        "7000/tcp": None}},
        "NetworkingConfig": {"EndpointsConfig": {"backend": {"Aliases": ["api"]}, "apps": {"Aliases": ["web"]}}}}
    # NetworkMode's network first, each with its endpoint settings; TCP ports with a binding only
    assert startfirst.networks_of(body) == [("apps", {"Aliases": ["web"]}), ("backend", {"Aliases": ["api"]})]
    assert startfirst.published_tcp_ports(body) == [8080, 9000]
    assert startfirst.networks_of({}) == [("bridge", {})]
    staged = startfirst.staged_body(body)
    assert staged["NetworkingConfig"] == {"EndpointsConfig": {"none": {}}}
    assert staged["HostConfig"] == body["HostConfig"]  # ports and NetworkMode stay the user's


@pytest.mark.parametrize("ports, said", [
    ({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}]}, ["127.0.0.1:18080 -> 8080/tcp"]),
    ({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80"}, {"HostIp": "::", "HostPort": "80"}], "443/tcp": None},
     ["0.0.0.0:80 -> 80/tcp", "[::]:80 -> 80/tcp"]),
    ({"53/udp": [{"HostIp": "", "HostPort": "5353"}]}, ["0.0.0.0:5353 -> 53/udp"]),
    (None, []),
])
def test_where_a_container_answers_is_read_from_its_published_ports(ports: Any, said: List[str]) -> None:
    assert deploy.published({"NetworkSettings": {"Ports": ports}}) == said


def test_the_release_config_can_turn_start_first_off() -> None:
    argv = deploy.config_argv({"name": "web", "start_first": False, "start_first_wait": 30}, "app:1", "/")
    args = deploy.build_parser("t", "").parse_args(argv)
    opts = deploy.options_from_args(args)
    assert opts.start_first is False and opts.start_first_wait == 30
    assert deploy.options_from_args(deploy.build_parser("t", "").parse_args(
        deploy.config_argv({"name": "web"}, "app:1", "/"))).start_first is True
