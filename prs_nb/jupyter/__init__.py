"""The notebook layer: ``%%parallel_run`` magic, live progress display, JobForm, run monitor.

Names are loaded on first use, so ``prs_nb.jupyter.tables`` (plain HTML) can be imported without
IPython or ipywidgets.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "NotebookProgress": "prs_nb.jupyter.progress",
    "JobForm": "prs_nb.jupyter.form",
    "RunMonitor": "prs_nb.jupyter.monitor",
    "ParallelRunMagics": "prs_nb.jupyter.magic",
    "ParallelRunFailed": "prs_nb.jupyter.magic",
    "load_ipython_extension": "prs_nb.jupyter.magic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prs_nb.jupyter' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
