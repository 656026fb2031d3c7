"""Worker side: a mini-batch descriptor -> the ``mini_batch`` handed to ``run()`` (contract 4.2).

* files -> a new ``list`` of absolute path strings; rank -> ``[]``; tabular -> a ``pandas.DataFrame``.
* pandas and pyarrow are imported only when a table is read, so workers of file-list jobs never
  pay for importing them.
* CSV / JSON Lines byte ranges: the bytes ``[start, end)`` are parsed by pandas (``names=`` the
  header read by the driver, ``header=None``, ``index_col=False``); the frame's index is the rows'
  positions in the file (from ``global_row_index_lower_bound``). Parquet: only the needed row
  groups are read; a row range of one big row group is streamed in record batches and sliced, so
  memory holds the range, not the row group.
* Then, in MLTable order: the rows kept by ``skip`` / ``take`` (a ``row_window`` option), the ``Path`` column (``include_path_column``), partition columns from the
  path, the partition filter (rows equal to the key values; ``None`` matches nulls), and
  ``drop_columns`` / ``keep_columns``.
* A partition made of several parts is concatenated with a fresh ``RangeIndex``.
* Every read failure (unreadable file, a malformed row, bad JSON, a truncated Parquet file) raises
  :class:`InputDataError` naming the file and the byte range or rows; the engine records it as a
  failed attempt of that mini-batch only.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from prs_nb.data.base import FILES, RANK, TABULAR, MiniBatch, RemoteFile, TableSlice, UnreadableFile
from prs_nb.data.fs import is_remote, open_binary, read_range
from prs_nb.errors import InputDataError

if TYPE_CHECKING:
    import pandas as pd

_RECORD_BATCH_ROWS = 65536


def read_mini_batch(mb: MiniBatch, download_dir: str | None = None) -> list[str] | pd.DataFrame:
    """The data of one mini-batch, read in the worker: a list of paths, [] or a DataFrame.

    Object-store files (:class:`RemoteFile`) are downloaded first, into ``download_dir`` (created;
    a new temporary folder when None), and their local paths are returned: the caller deletes the
    folder once ``run()`` is done with them."""
    if mb.kind == FILES:
        if not any(isinstance(p, RemoteFile) for p in mb.source):
            return list(mb.source)
        return _download(mb, download_dir)
    if mb.kind == RANK:
        return []
    if mb.kind != TABULAR:
        raise InputDataError(f"mini-batch {mb.index} of input {mb.input_name!r} has unknown kind {mb.kind!r}; "
                             f"expected {FILES}, {TABULAR} or {RANK}")
    import pandas as pd

    src = mb.source
    where = f"mini-batch {mb.index} of input {mb.input_name!r}"
    if isinstance(src, pd.DataFrame):
        return src
    if isinstance(src, UnreadableFile):
        raise InputDataError(src.message)
    if isinstance(src, TableSlice):
        df = read_slice(src, where=where)
        lb = mb.global_row_index_lower_bound
        if lb and _default_index(df):
            df.index = pd.RangeIndex(lb, lb + len(df))
        return df
    if isinstance(src, (list, tuple)):
        frames: list[pd.DataFrame] = []
        for part in src:
            if isinstance(part, TableSlice):
                frames.append(read_slice(part, where=where))
            elif isinstance(part, pd.DataFrame):
                frames.append(part)
            else:
                raise InputDataError(f"{where}: a tabular part must be a TableSlice or a DataFrame "
                                     f"(got {type(part).__name__})")
        if not frames:
            return cast("pd.DataFrame", pd.DataFrame())
        # empty parts would turn int columns into float in concat: leave them out when others have rows
        nonempty = [f for f in frames if len(f)] or frames[:1]
        return pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else nonempty[0].reset_index(drop=True)
    raise InputDataError(f"{where}: unexpected tabular source of type {type(src).__name__}; expected a DataFrame, "
                         "a TableSlice or a list of them")


def _download(mb: MiniBatch, download_dir: str | None) -> list[str]:
    import tempfile

    from prs_nb.data.fs import download

    dest = download_dir or tempfile.mkdtemp(prefix="prs_nb-downloads-")
    remote = [p for p in mb.source if isinstance(p, RemoteFile)]
    local = iter(download(remote, dest, where=f"mini-batch {mb.index} of input {mb.input_name!r}"))
    return [next(local) if isinstance(p, RemoteFile) else p for p in mb.source]


def _default_index(df: pd.DataFrame) -> bool:
    import pandas as pd

    idx = df.index
    return isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1


def describe_slice(s: TableSlice) -> str:
    """``path (csv, bytes 0-1048576)``-style text for messages."""
    if s.fmt == "parquet":
        if s.row_start is not None:
            group = s.row_groups[0] if s.row_groups else "?"
            return f"{s.path} (parquet, rows {s.row_start}-{s.row_stop} of row group {group})"
        if s.row_groups is not None:
            return f"{s.path} (parquet, row groups {list(s.row_groups)})"
        return f"{s.path} (parquet)"
    if s.end < 0:
        return f"{s.path} ({s.fmt}, whole file)"
    return f"{s.path} ({s.fmt}, bytes {s.start}-{s.end})"


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, UnicodeError, EOFError)
    pa = sys.modules.get("pyarrow")
    if pa is not None:  # only present if a Parquet file was touched; never import it just for this
        errors += (pa.ArrowException,)
    pd = sys.modules.get("pandas")
    if pd is not None:  # raised as an error by read_slice: a row wider than the header loses data
        errors += (pd.errors.ParserWarning,)
    return errors


def read_slice(s: TableSlice, *, usecols: Sequence[str] | None = None, finish: bool = True,
               where: str = "") -> pd.DataFrame:
    """Read one slice. ``usecols`` (driver-side partition key scan) reads only those raw columns;
    ``finish=False`` skips the path/partition columns, filter and column selection."""
    opts = dict(s.options)
    prefix = f"{where}: " if where else ""
    try:
        if s.fmt == "csv":
            with warnings.catch_warnings():
                # pandas only warns when a row has more fields than the header, then drops them:
                # that row is malformed, and silently losing its data is worse than failing
                import pandas as pd

                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = _read_csv(s, opts, usecols)
        elif s.fmt == "jsonl":
            df = _read_jsonl(s, opts, usecols)
        elif s.fmt == "parquet":
            try:
                df = _read_parquet(s, usecols)
            except (KeyError, TypeError, IndexError, AttributeError) as exc:
                # pyarrow trusts the file's pandas metadata (a JSON text in its schema): damaged, it
                # fails deep inside pandas_compat with a bare KeyError/TypeError
                raise InputDataError(
                    f"{prefix}cannot read {describe_slice(s)}: its pandas metadata (the 'pandas' entry of the "
                    f"Parquet schema) is damaged ({type(exc).__name__}: {exc}); re-write the file"
                ) from exc
        else:
            raise InputDataError(f"{prefix}unknown table format {s.fmt!r} for {s.path}; expected csv, jsonl or parquet")
    except InputDataError:
        raise
    except _read_errors() as exc:
        hint = ""
        if s.fmt == "csv":
            hint = (" Check the rows in that range: each needs the header's number of fields"
                    f"{f' ({len(s.columns)})' if s.columns else ''}, and quoted fields must not span lines "
                    "(pandas line numbers count from the start of the range)")
        elif s.fmt == "jsonl":
            hint = " Each line must be one JSON object (an MLTable read_json_lines can set invalid_lines: drop)"
        raise InputDataError(f"{prefix}cannot read {describe_slice(s)}: {type(exc).__name__}: {exc}.{hint}") from exc
    if usecols is not None or not finish:
        return df
    return _finish(df, s, opts, prefix)


def _read_csv(s: TableSlice, opts: dict[str, Any], usecols: Sequence[str] | None) -> pd.DataFrame:
    import pandas as pd

    kw: dict[str, Any] = {"sep": opts.get("sep", ","), "header": None, "index_col": False,
                          "encoding": opts.get("encoding", "utf-8")}
    if s.columns is not None:
        kw["names"] = list(s.columns)
    if opts.get("empty_as_string"):
        kw["keep_default_na"] = False
    if usecols is not None:
        kw["usecols"] = list(usecols)
    if s.end < 0:  # read whole (not byte-splittable): pandas decodes the text itself
        if opts.get("skip_header"):
            kw["skiprows"] = 1
        if is_remote(s.path):
            with open_binary(s.path) as rf:
                return cast("pd.DataFrame", pd.read_csv(rf, **kw))
        return cast("pd.DataFrame", pd.read_csv(s.path, **kw))
    if is_remote(s.path) and usecols is None:
        return cast("pd.DataFrame", pd.read_csv(io.BytesIO(read_range(s.path, s.start, s.end)), **kw))
    with (open_binary(s.path) if is_remote(s.path) else open(s.path, "rb")) as f:
        f.seek(s.start)
        if usecols is not None:  # a whole-file key scan: stream from the file, keep only the key columns
            return cast("pd.DataFrame", pd.read_csv(f, **kw))
        data = f.read(s.end - s.start)
    return cast("pd.DataFrame", pd.read_csv(io.BytesIO(data), **kw))


def _read_jsonl(s: TableSlice, opts: dict[str, Any], usecols: Sequence[str] | None) -> pd.DataFrame:
    import pandas as pd

    encoding = opts.get("encoding", "utf-8")
    if s.end < 0:
        if is_remote(s.path):
            with io.TextIOWrapper(open_binary(s.path), encoding=encoding) as rtf:  # universal newlines, as open()
                data = rtf.read().encode("utf-8")
        else:
            with open(s.path, encoding=encoding) as tf:
                data = tf.read().encode("utf-8")
        encoding = "utf-8"
    elif is_remote(s.path):
        data = read_range(s.path, s.start, s.end)
    else:
        with open(s.path, "rb") as f:
            f.seek(s.start)
            data = f.read(s.end - s.start)
    if opts.get("invalid_lines") == "drop":
        data = b"\n".join(line for line in data.splitlines() if _valid_json(line, encoding))
    df = pd.read_json(io.BytesIO(data), lines=True, encoding=encoding)
    if usecols is not None:
        df = df[list(usecols)]
    return df


def _valid_json(line: bytes, encoding: str) -> bool:
    if not line.strip():
        return False
    try:
        json.loads(line.decode(encoding))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return False
    return True


def _read_parquet(s: TableSlice, usecols: Sequence[str] | None) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(usecols) if usecols is not None else None
    with contextlib.ExitStack() as stack:
        source: Any = stack.enter_context(open_binary(s.path)) if is_remote(s.path) else s.path
        pf = stack.enter_context(pq.ParquetFile(source))
        if s.row_start is not None and s.row_stop is not None and s.row_groups:
            rg = s.row_groups[0]
            offset = sum(pf.metadata.row_group(i).num_rows for i in range(rg))
            lo, hi = s.row_start - offset, s.row_stop - offset
            batches = []
            pos = 0
            for batch in pf.iter_batches(batch_size=_RECORD_BATCH_ROWS, row_groups=[rg], columns=columns,
                                         use_pandas_metadata=True):
                n = batch.num_rows
                if pos + n > lo:
                    a = max(lo - pos, 0)
                    b = min(hi - pos, n)
                    batches.append(batch.slice(a, b - a))
                pos += n
                if pos >= hi:
                    break
            schema = batches[0].schema if batches else pf.schema_arrow
            table = pa.Table.from_batches(batches, schema=schema)
        elif s.row_groups is not None:
            table = pf.read_row_groups(list(s.row_groups), columns=columns, use_pandas_metadata=True)
        else:
            table = pf.read(columns=columns, use_pandas_metadata=True)
    return cast("pd.DataFrame", table.to_pandas())


def _finish(df: pd.DataFrame, s: TableSlice, opts: dict[str, Any], prefix: str) -> pd.DataFrame:
    window = opts.get("row_window")  # MLTable skip/take: rows [a, b) of this slice
    if window is not None:
        df = df.iloc[window[0]:window[1]].reset_index(drop=True)
    if opts.get("include_path_column"):
        df["Path"] = s.path
    for key, value in s.partition_values:
        if key not in df.columns:
            df[key] = value
    where_values = opts.get("where")
    if where_values:
        mask = None
        for key, value in where_values:
            if key not in df.columns:
                raise InputDataError(f"{prefix}partition key column {key!r} is missing from {describe_slice(s)}; "
                                     f"its columns are {', '.join(map(str, df.columns))} (did the file change?)")
            col = df[key]
            m = col.isna() if value is None else (col == value)
            mask = m if mask is None else (mask & m)
        df = df.loc[mask].reset_index(drop=True)  # type: ignore[assignment]  # a boolean mask keeps a DataFrame
    drop = opts.get("drop_columns")
    if drop:
        df = df.drop(columns=[c for c in drop if c in df.columns])
    keep = opts.get("keep_columns")
    if keep:
        missing = [c for c in keep if c not in df.columns]
        if missing:
            raise InputDataError(f"{prefix}keep_columns names {', '.join(map(repr, missing))}, which "
                                 f"{describe_slice(s)} does not have; its columns are "
                                 f"{', '.join(map(str, df.columns))}")
        df = df[list(keep)]
    return df
