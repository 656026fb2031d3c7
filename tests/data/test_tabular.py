"""Tabular inputs: CSV/TSV/JSONL byte ranges, Parquet row groups and row ranges, DataFrames.

The central property: concatenating read_mini_batch over all descriptors gives exactly what pandas
reads from the whole file (every row once, same index), for sizes down to less than one row."""

from __future__ import annotations

import io
import os
import random
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from prs_nb.data import TABULAR, read_mini_batch
from prs_nb.data.base import TableSlice
from prs_nb.data.tabular import _RowCounter
from prs_nb.errors import InputDataError

SIZES = ["1", "37", "500", "4KB", "1MB"]


def sample_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(n),
        "x": rng.normal(size=n).round(6),
        "name": [f'n{i}, "q"' if i % 7 == 0 else f"n{i}" for i in range(n)],  # quoted fields with commas
        "flag": rng.integers(0, 2, size=n).astype(bool),
    })


def read_all(plan) -> tuple[list, list[pd.DataFrame]]:
    mbs = list(plan)
    return mbs, [read_mini_batch(mb) for mb in mbs]


def check_slices(mbs, frames) -> None:
    """items exact, global_row_index_lower_bound = rows before it in the same file, index from there."""
    before: dict[str, int] = {}
    for mb, df in zip(mbs, frames, strict=True):
        assert mb.kind == TABULAR and isinstance(mb.source, TableSlice)
        path = mb.source.path
        assert mb.items == len(df) > 0
        assert mb.global_row_index_lower_bound == before.get(path, 0)
        assert list(df.index) == list(range(before.get(path, 0), before.get(path, 0) + len(df)))
        before[path] = before.get(path, 0) + len(df)


@pytest.mark.parametrize("size", SIZES)
def test_csv_every_row_exactly_once(tmp_path, plan_of, size):
    df = sample_frame()
    df.to_csv(tmp_path / "t.csv", index=False)
    mbs, frames = read_all(plan_of("t.csv", type="mltable", size=size))
    pd.testing.assert_frame_equal(pd.concat(frames), pd.read_csv(tmp_path / "t.csv"))
    check_slices(mbs, frames)
    if size == "1":  # a size smaller than one row: one row per mini-batch
        assert len(mbs) == len(df)
    if size == "1MB":
        assert len(mbs) == 1


def test_csv_ranges_are_about_the_size(tmp_path, plan_of):
    sample_frame(5000).to_csv(tmp_path / "t.csv", index=False)
    mbs = list(plan_of("t.csv", type="mltable", size="16KB"))
    lengths = [mb.source.end - mb.source.start for mb in mbs]
    assert all(16384 <= n < 16384 + 200 for n in lengths[:-1]) and 0 < lengths[-1] <= 16384 + 200
    assert mbs[0].source.start == len("id,x,name,flag\n") and mbs[-1].source.end == os.path.getsize(tmp_path / "t.csv")
    assert all(a.source.end == b.source.start for a, b in zip(mbs, mbs[1:], strict=False))  # contiguous, no gap, no overlap
    assert mbs[0].source.columns == ("id", "x", "name", "flag") and dict(mbs[0].source.options)["sep"] == ","


@pytest.mark.parametrize("size", ["1", "200", "1MB"])
def test_tsv_separator_from_extension(tmp_path, plan_of, size):
    df = sample_frame(120)
    df.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    mbs, frames = read_all(plan_of("t.tsv", type="mltable", size=size))
    assert dict(mbs[0].source.options)["sep"] == "\t"
    pd.testing.assert_frame_equal(pd.concat(frames), pd.read_csv(tmp_path / "t.tsv", sep="\t"))
    check_slices(mbs, frames)


@pytest.mark.parametrize("size", SIZES)
def test_jsonl_every_row_exactly_once(tmp_path, plan_of, size):
    sample_frame(200).to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    mbs, frames = read_all(plan_of("t.jsonl", type="mltable", size=size))
    pd.testing.assert_frame_equal(pd.concat(frames), pd.read_json(tmp_path / "t.jsonl", lines=True))
    check_slices(mbs, frames)


@pytest.mark.parametrize("content", [
    b"a,b\n1,2\n3,4",  # no trailing newline
    b"a,b\r\n1,2\r\n3,4\r\n",  # CRLF
    b"a,b\r\n1,2\r\n\r\n3,4",  # CRLF, blank line, no trailing newline
    b"a,b\n\n1,2\n\n\n3,4\n\n",  # blank lines everywhere
    b"\xef\xbb\xbfa,b\n1,2\n3,4\n",  # UTF-8 byte-order mark
])
@pytest.mark.parametrize("size", ["1", "3", "1MB"])
def test_csv_line_ending_variants(tmp_path, plan_of, content, size):
    (tmp_path / "t.csv").write_bytes(content)
    mbs, frames = read_all(plan_of("t.csv", type="mltable", size=size))
    expected = pd.read_csv(tmp_path / "t.csv")
    assert list(expected.columns) == ["a", "b"]
    pd.testing.assert_frame_equal(pd.concat(frames), expected)
    check_slices(mbs, frames)
    assert sum(mb.items for mb in mbs) == 2


@pytest.mark.parametrize("content", [b"", b"a,b\n", b"a,b", b"a,b\n\n\n"])
def test_empty_and_header_only_files_give_no_mini_batch(tmp_path, plan_of, content):
    (tmp_path / "t.csv").write_bytes(content)
    assert list(plan_of("t.csv", type="mltable")) == []
    (tmp_path / "t.jsonl").write_bytes(content.replace(b"a,b", b""))
    assert list(plan_of("t.jsonl", type="mltable")) == []


def test_header_names_match_pandas(tmp_path, plan_of):
    (tmp_path / "t.csv").write_bytes(b'a,a,,"q,r"\n1,2,3,4\n')
    mbs, frames = read_all(plan_of("t.csv", type="mltable"))
    pd.testing.assert_frame_equal(frames[0], pd.read_csv(tmp_path / "t.csv"))


def test_row_counter_matches_a_reference_for_any_split():
    rng = random.Random(7)
    tokens = [b"x", b"yz", b"\n", b"\r\n"]
    for _ in range(400):
        data = b"".join(rng.choice(tokens) for _ in range(rng.randint(0, 30)))
        expected = sum(1 for line in data.split(b"\n") if line.strip(b"\r"))
        counter = _RowCounter()
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 5))))
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            counter.feed(data[a:b])
        assert counter.rows == expected, data
        if expected:  # the same count pandas gets from a one-column, header-less CSV
            assert len(pd.read_csv(io.BytesIO(data), header=None, names=["c"])) == expected, data


def test_folder_of_files_never_spans_two_files(tmp_path, plan_of):
    d = tmp_path / "tables"
    (d / "sub").mkdir(parents=True)
    frames_in = {"a.csv": sample_frame(50, 1), "b.csv": sample_frame(3, 2), "sub/c.csv": sample_frame(400, 3)}
    for name, df in frames_in.items():
        df.to_csv(d / name, index=False)
    (d / "_SUCCESS").write_bytes(b"")  # Spark/pyarrow conventions: not part of the table
    (d / ".c.csv.crc").write_bytes(b"\x00")
    mbs, frames = read_all(plan_of("tables", type="mltable", size="2KB"))
    check_slices(mbs, frames)
    by_file: dict[str, list[pd.DataFrame]] = {}
    for mb, df in zip(mbs, frames, strict=True):
        by_file.setdefault(os.path.relpath(mb.source.path, d), []).append(df)
    assert list(by_file) == ["a.csv", "b.csv", os.path.join("sub", "c.csv")]
    assert len(by_file["b.csv"]) == 1 and len(by_file[os.path.join("sub", "c.csv")]) > 3
    for name, parts in by_file.items():
        pd.testing.assert_frame_equal(pd.concat(parts), pd.read_csv(d / name))


def test_small_files_are_one_mini_batch_each(tmp_path, plan_of):
    for i in range(3):
        sample_frame(5, i).to_csv(tmp_path / f"{i}.csv", index=False)
    mbs = list(plan_of(str(tmp_path / "*.csv"), type="mltable"))
    assert [mb.items for mb in mbs] == [5, 5, 5]
    assert plan_of(str(tmp_path / "*.csv"), type="mltable").describe().endswith(": tabular, ~1MB per mini-batch")


def test_parquet_small_file_is_one_mini_batch(tmp_path, plan_of):
    df = sample_frame(100)
    df.to_parquet(tmp_path / "t.parquet", row_group_size=10)
    mbs, frames = read_all(plan_of("t.parquet", type="mltable"))
    assert len(mbs) == 1 and mbs[0].items == 100 and mbs[0].source.row_groups is None
    pd.testing.assert_frame_equal(frames[0], pd.read_parquet(tmp_path / "t.parquet"))


def test_parquet_groups_consecutive_row_groups(tmp_path, plan_of):
    df = sample_frame(2000)
    df.to_parquet(tmp_path / "t.parquet", row_group_size=100)
    md = pq.read_metadata(tmp_path / "t.parquet")
    rg_bytes = [sum(md.row_group(i).column(j).total_compressed_size for j in range(md.num_columns))
                for i in range(md.num_row_groups)]
    size = rg_bytes[0] + rg_bytes[1] + rg_bytes[2]  # room for exactly three row groups
    mbs, frames = read_all(plan_of("t.parquet", type="mltable", size=str(size)))
    assert mbs[0].source.row_groups == (0, 1, 2) and mbs[0].items == 300
    groups = [g for mb in mbs for g in mb.source.row_groups]
    assert groups == list(range(20))  # every row group once, in order
    assert all(sum(rg_bytes[g] for g in mb.source.row_groups) <= size for mb in mbs)
    pd.testing.assert_frame_equal(pd.concat(frames), pd.read_parquet(tmp_path / "t.parquet"))
    check_slices(mbs, frames)


@pytest.mark.parametrize(("size", "rows"), [("1", 300), ("16KB", 20000), ("64KB", 20000)])
def test_parquet_single_big_row_group_is_split_into_row_ranges(tmp_path, plan_of, size, rows):
    df = sample_frame(rows)
    df.to_parquet(tmp_path / "t.parquet", row_group_size=1_000_000)
    assert pq.read_metadata(tmp_path / "t.parquet").num_row_groups == 1
    mbs, frames = read_all(plan_of("t.parquet", type="mltable", size=size))
    assert len(mbs) > 1 if size != "1" else len(mbs) == rows
    assert all(mb.source.row_groups == (0,) and mb.items == mb.source.row_stop - mb.source.row_start for mb in mbs)
    assert [mb.source.row_start for mb in mbs] == [mb.global_row_index_lower_bound for mb in mbs]
    pd.testing.assert_frame_equal(pd.concat(frames), pd.read_parquet(tmp_path / "t.parquet"))
    check_slices(mbs, frames)


def test_parquet_keeps_a_stored_index(tmp_path, plan_of):
    df = sample_frame(1000).set_index(pd.Index([f"k{i}" for i in range(1000)], name="key"))
    df.to_parquet(tmp_path / "t.parquet", row_group_size=100)
    mbs, frames = read_all(plan_of("t.parquet", type="mltable", size="1"))
    pd.testing.assert_frame_equal(pd.concat(frames), pd.read_parquet(tmp_path / "t.parquet"))


def test_empty_parquet_gives_no_mini_batch(tmp_path, plan_of):
    sample_frame(0).to_parquet(tmp_path / "t.parquet")
    assert list(plan_of("t.parquet", type="mltable")) == []


def test_dataframe_split_by_memory(plan_of):
    df = sample_frame(1000).set_index(pd.Index(np.arange(1000) * 3 + 5))
    per_row = df.memory_usage(deep=False).sum() / len(df)
    size = int(per_row * 64) + 1
    plan = plan_of(df, type="mltable", size=str(size))
    assert plan.describe() == f"DataFrame 1000 rows x 4 columns: tabular, ~{size} bytes per mini-batch"
    mbs, frames = read_all(plan)
    assert {mb.items for mb in mbs[:-1]} == {64} and sum(mb.items for mb in mbs) == 1000
    assert all(chunk.memory_usage(deep=False).sum() <= size + 200 for chunk in frames)
    assert [mb.global_row_index_lower_bound for mb in mbs] == list(range(0, 1000, 64))
    pd.testing.assert_frame_equal(pd.concat(frames), df)  # original index kept


def test_dataframe_on_any_input_type_and_tiny_size(plan_of):
    df = sample_frame(5)
    plan = plan_of(df, type="uri_folder", size="1")
    assert plan.kind == TABULAR
    assert [mb.items for mb in plan] == [1] * 5
    assert [mb.items for mb in plan_of(df)] == [5]  # default 1MB
    assert list(plan_of(df.iloc[:0])) == []


def test_malformed_csv_row_fails_only_its_mini_batch(tmp_path, plan_of):
    lines = [b"a,b"] + [b"%d,%d" % (i, i) for i in range(100)]
    lines[60] = b"59,59,extra"
    (tmp_path / "t.csv").write_bytes(b"\n".join(lines) + b"\n")
    mbs = list(plan_of("t.csv", type="mltable", size="100"))
    bad = [mb for mb in mbs if mb.source.start <= sum(len(x) + 1 for x in lines[:60]) < mb.source.end]
    assert len(bad) == 1
    for mb in mbs:
        if mb is bad[0]:
            with pytest.raises(InputDataError) as err:
                read_mini_batch(mb)
            msg = str(err.value)
            assert str(tmp_path / "t.csv") in msg and f"bytes {mb.source.start}-{mb.source.end}" in msg
            assert "Expected 2 fields" in msg and f"mini-batch {mb.index} of input 'data'" in msg
        else:
            assert len(read_mini_batch(mb)) == mb.items


def test_bad_json_line_is_an_input_error(tmp_path, plan_of):
    (tmp_path / "t.jsonl").write_bytes(b'{"a": 1}\n{"a": \n')
    mb = next(iter(plan_of("t.jsonl", type="mltable")))
    with pytest.raises(InputDataError, match=r"t\.jsonl \(jsonl, bytes 0-16\).*one JSON object"):
        read_mini_batch(mb)


def test_file_removed_after_planning_is_an_input_error(tmp_path, plan_of):
    sample_frame(10).to_csv(tmp_path / "t.csv", index=False)
    mb = next(iter(plan_of("t.csv", type="mltable")))
    os.remove(tmp_path / "t.csv")
    with pytest.raises(InputDataError, match=r"cannot read .*t\.csv \(csv, bytes .*FileNotFoundError"):
        read_mini_batch(mb)


def test_unknown_table_extension_is_an_error(tmp_path, plan_of):
    (tmp_path / "t.xlsx").write_bytes(b"x")
    with pytest.raises(InputDataError, match=r"cannot read .*t\.xlsx as a table \(extension '\.xlsx'\); "
                                             r"supported table files: \.csv, \.tsv, \.parquet"):
        plan_of("t.xlsx", type="mltable")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "README").write_bytes(b"x")
    with pytest.raises(InputDataError, match=r"README as a table \(no extension\).*uri_folder"):
        list(plan_of("d", type="mltable"))


def test_mixed_table_types_are_an_error(tmp_path, plan_of):
    (tmp_path / "d").mkdir()
    sample_frame(3).to_csv(tmp_path / "d" / "a.csv", index=False)
    sample_frame(3).to_parquet(tmp_path / "d" / "b.parquet")
    with pytest.raises(InputDataError, match=r"mixed table file types: .*a\.csv is \.csv but .*b\.parquet is "
                                             r"\.parquet.*glob"):
        list(plan_of("d", type="mltable"))


def test_corrupt_parquet_is_an_error(tmp_path, plan_of):
    (tmp_path / "t.parquet").write_bytes(b"not parquet at all")
    # listed as one mini-batch that fails when read: a bad file counts against the thresholds and the
    # other files of the input still run
    [mb] = list(plan_of("t.parquet", type="mltable"))
    with pytest.raises(InputDataError, match=r"cannot read .*t\.parquet as Parquet"):
        read_mini_batch(mb)


def test_driver_memory_stays_flat_on_a_big_csv(tmp_path, plan_of):
    row = b"12345,0.123456789,some text here,another field\n"
    with open(tmp_path / "big.csv", "wb") as f:
        f.write(b"a,b,c,d\n")
        block = row * 20000
        for _ in range(24):  # ~23 MB
            f.write(block)
    tracemalloc.start()
    try:
        count = sum(mb.items for mb in plan_of("big.csv", type="mltable"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 24 * 20000
    assert peak < 4 * 1024 * 1024, f"driver peak {peak} bytes while cutting a 23 MB file"


def test_descriptors_are_lazy_per_range(tmp_path, plan_of, monkeypatch):
    sample_frame(3000).to_csv(tmp_path / "t.csv", index=False)
    from prs_nb.data import tabular

    fed: list[int] = []
    real_feed = tabular._RowCounter.feed

    def spy(self, buf):
        fed.append(len(buf))
        real_feed(self, buf)

    monkeypatch.setattr(tabular._RowCounter, "feed", spy)
    first = next(iter(plan_of("t.csv", type="mltable", size="1KB")))
    assert first.index == 0 and sum(fed) < 2048 < os.path.getsize(tmp_path / "t.csv")


def test_unreadable_table_file_is_an_error(tmp_path, plan_of, monkeypatch):
    sample_frame(3).to_csv(tmp_path / "t.csv", index=False)
    from prs_nb.data import tabular

    def refusing(path, *args, **kwargs):  # chmod 000 does not stop root, so refuse the way the OS would
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(tabular, "open", refusing, raising=False)
    [mb] = list(plan_of("t.csv", type="mltable"))  # the unreadable file is one failing mini-batch
    with pytest.raises(InputDataError, match=r"input 'data': cannot open .*t\.csv: Permission denied; check that it "
                                             r"exists and is readable"):
        read_mini_batch(mb)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_uncounted_ranges_still_hold_every_row_once(tmp_path, size, fmt):
    """count_rows=False (run() takes no context): boundaries found with small reads, rows counted by
    the reader only; the data read back is the same as with counting."""
    from prs_nb.data import plan_input
    from prs_nb.spec import Input, JobSpec, RunFunction

    df = sample_frame()
    name = f"t.{fmt}"
    if fmt == "csv":
        df.to_csv(tmp_path / name, index=False)
        whole = pd.read_csv(tmp_path / name)
    else:
        df.to_json(tmp_path / name, orient="records", lines=True)
        whole = pd.read_json(tmp_path / name, lines=True)
    spec = JobSpec(name="t", inputs={"data": Input(type="mltable")}, input_data="${{inputs.data}}",
                   bindings={"data": name}, mini_batch_size=size, task=RunFunction())
    counted = list(plan_input(spec, spec.effective(), base_dir=str(tmp_path)))
    fast = list(plan_input(spec, spec.effective(), base_dir=str(tmp_path), count_rows=False))
    assert all(mb.items is None and mb.global_row_index_lower_bound is None for mb in fast)
    assert [mb.source.end for mb in fast] == [mb.source.end for mb in counted]
    frames = [read_mini_batch(mb) for mb in fast]
    got = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(got, whole.reset_index(drop=True))
