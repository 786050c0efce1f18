"""Registry credentials: precedence, config.json, credential helpers, header encoding, no leaks.

Credential helpers are the real ``tests/bin/docker-credential-cdtest`` executable,
found through the ``path`` argument (PATH as settings.py would pass it) and run
as a subprocess, exactly as for a user.
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import traceback
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import urlencode

import pytest

from cdtools import auth
from cdtools.auth import Credentials, read_password_file, read_password_stdin, registry_config_header, resolve
from cdtools.errors import CdtoolsError, CredentialsError, UsageError
from cdtools.reference import parse

BIN = Path(__file__).parent / "bin"
REG = "127.0.0.1:5000"
HUB = "https://index.docker.io/v1/"
CANARY = "Canary+Pass/word=="


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def decode(header: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(header.encode()))


@pytest.fixture
def docker_config(tmp_path):
    """A config dir; write(obj) puts config.json there (a str is written as-is)."""
    cfg = tmp_path / "docker"
    cfg.mkdir()

    def write(content: Any) -> str:
        text = content if isinstance(content, str) else json.dumps(content)
        (cfg / "config.json").write_text(text, encoding="utf-8")
        return str(cfg)

    write.dir = str(cfg)  # type: ignore[attr-defined]
    return write


@pytest.fixture
def helper_store(tmp_path, monkeypatch):
    """The cdtest helper's store and call log; returns (set_store, calls)."""
    store = tmp_path / "helper-store.json"
    calls = tmp_path / "helper-calls.jsonl"
    # the helper is a child process: it reads these from the environment it inherits
    monkeypatch.setenv("CDTEST_CREDENTIALS_FILE", str(store))
    monkeypatch.setenv("CDTEST_CALLS_FILE", str(calls))

    def set_store(sections: Dict[str, Dict[str, Any]]) -> None:
        store.write_text(json.dumps(sections), encoding="utf-8")

    def read_calls() -> List[Dict[str, str]]:
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()]

    set_store({})
    return set_store, read_calls


@pytest.fixture
def helper_path(tmp_path):
    """PATH holding docker-credential-cdtest, plus docker-credential-other (a link to it)."""
    extra = tmp_path / "morebin"
    extra.mkdir()
    (extra / "docker-credential-other").symlink_to(BIN / "docker-credential-cdtest")
    return os.pathsep.join([str(BIN), str(extra)])


# --- precedence ---------------------------------------------------------------------------------


def full_config(docker_config) -> str:
    return docker_config({"auths": {REG: {"auth": b64("fileuser:filepass")}}})


def test_flags_win_over_environment_and_config(docker_config):
    creds = resolve(REG, username="flaguser", password="flagpass", password_source="--password-stdin",
                    env={"CDTOOLS_REGISTRY_USERNAME": "envuser", "CDTOOLS_REGISTRY_PASSWORD": "envpass"},
                    config_dir=full_config(docker_config))
    assert (creds.username, creds.password, creds.source) == ("flaguser", "flagpass", "--password-stdin")


def test_environment_wins_over_config(docker_config):
    creds = resolve(REG, env={"CDTOOLS_REGISTRY_USERNAME": "envuser", "CDTOOLS_REGISTRY_PASSWORD": "envpass"},
                    config_dir=full_config(docker_config))
    assert (creds.username, creds.password) == ("envuser", "envpass")
    assert creds.source == "environment CDTOOLS_REGISTRY_PASSWORD"


def test_environment_variable_names_chosen_by_the_user(docker_config):
    env = {"CDTOOLS_REGISTRY_USERNAME": "wrong", "CDTOOLS_REGISTRY_PASSWORD": "wrong",
           "REG_USER": "ci", "REG_PASS": "s3cret"}
    creds = resolve(REG, env=env, username_var="REG_USER", password_var="REG_PASS")
    assert (creds.username, creds.password, creds.source) == ("ci", "s3cret", "environment REG_PASS")


def test_config_used_when_no_flags_or_environment(docker_config):
    creds = resolve(REG, env={}, config_dir=full_config(docker_config))
    assert (creds.username, creds.password, creds.source) == ("fileuser", "filepass", "config.json auths")
    assert creds.server_address == REG


@pytest.mark.parametrize("env,missing", [
    ({"CDTOOLS_REGISTRY_USERNAME": "ci"}, "CDTOOLS_REGISTRY_PASSWORD is not"),
    ({"CDTOOLS_REGISTRY_PASSWORD": CANARY}, "CDTOOLS_REGISTRY_USERNAME is not"),
    ({"CDTOOLS_REGISTRY_USERNAME": "ci", "CDTOOLS_REGISTRY_PASSWORD": ""}, "CDTOOLS_REGISTRY_PASSWORD is not"),
])
def test_half_set_environment_is_a_usage_error_naming_the_missing_variable(env, missing, docker_config):
    with pytest.raises(UsageError) as info:
        resolve(REG, env=env, config_dir=full_config(docker_config))
    assert missing in str(info.value)
    assert CANARY not in str(info.value)


def test_empty_environment_values_count_as_unset(docker_config):
    creds = resolve(REG, env={"CDTOOLS_REGISTRY_USERNAME": "", "CDTOOLS_REGISTRY_PASSWORD": ""},
                    config_dir=full_config(docker_config))
    assert creds.source == "config.json auths"


@pytest.mark.parametrize("kwargs,words", [
    ({"username": "ci"}, "--username given without a password"),
    ({"password": CANARY, "password_source": "--password-file"}, "--password-file needs --username"),
    ({"username": "", "password": CANARY}, "needs --username"),
    ({"username": "ci", "password": "", "password_source": "--password-stdin"}, "empty password from --password-stdin"),
])
def test_incomplete_flags_are_usage_errors(kwargs, words):
    with pytest.raises(UsageError) as info:
        resolve(REG, **kwargs)
    assert words in str(info.value)
    assert CANARY not in str(info.value)


def test_no_config_dir_means_anonymous():
    creds = resolve(REG, env={}, config_dir=None)
    assert creds.anonymous and creds.source == "none (anonymous)"
    assert creds.header() == "e30="


@pytest.mark.parametrize("content", [None, "", "  \n", {}, {"auths": {}}, {"auths": None},
                                     {"auths": {"other.example": {"auth": b64("u:p")}}}])
def test_nothing_for_this_registry_is_anonymous(docker_config, content):
    config_dir = docker_config.dir if content is None else docker_config(content)
    creds = resolve(REG, config_dir=config_dir)
    assert creds.anonymous and creds.source == "none (anonymous)" and creds.registry == REG


# --- config.json auths and key normalisation ----------------------------------------------------


@pytest.mark.parametrize("key", [
    "127.0.0.1:5000", "http://127.0.0.1:5000", "https://127.0.0.1:5000", "https://127.0.0.1:5000/",
    "https://127.0.0.1:5000/v1/", "127.0.0.1:5000/v1/", "http://127.0.0.1:5000/v2/", "127.0.0.1:5000/",
])
@pytest.mark.parametrize("asked", ["127.0.0.1:5000", "https://127.0.0.1:5000/v1/", "http://127.0.0.1:5000"])
def test_auths_key_forms_of_one_registry(docker_config, key, asked):
    config_dir = docker_config({"auths": {key: {"auth": b64("ci:s3cret")}}})
    creds = resolve(asked, config_dir=config_dir)
    assert (creds.username, creds.password, creds.registry) == ("ci", "s3cret", REG)
    assert creds.server_address == key  # the CLI sends the key as written


@pytest.mark.parametrize("key", [HUB, "https://index.docker.io/v1", "http://index.docker.io", "index.docker.io",
                                 "docker.io", "https://docker.io"])
@pytest.mark.parametrize("asked", ["docker.io", "index.docker.io", HUB])
def test_docker_hub_key_forms(docker_config, key, asked):
    config_dir = docker_config({"auths": {key: {"auth": b64("hubuser:hubpass")}}})
    creds = resolve(asked, config_dir=config_dir)
    assert (creds.username, creds.password, creds.registry) == ("hubuser", "hubpass", "docker.io")


@pytest.mark.parametrize("asked", ["127.0.0.1:5001", "127.0.0.1", "localhost:5000", "docker.io"])
def test_auths_other_registries_do_not_match(docker_config, asked):
    config_dir = docker_config({"auths": {"https://127.0.0.1:5000/v1/": {"auth": b64("ci:s3cret")}}})
    assert resolve(asked, config_dir=config_dir).anonymous


def test_exact_key_preferred_over_a_normalised_one(docker_config):
    config_dir = docker_config({"auths": {
        "https://127.0.0.1:5000/v1/": {"auth": b64("legacy:old")},
        REG: {"auth": b64("ci:new")},
    }})
    assert resolve(REG, config_dir=config_dir).username == "ci"
    config_dir = docker_config({"auths": {
        "docker.io": {"auth": b64("short:old")},
        HUB: {"auth": b64("hub:new")},
    }})
    assert resolve("docker.io", config_dir=config_dir).username == "hub"


def test_reference_registry_finds_its_credentials(docker_config):
    config_dir = docker_config({"auths": {HUB: {"auth": b64("hubuser:hubpass")},
                                          REG: {"auth": b64("ci:s3cret")}}})
    assert resolve(parse("busybox").registry, config_dir=config_dir).username == "hubuser"
    assert resolve(parse("index.docker.io/team/app").registry, config_dir=config_dir).username == "hubuser"
    assert resolve(parse(f"{REG}/team/app:1").registry, config_dir=config_dir).username == "ci"


def test_auth_splits_on_the_first_colon_and_keeps_the_rest(docker_config):
    config_dir = docker_config({"auths": {REG: {"auth": b64("ci:pa:ss:word")}}})
    assert resolve(REG, config_dir=config_dir).password == "pa:ss:word"


def test_auth_utf8(docker_config):
    config_dir = docker_config({"auths": {REG: {"auth": b64("s\u00e6kuya:iz\u00e6yoi")}}})
    creds = resolve(REG, config_dir=config_dir)
    assert (creds.username, creds.password) == ("s\u00e6kuya", "iz\u00e6yoi")


def test_plain_username_password_fields(docker_config):
    config_dir = docker_config({"auths": {REG: {"username": "ci", "password": "s3cret"}}})
    creds = resolve(REG, config_dir=config_dir)
    assert (creds.username, creds.password) == ("ci", "s3cret")


def test_json_keys_match_case_insensitively_like_go(docker_config):
    config_dir = docker_config({"Auths": {REG: {"Auth": b64("ci:s3cret")}}})
    assert resolve(REG, config_dir=config_dir).password == "s3cret"


def test_identity_token(docker_config):
    config_dir = docker_config({"auths": {REG: {"auth": b64("ci:"), "identitytoken": "tok-123"}}})
    creds = resolve(REG, config_dir=config_dir)
    assert (creds.username, creds.password, creds.identity_token) == ("ci", None, "tok-123")
    assert decode(creds.header()) == {"username": "ci", "serveraddress": REG, "identitytoken": "tok-123"}


def test_marker_entry_without_credentials_is_anonymous(docker_config):
    config_dir = docker_config({"auths": {REG: {}, "other.example": {"email": "x@example.com"}}})
    assert resolve(REG, config_dir=config_dir).anonymous
    assert resolve("other.example", config_dir=config_dir).anonymous


# --- broken config.json: an error naming the file, never anonymous ------------------------------


BROKEN = [
    ('{"auths": {', "is not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"auths": []}, '"auths" must be an object'),
    ({"auths": {REG: "user:pass"}}, "must be an object"),
    ({"auths": {REG: {"auth": 42}}}, '"auth" must be a string'),
    ({"auths": {REG: {"auth": "not base64!!"}}}, '"auth" is not valid base64'),
    ({"auths": {REG: {"auth": b64(CANARY)[:-1]}}}, '"auth" is not valid base64'),
    ({"auths": {REG: {"auth": b64("nocolon" + CANARY)}}}, 'must encode "username:password"'),
    ({"auths": {REG: {"auth": b64(":" + CANARY)}}}, 'must encode "username:password"'),
    ({"auths": {REG: {"auth": base64.b64encode(b"ci:\xff\xfe").decode()}}}, "UTF-8"),
    ({"credHelpers": {REG: 1}}, '"credHelpers" must map'),
    ({"credHelpers": ["cdtest"]}, '"credHelpers" must map'),
    ({"credsStore": True}, '"credsStore" must be a helper name'),
]


@pytest.mark.parametrize("content,words", BROKEN, ids=[str(i) for i in range(len(BROKEN))])
def test_broken_config_is_an_error_naming_the_file(docker_config, content, words):
    config_dir = docker_config(content)
    with pytest.raises(CredentialsError) as info:
        resolve(REG, config_dir=config_dir)
    message = str(info.value)
    assert os.path.join(config_dir, "config.json") in message
    assert words in message
    assert info.value.exit_code == 2


def test_broken_entry_for_another_registry_still_fails(docker_config):
    # as the CLI: the file is decoded whole, a bad entry anywhere is a broken file
    config_dir = docker_config({"auths": {"other.example": {"auth": "%%%"}, REG: {"auth": b64("ci:s3cret")}}})
    with pytest.raises(CredentialsError, match="other.example"):
        resolve(REG, config_dir=config_dir)


def test_unreadable_config_is_an_error(docker_config):
    config_dir = docker_config({})
    os.remove(os.path.join(config_dir, "config.json"))
    os.mkdir(os.path.join(config_dir, "config.json"))  # a directory: open() fails
    with pytest.raises(CredentialsError, match="cannot read .*config.json"):
        resolve(REG, config_dir=config_dir)


def test_config_not_utf8_is_an_error(docker_config):
    config_dir = docker_config({})
    Path(config_dir, "config.json").write_bytes(b'{"auths": {"\xff": {}}}')
    with pytest.raises(CredentialsError, match="not UTF-8"):
        resolve(REG, config_dir=config_dir)


# --- credential helpers (the real executable) ---------------------------------------------------


def test_cred_helper_for_the_registry(docker_config, helper_store, helper_path):
    set_store, calls = helper_store
    set_store({"cdtest": {REG: {"Username": "ci", "Secret": "s3cret"}}})
    config_dir = docker_config({"credHelpers": {REG: "cdtest"}, "auths": {REG: {"auth": b64("file:file")}}})
    creds = resolve(REG, config_dir=config_dir, path=helper_path)
    assert (creds.username, creds.password) == ("ci", "s3cret")
    assert creds.source == "credential helper docker-credential-cdtest"
    assert creds.server_address == REG
    # the helper was asked `get` with the bare server address on stdin, no newline
    assert calls() == [{"helper": "cdtest", "action": "get", "input": REG}]


def test_creds_store(docker_config, helper_store, helper_path):
    set_store, calls = helper_store
    set_store({"cdtest": {REG: {"Username": "ci", "Secret": "s3cret"}}})
    creds = resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path)
    assert (creds.username, creds.password) == ("ci", "s3cret")


def test_docker_hub_is_asked_by_its_index_server_address(docker_config, helper_store, helper_path):
    set_store, calls = helper_store
    set_store({"cdtest": {HUB: {"Username": "hubuser", "Secret": "hubpass"}}})
    creds = resolve("docker.io", config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path)
    assert (creds.username, creds.password, creds.registry) == ("hubuser", "hubpass", "docker.io")
    assert calls()[0]["input"] == HUB
    assert decode(creds.header())["serveraddress"] == HUB


def test_cred_helpers_beat_creds_store(docker_config, helper_store, helper_path):
    set_store, calls = helper_store
    set_store({"cdtest": {REG: {"Username": "from-store", "Secret": "x"}},
               "other": {REG: {"Username": "from-helper", "Secret": "y"}}})
    config_dir = docker_config({"credsStore": "cdtest", "credHelpers": {REG: "other"}})
    creds = resolve(REG, config_dir=config_dir, path=helper_path)
    assert creds.username == "from-helper"
    assert creds.source == "credential helper docker-credential-other"
    assert [c["helper"] for c in calls()] == ["other"]


def test_cred_helpers_key_normalised(docker_config, helper_store, helper_path):
    set_store, _ = helper_store
    set_store({"cdtest": {REG: {"Username": "ci", "Secret": "s3cret"}}})
    config_dir = docker_config({"credHelpers": {"https://127.0.0.1:5000/v1/": "cdtest"}})
    assert resolve(REG, config_dir=config_dir, path=helper_path).username == "ci"


def test_empty_cred_helper_means_use_auths(docker_config, helper_store, helper_path):
    set_store, calls = helper_store
    config_dir = docker_config({"credsStore": "cdtest", "credHelpers": {REG: ""},
                                "auths": {REG: {"auth": b64("file:pass")}}})
    creds = resolve(REG, config_dir=config_dir, path=helper_path)
    assert (creds.username, creds.source) == ("file", "config.json auths")
    assert calls() == []


def test_helper_not_found_is_anonymous_even_with_auths(docker_config, helper_store, helper_path):
    # the CLI: with a store configured, its answer is final; auths entries are only markers
    set_store, calls = helper_store
    config_dir = docker_config({"credsStore": "cdtest", "auths": {REG: {"auth": b64("file:pass")}}})
    creds = resolve(REG, config_dir=config_dir, path=helper_path)
    assert creds.anonymous and creds.source == "none (anonymous)"
    assert creds.header() == "e30="
    assert len(calls()) == 1


def test_helper_token_username_means_identity_token(docker_config, helper_store, helper_path):
    set_store, _ = helper_store
    set_store({"cdtest": {REG: {"Username": "<token>", "Secret": "refresh-tok"}}})
    creds = resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path)
    assert (creds.username, creds.password, creds.identity_token) == (None, None, "refresh-tok")
    assert decode(creds.header()) == {"serveraddress": REG, "identitytoken": "refresh-tok"}


def test_helper_store_then_get_round_trip(helper_store, docker_config, helper_path):
    # the executable speaks the whole protocol: what `store` keeps, `get` returns
    subprocess.run([str(BIN / "docker-credential-cdtest"), "store"], check=True,
                   input=json.dumps({"ServerURL": REG, "Username": "ci", "Secret": "s3cret"}).encode())
    creds = resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path)
    assert (creds.username, creds.password) == ("ci", "s3cret")


@pytest.mark.parametrize("entry,words", [
    ({"exit": 3, "stdout": "", "stderr": "keychain locked"}, "failed (exit 3): keychain locked"),
    ({"exit": 1, "stdout": "error getting credentials - dbus unreachable"}, "dbus unreachable"),
    ({"exit": 1, "stdout": "credentials not found"}, "failed (exit 1)"),  # not the exact message: an error
    ({"raw": "this is not json " + CANARY}, "not JSON"),
    ({"raw": "[1, 2]"}, "not an object"),
    ({"raw": '{"Username": 1, "Secret": "x"}'}, "not strings"),
])
def test_failing_helper_is_an_error_naming_helper_and_registry(docker_config, helper_store, helper_path,
                                                                entry, words):
    set_store, _ = helper_store
    set_store({"cdtest": {REG: entry}})
    with pytest.raises(CredentialsError) as info:
        resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path)
    message = str(info.value)
    assert "docker-credential-cdtest" in message and REG in message
    assert words in message
    assert CANARY not in message


def test_missing_helper_is_an_error(docker_config, helper_path):
    config_dir = docker_config({"credsStore": "nosuch"})
    with pytest.raises(CredentialsError) as info:
        resolve(REG, config_dir=config_dir, path=helper_path)
    message = str(info.value)
    assert "docker-credential-nosuch not found on PATH" in message and REG in message
    assert os.path.join(config_dir, "config.json") in message


def test_helper_name_is_not_a_path(docker_config, helper_path):
    with pytest.raises(CredentialsError, match="not a helper name"):
        resolve(REG, config_dir=docker_config({"credsStore": "../../bin/sh"}), path=helper_path)


def test_helper_that_hangs_is_an_error(docker_config, helper_path):
    def hangs(argv, stdin, timeout):
        raise subprocess.TimeoutExpired(argv, timeout)

    with pytest.raises(CredentialsError, match="docker-credential-cdtest for 127.0.0.1:5000: no answer within 7s"):
        resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path,
                run_helper=hangs, helper_timeout=7)


def test_helper_that_cannot_run_is_an_error(docker_config, tmp_path):
    broken = tmp_path / "docker-credential-broken"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    with pytest.raises(CredentialsError, match="docker-credential-broken for 127.0.0.1:5000: cannot run it"):
        resolve(REG, config_dir=docker_config({"credsStore": "broken"}), path=str(tmp_path))


def test_run_helper_is_given_argv_stdin_and_timeout(docker_config, helper_path):
    seen = []

    def fake(argv, stdin, timeout):
        seen.append((argv, stdin, timeout))
        return auth.HelperOutput(0, b'{"ServerURL": "x", "Username": "u", "Secret": "p"}', b"")

    creds = resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path,
                    run_helper=fake, helper_timeout=5)
    assert creds.password == "p"
    (argv, stdin, timeout), = seen
    assert argv == [str(BIN / "docker-credential-cdtest"), "get"]
    assert (stdin, timeout) == (REG.encode(), 5)


# --- headers ------------------------------------------------------------------------------------


def test_anonymous_header_is_base64url_of_empty_object():
    creds = Credentials(registry=REG, source="none (anonymous)")
    assert creds.header() == "e30="
    assert base64.urlsafe_b64decode("e30=") == b"{}"


def test_header_is_base64url_with_padding_of_the_exact_json():
    password = "pa>>ss??word"
    creds = Credentials(registry=REG, source="test", username="ci", password=password)
    expected = b'{"username":"ci","password":"pa>>ss??word","serveraddress":"127.0.0.1:5000"}'
    standard = base64.b64encode(expected).decode()
    # the test means something only if standard base64 has both characters base64url changes
    assert "+" in standard and "/" in standard and standard.endswith("=")
    header = creds.header()
    assert "+" not in header and "/" not in header
    assert "-" in header and "_" in header
    assert header.endswith("=") and len(header) % 4 == 0
    assert base64.urlsafe_b64decode(header) == expected
    assert header == standard.replace("+", "-").replace("/", "_")


def test_header_for_docker_hub_names_the_index_server():
    creds = resolve("docker.io", username="hubuser", password="hubpass")
    assert decode(creds.header()) == {"username": "hubuser", "password": "hubpass", "serveraddress": HUB}


def test_header_non_ascii_password_round_trips():
    creds = resolve(REG, username="ci", password="p\u00e4ss\u20ac")
    assert decode(creds.header())["password"] == "p\u00e4ss\u20ac"


def test_registry_config_header(docker_config):
    config_dir = docker_config({"auths": {HUB: {"auth": b64("hubuser:hubpass")},
                                          REG: {"auth": b64("ci:s3cret")}}})
    header = registry_config_header(["docker.io", REG, "other.example:5000", "index.docker.io"],
                                    config_dir=config_dir)
    assert "+" not in header and "/" not in header
    assert decode(header) == {
        HUB: {"username": "hubuser", "password": "hubpass", "serveraddress": HUB},
        REG: {"username": "ci", "password": "s3cret", "serveraddress": REG},
    }


def test_registry_config_header_anonymous_is_empty_object(docker_config):
    assert registry_config_header([REG], config_dir=docker_config({})) == "e30="
    assert registry_config_header([]) == "e30="


def test_registry_config_header_propagates_errors(docker_config):
    with pytest.raises(CredentialsError):
        registry_config_header([REG], config_dir=docker_config("{"))


# --- reading passwords --------------------------------------------------------------------------


@pytest.mark.parametrize("raw,expected", [
    (b"s3cret\n", "s3cret"),
    (b"s3cret", "s3cret"),
    (b"s3cret\r\n", "s3cret"),
    (b"s3cret\n\n", "s3cret\n"),
    (b"  s3cret  \n", "  s3cret  "),
    (b"\ts3cret\n", "\ts3cret"),
    ("p\u00e4ss\n".encode(), "p\u00e4ss"),
])
def test_read_password_file_strips_one_newline_only(tmp_path, raw, expected):
    path = tmp_path / "pw"
    path.write_bytes(raw)
    assert read_password_file(path) == expected
    assert read_password_stdin(io.BytesIO(raw)) == expected
    assert read_password_stdin(io.StringIO(raw.decode())) == expected


@pytest.mark.parametrize("raw", [b"", b"\n", b"\r\n"])
def test_empty_password_is_a_usage_error(tmp_path, raw):
    path = tmp_path / "pw"
    path.write_bytes(raw)
    with pytest.raises(UsageError, match="password is empty"):
        read_password_file(path)
    with pytest.raises(UsageError, match="--password-stdin: the password is empty"):
        read_password_stdin(io.BytesIO(raw))


def test_missing_password_file_names_it(tmp_path):
    with pytest.raises(UsageError, match=r"cannot read password file .*nope: No such file"):
        read_password_file(tmp_path / "nope")


def test_password_file_not_utf8(tmp_path):
    path = tmp_path / "pw"
    path.write_bytes(b"\xff\xfe" + CANARY.encode())
    with pytest.raises(UsageError, match="not UTF-8") as info:
        read_password_file(path)
    assert CANARY not in str(info.value)


# --- the secret never shows ---------------------------------------------------------------------


def leak_forms(secret: str, username: str = "ci") -> List[str]:
    raw = secret.encode()
    pair = f"{username}:{secret}".encode()
    forms = [secret]
    for data in (raw, pair):
        forms.append(base64.b64encode(data).decode())
        forms.append(base64.urlsafe_b64encode(data).decode())
        forms.append(base64.b64encode(data).decode().rstrip("="))
    return forms


def assert_no_leak(text: str, secret: str) -> None:
    for form in leak_forms(secret):
        assert form not in text, f"secret form {form!r} leaked in {text!r}"


def exception_text(exc: BaseException) -> str:
    """Everything a user could see of an exception: str, repr, args and the whole chained traceback."""
    parts = [str(exc), repr(exc), repr(exc.args)]
    parts.extend(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join(parts)


def failure_scenarios(docker_config, helper_store, helper_path, tmp_path):
    """Each returns a callable that must raise a cdtools error while the canary is around."""
    set_store, _ = helper_store
    enc = b64(f"ci:{CANARY}")

    def config(content):
        return lambda: resolve(REG, config_dir=docker_config(content), path=helper_path)

    def helper(entry):
        def run():
            set_store({"cdtest": {REG: entry}})
            return resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path)
        return run

    pwfile = tmp_path / "pw-bad"
    pwfile.write_bytes(b"\xff" + CANARY.encode())
    return [
        config('{"auths": {"%s": {"auth": "%s"' % (REG, enc)),                 # truncated JSON holding it
        config('{"auths": {"%s": {"auth": "%s"}}, }' % (REG, enc)),             # trailing comma
        config({"auths": {REG: {"auth": enc[:-2] + "!!"}}}),                    # bad base64 of it
        config({"auths": {REG: {"auth": b64("nocolon" + CANARY)}}}),
        config({"auths": {REG: {"auth": enc, "password": 5}}}),
        config({"auths": {REG: {"auth": enc}, "x": {"identitytoken": [CANARY]}}}),
        helper({"raw": '{"Username": "ci", "Secret": "%s"' % CANARY}),          # truncated helper JSON
        helper({"raw": CANARY}),
        helper({"raw": json.dumps([{"Secret": CANARY}])}),
        helper({"raw": json.dumps({"Username": ["ci"], "Secret": CANARY})}),
        lambda: resolve(REG, env={"CDTOOLS_REGISTRY_PASSWORD": CANARY}),
        lambda: resolve(REG, password=CANARY, password_source="--password-stdin"),
        lambda: read_password_file(pwfile),
        lambda: registry_config_header([REG], config_dir=docker_config({"auths": {REG: {"auth": enc + "%"}}})),
    ]


def test_canary_never_in_any_exception(docker_config, helper_store, helper_path, tmp_path):
    scenarios = failure_scenarios(docker_config, helper_store, helper_path, tmp_path)
    for scenario in scenarios:
        with pytest.raises(CdtoolsError) as info:
            scenario()
        assert_no_leak(exception_text(info.value), CANARY)


def test_canary_never_in_repr_or_str(docker_config, helper_store, helper_path):
    set_store, _ = helper_store
    set_store({"cdtest": {REG: {"Username": "<token>", "Secret": CANARY}}})
    found = [
        resolve(REG, username="ci", password=CANARY, password_source="--password-stdin"),
        resolve(REG, env={"CDTOOLS_REGISTRY_USERNAME": "ci", "CDTOOLS_REGISTRY_PASSWORD": CANARY}),
        resolve(REG, config_dir=docker_config({"auths": {REG: {"auth": b64(f"ci:{CANARY}")}}})),
        resolve(REG, config_dir=docker_config({"auths": {REG: {"auth": b64("ci:"), "identitytoken": CANARY}}})),
        resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path),
    ]
    for creds in found:
        assert CANARY in (creds.password, creds.identity_token)  # it was found ...
        shown = "\n".join([repr(creds), str(creds), f"{creds}", f"{creds!r}", creds.source, repr([creds])])
        assert_no_leak(shown, CANARY)                          # ... and is never shown
        assert "<hidden>" in repr(creds)
        assert decode(creds.header()).get("password", decode(creds.header()).get("identitytoken")) == CANARY


def test_failed_helper_output_is_not_echoed_when_it_may_hold_the_secret(docker_config, helper_store,
                                                                        helper_path):
    # exit 0 with unparsable output: the output could be credentials, so it is never shown
    set_store, _ = helper_store
    set_store({"cdtest": {REG: {"raw": "Username=ci Secret=" + CANARY}}})
    with pytest.raises(CredentialsError) as info:
        resolve(REG, config_dir=docker_config({"credsStore": "cdtest"}), path=helper_path)
    assert_no_leak(exception_text(info.value), CANARY)
    assert "bytes" in str(info.value)


# --- small pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize("key,host", [
    ("https://index.docker.io/v1/", "index.docker.io"),
    ("http://127.0.0.1:5000", "127.0.0.1:5000"),
    ("127.0.0.1:5000/v2/", "127.0.0.1:5000"),
    ("https://user@reg.example:443/path", "reg.example:443"),
    ("reg.example", "reg.example"),
    ("[::1]:5000", "[::1]:5000"),
])
def test_convert_to_hostname(key, host):
    assert auth.convert_to_hostname(key) == host


@pytest.mark.parametrize("registry,address", [
    ("docker.io", HUB), ("index.docker.io", HUB), (HUB, HUB), ("http://index.docker.io/v1", HUB),
    (REG, REG), ("https://127.0.0.1:5000/v1/", REG), ("localhost:5000", "localhost:5000"),
])
def test_server_address(registry, address):
    assert auth.server_address(registry) == address


@pytest.mark.parametrize("env,expected", [
    ({"DOCKER_CONFIG": "/cfg", "HOME": "/home/u"}, "/cfg"),
    ({"DOCKER_CONFIG": "", "HOME": "/home/u"}, os.path.join("/home/u", ".docker")),
    ({"HOME": "/home/u"}, os.path.join("/home/u", ".docker")),
    ({}, None),
])
def test_config_dir_for(env, expected):
    assert auth.config_dir_for(env) == expected


def test_empty_registry_is_refused():
    with pytest.raises(UsageError, match="no registry"):
        resolve("")



# --- the real daemon decodes what we send -------------------------------------------------------
# A pull of a tag that does not exist creates nothing, and the daemon's answer tells the three
# cases apart: authenticated ("manifest unknown"), wrong password ("unauthorized"), and no
# credentials at all ("no basic auth credentials"; also what an undecodable header becomes).


def daemon_pull_answer(engine_api, registry, header: str) -> str:
    query = urlencode({"fromImage": f"{registry.host}/cdtools-auth-probe", "tag": "absent"})
    resp = engine_api.request("POST", f"/images/create?{query}", headers={"X-Registry-Auth": header})
    return f"{resp.status} {resp.body.decode('utf-8', 'replace')}"


@pytest.mark.e2e
def test_real_daemon_accepts_credentials_from_every_source(engine_api, registry, docker_config,
                                                           helper_store, helper_path):
    set_store, _ = helper_store
    set_store({"cdtest": {registry.host: {"Username": registry.user, "Secret": registry.password}}})
    found = [
        resolve(registry.host, username=registry.user, password=registry.password,
                password_source="--password-stdin"),
        resolve(registry.host, env={"CDTOOLS_REGISTRY_USERNAME": registry.user,
                                    "CDTOOLS_REGISTRY_PASSWORD": registry.password}),
        resolve(registry.host, config_dir=docker_config({"auths": {
            f"http://{registry.host}/v1/": {"auth": b64(f"{registry.user}:{registry.password}")}}})),
        resolve(registry.host, config_dir=docker_config({"credHelpers": {registry.host: "cdtest"}}),
                path=helper_path),
    ]
    for creds in found:
        answer = daemon_pull_answer(engine_api, registry, creds.header())
        assert "manifest unknown" in answer, (creds.source, answer)


@pytest.mark.e2e
def test_real_daemon_decodes_a_base64url_password_and_refuses_it(engine_api, registry):
    # standard base64 of this header has '+' and '/'; Go's base64url decoder fails on them and the
    # daemon quietly goes anonymous.  "unauthorized" (not "no basic auth credentials") proves the
    # daemon decoded our header and tried this password.
    creds = resolve(registry.host, username=registry.user, password="pa>>ss??word")
    standard = base64.b64encode(base64.urlsafe_b64decode(creds.header())).decode()
    assert "+" in standard and "/" in standard
    answer = daemon_pull_answer(engine_api, registry, creds.header())
    assert "unauthorized" in answer and "no basic auth credentials" not in answer, answer


@pytest.mark.e2e
def test_real_daemon_anonymous(engine_api, registry):
    answer = daemon_pull_answer(engine_api, registry, resolve(registry.host).header())
    assert "no basic auth credentials" in answer, answer
