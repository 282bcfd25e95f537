from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import optuna

Suggest = Callable[[optuna.Trial], dict[str, Any]]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    suggest: Suggest  # define-by-run: only trial.suggest_* calls; returns TrainConfig fields
    grid: Mapping[str, Sequence[Any]] | None = None  # for GridSampler; same names as `suggest`


def grid_suggest(grid: Mapping[str, Sequence[Any]]) -> Suggest:
    """The define-by-run function of a grid: one suggest_categorical per key (what GridSampler needs)."""

    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        return {name: trial.suggest_categorical(name, list(values)) for name, values in grid.items()}

    return suggest


def grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())
