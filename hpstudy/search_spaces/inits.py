"""`inits`: weight-initialisation comparison (Glorot/Xavier vs He/Kaiming, uniform vs normal)."""

from __future__ import annotations

from hpstudy.search_spaces._base import SearchSpace, grid_suggest

GRID = {
    "init": ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"],
}

SPACE = SearchSpace(
    name="inits",
    description="grid: init {xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal} (4 points)",
    suggest=grid_suggest(GRID),
    grid=GRID,
)
