"""Regression tests from the code review: each pins a fixed deviation from the contract / DESIGN
(a deadlock, a crash, a miscount) so it cannot come back.

Entry functions are module-level so they pickle; every test runs in its own tmp directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.errors import PrsError

# ---------------------------------------------------------------- module-level entry functions


def exit_on_die_rows(mini_batch):
    if (mini_batch["k"] == "die").any():
        os._exit(5)
    return mini_batch


def init_only_process001():
    from azureml_user.parallel_run import EntryScript

    name = EntryScript().agent_name
    if name != "process001":
        open(os.path.join(os.environ["MARK_DIR"], f"initfail-{name}"), "w").close()
        raise RuntimeError(f"no device left for {name}")


_WAITED = {"done": False}


def wait_for_init_failures(mini_batch):
    # The healthy worker keeps its first mini-batch running until the other slot has failed init()
    # 3 x 2 = 6 times (bounded wait), so the test does not depend on timing.
    if not _WAITED["done"]:
        _WAITED["done"] = True
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if len([f for f in os.listdir(os.environ["MARK_DIR"]) if f.startswith("initfail-")]) >= 6:
                time.sleep(1.0)  # let the driver see the 6th failure before this batch returns
                break
            time.sleep(0.05)
    return [os.path.basename(p) for p in mini_batch]


def argv_tail(mini_batch):
    return [repr(sys.argv[1:])]


def ident(mini_batch):
    return mini_batch


def exit_soon_after_first(mini_batch):
    import threading

    mark = os.path.join(os.environ["MARK_DIR"], "exited")
    if not os.path.exists(mark):
        open(mark, "w").close()
        # the process dies ~20 ms after this result has been sent
        threading.Thread(target=lambda: (time.sleep(0.02), os._exit(3)), daemon=True).start()
    return [os.path.basename(p) for p in mini_batch]


class SlowListener:
    """A listener that takes a while on the first success (a slow notebook display, a logger)."""

    def __init__(self):
        self.slept = False

    def on_event(self, event):
        if type(event).__name__ == "BatchSucceeded" and not self.slept:
            self.slept = True
            time.sleep(0.3)


def fail_on_050(mini_batch):
    if any(os.path.basename(p) == "050.txt" for p in mini_batch):
        raise RuntimeError("boom")
    return [os.path.basename(p) for p in mini_batch]


def gil_holding_hang_on_batch_1(mini_batch, mini_batch_context):
    if mini_batch_context.minibatch_index == 1:
        import ctypes

        ctypes.PyDLL(None).sleep(6)  # a native call that keeps the GIL (like many C extensions)
    return [1] * len(mini_batch)


def failing_shutdown():
    raise RuntimeError("shutdown exploded")


# ---------------------------------------------------------------- helpers


def make_files(root, n, name="in"):
    d = root / name
    d.mkdir()
    for i in range(n):
        (d / f"{i:03d}.txt").write_text(str(i))
    return d


# ---------------------------------------------------------------- findings

_DEADLOCK_SCRIPT = textwrap.dedent(
    """
    import numpy as np, pandas as pd
    from prs_nb import parallel_run_function, RunFunction, Input, Output

    def ident(mini_batch):
        return mini_batch

    n = 100_000
    df = pd.DataFrame({"a": np.arange(n), "s": ["x" * 40] * n})  # about 5 MB of CSV text
    job = parallel_run_function(
        name="dl", inputs=dict(t=Input(type="mltable")), outputs=dict(o=Output(type="uri_file")),
        mini_batch_size="1MB", max_concurrency_per_instance=1, retry_settings=dict(timeout=20, max_retries=0),
        task=RunFunction(run=ident, append_row_to="${{outputs.o}}"))
    r = job(t=df).run(progress=False)
    print("STATUS", r.status, r.counts["items_succeeded"])
    """
)


def test_dataframe_input_with_append_row_does_not_deadlock(tmp_path):
    """A DataFrame input of a few MB with append_row on the local backend hangs forever: the driver
    blocks in Connection.send() of a ~1 MB bundle while the worker blocks sending its ~1 MB result
    (socketpair buffers are ~200 KB). Even retry_settings.timeout cannot fire (driver is stuck)."""
    import prs_nb

    script = tmp_path / "job.py"
    script.write_text(_DEADLOCK_SCRIPT)
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(prs_nb.__file__)))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")  # the prs_nb under test
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=40, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("job with a 5 MB DataFrame input and append_row did not finish in 40 s (deadlock)")
    assert "STATUS Completed 100000" in proc.stdout, proc.stdout + proc.stderr


def test_timeout_fires_while_run_holds_the_gil_with_dataframe_input(tmp_path, monkeypatch):
    """Contract 6.3 / 12: retry_settings.timeout bounds each run() call. With ~1 MB DataFrame
    mini-batches the driver's blocking Connection.send() of the next bundle waits for the worker's
    reader thread, which cannot run while run() holds the GIL; the driver cannot check deadlines,
    so a 6 s run() with timeout=2 completes with no timeout recorded."""
    import numpy as np
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    n = 100_000
    df = pd.DataFrame({"a": np.arange(n), "s": ["x" * 40] * n})  # ~5 MB -> 6 mini-batches of ~1 MB
    job = parallel_run_function(
        name="gil", inputs=dict(t=Input(type="mltable")), mini_batch_size="1MB",
        max_concurrency_per_instance=1, retry_settings=dict(timeout=2, max_retries=0),
        task=RunFunction(run=gil_holding_hang_on_batch_1))
    r = job(t=df).run(progress=False)
    assert [tuple(x) for x in r.errors[["index", "kind"]].values.tolist()] == [(1, "timeout")], r.counts


def test_worker_death_on_csv_slice_counts_items_toward_error_threshold(tmp_path, monkeypatch):
    """Contract 12: when a mini-batch's attempts are exhausted 'all of its items count as failed'.
    For CSV slices whose rows the driver does not count (run takes one argument), a worker death or
    timeout leaves items=None, so 0 failed items are counted and error_threshold=0 does not fire."""
    monkeypatch.chdir(tmp_path)
    tab = tmp_path / "tab"
    tab.mkdir()
    for i, k in enumerate(["ok", "die", "ok"]):
        (tab / f"f{i}.csv").write_text("k,v\n" + "".join(f"{k},{j}\n" for j in range(5)))
    job = parallel_run_function(
        name="items", inputs=dict(t=Input(type="mltable", path=str(tab))), error_threshold=0,
        max_concurrency_per_instance=1, retry_settings=dict(max_retries=0),
        task=RunFunction(run=exit_on_die_rows))
    r = job.run(progress=False)
    assert r.counts["failed"] == 1
    assert r.counts["items_failed"] == 5, r.counts
    assert r.status == "Failed" and r.limit == "error_threshold", (r.status, r.reason)


def test_init_failures_in_one_slot_do_not_abort_a_healthy_worker(tmp_path, monkeypatch):
    """Scheduler docstring / contract 6.3: a node whose init() failed 3 x workers_per_node times
    'is not restarted'. Instead the whole job is aborted (limit 'init') and the healthy worker's
    running and remaining mini-batches are dropped as NotRun."""
    monkeypatch.chdir(tmp_path)
    data = make_files(tmp_path, 6)
    marks = tmp_path / "marks"
    marks.mkdir()
    job = parallel_run_function(
        name="initmix", inputs=dict(d=Input(type="uri_folder", path=str(data))), mini_batch_size="1",
        max_concurrency_per_instance=2, environment_variables={"MARK_DIR": str(marks)},
        task=RunFunction(init=init_only_process001, run=wait_for_init_failures))
    r = job.run(progress=False)
    assert r.counts["succeeded"] == 6, (r.status, r.reason, r.counts)
    assert r.status == "Completed", r.reason


def test_quoted_binding_in_program_arguments_is_not_double_quoted(tmp_path, monkeypatch):
    """Contract 4.5: ${{inputs.x}} resolves to the path / literal value. Inside quotes, as users write
    for paths with spaces, the value reaches sys.argv wrapped in literal single quotes."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "my data"
    data.mkdir()
    (data / "a.txt").write_text("x")
    job = parallel_run_function(
        name="args", inputs=dict(d=Input(type="uri_folder"), label=Input(type="string", default="a b")),
        input_data="${{inputs.d}}", outputs=dict(o=Output(type="uri_file")), backend="inline",
        task=RunFunction(run=argv_tail, append_row_to="${{outputs.o}}",
                         program_arguments='--data "${{inputs.d}}" --label "${{inputs.label}}"'))
    r = job(d=Input(type="uri_folder", path=str(data))).run(progress=False)
    assert r.status == "Completed"
    assert r.read_lines() == [repr(["--data", str(data), "--label", "a b"])]


def test_inline_jobs_do_not_leak_code_folder_modules(tmp_path, monkeypatch):
    """Inline backend (WorkerRuntime.stop: 'Undo process-wide changes'): the code folder stays on
    sys.path and modules imported from it stay in sys.modules, so a second inline job with another
    code folder silently runs the first job's helper module."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    data = make_files(tmp_path, 1)
    for name in ("c1", "c2"):
        code = tmp_path / name
        code.mkdir()
        (code / "rvf_helper.py").write_text(f"NAME = {name!r}\n")
        (code / "rvf_score.py").write_text("import rvf_helper\n\ndef run(mini_batch):\n"
                                           "    return [rvf_helper.NAME]\n")
    try:
        got = []
        for name in ("c1", "c2"):
            job = parallel_run_function(
                name=f"leak_{name}", inputs=dict(d=Input(type="uri_folder", path=str(data))),
                outputs=dict(o=Output(type="uri_file")), backend="inline",
                task=RunFunction(code=str(tmp_path / name), entry_script="rvf_score.py",
                                 append_row_to="${{outputs.o}}"))
            got.append(job.run(progress=False).read_lines())
        leftover = [p for p in sys.path if p.startswith(str(tmp_path))]
    finally:
        for mod in ("rvf_helper", "rvf_score"):
            sys.modules.pop(mod, None)
    assert got == [["c1"], ["c2"]]
    assert leftover == []


def test_worker_exiting_after_sending_a_result_does_not_crash_the_driver(tmp_path, monkeypatch):
    """Contract 6.4 / DESIGN fault injection: a worker that dies is replaced and its attempt retried.
    If it dies after sending a result but before the driver notices, the driver's next
    Connection.send() raises BrokenPipeError out of run() (seen ~1 in 6 runs of a 4-worker job with
    os._exit in run(); made deterministic here with a listener that is slow for 0.3 s)."""
    monkeypatch.chdir(tmp_path)
    data = make_files(tmp_path, 6)
    marks = tmp_path / "marks"
    marks.mkdir()
    job = parallel_run_function(
        name="pipe", inputs=dict(d=Input(type="uri_folder", path=str(data))), mini_batch_size="1",
        max_concurrency_per_instance=1, outputs=dict(o=Output(type="uri_file")),
        environment_variables={"MARK_DIR": str(marks)},
        task=RunFunction(run=exit_soon_after_first, append_row_to="${{outputs.o}}"))
    r = job.run(progress=False, listeners=[SlowListener()])
    assert r.status == "Completed", r.reason
    assert sorted(r.read_lines()) == [f"{i:03d}.txt" for i in range(6)]


def test_inline_abort_starts_nothing_after_the_threshold_is_exceeded(tmp_path, monkeypatch):
    """Contract 12: on abort 'nothing more is started'. The inline backend runs a whole bundle (up to
    64 mini-batches once run() is fast) inside one send(), so with mini_batch_error_threshold=0
    run() keeps being called (and appended) for mini-batches 51..65 after mini-batch 50 failed."""
    monkeypatch.chdir(tmp_path)
    data = make_files(tmp_path, 100)
    job = parallel_run_function(
        name="overshoot", inputs=dict(d=Input(type="uri_folder", path=str(data))), mini_batch_size="1",
        outputs=dict(o=Output(type="uri_file")), mini_batch_error_threshold=0,
        retry_settings=dict(max_retries=0), backend="inline",
        task=RunFunction(run=fail_on_050, append_row_to="${{outputs.o}}"))
    r = job.run(progress=False)
    assert r.status == "Failed" and r.limit == "mini_batch_error_threshold"
    assert r.counts["succeeded"] == 50, r.counts
    assert max(r.read_lines()) == "049.txt"


@pytest.mark.parametrize("out_type, make", [("uri_file", "dir"), ("uri_folder", "file")])
def test_output_bound_to_wrong_kind_of_path_is_a_prs_error(tmp_path, monkeypatch, out_type, make):
    """STYLE (errors): an output bound to an existing folder (uri_file) or file (uri_folder) fails
    with a raw IsADirectoryError / FileExistsError from deep inside run_job, not a PrsError."""
    monkeypatch.chdir(tmp_path)
    data = make_files(tmp_path, 1)
    target = tmp_path / "target"
    if make == "dir":
        target.mkdir()
    else:
        target.write_text("old")
    job = parallel_run_function(
        name="outkind", inputs=dict(d=Input(type="uri_folder", path=str(data))),
        outputs=dict(o=Output(type=out_type)), backend="inline",
        task=RunFunction(run=ident, append_row_to="${{outputs.o}}"))
    with pytest.raises(PrsError):
        job(o=Output(type=out_type, path=str(target))).run(progress=False)


def test_shutdown_error_is_reported_in_job_error(tmp_path, monkeypatch):
    """Contract 8.3: job_error.txt is the summary of script errors. A shutdown() exception only
    reaches user/error/<node>/<proc>.txt; job_error.txt says 'No script errors' and the RunResult has
    no trace of it (the ("bye", error) text is dropped by the scheduler)."""
    monkeypatch.chdir(tmp_path)
    data = make_files(tmp_path, 2)
    job = parallel_run_function(
        name="sd", inputs=dict(d=Input(type="uri_folder", path=str(data))), backend="inline",
        task=RunFunction(run=ident, shutdown=failing_shutdown))
    r = job.run(progress=False)
    with open(os.path.join(r.logs_dir, "job_error.txt"), encoding="utf-8") as fh:
        text = fh.read()
    assert "shutdown exploded" in text, text
