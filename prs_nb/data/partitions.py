"""partition_keys: one mini-batch per distinct combination of key values (contract 5.4 and 12).

Where the values come from:

* **DataFrame**: ``groupby(keys, sort=True, dropna=False)``; a mini-batch holds the group's rows with
  their original index.
* **Folder layout**: ``key=value`` folder names (hive style, percent-decoded), or the fields of an
  MLTable ``partition_format``. Values from paths are strings (datetimes for ``{x:yyyy/MM/dd}``
  fields). For tables they are added as columns to the rows the worker reads (a column already
  present in the file is left as it is); an MLTable format adds all its fields, hive folders only
  the requested keys. File inputs take their values from the path only.
* **Columns inside the files** (tables only, for keys the path does not give): the driver reads
  just the key columns of every file (``pyarrow.parquet.read_table(columns=keys)`` /
  ``pandas.read_csv(usecols=keys)``) to find the distinct values and their row counts; the worker
  then reads the whole file and keeps the rows equal to the values (``None`` matches nulls). Cost:
  a full pass over the key columns in the driver before the first mini-batch, and a file holding P
  partitions is read P times by the workers - prefer a ``key=value`` folder layout for big data.

A partition is never split by size, and may span several files: its source is then a list of
slices that the worker concatenates (with a fresh ``RangeIndex``). Partitions come sorted by their
key values, nulls last, like ``groupby(sort=True)`` (first-seen order when values of different types
cannot be compared). A null key value is ``None`` in ``partition_key_value``.
Listing is not streaming here: a partition's files can be anywhere in the tree, so the whole input
is listed (one path per file in memory) before the first partition is yielded.
``global_row_index_lower_bound`` is None: a partition's rows are not one contiguous range.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from prs_nb.data.base import RemoteFile, TableSlice
from prs_nb.data.files import ListedFile, Part, file_item
from prs_nb.data.fs import is_remote, open_binary
from prs_nb.data.tabular import TablePlanner
from prs_nb.errors import InputDataError

if TYPE_CHECKING:
    import pandas as pd

PathValues = Callable[[ListedFile], dict[str, Any]]


def plain_value(v: Any) -> Any:
    """A key value as a plain Python object: numpy scalars unwrapped, every kind of null -> None."""
    if v is None:
        return None
    try:
        if v != v:  # NaN, NaT
            return None
    except TypeError:  # pandas.NA refuses to be a bool
        return None
    item = getattr(v, "item", None)
    if item is not None and type(v).__module__ == "numpy" and getattr(v, "dtype", None) is not None \
            and v.dtype.kind in "biufUS":
        return item()
    return v


def _sorted_combos(combos: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    listed = list(combos)
    try:
        return sorted(listed, key=lambda c: tuple((1, 0) if v is None else (0, v) for v in c))
    except TypeError:
        return listed


def _label(pkv: dict[str, Any]) -> str:
    return "partition " + ", ".join(f"{k}={v}" for k, v in pkv.items())


def _keys_phrase(path_keys: Sequence[str]) -> str:
    if path_keys:
        return f"keys from its folder layout: {', '.join(path_keys)}"
    return "its folder layout has no key=value folders"


def plan_dataframe_partitions(df: pd.DataFrame, keys: Sequence[str], where: str) -> Iterator[Part]:
    """One part per group of ``df.groupby(keys, sort=True, dropna=False)``."""
    check_dataframe_keys(df, keys, where)
    for combo, group in df.groupby(list(keys), sort=True, dropna=False):
        pkv = {k: plain_value(v) for k, v in zip(keys, combo, strict=True)}
        yield Part(len(group), group, pkv, None, _label(pkv))


def check_dataframe_keys(df: pd.DataFrame, keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise InputDataError(
            f"{where}: partition key {missing[0]!r} is not a column of the DataFrame; available columns: "
            f"{', '.join(map(str, df.columns)) or '(none)'}. Fix partition_keys or add the column"
        )


def plan_file_partitions(files: Iterable[ListedFile], keys: Sequence[str], where: str,
                         path_values: PathValues) -> Iterator[Part]:
    """File lists grouped by the key values found in each file's path."""
    groups: dict[tuple[Any, ...], list[str | RemoteFile]] = {}
    for f in files:
        values = path_values(f)
        missing = [k for k in keys if k not in values]
        if missing:
            raise InputDataError(
                f"{where}: partition key {missing[0]!r} not found for file {f.path}: {_keys_phrase(list(values))}. "
                "File inputs take partition values from key=value folders (e.g. store=12/brand=acme/...) or from "
                "an MLTable extract_columns_from_partition_format; fix partition_keys or the folder layout"
            )
        groups.setdefault(tuple(values[k] for k in keys), []).append(file_item(f))
    for combo in _sorted_combos(groups):
        pkv = dict(zip(keys, combo, strict=True))
        paths = groups[combo]
        yield Part(len(paths), paths, pkv, None, _label(pkv))


def _key_columns(s: TableSlice, col_keys: list[str], path_keys: list[str],
                 where: str) -> pd.DataFrame:
    """The key columns of one whole file (read in the driver), checking that they exist."""
    from prs_nb.data.read import read_slice

    available: list[str] | None = None
    if s.fmt == "csv" and s.columns is not None:
        available = list(s.columns)
    elif s.fmt == "parquet":
        import pyarrow.parquet as pq

        if is_remote(s.path):
            with open_binary(s.path, where=where) as fobj:
                available = list(pq.read_schema(fobj).names)
        else:
            available = list(pq.read_schema(s.path).names)
    if available is not None:
        missing = [k for k in col_keys if k not in available]
        if missing:
            _raise_missing_column(missing[0], s.path, available, path_keys, where)
        return read_slice(s, usecols=col_keys)
    df = read_slice(s, usecols=None, finish=False)  # JSON Lines: no header to look at first
    missing = [k for k in col_keys if k not in df.columns]
    if missing:
        _raise_missing_column(missing[0], s.path, list(map(str, df.columns)), path_keys, where)
    return cast("pd.DataFrame", df[col_keys])


def _raise_missing_column(key: str, path: str, columns: list[str], path_keys: list[str], where: str) -> None:
    raise InputDataError(
        f"{where}: partition key {key!r} not found in {path}: its columns are {', '.join(columns) or '(none)'}; "
        f"{_keys_phrase(path_keys)}. Partition keys must be table columns, key=value folder names or MLTable "
        "partition_format fields; fix partition_keys or the data"
    )


def plan_table_partitions(files: Iterable[ListedFile], keys: Sequence[str], where: str, planner: TablePlanner,
                          path_values: PathValues, add_all_path_values: bool) -> Iterator[Part]:
    """Table slices grouped by key values from the path and/or from key columns inside the files."""
    groups: dict[tuple[Any, ...], list[tuple[TableSlice, int | None]]] = {}
    for f in files:
        values = path_values(f)
        path_keys = [k for k in keys if k in values]
        col_keys = [k for k in keys if k not in values]
        added = values if add_all_path_values else {k: values[k] for k in path_keys}
        whole = planner.whole_file(f.path, partition_values=tuple(added.items()))
        if whole is None:
            continue  # no rows: no partition to contribute to
        s, rows = whole
        if not col_keys:
            groups.setdefault(tuple(values[k] for k in keys), []).append((s, rows))
            continue
        key_df = _key_columns(dataclasses.replace(s, partition_values=()), col_keys, list(values), where)
        counts = key_df.groupby(col_keys, sort=True, dropna=False).size()
        for combo, n in counts.items():
            combo_t = combo if isinstance(combo, tuple) else (combo,)
            col_values = {k: plain_value(v) for k, v in zip(col_keys, combo_t, strict=True)}
            merged = {**{k: values[k] for k in path_keys}, **col_values}
            part = dataclasses.replace(s, options=s.options + (("where", tuple(col_values.items())),))
            groups.setdefault(tuple(merged[k] for k in keys), []).append((part, int(n)))
    for combo in _sorted_combos(groups):
        pkv = dict(zip(keys, combo, strict=True))
        parts = groups[combo]
        counts_known = [n for _, n in parts if n is not None]
        items = sum(counts_known) if len(counts_known) == len(parts) else None
        slices = [p for p, _ in parts]
        yield Part(items, slices[0] if len(slices) == 1 else slices, pkv, None, _label(pkv))
