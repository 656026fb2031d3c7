"""Reuse (contract 9/12): identical reruns are served from the cache; every kind of change reruns;
the cache survives a new process and two identical jobs running at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb import events as ev
from prs_nb.cache import CACHE_DIR, ReuseCache, fingerprint

WORKTREE = str(Path(__file__).resolve().parents[1])

SCRIPT = """\
import os, sys
SUFFIX = "v1"
def init():
    pass
def run(mini_batch):
    return [os.path.basename(p) + " " + SUFFIX + " " + " ".join(sys.argv[1:]) + " " + os.environ.get("GREETING", "-")
            for p in mini_batch]
"""


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def on_event(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]


def make_project(root: Path, n_files: int = 6) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "score.py").write_text(SCRIPT)
    (root / "data").mkdir()
    for i in range(n_files):
        (root / "data" / f"{i:03d}.txt").write_text(f"file {i}\n")
    return root


def script_job(root: Path, **changes):
    settings = dict(
        name="reuse", inputs={"data": Input(type="uri_folder"), "tag": Input(type="string", default="a")},
        outputs={"out": Output(type="uri_folder")}, input_data="${{inputs.data}}", mini_batch_size="2",
        max_concurrency_per_instance=2,
        task=RunFunction(code=str(root / "src"), entry_script="score.py", program_arguments="--tag ${{inputs.tag}}",
                         append_row_to="${{outputs.out}}"),
    )
    settings.update(changes)
    return parallel_run_function(**settings)


def run(job, root: Path, backend: str = "inline", listeners=(), tag: str = "a", **kw):
    return job(data=Input(type="uri_folder", path=str(root / "data")), tag=tag).run(
        backend=backend, progress=False, listeners=listeners, runs_root=str(root / "runs"), **kw)


def test_identical_rerun_is_served_from_the_cache(tmp_path):
    root = make_project(tmp_path)
    job = script_job(root)
    first = run(job, root, backend="local")
    assert first.status == "Completed" and not first.reused and first.counts["workers"] == 2
    rec = Recorder()
    second = run(job, root, backend="local", listeners=[rec])
    assert second.reused and second.status == "Completed" and second.run_dir != first.run_dir
    assert second.counts["workers"] == 0 and not rec.of(ev.WorkerStarted) and not rec.of(ev.BatchStarted)
    (reused_event,) = rec.of(ev.JobReused)
    assert reused_event.source_run_dir == first.run_dir
    assert [type(e) for e in rec.events] == [ev.JobStarted, ev.JobReused, ev.JobFinished]
    assert rec.events[0].workers == 0 and rec.events[-1].status == "Completed"
    assert Path(second.output_path).read_bytes() == Path(first.output_path).read_bytes()
    assert sorted(second.read_lines()) == [f"{i:03d}.txt v1 --tag a -" for i in range(6)]
    assert second.output_path.startswith(second.run_dir)
    info = json.loads((Path(second.run_dir) / "reused.json").read_text())
    assert info["source_run_id"] == first.run_id and info["reused"] is True
    assert (Path(second.run_dir) / "job.yml").is_file()
    assert "reused" in (Path(second.logs_dir) / "job_result.txt").read_text()
    assert not (Path(second.logs_dir) / "user").exists()  # no process logs: nothing ran
    assert "(reused a previous identical run)" in second.summary()
    assert {k: v for k, v in second.counts.items() if k != "workers"} == \
        {k: v for k, v in first.counts.items() if k != "workers"}
    pd.testing.assert_frame_equal(second.batches, first.batches)


def _edit_code(root: Path) -> None:
    (root / "src" / "score.py").write_text(SCRIPT.replace('SUFFIX = "v1"', 'SUFFIX = "v2"'))


def _add_helper_file(root: Path) -> None:
    (root / "src" / "helper.py").write_text("X = 1\n")


def _edit_data_same_size(root: Path) -> None:
    p = root / "data" / "003.txt"
    st = p.stat()
    p.write_text("file X\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the content tells


def _add_data_file(root: Path) -> None:
    (root / "data" / "999.txt").write_text("new\n")


CHANGES = {
    "code: entry script edited": (lambda root: _edit_code(root), {}),
    "code: another file in the code folder": (lambda root: _add_helper_file(root), {}),
    "data: content changed, same size and mtime": (lambda root: _edit_data_same_size(root), {}),
    "data: a file added": (lambda root: _add_data_file(root), {}),
    "settings: mini_batch_size": (None, {"mini_batch_size": "3"}),
    "settings: retry_settings": (None, {"retry_settings": {"max_retries": 0, "timeout": 30}}),
    "settings: error_threshold": (None, {"error_threshold": 5}),
    "arguments: bound input value": (None, {"_tag": "b"}),
    "environment variables": (None, {"environment_variables": {"GREETING": "hi"}}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_each_kind_of_change_reruns_then_hits_again(tmp_path, change):
    root = make_project(tmp_path)
    mutate, overrides = CHANGES[change]
    tag = overrides.pop("_tag", "a")
    base = run(script_job(root), root)
    assert not base.reused and run(script_job(root), root).reused
    if mutate is not None:
        mutate(root)
    changed = run(script_job(root, **overrides), root, tag=tag)
    assert changed.status == "Completed" and not changed.reused, change
    again = run(script_job(root, **overrides), root, tag=tag)
    assert again.reused and sorted(again.read_lines()) == sorted(changed.read_lines())
    if change.startswith(("code: entry", "arguments", "environment")):
        assert sorted(changed.read_lines()) != sorted(base.read_lines())


def _fn_v1(mini_batch):
    return [len(mini_batch)] * len(mini_batch)


def _fn_v2(mini_batch):
    return [len(mini_batch) * 10] * len(mini_batch)


def test_functions_and_dataframes_are_fingerprinted(tmp_path):
    df = pd.DataFrame({"x": range(100)})

    def job(fn, frame):
        j = parallel_run_function(name="fn", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                  input_data="${{inputs.t}}", mini_batch_size="400",
                                  task=RunFunction(run=fn, append_row_to="${{outputs.o}}"))
        return j(t=frame).run(backend="inline", progress=False, runs_root=str(tmp_path / "runs"))

    assert not job(_fn_v1, df).reused
    assert job(_fn_v1, df.copy()).reused  # equal content: a hit
    assert not job(_fn_v2, df).reused  # another function
    changed = df.copy()
    changed.loc[50, "x"] = -1
    assert not job(_fn_v1, changed).reused  # one value changed
    assert job(_fn_v1, changed).reused


def test_no_reuse_when_not_deterministic_or_failed(tmp_path):
    root = make_project(tmp_path)
    assert not run(script_job(root, is_deterministic=False), root).reused
    assert not run(script_job(root, is_deterministic=False), root).reused
    (root / "src" / "score.py").write_text("def run(mini_batch):\n    raise ValueError('boom')\n")
    failed = run(script_job(root, retry_settings={"max_retries": 0}, mini_batch_error_threshold=0), root)
    assert failed.status == "Failed"
    again = run(script_job(root, retry_settings={"max_retries": 0}, mini_batch_error_threshold=0), root)
    assert again.status == "Failed" and not again.reused  # failures are never cached


def test_output_bound_to_a_user_path_is_restored_by_a_hit(tmp_path):
    root = make_project(tmp_path)
    out = tmp_path / "results" / "scores.txt"
    job = script_job(root, outputs={"out": Output(type="uri_file", path=str(out))})
    first = run(job, root)
    assert not first.reused and first.output_path == str(out)
    content = out.read_bytes()
    out.write_text("overwritten by someone\n")
    second = run(job, root)
    assert second.reused and second.output_path == str(out) and out.read_bytes() == content


def test_a_tampered_cache_entry_is_dropped(tmp_path):
    root = make_project(tmp_path)
    first = run(script_job(root), root)
    with open(first.output_path, "a") as fh:  # the cache holds its own copy: editing the run's file is harmless
        fh.write("edited\n")
    second = run(script_job(root), root)
    assert second.reused and "edited" not in Path(second.output_path).read_text()
    with open(second.output_path, "a") as fh:  # nor does editing a reused run's copy
        fh.write("edited\n")
    (cached,) = (root / "runs" / CACHE_DIR).glob("*/outputs/out/parallel_run_step.txt")
    assert "edited" not in cached.read_text()
    with open(cached, "a") as fh:  # a tampered cache entry is dropped: the job runs again
        fh.write("tampered\n")
    third = run(script_job(root), root)
    assert not third.reused and "tampered" not in Path(third.output_path).read_text()
    assert run(script_job(root), root).reused


def test_named_pipe_in_the_input_is_not_opened(tmp_path):
    root = make_project(tmp_path)
    os.mkfifo(root / "data" / "pipe")
    spec = script_job(root)(data=Input(type="uri_folder", path=str(root / "data"))).spec
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(fingerprint(
        spec, base_dir=str(root), code_dir=str(root / "src"), functions_blob=None, argv=[], run_dir="x",
        runs_root=str(root / "runs"))), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "fingerprinting opened the named pipe and blocked"
    fp = result[0]
    os.remove(root / "data" / "pipe")
    (root / "data" / "pipe").write_text("")
    fp2 = fingerprint(spec, base_dir=str(root), code_dir=str(root / "src"), functions_blob=None, argv=[],
                      run_dir="x", runs_root=str(root / "runs"))
    assert fp.key and fp2.key and fp.parts["data"] != fp2.parts["data"]  # a pipe is not an empty file


def test_remote_input_is_never_reused(tmp_path):
    root = make_project(tmp_path)
    spec = script_job(root)(data=Input(type="uri_folder", path="azureml://datastores/x/paths/y")).spec
    fp = fingerprint(spec, base_dir=str(root), code_dir=str(root / "src"), functions_blob=None, argv=[],
                     run_dir="x", runs_root=str(root / "runs"))
    assert fp.key is None and "remote URI" in fp.reason
    assert ReuseCache(str(root / "runs")).serve(fp, spec=spec, run_id="r", run_dir=str(root / "r"),
                                               output_paths={}) is None


RUNNER = """\
import json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_cache import run, script_job
root = Path(sys.argv[1])
r = run(script_job(root), root, backend="local")
print(json.dumps({{"status": r.status, "reused": r.reused, "out": Path(r.output_path).read_text()}}))
"""


def test_two_identical_jobs_at_once_in_two_processes(tmp_path):
    root = make_project(tmp_path, n_files=8)
    (tmp_path / "runner.py").write_text(RUNNER.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "PYTHONPATH": WORKTREE}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "runner.py"), str(root)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [o["status"] for o in outs] == ["Completed", "Completed"]
    assert not all(o["reused"] for o in outs)  # at least one ran (usually both: they start together)
    assert sorted(outs[0]["out"].splitlines()) == sorted(outs[1]["out"].splitlines())
    cache = root / "runs" / CACHE_DIR
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "entry.json").is_file(), sorted(os.listdir(cache))
    # a third run, in this process (as after a kernel restart), is served from what they stored
    third = run(script_job(root), root, backend="local")
    assert third.reused and sorted(third.read_lines()) == sorted(outs[0]["out"].splitlines())


def test_cache_key_ignores_cosmetic_fields_and_run_dirs(tmp_path):
    root = make_project(tmp_path)
    first = run(script_job(root), root)
    relabelled = script_job(root, display_name="Nice name", description="text", tags={"a": "b"})
    second = run(relabelled, root)
    assert second.reused and json.loads((Path(second.run_dir) / "reused.json").read_text())["source_run_dir"] == \
        first.run_dir


def test_runs_root_inside_the_code_folder_is_not_part_of_the_code(tmp_path):
    root = make_project(tmp_path)
    job = script_job(root)
    first = job(data=Input(type="uri_folder", path=str(root / "data"))).run(
        backend="inline", progress=False, runs_root=str(root / "src" / "runs"))
    second = job(data=Input(type="uri_folder", path=str(root / "data"))).run(
        backend="inline", progress=False, runs_root=str(root / "src" / "runs"))
    assert not first.reused and second.reused


def test_function_from_a_module_is_keyed_by_the_module_text(tmp_path, monkeypatch):
    """cloudpickle ships functions of importable modules by reference: a change to a helper they call
    (not to their own source) must still rerun."""
    import importlib

    (tmp_path / "mods").mkdir()
    mod_file = tmp_path / "mods" / "prs_reuse_mod.py"
    mod_file.write_text("def helper():\n    return 'v1'\n\ndef run(mini_batch):\n    return [helper()] * len(mini_batch)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    mod = importlib.import_module("prs_reuse_mod")
    root = make_project(tmp_path / "p")

    def go():
        job = parallel_run_function(name="m", inputs={"d": Input()}, outputs={"o": Output()}, input_data="${{inputs.d}}",
                                    task=RunFunction(run=mod.run, append_row_to="${{outputs.o}}"))
        return job(d=str(root / "data")).run(backend="inline", progress=False, runs_root=str(tmp_path / "runs"))

    assert not go().reused and go().reused
    mod_file.write_text(mod_file.read_text().replace("'v1'", "'v2'"))
    importlib.reload(mod)
    changed = go()
    assert not changed.reused and set(changed.read_lines()) == {"v2"}


def test_without_a_code_folder_only_the_entry_script_counts(tmp_path, monkeypatch):
    root = make_project(tmp_path)
    monkeypatch.chdir(root / "src")
    job = parallel_run_function(name="nc", inputs={"d": Input()}, outputs={"o": Output()}, input_data="${{inputs.d}}",
                                task=RunFunction(entry_script="score.py", append_row_to="${{outputs.o}}"))

    def go():
        return job(d=str(root / "data")).run(backend="inline", progress=False, runs_root=str(tmp_path / "runs"))

    assert not go().reused
    (root / "src" / "notes.txt").write_text("unrelated file in the working directory\n")
    assert go().reused
    (root / "src" / "score.py").write_text(SCRIPT.replace("v1", "v3"))
    assert not go().reused


def test_output_location_is_not_part_of_the_key(tmp_path):
    """program_arguments naming an output: a rerun writing elsewhere is still a hit, materialised there."""
    root = make_project(tmp_path)
    job = script_job(root, outputs={"out": Output(type="uri_folder")},
                     task=RunFunction(code=str(root / "src"), entry_script="score.py",
                                      program_arguments="--out ${{outputs.out}}", append_row_to="${{outputs.out}}"))

    def go(where):
        return job(data=Input(type="uri_folder", path=str(root / "data"))).run(
            backend="inline", progress=False, runs_root=str(root / "runs"), output_bindings={"out": str(where)})

    first = go(tmp_path / "o1")
    second = go(tmp_path / "o2")
    assert not first.reused and second.reused
    assert (tmp_path / "o2" / "parallel_run_step.txt").read_bytes() == (tmp_path / "o1" / "parallel_run_step.txt").read_bytes()


def test_prs_nb_version_and_mltable_file_are_in_the_key(tmp_path, monkeypatch):
    import prs_nb

    root = tmp_path / "t"
    (root / "files").mkdir(parents=True)
    pd.DataFrame({"v": range(10)}).to_csv(root / "files" / "a.csv", index=False)
    (root / "MLTable").write_text("paths:\n  - pattern: ./files/*.csv\ntransformations:\n  - read_delimited: {}\n")

    def go():
        job = parallel_run_function(name="mt", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                    input_data="${{inputs.t}}", task=RunFunction(run=_fn_v1, append_row_to="${{outputs.o}}"))
        return job(t=Input(type="mltable", path=str(root))).run(backend="inline", progress=False,
                                                                runs_root=str(tmp_path / "runs"))

    assert not go().reused and go().reused
    (root / "MLTable").write_text("paths:\n  - pattern: ./files/*.csv\ntransformations:\n  - read_delimited: {}\n"
                                  "  - take: 4\n")
    taken = go()
    assert not taken.reused and taken.counts["items_total"] == 4
    pd.DataFrame({"v": range(11)}).to_csv(root / "files" / "a.csv", index=False)  # a listed file changed
    assert not go().reused and go().reused
    monkeypatch.setattr(prs_nb, "__version__", "999.0")
    assert not go().reused


def test_big_files_are_fingerprinted_by_stat_and_samples(tmp_path, monkeypatch):
    import prs_nb.cache as cache

    monkeypatch.setattr(cache, "BIG_FILE", 2 * 1024 * 1024)
    root = make_project(tmp_path, n_files=1)
    big = root / "data" / "big.bin"
    big.write_bytes(bytes(5 * 1024 * 1024))
    spec = script_job(root)(data=Input(type="uri_folder", path=str(root / "data"))).spec

    def key() -> str:
        fp = fingerprint(spec, base_dir=str(root), code_dir=str(root / "src"), functions_blob=None, argv=[],
                         run_dir="x", runs_root=str(root / "runs"))
        return fp.parts["data"]

    def poke(offset: int, *, keep_mtime: bool) -> None:
        st = big.stat()
        with open(big, "r+b") as fh:
            fh.seek(offset)
            fh.write(b"\x01")
        if keep_mtime:
            os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))

    k0 = key()
    poke(int(2.5 * 1024 * 1024), keep_mtime=True)  # inside the middle sample: seen
    k1 = key()
    assert k1 != k0
    poke(4 * 1024 * 1024 - 10, keep_mtime=False)  # outside the samples but a normal write: mtime changes
    k2 = key()
    assert k2 != k1
    poke(1536 * 1024, keep_mtime=True)  # outside the samples with the mtime put back: the documented blind spot
    assert key() == k2


def test_concurrent_stores_and_serves_of_one_key(tmp_path):
    """Threads racing to publish and serve the same key: one intact entry, no temporary leftovers,
    every serve sees a whole entry."""
    root = make_project(tmp_path)
    first = run(script_job(root), root)
    cache_dir = root / "runs" / CACHE_DIR
    key_dir = next(p for p in cache_dir.iterdir() if p.is_dir())
    spec = script_job(root)(data=Input(type="uri_folder", path=str(root / "data")), tag="a").spec
    fp = fingerprint(spec, base_dir=str(root), code_dir=str(root / "src"), functions_blob=None, argv=[],
                     run_dir="x", runs_root=str(root / "runs"))
    fp = type(fp)(key_dir.name, fp.parts)
    cache = ReuseCache(str(root / "runs"))
    import shutil

    shutil.rmtree(key_dir)  # the stores race to publish it again while the serves look it up
    errors: list[BaseException] = []
    served: list[object] = []

    def store() -> None:
        try:
            cache.store(fp, first, spec)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def serve(i: int) -> None:
        try:
            out = str(tmp_path / f"serve{i}")
            r = cache.serve(fp, spec=spec, run_id=f"r{i}", run_dir=out, output_paths={"out": out + "/o"})
            served.append(r)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=store) for _ in range(4)] + \
              [threading.Thread(target=serve, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(served) == 4
    for i, r in enumerate(served):  # a miss, or a whole copy - never a partial one
        if r is not None:
            assert r.reused and Path(r.output_path).read_bytes() == Path(first.output_path).read_bytes(), i
    assert sorted(p.name for p in cache_dir.iterdir() if p.is_dir()) == [key_dir.name]
    assert cache.serve(fp, spec=spec, run_id="last", run_dir=str(tmp_path / "last"),
                       output_paths={"out": str(tmp_path / "last" / "o")}) is not None
