"""LR schedulers by name, over torch.optim.lr_scheduler.

Each factory returns ``(scheduler, per_step)``: per-step schedulers (cyclic, onecycle, warmup_cosine)
are stepped after every batch, the others after every epoch. Defaults for unset arguments are filled
here, so a config that names only ``scheduler`` still works.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.optim import lr_scheduler as sched

from hpstudy.trainables.config import ConfigError, TrainConfig

Factory = Callable[[torch.optim.Optimizer, TrainConfig, int], tuple[sched.LRScheduler, bool]]

# Which flat config fields each scheduler reads; any other scheduler field set is an error.
_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "multistep": ("milestones", "gamma"),
    "exponential": ("gamma",),
    "cyclic": ("base_lr", "max_lr", "step_size_up", "cyclic_mode"),
    "cosine": ("eta_min",),
    "cosine_warm_restarts": ("t_0", "t_mult", "eta_min"),
    "warmup_cosine": ("warmup_epochs", "eta_min"),
    "onecycle": ("max_lr",),
}
_ALL_ARGUMENTS = sorted({a for args in _ARGUMENTS.values() for a in args})
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _constant(opt, cfg, steps_per_epoch):
    return sched.ConstantLR(opt, factor=1.0, total_iters=0), False


def _step(opt, cfg, steps_per_epoch):
    step_size = cfg.step_size or max(1, cfg.epochs // 3)
    return sched.StepLR(opt, step_size=step_size, gamma=_or(cfg.gamma, 0.1)), False


def _multistep(opt, cfg, steps_per_epoch):
    milestones = cfg.milestones or (max(1, cfg.epochs // 2), max(1, 3 * cfg.epochs // 4))
    return sched.MultiStepLR(opt, milestones=sorted(set(milestones)), gamma=_or(cfg.gamma, 0.1)), False


def _exponential(opt, cfg, steps_per_epoch):
    return sched.ExponentialLR(opt, gamma=_or(cfg.gamma, 0.95)), False


def _cyclic(opt, cfg, steps_per_epoch):
    # cycle_momentum off: it would rewrite momentum for SGD and needs momentum Adagrad lacks.
    return sched.CyclicLR(opt, base_lr=_or(cfg.base_lr, cfg.lr / 10), max_lr=_or(cfg.max_lr, cfg.lr),
                          step_size_up=cfg.step_size_up or 2 * steps_per_epoch,
                          mode=cfg.cyclic_mode or "triangular", cycle_momentum=False), True


def _cosine(opt, cfg, steps_per_epoch):
    return sched.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=_or(cfg.eta_min, 0.0)), False


def _cosine_warm_restarts(opt, cfg, steps_per_epoch):
    return sched.CosineAnnealingWarmRestarts(opt, T_0=cfg.t_0 or 10, T_mult=cfg.t_mult or 1,
                                             eta_min=_or(cfg.eta_min, 0.0)), False


def _warmup_cosine(opt, cfg, steps_per_epoch):
    total = cfg.epochs * steps_per_epoch
    warmup = min(total - 1, max(1, round(_or(cfg.warmup_epochs, 1.0) * steps_per_epoch)))
    warm = sched.LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    cosine = sched.CosineAnnealingLR(opt, T_max=max(1, total - warmup), eta_min=_or(cfg.eta_min, 0.0))
    return sched.SequentialLR(opt, [warm, cosine], milestones=[warmup]), True


def _onecycle(opt, cfg, steps_per_epoch):
    group = opt.defaults
    # Momentum cycling only where the optimizer already uses momentum (else it would add it).
    cycle = "betas" in group or bool(group.get("momentum"))
    return sched.OneCycleLR(opt, max_lr=_or(cfg.max_lr, cfg.lr), total_steps=cfg.epochs * steps_per_epoch,
                            cycle_momentum=cycle), True


SCHEDULERS: dict[str, Factory] = {
    "constant": _constant,
    "step": _step,
    "multistep": _multistep,
    "exponential": _exponential,
    "cyclic": _cyclic,
    "cosine": _cosine,
    "cosine_warm_restarts": _cosine_warm_restarts,
    "warmup_cosine": _warmup_cosine,
    "onecycle": _onecycle,
}


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> tuple[sched.LRScheduler, bool]:
    """The scheduler named by ``cfg.scheduler`` and whether it steps per batch (else per epoch)."""
    return SCHEDULERS[cfg.scheduler](opt, cfg, steps_per_epoch)


def check_arguments(cfg: TrainConfig) -> None:
    """Reject arguments the chosen scheduler would ignore, and out-of-range values."""
    used = _ARGUMENTS.get(cfg.scheduler, ())
    for name in _ALL_ARGUMENTS:
        if getattr(cfg, name) is not None and name not in used:
            raise ConfigError(name, f"not used by scheduler {cfg.scheduler} "
                                    f"(it takes: {', '.join(used) or 'no arguments'})")
    for name in ("step_size", "step_size_up", "t_0", "t_mult"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(name, f"must be >= 1 (got {value})")
    if cfg.gamma is not None and not 0 < cfg.gamma <= 1:
        raise ConfigError("gamma", f"must be in (0, 1] (got {cfg.gamma})")
    for name in ("base_lr", "max_lr"):
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ConfigError(name, f"must be > 0 (got {value})")
    if cfg.eta_min is not None and cfg.eta_min < 0:
        raise ConfigError("eta_min", f"must be >= 0 (got {cfg.eta_min})")
    if cfg.warmup_epochs is not None and not 0 < cfg.warmup_epochs < cfg.epochs:
        raise ConfigError("warmup_epochs", f"must be > 0 and < epochs (got {cfg.warmup_epochs})")
    if cfg.milestones is not None and (not cfg.milestones or min(cfg.milestones) < 1):
        raise ConfigError("milestones", f"must be epochs >= 1 (got {list(cfg.milestones)})")
    if cfg.cyclic_mode is not None and cfg.cyclic_mode not in CYCLIC_MODES:
        raise ConfigError("cyclic_mode", f"unknown mode {cfg.cyclic_mode!r} (choose from: {', '.join(CYCLIC_MODES)})")


def _or(value, default):
    return default if value is None else value
