"""JobSpec <-> Azure ML YAML (parallel component schema, contract 3).

This module writes the run record (``<run dir>/job.yml``) in Azure's parallel-component layout.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from prs_nb.spec import JobSpec

PARALLEL_SCHEMA = "https://azuremlschemas.azureedge.net/latest/parallelComponent.schema.json"
_COMPONENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def component_name(name: str) -> str:
    """A valid Azure component name (``^[a-z][a-z0-9_]*$``) for any job name (contract 12)."""
    if _COMPONENT_NAME_RE.match(name):
        return name
    cleaned = re.sub(r"[^a-z0-9_]", "_", name.lower())
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "job_" + cleaned
    return cleaned


def _port(port: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": port.type}
    for key in ("description", "mode"):
        if getattr(port, key, None):
            d[key] = getattr(port, key)
    if getattr(port, "optional", False):
        d["optional"] = True
    if getattr(port, "default", None) is not None:
        d["default"] = port.default
    return d


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    """The parallel component dict of ``spec`` (keys and value types as azure-ai-ml expects)."""
    name = component_name(spec.name)
    d: dict[str, Any] = {"$schema": PARALLEL_SCHEMA, "type": "parallel", "name": name}
    if spec.version:
        d["version"] = str(spec.version)
    if spec.display_name or name != spec.name:
        d["display_name"] = spec.display_name or spec.name
    if spec.description:
        d["description"] = spec.description
    if spec.tags:
        d["tags"] = dict(spec.tags)
    d["is_deterministic"] = bool(spec.is_deterministic)
    if spec.inputs:
        d["inputs"] = {k: _port(v) for k, v in spec.inputs.items()}
    if spec.outputs:
        d["outputs"] = {k: _port(v) for k, v in spec.outputs.items()}
    if spec.input_data:
        d["input_data"] = spec.input_data
    if spec.mini_batch_size is not None:
        d["mini_batch_size"] = str(spec.mini_batch_size)
    if spec.partition_keys:
        d["partition_keys"] = list(spec.partition_keys)
    d["resources"] = {"instance_count": spec.resources.instance_count}
    if spec.resources.instance_type:
        d["resources"]["instance_type"] = spec.resources.instance_type
    if spec.max_concurrency_per_instance is not None:
        d["max_concurrency_per_instance"] = spec.max_concurrency_per_instance
    d["error_threshold"] = spec.error_threshold
    d["mini_batch_error_threshold"] = spec.mini_batch_error_threshold
    d["logging_level"] = spec.logging_level
    rs = spec.retry_settings
    d["retry_settings"] = {"max_retries": rs.max_retries, "timeout": rs.timeout}
    t = spec.task
    task: dict[str, Any] = {"type": t.type}
    if t.code:
        task["code"] = t.code
    if t.entry_script:
        task["entry_script"] = t.entry_script
    if t.program_arguments:
        task["program_arguments"] = t.program_arguments
    if t.append_row_to:
        task["append_row_to"] = t.append_row_to
    if t.model:
        task["model"] = t.model
    env = t.environment
    task["environment"] = env if isinstance(env, (str, dict)) and env else {
        "image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
    }
    d["task"] = task
    return d


def dump_run_record(spec: JobSpec, path: str) -> None:
    """Write ``job.yml`` into a run directory: the component plus prs_nb's local settings."""
    d = spec_to_dict(spec)
    local: dict[str, Any] = {"backend": spec.backend, "ordered_output": spec.ordered_output, "api": spec.api}
    if spec.environment_variables:
        local["environment_variables"] = dict(spec.environment_variables)
    if spec.task.uses_functions:
        local["entry"] = "functions shipped with cloudpickle" + (
            f": {getattr(spec.task.run, '__qualname__', 'run')}" if spec.task.run else "")
    if spec.bindings:
        local["bindings"] = {k: _binding_repr(v) for k, v in spec.bindings.items()}
    if spec.output_bindings:
        local["output_bindings"] = dict(spec.output_bindings)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(d, fh, sort_keys=False)
        fh.write("# prs_nb local run settings (not part of the Azure component):\n")
        yaml.safe_dump({"x-prs_nb": local}, fh, sort_keys=False)


def _binding_repr(v: Any) -> Any:
    if hasattr(v, "columns") and hasattr(v, "shape"):
        return f"<DataFrame {v.shape[0]} rows x {v.shape[1]} columns>"
    if hasattr(v, "path") and hasattr(v, "type"):
        return {"type": v.type, "path": str(v.path)}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)
