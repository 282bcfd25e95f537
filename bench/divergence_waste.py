"""Waste on diverging trials: training steps a diverging trial (Adam at lr 0.1) runs before it is
stopped, as a share of the steps of a full trial.

1. The engine alone (its step-level divergence stop): Adam lr 0.1 with the real engine on mnist-small
   (4,000 train / 1,000 val images) for lenet5, mlp and simple_cnn, batch 64 and 128, seeds 0-2. A full
   trial is the built-in studies' 10 epochs (steps/epoch x 10).
2. In a study: the same LeNet-5 runs with the median pruner (hpstudy's make_pruner, as the lenet5-tpe
   study uses it), in a study whose earlier trials are the healthy (completed) points of the
   lenet5-optimizer-lr-bs grid (from the table bench/search_efficiency.py trains; built here if not
   cached). Each run's per-epoch validation accuracy is reported to Optuna as hpstudy's Tune scheduler
   does; the run stops at the first epoch the pruner says so. The engine is deterministic, so reporting
   part 1's histories is what the same runs would see live.
3. The same study with 10 checks per epoch (`checks_per_epoch`, `hpstudy run --checks-per-epoch 10`):
   every run, the earlier trials' included, also reports the accuracy on a validation sample 9 times
   inside each epoch, and the pruner is asked at each check. Also times what the checks cost a healthy
   run in the engine.

    python bench/divergence_waste.py [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import optuna
from optuna.trial import TrialState, create_trial

from _common import StepRecorder, build_table, data_dir, machine
from hpstudy.search_spaces import SPACES
from hpstudy.studies.builtin import STUDIES
from hpstudy.studies.samplers import make_pruner
from hpstudy.trainables import TrainConfig, train
from hpstudy.trainables.engine import CHECK_VAL_IMAGES

MODELS = ("lenet5", "mlp", "simple_cnn")
BATCHES = (64, 128)
SEEDS = (0, 1, 2)
GRID_STUDY = "lenet5-optimizer-lr-bs"
GOAL = 0.02
CHECKS = 10  # part 3: checks_per_epoch
COST_EPOCHS, COST_REPEATS = 3, 3


def diverging_runs(base: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """Each run reports CHECKS times per epoch (which changes nothing in its training: the engine's
    tests check that), so one run gives both the per-epoch and the per-check view."""
    runs = []
    for model in MODELS:
        for batch in BATCHES:
            for seed in SEEDS:
                cfg = TrainConfig.from_dict({**base, "model": model, "optimizer": "adam", "lr": 0.1,
                                             "batch_size": batch, "seed": seed, "threads": threads,
                                             "data_dir": data_dir(), "device": "cpu",
                                             "checks_per_epoch": CHECKS})
                started = time.perf_counter()
                recorder = StepRecorder()
                result = train(cfg, recorder)
                runs.append({"model": model, "batch": batch, "seed": seed, "status": result["status"],
                             "reason": result["reason"] or "", "steps": result["steps"],
                             "planned": result["steps_planned"], "epochs": cfg.epochs,
                             "val_acc": [h["val_acc"] for h in result["history"]],
                             "checks": recorder.val_acc, "seconds": time.perf_counter() - started})
    return runs


def pruned_at(healthy: list[list[float]], history: list[float], epochs: int, checks: int = 1) -> int | None:
    """The step the median pruner stops this history (one value per step) at, in a study whose
    completed trials are `healthy`; None if it runs to its end. Steps are epochs when checks == 1."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", epochs, checks))
    for curve in healthy:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=max(curve),
                                     intermediate_values=dict(enumerate(curve, start=1))))
    trial = study.ask()
    for step, value in enumerate(history, start=1):
        trial.report(value, step)
        if step < epochs * checks and trial.should_prune():
            return step
    return None


def batches_until(step: int, checks: int, per_epoch: int) -> int:
    """Training steps (batches) a run has taken when it reports check `step` (as the engine spaces them)."""
    epochs_done, check = divmod(step - 1, checks)
    within = per_epoch if check + 1 == checks else max(1, round((check + 1) * per_epoch / checks))
    return epochs_done * per_epoch + within


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("hpstudy").setLevel(logging.WARNING)
    definition = STUDIES[GRID_STUDY]
    base = dict(definition.base)  # mnist-small, 10 epochs
    base.pop("model", None)
    epochs = int(base["epochs"])
    print(f"Divergence waste: Adam lr 0.1, mnist-small 4,000 train / 1,000 val images, full trial = "
          f"{epochs} epochs (the built-in MNIST studies'), {args.threads} threads")
    print(f"machine: {machine()}")
    started = time.perf_counter()
    runs = diverging_runs(base, args.threads)

    print()
    print("1. the engine alone (step-level stop: non-finite loss, loss > 10x the first, stalled at chance)")
    print(f"{'model':10s} {'batch':>5s} {'seed':>4s}  {'status':9s} {'steps':>5s} / {'full':>4s}  {'share':>6s}  "
          f"final val_acc  reason")
    for r in runs:
        final = f"{r['val_acc'][-1]:.3f}" if r["val_acc"] else "-"
        print(f"{r['model']:10s} {r['batch']:5d} {r['seed']:4d}  {r['status']:9s} {r['steps']:5d} / "
              f"{r['planned']:4d}  {100 * r['steps'] / r['planned']:5.1f}%  {final:>13s}  {r['reason'][:70]}")
    shares = {}
    for model in MODELS:
        mine = [r for r in runs if r["model"] == model]
        shares[model] = sum(r["steps"] for r in mine) / sum(r["planned"] for r in mine)
    overall = sum(r["steps"] for r in runs) / sum(r["planned"] for r in runs)
    print("share of a full trial (steps run / steps planned, summed over batch sizes and seeds): "
          + ", ".join(f"{m} {100 * s:.1f}%" for m, s in shares.items())
          + f"; all {len(runs)} runs {100 * overall:.1f}%")

    grid = {k: list(v) for k, v in SPACES[definition.space].grid.items()}
    table = build_table({**definition.base}, grid, args.threads)
    healthy = [row["val_acc"] for row in table["rows"].values() if row["status"] == "completed"]
    at1 = statistics.median(c[0] for c in healthy)
    print()
    print(f"2. in a study: hpstudy's median pruner (it checks from epoch 1 on), "
          f"{len(healthy)} earlier completed trials = the completed points of the {GRID_STUDY} grid (median "
          f"val_acc after epoch 1: {at1:.3f}); replayed from part 1's real histories")
    per_epoch_share = in_study(runs, healthy, 1)
    print(f"one epoch of a {epochs}-epoch trial is {100 / epochs:.0f}%: the earliest an epoch-level pruner can stop")

    checked = build_table({**definition.base, "checks_per_epoch": CHECKS}, grid, args.threads)
    healthy_checks = [row["checks"] for row in checked["rows"].values() if row["status"] == "completed"]
    print()
    print(f"3. the same study with checks_per_epoch={CHECKS} (`hpstudy run --checks-per-epoch {CHECKS}`): each "
          f"trial also reports the accuracy on {CHECK_VAL_IMAGES} validation images {CHECKS - 1} times inside "
          f"every epoch, and the pruner checks there; the {len(healthy_checks)} earlier trials are the same grid "
          f"points trained with those checks")
    per_check_share = in_study(runs, healthy_checks, CHECKS)
    cost = check_cost(base, args.threads)
    print(f"cost of the checks in the engine: a healthy LeNet-5 run (momentum lr 0.05, batch 64, "
          f"{COST_EPOCHS} epochs) took {cost[1]:.2f} s with checks_per_epoch={CHECKS} against {cost[0]:.2f} s "
          f"without (+{100 * (cost[1] / cost[0] - 1):.0f}%; median of {COST_REPEATS}, alternating); in a study "
          f"each check is also a Tune report and an Optuna write")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    print(f"RESULT share of a full trial run before a diverging trial (Adam lr 0.1) stops (goal <= {GOAL:.0%}): "
          f"engine alone " + ", ".join(f"{m} {100 * s:.1f}%" for m, s in shares.items())
          + f", all {100 * overall:.1f}%; in a study with the median pruner: lenet5 "
          f"{100 * per_epoch_share['lenet5']:.1f}%, all {100 * per_epoch_share['all']:.1f}%; with "
          f"{CHECKS} checks per epoch: lenet5 {100 * per_check_share['lenet5']:.1f}%, "
          f"all {100 * per_check_share['all']:.1f}%")


def in_study(runs: list[dict[str, Any]], healthy: list[list[float]], checks: int) -> dict[str, float]:
    """Replays each diverging run's reports to the median pruner; prints a line per run and returns the
    share of a full trial run (training steps) for lenet5 and for all runs."""
    study_steps, study_planned = [], []
    for r in runs:
        if r["status"] != "completed":  # stopped by the engine inside an epoch: the pruner never sees it
            study_steps.append(r["steps"])
            study_planned.append(r["planned"])
            continue
        curve = r["val_acc"] if checks == 1 else r["checks"]
        step = pruned_at(healthy, curve, r["epochs"], checks)
        per_epoch = r["planned"] // r["epochs"]
        steps = batches_until(step, checks, per_epoch) if step is not None else r["planned"]
        study_steps.append(steps)
        study_planned.append(r["planned"])
        if step is None:
            shown = "not pruned"
        elif checks == 1:
            shown = f"pruned after epoch {step}"
        else:
            shown = f"pruned at check {step} ({step / checks:.1f} ep)"
        first = " ".join(f"{v:.2f}" for v in curve[:3])
        print(f"{r['model']:10s} {r['batch']:5d} {r['seed']:4d}  val_acc {first} ...  {shown:28s} "
              f"{steps:4d} / {r['planned']:4d} steps = {100 * steps / r['planned']:5.1f}%")
    lenet = [(s, p) for r, s, p in zip(runs, study_steps, study_planned) if r["model"] == "lenet5"]
    return {"lenet5": sum(s for s, _ in lenet) / sum(p for _, p in lenet),
            "all": sum(study_steps) / sum(study_planned)}


def check_cost(base: dict[str, Any], threads: int) -> tuple[float, float]:
    """Median seconds of a healthy run without checks and with CHECKS per epoch, alternating."""
    seconds: dict[int, list[float]] = {1: [], CHECKS: []}
    for _ in range(COST_REPEATS):
        for checks in seconds:
            cfg = TrainConfig.from_dict({**base, "model": "lenet5", "optimizer": "momentum", "lr": 0.05,
                                         "batch_size": 64, "epochs": COST_EPOCHS, "threads": threads,
                                         "data_dir": data_dir(), "device": "cpu", "checks_per_epoch": checks})
            started = time.perf_counter()
            train(cfg)
            seconds[checks].append(time.perf_counter() - started)
    return statistics.median(seconds[1]), statistics.median(seconds[CHECKS])


if __name__ == "__main__":
    main()
