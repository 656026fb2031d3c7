"""Journal and resume (issue 3, item 4): exactly-once output whatever interrupts the driver, and
clear refusals when a run cannot be continued safely. Real processes, real signals."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from filetree import make_files

import prs_nb
from prs_nb import Input, Output, ResumeError, RunFunction, parallel_run_function
from prs_nb import events as ev
from prs_nb.engine.journal import HEADER, Journal, read_journal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PRS_NB_KEY_DIR", str(tmp_path / "key"))


def names(mini_batch):
    time.sleep(0.05)
    return [os.path.basename(p) for p in mini_batch]


def file_job(run=names, **kw):
    return parallel_run_function(
        name="rs", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
        task=RunFunction(run=run, append_row_to="${{outputs.out}}"), **kw)


class CancelAfter:
    def __init__(self, n):
        self.n = n
        self.seen = 0
        self.cancel = None
        self.pids = set()

    def on_event(self, e):
        if isinstance(e, ev.JobStarted):
            self.cancel = e.cancel
        elif isinstance(e, ev.WorkerStarted):
            self.pids.add(e.process_name)
        elif isinstance(e, ev.BatchSucceeded):
            self.seen += 1
            if self.seen == self.n:
                threading.Thread(target=self.cancel, args=("test",)).start()


def expected(n):
    return [f"{i:03d}.txt" for i in range(n)]


# ---------------------------------------------------------------- the journal file


def test_journal_ignores_a_torn_last_line_and_refuses_damage_before_it(tmp_path):
    path = str(tmp_path / "journal")
    j = Journal(path)
    for i in range(3):
        j.record("S", i, 1, 2, 2, 0, 10 * (i + 1), "abcd")
    j.flush()
    j.close()
    full = open(path).read()
    assert full.startswith(HEADER) and len(read_journal(path)) == 3
    for cut in range(1, len(full.splitlines()[-1]) + 1):  # every way the last line can be torn
        with open(path, "w") as fh:
            fh.write(full[:-cut])
        assert sorted(read_journal(path)) == [0, 1], cut
    # a resumed session appends after cutting the torn line off
    j = Journal(path)
    j.record("S", 2, 2, 2, 2, 0, 30, "abcd")
    j.close()
    assert sorted(read_journal(path)) == [0, 1, 2]
    lines = open(path).read().splitlines(keepends=True)
    lines[1] = lines[1].replace("\t10\t", "\t11\t")  # edited in the middle: CRC no longer matches
    with open(path, "w") as fh:
        fh.writelines(lines)
    with pytest.raises(ResumeError, match="damaged at line 2"):
        read_journal(path)
    with open(path, "w") as fh:
        fh.write("index\tattempt\n")
    with pytest.raises(ResumeError, match="not a prs_nb journal"):
        read_journal(path)


# ---------------------------------------------------------------- resume after a cancel


@pytest.mark.parametrize("ordered", [False, True])
def test_resume_after_cancel_runs_only_the_rest_exactly_once(workdir, ordered):
    path = make_files(workdir, 40)
    job = file_job(mini_batch_size="1", max_concurrency_per_instance=2, ordered_output=ordered)
    first_l = CancelAfter(8)
    first = job(data=path).run(progress=False, listeners=[first_l])
    assert first.status == "Canceled"
    done_first = first.counts["succeeded"]
    assert 8 <= done_first < 40
    journaled = len(read_first_session(first))
    assert journaled == done_first  # the journal is flushed when a canceled run ends
    second_l = CancelAfter(10**6)
    res = prs_nb.resume(first.run_dir, progress=False, listeners=[second_l])
    assert res.status == "Completed", res.summary()
    assert res.run_dir == first.run_dir and res.run_id == first.run_id
    assert res.counts["total"] == 40 and res.counts["succeeded"] == 40 and res.counts["items_succeeded"] == 40
    lines = res.read_lines()
    assert sorted(lines) == expected(40) and len(lines) == 40  # every row, once
    if ordered:
        assert lines[:done_first] == sorted(lines[:done_first])
    # only the rest ran, on new processes with new names (their own log files)
    ran_again = 40 - sum(1 for label in res.batches["first_items"] if "finished before" in label)
    assert ran_again == 40 - journaled
    assert not (first_l.pids & second_l.pids)


def read_first_session(result):
    return [e for e in read_journal(os.path.join(result.run_dir, "journal")).values() if e.status == "S"]


def test_resume_of_a_completed_run_starts_no_worker(workdir):
    path = make_files(workdir, 5)
    first = file_job(mini_batch_size="2")(data=path).run(progress=False)
    res = prs_nb.resume(first.run_dir, progress=False)
    assert res.status == "Completed" and res.counts["workers"] == 0 and sorted(res.read_lines()) == expected(5)


def test_resume_with_another_backend(workdir):
    path = make_files(workdir, 12)
    first = file_job(mini_batch_size="1", max_concurrency_per_instance=2)(data=path).run(
        progress=False, listeners=[CancelAfter(3)])
    assert first.status == "Canceled"
    res = prs_nb.resume(first.run_dir, progress=False, backend="inline")
    assert res.status == "Completed" and res.backend == "inline" and sorted(res.read_lines()) == expected(12)


def fail_on_2(mini_batch):
    if any(p.endswith("002.txt") for p in mini_batch):
        raise ValueError("bad file")
    return names(mini_batch)


def test_failed_mini_batches_stay_failed_and_count_after_resume(workdir):
    path = make_files(workdir, 20)
    first = file_job(fail_on_2, mini_batch_size="1", max_concurrency_per_instance=1,
                     retry_settings={"max_retries": 0})(data=path).run(progress=False, listeners=[CancelAfter(6)])
    assert first.status == "Canceled" and first.counts["failed"] == 1
    res = prs_nb.resume(first.run_dir, progress=False)
    assert res.status == "Completed" and res.counts["failed"] == 1 and res.counts["succeeded"] == 19
    assert res.counts["items_failed"] == 1
    assert sorted(res.read_lines()) == [x for x in expected(20) if x != "002.txt"]
    # the earlier session's failure is still in the result and its reports are kept
    errs = res.errors
    assert list(errs["index"]) == [2] and errs["error_type"].iloc[0] == "ValueError"
    assert "bad file" in errs["message"].iloc[0] and "in fail_on_2" in errs["traceback"].iloc[0]
    row = res.batches.set_index("index").loc[2]
    assert row["status"] == "Failed" and row["error_type"] == "ValueError"
    first_error = res.first_error()  # what raise_for_status() would chain
    assert isinstance(first_error, prs_nb.UserCodeError) and first_error.mini_batch_index == 2
    assert "in fail_on_2" in first_error.remote_traceback
    old = os.path.join(res.logs_dir, "previous_sessions", "1", "job_error.txt")
    assert "bad file" in open(old).read()
    assert "Canceled" in open(os.path.join(res.logs_dir, "previous_sessions", "1", "job_result.txt")).read()


# ---------------------------------------------------------------- resume after the driver was SIGKILLed

DRIVER = textwrap.dedent("""
    import os, sys, time
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    def run(mini_batch):
        time.sleep(0.03)
        return [os.path.basename(p) + " " + "x" * 200 for p in mini_batch]

    job = parallel_run_function(name="killed", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=2, ordered_output=sys.argv[2] == "1",
                                task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
    job(d=sys.argv[1]).run(progress=False)
""")


def run_driver_until(workdir, files, min_done, ordered=False):
    (workdir / "driver.py").write_text(DRIVER)
    env = os.environ.copy()
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "driver.py", files, "1" if ordered else "0"], env=env,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    journal = None
    while time.monotonic() < deadline:
        found = list((workdir / "prs_runs" / "killed").glob("*/journal")) if (workdir / "prs_runs").exists() else []
        if found and os.path.exists(found[0].parent / "job.pkl") and len(read_journal(str(found[0]))) >= min_done:
            journal = found[0]
            break
        time.sleep(0.02)
    assert journal is not None, "the driver journaled nothing"
    workers = [p for p in psutil.Process(proc.pid).children() if "prs_nb.engine.worker" in " ".join(p.cmdline())]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return str(journal.parent), workers


@pytest.mark.parametrize("ordered", [False, True])
def test_resume_after_driver_sigkill_truncates_torn_output_and_journal(workdir, ordered):
    files = make_files(workdir, 120)
    run_dir, workers = run_driver_until(workdir, files, 20, ordered)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                              for p in workers):
        time.sleep(0.02)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)  # died with the driver
    out = os.path.join(run_dir, "outputs", "o", "parallel_run_step.txt")
    # what a driver killed mid-write leaves: half a row in the output, half a line in the journal
    with open(out, "a") as fh:
        fh.write("999.txt half a ro")
    with open(os.path.join(run_dir, "journal"), "a") as fh:
        fh.write("S\t119\t1\t1\t1\t0\t99")
    before = read_journal(os.path.join(run_dir, "journal"))
    assert 20 <= len(before) < 120
    res = prs_nb.resume(run_dir, progress=False)
    assert res.status == "Completed", res.summary()
    rows = [ln.split()[0] for ln in res.read_lines()]
    assert sorted(rows) == expected(120) and len(rows) == 120  # every row once, the torn one gone
    if ordered:
        assert rows == expected(120)  # the journal covers an ordered prefix: the resumed run continues it
    assert res.counts["succeeded"] == 120
    after = read_journal(os.path.join(run_dir, "journal"))
    assert sorted(after) == list(range(120))
    assert not os.path.exists(os.path.join(run_dir, "lock"))


def test_resume_after_driver_sigkill_before_any_mini_batch_finished(workdir):
    files = make_files(workdir, 30)
    run_dir, _ = run_driver_until(workdir, files, 0)
    res = prs_nb.resume(run_dir, progress=False)
    assert res.status == "Completed" and sorted(ln.split()[0] for ln in res.read_lines()) == expected(30)


# ---------------------------------------------------------------- refusals


def canceled_run(workdir, n=30, after=5):
    path = make_files(workdir, n)
    first = file_job(mini_batch_size="1", max_concurrency_per_instance=2)(data=path).run(
        progress=False, listeners=[CancelAfter(after)])
    assert first.status == "Canceled"
    return first, path


def test_refuses_when_the_input_changed(workdir):
    first, path = canceled_run(workdir)
    os.utime(os.path.join(path, "001.txt"), (1, 1))  # a processed file was modified
    with pytest.raises(ResumeError, match="its input changed since mini-batch 1"):
        prs_nb.resume(first.run_dir, progress=False)
    os.utime(os.path.join(path, "001.txt"), ns=(0, 0))
    with open(os.path.join(path, "000a.txt"), "w") as fh:  # a new file shifts every later mini-batch
        fh.write("new")
    with pytest.raises(ResumeError, match="input changed"):
        prs_nb.resume(first.run_dir, progress=False)
    os.remove(os.path.join(path, "000a.txt"))
    for f in os.listdir(path):
        os.remove(os.path.join(path, f))
    os.rmdir(path)
    with pytest.raises(ResumeError, match="cannot resume"):
        prs_nb.resume(first.run_dir, progress=False)


def test_refuses_when_the_output_was_deleted_or_cut(workdir):
    first, _ = canceled_run(workdir)
    out = first.output_path
    text = open(out).read()
    with open(out, "w") as fh:
        fh.write(text[:5])
    with pytest.raises(ResumeError, match="truncated or replaced"):
        prs_nb.resume(first.run_dir, progress=False)
    os.remove(out)
    with pytest.raises(ResumeError, match="output .* was deleted"):
        prs_nb.resume(first.run_dir, progress=False)


def test_refuses_while_another_driver_runs_it_and_takes_over_a_stale_lock(workdir):
    first, _ = canceled_run(workdir)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock = os.path.join(first.run_dir, "lock")
        with open(lock, "w") as fh:
            fh.write(f"{other.pid} {psutil.Process(other.pid).create_time():.2f}\n")
        with pytest.raises(ResumeError, match=f"another driver \\(process pid {other.pid}\\)"):
            prs_nb.resume(first.run_dir, progress=False)
    finally:
        other.kill()
        other.wait()
    # that driver is gone now: its lock is stale and taken over
    res = prs_nb.resume(first.run_dir, progress=False)
    assert res.status == "Completed" and sorted(res.read_lines()) == expected(30)


class _Boom:
    def __reduce__(self):
        return (open, (os.environ["BOOM_FILE"], "w"))


def test_never_unpickles_a_job_whose_signature_does_not_verify(workdir, monkeypatch, tmp_path):
    first, _ = canceled_run(workdir)
    job_file = os.path.join(first.run_dir, "job.pkl")
    head, mac, payload = open(job_file, "rb").read().split(b"\n", 2)
    boom = tmp_path / "unpickled"
    monkeypatch.setenv("BOOM_FILE", str(boom))
    evil = pickle.dumps(_Boom())
    with open(job_file, "wb") as fh:
        fh.write(head + b"\n" + mac + b"\n" + evil)  # payload replaced, signature kept
    with pytest.raises(ResumeError, match="NOT loaded"):
        prs_nb.resume(first.run_dir, progress=False)
    assert not boom.exists()
    with open(job_file, "wb") as fh:
        fh.write(head + b"\n" + mac + b"\n" + payload)
    monkeypatch.setenv("PRS_NB_KEY_DIR", str(tmp_path / "another-user"))  # someone else's key
    with pytest.raises(ResumeError, match="not signed with your prs_nb key"):
        prs_nb.resume(first.run_dir, progress=False)
    monkeypatch.setenv("PRS_NB_KEY_DIR", str(tmp_path / "key"))
    assert prs_nb.resume(first.run_dir, progress=False).status == "Completed"
    key = tmp_path / "key" / "run_signing.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"


class LockedPath(os.PathLike):
    """A path-like binding that works for the run but cannot be pickled (it holds a lock)."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def __fspath__(self):
        return self.path


def test_an_unpicklable_job_runs_but_resume_names_what_cannot_be_pickled(workdir):
    path = make_files(workdir, 3)
    first = file_job()(data=LockedPath(path)).run(progress=False)
    assert first.status == "Completed"
    with pytest.raises(ResumeError, match=r"job.bindings\['data'\] \(LockedPath\): TypeError: .*lock"):
        prs_nb.resume(first.run_dir, progress=False)


def test_not_a_run_directory(workdir):
    with pytest.raises(ResumeError, match="does not exist"):
        prs_nb.resume(workdir / "nope")
    (workdir / "empty").mkdir()
    with pytest.raises(ResumeError, match="holds no saved job"):
        prs_nb.resume(workdir / "empty")


def slow_rows(mini_batch):
    time.sleep(0.05)
    return mini_batch.assign(y=mini_batch["x"] * 2)


@pytest.mark.parametrize("kind", ["dataframe", "csv"])
def test_resume_tabular_inputs_exactly_once(workdir, kind):
    import pandas as pd

    df = pd.DataFrame({"x": range(3000)})
    if kind == "csv":
        df.to_csv(workdir / "t.csv", index=False)
        value = str(workdir / "t.csv")
    else:
        value = df
    job = parallel_run_function(name="tab", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                mini_batch_size="1KB", max_concurrency_per_instance=2,
                                task=RunFunction(run=slow_rows, append_row_to="${{outputs.o}}"))
    first = job(t=value).run(progress=False, listeners=[CancelAfter(4)])
    assert first.status == "Canceled" and first.counts["succeeded"] >= 4
    res = prs_nb.resume(first.run_dir, progress=False)
    assert res.status == "Completed", res.summary()
    out = res.to_pandas()
    assert sorted(out[0]) == list(range(3000)) and sorted(out[1]) == [2 * x for x in range(3000)]
    if kind == "csv":
        with open(workdir / "t.csv", "a") as fh:
            fh.write("3000\n")  # the table grew: a resume now would mix two inputs
        with pytest.raises(ResumeError, match="input changed"):
            prs_nb.resume(first.run_dir, progress=False)


SCORE = textwrap.dedent('''
    import os, time

    def run(mini_batch):
        time.sleep(0.05)
        return [os.path.basename(p) for p in mini_batch]
''')


def test_refuses_when_the_entry_scripts_code_changed_unless_allowed(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "score.py").write_text(SCORE)
    path = make_files(workdir, 30)
    job = parallel_run_function(name="script", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=2,
                                task=RunFunction(code="src", entry_script="score.py", append_row_to="${{outputs.out}}"))
    first = job(data=path).run(progress=False, listeners=[CancelAfter(4)])
    assert first.status == "Canceled"
    (src / "helper.py").write_text("X = 1\n")  # a new module in the code folder
    with pytest.raises(ResumeError, match=r"the job's code changed since the run started \(helper.py"):
        prs_nb.resume(first.run_dir, progress=False)
    os.remove(src / "helper.py")
    res = prs_nb.resume(first.run_dir, progress=False)  # the same code again: fine
    assert res.status == "Completed" and sorted(res.read_lines()) == expected(30)


def test_changed_code_can_be_allowed_explicitly(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "score.py").write_text(SCORE)
    path = make_files(workdir, 30)
    job = parallel_run_function(name="script", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=2,
                                task=RunFunction(code="src", entry_script="score.py", append_row_to="${{outputs.out}}"))
    first = job(data=path).run(progress=False, listeners=[CancelAfter(4)])
    (src / "score.py").write_text(SCORE.replace("os.path.basename(p)", "os.path.basename(p) + ' v2'"))
    res = prs_nb.resume(first.run_dir, progress=False, allow_changed_code=True)
    lines = res.read_lines()
    assert res.status == "Completed" and sorted(ln.split()[0] for ln in lines) == expected(30)
    assert 0 < sum(ln.endswith(" v2") for ln in lines) < 30  # the rest ran the new code
