"""prs_nb over a big CSV (bench 3), run in a fresh process so its whole process tree can be measured."""

import sys

from prs_nb import Input, RunFunction, parallel_run_function

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from bench import work  # noqa: E402

path, runs_root, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
job = parallel_run_function(name="bench_csv", inputs={"t": Input(type="mltable")}, mini_batch_size="4MB",
                            max_concurrency_per_instance=workers, runs_root=runs_root, is_deterministic=False,
                            task=RunFunction(run=work.count_rows))
res = job(t=path).run(progress=False)
assert res.status == "Completed", res.summary()
print(f"rows={res.counts['items_total']}")
print(f"batches={res.counts['total']}")
