"""The Docker Engine API: one explicit method per endpoint cdtools uses.

The API version is negotiated once, on the first call: the ``Api-Version``
header of ``/_ping``, capped at :data:`MAX_API`, refused below :data:`MIN_API`;
``DOCKER_API_VERSION`` pins it.  Every later request is prefixed ``/vX.Y``.

Streaming endpoints return iterators of progress records that raise
:class:`~cdtools.errors.StreamError` on an ``error``/``errorDetail`` record.
"""
from __future__ import annotations

import base64
import json
import shutil
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode

from . import jsonstream
from .errors import APIError, CdtoolsError, TransportError, UsageError, api_error
from .settings import Settings
from .transport import Body, Endpoint, Response, Transport, error_message, parse_host

#: the oldest API whose behaviour cdtools relies on (start with no body, HostConfig on create)
MIN_API = "1.24"
#: the newest API cdtools knows; a newer daemon is spoken to at this version
MAX_API = "1.47"

Json = Dict[str, Any]


def _vtuple(version: str) -> Tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        raise UsageError(f"bad API version {version!r} (expected like 1.41)") from None


def _q(name: str) -> str:
    """A name or id as a path segment (image names keep their slashes and colons)."""
    return quote(name, safe="/:@")


class Engine:
    """A client for one daemon."""

    def __init__(self, transport: Transport, *, api_version: Optional[str] = None) -> None:
        self.transport = transport
        self._pinned = api_version
        self._version: Optional[str] = None
        #: Podman's version from /_ping's Libpod-Api-Version header, '' for Docker, None until asked
        self._podman: Optional[str] = None
        if api_version is not None:
            try:
                _vtuple(api_version)
            except UsageError:
                raise UsageError(f"DOCKER_API_VERSION {api_version!r}: expected a version like 1.41") from None

    @property
    def endpoint(self) -> Endpoint:
        return self.transport.endpoint

    # -- plumbing -----------------------------------------------------------

    @property
    def api_version(self) -> str:
        """The negotiated API version (negotiates on first use)."""
        if self._version is None:
            self._version = self._pinned or self._negotiate()
        return self._version

    def api_version_at_least(self, version: str) -> bool:
        """Whether the negotiated version is ``version`` or newer (the one place versions compare)."""
        return _vtuple(self.api_version) >= _vtuple(version)

    @property
    def podman_version(self) -> str:
        """Podman's own version when the daemon is Podman's Docker-compatible service, else ''.

        Read from /_ping's ``Libpod-Api-Version`` header during negotiation (asked for
        here when DOCKER_API_VERSION pinned the version).  Only for working around a
        documented Podman difference.
        """
        if self._podman is None:
            resp = self.transport.request("GET", "/_ping")
            resp.read()
            self._podman = resp.header("Libpod-Api-Version") or ""
        return self._podman

    def podman_before(self, version: str) -> bool:
        """Whether the daemon is Podman older than ``version`` (e.g. "4.7")."""
        own = self.podman_version
        if not own:
            return False
        parts = []
        for piece in own.split("-", 1)[0].split("."):
            if not piece.isdigit():
                break
            parts.append(int(piece))
        return tuple(parts) < _vtuple(version)

    def _negotiate(self) -> str:
        resp = self.transport.request("GET", "/_ping")
        advertised = resp.header("Api-Version")
        self._podman = resp.header("Libpod-Api-Version") or ""
        body = resp.read()
        if resp.status == 400 and b"HTTP request to an HTTPS server" in body:
            raise TransportError(f"{self.endpoint} speaks TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH "
                                 f"(ca.pem, cert.pem, key.pem), or use the daemon's plain-tcp port")
        if resp.status >= 400:
            raise api_error(resp.status, error_message(body), method="GET", path="/_ping")
        if not advertised:
            # daemons before API 1.25 send no header; their /version says
            advertised = self._version_document_api()
        try:
            version = _vtuple(advertised)
        except UsageError:
            # the daemon's fault, not the user's: not a usage error
            raise CdtoolsError(f"the daemon at {self.endpoint} advertises API version {advertised!r}, "
                               f"which is not a version number") from None
        if version < _vtuple(MIN_API):
            raise CdtoolsError(
                f"the daemon at {self.endpoint} speaks Engine API {advertised}; cdtools needs {MIN_API} or newer"
            )
        return advertised if version < _vtuple(MAX_API) else MAX_API

    def _version_document_api(self) -> str:
        """ApiVersion from the unversioned /version; MIN_API when it says nothing (as the docker CLI assumes 1.24)."""
        resp = self.transport.request("GET", "/version")
        body = resp.read()
        if resp.status >= 400:
            raise api_error(resp.status, error_message(body), method="GET", path="/version")
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise CdtoolsError(f"{self.endpoint} answered /_ping but its /version is not JSON: "
                               f"it does not look like a Docker daemon")
        return str(doc.get("ApiVersion") or MIN_API)

    def _send(self, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None,
              headers: Optional[Mapping[str, str]] = None, body: Body = None,
              json_body: Any = None) -> Response:
        url = f"/v{self.api_version}{path}"
        if query:
            clean = {k: v for k, v in query.items() if v is not None}
            if clean:
                url += "?" + urlencode(clean)
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        resp = self.transport.request(method, url, headers=hdrs, body=body)
        if resp.status >= 400:
            raise api_error(resp.status, error_message(resp.read()), method=method, path=path)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        raw = self._send(method, path, **kw).read()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CdtoolsError(f"the daemon sent non-JSON for {method} {path}: {raw[:80]!r}") from None

    def _object(self, method: str, path: str, **kw: Any) -> Json:
        """A JSON object answer; anything else is the daemon's fault, said in one line."""
        doc = self._json(method, path, **kw)
        if not isinstance(doc, dict):
            raise CdtoolsError(f"the daemon answered {method} {path} with {type(doc).__name__}, not an object")
        return doc

    def _list(self, method: str, path: str, **kw: Any) -> List[Json]:
        """A JSON array answer (null is empty); anything else is the daemon's fault."""
        doc = self._json(method, path, **kw)
        if doc is None:
            return []
        if not isinstance(doc, list):
            raise CdtoolsError(f"the daemon answered {method} {path} with {type(doc).__name__}, not a list")
        return doc

    def _empty(self, method: str, path: str, **kw: Any) -> int:
        resp = self._send(method, path, **kw)
        resp.read()
        return resp.status

    def _stream(self, method: str, path: str, **kw: Any) -> Iterator[Json]:
        resp = self._send(method, path, **kw)
        return jsonstream.records(resp.iter_chunks())

    # -- system -------------------------------------------------------------

    def ping(self) -> str:
        """The daemon's API version (and proof it answers)."""
        return self.api_version

    def version(self) -> Json:
        return self._object("GET", "/version")

    # -- images -------------------------------------------------------------

    def build(self, context: Iterable[bytes], *, tags: Iterable[str] = (), dockerfile: Optional[str] = None,
              buildargs: Optional[Mapping[str, str]] = None, labels: Optional[Mapping[str, str]] = None,
              target: Optional[str] = None, pull: bool = False, nocache: bool = False, gzip: bool = False,
              registry_config: Optional[str] = None) -> Iterator[Json]:
        """POST /build with the classic builder; yields progress records."""
        query: List[Tuple[str, str]] = [("t", t) for t in tags]
        if dockerfile:
            query.append(("dockerfile", dockerfile))
        if buildargs:
            query.append(("buildargs", json.dumps(dict(buildargs))))
        if labels:
            query.append(("labels", json.dumps(dict(labels))))
        if target:
            query.append(("target", target))
        if pull:
            query.append(("pull", "1"))
        if nocache:
            query.append(("nocache", "1"))
        query += [("rm", "1"), ("forcerm", "1"), ("version", "1")]  # version=1: the classic builder
        headers = {"Content-Type": "application/x-tar"}
        if gzip:
            headers["Content-Encoding"] = "gzip"  # informative; the daemon sniffs the compression
        if registry_config:
            headers["X-Registry-Config"] = registry_config
        url = f"/build?{urlencode(query)}"
        return self._stream("POST", url, headers=headers, body=context)

    def tag(self, image: str, repo: str, tag: str) -> None:
        self._empty("POST", f"/images/{_q(image)}/tag", query={"repo": repo, "tag": tag})

    def push(self, repository: str, tag: str, auth_header: str) -> Iterator[Json]:
        return self._stream("POST", f"/images/{_q(repository)}/push", query={"tag": tag},
                            headers={"X-Registry-Auth": auth_header})

    def pull(self, repository: str, tag: str, auth_header: str) -> Iterator[Json]:
        """POST /images/create?fromImage=…; ``tag`` may be a digest."""
        return self._stream("POST", "/images/create", query={"fromImage": repository, "tag": tag},
                            headers={"X-Registry-Auth": auth_header})

    def inspect_image(self, ref: str) -> Json:
        return self._object("GET", f"/images/{_q(ref)}/json")

    def images(self, *, reference: Optional[str] = None) -> List[Json]:
        filters = {"reference": [reference]} if reference else None
        return self._json("GET", "/images/json", query={"filters": json.dumps(filters) if filters else None}) or []

    def remove_image(self, ref: str, *, force: bool = False) -> List[Json]:
        return self._json("DELETE", f"/images/{_q(ref)}", query={"force": "1" if force else None}) or []

    # -- containers ---------------------------------------------------------

    def create_container(self, name: Optional[str], body: Mapping[str, Any]) -> Json:
        """POST /containers/create; returns {Id, Warnings}."""
        return self._object("POST", "/containers/create", query={"name": name}, json_body=dict(body))

    def start(self, container: str) -> bool:
        """Start with no body (a body is refused since API 1.24); False if it was running."""
        return self._empty("POST", f"/containers/{_q(container)}/start") != 304

    def stop(self, container: str, *, timeout: Optional[int] = None) -> bool:
        """False if it was not running."""
        return self._empty("POST", f"/containers/{_q(container)}/stop", query={"t": timeout}) != 304

    def kill(self, container: str, *, signal: str = "KILL") -> None:
        self._empty("POST", f"/containers/{_q(container)}/kill", query={"signal": signal})

    def rename(self, container: str, new_name: str) -> None:
        self._empty("POST", f"/containers/{_q(container)}/rename", query={"name": new_name})

    def remove_container(self, container: str, *, force: bool = False, volumes: bool = False) -> None:
        self._empty("DELETE", f"/containers/{_q(container)}",
                    query={"force": "1" if force else None, "v": "1" if volumes else None})

    def inspect_container(self, container: str) -> Json:
        return self._object("GET", f"/containers/{_q(container)}/json")

    def find_container(self, name: str) -> Optional[Json]:
        """Inspect by exact name, None when there is none."""
        try:
            doc = self.inspect_container(name)
        except APIError as exc:
            if exc.status == 404:
                return None
            raise
        # the daemon also matches id prefixes; only an exact name counts
        if doc.get("Name", "").lstrip("/") != name and not doc.get("Id", "").startswith(name):
            return None
        return doc

    def containers(self, *, all: bool = True, filters: Optional[Mapping[str, List[str]]] = None) -> List[Json]:
        return self._json("GET", "/containers/json",
                          query={"all": "1" if all else None,
                                 "filters": json.dumps(dict(filters)) if filters else None}) or []

    def wait(self, container: str, *, condition: str = "not-running") -> int:
        doc = self._json("POST", f"/containers/{_q(container)}/wait", query={"condition": condition})
        return int((doc or {}).get("StatusCode", -1))

    def update_container(self, container: str, body: Mapping[str, Any]) -> Json:
        """POST /containers/{id}/update: resources and RestartPolicy of an existing container."""
        return self._json("POST", f"/containers/{_q(container)}/update", json_body=dict(body)) or {}

    def run_healthcheck(self, container: str) -> Json:
        """Podman only: run the container's HEALTHCHECK now; returns {Status, FailingStreak, Log}.

        Podman runs health checks from systemd timers: with no systemd (a CI container)
        they never run unless asked through its own ``/libpod/containers/{id}/healthcheck``.
        """
        return self._json("GET", f"/libpod/containers/{_q(container)}/healthcheck") or {}

    def logs(self, container: str, *, tail: int = 50) -> str:
        """The last ``tail`` lines of stdout and stderr, interleaved, as text."""
        resp = self._send("GET", f"/containers/{_q(container)}/logs",
                          query={"stdout": "1", "stderr": "1", "tail": str(tail)})
        return demux(resp.read()).decode("utf-8", "replace")

    # -- swarm: the node, services, tasks ------------------------------------------

    def info(self) -> Json:
        """GET /info; its ``Swarm`` says whether this daemon is a swarm manager."""
        return self._object("GET", "/info")

    def nodes(self) -> List[Json]:
        """GET /nodes (a manager only; others answer 503)."""
        return self._list("GET", "/nodes")

    def distribution(self, ref: str, auth_header: str) -> Json:
        """GET /distribution/{name}/json: the registry's descriptor of ``ref`` (its digest), asked by the daemon.

        The daemon does not resolve a service's tag to a digest for API >= 1.30; the
        docker CLI asks this endpoint and pins ``name:tag@digest``, and so does cdtools.
        """
        return self._object("GET", f"/distribution/{_q(ref)}/json", headers={"X-Registry-Auth": auth_header})

    def services(self, *, filters: Optional[Mapping[str, List[str]]] = None) -> List[Json]:
        return self._list("GET", "/services", query={"filters": json.dumps(dict(filters)) if filters else None})

    def inspect_service(self, service: str) -> Json:
        """GET /services/{id}: Spec, Version.Index (the update's ``version``), UpdateStatus, PreviousSpec."""
        return self._object("GET", f"/services/{_q(service)}")

    def create_service(self, spec: Mapping[str, Any], auth_header: str) -> Json:
        """POST /services/create; returns {ID, Warnings}. The header lets the nodes pull."""
        return self._object("POST", "/services/create", headers={"X-Registry-Auth": auth_header},
                            json_body=dict(spec))

    def update_service(self, service: str, version: int, spec: Mapping[str, Any], auth_header: str, *,
                       rollback: bool = False) -> Json:
        """POST /services/{id}/update?version=N with the complete spec; returns {Warnings}.

        ``rollback`` asks the manager to go back to PreviousSpec (``spec`` is then ignored).
        A stale ``version`` is refused ("update out of sequence"): GET again and resend.
        """
        return self._object("POST", f"/services/{_q(service)}/update",
                            query={"version": str(version), "rollback": "previous" if rollback else None},
                            headers={"X-Registry-Auth": auth_header}, json_body=dict(spec))

    def remove_service(self, service: str) -> None:
        self._empty("DELETE", f"/services/{_q(service)}")

    def tasks(self, *, filters: Optional[Mapping[str, List[str]]] = None) -> List[Json]:
        """GET /tasks; filters as the API takes them (``service``, ``desired-state``, ``_up-to-date`` …)."""
        return self._list("GET", "/tasks", query={"filters": json.dumps(dict(filters)) if filters else None})

    def task_logs(self, task: str, *, tail: int = 30) -> str:
        """The last ``tail`` log lines of a task's container, as text (the manager gathers them)."""
        resp = self._send("GET", f"/tasks/{_q(task)}/logs",
                          query={"stdout": "1", "stderr": "1", "tail": str(tail)})
        return demux(resp.read()).decode("utf-8", "replace")

    def create_config(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        """POST /configs/create; the id. A taken name is 409 for every caller but one (a lock)."""
        body = {"Name": name, "Labels": dict(labels), "Data": base64.b64encode(data).decode("ascii")}
        return str(self._object("POST", "/configs/create", json_body=body).get("ID", ""))

    def inspect_config(self, config: str) -> Json:
        return self._object("GET", f"/configs/{_q(config)}")

    def remove_config(self, config: str) -> None:
        self._empty("DELETE", f"/configs/{_q(config)}")

    # -- networks -----------------------------------------------------------

    def connect_network(self, network: str, container: str, endpoint: Optional[Mapping[str, Any]] = None) -> None:
        """POST /networks/{id}/connect (a create request takes one network before API 1.44)."""
        body: Json = {"Container": container}
        if endpoint:
            body["EndpointConfig"] = dict(endpoint)
        self._empty("POST", f"/networks/{_q(network)}/connect", json_body=body)

    def disconnect_network(self, network: str, container: str, *, force: bool = False) -> None:
        """POST /networks/{id}/disconnect."""
        self._empty("POST", f"/networks/{_q(network)}/disconnect", json_body={"Container": container, "Force": force})

    def inspect_network(self, network: str) -> Json:
        """GET /networks/{id}: Driver, Scope, Internal …"""
        return self._object("GET", f"/networks/{_q(network)}")


def demux(data: bytes) -> bytes:
    """Join a multiplexed log stream's frames (8-byte headers: stream, 0,0,0, size).

    A container with a TTY sends raw bytes; those are returned unchanged.
    """
    out = []
    pos = 0
    while pos + 8 <= len(data):
        kind = data[pos]
        if kind not in (0, 1, 2) or data[pos + 1:pos + 4] != b"\0\0\0":
            return data  # not multiplexed
        size = int.from_bytes(data[pos + 4:pos + 8], "big")
        out.append(data[pos + 8:pos + 8 + size])
        pos += 8 + size
    if pos != len(data):
        return data
    return b"".join(out)


def connect(settings: Settings, *, host: Optional[str] = None, timeout: Optional[float] = None) -> Engine:
    """An Engine for ``host`` (a -H flag) or DOCKER_HOST, with the TLS settings."""
    endpoint = parse_host(host or settings.docker_host, tls=settings.tls, tls_verify=settings.tls_verify,
                          cert_path=settings.cert_path)
    ssh = shutil.which("ssh", path=settings.path) or "ssh"
    transport = Transport(endpoint, ssh_path=ssh, timeout=timeout)
    return Engine(transport, api_version=settings.api_version)
