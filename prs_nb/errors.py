"""The prs_nb exception tree.

::

    PrsError                                  every error prs_nb raises on purpose
     +-- ConfigError(PrsError, ValueError)     a setting, argument or spec is invalid
     +-- InputDataError(PrsError, ValueError)  an input cannot be listed or read
     |    +-- MLTableError                      an MLTable file is malformed or asks for what prs_nb cannot do
     +-- EntryScriptError(PrsError, ImportError)  the entry script/functions cannot be loaded
     +-- JobFailedError(PrsError, RuntimeError)   a job ended Failed/Canceled (carries the RunResult)
     +-- WorkerError(PrsError, RuntimeError)      a worker process died / timed out (per attempt)
     +-- UserCodeError(PrsError, RuntimeError)    init()/run()/shutdown() raised (per attempt);
                                                  __cause__: RemoteTraceback (the worker's traceback)
     +-- ResumeError(PrsError, RuntimeError)      a run cannot be resumed (input changed, output gone,
                                                  still running, unsigned or unsaved job)

A message says what failed, where, what was expected and what was got, and what to do.
Exceptions carry structured fields and survive pickling (they cross process boundaries).
"""

from __future__ import annotations

from typing import Any


class PrsError(Exception):
    """Base class of every error prs_nb raises on purpose."""


class ConfigError(PrsError, ValueError):
    """A job setting, argument or spec file is invalid."""


class InputDataError(PrsError, ValueError):
    """An input cannot be listed, split or read."""


class MLTableError(InputDataError):
    """An MLTable file is malformed or uses a transformation prs_nb does not run locally."""


class EntryScriptError(PrsError, ImportError):
    """The entry script or the shipped functions cannot be loaded."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text. Chained as the
    ``__cause__`` of :class:`UserCodeError`, so Python and Jupyter print the user's own frames
    first (as ``concurrent.futures`` does for a process pool)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteTraceback, (self.tb,))


class WorkerError(PrsError, RuntimeError):
    """A worker process died or was killed (timeout) while running a mini-batch."""

    def __init__(self, message: str, *, exit_code: int | None = None, kind: str = "died",
                 mini_batch_index: int | None = None, attempt: int | None = None, process_name: str | None = None,
                 pid: int | None = None, first_items: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.kind = kind
        self.mini_batch_index = mini_batch_index
        self.attempt = attempt
        self.process_name = process_name
        self.pid = pid
        self.first_items = first_items

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_worker_error, (str(self), self.exit_code, self.kind, self.mini_batch_index, self.attempt,
                                        self.process_name, self.pid, self.first_items))


def _rebuild_worker_error(message: str, exit_code: int | None, kind: str, idx: int | None = None,
                          attempt: int | None = None, process_name: str | None = None, pid: int | None = None,
                          first_items: str = "") -> WorkerError:
    return WorkerError(message, exit_code=exit_code, kind=kind, mini_batch_index=idx, attempt=attempt,
                       process_name=process_name, pid=pid, first_items=first_items)


class UserCodeError(PrsError, RuntimeError):
    """The user's init()/run()/shutdown() raised. ``remote_traceback`` is the user's own traceback
    (their frames only, innermost last), also chained as a :class:`RemoteTraceback` ``__cause__``;
    ``mini_batch_index`` (None for init()), ``first_items``, ``attempt``, ``process_name``, ``pid``
    say where it happened."""

    def __init__(
        self,
        message: str,
        *,
        exc_type: str = "",
        remote_traceback: str = "",
        mini_batch_index: int | None = None,
        attempt: int | None = None,
        process_name: str | None = None,
        pid: int | None = None,
        first_items: str = "",
    ) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback
        self.mini_batch_index = mini_batch_index
        self.attempt = attempt
        self.process_name = process_name
        self.pid = pid
        self.first_items = first_items
        if remote_traceback:
            self.__cause__ = RemoteTraceback(remote_traceback)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_user_code_error,
            (super().__str__(), self.exc_type, self.remote_traceback, self.mini_batch_index, self.attempt,
             self.process_name, self.pid, self.first_items),
        )

    def __str__(self) -> str:
        base = super().__str__()
        where = _innermost_frame(self.remote_traceback)
        return f"{base}\n  at {where}" if where else base


def _innermost_frame(tb: str) -> str:
    """'file.py line 3, in run: return 1 / x' from a formatted traceback (its last frame)."""
    lines = tb.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if line.startswith('File "'):
            code = lines[i + 1].strip() if i + 1 < len(lines) and not lines[i + 1].strip().startswith("File ") else ""
            loc = line[len("File "):].replace('"', "", 2)
            return f"{loc}: {code}" if code else loc
    return ""


def _rebuild_user_code_error(message: str, exc_type: str, tb: str, idx: int | None, attempt: int | None,
                             process_name: str | None, pid: int | None, first_items: str = "") -> UserCodeError:
    return UserCodeError(message, exc_type=exc_type, remote_traceback=tb, mini_batch_index=idx,
                         attempt=attempt, process_name=process_name, pid=pid, first_items=first_items)


class ResumeError(PrsError, RuntimeError):
    """An interrupted run cannot be resumed: its input changed, its output was deleted, another
    driver still runs it, or its saved job is missing, unsigned or could not be saved."""


class JobFailedError(PrsError, RuntimeError):
    """A job ended Failed or Canceled; ``result`` holds the RunResult with counts, errors and log paths."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (JobFailedError, (str(self), self.result))


__all__ = [
    "PrsError",
    "ConfigError",
    "InputDataError",
    "MLTableError",
    "EntryScriptError",
    "WorkerError",
    "UserCodeError",
    "JobFailedError",
    "ResumeError",
    "RemoteTraceback",
]
