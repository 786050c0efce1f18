"""``python -m cdtools.build``: pack a context, build it with the classic builder.

The context is streamed to ``POST /build`` while it is being packed (no temp
file); the image id comes from the stream's ``aux.ID`` record, never from the
log text.  Any ``error``/``errorDetail`` record fails the step.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from . import cli, context, reference
from .console import Console, LayerProgress
from .engine import Engine
from .errors import APIError, BuildError, StreamError, UsageError
from .settings import Settings

PROG = "cdtools build"


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tags: Sequence[str]
    #: bytes sent to the daemon (after compression)
    sent_bytes: int
    compressed: bool
    #: what the context held, for the log: "full context" or the pruning note
    context_note: str


class _Counter:
    """Counts the bytes of a body as it is sent."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.total = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.total += len(chunk)
            yield chunk


def normalise_tags(tags: Iterable[str]) -> List[str]:
    """Full references for ``t=``: parsed (bad ones refused before any request), ``:latest`` added."""
    out = []
    for text in tags:
        ref = reference.parse(text)
        if ref.digest:
            raise UsageError(f"tag {text!r}: a build can't be tagged with a digest")
        out.append(str(ref if ref.tag else ref.with_tag("latest")))
    return out


def run(engine: Engine, context_dir: str, *, console: Console, dockerfile: Optional[str] = None,
        tags: Sequence[str] = (), build_args: Optional[Mapping[str, str]] = None,
        labels: Optional[Mapping[str, str]] = None, target: Optional[str] = None, pull: bool = False,
        no_cache: bool = False, compress: Optional[bool] = None, full_context: bool = False,
        registry_config: Optional[str] = None) -> BuildResult:
    """Build ``context_dir``; returns the image id and the tags the daemon applied."""
    full_tags = normalise_tags(tags)
    plan = context.plan_context(context_dir, dockerfile, prune=not full_context,
                                build_args=dict(build_args or {}), target=target, warn=console.line)
    gzip = (not engine.endpoint.is_local) if compress is None else compress
    note = plan.pruned_reason or plan.full_reason or "full context"
    console.step(f"build {context_dir} ({note}{', gzip' if gzip else ''}) on {engine.endpoint}")
    body = _Counter(context.stream_context(plan, compress=gzip))
    layers = LayerProgress(console)
    image_id = ""
    try:
        for record in engine.build(body, tags=full_tags, dockerfile=plan.dockerfile, buildargs=build_args,
                                   labels=labels, target=target, pull=pull, nocache=no_cache, gzip=gzip,
                                   registry_config=registry_config):
            if "stream" in record:
                console.text(str(record["stream"]))
            elif "aux" in record and isinstance(record["aux"], dict) and record["aux"].get("ID"):
                image_id = str(record["aux"]["ID"])
            elif "status" in record:
                layers.feed(record)
    except StreamError as exc:
        raise BuildError(f"build failed: {exc.message}") from None
    except APIError as exc:
        raise BuildError(f"build refused by the daemon ({exc.status}): {exc.message}") from None
    if not image_id:
        # Since API 1.30 the classic builder always ends with an aux.ID record; a stream
        # that ends without one was cut short, and a tag lookup could find an older image.
        if engine.api_version_at_least("1.30") or not full_tags:
            raise BuildError("the build stream ended without an image id: the build did not finish")
        image_id = str(engine.inspect_image(full_tags[0]).get("Id", ""))
        if not image_id:
            raise BuildError("the build stream ended without an image id")
    console.line(f"built {image_id}" + (f" as {', '.join(full_tags)}" if full_tags else ""))
    return BuildResult(image_id=image_id, tags=tuple(full_tags), sent_bytes=body.total, compressed=gzip,
                       context_note=note)


def build_args_from(items: Optional[List[str]], settings: Settings) -> Dict[str, str]:
    """``--build-arg K=V``; a bare ``K`` takes K's value from the environment, as docker does."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"--build-arg {item!r}: expected KEY=VALUE or KEY")
        if not sep:
            env_value = settings.lookup(key)
            if env_value is None:
                continue  # docker skips an unset bare build arg
            value = env_value
        out[key] = value
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("context", help="the build context directory")
    p.add_argument("-f", "--file", dest="dockerfile", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("-t", "--tag", dest="tags", action="append", default=[], metavar="NAME[:TAG]",
                   help="name and tag the image (repeatable)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="build-time variable")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="image label")
    p.add_argument("--target", help="build stage to stop at")
    p.add_argument("--pull", action="store_true", help="always try to pull newer base images")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--iidfile", help="write the image id to this file")
    z = p.add_mutually_exclusive_group()
    z.add_argument("--compress", dest="compress", action="store_true", default=None,
                   help="gzip the context (default: only for tcp/ssh daemons)")
    z.add_argument("--no-compress", dest="compress", action="store_false", help="never gzip the context")
    p.add_argument("--full-context", action="store_true",
                   help="send the whole context, not only what the Dockerfile's COPY/ADD can read")


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Build an image from a context directory with the classic builder.")
    add_arguments(p)
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        console = cli.console_for(args)
        engine = cli.engine_for(args, settings)
        result = run(engine, args.context, console=console, dockerfile=args.dockerfile, tags=args.tags,
                     build_args=build_args_from(args.build_arg, settings),
                     labels=cli.key_values(args.label, "--label"), target=args.target, pull=args.pull,
                     no_cache=args.no_cache, compress=args.compress, full_context=args.full_context)
        if args.iidfile:
            cli.write_result(args.iidfile, result.image_id)
        if args.quiet:
            print(result.image_id)
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
