"""Service deploys against a fake manager, for what a real swarm can't be made to do on demand.

The fake answers with the swarm answers recorded from Engine 20.10 (tests/data/swarm-1.41):
the first update of the service is refused with the recorded "update out of
sequence" (someone else updated it between cdtools' GET and POST), which is
what cdtools must read again and resend.  The tables below cover the
translation of a container spec into a service spec and the docker CLI's way of
counting converged tasks, on the recorded task lists.
"""
from __future__ import annotations

import argparse
import base64
import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from cdtools import deploy, service, spec as spec_mod
from cdtools.errors import UsageError
from tests.fakes import HandlerDaemon, json_response

DATA = Path(__file__).parent / "data" / "swarm-1.41"
DIGEST = "sha256:" + "d" * 64


def recorded(name: str) -> Any:
    return json.loads((DATA / name).read_text())


class FakeManager(HandlerDaemon):
    """A single-node swarm with the recorded service ``cdt-rec``; the first update is out of sequence."""

    def __init__(self) -> None:
        self.service = recorded("service-inspect.json")
        super().__init__()
        self.updates: List[Tuple[str, Dict[str, str], Any]] = []
        self.configs: Dict[str, Any] = {}
        self.raced = False

    def _tasks(self) -> List[Any]:
        spec = self.service["Spec"]
        template = recorded("tasks.json")[0]
        replicas = spec["Mode"]["Replicated"]["Replicas"]
        out = []
        for slot in range(1, replicas + 1):
            task = copy.deepcopy(template)
            task.update(ID=f"task{slot}", Slot=slot, NodeID="node1", DesiredState="running")
            task["Spec"] = copy.deepcopy(spec["TaskTemplate"])
            task["Status"]["State"] = "running"
            out.append(task)
        return out

    def handle(self, request: Any, path: str) -> Any:
        from werkzeug import Response

        if path == "/info":
            return json_response(recorded("info-swarm.json"))
        if path == "/nodes":
            return json_response([{"ID": "node1", "Status": {"State": "ready"}}])
        if path.startswith("/distribution/"):
            return json_response({"Descriptor": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                      "digest": DIGEST, "size": 527}})
        if path == "/configs/create":
            doc = request.get_json()
            if doc["Name"] in self.configs:
                return json_response({"message": f"rpc error: code = AlreadyExists desc = config {doc['Name']} already exists"},
                          409)
            self.configs[doc["Name"]] = {"ID": "cfg1", "Spec": doc, "CreatedAt": "2026-12-03T16:28:53Z"}
            return json_response({"ID": "cfg1"}, 201)
        if path.startswith("/configs/"):
            key = path.split("/")[2]
            found = [k for k, v in self.configs.items() if key in (k, v["ID"])]
            if not found:
                return json_response({"message": f"config {key} not found"}, 404)
            if request.method == "DELETE":
                del self.configs[found[0]]
                return Response(status=204)
            return json_response(self.configs[found[0]])
        if path == "/tasks":
            return json_response(self._tasks())
        if path in ("/services/cdt-rec", f"/services/{self.service['ID']}") and request.method == "GET":
            return json_response(self.service)
        if path == f"/services/{self.service['ID']}/update":
            self.updates.append((request.args["version"], dict(request.headers), request.get_json()))
            if not self.raced:
                # someone else's update landed between cdtools' GET and this POST
                self.raced = True
                self.service["Version"]["Index"] += 3
                body = (DATA / "update-out-of-sequence.json").read_bytes()
                return Response(body, status=500, content_type="application/json")
            if int(request.args["version"]) != self.service["Version"]["Index"]:
                return Response((DATA / "update-out-of-sequence.json").read_bytes(), status=500,
                                content_type="application/json")
            self.service["PreviousSpec"] = self.service["Spec"]
            self.service["Spec"] = request.get_json()
            self.service["Version"]["Index"] += 1
            self.service["UpdateStatus"] = {"State": "completed", "StartedAt": "2026-12-03T16:30:00Z",
                                            "Message": "update completed"}
            return json_response({"Warnings": None})
        return json_response({"message": f"unexpected {request.method} {path}"}, 500)


@pytest.fixture
def manager(httpserver: Any, monkeypatch: pytest.MonkeyPatch) -> FakeManager:
    fake = FakeManager()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(fake)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{httpserver.port}")
    monkeypatch.setenv("CDTOOLS_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("CDTOOLS_REGISTRY_PASSWORD", "not-in-any-output")
    return fake


def test_update_out_of_sequence_is_read_again_and_resent(manager: FakeManager, capsys) -> None:
    code = deploy.main(["--target", "service:cdt-rec", "--image", "registry.example:5000/team/app:2",
                        "--monitor", "0.1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(manager.updates) == 2
    (first_version, first_headers, _), (second_version, headers, body) = manager.updates
    assert first_version == "18" and second_version == "21"  # the fresh GET's Version.Index
    assert body["TaskTemplate"]["ContainerSpec"]["Image"] == f"registry.example:5000/team/app:2@{DIGEST}"
    assert body["TaskTemplate"]["ContainerSpec"]["Args"] == ["sleep", "1000"]  # the rest of the spec kept
    assert body["Labels"]["x"] == "1"
    auth = json.loads(base64.urlsafe_b64decode(headers["X-Registry-Auth"] + "=="))
    assert auth["username"] == "ci" and auth["serveraddress"] == "registry.example:5000"
    assert "out of sequence" in out and "not-in-any-output" not in out + err
    # the GET that came after the refused POST, then the POST that worked
    calls = manager.calls
    posts = [i for i, c in enumerate(calls) if c[1].endswith("/update")]
    assert ("GET", f"/services/{manager.service['ID']}") in calls[posts[0]:posts[1]]
    assert not manager.configs  # the lock went


def test_an_image_id_is_refused_for_a_service(manager: FakeManager, capsys) -> None:
    code = deploy.main(["--target", "service:cdt-rec", "--image", "sha256:" + "a" * 64])
    _, err = capsys.readouterr()
    assert code == 2 and "pull their image" in err
    assert not manager.updates


def test_lock_held_by_another_deploy_names_it(manager: FakeManager, capsys) -> None:
    manager.configs["cdt-rec-cdtools-lock"] = {
        "ID": "other", "CreatedAt": "2026-12-03T16:00:00Z",
        "Spec": {"Name": "cdt-rec-cdtools-lock", "Labels": {"cdtools.lock.holder": "https://ci/job/web/41/"}}}
    code = deploy.main(["--target", "service:cdt-rec", "--image", f"registry.example:5000/team/app@{DIGEST}"])
    _, err = capsys.readouterr()
    assert code == 8 and "https://ci/job/web/41/" in err
    assert not manager.updates


# -- counting tasks as the docker CLI does, on recorded task lists ------------------------------


def test_rolled_back_tasks_count_the_running_task_of_each_slot() -> None:
    svc = recorded("service-rolled-back.json")
    tasks = recorded("tasks-rolled-back.json")
    nodes = {n["ID"] for n in recorded("nodes.json")}
    assert service.count_running(svc["Spec"], tasks, nodes, None) == (2, 2)
    # on a node that is down nothing counts
    assert service.count_running(svc["Spec"], tasks, set(), None) == (0, 2)
    failed = [t for t in tasks if t["Status"]["State"] == "failed"]
    assert len(failed) == 2
    for task in failed:
        assert service.describe_task(task, "cdt-rec") == (
            f"cdt-rec.{task['Slot']} ({task['ID'][:12]}) failed: task: non-zero exit (3)")


def test_start_first_slot_with_two_tasks_counts_once_and_at_the_image() -> None:
    spec = {"Mode": {"Replicated": {"Replicas": 1}}}

    def task(tid: str, image: str, desired: str, state: str) -> Dict[str, Any]:
        return {"ID": tid, "Slot": 1, "NodeID": "n", "DesiredState": desired, "Status": {"State": state},
                "Spec": {"ContainerSpec": {"Image": image}}}

    old, new = task("a", "app@1", "running", "running"), task("b", "app@2", "running", "starting")
    assert service.count_running(spec, [old, new], {"n"}, "app@2") == (0, 1)  # the new one is not up yet
    new["Status"]["State"] = "running"
    old["DesiredState"] = "shutdown"
    assert service.count_running(spec, [old, new], {"n"}, "app@2") == (1, 1)
    assert service.count_running(spec, [old, new], {"n"}, "app@1") == (0, 1)


# -- a container spec as a service spec ---------------------------------------------------------


def _spec(body: Dict[str, Any]) -> spec_mod.Spec:
    return spec_mod.Spec(body=spec_mod.normalise_create(body, "test"))


def _translate(body: Dict[str, Any], **kw: Any) -> Dict[str, Any]:
    return service.service_spec(_spec(body), "web", "app@sha256:x", replicas=kw.get("replicas"),
                                publish_mode=kw.get("mode", "ingress"), update=service.CREATE_DEFAULTS,
                                labels={"cdtools.name": "web"})


def test_container_fields_land_in_the_service_spec() -> None:
    out = _translate({
        "Env": ["A=1"], "Cmd": ["serve"], "Entrypoint": ["/app"], "User": "1000", "WorkingDir": "/srv",
        "StopTimeout": 7, "Labels": {"team": "web"},
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "80"}], "9090/udp": [{}]},
                       "RestartPolicy": {"Name": "always"}, "Binds": ["/data:/data:ro", "cache:/cache"],
                       "ExtraHosts": ["db:10.0.0.5"], "Init": True, "Memory": 268435456,
                       "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}}},
    }, replicas=3, mode="host")
    container = out["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "app@sha256:x"
    assert container["Env"] == ["A=1"] and container["Args"] == ["serve"] and container["Command"] == ["/app"]
    assert container["User"] == "1000" and container["Dir"] == "/srv" and container["Labels"] == {"team": "web"}
    assert container["StopGracePeriod"] == 7_000_000_000
    assert container["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 1000000000}
    assert container["Mounts"] == [{"Type": "bind", "Source": "/data", "Target": "/data", "ReadOnly": True},
                                   {"Type": "volume", "Source": "cache", "Target": "/cache"}]
    assert container["Hosts"] == ["10.0.0.5 db"] and container["Init"] is True
    assert out["TaskTemplate"]["RestartPolicy"] == {"Condition": "any"}
    assert out["TaskTemplate"]["Resources"] == {"Limits": {"MemoryBytes": 268435456}}
    assert out["TaskTemplate"]["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "1m"}}
    assert out["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 80, "PublishMode": "host"},
        {"Protocol": "udp", "TargetPort": 9090, "PublishMode": "host"}]
    assert out["Mode"] == {"Replicated": {"Replicas": 3}}
    assert out["UpdateConfig"]["Order"] == "start-first" and out["UpdateConfig"]["FailureAction"] == "rollback"
    assert "FailureAction" not in out["RollbackConfig"]


@pytest.mark.parametrize("body, named", [
    ({"HostConfig": {"Privileged": True}}, "HostConfig.Privileged"),
    ({"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "80"}]}}}, "HostIp 127.0.0.1"),
    ({"HostConfig": {"NetworkMode": "host"}}, "HostConfig.NetworkMode 'host'"),
    ({"MacAddress": "02:42:ac:11:00:02"}, "MacAddress"),
    ({"HostConfig": {"PidMode": "host"}}, "HostConfig.PidMode"),
])
def test_what_a_service_cannot_hold_is_refused_by_name(body: Dict[str, Any], named: str) -> None:
    with pytest.raises(UsageError) as caught:
        _translate(body)
    assert named in str(caught.value) and "service spec" in str(caught.value)


def test_an_update_with_only_an_image_changes_only_the_image_and_the_settings() -> None:
    current = recorded("service-inspect.json")["Spec"]
    args = argparse.Namespace(inherit=False)
    opts = service.ServiceOptions(name="cdt-rec", image="x", spec_args=args,
                                  update=service.UpdateSettings(order="start-first", monitor=2))
    out = service.updated_spec(current, "app:2@sha256:y", opts, None, {"cdtools.image": "app:2@sha256:y"})
    assert out["TaskTemplate"]["ContainerSpec"] == {**current["TaskTemplate"]["ContainerSpec"],
                                                    "Image": "app:2@sha256:y"}
    assert out["UpdateConfig"] == {"Order": "start-first", "Monitor": 2_000_000_000}
    assert out["Labels"] == {"x": "1", "cdtools.image": "app:2@sha256:y"}
    assert out["Mode"] == current["Mode"] and out["EndpointSpec"] == current["EndpointSpec"]
    # unchanged image and settings: nothing to roll out, though the labels differ
    again = service.updated_spec(out, "app:2@sha256:y", opts, None, {"cdtools.image": "app:2@sha256:y",
                                                                      "cdtools.deployed-at": "later"})
    assert service._comparable(again) == service._comparable(out)


@pytest.mark.parametrize("text, name", [("container", None), ("service:web", "web")])
def test_target(text: str, name: Any) -> None:
    assert service.parse_target(text) == name


@pytest.mark.parametrize("text", ["service", "service:", "stack:web", "containers"])
def test_bad_target(text: str) -> None:
    with pytest.raises(UsageError, match="--target"):
        service.parse_target(text)


def test_not_a_manager_says_what_to_do() -> None:
    class Worker:
        endpoint = "tcp://10.0.0.9:2375"

        def info(self) -> Any:
            return {"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}

    with pytest.raises(UsageError, match="is a worker: --target service needs a swarm manager"):
        service.require_manager(Worker())  # type: ignore[arg-type]


@pytest.mark.parametrize("argv, message", [
    (["--name", "web", "--image", "a:1", "--replicas", "2"], "--replicas is for --target service:NAME"),
    (["--name", "web", "--image", "a:1", "--max-parallel", "2"], "--max-parallel is for --hosts"),
    (["--target", "service:web", "--image", "a:1", "--hosts", "h1,h2"], "--hosts is for containers"),
    (["--target", "service:web", "--name", "api", "--image", "a:1"], "name different services"),
    (["--image", "a:1"], "--name is required"),
    (["--target", "service:web", "--image", "a:1", "--probe", "http://127.0.0.1:80/"], "--probe is for containers"),
    (["--name", "web", "--image", "a:1", "--hosts", "tcp://a:2375", "-H", "tcp://b:2375"], "give one"),
])
def test_flags_that_do_not_go_together(argv: List[str], message: str, capsys) -> None:
    assert deploy.main(argv) == 2
    assert message in capsys.readouterr().err
