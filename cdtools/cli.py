"""Command-line plumbing shared by every step: common flags and the main wrapper.

A step's ``main(argv)`` builds its parser with :func:`parser`, then hands its
work to :func:`run`, which turns every :class:`~cdtools.errors.CdtoolsError`
into one line on stderr and the error's exit code; never a traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, TextIO, Tuple

from . import auth
from . import engine as engine_mod
from .console import Console
from .errors import CdtoolsError, UsageError
from .lock import Terminated, sigterm_raises
from .settings import Settings, current


PASSWORD_ON_ARGV = ("a password on the command line is visible to every user of this machine: "
                    "use --password-stdin, --password-file or the CDTOOLS_REGISTRY_PASSWORD variable")
#: ``--flag=VALUE`` in an argparse error line
_FLAG_VALUE = re.compile(r"(--[A-Za-z0-9][A-Za-z0-9_-]*)=\S*")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that keeps a password typed on the command line out of its messages.

    Every step refuses ``--password`` (saying what to use instead), and no usage error
    repeats a value: argparse's own ``ambiguous option: --pass=VALUE could match …`` and
    ``unrecognized arguments: --pasword VALUE`` would print it into the job log.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--password", dest="password_argv", nargs="?", action=_RefusePassword,
                          help=argparse.SUPPRESS)

    def parse_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [a.split("=", 1)[0] + ("=…" if "=" in a else "") for a in extras if a[:1] == "-" and a != "-"]
            hidden = len(extras) - len(flags)
            shown = " ".join(flags)
            if hidden:
                shown += (" and " if flags else "") + f"{hidden} value(s) not repeated here (one may be a password)"
            self.error(f"unrecognized arguments: {shown}")
        return parsed

    def error(self, message: str) -> NoReturn:
        # one line, as every other failure (argparse would print the whole usage first)
        text = _FLAG_VALUE.sub(r"\1=…", message)
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


class _RefusePassword(argparse.Action):
    """``--password VALUE``: refused while parsing, before anything runs, never repeating VALUE."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        if "--password-stdin" in getattr(parser, "_option_string_actions", {}):
            parser.error(PASSWORD_ON_ARGV)
        parser.error("a password on the command line is visible to every user of this machine, "
                     "and this step takes none")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description=description)
    g = p.add_argument_group("daemon")
    g.add_argument("-H", "--host", help="daemon socket (default: DOCKER_HOST or unix:///var/run/docker.sock)")
    g.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="fail the step when it runs longer than S seconds (default: no limit)")
    o = p.add_argument_group("output")
    o.add_argument("--timestamps", action="store_true", help="prefix each output line with a UTC timestamp")
    o.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    return p


def console_for(args: argparse.Namespace, out: Optional[TextIO] = None) -> Console:
    return Console(out, timestamps=getattr(args, "timestamps", False), quiet=getattr(args, "quiet", False))


def engine_for(args: argparse.Namespace, settings: Settings) -> engine_mod.Engine:
    return engine_mod.connect(settings, host=getattr(args, "host", None), timeout=getattr(args, "timeout", None))


def key_values(items: Optional[List[str]], what: str) -> Dict[str, str]:
    """K=V flags into a dict; a bare K is a usage error."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def add_credential_args(p: argparse.ArgumentParser) -> None:
    """Registry credential flags; the password never comes from argv."""
    g = p.add_argument_group("registry credentials (default: environment, then config.json)")
    g.add_argument("--username", "-u", help="registry user name")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    src.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    # --password itself is refused by every parser (ArgumentParser), saying what to do instead
    g.add_argument("--username-env", default="CDTOOLS_REGISTRY_USERNAME", metavar="VAR",
                   help="environment variable holding the user name (default: %(default)s)")
    g.add_argument("--password-env", default="CDTOOLS_REGISTRY_PASSWORD", metavar="VAR",
                   help="environment variable holding the password (default: %(default)s)")


def _password_from_flags(args: argparse.Namespace, stdin: Optional[TextIO]) -> Tuple[Optional[str], str]:
    """The password from --password-stdin / --password-file, read once per run."""
    cached: Optional[_Hidden] = getattr(args, "_password_cache", None)
    if cached is not None:
        return cached.value
    password: Optional[str] = None
    source = ""
    if args.password_stdin:
        password = auth.read_password_stdin(stdin if stdin is not None else sys.stdin)
        source = "--password-stdin"
    elif args.password_file:
        password = auth.read_password_file(args.password_file)
        source = f"--password-file {args.password_file}"
    args._password_cache = _Hidden((password, source))
    return password, source


class _Hidden:
    """Holds a value whose repr must never show it (argparse Namespaces get printed)."""

    def __init__(self, value: Tuple[Optional[str], str]) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


def credentials_for(args: argparse.Namespace, settings: Settings, registry: str,
                    stdin: Optional[TextIO] = None) -> "auth.Credentials":
    """Resolve credentials for ``registry`` from the flags, the environment or config.json."""
    if getattr(args, "password_argv", None) is not None:
        raise UsageError(PASSWORD_ON_ARGV)
    password, source = _password_from_flags(args, stdin)
    if args.username and password is None:
        raise UsageError("--username needs --password-stdin or --password-file")
    if password is not None and not args.username:
        raise UsageError(f"{source} needs --username")
    named = (args.username_env, args.password_env) != (auth.DEFAULT_USERNAME_VAR, auth.DEFAULT_PASSWORD_VAR)
    if password is None and named:
        # variables the user named must be there: falling through to an anonymous push
        # would fail late (after the build) and say nothing of the missing variable
        missing = [v for v in (args.username_env, args.password_env) if not settings.lookup(v)]
        if missing:
            raise UsageError(f"{' and '.join(missing)}, named for the {registry} credentials, "
                             f"{'is' if len(missing) == 1 else 'are'} not set")
    return auth.resolve(registry, username=args.username if password is not None else None,
                        password=password, password_source=source, env=settings.env,
                        username_var=args.username_env, password_var=args.password_env,
                        config_dir=settings.docker_config, path=settings.path)


def write_result(path: str, text: str) -> None:
    """Write a small result file (--iidfile, --digest-file); a bad path is a usage error."""
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def run(prog: str, work: Callable[[Settings], int], *, settings: Optional[Settings] = None) -> int:
    """Run a step; errors end as one line on stderr and their exit code.

    SIGTERM (what a Jenkins abort sends) is raised like Ctrl-C so every ``finally``
    runs (a deploy restores the old container, a lock is released), then exits 143.
    """
    try:
        with sigterm_raises():
            return work(settings if settings is not None else current())
    except CdtoolsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print(f"{prog}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
