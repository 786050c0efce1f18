"""Image references: distribution's grammar and normalisation, and the reasons given for rejection."""
from __future__ import annotations

import pytest

from cdtools.errors import InvalidReference, UsageError
from cdtools.reference import Reference, expand_template, parse, parse_tag, sanitize_tag

SHA = "sha256:" + "0123456789abcdef" * 4

# text -> (domain, path, tag, digest, repository, str)
VALID = [
    ("busybox", ("docker.io", "library/busybox", None, None, "busybox", "busybox")),
    ("busybox:latest", ("docker.io", "library/busybox", "latest", None, "busybox", "busybox:latest")),
    ("busybox:LATEST", ("docker.io", "library/busybox", "LATEST", None, "busybox", "busybox:LATEST")),
    ("docker.io/busybox", ("docker.io", "library/busybox", None, None, "busybox", "busybox")),
    ("docker.io/library/busybox:1.36", ("docker.io", "library/busybox", "1.36", None, "busybox", "busybox:1.36")),
    ("index.docker.io/busybox", ("docker.io", "library/busybox", None, None, "busybox", "busybox")),
    ("index.docker.io/team/app:1", ("docker.io", "team/app", "1", None, "team/app", "team/app:1")),
    ("team/app", ("docker.io", "team/app", None, None, "team/app", "team/app")),
    ("docker.io/library/a/b", ("docker.io", "library/a/b", None, None, "library/a/b", "library/a/b")),
    ("127.0.0.1:5000/team/app:1",
     ("127.0.0.1:5000", "team/app", "1", None, "127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:1")),
    ("127.0.0.1:5000/app", ("127.0.0.1:5000", "app", None, None, "127.0.0.1:5000/app", "127.0.0.1:5000/app")),
    ("localhost/app", ("localhost", "app", None, None, "localhost/app", "localhost/app")),
    ("localhost:5000/app:v2", ("localhost:5000", "app", "v2", None, "localhost:5000/app", "localhost:5000/app:v2")),
    ("registry.example.com/a/b/c:v1.2.3",
     ("registry.example.com", "a/b/c", "v1.2.3", None, "registry.example.com/a/b/c",
      "registry.example.com/a/b/c:v1.2.3")),
    ("my-registry:5000/x", ("my-registry:5000", "x", None, None, "my-registry:5000/x", "my-registry:5000/x")),
    ("[::1]:5000/app", ("[::1]:5000", "app", None, None, "[::1]:5000/app", "[::1]:5000/app")),
    # a single component is always on Docker Hub, even when it looks like a host or host:port
    ("example.com", ("docker.io", "library/example.com", None, None, "example.com", "example.com")),
    ("foo:5000", ("docker.io", "library/foo", "5000", None, "foo", "foo:5000")),
    # an uppercase first component can't be a path, so it is a host (distribution#2979)
    ("Registry/app", ("Registry", "app", None, None, "Registry/app", "Registry/app")),
    ("a/b__c/d-e/f---g.h:tag_1.0-x",
     ("docker.io", "a/b__c/d-e/f---g.h", "tag_1.0-x", None, "a/b__c/d-e/f---g.h", "a/b__c/d-e/f---g.h:tag_1.0-x")),
    ("busybox@" + SHA, ("docker.io", "library/busybox", None, SHA, "busybox", "busybox@" + SHA)),
    ("127.0.0.1:5000/app:1@" + SHA,
     ("127.0.0.1:5000", "app", "1", SHA, "127.0.0.1:5000/app", "127.0.0.1:5000/app:1@" + SHA)),
    ("busybox@sha512:" + "a" * 128,
     ("docker.io", "library/busybox", None, "sha512:" + "a" * 128, "busybox", "busybox@sha512:" + "a" * 128)),
    ("busybox:_" + "a" * 127, ("docker.io", "library/busybox", "_" + "a" * 127, None, "busybox",
                               "busybox:_" + "a" * 127)),
    ("localhost/" + "a" * 255, ("localhost", "a" * 255, None, None, "localhost/" + "a" * 255,
                                "localhost/" + "a" * 255)),
]


@pytest.mark.parametrize("text,expected", VALID, ids=[t[:40] for t, _ in VALID])
def test_valid_references(text, expected):
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest, ref.repository, str(ref)) == expected
    assert ref.registry == expected[0]
    # the familiar form parses back to the same reference
    assert parse(str(ref)) == ref


# text -> words the reason must contain
INVALID = [
    ("", "at least one component"),
    ("Busybox", "must be lowercase"),
    ("team/App", "must be lowercase"),
    ("localhost:5000/App:1", "must be lowercase"),
    ("docker.io/Team/app", "must be lowercase"),
    ("0123456789abcdef" * 4, "image ID"),
    ("busybox:", "empty tag"),
    ("busybox:-x", "tag '-x' is not valid"),
    ("busybox:.x", "tag '.x' is not valid"),
    ("busybox:" + "a" * 129, "129 characters"),
    ("busybox:t\u00e5g", "tag 't\u00e5g' is not valid"),
    ("busybox:\u0661\u0662", "is not valid"),  # Arabic digits: Python's \d/\w would take them, Go's doesn't
    ("-busybox", "path component '-busybox'"),
    ("busybox-", "path component 'busybox-'"),
    ("busy___box", "path component 'busy___box'"),
    ("busy..box", "path component 'busy..box'"),
    ("caf\u00e9", "path component"),
    ("busybox\n", "path component"),
    (" busybox", "path component"),
    ("a//b", "empty path component"),
    ("team/app/", "empty path component"),
    ("/app", "empty path component"),
    ("busybox:a/b", "registry host 'busybox:a'"),
    ("-host.example/app", "registry host '-host.example'"),
    ("host.example:port/app", "registry host 'host.example:port'"),
    # splits off as a host but only reads as a path: no registry at all, refused
    ("a_b.example/app", "registry host 'a_b.example'"),
    ("localhost/" + "a" * 256, "not be more than 255 characters"),
    ("busybox@sha256:abc", "digest 'sha256:abc' is not valid"),
    ("busybox@" + SHA.upper().replace("SHA", "sha"), "hex digits must be lowercase"),
    ("busybox@sha256:" + "a" * 63, "digest length"),
    ("busybox@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
    ("busybox@", "digest '' is not valid"),
    ("busybox@" + SHA + "@" + SHA, "is not valid"),
    ("busybox:1:2", "tag '1:2' is not valid"),
]


@pytest.mark.parametrize("text,reason", INVALID, ids=[repr(t[:40]) for t, _ in INVALID])
def test_invalid_references_say_why(text, reason):
    with pytest.raises(InvalidReference) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"invalid reference {text!r}: "), message
    assert reason in message
    assert reason in info.value.reason
    assert info.value.exit_code == 2 and isinstance(info.value, UsageError)


def test_invalid_reference_message_is_one_line():
    with pytest.raises(InvalidReference) as info:
        parse("busybox\n:x")
    assert "\n" not in str(info.value)


def test_familiar_name_is_what_the_engine_api_takes():
    assert parse("docker.io/library/busybox").repository == "busybox"
    assert parse("docker.io/team/app").repository == "team/app"
    assert parse("127.0.0.1:5000/team/app").repository == "127.0.0.1:5000/team/app"
    assert parse("busybox").name == "docker.io/library/busybox"


def test_with_tag_replaces_tag_and_drops_digest():
    ref = parse("127.0.0.1:5000/team/app:1@" + SHA)
    tagged = ref.with_tag("2")
    assert str(tagged) == "127.0.0.1:5000/team/app:2"
    assert ref.tag == "1"  # frozen: the original is unchanged
    with pytest.raises(InvalidReference, match="tag 'a/b' is not valid"):
        ref.with_tag("a/b")


def test_with_digest_pins_and_drops_tag():
    ref = parse("127.0.0.1:5000/team/app:1")
    assert str(ref.with_digest(SHA)) == "127.0.0.1:5000/team/app@" + SHA
    with pytest.raises(InvalidReference, match="digest length"):
        ref.with_digest("sha256:" + "a" * 10 + "b" * 30)


@pytest.mark.parametrize("tag", ["1", "latest", "v1.2.3-rc.1", "_x", "A" * 128, "build_42"])
def test_parse_tag_accepts(tag):
    assert parse_tag(tag) == tag


@pytest.mark.parametrize("tag,reason", [
    ("", "empty tag"), ("-1", "not valid"), (".x", "not valid"), ("a/b", "not valid"),
    ("a:b", "not valid"), ("a" * 129, "129 characters"), ("t\u00e5g", "not valid"), ("x\n", "not valid"),
])
def test_parse_tag_rejects(tag, reason):
    with pytest.raises(InvalidReference) as info:
        parse_tag(tag)
    assert str(info.value).startswith(f"invalid tag {tag!r}: ")
    assert reason in str(info.value)


def test_reference_built_directly_is_checked():
    assert str(Reference("127.0.0.1:5000", "team/app", "1")) == "127.0.0.1:5000/team/app:1"
    with pytest.raises(InvalidReference, match="repository path 'Team/app'"):
        Reference("127.0.0.1:5000", "Team/app")
    with pytest.raises(InvalidReference, match="registry host 'bad host'"):
        Reference("bad host", "app")
    with pytest.raises(InvalidReference, match="library/busybox"):
        Reference("docker.io", "busybox")
    with pytest.raises(InvalidReference, match="tag"):
        Reference("localhost", "app", "-bad")
    with pytest.raises(InvalidReference, match="unsupported digest algorithm"):
        Reference("localhost", "app", None, "md5:" + "a" * 32)


VALUES = {"registry": "127.0.0.1:5000", "name": "team/app", "build_number": "42", "commit": "1a2b3c4"}


@pytest.mark.parametrize("template,expected", [
    ("{registry}/{name}:{build_number}", "127.0.0.1:5000/team/app:42"),
    ("{registry}/{name}:{commit}", "127.0.0.1:5000/team/app:1a2b3c4"),
    ("{registry}/{name}:b{build_number}-{commit}", "127.0.0.1:5000/team/app:b42-1a2b3c4"),
    ("{name}:latest", "team/app:latest"),
])
def test_expand_template(template, expected):
    assert expand_template(template, VALUES) == expected


def test_expand_template_unknown_key_is_named_with_known_ones():
    with pytest.raises(UsageError) as info:
        expand_template("{registry}/{nmae}:{build_number}", VALUES)
    message = str(info.value)
    assert "unknown key {nmae}" in message
    assert "{build_number}" in message and "{registry}" in message
    assert not isinstance(info.value, InvalidReference)


@pytest.mark.parametrize("template,words", [
    ("{registry}/{name}:{build_number:>5}", "format spec"),
    ("{registry}/{name}:{build_number!r}", "conversion"),
    ("{registry}/{name}:{}", "empty field"),
    ("{registry}/{name}:{build_number", "expected '}'"),
    ("{registry}/{name}:x}", "Single '}'"),
    ("{registry}/{name.upper}:1", "unknown key {name.upper}"),
])
def test_expand_template_refuses_python_format_features(template, words):
    with pytest.raises(UsageError) as info:
        expand_template(template, VALUES)
    assert words in str(info.value)
    assert template in str(info.value)


def test_expand_template_empty_value_is_named():
    with pytest.raises(UsageError, match=r"\{build_number\} is empty"):
        expand_template("{registry}/{name}:{build_number}", dict(VALUES, build_number=""))


def test_expand_template_checks_the_result():
    # a branch name with '/' makes an invalid tag: refused, naming template, result and reason
    with pytest.raises(InvalidReference) as info:
        expand_template("{registry}/{name}:{branch}", dict(VALUES, branch="feature/x"))
    message = str(info.value)
    assert "'{registry}/{name}:{branch}'" in message
    assert "'127.0.0.1:5000/team/app:feature/x'" in message
    assert "path component" in message or "not valid" in message


@pytest.mark.parametrize("text,expected", [
    ("main", "main"),
    ("feature/Login", "feature-Login"),
    ("origin/release/1.2", "origin-release-1.2"),
    ("-x", "x"),
    ("..hidden", "hidden"),
    ("f\u00fcr", "f-r"),
    ("a" * 200, "a" * 128),
    ("///", ""),
])
def test_sanitize_tag(text, expected):
    result = sanitize_tag(text)
    assert result == expected
    if result:
        assert parse_tag(result) == result
