"""An ImageNet-subset style folder (train/<class>/*.jpg, val/<class>/*.jpg), decoded once and cached."""

import numpy as np
import pytest
from PIL import Image

from hpstudy.trainables import TrainConfig, train
from hpstudy.trainables.config import ConfigError
from hpstudy.trainables.datasets import DataNotFoundError, _load_cached, dataset_info, load_split


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 12), ("val", 4)):
        for c, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
            (tmp_path / split / f"class{c}").mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (40, 56, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / f"class{c}" / f"{i}.jpg")
    _load_cached.cache_clear()
    return tmp_path


def test_decoded_resized_and_cached(folder):
    info = dataset_info("imagefolder", str(folder), 32)
    assert info.classes == ("class0", "class1", "class2") and info.channels == 3 and info.image_size == (32, 32)
    images, labels = load_split("imagefolder", True, str(folder), image_size=32)
    assert images.shape == (36, 3, 32, 32) and labels.bincount().tolist() == [12, 12, 12]
    cached = list((folder / ".hpstudy-cache").glob("train-32-*.pt"))
    assert len(cached) == 1
    cached[0].write_bytes(b"damaged")  # a damaged cache is rebuilt, not trusted
    _load_cached.cache_clear()
    again, _ = load_split("imagefolder", True, str(folder), image_size=32)
    assert (again == images).all()


def test_trains_on_the_folder(folder):
    cfg = TrainConfig.from_dict({"dataset": "imagefolder", "data_dir": str(folder), "image_size": 32,
                                 "model": "resnet18", "model_args": {"small_stem": True}, "batch_size": 8,
                                 "epochs": 2, "lr": 0.01, "optimizer": "momentum", "threads": 1,
                                 "val_fraction": 0.25})
    result = train(cfg)
    assert result["status"] == "completed" and result["classes"] == ["class0", "class1", "class2"]
    assert sum(result["test"]["support"]) == 12  # the val/ folder is the test split


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="train is not a directory"):
        dataset_info("imagefolder", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="data_dir: dataset imagefolder needs --data-dir"):
        dataset_info("imagefolder", None)
