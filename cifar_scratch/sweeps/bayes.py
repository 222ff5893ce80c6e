"""``method: bayes`` sweeps: Optuna's TPE sampler through its ask/tell interface.

Needs the optional extra (``pip install -e ".[optuna]"``); nothing else in the package imports this
module. Optuna only proposes parameters: every job is still an ordinary ``train`` run recorded in
the sweep's ledger, and the study lives in memory only. Each time the sweep starts, the study is
rebuilt from the ledger: every finished job's parameters and metric (from its metrics.json) are
told to a new study seeded with ``spec.seed``, so an interrupted search goes on where it stopped,
and raising ``run_cap`` in the spec lets a finished one go on.

``values`` parameters are categorical (any YAML values: Optuna sees their positions), ``uniform``
and ``log_uniform`` float, ``int_uniform`` integer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cifar_scratch.errors import UsageError
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.runs.index import read_json
from cifar_scratch.sweeps.ledger import JobOutcome, SweepFolder
from cifar_scratch.sweeps.spec import Job, SweepSpec, metric_value


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError('method: bayes needs the optuna extra (pip install -e ".[optuna]")') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class BayesSearch:
    """Proposes the jobs of a bayes sweep: ``ask()`` the next job (None once ``run_cap`` jobs exist),
    ``tell(outcome)`` each finished one."""

    def __init__(self, spec: SweepSpec, folder: SweepFolder):
        optuna = self.optuna = require_optuna()
        self.spec, self.folder = spec, folder
        self.distributions = {key: self._distribution(key) for key in spec.parameters}
        self.study = optuna.create_study(direction=spec.metric.goal, sampler=optuna.samplers.TPESampler(seed=spec.seed))
        self.trials: dict[int, Any] = {}  # job index -> the trial asked for it in this process
        jobs = folder.jobs(spec)
        self.next_index = max((job.index for job in jobs), default=-1) + 1
        ledger = folder.ledger()
        for job in jobs:
            entry = ledger.get(job.index, {})
            if entry.get("status") in ("completed", "failed"):
                self._add_finished(job, entry)

    def _distribution(self, key: str):
        dist, p = self.optuna.distributions, self.spec.parameters[key]
        if p.values is not None:
            return dist.CategoricalDistribution(list(range(len(p.values))))
        if p.distribution == "int_uniform":
            return dist.IntDistribution(*p.bounds)
        return dist.FloatDistribution(*p.bounds, log=p.distribution == "log_uniform")

    def _to_optuna(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in params.items():
            values = self.spec.parameters[key].values
            out[key] = values.index(value) if values is not None else value
        return out

    def _value(self, run_dir: str | Path | None) -> float | None:
        if not run_dir:
            return None
        value = metric_value(read_json(RunFolder(run_dir).metrics), self.spec.metric.name)
        return value if value is not None and math.isfinite(value) else None

    def _add_finished(self, job: Job, entry: dict) -> None:
        value = self._value(entry.get("run_dir")) if entry.get("status") == "completed" else None
        state = self.optuna.trial.TrialState
        try:
            params = self._to_optuna(job.params)
        except ValueError:  # a value no longer in the spec's list: the trial cannot be described
            return
        trial = self.optuna.trial.create_trial(
            params=params,
            distributions=self.distributions,
            value=value,
            state=state.COMPLETE if value is not None else state.FAIL,
        )
        self.study.add_trial(trial)

    def ask(self) -> Job | None:
        """The next job, or None once the sweep has ``run_cap`` jobs."""
        if self.next_index >= self.spec.run_cap:
            return None
        trial = self.study.ask(self.distributions)
        params = {}
        for key, value in trial.params.items():
            values = self.spec.parameters[key].values
            params[key] = values[value] if values is not None else value
        job = Job(self.next_index, params)
        self.trials[job.index] = trial
        self.next_index += 1
        return job

    def tell(self, outcome: JobOutcome) -> None:
        """Report a finished job; an interrupted one stays open (it resumes next time)."""
        trial = self.trials.pop(outcome.job.index, None)
        if outcome.status == "interrupted":
            return
        if trial is None:  # a job of an earlier attempt, resumed in this one
            self._add_finished(outcome.job, {"status": outcome.status, "run_dir": outcome.run_dir})
            return
        value = self._value(outcome.run_dir) if outcome.status == "completed" else None
        state = self.optuna.trial.TrialState
        if value is None:
            self.study.tell(trial, state=state.FAIL)
        else:
            self.study.tell(trial, value)
