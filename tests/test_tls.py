"""cdtools over TLS, against a real second dockerd that only speaks TLS (scripts/tls-daemon).

The daemon gets its own certificates (made with openssl by the script), data
root, exec root, containerd and bridge, so it never disturbs the machine's own
daemon; it is stopped by pid and removed at the end of the session.  It starts
with no images: the tests that need ``busybox:latest`` build it there, over
TLS, from the machine's busybox-static binary.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator

import pytest

import fakes
from cdtools import engine as engine_mod, settings as settings_mod, tag
from cdtools.errors import APIError, TransportError
from conftest import exported, unavailable

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "tls-daemon"
BUSYBOX = "/bin/busybox"


@dataclass(frozen=True)
class TLSDaemon:
    dir: Path
    host: str  # tcp://127.0.0.1:PORT
    port: int

    def certs(self, which: str = "client") -> str:
        return str(self.dir / "certs" / which)

    def env(self, which: str = "client", host: str = "") -> Dict[str, str]:
        return {"DOCKER_HOST": host or self.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": self.certs(which)}


def _unavailable(reason: str) -> None:
    unavailable(f"TLS daemon unavailable: {reason}")


@pytest.fixture(scope="session")
def tls_daemon() -> Iterator[TLSDaemon]:
    if os.geteuid() != 0:
        _unavailable("needs root to start dockerd")
    for tool in ("openssl", "ip"):
        if shutil.which(tool) is None:
            _unavailable(f"no {tool}")
    if shutil.which("dockerd", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        _unavailable("no dockerd")
    # short: containerd's socket lives below it, and unix socket paths are limited
    d = Path(tempfile.mkdtemp(prefix="cdtls-", dir="/tmp"))
    d.rmdir()
    started = subprocess.run([sys.executable, str(SCRIPT), "start", str(d)], capture_output=True, text=True,
                             timeout=180)
    if started.returncode != 0:
        pytest.fail(f"scripts/tls-daemon start failed: {started.stderr.strip()}", pytrace=False)
    env = exported(started.stdout)
    host = env["DOCKER_HOST"]
    try:
        yield TLSDaemon(dir=d, host=host, port=int(host.rsplit(":", 1)[1]))
    finally:
        subprocess.run([sys.executable, str(SCRIPT), "stop", str(d)], timeout=120)


def connect(env: Dict[str, str]) -> engine_mod.Engine:
    return engine_mod.connect(settings_mod.from_env(env))


def busybox_context() -> bytes:
    """FROM scratch + the static busybox, as scripts/local-stack makes the base image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = b'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(BUSYBOX, arcname="busybox")
    return buf.getvalue()


@pytest.fixture(scope="session")
def tls_busybox(tls_daemon: TLSDaemon) -> str:
    """``busybox:latest`` on the TLS daemon, built over TLS; its image id."""
    if not os.path.exists(BUSYBOX):
        _unavailable(f"no {BUSYBOX} (Debian busybox-static)")
    eng = connect(tls_daemon.env())
    image_id = ""
    for record in eng.build([busybox_context()], tags=["busybox:latest"]):
        aux = record.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
    assert image_id.startswith("sha256:")
    return image_id


# -- the good path -----------------------------------------------------------------------------------


def test_ping_and_version_over_tls(tls_daemon):
    eng = connect(tls_daemon.env())
    assert eng.endpoint.tls and str(eng.endpoint) == f"https://127.0.0.1:{tls_daemon.port}"
    assert eng.ping() == "1.41"
    assert eng.version()["ApiVersion"] == "1.41"
    # and it is really the second daemon, not the machine's own
    info = eng.transport.request("GET", "/v1.41/info").read()
    assert f'"DockerRootDir":"{tls_daemon.dir}/data"'.encode() in info


def test_localhost_is_in_the_certificate_too(tls_daemon):
    eng = connect(tls_daemon.env(host=f"tcp://localhost:{tls_daemon.port}"))
    assert eng.version()["ApiVersion"] == "1.41"


def test_build_and_run_over_tls(tls_daemon, tls_busybox):
    """A build with a RUN step over TLS: the context goes up, the stream comes back, the image is there."""
    eng = connect(tls_daemon.env())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = b"FROM busybox\nRUN echo over-tls > /proof\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    out = []
    for record in eng.build([buf.getvalue()], tags=["cdtls-proof:1"]):
        out.append(str(record.get("stream", "")))
    assert "Successfully tagged cdtls-proof:1\n" in out
    assert eng.inspect_image("cdtls-proof:1")["Id"].startswith("sha256:")
    created = eng.create_container("cdtls-proof", {"Image": "cdtls-proof:1", "Cmd": ["cat", "/proof"]})
    try:
        eng.start(created["Id"])
        assert eng.wait(created["Id"]) == 0
        assert eng.logs(created["Id"]) == "over-tls\n"
    finally:
        eng.remove_container(created["Id"], force=True)
        eng.remove_image("cdtls-proof:1")
    # the machine's own daemon kept its bridge: a second dockerd must not touch docker0
    assert Path("/sys/class/net/docker0").exists()


def test_docker_tls_without_verify_skips_the_server_check(tls_daemon):
    """DOCKER_TLS=1 alone: no server check (this ca.pem is another CA's), the client cert still sent."""
    env = {"DOCKER_HOST": tls_daemon.host, "DOCKER_TLS": "1", "DOCKER_CERT_PATH": tls_daemon.certs("wrong-ca")}
    assert connect(env).ping() == "1.41"
    with pytest.raises(TransportError, match="not trusted by the CA"):
        connect(dict(env, DOCKER_TLS_VERIFY="1")).ping()


def test_published_port_answers_over_the_userland_proxy(tls_daemon, tls_busybox):
    """What a deploy over TLS needs: a container's published port answers on loopback."""
    eng = connect(tls_daemon.env())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    created = eng.create_container("cdtls-httpd", {
        "Image": "busybox:latest", "Cmd": ["sh", "-c", "echo hello-tls > /index.html && httpd -f -p 8080 -h /"],
        "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}}})
    try:
        eng.start(created["Id"])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        body = b""
        for _ in range(50):
            try:
                body = opener.open(f"http://127.0.0.1:{port}/index.html", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)  # httpd is still starting
        assert body == b"hello-tls\n"
    finally:
        eng.remove_container(created["Id"], force=True)


def test_refusal_mid_upload_over_tls_is_reported(tls_daemon):
    """dockerd answers a bad tag before reading the context and hangs up on the rest of the
    upload; over TLS too, its answer is what the user sees."""
    eng = connect(tls_daemon.env())
    with pytest.raises(APIError) as caught:
        list(eng.build(fakes.big_body(), tags=["Bad:Tag:x"]))
    assert str(caught.value) == ("daemon answered 500: invalid reference format: repository name must be lowercase "
                                 "(the daemon closed the connection during the upload)")


# -- each TLS failure says which -------------------------------------------------------------------


def test_wrong_ca(tls_daemon):
    with pytest.raises(TransportError) as caught:
        connect(tls_daemon.env("wrong-ca")).ping()
    assert str(caught.value) == (f"TLS: the daemon's certificate is not trusted by the CA in "
                                 f"{tls_daemon.certs('wrong-ca')}/ca.pem (unable to get local issuer certificate)")


def test_missing_client_certificate(tls_daemon):
    with pytest.raises(TransportError) as caught:
        connect(tls_daemon.env("no-client-cert")).ping()
    text = str(caught.value)
    assert text.startswith(f"TLS: the daemon at https://127.0.0.1:{tls_daemon.port} ")
    assert "requires a client certificate" in text
    assert text.endswith(f"there is no cert.pem/key.pem in {tls_daemon.certs('no-client-cert')}")


def test_client_certificate_from_another_ca(tls_daemon):
    with pytest.raises(TransportError) as caught:
        connect(tls_daemon.env("foreign-client")).ping()
    text = str(caught.value)
    assert "rejected the client certificate" in text
    assert f"{tls_daemon.certs('foreign-client')}/cert.pem" in text


def test_host_name_not_in_the_certificate(tls_daemon):
    # the daemon listens on 127.0.0.2 too, but its certificate lists only 127.0.0.1 and localhost
    env = tls_daemon.env(host=f"tcp://127.0.0.2:{tls_daemon.port}")
    with pytest.raises(TransportError) as caught:
        connect(env).ping()
    assert str(caught.value) == (
        f"TLS: the daemon's certificate does not match the host name in https://127.0.0.2:{tls_daemon.port} "
        f"(IP address mismatch, certificate is not valid for '127.0.0.2'.); "
        f"use a name or address the certificate lists")


def test_plain_http_to_the_tls_port_says_to_turn_tls_on(tls_daemon):
    with pytest.raises(TransportError) as caught:
        connect({"DOCKER_HOST": tls_daemon.host}).ping()
    assert "speaks TLS" in str(caught.value)
    assert "DOCKER_TLS_VERIFY=1" in str(caught.value)


def test_no_ca_file_is_a_usage_error(tls_daemon, tmp_path):
    with pytest.raises(Exception) as caught:
        connect({"DOCKER_HOST": tls_daemon.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert getattr(caught.value, "exit_code", None) == 2
    assert str(caught.value) == f"DOCKER_TLS_VERIFY is set but {tmp_path}/ca.pem does not exist (set DOCKER_CERT_PATH)"


@pytest.mark.parametrize("which, words", [
    ("wrong-ca", "is not trusted by the CA in"),
    ("no-client-cert", "requires a client certificate"),
    ("foreign-client", "rejected the client certificate"),
    ("client@127.0.0.2", "does not match the host name"),
])
def test_tls_failures_through_a_step_are_one_line(tls_daemon, monkeypatch, capsys, which, words):
    which, _, address = which.partition("@")
    env = tls_daemon.env(which, host=f"tcp://{address}:{tls_daemon.port}" if address else "")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = tag.main(["busybox:latest", "cdtls-never:1"])
    out, err = capsys.readouterr()
    assert code == 3
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("cdtools tag: error: TLS: ")
    assert words in err


# -- faults over TLS, against a fake daemon with the same certificates ------------------------------------


@pytest.fixture(scope="session")
def tls_certs() -> Iterator[Path]:
    """The script's certificates alone (no daemon, no root)."""
    if shutil.which("openssl") is None:
        _unavailable("no openssl")
    d = Path(tempfile.mkdtemp(prefix="cdcerts-"))
    made = subprocess.run([sys.executable, str(SCRIPT), "certs", str(d)], capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        pytest.fail(made.stderr, pytrace=False)
    yield d / "certs"
    shutil.rmtree(d)


def fake_tls(certs: Path, handler: fakes.Handler) -> fakes.RawDaemon:
    """A raw fake daemon behind TLS that, like ``dockerd --tlsverify``, wants a client cert from its CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs / "server" / "cert.pem"), str(certs / "server" / "key.pem"))
    ctx.load_verify_locations(str(certs / "ca" / "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return fakes.RawDaemon(handler, tls=ctx)


def tls_env(certs: Path, daemon: fakes.RawDaemon, **extra: str) -> Dict[str, str]:
    return {"DOCKER_HOST": daemon.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs / "client"), **extra}


def test_reset_mid_stream_over_tls_does_not_blame_the_certificate(tls_certs):
    records = fakes.recorded("build-ok").records()[:4]
    with fake_tls(tls_certs, fakes.route({("POST", "/build"): fakes.stream(records, then="reset")})) as daemon:
        eng = connect(tls_env(tls_certs, daemon))
        with pytest.raises(TransportError) as caught:
            list(eng.build([b"context"]))
    assert not daemon.errors
    # under TLS a reset may surface as an early end of the TLS stream: either words are true
    assert str(caught.value) in (f"the connection to {daemon.shown} was reset",
                                 f"the connection to {daemon.shown} broke in the middle of a response")


def test_answer_then_reset_mid_upload_over_tls(tls_certs):
    handler = fakes.route({("POST", "/build"): fakes.reject_upload(400, "Bad Request", "dockerfile parse error line 3")})
    with fake_tls(tls_certs, handler) as daemon:
        eng = connect(tls_env(tls_certs, daemon))
        with pytest.raises(APIError) as caught:
            list(eng.build(fakes.big_body()))
    assert str(caught.value) == ("daemon answered 400: dockerfile parse error line 3 "
                                 "(the daemon closed the connection during the upload)")


def test_hang_up_after_answering_is_not_a_certificate_problem(tls_certs):
    """Once the daemon has answered (the /_ping), a later hang-up is reported as what it is."""
    def hang_up(req: fakes.Request, conn: fakes.Conn) -> None:
        conn.close()

    with fake_tls(tls_certs, fakes.route({("GET", "/version"): hang_up})) as daemon:
        with pytest.raises(TransportError) as caught:
            connect(tls_env(tls_certs, daemon)).version()
    assert str(caught.value) == f"the daemon at {daemon.shown} closed the connection without answering"


def test_hang_up_before_any_answer_points_at_the_certificate(tls_certs):
    """Nothing answered yet (the version is pinned: no /_ping): a TLS 1.3 hang-up is most likely
    the daemon's verdict on the client certificate, and the message says so, hedged."""
    def hang_up(req: fakes.Request, conn: fakes.Conn) -> None:
        conn.close()

    with fake_tls(tls_certs, fakes.route({("GET", "/version"): hang_up})) as daemon:
        with pytest.raises(TransportError) as caught:
            connect(tls_env(tls_certs, daemon, DOCKER_API_VERSION="1.41")).version()
    assert str(caught.value) == (f"TLS: the daemon at {daemon.shown} closed the connection: it probably rejected the "
                                 f"client certificate {tls_certs}/client/cert.pem (not signed by a CA it trusts?)")


# -- the steps over TLS ----------------------------------------------------------------------------------------

EXAMPLE = REPO / "examples" / "hello"


def test_build_step_over_tls_gzips_the_context(tls_daemon, tls_busybox, tmp_path, monkeypatch, capsys):
    from cdtools import build

    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app)
    for key, value in tls_daemon.env().items():
        monkeypatch.setenv(key, value)
    iid = tmp_path / "iid"
    code = build.main([str(app), "-t", "cdtls-hello:1", "--iidfile", str(iid)])
    out, err = capsys.readouterr()
    eng = connect(tls_daemon.env())
    try:
        assert code == 0, err
        # a tcp daemon gets the context gzipped, by default
        assert f", gzip) on https://127.0.0.1:{tls_daemon.port}" in out
        assert eng.inspect_image("cdtls-hello:1")["Id"] == iid.read_text().strip()
    finally:
        if code == 0:
            eng.remove_image("cdtls-hello:1", force=True)


@pytest.mark.e2e
def test_release_over_tls(tls_daemon, tls_busybox, registry, tmp_path):
    """``python -m cdtools.release`` with DOCKER_HOST/DOCKER_TLS_VERIFY/DOCKER_CERT_PATH: built, pushed
    and deployed through the TLS daemon; the page answers on the bound port, the registry has the tag."""
    import json
    import uuid

    name = f"cdtls-rel-{uuid.uuid4().hex[:8]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app)
    (app / "index.html").write_text(f"released over TLS as {name}\n")
    (app / "cdtools.json").write_text(json.dumps({
        "image": f"{registry.host}/{name}",
        "tags": ["1"],
        "deploy": {"name": name, "ports": [f"127.0.0.1:{port}:8080"], "health_timeout": 60},
    }))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO), **tls_daemon.env(),
           "CDTOOLS_REGISTRY_USERNAME": registry.user, "CDTOOLS_REGISTRY_PASSWORD": registry.password}
    (tmp_path / "home").mkdir()
    eng = connect(tls_daemon.env())
    try:
        proc = subprocess.run([sys.executable, "-m", "cdtools.release", "--config", str(app / "cdtools.json")],
                              cwd=str(app), env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert registry.password not in proc.stdout + proc.stderr
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        assert opener.open(f"http://127.0.0.1:{port}/", timeout=5).read() == f"released over TLS as {name}\n".encode()
        container = eng.inspect_container(name)
        assert container["State"]["Running"]
        # deployed by digest: the image the registry confirmed, not a tag
        assert container["Config"]["Image"].startswith(f"{registry.host}/{name}@sha256:")
        req = urllib.request.Request(f"{registry.url}/v2/{name}/tags/list",
                                     headers={"Authorization": registry.basic_auth()})
        assert json.loads(opener.open(req, timeout=5).read())["tags"] == ["1"]
    finally:
        if eng.find_container(name):
            eng.remove_container(name, force=True)
        for image in eng.images(reference=f"{registry.host}/{name}"):
            eng.remove_image(image["Id"], force=True)
