"""Events: the only way the engine talks to the outside (progress bars, dashboard, logs, results).

A listener is any object with ``on_event(event)``. Events are small frozen dataclasses, created once
per occurrence; listeners must be cheap (the engine calls them on its scheduling thread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class JobStarted:
    job_name: str
    run_id: str
    run_dir: str
    workers: int
    backend: str
    time: float
    # Thread-safe ``cancel(reason)`` of this run (a notebook Stop button keeps it); None if not cancelable.
    cancel: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BatchesListed:
    """Listing progress: ``total`` mini-batches created so far; ``complete`` once listing ended."""

    total: int
    complete: bool


@dataclass(frozen=True)
class WorkerStarted:
    node_id: int
    process_name: str
    pid: int
    time: float


@dataclass(frozen=True)
class WorkerReady:
    """``init()`` finished in the worker."""

    node_id: int
    process_name: str
    pid: int
    init_seconds: float
    host: str = ""  # the machine it runs on (ray: the Ray node's address)


@dataclass(frozen=True)
class WorkerDied:
    node_id: int
    process_name: str
    pid: int
    exit_code: int | None
    reason: str
    time: float


@dataclass(frozen=True)
class InitFailed:
    node_id: int
    process_name: str
    pid: int
    error: str
    exc_type: str
    traceback: str


@dataclass(frozen=True)
class ShutdownFailed:
    """``shutdown()`` raised in a worker (the job's results stand; the error is reported)."""

    node_id: int
    process_name: str
    pid: int
    error: str
    exc_type: str
    traceback: str


@dataclass(frozen=True)
class BatchStarted:
    index: int
    attempt: int
    node_id: int
    process_name: str
    time: float


@dataclass(frozen=True)
class BatchSucceeded:
    index: int
    attempt: int
    node_id: int
    process_name: str
    start: float
    end: float
    items: int
    returned: int
    failed_items: int
    run_seconds: float


@dataclass(frozen=True)
class BatchFailed:
    """One failed attempt. ``will_retry`` False means the mini-batch is now failed for good."""

    index: int
    attempt: int
    node_id: int
    process_name: str
    pid: int
    start: float
    end: float
    items: int | None
    kind: str  # "exception" | "timeout" | "worker_died" | "bad_return" | "read_error"
    exc_type: str
    message: str
    traceback: str
    will_retry: bool
    first_items: str = ""


@dataclass(frozen=True)
class Progress:
    """Periodic counts (throttled), for overview files and bars."""

    total: int | None
    done: int
    succeeded: int
    failed: int
    running: int
    items_succeeded: int
    items_failed: int
    time: float


@dataclass(frozen=True)
class JobFinished:
    status: str  # "Completed" | "Failed" | "Canceled"
    reason: str
    counts: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0


@dataclass(frozen=True)
class JobReused:
    """The run was served from the reuse cache: outputs copied from ``source_run_dir``, no worker started.
    It comes between a ``JobStarted`` (with 0 workers) and a ``JobFinished``."""

    job_name: str
    run_id: str
    run_dir: str
    source_run_dir: str
    source_run_id: str
    key: str
    time: float


@dataclass(frozen=True)
class Notice:
    """Something the run says once, for the user and the logs (e.g. where a backend placed the nodes)."""

    text: str
    time: float


class Listener(Protocol):
    def on_event(self, event: Any) -> None: ...
