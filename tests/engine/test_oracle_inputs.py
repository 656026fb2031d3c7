"""Oracle: for every kind of input, the local process pool (2 workers) writes the same rows as the
inline backend."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function


def frame_rows(mini_batch, mini_batch_context):
    df = mini_batch.copy()
    df["pkv"] = "-".join(f"{k}={v}" for k, v in sorted(mini_batch_context.partition_key_value.items()))
    return df


def file_rows(mini_batch):
    return [f"{os.path.basename(os.path.dirname(p))}/{os.path.basename(p)}" for p in mini_batch]


def _frame(n=600):
    return pd.DataFrame({"id": range(n), "store": [f"s{i % 3}" for i in range(n)], "v": [i * 0.5 for i in range(n)]})


def make_input(root, kind):
    df = _frame()
    if kind == "dataframe":
        return df, "mltable", None, frame_rows
    if kind == "dataframe_partitions":
        return df, "mltable", ["store"], frame_rows
    if kind == "csv":
        df.to_csv(root / "t.csv", index=False)
        return str(root / "t.csv"), "mltable", None, frame_rows
    if kind == "jsonl":
        df.to_json(root / "t.jsonl", orient="records", lines=True)
        return str(root / "t.jsonl"), "mltable", None, frame_rows
    if kind == "parquet":
        df.to_parquet(root / "t.parquet", row_group_size=50)
        return str(root / "t.parquet"), "mltable", None, frame_rows
    if kind == "hive_csv":
        for store, part in df.groupby("store"):
            d = root / "hive" / f"store={store}"
            d.mkdir(parents=True)
            part.drop(columns=["store"]).to_csv(d / "part.csv", index=False)
        return str(root / "hive"), "mltable", ["store"], frame_rows
    if kind == "files":
        for i in range(35):
            d = root / "files" / f"sub{i % 4}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:03d}.txt").write_text(str(i))
        return str(root / "files"), "uri_folder", None, file_rows
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["dataframe", "dataframe_partitions", "csv", "jsonl", "parquet", "hive_csv",
                                  "files"])
def test_local_pool_matches_inline(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    value, itype, keys, run = make_input(tmp_path, kind)
    job = parallel_run_function(
        name=f"oracle_{kind}", inputs={"d": Input(type=itype)}, outputs={"o": Output()},
        mini_batch_size=None if keys else ("3" if itype == "uri_folder" else "2KB"), partition_keys=keys,
        max_concurrency_per_instance=2, task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
    ref = job(d=value).run(backend="inline", progress=False)
    got = job(d=value).run(backend="local", progress=False)
    assert ref.status == got.status == "Completed"
    assert ref.counts["total"] == got.counts["total"] > 1
    assert sorted(ref.read_lines()) == sorted(got.read_lines())
    expected = 35 if kind == "files" else 600
    assert len(got.read_lines()) == expected
