"""Service overhead: a 24-trial study through the `hpstudy run` command (Ray Tune + Optuna SQLite + MLflow
SQLite) against the same 24 trials run back to back by a bare Python loop, each side a fresh process on
the same machine, in the same run.

The trials are short, as the issue asks (a few seconds each): the shipped `mlp-optimizers` definition (six
optimizers at lr 0.01) on 4,000 mnist-small training images, 3 epochs, seeds 0-3, one trial at a time with
2 threads on both sides (`--threads 1` leaves the second core to the driver and Ray). 3 epochs took 1.1-1.2 s
on the 2-core AMD EPYC this was written on and 0.44 s on a 2-core Xeon with AVX-512 (session 11):
`--epochs 15` gives that machine trials of a few seconds again (every epoch is one more report per trial).

Both sides start as a new Python process and pay their own imports (the loop: torch and the engine), so
the comparison is what a user sees: `python my_loop.py` against `hpstudy run`. Each side's time per trial
is measured the same way, from the first trial's end to the last one's, divided by (trials - 1); the
study's trial ends are Optuna's completion times. Overhead = study wall time - loop wall time, split in:
- per trial: the study's time per trial - the loop's (Ray Tune, Optuna and MLflow around each trial);
- fixed: the rest (the driver's imports, Ray's and MLflow's start, the first worker's start, shutdown),
  paid once per `hpstudy run`.
The per-trial part is split further, over the trials that ran every epoch on both sides (same grid point):
how much longer the study's epochs took (the engine's own epoch times: training and validation in the
Ray worker, with the driver and Ray's daemons on the same cores), and its extra time outside the epochs
(the trial's start, a report per epoch, the last epoch's checkpoint, the final result, Optuna and MLflow
around it).
The study starts with empty SQLite files (its first run creates MLflow's tables). The machine is shared and
its speed drifts, so the two sides alternate for `--rounds` rounds and the medians are the figures.

`--warm` adds a third side to each round: the same `hpstudy run` with the infrastructure already up, as for
a user's next study on a cluster: a Ray head this script starts once (`--ray-address`; a driver connects in
well under a second) and SQLite files whose Optuna and MLflow tables exist. The idle head takes about 5%
of one core while the other sides run.

    python bench/service_overhead.py [--threads 2] [--rounds 2] [--warm] [--epochs 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from _common import grid_points, machine, scratch_dir
from hpstudy.studies.runner import RunSettings, plan_run
from hpstudy.trainables import TrainConfig, train

DEFINITION = "mlp-optimizers"
EPOCHS, SEEDS = 3, (0, 1, 2, 3)  # EPOCHS: the default of --epochs
SIZES = {"train_size": 4000, "val_size": 1000, "test_size": 1000}
GOAL_SHARE, GOAL_PER_TRIAL_S = 0.10, 0.2

# The bare loop, as a user would write it: import, then train the configurations one after another.
# It prints each trial's end, and its start and summed epoch times for the split below.
LOOP = """
import json, sys, time
from hpstudy.trainables import TrainConfig, train
trials = []
for values in json.loads(sys.argv[1]):
    started = time.time()
    history = train(TrainConfig.from_dict(values))["history"]
    trials.append([started, time.time(), sum(row["epoch_time_s"] for row in history), len(history)])
print(json.dumps(trials))
"""


def configurations(data_dir: str, threads: int, epochs: int) -> tuple[list[dict], list[dict]]:
    """The study's trials as TrainConfig values, taken from the same plan `hpstudy run` makes, and the
    grid point (Optuna's params) of each. (Planning writes nothing: the storage file is never made.)"""
    storage = f"sqlite:///{Path(data_dir).parent}/unused.db"
    plan = plan_run(RunSettings(definition=DEFINITION, storage=storage, epochs=epochs, seeds=SEEDS,
                                overrides=SIZES, cpus_per_trial=threads, data_dir=data_dir))
    suggest = plan.suggest()  # the parameters a trial at each grid point gets, seed included
    points = grid_points(plan.grid)
    return [{**plan.base, **suggest(optuna.trial.FixedTrial(point))} for point in points], points


def per_trial(ends: list[float]) -> float:
    ends = sorted(ends)
    return (ends[-1] - ends[0]) / (len(ends) - 1)


@dataclass(frozen=True)
class Trial:
    """One trial as either side ran it: its wall time, the sum of its epochs' times (training and
    validation, as the engine measures them) and how many epochs it ran."""

    wall: float
    epochs_time: float
    epochs: int


def bare_loop(configs: list[dict], points: list[dict]) -> tuple[float, float, dict[str, Trial]]:
    """(wall time of the loop's process, its time per trial, each trial by its grid point)."""
    started = time.perf_counter()
    out = _run([sys.executable, "-c", LOOP, json.dumps(configs)])
    wall = time.perf_counter() - started
    trials = json.loads(out.splitlines()[-1])
    return (wall, per_trial([end for _, end, _, _ in trials]),
            {_key(point): Trial(end - start, epochs_time, epochs)
             for point, (start, end, epochs_time, epochs) in zip(points, trials)})


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def split(loop: dict[str, Trial], served: dict[str, Trial]) -> tuple[float, float]:
    """Where a study trial's extra time goes, over the trials that ran all their epochs on both sides:
    (how much longer its epochs took, as a share of the loop's; its extra time outside the epochs per
    trial: starting, reports, checkpoint, final result, Optuna and MLflow around it)."""
    pairs = [(loop[k], served[k]) for k in loop if k in served and loop[k].epochs == served[k].epochs > 1]
    if not pairs:
        return float("nan"), float("nan")
    epochs_share = sum(s.epochs_time for _, s in pairs) / sum(l.epochs_time for l, _ in pairs) - 1
    outside = statistics.mean((s.wall - s.epochs_time) - (l.wall - l.epochs_time) for l, s in pairs)
    return epochs_share, outside


def study(root: Path, data_dir: str, threads: int, epochs: int, n: int,
          ray_address: str | None = None) -> tuple[float, float, dict[str, Trial]]:
    """(wall time of the `hpstudy run` process, its time per trial, each trial by its params), with empty
    SQLite files; with a running Ray at ``ray_address`` and the files' tables created beforehand (warm).
    A trial's wall time is Optuna's, from its start (asked) to its completion (told)."""
    root.mkdir()
    storage = f"sqlite:///{root}/hpstudy.db"
    if ray_address:
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its lines about creating the tables
        optuna.storages.RDBStorage(storage)
        MlflowClient(f"sqlite:///{root}/mlflow.db").search_experiments()  # creates MLflow's tables
    command = [str(Path(sys.executable).with_name("hpstudy")), "run", DEFINITION, "--storage", storage,
               "--mlflow-tracking-uri", f"sqlite:///{root}/mlflow.db", "--workdir", str(root / "runs"),
               "--data-dir", data_dir, "--epochs", str(epochs), "--seeds", ",".join(map(str, SEEDS)),
               "--max-concurrent", "1", "--cpus-per-trial", str(threads),
               *itertools.chain.from_iterable((f"--{k.replace('_', '-')}", str(v)) for k, v in SIZES.items()),
               *(("--ray-address", ray_address) if ray_address else ())]
    started = time.perf_counter()
    _run(command, cwd=root)
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=DEFINITION, storage=storage).trials
    assert len(trials) == n and all(t.state.is_finished() for t in trials), "every trial must finish"
    return wall, per_trial([t.datetime_complete.timestamp() for t in trials]), {
        _key(t.params): Trial((t.datetime_complete - t.datetime_start).total_seconds(),
                              sum(row["epoch_time_s"] for row in t.user_attrs["history"]),
                              len(t.user_attrs["history"])) for t in trials}


def compared(loop: float, loop_per_trial: float, served: float, served_per_trial: float, n: int) -> tuple:
    """(loop wall, study wall, overhead per trial, fixed overhead, study's time per trial)."""
    extra = served_per_trial - loop_per_trial
    return loop, served, extra, served - loop - n * extra, served_per_trial


def described(row: tuple, parts: tuple[float, float]) -> str:
    loop, served, extra, fixed, served_per_trial = row
    return (f"{served:.1f} s ({served_per_trial:.2f} s per trial): +{served - loop:.1f} s = "
            f"{100 * (served - loop) / loop:.0f}%, {fixed:.1f} s fixed + {extra:.2f} s per trial (its epochs "
            f"{100 * parts[0]:+.1f}%, outside them {parts[1]:+.2f} s per full trial)")


def start_ray_head() -> str:
    """A Ray head in this process, as `ray start --head` on a cluster; it stops when the script exits."""
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return ray.get_runtime_context().gcs_address


def _run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        sys.exit(f"{command[0]} {command[1]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads per trial, loop and study (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="loop/study pairs, alternating (default 2)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per trial (default %(default)s)")
    parser.add_argument("--warm", action="store_true", help="also run the study against a running Ray and existing tables")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = scratch_dir("hpstudy-overhead-")
    data_dir = str(root / "data")
    configs, points = configurations(data_dir, args.threads, args.epochs)
    n = len(configs)
    train(TrainConfig.from_dict({**configs[0], "epochs": 1}))  # unpack the bundled data into data_dir
    print(f"machine: {machine()}; {args.threads} thread(s) per trial; {n} trials of {DEFINITION}, "
          f"{args.epochs} epochs on {SIZES['train_size']} images")
    ray_address = start_ray_head() if args.warm else None
    rows, warm_rows, parts = [], [], []
    for round_ in range(1, args.rounds + 1):
        loop, loop_per_trial, loop_trials = bare_loop(configs, points)
        served, served_per_trial, served_trials = study(root / f"study-{round_}", data_dir, args.threads,
                                                        args.epochs, n)
        rows.append(compared(loop, loop_per_trial, served, served_per_trial, n))
        parts.append(split(loop_trials, served_trials))
        print(f"round {round_}: bare loop {loop:.1f} s ({loop_per_trial:.2f} s per trial); hpstudy run "
              f"{described(rows[-1], parts[-1])}", flush=True)
        if ray_address:
            served, served_per_trial, served_trials = study(root / f"warm-{round_}", data_dir, args.threads,
                                                            args.epochs, n, ray_address)
            warm_rows.append(compared(loop, loop_per_trial, served, served_per_trial, n))
            print(f"  warm (Ray running, tables there): "
                  f"{described(warm_rows[-1], split(loop_trials, served_trials))}", flush=True)
    if warm_rows:
        loop, warm, extra, fixed, _ = (statistics.median(column) for column in zip(*warm_rows))
        print(f"warm (medians of {len(warm_rows)} rounds): hpstudy run {warm:.1f} s against the loop's {loop:.1f} s: "
              f"{100 * (warm - loop) / loop:.0f}% = {fixed:.1f} s fixed + {extra:.2f} s per trial")
    loop, served, extra, fixed, _ = (statistics.median(column) for column in zip(*rows))
    overhead = served - loop
    print(f"fixed per `hpstudy run` (imports, Ray, MLflow, the first worker's start, shutdown): {fixed:.1f} s")
    epochs_share, outside = (statistics.median(column) for column in zip(*parts))
    print(f"per trial once the study runs: {extra:.2f} s (goal {GOAL_PER_TRIAL_S} s); in the trials that ran every "
          f"epoch, the epochs took {100 * epochs_share:+.1f}% of the loop's and the time outside them "
          f"{outside:+.2f} s per trial")
    print(f"RESULT (medians of {len(rows)} rounds) bare loop {loop:.1f} s, hpstudy run {served:.1f} s: overhead "
          f"{overhead:.1f} s = {100 * overhead / loop:.0f}% of the loop (goal {100 * GOAL_SHARE:.0f}%): "
          f"{fixed:.1f} s fixed + {extra:.2f} s per trial (goal {GOAL_PER_TRIAL_S} s)")


if __name__ == "__main__":
    main()
