"""A worker process.

Started by the local backend as ``python -m prs_nb.engine.worker <down fd> <up fd> <driver pid>``: one socket
to receive from the driver, one to send to it (the driver writes without blocking, and reads
results whenever they come, so neither side can wait on the other for ever). It never imports the
caller's ``__main__`` (functions travel by value with cloudpickle), so a script that calls prs_nb
needs no ``if __name__ == "__main__"`` guard. On Linux it asks the kernel (PR_SET_PDEATHSIG) to
SIGKILL it when the driver dies, so a SIGKILLed driver or kernel leaves no worker behind.

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

import signal
import sys
from multiprocessing.connection import Connection


def main(argv: list[str]) -> int:
    if len(argv) > 3:
        _die_with_driver(int(argv[3]))
    down = Connection(int(argv[1]))  # driver -> worker
    up = Connection(int(argv[2]))  # worker -> driver
    # The driver owns interrupts: Ctrl-C in a terminal reaches the whole process group, and the
    # driver decides to stop workers; a worker that died of SIGINT would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tag, config = down.recv()
    if tag != "config":
        return 3
    from prs_nb.entry import WorkerRuntime

    runtime = WorkerRuntime(config)
    status = runtime.start()
    up.send(status)
    if status[0] != "ready":
        return 4
    recv = down.recv
    send = up.send
    run_batch = runtime.run_batch
    while True:
        try:
            msg = recv()
        except (EOFError, OSError):  # driver gone: nothing left to do
            return 0
        if msg[0] == "run":
            for index, attempt, mb in msg[1]:
                send(run_batch(index, attempt, mb))
        elif msg[0] == "stop":
            send(("bye", runtime.stop()))
            _fast_exit()
            return 0


def _die_with_driver(driver_pid: int) -> None:
    """Linux: ask the kernel to SIGKILL this worker when the driver dies (even by SIGKILL, when no
    cleanup code of the driver runs), so a killed kernel or script leaves no worker behind."""
    import os

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return  # no prctl: the worker still ends when its driver's socket closes
    if os.getppid() != driver_pid:  # the driver died before prctl took effect
        os._exit(0)


def _fast_exit() -> None:
    """Leave without tearing down every loaded module (pandas & co. take ~0.1 s to finalize, paid
    at the end of every job): run the atexit hooks the user's code registered, flush, and go."""
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
