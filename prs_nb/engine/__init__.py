"""The engine: scheduler, backends and the run_job entry point."""

from prs_nb.engine.run import run_job

__all__ = ["run_job"]
