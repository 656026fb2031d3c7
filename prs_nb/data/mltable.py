"""MLTable files: the subset of Azure ML's table blueprint that prs_nb reads locally.

An ``mltable`` input bound to a folder that holds an ``MLTable`` file (or to the file itself) is
described by that file (YAML, read with ``yaml.safe_load``)::

    type: mltable
    paths:                       # relative to the MLTable's folder, or URIs (s3://... via fsspec)
      - file: ./a.csv
      - folder: ./more
      - pattern: ./**/*.csv
    transformations:
      - read_delimited: {delimiter: ",", header: all_files_same_headers, encoding: utf8,
                         include_path_column: false, empty_as_string: false, support_multi_line: false}
      - extract_columns_from_partition_format: {partition_format: "{store}/{brand}/{file_name}.{extension}"}
      - drop_columns: [file_name, extension]

Supported transformations: ``read_delimited``, ``read_parquet``, ``read_json_lines`` (one of them;
without any, the MLTable is a *file list* and mini-batches are lists of paths),
``extract_columns_from_partition_format``, ``drop_columns``, ``keep_columns``, ``skip: N`` and
``take: N``. Anything else (``filter``, ``take_random_sample``, ``convert_column_types``,
``read_delta_lake``...) raises :class:`MLTableError` naming the key, the file and what to do, rather
than being ignored, because ignoring it would change the rows.

Which use applies (contract 3.2): an MLTable **with** a read transformation, bound in ``direct`` mode
or with no mode, is *tabular* (mini-batches are DataFrames, cut by ``mini_batch_size`` bytes, default
1 MiB); **without** one, or bound in a mount/download mode (``ro_mount``, ``download``,
``eval_mount``...; Azure then hands the listed files to the job), it is a *file list* (mini-batches are
lists of paths, ``mini_batch_size`` files, default 10), like ``uri_folder``; the read
transformation's column steps then do not apply.

``skip`` / ``take`` apply in order to the table's rows (tabular) or to the listed files (file list),
in listing order (files sorted by path, rows in file order): ``skip: 2`` then ``take: 5`` gives rows
2..6. The driver then needs row counts, so CSV/JSON Lines files are counted while planning. They
cannot be combined with ``partition_keys`` (the window is defined on the unpartitioned table).
``infer_column_types`` is accepted and has no effect (pandas always infers types).
``include_path_column`` adds a ``Path`` column holding the file's absolute local path.

Partition format (as Azure's): ``{name}`` captures one path segment (or part of one) as a string,
``{name:yyyy/MM/dd/HH/mm/ss}`` captures a datetime (tokens yyyy, MM, dd, HH, mm, ss); other text is
literal. The format is matched against the *end* of each file's path, so it starts at the first
partition folder: ``{store}/{brand}/{file}.csv`` matches ``data/12/acme/part.csv``. Files below
the MLTable's folder are matched by their path relative to it, so the folders above it never fill
a field by accident and a file too shallow for the format is an error. Every captured field
becomes a column of tabular mini-batches, and may be used as a partition key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prs_nb.data.files import Part, classify, resolve_path
from prs_nb.data.fs import is_remote
from prs_nb.data.tabular import HEADER_MODES, ReadOptions, normalize_encoding
from prs_nb.errors import InputDataError, MLTableError

MLTABLE_FILE = "MLTable"
READ_TRANSFORMATIONS = {"read_delimited": "csv", "read_parquet": "parquet", "read_json_lines": "jsonl"}
OTHER_TRANSFORMATIONS = ("extract_columns_from_partition_format", "drop_columns", "keep_columns", "skip", "take")
# what to do instead, for Azure transformations prs_nb does not run locally
_UNSUPPORTED_ADVICE = {
    "filter": "filter the rows in run() (e.g. mini_batch[mini_batch['col'] > 1]) or write a filtered copy of the data",
    "take_random_sample": "sample in run() (mini_batch.sample(frac=...)) or write a sampled copy of the data",
    "convert_column_types": "convert in run() (mini_batch.astype({...}) / pd.to_datetime) or store typed Parquet",
    "read_delta_lake": "export the Delta table to Parquet (e.g. deltalake.DeltaTable(path).to_pandas()"
                       ".to_parquet(...)) and describe it with read_parquet",
}
_READ_KEYS = {
    "read_delimited": {"delimiter", "header", "encoding", "include_path_column", "empty_as_string",
                       "support_multi_line", "infer_column_types"},
    "read_parquet": {"include_path_column"},
    "read_json_lines": {"encoding", "include_path_column", "invalid_lines", "partition_size"},
}
_FIELD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
_DT_TOKENS = {"yyyy": (r"\d{4}", "%Y"), "MM": (r"\d{2}", "%m"), "dd": (r"\d{2}", "%d"),
              "HH": (r"\d{2}", "%H"), "mm": (r"\d{2}", "%M"), "ss": (r"\d{2}", "%S")}
_DT_SPLIT = re.compile(r"(yyyy|MM|dd|HH|mm|ss)")


@dataclass(frozen=True)
class MLTableSpec:
    """A parsed MLTable: absolute path entries (files, folders or glob patterns), the read options
    (None = a file list) and the partition format, if any."""

    file: str
    paths: tuple[str, ...]
    read: ReadOptions | None
    partition_format: PartitionFormat | None
    offset: int = 0
    limit: int | None = None

    @property
    def fmt(self) -> str | None:
        return self.read.fmt if self.read is not None else None

    @property
    def windowed(self) -> bool:
        """True when skip/take select part of the rows (or files)."""
        return self.offset > 0 or self.limit is not None


def find_mltable(path: str) -> str | None:
    """The MLTable file for a bound path: ``<folder>/MLTable``, or the path itself if it is one."""
    if is_remote(path):
        from prs_nb.data import fs

        if fs.classify(path, where="MLTable lookup") == "folder":
            candidate = fs.join(path, MLTABLE_FILE)
            return candidate if fs.isfile(candidate, where="MLTable lookup") else None
        return path if path.rstrip("/").rsplit("/", 1)[-1] == MLTABLE_FILE else None
    if os.path.isdir(path):
        candidate = os.path.join(path, MLTABLE_FILE)
        return candidate if os.path.isfile(candidate) else None
    if os.path.basename(path) == MLTABLE_FILE and os.path.isfile(path):
        return path
    return None


class PartitionFormat:
    """A compiled ``partition_format``: :meth:`values` gives the fields captured from a file path."""

    def __init__(self, fmt: str, *, where: str, base: str = "") -> None:
        self.fmt = fmt
        self.where = where
        self.base = base
        body: list[str] = []
        fields: list[tuple[str, str | None]] = []
        pos = 0
        for m in _FIELD.finditer(fmt):
            body.append(re.escape(fmt[pos : m.start()]))
            name, dt = m.group(1).strip(), m.group(2)
            if dt:
                regex, pyfmt = _datetime_format(dt)
                body.append(f"({regex})")
                fields.append((name, pyfmt))
            else:
                body.append("([^/]+)")
                fields.append((name, None))
            pos = m.end()
        body.append(re.escape(fmt[pos:]))
        if not fields:
            raise MLTableError(
                f"{where}: partition_format {fmt!r} has no {{column}} fields; write it like "
                "'{store}/{brand}/{file_name}.csv' or '{date:yyyy/MM/dd}/data.csv'"
            )
        anchor = "" if fmt.startswith("/") else "(?:^|/)"
        self._regex = re.compile(anchor + "".join(body) + "$")
        self._fields = fields
        self.columns = tuple(name for name, _ in fields)

    def values(self, path: str) -> dict[str, Any]:
        """Field values of one file path; a path that does not fit the format raises.

        Paths below the MLTable's folder are matched relative to it (so the folders above it never
        fill a field by accident); other paths are matched whole."""
        rel = os.path.relpath(path, self.base) if self.base else path
        if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
            rel = path
        m = self._regex.search("/" + rel.replace(os.sep, "/").lstrip("/"))
        if m is None:
            raise MLTableError(
                f"{self.where}: file {path} does not match the MLTable partition_format {self.fmt!r}; the format "
                "is matched against the end of each path, starting at the first partition folder. Fix the format "
                "or narrow the MLTable paths to files laid out that way"
            )
        out: dict[str, Any] = {}
        for (name, pyfmt), raw in zip(self._fields, m.groups(), strict=True):
            if pyfmt is None:
                out[name] = raw
            else:
                try:
                    out[name] = datetime.strptime(raw, pyfmt)
                except ValueError as exc:
                    raise MLTableError(f"{self.where}: {raw!r} in {path} is not a valid date for field "
                                         f"{name!r} of partition_format {self.fmt!r}: {exc}") from exc
        return out


def _datetime_format(spec: str) -> tuple[str, str]:
    regex, pyfmt = [], []
    for piece in _DT_SPLIT.split(spec):
        if piece in _DT_TOKENS:
            regex.append(_DT_TOKENS[piece][0])
            pyfmt.append(_DT_TOKENS[piece][1])
        elif piece:
            regex.append(re.escape(piece))
            pyfmt.append(piece.replace("%", "%%"))
    return "".join(regex), "".join(pyfmt)


def _bool(args: dict[str, Any], key: str, where: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise MLTableError(f"{where}: {key} must be true or false (got {value!r})")
    return value


def _columns(value: Any, step: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return tuple(value)
    raise MLTableError(f"{where}: {step} takes a list of column names, e.g. [col1, col2] (got {value!r})")


def _partition_format(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("partition_format"), str):
            return str(value["partition_format"])
        # YAML reads an unquoted `{date:yyyy/MM/dd}` as the mapping {"date:yyyy/MM/dd": None}
        if len(value) == 1 and next(iter(value.values())) is None:
            return "{" + str(next(iter(value))) + "}"
    raise MLTableError(
        f"{where}: extract_columns_from_partition_format takes a format string, e.g. "
        f"{{partition_format: '{{store}}/{{brand}}/{{file}}.csv'}} (got {value!r})"
    )


def _read_options(step: str, args: dict[str, Any], where: str) -> ReadOptions:
    unknown = sorted(set(args) - _READ_KEYS[step])
    if unknown:
        raise MLTableError(f"{where}: {step} does not take {', '.join(unknown)}; it takes "
                             f"{', '.join(sorted(_READ_KEYS[step]))}")
    encoding = normalize_encoding(args.get("encoding", "utf8"), where=where)
    include_path = _bool(args, "include_path_column", where)
    if step == "read_parquet":
        return ReadOptions(fmt="parquet", include_path_column=include_path)
    if step == "read_json_lines":
        invalid = args.get("invalid_lines", "error")
        if invalid not in ("error", "drop"):
            raise MLTableError(f"{where}: invalid_lines must be error or drop (got {invalid!r})")
        return ReadOptions(fmt="jsonl", encoding=encoding, include_path_column=include_path, invalid_lines=invalid)
    delimiter = args.get("delimiter", ",")
    if delimiter in ("\\t", "tab"):  # a single-quoted '\t' in YAML stays two characters
        delimiter = "\t"
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise MLTableError(f"{where}: delimiter must be one character such as ',' or '\\t' (got {delimiter!r})")
    header = args.get("header", "all_files_same_headers")
    if header not in HEADER_MODES:
        raise MLTableError(f"{where}: header must be one of {', '.join(HEADER_MODES)} (got {header!r})")
    _bool(args, "infer_column_types", where)
    return ReadOptions(
        fmt="csv", sep=delimiter, encoding=encoding, header=header, include_path_column=include_path,
        empty_as_string=_bool(args, "empty_as_string", where),
        support_multi_line=_bool(args, "support_multi_line", where),
    )


def load_mltable(file: str, *, where: str) -> MLTableSpec:
    """Parse and validate an MLTable file; every mistake raises :class:`MLTableError` naming it."""
    try:
        mlt = _load_mltable(file, where=where)
        for p in mlt.paths:
            classify(p, where=f"{where}: MLTable {file}")
        return mlt
    except MLTableError:
        raise
    except InputDataError as exc:  # a shared helper's error (encoding, path): same message, MLTable's class
        raise MLTableError(str(exc)) from exc


def _load_mltable(file: str, *, where: str) -> MLTableSpec:
    import yaml

    where = f"{where}: MLTable {file}"
    try:
        if is_remote(file):
            from prs_nb.data.fs import open_binary

            with open_binary(file, where=where) as bf:
                doc = yaml.safe_load(bf.read().decode("utf-8"))
        else:
            with open(file, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh)
    except OSError as exc:
        raise MLTableError(f"{where}: cannot read it: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise MLTableError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}); an MLTable file is YAML "
                             "text, e.g. 'paths:\n  - folder: ./data'") from exc
    except yaml.YAMLError as exc:
        raise MLTableError(f"{where}: malformed YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise MLTableError(f"{where}: expected a YAML mapping with paths: and transformations: "
                             f"(got {type(doc).__name__})")
    if doc.get("type", "mltable") != "mltable":
        raise MLTableError(f"{where}: type must be mltable (got {doc.get('type')!r})")
    folder = file.rsplit("/", 1)[0] if is_remote(file) else os.path.dirname(os.path.abspath(file))
    raw_paths = doc.get("paths")
    if not isinstance(raw_paths, list) or not raw_paths:
        raise MLTableError(f"{where}: paths must be a non-empty list of entries like '- file: ./a.csv', "
                             f"'- folder: ./data' or '- pattern: ./**/*.csv' (got {raw_paths!r})")
    paths: list[str] = []
    for entry in raw_paths:
        kinds = [k for k in ("file", "folder", "pattern") if isinstance(entry, dict) and k in entry]
        if len(kinds) != 1 or not isinstance(entry[kinds[0]], str) or not entry[kinds[0]].strip():
            raise MLTableError(f"{where}: each paths entry needs exactly one of file:, folder: or pattern: "
                                 f"with a path (got {entry!r})")
        paths.append(resolve_path(entry[kinds[0]], folder, where=where))
    steps = doc.get("transformations") or []
    if not isinstance(steps, list):
        raise MLTableError(f"{where}: transformations must be a list (got {type(steps).__name__})")
    read: ReadOptions | None = None
    partition: PartitionFormat | None = None
    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    offset, limit = 0, None
    for step in steps:
        if isinstance(step, str):
            name, args = step, None
        elif isinstance(step, dict) and len(step) == 1:
            name, args = next(iter(step.items()))
        else:
            raise MLTableError(f"{where}: each transformation is one name with its arguments, e.g. "
                                 f"'- read_parquet: {{}}' (got {step!r})")
        if name in READ_TRANSFORMATIONS:
            if read is not None:
                raise MLTableError(f"{where}: more than one read transformation ({name} after a "
                                     f"{read.fmt} read); keep one")
            if args is not None and not isinstance(args, dict):
                raise MLTableError(f"{where}: {name} takes a mapping of options (got {args!r})")
            read = _read_options(name, dict(args or {}), where)
        elif name == "extract_columns_from_partition_format":
            partition = PartitionFormat(_partition_format(args, where), where=where, base=folder)
        elif name == "drop_columns":
            drop = _columns(args, name, where)
        elif name == "keep_columns":
            keep = _columns(args, name, where)
        elif name in ("skip", "take"):
            n = _count(args, name, where)
            if name == "skip":
                offset += n
                limit = None if limit is None else max(limit - n, 0)
            else:
                limit = n if limit is None else min(limit, n)
        else:
            advice = _UNSUPPORTED_ADVICE.get(str(name), "remove it and do the same in run(), or write the "
                                                         "transformed data to files first")
            raise MLTableError(
                f"{where}: transformation {name!r} is not supported by prs_nb locally (it would change the rows, so "
                f"it is not ignored); supported: {', '.join([*READ_TRANSFORMATIONS, *OTHER_TRANSFORMATIONS])}. "
                f"To run this job locally: {advice}"
            )
    if read is None and (drop or keep):
        raise MLTableError(f"{where}: drop_columns/keep_columns need a read transformation (read_delimited, "
                             "read_parquet or read_json_lines); without one the MLTable is a list of files")
    if read is not None and (drop or keep):
        read = dataclasses.replace(read, drop_columns=drop, keep_columns=keep)
    return MLTableSpec(file=os.path.abspath(file), paths=tuple(paths), read=read, partition_format=partition,
                       offset=offset, limit=limit)


def _count(value: Any, step: str, where: str) -> int:
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("count", "n"):
        value = next(iter(value.values()))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MLTableError(f"{where}: {step} takes a number of rows >= 0, e.g. '- {step}: 10' (got {value!r})")
    return value


def window_parts(parts: Iterator[Part], offset: int, limit: int | None, *, tabular: bool,
                 count: Callable[[Part], int]) -> Iterator[Part]:
    """Keep the rows (tabular) or files (file list) ``[offset, offset + limit)`` of ``parts``, in order.

    A tabular part cut by the window gets a ``row_window`` option (rows ``[a, b)`` of the slice, applied
    by the worker after reading) and an exact ``items``. Listing stops once the window is full."""
    pos = 0
    end = None if limit is None else offset + limit
    for part in parts:
        if end is not None and pos >= end:
            return
        n = count(part)
        lo, hi = max(offset - pos, 0), n if end is None else min(end - pos, n)
        pos += n
        if hi <= lo:
            continue
        if lo == 0 and hi == n:
            yield part
        elif not tabular:
            yield part._replace(items=hi - lo, source=list(part.source)[lo:hi])
        else:
            s = part.source
            source = dataclasses.replace(s, options=(*s.options, ("row_window", (lo, hi))))
            lb = None if part.lower_bound is None else part.lower_bound + lo
            yield part._replace(items=hi - lo, source=source, lower_bound=lb)
