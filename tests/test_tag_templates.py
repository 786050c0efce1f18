"""Tag templates: one build named many ways from Jenkins' variables, checked before any request."""
from __future__ import annotations

import pytest

from cdtools import tag
from cdtools.reference import parse
from cdtools.settings import from_env

JENKINS = {"BUILD_NUMBER": "41", "GIT_COMMIT": "fedcba9876543210fedcba9876543210fedcba98",
           "GIT_BRANCH": "origin/feature/Login", "JOB_NAME": "team/app"}


def test_templates_expand_from_jenkins_variables_and_the_source():
    settings = from_env(JENKINS)
    repo = parse("127.0.0.1:5000/team/app")
    got = tag.expand_templates(["{registry}/{name}:{build_number}", "{repository}:{git_commit}",
                                "{repository}:{branch}-{build_number}", "{repository}:{job_name}"], settings, repo)
    assert got == ["127.0.0.1:5000/team/app:41", "127.0.0.1:5000/team/app:fedcba9",
                   "127.0.0.1:5000/team/app:feature-Login-41", "127.0.0.1:5000/team/app:team-app"]


def test_an_unset_variable_is_refused_naming_the_key():
    with pytest.raises(Exception) as info:
        tag.expand_templates(["{repository}:{build_number}"], from_env({}), parse("app"))
    assert "{build_number} is empty" in str(info.value)


def test_an_unknown_key_is_refused_with_the_known_ones():
    with pytest.raises(Exception) as info:
        tag.expand_templates(["{repository}:{buildnumber}"], from_env(JENKINS), parse("app"))
    assert "unknown key {buildnumber}" in str(info.value) and "{build_number}" in str(info.value)


@pytest.fixture
def daemon(httpserver, monkeypatch):
    httpserver.expect_request("/_ping").respond_with_data("OK", headers={"Api-Version": "1.41"})
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{httpserver.port}")
    for key, value in JENKINS.items():
        monkeypatch.setenv(key, value)
    return httpserver


def test_tag_step_sends_one_request_per_expanded_name(daemon):
    daemon.expect_request("/v1.41/images/127.0.0.1:5000/team/app:1/tag", method="POST").respond_with_data(
        "", status=201)
    assert tag.main(["127.0.0.1:5000/team/app:1", "--tag-template", "{registry}/{name}:{build_number}",
                     "--tag-template", "{repository}:{git_commit}"]) == 0
    sent = [(r.args["repo"], r.args["tag"]) for r, _ in daemon.log if r.path.endswith("/tag")]
    assert sent == [("127.0.0.1:5000/team/app", "41"), ("127.0.0.1:5000/team/app", "fedcba9")]


def test_a_template_giving_a_bad_reference_fails_before_any_tag_request(daemon, capsys):
    assert tag.main(["127.0.0.1:5000/team/app:1", "--tag-template", "{repository}:{branch}/x"]) == 2
    assert "tag template" in capsys.readouterr().err
    assert not [r for r, _ in daemon.log if r.path.endswith("/tag")]
