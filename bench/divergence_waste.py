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

from _common import build_table, data_dir, machine
from hpstudy.search_spaces import SPACES
from hpstudy.studies.builtin import STUDIES
from hpstudy.studies.samplers import make_pruner
from hpstudy.trainables import TrainConfig, train

MODELS = ("lenet5", "mlp", "simple_cnn")
BATCHES = (64, 128)
SEEDS = (0, 1, 2)
GRID_STUDY = "lenet5-optimizer-lr-bs"
GOAL = 0.02


def diverging_runs(base: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    runs = []
    for model in MODELS:
        for batch in BATCHES:
            for seed in SEEDS:
                cfg = TrainConfig.from_dict({**base, "model": model, "optimizer": "adam", "lr": 0.1,
                                             "batch_size": batch, "seed": seed, "threads": threads,
                                             "data_dir": data_dir(), "device": "cpu"})
                started = time.perf_counter()
                result = train(cfg)
                runs.append({"model": model, "batch": batch, "seed": seed, "status": result["status"],
                             "reason": result["reason"] or "", "steps": result["steps"],
                             "planned": result["steps_planned"], "epochs": cfg.epochs,
                             "val_acc": [h["val_acc"] for h in result["history"]],
                             "seconds": time.perf_counter() - started})
    return runs


def pruned_at(healthy: list[list[float]], history: list[float], epochs: int) -> int | None:
    """The epoch the median pruner stops this history at, in a study whose completed trials are
    `healthy`; None if it runs to its end."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", epochs))
    for curve in healthy:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=max(curve),
                                     intermediate_values=dict(enumerate(curve, start=1))))
    trial = study.ask()
    for epoch, value in enumerate(history, start=1):
        trial.report(value, epoch)
        if epoch < epochs and trial.should_prune():
            return epoch
    return None


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

    table = build_table({**definition.base}, {k: list(v) for k, v in SPACES[definition.space].grid.items()},
                        args.threads)
    healthy = [row["val_acc"] for row in table["rows"].values() if row["status"] == "completed"]
    at1 = statistics.median(c[0] for c in healthy)
    print()
    print(f"2. in a study: hpstudy's median pruner (it checks from epoch 1 on), "
          f"{len(healthy)} earlier completed trials = the completed points of the {GRID_STUDY} grid (median "
          f"val_acc after epoch 1: {at1:.3f}); replayed from part 1's real histories")
    study_steps, study_planned = [], []
    for r in runs:
        if r["status"] != "completed":  # stopped by the engine inside an epoch: the pruner never sees it
            study_steps.append(r["steps"])
            study_planned.append(r["planned"])
            continue
        epoch = pruned_at(healthy, r["val_acc"], r["epochs"])
        per_epoch = r["planned"] // r["epochs"]
        steps = per_epoch * (epoch if epoch is not None else r["epochs"])
        study_steps.append(steps)
        study_planned.append(r["planned"])
        shown = f"pruned after epoch {epoch}" if epoch else "not pruned"
        first = " ".join(f"{v:.2f}" for v in r["val_acc"][:3])
        print(f"{r['model']:10s} {r['batch']:5d} {r['seed']:4d}  val_acc {first} ...  {shown:22s} "
              f"{steps:4d} / {r['planned']:4d} steps = {100 * steps / r['planned']:5.1f}%")
    lenet = [(s, p) for r, s, p in zip(runs, study_steps, study_planned) if r["model"] == "lenet5"]
    lenet_share = sum(s for s, _ in lenet) / sum(p for _, p in lenet)
    study_overall = sum(study_steps) / sum(study_planned)
    print(f"one epoch of a {epochs}-epoch trial is {100 / epochs:.0f}%: the earliest an epoch-level pruner can stop")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    print(f"RESULT share of a full trial run before a diverging trial (Adam lr 0.1) stops (goal <= {GOAL:.0%}): "
          f"engine alone " + ", ".join(f"{m} {100 * s:.1f}%" for m, s in shares.items())
          + f", all {100 * overall:.1f}%; in a study with the median pruner: lenet5 {100 * lenet_share:.1f}%, "
          f"all {100 * study_overall:.1f}%")


if __name__ == "__main__":
    main()
