"""The transport on its own: parsing DOCKER_HOST, TLS settings, the unix socket, the
ssh command line, and errors that belong to the caller rather than the network."""
from __future__ import annotations

import json
import stat
import sys

import pytest

import fakes
from cdtools.errors import TransportError, UsageError
from cdtools.transport import Endpoint, Transport, error_message, parse_host, tls_context


# -- DOCKER_HOST --------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, kw, expected, shown", [
    ("unix:///var/run/docker.sock", {}, Endpoint("unix", "/var/run/docker.sock"), "unix:///var/run/docker.sock"),
    ("unix:///run/user/1000/docker.sock", {}, Endpoint("unix", "/run/user/1000/docker.sock"),
     "unix:///run/user/1000/docker.sock"),
    ("tcp://10.0.0.5:2375", {}, Endpoint("tcp", "10.0.0.5:2375"), "tcp://10.0.0.5:2375"),
    ("tcp://build-host", {}, Endpoint("tcp", "build-host:2375"), "tcp://build-host:2375"),
    ("tcp://build-host", {"tls_verify": True, "cert_path": "/c"},
     Endpoint("tcp", "build-host:2376", tls=True, tls_verify=True, cert_path="/c"), "https://build-host:2376"),
    ("tcp://build-host:2376", {"tls": True}, Endpoint("tcp", "build-host:2376", tls=True), "https://build-host:2376"),
    ("https://build-host:443", {}, Endpoint("tcp", "build-host:443", tls=True), "https://build-host:443"),
    ("tcp://[fd00::5]:2375", {}, Endpoint("tcp", "[fd00::5]:2375"), "tcp://[fd00::5]:2375"),
    # as the docker CLI: no scheme means tcp, no host means localhost
    ("build-host:2375", {}, Endpoint("tcp", "build-host:2375"), "tcp://build-host:2375"),
    ("tcp://:2375", {}, Endpoint("tcp", "localhost:2375"), "tcp://localhost:2375"),
    ("ssh://deploy@build-host:2222", {}, Endpoint("ssh", "deploy@build-host:2222"), "ssh://deploy@build-host:2222"),
    ("ssh://build-host", {}, Endpoint("ssh", "build-host"), "ssh://build-host"),
])
def test_parse_host(url, kw, expected, shown):
    endpoint = parse_host(url, **kw)
    assert endpoint == expected
    assert str(endpoint) == shown
    assert endpoint.is_local == (expected.scheme == "unix")


@pytest.mark.parametrize("url, words", [
    ("tcp://build-host:twentythree", "bad port"),
    ("fd://", "unsupported scheme 'fd'"),
    ("npipe:////./pipe/docker_engine", "unsupported scheme 'npipe'"),
    ("ssh://", "no host name"),
    ("ssh://deploy@build-host/var/run/docker.sock", "an ssh address has no path"),
    ("tcp://build-host:2375/v1.41", "a tcp address has no path"),
    ("/var/run/docker.sock", "expected unix:///path"),
])
def test_bad_hosts_are_usage_errors(url, words):
    with pytest.raises(UsageError) as caught:
        parse_host(url)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"DOCKER_HOST/-H {url!r}: ")
    assert words in str(caught.value)


# -- TLS settings --------------------------------------------------------------------------------------


def test_tls_verify_without_ca_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=f"^DOCKER_TLS_VERIFY is set but {tmp_path}/ca.pem does not exist"):
        tls_context(parse_host("tcp://h:2376", tls_verify=True, cert_path=str(tmp_path)))


def test_unreadable_ca_is_a_usage_error(tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(UsageError, match=f"^TLS: cannot read the CA certificate {tmp_path}/ca.pem"):
        tls_context(parse_host("tcp://h:2376", tls_verify=True, cert_path=str(tmp_path)))


def test_cert_without_key_is_a_usage_error(tmp_path):
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(UsageError, match="must both exist"):
        tls_context(parse_host("tcp://h:2376", tls=True, cert_path=str(tmp_path)))


def test_broken_client_cert_is_a_usage_error(tmp_path):
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("y")
    with pytest.raises(UsageError, match=f"^TLS: cannot load the client certificate {tmp_path}/cert.pem"):
        Transport(parse_host("tcp://h:2376", tls=True, cert_path=str(tmp_path)))


def test_tls_without_verify_and_without_files_is_allowed(tmp_path):
    """DOCKER_TLS=1 alone: encrypted, no server check, no client cert (what docker does)."""
    ctx = tls_context(parse_host("tcp://h:2376", tls=True, cert_path=str(tmp_path)))
    assert ctx.check_hostname is False


# -- the unix socket -------------------------------------------------------------------------------------


def test_unix_socket_round_trip(tmp_path):
    sock = str(tmp_path / "docker.sock")
    routes = {("GET", "/version"): fakes.replay("version")}
    with fakes.RawDaemon(fakes.route(routes), unix_path=sock) as daemon:
        transport = Transport(parse_host(daemon.host))
        resp = transport.request("GET", "/v1.41/version")
        assert resp.status == 200
        assert json.loads(resp.read())["ApiVersion"] == "1.41"
    assert [r.target for r in daemon.requests] == ["/v1.41/version"]
    assert daemon.requests[0].headers["host"] == "localhost"


def test_unix_socket_reset_mid_stream(tmp_path):
    sock = str(tmp_path / "docker.sock")
    records = fakes.recorded("push-ok").records()[:3]
    routes = {("POST", "/images/app/push"): fakes.stream(records, then="close")}
    with fakes.RawDaemon(fakes.route(routes), unix_path=sock) as daemon:
        resp = Transport(parse_host(daemon.host)).request("POST", "/v1.41/images/app/push")
        with pytest.raises(TransportError, match=f"^the connection to unix://{sock} broke in the middle"):
            b"".join(resp.iter_chunks())


def test_socket_that_is_not_a_socket(tmp_path):
    path = tmp_path / "docker.sock"
    path.write_text("")
    with pytest.raises(TransportError, match=f"^connection refused by unix://{path} \\(is the daemon listening there\\?\\)$"):
        Transport(parse_host(f"unix://{path}")).request("GET", "/_ping")


# -- the caller's errors stay the caller's -----------------------------------------------------------------


def test_error_from_the_body_reaches_the_caller_unchanged():
    """A context that can't be read is the user's problem, not a broken connection."""

    def body():
        yield b"first chunk"
        raise UsageError("context: cannot read secret.txt: Permission denied")

    with fakes.RawDaemon(fakes.route({("POST", "/build"): fakes.replay("build-ok")})) as daemon:
        with pytest.raises(UsageError, match="^context: cannot read secret.txt"):
            Transport(parse_host(daemon.host)).request("POST", "/v1.41/build", body=body())


# -- the ssh command line ----------------------------------------------------------------------------------


@pytest.fixture
def fake_ssh(tmp_path):
    """An ``ssh`` that records its argv and fails the way ssh does."""
    record = tmp_path / "argv.json"
    script = tmp_path / "ssh"
    script.write_text(f"""#!{sys.executable}
import json, sys
json.dump(sys.argv[1:], open({str(record)!r}, "w"))
sys.stderr.write("debug1: noise\\nssh: Could not resolve hostname build-host: Name or service not known\\r\\n")
sys.exit(255)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


@pytest.mark.parametrize("url, login", [
    ("ssh://deploy@build-host:2222", ["-l", "deploy", "-p", "2222", "--", "build-host"]),
    ("ssh://build-host", ["--", "build-host"]),
    ("ssh://deploy@[fd00::5]:22", ["-l", "deploy", "-p", "22", "--", "fd00::5"]),
])
def test_ssh_command_line_and_failure(fake_ssh, url, login):
    script, record = fake_ssh
    transport = Transport(parse_host(url), ssh_path=str(script), ssh_options=["-F", "/etc/cdtools/ssh_config"])
    with pytest.raises(TransportError) as caught:
        transport.request("GET", "/_ping")
    assert json.loads(record.read_text()) == [
        "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-F", "/etc/cdtools/ssh_config",
        *login, "docker", "system", "dial-stdio"]
    assert str(caught.value) == (f"cannot talk to the daemon over {url}: ssh exited with 255: "
                                 f"ssh: Could not resolve hostname build-host: Name or service not known")


def test_ssh_connect_timeout_follows_the_step_timeout(fake_ssh):
    script, record = fake_ssh
    with pytest.raises(TransportError):
        Transport(parse_host("ssh://h"), ssh_path=str(script), timeout=3).request("GET", "/_ping")
    assert "ConnectTimeout=3" in json.loads(record.read_text())


# -- error bodies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    (b'{"message":"No such image: app:1"}\n', "No such image: app:1"),
    # Podman's compat API
    (b'{"cause":"image not known","message":"app:1: image not known","response":404}', "app:1: image not known"),
    (b"client version 1.11 is too old. Minimum supported API version is 1.12\n",
     "client version 1.11 is too old. Minimum supported API version is 1.12"),
    (b"", "(no message)"),
    (b'["odd"]', '["odd"]'),
])
def test_error_message(body, message):
    assert error_message(body) == message
