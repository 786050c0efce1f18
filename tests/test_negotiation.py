"""API version negotiation against fake engines of every age cdtools may meet.

The fakes (tests/fakes.py ``engine_model``) answer ``/vX.Y`` requests outside
their range with 400 exactly as real daemons do, so a wrong prefix fails the
test the way it would fail a user.
"""
from __future__ import annotations

from typing import Dict

import pytest

import fakes
from cdtools import cli, engine as engine_mod, settings as settings_mod
from cdtools.errors import APIError, CdtoolsError


def connect(httpserver, **env: str) -> engine_mod.Engine:
    values: Dict[str, str] = {"DOCKER_HOST": f"tcp://127.0.0.1:{httpserver.port}", **env}
    return engine_mod.connect(settings_mod.from_env(values))


def sent_paths(httpserver) -> list:
    return [req.path for req, _ in httpserver.log]


@pytest.mark.parametrize("advertised, min_api, used", [
    ("1.24", "1.12", "1.24"),   # Docker 1.12: cdtools' floor, spoken as is
    ("1.41", "1.12", "1.41"),   # Debian's 20.10
    ("1.47", "1.24", "1.47"),   # Engine 27.x: the newest cdtools knows
    ("1.52", "1.44", "1.47"),   # Engine 29.0: newer than cdtools, and refuses /v1.41-/v1.43
])
def test_negotiated_version_is_the_prefix_of_every_request(httpserver, advertised, min_api, used):
    model = fakes.engine_model(httpserver, advertised, min_api=min_api)
    eng = connect(httpserver)
    doc = eng.version()
    assert doc["ApiVersion"] == advertised
    eng.version()
    assert eng.api_version == used
    # negotiated once, then every request carries the prefix
    assert sent_paths(httpserver) == ["/_ping", f"/v{used}/version", f"/v{used}/version"]
    assert model.paths == [f"/v{used}/version", f"/v{used}/version"]


def test_engine_29_refuses_a_pinned_1_41_with_its_own_words(httpserver):
    fakes.engine_model(httpserver, "1.52", min_api="1.44")
    eng = connect(httpserver, DOCKER_API_VERSION="1.41")
    with pytest.raises(APIError) as caught:
        eng.version()
    assert caught.value.status == 400
    assert str(caught.value) == ("daemon answered 400: client version 1.41 is too old. Minimum supported API "
                                 "version is 1.44, please upgrade your client to a newer version")
    # pinned: no /_ping at all
    assert sent_paths(httpserver) == ["/v1.41/version"]


def test_pinned_version_skips_negotiation(httpserver):
    fakes.engine_model(httpserver, "1.41")
    eng = connect(httpserver, DOCKER_API_VERSION="1.30")
    eng.version()
    assert sent_paths(httpserver) == ["/v1.30/version"]


def test_20_10_refuses_a_version_newer_than_it_knows(httpserver):
    fakes.engine_model(httpserver, "1.41")
    eng = connect(httpserver, DOCKER_API_VERSION="1.47")
    with pytest.raises(APIError, match=r"^daemon answered 400: client version 1.47 is too new. "
                                       r"Maximum supported API version is 1.41$"):
        eng.version()


def test_daemon_older_than_cdtools_minimum_is_a_clear_error(httpserver, capsys):
    fakes.engine_model(httpserver, "1.12")
    eng = connect(httpserver)
    with pytest.raises(CdtoolsError) as caught:
        eng.version()
    host = f"tcp://127.0.0.1:{httpserver.port}"
    assert str(caught.value) == f"the daemon at {host} speaks Engine API 1.12; cdtools needs 1.24 or newer"
    assert sent_paths(httpserver) == ["/_ping"]  # nothing sent at a version it can't speak

    code = cli.run("cdtools build", lambda settings: connect(httpserver).version() and 0)
    err = capsys.readouterr().err
    assert code != 0
    assert err == f"cdtools build: error: the daemon at {host} speaks Engine API 1.12; cdtools needs 1.24 or newer\n"


@pytest.mark.parametrize("version_doc, used", [
    ({"ApiVersion": "1.24", "Version": "1.12.6"}, "1.24"),
    # nothing says: assume the floor, as the docker CLI assumes 1.24
    ({"Version": "1.12.6"}, "1.24"),
])
def test_no_api_version_header_falls_back_to_version_document(httpserver, version_doc, used):
    fakes.engine_model(httpserver, "1.24", advertise=False, version_doc=version_doc)
    eng = connect(httpserver)
    assert eng.api_version == used
    assert sent_paths(httpserver) == ["/_ping", "/version"]
    eng.version()
    assert sent_paths(httpserver)[-1] == f"/v{used}/version"


def test_no_header_and_an_old_version_document_is_refused(httpserver):
    fakes.engine_model(httpserver, "1.23", advertise=False, version_doc={"ApiVersion": "1.23"})
    with pytest.raises(CdtoolsError, match="speaks Engine API 1.23; cdtools needs 1.24 or newer"):
        connect(httpserver).ping()


def test_no_header_and_a_broken_version_answer_is_one_line(httpserver):
    from werkzeug import Response

    httpserver.expect_request("/_ping").respond_with_data("OK")
    httpserver.expect_request("/version").respond_with_response(Response("<html>proxy error</html>", status=502))
    with pytest.raises(APIError, match=r"^daemon answered 502: <html>proxy error</html>$"):
        connect(httpserver).ping()


def test_no_header_and_non_json_version_is_one_line(httpserver):
    httpserver.expect_request("/_ping").respond_with_data("OK")
    httpserver.expect_request("/version").respond_with_data("hello", content_type="text/plain")
    with pytest.raises(CdtoolsError, match=r"does not look like a Docker daemon"):
        connect(httpserver).ping()


def test_garbage_api_version_header_is_not_blamed_on_the_user(httpserver):
    httpserver.expect_request("/_ping").respond_with_data("OK", headers={"Api-Version": "banana"})
    with pytest.raises(CdtoolsError) as caught:
        connect(httpserver).ping()
    assert "advertises API version 'banana'" in str(caught.value)
    assert caught.value.exit_code != 2  # not a usage error: the user did nothing wrong


def test_ping_refused_by_something_else_on_the_port(httpserver):
    from werkzeug import Response

    httpserver.expect_request("/_ping").respond_with_response(Response("not here", status=404))
    with pytest.raises(APIError, match="^daemon answered 404: not here$"):
        connect(httpserver).ping()


def test_bad_pinned_version_is_a_usage_error(httpserver):
    with pytest.raises(CdtoolsError) as caught:
        connect(httpserver, DOCKER_API_VERSION="one.forty")
    assert caught.value.exit_code == 2
    assert "one.forty" in str(caught.value)
