"""The Binder environment, built the way repo2docker builds it minus Docker: a fresh venv, then
``pip install -r binder/requirements.txt``, then ``binder/postBuild`` run from the repository root with
the venv first on PATH. The tutorials and widget apps then run in that venv's kernel, and that venv's
JupyterLab serves what the README's Binder links open: lab/tree/notebooks and the job builder rendered
by Voila (its form, as a widget, with no error output).

This needs a package index (CI has one); the pip cache makes reruns fast (about two minutes here).
``jupyter-repo2docker --no-build`` (pip-installed into its own venv) renders the Dockerfile Binder
would build, which fails on a bad binder/ folder.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from typing import Any

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NBRUN = os.path.join(ROOT, "tests", "notebooks", "nbrun.py")

pytestmark = pytest.mark.binder


def _env(venv: str, tmp: str) -> dict[str, str]:
    """What a Binder session has: the venv's bin first on PATH, no PYTHONPATH, and Jupyter/IPython
    state in fresh folders (no user-level kernelspec or config can leak in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = venv
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[var] = os.path.join(tmp, var.lower())
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _section(listing: str, header: str) -> str:
    """The part of a `jupyter ... list` listing under ``header`` (up to the next blank line), colours removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", listing)
    assert header in text, f"{header!r} not in:\n{text}"
    return text.split(header, 1)[1].split("\n\n", 1)[0]


def _run(cmd: list[str], *, env: dict[str, str], cwd: str, timeout: float) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.timeout(540)
def test_binder_environment_runs_the_tutorials(tmp_path):
    assert os.access(os.path.join(ROOT, "binder", "postBuild"), os.X_OK), "binder/postBuild must be executable"
    venv = str(tmp_path / "venv")
    env = _env(venv, str(tmp_path))
    _run([sys.executable, "-m", "venv", venv], env=env, cwd=str(tmp_path), timeout=120)
    py = os.path.join(venv, "bin", "python")
    _run([py, "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], env=env, cwd=ROOT, timeout=300)
    _run(["./binder/postBuild"], env=env, cwd=ROOT, timeout=300)

    # prs_nb, ipywidgets, voila and the CLI come from the venv (run from elsewhere, nothing on PYTHONPATH)
    probe = textwrap.dedent("""
        import importlib.metadata as md, json, os, sys
        import ipywidgets, nbclient, prs_nb, ray, voila
        dist = md.distribution("prs_nb")
        print(json.dumps({"prefix": sys.prefix, "prs_nb": prs_nb.__file__, "ray": ray.__file__,
                          "dist": os.path.realpath(str(dist.locate_file(""))),
                          "ipywidgets": ipywidgets.__version__, "voila": voila.__version__}))
    """)
    info = json.loads(_run([py, "-c", probe], env=env, cwd=str(tmp_path), timeout=60).stdout)
    assert os.path.realpath(info["prefix"]) == os.path.realpath(venv)
    assert info["dist"].startswith(os.path.realpath(venv)), info  # installed into the venv ...
    assert os.path.realpath(info["prs_nb"]).startswith(os.path.realpath(ROOT)), info  # ... editable, this checkout
    assert int(info["ipywidgets"].split(".")[0]) >= 8
    assert os.path.realpath(info["ray"]).startswith(os.path.realpath(venv)), info  # for notebooks/08_ray.ipynb
    assert "usage: prs-nb" in _run([os.path.join(venv, "bin", "prs-nb"), "--help"], env=env, cwd=str(tmp_path),
                                   timeout=60).stdout
    # JupyterLab shows widgets (ipywidgets' lab extension) and serves Voila pages (its server extension)
    # (each listed under the venv's own folders, not the folders of the interpreter running this test)
    labext = _run([py, "-m", "jupyter", "labextension", "list"], env=env, cwd=str(tmp_path), timeout=120)
    mine = _section(labext.stdout + labext.stderr, os.path.join(venv, "share", "jupyter", "labextensions"))
    assert re.search(r"@jupyter-widgets/jupyterlab-manager v\S+ enabled", mine), labext.stdout + labext.stderr
    serverext = _run([py, "-m", "jupyter", "server", "extension", "list"], env=env, cwd=str(tmp_path), timeout=120)
    mine = _section(serverext.stdout + serverext.stderr, "Config dir: " + os.path.join(venv, "etc", "jupyter"))
    assert re.search(r"voila\.server_extension enabled", mine), serverext.stdout + serverext.stderr

    # the kernel nbclient starts there is the venv's python3
    check = tmp_path / "00_kernel_is_the_venv.ipynb"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(
        f"import os, sys, prs_nb, ipywidgets\nassert os.path.realpath(sys.prefix) == {os.path.realpath(venv)!r}, sys.prefix")]
    nbformat.write(nb, str(check))
    notebooks = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))) + sorted(
        glob.glob(os.path.join(ROOT, "widgets", "*.ipynb")))
    assert any(p.endswith("05_export_yaml_and_cli.ipynb") for p in notebooks)
    times = tmp_path / "times.json"
    r = subprocess.run([py, NBRUN, "--timeout", "60", "--json", str(times), str(check), *notebooks], env=env,
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=400)
    print(r.stdout)
    assert r.returncode == 0, f"a notebook failed in the Binder environment:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    ran = json.loads(times.read_text())
    assert len(ran) == len(notebooks) + 1
    if os.environ.get("PRS_NB_NOTEBOOK_TIMES"):
        from nbrun import record_time

        for path, seconds in ran.items():
            if path != str(check):
                record_time(os.environ["PRS_NB_NOTEBOOK_TIMES"], "binder:" + os.path.relpath(path, ROOT), seconds)

    # what the README's links open: JupyterLab on notebooks/, and the job builder rendered by Voila
    site = tmp_path / "site"
    for folder in ("notebooks", "widgets"):
        shutil.copytree(os.path.join(ROOT, folder), site / folder,
                        ignore=shutil.ignore_patterns("demo", "prs_runs", ".ipynb_checkpoints"))
    port = _free_port()
    token = secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "lab.log", "wb") as log:
        lab = subprocess.Popen([py, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
                                f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={site}",
                                "--LabApp.news_url=None"], env=env, cwd=str(site), stdout=log, stderr=log)
    try:
        _wait_until_up(f"{base}/api/status?token={token}", lab, tmp_path / "lab.log")
        assert _get(f"{base}/lab/tree/notebooks?token={token}")[0] == 200
        status, page = _get(f"{base}/voila/render/widgets/job_builder.ipynb?token={token}")
        assert status == 200
        outputs = [json.loads(m) for m in re.findall(
            r'<script type="application/vnd.voila.cell-output\+json">\s*(.*?)\s*</script>', page, flags=re.S)]
        assert not [o for o in outputs if o.get("output_type") == "error"], outputs
        views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert views and "prs_nb job" in views[-1]["data"]["text/plain"], outputs  # the form, as a widget
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - loopback, our own server
        return int(r.status), r.read().decode("utf-8", "replace")


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"jupyter lab exited ({proc.returncode}):\n{open(log).read()[-3000:]}"
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)  # polling a server that is starting up
    raise AssertionError(f"jupyter lab did not answer within 90 s:\n{open(log).read()[-3000:]}")


@pytest.mark.timeout(300)
def test_repo2docker_renders_the_binder_folder(tmp_path):
    """`jupyter-repo2docker --no-build` needs no Docker: it picks the buildpack from binder/ and prints the
    Dockerfile, which must install binder/requirements.txt, run binder/postBuild and use runtime.txt."""
    venv = str(tmp_path / "r2d")
    env = _env(venv, str(tmp_path))
    _run([sys.executable, "-m", "venv", venv], env=env, cwd=str(tmp_path), timeout=120)
    _run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "jupyter-repo2docker"], env=env,
         cwd=str(tmp_path), timeout=240)
    r = _run([os.path.join(venv, "bin", "jupyter-repo2docker"), "--no-build", "--no-run", ROOT], env=env,
             cwd=str(tmp_path), timeout=120)
    out = r.stdout + r.stderr
    runtime = open(os.path.join(ROOT, "binder", "runtime.txt")).read().strip()
    assert runtime.startswith("python-")
    assert f"python={runtime.split('-', 1)[1]}" in out, out[-2000:]
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in out, out[-2000:]
    assert "./binder/postBuild" in out, out[-2000:]
