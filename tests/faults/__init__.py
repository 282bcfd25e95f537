"""Fault injection (issue 4): killed workers, damaged checkpoints, full disks, bad input.

Helpers shared by the modules here: finding this process's Ray trial workers, and a thread that kills
one once a trial has checkpointed."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable


def optuna_schema_ready(storage_url: str) -> bool:
    """Whether the driver has finished creating Optuna's tables in its SQLite file (Optuna stamps the
    schema version last), read without SQLAlchemy: a poller that opened the study earlier would create
    the tables itself, racing the driver's own creation."""
    path = storage_url.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:  # no such table yet, or the driver holds a write lock
        return False


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (read from /proc: no psutil in the environment)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def trial_workers() -> list[int]:
    """This process's Ray workers running a Tune function trainable (Ray titles its actor
    `ray::ImplicitFunc...`). Only descendants of this process: other Ray instances are left alone."""
    return [pid for pid in descendants(os.getpid())
            if title(pid).startswith("ray::") and ("ImplicitFunc" in title(pid) or "tune_trainable" in title(pid))]


class WorkerKiller(threading.Thread):
    """Waits until Ray Tune has registered a trial's ``min_checkpoints``-th checkpoint (the study's
    Optuna trial then holds it in its "checkpoint" user attr: hpstudy's CheckpointRecorder sets it when
    Tune processes the save), calls ``before_kill(checkpoint_dir)`` with that checkpoint's directory,
    then SIGKILLs the trial's worker process, which by then is inside the next epoch.

    A checkpoint directory appearing in Ray's storage is not enough: the worker writes it before the
    driver has registered it, and a worker killed in between is restarted from the previous registered
    checkpoint (or from scratch), which is Tune's documented behaviour and not what is tested here."""

    def __init__(self, storage: str, study_name: str, min_checkpoints: int = 1,
                 before_kill: Callable[[Path], None] | None = None, deadline_s: float = 600):
        super().__init__(daemon=True)
        self.storage = storage
        self.study_name = study_name
        self.min_checkpoints = min_checkpoints
        self.before_kill = before_kill
        self.deadline = time.time() + deadline_s
        self.killed_pid: int | None = None
        self.checkpoint_at_kill: Path | None = None  # the newest checkpoint Tune had registered
        self.problem = ""
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported by the test, not lost in a thread
            self.problem = f"{type(exc).__name__}: {exc}"

    def _registered(self) -> Path | None:
        import optuna

        if not optuna_schema_ready(self.storage):
            return None
        try:
            trials = optuna.load_study(study_name=self.study_name, storage=self.storage).get_trials(deepcopy=False)
        except KeyError:  # the study is not created yet
            return None
        path = trials[0].user_attrs.get("checkpoint") if trials else None
        return Path(path) if path else None

    def _run(self) -> None:
        while not self.stop.is_set() and time.time() < self.deadline:
            registered = self._registered()
            # Ray names them checkpoint_000000, checkpoint_000001, ...
            if registered is not None and int(registered.name.split("_")[-1]) + 1 >= self.min_checkpoints:
                workers = trial_workers()
                if len(workers) != 1:
                    titles = {pid: title(pid) for pid in descendants(os.getpid())}
                    self.problem = f"expected one trial worker, found {workers}: {titles}"
                    return
                if self.before_kill:
                    self.before_kill(registered)
                os.kill(workers[0], signal.SIGKILL)
                self.killed_pid = workers[0]
                self.checkpoint_at_kill = registered
                return
            time.sleep(0.1)
        self.problem = "the trial did not checkpoint in time"


# --------------------------------------------------------------------------- a one-trial study to kill

EPOCHS = 5
ONE_POINT = {"lr": [0.05]}  # a one-point grid: one trial
# LeNet-5 with momentum and a per-epoch scheduler: a resume that lost the optimizer's or the scheduler's
# state, or the data order, would show. About 1.5-3 s per epoch on one thread. (Dropout and augmentation
# across a resume are covered in tests/trainables/test_engine.py; cnn_bn_dropout is 6-10x slower.)
BASE = {"dataset": "mnist-small", "model": "lenet5", "optimizer": "momentum", "scheduler": "cosine",
        "batch_size": 64, "epochs": EPOCHS, "train_size": 2000, "val_size": 200, "test_size": 200,
        "checkpoint_every_s": 0}  # a checkpoint every epoch: the kills land between them


def register_one_point_study(monkeypatch) -> str:
    from hpstudy.search_spaces import SPACES, SearchSpace, grid_suggest
    from hpstudy.studies.builtin import STUDIES
    from hpstudy.studies.definition import StudyDefinition

    monkeypatch.setitem(SPACES, "fault-one-point", SearchSpace(
        name="fault-one-point", description="one grid point", suggest=grid_suggest(ONE_POINT), grid=ONE_POINT))
    monkeypatch.setitem(STUDIES, "fault-one-trial", StudyDefinition(
        name="fault-one-trial", description="one trial, killed mid-epoch", space="fault-one-point", base=BASE))
    return "fault-one-trial"


def run_with_killer(name: str, tmp_path: Path, data_dir: str, **killer_kw):
    """Runs the study in this process (Ray must be up) while a WorkerKiller acts; returns (plan, the
    reloaded study, the killer, the rows of Tune's result log of the trial). That log, which shows the
    worker of each report, is written by a Tune default logger that hpstudy turns off: it is turned on here."""
    import json
    import os
    from unittest import mock

    import optuna

    from hpstudy.studies.runner import RunSettings, plan_run, run_study

    settings = RunSettings(definition=name, storage=f"sqlite:///{tmp_path}/hpstudy.db",
                           mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", data_dir=data_dir,
                           workdir=str(tmp_path / "runs"), max_concurrent=1)
    plan = plan_run(settings)
    killer = WorkerKiller(settings.storage, plan.study_name, **killer_kw)
    killer.start()
    try:
        with mock.patch.dict(os.environ, {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"}):  # restored after
            run_study(plan)
    finally:
        killer.stop.set()
        killer.join()
    study = optuna.load_study(study_name=plan.study_name, storage=settings.storage)
    logs = list((tmp_path / "runs" / "ray").glob("*/optuna-0000/result.json"))
    rows = [json.loads(line) for log in logs for line in log.read_text().splitlines() if line.strip()]
    return plan, study, killer, rows


def without_timing(history):
    from hpstudy.trainables import TIMING_FIELDS

    return [{k: v for k, v in h.items() if k not in TIMING_FIELDS} for h in history]


def assert_undisturbed(plan, trial) -> None:
    """The trial's history (timing aside), test metrics and value equal an undisturbed in-process run
    of the same config and seed."""
    from hpstudy.trainables import TrainConfig, train

    reference = train(TrainConfig.from_dict({**plan.base, **trial.params}))
    assert without_timing(trial.user_attrs["history"]) == without_timing(reference["history"])
    assert trial.user_attrs["test"]["test_acc"] == reference["test"]["test_acc"]
    assert trial.user_attrs["test"]["confusion_matrix"] == reference["test"]["confusion_matrix"]
    assert trial.value == max(h["val_acc"] for h in reference["history"])
