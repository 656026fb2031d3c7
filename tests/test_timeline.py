"""plot_timeline's legend never hides a bar (found by notebooks/03: the retry at the end of the top lane
was drawn under the legend)."""

from __future__ import annotations

import matplotlib  # the jupyter extra, installed by .ci/run: never skipped
import pytest

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from prs_nb.timeline import lanes, plot_timeline  # noqa: E402

ROWS = [(0, 1, 0, "process001", 0.0, 0.5, "Succeeded"),
        (1, 1, 0, "process002", 0.0, 2.0, "Timeout"),
        (2, 1, 0, "process001", 0.5, 0.6, "Failed"),
        (2, 2, 0, "process001", 2.0, 2.5, "Succeeded"),  # the rightmost bars, in the top lane
        (1, 2, 0, "process001", 2.5, 2.7, "Succeeded")]


@pytest.mark.parametrize("figsize", [(10, 1.4), (6, 1.4), (10, 4)])
def test_legend_does_not_cover_any_bar(figsize):
    fig = Figure(figsize=figsize)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    plot_timeline(ROWS, ax=ax)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["Succeeded", "Retried", "Timeout"]
    box = legend.get_window_extent(renderer)
    lane = {key: i for i, key in enumerate(lanes(ROWS))}
    t0 = min(r[4] for r in ROWS)
    covered = []
    for r in ROWS:
        y = lane[(r[2], r[3])]
        bar = Bbox(ax.transData.transform([(r[4] - t0, y - 0.4), (r[5] - t0, y + 0.4)]))
        if box.overlaps(bar):
            covered.append(r)
    assert not covered, f"the legend covers {covered}"
