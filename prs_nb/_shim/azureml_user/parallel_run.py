"""``from azureml_user.parallel_run import EntryScript`` for unchanged Azure ML entry scripts.

``EntryScript()`` is a per-process singleton (contract 4.7). A prs_nb worker calls :func:`_configure`
once after setting up its logs; the attributes then point at that worker's files:

* ``logger`` - writes to ``logs/user/entry_script_log/<node_id>/<process_name>.log.txt`` at the job's
  ``logging_level`` (``debug()`` is dropped at the default INFO, as on Azure);
* ``log_dir`` - ``logs/user/entry_script_log/<node_id>`` (exists);
* ``agent_name`` / ``process_name`` - ``"processNNN"``, unique per process;
* ``output_dir`` - the step's output directory;
* ``working_dir`` - the entry script's working directory;
* ``node_id`` - ``0..n-1``.

Outside a prs_nb worker (a plain ``python score.py``, a unit test) ``EntryScript()`` still works: it
says once on stderr that it is not running under prs_nb, logs to stderr at INFO, and uses
``log_dir`` / ``output_dir`` inside a new temporary folder (left in place for inspection).

This module imports nothing from prs_nb: it must stay cheap and usable in any interpreter.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from typing import Any

__all__ = ["EntryScript"]

_lock = threading.RLock()


class _State:
    """The values behind EntryScript's attributes (a plain class: no dataclasses import cost)."""

    __slots__ = ("logger", "log_dir", "agent_name", "output_dir", "working_dir", "node_id", "configured")

    def __init__(self, *, logger: logging.Logger, log_dir: str, agent_name: str, output_dir: str,
                 working_dir: str, node_id: int, configured: bool) -> None:
        self.logger = logger
        self.log_dir = log_dir
        self.agent_name = agent_name
        self.output_dir = output_dir
        self.working_dir = working_dir
        self.node_id = node_id
        self.configured = configured


_state: _State | None = None


def _configure(*, logger: logging.Logger, log_dir: str, agent_name: str, output_dir: str,
               working_dir: str, node_id: int) -> None:
    """Called once by the prs_nb worker after its log setup; later calls replace the values."""
    global _state
    with _lock:
        _state = _State(logger=logger, log_dir=str(log_dir), agent_name=str(agent_name),
                        output_dir=str(output_dir), working_dir=str(working_dir), node_id=int(node_id),
                        configured=True)


def _reset() -> None:
    """Forget the configuration (the inline backend calls this when its job ends)."""
    global _state
    with _lock:
        _state = None


def _is_configured() -> bool:
    s = _state
    return s is not None and s.configured


def _fallback() -> _State:
    """State used when no prs_nb worker configured this process (built once, with a warning)."""
    logger = logging.getLogger("azureml_user.entry_script")
    if not any(getattr(h, "_prs_nb_fallback", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s|%(levelname)s|%(name)s|%(message)s"))
        handler._prs_nb_fallback = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False  # stderr once, not again through the root logger
    base = tempfile.mkdtemp(prefix="prs_nb_entry_script_")
    log_dir = os.path.join(base, "logs", "user", "entry_script_log", "0")
    output_dir = os.path.join(base, "output")
    os.makedirs(log_dir, exist_ok=True)
    os.makedirs(output_dir, exist_ok=True)
    logger.warning(
        "EntryScript is not running under a prs_nb worker (azureml_user.parallel_run is prs_nb's local "
        "stand-in): logging to stderr, log_dir=%s, output_dir=%s. Run the job with prs_nb to get the "
        "Azure log layout.", log_dir, output_dir,
    )
    return _State(logger=logger, log_dir=log_dir, agent_name="process000", output_dir=output_dir,
                  working_dir=os.getcwd(), node_id=0, configured=False)


def _current() -> _State:
    global _state
    s = _state
    if s is None:
        with _lock:
            if _state is None:
                _state = _fallback()
            s = _state
    return s


class EntryScript:
    """The Azure ML parallel-run helper: ``EntryScript()`` returns the same object everywhere in a process.

    Attributes are read at access time, so an instance created before the worker configured the
    module (e.g. at import of the script) still sees the worker's values.
    """

    _instance: EntryScript | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> EntryScript:
        inst = cls._instance
        if inst is None:
            with _lock:
                if cls._instance is None:
                    cls._instance = super().__new__(cls)
                inst = cls._instance
        return inst

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Nothing to initialise: state lives in the module (set by _configure); accepting and ignoring
        # arguments keeps EntryScript(...) calls written for other runtime versions working.
        pass

    @property
    def logger(self) -> logging.Logger:
        """Logger writing to ``logs/user/entry_script_log/<node_id>/<agent_name>.log.txt``."""
        return _current().logger

    @property
    def log_dir(self) -> str:
        """``logs/user/entry_script_log/<node_id>`` (a str; ``Path(log_dir)`` works)."""
        return _current().log_dir

    @property
    def agent_name(self) -> str:
        """Process name ``processNNN``: use it to make file names unique per process."""
        return _current().agent_name

    @property
    def process_name(self) -> str:
        """Same as :attr:`agent_name`."""
        return _current().agent_name

    @property
    def output_dir(self) -> str:
        """The step's output directory."""
        return _current().output_dir

    @property
    def working_dir(self) -> str:
        """Working directory of the entry script."""
        return _current().working_dir

    @property
    def node_id(self) -> int:
        """Node index ``0..n-1``."""
        return _current().node_id

    def __repr__(self) -> str:
        s = _current()
        where = "prs_nb worker" if s.configured else "not under prs_nb"
        return (f"EntryScript({where}: agent_name={s.agent_name!r}, node_id={s.node_id}, "
                f"log_dir={s.log_dir!r}, output_dir={s.output_dir!r})")
