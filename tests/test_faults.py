"""Fault tolerance with real worker processes and real signals (issue 3): cancel and Ctrl-C,
timeouts, crashes, init policy, readable errors. No mocks: every fault here really happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from filetree import make_files

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb import events as ev

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- entry functions (module level: they pickle)


def names(mini_batch):
    return [os.path.basename(p) for p in mini_batch]


def slow_names(mini_batch):
    time.sleep(0.3)
    return names(mini_batch)


# ---------------------------------------------------------------- helpers


def file_job(run, *, name="t", **kw):
    return parallel_run_function(
        name=name, inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
        task=RunFunction(run=run, init=kw.pop("init", None), shutdown=kw.pop("shutdown", None),
                         append_row_to="${{outputs.out}}"), **kw)


def env_with_path():
    env = os.environ.copy()
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def worker_children(pid):
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            if "prs_nb.engine.worker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def two_workers(pid):
    return wait_for(lambda: len(worker_children(pid)) == 2 and worker_children(pid))


def wait_for(pred, timeout=20.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def all_gone(procs, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs):
            return True
        time.sleep(0.02)
    return False


class CancelGrabber:
    """A listener like a notebook Stop button: keeps JobStarted.cancel and presses it on demand."""

    def __init__(self, after_batches, reason):
        self.after = after_batches
        self.reason = reason
        self.cancel = None
        self.done = 0
        self.pressed_at = None
        self.thread = None

    def on_event(self, event):
        if isinstance(event, ev.JobStarted):
            self.cancel = event.cancel
        elif isinstance(event, ev.BatchSucceeded):
            self.done += 1
            if self.done == self.after and self.thread is None:
                # press from another thread, as a widget callback would
                self.thread = threading.Thread(target=self._press)
                self.thread.start()

    def _press(self):
        self.pressed_at = time.monotonic()
        self.cancel(self.reason)


# ---------------------------------------------------------------- cancel and Ctrl-C


@pytest.mark.parametrize("backend", ["local", "inline"])
def test_cancel_from_another_thread_stops_within_2s_with_partial_counts(workdir, backend):
    path = make_files(workdir, 60)
    grab = CancelGrabber(after_batches=4, reason="Stop button pressed")
    job = file_job(slow_names, mini_batch_size="1", max_concurrency_per_instance=2, backend=backend)
    res = job(data=path).run(progress=False, listeners=[grab])
    ended = time.monotonic()
    grab.thread.join()
    assert res.status == "Canceled", res.summary()
    assert "Stop button pressed" in res.reason
    assert ended - grab.pressed_at < 2.0
    ok = res.counts["succeeded"]
    # (listing is lazy: a canceled job counts the mini-batches listed so far)
    assert 4 <= ok < res.counts["total"] <= 60 and res.counts["not_run"] == res.counts["total"] - ok
    assert len(res.read_lines()) == ok  # what was appended stays, exactly once
    assert set(res.batches["status"]) <= {"Succeeded", "Canceled"}
    # the conftest fixture also fails the test if any worker is left


def test_cancel_twice_and_after_the_end_is_harmless(workdir):
    path = make_files(workdir, 4)
    grab = CancelGrabber(after_batches=10**6, reason="unused")
    res = file_job(names, mini_batch_size="1")(data=path).run(progress=False, listeners=[grab])
    assert res.status == "Completed"
    # the run's file descriptors are closed and their numbers reused by new files: a late cancel()
    # (a Stop button pressed after the end) must not write into any of them
    files = [open(workdir / f"f{i}", "wb") for i in range(20)]
    grab.cancel("late")
    grab.cancel("later")  # the run is over: nothing happens, nothing raises
    for fh in files:
        fh.close()
    assert all((workdir / f"f{i}").stat().st_size == 0 for i in range(20))


DRIVER = textwrap.dedent("""
    import os, sys, time
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    MARK = sys.argv[2]

    def run(mini_batch):
        time.sleep(0.5 if "slow" not in MARK else 60)
        return [os.path.basename(p) for p in mini_batch]

    def shutdown():
        open(os.path.join(MARK, "shutdown-" + str(os.getpid())), "w").close()
        time.sleep(60)

    job = parallel_run_function(name="cancel", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=int(sys.argv[3]),
                                task=RunFunction(run=run, shutdown=shutdown, append_row_to="${{outputs.o}}"))
    print("STARTED", os.getpid(), flush=True)
    res = job(d=sys.argv[1]).run(progress=False)
    print("STATUS", res.status, res.counts["succeeded"], res.counts["not_run"], flush=True)
    print("REASON", res.reason, flush=True)
    print("OUTPUT", len(res.read_lines()), flush=True)
""")


def start_driver(workdir, files, mark, workers=2):
    (workdir / "driver.py").write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, "driver.py", files, str(mark), str(workers)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_with_path())
    assert proc.stdout.readline().startswith("STARTED")
    return proc


def until_status(proc):
    """Read the driver's stdout up to its STATUS line (run() has returned: every worker is reaped);
    return (monotonic time of that line, all output, stderr) - the interpreter's own exit
    afterwards (unloading pandas & co.) is not timed."""
    lines = []
    when = None
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("STATUS") and when is None:
            when = time.monotonic()
    err = proc.stderr.read()  # (readline/read share the pipe's buffer; communicate() would not)
    proc.wait(timeout=20)
    return when if when is not None else time.monotonic(), "".join(lines), err


def test_real_sigint_cancels_within_2s_and_leaves_no_process(workdir):
    files = make_files(workdir, 40)
    mark = workdir / "mark"
    mark.mkdir()
    proc = start_driver(workdir, files, mark)
    workers = two_workers(proc.pid)
    time.sleep(1.2)  # some mini-batches finish
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    when, out, err = until_status(proc)
    assert when - t0 < 2.0, (when - t0, err)
    assert "STATUS Canceled" in out, out + err
    assert "KeyboardInterrupt" in out and "Traceback" not in err
    ok = int(out.split("STATUS Canceled")[1].split()[0])
    assert 0 < ok < 40 and f"OUTPUT {ok}" in out
    assert all_gone(workers, timeout=0.1)


def test_idle_worker_gets_a_1s_grace_and_a_second_ctrl_c_kills_at_once(workdir):
    # one slow mini-batch keeps a worker busy; the other worker is idle and gets stop -> shutdown()
    # (which hangs). First Ctrl-C: the busy worker is killed, shutdown() starts. Second: all killed now.
    files = make_files(workdir, 1)
    mark = workdir / "slow-mark"
    mark.mkdir()
    results = {}
    for presses in (1, 2):
        for f in os.listdir(mark):
            os.remove(mark / f)
        proc = start_driver(workdir, files, mark, workers=2)
        workers = two_workers(proc.pid)
        time.sleep(1.0)  # both workers started; one is in the 60 s run()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: os.listdir(mark), timeout=5)  # the idle worker's shutdown() is running
        if presses == 2:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
        when, out, err = until_status(proc)
        results[presses] = when - t0
        assert "STATUS Canceled 0 1" in out, out + err
        assert all_gone(workers, timeout=0.1)
    assert 0.8 <= results[1] < 2.0, results  # grace used, bounded
    assert results[2] < 0.6, results  # the second Ctrl-C does not wait for shutdown()


def test_workers_die_with_a_sigkilled_driver(workdir):
    files = make_files(workdir, 40)
    mark = workdir / "mark"
    mark.mkdir()
    proc = start_driver(workdir, files, mark)
    workers = two_workers(proc.pid)
    proc.kill()
    proc.communicate(timeout=10)
    assert all_gone(workers, timeout=2.0), [p.pid for p in workers]


@pytest.mark.parametrize("backend", ["inline"])
def test_keyboard_interrupt_inline_returns_canceled(workdir, backend):
    def interrupting(mini_batch):
        if any(p.endswith("003.txt") for p in mini_batch):
            raise KeyboardInterrupt
        return names(mini_batch)

    path = make_files(workdir, 8)
    res = file_job(interrupting, mini_batch_size="1")(data=path).run(progress=False, backend=backend)
    assert res.status == "Canceled" and res.counts["succeeded"] == 3
    assert res.read_lines() == ["000.txt", "001.txt", "002.txt"]


# ---------------------------------------------------------------- timeouts (contract 6.3)


def _hang(kind):
    if kind == "sleep":
        time.sleep(60)
    elif kind == "regex":
        import re

        re.match(r"(a+)+$", "a" * 40 + "b")  # catastrophic backtracking: C code holding the GIL
    elif kind == "libc":
        import ctypes

        ctypes.CDLL(None).sleep(60)  # native sleep, outside the interpreter


def mark_init():
    with open(os.path.join(os.environ["MARK_DIR"], f"init-{os.getpid()}"), "w") as fh:
        fh.write("1")


def hang_on_3(mini_batch):
    if any(p.endswith("003.txt") for p in mini_batch):
        _hang(os.environ["HANG"])
    return names(mini_batch)


def hang_first_attempt_on_3(mini_batch):
    for p in mini_batch:
        if p.endswith("003.txt") and not os.path.exists(p + ".hung"):
            open(p + ".hung", "w").close()
            time.sleep(60)
    return names(mini_batch)


@pytest.mark.parametrize("hang", ["sleep", "regex", "libc"])
def test_hanging_run_is_killed_recorded_and_retried_on_a_fresh_worker(workdir, hang):
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 6)
    job = file_job(hang_on_3, init=mark_init, mini_batch_size="1", max_concurrency_per_instance=2,
                   retry_settings={"max_retries": 1, "timeout": 1},
                   environment_variables={"MARK_DIR": str(marks), "HANG": hang})
    t0 = time.monotonic()
    res = job(data=path).run(progress=False)
    took = time.monotonic() - t0
    assert took < 2 * 1 + 5, took  # two 1 s attempts plus start-up: the job finishes on time
    assert res.status == "Completed" and res.counts["succeeded"] == 5 and res.counts["failed"] == 1
    errs = res.errors
    assert list(errs["kind"]) == ["timeout", "timeout"] and list(errs["attempt"]) == [1, 2]
    assert list(errs["index"]) == [3, 3]
    assert errs["pid"].iloc[0] != errs["pid"].iloc[1]  # the retry ran on another process
    assert "retry_settings.timeout = 1s" in errs["message"].iloc[0] and "killed" in errs["message"].iloc[0]
    # every worker, replacements included, ran init() once
    assert len(os.listdir(marks)) == res.counts["workers"] >= 3
    assert sorted(res.read_lines()) == [f"{i:03d}.txt" for i in range(6) if i != 3]
    batch = res.batches.set_index("index").loc[3]
    assert batch["status"] == "Failed" and batch["attempts"] == 2 and batch["error_type"] == "TimeoutError"


def test_timeout_then_success_on_retry_keeps_every_row_once(workdir):
    path = make_files(workdir, 6)
    res = file_job(hang_first_attempt_on_3, mini_batch_size="1", max_concurrency_per_instance=2,
                   retry_settings={"max_retries": 2, "timeout": 1})(data=path).run(progress=False)
    assert res.status == "Completed" and res.counts["failed"] == 0
    assert list(res.errors["kind"]) == ["timeout"]
    assert sorted(res.read_lines()) == [f"{i:03d}.txt" for i in range(6)]


def hanging_init():
    time.sleep(60)


def test_hanging_init_is_bounded_and_stops_the_job(workdir, monkeypatch):
    from prs_nb.engine import scheduler

    # contract 6.3 allows init() 3 x timeout + 30 s; a shorter grace keeps this test fast
    monkeypatch.setattr(scheduler, "INIT_GRACE_S", 0.5)
    path = make_files(workdir, 3)
    t0 = time.monotonic()
    res = file_job(names, init=hanging_init, max_concurrency_per_instance=2,
                   retry_settings={"timeout": 0.5})(data=path).run(progress=False)
    took = time.monotonic() - t0
    assert took < 8, took
    assert res.status == "Failed" and res.limit == "init"
    # every worker stuck in init(): the job fails for lack of progress, no more workers are started
    assert "no progress: all 2 worker(s) were still in init() after 2s" in res.reason
    assert res.counts["workers"] == 2 and res.counts["not_run"] >= 1


def init_hangs_in_one_worker():
    first = os.path.join(os.environ["MARK_DIR"], "first")
    try:
        os.close(os.open(first, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    time.sleep(60)


def test_one_stuck_init_is_killed_and_replaced_while_others_work(workdir, monkeypatch):
    from prs_nb.engine import scheduler

    monkeypatch.setattr(scheduler, "INIT_GRACE_S", 0.5)
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 12)
    res = file_job(slow_names, init=init_hangs_in_one_worker, mini_batch_size="1", max_concurrency_per_instance=2,
                   retry_settings={"timeout": 0.5}, environment_variables={"MARK_DIR": str(marks)})(data=path).run(
        progress=False)
    assert res.status == "Completed" and sorted(res.read_lines()) == [f"{i:03d}.txt" for i in range(12)]
    assert res.counts["workers"] == 3 and len(res.init_failure_rows) == 1
    assert "init() did not finish within 2s" in res.init_failure_rows[0][4]


# ---------------------------------------------------------------- crashes (contract 6.4)


def _crash(kind):
    if kind == "exit":
        os._exit(5)
    elif kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "segfault":
        import ctypes

        ctypes.string_at(0)
    elif kind == "memory":
        import resource

        with open("/proc/self/status") as fh:
            vm = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 2**20, resource.RLIM_INFINITY))
        hog = [bytearray(64 * 2**20) for _ in range(64)]  # 4 GB: far over the limit
        return hog
    return None


def crash_on_1(mini_batch):
    if any(p.endswith("001.txt") for p in mini_batch):
        _crash(os.environ["CRASH"])
    return names(mini_batch)


def crash_in_init():
    _crash(os.environ["CRASH"])


CRASHES = [
    ("exit", "worker_died", "exited with code 5"),
    ("sigkill", "worker_died", "killed by SIGKILL - out of memory"),
    ("segfault", "worker_died", "SIGSEGV"),
    ("memory", "exception", "hint: the worker ran out of memory"),
]


@pytest.mark.parametrize("crash,kind,text", CRASHES)
def test_crash_in_run_fails_the_attempt_with_its_cause(workdir, crash, kind, text):
    path = make_files(workdir, 4)
    res = file_job(crash_on_1, mini_batch_size="1", max_concurrency_per_instance=1,
                   retry_settings={"max_retries": 1}, environment_variables={"CRASH": crash})(data=path).run(
        progress=False)
    assert res.status == "Completed" and res.counts["failed"] == 1 and res.counts["succeeded"] == 3
    errs = res.errors
    assert list(errs["index"]) == [1, 1] and list(errs["kind"]) == [kind, kind]
    assert text in errs["message"].iloc[0], errs["message"].iloc[0]
    if crash == "memory":
        assert errs["error_type"].iloc[0] == "MemoryError"
    else:
        assert str(errs["pid"].iloc[0]) in errs["message"].iloc[0]  # names the process that died
    assert sorted(res.read_lines()) == ["000.txt", "002.txt", "003.txt"]


@pytest.mark.parametrize("crash,text", [("exit", "exited with code 5"), ("sigkill", "SIGKILL"),
                                        ("segfault", "SIGSEGV"), ("memory", "MemoryError")])
def test_init_that_keeps_crashing_stops_after_3_per_worker_slot(workdir, crash, text):
    path = make_files(workdir, 3)
    t0 = time.monotonic()
    res = file_job(names, init=crash_in_init, max_concurrency_per_instance=1,
                   environment_variables={"CRASH": crash})(data=path).run(progress=False)
    assert time.monotonic() - t0 < 20
    assert res.status == "Failed" and res.limit == "init"
    assert "init() failed 3 times (3 allowed per node)" in res.reason and text in res.reason, res.reason
    assert res.counts["workers"] == 3 and res.counts["succeeded"] == 0


def init_fails_but_in_the_first_worker():
    first = os.path.join(os.environ["MARK_DIR"], "first")
    try:
        fd = os.open(first, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
    except FileExistsError:
        raise RuntimeError("GPU not available") from None


def slow_names_02(mini_batch):
    time.sleep(0.2)
    return names(mini_batch)


def test_job_wide_init_policy_stops_after_2_x_workers_failures(workdir, monkeypatch):
    from prs_nb.engine import scheduler

    # the contract's job-wide rule applies once the job has run 2 minutes; here from the start
    monkeypatch.setattr(scheduler, "INIT_JOB_WIDE_AFTER_S", 0.0)
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 200)
    res = file_job(slow_names_02, init=init_fails_but_in_the_first_worker, mini_batch_size="1",
                   max_concurrency_per_instance=2, environment_variables={"MARK_DIR": str(marks)})(data=path).run(
        progress=False)
    assert res.status == "Failed" and res.limit == "init", res.reason
    assert "init() failed 4 times (job-wide limit: 2 x 1 node(s) x 2 worker(s) = 4" in res.reason
    assert "GPU not available" in res.reason
    assert res.counts["workers"] == 5 and res.counts["not_run"] > 100


# ---------------------------------------------------------------- errors users can read


def _inner(x):
    return 1 / x


def divide_on_2_and_5(mini_batch):
    if any(p.endswith(("002.txt", "005.txt")) for p in mini_batch):
        return [_inner(0)]
    return names(mini_batch)


@pytest.mark.parametrize("backend", ["local", "inline"])
def test_user_code_error_carries_the_users_traceback_first_and_where_it_ran(workdir, backend):
    import pickle
    import traceback

    from prs_nb import JobFailedError, RemoteTraceback, UserCodeError

    path = make_files(workdir, 8)
    res = file_job(divide_on_2_and_5, mini_batch_size="1", max_concurrency_per_instance=1, backend=backend,
                   retry_settings={"max_retries": 1}, mini_batch_error_threshold=0)(data=path).run(progress=False)
    assert res.status == "Failed"
    with pytest.raises(JobFailedError) as info:
        res.raise_for_status()
    err = info.value.__cause__
    assert isinstance(err, UserCodeError)
    assert err.mini_batch_index == 2 and err.attempt == 2 and err.exc_type == "ZeroDivisionError"
    assert err.first_items.endswith("002.txt") and err.process_name.startswith("process") and err.pid
    assert "mini-batch 2 [" in str(err) and "002.txt], attempt 2, on process" in str(err)
    assert "in _inner: return 1 / x" in str(err)  # the failing line, in one look
    remote = err.__cause__
    assert isinstance(remote, RemoteTraceback)
    text = "".join(traceback.format_exception(info.value))
    # printed oldest cause first: the user's frames come before prs_nb's own exceptions
    assert text.index("in divide_on_2_and_5") < text.index("in _inner") < text.index("UserCodeError")
    assert text.index("UserCodeError") < text.index("JobFailedError")
    assert "prs_nb" + os.sep + "entry.py" not in remote.tb
    again = pickle.loads(pickle.dumps(err))
    assert (again.mini_batch_index, again.attempt, again.pid, again.first_items) == (2, 2, err.pid, err.first_items)
    assert isinstance(again.__cause__, RemoteTraceback) and again.remote_traceback == err.remote_traceback
    # job_error.txt says the same as result.errors: mini-batch, attempt, process, pid, inputs, traceback
    job_error = open(os.path.join(res.logs_dir, "job_error.txt")).read()
    errors = res.errors
    for row in errors.head(3).itertuples():  # job_error.txt shows the first 3 of each error type
        assert f"mini-batch {row.index}, attempt {row.attempt}, on node 0 {row.process} (pid {row.pid})" in job_error
        assert row.first_items in job_error and row.message in job_error
    if len(errors) > 3:
        assert f"(first 3 shown, {len(errors) - 3} more)" in job_error
    assert "return 1 / x" in job_error and "in divide_on_2_and_5" in job_error


def test_threshold_message_names_the_limit_the_count_and_the_first_failures(workdir):
    path = make_files(workdir, 10)
    res = file_job(fail_on_even, mini_batch_size="1", max_concurrency_per_instance=1,
                   retry_settings={"max_retries": 0}, mini_batch_error_threshold=3)(data=path).run(progress=False)
    assert res.status == "Failed" and res.limit == "mini_batch_error_threshold"
    reason = res.reason
    assert "mini_batch_error_threshold exceeded: 4 failed mini-batches > mini_batch_error_threshold 3" in reason
    assert "failed mini-batches (first 3 shown, 1 more;" in reason
    for idx in (0, 2, 4):
        assert f"mini-batch {idx} [" in reason and f"{idx:03d}.txt]: ValueError: even file {idx}" in reason
    assert "mini-batch 6 [" not in reason
    assert "attempt 1 on process001 (pid " in reason
    assert reason in open(os.path.join(res.logs_dir, "job_result.txt")).read()
    assert reason.splitlines()[0] in str(res)


def fail_on_even(mini_batch):
    for p in mini_batch:
        n = int(os.path.basename(p)[:3])
        if n % 2 == 0:
            raise ValueError(f"even file {n}")
    return names(mini_batch)


def half_back(mini_batch):
    return names(mini_batch)[: len(mini_batch) // 2]


def test_item_threshold_message_lists_short_returns(workdir):
    path = make_files(workdir, 8)
    res = file_job(half_back, mini_batch_size="4", max_concurrency_per_instance=1,
                   error_threshold=1)(data=path).run(progress=False)
    assert res.status == "Failed" and res.limit == "error_threshold"
    assert "mini-batches with failed items (1 in all;" in res.reason
    assert "returned 2 of 4 items (2 failed)" in res.reason


def test_init_failure_is_raised_with_its_traceback(workdir):
    from prs_nb import JobFailedError, UserCodeError

    path = make_files(workdir, 2)
    res = file_job(names, init=init_raises, max_concurrency_per_instance=1)(data=path).run(progress=False)
    assert "init() failures (first 3 shown" not in res.reason and "init() failures (3 in all" in res.reason
    with pytest.raises(JobFailedError) as info:
        res.raise_for_status()
    err = info.value.__cause__
    assert isinstance(err, UserCodeError) and err.mini_batch_index is None and "init() failed" in str(err)
    assert "in init_raises" in err.remote_traceback and "model.bin missing" in str(err)


def init_raises():
    raise FileNotFoundError("model.bin missing")


# ---------------------------------------------------------------- Jupyter's interrupt button


KERNEL_JOB = textwrap.dedent("""
    import os, time
    import prs_nb
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    def run(mini_batch):
        time.sleep(0.3)
        return [os.path.basename(p) for p in mini_batch]

    job = parallel_run_function(name="kernel", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=2,
                                task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
""")


def test_jupyter_interrupt_cancels_and_the_run_resumes_in_the_same_kernel(workdir):
    from jupyter_client.manager import start_new_kernel

    files = make_files(workdir, 40)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(workdir), env=env_with_path())
    try:
        def execute(code, timeout=60):
            msg_id = kc.execute(code)
            out = []
            while True:
                msg = kc.get_iopub_msg(timeout=timeout)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    out.append("\n".join(msg["content"]["traceback"]))
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)

        execute(KERNEL_JOB)
        kernel_pid = int(execute("print(os.getpid())").strip())
        msg_id = kc.execute(f"res = job(d={files!r}).run(progress=False)")
        workers = two_workers(kernel_pid)
        time.sleep(1.0)
        t0 = time.monotonic()
        km.interrupt_kernel()  # what the notebook's stop button does
        while True:
            msg = kc.get_iopub_msg(timeout=20)
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                break
        assert time.monotonic() - t0 < 2.0
        assert all_gone(workers, timeout=0.1)
        out = execute("print(res.status, res.counts['succeeded'], len(res.read_lines()))")
        status, ok, lines = out.split()
        assert status == "Canceled" and 0 < int(ok) < 40 and int(lines) == int(ok), out
        # the kernel is fine and the run continues where it stopped
        out = execute("r2 = prs_nb.resume(res.run_dir, progress=False)\n"
                      "print(r2.status, r2.counts['succeeded'], len(r2.read_lines()), len(set(r2.read_lines())))")
        assert out.split() == ["Completed", "40", "40", "40"], out
        assert not worker_children(kernel_pid)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


class FailingListener:
    def __init__(self):
        self.workers = []

    def on_event(self, event):
        if isinstance(event, ev.WorkerStarted):
            self.workers.append(psutil.Process(event.pid))
        if isinstance(event, ev.BatchSucceeded) and event.index == 3:
            raise RuntimeError("listener bug")


def test_an_error_in_the_driver_still_stops_every_worker(workdir):
    path = make_files(workdir, 30)
    listener = FailingListener()
    with pytest.raises(RuntimeError, match="listener bug"):
        file_job(slow_names, mini_batch_size="1", max_concurrency_per_instance=2)(data=path).run(
            progress=False, listeners=[listener])
    assert len(listener.workers) == 2 and all_gone(listener.workers, timeout=0.5)


# ---------------------------------------------------------------- what user code started dies with its worker


def _spawn_child(tag):
    child = subprocess.Popen(["sleep", "60"])
    with open(os.path.join(os.environ["MARK_DIR"], f"{tag}-{child.pid}"), "w") as fh:
        fh.write("1")


def spawn_then_fail(mini_batch):
    if any(p.endswith("001.txt") for p in mini_batch):
        _spawn_child("run")
        how = os.environ["HOW"]
        if how == "hang":
            time.sleep(60)
        elif how == "exit":
            os._exit(3)
    return names(mini_batch)


def init_spawns_a_server():
    _spawn_child("init")


def child_pids(marks):
    return [int(f.split("-")[1]) for f in os.listdir(marks)]


@pytest.mark.parametrize("how", ["hang", "exit"])
def test_processes_started_by_run_die_with_a_killed_or_crashed_worker(workdir, how):
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 3)
    res = file_job(spawn_then_fail, mini_batch_size="1", max_concurrency_per_instance=1,
                   retry_settings={"max_retries": 0, "timeout": 1},
                   environment_variables={"MARK_DIR": str(marks), "HOW": how})(data=path).run(progress=False)
    assert res.counts["failed"] == 1
    pids = child_pids(marks)
    assert len(pids) == 1
    assert all_gone([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=1.0)


def test_processes_started_in_init_die_at_the_end_of_the_job(workdir):
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 8)
    res = file_job(slow_names, init=init_spawns_a_server, mini_batch_size="1", max_concurrency_per_instance=2,
                   environment_variables={"MARK_DIR": str(marks)})(data=path).run(progress=False)
    assert res.status == "Completed"
    pids = child_pids(marks)
    assert len(pids) == 2
    assert all_gone([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=1.0)
