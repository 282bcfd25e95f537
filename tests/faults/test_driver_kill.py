"""Fault 1: `kill -9` of the driver (and the local Ray it started) at several points of one study, each
time followed by the same command. The study ends with the planned trials: every grid point once, no
duplicate, nothing RUNNING in Optuna or in MLflow."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
from mlflow.tracking import MlflowClient

from tests.faults import optuna_schema_ready

STUDY = "lenet5-sgd-lr-bs"
GRID = {(lr, bs) for lr in (0.1, 0.01, 0.001) for bs in (64, 128)}


def _trials(storage):
    if not optuna_schema_ready(storage):  # never race the driver creating Optuna's tables
        return []
    try:
        return optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # no study yet
        return []


# Each point is a condition on the study, checked every 0.2 s; the driver is killed when it holds.
POINTS = {
    "during startup": lambda trials, before: True,
    "a trial running, no checkpoint yet": lambda trials, before: any(
        t.state.name == "RUNNING" and "checkpoint" not in t.user_attrs for t in trials),
    "a trial mid-way, with a checkpoint": lambda trials, before: any(
        t.state.name == "RUNNING" and "checkpoint" in t.user_attrs for t in trials),
    "just after a trial finished": lambda trials, before: sum(
        t.state.name in ("COMPLETE", "PRUNED") for t in trials) > before,
}


def test_kill_9_at_several_points_then_the_same_command_completes(tmp_path, data_dir):
    storage, mlflow_uri = f"sqlite:///{tmp_path}/hpstudy.db", f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "hpstudy", "run", STUDY, "--epochs", "3", "--train-size", "1000",
           "--val-size", "128", "--test-size", "128", "--max-concurrent", "1", "--storage", storage,
           "--checkpoint-every-s", "0",  # a checkpoint every epoch: some kills land between them
           "--mlflow-tracking-uri", mlflow_uri, "--data-dir", data_dir, "--workdir", str(tmp_path / "runs")]
    killed_at = []
    for name, holds in POINTS.items():
        finished_before = sum(t.state.name in ("COMPLETE", "PRUNED") for t in _trials(storage))
        log = open(tmp_path / "driver.log", "a")
        driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 240
        try:
            if name == "during startup":
                time.sleep(1.0)
            else:
                while not holds(_trials(storage), finished_before):
                    assert driver.poll() is None, f"the driver ended before '{name}'"
                    assert time.time() < deadline, f"never reached '{name}'"
                    time.sleep(0.2)
        finally:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
            driver.wait()
        killed_at.append((name, Counter(t.state.name for t in _trials(storage))))

    final = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]

    trials = _trials(storage)
    states = Counter(t.state.name for t in trials)
    assert states["RUNNING"] == 0 and states["WAITING"] == 0, (states, killed_at)
    results = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted((t.params["lr"], t.params["batch_size"]) for t in results) == sorted(GRID), killed_at
    assert all(t.user_attrs.get("requeued_as") for t in trials if t.state.name == "FAIL")
    assert states["FAIL"] >= 2, f"the kills mid-trial interrupted trials: {killed_at}"

    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(STUDY).experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    finished = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in finished) == sorted(t.number for t in results)
