"""MlflowTrialLogger's writer thread, with a fake MLflow client (the real store is covered by test_run.py)."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import optuna
import pytest
from mlflow.entities import Metric, RunTag

from hpstudy.studies import mlflow_tracking
from hpstudy.studies.mlflow_tracking import MlflowTrialLogger
from hpstudy.studies.optuna_tune import OptunaSearcher, StudyBridge


class RecordingClient:
    """Records each call and the thread it came from; a call named in ``fail`` raises. ``create_run``
    takes ``create_s`` seconds, as a tracking server far away may."""

    def __init__(self, fail: str | None = None, create_s: float = 0.0):
        self.calls: list[tuple[str, str]] = []
        self.metric_steps: list[list[int]] = []  # per log_batch, the steps of its metrics
        self.fail = fail
        self.create_s = create_s

    def _record(self, name: str, run_id: str) -> None:
        self.calls.append((name, threading.current_thread().name))
        if name == self.fail:
            raise RuntimeError(f"{name} failed for {run_id}")

    def create_run(self, experiment_id, run_name, tags):
        time.sleep(self.create_s)
        self._record("create_run", "")
        return SimpleNamespace(info=SimpleNamespace(run_id="run-0"))

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.metric_steps.append(sorted({m.step for m in metrics}))
        self._record("log_batch:" + ("params" if params else "tags" if tags else "metrics"), run_id)

    def log_artifacts(self, run_id, path):
        self._record("log_artifacts", run_id)

    def set_terminated(self, run_id, status):
        self._record(f"set_terminated:{status}", run_id)


def logged_trial(client: RecordingClient) -> MlflowTrialLogger:
    """One trial through the logger and the searcher, in the order Tune calls them: start, two epochs,
    then the searcher tells Optuna, then the logger finishes the run."""
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    bridge = StudyBridge(study=study, suggest=lambda t: {}, base={}, target=1)
    bridge.trials["ray-0"] = trial
    bridge.histories["ray-0"] = {}
    logger = MlflowTrialLogger(client, "0", "parent", bridge)
    ray_trial = SimpleNamespace(trial_id="ray-0", config={"lr": 0.1, "optuna_trial_number": 0}, last_result={})
    logger.on_trial_start(0, [], ray_trial)
    for epoch in (1, 2):
        logger.on_trial_result(0, [], ray_trial, {"epoch": epoch, "val_acc": 0.5, "train_loss": 1.0})
    final = {"history": [{"epoch": 1, "val_acc": 0.5}], "test": None, "classes": None, "param_count": 1,
             "status": "completed", "reason": None}
    OptunaSearcher(bridge).on_trial_complete("ray-0", {"final": True, "result_json": json.dumps(final)})
    logger.on_trial_complete(0, [], ray_trial)
    return logger


def test_writes_run_in_order_on_one_thread_and_close_waits_for_them():
    client = RecordingClient()
    logger = logged_trial(client)
    logger.close()
    # A short trial: its two epochs go with the outcome, in one batch.
    assert [name for name, _ in client.calls] == [
        "create_run", "log_batch:params", "log_batch:tags", "set_terminated:FINISHED"]
    assert client.metric_steps == [[], [0, 1, 2]]  # epochs 1 and 2, and the outcome's step-0 metrics
    # Every call, creating the run included, is made by the one writer thread, off Tune's thread.
    assert {thread for _, thread in client.calls} == {"hpstudy-mlflow_0"}
    assert logger.bridge.study.trials[0].user_attrs["mlflow_run_id"] == "run-0"


def test_a_trial_is_told_only_once_it_holds_its_run_id():
    # A slow tracking server: the run is still being created when the trial ends. The searcher waits for
    # it, so the finished Optuna trial links to its run (a told trial takes no more attributes).
    logger = logged_trial(RecordingClient(create_s=0.5))
    logger.close()
    frozen = logger.bridge.study.trials[0]
    assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.user_attrs["mlflow_run_id"] == "run-0"


def test_epoch_metrics_are_written_once_metrics_every_s_have_passed(monkeypatch):
    monkeypatch.setattr(mlflow_tracking, "METRICS_EVERY_S", 0.0)  # a long trial: each epoch is due at once
    client = RecordingClient()
    logged_trial(client).close()
    assert [name for name, _ in client.calls] == [
        "create_run", "log_batch:params", "log_batch:metrics", "log_batch:metrics", "log_batch:tags",
        "set_terminated:FINISHED"]
    assert client.metric_steps == [[], [1], [2], [0]]


def test_metrics_go_in_slices_mlflow_accepts():
    client = RecordingClient()
    logger = MlflowTrialLogger(client, "0", "parent", None)
    metrics = [Metric("val_acc", 0.5, 0, step) for step in range(2500)]
    logger._log_metrics("run-0", metrics, [RunTag("optuna.state", "COMPLETE")])
    assert [len(steps) for steps in client.metric_steps] == [990, 990, 520]  # 1,000 entities at most, tags included
    assert [name for name, _ in client.calls] == ["log_batch:tags", "log_batch:metrics", "log_batch:metrics"]


def test_close_raises_a_failed_write(monkeypatch):
    monkeypatch.setattr(mlflow_tracking, "METRICS_EVERY_S", 0.0)
    logger = logged_trial(RecordingClient(fail="log_batch:metrics"))
    with pytest.raises(RuntimeError, match="log_batch:metrics failed for run-0"):
        logger.close()
