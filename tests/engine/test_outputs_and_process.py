"""append_row formatting options, RunResult round trips, and process hygiene (no __main__ re-import,
a core that never imports Jupyter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function


def frame_run(mini_batch):
    return mini_batch.assign(z=mini_batch["x"] + 0.5)


def tuple_run(mini_batch):
    return tuple(("a", len(mini_batch)) for _ in range(len(mini_batch)))


def _frame_job(**kw):
    return parallel_run_function(name="fmt", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                 mini_batch_size="200", task=RunFunction(append_row_to="${{outputs.o}}", **kw))


def test_dataframe_rows_are_space_separated_without_header(workdir):
    df = pd.DataFrame({"x": range(20), "name": [f"n{i}" for i in range(20)]})
    res = _frame_job(run=frame_run)(t=df).run(progress=False)
    lines = sorted(res.read_lines(), key=lambda s: int(s.split()[0]))
    assert lines[0] == "0 n0 0.5" and len(lines) == 20
    back = res.to_pandas()
    assert list(back.columns) == [0, 1, 2] and len(back) == 20


def test_append_row_dataframe_header_is_written_once(workdir):
    df = pd.DataFrame({"x": range(50)})
    res = _frame_job(run=frame_run, program_arguments="--append_row_dataframe_header True")(t=df).run(progress=False)
    assert res.counts["total"] > 1
    lines = res.read_lines()
    assert lines.count("x z") == 1 and lines[0] == "x z"
    back = res.to_pandas()
    assert list(back.columns) == ["x", "z"] and sorted(back["x"]) == list(range(50))


def test_settings_json_overrides_to_csv(workdir):
    code = workdir / "code"
    code.mkdir()
    (code / "parallel_run_step.settings.json").write_text(
        json.dumps({"append_row": {"pandas.DataFrame.to_csv": {"sep": ","}}}))
    df = pd.DataFrame({"x": range(10)})
    res = _frame_job(run=frame_run, code=str(code))(t=df).run(progress=False)
    assert all("," in ln for ln in res.read_lines())
    assert sorted(res.to_pandas()[0]) == list(range(10))


def test_bad_settings_json_is_a_clear_error(workdir):
    code = workdir / "code"
    code.mkdir()
    (code / "parallel_run_step.settings.json").write_text("{not json")
    from prs_nb import ConfigError

    with pytest.raises(ConfigError, match="parallel_run_step.settings.json is not valid JSON"):
        _frame_job(run=frame_run, code=str(code))(t=pd.DataFrame({"x": [1]})).run(progress=False)


def test_tuple_items_are_str_per_line(workdir):
    res = _frame_job(run=tuple_run)(t=pd.DataFrame({"x": range(3)})).run(progress=False)
    assert res.read_lines() == ["('a', 3)"] * 3


def test_uri_file_output_bound_to_a_path(workdir):
    job = parallel_run_function(name="f", inputs={"t": Input(type="mltable")}, outputs={"o": Output(type="uri_file")},
                                task=RunFunction(run=frame_run, append_row_to="${{outputs.o}}"))
    res = job(t=pd.DataFrame({"x": [1, 2]}), o=Output(type="uri_file", path="results/scores.csv")).run(progress=False)
    assert res.output_path == str(workdir / "results" / "scores.csv")
    assert sorted(res.read_lines()) == ["1 1.5", "2 2.5"]


def test_v1_append_row_file_name_in_output_folder(workdir):
    job = parallel_run_function(name="f", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                append_row_file_name="preds.txt",
                                task=RunFunction(run=frame_run, append_row_to="${{outputs.o}}"))
    res = job(t=pd.DataFrame({"x": [1]}), o="outdir").run(progress=False)
    assert res.output_path == str(workdir / "outdir" / "preds.txt")


SCRIPT = textwrap.dedent("""
    import os, sys
    print("TOP-LEVEL RAN", os.getpid(), flush=True)
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    def run(mini_batch):
        return [len(mini_batch)]

    job = parallel_run_function(name="noguard", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=2,
                                task=RunFunction(run=run, append_row_to="${{outputs.o}}"))
    res = job(d=sys.argv[1]).run(progress=False)
    print("STATUS", res.status, res.counts["succeeded"])
""")


def test_plain_script_without_main_guard_runs_top_level_once(workdir):
    data = workdir / "d"
    data.mkdir()
    for i in range(4):
        (data / f"{i}.txt").write_text("x")
    (workdir / "script.py").write_text(SCRIPT)
    r = subprocess.run([sys.executable, "script.py", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("TOP-LEVEL RAN") == 1
    assert "STATUS Completed 4" in r.stdout


def test_core_never_imports_jupyter():
    code = ("import sys, prs_nb, prs_nb.engine, prs_nb.v1, prs_nb.data, prs_nb.logs, prs_nb.cli;"
            "bad = [m for m in ('IPython', 'ipywidgets', 'tqdm.notebook', 'ipykernel') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_worker_import_stays_light():
    code = "import sys, prs_nb.engine.worker, prs_nb.entry; print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_cli_demo_runs_and_prints_summary(workdir):
    r = subprocess.run([sys.executable, "-m", "prs_nb", "demo", "--files", "60", "--workers", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "prs_nb job 'sensor_demo'" in r.stdout and "Completed" in r.stdout
    assert "mini-batches: 6 total, 5 succeeded, 1 failed" in r.stdout


def big_rows(mini_batch):
    # ~10 MB of text per mini-batch: travels as a part file, not through the socket
    return [f"{p[-7:]} {i:08d} " + "x" * 80 for p in mini_batch for i in range(100_000)]


@pytest.mark.parametrize("ordered", [False, True])
def test_large_results_are_spilled_and_appended_exactly_once(workdir, ordered):
    d = workdir / "d"
    d.mkdir()
    for i in range(3):
        (d / f"{i:03d}.txt").write_text("x")
    job = parallel_run_function(name="big", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="1", max_concurrency_per_instance=2, ordered_output=ordered,
                                task=RunFunction(run=big_rows, append_row_to="${{outputs.o}}"))
    res = job(d=str(d)).run(progress=False)
    assert res.status == "Completed"
    lines = res.read_lines()
    assert len(lines) == 300_000 and len(set(lines)) == 300_000
    if ordered:
        assert [ln[:7] for ln in lines[::100_000]] == ["000.txt", "001.txt", "002.txt"]
    from prs_nb.outputs import SPILL_CHARS

    assert os.path.getsize(res.output_path) == 3 * 100_000 * 98 > 3 * SPILL_CHARS  # each batch was spilled
    assert not os.path.exists(os.path.join(res.run_dir, "parts"))


def test_spill_path_is_taken_for_big_texts(workdir, monkeypatch):
    import prs_nb.entry as entry
    import prs_nb.outputs as outputs

    calls = []
    real = outputs.spill

    def counting_spill(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(entry, "spill", counting_spill)
    monkeypatch.setattr(entry, "SPILL_CHARS", 1000)
    df = pd.DataFrame({"x": range(2000)})
    job = parallel_run_function(name="fmt", inputs={"t": Input(type="mltable")}, outputs={"o": Output()},
                                mini_batch_size="16KB", task=RunFunction(run=frame_run, append_row_to="${{outputs.o}}"))
    res = job(t=df).run(backend="inline", progress=False)
    assert res.status == "Completed" and calls
    assert sorted(res.to_pandas()[0]) == list(range(2000))
