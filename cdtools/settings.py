"""The only code that reads the environment.

``from_env(os.environ)`` turns the process environment into a frozen
:class:`Settings`; everything else in cdtools takes arguments.  Tests build
``Settings`` from a plain dict.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Settings:
    docker_host: str = DEFAULT_DOCKER_HOST
    tls_verify: bool = False
    #: DOCKER_TLS set without DOCKER_TLS_VERIFY: TLS with the client cert, no server check
    tls: bool = False
    cert_path: str = ""
    api_version: Optional[str] = None
    docker_config: str = ""
    #: PATH, used to find docker-credential-* helpers and ssh
    path: str = ""
    #: Jenkins' job context, '' when not set
    build_number: str = ""
    git_commit: str = ""
    git_branch: str = ""
    git_url: str = ""
    build_url: str = ""
    job_name: str = ""
    #: running under CI (plain line output, no terminal codes)
    ci: bool = False
    #: SOURCE_DATE_EPOCH (reproducible-builds.org): the time stamped into the zipapp's
    #: entries; '' when unset.  Kept as text: only ``cdtools.vendor`` uses it and says
    #: when it is malformed, so a bad value never breaks the other steps.
    source_date_epoch: str = ""
    #: a snapshot of the environment, for variables whose names the user chooses
    #: (--password-env, ${VAR} in a config file); never printed
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def lookup(self, name: str) -> Optional[str]:
        """A variable the user named (None when unset)."""
        return self.env.get(name)


def _truthy(value: Optional[str]) -> bool:
    return value is not None and value != "" and value.lower() not in ("0", "false", "no")


def from_env(env: Mapping[str, str]) -> Settings:
    """Read every environment variable cdtools honours, once."""
    home = env.get("HOME") or os.path.expanduser("~")
    docker_config = env.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    tls_verify = _truthy(env.get("DOCKER_TLS_VERIFY"))
    branch = env.get("BRANCH_NAME") or env.get("GIT_BRANCH") or ""
    return Settings(
        docker_host=env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
        tls_verify=tls_verify,
        tls=tls_verify or _truthy(env.get("DOCKER_TLS")),
        cert_path=env.get("DOCKER_CERT_PATH") or docker_config,
        api_version=env.get("DOCKER_API_VERSION") or None,
        docker_config=docker_config,
        path=env.get("PATH", os.defpath),
        build_number=env.get("BUILD_NUMBER", ""),
        git_commit=env.get("GIT_COMMIT", ""),
        git_branch=branch,
        git_url=env.get("GIT_URL", ""),
        build_url=env.get("BUILD_URL", ""),
        job_name=env.get("JOB_NAME", ""),
        ci=_truthy(env.get("CI")) or bool(env.get("JENKINS_URL")) or bool(env.get("BUILD_URL")),
        source_date_epoch=env.get("SOURCE_DATE_EPOCH", "").strip(),
        env=dict(env),
    )


def current() -> Settings:
    """Settings of this process."""
    return from_env(os.environ)
