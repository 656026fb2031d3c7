"""run_job: JobSpec -> run directory, workers, scheduler, outputs, logs -> RunResult."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Iterable
from typing import Any, cast

from prs_nb import events as ev
from prs_nb.engine.backends import InlineBackend, LocalBackend
from prs_nb.engine.journal import AttemptLog, Journal, read_attempts
from prs_nb.engine.scheduler import Outcome, Scheduler
from prs_nb.entry import WorkerConfig
from prs_nb.errors import ConfigError, EntryScriptError, PrsError, ResumeError
from prs_nb.outputs import (
    AppendRowWriter,
    JournalOnly,
    append_row_path,
    load_settings_json,
    resolve_output_paths,
)
from prs_nb.results import RunResult
from prs_nb.spec import BINDING_RE, OPTIONAL_SEGMENT_RE, JobSpec, warn_partitions_override


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def input_value(spec: JobSpec, name: str, base_dir: str) -> Any:
    """The local value of input ``name``: a bound value, the port's path, or its default."""
    port = spec.inputs.get(name)
    value = spec.bindings.get(name)
    if value is None and port is not None:
        value = port.path if port.path is not None else port.default
    if value is not None and hasattr(value, "type") and hasattr(value, "path") and not hasattr(value, "columns"):
        value = value.path if value.path is not None else getattr(value, "default", None)
    if port is not None and not port.is_literal and isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if "://" not in text and not os.path.isabs(text):
            text = os.path.join(base_dir, text)
        return text
    return value


def resolve_program_arguments(spec: JobSpec, base_dir: str, output_paths: dict[str, str]) -> list[str]:
    """program_arguments with ${{inputs.x}} / ${{outputs.y}} resolved and $[[...]] segments kept or
    dropped depending on whether their optional input is set."""
    text = spec.task.program_arguments or ""

    def value_of(kind: str, name: str) -> str | None:
        if kind == "outputs":
            return output_paths.get(name)
        v = input_value(spec, name, base_dir)
        if v is None:
            return None
        if hasattr(v, "columns"):
            return f"<DataFrame {name}>"
        if isinstance(v, bool):
            return str(v)
        return str(v)

    def optional(m: re.Match[str]) -> str:
        seg = m.group(1)
        for kind, name in BINDING_RE.findall(seg):
            if value_of(kind, name) is None:
                return ""
        return seg

    text = OPTIONAL_SEGMENT_RE.sub(optional, text)
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        v = value_of(m.group(1), m.group(2))
        if v is None:
            missing.append(f"{m.group(1)}.{m.group(2)}")
            return ""
        return v

    # Split the template first, then put the values in: a value with spaces (a path like
    # "my data/") stays one argument, and quotes the user wrote around a binding are not doubled.
    try:
        tokens = shlex.split(BINDING_RE.sub(lambda m: "${{" + m.group(1) + "." + m.group(2) + "}}", text))
    except ValueError as exc:
        raise ConfigError(f"program_arguments cannot be split like a shell command line: {exc} "
                          f"(got {spec.task.program_arguments!r})") from None
    argv = [BINDING_RE.sub(sub, tok) for tok in tokens]
    if missing:
        raise ConfigError(
            f"program_arguments uses {', '.join(missing)} but no value is bound: pass it when calling the job, "
            "give the input a default, or wrap the argument in $[[ ... ]] to make it optional"
        )
    return argv


def _functions_blob(spec: JobSpec) -> bytes:
    import cloudpickle

    t = spec.task
    funcs = {"init": t.init, "run": t.run, "shutdown": t.shutdown}
    try:
        return cast(bytes, cloudpickle.dumps({k: v for k, v in funcs.items() if v is not None}))
    except Exception as exc:
        raise ConfigError(
            f"the functions given to RunFunction cannot be shipped to worker processes with cloudpickle: "
            f"{type(exc).__name__}: {exc}. Create unpicklable objects (models, connections, locks) inside "
            "init() instead of capturing them, or use backend='inline'"
        ) from exc


def _code_sources(spec: JobSpec) -> dict[tuple[str, int], tuple[str, tuple[str, ...]]]:
    from prs_nb.sources import code_sources

    t = spec.task
    return code_sources({"init": t.init, "run": t.run, "shutdown": t.shutdown})


def _check_entry_script(spec: JobSpec, base_dir: str) -> str:
    t = spec.task
    code_dir = os.path.abspath(os.path.join(base_dir, t.code)) if t.code else base_dir
    if t.code and not os.path.isdir(code_dir):
        raise EntryScriptError(f"task.code folder {t.code!r} does not exist (looked in {code_dir!r})")
    script = t.entry_script or ""
    if script.endswith(".py") and not os.path.isfile(os.path.join(code_dir, script)):
        raise EntryScriptError(
            f"entry_script {script!r} not found in the code folder {code_dir!r}; files there: "
            f"{', '.join(sorted(os.listdir(code_dir))[:10]) or '(none)'}"
        )
    return code_dir


def _wants_context(spec: JobSpec, code_dir: str | None) -> bool:
    """Does run() take the context argument (so the driver must count rows for
    global_row_index_lower_bound)? Functions are inspected; a script is parsed, never imported."""
    from prs_nb.entry import takes_context

    if spec.task.run is not None:
        return takes_context(spec.task.run)
    script = spec.task.entry_script or ""
    path = os.path.join(code_dir or "", script)
    if not script.endswith(".py") or not os.path.isfile(path):
        return True  # a dotted module name: assume it may
    import ast

    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError):
        return True  # the worker reports the problem; count to be safe
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "run":
            a = node.args
            return a.vararg is not None or len(a.posonlyargs) + len(a.args) >= 2
    return True


def make_backend(name: str, address: str | None = None) -> Any:
    if name == "local":
        return LocalBackend()
    if name == "inline":
        return InlineBackend()
    if name == "ray":
        try:
            from prs_nb.engine.ray_backend import RayBackend
        except ImportError as exc:
            raise ConfigError(f"backend='ray' needs Ray, which cannot be imported here ({exc}): "
                              "pip install 'prs_nb[ray]' (on the driver and on every node of the cluster), or "
                              "use backend='local'") from exc
        return RayBackend(address)
    raise ConfigError(f"backend must be local, inline or ray (got {name!r})")


def progress_listener(progress: Any, spec: JobSpec) -> Any | None:
    """progress=None: a notebook display inside a Jupyter kernel, a tqdm text bar elsewhere
    (when stderr is a terminal); True forces a bar; False none; an object with on_event is used as is."""
    if progress is False:
        return None
    if progress is not None and progress is not True and hasattr(progress, "on_event"):
        return progress
    in_kernel = "ipykernel" in sys.modules
    if in_kernel:
        try:
            from prs_nb.jupyter.progress import NotebookProgress  # only inside a kernel
        except ImportError:
            NotebookProgress = None  # type: ignore[misc,assignment]  # noqa: N806  (ipywidgets is optional)
        if NotebookProgress is not None:
            return NotebookProgress(spec.name)
    if progress is True or in_kernel or sys.stderr.isatty():
        from prs_nb.progress import TextProgress

        return TextProgress(spec.name)
    return None


def run_job(
    spec: JobSpec,
    *,
    listeners: Iterable[Any] = (),
    progress: Any = None,
    base_dir: str | None = None,
    run_id: str | None = None,
    ray_address: str | None = None,
    resume_info: Any = None,
    reuse_root: str | None = None,
) -> RunResult:
    """Run ``spec`` and return its RunResult (never raises for a failed job; see raise_for_status).
    ``reuse_root``: the runs root whose reuse cache is used (default the job's runs_root; a pipeline
    passes its own runs root, so that its nodes are reused across pipeline runs).

    ``resume_info`` (from :func:`prs_nb.engine.resume.resume`) continues an interrupted run in its
    own run directory instead of starting a new one."""
    from prs_nb.data import plan_input
    from prs_nb.logs import RunLogs

    base_dir = os.path.abspath(base_dir or os.getcwd())
    settings = spec.effective()
    warn_partitions_override(spec)
    if spec.task.run is None and not spec.task.entry_script:
        raise ConfigError(
            "the job has no entry: give RunFunction(code=..., entry_script='score.py') or RunFunction(run=fn)"
        )
    direct: dict[str, Any] | None = None
    if spec.task.uses_functions:
        try:
            blob: bytes | None = _functions_blob(spec)
        except ConfigError:
            if spec.backend != "inline":
                raise
            # inline runs in this process: functions that cannot be pickled are called as they are
            blob = None
            direct = {k: v for k, v in (("init", spec.task.init), ("run", spec.task.run),
                                        ("shutdown", spec.task.shutdown)) if v is not None}
        code_dir = os.path.abspath(os.path.join(base_dir, spec.task.code)) if spec.task.code else None
        entry_kind = "functions"
    else:
        blob = None
        code_dir = _check_entry_script(spec, base_dir)
        entry_kind = "script"
    run_id = run_id or new_run_id()
    runs_root = spec.runs_root if os.path.isabs(spec.runs_root) else os.path.join(base_dir, spec.runs_root)
    if os.path.exists(runs_root) and not os.path.isdir(runs_root):
        raise ConfigError(f"runs_root {runs_root!r} is a file; it must be a folder where run directories are "
                          "created (default ./prs_runs)")
    run_dir = os.path.join(runs_root, _safe_name(spec.name), run_id)
    if resume_info is not None:
        run_dir = resume_info.run_dir
    logs_dir = os.path.join(run_dir, "logs")
    output_paths = resolve_output_paths(spec, run_dir, base_dir)
    _check_output_paths(spec, output_paths)
    # everything that can reject the job is checked before its run directory is created
    argv = [spec.task.entry_script or "<functions>", *resolve_program_arguments(spec, base_dir, output_paths)]
    csv_kwargs = load_settings_json(code_dir)
    try:
        plan = plan_input(spec, settings, base_dir, count_rows=_wants_context(spec, code_dir))
    except PrsError as exc:
        if resume_info is None:
            raise
        raise ResumeError(f"cannot resume {run_dir}: its input cannot be listed any more: {exc}") from exc
    summary = _summary(spec, settings, plan)
    out_file = append_row_path(spec, output_paths)
    resume_offset = None
    if resume_info is not None:
        # refuse before anything is written: input changed, output deleted
        plan = resume_info.verified_plan(plan)
        resume_offset = resume_info.check_output(out_file)
    fp = None
    # reuse (contract 9/12): an identical earlier run is served and no worker starts (never when resuming)
    if spec.is_deterministic and resume_info is None:
        from prs_nb.cache import ReuseCache, fingerprint

        fp = fingerprint(spec, base_dir=base_dir, code_dir=code_dir, functions_blob=blob, argv=argv,
                         run_dir=run_dir, runs_root=reuse_root or runs_root, output_paths=output_paths)
        cache_root = reuse_root or runs_root
        reused = ReuseCache(cache_root).serve(fp, spec=spec, run_id=run_id, run_dir=run_dir, output_paths=output_paths)
        if reused is not None:
            _write_job_yaml(spec, run_dir)
            _announce_reused(reused, fp.key or "", [*listeners, progress_listener(progress, spec)])
            return reused
    backend = make_backend(spec.backend, ray_address)
    os.makedirs(logs_dir, exist_ok=True)
    for name, path in output_paths.items():
        os.makedirs(path if spec.outputs[name].type != "uri_file" else os.path.dirname(path), exist_ok=True)
    _write_job_yaml(spec, run_dir)
    output_dir = (os.path.dirname(out_file) if out_file else
                  next(iter(output_paths.values()), os.path.join(run_dir, "outputs")))
    os.makedirs(output_dir, exist_ok=True)
    env = dict(spec.environment_variables)
    env.setdefault("AZUREML_BI_OUTPUT_PATH", output_dir)
    config = WorkerConfig(
        entry_kind=entry_kind,
        code_dir=code_dir,
        entry_script=spec.task.entry_script,
        functions_blob=blob,
        argv=tuple(argv),
        env=env,
        logs_dir=logs_dir,
        output_dir=output_dir,
        node_id=0,
        process_name="process000",
        logging_level=spec.logging_level,
        sys_path=tuple(p for p in sys.path if p),
        append_row=out_file is not None,
        append_row_header=settings.append_row_dataframe_header,
        append_row_csv_kwargs=csv_kwargs,
        working_dir=code_dir or base_dir,
        spill_dir=os.path.join(run_dir, "parts") if out_file else None,
        functions=direct,
        code_sources=_code_sources(spec) if blob is not None else None,
        download_dir=os.path.join(run_dir, "downloads") if backend.name != "ray" else None,  # Ray: node-local temp
    )
    journal = Journal(os.path.join(run_dir, "journal"))
    done = resume_info.entries if resume_info is not None else {}
    attempts_path = os.path.join(run_dir, "attempts.jsonl")
    previous = read_attempts(attempts_path) if resume_info is not None else []
    attempt_log = AttemptLog(attempts_path)
    writer: Any = (AppendRowWriter(out_file, journal, ordered=spec.ordered_output, resume_offset=resume_offset,
                                   done=done) if out_file else JournalOnly(journal))
    logs = RunLogs(logs_dir, spec.name, summary)
    all_listeners: list[Any] = [logs, attempt_log, *listeners]
    bar = progress_listener(progress, spec)
    if bar is not None:
        all_listeners.append(bar)
    sched = Scheduler(settings=settings, plan=plan, backend=backend, worker_config=config, writer=writer,
                      listeners=all_listeners, done=done, previous_attempts=previous)
    if resume_info is not None:
        for node, number in resume_info.process_numbers.items():
            if node < len(sched.proc_counter):
                sched.proc_counter[node] = number  # new workers get new processNNN names and log files
    lock = None
    if resume_info is None:  # (resume() holds the lock of a resumed run)
        from prs_nb.engine.resume import RunLock, save_job

        lock = RunLock(run_dir).acquire()
        try:
            save_job(run_dir, spec, base_dir, run_id)
        except PrsError as exc:
            with open(os.path.join(run_dir, "not_resumable.txt"), "w", encoding="utf-8") as fh:
                fh.write(f"{exc}\n")
    workers = sched.per_node * sched.nodes
    sched.emit(ev.JobStarted(spec.name, run_id, run_dir, workers, backend.name, time.time(), cancel=sched.cancel))
    try:
        outcome = sched.run()
    except BaseException as exc:
        # e.g. an InputDataError found while listing: the logs still say what happened
        sched.emit(ev.JobFinished("Failed", f"{type(exc).__name__}: {exc}", {}, time.time()))
        logs.close()
        raise
    finally:
        writer.close()
        backend.close()
        attempt_log.close()
        if lock is not None:
            lock.release()
    # part files of attempts that never reported (a worker killed after writing one) are not output
    shutil.rmtree(os.path.join(run_dir, "parts"), ignore_errors=True)
    shutil.rmtree(os.path.join(run_dir, "downloads"), ignore_errors=True)  # object-store files of killed workers
    result = _result(spec, run_id, run_dir, logs_dir, output_paths, out_file, outcome, backend.name, settings,
                     csv_kwargs)
    sched.emit(ev.JobFinished(outcome.status, outcome.reason, result.counts, time.time()))
    logs.close()
    if fp is not None:
        from prs_nb.cache import ReuseCache

        ReuseCache(reuse_root or runs_root).store(fp, result, spec)
    return result


def _announce_reused(result: RunResult, key: str, listeners: list[Any]) -> None:
    import json

    with open(os.path.join(result.run_dir, "reused.json"), encoding="utf-8") as fh:
        source = json.load(fh)
    now = time.time()  # the usual lifecycle (started, finished) around the reuse, for bars and dashboards
    events = [ev.JobStarted(result.job_name, result.run_id, result.run_dir, 0, result.backend, now),
              ev.JobReused(result.job_name, result.run_id, result.run_dir, source["source_run_dir"],
                           source["source_run_id"], key, now),
              ev.JobFinished("Completed", "", result.counts, now)]
    for listener in listeners:
        if listener is not None:
            for event in events:
                listener.on_event(event)


def _check_output_paths(spec: JobSpec, output_paths: dict[str, str]) -> None:
    for name, path in output_paths.items():
        kind = spec.outputs[name].type
        if kind == "uri_file" and os.path.isdir(path):
            raise ConfigError(f"output {name!r} is a uri_file but its path {path!r} is an existing folder: bind a "
                              "file path (e.g. results/scores.csv) or declare Output(type='uri_folder')")
        if kind != "uri_file" and os.path.isfile(path):
            raise ConfigError(f"output {name!r} is a {kind} (a folder) but its path {path!r} is an existing file: bind "
                              "a folder path, or declare Output(type='uri_file') to write to that file")


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "job"
    return cleaned


def _summary(spec: JobSpec, settings: Any, plan: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "input": plan.describe(),
        "mini_batch_size": spec.mini_batch_size,
        "workers": f"{settings.instance_count} x {settings.workers_per_node}",
        "max_attempts": settings.max_attempts,
        "timeout_s": settings.timeout,
        "error_threshold": settings.error_threshold,
        "mini_batch_error_threshold": settings.mini_batch_error_threshold,
        "allowed_failed_percent": settings.allowed_failed_percent,
        "backend": spec.backend,
    }


def _write_job_yaml(spec: JobSpec, run_dir: str) -> None:
    from prs_nb.yaml_io import dump_run_record

    dump_run_record(spec, os.path.join(run_dir, "job.yml"))


def _result(spec: JobSpec, run_id: str, run_dir: str, logs_dir: str, output_paths: dict[str, str],
            out_file: str | None, o: Outcome, backend: str, settings: Any, csv_kwargs: dict[str, Any]) -> RunResult:
    batch_rows = []
    for idx in sorted(o.records):
        r = o.records[idx]
        err = r.message if r.status != "Succeeded" else ""
        batch_rows.append((idx, r.items, r.returned, r.failed_items, r.attempts, r.status, r.node_id,
                           r.process_name, r.start or None, (r.end - r.start) if r.end else None,
                           r.exc_type if r.status != "Succeeded" else "", err, r.label, r.host))
    error_rows = [(e.index, e.attempt, e.kind, e.exc_type, e.message, e.will_retry, e.node_id, e.process_name,
                   e.pid, e.start, e.end - e.start, e.items, e.first_items, e.traceback) for e in o.attempts]
    not_run = sum(1 for r in o.records.values() if r.status not in ("Succeeded", "Failed"))
    counts = {
        "total": o.total, "succeeded": o.succeeded, "failed": o.failed, "not_run": not_run,
        "items_total": o.items_total, "items_succeeded": o.items_succeeded, "items_failed": o.items_failed,
        "failed_attempts": len(o.attempts), "workers": o.workers_started,
    }
    read_options: dict[str, Any] = {}
    if csv_kwargs.get("sep") is not None:
        read_options["sep"] = csv_kwargs["sep"]
    if settings.append_row_dataframe_header or csv_kwargs.get("header"):
        read_options["header"] = 0
    return RunResult(
        job_name=spec.name, run_id=run_id, run_dir=run_dir, status=o.status, reason=o.reason, counts=counts,
        output_paths=output_paths, output_path=out_file, logs_dir=logs_dir, limit=o.limit,
        duration=o.end - o.start, backend=backend, read_options=read_options, _batch_rows=batch_rows,
        _error_rows=error_rows, timeline_rows=o.timeline, shutdown_errors=o.shutdown_errors,
        init_failure_rows=[(f.node_id, f.process_name, f.pid, f.exc_type, f.error, f.traceback)
                           for f in o.init_failures],
    )
