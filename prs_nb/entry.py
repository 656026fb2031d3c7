"""Loading and calling the user's entry code inside a worker.

The entry is either an entry script file in a code folder (Azure's ``code`` + ``entry_script``,
imported with the code folder first on ``sys.path``) or ``init``/``run``/``shutdown`` functions
shipped by value with cloudpickle. :class:`WorkerRuntime` is the per-process state shared by every
backend: the process worker, the inline loop and Ray actors all call ``start()``, ``run_batch()``
and ``stop()``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from prs_nb.errors import EntryScriptError
from prs_nb.outputs import SPILL_CHARS, spill

# What a worker needs to know; built by the driver, sent once (pickled) to every worker.


@dataclass(frozen=True)
class WorkerConfig:
    entry_kind: str  # "script" | "functions"
    code_dir: str | None
    entry_script: str | None
    functions_blob: bytes | None
    argv: tuple[str, ...]
    env: dict[str, str]
    logs_dir: str
    output_dir: str
    node_id: int
    process_name: str
    logging_level: str
    sys_path: tuple[str, ...]
    append_row: bool
    append_row_header: bool
    append_row_csv_kwargs: dict[str, Any] = field(default_factory=dict)
    redirect_output: bool = True
    working_dir: str | None = None
    spill_dir: str | None = None
    #: inline backend only: the functions themselves, when they cannot be pickled (never sent anywhere)
    functions: dict[str, Any] | None = None
    #: where the shipped functions' code comes from, for tracebacks (see prs_nb.sources)
    code_sources: dict[tuple[str, int], tuple[str, tuple[str, ...]]] | None = None
    #: object-store file inputs are downloaded below ``<download_dir>/<node>/<process>/<mini-batch>/``
    #: (None: a temporary folder of the worker's machine); each mini-batch's folder goes when run() returns
    download_dir: str | None = None


class MiniBatchContext:
    """The second argument of ``run(mini_batch, mini_batch_context)`` (contract 4.3 / 12)."""

    __slots__ = ("partition_key_value", "minibatch_index", "global_row_index_lower_bound", "dataset")

    def __init__(self, partition_key_value: dict[str, Any], minibatch_index: int,
                 global_row_index_lower_bound: int | None, dataset: str) -> None:
        self.partition_key_value = partition_key_value
        self.minibatch_index = minibatch_index
        self.global_row_index_lower_bound = global_row_index_lower_bound
        self.dataset = dataset

    def __repr__(self) -> str:
        return (f"MiniBatchContext(minibatch_index={self.minibatch_index}, partition_key_value="
                f"{self.partition_key_value!r}, global_row_index_lower_bound={self.global_row_index_lower_bound},"
                f" dataset={self.dataset!r})")


class BadReturnError(TypeError):
    """run() returned something that is not a list, tuple or DataFrame."""


@dataclass
class EntryFunctions:
    init: Callable[[], Any] | None
    run: Callable[..., Any]
    shutdown: Callable[[], Any] | None
    takes_context: bool


def takes_context(fn: Callable[..., Any]) -> bool:
    """True iff ``fn`` accepts two positional arguments (contract 12: then the context is passed)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    n = 0
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            n += 1
    return n >= 2


def import_entry_script(code_dir: str | None, entry_script: str) -> ModuleType:
    """Import the entry script: a file path relative to ``code_dir`` or a dotted module name."""
    base = os.path.abspath(code_dir) if code_dir else os.getcwd()
    if base not in sys.path:
        sys.path.insert(0, base)
    path = entry_script if os.path.isabs(entry_script) else os.path.join(base, entry_script)
    if entry_script.endswith(".py") or os.path.sep in entry_script or "/" in entry_script:
        if not os.path.isfile(path):
            raise EntryScriptError(
                f"entry script {entry_script!r} not found in code folder {base!r}: expected a file such as "
                f"'score.py' relative to the code folder"
            )
        mod_name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise EntryScriptError(f"cannot import entry script {path!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(entry_script)
    except ModuleNotFoundError as exc:
        raise EntryScriptError(
            f"entry script {entry_script!r} is neither a file in {base!r} nor an importable module ({exc})"
        ) from exc


def resolve_entry(module: ModuleType | None, funcs: dict[str, Any] | None, where: str) -> EntryFunctions:
    source: Any = module.__dict__ if module is not None else (funcs or {})
    run = source.get("run")
    if run is None or not callable(run):
        raise EntryScriptError(f"{where} defines no run(mini_batch) function: Azure parallel jobs need one")
    init = source.get("init")
    shutdown = source.get("shutdown")
    return EntryFunctions(
        init=init if callable(init) else None,
        run=run,
        shutdown=shutdown if callable(shutdown) else None,
        takes_context=takes_context(run),
    )


def format_exception(exc: BaseException, skip_frames_from: str | None = None) -> str:
    """The user's traceback, with prs_nb's own frames removed so their failing line comes first."""
    frames = traceback.extract_tb(exc.__traceback__)
    keep = [f for f in frames if not _is_internal(f.filename)]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(keep or frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
# prs_nb's own calling frames (not user code that happens to live in the package, like the demo)
_INTERNAL = tuple(os.path.join(_PKG_DIR, name) for name in ("entry.py", "outputs.py", "engine" + os.sep))


def _is_internal(filename: str) -> bool:
    return filename.startswith(_INTERNAL)


class WorkerRuntime:
    """A worker's entry code and per-batch loop body (no I/O with the driver here)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.entry: EntryFunctions | None = None
        self.logs: Any = None
        self._saved_argv: list[str] | None = None
        self._saved_env: dict[str, str | None] = {}
        self._saved_cwd: str | None = None
        self._saved_path: list[str] | None = None
        self._saved_modules: set[str] = set()
        self._fmt: Any = None
        self._downloads: str | None = None  # this worker's download folder, once a remote file came

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> tuple[Any, ...]:
        """Set up logs, environment, argv, the shim; load the entry code and call init().

        Returns ("ready", init_seconds) or ("init_err", exc_type, message, traceback)."""
        cfg = self.config
        from prs_nb import logs as logs_mod

        self._saved_path = list(sys.path)
        self._saved_modules = set(sys.modules)
        for p in cfg.sys_path:
            if p not in sys.path:
                sys.path.append(p)
        self.logs = logs_mod.setup_worker_logging(
            cfg.logs_dir, cfg.node_id, cfg.process_name, cfg.logging_level, redirect_fds=cfg.redirect_output
        )
        for k, v in cfg.env.items():
            self._saved_env.setdefault(k, os.environ.get(k))
            os.environ[k] = v
        self._saved_argv = list(sys.argv)
        sys.argv[:] = list(cfg.argv)
        workdir = cfg.working_dir or cfg.code_dir
        if workdir and os.path.isdir(workdir):
            self._saved_cwd = os.getcwd()
            os.chdir(workdir)
        # `from azureml_user.parallel_run import EntryScript` works from here on (prs_nb/_shim)
        self.logs.configure_entry_script(cfg.output_dir, workdir or os.getcwd())
        from prs_nb.outputs import RowFormatter

        self._fmt = RowFormatter(cfg.append_row, cfg.append_row_header, cfg.append_row_csv_kwargs)
        t0 = time.perf_counter()
        try:
            if cfg.entry_kind == "script":
                assert cfg.entry_script is not None  # noqa: S101 - built by the driver, not user input
                module = import_entry_script(cfg.code_dir, cfg.entry_script)
                self.entry = resolve_entry(module, None, f"entry script {cfg.entry_script!r}")
            else:
                import cloudpickle

                if cfg.code_dir and os.path.abspath(cfg.code_dir) not in sys.path:
                    # helper modules in the code folder import as they would beside an entry script
                    sys.path.insert(0, os.path.abspath(cfg.code_dir))
                funcs = cfg.functions if cfg.functions is not None else cloudpickle.loads(cfg.functions_blob or b"")
                if cfg.functions is None:
                    from prs_nb.sources import restore_sources

                    restore_sources(funcs, cfg.code_sources)
                self.entry = resolve_entry(None, funcs, "the functions given to RunFunction")
            if self.entry.init is not None:
                self.entry.init()
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is reported, incl. SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            tb = format_exception(exc)
            self.logs.write_user_error("init", None, None, tb)
            return ("init_err", type(exc).__name__, _safe_str(exc), tb)
        return ("ready", time.perf_counter() - t0)

    def stop(self) -> tuple[str, str, str] | None:
        """Call shutdown(); return (exc_type, message, traceback) if it raised, else None. Undo
        process-wide changes (inline backend)."""
        err = None
        try:
            if self.entry is not None and self.entry.shutdown is not None:
                self.entry.shutdown()
        except BaseException as exc:  # noqa: BLE001 - reported, not raised: the job's results stand
            if isinstance(exc, KeyboardInterrupt):
                raise
            tb = format_exception(exc)
            err = (type(exc).__name__, _safe_str(exc), tb)
            if self.logs is not None:
                self.logs.write_user_error("shutdown", None, None, tb)
        self.restore()
        if self._downloads is not None:
            shutil.rmtree(self._downloads, ignore_errors=True)
            self._downloads = None
        return err

    def restore(self) -> None:
        """Undo process-wide changes, so that an inline job leaves the caller's process as it was:
        argv, environment, working directory, sys.path, and the modules imported from the code
        folder (a second job with another code folder must not get the first one's helpers)."""
        if self._saved_path is not None:
            sys.path[:] = self._saved_path
            self._saved_path = None
            code_dir = os.path.abspath(self.config.code_dir) + os.sep if self.config.code_dir else None
            for name in set(sys.modules) - self._saved_modules:
                file = getattr(sys.modules.get(name), "__file__", None) or ""
                if code_dir and os.path.abspath(file).startswith(code_dir):
                    del sys.modules[name]
        if self._saved_argv is not None:
            sys.argv[:] = self._saved_argv
            self._saved_argv = None
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = {}
        if self._saved_cwd is not None:
            os.chdir(self._saved_cwd)
            self._saved_cwd = None
        if self.logs is not None:
            self.logs.close()
            self.logs = None

    # ---------------------------------------------------------------- one mini-batch
    def _download_dir(self, mb: Any) -> str | None:
        """The folder for this mini-batch's downloaded files (None when it has no remote file)."""
        from prs_nb.data.base import FILES, RemoteFile

        if mb.kind != FILES or not any(isinstance(p, RemoteFile) for p in mb.source):
            return None
        if self._downloads is None:
            cfg = self.config
            if cfg.download_dir:
                self._downloads = os.path.join(cfg.download_dir, str(cfg.node_id), cfg.process_name)
            else:
                import tempfile

                self._downloads = tempfile.mkdtemp(prefix=f"prs_nb-downloads-{cfg.node_id}-{cfg.process_name}-")
        return os.path.join(self._downloads, str(mb.index))

    def run_batch(self, index: int, attempt: int, mb: Any) -> tuple[Any, ...]:
        """Read the mini-batch, call run(), check and format the result.

        Returns ("ok", index, items, returned, text, header, run_seconds) or
        ("err", index, items, kind, exc_type, message, traceback, run_seconds)."""
        folder = self._download_dir(mb)
        if folder is None:
            return self._run_batch(index, attempt, mb, None)
        try:
            return self._run_batch(index, attempt, mb, folder)
        finally:  # downloaded files live as long as run() uses them
            shutil.rmtree(folder, ignore_errors=True)

    def _run_batch(self, index: int, attempt: int, mb: Any, folder: str | None) -> tuple[Any, ...]:
        entry = self.entry
        assert entry is not None  # noqa: S101 - start() succeeded before any batch is sent
        items: int | None = mb.items
        try:
            from prs_nb.data import read_mini_batch

            data = read_mini_batch(mb, folder)
            items = len(data)
        except BaseException as exc:  # noqa: BLE001 - a bad slice fails this attempt only
            if isinstance(exc, KeyboardInterrupt):
                raise
            tb = format_exception(exc)
            self.logs.write_user_error("read", index, attempt, tb)
            return ("err", index, items, "read_error", type(exc).__name__, _safe_str(exc), tb, 0.0)
        t0 = time.perf_counter()
        try:
            if entry.takes_context:
                ctx = MiniBatchContext(mb.partition_key_value, mb.index, mb.global_row_index_lower_bound,
                                       mb.input_name)
                result = entry.run(data, ctx)
            else:
                result = entry.run(data)
            dt = time.perf_counter() - t0
            returned, text, header = self._fmt.format(result)
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit included
            dt = time.perf_counter() - t0
            if isinstance(exc, KeyboardInterrupt):
                raise
            kind = "bad_return" if isinstance(exc, BadReturnError) else "exception"
            tb = format_exception(exc)
            self.logs.write_user_error("run", index, attempt, tb)
            return ("err", index, items, kind, type(exc).__name__, _safe_str(exc), tb, dt)
        if len(text) > SPILL_CHARS and self.config.spill_dir:
            text = spill(self.config.spill_dir, index, attempt, text)
        return ("ok", index, items, returned, text, header, dt)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the original failure
        return f"<unprintable {type(exc).__name__}>"
