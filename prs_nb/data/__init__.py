"""The data layer: bound inputs -> a lazy stream of mini-batch descriptors (driver side), and one
descriptor -> the data handed to ``run()`` (worker side).

::

    JobSpec + EffectiveSettings --plan_input--> InputPlan --iter--> MiniBatch(index, kind, items, source, ...)
                                                                        |  (pickled to a worker)
                                                       read_mini_batch(mb) --> list[str] | DataFrame | []

Which input is split: ``spec.input_data`` (``${{inputs.x}}``); its value is ``spec.bindings[x]``,
else the declared ``Input``'s ``path``, else its ``default``. A value may be a path (file, folder,
or glob with ``* ? [ ] **``), an ``Input`` (its ``path``), a list/tuple of those, or a pandas
DataFrame. Relative paths are resolved against ``base_dir`` (default: the working directory);
descriptors carry absolute paths. An object-store URI (``s3://``, ``gs://``, ``abfs://``...) is
listed and read through fsspec, and its descriptors carry URIs - see :mod:`prs_nb.data.fs`.

Kind (from the *declared* input type, else the bound ``Input``'s type, else ``uri_folder``):

* ``uri_folder`` / ``uri_file`` (and model types): lists of files, ``mini_batch_size`` files each
  (default 10) - see :mod:`prs_nb.data.files`.
* ``mltable``: tables (CSV/TSV, Parquet, JSON Lines files, a folder or glob of them), cut by size
  (default 1 MiB) - see :mod:`prs_nb.data.tabular`; or a folder with an ``MLTable`` file - see
  :mod:`prs_nb.data.mltable` (without a read transformation, or bound in a mount/download mode, an
  MLTable is a file list; with one, in ``direct`` mode or no mode, it is tabular).
* a DataFrame, bound to any input type: tabular, split by rows.
* ``--rank_mini_batch_count N`` (> 0) in program_arguments: N data-less rank mini-batches; like v1,
  the inputs are then ignored (contract 5.5), so this wins even when input_data is set.
* ``partition_keys``: one mini-batch per distinct key combination - see :mod:`prs_nb.data.partitions`.

Problems visible up front (missing path, unknown table extension, malformed MLTable, missing
DataFrame key column) raise from :func:`plan_input`; problems found while listing (a glob that
matched nothing, mixed table types, an unreadable Parquet footer) raise from iterating the plan.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prs_nb.data.base import FILES, RANK, TABULAR, MiniBatch, TableSlice
from prs_nb.data.files import (
    ListedFile,
    Part,
    chunks,
    classify,
    file_item,
    hive_values,
    iter_paths,
    resolve_path,
)
from prs_nb.data.read import read_mini_batch
from prs_nb.errors import ConfigError
from prs_nb.spec import DEFAULT_FILE_MINI_BATCH_SIZE, DEFAULT_TABULAR_MINI_BATCH_SIZE, LITERAL_TYPES, Input

if TYPE_CHECKING:
    import pandas as pd

    from prs_nb.data.mltable import MLTableSpec
    from prs_nb.data.tabular import ReadOptions
    from prs_nb.spec import EffectiveSettings, JobSpec

#: Data modes in which an MLTable input reaches run() as a list of files even with a read transformation
#: (Azure mounts or downloads the files the MLTable lists); ``direct`` or no mode keeps it tabular.
FILE_LIST_MODES = ("ro_mount", "rw_mount", "mount", "download", "eval_mount", "eval_download")

__all__ = ["FILES", "RANK", "TABULAR", "InputPlan", "MiniBatch", "TableSlice", "count_items", "plan_input",
           "read_mini_batch"]


def count_items(mb: MiniBatch) -> int | None:
    """The number of items of ``mb`` when the descriptor does not say (CSV / JSON Lines ranges
    listed without counting), by counting rows in its byte range(s); None if unknown."""
    if mb.items is not None:
        return mb.items
    from prs_nb.data.tabular import count_slice_rows

    parts = mb.source if isinstance(mb.source, (list, tuple)) else [mb.source]
    total = 0
    for part in parts:
        n = count_slice_rows(part) if isinstance(part, TableSlice) else None
        if n is None:
            return None
        total += n
    return total


class InputPlan:
    """The mini-batches of one job input, created lazily.

    Each iteration starts a fresh listing and yields :class:`MiniBatch` descriptors with indices
    0, 1, 2... in creation order; nothing is listed or read before iteration starts."""

    def __init__(self, kind: str, input_name: str, parts: Callable[[], Iterator[Part]], description: str) -> None:
        self.kind = kind
        self.input_name = input_name
        self._parts = parts
        self._description = description

    def __iter__(self) -> Iterator[MiniBatch]:
        name, kind = self.input_name, self.kind
        for index, p in enumerate(self._parts()):
            yield MiniBatch(index=index, input_name=name, kind=kind, items=p.items, source=p.source,
                            partition_key_value=p.partition_key_value, global_row_index_lower_bound=p.lower_bound,
                            label=p.label)

    def describe(self) -> str:
        """One line for dry runs and logs, e.g. ``folder data/images: files, 10 per mini-batch``."""
        return self._description

    def __repr__(self) -> str:
        return f"InputPlan({self.input_name!r}, {self.kind}: {self._description})"


def plan_input(spec: JobSpec, settings: EffectiveSettings, base_dir: str | None = None, *,
               count_rows: bool = True) -> InputPlan:
    """Plan the mini-batches of ``spec``'s ``input_data`` (see the module docstring for the rules).

    ``base_dir`` (default ``os.getcwd()``) resolves relative paths. File inputs take
    ``settings.explicit_mini_batch_size`` files per mini-batch (default 10); tabular inputs about that
    many bytes (default 1048576); with ``partition_keys`` (the size is then None) one mini-batch per
    partition. ``count_rows=False`` lets CSV / JSON Lines ranges skip the driver's row count (the
    worker counts the rows it reads; ``items`` and ``global_row_index_lower_bound`` are then None):
    the engine asks for counts only when ``run`` takes the context argument. Raises
    :class:`ConfigError` for an unusable binding and :class:`InputDataError` for data that cannot be
    listed."""
    base = os.path.abspath(base_dir) if base_dir is not None else os.getcwd()
    name = spec.input_data_name
    if settings.rank_mini_batch_count > 0:
        n = settings.rank_mini_batch_count
        return InputPlan(RANK, name or "", lambda: _rank_parts(n),
                         f"rank: {n} mini-batches without input data (--rank_mini_batch_count)")
    if name is None:
        raise ConfigError(
            "input_data is required: set input_data='${{inputs.<name>}}' to the input whose files or rows are "
            "split into mini-batches (or pass --rank_mini_batch_count N in program_arguments to run the entry "
            "script N times without input data)"
        )
    where = f"input {name!r}"
    value, itype = _bound_value(spec, name)
    keys = tuple(spec.partition_keys or ())
    explicit = settings.explicit_mini_batch_size
    if _is_dataframe(value):
        return _dataframe_plan(name, where, value, keys, explicit or DEFAULT_TABULAR_MINI_BATCH_SIZE)
    if itype in LITERAL_TYPES:
        raise ConfigError(f"{where} is a {itype} input; input_data must name a data input "
                          "(uri_folder, uri_file or mltable)")
    entries = _path_entries(value, base, where)
    what = _what(entries)
    if itype == "mltable":
        from prs_nb.data.mltable import find_mltable

        mlt_file = find_mltable(entries[0][1]) if len(entries) == 1 else None
        if mlt_file is not None:
            return _mltable_plan(name, where, mlt_file, entries[0][0], keys, explicit, count_rows,
                                 file_list=_input_mode(spec, name) in FILE_LIST_MODES)
        from prs_nb.data.tabular import ReadOptions, extension_format

        for _, path in entries:
            if classify(path, where=where) == "file":
                extension_format(path, where=where)  # an unknown table type fails now, not mid-job
        size = explicit or DEFAULT_TABULAR_MINI_BATCH_SIZE
        return _table_plan(name, where, [p for _, p in entries], ReadOptions(), None, keys, size, what,
                           skip_mltable=False, count_rows=count_rows)
    size = explicit or DEFAULT_FILE_MINI_BATCH_SIZE
    return _files_plan(name, where, [p for _, p in entries], None, keys, size, what)


# ---------------------------------------------------------------------------------- bound values
def _input_mode(spec: JobSpec, name: str) -> str | None:
    """The data mode of input ``name``: the bound Input's, else the declared port's (None if unset)."""
    bound = spec.bindings.get(name)
    declared = spec.inputs.get(name)
    return (getattr(bound, "mode", None) if isinstance(bound, Input) else None) or \
        (declared.mode if declared is not None else None)


def _bound_value(spec: JobSpec, name: str) -> tuple[Any, str]:
    declared = spec.inputs.get(name)
    if name in spec.bindings:
        value = spec.bindings[name]
    elif declared is not None and declared.path is not None:
        value = declared.path
    elif declared is not None and declared.default is not None:
        value = declared.default
    else:
        value = None
    itype = declared.type if declared is not None else None
    if isinstance(value, Input):
        itype = itype or value.type
        value = value.path if value.path is not None else value.default
    if value is None:
        raise ConfigError(
            f"input {name!r} (the input_data) has no data bound: bind a path, an Input or a DataFrame, e.g. "
            f"job({name}=Input(type='uri_folder', path='data/')) or Input(path=...) in the declaration"
        )
    return value, itype or "uri_folder"


def _is_dataframe(value: Any) -> bool:
    pd = sys.modules.get("pandas")  # a DataFrame can only exist if pandas was imported: don't import it
    return pd is not None and isinstance(value, pd.DataFrame)


def _path_entries(value: Any, base: str, where: str) -> list[tuple[str, str]]:
    """(as given, absolute) for each bound path; a missing path raises now."""
    if isinstance(value, (str, os.PathLike)):
        items: list[Any] = [value]
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{where} is bound to an empty list; bind at least one path")
        items = list(value)
    else:
        raise ConfigError(f"{where} is bound to a {type(value).__name__}; expected a path (str or pathlib.Path), "
                          "a list of paths, an Input(path=...) or a pandas DataFrame")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, Input):
            item = item.path
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str) or not item.strip():
            what = f"entry {i} of the bound list" if len(items) > 1 else "the bound value"
            raise ConfigError(f"{where}: {what} is {type(item).__name__} {item!r}; expected a path string")
        path = resolve_path(item, base, where=where)
        classify(path, where=where, given=item)
        out.append((item, path))
    return out


def _what(entries: Sequence[tuple[str, str]]) -> str:
    if len(entries) == 1:
        given, path = entries[0]
        return f"{classify(path, where='')} {given}"
    more = f", +{len(entries) - 2} more" if len(entries) > 2 else ""
    return f"{len(entries)} paths ({', '.join(g for g, _ in entries[:2])}{more})"


def _human_size(size: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def _per(keys: Sequence[str], per_size: str) -> str:
    return f"one mini-batch per partition of {', '.join(keys)}" if keys else per_size


# ---------------------------------------------------------------------------------- plans
def _rank_parts(n: int) -> Iterator[Part]:
    for i in range(n):
        yield Part(0, None, {}, None, f"rank {i}")


def _dataframe_plan(name: str, where: str, df: pd.DataFrame, keys: Sequence[str], size: int) -> InputPlan:
    from prs_nb.data.partitions import check_dataframe_keys, plan_dataframe_partitions
    from prs_nb.data.tabular import plan_dataframe

    if keys:
        check_dataframe_keys(df, keys, where)
    what = f"DataFrame {len(df)} rows x {len(df.columns)} columns"
    desc = f"{what}: tabular, {_per(keys, f'~{_human_size(size)} per mini-batch')}"
    if keys:
        return InputPlan(TABULAR, name, lambda: plan_dataframe_partitions(df, keys, where), desc)
    return InputPlan(TABULAR, name, lambda: plan_dataframe(df, size), desc)


def _files_plan(name: str, where: str, paths: list[str], path_values: Callable[[ListedFile], dict[str, Any]] | None,
                keys: Sequence[str], size: int, what: str, skip_file: str | None = None) -> InputPlan:
    values = path_values or (lambda f: hive_values(f.rel))

    def parts() -> Iterator[Part]:
        files: Iterator[ListedFile] = iter_paths(paths, where=where)
        if skip_file is not None:  # an MLTable's own file is its description, not one of its files
            files = (f for f in files if f.path != skip_file)
        if keys:
            from prs_nb.data.partitions import plan_file_partitions

            yield from plan_file_partitions(files, keys, where, values)
            return
        for block in chunks(files, size):
            yield Part(len(block), [file_item(f) for f in block], {}, None, "")

    return InputPlan(FILES, name, parts, f"{what}: files, {_per(keys, f'{size} per mini-batch')}")


def _table_plan(name: str, where: str, paths: list[str], opts: ReadOptions, mlt: MLTableSpec | None,
                keys: Sequence[str], size: int, what: str, *, skip_mltable: bool,
                count_rows: bool = True) -> InputPlan:
    from prs_nb.data.mltable import MLTABLE_FILE
    from prs_nb.data.tabular import TablePlanner

    fmt_values = mlt.partition_format.values if mlt is not None and mlt.partition_format is not None else None

    def path_values(f: ListedFile) -> dict[str, Any]:
        return fmt_values(f.path) if fmt_values is not None else hive_values(f.rel)

    def parts() -> Iterator[Part]:
        planner = TablePlanner(opts, where, count_rows=count_rows, defer_read_errors=not keys)
        files: Iterator[ListedFile] = iter_paths(paths, where=where, tabular=True)
        if skip_mltable:
            files = (f for f in files if os.path.basename(f.path) != MLTABLE_FILE)
        if keys:
            from prs_nb.data.partitions import plan_table_partitions

            yield from plan_table_partitions(files, keys, where, planner, path_values,
                                             add_all_path_values=fmt_values is not None)
            return
        for f in files:
            pv = tuple(fmt_values(f.path).items()) if fmt_values is not None else ()
            yield from planner.plan_file(f.path, size, pv)

    desc = f"{what}: tabular, {_per(keys, f'~{_human_size(size)} per mini-batch')}"
    return InputPlan(TABULAR, name, parts, desc)


def _mltable_plan(name: str, where: str, mlt_file: str, given: str, keys: Sequence[str],
                  explicit: int | None, count_rows: bool = True, *, file_list: bool = False) -> InputPlan:
    import dataclasses

    from prs_nb.data.mltable import load_mltable

    mlt = load_mltable(mlt_file, where=where)
    if file_list and mlt.read is not None:  # mounted/downloaded (contract 3.2): the files, not the rows
        mlt = dataclasses.replace(mlt, read=None)
    if mlt.windowed and keys:
        from prs_nb.errors import MLTableError

        raise MLTableError(f"{where}: MLTable {mlt_file} uses skip/take, which cannot be combined with "
                           f"partition_keys ({', '.join(keys)}): the window is defined on the whole table. Remove "
                           "skip/take, or drop partition_keys and group by the key in run()")
    if mlt.read is None:
        size = explicit or DEFAULT_FILE_MINI_BATCH_SIZE
        fmt = mlt.partition_format
        values = (lambda f: fmt.values(f.path)) if fmt is not None else None
        if mlt.windowed:  # a window over the files, then chunks of the kept files
            return _windowed_files_plan(name, where, mlt, size, f"MLTable {given} (file list)")
        return _files_plan(name, where, list(mlt.paths), values, keys, size, f"MLTable {given} (file list)",
                           skip_file=mlt.file)
    size = explicit or DEFAULT_TABULAR_MINI_BATCH_SIZE
    plan = _table_plan(name, where, list(mlt.paths), mlt.read, mlt, keys, size, f"MLTable {given} ({mlt.fmt})",
                       skip_mltable=True, count_rows=count_rows or mlt.windowed)
    if not mlt.windowed:
        return plan
    from prs_nb.data.mltable import window_parts
    from prs_nb.data.read import read_slice

    def rows(part: Part) -> int:  # whole-file slices (multi-line, utf16) are counted by reading them
        return part.items if part.items is not None else len(read_slice(part.source, where=where))

    table_parts = plan._parts
    return InputPlan(TABULAR, name, lambda: window_parts(table_parts(), mlt.offset, mlt.limit, tabular=True,
                                                         count=rows),
                     plan.describe() + _window_text(mlt))


def _window_text(mlt: MLTableSpec) -> str:
    return f", skip {mlt.offset}" * (mlt.offset > 0) + (f", take {mlt.limit}" if mlt.limit is not None else "")


def _windowed_files_plan(name: str, where: str, mlt: MLTableSpec, size: int, what: str) -> InputPlan:
    from itertools import islice

    stop = None if mlt.limit is None else mlt.offset + mlt.limit

    def parts() -> Iterator[Part]:
        listed = (f for f in iter_paths(list(mlt.paths), where=where) if f.path != mlt.file)
        kept = islice(listed, mlt.offset, stop)
        for block in chunks(kept, size):
            yield Part(len(block), [file_item(f) for f in block], {}, None, "")

    return InputPlan(FILES, name, parts, f"{what}: files, {size} per mini-batch{_window_text(mlt)}")

