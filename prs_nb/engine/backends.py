"""Backends: how a worker is started, fed, waited on and killed. The scheduler is the same for all.

* :class:`LocalBackend` - one OS process per worker (``python -m prs_nb.engine.worker``), owned by
  the engine so it can be SIGKILLed on timeout and replaced after a crash. Not a
  multiprocessing.Pool and never ``fork``: safe inside a Jupyter kernel.
* :class:`InlineBackend` - no processes: the worker runtime runs in the caller (for pdb, tiny jobs).
"""

from __future__ import annotations

import os
import pickle
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from prs_nb.entry import WorkerConfig, WorkerRuntime
from prs_nb.errors import EntryScriptError, InputDataError, PrsError

DIED = "__died__"
HOSTNAME = socket.gethostname()


class WorkerHandle:
    """The driver's view of one worker."""

    __slots__ = ("node_id", "process_name", "pid", "state", "inflight", "head_start", "started_at",
                 "conn", "proc", "pidfd", "runtime", "outbox", "inbox", "exit_code", "wsock", "wbuf", "wwatch",
                 "host", "actor", "refs", "ray_node", "died")

    def __init__(self, node_id: int, process_name: str) -> None:
        self.node_id = node_id
        self.process_name = process_name
        self.pid = 0
        self.state = "starting"  # starting | ready | stopping | dead
        self.inflight: deque[tuple[int, int, Any, float]] = deque()
        self.head_start = 0.0
        self.started_at = time.monotonic()
        self.conn: Connection | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd: int | None = None
        self.runtime: WorkerRuntime | None = None
        self.outbox: deque[tuple[Any, ...]] = deque()  # inline: replies not yet collected
        self.inbox: deque[tuple[Any, ...]] = deque()  # inline: messages not yet run
        self.exit_code: int | None = None
        self.wsock: socket.socket | None = None  # local: driver -> worker, non-blocking
        self.wbuf: deque[memoryview] = deque()  # local: bytes not yet taken by that socket
        self.wwatch = False  # local: wsock registered for EVENT_WRITE
        self.host = HOSTNAME  # the machine the worker runs on (ray: the Ray node's address)
        self.actor: Any = None  # ray: the worker's actor
        self.refs: deque[tuple[str, Any]] = deque()  # ray: calls sent, not yet answered, in order
        self.ray_node = ""  # ray: the Ray node id
        self.died = ""  # ray: why the actor died, in Ray's words


class LocalBackend:
    name = "local"
    max_workers: int | None = None

    def __init__(self) -> None:
        self._env = os.environ.copy()
        pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        pp = self._env.get("PYTHONPATH", "")
        self._env["PYTHONPATH"] = pkg_parent + (os.pathsep + pp if pp else "")
        self._env.setdefault("PYTHONFAULTHANDLER", "1")
        if sys.platform.startswith("linux"):
            # Workers allocate and free similar large buffers per mini-batch (a table slice, its
            # DataFrame). glibc's defaults mmap and unmap each one, paying page faults every time;
            # fixed thresholds keep up to 64 MB of freed heap for reuse (a measured 35% faster
            # pandas.read_csv of 1-4 MB slices). A user's own setting wins.
            self._env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 * 1024 * 1024))
            self._env.setdefault("MALLOC_TRIM_THRESHOLD_", str(64 * 1024 * 1024))
        # one persistent epoll set: registering every fd on every wait() costs more than the work
        self._sel = selectors.DefaultSelector()
        # wakeup(): another thread (a Stop button) or a signal handler ends a wait() at once
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, (None, "wake"))

    def start_worker(self, handle: WorkerHandle, config: WorkerConfig) -> None:
        # Two one-way channels. Driver -> worker is written without ever blocking (a write buffer
        # drained when the socket is writable), so the scheduling thread keeps reading results and
        # enforcing timeouts even while a worker is busy in C code that holds its GIL and cannot
        # take a big bundle off the socket. Worker -> driver is read as whole messages.
        down_parent, down_child = socket.socketpair()
        up_parent, up_child = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prs_nb.engine.worker", str(down_child.fileno()), str(up_child.fileno()),
                 str(os.getpid())],
                pass_fds=(down_child.fileno(), up_child.fileno()),
                env=self._env,
                stdin=subprocess.DEVNULL,
                close_fds=True,
                # its own process group: killing a worker (timeout, crash, cancel) also kills the
                # processes its user code started, so none is left behind
                start_new_session=True,
            )
        finally:
            down_child.close()
            up_child.close()
        down_parent.setblocking(False)
        handle.wsock = down_parent
        up_parent.setblocking(True)
        conn = Connection(up_parent.detach())
        handle.conn = conn
        handle.proc = proc
        handle.pid = proc.pid
        try:
            handle.pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            handle.pidfd = None  # connection EOF still reveals a death
        self._sel.register(conn.fileno(), selectors.EVENT_READ, (handle, "conn"))
        if handle.pidfd is not None:
            self._sel.register(handle.pidfd, selectors.EVENT_READ, (handle, "pid"))
        self.send(handle, ("config", config))

    def send(self, handle: WorkerHandle, msg: tuple[Any, ...]) -> None:
        """Queue ``msg`` (framed as multiprocessing.Connection frames it) and write what the socket
        takes now; the rest goes out from wait() when the socket is writable. Raises OSError only
        when the worker is already gone and nothing of this message was written."""
        try:
            data = ForkingPickler.dumps(msg)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise unpicklable_message_error(msg, exc) from exc
        n = len(data)
        header = struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!i", -1) + struct.pack("!Q", n)
        was_empty = not handle.wbuf
        if n < 65536:
            handle.wbuf.append(memoryview(header + bytes(data)))  # one write for small messages
        else:
            handle.wbuf.append(memoryview(header))
            handle.wbuf.append(memoryview(data))  # no copy of a big payload
        if was_empty:
            self._flush(handle, raise_if_gone=True)

    def _flush(self, handle: WorkerHandle, raise_if_gone: bool = False) -> None:
        sock = handle.wsock
        wbuf = handle.wbuf
        while wbuf and sock is not None:
            try:
                sent = sock.send(wbuf[0])
            except BlockingIOError:
                break
            except OSError:
                wbuf.clear()  # the worker is gone; its death is reported through the pid/read side
                if raise_if_gone:
                    raise
                break
            if sent < len(wbuf[0]):
                wbuf[0] = wbuf[0][sent:]
                break
            wbuf.popleft()
        if sock is None:
            return
        want = bool(wbuf)
        if want != handle.wwatch:
            if want:
                self._sel.register(sock.fileno(), selectors.EVENT_WRITE, (handle, "write"))
            else:
                self._sel.unregister(sock.fileno())
            handle.wwatch = want

    def wait(self, handles: list[WorkerHandle], timeout: float | None) -> list[tuple[WorkerHandle, Any]]:
        if not handles:
            if timeout:
                time.sleep(min(timeout, 0.05))
            return []
        wanted = {id(h) for h in handles}
        out: list[tuple[WorkerHandle, Any]] = []
        dead: set[int] = set()
        for key, _mask in self._sel.select(timeout):
            h, kind = key.data
            if kind == "wake":
                self._drain_wakeups()
                continue
            if kind == "write":
                self._flush(h)
                continue
            if id(h) not in wanted or id(h) in dead:
                continue
            conn = h.conn
            try:
                # Drain what is already buffered, without blocking (select() is far cheaper than
                # Connection.poll(), which builds a new selector on every call).
                readable = kind == "conn"  # a pid event: the socket may hold nothing more
                while conn is not None and (readable or select.select((conn,), (), (), 0)[0]):
                    out.append((h, conn.recv()))
                    readable = False
            except (EOFError, OSError):
                dead.add(id(h))
                out.append((h, DIED))
                continue
            if kind == "pid":  # the process exited; what it sent before dying was read above
                dead.add(id(h))
                out.append((h, DIED))
        return out

    def reap(self, handle: WorkerHandle) -> int | None:
        proc = handle.proc
        if proc is None:
            return None
        if handle.pidfd is not None:
            # wait for the exit without reaping: the zombie keeps its pid (and so its process group
            # id) from being reused while what the worker started is killed with it
            if not select.select([handle.pidfd], [], [], 5)[0]:
                self._kill_group(handle)
            self._kill_group(handle)
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if handle.pidfd is None:
            self._kill_group(handle)  # no pidfd (old kernel): the group, just after the worker
        self._close(handle)
        handle.exit_code = code
        return code

    def kill(self, handle: WorkerHandle) -> int | None:
        proc = handle.proc
        if proc is not None and proc.returncode is None:
            self._kill_group(handle)
        return self.reap(handle)

    @staticmethod
    def _kill_group(handle: WorkerHandle) -> None:
        """SIGKILL the worker and every process of its group (what its user code started)."""
        try:
            os.killpg(handle.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is empty already

    def wakeup(self) -> None:
        """End the current (or next) wait() early. Safe from any thread and from a signal handler."""
        # Never blocks (a signal handler may interrupt close() in this very thread): if close() holds
        # the lock, the backend is closing and nothing waits any more.
        if not self._wake_lock.acquire(blocking=False):
            return
        try:
            if self._wake_w >= 0:  # closed: the fd number may already belong to another file (an output!)
                os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: a wakeup is pending anyway
        finally:
            self._wake_lock.release()

    def _drain_wakeups(self) -> None:
        if self._wake_r < 0:
            return
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def signal_now(self, handle: WorkerHandle) -> None:
        """SIGKILL without waiting (from a signal handler: a second Ctrl-C); reaped later by kill()."""
        proc = handle.proc
        if proc is not None and proc.returncode is None:
            self._kill_group(handle)

    def close(self) -> None:
        self._sel.close()
        with self._wake_lock:
            fds = (self._wake_r, self._wake_w)
            self._wake_r = self._wake_w = -1  # before closing: a late cancel() must not write to a reused fd
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _close(self, handle: WorkerHandle) -> None:
        if handle.wsock is not None:
            if handle.wwatch:
                self._sel.unregister(handle.wsock.fileno())
                handle.wwatch = False
            handle.wsock.close()
            handle.wsock = None
            handle.wbuf.clear()
        for fd in (handle.conn.fileno() if handle.conn is not None else None, handle.pidfd):
            if fd is not None:
                try:
                    self._sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
        if handle.conn is not None:
            handle.conn.close()
            handle.conn = None
        if handle.pidfd is not None:
            os.close(handle.pidfd)
            handle.pidfd = None



class InlineBackend:
    """Runs the worker runtime in the calling process, one batch at a time (no timeouts)."""

    name = "inline"
    max_workers = 1

    def start_worker(self, handle: WorkerHandle, config: WorkerConfig) -> None:
        import dataclasses

        cfg = dataclasses.replace(config, redirect_output=False)
        rt = WorkerRuntime(cfg)
        handle.runtime = rt
        handle.pid = os.getpid()
        status = rt.start()
        if status[0] != "ready":
            rt.restore()
        handle.outbox.append(status)

    def send(self, handle: WorkerHandle, msg: tuple[Any, ...]) -> None:
        # Queued, not run: wait() runs one item at a time, so the scheduler sees every outcome (and
        # can stop on a threshold) before the next run() call, as with worker processes.
        if msg[0] == "run":
            handle.inbox.extend(("run", index, attempt, mb) for index, attempt, mb in msg[1])
        else:
            handle.inbox.append(msg)

    def wait(self, handles: list[WorkerHandle], timeout: float | None) -> list[tuple[WorkerHandle, Any]]:
        out: list[tuple[WorkerHandle, Any]] = []
        for h in handles:
            while h.outbox:
                out.append((h, h.outbox.popleft()))
        if out:
            return out
        for h in handles:
            if h.inbox:
                rt = h.runtime
                assert rt is not None  # noqa: S101 - internal invariant
                msg = h.inbox.popleft()
                if msg[0] == "run":
                    out.append((h, rt.run_batch(msg[1], msg[2], msg[3])))
                elif msg[0] == "stop":
                    out.append((h, ("bye", rt.stop())))
                return out
        return out

    def kill(self, handle: WorkerHandle) -> int | None:
        if handle.runtime is not None:
            handle.runtime.restore()
        return None

    def wakeup(self) -> None:
        return None  # wait() runs one mini-batch and returns: the scheduler sees a cancel right after

    def signal_now(self, handle: WorkerHandle) -> None:
        return None

    def reap(self, handle: WorkerHandle) -> int | None:
        return self.kill(handle)

    def close(self) -> None:
        return None


def unpicklable_message_error(msg: tuple[Any, ...], exc: BaseException) -> PrsError:
    """A clear error for data that cannot travel to a worker process (e.g. a DataFrame input with a
    column of locks or open connections)."""
    if msg and msg[0] == "run":
        indices = ", ".join(str(item[0]) for item in msg[1])
        return InputDataError(
            f"mini-batch(es) {indices} cannot be sent to a worker process: {type(exc).__name__}: {exc}. The input "
            "holds objects that cannot be pickled (locks, open files, connections, lambdas in a DataFrame column); "
            "convert that column to plain values, or run with backend='inline'"
        )
    return EntryScriptError(f"the worker configuration cannot be sent to a worker process: {type(exc).__name__}: {exc}")
