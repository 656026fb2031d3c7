"""JobForm: a widget form generated from JobSpec's fields, grouped as the docs table groups them.

::

    form = JobForm()            # or JobForm.from_job(job) / JobForm.from_yaml("job.yml")
    form.display()              # data | batching | concurrency | errors and retries | output | logging | task
    form.to_spec()              # -> JobSpec (ConfigError when a value is invalid)

Each field's widget kind, default and help text come from JobSpec (type, default, ``metadata``);
``retry_settings`` and ``resources`` are shown as their sub-fields. Every change validates the
whole spec: the message appears next to the field it is about, and Run is disabled until the job
is valid. The preview line counts the mini-batches the input makes. Run starts the job in a
background thread (the kernel stays free, Stop works) with the live display below the form.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from typing import Any

from prs_nb.api import ParallelJob
from prs_nb.errors import PrsError
from prs_nb.results import RunResult
from prs_nb.spec import (
    BACKENDS,
    LOGGING_LEVELS,
    Input,
    JobSpec,
    Output,
    Resources,
    RetrySettings,
    RunFunction,
    spec_fields,
)

#: Group titles, in display order (JobSpec metadata group -> title).
GROUPS = [("job", "job"), ("data", "data"), ("batching", "batching"), ("concurrency", "concurrency"),
          ("errors", "errors and retries"), ("output", "output"), ("logging", "logging"), ("task", "task")]
#: JobSpec fields the form does not show: ports and bindings are replaced by the data/output fields
#: below, the rest is recorded-only Azure metadata that a local job does not need.
_SKIP = {"inputs", "outputs", "bindings", "output_bindings", "input_data", "task", "tags", "properties",
         "identity", "api", "output_action", "compute", "experiment_name", "version", "resources",
         "retry_settings"}
_CHOICES = {"logging_level": LOGGING_LEVELS, "backend": BACKENDS}
_INPUT_TYPES = ("uri_folder", "uri_file", "mltable")


@dataclasses.dataclass(frozen=True)
class FormField:
    """One form row: ``key`` (JobSpec field, ``retry_settings.timeout`` or a form-only key), its group,
    kind (text, int, opt_int, float, bool, choice, lines), default, help text, choices."""

    key: str
    group: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()


def _kind_of(f: dataclasses.Field[Any], default: Any) -> str:
    if f.name in _CHOICES:
        return "choice"
    text = str(f.type)
    if "bool" in text:
        return "bool"
    if "float" in text:
        return "float"
    if text.startswith("int | None"):
        return "opt_int"
    if text.startswith("int"):
        return "int"
    if "Mapping[str, str]" in text:
        return "lines"
    return "text"


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def form_fields() -> list[FormField]:
    """The form's rows, generated from JobSpec's fields (and RetrySettings / Resources / RunFunction)."""
    rows: list[FormField] = []
    meta = {f.name: f for f in spec_fields()}
    rows.append(FormField("input_path", "data", "text", "", "Input data: a file, folder or glob (bound to "
                          "input_data = ${{inputs.data}}). " + meta["input_data"].metadata["help"]))
    rows.append(FormField("input_type", "data", "choice", "uri_folder",
                          "Input type: uri_folder / uri_file (files) or mltable (table rows).", _INPUT_TYPES))
    for f in spec_fields():
        group = f.metadata.get("group", "job")
        if f.name in _SKIP:
            if f.name == "resources":
                rows.append(FormField("resources.instance_count", group, "int", Resources().instance_count,
                                      f.metadata["help"]))
            elif f.name == "retry_settings":
                rows.append(FormField("retry_settings.max_retries", group, "int", RetrySettings().max_retries,
                                      "Retries after the first attempt (default 2)."))
                rows.append(FormField("retry_settings.timeout", group, "float", float(RetrySettings().timeout),
                                      "Seconds allowed for one run() call (default 60)."))
            continue
        default = _default_of(f)
        if f.name == "name":
            default = "parallel_job"
        if f.name == "partition_keys":
            rows.append(FormField(f.name, group, "text", "", f.metadata["help"] + " Comma-separated."))
            continue
        kind = _kind_of(f, default)
        if kind == "lines":
            default = ""
        rows.append(FormField(f.name, group, kind, default, f.metadata["help"], tuple(_CHOICES.get(f.name, ()))))
    rows.append(FormField("append_row", "output", "bool", False,
                          "Aggregate run() results into one file (append_row_to = ${{outputs.results}}); "
                          "off = summary_only."))
    rows.append(FormField("output_path", "output", "text", "", "Where the append_row output goes: a file, or a "
                          "folder for parallel_run_step.txt (default: inside the run directory)."))
    task_help = {f.name: f for f in dataclasses.fields(RunFunction)}
    for key, text in (("code", "Code folder holding the entry script (Azure's task.code)."),
                      ("entry_script", "Entry script file in the code folder, e.g. score.py."),
                      ("program_arguments", "One string for the entry's sys.argv, e.g. '--threshold 0.5'.")):
        assert key in task_help  # RunFunction fields; a rename must update the form
        rows.append(FormField(f"task.{key}", "task", "text", "", text))
    return rows


class JobForm:
    """The job form (see the module docstring). ``functions`` (init/run/shutdown callables) are used
    as the task when no entry script is given, as a %%parallel_run cell's are."""

    def __init__(self, functions: dict[str, Callable[..., Any]] | None = None, source: str | None = None,
                 base_dir: str | None = None) -> None:
        import ipywidgets as w

        self.functions = dict(functions or {})
        self.source = source
        # Ports the form has no fields for, kept as they were loaded so that Load YAML -> Export YAML keeps
        # them: the data input's and the append_row output's names, other inputs (literals for
        # program_arguments, models ...) with their bound values, and other outputs with their paths.
        self.data_input = "data"
        self.results_output = "results"
        self.other_inputs: dict[str, Input] = {}
        self.other_bindings: dict[str, Any] = {}
        self.other_outputs: dict[str, Output] = {}
        self.other_output_bindings: dict[str, str] = {}
        self.base_dir = base_dir
        self.fields = form_fields()
        self.widgets: dict[str, Any] = {}
        self.errors: dict[str, Any] = {}
        self.result: RunResult | None = None
        self.progress: Any = None
        self._thread: threading.Thread | None = None
        self._suspend = False
        rows_by_group: dict[str, list[Any]] = {}
        for fld in self.fields:
            widget = self._make_widget(w, fld)
            widget.add_class(f"prs-field-{fld.key.replace('.', '-')}")
            err = w.HTML("", layout=w.Layout(margin="0 0 0 8px"))
            err.add_class("prs-field-error")
            self.widgets[fld.key] = widget
            self.errors[fld.key] = err
            widget.observe(self._on_change, names="value")
            rows_by_group.setdefault(fld.group, []).append(w.HBox([widget, err]))
        sections = []
        for group, title in GROUPS:
            if group in rows_by_group:
                sections.append(w.HTML(f"<h4 style='margin:8px 0 2px'>{title}</h4>"))
                sections.extend(rows_by_group[group])
        self.message = w.HTML()
        self.message.add_class("prs-form-message")
        self.preview = w.HTML()
        self.preview.add_class("prs-form-preview")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.export_button = w.Button(description="Export YAML", icon="download")
        self.load_button = w.Button(description="Load YAML", icon="upload")
        self.python_button = w.ToggleButton(description="Show as Python", icon="code")
        self.yaml_path = w.Text(value="job.yml", description="YAML file", style={"description_width": "initial"})
        self.yaml_path.add_class("prs-yaml-path")
        self.python_code = w.Textarea(layout=w.Layout(width="100%", height="220px", display="none"))
        self.python_code.add_class("prs-python-code")
        self.run_area = w.VBox()
        self.run_area.add_class("prs-run-area")
        self.result_html = w.HTML()
        self.result_html.add_class("prs-result-html")
        self.run_button.on_click(lambda _b: self.run())
        self.export_button.on_click(lambda _b: self._guard(lambda: self.export_yaml(self.yaml_path.value)))
        self.load_button.on_click(lambda _b: self._guard(lambda: self.load_yaml(self.yaml_path.value)))
        self.python_button.observe(self._on_python_toggle, names="value")
        buttons = w.HBox([self.run_button, self.export_button, self.load_button, self.yaml_path,
                          self.python_button])
        self.widget = w.VBox([w.HTML("<h3 style='margin:0'>prs_nb job</h3>"), *sections, self.preview,
                              self.message, buttons, self.python_code, self.run_area, self.result_html])
        self.widget.add_class("prs-job-form")
        self.validate()

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _make_widget(w: Any, fld: FormField) -> Any:
        common = {"description": fld.key, "tooltip": fld.help,
                  "style": {"description_width": "230px"}, "layout": w.Layout(width="520px")}
        if fld.kind == "bool":
            return w.Checkbox(value=bool(fld.default), indent=True, **common)
        if fld.kind == "choice":
            return w.Dropdown(options=list(fld.choices), value=fld.default, **common)
        if fld.kind == "int":
            return w.IntText(value=int(fld.default), **common)
        if fld.kind == "float":
            return w.FloatText(value=float(fld.default), **common)
        if fld.kind == "lines":
            return w.Textarea(value="", placeholder="KEY=VALUE, one per line", **common)
        placeholder = "(default)" if fld.kind == "opt_int" or fld.default in (None, "") else ""
        value = "" if fld.default is None else str(fld.default)
        return w.Text(value=value, placeholder=placeholder, continuous_update=False, **common)

    @classmethod
    def from_job(cls, job: ParallelJob | JobSpec, **kwargs: Any) -> JobForm:
        """A form pre-filled with ``job``'s settings (and its functions, if any)."""
        spec = job.spec if isinstance(job, ParallelJob) else job
        t = spec.task
        funcs = {k: v for k, v in (("init", t.init), ("run", t.run), ("shutdown", t.shutdown)) if v is not None}
        form = cls(functions=funcs, source=t.source, **kwargs)
        form.set_spec(spec)
        return form

    @classmethod
    def from_yaml(cls, path: str, **kwargs: Any) -> JobForm:
        form = cls(**kwargs)
        form.load_yaml(path)
        return form

    def display(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ values <-> spec
    def values(self) -> dict[str, Any]:
        """The raw widget values, by field key."""
        return {k: w.value for k, w in self.widgets.items()}

    def set_values(self, **values: Any) -> None:
        """Set several fields at once (keys as in :meth:`values`; ``retry_settings.timeout`` may be
        given as ``retry_settings__timeout``), validating once at the end."""
        self._suspend = True
        try:
            for key, value in values.items():
                key = key.replace("__", ".")
                if key not in self.widgets:
                    raise PrsError(f"JobForm has no field {key!r}; fields: {', '.join(self.widgets)}")
                self.widgets[key].value = value
        finally:
            self._suspend = False
        self.validate()

    def to_spec(self) -> JobSpec:
        """The JobSpec the form describes (raises ConfigError for an invalid value)."""
        v = self.values()
        kw: dict[str, Any] = {}
        for fld in self.fields:
            if "." in fld.key or fld.key in ("input_path", "input_type", "append_row", "output_path"):
                continue
            raw = v[fld.key]
            if fld.kind == "opt_int":
                text = str(raw).strip()
                if not text:
                    raw = None
                else:
                    try:
                        raw = int(text)
                    except ValueError:
                        raise PrsError(f"{fld.key} must be a whole number or empty for the default "
                                       f"(got {text!r})") from None
            elif fld.kind == "text":
                raw = str(raw).strip() or None
            elif fld.kind == "lines":
                raw = _parse_lines(str(raw), fld.key)
            if fld.key == "partition_keys" and raw is not None:
                raw = tuple(k.strip() for k in raw.split(",") if k.strip()) or None
            if fld.key == "name" and raw is None:
                raw = ""
            if raw is None and fld.default not in (None, "") and fld.kind == "text":
                raw = fld.default
            kw[fld.key] = raw
        in_type = v["input_type"]
        data, results = self.data_input, self.results_output
        kw["inputs"] = {data: Input(type=in_type), **self.other_inputs}
        kw["input_data"] = "${{inputs." + data + "}}"
        path = v["input_path"].strip()
        kw["bindings"] = {**({data: Input(type=in_type, path=path)} if path else {}), **self.other_bindings}
        kw["outputs"] = dict(self.other_outputs)
        kw["output_bindings"] = dict(self.other_output_bindings)
        if v["append_row"]:
            out = v["output_path"].strip()
            is_file = bool(out) and os.path.splitext(out.rstrip("/"))[1] != "" and not out.endswith("/")
            kw["outputs"][results] = Output(type="uri_file" if is_file else "uri_folder")
            if out:
                kw["output_bindings"][results] = out
        kw["resources"] = Resources(instance_count=v["resources.instance_count"])
        kw["retry_settings"] = RetrySettings(max_retries=v["retry_settings.max_retries"],
                                             timeout=_whole(v["retry_settings.timeout"]))
        script = v["task.entry_script"].strip() or None
        funcs = {} if script else self.functions
        kw["task"] = RunFunction(code=v["task.code"].strip() or None, entry_script=script,
                                 program_arguments=v["task.program_arguments"].strip() or None,
                                 append_row_to="${{outputs." + results + "}}" if v["append_row"] else None,
                                 init=funcs.get("init"), run=funcs.get("run"), shutdown=funcs.get("shutdown"),
                                 source=self.source if funcs else None)
        return JobSpec(**kw)

    def set_spec(self, spec: JobSpec) -> None:
        """Fill the form from ``spec`` (the inverse of :meth:`to_spec`)."""
        values: dict[str, Any] = {}
        for fld in self.fields:
            if "." in fld.key or fld.key in ("input_path", "input_type", "append_row", "output_path"):
                continue
            raw = getattr(spec, fld.key)
            if fld.kind == "opt_int" or fld.kind == "text":
                raw = "" if raw is None else (",".join(raw) if fld.key == "partition_keys" else str(raw))
            elif fld.kind == "lines":
                raw = "\n".join(f"{k}={val}" for k, val in raw.items())
            elif fld.kind == "float":
                raw = float(raw)
            values[fld.key] = raw
        name = spec.input_data_name
        port = spec.inputs.get(name) if name else None
        bound = spec.bindings.get(name) if name else None
        if isinstance(bound, Input):
            bound = bound.path
        if bound is None and port is not None:
            bound = port.path
        values["input_path"] = ("" if bound is None or not isinstance(bound, (str, os.PathLike))
                                else self._relative(os.fspath(bound)))
        values["input_type"] = port.type if port is not None and port.type in _INPUT_TYPES else "uri_folder"
        out = spec.append_row_output
        values["append_row"] = out is not None
        self.data_input = name or "data"
        self.results_output = out or "results"
        self.other_inputs = {k: p for k, p in spec.inputs.items() if k != name}
        self.other_bindings = {k: b for k, b in spec.bindings.items() if k != name}
        self.other_outputs = {k: o for k, o in spec.outputs.items() if k != out}
        self.other_output_bindings = {k: b for k, b in spec.output_bindings.items() if k != out}
        values["output_path"] = self._relative(spec.output_bindings.get(out) or spec.outputs[out].path or "") if out else ""
        values["resources.instance_count"] = spec.resources.instance_count
        values["retry_settings.max_retries"] = spec.retry_settings.max_retries
        values["retry_settings.timeout"] = float(spec.retry_settings.timeout)
        values["task.code"] = self._relative(spec.task.code or "")
        values["task.entry_script"] = spec.task.entry_script or ""
        values["task.program_arguments"] = spec.task.program_arguments or ""
        if spec.task.uses_functions:
            self.functions = {k: v for k, v in (("init", spec.task.init), ("run", spec.task.run),
                                                ("shutdown", spec.task.shutdown)) if v is not None}
            self.source = spec.task.source
        self.set_values(**values)

    def _relative(self, path: str) -> str:
        """A path under the working folder as a relative path (YAML loading makes paths absolute)."""
        base = os.path.abspath(self.base_dir or os.getcwd())
        if path and os.path.isabs(path) and "://" not in path:
            rel = os.path.relpath(path, base)
            if not rel.startswith(".."):
                return rel
        return path

    def job(self) -> ParallelJob:
        return ParallelJob(self.to_spec())

    # ------------------------------------------------------------------ validation and preview
    def _on_change(self, _change: Any) -> None:
        if not self._suspend:
            self.validate()

    def validate(self) -> JobSpec | None:
        """Check the form; show the message beside the field it is about. Returns the spec or None."""
        for err in self.errors.values():
            err.value = ""
        self.message.value = ""
        try:
            spec = self.to_spec()
        except PrsError as exc:
            self._show_error(str(exc))
            self.preview.value = ""
            return None
        if self.update_preview(spec) == -1:  # the input cannot be listed: the message is on input_path
            self.run_button.disabled = True
            return None
        if spec.task.run is None and not spec.task.entry_script:
            self._show_error("task.entry_script is empty: give an entry script (and its code folder), or open "
                             "the form from a %%parallel_run cell that defines run()")
            return None
        self.run_button.disabled = self._thread is not None and self._thread.is_alive()
        return spec

    def _show_error(self, text: str) -> None:
        import html

        key = self._field_for(text)
        if key is not None:
            self.errors[key].value = f"<span style='color:#c62828'>{html.escape(text)}</span>"
        self.message.value = f"<span style='color:#c62828'>&#9888; {html.escape(text)}</span>"
        self.run_button.disabled = True

    def _field_for(self, message: str) -> str | None:
        best: tuple[int, str] | None = None
        for key in self.widgets:
            for name in (key, key.split(".")[-1]):
                pos = message.find(name)
                if pos >= 0 and (best is None or pos < best[0] or (pos == best[0] and len(key) > len(best[1]))):
                    best = (pos, key)
        return best[1] if best else None

    def update_preview(self, spec: JobSpec, limit: int = 100_000) -> int | None:
        """Count the mini-batches the input makes (up to ``limit``) and show it; None if no input is
        set, -1 if the input cannot be listed (the message is shown beside input_path)."""
        if not self.widgets["input_path"].value.strip():
            self.preview.value = "<i>set an input path to see how many mini-batches it makes</i>"
            return None
        from prs_nb.data import plan_input

        try:
            plan = plan_input(spec, spec.effective(), self.base_dir or os.getcwd(), count_rows=False)
            n = 0
            items = 0
            for mb in plan:
                n += 1
                items += mb.items or 0
                if n >= limit:
                    break
        except PrsError as exc:
            import html

            self.errors["input_path"].value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            self.preview.value = ""
            return -1
        more = "+" if n >= limit else ""
        self.preview.value = (f"<span class='prs-preview-count'>The input makes <b>{n}{more}</b> mini-batch(es)"
                              + (f" of {items} items" if items else "") + "</span>")
        return n

    # ------------------------------------------------------------------ actions
    def _guard(self, action: Callable[[], Any]) -> None:
        import html

        try:
            action()
        except (PrsError, OSError) as exc:
            self.message.value = f"<span style='color:#c62828'>&#9888; {html.escape(str(exc))}</span>"

    def run(self, *, wait: bool = False) -> None:
        """Start the job in a background thread with the live display under the form.

        ``wait=True`` blocks until it ends. The RunResult lands in ``self.result``."""
        from prs_nb.jupyter.progress import NotebookProgress

        spec = self.validate()
        if spec is None or (self._thread is not None and self._thread.is_alive()):
            return
        self.result = None
        self.result_html.value = ""
        self.progress = NotebookProgress(spec.name, display=False)
        self.run_area.children = [self.progress.widget]
        self.run_button.disabled = True

        def work() -> None:
            try:
                self.result = ParallelJob(spec).run(progress=self.progress, base_dir=self.base_dir)
                self.result_html.value = self.result._repr_html_()
            except PrsError as exc:  # rejected before it started (e.g. input vanished)
                import html

                self.message.value = f"<span style='color:#c62828'>&#9888; {html.escape(str(exc))}</span>"
            finally:
                self.run_button.disabled = False

        self._thread = threading.Thread(target=work, name=f"prs_nb-form-{spec.name}", daemon=True)
        self._thread.start()
        if wait:
            self.wait()

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Block until the running job ends (or ``timeout`` seconds); returns its RunResult."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def stop(self) -> None:
        """What the Stop button does: cancel the running job."""
        if self.progress is not None:
            self.progress.cancel("stopped from the job form")

    def export_yaml(self, path: str) -> str:
        """Write the job as Azure ML YAML at ``path`` with ``job.to_yaml`` (a pipeline job when the input
        is bound, else a parallel component); returns the text."""
        text = self.job().to_yaml(path, base_dir=self.base_dir)
        self.message.value = f"<span class='prs-exported' style='color:#2e7d32'>exported to {path}</span>"
        return text

    def load_yaml(self, path: str) -> None:
        """Fill the form from an Azure ML YAML file (``prs_nb.load``): a parallel component, or a
        pipeline job with one parallel node (what Export YAML writes)."""
        from prs_nb.pipeline import PipelineJob
        from prs_nb.yamlio.load import load

        job = load(path)
        if isinstance(job, PipelineJob):
            job = job.to_parallel_job()
        self.set_spec(job.spec)
        self.message.value = f"<span style='color:#2e7d32'>loaded {path}</span>"

    def _on_python_toggle(self, change: Any) -> None:
        if change["new"]:
            try:
                self.python_code.value = self.python()
            except PrsError as exc:
                self.python_code.value = f"# the form is not valid yet: {exc}"
            self.python_code.layout.display = ""
        else:
            self.python_code.layout.display = "none"

    def python(self) -> str:
        """The equivalent ``parallel_run_function(...)`` call, as Python source."""
        spec = self.to_spec()
        return spec_to_python(spec)


def _whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def _parse_lines(text: str, key: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        k, eq, val = line.partition("=")
        if not eq or not k.strip():
            raise PrsError(f"{key}: each line must be KEY=VALUE (got {line.strip()!r})")
        out[k.strip()] = val.strip()
    return out


def spec_to_python(spec: JobSpec) -> str:
    """Python source that builds the same job with ``parallel_run_function`` (non-default settings only)."""
    t = spec.task
    args: list[str] = [f"name={spec.name!r}"]
    for key in ("display_name", "description"):
        if getattr(spec, key):
            args.append(f"{key}={getattr(spec, key)!r}")
    args.append("inputs={" + ", ".join(
        f"{k!r}: Input(type={p.type!r}" + (f", default={p.default!r}" if p.default is not None else "") + ")"
        for k, p in spec.inputs.items()) + "}")
    if spec.outputs:
        args.append("outputs={" + ", ".join(f"{k!r}: Output(type={p.type!r})" for k, p in spec.outputs.items()) + "}")
    if spec.input_data:
        args.append(f"input_data={spec.input_data!r}")
    defaults = JobSpec(name="x")
    for key in ("mini_batch_size", "max_concurrency_per_instance", "error_threshold", "mini_batch_error_threshold",
                "logging_level", "allowed_failed_percent", "append_row_file_name", "ordered_output", "backend",
                "runs_root", "is_deterministic"):
        value = getattr(spec, key)
        if value != getattr(defaults, key):
            args.append(f"{key}={value!r}")
    if spec.partition_keys:
        args.append(f"partition_keys={list(spec.partition_keys)!r}")
    if spec.resources.instance_count != 1:
        args.append(f"instance_count={spec.resources.instance_count!r}")
    rs = spec.retry_settings
    if rs != RetrySettings():
        args.append(f"retry_settings=dict(max_retries={rs.max_retries!r}, timeout={rs.timeout!r})")
    if spec.environment_variables:
        args.append(f"environment_variables={dict(spec.environment_variables)!r}")
    task_args = []
    if t.code:
        task_args.append(f"code={t.code!r}")
    if t.entry_script:
        task_args.append(f"entry_script={t.entry_script!r}")
    for fn in ("init", "run", "shutdown"):
        if getattr(t, fn) is not None:
            task_args.append(f"{fn}={fn}")
    if t.program_arguments:
        task_args.append(f"program_arguments={t.program_arguments!r}")
    if t.append_row_to:
        task_args.append(f"append_row_to={t.append_row_to!r}")
    args.append(f"task=RunFunction({', '.join(task_args)})")
    lines = ["from prs_nb import Input, Output, RunFunction, parallel_run_function", ""]
    if t.uses_functions:
        lines.insert(1, "# init / run / shutdown: the functions of your %%parallel_run cell")
    lines.append("job = parallel_run_function(")
    lines.extend(f"    {a}," for a in args)
    lines.append(")")
    binds = []
    for k, v in spec.bindings.items():
        path = v.path if isinstance(v, Input) else v
        if isinstance(path, (str, os.PathLike)):
            binds.append(f"{k}=Input(type={spec.inputs[k].type!r}, path={os.fspath(path)!r})")
    for k, v in spec.output_bindings.items():
        binds.append(f"{k}=Output(type={spec.outputs[k].type!r}, path={v!r})")
    lines.append(f"result = job({', '.join(binds)}).run()")
    return "\n".join(lines) + "\n"
