"""Functions defined in a notebook or script become a real entry script on export; the exported
job runs (from the YAML, with no function objects) to the same output as the function job."""

from __future__ import annotations

import json
import os
import threading
from os import path as osp
from pathlib import Path

import pytest

import prs_nb
from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.errors import ConfigError
from prs_nb.yamlio.entry_writer import entry_script_source

SCALE = 3
SUFFIXES = {"even": "E", "odd": "O"}
LOCK = threading.Lock()


def _label(n: int) -> str:
    return SUFFIXES["even" if n % 2 == 0 else "odd"]


def score_init() -> None:
    global offset
    offset = int(os.environ.get("OFFSET", "0"))


def score_run(mini_batch: list[str]) -> list[str]:
    out = []
    for p in mini_batch:
        with open(p) as fh:
            n = json.load(fh)["n"] * SCALE + offset
        out.append(f"{osp.basename(p)} {n} {_label(n)}")
    return out


def uses_lock(mini_batch: list[str]) -> list[str]:
    with LOCK:
        return list(mini_batch)


def _data(root: Path, n: int = 7) -> Path:
    d = root / "data"
    d.mkdir()
    for i in range(n):
        (d / f"f{i}.json").write_text(json.dumps({"n": i}))
    return d


def _job(**kw: object) -> prs_nb.ParallelJob:
    return parallel_run_function(
        name="Score Functions", inputs=dict(data=Input(type="uri_folder")),
        outputs=dict(out=Output(type="uri_file")), input_data="${{inputs.data}}", mini_batch_size="3",
        environment_variables={"OFFSET": "100"}, backend="inline",
        task=RunFunction(init=score_init, run=score_run, append_row_to="${{outputs.out}}", **kw))  # type: ignore[arg-type]


def test_functions_export_to_an_entry_script_that_runs_the_same(tmp_path: Path) -> None:
    data = _data(tmp_path)
    job = _job()
    reference = job(data=str(data)).run(progress=False, base_dir=str(tmp_path))
    assert reference.status == "Completed"

    path = tmp_path / "export" / "score.yml"
    job.to_yaml(path)
    script = tmp_path / "export" / "score_src" / "score_functions_entry.py"
    text = script.read_text()
    assert "def score_run(" in text and "def score_init(" in text and "def _label(" in text
    assert "run = score_run" in text and "init = score_init" in text
    assert "import json" in text and "import os.path as osp" in text and "import os" in text
    assert "offset" not in text.split("def ")[0]  # assigned by init(): runtime state, not source
    assert "SCALE = 3" in text and "SUFFIXES = {'even': 'E', 'odd': 'O'}" in text
    conda = (tmp_path / "export" / "score.conda.yml").read_text()
    assert "python=3." in conda and "azureml-core" in conda

    loaded = prs_nb.load(path)
    assert isinstance(loaded, prs_nb.ParallelJob)
    assert loaded.spec.task.run is None and loaded.spec.task.entry_script == "score_functions_entry.py"
    assert loaded.spec.name == "Score Functions" and loaded.spec.environment_variables == {"OFFSET": "100"}
    # run from the file in a fresh worker process (local backend): only the written script is used
    result = loaded(data=str(data)).run(backend="local", progress=False, base_dir=str(tmp_path),
                                        max_concurrency_per_instance=2)
    assert result.status == "Completed"
    assert sorted(result.read_lines()) == sorted(reference.read_lines())
    assert "f2.json 106 E" in result.read_lines()


def test_bound_function_job_exports_as_a_pipeline_that_runs(tmp_path: Path) -> None:
    data = _data(tmp_path)
    job = _job()(data=Input(type="uri_folder", path=str(data)), out=str(tmp_path / "res" / "scores.txt"))
    job.to_yaml(tmp_path / "pipe.yml", code_dir=str(tmp_path / "code"))
    assert (tmp_path / "code" / "score_functions_entry.py").is_file()
    pj = prs_nb.load(tmp_path / "pipe.yml")
    assert isinstance(pj, prs_nb.PipelineJob)
    result = pj.run()
    assert result.status == "Completed", result.summary()
    lines = (tmp_path / "res" / "scores.txt").read_text().splitlines()
    assert len(lines) == 7 and "f3.json 109 O" in lines


def test_kept_cell_source_is_written_as_the_entry_script(tmp_path: Path) -> None:
    cell = (
        "import math\n"
        "%matplotlib inline\n"
        "def init():\n    pass\n\n"
        "def run(mini_batch):\n    return [f'{math.floor(len(p))}' for p in mini_batch]\n"
    )
    ns: dict[str, object] = {}
    exec(compile(cell.replace("%matplotlib inline\n", ""), "<cell>", "exec"), ns)
    task = RunFunction(init=ns["init"], run=ns["run"], source=cell)  # type: ignore[arg-type]
    text = entry_script_source(task)
    assert "def run(mini_batch):" in text and "import math" in text
    assert "# (notebook only) %matplotlib inline" in text
    compile(text, "x", "exec")


def test_functions_from_an_ipython_cell_export(tmp_path: Path) -> None:
    """Functions typed into a real IPython shell (source kept only in IPython's cell cache)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        res = shell.run_cell(
            "import os\n"
            "WIDTH = 4\n"
            "def pad(s):\n    return s.rjust(WIDTH, '0')\n"
            "def run(mini_batch):\n    return [pad(os.path.basename(p)[:2]) for p in mini_batch]\n",
            store_history=True,
        )
        assert res.success
        fn = shell.user_ns["run"]
    finally:
        InteractiveShell.clear_instance()
    text = entry_script_source(RunFunction(run=fn))
    assert "def pad(s):" in text and "WIDTH = 4" in text and "import os" in text
    ns: dict[str, object] = {}
    exec(compile(text, "entry.py", "exec"), ns)
    assert ns["run"](["/x/ab.txt"]) == ["00ab"]  # type: ignore[operator]


def test_ipython_wrapped_builtins_stay_builtins(tmp_path: Path) -> None:
    """IPython puts a functools.wraps-wrapper of open() in the user namespace; the entry script must use
    the builtin open, not `from io import open`."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        res = shell.run_cell(
            "def run(mini_batch):\n"
            "    out = []\n"
            "    for p in mini_batch:\n"
            "        with open(p) as fh:\n"
            "            out.append(fh.read().strip())\n"
            "    return out\n",
            store_history=True,
        )
        assert res.success
        fn = shell.user_ns["run"]
        assert fn.__globals__["open"] is not open  # the wrapper this test is about
    finally:
        InteractiveShell.clear_instance()
    text = entry_script_source(RunFunction(run=fn))
    assert "import open" not in text and "def run(mini_batch):" in text
    (tmp_path / "a.txt").write_text("hello\n")
    ns: dict[str, object] = {}
    exec(compile(text, "entry.py", "exec"), ns)
    assert ns["run"]([str(tmp_path / "a.txt")]) == ["hello"]  # type: ignore[operator]


def test_a_global_that_is_not_source_is_a_clear_error(tmp_path: Path) -> None:
    job = parallel_run_function(name="locked", inputs=dict(d=Input(type="uri_folder")),
                                task=RunFunction(run=uses_lock))
    with pytest.raises(ConfigError, match=r"run\(\) uses the global 'LOCK' \(lock.*inside init\(\)"):
        job.to_yaml(tmp_path / "x.yml")


def test_a_lambda_is_a_clear_error(tmp_path: Path) -> None:
    job = parallel_run_function(name="lam", inputs=dict(d=Input(type="uri_folder")),
                                task=RunFunction(run=lambda mb: mb))
    with pytest.raises(ConfigError, match="lambda.*def run"):
        job.to_yaml(tmp_path / "x.yml")


def test_conda_file_pins_the_packages_the_code_imports(tmp_path: Path) -> None:
    import pandas

    def run(mini_batch):  # noqa: ANN001, ANN202 - a user's function
        return pandas.DataFrame({"p": mini_batch})

    job = parallel_run_function(name="pd_job", inputs=dict(d=Input(type="uri_folder")), task=RunFunction(run=run))
    job.to_yaml(tmp_path / "j.yml")
    conda = (tmp_path / "j.conda.yml").read_text()
    assert f"pandas=={pandas.__version__}" in conda


def test_user_environment_choice_is_kept(tmp_path: Path) -> None:
    env_file = tmp_path / "env.yml"
    env_file.write_text("name: mine\ndependencies: [python=3.10]\n")
    job = _job()
    job.to_yaml(tmp_path / "a.yml", environment="azureml:my-env:3")
    assert prs_nb.load(tmp_path / "a.yml").spec.task.environment == "azureml:my-env:3"
    job.to_yaml(tmp_path / "b.yml", environment=str(env_file))
    env = prs_nb.load(tmp_path / "b.yml").spec.task.environment
    assert env["conda_file"] == str(env_file)
    assert not (tmp_path / "a.conda.yml").exists() and not (tmp_path / "b.conda.yml").exists()


def add_total(mini_batch):  # noqa: ANN001, ANN201 - a user's function
    return mini_batch.assign(total=mini_batch["a"] + mini_batch["b"])[["key", "total"]]


def test_dataframe_input_exports_as_an_mltable_folder(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"key": [f"k{i}" for i in range(40)], "a": range(40), "b": range(0, 80, 2)})
    job = parallel_run_function(name="tab", inputs=dict(t=Input(type="mltable")), outputs=dict(o=Output(type="uri_file")),
                                mini_batch_size="1kb", backend="inline",
                                task=RunFunction(run=add_total, append_row_to="${{outputs.o}}"))
    reference = job(t=df).run(progress=False, base_dir=str(tmp_path))
    job(t=df).to_yaml(tmp_path / "tab.yml")
    folder = tmp_path / "tab_data" / "t"
    assert (folder / "data.parquet").is_file() and "read_parquet" in (folder / "MLTable").read_text()
    pj = prs_nb.load(tmp_path / "tab.yml")
    result = pj.run()
    assert result.status == "Completed", result.summary()
    lines = result.nodes["tab"].result.read_lines()
    assert sorted(lines) == sorted(reference.read_lines())
    assert len(lines) == 40 and "k3 9" in lines
    with pytest.raises(ConfigError, match="exports with a path"):
        job(t=df).to_yaml()


def test_cell_source_gets_what_other_cells_defined(tmp_path: Path) -> None:
    """A %%parallel_run-style cell uses an import and a constant from earlier cells of the notebook."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        assert shell.run_cell("import os\nPREFIX = 'id-'\ndef tidy(s):\n    return s.strip()\n").success
        cell = "def run(mini_batch):\n    return [PREFIX + tidy(os.path.basename(p)) for p in mini_batch]\n"
        assert shell.run_cell(cell).success
        fn = shell.user_ns["run"]
    finally:
        InteractiveShell.clear_instance()
    text = entry_script_source(RunFunction(run=fn, source=cell))
    assert "import os" in text and "PREFIX = 'id-'" in text and "def tidy(s):" in text
    assert text.index("PREFIX") < text.index("def run(")
    ns: dict[str, object] = {}
    exec(compile(text, "entry.py", "exec"), ns)
    assert ns["run"](["/a/ b.txt"]) == ["id-b.txt"]  # type: ignore[operator]
