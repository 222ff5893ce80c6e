"""A sweep's spec: the base config, the method, the metric and the parameters, and the jobs they expand to.

The spec follows the W&B sweep format (see :mod:`cifar_scratch.sweeps`). Jobs of a grid or random
sweep are fixed by its spec: the same spec always gives the same jobs, including random samples.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cifar_scratch.config import build_config, format_error, read_yaml_mapping
from cifar_scratch.errors import ConfigError

#: Metrics a sweep can rank jobs by: keys of a run's metrics.json.
METRICS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "test_accuracy_tta",
    "test_loss_tta",
    "test_macro_f1",
    "test_macro_f1_tta",
    "train_accuracy",
    "train_loss",
    "best_value",
)
#: Columns of results.csv after the swept parameters.
RESULT_COLUMNS = ("best_epoch", "val_accuracy", "test_accuracy", "test_accuracy_tta", "train_time_s")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parameter(_Spec):
    values: Optional[list[Any]] = Field(None, min_length=1)
    distribution: Optional[Literal["uniform", "log_uniform", "int_uniform"]] = None
    min: Optional[float] = None
    max: Optional[float] = None

    @model_validator(mode="after")
    def _one_kind(self) -> Parameter:
        if (self.values is None) == (self.distribution is None):
            raise ValueError("give either values: [...] or distribution: with min and max")
        if self.distribution is not None:
            if self.min is None or self.max is None:
                raise ValueError(f"{self.distribution} needs min and max")
            if not self.min < self.max:
                raise ValueError(f"min must be below max (got {self.min:g} >= {self.max:g})")
            if self.distribution == "log_uniform" and self.min <= 0:
                raise ValueError(f"log_uniform needs min > 0 (got {self.min:g})")
        elif self.min is not None or self.max is not None:
            raise ValueError("min and max go with a distribution, not with values")
        return self

    @property
    def bounds(self) -> tuple[float, float] | tuple[int, int]:
        """A distribution's (low, high), both included; int_uniform's rounded inwards to integers."""
        if self.distribution == "int_uniform":
            return math.ceil(self.min), math.floor(self.max)
        return float(self.min), float(self.max)

    def sample(self, rng: np.random.Generator) -> Any:
        if self.values is not None:
            return self.values[int(rng.integers(len(self.values)))]
        if self.distribution == "uniform":
            return float(rng.uniform(self.min, self.max))
        if self.distribution == "log_uniform":
            return float(math.exp(rng.uniform(math.log(self.min), math.log(self.max))))
        low, high = self.bounds
        return int(rng.integers(low, high + 1))


class Metric(_Spec):
    name: Literal[METRICS] = "val_accuracy"
    goal: Literal["maximize", "minimize"] = "maximize"


class SweepSpec(_Spec):
    base: str = Field(min_length=1)
    name: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    method: Literal["grid", "random", "bayes"] = "grid"
    run_cap: Optional[int] = Field(None, ge=1, le=100_000)
    seed: int = 0
    metric: Metric = Metric()
    parameters: dict[str, Parameter] = Field(min_length=1)

    @model_validator(mode="after")
    def _method_needs(self) -> SweepSpec:
        if self.method == "grid":
            sampled = [key for key, p in self.parameters.items() if p.values is None]
            if sampled:
                raise ValueError(f"parameters: grid needs values for every parameter ({', '.join(sampled)} has a distribution)")
        elif self.run_cap is None:
            raise ValueError(f"run_cap: {self.method} search needs run_cap (how many jobs)")
        return self


@dataclass(frozen=True)
class Job:
    index: int
    params: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={_yaml_value(value)}" for key, value in self.params.items()]


def _yaml_value(value: Any) -> str:
    """A value as it is written after ``key=`` on the command line (parsed back as YAML)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n...\n").strip()


def load_spec(path: Path) -> SweepSpec:
    """The spec file, validated, with ``base`` made absolute (relative to the current folder, as a
    config path on the command line is)."""
    tree = read_yaml_mapping(Path(path))
    try:
        spec = SweepSpec.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError([format_error(err, tree, SweepSpec) for err in exc.errors()[:20]]) from None
    return spec.model_copy(update={"base": str(Path(spec.base).expanduser().resolve())})


def expand_jobs(spec: SweepSpec) -> list[Job]:
    """Grid: every combination, the last parameter varying fastest. Random: ``run_cap`` draws from
    a generator seeded with ``spec.seed``, so the same spec always gives the same jobs. Bayes jobs
    are not known in advance (see :meth:`SweepFolder.jobs`)."""
    if spec.method == "bayes":
        raise ValueError("a bayes sweep's jobs come from its ledger, not from its spec")
    keys = list(spec.parameters)
    if spec.method == "grid":
        combos = itertools.product(*(spec.parameters[key].values for key in keys))
        return [Job(i, dict(zip(keys, combo))) for i, combo in enumerate(combos)]
    rng = np.random.default_rng(spec.seed)
    return [Job(i, {key: spec.parameters[key].sample(rng) for key in keys}) for i in range(spec.run_cap)]


# --------------------------------------------------------------------------- the sweep folder
def metric_value(metrics: dict, name: str) -> float | None:
    """A job's value of the sweep metric; ``val_*`` falls back to the best monitored value when the
    run monitored that metric (a run without a validation split reports no val_* of its own)."""
    value = metrics.get(name)
    if value is None and metrics.get("monitor") == name:
        value = metrics.get("best_value")
    return float(value) if isinstance(value, (int, float)) else None


def default_folder(spec_path: Path, spec: SweepSpec, runs_dir: Path) -> Path:
    return Path(runs_dir) / "sweeps" / (spec.name or Path(spec_path).stem)


def probe_jobs(spec: SweepSpec) -> list[Job]:
    """Jobs to validate before a sweep starts: for grid and random every job; for bayes one job per
    value or bound of each parameter (the others at their first value or minimum)."""
    if spec.method != "bayes":
        return expand_jobs(spec)

    def choices(p: Parameter) -> list[Any]:
        return list(p.values) if p.values is not None else list(p.bounds)

    first = {key: choices(p)[0] for key, p in spec.parameters.items()}
    probes = [dict(first)]
    for key, p in spec.parameters.items():
        probes += [{**first, key: value} for value in choices(p)[1:]]
    return [Job(i, params) for i, params in enumerate(probes)]


def check_jobs(spec: SweepSpec, jobs: list[Job]) -> None:
    """Validate every job's config before any starts: a typo in a key fails the sweep, not job 7.
    Errors name the swept key as ``parameters.<key>`` and problems of the base config as ``base``."""
    base = Path(spec.base)
    tree = read_yaml_mapping(base)
    try:
        build_config(json.loads(json.dumps(tree)), [], base_dir=base.resolve().parent)
    except ConfigError as exc:
        raise ConfigError([f"base ({base}): {line}" for line in exc.lines]) from None
    for job in jobs:
        try:
            build_config(json.loads(json.dumps(tree)), job.overrides, base_dir=base.resolve().parent)
        except ConfigError as exc:
            raise ConfigError([f"parameters.{line} (job {job.index}: {' '.join(job.overrides)})" for line in exc.lines]) from None


def best_row(spec: SweepSpec, rows: list[dict]) -> dict | None:
    scored = [row for row in rows if row.get(spec.metric.name) is not None]
    if not scored:
        return None
    pick = max if spec.metric.goal == "maximize" else min
    return pick(scored, key=lambda row: row[spec.metric.name])
