"""`lr-bs-wide`: four decades of learning rate x five batch sizes (the small-data Adam sweep)."""

from __future__ import annotations

from hpstudy.search_spaces._base import SearchSpace, grid_suggest

GRID = {
    "lr": [1e-4, 1e-3, 1e-2, 0.1],
    "batch_size": [8, 16, 32, 64, 128],
}

SPACE = SearchSpace(
    name="lr-bs-wide",
    description="grid: lr {1e-4, 1e-3, 1e-2, 0.1} x batch_size {8, 16, 32, 64, 128} (20 points)",
    suggest=grid_suggest(GRID),
    grid=GRID,
)
