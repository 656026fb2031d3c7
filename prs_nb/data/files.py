"""File listing: bound paths -> a sorted, streaming sequence of files.

Format choices (contract 5.2 and 12):

* **Order**: files are sorted by their path relative to the bound folder (or to the literal part of
  a glob), compared component by component - exactly the order of a depth-first walk that sorts
  each directory's names. ``a.txt``, ``b/x.txt``, ``c.txt`` come in that order.
* **Streaming**: the walk holds one directory's entries per level of the tree and yields a file as
  soon as it is reached, so the first mini-batch of a million-file tree is ready after reading a
  few directories, and driver memory does not grow with the number of files.
* **Nothing is skipped silently**: hidden files are kept (Azure mounts list them too); everything
  that is not a directory is a file (including broken symlinks, whose reading then fails visibly in
  ``run()``). Symlinked folders are followed; a link back to one of its own ancestors raises
  :class:`InputDataError` instead of looping. Tabular folders are the one exception: names starting
  with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` files, ``_temporary/``) are ignored there, as pyarrow
  and Spark do, because they are not part of the table.
* **Globs**: ``*`` ``?`` ``[abc]`` ``[!abc]`` match within one path component (hidden names
  included), ``**`` matches any number of folders (zero included). A pattern matches files only.
  A glob that matches nothing raises :class:`InputDataError` once the walk is over.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, NamedTuple, TypeVar

from prs_nb.data.base import RemoteFile
from prs_nb.data.fs import is_remote as fs_is_remote
from prs_nb.errors import InputDataError

T = TypeVar("T")

_MAGIC = re.compile(r"[*?\[]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


class Part(NamedTuple):
    """A mini-batch before it gets its index: what a planner yields (see ``MiniBatch`` fields)."""

    items: int | None
    source: Any
    partition_key_value: dict[str, Any]
    lower_bound: int | None
    label: str


class ListedFile(NamedTuple):
    """One listed file: its absolute path and its path relative to the listing root ("/"-separated)."""

    path: str
    rel: str


def has_magic(path: str) -> bool:
    """True if ``path`` contains glob characters (``*``, ``?`` or ``[``)."""
    return _MAGIC.search(path) is not None


def resolve_path(value: str, base_dir: str, *, where: str) -> str:
    """An absolute, normalised local path; ``~`` is expanded and ``file://`` is accepted.

    Other URIs (``s3://``, ``gs://``, ``abfs://``...) are returned as they are, once fsspec is known to
    read them here (:mod:`prs_nb.data.fs`); ``azureml://`` and protocols without an installed fsspec
    implementation raise :class:`InputDataError` saying what to install or to download/mount the data."""
    text = value.strip()
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif _URI.match(text):
        from prs_nb.data import fs

        fs.check_protocol(text, where=where)  # object stores through fsspec; azureml:// etc. raise here
        return text
    if fs_is_remote(base_dir):  # a relative entry of a remote MLTable
        from prs_nb.data import fs

        return fs.join(base_dir, text)
    text = os.path.expanduser(text)
    return os.path.normpath(os.path.join(base_dir, text))


def classify(path: str, *, where: str, given: str | None = None) -> str:
    """``"folder"``, ``"file"`` or ``"glob"`` for an absolute path; a missing path raises.

    An existing path wins over glob interpretation, so a folder really named ``data[1]`` works."""
    if fs_is_remote(path):
        from prs_nb.data import fs

        return fs.classify(path, where=where, given=given)
    if os.path.isdir(path):
        return "folder"
    if os.path.exists(path) or os.path.islink(path):
        return "file"
    if has_magic(path):
        return "glob"
    shown = f"{given!r} (resolved to {path})" if given is not None and given != path else repr(path)
    parent = os.path.dirname(path)
    hint = "" if os.path.isdir(parent) else f"; its folder {parent} does not exist either"
    raise InputDataError(
        f"{where}: path {shown} does not exist{hint}. Check the path (relative paths are resolved "
        "against the working directory or the base_dir given to plan_input) or bind another one"
    )


def iter_path(path: str, *, where: str, tabular: bool = False) -> Iterator[ListedFile]:
    """Files of one bound path: a folder (recursive, sorted), a single file, or a glob pattern."""
    kind = classify(path, where=where)
    if fs_is_remote(path):
        from prs_nb.data.fs import remote_files

        yield from remote_files(path, kind, where=where, tabular=tabular)
        return
    if kind == "folder":
        yield from walk_sorted(path, where=where, skip_private=tabular)
    elif kind == "file":
        _check_not_special(path, where)
        yield ListedFile(path, os.path.basename(path))
    else:
        yield from iter_glob(path, where=where, skip_private=tabular)


def iter_paths(paths: Iterable[str], *, where: str, tabular: bool = False) -> Iterator[ListedFile]:
    """Files of several bound paths, in the given order (each one listed sorted)."""
    for p in paths:
        yield from iter_path(p, where=where, tabular=tabular)


_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"))


def _check_not_special(path: str, where: str) -> None:
    """Refuse named pipes, sockets and devices: opening a FIFO to read it would block the driver (or
    a worker) for ever, and none of them is data a job can split. Broken symlinks stay files."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing target: reading it fails visibly later, with the path in the message
    for test, what in _SPECIAL:
        if test(mode):
            raise InputDataError(
                f"{where}: {path} is {what}, not a regular file; an input folder must hold regular files only. "
                "Move it out of the input folder or bind a folder without it"
            )


def _is_private(name: str) -> bool:
    return name.startswith((".", "_"))


def _sorted_entries(path: str, where: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except PermissionError as exc:
        raise InputDataError(f"{where}: cannot list folder {path}: permission denied ({exc.strerror}); "
                             "make it readable or bind another folder") from exc
    except OSError as exc:
        raise InputDataError(f"{where}: cannot list folder {path}: {exc.strerror or exc}") from exc
    entries.sort(key=lambda e: e.name)
    return entries


def _entry_is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks: a linked folder is walked like a real one
    except OSError:
        return False


def _entry_is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()  # a regular file or a link to one (no system call for plain files)
    except OSError:
        return False


def _dir_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def walk_sorted(
    root: str,
    *,
    where: str,
    skip_private: bool = False,
    descend: Callable[[str], bool] | None = None,
) -> Iterator[ListedFile]:
    """Depth-first walk yielding files in sorted relative-path order, lazily.

    ``descend(rel)`` may prune sub-folders (used by globs); ``skip_private`` ignores ``.``/``_`` names.
    An explicit stack (rather than recursion) keeps deep trees safe from the recursion limit."""
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", iter(_sorted_entries(root, where)))]
    ancestors: list[tuple[int, int]] = [_dir_id(root)]
    while stack:
        rel_dir, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            ancestors.pop()
            continue
        name = entry.name
        if skip_private and _is_private(name):
            continue
        rel = f"{rel_dir}/{name}" if rel_dir else name
        if _entry_is_dir(entry):
            if descend is not None and not descend(rel):
                continue
            ident = _dir_id(entry.path)
            if ident in ancestors:
                raise InputDataError(
                    f"{where}: folder link {entry.path} points back to one of its parent folders, so the "
                    "listing would never end; remove the link or bind a folder without it"
                )
            stack.append((rel, iter(_sorted_entries(entry.path, where))))
            ancestors.append(ident)
        else:
            if not _entry_is_file(entry):
                _check_not_special(entry.path, where)
            yield ListedFile(entry.path, rel)


def _component_regex(comp: str) -> str:
    """Regex for one glob path component; never matches '/'."""
    out: list[str] = []
    i, n = 0, len(comp)
    while i < n:
        c = comp[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i
            if j < n and comp[j] in "!^":
                j += 1
            if j < n and comp[j] == "]":  # a leading ']' is a literal member, as in fnmatch
                j += 1
            close = comp.find("]", j)
            if close == -1:
                out.append(re.escape(c))
                continue
            body = comp[i:close].replace("\\", "\\\\")
            i = close + 1
            if body[:1] in ("!", "^"):
                out.append("[^/" + body[1:] + "]")
            else:
                out.append("[" + body + "]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def glob_matcher(pattern: str) -> tuple[str, Callable[[str], bool]]:
    """(literal base folder, test of a path relative to it) for a glob pattern ("/"-separated)."""
    base, full, _, _ = _compile_glob(pattern)
    return base, lambda rel: full.fullmatch(rel) is not None


def _compile_glob(pattern: str) -> tuple[str, re.Pattern[str], list[str], list[re.Pattern[str]]]:
    parts = pattern.replace(os.sep, "/").split("/")
    first = next(i for i, p in enumerate(parts) if has_magic(p))
    base = "/".join(parts[:first]) or "/"
    rest = parts[first:]
    body = ""
    for idx, comp in enumerate(rest):
        last = idx == len(rest) - 1
        if comp == "**":
            body += ".+" if last else "(?:[^/]+/)*"
        else:
            body += _component_regex(comp) + ("" if last else "/")
    full = re.compile(body)
    return base, full, rest, [re.compile(_component_regex(c)) for c in rest]


def iter_glob(pattern: str, *, where: str, skip_private: bool = False) -> Iterator[ListedFile]:
    """Files matching an absolute glob pattern, in sorted walk order below its literal prefix."""
    base, full, rest, comp_res = _compile_glob(pattern)
    star = rest.index("**") if "**" in rest else None

    def descend(rel: str) -> bool:
        comps = rel.split("/")
        if star is None and len(comps) >= len(rest):
            return False  # files can only sit at exactly len(rest) levels below the base
        for j, c in enumerate(comps):
            if star is not None and j >= star:
                return True
            if not comp_res[j].fullmatch(c):
                return False
        return True

    matched = 0
    if os.path.isdir(base):
        for f in walk_sorted(base, where=where, skip_private=skip_private, descend=descend):
            if full.fullmatch(f.rel):
                matched += 1
                yield f
    if matched == 0:
        why = "" if os.path.isdir(base) else f" (its folder {base} does not exist)"
        raise InputDataError(
            f"{where}: glob pattern {pattern!r} matched no files{why}. Check the pattern: * and ? match "
            "inside one folder level, ** matches any number of folders (e.g. data/**/*.csv)"
        )


def file_item(f: ListedFile) -> str | RemoteFile:
    """What a file mini-batch holds for one listed file: its local path, or a :class:`RemoteFile`
    (URI + path relative to the listing root) that the worker downloads before run()."""
    return RemoteFile(f.path, f.rel) if fs_is_remote(f.path) else f.path


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter), pulled lazily."""
    it = iter(items)
    while True:
        block = list(islice(it, size))
        if not block:
            return
        yield block


def hive_values(rel: str) -> dict[str, str]:
    """``key=value`` folder names along a relative path (the file name itself is not a folder)."""
    from urllib.parse import unquote

    found: dict[str, str] = {}
    for comp in rel.split("/")[:-1]:
        key, eq, value = comp.partition("=")
        if eq and key:
            found[unquote(key)] = unquote(value)  # hive/pyarrow percent-encode special characters
    return found
