"""cdtools over ``DOCKER_HOST=ssh://…``, against a real sshd on loopback (scripts/ssh-daemon).

The transport runs ``ssh … -- HOST docker system dial-stdio`` as the docker CLI
does and speaks HTTP over its pipes; the remote end is this machine's own
daemon.  The sshd, its keys and the client's config live in a directory of
their own; the client side is reached through a ``ssh`` wrapper on PATH that
adds ``-F`` (OpenSSH reads ~/.ssh/config from the passwd entry, not $HOME).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator

import pytest

from cdtools import engine as engine_mod, settings as settings_mod, tag
from cdtools.errors import APIError, TransportError
from cdtools.transport import Transport, parse_host
from conftest import exported, unavailable

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "ssh-daemon"


@dataclass(frozen=True)
class SSHDaemon:
    dir: Path
    port: int

    @property
    def bin(self) -> str:
        return str(self.dir / "bin")

    @property
    def config(self) -> str:
        return str(self.dir / "ssh_config")

    def env(self, destination: str = "") -> Dict[str, str]:
        """Settings for DOCKER_HOST=ssh://DEST with the wrapper first on PATH."""
        dest = destination or f"root@127.0.0.1:{self.port}"
        return {"DOCKER_HOST": f"ssh://{dest}", "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def remote(self, host: str, command: str) -> str:
        port = [] if host.startswith("cdtools-sshd-") else ["-p", str(self.port)]
        return subprocess.run([f"{self.bin}/ssh", *port, "-l", "root", host, "--", command],
                              capture_output=True, text=True, timeout=30).stdout.strip()


def _unavailable(reason: str) -> None:
    unavailable(f"sshd unavailable: {reason}")


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHDaemon]:
    if os.geteuid() != 0:
        _unavailable("needs root")
    for tool in ("/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"):
        if not os.path.exists(tool):
            _unavailable(f"no {tool} (apt-get install openssh-server openssh-client)")
    d = Path(tempfile.mkdtemp(prefix="cdssh-", dir="/tmp"))
    d.rmdir()
    started = subprocess.run([sys.executable, str(SCRIPT), "start", str(d)], capture_output=True, text=True,
                             timeout=120)
    if started.returncode != 0:
        pytest.fail(f"scripts/ssh-daemon start failed: {started.stderr.strip()}", pytrace=False)
    env = exported(started.stdout)
    try:
        yield SSHDaemon(dir=d, port=int(env["DOCKER_HOST"].rsplit(":", 1)[1]))
    finally:
        subprocess.run([sys.executable, str(SCRIPT), "stop", str(d)], timeout=60)


def connect(env: Dict[str, str]) -> engine_mod.Engine:
    return engine_mod.connect(settings_mod.from_env(env))


def local_daemon_version() -> str:
    """The machine's own daemon, asked over its unix socket: what ssh must lead to."""
    return str(connect({"DOCKER_HOST": "unix:///var/run/docker.sock"}).version()["Version"])


# -- the good path ---------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("host, cli", [
    # sshd's default PATH puts /usr/local/bin first: here a docker 28 CLI
    ("127.0.0.1", "/usr/local/bin/docker"),
    # PATH=/usr/bin:/bin from authorized_keys: Debian's docker 20.10 CLI
    ("cdtools-sshd-debian-cli", "/usr/bin/docker"),
])
def test_ping_and_version_over_ssh(sshd, host, cli):
    if not os.path.exists(cli):
        pytest.skip(f"no {cli} on this machine")
    assert sshd.remote(host, "command -v docker") == cli  # the CLI this case exercises
    dest = f"root@127.0.0.1:{sshd.port}" if host == "127.0.0.1" else f"root@{host}"
    eng = connect(sshd.env(dest))
    assert str(eng.endpoint) == f"ssh://{dest}"
    assert eng.ping() == "1.41"
    assert eng.version()["Version"] == local_daemon_version()


@pytest.mark.e2e
def test_ssh_options_for_library_callers(sshd):
    """Transport(ssh_options=…) works without any wrapper or ~/.ssh/config."""
    endpoint = parse_host(f"ssh://root@127.0.0.1:{sshd.port}")
    transport = Transport(endpoint, ssh_path="/usr/bin/ssh", ssh_options=["-F", sshd.config])
    resp = transport.request("GET", "/_ping")
    assert (resp.status, resp.read(), resp.header("Api-Version")) == (200, b"OK", "1.41")


@pytest.mark.e2e
def test_build_over_ssh(sshd, unique):
    """A build with a RUN step through ssh: a streamed upload and a progress stream on dial-stdio's pipes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = b"FROM busybox\nRUN echo over-ssh > /proof\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    eng = connect(sshd.env())
    streams = [str(r.get("stream", "")) for r in eng.build([buf.getvalue()], tags=[f"{unique}-ssh:1"])]
    assert f"Successfully tagged {unique}-ssh:1\n" in streams
    assert eng.inspect_image(f"{unique}-ssh:1")["Id"].startswith("sha256:")


@pytest.mark.e2e
def test_refusal_mid_upload_over_ssh_is_reported(sshd):
    """dockerd answers a bad tag before reading the context and hangs up; through
    dial-stdio's pipes its answer still reaches the user."""
    import fakes

    eng = connect(sshd.env())
    with pytest.raises(APIError) as caught:
        list(eng.build(fakes.big_body(), tags=["Bad:Tag:x"]))
    assert str(caught.value) == ("daemon answered 500: invalid reference format: repository name must be lowercase "
                                 "(the daemon closed the connection during the upload)")


# -- failures: one line, with what ssh said ---------------------------------------------------------------


@pytest.mark.parametrize("dest, says", [
    ("root@cdtools-sshd-stranger", "ssh exited with 255: root@127.0.0.1: Permission denied (publickey)."),
    ("root@cdtools-sshd-unknown-host", "ssh exited with 255: Host key verification failed."),
    ("root@cdtools-sshd-no-docker", "ssh exited with 127: bash: line 1: docker: command not found"),
    ("root@cdtools-sshd-no-daemon", "ssh exited with 1: failed to open the raw stream connection: dial unix "
                                    "{dir}/no-daemon.sock: connect: no such file or directory"),
])
def test_ssh_failures_carry_ssh_last_words(sshd, dest, says):
    with pytest.raises(TransportError) as caught:
        connect(sshd.env(dest)).ping()
    assert str(caught.value) == f"cannot talk to the daemon over ssh://{dest}: " + says.format(dir=sshd.dir)


def test_ssh_host_down(sshd):
    import fakes

    port = fakes.free_port()
    with pytest.raises(TransportError) as caught:
        connect(sshd.env(f"root@127.0.0.1:{port}")).ping()
    assert str(caught.value) == (f"cannot talk to the daemon over ssh://root@127.0.0.1:{port}: ssh exited with 255: "
                                 f"ssh: connect to host 127.0.0.1 port {port}: Connection refused")


def test_no_ssh_program():
    transport = Transport(parse_host("ssh://root@127.0.0.1:22"), ssh_path="/nonexistent/ssh")
    with pytest.raises(TransportError, match=r"^cannot reach ssh://root@127.0.0.1:22: no /nonexistent/ssh program"):
        transport.request("GET", "/_ping")


@pytest.mark.parametrize("dest, words", [
    ("root@cdtools-sshd-stranger", "Permission denied (publickey)."),
    ("root@cdtools-sshd-no-daemon", "no-daemon.sock: connect: no such file or directory"),
])
def test_ssh_failure_through_a_step_is_one_line(sshd, monkeypatch, capsys, dest, words):
    for key, value in sshd.env(dest).items():
        monkeypatch.setenv(key, value)
    code = tag.main(["busybox:latest", "cdssh-never:1"])
    out, err = capsys.readouterr()
    assert code == 3
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"cdtools tag: error: cannot talk to the daemon over ssh://{dest}: ssh exited with ")
    assert err.rstrip("\n").endswith(words)
