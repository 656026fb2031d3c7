"""RunResult: what a finished (or failed, or canceled) job leaves behind.

pandas is imported only when a table is asked for, so worker processes never pay for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prs_nb.errors import JobFailedError, UserCodeError, WorkerError

BATCH_COLUMNS = ["index", "items", "returned", "failed_items", "attempts", "status", "node_id", "process",
                 "start", "duration", "error_type", "error", "first_items", "host"]
ERROR_COLUMNS = ["index", "attempt", "kind", "error_type", "message", "will_retry", "node_id", "process", "pid",
                 "start", "duration", "items", "first_items", "traceback"]


@dataclass
class RunResult:
    """The outcome of one run.

    ``status`` is ``Completed``, ``Failed`` or ``Canceled``; ``reason`` says why a job did not
    complete (which limit was exceeded, with the counts). ``counts`` holds mini-batch and item
    totals. ``batches`` / ``errors`` are DataFrames (one row per mini-batch / per failed attempt).
    ``output_path`` is the append_row file (None for summary_only); ``logs_dir`` Azure's log tree.
    """

    job_name: str
    run_id: str
    run_dir: str
    status: str
    reason: str
    counts: dict[str, int]
    output_paths: dict[str, str]
    output_path: str | None
    logs_dir: str
    limit: str | None = None
    duration: float = 0.0
    reused: bool = False
    backend: str = "local"
    read_options: dict[str, Any] = field(default_factory=dict)
    _batch_rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    _error_rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    timeline_rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    shutdown_errors: list[tuple[int, str, str, str]] = field(default_factory=list, repr=False)
    # (node_id, process_name, pid, exc_type, message, traceback) per failed init()
    init_failure_rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ tables
    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"

    @property
    def batches(self) -> Any:
        """One row per mini-batch: index, items, returned, failed_items, attempts, status, node_id,
        process, start, duration (seconds), error_type, error, first_items, host (the machine that ran
        it last: this one for local; the Ray node's address for ray)."""
        import pandas as pd

        width = len(BATCH_COLUMNS)
        # rows cached by an older prs_nb have no host column
        rows = [r if len(r) == width else (*r, *([""] * (width - len(r)))) for r in self._batch_rows]
        return pd.DataFrame(rows, columns=BATCH_COLUMNS)

    @property
    def errors(self) -> Any:
        """One row per failed attempt, with the user's traceback (worker frames first)."""
        import pandas as pd

        return pd.DataFrame(self._error_rows, columns=ERROR_COLUMNS)

    @property
    def timeline(self) -> Any:
        """One row per attempt: index, attempt, node_id, process, start, end, outcome."""
        import pandas as pd

        return pd.DataFrame(self.timeline_rows,
                            columns=["index", "attempt", "node_id", "process", "start", "end", "outcome"])

    def to_pandas(self, **read_csv_kwargs: Any) -> Any:
        """Read the append_row output back into a DataFrame.

        Defaults match how it was written: ``sep=" "``, no header (unless
        ``--append_row_dataframe_header`` was set), overridable with read_csv keyword arguments.
        """
        import pandas as pd

        if self.output_path is None:
            raise JobFailedError(f"job {self.job_name!r} has no append_row output (summary_only): set "
                                 "task append_row_to='${{outputs.<name>}}' to aggregate run() results", self)
        kwargs: dict[str, Any] = {"sep": " ", "header": None}
        kwargs.update(self.read_options)
        kwargs.update(read_csv_kwargs)
        if not os.path.exists(self.output_path) or os.path.getsize(self.output_path) == 0:
            return pd.DataFrame()
        return pd.read_csv(self.output_path, **kwargs)

    def read_lines(self) -> list[str]:
        """The append_row output as a list of lines (for list/tuple results)."""
        if self.output_path is None or not os.path.exists(self.output_path):
            return []
        with open(self.output_path, encoding="utf-8") as fh:
            return fh.read().splitlines()

    def raise_for_status(self) -> RunResult:
        """Raise :class:`JobFailedError` unless the job Completed; return self otherwise.

        The first failure that counted (see :meth:`first_error`) is chained as ``__cause__``: a
        :class:`WorkerError` when the worker died or timed out, else a :class:`UserCodeError`
        carrying the worker's traceback (itself chained: the user's frames print first), the
        mini-batch index and first items, attempt, process name and pid."""
        if self.status == "Completed":
            return self
        error = JobFailedError(self.summary(), self)
        cause = self.first_error()
        if cause is not None:
            raise error from cause
        raise error

    def first_error(self) -> WorkerError | UserCodeError | None:
        """The first failure that counted, as an exception: the first mini-batch whose attempts ran
        out (else the first failed attempt, else the first init() failure). A
        :class:`UserCodeError` carries the user's traceback (chained as a RemoteTraceback), the
        mini-batch index and first items, the attempt, the process name and pid; a
        :class:`WorkerError` says how the worker died or that it timed out."""
        rows = [r for r in self._error_rows if not r[5]] or self._error_rows
        if rows:
            r = rows[0]
            where = f"mini-batch {r[0]} [{r[12]}], attempt {r[1]}, on {r[7]} (pid {r[8]})"
            if r[2] in ("worker_died", "timeout"):
                return WorkerError(f"{where}: {r[4]}", kind=r[2], mini_batch_index=r[0], attempt=r[1],
                                   process_name=r[7], pid=r[8], first_items=r[12])
            return UserCodeError(f"run() failed for {where}: {r[3]}: {r[4]}", exc_type=r[3], remote_traceback=r[13],
                                 mini_batch_index=r[0], attempt=r[1], process_name=r[7], pid=r[8],
                                 first_items=r[12])
        if self.init_failure_rows:
            node, proc, pid, exc_type, message, tb = self.init_failure_rows[0]
            if exc_type == "WorkerDied":  # init() crashed the process or never finished
                return WorkerError(f"init() failed on node {node} {proc} (pid {pid}): {message}", kind="init",
                                   process_name=proc, pid=pid)
            return UserCodeError(f"init() failed on node {node} {proc} (pid {pid}): {exc_type}: {message}",
                                 exc_type=exc_type, remote_traceback=tb, process_name=proc, pid=pid)
        return None

    # ------------------------------------------------------------------ display
    def summary(self, max_errors: int = 3) -> str:
        c = self.counts
        lines = [
            f"prs_nb job {self.job_name!r} run {self.run_id}: {self.status}"
            + (f" - {self.reason}" if self.reason else "")
            + (" (reused a previous identical run)" if self.reused else ""),
            f"  mini-batches: {c.get('total', 0)} total, {c.get('succeeded', 0)} succeeded, "
            f"{c.get('failed', 0)} failed" + (f", {c['not_run']} not run" if c.get("not_run") else ""),
            f"  items:        {c.get('items_total', 0)} total, {c.get('items_succeeded', 0)} succeeded, "
            f"{c.get('items_failed', 0)} failed",
            f"  time:         {self.duration:.2f} s on {c.get('workers', 0)} worker process(es), backend "
            f"{self.backend}",
        ]
        if self.output_path:
            lines.append(f"  output:       {self.output_path}")
        lines.append(f"  logs:         {self.logs_dir}  (start with job_result.txt)")
        for node, proc, exc_type, message in self.shutdown_errors[:max_errors]:
            lines.append(f"  shutdown() failed on node {node} {proc}: {exc_type}: {_one_line(message)}")
        final = [r for r in self._error_rows if not r[5]]
        if self._error_rows:
            lines.append(f"  failed attempts: {len(self._error_rows)} ({len(final)} final)")
            for r in self._error_rows[:max_errors]:
                lines.append(f"    mini-batch {r[0]} attempt {r[1]} on {r[7]}: {r[3]}: {_one_line(r[4])}")
            if len(self._error_rows) > max_errors:
                lines.append(f"    ... first {max_errors} shown, {len(self._error_rows) - max_errors} more in "
                             "result.errors")
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = self.counts
        return (f"<RunResult {self.job_name!r} {self.status}: {c.get('succeeded', 0)}/{c.get('total', 0)} "
                f"mini-batches succeeded, {c.get('failed', 0)} failed>")

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from prs_nb.jupyter.tables import result_html  # plain HTML, no IPython import

        return result_html(self)

    def plot_timeline(self, ax: Any = None) -> Any:
        """One lane per worker process, one bar per mini-batch attempt, coloured by outcome
        (matplotlib; returns the Axes). See :func:`prs_nb.timeline.plot_timeline`."""
        from prs_nb.timeline import plot_timeline

        return plot_timeline(self.timeline_rows, ax=ax, title=f"{self.job_name} run {self.run_id}: {self.status}")


def _one_line(text: str, limit: int = 160) -> str:
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."
