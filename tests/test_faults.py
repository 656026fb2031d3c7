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


def make_files(root, n, name="in"):
    d = root / name
    d.mkdir()
    for i in range(n):
        (d / f"{i:03d}.txt").write_text(str(i))
    return str(d)


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


def test_cancel_from_another_thread_stops_within_2s_with_partial_counts(workdir):
    path = make_files(workdir, 60)
    grab = CancelGrabber(after_batches=4, reason="Stop button pressed")
    job = file_job(slow_names, mini_batch_size="1", max_concurrency_per_instance=2)
    res = job(data=path).run(progress=False, listeners=[grab])
    ended = time.monotonic()
    grab.thread.join()
    assert res.status == "Canceled", res.summary()
    assert "Stop button pressed" in res.reason
    assert ended - grab.pressed_at < 2.0
    ok = res.counts["succeeded"]
    assert 4 <= ok < 60 and res.counts["not_run"] == 60 - ok - res.counts["failed"]
    assert len(res.read_lines()) == ok  # what was appended stays, exactly once
    assert set(res.batches["status"]) <= {"Succeeded", "Canceled"}
    # the conftest fixture also fails the test if any worker is left


def test_cancel_twice_and_after_the_end_is_harmless(workdir):
    path = make_files(workdir, 4)
    grab = CancelGrabber(after_batches=10**6, reason="unused")
    res = file_job(names, mini_batch_size="1")(data=path).run(progress=False, listeners=[grab])
    assert res.status == "Completed"
    grab.cancel("late")
    grab.cancel("later")  # the run is over: nothing happens, nothing raises


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


def test_real_sigint_cancels_within_2s_and_leaves_no_process(workdir):
    files = make_files(workdir, 40)
    mark = workdir / "mark"
    mark.mkdir()
    proc = start_driver(workdir, files, mark)
    workers = two_workers(proc.pid)
    time.sleep(1.2)  # some mini-batches finish
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 2.0, err
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
        out, err = proc.communicate(timeout=20)
        results[presses] = time.monotonic() - t0
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
