"""Mini-batch descriptors: what the driver hands to a worker (never the data of a large table).

``MiniBatch.source`` is one of:
* ``list[str]`` - absolute file paths (file inputs); an object-store file is a :class:`RemoteFile`
  instead, which the worker downloads before calling ``run()`` (see :mod:`prs_nb.data.fs`);
* :class:`TableSlice` - a slice reference the worker reads itself (byte range aligned to rows for
  CSV / JSON Lines, row groups or a row range for Parquet);
* ``pandas.DataFrame`` - rows of an in-memory DataFrame (they travel with the descriptor);
* ``None`` - a rank mini-batch with no data (v1 ``--rank_mini_batch_count``);
* :class:`UnreadableFile` - a table file the driver could not read while listing (corrupt Parquet
  footer, undecodable header, permission denied): the mini-batch fails when the worker reads it, so
  the file counts against the job's thresholds like any bad mini-batch and the other files still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FILES = "files"
TABULAR = "tabular"
RANK = "rank"


@dataclass(frozen=True)
class TableSlice:
    """A part of one table file, read by the worker.

    ``fmt``: ``csv`` | ``jsonl`` | ``parquet``. For csv/jsonl, ``[start, end)`` is a byte range that
    starts at a row boundary; for csv, ``columns`` are the header names read once by the driver.
    For parquet, ``row_groups`` (whole row groups) or ``row_start``/``row_stop`` (a row range of a
    single big row group). ``partition_values`` are columns added from the folder layout
    (``key=value/``). ``options`` are reader options (``sep``, ``encoding``, ``header``...).
    """

    path: str
    fmt: str
    start: int = 0
    end: int = -1
    columns: tuple[str, ...] | None = None
    row_groups: tuple[int, ...] | None = None
    row_start: int | None = None
    row_stop: int | None = None
    partition_values: tuple[tuple[str, Any], ...] = ()
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RemoteFile:
    """A file of an object-store input (``uri``, e.g. ``s3://bucket/data/a/1.jpg``) and its path
    relative to the bound folder (``rel``: ``a/1.jpg``), under which the worker saves its local copy.
    ``str()`` is the URI, as shown in descriptions and tables."""

    uri: str
    rel: str

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class UnreadableFile:
    """Stands for (the rest of) a table file that could not be read while listing; ``message`` is the
    InputDataError the driver got, raised again when a worker reads this mini-batch."""

    path: str
    message: str


@dataclass(frozen=True)
class MiniBatch:
    """One unit of work. ``index`` is 0-based in creation order; ``items`` is the number of files or
    rows when known by the driver (``None`` when only the worker can count them, e.g. CSV byte ranges).
    ``source`` may be a list of parts (several slices/frames that together form one partition)."""

    index: int
    input_name: str
    kind: str
    items: int | None
    source: Any
    partition_key_value: dict[str, Any] = field(default_factory=dict)
    global_row_index_lower_bound: int | None = None
    label: str = ""

    def describe(self, max_items: int = 3) -> str:
        """A short human description: first items of a file list, or the slice."""
        if self.kind == FILES and isinstance(self.source, list):
            head = ", ".join(str(p) for p in self.source[:max_items])
            more = len(self.source) - max_items
            return head + (f" (+{more} more)" if more > 0 else "")
        return self.label or self.kind
