"""Hypothesis strategies for random, valid JobSpecs (module-level so tests can share them)."""

from __future__ import annotations

import os

from hypothesis import strategies as st

from prs_nb.pipeline import CommandNode, JobOutput, Node, ParallelNode, ParentInput, ParentOutput, PipelineJob
from prs_nb.spec import Input, JobSpec, Output, Resources, RetrySettings, RunFunction

NAME = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
PORT = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
ODD_NAME = st.from_regex(r"[A-Za-z0-9][-A-Za-z0-9_. ]{0,12}", fullmatch=True)
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
WORD = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)


@st.composite
def job_specs(draw: st.DrawFn, root: str, *, bound: bool | None = None) -> JobSpec:
    """A random JobSpec whose code folder is ``root/src`` (holding score.py) and whose paths are absolute
    under ``root``."""
    n_data = draw(st.integers(1, 3))
    n_lit = draw(st.integers(0, 2))
    names = draw(st.lists(PORT, min_size=n_data + n_lit, max_size=n_data + n_lit, unique=True))
    inputs: dict[str, Input] = {}
    for name in names[:n_data]:
        inputs[name] = Input(type=draw(st.sampled_from(["uri_folder", "uri_file", "mltable"])),
                             optional=draw(st.booleans()) if name != names[0] else False,
                             description=draw(st.none() | TEXT),
                             mode=draw(st.none() | st.sampled_from(["ro_mount", "download", "direct"])))
    for name in names[n_data:]:
        kind = draw(st.sampled_from(["string", "integer", "number", "boolean"]))
        default = draw(st.none() | {
            "string": WORD, "integer": st.integers(-1000, 1000),
            "number": st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
            "boolean": st.booleans()}[kind])
        inputs[name] = Input(type=kind, default=default, optional=draw(st.booleans()),
                             description=draw(st.none() | TEXT))
    out_names = draw(st.lists(PORT.filter(lambda n: n not in names), max_size=2, unique=True))
    outputs = {n: Output(type=draw(st.sampled_from(["uri_folder", "uri_file"])),
                         description=draw(st.none() | TEXT),
                         mode=draw(st.none() | st.sampled_from(["rw_mount", "upload"]))) for n in out_names}
    refs = [f"${{{{inputs.{n}}}}}" for n in inputs] + [f"${{{{outputs.{n}}}}}" for n in outputs]
    arg_parts = draw(st.lists(st.tuples(WORD, st.sampled_from(refs) | WORD, st.booleans()), max_size=4))
    args = " ".join((f"$[[--{a} {v}]]" if opt and v.startswith("${{") else f"--{a} {v}") for a, v, opt in arg_parts)
    env = draw(st.sampled_from([
        "azureml:my-env:1",
        {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"},
        {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest",
         "conda_file": os.path.join(root, "conda.yml")},
    ]))
    task = RunFunction(code=os.path.join(root, "src"), entry_script="score.py",
                       program_arguments=args or draw(st.none() | st.just("")) or None,
                       append_row_to=draw(st.none() | st.sampled_from([f"${{{{outputs.{n}}}}}" for n in outputs]))
                       if outputs else None,
                       environment=env)
    is_bound = draw(st.booleans()) if bound is None else bound
    bindings: dict[str, object] = {}
    out_bindings: dict[str, str] = {}
    if is_bound:
        for n, p in inputs.items():
            required = not p.optional and p.default is None
            if p.is_literal:
                if required or draw(st.booleans()):
                    bindings[n] = draw({"string": WORD, "integer": st.integers(-5, 5),
                                        "number": st.floats(-10, 10, allow_nan=False),
                                        "boolean": st.booleans()}[p.type])
            elif required or n == names[0] or draw(st.booleans()):
                bindings[n] = os.path.join(root, "data", draw(WORD))
        for n in outputs:
            if draw(st.booleans()):
                out_bindings[n] = os.path.join(root, "out", draw(WORD))
        if not bindings and not out_bindings:
            bindings[names[0]] = os.path.join(root, "data")
    partition = draw(st.none() | st.lists(WORD, min_size=1, max_size=3).map(tuple))
    return JobSpec(
        name=draw(NAME | ODD_NAME),
        display_name=draw(st.none() | TEXT),
        description=draw(st.none() | TEXT),
        version=draw(st.none() | st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3})?", fullmatch=True)),
        tags=draw(st.dictionaries(WORD, WORD, max_size=2)),
        properties=draw(st.dictionaries(WORD, WORD, max_size=2)),
        experiment_name=draw(st.none() | WORD),
        compute=draw(st.none() | st.just("azureml:cpu-cluster")),
        inputs=inputs,
        outputs=outputs,
        input_data=f"${{{{inputs.{names[0]}}}}}",
        mini_batch_size=draw(st.none() | st.sampled_from(["1", "10", "5kb", "1MB", "2GB", "64KB"])
                             | st.integers(1, 10**6).map(str)),
        partition_keys=partition,
        resources=Resources(
            instance_count=draw(st.integers(1, 8)),
            instance_type=draw(st.none() | st.just("Standard_D2_v2")),
            properties=draw(st.none() | st.dictionaries(WORD, WORD, min_size=1, max_size=2)),
            shm_size=draw(st.none() | st.just("2g")),
            docker_args=draw(st.none() | st.just("--ipc=host")),
        ),
        max_concurrency_per_instance=draw(st.none() | st.integers(1, 16)),
        error_threshold=draw(st.integers(-1, 100)),
        mini_batch_error_threshold=draw(st.integers(-1, 100)),
        allowed_failed_percent=draw(st.just(100.0) | st.integers(0, 100).map(float) | st.sampled_from([12.5, 0.5])),
        retry_settings=RetrySettings(max_retries=draw(st.integers(0, 5)),
                                     timeout=draw(st.integers(1, 259200) | st.sampled_from([0.5, 2.25]))),
        logging_level=draw(st.sampled_from(["DEBUG", "INFO", "WARNING"])),
        task=task,
        environment_variables=draw(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), WORD,
                                                   max_size=3)),
        is_deterministic=draw(st.booleans()),
        identity=draw(st.none() | st.sampled_from([{"type": "user_identity"}, {"type": "managed_identity"}])),
        bindings=bindings,
        output_bindings=out_bindings,
        append_row_file_name=draw(st.none() | st.sampled_from(["rows.txt", "out.csv"])),
        output_action=draw(st.none() | st.sampled_from(["append_row", "summary_only"])),
        ordered_output=draw(st.booleans()),
        backend=draw(st.sampled_from(["local", "inline"])),
        runs_root=draw(st.sampled_from(["prs_runs", "elsewhere/runs"])),
        api=draw(st.sampled_from(["v2", "v1"])),
    )


@st.composite
def pipelines(draw: st.DrawFn, root: str) -> PipelineJob:
    """A random pipeline: command and parallel nodes wired through pipeline inputs, literal values,
    data specs and other nodes' outputs (always acyclic: a node uses only earlier nodes)."""
    p_inputs: dict[str, Input] = {
        "raw": Input(type="uri_folder", path=os.path.join(root, "data")),
        "mbs": Input(type="string", default="2"),
        "k": Input(type="integer", default=draw(st.integers(0, 9))),
    }
    if draw(st.booleans()):
        p_inputs["flag"] = Input(type="boolean", default=draw(st.booleans()))
    p_outputs = {"final": Output(type="uri_folder", path=os.path.join(root, "final"))} if draw(st.booleans()) else {}
    jobs: dict[str, Node] = {}
    produced: list[JobOutput] = []
    n = draw(st.integers(1, 4))
    for i in range(n):
        name = f"step{i}"
        if draw(st.booleans()):
            src = draw(st.sampled_from([ParentInput("raw"), *produced]))
            jobs[name] = CommandNode(
                name=name, command="cp -r ${{inputs.src}}/. ${{outputs.out}} $[[&& echo ${{inputs.k}}]]",
                inputs={"src": src, "k": ParentInput("k")}, output_types={"out": "uri_folder"},
                environment_variables=draw(st.dictionaries(st.from_regex(r"[A-Z]{1,5}", fullmatch=True), WORD,
                                                           max_size=2)),
                timeout=draw(st.none() | st.integers(1, 3600)),
                environment=draw(st.none() | st.just("azureml:AzureML-sklearn-1.0@latest")),
                compute=draw(st.none() | st.just("azureml:cpu-cluster")),
                code=draw(st.none() | st.just(os.path.join(root, "src"))),
            )
            produced.append(JobOutput(name, "out"))
        else:
            spec = draw(job_specs(root, bound=False))
            spec = spec.replace(experiment_name=None, name=f"comp{i}")
            data_name = spec.input_data_name
            assert data_name is not None
            ins: dict[str, object] = {data_name: draw(st.sampled_from([ParentInput("raw"), *produced,
                                                                        Input(type="uri_folder",
                                                                              path=os.path.join(root, "d2"))]))}
            for pname, port in spec.inputs.items():
                required = not port.optional and port.default is None
                if pname != data_name and not port.is_literal and (required or draw(st.booleans())):
                    ins[pname] = draw(st.sampled_from([ParentInput("raw"), *produced]))
                if pname != data_name and port.is_literal and (required or draw(st.booleans())):
                    ins[pname] = draw(st.sampled_from([ParentInput("k"), 3])) if port.type == "integer" else \
                        ParentInput("mbs") if port.type == "string" else port.default if port.default is not None \
                        else ParentInput("k") if port.type == "number" else True
            outs: dict[str, object] = {}
            for oname, oport in spec.outputs.items():
                if p_outputs and oport.type == "uri_folder" and draw(st.booleans()):
                    outs[oname] = ParentOutput("final")
                elif draw(st.booleans()):
                    outs[oname] = Output(type=oport.type, path=os.path.join(root, "o", oname))
                if oport.type == "uri_folder" and draw(st.booleans()):
                    produced.append(JobOutput(name, oname))
            jobs[name] = ParallelNode(name=name, spec=spec, inputs=ins, outputs=outs)
    return PipelineJob(
        display_name=draw(st.none() | TEXT), description=draw(st.none() | TEXT),
        experiment_name=draw(st.none() | WORD), tags=draw(st.dictionaries(WORD, WORD, max_size=2)),
        inputs=p_inputs, outputs=p_outputs,
        settings=draw(st.sampled_from([{}, {"default_compute": "azureml:cpu-cluster"},
                                       {"default_compute": "azureml:cpu-cluster", "continue_on_step_failure": True}])),
        jobs=jobs,
    )
