"""The release config file (``cdtools.json``): load, expand ``${VAR}``, validate.

Every key is known; an unknown key is an error naming its path
(``deploy.helth_timeout``), so a typo never silently does nothing.  Strings
expand ``${VAR}`` from the environment (``$$`` is a literal ``$``); an unset
variable is an error naming it.  Relative paths are relative to the file.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .errors import UsageError

# key -> (type check, description); nested sections are dicts of the same
_Str = (str,)
_Bool = (bool,)
_Num = (int, float)
_StrMap = "strmap"
_StrList = "strlist"

SCHEMA: Dict[str, Any] = {
    "image": (_Str, "repository to push to, e.g. registry:5000/team/app (no tag)"),
    "tags": (_StrList, "tags to give the build (default: BUILD_NUMBER, GIT_COMMIT[:7], latest)"),
    "tag_templates": (_StrList, "more names, e.g. {registry}/{name}:{branch}-{build_number} (cdtools.tag keys)"),
    "host": (_Str, "daemon that builds and pushes (default DOCKER_HOST)"),
    "build": {
        "context": (_Str, "context directory (default: the config file's directory)"),
        "dockerfile": (_Str, "Dockerfile path"),
        "args": (_StrMap, "build args"),
        "labels": (_StrMap, "image labels (OCI labels from Jenkins are added)"),
        "target": (_Str, "stage to build"),
        "pull": (_Bool, "always pull base images"),
        "no_cache": (_Bool, "do not use the build cache"),
        "full_context": (_Bool, "send the whole context"),
        "compress": (_Bool, "gzip the context (default: only for remote daemons)"),
    },
    "push": {
        "enabled": (_Bool, "push at all (default true)"),
        "username_env": (_Str, "variable with the registry user"),
        "password_env": (_Str, "variable with the registry password"),
    },
    # validated by the deploy step's own table (deploy.CONFIG_KEYS); null/absent: no deploy
    "deploy": "deploy",
}

_VAR = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\})")


def expand(text: str, lookup: Callable[[str], Optional[str]], where: str) -> str:
    """``${VAR}`` from the environment; ``$$`` is a literal ``$``."""

    def sub(match: "re.Match[str]") -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2)
        value = lookup(name)
        if value is None:
            raise UsageError(f"{where}: ${{{name}}} is not set in the environment")
        return value

    return _VAR.sub(sub, text)


def _check(value: Any, kind: Any, where: str, lookup: Callable[[str], Optional[str]]) -> Any:
    if kind == _StrMap:
        if not isinstance(value, dict):
            raise UsageError(f"{where}: expected an object of strings")
        return {str(k): _check(v, _Str, f"{where}.{k}", lookup) for k, v in value.items()}
    if kind == _StrList:
        if not isinstance(value, list):
            raise UsageError(f"{where}: expected a list of strings")
        return [_check(v, _Str, f"{where}[{i}]", lookup) for i, v in enumerate(value)]
    if kind == _Str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UsageError(f"{where}: expected a string")
        return expand(str(value), lookup, where)
    if kind == _Bool and not isinstance(value, bool):
        raise UsageError(f"{where}: expected true or false")
    if kind == _Num and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UsageError(f"{where}: expected a number")
    return value


def validate(doc: Any, schema: Mapping[str, Any], lookup: Callable[[str], Optional[str]],
             where: str = "", sections: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """Check ``doc`` against ``schema``; returns it with strings expanded."""
    if not isinstance(doc, dict):
        raise UsageError(f"{where or 'config'}: expected an object")
    out: Dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{where}.{key}" if where else key
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise UsageError(f"{path}: unknown key (known here: {known})")
        kind = schema[key]
        if value is None:
            out[key] = None
        elif isinstance(kind, str) and kind not in (_StrMap, _StrList):
            sub = (sections or {}).get(kind)
            out[key] = validate(value, sub, lookup, path, sections) if sub is not None else value
        elif isinstance(kind, dict):
            out[key] = validate(value, kind, lookup, path, sections)
        else:
            out[key] = _check(value, kind[0], path, lookup)
    return out


def read_json(path: str, what: str) -> Any:
    """A JSON file the user named (``what`` says which, in errors); a BOM is allowed."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path} is not valid JSON: {exc}") from None


def load(path: str, lookup: Callable[[str], Optional[str]],
         sections: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Tuple[Dict[str, Any], str]:
    """Read and validate a config file; returns (config, the file's directory)."""
    doc = read_json(path, "config")
    return validate(doc, SCHEMA, lookup, "", sections), os.path.dirname(os.path.abspath(path))


def relative(base: str, value: Optional[str]) -> Optional[str]:
    """A path from the config, relative to the config file's directory."""
    if value is None:
        return None
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))


def default_tags(build_number: str, git_commit: str) -> List[str]:
    """Jenkins conventions: the build number, the short commit, and latest."""
    tags = []
    if build_number:
        tags.append(build_number)
    if git_commit:
        tags.append(git_commit[:7])
    tags.append("latest")
    return tags
