"""Optimizers by name: thin factories over torch.optim with the classic defaults."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from hpstudy.trainables.config import ConfigError, TrainConfig

_MOMENTUM_DEFAULT = {"momentum": 0.9, "nesterov": 0.9}  # Polyak / Nesterov momentum of the classics
_TAKES_MOMENTUM = ("sgd", "momentum", "nesterov", "rmsprop")
_TAKES_BETAS = ("adam", "adamw")


def _sgd(params, cfg: TrainConfig, **fused):
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum or 0.0,
                           **fused)


def _momentum(params, cfg: TrainConfig, nesterov: bool = False, **fused):
    momentum = cfg.momentum if cfg.momentum is not None else _MOMENTUM_DEFAULT["momentum"]
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=momentum,
                           nesterov=nesterov, **fused)


def _with_eps(cfg: TrainConfig) -> dict[str, Any]:
    return {} if cfg.eps is None else {"eps": cfg.eps}


def _with_betas(cfg: TrainConfig) -> dict[str, Any]:
    return {**_with_eps(cfg), **({} if cfg.betas is None else {"betas": tuple(cfg.betas)})}


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": lambda p, cfg, **fused: _momentum(p, cfg, nesterov=True, **fused),
    "adagrad": lambda p, cfg: torch.optim.Adagrad(p, lr=cfg.lr, weight_decay=cfg.weight_decay, **_with_eps(cfg)),
    "rmsprop": lambda p, cfg: torch.optim.RMSprop(p, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                  momentum=cfg.momentum or 0.0, **_with_eps(cfg)),
    "adam": lambda p, cfg, **fused: torch.optim.Adam(p, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                     **_with_betas(cfg), **fused),
    "adamw": lambda p, cfg, **fused: torch.optim.AdamW(p, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                       **_with_betas(cfg), **fused),
    "adadelta": lambda p, cfg: torch.optim.Adadelta(p, lr=cfg.lr, weight_decay=cfg.weight_decay, **_with_eps(cfg)),
}


# On a GPU these take fused=True: one kernel per step instead of several, and small models there are
# bound by kernel launches (bench/gpu.py). RMSprop and Adadelta have no fused kernel; Adagrad's is left
# out because it was not checked on a GPU here.
_FUSED_ON_CUDA = ("sgd", "momentum", "nesterov", "adam", "adamw")


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` over ``params``."""
    params = list(params)
    fused = {"fused": True} if cfg.optimizer in _FUSED_ON_CUDA and params and params[0].is_cuda else {}
    return OPTIMIZERS[cfg.optimizer](params, cfg, **fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict`` that keeps this optimizer's kernel choice (fused/foreach): a
    checkpoint written on a GPU restores its groups' ``fused=True``, which fails on a CPU."""
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, chosen in zip(optimizer.param_groups, kernels):
        group.update(chosen)


def check_arguments(cfg: TrainConfig) -> None:
    """Reject arguments the chosen optimizer would silently ignore."""
    if cfg.momentum is not None and cfg.optimizer not in _TAKES_MOMENTUM:
        raise ConfigError("momentum", f"not used by optimizer {cfg.optimizer} "
                                      f"(only {', '.join(_TAKES_MOMENTUM)})")
    if cfg.momentum is not None and cfg.optimizer == "nesterov" and cfg.momentum == 0:
        raise ConfigError("momentum", "nesterov needs momentum > 0")
    if cfg.betas is not None:
        if cfg.optimizer not in _TAKES_BETAS:
            raise ConfigError("betas", f"not used by optimizer {cfg.optimizer} (only adam, adamw)")
        if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
            raise ConfigError("betas", f"must be two numbers in [0, 1) (got {list(cfg.betas)})")
    if cfg.eps is not None and (cfg.optimizer in ("sgd", "momentum", "nesterov") or not cfg.eps > 0):
        raise ConfigError("eps", f"must be > 0 and is not used by {cfg.optimizer}"
                          if cfg.optimizer in ("sgd", "momentum", "nesterov") else f"must be > 0 (got {cfg.eps})")
