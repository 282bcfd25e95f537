"""`hpstudy run` with the real parts: a local Ray (one per module), SQLite Optuna and MLflow stores,
and the `optuna` CLI in a subprocess. Tiny data: 256 MNIST training images, 2-3 epochs."""

import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest.mock
from pathlib import Path

import optuna
import pytest
import ray
from mlflow.tracking import MlflowClient

from hpstudy.cli import main
from hpstudy.studies.builtin import STUDIES
from hpstudy.studies.definition import StudyDefinition

OPTUNA = str(Path(sys.executable).parent / "optuna")
TINY = ["--train-size", "256", "--val-size", "128", "--test-size", "256"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # Ray's workers inherit this: Tune reuses a trial's actor only if the trial's thread ends within this
    # many seconds of Tune's stop (default 2); 1 s sharpens the test of that below.
    with unittest.mock.patch.dict(os.environ, {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "1"}):
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Place:
    def __init__(self, root: Path, data_dir: str):
        self.root = root
        self.db = root / "hpstudy.db"
        self.storage = f"sqlite:///{self.db}"
        self.mlflow = f"sqlite:///{root / 'mlflow.db'}"
        self.data_dir = data_dir

    def args(self, *extra):
        # TINY first: a test's own options (e.g. a larger --train-size) come later and win.
        return ["run", *TINY, "--storage", self.storage, "--mlflow-tracking-uri", self.mlflow,
                "--data-dir", self.data_dir, "--workdir", str(self.root / "runs"), *extra]

    def optuna_cli(self, *args):
        proc = subprocess.run([OPTUNA, *args, "--storage", self.storage], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture
def place(tmp_path, data_dir):
    return Place(tmp_path, data_dir)


def test_grid_study_runs_every_point_once_and_logs_everywhere(place, capsys):
    assert main(place.args("lenet5-sgd-lr-bs", "--epochs", "2", "--max-concurrent", "2")) == 0
    printed = capsys.readouterr().out
    assert "| lr \\ batch_size | 64 | 128 |" in printed and "Best trial" in printed
    assert stat.S_IMODE((place.root / "runs").stat().st_mode) == 0o700  # checkpoints are private
    # Tune's default loggers (a third copy of every result, written while the trial waits) are off.
    tune_logs = [p.name for p in (place.root / "runs" / "ray").glob("*/optuna-*/*")
                 if p.name in ("result.json", "progress.csv") or p.name.startswith("events.out.tfevents")]
    assert not tune_logs, tune_logs

    # Optuna, through its own CLI: 6 COMPLETE trials, one per grid point, values are best val_acc.
    trials = json.loads(place.optuna_cli("trials", "--study-name", "lenet5-sgd-lr-bs", "-f", "json"))
    assert len(trials) == 6 and {t["state"] for t in trials} == {"COMPLETE"}
    points = {(t["params"]["lr"], t["params"]["batch_size"]) for t in trials}
    assert points == {(lr, bs) for lr in (0.1, 0.01, 0.001) for bs in (64, 128)}
    best = json.loads(place.optuna_cli("best-trial", "--study-name", "lenet5-sgd-lr-bs", "-f", "json"))
    assert best["value"] == max(t["value"] for t in trials)

    study = optuna.load_study(study_name="lenet5-sgd-lr-bs", storage=place.storage)
    attr = study.user_attrs["hpstudy"]
    assert attr["definition"] == "lenet5-sgd-lr-bs" and attr["settings"]["epochs"] == 2
    for t in study.trials:
        assert sorted(t.intermediate_values) == [1, 2]
        assert t.value == max(t.intermediate_values.values())
        assert {"ray_trial_id", "mlflow_run_id", "checkpoint", "history", "test"} <= set(t.user_attrs)
        assert len(t.user_attrs["history"]) == 2 and t.user_attrs["status"] == "completed"

    # MLflow: one experiment, a parent run, six nested child runs with per-epoch metrics and artifacts.
    client = MlflowClient(place.mlflow)
    experiment = client.get_experiment_by_name("lenet5-sgd-lr-bs")
    runs = client.search_runs([experiment.experiment_id])
    parent = attr["mlflow"]["parent_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(runs) == 7 and len(children) == 6
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == list(range(6))
    for t in study.trials:
        run = by_number[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.data.tags["optuna.state"] == "COMPLETE"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2]
        assert run.data.metrics["test_acc"] == pytest.approx(t.user_attrs["test"]["test_acc"])
        # No per-trial PNG (MLflow charts the epochs): the CSVs and the full result.
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
            "history.csv", "per_class.csv", "confusion_matrix.csv", "result.json"}

    # Running the same command again continues the study: nothing is left to do, nothing is added.
    assert main(place.args("--study-name", "lenet5-sgd-lr-bs")) == 0
    assert len(optuna.load_study(study_name="lenet5-sgd-lr-bs", storage=place.storage).trials) == 6

    # The report: Markdown + figures, logged to the study's MLflow parent run.
    assert main(["report", "--study-name", "lenet5-sgd-lr-bs", "--storage", place.storage,
                 "--out", str(place.root / "report")]) == 0
    assert "| lr \\ batch_size |" in (place.root / "report" / "report.md").read_text()
    assert "report.md" in {Path(a.path).name for a in client.list_artifacts(parent, "report")}


def test_study_created_with_optuna_cli_and_enqueued_points_with_median_pruning(place):
    # A user creates the study with the optuna CLI and queues the order of the first four points.
    place.optuna_cli("create-study", "--study-name", "pre", "--direction", "maximize")
    study = optuna.load_study(study_name="pre", storage=place.storage)
    for lr, bs in [(0.1, 64), (0.1, 128), (0.01, 64), (0.001, 128)]:
        study.enqueue_trial({"lr": lr, "batch_size": bs})
    # 1,000 images: enough for lr 0.1 to learn by epoch 2 while lr 0.001 stays near chance.
    assert main(place.args("lenet5-sgd-lr-bs", "--study-name", "pre", "--epochs", "3", "--pruner", "median",
                           "--max-concurrent", "1", "--train-size", "1000")) == 0
    study = optuna.load_study(study_name="pre", storage=place.storage)
    assert len(study.trials) == 6
    points = [(t.params["lr"], t.params["batch_size"]) for t in study.trials]
    assert len(set(points)) == 6  # the enqueued points were not sampled again
    assert points[:4] == [(0.1, 64), (0.1, 128), (0.01, 64), (0.001, 128)]
    # The two lr 0.1 trials are the median pruner's startup trials (it waits for 2 completed ones);
    # lr 0.01 and 0.001 sit near chance, far below their median, after epoch 1.
    assert [t.state.name for t in study.trials[:2]] == ["COMPLETE", "COMPLETE"]
    for slow in study.trials[2:4]:
        assert slow.state.name == "PRUNED", [(t.number, t.state.name, t.intermediate_values) for t in study.trials]
        assert slow.user_attrs["reason"].startswith("pruned by MedianPruner at epoch 1")
        assert sorted(slow.intermediate_values) == [1]


def test_checks_inside_an_epoch_let_the_pruner_stop_a_trial_before_its_first_epoch_ends(place):
    study = optuna.create_study(study_name="checked", storage=place.storage, direction="maximize")
    for lr, bs in [(0.1, 64), (0.1, 128), (0.001, 64)]:
        study.enqueue_trial({"lr": lr, "batch_size": bs})
    # 1,000 images, batch 64: 16 batches per epoch, a check after every 4th; the median pruner may
    # prune from the 2nd check on (30% into the first epoch).
    assert main(place.args("lenet5-sgd-lr-bs", "--study-name", "checked", "--epochs", "2", "--pruner", "median",
                           "--max-concurrent", "1", "--train-size", "1000", "--n-trials", "3",
                           "--checks-per-epoch", "4")) == 0
    study = optuna.load_study(study_name="checked", storage=place.storage)
    fast, _, slow = study.trials
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert sorted(fast.intermediate_values) == list(range(1, 9))  # 2 epochs x 4 checks
    assert fast.value == max(fast.user_attrs["history"][e]["val_acc"] for e in range(2))  # epochs, not samples
    assert slow.user_attrs["reason"].startswith("pruned by MedianPruner at step 2 (0.50 epochs)")
    assert sorted(slow.intermediate_values) == [1, 2] and slow.user_attrs["history"] == []
    assert study.user_attrs["hpstudy"]["settings"]["overrides"]["checks_per_epoch"] == 4
    client = MlflowClient(place.mlflow)  # MLflow charts epochs only
    assert [m.step for m in client.get_metric_history(fast.user_attrs["mlflow_run_id"], "val_acc")] == [1, 2]
    # The study keeps its checks (they fix what a step means): another value is refused.
    assert main(place.args("--study-name", "checked", "--train-size", "1000", "--checks-per-epoch", "2")) == 2
    assert len(optuna.load_study(study_name="checked", storage=place.storage).trials) == 3


def test_diverging_trial_is_pruned_inside_its_first_epoch_with_its_reason(place, monkeypatch):
    monkeypatch.setitem(STUDIES, "tiny-diverge", StudyDefinition(
        name="tiny-diverge", description="adam vs sgd at lr 0.1 on an MLP", space="optimizers",
        base={"dataset": "mnist-small", "model": "mlp", "lr": 0.1, "epochs": 2, "batch_size": 64}))
    assert main(place.args("tiny-diverge", "--max-concurrent", "2")) == 0
    study = optuna.load_study(study_name="tiny-diverge", storage=place.storage)
    adam = next(t for t in study.trials if t.params["optimizer"] == "adam")
    assert adam.state.name == "PRUNED" and adam.user_attrs["status"] == "diverged"
    assert adam.user_attrs["reason"].startswith("diverged: loss=") and adam.intermediate_values == {}
    client = MlflowClient(place.mlflow)
    run = client.get_run(adam.user_attrs["mlflow_run_id"])
    assert run.data.tags["optuna.state"] == "PRUNED" and run.data.tags["hpstudy.reason"].startswith("diverged")


BAD_RUNS = {
    "unknown definition": (["no-such-study"], "definition: unknown definition 'no-such-study'"),
    "no definition": ([], "definition: name a study definition"),
    "unknown sampler": (["lenet5-sgd-lr-bs", "--sampler", "cmaes"], "sampler: unknown sampler 'cmaes'"),
    "unknown pruner": (["lenet5-sgd-lr-bs", "--pruner", "asha"], "pruner: unknown pruner 'asha'"),
    "no checks": (["lenet5-sgd-lr-bs", "--checks-per-epoch", "0"], "checks_per_epoch: must be a whole number >= 1"),
    "grid on a define-by-run space": (["lenet5-tpe", "--sampler", "grid"], "sampler: grid needs a search space with a grid"),
    "bad seeds": (["lenet5-sgd-lr-bs", "--seeds", "0,x"], "argument --seeds: expected comma-separated integers"),
    "zero trials": (["lenet5-tpe", "--n-trials", "0"], "n_trials: must be >= 1"),
    "zero epochs": (["lenet5-sgd-lr-bs", "--epochs", "0"], "epochs: must be >= 1"),
    "negative cpus": (["lenet5-sgd-lr-bs", "--cpus-per-trial", "-1"], "cpus_per_trial: must be > 0"),
    "negative gpus": (["lenet5-sgd-lr-bs", "--gpus-per-trial", "-0.5"], "gpus_per_trial: must be >= 0"),
    "train size too big": (["lenet5-sgd-lr-bs", "--train-size", "99999"], "train_size: 99999 is more than"),
    "dataset missing offline": (["simple-cnn-optimizers"], "cifar10: files missing in"),
    "unreachable ray address": (["lenet5-sgd-lr-bs", "--ray-address", "127.0.0.1:1"], "ray_address: cannot reach a Ray head at 127.0.0.1:1"),
    "malformed ray address": (["lenet5-sgd-lr-bs", "--ray-address", "headnode"], "ray_address: expected HOST:PORT"),
    "grid point too big for the data": (["lenet5-sgd-lr-bs", "--train-size", "100"], "batch_size: 128 is larger than the training set (100 images)"),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_run_input_is_one_line_exit_2_nothing_written(case, place, capsys):
    args, expected = BAD_RUNS[case]
    code = main(place.args(*args))
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("hpstudy:")]
    assert len(lines) == 1 and expected in lines[0], err
    assert not place.db.exists() and not (place.root / "mlflow.db").exists() and not (place.root / "runs").exists()


def test_bad_storage_urls(place, capsys):
    for url, expected in [("redis://localhost/0", "storage: unsupported storage URL"),
                          (f"sqlite:///{place.root}/missing/dir/s.db", "does not exist"),
                          ("postgresql://nobody@127.0.0.1:1/none", "storage: cannot open postgresql://")]:
        code = main(["run", "lenet5-sgd-lr-bs", "--study-name", "x", "--storage", url, "--data-dir", place.data_dir,
                     "--mlflow-tracking-uri", place.mlflow, "--workdir", str(place.root / "runs")])
        assert code == 2 and expected in capsys.readouterr().err
    assert not (place.root / "mlflow.db").exists() and not (place.root / "runs").exists()


def test_conflicting_direction_or_definition_is_refused(place, capsys):
    place.optuna_cli("create-study", "--study-name", "min", "--direction", "minimize")
    assert main(place.args("lenet5-sgd-lr-bs", "--study-name", "min")) == 2
    assert "direction: study 'min' was created to minimize" in capsys.readouterr().err
    optuna.load_study(study_name="min", storage=place.storage).set_user_attr(
        "hpstudy", {"definition": "lenet5-tpe", "settings": {}})
    assert main(place.args("lenet5-sgd-lr-bs", "--study-name", "min")) == 2
    assert "definition: study 'min' runs 'lenet5-tpe', not 'lenet5-sgd-lr-bs'" in capsys.readouterr().err
    assert len(optuna.load_study(study_name="min", storage=place.storage).trials) == 0


def test_seeds_repeat_every_configuration_and_the_table_shows_spread(place, capsys):
    assert main(place.args("lenet5-sgd-lr-bs", "--epochs", "1", "--seeds", "0,1", "--max-concurrent", "2")) == 0
    printed = capsys.readouterr().out
    study = optuna.load_study(study_name="lenet5-sgd-lr-bs", storage=place.storage)
    runs = [(t.params["lr"], t.params["batch_size"], t.params["seed"]) for t in study.trials]
    assert len(runs) == 12 and len(set(runs)) == 12 and {s for *_, s in runs} == {0, 1}
    assert study.user_attrs["hpstudy"]["settings"]["seeds"] == [0, 1]
    assert " ± " in printed  # mean ± std over the two seeds in every cell
    # A continuation cannot change the seeds (results would mix two designs).
    assert main(place.args("--study-name", "lenet5-sgd-lr-bs", "--seeds", "0,1,2")) == 2
    assert "seeds: this study was run with seeds=[0, 1]" in capsys.readouterr().err
    # Nor the sampler's seed: it orders the grid, and grid ids must keep meaning the same points.
    assert main(place.args("--study-name", "lenet5-sgd-lr-bs", "--seed", "7")) == 2
    assert "seed: this study was run with seed=0" in capsys.readouterr().err
    # A typo is named as one, not as a change of the study's settings.
    assert main(place.args("--study-name", "lenet5-sgd-lr-bs", "--pruner", "mediam")) == 2
    assert "pruner: unknown pruner 'mediam' (choose from: none, median" in capsys.readouterr().err
    assert main(place.args("--study-name", "lenet5-sgd-lr-bs", "--epochs", "0")) == 2
    assert "epochs: must be >= 1 (got 0)" in capsys.readouterr().err


def test_seeds_with_tpe_repeat_each_sampled_configuration(place, capsys, monkeypatch):
    monkeypatch.setitem(STUDIES, "tiny-tpe", StudyDefinition(
        name="tiny-tpe", description="TPE over the optimizer", space="optimizers", sampler="tpe",
        base={"dataset": "mnist-small", "model": "mlp", "model_args": {"hidden": [32]}, "lr": 0.01,
              "epochs": 1, "batch_size": 64}, n_trials=2))
    assert main(place.args("tiny-tpe", "--seeds", "0,1", "--max-concurrent", "1")) == 0
    study = optuna.load_study(study_name="tiny-tpe", storage=place.storage)
    assert len(study.trials) == 4  # 2 configurations x 2 seeds
    configurations = {}
    for t in study.trials:
        configurations.setdefault(t.params["optimizer"], set()).add(t.params["seed"])
    assert all(seeds == {0, 1} for seeds in configurations.values()), configurations
    assert " ± " in capsys.readouterr().out
    assert study.user_attrs["hpstudy"]["settings"]["n_trials"] == 2


def test_trial_actors_carry_no_runtime_env_so_the_first_trial_takes_a_worker_ray_started_with(monkeypatch):
    """Any runtime env on Tune's trial actor (Tune's default: PL_DISABLE_FORK for Lightning) makes Ray
    start a new process for the first trial instead of taking an idle worker started with Ray."""
    from ray.tune.execution.class_cache import ENV_VARS_TO_PROPAGATE, _ActorClassCache

    from hpstudy.studies.ray_start import let_trials_take_prestarted_workers

    for name in ENV_VARS_TO_PROPAGATE:  # a driver's AWS keys would go along: none set here
        monkeypatch.delenv(name, raising=False)

    class Trainable:
        pass

    let_trials_take_prestarted_workers()
    assert _ActorClassCache().get(Trainable)._default_options.get("runtime_env") in (None, {}, {"env_vars": {}})


def _tune(tmp_path, param_space, scheduler=None, callbacks=(), trainable=None):
    """The real trainable through a bare Tuner, one trial at a time on a reused actor (as hpstudy runs it)."""
    from ray import tune

    from hpstudy.trainables.trainable import tune_trainable

    return tune.Tuner(
        trainable or tune_trainable, param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True, scheduler=scheduler),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), callbacks=list(callbacks), verbose=0),
    ).fit()


def test_a_trial_trains_on_while_the_driver_handles_its_report(tmp_path):
    """Tune holds a function trainable in every report until the driver has handled it, unless its session
    reports asynchronously, which TuneReporter turns on: the worker then writes its next epoch's checkpoint
    while the driver is still busy with the first report."""
    from ray import tune

    seen = {}

    class SlowDriver(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("epoch") != 1 or "next" in seen:
                return
            # The worker's scratch checkpoints (trainable.trial_scratch), named by host and worker pid.
            pattern = f"hpstudy-trial-*-{result['pid']}-*/checkpoints/epoch_0002.pt"
            deadline = time.time() + 30
            while not (found := list(Path(tempfile.gettempdir()).glob(pattern))) and time.time() < deadline:
                time.sleep(0.05)
            seen["next"] = bool(found)

    results = _tune(tmp_path, {"dataset": "synthetic", "model": "mlp", "model_args": {"hidden": [32]},
                               "train_size": 256, "val_size": 64, "test_size": 64, "batch_size": 32, "epochs": 3,
                               "lr": 0.05, "threads": 1, "checkpoint_every_s": 0}, callbacks=[SlowDriver()])
    assert not results.errors and seen == {"next": True}


def _stop_at_first_report():
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class StopAtFirstReport(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            return TrialScheduler.STOP

    return StopAtFirstReport()


def test_a_trial_tune_stops_between_reports_ends_at_once_and_its_actor_is_reused(tmp_path):
    """With reports asynchronous, Tune's stop (a pruner's decision) reaches a trial that is training, not
    one held in its report: it must end at its next step (TuneReporter.check_stop), not at its next report.
    Tune reuses the actor only if the trial's thread ended within TUNE_FUNCTION_THREAD_TIMEOUT_S (1 s in
    this module); here the next report would come half an epoch of a wide MLP later (2.6 s on session
    14's machine)."""
    from ray import tune

    # 20M weights: about 120 MFLOP per training image; 1,600 images: 5.3 s per epoch on one thread here.
    results = _tune(tmp_path, {"dataset": "synthetic", "model": "mlp", "model_args": {"hidden": [4096, 4096]},
                               "train_size": 1600, "val_size": 64, "test_size": 64, "batch_size": 32, "epochs": 2,
                               "checks_per_epoch": 2, "lr": 0.01, "threads": 1, "seed": tune.grid_search([0, 1])},
                    scheduler=_stop_at_first_report())
    assert not results.errors
    rows = [r.metrics for r in results]
    assert [(r["partial"], r["step"]) for r in rows] == [(True, 1), (True, 1)], rows
    assert rows[0]["pid"] == rows[1]["pid"], "the stopped trial's actor was not reused"


def test_a_trial_stopped_in_a_long_step_hands_its_actor_to_the_next_trial(tmp_path):
    """A stop lands while the trial trains a step, and its thread ends when that step does: seconds to
    minutes later for a large model on a CPU. Tune reuses the actor for the next trial only if the thread
    ended within TUNE_FUNCTION_THREAD_TIMEOUT_S (Ray's default: 2 s); when it did not, Ray 2.60's Tune
    logged "Could not re-use actor" and the whole study hung. Here the step after the first trial's first
    report takes 4 s (a sleep), in a worker without the variable, as a user's (this module's Ray sets 1 s
    for the test above). Without TuneReporter's longer wait, Tune hangs: the Tuner runs in a thread, so
    that the test can fail instead of holding CI to its time limit."""
    from ray import tune

    def trainable_in_a_users_worker(config):
        from hpstudy.trainables import trainable

        os.environ.pop("TUNE_FUNCTION_THREAD_TIMEOUT_S", None)
        report = trainable.TuneReporter.report

        def report_then_a_long_step(self, metrics, checkpoint_dir):
            report(self, metrics, checkpoint_dir)
            time.sleep(4)  # the next step, during which Tune stops the trial

        if config["seed"] == 0:
            trainable.TuneReporter.report = report_then_a_long_step
        try:
            trainable.tune_trainable(config)
        finally:
            trainable.TuneReporter.report = report

    outcome = {}

    def fit():
        try:
            outcome["results"] = _tune(
                tmp_path, {"dataset": "synthetic", "model": "mlp", "model_args": {"hidden": [32]}, "train_size": 256,
                           "val_size": 64, "test_size": 64, "batch_size": 32, "epochs": 2, "lr": 0.01, "threads": 1,
                           "seed": tune.grid_search([0, 1])},
                scheduler=_stop_at_first_report(), trainable=trainable_in_a_users_worker)
        except BaseException as exc:  # raised below, in the test's thread
            outcome["error"] = exc

    tuner = threading.Thread(target=fit, daemon=True)
    tuner.start()
    tuner.join(timeout=180)
    assert outcome, "Tune hung after the stopped trial's long step (or took over 180 s)"
    if "error" in outcome:
        raise outcome["error"]
    results = outcome["results"]
    assert not results.errors
    rows = [r.metrics for r in results]
    assert [r["epoch"] for r in rows] == [1, 1], rows
    assert rows[0]["pid"] == rows[1]["pid"], "the stopped trial's actor was not reused"


def test_a_tune_run_folder_stays_one_folder_whatever_the_study_is_called():
    from hpstudy.studies.runner import tune_run_name

    for study_name in ("a/b", "../../x", "..", "étude 1", "lenet5-sgd-lr-bs"):
        name = tune_run_name(study_name, "0123456789", 2)
        assert "/" not in name and not name.startswith(".") and name.endswith("-012345-2"), name
    assert tune_run_name("lenet5-sgd-lr-bs", "abcdef", 1).startswith("lenet5-sgd-lr-bs-")
