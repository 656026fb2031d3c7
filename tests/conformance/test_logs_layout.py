"""Contract 8.3 / 12 conformance: the log tree of a run, path by path, on both backends."""

from __future__ import annotations

import csv
import glob
import os

import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function


def logging_run(mini_batch):
    import logging

    from azureml_user.parallel_run import EntryScript

    EntryScript().logger.info("scoring %d files", len(mini_batch))
    logging.getLogger("user").warning("root logger line")
    print("stdout line")
    if any(p.endswith("002.txt") for p in mini_batch):
        raise ValueError("bad file 002")
    return [os.path.basename(p) for p in mini_batch]


# (path pattern relative to logs/, required on the local backend, required inline)
LAYOUT = [
    ("readme.txt", True, True),
    ("job_result.txt", True, True),
    ("job_error.txt", True, True),
    ("job_progress_overview.*.txt", True, True),
    ("sys/master_role.txt", True, True),
    ("sys/job_report/processed_mini-batches.csv", True, True),
    ("sys/node/0/_main.txt", True, True),
    ("sys/node/0/process001.txt", True, True),
    ("user/entry_script_log/0/process001.log.txt", True, True),
    ("user/stdout/0/process001.stdout.txt", True, True),  # inline: root logger only (print stays in the caller)
    ("user/stderr/0/process001.stderr.txt", True, False),
    ("user/error/0/process*.txt", True, True),
]


@pytest.mark.parametrize("backend", ["local", "inline"])
@pytest.mark.parametrize("pattern,local,inline", LAYOUT, ids=[row[0] for row in LAYOUT])
def test_log_tree(tmp_path, monkeypatch, backend, pattern, local, inline):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        (d / f"{i:03d}.txt").write_text("x")
    job = parallel_run_function(name="logs", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=1, backend=backend,
                                retry_settings={"max_retries": 0},
                                task=RunFunction(run=logging_run, append_row_to="${{outputs.o}}"))
    res = job(d=str(d)).run(progress=False)
    assert res.status == "Completed" and res.counts["failed"] == 1
    found = glob.glob(os.path.join(res.logs_dir, pattern))
    if (local if backend == "local" else inline):
        assert found, f"{pattern} missing; logs hold {sorted(os.listdir(res.logs_dir))}"
    if pattern.startswith("user/entry_script_log"):
        assert "scoring 1 files" in open(found[0]).read()
    if pattern.startswith("user/stdout") and found:
        text = open(found[0]).read()
        assert "root logger line" in text  # Azure's root-logger handler, on both backends
        assert ("stdout line" in text) == (backend == "local")  # inline leaves print() to the caller
    if pattern.endswith("processed_mini-batches.csv"):
        rows = list(csv.DictReader(open(found[0])))
        assert sorted(int(r["mini_batch_index"]) for r in rows) == [0, 1, 2, 3]
        assert {r["status"] for r in rows} == {"Succeeded", "Failed"}
        assert [r["error_type"] for r in rows if r["status"] == "Failed"] == ["ValueError"]
    if pattern == "job_error.txt":
        assert "bad file 002" in open(found[0]).read()
