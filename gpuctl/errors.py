"""One error hierarchy: every failure a user can meet carries a fix hint and an exit code.

The CLI prints ``error: <message>`` and ``hint: <hint>`` and exits with ``exit_code``;
the TUI shows the same two lines as a notification. Nothing above this layer needs to
know which SDK or subsystem failed.
"""

from __future__ import annotations

import errno

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_PROVIDER = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = 130


class GpuctlError(Exception):
    """Base of every error gpuctl reports to a user."""

    exit_code: int = EXIT_USAGE
    default_hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """Message and hint on one line, for logs and notifications."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(GpuctlError):
    """Bad preset, override, config file or command-line value."""

    exit_code = EXIT_USAGE


class NotFoundError(GpuctlError):
    """A run, instance or file the user named does not exist."""

    exit_code = EXIT_USAGE


class StateError(GpuctlError):
    """The local state store is unusable (corrupt, foreign, newer schema)."""

    exit_code = EXIT_USAGE


class CredentialsError(GpuctlError):
    """Missing, expired or insufficient cloud credentials."""

    exit_code = EXIT_PROVIDER


class ProviderError(GpuctlError):
    """A cloud API refused or failed a request."""

    exit_code = EXIT_PROVIDER


class CapacityError(ProviderError):
    """No capacity for the requested offer anywhere we were allowed to try."""


class QuotaError(ProviderError):
    """An account limit (vCPU quota, droplet limit) blocks the request."""


class RemoteError(GpuctlError):
    """SSH, sync or a command on the machine failed."""

    exit_code = EXIT_PROVIDER


class HostKeyError(RemoteError):
    """The machine's host key changed since it was pinned: possible interception."""


class RunFailed(GpuctlError):
    """The training run itself failed (the trainer exited with an error)."""

    exit_code = EXIT_RUN_FAILED


class BudgetExceeded(GpuctlError):
    """A budget guard refused a launch or stopped a run."""

    exit_code = EXIT_BUDGET


class Interrupted(GpuctlError):
    """The user pressed Ctrl-C; the run keeps going on its machine."""

    exit_code = EXIT_INTERRUPTED


def from_os_error(exc: OSError, doing: str = "") -> GpuctlError:
    """A filesystem failure on this machine (read-only, full, a file where a directory
    belongs...) as one line that names the path and what to do about it."""
    path = exc.filename or ""
    what = f"cannot {doing}" if doing else f"cannot use {path or 'a file'}"
    reason = exc.strerror or str(exc)
    code = exc.errno
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = f"make {path or 'it'} writable, or choose a writable place"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space on that disk, or choose another place"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        reason = f"{path} is in the way: a file where a directory belongs" if path else reason
        hint = "move that file aside, or choose another place"
    elif code == errno.ENOENT:
        hint = f"{path or 'the path'} does not exist: create it or choose another place"
    elif code == errno.EISDIR:
        hint = f"{path or 'it'} is a directory where a file belongs: move it aside"
    else:
        hint = "check the path and the disk"
    where = f" ({path})" if path and path not in reason and path not in what else ""
    return ConfigError(f"{what}: {reason}{where}", hint=hint)
