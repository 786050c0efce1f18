"""Registry credentials, found the way the docker CLI finds them, and the headers that carry them.

Order (:func:`resolve`), first match wins; the returned :class:`Credentials`
says in ``source`` which one was used, never the secret:

1. explicit flags: ``username`` + ``password`` (``--password-stdin`` /
   ``--password-file``);
2. environment variables named by the user (defaults
   ``CDTOOLS_REGISTRY_USERNAME`` / ``CDTOOLS_REGISTRY_PASSWORD``): both or
   neither; an empty value counts as unset;
3. ``config.json`` in ``config_dir``, as docker CLI's ``GetAuthConfig``:
   ``credHelpers[server]`` names a helper, else ``credsStore`` does; with a
   helper, its answer is final ("credentials not found" means anonymous, and
   ``auths`` entries are only markers, as in the CLI); without one, ``auths``.
   A ``credHelpers`` entry of ``""`` means "no helper for this registry, use
   ``auths``" (the CLI does the same).
4. none: anonymous.

Registry keys are compared as the CLI and docker-py do: the exact server
address first, then by host: ``https://reg:5000/v1/``, ``http://reg:5000``,
``reg:5000/`` and ``reg:5000`` are one registry, and ``docker.io``,
``index.docker.io`` and ``https://index.docker.io/v1/`` are all Docker Hub.
Docker Hub's server address (the config key, the helper's input and
``serveraddress``) is ``https://index.docker.io/v1/``, other registries' is
their ``host[:port]``.

A config.json that can't be read or parsed, a bad base64 ``auth``, a helper
that is missing, fails, hangs or prints garbage: each is a
:class:`~cdtools.errors.CredentialsError` naming the file or helper and the
registry; none of them silently becomes anonymous, and no message carries a
secret or its base64 form.

This module reads no environment variable: the caller passes ``env`` (a
mapping), ``config_dir`` (``$DOCKER_CONFIG`` or ``~/.docker``, resolved by
``settings.py``; ``None`` means "consult no config.json") and ``path`` (the
``PATH`` used to find ``docker-credential-*``; ``None`` means this process's).
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO, Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from .errors import CredentialsError, UsageError

#: Docker Hub's server address (docker's ``registry.IndexServer``)
INDEX_SERVER = "https://index.docker.io/v1/"
#: Docker Hub's registry name, as image references spell it
INDEX_NAME = "docker.io"
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io"})
#: what a helper prints when it has nothing for a server (docker-credential-helpers)
NOT_FOUND_MESSAGE = "credentials not found in native keychain"
#: a helper's Username meaning "Secret is an identity token" (docker CLI)
TOKEN_USERNAME = "<token>"
HELPER_PREFIX = "docker-credential-"
DEFAULT_USERNAME_VAR = "CDTOOLS_REGISTRY_USERNAME"
DEFAULT_PASSWORD_VAR = "CDTOOLS_REGISTRY_PASSWORD"
#: "{}" base64url-encoded: what docker sends when it has no credentials
ANONYMOUS_HEADER = "e30="
DEFAULT_HELPER_TIMEOUT = 60.0

_EMPTY_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class HelperOutput:
    """What a credential-helper process did: exit status and both streams."""

    returncode: int
    stdout: bytes
    stderr: bytes


#: runs argv with stdin, returns its output; may raise OSError or subprocess.TimeoutExpired
HelperRunner = Callable[[Sequence[str], bytes, float], HelperOutput]


def run_helper_process(argv: Sequence[str], stdin: bytes, timeout: float) -> HelperOutput:
    """The default :data:`HelperRunner`: a subprocess, no shell, output captured."""
    done = subprocess.run(list(argv), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, check=False)
    return HelperOutput(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Credentials:
    """Credentials for one registry, or none (anonymous); ``source`` says where they came from.

    ``repr()`` and ``str()`` never show the password or token.
    """

    registry: str
    source: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    identity_token: Optional[str] = field(default=None, repr=False)
    #: ``serveraddress`` sent to the daemon; '' means the registry's default
    server_address: str = ""

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token)

    def auth_config(self) -> Dict[str, str]:
        """The Engine API's AuthConfig object (``{}`` when anonymous); holds the secret."""
        if self.anonymous:
            return {}
        # the field order of docker's types.AuthConfig
        config: Dict[str, str] = {}
        if self.username:
            config["username"] = self.username
        if self.password:
            config["password"] = self.password
        config["serveraddress"] = self.server_address or server_address(self.registry)
        if self.identity_token:
            config["identitytoken"] = self.identity_token
        return config

    def header(self) -> str:
        """The ``X-Registry-Auth`` value: base64url, with padding, of the AuthConfig JSON.

        ``e30=`` (``{}``) when anonymous.  The value carries the secret: never log it.
        """
        return encode_header(self.auth_config())

    def __repr__(self) -> str:
        hidden = [name for name in ("password", "identity_token") if getattr(self, name)]
        shown = f"registry={self.registry!r}, source={self.source!r}, username={self.username!r}"
        if self.server_address:
            shown += f", server_address={self.server_address!r}"
        if hidden:
            shown += ", " + ", ".join(f"{name}=<hidden>" for name in hidden)
        return f"Credentials({shown})"

    def __str__(self) -> str:
        if self.anonymous:
            return f"{self.registry}: no credentials ({self.source})"
        who = self.username if self.username and not self.identity_token else "identity token"
        return f"{self.registry}: {who} from {self.source}"


def encode_header(value: Any) -> str:
    """base64url with padding of compact JSON, as docker's EncodeAuthToBase64 sends it."""
    data = json.dumps(value, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(data).decode("ascii")


def resolve(registry: str, *, username: Optional[str] = None, password: Optional[str] = None,
            password_source: str = "", env: Mapping[str, str] = _EMPTY_ENV,
            username_var: str = DEFAULT_USERNAME_VAR, password_var: str = DEFAULT_PASSWORD_VAR,
            config_dir: Optional[str] = None, path: Optional[str] = None,
            run_helper: HelperRunner = run_helper_process,
            helper_timeout: float = DEFAULT_HELPER_TIMEOUT) -> Credentials:
    """Credentials for ``registry`` (``docker.io``, ``127.0.0.1:5000``, or a config-style URL).

    ``password_source`` names the flag the password came from
    (``--password-stdin``, ``--password-file``) for messages and ``source``.
    """
    name = registry_name(registry)
    if not name:
        raise UsageError(f"no registry in {registry!r}")
    address = server_address(registry)
    if password is not None or username is not None:
        return _from_flags(name, address, username, password, password_source)
    from_env = _from_env(name, address, env, username_var, password_var)
    if from_env is not None:
        return from_env
    # '' is Settings' "not resolved": like None, there is no file to read
    if config_dir is None or config_dir == "":
        return Credentials(registry=name, source="none (anonymous)")
    config_path = os.path.join(config_dir, "config.json")
    config = _load_config(config_path)
    return _from_config(config, config_path, name, address, path, run_helper, helper_timeout)


def registry_config_header(registries: Iterable[str], **kwargs: Any) -> str:
    """The ``X-Registry-Config`` value for ``POST /build``: base64url JSON ``{server: AuthConfig}``.

    Each registry is resolved with :func:`resolve` and the same keyword
    arguments, so explicit and environment credentials apply to every registry
    given: pass only the registries they are meant for.  Anonymous registries
    are left out; keys are what the daemon looks up (``https://index.docker.io/v1/``
    for Docker Hub, ``host[:port]`` otherwise).  ``e30=`` when none has credentials.
    """
    configs: Dict[str, Dict[str, str]] = {}
    for registry in registries:
        key = server_address(registry)
        if key in configs:
            continue
        creds = resolve(registry, **kwargs)
        if not creds.anonymous:
            configs[key] = creds.auth_config()
    return encode_header(configs)


def read_password_file(path: Union[str, "os.PathLike[str]"]) -> str:
    """A password from a file: UTF-8, one trailing newline (``\\n`` or ``\\r\\n``) removed, nothing else."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read password file {os.fspath(path)}: {exc.strerror}") from None
    return _password_text(data, f"password file {os.fspath(path)}")


def read_password_stdin(stream: IO[Any]) -> str:
    """A password from a stream (text or bytes), one trailing newline removed."""
    data = stream.read()
    return _password_text(data, "--password-stdin")


def registry_name(registry: str) -> str:
    """``registry`` as a reference spells it: ``host[:port]``, ``docker.io`` for Docker Hub."""
    host = convert_to_hostname(registry)
    return INDEX_NAME if host in _HUB_HOSTS else host


def server_address(registry: str) -> str:
    """The server address docker uses for ``registry``: ``https://index.docker.io/v1/`` or ``host[:port]``."""
    name = registry_name(registry)
    return INDEX_SERVER if name == INDEX_NAME else name


def convert_to_hostname(url: str) -> str:
    """``host[:port]`` of a registry key: scheme, user info and path dropped (docker's ConvertToHostname)."""
    stripped = url
    scheme_end = stripped.find("://")
    if scheme_end >= 0:
        stripped = stripped[scheme_end + 3:]
    host = stripped.split("/", 1)[0]
    return host.rsplit("@", 1)[-1]


def config_dir_for(env: Mapping[str, str]) -> Optional[str]:
    """``$DOCKER_CONFIG``, else ``$HOME/.docker``, from a mapping; None when neither is set.

    For callers that hold an environment mapping; ``settings.py`` is where the
    process environment is read.
    """
    if env.get("DOCKER_CONFIG"):
        return env["DOCKER_CONFIG"]
    if env.get("HOME"):
        return os.path.join(env["HOME"], ".docker")
    return None


# --- flags and environment ---------------------------------------------------------------------


def _from_flags(name: str, address: str, username: Optional[str], password: Optional[str],
                password_source: str) -> Credentials:
    flag = password_source or "--password"
    if password is None:
        raise UsageError(f"--username given without a password for {name} "
                         f"(use --password-stdin or --password-file)")
    if not username:
        raise UsageError(f"a password from {flag} needs --username for {name}")
    if password == "":
        raise UsageError(f"empty password from {flag} for {name}")
    return Credentials(registry=name, source=flag, username=username, password=password,
                       server_address=address)


def _from_env(name: str, address: str, env: Mapping[str, str], username_var: str,
              password_var: str) -> Optional[Credentials]:
    user = env.get(username_var) or ""
    secret = env.get(password_var) or ""
    if not user and not secret:
        return None
    if not secret:
        raise UsageError(f"{username_var} is set but {password_var} is not: set both, or neither")
    if not user:
        raise UsageError(f"{password_var} is set but {username_var} is not: set both, or neither")
    return Credentials(registry=name, source=f"environment {password_var}", username=user,
                       password=secret, server_address=address)


# --- config.json -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AuthEntry:
    key: str
    username: str
    password: str
    identity_token: str


@dataclass(frozen=True)
class _Config:
    auths: Tuple[_AuthEntry, ...]
    cred_helpers: Tuple[Tuple[str, str], ...]
    creds_store: str


def _field(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]``, matched like Go's encoding/json: exact first, then case-insensitively."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def _load_config(config_path: str) -> _Config:
    try:
        with open(config_path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return _Config((), (), "")
    except OSError as exc:
        raise CredentialsError(f"cannot read {config_path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"{config_path} is not UTF-8 text") from None
    if text.strip() == "":
        # the CLI treats an empty file as an empty config
        return _Config((), (), "")
    try:
        data = json.loads(text)
    except ValueError as exc:
        # the decoder's message names a position only; the document (with secrets) is dropped
        msg = getattr(exc, "msg", "not valid JSON")
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise CredentialsError(f"{config_path} is not valid JSON: {msg}{where}") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{config_path}: expected a JSON object at the top level")

    auths_raw = _field(data, "auths")
    if auths_raw is None:
        auths_raw = {}
    if not isinstance(auths_raw, dict):
        raise CredentialsError(f"{config_path}: \"auths\" must be an object")
    auths = tuple(_auth_entry(config_path, key, entry) for key, entry in auths_raw.items())

    helpers_raw = _field(data, "credHelpers")
    if helpers_raw is None:
        helpers_raw = {}
    if not isinstance(helpers_raw, dict) or not all(isinstance(v, str) for v in helpers_raw.values()):
        raise CredentialsError(f"{config_path}: \"credHelpers\" must map registries to helper names")

    store = _field(data, "credsStore")
    if store is None:
        store = ""
    if not isinstance(store, str):
        raise CredentialsError(f"{config_path}: \"credsStore\" must be a helper name")
    return _Config(auths, tuple(helpers_raw.items()), store)


def _auth_entry(config_path: str, key: str, entry: Any) -> _AuthEntry:
    where = f"{config_path}: auths entry {key!r}"
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise CredentialsError(f"{where} must be an object")
    values = {}
    for name in ("auth", "username", "password", "identitytoken"):
        value = _field(entry, name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise CredentialsError(f"{where}: \"{name}\" must be a string")
        values[name] = value
    username, password = values["username"], values["password"]
    if values["auth"]:
        username, password = _decode_auth(values["auth"], where)
    return _AuthEntry(key, username, password, values["identitytoken"])


def _decode_auth(encoded: str, where: str) -> Tuple[str, str]:
    """``auth`` is base64 of "user:password" (docker's decodeAuth); errors never echo it."""
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError(f"{where}: \"auth\" is not valid base64") from None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"{where}: \"auth\" does not decode to UTF-8 text") from None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise CredentialsError(f"{where}: \"auth\" must encode \"username:password\"")
    # the CLI strips NUL padding some writers leave behind
    return user, password.strip("\x00")


def _same_registry(key: str, name: str) -> bool:
    return registry_name(key) == name


def _from_config(config: _Config, config_path: str, name: str, address: str, path: Optional[str],
                 run_helper: HelperRunner, timeout: float) -> Credentials:
    helper = _helper_for(config, name, address)
    if helper is not None and helper != "":
        return _from_helper(helper, name, address, config_path, path, run_helper, timeout)
    entry = _auth_entry_for(config, name, address)
    if entry is None or not (entry.username or entry.password or entry.identity_token):
        return Credentials(registry=name, source="none (anonymous)")
    return Credentials(registry=name, source="config.json auths", username=entry.username or None,
                       password=entry.password or None, identity_token=entry.identity_token or None,
                       server_address=entry.key)


def _helper_for(config: _Config, name: str, address: str) -> Optional[str]:
    """credHelpers for this registry ("" included: it means "use auths"), else credsStore."""
    helpers = dict(config.cred_helpers)
    if address in helpers:
        return helpers[address]
    for key, helper in config.cred_helpers:
        if _same_registry(key, name):
            return helper
    return config.creds_store or None


def _auth_entry_for(config: _Config, name: str, address: str) -> Optional[_AuthEntry]:
    for entry in config.auths:
        if entry.key == address:
            return entry
    for entry in config.auths:
        if _same_registry(entry.key, name):
            return entry
    return None


# --- credential helpers ------------------------------------------------------------------------


def _from_helper(helper: str, name: str, address: str, config_path: str, path: Optional[str],
                 run_helper: HelperRunner, timeout: float) -> Credentials:
    program = HELPER_PREFIX + helper
    what = f"credential helper {program} for {name}"
    if "/" in helper or os.sep in helper:
        # a name, looked up on PATH like docker does; never a path to run
        raise CredentialsError(f"{what}: {helper!r} in {config_path} is not a helper name")
    found = shutil.which(program, path=path)
    if found is None:
        raise CredentialsError(f"{what}: {program} not found on PATH (named in {config_path})")
    try:
        out = run_helper([found, "get"], address.encode("utf-8"), timeout)
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"{what}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise CredentialsError(f"{what}: cannot run it: {exc.strerror or exc}") from None
    stdout = out.stdout.decode("utf-8", "replace").strip()
    if out.returncode != 0:
        # as docker-credential-helpers' client: stdout carries the helper's error message
        if stdout == NOT_FOUND_MESSAGE:
            return Credentials(registry=name, source="none (anonymous)")
        detail = stdout or out.stderr.decode("utf-8", "replace").strip() or "no output"
        detail = " ".join(detail.split())
        if len(detail) > 200:
            detail = detail[:200] + "…"
        raise CredentialsError(f"{what} failed (exit {out.returncode}): {detail}")
    try:
        answer = json.loads(out.stdout.decode("utf-8"))
    except ValueError:
        # the output may hold a secret: say what is wrong, never show it
        raise CredentialsError(f"{what} printed something that is not JSON "
                               f"({len(out.stdout)} bytes)") from None
    if not isinstance(answer, dict):
        raise CredentialsError(f"{what} printed JSON that is not an object")
    user = _field(answer, "Username")
    secret = _field(answer, "Secret")
    if user is None:
        user = ""
    if secret is None:
        secret = ""
    if not isinstance(user, str) or not isinstance(secret, str):
        raise CredentialsError(f"{what} printed Username/Secret that are not strings")
    source = f"credential helper {program}"
    if not user and not secret:
        return Credentials(registry=name, source="none (anonymous)")
    if user == TOKEN_USERNAME:
        return Credentials(registry=name, source=source, identity_token=secret, server_address=address)
    return Credentials(registry=name, source=source, username=user, password=secret,
                       server_address=address)


def _password_text(data: Union[str, bytes], what: str) -> str:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{what}: the password is not UTF-8 text") from None
    else:
        text = data
    # exactly what `docker login --password-stdin` strips: one "\n", then one "\r"
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    if text == "":
        raise UsageError(f"{what}: the password is empty")
    return text
