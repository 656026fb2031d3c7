"""Contract 4.4, 6 and 12 as one table: entry behaviour x settings -> status, counts, attempts, limit.

Each row builds a small input whose data says what ``run()`` does with each mini-batch (see
conformance_entry.py), runs it through one surface (v2 function, v2 entry script, v1
ParallelRunStep) on the ``inline`` backend and on the ``local`` process backend (concurrency 2), and
checks the row's expectations. Both backends are held to the same row, so they agree.

Every expected value is read off the contract (the ``cite`` column names the section), not off the
code. The rules used:

* 4.4 / 12: a list, tuple or DataFrame counts ``len(result)`` successful items; fewer than the
  mini-batch's items (short, ``[]``) counts the difference as failed items but the mini-batch
  succeeds; more is accepted (no negative failures). An exception (``SystemExit`` included), ``None``,
  or any other type (int, str, dict, ndarray) fails the attempt.
* 6.2 / 12: v2 ``max_retries`` = retries after the first attempt (attempts = max_retries + 1,
  default 3); v1 ``run_max_try`` = total attempts (default 3). A mini-batch fails only once its
  attempts are exhausted, and then all of its items are failed items.
* 6.1 / 12: the job fails as soon as a count is *strictly greater* than its limit; -1 (100 for the
  percent) disables; ``error_threshold`` counts items, ``mini_batch_error_threshold`` (v1
  ``allowed_failed_count``) counts failed mini-batches, ``allowed_failed_percent`` is the share of
  failed mini-batches among all of them, checked once all are scheduled. Program arguments
  ``--error_threshold`` / ``--allowed_failed_count`` / ``--allowed_failed_percent`` set the same (7).

When a limit stops the job, which of the *other* mini-batches had finished is not fixed by the
contract (they run in parallel): those cells are ``None`` (succeeded) or ``?`` (attempts). The rows
are built so that exactly ``limit + 1`` mini-batches (or items) fail, which makes the failure counts
exact even then.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import conformance_entry
import pandas as pd
import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.v1 import Dataset, ParallelRunConfig, ParallelRunStep

ENTRY_FILE = conformance_entry.__file__
DEFAULT_PER = {"files": 2, "csv": 3, "parquet": 3, "jsonl": 2, "frame": 2, "rank": 0}


@dataclass(frozen=True)
class Row:
    id: str
    surface: str  # v2fn | v2script | v1
    data: str  # files | csv | parquet | jsonl (one file per mini-batch) | frame (in-memory, partition_keys) | rank
    kinds: tuple[str, ...]
    status: str
    succeeded: int | None  # None: not fixed by the contract (the job stopped while others ran)
    failed: int
    items_failed: int
    attempts: tuple[int | None, ...]  # per mini-batch; None: not fixed by the contract
    limit: str | None
    cite: str
    settings: dict[str, Any] = field(default_factory=dict)
    per: int = 0


def R(id: str, kinds: str, status: str, succeeded: int | None, failed: int, items_failed: int, attempts: str,
      limit: str | None = None, *, cite: str, surface: str = "v2fn", data: str = "files", per: int | None = None,
      **settings: Any) -> Row:
    ks = tuple(kinds.split())
    att = tuple(None if a == "?" else int(a) for a in attempts.split())
    assert len(att) == len(ks), id
    return Row(id, surface, data, ks, status, succeeded, failed, items_failed, att, limit, cite, settings,
               DEFAULT_PER[data] if per is None else per)


ET, MBE, PCT = "error_threshold", "mini_batch_error_threshold", "allowed_failed_percent"
AFC = "allowed_failed_count"
OK5 = "ok ok ok ok ok"

TABLE = [
    # ---- error_threshold counts failed ITEMS (files: 2 per mini-batch) -------------------------------
    R("et_default_disabled", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="6.1 default -1; 12"),
    R("et1_raise_2_items", "ok raise ok ok ok", "Failed", None, 1, 2, "? 3 ? ? ?", ET, cite="6.1 items; 12",
      error_threshold=1),
    R("et2_raise_2_items_equal", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="6.1 strictly >",
      error_threshold=2),
    R("et0_short1", "ok short1 ok ok ok", "Failed", None, 0, 1, "? 1 ? ? ?", ET, cite="4.4; 12 short",
      error_threshold=0),
    R("et1_short1_equal", "ok short1 ok ok ok", "Completed", 5, 0, 1, "1 1 1 1 1", cite="6.1 strictly >",
      error_threshold=1),
    R("et3_two_shorts_sum", "short1 ok short2 ok ok", "Completed", 5, 0, 3, "1 1 1 1 1", cite="6.1 summed",
      error_threshold=3),
    R("et2_two_shorts_sum_over", "short1 ok short2 ok ok", "Failed", None, 0, 3, "1 ? 1 ? ?", ET,
      cite="6.1 summed over the job", error_threshold=2),
    R("et_mbe_minus1_all_raise", "raise raise raise raise raise", "Completed", 0, 5, 10, "1 1 1 1 1",
      cite="6.1 -1 disables", error_threshold=-1, mini_batch_error_threshold=-1, max_retries=0),
    R("et_arg_eq_0", "ok short1 ok ok ok", "Failed", None, 0, 1, "? 1 ? ? ?", ET, cite="7 --error_threshold",
      args="--error_threshold=0"),
    R("et_arg_2", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="7 --error_threshold",
      args="--error_threshold 2"),
    # ---- mini_batch_error_threshold counts failed MINI-BATCHES --------------------------------------
    R("mbe0_raise", "ok raise ok ok ok", "Failed", None, 1, 2, "? 3 ? ? ?", MBE, cite="6.1; 12",
      mini_batch_error_threshold=0),
    R("mbe1_raise_equal", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="6.1 strictly >",
      mini_batch_error_threshold=1),
    R("mbe1_two_raise", "ok raise raise ok ok", "Failed", None, 2, 4, "? 3 3 ? ?", MBE, cite="6.1",
      mini_batch_error_threshold=1),
    R("mbe2_two_raise_equal", "ok raise raise ok ok", "Completed", 3, 2, 4, "1 3 3 1 1", cite="6.1 strictly >",
      mini_batch_error_threshold=2),
    R("mbe0_short_is_not_batch_failure", "ok short2 ok ok ok", "Completed", 5, 0, 2, "1 1 1 1 1",
      cite="12 short returns", mini_batch_error_threshold=0),
    R("mbe0_empty_is_not_batch_failure", "ok empty ok ok ok", "Completed", 5, 0, 2, "1 1 1 1 1",
      cite="12 short returns", mini_batch_error_threshold=0),
    R("mbe0_flaky1_ok_on_retry", "ok flaky1 ok ok ok", "Completed", 5, 0, 0, "1 2 1 1 1",
      cite="6.1 timing nuance; 12 counted once exhausted", mini_batch_error_threshold=0),
    R("mbe_arg_allowed_failed_count_0", "ok raise ok ok ok", "Failed", None, 1, 2, "? 3 ? ? ?", AFC,
      cite="7 --allowed_failed_count", args="--allowed_failed_count 0"),
    R("mbe_arg_allowed_failed_count_1", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1",
      cite="7 --allowed_failed_count", args="--allowed_failed_count=1"),
    R("mbe_minus1_all_none", "none none none none none", "Completed", 0, 5, 10, "1 1 1 1 1",
      cite="6.1 -1 disables", mini_batch_error_threshold=-1, max_retries=0),
    # ---- allowed_failed_percent: failed mini-batches / all, once all are scheduled --------------------
    R("pct30_two_of_five", "raise raise ok ok ok", "Failed", None, 2, 4, "1 1 ? ? ?", PCT, cite="6.1 percent",
      allowed_failed_percent=30, max_retries=0),
    R("pct40_two_of_five_equal", "raise raise ok ok ok", "Completed", 3, 2, 4, "1 1 1 1 1",
      cite="6.1 strictly >", allowed_failed_percent=40, max_retries=0),
    R("pct0_one_failure", "ok ok ok ok raise", "Failed", None, 1, 2, "? ? ? ? 1", PCT, cite="6.1 percent",
      allowed_failed_percent=0, max_retries=0),
    R("pct100_all_fail_disabled", "raise raise raise raise raise", "Completed", 0, 5, 10, "1 1 1 1 1",
      cite="6.1 100 = ignore", allowed_failed_percent=100, max_retries=0),
    R("pct50_first_of_ten_fails", "raise ok ok ok ok ok ok ok ok ok", "Completed", 9, 1, 2,
      "1 1 1 1 1 1 1 1 1 1", cite="6.1 only after all scheduled: 1/10, not 1/1",
      allowed_failed_percent=50, max_retries=0),
    R("pct_arg_20_equal", "ok ok raise ok ok", "Completed", 4, 1, 2, "1 1 1 1 1", cite="7 --allowed_failed_percent",
      args="--allowed_failed_percent 20", max_retries=0),
    R("pct_arg_19_5", "ok ok raise ok ok", "Failed", None, 1, 2, "? ? 1 ? ?", PCT, cite="7 --allowed_failed_percent",
      args="--allowed_failed_percent=19.5", max_retries=0),
    R("pct0_shorts_are_not_failed_batches", "short2 short2 ok ok ok", "Completed", 5, 0, 4, "1 1 1 1 1",
      cite="12 short returns", allowed_failed_percent=0),
    # ---- what run() returns (4.4 / 12) ---------------------------------------------------------------
    R("short1_counts_one_item", "ok short1 ok ok ok", "Completed", 5, 0, 1, "1 1 1 1 1", cite="4.4"),
    R("longer_accepted_no_negative", "longer ok ok ok ok", "Completed", 5, 0, 0, "1 1 1 1 1", cite="4.4 clamp 0",
      error_threshold=0),
    R("empty_list_all_items_failed", "ok empty ok ok ok", "Completed", 5, 0, 2, "1 1 1 1 1", cite="4.4",
      error_threshold=2),
    R("empty_list_over_et1", "ok empty ok ok ok", "Failed", None, 0, 2, "? 1 ? ? ?", ET, cite="4.4; 6.1",
      error_threshold=1),
    R("none_is_failed_attempt", "ok none ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="4.4 None; 12"),
    R("none_mbe0", "ok none ok ok ok", "Failed", None, 1, 2, "? 3 ? ? ?", MBE, cite="4.4 None; 12",
      mini_batch_error_threshold=0),
    R("int_is_failed_attempt", "ok int ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="4.4 types; 12"),
    R("str_is_failed_attempt", "ok ok str ok ok", "Completed", 4, 1, 2, "1 1 3 1 1", cite="4.4 types; 12"),
    R("dict_is_failed_attempt", "dict ok ok ok ok", "Completed", 4, 1, 2, "3 1 1 1 1", cite="4.4 types; 12"),
    R("ndarray_is_failed_attempt", "ok ok ok ok ndarray", "Completed", 4, 1, 2, "1 1 1 1 3", cite="4.4 types; 12"),
    R("tuple_ok", "tuple tuple ok ok ok", "Completed", 5, 0, 0, "1 1 1 1 1", cite="4.4 tuple", error_threshold=0),
    R("dataframe_ok_for_files", "frame ok ok ok ok", "Completed", 5, 0, 0, "1 1 1 1 1", cite="4.4 DataFrame",
      error_threshold=0),
    R("dataframe_subclass_ok", "ok framesub ok ok ok", "Completed", 5, 0, 0, "1 1 1 1 1", cite="4.4 DataFrame",
      error_threshold=0),
    R("v1_dataframe_subclass_ok", "framesub ok", "Completed", 2, 0, 0, "1 1", cite="4.4 DataFrame", surface="v1",
      error_threshold=0),
    R("sysexit_is_exception", "ok sysexit ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="4.4 exception; 12"),
    # ---- v2 retries: max_retries = retries after the first attempt (6.2 / 12) ------------------------
    R("v2_max_retries0", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 1 1 1 1", cite="12 attempts = 0+1",
      max_retries=0),
    R("v2_max_retries1", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 2 1 1 1", cite="12 attempts = 1+1",
      max_retries=1),
    R("v2_max_retries4", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 5 1 1 1", cite="12 attempts = 4+1",
      max_retries=4),
    R("v2_max_retries2_flaky2_ok", "ok flaky2 ok ok ok", "Completed", 5, 0, 0, "1 3 1 1 1",
      cite="12 default 3 attempts", max_retries=2),
    R("v2_max_retries1_flaky2_fails", "ok flaky2 ok ok ok", "Completed", 4, 1, 2, "1 2 1 1 1",
      cite="12 attempts = 1+1", max_retries=1),
    R("v2_max_retries0_flaky1_fails", "ok flaky1 ok ok ok", "Completed", 4, 1, 2, "1 1 1 1 1",
      cite="12 attempts = 0+1", max_retries=0),
    R("v2_rank_no_input", "ok ok ok", "Completed", 3, 0, 0, "1 1 1", cite="5.5 rank; 4.4", data="rank",
      args="--rank_mini_batch_count 3"),
    # ---- v2 entry script ---------------------------------------------------------------------------
    R("v2script_raise_default", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="12",
      surface="v2script"),
    R("v2script_flaky1_mbe0", "flaky1 ok ok ok ok", "Completed", 5, 0, 0, "2 1 1 1 1", cite="6.1; 12",
      surface="v2script", mini_batch_error_threshold=0),
    R("v2script_short_et0", "ok ok ok short1 ok", "Failed", None, 0, 1, "? ? ? 1 ?", ET, cite="4.4; 6.1",
      surface="v2script", error_threshold=0),
    # ---- v1: run_max_try = TOTAL attempts, allowed_failed_count / _percent (2.1, 6.1, 6.2, 12) --------
    R("v1_default_3_tries", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="2.1 default 3; 12",
      surface="v1"),
    R("v1_run_max_try1", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 1 1 1 1", cite="6.2 total tries",
      surface="v1", run_max_try=1),
    R("v1_run_max_try5", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 5 1 1 1", cite="6.2 total tries",
      surface="v1", run_max_try=5),
    R("v1_run_max_try2_flaky2_fails", "ok flaky2 ok ok ok", "Completed", 4, 1, 2, "1 2 1 1 1",
      cite="6.2 total tries (v2 max_retries=2 would succeed)", surface="v1", run_max_try=2),
    R("v1_run_max_try3_flaky2_ok", "ok flaky2 ok ok ok", "Completed", 5, 0, 0, "1 3 1 1 1", cite="6.2 total tries",
      surface="v1", run_max_try=3),
    R("v1_afc0_flaky1_ok", "ok flaky1 ok ok ok", "Completed", 5, 0, 0, "1 2 1 1 1",
      cite="6.1 timing nuance: counted only while failed", surface="v1", allowed_failed_count=0),
    R("v1_afc0_raise", "ok raise ok ok ok", "Failed", None, 1, 2, "? 3 ? ? ?", AFC, cite="6.1 allowed_failed_count",
      surface="v1", allowed_failed_count=0),
    R("v1_afc1_two_raise", "raise ok ok ok raise", "Failed", None, 2, 4, "3 ? ? ? 3", AFC, cite="6.1",
      surface="v1", allowed_failed_count=1),
    R("v1_afc2_two_raise_equal", "raise ok ok ok raise", "Completed", 3, 2, 4, "3 1 1 1 3", cite="6.1 strictly >",
      surface="v1", allowed_failed_count=2),
    R("v1_afc_minus1_all_raise", "raise raise raise raise raise", "Completed", 0, 5, 10, "1 1 1 1 1",
      cite="6.1 -1 ignore", surface="v1", allowed_failed_count=-1, run_max_try=1),
    R("v1_et0_short", "ok short1 ok ok ok", "Failed", None, 0, 1, "? 1 ? ? ?", ET, cite="6.1 items",
      surface="v1", error_threshold=0),
    R("v1_et1_raise_2_items", "ok raise ok ok ok", "Failed", None, 1, 2, "? 3 ? ? ?", ET, cite="6.1 items",
      surface="v1", error_threshold=1),
    R("v1_et2_raise_2_items_equal", "ok raise ok ok ok", "Completed", 4, 1, 2, "1 3 1 1 1", cite="6.1 strictly >",
      surface="v1", error_threshold=2),
    R("v1_pct30_two_of_five", "raise raise ok ok ok", "Failed", None, 2, 4, "1 1 ? ? ?", PCT, cite="6.1 percent",
      surface="v1", allowed_failed_percent=30, run_max_try=1),
    R("v1_pct40_equal", "raise raise ok ok ok", "Completed", 3, 2, 4, "1 1 1 1 1", cite="6.1 strictly >",
      surface="v1", allowed_failed_percent=40, run_max_try=1),
    R("v1_rank_no_input", "ok ok ok", "Completed", 3, 0, 0, "1 1 1", cite="2.2 / 5.5 rank", surface="v1",
      data="rank", args=["--rank_mini_batch_count", "3"]),
    # ---- tabular: CSV (one file per mini-batch, 3 rows each; 5.3 a mini-batch never spans two files) ---
    R("csv_all_ok", "ok ok ok ok", "Completed", 4, 0, 0, "1 1 1 1", cite="5.3; 4.4", data="csv"),
    R("csv_raise_et2_rows", "ok raise ok ok", "Failed", None, 1, 3, "? 3 ? ?", ET, cite="6.1 items = rows",
      data="csv", error_threshold=2),
    R("csv_raise_et3_rows_equal", "ok raise ok ok", "Completed", 3, 1, 3, "1 3 1 1", cite="6.1 strictly >",
      data="csv", error_threshold=3),
    R("csv_short1_et0", "ok ok short1 ok", "Failed", None, 0, 1, "? ? 1 ?", ET, cite="4.4 rows", data="csv",
      error_threshold=0),
    R("csv_short2_et2_equal", "short2 ok ok ok", "Completed", 4, 0, 2, "1 1 1 1", cite="4.4; 6.1", data="csv",
      error_threshold=2),
    R("csv_none_mbe0", "ok ok ok none", "Failed", None, 1, 3, "? ? ? 3", MBE, cite="4.4 None", data="csv",
      mini_batch_error_threshold=0),
    R("csv_frame_and_longer", "frame longer ok tuple", "Completed", 4, 0, 0, "1 1 1 1", cite="4.4", data="csv",
      error_threshold=0),
    R("csv_flaky1_retry_ok", "ok flaky1 ok ok", "Completed", 4, 0, 0, "1 2 1 1", cite="6.2", data="csv",
      mini_batch_error_threshold=0),
    R("csv_pct25_equal", "raise ok ok ok", "Completed", 3, 1, 3, "1 1 1 1", cite="6.1 strictly >", data="csv",
      allowed_failed_percent=25, max_retries=0),
    R("csv_pct24", "raise ok ok ok", "Failed", None, 1, 3, "1 ? ? ?", PCT, cite="6.1 percent", data="csv",
      allowed_failed_percent=24, max_retries=0),
    # ---- tabular: Parquet ------------------------------------------------------------------------------
    R("parquet_all_ok", "ok ok ok ok", "Completed", 4, 0, 0, "1 1 1 1", cite="5.3; 4.4", data="parquet"),
    R("parquet_raise_et3_equal", "ok raise ok ok", "Completed", 3, 1, 3, "1 3 1 1", cite="6.1 strictly >",
      data="parquet", error_threshold=3),
    R("parquet_short1_et0", "short1 ok ok ok", "Failed", None, 0, 1, "1 ? ? ?", ET, cite="4.4 rows",
      data="parquet", error_threshold=0),
    R("parquet_flaky2_max_retries2", "ok ok flaky2 ok", "Completed", 4, 0, 0, "1 1 3 1", cite="12 attempts",
      data="parquet", max_retries=2),
    R("parquet_dict_mbe0", "ok dict ok ok", "Failed", None, 1, 3, "? 3 ? ?", MBE, cite="4.4 types",
      data="parquet", mini_batch_error_threshold=0),
    # ---- tabular: JSON Lines files, and an in-memory DataFrame split by partition_keys (5.4) -----------
    R("jsonl_raise_et2_equal", "ok raise ok", "Completed", 2, 1, 2, "1 3 1", cite="6.1 strictly >", data="jsonl",
      error_threshold=2),
    R("jsonl_short1_et0", "ok ok short1", "Failed", None, 0, 1, "? ? 1", ET, cite="4.4 rows", data="jsonl",
      error_threshold=0),
    R("frame_partitions_none_mbe0", "ok none ok ok", "Failed", None, 1, 2, "? 3 ? ?", MBE, cite="5.4; 4.4 None",
      data="frame", mini_batch_error_threshold=0),
    R("frame_partitions_flaky1_short1", "flaky1 short1 ok ok", "Completed", 4, 0, 1, "2 1 1 1", cite="5.4; 6.2; 4.4",
      data="frame"),
    R("frame_partitions_pct25_equal", "ok ok ok int", "Completed", 3, 1, 2, "1 1 1 1", cite="6.1 strictly >",
      data="frame", allowed_failed_percent=25, max_retries=0),
    R("v1_frame_partitions_run_max_try2_flaky2", "ok flaky2 ok", "Completed", 2, 1, 2, "1 2 1", cite="6.2 total tries",
      surface="v1", data="frame", run_max_try=2),
    # ---- v1 tabular ------------------------------------------------------------------------------------
    R("v1_csv_raise_et3_equal", "ok raise ok ok", "Completed", 3, 1, 3, "1 3 1 1", cite="6.1", surface="v1",
      data="csv", error_threshold=3),
    R("v1_csv_short1_et0", "ok short1 ok ok", "Failed", None, 0, 1, "? 1 ? ?", ET, cite="6.1", surface="v1",
      data="csv", error_threshold=0),
    R("v1_parquet_flaky1_afc0", "flaky1 ok ok ok", "Completed", 4, 0, 0, "2 1 1 1", cite="6.1 nuance", surface="v1",
      data="parquet", allowed_failed_count=0),
    R("v1_parquet_none_run_max_try1", "ok ok none ok", "Completed", 3, 1, 3, "1 1 1 1", cite="6.2; 4.4",
      surface="v1", data="parquet", run_max_try=1),
]


# ------------------------------------------------------------------------------------------- building
def make_data(root: str, row: Row) -> Any:
    if row.data == "rank":
        return None
    if row.data == "frame":  # partition_keys=["batch"]: one mini-batch per batch value, in order
        return pd.DataFrame({"batch": [b for b in range(len(row.kinds)) for _ in range(row.per)],
                             "kind": [k for k in row.kinds for _ in range(row.per)],
                             "x": list(range(len(row.kinds) * row.per))})
    d = os.path.join(root, "in")
    os.makedirs(d)
    for b, kind in enumerate(row.kinds):
        if row.data == "files":
            for j in range(row.per):
                with open(os.path.join(d, f"{b:03d}_{j}_{kind}.txt"), "w") as fh:
                    fh.write(kind)
            continue
        df = pd.DataFrame({"batch": [b] * row.per, "kind": [kind] * row.per, "x": range(row.per)})
        if row.data == "csv":
            df.to_csv(os.path.join(d, f"{b:03d}.csv"), index=False)
        elif row.data == "jsonl":
            df.to_json(os.path.join(d, f"{b:03d}.jsonl"), orient="records", lines=True)
        else:
            df.to_parquet(os.path.join(d, f"{b:03d}.parquet"), index=False)
    return d


def run_v2(row: Row, backend: str, root: str, data: str | None, markers: str) -> Any:
    s = dict(row.settings)
    args = s.pop("args", None)
    if "max_retries" in s:
        s["retry_settings"] = {"max_retries": s.pop("max_retries")}
    if row.surface == "v2script":
        code = os.path.join(root, "src")
        os.makedirs(code)
        shutil.copy(ENTRY_FILE, os.path.join(code, "score.py"))
        task = RunFunction(code=code, entry_script="score.py", append_row_to="${{outputs.out}}",
                           program_arguments=args)
    else:
        task = RunFunction(run=conformance_entry.run, append_row_to="${{outputs.out}}", program_arguments=args)
    inputs = {} if data is None else {"data": Input(type="uri_folder" if row.data == "files" else "mltable")}
    if row.data == "frame":
        s["partition_keys"] = ["batch"]
    job = parallel_run_function(
        name=f"conf_{row.id}", inputs=inputs, outputs={"out": Output()},
        mini_batch_size=str(row.per) if row.data == "files" else None, max_concurrency_per_instance=2,
        environment_variables={"CONF_MARKERS": markers}, task=task, backend=backend, **s,
    )
    return (job(data=data) if data is not None else job).run(progress=False)


def run_v1(row: Row, backend: str, root: str, data: str | None, markers: str) -> Any:
    s = dict(row.settings)
    code = os.path.join(root, "src")
    os.makedirs(code)
    shutil.copy(ENTRY_FILE, os.path.join(code, "score.py"))
    config = ParallelRunConfig(
        environment=None, entry_script="score.py", source_directory=code,
        error_threshold=s.pop("error_threshold", -1), output_action="append_row", compute_target="local",
        node_count=1, process_count_per_node=2, mini_batch_size=str(row.per) if row.data == "files" else None,
        partition_keys=["batch"] if row.data == "frame" else None,
        environment_variables={"CONF_MARKERS": markers}, **{k: v for k, v in s.items() if k != "args"},
    )
    if data is None:
        inputs = []
    elif row.data == "files":
        inputs = [Dataset.File.from_files(data).as_named_input("data")]
    elif row.data == "frame":
        inputs = [data]
    elif row.data == "csv":
        inputs = [Dataset.Tabular.from_delimited_files(data).as_named_input("data")]
    else:
        inputs = [Dataset.Tabular.from_parquet_files(data).as_named_input("data")]
    step = ParallelRunStep(name=f"conf-{row.id}", parallel_run_config=config, inputs=inputs,
                           output=os.path.join(root, "out"), arguments=s.get("args"))
    return step.run(backend=backend, progress=False)


def calls_per_batch(markers: str, n: int) -> list[int]:
    out = []
    for b in range(n):
        path = os.path.join(markers, f"{b:03d}")
        out.append(os.path.getsize(path) if os.path.exists(path) else 0)
    return out


# ------------------------------------------------------------------------------------------- the test
@pytest.mark.parametrize("backend", ["inline", "local", "ray"])
@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_row(workdir, backend, row, request):
    if backend == "ray":
        request.getfixturevalue("ray_cluster")  # a local Ray instance, 2 CPUs (tests/conftest.py)
    root = str(workdir)
    markers = os.path.join(root, "markers")
    os.makedirs(markers)
    data = make_data(root, row)
    res = (run_v1 if row.surface == "v1" else run_v2)(row, backend, root, data, markers)
    n = len(row.kinds)
    c = res.counts
    where = f"[{row.id} on {backend}; contract {row.cite}]\n{res.summary()}"
    assert (res.status, res.limit) == (row.status, row.limit), where
    assert c["total"] == n, where
    assert (c["failed"], c["items_failed"]) == (row.failed, row.items_failed), where
    assert c["succeeded"] + c["failed"] + c["not_run"] == n, where
    batches = res.batches.set_index("index")
    calls = calls_per_batch(markers, n)
    for i, expected in enumerate(row.attempts):
        if expected is None:
            continue
        assert batches.loc[i, "attempts"] == expected, f"mini-batch {i} attempts {where}"
        if row.data != "rank":  # rank mini-batches carry no data to key the call counter on
            assert calls[i] == expected, f"mini-batch {i}: run() called {calls[i]} times {where}"
    if row.status == "Completed":
        items_total = n * row.per
        assert c["succeeded"] == row.succeeded, where
        assert c["not_run"] == 0, where
        assert c["items_succeeded"] == items_total - row.items_failed, where
        # 8.1: one output line per returned item of every successful mini-batch, each written once
        lines = res.read_lines()
        ok = [i for i in range(n) if batches.loc[i, "status"] == "Succeeded"]
        assert len(ok) == row.succeeded, where
        expected_lines = sum(conformance_entry.returned(row.kinds[i], row.per) or 0 for i in ok)
        if row.data == "rank":
            expected_lines = 0
        assert len(lines) == expected_lines, where
    else:
        assert row.limit is not None and row.limit in res.reason, where
        with open(os.path.join(res.logs_dir, "job_result.txt"), encoding="utf-8") as fh:
            assert row.limit in fh.read(), where


def test_table_size_and_coverage():
    """The table keeps covering every surface, input kind and limit (guards against rows being dropped)."""
    assert len(TABLE) >= 90
    assert len({r.id for r in TABLE}) == len(TABLE)
    assert {r.surface for r in TABLE} == {"v2fn", "v2script", "v1"}
    assert {r.data for r in TABLE} == {"files", "csv", "parquet", "jsonl", "frame", "rank"}
    assert {r.limit for r in TABLE} == {None, ET, MBE, AFC, PCT}
    kinds = {k for r in TABLE for k in r.kinds}
    assert {"raise", "short1", "empty", "longer", "none", "int", "str", "dict", "ndarray", "tuple", "frame",
            "sysexit", "flaky1", "flaky2"} <= kinds
