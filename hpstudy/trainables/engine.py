"""The training run: one function from a config to a result, reporting through a Reporter."""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from hpstudy.trainables import checkpoints, loader
from hpstudy.trainables.config import ConfigError, TrainConfig
from hpstudy.trainables.cuda_graphs import capture_training_graphs, eager_forward
from hpstudy.trainables.datasets import dataset_info
from hpstudy.trainables.divergence import DivergenceMonitor
from hpstudy.trainables.inits import apply_init
from hpstudy.trainables.metrics import confusion_matrix, per_class_scores
from hpstudy.trainables.models import build_model, check_input, count_parameters
from hpstudy.trainables.optimizers import build_optimizer, load_optimizer_state
from hpstudy.trainables.reporting import NullReporter, Reporter, StopTrial
from hpstudy.trainables.schedulers import build_scheduler

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# History fields that measure the machine, not the training; excluded when comparing runs.
TIMING_FIELDS = ("epoch_time_s", "images_per_s")


PRENORMALIZE_MAX_BYTES = 2 << 30  # a float copy of the training images up to this size, on a GPU
# Validation images scored at a check inside an epoch (checks_per_epoch > 1): enough to tell a
# hopeless trial (about +-2 points of noise), few enough to cost a fraction of the training between
# checks. The split is shuffled, so the first ones are a random sample.
CHECK_VAL_IMAGES = 512


def use_deterministic_cuda() -> None:
    """Same config and seed, same metrics on a GPU too: cuDNN's autotuner and its atomic-add backward
    kernels differ in the last bits from run to run (seen on an H100), so pick deterministic kernels.
    warn_only: an op with no deterministic CUDA kernel warns instead of failing the trial
    (tests/trainables/test_cuda.py checks every model). The cuBLAS setting must precede its first use."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{name} requested but CUDA is not available")
    return torch.device(name)


def check_config(cfg: TrainConfig) -> None:
    """Everything that can be checked before any file is read or written (the model against the
    dataset's input shape included)."""
    cfg.validate()
    resolve_device(cfg.device)
    check_input(cfg, dataset_info(cfg.dataset, cfg.data_dir, cfg.image_size))


def train(cfg: TrainConfig, reporter: Reporter | None = None, checkpoint_dir: Path | None = None,
          resume_from: Path | None = None, durable_checkpoints: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the result dict (also given to ``reporter.finish``).

    checkpoint_dir: where an epoch's checkpoint is written when one is due (cfg.checkpoint_every_s; the last
    epoch's always). None: no checkpoints.
    durable_checkpoints: False when checkpoint_dir is scratch whose files the reporter copies elsewhere
    (see checkpoints.save_checkpoint).
    resume_from: a directory of checkpoints; the newest good one is continued from, if any.
    """
    reporter = reporter or NullReporter()
    check_config(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        use_deterministic_cuda()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = dataset_info(cfg.dataset, cfg.data_dir, cfg.image_size)
    train_split, val_split, test_split = loader.load_splits(cfg, device)
    normalize = loader.Normalizer(info, device, cfg.channels_last)

    torch.manual_seed(cfg.seed)  # model init (and dropout from here on)
    model = build_model(cfg, info)
    apply_init(model, cfg.init)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), cfg)
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    scheduler, per_step = build_scheduler(optimizer, cfg, steps_per_epoch)
    monitor = DivergenceMonitor(info.num_classes, cfg.diverge_loss_factor, cfg.chance_warmup_steps)
    history: list[dict[str, Any]] = []
    start_epoch = 0

    found = checkpoints.load_latest(resume_from) if resume_from else None
    if found:
        state, path = found
        _check_same_run(cfg, state["config"], path)
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        monitor.load_state_dict(state["monitor"])
        history = list(state["history"])
        start_epoch = state["epoch"]
        _set_rng(state["rng"])
        log.info("resumed from %s (epoch %d)", path, start_epoch)

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and device.type == "cuda"
                else nullcontext())
    train_split, prenormalized, graphed = (_prepare_gpu_training(cfg, model, train_split, normalize)
                                           if device.type == "cuda" else (train_split, False, False))
    checks = cfg.checks_per_epoch
    check_after = _checks_by_batch(steps_per_epoch, checks)
    val_sample = loader.Split(val_split.images[:CHECK_VAL_IMAGES], val_split.labels[:CHECK_VAL_IMAGES])
    status, reason = "completed", None
    last_saved = time.perf_counter()  # for cfg.checkpoint_every_s
    for epoch in range(start_epoch, cfg.epochs):
        generator = loader.epoch_generator(cfg.seed, epoch)
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        started = time.perf_counter()
        loss_sum, correct_sum, seen, checking = 0.0, 0, 0, 0.0
        batches = loader.train_batches(train_split, cfg.batch_size, generator)
        for batch, (images, labels) in enumerate(batches, start=1):
            x = images if prenormalized else normalize(images, cfg.augment, generator)
            with autocast:
                logits = model(x) if not graphed or len(labels) == cfg.batch_size else eager_forward(model, x)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_step:
                scheduler.step()
            # One sync per step for both numbers: the divergence monitor needs them anyway.
            loss_value, correct = torch.stack([loss.detach().float(),
                                               (logits.argmax(1) == labels).sum().float()]).tolist()
            correct = int(correct)
            loss_sum += loss_value * len(labels)
            correct_sum += correct
            seen += len(labels)
            reporter.check_stop()
            reason = monitor.update(loss_value, correct, len(labels))
            if reason:
                status = reason.split(":")[0]  # "diverged" or "stalled"
                log.info("%s", reason)
                break
            for check in check_after.get(batch, ()):
                # Scoring a sample touches no RNG and no training state: the run trains the same
                # whatever checks_per_epoch is (tests/trainables/test_engine.py).
                check_started = time.perf_counter()
                val_loss, val_acc, _ = evaluate(model, val_sample, normalize, info.num_classes, autocast)
                model.train()
                checking += time.perf_counter() - check_started
                try:
                    reporter.report({"epoch": epoch + 1, "step": epoch * checks + check, "partial": True,
                                     "train_loss": loss_sum / seen, "train_acc": correct_sum / seen,
                                     "val_loss": val_loss, "val_acc": val_acc, "lr": lr}, None)
                except StopTrial as stop:
                    status, reason = "pruned", stop.reason
                    break
            if status != "completed":
                break
        if status != "completed":
            break
        train_time = time.perf_counter() - started - checking  # images_per_s: training alone
        if not per_step:
            scheduler.step()
        val_loss, val_acc, _ = evaluate(model, val_split, normalize, info.num_classes, autocast, reporter.check_stop)
        metrics = {
            "epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct_sum / seen,
            "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
            "epoch_time_s": time.perf_counter() - started, "images_per_s": seen / train_time,
        }
        history.append(metrics)
        saved = None
        if checkpoint_dir is not None and (epoch + 1 == cfg.epochs
                                           or time.perf_counter() - last_saved >= cfg.checkpoint_every_s):
            _save(checkpoint_dir, cfg, epoch + 1, model, optimizer, scheduler, history, monitor,
                  durable_checkpoints)
            saved, last_saved = checkpoint_dir, time.perf_counter()
        try:
            reporter.report({**metrics, "step": (epoch + 1) * checks}, saved)
        except StopTrial as stop:
            status, reason = "pruned", stop.reason
            break

    test_loss, test_acc, matrix = evaluate(model, test_split, normalize, info.num_classes, autocast)
    result = {
        "status": status, "reason": reason, "history": history, "config": cfg.to_dict(),
        "param_count": count_parameters(model), "steps": monitor.step,
        "steps_planned": steps_per_epoch * cfg.epochs, "classes": list(info.classes),
        "test": {"test_loss": test_loss, "test_acc": test_acc, "confusion_matrix": matrix.tolist(),
                 **per_class_scores(matrix)},
    }
    reporter.finish(result)
    return result


def _checks_by_batch(steps_per_epoch: int, checks: int) -> dict[int, list[int]]:
    """The checks inside an epoch, keyed by the (1-based) batch after which each is reported: evenly
    spaced; with more checks than batches, a batch carries several (so step numbers mean the same
    fraction of an epoch in every trial of a study). The last check is the epoch's end, not in here."""
    by_batch: dict[int, list[int]] = {}
    for check in range(1, checks):
        by_batch.setdefault(max(1, round(check * steps_per_epoch / checks)), []).append(check)
    return by_batch


def _prepare_gpu_training(cfg: TrainConfig, model: torch.nn.Module, train_split: loader.Split,
                          normalize: loader.Normalizer) -> tuple[loader.Split, bool, bool]:
    """Fewer kernel launches per step on a GPU (small models there are bound by them). Returns the
    training split, whether its images are already normalized, and whether full batches replay CUDA
    graphs (the short last batch of an epoch runs eagerly)."""
    # Normalized once, not per batch: the same values. Not with augmentation, which works on
    # unnormalized batches, nor when the float copy would be large.
    prenormalized = not cfg.augment and train_split.images.numel() * 4 <= PRENORMALIZE_MAX_BYTES
    if prenormalized:
        train_split = loader.Split(normalize(train_split.images), train_split.labels)
    # Not with bf16: capturing under autocast needs its cache off, which this does not manage.
    graphed = False
    if cfg.cuda_graphs and not cfg.bf16 and len(train_split) >= cfg.batch_size:
        first = train_split.images[:cfg.batch_size]
        graphed = capture_training_graphs(model, first if prenormalized else normalize(first))
    return train_split, prenormalized, graphed


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: loader.Split, normalize: loader.Normalizer, num_classes: int,
             autocast=nullcontext(), check_stop: Callable[[], None] = lambda: None) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, confusion matrix) over a whole split, without augmentation. ``check_stop``:
    the reporter's, before every batch (a large validation set takes seconds)."""
    model.eval()
    loss_sum, predictions = 0.0, []
    for images, labels in loader.eval_batches(split):
        check_stop()
        with autocast:
            logits = model(normalize(images))
        loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        predictions.append(logits.argmax(1))
    predicted = torch.cat(predictions)
    matrix = confusion_matrix(split.labels, predicted, num_classes).cpu()
    accuracy = float((predicted == split.labels).float().mean())
    return loss_sum / len(split), accuracy, matrix


def _save(directory: Path, cfg: TrainConfig, epoch: int, model, optimizer, scheduler, history, monitor,
          durable: bool) -> None:
    state = {
        "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "epoch": epoch,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "history": history, "monitor": monitor.state_dict(),
        "rng": _get_rng(),
        # The data order of epoch e is drawn from loader.epoch_generator(seed, e): the next epoch and
        # the seed are all the state it has.
        "data_order": {"seed": cfg.seed, "next_epoch": epoch},
    }
    try:
        checkpoints.save_checkpoint(state, directory, epoch, keep=cfg.keep_checkpoints, durable=durable)
    except OSError as exc:
        # Training goes on; a resume then starts from the newest good checkpoint, which is older.
        log.warning("checkpoint for epoch %d not written: %s", epoch, exc)


def _get_rng() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Settings that may differ between a run and its resumption without changing what it computes.
_RESUME_MAY_DIFFER = {"epochs", "data_dir", "download", "device", "threads", "keep_checkpoints", "cuda_graphs",
                      "checks_per_epoch", "checkpoint_every_s"}


def _check_same_run(cfg: TrainConfig, saved: dict[str, Any], path: Path) -> None:
    current = cfg.to_dict()
    for key, value in saved.items():
        if key not in _RESUME_MAY_DIFFER and current.get(key) != value:
            raise ConfigError(key, f"differs from the checkpoint {path} ({current.get(key)!r} vs "
                                   f"{value!r}); use another --out directory or drop --resume")
