"""Form <-> YAML file. Writes Azure's parallel component (``prs_nb.yaml_io.spec_to_dict``) plus an
``x-prs_nb`` block with what a local job also needs (bound input/output paths, environment
variables, local options), and reads both back, so form -> JobSpec -> YAML -> form is the identity."""

from __future__ import annotations

import os
from typing import Any

import yaml

from prs_nb.errors import ConfigError
from prs_nb.spec import Input, JobSpec, Output, Resources, RetrySettings, RunFunction
from prs_nb.yaml_io import spec_to_dict

_LOCAL = ("backend", "runs_root", "ordered_output", "allowed_failed_percent", "append_row_file_name")


def job_dict(spec: JobSpec) -> dict[str, Any]:
    d = spec_to_dict(spec)
    d["name"] = spec.name  # the form keeps the name as typed; Azure's cleaned name is display-only there
    local: dict[str, Any] = {k: getattr(spec, k) for k in _LOCAL}
    if spec.environment_variables:
        local["environment_variables"] = dict(spec.environment_variables)
    binds = {}
    for k, v in spec.bindings.items():
        path = v.path if isinstance(v, Input) else v
        if isinstance(path, (str, os.PathLike)):
            binds[k] = os.fspath(path)
    if binds:
        local["bindings"] = binds
    if spec.output_bindings:
        local["output_bindings"] = dict(spec.output_bindings)
    d["x-prs_nb"] = local
    return d


def dump_job(spec: JobSpec, path: str) -> str:
    """Write ``spec`` as YAML at ``path``; returns the text."""
    text = yaml.safe_dump(job_dict(spec), sort_keys=False)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return text


def load_job(path: str) -> JobSpec:
    """Read a YAML file written by :func:`dump_job` (or a plain Azure parallel component)."""
    try:
        with open(path, encoding="utf-8") as fh:
            d = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read job YAML {path!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path!r} is not valid YAML: {exc}") from None
    if not isinstance(d, dict) or d.get("type") != "parallel":
        raise ConfigError(f"{path!r} is not a parallel job YAML (expected a mapping with type: parallel)")
    local = d.get("x-prs_nb") or {}
    task = d.get("task") or {}
    inputs = {k: Input(type=v.get("type", "uri_folder"), default=v.get("default"), optional=bool(v.get("optional")),
                       description=v.get("description"), mode=v.get("mode"))
              for k, v in (d.get("inputs") or {}).items()}
    outputs = {k: Output(type=v.get("type", "uri_folder"), description=v.get("description"), mode=v.get("mode"))
               for k, v in (d.get("outputs") or {}).items()}
    binds = {k: Input(type=inputs[k].type, path=v) if k in inputs else v
             for k, v in (local.get("bindings") or {}).items()}
    res = d.get("resources") or {}
    rs = d.get("retry_settings") or {}
    kw: dict[str, Any] = {k: local[k] for k in _LOCAL if k in local}
    return JobSpec(
        name=d["name"], display_name=d.get("display_name") if d.get("display_name") != d["name"] else None,
        description=d.get("description"), version=d.get("version"), tags=d.get("tags") or {},
        is_deterministic=d.get("is_deterministic", True), inputs=inputs, outputs=outputs,
        input_data=d.get("input_data"), mini_batch_size=d.get("mini_batch_size"),
        partition_keys=tuple(d["partition_keys"]) if d.get("partition_keys") else None,
        resources=Resources(instance_count=int(res.get("instance_count", 1)), instance_type=res.get("instance_type")),
        max_concurrency_per_instance=d.get("max_concurrency_per_instance"),
        error_threshold=d.get("error_threshold", -1), mini_batch_error_threshold=d.get("mini_batch_error_threshold", -1),
        logging_level=d.get("logging_level", "INFO"),
        retry_settings=RetrySettings(max_retries=rs.get("max_retries", 2), timeout=rs.get("timeout", 60)),
        task=RunFunction(code=task.get("code"), entry_script=task.get("entry_script"),
                         program_arguments=task.get("program_arguments"), append_row_to=task.get("append_row_to"),
                         model=task.get("model")),
        environment_variables=local.get("environment_variables") or {}, bindings=binds,
        output_bindings=local.get("output_bindings") or {}, **kw,
    )
