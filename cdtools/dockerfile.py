"""Dockerfile reading for the Dockerfile-aware build context.

The classic builder (what ``POST /build`` runs without BuildKit) reads the build
context only through ``COPY`` and ``ADD`` without ``--from``, and ONBUILD triggers of
that kind. This module parses a Dockerfile the way Docker 20.10 does (its vendored
buildkit v0.8 parser: escape directive, line continuations, comments, JSON and shell
forms, ``ARG``/``ENV`` substitution) and evaluates the stages the classic builder runs
(all of them, or those up to ``--target``) to list the context paths they name.

Whatever cannot be known for certain -- a base image that was not inspected, an
instruction this module does not understand, a substitution it cannot follow -- makes
``context_sources`` return a *reason* instead of paths: the caller then sends the
whole context. ``check_classic`` rejects what only BuildKit can build.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from cdtools.dockerignore import GO_SPACE as _GO_SPACE  # what Go's unicode.IsSpace accepts
from cdtools.errors import UsageError

#: the PATH the classic builder adds to a stage whose image has none (Linux)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: build args the daemon accepts without an ARG line
BUILTIN_ARGS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
    "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy",
)
#: COPY/ADD flags only BuildKit knows (``--chmod`` is parsed by 20.10 but then refused)
_BUILDKIT_COPY_FLAGS = ("chmod", "link", "parents", "exclude", "checksum", "keep-git-dir")
_COPY_FLAGS = {"copy": ("chown", "from", "chmod"), "add": ("chown", "chmod")}
_KNOWN = frozenset(
    "add arg cmd copy entrypoint env expose from healthcheck label maintainer onbuild "
    "run shell stopsignal user volume workdir".split()
)
_RE_WHITESPACE = re.compile("[\t\v\f\r ]+")
_RE_DIRECTIVE = re.compile(r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
_RE_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_\.]*\Z")
_RE_ONBUILD = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.IGNORECASE)
_RE_HEREDOC = re.compile(r"^[0-9]*<<-?[^<]")
_UTF8_BOM = "\ufeff"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction as the parser leaves it (quotes kept where Docker keeps them)."""

    cmd: str  # lower case, as Docker dispatches it
    flags: Tuple[str, ...]
    args: Tuple[str, ...]
    json: bool
    original: str
    line: int
    error: Optional[str] = None  # what the daemon's parser would reject on this line
    child: Optional["Instruction"] = None  # ONBUILD's instruction


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its instructions, escape token and parser directives."""

    instructions: Tuple[Instruction, ...]
    escape: str = "\\"
    directives: Mapping[str, str] = field(default_factory=dict)
    error: Optional[str] = None  # a file-level parse error (bad directive, no instructions)


@dataclass(frozen=True)
class ImageConfig:
    """What the classic builder takes from a base image that changes what it reads from the context."""

    env: Tuple[str, ...] = ()
    onbuild: Tuple[str, ...] = ()

    @classmethod
    def from_inspect(cls, doc: Mapping[str, Any]) -> "ImageConfig":
        """From a ``GET /images/{name}/json`` answer."""
        config = doc.get("Config") or {}
        return cls(env=tuple(config.get("Env") or ()), onbuild=tuple(config.get("OnBuild") or ()))


@dataclass(frozen=True)
class Sources:
    """The context paths COPY/ADD name (after substitution), or why they can't be known."""

    paths: Tuple[str, ...]
    reason: Optional[str] = None


class _Unresolved(Exception):
    """Internal: the sources can't be known for certain; the message says why."""


# --------------------------------------------------------------------------- parsing

def parse(data: bytes) -> Dockerfile:
    """Parse Dockerfile bytes as Docker 20.10's classic builder does."""
    lines = _scan_lines(data)
    escape = "\\"
    continuation = _continuation_regex(escape)
    directives: Dict[str, str] = {}
    directives_done = False
    file_error: Optional[str] = None
    instructions: List[Instruction] = []

    def directive(token: str) -> None:
        nonlocal directives_done, escape, continuation, file_error
        if directives_done:
            return
        match = _RE_DIRECTIVE.match(token)
        key = match.group(1).lower() if match else ""
        if key not in ("escape", "syntax"):
            directives_done = True
            return
        if key in directives:
            file_error = file_error or f"only one {key} parser directive can be used"
            return
        directives[key] = match.group(2)  # type: ignore[union-attr]
        if key == "escape":
            if match.group(2) not in ("`", "\\"):  # type: ignore[union-attr]
                file_error = file_error or f"invalid escape token {match.group(2)!r}"  # type: ignore[union-attr]
                return
            escape = match.group(2)  # type: ignore[union-attr]
            continuation = _continuation_regex(escape)

    i = 0
    while i < len(lines):
        token = lines[i].lstrip(_GO_SPACE)
        i += 1
        start = i
        directive(token)
        if token.startswith("#"):
            token = ""
        line, done = _trim_continuation(token, continuation)
        if done and line == "":
            continue
        while not done and i < len(lines):
            raw = lines[i]
            i += 1
            directive(raw)
            if raw.lstrip(_GO_SPACE).startswith("#"):
                continue  # comments inside a continued instruction vanish
            if raw.strip(_GO_SPACE) == "":
                continue  # an empty continuation line (Docker warns)
            part, done = _trim_continuation(raw, continuation)
            line += part
        instructions.append(_instruction(line, start, escape))
    if not instructions and file_error is None:
        file_error = "file with no instructions"
    return Dockerfile(tuple(instructions), escape, directives, file_error)


def _scan_lines(data: bytes) -> List[str]:
    """bufio.ScanLines: split at "\\n", drop one trailing "\\r", BOM off the first line."""
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = [(b[:-1] if b.endswith(b"\r") else b).decode("utf-8", "surrogateescape") for b in raw]
    if lines and lines[0].startswith(_UTF8_BOM):
        lines[0] = lines[0][1:]
    return lines


def _continuation_regex(escape: str) -> "re.Pattern[str]":
    e = re.escape(escape)
    return re.compile(f"([^{e}]){e}[ \\t]*\\Z|^{e}[ \\t]*\\Z")


def _trim_continuation(line: str, regex: "re.Pattern[str]") -> Tuple[str, bool]:
    match = regex.search(line)
    if match is None:
        return line, True
    return line[: match.start()] + (match.group(1) or ""), False


def _instruction(line: str, number: int, escape: str) -> Instruction:
    parts = _RE_WHITESPACE.split(line.strip(_GO_SPACE), 1)
    cmd = parts[0].lower()
    rest, flags = _extract_flags(parts[1]) if len(parts) == 2 else ("", [])
    rest = rest.strip(_GO_SPACE)
    error: Optional[str] = None
    child: Optional[Instruction] = None
    is_json = False
    args: List[str] = []
    try:
        if cmd == "onbuild":
            if rest:
                child = _instruction(rest, number, escape)
                args = [child.cmd, *child.args]
        elif cmd in ("copy", "add", "volume"):
            parsed = _parse_json(rest)
            if parsed is None:
                args = [w for w in _RE_WHITESPACE.split(rest)] if rest else []
            else:
                args, is_json = parsed, True
        elif cmd in ("run", "cmd", "entrypoint", "shell"):
            parsed = _parse_json(rest) if rest else None
            if parsed is None:
                args = [rest] if rest else []
            else:
                args, is_json = parsed, True
        elif cmd in ("env", "label"):
            args = _parse_name_val(rest, cmd.upper(), escape)
        elif cmd == "arg":
            args = _parse_words(rest, escape)
        elif cmd in ("from", "expose"):
            args = _RE_WHITESPACE.split(rest) if rest else []
        elif cmd in ("maintainer", "user", "stopsignal", "workdir", "healthcheck"):
            args = [rest] if rest else []
    except ValueError as exc:
        error = str(exc)
    return Instruction(cmd, tuple(flags), tuple(args), is_json, line, number, error, child)


def _extract_flags(line: str) -> Tuple[str, List[str]]:
    """The leading ``--name=value`` words of an instruction, and the rest of the line."""
    words: List[str] = []
    word = ""
    in_word = in_quote = False
    blank_ok = False
    quote = ""
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if not in_word and not in_quote:
            if pos == n:
                break
            if ch in " \t\n\v\f\r":
                pos += 1
                continue
            if not line.startswith("--", pos):
                return line[pos:], words
            in_word = True
        if pos == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if in_quote:
            if ch == quote:
                in_quote, in_word = False, True
            elif ch == "\\":
                if pos + 1 == n:
                    in_quote, in_word = False, True
                else:
                    pos += 1
                    word += line[pos]
            else:
                word += ch
        elif ch in " \t\n\v\f\r":
            in_word = False
            if word == "--":
                return line[pos:], words
            if blank_ok or word:
                words.append(word)
            word, blank_ok = "", False
        elif ch in "'\"":
            quote, blank_ok, in_quote, in_word = ch, True, True, False
        elif ch == "\\":
            if pos + 1 < n:
                pos += 1
                word += line[pos]
        else:
            word += ch
        pos += 1
    return "", words


def _parse_json(rest: str) -> Optional[List[str]]:
    """A JSON string array (trailing text ignored, like Go's json.Decoder), else None."""
    rest = rest.lstrip(_GO_SPACE)
    if not rest.startswith("["):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise ValueError("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _parse_words(rest: str, escape: str) -> List[str]:
    """Space-separated words with quotes kept (they are removed later, at substitution)."""
    words: List[str] = []
    word = ""
    quote = ""
    blank_ok = False
    in_word = False
    pos, n = 0, len(rest)
    while pos < n:
        ch = rest[pos]
        if not in_word and not quote:
            if ch in _GO_SPACE:
                pos += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if pos + 1 == n:
                    quote = ""
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
        elif ch in _GO_SPACE:
            in_word = False
            if blank_ok or word:
                words.append(word)
            word, blank_ok = "", False
        else:
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
        pos += 1
    if (in_word or quote) and (blank_ok or word):
        words.append(word)
    return words


def _parse_name_val(rest: str, key: str, escape: str) -> List[str]:
    """ENV/LABEL: ``name value`` (old form) or ``name=value ...``, as [name, value, ...]."""
    words = _parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _RE_WHITESPACE.split(rest, 1)
        if len(parts) < 2:
            raise ValueError(f"{key} must have two arguments")
        return [parts[0], parts[1]]
    out: List[str] = []
    for word in words:
        if "=" not in word:
            raise ValueError(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        name, value = word.split("=", 1)
        out += [name, value]
    return out


# ------------------------------------------------------------- BuildKit-only features

def check_classic(dockerfile: Dockerfile, name: str = "Dockerfile") -> None:
    """Raise UsageError if the Dockerfile needs BuildKit, which ``POST /build`` does not run."""
    why = "needs BuildKit; the classic builder behind the Engine API cdtools uses can't build it"
    if "syntax" in dockerfile.directives:
        raise UsageError(f"{name}: the '# syntax={dockerfile.directives['syntax']}' directive {why}")
    for ins in dockerfile.instructions:
        for item in (ins, ins.child):
            if item is None:
                continue
            if item.cmd == "run" and item.flags:
                raise UsageError(f"{name} line {item.line}: RUN {item.flags[0].split('=')[0]} {why}")
            if item.cmd in ("copy", "add"):
                for flag in item.flags:
                    flag_name, _, value = flag[2:].partition("=")
                    if flag_name in _BUILDKIT_COPY_FLAGS and (flag_name != "chmod" or value):
                        raise UsageError(f"{name} line {item.line}: {item.cmd.upper()} --{flag_name} {why}")
            if item.cmd in ("run", "copy", "add") and not item.json:
                words = " ".join(item.args).split()
                if any(_RE_HEREDOC.match(w) for w in words):
                    raise UsageError(f"{name} line {item.line}: a heredoc (<<) in {item.cmd.upper()} {why}")


# ------------------------------------------------------------------ substitution

class _Word:
    """Docker's ``ProcessWord`` (buildkit v0.8 ``shell.Lex``): quotes, escapes, ``$VAR``, ``${VAR:-x}``."""

    def __init__(self, escape: str, env: Mapping[str, str]) -> None:
        self.escape = escape
        self.env = env
        self.text = ""
        self.pos = 0

    def expand(self, text: str) -> str:
        self.text, self.pos = text, 0
        return self._until(None)

    def _peek(self) -> Optional[str]:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def _next(self) -> Optional[str]:
        ch = self._peek()
        if ch is not None:
            self.pos += 1
        return ch

    def _until(self, stop: Optional[str]) -> str:
        out: List[str] = []
        while self._peek() is not None:
            ch = self._peek()
            if stop is not None and ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "'":
                out.append(self._single_quoted())
            elif ch == '"':
                out.append(self._double_quoted())
            elif ch == "$":
                out.append(self._dollar())
            else:
                ch = self._next()
                if ch == self.escape:
                    ch = self._next()
                    if ch is None:
                        break
                out.append(ch)  # type: ignore[arg-type]
        if stop is not None:
            raise _Unresolved(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def _single_quoted(self) -> str:
        self._next()
        out: List[str] = []
        while True:
            ch = self._next()
            if ch is None:
                raise _Unresolved("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def _double_quoted(self) -> str:
        self._next()
        out: List[str] = []
        while True:
            ch = self._peek()
            if ch is None:
                raise _Unresolved("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self._next()
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = self._next()
            if ch == self.escape:
                following = self._peek()
                if following is None:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self._next()
            out.append(ch)  # type: ignore[arg-type]

    def _dollar(self) -> str:
        self._next()
        if self._peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self._next()
        ch = self._peek()
        if ch is None:
            raise _Unresolved("syntax error: missing '}'")
        if ch in "{}:":
            raise _Unresolved("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        if ch == "}":
            return self.env.get(name, "")
        if ch == "?":
            self._until("}")
            if name not in self.env:
                raise _Unresolved(f"{name}: is not allowed to be unset")
            return self.env[name]
        if ch == ":":
            modifier = self._next()
            word = self._until("}")
            value = self.env.get(name, "")
            if modifier == "+":
                return word if value != "" else value
            if modifier == "-":
                return word if value == "" else value
            if modifier == "?" and name in self.env and value != "":
                return value
            raise _Unresolved(f"unsupported or failing substitution ${{{name}:{modifier}...}}")
        raise _Unresolved("missing ':' in substitution")

    def _name(self) -> str:
        out: List[str] = []
        while self._peek() is not None:
            ch = self._peek()
            assert ch is not None
            if not out and ch.isdecimal():
                while self._peek() is not None and self._peek().isdecimal():  # type: ignore[union-attr]
                    out.append(self._next())  # type: ignore[arg-type]
                return "".join(out)
            if not out and ch in "@*#?-$!0":
                return self._next()  # type: ignore[return-value]
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            out.append(self._next())  # type: ignore[arg-type]
        return "".join(out)


def expand_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Substitute like the classic builder does for COPY/ADD/ENV/ARG words; ValueError if it can't."""
    try:
        return _Word(escape, env).expand(text)
    except _Unresolved as exc:
        raise ValueError(str(exc)) from None


# ----------------------------------------------------------------- evaluation

def context_sources(
    dockerfile: Dockerfile,
    *,
    build_args: Mapping[str, str] = {},
    target: Optional[str] = None,
    inspect_image: Optional[Callable[[str], Optional[ImageConfig]]] = None,
) -> Sources:
    """The context paths the classic builder's COPY/ADD read for this build.

    ``inspect_image(name)`` gives a base image's ENV and ONBUILD triggers (None when it
    is not known locally); without it only ``FROM scratch`` and earlier stages are
    known, and any other base image makes the answer "unknown" (ONBUILD triggers in an
    image can COPY from the context). Raises UsageError when ``target`` names no stage.
    """
    try:
        paths = _Evaluation(dockerfile, build_args, inspect_image).run(target)
    except _Unresolved as exc:
        return Sources((), str(exc))
    return Sources(tuple(paths), None)


@dataclass
class _Stage:
    name: str
    base: Instruction
    commands: List[Instruction]


class _Args:
    """The daemon's BuildArgs: --build-arg values, ARG defaults, meta (pre-FROM) ARGs."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self.options = dict(options)
        self.allowed: Dict[str, Optional[str]] = {}
        self.meta: Dict[str, Optional[str]] = {}

    def value(self, key: str, mapping: Mapping[str, Optional[str]]) -> Optional[str]:
        if key in self.options:
            return self.options[key]
        default = mapping.get(key)
        if default is None:
            return self.meta.get(key)
        return default

    def all(self, mapping: Mapping[str, Optional[str]]) -> Dict[str, str]:
        out: Dict[str, str] = {}
        for key in [*mapping, *BUILTIN_ARGS]:
            value = self.value(key, mapping)
            if value is not None:
                out[key] = value
        return out


class _Evaluation:
    def __init__(
        self,
        dockerfile: Dockerfile,
        build_args: Mapping[str, str],
        inspect_image: Optional[Callable[[str], Optional[ImageConfig]]],
    ) -> None:
        self.dockerfile = dockerfile
        self.args = _Args(build_args)
        self.inspect_image = inspect_image
        self.sources: List[str] = []
        # per stage while it runs
        self.env: List[str] = []
        self.onbuild: List[str] = []
        self.escape = dockerfile.escape

    def run(self, target: Optional[str]) -> List[str]:
        if self.dockerfile.error:
            raise _Unresolved(f"the Dockerfile does not parse: {self.dockerfile.error}")
        meta, stages = self._stages()
        if target:
            index = next((i for i, s in enumerate(stages) if s.name == target.lower()), None)
            if index is None:
                raise UsageError(f"failed to reach build target {target} in Dockerfile")
            stages = stages[: index + 1]
        for ins in meta:
            env = self.args.all(self.args.allowed)
            pairs = [self._arg_pair(word, env) for word in ins.args]
            for key, value in pairs:
                self.args.allowed[key] = value
                self.args.meta[key] = value
        done: Dict[str, Tuple[List[str], List[str]]] = {}
        for stage in stages:
            self._begin(stage, done)
            for ins in stage.commands:
                self._dispatch(ins)
            if stage.name:
                done[stage.name] = (self.env, self.onbuild)
        return self.sources

    def _stages(self) -> Tuple[List[Instruction], List[_Stage]]:
        meta: List[Instruction] = []
        stages: List[_Stage] = []
        for ins in self.dockerfile.instructions:
            where = f"line {ins.line}"
            if ins.error:
                raise _Unresolved(f"{where}: {ins.error}")
            if ins.cmd not in _KNOWN:
                raise _Unresolved(f"{where}: unknown instruction {ins.cmd.upper()}")
            if not stages and ins.cmd == "arg":
                if not ins.args:
                    raise _Unresolved(f"{where}: ARG requires at least one argument")
                meta.append(ins)
            elif ins.cmd == "from":
                args = ins.args
                name = ""
                if len(args) == 3 and args[1].lower() == "as":
                    name = args[2].lower()
                    if not _RE_STAGE_NAME.match(name):
                        raise _Unresolved(f"{where}: invalid name for build stage {args[2]!r}")
                elif len(args) != 1:
                    raise _Unresolved(f"{where}: FROM requires either one or three arguments")
                stages.append(_Stage(name, ins, []))
            elif not stages:
                raise _Unresolved(f"{where}: {ins.cmd.upper()} before the first FROM")
            else:
                stages[-1].commands.append(ins)
        return meta, stages

    def _begin(self, stage: _Stage, done: Mapping[str, Tuple[List[str], List[str]]]) -> None:
        self.args.allowed = {}
        base_word = stage.base.args[0]
        base = self._expand(base_word, self.args.all(self.args.meta))
        if base == "":
            raise _Unresolved(f"line {stage.base.line}: base name ({base_word}) should not be blank")
        if base.lower() in done:
            env, onbuild = done[base.lower()]
            self.env, triggers = list(env), list(onbuild)
        elif base == "scratch":
            self.env, triggers = [], []
        else:
            config = self.inspect_image(base) if self.inspect_image is not None else None
            if config is None:
                raise _Unresolved(
                    f"base image {base!r} was not inspected: ONBUILD triggers or ENV in it could read the context"
                )
            self.env, triggers = list(config.env), list(config.onbuild)
        if "PATH" not in _env_map(self.env):
            self.env.append("PATH=" + DEFAULT_PATH)
        self.onbuild = []
        for trigger in triggers:
            parsed = parse(trigger.encode("utf-8", "surrogateescape"))
            if parsed.error or len(parsed.instructions) != 1:
                raise _Unresolved(f"ONBUILD trigger {trigger!r} of {base!r} does not parse")
            ins = parsed.instructions[0]
            if ins.error or ins.cmd not in _KNOWN:
                raise _Unresolved(f"ONBUILD trigger {trigger!r} of {base!r} is not understood")
            saved, self.escape = self.escape, parsed.escape
            try:
                self._dispatch(ins)
            finally:
                self.escape = saved

    def _dispatch(self, ins: Instruction) -> None:
        config = _env_map(self.env)
        env = {k: v for k, v in self.args.all(self.args.allowed).items() if k not in config}
        env.update(config)
        if ins.cmd == "env":
            if not ins.args:
                raise _Unresolved(f"line {ins.line}: ENV requires at least one argument")
            pairs = [(self._expand(ins.args[i], env), self._expand(ins.args[i + 1], env)) for i in range(0, len(ins.args), 2)]
            for key, value in pairs:
                entry = f"{key}={value}"
                for index, existing in enumerate(self.env):
                    if existing.split("=", 1)[0] == key:
                        self.env[index] = entry
                        break
                else:
                    self.env.append(entry)
        elif ins.cmd == "arg":
            if not ins.args:
                raise _Unresolved(f"line {ins.line}: ARG requires at least one argument")
            for name, default in [self._arg_pair(word, env) for word in ins.args]:
                self.args.allowed[name] = default
        elif ins.cmd == "onbuild":
            if ins.child is None:
                raise _Unresolved(f"line {ins.line}: ONBUILD requires at least one argument")
            self.onbuild.append(_RE_ONBUILD.sub("", ins.original, count=1))
        elif ins.cmd in ("copy", "add"):
            self._copy(ins, env)

    def _copy(self, ins: Instruction, env: Mapping[str, str]) -> None:
        allowed = _COPY_FLAGS[ins.cmd]
        values: Dict[str, str] = {}
        for flag in ins.flags:
            if flag == "--":
                break
            name, eq, value = flag[2:].partition("=")
            if not flag.startswith("--") or name not in allowed or not eq or name in values:
                raise _Unresolved(f"line {ins.line}: {ins.cmd.upper()} flag {flag!r} is not one the classic builder takes")
            values[name] = value
        if values.get("from"):
            return  # from another stage or image, not the context
        if len(ins.args) < 2:
            raise _Unresolved(f"line {ins.line}: {ins.cmd.upper()} requires a source and a destination")
        for word in ins.args[:-1]:
            source = self._expand(word, env)
            if ins.cmd == "add" and source.startswith(("http://", "https://")):
                continue  # downloaded by the daemon
            self.sources.append(source)

    def _arg_pair(self, word: str, env: Mapping[str, str]) -> Tuple[str, Optional[str]]:
        key, eq, value = word.partition("=")
        if eq and key == "":
            raise _Unresolved("ARG names can not be blank")
        return self._expand(key, env), (self._expand(value, env) if eq else None)

    def _expand(self, word: str, env: Mapping[str, str]) -> str:
        return _Word(self.escape, env).expand(word)


def _env_map(env: Iterable[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        out[key] = value
    return out


# ------------------------------------------------------------- source matching

def contains_wildcards(source: str) -> bool:
    """The classic builder's test: ``*``, ``?`` or ``[`` not escaped by a backslash."""
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def glob_regex(pattern: str) -> Optional["re.Pattern[str]"]:
    """A regexp equal to Go's ``filepath.Match(pattern, name)``; None for a bad pattern.

    Go matches chunk by chunk without backtracking, but every chunk after a ``*`` is
    fixed-width and the last must reach the end, so a regexp accepts the same names.
    """
    out: List[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "\\":
            if i + 1 >= n:
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif ch == "[":
            i += 1
            negated = i < n and pattern[i] == "^"
            if negated:
                i += 1
            ranges: List[str] = []
            count = 0
            while True:
                if i < n and pattern[i] == "]" and count:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                if lo is None:
                    return None
                hi: Optional[str] = lo
                if pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi is None:
                        return None
                assert hi is not None
                count += 1
                if lo <= hi:  # Go accepts an empty range like z-a; it matches nothing
                    ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
            body = "".join(ranges)
            if negated:
                out.append(f"[^{body}]" if body else ".")
            else:
                out.append(f"[{body}]" if body else "(?!)")
        else:
            out.append(re.escape(ch))
            i += 1
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error:
        return None


def _class_char(pattern: str, i: int) -> Tuple[Optional[str], int]:
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        i += 1
        if i >= n:
            return None, i
    ch = pattern[i]
    if "\udc80" <= ch <= "\udcff":
        return None, i
    i += 1
    return (ch, i) if i < n else (None, i)


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` with the error ignored, as the classic builder's COPY does."""
    regex = glob_regex(pattern)
    return regex is not None and regex.match(name) is not None


__all__: Sequence[str] = (
    "Dockerfile", "ImageConfig", "Instruction", "Sources", "check_classic", "context_sources",
    "contains_wildcards", "expand_word", "glob_regex", "go_match", "parse",
)
