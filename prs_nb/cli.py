"""The ``prs-nb`` command line: run, validate and inspect Azure ML parallel jobs from YAML.

::

    prs-nb run FILE.yml [--set KEY=VALUE ...] [--input NAME=PATH ...] [--output NAME=PATH ...]
                        [--backend local|inline|ray] [--ray-address ADDR] [--resume RUN_DIR [--allow-changed-code]] [--no-reuse]
                        [--runs-root DIR] [-q]
    prs-nb validate FILE.yml [--set ...] [--input ...] [--output ...]
    prs-nb show RUN_DIR
    prs-nb demo [--root DIR] [--files N] [--workers N]

Exit status: 0 the job Completed; 1 it Failed; 2 bad arguments, a bad YAML file or a job that cannot
start (every such error is one line on stderr, never a traceback); 130 interrupted (Ctrl-C).

``--set`` takes JobSpec's names and is validated by JobSpec (``--set mini_batch_size=5 --set
retry_settings.max_retries=1 --set environment_variables.MODEL=small``); values are read as YAML
scalars (``5`` an integer, ``true`` a boolean, ``[a, b]`` a list). On a pipeline job a key may name
a node: ``--set score.mini_batch_size=5``; an undotted key applies to every parallel node.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_NESTED = ("retry_settings", "resources", "task")
_MAPPINGS = ("environment_variables", "tags", "properties")
_NOT_SETTABLE = ("inputs", "outputs", "bindings", "output_bindings", "task.init", "task.run", "task.shutdown")


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------- --set and friends
def parse_assignments(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    """``["a=1", "b.c=x"]`` -> ``[("a", "1"), ("b.c", "x")]``; anything without ``=`` is a UsageError."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} takes KEY=VALUE (got {item!r})")
        out.append((key.strip(), value))
    return out


def _scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_settings(spec: Any, assignments: Sequence[tuple[str, str]]) -> Any:
    """``spec`` with ``--set`` assignments applied through :meth:`JobSpec.replace` (so JobSpec validates them)."""
    from prs_nb.errors import ConfigError
    from prs_nb.spec import JobSpec

    fields = set(JobSpec.__dataclass_fields__)
    for key, raw in assignments:
        value = _scalar(raw)
        head, _, rest = key.partition(".")
        if key in _NOT_SETTABLE or head in _NOT_SETTABLE:
            hint = "use --input/--output" if head in ("inputs", "outputs", "bindings", "output_bindings") else \
                "functions cannot be given on the command line; use task.entry_script"
            raise ConfigError(f"--set {key}: this setting cannot be set here; {hint}")
        if head not in fields:
            import difflib

            close = difflib.get_close_matches(head, sorted(fields), n=1)
            raise ConfigError(f"--set {key}: unknown setting {head!r}" + (f" (did you mean {close[0]!r}?)" if close
                              else "") + f"; settings are: {', '.join(sorted(fields - set(_NOT_SETTABLE)))}")
        if not rest:
            if head == "mini_batch_size" and not isinstance(value, bool) and value is not None:
                value = str(raw).strip()  # always a string, as in YAML ('10', '1MB')
            if head == "partition_keys" and isinstance(value, str):
                value = [k.strip() for k in value.split(",") if k.strip()]
            spec = spec.replace(**{head: value})
        elif head in _NESTED:
            current = getattr(spec, head)
            names = {f.name for f in dataclasses.fields(current)}
            if rest not in names:
                raise ConfigError(f"--set {key}: {head} has no setting {rest!r}; it has {', '.join(sorted(names))}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and rest in ("code", "entry_script",
                                                                                           "program_arguments"):
                value = str(raw)
            spec = spec.replace(**{head: dataclasses.replace(current, **{rest: value})})
        elif head in _MAPPINGS:
            spec = spec.replace(**{head: {**getattr(spec, head), rest: raw}})
        else:
            raise ConfigError(f"--set {key}: {head} is a single value; write --set {head}=VALUE")
    return spec


def bind_io(spec: Any, inputs: Sequence[tuple[str, str]], outputs: Sequence[tuple[str, str]]) -> Any:
    """``--input name=path`` / ``--output name=path`` bound on ``spec`` (paths relative to the working dir)."""
    from prs_nb.errors import ConfigError
    from prs_nb.spec import Input

    bindings = dict(spec.bindings)
    for name, value in inputs:
        port = spec.inputs.get(name)
        if port is None:
            raise ConfigError(f"--input {name}: the job has no input {name!r}; its inputs: "
                              f"{', '.join(spec.inputs) or '(none)'}")
        if port.is_literal:
            bindings[name] = _scalar(value)
        else:
            path = value if "://" in value else os.path.abspath(value)
            bindings[name] = Input(type=port.type, path=path, mode=port.mode)
    outs = dict(spec.output_bindings)
    for name, value in outputs:
        if name not in spec.outputs:
            raise ConfigError(f"--output {name}: the job has no output {name!r}; its outputs: "
                              f"{', '.join(spec.outputs) or '(none)'}")
        outs[name] = os.path.abspath(value)
    return spec.replace(bindings=bindings, output_bindings=outs)


# ---------------------------------------------------------------------------------- loading
def _load(path: str) -> Any:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file" if not os.path.exists(path) else f"{path} is not a file")
    import prs_nb

    return prs_nb.load(path)


def _is_pipeline(obj: Any) -> bool:
    from prs_nb.pipeline import PipelineJob

    return isinstance(obj, PipelineJob)


def _unbound_input_data(spec: Any) -> str | None:
    name = spec.input_data_name
    port = spec.inputs.get(name) if name else None
    if port is not None and name not in spec.bindings and port.path is None and port.default is None:
        return str(name)
    return None


def _prepared_spec(obj: Any, args: argparse.Namespace, *, need_data: bool = True) -> Any:
    spec = obj.spec
    spec = apply_settings(spec, parse_assignments(args.set or [], "--set"))
    spec = bind_io(spec, parse_assignments(args.input or [], "--input"), parse_assignments(args.output or [],
                                                                                          "--output"))
    name = _unbound_input_data(spec)
    if need_data and name is not None:
        raise UsageError(f"input {name!r} (the input_data) has no data: pass --input {name}=PATH (a folder, file, "
                         f"glob or MLTable folder)")
    changes: dict[str, Any] = {}
    if getattr(args, "backend", None):
        changes["backend"] = args.backend
    if getattr(args, "runs_root", None):
        changes["runs_root"] = os.path.abspath(args.runs_root)
    if getattr(args, "no_reuse", False):
        changes["is_deterministic"] = False
    return spec.replace(**changes) if changes else spec


# ---------------------------------------------------------------------------------- output
def error_table(result: Any, limit: int = 20) -> str:
    """The failed attempts as a text table (first ``limit`` rows)."""
    rows = result._error_rows
    if not rows:
        return ""
    head = ("mini-batch", "attempt", "kind", "process", "error")
    body = [(str(r[0]), str(r[1]), str(r[2]), str(r[7]), f"{r[3]}: {_first_line(r[4])}"[:100]) for r in rows[:limit]]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    if len(rows) > limit:
        lines.append(f"... first {limit} of {len(rows)} failed attempts shown; all in "
                     f"{os.path.join(result.logs_dir, 'job_error.txt')}")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    """A multi-line message (e.g. a YAML parser's, with its line and column) joined into one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _first_line(text: str) -> str:
    stripped = (text or "").strip()
    return stripped.splitlines()[0] if stripped else ""


def _report(result: Any, quiet: bool) -> int:
    if quiet:
        print(f"{result.job_name}: {result.status}" + (" (reused)" if result.reused else "")
              + (f" - {result.reason}" if result.reason else ""))
    else:
        print(result.summary())
    table = error_table(result)
    if table and (not quiet or result.status != "Completed"):
        print("\nfailed attempts:\n" + table)
    return {"Completed": EXIT_OK, "Canceled": EXIT_INTERRUPTED}.get(result.status, EXIT_FAILED)


def _progress(args: argparse.Namespace) -> Any:
    if args.quiet:
        return False
    from prs_nb.progress import TextProgress

    return TextProgress(args.name or "prs-nb", file=sys.stderr)


# ---------------------------------------------------------------------------------- commands
def _run(args: argparse.Namespace) -> int:
    if args.resume:
        return _resume(args)
    if args.allow_changed_code:
        raise UsageError("--allow-changed-code only applies with --resume RUN_DIR")
    if args.ray_address:
        if args.backend != "ray":
            raise UsageError("--ray-address only applies with --backend ray")
        os.environ["RAY_ADDRESS"] = args.ray_address  # Ray's own way; this process runs one job and ends
    obj = _load(args.file)
    if _is_pipeline(obj):
        return _run_pipeline(obj, args)
    spec = _prepared_spec(obj, args)
    args.name = spec.name
    from prs_nb.engine.run import run_job

    result = run_job(spec, progress=_progress(args), base_dir=os.getcwd())
    return _report(result, args.quiet)


def _single_job(pipeline: Any) -> Any | None:
    """The ParallelJob of a one-node pipeline fed only by its own inputs (what ``job.to_yaml`` writes for a
    bound job), so that it runs, binds and resumes like a plain job; None for other pipelines."""
    convert = getattr(pipeline, "to_parallel_job", None)
    if not callable(convert):
        return None
    from prs_nb.errors import PrsError

    try:
        return convert()
    except PrsError:
        return None


def pipeline_with_settings(pipeline: Any, assignments: Sequence[tuple[str, str]], *, no_reuse: bool) -> Any:
    """``pipeline`` with ``--set`` applied to its parallel nodes: ``node.key=value`` to that node, an
    undotted (or non-node) key to every parallel node; ``--no-reuse`` turns reuse off on every node."""
    from prs_nb.errors import ConfigError
    from prs_nb.pipeline import ParallelNode

    jobs = dict(pipeline.jobs)
    parallel = [n for n, node in jobs.items() if isinstance(node, ParallelNode)]
    for key, _ in assignments:
        head = key.split(".", 1)[0]
        if head in jobs and head not in parallel:
            raise ConfigError(f"--set {key}: job {head!r} is a {getattr(jobs[head], 'type', 'command')} node; --set "
                              "changes parallel nodes only (edit the YAML for command nodes)")
    for name in parallel:
        node = jobs[name]
        mine = [(k.split(".", 1)[1], v) for k, v in assignments if k.split(".", 1)[0] == name and "." in k]
        common = [(k, v) for k, v in assignments if k.split(".", 1)[0] not in jobs]
        spec = apply_settings(node.spec, [*common, *mine])
        if no_reuse:
            spec = spec.replace(is_deterministic=False)
        jobs[name] = dataclasses.replace(node, spec=spec)
    return dataclasses.replace(pipeline, jobs=jobs)


def _run_pipeline(pipeline: Any, args: argparse.Namespace) -> int:
    from prs_nb.errors import ConfigError

    single = _single_job(pipeline)
    if single is not None:  # one parallel node: run it as the job it is
        spec = _prepared_spec(single, args)
        args.name = spec.name
        from prs_nb.engine.run import run_job

        return _report(run_job(spec, progress=_progress(args), base_dir=os.getcwd()), args.quiet)
    if args.input or args.output:
        raise ConfigError("--input/--output bind a parallel job's ports; this pipeline job has several nodes: edit "
                          "the inputs:/outputs: of the pipeline YAML (or run one node's component file)")
    pipeline = pipeline_with_settings(pipeline, parse_assignments(args.set or [], "--set"), no_reuse=args.no_reuse)
    kwargs: dict[str, Any] = {"progress": not args.quiet}
    if args.backend:
        kwargs["backend"] = args.backend
    if args.runs_root:
        kwargs["runs_root"] = os.path.abspath(args.runs_root)
    result = pipeline.run(base_dir=os.getcwd(), **kwargs)
    return _report_pipeline(result, args.quiet)


def _report_pipeline(result: Any, quiet: bool) -> int:
    summary = result.summary()
    print(summary.splitlines()[0] if quiet else summary)
    for node in result.nodes.values():
        res = getattr(node, "result", None)
        if getattr(res, "reused", False) and not quiet:
            print(f"  {node.name}: reused a previous identical run (no worker started)")
        table = error_table(res) if res is not None and hasattr(res, "_error_rows") else ""
        if table and (not quiet or node.status != "Completed"):
            print(f"\nfailed attempts of node {node.name}:\n{table}")
        if getattr(node, "returncode", None) not in (None, 0):
            print(f"\nnode {node.name}: command exited with status {node.returncode}; its log: {node.log_path}")
    return {"Completed": EXIT_OK, "Canceled": EXIT_INTERRUPTED}.get(result.status, EXIT_FAILED)


def _resume(args: argparse.Namespace) -> int:
    import prs_nb

    run_dir = os.path.abspath(args.resume)
    if not os.path.isdir(run_dir) or not os.path.isfile(os.path.join(run_dir, "job.yml")):
        raise UsageError(f"--resume {args.resume}: not a run directory (expected a folder with job.yml, like "
                         "prs_runs/<job>/<run id>)")
    if args.set or args.input or args.output or args.backend or args.no_reuse:
        raise UsageError("--resume continues a run exactly as it started; it cannot be combined with --set, "
                         "--input, --output, --backend or --no-reuse")
    obj = _load(args.file)
    job_dir = os.path.basename(os.path.dirname(run_dir))
    if _is_pipeline(obj):  # a pipeline's parallel node runs are resumable one by one
        names = [node.spec.name for node in obj.jobs.values() if hasattr(node, "spec")] or [None]
    else:
        names = [obj.spec.name]
    from prs_nb.engine.run import _safe_name

    if not any(n and _safe_name(str(n)) == job_dir for n in names):
        raise UsageError(f"--resume {args.resume}: that is a run of job {job_dir!r}, not of {args.file} "
                         f"(job {names[0]!r})")
    args.name = job_dir
    result = prs_nb.resume(run_dir, progress=_progress(args), allow_changed_code=args.allow_changed_code)
    return _report(result, args.quiet)


def _validate(args: argparse.Namespace) -> int:
    obj = _load(args.file)
    if _is_pipeline(obj):
        single = _single_job(obj)
        if single is None:
            lines = [f"{args.file}: OK - pipeline job, nodes in run order: {', '.join(obj.order())}"]
            for name, node in obj.jobs.items():
                if hasattr(node, "spec"):  # node inputs come from the pipeline: settings and entry are checked
                    spec = node.spec.replace(bindings={}, output_bindings={})
                    lines.append(f"  {name}: {check_spec(spec, os.getcwd())}")
                else:
                    lines.append(f"  {name}: command node: {_first_line(getattr(node, 'command', ''))}")
            print("\n".join(lines))
            return EXIT_OK
        obj = single
    spec = _prepared_spec(obj, args, need_data=False)
    print(f"{args.file}: OK - {check_spec(spec, os.getcwd())}")
    return EXIT_OK


def check_spec(spec: Any, base_dir: str) -> str:
    """Everything run_job checks before it creates a run directory, without running: the entry, the
    input (listing starts lazily: nothing is read), the bound arguments. Returns a one-line description."""
    from prs_nb.data import plan_input
    from prs_nb.engine.run import _check_entry_script, resolve_program_arguments
    from prs_nb.errors import ConfigError
    from prs_nb.outputs import resolve_output_paths

    settings = spec.effective()
    if spec.task.run is None and not spec.task.entry_script:
        raise ConfigError("the job has no entry: task.entry_script is missing")
    if not spec.task.uses_functions:
        _check_entry_script(spec, base_dir)
    entry = spec.task.entry_script or "functions"
    unbound = _unbound_input_data(spec)
    if unbound is not None:  # a component meant to be bound later: its data cannot be checked yet
        return (f"parallel component {spec.name!r}, entry {entry}; input {unbound!r} not bound (check it with "
                f"--input {unbound}=PATH)")
    outputs = resolve_output_paths(spec, os.path.join(base_dir, "<run dir>"), base_dir)
    resolve_program_arguments(spec, base_dir, outputs)
    plan = plan_input(spec, settings, base_dir, count_rows=False)
    return f"parallel job {spec.name!r}, entry {entry}, input {plan.describe()}"


def _show(args: argparse.Namespace) -> int:
    run_dir = os.path.abspath(args.run_dir)
    if os.path.isdir(run_dir) and not os.path.isfile(os.path.join(run_dir, "job.yml")):
        # a pipeline run: its parallel nodes' run directories lie below it
        import glob

        runs = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(run_dir), "**", "job.yml"),
                                                             recursive=True))
        if runs:
            print(f"pipeline run directory: {run_dir} ({len(runs)} parallel node run(s))")
            notes = os.path.join(run_dir, "notes.txt")
            if os.path.isfile(notes):
                with open(notes, encoding="utf-8") as fh:
                    print("notes:\n" + "".join(f"  {line}" for line in fh))
            for r in runs:
                print("\n" + "=" * 8 + f" {os.path.relpath(r, run_dir)}\n" + show_run(r))
            return EXIT_OK
    print(show_run(run_dir))
    return EXIT_OK


def show_run(run_dir: str) -> str:
    """A run directory's summary (job_result.txt), its failed mini-batches and where its logs are."""
    import csv
    import json

    run_dir = os.path.abspath(run_dir)
    logs = os.path.join(run_dir, "logs")
    if not os.path.isdir(run_dir) or not os.path.isfile(os.path.join(run_dir, "job.yml")):
        raise UsageError(f"{run_dir}: not a run directory (expected a folder with job.yml and logs/, like "
                         "prs_runs/<job>/<run id>)")
    lines = [f"run directory: {run_dir}"]
    reused = os.path.join(run_dir, "reused.json")
    if os.path.isfile(reused):
        with open(reused, encoding="utf-8") as fh:
            info = json.load(fh)
        lines.append(f"reused: outputs copied from {info.get('source_run_dir')} (no worker was started)")
    result_file = os.path.join(logs, "job_result.txt")
    if os.path.isfile(result_file):
        with open(result_file, encoding="utf-8") as fh:
            lines += ["", fh.read().rstrip()]
    else:
        lines.append("no logs/job_result.txt: the run is still going, or its driver was killed "
                     "(resume it with prs-nb run FILE.yml --resume RUN_DIR)")
    report = os.path.join(logs, "sys", "job_report", "processed_mini-batches.csv")
    if os.path.isfile(report):
        with open(report, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        failed = [r for r in rows if r.get("status") not in ("Succeeded", None)]
        done = {r["mini_batch_index"]: r["status"] for r in rows}
        lines += ["", f"mini-batches processed: {len(done)} ({sum(s == 'Succeeded' for s in done.values())} "
                      f"succeeded, {sum(s != 'Succeeded' for s in done.values())} failed)"]
        if failed:
            head = ("mini-batch", "status", "attempt", "process", "error")
            body = [(r["mini_batch_index"], r["status"], r["attempt"], r["process_name"],
                     f"{r['error_type']}: {r['error_message']}"[:100]) for r in failed[:20]]
            widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
            lines += ["", "failed mini-batches:",
                      "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
                      "  ".join("-" * w for w in widths)]
            lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
            if len(failed) > 20:
                lines.append(f"... first 20 of {len(failed)} shown")
    outputs = os.path.join(run_dir, "outputs")
    lines += ["", "where to look:"]
    if os.path.isdir(outputs):
        lines.append(f"  outputs:  {outputs}")
    for name, what in (("job_result.txt", "the result and the first failure"),
                       ("job_error.txt", "every script error with its traceback"),
                       ("user", "per-process stdout, stderr, entry-script logs and errors"),
                       ("sys/job_report/processed_mini-batches.csv", "every processed mini-batch")):
        path = os.path.join(logs, name)
        if os.path.exists(path):
            lines.append(f"  {path}  ({what})")
    lines.append(f"  {os.path.join(run_dir, 'job.yml')}  (the job exactly as it ran)")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from prs_nb.demo import run_demo

    result = run_demo(root=args.root, n_files=args.files, workers=args.workers, progress=None)
    print(result.summary())
    lines = result.read_lines()
    if lines:
        print(f"\nfirst rows of {result.output_path} (file mean hot_readings):")
        for line in sorted(lines)[:5]:
            print("  " + line)
    return 0 if result.status == "Completed" else 1


# ---------------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line and the usage, exit 2 (argparse's own convention)
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number (got {text!r})") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 (got {n})")
    return n


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a job setting by its JobSpec name, e.g. mini_batch_size=5, "
                        "retry_settings.max_retries=1, environment_variables.NAME=value (repeatable)")
    p.add_argument("--input", action="append", metavar="NAME=PATH",
                   help="bind an input to a local path (or a literal input to a value) (repeatable)")
    p.add_argument("--output", action="append", metavar="NAME=PATH", help="bind an output to a local path "
                   "(repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prs-nb", description="Run Azure ML parallel-run jobs locally: from YAML files (parallel "
                "components or pipeline jobs), with live progress, reuse of identical runs and Azure's log layout.",
                epilog="exit status: 0 completed, 1 failed, 2 bad arguments or configuration, 130 interrupted")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    r = sub.add_parser("run", help="run a parallel component or pipeline job YAML file",
                       description="Run a parallel component or pipeline job YAML file locally. Progress goes to "
                                   "stderr; a summary and the failed attempts are printed at the end.",
                       epilog="exit status: 0 completed, 1 failed, 2 bad arguments or configuration, 130 interrupted")
    r.add_argument("file", metavar="FILE.yml", help="the YAML file (type: parallel, pipeline or command)")
    _job_options(r)
    r.add_argument("--backend", choices=("local", "inline", "ray"), help="local: a process pool (default); inline: no "
                   "processes, one mini-batch at a time in this process; ray: Ray actors on a Ray cluster")
    r.add_argument("--ray-address", metavar="ADDRESS", help="with --backend ray: the cluster to run on "
                   "('ray://<head>:10001', 'auto', '<head>:6379'; default $RAY_ADDRESS, else a new local Ray instance)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (prs_runs/<job>/<run id>): "
                   "finished mini-batches are skipped")
    r.add_argument("--allow-changed-code", action="store_true", help="with --resume: continue even though the "
                   "entry script's code folder changed since the run started")
    r.add_argument("--no-reuse", action="store_true", help="always run, even if an identical run is in the cache")
    r.add_argument("--runs-root", metavar="DIR", help="where run directories are created (default ./prs_runs)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar; one status line (and the failed "
                   "attempts if the job failed)")
    r.set_defaults(func=_run, name=None)
    v = sub.add_parser("validate", help="check a YAML file without running it",
                       description="Load a YAML file and check everything a run checks before it starts (settings, "
                                   "entry script, input paths and MLTable files, bound arguments); nothing runs.")
    v.add_argument("file", metavar="FILE.yml")
    _job_options(v)
    v.set_defaults(func=_validate)
    s = sub.add_parser("show", help="summarise a run directory: result, failed mini-batches, where the logs are",
                       description="Summarise a run directory (prs_runs/<job>/<run id>): result, failed "
                                   "mini-batches and where the logs are.")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.set_defaults(func=_show)
    d = sub.add_parser("demo", help="run a demo job on generated data and print its summary",
                       description="Generate sensor files, score them in parallel and print the summary.")
    d.add_argument("--root", default="prs_demo", help="folder for the generated data and runs (default prs_demo)")
    d.add_argument("--files", type=_positive, default=400, help="number of generated files (default 400)")
    d.add_argument("--workers", type=_positive, default=None, help="worker processes (default: CPU cores)")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``prs-nb``; returns the exit status."""
    from prs_nb.errors import PrsError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    import warnings

    def show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                     line: Any = None) -> None:
        print(f"prs-nb {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show_warning  # one line each (e.g. unknown YAML keys), no source lines
            return int(args.func(args))
    except KeyboardInterrupt:
        print(f"prs-nb {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"prs-nb {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PrsError as exc:
        print(f"prs-nb {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, UnicodeDecodeError) as exc:
        print(f"prs-nb {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _yaml_error() as exc:
        print(f"prs-nb {args.command}: error: malformed YAML: {_first_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE


def _yaml_error() -> type[BaseException]:
    import yaml

    return yaml.YAMLError


__all__ = ["main", "build_parser", "apply_settings", "bind_io", "check_spec", "show_run", "error_table"]


if __name__ == "__main__":
    sys.exit(main())
