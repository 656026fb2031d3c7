"""Shared fixtures: every test runs in its own directory and must leave no worker process behind."""

from __future__ import annotations

import os

import psutil
import pytest


@pytest.fixture(autouse=True)
def _no_leftover_workers():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = []
    for p in psutil.Process().children(recursive=True):
        if p.pid in before:
            continue
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "prs_nb.engine.worker" in cmd and p.status() != psutil.STATUS_ZOMBIE:
            left.append((p.pid, cmd))
    for pid, _ in left:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not left, f"worker processes left behind: {left}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
