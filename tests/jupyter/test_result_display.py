"""RunResult in the notebook: _repr_html_, errors/batches tables, plot_timeline (real runs)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from prs_nb import Input, RunFunction, parallel_run_function  # noqa: E402
from prs_nb.timeline import COLOURS, classify, lanes  # noqa: E402


def flaky_run(mini_batch):
    import os

    names = [os.path.basename(p) for p in mini_batch]
    if "f03.txt" in names:
        raise KeyError("no label for f03.txt")
    return names


@pytest.fixture
def result(workdir):
    (workdir / "d").mkdir()
    for i in range(30):
        (workdir / "d" / f"f{i:02d}.txt").write_text("x")
    job = parallel_run_function(name="disp", inputs={"d": Input(type="uri_folder", path="d")}, mini_batch_size="1",
                                max_concurrency_per_instance=2, retry_settings={"max_retries": 1, "timeout": 30},
                                mini_batch_error_threshold=0, task=RunFunction(run=flaky_run))
    return job.run(progress=False)


def test_repr_html_has_status_counts_error_table_paths(result):
    html = result._repr_html_()
    assert result.status == "Failed"
    assert ">Failed<" in html and "mini_batch_error_threshold" in html
    assert "mini-batches" in html and result.logs_dir in html and result.run_dir in html
    assert "<th>mini-batch</th><th>items</th><th>attempt</th><th>error type</th>" in html
    assert "KeyError" in html and "no label for f03.txt" in html and "<details>" in html
    assert html.count("class='prs-err'") == len(result.errors)


def test_error_table_truncates_with_n_more():
    from prs_nb.jupyter.tables import ErrorRow, error_table_html

    rows = [ErrorRow(i, 1, 1, "ValueError", f"bad {i}", "Traceback...", False) for i in range(25)]
    html = error_table_html(rows, max_rows=10)
    assert html.count("class='prs-err'") == 10 and "first 10 shown, 15 more" in html


def test_errors_and_batches_tables(result):
    errs = result.errors
    assert set(errs["index"]) == {3} and list(errs["error_type"]) == ["KeyError", "KeyError"]
    assert all("no label for f03.txt" in tb for tb in errs["traceback"])
    b = result.batches
    assert b.loc[b["index"] == 3, "status"].item() == "Failed"
    assert b.loc[b["index"] == 3, "attempts"].item() == 2


def test_plot_timeline_lanes_and_colours(result):
    ax = result.plot_timeline()
    rows = classify(result.timeline_rows)
    n_lanes = len(lanes(rows))
    assert n_lanes == len({(r[2], r[3]) for r in result.timeline_rows}) >= 1
    assert len(ax.get_yticklabels()) == n_lanes
    bars = sum(len(c.get_paths()) for c in ax.collections)
    assert bars == len(result.timeline_rows)  # one bar per attempt
    outcomes = {r[6] for r in rows}
    assert {"Succeeded", "Retried"} <= outcomes  # attempt 1 of mini-batch 3 was retried
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {o for o in COLOURS if o in outcomes}
    colours = {tuple(round(x, 3) for x in c.get_facecolor()[0]) for c in ax.collections}
    assert len(colours) == len(outcomes)
    plt.close(ax.figure)


def test_html_and_timeline_need_no_ipython(workdir):
    import os
    import subprocess
    import sys

    code = (
        "import sys, matplotlib; matplotlib.use('Agg')\n"
        "from prs_nb import Input, RunFunction, parallel_run_function\n"
        "def run(mb): return list(mb)\n"
        "import os; os.makedirs('d', exist_ok=True); open('d/a.txt', 'w').write('x')\n"
        "r = parallel_run_function(name='n', inputs={'d': Input(type='uri_folder', path='d')}, backend='inline',\n"
        "                          task=RunFunction(run=run)).run(progress=False)\n"
        "assert 'Completed' in r._repr_html_(); r.plot_timeline()\n"
        "bad = [m for m in ('IPython', 'ipywidgets', 'tqdm.notebook', 'ipykernel') if m in sys.modules]\n"
        "print('BAD', bad)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BAD []" in out.stdout
