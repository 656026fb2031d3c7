"""Source lines for tracebacks of functions shipped by value (notebook cells, ``python script.py``).

cloudpickle rebuilds a function's code in the worker with ``co_filename = "<dynamic-code>"``, so a
failing ``run()`` defined in a notebook cell showed ``File "<dynamic-code>", line 5, in run`` and no
source line. The driver records, for each code object it ships by value, the file name and lines
it came from (:func:`code_sources`, from ``linecache``, where IPython keeps cell sources); the worker
puts the file names back and the lines into its ``linecache`` (:func:`restore_sources`), so the
traceback in ``result.errors`` and ``logs/user/error/`` shows the cell's file and failing line.

Sources travel in :class:`prs_nb.entry.WorkerConfig`, not in the pickled functions, whose bytes are
the reuse fingerprint (a cell's file name changes with every kernel).
"""

from __future__ import annotations

import linecache
from types import CodeType, FunctionType
from typing import Any

#: cloudpickle's file name for code it rebuilt from a by-value pickle
DYNAMIC_CODE = "<dynamic-code>"

#: (co_name, co_firstlineno) -> (file name, source lines)
Sources = dict[tuple[str, int], tuple[str, tuple[str, ...]]]

_MAX_FUNCTIONS = 200  # helpers followed from init/run/shutdown through their globals


def _shipped_by_value(fn: FunctionType) -> bool:
    return fn.__module__ == "__main__" or fn.__module__ is None


def _codes(code: CodeType) -> list[CodeType]:
    """``code`` and the code nested in it (inner functions, comprehensions, lambdas)."""
    out = [code]
    for const in code.co_consts:
        if isinstance(const, CodeType):
            out.extend(_codes(const))
    return out


def _functions(roots: list[Any], by_value: bool) -> list[FunctionType]:
    """The functions among ``roots`` and the module-level functions they use by name, transitively.

    ``by_value``: follow only functions cloudpickle ships by value (driver side) - in the worker,
    every followed function is one that was shipped."""
    found: list[FunctionType] = []
    seen: set[int] = set()
    todo = [f for f in roots if isinstance(f, FunctionType)]
    while todo and len(found) < _MAX_FUNCTIONS:
        fn = todo.pop()
        if id(fn) in seen or (by_value and not _shipped_by_value(fn)):
            continue
        seen.add(id(fn))
        found.append(fn)
        for code in _codes(fn.__code__):
            for name in code.co_names:
                value = fn.__globals__.get(name)
                if isinstance(value, FunctionType) and id(value) not in seen:
                    todo.append(value)
    return found


def code_sources(functions: dict[str, Any]) -> Sources:
    """Driver side: where the code of ``functions`` (init/run/shutdown, their nested code and the
    notebook functions they call) comes from, with its lines; only code whose lines are known."""
    sources: Sources = {}
    for fn in _functions(list(functions.values()), by_value=True):
        for code in _codes(fn.__code__):
            lines = linecache.getlines(code.co_filename)
            if lines and code.co_filename != DYNAMIC_CODE:
                sources.setdefault((code.co_name, code.co_firstlineno), (code.co_filename, tuple(lines)))
    return sources


def _restore(code: CodeType, sources: Sources) -> CodeType:
    consts = tuple(_restore(c, sources) if isinstance(c, CodeType) else c for c in code.co_consts)
    changes: dict[str, Any] = {}
    if any(a is not b for a, b in zip(consts, code.co_consts, strict=True)):
        changes["co_consts"] = consts
    found = sources.get((code.co_name, code.co_firstlineno))
    if code.co_filename == DYNAMIC_CODE and found is not None:
        changes["co_filename"] = found[0]
    return code.replace(**changes) if changes else code


def restore_sources(functions: dict[str, Any], sources: Sources | None) -> None:
    """Worker side: give the unpickled ``functions`` (and the helpers they call) their file names back
    and put the source lines into ``linecache``, so tracebacks show them."""
    if not sources:
        return
    for filename, lines in {v[0]: v[1] for v in sources.values()}.items():
        # mtime None: linecache.checkcache() keeps the entry (there is no file to compare with)
        linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)
    for fn in _functions(list(functions.values()), by_value=False):
        if fn.__code__.co_filename == DYNAMIC_CODE or any(
                c.co_filename == DYNAMIC_CODE for c in _codes(fn.__code__)):
            fn.__code__ = _restore(fn.__code__, sources)
