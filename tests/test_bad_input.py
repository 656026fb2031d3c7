"""Bad settings, arguments, environments and entry code: every failure is a clear PrsError.

Property tests (hypothesis; profile in conftest.py) feed random values to every surface that takes
user input - mini_batch_size strings, JobSpec fields, parallel_run_function keywords, v1
ParallelRunConfig parameters and ParallelRunStep arguments, program_arguments, environment variables
- and check that each call either succeeds with a value the contract allows or raises a PrsError whose
message names the setting and shows what it got; never a bare TypeError/KeyError/AttributeError
from inside prs_nb. Example-based tests cover entry code that cannot be pickled and results that
cannot be pickled or printed, on the inline and the local process backend.
"""

from __future__ import annotations

import math
import os
import re
import threading

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.errors import ConfigError, EntryScriptError, InputDataError, PrsError
from prs_nb.spec import JobSpec, parse_mini_batch_size
from prs_nb.v1 import ParallelRunConfig, ParallelRunStep

PARSING = settings(max_examples=200)
JOBS = settings(max_examples=20)


def assert_clear(exc: BaseException, *words: str) -> None:
    """A PrsError whose message says what failed (``words``) in one readable paragraph."""
    assert isinstance(exc, PrsError), f"{type(exc).__name__} is not a PrsError: {exc}"
    text = str(exc)
    assert text.strip(), "empty message"
    assert "Traceback (most recent call last)" not in text, text
    for w in words:
        assert w in text, f"{w!r} not in message: {text}"


# Values of every shape a user (or a YAML file, or a widget) might put into a setting.
weird = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=6),
    st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3),
    st.just(object()), st.just(float("nan")), st.just("-1"), st.just(-1), st.just(0), st.just(100),
)

# ------------------------------------------------------------------------------------ mini_batch_size
_VALID_MBS = re.compile(r"\d+([kKmMgG][bB])?")  # contract 5.1: digits, optionally one KB/MB/GB, nothing else
_UNIT = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}

mbs_text = st.one_of(
    st.text(max_size=8),
    st.from_regex(r"[0-9]{1,5}([kKmMgGbB ][bB ]?){0,2}", fullmatch=True),
    st.from_regex(r"\s?[0-9]{1,4}(\.[0-9])?\s?[kKmMgG]?[bB]?\s?", fullmatch=True),
    st.sampled_from(["0", "00", "0KB", "10KBMB", "1024b", "10 MB", "1.5MB", "10\n", " 10", "10kB", "1GB", "١٠"]),
)


def expected_mbs(text: str) -> int | None:
    if not _VALID_MBS.fullmatch(text):
        return None
    digits, unit = (text, "") if text.isdigit() else (text[:-2], text[-2:].lower())
    value = int(digits) * _UNIT.get(unit, 1)
    return value if value > 0 else None


@PARSING
@given(mbs_text)
def test_mini_batch_size_strings_follow_the_contract(text):
    want = expected_mbs(text)
    try:
        got = parse_mini_batch_size(text)
    except BaseException as exc:  # noqa: BLE001 - the property: any failure is a clear ConfigError
        assert_clear(exc, "mini_batch_size", repr(text))
        assert isinstance(exc, ConfigError)
        assert want is None, f"{text!r} is valid ({want}) but was rejected: {exc}"
        return
    assert got == want, f"{text!r} -> {got}, contract says {want}"


@PARSING
@given(mbs_text)
def test_mini_batch_size_same_answer_on_every_surface(text):
    """JobSpec (v2, YAML) and v1's ParallelRunConfig accept and reject the same strings."""
    want = expected_mbs(text)
    for build in (lambda: JobSpec(name="j", mini_batch_size=text),
                  lambda: ParallelRunConfig(None, "score.py", -1, "summary_only", "local", 1, mini_batch_size=text)):
        try:
            build()
        except ConfigError as exc:
            if "entry script" in str(exc) or "entry_script" in str(exc):
                assert want is not None  # the size passed; the missing script is what failed
                continue
            assert want is None, f"{text!r} rejected: {exc}"
            assert_clear(exc, "mini_batch_size")
        else:
            assert want is not None, f"{text!r} accepted but the contract rejects it"


# ------------------------------------------------------------------------------------ JobSpec fields
JOBSPEC_FIELDS = [
    "error_threshold", "mini_batch_error_threshold", "allowed_failed_percent", "max_concurrency_per_instance",
    "logging_level", "backend", "partition_keys", "environment_variables", "mini_batch_size",
    "append_row_file_name", "output_action", "input_data", "retry_settings", "resources", "tags", "properties",
    "ordered_output", "is_deterministic", "runs_root", "name", "display_name", "inputs", "outputs", "bindings",
    "output_bindings", "task",
]


def check_spec_invariants(spec: JobSpec) -> None:
    """What an accepted spec guarantees (contract 6.1, 6.2, 12)."""
    assert isinstance(spec.error_threshold, int) and spec.error_threshold >= -1
    assert isinstance(spec.mini_batch_error_threshold, int) and spec.mini_batch_error_threshold >= -1
    assert 0 <= spec.allowed_failed_percent <= 100
    assert isinstance(spec.retry_settings.max_retries, int) and spec.retry_settings.max_retries >= 0
    assert 0 < spec.retry_settings.timeout <= 259200
    assert spec.logging_level in ("DEBUG", "INFO", "WARNING")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in spec.environment_variables.items())
    s = spec.effective()
    assert s.max_attempts == spec.retry_settings.max_retries + 1


@PARSING
@given(st.sampled_from(JOBSPEC_FIELDS), weird)
def test_jobspec_field_values(field, value):
    try:
        spec = JobSpec(name="j", **{field: value}) if field != "name" else JobSpec(name=value)
    except BaseException as exc:  # noqa: BLE001 - the property: any failure is a clear ConfigError
        assert_clear(exc)
        assert isinstance(exc, ConfigError)
        msg = str(exc)
        assert field.split("_")[0] in msg or field in msg, f"{field}={value!r}: message does not name it: {msg}"
        return
    check_spec_invariants(spec)


retry_values = st.dictionaries(st.sampled_from(["max_retries", "timeout", "retries", ""]), weird, max_size=3)
resource_values = st.dictionaries(st.sampled_from(["instance_count", "instance_type", "shm_size", "x"]), weird,
                                  max_size=3)


@PARSING
@given(retry_values, resource_values)
def test_nested_settings(retry, resources):
    try:
        spec = JobSpec(name="j", retry_settings=retry, resources=resources)
    except BaseException as exc:  # noqa: BLE001
        assert_clear(exc)
        assert isinstance(exc, ConfigError)
        assert "retry_settings" in str(exc) or "resources" in str(exc), str(exc)
        return
    check_spec_invariants(spec)
    assert isinstance(spec.resources.instance_count, int) and spec.resources.instance_count >= 1


V2_KEYWORDS = ["mini_batch_size", "error_threshold", "mini_batch_error_threshold", "max_concurrency_per_instance",
               "retry_settings", "logging_level", "environment_variables", "partition_keys", "input_data",
               "instance_count", "allowed_failed_percent", "backend", "tags", "inputs", "outputs", "name",
               "not_a_keyword"]


@PARSING
@given(st.sampled_from(V2_KEYWORDS), weird)
def test_parallel_run_function_keywords(keyword, value):
    kwargs = {"name": "j", "task": RunFunction(run=len), keyword: value}
    try:
        job = parallel_run_function(**kwargs)
    except BaseException as exc:  # noqa: BLE001
        assert_clear(exc)
        assert isinstance(exc, ConfigError)
        assert keyword.split("_")[0] in str(exc) or keyword in str(exc), str(exc)
        return
    check_spec_invariants(job.spec)


V1_PARAMS = ["error_threshold", "output_action", "node_count", "process_count_per_node", "mini_batch_size",
             "source_directory", "description", "logging_level", "run_invocation_timeout", "run_max_try",
             "append_row_file_name", "allowed_failed_count", "allowed_failed_percent", "partition_keys",
             "environment_variables", "entry_script"]


@PARSING
@given(st.sampled_from(V1_PARAMS), weird)
def test_v1_parallel_run_config_parameters(tmp_path_factory, param, value):
    code = tmp_path_factory.getbasetemp() / "v1code"
    code.mkdir(exist_ok=True)
    (code / "score.py").write_text("def run(mb):\n    return mb\n")
    kwargs = dict(environment=None, entry_script="score.py", error_threshold=-1, output_action="append_row",
                  compute_target="local", node_count=1, source_directory=str(code))
    kwargs[param] = value
    try:
        cfg = ParallelRunConfig(**kwargs)
    except BaseException as exc:  # noqa: BLE001
        assert_clear(exc)
        assert isinstance(exc, ConfigError)
        assert param.split("_")[0] in str(exc) or param in str(exc), str(exc)
        return
    assert cfg.run_max_try >= 1
    step = ParallelRunStep(name="s", parallel_run_config=cfg, inputs=[str(code)], output=str(code / "out"))
    check_spec_invariants(step.to_spec())
    # run_max_try counts total attempts (contract 12)
    assert step.to_spec().effective().max_attempts == cfg.run_max_try


arg_items = st.one_of(
    st.text(max_size=10), st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(),
    st.sampled_from(["--x", "--error_threshold", "--mini_batch_size=3", "--run_max_try", "-v", "--rank_mini_batch_count",
                     "--allowed_failed_percent=50", "${{inputs.data}}", "${{outputs.out}}", "--output"]),
)


@PARSING
@given(st.one_of(st.lists(arg_items, max_size=5), weird))
def test_v1_step_arguments(tmp_path_factory, arguments):
    code = tmp_path_factory.getbasetemp() / "v1args"
    code.mkdir(exist_ok=True)
    (code / "score.py").write_text("def run(mb):\n    return mb\n")
    cfg = ParallelRunConfig(None, "score.py", -1, "summary_only", "local", 1, source_directory=str(code))
    try:
        step = ParallelRunStep(name="s", parallel_run_config=cfg, inputs=[str(code)], arguments=arguments)
    except BaseException as exc:  # noqa: BLE001
        assert_clear(exc)
        assert isinstance(exc, ConfigError)
        assert "argument" in str(exc) or "rank_mini_batch_count" in str(exc), str(exc)
        return
    check_spec_invariants(step.to_spec())


# ------------------------------------------------------------------------------------ program arguments
PRS_OPTIONS = ["--error_threshold", "--allowed_failed_count", "--allowed_failed_percent", "--rank_mini_batch_count",
               "--first_task_creation_timeout", "--append_row_dataframe_header", "--task_overhead_timeout",
               "--my_own_flag"]
arg_value = st.one_of(st.integers(-3, 200).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                      st.text(alphabet="0123456789.-eE abc'\"\\$", max_size=6), st.just("${{inputs.data}}"),
                      st.just("${{inputs.nope}}"), st.just("${{outputs.out}}"))
arg_token = st.one_of(
    st.tuples(st.sampled_from(PRS_OPTIONS), arg_value).map(lambda t: f"{t[0]} {t[1]}"),
    st.tuples(st.sampled_from(PRS_OPTIONS), arg_value).map(lambda t: f"{t[0]}={t[1]}"),
    st.sampled_from(PRS_OPTIONS), st.text(max_size=8),
)


@PARSING
@given(st.lists(arg_token, max_size=4).map(" ".join))
def test_program_arguments(tmp_path_factory, text):
    from prs_nb.engine.run import resolve_program_arguments

    base = str(tmp_path_factory.getbasetemp())
    try:
        spec = JobSpec(name="j", inputs={"data": Input(type="uri_folder")}, outputs={"out": Output()},
                       input_data="${{inputs.data}}", bindings={"data": base},
                       task=RunFunction(run=len, program_arguments=text))
        eff = spec.effective()
        argv = resolve_program_arguments(spec, base, {"out": os.path.join(base, "out")})
    except BaseException as exc:  # noqa: BLE001
        assert_clear(exc)
        assert isinstance(exc, ConfigError)
        assert "program_arguments" in str(exc) or "--" in str(exc), str(exc)
        return
    assert all(isinstance(a, str) for a in argv)
    assert eff.error_threshold >= -1 and eff.mini_batch_error_threshold >= -1
    assert 0 <= eff.allowed_failed_percent <= 100 and not math.isnan(eff.allowed_failed_percent)
    assert eff.rank_mini_batch_count >= 0
    m = re.findall(r"--error_threshold[ =](-?\d+)(?:\s|$)", text)
    if m and "--error_threshold" not in text.split(m[-1], 1)[-1]:
        assert eff.error_threshold == int(m[-1])


# ------------------------------------------------------------------------------------ environment variables
env_names = st.one_of(st.text(max_size=8), st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True))
env_values = st.one_of(st.text(max_size=10), st.integers(), st.floats(allow_nan=True), st.none(), st.binary(max_size=3),
                       st.lists(st.integers(), max_size=2), st.booleans())


@PARSING
@given(st.dictionaries(env_names, env_values, max_size=4))
def test_environment_variables_are_checked_up_front(env):
    try:
        spec = JobSpec(name="j", environment_variables=env)
    except BaseException as exc:  # noqa: BLE001
        assert_clear(exc, "environment_variables")
        assert isinstance(exc, ConfigError)
        return
    saved = dict(os.environ)
    try:
        for k, v in spec.environment_variables.items():
            os.environ[k] = v  # what the worker does: an accepted variable must be settable
            assert os.environ[k] == v
    finally:
        os.environ.clear()
        os.environ.update(saved)


def echo_env(mini_batch):
    return [f"{k}={os.environ.get(k)!r}" for k in sorted(os.environ) if k.startswith("PRSX_")]


@JOBS
@given(st.dictionaries(st.from_regex(r"PRSX_[A-Z0-9_]{1,5}", fullmatch=True),
                       st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                               max_size=12), min_size=1, max_size=3))
def test_environment_variables_reach_run(tmp_path_factory, env):
    base = tmp_path_factory.mktemp("env")
    (base / "in").mkdir()
    (base / "in" / "a.txt").write_text("x")
    job = parallel_run_function(name="env", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                task=RunFunction(run=echo_env, append_row_to="${{outputs.o}}"),
                                environment_variables=env, backend="inline", runs_root=str(base / "runs"))
    res = job(d=str(base / "in")).run(progress=False)
    assert res.status == "Completed", res.summary()
    # repr() keeps each value on one output line whatever characters it holds
    assert set(res.read_lines()) == {f"{k}={v!r}" for k, v in env.items()}


def test_environment_variables_with_odd_text_reach_worker_processes(workdir):
    env = {"PRSX_SPACE": "a b", "PRSX_EQ": "x=y", "PRSX_UNI": "é€😀", "PRSX_EMPTY": "", "PRSX_NUM": 3}
    (workdir / "in").mkdir()
    (workdir / "in" / "a.txt").write_text("x")
    job = parallel_run_function(name="env", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                task=RunFunction(run=echo_env, append_row_to="${{outputs.o}}"),
                                environment_variables=env, backend="local", max_concurrency_per_instance=1)
    res = job(d="in").run(progress=False)
    assert res.status == "Completed", res.summary()
    assert set(res.read_lines()) == {f"{k}={str(v)!r}" for k, v in env.items()}


@pytest.mark.parametrize("env, word", [
    ({"A=B": "1"}, "'='"), ({"": "1"}, "non-empty"), ({"A": "x\0y"}, "NUL"), ({"A\nB": "1"}, "control"),
    ({"A": "\ud800"}, "surrogate"), ({"A": None}, "string or a number"), ({"A": [1]}, "string or a number"),
    (["A"], "dict"), ("A=1", "dict"),
])
def test_environment_variable_errors_name_the_problem(env, word):
    with pytest.raises(ConfigError) as info:
        parallel_run_function(name="j", task=RunFunction(run=len), environment_variables=env)
    assert_clear(info.value, "environment_variables", word)


# ------------------------------------------------------------------------------------ entry code and results
def _files(workdir, n=3):
    d = workdir / "in"
    d.mkdir(exist_ok=True)
    for i in range(n):
        (d / f"{i}.txt").write_text(str(i))
    return str(d)


LOCK = threading.Lock()


def run_with_lock(mini_batch):
    with LOCK:
        return mini_batch


def test_unpicklable_function_is_a_config_error_on_the_process_backend(workdir):
    captured = threading.Lock()
    job = parallel_run_function(name="unp", inputs={"d": Input(type="uri_folder")},
                                task=RunFunction(run=lambda mb: (captured, mb)[1]), backend="local")
    with pytest.raises(ConfigError) as info:
        job(d=_files(workdir)).run(progress=False)
    assert_clear(info.value, "cloudpickle", "lock", "init()")
    assert not (workdir / "prs_runs").exists()  # rejected before a run directory is made


def test_unpicklable_init_is_a_config_error(workdir):
    gen = (i for i in range(3))
    job = parallel_run_function(name="unp", inputs={"d": Input(type="uri_folder")}, backend="local",
                                task=RunFunction(run=len, init=lambda: next(gen)))
    with pytest.raises(ConfigError) as info:
        job(d=_files(workdir)).run(progress=False)
    assert_clear(info.value, "RunFunction", "generator")


def test_unpicklable_function_runs_inline(workdir):
    captured = threading.Lock()
    job = parallel_run_function(name="unp", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                task=RunFunction(run=lambda mb: (captured, mb)[1], append_row_to="${{outputs.o}}"),
                                backend="inline")
    res = job(d=_files(workdir)).run(progress=False)
    assert res.status == "Completed" and len(res.read_lines()) == 3


class _Unloadable:
    """Pickles fine, fails to unpickle (like an object whose class only exists in the driver)."""

    def __reduce__(self):
        return (_refuse, ("this object cannot be rebuilt in a worker",))


def _refuse(message):
    raise RuntimeError(message)


def test_function_that_fails_to_unpickle_in_the_worker_fails_the_job_clearly(workdir):
    thing = _Unloadable()
    job = parallel_run_function(name="unl", inputs={"d": Input(type="uri_folder")}, backend="local",
                                max_concurrency_per_instance=1, task=RunFunction(run=lambda mb: (thing, mb)[1]))
    res = job(d=_files(workdir)).run(progress=False)
    assert res.status == "Failed" and res.limit == "init", res.summary()
    assert "cannot be rebuilt in a worker" in res.reason
    with pytest.raises(PrsError) as info:
        res.raise_for_status()
    assert_clear(info.value, "init()")


class NoStr:
    def __str__(self):
        raise ValueError("no text for you")


class BadExc(Exception):
    def __init__(self):
        super().__init__(threading.Lock())

    def __str__(self):
        raise RuntimeError("broken __str__")


def return_unprintable(mini_batch):
    return [NoStr() for _ in mini_batch]


def return_unpicklable(mini_batch):
    return [threading.Lock() for _ in mini_batch]


def frame_unpicklable(mini_batch):
    return pd.DataFrame({"lock": [threading.Lock() for _ in mini_batch], "n": range(len(mini_batch))})


def raise_unpicklable(mini_batch):
    raise BadExc()


@pytest.mark.parametrize("backend", ["inline", "local"])
@pytest.mark.parametrize("fn, status, failed, word", [
    (return_unpicklable, "Completed", 0, "_thread.lock"),  # str(item) is what is written (8.1)
    (frame_unpicklable, "Completed", 0, "_thread.lock"),
    (return_unprintable, "Completed", 1, "no text for you"),  # str() fails: the attempt fails, retried
    (raise_unpicklable, "Completed", 1, "BadExc"),
])
def test_results_that_cannot_be_pickled_or_printed(workdir, backend, fn, status, failed, word):
    job = parallel_run_function(name="res", inputs={"d": Input(type="uri_folder")}, outputs={"o": Output()},
                                mini_batch_size="3", max_concurrency_per_instance=1, backend=backend,
                                retry_settings={"max_retries": 1},
                                task=RunFunction(run=fn, append_row_to="${{outputs.o}}"))
    res = job(d=_files(workdir)).run(progress=False)
    assert (res.status, res.counts["failed"]) == (status, failed), res.summary()
    if failed:
        assert res.counts["failed_attempts"] == 2
        text = " ".join(res.errors["message"].astype(str)) + " ".join(res.errors["error_type"].astype(str))
        assert word in text, res.errors.to_string()
    else:
        assert len(res.read_lines()) == 3 and word in res.read_lines()[0]


def test_dataframe_input_that_cannot_be_pickled(workdir):
    df = pd.DataFrame({"a": [1, 2], "lock": [threading.Lock(), threading.Lock()]})
    job = parallel_run_function(name="df", inputs={"t": Input(type="mltable")}, backend="local",
                                max_concurrency_per_instance=1, task=RunFunction(run=lambda mb: list(mb.a)))
    with pytest.raises(InputDataError) as info:
        job(t=df).run(progress=False)
    assert_clear(info.value, "mini-batch", "pickle", "backend='inline'")
    res = job(t=df).run(progress=False, backend="inline")
    assert res.status == "Completed" and res.counts["items_succeeded"] == 2


# ------------------------------------------------------------------------------------ missing things
@pytest.mark.parametrize("setup, exc_type, words", [
    (dict(task=RunFunction(code="nope", entry_script="score.py")), EntryScriptError, ["nope", "does not exist"]),
    (dict(task=RunFunction(code=".", entry_script="missing.py")), EntryScriptError, ["missing.py", "not found"]),
    (dict(task=RunFunction(run=len), bind="no/such/folder"), InputDataError, ["no/such/folder", "does not exist"]),
    (dict(task=RunFunction(run=len), bind="*.nomatch"), InputDataError, ["matched no files"]),
    (dict(task=RunFunction(run=len), bind=""), ConfigError, ["path string"]),
])
def test_missing_code_and_data(workdir, setup, exc_type, words):
    setup = dict(setup)
    bind = setup.pop("bind", "in")
    _files(workdir)
    job = parallel_run_function(name="m", inputs={"d": Input(type="uri_folder")}, backend="inline", **setup)
    with pytest.raises(exc_type) as info:
        job(d=bind).run(progress=False)
    assert_clear(info.value, *words)


# ------------------------------------------------------------------------------------ parallel_run_step.settings.json
CSV_ARGS = ["sep", "index", "header", "na_rep", "float_format", "quoting", "quotechar", "lineterminator",
            "date_format", "doublequote", "escapechar", "decimal", "encoding", "not_an_argument"]
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                                     st.text(max_size=3), st.sampled_from([",", ";", "\t", "%.2f", "utf-8", "|"])),
                           lambda c: st.lists(c, max_size=2), max_leaves=3)
settings_docs = st.one_of(
    st.dictionaries(st.sampled_from(CSV_ARGS), json_values, max_size=3).map(
        lambda kw: {"append_row": {"pandas.DataFrame.to_csv": kw}}),
    json_values, st.dictionaries(st.sampled_from(["append_row", "x"]), json_values, max_size=2),
)


@PARSING
@given(settings_docs)
def test_append_row_settings_json(tmp_path_factory, doc):
    """A bad settings file is a ConfigError before the job starts, not a failure of every mini-batch."""
    import json

    from prs_nb.outputs import RowFormatter, load_settings_json

    code = tmp_path_factory.mktemp("settings")
    (code / "parallel_run_step.settings.json").write_text(json.dumps(doc))
    try:
        kwargs = load_settings_json(str(code))
    except BaseException as exc:  # noqa: BLE001
        assert_clear(exc, "parallel_run_step.settings.json")
        assert isinstance(exc, ConfigError)
        return
    count, text, _header = RowFormatter(True, False, kwargs).format(pd.DataFrame({"a": [1.5, 2.0], "b": ["x", "y"]}))
    assert count == 2 and isinstance(text, str)


# ------------------------------------------------------------------------------------ bound values
bind_values = st.one_of(weird, st.sampled_from(["in", "in/*.txt", "file://in", "azureml://x/y", "5", "0.5", "true"]),
                        st.builds(lambda p: Input(type="uri_folder", path=p), st.one_of(st.just("in"), weird)),
                        st.just(Output(path="out2")))


@settings(max_examples=25)
@given(st.sampled_from(["d", "n", "x", "flag", "o"]), bind_values)
def test_bound_values(tmp_path_factory, key, value):
    """Binding anything to any port: a run (the literal reaches sys.argv) or a ConfigError/InputDataError."""
    base = tmp_path_factory.mktemp("bind")
    (base / "in").mkdir()
    (base / "in" / "a.txt").write_text("x")
    job = parallel_run_function(
        name="bind", inputs={"d": Input(type="uri_folder"), "n": Input(type="integer", default=1),
                             "x": Input(type="number", default=0.5), "flag": Input(type="boolean", default=True)},
        outputs={"o": Output()}, backend="inline", runs_root=str(base / "runs"),
        task=RunFunction(run=lambda mb: mb, append_row_to="${{outputs.o}}",
                         program_arguments="--n ${{inputs.n}} --x ${{inputs.x}} --flag ${{inputs.flag}}"))
    try:
        res = job(d=str(base / "in"))(**{key: value}).run(progress=False, base_dir=str(base))
    except BaseException as exc:  # noqa: BLE001
        assert_clear(exc)
        assert isinstance(exc, (ConfigError, InputDataError))
        return
    assert res.status == "Completed", res.summary()
