"""The journal: an append-only record, in the run directory, of every finished mini-batch.

::

    driver: mini-batch done --> output file (rows appended) --flush--> journal line --flush-->
    resume: journal lines --> skip those mini-batches, truncate the output back to the last offset

One line per finished mini-batch, tab-separated, written only after the output bytes it covers
have been flushed, so the journal never claims rows the output does not hold::

    # prs_nb journal 1
    S  index  attempt  items  returned  failed_items  offset  fingerprint  crc
    F  ...                                                          (failed: attempts used up)

``offset`` is the size of the append_row output after this mini-batch's rows (0 for summary_only);
``fingerprint`` identifies the mini-batch's input (file paths with size and mtime, table slices,
which DataFrame rows), so a resumed run can tell when its input changed; ``crc`` (CRC-32 of the rest of
the line) tells a complete line from one torn by a driver killed mid-write. A torn or damaged
*last* line is ignored (that mini-batch simply runs again); damage before the last line means the
file was edited or corrupted, and reading it is refused.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import IO, Any

from prs_nb.errors import ResumeError

HEADER = "# prs_nb journal 1\n"
SUCCEEDED = "S"
FAILED = "F"


@dataclass(frozen=True)
class JournalEntry:
    status: str  # "S" (succeeded) | "F" (failed: all attempts used)
    index: int
    attempt: int
    items: int
    returned: int
    failed_items: int
    offset: int
    fingerprint: str


def fingerprint(mb: Any) -> str:
    """A short hash of a mini-batch's input: paths with size and modification time, table slices
    (with their file's size and mtime), in-memory rows (which rows), and its position. Computed on the
    driver's hot path, so it is a checksum (CRC-32 + Adler-32), not a cryptographic hash."""
    parts = [f"{mb.index}|{mb.kind}|{mb.items}|{mb.input_name}"]
    source = mb.source
    for part in source if isinstance(source, (list, tuple)) else [source]:
        if isinstance(part, str):
            parts.append(_file_id(part))
        elif part is None:
            parts.append("-")
        elif hasattr(part, "fmt") and hasattr(part, "path"):  # TableSlice
            parts.append(repr(part))
            parts.append(_file_id(part.path))
        elif hasattr(part, "columns") and hasattr(part, "index"):  # DataFrame rows
            # the DataFrame itself is saved with the job (job.pkl), so it cannot change between
            # sessions: which rows the slice holds identifies it, without hashing every value
            n = len(part)
            ends = (part.index[0], part.index[n - 1]) if n else ()
            parts.append(f"{n}|{list(part.columns)!r}|{ends!r}")
        else:
            parts.append(repr(part))
    data = "\n".join(parts).encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def _file_id(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}|missing"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def format_entry(e: JournalEntry) -> str:
    body = (f"{e.status}\t{e.index}\t{e.attempt}\t{e.items}\t{e.returned}\t{e.failed_items}\t{e.offset}\t"
            f"{e.fingerprint}")
    return f"{body}\t{zlib.crc32(body.encode()):08x}\n"


def _parse(line: str) -> JournalEntry | None:
    if not line.endswith("\n"):
        return None
    body, _, crc = line[:-1].rpartition("\t")
    if not body or f"{zlib.crc32(body.encode()):08x}" != crc:
        return None
    f = body.split("\t")
    if len(f) != 8 or f[0] not in (SUCCEEDED, FAILED):
        return None
    try:
        return JournalEntry(f[0], int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5]), int(f[6]), f[7])
    except ValueError:
        return None


def read_journal(path: str) -> dict[int, JournalEntry]:
    """The finished mini-batches recorded in ``path``, by index (the last record of an index wins).

    A torn last line is ignored. Raises :class:`ResumeError` for a file that is not a prs_nb journal
    or is damaged before its last line."""
    entries: dict[int, JournalEntry] = {}
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return entries
    except OSError as exc:
        raise ResumeError(f"cannot read the journal {path}: {exc}") from None
    if not lines:
        return entries
    if lines[0] != HEADER:
        if len(lines) == 1 and HEADER.startswith(lines[0]):
            return entries  # the header itself was torn: nothing was recorded
        raise ResumeError(f"{path} is not a prs_nb journal (first line {lines[0][:60]!r}, expected {HEADER!r})")
    for n, line in enumerate(lines[1:], start=2):
        entry = _parse(line)
        if entry is None:
            if n == len(lines):
                break  # torn by a driver killed mid-write: that mini-batch runs again
            raise ResumeError(f"the journal {path} is damaged at line {n} (of {len(lines)}): {line[:80]!r}. "
                              "It is written only by prs_nb; start the job afresh instead of resuming this run")
        entries[entry.index] = entry
    return entries


class Journal:
    """Appends entries; they reach the file on flush() (the writer flushes the output first)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: IO[str] = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - job lifetime
        if self._fh.tell() == 0:
            self._fh.write(HEADER)
            self._fh.flush()
        else:
            self._repair_tail()
        self._pending: list[str] = []

    def _repair_tail(self) -> None:
        """A resumed run appends after a torn last line: cut it off first, so every line stays whole."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            self._fh.close()
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
            if keep == 0:
                with open(self.path, "w", encoding="utf-8", newline="") as fh:
                    fh.write(HEADER)
            self._fh = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115

    def record(self, status: str, index: int, attempt: int, items: int, returned: int, failed_items: int,
               offset: int, fp: str) -> None:
        body = f"{status}\t{index}\t{attempt}\t{items}\t{returned}\t{failed_items}\t{offset}\t{fp}"
        self._pending.append(f"{body}\t{zlib.crc32(body.encode()):08x}\n")  # as format_entry()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        if self._pending:
            self._fh.write("".join(self._pending))
            self._fh.flush()
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._fh.close()


class AttemptLog:
    """A listener that appends every failed attempt (a BatchFailed event, as JSON) to
    ``run_dir/attempts.jsonl``, so a resumed run's ``result.errors`` still lists the earlier
    sessions' failures. JSON, never pickle: reading it back cannot run code."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def on_event(self, event: Any) -> None:
        from prs_nb.events import BatchFailed

        if not isinstance(event, BatchFailed):
            return
        import dataclasses
        import json

        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._fh.write(json.dumps(dataclasses.asdict(event)) + "\n")
        self._fh.flush()  # failures are rare; each one survives a driver killed right after

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_attempts(path: str) -> list[Any]:
    """The BatchFailed events recorded by :class:`AttemptLog` (a torn or unreadable line is skipped)."""
    import json

    from prs_nb.events import BatchFailed

    out: list[Any] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    out.append(BatchFailed(**json.loads(line)))
                except (ValueError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return out
