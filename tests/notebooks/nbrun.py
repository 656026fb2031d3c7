"""Execute a notebook with nbclient in a real kernel, in a scratch folder, and time it.

Used by ``test_tutorials.py`` (in this interpreter) and by ``test_binder_env.py`` (as a script run by
the Binder venv's Python, so it imports only nbformat and nbclient)::

    python tests/notebooks/nbrun.py --json times.json --timeout 60 notebooks/05_x.ipynb ...
    python tests/notebooks/nbrun.py --save notebooks/05_x.ipynb    # refresh its committed outputs

Unlike nbval, nbclient fails on any error output, an IPython ``UsageError`` included. A cell that is
meant to raise says so the nbval way (a ``# NBVAL_RAISES_EXCEPTION`` line) or with nbclient's
``raises-exception`` tag; such a cell must then really raise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import nbformat
from nbclient import NotebookClient

RAISES_MARKER = "# NBVAL_RAISES_EXCEPTION"
RAISES_TAG = "raises-exception"


def expects_error(cell: Any) -> bool:
    lines = [line.strip() for line in cell.get("source", "").splitlines()]
    return RAISES_MARKER in lines or RAISES_TAG in cell.get("metadata", {}).get("tags", [])


def execute(path: str, workdir: str, *, timeout: float = 60.0, env: dict[str, str] | None = None,
            kernel_name: str = "python3", save: bool = False) -> float:
    """Copy ``path`` into ``workdir``, run every cell there (cwd = ``workdir``) and return the wall time
    in seconds, kernel start and shutdown included. Raises nbclient's CellExecutionError on an
    unexpected error, CellTimeoutError when a cell runs longer than ``timeout``, and AssertionError
    when a cell marked as raising did not raise. ``save=True`` writes the fresh outputs back to
    ``path`` (without per-cell timing metadata) once every cell ran as expected."""
    copy = os.path.join(workdir, os.path.basename(path))
    shutil.copyfile(path, copy)
    nb = nbformat.read(copy, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and expects_error(cell):
            tags = cell.metadata.setdefault("tags", [])
            if RAISES_TAG not in tags:
                tags.append(RAISES_TAG)
    client = NotebookClient(nb, timeout=timeout, startup_timeout=60, kernel_name=kernel_name, record_timing=False,
                            resources={"metadata": {"path": workdir}})
    start = time.perf_counter()
    client.execute(env=env) if env is not None else client.execute()
    elapsed = time.perf_counter() - start
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and expects_error(cell):
            assert any(o.get("output_type") == "error" for o in cell.outputs), (
                f"{path}: cell {i} is marked as raising an exception but did not raise")
    if save:
        for cell in nb.cells:
            if cell.cell_type == "code" and RAISES_MARKER in [x.strip() for x in cell.source.splitlines()]:
                tags = cell.metadata.get("tags", [])
                if RAISES_TAG in tags:  # the tag was added above for nbclient; the marker says it already
                    tags.remove(RAISES_TAG)
                if not tags:
                    cell.metadata.pop("tags", None)
        nbformat.write(nb, path)
    return elapsed


def record_time(json_path: str, name: str, seconds: float) -> None:
    """Add ``name: seconds`` to the JSON object in ``json_path`` (created if missing)."""
    times: dict[str, float] = {}
    if os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as fh:
            times = json.load(fh)
    times[name] = round(seconds, 2)
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(dict(sorted(times.items())), fh, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per cell (default 60)")
    parser.add_argument("--json", help="write {notebook: seconds} here")
    parser.add_argument("--save", action="store_true", help="write the fresh outputs back into each notebook "
                        "(to refresh what nbval compares); a notebook that fails is left unchanged")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.notebooks:
        with tempfile.TemporaryDirectory(prefix="prs_nb_nbrun_") as workdir:
            try:
                seconds = execute(path, workdir, timeout=args.timeout, save=args.save)
            except Exception as exc:  # report every notebook, then fail
                failed += 1
                print(f"FAILED {path}: {type(exc).__name__}: {str(exc)[-3000:]}", flush=True)
                continue
        print(f"ok {path} {seconds:.1f} s", flush=True)
        if args.json:
            record_time(args.json, path, seconds)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
