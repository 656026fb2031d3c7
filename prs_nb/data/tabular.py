"""Tabular inputs -> mini-batch descriptors, without parsing the table in the driver.

Format choices (contract 5.3 and 12):

* **Size** is approximate *source* bytes (``mini_batch_size``, default 1 MiB). A mini-batch never
  spans two files: a file no bigger than the size is one mini-batch; a bigger one is cut.
* **CSV / TSV / JSON Lines** are cut into byte ranges at row boundaries. The driver reads the
  header line once (CSV) and then streams the file once in chunks, counting ``\\n`` with
  ``bytes.count``: each range runs from the previous boundary to the first newline at or after
  ``start + size``. Counting gives every descriptor its exact row count (``items``) and the index of
  its first row within the file (``global_row_index_lower_bound``), and costs one sequential read of
  the file with memory bounded by one chunk. Blank lines (empty or ``\\r`` only) are not rows, as
  in pandas; ``\\r\\n`` endings and a last line without a newline are handled.
  Limits: a quoted field containing a newline is cut like a row boundary (use an MLTable with
  ``support_multi_line: true`` for such files: they are then read whole, not split, and ``items``
  is left to the worker); whitespace-only lines are counted as rows by the driver although pandas
  skips them; line breaks must be ``\n`` or ``\r\n`` (old Mac ``\r``-only files are not
  supported). Each range infers its column types on its own, like Azure's per-mini-batch frames.
* **Separator** by extension: ``.tsv`` -> tab, otherwise ``,`` (an MLTable ``delimiter`` wins).
  A UTF-8 byte-order mark is skipped. Encodings that are not ASCII-compatible (utf16, utf32) cannot
  be cut by bytes: such files are one mini-batch each.
* **Empty files**, header-only files and ranges holding only blank lines produce no mini-batch.
* **Parquet**: the driver reads only the footer (``ParquetFile.metadata``). Sizes are on-disk
  (compressed) bytes, so they compare with the file size like the other formats: a file no bigger
  than the size is one mini-batch; otherwise consecutive row groups are grouped up to the size,
  and a single row group bigger than the size is split into row ranges of about the size (unlike
  Azure, contract 12). ``items`` is exact from the metadata.
* **In-memory DataFrame**: split by rows so that a chunk's ``memory_usage(deep=False)`` is about the
  size (at least one row); chunks keep the original index.
* ``key=value`` folder names add columns only when they are ``partition_keys`` (see
  :mod:`prs_nb.data.partitions`); MLTable ``partition_format`` fields are always added.
* The worker sets a byte range's index to the rows' positions in the file (``RangeIndex`` from
  ``global_row_index_lower_bound``), so concatenating all mini-batches gives the whole-file frame.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from prs_nb.data.base import TableSlice, UnreadableFile
from prs_nb.data.files import Part
from prs_nb.data.fs import is_remote, open_binary
from prs_nb.data.fs import size as remote_size
from prs_nb.errors import InputDataError

if TYPE_CHECKING:
    import pandas as pd

TABLE_EXTENSIONS: dict[str, tuple[str, str | None]] = {
    ".csv": ("csv", ","),
    ".tsv": ("csv", "\t"),
    ".parquet": ("parquet", None),
    ".pq": ("parquet", None),
    ".jsonl": ("jsonl", None),
    ".ndjson": ("jsonl", None),
}
SUPPORTED_EXTENSIONS = ", ".join(TABLE_EXTENSIONS)
HEADER_MODES = ("all_files_same_headers", "all_files_different_headers", "from_first_file", "no_header")
# MLTable encoding names -> Python codecs (read_delimited / read_json_lines ``encoding``)
ENCODINGS = {
    "utf8": "utf-8", "utf8bom": "utf-8-sig", "iso88591": "latin-1", "latin1": "latin-1", "ascii": "ascii",
    "utf16": "utf-16", "utf32": "utf-32", "windows1252": "cp1252",
}
_BYTE_SPLITTABLE = {"utf-8", "utf-8-sig", "latin-1", "ascii", "cp1252"}
_BOM = codecs.BOM_UTF8
_COUNT_CHUNK = 4 * 1024 * 1024  # big reads for counting: few syscalls, bounded memory
_SEEK_CHUNK = 64 * 1024  # small reads to find the next newline after a target offset
# a blank line's terminating "\n": preceded by "\n" or "\r\n" (lookbehind sees before ``pos``)
_BLANK_END = re.compile(rb"(?:(?<=\n)|(?<=\n\r))\n")
# cheap pre-check (one regex scan is ~2x faster than two ``in`` tests) before counting blank lines
_HAS_BLANK = re.compile(rb"\n\r?\n")


@dataclass(frozen=True)
class ReadOptions:
    """How table files are read: defaults for plain files, or an MLTable's read transformation.

    ``fmt`` None = by file extension; ``sep`` None = by extension (``.tsv`` tab, else ``,``);
    ``encoding`` is a Python codec name; ``header`` one of :data:`HEADER_MODES`."""

    fmt: str | None = None
    sep: str | None = None
    encoding: str = "utf-8"
    header: str = "all_files_same_headers"
    include_path_column: bool = False
    empty_as_string: bool = False
    support_multi_line: bool = False
    invalid_lines: str = "error"
    drop_columns: tuple[str, ...] = ()
    keep_columns: tuple[str, ...] = ()


def normalize_encoding(value: str, *, where: str) -> str:
    """An MLTable encoding name (``utf8``, ``utf8bom``, ``latin1``...) or a Python codec name."""
    key = str(value).lower().replace("-", "").replace("_", "")
    if key in ENCODINGS:
        return ENCODINGS[key]
    try:
        return codecs.lookup(str(value)).name
    except LookupError:
        raise InputDataError(
            f"{where}: unknown encoding {value!r}; use one of {', '.join(ENCODINGS)}"
        ) from None


def extension_format(path: str, *, where: str) -> tuple[str, str | None]:
    """(format, separator) from a file's extension; an unknown extension raises."""
    ext = os.path.splitext(path)[1].lower()
    if ext in TABLE_EXTENSIONS:
        return TABLE_EXTENSIONS[ext]
    got = f"extension {ext!r}" if ext else "no extension"
    raise InputDataError(
        f"{where}: cannot read {path} as a table ({got}); supported table files: {SUPPORTED_EXTENSIONS}. "
        "Rename the file, describe it with an MLTable file (read_delimited / read_parquet / "
        "read_json_lines), or declare the input as uri_folder to get lists of file paths"
    )


def _pandas_names(fields: list[str]) -> tuple[str, ...]:
    """Header names as pandas makes them: empty -> 'Unnamed: i', duplicates -> 'a.1', 'a.2'."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(fields):
        name = raw if raw != "" else f"Unnamed: {i}"
        base = name
        while name in seen:
            seen[base] += 1
            name = f"{base}.{seen[base]}"
        seen.setdefault(name, 0)
        names.append(name)
    return tuple(names)


def _read_line(f: BinaryIO, pos: int) -> tuple[bytes, int]:
    """The line starting at ``pos`` (without its line break) and the offset just after it."""
    f.seek(pos)
    parts: list[bytes] = []
    while True:
        block = f.read(_SEEK_CHUNK)
        if not block:
            line = b"".join(parts)
            return line.rstrip(b"\r"), pos + len(line)
        idx = block.find(b"\n")
        if idx >= 0:
            parts.append(block[:idx])
            line = b"".join(parts)
            return line.rstrip(b"\r"), pos + len(line) + 1
        parts.append(block)


def _split_fields(text: str, sep: str) -> list[str]:
    if not text:
        return []
    return next(csv.reader([text], delimiter=sep))


class _RowCounter:
    """Counts rows in a byte stream fed in consecutive pieces that start at a line start."""

    __slots__ = ("newlines", "blanks", "tail", "open_line")

    def __init__(self) -> None:
        self.newlines = 0
        self.blanks = 0
        self.tail = b"\n"  # the stream starts at a line start, as if after a newline
        self.open_line = False  # the text after the last newline holds more than "\r"

    def feed(self, buf: bytes) -> None:
        if not buf:
            return
        self.newlines += buf.count(b"\n")
        # blank lines are rare: only run the regex when a chunk can contain one
        if len(buf) > 2 and _HAS_BLANK.search(buf) is not None:
            self.blanks += sum(1 for _ in _BLANK_END.finditer(buf, 2))
        head = self.tail + buf[:2]  # terminators at buf[0] / buf[1] need the previous bytes
        self.blanks += sum(1 for _ in _BLANK_END.finditer(head, len(self.tail)))
        self.tail = buf[-2:] if len(buf) >= 2 else (self.tail + buf)[-2:]
        idx = buf.rfind(b"\n")
        if idx < 0:
            self.open_line = self.open_line or buf.count(b"\r") != len(buf)
        else:
            rest = len(buf) - idx - 1
            self.open_line = rest > 0 and buf.count(b"\r", idx + 1) != rest

    @property
    def rows(self) -> int:
        return self.newlines - self.blanks + (1 if self.open_line else 0)


def _cut(f: BinaryIO, pos: int, size: int, file_size: int) -> tuple[int, int]:
    """(end, rows) of the byte range starting at row boundary ``pos``: it ends right after the first
    newline at or after ``pos + size`` (or at the end of the file)."""
    counter = _RowCounter()
    target = min(pos + size, file_size)
    f.seek(pos)
    here = pos
    last = b""
    while here < target:
        buf = f.read(min(_COUNT_CHUNK, target - here))
        if not buf:
            break
        counter.feed(buf)
        here += len(buf)
        last = buf[-1:]
    if here >= file_size:
        return file_size, counter.rows
    if last != b"\n":  # the target fell inside a row: extend to that row's end
        while True:
            buf = f.read(_SEEK_CHUNK)
            if not buf:
                return here, counter.rows
            idx = buf.find(b"\n")
            if idx >= 0:
                counter.feed(buf[: idx + 1])
                here += idx + 1
                break
            counter.feed(buf)
            here += len(buf)
    return here, counter.rows


def count_slice_rows(s: TableSlice) -> int | None:
    """Rows in a CSV / JSON Lines byte range (None when it cannot be counted this way): the driver
    counts a failed mini-batch's rows only when it must (its worker died before reading it)."""
    if s.fmt not in ("csv", "jsonl") or s.end < 0:
        return None
    counter = _RowCounter()
    try:
        with (open_binary(s.path) if is_remote(s.path) else open(s.path, "rb")) as f:
            f.seek(s.start)
            left = s.end - s.start
            while left > 0:
                buf = f.read(min(_COUNT_CHUNK, left))
                if not buf:
                    break
                counter.feed(buf)
                left -= len(buf)
    except OSError:
        return None
    return counter.rows


def _cut_fast(f: BinaryIO, pos: int, size: int, file_size: int) -> int:
    """End of the byte range starting at row boundary ``pos``: right after the first newline at or
    after ``pos + size`` (or the end of the file), found without reading the range itself."""
    here = pos + size
    if here >= file_size:
        return file_size
    f.seek(here - 1)  # the byte before the target may itself be the newline
    while True:
        buf = f.read(_SEEK_CHUNK)
        if not buf:
            return file_size
        idx = buf.find(b"\n")
        if idx >= 0:
            return min(file_size, here - 1 + idx + 1)
        here += len(buf)


def _size(path: str, where: str) -> int:
    return remote_size(path, where=where) if is_remote(path) else os.path.getsize(path)


def _file_size(f: BinaryIO, path: str) -> int:
    return int(getattr(f, "size")) if is_remote(path) else os.fstat(f.fileno()).st_size  # noqa: B009 - fsspec file


def _open_text(path: str, encoding: str) -> TextIO:
    """A text file for the csv module (``newline=""``), local or remote."""
    if is_remote(path):
        return io.TextIOWrapper(open_binary(path), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")  # noqa: SIM115 - the caller's with-block closes it


def _parquet_rg_bytes(rg: Any) -> int:
    return sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))


class TablePlanner:
    """Turns the table files of one input into tabular parts, file by file.

    Remembers the first file's format (a tabular input holds one table format; mixing raises) and,
    for ``header: from_first_file``, the first file's header."""

    def __init__(self, opts: ReadOptions, where: str, *, count_rows: bool = True,
                 defer_read_errors: bool = False) -> None:
        self.opts = opts
        self.where = where
        self.count_rows = count_rows
        # a file that cannot be read becomes one failing mini-batch instead of stopping the listing
        self.defer_read_errors = defer_read_errors
        self._first: tuple[str, str, str | None] | None = None
        self._first_columns: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ formats
    def file_format(self, path: str) -> tuple[str, str | None]:
        if self.opts.fmt is not None:
            fmt, sep = self.opts.fmt, self.opts.sep
            if fmt == "csv" and sep is None:
                sep = "\t" if path.lower().endswith(".tsv") else ","
            return fmt, sep
        fmt, sep = extension_format(path, where=self.where)
        if self._first is None:
            self._first = (path, fmt, sep)
        elif (fmt, sep) != self._first[1:]:
            first_path = self._first[0]
            raise InputDataError(
                f"{self.where}: mixed table file types: {first_path} is {os.path.splitext(first_path)[1]} but "
                f"{path} is {os.path.splitext(path)[1]}. A tabular input holds one format: move the other "
                "files out, or bind a glob that selects one type (e.g. data/**/*.csv)"
            )
        return fmt, sep

    def _slice_options(self, fmt: str, sep: str | None, *, extra: tuple[tuple[str, Any], ...] = ()
                       ) -> tuple[tuple[str, Any], ...]:
        o = self.opts
        opts: list[tuple[str, Any]] = []
        if fmt == "csv":
            opts.append(("sep", sep or ","))
            if o.empty_as_string:
                opts.append(("empty_as_string", True))
        if fmt in ("csv", "jsonl") and o.encoding != "utf-8":
            opts.append(("encoding", o.encoding))
        if fmt == "jsonl" and o.invalid_lines != "error":
            opts.append(("invalid_lines", o.invalid_lines))
        if o.include_path_column:
            opts.append(("include_path_column", True))
        if o.drop_columns:
            opts.append(("drop_columns", o.drop_columns))
        if o.keep_columns:
            opts.append(("keep_columns", o.keep_columns))
        return tuple(opts) + extra

    # ------------------------------------------------------------------ delimited text
    def _layout(self, f: BinaryIO, path: str, fmt: str, sep: str | None) -> tuple[int, tuple[str, ...] | None]:
        """(offset of the first data row, column names) of a CSV/JSONL file opened in binary mode."""
        start = 0
        f.seek(0)
        if f.read(3) == _BOM and self.opts.encoding in ("utf-8", "utf-8-sig"):
            start = 3
        if fmt != "csv":
            return start, None
        mode = self.opts.header
        if mode == "from_first_file" and self._first_columns is not None:
            return start, self._first_columns
        line, after = _read_line(f, start)
        try:
            text = line.decode(self.opts.encoding)
        except UnicodeDecodeError as exc:
            raise InputDataError(
                f"{self.where}: cannot decode the first line of {path} as {self.opts.encoding} ({exc.reason} at "
                f"byte {exc.start}); set the encoding (an MLTable read_delimited encoding) or re-save the file as UTF-8"
            ) from exc
        try:
            fields = _split_fields(text, sep or ",")
        except csv.Error as exc:
            cr = " It holds a carriage return (\\r) inside the line: convert old Mac (CR-only) line endings to \\n." \
                if "\r" in text else ""
            raise InputDataError(
                f"{self.where}: cannot read the header line of {path}: {exc} (got {text[:80]!r}).{cr} "
                "Quote field names that hold the separator or line breaks, or fix the header"
            ) from exc
        if mode == "no_header":
            return start, tuple(f"Column{i + 1}" for i in range(len(fields)))
        columns = _pandas_names(fields)
        if mode == "from_first_file" and columns:  # an empty first file has no header to share
            self._first_columns = columns
        return after, columns

    def _whole_text_file(self, path: str, fmt: str, sep: str | None,
                         extra: tuple[tuple[str, Any], ...]) -> TableSlice:
        """A file read whole by the worker (not byte-splittable: utf16/utf32 or multi-line fields)."""
        columns: tuple[str, ...] | None = None
        skip_header = False
        if fmt == "csv":
            mode = self.opts.header
            if mode == "from_first_file" and self._first_columns is not None:
                columns = self._first_columns
            else:
                # utf-8-sig: a byte-order mark must not end up in the first column's name
                encoding = "utf-8-sig" if self.opts.encoding == "utf-8" else self.opts.encoding
                try:
                    with _open_text(path, encoding) as tf:
                        fields = next(csv.reader(tf, delimiter=sep or ","), [])
                except (OSError, UnicodeError, csv.Error) as exc:
                    raise InputDataError(f"{self.where}: cannot read the header of {path} as {encoding} text: "
                                         f"{exc}; check the file and the MLTable encoding") from exc
                if mode == "no_header":
                    columns = tuple(f"Column{i + 1}" for i in range(len(fields)))
                else:
                    columns = _pandas_names(fields)
                    skip_header = True
                    if mode == "from_first_file":
                        self._first_columns = columns
        opts = self._slice_options(fmt, sep, extra=extra) + (("skip_header", skip_header),)
        return TableSlice(path, fmt, 0, -1, columns=columns, options=opts)

    def _splittable(self, fmt: str) -> bool:
        return self.opts.encoding in _BYTE_SPLITTABLE and not (fmt == "csv" and self.opts.support_multi_line)

    def _open(self, path: str) -> BinaryIO:
        try:
            if is_remote(path):
                return open_binary(path, where=self.where)
            return open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the callers' with-blocks
        except OSError as exc:
            raise InputDataError(f"{self.where}: cannot open {path}: {exc.strerror or exc}; check that it exists "
                                 "and is readable") from exc

    def _plan_text(self, path: str, fmt: str, sep: str | None, size: int, pv: tuple[tuple[str, Any], ...]
                   ) -> Iterator[Part]:
        if not self._splittable(fmt):
            if _size(path, self.where) > 0:
                s = dataclasses.replace(self._whole_text_file(path, fmt, sep, ()), partition_values=pv)
                yield Part(None, s, {}, 0, f"{path} (whole file)")
            return
        opts = self._slice_options(fmt, sep)
        with self._open(path) as f:
            file_size = _file_size(f, path)
            pos, columns = self._layout(f, path, fmt, sep)
            row = 0
            if not self.count_rows:
                # No row count wanted: find each boundary with one small read (no pass over the data)
                while pos < file_size:
                    end = _cut_fast(f, pos, size, file_size)
                    s = TableSlice(path, fmt, pos, end, columns=columns, partition_values=pv, options=opts)
                    yield Part(None, s, {}, None, f"{path} bytes {pos}-{end}")
                    pos = end
                return
            while pos < file_size:
                end, rows = _cut(f, pos, size, file_size)
                if rows > 0:  # a range of blank lines only is not worth a run() call
                    s = TableSlice(path, fmt, pos, end, columns=columns, partition_values=pv, options=opts)
                    yield Part(rows, s, {}, row, f"{path} bytes {pos}-{end}")
                row += rows
                pos = end

    def whole_file(self, path: str, extra: tuple[tuple[str, Any], ...] = (),
                   partition_values: tuple[tuple[str, Any], ...] = ()) -> tuple[TableSlice, int | None] | None:
        """The whole file as one slice with its row count (None = unknown), or None if it has no rows.
        Used for partitions, which are never subdivided by size."""
        fmt, sep = self.file_format(path)
        if fmt == "parquet":
            md = self._parquet_metadata(path)
            if md.num_rows == 0:
                return None
            opts = self._slice_options(fmt, sep, extra=extra)
            return TableSlice(path, fmt, partition_values=partition_values, options=opts), md.num_rows
        if not self._splittable(fmt):
            if _size(path, self.where) == 0:
                return None
            s = self._whole_text_file(path, fmt, sep, extra)
            return dataclasses.replace(s, partition_values=partition_values), None
        with self._open(path) as f:
            file_size = _file_size(f, path)
            start, columns = self._layout(f, path, fmt, sep)
            if start >= file_size:
                return None
            _, rows = _cut(f, start, file_size, file_size)
        if rows == 0:
            return None
        opts = self._slice_options(fmt, sep, extra=extra)
        return TableSlice(path, fmt, start, file_size, columns=columns, partition_values=partition_values,
                          options=opts), rows

    # ------------------------------------------------------------------ parquet
    def _parquet_metadata(self, path: str) -> Any:
        import pyarrow.parquet as pq

        try:
            if is_remote(path):
                with open_binary(path, where=self.where) as f:
                    return pq.read_metadata(f)
            return pq.read_metadata(path)  # the footer only: no column data is read in the driver
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InputDataError(
                f"{self.where}: cannot read {path} as Parquet: {exc}. Check that the file is a complete Parquet "
                "file (not still being written) or give it the right extension"
            ) from exc

    def _plan_parquet(self, path: str, size: int, pv: tuple[tuple[str, Any], ...]) -> Iterator[Part]:
        md = self._parquet_metadata(path)
        if md.num_rows == 0:
            return
        opts = self._slice_options("parquet", None)
        if _size(path, self.where) <= size:
            s = TableSlice(path, "parquet", partition_values=pv, options=opts)
            yield Part(md.num_rows, s, {}, 0, f"{path} (whole file)")
            return
        group: list[int] = []
        group_bytes = group_rows = group_first = 0
        row = 0

        def flush() -> Part:
            s = TableSlice(path, "parquet", row_groups=tuple(group), partition_values=pv, options=opts)
            label = f"{path} row groups {group[0]}-{group[-1]}"
            return Part(group_rows, s, {}, group_first, label)

        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            nrows = rg.num_rows
            if nrows == 0:
                continue
            nbytes = _parquet_rg_bytes(rg)
            if nbytes > size:
                if group:
                    yield flush()
                    group, group_bytes, group_rows = [], 0, 0
                pieces = math.ceil(nbytes / size)
                step = math.ceil(nrows / pieces)
                for a in range(0, nrows, step):
                    b = min(a + step, nrows)
                    s = TableSlice(path, "parquet", row_groups=(i,), row_start=row + a, row_stop=row + b,
                                   partition_values=pv, options=opts)
                    yield Part(b - a, s, {}, row + a, f"{path} rows {row + a}-{row + b - 1}")
            else:
                if group and group_bytes + nbytes > size:
                    yield flush()
                    group, group_bytes, group_rows = [], 0, 0
                if not group:
                    group_first = row
                group.append(i)
                group_bytes += nbytes
                group_rows += nrows
            row += nrows
        if group:
            yield flush()

    # ------------------------------------------------------------------ dispatch
    def plan_file(self, path: str, size: int, partition_values: tuple[tuple[str, Any], ...] = ()
                  ) -> Iterator[Part]:
        """Size-based parts of one table file (never spanning into another file); ``partition_values``
        are columns the worker adds (MLTable partition_format fields)."""
        fmt, sep = self.file_format(path)  # a wrong or mixed format is the input's error: it raises
        parts = (self._plan_parquet(path, size, partition_values) if fmt == "parquet"
                 else self._plan_text(path, fmt, sep, size, partition_values))
        if not self.defer_read_errors:
            yield from parts
            return
        done = 0
        try:
            for part in parts:
                done += 1
                yield part
        except InputDataError as exc:
            rest = " (the rest of it)" if done else ""
            yield Part(None, UnreadableFile(path, str(exc)), {}, None, f"{path}{rest}: unreadable")


def plan_dataframe(df: pd.DataFrame, size: int) -> Iterator[Part]:
    """Row chunks of about ``size`` bytes of ``memory_usage(deep=False)``, at least one row each."""
    n = len(df)
    if n == 0:
        return
    per_row = float(df.memory_usage(deep=False, index=True).sum()) / n
    step = max(1, int(size // per_row)) if per_row > 0 else n
    for a in range(0, n, step):
        chunk = df.iloc[a : a + step]  # a view: pandas' copy-on-write keeps the caller's frame safe
        yield Part(len(chunk), chunk, {}, a, f"DataFrame rows {a}-{a + len(chunk) - 1}")
