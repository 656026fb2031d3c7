"""Azure-style YAML (tests/fixtures/azure, written after Azure's public examples) runs here unchanged."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import prs_nb
from prs_nb.api import ParallelJob
from prs_nb.pipeline import CommandNode, JobOutput, ParallelNode, ParentInput, ParentOutput, PipelineJob

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "azure"


@pytest.fixture
def fx(tmp_path: Path) -> Path:
    """A private copy of the fixtures (runs write outputs next to the YAML files)."""
    dst = tmp_path / "azure"
    shutil.copytree(FIXTURES, dst)
    return dst


def _log_text(logs_dir: str, sub: str) -> str:
    text = ""
    for path in glob.glob(os.path.join(logs_dir, sub, "**", "*.txt"), recursive=True):
        with open(path, encoding="utf-8") as fh:
            text += fh.read()
    return text


def test_iris_inline_parallel_pipeline_loads_with_every_setting(fx: Path) -> None:
    pj = prs_nb.load(fx / "iris_batch" / "pipeline.yml")
    assert isinstance(pj, PipelineJob)
    node = pj.jobs["batch_prediction"]
    assert isinstance(node, ParallelNode)
    spec = node.spec
    assert spec.mini_batch_size == "1kb"
    assert spec.logging_level == "DEBUG"
    assert spec.resources.instance_count == 2
    assert spec.max_concurrency_per_instance == 2
    assert spec.mini_batch_error_threshold == 5
    assert (spec.retry_settings.max_retries, spec.retry_settings.timeout) == (2, 60)
    assert spec.compute == "azureml:cpu-cluster"
    assert spec.task.entry_script == "iris_prediction.py"
    assert spec.task.code == str(fx / "iris_batch" / "script")
    assert spec.task.environment["conda_file"] == str(fx / "iris_batch" / "environment" / "environment_parallel.yml")
    # the node had no component: its ports come from the values bound to it
    assert {k: v.type for k, v in spec.inputs.items()} == {"input_data": "mltable", "score_model": "uri_folder"}
    assert spec.outputs["job_output_file"].type == "uri_file"
    eff = spec.effective()  # PRS options given as program arguments
    assert (eff.error_threshold, eff.allowed_failed_percent, eff.first_task_creation_timeout) == (5, 30.0, 600.0)
    assert pj.settings == {"default_compute": "azureml:cpu-cluster"}
    assert pj.tags == {"tag": "tagvalue", "owner": "sdkteam"}


def test_iris_pipeline_runs_end_to_end(fx: Path) -> None:
    pj = prs_nb.load(fx / "iris_batch" / "pipeline.yml")
    result = pj.run()
    assert result.status == "Completed", result.summary()
    run = result.nodes["batch_prediction"].result
    assert run.counts["items_total"] == 150 and run.counts["items_failed"] == 0
    assert run.counts["total"] > 1  # 1kb mini-batches: the 150-row file is cut into several
    rows = pd.read_csv(run.output_path, sep=" ", header=None, names=["species", "prediction"])
    assert len(rows) == 150
    assert (rows.species == rows.prediction).mean() > 0.9
    assert "init: model with 3 classes" in _log_text(run.logs_dir, "user/entry_script_log")
    assert any("compute 'azureml:cpu-cluster'" in n for n in result.notes)
    assert any("task.environment" in n for n in result.notes)


def test_mnist_command_node_feeds_parallel_node_end_to_end(fx: Path) -> None:
    pj = prs_nb.load(fx / "mnist_files" / "pipeline.yml")
    assert isinstance(pj, PipelineJob)
    assert pj.order() == ["prep_images", "score_images"]
    prep, score = pj.jobs["prep_images"], pj.jobs["score_images"]
    assert isinstance(prep, CommandNode) and isinstance(score, ParallelNode)
    assert prep.timeout == 120 and prep.environment_variables == {"SEED": "42"}
    assert score.inputs == {"job_data_path": JobOutput("prep_images", "images"), "threshold": ParentInput("threshold")}
    assert score.outputs == {"job_output_file": ParentOutput("scores")}
    assert score.component_ref == "file:./digit_identification.yml"
    assert score.spec.mini_batch_size == "3"  # the node's ${{parent.inputs.batch}} wins over the component's "4"
    assert score.spec.environment_variables == {"SCORE_MODE": "fast"}

    result = pj.run()
    assert result.status == "Completed", result.summary()
    assert list(result.nodes) == ["prep_images", "score_images"]
    prep_res = result.nodes["prep_images"]
    assert prep_res.returncode == 0
    with open(prep_res.log_path, encoding="utf-8") as fh:
        assert "wrote 10 images" in fh.read()
    images = prep_res.outputs["images"]
    assert sorted(os.listdir(images)) == [f"digit_{i:03d}.txt" for i in range(10)]
    run = result.nodes["score_images"].result
    assert run.counts["total"] == 4  # 10 files, 3 per mini-batch
    assert result.outputs["scores"] == str(fx / "mnist_files" / "outputs" / "scores.txt")
    lines = sorted(Path(result.outputs["scores"]).read_text().splitlines())
    assert lines == [f"digit_{i:03d}.txt: {'bright' if i % 2 else 'dark'}" for i in range(10)]
    log = _log_text(run.logs_dir, "user/entry_script_log")
    # the optional $[[--labels ...]] segment was dropped (labels unset), --threshold kept, node env var set
    assert "threshold=0.5 labels=['dark', 'bright'] mode=fast" in log
    assert "'--error_threshold', '10'" in log


def test_mnist_prep_is_deterministic_with_its_seed(fx: Path) -> None:
    pj = prs_nb.load(fx / "mnist_files" / "pipeline.yml")
    a = pj.run()
    b = pj.run()
    for name in os.listdir(a.nodes["prep_images"].outputs["images"]):
        assert (Path(a.nodes["prep_images"].outputs["images"]) / name).read_text() == \
            (Path(b.nodes["prep_images"].outputs["images"]) / name).read_text()
    assert a.run_dir != b.run_dir


def test_component_file_loads_and_runs_on_its_own(fx: Path, tmp_path: Path) -> None:
    job = prs_nb.load(fx / "mnist_files" / "digit_identification.yml")
    assert isinstance(job, ParallelJob)
    spec = job.spec
    assert spec.version == "1" and spec.display_name == "Digit identification (files)"
    assert spec.inputs["threshold"].default == 0.5 and spec.inputs["threshold"].optional
    assert spec.inputs["job_data_path"].mode == "ro_mount"
    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(5):
        (data / f"d{i}.txt").write_text("0.9 0.8" if i < 2 else "0.1 0.2")
    result = job(job_data_path=str(data), labels="low,high").run(backend="inline", progress=False,
                                                                  base_dir=str(tmp_path))
    assert result.status == "Completed"
    assert sorted(result.read_lines()) == ["d0.txt: high", "d1.txt: high", "d2.txt: low", "d3.txt: low",
                                           "d4.txt: low"]


@pytest.mark.parametrize("name", ["iris_batch/pipeline.yml", "mnist_files/pipeline.yml",
                                  "mnist_files/digit_identification.yml"])
def test_fixture_reexport_roundtrips(fx: Path, tmp_path: Path, name: str) -> None:
    first = prs_nb.load(fx / name)
    out = tmp_path / "again" / "job.yml"
    first.to_yaml(out)
    second = prs_nb.load(out)
    if isinstance(first, ParallelJob):
        assert isinstance(second, ParallelJob)
        # a component without values stays a component; only the written conda file path differs
        assert second.spec == first.spec
    else:
        assert second == first
