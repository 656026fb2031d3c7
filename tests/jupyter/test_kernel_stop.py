"""The Stop button in a real ipykernel while the %%parallel_run cell is still running.

The test is the browser's part by hand: it finds the Stop button's comm among the kernel's
widget messages and sends the same comm_msg a click sends, then expects the cell to end Canceled
long before the job would have finished."""

from __future__ import annotations

import os
import re
import sys
import time

import pytest
from jupyter_client.manager import start_new_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SLOW_CELL = """%%parallel_run --input data --mini_batch_size 1 -c 1 --max_retries 0 -o r
import time
def run(mini_batch):
    time.sleep(0.25)
    return list(mini_batch)
"""


@pytest.fixture
def kernel(workdir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(workdir), env=env)
    # the kernel spec may name another interpreter; make sure it is this one (with this checkout)
    reply = kc.execute_interactive("import sys, prs_nb; print(sys.executable, prs_nb.__file__)", timeout=60)
    assert reply["content"]["status"] == "ok"
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run_ok(kc, code):
    reply = kc.execute_interactive(code, timeout=60, output_hook=lambda m: None)
    assert reply["content"]["status"] == "ok", reply["content"]


def test_stop_button_cancels_a_running_cell(kernel):
    kc = kernel
    run_ok(kc, "%load_ext prs_nb")
    run_ok(kc, "import os\nos.makedirs('data')\nfor i in range(40): open(f'data/f{i:02d}.txt', 'w').write('x')")
    msg_id = kc.execute(SLOW_CELL)
    stop_comm = None
    done = 0
    deadline = time.monotonic() + 60
    while (stop_comm is None or done < 2) and time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        content = msg["content"]
        if msg["msg_type"] == "comm_open":
            state = content.get("data", {}).get("state", {})
            if state.get("_model_name") == "ButtonModel" and state.get("description") == "Stop":
                stop_comm = content["comm_id"]
        elif msg["msg_type"] == "comm_msg":
            value = str(content.get("data", {}).get("state", {}).get("value", ""))
            m = re.search(r"(\d+)/40 mini-batches", value)
            if m:
                done = int(m.group(1))
        elif msg["msg_type"] == "error":
            pytest.fail(f"cell failed before the click: {content}")
    assert stop_comm is not None, "the live display showed no Stop button"
    assert done >= 2, "no progress was drawn while the cell ran"
    clicked = time.monotonic()
    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": stop_comm,
                                                        "data": {"method": "custom", "content": {"event": "click"}}}))
    reply = kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=60)
    elapsed = time.monotonic() - clicked
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "ParallelRunFailed"
    assert "Canceled" in reply["content"]["evalue"]
    assert elapsed < 5, f"the cell took {elapsed:.1f}s to end after Stop"  # 40 x 0.25 s were left to run
    out = []
    kc.execute_interactive("print(r.status, r.counts['succeeded'] < 40)", timeout=30,
                           output_hook=lambda m: out.append(m["content"].get("text", "")))
    assert "Canceled True" in "".join(out)


def test_kernel_runs_prs_nb_from_this_checkout(kernel):
    out = []
    kernel.execute_interactive("import prs_nb; print(prs_nb.__file__)", timeout=30,
                               output_hook=lambda m: out.append(m["content"].get("text", "")))
    assert "".join(out).strip().startswith(ROOT), (out, sys.executable)
