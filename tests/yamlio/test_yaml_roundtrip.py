"""JobSpec -> YAML -> JobSpec is the identity (hypothesis), and exported files load in azure-ai-ml."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from yaml_strategies import job_specs, pipelines

import prs_nb
from prs_nb.pipeline import PipelineJob
from prs_nb.spec import JobSpec
from prs_nb.yamlio.export import is_bound, job_to_yaml

ROOT = tempfile.mkdtemp(prefix="prs_nb_yaml_rt_")
atexit.register(shutil.rmtree, ROOT, True)  # hypothesis examples share one folder per module
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


def test_to_yaml_without_path_returns_the_text_and_writes_nothing(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from prs_nb import Input, RunFunction, parallel_run_function

    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def run(mb):\n    return mb\n")
    job = parallel_run_function(name="t", inputs=dict(d=Input(type="uri_folder")), mini_batch_size=5,
                                task=RunFunction(code="src", entry_script="score.py", environment="azureml:e:1"))
    text = job.to_yaml()
    assert "mini_batch_size: '5'" in text and "code: ./src" in text and "type: parallel" in text
    assert sorted(os.listdir(tmp_path)) == ["src"]
    (tmp_path / "t.yml").write_text(text)
    assert prs_nb.load(tmp_path / "t.yml").spec == job.spec.replace(
        task=job.spec.task.__class__(code=str(tmp_path / "src"), entry_script="score.py", environment="azureml:e:1"))
    bound = job(d="data")
    assert "type: pipeline" in bound.to_yaml() and "path: ./data" in bound.to_yaml()
