"""JobSpec validation and mini_batch_size parsing (contract 5.1, 12)."""

from __future__ import annotations

import pytest

from prs_nb import ConfigError, Input, Output, RunFunction, parallel_run_function
from prs_nb.spec import JobSpec, parse_mini_batch_size


def _run(mini_batch):
    return mini_batch


MBS_TABLE = [
    ("10", 10), ("1", 1), ("10kb", 10240), ("10KB", 10240), ("10Kb", 10240), ("10kB", 10240),
    ("1MB", 1048576), ("1mb", 1048576), ("1GB", 1073741824), ("512KB", 524288), (7, 7),
]
MBS_BAD = ["10 MB", "1.5MB", "1024b", " 10", "10 ", "", "MB", "10K", "10M", "10G", "10KBMB", "-1", "0", "0KB",
           "ten"]


@pytest.mark.parametrize("raw,expected", MBS_TABLE)
def test_mini_batch_size_parses_like_azure(raw, expected):
    assert parse_mini_batch_size(raw) == expected


@pytest.mark.parametrize("raw", MBS_BAD)
def test_mini_batch_size_rejects_with_a_clear_message(raw):
    with pytest.raises(ConfigError) as info:
        parse_mini_batch_size(raw)
    assert repr(raw) in str(info.value)


def test_mini_batch_size_rejects_bool_and_float():
    for raw in (True, 1.5):
        with pytest.raises(ConfigError):
            parse_mini_batch_size(raw)  # type: ignore[arg-type]


def test_defaults_match_the_contract():
    spec = JobSpec(name="x", task=RunFunction(run=_run))
    eff = spec.effective()
    assert eff.max_attempts == 3 and eff.timeout == 60
    assert eff.error_threshold == -1 and eff.mini_batch_error_threshold == -1
    assert eff.allowed_failed_percent == 100
    assert spec.logging_level == "INFO" and spec.resources.instance_count == 1
    assert spec.is_deterministic is True


BAD_SPECS = [
    (dict(max_concurrency_per_instance=0), "max_concurrency_per_instance must be"),
    (dict(error_threshold=-2), "error_threshold must be >= -1"),
    (dict(mini_batch_error_threshold="3"), "mini_batch_error_threshold must be a whole number"),
    (dict(logging_level="ERROR"), "logging_level must be one of DEBUG, INFO, WARNING"),
    (dict(retry_settings={"max_retries": -1}), "retry_settings.max_retries must be >= 0"),
    (dict(retry_settings={"timeout": 0}), "retry_settings.timeout must be"),
    (dict(retry_settings={"timeout": 259201}), "retry_settings.timeout must be"),
    (dict(retry_settings={"tries": 3}), "unknown keys"),
    (dict(allowed_failed_percent=101), "allowed_failed_percent must be"),
    (dict(backend="spark"), "backend must be one of local, inline, ray"),
    (dict(input_data="inputs.x"), "input_data must be a binding"),
    (dict(input_data="${{inputs.nope}}", inputs={"x": Input()}), "inputs.nope, which is not declared"),
    (dict(partition_keys="store"), "partition_keys must be a list"),
    (dict(append_row_file_name="a/b.txt"), "append_row_file_name must be a plain file name"),
    (dict(resources={"instance_count": 0}), "resources.instance_count must be >= 1"),
]


@pytest.mark.parametrize("kwargs,message", BAD_SPECS)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=None) as info:
        JobSpec(name="x", task=RunFunction(run=_run), **kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_dangling_program_argument_reference_is_an_error():
    with pytest.raises(ConfigError, match="inputs.model, which is not declared"):
        JobSpec(name="x", inputs={"data": Input()}, input_data="${{inputs.data}}",
                task=RunFunction(run=_run, program_arguments="--model ${{inputs.model}}"))


def test_append_row_to_must_name_a_declared_output():
    with pytest.raises(ConfigError, match="outputs.res, which is not declared"):
        JobSpec(name="x", task=RunFunction(run=_run, append_row_to="${{outputs.res}}"))


def test_program_arguments_override_thresholds():
    spec = JobSpec(name="x", task=RunFunction(
        run=_run, program_arguments="--error_threshold 5 --allowed_failed_count=2 --allowed_failed_percent 25 "
                                    "--append_row_dataframe_header True --foo bar"))
    eff = spec.effective()
    assert (eff.error_threshold, eff.mini_batch_error_threshold, eff.allowed_failed_percent) == (5, 2, 25.0)
    assert eff.append_row_dataframe_header is True


def test_bad_program_argument_values_are_clear():
    spec = JobSpec(name="x", task=RunFunction(run=_run, program_arguments="--error_threshold many"))
    with pytest.raises(ConfigError, match="--error_threshold in program_arguments must be a whole number"):
        spec.effective()


def test_partition_keys_win_over_mini_batch_size_with_a_warning():
    job = parallel_run_function(name="p", inputs={"t": Input(type="mltable")}, input_data="${{inputs.t}}",
                                mini_batch_size="10", partition_keys=["k"], task=RunFunction(run=_run))
    assert job.spec.effective().explicit_mini_batch_size is None
    from prs_nb.spec import warn_partitions_override

    with pytest.warns(UserWarning, match="mini_batch_size '10' is ignored"):
        warn_partitions_override(job.spec)


def test_runfunction_rejects_both_script_and_function():
    with pytest.raises(ConfigError, match="not both"):
        RunFunction(entry_script="score.py", run=_run)


def test_parallel_run_function_binds_inputs_and_outputs():
    job = parallel_run_function(
        name="score", inputs={"images": Input(type="uri_folder"), "threshold": Input(type="number", default=0.5)},
        outputs={"scores": Output(type="uri_file")}, input_data="${{inputs.images}}", mini_batch_size="10",
        task=RunFunction(run=_run, append_row_to="${{outputs.scores}}"))
    bound = job(images=Input(type="uri_folder", path="data"), threshold=0.7, scores=Output(path="o.txt"))
    assert bound.spec.bindings["threshold"] == 0.7
    assert bound.spec.output_bindings == {"scores": "o.txt"}
    assert job.spec.bindings == {}  # binding returns a new job
    with pytest.raises(ConfigError, match="neither an input"):
        job(nope=1)
    bound.mini_batch_error_threshold = 3
    assert bound.spec.mini_batch_error_threshold == 3
    bound.instance_count = 2
    assert bound.instance_count == 2
