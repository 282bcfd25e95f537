"""The trainable Ray Tune runs: a config dict in, metrics and checkpoints out through Ray's API.

This module is the only place that knows Ray's reporting API (it changed four times in two years).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from hpstudy.processes import pid_exists
from hpstudy.trainables.config import TrainConfig
from hpstudy.trainables.engine import train

# Keys of a Tune config that are not TrainConfig fields.
RESUME_KEY = "resume_from"  # a checkpoint directory of an interrupted earlier trial, if any
META_KEYS = (RESUME_KEY, "optuna_trial_number")
OUTPUTS_DIR = "outputs"  # in the trial's folder in Tune's storage path: history.csv, result.json, ...
# How long a reused actor's next trial waits for the stopped trial's step to end (see TuneReporter).
STOPPED_STEP_WAIT_S = 3600


class TuneReporter:
    """Reports each epoch to Ray Tune (with its checkpoint when one was written), and the final result once.

    Every report carries the Ray node that ran it (``node_id``), and the final result also the epoch
    this run continued from (``resumed_from_epoch``, 0 when it started fresh), so a trial that a dead
    node's retry moved elsewhere shows where each part ran and where it picked up."""

    def __init__(self, staging: Path) -> None:
        from ray.train._internal.session import get_session

        self.staging = staging  # each report's one-file checkpoint folder goes here, beside the checkpoints
        self.node_id = ray_node_id()
        self.first_epoch: int | None = None  # the first epoch this run trained (after any resume)
        # Tune holds a function trainable in every report until the driver has handled the result and
        # asked for the next one (its session's synchronous_result_reporting): 10-14 ms per report here,
        # 0.15-0.2 s of a 15-epoch trial (session 14). Ray Train's workers run with it off, and the
        # function API has no public switch. Off, the trial trains on while the driver handles its
        # report, so a stop from Tune (a pruner's decision, the end of the study), which Ray acted on
        # inside the held report, must be acted on by the engine: check_stop, after every training step
        # and before every validation batch and report, so a stopped trial wastes at most one step.
        self._session = get_session()
        self._session.synchronous_result_reporting = False
        # That step can be long (seconds to minutes for a large model on a CPU). Tune reuses this actor for
        # the next trial only if the stopped trial's thread ends within TUNE_FUNCTION_THREAD_TIMEOUT_S
        # (default 2 s, read in this process at each reuse); when it did not, Ray 2.60's Tune logged "Could
        # not re-use actor" and the whole study hung (reproduced with 2.5-s steps). Unless the user set it,
        # the next trial waits for the step to end.
        os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(STOPPED_STEP_WAIT_S))

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        from ray import tune

        self.check_stop()  # a stopped trial's report would go nowhere (its checkpoint copied for nothing)
        if self.first_epoch is None:
            self.first_epoch = int(metrics["epoch"])
        metrics = {**metrics, "node_id": self.node_id}
        newest = _newest_file(checkpoint_dir)
        if newest is None:
            tune.report(metrics)
            return
        # Hand Ray a directory with only the newest file: Ray copies it to storage and keeps
        # CheckpointConfig.num_to_keep of them, so retention lives in one place.
        with tempfile.TemporaryDirectory(prefix="hpstudy-ckpt-", dir=self.staging) as staged:
            os.link(newest, Path(staged) / newest.name)  # no copy: Ray copies it into its storage anyway
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(staged))

    def check_stop(self) -> None:
        if self._session.stop_event.is_set():  # Tune stopped the trial (session.finish)
            raise SystemExit(0)  # ends the training thread, as Ray's own report does when it finds a stop

    def finish(self, result: dict[str, Any]) -> None:
        from ray import tune

        from hpstudy.trainables.outputs import write_run_outputs

        result = {**result, "node_id": self.node_id, "resumed_from_epoch": self.resumed_from_epoch(result)}
        # The run's files are drawn here, in the worker, not in the driver whose event loop every
        # trial waits on; the driver copies them into MLflow. They go to the trial's folder in Tune's
        # storage path (the work dir, which every node and the driver reach), not to get_trial_dir(),
        # a folder in this node's own Ray session dir that a driver on another machine cannot read.
        outputs = Path(tune.get_context().get_storage().trial_fs_path) / OUTPUTS_DIR
        write_run_outputs(result, outputs, curves=False)
        history = result["history"]
        last = dict(history[-1]) if history else {"epoch": 0}
        # As a JSON string: Tune flattens nested dicts in results.
        tune.report({**last, "node_id": self.node_id, "final": True, "status": result["status"],
                     "reason": result["reason"] or "", "result_json": json.dumps(result),
                     "outputs_dir": str(outputs)})

    def resumed_from_epoch(self, result: dict[str, Any]) -> int:
        """The epoch of the checkpoint the engine continued from (0: a fresh start). The engine reports
        every epoch it trains, starting right after the one it loaded; a run that trained no epoch
        (it resumed from its last one, or stopped inside the first one it ran) resumed from the last
        epoch in its history, which is the loaded checkpoint's."""
        if self.first_epoch is not None:
            return self.first_epoch - 1
        history = result["history"]
        return int(history[-1]["epoch"]) if history else 0


def ray_node_id() -> str | None:
    """The Ray node this process runs on (hex), or None outside Ray."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def tune_trainable(config: dict[str, Any]) -> None:
    """Entry point for ray.tune.Tuner: resumes from Ray's checkpoint (a retried trial) or from an
    interrupted earlier trial's checkpoint, then trains."""
    from ray import tune

    values = {k: v for k, v in config.items() if k not in META_KEYS}
    cfg = TrainConfig.from_dict(values)
    local = trial_scratch()
    try:
        resume_from = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from = (_gather_kept(checkpoint.path, local / "restored")
                           or Path(checkpoint.to_directory(str(local / "restored"))))
        elif config.get(RESUME_KEY):
            resume_from = _gather_kept(config[RESUME_KEY], local / "restored") or Path(config[RESUME_KEY])
        # Scratch checkpoints: tune.report copies each into Tune's storage, and they go with this trial.
        train(cfg, TuneReporter(staging=local), checkpoint_dir=local / "checkpoints", resume_from=resume_from,
              durable_checkpoints=False)
    finally:
        # Every reported checkpoint is in Tune's storage by now (tune.report copies it before it
        # returns): the local files are spent. Without this every trial leaves them in /tmp.
        shutil.rmtree(local, ignore_errors=True)


SCRATCH_PREFIX = "hpstudy-trial-"


def trial_scratch() -> Path:
    """A new local folder for one trial's checkpoint files, named after this host and process.

    A worker that was killed (SIGKILL, the OOM killer, a preempted job) never ran its ``finally``, and
    its folder would stay in /tmp for good (one checkpoint of up to tens of MB per kill): each new
    trial first removes the folders of this host's processes that are gone. The host name keeps a
    /tmp shared by containers (each with its own process ids) from reading another's as dead."""
    host = socket.gethostname().replace("-", "_")
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{SCRATCH_PREFIX}{host}-*-*"):
        pid = old.name[len(f"{SCRATCH_PREFIX}{host}-"):].split("-")[0]
        if pid.isdigit() and not pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{host}-{os.getpid()}-"))


def _gather_kept(checkpoint_path: str, into: Path) -> Path | None:
    """The checkpoint file to resume from and the earlier ones the trial still has in Tune's storage
    (CheckpointConfig.num_to_keep), in one folder: a damaged newest file then falls back to the one
    before it instead of to a fresh start (each of Ray's checkpoint folders holds one file). None when
    the checkpoint is not on a file system this process reads (e.g. cloud storage)."""
    from hpstudy.trainables.checkpoints import list_checkpoints

    newest = Path(checkpoint_path)
    if not newest.is_dir():
        return None
    into.mkdir(parents=True, exist_ok=True)
    for folder in sorted(newest.parent.glob("checkpoint_*")):
        if folder.name <= newest.name:  # never a later attempt's
            for path in list_checkpoints(folder):
                shutil.copyfile(path, into / path.name)
    return into


def _newest_file(directory: Path | None) -> Path | None:
    from hpstudy.trainables.checkpoints import list_checkpoints

    files = list_checkpoints(directory) if directory else []
    return files[-1] if files else None
