"""Optuna samplers and pruners by name (the study is rebuilt from these names when it continues)."""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import optuna

from hpstudy.studies.storage import set_trial_attrs
from hpstudy.trainables.config import ConfigError

GRID_POINT = "hpstudy:grid_point"  # a trial's system attr: its grid point's parameters
FIRST_CHECK_EPOCHS = 0.3  # with checks inside an epoch, the median/percentile pruners act from here on


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for a study driven by ask/tell, where trials may also be enqueued (a user's
    `enqueue_trial`, or an interrupted trial queued again). Changes, each to keep every grid point
    evaluated exactly once:

    - an enqueued trial whose parameters are a grid point is tagged with that point's grid id (Optuna
      leaves it untagged, so the point would be sampled again later);
    - a new trial always takes an unvisited point (Optuna assigns grid id = trial number to the first
      len(grid) trial numbers, which repeats a point once enqueued trials have used some numbers);
    - after_trial never calls Study.stop(): that raises outside optimize(); the searcher ends the
      study itself once every point has a trial;
    - each trial records its whole point (see optuna_tune._params_to_requeue);
    - each parameter is looked up in the point this sampler chose, without reading the trial back from
      the storage (GridSampler reads the whole trial once per parameter while Tune's event loop and the
      next trial wait: 7.6 -> 5.3 ms per parameter in `hpstudy run`, session 9).
    """

    def __init__(self, search_space, seed=None) -> None:
        super().__init__(search_space, seed=seed)
        self._chosen: dict[int, int] = {}  # trial id -> grid id, for trials this sampler gave a point

    def before_trial(self, study, trial) -> None:
        if "grid_id" in trial.system_attrs:
            return
        fixed = trial.system_attrs.get("fixed_params")
        if fixed is not None:
            point = tuple(fixed.get(name) for name in self._param_names)
            matches = [i for i, grid in enumerate(self._all_grids) if grid == point]
            if not matches:
                return  # not a grid point: run as enqueued, outside the grid
            grid_id = matches[0]
        else:
            unvisited = self._get_unvisited_grid_ids(study) or list(range(len(self._all_grids)))
            grid_id = int(self._rng.rng.choice(unvisited))
        # The whole point is recorded, so that a trial interrupted before it drew every parameter can be
        # queued again as that point (grid ids index a seed-shuffled order only this sampler knows). One
        # transaction: a trial with a grid_id, which marks the point visited once the trial is FAIL,
        # always has its point.
        set_trial_attrs(study, trial._trial_id, {GRID_POINT: dict(zip(self._param_names, self._all_grids[grid_id])),
                                                 "search_space": self._search_space, "grid_id": grid_id}, system=True)
        self._chosen[trial._trial_id] = grid_id

    def sample_independent(self, study, trial, param_name, param_distribution):
        grid_id = self._chosen.get(trial._trial_id)
        if grid_id is not None:
            # GridSampler reads only "grid_id" from system_attrs, which are lazily read from the storage.
            trial = copy.copy(trial)
            trial.system_attrs = {"grid_id": grid_id}
        return super().sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._chosen.pop(trial._trial_id, None)


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
        # Scrambled: unscrambled Sobol (Optuna's default) ignores the seed after the first trial, so every
        # seed draws the same points. The seed is kept with the study, so every driver scrambles alike.
        # bench/search_efficiency.py (50 seeds): with the median pruner 20% -> 19% of the grid's epochs.
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    raise ConfigError("sampler", f"unknown sampler {name!r} (choose from: grid, tpe, random, qmc)")


def make_pruner(name: str, epochs: int, checks_per_epoch: int = 1) -> optuna.pruners.BasePruner:
    # Steps are checks: epoch e ends at step e x checks_per_epoch (1-based; with one check per epoch,
    # steps are epochs). Resources for Hyperband/SHA stay whole epochs. n_warmup_steps=1 lets a
    # trial be pruned from epoch 1 on (Optuna prunes once step >= n_warmup_steps; steps start at 1, so it
    # spares nothing): an epoch-1 check is what stops a diverging LeNet-5 at 10% of its epochs
    # (bench/divergence_waste.py), and sparing epoch 1 (n_warmup_steps=2) cost 1-3 points below.
    # With checks inside an epoch, the first one that may prune is 30% into the first epoch. Earlier, a
    # sample's accuracy cannot tell the eventual best trial from a hopeless one on mnist-small (the best
    # point scored 0.20 a tenth into its first epoch, Adam at lr 0.1 0.11-0.20). bench/search_efficiency.py
    # --checks 10, 50 seeds: pruning from the first tenth left 18-23 seeds per sampler short of the
    # target after the grid's epochs; from 30% on, none, and the target came sooner than with epoch
    # checks (TPE/random/QMC 21.0/19.3/17.7% of the grid's epochs vs 22.7/21.8/19.0%; seeds 50-99,
    # not used to choose it: 21.3/21.9/19.2% vs 23.8/24.5/22.9%).
    warmup = max(1, math.ceil(FIRST_CHECK_EPOCHS * checks_per_epoch))
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        # n_startup_trials=2: the median pruner counts completed trials only, and every startup trial is a
        # full, unprunable run: 3 of them were 30 of the ~40-50 epochs a study of an 18-point grid spends
        # before it finds its best. bench/search_efficiency.py, 50 seeds: TPE 28 -> 23%, random 26 -> 22%
        # of the grid's epochs to come within 0.5 points of its best (seeds 50-99: 29 -> 24%, 29 -> 25%).
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=checks_per_epoch, max_resource=epochs * checks_per_epoch)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=checks_per_epoch)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    raise ConfigError("pruner", f"unknown pruner {name!r} (choose from: none, median, percentile, hyperband, sha, wilcoxon)")
