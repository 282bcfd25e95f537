"""`schedulers`: LR-scheduler comparison, a grid over the one parameter `scheduler`.

Each scheduler takes different arguments, so only `scheduler` is suggested (what GridSampler sees);
its arguments are fixed values from SCHEDULER_ARGS, returned in the config dict without being suggested.
Milestones are written as a string ("40,60,80"), the form TrainConfig accepts and Optuna can store.
"""

from __future__ import annotations

from typing import Any

import optuna

from hpstudy.search_spaces._base import SearchSpace

GRID = {
    "scheduler": ["constant", "exponential", "multistep", "cyclic", "cosine_warm_restarts"],
}

# Fixed arguments per scheduler (TrainConfig field names), chosen for 100 epochs.
SCHEDULER_ARGS: dict[str, dict[str, Any]] = {
    "constant": {},
    "exponential": {"gamma": 0.95},
    "multistep": {"milestones": "40,60,80", "gamma": 0.1},
    # step_size_up counts batches (iterations), not epochs.
    "cyclic": {"base_lr": 5e-4, "max_lr": 5e-3, "step_size_up": 2380, "cyclic_mode": "triangular"},
    "cosine_warm_restarts": {"t_0": 10, "t_mult": 3},
}


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    scheduler = trial.suggest_categorical("scheduler", GRID["scheduler"])
    return {"scheduler": scheduler, **SCHEDULER_ARGS[scheduler]}


SPACE = SearchSpace(
    name="schedulers",
    description="grid: scheduler {constant, exponential(0.95), multistep(40,60,80; 0.1), "
                "cyclic(5e-4..5e-3, 2380 it, triangular), cosine_warm_restarts(T0 10, Tmult 3)} (5 points)",
    suggest=suggest,
    grid=GRID,
)
