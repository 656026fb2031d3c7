"""Azure ML YAML -> prs_nb: :func:`load` reads a parallel component or a pipeline job.

::

    load("score.yml")
      type: parallel  -> ParallelJob (JobSpec from every key of contract 3.1; ports, defaults)
      type: pipeline  -> PipelineJob (pipeline_load: nodes, bindings, component: file: refs)

Only ``yaml.safe_load`` is used. Relative paths (``task.code``, data paths, ``conda_file``) are
resolved against the YAML file's folder and stored absolute. A key prs_nb does not know is a
:class:`YamlKeyWarning` naming the key and file (Azure drops it silently). What Azure's loader
rejects is rejected here too, and so is what it misses (contract 11): thresholds below -1,
concurrency or instance counts below 1, timeouts outside (0, 259200], dangling
``${{inputs.x}}`` / ``${{outputs.y}}`` references, a missing task, entry_script or input_data.
Each error is a :class:`YamlError` naming the file, the key, what was expected and what was got.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from prs_nb.errors import ConfigError
from prs_nb.spec import (
    BINDING_RE,
    INPUT_TYPES,
    LITERAL_TYPES,
    LOGGING_LEVELS,
    MAX_TIMEOUT_S,
    OPTIONAL_SEGMENT_RE,
    OUTPUT_REF_RE,
    OUTPUT_TYPES,
    Input,
    JobSpec,
    Output,
    Resources,
    RetrySettings,
    RunFunction,
    parse_mini_batch_size,
)
from prs_nb.yaml_io import component_name
from prs_nb.yamlio.export import EXTENSION_KEY, is_remote
from prs_nb.yamlio.problems import Where, YamlError, YamlKeyWarning, type_name

if TYPE_CHECKING:
    from prs_nb.api import ParallelJob
    from prs_nb.pipeline import PipelineJob

COMPONENT_KEYS = (
    "$schema", "type", "name", "version", "display_name", "description", "tags", "properties",
    "is_deterministic", "inputs", "outputs", "input_data", "mini_batch_size", "partition_keys", "resources",
    "max_concurrency_per_instance", "error_threshold", "mini_batch_error_threshold", "logging_level",
    "retry_settings", "task", EXTENSION_KEY,
)
# keys a parallel node inside a pipeline job adds (contract 3.2)
NODE_KEYS = ("component", "compute", "environment_variables", "identity", "experiment_name")
TASK_KEYS = ("type", "code", "entry_script", "program_arguments", "append_row_to", "environment", "model")
RESOURCE_KEYS = ("instance_count", "instance_type", "properties", "shm_size", "docker_args", "max_instance_count",
                 "locations")
RETRY_KEYS = ("max_retries", "timeout")
INPUT_PORT_KEYS = ("type", "description", "optional", "default", "mode", "min", "max", "enum", "path")
OUTPUT_PORT_KEYS = ("type", "description", "mode", "path")
EXTENSION_KEYS = ("timeout", "backend", "runs_root", "ordered_output", "allowed_failed_percent",
                  "allowed_failed_percent_argument", "append_row_file_name", "output_action", "api",
                  "environment_variables", "compute", "identity", "experiment_name", "name", "display_name")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ANY_REF_RE = re.compile(r"\$\{\{(.*?)\}\}")
_INPUT_DATA_RE = re.compile(r"^\$\{\{\s*inputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


def read_yaml(path: str) -> dict[str, Any]:
    """``yaml.safe_load`` of ``path``, which must hold a mapping; errors name the file and line."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except FileNotFoundError:
        raise YamlError(f"file not found (looked in {os.path.abspath(path)})", path=path) from None
    except IsADirectoryError:
        raise YamlError("is a folder; give the YAML file inside it", path=path) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"is not valid YAML: {exc}", path=path) from None
    except UnicodeDecodeError as exc:
        raise YamlError(f"is not UTF-8 text: {exc}", path=path) from None
    if not isinstance(doc, dict):
        raise YamlError(f"expected a mapping of keys at the top level (got {type_name(doc)})", path=path)
    return doc


def load(path: str | os.PathLike[str]) -> ParallelJob | PipelineJob:
    """Read an Azure ML YAML file: a ``type: parallel`` component becomes a :class:`ParallelJob`,
    a ``type: pipeline`` job a :class:`PipelineJob` (both have ``.run()`` and ``.to_yaml()``); a
    ``type: command`` job file becomes a one-node PipelineJob."""
    from prs_nb.api import ParallelJob

    p = os.fspath(path)
    doc = read_yaml(p)
    kind = doc.get("type")
    if kind == "parallel":
        return ParallelJob(spec_from_component(doc, Where(p), os.path.dirname(os.path.abspath(p))))
    if kind == "pipeline":
        from prs_nb.yamlio.pipeline_load import pipeline_from_dict

        return pipeline_from_dict(doc, p)
    if kind == "command":
        # a command job file: run it as a one-node pipeline (its inputs are values, as in a node)
        from prs_nb.yamlio.pipeline_load import pipeline_from_dict

        name = str(doc.get("name") or "command")
        node = {k: v for k, v in doc.items() if k != "$schema"}
        return pipeline_from_dict({"type": "pipeline", "display_name": doc.get("display_name", name),
                                   "jobs": {name: node}}, p)
    if "parallel_run_config" in doc:
        raise YamlError("is a v1 ParallelRunConfig file; read it with prs_nb.ParallelRunConfig.load_yaml(None, path)",
                        path=p)
    raise YamlError(f"expected type: parallel (a component), type: pipeline or type: command (a job) (got type: "
                    f"{kind!r})",
                    path=p, key="type")


# ---------------------------------------------------------------------------------------------- scalars
def _expect(where: Where, key: str, value: Any, kinds: tuple[type, ...], expected: str) -> Any:
    if isinstance(value, bool) and bool not in kinds:
        raise where.error(key, f"expected {expected}, got {type_name(value)} {value!r}")
    if not isinstance(value, kinds):
        raise where.error(key, f"expected {expected}, got {type_name(value)} {value!r}")
    return value


def _opt_str(where: Where, d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    return str(_expect(where, key, value, (str,), "a string"))


def _int(where: Where, key: str, value: Any, minimum: int, hint: str = "") -> int:
    # azure-ai-ml's integer fields take "5" and 2.0 as well; a fraction it would silently truncate
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, float):
        raise where.error(key, f"expected a whole number >= {minimum}{hint}, got number {value!r} (Azure ML would "
                               f"silently truncate it to {int(value)})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(key, f"expected a whole number >= {minimum}{hint}, got {type_name(value)} {value!r}")
    if value < minimum:
        raise where.error(key, f"expected a whole number >= {minimum}{hint}, got {value}")
    return value


def _mapping(where: Where, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(key, f"expected a mapping, got {type_name(value)} {value!r}")
    return dict(value)


def _binding_left(where: Where, key: str, value: Any) -> None:
    if isinstance(value, str) and _ANY_REF_RE.search(value) and "parent." in value:
        raise where.error(key, f"{value!r} binds to a pipeline input, which only works inside a pipeline job's "
                               "jobs: section")


def resolve_path(value: str, base: str) -> str:
    if is_remote(value):
        return value
    return os.path.abspath(os.path.join(base, os.path.expanduser(value)))


# ---------------------------------------------------------------------------------------------- ports
_LITERAL_PY = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}


def input_port(where: Where, name: str, d: Any, base: str) -> Input:
    if isinstance(d, str) and d in INPUT_TYPES:
        d = {"type": d}
    d = _mapping(where, name, d)
    w = where.sub(name)
    w.unknown(d, INPUT_PORT_KEYS, "an input port")
    kind = d.get("type")
    if kind not in INPUT_TYPES:
        raise w.error("type", f"expected one of {', '.join(INPUT_TYPES)}, got {kind!r}")
    optional = d.get("optional", False)
    _expect(w, "optional", optional, (bool,), "true or false")
    default = d.get("default")
    if default is not None:
        if kind in LITERAL_TYPES:
            py = _LITERAL_PY[kind]
            if isinstance(default, bool) and kind != "boolean" or not isinstance(default, py):
                raise w.error("default", f"expected a {kind} for a {kind} input, got {type_name(default)} "
                                         f"{default!r}")
            _check_range(w, kind, default, d)
        elif not isinstance(default, str):
            raise w.error("default", f"expected a path string, got {type_name(default)} {default!r}")
    path = d.get("path")
    if path is not None:
        _expect(w, "path", path, (str,), "a path string")
        path = resolve_path(path, base)
    return Input(type=kind, path=path, default=default, optional=optional,
                 description=_opt_str(w, d, "description"), mode=_opt_str(w, d, "mode"))


def _check_range(w: Where, kind: str, value: Any, d: Mapping[str, Any]) -> None:
    lo, hi, enum = d.get("min"), d.get("max"), d.get("enum")
    if kind in ("integer", "number"):
        if lo is not None and value < lo:
            raise w.error("default", f"expected a value >= min {lo}, got {value}")
        if hi is not None and value > hi:
            raise w.error("default", f"expected a value <= max {hi}, got {value}")
    if enum is not None and value not in enum:
        raise w.error("default", f"expected one of enum {enum}, got {value!r}")


def output_port(where: Where, name: str, d: Any, base: str) -> Output:
    if isinstance(d, str) and d in OUTPUT_TYPES:
        d = {"type": d}
    d = _mapping(where, name, d)
    w = where.sub(name)
    w.unknown(d, OUTPUT_PORT_KEYS, "an output port")
    kind = d.get("type", "uri_folder")
    if kind not in OUTPUT_TYPES:
        raise w.error("type", f"expected one of {', '.join(OUTPUT_TYPES)}, got {kind!r}")
    path = d.get("path")
    if path is not None:
        _expect(w, "path", path, (str,), "a path string")
        path = resolve_path(path, base)
    return Output(type=kind, path=path, description=_opt_str(w, d, "description"), mode=_opt_str(w, d, "mode"))


# ---------------------------------------------------------------------------------------------- component
def spec_from_component(doc: Mapping[str, Any], where: Where, base: str, *, node: bool = False,
                        default_name: str | None = None, check_unknown: bool = True) -> JobSpec:
    """A JobSpec from a parallel component dict (or a node's merged component + node keys when ``node``)."""
    known = COMPONENT_KEYS + (NODE_KEYS + ("inputs", "outputs") if node else ())
    if not node and "environment_variables" in doc and check_unknown:
        warnings.warn(YamlKeyWarning(
            f"{where.path}: environment_variables is not a key of a parallel component: Azure ML drops it there "
            "(put it on the pipeline node); prs_nb applies it when running this file locally",
            path=where.path, key=where.key("environment_variables")), stacklevel=3)
        known = known + ("environment_variables",)
    ext = _mapping(where, EXTENSION_KEY, doc.get(EXTENSION_KEY) or {})
    if check_unknown:
        where.unknown(doc, known, "a parallel component" if not node else "a parallel node")
        where.sub(EXTENSION_KEY).unknown(ext, EXTENSION_KEYS, f"the {EXTENSION_KEY} section")

    name = doc.get("name", default_name)
    if name is None:
        raise where.error("name", "a parallel component needs a name (lowercase letters, digits and _, starting "
                                  "with a letter)")
    _expect(where, "name", name, (str,), "a string")
    if not _NAME_RE.match(name):
        raise where.error("name", f"expected lowercase letters, digits and _ starting with a letter (Azure ML "
                                  f"rejects anything else), got {name!r}; use {component_name(name)!r}")
    display_name = _opt_str(where, doc, "display_name")
    if "name" in ext:
        name = _expect(where.sub(EXTENSION_KEY), "name", ext["name"], (str,), "a string")
        if "display_name" in ext and ext["display_name"] is None:
            display_name = None
    version = doc.get("version")
    if version is not None:
        _expect(where, "version", version, (str, int, float), "a string")
        version = str(version)
    tags = _mapping(where, "tags", doc.get("tags") or {})
    props = _mapping(where, "properties", doc.get("properties") or {})
    is_det = doc.get("is_deterministic", True)
    _expect(where, "is_deterministic", is_det, (bool,), "true or false")

    ins_d = _mapping(where, "inputs", doc.get("inputs") or {})
    outs_d = _mapping(where, "outputs", doc.get("outputs") or {})
    inputs = {str(k): input_port(where.sub("inputs"), str(k), v, base) for k, v in ins_d.items()}
    outputs = {str(k): output_port(where.sub("outputs"), str(k), v, base) for k, v in outs_d.items()}

    task_d = doc.get("task")
    if task_d is None:
        raise where.error("task", "a parallel job needs a task: {type: run_function, code: ./src, "
                                  "entry_script: score.py, environment: ...}")
    task = _task(where.sub("task"), _mapping(where, "task", task_d), base, inputs, outputs)

    input_data = doc.get("input_data")
    rank = "--rank_mini_batch_count" in (task.program_arguments or "")
    if input_data is None:
        if not rank:
            raise where.error("input_data", "missing: name the input to split into mini-batches, e.g. "
                                            "input_data: ${{inputs.data}}" +
                              (f" (declared inputs: {', '.join(inputs)})" if inputs else ""))
    else:
        _expect(where, "input_data", input_data, (str,), "a binding like ${{inputs.data}}")
        m = _INPUT_DATA_RE.match(input_data)
        if not m:
            raise where.error("input_data", f"expected a binding like ${{{{inputs.data}}}}, got {input_data!r}")
        if m.group(1) not in inputs:
            raise where.error("input_data", f"refers to inputs.{m.group(1)}, which is not declared (declared: "
                                            f"{', '.join(inputs) or 'none'})")
        if inputs[m.group(1)].is_literal:
            raise where.error("input_data", f"refers to inputs.{m.group(1)}, a {inputs[m.group(1)].type}; "
                                            "expected a data input (uri_folder, uri_file or mltable)")

    mbs = doc.get("mini_batch_size")
    if mbs is not None:
        _binding_left(where, "mini_batch_size", mbs)
        if isinstance(mbs, bool) or not isinstance(mbs, str):
            raise where.error("mini_batch_size", f"expected a quoted string such as \"10\" or \"1MB\" (Azure ML "
                                                 f"rejects a YAML number), got {type_name(mbs)} {mbs!r}; write "
                                                 f"mini_batch_size: \"{mbs}\"")
        try:
            parse_mini_batch_size(mbs)
        except ConfigError as exc:
            raise where.error("mini_batch_size", str(exc)) from None
    keys = doc.get("partition_keys")
    if keys is not None:
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise where.error("partition_keys", f"expected a non-empty list of column names, got "
                                                f"{type_name(keys)} {keys!r}")
        keys = tuple(keys)

    resources = _resources(where, doc.get("resources"))
    mcpi = doc.get("max_concurrency_per_instance")
    if mcpi is not None:
        _binding_left(where, "max_concurrency_per_instance", mcpi)
        mcpi = _int(where, "max_concurrency_per_instance", mcpi, 1)
    err_t = _int(where, "error_threshold", doc.get("error_threshold", -1), -1, " (-1 disables it)")
    mb_err_t = _int(where, "mini_batch_error_threshold", doc.get("mini_batch_error_threshold", -1), -1,
                    " (-1 disables it)")
    level = doc.get("logging_level", "INFO")
    if level not in LOGGING_LEVELS:
        hint = f"; write {level.upper()}" if isinstance(level, str) and level.upper() in LOGGING_LEVELS else ""
        raise where.error("logging_level", f"expected exactly one of {', '.join(LOGGING_LEVELS)} (upper-case, as "
                                           f"Azure ML requires), got {level!r}{hint}")
    retry = _retry(where, doc.get("retry_settings"), ext.get("timeout"))

    env_vars = doc.get("environment_variables", ext.get("environment_variables")) or {}
    env_vars = _env_vars(where, env_vars)
    local: dict[str, Any] = {}
    e = where.sub(EXTENSION_KEY)
    for key in ("backend", "runs_root", "append_row_file_name", "output_action", "api"):
        if key in ext:
            local[key] = _expect(e, key, ext[key], (str,), "a string")
    if "ordered_output" in ext:
        local["ordered_output"] = _expect(e, "ordered_output", ext["ordered_output"], (bool,), "true or false")
    if "allowed_failed_percent" in ext:
        pct = _expect(e, "allowed_failed_percent", ext["allowed_failed_percent"], (int, float), "a number 0-100")
        local["allowed_failed_percent"] = float(pct)
        if ext.get("allowed_failed_percent_argument"):
            suffix = f"--allowed_failed_percent {ext['allowed_failed_percent']}"
            args = task.program_arguments or ""
            if args == suffix:
                task = _replace_task(task, program_arguments=None)
            elif args.endswith(" " + suffix):
                task = _replace_task(task, program_arguments=args[: -len(suffix) - 1])
    compute = doc.get("compute", ext.get("compute"))
    if compute is not None:
        compute = _expect(where, "compute", compute, (str,), "a compute name such as azureml:cpu-cluster")
    identity = doc.get("identity", ext.get("identity"))
    experiment = doc.get("experiment_name", ext.get("experiment_name"))
    try:
        return JobSpec(
            name=name, display_name=display_name, description=_opt_str(where, doc, "description"),
            version=version, tags=tags, properties=props, experiment_name=experiment, compute=compute,
            inputs=inputs, outputs=outputs, input_data=input_data, mini_batch_size=mbs, partition_keys=keys,
            resources=resources, max_concurrency_per_instance=mcpi, error_threshold=err_t,
            mini_batch_error_threshold=mb_err_t, retry_settings=retry, logging_level=level, task=task,
            environment_variables=env_vars, is_deterministic=is_det, identity=identity, **local,
        )
    except ConfigError as exc:
        if isinstance(exc, YamlError):
            raise
        raise YamlError(str(exc), path=where.path, key=where.prefix or None) from None


def _replace_task(task: RunFunction, **changes: Any) -> RunFunction:
    import dataclasses

    return dataclasses.replace(task, **changes)


def _env_vars(where: Where, value: Any) -> dict[str, str]:
    d = _mapping(where, "environment_variables", value)
    out: dict[str, str] = {}
    for k, v in d.items():
        if not isinstance(k, str) or not k:
            raise where.error("environment_variables", f"expected names as keys, got {k!r}")
        if isinstance(v, (dict, list)) or v is None:
            raise where.error(f"environment_variables.{k}", f"expected a string value, got {type_name(v)} {v!r}")
        out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _resources(where: Where, value: Any) -> Resources:
    if value is None:
        return Resources()
    d = _mapping(where, "resources", value)
    w = where.sub("resources")
    w.unknown(d, RESOURCE_KEYS, "resources")
    count = d.get("instance_count", 1)
    _binding_left(w, "instance_count", count)
    count = _int(w, "instance_count", count, 1)
    props = dict(_mapping(w, "properties", d.get("properties") or {}))
    for extra in ("max_instance_count", "locations"):
        if extra in d:  # kept with the resources so they are exported again
            props[extra] = d[extra]
    docker = d.get("docker_args")
    if docker is not None:
        _expect(w, "docker_args", docker, (str, list), "a string or a list of strings")
        docker = tuple(docker) if isinstance(docker, list) else docker
    return Resources(instance_count=count, instance_type=_opt_str(w, d, "instance_type"), properties=props or None,
                     shm_size=_opt_str(w, d, "shm_size"), docker_args=docker)


def _retry(where: Where, value: Any, exact_timeout: Any = None) -> RetrySettings:
    if value is None:
        return RetrySettings()
    d = _mapping(where, "retry_settings", value)
    w = where.sub("retry_settings")
    w.unknown(d, RETRY_KEYS, "retry_settings")
    base = RetrySettings()
    mr = d.get("max_retries", base.max_retries)
    _binding_left(w, "max_retries", mr)
    mr = _int(w, "max_retries", mr, 0)
    to = d.get("timeout", base.timeout)
    _binding_left(w, "timeout", to)
    if isinstance(to, str) and re.fullmatch(r"\s*\d+\s*", to):
        to = int(to)  # as azure-ai-ml reads it
    if isinstance(to, bool) or not isinstance(to, (int, float)) or not 0 < to <= MAX_TIMEOUT_S:
        raise w.error("timeout", f"expected whole seconds in (0, {MAX_TIMEOUT_S}] for one run() call, got "
                                 f"{type_name(to)} {to!r}")
    if isinstance(to, float) and not to.is_integer():
        raise w.error("timeout", f"expected whole seconds, got {to!r} (Azure ML would silently truncate it to "
                                 f"{int(to)}); write {math.ceil(to)}")
    to = int(to)
    # a fractional local timeout is written rounded up for Azure, the exact value under prs_nb:
    if isinstance(exact_timeout, (int, float)) and not isinstance(exact_timeout, bool) \
            and 0 < exact_timeout <= MAX_TIMEOUT_S and math.ceil(exact_timeout) == to:
        return RetrySettings(max_retries=mr, timeout=exact_timeout)
    return RetrySettings(max_retries=mr, timeout=to)


def _task(w: Where, d: dict[str, Any], base: str, inputs: Mapping[str, Input],
          outputs: Mapping[str, Output]) -> RunFunction:
    w.unknown(d, TASK_KEYS, "task")
    kind = d.get("type")
    if kind not in ("run_function", "function", "model"):
        raise w.error("type", f"expected run_function (or function / model), got {kind!r}")
    code = d.get("code")
    if code is not None:
        _expect(w, "code", code, (str,), "a folder path")
        if is_remote(code):
            raise w.error("code", f"{code!r} is a remote code asset; prs_nb runs local folders only: download it "
                                  "and point task.code at the folder")
        code = resolve_path(code, base)
        if not os.path.isdir(code):
            raise w.error("code", f"folder not found (looked in {code}); task.code is relative to the YAML file")
    script = d.get("entry_script")
    if script is None and kind != "model":
        raise w.error("entry_script", "missing: name the script with init()/run(), e.g. entry_script: score.py")
    if script is not None:
        _expect(w, "entry_script", script, (str,), "a file name such as score.py")
        script = script.strip()
        if script.endswith(".py") and not os.path.isfile(os.path.join(code or base, script)):
            raise w.error("entry_script", f"{script!r} not found in the code folder {code or base}")
    args = d.get("program_arguments")
    if args is not None:
        if isinstance(args, list):
            raise w.error("program_arguments", "expected one string such as '--threshold 0.5' (Azure ML takes a "
                                               f"single string), got a list {args!r}; join it with spaces")
        if isinstance(args, (int, float)) and not isinstance(args, bool):
            args = str(args)
        _expect(w, "program_arguments", args, (str,), "one string")
        _check_refs(w, "program_arguments", args, inputs, outputs)
    append = d.get("append_row_to")
    if append is not None:
        _expect(w, "append_row_to", append, (str,), "a binding like ${{outputs.result}}")
        m = OUTPUT_REF_RE.match(append)
        if not m:
            raise w.error("append_row_to", f"expected a binding like ${{{{outputs.result}}}}, got {append!r}")
        if m.group(1) not in outputs:
            raise w.error("append_row_to", f"refers to outputs.{m.group(1)}, which is not declared (declared: "
                                           f"{', '.join(outputs) or 'none'})")
    if "environment" not in d or d["environment"] is None:
        raise w.error("environment", "missing: Azure ML requires task.environment, e.g. "
                                     "environment: {image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest, "
                                     "conda_file: ./conda.yml} or azureml:my-env:1")
    env = d["environment"]
    if isinstance(env, Mapping):
        env = dict(env)
        if isinstance(env.get("conda_file"), str):
            env["conda_file"] = resolve_path(env["conda_file"], base)
        build = env.get("build")
        if isinstance(build, Mapping) and isinstance(build.get("path"), str):
            env["build"] = {**build, "path": resolve_path(build["path"], base)}
    elif not isinstance(env, str):
        raise w.error("environment", f"expected a reference string or a mapping, got {type_name(env)}")
    model = d.get("model")
    if model is not None:
        model = str(_expect(w, "model", model, (str,), "a string"))
    try:
        return RunFunction(code=code, entry_script=script, program_arguments=args, append_row_to=append,
                           environment=env, model=model, type=kind)
    except ConfigError as exc:
        raise YamlError(str(exc), path=w.path, key=w.prefix) from None


def _check_refs(w: Where, key: str, text: str, inputs: Mapping[str, Input], outputs: Mapping[str, Output]) -> None:
    for m in _ANY_REF_RE.finditer(text):
        inner = m.group(1).strip()
        ref = BINDING_RE.fullmatch(m.group(0))
        if ref is None:
            raise w.error(key, f"{m.group(0)!r} is not a binding this job can resolve; expected "
                               "${{inputs.<name>}} or ${{outputs.<name>}} (got " + repr(inner) + ")")
        kind, name = ref.group(1), ref.group(2)
        ports: Mapping[str, Any] = inputs if kind == "inputs" else outputs
        if name not in ports:
            raise w.error(key, f"refers to {kind}.{name}, which is not declared (declared {kind}: "
                               f"{', '.join(ports) or 'none'})")
    for seg in OPTIONAL_SEGMENT_RE.findall(text):
        if not BINDING_RE.search(seg):
            raise w.error(key, f"the optional segment $[[{seg}]] names no ${{{{inputs.x}}}}; it would never be dropped")
