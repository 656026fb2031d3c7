"""JobForm and the live display, headless: set widget values, click buttons, real worker processes."""

from __future__ import annotations

import dataclasses
import time

import pytest
import yaml

from prs_nb.jupyter.form import GROUPS, JobForm, form_fields
from prs_nb.jupyter.progress import NotebookProgress
from prs_nb.spec import JobSpec, spec_fields

SCORE = """
import os
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "f07.txt" in names:
        raise ValueError("f07.txt is corrupt")
    return names
"""
SLOW = """
import time
def run(mini_batch):
    time.sleep(0.2)
    return list(mini_batch)
"""


@pytest.fixture
def project(workdir):
    (workdir / "data").mkdir()
    for i in range(25):
        (workdir / "data" / f"f{i:02d}.txt").write_text(str(i))
    (workdir / "src").mkdir()
    (workdir / "src" / "score.py").write_text(SCORE)
    (workdir / "src" / "slow.py").write_text(SLOW)
    return workdir


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def filled(project, **extra):
    form = JobForm()
    values = dict(input_path="data", mini_batch_size="5", max_concurrency_per_instance="2",
                  **{"task.code": "src", "task.entry_script": "score.py"})
    values.update(extra)
    form.set_values(**values)
    return form


def test_fields_are_generated_from_jobspec_and_grouped():
    keys = {f.key for f in form_fields()}
    shown = {f.name for f in spec_fields()} - {"inputs", "outputs", "bindings", "output_bindings", "input_data", "task",
                                               "tags", "properties", "identity", "api", "output_action", "compute",
                                               "experiment_name", "version", "resources", "retry_settings"}
    assert shown <= keys
    assert {"retry_settings.max_retries", "retry_settings.timeout", "resources.instance_count"} <= keys
    helps = {f.key: f.help for f in form_fields()}
    assert helps["mini_batch_size"] == JobSpec.__dataclass_fields__["mini_batch_size"].metadata["help"]
    groups = {f.group for f in form_fields()}
    assert {"data", "batching", "concurrency", "errors", "output", "logging"} <= groups
    form = JobForm()
    text = " ".join(getattr(c, "value", "") for c in form.widget.children if hasattr(c, "value"))
    for _g, title in GROUPS:
        assert f">{title}<" in text


def test_values_make_the_spec(project):
    form = filled(project, mini_batch_error_threshold=3, retry_settings__max_retries=1, retry_settings__timeout=30.0,
                  environment_variables="A=1\nB=two", append_row=True, backend="inline", partition_keys="")
    spec = form.to_spec()
    assert spec.mini_batch_size == "5" and spec.max_concurrency_per_instance == 2
    assert spec.mini_batch_error_threshold == 3 and spec.retry_settings.max_retries == 1
    assert spec.retry_settings.timeout == 30 and spec.environment_variables == {"A": "1", "B": "two"}
    assert spec.task.append_row_to == "${{outputs.results}}" and spec.backend == "inline"
    assert spec.bindings["data"].path == "data"


@pytest.mark.parametrize("field, value, fragment", [
    ("mini_batch_size", "10 MB", "mini_batch_size must look like"),
    ("max_concurrency_per_instance", "two", "max_concurrency_per_instance must be a whole number"),
    ("error_threshold", -5, "error_threshold must be &gt;= -1"),
    ("retry_settings.timeout", 0.0, "retry_settings.timeout must be a number of seconds"),
    ("environment_variables", "NOEQUALS", "environment_variables: each line must be KEY=VALUE"),
    ("input_path", "missing_folder", "missing_folder"),
])
def test_inline_validation_marks_the_field(project, field, value, fragment):
    form = filled(project)
    assert not form.run_button.disabled
    form.widgets[field].value = value
    assert fragment in form.errors[field].value
    assert form.run_button.disabled
    others = [k for k, e in form.errors.items() if e.value and k != field]
    assert not others


def test_preview_counts_mini_batches(project):
    form = filled(project)
    assert "<b>5</b> mini-batch(es) of 25 items" in form.preview.value
    form.widgets["mini_batch_size"].value = "10"
    assert "<b>3</b> mini-batch(es)" in form.preview.value


def test_run_button_shows_progress_and_error_table(project):
    form = filled(project, mini_batch_size="1", retry_settings__max_retries=1)
    form.run_button.click()
    result = form.wait(60)
    assert result is not None and result.status == "Completed"
    assert result.counts["failed"] == 1 and result.counts["succeeded"] == 24
    p = form.progress
    assert p.bar.n == p.bar.total == 25
    assert p.bar.container.children[1].max == p.bar.container.children[1].value == 25
    assert p.bar.container.children[1].bar_style == "warning"  # completed, one mini-batch tolerated
    assert "f07.txt is corrupt" in p.errors_html.value and "<td>7</td>" in p.errors_html.value
    assert "2 (failed)" in p.errors_html.value and "1 (retrying)" in p.errors_html.value
    assert "Completed" in p.title.value and "25/25 mini-batches" in p.title.value
    assert "process001" in p.workers_html.value
    assert "f07.txt is corrupt" in form.result_html.value and not form.run_button.disabled


def test_stop_button_cancels_the_job(project):
    form = filled(project, mini_batch_size="1", max_concurrency_per_instance="1",
                  **{"task.entry_script": "slow.py"})
    form.run()
    wait_for(lambda: form.progress is not None and form.progress.done >= 1)
    form.progress.stop_button.click()
    result = form.wait(60)
    assert result.status == "Canceled"
    assert result.counts["succeeded"] < 25
    pbar = form.progress.bar.container.children[1]
    assert pbar.max == 25 and pbar.value == result.counts["succeeded"] + result.counts["failed"] < 25
    assert form.progress.bar.container.children[1].bar_style == "danger"
    assert "Canceled" in form.progress.title.value


def test_yaml_round_trip_is_the_identity(project):
    form = filled(project, mini_batch_error_threshold=2, allowed_failed_percent=40.0, append_row=True,
                  output_path="out/scores.txt", environment_variables="K=v", logging_level="DEBUG",
                  description="demo", partition_keys="", backend="inline", ordered_output=True,
                  **{"task.program_arguments": "--k 1", "retry_settings.timeout": 12.5})
    form.yaml_path.value = "job.yml"
    form.export_button.click()
    assert "exported to" in form.message.value
    doc = yaml.safe_load((project / "job.yml").read_text())
    assert doc["type"] == "pipeline" and doc["inputs"]["data"]["path"] == "./data"  # bound input: a pipeline job
    comp = next(iter(doc["jobs"].values()))["component"]
    assert comp["mini_batch_error_threshold"] == 2 and comp["task"]["entry_script"] == "score.py"
    # Azure's retry_settings.timeout is an integer: 12.5 s is written rounded up, and exactly under prs_nb:
    assert comp["retry_settings"] == {"max_retries": 2, "timeout": 13}
    assert "12.5" in (project / "job.yml").read_text()
    other = JobForm()
    other.yaml_path.value = "job.yml"
    other.load_button.click()
    assert "loaded job.yml" in other.message.value
    assert other.values() == form.values()
    assert other.to_spec() == form.to_spec()


def test_load_yaml_reports_a_bad_file(project):
    (project / "bad.yml").write_text("type: parallel\nname: x\nmini_batch_size: '10 MB'\n")
    form = filled(project)
    before = form.values()
    form.yaml_path.value = "bad.yml"
    form.load_button.click()
    assert "&#9888; bad.yml: " in form.message.value  # the loader's message, naming the file
    assert form.values() == before  # nothing half-loaded


def test_show_as_python_builds_the_same_job(project):
    form = filled(project, mini_batch_error_threshold=2, append_row=True)
    form.python_button.value = True
    code = form.python_code.value
    assert "parallel_run_function(" in code and form.python_code.layout.display == ""
    ns: dict = {}
    exec(code.replace(".run()", ""), ns)
    built = ns["result"].spec
    assert dataclasses.replace(built, bindings={}) == dataclasses.replace(form.to_spec(), bindings={})
    assert built.bindings["data"].path == "data"


def test_form_from_cell_functions_runs_them(project):
    def run(mini_batch):
        return [len(mini_batch)]

    form = JobForm(functions={"run": run})
    form.set_values(input_path="data", mini_batch_size="10", max_concurrency_per_instance="1", append_row=True)
    assert not form.run_button.disabled
    form.run(wait=True)
    assert sorted(form.result.read_lines()) == ["10", "10", "5"]


def test_progress_render_is_throttled(project):
    from prs_nb import events as ev

    p = NotebookProgress("t", display=False, min_interval=3600)
    p.on_event(ev.JobStarted("t", "r", "/x", 1, "local", time.time()))
    first = p.title.value
    for i in range(100):
        p.on_event(ev.BatchSucceeded(i, 1, 0, "process001", 0.0, 0.0, 1, 1, 0, 0.0))
    assert p.done == 100 and p.title.value == first  # counted, not redrawn
    p.on_event(ev.JobFinished("Completed", "", {"total": 100, "succeeded": 100, "failed": 0}, time.time()))
    assert "100/100" in p.title.value


COMPONENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/parallelComponent.schema.json
type: parallel
name: score_images
inputs:
  images: {type: uri_folder}
  threshold: {type: number, default: 0.5}
outputs:
  scores: {type: uri_file}
input_data: ${{inputs.images}}
mini_batch_size: "3"
mini_batch_error_threshold: 1
retry_settings: {max_retries: 1, timeout: 30}
task:
  type: run_function
  code: ./src
  entry_script: score.py
  program_arguments: --threshold ${{inputs.threshold}}
  append_row_to: ${{outputs.scores}}
  environment: azureml:my-env:1
"""


def test_azure_component_with_named_ports_loads_runs_and_round_trips(project):
    (project / "score.yml").write_text(COMPONENT)
    form = JobForm()
    form.yaml_path.value = "score.yml"
    form.load_button.click()
    spec = form.to_spec()
    assert spec.input_data == "${{inputs.images}}" and spec.task.append_row_to == "${{outputs.scores}}"
    assert spec.inputs["threshold"].default == 0.5 and spec.task.program_arguments == "--threshold ${{inputs.threshold}}"
    assert form.values()["mini_batch_size"] == "3" and form.values()["task.code"] == "src"
    form.widgets["input_path"].value = "data"  # bind the data, as a user of the app does
    assert "<b>9</b> mini-batch(es)" in form.preview.value and not form.run_button.disabled
    form.yaml_path.value = "bound.yml"
    form.export_button.click()
    other = JobForm()
    other.yaml_path.value = "bound.yml"
    other.load_button.click()
    assert other.values() == form.values()
    assert other.to_spec() == form.to_spec()
    assert "'threshold': Input(type='number', default=0.5)" in form.python()
    form.run(wait=True)
    assert form.result.counts["succeeded"] == 8 and form.result.counts["failed"] == 1  # f07 fails; 1 tolerated
