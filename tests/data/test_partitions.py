"""partition_keys: DataFrame groups, key=value folders (files and tables), key columns inside files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prs_nb.data import FILES, TABULAR, read_mini_batch
from prs_nb.data.base import TableSlice
from prs_nb.errors import InputDataError


def sales(n: int = 60) -> pd.DataFrame:
    return pd.DataFrame({
        "store": [3, 1, 2][0:3] * (n // 3),
        "brand": (["b", "a"] * n)[:n],
        "qty": np.arange(n),
    })


def test_dataframe_partitions(plan_of):
    df = pd.DataFrame({"store": ["s2", "s1", None, "s1", "s2", None], "brand": ["x", "y", "x", "y", "x", "x"],
                       "v": range(6)}, index=[10, 11, 12, 13, 14, 15])
    plan = plan_of(df, type="mltable", keys=["store", "brand"])
    assert plan.describe() == "DataFrame 6 rows x 3 columns: tabular, one mini-batch per partition of store, brand"
    mbs = list(plan)
    assert [mb.partition_key_value for mb in mbs] == [
        {"store": "s1", "brand": "y"}, {"store": "s2", "brand": "x"}, {"store": None, "brand": "x"}]
    assert [mb.items for mb in mbs] == [2, 2, 2]
    assert [list(read_mini_batch(mb).index) for mb in mbs] == [[11, 13], [10, 14], [12, 15]]
    assert all(mb.global_row_index_lower_bound is None and mb.label.startswith("partition store=") for mb in mbs)


def test_dataframe_partition_values_are_plain_python(plan_of):
    mbs = list(plan_of(sales(), keys=["store"], size="1"))  # the size is ignored: partitions win
    assert [mb.partition_key_value for mb in mbs] == [{"store": 1}, {"store": 2}, {"store": 3}]
    assert type(mbs[0].partition_key_value["store"]) is int
    assert [mb.items for mb in mbs] == [20, 20, 20]


def test_dataframe_missing_key(plan_of):
    with pytest.raises(InputDataError, match=r"input 'data': partition key 'region' is not a column of the "
                                             r"DataFrame; available columns: store, brand, qty"):
        plan_of(sales(), keys=["region"])


def touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_hive_folders_for_file_inputs(tmp_path, plan_of):
    d = tmp_path / "imgs"
    touch(d, "store=2/brand=a/1.jpg", "store=1/brand=b/2.jpg", "store=1/brand=a/3.jpg", "store=1/brand=a/4.jpg")
    mbs = list(plan_of("imgs", keys=["store"]))
    assert [(mb.partition_key_value, mb.items) for mb in mbs] == [({"store": "1"}, 3), ({"store": "2"}, 1)]
    assert [os.path.relpath(p, d) for p in mbs[0].source] == [
        os.path.join("store=1", "brand=a", "3.jpg"), os.path.join("store=1", "brand=a", "4.jpg"),
        os.path.join("store=1", "brand=b", "2.jpg")]
    assert all(mb.kind == FILES for mb in mbs)
    mbs = list(plan_of("imgs", keys=["brand", "store"]))
    assert [mb.partition_key_value for mb in mbs] == [
        {"brand": "a", "store": "1"}, {"brand": "a", "store": "2"}, {"brand": "b", "store": "1"}]


def test_hive_values_are_percent_decoded(tmp_path, plan_of):
    touch(tmp_path / "d", "city=New%20York/a.txt")
    assert next(iter(plan_of("d", keys=["city"]))).partition_key_value == {"city": "New York"}


def test_file_input_missing_partition_key(tmp_path, plan_of):
    touch(tmp_path / "imgs", "store=1/a.jpg")
    with pytest.raises(InputDataError, match=r"partition key 'brand' not found for file .*a\.jpg: keys from its "
                                             r"folder layout: store\. File inputs take partition values"):
        list(plan_of("imgs", keys=["brand"]))
    touch(tmp_path / "flat", "a.jpg")
    with pytest.raises(InputDataError, match="its folder layout has no key=value folders"):
        list(plan_of("flat", keys=["store"]))


def test_hive_folders_for_tables_add_columns_and_span_files(tmp_path, plan_of):
    d = tmp_path / "t"
    parts = {"store=1/p0.csv": [1, 2], "store=1/p1.csv": [3], "store=2/p0.csv": [4, 5, 6]}
    for name, qty in parts.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"qty": qty}).to_csv(d / name, index=False)
    mbs = list(plan_of("t", type="mltable", keys=["store"], size="1"))
    assert [(mb.partition_key_value, mb.items) for mb in mbs] == [({"store": "1"}, 3), ({"store": "2"}, 3)]
    assert isinstance(mbs[0].source, list) and len(mbs[0].source) == 2  # one partition, two files
    assert isinstance(mbs[1].source, TableSlice)
    df = read_mini_batch(mbs[0])
    pd.testing.assert_frame_equal(df, pd.DataFrame({"qty": [1, 2, 3], "store": ["1", "1", "1"]}))
    assert list(read_mini_batch(mbs[1])["qty"]) == [4, 5, 6]


def test_key_columns_inside_a_csv(tmp_path, plan_of):
    df = sales(30)
    df.loc[[4, 7], "store"] = np.nan
    df.to_csv(tmp_path / "s.csv", index=False)
    mbs = list(plan_of("s.csv", type="mltable", keys=["store"]))
    assert [mb.partition_key_value for mb in mbs] == [{"store": 1.0}, {"store": 2.0}, {"store": 3.0}, {"store": None}]
    whole = pd.read_csv(tmp_path / "s.csv")
    for mb in mbs:
        got = read_mini_batch(mb)
        value = mb.partition_key_value["store"]
        mask = whole["store"].isna() if value is None else whole["store"] == value
        pd.testing.assert_frame_equal(got, whole[mask].reset_index(drop=True))
        assert mb.items == len(got)


def test_key_columns_in_parquet_partitions_spanning_files(tmp_path, plan_of):
    (tmp_path / "p").mkdir()
    a, b = sales(30), sales(12)
    a.to_parquet(tmp_path / "p" / "a.parquet")
    b.to_parquet(tmp_path / "p" / "b.parquet")
    mbs = list(plan_of("p", type="mltable", keys=["store", "brand"]))
    assert [mb.partition_key_value for mb in mbs][:2] == [{"store": 1, "brand": "a"}, {"store": 1, "brand": "b"}]
    assert len(mbs) == 6 and all(isinstance(mb.source, list) and len(mb.source) == 2 for mb in mbs)
    both = pd.concat([a, b], ignore_index=True)
    for mb in mbs:
        k = mb.partition_key_value
        expected = both[(both.store == k["store"]) & (both.brand == k["brand"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(read_mini_batch(mb), expected)
        assert mb.items == len(expected)


def test_keys_from_folders_and_columns_together(tmp_path, plan_of):
    for store in (1, 2):
        (tmp_path / "t" / f"store={store}").mkdir(parents=True)
        pd.DataFrame({"brand": ["a", "b", "a"], "qty": [store, store * 10, store * 100]}).to_csv(
            tmp_path / "t" / f"store={store}" / "x.csv", index=False)
    mbs = list(plan_of("t", type="mltable", keys=["store", "brand"]))
    assert [(mb.partition_key_value, mb.items) for mb in mbs] == [
        ({"store": "1", "brand": "a"}, 2), ({"store": "1", "brand": "b"}, 1),
        ({"store": "2", "brand": "a"}, 2), ({"store": "2", "brand": "b"}, 1)]
    pd.testing.assert_frame_equal(read_mini_batch(mbs[2]),
                                  pd.DataFrame({"brand": ["a", "a"], "qty": [2, 200], "store": ["2", "2"]}))


def test_key_columns_in_jsonl(tmp_path, plan_of):
    sales(9).to_json(tmp_path / "s.jsonl", orient="records", lines=True)
    mbs = list(plan_of("s.jsonl", type="mltable", keys=["brand"]))
    assert [(mb.partition_key_value, mb.items) for mb in mbs] == [({"brand": "a"}, 4), ({"brand": "b"}, 5)]
    assert set(read_mini_batch(mbs[0])["brand"]) == {"a"}


def test_table_missing_partition_key_lists_columns(tmp_path, plan_of):
    (tmp_path / "store=1").mkdir()
    sales(3).to_csv(tmp_path / "store=1" / "s.csv", index=False)
    with pytest.raises(InputDataError, match=r"input 'data': partition key 'region' not found in .*s\.csv: its "
                                             r"columns are store, brand, qty; keys from its folder layout: store"):
        list(plan_of(str(tmp_path / "*" / "*.csv"), type="mltable", keys=["region"]))
    sales(3).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(InputDataError, match=r"'region' not found in .*s\.parquet: its columns are store, brand, "
                                             r"qty; its folder layout has no key=value folders"):
        list(plan_of("s.parquet", type="mltable", keys=["region"]))
    sales(3).to_json(tmp_path / "s.jsonl", orient="records", lines=True)
    with pytest.raises(InputDataError, match=r"'region' not found in .*s\.jsonl: its columns are store, brand, qty"):
        list(plan_of("s.jsonl", type="mltable", keys=["region"]))


def test_partitions_skip_empty_files(tmp_path, plan_of):
    (tmp_path / "t" / "k=1").mkdir(parents=True)
    (tmp_path / "t" / "k=2").mkdir(parents=True)
    (tmp_path / "t" / "k=1" / "a.csv").write_text("v\n1\n")
    (tmp_path / "t" / "k=2" / "a.csv").write_text("v\n")
    assert [mb.partition_key_value for mb in plan_of("t", type="mltable", keys=["k"])] == [{"k": "1"}]


def test_partition_describe(tmp_path, plan_of):
    touch(tmp_path / "imgs", "k=1/a")
    assert plan_of("imgs", keys=["k"]).describe() == "folder imgs: files, one mini-batch per partition of k"
    assert plan_of("imgs", keys=["k"]).kind == FILES
    (tmp_path / "t.csv").write_text("k\n1\n")
    assert plan_of("t.csv", type="mltable", keys=["k"]).kind == TABULAR
