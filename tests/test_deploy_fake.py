"""Deploy against a fake daemon, for what a real engine can't be made to do on demand.

The fake answers with the responses recorded from Engine 20.10 (tests/data/engine-1.41):
the old container's inspect is ``inspect-running``, create answers ``create-ok``,
and ``start`` of the new container answers 500 *after* the old one was stopped.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Any, Dict, Optional

import pytest

from cdtools import deploy
from tests.fakes import HandlerDaemon, json_response, recorded

OLD = "0" * 64
NEW = "1" * 64
LOCK = "2" * 64
IMAGE_OLD = "sha256:" + "a" * 64
IMAGE_NEW = "sha256:" + "b" * 64
# what 20.10 says when the host port is taken between create and start
PORT_TAKEN = ("driver failed programming external connectivity on endpoint web-cdtools-new: Error starting "
              "userland proxy: listen tcp4 0.0.0.0:8080: bind: address already in use")


class FakeDaemon(HandlerDaemon):
    """A daemon with one running container ``web``; records every call."""

    def __init__(self, *, old_restart_fails: bool = False) -> None:
        super().__init__()
        self.old_restart_fails = old_restart_fails
        base = json.loads(recorded("inspect-running").body)
        old = copy.deepcopy(base)
        old.update(Id=OLD, Name="/web", Image=IMAGE_OLD)
        old["Config"]["Image"] = "app:1"
        self.containers: Dict[str, Dict[str, Any]] = {"web": old}
        self.template = base

    def _find(self, ref: str) -> Optional[Dict[str, Any]]:
        for name, doc in self.containers.items():
            if ref in (name, doc["Id"]):
                return doc
        return None

    def handle(self, request: Any, path: str) -> Any:
        from werkzeug import Response

        parts = path.strip("/").split("/")
        if parts[0] == "images" and parts[-1] == "json":
            ref = "/".join(parts[1:-1])
            image_id = IMAGE_OLD if ref in ("app:1", IMAGE_OLD) else IMAGE_NEW
            return json_response({"Id": image_id, "RepoTags": [ref], "RepoDigests": [], "Config": {"Env": [], "Cmd": ["sh"]}})
        if path == "/containers/create":
            name = request.args["name"]
            if name in self.containers:
                body = recorded("create-conflict")
                return Response(body.body, status=body.status, content_type="application/json")
            spec = request.get_json()
            doc = copy.deepcopy(self.template)
            cid = LOCK if name.endswith("-cdtools-lock") else NEW
            doc.update(Id=cid, Name="/" + name, Image=IMAGE_NEW if cid == NEW else spec["Image"])
            doc["State"].update(Running=False, Status="created", Pid=0)
            doc["Config"].update(Labels=spec.get("Labels") or {}, Image=spec["Image"])
            self.containers[name] = doc
            return json_response({"Id": cid, "Warnings": []}, 201)
        if parts[0] != "containers":
            return json_response({"message": f"page not found: {path}"}, 404)
        doc = self._find(parts[1])
        if doc is None:
            return json_response({"message": f"No such container: {parts[1]}"}, 404)
        action = parts[2] if len(parts) > 2 else ""
        if request.method == "GET" and action == "json":
            return json_response(doc)
        if action == "stop":
            doc["State"].update(Running=False, Status="exited", ExitCode=0)
            return Response(status=204)
        if action == "start":
            if doc["Id"] == NEW:
                return json_response({"message": PORT_TAKEN}, 500)
            if self.old_restart_fails:
                return json_response({"message": "OCI runtime create failed: the disk is full"}, 500)
            doc["State"].update(Running=True, Status="running")
            return Response(status=204)
        if action == "logs":
            line = b"listening on :8080\n"
            return Response(b"\x01\x00\x00\x00" + len(line).to_bytes(4, "big") + line,
                            content_type="application/vnd.docker.raw-stream")
        if request.method == "DELETE":
            del self.containers[doc["Name"].lstrip("/")]
            return Response(status=204)
        return json_response({"message": f"unexpected {request.method} {path}"}, 500)


@pytest.fixture
def fake(httpserver: Any, monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    daemon = FakeDaemon()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(daemon)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{httpserver.port}")
    return daemon


def test_start_500_after_the_old_was_stopped_starts_the_old_again(fake: FakeDaemon, capsys) -> None:
    code = deploy.main(["--name", "web", "--image", "app:2", "-p", "8080:8080", "--settle", "1"])
    out, err = capsys.readouterr()
    assert code == 6
    assert "rolled back" in err and "address already in use" in err
    calls = fake.calls
    stop = calls.index(("POST", f"/containers/{OLD}/stop"))
    start_new = calls.index(("POST", f"/containers/{NEW}/start"))
    restart_old = calls.index(("POST", f"/containers/{OLD}/start"))
    assert stop < start_new < restart_old
    assert ("DELETE", f"/containers/{NEW}") in calls
    assert ("DELETE", f"/containers/{LOCK}") in calls  # the lock went too
    assert fake.containers["web"]["State"]["Running"]
    assert "listening on :8080" in out  # the failed container's last log lines


def test_old_that_cannot_be_started_again_is_a_deploy_error(httpserver: Any, monkeypatch, capsys) -> None:
    daemon = FakeDaemon(old_restart_fails=True)
    httpserver.expect_request(re.compile(".*")).respond_with_handler(daemon)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{httpserver.port}")
    code = deploy.main(["--name", "web", "--image", "app:2", "--settle", "1"])
    _, err = capsys.readouterr()
    assert code == 7
    assert "could not be restored" in err and "disk is full" in err
    assert ("DELETE", f"/containers/{LOCK}") in daemon.calls


def test_start_is_sent_with_no_body(fake: FakeDaemon, httpserver: Any) -> None:
    deploy.main(["--name", "web", "--image", "app:2", "--settle", "1"])
    starts = [entry for entry, _ in httpserver.log if entry.path.endswith("/start")]
    assert starts and all(not entry.get_data() for entry in starts)
