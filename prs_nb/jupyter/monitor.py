"""RunMonitor: open a run directory - running or finished, from this kernel or another process - and
see its progress, error table and timeline.

It reads what the driver writes (the log tree of contract 8.3): the newest line of
``job_progress_overview.*.txt`` for the counts, every attempt from ``sys/node/<node>/<process>.txt``
(read incrementally from where the last refresh stopped), tracebacks from
``user/error/<node>/<process>.txt``, and ``job_result.txt`` once the job ended. A job in another
process can only be followed through its files, so a running job is re-read every ``interval``
seconds (a background thread that stops when ``job_result.txt`` appears).
"""

from __future__ import annotations

import glob
import io
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prs_nb.errors import ConfigError
from prs_nb.jupyter.tables import ErrorRow, error_table_html, kv_table_html, status_html

_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \| pid (?P<pid>\d+) \| mini-batch (?P<index>\d+) "
    r"attempt (?P<attempt>\d+) (?:completed in (?P<ok>[\d.]+) s .*?: (?P<items>\d+) items.*"
    r"|FAILED after (?P<bad>[\d.]+) s \((?P<kind>\w+): (?P<err>.*)\); (?P<outcome>will retry|failed for good.*))$")
_OVERVIEW = re.compile(r"created (\d+) mini-batches.*?processed (\d+), succeeded (\d+), failed (\d+), running (\d+); "
                       r"items succeeded (\d+), failed (\d+)")
_TB_HEAD = re.compile(r"^===== .*?\| mini-batch (\d+) \| attempt (\d+) \| .* =====$")


def _parse_ts(text: str) -> float:
    base, ms = text.rsplit(".", 1)
    return time.mktime(time.strptime(base, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000.0


@dataclass
class RunState:
    """What the files of one run say so far."""

    run_dir: str
    job_name: str = ""
    status: str = "Running"
    reason: str = ""
    total: int | None = None
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    items_ok: int = 0
    items_failed: int = 0
    timeline: list[tuple[int, int, int, str, float, float, str]] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)


class RunMonitor:
    """Follow one run directory (``<runs root>/<job>/<run id>``).

    ``refresh()`` reads what is new; ``start()`` refreshes every ``interval`` (1.0) seconds in a
    background thread until the job has finished; ``widget`` shows status, a progress bar, the
    error table (first ``max_rows`` rows) and the timeline."""

    def __init__(self, run_dir: str, *, interval: float = 1.0, max_rows: int = 10, display: bool = False) -> None:
        import ipywidgets as w

        run_dir = os.path.abspath(run_dir)
        if not os.path.isdir(os.path.join(run_dir, "logs")):
            raise ConfigError(f"{run_dir!r} is not a prs_nb run directory (no logs/ folder in it); a run directory "
                              "looks like prs_runs/<job name>/<run id>")
        self.state = RunState(run_dir)
        self.interval = interval
        self.max_rows = max_rows
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, str] = {}
        self._tracebacks: dict[tuple[int, int], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.title = w.HTML()
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="60%"))
        self.counts = w.HTML()
        self.errors_html = w.HTML()
        self.timeline_image = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.widget = w.VBox([self.title, self.bar, self.counts, self.errors_html, self.timeline_image])
        self.widget.add_class("prs-run-monitor")
        self.refresh()
        if display:
            from IPython.display import display as show

            show(self.widget)

    # ------------------------------------------------------------------ reading
    def _logs(self, *parts: str) -> str:
        return os.path.join(self.state.run_dir, "logs", *parts)

    def _read_new(self, path: str) -> list[str]:
        """Complete lines appended to ``path`` since the last call."""
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.seek(self._offsets.get(path, 0))
                chunk = fh.read()
                self._offsets[path] = fh.tell()
        except OSError:
            return []
        text = self._partial.pop(path, "") + chunk
        lines = text.split("\n")
        if lines and lines[-1]:
            self._partial[path] = lines[-1]
        return lines[:-1]

    def refresh(self) -> RunState:
        """Read what is new in the run's files and redraw."""
        s = self.state
        if not s.job_name:
            s.job_name = os.path.basename(os.path.dirname(s.run_dir))
        overviews = sorted(glob.glob(self._logs("job_progress_overview.*.txt")))
        if overviews:
            for line in self._read_new(overviews[-1]):
                m = _OVERVIEW.search(line)
                if m:
                    (s.total, s.done, s.succeeded, s.failed, s.running, s.items_ok,
                     s.items_failed) = (int(x) for x in m.groups())
        for path in sorted(glob.glob(self._logs("user", "error", "*", "*.txt"))):
            self._read_tracebacks(path)
        new_failures = False
        for path in sorted(glob.glob(self._logs("sys", "node", "*", "process*.txt"))):
            node = int(os.path.basename(os.path.dirname(path)))
            proc = os.path.basename(path)[:-4]
            for line in self._read_new(path):
                m = _LINE.match(line)
                if not m:
                    continue
                end = _parse_ts(m["ts"])
                index, attempt = int(m["index"]), int(m["attempt"])
                if m["ok"] is not None:
                    s.timeline.append((index, attempt, node, proc, end - float(m["ok"]), end, "Succeeded"))
                    continue
                kind = m["kind"]
                exc_type, _sep, message = m["err"].partition(": ")
                s.timeline.append((index, attempt, node, proc, end - float(m["bad"]), end,
                                   "Timeout" if kind == "timeout" else "Failed"))
                s.errors.append(ErrorRow(index, None, attempt, exc_type, message, "", m["outcome"] == "will retry",
                                         proc, kind))
                new_failures = True
        if new_failures or s.errors:
            s.errors = [ErrorRow(r.index, r.items, r.attempt, r.exc_type, r.message,
                                 self._tracebacks.get((r.index, r.attempt), r.traceback), r.will_retry, r.process,
                                 r.kind) for r in s.errors]
        result = self._logs("job_result.txt")
        if os.path.exists(result):
            with open(result, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
            if lines:
                s.status = lines[0].rsplit(": ", 1)[-1].strip()
                s.reason = next((x[len("Reason: "):] for x in lines if x.startswith("Reason: ")), "")
        self.draw()
        return s

    def _read_tracebacks(self, path: str) -> None:
        key: tuple[int, int] | None = None
        for line in self._read_new(path):
            m = _TB_HEAD.match(line)
            if m:
                key = (int(m.group(1)), int(m.group(2)))
                self._tracebacks[key] = ""
            elif line.startswith("====="):
                key = None
            elif key is not None:
                self._tracebacks[key] += line + "\n"

    @property
    def finished(self) -> bool:
        return self.state.status != "Running"

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        s = self.state
        self.title.value = status_html(f"{s.job_name} ({os.path.basename(s.run_dir)})", s.status, s.reason)
        self.bar.max = max(1, s.total or 0)
        self.bar.value = min(s.done, self.bar.max)
        self.bar.bar_style = ("info" if s.status == "Running" else "success" if s.status == "Completed" and not s.failed
                              else "warning" if s.status == "Completed" else "danger")
        self.counts.value = kv_table_html([
            ("mini-batches", f"{s.done}/{'?' if s.total is None else s.total} processed: {s.succeeded} succeeded, "
                             f"{s.failed} failed, {s.running} running"),
            ("items", f"{s.items_ok} succeeded, {s.items_failed} failed"),
            ("attempts", f"{len(s.timeline)} ({len(s.errors)} failed)"),
            ("run directory", s.run_dir),
        ])
        self.errors_html.value = error_table_html(s.errors, max_rows=self.max_rows)
        if s.timeline and (self.finished or self._thread is not None):
            self.timeline_image.value = self.timeline_png()

    def timeline_png(self) -> bytes:
        """The timeline as PNG bytes (drawn off-screen, so it works from the refresh thread too)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from prs_nb.timeline import lanes, plot_timeline

        n = len(lanes(self.state.timeline))
        fig = Figure(figsize=(9, 0.8 + 0.4 * max(1, n)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        plot_timeline(self.state.timeline, ax=ax, title=f"{self.state.job_name}: {self.state.status}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        return buf.getvalue()

    # ------------------------------------------------------------------ following a running job
    def start(self) -> None:
        """Refresh every ``interval`` seconds in a background thread until the job finished."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self.refresh()
                if self.finished:
                    break
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="prs_nb-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def latest_runs(runs_root: str = "prs_runs", limit: int = 20) -> list[str]:
    """Run directories under ``runs_root``, newest first."""
    runs = [p for p in glob.glob(os.path.join(runs_root, "*", "*")) if os.path.isdir(os.path.join(p, "logs"))]
    return sorted(runs, key=os.path.getmtime, reverse=True)[:limit]


def run_picker(runs_root: str = "prs_runs", *, open_latest: bool = True) -> Any:
    """A small app: pick a run under ``runs_root`` (or type a path), open it in a RunMonitor.
    ``open_latest`` (True) opens the newest run at once."""
    import ipywidgets as w

    path = w.Combobox(options=latest_runs(runs_root), placeholder="prs_runs/<job>/<run id>",
                      description="run directory", style={"description_width": "initial"},
                      layout=w.Layout(width="640px"), ensure_option=False)
    path.add_class("prs-run-path")
    if path.options:
        path.value = path.options[0]
    button = w.Button(description="Open", icon="folder-open", button_style="primary")
    rescan = w.Button(description="Rescan", icon="refresh")
    message = w.HTML()
    area = w.VBox()
    box = w.VBox([w.HBox([path, button, rescan]), message, area])
    box.add_class("prs-run-picker")
    current: list[RunMonitor] = []

    def open_run(_b: Any = None) -> None:
        import html

        for m in current:
            m.stop()
        current.clear()
        try:
            mon = RunMonitor(path.value)
        except ConfigError as exc:
            message.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            return
        message.value = ""
        current.append(mon)
        area.children = [mon.widget]
        mon.start()

    def do_rescan(_b: Any = None) -> None:
        path.options = latest_runs(runs_root)

    button.on_click(open_run)
    rescan.on_click(do_rescan)
    box.open_run = open_run  # for scripted use and tests
    box.monitors = current
    if open_latest and path.value:
        open_run()
    return box
