"""The live notebook display of a running job, driven by engine events (never by polling).

::

    scheduler thread --events--> NotebookProgress.on_event  (cheap: counters, at most max_rows rows kept)
                                        | at most every ``min_interval`` seconds, and at the end
                                        v
        VBox[ status line | tqdm.notebook bar (mini-batches; items, failed, retried in the postfix)
              | worker table | error table (first rows + "N more", tracebacks expand) | Stop ]

The Stop button cancels through the ``cancel`` callable the engine hands out with ``JobStarted``.
A job started from a cell blocks the kernel's main thread, so a click would normally wait in the
shell queue until the cell ends; with ipykernel >= 7 the button's comm is given a routing hook
(``_reply_subshell_for``), which the kernel calls on its shell-channel thread for every message
to that comm - the hook sees the click there and cancels at once (see :func:`route_clicks_now`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prs_nb import events as ev
from prs_nb.jupyter.tables import ErrorRow, error_table_html, status_html, workers_html

log = logging.getLogger(__name__)


def route_clicks_now(button: Any, on_click: Callable[[], None]) -> bool:
    """Make ``on_click`` run as soon as the browser sends a click, even while a cell is running.

    ipykernel >= 7 asks each comm where to route its incoming messages (``_reply_subshell_for``,
    called on the shell-channel thread). Wrapping that hook lets the click be seen on that thread;
    the message is still routed as usual (so ``on_click`` handlers also run later, which must be
    harmless). Returns False when the kernel has no such hook (ipykernel < 7, no kernel)."""
    comm = getattr(button, "comm", None)
    original = getattr(comm, "_reply_subshell_for", None)
    if comm is None or original is None:
        return False

    def route(data: Any, default: Any) -> Any:
        content = data.get("content") if isinstance(data, dict) else None
        if isinstance(content, dict) and data.get("method") == "custom" and content.get("event") == "click":
            try:
                on_click()
            except Exception:  # a failing callback must never break the kernel's message routing
                log.exception("prs_nb: Stop button callback failed")
        return original(data, default)

    comm._reply_subshell_for = route
    return True


_REDRAW_ON = (ev.Progress, ev.BatchFailed, ev.BatchesListed, ev.WorkerReady, ev.WorkerDied, ev.InitFailed)


def _worker_key(e: Any) -> str:
    """processNNN on node 0 (the usual single node); "node N/processNNN" on the others (instance_count > 1)."""
    return e.process_name if e.node_id == 0 else f"node {e.node_id}/{e.process_name}"


def _fmt_seconds(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class NotebookProgress:
    """Live display of one job: progress bar, status line, workers, error table and a Stop button.

    ``max_rows`` (10) error rows are shown, then "N more"; the widgets are refreshed at most every
    ``min_interval`` (0.25) seconds, so a job of tens of thousands of mini-batches is not slowed down.
    ``display`` (True) shows the widget at once; the widget is ``self.widget`` either way.
    """

    def __init__(self, job_name: str, *, max_rows: int = 10, min_interval: float = 0.25,
                 display: bool = True) -> None:
        import ipywidgets as w
        from tqdm.notebook import tqdm as nb_tqdm

        self.job_name = job_name
        self.max_rows = max_rows
        self.min_interval = min_interval
        self.status = "Starting"
        self.reason = ""
        self.total: int | None = None
        self.done = self.succeeded = self.failed = self.running = 0
        self.items_ok = self.items_failed = 0
        self.retried = 0
        self.failed_attempts = 0
        self.error_rows: list[ErrorRow] = []
        self.workers: dict[str, list[str]] = {}
        self.run_dir = ""
        self.t0 = time.monotonic()
        self.finished = False
        self.cancel_requested: str | None = None
        self._cancel_fn: Callable[[str], None] | None = None
        self._last = 0.0
        self._lock = threading.Lock()
        self.bar = nb_tqdm(total=None, desc=job_name, unit="mb", display=False, leave=True, mininterval=0)
        # tqdm sizes its bar for an output area; inside our VBox give it the width explicitly
        self.bar.container.layout.width = "100%"
        self.bar.container.children[1].layout.flex = "2"
        self.bar.container.children[1].layout.min_width = "240px"
        self.title = w.HTML(status_html(job_name, self.status))
        self.workers_html = w.HTML()
        self.errors_html = w.HTML()
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="Cancel the job: running mini-batches are stopped, nothing new starts")
        self.stop_button.on_click(lambda _b: self.cancel("stopped with the Stop button"))
        self.stop_routed = route_clicks_now(self.stop_button, lambda: self.cancel("stopped with the Stop button"))
        self.widget = w.VBox([self.title, self.bar.container, w.HBox([self.stop_button]), self.workers_html,
                              self.errors_html])
        self.widget.add_class("prs-progress")
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.JobStarted: self._on_started, ev.BatchesListed: self._on_listed, ev.Progress: self._on_progress,
            ev.BatchStarted: self._on_batch_started, ev.BatchSucceeded: self._on_batch_ok,
            ev.BatchFailed: self._on_batch_failed, ev.WorkerStarted: self._on_worker_started,
            ev.WorkerReady: self._on_worker_ready, ev.WorkerDied: self._on_worker_died,
            ev.InitFailed: self._on_init_failed, ev.JobFinished: self._on_finished,
        }
        if display:
            from IPython.display import display as show

            show(self.widget)

    # ------------------------------------------------------------------ cancel
    def cancel(self, reason: str = "canceled by the user") -> None:
        """Ask the engine to cancel the job (idempotent; a no-op once the job finished)."""
        with self._lock:
            if self.finished or self.cancel_requested is not None:
                return
            self.cancel_requested = reason
            fn = self._cancel_fn
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping..."
        if fn is not None:
            fn(reason)

    # ------------------------------------------------------------------ events
    def on_event(self, event: Any) -> None:
        handler = self._handlers.get(type(event))
        if handler is None:
            return
        handler(event)
        # Redraw only on the engine's own throttled Progress events (and on failures, so an error
        # shows up quickly), at most every min_interval: the per-batch events stay a dict lookup
        # and a counter, which keeps a 20,000-mini-batch job within a few percent of no display.
        if type(event) in _REDRAW_ON:
            now = time.monotonic()
            if now - self._last >= self.min_interval:
                self._last = now
                self.render()

    def _on_started(self, e: Any) -> None:
        self.run_dir = e.run_dir
        self.t0 = time.monotonic()
        self.status = "Running"
        with self._lock:
            self._cancel_fn = getattr(e, "cancel", None)
            pending = self.cancel_requested
        if pending is not None and self._cancel_fn is not None:
            self._cancel_fn(pending)

    def _on_listed(self, e: Any) -> None:
        if e.complete:
            self.total = e.total

    def _on_progress(self, e: Any) -> None:
        if e.total is not None:
            self.total = e.total
        self.done, self.succeeded, self.failed, self.running = e.done, e.succeeded, e.failed, e.running
        self.items_ok, self.items_failed = e.items_succeeded, e.items_failed

    def _on_batch_started(self, e: Any) -> None:
        st = self.workers.get(_worker_key(e))
        if st is not None:
            st[1] = f"mini-batch {e.index}" + (f" (attempt {e.attempt})" if e.attempt > 1 else "")

    def _on_batch_ok(self, e: Any) -> None:
        self.done += 1
        self.succeeded += 1
        st = self.workers.get(_worker_key(e))
        if st is not None:
            st[1] = "idle"

    def _on_batch_failed(self, e: Any) -> None:
        self.failed_attempts += 1
        if e.will_retry:
            self.retried += 1
        else:
            self.done += 1
            self.failed += 1
        if len(self.error_rows) < self.max_rows:
            self.error_rows.append(ErrorRow(e.index, e.items, e.attempt, e.exc_type, e.message, e.traceback,
                                            e.will_retry, e.process_name, e.kind))
        st = self.workers.get(_worker_key(e))
        if st is not None:
            st[1] = "idle"

    def _on_worker_started(self, e: Any) -> None:
        self.workers[_worker_key(e)] = [str(e.pid), "starting (init)"]

    def _on_worker_ready(self, e: Any) -> None:
        self.workers[_worker_key(e)] = [str(e.pid), "idle"]

    def _on_worker_died(self, e: Any) -> None:
        st = self.workers.setdefault(_worker_key(e), [str(e.pid), ""])
        st[1] = f"exited: {e.reason}"

    def _on_init_failed(self, e: Any) -> None:
        st = self.workers.setdefault(_worker_key(e), [str(e.pid), ""])
        st[1] = f"init() failed: {e.exc_type}"

    def _on_finished(self, e: Any) -> None:
        with self._lock:
            self.finished = True
        self.status = e.status
        self.reason = e.reason
        c = e.counts or {}
        if c:
            self.total = c.get("total", self.total)
            self.succeeded, self.failed = c.get("succeeded", self.succeeded), c.get("failed", self.failed)
            self.done = self.succeeded + self.failed
            self.items_ok, self.items_failed = c.get("items_succeeded", self.items_ok), c.get("items_failed",
                                                                                               self.items_failed)
        self.running = 0
        self.render()
        self.bar.close()
        # close() colours the bar by n < total only: a job that failed or was canceled is red, one that
        # completed while tolerating failed mini-batches orange
        self.bar.container.children[1].bar_style = (
            "danger" if e.status != "Completed" else "warning" if self.failed else "success")
        self.stop_button.layout.display = "none"

    # ------------------------------------------------------------------ drawing
    def summary_line(self) -> str:
        elapsed = time.monotonic() - self.t0
        eta = None
        if self.total and self.done and self.status == "Running":
            eta = elapsed / self.done * (self.total - self.done)
        total = "?" if self.total is None else str(self.total)
        parts = [f"{self.done}/{total} mini-batches", f"{self.failed} failed", f"{self.retried} retried",
                 f"items {self.items_ok} ok / {self.items_failed} failed", f"elapsed {_fmt_seconds(elapsed)}"]
        if eta is not None:
            parts.append(f"ETA {_fmt_seconds(eta)}")
        if self.reason:
            parts.append(self.reason)
        return ", ".join(parts)

    def render(self) -> None:
        """Push the current counts to the widgets (called throttled, and once at the end)."""
        bar = self.bar
        if self.total is not None and bar.total != self.total:
            bar.total = self.total
            # a bar made without a total is a full "unknown" bar (max 1); tqdm.notebook only resizes it in reset()
            bar.container.children[1].max = max(1, self.total)
        bar.n = self.done
        bar.set_postfix(failed=self.failed, retried=self.retried, items=self.items_ok,
                        items_failed=self.items_failed, refresh=False)
        bar.refresh()
        if self.failed and self.status == "Running":
            bar.container.children[1].bar_style = "danger"
        self.title.value = status_html(self.job_name, self.status, self.summary_line())
        if self.workers:
            self.workers_html.value = workers_html((p, s[0], s[1]) for p, s in sorted(self.workers.items()))
        self.errors_html.value = error_table_html(self.error_rows, max_rows=self.max_rows,
                                                  total=self.failed_attempts)
