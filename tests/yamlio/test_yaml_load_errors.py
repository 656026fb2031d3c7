"""prs_nb.load: what Azure rejects and what it misses (contract 11) are YamlErrors naming file, key,
expected and got; unknown keys are YamlKeyWarnings naming the key and the file."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

import prs_nb
from prs_nb.yamlio.problems import YamlError, YamlKeyWarning

BASE: dict[str, Any] = {
    "$schema": "https://azuremlschemas.azureedge.net/latest/parallelComponent.schema.json",
    "type": "parallel",
    "name": "score",
    "inputs": {"data": {"type": "uri_folder"}, "k": {"type": "integer", "default": 2, "min": 0, "max": 9},
               "opt": {"type": "string", "optional": True}},
    "outputs": {"out": {"type": "uri_file"}},
    "input_data": "${{inputs.data}}",
    "mini_batch_size": "10",
    "task": {"type": "run_function", "code": "./src", "entry_script": "score.py",
             "program_arguments": "--k ${{inputs.k}} $[[--opt ${{inputs.opt}}]]",
             "append_row_to": "${{outputs.out}}", "environment": "azureml:env:1"},
}


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    for part in head:
        d = d.setdefault(part, {})
    if value is _DELETE:
        d.pop(last, None)
    else:
        d[last] = value


_DELETE = object()


def _write(tmp_path: Path, changes: dict[str, Any], raw: str | None = None) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "score.py").write_text("def run(mb):\n    return mb\n")
    path = tmp_path / "c.yml"
    if raw is not None:
        path.write_text(raw)
        return path
    doc = copy.deepcopy(BASE)
    for k, v in changes.items():
        _set(doc, k, v)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_base_is_valid(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        job = prs_nb.load(_write(tmp_path, {}))
    assert job.spec.inputs["k"].default == 2


# (changes, key, words the message must contain) - Azure rejects the first group, misses the second
CASES = [
    # rejected by azure-ai-ml too
    ({"mini_batch_size": 10}, "mini_batch_size", ['quoted string', 'mini_batch_size: "10"', "got integer 10"]),
    ({"mini_batch_size": "10 MB"}, "mini_batch_size", ["'10 MB'", "KB, MB or GB"]),
    ({"mini_batch_size": "1.5MB"}, "mini_batch_size", ["'1.5MB'"]),
    ({"logging_level": "info"}, "logging_level", ["upper-case", "got 'info'", "write INFO"]),
    ({"logging_level": "ERROR"}, "logging_level", ["DEBUG, INFO, WARNING", "got 'ERROR'"]),
    ({"task.type": "script"}, "task.type", ["run_function", "got 'script'"]),
    ({"task.environment": _DELETE}, "task.environment", ["requires task.environment"]),
    ({"task.code": "./nope"}, "task.code", ["folder not found", "relative to the YAML file"]),
    ({"name": "Score-Images"}, "name", ["lowercase", "got 'Score-Images'", "'score_images'"]),
    ({"error_threshold": "five"}, "error_threshold", ["whole number", "got string 'five'"]),
    ({"inputs.data.type": "folder"}, "inputs.data.type", ["uri_folder", "got 'folder'"]),
    ({"is_deterministic": "yes please"}, "is_deterministic", ["true or false"]),
    # missed by azure-ai-ml (contract 11): prs_nb checks them
    ({"max_concurrency_per_instance": 2.5}, "max_concurrency_per_instance", ["whole number", "got number 2.5",
                                                                            "truncate it to 2"]),
    ({"error_threshold": -2}, "error_threshold", [">= -1", "-1 disables it", "got -2"]),
    ({"mini_batch_error_threshold": -5}, "mini_batch_error_threshold", [">= -1", "got -5"]),
    ({"max_concurrency_per_instance": 0}, "max_concurrency_per_instance", [">= 1", "got 0"]),
    ({"resources": {"instance_count": 0}}, "resources.instance_count", [">= 1", "got 0"]),
    ({"retry_settings": {"timeout": 0}}, "retry_settings.timeout", ["(0, 259200]", "got integer 0"]),
    ({"retry_settings": {"timeout": 300000}}, "retry_settings.timeout", ["(0, 259200]", "300000"]),
    ({"retry_settings": {"max_retries": -1}}, "retry_settings.max_retries", [">= 0", "got -1"]),
    ({"retry_settings": {"timeout": 1.5}}, "retry_settings.timeout", ["whole seconds", "truncate it to 1",
                                                                      "write 2"]),
    ({"task": _DELETE}, "task", ["needs a task"]),
    ({"task.entry_script": _DELETE}, "task.entry_script", ["missing", "entry_script: score.py"]),
    ({"task.entry_script": "missing.py"}, "task.entry_script", ["'missing.py' not found"]),
    ({"input_data": _DELETE}, "input_data", ["missing", "declared inputs: data, k, opt"]),
    ({"input_data": "${{inputs.nope}}"}, "input_data", ["inputs.nope", "not declared", "data, k, opt"]),
    ({"input_data": "${{inputs.k}}"}, "input_data", ["a integer", "data input"]),
    ({"input_data": "inputs.data"}, "input_data", ["binding like", "got 'inputs.data'"]),
    ({"task.program_arguments": "--x ${{inputs.nope}}"}, "task.program_arguments", ["inputs.nope", "not declared"]),
    ({"task.program_arguments": "--o ${{outputs.nope}}"}, "task.program_arguments", ["outputs.nope"]),
    ({"task.program_arguments": ["--a", "1"]}, "task.program_arguments", ["one string", "join it"]),
    ({"task.program_arguments": "--x ${{parent.inputs.x}}"}, "task.program_arguments", ["is not a binding this job can resolve"]),
    ({"task.program_arguments": "$[[--flag]]"}, "task.program_arguments", ["optional segment", "never be dropped"]),
    ({"task.append_row_to": "${{outputs.nope}}"}, "task.append_row_to", ["outputs.nope", "declared: out"]),
    ({"inputs.k.default": "two"}, "inputs.k.default", ["integer", "got string 'two'"]),
    ({"inputs.k.default": 12}, "inputs.k.default", ["<= max 9", "got 12"]),
    ({"partition_keys": "store"}, "partition_keys", ["list of column names", "got string 'store'"]),
    ({"mini_batch_size": "${{parent.inputs.mbs}}"}, "mini_batch_size", ["pipeline job's jobs: section"]),
    ({"type": "sweep"}, "type", ["type: parallel", "type: pipeline", "got type: 'sweep'"]),
]


@pytest.mark.parametrize("changes, key, words", CASES, ids=[c[1] + ":" + str(list(c[0].values())[0])[:20]
                                                           for c in CASES])
def test_invalid_component_is_a_yaml_error(tmp_path: Path, changes: dict[str, Any], key: str,
                                           words: list[str]) -> None:
    path = _write(tmp_path, changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", YamlKeyWarning)
        with pytest.raises(YamlError) as info:
            prs_nb.load(path)
    err = info.value
    assert isinstance(err, prs_nb.ConfigError) and isinstance(err, ValueError)
    assert err.path == str(path) and err.key == key, str(err)
    text = str(err)
    assert text.startswith(f"{path}: {key}: "), text
    for w in words:
        assert w in text, (w, text)


@pytest.mark.parametrize("raw, words", [
    ("type: parallel\nname: [unclosed\n", ["is not valid YAML"]),
    ("- a\n- b\n", ["expected a mapping", "got list"]),
    ("parallel_run_config:\n  entry_script: x.py\n", ["v1 ParallelRunConfig", "load_yaml"]),
    ("!!python/object:os.system {}\n", ["is not valid YAML"]),  # safe_load only: no object construction
])
def test_unreadable_files(tmp_path: Path, raw: str, words: list[str]) -> None:
    path = _write(tmp_path, {}, raw=raw)
    with pytest.raises(YamlError) as info:
        prs_nb.load(path)
    for w in words:
        assert w in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match="file not found"):
        prs_nb.load(tmp_path / "nope.yml")


@pytest.mark.parametrize("changes, key", [
    ({"colour": "blue"}, "colour"),
    ({"task.entry_scrpit": "score.py"}, "task.entry_scrpit"),
    ({"resources.gpus": 2}, "resources.gpus"),
    ({"retry_settings.timeuot": 5}, "retry_settings.timeuot"),
    ({"inputs.data.datastore": "x"}, "inputs.data.datastore"),
    ({"prs_nb.bakend": "inline"}, "prs_nb.bakend"),
])
def test_unknown_keys_warn_with_key_and_file(tmp_path: Path, changes: dict[str, Any], key: str) -> None:
    path = _write(tmp_path, changes)
    with pytest.warns(YamlKeyWarning) as record:
        job = prs_nb.load(path)
    assert job.spec.name == "score"  # the rest still loads
    (w,) = [r.message for r in record]
    assert isinstance(w, YamlKeyWarning)
    assert w.key == key and w.path == str(path)
    assert f"unknown key {key!r}" in str(w) and str(path) in str(w) and "drops it silently" in str(w)


def test_environment_variables_on_a_component_warn_and_apply(tmp_path: Path) -> None:
    path = _write(tmp_path, {"environment_variables": {"A": 1, "B": True}})
    with pytest.warns(YamlKeyWarning, match="Azure ML drops it there"):
        job = prs_nb.load(path)
    assert job.spec.environment_variables == {"A": "1", "B": "true"}


def test_unknown_keys_in_a_pipeline_warn(tmp_path: Path) -> None:
    comp = _write(tmp_path, {})
    path = tmp_path / "p.yml"
    path.write_text(yaml.safe_dump({
        "type": "pipeline", "colour": "red", "settings": {"default_compute": "x", "speed": "fast"},
        "inputs": {"d": {"type": "uri_folder", "path": "."}},
        "jobs": {"a": {"type": "parallel", "component": f"file:./{comp.name}", "priority": 1,
                       "inputs": {"data": "${{parent.inputs.d}}"}},
                 "b": {"type": "command", "command": "echo", "retries": 3}},
    }))
    with pytest.warns(YamlKeyWarning) as record:
        prs_nb.load(path)
    keys = sorted(r.message.key for r in record if isinstance(r.message, YamlKeyWarning))
    assert keys == ["colour", "jobs.a.priority", "jobs.b.retries", "settings.speed"]


def test_integers_as_azure_reads_them(tmp_path: Path) -> None:
    job = prs_nb.load(_write(tmp_path, {"error_threshold": "5", "max_concurrency_per_instance": 2.0,
                                        "resources": {"instance_count": "3"}}))
    assert (job.spec.error_threshold, job.spec.max_concurrency_per_instance) == (5, 2)
    assert job.spec.resources.instance_count == 3


def test_literal_inputs_with_defaults_and_optional_segments(tmp_path: Path) -> None:
    job = prs_nb.load(_write(tmp_path, {}))
    spec = job.spec
    assert spec.inputs["opt"].optional and spec.inputs["opt"].default is None
    from prs_nb.engine.run import resolve_program_arguments

    assert resolve_program_arguments(spec, str(tmp_path), {"out": "/o"}) == ["--k", "2"]
    bound = job(opt="x", k=5).spec
    assert resolve_program_arguments(bound, str(tmp_path), {"out": "/o"}) == ["--k", "5", "--opt", "x"]


def test_every_resources_key_survives_a_reexport(tmp_path: Path) -> None:
    res = {"instance_count": 2, "instance_type": "Standard_NC6", "shm_size": "8g", "docker_args": "--ipc=host",
           "max_instance_count": 4, "locations": ["westeurope"], "properties": {"p": "q"}}
    job = prs_nb.load(_write(tmp_path, {"resources": res}))
    out = tmp_path / "again" / "c.yml"
    job.to_yaml(out)
    assert yaml.safe_load(out.read_text())["resources"] == res
    assert prs_nb.load(out).spec == job.spec
