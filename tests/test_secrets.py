"""No secret ever shows: every entry point, every credential source, success and failure.

A canary password is handed to cdtools the ways a user can (``--password-stdin``,
``--password-file``, ``CDTOOLS_REGISTRY_PASSWORD``, a variable named with
``--password-env``, ``$DOCKER_CONFIG/config.json`` ``auths`` and a credential
helper) and, as container secrets, through ``-e DB_PASSWORD=…``, ``--env-file``,
``--secret-env`` and the release config's ``deploy.env``.  Every step in
``cdtools.steps.STEPS`` then runs: its success and failure paths, ``--dry-run``,
``--quiet``, ``--timestamps`` and ``-h``; as a user runs it (a subprocess:
``python -m cdtools.STEP``, ``python -m cdtools STEP``, the vendored zipapp) and
in-process (``main()`` under capsys; the library's exceptions with their whole
traceback and chained causes).  All of stdout, stderr, report.json/report.xml
and exception text is scanned for the canary, its URL and JSON forms, its base64
and base64url forms (padded or not), those of ``user:canary``, a prefix and a
suffix of it, and the exact ``X-Registry-Auth`` values that carry it: zero hits.

The canary's base64 holds ``+`` and ``/``, so its base64url form is another
string and both are looked for.  The canary never goes in argv (checked for
every command), except where argv itself is the test: every step refuses
``--password`` on the command line without repeating it.

Success paths need a registry that accepts the canary: a private
``docker-registry`` (distribution, as the stack's) on a free loopback port with
an htpasswd user whose password is the canary, started for this module and
stopped by pid.  (Distribution 2.8 re-reads a changed htpasswd file, so a user
could be added to the stack's registry instead; a registry of its own leaves
the shared one alone.)  The stack's registry (127.0.0.1:5000, ``ci``/``s3cret``)
gets the canary as a wrong password for the failure paths.
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import traceback
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

import fakes
from cdtools import auth, deploy, push, reference, release, steps
from cdtools import engine as engine_mod, settings as settings_mod
from cdtools.console import Console
from cdtools.errors import CdtoolsError, PushError
from conftest import DOCKER_SOCK, Engine, EngineAPI, Registry, _remove_prefixed, unavailable
from deploy_fixtures import build_image, get
from registry_fixtures import PrivateRegistry, missing_tools, private_registry

REPO = Path(__file__).resolve().parent.parent
BIN = Path(__file__).resolve().parent / "bin"

#: standard base64 of the canary and of "user:canary" has "+" and "/" (checked below)
CANARY = "Cn>ry?x~Pw>>??9"
CANARY_USER = "cdt"
SOURCES = ("stdin", "file", "env", "env-named", "config-auths", "helper")
#: steps that take registry credentials: the --password refusal points to --password-stdin
CREDENTIAL_STEPS = ("push", "deploy", "release", "plan")


# -- what a leak looks like ---------------------------------------------------------------------


def _b64_forms(data: bytes) -> List[str]:
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return [std, url, std.rstrip("="), url.rstrip("=")]


def auth_header(user: str, server: str) -> str:
    """The X-Registry-Auth value cdtools sends with the canary for ``user`` at ``server``."""
    return auth.Credentials(registry=server, source="test", username=user, password=CANARY,
                            server_address=server).header()


def leak_forms(servers: Sequence[str] = ()) -> Dict[str, str]:
    """name -> string that must never be seen."""
    forms = {
        "canary": CANARY,
        "canary, url-quoted": urllib.parse.quote(CANARY, safe=""),
        "canary, url-quoted with +": urllib.parse.quote_plus(CANARY),
        "canary, JSON string": json.dumps(CANARY)[1:-1],
        "canary prefix": CANARY[:8],
        "canary suffix": CANARY[-8:],
    }
    for i, form in enumerate(_b64_forms(CANARY.encode())):
        forms[f"base64 of the canary #{i}"] = form
    for user in (CANARY_USER, "ci"):
        for i, form in enumerate(_b64_forms(f"{user}:{CANARY}".encode())):
            forms[f"base64 of {user}:canary #{i}"] = form
        for server in servers:
            header = auth_header(user, server)
            forms[f"X-Registry-Auth {user}@{server}"] = header
            forms[f"X-Registry-Auth {user}@{server}, standard base64"] = base64.b64encode(
                base64.urlsafe_b64decode(header)).decode()
    unique: Dict[str, str] = {}
    for name, form in forms.items():  # one name per string: "url-quoted" may equal "JSON string" …
        if form not in unique.values():
            unique[name] = form
    return unique


class Leaks:
    """Everything one test captured, scanned as it comes in."""

    def __init__(self, servers: Sequence[str] = ()) -> None:
        self.forms = leak_forms(servers)
        self.scanned = 0

    def check(self, where: str, text: str) -> None:
        self.scanned += 1
        for name, form in self.forms.items():
            at = text.find(form)
            if at >= 0:
                # the context is shown with the secret cut out: the failure output is a log too
                context = text[max(0, at - 80):at] + "<LEAK>" + text[at + len(form):at + len(form) + 80]
                pytest.fail(f"{where}: {name} leaked: …{context}…", pytrace=False)


def exception_text(exc: BaseException) -> str:
    """What a user, a logger or a debugger can see of an exception: str, repr, args, the
    formatted traceback, and every cause and context, suppressed or not."""
    parts: List[str] = []
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        parts += traceback.format_exception(type(current), current, current.__traceback__)
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


# -- the registries -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary_registry(engine_available: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRegistry]:
    """A registry of this module's own whose user's password is the canary."""
    reason = missing_tools()
    if reason:
        unavailable(reason)
    with private_registry(tmp_path_factory.mktemp("canary-registry"), CANARY_USER, CANARY) as reg:
        yield reg


@pytest.fixture(scope="module")
def app_image(engine_available: Engine) -> Iterator[str]:
    """A busybox httpd image on the Docker daemon, built once for the module."""
    prefix = f"cdt-{os.urandom(5).hex()}"
    ref = f"{prefix}-app:1"
    build_image(ref, "secrets app")
    yield ref
    _remove_prefixed(EngineAPI(DOCKER_SOCK), prefix)


# -- running entry points -----------------------------------------------------------------------


@dataclass
class Bed:
    """One test's environment: a HOME, a docker config dir, a helper store; the canary in none of them yet."""

    tmp: Path
    engine: Engine
    env: Dict[str, str]
    leaks: Leaks

    def run(self, *argv: str, env: Optional[Dict[str, str]] = None, stdin: str = "", files: Sequence[Path] = (),
            expect: Optional[int] = 0, argv_secret: bool = False, how: str = "module") -> "subprocess.CompletedProcess[str]":
        """Run an entry point as a user does, scan everything it left, check its exit code.

        ``how``: "module" (python -m cdtools.STEP), "dispatch" (python -m cdtools STEP),
        or a path to a zipapp (python3 PYZ STEP).
        """
        if not argv_secret:
            assert not any(CANARY in a for a in argv), "the canary must never be put in argv by the test"
        step, rest = argv[0], list(argv[1:])
        if how == "module":
            cmd = [sys.executable, "-m", f"cdtools.{step}", *rest]
        elif how == "dispatch":
            cmd = [sys.executable, "-m", "cdtools", step, *rest]
        else:
            cmd = [sys.executable, how, step, *rest]
        proc = subprocess.run(cmd, cwd=str(self.tmp), env=env if env is not None else self.env, input=stdin,
                              capture_output=True, text=True, timeout=300)
        label = " ".join(argv)
        self.leaks.check(f"{label}: stdout", proc.stdout)
        self.leaks.check(f"{label}: stderr", proc.stderr)
        for path in files:
            if path.exists():
                self.leaks.check(f"{label}: {path.name}", path.read_text(errors="replace"))
        assert "Traceback" not in proc.stderr, f"{label}: a traceback:\n{proc.stderr}"
        if expect is not None:
            assert proc.returncode == expect, f"{label}: exit {proc.returncode}, not {expect}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def with_source(self, source: str, server: str, user: str) -> Tuple[List[str], Dict[str, str], str]:
        """The canary for ``user`` at ``server`` through one credential source: (flags, environment, stdin)."""
        env = dict(self.env)
        cfg = self.tmp / f"docker-{source}-{server.replace(':', '_')}"
        cfg.mkdir(exist_ok=True)
        if source == "stdin":
            return ["--username", user, "--password-stdin"], env, CANARY + "\n"
        if source == "file":
            pw = self.tmp / "password"
            pw.write_text(CANARY + "\n")
            return ["--username", user, "--password-file", str(pw)], env, ""
        if source == "env":
            env.update(CDTOOLS_REGISTRY_USERNAME=user, CDTOOLS_REGISTRY_PASSWORD=CANARY)
            return [], env, ""
        if source == "env-named":
            env.update(DEPLOY_REG_USER=user, DEPLOY_REG_SECRET=CANARY)
            return ["--username-env", "DEPLOY_REG_USER", "--password-env", "DEPLOY_REG_SECRET"], env, ""
        if source == "config-auths":
            token = base64.b64encode(f"{user}:{CANARY}".encode()).decode()
            (cfg / "config.json").write_text(json.dumps({"auths": {server: {"auth": token}}}))
            env["DOCKER_CONFIG"] = str(cfg)
            return [], env, ""
        assert source == "helper"
        store = self.tmp / f"helper-store-{server.replace(':', '_')}.json"
        store.write_text(json.dumps({"cdtest": {server: {"Username": user, "Secret": CANARY}}}))
        (cfg / "config.json").write_text(json.dumps({"credHelpers": {server: "cdtest"}}))
        env.update(DOCKER_CONFIG=str(cfg), CDTEST_CREDENTIALS_FILE=str(store),
                   PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
        return [], env, ""

    def ambient(self, servers: Sequence[str]) -> Dict[str, str]:
        """An environment that holds the canary every way at once: variables, config.json, helper."""
        cfg = self.tmp / "docker-ambient"
        cfg.mkdir(exist_ok=True)
        store = self.tmp / "helper-store-ambient.json"
        store.write_text(json.dumps({"cdtest": {s: {"Username": CANARY_USER, "Secret": CANARY} for s in servers}}))
        token = base64.b64encode(f"ci:{CANARY}".encode()).decode()
        (cfg / "config.json").write_text(json.dumps({"auths": {s: {"auth": token} for s in servers},
                                                     "credHelpers": {s: "cdtest" for s in servers[:1]}}))
        env = dict(self.env)
        env.update(CDTOOLS_REGISTRY_USERNAME="ci", CDTOOLS_REGISTRY_PASSWORD=CANARY, DB_PASSWORD=CANARY,
                   DOCKER_CONFIG=str(cfg), CDTEST_CREDENTIALS_FILE=str(store),
                   PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
        return env


@pytest.fixture
def bed(tmp_path: Path, engine_available: Engine, canary_registry: PrivateRegistry, registry: Registry) -> Bed:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "CDTOOLS_", "CDTEST_"))}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), CI="true",
               DOCKER_HOST=engine_available.docker_host)
    (tmp_path / "home").mkdir()
    return Bed(tmp_path, engine_available, env, Leaks([canary_registry.host, registry.host]))


def mode(i: int) -> List[str]:
    """Output modes in turn: plain, --quiet, --timestamps."""
    return [[], ["--quiet"], ["--timestamps"]][i % 3]


def secret_env_file(bed: Bed) -> Path:
    """An --env-file whose value is secret by where it comes from, not by its name."""
    path = bed.tmp / "app.env"
    path.write_text(f"# app settings\nAPP_SETTING={CANARY}\nPLAIN=not-secret-but-from-the-file\n")
    return path


def write_release_config(bed: Bed, image: str, *, name: str, port: int, deploy: bool = True) -> Path:
    ctx = bed.tmp / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "index.html").write_text("released\n")
    (ctx / "Dockerfile").write_text('FROM busybox\nCOPY index.html /www/\nEXPOSE 8080\n'
                                    'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n')
    config: Dict[str, object] = {"image": image, "build": {"context": "ctx"}}
    if deploy:
        config["deploy"] = {"name": name, "ports": [f"127.0.0.1:{port}:8080"], "settle": 1, "health_timeout": 30,
                            "env": {"DB_PASSWORD": "${DB_PASSWORD}", "MODE": "test"},
                            "env_files": [str(secret_env_file(bed))]}
    path = bed.tmp / "cdtools.json"
    path.write_text(json.dumps(config))
    return path


# -- the scanner itself ---------------------------------------------------------------------------


def test_canary_makes_base64_differ_from_base64url() -> None:
    for text in (CANARY, f"{CANARY_USER}:{CANARY}", f"ci:{CANARY}"):
        standard = base64.b64encode(text.encode()).decode()
        assert "+" in standard and "/" in standard, text


def test_scanner_finds_every_form_it_looks_for() -> None:
    leaks = Leaks(["127.0.0.1:5000"])
    for name, form in leaks.forms.items():
        with pytest.raises(pytest.fail.Exception) as found:
            leaks.check("sample", f"some output {form} more output")
        # caught (maybe under another form it contains) and not repeated in the failure
        assert "leaked" in str(found.value) and form not in str(found.value), name
        assert CANARY not in str(found.value)
    leaks.check("clean sample", "pushed 127.0.0.1:5000/app:1 sha256:abc (credentials: --password-stdin)")


# -- --password on the command line ---------------------------------------------------------------


@pytest.mark.parametrize("step", steps.names())
@pytest.mark.parametrize("form", ["--password VALUE", "--password=VALUE", "--pass=VALUE"])
def test_password_on_argv_is_refused_by_every_step_without_repeating_it(step: str, form: str, capsys) -> None:
    leaks = Leaks()
    argv = form.replace("VALUE", CANARY).split(" ")
    if step == "container":
        argv = ["create", "x", "--image", "y"] + argv
    with pytest.raises(SystemExit) as refused:
        steps.main([step] + argv)
    out, err = capsys.readouterr()
    leaks.check(f"{step} {form}", out + err + exception_text(refused.value))
    assert refused.value.code == 2
    assert err.strip().splitlines()[-1].startswith(f"cdtools {step}")
    if step in CREDENTIAL_STEPS and form != "--pass=VALUE":
        assert "--password-stdin" in err, err
    if form != "--pass=VALUE":
        assert "password on the command line" in err, err


@pytest.mark.e2e
def test_password_on_argv_refused_as_a_user_runs_it(bed: Bed) -> None:
    for step in CREDENTIAL_STEPS:
        proc = bed.run(step, "--password", CANARY, expect=2, argv_secret=True)
        assert "--password-stdin" in proc.stderr


# -- push ------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("source", SOURCES)
def test_push_with_every_source(bed: Bed, source: str, canary_registry: PrivateRegistry, registry: Registry,
                                app_image: str, unique: str) -> None:
    i = SOURCES.index(source)
    good = f"{canary_registry.host}/{unique}/app:{source}"
    bad = f"{registry.host}/{unique}/app:{source}"
    ambient = bed.ambient([canary_registry.host, registry.host])
    bed.run("tag", *mode(i), app_image, good, bad, env=ambient)

    flags, env, stdin = bed.with_source(source, canary_registry.host, canary_registry.user)
    digest_file = bed.tmp / "digest"
    ok = bed.run("push", *mode(i), *flags, good, "--digest-file", str(digest_file), env=env, stdin=stdin,
                 files=[digest_file], how="dispatch" if i % 2 else "module")
    assert "@sha256:" in digest_file.read_text()
    assert source in canary_registry.tags(f"{unique}/app")
    if "--quiet" not in mode(i):
        assert "credentials:" in ok.stdout

    # the canary as the wrong password of the stack registry's user: refused, one line
    flags, env, stdin = bed.with_source(source, registry.host, registry.user)
    refused = bed.run("push", *mode(i + 1), *flags, bad, env=env, stdin=stdin, expect=5)
    assert refused.stderr.count("\n") == 1 and "unauthorized" in refused.stderr


# -- release ---------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("source", SOURCES)
def test_release_with_every_source(bed: Bed, source: str, canary_registry: PrivateRegistry, registry: Registry,
                                   unique: str, engine_api: EngineAPI) -> None:
    i = SOURCES.index(source)
    report, junit = bed.tmp / "report.json", bed.tmp / "report.xml"
    port = fakes.free_port()

    # --dry-run: every request it would make, credentials resolved, secrets redacted
    config = write_release_config(bed, f"{canary_registry.host}/{unique}/rel", name=f"{unique}-rel", port=port)
    flags, env, stdin = bed.with_source(source, canary_registry.host, canary_registry.user)
    env["DB_PASSWORD"] = CANARY
    dry = bed.run("release", *mode(i), "--config", str(config), "--dry-run", "-t", "1", *flags,
                  "--report", str(report), "--junit", str(junit), env=env, stdin=stdin, files=[report, junit])
    if "--quiet" not in mode(i):
        assert "X-Registry-Auth: <redacted>" in dry.stdout and "DB_PASSWORD=<redacted>" in dry.stdout

    # failure: the canary is the wrong password of the stack registry; report written anyway
    config = write_release_config(bed, f"{registry.host}/{unique}/rel", name=f"{unique}-rel", port=port)
    flags, env, stdin = bed.with_source(source, registry.host, registry.user)
    env["DB_PASSWORD"] = CANARY
    failed = bed.run("release", *mode(i + 1), "--config", str(config), "-t", "1", *flags,
                     "--report", str(report), "--junit", str(junit), env=env, stdin=stdin, files=[report, junit],
                     expect=5)
    assert json.loads(report.read_text())["steps"][2]["status"] == "failed"
    assert failed.stderr.count("\n") == 1

    if source not in ("stdin", "helper"):
        return  # a full release per source would add minutes and no new path
    config = write_release_config(bed, f"{canary_registry.host}/{unique}/rel", name=f"{unique}-rel", port=port)
    flags, env, stdin = bed.with_source(source, canary_registry.host, canary_registry.user)
    env["DB_PASSWORD"] = CANARY
    bed.run("release", *mode(i + 2), "--config", str(config), "-t", "1", *flags, "--report", str(report),
            "--junit", str(junit), env=env, stdin=stdin, files=[report, junit])
    assert get(f"http://127.0.0.1:{port}/") == "released"
    container = engine_api.expect("GET", f"/containers/{unique}-rel/json").json()
    assert f"DB_PASSWORD={CANARY}" in container["Config"]["Env"]  # it got there, yet was never shown
    # what was deployed, and its plan, say nothing either
    bed.run("history", "--name", f"{unique}-rel", env=env)
    bed.run("history", "--name", f"{unique}-rel", "--json", env=env)


# -- deploy and plan ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("source", SOURCES)
def test_deploy_and_plan_with_every_source(bed: Bed, source: str, canary_registry: PrivateRegistry,
                                           registry: Registry, app_image: str, unique: str) -> None:
    i = SOURCES.index(source)
    name = f"{unique}-web"
    port = fakes.free_port()
    spec = ["--name", name, "-p", f"127.0.0.1:{port}:8080", "--settle", "1", "-e", "MODE=test",
            "--env-file", str(secret_env_file(bed)), "--secret-env", "APP_TOKEN=DEPLOY_TOKEN"]

    # a pull refused: the canary is the wrong password; nothing is changed, one line
    flags, env, stdin = bed.with_source(source, registry.host, registry.user)
    env.update(DB_PASSWORD=CANARY, DEPLOY_TOKEN=CANARY)
    refused = bed.run("deploy", *mode(i), *spec, "--image", f"{registry.host}/{unique}/absent:1", *flags,
                      "-e", "DB_PASSWORD", env=env, stdin=stdin, expect=1)
    assert "unauthorized" in refused.stderr and refused.stderr.count("\n") == 1
    # the other deploy targets, refused the same way: one container on several hosts (the digest is
    # asked for with the credentials first), a swarm service (the engine here may be in no swarm)
    bed.run("deploy", *mode(i + 2), *spec, "--image", f"{registry.host}/{unique}/absent:1", *flags,
            "--hosts", bed.engine.docker_host, env=env, stdin=stdin, expect=1)
    bed.run("deploy", *mode(i), "--name", name, "--image", f"{registry.host}/{unique}/absent:1", *flags,
            "-e", "DB_PASSWORD", "--target", f"service:{name}", env=env, stdin=stdin, expect=None)

    # plan (= deploy --dry-run) takes the same flags and shows the secrets redacted
    planned = bed.run("plan", *mode(i), *spec, "--image", app_image, *flags, "-e", "DB_PASSWORD",
                      env=env, stdin=stdin)
    if "--quiet" not in mode(i):
        assert "DB_PASSWORD=<redacted>" in planned.stdout and "APP_SETTING=<redacted>" in planned.stdout
        assert "APP_TOKEN=<redacted>" in planned.stdout and "MODE=test" in planned.stdout

    if source not in ("file", "config-auths"):
        return  # two real pulls with credentials are enough; the sources' paths are the push's
    image = f"{canary_registry.host}/{unique}/web:1"
    bed.run("tag", app_image, image, env=env)
    flags, env, stdin = bed.with_source(source, canary_registry.host, canary_registry.user)
    env.update(DB_PASSWORD=CANARY, DEPLOY_TOKEN=CANARY)
    bed.run("push", image, *flags, env=env, stdin=stdin)
    # --pull always: a real pull from the canary's registry, with the credentials from this source
    deployed = bed.run("deploy", *mode(i + 1), *spec, "--image", image, "--pull", "always", *flags,
                       "-e", "DB_PASSWORD", env=env, stdin=stdin)
    assert get(f"http://127.0.0.1:{port}/") == "secrets app"
    if "--quiet" not in mode(i + 1):
        assert f"credentials for {canary_registry.host}:" in deployed.stdout
    bed.run("deploy", "--dry-run", *spec, "--image", image, *flags, "-e", "DB_PASSWORD", env=env, stdin=stdin)


@pytest.mark.e2e
def test_secret_env_of_a_failing_container_is_scrubbed_from_its_logs(bed: Bed, app_image: str, unique: str,
                                                                    engine_api: EngineAPI) -> None:
    name = f"{unique}-crash"
    env = bed.ambient([])
    env["OTHER_TOKEN"] = CANARY

    def spec(container: str, port: int) -> List[str]:
        return ["--name", container, "--image", app_image, "-p", f"127.0.0.1:{port}:8080", "--settle", "1",
                "-e", "DB_PASSWORD", "--env-file", str(secret_env_file(bed)),
                "--secret-env", "APP_TOKEN=OTHER_TOKEN"]

    port = fakes.free_port()
    bed.run("deploy", *spec(name, port), "-e", "MODE=one", env=env)
    bed.run("deploy", "--quiet", *spec(name, port), "-e", "MODE=two", env=env)
    # the new one prints its environment and dies: its log lines are shown, secrets replaced
    crashed = bed.run("deploy", "--timestamps", *spec(name, port), "--", "sh", "-c",
                      "env; echo token=$APP_TOKEN; exit 3", env=env, expect=6)
    assert "DB_PASSWORD=<redacted>" in crashed.stdout and "token=<redacted>" in crashed.stdout
    assert "APP_SETTING=<redacted>" in crashed.stdout
    # a first deploy that fails has nothing to go back to
    bed.run("deploy", *spec(name + "-2", fakes.free_port()), "--", "sh", "-c", "env; exit 4", env=env, expect=7)
    # rollback (dry and real), history and prune around containers that hold the secret
    bed.run("rollback", "--name", name, "--dry-run", env=env)
    bed.run("rollback", "--name", name, "--settle", "1", env=env)
    bed.run("history", "--name", name, env=env)
    bed.run("prune", "--name", name, "--keep", "1", "--dry-run", env=env)
    # "-e =VALUE" (a name forgotten) is refused without echoing the value
    env["ONLY_VALUE"] = f"={CANARY}"
    proc = subprocess.run(["sh", "-c", f'{sys.executable} -m cdtools.deploy --name {name} --image {app_image} '
                                       '-e "$ONLY_VALUE"'], cwd=str(bed.tmp), env=env, capture_output=True,
                          text=True, timeout=120)
    bed.leaks.check("deploy -e =VALUE", proc.stdout + proc.stderr)
    assert proc.returncode == 2 and "empty name" in proc.stderr


@pytest.mark.e2e
def test_secret_env_from_argv_spec_files_and_config_is_redacted(bed: Bed, app_image: str, unique: str,
                                                                registry: Registry) -> None:
    env = bed.ambient([])
    name = f"{unique}-files"
    # -e DB_PASSWORD=VALUE written out on the command line (argv is the user's choice here)
    planned = bed.run("plan", "--name", name, "--image", app_image, "-e", f"DB_PASSWORD={CANARY}", env=env,
                      argv_secret=True)
    assert "DB_PASSWORD=<redacted>" in planned.stdout
    # a --spec file's Env, as people write it for the Engine API
    spec = bed.tmp / "create.json"
    spec.write_text(json.dumps({"Image": "ignored", "Env": [f"DB_PASSWORD={CANARY}", f"SESSION_KEY={CANARY}"],
                                "HostConfig": {"RestartPolicy": {"Name": "always"}}}))
    planned = bed.run("deploy", "--dry-run", "--name", name, "--image", app_image, "--spec", str(spec), env=env)
    assert "SESSION_KEY=<redacted>" in planned.stdout
    # broken files that hold the secret: refused, never quoted
    spec.write_text('{"Env": ["DB_PASSWORD=%s", ' % CANARY)
    bed.run("deploy", "--name", name, "--image", app_image, "--spec", str(spec), env=env, expect=2)
    bad_env = bed.tmp / "bad.env"
    bad_env.write_text(f"GOOD=1\nnot a key {CANARY}\n")
    bed.run("deploy", "--name", name, "--image", app_image, "--env-file", str(bad_env), env=env, expect=2)
    bed.run("container", "create", name, "--image", app_image, "--env-file", str(bad_env), env=env, expect=2)
    # the release config: a literal secret in deploy.env, push credentials named by push.*_env
    config = bed.tmp / "literal.json"
    (bed.tmp / "ctx").mkdir(exist_ok=True)
    (bed.tmp / "ctx" / "Dockerfile").write_text("FROM busybox\n")
    config.write_text(json.dumps({
        "image": f"{registry.host}/{unique}/lit", "build": {"context": "ctx"},
        "push": {"username_env": "LIT_USER", "password_env": "LIT_PASSWORD"},
        "deploy": {"name": name, "env": {"DB_PASSWORD": CANARY}}}))
    env.update(LIT_USER=registry.user, LIT_PASSWORD=CANARY)
    report = bed.tmp / "lit.json"
    dry = bed.run("release", "--config", str(config), "--dry-run", "--report", str(report), env=env, files=[report])
    assert "environment LIT_PASSWORD" in dry.stdout and "DB_PASSWORD=<redacted>" in dry.stdout
    bed.run("release", "--config", str(config), "--report", str(report), env=env, files=[report], expect=5)


# -- the other steps, with the canary all around them --------------------------------------------


@pytest.mark.e2e
def test_every_other_step_with_the_canary_in_its_environment(bed: Bed, canary_registry: PrivateRegistry,
                                                             registry: Registry, app_image: str,
                                                             unique: str) -> None:
    env = bed.ambient([canary_registry.host, registry.host])
    ctx = bed.tmp / "build-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nARG MODE\nCOPY f /\n")
    (ctx / "f").write_text("x\n")
    bed.run("build", "-t", f"{unique}-b:1", "--build-arg", "MODE=test", str(ctx), env=env)
    bed.run("build", "--quiet", "--timestamps", "-t", f"{unique}-b:2", str(ctx), env=env, how="dispatch")
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN exit 2\n")
    bed.run("build", "-t", f"{unique}-b:3", str(ctx), env=env, expect=4)

    bed.run("tag", f"{unique}-b:1", f"{unique}-b:tagged", env=env)
    bed.run("tag", f"{unique}-absent:1", f"{unique}-b:x", env=env, expect=1)

    name = f"{unique}-single"
    bed.run("container", "create", name, "--image", app_image, "-e", "DB_PASSWORD",
            "--env-file", str(secret_env_file(bed)), env=env)
    bed.run("container", "start", name, env=env)
    bed.run("container", "--timestamps", "stop", name, "-t", "0", env=env)
    bed.run("container", "rm", name, env=env)
    bed.run("container", "create", name, "--image", f"{unique}-absent:1", "-e", "DB_PASSWORD", env=env, expect=1)
    bed.run("container", "rm", f"{unique}-absent", env=env, expect=1)

    bed.run("image", "rm", f"{unique}-b:tagged", env=env)
    bed.run("image", "rm", f"{unique}-absent:1", env=env, expect=1)
    bed.run("history", "--name", f"{unique}-none", env=env)
    bed.run("rollback", "--name", f"{unique}-none", env=env, expect=2)
    bed.run("prune", "--name", f"{unique}-none", "--keep", "1", env=env, expect=2)
    bed.run("prune", "--repository", f"{unique}-b", "--keep", "1", env=env)

    pyz = bed.tmp / "cdtools.pyz"
    bed.run("vendor", "-o", str(pyz), env=env)
    bed.run("vendor", "-o", str(bed.tmp), env=env, expect=2)
    # the zipapp is an entry point too: a push through it, refused (the canary is the wrong password)
    bed.run("tag", app_image, f"{registry.host}/{unique}/zip:1", env=env)
    bed.run("push", f"{registry.host}/{unique}/zip:1", env=env, expect=5, how=str(pyz))
    listing = subprocess.run([sys.executable, "-m", "cdtools"], cwd=str(bed.tmp), env=env, capture_output=True,
                             text=True, timeout=60)
    bed.leaks.check("python -m cdtools", listing.stdout + listing.stderr)
    assert listing.returncode == 0 and "push" in listing.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("step", steps.names())
def test_help_of_every_step(bed: Bed, step: str, canary_registry: PrivateRegistry, registry: Registry) -> None:
    env = bed.ambient([canary_registry.host, registry.host])
    env.update(DEPLOY_REG_SECRET=CANARY)
    bed.run(step, "-h", env=env)
    bed.run(step, "--help", env=env, how="dispatch")


# -- in-process: main() under capsys, and the library's exceptions -------------------------------


def _connect() -> engine_mod.Engine:
    return engine_mod.connect(settings_mod.from_env(dict(os.environ)))


@pytest.mark.e2e
@pytest.mark.parametrize("source", ["stdin", "env", "helper"])
def test_push_main_in_process(source: str, bed: Bed, canary_registry: PrivateRegistry, registry: Registry,
                              app_image: str, unique: str, monkeypatch, capsys) -> None:
    flags, env, stdin = bed.with_source(source, canary_registry.host, canary_registry.user)
    for key in ("CDTOOLS_REGISTRY_USERNAME", "CDTOOLS_REGISTRY_PASSWORD", "DOCKER_CONFIG", "CDTEST_CREDENTIALS_FILE",
                "PATH", "DOCKER_HOST", "HOME"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    good = f"{canary_registry.host}/{unique}/inproc:1"
    engine_mod.connect(settings_mod.from_env({"DOCKER_HOST": bed.engine.docker_host})).tag(
        app_image, f"{canary_registry.host}/{unique}/inproc", "1")
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = push.main([*flags, "--timestamps", good])
    except BaseException as exc:  # noqa: BLE001 - whatever escapes main is what a user would see
        bed.leaks.check(f"push.main ({source}): escaped", exception_text(exc))
        raise
    out, err = capsys.readouterr()
    bed.leaks.check(f"push.main ({source})", out + err)
    assert code == 0, err

    flags, env, stdin = bed.with_source(source, registry.host, registry.user)
    for key in ("CDTOOLS_REGISTRY_USERNAME", "CDTOOLS_REGISTRY_PASSWORD", "DOCKER_CONFIG", "CDTEST_CREDENTIALS_FILE"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    bad = f"{registry.host}/{unique}/inproc:1"
    engine_mod.connect(settings_mod.from_env({"DOCKER_HOST": bed.engine.docker_host})).tag(
        app_image, f"{registry.host}/{unique}/inproc", "1")
    code = push.main([*flags, "--quiet", bad])
    out, err = capsys.readouterr()
    bed.leaks.check(f"push.main ({source}), refused", out + err)
    assert code == 5


@pytest.mark.e2e
def test_release_main_in_process_writes_clean_reports(bed: Bed, registry: Registry, unique: str, monkeypatch,
                                                      capsys) -> None:
    report, junit = bed.tmp / "in-report.json", bed.tmp / "in-report.xml"
    config = write_release_config(bed, f"{registry.host}/{unique}/inrel", name=f"{unique}-inrel",
                                  port=fakes.free_port())
    monkeypatch.setenv("DOCKER_HOST", bed.engine.docker_host)
    monkeypatch.setenv("CDTOOLS_REGISTRY_USERNAME", registry.user)
    monkeypatch.setenv("CDTOOLS_REGISTRY_PASSWORD", CANARY)
    monkeypatch.setenv("DB_PASSWORD", CANARY)
    code = release.main(["--config", str(config), "-t", "1", "--report", str(report), "--junit", str(junit)])
    out, err = capsys.readouterr()
    for where, text in (("out+err", out + err), ("report.json", report.read_text()), ("report.xml", junit.read_text())):
        bed.leaks.check(f"release.main: {where}", text)
    assert code == 5
    code = release.main(["--config", str(config), "-t", "1", "--dry-run", "--report", str(report)])
    out, err = capsys.readouterr()
    bed.leaks.check("release.main --dry-run", out + err + report.read_text())
    assert code == 0 and "<redacted>" in out


@pytest.mark.e2e
def test_library_exceptions_and_their_tracebacks(bed: Bed, registry: Registry, app_image: str, unique: str,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", bed.engine.docker_host)
    engine = _connect()
    wrong = auth.resolve(registry.host, username=registry.user, password=CANARY, password_source="--password-stdin")
    engine.tag(app_image, f"{registry.host}/{unique}/lib", "1")
    shown = io.StringIO()
    with pytest.raises(PushError) as pushed:
        push.run(engine, reference.parse(f"{registry.host}/{unique}/lib:1"), wrong, console=Console(shown))
    bed.leaks.check("push.run: PushError", exception_text(pushed.value))
    bed.leaks.check("push.run: console", shown.getvalue())

    # the stream itself: the daemon's error record, raised by the engine as it comes
    with pytest.raises(CdtoolsError) as streamed:
        for _ in engine.push(f"{registry.host}/{unique}/lib", "1", wrong.header()):
            pass
    bed.leaks.check("engine.push: StreamError", exception_text(streamed.value))

    opts = deploy.DeployOptions(name=f"{unique}-lib", image=f"{registry.host}/{unique}/absent:1",
                                spec_args=_spec_args(["-e", f"DB_PASSWORD={CANARY}"]))
    with pytest.raises(CdtoolsError) as deployed:  # a refused pull: nothing changed
        deploy.run(engine, opts, settings_mod.current(), console=Console(shown), credentials=wrong)
    bed.leaks.check("deploy.run: refused pull", exception_text(deployed.value))
    bed.leaks.check("deploy.run: console", shown.getvalue())


def _spec_args(argv: List[str]):  # type: ignore[no-untyped-def]
    p = deploy.build_parser("test", "test")
    return p.parse_args(["--name", "x", "--image", "y", *argv])
