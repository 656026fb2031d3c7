"""Exported files load in azure-ai-ml's own load_component / load_job and pass its validation.

azure-ai-ml is a test requirement (pyproject extra ``azure``): this module fails, never skips, when it
is missing. It is imported once per module (the import takes about two seconds).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from test_yaml_load_errors import CASES
from test_yaml_load_errors import _write as write_component
from yaml_strategies import job_specs, pipelines

import prs_nb
from prs_nb.pipeline import CommandNode, PipelineJob
from prs_nb.spec import JobSpec
from prs_nb.yamlio.export import is_bound, job_to_yaml

ROOT = tempfile.mkdtemp(prefix="prs_nb_yaml_az_")
atexit.register(shutil.rmtree, ROOT, True)  # hypothesis examples share one folder per module
os.makedirs(os.path.join(ROOT, "src"), exist_ok=True)
with open(os.path.join(ROOT, "src", "score.py"), "w") as _fh:
    _fh.write("def run(mini_batch):\n    return mini_batch\n")
with open(os.path.join(ROOT, "conda.yml"), "w") as _fh:
    _fh.write("name: x\ndependencies:\n  - python=3.11\n")
_COUNTER = [0]


logging.getLogger("azure").setLevel(logging.ERROR)
with warnings.catch_warnings():
    # imported once, at module level: it raises the recursion limit, which hypothesis must not see
    # change inside a test. A failed import is a collection error (a failure), never a skip.
    warnings.simplefilter("ignore")  # azure-ai-ml's own deprecation noise on import
    import azure.ai.ml as aml

    # Warm up: the first load imports more of azure-ai-ml (a compiled dependency raises the
    # recursion limit then), so do it here, once, and not inside a hypothesis example.
    _warm = os.path.join(ROOT, "warmup.yml")
    with open(_warm, "w") as _fh:
        _fh.write("type: parallel\nname: w\ninput_data: ${{inputs.d}}\ninputs: {d: {type: uri_folder}}\n"
                  "task: {type: run_function, code: ./src, entry_script: score.py, environment: azureml:e:1}\n")
    aml.load_component(source=_warm)._validate()
    # azure-ai-ml's telemetry imports IPython (and jedi, which sets the recursion limit to 3000)
    # the first time it formats an entity; import it now rather than inside a hypothesis example.
    import IPython  # noqa: F401


@pytest.fixture(scope="module")
def azure() -> Any:
    return aml


def azure_load(aml: Any, path: str, kind: str) -> Any:
    """load_component / load_job + _validate(); returns the entity, fails with azure's messages."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entity = aml.load_component(source=path) if kind == "component" else aml.load_job(source=path)
        result = entity._validate()
    assert result.passed, (result.error_messages, open(path).read())
    return entity


def _path() -> str:
    _COUNTER[0] += 1
    return os.path.join(ROOT, "exports", str(_COUNTER[0]), "job.yml")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(spec=job_specs(ROOT))
def test_random_exports_pass_azure_validation(azure: Any, spec: JobSpec) -> None:
    path = _path()
    job_to_yaml(spec, path, base_dir=ROOT)
    if is_bound(spec):
        job = azure_load(azure, path, "job")
        assert type(job).__name__ == "PipelineJob"
        (node,) = job.jobs.values()
        comp = node.component
    else:
        comp = azure_load(azure, path, "component")
    assert type(comp).__name__ == "ParallelComponent"
    # the values Azure reads are the ones we meant
    assert comp.error_threshold == spec.error_threshold
    assert comp.mini_batch_error_threshold == spec.mini_batch_error_threshold
    assert comp.logging_level == spec.logging_level
    assert comp.retry_settings.max_retries == spec.retry_settings.max_retries
    assert comp.retry_settings.timeout == math.ceil(spec.retry_settings.timeout)  # whole seconds, rounded up
    assert comp.resources.instance_count == spec.resources.instance_count
    assert comp.max_concurrency_per_instance == spec.max_concurrency_per_instance
    assert comp.input_data == spec.input_data
    assert comp.task.entry_script == "score.py"
    assert sorted(comp.inputs) == sorted(spec.inputs)
    assert sorted(comp.outputs) == sorted(spec.outputs)
    if spec.mini_batch_size is not None:
        from prs_nb.spec import parse_mini_batch_size

        assert comp.mini_batch_size == parse_mini_batch_size(spec.mini_batch_size)
    if spec.partition_keys:
        assert list(comp.partition_keys) == list(spec.partition_keys)
    if is_bound(spec) and spec.environment_variables:
        assert dict(node.environment_variables) == dict(spec.environment_variables)


def _azure_ready(pj: PipelineJob) -> PipelineJob:
    """Azure requires an environment on command jobs and a compute somewhere: fill both in."""
    jobs = {n: dataclasses.replace(j, environment=j.environment or "azureml:AzureML-sklearn-1.0@latest")
            if isinstance(j, CommandNode) else j for n, j in pj.jobs.items()}
    return dataclasses.replace(pj, jobs=jobs, settings={**pj.settings, "default_compute": "azureml:cpu-cluster"})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(pj=pipelines(ROOT))
def test_random_pipelines_pass_azure_validation(azure: Any, pj: PipelineJob) -> None:
    pj = _azure_ready(pj)
    path = _path()
    pj.to_yaml(path)
    job = azure_load(azure, path, "job")
    assert sorted(job.jobs) == sorted(pj.jobs)
    for name, node in pj.jobs.items():
        assert job.jobs[name].type == node.type


_AZ = 12  # the first _AZ rows of the load-error table are the ones azure-ai-ml rejects too
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "azure"


@pytest.mark.parametrize("name, kind", [("iris_batch/pipeline.yml", "job"), ("mnist_files/pipeline.yml", "job"),
                                        ("mnist_files/digit_identification.yml", "component")])
def test_fixtures_and_their_reexports_pass_azure_validation(azure: Any, tmp_path: Path, name: str,
                                                            kind: str) -> None:
    fx = tmp_path / "fx"
    shutil.copytree(FIXTURES, fx)
    azure_load(azure, str(fx / name), kind)
    again = tmp_path / "again" / "job.yml"
    prs_nb.load(fx / name).to_yaml(again)
    azure_load(azure, str(again), kind)


def test_function_job_exports_pass_azure_validation(azure: Any, tmp_path: Path) -> None:
    from test_yaml_export_functions import _job

    job = _job()
    job.to_yaml(tmp_path / "comp.yml")
    comp = azure_load(azure, str(tmp_path / "comp.yml"), "component")
    assert comp.task.entry_script == "score_functions_entry.py"
    assert comp.name == "score_functions" and comp.display_name == "Score Functions"
    (tmp_path / "data").mkdir()
    job(data=str(tmp_path / "data"), out=str(tmp_path / "o.txt")).to_yaml(tmp_path / "pipe.yml")
    pipe = azure_load(azure, str(tmp_path / "pipe.yml"), "job")
    assert dict(pipe.jobs["score_functions"].environment_variables) == {"OFFSET": "100"}
    # a DataFrame input: written as an MLTable folder, bound in direct mode
    import pandas as pd
    from test_yaml_export_functions import add_total

    tab = prs_nb.parallel_run_function(name="tab", inputs=dict(t=prs_nb.Input(type="mltable")),
                                       task=prs_nb.RunFunction(run=add_total))
    tab(t=pd.DataFrame({"key": ["a"], "a": [1], "b": [2]})).to_yaml(tmp_path / "tab.yml")
    tab_job = azure_load(azure, str(tmp_path / "tab.yml"), "job")
    t_in = tab_job.inputs["t"]._data
    assert (t_in.type, t_in.mode) == ("mltable", "direct") and t_in.path.endswith("tab_data/t")


@pytest.mark.parametrize("changes, key", [(c[0], c[1]) for c in CASES[:_AZ]],
                         ids=[c[1] for c in CASES[:_AZ]])
def test_what_prs_nb_rejects_azure_rejects_too(azure: Any, tmp_path: Path, changes: dict[str, Any],
                                               key: str) -> None:
    """The first group of the load-error table is rejected by azure-ai-ml as well (prs_nb is not
    stricter there than Azure); the rest are the semantic checks Azure misses."""
    path = write_component(tmp_path, changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            comp = azure.load_component(source=str(path))
        except Exception:  # noqa: BLE001 - azure raises marshmallow/its own exception types
            return
        assert not comp._validate().passed, key


@pytest.mark.parametrize("changes, key", [(c[0], c[1]) for c in CASES[_AZ:_AZ + 13]],
                         ids=[c[1] for c in CASES[_AZ:_AZ + 13]])
def test_what_azure_misses_prs_nb_catches(azure: Any, tmp_path: Path, changes: dict[str, Any], key: str) -> None:
    """Contract 11: azure-ai-ml loads and validates these; prs_nb.load rejects them."""
    path = write_component(tmp_path, changes)
    azure_load(azure, str(path), "component")
    with pytest.raises(prs_nb.YamlError):
        prs_nb.load(path)
