"""Contract 6 / 12 conformance table: entry behaviour x settings -> status, counts, attempts, limit.

Each row runs five one-file mini-batches (file names encode what run() does with them) on the inline
backend and on the local process backend; both must give the same answer.
"""

from __future__ import annotations

import os

import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function


def behave(mini_batch):
    out = []
    for path in mini_batch:
        kind = os.path.basename(path).split("_", 1)[1].split(".")[0]
        if kind == "raise":
            raise ValueError(f"bad item {os.path.basename(path)}")
        if kind == "short":
            return []
        if kind == "none":
            return None
        if kind == "badtype":
            return 42
        if kind == "longer":
            out += [path, path]
            continue
        if kind == "flaky":
            marker = path + ".seen"
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("first attempt fails")
        out.append(os.path.basename(path))
    return out


def make_input(root, kinds):
    d = root / "in"
    d.mkdir()
    for i, k in enumerate(kinds):
        (d / f"{i:03d}_{k}.txt").write_text(k)
    return str(d)


# (id, kinds of the 5 files, settings, expected status, succeeded, failed, items_failed, attempts of item 1, limit)
TABLE = [
    ("all_ok", ["ok"] * 5, {}, "Completed", 5, 0, 0, 1, None),
    ("raise_defaults_3_attempts", ["ok", "raise", "ok", "ok", "ok"], {}, "Completed", 4, 1, 1, 3, None),
    ("raise_mbe_0_fails", ["ok", "raise", "ok", "ok", "ok"], {"mini_batch_error_threshold": 0},
     "Failed", None, 1, None, 3, "mini_batch_error_threshold"),
    ("raise_mbe_1_tolerated", ["ok", "raise", "ok", "ok", "ok"], {"mini_batch_error_threshold": 1},
     "Completed", 4, 1, 1, 3, None),
    ("two_raise_mbe_1_fails", ["ok", "raise", "raise", "ok", "ok"], {"mini_batch_error_threshold": 1},
     "Failed", None, 2, None, 3, "mini_batch_error_threshold"),
    ("short_error_threshold_0_fails", ["ok", "short", "ok", "ok", "ok"], {"error_threshold": 0},
     "Failed", None, 0, 1, 1, "error_threshold"),
    ("short_error_threshold_1_ok", ["ok", "short", "ok", "ok", "ok"], {"error_threshold": 1},
     "Completed", 5, 0, 1, 1, None),
    ("short_not_a_batch_failure", ["ok", "short", "ok", "ok", "ok"], {"mini_batch_error_threshold": 0},
     "Completed", 5, 0, 1, 1, None),
    ("none_is_a_failed_batch", ["ok", "none", "ok", "ok", "ok"], {}, "Completed", 4, 1, 1, 3, None),
    ("bad_type_is_a_failed_batch", ["ok", "badtype", "ok", "ok", "ok"], {"mini_batch_error_threshold": 0},
     "Failed", None, 1, None, 3, "mini_batch_error_threshold"),
    ("longer_accepted", ["ok", "longer", "ok", "ok", "ok"], {"error_threshold": 0}, "Completed", 5, 0, 0, 1, None),
    ("flaky_succeeds_on_retry", ["ok", "flaky", "ok", "ok", "ok"], {"mini_batch_error_threshold": 0},
     "Completed", 5, 0, 0, 2, None),
    ("max_retries_0_one_attempt", ["ok", "raise", "ok", "ok", "ok"], {"retry_settings": {"max_retries": 0}},
     "Completed", 4, 1, 1, 1, None),
    ("max_retries_0_flaky_fails", ["ok", "flaky", "ok", "ok", "ok"], {"retry_settings": {"max_retries": 0}},
     "Completed", 4, 1, 1, 1, None),
    ("percent_40_over_30_fails", ["raise", "raise", "ok", "ok", "ok"],
     {"allowed_failed_percent": 30, "retry_settings": {"max_retries": 0}},
     "Failed", None, 2, 2, 1, "allowed_failed_percent"),
    ("percent_40_under_50_ok", ["raise", "raise", "ok", "ok", "ok"],
     {"allowed_failed_percent": 50, "retry_settings": {"max_retries": 0}}, "Completed", 3, 2, 2, 1, None),
    ("arg_allowed_failed_count_0", ["ok", "raise", "ok", "ok", "ok"],
     {"program_arguments": "--allowed_failed_count 0"}, "Failed", None, 1, None, 3, "allowed_failed_count"),
    ("arg_error_threshold_0", ["ok", "short", "ok", "ok", "ok"],
     {"program_arguments": "--error_threshold=0"}, "Failed", None, 0, 1, 1, "error_threshold"),
    ("thresholds_disabled", ["raise"] * 5, {"error_threshold": -1, "mini_batch_error_threshold": -1,
                                            "retry_settings": {"max_retries": 0}}, "Completed", 0, 5, 5, 1, None),
]


@pytest.mark.parametrize("backend", ["inline", "local"])
@pytest.mark.parametrize("case", TABLE, ids=[row[0] for row in TABLE])
def test_conformance(workdir, backend, case):
    _id, kinds, settings, status, succeeded, failed, items_failed, attempts1, limit = case
    settings = dict(settings)
    program_arguments = settings.pop("program_arguments", None)
    path = make_input(workdir, kinds)
    job = parallel_run_function(
        name=f"conf_{_id}", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
        mini_batch_size="1", max_concurrency_per_instance=2, backend=backend,
        task=RunFunction(run=behave, append_row_to="${{outputs.out}}", program_arguments=program_arguments),
        **settings,
    )
    res = job(data=path).run(progress=False)
    assert res.status == status, res.summary()
    assert res.limit == limit
    if succeeded is not None:
        assert res.counts["succeeded"] == succeeded
    assert res.counts["failed"] == failed
    if items_failed is not None:
        assert res.counts["items_failed"] == items_failed
    b = res.batches.set_index("index")
    if status == "Completed" or 1 in b.index:
        assert b.loc[1, "attempts"] == attempts1
    if status == "Failed":
        assert limit in res.reason
        assert limit in open(os.path.join(res.logs_dir, "job_result.txt")).read()
