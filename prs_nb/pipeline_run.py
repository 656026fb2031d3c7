"""Run a :class:`~prs_nb.pipeline.PipelineJob` locally, node by node in dependency order.

::

    <runs root>/<pipeline>/<run id>/
        pipeline.yml                 the pipeline that ran (paths relative to this folder)
        <node>/outputs/<name>        outputs not bound to a path
        <node>/runs/...              a parallel node's run directory (RunResult.run_dir)
        <node>/user_logs/std_log.txt a command node's stdout + stderr (Azure's file name)

Parallel nodes run with the prs_nb engine (``run_job``); command nodes as ``bash -c <command>`` with
``${{inputs.x}}`` / ``${{outputs.y}}`` replaced by local paths or values, ``$[[...]]`` segments
dropped when an optional input has no value, the node's ``environment_variables`` added to this
process's environment, and ``limits.timeout`` enforced (the whole process group is killed). A node
whose input comes from a node that did not complete is Skipped; after a failure, nodes that do not
depend on it still run only with ``settings.continue_on_step_failure: true`` (Azure's default is to
stop), otherwise they are Skipped too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from prs_nb.errors import ConfigError, PrsError
from prs_nb.pipeline import (
    CommandNode,
    JobOutput,
    NodeResult,
    ParallelNode,
    ParentInput,
    ParentOutput,
    PipelineJob,
    PipelineResult,
)
from prs_nb.spec import BINDING_RE, OPTIONAL_SEGMENT_RE, Input, Output

_LOG_TAIL = 2000


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "pipeline"


def _pipeline_name(pj: PipelineJob) -> str:
    if pj.display_name:
        return pj.display_name
    if pj.source:
        return os.path.splitext(os.path.basename(pj.source))[0]
    return "pipeline"


def run_pipeline(pj: PipelineJob, *, backend: str | None = None, runs_root: str | None = None,
                 progress: Any = False, base_dir: str | None = None) -> PipelineResult:
    """Run ``pj`` (see the module docstring) and return its PipelineResult; never raises for a failed node."""
    from prs_nb.engine.run import new_run_id
    from prs_nb.yamlio.pipeline_load import pipeline_to_yaml

    base = os.path.abspath(base_dir or (os.path.dirname(os.path.abspath(pj.source)) if pj.source else os.getcwd()))
    root = runs_root or "prs_runs"
    root = root if os.path.isabs(root) else os.path.join(base, root)
    name = _pipeline_name(pj)
    run_dir = os.path.join(root, _safe(name), new_run_id())
    os.makedirs(run_dir, exist_ok=True)
    order = pj.order()
    pipeline_to_yaml(pj, os.path.join(run_dir, "pipeline.yml"))
    notes = pj.notes()
    if notes:
        with open(os.path.join(run_dir, "notes.txt"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(notes) + "\n")
    p_outputs = {k: (o.path if o.path is not None else os.path.join(run_dir, "outputs", k))
                 for k, o in pj.outputs.items()}
    produced: dict[tuple[str, str], str] = {}
    results: dict[str, NodeResult] = {}
    keep_going = bool(pj.settings.get("continue_on_step_failure", False))
    first_failure: str | None = None
    start = time.time()
    for node_name in order:
        node = pj.jobs[node_name]
        blocked = [d for d in pj.dependencies(node_name) if results[d].status != "Completed"]
        if blocked:
            results[node_name] = NodeResult(node_name, node.type, "Skipped",
                                            f"skipped: it uses outputs of {', '.join(blocked)}, which did not complete")
            continue
        if first_failure is not None and not keep_going:
            results[node_name] = NodeResult(node_name, node.type, "Skipped",
                                            f"not started: {first_failure} failed and settings.continue_on_step_failure "
                                            "is not true")
            continue
        node_dir = os.path.join(run_dir, _safe(node_name))
        t0 = time.time()
        try:
            inputs = _node_inputs(pj, node_name, produced)
            outputs = _node_outputs(pj, node_name, node_dir, p_outputs)
            if isinstance(node, ParallelNode):
                res = _run_parallel(node, inputs, outputs, node_dir, base, backend, progress, reuse_root=root)
            else:
                res = _run_command(node, inputs, outputs, node_dir)
        except PrsError as exc:
            res = NodeResult(node_name, node.type, "Failed", f"{type(exc).__name__}: {exc}")
        res.duration = time.time() - t0
        results[node_name] = res
        if res.status == "Completed":
            for k, v in res.outputs.items():
                produced[(node_name, k)] = v
        elif first_failure is None:
            first_failure = node_name
    failed = [n for n, r in results.items() if r.status == "Failed"]
    skipped = [n for n, r in results.items() if r.status == "Skipped"]
    status = "Completed" if not failed and not skipped else "Failed"
    reason = ""
    if failed:
        reason = "; ".join(f"{n} failed: {results[n].reason.splitlines()[0] if results[n].reason else ''}"
                           for n in failed)
        if skipped:
            reason += f"; skipped: {', '.join(skipped)}"
    out_paths = {}
    for n, node in pj.jobs.items():
        for k, v in node.outputs.items():
            if isinstance(v, ParentOutput) and (n, k) in produced:
                out_paths[v.name] = produced[(n, k)]
    return PipelineResult(name=name, run_dir=run_dir, status=status, reason=reason, nodes=results,
                          outputs=out_paths, notes=notes, duration=time.time() - start)


def _node_inputs(pj: PipelineJob, name: str, produced: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """Input name -> local value (a path string or a literal); None when nothing is bound."""
    out: dict[str, Any] = {}
    for k, v in pj.jobs[name].inputs.items():
        if isinstance(v, ParentInput):
            port = pj.inputs[v.name]
            out[k] = port.path if port.path is not None else port.default
        elif isinstance(v, JobOutput):
            out[k] = produced[(v.job, v.output)]
        elif isinstance(v, Input):
            out[k] = v.path if v.path is not None else v.default
        else:
            out[k] = v
    return out


def _node_outputs(pj: PipelineJob, name: str, node_dir: str, p_outputs: Mapping[str, str]) -> dict[str, str]:
    node = pj.jobs[name]
    out: dict[str, str] = {}
    for k in node.output_names:
        v = node.outputs.get(k)
        if isinstance(v, ParentOutput):
            out[k] = p_outputs[v.name]
        elif isinstance(v, Output) and v.path is not None:
            out[k] = v.path
        else:
            out[k] = os.path.join(node_dir, "outputs", k)
    return out


def _run_parallel(node: ParallelNode, inputs: Mapping[str, Any], outputs: Mapping[str, str], node_dir: str,
                  base: str, backend: str | None, progress: Any, *, reuse_root: str | None = None) -> NodeResult:
    from prs_nb.engine.run import run_job

    spec = node.spec
    bindings = {k: v for k, v in inputs.items() if v is not None}
    changes: dict[str, Any] = {"bindings": bindings, "output_bindings": dict(outputs),
                               "runs_root": os.path.join(node_dir, "runs")}
    if backend is not None:
        changes["backend"] = backend
    result = run_job(spec.replace(**changes), progress=progress, base_dir=base, reuse_root=reuse_root)
    status = "Completed" if result.status == "Completed" else "Failed"
    reason = "" if status == "Completed" else f"{result.status}: {result.reason}"
    paths = dict(result.output_paths)
    for k, port in spec.outputs.items():  # a uri_file output is consumed as the file itself
        if port.type != "uri_file" and k in outputs:
            paths[k] = outputs[k]
    return NodeResult(node.name, "parallel", status, reason, outputs=paths, result=result,
                      log_path=result.logs_dir)


def _command_line(node: CommandNode, inputs: Mapping[str, Any], outputs: Mapping[str, str]) -> str:
    def value(kind: str, ref: str) -> str | None:
        if kind == "outputs":
            return outputs.get(ref)
        v = inputs.get(ref)
        if v is None:
            return None
        if isinstance(v, bool):
            return str(v)
        return str(v)

    def optional(m: re.Match[str]) -> str:
        seg = m.group(1)
        return "" if any(value(k, r) is None for k, r in BINDING_RE.findall(seg)) else seg

    text = OPTIONAL_SEGMENT_RE.sub(optional, node.command)
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        v = value(m.group(1), m.group(2))
        if v is None:
            missing.append(f"{m.group(1)}.{m.group(2)}")
            return ""
        return v

    text = BINDING_RE.sub(sub, text)
    if missing:
        raise ConfigError(f"jobs.{node.name}.command uses {', '.join(missing)} but no value is bound: bind it in the "
                          "node's inputs, or wrap that part of the command in $[[ ... ]] to make it optional")
    return text


def _run_command(node: CommandNode, inputs: Mapping[str, Any], outputs: Mapping[str, str],
                 node_dir: str) -> NodeResult:
    command = _command_line(node, inputs, outputs)
    for k, path in outputs.items():
        if node.output_type(k) == "uri_file":
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        else:
            os.makedirs(path, exist_ok=True)
    cwd = node.code or os.path.join(node_dir, "wd")
    os.makedirs(cwd, exist_ok=True)
    log_dir = os.path.join(node_dir, "user_logs")
    os.makedirs(log_dir, exist_ok=True)
    log_path = os.path.join(log_dir, "std_log.txt")
    env = dict(os.environ)
    env.update(node.environment_variables)
    shell = shutil.which("bash") or "/bin/sh"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([shell, "-c", command], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=node.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return NodeResult(node.name, "command", "Failed",
                              f"timed out after {node.timeout:g} s (limits.timeout); the command's process group was "
                              f"killed; log: {log_path}", outputs=dict(outputs), returncode=proc.returncode,
                              log_path=log_path)
        except BaseException:
            _kill_group(proc)
            raise
    if code != 0:
        tail = _tail(log_path)
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return NodeResult(node.name, "command", "Failed",
                          f"command failed ({how}); log: {log_path}" + (f"\nlast output:\n{tail}" if tail else ""),
                          outputs=dict(outputs), returncode=code, log_path=log_path)
    return NodeResult(node.name, "command", "Completed", outputs=dict(outputs), returncode=0, log_path=log_path)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    except ProcessLookupError:
        proc.wait()


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _LOG_TAIL))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
