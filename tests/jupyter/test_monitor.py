"""RunMonitor on real run directories: finished, and followed while the job runs in another thread."""

from __future__ import annotations

import threading

import pytest

from prs_nb import Input, RunFunction, parallel_run_function
from prs_nb.errors import ConfigError
from prs_nb.jupyter.monitor import RunMonitor, latest_runs, run_picker
from prs_nb.timeline import classify


def run_fn(mini_batch):
    import os
    import time

    time.sleep(0.02)
    names = [os.path.basename(p) for p in mini_batch]
    if "f05.txt" in names:
        raise ZeroDivisionError("f05.txt divides by zero")
    return names


def make_job(workdir, n=20):
    (workdir / "d").mkdir(exist_ok=True)
    for i in range(n):
        (workdir / "d" / f"f{i:02d}.txt").write_text("x")
    return parallel_run_function(name="mon", inputs={"d": Input(type="uri_folder", path="d")}, mini_batch_size="1",
                                 max_concurrency_per_instance=2, retry_settings={"max_retries": 1, "timeout": 30},
                                 task=RunFunction(run=run_fn))


def test_finished_run_matches_its_result(workdir):
    result = make_job(workdir).run(progress=False)
    mon = RunMonitor(result.run_dir)
    s = mon.state
    assert mon.finished and s.status == result.status == "Completed"
    assert (s.total, s.succeeded, s.failed) == (20, 19, 1)
    assert sorted(r[:4] for r in s.timeline) == sorted(r[:4] for r in result.timeline_rows)
    assert [(e.index, e.attempt, e.will_retry) for e in s.errors] == [(5, 1, True), (5, 2, False)]
    assert all("ZeroDivisionError: f05.txt divides by zero" in e.traceback for e in s.errors)
    assert "f05.txt divides by zero" in mon.errors_html.value and "<details>" in mon.errors_html.value
    assert mon.bar.value == mon.bar.max == 20 and mon.bar.bar_style == "warning"
    assert bytes(mon.timeline_image.value).startswith(b"\x89PNG")
    assert {r[6] for r in classify(s.timeline)} == {"Succeeded", "Retried", "Failed"}


def test_follows_a_running_job(workdir):
    job = make_job(workdir, n=60)
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", job.run(progress=False)))
    t.start()
    try:
        import time

        deadline = time.monotonic() + 30
        while not latest_runs(str(workdir / "prs_runs")) and time.monotonic() < deadline:
            time.sleep(0.01)
        mon = RunMonitor(latest_runs(str(workdir / "prs_runs"))[0], interval=0.05)
        seen_running = mon.state.status == "Running"
        mon.start()
        mon._thread.join(60)
    finally:
        t.join(60)
    assert seen_running
    assert mon.finished and mon.state.status == "Completed" and mon.state.done == 60
    assert len(mon.state.timeline) == len(box["r"].timeline_rows)


def test_not_a_run_dir_is_a_clear_error(workdir):
    with pytest.raises(ConfigError, match="is not a prs_nb run directory"):
        RunMonitor(str(workdir))


def test_picker_opens_the_newest_run(workdir):
    result = make_job(workdir, n=4).run(progress=False)
    picker = run_picker(str(workdir / "prs_runs"))
    mon = picker.monitors[0]
    mon._thread.join(30)
    assert mon.state.run_dir == result.run_dir and mon.finished
