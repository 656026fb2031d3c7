"""Pipeline jobs (Azure ML ``type: pipeline``) run locally: nodes, bindings and results.

::

    PipelineJob(inputs, outputs, settings, jobs={name: ParallelNode | CommandNode})
        node inputs  : ParentInput("x")          ${{parent.inputs.x}}
                       JobOutput("prep", "out")  ${{parent.jobs.prep.outputs.out}}
                       Input(type, path)         a literal data spec
                       str / int / float / bool  a literal value
        node outputs : ParentOutput("y")         ${{parent.outputs.y}}
                       Output(type, path)        a path of its own (or none: a folder in the run dir)
    .run()  -> PipelineResult: nodes in dependency order (pipeline_run); a failed node makes the nodes
               that consume its outputs Skipped; status Completed only when every node completed.

A :class:`ParallelNode` holds a JobSpec (its component plus node settings); a :class:`CommandNode`
holds a bash ``command`` run as a subprocess. ``compute``, ``environment`` and ``instance_type`` are
kept for export and ignored locally (the result lists them as notes).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prs_nb.errors import ConfigError, JobFailedError
from prs_nb.spec import Input, JobSpec, Output


@dataclass(frozen=True)
class ParentInput:
    """``${{parent.inputs.<name>}}``."""

    name: str

    def __str__(self) -> str:
        return "${{parent.inputs." + self.name + "}}"


@dataclass(frozen=True)
class ParentOutput:
    """``${{parent.outputs.<name>}}``."""

    name: str

    def __str__(self) -> str:
        return "${{parent.outputs." + self.name + "}}"


@dataclass(frozen=True)
class JobOutput:
    """``${{parent.jobs.<job>.outputs.<output>}}``: the output of another node."""

    job: str
    output: str

    def __str__(self) -> str:
        return "${{parent.jobs." + self.job + ".outputs." + self.output + "}}"


NodeInput = Any  # ParentInput | JobOutput | Input | str | int | float | bool
NodeOutput = Any  # ParentOutput | Output


@dataclass(frozen=True, kw_only=True)
class ParallelNode:
    """A ``type: parallel`` node: its JobSpec (component + node settings) and its bindings."""

    name: str
    spec: JobSpec
    inputs: Mapping[str, NodeInput] = field(default_factory=dict)
    outputs: Mapping[str, NodeOutput] = field(default_factory=dict)
    component_ref: str | None = field(default=None, compare=False)  # the file: it was loaded from

    type = "parallel"

    def output_type(self, name: str) -> str:
        port = self.spec.outputs.get(name)
        return port.type if port is not None else "uri_folder"

    @property
    def output_names(self) -> list[str]:
        return list(self.spec.outputs)


@dataclass(frozen=True, kw_only=True)
class CommandNode:
    """A ``type: command`` node: ``command`` (bash) with ``${{inputs.x}}`` / ``${{outputs.y}}`` resolved
    to local paths and values, run in ``code`` (or a folder of its own) with ``environment_variables``;
    ``timeout`` seconds (``limits.timeout``) if given. ``environment``, ``compute`` and ``resources``
    are recorded only."""

    name: str
    command: str
    inputs: Mapping[str, NodeInput] = field(default_factory=dict)
    outputs: Mapping[str, NodeOutput] = field(default_factory=dict)
    output_types: Mapping[str, str] = field(default_factory=dict)
    code: str | None = None
    environment: Any = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    compute: str | None = None
    resources: Mapping[str, Any] | None = None
    display_name: str | None = None
    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # distribution, services ...: kept, not used

    type = "command"

    def output_type(self, name: str) -> str:
        out = self.outputs.get(name)
        if isinstance(out, Output):
            return out.type
        return self.output_types.get(name, "uri_folder")

    @property
    def output_names(self) -> list[str]:
        return list(dict.fromkeys([*self.output_types, *self.outputs]))


Node = ParallelNode | CommandNode


@dataclass(frozen=True, kw_only=True)
class PipelineJob:
    """An Azure ML pipeline job, runnable here (see the module docstring)."""

    display_name: str | None = None
    description: str | None = None
    experiment_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Input] = field(default_factory=dict)
    outputs: Mapping[str, Output] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    compute: str | None = None
    jobs: Mapping[str, Node] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.order()  # dependency errors (unknown node, cycle) surface when the job is built

    # ------------------------------------------------------------------ structure
    def dependencies(self, name: str) -> list[str]:
        """The nodes whose outputs node ``name`` consumes, in first-use order."""
        deps: list[str] = []
        for value in self.jobs[name].inputs.values():
            if isinstance(value, JobOutput) and value.job not in deps:
                deps.append(value.job)
        return deps

    def order(self) -> list[str]:
        """Node names in an order where every node comes after the nodes it consumes (YAML order on ties)."""
        names = list(self.jobs)
        for name in names:
            for value in self.jobs[name].inputs.values():
                if isinstance(value, JobOutput):
                    if value.job not in self.jobs:
                        raise ConfigError(f"jobs.{name} uses {value}, but there is no job {value.job!r} "
                                          f"(jobs: {', '.join(names)})")
                    producer = self.jobs[value.job]
                    if value.output not in producer.output_names:
                        raise ConfigError(f"jobs.{name} uses {value}, but job {value.job!r} has no output "
                                          f"{value.output!r} (outputs: {', '.join(producer.output_names) or 'none'})")
        done: list[str] = []
        placed: set[str] = set()
        visiting: list[str] = []

        def visit(n: str) -> None:
            if n in placed:
                return
            if n in visiting:
                cycle = visiting[visiting.index(n):] + [n]
                raise ConfigError(f"the pipeline's jobs depend on each other in a cycle: {' -> '.join(cycle)}")
            visiting.append(n)
            for d in self.dependencies(n):
                visit(d)
            visiting.pop()
            placed.add(n)
            done.append(n)

        for n in names:
            visit(n)
        return done

    def downstream(self, name: str) -> list[str]:
        """Every node that (directly or not) consumes an output of ``name``."""
        out: list[str] = []
        for n in self.order():
            deps = self.dependencies(n)
            if name in deps or any(d in out for d in deps):
                out.append(n)
        return out

    def notes(self) -> list[str]:
        """What is recorded but not applied locally (compute, environment, instance_type ...)."""
        notes: list[str] = []
        if self.compute or self.settings.get("default_compute"):
            notes.append(f"compute {self.compute or self.settings.get('default_compute')!r} is recorded and ignored "
                         "locally: every node runs on this machine")
        for name, node in self.jobs.items():
            if isinstance(node, CommandNode):
                if node.environment is not None:
                    notes.append(f"jobs.{name}: environment is recorded and ignored locally: the command runs in "
                                 "this machine's shell and Python")
                if node.compute:
                    notes.append(f"jobs.{name}: compute {node.compute!r} is ignored locally")
                if node.resources and node.resources.get("instance_type"):
                    notes.append(f"jobs.{name}: instance_type {node.resources['instance_type']!r} is ignored locally")
                for key in node.extra:
                    notes.append(f"jobs.{name}: {key} is recorded and ignored locally")
            else:
                spec = node.spec
                if spec.compute:
                    notes.append(f"jobs.{name}: compute {spec.compute!r} is ignored locally")
                if spec.resources.instance_type:
                    notes.append(f"jobs.{name}: instance_type {spec.resources.instance_type!r} is ignored locally")
                if spec.task.environment is not None:
                    notes.append(f"jobs.{name}: task.environment is recorded and ignored locally: workers use this "
                                 "interpreter")
        return notes

    # ------------------------------------------------------------------ actions
    def run(self, *, backend: str | None = None, runs_root: str | None = None, progress: Any = False,
            base_dir: str | None = None, raise_on_failure: bool = False) -> PipelineResult:
        """Run every node locally in dependency order and return a :class:`PipelineResult`.

        ``backend`` overrides the parallel nodes' backend ("local" by default); ``runs_root`` (default
        ``prs_runs`` under ``base_dir``, which defaults to the YAML file's folder, else the working
        directory) receives ``<pipeline>/<run id>/<node>/``; ``progress`` as for ParallelJob.run (off by
        default); ``raise_on_failure`` raises JobFailedError unless the pipeline completed.
        """
        from prs_nb.pipeline_run import run_pipeline

        result = run_pipeline(self, backend=backend, runs_root=runs_root, progress=progress, base_dir=base_dir)
        if raise_on_failure and result.status != "Completed":
            raise JobFailedError(f"pipeline {result.name!r} {result.status}: {result.reason}", result)
        return result

    def bind(self, inputs: Mapping[str, Any] | None = None, outputs: Mapping[str, Any] | None = None,
             *, base_dir: str | None = None) -> PipelineJob:
        """A copy with pipeline inputs set (a path for a data input, a value for a literal one; strings
        such as ``"5"`` or ``"true"`` are converted to the input's type) and pipeline output paths set.
        Relative paths are taken from ``base_dir`` (default: the working directory)."""
        import dataclasses

        base = os.path.abspath(base_dir or os.getcwd())
        new_in = dict(self.inputs)
        for name, value in (inputs or {}).items():
            port = self.inputs.get(name)
            if port is None:
                raise ConfigError(f"the pipeline has no input {name!r}; its inputs: {', '.join(self.inputs) or 'none'}")
            if port.is_literal:
                new_in[name] = dataclasses.replace(port, default=_literal(value, port.type, name))
            else:
                path = os.fspath(value.path if isinstance(value, Input) else value)
                if "://" not in path and not path.startswith("azureml:"):
                    path = os.path.abspath(os.path.join(base, path))
                new_in[name] = dataclasses.replace(port, path=path)
        new_out = dict(self.outputs)
        for name, value in (outputs or {}).items():
            oport = self.outputs.get(name)
            if oport is None:
                raise ConfigError(f"the pipeline has no output {name!r}; its outputs: "
                                  f"{', '.join(self.outputs) or 'none'}")
            raw = value.path if isinstance(value, Output) else value
            if raw is None:
                raise ConfigError(f"output {name!r} needs a path")
            path = os.fspath(raw)
            new_out[name] = dataclasses.replace(oport, path=os.path.abspath(os.path.join(base, path)))
        return dataclasses.replace(self, inputs=new_in, outputs=new_out)

    def to_yaml(self, path: str | os.PathLike[str]) -> str:
        """Write the pipeline as Azure ML YAML (nodes inline, paths relative to the file); returns the text."""
        from prs_nb.yamlio.pipeline_load import pipeline_to_yaml

        return pipeline_to_yaml(self, os.fspath(path))

    def to_parallel_job(self) -> Any:
        """The ParallelJob of a pipeline with one parallel node fed only by pipeline inputs and literals
        (what ``job.to_yaml`` writes for a bound job), with those values bound."""
        from prs_nb.api import ParallelJob

        if len(self.jobs) != 1 or not isinstance(next(iter(self.jobs.values())), ParallelNode):
            raise ConfigError(f"to_parallel_job needs a pipeline with exactly one parallel node (got "
                              f"{', '.join(f'{n} ({j.type})' for n, j in self.jobs.items())})")
        node = next(iter(self.jobs.values()))
        assert isinstance(node, ParallelNode)
        bindings: dict[str, Any] = {}
        for name, value in node.inputs.items():
            if isinstance(value, ParentInput):
                port = self.inputs.get(value.name)
                if port is None:
                    raise ConfigError(f"jobs.{node.name}.inputs.{name} uses {value}, which the pipeline does not "
                                      "declare")
                v = port.path if port.path is not None else port.default
                if v is not None:
                    bindings[name] = v
            elif isinstance(value, Input):
                bindings[name] = value.path if value.path is not None else value.default
            else:
                bindings[name] = value
        out_bindings: dict[str, str] = {}
        for name, value in node.outputs.items():
            if isinstance(value, ParentOutput):
                out = self.outputs.get(value.name)
                if out is not None and out.path is not None:
                    out_bindings[name] = out.path
            elif isinstance(value, Output) and value.path is not None:
                out_bindings[name] = value.path
        spec = node.spec.replace(bindings=bindings, output_bindings=out_bindings,
                                 experiment_name=self.experiment_name if self.experiment_name is not None
                                 else node.spec.experiment_name)
        return ParallelJob(spec)

    def __repr__(self) -> str:
        nodes = ", ".join(f"{n} ({j.type})" for n, j in self.jobs.items())
        return f"<PipelineJob {self.display_name or self.source or ''!r} jobs: {nodes}>"


def _literal(value: Any, kind: str, name: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        raise ConfigError(f"input {name!r} is a {kind} (got {value!r})") from None
    if kind == "boolean":
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"input {name!r} is a boolean: true or false (got {value!r})")
    return value


@dataclass
class NodeResult:
    """One node's outcome: ``status`` Completed / Failed / Skipped, ``reason``, the local paths of its
    outputs, and for a parallel node its RunResult (``result``), for a command node its exit code and
    log file."""

    name: str
    type: str
    status: str
    reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    result: Any = None
    returncode: int | None = None
    log_path: str | None = None
    duration: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"


@dataclass
class PipelineResult:
    """The outcome of a local pipeline run: ``status`` (Completed / Failed), ``nodes`` (name -> NodeResult,
    in run order), ``outputs`` (pipeline output name -> local path), ``notes`` (settings ignored locally)."""

    name: str
    run_dir: str
    status: str
    reason: str
    nodes: dict[str, NodeResult]
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"

    def raise_for_status(self) -> None:
        if not self.succeeded:
            raise JobFailedError(f"pipeline {self.name!r} {self.status}: {self.reason}", self)

    def summary(self) -> str:
        lines = [f"pipeline {self.name}: {self.status} in {self.duration:.1f}s ({self.run_dir})"]
        if self.reason:
            lines.append(f"  {self.reason}")
        for n in self.nodes.values():
            extra = f" - {n.reason}" if n.reason else ""
            lines.append(f"  {n.name:<20} {n.type:<9} {n.status}{extra}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<PipelineResult {self.name!r} {self.status}: " + ", ".join(
            f"{n}={r.status}" for n, r in self.nodes.items()) + ">"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(n.name)}</td><td>{n.type}</td><td>{n.status}</td>"
            f"<td>{html.escape(n.reason)}</td></tr>" for n in self.nodes.values())
        return (f"<b>pipeline {html.escape(self.name)}: {self.status}</b>"
                f"<table><tr><th>node</th><th>type</th><th>status</th><th>reason</th></tr>{rows}</table>")
