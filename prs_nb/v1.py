"""The Azure ML SDK v1 surface: ``ParallelRunConfig`` and ``ParallelRunStep`` (contract section 2).

A v1 notebook runs locally with only its imports changed::

    from prs_nb.v1 import Dataset, ParallelRunConfig, ParallelRunStep, PipelineData

    config = ParallelRunConfig(environment=env, entry_script="score.py", source_directory="scripts",
                               error_threshold=10, output_action="append_row", compute_target="cpu",
                               node_count=2, mini_batch_size="5")
    images = Dataset.File.from_files("data/images").as_named_input("images")
    step = ParallelRunStep(name="score", parallel_run_config=config, inputs=[images],
                           output=PipelineData("scores"), arguments=["--threshold", "0.5"])
    result = step.run()

Both classes repeat v1's client-side checks (contract 2.1 and 2.2) and raise
:class:`~prs_nb.errors.ConfigError` (a ``ValueError``, as v1 raises) with prs_nb's messages.
:meth:`ParallelRunStep.to_spec` lowers the step to the one :class:`~prs_nb.spec.JobSpec`
(``api="v1"``) following contract 2.3 and the binding decisions of section 12::

    entry_script + source_directory  -> task.entry_script + task.code
    node_count                       -> resources.instance_count
    process_count_per_node           -> max_concurrency_per_instance
    run_invocation_timeout           -> retry_settings.timeout
    run_max_try (TOTAL attempts)     -> retry_settings.max_retries = run_max_try - 1
    allowed_failed_count             -> mini_batch_error_threshold
    output_action="append_row"       -> task.append_row_to = ${{outputs.<output>}}
    inputs[0]                        -> inputs.<name> + input_data = ${{inputs.<name>}}
    side_inputs                      -> further inputs, referenced from arguments
    arguments (list)                 -> task.program_arguments (one shell-quoted string)
    allow_reuse                      -> is_deterministic

Local stand-ins for v1's data objects (``Dataset.File`` / ``Dataset.Tabular``, named consumption
configs, ``PipelineData``, ``OutputFileDatasetConfig``, ``PipelineParameter``) only record local
paths; plain paths, :class:`~prs_nb.spec.Input` objects and pandas DataFrames are accepted too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar, cast

import yaml

from prs_nb.errors import ConfigError, InputDataError
from prs_nb.spec import (
    LOGGING_LEVELS,
    MAX_TIMEOUT_S,
    Input,
    JobSpec,
    Output,
    Resources,
    RetrySettings,
    RunFunction,
    check_environment_variables,
    check_file_name,
    parse_mini_batch_size,
)

if TYPE_CHECKING:
    from prs_nb.results import RunResult

__all__ = [
    "Dataset",
    "DatasetConsumptionConfig",
    "FileDataset",
    "OutputFileDatasetConfig",
    "ParallelRunConfig",
    "ParallelRunStep",
    "PipelineData",
    "PipelineParameter",
    "RESERVED_ARGUMENTS",
    "TabularDataset",
]

#: Argument names ParallelRunStep generates itself; v1 rejects them in ``arguments`` (contract 2.2).
RESERVED_ARGUMENTS = (
    "mini_batch_size", "error_threshold", "allowed_failed_count", "allowed_failed_percent", "output",
    "output_action", "logging_level", "process_count_per_node", "run_invocation_timeout", "run_max_try",
    "append_row_file_name", "partition_keys",
)
OUTPUT_ACTIONS = ("append_row", "summary_only")
FILE = "file"
TABULAR = "tabular"
DEFAULT_OUTPUT_NAME = "output"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GLOB_RE = re.compile(r"[*?\[]")
_REF_RE = re.compile(r"^\$\{\{\s*(inputs|outputs)\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}$")
# v1 consumption modes -> the v2 input modes recorded on the port (locally every mode reads in place).
_MODES = {"mount": "ro_mount", "download": "download", "direct": "direct"}


# ---------------------------------------------------------------------------------------------- helpers
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_dataframe(value: Any) -> bool:
    # pandas is only looked up, never imported: if it is not loaded, value cannot be a DataFrame.
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.DataFrame)


def _is_pathlike(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"{what} must be letters, digits and underscores, starting with a letter or underscore, so that "
            f"'${{{{inputs.<name>}}}}' can refer to it (got {name!r})"
        )
    return name


def _data_path(path: Any, what: str, *, validate: bool = True) -> str:
    """Absolute form of a local data path or glob; with ``validate`` it must exist (or the glob match)."""
    if isinstance(path, (list, tuple)) and len(path) == 1:
        path = path[0]
    if not _is_pathlike(path):
        raise ConfigError(
            f"{what} must be one local path, folder or glob such as 'data/images' or 'data/*.csv' "
            f"(got {type(path).__name__} {path!r}); datastore paths are not available locally"
        )
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{what} must be a non-empty path (got {path!r})")
    full = os.path.abspath(os.path.expanduser(text))
    if not validate:
        return full
    if _GLOB_RE.search(full):
        import glob

        if not glob.glob(full, recursive=True):
            raise InputDataError(f"{what}: no file matches {text!r} (looked for {full}); check the pattern")
    elif not os.path.exists(full):
        raise InputDataError(f"{what}: {text!r} does not exist (looked for {full}); check the path and cwd")
    return full


# ------------------------------------------------------------------------------------ v1 data stand-ins
@dataclass(frozen=True)
class PipelineParameter:
    """Stand-in for ``azureml.pipeline.core.PipelineParameter``: locally its ``default_value`` is used.

    Accepted where v1 accepts one: ``mini_batch_size``, ``node_count``, ``process_count_per_node``,
    ``logging_level``, ``run_invocation_timeout``, ``run_max_try``, ``partition_keys`` (default
    value a JSON list string, as v1 requires) and inside ``arguments``.
    """

    name: str
    default_value: Any


def _unwrap(value: Any) -> Any:
    return value.default_value if isinstance(value, PipelineParameter) else value


class _DatasetBase:
    """A local dataset: one path (file, folder or glob). ``kind`` is ``file`` or ``tabular``."""

    kind: ClassVar[str] = FILE

    def __init__(self, path: str, fmt: str | None = None) -> None:
        self.path = path
        self.format = fmt

    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        """This dataset as a step input called ``name`` (the input's name inside the job)."""
        return DatasetConsumptionConfig(_check_name(name, "as_named_input name"), self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class FileDataset(_DatasetBase):
    """Stand-in for ``azureml.data.FileDataset``: a folder, file or glob of files on this machine.

    Split into mini-batches of ``mini_batch_size`` files (default 10); the entry script's ``run``
    receives a list of absolute file paths.
    """

    kind: ClassVar[str] = FILE

    @classmethod
    def from_files(cls, path: Any, validate: bool = True) -> FileDataset:
        """``Dataset.File.from_files(path)``: ``path`` is one local path or glob (a one-element list is
        accepted). ``validate`` (default True) checks that it exists; it is checked again at run time."""
        return cls(_data_path(path, "Dataset.File.from_files path", validate=validate))

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """An unnamed consumption config (mode mount; locally files are read in place)."""
        return DatasetConsumptionConfig(None, self, "mount")

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """An unnamed consumption config (mode download; locally files are read in place)."""
        return DatasetConsumptionConfig(None, self, "download")


class TabularDataset(_DatasetBase):
    """Stand-in for ``azureml.data.TabularDataset``: delimited or Parquet files on this machine.

    Split into mini-batches of about ``mini_batch_size`` bytes (default 1 MB); ``run`` receives a
    pandas DataFrame.
    """

    kind: ClassVar[str] = TABULAR

    @classmethod
    def from_delimited_files(cls, path: Any, validate: bool = True, separator: str = ",",
                             header: Any = True) -> TabularDataset:
        """``Dataset.Tabular.from_delimited_files(path)``: CSV files with a header row.

        ``separator`` (default ``,``) and ``header`` (default True) are accepted only at their
        defaults: the local reader infers the format from the files, and other values would be
        silently misread. ``validate`` (default True) checks that the path exists.
        """
        if separator != "," or header not in (True, "ALL_FILES_HAVE_SAME_HEADERS"):
            raise ConfigError(
                f"from_delimited_files supports only separator=',' with a header row locally (got "
                f"separator={separator!r}, header={header!r}); convert the files, or describe them in an "
                "MLTable file and pass Input(type='mltable', path=<folder>)"
            )
        return cls(_data_path(path, "Dataset.Tabular.from_delimited_files path", validate=validate), "delimited")

    @classmethod
    def from_parquet_files(cls, path: Any, validate: bool = True) -> TabularDataset:
        """``Dataset.Tabular.from_parquet_files(path)``; ``validate`` (default True) checks the path."""
        return cls(_data_path(path, "Dataset.Tabular.from_parquet_files path", validate=validate), "parquet")


#: ``Dataset.File.from_files(...)`` / ``Dataset.Tabular.from_delimited_files(...)``, as in v1.
Dataset = SimpleNamespace(File=FileDataset, Tabular=TabularDataset)


class DatasetConsumptionConfig:
    """Stand-in for v1's consumption config: a dataset, the input ``name`` and the ``mode``.

    ``as_mount()``, ``as_download()`` and ``as_direct()`` record the mode and return ``self``
    (locally every mode reads the files in place). Default mode: ``direct``.
    """

    def __init__(self, name: str | None, dataset: _DatasetBase, mode: str = "direct") -> None:
        self.name = name
        self.dataset = dataset
        self.mode = mode

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        self.mode = "mount"
        return self

    def as_download(self, path_on_compute: str | None = None, overwrite: bool = False) -> DatasetConsumptionConfig:
        self.mode = "download"
        return self

    def as_direct(self) -> DatasetConsumptionConfig:
        self.mode = "direct"
        return self

    def __repr__(self) -> str:
        return f"DatasetConsumptionConfig(name={self.name!r}, dataset={self.dataset!r}, mode={self.mode!r})"


class _OutputBase:
    name: str | None
    destination: str | None


class PipelineData(_OutputBase):
    """Stand-in for ``azureml.pipeline.core.PipelineData``: an output folder named ``name``.

    Locally it is ``<run dir>/outputs/<name>``. ``datastore`` and the other v1 parameters are
    recorded and ignored.
    """

    def __init__(self, name: str, datastore: Any = None, output_name: str | None = None,
                 output_mode: str = "mount", output_path_on_compute: str | None = None,
                 output_overwrite: bool | None = None, data_type: str | None = None,
                 is_directory: bool | None = None, pipeline_output_name: str | None = None,
                 training_output: Any = None) -> None:
        self.name = _check_name(name, "PipelineData name")
        self.datastore = datastore
        self.output_name = output_name
        self.output_mode = output_mode
        self.destination = None

    def __repr__(self) -> str:
        return f"PipelineData({self.name!r})"


class OutputFileDatasetConfig(_OutputBase):
    """Stand-in for ``azureml.data.OutputFileDatasetConfig``.

    ``name`` (default: the output is called ``output``) names the output; ``destination`` is a
    local folder (default: ``<run dir>/outputs/<name>``). Datastore tuples are not available locally.
    """

    def __init__(self, name: str | None = None, destination: Any = None, source: str | None = None,
                 partition_format: str | None = None) -> None:
        self.name = None if name is None else _check_name(name, "OutputFileDatasetConfig name")
        if destination is not None and not _is_pathlike(destination):
            raise ConfigError(
                f"OutputFileDatasetConfig destination must be a local folder path locally (got "
                f"{type(destination).__name__} {destination!r}); datastore tuples are not available"
            )
        self.destination = None if destination is None else os.path.abspath(os.fspath(destination))

    def as_mount(self) -> OutputFileDatasetConfig:
        return self

    def as_upload(self, overwrite: bool = False, source_globs: Any = None) -> OutputFileDatasetConfig:
        return self

    def __repr__(self) -> str:
        return f"OutputFileDatasetConfig(name={self.name!r}, destination={self.destination!r})"


# ------------------------------------------------------------------------------------- ParallelRunConfig
class ParallelRunConfig:
    """``azureml.pipeline.steps.ParallelRunConfig`` with v1's parameter order, defaults and checks.

    Required: ``environment`` (None, a name, or any object - recorded by its ``.name``),
    ``entry_script`` (a file, relative to ``source_directory`` or else to the current directory),
    ``error_threshold`` (int >= -1; -1 ignores failed items), ``output_action`` (``append_row`` or
    ``summary_only``, any letter case), ``compute_target`` (a name or object; recorded), ``node_count``
    (int >= 1; local "nodes").

    Optional, with the default applied: ``process_count_per_node`` None (= number of CPU cores),
    ``mini_batch_size`` None (= 10 files / 1 MB at run time; int or '10', '512KB', '1GB'; stored as
    int like v1), ``source_directory`` None, ``description`` None, ``logging_level`` 'INFO',
    ``run_invocation_timeout`` 60 (seconds per ``run()`` call), ``run_max_try`` 3 (TOTAL attempts of a
    mini-batch), ``append_row_file_name`` None (= parallel_run_step.txt at run time),
    ``allowed_failed_count`` None (= no limit on failed mini-batches), ``allowed_failed_percent`` None
    (= 100, no limit), ``partition_keys`` None (list of column names; not with ``mini_batch_size``),
    ``environment_variables`` None (= {}).

    Raises :class:`~prs_nb.errors.ConfigError` (a ValueError) for any invalid value.
    """

    def __init__(
        self,
        environment: Any,
        entry_script: str,
        error_threshold: int,
        output_action: str,
        compute_target: Any,
        node_count: int | PipelineParameter,
        process_count_per_node: int | PipelineParameter | None = None,
        mini_batch_size: int | str | PipelineParameter | None = None,
        source_directory: str | os.PathLike[str] | None = None,
        description: str | None = None,
        logging_level: str | PipelineParameter | None = None,
        run_invocation_timeout: int | PipelineParameter | None = None,
        run_max_try: int | PipelineParameter | None = None,
        append_row_file_name: str | None = None,
        allowed_failed_count: int | None = None,
        allowed_failed_percent: float | None = None,
        partition_keys: list[str] | PipelineParameter | None = None,
        environment_variables: Mapping[str, str] | None = None,
    ) -> None:
        self.environment = environment
        self.compute_target = compute_target
        self.description = description
        # v1 turns the string form into an int of files/bytes; the original text is kept for the spec
        # and the YAML so that '1MB' stays readable.
        self._mini_batch_size_text: str | None = None
        self.mini_batch_size = self._check_mini_batch_size(_unwrap(mini_batch_size))
        self.error_threshold = self._check_threshold(error_threshold, "error_threshold", required=True)
        self.allowed_failed_count = self._check_threshold(allowed_failed_count, "allowed_failed_count")
        self.allowed_failed_percent = self._check_percent(allowed_failed_percent)
        self.output_action = self._check_output_action(output_action)
        self.node_count = self._check_node_count(_unwrap(node_count), compute_target)
        self.process_count_per_node = self._check_process_count(_unwrap(process_count_per_node))
        self.logging_level = self._check_logging_level(_unwrap(logging_level))
        self.run_invocation_timeout = self._check_timeout(_unwrap(run_invocation_timeout))
        self.run_max_try = self._check_max_try(_unwrap(run_max_try))
        self.append_row_file_name = self._check_append_row_file_name(append_row_file_name)
        self.partition_keys = self._check_partition_keys(_unwrap(partition_keys))
        self.environment_variables = self._check_environment_variables(environment_variables)
        if self.partition_keys is not None and self.mini_batch_size is not None:
            # v1 raises here; v2 would let partition_keys win (contract 5.4, 12).
            raise ConfigError(
                f"ParallelRunConfig takes either mini_batch_size ({self._mini_batch_size_text!r}) or "
                f"partition_keys ({self.partition_keys!r}), not both: with partition_keys each partition is "
                "one mini-batch; remove mini_batch_size"
            )
        if description is not None and not isinstance(description, str):
            raise ConfigError(f"description must be a string or None (got {type(description).__name__})")
        self.source_directory, self._code_dir = self._check_source_directory(source_directory)
        self.entry_script, self._entry_rel = self._check_entry_script(entry_script)

    # -------------------------------------------------------------- validation (contract 2.1)
    def _check_mini_batch_size(self, value: Any) -> int | None:
        if value is None:
            return None
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            raise ConfigError(
                f"mini_batch_size must be an int or a string like '10', '512KB' or '1GB' "
                f"(got {type(value).__name__} {value!r})"
            )
        # parse_mini_batch_size applies Azure's regex and also rejects 0 (contract 12).
        size = parse_mini_batch_size(value)
        self._mini_batch_size_text = str(value)
        return size

    @staticmethod
    def _check_threshold(value: Any, name: str, *, required: bool = False) -> int | None:
        if value is None and not required:
            return None
        if not _is_int(value) or value < -1:
            raise ConfigError(
                f"{name} must be a whole number >= -1 (got {value!r}): it is the number of failed "
                f"{'items' if name == 'error_threshold' else 'mini-batches'} tolerated, and -1 ignores all failures"
            )
        return int(value)

    @staticmethod
    def _check_percent(value: Any) -> float | None:
        if value is None:
            return None
        if not _is_number(value) or not 0 <= value <= 100:
            raise ConfigError(
                f"allowed_failed_percent must be a number from 0 to 100 (got {value!r}); 100 ignores all "
                "failed mini-batches"
            )
        return float(value)

    @staticmethod
    def _check_output_action(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in OUTPUT_ACTIONS:
            raise ConfigError(
                f"output_action must be 'append_row' (collect run() results into one file) or 'summary_only' "
                f"(the script writes its own output) (got {value!r})"
            )
        return value

    @staticmethod
    def _check_node_count(value: Any, compute_target: Any) -> int:
        if not _is_int(value) or value < 1:
            raise ConfigError(
                f"node_count must be a whole number >= 1 (got {value!r}); locally each node is a group of "
                "process_count_per_node worker processes"
            )
        # v1 checks an AmlCompute object's scale settings; any object shaped like one is checked too.
        max_nodes = getattr(getattr(compute_target, "scale_settings", None), "maximum_node_count", None)
        if _is_int(max_nodes) and value > max_nodes:
            raise ConfigError(
                f"node_count {value} is more than compute_target's maximum_node_count {max_nodes}; "
                f"use at most {max_nodes} nodes"
            )
        return int(value)

    @staticmethod
    def _check_process_count(value: Any) -> int | None:
        if value is None:
            return None
        if not _is_int(value) or value < 1:
            raise ConfigError(
                f"process_count_per_node must be a whole number >= 1 or None for one per CPU core (got {value!r})"
            )
        return int(value)

    @staticmethod
    def _check_logging_level(value: Any) -> str:
        if value is None:
            return "INFO"
        # v1 does not check this client-side, but the job would fail later; fail here instead.
        if not isinstance(value, str) or value.upper() not in LOGGING_LEVELS:
            raise ConfigError(f"logging_level must be one of {', '.join(LOGGING_LEVELS)} (got {value!r})")
        return value.upper()

    @staticmethod
    def _check_timeout(value: Any) -> int | float:
        if value is None:
            return 60
        if not _is_number(value) or not 0 < value <= MAX_TIMEOUT_S:
            raise ConfigError(
                f"run_invocation_timeout must be a number of seconds greater than 0 and at most {MAX_TIMEOUT_S} "
                f"(3 days) (got {value!r}); it limits each run() call"
            )
        return cast("int | float", value)

    @staticmethod
    def _check_max_try(value: Any) -> int:
        if value is None:
            return 3
        if not _is_int(value) or value < 1:
            raise ConfigError(
                f"run_max_try must be a whole number >= 1 (got {value!r}): it is the total number of attempts "
                "of a mini-batch, so 1 means no retry"
            )
        return int(value)

    def _check_append_row_file_name(self, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"append_row_file_name must be a file name string (got {type(value).__name__})")
        # v1 only checks the name when it is used, i.e. with append_row.
        if self.output_action.lower() == "append_row":
            check_file_name(value, "append_row_file_name")
        return value

    @staticmethod
    def _check_partition_keys(value: Any) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            # A PipelineParameter default must be a JSON list string (contract 2.1).
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(
                    f"partition_keys must be a list of column names such as ['store'] (got the string {value!r})"
                ) from None
        if (not isinstance(value, (list, tuple)) or not value
                or not all(isinstance(k, str) and k for k in value)):
            raise ConfigError(f"partition_keys must be a non-empty list of column names such as ['store'] "
                              f"(got {value!r})")
        return list(value)

    @staticmethod
    def _check_environment_variables(value: Any) -> dict[str, str]:
        return check_environment_variables(value)

    @staticmethod
    def _check_source_directory(value: Any) -> tuple[str | None, str | None]:
        if value is None:
            return None, None
        if not _is_pathlike(value):
            raise ConfigError(f"source_directory must be a folder path (got {type(value).__name__} {value!r})")
        text = os.fspath(value).strip()
        if not text:
            return None, None
        full = os.path.abspath(text)
        if not os.path.exists(full):
            raise ConfigError(
                f"source_directory {text!r} does not exist (looked for {full}); pass the folder that holds the "
                "entry script"
            )
        if not os.path.isdir(full):
            raise ConfigError(f"source_directory {text!r} is not a directory ({full}); pass the folder that "
                              "holds the entry script")
        return text, full

    def _check_entry_script(self, value: Any) -> tuple[str, str]:
        if not _is_pathlike(value) or not os.fspath(value).strip():
            raise ConfigError(f"entry_script must be the file name of the entry script, e.g. 'score.py' "
                              f"(got {value!r})")
        script = os.fspath(value).strip()
        base = self._code_dir or os.getcwd()
        full = os.path.abspath(os.path.join(base, script))
        where = "source_directory" if self._code_dir else "the current directory"
        if not os.path.exists(full):
            raise ConfigError(
                f"entry_script {script!r} does not exist in {where} (looked for {full}); entry_script is "
                "relative to source_directory"
            )
        if not os.path.isfile(full):
            raise ConfigError(f"entry_script {script!r} is not a file ({full})")
        if self._code_dir is None:
            # Without source_directory the script's own folder is the code folder: its siblings import.
            self._code_dir = os.path.dirname(full)
            return script, os.path.basename(full)
        rel = os.path.relpath(full, self._code_dir)
        if rel.startswith(os.pardir):
            raise ConfigError(f"entry_script {script!r} must be inside source_directory {self.source_directory!r}")
        return script, rel.replace(os.sep, "/")

    # -------------------------------------------------------------- derived
    @property
    def environment_name(self) -> str | None:
        """The environment as recorded in the job: its name, the string given, or None."""
        env = self.environment
        if env is None or isinstance(env, str):
            return env
        name = getattr(env, "name", None)
        return name if isinstance(name, str) else None

    @property
    def compute_target_name(self) -> str | None:
        ct = self.compute_target
        if ct is None or isinstance(ct, str):
            return ct
        name = getattr(ct, "name", None)
        return name if isinstance(name, str) else None

    @property
    def is_append_row(self) -> bool:
        return self.output_action.lower() == "append_row"

    def __repr__(self) -> str:
        return (f"ParallelRunConfig(entry_script={self.entry_script!r}, source_directory={self.source_directory!r}, "
                f"output_action={self.output_action!r}, node_count={self.node_count}, "
                f"process_count_per_node={self.process_count_per_node}, mini_batch_size={self.mini_batch_size}, "
                f"error_threshold={self.error_threshold})")

    # -------------------------------------------------------------- YAML
    def to_dict(self) -> dict[str, Any]:
        """The keys v1 writes under ``parallel_run_config`` (environment recorded by name)."""
        env_name = self.environment_name
        return {
            "mini_batch_size": self._mini_batch_size_text,
            "error_threshold": self.error_threshold,
            "output_action": self.output_action,
            "logging_level": self.logging_level,
            "compute_target_name": self.compute_target_name,
            "node_count": self.node_count,
            "process_count_per_node": self.process_count_per_node,
            "entry_script": self.entry_script,
            "source_directory": self.source_directory,
            "description": self.description,
            "run_invocation_timeout": self.run_invocation_timeout,
            "run_max_try": self.run_max_try,
            "append_row_file_name": self.append_row_file_name,
            "allowed_failed_count": self.allowed_failed_count,
            "allowed_failed_percent": self.allowed_failed_percent,
            "partition_keys": self.partition_keys,
            "environment_variables": dict(self.environment_variables) or None,
            "environment": None if env_name is None else {"name": env_name},
        }

    def save_to_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write this configuration to ``path`` under the top-level key ``parallel_run_config``."""
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({"parallel_run_config": self.to_dict()}, f, sort_keys=False)

    @classmethod
    def load_yaml(cls, workspace: Any, path: str | os.PathLike[str]) -> ParallelRunConfig:
        """Read a configuration written by :meth:`save_to_yaml` (or by v1).

        ``workspace`` is ignored locally and may be None. The environment becomes its name and the
        compute target its name; keys this version does not know are ignored, as v1 does.
        """
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)  # safe: a !!python/... tag is an error, never code
        except OSError as exc:
            raise ConfigError(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from exc
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{os.fspath(path)} is not a valid ParallelRunConfig YAML file (YAML read with the "
                              f"safe loader, so Python tags are refused): {exc}") from exc
        if not isinstance(doc, Mapping) or not isinstance(doc.get("parallel_run_config"), Mapping):
            raise ConfigError(f"{os.fspath(path)}: expected a top-level 'parallel_run_config:' mapping "
                              f"(as written by save_to_yaml)")
        config = doc["parallel_run_config"]
        env = config.get("environment")
        if isinstance(env, Mapping):
            env = env.get("name")
        if env is None:
            env = config.get("environment_name")
        mbs = config.get("mini_batch_size")
        return cls(
            environment=env,
            entry_script=config.get("entry_script"),
            error_threshold=config.get("error_threshold"),
            output_action=config.get("output_action"),
            compute_target=config.get("compute_target_name"),
            node_count=config.get("node_count"),
            process_count_per_node=config.get("process_count_per_node"),
            # v1 reads the size back as a string, whatever YAML type it was written as.
            mini_batch_size=None if mbs is None else str(mbs),
            source_directory=config.get("source_directory"),
            description=config.get("description"),
            logging_level=config.get("logging_level"),
            run_invocation_timeout=config.get("run_invocation_timeout"),
            run_max_try=config.get("run_max_try"),
            append_row_file_name=config.get("append_row_file_name"),
            allowed_failed_count=config.get("allowed_failed_count"),
            allowed_failed_percent=config.get("allowed_failed_percent"),
            partition_keys=config.get("partition_keys"),
            environment_variables=config.get("environment_variables"),
        )


# --------------------------------------------------------------------------------------- ParallelRunStep
@dataclass(frozen=True)
class _LoweredInput:
    name: str
    kind: str  # FILE | TABULAR
    port: Input
    binding: Any


def _rank_mini_batch_count(arguments: Sequence[Any]) -> int:
    """``--rank_mini_batch_count N`` / ``=N`` in the arguments, as v1 reads it (negative -> 0)."""
    tokens = [str(_unwrap(a)) for a in arguments]
    count = 0
    for i, tok in enumerate(tokens):
        name, eq, value = tok.partition("=")
        if name != "--rank_mini_batch_count":
            continue
        if not eq:
            if i + 1 >= len(tokens):
                raise ConfigError("--rank_mini_batch_count in arguments needs a value, e.g. "
                                  "['--rank_mini_batch_count', '4']")
            value = tokens[i + 1]
        try:
            count = int(value)
        except ValueError:
            raise ConfigError(f"--rank_mini_batch_count in arguments must be a whole number (got {value!r})") from None
    return max(count, 0)


def _join_arguments(tokens: Sequence[str]) -> str:
    """One command-line string; ``${{...}}`` references stay unquoted because the engine substitutes
    an already shell-quoted path for them (quoting them again would split paths with spaces)."""
    return " ".join(tok if _REF_RE.match(tok) else shlex.quote(tok) for tok in tokens)


class ParallelRunStep:
    """``azureml.pipeline.steps.ParallelRunStep``: a parallel job built from a :class:`ParallelRunConfig`.

    ``name``: the job name. ``inputs``: a list of inputs that are split into mini-batches, all of
    one kind - file inputs (a folder path or ``os.PathLike``, ``Dataset.File.from_files(...)``,
    ``Input(type='uri_folder', path=...)``) or tabular inputs (a pandas DataFrame,
    ``Dataset.Tabular...``, ``Input(type='mltable', path=...)``); locally only one. It may be
    empty (or None) only with ``--rank_mini_batch_count N`` (N > 0) in ``arguments``.
    ``output`` (default None; required unless output_action is summary_only): a folder path,
    ``PipelineData`` / ``OutputFileDatasetConfig``, or ``Output``. ``side_inputs`` (default None):
    further inputs, never split, passed to the script by naming them in ``arguments``.
    ``arguments`` (default None): a list for the entry script's ``sys.argv``, keyword style (the
    first item starts with ``-``); reserved names are rejected. ``allow_reuse`` (default True):
    reuse an identical previous run.

    Raises :class:`~prs_nb.errors.ConfigError` (a ValueError) for any invalid value.
    """

    def __init__(
        self,
        name: str,
        parallel_run_config: ParallelRunConfig,
        inputs: Sequence[Any] | None,
        output: Any = None,
        side_inputs: Sequence[Any] | None = None,
        arguments: Sequence[Any] | None = None,
        allow_reuse: bool = True,
    ) -> None:
        self.name = name
        self.parallel_run_config = parallel_run_config
        self.inputs = inputs
        self.output = output
        self.side_inputs = side_inputs
        self.arguments = arguments
        self.allow_reuse = allow_reuse
        self._validate()
        # Lowering once here surfaces every remaining error at construction, as v1 does.
        self.to_spec()

    # -------------------------------------------------------------- validation (contract 2.2)
    def _validate(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"name must be a non-empty string such as 'score-images' (got {self.name!r})")
        if not isinstance(self.parallel_run_config, ParallelRunConfig):
            raise ConfigError(
                "parallel_run_config must be a prs_nb.v1.ParallelRunConfig "
                f"(got {type(self.parallel_run_config).__name__})"
            )
        if not isinstance(self.allow_reuse, bool):
            raise ConfigError(f"allow_reuse must be True or False (got {self.allow_reuse!r})")
        self._validate_arguments()
        self._validate_inputs()
        if self.output is None and self.parallel_run_config.is_append_row:
            raise ConfigError(
                "output is required with output_action='append_row': pass output=PipelineData('results') or a "
                "folder path, or use output_action='summary_only'"
            )
        if self.side_inputs is not None and not isinstance(self.side_inputs, (list, tuple)):
            raise ConfigError(f"side_inputs must be a list (got {type(self.side_inputs).__name__})")

    def _validate_arguments(self) -> None:
        args = self.arguments
        if args is None:
            return
        if not isinstance(args, (list, tuple)):
            raise ConfigError(
                f"arguments must be a list such as ['--threshold', '0.5'] (got {type(args).__name__} {args!r})"
            )
        if not args:
            return
        first = args[0]
        if not isinstance(first, str) or not first.startswith("-"):
            raise ConfigError(
                f"arguments must start with an option name such as '--threshold' (got {first!r} first): they are "
                "merged with ParallelRunStep's own arguments, so only keyword arguments are allowed"
            )
        for item in args:
            if isinstance(item, str) and item.startswith("--"):
                name = item[2:].split("=", 1)[0]
                if name in RESERVED_ARGUMENTS:
                    raise ConfigError(
                        f"'--{name}' is reserved by ParallelRunStep and cannot be used in arguments; set it on "
                        f"ParallelRunConfig instead (if it is one of its parameters) or rename your argument"
                    )

    def _validate_inputs(self) -> None:
        inputs = self.inputs
        rank = _rank_mini_batch_count(self.arguments or [])
        if inputs is not None and not isinstance(inputs, (list, tuple)):
            raise ConfigError(f"inputs must be a list, e.g. inputs=[dataset] (got {type(inputs).__name__})")
        if not inputs:
            if rank > 0:
                return
            raise ConfigError(
                "inputs must be a list with at least one input, or arguments must contain "
                "'--rank_mini_batch_count N' with N > 0 to run the entry script N times without input"
            )
        kinds = [self._lower_input(item, f"input_ds_{i}", side=False).kind for i, item in enumerate(inputs)]
        if len(set(kinds)) > 1:
            raise ConfigError(
                f"all inputs must be of the same kind, all file or all tabular (got {', '.join(kinds)})"
            )
        if len(inputs) > 1:
            raise ConfigError(
                f"only one input can be split into mini-batches locally (got {len(inputs)}); pass the others as "
                "side_inputs, or run one ParallelRunStep per input"
            )

    # -------------------------------------------------------------- lowering helpers
    @staticmethod
    def _lower_input(item: Any, default_name: str, *, side: bool) -> _LoweredInput:
        what = "side_inputs item" if side else "inputs item"
        name: str | None = None
        mode: str | None = None
        if isinstance(item, DatasetConsumptionConfig):
            name, mode, item = item.name, item.mode, item.dataset
        if isinstance(item, _DatasetBase):
            mode = _MODES.get(mode or "")
            name = name or default_name
            if item.kind == TABULAR:
                return _LoweredInput(name, TABULAR, Input(type="mltable", mode=mode), item.path)
            ptype = "uri_file" if side and os.path.isfile(item.path) else "uri_folder"
            return _LoweredInput(name, FILE, Input(type=ptype, mode=mode), item.path)
        if isinstance(item, Input):
            if item.is_literal:
                raise ConfigError(f"{what} Input(type={item.type!r}) is a literal value, not data; put the value "
                                  "in arguments instead, e.g. ['--threshold', '0.5']")
            if item.path is None:
                raise ConfigError(f"{what} Input(type={item.type!r}) has no path; give Input(..., path='data/...')")
            kind = TABULAR if item.type == "mltable" else FILE
            port = Input(type=item.type, mode=item.mode, description=item.description)
            return _LoweredInput(default_name, kind, port, item)
        if _is_dataframe(item):
            if side:
                raise ConfigError("a DataFrame cannot be a side input (the script receives side inputs as paths); "
                                  "save it to a file and pass the path")
            return _LoweredInput(default_name, TABULAR, Input(type="mltable"), item)
        if isinstance(item, _OutputBase):
            raise ConfigError(
                f"{what} {item!r} is an output with no data yet locally; pass the folder it was written to "
                "(for example result.output_paths[...] of the step that produced it)"
            )
        if _is_pathlike(item):
            path = _data_path(item, what)
            ptype = "uri_file" if side and os.path.isfile(path) else "uri_folder"
            return _LoweredInput(default_name, FILE, Input(type=ptype), path)
        raise ConfigError(
            f"{what} must be a folder path, Dataset.File/Dataset.Tabular (optionally .as_named_input(name)), "
            f"prs_nb.Input or pandas DataFrame (got {type(item).__name__})"
        )

    def _lower_output(self) -> tuple[str, Output, str | None] | None:
        out = self.output
        if out is None:
            return None
        if isinstance(out, _OutputBase):
            return out.name or DEFAULT_OUTPUT_NAME, Output(type="uri_folder"), out.destination
        if isinstance(out, Output):
            return DEFAULT_OUTPUT_NAME, Output(type=out.type, description=out.description, mode=out.mode), (
                None if out.path is None else os.path.abspath(out.path))
        if _is_pathlike(out):
            text = os.fspath(out)
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"output must be a non-empty folder path (got {out!r})")
            return DEFAULT_OUTPUT_NAME, Output(type="uri_folder"), os.path.abspath(text)
        raise ConfigError(
            f"output must be a folder path, PipelineData(name), OutputFileDatasetConfig or prs_nb.Output "
            f"(got {type(out).__name__})"
        )

    # -------------------------------------------------------------- lowering
    def to_spec(self, **overrides: Any) -> JobSpec:
        """This step as a :class:`~prs_nb.spec.JobSpec` (``api="v1"``).

        ``overrides`` replace JobSpec fields afterwards, e.g. ``backend="inline"`` or ``runs_root``.
        """
        cfg = self.parallel_run_config
        ports: dict[str, Input] = {}
        bindings: dict[str, Any] = {}
        refs: dict[int, str] = {}  # id(user object) -> ${{...}} text, to resolve objects in arguments

        def add(item: Any, lowered: _LoweredInput) -> None:
            if lowered.name in ports:
                raise ConfigError(f"two inputs are named {lowered.name!r}; give them different "
                                  "as_named_input(...) names")
            ports[lowered.name] = lowered.port
            bindings[lowered.name] = lowered.binding
            # Only data objects are replaced in arguments: a plain string that happens to equal a path
            # (possibly the same interned object) stays as the user wrote it.
            if isinstance(item, (DatasetConsumptionConfig, _DatasetBase, Input)):
                ref = f"${{{{inputs.{lowered.name}}}}}"
                refs[id(item)] = ref
                if isinstance(item, DatasetConsumptionConfig):
                    refs.setdefault(id(item.dataset), ref)

        input_data = None
        for i, item in enumerate(self.inputs or []):
            lowered = self._lower_input(item, f"input_ds_{i}", side=False)
            add(item, lowered)
            input_data = f"${{{{inputs.{lowered.name}}}}}"
        side = list(self.side_inputs or [])
        for i, item in enumerate(side):
            add(item, self._lower_input(item, f"side_input_{i}", side=True))
        # A dataset named only in arguments is a side input too (v1 adds argument datasets as inputs).
        for arg in self.arguments or []:
            if isinstance(arg, (_DatasetBase, DatasetConsumptionConfig)) and id(arg) not in refs:
                add(arg, self._lower_input(arg, f"side_input_{len(side)}", side=True))
                side.append(arg)

        outputs: dict[str, Output] = {}
        output_bindings: dict[str, str] = {}
        lowered_out = self._lower_output()
        append_row_to = None
        if lowered_out is not None:
            out_name, port, bound = lowered_out
            outputs[out_name] = port
            if bound is not None:
                output_bindings[out_name] = bound
            if isinstance(self.output, (_OutputBase, Output)):
                refs[id(self.output)] = f"${{{{outputs.{out_name}}}}}"
            if cfg.is_append_row:
                append_row_to = f"${{{{outputs.{out_name}}}}}"

        tokens: list[str] = []
        for arg in self.arguments or []:
            if id(arg) in refs:
                tokens.append(refs[id(arg)])
            elif isinstance(arg, _OutputBase):
                raise ConfigError(f"arguments refer to {arg!r}, which is not this step's output")
            else:
                tokens.append(str(_unwrap(arg)))
        program_arguments = _join_arguments(tokens) if tokens else None

        spec = JobSpec(
            name=self.name,
            description=cfg.description,
            compute=cfg.compute_target_name,
            inputs=ports,
            outputs=outputs,
            input_data=input_data,
            mini_batch_size=cfg._mini_batch_size_text,
            partition_keys=None if cfg.partition_keys is None else tuple(cfg.partition_keys),
            resources=Resources(instance_count=cfg.node_count),
            max_concurrency_per_instance=cfg.process_count_per_node,
            error_threshold=-1 if cfg.error_threshold is None else cfg.error_threshold,
            mini_batch_error_threshold=-1 if cfg.allowed_failed_count is None else cfg.allowed_failed_count,
            allowed_failed_percent=100.0 if cfg.allowed_failed_percent is None else float(cfg.allowed_failed_percent),
            # Contract 12: run_max_try counts TOTAL attempts; max_retries counts retries after the first.
            retry_settings=RetrySettings(max_retries=cfg.run_max_try - 1, timeout=cfg.run_invocation_timeout),
            logging_level=cfg.logging_level,
            task=RunFunction(
                code=cfg._code_dir,
                entry_script=cfg._entry_rel,
                program_arguments=program_arguments,
                append_row_to=append_row_to,
                environment=cfg.environment_name,
            ),
            environment_variables=dict(cfg.environment_variables),
            is_deterministic=self.allow_reuse,
            bindings=bindings,
            output_bindings=output_bindings,
            append_row_file_name=cfg.append_row_file_name if cfg.is_append_row else None,
            output_action=cfg.output_action.lower(),
            api="v1",
        )
        return spec.replace(**overrides) if overrides else spec

    def run(self, **kwargs: Any) -> RunResult:
        """Run the step locally and return its :class:`~prs_nb.results.RunResult`.

        Keyword arguments that name JobSpec fields (``backend``, ``runs_root``, ``ordered_output``...)
        override the spec; the rest (``listeners``, ``progress``, ``base_dir``) go to
        :func:`prs_nb.engine.run_job`.
        """
        from prs_nb.engine.run import run_job

        field_names = set(JobSpec.__dataclass_fields__)
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in field_names}
        return run_job(self.to_spec(**overrides), **kwargs)

    def __repr__(self) -> str:
        return (f"ParallelRunStep(name={self.name!r}, inputs={self.inputs!r}, output={self.output!r}, "
                f"arguments={self.arguments!r})")

