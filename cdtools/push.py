"""``python -m cdtools.push NAME:TAG […]``: push to a registry, and prove it landed.

The daemon answers a push with HTTP 200 and reports "denied" or
"unauthorized" inside the stream; :mod:`cdtools.jsonstream` turns that into an
error.  A stream that ends without a digest is a failure too: the registry
never confirmed the manifest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

from . import cli, reference
from .auth import Credentials
from .console import Console, LayerProgress
from .engine import Engine
from .errors import APIError, PushError, StreamError, TransportError
from .reference import Reference
from .settings import Settings

PROG = "cdtools push"

# "1: digest: sha256:… size: 943", sent when the daemon sends no aux record
_DIGEST_LINE = re.compile(r"^(?P<tag>\S+): digest: (?P<digest>sha256:[0-9a-f]{64}) size: (?P<size>\d+)$")


@dataclass(frozen=True)
class PushResult:
    reference: str
    digest: str
    #: repository@digest, what the deploy step should run
    pinned: str


def run(engine: Engine, ref: Reference, credentials: Credentials, *, console: Console) -> PushResult:
    """Push one tag; returns its digest."""
    if ref.digest:
        raise PushError(f"{ref}: push a tag, not a digest")
    tag = ref.tag or "latest"
    target = ref if ref.tag else ref.with_tag(tag)
    console.step(f"push {target} to {ref.registry} (credentials: {credentials.source})")
    layers = LayerProgress(console)
    digest = ""
    try:
        for record in engine.push(ref.repository, tag, credentials.header()):
            aux = record.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
                continue
            match = _DIGEST_LINE.match(str(record.get("status") or ""))
            if match and not digest:
                digest = match.group("digest")
            layers.feed(record)
    except StreamError as exc:
        raise PushError(f"push of {target} to {ref.registry} failed: {exc.message}") from None
    except APIError as exc:
        raise PushError(f"push of {target} to {ref.registry} refused ({exc.status}): {exc.message}") from None
    except TransportError as exc:
        raise TransportError(f"push of {target} to {ref.registry}: {exc}") from None
    if not digest:
        raise PushError(f"push of {target} to {ref.registry} ended without a digest: the registry never confirmed it")
    pinned = f"{ref.repository}@{digest}"
    console.line(f"pushed {target} {digest}")
    return PushResult(reference=str(target), digest=digest, pinned=pinned)


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Push image tags to their registry, with credentials and a digest check.")
    p.add_argument("images", nargs="+", metavar="NAME:TAG", help="image tag(s) to push")
    p.add_argument("--digest-file", metavar="FILE", help="write NAME@sha256:… of the (last) push here")
    cli.add_credential_args(p)
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        refs = [reference.parse(text) for text in args.images]  # all refused before any request
        console = cli.console_for(args)
        engine = cli.engine_for(args, settings)
        creds_by_registry = {}
        result = None
        for ref in refs:
            if ref.registry not in creds_by_registry:
                creds_by_registry[ref.registry] = cli.credentials_for(args, settings, ref.registry)
            result = run(engine, ref, creds_by_registry[ref.registry], console=console)
            if args.quiet:
                print(result.pinned)
        if args.digest_file and result is not None:
            cli.write_result(args.digest_file, result.pinned + "\n")
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
