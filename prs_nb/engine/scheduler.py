"""The scheduler: one thread in the driver that keeps every worker busy and applies the contract.

::

    InputPlan (lazy) --> pending deque ---+                  +--> AppendRowWriter + journal
                         retry deque -----+--> dispatch -->  |
                                               (<=2 in flight per worker)
    backend.wait(conns, pidfds, timeout = nearest deadline)  --> ok / err / died / ready
                                               |
                       accounting: attempts, thresholds, retries, timeouts --> events --> listeners

No polling: the loop sleeps in ``backend.wait`` until a worker speaks, dies, or the nearest
deadline (a ``run()`` timeout, an ``init()`` deadline, a progress tick) is due.

Rules (contract 6 and 12): an attempt fails on an exception, a timeout, the worker dying, or a
return value that is not list/tuple/DataFrame; a failed attempt is retried while attempts remain
(``max_retries + 1`` in all); a mini-batch counts as failed only once its attempts are exhausted, and
then all its items count as failed items. Short returns count ``items - returned`` failed items but
do not fail the mini-batch. The job fails as soon as a count is strictly greater than its limit
(-1, or 100 for the percent, disables); ``allowed_failed_percent`` is checked once every
mini-batch has been scheduled. A replaced worker runs ``init()`` again; a node whose ``init()``
failed ``3 x workers_per_node`` times is not restarted.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from prs_nb import events as ev
from prs_nb.engine.backends import DIED, WorkerHandle
from prs_nb.engine.journal import fingerprint
from prs_nb.entry import WorkerConfig
from prs_nb.spec import EffectiveSettings

PREFETCH = 2
MAX_DEPTH = 64
QUEUE_SECONDS = 0.02
HOLD_ONE_SECONDS = 0.1  # from this average run() time on, a worker holds no queued mini-batch (a round
# trip costs 0.3-3 ms, so at most ~1-3%; below it, prefetch hides the round trip)
LOOKAHEAD = 10_000
PULL_STEP = 32
PROGRESS_EVERY_S = 0.25
STOP_GRACE_S = 30.0
INIT_GRACE_S = 30.0  # init() may take 3 x retry_settings.timeout + this (contract 6.3)
INIT_JOB_WIDE_AFTER_S = 120.0  # contract 6.3: after 2 min, 2 x nodes x workers init() failures stop the job
CANCEL_GRACE_S = 1.0  # after a cancel, idle workers get this long for shutdown(), then SIGKILL


class BatchRecord:
    """What the driver remembers of one mini-batch (one row of RunResult.batches)."""

    __slots__ = ("index", "items", "attempts", "status", "node_id", "process_name", "start", "end",
                 "returned", "failed_items", "error_kind", "exc_type", "message", "traceback", "label", "pid")

    def __init__(self, index: int, items: int | None, label: str) -> None:
        self.index = index
        self.items = items
        self.attempts = 0
        self.status = "Pending"
        self.node_id = -1
        self.process_name = ""
        self.start = 0.0
        self.end = 0.0
        self.returned = 0
        self.failed_items = 0
        self.error_kind = ""
        self.exc_type = ""
        self.message = ""
        self.traceback = ""
        self.label = label
        self.pid = 0


@dataclasses.dataclass
class Outcome:
    status: str
    reason: str
    records: dict[int, BatchRecord]
    attempts: list[ev.BatchFailed]
    total: int
    succeeded: int
    failed: int
    items_total: int
    items_succeeded: int
    items_failed: int
    limit: str | None
    workers_started: int
    init_failures: list[ev.InitFailed]
    start: float
    end: float
    timeline: list[tuple[int, int, int, str, float, float, str]]
    shutdown_errors: list[tuple[int, str, str, str]] = dataclasses.field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        *,
        settings: EffectiveSettings,
        plan: Iterable[Any],
        backend: Any,
        worker_config: WorkerConfig,
        writer: Any,
        listeners: list[Any],
        done: Any = None,
        previous_attempts: Any = None,
    ) -> None:
        """``done``: journal entries (index -> JournalEntry) of mini-batches finished by an earlier,
        interrupted session of this run (resume): counted, never run again. ``previous_attempts``:
        that session's failed attempts (BatchFailed events), kept in the result's error table."""
        self.s = settings
        self.backend = backend
        self.config = worker_config
        self.writer = writer
        self.listeners = listeners
        self._it = iter(plan)
        self.per_node = settings.workers_per_node
        self.nodes = settings.instance_count
        if backend.max_workers is not None:
            self.per_node = min(self.per_node, backend.max_workers)
            self.nodes = 1
        self.max_attempts = settings.max_attempts
        self.timeout = settings.timeout
        self.pending: deque[Any] = deque()
        self.retry: deque[Any] = deque()
        self.listing_done = False
        self.listed = 0
        self.records: dict[int, BatchRecord] = {}
        self.workers: list[WorkerHandle] = []
        self.proc_counter = [0] * self.nodes
        self.init_fail = [0] * self.nodes
        self.node_stopped = [False] * self.nodes
        self.init_failures: list[ev.InitFailed] = []
        self.failed_attempts: list[ev.BatchFailed] = []
        self.timeline: list[tuple[int, int, int, str, float, float, str]] = []
        self.succeeded = 0
        self.failed = 0
        self.items_ok = 0
        self.items_failed = 0
        self.running = 0
        self.dispatched_all = False
        self.abort_reason: str | None = None
        self.abort_limit: str | None = None
        self.canceled = False
        self.workers_started = 0
        self._last_progress = 0.0
        self._avg_run: float | None = None
        self._last_init_error = ""
        self._any_started = False
        self.shutdown_errors: list[tuple[int, str, str, str]] = []
        self.t0 = time.time()
        self._m0 = time.monotonic()
        self.done = dict(done or {})
        self.failed_attempts.extend(previous_attempts or ())
        self._preload_done()
        self._cancel_reason: str | None = None
        self._cancel_at = 0.0
        self._any_ready = False
        self._interrupts = 0
        self._hurry = False  # a second Ctrl-C: kill everything now, no shutdown()

    def _preload_done(self) -> None:
        for idx in sorted(self.done):
            e = self.done[idx]
            rec = BatchRecord(idx, e.items, "(finished before the run was resumed)")
            rec.attempts, rec.returned, rec.failed_items = e.attempt, e.returned, e.failed_items
            self.records[idx] = rec
            self.listed += 1
            if e.status == "S":
                rec.status = "Succeeded"
                self.succeeded += 1
                self.items_ok += e.items - e.failed_items
                self.items_failed += e.failed_items
            else:
                rec.status = "Failed"
                rec.failed_items = e.items
                rec.message = "failed before the run was resumed (see that session's logs)"
                last = [a for a in self.failed_attempts if a.index == idx]
                if last:
                    a = last[-1]
                    rec.error_kind, rec.exc_type, rec.message, rec.traceback = a.kind, a.exc_type, a.message, a.traceback
                    rec.process_name, rec.pid, rec.node_id, rec.label = a.process_name, a.pid, a.node_id, a.first_items
                self.failed += 1
                self.items_failed += e.items
        if self.done:
            self._check_batches()
            self._check_items()

    # ---------------------------------------------------------------- cancel
    def cancel(self, reason: str = "canceled by the user") -> None:
        """Stop the job: no new mini-batch starts, running ones are killed, idle workers get
        CANCEL_GRACE_S for shutdown(), and run() returns an Outcome with status Canceled and the
        counts so far. Safe to call from any thread (a notebook Stop button) and from a signal
        handler; calling it again changes nothing."""
        if self._cancel_reason is None:
            self._cancel_at = time.monotonic()
            self._cancel_reason = reason
        wakeup = getattr(self.backend, "wakeup", None)
        if wakeup is not None:
            wakeup()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # First Ctrl-C (or Jupyter's interrupt): cancel, workers stop within ~1 s. Second: kill now.
        self._interrupts += 1
        self.cancel("KeyboardInterrupt (Ctrl-C or kernel interrupt)")
        if self._interrupts > 1:
            self._hurry = True
            signal_now = getattr(self.backend, "signal_now", None)
            for w in list(self.workers):
                if signal_now is not None:
                    signal_now(w)
            self.cancel("KeyboardInterrupt (Ctrl-C or kernel interrupt)")

    # ---------------------------------------------------------------- events
    def emit(self, event: Any) -> None:
        for listener in self.listeners:
            listener.on_event(event)

    def _now(self) -> float:
        # wall-clock timestamps derived from one monotonic clock (no jumps inside a run)
        return self.t0 + (time.monotonic() - self._m0)

    # ---------------------------------------------------------------- listing
    def _pull(self, n: int) -> None:
        while not self.listing_done and len(self.pending) < n:
            try:
                mb = next(self._it)
            except StopIteration:
                self.listing_done = True
                self.emit(ev.BatchesListed(self.listed, True))
                return
            if mb.index in self.done:
                continue  # finished in an earlier session of this run (resume)
            self.listed += 1
            self.records[mb.index] = BatchRecord(mb.index, mb.items, mb.describe())
            self.pending.append(mb)

    def _next_batch(self) -> Any | None:
        if self.retry:
            return self.retry.popleft()
        if not self.pending:
            self._pull(PULL_STEP)
        if self.pending:
            return self.pending.popleft()
        return None

    def _work_left(self) -> bool:
        if self.retry or self.pending:
            return True
        if not self.listing_done:
            self._pull(1)
            return bool(self.pending)
        return False

    # ---------------------------------------------------------------- workers
    def _start_worker(self, node: int) -> None:
        self.proc_counter[node] += 1
        name = f"process{self.proc_counter[node]:03d}"
        h = WorkerHandle(node, name)
        cfg = dataclasses.replace(self.config, node_id=node, process_name=name)
        self.workers.append(h)
        self.workers_started += 1
        self.backend.start_worker(h, cfg)
        self.emit(ev.WorkerStarted(node, name, h.pid, self._now()))

    def _live_on_node(self, node: int) -> int:
        return sum(1 for w in self.workers if w.node_id == node and w.state in ("starting", "ready", "broken"))

    def _replace(self, node: int) -> None:
        if self.abort_reason or self.canceled or self.node_stopped[node]:
            return
        starting = sum(1 for w in self.workers if w.node_id == node and w.state == "starting")
        if self.init_fail[node] + starting >= 3 * self.per_node:
            return  # enough init() attempts are under way to reach the node's limit
        if self._live_on_node(node) < self.per_node and self._work_left():
            self._start_worker(node)

    def _remove(self, h: WorkerHandle, *, kill: bool, reason: str) -> None:
        code = self.backend.kill(h) if kill else self.backend.reap(h)
        h.state = "dead"
        if h in self.workers:
            self.workers.remove(h)
        self.emit(ev.WorkerDied(h.node_id, h.process_name, h.pid, code, reason, self._now()))

    # ---------------------------------------------------------------- dispatch
    def _fill(self) -> None:
        self._fill_workers()
        if self.listing_done and not self.pending and not self.retry and not self.dispatched_all:
            self.dispatched_all = True
            self._check_percent()

    def _depth(self) -> int:
        """How many mini-batches a worker holds (running + queued): enough queued work to hide the
        round trip (about QUEUE_SECONDS of run() time), never more than a fair share of what is left."""
        avg = self._avg_run
        depth = PREFETCH if avg is None else int(QUEUE_SECONDS / max(avg, 1e-6)) + 1
        # run() calls long enough that a round trip is negligible: hold only the running mini-batch, so
        # none waits behind a slow or hung call (up to the timeout) while another worker is idle
        floor = 1 if avg is not None and avg >= HOLD_ONE_SECONDS else PREFETCH
        depth = max(floor, min(MAX_DEPTH, depth))
        if self.listing_done:
            ready = sum(1 for w in self.workers if w.state == "ready") or 1
            left = len(self.pending) + len(self.retry)
            depth = min(depth, max(floor, -(-left // ready)))
        return depth

    def _fill_workers(self) -> None:
        depth = self._depth()
        for h in self.workers:
            if h.state != "ready":
                continue
            want = depth - len(h.inflight)
            if want <= 0 or (h.inflight and want < depth // 2):
                continue  # top up in bundles: fewer, larger messages
            bundle: list[tuple[int, int, Any]] = []
            now = time.monotonic()
            wall = self._now()
            while len(bundle) < want:
                mb = self._next_batch()
                if mb is None:
                    break
                rec = self.records[mb.index]
                attempt = rec.attempts + 1
                if not h.inflight:
                    h.head_start = now
                    self.running += 1
                h.inflight.append((mb.index, attempt, mb, now))
                bundle.append((mb.index, attempt, mb))
                self._any_started = True
                self.emit(ev.BatchStarted(mb.index, attempt, h.node_id, h.process_name, wall))
            if not bundle:
                return
            try:
                self.backend.send(h, ("run", bundle))
            except OSError:
                # The worker died after its last message (its death is reported by the next wait()):
                # these mini-batches never reached it, so they go back unattempted.
                for _ in bundle:
                    h.inflight.pop()
                if not h.inflight:
                    self.running -= 1
                for item in reversed(bundle):
                    self.retry.appendleft(item[2])
                h.state = "broken"

    # ---------------------------------------------------------------- outcomes
    def _finish_head(self, h: WorkerHandle, index: int, run_s: float) -> tuple[int, Any, float, float]:
        """Take the worker's running mini-batch off its queue: (attempt, descriptor, start, end)."""
        idx, attempt, mb, _sent = h.inflight.popleft()
        if idx != index:  # workers answer in the order they were sent: anything else is a bug here
            raise RuntimeError(f"prs_nb internal error: {h.process_name} answered mini-batch {index}, "
                               f"expected {idx}")
        avg = self._avg_run
        self._avg_run = run_s if avg is None else avg + 0.05 * (run_s - avg)
        now_m = time.monotonic()
        start_m = h.head_start
        self._advance_head(h, now_m)
        return attempt, mb, start_m, now_m

    def _on_ok(self, h: WorkerHandle, msg: tuple[Any, ...]) -> None:
        _, idx, items, returned, text, header, run_s = msg
        attempt, _mb, start_m, now_m = self._finish_head(h, idx, run_s)
        rec = self.records[idx]
        rec.attempts = attempt
        rec.status = "Succeeded"
        rec.node_id, rec.process_name, rec.pid = h.node_id, h.process_name, h.pid
        rec.start, rec.end = self._wall(start_m), self._wall(now_m)
        n_items = items if items is not None else 0
        rec.items = n_items
        rec.returned = returned
        failed_items = n_items - returned if returned < n_items else 0
        rec.failed_items = failed_items
        self.succeeded += 1
        self.items_ok += n_items - failed_items
        self.items_failed += failed_items
        self.writer.write(idx, attempt, text, header, (n_items, returned, failed_items, fingerprint(_mb)))
        self.timeline.append((idx, attempt, h.node_id, h.process_name, rec.start, rec.end, "Succeeded"))
        self.emit(ev.BatchSucceeded(idx, attempt, h.node_id, h.process_name, rec.start, rec.end, n_items,
                                    returned, failed_items, run_s))
        if failed_items:
            self._check_items()

    def _on_err(self, h: WorkerHandle, msg: tuple[Any, ...]) -> None:
        _, idx, items, kind, exc_type, message, tb, run_s = msg
        attempt, mb, start_m, now_m = self._finish_head(h, idx, run_s)
        self._attempt_failed(h, mb, attempt, start_m, now_m, items, kind, exc_type, message, tb)

    def _advance_head(self, h: WorkerHandle, now_m: float) -> None:
        if h.inflight:
            h.head_start = now_m
        else:
            self.running -= 1

    def _wall(self, m: float) -> float:
        return self.t0 + (m - self._m0)

    def _attempt_failed(self, h: WorkerHandle, mb: Any, attempt: int, start_m: float, end_m: float,
                        items: int | None, kind: str, exc_type: str, message: str, tb: str) -> None:
        rec = self.records[mb.index]
        rec.attempts = attempt
        if items is not None:
            rec.items = items
        message = message + memory_hint(exc_type)
        will_retry = attempt < self.max_attempts and not self.abort_reason and not self.canceled
        event = ev.BatchFailed(mb.index, attempt, h.node_id, h.process_name, h.pid, self._wall(start_m),
                               self._wall(end_m), rec.items, kind, exc_type, message, tb, will_retry,
                               mb.describe())
        self.failed_attempts.append(event)
        self.timeline.append((mb.index, attempt, h.node_id, h.process_name, event.start, event.end,
                              "Timeout" if kind == "timeout" else "Failed"))
        rec.node_id, rec.process_name, rec.pid = h.node_id, h.process_name, h.pid
        rec.start, rec.end = event.start, event.end
        rec.error_kind, rec.exc_type, rec.message, rec.traceback = kind, exc_type, message, tb
        self.emit(event)
        if will_retry:
            rec.status = "Retrying"
            self.retry.append(mb)
            return
        rec.status = "Failed"
        if rec.items is None and mb.kind == "tabular":
            from prs_nb.data import count_items

            rec.items = count_items(mb)  # all of its items count as failed (contract 12)
        rec.failed_items = rec.items or 0
        self.failed += 1
        self.items_failed += rec.items or 0
        self.writer.skip(mb.index, attempt, (rec.items or 0, 0, rec.items or 0, fingerprint(mb)))
        self._check_batches()
        self._check_items()
        self._check_percent()

    # ---------------------------------------------------------------- thresholds
    def _abort(self, limit: str, reason: str) -> None:
        if self.abort_reason is None:
            self.abort_reason = reason + self._first_failures(limit)
            self.abort_limit = limit

    def _first_failures(self, limit: str, shown: int = 3) -> str:
        """The failures that made ``limit`` trip, for the job's reason: "first 3 shown, N more"."""
        lines: list[str] = []
        if limit == "init":
            fails = self.init_failures
            for f in fails[:shown]:
                lines.append(f"{f.process_name} (pid {f.pid}, node {f.node_id}): {f.exc_type}: {_one_line(f.error)}")
            what, total = "init() failures", len(fails)
        elif limit in ("error_threshold", "first_task_creation_timeout"):
            if limit == "first_task_creation_timeout":
                return ""
            recs = [r for r in self.records.values() if r.status == "Failed" or r.failed_items]
            for r in recs[:shown]:
                lines.append(self._describe_failure(r))
            what, total = "mini-batches with failed items", len(recs)
        else:
            recs = [r for r in self.records.values() if r.status == "Failed"]
            for r in recs[:shown]:
                lines.append(self._describe_failure(r))
            what, total = "failed mini-batches", len(recs)
        if not lines:
            return ""
        more = total - len(lines)
        head = f"first {len(lines)} shown, {more} more" if more > 0 else f"{total} in all"
        return f"\n  {what} ({head}; every attempt in result.errors and logs/job_error.txt):\n" + "\n".join(
            f"    {line}" for line in lines)

    @staticmethod
    def _describe_failure(r: BatchRecord) -> str:
        where = f"attempt {r.attempts} on {r.process_name} (pid {r.pid})" if r.process_name else ""
        if r.status == "Failed":
            err = f"{r.exc_type}: {_one_line(r.message)}" if r.exc_type else _one_line(r.message)
        else:
            err = f"returned {r.returned} of {r.items} items ({r.failed_items} failed)"
        return f"mini-batch {r.index} [{_one_line(r.label, 80)}]: {err}" + (f" - {where}" if where else "")

    def _check_items(self) -> None:
        t = self.s.error_threshold
        if t != -1 and self.items_failed > t:
            self._abort("error_threshold",
                        f"error_threshold exceeded: {self.items_failed} failed items > error_threshold {t}")

    def _check_batches(self) -> None:
        t = self.s.mini_batch_error_threshold
        if t != -1 and self.failed > t:
            name = self.s.mini_batch_limit_name
            self._abort(name, f"{name} exceeded: {self.failed} failed mini-batches > {name} {t}")

    def _check_percent(self) -> None:
        pct = self.s.allowed_failed_percent
        if pct >= 100 or not self.dispatched_all:
            return
        total = len(self.records)
        if total and self.failed * 100.0 / total > pct:
            self._abort("allowed_failed_percent",
                        f"allowed_failed_percent exceeded: {self.failed} of {total} mini-batches failed "
                        f"({self.failed * 100.0 / total:.1f}%) > allowed_failed_percent {pct:g}")

    # ---------------------------------------------------------------- worker messages
    def _on_ready(self, h: WorkerHandle, msg: tuple[Any, ...]) -> None:
        h.state = "ready"
        self._any_ready = True
        self.emit(ev.WorkerReady(h.node_id, h.process_name, h.pid, float(msg[1])))

    def _on_init_err(self, h: WorkerHandle, exc_type: str, message: str, tb: str) -> None:
        node = h.node_id
        message = message + memory_hint(exc_type)
        self.init_fail[node] += 1
        failure = ev.InitFailed(node, h.process_name, h.pid, message, exc_type, tb)
        self.init_failures.append(failure)
        self.emit(failure)
        self._remove(h, kill=False, reason=f"init() failed: {exc_type}: {message}")
        if self.init_fail[node] >= 3 * self.per_node:
            self.node_stopped[node] = True
        self._last_init_error = f"{exc_type}: {message}"
        self._after_init_failure(node)

    def _after_init_failure(self, node: int) -> None:
        """A stopped node starts no new process; the job fails for init() only when no node can run
        anything any more (healthy workers of a stopped node keep working)."""
        total = sum(self.init_fail)
        limit = 2 * self.nodes * self.per_node
        if total >= limit and time.monotonic() - self._m0 > INIT_JOB_WIDE_AFTER_S:
            self._abort("init", (f"init() failed {total} times (job-wide limit: 2 x {self.nodes} node(s) x "
                                 f"{self.per_node} worker(s) = {limit} once the job has run "
                                 f"{INIT_JOB_WIDE_AFTER_S:g}s); last error: {self._last_init_error}"))
            return
        if all(self.node_stopped) and not any(w.state in ("ready", "broken") for w in self.workers):
            self._abort("init", (f"init() failed {sum(self.init_fail)} times ({3 * self.per_node} allowed per "
                                 f"node) and no worker is left; last error: {self._last_init_error}"))
            return
        self._replace(node)

    def _on_died(self, h: WorkerHandle) -> None:
        was_starting = h.state == "starting"
        code = self.backend.reap(h)
        h.state = "dead"
        if h in self.workers:
            self.workers.remove(h)
        reason = describe_exit(code)
        self.emit(ev.WorkerDied(h.node_id, h.process_name, h.pid, code, reason, self._now()))
        if not h.inflight:
            if was_starting:
                self._on_init_err_dead(h, code, reason)
            else:
                self._replace(h.node_id)
            return
        now_m = time.monotonic()
        idx, attempt, mb, _ = h.inflight.popleft()
        self.running -= 1
        self._attempt_failed(h, mb, attempt, h.head_start, now_m, mb.items, "worker_died",
                             "WorkerDied", f"worker {h.process_name} (pid {h.pid}) {reason}", "")
        self._requeue_rest(h)
        self._replace(h.node_id)

    def _on_init_err_dead(self, h: WorkerHandle, code: int | None, reason: str) -> None:
        node = h.node_id
        self.init_fail[node] += 1
        failure = ev.InitFailed(node, h.process_name, h.pid, f"worker {reason} during init()", "WorkerDied", "")
        self.init_failures.append(failure)
        self.emit(failure)
        if self.init_fail[node] >= 3 * self.per_node:
            self.node_stopped[node] = True
        self._last_init_error = f"worker {reason} during init()"
        self._after_init_failure(node)

    def _requeue_rest(self, h: WorkerHandle) -> None:
        # Batches sent but not started: back to the front of the queue, no attempt used.
        while h.inflight:
            _idx, _attempt, mb, _ = h.inflight.pop()
            self.retry.appendleft(mb)

    def _on_timeout(self, h: WorkerHandle, now_m: float) -> None:
        idx, attempt, mb, _ = h.inflight.popleft()
        start_m = h.head_start
        self.running -= 1
        # the attempt is over when its deadline passes; the kill (and its log line) follows
        self._attempt_failed(h, mb, attempt, start_m, now_m, mb.items, "timeout", "TimeoutError",
                             f"run() did not finish within retry_settings.timeout = {self.timeout:g}s "
                             f"(worker {h.process_name}, pid {h.pid} killed)", "")
        self._remove(h, kill=True, reason=f"killed: run() exceeded the {self.timeout:g}s timeout")
        self._requeue_rest(h)
        self._replace(h.node_id)

    def _init_deadline(self) -> float:
        return 3 * self.timeout + INIT_GRACE_S

    # ---------------------------------------------------------------- main loop
    def run(self) -> Outcome:
        start = self._now()
        if self.abort_reason:  # resumed past a threshold: nothing to start
            return self._outcome(start)
        # List only what the first dispatch needs (input errors surface before any worker starts);
        # the rest is listed while workers start and whenever the driver would otherwise idle.
        self._pull(1)
        previous = self._install_sigint()
        try:
            try:
                if self._work_left():
                    for node in range(self.nodes):
                        for _ in range(self.per_node):
                            self._start_worker(node)
                self._loop()
            except KeyboardInterrupt:
                self._interrupts += 1
                self.cancel("KeyboardInterrupt (Ctrl-C or kernel interrupt)")
            finally:  # whatever happened (an error while listing, in a listener): no worker outlives this
                if self._cancel_reason is not None:
                    self.canceled = True
                self._stop_all()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return self._outcome(start)

    def _outcome(self, start: float) -> Outcome:
        status = "Completed"
        reason = ""
        if self.canceled:
            status, reason = "Canceled", f"canceled: {self._cancel_reason}"
        elif self.abort_reason:
            status, reason = "Failed", self.abort_reason
        elif any(r.status not in ("Succeeded", "Failed") for r in self.records.values()):
            status, reason = "Failed", "not every mini-batch was processed"
        total = len(self.records)
        items_total = sum((r.items or 0) for r in self.records.values())
        return Outcome(status, reason, self.records, self.failed_attempts, total, self.succeeded, self.failed,
                       items_total, self.items_ok, self.items_failed, self.abort_limit, self.workers_started,
                       self.init_failures, start, self._now(), self.timeline, self.shutdown_errors)

    def _install_sigint(self) -> Any:
        """With worker processes, Ctrl-C becomes a cancel (no KeyboardInterrupt in the middle of
        the driver's bookkeeping). Only the main thread can set handlers; the inline backend keeps
        KeyboardInterrupt, which is what stops the user's run() running in this very thread."""
        if self.backend.name == "inline" or threading.current_thread() is not threading.main_thread():
            return None
        try:
            return signal.signal(signal.SIGINT, self._on_sigint)
        except (ValueError, OSError):
            return None

    def _stop_all(self) -> None:
        """Stop every worker; a KeyboardInterrupt meanwhile (a second Ctrl-C under the inline
        backend or another handler) kills the rest at once."""
        while True:
            try:
                self._stop_workers()
                return
            except KeyboardInterrupt:
                self.canceled = True
                self._hurry = True
                if self._cancel_reason is None:
                    self._cancel_reason = "KeyboardInterrupt (Ctrl-C or kernel interrupt)"

    def _loop(self) -> None:
        backend = self.backend
        while True:
            if self._cancel_reason is not None:
                self.canceled = True
            if self.abort_reason or self.canceled:
                return
            self._fill()
            if self.abort_reason:
                return
            if not self.workers:
                if not self._work_left() and self.running == 0:
                    return
                if all(self.node_stopped):
                    self._after_init_failure(0)
                    return
                for node in range(self.nodes):
                    self._replace(node)
                if not self.workers:
                    return
            if self.running == 0 and not self._work_left() and all(not w.inflight for w in self.workers):
                return
            timeout = self._next_wakeup()
            if not self.listing_done and len(self.pending) < LOOKAHEAD:
                # List ahead (for an early total and ready work) but never keep a worker waiting:
                # look for messages without blocking first.
                timeout = 0.0
            events = backend.wait(list(self.workers), timeout)
            if not events and timeout == 0.0 and not self.listing_done:
                self._pull(len(self.pending) + PULL_STEP)
            for h, msg in events:
                if h.state == "dead":
                    continue
                if msg is DIED:
                    self._on_died(h)
                    continue
                tag = msg[0]
                if tag == "ok":
                    self._on_ok(h, msg)
                elif tag == "err":
                    self._on_err(h, msg)
                elif tag == "ready":
                    self._on_ready(h, msg)
                elif tag == "init_err":
                    self._on_init_err(h, msg[1], msg[2], msg[3])
            self._check_deadlines()
            self._maybe_progress()

    def _next_wakeup(self) -> float | None:
        now = time.monotonic()
        deadlines = [PROGRESS_EVERY_S]
        if self.s.first_task_creation_timeout is not None and not self._any_started:
            deadlines.append(self._m0 + self.s.first_task_creation_timeout - now)
        for w in self.workers:
            if w.inflight:
                deadlines.append(w.head_start + self.timeout - now)
            elif w.state == "starting":
                deadlines.append(w.started_at + self._init_deadline() - now)
        return max(0.0, min(deadlines))

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        ftc = self.s.first_task_creation_timeout
        if ftc is not None and not self._any_started and now - self._m0 > ftc and self._work_left():
            self._abort("first_task_creation_timeout",
                        f"no mini-batch started within --first_task_creation_timeout {ftc:g}s of the job's start "
                        f"({len(self.init_failures)} init() failure(s); is init() slow or stuck?)")
            return
        deadline = self._init_deadline()
        live = [w for w in self.workers if w.state != "dead"]
        if (self.backend.name != "inline" and live and not self._any_ready
                and all(w.state == "starting" for w in live)
                and now >= min(w.started_at for w in live) + deadline):
            # contract 6.3: every worker stuck in init() past 3 x timeout + 30 s fails the job for
            # lack of progress (no point starting more that would hang the same way)
            self._abort("init", f"no progress: all {len(live)} worker(s) were still in init() after "
                                f"{deadline:g}s (3 x retry_settings.timeout + {INIT_GRACE_S:g}s); is init() stuck "
                                "(a download, a lock, a prompt)?")
            for w in live:
                self._remove(w, kill=True, reason="killed: init() did not finish in time")
            return
        for w in list(self.workers):
            if w.state == "dead" or self.backend.name == "inline":
                continue
            if w.inflight and now >= w.head_start + self.timeout:
                self._on_timeout(w, now)
            elif w.state == "starting" and now >= w.started_at + self._init_deadline():
                self._remove(w, kill=True, reason="killed: init() did not finish in time")
                self._on_init_err_dead(w, None, f"init() did not finish within {self._init_deadline():g}s")

    def _maybe_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        self.writer.flush()
        self.emit(ev.Progress(len(self.records) if self.listing_done else None, self.succeeded + self.failed,
                              self.succeeded, self.failed, self.running, self.items_ok, self.items_failed,
                              self._now()))

    def _stop_workers(self) -> None:
        """Graceful stop (shutdown()) for idle workers; kill the busy ones (abort/cancel)."""
        stopping = []
        signal_now = getattr(self.backend, "signal_now", None)
        for w in list(self.workers):
            if (w.inflight or w.state != "ready" or self._hurry) and signal_now is not None:
                signal_now(w)  # all at once: reaping one by one must not add up
        for w in list(self.workers):
            if w.inflight or w.state != "ready" or self._hurry:
                if w.inflight:
                    self.running -= 1
                    for idx, _a, _mb, _ in w.inflight:
                        rec = self.records.get(idx)
                        if rec is not None and rec.status in ("Pending", "Retrying"):
                            rec.status = "Canceled" if self.canceled else "NotRun"
                    w.inflight.clear()
                self._remove(w, kill=True, reason="stopped: job ended" if not self.canceled else "canceled")
                continue
            try:
                self.backend.send(w, ("stop",))
                w.state = "stopping"
                stopping.append(w)
            except (OSError, EOFError):
                self._remove(w, kill=True, reason="could not be stopped")
        grace = CANCEL_GRACE_S if self.canceled else STOP_GRACE_S
        deadline = time.monotonic() + min(grace, self.timeout)
        waiting = list(stopping)
        while waiting:
            if self._cancel_reason is not None:  # canceled while shutdown() runs: a short grace only
                deadline = min(deadline, self._cancel_at + CANCEL_GRACE_S)
            left = deadline - time.monotonic()
            if left <= 0 or self._hurry:
                break
            for h, msg in self.backend.wait(waiting, left):
                if isinstance(msg, tuple) and msg[0] == "bye" and msg[1]:
                    exc_type, message, tb = msg[1]
                    self.shutdown_errors.append((h.node_id, h.process_name, exc_type, message))
                    self.emit(ev.ShutdownFailed(h.node_id, h.process_name, h.pid, message, exc_type, tb))
                if msg is DIED or (isinstance(msg, tuple) and msg[0] == "bye"):
                    if h in waiting:
                        waiting.remove(h)
                        self._remove(h, kill=False, reason="exited after shutdown()")
        for h in waiting:
            self._remove(h, kill=True, reason="killed: shutdown() did not finish in time")
        for rec in self.records.values():
            if rec.status in ("Pending", "Retrying"):
                rec.status = "Canceled" if self.canceled else "NotRun"
        self._maybe_progress(force=True)


def _one_line(text: str, limit: int = 160) -> str:
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def memory_hint(exc_type: str) -> str:
    if exc_type != "MemoryError":
        return ""
    return (" (hint: the worker ran out of memory - use a smaller mini_batch_size or fewer workers "
            "(max_concurrency_per_instance), or free memory between mini-batches)")


def describe_exit(code: int | None) -> str:
    """Exit code or signal in words, with the likely cause."""
    import signal as _signal

    if code is None:
        return "ended (exit code unknown)"
    if code < 0:
        try:
            name = _signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        cause = {
            "SIGKILL": "killed by SIGKILL - out of memory (the kernel's OOM killer sends SIGKILL) or killed from "
                       "outside (kill -9, a container limit)",
            "SIGSEGV": "crashed with a segmentation fault (a bug in a C extension?)",
            "SIGABRT": "aborted (a failed assertion in native code?)",
            "SIGBUS": "crashed with a bus error (memory-mapped file gone?)",
            "SIGTERM": "terminated",
        }.get(name, "killed by a signal")
        return f"died of {name} (exit code {code}): {cause}"
    return f"exited with code {code} (os._exit() or sys.exit() in user code?)"
