"""``python -m cdtools.release``: build → tag → push → deploy, from one config file.

The image deployed is the one just built, pinned by the digest the registry
confirmed (``repo@sha256:…``), never by a tag someone else may move.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlencode

from . import build as build_step
from . import cli, config, context, reference
from . import deploy as deploy_step
from . import push as push_step
from . import tag as tag_step
from .console import Console
from .engine import Engine, connect
from .errors import UsageError
from .report import Report, jenkins_properties
from .settings import Settings

PROG = "cdtools release"
STEPS = ("build", "tag", "push", "deploy")


@dataclass
class ReleaseResult:
    image_id: str = ""
    tags: List[str] = field(default_factory=list)
    digest: str = ""
    pinned: str = ""


def oci_labels(settings: Settings) -> Dict[str, str]:
    """OCI labels from Jenkins' job context (only those that are set)."""
    labels = {
        "org.opencontainers.image.revision": settings.git_commit,
        "org.opencontainers.image.source": settings.git_url,
        "org.opencontainers.image.version": settings.build_number,
        "io.jenkins.build-url": settings.build_url,
        "io.jenkins.job-name": settings.job_name,
    }
    return {k: v for k, v in labels.items() if v}


def _options(args: argparse.Namespace, settings: Settings) -> Dict[str, Any]:
    """The config file, with flags laid over it."""
    cfg: Dict[str, Any] = {}
    base = os.getcwd()
    path = args.config
    if path is None and os.path.exists("cdtools.json"):
        path = "cdtools.json"
    if path is not None:
        cfg, base = config.load(path, settings.lookup, sections={"deploy": deploy_step.CONFIG_KEYS})
    build = dict(cfg.get("build") or {})
    out = {
        "image": args.image or cfg.get("image"),
        "tags": args.tags or cfg.get("tags") or config.default_tags(settings.build_number, settings.git_commit),
        "tag_templates": args.tag_template or cfg.get("tag_templates") or [],
        "host": args.host or cfg.get("host"),
        "context": args.context or config.relative(base, build.get("context")) or base,
        "dockerfile": args.dockerfile or config.relative(base, build.get("dockerfile")),
        "build_args": {**(build.get("args") or {}), **build_step.build_args_from(args.build_arg, settings)},
        "labels": {**oci_labels(settings), **(build.get("labels") or {}), **cli.key_values(args.label, "--label")},
        "target": args.target or build.get("target"),
        "pull": args.pull or bool(build.get("pull")),
        "no_cache": args.no_cache or bool(build.get("no_cache")),
        "full_context": args.full_context or bool(build.get("full_context")),
        "compress": args.compress if args.compress is not None else build.get("compress"),
        "push": not args.no_push and (cfg.get("push") or {}).get("enabled", True) is not False,
        "deploy": cfg.get("deploy"),
        "deploy_base": base,
    }
    push_cfg = cfg.get("push") or {}
    if push_cfg.get("username_env") and args.username_env == "CDTOOLS_REGISTRY_USERNAME":
        args.username_env = push_cfg["username_env"]
    if push_cfg.get("password_env") and args.password_env == "CDTOOLS_REGISTRY_PASSWORD":
        args.password_env = push_cfg["password_env"]
    if args.no_deploy:
        out["deploy"] = None
    elif not out["push"] and out["deploy"] is not None:
        # a deploy runs the digest the registry confirmed; with no push there is none
        out["deploy"] = None
        out["deploy_skipped"] = "nothing was pushed, and a deploy runs the pushed digest"
    if not out["image"]:
        raise UsageError("no image: set \"image\" in the config or pass --image REGISTRY/NAME")
    return out


def _references(opts: Dict[str, Any], settings: Settings) -> Tuple[reference.Reference, List[str]]:
    """The repository, and the image's full names: each tag on it, then the tag templates; no duplicates."""
    repo = reference.parse(opts["image"])
    if repo.tag or repo.digest:
        raise UsageError(f"image {opts['image']!r}: give the repository without a tag; tags come from \"tags\"")
    refs = [str(repo.with_tag(reference.parse_tag(t))) for t in opts["tags"]]
    refs += tag_step.expand_templates(opts["tag_templates"], settings, repo)
    return repo, list(dict.fromkeys(refs))


def run(engine: Engine, opts: Dict[str, Any], args: argparse.Namespace, settings: Settings, *,
        console: Console, report: Report) -> ReleaseResult:
    repo, refs = _references(opts, settings)
    # every registry's credentials before the build: a missing password fails in seconds, not after it
    credentials = {}
    if opts["push"]:
        for ref_text in refs:
            registry = reference.parse(ref_text).registry
            if registry not in credentials:
                credentials[registry] = cli.credentials_for(args, settings, registry)
    result = ReleaseResult(tags=refs)
    # a FROM image on the push registry gets the push credentials; others, config.json's
    base_credentials = build_step.config_credentials(settings)

    with report.step("build") as rec:
        built = build_step.run(engine, opts["context"], console=console, dockerfile=opts["dockerfile"],
                               tags=refs[:1], build_args=opts["build_args"], labels=opts["labels"],
                               target=opts["target"], pull=opts["pull"], no_cache=opts["no_cache"],
                               compress=opts["compress"], full_context=opts["full_context"],
                               credentials=lambda r: credentials.get(r) or base_credentials(r))
        result.image_id = rec.image_id = built.image_id
        rec.tags = refs[:1]

    with report.step("tag") as rec:
        # tag the id just built, not a name another job could have moved meanwhile
        tag_step.run(engine, built.image_id, refs, console=console)
        rec.image_id = built.image_id
        rec.tags = list(refs)

    if opts["push"]:
        with report.step("push") as rec:
            for ref_text in refs:
                ref = reference.parse(ref_text)
                pushed = push_step.run(engine, ref, credentials[ref.registry], console=console)
                if ref.repository == repo.repository and not result.pinned:
                    result.digest, result.pinned = pushed.digest, pushed.pinned
            rec.digest = result.digest
            rec.tags = list(refs)
    else:
        report.skip("push", "push disabled")

    if opts["deploy"] is not None:
        image = result.pinned or built.image_id
        with report.step("deploy") as rec:
            deployed = deploy_step.run_from_config(settings, opts["deploy"], image=image, base=opts["deploy_base"],
                                                   default_host=opts["host"],
                                                   credentials=credentials.get(repo.registry),
                                                   console=console, timeout=args.timeout)
            rec.container = deployed.container
            rec.image_id = built.image_id
            rec.digest = result.digest
    else:
        why = opts.get("deploy_skipped") or "no deploy section, or --no-deploy"
        report.skip("deploy", why)
        if opts.get("deploy_skipped"):
            console.line(f"deploy skipped: {why}")
    return result


def rehearse(engine: Engine, opts: Dict[str, Any], args: argparse.Namespace, settings: Settings, *,
             console: Console, report: Report) -> ReleaseResult:
    """Print every request the release would make, secrets redacted; change nothing.

    Only read-only requests reach the daemon (ping, inspect), to say what is there now.
    """
    repo, refs = _references(opts, settings)
    prefix = f"/v{engine.api_version}"
    console.line(f"dry run on {engine.endpoint} (API {engine.api_version}): nothing will be changed")

    with report.step("build") as rec:
        plan = context.plan_context(opts["context"], opts["dockerfile"], prune=not opts["full_context"],
                                    build_args=dict(opts["build_args"]), target=opts["target"], warn=console.line,
                                    inspect_image=None if opts["pull"] else build_step.base_image_lookup(engine))
        gzip = build_step.wants_gzip(engine, opts["compress"])
        query = [("t", refs[0]), ("dockerfile", plan.dockerfile)]
        if opts["target"]:
            query.append(("target", opts["target"]))
        console.line(f"POST {prefix}/build?{urlencode(query)}")
        console.line(f"  body: tar of {len(plan.entries)} entries from {plan.root}"
                     f" ({plan.pruned_reason or plan.full_reason or 'full context'}){', gzip' if gzip else ''}")
        if opts["build_args"]:
            console.line(f"  build args: {', '.join(sorted(opts['build_args']))}")
        if opts["labels"]:
            console.line(f"  labels: {json.dumps(opts['labels'], sort_keys=True)}")
        rec.tags = refs[:1]
        rec.message = "rehearsed"

    with report.step("tag") as rec:
        for ref_text in refs:
            ref = reference.parse(ref_text)
            console.line(f"POST {prefix}/images/<id of the build>/tag?{urlencode({'repo': ref.repository, 'tag': ref.tag})}")
        rec.tags = list(refs)
        rec.message = "rehearsed"

    if opts["push"]:
        with report.step("push") as rec:
            for ref_text in refs:
                ref = reference.parse(ref_text)
                credentials = cli.credentials_for(args, settings, ref.registry)
                console.line(f"POST {prefix}/images/{ref.repository}/push?{urlencode({'tag': ref.tag})}")
                console.line(f"  X-Registry-Auth: <redacted> (credentials: {credentials.source})")
            rec.tags = list(refs)
            rec.message = "rehearsed"
    else:
        report.skip("push", "push disabled")

    if opts["deploy"] is not None:
        with report.step("deploy") as rec:
            image = f"{repo.repository}@<digest of the push>" if opts["push"] else "<id of the build>"
            console.line(f"deploy {image} (the plan below shows what runs now; the image is the one being built)")
            planned = deploy_step.run_from_config(settings, opts["deploy"], image=refs[0], base=opts["deploy_base"],
                                                  default_host=opts["host"], credentials=None, console=console,
                                                  timeout=args.timeout, dry_run=True)
            rec.container = planned.container
            rec.message = "rehearsed"
    else:
        why = opts.get("deploy_skipped") or "no deploy section, or --no-deploy"
        report.skip("deploy", why)
        if opts.get("deploy_skipped"):
            console.line(f"deploy skipped: {why}")
    return ReleaseResult(tags=refs)


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Build, tag, push and deploy an image, from cdtools.json and flags.")
    p.add_argument("--config", "-c", metavar="FILE", help="release config (default: ./cdtools.json if present)")
    p.add_argument("--image", help="repository to push to (overrides the config)")
    p.add_argument("--tag", "-t", dest="tags", action="append", default=[], metavar="TAG",
                   help="tag to give the image (repeatable; default: BUILD_NUMBER, GIT_COMMIT[:7], latest)")
    p.add_argument("--tag-template", action="append", default=[], metavar="TEMPLATE",
                   help="more names from Jenkins' variables, e.g. '{registry}/{name}:{branch}-{build_number}' "
                        "(see cdtools.tag --help for the keys; repeatable)")
    p.add_argument("--context", help="build context (overrides the config)")
    p.add_argument("-f", "--file", dest="dockerfile", help="Dockerfile (overrides the config)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--target")
    p.add_argument("--pull", action="store_true")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--full-context", action="store_true")
    z = p.add_mutually_exclusive_group()
    z.add_argument("--compress", dest="compress", action="store_true", default=None)
    z.add_argument("--no-compress", dest="compress", action="store_false")
    p.add_argument("--no-push", action="store_true", help="build and tag only (no push, so no deploy)")
    p.add_argument("--no-deploy", action="store_true", help="stop after the push")
    p.add_argument("--dry-run", action="store_true",
                   help="print every request the release would make (secrets redacted) and change nothing")
    p.add_argument("--report", metavar="FILE", help="write a JSON report of every step")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (one test case per step)")
    cli.add_credential_args(p)
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        console = cli.console_for(args)
        report = Report("release", properties=jenkins_properties(settings))
        try:
            opts = _options(args, settings)
            engine = connect(settings, host=opts["host"], timeout=args.timeout)
            step = rehearse if args.dry_run else run
            result = step(engine, opts, args, settings, console=console, report=report)
        finally:
            report.skip_rest(STEPS)
            report.write(json_path=args.report, junit_path=args.junit)
        if args.dry_run:
            console.line("dry run: nothing was changed")
        else:
            console.line(f"released {result.pinned or result.image_id} as {', '.join(result.tags)}")
        if args.quiet:
            print(result.pinned or result.image_id)
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
