"""The Ray backend on a real local Ray instance (2 CPUs, tests/conftest.py): same results as the
local and inline backends (oracle), timeouts that kill the actor, workers killed for real, init
policy, cancel, placement and the logs it leaves. The conformance table runs on Ray too
(tests/conformance/test_conformance_table.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from filetree import make_files

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb import events as ev

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.usefixtures("ray_cluster")


# ---------------------------------------------------------------- entry functions (module level: they pickle)
def names(mini_batch):
    return [os.path.basename(p) for p in mini_batch]


def mark_init():
    with open(os.path.join(os.environ["MARK_DIR"], f"init-{os.getpid()}"), "w") as fh:
        fh.write("1")


def hang_on_3(mini_batch):
    if any(p.endswith("003.txt") for p in mini_batch):
        if os.environ.get("HANG") == "libc":
            import ctypes

            ctypes.CDLL(None).sleep(60)  # native code: only killing the process stops it
        time.sleep(60)
    return names(mini_batch)


def hang_first_attempt_on_3(mini_batch):
    for p in mini_batch:
        if p.endswith("003.txt") and not os.path.exists(p + ".hung"):
            open(p + ".hung", "w").close()
            time.sleep(60)
    return names(mini_batch)


def crash_on_1(mini_batch):
    if any(p.endswith("001.txt") for p in mini_batch):
        how = os.environ["CRASH"]
        if how == "exit":
            os._exit(5)
        elif how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            import ctypes

            ctypes.string_at(0)
    return names(mini_batch)


def crash_in_init():
    os._exit(5)


def wait_to_be_killed(mini_batch):
    """Mini-batch 2 (first attempt) writes its pid and waits: the test kills this process from outside."""
    for p in mini_batch:
        if p.endswith("002.txt") and not os.path.exists(p + ".seen"):
            open(p + ".seen", "w").close()
            with open(os.path.join(os.environ["MARK_DIR"], "victim"), "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(60)
    return names(mini_batch)


def slow_names(mini_batch):
    time.sleep(0.3)
    return names(mini_batch)


# ---------------------------------------------------------------- helpers
def file_job(run, *, name="r", **kw):
    return parallel_run_function(
        name=name, inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
        task=RunFunction(run=run, init=kw.pop("init", None), append_row_to="${{outputs.out}}"),
        is_deterministic=False, **kw)


def comparable(res):
    """What must not depend on the backend: status, counts, per-mini-batch outcome and attempts, the
    failed attempts' kinds, the output rows."""
    b = res.batches
    return (res.status, res.limit, {k: v for k, v in res.counts.items() if k != "workers"},
            list(zip(b["index"], b["status"], b["attempts"], b["items"], b["returned"], strict=True)),
            sorted(zip(res.errors["index"], res.errors["attempt"], res.errors["kind"], strict=True)),
            sorted(res.read_lines()) if res.output_path else None)


# ---------------------------------------------------------------- oracle
@pytest.mark.parametrize("kind", ["dataframe", "dataframe_partitions", "csv", "parquet", "hive_csv", "files"])
def test_ray_writes_the_same_rows_as_inline_and_local(tmp_path, monkeypatch, kind):
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        from test_oracle_inputs import make_input
    finally:
        sys.path.pop(0)
    monkeypatch.chdir(tmp_path)
    value, itype, keys, run = make_input(tmp_path, kind)
    job = parallel_run_function(
        name=f"oracle_{kind}", inputs={"d": Input(type=itype)}, outputs={"o": Output()},
        mini_batch_size=None if keys else ("3" if itype == "uri_folder" else "2KB"), partition_keys=keys,
        max_concurrency_per_instance=2, is_deterministic=False,
        task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
    ref = job(d=value).run(backend="inline", progress=False)
    local = job(d=value).run(backend="local", progress=False)
    got = job(d=value).run(backend="ray", progress=False)
    assert got.backend == "ray" and got.status == "Completed", got.summary()
    assert comparable(got) == comparable(ref) == comparable(local)
    assert len(got.read_lines()) == (35 if kind == "files" else 600)


# ---------------------------------------------------------------- timeouts and killed workers
@pytest.mark.parametrize("hang", ["sleep", "libc"])
def test_a_timeout_kills_the_actor_and_a_fresh_one_runs_init(workdir, hang):
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 6)
    job = file_job(hang_on_3, init=mark_init, mini_batch_size="1", max_concurrency_per_instance=2,
                   retry_settings={"max_retries": 1, "timeout": 2},
                   environment_variables={"MARK_DIR": str(marks), "HANG": hang})
    t0 = time.monotonic()
    res = job(data=path).run(progress=False, backend="ray")
    assert time.monotonic() - t0 < 40
    assert res.status == "Completed" and res.counts["succeeded"] == 5 and res.counts["failed"] == 1, res.summary()
    errs = res.errors
    assert list(errs["kind"]) == ["timeout", "timeout"] and list(errs["index"]) == [3, 3]
    assert errs["pid"].iloc[0] != errs["pid"].iloc[1]  # the retry ran in another actor process
    assert "killed" in errs["message"].iloc[0]
    # init() ran once in every actor that got work, the retry's fresh actor included (a replacement
    # still starting when the job ends is stopped before its init())
    inits = {int(n.split("-")[1]) for n in os.listdir(marks)}
    assert set(errs["pid"]) <= inits and len(inits) <= res.counts["workers"] and res.counts["workers"] >= 3
    assert sorted(res.read_lines()) == [f"{i:03d}.txt" for i in range(6) if i != 3]
    local = job(data=path).run(progress=False, backend="local")
    assert comparable(res) == comparable(local)


def test_timeout_then_success_on_retry(workdir):
    path = make_files(workdir, 6)
    job = file_job(hang_first_attempt_on_3, mini_batch_size="1", max_concurrency_per_instance=2,
                   retry_settings={"max_retries": 2, "timeout": 2})
    res = job(data=path).run(progress=False, backend="ray")
    assert res.status == "Completed" and res.counts["failed"] == 0, res.summary()
    assert list(res.errors["kind"]) == ["timeout"]
    assert sorted(res.read_lines()) == [f"{i:03d}.txt" for i in range(6)]


@pytest.mark.parametrize("crash", ["exit", "sigkill", "segfault"])
def test_an_actor_that_dies_in_run_fails_the_attempt_and_it_is_retried(workdir, crash):
    path = make_files(workdir, 4)
    job = file_job(crash_on_1, mini_batch_size="1", max_concurrency_per_instance=1,
                   retry_settings={"max_retries": 1}, environment_variables={"CRASH": crash})
    res = job(data=path).run(progress=False, backend="ray")
    assert res.status == "Completed" and res.counts["failed"] == 1 and res.counts["succeeded"] == 3, res.summary()
    errs = res.errors
    assert list(errs["index"]) == [1, 1] and list(errs["kind"]) == ["worker_died", "worker_died"]
    assert "Ray actor on" in errs["message"].iloc[0] and "died" in errs["message"].iloc[0]
    assert sorted(res.read_lines()) == ["000.txt", "002.txt", "003.txt"]
    local = job(data=path).run(progress=False, backend="local")
    assert comparable(res) == comparable(local)
    with open(os.path.join(res.logs_dir, "sys", "node", "0", "_main.txt")) as fh:
        assert "Ray actor on" in fh.read()


def test_an_actor_killed_from_outside_is_replaced_and_its_mini_batch_retried(workdir):
    marks = workdir / "marks"
    marks.mkdir()
    path = make_files(workdir, 6)
    victim = marks / "victim"

    def killer():
        deadline = time.monotonic() + 60
        while not victim.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(int(victim.read_text()), signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    job = file_job(wait_to_be_killed, mini_batch_size="1", max_concurrency_per_instance=2,
                   environment_variables={"MARK_DIR": str(marks)})
    res = job(data=path).run(progress=False, backend="ray")
    t.join()
    assert res.status == "Completed" and res.counts["failed"] == 0, res.summary()
    assert list(res.errors["kind"]) == ["worker_died"] and list(res.errors["index"]) == [2]
    assert res.batches.set_index("index").loc[2, "attempts"] == 2
    assert sorted(res.read_lines()) == [f"{i:03d}.txt" for i in range(6)]  # nothing lost, nothing twice


def test_init_that_keeps_crashing_stops_after_3_per_worker_slot(workdir):
    path = make_files(workdir, 3)
    res = file_job(names, init=crash_in_init, max_concurrency_per_instance=1)(data=path).run(
        progress=False, backend="ray")
    assert res.status == "Failed" and res.limit == "init", res.summary()
    assert "init() failed 3 times (3 allowed per node)" in res.reason, res.reason


def test_cancel_from_another_thread_stops_within_2s(workdir):
    path = make_files(workdir, 60)
    state = {}

    class Grab:
        def on_event(self, e):
            if isinstance(e, ev.JobStarted):
                state["cancel"] = e.cancel
            elif isinstance(e, ev.BatchSucceeded) and "t" not in state:
                state["t"] = threading.Thread(target=lambda: (state.__setitem__("at", time.monotonic()),
                                                              state["cancel"]("Stop button pressed")))
                state["t"].start()

    res = file_job(slow_names, mini_batch_size="1", max_concurrency_per_instance=2)(data=path).run(
        progress=False, backend="ray", listeners=[Grab()])
    ended = time.monotonic()
    state["t"].join()
    assert res.status == "Canceled" and "Stop button pressed" in res.reason
    assert ended - state["at"] < 2.0
    assert len(res.read_lines()) == res.counts["succeeded"] >= 1


# ---------------------------------------------------------------- placement, logs, result
def second_names(mini_batch):
    time.sleep(1.0)  # long enough for every actor to start and take work
    return names(mini_batch)


def test_nodes_placement_logs_and_hosts(workdir):
    path = make_files(workdir, 12)
    job = file_job(second_names, mini_batch_size="1", max_concurrency_per_instance=2, instance_count=2)
    res = job(data=path).run(progress=False, backend="ray")
    assert res.status == "Completed" and res.counts["workers"] == 4, res.summary()
    import ray

    ip = ray.util.get_node_ip_address()
    b = res.batches
    assert set(b["host"]) == {ip}  # which machine ran each mini-batch
    assert set(b["node_id"]) == {0, 1}
    logs = res.logs_dir
    with open(os.path.join(logs, "sys", "master_role.txt")) as fh:
        master = fh.read()
    # one Ray node for two Azure nodes: said clearly, and where each went
    assert "instance_count=2 but the Ray cluster has 1 alive node(s)" in master
    assert f"node 0 -> Ray node {ip}" in master and f"node 1 -> Ray node {ip}" in master
    for node, process in set(zip(b["node_id"], b["process"], strict=True)):  # Azure's layout: per node, per process
        assert os.path.isfile(os.path.join(logs, "sys", "node", str(node), "_main.txt"))
        assert os.path.isfile(os.path.join(logs, "sys", "node", str(node), f"{process}.txt"))
        assert os.path.isfile(os.path.join(logs, "user", "stdout", str(node), f"{process}.stdout.txt"))
    with open(os.path.join(logs, "sys", "node", "0", "_main.txt")) as fh:
        assert f"on {ip}) ready" in fh.read()


def test_cli_runs_a_yaml_job_on_a_running_cluster(workdir, ray_cluster):
    path = make_files(workdir, 5)
    job = file_job(names, mini_batch_size="2")
    job.to_yaml(str(workdir / "job.yml"))
    address = ray_cluster.get_runtime_context().gcs_address
    env = os.environ.copy()
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "prs_nb", "run", "job.yml", "--input", f"data={path}",
                           "--backend", "ray", "--ray-address", address, "-q"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Completed" in proc.stdout
    run_dirs = [os.path.join(dp) for dp, dn, fn in os.walk(workdir / "prs_runs") if "job.yml" in fn]
    assert len(run_dirs) == 1
    with open(os.path.join(run_dirs[0], "logs", "sys", "master_role.txt")) as fh:
        assert "backend=ray" in fh.read()


def test_cli_ray_address_without_ray_backend_is_a_usage_error(workdir):
    proc = subprocess.run([sys.executable, "-m", "prs_nb", "run", "job.yml", "--ray-address", "auto"],
                          cwd=workdir, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 2 and "--ray-address only applies with --backend ray" in proc.stderr


# ---------------------------------------------------------------- more than one Ray node
MULTI_NODE = textwrap.dedent('''
    import json, os, sys, threading, time
    from ray.cluster_utils import Cluster
    # a head that runs no work (num_cpus 0, as on many real clusters) and two worker machines
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0}, connect=True)
    first = cluster.add_node(num_cpus=1)
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    import ray
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    def run(mini_batch):
        import ray, time
        time.sleep(0.5)
        return [f"{os.path.basename(p)} {ray.get_runtime_context().get_node_id()}" for p in mini_batch]

    job = parallel_run_function(name="multi", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
        mini_batch_size="1", max_concurrency_per_instance=1, instance_count=2,
        is_deterministic=False, task=RunFunction(run=run, append_row_to="${{outputs.out}}"))

    class RemoveSecondNode:
        """Once both Azure nodes have finished a mini-batch, the second Ray node goes away mid-run."""
        def __init__(self):
            self.nodes, self.thread = set(), None
        def on_event(self, e):
            if type(e).__name__ == "BatchSucceeded" and sys.argv[2] == "remove":
                self.nodes.add(e.node_id)
                if self.nodes == {0, 1} and self.thread is None:
                    self.thread = threading.Thread(target=lambda: (time.sleep(0.2), cluster.remove_node(second)))
                    self.thread.start()

    remover = RemoveSecondNode()
    t0 = time.time()
    res = job(data=sys.argv[1]).run(progress=False, backend="ray", listeners=[remover])
    took = time.time() - t0
    if remover.thread is not None:
        remover.thread.join()
    b = res.batches
    out = {"status": res.status, "counts": res.counts, "lines": sorted(res.read_lines()),
           "node_of_batch": {int(i): int(n) for i, n in zip(b["index"], b["node_id"])},
           "errors": sorted(res.errors["kind"]), "master": open(os.path.join(res.logs_dir, "sys", "master_role.txt")).read(),
           "ray_nodes": sorted(n["NodeID"] for n in ray.nodes()), "took": took,
           "removed": remover.thread is not None}
    print("RESULT " + json.dumps(out))
    ray.shutdown()
    cluster.shutdown()
''')


def _multi_node(workdir, mode):
    path = make_files(workdir, 16)
    script = workdir / "multi.py"
    script.write_text(MULTI_NODE)
    env = os.environ.copy()
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(script), path, mode], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=240)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[len("RESULT "):])


def test_two_ray_nodes_get_one_azure_node_each_and_a_cpu_less_head_none(workdir):
    out = _multi_node(workdir, "keep")
    assert out["status"] == "Completed" and out["counts"]["succeeded"] == 16
    assert "Ray placement (STRICT_SPREAD)" in out["master"]
    assert "alive node(s)" not in out["master"]  # no sharing notice
    # each Azure node's mini-batches ran on its own Ray node
    ray_node_of = {}
    for line in out["lines"]:
        name, ray_node = line.split()
        ray_node_of.setdefault(out["node_of_batch"][str(int(name[:3]))], set()).add(ray_node)
    assert len(ray_node_of) == 2 and all(len(s) == 1 for s in ray_node_of.values())
    assert ray_node_of[0] != ray_node_of[1]
    assert all(f"node {n} -> Ray node" in out["master"] for n in (0, 1))


def test_a_lost_ray_node_fails_its_attempts_and_they_are_retried_elsewhere(workdir):
    out = _multi_node(workdir, "remove")
    assert out["status"] == "Completed", out
    names_done = sorted(line.split()[0] for line in out["lines"])
    assert names_done == [f"{i:03d}.txt" for i in range(16)]  # nothing lost, nothing twice
    assert out["removed"] and "worker_died" in out["errors"], out
    assert out["took"] < 60, out


def test_an_address_where_no_cluster_listens_is_a_clear_error_in_seconds(workdir):
    path = make_files(workdir, 2)
    file_job(names).to_yaml(str(workdir / "job.yml"))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "prs_nb", "run", "job.yml", "--input", f"data={path}", "--backend",
                           "ray", "--ray-address", f"ray://127.0.0.1:{port}", "-q"], cwd=workdir, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"nothing answers at Ray address 'ray://127.0.0.1:{port}'" in proc.stderr
    assert "ray status" in proc.stderr and "Traceback" not in proc.stderr
