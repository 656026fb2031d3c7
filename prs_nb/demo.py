"""The demo job behind ``prs-nb demo``: score generated files in parallel, Azure-style.

It writes a folder of small "sensor reading" files, then runs an entry function that parses each
file and returns one result line per file (append_row). One file in 50 is corrupt, so the demo
also shows a failed mini-batch being retried and tolerated by ``mini_batch_error_threshold``.
"""

from __future__ import annotations

import os
import random

from prs_nb.api import parallel_run_function
from prs_nb.results import RunResult
from prs_nb.spec import Input, Output, RunFunction


def make_data(folder: str, n_files: int = 400, seed: int = 7) -> str:
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n_files):
        with open(os.path.join(folder, f"sensor_{i:04d}.txt"), "w", encoding="utf-8") as fh:
            if i % 50 == 49:
                fh.write("corrupt\n")
            else:
                fh.write("\n".join(f"{rng.gauss(20, 5):.3f}" for _ in range(100)) + "\n")
    return folder


THRESHOLD = 0.0  # set by init(), once per worker process


def init() -> None:
    global THRESHOLD
    THRESHOLD = 30.0


def run(mini_batch: list[str]) -> list[str]:
    out = []
    for path in mini_batch:
        with open(path, encoding="utf-8") as fh:
            values = [float(line) for line in fh if line.strip()]
        hot = sum(v > THRESHOLD for v in values)
        out.append(f"{os.path.basename(path)} {sum(values) / len(values):.3f} {hot}")
    return out


def run_demo(root: str = "prs_demo", n_files: int = 400, workers: int | None = None,
             progress: object = None) -> RunResult:
    data = make_data(os.path.join(root, "data"), n_files)
    job = parallel_run_function(
        name="sensor_demo",
        description="Mean and hot readings per sensor file (prs_nb demo)",
        inputs={"readings": Input(type="uri_folder")},
        outputs={"scores": Output(type="uri_file")},
        input_data="${{inputs.readings}}",
        mini_batch_size="10",
        max_concurrency_per_instance=workers,
        mini_batch_error_threshold=10,
        retry_settings={"max_retries": 1, "timeout": 60},
        task=RunFunction(init=init, run=run, append_row_to="${{outputs.scores}}"),
        runs_root=os.path.join(root, "runs"),
    )
    return job(readings=Input(type="uri_folder", path=data)).run(progress=progress)
