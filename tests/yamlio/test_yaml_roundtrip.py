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


def test_design_example_exports_and_reruns_unchanged(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """DESIGN.md's job: ports with paths (an Output(path=...)), a literal with a default, program
    arguments and append_row_to. Exported, loaded and rerun it writes the same output file."""
    from prs_nb import Input, Output, RunFunction, parallel_run_function

    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(
        "import argparse, os\n"
        "def init():\n    global t\n    p = argparse.ArgumentParser()\n    p.add_argument('--threshold', type=float)\n"
        "    t = p.parse_known_args()[0].threshold\n"
        "def run(mb):\n    return [f'{os.path.basename(x)} {t}' for x in mb]\n")
    (tmp_path / "data" / "images").mkdir(parents=True)
    for i in range(5):
        (tmp_path / "data" / "images" / f"i{i}.png").write_bytes(b"x")
    score = parallel_run_function(
        name="score-images",
        inputs=dict(images=Input(type="uri_folder"), threshold=Input(type="number", default=0.5)),
        outputs=dict(scores=Output(type="uri_file", path="out/scores.txt")),
        input_data="${{inputs.images}}", mini_batch_size="2", max_concurrency_per_instance=1,
        mini_batch_error_threshold=5, retry_settings=dict(max_retries=2, timeout=60),
        task=RunFunction(code="./src", entry_script="score.py", program_arguments="--threshold ${{inputs.threshold}}",
                         append_row_to="${{outputs.scores}}"),
    )
    job = score(images=Input(type="uri_folder", path="data/images"), threshold=0.7)
    first = job.run(progress=False).read_lines()
    job.to_yaml("score.yml")
    pj = prs_nb.load("score.yml")
    assert isinstance(pj, PipelineJob)
    (tmp_path / "out" / "scores.txt").unlink()
    result = pj.run()
    assert result.status == "Completed", result.summary()
    assert sorted((tmp_path / "out" / "scores.txt").read_text().splitlines()) == sorted(first)
    assert sorted(first) == [f"i{i}.png 0.7" for i in range(5)]
    back = pj.to_parallel_job().spec
    assert back.output_bindings == {"scores": str(tmp_path / "out" / "scores.txt")}
    assert back.bindings == {"images": str(tmp_path / "data" / "images"), "threshold": 0.7}
