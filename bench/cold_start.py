"""Cold start, measured in a fresh interpreter: time to the first result, and a whole 2-mini-batch job."""

import os
import sys
import time

T0 = time.perf_counter()
root = sys.argv[1]
os.makedirs(root, exist_ok=True)

from prs_nb import Input, Output, RunFunction, events, parallel_run_function  # noqa: E402


def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]


class FirstResult:
    def __init__(self):
        self.t = None

    def on_event(self, e):
        if self.t is None and isinstance(e, events.BatchSucceeded):
            self.t = time.perf_counter()


for i in range(2):
    with open(os.path.join(root, f"f{i}.txt"), "w") as fh:
        fh.write("x")
first = FirstResult()
job = parallel_run_function(name="cold", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                            mini_batch_size="1", max_concurrency_per_instance=2, runs_root=os.path.join(root, "runs"),
                            is_deterministic=False,  # the warm run must run, not be served from the cache
                            task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
res = job(d=root + "/f*.txt").run(progress=False, listeners=[first])
assert res.status == "Completed" and res.counts["succeeded"] == 2, res.summary()
T1 = time.perf_counter()
t2 = time.perf_counter()
res = job(d=root + "/f*.txt").run(progress=False)
T2 = time.perf_counter()
print(f"first_result_s={first.t - T0:.3f}")
print(f"whole_job_s={T1 - T0:.3f}")
print(f"warm_job_s={T2 - t2:.3f}")
