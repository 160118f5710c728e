"""Errors raised by pipekit_core.

Every message names what failed (module, file, field, connection) and says what to do next.
``TransientError`` marks faults worth retrying (a lost connection); everything else is terminal.
"""

from __future__ import annotations


class PipekitError(Exception):
    """Base class of every pipekit error."""

    transient: bool = False
    committed: bool = False  # set on a run's failure when its merge had committed before it


class TransientError(PipekitError):
    """A fault that may pass on its own (connection refused or dropped); retried per `retries`."""

    transient = True


class ConfigError(PipekitError):
    """pipekit.yaml, an environment variable or a path is wrong."""


class DefinitionError(PipekitError):
    """The module definitions do not validate; carries the list of problems."""

    def __init__(self, problems: list) -> None:  # list[Problem]
        self.problems = problems
        lines = [str(p) for p in problems[:20]]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__("module definitions have errors:\n" + "\n".join(lines) + more)


class SecretError(PipekitError):
    """A `$VAR` reference could not be resolved, or the secrets file is unusable."""


class RepositoryError(PipekitError):
    """The repository (a pipekit.db file or a PostgreSQL database) could not be opened, used or upgraded."""


class LockHeldError(PipekitError):
    """Another run of the module holds its lock. Its message says what happened; what to do
    depends on where the run was started (the CLI and Dagster each add their own hint)."""


def lock_conflict(e: BaseException | None) -> LockHeldError | None:
    """The LockHeldError behind ``e`` (itself, or the cause of a phase error), if any."""
    while e is not None:
        if isinstance(e, LockHeldError):
            return e
        e = e.__cause__
    return None


class UnknownModuleError(PipekitError):
    """A module or group name that the definitions do not have."""


class WatermarkError(PipekitError):
    """A watermark value was refused or could not be resolved."""


class DuplicateKeyError(PipekitError):
    """Staged rows repeat a merge key; the merge was not attempted."""


class EmptySourceError(PipekitError):
    """A full refresh would replace a non-empty table with zero rows (set allow_empty: true)."""


class TransportError(PipekitError):
    """A transport failed to move rows or run a query."""


class JrunnerError(TransportError):
    """jrunner exited non-zero or printed an exception trace."""

    def __init__(self, message: str, *, exit_code: int | None, command: str, last_lines: list[str]) -> None:
        self.exit_code = exit_code
        self.command = command
        self.last_lines = last_lines
        tail = "\n".join(last_lines[-20:])
        super().__init__(f"{message} (exit code {exit_code})\ncommand: {command}\nlast output:\n{tail}")


class HookError(PipekitError):
    """A post-merge hook failed."""


class RunCancelled(PipekitError):
    """The run was cancelled (Ctrl-C, SIGTERM, Dagster terminate)."""


class PhaseError(PipekitError):
    """Wraps a failure with the module and phase it happened in."""

    def __init__(self, module: str, phase: str, cause: BaseException) -> None:
        self.module = module
        self.phase = phase
        self.cause = cause
        self.transient = bool(getattr(cause, "transient", False))
        super().__init__(f"module '{module}' failed in phase '{phase}': {cause}")


class CommitUnknownError(PipekitError):
    """The merge's COMMIT was sent and its outcome could not be learnt: never retried blindly.

    The next run of the module reads the destination's state row and records the truth.
    """


def is_retryable(exc: BaseException) -> bool:
    """The one decision whether a failed run may be retried (``retries:``, Dagster's RetryPolicy).

    Only faults that may pass on their own (a refused or dropped connection) and that happened
    while nothing was committed: a run whose merge committed (``committed`` set on it) or whose
    commit outcome is unknown is never retried, whatever the fault looked like.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    transient = False
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, CommitUnknownError) or getattr(e, "committed", False):
            return False
        if getattr(e, "transient", False):
            transient = True
        else:
            from pipekit_core.db import is_transient_db_error  # db imports this module

            transient = transient or is_transient_db_error(e)
        e = getattr(e, "cause", None) or getattr(e, "original", None) or e.__cause__
    return transient


# Errors a program bug raises; a failure caused by one of these keeps its traceback wherever it is shown.
_BUG_TYPES = (AssertionError, AttributeError, IndexError, KeyError, NameError, TypeError, UnboundLocalError)


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure pipekit anticipates and explains in its message (a held lock, a
    refused empty result, a database error such as a constraint violation, a bad definition), so
    that its traceback tells the user nothing more; False for a bug somewhere (an AttributeError
    inside a phase, ...), whose traceback is how it gets fixed."""
    if not isinstance(exc, PipekitError):
        return False
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, _BUG_TYPES):
            return False
        todo += [getattr(e, "cause", None), e.__cause__]
    return True
