"""Engine behaviour with real worker processes: oracle vs inline, entry scripts, context, arguments,
outputs, timeouts, crashes, init failures."""

from __future__ import annotations

import os
import signal
import textwrap
import time

import pandas as pd
import pytest
from filetree import make_files

from prs_nb import Input, Output, RunFunction, parallel_run_function

# ---------------------------------------------------------------- module-level entry functions


def double_rows(mini_batch):
    return mini_batch.assign(y=mini_batch["x"] * 2)


def names(mini_batch):
    return [os.path.basename(p) for p in mini_batch]


def with_context(mini_batch, mini_batch_context):
    return [f"{mini_batch_context.minibatch_index}:{mini_batch_context.global_row_index_lower_bound}:"
            f"{mini_batch_context.dataset}:{len(mini_batch)}"]


def hang_on_3(mini_batch):
    if any(os.path.basename(p).startswith("003") for p in mini_batch):
        time.sleep(60)
    return names(mini_batch)


def exit_on_2(mini_batch):
    if any(os.path.basename(p).startswith("002") for p in mini_batch):
        os._exit(7)
    return names(mini_batch)


def sigkill_on_1_once(mini_batch):
    for p in mini_batch:
        if os.path.basename(p).startswith("001") and not os.path.exists(p + ".killed"):
            open(p + ".killed", "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    return names(mini_batch)


def bad_init():
    raise RuntimeError("model file missing")


def exit_init():
    os._exit(3)


INIT_COUNT = {"n": 0}


def counting_init():
    INIT_COUNT["n"] += 1
    with open(os.path.join(os.environ["MARK_DIR"], f"init-{os.getpid()}"), "w") as fh:
        fh.write("1")


def pid_run(mini_batch):
    time.sleep(0.05)  # long enough that both workers finish init() and take work
    return [f"{os.getpid()} {os.environ.get('MY_VAR')}" for _ in mini_batch]


# ---------------------------------------------------------------- helpers


def file_job(run, *, name="t", **kw):
    return parallel_run_function(
        name=name, inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
        task=RunFunction(run=run, init=kw.pop("init", None), append_row_to="${{outputs.out}}",
                         program_arguments=kw.pop("program_arguments", None)), **kw)


# ---------------------------------------------------------------- oracle


@pytest.mark.parametrize("backend,workers", [("local", 1), ("local", 2), ("local", 3)])
def test_oracle_same_rows_as_inline(workdir, backend, workers):
    df = pd.DataFrame({"x": range(1000)})
    job = parallel_run_function(name="oracle", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                mini_batch_size="1KB", task=RunFunction(run=double_rows, append_row_to="${{outputs.o}}"))
    ref = job(t=df).run(backend="inline", progress=False)
    got = job(t=df).run(backend=backend, max_concurrency_per_instance=workers, progress=False)
    assert ref.status == got.status == "Completed"
    assert ref.counts["total"] > 5
    a = ref.to_pandas().sort_values(0).reset_index(drop=True)
    b = got.to_pandas().sort_values(0).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert sorted(b[1]) == [2 * x for x in range(1000)]


def test_ordered_output_is_in_mini_batch_order(workdir):
    path = make_files(workdir, 40)
    res = file_job(names, mini_batch_size="1", max_concurrency_per_instance=3, ordered_output=True)(data=path).run(
        progress=False)
    assert res.read_lines() == [f"{i:03d}.txt" for i in range(40)]


# ---------------------------------------------------------------- entry script folder, argv, env, EntryScript


def test_unchanged_azure_entry_script_folder(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "helper.py").write_text("SUFFIX = '!'\n")
    (src / "score.py").write_text(textwrap.dedent("""
        import argparse, os
        from azureml_user.parallel_run import EntryScript
        import helper

        def init():
            global args, logger
            parser = argparse.ArgumentParser()
            parser.add_argument("--threshold", type=float)
            parser.add_argument("--model")
            args, _ = parser.parse_known_args()
            logger = EntryScript().logger
            logger.info("init threshold=%s", args.threshold)

        def run(mini_batch):
            es = EntryScript()
            print("processing", len(mini_batch))
            return [f"{os.path.basename(p)} {args.threshold} {es.agent_name} {os.environ['GREETING']}{helper.SUFFIX}"
                    for p in mini_batch]
    """))
    data = make_files(workdir, 5)
    job = parallel_run_function(
        name="score-files", inputs={"images": Input(type="uri_folder"), "threshold": Input(type="number", default=0.5)},
        outputs={"scores": Output(type="uri_file")}, input_data="${{inputs.images}}", mini_batch_size="2",
        max_concurrency_per_instance=2, environment_variables={"GREETING": "hi"},
        task=RunFunction(code="./src", entry_script="score.py",
                         program_arguments="--threshold ${{inputs.threshold}} --resource_monitor_interva 20",
                         append_row_to="${{outputs.scores}}"))
    res = job(images=Input(type="uri_folder", path=data), threshold=0.7).run(progress=False)
    assert res.status == "Completed", res.summary()
    lines = sorted(res.read_lines())
    assert len(lines) == 5
    assert all(" 0.7 process00" in ln and ln.endswith("hi!") for ln in lines)
    logs = res.logs_dir
    es_logs = os.listdir(os.path.join(logs, "user", "entry_script_log", "0"))
    assert es_logs and any("init threshold=0.7" in open(os.path.join(logs, "user", "entry_script_log", "0", f)).read()
                           for f in es_logs)
    stdout_dir = os.path.join(logs, "user", "stdout", "0")
    assert any("processing" in open(os.path.join(stdout_dir, f)).read() for f in os.listdir(stdout_dir))


def test_context_argument_when_run_takes_two_parameters(workdir):
    df = pd.DataFrame({"x": range(100)})
    job = parallel_run_function(name="ctx", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                mini_batch_size="400", task=RunFunction(run=with_context, append_row_to="${{outputs.o}}"))
    res = job(t=df).run(progress=False)
    rows = sorted(res.read_lines(), key=lambda s: int(s.split(":")[0]))
    assert res.status == "Completed"
    lower = 0
    for i, row in enumerate(rows):
        idx, low, dataset, n = row.split(":")
        assert int(idx) == i and int(low) == lower and dataset == "t"
        lower += int(n)
    assert lower == 100


def test_init_once_per_process_and_env_vars(workdir, monkeypatch):
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 30)
    job = file_job(pid_run, init=counting_init, mini_batch_size="1", max_concurrency_per_instance=2,
                   environment_variables={"MY_VAR": "v", "MARK_DIR": str(marks)})
    res = job(data=path).run(progress=False)
    lines = res.read_lines()
    pids = {ln.split()[0] for ln in lines}
    assert len(lines) == 30 and {ln.split()[1] for ln in lines} == {"v"}
    assert len(os.listdir(marks)) == 2 and pids == {f.split("-")[1] for f in os.listdir(marks)}
    assert "MY_VAR" not in os.environ


# ---------------------------------------------------------------- failures with real processes


def test_timeout_kills_worker_and_retries_on_a_fresh_one(workdir):
    path = make_files(workdir, 6)
    job = file_job(hang_on_3, mini_batch_size="1", max_concurrency_per_instance=2,
                   retry_settings={"max_retries": 1, "timeout": 1})
    t0 = time.monotonic()
    res = job(data=path).run(progress=False)
    assert time.monotonic() - t0 < 20
    assert res.status == "Completed"
    assert res.counts["failed"] == 1 and res.counts["succeeded"] == 5
    errs = res.errors
    assert list(errs["kind"]) == ["timeout", "timeout"] and list(errs["attempt"]) == [1, 2]
    assert res.counts["workers"] >= 3  # a fresh worker for the retry (none needed after the last)
    sys_err = os.path.join(res.logs_dir, "sys", "error", "0")
    assert "RUN_TIMEOUT" in "".join(open(os.path.join(sys_err, f)).read() for f in os.listdir(sys_err))


def test_worker_exit_fails_attempt_with_exit_code(workdir):
    path = make_files(workdir, 5)
    res = file_job(exit_on_2, mini_batch_size="1", max_concurrency_per_instance=2)(data=path).run(progress=False)
    assert res.status == "Completed" and res.counts["failed"] == 1
    errs = res.errors
    assert set(errs["kind"]) == {"worker_died"} and len(errs) == 3
    assert "exited with code 7" in errs["message"].iloc[0]


def test_sigkill_mid_batch_is_retried_and_nothing_is_lost(workdir):
    path = make_files(workdir, 8)
    res = file_job(sigkill_on_1_once, mini_batch_size="1", max_concurrency_per_instance=2)(data=path).run(
        progress=False)
    assert res.status == "Completed" and res.counts["failed"] == 0
    assert sorted(res.read_lines()) == [f"{i:03d}.txt" for i in range(8)]
    assert "SIGKILL" in res.errors["message"].iloc[0]


@pytest.mark.parametrize("init", [bad_init, exit_init])
def test_init_that_keeps_failing_stops_the_job(workdir, init):
    path = make_files(workdir, 3)
    t0 = time.monotonic()
    res = file_job(names, init=init, max_concurrency_per_instance=2)(data=path).run(progress=False)
    assert time.monotonic() - t0 < 30
    assert res.status == "Failed" and "init() failed" in res.reason
    assert res.counts["workers"] == 6  # 3 x process_count_per_node, then the node is not restarted
    if init is bad_init:
        assert "model file missing" in res.reason
        err_dir = os.path.join(res.logs_dir, "user", "error", "0")
        assert "model file missing" in "".join(open(os.path.join(err_dir, f)).read() for f in os.listdir(err_dir))


def _inner_failure(x):
    return 1 / x


def divide_by_zero(mini_batch):
    return [_inner_failure(0) for _ in mini_batch]


@pytest.mark.parametrize("backend", ["inline", "local"])
def test_user_traceback_points_at_user_code(workdir, backend):
    path = make_files(workdir, 2)
    res = file_job(divide_by_zero, retry_settings={"max_retries": 0}, backend=backend)(data=path).run(progress=False)
    err = res.errors.iloc[0]
    assert err["error_type"] == "ZeroDivisionError" and err["first_items"].endswith("001.txt")
    tb = err["traceback"]
    assert "prs_nb" + os.sep + "entry.py" not in tb
    assert "in divide_by_zero" in tb and "in _inner_failure" in tb and "return 1 / x" in tb


def test_summary_only_counts_without_output(workdir):
    path = make_files(workdir, 7)
    job = parallel_run_function(name="so", inputs={"data": Input(type="uri_folder")}, mini_batch_size="3",
                                task=RunFunction(run=names))
    res = job(data=path).run(progress=False)
    assert res.status == "Completed" and res.output_path is None
    assert res.counts == {**res.counts, "total": 3, "succeeded": 3, "items_total": 7, "items_succeeded": 7}


def rows_with_context(mini_batch, mini_batch_context):
    return [f"{mini_batch_context.global_row_index_lower_bound} {len(mini_batch)} {mini_batch.index[0]}"]


def rows_plain(mini_batch):
    return [f"{len(mini_batch)} {mini_batch['id'].iloc[0]}"]


@pytest.mark.parametrize("run", [rows_with_context, rows_plain])
def test_csv_rows_counted_by_driver_only_when_run_takes_context(workdir, run):
    pd.DataFrame({"id": range(5000), "v": [f"value {i}" for i in range(5000)]}).to_csv("t.csv", index=False)
    job = parallel_run_function(name="csvctx", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                mini_batch_size="8KB", max_concurrency_per_instance=2,
                                task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
    res = job(t="t.csv").run(progress=False)
    assert res.status == "Completed" and res.counts["total"] > 5
    assert res.counts["items_total"] == 5000  # one line per mini-batch: the rest are short-return failures
    if run is rows_with_context:
        rows = sorted(tuple(map(int, ln.split())) for ln in res.read_lines())
        lower = 0
        for lb, n, first_index in rows:
            assert lb == lower == first_index
            lower += n
        assert lower == 5000


def test_two_nodes_give_the_same_rows_and_use_node_ids(workdir):
    path = make_files(workdir, 20)
    job = file_job(names, mini_batch_size="1", max_concurrency_per_instance=1, instance_count=2)
    ref = job(data=path).run(backend="inline", progress=False)
    res = job(data=path).run(progress=False)
    assert sorted(res.read_lines()) == sorted(ref.read_lines()) == [f"{i:03d}.txt" for i in range(20)]
    assert set(res.batches["node_id"]) <= {0, 1} and res.counts["workers"] == 2
    assert os.path.isdir(os.path.join(res.logs_dir, "sys", "node", "1"))


def test_text_progress_bar_reaches_the_end(workdir):
    import io

    from prs_nb.progress import TextProgress

    buf = io.StringIO()
    path = make_files(workdir, 12)
    res = file_job(names, mini_batch_size="2")(data=path).run(progress=TextProgress("bar", file=buf))
    assert res.status == "Completed"
    text = buf.getvalue()
    assert "6/6" in text and "100%" in text and "Completed" in text


CANCEL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    def run(mini_batch):
        time.sleep(0.5)
        return [os.path.basename(p) for p in mini_batch]

    job = parallel_run_function(name="cancel", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=2,
                                task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
    print("STARTED", flush=True)
    res = job(d=sys.argv[1]).run(progress=False)
    print("STATUS", res.status, res.counts["succeeded"], res.counts["not_run"], flush=True)
    print("OUTPUT", len(res.read_lines()), flush=True)
""")


def test_ctrl_c_cancels_quickly_and_leaves_no_worker(workdir):
    import subprocess
    import sys

    import psutil

    path = make_files(workdir, 40)
    (workdir / "cancel.py").write_text(CANCEL_SCRIPT)
    proc = subprocess.Popen([sys.executable, "cancel.py", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().startswith("STARTED")
    deadline = time.monotonic() + 20
    workers = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [p for p in psutil.Process(proc.pid).children() if "prs_nb.engine.worker" in " ".join(p.cmdline())]
        time.sleep(0.05)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 2.5, err
    assert "STATUS Canceled" in out, out + err
    succeeded = int(out.split("STATUS Canceled")[1].split()[0])
    assert 0 < succeeded < 40
    assert f"OUTPUT {succeeded}" in out  # what was appended stays, exactly once
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in workers)


def test_raise_for_status_chains_the_users_error_and_errors_pickle(workdir):
    import pickle

    from prs_nb import JobFailedError, UserCodeError

    path = make_files(workdir, 3)
    res = file_job(divide_by_zero, retry_settings={"max_retries": 0}, mini_batch_error_threshold=0)(data=path).run(
        progress=False)
    with pytest.raises(JobFailedError) as info:
        res.raise_for_status()
    cause = info.value.__cause__
    assert isinstance(cause, UserCodeError) and cause.exc_type == "ZeroDivisionError"
    assert "return 1 / x" in str(cause) and cause.mini_batch_index is not None and cause.pid
    again = pickle.loads(pickle.dumps(cause))
    assert (again.remote_traceback, again.process_name, again.attempt) == (cause.remote_traceback,
                                                                          cause.process_name, cause.attempt)
    assert "mini_batch_error_threshold" in str(pickle.loads(pickle.dumps(info.value)))


def test_ray_backend_without_ray_is_a_clear_error(workdir, monkeypatch):
    import sys

    from prs_nb import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.delitem(sys.modules, "prs_nb.engine.ray_backend", raising=False)
    path = make_files(workdir, 1)
    with pytest.raises(ConfigError, match=r"backend='ray' needs Ray.*pip install 'prs_nb\[ray\]'"):
        file_job(names, is_deterministic=False)(data=path).run(backend="ray", progress=False)
    assert not os.path.exists(workdir / "prs_runs" / "t")  # nothing half-made


def marker_shutdown():
    with open(os.path.join(os.environ["MARK_DIR"], f"shutdown-{os.getpid()}"), "w") as fh:
        fh.write("1")


def failing_shutdown():
    raise RuntimeError("cleanup failed")


@pytest.mark.parametrize("backend", ["inline", "local"])
def test_shutdown_runs_once_per_worker_at_the_end(workdir, backend):
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 10)
    job = parallel_run_function(
        name="sd", inputs={"data": Input(type="uri_folder")}, mini_batch_size="1", max_concurrency_per_instance=2,
        environment_variables={"MY_VAR": "v", "MARK_DIR": str(marks)}, backend=backend,
        task=RunFunction(init=counting_init, run=pid_run, shutdown=marker_shutdown))
    res = job(data=path).run(progress=False)
    assert res.status == "Completed"
    inits = {f.split("-")[1] for f in os.listdir(marks) if f.startswith("init-")}
    shutdowns = {f.split("-")[1] for f in os.listdir(marks) if f.startswith("shutdown-")}
    assert inits == shutdowns and len(shutdowns) == (1 if backend == "inline" else 2)


def test_failing_shutdown_is_logged_and_the_job_still_completes(workdir):
    path = make_files(workdir, 4)
    job = parallel_run_function(name="sdf", inputs={"data": Input(type="uri_folder")}, mini_batch_size="2",
                                max_concurrency_per_instance=1,
                                task=RunFunction(run=names, shutdown=failing_shutdown))
    res = job(data=path).run(progress=False)
    assert res.status == "Completed"
    err_dir = os.path.join(res.logs_dir, "user", "error", "0")
    assert "cleanup failed" in "".join(open(os.path.join(err_dir, f)).read() for f in os.listdir(err_dir)
                                       if not f.startswith("."))


def slow_init():
    time.sleep(30)


def test_first_task_creation_timeout_fails_a_job_whose_init_never_ends(workdir):
    path = make_files(workdir, 2)
    t0 = time.monotonic()
    res = file_job(names, init=slow_init, program_arguments="--first_task_creation_timeout 2")(data=path).run(
        progress=False)
    assert time.monotonic() - t0 < 15
    assert res.status == "Failed" and res.limit == "first_task_creation_timeout"
    assert "no mini-batch started within --first_task_creation_timeout 2s" in res.reason


def use_helper(mini_batch):
    import cell_helper  # lives in the code folder

    return [cell_helper.VALUE for _ in mini_batch]


@pytest.mark.parametrize("backend", ["inline", "local"])
def test_functions_can_import_helpers_from_the_code_folder(workdir, backend):
    code = workdir / "code"
    code.mkdir()
    (code / "cell_helper.py").write_text("VALUE = 'from-helper'\n")
    path = make_files(workdir, 2)
    job = parallel_run_function(name="h", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
                                backend=backend,
                                task=RunFunction(code=str(code), run=use_helper, append_row_to="${{outputs.out}}"))
    res = job(data=path).run(progress=False)
    assert res.status == "Completed", res.summary()
    assert res.read_lines() == ["from-helper"] * 2
    import sys

    sys.modules.pop("cell_helper", None)


def test_unknown_run_overrides_and_file_runs_root_are_clear_errors(workdir):
    from prs_nb import ConfigError

    path = make_files(workdir, 1)
    with pytest.raises(ConfigError, match=r"unknown job setting\(s\) \['foo'\]"):
        file_job(names)(data=path).run(foo=1, progress=False)
    (workdir / "runs_file").write_text("x")
    with pytest.raises(ConfigError, match="runs_root .* is a file"):
        file_job(names, runs_root="runs_file")(data=path).run(progress=False)


def test_a_rejected_job_leaves_no_run_directory(workdir):
    from prs_nb import InputDataError

    with pytest.raises(InputDataError, match="does not exist"):
        file_job(names)(data="no_such_folder").run(progress=False)
    assert not (workdir / "prs_runs").exists()


def segfault_on_1(mini_batch):
    import ctypes

    if any(os.path.basename(p).startswith("001") for p in mini_batch):
        ctypes.string_at(0)  # a real segmentation fault in native code
    return names(mini_batch)


def test_segfault_is_named_and_its_native_traceback_is_in_stderr(workdir):
    path = make_files(workdir, 3)
    res = file_job(segfault_on_1, mini_batch_size="1", max_concurrency_per_instance=1,
                   retry_settings={"max_retries": 0})(data=path).run(progress=False)
    assert res.status == "Completed" and res.counts["failed"] == 1
    err = res.errors.iloc[0]
    assert err["kind"] == "worker_died" and "SIGSEGV" in err["message"] and "segmentation fault" in err["message"]
    stderr_dir = os.path.join(res.logs_dir, "user", "stderr", "0")
    dumps = "".join(open(os.path.join(stderr_dir, f)).read() for f in os.listdir(stderr_dir) if not f.startswith("."))
    assert "Segmentation fault" in dumps and "in segfault_on_1" in dumps


def test_raise_for_status_chains_a_worker_error_for_a_dead_worker(workdir):
    from prs_nb import JobFailedError, WorkerError

    path = make_files(workdir, 4)
    res = file_job(exit_on_2, mini_batch_size="1", max_concurrency_per_instance=1, mini_batch_error_threshold=0,
                   retry_settings={"max_retries": 0})(data=path).run(progress=False)
    with pytest.raises(JobFailedError) as info:
        res.raise_for_status()
    cause = info.value.__cause__
    assert isinstance(cause, WorkerError) and cause.kind == "worker_died" and "exited with code 7" in str(cause)
