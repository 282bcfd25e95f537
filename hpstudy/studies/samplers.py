"""Optuna samplers and pruners by name (the study is rebuilt from these names when it continues)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import optuna

from hpstudy.trainables.config import ConfigError


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose after_trial does not call Study.stop(): that raises outside optimize(), and
    here the searcher ends the study itself once every grid point has a trial (ask/tell)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(name: str, grid: Mapping[str, Sequence[Any]] | None, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "grid":
        if grid is None:
            raise ConfigError("sampler", "grid needs a search space with a grid; use tpe, random or qmc")
        return AskTellGridSampler(dict(grid), seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    raise ConfigError("sampler", f"unknown sampler {name!r} (choose from: grid, tpe, random, qmc)")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    # Steps are epochs (1-based); resources for Hyperband/SHA are epochs too.
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    raise ConfigError("pruner", f"unknown pruner {name!r} (choose from: none, median, percentile, hyperband, sha, wilcoxon)")
