"""`optimizer-lr-bs`: optimizer x learning rate x batch size, with one too-high and one far too
low learning rate so the table shows where each optimizer works at all."""

from __future__ import annotations

from hpstudy.search_spaces._base import SearchSpace, grid_suggest

GRID = {
    "optimizer": ["momentum", "adagrad", "adam"],
    "lr": [0.05, 5e-4, 5e-7],
    "batch_size": [64, 256],
}

SPACE = SearchSpace(
    name="optimizer-lr-bs",
    description="grid: optimizer {momentum, adagrad, adam} x lr {0.05, 5e-4, 5e-7} x batch_size {64, 256} "
                "(18 points)",
    suggest=grid_suggest(GRID),
    grid=GRID,
)
