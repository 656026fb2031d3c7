"""Azure ML YAML in and out: export (``job.to_yaml``), import (``prs_nb.load``), local pipelines.

``prs_nb/yaml_io.py`` keeps the run record (``<run dir>/job.yml``) and v1's helpers; this package is
the Azure-compatible surface: :mod:`export`, :mod:`entry_writer` (functions -> entry script),
:mod:`conda` (environment file), :mod:`load` (components) and :mod:`pipeline_load` (pipeline jobs).
"""

from __future__ import annotations

from prs_nb.yamlio.export import job_to_yaml
from prs_nb.yamlio.load import load
from prs_nb.yamlio.problems import YamlError, YamlKeyWarning

__all__ = ["job_to_yaml", "load", "YamlError", "YamlKeyWarning"]
