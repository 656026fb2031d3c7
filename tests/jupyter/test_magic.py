"""%%parallel_run and %parallel_run_defaults in a real in-process IPython shell, with real workers."""

from __future__ import annotations

import runpy

import pandas as pd
import pytest
import yaml
from IPython.core.error import UsageError
from IPython.terminal.interactiveshell import TerminalInteractiveShell
from IPython.testing.globalipapp import start_ipython

from prs_nb.errors import JobFailedError, UserCodeError
from prs_nb.jupyter.magic import ParallelRunFailed

RUN_NAMES = """
import os
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""

RUN_FAILS_ON_F3 = """
import os
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "f3.txt" in names:
        raise ValueError("cannot score f3.txt")
    return names
"""


@pytest.fixture(scope="module")
def shell():
    start_ipython()  # once per process (a second call returns None); then the shell is the singleton
    ip = TerminalInteractiveShell.instance()
    ip.run_line_magic("load_ext", "prs_nb")
    return ip


@pytest.fixture
def ip(shell, workdir):
    shell.run_line_magic("parallel_run_defaults", "--reset")
    for i in range(6):
        (workdir / "data").mkdir(exist_ok=True)
        (workdir / "data" / f"f{i}.txt").write_text(str(i))
    yield shell
    for name in ("r", "table", "run", "init", "THRESH"):
        shell.user_ns.pop(name, None)


def test_runs_cell_functions_and_stores_result(ip, workdir):
    ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 2 -c 2 --append_row_to -o r --progress none",
                      RUN_NAMES)
    r = ip.user_ns["r"]
    assert r.status == "Completed"
    assert r.counts["total"] == 3 and r.counts["succeeded"] == 3
    assert sorted(r.read_lines()) == [f"f{i}.txt" for i in range(6)]
    assert callable(ip.user_ns["run"])  # the cell ran in the notebook namespace, as a normal cell
    assert r.run_dir.startswith(str(workdir / "prs_runs"))


def test_cell_globals_travel_by_value(ip):
    ip.run_cell("THRESH = 3")
    ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 3 -c 1 --append_row_to -o r --progress none",
                      "def run(mini_batch):\n    return [str(THRESH * len(mini_batch))]\n")
    assert ip.user_ns["r"].read_lines() == ["9", "9"]


def test_failed_job_raises_with_result_and_cause(ip):
    with pytest.raises(ParallelRunFailed) as info:
        ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 1 -c 2 --max_retries 1 "
                          "--mini_batch_error_threshold 0 -o r --progress none", RUN_FAILS_ON_F3)
    exc = info.value
    assert isinstance(exc, JobFailedError)
    r = ip.user_ns["r"]
    assert exc.result is r and r.status == "Failed"
    assert "cannot score f3.txt" in str(exc)
    assert isinstance(exc.__cause__, UserCodeError) and exc.__cause__.mini_batch_index == 3
    rendered = exc._render_traceback_()
    assert rendered[0].startswith("ParallelRunFailed: prs_nb job") and any("mini-batch 3" in x for x in rendered)
    errs = r.errors
    assert list(errs["attempt"]) == [1, 2] and set(errs["index"]) == {3}


def test_failed_job_through_run_cell_stops_there(ip):
    res = ip.run_cell("%%parallel_run --input data --mini_batch_size 1 -c 1 --max_retries 0 --mini_batch_error_threshold 0 "
                      "--progress none\n"
                      + RUN_FAILS_ON_F3)
    assert isinstance(res.error_in_exec, ParallelRunFailed)


def test_no_raise_keeps_going(ip):
    ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 1 -c 1 --max_retries 0 --no-raise -o r "
                      "--progress none", RUN_FAILS_ON_F3)
    r = ip.user_ns["r"]
    assert r.status == "Completed" and r.counts["failed"] == 1  # thresholds -1: tolerated


@pytest.mark.parametrize("line, fragment", [
    ("--input data --mini_batch_sise 2", "unrecognized arguments: --mini_batch_sise"),
    ("--input data --backend nowhere", "invalid choice: 'nowhere'"),
    ("--input data -c two", "invalid int value: 'two'"),
    ("--input data --mini_batch_size '10 MB'", "mini_batch_size must look like '10', '512KB' or '1GB'"),
    ("--input data --max_retries -1", "retry_settings.max_retries must be >= 0"),
    ("--input data --env NOEQUALS", "--environment_variables takes KEY=VALUE"),
    ("--mini_batch_size 2", "needs --input PATH"),
])
def test_bad_flags_are_one_line_usage_errors(ip, line, fragment):
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("parallel_run", line, RUN_NAMES)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_bad_flag_via_run_cell_is_usage_error(ip):
    res = ip.run_cell("%%parallel_run --input data --mini-batch-sise 2\n" + RUN_NAMES)
    assert isinstance(res.error_in_exec, UsageError)


def test_cell_without_run_is_usage_error(ip):
    with pytest.raises(UsageError, match="must define run"):
        ip.run_cell_magic("parallel_run", "--input data", "def init():\n    pass\n")


def test_dry_run_lists_mini_batches_without_running(ip, workdir):
    ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 4 --dry-run -o table", RUN_NAMES)
    table = ip.user_ns["table"]
    assert list(table["mini_batch"]) == [0, 1] and list(table["items"]) == [4, 2]
    assert not (workdir / "prs_runs").exists()


def test_defaults_apply_and_reset(ip, capsys):
    ip.run_line_magic("parallel_run_defaults", "--input data --mini_batch_size 3")
    assert "--input 'data'" in capsys.readouterr().out
    ip.run_cell_magic("parallel_run", "-c 1 -o r --progress none", RUN_NAMES)
    assert ip.user_ns["r"].counts["total"] == 2
    ip.run_cell_magic("parallel_run", "--mini_batch_size 1 -c 1 -o r --progress none", RUN_NAMES)
    assert ip.user_ns["r"].counts["total"] == 6  # a flag beats the default
    ip.run_line_magic("parallel_run_defaults", "--reset")
    assert "none set" in capsys.readouterr().out
    with pytest.raises(UsageError, match="needs --input"):
        ip.run_cell_magic("parallel_run", "-c 1", RUN_NAMES)


def test_dataframe_variable_as_input(ip):
    ip.user_ns["frame"] = pd.DataFrame({"x": range(10)})
    ip.run_cell_magic("parallel_run", "--input frame --mini_batch_size 1KB -c 1 --append_row_to -o r --progress none",
                      "def run(mini_batch):\n    return [str(v * 2) for v in mini_batch['x']]\n")
    r = ip.user_ns["r"]
    assert r.status == "Completed" and sorted(int(x) for x in r.read_lines()) == [v * 2 for v in range(10)]


def test_export_writes_yaml_and_a_real_entry_script(ip, workdir):
    ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 2 --name scorer --append_row_to "
                      "--program_arguments '--k 1' --export out/scorer.yml", RUN_NAMES)
    doc = yaml.safe_load((workdir / "out" / "scorer.yml").read_text())
    assert doc["type"] == "pipeline" and doc["inputs"]["data"]["path"] == "../data"  # bound: a pipeline job
    comp = doc["jobs"]["scorer"]["component"]
    assert comp["type"] == "parallel" and comp["mini_batch_size"] == "2"
    assert comp["task"]["code"] == "./scorer_src" and comp["task"]["entry_script"] == "scorer_entry.py"
    assert comp["task"]["append_row_to"] == "${{outputs.results}}" and comp["task"]["program_arguments"] == "--k 1"
    entry = workdir / "out" / "scorer_src" / "scorer_entry.py"
    assert "return [os.path.basename(p) for p in mini_batch]" in entry.read_text()  # the cell, as written
    mod = runpy.run_path(str(entry))
    assert mod["run"](["/x/a.txt"]) == ["a.txt"]
    assert not (workdir / "prs_runs").exists()  # export alone does not run the job


def test_terminal_shows_text_bar_and_error_summary(ip, capsys):
    with pytest.raises(ParallelRunFailed):
        ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 1 -c 1 --max_retries 0 "
                          "--mini_batch_error_threshold 0 --progress text", RUN_FAILS_ON_F3)
    out, err = capsys.readouterr()
    assert "parallel_run:" in err and "mb" in err  # the tqdm text bar
    assert "mini-batch 3 attempt 1" in out and "ValueError: cannot score f3.txt" in out


def test_rerun_of_an_unchanged_cell_is_reused_unless_is_deterministic_false(ip):
    """Reuse is on by default (contract 12): the same cell run again is served from the cache;
    --is_deterministic false runs it again for real."""
    flags = "--input data --mini_batch_size 2 -c 1 --append_row_to -o r --progress none"
    ip.run_cell_magic("parallel_run", flags, RUN_NAMES)
    first = ip.user_ns["r"]
    ip.run_cell_magic("parallel_run", flags, RUN_NAMES)
    again = ip.user_ns["r"]
    assert not first.reused and again.reused and sorted(again.read_lines()) == sorted(first.read_lines())
    ip.run_cell_magic("parallel_run", flags + " --is_deterministic false", RUN_NAMES)
    fresh = ip.user_ns["r"]
    assert not fresh.reused and fresh.counts["succeeded"] == 3
    with pytest.raises(UsageError):
        ip.run_cell_magic("parallel_run", flags + " --is_deterministic maybe", RUN_NAMES)
