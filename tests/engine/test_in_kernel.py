"""The core inside a real Jupyter kernel: functions defined in cells run on worker processes
(shipped by value with cloudpickle; no fork of the kernel), and the RunResult displays."""

from __future__ import annotations

import nbclient  # the test extra (installed by .ci/run), with ipykernel from the jupyter extra
import nbformat

CELLS = [
    "import os, pandas as pd\nfrom prs_nb import parallel_run_function, RunFunction, Input, Output\n"
    "df = pd.DataFrame({'x': range(1000)})",
    "FACTOR = 3\n\ndef init():\n    global f\n    f = FACTOR\n\n"
    "def run(mini_batch):\n    return mini_batch.assign(y=mini_batch.x * f, pid=os.getpid())",
    "job = parallel_run_function(name='nb', inputs=dict(t=Input(type='mltable')), outputs=dict(o=Output()),\n"
    "    mini_batch_size='1KB', max_concurrency_per_instance=2,\n"
    "    task=RunFunction(init=init, run=run, append_row_to='${{outputs.o}}'))\n"
    "res = job(t=df).run()\nout = res.to_pandas()\n"
    "print(res.status, res.counts['total'] > 2, int(out[1].sum()), os.getpid() not in set(out[2]))",
    "res",
]


def test_cell_functions_run_on_workers_from_a_kernel(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.get("name") == "stdout")
    assert printed.strip() == f"Completed True {3 * sum(range(1000))} True"
    shown = nb.cells[3].outputs[0]["data"]
    assert "text/html" in shown and "Completed" in shown["text/html"]
