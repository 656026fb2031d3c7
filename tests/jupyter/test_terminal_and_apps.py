"""The same job outside a notebook (a plain script: tqdm text bar + error summary), the magic's
--form, and the widget-app notebooks executed top to bottom by nbclient (which fails on any error)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import nbformat
import pytest
from IPython.terminal.interactiveshell import TerminalInteractiveShell
from IPython.testing.globalipapp import start_ipython
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import os
    from prs_nb import Input, RunFunction, parallel_run_function

    def run(mini_batch):
        if any(p.endswith("f3.txt") for p in mini_batch):
            raise ValueError("f3 is unreadable")
        return list(mini_batch)

    os.makedirs("d", exist_ok=True)
    for i in range(8):
        open(f"d/f{i}.txt", "w").write("x")
    job = parallel_run_function(name="script_job", inputs={"d": Input(type="uri_folder", path="d")},
                                mini_batch_size="1", max_concurrency_per_instance=1,
                                retry_settings={"max_retries": 1}, task=RunFunction(run=run))
    result = job.run(progress=True)
    print("STATUS", result.status)
""")


def test_plain_script_shows_text_bar_and_error_summary(workdir):
    (workdir / "job.py").write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "job.py"], cwd=workdir, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "STATUS Completed" in r.stdout
    assert "script_job: 100%" in r.stderr and "8/8" in r.stderr  # the tqdm text bar
    assert "failed attempts: 2 (1 retried)" in r.stderr
    assert "mini-batch 3 attempt 1 on process001: ValueError: f3 is unreadable" in r.stderr
    assert "mini-batch 3 attempt 2" in r.stderr


def test_form_flag_opens_the_prefilled_form(workdir):
    start_ipython()  # once per process (a second call returns None); then the shell is the singleton
    ip = TerminalInteractiveShell.instance()
    ip.run_line_magic("load_ext", "prs_nb")
    (workdir / "data").mkdir()
    for i in range(6):
        (workdir / "data" / f"f{i}.txt").write_text("x")
    ip.run_cell_magic("parallel_run", "--input data --mini_batch_size 4 -c 1 --max_retries 0 --append_row_to --form "
                      "-o form", "import os\ndef run(mini_batch):\n    return [str(len(mini_batch))]\n")
    form = ip.user_ns.pop("form")
    v = form.values()
    assert v["input_path"] == "data" and v["mini_batch_size"] == "4" and v["retry_settings.max_retries"] == 0
    assert v["append_row"] is True and "<b>2</b> mini-batch(es)" in form.preview.value
    assert not (workdir / "prs_runs").exists()  # --form only opens the form
    form.run(wait=True)
    assert sorted(form.result.read_lines()) == ["2", "4"]
    assert "task=RunFunction(run=run, append_row_to='${{outputs.results}}')" in form.python()


@pytest.mark.parametrize("name", ["job_builder.ipynb", "run_monitor.ipynb"])
def test_widget_apps_execute(workdir, name, monkeypatch):
    nb = nbformat.read(os.path.join(ROOT, "widgets", name), as_version=4)
    # the kernel imports this checkout
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(workdir)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1
