"""Tests of prs_nb.logs: the driver's RunLogs (synthetic events) and the worker's log setup (real processes)."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from prs_nb import events as ev
from prs_nb.errors import ConfigError
from prs_nb.logs import CSV_COLUMNS, RunLogs, log_paths, setup_worker_logging

REPO = str(Path(__file__).resolve().parents[1])
T0 = 1_700_000_000.0  # a fixed local time base; only relative values are checked
TB = 'Traceback (most recent call last):\n  File "score.py", line 9, in run\n    raise ValueError("bad row {n}")\nValueError: bad row {n}\n'


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_py(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------------------------
# driver side
# ------------------------------------------------------------------------------------------------


def _failing_job(logs: Path) -> RunLogs:
    """A job on 2 workers: successes, a short return, retries, a timeout kill, a dead process,
    an init() failure, five ValueErrors, and a stop on mini_batch_error_threshold."""
    rl = RunLogs(str(logs), "demo", {"mini_batch_size": "2", "mini_batch_error_threshold": 1, "logging_level": "INFO"})
    E = rl.on_event
    t = T0
    E(ev.JobStarted("demo", "run-1", "/runs/demo", 2, "local", t))
    E(ev.BatchesListed(3, False))
    E(ev.WorkerStarted(0, "process000", 100, t + 0.1))
    E(ev.WorkerStarted(0, "process001", 101, t + 0.1))
    E(ev.WorkerReady(0, "process000", 100, 0.5))
    E(ev.WorkerReady(0, "process001", 101, 0.25))
    E(ev.BatchesListed(8, True))
    E(ev.BatchStarted(0, 1, 0, "process000", t + 1))
    E(ev.BatchSucceeded(0, 1, 0, "process000", t + 1, t + 1.25, 2, 2, 0, 0.2))
    # mini-batch 1 fails once (retried), then succeeds with a short return
    E(ev.BatchStarted(1, 1, 0, "process001", t + 1))
    E(ev.BatchFailed(1, 1, 0, "process001", 101, t + 1, t + 1.5, 2, "exception", "ValueError", "bad row 1",
                     TB.format(n=1), True, "a.csv, b.csv"))
    E(ev.BatchStarted(1, 2, 0, "process000", t + 2))
    E(ev.BatchSucceeded(1, 2, 0, "process000", t + 2, t + 2.1, 2, 1, 1, 0.1))
    # mini-batch 2 times out (process killed), then fails for good with a message needing CSV quoting
    E(ev.BatchStarted(2, 1, 0, "process001", t + 2))
    E(ev.BatchFailed(2, 1, 0, "process001", 101, t + 2, t + 62, 2, "timeout", "TimeoutError",
                     "run() exceeded 60 s", "", True, "c.csv, d.csv"))
    E(ev.WorkerDied(0, "process001", 101, -9, "killed after run() timeout", t + 62))
    E(ev.WorkerStarted(0, "process002", 102, t + 62.1))
    E(ev.Progress(8, 2, 2, 0, 1, 3, 1, t + 62.2))
    E(ev.BatchStarted(2, 2, 0, "process002", t + 63))
    E(ev.BatchFailed(2, 2, 0, "process002", 102, t + 63, t + 63.5, 2, "exception", "ValueError",
                     'bad row 2, "quoted"\nsecond line', TB.format(n=2), False, "c.csv, d.csv"))
    # three more ValueError attempts: job_error shows the first 3 and counts the rest
    for i in (4, 5, 6):
        E(ev.BatchStarted(i, 1, 0, "process002", t + 64))
        E(ev.BatchFailed(i, 1, 0, "process002", 102, t + 64, t + 64.5, 2, "exception", "ValueError",
                         f"bad row {i}", TB.format(n=i), True, ""))
    # mini-batch 3 dies with its process: failed for good
    E(ev.BatchStarted(3, 1, 0, "process000", t + 63))
    E(ev.BatchFailed(3, 1, 0, "process000", 100, t + 63, t + 63.25, 2, "worker_died", "WorkerError",
                     "process000 died (returncode -9)", "", False, "e.csv"))
    E(ev.WorkerDied(0, "process000", 100, -9, "died", t + 63.25))
    E(ev.InitFailed(0, "process003", 103, "no model file", "FileNotFoundError",
                    "Traceback (most recent call last):\nFileNotFoundError: no model file\n"))
    E(ev.JobFinished("Failed", "mini_batch_error_threshold exceeded: 2 failed mini-batches > 1",
                     {"succeeded": 2, "failed": 2}, t + 65))
    return rl


def test_run_logs_failing_job_writes_every_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    rl = _failing_job(logs)
    rl.close()

    readme = _read(logs / "readme.txt")
    assert "Where to look first" in readme and "job_result.txt" in readme and "'demo'" in readme

    result = _read(logs / "job_result.txt")
    assert result.startswith("Job 'demo' (run run-1): Failed\n")
    assert "Reason: mini_batch_error_threshold exceeded: 2 failed mini-batches > 1" in result
    assert "8 created, 4 processed, 2 succeeded, 2 failed (7 failed attempts)" in result
    assert "items: 3 succeeded, 5 failed" in result
    assert "init() failures: 1" in result
    # the first mini-batch that failed for good, its process and where its traceback is
    assert "First mini-batch that failed for good: mini-batch 2, attempt 2, on node 0 process002 (pid 102)" in result
    assert "error: ValueError: bad row 2" in result and "inputs: c.csv, d.csv" in result
    assert "1. user/error/0/process002.txt" in result
    assert "user/stdout/0/process002.stdout.txt" in result
    assert str(logs) in result

    error = _read(logs / "job_error.txt")
    assert "4 error type(s), 7 failed mini-batch attempt(s), 2 mini-batch(es) failed" in error
    assert "== ValueError - run() raised: 5 failed attempt(s), 1 mini-batch(es) failed for good ==" in error
    assert "(first 3 shown, 2 more)" in error
    assert error.count("raise ValueError") == 3  # only the first three tracebacks of the type
    assert "== TimeoutError - run() timed out: 1 failed attempt(s)" in error
    assert "sys/error/0/process001.txt" in error
    assert "== WorkerError - the worker process died" in error
    assert "== FileNotFoundError - init() raised: 1 init() failure(s) ==" in error
    assert "user/error/0/process003.txt" in error

    overviews = sorted(logs.glob("job_progress_overview.*.txt"))
    assert [p.name for p in overviews] == [f"job_progress_overview.{time.strftime('%Y%m%d%H', time.localtime(T0))}.txt"]
    lines = _read(overviews[0]).splitlines()
    assert len(lines) == 3  # job start, one Progress, the end
    assert "created 0 mini-batches (listing in progress)" in lines[0]
    assert "created 8 mini-batches, processed 2, succeeded 2, failed 0, running 1" in lines[1]
    assert "created 8 mini-batches, processed 4, succeeded 2, failed 2, running 0" in lines[2]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", lines[0])

    master = _read(logs / "sys" / "master_role.txt")
    for text in ("Job 'demo' started: run_id=run-1 backend=local workers=2", "mini_batch_error_threshold = 1",
                 "Worker process000 on node 0 started (pid 100)", "Worker process001 (pid 101) ready: init() took 0.250 s",
                 "Listing done: 8 mini-batches created", "Mini-batch 1 attempt 1 failed on node 0 process001",
                 "Worker process001 on node 0 (pid 101) exited with returncode -9 (killed after run() timeout) - "
                 "killed (SIGKILL): out of memory, or killed after a timeout",
                 "Mini-batch 2 failed for good after attempt 2", "init() failed: FileNotFoundError: no model file",
                 "Job finished: Failed - mini_batch_error_threshold exceeded"):
        assert text in master, text

    with open(logs / "sys" / "job_report" / "processed_mini-batches.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = [dict(zip(CSV_COLUMNS, r, strict=True)) for r in rows[1:]]
    assert [(r["mini_batch_index"], r["status"], r["attempt"]) for r in body] == [
        ("0", "Succeeded", "1"), ("1", "Succeeded", "2"), ("2", "Failed", "2"), ("3", "Failed", "1")]
    assert body[1] | {"start": ""} == {
        "mini_batch_index": "1", "status": "Succeeded", "attempt": "2", "node_id": "0", "process_name": "process000",
        "start": "", "elapsed_seconds": "0.100", "items": "2", "returned": "1", "failed_items": "1",
        "error_type": "", "error_message": ""}
    assert body[2]["error_type"] == "ValueError" and body[2]["error_message"] == 'bad row 2, "quoted"\nsecond line'
    assert body[2]["process_name"] == "process002" and body[2]["failed_items"] == "2"
    assert body[3]["error_type"] == "WorkerError"

    p1 = _read(logs / "sys" / "node" / "0" / "process001.txt")
    assert "| pid 101 | mini-batch 1 attempt 1 picked" in p1
    assert "| pid 101 | mini-batch 1 attempt 1 FAILED after 0.500 s (exception: ValueError: bad row 1); will retry" in p1
    assert "process exited, returncode -9" in p1
    p0 = _read(logs / "sys" / "node" / "0" / "process000.txt")
    assert ("| pid 100 | mini-batch 1 attempt 2 completed in 0.100 s (run() 0.100 s): 2 items, 1 returned, 1 failed"
            in p0)
    assert "init() done in 0.500 s" in p0

    main = _read(logs / "sys" / "node" / "0" / "_main.txt")
    assert "process001 (pid 101) exits with returncode -9 (killed after run() timeout)" in main
    assert "process002 (pid 102) started" in main
    assert "process003 (pid 103) init() failed: FileNotFoundError" in main

    recs1 = [json.loads(x) for x in _read(logs / "sys" / "error" / "0" / "process001.txt").splitlines()]
    assert len(recs1) == 1
    assert {k: recs1[0][k] for k in ("task_id", "dequeue_count", "total", "method", "exc_type", "status")} == {
        "task_id": 2, "dequeue_count": 1, "total": 2, "method": "run", "exc_type": "TimeoutError",
        "status": "RUN_TIMEOUT"}
    assert recs1[0]["run_method_duration"] == 60.0 and recs1[0]["agent"] == "process001"
    recs0 = [json.loads(x) for x in _read(logs / "sys" / "error" / "0" / "process000.txt").splitlines()]
    assert recs0[0]["status"] == "PROCESS_DIED" and recs0[0]["will_retry"] is False
    # user exceptions are not system errors
    assert not (logs / "sys" / "error" / "0" / "process002.txt").exists()
    assert rl.first_failure is not None and rl.first_failure["index"] == 2
    assert rl.paths["job_result"] == str(logs / "job_result.txt")


def test_run_logs_completed_job(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with RunLogs(str(logs), "ok", {}) as rl:
        rl.on_event(ev.JobStarted("ok", "r", str(tmp_path), 1, "inline", T0))
        rl.on_event(ev.WorkerStarted(0, "process000", 7, T0))
        rl.on_event(ev.BatchesListed(1, True))
        rl.on_event(ev.BatchStarted(0, 1, 0, "process000", T0 + 1))
        rl.on_event(ev.BatchSucceeded(0, 1, 0, "process000", T0 + 1, T0 + 2, 3, 3, 0, 0.9))
        rl.on_event(ev.JobFinished("Completed", "", {}, T0 + 3))
        rl.on_event(object())  # unknown events are ignored
    result = _read(logs / "job_result.txt")
    assert result.startswith("Job 'ok' (run r): Completed\n")
    assert "1 created, 1 processed, 1 succeeded, 0 failed" in result
    assert "Where to look" not in result
    assert _read(logs / "job_error.txt") == "No script errors in job 'ok'.\n"
    assert not (logs / "sys" / "error").exists()
    rl.close()  # idempotent
    rl.on_event(ev.BatchStarted(1, 1, 0, "process000", T0))  # after close: dropped, no error


def test_close_without_job_finished_says_so(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    rl = RunLogs(str(logs), "cut", {})
    rl.on_event(ev.JobStarted("cut", "r", str(tmp_path), 1, "local", T0))
    rl.on_event(ev.BatchStarted(0, 1, 0, "process000", T0))
    proc_file = logs / "sys" / "node" / "0" / "process000.txt"
    assert "picked" not in _read(proc_file)  # buffered: no flush per event
    rl.close()
    assert _read(logs / "job_result.txt").startswith("Job 'cut' (run r): NotFinished\n")
    assert "picked" in _read(logs / "sys" / "node" / "0" / "process000.txt")
    assert "closed before the job finished" in _read(logs / "sys" / "master_role.txt")


def test_overview_rotates_daily_and_resume_appends(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    day = 86400.0
    with RunLogs(str(logs), "long", {}) as rl:
        rl.on_event(ev.JobStarted("long", "r", str(tmp_path), 1, "local", T0))
        rl.on_event(ev.Progress(None, 0, 0, 0, 1, 0, 0, T0 + 10))
        rl.on_event(ev.Progress(5, 1, 1, 0, 1, 1, 0, T0 + day))
        rl.on_event(ev.BatchSucceeded(0, 1, 0, "process000", T0, T0 + 1, 1, 1, 0, 1.0))
        rl.on_event(ev.JobFinished("Completed", "", {}, T0 + day + 5))
    names = sorted(p.name for p in logs.glob("job_progress_overview.*.txt"))
    assert len(names) == 2
    # a resumed run in the same folder appends: one header only
    with RunLogs(str(logs), "long", {}) as rl:
        rl.on_event(ev.BatchSucceeded(1, 1, 0, "process000", T0, T0 + 1, 1, 1, 0, 1.0))
    rows = _read(logs / "sys" / "job_report" / "processed_mini-batches.csv").splitlines()
    assert rows[0].startswith("mini_batch_index,") and len(rows) == 3 and rows.count(rows[0]) == 1


def test_run_logs_microbenchmark(tmp_path: Path) -> None:
    """20,000 BatchStarted + BatchSucceeded pairs on 8 processes; prints the rate, asserts only content."""
    n = 20_000
    rl = RunLogs(str(tmp_path / "logs"), "bench", {})
    rl.on_event(ev.JobStarted("bench", "r", str(tmp_path), 8, "local", T0))
    started = [ev.BatchStarted(i, 1, 0, f"process{i % 8:03d}", T0 + i * 1e-4) for i in range(n)]
    done = [ev.BatchSucceeded(i, 1, 0, f"process{i % 8:03d}", T0 + i * 1e-4, T0 + i * 1e-4 + 0.01, 10, 10, 0, 0.009)
            for i in range(n)]
    on = rl.on_event
    t = time.perf_counter()
    for e in done:
        on(e)
    rate = n / (time.perf_counter() - t)
    for s in started:
        on(s)
    rl.on_event(ev.JobFinished("Completed", "", {}, T0 + 10))
    rl.close()
    print(f"RunLogs: {rate:,.0f} BatchSucceeded events/s")
    csv_lines = _read(tmp_path / "logs" / "sys" / "job_report" / "processed_mini-batches.csv").splitlines()
    assert len(csv_lines) == n + 1
    assert _read(tmp_path / "logs" / "sys" / "node" / "0" / "process003.txt").count("completed in") == n // 8


# ------------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------------

_WORKER = """
import logging, os, subprocess, sys, time
t0 = time.perf_counter()
from prs_nb.logs import setup_worker_logging
t1 = time.perf_counter()
wl = setup_worker_logging({logs!r}, 1, "process004", {level!r})
t2 = time.perf_counter()
print("py print")
os.write(1, b"c-level fd1\\n")
os.write(2, b"c-level fd2\\n")
print("py stderr", file=sys.stderr)
logging.info("root info %d", 42)
logging.debug("root debug")
logging.getLogger("user.module").warning("named warning")
wl.entry_logger.debug("entry debug")
wl.entry_logger.info("entry info")
subprocess.run([sys.executable, "-c", "import os, sys; print('child out'); print('child err', file=sys.stderr)"],
               check=True)
wl.write_user_error("run()", 5, 2, "Traceback (most recent call last):\\nValueError: boom")
wl.write_user_error("init()", None, None, "Traceback (most recent call last):\\nKeyError: 'x'")
wl.close()
print("back on the real stdout")
print(f"TIMING import_ms={{(t1 - t0) * 1e3:.2f}} setup_ms={{(t2 - t1) * 1e3:.2f}}")
"""


def test_worker_logging_captures_everything_in_a_real_process(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    proc = _run_py(_WORKER.format(logs=str(logs), level="INFO"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    # while set up, nothing reached the real stdout/stderr; after close() they are restored
    assert proc.stdout.splitlines()[0] == "back on the real stdout"
    assert proc.stderr == ""
    print(proc.stdout.splitlines()[-1])

    p = log_paths(str(logs), 1, "process004")
    out = _read(Path(p["stdout"]))
    for text in ("py print\n", "c-level fd1\n", "INFO root: root info 42\n", "WARNING user.module: named warning\n",
                 "child out\n"):
        assert text in out, text
    assert "root debug" not in out and "entry" not in out
    assert out.index("py print") < out.index("c-level fd1") < out.index("root info") < out.index("child out")
    err = _read(Path(p["stderr"]))
    assert err == "c-level fd2\npy stderr\nchild err\n"
    entry = _read(Path(p["entry_log"]))
    assert "entry info" in entry and "entry debug" not in entry  # contract 4.7: honours logging_level
    assert "|INFO|" in entry and "azureml_user.entry_script.process004" in entry
    user_err = _read(Path(p["user_error"]))
    assert re.search(r"===== .* \| run\(\) \| mini-batch 5 \| attempt 2 \| process004 on node 1 \(pid \d+\) =====\n"
                     r"Traceback \(most recent call last\):\nValueError: boom\n", user_err)
    assert "| init() | process004 on node 1" in user_err and "KeyError: 'x'" in user_err
    assert p["stdout"].endswith(os.path.join("user", "stdout", "1", "process004.stdout.txt"))


def test_worker_logging_debug_level(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    proc = _run_py(_WORKER.format(logs=str(logs), level="DEBUG"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    p = log_paths(str(logs), 1, "process004")
    assert "DEBUG root: root debug" in _read(Path(p["stdout"]))
    assert "|DEBUG|" in _read(Path(p["entry_log"]))


def test_worker_logging_is_lazy_when_nothing_is_logged(tmp_path: Path) -> None:
    """No log call -> no import of concurrent_log_handler, no log/lock files; print() still captured."""
    code = f"""
    import sys
    from prs_nb.logs import setup_worker_logging
    wl = setup_worker_logging({str(tmp_path / 'logs')!r}, 0, "process000", "INFO")
    print("only print")
    loaded = "concurrent_log_handler" in sys.modules
    wl.close()
    print("loaded", loaded)
    """
    proc = _run_py(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "loaded False\n"
    files = sorted(str(q.relative_to(tmp_path / "logs")) for q in (tmp_path / "logs").rglob("*") if q.is_file())
    assert files == [os.path.join("user", "stderr", "0", "process000.stderr.txt"),
                     os.path.join("user", "stdout", "0", "process000.stdout.txt")]
    assert (tmp_path / "logs" / "user" / "entry_script_log" / "0").is_dir()


def test_two_processes_share_one_log_file_safely(tmp_path: Path) -> None:
    """concurrent-log-handler: two processes logging to the same file lose and mix no record."""
    code = """
    import logging, sys
    from prs_nb.logs import setup_worker_logging
    wl = setup_worker_logging(sys.argv[1], 0, "process000", "INFO", redirect_fds=False)
    for i in range(300):
        logging.info("writer %s record %03d " + "x" * 200, sys.argv[2], i)
        wl.entry_logger.info("entry %s %03d", sys.argv[2], i)
    wl.close()
    """
    logs = str(tmp_path / "logs")
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), logs, w], env=_env(), cwd=tmp_path)
             for w in ("A", "B")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    lines = _read(Path(log_paths(logs, 0, "process000")["stdout"])).splitlines()
    assert len(lines) == 600
    for w in ("A", "B"):
        mine = [ln for ln in lines if f"writer {w} record" in ln]
        assert [int(ln.split("record ")[1][:3]) for ln in mine] == list(range(300))
        assert all(ln.endswith("x" * 200) for ln in mine)
    assert len(_read(Path(log_paths(logs, 0, "process000")["entry_log"])).splitlines()) == 600


def test_inline_mode_leaves_the_caller_untouched(tmp_path: Path) -> None:
    root = logging.getLogger()
    handlers_before, level_before = list(root.handlers), root.level
    stdout_before, stderr_before = sys.stdout, sys.stderr
    fd1_before = os.fstat(1)
    wl = setup_worker_logging(str(tmp_path / "logs"), 0, "process000", "INFO", redirect_fds=False)
    try:
        assert sys.stdout is stdout_before and sys.stderr is stderr_before
        assert os.fstat(1).st_ino == fd1_before.st_ino
        assert wl.root_handler in root.handlers
        logging.getLogger("inline.user").info("inline info")
        wl.entry_logger.info("inline entry")
        wl.entry_logger.debug("inline entry debug")
    finally:
        wl.close()
    assert root.handlers == handlers_before and root.level == level_before
    assert sys.stdout is stdout_before and sys.stderr is stderr_before
    assert wl.entry_logger.handlers == [] and wl.entry_logger.propagate
    assert "INFO inline.user: inline info" in _read(Path(wl.stdout_path))
    entry = _read(Path(wl.entry_log_path))
    assert "inline entry" in entry and "inline entry debug" not in entry
    logging.getLogger("inline.user").warning("after close")  # goes nowhere near our files
    assert "after close" not in _read(Path(wl.stdout_path))
    wl.close()  # idempotent


def test_bad_logging_level_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DEBUG, INFO, WARNING"):
        setup_worker_logging(str(tmp_path), 0, "process000", "LOUD", redirect_fds=False)
    assert "process000" not in str(logging.getLogger().handlers)
