"""SPACES: every search space by name, listed explicitly (one module per space family)."""

from __future__ import annotations

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


def _by_name(*spaces: SearchSpace) -> dict[str, SearchSpace]:
    out: dict[str, SearchSpace] = {}
    for space in spaces:
        if space.name in out:
            raise ValueError(f"duplicate search space name {space.name!r}")
        out[space.name] = space
    return out


SPACES: dict[str, SearchSpace] = _by_name(
    lr_bs.SPACE,
    optimizer_lr_bs.SPACE,
    lr_bs_wide.SPACE,
    optimizers.SPACE,
    inits.SPACE,
    schedulers.SPACE,
    mnist_cnn_variants.SPACE,
    cifar_resnet_depth.SPACE,
    classic_tpe.SPACE,
)
