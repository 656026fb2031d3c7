"""The widget apps in a real browser: Debian Chromium driven by playwright, against JupyterLab and
Voilà on 127.0.0.1 (see shared/recipes/jupyter-testing.md). Not skipped: a missing Chromium fails.

JupyterLab: open widgets/job_builder.ipynb, run all, fill the form, run a job with one failing
mini-batch until the bar reaches the end and the error table shows the failure, export YAML and read
the file, then run a slow job and press Stop until it shows Canceled; then open run_monitor.ipynb on
the runs this made. Voilà: serve job_builder.ipynb as a page and check the form renders and works.
Screenshots go to $PRS_NB_SCREENSHOTS (default: a folder under the system temp dir, so a test run
leaves the tree clean); `PRS_NB_SCREENSHOTS=docs/screenshots` refreshes the ones the README shows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.path.abspath(os.environ.get("PRS_NB_SCREENSHOTS")
                        or os.path.join(tempfile.gettempdir(), "prs_nb_screenshots"))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]
TOKEN = "prs-nb-browser-test"

pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen, log: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{open(log).read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"server did not answer {url} within {timeout}s:\n{open(log).read()[-3000:]}")


@pytest.fixture(scope="module")
def appdir():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(.ci/run does this); playwright drives it with executable_path, never `playwright install`")
    d = tempfile.mkdtemp(prefix="prs-nb-browser-")
    for name in ("job_builder.ipynb", "run_monitor.ipynb"):
        shutil.copy(os.path.join(ROOT, "widgets", name), d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _env(appdir: str) -> dict[str, str]:
    state = os.path.join(appdir, ".jupyter-state")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JUPYTER_CONFIG_DIR=os.path.join(state, "config"), JUPYTER_DATA_DIR=os.path.join(state, "data"),
               JUPYTER_RUNTIME_DIR=os.path.join(state, "runtime"), IPYTHONDIR=os.path.join(state, "ipython"))
    env.pop("JUPYTER_PATH", None)
    return env


def _start(cmd: list[str], appdir: str, name: str) -> tuple[subprocess.Popen, str]:
    log = os.path.join(appdir, f"{name}.log")
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=appdir, env=_env(appdir), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, log


def _stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


@pytest.fixture(scope="module")
def lab(appdir):
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={TOKEN}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           f"--ServerApp.root_dir={appdir}", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    proc, log = _start(cmd, appdir, "lab")
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        # tall enough that a whole notebook cell (form, live display, result) fits in one screenshot
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={"width": 1280, "height": 3000}, timeout=60_000)
        yield ctx
        ctx.close()


def _open_and_run_all(page, lab: str, notebook: str) -> None:
    # a workspace of its own per notebook (reset): JupyterLab would otherwise restore the tabs of the
    # previous page, and run-all could go to the wrong notebook
    workspace = notebook.replace(".ipynb", "")
    page.goto(f"{lab}/lab/workspaces/{workspace}/tree/{notebook}?token={TOKEN}&reset",
              wait_until="domcontentloaded", timeout=60_000)
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_function(
        "(nb) => { const w = window.jupyterapp?.shell.currentWidget;"
        " const k = w?.sessionContext?.session?.kernel;"
        " return !!k && (w.context?.path || '').endsWith(nb) && k.connectionStatus === 'connected'"
        " && k.status === 'idle'; }", arg=notebook, timeout=90_000)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    # JupyterLab's "news?" toast would cover part of the screenshots
    page.add_style_tag(content=".jp-toast-container, .Toastify { display: none !important; }")


def _no_widget_errors(page, scope: str) -> None:
    body = page.inner_text(scope)
    assert "Error displaying widget" not in body
    assert "model not found" not in body.lower()
    assert "VBox(children=" not in body


def _fill(page, key: str, value: str) -> None:
    box = page.locator(f".prs-field-{key} input, .prs-field-{key} textarea").first
    box.fill(value)
    box.press("Tab")  # Text widgets send their value on blur (continuous_update=False)


def _wait_text(page, selector: str, text: str, timeout: float = 90_000) -> None:
    page.wait_for_function(
        "([sel, text]) => [...document.querySelectorAll(sel)].some(e => e.textContent.includes(text))",
        arg=[selector, text], timeout=timeout)


def test_job_builder_in_jupyterlab(appdir, lab, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _open_and_run_all(page, lab, "job_builder.ipynb")
    page.wait_for_selector(".prs-job-form", timeout=90_000)
    _no_widget_errors(page, ".jp-Notebook")

    # fill the form as a person would
    _fill(page, "input_path", "demo/data")
    _fill(page, "mini_batch_size", "2")
    _fill(page, "max_concurrency_per_instance", "2")
    _fill(page, "retry_settings-max_retries", "1")
    _fill(page, "task-code", "demo/src")
    _fill(page, "task-entry_script", "score.py")
    page.locator(".prs-field-append_row input[type=checkbox]").check()
    _wait_text(page, ".prs-form-preview", "20 mini-batch(es) of 40 items")

    # run: one mini-batch (reading_13.txt, corrupt) fails twice, the job completes (no threshold set)
    page.locator("button.widget-button", has_text="Run").first.click()
    _wait_text(page, ".prs-progress .prs-status", "Completed")
    progress = page.locator(".prs-progress").first
    text = progress.inner_text()
    assert "20/20" in text, text  # the bar reached the end
    assert "20/20 mini-batches, 1 failed, 1 retried" in text
    errors_table = page.locator(".prs-progress .prs-errors").first.inner_text()
    assert "ValueError" in errors_table and "could not convert string to float" in errors_table
    assert "2 (failed)" in errors_table and "1 (retrying)" in errors_table
    # the traceback expands under the message
    page.locator(".prs-progress .prs-errors summary").first.click()
    assert "score.py" in page.locator(".prs-progress .prs-errors pre").first.inner_text()
    _no_widget_errors(page, ".jp-Notebook")
    page.locator(".prs-job-form").first.scroll_into_view_if_needed()
    os.makedirs(SHOTS, exist_ok=True)
    page.locator(".jp-Cell").last.screenshot(path=os.path.join(SHOTS, "job_builder.png"))

    # export YAML and check the file
    page.locator(".prs-yaml-path input").fill("exported/job.yml")
    page.locator(".prs-yaml-path input").press("Tab")
    page.locator("button.widget-button", has_text="Export YAML").click()
    _wait_text(page, ".prs-form-message", "exported to exported/job.yml")
    doc = yaml.safe_load(open(os.path.join(appdir, "exported", "job.yml")))
    assert doc["type"] == "pipeline" and doc["inputs"]["data"]["path"] == "../demo/data"
    comp = doc["jobs"]["parallel_job"]["component"]
    assert comp["mini_batch_size"] == "2" and comp["max_concurrency_per_instance"] == 2
    assert comp["task"]["code"] == "../demo/src" and comp["task"]["entry_script"] == "score.py"
    assert comp["retry_settings"]["max_retries"] == 1 and comp["task"]["append_row_to"] == "${{outputs.results}}"

    # a long job, stopped with the Stop button
    _fill(page, "task-entry_script", "slow.py")
    _fill(page, "mini_batch_size", "1")
    page.locator("button.widget-button", has_text="Run").first.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.prs-progress .prs-status')].some("
        "e => /Running/.test(e.textContent) && /[1-9]\\d*\\/40 mini-batches/.test(e.textContent))", timeout=90_000)
    page.locator(".prs-progress button.widget-button", has_text="Stop").click()
    _wait_text(page, ".prs-progress .prs-status", "Canceled", timeout=30_000)
    status = page.locator(".prs-progress .prs-status").first.inner_text()
    assert "stopped with the Stop button" in status and "/40 mini-batches" in status
    page.locator(".jp-Cell").last.screenshot(path=os.path.join(SHOTS, "job_builder_stopped.png"))
    assert not errors, errors
    page.close()


def test_run_monitor_in_jupyterlab(appdir, lab, browser):
    if not os.path.isdir(os.path.join(appdir, "prs_runs")):
        pytest.fail("test_job_builder_in_jupyterlab must run first (it makes the runs this test opens)")
    page = browser.new_page()
    _open_and_run_all(page, lab, "run_monitor.ipynb")
    page.wait_for_selector(".prs-run-monitor", timeout=90_000)
    _wait_text(page, ".prs-run-monitor .prs-status", "Canceled")  # the newest run: the stopped one
    _no_widget_errors(page, ".jp-Notebook")
    # open the earlier run (the one with the failure) by typing its path
    runs = sorted(os.listdir(os.path.join(appdir, "prs_runs", "parallel_job")))
    first = os.path.join("prs_runs", "parallel_job", runs[0])
    page.locator(".prs-run-path input").fill(first)
    page.locator("button.widget-button", has_text="Open").click()
    _wait_text(page, ".prs-run-monitor .prs-status", "Completed")
    _wait_text(page, ".prs-run-monitor .prs-errors", "could not convert string to float")
    page.wait_for_selector(".prs-run-monitor img", timeout=30_000)
    page.locator(".jp-Cell").last.screenshot(path=os.path.join(SHOTS, "run_monitor.png"))
    page.close()


MAGIC_NB_CELLS = [
    "%load_ext prs_nb",
    "import os\nos.makedirs('slow_data', exist_ok=True)\n"
    "for i in range(60):\n    open(f'slow_data/s{i:02d}.txt', 'w').write('x')",
    "%%parallel_run --input slow_data --mini_batch_size 1 -c 1 --max_retries 0 --name slow_magic -o r\n"
    "import time\ndef run(mini_batch):\n    time.sleep(0.3)\n    return list(mini_batch)",
    "print('AFTER', r.status)",
]


def test_stop_button_of_a_running_magic_cell(appdir, lab, browser):
    """The cell keeps the kernel's main thread busy; the click must still cancel the job."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in MAGIC_NB_CELLS]
    nbformat.write(nb, os.path.join(appdir, "magic_stop.ipynb"))
    page = browser.new_page()
    _open_and_run_all(page, lab, "magic_stop.ipynb")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.prs-progress .prs-status')].some("
        "e => /Running/.test(e.textContent) && /[1-9]\\d*\\/60 mini-batches/.test(e.textContent))", timeout=90_000)
    clicked = time.monotonic()
    page.locator(".prs-progress button.widget-button", has_text="Stop").click()
    _wait_text(page, ".prs-progress .prs-status", "Canceled", timeout=30_000)
    _wait_text(page, ".jp-OutputArea-output", "ParallelRunFailed", timeout=30_000)
    took = time.monotonic() - clicked
    assert took < 10, f"Stop took {took:.1f}s"  # 60 x 0.3 s = 18 s of work were left
    text = page.inner_text(".jp-Notebook")
    assert "stopped with the Stop button" in text and "/60 mini-batches" in text
    # "run all" stopped at the failing cell: the next cell never ran
    outputs = " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    assert "AFTER" not in outputs
    page.locator(".jp-Cell").nth(2).screenshot(path=os.path.join(SHOTS, "magic_stopped.png"))
    page.close()


def test_widget_apps_in_voila(appdir, browser):
    port = _free_port()
    cmd = [sys.executable, "-m", "voila", ".", "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}"]
    proc, log = _start(cmd, appdir, "voila")
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc, log, timeout=120)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/voila/render/job_builder.ipynb", wait_until="domcontentloaded",
                  timeout=120_000)
        page.wait_for_selector(".prs-job-form", timeout=120_000)
        _no_widget_errors(page, "body")
        _fill(page, "input_path", "demo/data")
        _fill(page, "mini_batch_size", "5")
        _wait_text(page, ".prs-form-preview", "8 mini-batch(es) of 40 items")
        _fill(page, "mini_batch_size", "10 MB")
        _wait_text(page, ".prs-field-error", "mini_batch_size must look like")
        assert page.locator("button.widget-button", has_text="Run").first.is_disabled()
        page.locator(".prs-job-form").first.screenshot(path=os.path.join(SHOTS, "job_builder_voila.png"))
        page.goto(f"http://127.0.0.1:{port}/voila/render/run_monitor.ipynb", wait_until="domcontentloaded",
                  timeout=120_000)
        page.wait_for_selector(".prs-run-picker", timeout=120_000)
        _no_widget_errors(page, "body")
        if os.path.isdir(os.path.join(appdir, "prs_runs")):  # the JupyterLab tests made runs: one is shown
            page.wait_for_selector(".prs-run-monitor .prs-status", timeout=60_000)
        page.close()
    finally:
        _stop(proc)
