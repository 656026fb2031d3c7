"""Tracebacks of functions shipped by value (notebook cells) show the cell's file and failing lines,
not cloudpickle's "<dynamic-code>" without source (found by notebooks/03)."""

from __future__ import annotations

import linecache
import os
import textwrap

import pytest

from prs_nb import Input, RunFunction, parallel_run_function
from prs_nb.sources import DYNAMIC_CODE, code_sources

CELL_1 = textwrap.dedent("""\
    def parse(path):
        with open(path) as fh:
            return float(fh.read())  # a corrupt file fails here
""")
CELL_2 = textwrap.dedent("""\
    import os

    def run(mini_batch):
        values = [parse(p) for p in mini_batch]  # the helper, from another cell
        return [f"{os.path.basename(p)} {v}" for p, v in zip(mini_batch, values)]
""")


def _cell_functions():
    """Functions defined the way a notebook defines them: in __main__, from a 'cell' file that only
    linecache knows (IPython registers every cell's source there)."""
    ns: dict = {"__name__": "__main__"}
    for i, src in enumerate((CELL_1, CELL_2), 1):
        name = f"<cell-{i}-test-sources>"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        exec(compile(src, name, "exec"), ns)  # noqa: S102 - test code
    return ns["run"]


@pytest.mark.parametrize("backend", ["local", "inline"])
def test_worker_traceback_shows_the_cells_files_and_lines(tmp_path, monkeypatch, backend):
    monkeypatch.chdir(tmp_path)
    os.makedirs("d")
    with open("d/a.txt", "w") as fh:
        fh.write("n/a")
    job = parallel_run_function(
        name="tb", inputs=dict(d=Input(type="uri_folder")), input_data="${{inputs.d}}",
        max_concurrency_per_instance=1, retry_settings=dict(max_retries=0), is_deterministic=False,
        backend=backend, task=RunFunction(run=_cell_functions()))
    result = job(d="d").run(progress=False)
    tb = result.errors.traceback.iloc[0]
    assert DYNAMIC_CODE not in tb
    assert 'File "<cell-2-test-sources>", line 4, in run' in tb
    assert "values = [parse(p) for p in mini_batch]" in tb  # the line, inside a comprehension too
    assert 'File "<cell-1-test-sources>", line 3, in parse' in tb
    assert "return float(fh.read())  # a corrupt file fails here" in tb
    assert tb.rstrip().endswith("ValueError: could not convert string to float: 'n/a'")
    with open(os.path.join(result.logs_dir, "user", "error", "0", "process001.txt")) as fh:
        assert "return float(fh.read())" in fh.read()


def test_sources_are_recorded_only_for_code_shipped_by_value():
    run = _cell_functions()
    sources = code_sources({"run": run, "init": os.path.basename})  # a library function: by reference
    files = {f for f, _lines in sources.values()}
    assert files == {"<cell-1-test-sources>", "<cell-2-test-sources>"}
    assert ("run", 3) in sources and ("parse", 1) in sources
