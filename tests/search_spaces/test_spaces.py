"""Search spaces: grids visited exactly once, every sample a valid TrainConfig, one vocabulary."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import re

import optuna
import pytest

from hpstudy.search_spaces import SPACES, SearchSpace, grid_size
from hpstudy.search_spaces import classic_tpe
from hpstudy.trainables import inits, optimizers, schedulers
from hpstudy.trainables.config import TrainConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# A generic valid base: every space's samples must validate on top of it (10 epochs: warmup_epochs < 10).
BASE = {"dataset": "mnist-small", "model": "lenet5", "epochs": 10}
GRID_SPACES = [name for name, space in SPACES.items() if space.grid is not None]
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# What each scheduler reads (mirrors hpstudy.trainables.schedulers; checked against it below).
SCHEDULER_ARGS = {
    "constant": set(), "step": {"step_size", "gamma"}, "multistep": {"milestones", "gamma"},
    "exponential": {"gamma"}, "cyclic": {"base_lr", "max_lr", "step_size_up", "cyclic_mode"},
    "cosine": {"eta_min"}, "cosine_warm_restarts": {"t_0", "t_mult", "eta_min"},
    "warmup_cosine": {"warmup_epochs", "eta_min"}, "onecycle": {"max_lr"},
}
ALL_SCHEDULER_ARGS = set().union(*SCHEDULER_ARGS.values())


def _sample(space: SearchSpace, sampler: optuna.samplers.BaseSampler, n: int):
    """n trials of `space`; returns (trial params, returned dict, trial distributions) per trial."""
    out = []

    def objective(trial):
        values = space.suggest(trial)
        out.append((dict(trial.params), values, dict(trial.distributions)))
        return 0.0

    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=n)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return out


def _validate(values: dict) -> TrainConfig:
    assert set(values) <= FIELDS, f"not TrainConfig fields: {set(values) - FIELDS}"
    return TrainConfig.from_dict({**BASE, **values})


def test_registry_names():
    assert SPACES, "no spaces registered"
    for name, space in SPACES.items():
        assert isinstance(space, SearchSpace)
        assert space.name == name
        assert KEBAB.match(name), name
        assert space.description


def test_scheduler_args_mirror_the_trainables():
    assert set(SCHEDULER_ARGS) == set(schedulers.SCHEDULERS)
    for name, args in SCHEDULER_ARGS.items():
        assert set(schedulers._ARGUMENTS[name]) == args


@pytest.mark.parametrize("name", GRID_SPACES)
def test_grid_is_a_module_constant_of_plain_choices(name):
    space = SPACES[name]
    # One module per space, named after it (`lr-bs` -> lr_bs.py), holding GRID and SPACE.
    module = importlib.import_module(f"hpstudy.search_spaces.{name.replace('-', '_')}")
    assert module.SPACE is space
    assert module.GRID is space.grid
    assert isinstance(space.grid, dict)
    for key, values in space.grid.items():
        assert isinstance(values, list) and values, key
        assert len(set(values)) == len(values), f"{key}: duplicate choices"
        for value in values:
            assert value is None or isinstance(value, (bool, int, float, str)), (key, value)


@pytest.mark.parametrize("name", GRID_SPACES)
def test_grid_sampler_visits_every_point_once(name):
    space = SPACES[name]
    keys = list(space.grid)
    n = grid_size(space.grid)
    samples = _sample(space, optuna.samplers.GridSampler(space.grid, seed=0), n)
    visited = [tuple(params[k] for k in keys) for params, _, _ in samples]
    expected = set(itertools.product(*(space.grid[k] for k in keys)))
    assert len(visited) == n
    assert set(visited) == expected
    for params, values, _ in samples:
        assert set(params) == set(keys), "a grid space suggests exactly its grid's keys"
        assert {k: values[k] for k in keys} == params
        _validate(values)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
@pytest.mark.parametrize("name", list(SPACES))
def test_samples_validate(name, sampler):
    make = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler}[sampler]
    space = SPACES[name]
    for params, values, _ in _sample(space, make(seed=0), 50):
        assert set(params) <= set(values), "every suggested parameter is returned"
        for key, value in params.items():
            assert values[key] == value
        _validate(values)


def test_one_vocabulary():
    """Every parameter any space suggests or returns is a TrainConfig field."""
    used = set()
    for space in SPACES.values():
        if space.grid is not None:
            used |= set(space.grid)
        for params, values, _ in _sample(space, optuna.samplers.RandomSampler(seed=1), 40):
            used |= set(params) | set(values)
    assert used <= FIELDS, f"not TrainConfig fields: {sorted(used - FIELDS)}"


# ---------------------------------------------------------------- classic-tpe
def test_classic_tpe_choices_cover_the_registries():
    assert set(classic_tpe.OPTIMIZERS) == set(optimizers.OPTIMIZERS)
    assert set(classic_tpe.INITS) == set(inits.INITS)
    assert set(classic_tpe.SCHEDULERS) <= set(schedulers.SCHEDULERS)
    assert set(classic_tpe.SCHEDULERS) == set(classic_tpe.SCHEDULER_PARAMS)
    assert SPACES["classic-tpe"].grid is None


def test_classic_tpe_conditional_structure():
    space = SPACES["classic-tpe"]
    samples = _sample(space, optuna.samplers.RandomSampler(seed=0), 300)
    seen_optimizers, seen_schedulers = set(), set()
    for params, values, distributions in samples:
        optimizer, scheduler = values["optimizer"], values["scheduler"]
        seen_optimizers.add(optimizer)
        seen_schedulers.add(scheduler)
        # momentum exactly for sgd and rmsprop
        assert ("momentum" in params) == (optimizer in ("sgd", "rmsprop")), params
        assert ("momentum" in values) == (optimizer in ("sgd", "rmsprop")), values
        # scheduler arguments only those of the chosen scheduler (and exactly the ones the space tunes)
        args = set(values) & ALL_SCHEDULER_ARGS
        assert args <= SCHEDULER_ARGS[scheduler], (scheduler, args)
        assert args == set(classic_tpe.SCHEDULER_PARAMS[scheduler])
        assert set(params) & ALL_SCHEDULER_ARGS == args
        # lr log-uniform 1e-5..1
        lr = distributions["lr"]
        assert isinstance(lr, optuna.distributions.FloatDistribution)
        assert lr.log and lr.low == pytest.approx(1e-5) and lr.high == pytest.approx(1.0)
        assert 1e-5 <= values["lr"] <= 1.0
        assert values["batch_size"] in (32, 64, 128, 256)
        assert distributions["weight_decay"].log
        if scheduler == "step":
            assert 1 <= values["step_size"] <= 5 and 0.1 <= values["gamma"] <= 0.9
        elif scheduler == "exponential":
            assert 0.8 <= values["gamma"] <= 0.99
        elif scheduler == "warmup_cosine":
            assert 1 <= values["warmup_epochs"] <= 3 < BASE["epochs"]
        if "momentum" in values:
            assert 0.0 <= values["momentum"] <= 0.99
    assert seen_optimizers == set(classic_tpe.OPTIMIZERS)
    assert seen_schedulers == set(classic_tpe.SCHEDULERS)


def test_schedulers_space_fixes_arguments_per_scheduler():
    from hpstudy.search_spaces import schedulers as space_module

    space = SPACES["schedulers"]
    assert set(space_module.SCHEDULER_ARGS) == set(space.grid["scheduler"])
    for scheduler, args in space_module.SCHEDULER_ARGS.items():
        values = space.suggest(optuna.trial.FixedTrial({"scheduler": scheduler}))
        assert values == {"scheduler": scheduler, **args}
        assert set(args) <= SCHEDULER_ARGS[scheduler]
        cfg = TrainConfig.from_dict({**BASE, "epochs": 100, **values})
        for key, value in args.items():
            assert getattr(cfg, key) == (tuple(int(v) for v in value.split(","))
                                         if key == "milestones" else value)
