"""Which step-level signal tells a hopeless run (Adam at lr 0.1 on the tanh LeNet-5) from a healthy one
inside the first epoch?

Trains a panel of configurations with the real engine on mnist-small (4,000 train / 1,000 val images
after the default split) for 3 epochs, with the engine's own divergence rules off, and records per step:
the loss, the batch accuracy, the update-to-weight ratio ||w_after - w_before|| / ||w_before|| (all
parameters together, and per weight matrix/kernel), and the fraction of saturated tanh / dead ReLU units.
Classes: BAD = a setting expected to be bad (Adam lr 0.1, Adam lr 0.05, RMSprop lr 0.1 on LeNet-5) whose
outcome is poor (val accuracy < 0.75 after 3 epochs); GOOD = a healthy setting, never to be stopped even
when it learns slowly; mid = expected bad but ended fine. Every candidate signal is then averaged over the
second half of epoch 1 and its range per class printed, and the engine's chance rule is replayed with its
warm-up set to a fraction of the epoch.

Findings (torch 2.15, 1 thread, the 101-run panel, ~11 min of training): no model-agnostic signal separates Adam lr 0.1 on
LeNet-5 from the healthy panel in epoch 1. Its update/weight ratio (0.020-0.058) lies inside the healthy
range (up to 0.107, RMSprop lr 0.01), its loss falls below ln(10) and its batch accuracy reaches 0.2-0.65 in
epoch 1 (it is not at chance), and a chance rule with a warm-up of 1/4 epoch stops 18 healthy runs. Only the
tanh saturation (|tanh| > 0.99) separates: 0.80-0.93 vs <= 0.69 (RMSprop lr 0.01), with Adam lr 0.05
(0.63-0.74, ending 79-87%) in between: a LeNet-5-only signal with a thin margin.

    nice -n 19 python bench/divergence_rules.py [--quick] [--refresh]

Runs are cached one by one in bench/.cache/divergence_rules.json (keyed by the whole config and torch
version), so the panel can grow without retraining what is there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from typing import Any

import torch
from torch import nn

from _common import cache_dir, data_dir
from hpstudy.trainables import TrainConfig, train
from hpstudy.trainables import engine

EPOCHS = 3
RECORD_EPOCHS = 2  # per-step signals are kept for the first RECORD_EPOCHS epochs
POOR = 0.75  # val accuracy after 3 epochs below this: a poor outcome


# ---------------------------------------------------------------------------------------------- panel
def panel(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    """(label, config overrides). Labels are the prior expectation; the class used is the outcome."""
    runs: list[tuple[str, dict[str, Any]]] = []
    seeds = (0,) if quick else (0, 1, 2)
    batches = (64, 128, 256)
    for batch in batches:
        for seed in seeds:
            runs.append(("bad", dict(model="lenet5", optimizer="adam", lr=0.1, batch_size=batch, seed=seed)))
    for opt, lr in (("adam", 0.05), ("rmsprop", 0.1)):
        for batch in ((128,) if quick else batches):
            runs.append(("bad?", dict(model="lenet5", optimizer=opt, lr=lr, batch_size=batch, seed=0)))
    lenet_good = [("sgd", 0.1), ("sgd", 0.01), ("momentum", 0.01), ("momentum", 0.1), ("nesterov", 0.01),
                  ("adam", 1e-3), ("adam", 1e-2), ("adamw", 1e-3), ("rmsprop", 1e-2), ("rmsprop", 1e-3),
                  ("adagrad", 1e-2), ("adadelta", 1.0)]
    for opt, lr in lenet_good:
        for batch in batches:
            runs.append(("good", dict(model="lenet5", optimizer=opt, lr=lr, batch_size=batch, seed=0)))
        if not quick:  # other seeds at the middle batch, and at 64 for the high-lr adaptive ones
            for seed in (1, 2):
                runs.append(("good", dict(model="lenet5", optimizer=opt, lr=lr, batch_size=128, seed=seed)))
    if not quick:
        for opt, lr in (("adam", 1e-2), ("rmsprop", 1e-2), ("momentum", 0.1)):
            for seed in (1, 2):
                runs.append(("good", dict(model="lenet5", optimizer=opt, lr=lr, batch_size=64, seed=seed)))
    for init in ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"):
        for batch in ((128,) if quick else batches):
            runs.append(("good", dict(model="lenet5", optimizer="sgd", lr=0.1, init=init, batch_size=batch,
                                      seed=0)))
    for model in ("mlp", "simple_cnn"):
        for opt, lr in (("adam", 1e-3), ("sgd", 0.1)):
            for batch in ((128,) if quick or model == "simple_cnn" else (64, 256)):
                runs.append(("good", dict(model=model, optimizer=opt, lr=lr, batch_size=batch, seed=0)))
    runs.append(("good", dict(model="cnn_bn_dropout", optimizer="sgd", lr=0.05, batch_size=128, seed=0)))
    # The ReLU models at Adam lr 0.1 explode (the loss-factor rule's case); recorded for completeness.
    runs.append(("bad", dict(model="mlp", optimizer="adam", lr=0.1, batch_size=128, seed=0)))
    return runs


# ---------------------------------------------------------------------------------------------- recording
class Probe:
    """Per-step signals, collected through the engine's seams: the optimizer's step hooks (weights
    before/after each step) and forward hooks on activation modules; one row per monitor.update."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.pending: dict[str, float] = {}
        self.before: list[torch.Tensor] = []
        self.activations: dict[str, list[float]] = {"tanh_sat": [], "relu_dead": []}

    # optimizer hooks
    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        matrices = [i for i, p in enumerate(params) if p.ndim >= 2]

        def pre(opt, args, kwargs):
            self.before = [p.detach().clone() for p in params]

        def post(opt, args, kwargs):
            with torch.no_grad():
                deltas = torch._foreach_sub([p.detach() for p in params], self.before)
                dn = [float(x) for x in torch._foreach_norm(deltas)]
                wn = [float(x) for x in torch._foreach_norm(self.before)]
            tot_d = math.sqrt(sum(d * d for d in dn))
            tot_w = math.sqrt(sum(w * w for w in wn))
            mat_d = math.sqrt(sum(dn[i] ** 2 for i in matrices))
            mat_w = math.sqrt(sum(wn[i] ** 2 for i in matrices))
            per = [dn[i] / wn[i] for i in matrices if wn[i] > 0]
            self.pending.update(ratio=tot_d / tot_w if tot_w else math.inf,
                                ratio_mat=mat_d / mat_w if mat_w else math.inf,
                                ratio_max=max(per) if per else math.nan,
                                ratio_med=statistics.median(per) if per else math.nan)

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)

    # activation hooks
    def attach_model(self, model: nn.Module) -> None:
        def tanh_hook(module, inputs, output):
            if module.training:
                self.activations["tanh_sat"].append(float((output.detach().abs() > 0.99).float().mean()))

        def relu_hook(module, inputs, output):
            if module.training:
                y = output.detach().flatten(2).amax(2) if output.ndim > 2 else output.detach()
                self.activations["relu_dead"].append(float((y.amax(0) <= 0).float().mean()))

        for m in model.modules():
            if isinstance(m, nn.Tanh):
                m.register_forward_hook(tanh_hook)
            elif isinstance(m, nn.ReLU):
                m.register_forward_hook(relu_hook)

    def step(self, loss: float, correct: int, count: int) -> None:
        row = {"loss": loss, "acc": correct / max(1, count), **self.pending}
        for key, values in self.activations.items():
            if values:
                row[key] = sum(values) / len(values)
            values.clear()
        self.pending = {}
        self.rows.append(row)


def record(cfg: TrainConfig, max_steps: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    probe = Probe()
    real_opt, real_model, real_monitor = engine.build_optimizer, engine.build_model, engine.DivergenceMonitor

    def build_optimizer(params, c):
        opt = real_opt(params, c)
        probe.attach_optimizer(opt)
        return opt

    def build_model(c, info):
        model = real_model(c, info)
        probe.attach_model(model)
        return model

    class Recording(real_monitor):
        def update(self, loss, correct, count):
            if self.step < max_steps:
                probe.step(loss, correct, count)
            else:  # past the recorded steps: drop the hooks' cost by not recording
                probe.pending = {}
                for v in probe.activations.values():
                    v.clear()
            return super().update(loss, correct, count)

    engine.build_optimizer, engine.build_model, engine.DivergenceMonitor = build_optimizer, build_model, Recording
    try:
        result = train(cfg)
    finally:
        engine.build_optimizer, engine.build_model, engine.DivergenceMonitor = real_opt, real_model, real_monitor
    return result, probe.rows


def run_panel(quick: bool, refresh: bool) -> list[dict[str, Any]]:
    path = cache_dir() / "divergence_rules.json"
    cache = json.loads(path.read_text()) if path.exists() and not refresh else {}
    out = []
    entries = panel(quick)
    for n, (label, over) in enumerate(entries, 1):
        base = {"dataset": "mnist-small", "epochs": EPOCHS, "threads": 1, "device": "cpu",
                "data_dir": data_dir(), "diverge_loss_factor": 0, "chance_warmup_steps": 0}
        cfg = TrainConfig.from_dict({**base, **over})
        key = json.dumps({**cfg.to_dict(), "data_dir": None, "torch": torch.__version__}, sort_keys=True)
        if key not in cache:
            steps_per_epoch = math.ceil(4000 / cfg.batch_size)
            started = time.perf_counter()
            result, rows = record(cfg, RECORD_EPOCHS * steps_per_epoch)
            cache[key] = {"label": label, "over": over, "steps_per_epoch": steps_per_epoch,
                          "status": result["status"], "val_acc": [h["val_acc"] for h in result["history"]],
                          "rows": rows, "seconds": time.perf_counter() - started}
            path.write_text(json.dumps(cache))
            print(f"[{n}/{len(entries)}] {name(over)}: {result['status']} val_acc "
                  f"{cache[key]['val_acc']} ({cache[key]['seconds']:.1f}s)", flush=True)
        out.append(cache[key])
    return out


def name(over: dict[str, Any]) -> str:
    extra = f" {over['init']}" if "init" in over else ""
    return f"{over['model']} {over['optimizer']} {over['lr']:g} b{over['batch_size']} s{over['seed']}{extra}"


# ---------------------------------------------------------------------------------------------- rules
def signal(run: dict[str, Any], key: str, a: int, b: int, how: str = "median") -> float:
    values = [r[key] for r in run["rows"][a:b] if key in r and math.isfinite(r[key])]
    if not values:
        return math.nan
    return statistics.median(values) if how == "median" else sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0 only, fewer batch sizes")
    parser.add_argument("--refresh", action="store_true", help="retrain cached runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("hpstudy").setLevel(logging.WARNING)
    runs = run_panel(args.quick, args.refresh)
    analyse(runs)


def classify(run: dict[str, Any]) -> str:
    """BAD: expected bad and its outcome is poor; GOOD: a healthy setting (must never be stopped, even
    when it learns slowly); mid: expected bad but ended fine (either answer is acceptable)."""
    final = run["val_acc"][-1] if run["val_acc"] else 0.0
    if run["label"].startswith("bad"):
        return "BAD" if final < POOR else "mid"
    return "GOOD"


def replay_chance_rule(run: dict[str, Any], fraction: float) -> int | None:
    """The engine's chance rule with its warm-up set to a fraction of the epoch: the step it stops at."""
    from hpstudy.trainables.divergence import DivergenceMonitor

    steps = max(2, round(fraction * run["steps_per_epoch"]))
    monitor = DivergenceMonitor(10, 0, steps)
    batch = run["over"]["batch_size"]
    for i, row in enumerate(run["rows"], 1):
        if monitor.update(row["loss"], round(row["acc"] * batch), batch):
            return i
    return None


SIGNALS = {  # name -> (row key, scale); each is the mean over the window
    "ratio": ("ratio", 1.0),  # ||dw|| / ||w||, all parameters
    "ratio_max": ("ratio_max", 1.0),  # largest per-matrix ratio
    "loss/lnC": ("loss", 1 / math.log(10)),
    "acc": ("acc", 1.0),
    "tanh_sat": ("tanh_sat", 1.0),
    "relu_dead": ("relu_dead", 1.0),
}


def analyse(runs: list[dict[str, Any]]) -> None:
    for run in runs:
        run["class"] = classify(run)
        spe = run["steps_per_epoch"]
        a, b = spe // 2, spe  # the second half of epoch 1: past every optimizer's first-steps transient
        run["signals"] = {k: signal(run, key, a, b, "mean") * scale for k, (key, scale) in SIGNALS.items()}
    print(f"\n{len(runs)} runs. BAD: expected bad and val acc < {POOR} after {EPOCHS} epochs; GOOD: healthy "
          f"settings (never to be stopped); mid: expected bad, ended >= {POOR}.")
    print("Signals: means over the second half of epoch 1.")
    print(f"{'run':46s} {'class':5s} {'acc3':>5s} " + " ".join(f"{k:>9s}" for k in SIGNALS))
    order = {"BAD": 0, "mid": 1, "GOOD": 2}
    for run in sorted(runs, key=lambda r: (order[r["class"]], -(r["signals"]["tanh_sat"] if
                                                                  math.isfinite(r["signals"]["tanh_sat"]) else -1))):
        print(f"{name(run['over']):46s} {run['class']:5s} {run['val_acc'][-1]:5.3f} "
              + " ".join(f"{v:9.4f}" for v in run["signals"].values()))
    lenet_bad = [r for r in runs if r["class"] == "BAD" and r["over"]["model"] == "lenet5"
                 and r["over"]["optimizer"] == "adam"]
    print("\nSeparation: Adam lr 0.1 LeNet-5 runs classed BAD vs all GOOD runs (where the signal exists)")
    for k in SIGNALS:
        bad = [(r["signals"][k], name(r["over"])) for r in lenet_bad if math.isfinite(r["signals"][k])]
        good = [(r["signals"][k], name(r["over"])) for r in runs if r["class"] == "GOOD"
                and math.isfinite(r["signals"][k])]
        if not bad or not good:
            print(f"  {k:10s} n/a (BAD {len(bad)}, GOOD {len(good)})")
            continue
        print(f"  {k:10s} BAD [{min(bad)[0]:.4g}, {max(bad)[0]:.4g}]  GOOD [{min(good)[0]:.4g}, "
              f"{max(good)[0]:.4g}]  GOOD max: {max(good)[1]}; GOOD min: {min(good)[1]}")
    print("\nThe chance rule with a warm-up of a fraction of epoch 1 (stop step; '-' = not stopped in 2 epochs)")
    for fraction in (0.25, 0.5, 1.0):
        stopped_bad = [r for r in lenet_bad if (s := replay_chance_rule(r, fraction)) and s <= r["steps_per_epoch"]]
        stopped_good = [(name(r["over"]), replay_chance_rule(r, fraction), round(r["val_acc"][-1], 3))
                        for r in runs if r["class"] == "GOOD" and replay_chance_rule(r, fraction)]
        print(f"  warm-up {fraction:.2f} x epoch: Adam-0.1 BAD stopped in epoch 1: {len(stopped_bad)}/{len(lenet_bad)};"
              f" GOOD stopped: {len(stopped_good)} {stopped_good}")


if __name__ == "__main__":
    main()
