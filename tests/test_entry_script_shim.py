"""Tests of the azureml_user shim: unchanged Azure scripts get EntryScript; nothing is installed top-level."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prs_nb.logs import SHIM_DIR, log_paths, setup_worker_logging

REPO = str(Path(__file__).resolve().parents[1])


def _run_py(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_azureml_user_is_not_importable_top_level() -> None:
    assert importlib.util.find_spec("azureml_user") is None
    with pytest.raises(ImportError):
        import azureml_user  # noqa: F401
    # the shim folder is a sys.path root inside the package, not a package itself
    assert os.path.isdir(os.path.join(SHIM_DIR, "azureml_user"))
    assert not os.path.exists(os.path.join(SHIM_DIR, "__init__.py"))
    assert Path(SHIM_DIR).parent == Path(importlib.util.find_spec("prs_nb").origin).parent  # type: ignore[union-attr,arg-type]
    assert SHIM_DIR not in sys.path


def test_entry_script_singleton_and_configure_in_a_subprocess(tmp_path: Path) -> None:
    code = f"""
    import logging, sys
    sys.path.append({SHIM_DIR!r})
    from azureml_user.parallel_run import EntryScript
    import azureml_user.parallel_run as pr
    early = EntryScript()  # e.g. created at import of the user's script, before the worker configures
    lg = logging.getLogger("azureml_user.entry_script.process007")
    pr._configure(logger=lg, log_dir="/logs/user/entry_script_log/2", agent_name="process007",
                  output_dir="/out", working_dir="/code", node_id=2)
    es = EntryScript()
    assert es is early is pr.EntryScript() is EntryScript("ignored", arg=1)
    assert es.logger is lg
    assert es.log_dir == "/logs/user/entry_script_log/2"
    assert es.agent_name == es.process_name == "process007"
    assert es.output_dir == "/out" and es.working_dir == "/code" and es.node_id == 2
    assert "prs_nb worker" in repr(es)
    print("ok")
    """
    proc = _run_py(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n" and proc.stderr == ""


def test_entry_script_outside_prs_nb_still_works(tmp_path: Path) -> None:
    code = f"""
    import os, sys
    sys.path.append({SHIM_DIR!r})
    from azureml_user.parallel_run import EntryScript
    es = EntryScript()
    es.logger.info("hello from init")
    es.logger.debug("dropped at INFO")
    assert os.path.isdir(es.log_dir) and os.path.isdir(es.output_dir)
    assert es.log_dir.replace(os.sep, "/").endswith("logs/user/entry_script_log/0")
    assert es.agent_name == "process000" and es.node_id == 0 and es.working_dir == os.getcwd()
    EntryScript().logger.info("again")
    print(es.output_dir)
    """
    proc = _run_py(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("not running under a prs_nb worker") == 1  # one-time message
    assert "hello from init" in proc.stderr and "again" in proc.stderr
    assert "dropped at INFO" not in proc.stderr
    assert os.path.basename(os.path.dirname(proc.stdout.strip())).startswith("prs_nb_entry_script_")


_SCORE = '''
import argparse
import datetime
from pathlib import Path

from azureml_user.parallel_run import EntryScript


def init():
    global args
    args, _ = argparse.ArgumentParser().parse_known_args()
    logger = EntryScript().logger
    logger.info("init() from %s", EntryScript().agent_name)
    logger.debug("debug is dropped at INFO")


def run(mini_batch):
    entry_script = EntryScript()
    log_dir = Path(entry_script.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{entry_script.agent_name}_custom.txt").write_text("custom")
    Path(entry_script.output_dir, f"{entry_script.agent_name}.out").write_text(",".join(mini_batch))
    print("run() prints", len(mini_batch))
    entry_script.logger.info("run() got %d items", len(mini_batch))
    return mini_batch
'''


def test_unchanged_azure_script_in_a_worker_process(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text(_SCORE)
    logs, out = tmp_path / "logs", tmp_path / "out"
    out.mkdir()
    code = f"""
    import importlib, sys
    from prs_nb.logs import setup_worker_logging
    wl = setup_worker_logging({str(logs)!r}, 0, "process003", "INFO")
    wl.configure_entry_script({str(out)!r}, working_dir={str(tmp_path / 'code')!r})
    sys.path.insert(0, {str(tmp_path / 'code')!r})
    score = importlib.import_module("score")
    score.init()
    assert score.run(["a", "b"]) == ["a", "b"]
    wl.close()
    assert "azureml_user" not in sys.modules
    print("done")
    """
    proc = _run_py(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n" and proc.stderr == ""
    p = log_paths(str(logs), 0, "process003")
    entry = Path(p["entry_log"]).read_text()
    assert "init() from process003" in entry and "run() got 2 items" in entry and "debug is dropped" not in entry
    assert (Path(p["entry_log_dir"]) / "process003_custom.txt").read_text() == "custom"
    assert (out / "process003.out").read_text() == "a,b"
    assert "run() prints 2" in Path(p["stdout"]).read_text()


def test_inline_configure_is_undone_by_close(tmp_path: Path) -> None:
    wl = setup_worker_logging(str(tmp_path / "logs"), 0, "process000", "INFO", redirect_fds=False)
    try:
        mod = wl.configure_entry_script(str(tmp_path / "out"))
        assert mod is not None
        from azureml_user.parallel_run import EntryScript  # type: ignore[import-not-found]

        es = EntryScript()
        assert es.logger is wl.entry_logger and es.output_dir == str(tmp_path / "out")
        assert es.working_dir == os.getcwd() and es.agent_name == "process000"
        es.logger.info("inline entry script")
    finally:
        wl.close()
    assert "azureml_user" not in sys.modules and "azureml_user.parallel_run" not in sys.modules
    assert SHIM_DIR not in sys.path
    assert importlib.util.find_spec("azureml_user") is None
    assert "inline entry script" in Path(wl.entry_log_path).read_text()
    assert wl.root_handler not in logging.getLogger().handlers
