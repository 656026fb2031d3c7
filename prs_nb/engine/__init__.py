"""The engine: scheduler, backends and the run_job entry point.

Imported lazily so that a worker process (``python -m prs_nb.engine.worker``) loads only what it needs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_job"]


def __getattr__(name: str) -> Any:
    if name == "run_job":
        from prs_nb.engine.run import run_job

        return run_job
    raise AttributeError(f"module 'prs_nb.engine' has no attribute {name!r}")
