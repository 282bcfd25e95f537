"""Checkpointable, deterministic training of the classic vision experiments (one trial's work)."""

from hpstudy.trainables.config import ConfigError, TrainConfig
from hpstudy.trainables.engine import TIMING_FIELDS, check_config, train
from hpstudy.trainables.reporting import PrintReporter, Reporter, StopTrial

__all__ = ["ConfigError", "TrainConfig", "TIMING_FIELDS", "check_config", "train", "PrintReporter",
           "Reporter", "StopTrial"]
