"""Entry code of the conformance table: what ``run()`` does is written in the data it receives.

File inputs: file names ``<batch>_<item>_<kind>.txt``; tabular inputs: columns ``batch`` and ``kind``.
The first item of a mini-batch decides the behaviour of the whole mini-batch. Every call appends one
byte to ``$CONF_MARKERS/<batch>``, so the test can count the calls of ``run()`` per mini-batch
independently of the engine's own bookkeeping (and ``flakyN`` can fail its first N calls).

The same file is the v1 / v2 entry script (copied into a code folder as ``score.py``) and, imported,
the v2 notebook-style function.
"""

from __future__ import annotations

import os


def kind_and_key(mini_batch):
    if isinstance(mini_batch, list):
        if not mini_batch:  # rank mini-batches carry no data
            return "ok", None
        batch, _item, kind = os.path.basename(mini_batch[0]).split(".")[0].split("_", 2)
        return kind, batch
    return str(mini_batch["kind"].iloc[0]), f"{int(mini_batch['batch'].iloc[0]):03d}"


def returned(kind: str, n: int) -> int | None:
    """How many results run() returns for an n-item mini-batch of this kind (None: not a valid result)."""
    if kind in ("ok", "tuple", "frame", "framesub") or kind.startswith("flaky"):
        return n
    if kind.startswith("short"):
        return max(0, n - int(kind[5:]))
    if kind == "empty":
        return 0
    if kind == "longer":
        return 2 * n
    return None


def run(mini_batch):
    kind, key = kind_and_key(mini_batch)
    calls = 0
    if key is not None:
        path = os.path.join(os.environ["CONF_MARKERS"], key)
        with open(path, "a") as fh:
            fh.write("x")
        calls = os.path.getsize(path)
    n = len(mini_batch)
    rows = [f"{key}:{i}" for i in range(n)]
    if kind == "raise":
        raise ValueError(f"mini-batch {key} raises on purpose")
    if kind == "sysexit":
        raise SystemExit(3)
    if kind.startswith("flaky"):
        if calls <= int(kind[5:]):
            raise RuntimeError(f"mini-batch {key}: call {calls} fails on purpose")
        return rows
    if kind == "none":
        return None
    if kind == "int":
        return 42
    if kind == "str":
        return "not a list"
    if kind == "dict":
        return {"a": 1}
    if kind == "ndarray":
        import numpy

        return numpy.arange(n)
    if kind == "tuple":
        return tuple(rows)
    if kind == "frame":
        import pandas

        return pandas.DataFrame({"key": rows})
    if kind == "framesub":  # a DataFrame subclass (as geopandas and others return) is a DataFrame
        import pandas

        class Frame(pandas.DataFrame):
            pass

        return Frame({"key": rows})
    if kind == "longer":
        return rows + rows
    if kind == "empty":
        return []
    if kind.startswith("short"):
        return rows[: max(0, n - int(kind[5:]))]
    if kind == "ok":
        return rows
    raise AssertionError(f"unknown kind {kind!r}")
