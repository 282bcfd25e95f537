"""Service overhead: a 24-trial study through `hpstudy run` (Ray Tune + Optuna SQLite + MLflow SQLite)
against the same 24 trials run back to back in a bare Python loop, same machine, same run.

The trials: LeNet-5 on 1,000 mnist-small images, 2 epochs, six optimizers x four seeds, one trial at a
time with 2 threads on both sides. Overhead = (study wall time - loop wall time), in total and per trial;
the study's time includes starting Ray.

    python bench/service_overhead.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hpstudy.search_spaces import SPACES
from hpstudy.studies import builtin
from hpstudy.studies.definition import StudyDefinition
from hpstudy.studies.runner import RunSettings, plan_run, run_study
from hpstudy.trainables import TrainConfig, train

SEEDS = (0, 1, 2, 3)
BASE = {"dataset": "mnist-small", "model": "lenet5", "lr": 0.01, "epochs": 2, "batch_size": 64,
        "train_size": 1000, "val_size": 200, "test_size": 1000}
DEFINITION = StudyDefinition(name="bench-overhead", description="overhead benchmark", space="optimizers",
                             base=BASE)


def bare_loop(data_dir: str) -> float:
    started = time.perf_counter()
    for optimizer in SPACES["optimizers"].grid["optimizer"]:
        for seed in SEEDS:
            train(TrainConfig.from_dict({**BASE, "optimizer": optimizer, "seed": seed, "threads": 2,
                                         "data_dir": data_dir, "device": "cpu"}))
    return time.perf_counter() - started


def study(root: Path, data_dir: str) -> float:
    builtin.STUDIES[DEFINITION.name] = DEFINITION  # a bench-only definition, never shipped
    settings = RunSettings(definition=DEFINITION.name, storage=f"sqlite:///{root}/hpstudy.db",
                           mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db", workdir=str(root / "runs"),
                           data_dir=data_dir, seeds=SEEDS, max_concurrent=1, cpus_per_trial=2)
    started = time.perf_counter()
    run_study(plan_run(settings))
    return time.perf_counter() - started


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="hpstudy-overhead-"))
    data_dir = str(root / "data")
    n = len(SPACES["optimizers"].grid["optimizer"]) * len(SEEDS)
    train(TrainConfig.from_dict({**BASE, "data_dir": data_dir, "epochs": 1}))  # unpack the data, warm up
    loop = bare_loop(data_dir)
    served = study(root, data_dir)
    overhead = served - loop
    print(f"{n} trials: bare loop {loop:.1f} s, hpstudy run {served:.1f} s")
    print(f"RESULT overhead {overhead:.1f} s = {100 * overhead / loop:.0f}% of the loop, "
          f"{overhead / n:.2f} s per trial (goal: at most 10% and 0.2 s per trial)")


if __name__ == "__main__":
    main()
