"""Found by notebooks/03: a mini-batch queued on a worker behind a slow or hung run() waited there
(up to retry_settings.timeout) while the other workers sat idle. Once run() calls are known to take
HOLD_ONE_SECONDS or more (a round trip is then negligible), a worker holds only the mini-batch it runs."""

from __future__ import annotations

import os
import time

from prs_nb import Input, RunFunction, parallel_run_function


def slow_on_006(mini_batch):
    slow = any(os.path.basename(p).startswith("006") for p in mini_batch)
    time.sleep(2.5 if slow else 0.15)
    return [os.path.basename(p) for p in mini_batch]


def test_no_mini_batch_waits_behind_a_slow_one_while_a_worker_is_idle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("d")
    for i in range(12):
        open(f"d/{i:03d}.txt", "w").close()
    job = parallel_run_function(
        name="slow_head", inputs=dict(d=Input(type="uri_folder")), input_data="${{inputs.d}}",
        mini_batch_size="1", max_concurrency_per_instance=2, is_deterministic=False,
        task=RunFunction(run=slow_on_006))
    result = job(d="d").run(progress=False)
    assert result.status == "Completed"
    t = result.timeline.set_index("index")
    slow = t.loc[6]
    others = t.drop(index=6)
    # 11 x 0.15 s of other work fits easily in the 2.5 s the slow call takes: none of it may wait for it
    late = others[others.end > slow.end]
    assert late.empty, f"mini-batches that waited behind the slow one on {slow.process}:\n{late}"
    assert len(t) == 12 and (t.outcome == "Succeeded").all()
