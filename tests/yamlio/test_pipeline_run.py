"""Local pipeline runs: dependency order, command nodes (bash, env vars, timeouts), failures and skips."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import prs_nb
from prs_nb.pipeline import PipelineJob
from prs_nb.yamlio.problems import YamlError

ENV = "azureml:AzureML-sklearn-1.0@latest"
SCRIPT = """
import os
def init():
    global tag
    tag = os.environ.get("TAG", "none")
def run(mini_batch):
    if any("boom" in os.path.basename(p) for p in mini_batch):
        raise RuntimeError("boom file")
    return [f"{os.path.basename(p)} {tag}" for p in mini_batch]
"""


def _write(root: Path, text: str, name: str = "p.yml") -> Path:
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "score.py").write_text(textwrap.dedent(SCRIPT))
    path = root / name
    path.write_text(textwrap.dedent(text))
    return path


PARALLEL = """
    type: parallel
    input_data: ${{inputs.files}}
    mini_batch_size: "2"
    max_concurrency_per_instance: 1
    retry_settings: {max_retries: 0, timeout: 30}
    mini_batch_error_threshold: 0
    task:
      type: run_function
      code: ./src
      entry_script: score.py
      append_row_to: ${{outputs.rows}}
      environment: azureml:e:1
"""


def _pipeline(jobs: str, settings: str = "") -> str:
    return ("type: pipeline\ndisplay_name: t\n" + settings + "jobs:\n" +
            textwrap.indent(textwrap.dedent(jobs), "  "))


def _parallel_node(name: str, files: str, extra: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(PARALLEL).strip() + "\n" + textwrap.dedent(extra), "  ")
    return f"{name}:\n{body}\n  inputs:\n    files: {files}\n  outputs:\n    rows: {{type: uri_file}}\n"


def test_command_then_inline_parallel_then_command(tmp_path: Path) -> None:
    jobs = textwrap.dedent(f"""
    make:
      type: command
      command: mkdir -p ${{{{outputs.files}}}} && for i in 1 2 3 4 5; do echo $i > ${{{{outputs.files}}}}/f$i.txt; done && echo made $GREETING
      environment: {ENV}
      environment_variables: {{GREETING: hello}}
      outputs:
        files: {{type: uri_folder}}
    """) + _parallel_node("score", "${{parent.jobs.make.outputs.files}}",
                          "environment_variables: {TAG: t1}\n") + textwrap.dedent("""
    count:
      type: command
      command: wc -l < ${{inputs.rows}} > ${{outputs.n}}/count.txt
      environment: azureml:e:1
      inputs:
        rows: ${{parent.jobs.score.outputs.rows}}
      outputs:
        n: {type: uri_folder}
    """)
    pj = prs_nb.load(_write(tmp_path, _pipeline(jobs)))
    assert isinstance(pj, PipelineJob)
    assert pj.order() == ["make", "score", "count"]
    result = pj.run()
    assert result.status == "Completed", result.summary()
    score = result.nodes["score"].result
    assert sorted(score.read_lines()) == [f"f{i}.txt t1" for i in range(1, 6)]
    assert Path(result.nodes["count"].outputs["n"], "count.txt").read_text().strip() == "5"
    assert "made hello" in Path(result.nodes["make"].log_path).read_text()
    assert (Path(result.run_dir) / "pipeline.yml").is_file()
    assert prs_nb.load(Path(result.run_dir) / "pipeline.yml") == pj  # the record reloads as the same job


def test_yaml_order_is_not_run_order(tmp_path: Path) -> None:
    jobs = textwrap.dedent("""
    second:
      type: command
      command: cat ${{inputs.a}}/x.txt > ${{outputs.b}}/y.txt
      environment: azureml:e:1
      inputs: {a: "${{parent.jobs.first.outputs.a}}"}
      outputs: {b: {type: uri_folder}}
    first:
      type: command
      command: echo hi > ${{outputs.a}}/x.txt
      environment: azureml:e:1
      outputs: {a: {type: uri_folder}}
    """)
    result = prs_nb.load(_write(tmp_path, _pipeline(jobs))).run()
    assert list(result.nodes) == ["first", "second"]
    assert Path(result.nodes["second"].outputs["b"], "y.txt").read_text() == "hi\n"


def test_failed_command_skips_downstream_and_stops_others(tmp_path: Path) -> None:
    jobs = textwrap.dedent("""
    bad:
      type: command
      command: echo about to fail; exit 3
      environment: azureml:e:1
      outputs: {files: {type: uri_folder}}
    """) + _parallel_node("score", "${{parent.jobs.bad.outputs.files}}") + textwrap.dedent("""
    other:
      type: command
      command: echo independent > ${{outputs.o}}/o.txt
      environment: azureml:e:1
      outputs: {o: {type: uri_folder}}
    """)
    path = _write(tmp_path, _pipeline(jobs))
    result = prs_nb.load(path).run()
    assert result.status == "Failed"
    assert {n: r.status for n, r in result.nodes.items()} == {"bad": "Failed", "score": "Skipped",
                                                             "other": "Skipped"}
    assert result.nodes["bad"].returncode == 3
    assert "exit code 3" in result.nodes["bad"].reason and "about to fail" in result.nodes["bad"].reason
    assert "uses outputs of bad" in result.nodes["score"].reason
    assert "continue_on_step_failure" in result.nodes["other"].reason
    assert "bad failed" in result.reason
    with pytest.raises(prs_nb.JobFailedError, match="bad failed"):
        result.raise_for_status()

    # with continue_on_step_failure the independent node runs; the dependent one is still skipped
    path.write_text(_pipeline(jobs, "settings: {continue_on_step_failure: true}\n"))
    result = prs_nb.load(path).run()
    assert {n: r.status for n, r in result.nodes.items()} == {"bad": "Failed", "score": "Skipped",
                                                             "other": "Completed"}


def test_failed_parallel_node_skips_its_consumer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.txt", "boom.txt", "c.txt"):
        (data / name).write_text("x")
    jobs = _parallel_node("score", "{type: uri_folder, path: ./data}") + textwrap.dedent("""
    after:
      type: command
      command: cat ${{inputs.r}}
      environment: azureml:e:1
      inputs: {r: "${{parent.jobs.score.outputs.rows}}"}
    """)
    result = prs_nb.load(_write(tmp_path, _pipeline(jobs))).run()
    assert result.nodes["score"].status == "Failed"
    assert result.nodes["score"].result.limit == "mini_batch_error_threshold"
    assert result.nodes["after"].status == "Skipped"


def test_command_timeout_kills_the_process_group(tmp_path: Path) -> None:
    jobs = textwrap.dedent("""
    slow:
      type: command
      command: sleep 60 & echo $! > ${{outputs.o}}/pid; wait
      environment: azureml:e:1
      limits: {timeout: 1}
      outputs: {o: {type: uri_folder}}
    """)
    t0 = time.monotonic()
    result = prs_nb.load(_write(tmp_path, _pipeline(jobs))).run()
    assert time.monotonic() - t0 < 15
    node = result.nodes["slow"]
    assert node.status == "Failed" and "timed out after 1 s (limits.timeout)" in node.reason
    pid = int(Path(node.outputs["o"], "pid").read_text())
    try:
        proc = psutil.Process(pid)
        assert proc.status() == psutil.STATUS_ZOMBIE or not proc.is_running()
    except psutil.NoSuchProcess:
        pass


def test_command_inputs_literals_optional_segments_and_parent_outputs(tmp_path: Path) -> None:
    text = textwrap.dedent("""
    type: pipeline
    inputs:
      n: 3
      word: hi there
    outputs:
      final: {type: uri_folder, path: ./final}
    jobs:
      echo:
        type: command
        command: >-
          echo "${{inputs.word}} ${{inputs.n}} $MODE" > ${{outputs.out}}/x.txt
        environment: azureml:e:1
        environment_variables: {MODE: local}
        inputs:
          n: ${{parent.inputs.n}}
          word: ${{parent.inputs.word}}
        outputs:
          out: ${{parent.outputs.final}}
    """)
    result = prs_nb.load(_write(tmp_path, text)).run()
    assert result.status == "Completed", result.summary()
    assert (tmp_path / "final" / "x.txt").read_text() == "hi there 3 local\n"
    assert result.outputs == {"final": str(tmp_path / "final")}


def test_command_component_file_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(textwrap.dedent("""
    $schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
    type: command
    name: greet
    inputs:
      who: {type: string, default: world}
      maybe: {type: string, optional: true}
    outputs:
      out: {type: uri_folder}
    command: echo hello ${{inputs.who}} $[[and ${{inputs.maybe}}]] > ${{outputs.out}}/g.txt
    environment: azureml:e:1
    """))
    jobs = "greet:\n  component: file:./c.yml\nboth:\n  component: file:./c.yml\n  inputs: {maybe: you}\n"
    result = prs_nb.load(_write(tmp_path, _pipeline(jobs))).run()
    assert result.status == "Completed", result.summary()
    assert Path(result.nodes["greet"].outputs["out"], "g.txt").read_text() == "hello world\n"
    assert Path(result.nodes["both"].outputs["out"], "g.txt").read_text() == "hello world and you\n"


@pytest.mark.parametrize("jobs, key, message", [
    ("a:\n  type: command\n  command: echo\n  inputs: {x: '${{parent.jobs.nope.outputs.y}}'}\n", "jobs",
     "there is no job 'nope'"),
    ("a:\n  type: command\n  command: echo\n  outputs: {o: {type: uri_folder}}\n"
     "b:\n  type: command\n  command: echo\n  inputs: {x: '${{parent.jobs.a.outputs.zzz}}'}\n", "jobs",
     "job 'a' has no output 'zzz'"),
    ("a:\n  type: command\n  command: echo\n  inputs: {x: '${{parent.jobs.b.outputs.o}}'}\n  outputs: {o: {type: uri_folder}}\n"
     "b:\n  type: command\n  command: echo\n  inputs: {x: '${{parent.jobs.a.outputs.o}}'}\n  outputs: {o: {type: uri_folder}}\n",
     "jobs", "cycle: a -> b -> a"),
    ("a:\n  type: command\n  command: echo\n  inputs: {x: '${{parent.inputs.nope}}'}\n", "jobs.a.inputs.x",
     "parent.inputs.nope, which the pipeline does not declare"),
    ("a:\n  type: command\n  command: echo ${{inputs.nope}}\n", "jobs.a.command", "uses inputs.nope"),
    ("a:\n  type: command\n  command: echo\n  limits: {timeout: -1}\n", "jobs.a.limits.timeout", "> 0"),
    ("a:\n  type: command\n", "jobs.a.command", "expected the shell command"),
    ("a:\n  type: sweep\n", "jobs.a.type", "parallel and command"),
    ("a:\n  type: parallel\n  component: azureml:my_comp:1\n", "jobs.a.component", "registered component"),
    ("a:\n  type: parallel\n  component: file:./comp.yml\n", "jobs.a.inputs", "required input(s) files are not bound"),
    ("a:\n  type: parallel\n  component: file:./missing.yml\n", "jobs.a.component", "component file not found"),
])
def test_pipeline_errors_name_file_and_key(tmp_path: Path, jobs: str, key: str, message: str) -> None:
    path = _write(tmp_path, _pipeline(jobs))
    (tmp_path / "comp.yml").write_text(textwrap.dedent(PARALLEL).replace(
        "type: parallel", "type: parallel\nname: c\ninputs: {files: {type: uri_folder}}\noutputs: {rows: {type: uri_file}}"))
    with pytest.raises(YamlError) as info:
        prs_nb.load(path)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_node_setting_bound_to_a_data_input_is_an_error(tmp_path: Path) -> None:
    text = ("type: pipeline\ninputs:\n  d: {type: uri_folder, path: .}\njobs:\n" +
            textwrap.indent(_parallel_node("s", "${{parent.inputs.d}}", "max_concurrency_per_instance: ${{parent.inputs.d}}\n"),
                            "  "))
    with pytest.raises(YamlError, match="parent.inputs.d, which has no literal value"):
        prs_nb.load(_write(tmp_path, text))


def test_no_process_left_after_pipeline(tmp_path: Path) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    jobs = "a:\n  type: command\n  command: sleep 0.1\n"
    prs_nb.load(_write(tmp_path, _pipeline(jobs))).run()
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()
    assert os.getcwd()  # nothing changed the working directory


def test_bind_sets_pipeline_inputs_and_outputs(tmp_path: Path) -> None:
    text = textwrap.dedent("""
    type: pipeline
    inputs:
      n: 3
      d: {type: uri_folder, path: ./a}
    outputs:
      o: {type: uri_folder}
    jobs:
      c:
        type: command
        command: ls ${{inputs.d}} > ${{outputs.out}}/ls.txt && echo ${{inputs.n}} >> ${{outputs.out}}/ls.txt
        inputs: {n: "${{parent.inputs.n}}", d: "${{parent.inputs.d}}"}
        outputs: {out: "${{parent.outputs.o}}"}
    """)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "file_b").write_text("")
    pj = prs_nb.load(_write(tmp_path, text))
    bound = pj.bind({"n": "7", "d": "b"}, {"o": "res"}, base_dir=str(tmp_path))
    assert bound.inputs["n"].default == 7 and bound.inputs["d"].path == str(tmp_path / "b")
    result = bound.run()
    assert result.status == "Completed", result.summary()
    assert (tmp_path / "res" / "ls.txt").read_text() == "file_b\n7\n"
    with pytest.raises(prs_nb.ConfigError, match="no input 'x'; its inputs: n, d"):
        pj.bind({"x": 1})
    with pytest.raises(prs_nb.ConfigError, match="'n' is a integer"):
        pj.bind({"n": "seven"})


def test_node_settings_override_the_component_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(textwrap.dedent(SCRIPT))
    comp = textwrap.dedent(PARALLEL).replace("type: parallel", "type: parallel\nname: sc\ninputs:\n  files: "
                                                "{type: uri_folder}\noutputs:\n  rows: {type: uri_file}\n"
                                                "resources: {instance_count: 2, instance_type: Standard_D2}\n")
    (tmp_path / "comp.yml").write_text(comp)
    (tmp_path / "p.yml").write_text(textwrap.dedent("""
    type: pipeline
    inputs:
      t: 7
      d: {type: uri_folder, path: ./src}
    jobs:
      s:
        type: parallel
        component: file:./comp.yml
        inputs: {files: "${{parent.inputs.d}}"}
        resources: {instance_count: 3}
        retry_settings: {timeout: "${{parent.inputs.t}}"}
        logging_level: WARNING
        task: {program_arguments: --x 1}
    """))
    pj = prs_nb.load(tmp_path / "p.yml")
    spec = pj.jobs["s"].spec
    assert (spec.resources.instance_count, spec.resources.instance_type) == (3, "Standard_D2")
    assert (spec.retry_settings.timeout, spec.retry_settings.max_retries) == (7, 0)
    assert spec.logging_level == "WARNING" and spec.mini_batch_size == "2"
    assert spec.task.entry_script == "score.py" and spec.task.program_arguments == "--x 1"
    assert any("instance_type 'Standard_D2'" in n for n in pj.notes())
    result = pj.run(backend="inline")
    assert result.status == "Completed", result.summary()
    assert sorted(result.nodes["s"].result.read_lines()) == ["score.py none"]


def test_a_command_job_file_runs_as_a_one_node_pipeline(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("abc")
    path = tmp_path / "cmd.yml"
    path.write_text(textwrap.dedent("""
    $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
    type: command
    name: copy_it
    command: cp ${{inputs.src}}/a.txt ${{outputs.dst}}/b.txt
    environment: azureml:AzureML-sklearn-1.0@latest
    inputs:
      src: {type: uri_folder, path: ./in}
    outputs:
      dst: {type: uri_folder, path: ./out}
    """))
    pj = prs_nb.load(path)
    assert isinstance(pj, PipelineJob) and list(pj.jobs) == ["copy_it"]
    result = pj.run()
    assert result.status == "Completed", result.summary()
    assert (tmp_path / "out" / "b.txt").read_text() == "abc"
