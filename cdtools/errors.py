"""Every error cdtools raises, in one tree.

Each class says when it is raised and which exit code a command ends with
when it reaches ``main()`` (see ``EXIT_CODES`` and README "Exit codes")::

    CdtoolsError                    1  base; anything not more specific
    ├── UsageError                  2  bad flag, bad file given by the user, bad config
    │   ├── InvalidReference        2  an image reference that Docker's grammar rejects
    │   └── CredentialsError        2  broken config.json, failing credential helper
    ├── TransportError              3  cannot reach the daemon; connection lost mid-way; TLS/ssh failure
    │   └── StreamTimeout           3  the step ran past --timeout
    ├── APIError                    1  the daemon answered an HTTP error status
    │   ├── NotFound                1  404: no such image / container
    │   └── Conflict                1  409: name in use, container running
    ├── StreamError                 1  an ``error``/``errorDetail`` record in a progress stream
    ├── BuildError                  4  the build step failed
    ├── PushError                   5  the push step failed (denied, unauthorized, no digest)
    ├── DeployError                 7  deploy failed and the service could not be restored
    │   └── RolledBack              6  deploy failed; the previous container runs again
    └── LockError                   8  another deploy holds the lock on this name
"""
from __future__ import annotations

from typing import Dict, Optional, Type


class CdtoolsError(Exception):
    """Base of every cdtools error; ``str(exc)`` is one line fit for a user."""

    exit_code = 1

    def __str__(self) -> str:
        text = super().__str__()
        # one clear line, always
        return " ".join(text.split())


class UsageError(CdtoolsError):
    """A bad flag, a missing or malformed file the user pointed at, a bad config value."""

    exit_code = 2


class InvalidReference(UsageError):
    """An image reference that Docker's reference grammar rejects."""


class CredentialsError(UsageError):
    """Registry credentials could not be read: broken config.json, failing helper."""


class TransportError(CdtoolsError):
    """The daemon could not be reached, or the connection broke mid-request."""

    exit_code = 3


class StreamTimeout(TransportError):
    """The step ran past its ``--timeout``."""


class APIError(CdtoolsError):
    """The daemon answered with an HTTP error status; ``message`` is its reason."""

    def __init__(self, status: int, message: str, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        super().__init__(f"daemon answered {status}: {message}")


class NotFound(APIError):
    """404: no such image, container or network."""


class Conflict(APIError):
    """409: a name is in use, or a container is in the wrong state."""


class StreamError(CdtoolsError):
    """A progress stream carried an ``error``/``errorDetail`` record."""

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        self.message = message
        self.code = code
        super().__init__(message)


class BuildError(CdtoolsError):
    """The build step failed."""

    exit_code = 4


class PushError(CdtoolsError):
    """The push step failed: denied, unauthorized, or no digest reported."""

    exit_code = 5


class DeployError(CdtoolsError):
    """Deploy failed and the previous container could not be brought back."""

    exit_code = 7


class RolledBack(DeployError):
    """Deploy failed; the previous container was restored and is running."""

    exit_code = 6


class LockError(CdtoolsError):
    """Another deploy holds the lock for this container name."""

    exit_code = 8


def api_error(status: int, message: str, *, method: str = "", path: str = "") -> APIError:
    """The APIError subclass that fits an HTTP status."""
    cls: Type[APIError] = {404: NotFound, 409: Conflict}.get(status, APIError)
    return cls(status, message, method=method, path=path)


#: exit code -> what it means; README's table is generated from the same words
EXIT_CODES: Dict[int, str] = {
    0: "success",
    1: "the daemon refused a request, or another error; a deploy that ends so changed nothing",
    2: "usage: bad flag, file, config or image reference",
    3: "connection: the daemon could not be reached or the connection broke",
    4: "build failed",
    5: "push failed",
    6: "deploy failed and was rolled back: the previous container is running",
    7: "deploy failed with no previous container to go back to, or the rollback failed",
    8: "lock: another deploy of this name is in progress",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM, a Jenkins abort); a deploy under way restored the old container first",
}
