"""Built-in study definitions: each names a real space, valid sampler/pruner, and every trial config
it can produce passes the pre-flight check (model vs dataset shape included; no data is loaded)."""

from __future__ import annotations

import dataclasses
import itertools
import re

import optuna
import pytest

from hpstudy.search_spaces import SPACES, grid_size
from hpstudy.studies.builtin import STUDIES
from hpstudy.studies.definition import PRUNERS, SAMPLERS, StudyDefinition
from hpstudy.trainables.config import TrainConfig
from hpstudy.trainables.engine import check_config
from hpstudy.trainables.reporting import DIRECTION, METRIC

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
CLASSICS = (
    "lenet5-sgd-lr-bs",
    "lenet5-optimizer-lr-bs",
    "mlp-optimizers",
    "simple-cnn-optimizers",
    "vgg13-optimizers",
    "vgg19-init",
    "resnet34-schedulers",
    "adam-lr-bs-800",
    "mnist-cnn-variants",
    "cifar-resnet-depth",
    "lenet5-tpe",
)
NAMES = list(STUDIES)


def _trial_values(study: StudyDefinition) -> list[tuple[dict, dict]]:
    """(suggested params, returned dict) for every grid point, or 20 random samples otherwise."""
    space = SPACES[study.space]
    if space.grid is not None:
        keys = list(space.grid)
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(space.grid[k] for k in keys))]
        return [(p, space.suggest(optuna.trial.FixedTrial(p))) for p in points]
    out = []

    def objective(trial):
        out.append((None, space.suggest(trial)))
        return 0.0

    opt = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    opt.optimize(objective, n_trials=20)
    return [(dict(t.params), values) for t, (_, values) in zip(opt.trials, out)]


def test_names_unique_and_kebab_case():
    assert len(set(NAMES)) == len(NAMES)
    for name, study in STUDIES.items():
        assert isinstance(study, StudyDefinition)
        assert study.name == name
        assert KEBAB.match(name), name


def test_classic_experiments_present():
    missing = [name for name in CLASSICS if name not in STUDIES]
    assert not missing, missing


@pytest.mark.parametrize("name", NAMES)
def test_definition_fields(name):
    study = STUDIES[name]
    assert study.space in SPACES, study.space
    assert study.sampler in SAMPLERS
    assert study.pruner in PRUNERS
    assert study.metric == METRIC and study.direction == DIRECTION
    assert study.description and study.notes
    assert isinstance(study.tags, tuple) and all(isinstance(t, str) for t in study.tags)
    space = SPACES[study.space]
    if study.sampler == "grid":
        assert space.grid is not None, "a grid study needs a space with a grid"
        assert study.n_trials is None or 1 <= study.n_trials <= grid_size(space.grid)
    else:
        assert study.n_trials is not None and study.n_trials >= 1
    if study.table is not None:
        assert space.grid is not None, "a results table needs grid parameters"
        assert len(study.table) == 2 and study.table[0] != study.table[1]
        assert set(study.table) <= set(space.grid), (study.table, list(space.grid))
    assert set(study.base) <= FIELDS, set(study.base) - FIELDS
    check_config(TrainConfig.from_dict(dict(study.base)))  # the base alone is a valid run too


@pytest.mark.parametrize("name", NAMES)
def test_every_trial_config_passes_check_config(name):
    study = STUDIES[name]
    base = TrainConfig.from_dict(dict(study.base))
    for params, values in _trial_values(study):
        assert set(values) <= FIELDS
        overlap = set(study.base) & (set(params) | set(values))
        assert not overlap, f"base sets parameters the space searches: {overlap}"
        cfg = TrainConfig.from_dict({**study.base, **values})
        check_config(cfg)
        for key in study.base:
            assert getattr(cfg, key) == getattr(base, key), key


def test_mnist_studies_default_to_the_bundled_subset():
    for study in STUDIES.values():
        dataset = study.base.get("dataset", "mnist-small")
        assert dataset in ("mnist-small", "cifar10"), (study.name, dataset)


def test_classic_settings():
    assert STUDIES["adam-lr-bs-800"].base["train_size"] == 800
    assert STUDIES["adam-lr-bs-800"].base["val_size"] == 100
    assert STUDIES["vgg19-init"].base["model_args"] == {"batch_norm": False}
    assert STUDIES["vgg13-optimizers"].base["model_args"] == {"batch_norm": True}
    assert STUDIES["resnet34-schedulers"].base["epochs"] == 100
    tpe = STUDIES["lenet5-tpe"]
    assert (tpe.sampler, tpe.pruner, tpe.n_trials, tpe.space) == ("tpe", "median", 30, "classic-tpe")
    # He et al.: multistep at 50% / 75% of 164 epochs = 82, 123 (the scheduler's default milestones)
    depth = TrainConfig.from_dict(dict(STUDIES["cifar-resnet-depth"].base))
    assert depth.scheduler == "multistep" and depth.milestones is None
    assert (depth.epochs // 2, 3 * depth.epochs // 4) == (82, 123)
