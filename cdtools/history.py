"""``python -m cdtools.history --name NAME``: what ran as NAME, newest first.

Read from the labels deploy puts on each container it creates (deployed-at,
image and image id, OCI revision/source, BUILD_URL, job).  The daemon keeps
``NAME`` and ``NAME-previous``; older ones are gone, so that is the history a
rollback can use.  A lock, if one is held, is listed too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from . import cli, lock, spec as spec_mod
from .console import Console
from .engine import Engine, connect
from .settings import Settings

PROG = "cdtools history"


@dataclass(frozen=True)
class Entry:
    name: str
    container_id: str
    state: str
    image: str
    image_id: str
    deployed_at: str
    revision: str
    source: str
    build_url: str
    job: str

    def as_dict(self) -> Dict[str, str]:
        return dict(self.__dict__)


def _entry(doc: Dict[str, Any]) -> Entry:
    cfg = doc.get("Config") or {}
    labels = cfg.get("Labels") or {}
    return Entry(
        name=str(doc.get("Name", "")).lstrip("/"),
        container_id=str(doc.get("Id", "")),
        state=str((doc.get("State") or {}).get("Status", "")),
        image=str(labels.get(spec_mod.LABEL_IMAGE) or cfg.get("Image") or ""),
        image_id=str(doc.get("Image", "")),
        deployed_at=str(labels.get(spec_mod.LABEL_DEPLOYED_AT) or str(doc.get("Created", ""))[:19] + " (created)"),
        revision=str(labels.get(spec_mod.OCI_REVISION, "")),
        source=str(labels.get(spec_mod.OCI_SOURCE, "")),
        build_url=str(labels.get(spec_mod.LABEL_BUILD_URL, "")),
        job=str(labels.get(spec_mod.LABEL_JOB, "")),
    )


def run(engine: Engine, name: str) -> List[Entry]:
    """NAME, NAME-previous and any parked NAME-previous-*, newest deploy first."""
    docs: Dict[str, Dict[str, Any]] = {}
    for summary in engine.containers(all=True, filters={"label": [f"{spec_mod.LABEL_NAME}={name}"]}):
        docs[summary["Id"]] = engine.inspect_container(summary["Id"])
    for candidate in (name, name + "-previous"):
        doc = engine.find_container(candidate)
        if doc is not None:
            docs[doc["Id"]] = doc
    entries = [_entry(doc) for doc in docs.values()]
    return sorted(entries, key=lambda e: e.deployed_at, reverse=True)


def print_entries(entries: List[Entry], console: Console) -> None:
    for e in entries:
        console.line(f"{e.deployed_at}  {e.name}  {e.state}  {e.image} ({e.image_id.replace('sha256:', '')[:12]})")
        details = [f"revision {e.revision}" if e.revision else "", f"source {e.source}" if e.source else "",
                   f"build {e.build_url}" if e.build_url else "", f"job {e.job}" if e.job else ""]
        details = [d for d in details if d]
        if details:
            console.line("    " + ", ".join(details))


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.parser(PROG, "Show what was deployed as NAME (from the labels deploy writes).")
    p.add_argument("--name", required=True)
    p.add_argument("--deploy-host", metavar="HOST", help="daemon (overrides -H)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)

    def work(settings: Settings) -> int:
        engine = connect(settings, host=args.deploy_host or args.host, timeout=args.timeout)
        entries = run(engine, args.name)
        console = cli.console_for(args)
        if args.json:
            print(json.dumps([e.as_dict() for e in entries], indent=2))
        elif not entries:
            console.line(f"nothing deployed as {args.name}")
        else:
            print_entries(entries, console)
        held = engine.find_container(lock.lock_name(args.name))
        if held is not None and not args.json:
            console.line(f"lock {lock.lock_name(args.name)} held by {lock.describe(held)}")
        return 0

    return cli.run(PROG, work)


if __name__ == "__main__":
    raise SystemExit(main())
