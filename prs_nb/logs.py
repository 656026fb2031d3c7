"""Azure ML parallel-run log folder (contract 8.3, decisions in section 12).

Two sides write the ``logs/`` folder of a run:

* the **driver** - :class:`RunLogs`, an event listener (see :mod:`prs_nb.events`) and the single
  writer of ``readme.txt``, ``job_result.txt``, ``job_error.txt``, ``job_progress_overview.*.txt`` and
  everything under ``sys/``. Being the only writer it keeps its files open and buffered (no locks,
  no per-event flush) so that it keeps up with tens of thousands of events per second;
* each **worker process** - :func:`setup_worker_logging`, which captures the process's stdout/stderr
  (file descriptors 1 and 2) into ``user/stdout|stderr/<node>/<process>.*.txt``, puts a handler on the
  root logger, creates the ``EntryScript`` logger and writes full tracebacks to ``user/error/``. Those
  per-process files are written through ``concurrent_log_handler.ConcurrentRotatingFileHandler``
  (contract section 12) so that any process may safely share them.

Layout (relative to ``logs_dir``)::

    readme.txt  job_result.txt  job_error.txt  job_progress_overview.<YYYYmmddHH>.txt
    sys/master_role.txt
    sys/job_report/processed_mini-batches.csv
    sys/node/<node_id>/_main.txt  sys/node/<node_id>/<process_name>.txt
    sys/error/<node_id>/<process_name>.txt
    user/stdout/<node_id>/<process_name>.stdout.txt
    user/stderr/<node_id>/<process_name>.stderr.txt
    user/entry_script_log/<node_id>/<process_name>.log.txt
    user/error/<node_id>/<process_name>.txt

:data:`SHIM_DIR` is the folder a worker puts on ``sys.path`` so that unchanged Azure scripts can
``from azureml_user.parallel_run import EntryScript`` (see :meth:`WorkerLogs.configure_entry_script`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from prs_nb.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "SHIM_DIR",
    "RunLogs",
    "WorkerLogs",
    "setup_worker_logging",
    "log_paths",
    "CSV_COLUMNS",
]

#: Absolute path of the folder holding the ``azureml_user`` shim package. It is a ``sys.path`` root,
#: not a package: nothing imports ``azureml_user`` unless a worker puts this folder on ``sys.path``.
SHIM_DIR: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_shim")

#: Header of ``sys/job_report/processed_mini-batches.csv``.
CSV_COLUMNS: tuple[str, ...] = (
    "mini_batch_index",
    "status",
    "attempt",
    "node_id",
    "process_name",
    "start",
    "elapsed_seconds",
    "items",
    "returned",
    "failed_items",
    "error_type",
    "error_message",
)

# kind of a failed attempt -> status written to sys/error (system-side failures only; user exceptions
# are documented in user/error by the worker and summarised in job_error.txt).
_SYSTEM_STATUS = {"timeout": "RUN_TIMEOUT", "worker_died": "PROCESS_DIED", "read_error": "READ_ERROR"}
_KIND_TEXT = {
    "exception": "run() raised",
    "timeout": "run() timed out",
    "worker_died": "the worker process died",
    "bad_return": "run() returned a value that is not a list, tuple or DataFrame",
    "read_error": "the mini-batch could not be read",
    "init": "init() raised",
    "shutdown": "shutdown() raised",
}
_EXAMPLES_PER_TYPE = 3
_MAX_TRACEBACK_LINES = 200
_MAX_CSV_MESSAGE = 2000
_MAX_OPEN_PROCESS_FILES = 256
_FLUSH_INTERVAL_S = 1.0
_BIG_BUFFER = 1 << 20
_SMALL_BUFFER = 1 << 16


def log_paths(logs_dir: str, node_id: int, process_name: str) -> dict[str, str]:
    """Absolute paths of one worker process's log files (keys: ``stdout``, ``stderr``, ``entry_log``,
    ``entry_log_dir``, ``user_error``, ``sys_node``, ``sys_error``, ``node_main``)."""
    d = os.path.abspath(logs_dir)
    n = str(node_id)
    return {
        "stdout": os.path.join(d, "user", "stdout", n, f"{process_name}.stdout.txt"),
        "stderr": os.path.join(d, "user", "stderr", n, f"{process_name}.stderr.txt"),
        "entry_log_dir": os.path.join(d, "user", "entry_script_log", n),
        "entry_log": os.path.join(d, "user", "entry_script_log", n, f"{process_name}.log.txt"),
        "user_error": os.path.join(d, "user", "error", n, f"{process_name}.txt"),
        "sys_node": os.path.join(d, "sys", "node", n, f"{process_name}.txt"),
        "sys_error": os.path.join(d, "sys", "error", n, f"{process_name}.txt"),
        "node_main": os.path.join(d, "sys", "node", n, "_main.txt"),
    }


def _rel(node_id: int, process_name: str) -> dict[str, str]:
    """The same paths as :func:`log_paths`, relative to ``logs/`` (for the text of result files)."""
    n = str(node_id)
    return {
        "stdout": f"user/stdout/{n}/{process_name}.stdout.txt",
        "stderr": f"user/stderr/{n}/{process_name}.stderr.txt",
        "entry_log": f"user/entry_script_log/{n}/{process_name}.log.txt",
        "user_error": f"user/error/{n}/{process_name}.txt",
        "sys_node": f"sys/node/{n}/{process_name}.txt",
        "sys_error": f"sys/error/{n}/{process_name}.txt",
        "node_main": f"sys/node/{n}/_main.txt",
    }


class _Clock:
    """Formats epoch seconds as local ``YYYY-mm-dd HH:MM:SS.mmm``.

    ``time.strftime`` + ``localtime`` cost ~2 us; events arrive thousands per second, mostly within
    the same few seconds, so the second-resolution prefix is cached.
    """

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, t: float) -> str:
        sec, ms = divmod(int(t * 1000.0 + 0.5), 1000)  # rounded: 0.1 s must print .100, not .099
        prefix = self._cache.get(sec)
        if prefix is None:
            if len(self._cache) > 64:
                self._cache.clear()
            prefix = self._cache[sec] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
        return f"{prefix}.{ms:03d}"


def _exit_hint(exit_code: int | None, stderr_rel: str) -> str:
    """Why a process probably ended, from a negative (signal) return code; '' otherwise."""
    if exit_code is None or exit_code >= 0:
        return ""
    import signal

    try:
        name = signal.Signals(-exit_code).name
    except ValueError:
        return f" - killed by signal {-exit_code}"
    if name == "SIGKILL":
        return " - killed (SIGKILL): out of memory, or killed after a timeout"
    if name in ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL"):
        return f" - native crash ({name}): see {stderr_rel} for the faulthandler traceback"
    return f" - killed by {name}"


def _one_line(text: str, limit: int = 300) -> str:
    """First line of ``text``, cut to ``limit`` characters (messages inside one-line log records)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _indent(text: str, prefix: str = "     ", max_lines: int = _MAX_TRACEBACK_LINES) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > max_lines:
        cut = len(lines) - max_lines
        lines = lines[: max_lines // 2] + [f"... ({cut} lines cut) ..."] + lines[-max_lines // 2 :]
    return "\n".join(prefix + ln for ln in lines)


# ----------------------------------------------------------------------------------------------------
# Driver side
# ----------------------------------------------------------------------------------------------------

_README = """\
Logs of the prs_nb (local Azure ML parallel run) job '{job_name}'.
The layout follows Azure ML's parallel run step, so the same habits work here.

Where to look first
-------------------
1. job_result.txt   - the final status. On failure: the reason, the first mini-batch that failed,
                      the process that ran it and the file holding its traceback.
2. job_error.txt    - summary of the errors raised by your script, per error type, with the first
                      tracebacks of each type.
3. user/error/<node_id>/<process_name>.txt - full tracebacks from init()/run() in that process.
4. sys/job_report/processed_mini-batches.csv - one row per processed mini-batch: status, attempt,
                      node id, process name, start, elapsed time, items, error type and message.
5. user/stdout/<node_id>/<process_name>.stdout.txt and user/stderr/... - print() output, the root
                      logger (level {logging_level}) and output of child processes of that process.
6. sys/node/<node_id>/ and sys/error/<node_id>/ - for timeouts and processes that died (e.g.
                      "exits with returncode -9" in _main.txt usually means out of memory).

Structure
---------
readme.txt                         this file
job_result.txt                     final result; on failure the error and where to look
job_error.txt                      summary of script errors
job_progress_overview.<YYYYmmddHH>.txt   created/processed/succeeded/failed mini-batch counts over
                                   time (a new file each day)
sys/master_role.txt                orchestrator view: job start, settings, workers started/ready/died,
                                   listing done, failed mini-batches, thresholds, result
sys/job_report/processed_mini-batches.csv   one row per mini-batch that finished (its last attempt)
sys/node/<node_id>/_main.txt       process start/exit lines of that node (return codes)
sys/node/<node_id>/<process_name>.txt   each mini-batch picked/completed by that process: attempt,
                                   duration, items, pid
sys/error/<node_id>/<process_name>.txt  system-side failures as JSON lines (RUN_TIMEOUT,
                                   PROCESS_DIED, READ_ERROR) with task_id (mini-batch index) and
                                   dequeue_count (attempt)
user/entry_script_log/<node_id>/<process_name>.log.txt   EntryScript().logger output (it honours
                                   logging_level: debug() is dropped at INFO)
user/stdout/<node_id>/<process_name>.stdout.txt   stdout + root logger of that process
user/stderr/<node_id>/<process_name>.stderr.txt   stderr of that process (also native crash dumps)
user/error/<node_id>/<process_name>.txt           full tracebacks of init()/run()/shutdown()

Process names are processNNN, increasing as processes are replaced (a new name means a new
process and new files); node ids are 0..n-1.
"""


class _ErrorType:
    """Counts and the first examples of one error type (job_error.txt)."""

    __slots__ = ("label", "kind", "attempts", "final", "indices", "examples")

    def __init__(self, label: str, kind: str) -> None:
        self.label = label
        self.kind = kind
        self.attempts = 0
        self.final = 0
        self.indices: list[int] = []  # first mini-batch indices, for the summary line
        self.examples: list[dict[str, Any]] = []


class RunLogs:
    """Driver-side writer of the Azure log layout; a listener (``on_event``) of :mod:`prs_nb.events`.

    ``RunLogs(logs_dir, job_name, spec_summary)`` creates ``logs_dir`` and writes ``readme.txt`` at once.
    ``spec_summary`` (settings shown in ``sys/master_role.txt``; the key ``logging_level`` is also
    quoted in the readme, default ``INFO``) may be empty.

    Files are opened in append mode (a resumed run keeps what is there) with large buffers and are
    flushed only: on ``Progress`` events (at most once per second, so a long run can be followed
    live), on rare events that explain a hang (a worker died, init() failed, listing done), and on
    ``JobFinished`` / :meth:`close`, which also write ``job_result.txt`` and ``job_error.txt``.
    ``close()`` without a ``JobFinished`` writes a job_result saying the job did not finish.

    Not the place for per-process user files: workers write those (:func:`setup_worker_logging`).
    Thread-safe (one lock; the engine calls it from its scheduling thread).
    """

    def __init__(self, logs_dir: str, job_name: str, spec_summary: dict[str, Any] | None = None) -> None:
        import csv  # here, not at module import: workers import this module and never need csv

        from prs_nb import events as ev

        self.logs_dir = os.path.abspath(logs_dir)
        self.job_name = job_name
        self.spec_summary = dict(spec_summary or {})
        self._lock = threading.Lock()
        self._ts = _Clock()
        self._closed = False
        self._finished: Any = None  # the JobFinished event, once seen
        self._job: Any = None  # the JobStarted event
        self._t0 = time.time()
        self._last_flush = 0.0

        self.readme_path = os.path.join(self.logs_dir, "readme.txt")
        self.job_result_path = os.path.join(self.logs_dir, "job_result.txt")
        self.job_error_path = os.path.join(self.logs_dir, "job_error.txt")
        self.master_role_path = os.path.join(self.logs_dir, "sys", "master_role.txt")
        self.csv_path = os.path.join(self.logs_dir, "sys", "job_report", "processed_mini-batches.csv")
        os.makedirs(os.path.dirname(self.csv_path), exist_ok=True)

        # counters (the engine's Progress events are authoritative while running; these give the
        # final overview line and job_result without depending on a last Progress)
        self._created = 0
        self._listing_complete = False
        self._running = 0
        self._succeeded = 0
        self._failed = 0  # mini-batches failed for good
        self._failed_attempts = 0
        self._items_ok = 0
        self._items_failed = 0
        self._init_failures = 0
        self._workers_started = 0
        self._workers_died = 0

        self._error_types: dict[tuple[str, str], _ErrorType] = {}
        self.first_failure: dict[str, Any] | None = None  # first mini-batch failed for good
        self._first_failed_attempt: dict[str, Any] | None = None
        self._first_init_failure: dict[str, Any] | None = None
        self._pids: dict[tuple[int, str], int] = {}

        self._proc_files: dict[tuple[int, str], IO[str]] = {}
        self._main_files: dict[int, IO[str]] = {}
        self._err_files: dict[tuple[int, str], IO[str]] = {}
        self._overview: IO[str] | None = None
        self._overview_day: tuple[int, int, int] | None = None
        self.overview_path: str | None = None

        with open(self.readme_path, "w", encoding="utf-8") as f:
            f.write(_README.format(job_name=job_name, logging_level=self.spec_summary.get("logging_level", "INFO")))

        self._master = self._open(self.master_role_path, _SMALL_BUFFER)
        new_csv = not os.path.exists(self.csv_path) or os.path.getsize(self.csv_path) == 0
        self._csv_file = open(self.csv_path, "a", encoding="utf-8", newline="", buffering=_BIG_BUFFER)  # noqa: SIM115
        self._csv_row = csv.writer(self._csv_file).writerow
        if new_csv:
            self._csv_row(CSV_COLUMNS)

        # dispatch by exact type: one dict lookup per event
        self._dispatch: dict[type, Callable[[Any], None]] = {
            ev.JobStarted: self._on_job_started,
            ev.BatchesListed: self._on_listed,
            ev.WorkerStarted: self._on_worker_started,
            ev.WorkerReady: self._on_worker_ready,
            ev.WorkerDied: self._on_worker_died,
            ev.InitFailed: self._on_init_failed,
            ev.ShutdownFailed: self._on_shutdown_failed,
            ev.BatchStarted: self._on_batch_started,
            ev.BatchSucceeded: self._on_batch_succeeded,
            ev.BatchFailed: self._on_batch_failed,
            ev.Progress: self._on_progress,
            ev.JobFinished: self._on_job_finished,
            ev.Notice: self._on_notice,
        }

    # -- plumbing -------------------------------------------------------------------------------------

    @staticmethod
    def _open(path: str, buffering: int) -> IO[str]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, "a", encoding="utf-8", buffering=buffering)  # noqa: SIM115

    def _proc_file(self, node_id: int, process_name: str) -> IO[str]:
        key = (node_id, process_name)
        f = self._proc_files.get(key)
        if f is None:
            if len(self._proc_files) >= _MAX_OPEN_PROCESS_FILES:
                # many replaced processes: close the lot (reopened in append mode if needed) rather
                # than run out of file descriptors
                for g in self._proc_files.values():
                    g.close()
                self._proc_files.clear()
            f = self._proc_files[key] = self._open(
                os.path.join(self.logs_dir, "sys", "node", str(node_id), f"{process_name}.txt"), _SMALL_BUFFER
            )
        return f

    def _main_file(self, node_id: int) -> IO[str]:
        f = self._main_files.get(node_id)
        if f is None:
            f = self._main_files[node_id] = self._open(
                os.path.join(self.logs_dir, "sys", "node", str(node_id), "_main.txt"), _SMALL_BUFFER
            )
        return f

    def _err_file(self, node_id: int, process_name: str) -> IO[str]:
        key = (node_id, process_name)
        f = self._err_files.get(key)
        if f is None:
            f = self._err_files[key] = self._open(
                os.path.join(self.logs_dir, "sys", "error", str(node_id), f"{process_name}.txt"), 8192
            )
        return f

    def _all_files(self) -> list[IO[str]]:
        files: list[IO[str]] = [self._master, self._csv_file]
        if self._overview is not None:
            files.append(self._overview)
        files.extend(self._proc_files.values())
        files.extend(self._main_files.values())
        files.extend(self._err_files.values())
        return files

    def _flush_all(self) -> None:
        for f in self._all_files():
            if not f.closed:
                f.flush()
        self._last_flush = time.monotonic()

    def _log_master(self, t: float, text: str) -> None:
        self._master.write(f"{self._ts(t)} {text}\n")

    # -- listener API ---------------------------------------------------------------------------------

    def on_event(self, event: Any) -> None:
        """Record one event; unknown event types are ignored. Events after :meth:`close` are dropped."""
        handler = self._dispatch.get(type(event))
        if handler is None:
            return
        with self._lock:
            if not self._closed:
                handler(event)

    def flush(self) -> None:
        """Write every buffered line to disk now."""
        with self._lock:
            if not self._closed:
                self._flush_all()

    def close(self) -> None:
        """Flush and close all files; write job_result.txt / job_error.txt if no JobFinished came
        (status ``NotFinished``). Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._finished is None:
                    now = time.time()
                    self._log_master(now, "Run logs closed before the job finished (driver interrupted?)")
                    self._write_overview(now, None)
                    self._write_results("NotFinished", "the run stopped before the job reported a final status "
                                        "(driver interrupted or crashed)", {}, now)
                self._flush_all()
            finally:
                self._closed = True
                for f in self._all_files():
                    f.close()

    def __enter__(self) -> RunLogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def paths(self) -> dict[str, str]:
        """Absolute paths of the job-level files (``readme``, ``job_result``, ``job_error``,
        ``master_role``, ``processed_mini_batches``, ``progress_overview`` once created)."""
        out = {
            "logs_dir": self.logs_dir,
            "readme": self.readme_path,
            "job_result": self.job_result_path,
            "job_error": self.job_error_path,
            "master_role": self.master_role_path,
            "processed_mini_batches": self.csv_path,
        }
        if self.overview_path:
            out["progress_overview"] = self.overview_path
        return out

    # -- event handlers -------------------------------------------------------------------------------

    def _on_job_started(self, e: Any) -> None:
        self._job = e
        self._t0 = e.time or time.time()
        lines = [
            f"Job '{e.job_name}' started: run_id={e.run_id} backend={e.backend} workers={e.workers}",
            f"    run_dir={e.run_dir}",
            f"    logs_dir={self.logs_dir}",
        ]
        if self.spec_summary:
            lines.append("    settings:")
            lines.extend(f"      {k} = {v!r}" for k, v in self.spec_summary.items())
        self._log_master(self._t0, "\n".join(lines))
        self._write_overview(self._t0, None)
        self._master.flush()

    def _on_listed(self, e: Any) -> None:
        self._created = e.total
        if e.complete and not self._listing_complete:
            self._listing_complete = True
            self._log_master(time.time(), f"Listing done: {e.total} mini-batches created")
            self._master.flush()

    def _on_worker_started(self, e: Any) -> None:
        self._pids[(e.node_id, e.process_name)] = e.pid
        self._workers_started += 1
        ts = self._ts(e.time)
        self._master.write(f"{ts} Worker {e.process_name} on node {e.node_id} started (pid {e.pid})\n")
        self._main_file(e.node_id).write(f"{ts} {e.process_name} (pid {e.pid}) started\n")
        self._proc_file(e.node_id, e.process_name).write(f"{ts} | pid {e.pid} | process started\n")

    def _on_worker_ready(self, e: Any) -> None:
        self._pids[(e.node_id, e.process_name)] = e.pid
        ts = self._ts(time.time())
        where = f" on {e.host}" if e.host else ""
        text = f"{e.process_name} (pid {e.pid}{where}) ready: init() took {e.init_seconds:.3f} s"
        self._master.write(f"{ts} Worker {text}\n")
        self._main_file(e.node_id).write(f"{ts} {text}\n")
        self._proc_file(e.node_id, e.process_name).write(
            f"{ts} | pid {e.pid} | init() done in {e.init_seconds:.3f} s, ready\n"
        )

    def _on_notice(self, e: Any) -> None:
        self._log_master(e.time, e.text)
        self._master.flush()

    def _on_worker_died(self, e: Any) -> None:
        self._workers_died += 1
        ts = self._ts(e.time)
        code = "unknown" if e.exit_code is None else str(e.exit_code)
        reason = f" ({e.reason})" if e.reason else ""
        self._main_file(e.node_id).write(f"{ts} {e.process_name} (pid {e.pid}) exits with returncode {code}{reason}\n")
        hint = _exit_hint(e.exit_code, _rel(e.node_id, e.process_name)["stderr"])
        self._master.write(
            f"{ts} Worker {e.process_name} on node {e.node_id} (pid {e.pid}) exited with returncode "
            f"{code}{reason}{hint}\n"
        )
        self._proc_file(e.node_id, e.process_name).write(f"{ts} | pid {e.pid} | process exited, returncode {code}{reason}\n")
        self._master.flush()
        self._main_file(e.node_id).flush()

    def _on_init_failed(self, e: Any) -> None:
        self._init_failures += 1
        now = time.time()
        ts = self._ts(now)
        msg = _one_line(e.error)
        self._master.write(
            f"{ts} Worker {e.process_name} on node {e.node_id} (pid {e.pid}) init() failed: {e.exc_type}: {msg}\n"
        )
        self._main_file(e.node_id).write(f"{ts} {e.process_name} (pid {e.pid}) init() failed: {e.exc_type}\n")
        self._proc_file(e.node_id, e.process_name).write(f"{ts} | pid {e.pid} | init() failed: {e.exc_type}: {msg}\n")
        info = {
            "index": None, "attempt": None, "node_id": e.node_id, "process_name": e.process_name, "pid": e.pid,
            "kind": "init", "exc_type": e.exc_type, "message": e.error, "traceback": e.traceback,
            "time": now, "will_retry": False, "first_items": "",
        }
        if self._first_init_failure is None:
            self._first_init_failure = info
        self._add_error(info, final=False)
        self._master.flush()

    def _on_shutdown_failed(self, e: Any) -> None:
        now = time.time()
        ts = self._ts(now)
        msg = _one_line(e.error)
        self._master.write(f"{ts} Worker {e.process_name} on node {e.node_id} (pid {e.pid}) shutdown() failed: "
                           f"{e.exc_type}: {msg}\n")
        self._proc_file(e.node_id, e.process_name).write(f"{ts} | pid {e.pid} | shutdown() failed: {e.exc_type}: {msg}\n")
        self._add_error({
            "index": None, "attempt": None, "node_id": e.node_id, "process_name": e.process_name, "pid": e.pid,
            "kind": "shutdown", "exc_type": e.exc_type, "message": e.error, "traceback": e.traceback,
            "time": now, "will_retry": False, "first_items": "",
        }, final=False)
        self._master.flush()

    def _on_batch_started(self, e: Any) -> None:
        self._running += 1
        pid = self._pids.get((e.node_id, e.process_name), "?")
        self._proc_file(e.node_id, e.process_name).write(
            f"{self._ts(e.time)} | pid {pid} | mini-batch {e.index} attempt {e.attempt} picked\n"
        )

    def _on_batch_succeeded(self, e: Any) -> None:
        if self._running > 0:
            self._running -= 1
        self._succeeded += 1
        self._items_ok += e.items - e.failed_items
        self._items_failed += e.failed_items
        elapsed = e.end - e.start
        self._csv_row((e.index, "Succeeded", e.attempt, e.node_id, e.process_name, self._ts(e.start),
                       f"{elapsed:.3f}", e.items, e.returned, e.failed_items, "", ""))
        pid = self._pids.get((e.node_id, e.process_name), "?")
        self._proc_file(e.node_id, e.process_name).write(
            f"{self._ts(e.end)} | pid {pid} | mini-batch {e.index} attempt {e.attempt} completed in {elapsed:.3f} s "
            f"(run() {e.run_seconds:.3f} s): {e.items} items, {e.returned} returned, {e.failed_items} failed\n"
        )

    def _on_batch_failed(self, e: Any) -> None:
        if self._running > 0:
            self._running -= 1
        self._failed_attempts += 1
        elapsed = e.end - e.start
        items = "" if e.items is None else e.items
        msg1 = _one_line(e.message)
        outcome = "will retry" if e.will_retry else f"failed for good after attempt {e.attempt}"
        ts_end = self._ts(e.end)
        self._proc_file(e.node_id, e.process_name).write(
            f"{ts_end} | pid {e.pid} | mini-batch {e.index} attempt {e.attempt} FAILED after {elapsed:.3f} s "
            f"({e.kind}: {e.exc_type}: {msg1}); {outcome}\n"
        )
        status = _SYSTEM_STATUS.get(e.kind)
        if status is not None:
            rec = {
                "time": ts_end, "agent": e.process_name, "node_id": e.node_id, "pid": e.pid,
                "task_id": e.index, "dequeue_count": e.attempt, "total": e.items, "succeeded": 0,
                "method": "run", "exc_type": e.exc_type, "run_method_duration": round(elapsed, 3),
                "status": status, "message": e.message, "will_retry": e.will_retry,
            }
            self._err_file(e.node_id, e.process_name).write(json.dumps(rec) + "\n")
        info = {
            "index": e.index, "attempt": e.attempt, "node_id": e.node_id, "process_name": e.process_name,
            "pid": e.pid, "kind": e.kind, "exc_type": e.exc_type, "message": e.message,
            "traceback": e.traceback, "time": e.end, "will_retry": e.will_retry, "first_items": e.first_items,
        }
        if self._first_failed_attempt is None:
            self._first_failed_attempt = info
        if e.will_retry:
            self._master.write(
                f"{ts_end} Mini-batch {e.index} attempt {e.attempt} failed on node {e.node_id} {e.process_name} "
                f"({e.kind}: {e.exc_type}); it goes back to the queue\n"
            )
        else:
            self._failed += 1
            if e.items:
                self._items_failed += e.items
            if self.first_failure is None:
                self.first_failure = info
            message = e.message if len(e.message) <= _MAX_CSV_MESSAGE else e.message[:_MAX_CSV_MESSAGE] + "..."
            self._csv_row((e.index, "Failed", e.attempt, e.node_id, e.process_name, self._ts(e.start),
                           f"{elapsed:.3f}", items, "", items, e.exc_type or status or e.kind, message))
            self._master.write(
                f"{ts_end} Mini-batch {e.index} failed for good after attempt {e.attempt} on node {e.node_id} "
                f"{e.process_name} ({e.kind}: {e.exc_type}: {msg1})\n"
            )
        self._add_error(info, final=not e.will_retry)

    def _on_progress(self, e: Any) -> None:
        self._write_overview(e.time, e)
        # a long run is followed by tailing these files: make them current, but at most once a second
        if time.monotonic() - self._last_flush >= _FLUSH_INTERVAL_S:
            self._flush_all()

    def _on_job_finished(self, e: Any) -> None:
        self._finished = e
        t = e.time or time.time()
        self._write_overview(t, None)
        self._log_master(t, f"Job finished: {e.status}" + (f" - {e.reason}" if e.reason else ""))
        self._write_results(e.status, e.reason, e.counts, t)
        self._flush_all()

    # -- helpers --------------------------------------------------------------------------------------

    def _add_error(self, info: dict[str, Any], *, final: bool) -> None:
        kind = info["kind"]
        label = info["exc_type"] or _SYSTEM_STATUS.get(kind, kind)
        key = (kind, label)
        et = self._error_types.get(key)
        if et is None:
            et = self._error_types[key] = _ErrorType(label, kind)
        et.attempts += 1
        if final:
            et.final += 1
        if info["index"] is not None and len(et.indices) < 10 and info["index"] not in et.indices:
            et.indices.append(info["index"])
        if len(et.examples) < _EXAMPLES_PER_TYPE:
            et.examples.append(info)

    def _write_overview(self, t: float, p: Any) -> None:
        lt = time.localtime(t)
        day = (lt.tm_year, lt.tm_mon, lt.tm_mday)
        if day != self._overview_day:  # Azure rotates the overview daily
            if self._overview is not None:
                self._overview.close()
            self.overview_path = os.path.join(
                self.logs_dir, f"job_progress_overview.{time.strftime('%Y%m%d%H', lt)}.txt"
            )
            self._overview = self._open(self.overview_path, 8192)
            self._overview_day = day
        if p is not None:
            total, done, ok, failed, running = p.total, p.done, p.succeeded, p.failed, p.running
            items_ok, items_failed = p.items_succeeded, p.items_failed
        else:
            total, done, ok, failed = self._created, self._succeeded + self._failed, self._succeeded, self._failed
            running, items_ok, items_failed = self._running, self._items_ok, self._items_failed
        if total is None:
            total = self._created
        listing = "" if (self._listing_complete or (p is not None and p.total is not None)) else " (listing in progress)"
        assert self._overview is not None
        self._overview.write(
            f"{self._ts(t)} created {total} mini-batches{listing}, processed {done}, succeeded {ok}, "
            f"failed {failed}, running {running}; items succeeded {items_ok}, failed {items_failed}\n"
        )

    def _where_to_look(self, info: dict[str, Any] | None) -> list[str]:
        if info is None:
            return [
                "sys/master_role.txt                          what the orchestrator did and why it stopped",
                "job_error.txt                                script errors, if any",
                "sys/job_report/processed_mini-batches.csv    every processed mini-batch",
            ]
        r = _rel(info["node_id"], info["process_name"])
        if info["kind"] in _SYSTEM_STATUS:
            return [
                f"{r['sys_error']:<44} the {_SYSTEM_STATUS[info['kind']]} record(s) of that process",
                f"{r['node_main']:<44} process exits and return codes (-9: killed, often out of memory)",
                f"{r['stderr']:<44} stderr of that process (native crash dumps)",
                f"{r['stdout']:<44} its stdout and root logger",
                f"{r['sys_node']:<44} what it was doing, mini-batch by mini-batch",
                "sys/job_report/processed_mini-batches.csv    every processed mini-batch",
            ]
        return [
            f"{r['user_error']:<44} full traceback(s) from that process",
            "job_error.txt                                all script errors, per type",
            f"{r['stdout']:<44} its stdout and root logger",
            f"{r['stderr']:<44} its stderr",
            f"{r['entry_log']:<44} its EntryScript().logger output",
            "sys/job_report/processed_mini-batches.csv    every processed mini-batch",
        ]

    @staticmethod
    def _describe(info: dict[str, Any]) -> list[str]:
        where = f"node {info['node_id']} {info['process_name']} (pid {info['pid']})"
        if info["kind"] == "init":
            head = f"init() failed in {where}"
        else:
            head = f"mini-batch {info['index']}, attempt {info['attempt']}, on {where}"
        lines = [head, f"  cause: {_KIND_TEXT.get(info['kind'], info['kind'])}"]
        err = f"{info['exc_type']}: {_one_line(info['message'], 500)}" if info["exc_type"] else _one_line(info["message"], 500)
        if err:
            lines.append(f"  error: {err}")
        if info.get("first_items"):
            lines.append(f"  inputs: {info['first_items']}")
        return lines

    def _write_results(self, status: str, reason: str, counts: dict[str, Any], t: float) -> None:
        job = self._job
        run_id = f" (run {job.run_id})" if job is not None else ""
        out = [f"Job '{self.job_name}'{run_id}: {status}"]
        if reason:
            out.append(f"Reason: {reason}")
        out.append(f"Finished: {self._ts(t)} after {max(0.0, t - self._t0):.1f} s")
        out.append(
            f"Mini-batches: {self._created} created, {self._succeeded + self._failed} processed, "
            f"{self._succeeded} succeeded, {self._failed} failed ({self._failed_attempts} failed attempts); "
            f"items: {self._items_ok} succeeded, {self._items_failed} failed"
        )
        if self._init_failures:
            out.append(f"init() failures: {self._init_failures}")
        if self._workers_died:
            out.append(f"Worker processes started: {self._workers_started}, exited/died: {self._workers_died}")
        if counts:
            out.append("Counts reported by the engine: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        out.append(f"Logs: {self.logs_dir} (paths below are relative to it)")
        info = self.first_failure
        label = "First mini-batch that failed for good"
        if info is None and self._first_init_failure is not None:
            info, label = self._first_init_failure, "First init() failure"
        if info is None and self._first_failed_attempt is not None:
            info, label = self._first_failed_attempt, "First failed attempt (retried)"
        if status != "Completed" or info is not None:
            out.append("")
            if info is not None:
                out.append(f"{label}: " + "\n".join(self._describe(info)))
            out.append("")
            out.append("Where to look:")
            out.extend(f"  {i}. {line}" for i, line in enumerate(self._where_to_look(info), 1))
        with open(self.job_result_path, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        self._write_job_error()

    def _write_job_error(self) -> None:
        types = list(self._error_types.values())
        out: list[str] = []
        if not types:
            out.append(f"No script errors in job '{self.job_name}'.")
        else:
            final = sum(et.final for et in types)
            out.append(
                f"Script errors of job '{self.job_name}': {len(types)} error type(s), {self._failed_attempts} failed "
                f"mini-batch attempt(s), {final} mini-batch(es) failed after their last attempt, "
                f"{self._init_failures} init() failure(s)."
            )
            out.append("Full tracebacks: user/error/<node_id>/<process_name>.txt; timeouts and dead processes: "
                       "sys/error/<node_id>/<process_name>.txt.")
            for et in types:
                out.append("")
                what = "init() failure(s)" if et.kind == "init" else f"failed attempt(s), {et.final} mini-batch(es) failed for good"
                out.append(f"== {et.label} - {_KIND_TEXT.get(et.kind, et.kind)}: {et.attempts} {what} ==")
                if et.indices:
                    more = ", ..." if et.attempts > len(et.indices) else ""
                    out.append(f"mini-batches: {', '.join(map(str, et.indices))}{more}")
                for i, info in enumerate(et.examples, 1):
                    r = _rel(info["node_id"], info["process_name"])
                    file = r["sys_error"] if info["kind"] in _SYSTEM_STATUS else r["user_error"]
                    retry = " (retried)" if info["will_retry"] else ""
                    desc = self._describe(info)
                    out.append(f"-- {i}. {desc[0]}, {self._ts(info['time'])}{retry} - {file}")
                    out.extend("   " + ln.strip() for ln in desc[2:])
                    if info["traceback"]:
                        out.append(_indent(info["traceback"]))
                shown = len(et.examples)
                if et.attempts > shown:
                    out.append(f"(first {shown} shown, {et.attempts - shown} more)")
        with open(self.job_error_path, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")


# ----------------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------------

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "WARN": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
_ROOT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ENTRY_FORMAT = "%(asctime)s|%(levelname)s|%(process)d|%(name)s|%(message)s"


def _parse_level(level: str | int) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str) and level.strip().upper() in _LEVELS:
        return _LEVELS[level.strip().upper()]
    raise ConfigError(f"logging_level must be one of DEBUG, INFO, WARNING (got {level!r})")


class _LazyConcurrentFileHandler(logging.Handler):
    """A handler that builds a ``ConcurrentRotatingFileHandler`` (no rotation, append) on its first record.

    Why lazy: importing concurrent_log_handler (portalocker, importlib.metadata, secrets) costs
    25-50 ms, ten times the rest of a worker's log setup, and most scripts never write some of these
    files (often none). Records that do come pay the handler's usual cost (a file lock per record).
    ``target`` is the real handler once created. The parent directory is created on first use.
    """

    def __init__(self, path: str, level: int, fmt: str) -> None:
        super().__init__(level)
        self.path = path
        self.target: logging.Handler | None = None
        self.setFormatter(logging.Formatter(fmt))

    def _make(self) -> logging.Handler:
        from concurrent_log_handler import ConcurrentRotatingFileHandler

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        h = ConcurrentRotatingFileHandler(self.path, mode="a", encoding="utf-8")
        h.setFormatter(self.formatter)
        return h

    def emit(self, record: logging.LogRecord) -> None:
        target = self.target
        if target is None:
            try:
                target = self.target = self._make()
            except Exception:
                self.handleError(record)
                return
        target.emit(record)  # handles its own errors (handleError)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    def close(self) -> None:
        try:
            if self.target is not None:
                self.target.close()
        finally:
            super().close()


class WorkerLogs:
    """What :func:`setup_worker_logging` set up in one process; :meth:`close` undoes all of it.

    Attributes: ``logs_dir``, ``node_id``, ``process_name``, ``level`` (int), ``redirected`` (fds 1/2
    redirected), ``stdout_path``, ``stderr_path``, ``entry_log_dir``, ``entry_log_path``,
    ``error_path``, ``entry_logger`` (the EntryScript logger), ``root_handler``.
    """

    def __init__(self, logs_dir: str, node_id: int, process_name: str, level: int, redirect: bool) -> None:
        p = log_paths(logs_dir, node_id, process_name)
        self.logs_dir = os.path.abspath(logs_dir)
        self.node_id = node_id
        self.process_name = process_name
        self.level = level
        self.redirected = redirect
        self.stdout_path = p["stdout"]
        self.stderr_path = p["stderr"]
        self.entry_log_dir = p["entry_log_dir"]
        self.entry_log_path = p["entry_log"]
        self.error_path = p["user_error"]
        self.entry_logger: logging.Logger = logging.getLogger(f"azureml_user.entry_script.{process_name}")
        self.root_handler = _LazyConcurrentFileHandler(self.stdout_path, level, _ROOT_FORMAT)
        self._entry_handler = _LazyConcurrentFileHandler(self.entry_log_path, level, _ENTRY_FORMAT)
        self._error_handler = _LazyConcurrentFileHandler(self.error_path, logging.NOTSET, "%(message)s")
        self._undo: list[Callable[[], None]] = []  # run in reverse order by close()
        self._closed = False
        self._shim: ModuleType | None = None

    # -- setup steps (called by setup_worker_logging) -------------------------------------------------

    def _redirect_fds(self, enable_faulthandler: bool) -> None:
        # Text already buffered in Python belongs to the old destination.
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        old_out, old_err = sys.stdout, sys.stderr
        for fd, path in ((1, self.stdout_path), (2, self.stderr_path)):
            # O_APPEND: the root-logger handler, child processes and other writers of the same file
            # all append atomically instead of overwriting each other at stale offsets.
            new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            saved: int | None
            try:
                saved = os.dup(fd)  # non-inheritable: child processes do not get it
            except OSError:  # fd was closed (e.g. pythonw / daemon): nothing to restore
                saved = None
            os.dup2(new, fd)  # fds 0-2 stay inheritable: subprocesses write to the files too
            os.close(new)
            self._undo.append(functools.partial(_restore_fd, fd, saved))
        # Line-buffered wrappers over the redirected fds: print() reaches the file at each newline,
        # interleaved correctly with logging records and C-level writes.
        new_out = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        new_err = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stdout, sys.stderr = new_out, new_err

        def restore_streams() -> None:
            for s in (new_out, new_err):
                try:
                    s.flush()
                except (OSError, ValueError):
                    pass
            sys.stdout, sys.stderr = old_out, old_err
            new_out.close()
            new_err.close()

        self._undo.append(restore_streams)
        if enable_faulthandler:
            import faulthandler

            if not faulthandler.is_enabled():
                # native crashes (segfault, abort) dump Python tracebacks into the stderr file
                # (contract 6.4 recommends PYTHONFAULTHANDLER for exactly this)
                faulthandler.enable(file=2, all_threads=True)
                self._undo.append(faulthandler.disable)

    def _install_root_handler(self) -> None:
        root = logging.getLogger()
        root.addHandler(self.root_handler)
        prev = root.level
        # Lower the root level when needed so that user INFO records reach the handler (the default
        # root level is WARNING); never raise it: the caller may want more from its own handlers.
        if prev == logging.NOTSET or prev > self.level:
            root.setLevel(self.level)

        def undo() -> None:
            root.removeHandler(self.root_handler)
            root.setLevel(prev)
            self.root_handler.close()

        self._undo.append(undo)

    def _install_entry_logger(self) -> None:
        lg = self.entry_logger
        prev = (lg.level, lg.propagate)
        lg.setLevel(self.level)  # contract 4.7: debug() is dropped at INFO, as on Azure
        lg.propagate = False  # its own file only; not duplicated into stdout
        lg.addHandler(self._entry_handler)

        def undo() -> None:
            lg.removeHandler(self._entry_handler)
            lg.setLevel(prev[0])
            lg.propagate = prev[1]
            self._entry_handler.close()

        self._undo.append(undo)
        self._undo.append(self._error_handler.close)

    # -- public API -----------------------------------------------------------------------------------

    def write_user_error(self, where: str, mini_batch_index: int | None, attempt: int | None,
                         traceback_text: str) -> None:
        """Append a traceback block to ``user/error/<node>/<process>.txt``.

        ``where`` names the failing call, e.g. ``"run()"``, ``"init()"``, ``"shutdown()"``;
        ``mini_batch_index`` / ``attempt`` are ``None`` outside ``run()``.
        """
        head = [time.strftime("%Y-%m-%d %H:%M:%S"), where]
        if mini_batch_index is not None:
            head.append(f"mini-batch {mini_batch_index}")
        if attempt is not None:
            head.append(f"attempt {attempt}")
        head.append(f"{self.process_name} on node {self.node_id} (pid {os.getpid()})")
        block = f"===== {' | '.join(head)} =====\n{traceback_text.rstrip()}\n"
        self._error_handler.handle(logging.makeLogRecord({"msg": block, "levelno": logging.ERROR,
                                                          "levelname": "ERROR"}))

    def configure_entry_script(self, output_dir: str, working_dir: str | None = None) -> ModuleType | None:
        """Make ``from azureml_user.parallel_run import EntryScript`` work in this process and point its
        singleton at this process's logger and folders.

        Appends :data:`SHIM_DIR` to ``sys.path`` (at the end: it never shadows anything), imports the
        shim and calls its ``_configure``. ``working_dir`` defaults to the current directory. Returns
        the shim module, or ``None`` when another ``azureml_user`` package is already imported
        (then it is left alone). :meth:`close` resets the shim, forgets the ``azureml_user`` modules it
        imported and removes the path entry it added, so an inline job leaves no trace.
        """
        if SHIM_DIR not in sys.path:
            sys.path.append(SHIM_DIR)
            self._undo.append(lambda: sys.path.remove(SHIM_DIR) if SHIM_DIR in sys.path else None)
        import importlib

        if "azureml_user" not in sys.modules:
            # imported by us: forget it on close so that, after an inline job, the caller's process
            # is as before (``import azureml_user`` fails again) and the next job gets a fresh module
            def forget() -> None:
                for name in ("azureml_user.parallel_run", "azureml_user"):
                    sys.modules.pop(name, None)

            self._undo.append(forget)
        mod = importlib.import_module("azureml_user.parallel_run")
        if not hasattr(mod, "_configure"):
            return None
        mod._configure(
            logger=self.entry_logger,
            log_dir=self.entry_log_dir,
            agent_name=self.process_name,
            output_dir=output_dir,
            working_dir=working_dir if working_dir is not None else os.getcwd(),
            node_id=self.node_id,
        )
        self._shim = mod
        self._undo.append(mod._reset)
        return mod

    def flush(self) -> None:
        """Flush sys.stdout/sys.stderr and the log handlers (call before ``os._exit``)."""
        for s in (sys.stdout, sys.stderr):
            try:
                if s is not None:
                    s.flush()
            except (OSError, ValueError):
                pass
        for h in (self.root_handler, self._entry_handler, self._error_handler):
            h.flush()

    def close(self) -> None:
        """Flush, then undo everything in reverse order: shim config, handlers, root level, streams
        and file descriptors. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> WorkerLogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _restore_fd(fd: int, saved: int | None) -> None:
    if saved is None:
        return
    os.dup2(saved, fd)
    os.close(saved)


def setup_worker_logging(logs_dir: str, node_id: int, process_name: str, logging_level: str = "INFO",
                         redirect_fds: bool = True, *, enable_faulthandler: bool = True) -> WorkerLogs:
    """Set up the per-process user logs of a worker (contract 4.6, 4.7, 8.3).

    * ``redirect_fds=True`` (default; a worker process of its own): file descriptors 1 and 2 are
      ``dup2``-ed onto ``user/stdout/<node>/<proc>.stdout.txt`` and ``user/stderr/<node>/<proc>.stderr.txt``
      (append mode) so print(), C-level writes and child processes are captured, and ``sys.stdout`` /
      ``sys.stderr`` become line-buffered UTF-8 wrappers over them. With ``enable_faulthandler``
      (default True) faulthandler is enabled on the stderr file if it was not already.
    * ``redirect_fds=False`` (the inline backend, in the caller's own process): fds and
      ``sys.stdout``/``sys.stderr`` are not touched.
    * Both: a handler at ``logging_level`` (DEBUG, INFO, WARNING; default INFO) on the root logger
      writing to the stdout file; the root level is lowered to ``logging_level`` if it is higher;
      ``entry_logger`` (``azureml_user.entry_script.<proc>``) writes to
      ``user/entry_script_log/<node>/<proc>.log.txt`` at ``logging_level`` and does not propagate.
      These files, and ``user/error/<node>/<proc>.txt`` (see :meth:`WorkerLogs.write_user_error`),
      are written through ConcurrentRotatingFileHandler, created on first use.

    :meth:`WorkerLogs.close` undoes everything (handlers removed, root level, streams and fds
    restored), which the inline backend relies on. Costs nothing per mini-batch unless the script logs.
    """
    level = _parse_level(logging_level)
    wl = WorkerLogs(logs_dir, node_id, process_name, level, redirect_fds)
    for d in (os.path.dirname(wl.stdout_path), os.path.dirname(wl.stderr_path), wl.entry_log_dir):
        os.makedirs(d, exist_ok=True)  # entry_log_dir exists for scripts writing next to log_dir
    try:
        if redirect_fds:
            wl._redirect_fds(enable_faulthandler)
        wl._install_root_handler()
        wl._install_entry_logger()
    except BaseException:
        wl.close()
        raise
    return wl
