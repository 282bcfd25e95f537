"""Search spaces by name: each is a plain function `(trial) -> dict` that only calls `trial.suggest_*`,
plus, for grid studies, a dict of lists with the same parameter names. The names are TrainConfig fields
(one vocabulary: `lr`, `batch_size`, `optimizer`, `init`, `scheduler`, `gamma`, `seed`, ...)."""

from hpstudy.search_spaces._base import SearchSpace, grid_suggest, grid_size
from hpstudy.search_spaces._registry import SPACES

__all__ = ["SearchSpace", "SPACES", "grid_suggest", "grid_size"]
