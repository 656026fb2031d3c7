"""What the live notebook display costs: a 20,000-mini-batch job in a real Jupyter kernel, with no
display vs with NotebookProgress (tqdm widget bar, status line, worker and error tables, Stop button,
every widget update travelling to the client as a comm message). Target: < 5% slower.

Runs alternate (none, notebook, none, notebook, ...) in one warm kernel; the figure is the ratio
of the best times (as timeit reports), the median ratio is printed too. The same job also runs
with ``%%parallel_run`` (which adds the magic's parsing and cell execution to the notebook display).

usage: python bench/notebook_overhead.py [--n 20000] [--repeat 5] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile

from jupyter_client.manager import start_new_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP = """
import os, time, json
from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.jupyter.progress import NotebookProgress
os.makedirs("files", exist_ok=True)
for i in range({n}):
    open(f"files/{{i:06d}}.txt", "w").write("x")
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
job = parallel_run_function(name="overhead", inputs={{"d": Input(type="uri_folder")}}, outputs={{"o": Output()}},
                            mini_batch_size="1", max_concurrency_per_instance=2, is_deterministic=False,
                            task=RunFunction(run=run, append_row_to="${{{{outputs.o}}}}"))(d="files")
class Timed:
    # measures the time the engine spends inside the display listener (every event, every redraw)
    def __init__(self, inner):
        self.inner, self.spent, self.calls = inner, 0.0, 0
    def on_event(self, event):
        t = time.perf_counter()
        self.inner.on_event(event)
        self.spent += time.perf_counter() - t
        self.calls += 1
def timed(kind, record=True):
    progress = False if kind == "none" else Timed(NotebookProgress("overhead"))
    t = time.perf_counter()
    r = job.run(progress=progress)
    dt = time.perf_counter() - t
    assert r.status == "Completed" and r.counts["succeeded"] == {n}, r.summary()
    if record:
        extra = {{"listener_s": progress.spent, "events": progress.calls}} if progress else {{}}
        print("TIMING", json.dumps({{"kind": kind, "seconds": dt, **extra}}))
"""

MAGIC = """%%parallel_run --input files --mini_batch_size 1 -c 2 --append_row_to --name overhead_magic --is_deterministic false -o r
import os
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None, help="append the section to this Markdown file")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="prs-nb-overhead-")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    km, kc = start_new_kernel(kernel_name="python3", cwd=work, env=env)
    out: list[str] = []

    def run(code: str) -> None:
        reply = kc.execute_interactive(code, timeout=600, output_hook=lambda m: out.append(
            m["content"].get("text", "") if m["msg_type"] == "stream" else ""))
        if reply["content"]["status"] != "ok":
            raise SystemExit(f"kernel error: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")

    try:
        run(SETUP.format(n=a.n))
        run("%load_ext prs_nb")
        run('timed("none", False); timed("notebook", False)')  # warm-up: imports, first widgets, page cache
        for i in range(a.repeat):
            # swap the order every round: whichever runs first after the magic's cell pays for its cleanup
            for kind in (("none", "notebook") if i % 2 == 0 else ("notebook", "none")):
                run(f'timed("{kind}")')
            run("_t0 = time.perf_counter()")
            run(MAGIC)
            run('print("TIMING", json.dumps({"kind": "magic", "seconds": time.perf_counter() - _t0}))')
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        shutil.rmtree(work, ignore_errors=True)
    times: dict[str, list[float]] = {"none": [], "notebook": [], "magic": []}
    listener: list[float] = []
    events = 0
    for m in re.finditer(r"TIMING (\{.*?\})", "".join(out)):
        d = json.loads(m.group(1))
        times[d["kind"]].append(d["seconds"])
        if "listener_s" in d:
            listener.append(d["listener_s"] / d["seconds"])
            events = d["events"]
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = best["notebook"] / best["none"]
    lines = [
        "",
        "## 5. Live notebook display overhead",
        "",
        f"{a.n:,} one-file mini-batches, trivial run(), 2 workers, append_row, in one warm ipykernel "
        f"(driven with jupyter_client; every widget update goes to the client as a comm message). "
        f"Best and median of {a.repeat} runs each, interleaved (order swapped every round). Command: "
        "`python bench/notebook_overhead.py --out bench/RESULTS.md` (appends this section; bench.py rewrites the "
        "file, so run it after bench.py).",
        "",
        "| display | best (s) | median (s) | vs no display (best) |",
        "|---|---:|---:|---:|",
        f"| none (`progress=False`) | {best['none']:.2f} | {med['none']:.2f} | 1.00x |",
        f"| NotebookProgress (bar, status, workers, errors, Stop) | {best['notebook']:.2f} | {med['notebook']:.2f} | "
        f"{ratio:.3f}x |",
        f"| `%%parallel_run` cell (magic + same display; timed around the cell) | {best['magic']:.2f} | "
        f"{med['magic']:.2f} | {best['magic'] / best['none']:.3f}x |",
        "",
        f"Time the engine spent inside the display's listener (all {events:,} events and every redraw, "
        f"measured around each call): **{statistics.median(listener) * 100:.1f}%** of the job's wall time "
        f"(median; max {max(listener) * 100:.1f}%) - the direct cost, target < 5%.",
        "",
        f"Wall-time ratio: {(ratio - 1) * 100:+.1f}% best vs best, "
        f"{(med['notebook'] / med['none'] - 1) * 100:+.1f}% median vs median. On this shared 2-core machine "
        "run-to-run noise (about +-15%) is larger than the display's cost, so the wall-time ratio alone cannot "
        "resolve 5%; the listener time above can. The display counts events on the scheduler thread and redraws "
        "only on the engine's throttled Progress events (every 0.25 s), on failures (same throttle) and at the end.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"best": best, "median": med, "all": times}))
    if a.out:
        with open(a.out, "a", encoding="utf-8") as fh:
            fh.write(text)
    sys.exit(0)


if __name__ == "__main__":
    main()
