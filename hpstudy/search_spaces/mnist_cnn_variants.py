"""`mnist-cnn-variants`: the small MNIST CNN and variants that each change one trait."""

from __future__ import annotations

from hpstudy.search_spaces._base import SearchSpace, grid_suggest

GRID = {
    "model": ["cnn_relu", "cnn_2pool", "cnn_bn_dropout", "cnn_5x5", "cnn_gelu"],
}

SPACE = SearchSpace(
    name="mnist-cnn-variants",
    description="grid: model {cnn_relu, cnn_2pool, cnn_bn_dropout, cnn_5x5, cnn_gelu} (5 points)",
    suggest=grid_suggest(GRID),
    grid=GRID,
)
