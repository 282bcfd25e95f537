"""The one config a training run takes, with its validation.

Every field name here is also the CLI flag (`--batch-size`), the Optuna parameter name and the MLflow
param: one vocabulary, one spelling. Scheduler and optimizer arguments are flat fields (so a search
space can suggest them); ``None`` means "that component's own default".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """Bad input, reported as one line that names the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message

    def __reduce__(self):  # picklable, so it crosses Ray's process boundary intact
        return (ConfigError, (self.field, self.message))


class DataNotFoundError(RuntimeError):
    """Files are missing and could not be downloaded; the message says which and where. (Defined here,
    with ConfigError, so that the CLI catches both without importing torch.)"""


AUGMENTATIONS = ("crop", "flip", "affine", "jitter", "erase")

# A checkpoint at most every 30 s of training (and always the last epoch's): an interrupted trial repeats
# at most that much, and trials of short epochs stop paying for a write at every one. On the overhead
# benchmark's study (24 trials of 3 MLP epochs, 22 MB checkpoints) a checkpoint per epoch cost 60-75 ms
# per trial (0.62-0.65 s against 0.55-0.61 s, three alternating runs, session 11). Epochs of 30 s and
# more are still checkpointed every time.
DEFAULT_CHECKPOINT_EVERY_S = 30.0


@dataclass(frozen=True)
class TrainConfig:
    # --- data
    dataset: str = "mnist-small"
    data_dir: str | None = None  # root of pre-staged files; None: ~/.cache/hpstudy/data
    download: bool = True  # try torchvision's download when files are missing
    val_fraction: float = 0.2  # share of the training set held out for validation
    split_seed: int = 42  # fixes the train/val split independently of `seed`
    train_size: int | None = None  # optional subsets (e.g. 800 / 100), taken after the split
    val_size: int | None = None
    test_size: int | None = None
    image_size: int | None = None  # imagefolder: resize to this square size (default 64)
    augment: tuple[str, ...] = ()  # any of AUGMENTATIONS, applied per batch on the device
    # --- model
    model: str = "lenet5"
    model_args: dict[str, Any] = field(default_factory=dict)  # builder keywords, e.g. {"batch_norm": True}
    pretrained: bool = False  # torchvision ImageNet weights (resnet18/34/50, vgg*, alexnet at >= 64 px)
    init: str = "default"
    # --- optimisation
    optimizer: str = "sgd"
    lr: float = 0.01
    batch_size: int = 128
    epochs: int = 10
    weight_decay: float = 0.0
    momentum: float | None = None  # sgd-family and rmsprop; None: 0.9 for momentum/nesterov, else 0
    betas: tuple[float, float] | None = None  # adam/adamw
    eps: float | None = None
    # --- scheduler (arguments used only by the schedulers named in the comment)
    scheduler: str = "constant"
    step_size: int | None = None  # step: epochs between decays (default epochs // 3)
    gamma: float | None = None  # step/multistep (0.1), exponential (0.95)
    milestones: tuple[int, ...] | None = None  # multistep: epochs (default 50% and 75% of epochs)
    base_lr: float | None = None  # cyclic: lower bound (default lr / 10)
    max_lr: float | None = None  # cyclic: upper bound (default lr); onecycle: peak (default lr)
    step_size_up: int | None = None  # cyclic: iterations (batches) per half cycle (default 2 epochs)
    cyclic_mode: str | None = None  # cyclic: triangular | triangular2 | exp_range
    t_0: int | None = None  # cosine_warm_restarts: epochs of the first cycle (default 10)
    t_mult: int | None = None  # cosine_warm_restarts: cycle length multiplier (default 1)
    warmup_epochs: float | None = None  # warmup_cosine: linear warm-up length (default 1)
    eta_min: float | None = None  # cosine, cosine_warm_restarts, warmup_cosine: floor lr (default 0)
    # --- run
    seed: int = 0  # model init, data order, augmentation, dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op threads; None: leave torch's choice
    bf16: bool = False  # CUDA only: bf16 autocast
    channels_last: bool = True  # NHWC memory format: +25-30% for LeNet-5 on CPU (bench/throughput.py)
    cuda_graphs: bool = True  # CUDA, without bf16: replay the training forward/backward as CUDA graphs
    # --- divergence stop (step granularity); 0 disables a rule
    diverge_loss_factor: float = 10.0  # stop when one step's loss > factor x the first step's loss
    chance_warmup_steps: int = 50  # after this many steps, stop if the last ones are at chance, loss flat
    keep_checkpoints: int = 2  # newest good checkpoints kept (>= 2 so a damaged one has a fallback)
    # An epoch's checkpoint is written only once this many seconds have passed since the last one (the
    # last epoch's always), so epochs much shorter than a write do not each pay for one. A resume then
    # repeats at most this much training. 0: every epoch. See DEFAULT_CHECKPOINT_EVERY_S.
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S
    # Reports per epoch. Those inside an epoch score the first engine.CHECK_VAL_IMAGES validation images,
    # so that a pruner can stop a hopeless trial before its first epoch ends; the last is the epoch's own.
    checks_per_epoch: int = 1

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a plain dict (CLI, Optuna params, a checkpoint); unknown keys are an error."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(key, f"unknown setting (valid: {', '.join(sorted(known))})")
            clean[key] = _coerce(key, value)
        config = cls(**clean)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists) for checkpoints, MLflow and Optuna attrs."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["model_args"] = dict(self.model_args)
        return out

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check names and ranges that need no data; raises ConfigError naming the field."""
        # Imported here: the registries import this module.
        from hpstudy.trainables import datasets, models, optimizers, schedulers, inits

        _choice("dataset", self.dataset, datasets.DATASETS)
        _choice("model", self.model, models.MODELS)
        _choice("optimizer", self.optimizer, optimizers.OPTIMIZERS)
        _choice("scheduler", self.scheduler, schedulers.SCHEDULERS)
        _choice("init", self.init, inits.INITS)
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0 (got {self.lr})")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1 (got {self.batch_size})")
        if self.epochs < 1:
            raise ConfigError("epochs", f"must be >= 1 (got {self.epochs})")
        if not 0 < self.val_fraction < 1:
            raise ConfigError("val_fraction", f"must be inside (0, 1) (got {self.val_fraction})")
        for name in ("train_size", "val_size", "test_size", "image_size", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"must be >= 1 (got {value})")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0 (got {self.weight_decay})")
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ConfigError("momentum", f"must be in [0, 1) (got {self.momentum})")
        if isinstance(self.checks_per_epoch, bool) or not isinstance(self.checks_per_epoch, int) \
                or self.checks_per_epoch < 1:
            raise ConfigError("checks_per_epoch", f"must be a whole number >= 1 (got {self.checks_per_epoch!r})")
        if not self.checkpoint_every_s >= 0:
            raise ConfigError("checkpoint_every_s", f"must be >= 0 (got {self.checkpoint_every_s})")
        if self.keep_checkpoints < 2:
            raise ConfigError("keep_checkpoints", f"must be >= 2 (got {self.keep_checkpoints})")
        if self.diverge_loss_factor < 0 or self.chance_warmup_steps < 0:
            raise ConfigError("diverge_loss_factor", "divergence thresholds must be >= 0 (0 disables)")
        for name in self.augment:
            _choice("augment", name, AUGMENTATIONS)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError("device", f"must be auto, cpu, cuda or cuda:N (got {self.device!r})")
        optimizers.check_arguments(self)
        schedulers.check_arguments(self)
        models.check_arguments(self)


def _choice(field_name: str, value: str, registry) -> None:
    if value not in registry:
        raise ConfigError(field_name, f"unknown {field_name} {value!r} (choose from: {', '.join(registry)})")


_TUPLE_FIELDS = {"augment", "betas", "milestones"}
_BOOL_FIELDS = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("bool", bool)}


def _coerce(key: str, value: Any) -> Any:
    """Accept the forms a CLI, a JSON file or an Optuna param gives (e.g. augment "crop,flip")."""
    if key in _TUPLE_FIELDS and value is not None:
        if isinstance(value, str):
            value = [v for v in value.replace("+", ",").split(",") if v and v != "none"]
        if key == "milestones":
            return tuple(int(v) for v in value)
        if key == "betas":
            return tuple(float(v) for v in value)
        return tuple(value)
    if key in _BOOL_FIELDS and not isinstance(value, bool):  # "false" from a JSON file would be truthy
        raise ConfigError(key, f"must be true or false (got {value!r})")
    if key == "model_args":
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping (got {value!r})")
        return dict(value)
    return value
