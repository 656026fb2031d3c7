"""Fixtures for the data layer tests: build a one-input JobSpec and plan it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prs_nb.data import InputPlan, plan_input
from prs_nb.spec import Input, JobSpec, RunFunction


def make_spec(value: Any, *, type: str = "uri_folder", size: str | None = None, keys: list[str] | None = None,
              args: str | None = None, declare: bool = True) -> JobSpec:
    return JobSpec(
        name="t",
        inputs={"data": Input(type=type)} if declare else {},
        input_data="${{inputs.data}}",
        bindings={"data": value},
        mini_batch_size=size,
        partition_keys=keys,
        task=RunFunction(program_arguments=args),
    )


@pytest.fixture
def spec_of() -> Callable[..., JobSpec]:
    """spec_of(value, type=..., size=..., keys=..., args=...) -> a JobSpec splitting ``value``."""
    return make_spec


@pytest.fixture
def plan_of(tmp_path: Path) -> Callable[..., InputPlan]:
    """plan_of(value, type=..., size=..., keys=...) -> the InputPlan, relative paths under tmp_path."""

    def make(value: Any, *, base_dir: Path | None = None, **kw: Any) -> InputPlan:
        spec = make_spec(value, **kw)
        return plan_input(spec, spec.effective(), base_dir=str(base_dir or tmp_path))

    return make
