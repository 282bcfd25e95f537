"""GPU benchmarks: a 60,000-image LeNet-5 MNIST epoch with the data resident on the device; trials
packed four to a GPU (Ray `{"gpu": 0.25}`) against one at a time; several LeNet-5s trained together in
one process (torch.func stacking + vmap) against one after another. Without CUDA it prints
"skipped: no CUDA device" and exits 0.

Data: the full MNIST is not bundled, so the 60,000 training images are mnist-small's 5,000 real training
images repeated 15 times (75,000, of which the default 0.2 validation split leaves 60,000 to train on),
written as MNIST IDX files and read by the engine as dataset "mnist". Per-image cost is what counts here,
not accuracy.

1. Engine epoch: hpstudy's engine (`train`, device cuda, data on the device, one loss/accuracy sync per
   step as always), LeNet-5, SGD, batch 128 (and 512); the training pass of epochs 2.. (evaluation
   excluded; `epoch_time_s` with 1,000 validation images is printed too), with CUDA graphs (the default)
   and without (the reference). Goal: under 0.5 s.
2. Packing: N trials (the same engine, 2 epochs of the 60k set) through Ray Tune with hpstudy's
   tune_trainable at {"cpu": 1, "gpu": 0.25} (4 at a time) and {"cpu": 1, "gpu": 1} (one at a time),
   one ray.init; trials/hour ratio.
3. Stacking: K LeNet-5s (seeds 0..K-1, same batches, SGD) for one epoch, one after another with a plain
   loop (eager, and with CUDA graphs as the engine trains, capture included) vs all K at once through
   torch.func.stack_module_state + vmap; the stacked parameters are checked against the sequential
   ones. Worth keeping only if it wins against the engine's own path.

    python bench/gpu.py [--trials 8] [--models 8]
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from _common import scratch_dir

REPEAT = 15  # 5,000 x 15 = 75,000 images -> 60,000 train / 15,000 val
EPOCH_GOAL_S = 0.5


# ------------------------------------------------------------------------------------------ data

def _write_idx(path: Path, tensor: torch.Tensor, magic_type: int = 0x08) -> None:
    """An IDX file (the MNIST format): magic (0, 0, type, ndim), big-endian dims, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, magic_type, tensor.dim()))
        f.write(struct.pack(f">{tensor.dim()}I", *tensor.shape))
        f.write(tensor.to(torch.uint8).contiguous().numpy().tobytes())


def stage_mnist60k(root: Path) -> Path:
    """<root>/MNIST/raw/*-ubyte: mnist-small's training images repeated REPEAT times, its test set as is."""
    from hpstudy.trainables.datasets import load_split

    raw = root / "MNIST" / "raw"
    if (raw / "t10k-labels-idx1-ubyte").exists():
        return root
    raw.mkdir(parents=True, exist_ok=True)
    images, labels = load_split("mnist-small", True, str(root / "small"), download=False)
    test_images, test_labels = load_split("mnist-small", False, str(root / "small"), download=False)
    _write_idx(raw / "train-images-idx3-ubyte", images.squeeze(1).repeat(REPEAT, 1, 1))
    _write_idx(raw / "train-labels-idx1-ubyte", labels.repeat(REPEAT))
    _write_idx(raw / "t10k-images-idx3-ubyte", test_images.squeeze(1))
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_labels)
    return root


def engine_config(data_dir: Path, **changes: Any) -> dict[str, Any]:
    return {"dataset": "mnist", "data_dir": str(data_dir), "download": False, "model": "lenet5",
            "optimizer": "sgd", "lr": 0.05, "batch_size": 128, "epochs": 3, "val_size": 1000,
            "test_size": 1000, "device": "cuda", "threads": 1, **changes}


# ------------------------------------------------------------------------------------------ 1. epoch

def engine_epoch(data_dir: Path, batch_size: int, cuda_graphs: bool) -> dict[str, float]:
    from hpstudy.trainables import TrainConfig, train

    result = train(TrainConfig.from_dict(engine_config(data_dir, batch_size=batch_size, cuda_graphs=cuda_graphs)))
    history = result["history"][1:]  # epoch 1: CUDA/cuDNN warm-up
    n_train = 60000
    return {"train_s": statistics.median(n_train / h["images_per_s"] for h in history),
            "epoch_s": statistics.median(h["epoch_time_s"] for h in history),
            "val_acc": result["history"][-1]["val_acc"]}


# ------------------------------------------------------------------------------------------ 2. packing

def packing(data_dir: Path, trials: int) -> dict[int, float]:
    """Trials/hour with 4 trials per GPU and with one at a time (seconds of tuner.fit per batch)."""
    import ray
    from ray import tune

    from hpstudy.trainables.trainable import tune_trainable

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trials of a few seconds checkpoint every epoch; Tune's warning about frequent snapshots is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    root = scratch_dir("hpstudy-gpu-pack-")
    walls = {}
    # address="local": a new Ray instance of our own, never a cluster someone else started here.
    ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    try:
        for per_gpu, gpu in ((1, 1.0), (4, 0.25)):
            space = {**engine_config(data_dir, epochs=2), "seed": tune.grid_search(list(range(trials)))}
            tuner = tune.Tuner(
                tune.with_resources(tune_trainable, {"cpu": 1, "gpu": gpu}), param_space=space,
                tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=per_gpu, reuse_actors=True),
                run_config=tune.RunConfig(name=f"pack-{per_gpu}", storage_path=str(root / "ray"), verbose=0,
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
            started = time.perf_counter()
            results = tuner.fit()
            walls[per_gpu] = time.perf_counter() - started
            failed = [r.error for r in results if r.error]
            if failed:
                raise RuntimeError(f"{len(failed)} trial(s) failed: {failed[0]}")
            print(f"   {per_gpu} trial(s) per GPU: {trials} trials in {walls[per_gpu]:.1f} s = "
                  f"{3600 * trials / walls[per_gpu]:.0f} trials/h", flush=True)
    finally:
        ray.shutdown()
    return {k: 3600 * trials / v for k, v in walls.items()}


# ------------------------------------------------------------------------------------------ 3. stacking

def _models(k: int, device: torch.device) -> list[torch.nn.Module]:
    from hpstudy.trainables.models import MODELS

    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(MODELS["lenet5"](1, 10, (28, 28)).to(device))
    return nets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stacking(x: torch.Tensor, y: torch.Tensor, k: int, batch: int = 128, lr: float = 0.05) -> dict[str, float]:
    """One epoch of K models: sequentially (plain loop each) and stacked (vmap); same batches, same SGD."""
    from torch.func import functional_call, stack_module_state, vmap

    from hpstudy.trainables.cuda_graphs import capture_training_graphs, eager_forward

    device = x.device
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(device)
    batches = [(x[order[i:i + batch]], y[order[i:i + batch]]) for i in range(0, len(y), batch)]

    # Stacked: parameters of the K models as (K, ...) leaves; the summed loss gives each model its own
    # gradient (the models share no parameters).
    nets = _models(k, device)
    params, buffers = stack_module_state(nets)
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def forward(p, b, images):
        return functional_call(skeleton, (p, b), (images,))

    batched = vmap(forward, in_dims=(0, 0, None))
    opt = torch.optim.SGD(list(params.values()), lr=lr)

    def stacked_epoch() -> None:
        for images, labels in batches:
            logits = batched(params, buffers, images)  # (K, B, 10)
            loss = F.cross_entropy(logits.flatten(0, 1), labels.repeat(k), reduction="sum") / len(labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    # Sequential: each model alone, the engine's inner loop without its per-step syncs.
    seq_nets = _models(k, device)

    def sequential_epoch(nets_: list[torch.nn.Module], graphs: bool = False) -> None:
        for net in nets_:
            o = torch.optim.SGD(net.parameters(), lr=lr)
            if graphs:
                capture_training_graphs(net, batches[0][0])
            for images, labels in batches:
                full = len(labels) == batch
                loss = F.cross_entropy(net(images) if full or not graphs else eager_forward(net, images), labels)
                o.zero_grad(set_to_none=True)
                loss.backward()
                o.step()

    # Warm-up on throwaway copies (cuDNN autotuning, vmap tracing caches), then one timed epoch each.
    sequential_epoch([copy.deepcopy(seq_nets[0])])
    saved = {n: p.detach().clone() for n, p in params.items()}
    stacked_epoch()
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n])
    opt = torch.optim.SGD(list(params.values()), lr=lr)

    _sync(device)
    started = time.perf_counter()
    sequential_epoch(seq_nets)
    _sync(device)
    seq_s = time.perf_counter() - started
    graphed_nets = _models(k, device)
    _sync(device)
    started = time.perf_counter()
    sequential_epoch(graphed_nets, graphs=True)  # capture included
    _sync(device)
    graphed_s = time.perf_counter() - started
    started = time.perf_counter()
    stacked_epoch()
    _sync(device)
    stacked_s = time.perf_counter() - started

    diff = 0.0
    with torch.no_grad():
        for i, net in enumerate(seq_nets):
            for name, p in net.named_parameters():
                diff = max(diff, float((params[name][i] - p).abs().max()))
    return {"sequential_s": seq_s, "graphed_s": graphed_s, "stacked_s": stacked_s, "max_param_diff": diff}


# ------------------------------------------------------------------------------------------ main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per packing batch")
    parser.add_argument("--models", type=int, default=8, help="models stacked together")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    logging.getLogger("hpstudy").setLevel(logging.WARNING)
    root = scratch_dir("hpstudy-gpu-")
    started = time.perf_counter()
    data_dir = stage_mnist60k(root / "mnist60k")
    print(f"GPU benchmarks: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")
    print(f"data: mnist-small's 5,000 training images x {REPEAT} = 75,000 (60,000 train / 15,000 val "
          f"after the 0.2 split), read by the engine as dataset 'mnist'")
    figures: dict[str, str] = {}

    print("1. engine epoch, LeNet-5, SGD, data resident on the device")
    try:
        for batch in (128, 512):
            eager = engine_epoch(data_dir, batch, cuda_graphs=False)
            r = engine_epoch(data_dir, batch, cuda_graphs=True)
            print(f"   batch {batch}: training pass {r['train_s']:.3f} s per 60,000 images "
                  f"({60000 / r['train_s']:,.0f} img/s) with CUDA graphs, {eager['train_s']:.3f} s without "
                  f"(reference); with 1,000-image validation {r['epoch_s']:.3f} s; val_acc {r['val_acc']:.3f} "
                  f"(without {eager['val_acc']:.3f})", flush=True)
            figures.setdefault("epoch", f"epoch {r['train_s']:.3f} s at batch {batch} with CUDA graphs, "
                                        f"{eager['train_s']:.3f} s without (goal < {EPOCH_GOAL_S} s)")
    except Exception:
        traceback.print_exc()
        figures["epoch"] = "epoch: FAILED"

    print(f"2. packing: {args.trials} trials (2 epochs of the 60k set each) through Ray Tune")
    try:
        rates = packing(data_dir, args.trials)
        figures["packing"] = (f"4 per GPU {rates[4]:.0f} vs one at a time {rates[1]:.0f} trials/h = "
                              f"{rates[4] / rates[1]:.2f}x")
    except Exception:
        traceback.print_exc()
        figures["packing"] = "packing: FAILED"

    print(f"3. stacking: {args.models} LeNet-5s, one epoch of the 60,000 images, batch 128, SGD")
    try:
        from hpstudy.trainables.datasets import dataset_info, load_split
        from hpstudy.trainables.loader import Normalizer

        device = torch.device("cuda")
        images, labels = load_split("mnist", True, str(data_dir), download=False)
        x = Normalizer(dataset_info("mnist"), device)(images[:60000].to(device))
        s = stacking(x, labels[:60000].to(device), args.models)
        speedup = s["sequential_s"] / s["stacked_s"]
        vs_graphed = s["graphed_s"] / s["stacked_s"]
        verdict = "wins" if vs_graphed > 1.1 else "does not win"
        print(f"   one after another {s['sequential_s']:.2f} s eager, {s['graphed_s']:.2f} s with CUDA graphs "
              f"(as the engine trains); stacked {s['stacked_s']:.2f} s = {speedup:.2f}x vs eager, "
              f"{vs_graphed:.2f}x vs CUDA graphs ({verdict} against the engine's own path); "
              f"max |param difference| stacked vs sequential {s['max_param_diff']:.1e}", flush=True)
        figures["stacking"] = (f"stacking {args.models} models {speedup:.2f}x vs one after another eager, "
                               f"{vs_graphed:.2f}x vs one after another with CUDA graphs")
    except Exception:
        traceback.print_exc()
        figures["stacking"] = "stacking: FAILED"

    print(f"wall time {time.perf_counter() - started:.0f} s")
    print("RESULT " + "; ".join(figures.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
