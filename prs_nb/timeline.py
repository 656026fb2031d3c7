"""The timeline of a run: one lane per worker process, one bar per mini-batch attempt, coloured by
outcome (succeeded, failed and retried, failed for good, timed out). matplotlib is optional
(``pip install 'prs_nb[jupyter]'``) and imported only when a plot is drawn."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prs_nb.errors import ConfigError

#: outcome -> colour of its bars
COLOURS = {"Succeeded": "#43a047", "Retried": "#fb8c00", "Failed": "#e53935", "Timeout": "#8e24aa"}

Row = tuple[int, int, int, str, float, float, str]  # index, attempt, node_id, process, start, end, outcome


def classify(rows: Iterable[Sequence[Any]]) -> list[tuple[int, int, int, str, float, float, str]]:
    """Rows with a failed attempt that was followed by another attempt marked ``Retried``."""
    rows = [tuple(r) for r in rows]
    last_attempt: dict[int, int] = {}
    for r in rows:
        last_attempt[r[0]] = max(last_attempt.get(r[0], 0), int(r[1]))
    out = []
    for index, attempt, node, proc, start, end, outcome in rows:
        if outcome in ("Failed", "Timeout") and attempt < last_attempt[index]:
            outcome = "Retried" if outcome == "Failed" else outcome
        out.append((int(index), int(attempt), int(node), str(proc), float(start), float(end), str(outcome)))
    return out


def lanes(rows: Sequence[Row]) -> list[tuple[int, str]]:
    """The worker processes of ``rows``, in (node, process name) order: one lane each."""
    return sorted({(r[2], r[3]) for r in rows})


def plot_timeline(rows: Iterable[Sequence[Any]], *, ax: Any = None, title: str | None = None) -> Any:
    """Draw the timeline on ``ax`` (default: a new figure) and return the matplotlib Axes.

    x: seconds since the first attempt started; y: one lane per worker process (node/process)."""
    try:
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise ConfigError("plot_timeline needs matplotlib: pip install 'prs_nb[jupyter]' (or matplotlib)") from None
    data = classify(rows)
    lane_keys = lanes(data)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * max(1, len(lane_keys))))
    t0 = min((r[4] for r in data), default=0.0)
    y = {key: i for i, key in enumerate(lane_keys)}
    by_outcome: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for _index, _attempt, node, proc, start, end, outcome in data:
        by_outcome.setdefault(outcome, {}).setdefault(y[(node, proc)], []).append(
            (start - t0, max(end - start, 1e-4)))
    for outcome, per_lane in by_outcome.items():
        for lane, spans in per_lane.items():
            ax.broken_barh(spans, (lane - 0.4, 0.8), facecolors=COLOURS.get(outcome, "#757575"),
                           edgecolor="white", linewidth=0.3)
    ax.set_yticks(range(len(lane_keys)))
    ax.set_yticklabels([f"node {n} {p}" for n, p in lane_keys])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first mini-batch started")
    ax.set_title(title or f"{len(data)} mini-batch attempts on {len(lane_keys)} worker process(es)")
    present = [o for o in COLOURS if o in by_outcome]
    if present:
        # outside the axes, right of the lanes: inside it would hide the last bars of the top lane
        ax.legend(handles=[Patch(color=COLOURS[o], label=o) for o in present], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    return ax
