"""`lr-bs`: learning rate x batch size, the first sweep of every SGD tutorial (LeNet-5 on MNIST)."""

from __future__ import annotations

from hpstudy.search_spaces._base import SearchSpace, grid_suggest

GRID = {
    "lr": [0.1, 0.01, 0.001],
    "batch_size": [64, 128],
}

SPACE = SearchSpace(
    name="lr-bs",
    description="grid: lr {0.1, 0.01, 0.001} x batch_size {64, 128} (6 points)",
    suggest=grid_suggest(GRID),
    grid=GRID,
)
