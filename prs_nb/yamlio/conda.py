"""The environment of an exported job: a conda file describing the current interpreter.

Azure ML needs ``task.environment`` (contract 11). When the job does not name one, the export
writes ``<name>.conda.yml`` with this interpreter's Python version and the pinned versions of the
distributions that the entry code imports (found with ``importlib.metadata``), plus the packages
Azure's parallel runtime expects in the image (contract 2.2), and refers to it with a base image.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
# Azure's parallel runtime loads data with these (the v1 client warns when they are missing).
RUNTIME_PACKAGES = ("azureml-core", "azureml-dataset-runtime[fuse,pandas]")
# Provided by the runtime (azureml_user) or only meaningful locally (prs_nb).
_SKIP = {"azureml_user", "prs_nb", "__future__"}


_MAPPING_CACHE: dict[tuple[tuple[str, float], ...], Mapping[str, list[str]]] = {}


def _packages_distributions() -> Mapping[str, list[str]]:
    """importlib.metadata.packages_distributions(), which reads every installed distribution (a
    quarter of a second with a large environment), cached until a sys.path folder changes (a pip
    install adds a folder to site-packages and so changes its mtime)."""
    key = []
    for p in sys.path:
        try:
            key.append((p, os.stat(p or ".").st_mtime))
        except OSError:
            continue
    k = tuple(key)
    if k not in _MAPPING_CACHE:
        try:
            mapping = md.packages_distributions()
        except Exception:  # noqa: BLE001 - a broken installed distribution must not break the export
            mapping = {}
        _MAPPING_CACHE.clear()
        _MAPPING_CACHE[k] = mapping
    return _MAPPING_CACHE[k]


def _distributions_of(modules: Iterable[str]) -> list[str]:
    mapping = _packages_distributions()
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    pins: list[str] = []
    for mod in modules:
        if mod in _SKIP or mod in stdlib or mod in sys.builtin_module_names:
            continue
        for dist in mapping.get(mod, []):
            try:
                pin = f"{dist}=={md.version(dist)}"
            except md.PackageNotFoundError:
                continue
            if pin not in pins:
                pins.append(pin)
    return pins


def conda_environment(name: str, modules: Iterable[str], *, extra_pip: Iterable[str] = ()) -> dict[str, Any]:
    """A conda environment dict for the modules the entry code imports (stdlib and local modules left out)."""
    pip = [*RUNTIME_PACKAGES, *_distributions_of(modules), *extra_pip]
    seen: list[str] = []
    for p in pip:
        if p not in seen:
            seen.append(p)
    return {
        "name": name,
        "channels": ["conda-forge"],
        "dependencies": [f"python={sys.version_info.major}.{sys.version_info.minor}", "pip", {"pip": seen}],
    }


def code_folder_modules(code_dir: str, limit: int = 200) -> list[str]:
    """Modules imported by the .py files of a code folder (at most ``limit`` files), local modules excluded."""
    from prs_nb.yamlio.entry_writer import imported_modules

    found: list[str] = []
    local: set[str] = set()
    count = 0
    for root, dirs, files in os.walk(code_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        rel_root = os.path.relpath(root, code_dir)
        for d in dirs:
            if rel_root == ".":
                local.add(d)
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            if rel_root == ".":
                local.add(f[:-3])
            count += 1
            if count > limit:
                break
            try:
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError):
                continue
            for m in imported_modules(text):
                if m not in found:
                    found.append(m)
    return [m for m in found if m not in local]
