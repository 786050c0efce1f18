"""Build and push against a fake daemon, for what a real one can't do on demand:
an errorDetail after HTTP 200, a 500, a push with no digest.  Streams cut mid-way
are in test_faults.py (a raw-socket fake: an HTTP server library ends them cleanly).

The fake answers with the bodies recorded from a real Engine 20.10 (tests/data/engine-1.41).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdtools import build, push, tag

DATA = Path(__file__).parent / "data" / "engine-1.41"
CANARY = "Canary+Pass/word=="


def recorded(name: str) -> bytes:
    return (DATA / f"{name}.body").read_bytes()


@pytest.fixture
def daemon(httpserver, monkeypatch):
    """A fake daemon on loopback that speaks API 1.41; DOCKER_HOST points at it."""
    httpserver.expect_request("/_ping").respond_with_data("OK", headers={"Api-Version": "1.41"})
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{httpserver.port}")
    return httpserver


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY . /app/\n")
    (tmp_path / "hello.txt").write_text("hi\n")
    return tmp_path


def test_build_ok_takes_image_id_from_aux(daemon, ctx, capsys, tmp_path):
    daemon.expect_request("/v1.41/build", method="POST").respond_with_data(recorded("build-ok"))
    iid = tmp_path / "iid"
    assert build.main([str(ctx), "-t", "app:1", "--iidfile", str(iid)]) == 0
    assert iid.read_text() == "sha256:62226968922f8ae7040605093c938a416e5bde3892761a41baa0b15cde520c78"
    req, _ = daemon.log[-1]
    assert req.args.getlist("t") == ["app:1"]
    assert req.headers.get("Transfer-Encoding") == "chunked"  # streamed, no Content-Length
    # a tcp daemon gets the context gzipped; it holds what the Dockerfile copies
    assert req.headers.get("Content-Encoding") == "gzip"
    import gzip, io, tarfile
    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(req.get_data()))).getnames()
    assert "hello.txt" in names and "Dockerfile" in names


def test_build_error_detail_after_200_fails_with_daemon_message(daemon, ctx, capsys):
    daemon.expect_request("/v1.41/build", method="POST").respond_with_data(recorded("build-fail"))
    assert build.main([str(ctx), "-t", "app:1"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cdtools build: error: build failed: The command '/bin/sh -c exit 2' returned a non-zero code: 2"]


def test_build_500_fails_the_step(daemon, ctx, capsys):
    daemon.expect_request("/v1.41/build", method="POST").respond_with_data(
        recorded("build-bad-dockerfile-name"), status=500, content_type="application/json")
    assert build.main([str(ctx)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Cannot locate specified Dockerfile: nope" in err[0]


def test_build_stream_without_image_id_fails(daemon, ctx, capsys):
    daemon.expect_request("/v1.41/build", method="POST").respond_with_data(b'{"stream":"Step 1/1 : FROM busybox\\n"}\r\n')
    assert build.main([str(ctx)]) == 4
    assert "without an image id" in capsys.readouterr().err


@pytest.fixture
def registry_env(monkeypatch):
    monkeypatch.setenv("CDTOOLS_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("CDTOOLS_REGISTRY_PASSWORD", CANARY)


def test_push_ok_prints_digest_and_sends_auth(daemon, registry_env, capsys, tmp_path):
    daemon.expect_request("/v1.41/images/127.0.0.1:5000/cap/app/push", method="POST").respond_with_data(recorded("push-ok"))
    out_file = tmp_path / "digest"
    assert push.main(["127.0.0.1:5000/cap/app:1", "--digest-file", str(out_file)]) == 0
    digest = "sha256:7caddbdc5965f55d41318fff51e620907bbc1e6390a465882788b9a7e6ec3858"
    assert out_file.read_text().strip() == f"127.0.0.1:5000/cap/app@{digest}"
    req, _ = daemon.log[-1]
    import base64
    auth = json.loads(base64.urlsafe_b64decode(req.headers["X-Registry-Auth"]))
    assert auth["username"] == "ci" and auth["password"] == CANARY and auth["serveraddress"] == "127.0.0.1:5000"
    captured = capsys.readouterr()
    assert digest in captured.out
    assert CANARY not in captured.out + captured.err


@pytest.mark.parametrize("case, needle", [
    ("push-denied", "unauthorized: authentication required"),
    ("push-anonymous", "no basic auth credentials"),
    ("push-no-such-tag", "tag does not exist"),
])
def test_push_error_after_200_fails_naming_registry(daemon, registry_env, capsys, case, needle):
    daemon.expect_request("/v1.41/images/127.0.0.1:5000/cap/app/push", method="POST").respond_with_data(recorded(case))
    assert push.main(["127.0.0.1:5000/cap/app:1"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "127.0.0.1:5000" in err[0]


def test_push_without_digest_fails(daemon, registry_env, capsys):
    body = b"".join(line for line in recorded("push-ok").splitlines(keepends=True) if b"digest" not in line.lower())
    daemon.expect_request("/v1.41/images/127.0.0.1:5000/cap/app/push", method="POST").respond_with_data(body)
    assert push.main(["127.0.0.1:5000/cap/app:1"]) == 5
    assert "without a digest" in capsys.readouterr().err


def test_push_digest_from_status_line_when_no_aux(daemon, registry_env, capsys):
    body = b"".join(line for line in recorded("push-ok").splitlines(keepends=True) if b'"aux"' not in line)
    daemon.expect_request("/v1.41/images/127.0.0.1:5000/cap/app/push", method="POST").respond_with_data(body)
    assert push.main(["127.0.0.1:5000/cap/app:1"]) == 0
    assert "sha256:7caddbdc5965" in capsys.readouterr().out


def test_push_500_fails(daemon, registry_env, capsys):
    daemon.expect_request("/v1.41/images/127.0.0.1:5000/cap/app/push", method="POST").respond_with_data(
        b'{"message":"something broke"}', status=500, content_type="application/json")
    assert push.main(["127.0.0.1:5000/cap/app:1"]) == 5
    assert "something broke" in capsys.readouterr().err


def test_password_on_argv_is_refused_before_any_request(daemon, capsys):
    # refused while the arguments are parsed, as argparse ends every usage error: exit 2
    with pytest.raises(SystemExit) as refused:
        push.main(["127.0.0.1:5000/cap/app:1", "--username", "ci", "--password", CANARY])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--password-stdin" in err and CANARY not in err
    assert not [r for r, _ in daemon.log if "push" in r.path]


def test_bad_reference_refused_before_any_request(daemon, capsys):
    assert push.main(["127.0.0.1:5000/Cap/App:1"]) == 2
    assert not [r for r, _ in daemon.log if "push" in r.path]


def test_tag_missing_source_fails(daemon, capsys):
    daemon.expect_request("/v1.41/images/nope:1/tag", method="POST").respond_with_data(
        recorded("tag-missing"), status=404, content_type="application/json")
    assert tag.main(["nope:1", "127.0.0.1:5000/cap/app:2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope:1" in err[0]


def test_a_malformed_docker_host_is_one_usage_line(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "tcp://[::1")
    assert tag.main(["a:1", "b:2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DOCKER_HOST" in err[0]


def test_a_usage_error_is_one_line_pointing_at_help(capsys):
    with pytest.raises(SystemExit) as info:
        build.main([])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cdtools build: error: the following arguments are required: context (see cdtools build --help)"]
