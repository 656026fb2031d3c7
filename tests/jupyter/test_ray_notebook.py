"""The notebook layer on the Ray backend, unchanged: ``%%parallel_run --backend ray`` in a real IPython
shell, the live display's counts and error table (the same as with the local backend), and the job
form with backend "ray" - all on the session's local Ray instance (tests/conftest.py)."""

from __future__ import annotations

import os

import pytest
from IPython.terminal.interactiveshell import TerminalInteractiveShell
from IPython.testing.globalipapp import start_ipython

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.jupyter.form import JobForm
from prs_nb.jupyter.progress import NotebookProgress

pytestmark = pytest.mark.usefixtures("ray_cluster")

RUN_NAMES = """
import os
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def fail_on_f3(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "f3.txt" in names:
        raise ValueError("cannot score f3.txt")
    return names


@pytest.fixture
def data(workdir):
    (workdir / "data").mkdir()
    for i in range(6):
        (workdir / "data" / f"f{i}.txt").write_text(str(i))
    return workdir / "data"


def test_magic_runs_the_cell_on_ray(data):
    start_ipython()
    ip = TerminalInteractiveShell.instance()
    ip.run_line_magic("load_ext", "prs_nb")
    ip.run_line_magic("parallel_run_defaults", "--reset")
    ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 2 -c 2 --append_row_to -o r --progress none "
                      "--backend ray --is_deterministic false", RUN_NAMES)
    r = ip.user_ns.pop("r")
    assert r.backend == "ray" and r.status == "Completed", r.summary()
    assert sorted(r.read_lines()) == [f"f{i}.txt" for i in range(6)]
    assert set(r.batches["host"]) and "" not in set(r.batches["host"])


def test_live_display_counts_and_error_table_match_the_local_backend(data):
    job = parallel_run_function(
        name="nb", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()}, mini_batch_size="1",
        max_concurrency_per_instance=2, retry_settings={"max_retries": 1}, is_deterministic=False,
        task=RunFunction(run=fail_on_f3, append_row_to="${{outputs.out}}"))
    shown = {}
    for backend in ("local", "ray"):
        bar = NotebookProgress("nb", display=False)
        res = job(data=str(data)).run(progress=bar, backend=backend)
        assert res.status == "Completed" and bar.finished and bar.status == "Completed"
        shown[backend] = (bar.total, bar.succeeded, bar.failed, bar.failed_attempts,
                          sorted((r.index, r.attempt, r.exc_type) for r in bar.error_rows))
        assert "cannot score f3.txt" in bar.errors_html.value
        assert all(state[1].startswith("exited") for state in bar.workers.values())  # every worker listed, ended
    assert shown["ray"] == shown["local"] == (6, 5, 1, 2, [(3, 1, "ValueError"), (3, 2, "ValueError")])


def test_live_display_lists_the_workers_of_every_node(data):
    job = parallel_run_function(
        name="nb2", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()}, mini_batch_size="1",
        max_concurrency_per_instance=1, instance_count=2, is_deterministic=False,
        task=RunFunction(run=fail_on_f3, append_row_to="${{outputs.out}}"))
    bar = NotebookProgress("nb2", display=False)
    job(data=str(data)).run(progress=bar, backend="ray")
    assert {"process001", "node 1/process001"} <= set(bar.workers)  # two nodes' process001, not one
    assert "node 1/process001" in bar.workers_html.value


def test_the_form_runs_on_ray(data):
    def run(mini_batch):
        return [len(mini_batch)]

    form = JobForm(functions={"run": run})
    form.set_values(input_path="data", mini_batch_size="4", max_concurrency_per_instance="1", append_row=True,
                    backend="ray", is_deterministic=False)
    assert form.widgets["backend"].value == "ray"
    form.run(wait=True)
    assert form.result is not None and form.result.backend == "ray", form.message.value
    assert sorted(form.result.read_lines()) == ["2", "4"]
    assert "backend ray" in form.result_html.value
