"""Azure ML pipeline job YAML <-> :class:`prs_nb.pipeline.PipelineJob`.

Reading: ``jobs:`` of ``type: parallel`` (a ``component:`` reference - ``file:./c.yml``, ``./c.yml`` or an
inline mapping - or the component keys inline in the node; node settings win over the component's)
and ``type: command`` (``command:``, ``code``, ``environment_variables``, ``limits.timeout``, or a
command ``component:`` file). Node inputs are ``${{parent.inputs.x}}``, ``${{parent.jobs.a.outputs.b}}``,
literal data specs (``{type, path, mode}``) or literal values; node outputs ``${{parent.outputs.y}}``
or ``{type, path}``. ``${{parent.inputs.x}}`` in a node setting (``mini_batch_size``,
``retry_settings.timeout``, ``resources.instance_count`` ...) takes the pipeline input's value.
Paths are relative to the file that holds them. Writing puts every node inline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from prs_nb.errors import ConfigError
from prs_nb.pipeline import CommandNode, JobOutput, Node, ParallelNode, ParentInput, ParentOutput, PipelineJob
from prs_nb.spec import (
    BINDING_RE,
    INPUT_TYPES,
    LITERAL_TYPES,
    OUTPUT_TYPES,
    Input,
    Output,
    literal_type,
)
from prs_nb.yaml_io import component_name
from prs_nb.yamlio.export import (
    EXTENSION_KEY,
    PIPELINE_SCHEMA,
    component_dict,
    dump_yaml,
    environment_entry,
    identity_entry,
    is_remote,
    rel_path,
)
from prs_nb.yamlio.load import (
    COMPONENT_KEYS,
    NODE_KEYS,
    _env_vars,
    _expect,
    _mapping,
    _opt_str,
    input_port,
    output_port,
    read_yaml,
    resolve_path,
    spec_from_component,
)
from prs_nb.yamlio.problems import Where, YamlError, type_name

PIPELINE_KEYS = ("$schema", "type", "name", "display_name", "description", "experiment_name", "tags",
                 "properties", "inputs", "outputs", "settings", "jobs", "compute", "identity")
SETTINGS_KEYS = ("default_compute", "default_datastore", "continue_on_step_failure", "force_rerun",
                 "default_environment", "on_init", "on_finalize")
COMMAND_KEYS = ("type", "command", "code", "environment", "inputs", "outputs", "environment_variables", "compute",
                "resources", "limits", "distribution", "services", "display_name", "description", "tags", "name",
                "component", "identity", "properties", "experiment_name", "queue_settings", "is_deterministic")
_RECORDED_COMMAND_KEYS = ("distribution", "services", "tags", "identity", "properties", "queue_settings",
                          "is_deterministic", "experiment_name")
_PARENT_IN = re.compile(r"^\$\{\{\s*parent\.inputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_PARENT_OUT = re.compile(r"^\$\{\{\s*parent\.outputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_JOB_OUT = re.compile(r"^\$\{\{\s*parent\.jobs\.([A-Za-z_][A-Za-z0-9_]*)\.outputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_ANY_REF = re.compile(r"\$\{\{(.*?)\}\}")
_NODE_SETTING_KEYS = tuple(k for k in COMPONENT_KEYS if k not in ("$schema", "type", "name", "version", "inputs",
                                                                  "outputs"))


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


# ---------------------------------------------------------------------------------------------- reading
def pipeline_from_dict(doc: Mapping[str, Any], path: str) -> PipelineJob:
    """A PipelineJob from the dict of pipeline YAML file ``path`` (see the module docstring)."""
    where = Where(path)
    base = os.path.dirname(os.path.abspath(path))
    where.unknown(doc, PIPELINE_KEYS, "a pipeline job")
    settings = _mapping(where, "settings", doc.get("settings") or {})
    where.sub("settings").unknown(settings, SETTINGS_KEYS, "settings")
    if "continue_on_step_failure" in settings:
        _expect(where.sub("settings"), "continue_on_step_failure", settings["continue_on_step_failure"], (bool,),
                "true or false")
    inputs = {str(k): _pipeline_input(where.sub("inputs"), str(k), v, base)
              for k, v in _mapping(where, "inputs", doc.get("inputs") or {}).items()}
    outputs = {str(k): output_port(where.sub("outputs"), str(k), v if v is not None else {}, base)
               for k, v in _mapping(where, "outputs", doc.get("outputs") or {}).items()}
    jobs_d = _mapping(where, "jobs", doc.get("jobs"))
    if not jobs_d:
        raise where.error("jobs", "a pipeline job needs at least one job under jobs:")
    jobs: dict[str, Node] = {}
    for name, node_d in jobs_d.items():
        name = str(name)
        w = where.sub("jobs", name)
        nd = _mapping(where.sub("jobs"), name, node_d)
        kind = nd.get("type")
        if kind is None and isinstance(nd.get("component"), str):
            kind = _component_type(w, nd["component"], base)
        if kind == "parallel":
            jobs[name] = _parallel_node(w, name, nd, base, inputs, outputs, jobs)
        elif kind == "command":
            jobs[name] = _command_node(w, name, nd, base, inputs, outputs)
        else:
            raise w.error("type", f"prs_nb runs parallel and command jobs locally; expected type: parallel or "
                                  f"type: command, got {kind!r}")
    compute = doc.get("compute")
    if compute is not None:
        _expect(where, "compute", compute, (str,), "a compute name")
    try:
        return PipelineJob(
            display_name=_first(_opt_str(where, doc, "display_name"), _opt_str(where, doc, "name")),
            description=_opt_str(where, doc, "description"),
            experiment_name=_opt_str(where, doc, "experiment_name"),
            tags=_mapping(where, "tags", doc.get("tags") or {}),
            properties=_mapping(where, "properties", doc.get("properties") or {}),
            inputs=inputs, outputs=outputs, settings=settings, compute=compute, jobs=jobs, source=path,
        )
    except ConfigError as exc:
        raise YamlError(str(exc), path=path, key="jobs") from None


def _pipeline_input(w: Where, name: str, value: Any, base: str) -> Input:
    if isinstance(value, (bool, int, float, str)):
        if isinstance(value, str) and _ANY_REF.search(value):
            raise w.error(name, f"a pipeline input cannot be a binding (got {value!r})")
        return Input(type=literal_type(value), default=value)
    d = _mapping(w, name, value)
    if d.get("type") in LITERAL_TYPES and "default" not in d and "value" in d:
        d = {**{k: v for k, v in d.items() if k != "value"}, "default": d["value"]}
    if "type" not in d and "path" in d:
        d = {**d, "type": "uri_folder"}
    return input_port(w, name, d, base)


def _component_type(w: Where, ref: str, base: str) -> str | None:
    path = _component_path(w, ref, base)
    return read_yaml(path).get("type")


def _component_path(w: Where, ref: str, base: str) -> str:
    if ref.startswith("azureml:") or "://" in ref:
        raise w.error("component", f"{ref!r} is a registered component; prs_nb runs local component files: write "
                                   "component: file:./my_component.yml")
    rel = ref[len("file:"):] if ref.startswith("file:") else ref
    path = os.path.abspath(os.path.join(base, rel))
    if not os.path.isfile(path):
        raise w.error("component", f"component file not found: {ref!r} (looked in {path}); a component: file: "
                                   "path is relative to the YAML file that names it")
    return path


def _binding(w: Where, key: str, value: Any, base: str, p_inputs: Mapping[str, Input]) -> Any:
    """A node input value: ParentInput, JobOutput, Input (data spec) or a literal."""
    if isinstance(value, str):
        m = _PARENT_IN.match(value)
        if m:
            if m.group(1) not in p_inputs:
                raise w.error(key, f"refers to parent.inputs.{m.group(1)}, which the pipeline does not declare "
                                   f"(pipeline inputs: {', '.join(p_inputs) or 'none'})")
            return ParentInput(m.group(1))
        m = _JOB_OUT.match(value)
        if m:
            return JobOutput(m.group(1), m.group(2))
        if _ANY_REF.search(value):
            raise w.error(key, f"expected ${{{{parent.inputs.<name>}}}} or ${{{{parent.jobs.<job>.outputs.<name>}}}}, "
                               f"got {value!r}")
        return value
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        d = dict(value)
        if isinstance(d.get("path"), str) and _ANY_REF.search(d["path"]):
            return _binding(w, key, d["path"], base, p_inputs)  # {path: ${{parent...}}, mode: ...}
        if "type" not in d:
            d["type"] = "uri_folder"
        if d["type"] in LITERAL_TYPES and "value" in d:
            return d["value"]
        return input_port(w, key, d, base)
    raise w.error(key, f"expected a binding, a literal or a data spec {{type, path}}, got {type_name(value)}")


def _out_binding(w: Where, key: str, value: Any, base: str, p_outputs: Mapping[str, Output]) -> Any:
    if isinstance(value, str):
        m = _PARENT_OUT.match(value)
        if not m:
            raise w.error(key, f"expected ${{{{parent.outputs.<name>}}}} or {{type, path}}, got {value!r}")
        if m.group(1) not in p_outputs:
            raise w.error(key, f"refers to parent.outputs.{m.group(1)}, which the pipeline does not declare "
                               f"(pipeline outputs: {', '.join(p_outputs) or 'none'})")
        return ParentOutput(m.group(1))
    if value is None:
        return Output()
    return output_port(w, key, value, base)


def _resolve_settings(w: Where, value: Any, p_inputs: Mapping[str, Input], key: str) -> Any:
    """``${{parent.inputs.x}}`` in a node setting -> the pipeline input's literal value."""
    if isinstance(value, str):
        m = _PARENT_IN.match(value.strip())
        if m:
            port = p_inputs.get(m.group(1))
            if port is None:
                raise w.error(key, f"refers to parent.inputs.{m.group(1)}, which the pipeline does not declare")
            if not port.is_literal or port.default is None:
                raise w.error(key, f"refers to parent.inputs.{m.group(1)}, which has no literal value (a "
                                   f"{port.type} input); a setting needs a value such as 10 or \"10\"")
            v = port.default
            return str(v) if key.endswith("mini_batch_size") else v
        return value
    if isinstance(value, Mapping):
        return {k: _resolve_settings(w, v, p_inputs, f"{key}.{k}") for k, v in value.items()}
    return value


def _parallel_node(w: Where, name: str, nd: dict[str, Any], base: str, p_inputs: Mapping[str, Input],
                   p_outputs: Mapping[str, Output], done: Mapping[str, Node]) -> ParallelNode:
    node_keys = set(_NODE_SETTING_KEYS) | set(NODE_KEYS) | {"type", "inputs", "outputs", "name", "display_name",
                                                             "description", "tags", "properties"}
    w.unknown(nd, node_keys, "a parallel node")
    n_inputs = {str(k): _binding(w.sub("inputs"), str(k), v, base, p_inputs)
                for k, v in _mapping(w, "inputs", nd.get("inputs") or {}).items()}
    n_outputs = {str(k): _out_binding(w.sub("outputs"), str(k), v, base, p_outputs)
                 for k, v in _mapping(w, "outputs", nd.get("outputs") or {}).items()}
    overrides = {k: _resolve_settings(w, nd[k], p_inputs, k) for k in _NODE_SETTING_KEYS if k in nd}
    for k in ("compute", "environment_variables", "identity"):
        if k in nd:
            overrides[k] = _resolve_settings(w, nd[k], p_inputs, k)
    comp = nd.get("component")
    ref: str | None = None
    if comp is None:
        # the component is the node itself: its ports come from the values bound to it
        comp_d: dict[str, Any] = {"type": "parallel", "name": name}
        comp_d["inputs"] = {k: _infer_port(v, p_inputs, done) for k, v in n_inputs.items()}
        comp_d["outputs"] = {k: _infer_out_port(v, p_outputs) for k, v in n_outputs.items()}
        comp_where, comp_base = w, base
    elif isinstance(comp, str):
        ref = comp
        comp_path = _component_path(w, comp, base)
        comp_d = read_yaml(comp_path)
        if comp_d.get("type") != "parallel":
            raise w.error("component", f"{comp!r} is a type: {comp_d.get('type')!r} component; a parallel node "
                                       "needs a type: parallel component")
        comp_where, comp_base = Where(comp_path), os.path.dirname(comp_path)
    elif isinstance(comp, Mapping):
        comp_d = dict(comp)
        comp_d.setdefault("type", "parallel")
        comp_where, comp_base = w.sub("component"), base
    else:
        raise w.error("component", f"expected file:<path> or an inline component mapping, got {type_name(comp)}")
    if comp is None:
        spec = spec_from_component({**comp_d, **overrides}, w, base, node=True, default_name=component_name(name))
    else:
        # the component alone must be valid (errors name its own file and keys) ...
        spec = spec_from_component(comp_d, comp_where, comp_base, default_name=component_name(name))
        if overrides:
            # ... then the node's settings win (contract 1.5); resources / retry_settings / task merge by key
            merged = dict(comp_d)
            for k, v in overrides.items():
                if k in ("resources", "retry_settings", "task", EXTENSION_KEY) and isinstance(v, Mapping) \
                        and isinstance(merged.get(k), Mapping):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            spec = spec_from_component(merged, w, comp_base, node=True, default_name=component_name(name),
                                       check_unknown=False)
    for k in n_inputs:
        if k not in spec.inputs:
            raise w.error(f"inputs.{k}", f"the component has no input {k!r} (inputs: {', '.join(spec.inputs) or 'none'})")
    missing = [k for k, port in spec.inputs.items()
               if k not in n_inputs and not port.optional and port.default is None and port.path is None]
    if missing:
        raise w.error("inputs", f"the component's required input(s) {', '.join(missing)} are not bound (Azure ML "
                                "rejects this too): bind each to ${{parent.inputs.<name>}}, another job's output or "
                                "a {type, path} value")
    for k in n_outputs:
        if k not in spec.outputs:
            raise w.error(f"outputs.{k}", f"the component has no output {k!r} (outputs: "
                                          f"{', '.join(spec.outputs) or 'none'})")
    return ParallelNode(name=name, spec=spec, inputs=n_inputs, outputs=n_outputs, component_ref=ref)


def _infer_port(value: Any, p_inputs: Mapping[str, Input], done: Mapping[str, Node]) -> dict[str, Any]:
    if isinstance(value, ParentInput):
        port = p_inputs[value.name]
        return {"type": port.type}
    if isinstance(value, JobOutput):
        producer = done.get(value.job)
        return {"type": producer.output_type(value.output) if producer is not None else "uri_folder"}
    if isinstance(value, Input):
        return {"type": value.type}
    return {"type": literal_type(value)}


def _infer_out_port(value: Any, p_outputs: Mapping[str, Output]) -> dict[str, Any]:
    if isinstance(value, ParentOutput):
        return {"type": p_outputs[value.name].type}
    return {"type": getattr(value, "type", "uri_folder")}


def _command_node(w: Where, name: str, nd: dict[str, Any], base: str, p_inputs: Mapping[str, Input],
                  p_outputs: Mapping[str, Output]) -> CommandNode:
    w.unknown(nd, COMMAND_KEYS, "a command node")
    comp = nd.get("component")
    comp_d: dict[str, Any] = {}
    comp_base = base
    comp_where = w
    if comp is not None:
        if isinstance(comp, str):
            comp_path = _component_path(w, comp, base)
            comp_d = read_yaml(comp_path)
            comp_base, comp_where = os.path.dirname(comp_path), Where(comp_path)
        else:
            comp_d = _mapping(w, "component", comp)
            comp_where = w.sub("component")
        if comp_d.get("type", "command") != "command":
            raise w.error("component", f"a command node needs a type: command component, got {comp_d.get('type')!r}")
        comp_where.unknown(comp_d, COMMAND_KEYS + ("$schema", "version"), "a command component")
    command = nd.get("command", comp_d.get("command"))
    if not isinstance(command, str) or not command.strip():
        raise w.error("command", f"expected the shell command to run, got {type_name(command)} {command!r}")
    # inputs: component ports (defaults) overlaid with the node's values
    ports = {str(k): input_port(comp_where.sub("inputs"), str(k), v, comp_base)
             for k, v in _mapping(comp_where, "inputs", comp_d.get("inputs") or {}).items()}
    n_inputs: dict[str, Any] = {}
    for k, port in ports.items():
        if port.default is not None:
            n_inputs[k] = port.default
        elif port.path is not None:
            n_inputs[k] = Input(type=port.type, path=port.path)
    for k, v in _mapping(w, "inputs", nd.get("inputs") or {}).items():
        n_inputs[str(k)] = _binding(w.sub("inputs"), str(k), v, base, p_inputs)
    out_types = {str(k): output_port(comp_where.sub("outputs"), str(k), v if v is not None else {}, comp_base).type
                 for k, v in _mapping(comp_where, "outputs", comp_d.get("outputs") or {}).items()}
    n_outputs: dict[str, Any] = {}
    for k, v in _mapping(w, "outputs", nd.get("outputs") or {}).items():
        b = _out_binding(w.sub("outputs"), str(k), v, base, p_outputs)
        if isinstance(b, Output):
            out_types.setdefault(str(k), b.type)
            if b.path is None and b.mode is None and b.description is None:
                continue  # only declares the output (and its type): it gets a folder in the run directory
        n_outputs[str(k)] = b
        if isinstance(b, ParentOutput):
            out_types.setdefault(str(k), p_outputs[b.name].type)
    for m in _ANY_REF.finditer(command):
        ref = BINDING_RE.fullmatch(m.group(0))
        if ref is None:
            raise w.error("command", f"{m.group(0)!r} cannot be resolved in a command; expected ${{{{inputs.<name>}}}} "
                                     "or ${{outputs.<name>}}")
        kind, ref_name = ref.groups()
        known = set(n_inputs) | set(ports) if kind == "inputs" else set(out_types) | set(n_outputs)
        if ref_name not in known:
            raise w.error("command", f"uses {kind}.{ref_name}, which this job does not declare ({kind}: "
                                     f"{', '.join(sorted(known)) or 'none'})")
    code = nd.get("code", comp_d.get("code"))
    code_base = base if "code" in nd else comp_base
    if code is not None:
        _expect(w, "code", code, (str,), "a folder path")
        if is_remote(code):
            raise w.error("code", f"{code!r} is remote; prs_nb runs commands in local folders")
        code = resolve_path(code, code_base)
        if not os.path.isdir(code):
            raise w.error("code", f"folder not found (looked in {code}); code is relative to the YAML file")
    env_vars = _env_vars(w, _resolve_settings(w, {**(comp_d.get("environment_variables") or {}),
                                                  **(nd.get("environment_variables") or {})}, p_inputs,
                                             "environment_variables"))
    limits = _mapping(w, "limits", nd.get("limits") or {})
    w.sub("limits").unknown(limits, ("timeout",), "limits")
    timeout = _resolve_settings(w, limits.get("timeout"), p_inputs, "limits.timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise w.error("limits.timeout", f"expected a number of seconds > 0, got {type_name(timeout)} {timeout!r}")
    environment = nd.get("environment", comp_d.get("environment"))
    if isinstance(environment, Mapping) and isinstance(environment.get("conda_file"), str):
        environment = {**environment, "conda_file": resolve_path(environment["conda_file"],
                                                                 base if "environment" in nd else comp_base)}
    resources = nd.get("resources", comp_d.get("resources"))
    if resources is not None:
        resources = _mapping(w, "resources", resources)
    compute = nd.get("compute")
    if compute is not None:
        _expect(w, "compute", compute, (str,), "a compute name")
    extra = {k: nd[k] for k in _RECORDED_COMMAND_KEYS if k in nd}
    return CommandNode(
        name=name, command=command, inputs=n_inputs, outputs=n_outputs, output_types=out_types, code=code,
        environment=environment, environment_variables=env_vars, timeout=timeout, compute=compute,
        resources=resources, display_name=_first(_opt_str(w, nd, "display_name"), comp_d.get("display_name")),
        description=_first(_opt_str(w, nd, "description"), comp_d.get("description")), extra=extra,
    )


# ---------------------------------------------------------------------------------------------- writing
def _input_entry(port: Input, yaml_dir: str, name: str = "") -> Any:
    """A pipeline-job input as Azure takes it: a bare literal value, or ``{type, path, mode}`` for data
    (a job's inputs are values; ``optional`` / ``description`` belong to components)."""
    if port.is_literal:
        if port.default is None:
            raise ConfigError(f"pipeline input {name!r} ({port.type}) has no value; a pipeline job's literal "
                              "inputs are values such as 5 or 'abc'")
        return port.default
    d: dict[str, Any] = {"type": port.type}
    if port.path is not None:
        d["path"] = rel_path(str(port.path), yaml_dir, yaml_dir)
    if port.mode is not None:
        d["mode"] = port.mode
    return d


def _output_entry(port: Output, yaml_dir: str) -> dict[str, Any]:
    d: dict[str, Any] = {"type": port.type}
    if port.path is not None:
        d["path"] = rel_path(port.path, yaml_dir, yaml_dir)
    if port.description is not None:
        d["description"] = port.description
    if port.mode is not None:
        d["mode"] = port.mode
    return d


def _node_input_entry(value: Any, yaml_dir: str) -> Any:
    if isinstance(value, (ParentInput, JobOutput)):
        return str(value)
    if isinstance(value, Input):
        return _input_entry(value, yaml_dir) if not value.is_literal else value.default
    return value


def _node_output_entry(value: Any, yaml_dir: str) -> Any:
    if isinstance(value, ParentOutput):
        return str(value)
    return _output_entry(value, yaml_dir)


def pipeline_dict(pj: PipelineJob, yaml_dir: str) -> dict[str, Any]:
    d: dict[str, Any] = {"$schema": PIPELINE_SCHEMA, "type": "pipeline"}
    for key in ("display_name", "description", "experiment_name"):
        if getattr(pj, key) is not None:
            d[key] = getattr(pj, key)
    if pj.tags:
        d["tags"] = dict(pj.tags)
    if pj.properties:
        d["properties"] = dict(pj.properties)
    if pj.compute is not None:
        d["compute"] = pj.compute
    if pj.settings:
        d["settings"] = dict(pj.settings)
    if pj.inputs:
        d["inputs"] = {k: _input_entry(v, yaml_dir, k) for k, v in pj.inputs.items()}
    if pj.outputs:
        d["outputs"] = {k: _output_entry(v, yaml_dir) for k, v in pj.outputs.items()}
    jobs: dict[str, Any] = {}
    for name, node in pj.jobs.items():
        nd: dict[str, Any] = {"type": node.type}
        if node.inputs:
            nd["inputs"] = {k: _node_input_entry(v, yaml_dir) for k, v in node.inputs.items()}
        if node.outputs:
            nd["outputs"] = {k: _node_output_entry(v, yaml_dir) for k, v in node.outputs.items()}
        if isinstance(node, ParallelNode):
            spec = node.spec
            if spec.environment_variables:
                nd["environment_variables"] = dict(spec.environment_variables)
            if spec.compute is not None:
                nd["compute"] = spec.compute
            if spec.identity is not None:
                nd["identity"] = identity_entry(spec.identity)
            comp = component_dict(spec, yaml_dir=yaml_dir, base_dir=yaml_dir, node_level_in_extension=False)
            comp.pop("$schema", None)
            nd["component"] = comp
        else:
            if node.display_name is not None:
                nd["display_name"] = node.display_name
            if node.description is not None:
                nd["description"] = node.description
            nd["command"] = node.command
            if node.code is not None:
                nd["code"] = rel_path(node.code, yaml_dir, yaml_dir)
            if node.environment is not None:
                nd["environment"] = environment_entry(node.environment, yaml_dir, yaml_dir)
            if node.environment_variables:
                nd["environment_variables"] = dict(node.environment_variables)
            if node.compute is not None:
                nd["compute"] = node.compute
            if node.resources is not None:
                nd["resources"] = dict(node.resources)
            if node.timeout is not None:
                nd["limits"] = {"timeout": node.timeout}
            declared = {k: {"type": t} for k, t in node.output_types.items() if k not in node.outputs}
            if declared:
                nd.setdefault("outputs", {}).update(declared)
            nd.update({k: v for k, v in node.extra.items()})
        jobs[name] = nd
    d["jobs"] = jobs
    return d


def pipeline_to_yaml(pj: PipelineJob, path: str) -> str:
    """Write ``pj`` to ``path`` (every node inline, paths relative to the file) and return the text."""
    yaml_dir = os.path.dirname(os.path.abspath(path))
    text = dump_yaml(pipeline_dict(pj, yaml_dir))
    os.makedirs(yaml_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return text


__all__ = ["pipeline_from_dict", "pipeline_to_yaml", "pipeline_dict", "INPUT_TYPES", "OUTPUT_TYPES"]
