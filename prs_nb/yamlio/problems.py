"""Errors and warnings of the YAML layer.

::

    ConfigError (prs_nb.errors)
     +-- YamlError            a YAML file is invalid: names the file and the key, expected vs got
    UserWarning
     +-- YamlKeyWarning       a key prs_nb (and Azure) does not know: Azure drops it silently, we say so

Both carry ``path`` (the file) and ``key`` (a dotted key path such as ``jobs.score.retry_settings``).
"""

from __future__ import annotations

import warnings
from typing import Any

from prs_nb.errors import ConfigError


class YamlError(ConfigError):
    """A YAML job or component file is invalid; ``path`` and ``key`` say where."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        where = ": ".join(p for p in (path, key) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_yaml_error, (str(self), self.path, self.key))


def _rebuild_yaml_error(message: str, path: str | None, key: str | None) -> YamlError:
    err = YamlError.__new__(YamlError)
    ConfigError.__init__(err, message)
    err.path = path
    err.key = key
    return err


class YamlKeyWarning(UserWarning):
    """A key in a YAML file that prs_nb does not know (Azure ML would drop it silently)."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class Where:
    """The file being read and the key path inside it, for messages."""

    def __init__(self, path: str | None, prefix: str = "") -> None:
        self.path = path
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return ".".join(p for p in (self.prefix, *parts) if p)

    def sub(self, *parts: str) -> Where:
        return Where(self.path, self.key(*parts))

    def error(self, key: str, message: str) -> YamlError:
        return YamlError(message, path=self.path, key=self.key(key) if key else (self.prefix or None))

    def unknown(self, keys: Any, known: Any, what: str) -> None:
        for k in sorted(set(keys) - set(known), key=str):
            full = self.key(str(k))
            warnings.warn(
                YamlKeyWarning(
                    f"{self.path or '<yaml>'}: unknown key {full!r} in {what} is ignored (Azure ML drops it "
                    f"silently); known keys: {', '.join(sorted(known))}",
                    path=self.path,
                    key=full,
                ),
                stacklevel=4,
            )


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__
