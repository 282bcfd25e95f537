"""Service overhead: a 24-trial study through `hpstudy run` (Ray Tune + Optuna SQLite + MLflow SQLite)
against the same 24 trials run back to back in a bare Python loop, same machine, same run.

The trials are short, as the issue asks (a few seconds each): LeNet-5 on the 4,000 mnist-small training
images, 3 epochs, six optimizers x four seeds, one trial at a time with 2 threads on both sides (with
`--threads 1` a trial leaves the second core to the driver and Ray: the overhead without CPU contention).

Overhead = study wall time - loop wall time, split in two from the study's own timestamps (Optuna's
trial start and completion times):
- per trial: (first trial's end to last trial's end) / (trials - 1) - the loop's time per trial, i.e.
  what Ray Tune, Optuna and MLflow add around each trial once the study runs;
- fixed: the rest (imports, Ray and MLflow start, the first worker's process start and imports,
  shutdown), paid once per `hpstudy run`.
The study starts with empty SQLite files (the first run of a study creates MLflow's tables).

    python bench/service_overhead.py [--threads 2] [--trials-per-optimizer 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna

from _common import machine
from hpstudy.search_spaces import SPACES
from hpstudy.studies import builtin
from hpstudy.studies.definition import StudyDefinition
from hpstudy.studies.runner import RunSettings, plan_run, run_study
from hpstudy.trainables import TrainConfig, train

BASE = {"dataset": "mnist-small", "model": "lenet5", "lr": 0.01, "epochs": 3, "batch_size": 64,
        "train_size": 4000, "val_size": 1000, "test_size": 1000}
DEFINITION = StudyDefinition(name="bench-overhead", description="overhead benchmark", space="optimizers",
                             base=BASE)
GOAL_SHARE, GOAL_PER_TRIAL_S = 0.10, 0.2


def bare_loop(data_dir: str, seeds: tuple[int, ...], threads: int) -> float:
    started = time.perf_counter()
    for optimizer in SPACES["optimizers"].grid["optimizer"]:
        for seed in seeds:
            train(TrainConfig.from_dict({**BASE, "optimizer": optimizer, "seed": seed, "threads": threads,
                                         "data_dir": data_dir, "device": "cpu"}))
    return time.perf_counter() - started


def study(root: Path, data_dir: str, seeds: tuple[int, ...], threads: int) -> tuple[float, float]:
    """(wall time of run_study, time from the first trial's end to the last trial's end)."""
    builtin.STUDIES[DEFINITION.name] = DEFINITION  # a bench-only definition, never shipped
    storage = f"sqlite:///{root}/hpstudy.db"
    settings = RunSettings(definition=DEFINITION.name, storage=storage,
                           mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db", workdir=str(root / "runs"),
                           data_dir=data_dir, seeds=seeds, max_concurrent=1, cpus_per_trial=threads)
    started = time.perf_counter()
    run_study(plan_run(settings))
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=DEFINITION.name, storage=storage).trials
    # The loop's runs stop where the engine stops them (SGD at lr 0.01 stalls): so do the trials.
    assert all(t.state.is_finished() for t in trials), "every trial must finish"
    ends = sorted(t.datetime_complete for t in trials)
    return wall, (ends[-1] - ends[0]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads per trial, loop and study (default 2)")
    parser.add_argument("--trials-per-optimizer", type=int, default=4, help="seeds per optimizer (default 4)")
    args = parser.parse_args()
    seeds = tuple(range(args.trials_per_optimizer))
    root = Path(tempfile.mkdtemp(prefix="hpstudy-overhead-"))
    data_dir = str(root / "data")
    n = len(SPACES["optimizers"].grid["optimizer"]) * len(seeds)
    train(TrainConfig.from_dict({**BASE, "data_dir": data_dir, "epochs": 1}))  # unpack the data, warm up
    loop = bare_loop(data_dir, seeds, args.threads)
    served, span = study(root, data_dir, seeds, args.threads)
    overhead = served - loop
    per_trial = span / (n - 1) - loop / n
    fixed = overhead - n * per_trial
    print(f"machine: {machine()}; {args.threads} thread(s) per trial")
    print(f"{n} trials: bare loop {loop:.1f} s ({loop / n:.2f} s per trial); hpstudy run {served:.1f} s, "
          f"of which {span:.1f} s from the first trial's end to the last's")
    print(f"fixed per `hpstudy run` (imports, Ray, MLflow, the first worker's start, shutdown): {fixed:.1f} s")
    print(f"per trial once the study runs: {per_trial:.2f} s (goal {GOAL_PER_TRIAL_S} s)")
    print(f"RESULT overhead {overhead:.1f} s = {100 * overhead / loop:.0f}% of the loop "
          f"(goal {100 * GOAL_SHARE:.0f}%): {fixed:.1f} s fixed + {per_trial:.2f} s per trial "
          f"(goal {GOAL_PER_TRIAL_S} s)")


if __name__ == "__main__":
    main()
