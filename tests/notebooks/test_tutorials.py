"""Every notebook in notebooks/ and widgets/ runs top to bottom in a real kernel (nbclient), and the
committed notebooks are fit for nbval.

nbval (`.ci/run`'s second pytest line) compares the outputs of cells marked ``# NBVAL_CHECK_OUTPUT``
but lets an IPython ``UsageError`` pass; nbclient here fails on any error. Each notebook runs on a
copy in a temporary folder (the tree stays clean) and must finish in under a minute; its time is
printed and, when ``$PRS_NB_NOTEBOOK_TIMES`` names a file, recorded there as JSON.
"""

from __future__ import annotations

import glob
import json
import os
import re

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from nbrun import RAISES_MARKER, execute, expects_error, record_time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TUTORIALS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
APPS = sorted(glob.glob(os.path.join(ROOT, "widgets", "*.ipynb")))
BUDGET_S = 60.0
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
MARKERS = ("# NBVAL_CHECK_OUTPUT", "# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP", RAISES_MARKER)


def _rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def kernel_env() -> dict[str, str]:
    """This environment, with the repository first on PYTHONPATH (so the kernel, its workers and `!prs-nb`
    run this checkout's prs_nb even where the installed one is another checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("JUPYTER_PLATFORM_DIRS", None)
    return env


def code_cells(path: str) -> list[tuple[int, nbformat.NotebookNode]]:
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _lines(cell: nbformat.NotebookNode) -> list[str]:
    return [line.strip() for line in cell.source.splitlines()]


def test_the_notebooks_are_found():
    names = [os.path.basename(p) for p in TUTORIALS]
    for mine in ("05_export_yaml_and_cli.ipynb", "06_azure_entry_script_folder.ipynb", "07_resume.ipynb"):
        assert mine in names
    assert {"job_builder.ipynb", "run_monitor.ipynb"} <= {os.path.basename(p) for p in APPS}
    assert names == sorted(names) and all(re.match(r"\d\d_\w+\.ipynb$", n) for n in names), (
        "tutorials are named NN_topic.ipynb, NN giving the reading order")


@pytest.mark.timeout(BUDGET_S + 60)
@pytest.mark.parametrize("path", TUTORIALS + APPS, ids=_rel)
def test_notebook_runs_in_a_real_kernel_within_a_minute(path, tmp_path):
    seconds = execute(path, str(tmp_path), timeout=BUDGET_S, env=kernel_env())
    print(f"{_rel(path)}: {seconds:.1f} s")
    if os.environ.get("PRS_NB_NOTEBOOK_TIMES"):
        record_time(os.environ["PRS_NB_NOTEBOOK_TIMES"], _rel(path), seconds)
    assert seconds < BUDGET_S, f"{_rel(path)} took {seconds:.1f} s; a tutorial must run in under a minute"


@pytest.mark.parametrize("path", TUTORIALS + APPS, ids=_rel)
def test_committed_notebook_is_fit_for_nbval(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{_rel(path)}: set the kernelspec to python3 (the current environment's kernel), got "
        f"{nb.metadata.get('kernelspec')}")
    checked = 0
    for i, cell in code_cells(path):
        lines = _lines(cell)
        for j, line in enumerate(lines):
            # a marker must be alone on its line, and never above a %%cell magic (the magic then does not run)
            if any(line.startswith(m) for m in MARKERS):
                assert line in MARKERS, f"{_rel(path)} cell {i}: {line!r}: a marker must be alone on its line"
                following = [x for x in lines[j + 1:] if x]
                assert not (following and following[0].startswith("%%")), (
                    f"{_rel(path)} cell {i}: marker above a %%cell magic; put it on the line after the magic")
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if expects_error(cell):
            continue
        assert not errors, (f"{_rel(path)} cell {i} was committed with an error output "
                            f"({errors[0].get('ename')}: {errors[0].get('evalue')}); fix it and re-execute")
        if CHECK_MARKER in lines:
            checked += 1
            assert cell.get("outputs"), (f"{_rel(path)} cell {i} is marked {CHECK_MARKER} but has no committed "
                                         "output for nbval to compare; execute the notebook and save it")
    if path in TUTORIALS:
        assert checked >= 2, f"{_rel(path)}: only {checked} cell(s) marked {CHECK_MARKER}; nbval checks nothing"


def test_nbclient_fails_on_a_usage_error_that_nbval_lets_pass(tmp_path):
    """Why the notebooks run under nbclient too: a misused magic flag is an IPython UsageError."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("%load_ext prs_nb"),
                nbformat.v4.new_code_cell("%%parallel_run --no_such_flag 1\ndef run(mini_batch):\n    return mini_batch")]
    src = tmp_path / "src"
    src.mkdir()
    path = src / "bad.ipynb"
    nbformat.write(nb, str(path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(CellExecutionError, match="UsageError"):
        execute(str(path), str(run_dir), timeout=BUDGET_S, env=kernel_env())


def test_a_cell_marked_as_raising_must_raise(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(f"{RAISES_MARKER}\n1 / 0"),
                nbformat.v4.new_code_cell(f"{RAISES_MARKER}\nx = 1")]
    path = tmp_path / "raises.ipynb"
    nbformat.write(nb, str(path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(AssertionError, match="cell 1 is marked as raising an exception but did not raise"):
        execute(str(path), str(run_dir), timeout=BUDGET_S, env=kernel_env())


def test_readme_links_every_tutorial_in_reading_order():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("\n## Tutorials", 1)[1].split("\n## ", 1)[0]
    linked = re.findall(r"\]\((notebooks/\d\d_\w+\.ipynb)\)", section)
    assert linked == sorted(linked), "the README lists the tutorials in reading order (01, 02, ...)"
    missing = [_rel(p) for p in TUTORIALS if _rel(p) not in linked]
    assert not missing, f"README's Tutorials section does not link {missing}"
    assert "mybinder.org/badge_logo.svg" in section and "urlpath=lab/tree/notebooks" in section
    assert "urlpath=voila%2Frender%2Fwidgets%2Fjob_builder.ipynb" in section


def test_notebook_times_file_is_json(tmp_path):
    out = tmp_path / "times.json"
    record_time(str(out), "notebooks/b.ipynb", 2.345)
    record_time(str(out), "notebooks/a.ipynb", 1.0)
    assert json.loads(out.read_text()) == {"notebooks/a.ipynb": 1.0, "notebooks/b.ipynb": 2.35}


def test_save_writes_fresh_outputs_back_without_timing_metadata(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(f"{CHECK_MARKER}\nprint(6 * 7)"),
                nbformat.v4.new_code_cell(f"{RAISES_MARKER}\nraise ValueError('meant')")]
    path = tmp_path / "save.ipynb"
    nbformat.write(nb, str(path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    execute(str(path), str(run_dir), timeout=BUDGET_S, env=kernel_env(), save=True)
    saved = nbformat.read(str(path), as_version=4)
    assert saved.cells[0].outputs[0]["text"] == "42\n"
    assert saved.cells[1].outputs[0]["ename"] == "ValueError"
    assert all("execution" not in c.metadata and "tags" not in c.metadata for c in saved.cells)


def _sanitize(text: str) -> str:
    """What nbval does with notebooks/sanitize.cfg (its own parser, its own order of application)."""
    from nbval.plugin import get_sanitize_patterns

    with open(os.path.join(ROOT, "notebooks", "sanitize.cfg"), encoding="utf-8") as fh:
        patterns = get_sanitize_patterns(fh.read())
    assert len(patterns) >= 8, "notebooks/sanitize.cfg: expected 'regex:' / 'replace:' pairs"
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize("one, other", [
    ("Logs: /tmp/prs_nb_tutorial_06_u6hy9574/prs_runs/x/20261204-172616-a93c45/logs",
     "Logs: /tmp/prs_nb_tutorial_06_ab12cd34/prs_runs/x/20261205-090001-000fff/logs"),
    ("Finished: 2026-12-04 17:26:17.426 after 0.4 s", "Finished: 2027-01-31 08:00:00.001 after 12.75 s"),
    ("job_progress_overview.2026120417.txt", "job_progress_overview.2027013108.txt"),
    ("x: 100%|##| 4/4 [00:00<00:00, 23.31mb/s, Completed]", "x: 100%|##| 4/4 [00:02<00:00,  1.95mb/s, Completed]"),
    ("<object at 0x7f9b5dec23e0>", "<object at 0x55d0c0ffee00>"),
    ("worker pid 1234 died", "worker pid 98765 died"),
    ("2026-12-04 17:21:49,896|INFO|3577|azureml_user.entry_script.process001|init",
     "2026-12-05 10:00:00,001|INFO|812|azureml_user.entry_script.process001|init"),
])
def test_sanitize_cfg_hides_what_changes_between_runs(one, other):
    assert _sanitize(one) == _sanitize(other)


@pytest.mark.parametrize("one, other", [
    ("Completed 4 mini-batches, 20 files", "Completed 5 mini-batches, 20 files"),
    ("same rows as the notebook run: True", "same rows as the notebook run: False"),
    ("store\neast     218.70\nnorth    234.45", "store\neast     218.71\nnorth    234.45"),
    ("Worker processes started: 2, exited/died: 2", "Worker processes started: 3, exited/died: 2"),
    ("sys/node/0/process001.txt", "sys/node/0/process002.txt"),
    ("'sensor_01.txt 32.5'", "'sensor_01.txt 32.0'"),
])
def test_sanitize_cfg_keeps_what_the_tutorials_check(one, other):
    assert _sanitize(one) != _sanitize(other)


def test_ci_runs_nbval_as_the_readme_says():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    readme = " ".join(open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().split())
    command = ("python -m pytest -q --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg "
               "notebooks widgets -p no:cacheprovider")
    assert command in ci.splitlines() and f"`{command}`" in readme
