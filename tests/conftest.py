"""Shared fixtures: every test runs in its own directory and must leave no worker process behind."""

from __future__ import annotations

import os

import psutil
import pytest
from hypothesis import HealthCheck, settings


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


# Hypothesis: one profile for the whole suite. Tests set their own example counts (200 for pure
# parsing, 20-25 for tests that run jobs); the profile removes the per-example deadline (a job's
# first example starts worker processes), keeps no example database in the working directory, and
# allows function-scoped fixtures (each test makes its own files under a fresh temp folder).
settings.register_profile(
    "prs_nb",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
# CI replays the same examples on every run (derandomize), so a red CI means the code changed; a
# developer's run explores new random examples each time (and prints how to reproduce a failure).
settings.register_profile("ci", parent=settings.get_profile("prs_nb"), derandomize=True)
settings.load_profile(os.environ.get("PRS_NB_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "prs_nb"))


# Ray: one local instance (2 CPUs) for the whole session, started on first use by a test that asks
# for ``ray_cluster``; each such test must leave no worker actor alive.
@pytest.fixture(scope="session")
def _ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def ray_actor_processes() -> list[int]:
    """pids of live processes running prs_nb's Ray worker actor (Ray titles them ``ray::RayWorker``)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "ray::RayWorker" in cmd and p.info.get("status") != psutil.STATUS_ZOMBIE:
            out.append(p.info["pid"])
    return out


@pytest.fixture
def ray_cluster(_ray_session):
    import time

    yield _ray_session
    deadline = time.monotonic() + 15  # ray.kill() is asynchronous
    while ray_actor_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ray_actor_processes(), f"Ray worker actors left behind: {ray_actor_processes()}"
