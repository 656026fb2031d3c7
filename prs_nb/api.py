"""The Azure ML SDK v2 surface: ``parallel_run_function``, ``RunFunction``, ``ParallelJob``.

``parallel_run_function(...)`` takes Azure's keyword arguments and returns a :class:`ParallelJob`.
Calling it with inputs binds them, as inside an Azure pipeline; ``.run()`` executes locally.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prs_nb.errors import ConfigError
from prs_nb.results import RunResult
from prs_nb.spec import Input, JobSpec, Output, Resources, RetrySettings, RunFunction, literal_type

_LOCAL_OPTIONS = ("backend", "runs_root", "ordered_output", "allowed_failed_percent", "append_row_file_name")


def _is_frame(value: Any) -> bool:
    return hasattr(value, "columns") and hasattr(value, "iloc")


def _split_inputs(inputs: Mapping[str, Any] | None) -> tuple[dict[str, Input], dict[str, Any]]:
    ports: dict[str, Input] = {}
    bindings: dict[str, Any] = {}
    if inputs is not None and not isinstance(inputs, Mapping):
        raise ConfigError(f"inputs must be a dict of name -> Input(...), e.g. {{'data': Input(type='uri_folder')}} "
                          f"(got {type(inputs).__name__} {inputs!r})")
    for name, value in (inputs or {}).items():
        if isinstance(value, Input):
            ports[name] = value
        elif _is_frame(value):
            ports[name] = Input(type="mltable")
            bindings[name] = value
        elif isinstance(value, (bool, int, float, str)):
            ports[name] = Input(type=literal_type(value), default=value)
        elif isinstance(value, os.PathLike):
            ports[name] = Input(type="uri_folder", path=os.fspath(value))
        else:
            raise ConfigError(
                f"inputs[{name!r}] must be an Input(...), a literal (str, int, float, bool) or a DataFrame "
                f"(got {type(value).__name__})"
            )
    return ports, bindings


def _split_outputs(outputs: Mapping[str, Any] | None) -> dict[str, Output]:
    ports: dict[str, Output] = {}
    if outputs is not None and not isinstance(outputs, Mapping):
        raise ConfigError(f"outputs must be a dict of name -> Output(...), e.g. {{'result': Output(type='uri_folder')}} "
                          f"(got {type(outputs).__name__} {outputs!r})")
    for name, value in (outputs or {}).items():
        if isinstance(value, Output):
            ports[name] = value
        elif isinstance(value, (str, os.PathLike)):
            ports[name] = Output(type="uri_folder", path=os.fspath(value))
        else:
            raise ConfigError(f"outputs[{name!r}] must be an Output(...) or a path (got {type(value).__name__})")
    return ports


def parallel_run_function(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
    display_name: str | None = None,
    experiment_name: str | None = None,
    compute: str | None = None,
    retry_settings: RetrySettings | Mapping[str, Any] | None = None,
    environment_variables: Mapping[str, str] | None = None,
    logging_level: str | None = None,
    max_concurrency_per_instance: int | None = None,
    error_threshold: int | None = None,
    mini_batch_error_threshold: int | None = None,
    task: RunFunction | None = None,
    mini_batch_size: str | int | None = None,
    partition_keys: list[str] | None = None,
    input_data: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    instance_count: int | None = None,
    instance_type: str | None = None,
    docker_args: Any = None,
    shm_size: str | None = None,
    identity: Any = None,
    is_deterministic: bool = True,
    **local: Any,
) -> ParallelJob:
    """Build a parallel job with Azure ML v2's keyword arguments (contract 1.2).

    Defaults (as Azure's service): error_threshold -1, mini_batch_error_threshold -1, logging_level
    INFO, retry_settings max_retries 2 / timeout 60 s, instance_count 1, mini_batch_size 10 files or
    1MB of table, max_concurrency_per_instance = number of CPU cores (local decision, contract 12).
    Local-only keywords: ``backend`` ("local", "inline", "ray"), ``runs_root`` ("prs_runs"),
    ``ordered_output`` (False), ``allowed_failed_percent`` (100), ``append_row_file_name``.
    """
    unknown = set(local) - set(_LOCAL_OPTIONS)
    if unknown:
        raise ConfigError(
            f"parallel_run_function got unknown keyword(s) {sorted(unknown)}; Azure's keywords plus local "
            f"options {list(_LOCAL_OPTIONS)} are accepted"
        )
    if task is None:
        raise ConfigError("parallel_run_function needs task=RunFunction(code=..., entry_script=...) or "
                          "RunFunction(run=my_function)")
    if not isinstance(task, RunFunction):
        raise ConfigError(f"task must be a RunFunction (got {type(task).__name__})")
    in_ports, bindings = _split_inputs(inputs)
    out_ports = _split_outputs(outputs)
    if input_data is None:
        data_ports = [k for k, v in in_ports.items() if not v.is_literal]
        if len(data_ports) == 1:
            input_data = "${{inputs." + data_ports[0] + "}}"
    job_name = name or (getattr(task.run, "__name__", None) if task.run else None) or "parallel_job"
    resources = Resources(instance_count=instance_count if instance_count is not None else 1,
                          instance_type=instance_type, docker_args=docker_args, shm_size=shm_size)
    spec = JobSpec(
        name=job_name,
        display_name=display_name,
        description=description,
        tags=tags or {},
        properties=properties or {},
        experiment_name=experiment_name,
        compute=compute,
        inputs=in_ports,
        outputs=out_ports,
        input_data=input_data,
        mini_batch_size=mini_batch_size,  # type: ignore[arg-type]
        partition_keys=tuple(partition_keys) if isinstance(partition_keys, list) else partition_keys,
        resources=resources,
        max_concurrency_per_instance=max_concurrency_per_instance,
        error_threshold=-1 if error_threshold is None else error_threshold,
        mini_batch_error_threshold=-1 if mini_batch_error_threshold is None else mini_batch_error_threshold,
        retry_settings=retry_settings if retry_settings is not None else RetrySettings(),  # type: ignore[arg-type]
        logging_level=logging_level or "INFO",
        task=task,
        environment_variables=environment_variables or {},
        is_deterministic=is_deterministic,
        identity=identity,
        bindings=bindings,
        **local,
    )
    return ParallelJob(spec)


class ParallelJob:
    """A parallel job: the component's settings plus bound inputs/outputs.

    Call it with input/output values to bind them (returns a new job); read or set Azure's node
    settings as attributes (``job.mini_batch_error_threshold = 3``); ``run()`` executes it locally.
    """

    __slots__ = ("_spec",)
    _spec: JobSpec

    def __init__(self, spec: JobSpec) -> None:
        object.__setattr__(self, "_spec", spec)

    @property
    def spec(self) -> JobSpec:
        return self._spec

    def __call__(self, **values: Any) -> ParallelJob:
        spec = self._spec
        bindings = dict(spec.bindings)
        out_bindings = dict(spec.output_bindings)
        for key, value in values.items():
            if key in spec.outputs:
                path = value.path if isinstance(value, Output) else value
                if path is None:
                    continue
                if not isinstance(path, (str, os.PathLike)):
                    raise ConfigError(f"output {key!r} must be bound to a path or an Output(path=...) "
                                      f"(got {type(path).__name__} {path!r})")
                out_bindings[key] = os.fspath(path)
            elif key in spec.inputs:
                bindings[key] = value
            else:
                raise ConfigError(
                    f"{spec.name}() got {key!r}, which is neither an input ({', '.join(spec.inputs) or 'none'}) "
                    f"nor an output ({', '.join(spec.outputs) or 'none'})"
                )
        return ParallelJob(spec.replace(bindings=bindings, output_bindings=out_bindings))

    def __getattr__(self, name: str) -> Any:
        spec = object.__getattribute__(self, "_spec")
        if name == "instance_count":
            return spec.resources.instance_count
        if name == "inputs":
            return {k: spec.bindings.get(k, v) for k, v in spec.inputs.items()}
        if hasattr(spec, name):
            return getattr(spec, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        spec = self._spec
        if name == "instance_count":
            import dataclasses

            object.__setattr__(self, "_spec", spec.replace(resources=dataclasses.replace(spec.resources,
                                                                                           instance_count=value)))
            return
        if name in {f for f in JobSpec.__dataclass_fields__}:
            object.__setattr__(self, "_spec", spec.replace(**{name: value}))
            return
        raise AttributeError(f"ParallelJob has no setting {name!r}")

    def set_resources(self, *, instance_type: str | None = None, instance_count: int | None = None,
                      properties: Mapping[str, Any] | None = None, docker_args: Any = None,
                      shm_size: str | None = None) -> None:
        import dataclasses

        r = self._spec.resources
        new = dataclasses.replace(
            r,
            instance_type=instance_type if instance_type is not None else r.instance_type,
            instance_count=instance_count if instance_count is not None else r.instance_count,
            properties=properties if properties is not None else r.properties,
            docker_args=docker_args if docker_args is not None else r.docker_args,
            shm_size=shm_size if shm_size is not None else r.shm_size,
        )
        object.__setattr__(self, "_spec", self._spec.replace(resources=new))

    def run(
        self,
        *,
        backend: str | None = None,
        progress: Any = None,
        listeners: Any = (),
        raise_on_failure: bool = False,
        base_dir: str | None = None,
        ray_address: str | None = None,
        **overrides: Any,
    ) -> RunResult:
        """Run locally and return the RunResult.

        ``backend`` overrides the job's backend ("local" process pool by default, "inline", "ray");
        ``progress`` None shows a bar in notebooks and terminals; ``raise_on_failure`` raises
        JobFailedError for a Failed/Canceled job; other keywords override JobSpec fields for this run.
        """
        from prs_nb.engine.run import run_job

        spec = self._spec
        if backend is not None:
            overrides["backend"] = backend
        if overrides:
            spec = spec.replace(**overrides)
        result = run_job(spec, listeners=listeners, progress=progress, base_dir=base_dir, ray_address=ray_address)
        if raise_on_failure:
            result.raise_for_status()
        return result

    def to_dict(self) -> dict[str, Any]:
        from prs_nb.yaml_io import spec_to_dict

        return spec_to_dict(self._spec)

    def to_yaml(self, path: str | os.PathLike[str] | None = None, *, code_dir: str | None = None,
                environment: Any = None, base_dir: str | None = None) -> str:
        """The job as Azure ML YAML (contract 3), written to ``path`` when given; returns the text.

        An unbound job is a ``type: parallel`` component; a job with bound inputs or output paths is a
        ``type: pipeline`` job with one parallel node (load either back with ``prs_nb.load``). Functions
        from a notebook are written as ``<code_dir>/<name>_entry.py`` (``code_dir`` default: the task's
        code folder, else ``<stem>_src`` next to the file); without an ``environment`` (a reference, a
        conda file or a dict) a conda file for this interpreter is written as ``<stem>.conda.yml``.
        Without ``path`` the text is returned and no file is written (paths relative to the working
        directory; a job of notebook functions needs a path, to write its entry script).
        """
        if path is None:
            from prs_nb.yamlio.export import job_text

            return job_text(self._spec, base_dir=base_dir)
        from prs_nb.yamlio.export import job_to_yaml

        return job_to_yaml(self._spec, path, code_dir=code_dir, environment=environment, base_dir=base_dir)

    def __repr__(self) -> str:
        s = self._spec
        entry = s.task.entry_script or (getattr(s.task.run, "__qualname__", "run") + "()")
        return f"<ParallelJob {s.name!r} entry={entry} input_data={s.input_data} mini_batch_size={s.mini_batch_size}>"
