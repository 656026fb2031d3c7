"""Object-store inputs through fsspec, against a real S3 server (moto's, on 127.0.0.1) and the real
s3fs client: listing order and mini-batches equal to the same data in a local folder, tables read
by byte range / row group from the bucket, files downloaded for run() and deleted after it, jobs on
the inline, local and Ray backends writing the same rows as the local folder (oracle), and clear
errors for a missing bucket or prefix, an unknown protocol, a missing package and azureml://."""

from __future__ import annotations

import importlib.util
import os
import sys

import pandas as pd
import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.data import plan_input, read_mini_batch
from prs_nb.data.base import RemoteFile, TableSlice
from prs_nb.errors import InputDataError
from prs_nb.spec import JobSpec

BUCKET = "prs-nb-test"
ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def _frame(n: int = 600) -> pd.DataFrame:
    return pd.DataFrame({"id": range(n), "store": [f"s{i % 3}" for i in range(n)],
                         "x": [i * 0.5 for i in range(n)], "name": [f"n{i}" for i in range(n)]})


def _make_tree(root) -> None:
    """The same data a job reads from the bucket and from the local folder (oracle)."""
    files = root / "files"
    for i in range(23):
        d = files / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:03d}.txt").write_text(f"content {i}")
    (files / "a.txt").write_text("top")  # "a.txt" sorts before "sub0/...", after nothing
    (files / ".hidden").write_text("kept: Azure mounts list hidden files")
    tables = root / "tables"
    tables.mkdir()
    df = _frame()
    df.to_csv(tables / "t.csv", index=False)
    df.to_json(tables / "t.jsonl", orient="records", lines=True)
    df.to_parquet(tables / "t.parquet", row_group_size=50)
    for store, part in df.groupby("store"):
        d = root / "hive" / f"store={store}"
        d.mkdir(parents=True)
        part.drop(columns=["store"]).to_csv(d / "part.csv", index=False)
    (root / "hive" / "_SUCCESS").write_text("")  # not part of the table
    mlt = root / "mlt"
    (mlt / "data").mkdir(parents=True)
    df.iloc[:300].to_csv(mlt / "data" / "a.csv", index=False)
    df.iloc[300:].to_csv(mlt / "data" / "b.csv", index=False)
    (mlt / "MLTable").write_text("paths:\n  - pattern: ./data/*.csv\ntransformations:\n"
                                 "  - read_delimited: {delimiter: ','}\n")
    whole = root / "whole"  # files read whole by the worker: multi-line CSV fields, UTF-16 JSON Lines
    (whole / "csv").mkdir(parents=True)
    df.iloc[:250].to_csv(whole / "csv" / "a.csv", index=False)
    df.iloc[250:].to_csv(whole / "csv" / "b.csv", index=False)
    (whole / "csv" / "MLTable").write_text("paths:\n  - pattern: ./*.csv\ntransformations:\n"
                                           "  - read_delimited: {support_multi_line: true}\n  - skip: 5\n")
    (whole / "jsonl").mkdir()
    (whole / "jsonl" / "t.jsonl").write_bytes(df.to_json(orient="records", lines=True).encode("utf-16"))
    (whole / "jsonl" / "MLTable").write_text("paths:\n  - file: ./t.jsonl\ntransformations:\n"
                                             "  - read_json_lines: {encoding: utf16}\n")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 server holding the test tree under s3://prs-nb-test/data/; yields (local root, s3 root).

    Credentials and the endpoint are environment variables only (what s3fs reads), so worker
    processes inherit them and Ray actors get them through the job's environment_variables."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_DEFAULT_REGION="us-east-1")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    root = tmp_path_factory.mktemp("remote_src")
    _make_tree(root)
    fs.mkdir(BUCKET)
    for sub in ("files", "tables", "hive", "mlt", "whole"):
        fs.put(str(root / sub), f"{BUCKET}/data/{sub}", recursive=True)
    fs.pipe({f"{BUCKET}/data/files/sub1/": b"", f"{BUCKET}/data/files/empty/": b""})  # folder markers: not files
    try:
        yield root, f"s3://{BUCKET}/data"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _env() -> dict[str, str]:
    return {k: os.environ[k] for k in ENV_KEYS}


def _spec(value, itype="uri_folder", size=None, keys=None) -> JobSpec:
    return JobSpec(name="t", inputs={"data": Input(type=itype)}, input_data="${{inputs.data}}",
                   bindings={"data": value}, mini_batch_size=size, partition_keys=keys, task=RunFunction())


def _plan(value, **kw):
    spec = _spec(value, **kw)
    return list(plan_input(spec, spec.effective()))


def _local_view(source, local: str, remote: str):
    """A descriptor's source with the bucket root replaced by the local root (for comparison)."""
    if isinstance(source, list):
        return [_local_view(p, local, remote) for p in source]
    if isinstance(source, RemoteFile):
        return source.uri.replace(remote, local)
    if isinstance(source, TableSlice):
        import dataclasses

        return dataclasses.replace(source, path=source.path.replace(remote, local))
    return source


# ---------------------------------------------------------------- planning: same as the local folder
@pytest.mark.parametrize("sub, itype, size, keys", [
    ("files", "uri_folder", "4", None),
    ("files/", "uri_folder", "5", None),
    ("files/sub1/*.txt", "uri_folder", "2", None),
    ("files/**/0?[0-4].txt", "uri_folder", "3", None),
    ("files/a.txt", "uri_file", None, None),
    ("tables/t.csv", "mltable", "2KB", None),
    ("tables/t.jsonl", "mltable", "3KB", None),
    ("tables/t.parquet", "mltable", "1KB", None),
    ("hive", "mltable", None, ["store"]),
    ("hive", "mltable", "4KB", None),
])
def test_remote_plan_equals_the_local_plan(s3, sub, itype, size, keys):
    local_root, remote_root = s3
    local = _plan(f"{local_root}/{sub}", itype=itype, size=size, keys=keys)
    remote = _plan(f"{remote_root}/{sub}", itype=itype, size=size, keys=keys)
    assert len(remote) == len(local) > (0 if itype == "uri_file" else 1)
    for r, loc in zip(remote, local, strict=True):
        assert (r.index, r.kind, r.items, r.global_row_index_lower_bound, r.partition_key_value) == \
            (loc.index, loc.kind, loc.items, loc.global_row_index_lower_bound, loc.partition_key_value)
        assert _local_view(r.source, str(local_root), remote_root) == loc.source
    if itype == "uri_folder" and sub == "files":
        first = remote[0].source
        assert [f.rel for f in first] == [".hidden", "a.txt", "sub0/000.txt", "sub0/003.txt"]
        assert first[1].uri == f"{remote_root}/files/a.txt" and str(first[1]) == first[1].uri


@pytest.mark.parametrize("sub, itype, size, keys", [
    ("tables/t.csv", "mltable", "2KB", None),
    ("tables/t.jsonl", "mltable", "3KB", None),
    ("tables/t.parquet", "mltable", "1KB", None),  # row groups of 50 rows
    ("tables/t.parquet", "mltable", "200", None),  # a row group cut into row ranges
    ("hive", "mltable", None, ["store"]),
    ("mlt", "mltable", "3KB", None),  # an MLTable file in the bucket, relative pattern
    ("whole/csv", "mltable", "3KB", None),  # whole files (support_multi_line), skip: 5
    ("whole/jsonl", "mltable", "3KB", ["store"]),  # UTF-16: read whole; key values from a column
    ("tables/t.csv", "mltable", None, ["store"]),  # key values read from the CSV by the driver
    ("tables/t.parquet", "mltable", None, ["store"]),  # ... from the Parquet column
])
def test_remote_slices_read_the_same_rows_as_local(s3, sub, itype, size, keys):
    local_root, remote_root = s3
    local = _plan(f"{local_root}/{sub}", itype=itype, size=size, keys=keys)
    remote = _plan(f"{remote_root}/{sub}", itype=itype, size=size, keys=keys)
    assert len(remote) == len(local) > 1
    for r, loc in zip(remote, local, strict=True):
        assert (r.items, r.partition_key_value) == (loc.items, loc.partition_key_value)
        pd.testing.assert_frame_equal(read_mini_batch(r), read_mini_batch(loc))


def test_count_rows_off_and_path_column(s3):
    """Byte ranges found without counting (the engine's fast path) and include_path_column = the URI."""
    local_root, remote_root = s3
    spec = _spec(f"{remote_root}/tables/t.csv", itype="mltable", size="2KB")
    remote = list(plan_input(spec, spec.effective(), count_rows=False))
    spec_l = _spec(f"{local_root}/tables/t.csv", itype="mltable", size="2KB")
    local = list(plan_input(spec_l, spec_l.effective(), count_rows=False))
    assert [(m.source.start, m.source.end) for m in remote] == [(m.source.start, m.source.end) for m in local]
    from prs_nb.data import count_items

    assert [count_items(m) for m in remote] == [count_items(m) for m in local]
    assert sum(count_items(m) or 0 for m in remote) == 600


def test_local_mltable_listing_remote_paths(s3, tmp_path):
    local_root, remote_root = s3
    (tmp_path / "MLTable").write_text(
        f"paths:\n  - pattern: {remote_root}/hive/*/*.csv\ntransformations:\n  - read_delimited: {{}}\n"
        "  - extract_columns_from_partition_format: {partition_format: 'store={store}/{file}.csv'}\n"
        "  - drop_columns: [file]\n")
    got = pd.concat([read_mini_batch(m) for m in _plan(str(tmp_path), itype="mltable", keys=["store"])])
    assert sorted(got["id"]) == list(range(600))
    assert set(got["store"]) == {"s0", "s1", "s2"} and "file" not in got.columns


def test_remote_mltable_in_a_mount_mode_is_a_file_list(s3, tmp_path):
    _, remote_root = s3
    spec = _spec(Input(type="mltable", path=f"{remote_root}/mlt", mode="ro_mount"), itype="mltable")
    (mb,) = list(plan_input(spec, spec.effective()))
    # relative to the listing root: the pattern ./data/*.csv lists below data/
    assert [(f.uri, f.rel) for f in mb.source] == [(f"{remote_root}/mlt/data/{n}", n) for n in ("a.csv", "b.csv")]
    paths = read_mini_batch(mb, str(tmp_path))
    assert paths == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert sum(len(pd.read_csv(p)) for p in paths) == 600


# ---------------------------------------------------------------- files: downloaded for run()
def test_file_mini_batch_is_downloaded_with_relative_names(s3, tmp_path):
    _, remote_root = s3
    mb = _plan(f"{remote_root}/files", size="5")[1]
    paths = read_mini_batch(mb, str(tmp_path / "dl"))
    rels = [f.rel for f in mb.source]
    assert paths == [os.path.join(str(tmp_path / "dl"), *r.split("/")) for r in rels]
    assert [open(p).read() for p in paths] == [f"content {int(r[-7:-4])}" for r in rels]
    # two bound folders with the same relative names in one mini-batch: the second goes to dl2/1/
    both = _plan([f"{remote_root}/files/sub0", f"{remote_root}/files/sub0"], size="100")[0]
    paths = read_mini_batch(both, str(tmp_path / "dl2"))
    n = len(both.source) // 2
    assert paths[n:] == [os.path.join(str(tmp_path / "dl2"), "1", os.path.basename(p)) for p in paths[:n]]
    assert len(set(paths)) == 2 * n


def test_an_object_deleted_after_listing_fails_that_mini_batch(s3, tmp_path):
    local_root, remote_root = s3
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.put(str(local_root / "tables" / "t.csv"), f"{BUCKET}/gone/t.csv")
    fs.put(str(local_root / "files" / "a.txt"), f"{BUCKET}/gone/a.txt")
    csv_mb = _plan(f"{remote_root.rsplit('/', 1)[0]}/gone/t.csv", itype="mltable", size="2KB")[0]
    file_mb = _plan(f"{remote_root.rsplit('/', 1)[0]}/gone/a.txt", itype="uri_file")[0]
    fs.rm(f"{BUCKET}/gone", recursive=True)
    with pytest.raises(InputDataError, match=r"t\.csv"):
        read_mini_batch(csv_mb)
    with pytest.raises(InputDataError, match=r"cannot download s3://prs-nb-test/gone/a\.txt"):
        read_mini_batch(file_mb, str(tmp_path / "dl"))


# ---------------------------------------------------------------- jobs: same rows as the local folder
def file_rows(mini_batch):
    """Each file's sub-folder (kept by the download), name and content."""
    out = []
    for p in mini_batch:
        parent = os.path.basename(os.path.dirname(p))
        with open(p) as fh:
            out.append(f"{parent if parent.startswith('sub') else '.'}/{os.path.basename(p)} {fh.read()}")
    return out


def file_rows_checked(mini_batch):
    """file_rows, plus for the bucket's files (REMOTE set): every path is a local download under
    <run dir>/downloads/<node>/<process>/<index>/ (Ray: a temporary folder of the node) and no other
    mini-batch's folder is left beside it (the previous one went when its run() returned)."""
    rows = file_rows(mini_batch)
    for p in mini_batch if os.environ.get("REMOTE") else ():
        parts = p.split(os.sep)
        if "downloads" in parts:
            i = parts.index("downloads")
            process_dir = os.sep.join(parts[: i + 3])
            assert parts[i + 3] == str(mini_batch_index(p, process_dir)), p
            assert len(os.listdir(process_dir)) == 1, os.listdir(process_dir)
        else:
            assert "prs_nb-downloads-" in p, p
    return rows


def mini_batch_index(path, process_dir):
    return int(os.path.relpath(path, process_dir).split(os.sep)[0])


def table_rows(mini_batch):
    return [f"{r.id} {r.store} {r.x} {r.name}" for r in mini_batch.itertuples()]


def _job(run, itype, size, keys, name, remote=True):
    return parallel_run_function(
        name=name, inputs={"d": Input(type=itype)}, outputs={"o": Output()}, mini_batch_size=size,
        partition_keys=keys, max_concurrency_per_instance=2, is_deterministic=False,
        environment_variables={**_env(), "REMOTE": "1"} if remote else {},
        task=RunFunction(run=run, append_row_to="${{outputs.o}}"))


CASES = {
    "files": ("files", "uri_folder", "4", None, file_rows_checked),
    "csv": ("tables/t.csv", "mltable", "3KB", None, table_rows),
    "parquet": ("tables/t.parquet", "mltable", "2KB", None, table_rows),
    "hive": ("hive", "mltable", None, ["store"], table_rows),
}
# Ray runs two kinds (every kind reads through the same worker code; Ray adds only where it runs)
RUNS = [(b, k) for b in ("inline", "local") for k in CASES] + [("ray", "files"), ("ray", "csv")]


@pytest.mark.parametrize("backend, kind", RUNS)
def test_job_on_a_bucket_writes_the_rows_of_the_local_folder(s3, workdir, request, backend, kind):
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    local_root, remote_root = s3
    sub, itype, size, keys, run = CASES[kind]
    ref = _job(run, itype, size, keys, f"local_{kind}", remote=False)(d=f"{local_root}/{sub}").run(
        backend="inline", progress=False)
    got = _job(run, itype, size, keys, f"remote_{kind}")(d=f"{remote_root}/{sub}").run(backend=backend,
                                                                                       progress=False)
    assert got.status == ref.status == "Completed", got.summary()
    assert got.counts["failed"] == ref.counts["failed"] == 0, got.summary()
    assert sorted(got.read_lines()) == sorted(ref.read_lines())
    assert len(got.read_lines()) == (25 if kind == "files" else 600)
    assert got.counts["total"] == ref.counts["total"] > 1
    assert not os.path.exists(os.path.join(got.run_dir, "downloads"))  # removed at the end of the job


# ---------------------------------------------------------------- bad input: clear errors, before any worker
@pytest.mark.parametrize("value, message", [
    (f"s3://no-such-bucket-{os.getpid()}/data/", r"path 's3://no-such-bucket-\d+/data/' does not exist"),
    (f"s3://{BUCKET}/no/such/prefix/", r"path 's3://prs-nb-test/no/such/prefix/' does not exist.*bucket"),
    ("nosuchproto://bucket/x/", r"protocol 'nosuchproto', which fsspec does not know"),
    ("gs://bucket/x/", r"needs `pip install gcsfs`"),
    ("azureml://datastores/workspaceblobstore/paths/x/", r"Azure ML datastore URI.*Download or mount"),
])
def test_bad_remote_inputs_fail_before_any_worker_starts(s3, workdir, value, message):
    if value.startswith("gs://"):
        assert importlib.util.find_spec("gcsfs") is None, "gcsfs is installed: pick a protocol whose package is missing"
    job = _job(file_rows, "uri_folder", "4", None, "bad_remote")
    with pytest.raises(InputDataError, match=message):
        job(d=value).run(backend="local", progress=False)
    assert not os.path.exists(workdir / "prs_runs" / "bad_remote")  # refused before the run directory


def test_a_remote_glob_that_matches_nothing(s3):
    _, remote_root = s3
    with pytest.raises(InputDataError, match=r"glob pattern 's3://.*\*\.nope' matched no files"):
        _plan(f"{remote_root}/files/**/*.nope")


# ---------------------------------------------------------------- the command line, from a YAML component
COMPONENT = """\
type: parallel
name: names
inputs:
  data: {type: uri_folder, path: s3://prs-nb-test/data/files}
outputs:
  out: {type: uri_folder}
input_data: ${{inputs.data}}
mini_batch_size: "6"
task:
  type: run_function
  code: ./src
  entry_script: names.py
  append_row_to: ${{outputs.out}}
  environment: azureml:sklearn:1
"""
NAMES_PY = """\
import os

def run(mini_batch):
    return [f"{os.path.basename(p)} {open(p).read()}" for p in mini_batch]
"""


def test_cli_runs_a_yaml_component_on_a_bucket_and_refuses_a_bad_uri(s3, tmp_path):
    """The YAML keeps the URI as it is; `--input` overrides it; a worker process of the local backend
    inherits the credentials from the CLI's environment."""
    import subprocess

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "names.py").write_text(NAMES_PY)
    (tmp_path / "names.yml").write_text(COMPONENT)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(__file__)))}
    run = [sys.executable, "-m", "prs_nb", "run", "names.yml", "-q", "--no-reuse"]
    p = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    (out,) = list((tmp_path / "prs_runs" / "names").glob("*/outputs/out/parallel_run_step.txt"))
    lines = sorted(out.read_text().splitlines())
    assert len(lines) == 25 and "a.txt top" in lines and "007.txt content 7" in lines
    p = subprocess.run([*run, "--input", f"data=s3://no-such-bucket-{os.getpid()}/x"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "does not exist" in p.stderr and "Traceback" not in p.stderr
