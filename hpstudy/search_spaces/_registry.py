"""SPACES: every search space by name, listed explicitly (one module per space family)."""

from __future__ import annotations

from hpstudy.registry import by_name

from hpstudy.search_spaces import (
    cifar_resnet_depth,
    classic_tpe,
    inits,
    lr_bs,
    lr_bs_wide,
    mnist_cnn_variants,
    optimizer_lr_bs,
    optimizers,
    schedulers,
)
from hpstudy.search_spaces._base import SearchSpace



SPACES: dict[str, SearchSpace] = by_name((
    lr_bs.SPACE,
    optimizer_lr_bs.SPACE,
    lr_bs_wide.SPACE,
    optimizers.SPACE,
    inits.SPACE,
    schedulers.SPACE,
    mnist_cnn_variants.SPACE,
    cifar_resnet_depth.SPACE,
    classic_tpe.SPACE,
), "search space")
