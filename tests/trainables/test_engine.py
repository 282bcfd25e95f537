import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpstudy.trainables import Reporter, StopTrial, TrainConfig, train
from hpstudy.trainables import checkpoints
from hpstudy.trainables.config import DEFAULT_CHECKPOINT_EVERY_S
from hpstudy.trainables.datasets import DataNotFoundError, load_split
from hpstudy.trainables.inits import INITS
from hpstudy.trainables.loader import split_indices
from hpstudy.trainables.optimizers import OPTIMIZERS
from tests.trainables.helpers import Crash, CrashAfter, without_timing


def config(data_dir, **kw) -> TrainConfig:
    base = {"dataset": "synthetic", "model": "mlp", "model_args": {"hidden": [32]}, "train_size": 256,
            "val_size": 128, "test_size": 128, "batch_size": 32, "epochs": 2, "lr": 0.05, "threads": 1,
            "data_dir": data_dir, "checkpoint_every_s": 0}  # every epoch: the resume tests crash between them
    if kw.get("model", "mlp") != "mlp":
        del base["model_args"]
    return TrainConfig.from_dict({**base, **kw})


# Dropout (RNG), per-batch augmentation, a per-epoch and a per-step scheduler: what resume must restore.
RESUME_CASES = {
    "dropout+augment+cosine": dict(model="cnn_bn_dropout", augment="crop,affine,erase", scheduler="cosine",
                                   optimizer="momentum", epochs=4, lr=0.02),
    "adam+onecycle": dict(optimizer="adam", scheduler="onecycle", epochs=4, lr=0.01, augment="flip,jitter"),
}


def test_same_seed_same_history_and_test_metrics(data_dir):
    cfg = config(data_dir, model="cnn_bn_dropout", augment="crop,erase", epochs=2, optimizer="momentum", lr=0.02)
    a, b = train(cfg), train(cfg)
    assert a["status"] == "completed" and len(a["history"]) == 2
    assert without_timing(a["history"]) == without_timing(b["history"])
    assert a["test"] == b["test"]
    c = train(cfg.replace(seed=1))
    assert without_timing(c["history"]) != without_timing(a["history"])


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_equals_uninterrupted(data_dir, tmp_path, case):
    cfg = config(data_dir, **RESUME_CASES[case])
    whole = train(cfg, checkpoint_dir=tmp_path / "whole")
    assert whole["status"] == "completed"
    with pytest.raises(Crash):
        train(cfg, CrashAfter(2), checkpoint_dir=tmp_path / "cut")
    resumed = train(cfg, checkpoint_dir=tmp_path / "cut", resume_from=tmp_path / "cut")
    assert len(resumed["history"]) == cfg.epochs
    assert without_timing(resumed["history"]) == without_timing(whole["history"])
    assert resumed["test"] == whole["test"]


class CheckpointsReported(Reporter):
    def __init__(self):
        self.reported: list[tuple[int, bool]] = []  # (epoch, whether a checkpoint came with it)

    def report(self, metrics, checkpoint_dir):
        self.reported.append((metrics["epoch"], checkpoint_dir is not None))

    def finish(self, result):
        pass


def test_checkpoint_every_s_writes_only_when_due_and_always_the_last_epoch(data_dir, tmp_path):
    every = CheckpointsReported()
    train(config(data_dir, epochs=3, checkpoint_every_s=0), every, checkpoint_dir=tmp_path / "every")
    assert every.reported == [(1, True), (2, True), (3, True)]

    sparse = CheckpointsReported()
    train(config(data_dir, epochs=3, checkpoint_every_s=3600), sparse, checkpoint_dir=tmp_path / "sparse")
    assert sparse.reported == [(1, False), (2, False), (3, True)]
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "sparse")] == ["epoch_0003.pt"]


def test_by_default_epochs_shorter_than_the_interval_are_not_checkpointed(data_dir, tmp_path):
    values = config(data_dir, epochs=3).to_dict()
    del values["checkpoint_every_s"]
    cfg = TrainConfig.from_dict(values)
    assert cfg.checkpoint_every_s == DEFAULT_CHECKPOINT_EVERY_S > 0
    reported = CheckpointsReported()
    train(cfg, reported, checkpoint_dir=tmp_path)  # epochs of milliseconds here
    assert reported.reported == [(1, False), (2, False), (3, True)]


def test_resume_with_sparse_checkpoints_repeats_the_unsaved_epochs_and_still_matches(data_dir, tmp_path):
    cfg = config(data_dir, epochs=4, model="cnn_bn_dropout", optimizer="momentum", lr=0.02)
    whole = train(cfg)
    with pytest.raises(Crash):  # dies at epoch 2's report, its checkpoint written
        train(cfg, CrashAfter(2), checkpoint_dir=tmp_path)
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["epoch_0001.pt", "epoch_0002.pt"]
    (tmp_path / "epoch_0002.pt").unlink()  # as if epoch 2 had not been due
    resumed = train(cfg.replace(checkpoint_every_s=3600), checkpoint_dir=tmp_path, resume_from=tmp_path)
    assert without_timing(resumed["history"]) == without_timing(whole["history"])
    assert resumed["test"] == whole["test"]


def test_damaged_latest_checkpoint_falls_back_and_still_matches(data_dir, tmp_path, caplog):
    cfg = config(data_dir, epochs=4, model="cnn_bn_dropout", optimizer="momentum", lr=0.02)
    whole = train(cfg)
    assert whole["status"] == "completed"
    with pytest.raises(Crash):
        train(cfg, CrashAfter(3), checkpoint_dir=tmp_path)
    newest = checkpoints.list_checkpoints(tmp_path)[-1]
    assert newest.name == "epoch_0003.pt"
    newest.write_bytes(newest.read_bytes()[:-100])  # torn write
    resumed = train(cfg, checkpoint_dir=tmp_path, resume_from=tmp_path)
    assert "skipping damaged checkpoint" in caplog.text
    assert without_timing(resumed["history"]) == without_timing(whole["history"])


def test_checkpoint_holds_one_dict_with_fixed_keys_and_its_config(data_dir, tmp_path):
    cfg = config(data_dir, epochs=3)
    train(cfg, checkpoint_dir=tmp_path)
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["epoch_0002.pt", "epoch_0003.pt"]
    state, _ = checkpoints.load_latest(tmp_path)
    assert set(state) == set(checkpoints.CHECKPOINT_KEYS)
    assert TrainConfig.from_dict(state["config"]) == cfg and state["epoch"] == 3
    assert state["data_order"] == {"seed": cfg.seed, "next_epoch": 3}


def test_resume_refuses_a_different_config(data_dir, tmp_path):
    cfg = config(data_dir)
    train(cfg, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="lr: differs from the checkpoint"):
        train(cfg.replace(lr=0.5), resume_from=tmp_path)


def test_reporter_can_stop_the_run(data_dir):
    class PruneAtOne(Reporter):
        def report(self, metrics, checkpoint_dir):
            raise StopTrial("pruned by MedianPruner at epoch 1")

        def finish(self, result):
            self.result = result

    reporter = PruneAtOne()
    result = train(config(data_dir, epochs=5), reporter)
    assert result["status"] == "pruned" and result["reason"] == "pruned by MedianPruner at epoch 1"
    assert len(result["history"]) == 1 and reporter.result is result


def test_check_stop_is_asked_after_every_step_and_validation_batch_and_can_end_the_run_at_once(data_dir):
    class StopAfter:
        """Like Tune's reporter once Tune stopped the trial while it trained on: ends the thread."""

        def __init__(self, steps=None):
            self.steps, self.checked, self.reports = steps, 0, 0

        def report(self, metrics, checkpoint_dir):
            self.reports += 1

        def check_stop(self):
            self.checked += 1
            if self.checked == self.steps:
                raise SystemExit(0)

        def finish(self, result):
            self.result = result

    whole = StopAfter()
    result = train(config(data_dir, epochs=2), whole)  # 256 images, batch 32: 8 steps per epoch
    # Each epoch: 8 steps, then its validation (128 images: one batch).
    assert result["steps"] == 16 and whole.checked == 2 * (8 + 1) and whole.reports == 2
    stopped = StopAfter(steps=5)
    with pytest.raises(SystemExit):
        train(config(data_dir, epochs=2), stopped)
    assert stopped.checked == 5 and stopped.reports == 0 and not hasattr(stopped, "result")


class Recorder(Reporter):
    def __init__(self, stop_at_step=None):
        self.reports, self.stop_at_step = [], stop_at_step

    def report(self, metrics, checkpoint_dir):
        self.reports.append((dict(metrics), checkpoint_dir))
        if metrics["step"] == self.stop_at_step:
            raise StopTrial(f"pruned at step {self.stop_at_step}")

    def finish(self, result):
        pass


def test_checks_inside_an_epoch_are_reported_and_change_nothing_else(data_dir, tmp_path):
    # Dropout and augmentation draw from the RNG: scoring the validation sample must not.
    cfg = config(data_dir, model="cnn_bn_dropout", augment="crop,erase", optimizer="momentum", lr=0.02, epochs=2)
    plain, checked = Recorder(), Recorder()
    a = train(cfg, plain)
    b = train(cfg.replace(checks_per_epoch=3), checked, checkpoint_dir=tmp_path)
    assert without_timing(a["history"]) == without_timing(b["history"]) and a["test"] == b["test"]
    assert [m["step"] for m, _ in plain.reports] == [1, 2]
    assert [m["step"] for m, _ in checked.reports] == [1, 2, 3, 4, 5, 6]
    assert [bool(m.get("partial")) for m, _ in checked.reports] == [True, True, False] * 2
    # Only an epoch's end carries a checkpoint, and only those are the history.
    assert [d is not None for _, d in checked.reports] == [False, False, True] * 2
    assert [m["epoch"] for m, _ in checked.reports] == [1, 1, 1, 2, 2, 2]
    partial = checked.reports[0][0]
    assert 0 <= partial["val_acc"] <= 1 and partial["train_loss"] > 0 and "epoch_time_s" not in partial


def test_a_check_inside_the_first_epoch_can_stop_the_run(data_dir, tmp_path):
    cfg = config(data_dir, epochs=3, checks_per_epoch=4)  # 8 batches per epoch: checks after 2, 4, 6
    result = train(cfg, Recorder(stop_at_step=2), checkpoint_dir=tmp_path)
    assert result["status"] == "pruned" and result["reason"] == "pruned at step 2"
    assert result["history"] == [] and result["steps"] == 4 and result["steps_planned"] == 24
    assert checkpoints.list_checkpoints(tmp_path) == []  # no epoch ended: nothing to resume from


def test_more_checks_than_batches_keep_step_numbers(data_dir):
    # 2 batches per epoch, 5 reports each: steps still mean fifths of an epoch in every trial.
    reporter = Recorder()
    train(config(data_dir, train_size=64, epochs=2, checks_per_epoch=5), reporter)
    assert [m["step"] for m, _ in reporter.reports] == list(range(1, 11))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains(data_dir, name):
    lr = {"adadelta": 1.0, "adagrad": 0.05}.get(name, 0.01 if "adam" in name or name == "rmsprop" else 0.05)
    result = train(config(data_dir, optimizer=name, lr=lr, epochs=3))
    losses = [h["train_loss"] for h in result["history"]]
    assert result["status"] == "completed" and losses[-1] < losses[0]


@pytest.mark.parametrize("name", INITS)
def test_every_init_trains_and_differs(data_dir, name):
    result = train(config(data_dir, init=name, epochs=1))
    assert result["status"] == "completed"
    if name != "default":
        default = train(config(data_dir, epochs=1))
        assert result["history"][0]["train_loss"] != default["history"][0]["train_loss"]


def test_history_and_final_metrics_are_complete(data_dir):
    result = train(config(data_dir))
    assert set(result["history"][0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                                         "epoch_time_s", "images_per_s"}
    test = result["test"]
    assert len(test["precision"]) == len(test["recall"]) == len(test["f1"]) == 10
    matrix = torch.tensor(test["confusion_matrix"])
    assert matrix.shape == (10, 10) and int(matrix.sum()) == 128 and sum(test["support"]) == 128
    assert abs(float(matrix.diag().sum()) / 128 - test["test_acc"]) < 1e-6
    assert result["param_count"] == 784 * 32 + 32 + 32 * 10 + 10


def test_lr_recorded_each_epoch_follows_the_scheduler(data_dir):
    result = train(config(data_dir, scheduler="step", step_size=1, gamma=0.5, epochs=3, lr=0.1))
    assert [h["lr"] for h in result["history"]] == pytest.approx([0.1, 0.05, 0.025])


def test_split_is_fixed_by_split_seed_only():
    cfg = TrainConfig()
    train_a, val_a = split_indices(5000, cfg)
    train_b, val_b = split_indices(5000, cfg.replace(seed=7))
    assert torch.equal(train_a, train_b) and torch.equal(val_a, val_b)
    assert len(val_a) == 1000 and len(train_a) == 4000
    assert not set(train_a.tolist()) & set(val_a.tolist())
    train_c, _ = split_indices(5000, cfg.replace(split_seed=1))
    assert not torch.equal(train_a, train_c)
    small_train, small_val = split_indices(5000, cfg.replace(train_size=800, val_size=100))
    assert len(small_train) == 800 and len(small_val) == 100 and torch.equal(small_train, train_a[:800])


def test_missing_files_offline_say_which_and_where(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_split("mnist", True, str(tmp_path), download=False)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "pre-stage" in message and "\n" not in message


def test_mnist_small_is_the_real_bundled_mnist(data_dir):
    images, labels = load_split("mnist-small", True, data_dir)
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.bincount().tolist() == [500] * 10
    test_images, _ = load_split("mnist-small", False, data_dir)
    assert test_images.shape == (10000, 1, 28, 28)


def test_staged_mnist_is_read_exactly_as_torchvision_reads_it(data_dir, tmp_path):
    from torchvision.datasets import MNIST

    for is_train in (True, False):
        images, labels = load_split("mnist-small", is_train, data_dir)
        reference = MNIST(str(Path(data_dir) / "mnist-small"), train=is_train, download=False)
        assert torch.equal(images, reference.data.unsqueeze(1)) and torch.equal(labels, reference.targets)
    # A damaged staged file: one line naming it (torchvision's reader would fail deep inside instead).
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = Path(data_dir) / "mnist-small" / "MNIST" / "raw"
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes((source / name).read_bytes()[:-7 if "images" in name else None])
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte: not an IDX file .* or truncated"):
        load_split("mnist", False, str(tmp_path), download=False)


def test_a_lenet5_trial_and_the_driver_import_neither_torchvision_nor_matplotlib(data_dir, tmp_path):
    # Each is paid on the study's critical path: torchvision about 2.3 s at the driver's start, matplotlib
    # about 0.7 s in the driver and in the first trial's worker. Only runs with a torchvision model, a
    # download or an image folder need torchvision; only figures (hpstudy train, hpstudy report) matplotlib.
    code = ("import sys; from pathlib import Path; from hpstudy import cli; from hpstudy.studies import report, runner; "
            "from hpstudy.trainables import TrainConfig, outputs, train, trainable; "
            f"result = train(TrainConfig.from_dict({{'model': 'lenet5', 'epochs': 1, 'train_size': 256, 'val_size': 64, "
            f"'test_size': 64, 'threads': 1, 'data_dir': {data_dir!r}}})); "
            f"outputs.write_run_outputs(result, Path({str(tmp_path)!r}), curves=False); "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "result.json").exists()


def test_adam_lr_0_1_on_relu_models_stops_inside_first_epoch(data_dir):
    for model in ("mlp", "simple_cnn"):
        cfg = TrainConfig.from_dict({"dataset": "mnist-small", "model": model, "optimizer": "adam", "lr": 0.1,
                                     "batch_size": 128, "epochs": 10, "data_dir": data_dir})
        result = train(cfg)
        assert result["status"] == "diverged", result["reason"]
        assert result["history"] == [] and result["steps"] <= 5  # of 32 steps in an epoch, 320 planned
        assert result["reason"].startswith("diverged: loss=") and f"at step {result['steps']}" in result["reason"]


def test_nan_loss_stops_at_that_step(data_dir):
    result = train(config(data_dir, optimizer="sgd", lr=1e6, diverge_loss_factor=0, epochs=3))
    assert result["status"] == "diverged"
    assert "loss=nan" in result["reason"] or "loss=inf" in result["reason"]


def test_hopeless_lr_stalls(data_dir):
    cfg = TrainConfig.from_dict({"dataset": "mnist-small", "model": "lenet5", "optimizer": "sgd", "lr": 5e-7,
                                 "batch_size": 64, "epochs": 10, "data_dir": data_dir})
    result = train(cfg)
    assert result["status"] == "stalled" and result["steps"] == cfg.chance_warmup_steps


def test_lenet5_on_mnist_small_reaches_95_percent(data_dir):
    # A quality bar, not a time limit: 4,000 real MNIST training images, 1,000 held-out validation.
    cfg = TrainConfig.from_dict({"dataset": "mnist-small", "model": "lenet5", "optimizer": "momentum",
                                 "lr": 0.05, "batch_size": 64, "epochs": 10, "data_dir": data_dir, "threads": 2})
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["history"][-1]["val_acc"] >= 0.95, result["history"][-1]


@pytest.mark.parametrize("durable, fsyncs_per_epoch", [(True, 2), (False, 0)])
def test_scratch_checkpoints_are_not_fsynced(data_dir, tmp_path, monkeypatch, durable, fsyncs_per_epoch):
    # Tune's trainable trains with durable_checkpoints=False: tune.report copies each file elsewhere.
    calls = []
    real_fsync = checkpoints.os.fsync
    monkeypatch.setattr(checkpoints.os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    result = train(config(data_dir, epochs=2), checkpoint_dir=tmp_path, durable_checkpoints=durable)
    assert len(calls) == 2 * fsyncs_per_epoch
    loaded, path = checkpoints.load_latest(tmp_path)
    assert path.name == "epoch_0002.pt" and loaded["history"] == result["history"]
