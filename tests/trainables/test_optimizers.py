import pytest
import torch

from hpstudy.trainables.config import TrainConfig
from hpstudy.trainables.optimizers import OPTIMIZERS, build_optimizer

EXPECTED = {"sgd": (torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
            "momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
            "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
            "adagrad": (torch.optim.Adagrad, {}), "rmsprop": (torch.optim.RMSprop, {"momentum": 0.0}),
            "adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {}),
            "adadelta": (torch.optim.Adadelta, {})}


def test_every_optimizer_is_expected():
    assert set(OPTIMIZERS) == set(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_builds_with_classic_defaults_and_weight_decay(name):
    cls, defaults = EXPECTED[name]
    opt = build_optimizer([torch.nn.Parameter(torch.ones(2))],
                          TrainConfig.from_dict({"optimizer": name, "lr": 0.05, "weight_decay": 1e-4}))
    assert type(opt) is cls
    assert opt.defaults["lr"] == 0.05 and opt.defaults["weight_decay"] == 1e-4
    for key, value in defaults.items():
        assert opt.defaults[key] == value


def test_optional_arguments_reach_the_optimizer():
    p = [torch.nn.Parameter(torch.ones(2))]
    assert build_optimizer(p, TrainConfig.from_dict({"optimizer": "adam", "betas": "0.8,0.9", "eps": 1e-6})
                           ).defaults["betas"] == (0.8, 0.9)
    assert build_optimizer(p, TrainConfig.from_dict({"optimizer": "nesterov", "momentum": 0.5})
                           ).defaults["momentum"] == 0.5
