"""`cifar-resnet-depth`: the CIFAR ResNets of He et al. (2016), 6n+2 layers for n = 3, 5, 7, 9, 18."""

from __future__ import annotations

from hpstudy.search_spaces._base import SearchSpace, grid_suggest

GRID = {
    "model": ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"],
}

SPACE = SearchSpace(
    name="cifar-resnet-depth",
    description="grid: model {resnet20, resnet32, resnet44, resnet56, resnet110} (5 points)",
    suggest=grid_suggest(GRID),
    grid=GRID,
)
