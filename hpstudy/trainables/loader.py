"""Train/val/test splits held on the training device, batched by index.

Why not DataLoader: per-sample ``ToTensor`` + collation is the bottleneck for these small models
(see bench/throughput.py). The images stay uint8 on the device and are normalised (and augmented)
a whole batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from hpstudy.trainables.augment import augment_batch
from hpstudy.trainables.config import ConfigError, TrainConfig
from hpstudy.trainables.datasets import DatasetInfo, load_split

EVAL_BATCH_SIZE = 1024  # no gradients at eval time, so bigger batches just run faster


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W) on the device
    labels: torch.Tensor  # int64 (N,) on the device

    def __len__(self) -> int:
        return self.labels.shape[0]


def split_indices(n: int, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and val indices into the training set: a permutation by ``split_seed`` (not ``seed``, so
    every trial of a study sees the same validation set), then optional subset sizes."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
    n_val = max(1, round(n * cfg.val_fraction))
    val, train = order[:n_val], order[n_val:]
    if cfg.val_size is not None:
        if cfg.val_size > len(val):
            raise ConfigError("val_size", f"{cfg.val_size} is more than the {len(val)} validation images "
                                          f"(val_fraction {cfg.val_fraction} of {n})")
        val = val[: cfg.val_size]
    if cfg.train_size is not None:
        if cfg.train_size > len(train):
            raise ConfigError("train_size", f"{cfg.train_size} is more than the {len(train)} training "
                                            f"images left after the validation split")
        train = train[: cfg.train_size]
    return train, val


def check_sizes(cfg: TrainConfig, n_train_set: int, n_test_set: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The checks that need the dataset's size (subsets, batch size); returns the train/val indices."""
    train_idx, val_idx = split_indices(n_train_set, cfg)
    if cfg.batch_size > len(train_idx):
        raise ConfigError("batch_size", f"{cfg.batch_size} is larger than the training set "
                                        f"({len(train_idx)} images)")
    if cfg.test_size is not None and cfg.test_size > n_test_set:
        raise ConfigError("test_size", f"{cfg.test_size} is more than the {n_test_set} test images")
    return train_idx, val_idx


def load_splits(cfg: TrainConfig, device: torch.device) -> tuple[Split, Split, Split]:
    """(train, val, test) on ``device``; raises ConfigError for sizes the data cannot give."""
    images, labels = load_split(cfg.dataset, True, cfg.data_dir, cfg.download, cfg.image_size)
    test_images, test_labels = load_split(cfg.dataset, False, cfg.data_dir, cfg.download, cfg.image_size)
    train_idx, val_idx = check_sizes(cfg, len(labels), len(test_labels))
    if cfg.test_size is not None:
        test_images, test_labels = test_images[: cfg.test_size], test_labels[: cfg.test_size]

    def on_device(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(x.to(device), y.to(device))

    return (on_device(images[train_idx], labels[train_idx]), on_device(images[val_idx], labels[val_idx]),
            on_device(test_images, test_labels))


class Normalizer:
    """uint8 batch -> float, per-channel standardised, optionally augmented first."""

    def __init__(self, info: DatasetInfo, device: torch.device, channels_last: bool = False):
        self.mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
        self.fill = info.mean
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor, augment: tuple[str, ...] = (),
                 generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.float().div_(255)
        if augment:
            x = augment_batch(x, augment, generator, self.fill)
        return x.sub_(self.mean).div_(self.std).contiguous(memory_format=self.memory_format)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The data-order and augmentation RNG of one epoch: a function of (seed, epoch) alone, so a resumed
    run draws exactly what the uninterrupted run would have."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train_batches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches (the last one may be short: every image is seen once per epoch)."""
    order = torch.randperm(len(split), generator=generator).to(split.labels.device)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield split.images[idx], split.labels[idx]


def eval_batches(split: Split) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), EVAL_BATCH_SIZE):
        yield split.images[start:start + EVAL_BATCH_SIZE], split.labels[start:start + EVAL_BATCH_SIZE]
