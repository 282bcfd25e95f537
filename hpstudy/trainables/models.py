"""Models by name: torchvision networks where torchvision has them, small classics written here.

Every builder takes ``(in_channels, num_classes, image_size, pretrained=False, **model_args)``; the
first three always come from the dataset, ``model_args`` are the builder's own keyword options.
"""

from __future__ import annotations

import inspect
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from hpstudy.trainables.config import ConfigError, TrainConfig
from hpstudy.trainables.datasets import DatasetInfo

_STANDARD_ARGS = ("in_channels", "num_classes", "image_size", "pretrained")
_SMALL = 64  # below this many pixels the ImageNet stems/heads waste or lose the whole image


# ---------------------------------------------------------------- helpers


def _tv():
    """torchvision.models, imported on first use: importing torchvision takes about 2.5 s on two cores,
    which the study driver (it checks every trial's config) would pay for models that need none of it."""
    import torchvision.models

    return torchvision.models


def _load_pretrained(name: str) -> nn.Module:
    """The torchvision model with its ImageNet weights; the one place weights are fetched."""
    weights = _tv().get_model_weights(name).DEFAULT
    filename = os.path.basename(weights.url)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    try:
        return _tv().get_model(name, weights=weights)
    except Exception as exc:  # offline (URLError/socket errors), truncated file, hash mismatch
        raise ConfigError(
            "pretrained",
            f"cannot get {name} ImageNet weights ({type(exc).__name__}: {exc}); expected the file "
            f"{cached}: download {weights.url} on a machine with network access and copy it there "
            f"(or set TORCH_HOME to a folder holding hub/checkpoints/{filename})") from exc


def _conv_like(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh copy of a stem conv that takes `in_channels` (e.g. 1-channel MNIST)."""
    conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                     bias=old.bias is not None)
    _kaiming(conv)
    return conv


def _kaiming(conv: nn.Conv2d) -> None:
    # torchvision's conv init (ResNet, VGG), so a replaced stem starts like the rest of the network.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _new_last_linear(classifier: nn.Sequential, num_classes: int) -> None:
    last = classifier[-1]
    if last.out_features != num_classes:
        classifier[-1] = nn.Linear(last.in_features, num_classes)


# ---------------------------------------------------------------- MLP, LeNet-5, small CNNs (written here: not in torchvision)


def _mlp(in_channels: int, num_classes: int, image_size: tuple[int, int], pretrained: bool = False,
         hidden: Sequence[int] = (1024, 1024)) -> nn.Module:
    if isinstance(hidden, int):  # a CLI or search space may give one width
        hidden = (hidden,)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size[0] * image_size[1]
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _lenet5(in_channels: int, num_classes: int, image_size: tuple[int, int],
            pretrained: bool = False) -> nn.Module:
    h, w = image_size
    pad = 2 if min(h, w) < 32 else 0  # 28x28 MNIST padded to LeCun's 32x32 geometry
    # conv5 (-4) -> pool (/2) -> conv5 (-4) -> pool (/2)
    fh, fw = ((h + 2 * pad - 4) // 2 - 4) // 2, ((w + 2 * pad - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=pad), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * fh * fw, 120), nn.Tanh(),
        nn.Linear(120, 84), nn.Tanh(),
        nn.Linear(84, num_classes),
    )


def _simple_cnn(in_channels: int, num_classes: int, image_size: tuple[int, int],
                pretrained: bool = False) -> nn.Module:
    layers: list[nn.Module] = []
    c = in_channels
    for width in (32, 64, 128):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = width
    h, w = image_size[0] // 8, image_size[1] // 8
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, num_classes))


def _mnist_cnn(in_channels: int, num_classes: int, image_size: tuple[int, int], *, kernel: int = 3,
               act: type[nn.Module] = nn.ReLU, pools: int = 1, bn_dropout: bool = False) -> nn.Module:
    """The base MNIST CNN; each cnn_* variant changes exactly one of the keyword traits."""
    layers: list[nn.Module] = []
    c, (h, w) = in_channels, image_size
    for i, width in enumerate((32, 64)):
        layers.append(nn.Conv2d(c, width, kernel, padding=kernel // 2))
        if bn_dropout:
            layers.append(nn.BatchNorm2d(width))
        layers.append(act())
        if pools == 2 or i == 1:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = width
    drop = (lambda: [nn.Dropout(0.3)]) if bn_dropout else (lambda: [])
    return nn.Sequential(*layers, nn.Flatten(),
                         *drop(), nn.Linear(c * h * w, 128), act(),
                         *drop(), nn.Linear(128, num_classes))


def _mnist_variant(**traits) -> Callable[..., nn.Module]:
    # Variants are names, not options: they take no model_args of their own.
    def build(in_channels: int, num_classes: int, image_size: tuple[int, int],
              pretrained: bool = False) -> nn.Module:
        return _mnist_cnn(in_channels, num_classes, image_size, **traits)
    return build


# ---------------------------------------------------------------- AlexNet


def _alexnet_classifier(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(0.5), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                         nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, num_classes))


def _alexnet(in_channels: int, num_classes: int, image_size: tuple[int, int], pretrained: bool = False,
             hidden: int = 4096) -> nn.Module:
    h, w = image_size
    if min(h, w) >= _SMALL:
        if pretrained:
            model = _load_pretrained("alexnet")
            _new_last_linear(model.classifier, num_classes)
        else:
            model = _tv().alexnet(num_classes=num_classes)
        if in_channels != 3:
            model.features[0] = _conv_like(model.features[0], in_channels)
        if hidden != 4096:
            model.classifier = _alexnet_classifier(256 * 6 * 6, hidden, num_classes)
        return model
    # Written here: torchvision's 11x11/stride-4 stem would shrink a 32 px image to nothing.
    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
    features = nn.Sequential(*conv(in_channels, 64), nn.MaxPool2d(2), *conv(64, 192), nn.MaxPool2d(2),
                             *conv(192, 384), *conv(384, 256), *conv(256, 256), nn.MaxPool2d(2))
    return nn.Sequential(OrderedDict(
        features=features, flatten=nn.Flatten(),
        classifier=_alexnet_classifier(256 * (h // 8) * (w // 8), hidden, num_classes)))


# ---------------------------------------------------------------- VGG

_VGG_CFGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def _vgg(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, image_size: tuple[int, int], pretrained: bool = False,
              batch_norm: bool = False) -> nn.Module:
        tv_name = name + ("_bn" if batch_norm else "")
        h, w = image_size
        if min(h, w) >= _SMALL:
            if pretrained:
                model = _load_pretrained(tv_name)
                _new_last_linear(model.classifier, num_classes)
            else:
                model = _tv().get_model(tv_name, num_classes=num_classes)
        else:
            # Small inputs: flatten the real 512 x H/32 x W/32 map into a 512-wide head instead of
            # torchvision's 7x7 adaptive pool + 4096-wide head (100M+ parameters for a 1x1 map).
            if pretrained:  # 3x3 convs do not care about input size: the features transfer
                features = _load_pretrained(tv_name).features
            else:
                features = _tv().vgg.make_layers(_tv().vgg.cfgs[_VGG_CFGS[name]], batch_norm)
            classifier = nn.Sequential(
                nn.Linear(512 * (h // 32) * (w // 32), 512), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(512, num_classes))
            model = nn.Sequential(OrderedDict(features=features, flatten=nn.Flatten(),
                                              classifier=classifier))
            _init_vgg(model if not pretrained else classifier)
        if in_channels != 3:
            model.features[0] = _conv_like(model.features[0], in_channels)
        return model
    return build


def _init_vgg(module: nn.Module) -> None:
    # torchvision VGG's init; PyTorch's default leaves a BN-less VGG19 unable to start learning.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            _kaiming(m)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------- ResNet (ImageNet family)


def _resnet(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, image_size: tuple[int, int], pretrained: bool = False,
              small_stem: bool | None = None) -> nn.Module:
        if pretrained:
            model = _load_pretrained(name)
            if model.fc.out_features != num_classes:
                model.fc = nn.Linear(model.fc.in_features, num_classes)
        else:
            model = _tv().get_model(name, num_classes=num_classes)
        if small_stem is None:
            small_stem = min(image_size) < _SMALL
        if small_stem:  # CIFAR-style stem: keep full resolution into layer1
            model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            _kaiming(model.conv1)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = _conv_like(model.conv1, in_channels)
        return model
    return build


# ---------------------------------------------------------------- CIFAR ResNets
# Written here: torchvision has no CIFAR ResNets (He et al. 2016, section 4.2).


class _BasicBlockA(nn.Module):
    """Basic block with the paper's option-A shortcut: subsample and zero-pad channels (no params)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x
        if self.stride != 1 or self.extra:
            shortcut = x[:, :, ::self.stride, ::self.stride]
            half = self.extra // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra - half))
        return F.relu(out + shortcut)


class _CifarResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        blocks: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(_BasicBlockA(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _cifar_resnet(depth: int) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, image_size: tuple[int, int],
              pretrained: bool = False) -> nn.Module:
        return _CifarResNet(depth, in_channels, num_classes)
    return build


# ---------------------------------------------------------------- configurable VGG-style CIFAR CNN (written here)

_CIFAR_CNN_DEPTH = 3


class _ResidualStage(nn.Module):
    """act(proj(x) + bn(conv(act(bn(conv(x)))))); proj is a 1x1 conv when the width changes."""

    def __init__(self, c_in: int, c_out: int, batch_norm: bool):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(c_out)) if batch_norm else nn.Identity
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm), norm(),
                                  nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batch_norm),
                                  norm())
        self.proj = (nn.Identity() if c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=not batch_norm), norm()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.proj(x) + self.body(x))


def _cifar_cnn(in_channels: int, num_classes: int, image_size: tuple[int, int], pretrained: bool = False,
               width: int = 64, depth: int = _CIFAR_CNN_DEPTH, batch_norm: bool = True,
               residual: bool = False) -> nn.Module:
    if width < 1 or depth < 1:
        raise ConfigError("model_args", f"cifar_cnn needs width >= 1 and depth >= 1 "
                                        f"(got width={width}, depth={depth})")
    layers: list[nn.Module] = []
    c = in_channels
    for stage in range(depth):
        out = width * 2 ** stage
        if residual:
            layers.append(_ResidualStage(c, out, batch_norm))
        else:
            for c_in in (c, out):
                layers.append(nn.Conv2d(c_in, out, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU())
        layers.append(nn.MaxPool2d(2))
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


# ---------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "mlp4": partial(_mlp, hidden=(1024, 1024, 1024)),
    "lenet5": _lenet5,
    "simple_cnn": _simple_cnn,
    "cnn_relu": _mnist_variant(),
    "cnn_2pool": _mnist_variant(pools=2),
    "cnn_bn_dropout": _mnist_variant(bn_dropout=True),
    "cnn_5x5": _mnist_variant(kernel=5),
    "cnn_gelu": _mnist_variant(act=nn.GELU),
    "alexnet": _alexnet,
    "vgg11": _vgg("vgg11"),
    "vgg13": _vgg("vgg13"),
    "vgg16": _vgg("vgg16"),
    "vgg19": _vgg("vgg19"),
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet44": _cifar_resnet(44),
    "resnet56": _cifar_resnet(56),
    "resnet110": _cifar_resnet(110),
    "cifar_cnn": _cifar_cnn,
}

_PRETRAINED = frozenset({"alexnet", *_VGG_CFGS, "resnet18", "resnet34", "resnet50"})

# Smallest input side (pixels) each model accepts; models not listed take any size.
_MIN_SIZE = {"lenet5": 28, "simple_cnn": 8, "cnn_relu": 2, "cnn_2pool": 4, "cnn_bn_dropout": 2,
             "cnn_5x5": 2, "cnn_gelu": 2, "alexnet": 8, **{name: 32 for name in _VGG_CFGS}}


def _options(builder: Callable[..., nn.Module]) -> list[str]:
    params = inspect.signature(builder).parameters.values()
    return [p.name for p in params if p.name not in _STANDARD_ARGS
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_arguments(config: TrainConfig) -> None:
    """Check model_args keys and `pretrained` against the model's builder, without any data."""
    builder = MODELS.get(config.model)
    if builder is None:
        return  # config.validate() reports unknown model names
    valid = _options(builder)
    for key in config.model_args:
        if key not in valid:
            raise ConfigError("model_args", f"model {config.model} has no option {key!r} "
                                            f"(valid: {', '.join(valid) or 'none'})")
    if config.pretrained and config.model not in _PRETRAINED:
        raise ConfigError("pretrained", f"model {config.model} has no pretrained weights "
                                        f"(available for: {', '.join(sorted(_PRETRAINED))})")


def check_input(config: TrainConfig, info: DatasetInfo) -> None:
    """Raise ConfigError("model", ...) when the model cannot take the dataset's images."""
    if config.model not in MODELS:
        raise ConfigError("model", f"unknown model {config.model!r} (choose from: {', '.join(MODELS)})")
    name = config.model
    h, w = info.image_size
    given = f"dataset {info.name} gives {info.channels}x{h}x{w}"
    if config.pretrained and info.channels != 3:
        raise ConfigError("model", f"model {name} with pretrained weights needs 3-channel (RGB) "
                                   f"inputs; {given}")
    if name == "cifar_cnn":
        need = 2 ** int(config.model_args.get("depth", _CIFAR_CNN_DEPTH))
    elif name == "alexnet" and config.pretrained:
        need = _SMALL  # the pretrained network is torchvision's ImageNet AlexNet
    else:
        need = _MIN_SIZE.get(name, 1)
    if min(h, w) < need:
        what = f"model {name}" + (" with pretrained weights" if config.pretrained else "")
        raise ConfigError("model", f"{what} needs inputs of at least {need}x{need} pixels; {given}")


def build_model(config: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The model for `config`, shaped for the dataset (channels, image size, classes)."""
    check_input(config, info)
    check_arguments(config)
    return MODELS[config.model](in_channels=info.channels, num_classes=info.num_classes,
                                image_size=tuple(info.image_size), pretrained=config.pretrained,
                                **config.model_args)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
