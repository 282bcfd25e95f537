"""`optimizers`: the classic optimizer comparison, one grid parameter (lr and the rest fixed by the study).

No momentum value is suggested: `momentum` and `nesterov` mean Polyak/Nesterov momentum 0.9, `sgd` and
`rmsprop` run without momentum, and the others reject a momentum setting.
"""

from __future__ import annotations

from hpstudy.search_spaces._base import SearchSpace, grid_suggest

GRID = {
    "optimizer": ["sgd", "adagrad", "rmsprop", "adam", "momentum", "nesterov"],
}

SPACE = SearchSpace(
    name="optimizers",
    description="grid: optimizer {sgd, adagrad, rmsprop, adam, momentum, nesterov} (6 points)",
    suggest=grid_suggest(GRID),
    grid=GRID,
)
