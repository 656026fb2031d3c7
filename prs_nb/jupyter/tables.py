"""HTML tables for the notebook: the error table (live and in ``RunResult._repr_html_``) and
per-worker status. Pure string building - no IPython or ipywidgets import, so the core may use it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

STATUS_COLOURS = {"Completed": "#2e7d32", "Failed": "#c62828", "Canceled": "#ef6c00", "Running": "#1565c0"}
_CSS = ("<style>.prs-tbl{border-collapse:collapse;font-size:12px;margin:4px 0}"
        ".prs-tbl th,.prs-tbl td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}"
        ".prs-tbl th{background:#f3f3f3}.prs-tbl pre{margin:2px 0;font-size:11px;white-space:pre-wrap;"
        "max-height:300px;overflow:auto}.prs-tbl details summary{cursor:pointer}</style>")


@dataclass(frozen=True)
class ErrorRow:
    """One failed attempt of a mini-batch, as shown in the error table."""

    index: int
    items: int | None
    attempt: int
    exc_type: str
    message: str
    traceback: str
    will_retry: bool
    process: str = ""
    kind: str = "exception"


def one_line(text: str, limit: int = 160) -> str:
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def error_table_html(rows: Sequence[ErrorRow], *, max_rows: int = 10, total: int | None = None) -> str:
    """The error table: mini-batch, items, attempt, error type, message (the traceback expands
    under it), first ``max_rows`` rows plus "N more" (``total`` counts rows not passed in)."""
    total = len(rows) if total is None else total
    if total == 0:
        return ""
    body = []
    for r in rows[:max_rows]:
        outcome = "retrying" if r.will_retry else "failed"
        tb = html.escape(r.traceback or r.message or "")
        body.append(
            f"<tr class='prs-err'><td>{r.index}</td><td>{'' if r.items is None else r.items}</td>"
            f"<td>{r.attempt} ({outcome})</td><td>{html.escape(r.exc_type or r.kind)}</td>"
            f"<td><details><summary>{html.escape(one_line(r.message))}</summary><pre>{tb}</pre></details></td>"
            f"<td>{html.escape(r.process)}</td></tr>"
        )
    more = total - min(len(rows), max_rows)
    tail = f"<div class='prs-more'>... first {min(len(rows), max_rows)} shown, {more} more</div>" if more > 0 else ""
    return (_CSS + "<table class='prs-tbl prs-errors'><tr><th>mini-batch</th><th>items</th><th>attempt</th>"
            "<th>error type</th><th>message (click for traceback)</th><th>process</th></tr>"
            + "".join(body) + "</table>" + tail)


def workers_html(workers: Iterable[tuple[str, str, str]]) -> str:
    """Per-worker status rows: (process, pid, state)."""
    cells = "".join(f"<tr><td>{html.escape(p)}</td><td>{html.escape(pid)}</td><td>{html.escape(s)}</td></tr>"
                    for p, pid, s in workers)
    if not cells:
        return ""
    return _CSS + "<table class='prs-tbl prs-workers'><tr><th>worker</th><th>pid</th><th>state</th></tr>" + cells + "</table>"


def kv_table_html(pairs: Iterable[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in pairs)
    return _CSS + f"<table class='prs-tbl'>{cells}</table>"


def status_html(job_name: str, status: str, detail: str = "") -> str:
    colour = STATUS_COLOURS.get(status, "#555")
    extra = f" &mdash; {html.escape(detail)}" if detail else ""
    return (f"<div class='prs-status'><b>{html.escape(job_name)}</b>: "
            f"<b style='color:{colour}'>{html.escape(status)}</b>{extra}</div>")
