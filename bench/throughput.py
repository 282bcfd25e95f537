"""Training throughput: hpstudy's engine vs the classic tutorial pipeline, same model, same run.

The reference is how `lenet5_train.py` scripts are written: torchvision MNIST with `ToTensor()` +
`Normalize` per sample, `DataLoader(batch_size=128, shuffle=True)`, the same model and SGD. Both sides
train on mnist-small's 4,000-image training split at batch size 128 with the same torch thread count;
images/s counts training steps only (evaluation excluded on both sides). A third figure, the model
alone on a pre-normalised in-memory tensor, is the ceiling any data pipeline can reach on this machine. Also prints LeNet-5's achieved
GFLOP/s (torch's FlopCounterMode, forward + backward) as a share of a 2048^2 matmul's GFLOP/s.

    python bench/throughput.py [--epochs 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from _common import scratch_dir
from hpstudy.trainables import TrainConfig, train
from hpstudy.trainables.datasets import _stage_mnist_small
from hpstudy.trainables.loader import split_indices
from hpstudy.trainables.models import MODELS

BATCH = 128


def engine_images_per_s(model: str, epochs: int, threads: int, data_dir: str) -> float:
    cfg = TrainConfig.from_dict({"dataset": "mnist-small", "model": model, "optimizer": "sgd", "lr": 0.01,
                                 "batch_size": BATCH, "epochs": epochs, "threads": threads,
                                 "data_dir": data_dir, "diverge_loss_factor": 0, "chance_warmup_steps": 0})
    history = train(cfg)["history"]
    return statistics.median(h["images_per_s"] for h in history[1:])  # first epoch: warm-up


def reference_images_per_s(model: str, epochs: int, threads: int, data_dir: str) -> float:
    torch.set_num_threads(threads)
    root = _stage_mnist_small(Path(data_dir))
    full = datasets.MNIST(str(root), train=True, download=False,
                          transform=transforms.Compose([transforms.ToTensor(),
                                                        transforms.Normalize((0.1307,), (0.3081,))]))
    train_idx, _ = split_indices(len(full), TrainConfig())  # the same 4,000 images the engine trains on
    loader = DataLoader(Subset(full, train_idx.tolist()), batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)
    net = MODELS[model](1, 10, (28, 28))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    rates = []
    for _ in range(epochs):
        started, seen = time.perf_counter(), 0
        for x, y in loader:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
        rates.append(seen / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def ceiling_images_per_s(model: str, epochs: int, threads: int) -> float:
    """The model alone on one pre-normalised tensor: no data pipeline at all (an upper bound)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(4000, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4000,))
    net = MODELS[model](1, 10, (28, 28)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        for i in range(0, 4000, BATCH):
            loss = F.cross_entropy(net(x[i:i + BATCH]), y[i:i + BATCH])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(4000 / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def lenet5_flops_per_image() -> float:
    net = MODELS["lenet5"](1, 10, (28, 28))
    x = torch.randn(BATCH, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), torch.zeros(BATCH, dtype=torch.long)).backward()
    return counter.get_total_flops() / BATCH


def matmul_gflops(threads: int, n: int = 2048, reps: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    data_dir = str(scratch_dir("hpstudy-bench-"))
    print(f"torch {torch.__version__}, {args.threads} threads, batch {BATCH}, mnist-small 4,000 training "
          f"images, median of epochs 2..{args.epochs}")
    results = {}
    for model in ("lenet5", "mlp"):
        ref = reference_images_per_s(model, args.epochs, args.threads, data_dir)
        eng = engine_images_per_s(model, args.epochs, args.threads, data_dir)
        top = ceiling_images_per_s(model, args.epochs, args.threads)
        results[model] = (eng, ref)
        print(f"{model:7s} engine {eng:8.0f} img/s   reference {ref:8.0f} img/s   ratio {eng / ref:5.2f}x   "
              f"(model alone, no data pipeline: {top:.0f} img/s = {top / ref:.2f}x the reference)")
    peak = matmul_gflops(args.threads)
    achieved = results["lenet5"][0] * lenet5_flops_per_image() / 1e9
    print(f"lenet5 achieved {achieved:.1f} GFLOP/s = {100 * achieved / peak:.1f}% of a 2048^2 matmul's "
          f"{peak:.0f} GFLOP/s")
    print(f"RESULT lenet5 {results['lenet5'][0] / results['lenet5'][1]:.2f}x (goal 3x), "
          f"mlp {results['mlp'][0] / results['mlp'][1]:.2f}x (goal 10x), "
          f"lenet5 {100 * achieved / peak:.1f}% of matmul peak")


if __name__ == "__main__":
    main()
