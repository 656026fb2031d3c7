"""MLTable files: read transformations, header modes, partition formats, file lists, errors."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prs_nb.data import FILES, TABULAR, read_mini_batch
from prs_nb.data.mltable import load_mltable
from prs_nb.errors import InputDataError, MLTableError


def write_mltable(folder: Path, doc: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    (folder / "MLTable").write_text(text)
    return folder


def read_all(plan) -> pd.DataFrame:
    return pd.concat([read_mini_batch(mb) for mb in plan], ignore_index=True)


def test_azure_partitioned_example(tmp_path, plan_of):
    """The layout of Azure's v2 partition example: store/brand folders, columns re-added from the path."""
    full = pd.DataFrame({"store": [1, 1, 2, 2, 2], "brand": ["x", "y", "x", "x", "y"], "qty": [5, 6, 7, 8, 9]})
    root = tmp_path / "tabular_output_data"
    for (store, brand), g in full.groupby(["store", "brand"]):
        (root / str(store) / brand).mkdir(parents=True)
        g.drop(columns=["store", "brand"]).to_csv(root / str(store) / brand / "partitioned_data.csv", index=False)
    write_mltable(root, {
        "type": "mltable",
        "paths": [{"pattern": "./**/*.csv"}],
        "transformations": [
            {"read_delimited": {"delimiter": ",", "encoding": "ascii", "header": "all_files_same_headers",
                                "empty_as_string": False, "include_path_column": True}},
            {"extract_columns_from_partition_format": {"partition_format": "{store}/{brand}/{file_name}.{extension}"}},
            {"drop_columns": ["Path", "file_name", "extension"]},
        ],
    })
    plan = plan_of("tabular_output_data", type="mltable", keys=["store", "brand"])
    assert plan.kind == TABULAR
    assert plan.describe() == ("MLTable tabular_output_data (csv): tabular, one mini-batch per partition of "
                               "store, brand")
    mbs = list(plan)
    assert [mb.partition_key_value for mb in mbs] == [
        {"store": "1", "brand": "x"}, {"store": "1", "brand": "y"}, {"store": "2", "brand": "x"},
        {"store": "2", "brand": "y"}]
    assert [mb.items for mb in mbs] == [1, 1, 2, 1]
    pd.testing.assert_frame_equal(read_mini_batch(mbs[2]),
                                  pd.DataFrame({"qty": [7, 8], "store": ["2", "2"], "brand": ["x", "x"]}))


def test_partition_format_columns_without_partition_keys(tmp_path, plan_of):
    root = tmp_path / "t"
    for day in ("2024/01/02", "2024/01/03"):
        (root / day).mkdir(parents=True)
        pd.DataFrame({"v": range(50)}).to_csv(root / day / "data.csv", index=False)
    write_mltable(root, {"paths": [{"pattern": "./**/*.csv"}], "transformations": [
        {"read_delimited": {}}, {"extract_columns_from_partition_format": "{day:yyyy/MM/dd}/data.csv"}]})
    mbs = list(plan_of("t", type="mltable", size="64"))
    assert len(mbs) > 2
    df = read_all(mbs)
    assert len(df) == 100 and df["day"].min() == datetime(2024, 1, 2) and str(df["day"].dtype).startswith("datetime64")
    plan = plan_of("t", type="mltable", keys=["day"])
    assert [mb.partition_key_value for mb in plan] == [{"day": datetime(2024, 1, 2)}, {"day": datetime(2024, 1, 3)}]


def test_unquoted_yaml_partition_format_is_understood(tmp_path):
    root = write_mltable(tmp_path / "t", "paths:\n  - folder: .\ntransformations:\n  - read_parquet:\n"
                                        "  - extract_columns_from_partition_format: {timestamp:yyyy/MM/dd}\n")
    mlt = load_mltable(str(root / "MLTable"), where="input 'x'")
    assert mlt.partition_format is not None and mlt.partition_format.fmt == "{timestamp:yyyy/MM/dd}"
    assert mlt.partition_format.values("/a/2023/12/31") == {"timestamp": datetime(2023, 12, 31)}


def test_header_modes_delimiter_and_path_column(tmp_path, plan_of):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.txt").write_text("x;y\n1;2\n3;4\n")
    (root / "b.txt").write_text("5;6\n")
    doc = {"paths": [{"file": "a.txt"}, {"file": "./b.txt"}],
           "transformations": [{"read_delimited": {"delimiter": ";", "header": "from_first_file",
                                                   "include_path_column": True}}]}
    write_mltable(root, doc)
    df = read_all(plan_of("t", type="mltable", size="1"))
    assert list(df.columns) == ["x", "y", "Path"]
    assert df[["x", "y"]].values.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert list(df["Path"]) == [str(root / "a.txt")] * 2 + [str(root / "b.txt")]
    doc["transformations"] = [{"read_delimited": {"delimiter": ";", "header": "no_header"}}]
    write_mltable(root, doc)
    df = read_all(plan_of("t", type="mltable"))
    assert list(df.columns) == ["Column1", "Column2"]
    # types are inferred per mini-batch (per file here): "x" makes a.txt's column text, b.txt's stays int
    assert df["Column1"].tolist() == ["x", "1", "3", 5]


def test_encoding_and_empty_as_string(tmp_path, plan_of):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.csv").write_bytes("name,v\ncafé,1\n,2\n".encode("latin-1"))
    write_mltable(root, {"paths": [{"folder": "."}], "transformations": [
        {"read_delimited": {"encoding": "latin1", "empty_as_string": True}}]})
    df = read_all(plan_of("t", type="mltable"))
    assert df["name"].tolist() == ["café", ""]


def test_utf16_and_multi_line_files_are_read_whole(tmp_path, plan_of):
    root = tmp_path / "u"
    root.mkdir()
    (root / "a.csv").write_bytes("a,b\n1,é\n2,x\n".encode("utf-16"))
    write_mltable(root, {"paths": [{"file": "a.csv"}], "transformations": [{"read_delimited": {"encoding": "utf16"}}]})
    mbs = list(plan_of("u", type="mltable", size="1"))
    assert len(mbs) == 1 and mbs[0].items is None and mbs[0].source.end == -1
    pd.testing.assert_frame_equal(read_mini_batch(mbs[0]), pd.DataFrame({"a": [1, 2], "b": ["é", "x"]}))
    root = tmp_path / "m"
    root.mkdir()
    (root / "a.csv").write_text('a,b\n1,"two\nlines"\n2,x\n')
    write_mltable(root, {"paths": [{"file": "a.csv"}],
                         "transformations": [{"read_delimited": {"support_multi_line": True}}]})
    mbs = list(plan_of("m", type="mltable", size="1"))
    assert len(mbs) == 1
    pd.testing.assert_frame_equal(read_mini_batch(mbs[0]), pd.read_csv(root / "a.csv"))


def test_read_parquet_and_keep_columns(tmp_path, plan_of):
    root = tmp_path / "p"
    root.mkdir()
    pd.DataFrame({"a": [1, 2], "b": [3, 4], "c": [5, 6]}).to_parquet(root / "part-0.bin")
    write_mltable(root, {"paths": [{"pattern": "./part-*"}], "transformations": [
        {"read_parquet": {"include_path_column": False}}, {"keep_columns": ["c", "a"]}]})
    pd.testing.assert_frame_equal(read_all(plan_of("p", type="mltable")), pd.DataFrame({"c": [5, 6], "a": [1, 2]}))
    write_mltable(root, {"paths": [{"pattern": "./part-*"}], "transformations": [
        "read_parquet", {"keep_columns": ["zz"]}]})
    mb = next(iter(plan_of("p", type="mltable")))
    with pytest.raises(InputDataError, match=r"keep_columns names 'zz', which .*part-0\.bin \(parquet\) does not "
                                             r"have; its columns are a, b, c"):
        read_mini_batch(mb)


def test_read_json_lines_drops_invalid_lines(tmp_path, plan_of):
    root = tmp_path / "j"
    root.mkdir()
    (root / "a.json").write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    write_mltable(root, {"paths": [{"file": "a.json"}], "transformations": [
        {"read_json_lines": {"invalid_lines": "drop"}}]})
    assert read_all(plan_of("j", type="mltable"))["a"].tolist() == [1, 3]


def test_mltable_without_read_transformation_is_a_file_list(tmp_path, plan_of):
    root = tmp_path / "imgs"
    for store in ("s1", "s2"):
        (root / "data" / store).mkdir(parents=True)
        for i in range(3):
            (root / "data" / store / f"{i}.png").write_bytes(b"x")
    write_mltable(root, {"paths": [{"pattern": "./data/**/*.png"}]})
    plan = plan_of("imgs", type="mltable", size="4")
    assert plan.kind == FILES and plan.describe() == "MLTable imgs (file list): files, 4 per mini-batch"
    assert [mb.items for mb in plan] == [4, 2]
    write_mltable(root, {"paths": [{"folder": "./data"}],
                         "transformations": [{"extract_columns_from_partition_format": "{store}/{name}.png"}]})
    mbs = list(plan_of("imgs", type="mltable", keys=["store"]))
    assert [(mb.partition_key_value, mb.items) for mb in mbs] == [({"store": "s1"}, 3), ({"store": "s2"}, 3)]


def test_mltable_file_itself_can_be_bound(tmp_path, plan_of):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.csv").write_text("a\n1\n")
    write_mltable(root, {"paths": [{"file": "a.csv"}], "transformations": ["read_delimited"]})
    assert read_all(plan_of(os.path.join("t", "MLTable"), type="mltable"))["a"].tolist() == [1]


def test_folder_entry_skips_the_mltable_file(tmp_path, plan_of):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.csv").write_text("a\n1\n")
    write_mltable(root, {"paths": [{"folder": "."}], "transformations": [{"read_delimited": {}}]})
    assert [mb.source.path for mb in plan_of("t", type="mltable")] == [str(root / "a.csv")]


@pytest.mark.parametrize(("text", "message"), [
    ("paths: [file: a.csv\n", r"malformed YAML"),
    ("- just\n- a list\n", r"expected a YAML mapping with paths: and transformations: \(got list\)"),
    ("type: mltable\n", r"paths must be a non-empty list of entries like '- file: \./a\.csv'"),
    ("paths:\n  - file: a.csv\n    folder: b\n", r"each paths entry needs exactly one of file:, folder: or pattern:"),
    ("paths: [{file: a.csv}]\ntransformations:\n  - filter: 'col(\"a\") > 1'\n",
     r"transformation 'filter' is not supported by prs_nb locally \(it would change the rows, so it is not "
     r"ignored\); supported: read_delimited, read_parquet"),
    ("paths: [{file: a.csv}]\ntransformations: [read_parquet, read_delimited]\n", "more than one read transformation"),
    ("paths: [{file: a.csv}]\ntransformations: [{read_delimited: {header: first}}]\n",
     r"header must be one of all_files_same_headers, all_files_different_headers, from_first_file, no_header"),
    ("paths: [{file: a.csv}]\ntransformations: [{read_delimited: {delimiter: '::'}}]\n",
     r"delimiter must be one character"),
    ("paths: [{file: a.csv}]\ntransformations: [{read_delimited: {seperator: ';'}}]\n",
     r"read_delimited does not take seperator; it takes delimiter, empty_as_string"),
    ("paths: [{file: a.csv}]\ntransformations: [{read_delimited: {encoding: klingon}}]\n",
     r"unknown encoding 'klingon'; use one of utf8, utf8bom"),
    ("paths: [{file: a.csv}]\ntransformations: [{read_parquet: {include_path_column: maybe}}]\n",
     r"include_path_column must be true or false \(got 'maybe'\)"),
    ("paths: [{file: 'azureml://datastores/d/paths/a.csv'}]\n", r".*is a remote URI, an Azure ML datastore URI"),
    ("paths: [{file: 'nosuchproto://bucket/a.csv'}]\n", r".*protocol 'nosuchproto', which fsspec does not know"),
    ("paths: [{file: missing.csv}]\n", r"path .*missing\.csv' does not exist"),
    ("paths: [{file: a.csv}]\ntransformations: [{drop_columns: [a]}]\n", r"drop_columns/keep_columns need a read"),
    ("paths: [{file: a.csv}]\ntransformations: [{extract_columns_from_partition_format: 'plain'}]\n",
     r"partition_format 'plain' has no \{column\} fields"),
    ("paths: [{file: a.csv}]\ntype: dataset\n", r"type must be mltable"),
])
def test_malformed_mltable_errors(tmp_path, plan_of, text, message):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.csv").write_text("a\n1\n")
    write_mltable(root, text)
    with pytest.raises(MLTableError, match=r"input 'data': MLTable .*MLTable: " + message):
        plan_of("t", type="mltable")


def test_partition_format_that_does_not_match_a_file(tmp_path, plan_of):
    root = tmp_path / "t"
    (root / "x").mkdir(parents=True)
    (root / "x" / "a.csv").write_text("a\n1\n")
    (root / "b.csv").write_text("a\n2\n")
    write_mltable(root, {"paths": [{"pattern": "./**/*.csv"}], "transformations": [
        "read_delimited", {"extract_columns_from_partition_format": "{store}/{f}.csv"}]})
    with pytest.raises(InputDataError, match=r"file .*b\.csv does not match the MLTable partition_format "
                                             r"'\{store\}/\{f\}\.csv'"):
        list(plan_of("t", type="mltable"))


# ---------------------------------------------------------------------------------- skip / take
@pytest.mark.parametrize(("steps", "expected"), [
    ([{"skip": 7}], list(range(7, 40))),
    ([{"take": 5}], list(range(5))),
    ([{"skip": 13}, {"take": 9}], list(range(13, 22))),
    ([{"take": 30}, {"skip": 25}], list(range(25, 30))),
    ([{"skip": 3}, {"skip": 4}, {"take": 20}, {"take": 2}], [7, 8]),
    ([{"skip": 100}], []),
    ([{"take": 0}], []),
])
def test_skip_take_cut_byte_ranges_across_files(tmp_path, plan_of, steps, expected):
    """Two CSV files cut into several byte ranges; the window crosses range and file boundaries."""
    root = tmp_path / "t"
    root.mkdir()
    pd.DataFrame({"v": range(0, 25)}).to_csv(root / "a.csv", index=False)
    pd.DataFrame({"v": range(25, 40)}).to_csv(root / "b.csv", index=False)
    write_mltable(root, {"paths": [{"pattern": "./*.csv"}], "transformations": ["read_delimited", *steps]})
    mbs = list(plan_of("t", type="mltable", size="20"))
    got = [v for mb in mbs for v in read_mini_batch(mb)["v"].tolist()]
    assert got == expected
    assert sum(mb.items for mb in mbs) == len(expected)
    for mb in mbs:  # the context's row index still points into the file
        df = read_mini_batch(mb)
        assert len(df) == mb.items and df.index[0] == mb.global_row_index_lower_bound
        assert df["v"].iloc[0] - (25 if mb.source.path.endswith("b.csv") else 0) == mb.global_row_index_lower_bound


def test_skip_take_on_parquet_and_multi_line_files(tmp_path, plan_of):
    root = tmp_path / "p"
    root.mkdir()
    pd.DataFrame({"v": range(10)}).to_parquet(root / "a.parquet", row_group_size=3)
    write_mltable(root, {"paths": [{"file": "a.parquet"}], "transformations": ["read_parquet", {"skip": 2},
                                                                            {"take": 5}]})
    assert read_all(plan_of("p", type="mltable", size="1"))["v"].tolist() == [2, 3, 4, 5, 6]
    root = tmp_path / "m"
    root.mkdir()
    (root / "a.csv").write_text('a,b\n1,"two\nlines"\n2,x\n3,y\n')
    write_mltable(root, {"paths": [{"file": "a.csv"}], "transformations": [
        {"read_delimited": {"support_multi_line": True}}, {"skip": 1}]})
    mbs = list(plan_of("m", type="mltable"))
    assert [mb.items for mb in mbs] == [2]  # counted by reading the file: a quoted newline is not a row
    assert read_all(mbs)["a"].tolist() == [2, 3]


def test_skip_take_on_a_file_list(tmp_path, plan_of):
    root = tmp_path / "f"
    root.mkdir()
    for i in range(12):
        (root / f"{i:02d}.png").write_bytes(b"x")
    write_mltable(root, {"paths": [{"pattern": "./*.png"}], "transformations": [{"skip": 3}, {"take": 7}]})
    plan = plan_of("f", type="mltable", size="3")
    assert plan.kind == FILES and plan.describe().endswith("3 per mini-batch, skip 3, take 7")
    assert [[os.path.basename(p) for p in mb.source] for mb in plan] == [
        ["03.png", "04.png", "05.png"], ["06.png", "07.png", "08.png"], ["09.png"]]


def test_skip_take_with_partition_keys_is_an_error(tmp_path, plan_of):
    root = tmp_path / "t"
    (root / "s1").mkdir(parents=True)
    (root / "s1" / "a.csv").write_text("a\n1\n")
    write_mltable(root, {"paths": [{"pattern": "./**/*.csv"}], "transformations": [
        "read_delimited", {"extract_columns_from_partition_format": "{store}/{f}.csv"}, {"take": 1}]})
    with pytest.raises(MLTableError, match=r"uses skip/take, which cannot be combined with partition_keys \(store\)"):
        plan_of("t", type="mltable", keys=["store"])


@pytest.mark.parametrize(("step", "advice"), [
    ("filter: 'col(\"a\") > 1'", r"filter the rows in run\(\)"),
    ("take_random_sample: {probability: 0.1, seed: 1}", r"sample in run\(\)"),
    ("convert_column_types: [{columns: a, column_type: int}]", r"convert in run\(\)"),
    ("read_delta_lake: {timestamp_as_of: '2022-08-26T00:00:00Z'}", r"export the Delta table to Parquet"),
    ("split_column: {}", r"remove it and do the same in run\(\)"),
])
def test_unsupported_transformations_name_key_file_and_fix(tmp_path, plan_of, step, advice):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.csv").write_text("a\n1\n")
    write_mltable(root, f"paths: [{{file: a.csv}}]\ntransformations:\n  - read_delimited: {{}}\n  - {step}\n")
    key = step.split(":")[0]
    with pytest.raises(MLTableError, match=rf"input 'data': MLTable {root}/MLTable: transformation '{key}' is not "
                                           rf"supported by prs_nb locally .*To run this job locally: {advice}"):
        plan_of("t", type="mltable")


@pytest.mark.parametrize("bad", ["-1", "ten", "1.5", "true"])
def test_skip_take_need_a_count(tmp_path, plan_of, bad):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.csv").write_text("a\n1\n")
    write_mltable(root, f"paths: [{{file: a.csv}}]\ntransformations: [read_delimited, {{take: {bad}}}]\n")
    with pytest.raises(MLTableError, match=r"take takes a number of rows >= 0, e.g. '- take: 10'"):
        plan_of("t", type="mltable")


def test_mltable_tabular_and_file_list_jobs_end_to_end(tmp_path):
    """Through run_job on the inline backend: tabular mini-batches are DataFrames, a file-list MLTable
    gives lists of paths (the contract's rule: a read transformation makes it tabular)."""
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    root = tmp_path / "t"
    root.mkdir()
    pd.DataFrame({"v": range(30)}).to_csv(root / "a.csv", index=False)
    write_mltable(root, {"paths": [{"file": "a.csv"}], "transformations": ["read_delimited", {"skip": 10}]})
    job = parallel_run_function(
        name="mlt", inputs={"t": Input(type="mltable")}, outputs={"o": Output(type="uri_folder")},
        input_data="${{inputs.t}}", mini_batch_size="40",
        task=RunFunction(run=_kind_and_len, append_row_to="${{outputs.o}}"))
    r = job(t=Input(type="mltable", path=str(root))).run(backend="inline", progress=False,
                                                         runs_root=str(tmp_path / "runs"))
    assert r.status == "Completed" and r.counts["items_total"] == 20
    assert {line.split()[0] for line in r.read_lines()} == {"DataFrame"}
    write_mltable(root, {"paths": [{"file": "a.csv"}]})
    r = job(t=Input(type="mltable", path=str(root))).run(backend="inline", progress=False,
                                                         runs_root=str(tmp_path / "runs"))
    assert r.status == "Completed" and r.read_lines() == ["list 1"]


def _kind_and_len(mini_batch):
    return [f"{type(mini_batch).__name__} {len(mini_batch)}"] * len(mini_batch)


@pytest.mark.parametrize(("mode", "kind"), [(None, TABULAR), ("direct", TABULAR), ("ro_mount", FILES),
                                            ("download", FILES), ("eval_mount", FILES)])
def test_mode_decides_tabular_or_file_list(tmp_path, mode, kind):
    """Contract 3.2: tabular = mltable in direct mode with a read transformation; mounted or downloaded,
    the job gets the files the MLTable lists."""
    from prs_nb.data import plan_input
    from prs_nb.spec import Input, JobSpec, RunFunction

    root = tmp_path / "t"
    root.mkdir()
    for i in range(3):
        pd.DataFrame({"v": [i]}).to_csv(root / f"{i}.csv", index=False)
    write_mltable(root, {"paths": [{"pattern": "./*.csv"}], "transformations": ["read_delimited", {"skip": 1}]})
    for declared, bound in ((Input(type="mltable", mode=mode), Input(type="mltable", path=str(root))),
                            (Input(type="mltable"), Input(type="mltable", path=str(root), mode=mode))):
        spec = JobSpec(name="t", inputs={"d": declared}, input_data="${{inputs.d}}", bindings={"d": bound},
                       task=RunFunction(run=len))
        plan = plan_input(spec, spec.effective())
        assert plan.kind == kind
        data = [read_mini_batch(mb) for mb in plan]
        if kind == FILES:  # skip applies to the files
            assert [os.path.basename(p) for p in data[0]] == ["1.csv", "2.csv"]
        else:
            assert pd.concat(data)["v"].tolist() == [1, 2]


def test_file_list_leaves_out_the_mltable_file_itself(tmp_path, plan_of):
    root = tmp_path / "f"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(b"x")
    write_mltable(root, {"paths": [{"folder": "."}]})
    assert [os.path.basename(p) for mb in plan_of("f", type="mltable") for p in mb.source] == ["0.png", "1.png", "2.png"]
    write_mltable(root, {"paths": [{"folder": "."}], "transformations": [{"skip": 1}]})
    assert [os.path.basename(p) for mb in plan_of("f", type="mltable") for p in mb.source] == ["1.png", "2.png"]
