"""The Ray backend side by side with the local backend and with plain Ray, in one run (issue 7).

One local Ray instance (2 CPUs) is started once, before any clock; every runner uses 2 workers.

1. Overhead per mini-batch: trivial one-item mini-batches, N = 400 and N = 2,000; the marginal cost
   (t(2000) - t(400)) / 1600 per mini-batch excludes start-up. Peers: prs_nb local, plain Ray tasks
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


def prs_job(folder: str, root: str, backend: str, run=work.prs_trivial, size: str = "1") -> float:
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    job = parallel_run_function(
        name=f"bench_{backend}", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
        mini_batch_size=size, max_concurrency_per_instance=WORKERS, runs_root=os.path.join(root, "runs"),
        is_deterministic=False, task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
    t0 = time.perf_counter()
    res = job(d=folder).run(progress=False, backend=backend)
    dt = time.perf_counter() - t0
    assert res.status == "Completed", res.summary()
    return dt


def ray_tasks(paths: list[str]) -> float:
    import ray

    f = ray.remote(num_cpus=1)(work.trivial)
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
    t0 = time.perf_counter()  # actor start-up is inside the clock, as it is for prs_nb's
    actors = [cls.remote() for _ in range(WORKERS)]
    pool = ActorPool(actors)
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
        small, large = 400, 2000
        folders = {n: make_files(root, n) for n in (2, small, large)}
        paths = {n: sorted(os.path.join(folders[n], f) for f in os.listdir(folders[n])) for n in (small, large)}
        runners = {
            "prs_nb, backend local": lambda n: prs_job(folders[n], root, "local"),
            "prs_nb, backend ray (2 actors)": lambda n: prs_job(folders[n], root, "ray"),
            "plain Ray tasks (ray.get of 1 task per item)": lambda n: ray_tasks(paths[n]),
            "plain Ray ActorPool.map_unordered (2 actors)": lambda n: ray_actor_pool(paths[n]),
        }
        print("1. overhead per mini-batch", flush=True)
        rows = []
        for name, fn in runners.items():
            fn(small)  # warm: imports, the worker pool's processes
            t_small = best(lambda fn=fn: fn(small))
            t_large = best(lambda fn=fn: fn(large))
            per = (t_large - t_small) / (large - small)
            rows.append((name, t_small, t_large, per))
            print(f"  {name}: {t_small:.2f} s / {t_large:.2f} s, {per * 1e3:.3f} ms per mini-batch", flush=True)
        print("2. start-up", flush=True)
        job_local = best(lambda: prs_job(folders[2], root, "local"), 5)
        job_ray = best(lambda: prs_job(folders[2], root, "ray"), 5)
        print(f"  2-mini-batch job: local {job_local:.2f} s, ray {job_ray:.2f} s; ray.init {init_s:.2f} s", flush=True)
        print("3. CPU-bound", flush=True)
        cpu = make_files(os.path.join(root, "cpu"), 64)
        cpu_local = best(lambda: prs_job(cpu, root, "local", work.burn_50ms), 2)
        cpu_ray = best(lambda: prs_job(cpu, root, "ray", work.burn_50ms), 2)
        print(f"  64 x 50 ms: local {cpu_local:.2f} s, ray {cpu_ray:.2f} s", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    local_per = rows[0][3]
    ray_per = rows[1][3]
    lines = [
        "",
        "## 6. The Ray backend",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')}, Ray {ray.__version__}, one local Ray instance with 2 CPUs "
        "started before the clocks; 2 workers everywhere. Command: `python bench/ray_backend.py` (appends this "
        "section; run it after bench.py).",
        "",
        f"Overhead per mini-batch (trivial one-item mini-batches; (t({large:,}) - t({small})) / {large - small:,}, "
        "so start-up cancels out; best of 3):",
        "",
        f"| runner | {small} mini-batches (s) | {large:,} mini-batches (s) | ms per mini-batch | vs prs_nb ray |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ts, tl, per in rows:
        lines.append(f"| {name} | {ts:.2f} | {tl:.2f} | {per * 1e3:.3f} | {per / ray_per:.2f}x |")
    lines += [
        "",
        "Start-up and CPU-bound work:",
        "",
        "| measure | local (s) | ray (s) |",
        "|---|---:|---:|",
        f"| a whole 2-mini-batch job, trivial entry (warm interpreter; ray: a running Ray instance) | "
        f"{job_local:.2f} | {job_ray:.2f} |",
        f"| starting a local Ray instance (`ray.init`, fresh interpreter) | | {init_s:.2f} |",
        f"| 64 mini-batches x 50 ms pure-Python CPU, 2 workers (best of 2) | {cpu_local:.2f} | {cpu_ray:.2f} |",
        "",
        f"The Ray backend costs **{ray_per * 1e3:.2f} ms per mini-batch** ({ray_per / local_per:.0f}x the local "
        "backend's): each actor has one call in flight at a time (Ray fails every call queued on an actor that "
        "dies and can lose a finished call's reply, so queueing would lose or repeat mini-batches on a crash), "
        "so every mini-batch pays a Ray round trip. It is meant for mini-batches of seconds, where this is noise "
        "(the CPU-bound row); for many tiny mini-batches, use a larger mini_batch_size or the local backend.",
    ]
    with open(args.out, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
