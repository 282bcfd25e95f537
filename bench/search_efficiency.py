"""Search efficiency: training epochs TPE / random / QMC with pruning spend to come within 0.5 points of
the best validation accuracy the exhaustive grid finds, as a share of the full grid's epochs.

A tabular benchmark (as in HPOBench): every point of the optimizer x lr x batch-size grid
(`optimizer-lr-bs`, study `lenet5-optimizer-lr-bs`: LeNet-5, mnist-small, 10 epochs) is trained once
with the real engine and its per-epoch validation accuracy kept (cached in bench/.cache/). Then, per
sampler and seed, an in-memory Optuna study with hpstudy's make_sampler/make_pruner asks for points of
the same grid (suggest_categorical per parameter, the space's own suggest) and is told what the table
says, epoch by epoch, exactly as hpstudy's Tune scheduler does (report each epoch, ask the pruner
before the last epoch; a run the engine stopped inside an epoch is PRUNED and costs the steps it ran).
The engine is deterministic, so the replay is what real trials would report. Epochs are counted over
all trials (repeated points cost again, as they would in a real study); the target counts when a
trial that reaches it completes (the study's best value is over completed trials).

    python bench/search_efficiency.py [--seeds 10] [--out bench/out/search_efficiency.png]

--explore replays other sampler/pruner settings instead of the official figure (nothing is plotted), e.g.
    python bench/search_efficiency.py --explore --explore-samplers hp:tpe tpe:n_startup_trials=3 \
        --explore-pruners hp:median median:n_startup_trials=1,n_warmup_steps=2 sha:reduction_factor=3 \
        [--seed-offset 50] [--tolerance 0.015] [--listed]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import TrialState

from _common import build_table, epochs_run, machine, point_key
from hpstudy.search_spaces import SPACES, grid_size, grid_suggest
from hpstudy.studies.builtin import STUDIES
from hpstudy.studies.samplers import make_pruner, make_sampler

GRID_STUDY = "lenet5-optimizer-lr-bs"
TPE_STUDY = "lenet5-tpe"
SAMPLERS = ("tpe", "random", "qmc")
TOLERANCE = 0.005  # 0.5 points of accuracy
GOAL = 0.25


def ordered_grid(grid: dict[str, list], seed: int | None) -> dict[str, list]:
    """The grid with each parameter's choices in a seeded random order (None: as listed)."""
    if seed is None:
        return grid
    rng = np.random.default_rng(1000 + seed)
    return {name: [values[i] for i in rng.permutation(len(values))] for name, values in grid.items()}


def replay(rows: dict[str, Any], grid, sampler: str, pruner: str, seed: int, epochs: int,
           target: float, full: float, cap: float, make: tuple[Callable, Callable] | None = None,
           checks: int = 1) -> dict[str, Any]:
    """One study run on the table until `cap` epochs are spent; returns its best-so-far curve.
    `make`: (sampler factory (grid, seed), pruner factory (epochs)) in place of hpstudy's, for --explore.
    `checks`: reports per epoch (the table's checks_per_epoch); each costs 1/checks of an epoch."""
    build_sampler, build_pruner = make or (lambda g, s: make_sampler(sampler, g, s),
                                           lambda e: make_pruner(pruner, e, checks))
    # Named: HyperbandPruner assigns brackets by a hash of the study name and trial number.
    study = optuna.create_study(study_name=f"{sampler}-{pruner}-{seed}", direction="maximize",
                                sampler=build_sampler(grid, seed), pruner=build_pruner(epochs))
    suggest = grid_suggest(grid)  # what the space's suggest is: one suggest_categorical per grid key
    spent, best, reached, trials, repeats = 0.0, math.nan, None, 0, 0
    at_target = (None, None)
    lost = 0  # trials pruned although their point reaches the target
    curve = [(0.0, math.nan)]
    seen: set[str] = set()
    while spent < cap and not (reached is not None and spent >= full):  # the plot shows up to `full`
        trial = study.ask()
        key = point_key(suggest(trial))
        row = rows[key]
        repeats += key in seen
        seen.add(key)
        trials += 1
        history = row["val_acc"]
        reports = history if checks == 1 else row["checks"]
        state = None
        for step, value in enumerate(reports, start=1):
            spent += 1 / checks
            trial.report(value, step)
            if step < epochs * checks and trial.should_prune():  # hpstudy never prunes at the last epoch
                state = TrialState.PRUNED
                break
        if state is not None and reached is None and history and max(history) >= target:
            lost += 1
        if state is None and row["status"] != "completed":
            spent += epochs_run(row) - len(reports) / checks  # stopped by the engine inside an epoch
            state = TrialState.PRUNED
        if state is None:
            study.tell(trial, max(history))
            best = max(history) if math.isnan(best) else max(best, max(history))
        else:
            study.tell(trial, state=state)
        curve.append((spent, best))
        if reached is None and best >= target:
            reached, at_target = spent, (trials, repeats)
    return {"reached": reached, "curve": curve, "trials": at_target[0], "repeats": at_target[1], "lost": lost}


def _kwargs(spec: str) -> tuple[str, dict[str, Any]]:
    """'name:key=value,key=value' -> (name, kwargs); values are read as Python literals when they parse."""
    import ast

    name, _, rest = spec.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return name, kwargs


def sampler_factory(spec: str) -> Callable:
    """--explore sampler: 'hp:NAME' (hpstudy's make_sampler) or tpe / random / qmc with Optuna keyword
    arguments, e.g. 'tpe:n_startup_trials=5,multivariate=True,group=True', 'qmc:scramble=True'."""
    name, kwargs = _kwargs(spec)
    if name == "hp":
        return lambda grid, seed: make_sampler(spec.split(":", 1)[1], grid, seed)
    cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
           "qmc": optuna.samplers.QMCSampler}[name]
    return lambda grid, seed: cls(seed=seed, **kwargs)


def pruner_factory(spec: str, checks: int = 1) -> Callable:
    """--explore pruner: 'hp:NAME' (hpstudy's make_pruner) or none / median / percentile / sha / hyperband /
    patient (PatientPruner around a MedianPruner: patience=..., the rest go to the MedianPruner) with Optuna
    keyword arguments. Steps count checks (epochs with checks=1): min_resource defaults to one epoch and
    Hyperband's max_resource to all of them, as in make_pruner."""
    name, kwargs = _kwargs(spec)
    P = optuna.pruners  # noqa: N806
    if name == "hp":
        return lambda epochs: make_pruner(spec.split(":", 1)[1], epochs, checks)
    if name == "none":
        return lambda epochs: P.NopPruner()
    if name == "median":
        return lambda epochs: P.MedianPruner(**kwargs)
    if name == "percentile":
        return lambda epochs: P.PercentilePruner(**kwargs)
    if name == "sha":
        return lambda epochs: P.SuccessiveHalvingPruner(**{"min_resource": checks, **kwargs})
    if name == "hyperband":
        return lambda epochs: P.HyperbandPruner(**{"min_resource": checks, "max_resource": epochs * checks, **kwargs})
    if name == "patient":
        patience = kwargs.pop("patience", 1)
        return lambda epochs: P.PatientPruner(P.MedianPruner(**kwargs), patience=patience)
    raise ValueError(f"unknown pruner spec {spec!r}")


def explore(rows, grid, epochs: int, best: float, full: float, args) -> None:
    """Every --explore-samplers x --explore-pruners pair over --seeds seeds from --seed-offset; prints the
    epochs to target (median, quartiles) and how many seeds reach the target within the grid's epochs."""
    target = best - args.tolerance
    hits = sum(r["status"] == "completed" and max(r["val_acc"]) >= target for r in rows.values())
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    print(f"explore: target {target:.4f} (grid best - {args.tolerance * 100:.1f} points, {hits} points reach it); "
          f"seeds {seeds.start}-{seeds.stop - 1}; share of the grid's {full:.0f} epochs: median [quartiles]; "
          f"'in grid': seeds whose best is within tolerance after {full:.0f} epochs")
    pct = lambda x: 100 * x / full  # noqa: E731
    for s_spec in args.explore_samplers:
        for p_spec in args.explore_pruners:
            started = time.perf_counter()
            make = (sampler_factory(s_spec), pruner_factory(p_spec, args.checks))
            # The study name as the official run's for hp: specs (Hyperband's brackets hash it).
            names = (s_spec.removeprefix("hp:"), p_spec.removeprefix("hp:"))
            runs = [replay(rows, ordered_grid(grid, None if args.listed else seed), *names, seed, epochs,
                           target, full, 2 * full, make, args.checks) for seed in seeds]
            reached = [r["reached"] if r["reached"] is not None else math.inf for r in runs]
            q1, med, q3 = statistics.quantiles(reached, n=4)
            med = statistics.median(reached)
            within = sum(x <= full for x in reached)
            hit = [r for r in runs if r["reached"] is not None]
            trials = statistics.median(r["trials"] for r in hit) if hit else math.nan
            print(f"  {s_spec:45s} {p_spec:48s} {pct(med):5.1f}% [{pct(q1):5.1f} - {pct(q3):5.1f}]  mean "
                  f"{pct(statistics.fmean(min(x, 2 * full) for x in reached)):5.1f}%  in grid {within:3d}/{len(runs)}"
                  f"  trials {trials:4.1f}  lost {sum(r['lost'] for r in runs):3d}  ({time.perf_counter() - started:.0f} s)",
                  flush=True)


def step_values(curve: list[tuple[float, float]], xs: np.ndarray) -> np.ndarray:
    """Best-so-far at each x: the value after the last trial that ended at or before x."""
    ends = np.array([c[0] for c in curve])
    values = np.array([c[1] for c in curve])
    return values[np.searchsorted(ends, xs, side="right") - 1]


def plot(results: dict[tuple[str, str], list[dict]], pruners: list[str], full: float, target: float,
         best: float, out: Path, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(0, full, 721)
    fig, axes = plt.subplots(1, len(pruners), figsize=(5.5 * len(pruners), 4.8), sharey=True, squeeze=False)
    colours = {"tpe": "tab:blue", "random": "tab:orange", "qmc": "tab:green", "grid": "0.4"}
    for ax, pruner in zip(axes[0], pruners):
        lines = [(s, pruner) for s in SAMPLERS] + [("grid", "none")]
        for sampler, prn in lines:
            ys = np.array([step_values(r["curve"], xs) for r in results[(sampler, prn)]]) * 100
            ys = np.nan_to_num(ys, nan=0.0)  # no completed trial yet: nothing found (below the axis)
            lo, mid, hi = np.percentile(ys, [25, 50, 75], axis=0)
            label = sampler if sampler != "grid" else "grid in random order, no pruning"
            style = "--" if sampler == "grid" else "-"
            ax.plot(xs, mid, style, color=colours[sampler], label=label, drawstyle="steps-post")
            ax.fill_between(xs, lo, hi, color=colours[sampler], alpha=0.12, step="post")
        ax.axhline(target * 100, color="k", lw=0.8, ls=":", label=f"target {target * 100:.1f}% (grid best - 0.5)")
        ax.axvline(GOAL * full, color="tab:red", lw=0.8, ls=":", label=f"goal: {GOAL:.0%} of the grid's epochs")
        ax.set_title(f"pruner: {pruner}")
        ax.set_xlabel("training epochs spent (summed over trials)")
        ax.set_xlim(0, full)
        ax.set_ylim(max(0, best * 100 - 12), best * 100 + 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best validation accuracy so far (%)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"LeNet-5 / mnist-small, optimizer x lr x batch-size grid ({GRID_STUDY}): median and "
                 f"interquartile band over {seeds} sampler seeds (replayed from a table of real runs)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50, help="sampler seeds per sampler (>= 5)")
    parser.add_argument("--pruners", default="median,hyperband,none",
                        help="pruners to replay with; the first is the headline (median: the lenet5-tpe study's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while building the table")
    parser.add_argument("--train-size", type=int, default=None, help="default: the study's (all 4,000)")
    parser.add_argument("--val-size", type=int, default=None, help="default: the study's (all 1,000)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "search_efficiency.png"))
    parser.add_argument("--refresh", action="store_true", help="retrain the table even if cached")
    parser.add_argument("--checks", type=int, default=1,
                        help="checks_per_epoch of the trials (the pruner is asked at each); default 1")
    parser.add_argument("--explore", action="store_true",
                        help="instead of the official figure: replay every --explore-samplers x --explore-pruners pair")
    parser.add_argument("--explore-samplers", nargs="+", default=["hp:tpe", "hp:random", "hp:qmc"],
                        help="sampler specs, e.g. hp:tpe, tpe:n_startup_trials=5,multivariate=True, qmc:scramble=True")
    parser.add_argument("--explore-pruners", nargs="+", default=["hp:median", "hp:hyperband", "hp:none"],
                        help="pruner specs, e.g. hp:median, median:n_startup_trials=3,n_warmup_steps=2, sha:reduction_factor=3")
    parser.add_argument("--seed-offset", type=int, default=0, help="--explore: first seed (held-out checks)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="--explore: target = grid best - this")
    parser.add_argument("--listed", action="store_true", help="--explore: the grid's choices in the listed order")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("hpstudy").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    pruners = args.pruners.split(",")

    definition = STUDIES[GRID_STUDY]
    space = SPACES[definition.space]
    grid = {k: list(v) for k, v in space.grid.items()}
    base = dict(definition.base)
    if args.train_size:
        base["train_size"] = args.train_size
    if args.val_size:
        base["val_size"] = args.val_size
    if args.checks > 1:
        base["checks_per_epoch"] = args.checks
    epochs = int(base["epochs"])
    tpe = STUDIES[TPE_STUDY]

    print("Search efficiency. Values are REPLAYED from a table of real training runs: every grid point "
          "trained once (seed 0) with hpstudy's engine; a replayed trial reports exactly what a real one would.")
    print(f"machine: {machine()}")
    started = time.perf_counter()
    table = build_table(base, grid, args.threads)
    rows = table["rows"]
    sizes = (f"{base.get('train_size', 4000)} train / {base.get('val_size', 1000)} val images of "
             f"mnist-small")
    print(f"table: {GRID_STUDY} ({space.name}, {grid_size(grid)} points: "
          + " x ".join(f"{k} {v}" for k, v in grid.items())
          + f"), {base['model']}, {sizes}, {epochs} epochs; "
          + (f"read from {table['cached']} (built in {table['seconds']:.0f} s)" if table["cached"]
             else f"built now in {table['seconds']:.0f} s with {args.threads} threads"))
    print(f"the {TPE_STUDY} study searches {tpe.space} (continuous lr and weight decay, 8 optimizers, init, "
          f"scheduler): no finite table covers it, so its sampler ({tpe.sampler}) and pruner ({tpe.pruner}) "
          f"are replayed here over this grid's values")
    print()
    print(f"{'optimizer':9s} {'lr':>7s} {'batch':>5s}  {'status':9s} {'epochs run':>10s}  val_acc per epoch")
    for row in rows.values():
        p = row["params"]
        print(f"{p['optimizer']:9s} {p['lr']:7.0e} {p['batch_size']:5d}  {row['status']:9s} "
              f"{epochs_run(row):10.2f}  {' '.join(f'{v:.3f}' for v in row['val_acc'])}")

    completed = [r for r in rows.values() if r["status"] == "completed"]
    best_row = max(completed, key=lambda r: max(r["val_acc"]))
    best = max(best_row["val_acc"])
    target = best - TOLERANCE
    hits = sum(max(r["val_acc"]) >= target for r in completed)
    full = float(grid_size(grid) * epochs)
    actual = sum(epochs_run(r) for r in rows.values())
    print()
    print(f"grid best: {best:.4f} ({best_row['params']}); target >= {target:.4f}; "
          f"{hits} of {len(rows)} points reach it")
    print(f"full grid: {full:.0f} epochs ({grid_size(grid)} points x {epochs}); the grid actually runs "
          f"{actual:.1f} (the engine stops stalled runs inside an epoch)")

    if args.explore:
        print()
        explore(rows, grid, epochs, best, full, args)
        print(f"wall time {time.perf_counter() - started:.0f} s")
        return

    cap = 2 * full
    # Each seed lists every parameter's choices in its own random order: an unscrambled QMCSampler (as
    # make_sampler built it before it scrambled) always draws the first listed value of every parameter
    # at its second trial, and this grid lists its best point first. The listed order is replayed once
    # more below: with scrambling its figure is no longer that lucky constant.
    results: dict[tuple[str, str], list[dict]] = {}
    runs_of = [(s, p) for p in pruners for s in SAMPLERS] + [("grid", "none"), ("qmc", f"{pruners[0]}, listed order")]
    for sampler, pruner in runs_of:
        listed = pruner.endswith("listed order")
        results[(sampler, pruner)] = [
            replay(rows, ordered_grid(grid, None if listed else seed), sampler, pruner.split(",")[0], seed,
                   epochs, target, full, cap, checks=args.checks) for seed in range(args.seeds)]
    plot(results, pruners, full, target, best, Path(args.out), args.seeds)

    print()
    print(f"epochs to target over {args.seeds} sampler seeds (each with the choices in its own order; cap "
          f"{cap:.0f}): median [quartiles] (min - max), as a share of the full grid's {full:.0f} epochs; trials "
          f"run until then (of which repeats of a point already run), median; trials of a target point pruned "
          f"before the target was reached, in all seeds")
    summary = {}
    for (sampler, pruner), runs in results.items():
        reached = [r["reached"] if r["reached"] is not None else math.inf for r in runs]
        med = statistics.median(reached)
        summary[(sampler, pruner)] = med
        missed = sum(math.isinf(x) for x in reached)
        hit = [r for r in runs if r["reached"] is not None]
        trials = statistics.median(r["trials"] for r in hit) if hit else math.nan
        repeats = statistics.median(r["repeats"] for r in hit) if hit else math.nan
        q1, _, q3 = statistics.quantiles(reached, n=4)
        lo, hi = min(reached), max(reached)
        pct = lambda x: 100 * x / full  # noqa: E731
        print(f"  {sampler:6s} + {pruner:22s} {med:5.1f} epochs = {pct(med):4.1f}% [{pct(q1):4.1f} - {pct(q3):4.1f}%] "
              f"({pct(lo):.0f} - {pct(hi):.0f}%) of the grid; {trials:4.1f} trials ({repeats:.0f} repeats); "
              f"{sum(r['lost'] for r in runs)} target-point trials pruned"
              + (f"; {missed} seed(s) missed the target within the cap" if missed else ""))
    print("  (TPE's first 10 trials are random draws (n_startup_trials 10) from the same seed as random's, "
          "so the two coincide until trial 10)")
    print("  (qmc in the listed order: the grid's choices as listed, momentum / 0.05 / 64 first, the grid's "
          "best point; an unscrambled Sobol sequence draws it at trial 2 for every seed, 11%; make_sampler's "
          "QMCSampler is scrambled by its seed)")
    print(f"plot: {args.out}")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    head = pruners[0]
    figures = ", ".join(f"{s} {100 * summary[(s, head)] / full:.0f}%" for s in SAMPLERS)
    print(f"RESULT epochs to within 0.5 points of the grid best, median of {args.seeds} seeds, {head} pruner: "
          f"{figures} of the full grid's {full:.0f} epochs (goal <= {GOAL:.0%}); reference: the grid itself "
          f"in random order {100 * summary[('grid', 'none')] / full:.0f}%")


if __name__ == "__main__":
    main()
