"""The Ray backend: the same scheduler, journal, thresholds, outputs and logs as ``local``; only
"start a worker / send a mini-batch / kill a worker" differs.

* A worker is a Ray actor (:class:`RayWorker`) that holds one :class:`~prs_nb.entry.WorkerRuntime`:
  ``start()`` runs ``init()`` once, ``run_batch()`` one mini-batch, ``stop()`` ``shutdown()``. Calls
  to one actor run one at a time, in the order they were sent, which is what the scheduler's
  per-worker queue expects; each mini-batch is its own call, so a timeout is measured per
  mini-batch exactly as with worker processes.
* ``instance_count`` Azure nodes are the bundles of one placement group: worker ``w`` of node ``n``
  is placed in bundle ``n``. With as many alive Ray nodes as ``instance_count`` the bundles are
  ``STRICT_SPREAD`` (one Azure node per Ray node); with fewer, ``SPREAD`` (several Azure nodes
  share a Ray node) and the run says so (a warning and a line in ``logs/sys/master_role.txt``).
* A timeout kills the actor (``ray.kill``); the scheduler starts a fresh one, which runs
  ``init()``. An actor or node that dies fails the attempt in flight (``worker_died``), which is
  retried on whatever worker takes it next.
* Mini-batch descriptors travel, not data: a file or table slice is read by the worker from its path,
  so every Ray node must see the same paths (a shared filesystem), as the run's logs and outputs
  folders, which workers write directly. In-memory DataFrame inputs travel with their slice.

``ray`` is imported only here, only when ``backend="ray"`` is asked for.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from prs_nb.engine.backends import DIED, WorkerHandle, unpicklable_message_error
from prs_nb.entry import WorkerConfig
from prs_nb.errors import ConfigError

log = logging.getLogger("prs_nb")

#: How long a placement group may take to be placed before the run fails with a clear error.
PLACEMENT_TIMEOUT_S = float(os.environ.get("PRS_NB_RAY_PLACEMENT_TIMEOUT", "60"))
WAIT_SLICE_S = 0.05  # ray.wait() cannot be interrupted: a cancel or wakeup() is seen within this


class RayWorker:
    """One worker process of the job, as a Ray actor (the class is made remote on first use)."""

    def __init__(self) -> None:
        self.runtime: Any = None

    def start(self, config: WorkerConfig) -> tuple[tuple[Any, ...], tuple[int, str, str]]:
        import signal

        # The driver owns interrupts (as with local worker processes).
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:
            pass
        from prs_nb.entry import WorkerRuntime

        self.runtime = WorkerRuntime(config)
        status = self.runtime.start()
        ctx = ray.get_runtime_context()
        return status, (os.getpid(), ray.util.get_node_ip_address(), ctx.get_node_id())

    def run_batch(self, index: int, attempt: int, mb: Any) -> tuple[Any, ...]:
        result: tuple[Any, ...] = self.runtime.run_batch(index, attempt, mb)
        return result

    def stop(self) -> tuple[Any, ...]:
        return ("bye", self.runtime.stop() if self.runtime is not None else None)


_remote_worker: Any = None


def _worker_class() -> Any:
    global _remote_worker
    if _remote_worker is None:
        _remote_worker = ray.remote(max_restarts=0, max_task_retries=0)(RayWorker)
    return _remote_worker


def connect(address: str | None) -> None:
    """Connect to Ray: ``address`` ("ray://host:10001", "auto", "host:6379"), else ``RAY_ADDRESS``,
    else an already initialized Ray in this process, else a new local instance on this machine."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        kwargs["include_dashboard"] = False
    else:
        _check_reachable(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a new local Ray instance"
        raise ConfigError(
            f"backend='ray' could not connect to {where}: {type(exc).__name__}: {exc}. Start a cluster "
            "(`ray start --head` on this machine, or point ray_address / RAY_ADDRESS at a running cluster: "
            "'ray://<head>:10001' or 'auto'), or use backend='local'"
        ) from exc


def _check_reachable(address: str) -> None:
    """Ray waits minutes on an address where nothing listens: say so in seconds instead."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    if hostport in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"backend='ray': nothing answers at Ray address {address!r} ({type(exc).__name__}: {exc}). Expected "
            "'ray://<head>:10001' (Ray Client), '<head>:6379' (from a cluster machine) or 'auto'; check that the "
            "cluster runs (`ray status`) and the port is open, or use backend='local'") from exc


class RayBackend:
    name = "ray"
    max_workers: int | None = None

    def __init__(self, address: str | None = None) -> None:
        connect(address)
        self._wake = threading.Event()
        self._pg: Any = None
        self._nodes = 1
        self._per_node = 1
        self._cpus_per_worker = 0.0
        self._live: dict[int, WorkerHandle] = {}
        self.placement = ""

    # ---------------------------------------------------------------- placement
    def prepare(self, nodes: int, per_node: int) -> list[str]:
        """Reserve one placement-group bundle per Azure node; return what the run should say about it."""
        self._nodes, self._per_node = nodes, per_node
        # nodes that can host a worker (a head started with --num-cpus 0 cannot)
        alive = [n for n in ray.nodes() if n.get("Alive") and float(n.get("Resources", {}).get("CPU", 0.0)) > 0]
        cpus = [float(n["Resources"]["CPU"]) for n in alive]
        notes: list[str] = []
        if len(alive) >= nodes:
            strategy = "STRICT_SPREAD"
            bundle_cpu = min(1.0, min(sorted(cpus, reverse=True)[:nodes]))
        else:
            strategy = "SPREAD"
            total = sum(cpus)
            bundle_cpu = min(1.0, total / nodes) if nodes else 1.0
            notes.append(
                f"instance_count={nodes} but the Ray cluster has {len(alive)} alive node(s) with CPUs: the {nodes} Azure "
                f"nodes share Ray nodes (placement SPREAD, not one per machine). Add Ray nodes for one node per "
                "machine; the job runs the same either way")
        if not alive:
            raise ConfigError("the Ray cluster has no CPU resources: start it with at least one CPU "
                              "(`ray start --head --num-cpus 2`)")
        bundle_cpu = max(0.01, round(bundle_cpu, 2))
        # the workers of one node share its bundle (Azure runs max_concurrency_per_instance processes
        # per node whatever its cores): each takes an equal share of the bundle's CPU
        self._cpus_per_worker = round(bundle_cpu / per_node, 4)
        self._pg = placement_group([{"CPU": bundle_cpu}] * nodes, strategy=strategy, name="")
        try:
            ray.get(self._pg.ready(), timeout=PLACEMENT_TIMEOUT_S)
        except GetTimeoutError as exc:
            remove_placement_group(self._pg)
            self._pg = None
            raise ConfigError(
                f"Ray could not place {nodes} node group(s) of {bundle_cpu:g} CPU ({strategy}) within "
                f"{PLACEMENT_TIMEOUT_S:g}s: the cluster has {len(alive)} node(s) with {sum(cpus):g} CPU in all, and "
                "other jobs may hold them. Lower resources.instance_count, free the cluster, or set "
                "PRS_NB_RAY_PLACEMENT_TIMEOUT") from exc
        placed = self._bundle_nodes()
        self.placement = ", ".join(f"node {i} -> Ray node {ip}" for i, ip in enumerate(placed))
        notes.append(f"Ray placement ({strategy}): {self.placement}")
        if strategy == "SPREAD":
            log.warning("prs_nb: %s", notes[0])
        return notes

    def _bundle_nodes(self) -> list[str]:
        try:
            from ray.util import placement_group_table

            table = placement_group_table(self._pg)
            by_id = {n["NodeID"]: n.get("NodeManagerAddress", n["NodeID"][:8]) for n in ray.nodes()}
            node_of = table.get("bundles_to_node_id", {})
            return [str(by_id.get(node_of.get(i, ""), node_of.get(i, "?"))) for i in range(self._nodes)]
        except Exception:  # noqa: BLE001 - only for the log line
            return ["?"] * self._nodes

    # ---------------------------------------------------------------- workers
    def start_worker(self, handle: WorkerHandle, config: WorkerConfig) -> None:
        if self._pg is None:
            self.prepare(max(self._nodes, config.node_id + 1), self._per_node)
        strategy = PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=config.node_id)
        actor = _worker_class().options(num_cpus=self._cpus_per_worker, scheduling_strategy=strategy).remote()
        handle.actor = actor
        handle.refs = deque()
        handle.host = ""
        self._live[id(handle)] = handle
        try:
            ref = actor.start.remote(config)
        except (TypeError, AttributeError, ValueError) as exc:
            raise unpicklable_message_error(("config", config), exc) from exc
        handle.refs.append(("start", ref))

    def send(self, handle: WorkerHandle, msg: tuple[Any, ...]) -> None:
        """Queue ``msg``; the actor gets one call at a time. (Ray fails every call queued on an actor
        that dies, and may lose the reply of a call that finished just before: an actor holding only
        the mini-batch it runs loses nothing else when it dies, as a worker process would.)"""
        if handle.actor is None:
            raise OSError("the worker is gone")
        if msg[0] == "run":
            handle.inbox.extend(("run", index, attempt, mb) for index, attempt, mb in msg[1])
        elif msg[0] == "stop":
            handle.inbox.append(("stop",))
        if not handle.refs:
            self._submit_next(handle)

    @staticmethod
    def _submit_next(handle: WorkerHandle) -> None:
        actor = handle.actor
        if actor is None or not handle.inbox:
            return
        msg = handle.inbox.popleft()
        if msg[0] == "stop":
            handle.refs.append(("stop", actor.stop.remote()))
            return
        _run, index, attempt, mb = msg
        try:
            ref = actor.run_batch.remote(index, attempt, mb)
        except (TypeError, AttributeError, ValueError) as exc:
            raise unpicklable_message_error(("run", [(index, attempt, mb)]), exc) from exc
        handle.refs.append(("run", ref))

    def wait(self, handles: list[WorkerHandle], timeout: float | None) -> list[tuple[WorkerHandle, Any]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        live = [h for h in handles if h.refs]
        if not live:
            self._sleep(deadline)
            return []
        fronts = [h.refs[0][1] for h in live]
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = WAIT_SLICE_S if left is None else min(left, WAIT_SLICE_S)
            ready, _ = ray.wait(fronts, num_returns=1, timeout=step)
            if ready:
                break
            if self._wake.is_set():
                self._wake.clear()
                return []
            if left is not None and left <= step:
                return []
        # everything already finished, in each worker's order
        all_refs = [ref for h in live for _, ref in h.refs]
        done, _ = ray.wait(all_refs, num_returns=len(all_refs), timeout=0)
        done_set = set(done)
        out: list[tuple[WorkerHandle, Any]] = []
        for h in live:
            while h.refs and h.refs[0][1] in done_set:
                kind, ref = h.refs.popleft()
                try:
                    value = ray.get(ref)
                except RayError as exc:
                    h.died = _death_text(exc)
                    h.refs.clear()
                    h.inbox.clear()
                    out.append((h, DIED))
                    break
                if kind == "start":
                    status, (pid, ip, node) = value
                    h.pid, h.host, h.ray_node = pid, ip, node
                    value = status
                out.append((h, value))
            if not h.refs and h.inbox:
                self._submit_next(h)  # the next queued mini-batch starts now
        return out

    def _sleep(self, deadline: float | None) -> None:
        left = WAIT_SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
        if self._wake.wait(min(left, WAIT_SLICE_S)):
            self._wake.clear()

    def kill(self, handle: WorkerHandle) -> int | None:
        self._kill(handle)
        handle.died = handle.died or "killed by the driver"
        return self.reap(handle)

    def _kill(self, handle: WorkerHandle) -> None:
        actor = handle.actor
        if actor is not None:
            try:
                ray.kill(actor, no_restart=True)
            except (RayError, ValueError):
                pass  # already gone

    def reap(self, handle: WorkerHandle) -> int | None:
        """A finished, dead or killed actor: free its slot (an actor that said "bye" is ended here)."""
        self._kill(handle)
        handle.actor = None
        handle.refs = deque()
        handle.inbox.clear()
        self._live.pop(id(handle), None)
        return None

    def death_reason(self, handle: WorkerHandle, code: int | None) -> str | None:
        """What the scheduler says of a dead worker (Ray gives no exit code, but says why)."""
        text = handle.died or ""
        return f"(Ray actor on {handle.host or 'an unknown node'}) {text}".strip() if text else None

    def wakeup(self) -> None:
        self._wake.set()

    def signal_now(self, handle: WorkerHandle) -> None:
        self._kill(handle)

    def close(self) -> None:
        for h in list(self._live.values()):
            self.reap(h)
        if self._pg is not None:
            try:
                remove_placement_group(self._pg)
            except (RayError, ValueError):
                pass
            self._pg = None


def _death_text(exc: BaseException) -> str:
    """One line from Ray's (long) actor-death message."""
    text = str(exc)
    for marker in ("exit code", "SIGKILL", "OOM", "killed", "exit_type", "exit detail", "Exit detail"):
        for line in text.splitlines():
            if marker.lower() in line.lower():
                return f"died: {line.strip()[:300]}"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return f"died: {type(exc).__name__}: {first[:300]}"
