"""JobSpec -> YAML -> JobSpec is the identity (hypothesis), and exported files load in azure-ai-ml."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from yaml_strategies import job_specs, pipelines

import prs_nb
from prs_nb.pipeline import PipelineJob
from prs_nb.spec import JobSpec
from prs_nb.yamlio.export import is_bound, job_to_yaml

ROOT = tempfile.mkdtemp(prefix="prs_nb_yaml_rt_")
os.makedirs(os.path.join(ROOT, "src"), exist_ok=True)
with open(os.path.join(ROOT, "src", "score.py"), "w") as _fh:
    _fh.write("def run(mini_batch):\n    return mini_batch\n")
with open(os.path.join(ROOT, "conda.yml"), "w") as _fh:
    _fh.write("name: x\ndependencies:\n  - python=3.11\n")
_COUNTER = [0]


def _path(sub: str = "") -> str:
    _COUNTER[0] += 1
    folder = os.path.join(ROOT, "exports", sub, str(_COUNTER[0]))
    return os.path.join(folder, "job.yml")


def _roundtrip(spec: JobSpec) -> tuple[str, JobSpec]:
    path = _path()
    job_to_yaml(spec, path, base_dir=ROOT)
    loaded = prs_nb.load(path)
    return path, (loaded.spec if hasattr(loaded, "spec") else loaded.to_parallel_job().spec)


def _diff(a: JobSpec, b: JobSpec) -> dict[str, tuple[object, object]]:
    import dataclasses

    return {f.name: (getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(JobSpec)
            if getattr(a, f.name) != getattr(b, f.name)}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=job_specs(ROOT, bound=False))
def test_component_roundtrip_is_identity(spec: JobSpec) -> None:
    path, back = _roundtrip(spec)
    assert not is_bound(spec)
    assert back == spec, (_diff(spec, back), open(path).read())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=job_specs(ROOT, bound=True))
def test_bound_job_roundtrip_is_identity(spec: JobSpec) -> None:
    """A bound job exports as a one-node pipeline job; loading it and taking its parallel job back
    gives the same spec, bindings and output paths included."""
    path, back = _roundtrip(spec)
    assert is_bound(spec)
    loaded = prs_nb.load(path)
    assert isinstance(loaded, PipelineJob)
    assert back == spec, (_diff(spec, back), open(path).read())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pj=pipelines(ROOT))
def test_pipeline_roundtrip_is_identity(pj: PipelineJob) -> None:
    path = _path()
    pj.to_yaml(path)
    back = prs_nb.load(path)
    assert back == pj, open(path).read()
    # and once more from the re-exported file: the text is stable
    again = _path()
    back.to_yaml(again)
    assert open(again).read() == open(path).read()
