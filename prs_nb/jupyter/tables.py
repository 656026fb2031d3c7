"""HTML tables for the notebook: the error table (live and in ``RunResult._repr_html_``) and
per-worker status. Pure string building - no IPython or ipywidgets import, so the core may use it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


def result_html(result: Any) -> str:
    """``RunResult._repr_html_``: status and reason, counts, paths, then the error table."""
    c = result.counts
    pairs = [
        ("mini-batches", f"{c.get('succeeded', 0)} succeeded / {c.get('failed', 0)} failed / {c.get('total', 0)} total"
         + (f" / {c['not_run']} not run" if c.get("not_run") else "")),
        ("items", f"{c.get('items_succeeded', 0)} succeeded / {c.get('items_failed', 0)} failed"),
        ("failed attempts", str(c.get("failed_attempts", len(result._error_rows)))),
        ("duration", f"{result.duration:.2f} s on {c.get('workers', 0)} worker process(es), backend {result.backend}"),
        ("output", result.output_path or "(summary_only)"),
        ("run directory", result.run_dir),
        ("logs", f"{result.logs_dir} (start with job_result.txt)"),
    ]
    items_of = {row[0]: row[1] for row in result._batch_rows}
    rows = [ErrorRow(r[0], r[11] if r[11] is not None else items_of.get(r[0]), r[1], r[3], r[4], r[13], r[5],
                     str(r[7]), r[2]) for r in result._error_rows[:10]]
    errors = error_table_html(rows, max_rows=10, total=len(result._error_rows))
    if errors:
        errors = "<div><b>Failed attempts</b> (all in <code>result.errors</code>)</div>" + errors
    return (f"<div class='prs-result'>{status_html(result.job_name + ' run ' + result.run_id, result.status, result.reason)}"
            f"{kv_table_html(pairs)}{errors}</div>")
