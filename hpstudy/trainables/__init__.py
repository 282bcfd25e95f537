"""Checkpointable, deterministic training of the classic vision experiments (one trial's work)."""

from __future__ import annotations

import importlib
from typing import Any

# Each name is imported from its module on first use (PEP 562), so that `hpstudy.trainables.config` and
# `.reporting` load without torch: `hpstudy --help`, `studies`, `spaces`, `report` and `compare` need no
# torch, and importing it took 1.5 of `hpstudy --help`'s 2 s.
_EXPORTS = {"ConfigError": "config", "TrainConfig": "config", "TIMING_FIELDS": "engine", "check_config": "engine",
            "train": "engine", "PrintReporter": "reporting", "Reporter": "reporting", "StopTrial": "reporting"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:  # AttributeError lets `from hpstudy.trainables import models` import the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
