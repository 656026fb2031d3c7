"""``%load_ext prs_nb``: the ``%%parallel_run`` cell magic and the ``%parallel_run_defaults`` line magic.

::

    %%parallel_run --input data/images --mini_batch_size 10 --max_retries 1 -o result
    def init(): ...
    def run(mini_batch): ...

The cell runs in the notebook's namespace (its functions stay usable there); the ``init`` / ``run`` /
``shutdown`` it defines travel to the workers by value with cloudpickle, and the cell's text is kept
so ``--export`` writes it as a real entry script. Flags carry Azure's names (``--mini_batch_size``;
the dashed spelling ``--mini-batch-size`` works too). A misused flag raises IPython's one-line
``UsageError``; a job that does not complete raises :class:`ParallelRunFailed`, so "run all" and
nbval stop at that cell.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from prs_nb.api import ParallelJob, parallel_run_function
from prs_nb.errors import JobFailedError, PrsError
from prs_nb.results import RunResult
from prs_nb.spec import BACKENDS, INPUT_TYPES, LOGGING_LEVELS, Input, Output, RunFunction

_TABLE_EXTS = (".csv", ".tsv", ".parquet", ".jsonl", ".json")

#: Job flags: (dest, option strings, argparse keywords). The dest is the Azure / JobSpec name.
JOB_FLAGS: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("input", ("--input", "-i"), {"help": "Input data: a path (file, folder or glob) or the name of a variable "
                                          "holding a DataFrame or path."}),
    ("input_type", ("--input_type", "--input-type"),
     {"choices": INPUT_TYPES[:5], "help": "Input type (default: mltable for a DataFrame or a table file, "
                                          "uri_folder otherwise)."}),
    ("name", ("--name", "-n"), {"help": "Job name (default: parallel_run)."}),
    ("mini_batch_size", ("--mini_batch_size", "--mini-batch-size"),
     {"help": "Files per mini-batch or bytes of table: '10', '512KB', '1MB'."}),
    ("partition_keys", ("--partition_keys", "--partition-keys"),
     {"help": "Comma-separated columns: one mini-batch per distinct combination."}),
    ("max_concurrency_per_instance", ("--max_concurrency_per_instance", "--max-concurrency-per-instance", "-c"),
     {"type": int, "help": "Worker processes per node (default: CPU cores)."}),
    ("instance_count", ("--instance_count", "--instance-count"), {"type": int, "help": "Nodes (default 1)."}),
    ("error_threshold", ("--error_threshold", "--error-threshold"),
     {"type": int, "help": "Failed items tolerated; -1 disables (default)."}),
    ("mini_batch_error_threshold", ("--mini_batch_error_threshold", "--mini-batch-error-threshold"),
     {"type": int, "help": "Failed mini-batches tolerated; -1 disables (default)."}),
    ("allowed_failed_percent", ("--allowed_failed_percent", "--allowed-failed-percent"),
     {"type": float, "help": "Percent of failed mini-batches tolerated (default 100)."}),
    ("max_retries", ("--max_retries", "--max-retries"),
     {"type": int, "help": "retry_settings.max_retries (default 2)."}),
    ("timeout", ("--timeout",), {"type": float, "help": "retry_settings.timeout, seconds per run() (default 60)."}),
    ("append_row_to", ("--append_row_to", "--append-row-to"),
     {"nargs": "?", "const": "", "help": "Aggregate run() results into one file (append_row); optional PATH "
                                         "(a file, or a folder for parallel_run_step.txt), default in the run directory."}),
    ("program_arguments", ("--program_arguments", "--program-arguments"),
     {"help": "One string for the entry's sys.argv, e.g. '--threshold 0.5'."}),
    ("environment_variables", ("--environment_variables", "--env", "-e"),
     {"action": "append", "metavar": "KEY=VALUE", "help": "Environment variable for the workers (repeatable)."}),
    ("logging_level", ("--logging_level", "--logging-level"), {"choices": LOGGING_LEVELS}),
    ("backend", ("--backend", "-b"), {"choices": BACKENDS, "help": "local (default), inline or ray."}),
    ("runs_root", ("--runs_root", "--runs-root"), {"help": "Where run directories go (default prs_runs)."}),
    ("is_deterministic", ("--is_deterministic", "--is-deterministic"),
     {"choices": ("true", "false"), "help": "Reuse: true (default) serves an identical rerun from the cache; "
                                           "false always runs."}),
]
_FLAG_DESTS = [d for d, _o, _k in JOB_FLAGS]


class ParallelRunFailed(JobFailedError):
    """A ``%%parallel_run`` job ended Failed or Canceled. ``.result`` is its RunResult.

    In a notebook it renders as the job's summary (first errors, counts, where the logs are),
    without an internal traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"ParallelRunFailed: {line}" if i == 0 else line for i, line in enumerate(str(self).splitlines())]


def _unquote(value: Any) -> Any:
    """IPython's argument splitter keeps quotes ('--program_arguments "--k 1"'): drop a matching pair."""
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _given(args: Any) -> dict[str, Any]:
    return {k: _unquote(v) for k, v in vars(args).items() if k in _FLAG_DESTS and v is not None}


def _job_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    for dest, opts, kwargs in reversed(JOB_FLAGS):
        fn = argument(*opts, dest=dest, default=None, **kwargs)(fn)
    return fn


def _defined_names(cell: str) -> set[str]:
    try:
        tree = ast.parse(cell)
    except SyntaxError as exc:
        raise UsageError(f"%%parallel_run: the cell is not valid Python: {exc.msg} (line {exc.lineno})") from None
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))} | {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}


def _input_value(text: str, user_ns: dict[str, Any]) -> Any:
    """A variable of the notebook (a DataFrame, a path, an Input) or else a path."""
    if text.isidentifier() and text in user_ns and not os.path.exists(text):
        return user_ns[text]
    return text


def _guess_type(value: Any) -> str:
    if hasattr(value, "columns") and hasattr(value, "iloc"):
        return "mltable"
    if isinstance(value, Input):
        return value.type
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else ""
    if text.lower().endswith(_TABLE_EXTS):
        return "mltable"
    if os.path.isfile(text):
        return "uri_file"
    return "uri_folder"


def _parse_env(items: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--environment_variables takes KEY=VALUE (got {item!r})")
        env[key] = value
    return env


def build_job(options: dict[str, Any], functions: dict[str, Any], source: str | None,
              user_ns: dict[str, Any] | None = None) -> ParallelJob:
    """The ParallelJob for magic ``options`` (flag dest -> value, None = not given) and the cell's
    ``functions`` (init / run / shutdown). Raises :class:`PrsError` for bad values."""
    o = {k: options.get(k) for k in _FLAG_DESTS}
    if o["input"] is None:
        raise UsageError("%%parallel_run needs --input PATH (a file, folder or glob) or --input VARIABLE "
                         "(a DataFrame); set it once with %parallel_run_defaults --input ...")
    value = _input_value(o["input"], user_ns or {})
    in_type = o["input_type"] or _guess_type(value)
    outputs: dict[str, Output] = {}
    append_row_to = None
    out_binding: str | None = None
    if o["append_row_to"] is not None:
        target = o["append_row_to"]
        is_file = bool(target) and os.path.splitext(target.rstrip("/"))[1] != "" and not target.endswith("/")
        outputs["results"] = Output(type="uri_file" if is_file else "uri_folder")
        append_row_to = "${{outputs.results}}"
        out_binding = target or None
    retry: dict[str, Any] = {}
    if o["max_retries"] is not None:
        retry["max_retries"] = o["max_retries"]
    if o["timeout"] is not None:
        retry["timeout"] = o["timeout"]
    local: dict[str, Any] = {}
    for key in ("backend", "runs_root", "allowed_failed_percent"):
        if o[key] is not None:
            local[key] = o[key]
    if o["is_deterministic"] is not None:
        local["is_deterministic"] = o["is_deterministic"] == "true"
    keys = [k.strip() for k in o["partition_keys"].split(",") if k.strip()] if o["partition_keys"] else None
    job = parallel_run_function(
        name=o["name"] or "parallel_run",
        inputs={"data": Input(type=in_type)},
        outputs=outputs,
        input_data="${{inputs.data}}",
        mini_batch_size=o["mini_batch_size"],
        partition_keys=keys,
        max_concurrency_per_instance=o["max_concurrency_per_instance"],
        instance_count=o["instance_count"],
        error_threshold=o["error_threshold"],
        mini_batch_error_threshold=o["mini_batch_error_threshold"],
        retry_settings=retry or None,
        logging_level=o["logging_level"],
        environment_variables=_parse_env(o["environment_variables"]),
        task=RunFunction(init=functions.get("init"), run=functions.get("run"), shutdown=functions.get("shutdown"),
                         program_arguments=o["program_arguments"], append_row_to=append_row_to, source=source),
        **local,
    )
    bound: dict[str, Any] = {"data": value}
    if out_binding:
        bound["results"] = out_binding
    return job(**bound)


def export_job(job: ParallelJob, path: str) -> str:
    """Write ``job`` as Azure ML YAML at ``path`` with ``job.to_yaml`` (the cell's source becomes a real
    entry script in ``<stem>_src/`` beside it; see :mod:`prs_nb.yamlio.export`). Returns the entry
    script's path."""
    from prs_nb.yaml_io import component_name

    if not job.spec.task.source:
        raise PrsError("this job has no cell source to export: define init/run in the %%parallel_run cell")
    job.to_yaml(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(path)), f"{stem}_src",
                        f"{component_name(job.spec.name)}_entry.py")


def dry_run_table(job: ParallelJob, limit: int = 20) -> tuple[int, Any]:
    """(number of mini-batches, DataFrame of the first ``limit``: index, items, first items)."""
    import pandas as pd

    from prs_nb.data import plan_input

    spec = job.spec
    plan = plan_input(spec, spec.effective(), os.getcwd(), count_rows=True)
    rows = []
    n = 0
    for mb in plan:
        if n < limit:
            rows.append((mb.index, mb.items, mb.describe()))
        n += 1
    return n, pd.DataFrame(rows, columns=["mini_batch", "items", "first items"])


@magics_class
class ParallelRunMagics(Magics):
    """``%%parallel_run`` and ``%parallel_run_defaults`` (see the module docstring)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.defaults: dict[str, Any] = {}

    # ------------------------------------------------------------------ %parallel_run_defaults
    @magic_arguments()
    @argument("--reset", action="store_true", help="Forget every default set in this session.")
    @_job_flags
    @line_magic
    def parallel_run_defaults(self, line: str) -> None:
        """Show (no flags) or set defaults for every later %%parallel_run in this session."""
        args = parse_argstring(self.parallel_run_defaults, line)
        if args.reset:
            self.defaults.clear()
        given = _given(args)
        self.defaults.update(given)
        if self.defaults:
            print("%%parallel_run defaults: " + " ".join(f"--{k} {v!r}" for k, v in self.defaults.items()))
        else:
            print("%%parallel_run defaults: (none set; JobSpec's defaults apply)")

    # ------------------------------------------------------------------ %%parallel_run
    @magic_arguments()
    @_job_flags
    @argument("-o", "--output", dest="out_var", metavar="VAR", help="Store the RunResult in this variable.")
    @argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
              help="Show the mini-batches the job would run, without running it.")
    @argument("--export", metavar="PATH", help="Write the job as Azure ML YAML (the cell becomes an entry script).")
    @argument("--form", action="store_true", help="Open the job form pre-filled with these settings.")
    @argument("--progress", choices=("auto", "notebook", "text", "none"), default="auto",
              help="Live display: notebook widgets in a kernel, a text bar in a terminal (auto).")
    @argument("--no-raise", "--no_raise", dest="no_raise", action="store_true",
              help="Do not raise ParallelRunFailed when the job fails (the result is still stored).")
    @argument("--ray-address", "--ray_address", dest="ray_address", metavar="ADDRESS",
              help="With --backend ray: the cluster ('ray://<head>:10001', 'auto'); default RAY_ADDRESS, "
                   "else a local Ray instance.")
    @cell_magic
    def parallel_run(self, line: str, cell: str) -> Any:
        """Run the init/run/shutdown functions this cell defines as a parallel job."""
        args = parse_argstring(self.parallel_run, line)
        options = dict(self.defaults)
        options.update(_given(args))
        shell = self.shell
        assert shell is not None  # registered magics always have their shell
        user_ns = shell.user_ns
        names = _defined_names(cell)
        if "run" not in names:
            raise UsageError("%%parallel_run: the cell must define run(mini_batch) (and optionally init() and "
                             "shutdown())")
        try:
            job = build_job(options, {}, cell, user_ns)  # check flags before running the cell's code
        except PrsError as exc:
            raise UsageError(f"%%parallel_run: {exc}") from None
        filename = shell.compile.cache(cell) if hasattr(shell.compile, "cache") else "<parallel_run>"
        exec(compile(cell, filename, "exec"), user_ns)  # noqa: S102 - the user's own cell, as a normal cell runs
        functions: dict[str, Any] = {n: user_ns[n] for n in ("init", "run", "shutdown") if n in names and callable(user_ns.get(n))}
        try:
            job = build_job(options, functions, cell, user_ns)
        except PrsError as exc:
            raise UsageError(f"%%parallel_run: {exc}") from None
        if args.export:
            entry = export_job(job, _unquote(args.export))
            print(f"exported job {job.spec.name!r} to {_unquote(args.export)} (entry script {entry})")
        if args.form:
            from prs_nb.jupyter.form import JobForm

            form = JobForm.from_job(job)
            form.display()
            if args.out_var:
                user_ns[args.out_var] = form
            return None
        if args.dry_run:
            n, table = dry_run_table(job)
            if args.out_var:
                user_ns[args.out_var] = table
            self._show(table, f"dry run: {n} mini-batch(es) would run" + (f"; first {len(table)} shown" if
                                                                             n > len(table) else ""))
            return None
        if args.export:
            return None
        result = self._run(job, args.progress, args.ray_address)
        if args.out_var:
            user_ns[args.out_var] = result
        if not result.succeeded and not args.no_raise:
            try:
                result.raise_for_status()
            except JobFailedError as exc:
                raise ParallelRunFailed(str(exc), result) from exc.__cause__
        return None

    def _in_kernel(self) -> bool:
        return getattr(self.shell, "kernel", None) is not None

    def _show(self, table: Any, title: str) -> None:
        print(title)
        from IPython.display import display

        display(table)

    def _run(self, job: ParallelJob, progress: str, ray_address: str | None = None) -> RunResult:
        mode = progress
        if mode == "auto":
            mode = "notebook" if self._in_kernel() else "text"
        listener: Any
        if mode == "notebook":
            from prs_nb.jupyter.progress import NotebookProgress

            listener = NotebookProgress(job.spec.name)
        elif mode == "text":
            from prs_nb.progress import TextProgress

            listener = TextProgress(job.spec.name, file=sys.stderr)
        else:
            listener = False
        result = job.run(progress=listener, ray_address=_unquote(ray_address) if ray_address else None)
        if mode != "notebook":
            print(result.summary())  # a terminal has no live error table: the summary lists the errors
        return result


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext prs_nb``: register %%parallel_run and %parallel_run_defaults."""
    ipython.register_magics(ParallelRunMagics)
