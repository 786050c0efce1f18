"""``python -m cdtools.build``: pack a context, build it with the classic builder.

The context is streamed to ``POST /build`` while it is being packed (no temp
file); the image id comes from the stream's ``aux.ID`` record, never from the
log text.  Any ``error``/``errorDetail`` record fails the step.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from . import auth, cli, context, dockerfile as dockerfile_mod, reference
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


def base_registries(data: bytes, build_args: Mapping[str, str]) -> List[str]:
    """The registries the Dockerfile's FROM images come from (for X-Registry-Config).

    Stage names, ``scratch`` and images whose name can't be resolved from the
    global ARGs and build args are left out: the daemon then pulls anonymously,
    as it would have without the header.
    """
    parsed = dockerfile_mod.parse(data)
    args: Dict[str, str] = {}
    stages = set()
    registries: List[str] = []
    seen_from = False
    for ins in parsed.instructions:
        if ins.cmd == "arg" and not seen_from:
            for word in ins.args:
                key, sep, default = word.partition("=")
                value = build_args.get(key, default if sep else None)
                if value is not None:
                    args[key] = value
        elif ins.cmd == "from" and ins.args:
            seen_from = True
            try:
                image = dockerfile_mod.expand_word(ins.args[0], args, parsed.escape)
            except ValueError:
                continue
            if len(ins.args) >= 3 and ins.args[1].lower() == "as":
                stages.add(ins.args[2].lower())
            if image.lower() in stages or image == "scratch":
                continue
            try:
                registry = reference.parse(image).registry
            except UsageError:
                continue
            if registry not in registries:
                registries.append(registry)
    return registries


def registry_config(data: bytes, build_args: Mapping[str, str],
                    credentials: Callable[[str], Optional[auth.Credentials]]) -> Optional[str]:
    """X-Registry-Config for the FROM images' registries, None when none has credentials."""
    configs = {}
    for registry in base_registries(data, build_args):
        creds = credentials(registry)
        if creds is not None and not creds.anonymous:
            configs[auth.server_address(registry)] = creds.auth_config()
    return auth.encode_header(configs) if configs else None


def wants_gzip(engine: Engine, compress: Optional[bool]) -> bool:
    """--compress/--no-compress, else gzip only for a remote (tcp, ssh) daemon: it pays there."""
    return (not engine.endpoint.is_local) if compress is None else compress


def base_image_lookup(engine: Engine) -> Callable[[str], Optional[dockerfile_mod.ImageConfig]]:
    """What the context planner may know of a base image on the daemon (ENV, ONBUILD).

    None when the daemon can't say (absent, or any refusal): the planner then sends
    the full context.  Not used with --pull: the image pulled may differ from the one there now.
    """

    def lookup(name: str) -> Optional[dockerfile_mod.ImageConfig]:
        try:
            return dockerfile_mod.ImageConfig.from_inspect(engine.inspect_image(name))
        except APIError:
            return None

    return lookup


def run(engine: Engine, context_dir: str, *, console: Console, dockerfile: Optional[str] = None,
        tags: Sequence[str] = (), build_args: Optional[Mapping[str, str]] = None,
        labels: Optional[Mapping[str, str]] = None, target: Optional[str] = None, pull: bool = False,
        no_cache: bool = False, compress: Optional[bool] = None, full_context: bool = False,
        credentials: Optional[Callable[[str], Optional[auth.Credentials]]] = None) -> BuildResult:
    """Build ``context_dir``; returns the image id and the tags the daemon applied.

    ``credentials(registry)`` gives what to send (X-Registry-Config) for the
    registries of private FROM images; by default none.
    """
    full_tags = normalise_tags(tags)
    plan = context.plan_context(context_dir, dockerfile, prune=not full_context,
                                build_args=dict(build_args or {}), target=target, warn=console.line,
                                inspect_image=None if pull else base_image_lookup(engine))
    gzip = wants_gzip(engine, compress)
    registry_header = None
    if credentials is not None:
        registry_header = registry_config(plan.dockerfile_data, build_args or {}, credentials)
    note = plan.pruned_reason or plan.full_reason or "full context"
    console.step(f"build {context_dir} ({note}{', gzip' if gzip else ''}) on {engine.endpoint}")
    body = _Counter(context.stream_context(plan, compress=gzip, warn=console.line))
    layers = LayerProgress(console)
    image_id = ""
    try:
        for record in engine.build(body, tags=full_tags, dockerfile=plan.dockerfile, buildargs=build_args,
                                   labels=labels, target=target, pull=pull, nocache=no_cache, gzip=gzip,
                                   registry_config=registry_header):
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


def config_credentials(settings: Settings) -> Callable[[str], Optional[auth.Credentials]]:
    """Base-image credentials from config.json only, as ``docker build`` sends them.

    The CDTOOLS_REGISTRY_* variables are meant for the push target: sending them
    for every FROM registry would hand a private password to Docker Hub.
    """

    def lookup(registry: str) -> Optional[auth.Credentials]:
        return auth.resolve(registry, config_dir=settings.docker_config, path=settings.path)

    return lookup


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
                     no_cache=args.no_cache, compress=args.compress, full_context=args.full_context,
                     credentials=config_credentials(settings))
        if args.iidfile:
            cli.write_result(args.iidfile, result.image_id)
        if args.quiet:
            print(result.image_id)
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
