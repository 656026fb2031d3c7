"""JobSpec -> Azure ML YAML (contract 3): a ``type: parallel`` component, or a ``type: pipeline`` job.

::

    job.to_yaml("score.yml")
      unbound job  -> score.yml: type: parallel component            (azure: load_component)
      bound job    -> score.yml: type: pipeline job, inputs bound to local paths, one parallel node
                      whose component is inline                     (azure: load_job)
      functions    -> <code folder>/<name>_entry.py written from their source (entry_writer)
      no environment given -> score.conda.yml from this interpreter (conda), with a base image
      a DataFrame input    -> score_data/<input>/ (data.parquet + an MLTable file), bound in direct mode

Paths in the file (``task.code``, data paths, ``conda_file``) are written relative to the YAML file,
as Azure resolves them. Settings Azure has no key for (``backend``, ``allowed_failed_percent`` ...)
go under a ``prs_nb:`` key, which Azure drops and :func:`prs_nb.load` reads back, so
``load(to_yaml(job))`` gives the same JobSpec (paths made absolute).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

import yaml

from prs_nb.errors import ConfigError
from prs_nb.spec import JobSpec, RunFunction
from prs_nb.yaml_io import component_name

PARALLEL_SCHEMA = "https://azuremlschemas.azureedge.net/latest/parallelComponent.schema.json"
PIPELINE_SCHEMA = "https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json"
EXTENSION_KEY = "prs_nb"
# written as the pipeline's settings.default_compute (Azure requires one; edit it to your cluster)
DEFAULT_COMPUTE = "azureml:cpu-cluster"
RESOURCE_KEYS_IN_PROPERTIES = ("max_instance_count", "locations")
_LOCAL_DEFAULTS: dict[str, Any] = {
    "backend": "local", "runs_root": "prs_runs", "ordered_output": False, "allowed_failed_percent": 100.0,
    "append_row_file_name": None, "output_action": None, "api": "v2",
}


def is_remote(path: str) -> bool:
    return "://" in path or path.startswith(("azureml:", "git+"))


def rel_path(path: str, yaml_dir: str, base_dir: str) -> str:
    """``path`` (absolute, or relative to ``base_dir``) as written in a YAML file in ``yaml_dir``."""
    if is_remote(path):
        return path
    absolute = os.path.abspath(os.path.join(base_dir, path))
    rel = os.path.relpath(absolute, yaml_dir)
    if rel == ".":
        return "."
    return rel if rel.startswith("..") else "./" + rel


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def port_dict(port: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": port.type}
    if getattr(port, "description", None) is not None:
        d["description"] = port.description
    if getattr(port, "optional", False):
        d["optional"] = True
    if getattr(port, "default", None) is not None:
        d["default"] = port.default
    if getattr(port, "mode", None) is not None:
        d["mode"] = port.mode
    return d


def is_bound(spec: JobSpec) -> bool:
    """Does the job carry input values or output paths (then it exports as a pipeline job)?"""
    return bool(spec.bindings or spec.output_bindings or any(p.path is not None for p in spec.inputs.values())
                or any(o.path is not None for o in spec.outputs.values()))


def environment_entry(env: Any, yaml_dir: str, base_dir: str) -> Any:
    """``task.environment`` as written: a reference string, or an inline dict with paths made relative."""
    if isinstance(env, str):
        if not is_remote(env) and env.endswith((".yml", ".yaml")) and os.path.isfile(os.path.join(base_dir, env)):
            return {"image": _default_image(), "conda_file": rel_path(env, yaml_dir, base_dir)}
        return env
    if isinstance(env, Mapping):
        out = dict(env)
        if isinstance(out.get("conda_file"), str):
            out["conda_file"] = rel_path(out["conda_file"], yaml_dir, base_dir)
        build = out.get("build")
        if isinstance(build, Mapping) and isinstance(build.get("path"), str):
            out["build"] = {**build, "path": rel_path(build["path"], yaml_dir, base_dir)}
        return out
    image = getattr(env, "image", None)
    conda = getattr(env, "conda_file", None)
    if image or conda:  # an azure.ai.ml Environment object
        out = {}
        if image:
            out["image"] = image
        if isinstance(conda, str):
            out["conda_file"] = rel_path(conda, yaml_dir, base_dir)
        elif isinstance(conda, Mapping):
            out["conda_file"] = dict(conda)
        return out
    raise ConfigError(
        "task environment must be a reference such as 'azureml:my-env:1', a path to a conda .yml file, or a dict "
        f"with image / conda_file (got {type(env).__name__})"
    )


def _default_image() -> str:
    from prs_nb.yamlio.conda import DEFAULT_IMAGE

    return DEFAULT_IMAGE


def component_dict(spec: JobSpec, *, yaml_dir: str, base_dir: str, task: Mapping[str, Any] | None = None,
                   node_level_in_extension: bool = True) -> dict[str, Any]:
    """The parallel component dict of ``spec`` (keys and value types as azure-ai-ml expects).

    ``task`` replaces the task section (the export writes files first); otherwise the spec's task is
    written with its code path made relative to ``yaml_dir``. ``node_level_in_extension`` puts the
    settings Azure keeps on a pipeline node (environment_variables, compute, identity, experiment_name)
    under ``prs_nb:`` - used for a standalone component file.
    """
    name = component_name(spec.name)
    d: dict[str, Any] = {"$schema": PARALLEL_SCHEMA, "type": "parallel", "name": name}
    if spec.version is not None:
        d["version"] = str(spec.version)
    if spec.display_name is not None or name != spec.name:
        d["display_name"] = spec.display_name if spec.display_name is not None else spec.name
    if spec.description is not None:
        d["description"] = spec.description
    if spec.tags:
        d["tags"] = dict(spec.tags)
    if spec.properties:
        d["properties"] = dict(spec.properties)
    d["is_deterministic"] = bool(spec.is_deterministic)
    if spec.inputs:
        d["inputs"] = {k: port_dict(v) for k, v in spec.inputs.items()}
    if spec.outputs:
        d["outputs"] = {k: port_dict(v) for k, v in spec.outputs.items()}
    if spec.input_data is not None:
        d["input_data"] = spec.input_data
    if spec.mini_batch_size is not None:
        d["mini_batch_size"] = str(spec.mini_batch_size)
    if spec.partition_keys:
        d["partition_keys"] = list(spec.partition_keys)
    r = spec.resources
    res: dict[str, Any] = {"instance_count": r.instance_count}
    if r.instance_type is not None:
        res["instance_type"] = r.instance_type
    props = dict(r.properties or {})
    # Azure resource keys JobSpec's Resources keeps among its properties: written back in their place
    lifted = {k: props.pop(k) for k in RESOURCE_KEYS_IN_PROPERTIES if k in props}
    if props:
        res["properties"] = props
    if r.shm_size is not None:
        res["shm_size"] = r.shm_size
    if r.docker_args is not None:
        res["docker_args"] = list(r.docker_args) if isinstance(r.docker_args, (list, tuple)) else r.docker_args
    res.update(lifted)
    d["resources"] = res
    if spec.max_concurrency_per_instance is not None:
        d["max_concurrency_per_instance"] = spec.max_concurrency_per_instance
    d["error_threshold"] = spec.error_threshold
    d["mini_batch_error_threshold"] = spec.mini_batch_error_threshold
    d["logging_level"] = spec.logging_level.upper()
    rs = spec.retry_settings
    d["retry_settings"] = {"max_retries": rs.max_retries, "timeout": math.ceil(rs.timeout)}
    ext: dict[str, Any] = {}
    if not float(rs.timeout).is_integer():
        # Azure takes whole seconds (it would truncate 0.5 to 0); keep the exact local value for load()
        ext["timeout"] = rs.timeout
    if task is None:
        task = task_dict(spec.task, yaml_dir=yaml_dir, base_dir=base_dir)
    task = dict(task)
    pct = spec.allowed_failed_percent
    if pct != 100:
        # Azure knows it only as a program argument; the prs_nb key lets load() put it back where it was
        ext["allowed_failed_percent"] = _number(pct)
        if "--allowed_failed_percent" not in (spec.task.program_arguments or ""):
            args = task.get("program_arguments")
            task["program_arguments"] = (args + " " if args else "") + f"--allowed_failed_percent {_number(pct)}"
            ext["allowed_failed_percent_argument"] = True
    d["task"] = task
    for key, default in _LOCAL_DEFAULTS.items():
        value = getattr(spec, key)
        if key != "allowed_failed_percent" and value != default:
            ext[key] = value
    if name != spec.name:
        ext["name"] = spec.name
        if spec.display_name is None:
            ext["display_name"] = None
    if node_level_in_extension:
        if spec.environment_variables:
            ext["environment_variables"] = dict(spec.environment_variables)
        if spec.compute is not None:
            ext["compute"] = spec.compute
        if spec.identity is not None:
            ext["identity"] = identity_entry(spec.identity)
        if spec.experiment_name is not None:
            ext["experiment_name"] = spec.experiment_name
    if ext:
        d[EXTENSION_KEY] = ext
    return d


def identity_entry(identity: Any) -> Any:
    if isinstance(identity, (str, Mapping)):
        return dict(identity) if isinstance(identity, Mapping) else identity
    kind = getattr(identity, "type", None)
    if isinstance(kind, str):
        return {"type": kind}
    raise ConfigError(f"identity must be a dict such as {{'type': 'user_identity'}} (got {type(identity).__name__})")


def task_dict(t: RunFunction, *, yaml_dir: str, base_dir: str, code: str | None = None,
              entry_script: str | None = None, environment: Any = None) -> dict[str, Any]:
    task: dict[str, Any] = {"type": t.type}
    code_path = code if code is not None else t.code
    if code_path is not None:
        task["code"] = rel_path(code_path, yaml_dir, base_dir)
    script = entry_script if entry_script is not None else t.entry_script
    if script is not None:
        task["entry_script"] = script
    if t.program_arguments is not None:
        task["program_arguments"] = t.program_arguments
    if t.append_row_to is not None:
        task["append_row_to"] = t.append_row_to
    if t.model is not None:
        task["model"] = t.model
    env = environment if environment is not None else t.environment
    if env is not None:
        task["environment"] = environment_entry(env, yaml_dir, base_dir)
    return task


# ---------------------------------------------------------------------------------------------- files
def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def dump_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def prepare_task(spec: JobSpec, path: str, *, code_dir: str | None, environment: Any,
                 base_dir: str) -> dict[str, Any]:
    """Write the entry script (for functions) and the conda file (when no environment is given) next to
    ``path``; return the task dict for the YAML file."""
    from prs_nb.yamlio.conda import DEFAULT_IMAGE, code_folder_modules, conda_environment
    from prs_nb.yamlio.entry_writer import entry_script_source, imported_modules

    yaml_dir = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    t = spec.task
    cname = component_name(spec.name)
    modules: list[str] = []
    code: str | None = None
    script: str | None = None
    if t.uses_functions:
        text = entry_script_source(t)
        if code_dir is not None:
            code = os.path.abspath(os.path.join(base_dir, code_dir))
        elif t.code is not None:
            code = os.path.abspath(os.path.join(base_dir, t.code))
        else:
            code = os.path.join(yaml_dir, f"{stem}_src")
        script = f"{cname}_entry.py"
        _write_text(os.path.join(code, script), text)
        modules = imported_modules(text) + (code_folder_modules(code) if t.code else [])
    else:
        if not t.entry_script:
            raise ConfigError("the job has no entry: give RunFunction(code=..., entry_script='score.py') or "
                              "RunFunction(run=fn) before exporting it")
        source = os.path.abspath(os.path.join(base_dir, t.code or "."))
        code = source
        if code_dir is not None:
            code = os.path.abspath(os.path.join(base_dir, code_dir))
            if code != source:
                shutil.copytree(source, code, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        if environment is None and t.environment is None and os.path.isdir(code):
            modules = code_folder_modules(code)
    env = environment if environment is not None else t.environment
    if env is None:
        conda_path = os.path.join(yaml_dir, f"{stem}.conda.yml")
        _write_text(conda_path, dump_yaml(conda_environment(f"{cname}-env", modules)))
        env = {"image": DEFAULT_IMAGE, "conda_file": conda_path}
    return task_dict(t, yaml_dir=yaml_dir, base_dir=base_dir, code=code, entry_script=script, environment=env)


def _write_frame(df: Any, folder: str) -> None:
    """A DataFrame as an MLTable folder Azure reads (``data.parquet`` + ``MLTable`` with read_parquet)."""
    os.makedirs(folder, exist_ok=True)
    df.to_parquet(os.path.join(folder, "data.parquet"), index=False)
    mltable = {"$schema": "https://azuremlschemas.azureedge.net/latest/MLTable.schema.json", "type": "mltable",
               "paths": [{"file": "./data.parquet"}], "transformations": [{"read_parquet": {}}]}
    _write_text(os.path.join(folder, "MLTable"), dump_yaml(mltable))


def _input_value(spec: JobSpec, name: str, value: Any, yaml_dir: str, base_dir: str,
                 data_dir: str | None = None) -> Any:
    port = spec.inputs[name]
    from prs_nb.spec import Input

    if isinstance(value, Input):
        if value.is_literal or port.is_literal:
            return value.default if value.path is None else value.path
        d: dict[str, Any] = {"type": value.type}
        if value.path is not None:
            d["path"] = rel_path(os.fspath(value.path), yaml_dir, base_dir)
        if value.mode:
            d["mode"] = value.mode
        return d
    if port.is_literal:
        if isinstance(value, (bool, int, float, str)):
            return value
        raise ConfigError(f"input {name!r} is a {port.type} but is bound to a {type(value).__name__}")
    if hasattr(value, "columns") and hasattr(value, "iloc"):
        if data_dir is None:
            raise ConfigError(
                f"input {name!r} is bound to a DataFrame, which is written as an MLTable folder next to the YAML "
                "file: give to_yaml a path"
            )
        folder = os.path.join(data_dir, name)
        _write_frame(value, folder)
        return {"type": "mltable", "path": rel_path(folder, yaml_dir, base_dir), "mode": "direct"}
    if isinstance(value, (str, os.PathLike)):
        d = {"type": port.type, "path": rel_path(os.fspath(value), yaml_dir, base_dir)}
        if port.mode:
            d["mode"] = port.mode
        return d
    raise ConfigError(f"input {name!r} is bound to a {type(value).__name__}; export needs a path or an Input")


def pipeline_dict(spec: JobSpec, component: dict[str, Any], *, yaml_dir: str, base_dir: str,
                  data_dir: str | None = None) -> dict[str, Any]:
    """A one-node pipeline job around ``component`` with the job's bound inputs and output paths."""
    comp = {k: v for k, v in component.items() if k != "$schema"}
    node_name = comp["name"]
    d: dict[str, Any] = {"$schema": PIPELINE_SCHEMA, "type": "pipeline",
                         "display_name": spec.display_name if spec.display_name is not None else spec.name}
    if spec.experiment_name is not None:
        d["experiment_name"] = spec.experiment_name
    # Azure needs a compute to submit the job; the node's compute wins over this default
    d["settings"] = {"default_compute": DEFAULT_COMPUTE}
    p_inputs: dict[str, Any] = {}
    n_inputs: dict[str, Any] = {}
    for name, port in spec.inputs.items():
        value = spec.bindings.get(name)
        if value is None and port.path is not None:
            value = port.path
        if value is None:
            if not port.optional and port.default is None:
                raise ConfigError(
                    f"input {name!r} of job {spec.name!r} has no value: Azure ML rejects a pipeline job whose "
                    "required input is not bound. Bind it (job(name=...)), give it a default, or declare "
                    "Input(..., optional=True)"
                )
            continue
        p_inputs[name] = _input_value(spec, name, value, yaml_dir, base_dir, data_dir)
        n_inputs[name] = "${{parent.inputs." + name + "}}"
    p_outputs: dict[str, Any] = {}
    n_outputs: dict[str, Any] = {}
    for name, oport in spec.outputs.items():
        out_path = spec.output_bindings.get(name) or oport.path
        if out_path is None:
            continue
        od: dict[str, Any] = {"type": oport.type, "path": rel_path(os.fspath(out_path), yaml_dir, base_dir)}
        if oport.mode:
            od["mode"] = oport.mode
        p_outputs[name] = od
        n_outputs[name] = "${{parent.outputs." + name + "}}"
    if p_inputs:
        d["inputs"] = p_inputs
    if p_outputs:
        d["outputs"] = p_outputs
    node: dict[str, Any] = {"type": "parallel"}
    if n_inputs:
        node["inputs"] = n_inputs
    if n_outputs:
        node["outputs"] = n_outputs
    if spec.environment_variables:
        node["environment_variables"] = dict(spec.environment_variables)
    if spec.compute is not None:
        node["compute"] = spec.compute
    if spec.identity is not None:
        node["identity"] = identity_entry(spec.identity)
    # the component's ports are the interface; a port's path is a value, bound above
    for key in ("inputs", "outputs"):
        for port_d in comp.get(key, {}).values():
            port_d.pop("path", None)
    node["component"] = comp
    d["jobs"] = {node_name: node}
    return d


def job_to_yaml(spec: JobSpec, path: str | os.PathLike[str], *, code_dir: str | None = None,
                environment: Any = None, base_dir: str | None = None) -> str:
    """Write ``spec`` as Azure ML YAML to ``path`` and return the text (see the module docstring).

    ``code_dir`` (default: the task's code folder, or ``<stem>_src`` next to the file for functions)
    receives the entry script written from notebook functions; for a script job it is a folder the
    code is copied to. ``environment`` (default: the task's, else a conda file generated from this
    interpreter) is a reference string, a conda file path or a dict. ``base_dir`` (default: the working
    directory) is what relative paths in the job are relative to.
    """
    path = os.fspath(path)
    base = os.path.abspath(base_dir or os.getcwd())
    yaml_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(yaml_dir, exist_ok=True)
    task = prepare_task(spec, path, code_dir=code_dir, environment=environment, base_dir=base)
    bound = is_bound(spec)
    comp = component_dict(spec, yaml_dir=yaml_dir, base_dir=base, task=task, node_level_in_extension=not bound)
    stem = os.path.splitext(os.path.basename(path))[0]
    doc = pipeline_dict(spec, comp, yaml_dir=yaml_dir, base_dir=base,
                        data_dir=os.path.join(yaml_dir, f"{stem}_data")) if bound else comp
    text = dump_yaml(doc)
    _write_text(os.path.abspath(path), text)
    return text


def job_text(spec: JobSpec, *, base_dir: str | None = None) -> str:
    """What :func:`job_to_yaml` would write to a file in ``base_dir`` (default: the working directory),
    without writing anything: the task's own code folder and environment are used as they are."""
    if spec.task.uses_functions:
        raise ConfigError("a job of notebook functions exports with a path, e.g. job.to_yaml('score.yml'): its "
                          "entry script is written next to it")
    base = os.path.abspath(base_dir or os.getcwd())
    bound = is_bound(spec)
    comp = component_dict(spec, yaml_dir=base, base_dir=base, node_level_in_extension=not bound)
    return dump_yaml(pipeline_dict(spec, comp, yaml_dir=base, base_dir=base) if bound else comp)
