"""The ``prs-nb`` command line, called as a user would: ``python -m prs_nb ...`` in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.cli import apply_settings
from prs_nb.errors import ConfigError

WORKTREE = str(Path(__file__).resolve().parents[1])

SCORE = """\
import os, sys
def init():
    pass
def run(mini_batch):
    out = []
    for p in mini_batch:
        if "bad" in os.path.basename(p):
            raise ValueError(f"cannot score {os.path.basename(p)}")
        out.append(os.path.basename(p) + " " + " ".join(sys.argv[1:]) + " " + os.environ.get("MODEL", "-"))
    return out
"""


def cli(*args: str, cwd: Path, timeout: float = 120, **popen: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": WORKTREE, "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "prs_nb", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)  # type: ignore[call-overload]


def make_project(root: Path, n: int = 6, bad: int = 0) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "score.py").write_text(SCORE)
    (root / "data").mkdir(exist_ok=True)
    for i in range(n):
        (root / "data" / f"{i:03d}.txt").write_text(f"{i}\n")
    for i in range(bad):
        (root / "data" / f"bad{i}.txt").write_text("x\n")
    return root


def score_job(root: Path, **changes: object):
    settings: dict[str, object] = dict(
        name="score", inputs={"data": Input(type="uri_folder", path=str(root / "data")),
                              "tag": Input(type="string", default="a")},
        outputs={"out": Output(type="uri_folder")}, input_data="${{inputs.data}}", mini_batch_size="2",
        max_concurrency_per_instance=2, retry_settings={"max_retries": 1, "timeout": 30},
        task=RunFunction(code=str(root / "src"), entry_script="score.py", program_arguments="--tag ${{inputs.tag}}",
                         append_row_to="${{outputs.out}}", environment="azureml:sklearn:1"),
    )
    settings.update(changes)
    return parallel_run_function(**settings)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- help and usage
@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["validate", "--help"], ["show", "--help"],
                                  ["demo", "--help"]])
def test_help_everywhere(tmp_path, args):
    p = cli(*args, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("usage: prs-nb") and not p.stderr
    if args[0] == "run":
        for flag in ("--set KEY=VALUE", "--input NAME=PATH", "--output NAME=PATH", "--backend {local,inline,ray}",
                     "--resume RUN_DIR", "--no-reuse", "--runs-root DIR", "-q", "130 interrupted"):
            assert flag in p.stdout, flag


@pytest.mark.parametrize(("args", "message"), [
    ([], "usage: prs-nb"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    (["run"], "the following arguments are required: FILE.yml"),
    (["run", "job.yml", "--backend", "gpu"], "argument --backend: invalid choice: 'gpu' (choose from"),
    (["run", "missing.yml"], "prs-nb run: error: missing.yml: no such file"),
    (["show", "nowhere"], "not a run directory"),
    (["demo", "--files", "0"], "argument --files: expected a number >= 1 (got 0)"),
    (["run", "job.yml", "--resume", "nowhere"], "--resume nowhere: not a run directory"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "job.yml").write_text("type: parallel\n")
    p = cli(*args, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr and not p.stdout


# ---------------------------------------------------------------------------------- --set (in process: the rules)
def test_set_uses_jobspec_names_and_validation(tmp_path):
    spec = score_job(make_project(tmp_path)).spec
    new = apply_settings(spec, [("mini_batch_size", "5"), ("retry_settings.max_retries", "1"),
                                ("environment_variables.MODEL", "small"), ("logging_level", "debug"),
                                ("partition_keys", "a,b"), ("resources.instance_count", "2"),
                                ("task.program_arguments", "--x 1"), ("error_threshold", "3")])
    assert new.mini_batch_size == "5" and new.retry_settings.max_retries == 1 and new.retry_settings.timeout == 30
    assert new.environment_variables == {"MODEL": "small"} and new.logging_level == "DEBUG"
    assert new.partition_keys == ("a", "b") and new.resources.instance_count == 2
    assert new.task.program_arguments == "--x 1" and new.task.entry_script == "score.py" and new.error_threshold == 3
    for assignment, message in [
        (("mini_batch_size", "10 MB"), r"mini_batch_size must look like '10', '512KB' or '1GB'"),
        (("retry_settings.max_retries", "-1"), r"retry_settings.max_retries must be"),
        (("retry_settings.retries", "1"), r"retry_settings has no setting 'retries'; it has max_retries, timeout"),
        (("mini_batch_sise", "1"), r"unknown setting 'mini_batch_sise' \(did you mean 'mini_batch_size'\?\)"),
        (("inputs.data", "x"), r"--set inputs.data: this setting cannot be set here; use --input/--output"),
        (("error_threshold.x", "1"), r"error_threshold is a single value"),
        (("logging_level", "ERROR"), r"logging_level must be one of DEBUG, INFO, WARNING"),
    ]:
        with pytest.raises(ConfigError, match=message):
            apply_settings(spec, [assignment])


# ---------------------------------------------------------------------------------- show
def test_show_a_failed_run_and_a_reused_run(tmp_path):
    root = make_project(tmp_path, bad=1)
    job = score_job(root, mini_batch_error_threshold=0)
    failed = job().run(progress=False, runs_root=str(root / "runs"))
    assert failed.status == "Failed"
    p = cli("show", failed.run_dir, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert f"Job 'score' (run {failed.run_id}): Failed" in out
    assert "failed mini-batches:" in out and "ValueError: cannot score bad0.txt" in out
    assert os.path.join(failed.logs_dir, "job_error.txt") in out and os.path.join(failed.logs_dir, "user") in out
    (root / "data" / "bad0.txt").unlink()
    ok = job().run(progress=False, runs_root=str(root / "runs"))
    again = job().run(progress=False, runs_root=str(root / "runs"))
    assert ok.status == "Completed" and again.reused
    p = cli("show", again.run_dir, cwd=tmp_path)
    assert p.returncode == 0 and f"reused: outputs copied from {ok.run_dir}" in p.stdout


# ---------------------------------------------------------------------------------- run (YAML files)
COMPONENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/parallelComponent.schema.json
type: parallel
name: score
inputs:
  data: {type: uri_folder}
  tag: {type: string, default: a}
outputs:
  out: {type: uri_folder}
input_data: ${{inputs.data}}
mini_batch_size: "2"
max_concurrency_per_instance: 2
mini_batch_error_threshold: 0
retry_settings: {max_retries: 1, timeout: 60}
task:
  type: run_function
  code: ./src
  entry_script: score.py
  program_arguments: --tag ${{inputs.tag}}
  append_row_to: ${{outputs.out}}
  environment: azureml:sklearn:1
"""


def write_component(root: Path, text: str = COMPONENT) -> Path:
    (root / "score.yml").write_text(text)
    return root / "score.yml"


def output_lines(stdout: str) -> list[str]:
    line = next(x for x in stdout.splitlines() if x.strip().startswith("output:"))
    return sorted(Path(line.split("output:", 1)[1].strip()).read_text().splitlines())


def test_run_a_component_with_inputs_settings_and_reuse(tmp_path):
    root = make_project(tmp_path, n=5)
    write_component(root)
    p = cli("run", "score.yml", "--input", "data=data", "--input", "tag=zz", "--set", "mini_batch_size=1",
            "--set", "environment_variables.MODEL=small", "--runs-root", "runs", cwd=root)
    assert p.returncode == 0, p.stderr
    assert "prs_nb job 'score'" in p.stdout and ": Completed" in p.stdout and "mini-batches: 5 total, 5 succeeded" in p.stdout
    assert output_lines(p.stdout) == [f"{i:03d}.txt --tag zz small" for i in range(5)]
    assert "5/5" in p.stderr  # the tqdm bar, on stderr
    again = cli("run", "score.yml", "--input", "data=data", "--input", "tag=zz", "--set", "mini_batch_size=1",
                "--set", "environment_variables.MODEL=small", "--runs-root", "runs", cwd=root)
    assert again.returncode == 0 and "(reused a previous identical run)" in again.stdout
    assert output_lines(again.stdout) == output_lines(p.stdout)
    forced = cli("run", "score.yml", "--input", "data=data", "--input", "tag=zz", "--set", "mini_batch_size=1",
                 "--set", "environment_variables.MODEL=small", "--runs-root", "runs", "--no-reuse", "-q", cwd=root)
    assert forced.returncode == 0 and forced.stdout.strip() == "score: Completed" and not forced.stderr
    changed = cli("run", "score.yml", "--input", "data=data", "--input", "tag=other", "--runs-root", "runs", "-q",
                  "--backend", "inline", cwd=root)
    assert changed.returncode == 0 and changed.stdout.strip() == "score: Completed"


def test_run_a_failing_job_exits_1_with_the_error_table(tmp_path):
    root = make_project(tmp_path, n=3, bad=1)
    write_component(root)
    p = cli("run", "score.yml", "--input", "data=data", "--runs-root", "runs", cwd=root)
    assert p.returncode == 1, p.stderr
    assert ": Failed - mini_batch_error_threshold exceeded" in p.stdout
    table = p.stdout.split("failed attempts:\n", 1)[1]
    assert table.splitlines()[0].split() == ["mini-batch", "attempt", "kind", "process", "error"]
    assert "ValueError: cannot score bad0.txt" in table and len([x for x in table.splitlines() if "bad0" in x]) == 2
    q = cli("run", "score.yml", "--input", "data=data", "--runs-root", "runs", "-q", cwd=root)
    assert q.returncode == 1 and q.stdout.startswith("score: Failed - mini_batch_error_threshold exceeded")
    assert "cannot score bad0.txt" in q.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "mini_batch_size=10 MB"], "prs-nb run: error: mini_batch_size must look like '10', '512KB' or '1GB'"),
    (["--set", "retry_settings.max_retries=-1"], "prs-nb run: error: retry_settings.max_retries must be"),
    (["--set", "nonsense=1"], "prs-nb run: error: --set nonsense: unknown setting 'nonsense'"),
    (["--set", "novalue"], "prs-nb run: error: --set takes KEY=VALUE (got 'novalue')"),
    (["--input", "images=data"], "prs-nb run: error: --input images: the job has no input 'images'; its inputs: data, tag"),
    (["--output", "x=o"], "prs-nb run: error: --output x: the job has no output 'x'; its outputs: out"),
    (["--input", "data=nowhere"], "does not exist"),
    ([], "prs-nb run: error: input 'data' (the input_data) has no data: pass --input data=PATH"),
])
def test_bad_job_arguments_exit_2_before_anything_runs(tmp_path, args, message):
    root = make_project(tmp_path)
    write_component(root)
    extra = [] if args and args[0] == "--input" or not args else ["--input", "data=data"]
    p = cli("run", "score.yml", *extra, *args, "--runs-root", "runs", cwd=root)
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (root / "runs" / "score").exists()


def test_bad_yaml_files_exit_2(tmp_path):
    root = make_project(tmp_path)
    write_component(root, COMPONENT.replace('mini_batch_size: "2"', "mini_batch_size: [1"))
    p = cli("run", "score.yml", cwd=root)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "score.yml" in p.stderr
    write_component(root, COMPONENT.replace("entry_script: score.py", "entry_script: missing.py"))
    p = cli("validate", "score.yml", "--input", "data=data", cwd=root)
    assert p.returncode == 2 and "missing.py" in p.stderr and "Traceback" not in p.stderr


def test_validate_checks_without_running(tmp_path):
    root = make_project(tmp_path)
    write_component(root)
    p = cli("validate", "score.yml", "--input", "data=data", cwd=root)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("score.yml: OK - parallel job 'score', entry score.py, input folder") and \
        "files, 2 per mini-batch" in p.stdout
    assert not (root / "prs_runs").exists()
    p = cli("validate", "score.yml", cwd=root)
    assert p.returncode == 0 and "input 'data' not bound (check it with --input data=PATH)" in p.stdout
    p = cli("validate", "score.yml", "--input", "data=nowhere", cwd=root)
    assert p.returncode == 2 and "nowhere" in p.stderr and "does not exist" in p.stderr


def test_ctrl_c_exits_130(tmp_path):
    root = make_project(tmp_path, n=4)
    (root / "src" / "score.py").write_text(
        "import os, time\ndef run(mini_batch):\n    open(os.environ['MARK'], 'w').close()\n    time.sleep(60)\n"
        "    return mini_batch\n")
    write_component(root)
    env = {**os.environ, "PYTHONPATH": WORKTREE, "MARK": str(tmp_path / "started")}
    proc = subprocess.Popen([sys.executable, "-m", "prs_nb", "run", "score.yml", "--input", "data=data", "-q"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "started", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_resume_a_killed_run(tmp_path):
    """SIGKILL the CLI's driver in the middle of a job, then --resume: every file is in the output once."""
    root = make_project(tmp_path, n=6)
    (root / "src" / "score.py").write_text(
        "import os, time\ndef run(mini_batch):\n    for p in mini_batch:\n"
        "        if p.endswith('003.txt') and not os.path.exists(os.environ['MARK']):\n"
        "            open(os.environ['MARK'], 'w').close()\n            time.sleep(60)\n"
        "    return [os.path.basename(p) for p in mini_batch]\n")
    write_component(root)
    env = {**os.environ, "PYTHONPATH": WORKTREE, "MARK": str(tmp_path / "slow"), "PRS_NB_KEY_DIR": str(tmp_path / "k")}
    args = ["run", "score.yml", "--input", "data=data", "--set", "mini_batch_size=1", "--set",
            "max_concurrency_per_instance=1", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "prs_nb", *args], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "slow", proc)
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = (root / "prs_runs" / "score").iterdir()
    out_file = run_dir / "outputs" / "out" / "parallel_run_step.txt"
    before = out_file.read_text().splitlines()  # what the journal had flushed when the driver died
    assert set(before) <= {"000.txt", "001.txt", "002.txt"}
    shown = subprocess.run([sys.executable, "-m", "prs_nb", "show", str(run_dir)], cwd=root, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "its driver was killed (resume it with prs-nb run FILE.yml --resume" in shown.stdout
    wrong = subprocess.run([sys.executable, "-m", "prs_nb", *args[:2], "--resume", str(run_dir), "--no-reuse"],
                           cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "cannot be combined with" in wrong.stderr
    script = root / "src" / "score.py"
    script.write_text(script.read_text() + "# edited\n")
    p = subprocess.run([sys.executable, "-m", "prs_nb", "run", "score.yml", "--resume", str(run_dir)], cwd=root,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "the job's code changed since the run started" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "prs_nb", "run", "score.yml", "--resume", str(run_dir),
                        "--allow-changed-code"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert ": Completed" in p.stdout and "mini-batches: 6 total, 6 succeeded" in p.stdout
    assert sorted(out_file.read_text().splitlines()) == [f"{i:03d}.txt" for i in range(6)]
    other = root / "other.yml"
    other.write_text(COMPONENT.replace("name: score", "name: other"))
    p = subprocess.run([sys.executable, "-m", "prs_nb", "run", "other.yml", "--resume", str(run_dir)], cwd=root,
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "that is a run of job 'score', not of other.yml" in p.stderr


def test_output_binding_and_demo(tmp_path):
    root = make_project(tmp_path, n=3)
    write_component(root)
    p = cli("run", "score.yml", "--input", "data=data", "--output", "out=results", "-q", cwd=root)
    assert p.returncode == 0, p.stderr
    assert sorted((root / "results" / "parallel_run_step.txt").read_text().splitlines()) == \
        [f"{i:03d}.txt --tag a -" for i in range(3)]
    d = cli("demo", "--files", "60", "--workers", "2", "--root", "demo", cwd=tmp_path)
    assert d.returncode == 0, d.stderr
    assert "prs_nb job" in d.stdout and "mini-batches: 6 total" in d.stdout and "first rows of" in d.stdout


# ---------------------------------------------------------------------------------- pipelines
PIPELINE = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: prep_and_score
inputs:
  raw: {type: uri_folder, path: ./data}
jobs:
  prep:
    type: command
    code: ./src
    command: python prep.py ${{inputs.raw}} ${{outputs.clean}}
    environment: azureml:python:1
    inputs:
      raw: ${{parent.inputs.raw}}
    outputs:
      clean: {type: uri_folder}
  score:
    type: parallel
    component: file:./score.yml
    inputs:
      data: ${{parent.jobs.prep.outputs.clean}}
"""

PREP = """\
import os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name in sorted(os.listdir(src)):
    shutil.copy(os.path.join(src, name), os.path.join(dst, "c_" + name))
print("prepared", len(os.listdir(dst)))
"""


def make_pipeline(root: Path) -> None:
    write_component(root)
    (root / "src" / "prep.py").write_text(PREP)
    (root / "pipeline.yml").write_text(PIPELINE)


def test_pipeline_with_a_command_node_feeding_a_parallel_node(tmp_path):
    root = make_project(tmp_path, n=5)
    make_pipeline(root)
    v = cli("validate", "pipeline.yml", cwd=root)
    assert v.returncode == 0, v.stderr
    assert "OK - pipeline job, nodes in run order: prep, score" in v.stdout and "score: parallel component 'score'" in v.stdout
    p = cli("run", "pipeline.yml", "--set", "score.mini_batch_size=1", "--set", "environment_variables.MODEL=m1",
            cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pipeline prep_and_score: Completed" in p.stdout
    (out,) = root.glob("prs_runs/prep_and_score/*/score/**/parallel_run_step.txt")
    assert sorted(out.read_text().splitlines()) == [f"c_{i:03d}.txt --tag a m1" for i in range(5)]
    (pipe_dir,) = (root / "prs_runs" / "prep_and_score").iterdir()
    again = cli("run", "pipeline.yml", "--set", "score.mini_batch_size=1", "--set", "environment_variables.MODEL=m1",
                cwd=root)  # prep reruns (a command), writes the same files: score is served from the cache
    assert again.returncode == 0 and "score: reused a previous identical run" in again.stdout, again.stdout
    changed = cli("run", "pipeline.yml", "--set", "score.mini_batch_size=1", "--set", "environment_variables.MODEL=m2",
                  cwd=root)
    assert changed.returncode == 0 and "reused" not in changed.stdout
    shown = cli("show", str(pipe_dir), cwd=root)
    assert shown.returncode == 0 and "1 parallel node run(s)" in shown.stdout and "Job 'score'" in shown.stdout
    bad = cli("run", "pipeline.yml", "--set", "prep.mini_batch_size=1", cwd=root)
    assert bad.returncode == 2 and "job 'prep' is a command node" in bad.stderr
    (root / "data" / "bad9.txt").write_text("x\n")
    failed = cli("run", "pipeline.yml", "-q", cwd=root)
    assert failed.returncode == 1 and failed.stdout.startswith("pipeline prep_and_score: Failed")
    assert "failed attempts of node score:" in failed.stdout and "cannot score c_bad9.txt" in failed.stdout


def test_a_bound_job_exported_with_to_yaml_runs_unchanged(tmp_path):
    root = make_project(tmp_path, n=4)
    job = score_job(root)(data=Input(type="uri_folder", path=str(root / "data")), tag="t1")
    job.to_yaml(str(root / "exported.yml"))
    p = cli("run", "exported.yml", "-q", "--runs-root", "runs", cwd=root)
    assert p.returncode == 0 and p.stdout.strip() == "score: Completed", p.stdout + p.stderr
    (out,) = root.glob("runs/score/*/outputs/out/parallel_run_step.txt")
    assert sorted(out.read_text().splitlines()) == [f"{i:03d}.txt --tag t1 -" for i in range(4)]
    again = cli("run", "exported.yml", "-q", "--runs-root", "runs", cwd=root)
    assert again.returncode == 0 and again.stdout.strip() == "score: Completed (reused)"
