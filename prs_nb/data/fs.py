"""Object-store inputs (``s3://``, ``gs://``, ``abfs://``...) read through fsspec.

Local paths never come here: callers test :func:`is_remote` (a substring test) and keep their
plain ``open`` / ``os`` fast path. A remote path is a full URI (``s3://bucket/prefix/a.csv``) in
every descriptor, so a worker on any machine re-creates the filesystem with
``fsspec.core.url_to_fs`` (fsspec caches the instance) and reads its own slice.

* **Credentials** come from the environment of the process that reads: the protocol library
  picks them up as it always does (``AWS_*`` variables and ``~/.aws`` for s3fs, Application
  Default Credentials for gcsfs, ``AZURE_STORAGE_*`` for adlfs; an endpoint such as a MinIO
  server via ``AWS_ENDPOINT_URL``). The driver lists with its own environment; workers read with
  theirs plus the job's ``environment_variables``. fsspec's own configuration also applies
  (``FSSPEC_<PROTOCOL>_<OPTION>`` variables, e.g. ``FSSPEC_S3_ANON=true``, read when fsspec is
  imported).
* **Protocols**: any that fsspec knows and whose implementation is installed. ``azureml://`` is an
  Azure ML datastore URI, not an fsspec one, and stays refused; an unknown protocol, or one whose
  package is missing, raises :class:`InputDataError` saying what to install.
* **Listing** (:func:`remote_files`): ``fs.find`` below the folder, sorted by relative path
  component by component - the order of the local walk. It is one listing call, not streamed.
* **Reading**: byte ranges with one ranged request (``fs.cat_file``); sequential reads and Parquet
  footers / row groups through ``fs.open`` with a 4 MiB read-ahead block.
* **File inputs** (:func:`download`): run() gets local paths, as on Azure (mount/download mode):
  the worker copies its mini-batch's files (``fs.get``, concurrent where the protocol supports it)
  into ``<run dir>/downloads/<node>/<process>/<mini-batch index>/`` (Ray: a temporary folder of the
  node), keeping each file's path relative to the listing root, and deletes that folder when run()
  returns (:class:`prs_nb.entry.WorkerRuntime`); the job removes ``downloads/`` at its end.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from prs_nb.data.base import RemoteFile
from prs_nb.errors import InputDataError

if TYPE_CHECKING:
    from prs_nb.data.files import ListedFile

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_BLOCK = 4 * 1024 * 1024
#: packages that provide common protocols, for the "what to install" hint
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "abfss": "adlfs",
            "az": "adlfs", "adl": "adlfs", "http": "aiohttp", "https": "aiohttp", "hf": "huggingface_hub",
            "sftp": "paramiko", "ssh": "paramiko"}
_REFUSED = {"azureml": "an Azure ML datastore URI (resolved by Azure, not by fsspec)"}


def is_remote(path: str) -> bool:
    """True for a URI other than ``file://`` (a cheap test: local paths never pay for fsspec)."""
    return "://" in path and not path.startswith("file://") and _URI.match(path) is not None


def protocol(uri: str) -> str:
    m = _URI.match(uri)
    return m.group(1).lower() if m else ""


def _advice() -> str:
    return ("Download or mount it (e.g. `az storage blob download-batch`, `azcopy copy`, `aws s3 sync`, blobfuse2 "
            "/ s3fs / gcsfuse) and bind the local path instead")


def check_protocol(uri: str, *, where: str) -> None:
    """Raise :class:`InputDataError` unless fsspec can read ``uri`` here (implementation installed)."""
    proto = protocol(uri)
    if proto in _REFUSED:
        raise InputDataError(f"{where}: {uri!r} is a remote URI, {_REFUSED[proto]}; prs_nb reads local paths and "
                             f"fsspec URIs (s3://, gs://, abfs://...). {_advice()}")
    pkg = PACKAGES.get(proto)
    install = f"`pip install {pkg}`" if pkg else "the package that implements it for fsspec"
    try:
        import fsspec
    except ImportError:
        raise InputDataError(
            f"{where}: {uri!r} is a remote URI; prs_nb reads object-store URIs through fsspec, which is not "
            f"installed. Install fsspec and {install}, or: {_advice()}"
        ) from None
    try:
        fsspec.get_filesystem_class(proto)
    except ValueError:
        raise InputDataError(
            f"{where}: {uri!r} is a remote URI with protocol {proto!r}, which fsspec does not know. Use a known "
            f"protocol (s3://, gs://, abfs://...) or: {_advice()}"
        ) from None
    except ImportError as exc:
        raise InputDataError(
            f"{where}: {uri!r} is a remote URI; reading {proto}:// through fsspec needs {install} ({exc}). "
            f"Install it, or: {_advice()}"
        ) from None


def url_to_fs(uri: str, *, where: str) -> tuple[Any, str]:
    """(fsspec filesystem, path without protocol) for ``uri``; errors say what to install."""
    check_protocol(uri, where=where)
    import fsspec.core

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except Exception as exc:  # noqa: BLE001 - any library's failure to build a client (bad options...)
        raise InputDataError(f"{where}: cannot open {uri!r} through fsspec: {type(exc).__name__}: {exc}. Check the "
                             "URI and the credentials in the environment") from exc
    return fs, str(path)


def _fail(where: str, what: str, uri: str, exc: BaseException) -> InputDataError:
    return InputDataError(f"{where}: cannot {what} {uri}: {type(exc).__name__}: {exc}. Check the URI, that the "
                          "bucket/container exists and that the credentials in this process's environment can read it")


def join(base: str, rel: str) -> str:
    """``rel`` resolved against the remote folder ``base`` (``..`` allowed within the bucket)."""
    proto = base[: base.index("://") + 3]
    return proto + posixpath.normpath(posixpath.join(base[len(proto):], rel))


def classify(uri: str, *, where: str, given: str | None = None) -> str:
    """``"folder"``, ``"file"`` or ``"glob"``; a missing object or prefix raises."""
    from prs_nb.data.files import has_magic

    fs, path = url_to_fs(uri, where=where)
    try:
        if fs.isdir(path):
            return "folder"
        if fs.isfile(path):
            return "file"
    except Exception as exc:  # noqa: BLE001 - network, credentials, permissions: say which object
        raise _fail(where, "look up", uri, exc) from exc
    if has_magic(path):
        return "glob"
    shown = f"{given!r} (resolved to {uri})" if given is not None and given != uri else repr(uri)
    raise InputDataError(
        f"{where}: path {shown} does not exist (no object and no folder of that name). Check the bucket/container "
        "and the prefix, and that the credentials in this process's environment can list it (a denied listing "
        "looks empty with some stores)"
    )


def _rel_key(rel: str) -> tuple[str, ...]:
    return tuple(rel.split("/"))


def remote_files(uri: str, kind: str, *, where: str, tabular: bool = False) -> Iterator[ListedFile]:
    """Files of a remote folder (recursive), single file or glob, in the local walk's order."""
    from prs_nb.data.files import ListedFile, glob_matcher

    fs, path = url_to_fs(uri, where=where)
    if kind == "file":
        yield ListedFile(uri, posixpath.basename(path))
        return
    root, match = path.rstrip("/"), None
    if kind == "glob":
        base, match = glob_matcher(path)
        root = base.rstrip("/")
    try:
        found = fs.find(root, detail=False) if kind == "folder" or fs.isdir(root) else []
    except Exception as exc:  # noqa: BLE001
        raise _fail(where, "list", fs.unstrip_protocol(root), exc) from exc
    # "folder/" keys are folder markers (consoles create them), not files
    rels = [p[len(root) + 1:] for p in found if p.startswith(root + "/") and not p.endswith("/")]
    if tabular:
        rels = [r for r in rels if not any(c.startswith((".", "_")) for c in r.split("/"))]
    if match is not None:
        rels = [r for r in rels if match(r)]
        if not rels:
            raise InputDataError(
                f"{where}: glob pattern {uri!r} matched no files. Check the pattern: * and ? match inside one "
                "folder level, ** matches any number of folders (e.g. s3://bucket/data/**/*.csv)"
            )
    for rel in sorted(rels, key=_rel_key):
        yield ListedFile(fs.unstrip_protocol(f"{root}/{rel}"), rel)


def isfile(uri: str, *, where: str) -> bool:
    fs, path = url_to_fs(uri, where=where)
    try:
        return bool(fs.isfile(path))
    except Exception as exc:  # noqa: BLE001
        raise _fail(where, "look up", uri, exc) from exc


def size(uri: str, *, where: str = "") -> int:
    fs, path = url_to_fs(uri, where=where)
    try:
        return int(fs.size(path))
    except Exception as exc:  # noqa: BLE001
        raise _fail(where or "input", "read the size of", uri, exc) from exc


def open_binary(uri: str, *, where: str = "") -> BinaryIO:
    """A seekable binary file object (read-ahead of 4 MiB): for sequential reads and Parquet."""
    fs, path = url_to_fs(uri, where=where)
    try:
        return fs.open(path, "rb", block_size=_BLOCK, cache_type="readahead")  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _fail(where or "input", "open", uri, exc) from exc


def read_range(uri: str, start: int, end: int, *, where: str = "") -> bytes:
    """Bytes ``[start, end)`` with one ranged request."""
    fs, path = url_to_fs(uri, where=where)
    try:
        return bytes(fs.cat_file(path, start=start, end=end))
    except OSError:
        raise  # missing object, network: read_slice names the file and the byte range
    except Exception as exc:  # noqa: BLE001 - e.g. a client library's credentials error
        raise _fail(where or "input", f"read bytes {start}-{end} of", uri, exc) from exc


def download(files: Sequence[RemoteFile], dest: str, *, where: str) -> list[str]:
    """Copy ``files`` below ``dest`` (their relative paths kept; a name met twice goes to ``dest/<n>/``)
    and return the local paths in the same order."""
    local: list[str] = []
    used: set[str] = set()
    groups: dict[int, tuple[Any, list[str], list[str]]] = {}
    for f in files:
        rel = f.rel.lstrip("/") or posixpath.basename(f.uri.rstrip("/"))
        target = os.path.join(dest, *rel.split("/"))
        n = 0
        while target in used:
            n += 1
            target = os.path.join(dest, str(n), *rel.split("/"))
        used.add(target)
        local.append(target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs, path = url_to_fs(f.uri, where=where)
        group = groups.setdefault(id(fs), (fs, [], []))
        group[1].append(path)
        group[2].append(target)
    for fs, remote, targets in groups.values():
        try:
            fs.get(remote, targets)
        except Exception as exc:  # noqa: BLE001 - the mini-batch fails, naming its files
            shown = ", ".join(fs.unstrip_protocol(p) for p in remote[:3]) + (" ..." if len(remote) > 3 else "")
            raise _fail(where, "download", shown, exc) from exc
    return local
