"""``python -m cdtools.tag SOURCE TARGET [TARGET …]``: docker tag, through the API."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from . import cli, reference
from .console import Console
from .engine import Engine
from .errors import APIError, CdtoolsError, UsageError
from .reference import Reference
from .settings import Settings

PROG = "cdtools tag"


@dataclass(frozen=True)
class TagResult:
    source: str
    targets: Sequence[str]


def template_values(settings: Settings, repo: Optional[Reference]) -> Dict[str, str]:
    """What a ``--tag-template`` can use: ``{registry}/{name}:{build_number}`` and friends.

    A key whose variable is not set here is empty, and a template naming it fails
    saying so (``{branch} is empty``); an unknown key fails with the known ones.
    """
    values = {
        "build_number": settings.build_number,
        "git_commit": settings.git_commit[:7],
        "git_commit_full": settings.git_commit,
        "branch": reference.sanitize_tag(settings.git_branch.split("origin/", 1)[-1]) if settings.git_branch else "",
        "job_name": reference.sanitize_tag(settings.job_name),
    }
    if repo is not None:
        values["registry"] = repo.domain
        values["name"] = repo.path
        values["repository"] = repo.repository
    return values


def expand_templates(templates: Sequence[str], settings: Settings, repo: Optional[Reference]) -> List[str]:
    """Every template expanded and checked, before any request."""
    values = template_values(settings, repo)
    return [reference.expand_template(t, values) for t in templates]


def run(engine: Engine, source: str, targets: Sequence[str], *, console: Console) -> TagResult:
    """Tag image ``source`` (a reference or an id) as each of ``targets``."""
    if not targets:
        raise UsageError("nothing to tag: give at least one TARGET")
    parsed = []
    for text in targets:
        ref = reference.parse(text)
        if ref.digest:
            raise UsageError(f"target {text!r}: a tag can't be a digest")
        parsed.append(ref if ref.tag else ref.with_tag("latest"))
    done = []
    for ref in parsed:
        try:
            engine.tag(source, ref.repository, ref.tag or "latest")
        except APIError as exc:
            raise CdtoolsError(f"tagging {source} as {ref} failed ({exc.status}): {exc.message}") from None
        console.line(f"tagged {source} as {ref}")
        done.append(str(ref))
    return TagResult(source=source, targets=tuple(done))


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Give an image more names (docker tag semantics).")
    p.add_argument("source", help="image reference or id")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="NAME[:TAG] to add")
    p.add_argument("--tag-template", action="append", default=[], metavar="TEMPLATE",
                   help="a target made from Jenkins' variables, e.g. '{registry}/{name}:{build_number}'; "
                        "keys: registry, name, repository (from SOURCE), build_number, git_commit (7 chars), "
                        "git_commit_full, branch, job_name (repeatable)")
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        targets = list(args.targets)
        if args.tag_template:
            try:
                source_ref: Optional[Reference] = reference.parse(args.source)
            except UsageError:
                source_ref = None  # an image id: only the Jenkins keys apply
            targets += expand_templates(args.tag_template, settings, source_ref)
        run(cli.engine_for(args, settings), args.source, targets, console=cli.console_for(args))
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
