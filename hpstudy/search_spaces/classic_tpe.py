"""`classic-tpe`: a define-by-run space over the classic knobs, for TPE (or random/QMC) search.

Conditional parameters follow what TrainConfig accepts: `momentum` only for `sgd` and `rmsprop`
(`momentum`/`nesterov` already mean 0.9; the adaptive optimizers take none), and each scheduler's
arguments only when that scheduler is chosen. Choice lists are written out rather than read from the
registries so that a registry change cannot silently change the space of an existing study.
"""

from __future__ import annotations

from typing import Any

import optuna

from hpstudy.search_spaces._base import SearchSpace

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "adadelta")
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
BATCH_SIZES = (32, 64, 128, 256)
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
SCHEDULERS = ("constant", "step", "exponential", "cosine", "warmup_cosine", "onecycle")
# The scheduler arguments each choice suggests (the rest use the scheduler's defaults).
SCHEDULER_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "exponential": ("gamma",),
    "cosine": (),
    "warmup_cosine": ("warmup_epochs",),  # 1..3: below the 10 epochs of the studies using this space
    "onecycle": (),
}


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    params: dict[str, Any] = {}
    params["optimizer"] = optimizer = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
    params["lr"] = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    params["batch_size"] = trial.suggest_categorical("batch_size", list(BATCH_SIZES))
    params["weight_decay"] = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    if optimizer in MOMENTUM_OPTIMIZERS:
        params["momentum"] = trial.suggest_float("momentum", 0.0, 0.99)
    params["init"] = trial.suggest_categorical("init", list(INITS))
    params["scheduler"] = scheduler = trial.suggest_categorical("scheduler", list(SCHEDULERS))
    if scheduler == "step":
        params["step_size"] = trial.suggest_int("step_size", 1, 5)
        params["gamma"] = trial.suggest_float("gamma", 0.1, 0.9)
    elif scheduler == "exponential":
        params["gamma"] = trial.suggest_float("gamma", 0.8, 0.99)
    elif scheduler == "warmup_cosine":
        params["warmup_epochs"] = trial.suggest_float("warmup_epochs", 1.0, 3.0)
    return params


SPACE = SearchSpace(
    name="classic-tpe",
    description="define-by-run: optimizer (8), lr log 1e-5..1, batch_size {32..256}, weight_decay log "
                "1e-6..1e-2, momentum 0..0.99 (sgd, rmsprop), init (5), scheduler (6) with its arguments",
    suggest=suggest,
)
