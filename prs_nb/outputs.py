"""append_row output: formatting in the workers, exactly-once appending in the driver.

Formatting (contract 12): list/tuple items one per line as ``str(item)``; DataFrames as
``to_csv(sep=" ", header=False, index=False)``, overridable by ``parallel_run_step.settings.json``
in the code folder (``{"append_row": {"pandas.DataFrame.to_csv": {"sep": ","}}}``) and by
``--append_row_dataframe_header True`` (the header line is written once, before the first rows).

The driver writes each successful mini-batch's text once and records it in the journal
(:mod:`prs_nb.engine.journal`: index, counts, output offset after its rows, input fingerprint) after
the output is flushed: the record a resumed run needs to skip finished mini-batches and truncate a
half-written output.
"""

from __future__ import annotations

import io
import json
import os
from typing import IO, Any

from prs_nb.errors import ConfigError
from prs_nb.spec import DEFAULT_APPEND_ROW_FILE_NAME, JobSpec

SETTINGS_FILE = "parallel_run_step.settings.json"
# A result text larger than this travels as a part file in the run directory, not through the
# socket: the driver copies it into the output without holding it in memory.
SPILL_CHARS = 8 * 1024 * 1024


class SpilledText:
    """A mini-batch's append_row text written by the worker to a part file."""

    __slots__ = ("path", "size")

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size

    def __reduce__(self) -> tuple[Any, ...]:
        return (SpilledText, (self.path, self.size))

    def __bool__(self) -> bool:
        return self.size > 0


def spill(spill_dir: str, index: int, attempt: int, text: str) -> SpilledText:
    """Write ``text`` to ``<spill_dir>/<index>-<attempt>-<pid>.part`` (worker side)."""
    os.makedirs(spill_dir, exist_ok=True)
    path = os.path.join(spill_dir, f"{index}-{attempt}-{os.getpid()}.part")
    data = text.encode("utf-8")
    with open(path, "wb") as fh:
        fh.write(data)
    return SpilledText(path, len(data))


class RowFormatter:
    """Turns run()'s return value into (count, text, header) in the worker."""

    def __init__(self, append_row: bool, header: bool, csv_kwargs: dict[str, Any]) -> None:
        self.append_row = append_row
        self.header = header
        kwargs = {"sep": " ", "header": False, "index": False}
        kwargs.update(csv_kwargs)
        if kwargs.get("header"):
            self.header = True
        kwargs["header"] = False
        self.csv_kwargs = kwargs

    def format(self, result: Any) -> tuple[int, str, str | None]:
        from prs_nb.entry import BadReturnError

        if isinstance(result, (list, tuple)):
            if not self.append_row:
                return len(result), "", None
            if not result:
                return 0, "", None
            return len(result), "\n".join(map(str, result)) + "\n", None
        import sys

        pd = sys.modules.get("pandas")  # a DataFrame can only exist if pandas was imported
        if pd is not None and isinstance(result, pd.DataFrame):  # subclasses are DataFrames too
            n = len(result)
            if not self.append_row or n == 0:
                return n, "", self._header(result) if self.append_row else None
            buf = io.StringIO()
            result.to_csv(buf, **self.csv_kwargs)
            return n, buf.getvalue(), self._header(result)
        got = "None" if result is None else type(result).__name__
        raise BadReturnError(
            f"run() must return a list, tuple or pandas.DataFrame with one element per successful item "
            f"(got {got}); return e.g. the mini_batch itself or a list of result strings"
        )

    def _header(self, df: Any) -> str | None:
        if not self.header:
            return None
        kw = dict(self.csv_kwargs)
        kw["header"] = True
        buf = io.StringIO()
        df.head(0).to_csv(buf, **kw)
        return buf.getvalue()


def load_settings_json(code_dir: str | None) -> dict[str, Any]:
    """The to_csv keyword arguments from ``parallel_run_step.settings.json`` in the code folder."""
    if not code_dir:
        return {}
    path = os.path.join(code_dir, SETTINGS_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object such as "
                          f'{{"append_row": {{"pandas.DataFrame.to_csv": {{"sep": ","}}}}}} (got {type(data).__name__})')
    section = data.get("append_row", {})
    if not isinstance(section, dict):
        raise ConfigError(f'{path}: "append_row" must be an object such as {{"pandas.DataFrame.to_csv": {{"sep": ","}}}} '
                          f"(got {type(section).__name__} {section!r})")
    kwargs = section.get("pandas.DataFrame.to_csv", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(
            f"{path}: append_row.pandas.DataFrame.to_csv must be an object of to_csv arguments, e.g. "
            f'{{"sep": ","}} (got {type(kwargs).__name__})'
        )
    allowed = {"sep", "index", "header", "na_rep", "float_format", "quoting", "quotechar", "lineterminator",
               "date_format", "doublequote", "escapechar", "decimal", "columns", "encoding"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise ConfigError(f"{path}: unsupported to_csv arguments {sorted(unknown)}; supported: {sorted(allowed)}")
    _try_to_csv(path, kwargs)
    return dict(kwargs)


def _try_to_csv(path: str, kwargs: dict[str, Any]) -> None:
    """Check the arguments once here, on a one-row frame, rather than failing every mini-batch in the
    workers (``sep`` must be one character, ``quoting`` 0-3, a known ``encoding``...)."""
    import csv

    import pandas as pd

    columns = kwargs.get("columns")
    if columns is not None and (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)):
        raise ConfigError(f"{path}: to_csv argument columns must be a list of column names (got {columns!r})")
    trial = {k: v for k, v in kwargs.items() if k != "columns"}
    try:
        pd.DataFrame({"a": [1.5], "b": ["x"]}).to_csv(io.StringIO(), **trial)
    except (TypeError, ValueError, LookupError, csv.Error) as exc:
        raise ConfigError(f"{path}: pandas.DataFrame.to_csv does not accept these arguments {trial!r}: "
                          f"{type(exc).__name__}: {exc}") from None


def _safe_join(root: str, name: str, what: str) -> str:
    if not name or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise ConfigError(f"{what} must be a relative name inside the run directory (got {name!r})")
    return os.path.join(root, name)


def resolve_output_paths(spec: JobSpec, run_dir: str, base_dir: str) -> dict[str, str]:
    """Local path of every declared output: the bound path, the port's path, or run_dir/outputs/<name>."""
    out: dict[str, str] = {}
    for name, port in spec.outputs.items():
        bound = spec.output_bindings.get(name) or port.path
        if bound:
            path = bound if os.path.isabs(bound) else os.path.join(base_dir, bound)
        else:
            path = _safe_join(os.path.join(run_dir, "outputs"), name, f"output name {name!r}")
            if port.type == "uri_file":
                path = os.path.join(path, DEFAULT_APPEND_ROW_FILE_NAME)
        out[name] = os.path.abspath(path)
    return out


def append_row_path(spec: JobSpec, output_paths: dict[str, str]) -> str | None:
    """The append_row file: the uri_file output itself, or <folder>/<append_row_file_name>."""
    name = spec.append_row_output
    if name is None:
        return None
    path = output_paths[name]
    if spec.outputs[name].type == "uri_file":
        return path
    file_name = spec.append_row_file_name or DEFAULT_APPEND_ROW_FILE_NAME
    return os.path.join(path, file_name)


class AppendRowWriter:
    """Appends each successful mini-batch's rows once; optional ordering by mini-batch index."""

    FLUSH_BYTES = 1 << 20

    def __init__(self, path: str, journal: Any, ordered: bool = False, *, resume_offset: int | None = None,
                 done: Any = ()) -> None:
        """``journal``: a :class:`prs_nb.engine.journal.Journal`. ``resume_offset``: continue an
        interrupted run: the output is truncated to that size (the last journaled point) and
        appended to; ``done`` are the mini-batch indexes already finished (for ordered output)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path = path
        self._fh: IO[bytes]
        if resume_offset is None:
            self._fh = open(path, "wb")  # noqa: SIM115 - kept open for the job's lifetime
            self.offset = 0
        else:
            self._fh = open(path, "r+b" if os.path.exists(path) else "wb")  # noqa: SIM115
            self._fh.truncate(resume_offset)
            self._fh.seek(resume_offset)
            self.offset = resume_offset
        self._journal = journal
        self._buffered = 0
        self.ordered = ordered
        self._next = 0
        self._held: dict[int, tuple[int, str | SpilledText, tuple[Any, ...]]] = {}
        self._skipped: set[int] = set(done)
        self._header_written = self.offset > 0
        if ordered:
            self._drain()

    def write(self, index: int, attempt: int, text: str | SpilledText, header: str | None,
              meta: tuple[Any, ...] = (0, 0, 0, "")) -> None:
        """Append a succeeded mini-batch's rows; ``meta`` = (items, returned, failed_items,
        fingerprint) for its journal line."""
        if header and not self._header_written:
            self._emit_raw(header)
            self._header_written = True
        if not self.ordered:
            self._emit(index, attempt, text, meta)
            return
        self._held[index] = (attempt, text, meta)
        self._drain()

    def skip(self, index: int, attempt: int = 0, meta: tuple[Any, ...] = (0, 0, 0, "")) -> None:
        """A mini-batch failed for good: journaled (a resumed run does not run it again) and, for
        ordered output, no longer waited for."""
        self._journal.record("F", index, attempt, meta[0], meta[1], meta[2], self.offset, meta[3])
        if self.ordered:
            self._skipped.add(index)
            self._drain()

    def _drain(self) -> None:
        while True:
            if self._next in self._held:
                attempt, text, meta = self._held.pop(self._next)
                self._emit(self._next, attempt, text, meta)
            elif self._next in self._skipped:
                self._skipped.discard(self._next)
            else:
                return
            self._next += 1

    def _emit_raw(self, text: str) -> None:
        data = text.encode("utf-8")
        self._fh.write(data)
        self.offset += len(data)
        self._buffered += len(data)

    def _emit(self, index: int, attempt: int, text: str | SpilledText, meta: tuple[Any, ...]) -> None:
        if isinstance(text, SpilledText):
            self._copy_part(text)
        elif text:
            self._emit_raw(text)
        self._journal.record("S", index, attempt, meta[0], meta[1], meta[2], self.offset, meta[3])
        if self._buffered >= self.FLUSH_BYTES:
            self.flush()

    def _copy_part(self, part: SpilledText) -> None:
        with open(part.path, "rb") as src:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                self._fh.write(chunk)
                self.offset += len(chunk)
        os.remove(part.path)
        self.flush()

    def flush(self) -> None:
        # Output first, then the journal: the journal never claims rows the file does not hold.
        self._fh.flush()
        self._journal.flush()
        self._buffered = 0

    def close(self) -> None:
        if self.ordered:
            # Whatever is still held (gaps from a canceled job) is written in index order.
            for index in sorted(self._held):
                attempt, text, meta = self._held.pop(index)
                self._emit(index, attempt, text, meta)
        self.flush()
        self._fh.close()
        self._journal.close()


class JournalOnly:
    """summary_only jobs still journal finished mini-batches (for resume)."""

    def __init__(self, journal: Any) -> None:
        self._journal = journal

    def write(self, index: int, attempt: int, text: str, header: str | None,
              meta: tuple[Any, ...] = (0, 0, 0, "")) -> None:
        self._journal.record("S", index, attempt, meta[0], meta[1], meta[2], 0, meta[3])
        if self._journal.pending >= 1024:
            self.flush()

    def skip(self, index: int, attempt: int = 0, meta: tuple[Any, ...] = (0, 0, 0, "")) -> None:
        self._journal.record("F", index, attempt, meta[0], meta[1], meta[2], 0, meta[3])

    def flush(self) -> None:
        self._journal.flush()

    def close(self) -> None:
        self._journal.close()
