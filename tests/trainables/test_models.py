import os
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from hpstudy.trainables import models
from hpstudy.trainables.config import ConfigError, TrainConfig
from hpstudy.trainables.datasets import DatasetInfo

MNIST = DatasetInfo("t-mnist", 1, (28, 28), 10, (0.5,), (0.5,), tuple("0123456789"))
CIFAR = DatasetInfo("t-cifar", 3, (32, 32), 10, (0.5,) * 3, (0.5,) * 3, tuple("0123456789"))
RGB64 = DatasetInfo("t-rgb64", 3, (64, 64), 50, (0.5,) * 3, (0.5,) * 3,
                    tuple(f"c{i}" for i in range(50)))

# Small widths where a model has them, so the whole registry trains one step in seconds.
SMALL_ARGS = {
    "mlp": {"hidden": (32,)},
    "mlp4": {"hidden": (32, 32, 32)},
    "alexnet": {"hidden": 64},
    "cifar_cnn": {"width": 8},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_step(model: torch.nn.Module, info: DatasetInfo) -> torch.Tensor:
    """One SGD step on a batch of 2; checks the loss and that every parameter moved."""
    torch.manual_seed(0)
    x = torch.randn(2, info.channels, *info.image_size)
    y = torch.tensor([0, 1])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    out = model(x)
    loss = F.cross_entropy(out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert out.shape == (2, info.num_classes)
    assert torch.isfinite(loss)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p.detach())]
    assert not unchanged, f"parameters not updated: {unchanged}"
    return out


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_trains_one_step(name):
    info = CIFAR if name.startswith("vgg") else MNIST
    config = TrainConfig(model=name, model_args=SMALL_ARGS.get(name, {}))
    torch.manual_seed(0)
    model = models.build_model(config, info)
    train_step(model, info)


@pytest.mark.parametrize("name", ["resnet18", "alexnet"])
def test_64px_rgb_uses_torchvision_layout(name):
    model = models.build_model(TrainConfig(model=name), RGB64)
    if name == "resnet18":
        assert model.conv1.kernel_size == (7, 7)  # default ImageNet stem, not the small one
        assert model.fc.out_features == 50
    else:
        assert model.features[0].kernel_size == (11, 11)
        assert model.classifier[-1].out_features == 50
    train_step(model, RGB64)


def test_small_stem_and_channel_adaptation():
    model = models.build_model(TrainConfig(model="resnet18"), MNIST)  # auto: small stem below 64 px
    assert model.conv1.kernel_size == (3, 3) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, torch.nn.Identity)
    model = models.build_model(TrainConfig(model="resnet18", model_args={"small_stem": False}), MNIST)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.in_channels == 1


def test_vgg_small_input_head_flattens_the_real_feature_map():
    model = models.build_model(TrainConfig(model="vgg11", model_args={"batch_norm": True}), CIFAR)
    assert model.classifier[0].in_features == 512  # 512 x 1 x 1 at 32 px
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.features)
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules())


def test_cifar_cnn_residual_trains():
    config = TrainConfig(model="cifar_cnn", model_args={"width": 8, "depth": 2, "residual": True})
    train_step(models.build_model(config, CIFAR), CIFAR)


def test_check_input_too_small_for_vgg():
    with pytest.raises(ConfigError) as err:
        models.check_input(TrainConfig(model="vgg16"), MNIST)
    assert err.value.field == "model"
    assert "32" in str(err.value) and "1x28x28" in str(err.value)


def test_check_input_cifar_cnn_depth():
    models.check_input(TrainConfig(model="cifar_cnn", model_args={"depth": 5}), CIFAR)
    with pytest.raises(ConfigError, match="at least 64x64"):
        models.check_input(TrainConfig(model="cifar_cnn", model_args={"depth": 6}), CIFAR)


@pytest.mark.parametrize("name", ["resnet18", "alexnet"])
def test_check_input_pretrained_needs_rgb(name):
    gray64 = DatasetInfo("gray64", 1, (64, 64), 10, (0.5,), (0.5,), tuple("0123456789"))
    with pytest.raises(ConfigError, match="3-channel") as err:
        models.check_input(TrainConfig(model=name, pretrained=True), gray64)
    assert err.value.field == "model"


def test_check_input_pretrained_alexnet_needs_64px():
    with pytest.raises(ConfigError, match="at least 64x64"):
        models.check_input(TrainConfig(model="alexnet", pretrained=True), CIFAR)
    models.check_input(TrainConfig(model="alexnet", pretrained=True), RGB64)


def test_check_arguments_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        models.check_arguments(TrainConfig(model="cifar_cnn", model_args={"widht": 8}))
    assert err.value.field == "model_args"
    for key in ("width", "depth", "batch_norm", "residual"):
        assert key in str(err.value)
    with pytest.raises(ConfigError, match="model_args"):
        models.check_arguments(TrainConfig(model="cnn_relu", model_args={"kernel": 5}))
    models.check_arguments(TrainConfig(model="mlp4", model_args={"hidden": [8]}))
    models.check_arguments(TrainConfig(model="no-such-model"))  # left to config.validate()


def test_check_arguments_pretrained_without_weights():
    with pytest.raises(ConfigError) as err:
        models.check_arguments(TrainConfig(model="lenet5", pretrained=True))
    assert err.value.field == "pretrained"
    models.check_arguments(TrainConfig(model="resnet50", pretrained=True))


def test_lenet5_classic_parameter_count():
    # 28x28 padded to 32: conv1 6*(1*25+1)=156, conv2 16*(6*25+1)=2,416, 16x5x5=400 features,
    # fc 400*120+120=48,120, 120*84+84=10,164, 84*10+10=850: total 61,706.
    model = models.build_model(TrainConfig(model="lenet5"), MNIST)
    assert models.count_parameters(model) == 61_706
    cifar = models.build_model(TrainConfig(model="lenet5"), CIFAR)  # 32x32: no padding, same head
    assert cifar[0].padding == (0, 0) and cifar[7].in_features == 400


def test_mlp_default_layout():
    model = models.build_model(TrainConfig(model="mlp"), MNIST)
    widths = [(m.in_features, m.out_features) for m in model if isinstance(m, torch.nn.Linear)]
    assert widths == [(784, 1024), (1024, 1024), (1024, 10)]
    model = models.build_model(TrainConfig(model="mlp4"), MNIST)
    assert sum(isinstance(m, torch.nn.Linear) for m in model) == 4


@pytest.mark.parametrize("name, millions", [("resnet20", 0.27), ("resnet56", 0.85), ("resnet110", 1.7)])
def test_cifar_resnet_parameter_counts(name, millions):
    model = models.build_model(TrainConfig(model=name), CIFAR)
    assert models.count_parameters(model) == pytest.approx(millions * 1e6, rel=0.02)


def test_count_parameters_skips_frozen():
    model = models.build_model(TrainConfig(model="mlp", model_args={"hidden": (4,)}), MNIST)
    model[1].weight.requires_grad_(False)
    assert models.count_parameters(model) == 4 + 4 * 10 + 10


def test_pretrained_offline_error_names_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):  # never touch the network, even on a machine that has one
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError) as err:
        models.build_model(TrainConfig(model="resnet18", pretrained=True), CIFAR)
    assert err.value.field == "pretrained"
    expected = os.path.join(str(tmp_path), "hub", "checkpoints", "resnet18-f37072fd.pth")
    assert expected in str(err.value)


def test_pretrained_uses_prestaged_file(tmp_path, monkeypatch):
    # A file staged where the error message says is used without any download.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    reference = torchvision.models.resnet18()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    model = models.build_model(TrainConfig(model="resnet18", pretrained=True), RGB64)
    assert torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert model.fc.out_features == 50
