"""Exported files load in azure-ai-ml's own load_component / load_job and pass its validation.

azure-ai-ml is a test requirement (pyproject extra ``azure``): this module fails, never skips, when it
is missing. It is imported once per module (the import takes about two seconds).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from yaml_strategies import job_specs, pipelines

from prs_nb.pipeline import CommandNode, PipelineJob
from prs_nb.spec import JobSpec
from prs_nb.yamlio.export import is_bound, job_to_yaml

ROOT = tempfile.mkdtemp(prefix="prs_nb_yaml_az_")
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
