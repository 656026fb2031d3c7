"""Resuming an interrupted run (kernel restart, Ctrl-C, a SIGKILLed driver).

::

    run_job (first session)  --> run_dir/job.pkl   the job, pickled and HMAC-signed
                                 run_dir/journal   finished mini-batches (engine/journal.py)
                                 run_dir/lock      pid of the driver running it
    resume(run_dir)          --> lock --> verify signature --> unpickle job --> re-list input,
                                 compare fingerprints --> truncate output to the last journaled
                                 offset --> run the rest (same run_dir, run_id, output, logs)

Nothing is unpickled from disk unless its HMAC verifies with this user's key (created once in
``~/.config/prs_nb/``, or ``$PRS_NB_KEY_DIR``, readable by the user only): a run directory copied
from elsewhere, or a job.pkl edited by anyone without the key, is refused, never loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prs_nb.engine.journal import FAILED, SUCCEEDED, JournalEntry, fingerprint, read_journal
from prs_nb.errors import PrsError, ResumeError

JOB_FILE = "job.pkl"
NOT_RESUMABLE_FILE = "not_resumable.txt"
LOCK_FILE = "lock"
JOURNAL_FILE = "journal"
_MAGIC = b"prs_nb signed job 1\n"
KEY_FILE = "run_signing.key"


# ---------------------------------------------------------------- the signing key


def key_dir() -> str:
    """``$PRS_NB_KEY_DIR`` if set, else ``~/.config/prs_nb``."""
    return os.environ.get("PRS_NB_KEY_DIR") or os.path.join(os.path.expanduser("~"), ".config", "prs_nb")


def _key() -> bytes:
    folder = key_dir()
    path = os.path.join(folder, KEY_FILE)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        with open(path, "rb") as fh:
            key = fh.read()
    except OSError as exc:
        raise ResumeError(f"cannot create or read the signing key {path}: {exc}. Set PRS_NB_KEY_DIR to a "
                          "folder of yours where prs_nb may keep it") from None
    if len(key) < 32:
        raise ResumeError(f"the signing key {path} is damaged ({len(key)} bytes, expected 32); delete it (runs "
                          "saved with it can then not be resumed)")
    return key


def _sign(payload: bytes) -> bytes:
    return hmac.new(_key(), _MAGIC + payload, hashlib.sha256).hexdigest().encode()


# ---------------------------------------------------------------- saving and loading the job


def _what_cannot_be_pickled(obj: Any, where: str, depth: int = 0) -> str:
    """The innermost field/key of ``obj`` that cloudpickle cannot pickle, for the error message."""
    import cloudpickle

    children: list[tuple[str, Any]] = []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children = [(f"{where}.{f.name}", getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    elif isinstance(obj, Mapping):
        children = [(f"{where}[{k!r}]", v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        children = [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
    if depth < 6:
        for name, value in children:
            try:
                cloudpickle.dumps(value)
            except Exception:  # noqa: BLE001 - any pickling failure is what we are looking for
                return _what_cannot_be_pickled(value, name, depth + 1)
    try:
        cloudpickle.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - reported with its type and message
        return f"{where} ({type(obj).__name__}): {type(exc).__name__}: {exc}"
    return f"{where} ({type(obj).__name__})"


_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints", "node_modules", ".venv", "venv", "prs_runs"}
_MAX_CODE_FILES = 5000


def _code_dir(spec: Any, base_dir: str) -> str | None:
    t = getattr(spec, "task", None)
    if t is None:
        return None
    if t.code:
        return os.path.abspath(os.path.join(base_dir, t.code))
    return None if t.uses_functions else base_dir  # an entry script without code= lives in base_dir


def code_fingerprint(spec: Any, base_dir: str) -> dict[str, tuple[int, int]]:
    """Size and mtime of the Python files (and parallel_run_step.settings.json) of the job's code
    folder: a resumed run must run the same code. Notebook functions travel inside job.pkl."""
    root = _code_dir(spec, base_dir)
    out: dict[str, tuple[int, int]] = {}
    if root is None or not os.path.isdir(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py") or name == "parallel_run_step.settings.json":
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
                if len(out) >= _MAX_CODE_FILES:
                    return out
    return out


def check_code(saved: dict[str, Any], run_dir: str) -> None:
    """ResumeError if the code folder's Python files changed since the run started."""
    before = saved.get("code")
    if before is None:
        return
    now = code_fingerprint(saved["spec"], saved["base_dir"])
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        what = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise ResumeError(
            f"cannot resume {run_dir}: the job's code changed since the run started ({what} added, removed or "
            "modified): the finished mini-batches ran the old code. Restore it, start the job afresh, or pass "
            "allow_changed_code=True to run the rest with the new code")


def save_job(run_dir: str, spec: Any, base_dir: str, run_id: str) -> None:
    """Write ``run_dir/job.pkl``: the job pickled with cloudpickle and signed with this user's
    key, with a fingerprint of its code folder. Raises :class:`ResumeError` naming the part of the
    job that cannot be pickled."""
    import cloudpickle

    record = {"spec": spec, "base_dir": base_dir, "run_id": run_id, "code": code_fingerprint(spec, base_dir)}
    try:
        payload = cloudpickle.dumps(record)
    except Exception:  # noqa: BLE001 - named precisely below
        what = _what_cannot_be_pickled(spec, "job")
        raise ResumeError(f"this run cannot be resumed later: its job cannot be pickled: {what}. Bind inputs "
                          "to paths or DataFrames (not open files, locks or connections)") from None
    tmp = os.path.join(run_dir, JOB_FILE + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(_MAGIC + _sign(payload) + b"\n" + payload)
    os.replace(tmp, os.path.join(run_dir, JOB_FILE))


def load_job(run_dir: str) -> dict[str, Any]:
    """Read ``run_dir/job.pkl`` after checking its signature; refuse (never unpickle) otherwise."""
    import pickle

    path = os.path.join(run_dir, JOB_FILE)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ResumeError(f"{run_dir} holds no saved job ({JOB_FILE}): it is not a prs_nb run directory, or "
                          "its run was started by a prs_nb version without resume") from None
    head, sep, rest = data.partition(b"\n")
    mac, sep2, payload = rest.partition(b"\n")
    if head + b"\n" != _MAGIC or not sep or not sep2:
        raise ResumeError(f"{path} is not a job saved by prs_nb (unknown format); it was not loaded")
    if not hmac.compare_digest(mac, _sign(payload)):
        raise ResumeError(
            f"{path} is not signed with your prs_nb key ({os.path.join(key_dir(), KEY_FILE)}), so it was NOT "
            "loaded: it was written by another user or machine, with another PRS_NB_KEY_DIR, or changed after "
            "it was written. Only runs you started yourself can be resumed")
    record = pickle.loads(payload)  # noqa: S301 - the HMAC above proves this user's own run wrote it
    if not isinstance(record, dict) or "spec" not in record:
        raise ResumeError(f"{path} does not hold a prs_nb job")
    return record


# ---------------------------------------------------------------- the run lock


def _proc_start(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


class RunLock:
    """``run_dir/lock`` holds the pid (and start time) of the driver running the run; a lock left by
    a driver that died is taken over."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.held = False

    def acquire(self) -> RunLock:
        me = os.getpid()
        text = f"{me} {_proc_start(me) or 0:.2f}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    pid, what = holder
                    raise ResumeError(
                        f"run {os.path.dirname(self.path)} is being run by another driver ({what} pid {pid}): wait "
                        f"for it to finish, or stop it (Ctrl-C there, or kill {pid}) before resuming") from None
                try:
                    os.remove(self.path)  # left by a driver that died: take it over
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            self.held = True
            return self
        raise ResumeError(f"cannot take the lock {self.path}: another driver keeps taking it")

    def _holder(self) -> tuple[int, str] | None:
        """(pid, description) of a live driver holding the lock, else None."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                parts = fh.read().split()
            pid, started = int(parts[0]), float(parts[1])
        except (OSError, ValueError, IndexError):
            return None  # empty or torn: its writer died while taking it
        actual = _proc_start(pid)
        if actual is None or abs(actual - started) > 1.0:
            return None  # that process is gone (or the pid was reused)
        return pid, "this process," if pid == os.getpid() else "process"

    def release(self) -> None:
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.held = False


# ---------------------------------------------------------------- what a resumed session needs


@dataclasses.dataclass
class ResumeInfo:
    """Built by :func:`resume`; run_job uses it instead of starting a new run."""

    run_dir: str
    run_id: str
    entries: dict[int, JournalEntry]
    process_numbers: dict[int, int]

    @property
    def done(self) -> dict[int, JournalEntry]:
        return {i: e for i, e in self.entries.items() if e.status in (SUCCEEDED, FAILED)}

    @property
    def last_offset(self) -> int:
        return max((e.offset for e in self.entries.values()), default=0)

    def verified_plan(self, plan: Iterable[Any]) -> Iterator[Any]:
        """Re-list the input up to the last finished mini-batch and compare each finished one's
        fingerprint with the journal's (ResumeError on any difference); return the mini-batches
        still to run, in order (a new iterator over the rest of the listing)."""
        import itertools

        waiting = set(self.entries)
        ahead: list[Any] = []
        it = iter(plan)
        try:
            while waiting:
                try:
                    mb = next(it)
                except StopIteration:
                    raise ResumeError(
                        f"cannot resume {self.run_dir}: its input changed - it now has fewer mini-batches than "
                        f"were already processed (mini-batch {min(waiting)} no longer exists). Start the job "
                        "afresh") from None
                entry = self.entries.get(mb.index)
                if entry is None:
                    ahead.append(mb)
                    continue
                waiting.discard(mb.index)
                if fingerprint(mb) != entry.fingerprint:
                    raise ResumeError(
                        f"cannot resume {self.run_dir}: its input changed since mini-batch {mb.index} "
                        f"({mb.describe()}) was processed (files added, removed, modified or moved). Start the "
                        "job afresh, or restore the input")
        except PrsError as exc:
            if isinstance(exc, ResumeError):
                raise
            raise ResumeError(f"cannot resume {self.run_dir}: its input cannot be listed any more: {exc}") from exc
        return itertools.chain(ahead, it)

    def check_output(self, out_file: str | None) -> int:
        """The offset to truncate the append_row output to; ResumeError if the output was deleted or
        is shorter than the journal says."""
        offset = self.last_offset
        if out_file is None:
            return 0
        if not os.path.exists(out_file):
            if offset > 0 or any(e.status == SUCCEEDED for e in self.entries.values()):
                raise ResumeError(
                    f"cannot resume {self.run_dir}: its output {out_file} was deleted, and the "
                    f"{sum(e.status == SUCCEEDED for e in self.entries.values())} mini-batches already processed "
                    "would be missing from it. Start the job afresh")
            return 0
        size = os.path.getsize(out_file)
        if size < offset:
            raise ResumeError(
                f"cannot resume {self.run_dir}: its output {out_file} holds {size} bytes but the journal records "
                f"{offset} bytes written: it was truncated or replaced. Start the job afresh")
        return offset


def _process_numbers(logs_dir: str) -> dict[int, int]:
    """Highest processNNN per node in the earlier sessions' logs: new workers continue the count."""
    out: dict[int, int] = {}
    node_root = os.path.join(logs_dir, "sys", "node")
    try:
        nodes = os.listdir(node_root)
    except OSError:
        return out
    for node in nodes:
        if not node.isdigit():
            continue
        try:
            names = os.listdir(os.path.join(node_root, node))
        except OSError:
            continue
        nums = [int(m.group(1)) for n in names if (m := re.match(r"process(\d+)", n))]
        if nums:
            out[int(node)] = max(nums)
    return out


def _keep_previous_reports(logs_dir: str) -> None:
    """The resumed session rewrites job_result.txt and job_error.txt: keep the earlier session's
    under logs/previous_sessions/<n>/."""
    reports = [n for n in ("job_result.txt", "job_error.txt") if os.path.exists(os.path.join(logs_dir, n))]
    if not reports:
        return
    root = os.path.join(logs_dir, "previous_sessions")
    n = 1
    while os.path.exists(os.path.join(root, str(n))):
        n += 1
    dest = os.path.join(root, str(n))
    os.makedirs(dest)
    for name in reports:
        os.replace(os.path.join(logs_dir, name), os.path.join(dest, name))


def resume(run_dir: str | os.PathLike[str], *, progress: Any = None, backend: str | None = None,
           listeners: Iterable[Any] = (), allow_changed_code: bool = False) -> Any:
    """Continue an interrupted run in its own run directory and return its RunResult.

    Mini-batches the journal records as finished are not run again (their counts carry over); the
    append_row output is truncated back to the last journaled point and appended to, so every
    successful mini-batch's rows are in it exactly once. ``progress`` as for ``job.run()`` (None: a
    bar in notebooks and terminals); ``backend`` overrides the saved job's backend (default: the
    same); ``listeners`` receive the engine's events; ``allow_changed_code`` (default False) runs
    the rest even though the entry script's code folder changed since the run started.

    Raises :class:`ResumeError` when the input or the code changed, the output was deleted, another
    driver still runs it, or its saved job is missing, unsigned by this user, or could not be saved."""
    from prs_nb.engine.run import run_job

    path = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(path):
        raise ResumeError(f"run directory {path} does not exist; pass the folder printed as the run's "
                          "run_dir (e.g. prs_runs/<job name>/<run id>)")
    reason_file = os.path.join(path, NOT_RESUMABLE_FILE)
    if os.path.exists(reason_file):
        with open(reason_file, encoding="utf-8") as fh:
            raise ResumeError(f"cannot resume {path}: {fh.read().strip()}")
    lock = RunLock(path).acquire()
    try:
        saved = load_job(path)
        if not allow_changed_code:
            check_code(saved, path)
        spec = saved["spec"]
        if backend is not None:
            spec = spec.replace(backend=backend)
        entries = read_journal(os.path.join(path, JOURNAL_FILE))
        _keep_previous_reports(os.path.join(path, "logs"))
        info = ResumeInfo(path, str(saved["run_id"]), entries, _process_numbers(os.path.join(path, "logs")))
        return run_job(spec, listeners=listeners, progress=progress, base_dir=saved["base_dir"], run_id=info.run_id,
                       resume_info=info)
    finally:
        lock.release()
