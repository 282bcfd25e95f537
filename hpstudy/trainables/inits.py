"""Weight initialisation schemes by name (weights of conv and linear layers; biases set to zero)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

INITS: dict[str, Callable[[torch.Tensor], object] | None] = {
    "default": None,  # PyTorch's own per-layer defaults
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    # fan_in with the ReLU gain, as in He et al. 2015
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}


def apply_init(model: nn.Module, name: str) -> None:
    """Re-initialise every Conv/Linear weight of ``model`` with the scheme ``name``."""
    init = INITS[name]
    if init is None:
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
