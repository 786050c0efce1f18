"""``python -m cdtools.prune --name NAME --keep N``: remove old images of NAME's repository.

Keeps the N newest images of the repository NAME runs, and never removes one
that any container uses (NAME, NAME-previous, a deploy lock, anything else).
Every removal failure is a warning: cleanup never fails a deploy or a job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import cli, reference, spec as spec_mod
from .console import Console
from .engine import Engine, connect
from .errors import CdtoolsError, UsageError
from .settings import Settings

PROG = "cdtools prune"


@dataclass
class PruneResult:
    repository: str
    removed: List[str] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def repository_of(engine: Engine, name: str) -> str:
    doc = engine.find_container(name)
    if doc is None:
        raise UsageError(f"there is no container named {name} (give --repository)")
    cfg = doc.get("Config") or {}
    text = str((cfg.get("Labels") or {}).get(spec_mod.LABEL_IMAGE) or cfg.get("Image") or "")
    try:
        return reference.parse(text).repository
    except CdtoolsError:
        raise UsageError(f"{name} runs {text!r}, which names no repository (give --repository)") from None


def _in_repo(tag: str, repository: str) -> bool:
    try:
        return reference.parse(tag).repository == repository
    except CdtoolsError:
        return False


def run(engine: Engine, name: Optional[str], *, keep: int, console: Console, repository: Optional[str] = None,
        dry_run: bool = False) -> PruneResult:
    if keep < 0:
        raise UsageError("--keep must be 0 or more")
    if repository is None:
        if not name:
            raise UsageError("give --name or --repository")
        repository = repository_of(engine, name)
    result = PruneResult(repository=repository)
    used = {str(c.get("ImageID") or "") for c in engine.containers(all=True)}
    images: List[Dict[str, Any]] = []
    for img in engine.images():
        refs = [t for t in (img.get("RepoTags") or []) if _in_repo(t, repository)]
        if not refs:
            refs = [d for d in (img.get("RepoDigests") or []) if d.rsplit("@", 1)[0] == repository]
        if refs:
            images.append({"Id": img["Id"], "Created": img.get("Created", 0), "refs": refs})
    images.sort(key=lambda i: i["Created"], reverse=True)
    for position, img in enumerate(images):
        short = img["Id"].replace("sha256:", "")[:12]
        if position < keep or img["Id"] in used:
            why = "in use by a container" if img["Id"] in used else f"one of the {keep} newest"
            result.kept.append(img["Id"])
            console.line(f"keep {short} {', '.join(img['refs'])} ({why})")
            continue
        for ref in img["refs"]:
            if dry_run:
                console.line(f"would remove {ref} ({short})")
                continue
            try:
                engine.remove_image(ref)
                result.removed.append(ref)
                console.line(f"removed {ref} ({short})")
            except CdtoolsError as exc:
                warning = f"could not remove {ref}: {exc}"
                result.warnings.append(warning)
                console.line(f"warning: {warning}")
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Remove old images of a deployed container's repository (failures are warnings).")
    p.add_argument("--name", help="container whose repository to prune")
    p.add_argument("--repository", help="the repository, when there is no container to tell it")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="newest images to keep")
    p.add_argument("--deploy-host", metavar="HOST", help="daemon (overrides -H)")
    p.add_argument("--dry-run", action="store_true", help="say what would go")
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        engine = connect(settings, host=args.deploy_host or args.host, timeout=args.timeout)
        run(engine, args.name, keep=args.keep, console=cli.console_for(args), repository=args.repository,
            dry_run=args.dry_run)
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
