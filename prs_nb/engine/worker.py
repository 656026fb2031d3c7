"""A worker process: ``python -m prs_nb.engine.worker <fd>``.

Started by the local backend with one end of a socketpair as ``<fd>``. It never imports the
caller's ``__main__`` (functions travel by value with cloudpickle), so a script that calls prs_nb
needs no ``if __name__ == "__main__"`` guard.

Protocol (pickled tuples over a multiprocessing Connection)::

    driver -> worker : ("config", WorkerConfig)  once
    worker -> driver : ("ready", init_seconds) | ("init_err", exc_type, message, traceback)
    driver -> worker : ("run", [(index, attempt, MiniBatch), ...])  bundles; the driver keeps about
                                                                     20 ms of work queued per worker
    worker -> driver : ("ok", index, items, returned, text, header, run_seconds)
                     | ("err", index, items, kind, exc_type, message, traceback, run_seconds)
    driver -> worker : ("stop",)
    worker -> driver : ("bye", shutdown_error_or_None)  then exits 0
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    conn = Connection(fd)
    # The driver owns interrupts: Ctrl-C in a terminal reaches the whole process group, and the
    # driver decides to stop workers; a worker that died of SIGINT would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tag, config = conn.recv()
    if tag != "config":
        return 3
    from prs_nb.entry import WorkerRuntime

    runtime = WorkerRuntime(config)
    status = runtime.start()
    conn.send(status)
    if status[0] != "ready":
        conn.close()
        return 4
    # A reader thread keeps taking messages off the socket while run() works: the driver may send a
    # large bundle while this worker sends a large result, and if neither side read, both would
    # block in send() for ever (socket buffers hold ~200 KB).
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=_read_forever, args=(conn, inbox), name="prs_nb-inbox", daemon=True).start()
    send = conn.send
    run_batch = runtime.run_batch
    while True:
        msg = inbox.get()
        if msg is None:  # driver gone: nothing left to do
            return 0
        if msg[0] == "run":
            for index, attempt, mb in msg[1]:
                send(run_batch(index, attempt, mb))
        elif msg[0] == "stop":
            err = runtime.stop()
            send(("bye", err))
            conn.close()
            return 0


def _read_forever(conn: Connection, inbox: queue.SimpleQueue[Any]) -> None:
    try:
        while True:
            inbox.put(conn.recv())
    except (EOFError, OSError):
        inbox.put(None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
