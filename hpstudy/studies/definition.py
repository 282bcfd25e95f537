"""A study definition is data: which trainable settings are fixed, which space is searched, how."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from hpstudy.trainables.reporting import DIRECTION, METRIC

STUDY_ATTR = "hpstudy"  # the study user attr holding definition, settings and MLflow ids
REQUEUED = "requeued_as"  # user attr of a FAILed (interrupted) trial whose point was queued again



def superseded(trial) -> bool:
    """An interrupted trial whose point runs again as a later trial: not counted, not a result."""
    return trial.state.name == "FAIL" and REQUEUED in trial.user_attrs


SAMPLERS = ("grid", "tpe", "random", "qmc")
PRUNERS = ("none", "median", "percentile", "hyperband", "sha", "wilcoxon")


@dataclass(frozen=True)
class StudyDefinition:
    name: str
    description: str
    space: str  # a key of hpstudy.search_spaces.SPACES
    base: Mapping[str, Any]  # fixed TrainConfig fields (dataset, model, epochs, train_size, ...)
    sampler: str = "grid"
    pruner: str = "none"
    n_trials: int | None = None  # None: the grid size (grid) -- required for the other samplers
    table: tuple[str, str] | None = None  # parameters for rows and columns of the report's results table
    metric: str = METRIC
    direction: str = DIRECTION
    notes: str = ""  # where the classic experiment comes from, what to expect
    tags: tuple[str, ...] = field(default=())  # dataset, model and what is compared, for finding studies
