"""Safety: names cannot escape the run directory, YAML is read safely, nothing foreign is unpickled.

* Output names, ``append_row_file_name``, job names and partition values never make prs_nb write
  outside the run directory (``..``, absolute paths, NUL/control characters, the characters v1
  forbids): either a ConfigError or a path inside it.
* Every YAML read goes through the safe loader (checked in the source, and by feeding a
  ``!!python/object`` tag to every reader).
* Every unpickling site of the package is listed in ``UNPICKLING_SITES`` with the reason it only
  reads data this run wrote; a new site fails :func:`test_every_unpickling_site_is_reviewed` until
  it is reviewed and added. A run also writes no pickle to disk, so nothing pickled can be read
  back from one.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.errors import ConfigError, InputDataError, PrsError
from prs_nb.outputs import append_row_path, resolve_output_paths
from prs_nb.spec import JobSpec
from prs_nb.v1 import ParallelRunConfig, PipelineData

PKG = Path(__file__).resolve().parent.parent / "prs_nb"
V1_FORBIDDEN = '~"#%&*:<>?/\\{|}'

names = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["..", ".", "../x", "../../etc/passwd", "/etc/passwd", "/tmp/x", "a/../../b", "a\0b", "a\nb",
                     "out", "ok_name", "C:\\x", "~root", "a b", "%2e%2e", "\u202e", "con", "a/b", "-x", "_"]),
    st.builds(lambda a, c, b: a + c + b, st.text(max_size=3), st.sampled_from(list(V1_FORBIDDEN) + ["\0", "\x1f"]),
              st.text(max_size=3)),
)


def inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


# ------------------------------------------------------------------------------------ output names
@settings(max_examples=200)
@given(names)
def test_output_names_stay_in_the_run_directory(tmp_path_factory, name):
    run_dir = str(tmp_path_factory.getbasetemp() / "runs" / "job" / "run1")
    try:
        spec = JobSpec(name="j", outputs={name: Output()})
    except ConfigError as exc:
        assert "output names" in str(exc) and repr(name) in str(exc)
        return
    paths = resolve_output_paths(spec, run_dir, base_dir=str(tmp_path_factory.getbasetemp()))
    assert inside(paths[name], os.path.join(run_dir, "outputs")), (name, paths)


@settings(max_examples=200)
@given(names)
def test_append_row_file_name_stays_in_its_output_folder(tmp_path_factory, name):
    run_dir = str(tmp_path_factory.getbasetemp() / "runs" / "job" / "run2")
    try:
        spec = JobSpec(name="j", outputs={"out": Output()}, task=RunFunction(run=len, append_row_to="${{outputs.out}}"),
                       append_row_file_name=name)
    except ConfigError as exc:
        assert "append_row_file_name" in str(exc)
        assert set(name) & set(V1_FORBIDDEN) or not name.strip() or name in (".", "..") or any(
            ord(c) < 32 or ord(c) == 127 for c in name), f"{name!r} rejected without a reason: {exc}"
        return
    assert not set(name) & set(V1_FORBIDDEN + "\0")
    paths = resolve_output_paths(spec, run_dir, base_dir=str(tmp_path_factory.getbasetemp()))
    target = append_row_path(spec, paths)
    assert target is not None and os.path.dirname(target) == paths["out"]
    assert inside(target, os.path.join(run_dir, "outputs", "out"))


@settings(max_examples=200)
@given(names)
def test_v1_names(tmp_path_factory, name):
    """v1 rejects its forbidden characters in append_row_file_name; PipelineData names are identifiers."""
    code = tmp_path_factory.getbasetemp() / "safety_v1"
    code.mkdir(exist_ok=True)
    (code / "score.py").write_text("def run(mb):\n    return mb\n")
    try:
        ParallelRunConfig(None, "score.py", -1, "append_row", "local", 1, source_directory=str(code),
                          append_row_file_name=name)
    except ConfigError as exc:
        assert "append_row_file_name" in str(exc)
    else:
        assert not set(name) & set(V1_FORBIDDEN + "\0") and name not in (".", "..")
    try:
        PipelineData(name)
    except ConfigError:
        pass
    else:
        assert "/" not in name and ".." not in name and "\0" not in name


@pytest.mark.parametrize("name", ["../../escape", "/abs/path", "a/../../b", "..", "x\0y", "a\\..\\..\\b"])
def test_job_names_cannot_escape_the_runs_root(workdir, name):
    (workdir / "in").mkdir()
    (workdir / "in" / "a.txt").write_text("x")
    try:
        job = parallel_run_function(name=name, inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                    task=RunFunction(run=lambda mb: mb, append_row_to="${{outputs.o}}"),
                                    backend="inline")
        res = job(d="in").run(progress=False)
    except ConfigError:
        return
    assert res.status == "Completed"
    assert inside(res.run_dir, str(workdir / "prs_runs")), res.run_dir
    assert inside(res.output_path, res.run_dir)
    outside = [p for p in workdir.rglob("*") if not inside(str(p), str(workdir / "prs_runs"))
               and not inside(str(p), str(workdir / "in"))]
    assert outside == [workdir / "prs_runs"] or not outside, outside


def by_partition(mini_batch, ctx):
    return [f"{ctx.partition_key_value['k']!r}:{len(mini_batch)}"]


@pytest.mark.parametrize("backend", ["inline", "local"])
def test_partition_values_never_become_paths(workdir, backend):
    values = ["../../evil", "/abs/evil", "a/b", "x\0y", "..", "C:\\evil", "~", "${{outputs.o}}"]
    df = pd.DataFrame({"k": values * 2, "v": range(len(values) * 2)})
    before = {p for p in Path("/tmp").glob("*evil*")}
    job = parallel_run_function(name="parts", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                partition_keys=["k"], max_concurrency_per_instance=2, backend=backend,
                                task=RunFunction(run=by_partition, append_row_to="${{outputs.o}}"))
    res = job(t=df).run(progress=False)
    assert res.status == "Completed", res.summary()
    assert sorted(res.read_lines()) == sorted(f"{v!r}:2" for v in values)
    outside = [p for p in workdir.rglob("*") if not inside(str(p), str(workdir / "prs_runs"))]
    assert outside == [], outside  # everything the run wrote is under the runs root
    assert not [p for p in workdir.rglob("*") if "evil" in p.name or "\0" in p.name], "a value became a path"
    assert {p for p in Path("/tmp").glob("*evil*")} == before


# ------------------------------------------------------------------------------------ YAML
ALLOWED_YAML = {"safe_load", "safe_load_all", "safe_dump", "safe_dump_all", "YAMLError", "SafeLoader",
                "CSafeLoader", "SafeDumper", "CSafeDumper", "MarkedYAMLError", "dump", "dump_all"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader"}


def package_trees():
    for path in sorted(PKG.rglob("*.py")):
        yield path.relative_to(PKG.parent).as_posix(), path.read_text(encoding="utf-8"), ast.parse(path.read_text())


def test_yaml_is_only_read_with_the_safe_loader():
    problems = []
    for rel, _src, tree in package_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("yaml", "ruamel"):
                bad = [a.name for a in node.names if a.name not in ALLOWED_YAML]
                if bad:
                    problems.append(f"{rel}:{node.lineno} from {node.module} import {bad}")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml":
                if node.attr in ALLOWED_YAML:
                    continue
                problems.append(f"{rel}:{node.lineno} yaml.{node.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "load", "load_all") and isinstance(node.func.value, ast.Name) and node.func.value.id == "yaml":
                loader = [k.value for k in node.keywords if k.arg == "Loader"]
                if not loader or not (isinstance(loader[0], ast.Attribute) and loader[0].attr in SAFE_LOADERS):
                    problems.append(f"{rel}:{node.lineno} yaml.{node.func.attr} without Loader=yaml.SafeLoader")
    assert not problems, "YAML must be read with yaml.safe_load (Python tags run code):\n" + "\n".join(problems)


EVIL = "!!python/object/apply:os.system ['touch {marker}']"


def test_python_tags_are_refused_by_every_yaml_reader(tmp_path):
    marker = tmp_path / "pwned"
    evil = EVIL.format(marker=marker)
    # v1 ParallelRunConfig.load_yaml
    (tmp_path / "prc.yml").write_text(f"parallel_run_config:\n  entry_script: {evil}\n")
    with pytest.raises(ConfigError, match="safe loader"):
        ParallelRunConfig.load_yaml(None, tmp_path / "prc.yml")
    # an MLTable file
    (tmp_path / "tbl").mkdir()
    (tmp_path / "tbl" / "MLTable").write_text(f"paths: {evil}\n")
    job = parallel_run_function(name="y", inputs={"t": Input(type="mltable")}, task=RunFunction(run=len),
                                backend="inline")
    with pytest.raises(InputDataError, match="MLTable"):
        job(t=str(tmp_path / "tbl")).run(progress=False)
    # a job YAML, if this version reads them (the CLI / yaml_io loader)
    import prs_nb.yaml_io as yaml_io

    for name in ("load_job", "load_yaml", "from_yaml", "spec_from_yaml", "load"):
        loader = getattr(yaml_io, name, None)
        if callable(loader):
            (tmp_path / "job.yml").write_text(f"name: {evil}\ntype: parallel\n")
            with pytest.raises(PrsError):
                loader(str(tmp_path / "job.yml"))
    assert not marker.exists()
    with pytest.raises(yaml.YAMLError):  # the loader itself refuses the tag (guards the test's premise)
        yaml.safe_load(evil)


# ------------------------------------------------------------------------------------ unpickling
#: Every place the package unpickles, with why the bytes can only come from this run. Keyed by
#: (file, enclosing function, expression); the count is how often that expression appears there.
UNPICKLING_SITES = {
    ("prs_nb/engine/worker.py", "main", "down.recv"): (
        2, "driver -> worker messages on the socket pair the driver created for this worker process and "
           "handed over as an inherited fd at spawn; nothing else holds that socket"),
    ("prs_nb/engine/backends.py", "LocalBackend.wait", "conn.recv"): (
        1, "worker -> driver results on the socket pair of a worker process this run started"),
    ("prs_nb/entry.py", "WorkerRuntime.start", "cloudpickle.loads"): (
        1, "cfg.functions_blob: made by engine/run.py _functions_blob() from the RunFunction of this job, in "
           "memory, and sent inside the WorkerConfig over the socket above; never read from a file"),
    # resume (fault-tolerance branch): reviewed before it landed here, required once the module exists
    ("prs_nb/engine/resume.py", "load_job", "pickle.loads"): (
        1, "run_dir/job.pkl, written by save_job() of this same run when it started; unpickled only after its "
           "HMAC-SHA256 verifies with the user's own key (created 0600 under ~/.config/prs_nb), so a file "
           "written by another user or changed afterwards is refused unread "
           "(test_saved_job_is_refused_unless_signed_by_this_user)"),
}
#: sites of modules that may not be in this tree yet: required only when their file exists
OPTIONAL_FILES = {"prs_nb/engine/resume.py"}
PICKLE_MODULES = {"pickle", "cloudpickle", "_pickle", "dill", "joblib", "ForkingPickler", "marshal", "shelve",
                  "jsonpickle", "torch"}
UNPICKLING_CALLS = {"load", "loads", "Unpickler", "load_all", "open"}


def _qualnames(tree: ast.AST) -> dict[ast.AST, str]:
    out: dict[ast.AST, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}" if prefix else child.name
            out[child] = name
            visit(child, name)

    visit(tree, "")
    return out


def unpickling_sites() -> dict[tuple[str, str, str], int]:
    found: dict[tuple[str, str, str], int] = {}
    for rel, src, tree in package_trees():
        where = _qualnames(tree)
        for node in ast.walk(tree):
            hit = None
            if isinstance(node, ast.Attribute):
                base = node.value
                base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
                if node.attr == "recv" or node.attr == "read_pickle":
                    hit = ast.get_source_segment(src, node)
                elif base_name in PICKLE_MODULES and node.attr in UNPICKLING_CALLS:
                    hit = ast.get_source_segment(src, node)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PICKLE_MODULES:
                if {a.name for a in node.names} & UNPICKLING_CALLS:
                    hit = f"from {node.module} import ..."
            elif isinstance(node, ast.Call) and any(k.arg == "allow_pickle" for k in node.keywords):
                hit = ast.get_source_segment(src, node.func)
            if hit:
                key = (rel, where.get(node, ""), hit)
                found[key] = found.get(key, 0) + 1
    return found


def test_every_unpickling_site_is_reviewed():
    found = unpickling_sites()
    expected = {k: v[0] for k, v in UNPICKLING_SITES.items()
                if k[0] not in OPTIONAL_FILES or (PKG.parent / k[0]).exists()}
    new = {k: n for k, n in found.items() if expected.get(k) != n}
    gone = {k: n for k, n in expected.items() if found.get(k) != n}
    assert not new and not gone, (
        "unpickling sites changed: review that each new one only reads data this run wrote (never a file "
        f"from an earlier run or another user), then list it in UNPICKLING_SITES.\nnew/changed: {new}\ngone: {gone}")


def test_the_scan_finds_unpickling(tmp_path):
    """The scanner sees the forms a new site would take (so the test above can fail)."""
    src = ("import pickle, cloudpickle\nfrom pickle import loads\n"
           "def f(p, c):\n    pickle.load(open(p, 'rb'))\n    cloudpickle.loads(b'')\n    c.recv()\n"
           "    pd.read_pickle(p)\n    np.load(p, allow_pickle=True)\n")
    tree = ast.parse(src)
    hits = [n for n in ast.walk(tree) if (isinstance(n, ast.Attribute) and (
        n.attr in ("recv", "read_pickle") or (isinstance(n.value, ast.Name) and n.value.id in PICKLE_MODULES
                                               and n.attr in UNPICKLING_CALLS)))
            or (isinstance(n, ast.ImportFrom) and n.module == "pickle")
            or (isinstance(n, ast.Call) and any(k.arg == "allow_pickle" for k in n.keywords))]
    assert len(hits) == 6


def test_functions_blob_is_only_made_by_the_driver_from_the_job():
    """The one cloudpickle.loads reads WorkerConfig.functions_blob: it is set only in engine/run.py,
    from _functions_blob(spec), never from a file."""
    setters = []
    for rel, src, tree in package_trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in ("WorkerConfig", "replace"):  # what builds a worker's configuration
                continue
            for kw in node.keywords:
                if kw.arg == "functions_blob":
                    setters.append((rel, ast.get_source_segment(src, kw.value)))
    assert setters == [("prs_nb/engine/run.py", "blob")], setters
    run_src = (PKG / "engine" / "run.py").read_text()
    assert "blob: bytes | None = _functions_blob(spec)" in run_src
    assert "socketpair" in (PKG / "engine" / "backends.py").read_text()


PICKLE_FRAMES = (b"\x80\x04\x95", b"\x80\x05\x95")  # protocol 4/5 opening: what (cloud)pickle.dumps writes


def test_a_run_leaves_no_unsigned_pickle_on_disk(workdir):
    """Nothing a run leaves on disk is a pickle, except the signed resume record (job.pkl), so a
    later run or a resume cannot be fed one."""
    (workdir / "in").mkdir()
    for i in range(4):
        (workdir / "in" / f"{i}.txt").write_text(str(i))
    job = parallel_run_function(name="nopickle", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=2, backend="local",
                                task=RunFunction(run=lambda mb: [pd.DataFrame({"a": [1]})] + mb,
                                                 append_row_to="${{outputs.o}}"))
    res = job(d="in").run(progress=False)
    assert res.status == "Completed"
    files = [p for p in Path(res.run_dir).rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        if any(frame in data for frame in PICKLE_FRAMES):
            assert p.name == "job.pkl" and p.parent == Path(res.run_dir), f"{p} holds a pickle"
            assert not data.startswith(b"\x80"), f"{p} is an unsigned pickle"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('PRS_EVIL_MARKER', '/nonexistent/x')}",))


def test_saved_job_is_refused_unless_signed_by_this_user(tmp_path, monkeypatch):
    """A job.pkl with a payload that runs code when unpickled is refused unread, whether it was
    changed after signing or signed with another user's key."""
    import importlib.util

    if importlib.util.find_spec("prs_nb.engine.resume") is None:
        # No resume in this tree: then no reviewed site reads anything from disk at all.
        assert all(k[0] not in OPTIONAL_FILES for k in unpickling_sites())
        return
    import cloudpickle

    from prs_nb.engine import resume

    marker = tmp_path / "pwned"
    monkeypatch.setenv("PRS_EVIL_MARKER", str(marker))
    monkeypatch.setenv("PRS_NB_KEY_DIR", str(tmp_path / "mykey"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    resume.save_job(str(run_dir), JobSpec(name="j"), str(tmp_path), "r1")
    path = next(run_dir.glob("job.pkl"))
    head, mac, _payload = path.read_bytes().split(b"\n", 2)
    path.write_bytes(head + b"\n" + mac + b"\n" + cloudpickle.dumps(_Evil()))  # changed after signing
    with pytest.raises(PrsError):
        resume.load_job(str(run_dir))
    monkeypatch.setenv("PRS_NB_KEY_DIR", str(tmp_path / "otherkey"))  # signed by "someone else"
    resume.save_job(str(run_dir), _Evil(), str(tmp_path), "r1")
    monkeypatch.setenv("PRS_NB_KEY_DIR", str(tmp_path / "mykey"))
    with pytest.raises(PrsError):
        resume.load_job(str(run_dir))
    assert not marker.exists()
