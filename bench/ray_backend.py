"""The Ray backend side by side with the local backend and with plain Ray, in one run (issue 7).

One local Ray instance (2 CPUs) is started once, before any clock; every runner uses 2 workers.

1. Overhead per mini-batch: 2,000 trivial one-item mini-batches, timed over the steady phase (first
   mini-batch start to last end), so start-up is left out. Peers: prs_nb local, plain Ray tasks
   (``ray.get([f.remote(p) ...])``) and a Ray ``ActorPool.map`` of 2 actors (the closest plain-Ray
   shape to prs_nb's actors).
2. Start-up: a whole 2-mini-batch job (trivial entry) on a warm Ray instance, and starting the Ray
   instance itself (``ray.init`` in a fresh interpreter).
3. 64 mini-batches x 50 ms pure-Python CPU on 2 workers: the Ray backend against local.

usage: python bench/ray_backend.py [--out bench/RESULTS.md]   (appends section 6; run after bench.py)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import work  # noqa: E402

WORKERS = 2


def make_files(root: str, n: int) -> str:
    d = os.path.join(root, f"files_{n}")
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        with open(os.path.join(d, f"{i:06d}.txt"), "w") as fh:
            fh.write("x")
    return d


def prs_job(folder: str, root: str, backend: str, run=work.prs_trivial, size: str = "1") -> tuple[float, float]:
    """(wall seconds of the whole job, seconds from the first mini-batch's start to the last one's end)."""
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    job = parallel_run_function(
        name=f"bench_{backend}", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
        mini_batch_size=size, max_concurrency_per_instance=WORKERS, runs_root=os.path.join(root, "runs"),
        is_deterministic=False, task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
    t0 = time.perf_counter()
    res = job(d=folder).run(progress=False, backend=backend)
    dt = time.perf_counter() - t0
    assert res.status == "Completed", res.summary()
    tl = res.timeline
    return dt, float(tl["end"].max() - tl["start"].min())


def ray_tasks(paths: list[str]) -> float:
    import ray

    f = ray.remote(num_cpus=1)(work.trivial)
    ray.get([f.remote(p) for p in paths[:50]])  # the task workers are up before the clock
    t0 = time.perf_counter()
    out = ray.get([f.remote(p) for p in paths])
    assert len(out) == len(paths)
    return time.perf_counter() - t0


class _Trivial:
    def run(self, path: str) -> str:
        return work.trivial(path)


def ray_actor_pool(paths: list[str]) -> float:
    import ray
    from ray.util import ActorPool

    cls = ray.remote(num_cpus=1)(_Trivial)
    actors = [cls.remote() for _ in range(WORKERS)]
    ray.get([a.run.remote("warm") for a in actors])  # started before the clock, like the steady phase
    pool = ActorPool(actors)
    t0 = time.perf_counter()
    out = list(pool.map_unordered(lambda a, p: a.run.remote(p), paths))
    dt = time.perf_counter() - t0
    for a in actors:
        ray.kill(a)
    assert len(out) == len(paths)
    return dt


def best(fn, repeat: int = 3) -> float:
    return min(fn() for _ in range(repeat))


def ray_init_seconds() -> float:
    code = ("import time; t=time.perf_counter(); import ray; ray.init(address='local', num_cpus=2, "
            "include_dashboard=False, log_to_driver=False); print(time.perf_counter()-t); ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()
    import ray

    print("ray.init in a fresh interpreter", flush=True)
    init_s = min(ray_init_seconds() for _ in range(2))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    root = tempfile.mkdtemp(prefix="prs_nb_ray_bench_")
    try:
        n = 2000
        folders = {k: make_files(root, k) for k in (2, n)}
        paths = sorted(os.path.join(folders[n], f) for f in os.listdir(folders[n]))
        print("1. overhead per mini-batch", flush=True)
        rows = []
        for name, backend in (("prs_nb, backend local (2 worker processes)", "local"),
                              ("prs_nb, backend ray (2 actors)", "ray")):
            prs_job(folders[2], root, backend)  # warm: imports, Ray's worker pool
            runs = [prs_job(folders[n], root, backend) for _ in range(3)]
            wall = min(r[0] for r in runs)
            steady = min(r[1] for r in runs)
            rows.append((name, wall, steady))
            print(f"  {name}: whole job {wall:.2f} s, steady phase {steady:.2f} s", flush=True)
        for name, fn in (("plain Ray tasks (1 task per item)", ray_tasks),
                         ("plain Ray ActorPool.map_unordered (2 actors)", ray_actor_pool)):
            steady = min(fn(paths) for _ in range(3))
            rows.append((name, float("nan"), steady))
            print(f"  {name}: {steady:.2f} s", flush=True)
        print("2. start-up", flush=True)
        job_local = min(prs_job(folders[2], root, "local")[0] for _ in range(5))
        job_ray = min(prs_job(folders[2], root, "ray")[0] for _ in range(5))
        print(f"  2-mini-batch job: local {job_local:.2f} s, ray {job_ray:.2f} s; ray.init {init_s:.2f} s", flush=True)
        print("3. CPU-bound", flush=True)
        cpu = make_files(os.path.join(root, "cpu"), 64)
        cpu_local = min((prs_job(cpu, root, "local", work.burn_50ms) for _ in range(2)), key=lambda r: r[0])
        cpu_ray = min((prs_job(cpu, root, "ray", work.burn_50ms) for _ in range(2)), key=lambda r: r[0])
        print(f"  64 x 50 ms: local {cpu_local}, ray {cpu_ray}", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    ray_ms = rows[1][2] / n * 1e3
    local_ms = rows[0][2] / n * 1e3
    lines = [
        "",
        "## 6. The Ray backend",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')}, Ray {ray.__version__}, one local Ray instance with 2 CPUs "
        "started before the clocks; 2 workers everywhere. Command: `python bench/ray_backend.py` (appends this "
        "section; run it after bench.py).",
        "",
        f"Overhead per mini-batch: {n:,} one-item mini-batches of trivial work. *Steady phase*: from the first "
        "mini-batch's start to the last one's end (prs_nb: from `result.timeline`; plain Ray: after its workers "
        "are up), so worker start-up is left out; best of 3.",
        "",
        "| runner | whole job (s) | steady phase (s) | ms per mini-batch | mini-batches/s | vs prs_nb ray |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, wall, steady in rows:
        whole = "" if wall != wall else f"{wall:.2f}"
        lines.append(f"| {name} | {whole} | {steady:.2f} | {steady / n * 1e3:.3f} | {n / steady:,.0f} | "
                     f"{rows[1][2] / steady:.2f}x |")
    lines += [
        "",
        "Start-up and CPU-bound work:",
        "",
        "| measure | local (s) | ray (s) |",
        "|---|---:|---:|",
        f"| a whole 2-mini-batch job, trivial entry (warm interpreter; ray: a running Ray instance) | "
        f"{job_local:.2f} | {job_ray:.2f} |",
        f"| starting a local Ray instance (`ray.init`, fresh interpreter) | | {init_s:.2f} |",
        f"| 64 mini-batches x 50 ms pure-Python CPU, 2 workers: whole job (best of 2) | {cpu_local[0]:.2f} | "
        f"{cpu_ray[0]:.2f} |",
        f"| the same, steady phase | {cpu_local[1]:.2f} | {cpu_ray[1]:.2f} |",
        "",
        f"The Ray backend costs **{ray_ms:.2f} ms per mini-batch** in the steady phase ({ray_ms / local_ms:.0f}x "
        f"the local backend's {local_ms:.3f} ms) and **{job_ray:.1f} s to start** a job's actors on a running "
        "instance. Each actor has one call in flight at a time (Ray fails every call queued on an actor that "
        "dies and can lose a finished call's reply, so queueing would lose or repeat mini-batches on a crash), "
        "so every mini-batch pays a Ray round trip. It is meant for mini-batches of seconds, where this is noise "
        "(the CPU-bound rows); for many tiny mini-batches, use a larger mini_batch_size or the local backend.",
    ]
    with open(args.out, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
