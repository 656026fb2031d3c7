"""Reuse (``is_deterministic`` / v1 ``allow_reuse``, default True; contract 9 and 12).

An identical rerun is served from a cache instead of running: no worker starts, the outputs of the
earlier run are copied into the new run directory, the new run directory gets a
``reused.json`` saying where they came from, and the RunResult has ``reused=True``.

::

    run_job --fingerprint()--> Fingerprint(key) --ReuseCache.lookup(key)--> hit: serve() -> RunResult(reused)
                                                                      \\--> miss: run, then store(key, result)

**The key** is a SHA-256 over these parts (each hashed separately, so a miss can say what changed):

* ``prs_nb``: the prs_nb version;
* ``settings``: every JobSpec field that can change what runs or what is written (batching,
  concurrency, thresholds, retries, logging level, ports, task template, output action, backend...),
  but not cosmetic ones (display_name, description, tags, properties, compute, identity, runs_root);
* ``code``: the code folder's content (every regular file's relative path and bytes, skipping
  ``__pycache__``, ``.git``, ``.ipynb_checkpoints`` and the runs root; without a code folder, the
  entry script alone), and for notebook functions their cloudpickle bytes and source text, plus the
  text of the module file they come from when it has one (cloudpickle ships those by reference);
* ``arguments``: the bound program arguments (output paths and this run's directory replaced by
  placeholders: where the outputs go is not part of the key);
* ``environment``: the job's ``environment_variables``;
* ``data``: every bound data input by content - files and folders (recursively) by relative path,
  size and the SHA-256 of their bytes (files over 64 MiB: of their size, mtime and their first,
  middle and last MiB - the driver never reads a big table whole, contract 12's "path, size,
  mtime" plus samples; an edit that keeps size and mtime and misses the samples is not seen), MLTables by their file and every path they list, DataFrames
  by ``pandas.util.hash_pandas_object``, literals by value. Non-regular files (named pipes,
  sockets, devices) are recorded by name and type and never opened. A remote URI cannot be
  fingerprinted: such a job always runs.

Content digests are memoised per file in ``filehashes.sqlite`` keyed by (path, size, mtime, ctime,
inode), so a rerun on unchanged data only stats its files; any write changes ctime and rehashes.

**Storage**: ``<runs root>/.cache/<key>/`` holds ``entry.json`` (the source run, counts and tables)
and ``outputs/<name>``, a copy of each output (not hard links: editing one run's output must not
change another's; outputs bound to user paths are overwritten by later runs anyway). An entry is built in a temporary folder and published with one
``os.rename``; a per-key ``flock`` serialises publishing and serving, so two identical jobs running
at once both finish and one entry survives. Only Completed runs are stored. On a hit each cached
file's size and mtime are checked first; an entry that was tampered with is dropped (a miss).
The cache lives under the runs root, so it survives kernel restarts; delete ``.cache`` to clear it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prs_nb.results import RunResult
    from prs_nb.spec import JobSpec

CACHE_DIR = ".cache"
ENTRY_FILE = "entry.json"
REUSED_FILE = "reused.json"
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache"})
_COSMETIC = frozenset({"display_name", "description", "tags", "properties", "experiment_name", "compute",
                       "identity", "runs_root", "is_deterministic", "bindings", "output_bindings", "task",
                       "environment_variables"})
_CHUNK = 1024 * 1024
#: Files above this size are fingerprinted by size, mtime and three 1 MiB samples instead of a full read,
#: so a 50 GB table does not cost a minute of hashing before every first run (see the module docstring).
BIG_FILE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Fingerprint:
    """The reuse key of one run (``key``), or why it has none (``reason``); ``parts`` are the digests of
    each part of the key (prs_nb, settings, code, arguments, environment, data)."""

    key: str | None
    parts: Mapping[str, str]
    reason: str = ""


# ---------------------------------------------------------------------------------- fingerprint
class _Unhashable(Exception):
    """An input that cannot be fingerprinted (a remote URI): the job runs."""


def fingerprint(spec: JobSpec, *, base_dir: str, code_dir: str | None, functions_blob: bytes | None,
                argv: list[str], run_dir: str, runs_root: str,
                output_paths: Mapping[str, str] | None = None) -> Fingerprint:
    """The reuse key of ``spec`` bound as it is now (see the module docstring for what it covers)."""
    from prs_nb import __version__

    hasher = _FileHasher(os.path.join(runs_root, CACHE_DIR), skip=runs_root)
    parts: dict[str, str] = {"prs_nb": _digest(__version__)}
    settings = {f.name: _canonical(getattr(spec, f.name)) for f in dataclasses.fields(spec)
                if f.name not in _COSMETIC}
    t = spec.task
    settings["task"] = {"entry_script": t.entry_script, "program_arguments": t.program_arguments,
                        "append_row_to": t.append_row_to, "model": t.model}
    parts["settings"] = _digest(json.dumps(settings, sort_keys=True, default=repr))
    try:
        code = hashlib.sha256()
        if code_dir is not None and spec.task.code:
            code.update(hasher.tree(code_dir, code=True).encode())
        elif code_dir is not None and t.entry_script:  # no code folder: the script alone, not the whole cwd
            code.update(hasher.path(os.path.join(code_dir, t.entry_script)).encode())
        if functions_blob is not None:
            code.update(functions_blob)
            code.update(_function_sources(spec).encode())
        parts["code"] = code.hexdigest()
        parts["arguments"] = _digest(json.dumps(_placeholders(argv, run_dir, output_paths or {})))
        parts["environment"] = _digest(json.dumps(sorted(spec.environment_variables.items())))
        data = hashlib.sha256()
        for name in sorted(set(spec.inputs) | set(spec.bindings)):
            data.update(f"\0{name}\0".encode())
            data.update(_input_digest(spec, name, base_dir, hasher).encode())
        parts["data"] = data.hexdigest()
    except _Unhashable as exc:
        return Fingerprint(None, parts, str(exc))
    finally:
        hasher.close()
    key = _digest(json.dumps(parts, sort_keys=True))
    return Fingerprint(key, parts)


def _placeholders(argv: list[str], run_dir: str, output_paths: Mapping[str, str]) -> list[str]:
    """argv with output locations and this run's directory as placeholders: where outputs go is not part
    of the key (a hit copies them to wherever this run wants them)."""
    swaps = sorted(((p, f"<outputs.{n}>") for n, p in output_paths.items()), key=lambda x: -len(x[0]))
    out = []
    for arg in argv:
        for path, mark in swaps:
            arg = arg.replace(path, mark)
        out.append(arg.replace(run_dir, "<run_dir>"))
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _function_sources(spec: JobSpec) -> str:
    import inspect

    t = spec.task
    texts = [t.source or ""]
    for fn in (t.init, t.run, t.shutdown):
        if fn is None:
            continue
        try:
            texts.append(inspect.getsource(fn))
        except (OSError, TypeError):
            texts.append(getattr(fn, "__qualname__", repr(fn)))
        # cloudpickle ships functions of importable modules by reference: their module's text is the code
        module = sys.modules.get(getattr(fn, "__module__", "") or "")
        file = getattr(module, "__file__", None)
        if file and getattr(module, "__name__", "") != "__main__" and os.path.isfile(file):
            with open(file, "rb") as fh:
                texts.append(hashlib.sha256(fh.read()).hexdigest())
    return "\0".join(texts)


def _input_digest(spec: JobSpec, name: str, base_dir: str, hasher: _FileHasher) -> str:
    from prs_nb.engine.run import input_value

    port = spec.inputs.get(name)
    value = input_value(spec, name, base_dir)
    if port is not None and port.is_literal:
        return "literal:" + json.dumps(_canonical(value), sort_keys=True)
    return _value_digest(value, base_dir, hasher, mltable=port is not None and port.type == "mltable")


def _value_digest(value: Any, base_dir: str, hasher: _FileHasher, *, mltable: bool) -> str:
    if value is None:
        return "none"
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.DataFrame):
        h = hashlib.sha256(pd.util.hash_pandas_object(value, index=True).values.tobytes())
        h.update(json.dumps([[str(c), str(t)] for c, t in value.dtypes.items()]).encode())
        return "frame:" + h.hexdigest()
    if isinstance(value, (list, tuple)):
        return "list:" + _digest("\0".join(_value_digest(v, base_dir, hasher, mltable=mltable) for v in value))
    if hasattr(value, "path") and hasattr(value, "type"):  # an Input bound as a value
        return _value_digest(value.path, base_dir, hasher, mltable=mltable or value.type == "mltable")
    if not isinstance(value, (str, os.PathLike)):
        return "value:" + json.dumps(_canonical(value))
    text = os.fspath(value)
    if "://" in text:
        raise _Unhashable(f"input {text!r} is a remote URI; its content cannot be fingerprinted locally")
    path = text if os.path.isabs(text) else os.path.join(base_dir, text)
    out = [hasher.path(path)]
    if mltable:
        from prs_nb.data.mltable import find_mltable, load_mltable

        mlt_file = find_mltable(path)
        if mlt_file is not None:
            try:
                mlt = load_mltable(mlt_file, where="reuse fingerprint")
            except ValueError:
                return "mltable-error:" + out[0]  # the run itself reports the problem
            if any("://" in p for p in mlt.paths):
                raise _Unhashable(f"MLTable {mlt_file} lists a remote URI; its content cannot be fingerprinted locally")
            out.extend(hasher.path(p) for p in mlt.paths)
    return "path:" + _digest("\0".join(out))


class _FileHasher:
    """Digests of files, folders and globs, memoised by stat in ``<cache>/filehashes.sqlite``."""

    def __init__(self, cache_dir: str, *, skip: str) -> None:
        self.cache_dir = cache_dir
        self.skip = os.path.realpath(skip)
        self._db: sqlite3.Connection | None = None
        self._new: list[tuple[str, int, int, int, int, str]] = []

    # -- memo
    def _memo(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(self.cache_dir, exist_ok=True)
            self._db = sqlite3.connect(os.path.join(self.cache_dir, "filehashes.sqlite"), timeout=60)
            with self._db:
                self._db.execute("CREATE TABLE IF NOT EXISTS f (path TEXT PRIMARY KEY, size INT, mtime INT, "
                                 "ctime INT, ino INT, digest TEXT)")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            if self._new:
                with contextlib.suppress(sqlite3.Error), self._db:
                    self._db.executemany("INSERT OR REPLACE INTO f VALUES (?, ?, ?, ?, ?, ?)", self._new)
            self._db.close()
            self._db = None

    def _prefetch(self, root: str) -> dict[str, tuple[int, int, int, int, str]]:
        rows = self._memo().execute("SELECT path, size, mtime, ctime, ino, digest FROM f WHERE path >= ? AND "
                                    "path < ?", (root, root + "\U0010ffff"))
        return {r[0]: tuple(r[1:]) for r in rows}

    def _file(self, path: str, st: os.stat_result, memo: dict[str, tuple[int, int, int, int, str]]) -> str:
        if not stat.S_ISREG(st.st_mode):  # a pipe, socket or device: never opened (it could block)
            return f"special:{stat.S_IFMT(st.st_mode)}"
        sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        known = memo.get(path)
        if known is not None and known[:4] == sig:
            return known[4]
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                if st.st_size > BIG_FILE:  # a big table: its stat and three samples, not a full read
                    h.update(f"big:{st.st_size}:{st.st_mtime_ns}".encode())
                    for offset in (0, st.st_size // 2, st.st_size - _CHUNK):
                        fh.seek(offset)
                        h.update(fh.read(_CHUNK))
                else:
                    while chunk := fh.read(_CHUNK):
                        h.update(chunk)
        except OSError as exc:
            return f"unreadable:{exc.errno}"  # the run reports it; its key then never matches a good run
        digest = h.hexdigest()
        self._new.append((path, *sig, digest))
        return digest

    # -- public
    def path(self, path: str) -> str:
        """Digest of a file, a folder (recursive) or a glob pattern."""
        import glob

        path = os.path.abspath(path)
        if os.path.isdir(path):
            return "dir:" + self.tree(path)
        if os.path.lexists(path):
            try:
                st = os.stat(path)
            except OSError as exc:
                return f"broken:{exc.errno}"
            return f"file:{st.st_size}:" + self._file(path, st, self._prefetch(path))
        matches = sorted(glob.glob(path, recursive=True))
        return "glob:" + _digest("\0".join(f"{m}\0{self.path(m)}" for m in matches))

    def tree(self, root: str, *, code: bool = False) -> str:
        """Digest of every file below ``root``: relative path, type, size and content."""
        memo = self._prefetch(os.path.abspath(root))
        h = hashlib.sha256()
        for rel, full, st in self._walk(os.path.abspath(root), code=code):
            h.update(f"{rel}\0{st.st_size}\0{self._file(full, st, memo)}\n".encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def _walk(self, root: str, *, code: bool) -> Iterator[tuple[str, str, os.stat_result]]:
        seen: set[tuple[int, int]] = set()
        stack = [("", root)]
        while stack:
            rel_dir, folder = stack.pop()
            try:
                st_dir = os.stat(folder)
                if (st_dir.st_dev, st_dir.st_ino) in seen or os.path.realpath(folder) == self.skip:
                    continue
                seen.add((st_dir.st_dev, st_dir.st_ino))
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name, reverse=True)
            except OSError:
                continue
            files = []
            for e in entries:
                if code and (e.name in _SKIP_DIRS or e.name.endswith(".pyc")):
                    continue
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                try:
                    st = os.stat(e.path)  # follows symlinks, like the data layer
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append((rel, e.path))
                else:
                    files.append((rel, e.path, st))
            yield from reversed(files)


# ---------------------------------------------------------------------------------- the cache
class ReuseCache:
    """The cache under one runs root: :meth:`lookup`, :meth:`serve` (a hit) and :meth:`store`."""

    def __init__(self, runs_root: str) -> None:
        self.root = os.path.join(os.path.abspath(runs_root), CACHE_DIR)

    def _entry_dir(self, key: str) -> str:
        return os.path.join(self.root, key)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(os.path.join(self.root, f"{key}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if sys.platform != "win32":
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The entry of ``key`` if it exists and its files are intact, else None (a broken one is removed)."""
        entry_dir = self._entry_dir(key)
        try:
            with open(os.path.join(entry_dir, ENTRY_FILE), encoding="utf-8") as fh:
                entry: dict[str, Any] = json.load(fh)
        except (OSError, ValueError):
            return None
        for rel, (size, mtime_ns) in entry.get("files", {}).items():
            try:
                st = os.stat(os.path.join(entry_dir, rel))
            except OSError:
                st = None
            if st is None or st.st_size != size or st.st_mtime_ns != mtime_ns:
                self._discard(entry_dir)
                return None
        return entry

    def _discard(self, entry_dir: str) -> None:
        trash = f"{entry_dir}.trash-{secrets.token_hex(4)}"
        with contextlib.suppress(OSError):
            os.rename(entry_dir, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def serve(self, fp: Fingerprint, *, spec: JobSpec, run_id: str, run_dir: str,
              output_paths: dict[str, str]) -> RunResult | None:
        """Materialise a hit into ``run_dir`` and return its RunResult, or None on a miss."""
        from prs_nb.results import RunResult

        if fp.key is None:
            return None
        start = time.time()
        with self._lock(fp.key):
            entry = self.lookup(fp.key)
            if entry is None:
                return None
            entry_dir = self._entry_dir(fp.key)
            logs_dir = os.path.join(run_dir, "logs")
            os.makedirs(logs_dir, exist_ok=True)
            for name, path in output_paths.items():
                src = os.path.join(entry_dir, "outputs", name)
                if os.path.lexists(src):
                    _materialise(src, path)
            if not output_paths and os.path.isdir(os.path.join(entry_dir, "outputs", "_")):
                _materialise(os.path.join(entry_dir, "outputs", "_"), os.path.join(run_dir, "outputs"))
        out_file = None
        if entry.get("output_name") is not None and entry["output_name"] in output_paths:
            base = output_paths[entry["output_name"]]
            out_file = base if entry.get("output_is_file") else os.path.join(base, entry["output_file_name"])
        record = {"reused": True, "key": fp.key, "source_run_dir": entry["run_dir"], "source_run_id": entry["run_id"],
                  "source_job_name": entry["job_name"], "time": time.time(), "parts": dict(fp.parts)}
        _write_json(os.path.join(run_dir, REUSED_FILE), record)
        with open(os.path.join(logs_dir, "job_result.txt"), "w", encoding="utf-8") as fh:
            fh.write(f"Completed (reused). Outputs copied from run {entry['run_id']} of job {entry['job_name']!r}, "
                     f"which had identical code, data, settings, arguments and environment variables.\n"
                     f"Its logs: {os.path.join(entry['run_dir'], 'logs')}\nNo worker was started. Run again with "
                     "is_deterministic=False (prs-nb run --no-reuse) to force a rerun.\n")
        counts = dict(entry["counts"])
        counts["workers"] = 0
        return RunResult(
            job_name=spec.name, run_id=run_id, run_dir=run_dir, status="Completed", reason="", counts=counts,
            output_paths=output_paths, output_path=out_file, logs_dir=logs_dir, duration=time.time() - start,
            reused=True, backend=spec.backend, read_options=dict(entry.get("read_options", {})),
            _batch_rows=[tuple(r) for r in entry.get("batch_rows", [])],
            _error_rows=[tuple(r) for r in entry.get("error_rows", [])],
        )

    def store(self, fp: Fingerprint, result: RunResult, spec: JobSpec) -> None:
        """Publish a Completed run under ``fp.key`` (nothing happens for other runs or without a key)."""
        if fp.key is None or result.status != "Completed" or result.reused:
            return
        os.makedirs(self.root, exist_ok=True)
        tmp = os.path.join(self.root, f"tmp-{fp.key[:16]}-{secrets.token_hex(4)}")
        try:
            os.makedirs(os.path.join(tmp, "outputs"))
            sources = dict(result.output_paths) or {"_": os.path.join(result.run_dir, "outputs")}
            for name, path in sources.items():
                if os.path.lexists(path):
                    _materialise(path, os.path.join(tmp, "outputs", name))
            files = {}
            for folder, _dirs, names in os.walk(os.path.join(tmp, "outputs")):
                for n in names:
                    full = os.path.join(folder, n)
                    st = os.stat(full)
                    files[os.path.relpath(full, tmp)] = (st.st_size, st.st_mtime_ns)
            out_name = spec.append_row_output
            entry = {
                "key": fp.key, "parts": dict(fp.parts), "job_name": result.job_name, "run_id": result.run_id,
                "run_dir": result.run_dir, "time": time.time(), "counts": result.counts,
                "read_options": result.read_options, "batch_rows": result._batch_rows,
                "error_rows": result._error_rows, "files": files, "output_name": out_name,
                "output_is_file": out_name is not None and spec.outputs[out_name].type == "uri_file",
                "output_file_name": os.path.basename(result.output_path) if result.output_path else None,
            }
            _write_json(os.path.join(tmp, ENTRY_FILE), entry)
            with self._lock(fp.key):
                if self.lookup(fp.key) is None:
                    with contextlib.suppress(OSError):  # a broken entry's leftovers: replace them
                        shutil.rmtree(self._entry_dir(fp.key))
                    os.rename(tmp, self._entry_dir(fp.key))
        except (OSError, TypeError, ValueError) as exc:
            import warnings

            warnings.warn(f"prs_nb could not store run {result.run_id} in the reuse cache {self.root}: {exc}; "
                          "the run itself is fine, a rerun will run again", RuntimeWarning, stacklevel=3)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _materialise(src: str, dst: str) -> None:
    """Copy ``src`` (file or folder) to ``dst``, each file through a temporary name and a rename, so a
    reader never sees half a file. Copies, not hard links: editing one run's output must never change
    another run's (or the cache's) copy."""
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
        for name in sorted(os.listdir(src)):
            _materialise(os.path.join(src, name), os.path.join(dst, name))
        return
    if not os.path.isfile(src):
        return  # a pipe or socket left in an output folder is not output
    tmp = f"{dst}.prs-tmp-{secrets.token_hex(4)}"
    shutil.copy2(src, tmp)  # sendfile / copy_file_range in the kernel on Linux
    os.replace(tmp, dst)


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)
