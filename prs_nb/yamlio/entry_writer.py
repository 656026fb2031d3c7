"""Notebook functions -> a real entry script (``init()`` / ``run()`` / ``shutdown()``) on export.

A job built from functions (``RunFunction(init=..., run=...)`` or a ``%%parallel_run`` cell) runs
locally by value (cloudpickle). On Azure it needs a file: this module writes one from the kept cell
source (``RunFunction(source=...)``) or from ``inspect.getsource`` of each function, with what the
functions need from their module: ``import`` lines for modules, ``from m import x`` for objects of
importable modules, the source of helper functions and classes defined next to them, and literal
constants. Anything else (an open file, a model object, a lambda) cannot be written as source and
is a ConfigError naming it, with what to do instead.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
import types
from collections.abc import Callable
from typing import Any

from prs_nb.errors import ConfigError
from prs_nb.spec import RunFunction

_ROLES = ("init", "run", "shutdown")
HEADER = (
    "# Entry script written by prs_nb from functions defined in a notebook or script.\n"
    "# Azure ML parallel jobs call init() once per worker process, run(mini_batch) per mini-batch\n"
    "# and shutdown() at the end.\n"
)


def entry_script_source(task: RunFunction) -> str:
    """The text of an entry script equivalent to ``task``'s functions (see the module docstring)."""
    if task.source:
        text = _from_cell_source(task)
    else:
        text = _from_functions(task)
    try:
        compile(text, "<exported entry script>", "exec")
    except SyntaxError as exc:  # the kept source itself was broken: say so, not an internal error
        raise ConfigError(f"the entry script written from the job's functions does not compile: {exc}") from None
    return text


# ---------------------------------------------------------------------------------------------- cell source
def _from_cell_source(task: RunFunction) -> str:
    assert task.source is not None
    lines = []
    for line in textwrap.dedent(task.source).splitlines():
        stripped = line.lstrip()
        # IPython syntax in a cell (%magic, !shell) is not Python: keep it visible but inert
        if stripped.startswith(("%", "!")):
            line = line[: len(line) - len(stripped)] + "# (notebook only) " + stripped
        lines.append(line)
    body = "\n".join(lines).rstrip() + "\n"
    try:
        tree = ast.parse(body)
    except SyntaxError as exc:
        raise ConfigError(f"RunFunction source= is not valid Python: {exc}") from None
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    aliases = []
    for role in _ROLES:
        fn = getattr(task, role)
        if fn is None:
            continue
        name = getattr(fn, "__name__", role)
        if name == role:
            if role not in defined:
                raise ConfigError(f"RunFunction source= does not define {role}() (defined: "
                                  f"{', '.join(sorted(defined)) or 'no functions'})")
            continue
        if name not in defined:
            raise ConfigError(f"RunFunction source= does not define {name}(), given as {role}=")
        aliases.append(f"{role} = {name}")
    # what the cell uses but defined in other cells (imports, constants, helpers) comes first
    preamble = _other_cells(task, _defined_names(tree))
    return HEADER + "\n" + preamble + body + ("\n" + "\n".join(aliases) + "\n" if aliases else "")


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a module body binds at top level (defs, classes, imports, assignments)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                names.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
    return names


def _other_cells(task: RunFunction, defined: set[str]) -> str:
    fns = [getattr(task, r) for r in _ROLES if isinstance(getattr(task, r), types.FunctionType)]
    if not fns:
        return ""
    home = getattr(fns[0], "__module__", "__main__") or "__main__"
    assigned: set[str] = set()
    for fn in fns:
        assigned |= _stored_globals(fn.__code__)
    col = _Collector(home, assigned)
    col.seen |= defined
    for fn in fns:
        col.seen.add(fn.__name__)
    for fn in fns:
        col._needs(fn.__code__, fn.__globals__, fn, where=f"{fn.__name__}()")
    if not (col.imports or col.constants or col.definitions):
        return ""
    return col.text([]).replace(HEADER, "# from other cells:\n", 1) + "\n# the cell:\n"


# ---------------------------------------------------------------------------------------------- functions
class _Collector:
    def __init__(self, home_module: str, assigned: set[str]) -> None:
        self.home = home_module
        # globals the functions assign (``global model`` in init()): their current value is runtime
        # state (maybe from a local run), not source, and init() recreates it on Azure
        self.assigned = assigned
        self.imports: list[str] = []
        self.constants: list[str] = []
        self.definitions: dict[str, tuple[int, str]] = {}  # name -> (first line, source)
        self.seen: set[str] = set()

    def add_import(self, line: str) -> None:
        if line not in self.imports:
            self.imports.append(line)

    def visit_function(self, fn: Callable[..., Any], role: str) -> str:
        if not isinstance(fn, types.FunctionType):
            raise ConfigError(f"{role}= must be a plain function defined with def to be exported as an entry "
                              f"script (got {type(fn).__name__})")
        if fn.__name__ == "<lambda>":
            raise ConfigError(f"{role}= is a lambda, which cannot be written to an entry script: define it with "
                              f"def {role}(...) instead")
        src = _source(fn, role)
        self.seen.add(fn.__name__)
        self.definitions[fn.__name__] = (_first_line(fn), src)
        self._needs(fn.__code__, fn.__globals__, fn, where=f"{role}()")
        return fn.__name__

    def _needs(self, code: types.CodeType, glb: dict[str, Any], fn: Any, where: str) -> None:
        names = _code_names(code)
        for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            self._value(name, value, where, closure=True)
        for name in sorted(names):
            if name in self.seen or name in self.assigned:
                continue
            if name in glb:
                self._value(name, glb[name], where, closure=False)
            # a name found in neither the globals nor builtins is an attribute name or fails on Azure too

    def _value(self, name: str, value: Any, where: str, *, closure: bool) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        if isinstance(value, types.ModuleType):
            mod = value.__name__
            if mod in ("posixpath", "ntpath"):  # what os.path is on this platform
                mod = "os.path"
            if mod == name:
                self.add_import(f"import {mod}")
            elif "." in mod and mod.rsplit(".", 1)[1] == name:
                parent, child = mod.rsplit(".", 1)
                self.add_import(f"from {parent} import {child}")
            else:
                self.add_import(f"import {mod} as {name}")
            return
        if getattr(builtins, name, None) is not None and getattr(value, "__wrapped__", None) is getattr(builtins, name):
            return  # IPython's user namespace wraps builtins (its `open`): the entry script uses the builtin
        if isinstance(value, (types.FunctionType, type)):
            module = getattr(value, "__module__", None) or ""
            qual = getattr(value, "__qualname__", name)
            if module != self.home and module not in ("__main__",) and "<locals>" not in qual and module:
                self.add_import(f"from {module} import {qual}" + (f" as {name}" if qual != name else ""))
                return
            if isinstance(value, types.FunctionType):
                src = _source(value, f"{name} (used by {where})")
                self.definitions[name] = (_first_line(value), _rename(src, value.__name__, name))
                self._needs(value.__code__, value.__globals__, value, where=f"{name}()")
                return
            try:
                src = textwrap.dedent(inspect.getsource(value))
            except (OSError, TypeError):
                raise ConfigError(f"class {name} used by {where} has no source to export; move it to a module "
                                  "in the code folder and import it") from None
            self.definitions[name] = (_class_line(value), src)
            for member in vars(value).values():
                if isinstance(member, types.FunctionType):
                    self._needs(member.__code__, member.__globals__, member, where=f"{name}.{member.__name__}()")
            return
        if getattr(builtins, name, None) is value:
            return
        if _is_literal(value):
            self.constants.append(f"{name} = {value!r}")
            return
        module = getattr(value, "__module__", None)
        kind = "captured variable" if closure else "global"
        raise ConfigError(
            f"{where} uses the {kind} {name!r} ({type(value).__name__}{' from ' + module if module else ''}), "
            "which cannot be written into an entry script as source. Create it inside init() (models, "
            "connections, data), make it a literal constant, or pass RunFunction(source=...) with the code "
            "that defines it"
        )

    def text(self, aliases: list[str]) -> str:
        parts = [HEADER]
        if self.imports:
            parts.append("\n".join(sorted(self.imports, key=lambda s: (s.startswith("from"), s))) + "\n")
        if self.constants:
            parts.append("\n".join(self.constants) + "\n")
        for _, src in sorted(self.definitions.values(), key=lambda t: t[0]):
            parts.append(src.rstrip() + "\n")
        if aliases:
            parts.append("\n".join(aliases) + "\n")
        return "\n\n".join(parts)


def _from_functions(task: RunFunction) -> str:
    fns = {role: getattr(task, role) for role in _ROLES if getattr(task, role) is not None}
    if "run" not in fns:
        raise ConfigError("the job has no run function to export")
    home = getattr(fns["run"], "__module__", "__main__") or "__main__"
    assigned: set[str] = set()
    for fn in fns.values():
        code = getattr(fn, "__code__", None)
        if code is not None:
            assigned |= _stored_globals(code)
    col = _Collector(home, assigned)
    aliases = []
    names: dict[str, str] = {}
    for role, fn in fns.items():
        name = col.visit_function(fn, role)
        names[role] = name
    for role, name in names.items():
        if name != role:
            if name in _ROLES and names.get(name, name) != name:
                raise ConfigError(f"{role}= is a function named {name}(), which clashes with the {name}= function; "
                                  "rename one of them")
            aliases.append(f"{role} = {name}")
    return col.text(aliases)


def _source(fn: types.FunctionType, what: str) -> str:
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        raise ConfigError(
            f"the source of {what} is not available (functions made with exec() or in an interactive prompt "
            "without a history have none): define it in a notebook cell or a .py file, or pass "
            "RunFunction(source='...') with its text"
        ) from None
    src = textwrap.dedent(src)
    if "<locals>" in fn.__qualname__ and src.lstrip().startswith("@"):
        raise ConfigError(f"{what} is a decorated nested function; define it at the top level to export it")
    return src


def _rename(src: str, old: str, new: str) -> str:
    if old == new:
        return src
    return src + f"\n{new} = {old}\n"


def _first_line(fn: types.FunctionType) -> int:
    return fn.__code__.co_firstlineno


def _class_line(cls: type) -> int:
    try:
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return 0


def _stored_globals(code: types.CodeType) -> set[str]:
    import dis

    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("STORE_GLOBAL", "DELETE_GLOBAL")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _stored_globals(const)
    return {str(n) for n in names}


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _is_literal(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(_is_literal(k) and _is_literal(v) for k, v in value.items())
    return False


def imported_modules(source: str) -> list[str]:
    """Top-level module names a Python source imports (absolute imports only), in first-seen order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        else:
            continue
        for m in mods:
            top = m.split(".")[0]
            if top not in out:
                out.append(top)
    return out
