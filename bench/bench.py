"""prs_nb side by side with its peers, in one run on one machine; writes bench/RESULTS.md.

Peers: multiprocessing.Pool (imap_unordered, chunksize=1), concurrent.futures.ProcessPoolExecutor,
joblib, mpire (bench extra: pip install -e '.[bench]'). Targets (issue 2, 2 cores):

1. 20,000 one-item mini-batches of trivial work: rate >= ProcessPoolExecutor's and mpire's, aiming at
   half of Pool.imap_unordered(chunksize=1) - with prs_nb's retries, timeouts, journal and logs on.
2. 64 mini-batches x 50 ms of pure-Python CPU: speedup from 1 to 2 workers >= 1.9.
3. A 500 MB CSV through a trivial run() on 2 workers: wall time below one-process pandas.read_csv
   of the whole file, peak memory of all processes <= 25% of read_csv's.
4. Cold start to the first result <= 1 s; a whole 2-mini-batch job on a trivial entry <= 1.5 s.

usage: python bench/bench.py [--quick] [--csv-mb 500] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import work  # noqa: E402  (module-level functions importable by every peer's workers)

WORKERS = 2


def run_measured(cmd: list[str]) -> tuple[float, int, str]:
    """Run ``cmd`` in a fresh process; return (wall seconds, peak RSS of its whole process tree, stdout).

    The tree's RSS is sampled every 20 ms (psutil) and summed over the process and all descendants."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(0.02)
    out, err = proc.communicate()
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}): {err[-2000:]}")
    return dt, peak, out


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


# ---------------------------------------------------------------- 1. throughput


def make_files(root: str, n: int) -> str:
    d = os.path.join(root, f"files_{n}")
    if not os.path.isdir(d):
        os.makedirs(d)
        for i in range(n):
            with open(os.path.join(d, f"{i:06d}.txt"), "w") as fh:
                fh.write("x")
    return d


def bench_throughput(root: str, n: int) -> list[tuple[str, float, float]]:
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    folder = make_files(root, n)
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    rows = []

    def pool() -> int:
        with mp.get_context("spawn").Pool(WORKERS) as p:
            return sum(1 for _ in p.imap_unordered(work.trivial, paths, chunksize=1))

    def ppe() -> int:
        with cf.ProcessPoolExecutor(WORKERS, mp_context=mp.get_context("spawn")) as ex:
            return sum(1 for _ in ex.map(work.trivial, paths))

    def joblib_() -> int:
        from joblib import Parallel, delayed

        return len(Parallel(n_jobs=WORKERS, batch_size=1)(delayed(work.trivial)(p) for p in paths))

    def mpire_() -> int:
        from mpire import WorkerPool

        with WorkerPool(n_jobs=WORKERS, start_method="spawn") as p:
            return len(p.map_unordered(work.trivial, paths, chunk_size=1))

    def prs() -> int:
        job = parallel_run_function(
            name="bench_throughput", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
            mini_batch_size="1", max_concurrency_per_instance=WORKERS, runs_root=os.path.join(root, "runs"),
            is_deterministic=False,  # measure the run, never a reuse-cache hit
            task=RunFunction(run=work.prs_trivial, append_row_to="${{outputs.o}}"))
        res = job(d=folder).run(progress=False)
        assert res.status == "Completed" and res.counts["succeeded"] == n, res.summary()
        return res.counts["succeeded"]

    for name, fn in [("multiprocessing.Pool imap_unordered chunksize=1", pool),
                     ("concurrent.futures.ProcessPoolExecutor", ppe),
                     ("joblib (loky, batch_size=1)", joblib_),
                     ("mpire map_unordered chunk_size=1", mpire_),
                     ("prs_nb (local, mini_batch_size=1, append_row, logs, journal)", prs)]:
        try:
            dt, count = timed(fn)
            assert count == n
            rows.append((name, dt, n / dt))
        except Exception as exc:  # a missing peer must not hide the others
            rows.append((f"{name} [failed: {type(exc).__name__}: {exc}]", float("nan"), float("nan")))
        print(f"  {rows[-1][0]}: {rows[-1][2]:,.0f} mini-batches/s", flush=True)
    return rows


# ---------------------------------------------------------------- 2. CPU scaling


def bench_scaling(root: str, repeat: int = 3) -> dict[str, float]:
    """Best of ``repeat`` wall times (as timeit does) for prs_nb and multiprocessing.Pool, 1 and 2 workers."""
    from prs_nb import RunFunction, parallel_run_function

    out: dict[str, float] = {}
    for _ in range(repeat):
        for workers in (1, 2):
            job = parallel_run_function(
                name="bench_cpu", mini_batch_size="1", max_concurrency_per_instance=workers,
                runs_root=os.path.join(root, "runs"), is_deterministic=False,
                task=RunFunction(run=work.burn_50ms, program_arguments="--rank_mini_batch_count 64"))
            dt, res = timed(job.run, progress=False)
            assert res.status == "Completed" and res.counts["total"] == 64, res.summary()
            out[f"prs_nb_{workers}"] = min(dt, out.get(f"prs_nb_{workers}", dt))
            with mp.get_context("spawn").Pool(workers) as p:
                t0 = time.perf_counter()
                list(p.imap_unordered(work.burn_50ms_item, range(64), chunksize=1))
                dt = time.perf_counter() - t0
            out[f"pool_{workers}"] = min(dt, out.get(f"pool_{workers}", dt))
    return out


# ---------------------------------------------------------------- 3. big CSV


def make_csv(root: str, mb: int) -> str:
    path = os.path.join(root, f"big_{mb}MB.csv")
    if os.path.exists(path):
        return path
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows_per_chunk = 200_000
    with open(path, "w") as fh:
        header = True
        while fh.tell() < mb * 1024 * 1024:
            df = pd.DataFrame({"id": rng.integers(0, 10**9, rows_per_chunk), "a": rng.random(rows_per_chunk),
                               "b": rng.random(rows_per_chunk), "c": rng.integers(0, 1000, rows_per_chunk),
                               "name": rng.choice(["alpha", "beta", "gamma", "delta"], rows_per_chunk)})
            df.to_csv(fh, index=False, header=header)
            header = False
    return path


def bench_csv(root: str, mb: int, repeat: int = 5) -> dict[str, float]:
    """Best of ``repeat`` for each runner (wall time; peak RSS of that same run)."""
    path = make_csv(root, mb)
    out: dict[str, float] = {"bytes": os.path.getsize(path)}
    # both in fresh processes, measured from outside (wall time and peak RSS of the process tree)
    for _ in range(repeat):
        dt, peak, _ = run_measured([sys.executable, "-c", f"import pandas as pd; print(len(pd.read_csv({path!r})))"])
        if dt < out.get("read_csv_s", float("inf")):
            out["read_csv_s"], out["read_csv_peak"] = dt, peak
        dt, peak, text = run_measured([sys.executable, os.path.join(HERE, "csv_job.py"), path,
                                       os.path.join(root, "runs"), str(WORKERS)])
        if dt < out.get("prs_s", float("inf")):
            out["prs_s"], out["prs_peak"] = dt, peak
        vals = dict(line.split("=", 1) for line in text.strip().splitlines() if "=" in line)
        out["prs_rows"] = float(vals["rows"])
        out["prs_batches"] = float(vals["batches"])
    return out


# ---------------------------------------------------------------- 4. cold start


def bench_cold_start(root: str) -> dict[str, float]:
    script = os.path.join(HERE, "cold_start.py")
    r = subprocess.run([sys.executable, script, os.path.join(root, "cold")], check=True, capture_output=True,
                       text=True)
    vals = dict(line.split("=", 1) for line in r.stdout.strip().splitlines() if "=" in line)
    return {k: float(v) for k, v in vals.items()}


# ---------------------------------------------------------------- report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--csv-mb", type=int, default=500)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--data", default=os.path.join(HERE, "_data"))
    args = ap.parse_args()
    if args.quick:
        args.n, args.csv_mb = 2000, 50
    os.makedirs(args.data, exist_ok=True)
    shutil.rmtree(os.path.join(args.data, "runs"), ignore_errors=True)
    print("1. throughput", flush=True)
    thr = bench_throughput(args.data, args.n)
    print("2. scaling", flush=True)
    sc = bench_scaling(args.data)
    print(f"  {sc}", flush=True)
    print("3. csv", flush=True)
    csv = bench_csv(args.data, args.csv_mb)
    print(f"  {csv}", flush=True)
    print("4. cold start", flush=True)
    cold = bench_cold_start(args.data)
    print(f"  {cold}", flush=True)
    shutil.rmtree(os.path.join(args.data, "runs"), ignore_errors=True)

    rate = {name.split(" ")[0]: r for name, _dt, r in thr}
    prs_rate = thr[-1][2]
    pool_rate = thr[0][2]
    ppe_rate = thr[1][2]
    mpire_rate = thr[3][2]
    lines = [
        "# prs_nb benchmarks",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} with {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}; all peers in the "
        f"same run, {WORKERS} workers each. Command: `python bench/bench.py"
        f"{' --quick' if args.quick else ''}`.",
        "",
        f"## 1. {args.n:,} one-item mini-batches of trivial work",
        "",
        "| runner | seconds | mini-batches/s | vs prs_nb |",
        "|---|---:|---:|---:|",
    ]
    for name, dt, r in thr:
        lines.append(f"| {name} | {dt:.2f} | {r:,.0f} | {r / prs_rate:.2f}x |")
    lines += [
        "",
        f"prs_nb / ProcessPoolExecutor = **{prs_rate / ppe_rate:.2f}** (target >= 1), prs_nb / mpire = "
        f"**{prs_rate / mpire_rate:.2f}** (target >= 1), prs_nb / Pool = **{prs_rate / pool_rate:.2f}** "
        "(aim >= 0.5). prs_nb does more per mini-batch: attempt tracking, timeout deadlines, the journal, "
        "the append_row output, processed_mini-batches.csv and per-process logs.",
        "",
        "## 2. 64 mini-batches x 50 ms pure-Python CPU",
        "",
        "| runner | 1 worker (s) | 2 workers (s) | speedup |",
        "|---|---:|---:|---:|",
        f"| prs_nb | {sc['prs_nb_1']:.2f} | {sc['prs_nb_2']:.2f} | **{sc['prs_nb_1'] / sc['prs_nb_2']:.2f}** |",
        f"| multiprocessing.Pool | {sc['pool_1']:.2f} | {sc['pool_2']:.2f} | {sc['pool_1'] / sc['pool_2']:.2f} |",
        "",
        "Target: prs_nb speedup >= 1.9. Best of 3 runs each; prs_nb's timings include starting the workers, "
        "the Pool's do not (its pool is started before the clock).",
        "",
        f"## 3. {csv['bytes'] / 2**20:.0f} MB CSV, trivial run(), {WORKERS} workers",
        "",
        "| runner | seconds | peak RSS, all processes (MB) |",
        "|---|---:|---:|",
        f"| pandas.read_csv, one process | {csv['read_csv_s']:.2f} | {csv['read_csv_peak'] / 2**20:,.0f} |",
        f"| prs_nb, mini_batch_size 4MB ({csv['prs_batches']:.0f} mini-batches, {csv['prs_rows']:,.0f} rows) | "
        f"{csv['prs_s']:.2f} | {csv['prs_peak'] / 2**20:,.0f} |",
        "",
        f"Wall-time ratio prs_nb / read_csv = **{csv['prs_s'] / csv['read_csv_s']:.2f}** (target < 1); "
        f"memory ratio = **{csv['prs_peak'] / csv['read_csv_peak']:.2f}** (target <= 0.25). Peak RSS is sampled "
        "every 20 ms over the driver and all workers (the read_csv figure includes its Python process). Best of 5 "
        "fresh-process runs each, alternating.",
        "",
        "## 4. Start-up",
        "",
        "| measure | seconds | target |",
        "|---|---:|---:|",
        f"| cold start to the first result (fresh interpreter: import, spawn workers, init, first run()) | "
        f"{cold['first_result_s']:.2f} | <= 1.0 |",
        f"| a whole 2-mini-batch job on a trivial entry (fresh interpreter) | {cold['whole_job_s']:.2f} | <= 1.5 |",
        f"| the same job again in a warm interpreter | {cold['warm_job_s']:.2f} | |",
        "",
        "## Notes",
        "",
        "* Timings on this 2-core machine vary by 10-20% between runs (the peers' too: Pool's rate has ranged "
        "from 23,000 to 56,000/s). The CSV wall-time ratio is the closest to its target: over the last runs of "
        "the session it measured 0.90-1.10, so treat it as 'about even with read_csv, at a quarter of the "
        "memory' rather than a safe margin.",
        "* What made the difference: bundled dispatch sized to ~20 ms of queued work per worker; one persistent "
        "epoll set; the driver never blocking on a send; CSV ranges cut without counting rows unless run() takes "
        "the context; glibc malloc thresholds in workers (reused slice buffers); workers that exit without "
        "module teardown.",
        "",
    ]
    _ = rate
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
