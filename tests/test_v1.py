"""The v1 surface (contract 2.1, 2.2, 2.3, 5.1, 5.5, 12): validation tables, lowering table, YAML.

Every table row is one rule of the contract: (settings -> expected error text) for the client-side
checks, (v1 settings -> expected JobSpec fields) for the lowering.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import yaml

from prs_nb.errors import ConfigError, InputDataError
from prs_nb.spec import Input, JobSpec, Output
from prs_nb.v1 import (
    RESERVED_ARGUMENTS,
    Dataset,
    DatasetConsumptionConfig,
    FileDataset,
    OutputFileDatasetConfig,
    ParallelRunConfig,
    ParallelRunStep,
    PipelineData,
    PipelineParameter,
    TabularDataset,
)

SCORE_PY = """\
import argparse

LABEL = None


def init():
    global LABEL
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels")
    args, _ = parser.parse_known_args()
    LABEL = open(args.labels).read().strip() if args.labels else ""


def run(mini_batch):
    return [f"{p.rsplit('/', 1)[-1]}:{LABEL}" for p in mini_batch]
"""

FAIL_PY = """\
def run(mini_batch):
    raise RuntimeError("always fails")
"""


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A work folder: src/score.py, src/fail.py, src/sub/ (a folder), data/ with 5 files,
    table.csv, labels.txt, and the current directory set to it."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "score.py").write_text(SCORE_PY)
    (src / "fail.py").write_text(FAIL_PY)
    (tmp_path / "other.py").write_text(FAIL_PY)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"f{i}.txt").write_text(str(i))
    (tmp_path / "table.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "labels.txt").write_text("cat\n")
    monkeypatch.chdir(tmp_path)
    return SimpleNamespace(root=tmp_path, src=src, data=data, csv=tmp_path / "table.csv",
                           labels=tmp_path / "labels.txt")


def make_config(ws: SimpleNamespace, **overrides: Any) -> ParallelRunConfig:
    kwargs: dict[str, Any] = dict(
        environment=None, entry_script="score.py", error_threshold=-1, output_action="append_row",
        compute_target="cpu", node_count=1, source_directory=str(ws.src),
    )
    kwargs.update(overrides)
    return ParallelRunConfig(**kwargs)


def make_step(ws: SimpleNamespace, config: ParallelRunConfig | None = None, **overrides: Any) -> ParallelRunStep:
    kwargs: dict[str, Any] = dict(
        name="score-step", parallel_run_config=config or make_config(ws), inputs=[str(ws.data)],
        output=PipelineData("scores"),
    )
    kwargs.update(overrides)
    return ParallelRunStep(**kwargs)


def resolve(value: Any, ws: SimpleNamespace) -> Any:
    """Table values may be callables of the work folder (objects that need files) or hold <tmp>."""
    if callable(value) and not isinstance(value, type):
        value = value(ws)
    if isinstance(value, str):
        return value.replace("<tmp>", str(ws.root))
    if isinstance(value, dict):
        return {k: resolve(v, ws) for k, v in value.items()}
    return value


def get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, part)
    return obj


class FakeCompute:
    """Shaped like AmlCompute: a name and scale_settings.maximum_node_count."""

    def __init__(self, name: str, max_nodes: int) -> None:
        self.name = name
        self.scale_settings = SimpleNamespace(maximum_node_count=max_nodes)


class FakeEnvironment:
    def __init__(self, name: str) -> None:
        self.name = name


# ============================================================ ParallelRunConfig: rejected (contract 2.1)
CONFIG_ERRORS = [
    # entry_script
    (dict(entry_script=None), "entry_script must be the file name"),
    (dict(entry_script="  "), "entry_script must be the file name"),
    (dict(entry_script="missing.py"), "does not exist in source_directory"),
    (dict(entry_script="sub"), "is not a file"),
    (dict(entry_script="../other.py"), "must be inside source_directory"),
    (dict(entry_script="score.py", source_directory=None), "does not exist in the current directory"),
    # error_threshold: int >= -1
    (dict(error_threshold=-2), "error_threshold must be a whole number >= -1"),
    (dict(error_threshold="5"), "error_threshold must be a whole number >= -1"),
    (dict(error_threshold=None), "error_threshold must be a whole number >= -1"),
    (dict(error_threshold=True), "error_threshold must be a whole number >= -1"),
    # output_action
    (dict(output_action="append"), "output_action must be 'append_row'"),
    (dict(output_action=None), "output_action must be 'append_row'"),
    # node_count
    (dict(node_count=0), "node_count must be a whole number >= 1"),
    (dict(node_count="2"), "node_count must be a whole number >= 1"),
    (dict(node_count=3, compute_target=FakeCompute("cpu", 2)), "more than compute_target's maximum_node_count 2"),
    # process_count_per_node >= 1
    (dict(process_count_per_node=0), "process_count_per_node must be a whole number >= 1"),
    (dict(process_count_per_node=1.5), "process_count_per_node must be a whole number >= 1"),
    # mini_batch_size (contract 5.1; "0" rejected per contract 12)
    (dict(mini_batch_size="10 MB"), "mini_batch_size must look like"),
    (dict(mini_batch_size=" 10"), "mini_batch_size must look like"),
    (dict(mini_batch_size="1.5MB"), "mini_batch_size must look like"),
    (dict(mini_batch_size="1024b"), "mini_batch_size must look like"),
    (dict(mini_batch_size="10K"), "mini_batch_size must look like"),
    (dict(mini_batch_size="10KBMB"), "one unit at most"),
    (dict(mini_batch_size="0"), "must be at least 1"),
    (dict(mini_batch_size=0), "must be at least 1"),
    (dict(mini_batch_size="0KB"), "must be at least 1"),
    (dict(mini_batch_size=1.5), "mini_batch_size must be an int or a string"),
    (dict(mini_batch_size=True), "mini_batch_size must be an int or a string"),
    # source_directory must exist and be a directory
    (dict(source_directory="nope"), "source_directory 'nope' does not exist"),
    (dict(source_directory="labels.txt"), "is not a directory"),
    (dict(source_directory=42), "source_directory must be a folder path"),
    # logging_level
    (dict(logging_level="ERROR"), "logging_level must be one of DEBUG, INFO, WARNING"),
    # run_invocation_timeout > 0 (and within Azure's 3-day range)
    (dict(run_invocation_timeout=0), "run_invocation_timeout must be a number of seconds greater than 0"),
    (dict(run_invocation_timeout=-1), "run_invocation_timeout must be a number of seconds greater than 0"),
    (dict(run_invocation_timeout=259201), "at most 259200"),
    (dict(run_invocation_timeout="60"), "run_invocation_timeout must be a number of seconds"),
    # run_max_try >= 1
    (dict(run_max_try=0), "run_max_try must be a whole number >= 1"),
    (dict(run_max_try=2.0), "run_max_try must be a whole number >= 1"),
    # append_row_file_name (checked with append_row, as v1)
    (dict(append_row_file_name="a/b.txt"), "append_row_file_name must be a plain file name"),
    *[(dict(append_row_file_name=f"x{c}y.txt"), "append_row_file_name must be a plain file name")
      for c in '~"#%&*:<>?\\{|}'],
    (dict(append_row_file_name=""), "append_row_file_name must be a plain file name"),
    (dict(append_row_file_name=5), "append_row_file_name must be a file name string"),
    # allowed_failed_count int >= -1
    (dict(allowed_failed_count=-2), "allowed_failed_count must be a whole number >= -1"),
    (dict(allowed_failed_count="3"), "allowed_failed_count must be a whole number >= -1"),
    # allowed_failed_percent in [0, 100]
    (dict(allowed_failed_percent=100.5), "allowed_failed_percent must be a number from 0 to 100"),
    (dict(allowed_failed_percent=-1), "allowed_failed_percent must be a number from 0 to 100"),
    (dict(allowed_failed_percent="10"), "allowed_failed_percent must be a number from 0 to 100"),
    # partition_keys: list of str; not with mini_batch_size (v1 keeps its ValueError, contract 12)
    (dict(partition_keys="store"), "partition_keys must be a list of column names"),
    (dict(partition_keys=[]), "partition_keys must be a non-empty list"),
    (dict(partition_keys=["store", ""]), "partition_keys must be a non-empty list"),
    (dict(partition_keys=["store"], mini_batch_size="10"), "either mini_batch_size ('10') or partition_keys"),
    (dict(partition_keys=PipelineParameter("pk", "store")), "partition_keys must be a list of column names"),
    # environment_variables: dict
    (dict(environment_variables=["A=1"]), "environment_variables must be a dict"),
    (dict(environment_variables={"": "x"}), "environment_variables names must be non-empty strings"),
    # description
    (dict(description=5), "description must be a string"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_ERRORS,
                         ids=[f"{i}-{'-'.join(o)}" for i, (o, _) in enumerate(CONFIG_ERRORS)])
def test_config_rejects(ws: SimpleNamespace, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        make_config(ws, **overrides)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # v1 raises ValueError; ConfigError is one


# ============================================================ ParallelRunConfig: accepted, defaults applied
CONFIG_OK = [
    ({}, dict(logging_level="INFO", run_invocation_timeout=60, run_max_try=3, append_row_file_name=None,
              allowed_failed_count=None, allowed_failed_percent=None, partition_keys=None, mini_batch_size=None,
              process_count_per_node=None, environment_variables={}, description=None)),
    (dict(mini_batch_size="10"), dict(mini_batch_size=10)),
    (dict(mini_batch_size="10kb"), dict(mini_batch_size=10240)),
    (dict(mini_batch_size="1MB"), dict(mini_batch_size=1048576)),
    (dict(mini_batch_size="1Gb"), dict(mini_batch_size=1073741824)),
    (dict(mini_batch_size=7), dict(mini_batch_size=7)),
    (dict(mini_batch_size=PipelineParameter("mbs", "2KB")), dict(mini_batch_size=2048)),
    (dict(output_action="APPEND_ROW"), dict(output_action="APPEND_ROW", is_append_row=True)),
    (dict(output_action="Summary_Only"), dict(is_append_row=False)),
    (dict(logging_level="debug"), dict(logging_level="DEBUG")),
    (dict(logging_level=PipelineParameter("ll", "WARNING")), dict(logging_level="WARNING")),
    (dict(entry_script="  score.py \n"), dict(entry_script="score.py")),
    (dict(error_threshold=0), dict(error_threshold=0)),
    (dict(allowed_failed_count=-1, allowed_failed_percent=0), dict(allowed_failed_count=-1,
                                                                   allowed_failed_percent=0)),
    (dict(allowed_failed_percent=12.5), dict(allowed_failed_percent=12.5)),
    (dict(run_max_try=1, run_invocation_timeout=0.5), dict(run_max_try=1, run_invocation_timeout=0.5)),
    (dict(node_count=PipelineParameter("nc", 2), process_count_per_node=PipelineParameter("pc", 3)),
     dict(node_count=2, process_count_per_node=3)),
    (dict(node_count=2, compute_target=FakeCompute("gpu", 2)), dict(node_count=2, compute_target_name="gpu")),
    (dict(partition_keys=("store", "brand")), dict(partition_keys=["store", "brand"])),
    (dict(partition_keys=PipelineParameter("pk", '["store"]')), dict(partition_keys=["store"])),
    # v1 checks append_row_file_name only when it is used (append_row)
    (dict(output_action="summary_only", append_row_file_name="a/b"), dict(append_row_file_name="a/b")),
    (dict(environment=FakeEnvironment("my-env")), dict(environment_name="my-env")),
    (dict(environment="my-env:3"), dict(environment_name="my-env:3")),
    (dict(environment=object()), dict(environment_name=None)),
    (dict(environment_variables={"A": 1}), dict(environment_variables={"A": "1"})),
    (dict(source_directory=None, entry_script="src/score.py"), dict(entry_script="src/score.py")),
    (dict(source_directory="src"), dict(source_directory="src")),
]


@pytest.mark.parametrize("overrides, expected", CONFIG_OK)
def test_config_accepts(ws: SimpleNamespace, overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    config = make_config(ws, **overrides)
    for attr, value in expected.items():
        assert getattr(config, attr) == value, attr


def test_config_positional_order_is_azures(ws: SimpleNamespace) -> None:
    config = ParallelRunConfig("env", "score.py", 5, "summary_only", "cpu", 2, 3, "4", str(ws.src), "desc",
                               "DEBUG", 30, 2, "out.txt", 1, 50.0, None, {"K": "V"})
    assert (config.environment, config.entry_script, config.error_threshold, config.output_action,
            config.compute_target, config.node_count, config.process_count_per_node, config.mini_batch_size,
            config.source_directory, config.description, config.logging_level, config.run_invocation_timeout,
            config.run_max_try, config.append_row_file_name, config.allowed_failed_count,
            config.allowed_failed_percent, config.partition_keys, config.environment_variables) == (
        "env", "score.py", 5, "summary_only", "cpu", 2, 3, 4, str(ws.src), "desc", "DEBUG", 30, 2, "out.txt", 1,
        50.0, None, {"K": "V"})


# ============================================================ YAML (save_to_yaml / load_yaml)
def test_yaml_round_trip(ws: SimpleNamespace) -> None:
    config = make_config(ws, environment=FakeEnvironment("env1"), compute_target=FakeCompute("cpu", 4),
                         node_count=2, process_count_per_node=3, mini_batch_size="1MB", description="d",
                         logging_level="DEBUG", run_invocation_timeout=90, run_max_try=4,
                         append_row_file_name="out.txt", allowed_failed_count=2, allowed_failed_percent=25.5,
                         environment_variables={"A": "1"})
    path = ws.root / "prc.yml"
    config.save_to_yaml(path)
    doc = yaml.safe_load(path.read_text())
    assert set(doc) == {"parallel_run_config"}
    assert doc["parallel_run_config"]["mini_batch_size"] == "1MB"
    assert doc["parallel_run_config"]["compute_target_name"] == "cpu"
    loaded = ParallelRunConfig.load_yaml(None, path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.environment == "env1" and loaded.compute_target == "cpu"
    assert loaded.mini_batch_size == 1048576


def test_yaml_round_trip_partition_keys(ws: SimpleNamespace) -> None:
    config = make_config(ws, partition_keys=["store"], output_action="summary_only")
    config.save_to_yaml(ws.root / "p.yml")
    assert ParallelRunConfig.load_yaml("workspace-ignored", ws.root / "p.yml").partition_keys == ["store"]


def test_yaml_load_reads_v1_int_size_and_environment_name(ws: SimpleNamespace) -> None:
    # v1 writes mini_batch_size as the converted int and older files carry environment_name.
    (ws.root / "v1.yml").write_text(yaml.safe_dump({"parallel_run_config": {
        "mini_batch_size": 1024, "error_threshold": 3, "output_action": "append_row", "logging_level": "INFO",
        "compute_target_name": "cpu", "node_count": 1, "process_count_per_node": 2, "entry_script": "score.py",
        "source_directory": "src", "environment_name": "old-env", "some_future_key": 1}}))
    config = ParallelRunConfig.load_yaml(None, ws.root / "v1.yml")
    assert (config.mini_batch_size, config.environment, config.error_threshold) == (1024, "old-env", 3)


@pytest.mark.parametrize("text", ["[1, 2]", "other: {}\n", "parallel_run_config: 5\n"])
def test_yaml_load_rejects_other_documents(ws: SimpleNamespace, text: str) -> None:
    (ws.root / "bad.yml").write_text(text)
    with pytest.raises(ConfigError, match="top-level 'parallel_run_config:'"):
        ParallelRunConfig.load_yaml(None, ws.root / "bad.yml")


def test_yaml_load_validates_like_the_constructor(ws: SimpleNamespace) -> None:
    make_config(ws).save_to_yaml(ws.root / "c.yml")
    text = (ws.root / "c.yml").read_text().replace("run_max_try: 3", "run_max_try: 0")
    (ws.root / "c.yml").write_text(text)
    with pytest.raises(ConfigError, match="run_max_try must be"):
        ParallelRunConfig.load_yaml(None, ws.root / "c.yml")


def test_yaml_uses_safe_load(ws: SimpleNamespace) -> None:
    (ws.root / "evil.yml").write_text("parallel_run_config: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="safe loader") as info:  # a PrsError, caused by the loader's refusal
        ParallelRunConfig.load_yaml(None, ws.root / "evil.yml")
    assert isinstance(info.value.__cause__, yaml.YAMLError)


# ============================================================ ParallelRunStep: rejected (contract 2.2, 5.5)
def _reserved_rows() -> list[tuple[Any, str]]:
    rows: list[tuple[Any, str]] = []
    for name in RESERVED_ARGUMENTS:
        rows.append((dict(arguments=["--a", "1", f"--{name}", "2"]), f"'--{name}' is reserved"))
        rows.append((dict(arguments=[f"--{name}=2"]), f"'--{name}' is reserved"))
    return rows


STEP_ERRORS: list[tuple[Any, str]] = [
    # arguments: a list, keyword style, no reserved names
    (dict(arguments="--x 1"), "arguments must be a list"),
    (dict(arguments=["x", "--y"]), "arguments must start with an option name"),
    (dict(arguments=[5, "--y"]), "arguments must start with an option name"),
    *_reserved_rows(),
    # inputs: a non-empty list unless --rank_mini_batch_count N > 0
    (dict(inputs=[]), "at least one input, or arguments must contain '--rank_mini_batch_count N'"),
    (dict(inputs=None), "at least one input, or arguments must contain '--rank_mini_batch_count N'"),
    (dict(inputs=[], arguments=["--rank_mini_batch_count", "0"]), "at least one input"),
    (dict(inputs=[], arguments=["--rank_mini_batch_count=-3"]), "at least one input"),
    (dict(inputs=[], arguments=["--rank_mini_batch_count", "abc"]), "--rank_mini_batch_count in arguments must be"),
    (dict(inputs=[], arguments=["--rank_mini_batch_count"]), "--rank_mini_batch_count in arguments needs a value"),
    (lambda w: dict(inputs=Dataset.File.from_files(str(w.data))), "inputs must be a list"),
    (lambda w: dict(inputs=str(w.data)), "inputs must be a list"),
    # inputs: all of one kind; locally only one
    (lambda w: dict(inputs=[str(w.data), Dataset.Tabular.from_delimited_files(str(w.csv))]),
     "all inputs must be of the same kind, all file or all tabular (got file, tabular)"),
    (lambda w: dict(inputs=[pd.DataFrame({"a": [1]}), Input(type="uri_folder", path=str(w.data))]),
     "all inputs must be of the same kind"),
    (lambda w: dict(inputs=[str(w.data), str(w.data)]), "only one input can be split into mini-batches locally"),
    # input values
    (dict(inputs=[42]), "inputs item must be a folder path, Dataset.File/Dataset.Tabular"),
    (dict(inputs=[PipelineData("prev")]), "is an output with no data yet locally"),
    (dict(inputs=[Input(type="number", default=1)]), "is a literal value, not data"),
    (dict(inputs=[Input(type="uri_folder")]), "has no path"),
    (dict(side_inputs=[pd.DataFrame({"a": [1]})]), "a DataFrame cannot be a side input"),
    (lambda w: dict(side_inputs=str(w.labels)), "side_inputs must be a list"),
    (lambda w: dict(inputs=[Dataset.File.from_files(str(w.data)).as_named_input("x")],
                    side_inputs=[Dataset.File.from_files(str(w.labels)).as_named_input("x")]),
     "two inputs are named 'x'"),
    # output required unless summary_only
    (dict(output=None), "output is required with output_action='append_row'"),
    (dict(output=42), "output must be a folder path, PipelineData(name)"),
    (dict(output=""), "output must be a non-empty folder path"),
    (dict(arguments=["--o", PipelineData("elsewhere")]), "which is not this step's output"),
    # other parameters
    (dict(name=""), "name must be a non-empty string"),
    (dict(name=None), "name must be a non-empty string"),
    (dict(parallel_run_config={"entry_script": "score.py"}), "parallel_run_config must be a prs_nb.v1.ParallelRunConfig"),
    (dict(allow_reuse="yes"), "allow_reuse must be True or False"),
]


@pytest.mark.parametrize("overrides, message", STEP_ERRORS)
def test_step_rejects(ws: SimpleNamespace, overrides: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_step(ws, **resolve(overrides, ws))
    assert message in str(info.value)


def test_step_missing_input_path_is_an_input_error(ws: SimpleNamespace) -> None:
    with pytest.raises(InputDataError, match="'missing' does not exist"):
        make_step(ws, inputs=["missing"])


STEP_OK = [
    dict(inputs=[], arguments=["--rank_mini_batch_count", "2"]),
    dict(inputs=None, arguments=["--x", "1", "--rank_mini_batch_count=3"]),
    dict(arguments=[]),
    dict(arguments=["--output_dir", "x", "-output", "--mini_batch_size_hint", "1"]),  # only exact names reserved
    dict(arguments=("--x", 1, "--y", 2.5, "--flag", True)),
    dict(arguments=["--x", PipelineParameter("p", 3)]),
    lambda w: dict(inputs=[Path(w.data)]),
    lambda w: dict(inputs=[str(w.data / "*.txt")]),
    lambda w: dict(parallel_run_config=make_config(w, output_action="summary_only"), output=None),
]


@pytest.mark.parametrize("overrides", STEP_OK)
def test_step_accepts(ws: SimpleNamespace, overrides: Any) -> None:
    assert isinstance(make_step(ws, **resolve(overrides, ws)).to_spec(), JobSpec)


# ============================================================ dataset stand-ins
def test_dataset_shims(ws: SimpleNamespace) -> None:
    fds = Dataset.File.from_files(str(ws.data))
    assert isinstance(fds, FileDataset) and fds.path == str(ws.data)
    named = fds.as_named_input("images")
    assert isinstance(named, DatasetConsumptionConfig) and named.name == "images"
    assert named.as_mount() is named and named.mode == "mount"
    assert named.as_download() is named and named.as_direct() is named and named.mode == "direct"
    tds = Dataset.Tabular.from_parquet_files(str(ws.root / "*.csv"))
    assert isinstance(tds, TabularDataset) and tds.format == "parquet"
    assert Dataset.Tabular.from_delimited_files([str(ws.csv)]).path == str(ws.csv)
    assert Dataset.File.from_files("not-yet", validate=False).path == str(ws.root / "not-yet")


@pytest.mark.parametrize("make, error, message", [
    (lambda w: Dataset.File.from_files("missing"), InputDataError, "'missing' does not exist"),
    (lambda w: Dataset.File.from_files("data/*.png"), InputDataError, "no file matches 'data/*.png'"),
    (lambda w: Dataset.File.from_files(["a", "b"]), ConfigError, "must be one local path"),
    (lambda w: Dataset.File.from_files(("datastore", "path/x")), ConfigError, "must be one local path"),
    (lambda w: Dataset.Tabular.from_delimited_files(str(w.csv), separator=";"), ConfigError,
     "supports only separator=','"),
    (lambda w: Dataset.Tabular.from_delimited_files(str(w.csv), header=False), ConfigError,
     "supports only separator=','"),
    (lambda w: Dataset.File.from_files(str(w.data)).as_named_input("bad-name"), ConfigError,
     "as_named_input name must be letters, digits and underscores"),
    (lambda w: PipelineData("1st"), ConfigError, "PipelineData name must be"),
    (lambda w: OutputFileDatasetConfig(destination=("store", "out")), ConfigError,
     "destination must be a local folder path"),
])
def test_dataset_shims_reject(ws: SimpleNamespace, make: Callable[[Any], Any], error: type, message: str) -> None:
    with pytest.raises(error) as info:
        make(ws)
    assert message in str(info.value)


# ============================================================ lowering: v1 settings -> JobSpec (contract 2.3, 12)
def _files(w: SimpleNamespace) -> Any:
    return Dataset.File.from_files(str(w.data)).as_named_input("images")


DF = pd.DataFrame({"store": [1, 1, 2], "x": [1.0, 2.0, 3.0]})

LOWERING: list[tuple[str, dict[str, Any], Any, dict[str, Any]]] = [
    ("defaults", {}, {}, {
        "api": "v1", "name": "score-step", "resources.instance_count": 1, "max_concurrency_per_instance": None,
        "retry_settings.max_retries": 2, "retry_settings.timeout": 60, "error_threshold": -1,
        "mini_batch_error_threshold": -1, "allowed_failed_percent": 100.0, "logging_level": "INFO",
        "task.code": "<tmp>/src", "task.entry_script": "score.py", "task.program_arguments": None,
        "task.append_row_to": "${{outputs.scores}}", "task.environment": None, "output_action": "append_row",
        "append_row_file_name": None, "mini_batch_size": None, "partition_keys": None, "is_deterministic": True,
        "environment_variables": {}, "compute": "cpu", "description": None,
        "input_data": "${{inputs.input_ds_0}}", "inputs.input_ds_0.type": "uri_folder",
        "bindings.input_ds_0": "<tmp>/data", "outputs.scores.type": "uri_folder", "output_bindings": {},
    }),
    ("node_count", dict(node_count=3), {}, {"resources.instance_count": 3}),
    ("process_count_per_node", dict(process_count_per_node=4), {}, {"max_concurrency_per_instance": 4}),
    ("run_invocation_timeout", dict(run_invocation_timeout=120), {}, {"retry_settings.timeout": 120}),
    ("run_max_try=1: no retry", dict(run_max_try=1), {}, {"retry_settings.max_retries": 0}),
    ("run_max_try=5: four retries", dict(run_max_try=5), {}, {"retry_settings.max_retries": 4}),
    ("run_max_try default: 3 attempts", {}, {}, {"effective.max_attempts": 3}),
    ("error_threshold", dict(error_threshold=10), {}, {"error_threshold": 10}),
    ("allowed_failed_count", dict(allowed_failed_count=5), {}, {"mini_batch_error_threshold": 5}),
    ("allowed_failed_percent", dict(allowed_failed_percent=12.5), {}, {"allowed_failed_percent": 12.5}),
    ("allowed_failed_percent int", dict(allowed_failed_percent=10), {}, {"allowed_failed_percent": 10.0}),
    ("append_row_file_name", dict(append_row_file_name="out.csv"), {}, {"append_row_file_name": "out.csv"}),
    ("output_action case", dict(output_action="Append_Row"), {}, {"output_action": "append_row"}),
    ("summary_only keeps the output, no append_row_to",
     dict(output_action="summary_only", append_row_file_name="ignored.txt"), {},
     {"task.append_row_to": None, "output_action": "summary_only", "append_row_file_name": None,
      "outputs.scores.type": "uri_folder"}),
    ("summary_only without output", dict(output_action="summary_only"), dict(output=None),
     {"task.append_row_to": None, "outputs": {}}),
    ("mini_batch_size string kept", dict(mini_batch_size="1MB"), {}, {"mini_batch_size": "1MB"}),
    ("mini_batch_size int", dict(mini_batch_size=5), {}, {"mini_batch_size": "5",
                                                         "effective.explicit_mini_batch_size": 5}),
    ("partition_keys", dict(partition_keys=["store"], output_action="summary_only"),
     dict(inputs=[DF], output=None), {"partition_keys": ("store",), "mini_batch_size": None}),
    ("environment_variables", dict(environment_variables={"A": 1}), {}, {"environment_variables": {"A": "1"}}),
    ("logging_level", dict(logging_level="warning"), {}, {"logging_level": "WARNING"}),
    ("description", dict(description="scores"), {}, {"description": "scores"}),
    ("compute object", dict(compute_target=FakeCompute("gpu-cluster", 4)), {}, {"compute": "gpu-cluster"}),
    ("environment object", dict(environment=FakeEnvironment("myenv")), {}, {"task.environment": "myenv"}),
    ("environment string", dict(environment="azureml:env:1"), {}, {"task.environment": "azureml:env:1"}),
    ("no source_directory: the script's folder", dict(source_directory=None, entry_script="src/score.py"), {},
     {"task.code": "<tmp>/src", "task.entry_script": "score.py"}),
    ("entry_script in a sub-folder", dict(source_directory=".", entry_script="src/score.py"), {},
     {"task.code": "<tmp>", "task.entry_script": "src/score.py"}),
    ("allow_reuse", {}, dict(allow_reuse=False), {"is_deterministic": False}),
    ("arguments", {}, dict(arguments=["--threshold", "0.5", "--name", "a b", "--n", 3, "--p", PipelineParameter("p", 7)]),
     {"task.program_arguments": "--threshold 0.5 --name 'a b' --n 3 --p 7"}),
    ("arguments reach effective settings", {}, dict(arguments=["--allowed_failed_count_hint", "1",
                                                             "--first_task_creation_timeout", "900"]),
     {"effective.first_task_creation_timeout": 900.0}),
    ("named file input", {}, lambda w: dict(inputs=[_files(w)]),
     {"input_data": "${{inputs.images}}", "inputs.images.type": "uri_folder", "inputs.images.mode": "direct",
      "bindings.images": "<tmp>/data"}),
    ("mounted file input", {}, lambda w: dict(inputs=[_files(w).as_mount()]), {"inputs.images.mode": "ro_mount"}),
    ("unnamed dataset", {}, lambda w: dict(inputs=[Dataset.File.from_files(str(w.data))]),
     {"input_data": "${{inputs.input_ds_0}}", "bindings.input_ds_0": "<tmp>/data"}),
    ("path input", {}, dict(inputs=["data"]), {"inputs.input_ds_0.type": "uri_folder",
                                               "bindings.input_ds_0": "<tmp>/data"}),
    ("DataFrame input", {}, dict(inputs=[DF]), {"inputs.input_ds_0.type": "mltable", "bindings.input_ds_0": DF}),
    ("tabular dataset", {}, lambda w: dict(inputs=[Dataset.Tabular.from_delimited_files("table.csv")
                                                   .as_named_input("rows")]),
     {"input_data": "${{inputs.rows}}", "inputs.rows.type": "mltable", "bindings.rows": "<tmp>/table.csv"}),
    ("prs_nb.Input", {}, dict(inputs=[Input(type="mltable", path="table.csv")]),
     {"inputs.input_ds_0.type": "mltable", "bindings.input_ds_0": Input(type="mltable", path="table.csv")}),
    ("output folder path", {}, dict(output="out"),
     {"outputs.output.type": "uri_folder", "output_bindings.output": "<tmp>/out",
      "task.append_row_to": "${{outputs.output}}"}),
    ("OutputFileDatasetConfig", {}, lambda w: dict(output=OutputFileDatasetConfig(name="inferences",
                                                                             destination="res")),
     {"output_bindings.inferences": "<tmp>/res", "task.append_row_to": "${{outputs.inferences}}"}),
    ("OutputFileDatasetConfig unnamed", {}, dict(output=OutputFileDatasetConfig()),
     {"outputs.output.type": "uri_folder", "output_bindings": {}}),
    ("prs_nb.Output file", {}, dict(output=Output(type="uri_file", path="out/res.txt")),
     {"outputs.output.type": "uri_file", "output_bindings.output": "<tmp>/out/res.txt"}),
    ("side input referenced in arguments", {}, lambda w: (lambda lab: dict(side_inputs=[lab],
                                                                             arguments=["--labels", lab]))(
        Dataset.File.from_files("labels.txt").as_named_input("labels")),
     {"inputs.labels.type": "uri_file", "bindings.labels": "<tmp>/labels.txt",
      "task.program_arguments": "--labels ${{inputs.labels}}"}),
    ("side input path", {}, dict(side_inputs=["labels.txt", "data"]),
     {"inputs.side_input_0.type": "uri_file", "inputs.side_input_1.type": "uri_folder",
      "bindings.side_input_1": "<tmp>/data"}),
    ("dataset only in arguments becomes a side input", {},
     lambda w: dict(arguments=["--labels", Dataset.File.from_files("labels.txt")]),
     {"bindings.side_input_0": "<tmp>/labels.txt", "task.program_arguments": "--labels ${{inputs.side_input_0}}"}),
    ("main input object in arguments", {}, lambda w: (lambda ds: dict(inputs=[ds], arguments=["--in", ds]))(
        _files(w)), {"task.program_arguments": "--in ${{inputs.images}}"}),
    ("output object in arguments", {}, lambda w: (lambda o: dict(output=o, arguments=["--out", o]))(
        PipelineData("scores")), {"task.program_arguments": "--out ${{outputs.scores}}"}),
    ("plain strings are not replaced", {}, dict(inputs=["data"], arguments=["--in", "data"]),
     {"task.program_arguments": "--in data"}),
    ("rank mini-batches without inputs", dict(output_action="summary_only"),
     dict(inputs=[], output=None, arguments=["--rank_mini_batch_count", "4"]),
     {"input_data": None, "inputs": {}, "effective.rank_mini_batch_count": 4}),
]


@pytest.mark.parametrize("config_overrides, step_overrides, expected",
                         [row[1:] for row in LOWERING], ids=[row[0] for row in LOWERING])
def test_lowering(ws: SimpleNamespace, config_overrides: dict[str, Any], step_overrides: Any,
                  expected: dict[str, Any]) -> None:
    step = make_step(ws, make_config(ws, **config_overrides), **resolve(step_overrides, ws))
    spec = step.to_spec()
    effective = spec.effective()
    for dotted, want in expected.items():
        got = get_path(effective, dotted.split(".", 1)[1]) if dotted.startswith("effective.") else get_path(
            spec, dotted)
        want = resolve(want, ws) if not isinstance(want, pd.DataFrame) else want
        if isinstance(want, pd.DataFrame):
            assert got is want, dotted
        else:
            assert got == want, dotted


def test_to_spec_overrides(ws: SimpleNamespace) -> None:
    spec = make_step(ws).to_spec(backend="inline", runs_root=str(ws.root / "runs"))
    assert (spec.backend, spec.runs_root, spec.api) == ("inline", str(ws.root / "runs"), "v1")


def test_to_spec_reflects_later_changes(ws: SimpleNamespace) -> None:
    step = make_step(ws)
    step.allow_reuse = False
    assert step.to_spec().is_deterministic is False


def test_program_arguments_survive_paths_with_spaces(ws: SimpleNamespace) -> None:
    # The engine substitutes an already shell-quoted path for ${{inputs.x}}; the reference must stay bare.
    from prs_nb.engine.run import resolve_program_arguments

    spaced = ws.root / "my labels.txt"
    spaced.write_text("x")
    lab = Dataset.File.from_files(str(spaced)).as_named_input("labels")
    spec = make_step(ws, side_inputs=[lab], arguments=["--labels", lab, "--note", "a b"]).to_spec()
    argv = resolve_program_arguments(spec, str(ws.root), {})
    assert argv == ["--labels", str(spaced), "--note", "a b"]


# ============================================================ running locally (engine and data layer)
def test_run_end_to_end(ws: SimpleNamespace) -> None:
    labels = Dataset.File.from_files(str(ws.labels)).as_named_input("labels")
    config = make_config(ws, mini_batch_size="2", process_count_per_node=2)
    step = make_step(ws, config, inputs=[Dataset.File.from_files(str(ws.data)).as_named_input("images")],
                     side_inputs=[labels], arguments=["--labels", labels])
    result = step.run(runs_root=str(ws.root / "runs"))
    assert result.status == "Completed", result.reason
    lines = Path(result.output_path).read_text().split()
    assert sorted(lines) == [f"f{i}.txt:cat" for i in range(5)]
    assert os.path.basename(result.output_path) == "parallel_run_step.txt"
    assert Path(result.output_path).parent.name == "scores"


@pytest.mark.parametrize("run_max_try", [1, 2])
def test_run_max_try_counts_total_attempts(ws: SimpleNamespace, run_max_try: int) -> None:
    config = make_config(ws, entry_script="fail.py", mini_batch_size="5", process_count_per_node=1,
                         run_max_try=run_max_try, output_action="summary_only")
    result = make_step(ws, config, output=None).run(runs_root=str(ws.root / "runs"))
    assert list(result.batches["attempts"]) == [run_max_try]
    assert len(result.errors) == run_max_try


def test_run_dataframe_with_partition_keys(ws: SimpleNamespace) -> None:
    (ws.src / "part.py").write_text("def run(mini_batch, ctx):\n"
                                    "    return [f\"{ctx.partition_key_value['store']}:{len(mini_batch)}\"]\n")
    config = make_config(ws, entry_script="part.py", partition_keys=["store"], process_count_per_node=1)
    result = make_step(ws, config, inputs=[DF], output="out").run(runs_root=str(ws.root / "runs"), backend="inline")
    assert result.status == "Completed", result.reason
    assert sorted(Path(result.output_path).read_text().split()) == ["1:2", "2:1"]
    assert result.output_path == str(ws.root / "out" / "parallel_run_step.txt")


def test_run_rank_mini_batches_without_inputs(ws: SimpleNamespace) -> None:
    (ws.src / "rank.py").write_text("def run(mini_batch):\n    return []\n")
    config = make_config(ws, entry_script="rank.py", output_action="summary_only", process_count_per_node=1)
    step = make_step(ws, config, inputs=[], output=None, arguments=["--rank_mini_batch_count", "3"])
    result = step.run(runs_root=str(ws.root / "runs"), backend="inline")
    assert result.status == "Completed", result.reason
    assert result.counts["total"] == 3
