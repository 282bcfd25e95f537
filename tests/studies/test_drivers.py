"""Several `hpstudy run` drivers on one study (a SLURM job array): a real PostgreSQL server for Optuna
and MLflow, a journal file on a shared path, and one Ray cluster for the module that every driver
attaches to. Every grid point runs exactly once, nothing is lost, nothing is left RUNNING."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from hpstudy.studies import storage as storages
from hpstudy.trainables.datasets import load_split

STUDY = "lenet5-sgd-lr-bs"  # a 6-point grid: lr (3) x batch size (2)
GRID = {(lr, bs) for lr in (0.1, 0.01, 0.001) for bs in (64, 128)}


@pytest.fixture(scope="module")
def ray_address():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    yield cluster.address
    cluster.shutdown()


@pytest.fixture
def staged(data_dir):
    load_split("mnist-small", True, data_dir)  # unpacked once, before drivers read it side by side
    return data_dir


def driver(tmp_path, storage, mlflow_uri, ray_address, data_dir, *extra, log_name="driver"):
    cmd = [sys.executable, "-m", "hpstudy", "run", STUDY, "--storage", storage, "--mlflow-tracking-uri", mlflow_uri,
           "--ray-address", ray_address, "--data-dir", data_dir, "--workdir", str(tmp_path / "runs"),
           "--train-size", "256", "--val-size", "128", "--test-size", "128", "--max-concurrent", "1",
           "--checkpoint-every-s", "0", *extra]  # a checkpoint every epoch: a driver is killed between them
    log = open(tmp_path / f"{log_name}.log", "w")
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(procs, tmp_path, timeout=600):
    deadline = time.time() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1, deadline - time.time())))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("*.log")))
    return codes, logs


def assert_exact_grid(study):
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    assert states["RUNNING"] == 0 and states["WAITING"] == 0, states
    results = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    points = [(t.params["lr"], t.params["batch_size"]) for t in results]
    assert sorted(points) == sorted(GRID), points  # each grid point once: none lost, none duplicated
    # A FAIL is only ever an interrupted trial that was re-queued (and then finished above).
    assert all(t.user_attrs.get("requeued_as") for t in trials if t.state.name == "FAIL")
    return results


def assert_mlflow_closed(mlflow_uri, study, results):
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = [r for r in runs if r.data.tags.get("hpstudy.role") == "study"]
    assert len(parents) == 1, "one parent run for the study, whichever driver came first"
    finished = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in finished) == sorted(t.number for t in results)
    assert {r.data.tags["mlflow.parentRunId"] for r in finished} == {parents[0].info.run_id}


def test_four_drivers_on_one_postgresql_study(tmp_path, postgres, staged, ray_address):
    # Empty databases: the four drivers also race to create Optuna's and MLflow's tables.
    storage, mlflow_uri = postgres.create_database("optuna4"), postgres.create_database("mlflow4")
    procs = [driver(tmp_path, storage, mlflow_uri, ray_address, staged, "--epochs", "1", log_name=f"d{i}")
             for i in range(4)]
    codes, logs = finish(procs, tmp_path)
    assert codes == [0, 0, 0, 0], logs

    study = optuna.load_study(study_name=STUDY, storage=storage)
    results = assert_exact_grid(study)
    assert len(study.trials) == 6, "no trial is created beyond the grid"
    assert_mlflow_closed(mlflow_uri, study, results)
    drivers = {t.user_attrs["driver"] for t in results}
    assert len(drivers) >= 2, "the drivers shared the work"


def test_a_killed_driver_is_taken_over_by_the_others(tmp_path, postgres, staged, ray_address):
    storage, mlflow_uri = postgres.create_database("optuna_kill"), postgres.create_database("mlflow_kill")
    MlflowClient(mlflow_uri).search_experiments()
    longer = ("--epochs", "4", "--train-size", "1500")
    victim = driver(tmp_path, storage, mlflow_uri, ray_address, staged, *longer, log_name="victim")
    deadline = time.time() + 300
    while True:  # until the victim runs a trial that has a checkpoint
        assert time.time() < deadline, (tmp_path / "victim.log").read_text()[-2000:]
        time.sleep(0.5)
        try:
            # Through hpstudy's opening, whose lock serialises the creation of Optuna's tables: a plain
            # load_study here raced the victim's and failed once with a duplicate type in pg_type.
            study = optuna.load_study(study_name=STUDY, storage=storages.open_storage(storage))
            trials = study.get_trials(deepcopy=False)
        except KeyError:
            continue
        taken = [t for t in trials if t.state.name == "RUNNING" and "checkpoint" in t.user_attrs]
        if taken:
            break
    survivor = driver(tmp_path, storage, mlflow_uri, ray_address, staged, *longer, log_name="survivor")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    codes, logs = finish([survivor], tmp_path)
    assert codes == [0], logs

    study = optuna.load_study(study_name=STUDY, storage=storage)
    results = assert_exact_grid(study)
    interrupted = [t for t in study.trials if t.state.name == "FAIL"]
    assert taken[0].number in {t.number for t in interrupted}
    continued = [t for t in results if t.user_attrs.get("retry_of") == taken[0].number]
    assert len(continued) == 1 and continued[0].user_attrs["resume_from"] == interrupted[0].user_attrs["checkpoint"]
    # Its curve is whole: the epochs before the checkpoint are carried over, the rest trained again.
    assert sorted(continued[0].intermediate_values) == [1, 2, 3, 4]
    assert_mlflow_closed(mlflow_uri, study, results)


def test_two_drivers_on_one_journal_file(tmp_path, staged, ray_address):
    storage = f"journal:///{tmp_path}/study.log"
    mlflow_uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(mlflow_uri).search_experiments()
    procs = [driver(tmp_path, storage, mlflow_uri, ray_address, staged, "--epochs", "1", log_name=f"j{i}")
             for i in range(2)]
    codes, logs = finish(procs, tmp_path)
    assert codes == [0, 0], logs
    study = optuna.load_study(study_name=STUDY, storage=storages.open_storage(storage))
    results = assert_exact_grid(study)
    assert len(study.trials) == 6
    assert_mlflow_closed(mlflow_uri, study, results)
