"""The engine on a GPU: the same config and seed give the same metrics, and a run resumed from a
checkpoint equals an uninterrupted one, as on CPU. Skipped without CUDA (CI has none; they ran on a lent
H100, see the README)."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from hpstudy.trainables import TrainConfig, models, train
from hpstudy.trainables.datasets import DatasetInfo
from hpstudy.trainables.cuda_graphs import capture_training_graphs
from hpstudy.trainables.engine import use_deterministic_cuda
from tests.trainables.helpers import Crash, CrashAfter, without_timing

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# Convolutions (cuDNN picks algorithms; some backward ones use atomics), bf16 autocast, dropout and
# per-batch augmentation drawn on the device.
CASES = {
    "lenet5": dict(dataset="mnist-small", model="lenet5", train_size=2000, val_size=500, test_size=500,
                   batch_size=64, epochs=3, lr=0.05, optimizer="momentum"),
    "cnn+augment+bf16": dict(dataset="synthetic", model="cnn_bn_dropout", augment="crop,affine,erase",
                             train_size=512, val_size=128, test_size=128, batch_size=32, epochs=3, lr=0.02,
                             optimizer="momentum", scheduler="cosine", bf16=True),
}


def config(data_dir, case) -> TrainConfig:
    # A checkpoint every epoch: the resume tests crash between epochs.
    return TrainConfig.from_dict({**CASES[case], "device": "cuda", "data_dir": data_dir, "checkpoint_every_s": 0})


@pytest.mark.parametrize("case", CASES)
def test_same_seed_same_metrics_on_cuda(data_dir, case):
    cfg = config(data_dir, case)
    a, b = train(cfg), train(cfg)
    assert a["status"] == "completed"
    assert without_timing(a["history"]) == without_timing(b["history"])
    assert a["test"] == b["test"]


@pytest.mark.parametrize("case", CASES)
def test_resume_equals_uninterrupted_on_cuda(data_dir, tmp_path, case):
    cfg = config(data_dir, case)
    whole = train(cfg, checkpoint_dir=tmp_path / "whole")
    with pytest.raises(Crash):
        train(cfg, CrashAfter(2), checkpoint_dir=tmp_path / "cut")
    resumed = train(cfg, checkpoint_dir=tmp_path / "cut", resume_from=tmp_path / "cut")
    assert without_timing(resumed["history"]) == without_timing(whole["history"])
    assert resumed["test"] == whole["test"]


def test_cuda_and_cpu_runs_agree_closely(data_dir):
    # Not bit-equal (different kernels), but the same training: a few tenths of a point apart.
    cfg = config(data_dir, "lenet5")
    on_cuda, on_cpu = train(cfg), train(cfg.replace(device="cpu", threads=1))
    assert abs(on_cuda["history"][-1]["val_acc"] - on_cpu["history"][-1]["val_acc"]) <= 0.02


CIFAR = DatasetInfo("t-cifar", 3, (32, 32), 10, (0.5,) * 3, (0.5,) * 3, tuple("0123456789"))


def _three_steps(name: str, graphs: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = models.build_model(TrainConfig(model=name), CIFAR).cuda()  # every model takes 32x32 RGB
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(16, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    if graphs:
        assert capture_training_graphs(model, x)
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_trains_bit_identically_twice_and_as_a_cuda_graph(name):
    use_deterministic_cuda()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        a, b = _three_steps(name), _three_steps(name)
    assert not [str(w.message) for w in seen if "deterministic" in str(w.message)]
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # Captured, the same steps compute the same (to rounding: kernels may be chosen differently).
    g = _three_steps(name, graphs=True)
    for k in a:
        torch.testing.assert_close(g[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_cuda_graphs_on_and_off_give_the_same_training(data_dir):
    cfg = config(data_dir, "lenet5")
    graphed, eager = train(cfg), train(cfg.replace(cuda_graphs=False))
    for g, e in zip(graphed["history"], eager["history"]):
        assert abs(g["val_acc"] - e["val_acc"]) <= 0.004 and abs(g["train_loss"] - e["train_loss"]) <= 1e-3


def test_a_gpu_checkpoint_resumes_on_cpu(data_dir, tmp_path):
    # The GPU run's optimizer is fused, its images normalized once and its steps captured; none of
    # that may keep its checkpoint from continuing on a CPU-only node.
    cfg = config(data_dir, "lenet5")
    with pytest.raises(Crash):
        train(cfg, CrashAfter(2), checkpoint_dir=tmp_path / "cut")
    resumed = train(cfg.replace(device="cpu", threads=1), checkpoint_dir=tmp_path / "cut",
                    resume_from=tmp_path / "cut")
    assert resumed["status"] == "completed" and [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    whole = train(cfg)
    assert abs(resumed["history"][-1]["val_acc"] - whole["history"][-1]["val_acc"]) <= 0.02
