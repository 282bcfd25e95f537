"""Parallel scaling: trials per hour with two concurrent 1-CPU trials against one at a time, through
Ray Tune with hpstudy's real trainable (`tune_trainable`, checkpoints and outputs included), one
`ray.init` for the whole run.

N identical short trials (LeNet-5, momentum SGD lr 0.05, batch 64, 2,000 mnist-small training images,
500 validation, 6 epochs; seeds 0..N-1) run with `tune.with_resources(..., {"cpu": 1})` at
max_concurrent_trials 1 and 2, alternating (1, 2, 2, 1, ...) so that drifting load from other work on
the machine hits both alike. The trial config is the base `hpstudy run` builds (plan_run with
cpus_per_trial 1: threads = 1, device cpu). Inside every trial a probe records the CPUs Ray assigned,
OMP_NUM_THREADS, torch's thread count when the trial starts and while it trains.

The reference, in the same run and alternation: the same trials in plain worker processes (a spawned
pool of 1 or 2, no Ray), i.e. what the machine itself gives two 1-thread trainings at that moment. The
figure is trials/hour while trials run (first start to last end of a batch); tuner.fit's wall time, which
adds Tune's start and stop once per batch (a study pays it once), is printed beside it.

    python bench/parallel_scaling.py [--trials 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import multiprocessing
import os
import statistics
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import data_dir, machine, scratch_dir
from hpstudy.studies.runner import RunSettings, plan_run

DEFINITION = "lenet5-optimizer-lr-bs"
POINT = {"optimizer": "momentum", "lr": 0.05, "batch_size": 64}
PROBE_KEY = "bench_probe_dir"
GOAL = 1.7


def probed_trainable(config: dict[str, Any]) -> None:
    """hpstudy's tune_trainable, with a record of the threads the trial had."""
    import ray
    import torch

    from hpstudy.trainables.trainable import tune_trainable

    probe_dir = Path(config[PROBE_KEY])
    assigned = ray.get_runtime_context().get_assigned_resources()
    record = {"pid": os.getpid(), "omp": os.environ.get("OMP_NUM_THREADS"),
              # In a placement group the CPU shows up as CPU_group_<i>_<id> and CPU_group_<id>, same amount.
              "cpus": assigned.get("CPU") or max((v for k, v in assigned.items() if k.startswith("CPU")), default=0),
              "assigned": assigned, "threads_at_start": torch.get_num_threads(), "start": time.time()}
    tune_trainable({k: v for k, v in config.items() if k != PROBE_KEY})
    record.update(threads_training=torch.get_num_threads(), interop=torch.get_num_interop_threads(),
                  end=time.time())
    (probe_dir / f"{uuid.uuid4().hex}.json").write_text(json.dumps(record))


def _bare_trial(config: dict[str, Any]) -> float:
    from hpstudy.trainables import TrainConfig, train

    started = time.perf_counter()
    train(TrainConfig.from_dict(config))
    return time.perf_counter() - started


def _warm(_: int) -> None:
    importlib.import_module("hpstudy.trainables")  # torch and the engine, before any timing
    time.sleep(1)  # long enough that every worker of the pool takes one


def bare_batch(base: dict[str, Any], trials: int, pool) -> float:
    """The same trials in plain worker processes (no Ray): the machine's own scaling."""
    started = time.perf_counter()
    list(pool.map(_bare_trial, [{**base, **POINT, "seed": seed} for seed in range(trials)]))
    return time.perf_counter() - started


def run_batch(base: dict[str, Any], trials: int, concurrent: int, root: Path) -> dict[str, Any]:
    from ray import tune

    probe_dir = root / f"probe-{uuid.uuid4().hex[:8]}"
    probe_dir.mkdir()
    space = {**base, **POINT, "seed": tune.grid_search(list(range(trials))), PROBE_KEY: str(probe_dir)}
    tuner = tune.Tuner(
        tune.with_resources(probed_trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=f"scaling-{concurrent}-{uuid.uuid4().hex[:6]}", storage_path=str(root / "ray"),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=0))
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) failed: {errors[0]}")
    records = [json.loads(p.read_text()) for p in probe_dir.glob("*.json")]
    assert len(records) == trials, f"{len(records)} probe records for {trials} trials"
    return {"wall": wall, "records": records,
            "span": max(r["end"] for r in records) - min(r["start"] for r in records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="each round runs both concurrencies")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    root = scratch_dir("hpstudy-scaling-")
    plan = plan_run(RunSettings(definition=DEFINITION, storage=f"sqlite:///{root}/unused.db", epochs=6,
                                overrides={"train_size": 2000, "val_size": 500, "test_size": 1000},
                                cpus_per_trial=1, data_dir=data_dir()))
    base = dict(plan.base)
    print(f"Parallel scaling: {args.trials} trials of {base['model']} {POINT}, {base['train_size']} train / "
          f"{base['val_size']} val images, {base['epochs']} epochs, resources {{'cpu': 1}} per trial, "
          f"config threads {base['threads']} (as `hpstudy run --cpus-per-trial 1` sets it)")
    print(f"machine: {machine()}")
    started = time.perf_counter()
    bare: dict[int, list[float]] = {1: [], 2: []}
    pools = {c: ProcessPoolExecutor(c, mp_context=multiprocessing.get_context("spawn")) for c in (1, 2)}
    for c, pool in pools.items():
        list(pool.map(_warm, range(c)))
    # address="local": a new Ray instance of our own, never a cluster someone else started here.
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        init_s = time.perf_counter() - started
        batches: dict[int, list[dict]] = {1: [], 2: []}
        for i in range(args.rounds):
            for concurrent in ((1, 2) if i % 2 == 0 else (2, 1)):
                wall = bare_batch(base, args.trials, pools[concurrent])
                bare[concurrent].append(wall)
                print(f"round {i + 1}, {concurrent} concurrent, plain processes without Ray: {wall:.1f} s for "
                      f"{args.trials} trials ({3600 * args.trials / wall:.0f} trials/h)", flush=True)
                batch = run_batch(base, args.trials, concurrent, root)
                batches[concurrent].append(batch)
                median_s = statistics.median(r["end"] - r["start"] for r in batch["records"])
                print(f"round {i + 1}, {concurrent} concurrent: {batch['wall']:.1f} s for {args.trials} trials "
                      f"(first start to last end {batch['span']:.1f} s; trial median {median_s:.2f} s, "
                      f"{3600 * args.trials / batch['wall']:.0f} trials/h)", flush=True)
    finally:
        ray.shutdown()
        for pool in pools.values():
            pool.shutdown()

    print()
    records = [r for bs in batches.values() for b in bs for r in b["records"]]
    print("threads inside the trials (cpus = what Ray assigned; torch threads when the trial starts, and "
          "while it trains):")
    seen = {}
    for r in records:
        key = (r["cpus"], r["omp"], r["threads_at_start"], r["threads_training"], r["interop"])
        seen[key] = seen.get(key, 0) + 1
    for (cpus, omp, at_start, training, interop), count in sorted(seen.items(), key=str):
        print(f"  {count:3d} trials: Ray CPUs {cpus:g}, OMP_NUM_THREADS {omp}, torch threads at start {at_start}, "
              f"training {training}, inter-op threads {interop}")
    ok = all(r["threads_training"] == r["cpus"] for r in records)
    print(f"torch threads == Ray's CPUs in every trial: {ok}")
    rate = {c: 3600 * args.trials * len(bs) / sum(b["wall"] for b in bs) for c, bs in batches.items()}
    span_rate = {c: 3600 * args.trials * len(bs) / sum(b["span"] for b in bs) for c, bs in batches.items()}
    trial_s = {c: statistics.median(r["end"] - r["start"] for b in bs for r in b["records"])
               for c, bs in batches.items()}
    print(f"median trial time: {trial_s[1]:.2f} s alone, {trial_s[2]:.2f} s two at a time "
          f"({trial_s[2] / trial_s[1]:.2f}x slower each)")
    print(f"trials/h counting trial execution only (first start to last end): {span_rate[1]:.0f} vs "
          f"{span_rate[2]:.0f} = {span_rate[2] / span_rate[1]:.2f}x")
    bare_rate = {c: 3600 * args.trials * len(ws) / sum(ws) for c, ws in bare.items()}
    print(f"reference, plain processes without Ray: {bare_rate[1]:.0f} vs {bare_rate[2]:.0f} trials/h = "
          f"{bare_rate[2] / bare_rate[1]:.2f}x (what this machine gives two 1-thread trainings right now)")
    print(f"ray.init {init_s:.1f} s (once, not counted); wall time {time.perf_counter() - started:.0f} s")
    fixed = {c: statistics.mean(b["wall"] - b["span"] for b in bs) for c, bs in batches.items()}
    print(f"tuner.fit wall minus trial execution (Tune start/stop per batch): {fixed[1]:.1f} s at 1, "
          f"{fixed[2]:.1f} s at 2 concurrent; a study pays it once, so the execution figure is the steady rate")
    print(f"RESULT 2 concurrent 1-CPU trials vs 1 through Ray Tune: {span_rate[2]:.0f} vs {span_rate[1]:.0f} "
          f"trials/h while trials run = {span_rate[2] / span_rate[1]:.2f}x (goal >= {GOAL}x); whole tuner.fit "
          f"{rate[2] / rate[1]:.2f}x; reference, the same trials in plain processes without Ray "
          f"{bare_rate[2] / bare_rate[1]:.2f}x; torch threads == Ray's CPUs: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
