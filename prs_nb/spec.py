"""JobSpec: the one frozen schema behind every surface (v2 API, v1 API, YAML, magic, widgets, CLI).

Every surface lowers to :class:`JobSpec`. Defaults, validation and help text live here once; field
``metadata`` carries the help text and the form group used by the widget form and the docs table.
Names follow Azure ML wherever Azure has the concept, so YAML round-trips without a mapping table.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prs_nb.errors import ConfigError

ASSET_TYPES = ("uri_folder", "uri_file", "mltable", "custom_model", "mlflow_model", "triton_model")
LITERAL_TYPES = ("string", "integer", "number", "boolean")
INPUT_TYPES = ASSET_TYPES + LITERAL_TYPES


def literal_type(value: Any) -> str:
    """The Azure literal input type of a Python value (bool before int: True is an int)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


OUTPUT_TYPES = ("uri_folder", "uri_file", "mltable", "custom_model", "mlflow_model")
LOGGING_LEVELS = ("DEBUG", "INFO", "WARNING")
BACKENDS = ("local", "inline", "ray")
DEFAULT_FILE_MINI_BATCH_SIZE = 10
DEFAULT_TABULAR_MINI_BATCH_SIZE = 1024 * 1024
DEFAULT_APPEND_ROW_FILE_NAME = "parallel_run_step.txt"
MAX_TIMEOUT_S = 259200
_MBS_RE = re.compile(r"\d+([kKmMgG][bB])*")  # used with fullmatch: "10\n" is no size
#: ${{inputs.x}} / ${{outputs.y}} inside a string (program_arguments, command)
BINDING_RE = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
#: an optional $[[...]] segment of program_arguments / command: dropped when its bindings are unset
OPTIONAL_SEGMENT_RE = re.compile(r"\$\[\[(.*?)\]\]", re.S)
_INPUT_DATA_RE = re.compile(r"^\$\{\{\s*inputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
OUTPUT_REF_RE = re.compile(r"^\$\{\{\s*outputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_FORBIDDEN_FILE_CHARS = set('~"#%&*:<>?/\\{|}')
_PORT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def has_control_chars(text: str) -> bool:
    """True if ``text`` holds NUL or another control character (never valid in a file or variable name)."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def check_file_name(value: Any, what: str) -> str:
    """A plain file name: no folder part, none of the characters v1 forbids, no control characters."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a file name string such as 'results.txt' (got {type(value).__name__} "
                          f"{value!r})")
    bad = sorted(set(value) & _FORBIDDEN_FILE_CHARS)
    if bad or not value.strip() or value in (".", "..") or has_control_chars(value):
        raise ConfigError(
            f"{what} must be a plain file name without any of ~ \" # % & * : < > ? / \\ {{ | }} or control "
            f"characters, e.g. 'results.txt' (got {value!r})"
        )
    return value


def check_environment_variables(value: Any, what: str = "environment_variables") -> dict[str, str]:
    """``{name: value}`` with string names a process environment accepts; values become strings."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a dict of name -> value, e.g. {{'MODE': 'fast'}} "
                          f"(got {type(value).__name__} {value!r})")
    env: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k or "=" in k or has_control_chars(k):
            raise ConfigError(f"{what} names must be non-empty strings without '=' or control characters "
                              f"(got {k!r})")
        if isinstance(v, (str, int, float)):
            text = str(v)
        else:
            raise ConfigError(f"{what}[{k!r}] must be a string or a number (got {type(v).__name__} {v!r})")
        if "\0" in text or not _encodable(text) or not _encodable(k):
            raise ConfigError(f"{what}[{k!r}] must be text a process environment can hold: no NUL character, "
                              f"no lone surrogate (got {text!r})")
        env[k] = text
    return env


def _check_literal(value: Any, kind: str, where: str) -> None:
    """A value bound to a literal input (string, integer, number, boolean) must be one of those."""
    if isinstance(value, Input):
        value = value.path if value.path is not None else value.default
    if value is None:  # unbound (an optional input, or the port's default applies)
        return
    ok = {
        "integer": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, str) and value.strip().lstrip("+-").isdigit()),
        "number": (isinstance(value, (int, float)) and not isinstance(value, bool)) or (isinstance(value, str)
                                                                                       and _is_number_text(value)),
        "boolean": isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")),
        "string": isinstance(value, (str, int, float, bool)),
    }.get(kind, True)
    if not ok or (isinstance(value, str) and "\0" in value):
        article = "an" if kind == "integer" else "a"
        raise ConfigError(f"{where} is {article} {kind} input; bind {article} {kind} value, e.g. "
                          f"{_LITERAL_EXAMPLES.get(kind, 'text')} (got {type(value).__name__} {value!r})")


_LITERAL_EXAMPLES = {"integer": "5 or '5'", "number": "0.5", "boolean": "True", "string": "'text'"}


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _encodable(text: str) -> bool:
    try:
        os.fsencode(text)
    except UnicodeError:
        return False
    return True


def _mapping(value: Any, name: str, example: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict such as {example} (got {type(value).__name__} {value!r})")
    return dict(value)


def _optional_str(value: Any, name: str, example: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string such as {example} or None (got {type(value).__name__} {value!r})")


class AssetTypes:
    """Input/output type names, as ``azure.ai.ml.constants.AssetTypes``."""

    URI_FILE = "uri_file"
    URI_FOLDER = "uri_folder"
    MLTABLE = "mltable"
    CUSTOM_MODEL = "custom_model"
    MLFLOW_MODEL = "mlflow_model"
    TRITON_MODEL = "triton_model"


class InputOutputModes:
    """Data modes, as ``azure.ai.ml.constants.InputOutputModes`` (recorded; local paths are used as they are)."""

    MOUNT = "mount"
    DOWNLOAD = "download"
    UPLOAD = "upload"
    RO_MOUNT = "ro_mount"
    RW_MOUNT = "rw_mount"
    EVAL_MOUNT = "eval_mount"
    EVAL_DOWNLOAD = "eval_download"
    DIRECT = "direct"


def parse_mini_batch_size(value: int | str | None, *, where: str = "mini_batch_size") -> int | None:
    """Parse ``mini_batch_size`` exactly as Azure's client does (contract 5.1), rejecting ``"0"``.

    ``"10"`` -> 10, ``"10kb"`` -> 10240, ``"1MB"`` -> 1048576, ``"1GB"`` -> 1073741824 (1024-based).
    ``None`` stays ``None`` (the default then depends on the input kind: 10 files or 1 MiB).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where} must look like '10', '512KB' or '1GB' (got {value!r})")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        if not _MBS_RE.fullmatch(value):
            raise ConfigError(
                f"{where} must look like '10', '512KB' or '1GB': digits, optionally followed by KB, MB or GB "
                f"with no spaces or decimals (got {value!r})"
            )
        if value.isdigit():
            n = int(value)
        else:
            unit = value[-2:].lower()
            digits = value[:-2]
            if not digits.isdigit():  # '10KBMB' passes Azure's regex and then crashes there
                raise ConfigError(f"{where} must have one unit at most, like '10MB' (got {value!r})")
            n = int(digits) * {"kb": 1024, "mb": 1024**2, "gb": 1024**3}[unit]
    else:
        raise ConfigError(f"{where} must be a string like '10' or '1MB' (got {type(value).__name__} {value!r})")
    if n <= 0:
        raise ConfigError(
            f"{where} must be at least 1 (got {value!r}): it is the number of files per mini-batch for file "
            "inputs or the approximate bytes per mini-batch for tabular inputs"
        )
    return n


@dataclass(frozen=True)
class Input:
    """An input port or a bound input value, as ``azure.ai.ml.Input``.

    ``type`` is one of uri_folder, uri_file, mltable, custom_model, mlflow_model (data) or string,
    integer, number, boolean (literals). ``path`` is the data location (local path or glob);
    ``default`` is a literal's default value.
    """

    type: str = "uri_folder"
    path: Any = None
    default: Any = None
    optional: bool = False
    description: str | None = None
    mode: str | None = None

    def __post_init__(self) -> None:
        if self.type not in INPUT_TYPES:
            raise ConfigError(f"Input type must be one of {', '.join(INPUT_TYPES)} (got {self.type!r})")

    @property
    def is_literal(self) -> bool:
        return self.type in LITERAL_TYPES


@dataclass(frozen=True)
class Output:
    """An output port (or a bound output path), as ``azure.ai.ml.Output``."""

    type: str = "uri_folder"
    path: str | None = None
    description: str | None = None
    mode: str | None = None

    def __post_init__(self) -> None:
        if self.type not in OUTPUT_TYPES:
            raise ConfigError(f"Output type must be one of {', '.join(OUTPUT_TYPES)} (got {self.type!r})")


@dataclass(frozen=True, kw_only=True)
class RunFunction:
    """The task of a parallel job, as ``azure.ai.ml.parallel.RunFunction`` plus notebook callables.

    Either ``code`` + ``entry_script`` (an entry script file in a code folder, Azure's way), or
    ``run`` (and optionally ``init`` / ``shutdown``) callables defined in a notebook cell, shipped
    to the workers by value with cloudpickle. ``program_arguments`` is one string that reaches the
    entry script's ``sys.argv`` with ``${{inputs.x}}`` / ``${{outputs.y}}`` resolved.
    ``append_row_to`` (``${{outputs.name}}``) selects the append_row output; unset = summary_only.
    ``source`` keeps the text the functions were defined in (used on export).
    """

    code: str | None = None
    entry_script: str | None = None
    program_arguments: str | None = None
    model: str | None = None
    append_row_to: str | None = None
    environment: Any = None
    init: Callable[..., Any] | None = None
    run: Callable[..., Any] | None = None
    shutdown: Callable[..., Any] | None = None
    source: str | None = None
    type: str = "run_function"

    def __post_init__(self) -> None:
        if self.type not in ("run_function", "function", "model"):
            raise ConfigError(f"task.type must be run_function, function or model (got {self.type!r})")
        if self.entry_script is not None and self.run is not None:
            raise ConfigError("RunFunction takes either entry_script= (a file) or run= (a function), not both")
        for name in ("init", "run", "shutdown"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise ConfigError(f"RunFunction {name}= must be a function (got {type(fn).__name__})")
        if self.program_arguments is not None and not isinstance(self.program_arguments, str):
            raise ConfigError(
                "program_arguments must be one string, e.g. '--threshold 0.5' "
                f"(got {type(self.program_arguments).__name__}); join a list with ' '"
            )
        if isinstance(self.code, os.PathLike):
            object.__setattr__(self, "code", os.fspath(self.code))
        _optional_str(self.code, "task.code", "'./src'")
        _optional_str(self.entry_script, "task.entry_script", "'score.py'")
        _optional_str(self.append_row_to, "task.append_row_to", "'${{outputs.result}}'")
        _optional_str(self.model, "task.model", "'azureml:my-model:1'")
        _optional_str(self.source, "task.source", "the functions' source text")
        if self.entry_script is not None:
            object.__setattr__(self, "entry_script", self.entry_script.strip())

    @property
    def uses_functions(self) -> bool:
        return self.run is not None


@dataclass(frozen=True)
class RetrySettings:
    """``retry_settings``: ``max_retries`` retries after the first attempt (default 2, so 3 attempts);
    ``timeout`` seconds allowed for one ``run()`` call (default 60)."""

    max_retries: int = 2
    timeout: float = 60


@dataclass(frozen=True)
class Resources:
    """``resources``: ``instance_count`` nodes (default 1); other keys are recorded for export."""

    instance_count: int = 1
    instance_type: str | None = None
    properties: Mapping[str, Any] | None = None
    shm_size: str | None = None
    docker_args: Any = None


def _meta(help: str, group: str, **extra: Any) -> dict[str, Any]:
    return {"help": help, "group": group, **extra}


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """Every setting of a parallel job (contract sections 1-3, 7 and 12), validated once.

    Bound input values live in ``bindings`` (input name -> path, Input, DataFrame or literal) and
    output paths in ``output_bindings``. Runtime settings given as program arguments
    (``--error_threshold``, ``--allowed_failed_percent`` ...) are resolved by :meth:`effective`.
    """

    name: str = field(metadata=_meta("Job name; exported as an Azure component name (lowercase letters, digits, _).",
                                           "job"))
    display_name: str | None = field(default=None, metadata=_meta("Display name.", "job"))
    description: str | None = field(default=None, metadata=_meta("Description.", "job"))
    version: str | None = field(default=None, metadata=_meta("Component version.", "job"))
    tags: Mapping[str, str] = field(default_factory=dict, metadata=_meta("Tags.", "job"))
    properties: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("Properties.", "job"))
    experiment_name: str | None = field(default=None, metadata=_meta("Experiment name (recorded).", "job"))
    compute: str | None = field(default=None, metadata=_meta("Compute target (recorded; ignored locally).", "job"))
    inputs: Mapping[str, Input] = field(default_factory=dict, metadata=_meta("Input ports.", "data"))
    outputs: Mapping[str, Output] = field(default_factory=dict, metadata=_meta("Output ports.", "output"))
    input_data: str | None = field(
        default=None, metadata=_meta("The input that is split into mini-batches: ${{inputs.<name>}}.", "data")
    )
    mini_batch_size: str | None = field(
        default=None,
        metadata=_meta("Files per mini-batch (file input, default 10) or approximate bytes (tabular input, "
                       "default 1MB): '10', '512KB', '1MB'.", "batching"),
    )
    partition_keys: tuple[str, ...] | None = field(
        default=None, metadata=_meta("One mini-batch per distinct combination of these keys.", "batching")
    )
    resources: Resources = field(default_factory=Resources, metadata=_meta("Nodes (instance_count).", "concurrency"))
    max_concurrency_per_instance: int | None = field(
        default=None, metadata=_meta("Worker processes per node (default: number of CPU cores).", "concurrency")
    )
    error_threshold: int = field(
        default=-1, metadata=_meta("Failed items (rows/files) tolerated before the job fails; -1 disables.", "errors")
    )
    mini_batch_error_threshold: int = field(
        default=-1, metadata=_meta("Failed mini-batches tolerated before the job fails; -1 disables.", "errors")
    )
    allowed_failed_percent: float = field(
        default=100.0,
        metadata=_meta("Percent of failed mini-batches tolerated, checked once all are scheduled; 100 disables.",
                       "errors"),
    )
    retry_settings: RetrySettings = field(
        default_factory=RetrySettings,
        metadata=_meta("max_retries (retries after the first attempt, default 2) and timeout (seconds per "
                       "run() call, default 60).", "errors"),
    )
    logging_level: str = field(default="INFO", metadata=_meta("DEBUG, INFO or WARNING.", "logging"))
    task: RunFunction = field(default_factory=RunFunction, metadata=_meta("Entry script or functions.", "task"))
    environment_variables: Mapping[str, str] = field(
        default_factory=dict, metadata=_meta("Environment variables set in every worker.", "task")
    )
    is_deterministic: bool = field(default=True, metadata=_meta("Azure's reuse switch: an identical rerun is served from "
                                                                    "the cache under runs_root; False always reruns.", "job"))
    identity: Any = field(default=None, metadata=_meta("Identity (recorded; ignored locally).", "job"))
    bindings: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("Bound input values.", "data"))
    output_bindings: Mapping[str, str] = field(
        default_factory=dict, metadata=_meta("Bound output paths.", "output")
    )
    append_row_file_name: str | None = field(
        default=None,
        metadata=_meta("append_row file name when the output is a folder (default parallel_run_step.txt).",
                       "output"),
    )
    output_action: str | None = field(
        default=None, metadata=_meta("append_row or summary_only (v1); v2 derives it from append_row_to.", "output")
    )
    ordered_output: bool = field(
        default=False, metadata=_meta("Write append_row output in mini-batch order (local option).", "output")
    )
    backend: str = field(default="local", metadata=_meta("local (process pool), inline (no processes) or ray (Ray actors on a cluster).",
                                                         "concurrency"))
    runs_root: str = field(default="prs_runs", metadata=_meta("Where run directories are created.", "output"))
    api: str = field(default="v2", metadata=_meta("Which Azure surface built the job: v2 or v1.", "job"))

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"name must be a non-empty string (got {self.name!r})")
        if not isinstance(self.task, RunFunction):
            raise ConfigError(f"task must be a RunFunction(...) (got {type(self.task).__name__} {self.task!r})")
        for fname, example in (("display_name", "'Score images'"), ("description", "'what the job does'"),
                               ("version", "'1'"), ("experiment_name", "'scoring'"), ("compute", "'cpu-cluster'"),
                               ("input_data", "'${{inputs.data}}'"), ("output_action", "'append_row'"),
                               ("append_row_file_name", "'results.txt'")):
            _optional_str(getattr(self, fname), fname, example)
        if isinstance(self.runs_root, os.PathLike):
            set_("runs_root", os.fspath(self.runs_root))
        if not isinstance(self.runs_root, str) or not self.runs_root.strip() or "\0" in self.runs_root:
            raise ConfigError(f"runs_root must be a folder path such as 'prs_runs' (got {self.runs_root!r})")
        for fname in ("ordered_output", "is_deterministic"):
            if not isinstance(getattr(self, fname), bool):
                raise ConfigError(f"{fname} must be True or False (got {getattr(self, fname)!r})")
        if not isinstance(self.retry_settings, (RetrySettings, Mapping)):
            raise ConfigError("retry_settings must be a dict such as {'max_retries': 2, 'timeout': 60} or a "
                              f"RetrySettings (got {type(self.retry_settings).__name__} {self.retry_settings!r})")
        if not isinstance(self.resources, (Resources, Mapping)):
            raise ConfigError("resources must be a dict such as {'instance_count': 1} or a Resources "
                              f"(got {type(self.resources).__name__} {self.resources!r})")
        if isinstance(self.retry_settings, Mapping):
            set_("retry_settings", _retry_from_mapping(self.retry_settings))
        if isinstance(self.resources, Mapping):
            set_("resources", _resources_from_mapping(self.resources))
        if isinstance(self.partition_keys, str):
            raise ConfigError(
                f"partition_keys must be a list of column names, e.g. ['store'] (got the string {self.partition_keys!r})"
            )
        if self.partition_keys is not None:
            if not isinstance(self.partition_keys, (list, tuple)):
                raise ConfigError(f"partition_keys must be a list of column names, e.g. ['store'] "
                                  f"(got {type(self.partition_keys).__name__} {self.partition_keys!r})")
            keys = tuple(self.partition_keys)
            if not keys or not all(isinstance(k, str) and k for k in keys):
                raise ConfigError(f"partition_keys must be a non-empty list of names (got {self.partition_keys!r})")
            set_("partition_keys", keys)
        set_("inputs", _mapping(self.inputs, "inputs", "{'data': Input(type='uri_folder')}"))
        set_("outputs", _mapping(self.outputs, "outputs", "{'result': Output(type='uri_folder')}"))
        for kind, ports, cls in (("input", self.inputs, Input), ("output", self.outputs, Output)):
            for port_name, port in ports.items():
                if not isinstance(port_name, str) or not _PORT_NAME_RE.fullmatch(port_name):
                    raise ConfigError(
                        f"{kind} names must be letters, digits and underscores, starting with a letter or "
                        f"underscore, so that '${{{{{kind}s.<name>}}}}' can refer to them (got {port_name!r})"
                    )
                if not isinstance(port, cls):
                    raise ConfigError(f"{kind}s[{port_name!r}] must be a {cls.__name__}(...) "
                                      f"(got {type(port).__name__} {port!r})")
        set_("tags", _mapping(self.tags, "tags", "{'team': 'vision'}"))
        set_("properties", _mapping(self.properties, "properties", "{'key': 'value'}"))
        set_("bindings", _mapping(self.bindings, "bindings", "{'data': 'data/images'}"))
        out_bound = _mapping(self.output_bindings, "output_bindings", "{'result': 'out/'}")
        for out_name, out_path in out_bound.items():
            if isinstance(out_path, os.PathLike):
                out_path = out_bound[out_name] = os.fspath(out_path)
            if not isinstance(out_path, str) or not out_path.strip() or "\0" in out_path:
                raise ConfigError(f"output {out_name!r} must be bound to a path string (got {out_path!r})")
        set_("output_bindings", out_bound)
        set_("environment_variables", check_environment_variables(self.environment_variables))
        if self.mini_batch_size is not None:
            raw = self.mini_batch_size
            if isinstance(raw, int) and not isinstance(raw, bool):
                raw = str(raw)
            parse_mini_batch_size(raw)
            set_("mini_batch_size", raw)
        _check_int(self.max_concurrency_per_instance, "max_concurrency_per_instance", minimum=1, optional=True)
        _check_int(self.resources.instance_count, "resources.instance_count", minimum=1)
        _check_int(self.error_threshold, "error_threshold", minimum=-1)
        _check_int(self.mini_batch_error_threshold, "mini_batch_error_threshold", minimum=-1)
        _check_int(self.retry_settings.max_retries, "retry_settings.max_retries", minimum=0)
        _check_timeout(self.retry_settings.timeout, "retry_settings.timeout")
        pct = self.allowed_failed_percent
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
            raise ConfigError(f"allowed_failed_percent must be a number from 0 to 100 (got {pct!r})")
        level = self.logging_level
        if not isinstance(level, str) or level.upper() not in LOGGING_LEVELS:
            raise ConfigError(f"logging_level must be one of {', '.join(LOGGING_LEVELS)} (got {level!r})")
        set_("logging_level", level.upper())
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)} (got {self.backend!r})")
        if self.output_action is not None and self.output_action.lower() not in ("append_row", "summary_only"):
            raise ConfigError(f"output_action must be append_row or summary_only (got {self.output_action!r})")
        if self.append_row_file_name is not None:
            check_file_name(self.append_row_file_name, "append_row_file_name")
        if self.input_data is not None:
            m = _INPUT_DATA_RE.match(self.input_data)
            if not m:
                raise ConfigError(
                    f"input_data must be a binding like '${{{{inputs.data}}}}' (got {self.input_data!r})"
                )
            if self.inputs and m.group(1) not in self.inputs:
                raise ConfigError(
                    f"input_data refers to inputs.{m.group(1)}, which is not declared; declared inputs: "
                    f"{', '.join(self.inputs) or '(none)'}"
                )
        if self.task.append_row_to is not None:
            m = OUTPUT_REF_RE.match(self.task.append_row_to)
            if not m:
                raise ConfigError(
                    f"task.append_row_to must be a binding like '${{{{outputs.result}}}}' (got {self.task.append_row_to!r})"
                )
            if m.group(1) not in self.outputs:
                raise ConfigError(
                    f"task.append_row_to refers to outputs.{m.group(1)}, which is not declared; declared outputs: "
                    f"{', '.join(self.outputs) or '(none)'}"
                )
        for ref_kind, ref_name in BINDING_RE.findall(self.task.program_arguments or ""):
            ports = self.inputs if ref_kind == "inputs" else self.outputs
            if ref_name not in ports:
                raise ConfigError(
                    f"program_arguments refers to {ref_kind}.{ref_name}, which is not declared; declared {ref_kind}: "
                    f"{', '.join(ports) or '(none)'}"
                )
        for key, value in self.bindings.items():
            if self.inputs and key not in self.inputs:
                raise ConfigError(f"unknown input {key!r}; declared inputs: {', '.join(self.inputs)}")
            in_port = self.inputs.get(key)
            if in_port is not None and in_port.is_literal:
                _check_literal(value, in_port.type, f"input {key!r}")
        for key in self.output_bindings:
            if key not in self.outputs:
                raise ConfigError(f"unknown output {key!r}; declared outputs: {', '.join(self.outputs) or '(none)'}")

    # ------------------------------------------------------------------ derived values
    @property
    def input_data_name(self) -> str | None:
        if self.input_data is None:
            return None
        m = _INPUT_DATA_RE.match(self.input_data)
        return m.group(1) if m else None

    @property
    def append_row_output(self) -> str | None:
        """Name of the output the append_row file goes to, or None for summary_only."""
        if self.task.append_row_to is None:
            return None
        m = OUTPUT_REF_RE.match(self.task.append_row_to)
        return m.group(1) if m else None

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with ``changes`` applied (and validated); unknown names are a ConfigError."""
        unknown = sorted(set(changes) - set(JobSpec.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown job setting(s) {unknown}; settings are: "
                              f"{', '.join(JobSpec.__dataclass_fields__)}")
        return dataclasses.replace(self, **changes)

    def effective(self) -> EffectiveSettings:
        """The settings the engine applies: spec keys overridden by PRS program arguments (contract 7)."""
        return EffectiveSettings.from_spec(self)


@dataclass(frozen=True)
class EffectiveSettings:
    """Runtime settings after reading PRS's predefined program arguments."""

    max_attempts: int
    timeout: float
    error_threshold: int
    mini_batch_error_threshold: int
    allowed_failed_percent: float
    append_row_dataframe_header: bool
    rank_mini_batch_count: int
    first_task_creation_timeout: float | None
    workers_per_node: int
    instance_count: int
    explicit_mini_batch_size: int | None
    partitions_override_size: bool
    #: what the user called the failed-mini-batch limit: v1 and ``--allowed_failed_count`` say
    #: allowed_failed_count, v2 says mini_batch_error_threshold (the result names the user's knob)
    mini_batch_limit_name: str = "mini_batch_error_threshold"

    @classmethod
    def from_spec(cls, spec: JobSpec) -> EffectiveSettings:
        args = _prs_arguments(spec.task.program_arguments or "")
        mbe = spec.mini_batch_error_threshold
        mbe_name = "allowed_failed_count" if spec.api == "v1" else "mini_batch_error_threshold"
        if "allowed_failed_count" in args:
            mbe = _arg_int(args, "allowed_failed_count", minimum=-1)
            mbe_name = "allowed_failed_count"
        err = _arg_int(args, "error_threshold", minimum=-1) if "error_threshold" in args else spec.error_threshold
        pct = spec.allowed_failed_percent
        if "allowed_failed_percent" in args:
            try:
                pct = float(args["allowed_failed_percent"])
            except ValueError:
                raise ConfigError(
                    f"--allowed_failed_percent must be a number from 0 to 100 (got {args['allowed_failed_percent']!r})"
                ) from None
            if not 0 <= pct <= 100:
                raise ConfigError(f"--allowed_failed_percent must be from 0 to 100 (got {pct})")
        header = str(args.get("append_row_dataframe_header", "false")).lower() in ("true", "1", "yes")
        rank = max(0, _arg_int(args, "rank_mini_batch_count", minimum=None)) if "rank_mini_batch_count" in args else 0
        ftc = None
        if "first_task_creation_timeout" in args:
            ftc = float(_arg_int(args, "first_task_creation_timeout", minimum=1))
        workers = spec.max_concurrency_per_instance or (os.cpu_count() or 1)
        size = parse_mini_batch_size(spec.mini_batch_size)
        return cls(
            max_attempts=spec.retry_settings.max_retries + 1,
            timeout=float(spec.retry_settings.timeout),
            error_threshold=err,
            mini_batch_error_threshold=mbe,
            allowed_failed_percent=pct,
            append_row_dataframe_header=header,
            rank_mini_batch_count=rank,
            first_task_creation_timeout=ftc,
            workers_per_node=workers,
            instance_count=spec.resources.instance_count,
            explicit_mini_batch_size=None if spec.partition_keys else size,
            partitions_override_size=bool(spec.partition_keys) and size is not None,
            mini_batch_limit_name=mbe_name,
        )


PRS_ARGUMENTS = (
    "error_threshold", "allowed_failed_count", "allowed_failed_percent", "task_overhead_timeout",
    "progress_update_timeout", "first_task_creation_timeout", "copy_logs_to_parent", "metrics_name_prefix",
    "push_metrics_to_parent", "resource_monitor_interval", "profiling_module", "rank_mini_batch_count",
    "append_row_dataframe_header", "append_row_safe_output", "append_row_file_name",
)


def _prs_arguments(program_arguments: str) -> dict[str, str]:
    """PRS's predefined options found in program_arguments (``--name value`` or ``--name=value``)."""
    try:
        tokens = shlex.split(program_arguments)
    except ValueError as exc:
        raise ConfigError(f"program_arguments cannot be split like a shell command line: {exc} "
                          f"(got {program_arguments!r})") from None
    found: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            if name in PRS_ARGUMENTS:
                if not eq:
                    if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                        value = tokens[i + 1]
                        i += 1
                    else:
                        value = "true"
                found[name] = value
        i += 1
    return found


def _arg_int(args: Mapping[str, str], name: str, *, minimum: int | None) -> int:
    raw = args[name]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"--{name} in program_arguments must be a whole number (got {raw!r})") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"--{name} in program_arguments must be >= {minimum} (got {value})")
    return value


def _check_int(value: Any, name: str, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number >= {minimum} (got {value!r})")
    if value < minimum:
        hint = " (-1 disables the threshold)" if minimum == -1 else ""
        raise ConfigError(f"{name} must be >= {minimum}{hint} (got {value})")


def _check_timeout(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT_S:
        raise ConfigError(f"{name} must be a number of seconds in (0, {MAX_TIMEOUT_S}] (got {value!r})")


def _retry_from_mapping(m: Mapping[str, Any]) -> RetrySettings:
    unknown = set(m) - {"max_retries", "timeout"}
    if unknown:
        raise ConfigError(f"retry_settings takes max_retries and timeout (got unknown keys {sorted(unknown)})")
    base = RetrySettings()
    max_retries = m.get("max_retries")
    timeout = m.get("timeout")
    return RetrySettings(
        max_retries=base.max_retries if max_retries is None else _coerce_int(max_retries, "retry_settings.max_retries"),
        timeout=base.timeout if timeout is None else _coerce_num(timeout, "retry_settings.timeout"),
    )


def _resources_from_mapping(m: Mapping[str, Any]) -> Resources:
    known = {f.name for f in dataclasses.fields(Resources)}
    extra = {k: v for k, v in m.items() if k not in known}
    kwargs = {k: v for k, v in m.items() if k in known}
    if "instance_count" in kwargs and kwargs["instance_count"] is not None:
        kwargs["instance_count"] = _coerce_int(kwargs["instance_count"], "resources.instance_count")
    elif "instance_count" in kwargs:
        kwargs.pop("instance_count")
    if extra:
        props = dict(kwargs.get("properties") or {})
        props.update(extra)
        kwargs["properties"] = props
    return Resources(**kwargs)


def _coerce_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number (got {value!r})")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ConfigError(f"{name} must be a whole number (got {value!r})")


def _coerce_num(value: Any, name: str) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number (got {value!r})")
    if isinstance(value, (int, float)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number of seconds (got {value!r})") from None


def warn_partitions_override(spec: JobSpec) -> None:
    if spec.partition_keys and spec.mini_batch_size is not None:
        warnings.warn(
            f"partition_keys {list(spec.partition_keys)} are set, so mini_batch_size {spec.mini_batch_size!r} is "
            "ignored: each partition is one mini-batch (Azure ML v2 semantics)",
            UserWarning,
            stacklevel=3,
        )


def spec_fields() -> list[dataclasses.Field[Any]]:
    """JobSpec's fields with their help text and group (for the widget form and docs table)."""
    return list(dataclasses.fields(JobSpec))


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return "required" if f.name == "name" else repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if isinstance(value, (RetrySettings, Resources)):
            return ", ".join(f"{k.name}={getattr(value, k.name)!r}" for k in dataclasses.fields(value)
                             if getattr(value, k.name) is not None)
        if isinstance(value, RunFunction):
            return "(required)"
        return repr(value)
    return "required"


def settings_table() -> str:
    """The Markdown table of every JobSpec setting (name, group, default, help), generated from the
    field metadata so the docs never drift from the code."""
    lines = ["| setting | group | default | meaning |", "|---|---|---|---|"]
    for f in spec_fields():
        meta = f.metadata
        lines.append(f"| `{f.name}` | {meta.get('group', '')} | `{_default_text(f)}` | "
                     f"{meta.get('help', '').replace('|', '/')} |")
    return "\n".join(lines)
