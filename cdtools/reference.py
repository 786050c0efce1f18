"""Image references: Docker's grammar, Docker's normalisation, reasons for rejection.

The behaviour follows distribution's ``reference`` package (``regexp.go``,
``normalize.go``: ``ParseNormalizedNamed``), which is what ``docker tag`` and
``docker push`` use.  A reference is::

    [DOMAIN/]PATH[:TAG][@DIGEST]

- DOMAIN is the first ``/``-separated component when it contains ``.`` or
  ``:``, is ``localhost``, or has an uppercase letter (path components never
  do); otherwise the reference is on Docker Hub (``docker.io``), and a
  one-component path gets ``library/`` in front: ``busybox`` is
  ``docker.io/library/busybox``.  ``index.docker.io`` is Docker Hub too.
- PATH components are lowercase letters and digits, joined by ``.``, ``_``,
  ``__`` or any run of ``-``; at most 255 characters in all (the domain is not
  counted, as in distribution since 2024).
- TAG is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``.
- DIGEST is ``algorithm:hex``; sha256, sha384 and sha512 are known, with
  exactly 64, 96 or 128 lowercase hex digits.

Everything is checked here, before any request, and a rejection names the
part that is wrong (Docker itself mostly answers "invalid reference format").
Python's ``\\w``, ``\\d`` and ``$`` are not Go's: they match non-ASCII letters
and digits and a trailing newline, so the patterns spell out ASCII classes
and are used with ``fullmatch``.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, replace
from typing import List, Mapping, Optional, Tuple

from .errors import InvalidReference, UsageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
LOCALHOST = "localhost"
#: longest repository path (distribution's RepositoryNameTotalLengthMax)
NAME_TOTAL_LENGTH_MAX = 255
TAG_LENGTH_MAX = 128

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME

_REFERENCE_RE = re.compile(r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?")
_ANCHORED_NAME_RE = re.compile(r"(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")")
_DOMAIN_RE = re.compile(_DOMAIN_AND_PORT)
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
_REMOTE_NAME_RE = re.compile(_REMOTE_NAME)
_TAG_RE = re.compile(_TAG)
_DIGEST_RE = re.compile(_DIGEST)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
#: algorithm -> hex digits, the algorithms Docker registers (go-digest)
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+")

_TAG_RULE = ("up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'")
_PATH_RULE = ("lowercase letters and digits, separated by '.', '_', '__' or '-'")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference; build one with :func:`parse`.

    ``domain`` is the registry host (``docker.io`` for Docker Hub), ``path`` the
    repository inside it (``library/busybox`` for an official image).
    """

    domain: str
    path: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    def __post_init__(self) -> None:
        # Built directly by other modules too: keep every instance valid, so
        # str() always gives something the daemon accepts.
        shown = f"{self.domain}/{self.path}"
        if not _DOMAIN_RE.fullmatch(self.domain):
            raise _invalid(shown, f"registry host {self.domain!r} is not a valid host[:port]")
        if not _REMOTE_NAME_RE.fullmatch(self.path):
            raise _invalid(shown, f"repository path {self.path!r} is not valid: {_PATH_RULE}")
        if len(self.path) > NAME_TOTAL_LENGTH_MAX:
            raise _invalid(shown, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
        if self.domain == DEFAULT_DOMAIN and "/" not in self.path:
            raise _invalid(shown, f"a Docker Hub path needs its namespace: {OFFICIAL_REPO_PREFIX}{self.path}")
        if self.tag is not None and not _TAG_RE.fullmatch(self.tag):
            raise _invalid(shown, _tag_reason(self.tag))
        if self.digest is not None:
            reason = _digest_reason(self.digest)
            if reason:
                raise _invalid(shown, reason)

    @property
    def name(self) -> str:
        """Fully qualified name without tag or digest: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        """The familiar name the Engine API takes: ``busybox``, ``team/app``, ``127.0.0.1:5000/team/app``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_REPO_PREFIX):
            rest = self.path[len(OFFICIAL_REPO_PREFIX):]
            # "library/a/b" keeps its prefix: only one-component official names are shortened
            if "/" not in rest:
                return rest
        return self.path

    @property
    def registry(self) -> str:
        """The registry whose credentials apply: the domain (``docker.io`` for Docker Hub)."""
        return self.domain

    def with_tag(self, tag: str) -> "Reference":
        """The same repository with ``tag`` and no digest (what ``docker tag`` names)."""
        return replace(self, tag=parse_tag(tag), digest=None)

    def with_digest(self, digest: str) -> "Reference":
        """The same repository pinned to ``digest`` (``name@sha256:…``), without a tag."""
        reason = _digest_reason(digest)
        if reason:
            raise _invalid(f"{self.repository}@{digest}", reason)
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text


def parse(text: str) -> Reference:
    """Parse ``text`` like ``docker push`` does (``ParseNormalizedNamed``).

    Raises :class:`~cdtools.errors.InvalidReference` whose message is
    ``invalid reference 'TEXT': REASON``; the exception also carries
    ``.reference`` and ``.reason``.
    """
    if not isinstance(text, str):
        raise _invalid(repr(text), "a reference must be a string")
    if text == "":
        raise _invalid(text, "repository name must have at least one component")
    if _IDENTIFIER_RE.fullmatch(text):
        raise _invalid(text, "a 64-character hexadecimal string is an image ID, not a repository name")
    domain, remainder = _split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise _invalid(text, "repository name must be lowercase")
    match = _REFERENCE_RE.fullmatch(domain + "/" + remainder)
    if match is None:
        raise _invalid(text, _diagnose(domain, remainder))
    name, tag, digest = match.group(1), match.group(2), match.group(3)
    name_match = _ANCHORED_NAME_RE.fullmatch(name)
    assert name_match is not None  # name matched the same pattern inside _REFERENCE_RE
    found_domain, path = name_match.group(1), name_match.group(2)
    if found_domain is None:
        # e.g. "a_b.example/app": split off as a domain, but only valid read as
        # a path.  distribution then returns a name with no domain at all, which
        # names no registry; refuse it.
        raise _invalid(text, f"registry host {domain!r} is not a valid host[:port]")
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(text, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest is not None:
        reason = _digest_reason(digest)
        if reason:
            raise _invalid(text, reason)
    return Reference(found_domain, path, tag, digest)


def parse_tag(text: str) -> str:
    """Return ``text`` if it is a valid tag, else raise InvalidReference saying why."""
    if not isinstance(text, str) or not _TAG_RE.fullmatch(text):
        err = InvalidReference(f"invalid tag {text!r}: {_tag_reason(text)}")
        err.reference = text  # type: ignore[attr-defined]
        err.reason = _tag_reason(text)  # type: ignore[attr-defined]
        raise err
    return text


def sanitize_tag(text: str) -> str:
    """Make a tag out of free text such as a branch name (``feature/Login`` -> ``feature-Login``).

    Characters a tag can't hold become ``-``; leading ``.``/``-`` are dropped;
    the result is cut to 128 characters.  May return ``''``: the caller decides.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text).lstrip(".-")
    return cleaned[:TAG_LENGTH_MAX]


def expand_template(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{key}`` fields of a tag template and check the result is a valid reference.

    ``expand_template('{registry}/{name}:{build_number}', {...})``.  An unknown
    or empty key is a UsageError naming it; format specs, conversions and
    attribute/index lookups are refused (a template is not Python code).
    ``{{`` and ``}}`` stand for literal braces.
    """
    pieces: List[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"tag template {template!r}: {exc}") from None
    known = ", ".join("{" + k + "}" for k in sorted(values)) or "none"
    for literal, field_name, format_spec, conversion in parsed:
        pieces.append(literal)
        if field_name is None:
            continue
        if field_name == "":
            raise UsageError(f"tag template {template!r}: empty field {{}}; known keys: {known}")
        if format_spec or conversion:
            raise UsageError(f"tag template {template!r}: field {{{field_name}}} may not have a "
                             f"format spec or conversion")
        if field_name not in values:
            raise UsageError(f"tag template {template!r}: unknown key {{{field_name}}}; known keys: {known}")
        value = str(values[field_name])
        if value == "":
            raise UsageError(f"tag template {template!r}: {{{field_name}}} is empty")
        pieces.append(value)
    result = "".join(pieces)
    try:
        parse(result)
    except InvalidReference as exc:
        reason = getattr(exc, "reason", str(exc))
        err = InvalidReference(f"tag template {template!r} gave {result!r}: {reason}")
        err.reference = result  # type: ignore[attr-defined]
        err.reason = reason  # type: ignore[attr-defined]
        raise err from None
    return result


# --- internals ---------------------------------------------------------------------------------


def _invalid(text: str, reason: str) -> InvalidReference:
    err = InvalidReference(f"invalid reference {text!r}: {reason}")
    # for callers that rephrase (expand_template) or test the reason alone
    err.reference = text  # type: ignore[attr-defined]
    err.reason = reason  # type: ignore[attr-defined]
    return err


def _split_docker_domain(name: str) -> Tuple[str, str]:
    """(domain, remainder) as distribution's splitDockerDomain does."""
    first, sep, rest = name.partition("/")
    if not sep:
        # a single component ("busybox", "busybox:1", even "example.com") is on Docker Hub
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if first == LOCALHOST:
        domain, remainder = first, rest
    elif first == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif "." in first or ":" in first:
        domain, remainder = first, rest
    elif first.lower() != first:
        # path components are lowercase, so an uppercase first component must be a host
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def _diagnose(domain: str, remainder: str) -> str:
    """Say which part of a reference the grammar rejected (for the message only)."""
    if not _DOMAIN_RE.fullmatch(domain):
        return f"registry host {domain!r} is not a valid host[:port]"
    rest, at, digest = remainder.partition("@")
    slash = rest.rfind("/")
    colon = rest.find(":", slash + 1)
    path, tag = (rest[:colon], rest[colon + 1:]) if colon >= 0 else (rest, None)
    for component in path.split("/"):
        if component == "":
            return "empty path component (a doubled, leading or trailing '/')"
        if not _PATH_COMPONENT_RE.fullmatch(component):
            return f"path component {component!r} is not valid: {_PATH_RULE}"
    if tag is not None and not _TAG_RE.fullmatch(tag):
        return _tag_reason(tag)
    if at:
        return _digest_reason(digest) or "invalid reference format"
    return "invalid reference format"


def _tag_reason(tag: object) -> str:
    if tag == "":
        return "empty tag after ':'"
    if isinstance(tag, str) and len(tag) > TAG_LENGTH_MAX:
        return f"tag is {len(tag)} characters long; {_TAG_RULE}"
    return f"tag {tag!r} is not valid: {_TAG_RULE}"


def _digest_reason(digest: str) -> Optional[str]:
    """None when ``digest`` is one Docker accepts, else why not (go-digest's checks)."""
    if not _DIGEST_RE.fullmatch(digest):
        return f"digest {digest!r} is not valid: expected ALGORITHM:HEX, e.g. sha256:<64 hex digits>"
    algorithm, _, hex_part = digest.partition(":")
    size = _DIGEST_HEX_LENGTH.get(algorithm)
    if size is None:
        return f"unsupported digest algorithm {algorithm!r} (known: {', '.join(_DIGEST_HEX_LENGTH)})"
    if len(hex_part) != size:
        return f"invalid checksum digest length: {algorithm} has {size} hex digits, got {len(hex_part)}"
    if not _LOWER_HEX_RE.fullmatch(hex_part):
        return "invalid checksum digest format: hex digits must be lowercase"
    return None
