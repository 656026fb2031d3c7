"""prs_nb: run Azure ML parallel-run jobs locally, faithfully and fast - from a notebook first.

Public API::

    from prs_nb import parallel_run_function, RunFunction, Input, Output
    job = parallel_run_function(name=..., inputs=..., input_data="${{inputs.x}}",
                                task=RunFunction(code="./src", entry_script="score.py"))
    result = job(x=Input(type="uri_folder", path="data")).run()

The core never imports IPython, ipywidgets or tqdm.notebook.
"""

from __future__ import annotations

from typing import Any

from prs_nb.api import ParallelJob, parallel_run_function
from prs_nb.errors import (
    ConfigError,
    EntryScriptError,
    InputDataError,
    JobFailedError,
    PrsError,
    RemoteTraceback,
    ResumeError,
    UserCodeError,
    WorkerError,
)
from prs_nb.results import RunResult
from prs_nb.spec import (
    AssetTypes,
    Input,
    InputOutputModes,
    JobSpec,
    Output,
    RetrySettings,
    RunFunction,
    parse_mini_batch_size,
)

__version__ = "0.1.0"

BatchRetrySettings = RetrySettings


def run_job(spec: JobSpec, **kwargs: Any) -> RunResult:
    """Run a JobSpec (see :func:`prs_nb.engine.run_job`)."""
    from prs_nb.engine.run import run_job as _run

    return _run(spec, **kwargs)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext prs_nb``: registers ``%%parallel_run`` and ``%parallel_run_defaults``."""
    from prs_nb.jupyter.magic import load_ipython_extension as _load

    _load(ipython)


def load(path: Any) -> Any:
    """Read an Azure ML YAML file (see :func:`prs_nb.yamlio.load.load`): a parallel component ->
    ParallelJob, a pipeline job -> PipelineJob; both have ``.run()``."""
    from prs_nb.yamlio.load import load as _load

    return _load(path)


def resume(run_dir: Any, *, progress: Any = None, backend: str | None = None, listeners: Any = (),
           allow_changed_code: bool = False) -> RunResult:
    """Continue an interrupted run (see :func:`prs_nb.engine.resume.resume`)."""
    from prs_nb.engine.resume import resume as _resume

    result: RunResult = _resume(run_dir, progress=progress, backend=backend, listeners=listeners,
                                allow_changed_code=allow_changed_code)
    return result


def __getattr__(name: str) -> Any:
    # v1 classes are loaded on first use, keeping `import prs_nb` (and every worker) light.
    if name in ("ParallelRunConfig", "ParallelRunStep"):
        from prs_nb import v1

        return getattr(v1, name)
    if name in ("PipelineJob", "PipelineResult"):
        from prs_nb import pipeline

        return getattr(pipeline, name)
    if name in ("YamlError", "YamlKeyWarning"):
        from prs_nb.yamlio import problems

        return getattr(problems, name)
    raise AttributeError(f"module 'prs_nb' has no attribute {name!r}")


__all__ = [
    "parallel_run_function",
    "RunFunction",
    "ParallelJob",
    "Input",
    "Output",
    "AssetTypes",
    "InputOutputModes",
    "RetrySettings",
    "BatchRetrySettings",
    "JobSpec",
    "RunResult",
    "run_job",
    "load",
    "PipelineJob",
    "PipelineResult",
    "YamlError",
    "YamlKeyWarning",
    "parse_mini_batch_size",
    "ParallelRunConfig",
    "ParallelRunStep",
    "PrsError",
    "ConfigError",
    "InputDataError",
    "EntryScriptError",
    "JobFailedError",
    "UserCodeError",
    "WorkerError",
    "ResumeError",
    "RemoteTraceback",
    "resume",
]
