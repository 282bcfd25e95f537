import pytest

from hpstudy.trainables.config import ConfigError, TrainConfig


def test_defaults_validate():
    TrainConfig.from_dict({})


def test_round_trip_through_plain_dict():
    cfg = TrainConfig.from_dict({"augment": "crop,flip", "betas": [0.8, 0.99], "optimizer": "adam",
                                 "scheduler": "multistep", "milestones": [3, 6], "model_args": {"hidden": [8]},
                                 "model": "mlp"})
    assert cfg.augment == ("crop", "flip") and cfg.betas == (0.8, 0.99) and cfg.milestones == (3, 6)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("values, field, words", [
    ({"colour": 1}, "colour", "unknown setting"),
    ({"dataset": "imagenet-22k"}, "dataset", "mnist-small"),
    ({"model": "transformer"}, "model", "lenet5"),
    ({"optimizer": "lion"}, "optimizer", "adamw"),
    ({"scheduler": "poly"}, "scheduler", "cosine_warm_restarts"),
    ({"init": "orthogonal"}, "init", "kaiming_normal"),
    ({"lr": 0}, "lr", "> 0"),
    ({"lr": -0.1}, "lr", "> 0"),
    ({"batch_size": 0}, "batch_size", ">= 1"),
    ({"epochs": 0}, "epochs", ">= 1"),
    ({"val_fraction": 1.0}, "val_fraction", "(0, 1)"),
    ({"val_fraction": 0}, "val_fraction", "(0, 1)"),
    ({"train_size": 0}, "train_size", ">= 1"),
    ({"augment": "crop,mixup"}, "augment", "mixup"),
    ({"momentum": 0.9, "optimizer": "adam"}, "momentum", "not used by optimizer adam"),
    ({"betas": [0.9, 0.999], "optimizer": "sgd"}, "betas", "only adam"),
    ({"gamma": 0.5, "scheduler": "cosine"}, "gamma", "not used by scheduler cosine"),
    ({"gamma": 1.5, "scheduler": "exponential"}, "gamma", "(0, 1]"),
    ({"cyclic_mode": "sawtooth", "scheduler": "cyclic"}, "cyclic_mode", "triangular2"),
    ({"device": "tpu"}, "device", "cuda"),
    ({"cuda_graphs": "false"}, "cuda_graphs", "true or false"),
    ({"bf16": 1}, "bf16", "true or false"),
    ({"checks_per_epoch": 0}, "checks_per_epoch", ">= 1"),
    ({"checks_per_epoch": 2.5}, "checks_per_epoch", ">= 1"),
    ({"checkpoint_every_s": -1}, "checkpoint_every_s", ">= 0"),
    ({"model": "lenet5", "model_args": {"depth": 3}}, "model_args", "depth"),
])
def test_bad_values_name_their_field(values, field, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(values)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert words in str(err.value)
    assert "\n" not in str(err.value)
