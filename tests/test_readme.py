"""The README's Python examples run as written (on a small entry-script folder and data made here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")

SCORE_PY = textwrap.dedent("""
    import argparse, os
    from azureml_user.parallel_run import EntryScript

    def init():
        global threshold
        parser = argparse.ArgumentParser()
        parser.add_argument("--threshold", type=float, default=0.5)
        args, _ = parser.parse_known_args()
        threshold = args.threshold
        EntryScript().logger.info("threshold %s", threshold)

    def run(mini_batch):
        return [f"{os.path.basename(p)} {threshold} {os.environ.get('MODEL_NAME', '-')}" for p in mini_batch]
""")


def python_blocks() -> list[str]:
    text = open(README, encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_the_examples():
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize("index", range(3))
def test_readme_example_runs(tmp_path, index):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(SCORE_PY)
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    for i in range(12):
        (images / f"img{i:02d}.png").write_bytes(b"fake")
    code = python_blocks()[index] + "\nprint('RESULT', result.status, result.counts['succeeded'], result.counts['failed'])\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RESULT Completed" in r.stdout, r.stdout + r.stderr[-3000:]


def test_readme_settings_table_is_generated_from_jobspec():
    from prs_nb.spec import settings_table

    text = open(README, encoding="utf-8").read()
    block = text.split("<!-- settings-table:start -->\n")[1].split("\n<!-- settings-table:end -->")[0]
    assert block == settings_table(), "regenerate the README table with prs_nb.spec.settings_table()"
