"""Malformed, truncated, missing, unreadable and special input files.

Property tests mutate valid CSV / JSON Lines / Parquet / MLTable files byte by byte, truncate them,
and write random header lines: planning the input and reading every mini-batch must either work
or raise a PrsError naming the file - never a bare pandas/pyarrow/csv/yaml exception, never a hang.
Job-level tests check that a job with bad files or rows still processes the good ones, counted
against its thresholds (contract 6.1 / 12).
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import signal
import tempfile
import time

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.data import plan_input, read_mini_batch
from prs_nb.errors import InputDataError, PrsError
from prs_nb.spec import JobSpec

PARSING = settings(max_examples=200)
FILES = settings(max_examples=100)
JOBS = settings(max_examples=20)


def plan_and_read(path: str, *, size: str | None = None, typ: str = "mltable", count_rows: bool = True) -> list:
    """Plan ``path`` and read every mini-batch; returns the data, or the InputDataError of each bad one.
    Anything else escaping (or an error at planning time) fails the calling property test."""
    spec = JobSpec(name="t", inputs={"data": Input(type=typ)}, input_data="${{inputs.data}}",
                   bindings={"data": path}, mini_batch_size=size, task=RunFunction(run=len))
    out: list = []
    for mb in plan_input(spec, spec.effective(), base_dir=os.path.dirname(path), count_rows=count_rows):
        try:
            out.append(read_mini_batch(mb))
        except InputDataError as exc:
            out.append(exc)
    return out


def check_clear(exc: BaseException, path: str) -> None:
    assert isinstance(exc, PrsError), f"{type(exc).__name__} escaped: {exc!r}"
    text = str(exc)
    assert os.path.basename(path) in text, f"message does not name {path}: {text}"
    assert "Traceback (most recent call last)" not in text


def try_plan_and_read(path: str, **kw) -> list:
    try:
        results = plan_and_read(path, **kw)
    except BaseException as exc:  # noqa: BLE001 - the property under test
        check_clear(exc, path)
        return [exc]
    for r in results:
        if isinstance(r, BaseException):
            check_clear(r, path)
    return results


CSV = ("id,name,score,note\n" + "".join(f'{i},name {i},{i * 1.5},"quoted, {i}"\n' for i in range(30))).encode()
JSONL = "".join(json.dumps({"id": i, "name": f"n{i}", "tags": [i, "x"]}) + "\n" for i in range(30)).encode()


def parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pd.DataFrame({"id": range(40), "name": [f"n{i}" for i in range(40)]}).to_parquet(buf, index=False,
                                                                                     row_group_size=10)
    return buf.getvalue()


PARQUET = parquet_bytes()
SPECIAL = [b"\r", b"\n", b"\0", b'"', b",", b"\xff", b"\xef\xbb\xbf", b"{", b"}", b"\r\n", b"\\"]

mutation = st.tuples(st.floats(0, 1), st.sampled_from(["replace", "insert", "delete"]),
                     st.one_of(st.sampled_from(SPECIAL), st.binary(min_size=1, max_size=3)))


def mutate(data: bytes, mutations: list) -> bytes:
    b = bytearray(data)
    for where, op, chunk in mutations:
        i = min(int(where * len(b)), max(len(b) - 1, 0))
        if op == "replace":
            b[i:i + len(chunk)] = chunk
        elif op == "insert":
            b[i:i] = chunk
        else:
            del b[i:i + len(chunk)]
    return bytes(b)


def write(root: str, name: str, data: bytes) -> str:
    path = os.path.join(root, name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


@pytest.fixture
def scratch():
    """A fresh folder per call (hypothesis runs one test function many times)."""
    made: list[str] = []

    def make() -> str:
        made.append(tempfile.mkdtemp(prefix="prs_bad_"))
        return made[-1]

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------ mutated bytes
@PARSING
@given(st.lists(mutation, min_size=1, max_size=4), st.sampled_from([None, "64", "200"]), st.booleans())
def test_mutated_csv(scratch, mutations, size, count_rows):
    path = write(scratch(), "t.csv", mutate(CSV, mutations))
    try_plan_and_read(path, size=size, count_rows=count_rows)


@PARSING
@given(st.lists(mutation, min_size=1, max_size=4), st.sampled_from([None, "64", "200"]), st.booleans())
def test_mutated_jsonl(scratch, mutations, size, count_rows):
    path = write(scratch(), "t.jsonl", mutate(JSONL, mutations))
    try_plan_and_read(path, size=size, count_rows=count_rows)


@FILES
@given(st.lists(mutation, min_size=1, max_size=3), st.sampled_from([None, "100"]))
def test_mutated_parquet(scratch, mutations, size):
    path = write(scratch(), "t.parquet", mutate(PARQUET, mutations))
    try_plan_and_read(path, size=size)


def test_parquet_with_damaged_pandas_metadata(tmp_path):
    """Found by test_mutated_parquet: pyarrow raised a bare KeyError from pandas_compat."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(pd.DataFrame({"id": [1, 2]}), preserve_index=False)
    meta = json.loads(table.schema.metadata[b"pandas"])
    for col in meta["columns"]:
        col.pop("pandas_type")
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), tmp_path / "t.parquet")
    [error] = plan_and_read(str(tmp_path / "t.parquet"))
    assert isinstance(error, InputDataError)
    check_clear(error, "t.parquet")
    assert "pandas metadata" in str(error)


@PARSING
@given(st.sampled_from([("t.csv", CSV), ("t.jsonl", JSONL), ("t.parquet", PARQUET)]), st.floats(0, 1),
       st.sampled_from([None, "64"]))
def test_truncated_files(scratch, named, fraction, size):
    name, data = named
    path = write(scratch(), name, data[: int(len(data) * fraction)])
    results = try_plan_and_read(path, size=size)
    if name == "t.csv" and not any(isinstance(r, BaseException) for r in results):
        # a CSV cut anywhere loses rows at the end, never invents any
        assert sum(len(r) for r in results) <= 30


header_text = st.one_of(
    st.text(max_size=20),
    st.lists(st.sampled_from(["a", "b", "a", "", " ", '"q"', '"un', "x\ry", "é", "c,d", "\0", "\ufeffbom"]),
             min_size=1, max_size=5).map(",".join),
)


@PARSING
@given(header_text)
def test_random_header_lines(scratch, header):
    data = header.encode("utf-8", "surrogatepass") + b"\n1,2,3\n4,5,6\n7,8,9\n"
    path = write(scratch(), "h.csv", data)
    try_plan_and_read(path, size="8")


@pytest.mark.parametrize("name, data, rows", [
    ("dup.csv", b"a,a,b\n1,2,3\n", 1),                     # pandas' names: a, a.1, b
    ("empty_name.csv", b"a,,b\n1,2,3\n", 1),
    ("bom.csv", b"\xef\xbb\xbfa,b\n1,2\n", 1),
    ("crlf.csv", b"a,b\r\n1,2\r\n3,4\r\n", 2),
    ("header_only.csv", b"a,b\n", 0),
    ("empty.csv", b"", 0),
    ("more_fields.csv", b"a,b\n1,2,3\n", None),             # a row wider than the header: InputDataError
    ("cr_in_header.csv", b"a\r,b\n1,2\n", None),
    ("cr_only_lines.csv", b"a,b\r1,2\r3,4\r", None),
    ("open_quote_header.csv", b'"a,b\n1,2\n', None),
    ("latin1.csv", "é,b\n1,2\n".encode("latin-1"), None),
])
def test_bad_headers(tmp_path, name, data, rows):
    path = write(str(tmp_path), name, data)
    results = try_plan_and_read(path)
    if rows is None:
        assert any(isinstance(r, InputDataError) for r in results), results
    else:
        assert sum(len(r) for r in results) == rows, results


def test_cr_in_header_message_says_what_to_do(tmp_path):
    path = write(str(tmp_path), "cr.csv", b"a\r,b\n1,2\n")
    [error] = plan_and_read(path)
    assert isinstance(error, InputDataError)
    assert "carriage return" in str(error) and "line endings" in str(error)


# ------------------------------------------------------------------------------------ MLTable garbage
mltable_doc = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(["paths", "file", "folder", "pattern",
                                                                "transformations", "read_delimited",
                                                                "read_parquet", "read_json_lines", "header",
                                                                "delimiter", "encoding", "type", "x"]),
                                               children, max_size=3)),
    max_leaves=8,
)


@PARSING
@given(st.one_of(st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=40),
                 mltable_doc.map(lambda d: yaml.safe_dump(d).encode())))
def test_mltable_garbage(scratch, content):
    root = scratch()
    write(root, "a.csv", b"x,y\n1,2\n")
    write(root, "MLTable", content)
    try:
        plan_and_read(root)
    except BaseException as exc:  # noqa: BLE001
        check_clear(exc, root)
        assert isinstance(exc, PrsError)


def test_mltable_python_tag_is_refused(tmp_path):
    (tmp_path / "MLTable").write_text("paths: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n")
    with pytest.raises(InputDataError, match="MLTable"):
        plan_and_read(str(tmp_path))
    assert not (tmp_path / "pwned.txt").exists()


# ------------------------------------------------------------------------------------ missing, unreadable, special
def test_file_deleted_after_listing_names_it(tmp_path):
    for i in range(3):
        write(str(tmp_path), f"{i}.csv", b"a,b\n1,2\n")
    spec = JobSpec(name="t", inputs={"data": Input(type="mltable")}, input_data="${{inputs.data}}",
                   bindings={"data": str(tmp_path)}, task=RunFunction(run=len))
    batches = list(plan_input(spec, spec.effective(), base_dir=str(tmp_path)))
    os.remove(tmp_path / "1.csv")
    assert len(read_mini_batch(batches[0])) == 1
    with pytest.raises(InputDataError) as info:
        read_mini_batch(batches[1])
    check_clear(info.value, "1.csv")


def test_broken_link_in_table_folder(tmp_path):
    write(str(tmp_path), "a.csv", b"a,b\n1,2\n")
    os.symlink(tmp_path / "gone.csv", tmp_path / "b.csv")
    good, bad = plan_and_read(str(tmp_path))  # the good file is read; the broken link fails its own mini-batch
    assert len(good) == 1
    assert isinstance(bad, InputDataError)
    check_clear(bad, "b.csv")


def _read_as_nobody(typ: str, path: str) -> str:
    """Plan and read ``path`` in a forked child that runs as an unprivileged user (root reads
    everything, so a permission error can only be seen without root's rights); returns what happened."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, read, report, leave without running the parent's cleanup
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                plan_and_read_raising(path, typ)
                text = "READ"
            except PrsError as exc:
                text = f"PRSERROR {type(exc).__name__} {exc}"
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
                text = f"OTHER {type(exc).__name__} {exc}"
            os.write(w, text.encode("utf-8", "replace"))
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while True:
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # a child stuck on a lock inherited from a parent thread: fail, don't hang
                os.kill(pid, signal.SIGKILL)
                return "TIMEOUT"
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def plan_and_read_raising(path: str, typ: str) -> None:
    spec = JobSpec(name="t", inputs={"data": Input(type=typ)}, input_data="${{inputs.data}}",
                   bindings={"data": path}, task=RunFunction(run=len))
    for mb in plan_input(spec, spec.effective(), base_dir=os.path.dirname(path)):
        read_mini_batch(mb)


@pytest.mark.parametrize("typ, name, data", [("mltable", "secret.csv", b"a,b\n1,2\n"),
                                             ("mltable", "secret.parquet", PARQUET),
                                             ("uri_folder", "sub", None)], ids=["csv", "parquet", "folder"])
def test_unreadable_inputs(typ, name, data):
    """Permission denied: a clear InputDataError naming the file or folder."""
    root = tempfile.mkdtemp(prefix="prs_perm_")
    try:
        os.chmod(root, 0o755)
        path = os.path.join(root, name)
        if data is None:
            os.makedirs(os.path.join(path, "inner"))
            write(os.path.join(path, "inner"), "f.txt", b"x")
            os.chmod(os.path.join(path, "inner"), 0o000)
        else:
            write(root, name, data)
            os.chmod(path, 0o000)
        out = _read_as_nobody(typ, path)
        assert out.startswith("PRSERROR InputDataError"), out
        assert "permission denied" in out.lower(), out
        assert (name if data is not None else "inner") in out, out
    finally:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("typ, where", [("mltable", "folder"), ("uri_folder", "folder"), ("mltable", "direct"),
                                        ("uri_folder", "glob"), ("mltable", "mltable")])
def test_named_pipe_in_input_is_refused_not_waited_on(tmp_path, typ, where):
    write(str(tmp_path), "a.csv", b"a,b\n1,2\n")
    os.mkfifo(tmp_path / "b.csv")
    target = {"folder": str(tmp_path), "direct": str(tmp_path / "b.csv"), "glob": str(tmp_path / "*.csv"),
              "mltable": str(tmp_path)}[where]
    if where == "mltable":
        (tmp_path / "MLTable").write_text("paths:\n  - pattern: ./*.csv\ntransformations:\n  - read_delimited: {}\n")
    with pytest.raises(InputDataError) as info:
        plan_and_read(target, typ=typ)
    check_clear(info.value, "b.csv")
    assert "named pipe" in str(info.value)


@pytest.mark.timeout(60)
def test_named_pipe_fails_the_job_before_any_worker_starts(workdir):
    (workdir / "in").mkdir()
    write(str(workdir / "in"), "a.txt", b"x")
    os.mkfifo(workdir / "in" / "b.txt")
    job = parallel_run_function(name="fifo", inputs={"d": Input(type="uri_folder")}, backend="local",
                                task=RunFunction(run=len))
    with pytest.raises(InputDataError, match="named pipe"):
        job(d="in").run(progress=False)


# ------------------------------------------------------------------------------------ jobs: bad ones, good ones
def rows_of(mini_batch):
    return [f"{r.f}:{r.i}" for r in mini_batch.itertuples()]


BAD = {
    "extra_fields": b"f,i\nX,0\nX,1,999,999\n",    # a row wider than the header
    "open_quote": b'f,i\nX,0\n"X,1\n',              # a quoted field that never ends
    "not_utf8": b"f,i\nX,0\n\xff\xfe,1\n",          # undecodable bytes in a row
    "bad_header": b"\xff\xfeX,i\nX,0\n",             # undecodable header: found by the driver while listing
    "cr_header": b"f\rX,i\nX,0\n",                   # a carriage return inside the header line
}


def write_table(root: str, good: int, bad: list[str]) -> list[str]:
    """``good`` CSV files of 3 rows and one file per entry of ``bad``; returns the expected output rows."""
    want = []
    for g in range(good):
        name = f"g{g}"
        write(root, f"{name}.csv", ("f,i\n" + "".join(f"{name},{i}\n" for i in range(3))).encode())
        want += [f"{name}:{i}" for i in range(3)]
    for b, kind in enumerate(bad):
        write(root, f"b{b}.csv", BAD[kind].replace(b"X", f"b{b}".encode()))
    return want


def table_job(root: str, backend: str, **settings):
    job = parallel_run_function(name="bad_rows", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                max_concurrency_per_instance=2, backend=backend, runs_root=os.path.join(root, "runs"),
                                retry_settings={"max_retries": 0},
                                task=RunFunction(run=rows_of, append_row_to="${{outputs.o}}"), **settings)
    return job(t=os.path.join(root, "in")).run(progress=False)


@JOBS
@given(st.integers(1, 4), st.lists(st.sampled_from(sorted(BAD)), max_size=3))
def test_bad_rows_do_not_stop_the_good_ones(scratch, good, bad):
    root = scratch()
    os.makedirs(os.path.join(root, "in"))
    want = write_table(os.path.join(root, "in"), good, bad)
    res = table_job(root, "inline", mini_batch_error_threshold=len(bad))
    assert res.status == "Completed", res.summary()
    assert (res.counts["succeeded"], res.counts["failed"]) == (good, len(bad))
    assert sorted(res.read_lines()) == sorted(want)  # every good row exactly once
    for msg in res.errors["message"]:
        assert "cannot" in msg and "b.csv" not in msg and ".csv" in msg, msg
    if bad:
        over = table_job(root, "inline", mini_batch_error_threshold=len(bad) - 1)
        assert over.status == "Failed" and over.limit == "mini_batch_error_threshold", over.summary()


def test_bad_rows_on_the_process_backend(workdir):
    os.makedirs(workdir / "in")
    want = write_table(str(workdir / "in"), 3, sorted(BAD))
    res = table_job(str(workdir), "local", error_threshold=-1)
    assert res.status == "Completed", res.summary()
    assert (res.counts["succeeded"], res.counts["failed"]) == (3, len(BAD))
    assert sorted(res.read_lines()) == sorted(want)
    assert set(res.errors["error_type"]) == {"InputDataError"}, res.errors


@pytest.mark.parametrize("backend", ["inline", "local"])
def test_corrupt_parquet_file_fails_its_own_mini_batch(workdir, backend):
    os.makedirs(workdir / "in")
    for g in range(3):
        pd.DataFrame({"f": [f"g{g}"] * 2, "i": [0, 1]}).to_parquet(workdir / "in" / f"g{g}.parquet", index=False)
    write(str(workdir / "in"), "broken.parquet", PARQUET[: len(PARQUET) // 2])  # a half-copied file
    res = table_job(str(workdir), backend, mini_batch_error_threshold=1)
    assert res.status == "Completed", res.summary()
    assert (res.counts["succeeded"], res.counts["failed"]) == (3, 1)
    assert sorted(res.read_lines()) == sorted(f"g{g}:{i}" for g in range(3) for i in range(2))
    [msg] = set(res.errors["message"])
    assert "broken.parquet" in msg and "Parquet" in msg, msg
    strict = table_job(str(workdir), backend, mini_batch_error_threshold=0)
    assert strict.status == "Failed" and strict.limit == "mini_batch_error_threshold", strict.summary()
