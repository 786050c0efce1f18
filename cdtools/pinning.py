"""Pinning an image tag to the digest its registry holds now.

Services and several-host rollouts must run the same bytes on every node or
host, whatever the tag points to later: both ask the daemon's ``/distribution``
endpoint (as the docker CLI does) and run ``repo:tag@sha256:…``.
"""
from __future__ import annotations

from .engine import Engine
from .errors import APIError, CdtoolsError
from .reference import Reference


def registry_digest(engine: Engine, ref: Reference, auth_header: str, *, unchanged: str) -> str:
    """The registry's digest for ``ref``; CdtoolsError (exit 1: nothing was changed; ending in ``unchanged``) when it can't say."""
    try:
        doc = engine.distribution(str(ref), auth_header)
    except APIError as exc:
        raise CdtoolsError(f"could not ask {ref.registry} for the digest of {ref}: {exc.message}; {unchanged}") from None
    digest = str((doc.get("Descriptor") or {}).get("digest") or "")
    if not digest:
        raise CdtoolsError(f"{ref.registry} named no digest for {ref}; {unchanged}")
    return digest
