"""Stress (issue 3, "done when"): 400 mini-batches while a test thread SIGKILLs workers at random
times, some workers SIGKILL themselves, four run() calls hang (killed at the 1.5 s timeout, or
sooner by the test thread), and the driver itself (a subprocess) is SIGKILLed and resumed three
times. The output must hold every expected row exactly once and no process may be left behind.
Part of the normal suite (about 15-60 s); the kill counts are printed and recorded as test
properties (``-s`` or ``--junitxml`` shows them)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import psutil
import pytest

from prs_nb.engine.journal import read_journal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 400
DRIVER_KILLS_AT = (80, 180, 290)  # journaled mini-batches at which the driver is SIGKILLed

DRIVER = textwrap.dedent("""
    import json, os, random, sys, time
    import prs_nb
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    MARKS = os.environ["STRESS_MARKS"]

    def init():
        open(os.path.join(MARKS, "ready-%d" % os.getpid()), "w").close()

    def run(mini_batch):
        time.sleep(random.uniform(0.01, 0.04))
        r = random.random()
        if r < 0.03:  # some workers kill themselves mid-batch
            open(os.path.join(MARKS, "selfkill-%d" % os.getpid()), "w").close()
            os.kill(os.getpid(), 9)
        name = os.path.basename(mini_batch[0])
        hang = os.path.join(MARKS, "hang-" + name)
        if name[:3] in ("050", "150", "250", "350") and not os.path.exists(hang):
            open(hang, "w").close()  # these hang once, until the timeout (or the test thread) kills them
            time.sleep(60)
        return [os.path.basename(p) + " " + "x" * 100 for p in mini_batch]

    if sys.argv[1] == "new":
        job = parallel_run_function(
            name="stress", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()}, mini_batch_size="1",
            max_concurrency_per_instance=2, retry_settings={"max_retries": 20, "timeout": 1.5},
            task=RunFunction(run=run, init=init, append_row_to="${{outputs.o}}"))
        res = job(d=sys.argv[2]).run(progress=False)
    else:
        res = prs_nb.resume(sys.argv[2], progress=False)
    print("RESULT " + json.dumps({"status": res.status, "reason": res.reason, "counts": res.counts,
                                  "output": res.output_path}), flush=True)
""")


class Killer(threading.Thread):
    """SIGKILLs a random ready worker of the current driver every 0.03-0.2 s."""

    def __init__(self, marks):
        super().__init__(daemon=True)
        self.marks = marks
        self.driver = None
        self.stop = threading.Event()
        self.kills = 0
        self.seen = set()
        self.rng = random.Random(1234)

    def run(self):
        while not self.stop.wait(self.rng.uniform(0.03, 0.2)):
            driver = self.driver
            if driver is None:
                continue
            try:
                kids = [p for p in psutil.Process(driver).children() if "prs_nb.engine.worker" in " ".join(p.cmdline())]
            except psutil.Error:
                continue
            self.seen.update(p.pid for p in kids)
            ready = []
            for p in kids:
                mark = os.path.join(self.marks, f"ready-{p.pid}")
                # init() finished a while ago: a kill now hits run(), not init()
                if os.path.exists(mark) and time.time() - os.path.getmtime(mark) > 0.3:
                    ready.append(p)
            if ready:
                victim = self.rng.choice(ready)
                try:
                    victim.send_signal(signal.SIGKILL)
                    self.kills += 1
                except psutil.Error:
                    pass


def start(args, env):
    return subprocess.Popen([sys.executable, "driver.py", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_journal(run_dir_box, workdir, at_least, proc, timeout=40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run_dir_box[0] is None:
            found = list((workdir / "prs_runs" / "stress").glob("*/journal"))
            if found:
                run_dir_box[0] = str(found[0].parent)
        if run_dir_box[0] is not None and len(read_journal(os.path.join(run_dir_box[0], "journal"))) >= at_least:
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"driver ended before {at_least} mini-batches were journaled:\n{out}\n{err}")
        time.sleep(0.01)
    pytest.fail(f"{at_least} mini-batches not journaled within {timeout}s")


@pytest.mark.timeout(240)
def test_random_worker_and_driver_kills_lose_and_duplicate_nothing(workdir, record_property):
    t0 = time.monotonic()
    data = workdir / "in"
    data.mkdir()
    for i in range(N):
        (data / f"{i:03d}.txt").write_text(str(i))
    marks = workdir / "marks"
    marks.mkdir()
    (workdir / "driver.py").write_text(DRIVER)
    tag = uuid.uuid4().hex
    env = os.environ.copy()
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(STRESS_MARKS=str(marks), PRS_NB_KEY_DIR=str(workdir / "key"), PRS_STRESS_TAG=tag)
    killer = Killer(str(marks))
    killer.start()
    run_dir = [None]
    drivers = []
    driver_kills = 0
    try:
        proc = start(["new", str(data)], env)
        for at in DRIVER_KILLS_AT:
            drivers.append(proc.pid)
            killer.driver = proc.pid
            wait_journal(run_dir, workdir, at, proc)
            orphans = [p for p in psutil.Process(proc.pid).children() if "prs_nb.engine.worker" in " ".join(p.cmdline())]
            killer.seen.update(p.pid for p in orphans)
            proc.send_signal(signal.SIGKILL)  # the driver dies mid-run, its workers with it (PDEATHSIG)
            proc.communicate(timeout=10)
            driver_kills += 1
            gone, alive = psutil.wait_procs(orphans, timeout=2.0)
            assert not alive, f"workers outlived their SIGKILLed driver: {[p.pid for p in alive]}"
            proc = start(["resume", run_dir[0]], env)
        drivers.append(proc.pid)
        killer.driver = proc.pid
        out, err = proc.communicate(timeout=120)
    finally:
        killer.stop.set()
        killer.join()
    assert proc.returncode == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["status"] == "Completed", result
    assert result["counts"]["total"] == N and result["counts"]["succeeded"] == N, result
    with open(result["output"]) as fh:
        rows = [ln.split()[0] for ln in fh.read().splitlines()]
    assert len(rows) == N and sorted(rows) == [f"{i:03d}.txt" for i in range(N)]  # every row exactly once
    journal = read_journal(os.path.join(run_dir[0], "journal"))
    assert sorted(journal) == list(range(N)) and all(e.status == "S" for e in journal.values())
    # no process left behind: not a driver, not a worker, nothing that carries this test's tag
    for pid in [*drivers, *killer.seen]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    leftovers = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("PRS_STRESS_TAG") == tag and p.status() != psutil.STATUS_ZOMBIE:
                leftovers.append((p.pid, " ".join(p.cmdline())))
        except psutil.Error:
            continue
    assert not leftovers, leftovers
    self_kills = len([f for f in os.listdir(marks) if f.startswith("selfkill-")])
    hangs = len([f for f in os.listdir(marks) if f.startswith("hang-")])
    took = time.monotonic() - t0
    stats = {"mini_batches": N, "workers_sigkilled_by_test": killer.kills, "workers_killed_themselves": self_kills,
             "run_calls_that_hung": hangs,
             "driver_sigkills_and_resumes": driver_kills, "worker_processes_seen": len(killer.seen),
             "seconds": round(took, 1)}
    for k, v in stats.items():
        record_property(k, v)
    print("\nSTRESS " + json.dumps(stats))
    assert driver_kills == 3 and killer.kills >= 5 and self_kills >= 1 and hangs == 4, stats
