"""The trainable Ray Tune runs: a config dict in, metrics and checkpoints out through Ray's API.

This module is the only place that knows Ray's reporting API (it changed four times in two years).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hpstudy.trainables.config import TrainConfig
from hpstudy.trainables.engine import train

# The objective of every study: the best validation accuracy over a trial's epochs.
METRIC = "val_acc"
DIRECTION = "maximize"

# Keys of a Tune config that are not TrainConfig fields.
RESUME_KEY = "resume_from"  # a checkpoint directory of an interrupted earlier trial, if any
META_KEYS = (RESUME_KEY, "optuna_trial_number")
OUTPUTS_DIR = "outputs"  # in the Ray trial dir: history.csv, curves.png, per_class.csv, ...


class TuneReporter:
    """Reports each epoch to Ray Tune with the newest checkpoint, and the final result once."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        from ray import tune

        newest = _newest_file(checkpoint_dir)
        if newest is None:
            tune.report(metrics)
            return
        # Hand Ray a directory with only the newest file: Ray copies it to storage and keeps
        # CheckpointConfig.num_to_keep of them, so retention lives in one place.
        with tempfile.TemporaryDirectory(prefix="hpstudy-ckpt-") as staged:
            target = Path(staged) / newest.name
            if _same_fs(newest, staged):
                os.link(newest, target)  # no copy: Ray copies it into its storage anyway
            else:
                target.write_bytes(newest.read_bytes())
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(staged))

    def finish(self, result: dict[str, Any]) -> None:
        from ray import tune

        from hpstudy.trainables.outputs import write_run_outputs

        # The run's files are drawn here, in the worker, not in the driver whose event loop every
        # trial waits on; the driver copies them into MLflow. The trial dir is under Ray's storage path.
        outputs = Path(tune.get_context().get_trial_dir()) / OUTPUTS_DIR
        write_run_outputs(result, outputs)
        history = result["history"]
        last = dict(history[-1]) if history else {"epoch": 0}
        # As a JSON string: Tune flattens nested dicts in results.
        tune.report({**last, "final": True, "status": result["status"], "reason": result["reason"] or "",
                     "result_json": json.dumps(result), "outputs_dir": str(outputs)})


def tune_trainable(config: dict[str, Any]) -> None:
    """Entry point for ray.tune.Tuner: resumes from Ray's checkpoint (a retried trial) or from an
    interrupted earlier trial's checkpoint, then trains."""
    from ray import tune

    values = {k: v for k, v in config.items() if k not in META_KEYS}
    cfg = TrainConfig.from_dict(values)
    local = Path(tempfile.mkdtemp(prefix="hpstudy-trial-"))
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        resume_from = Path(checkpoint.to_directory(str(local / "restored")))
    elif config.get(RESUME_KEY):
        resume_from = Path(config[RESUME_KEY])
    train(cfg, TuneReporter(), checkpoint_dir=local / "checkpoints", resume_from=resume_from)


def _newest_file(directory: Path | None) -> Path | None:
    from hpstudy.trainables.checkpoints import list_checkpoints

    files = list_checkpoints(directory) if directory else []
    return files[-1] if files else None


def _same_fs(a: Path, b: str) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev
