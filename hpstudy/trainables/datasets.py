"""Datasets by name, decoded once into uint8 tensors.

Each dataset is read through torchvision (`datasets.MNIST`, `CIFAR10`, `ImageFolder`, ...), except
MNIST-format files already staged, which are read here without importing torchvision, and then
held as one ``uint8`` tensor ``(N, C, H, W)`` plus ``int64`` labels, memoised per process, so the
training loop never touches PIL or per-sample Python and a reused Ray actor never decodes twice.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import shutil
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from hpstudy.trainables.config import ConfigError, DataNotFoundError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    image_size: tuple[int, int]  # (H, W)
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    classes: tuple[str, ...]


_DIGITS = tuple(str(d) for d in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
            "Bag", "Ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Static facts, so a config can be validated (model vs input) before any file is read.
_STATIC_INFO = {
    "mnist": DatasetInfo("mnist", 1, (28, 28), 10, (0.1307,), (0.3081,), _DIGITS),
    "mnist-small": DatasetInfo("mnist-small", 1, (28, 28), 10, (0.1307,), (0.3081,), _DIGITS),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, (28, 28), 10, (0.2860,), (0.3530,), _FASHION),
    "cifar10": DatasetInfo("cifar10", 3, (32, 32), 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), _CIFAR10),
    "cifar100": DatasetInfo("cifar100", 3, (32, 32), 100, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), tuple(f"class_{i}" for i in range(100))),
    # Class-dependent patterns plus noise: learnable, so tests can check that training trains.
    "synthetic": DatasetInfo("synthetic", 1, (28, 28), 10, (0.5,), (0.25,), _DIGITS),
}

DATASETS = ("mnist", "mnist-small", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic")

SYNTHETIC_SIZES = {True: 2000, False: 500}  # train, test images
DEFAULT_IMAGE_SIZE = 64  # imagefolder resize when image_size is not given


def default_data_dir() -> Path:
    return Path(os.environ.get("HPSTUDY_DATA_DIR", Path.home() / ".cache" / "hpstudy" / "data"))


def dataset_info(name: str, data_dir: str | None = None, image_size: int | None = None) -> DatasetInfo:
    """Shape, classes and normalisation of a dataset, without decoding it."""
    if name == "imagefolder":
        root = _imagefolder_root(data_dir)
        classes = tuple(sorted(e.name for e in os.scandir(root / "train") if e.is_dir()))
        if not classes:
            raise DataNotFoundError(f"imagefolder: no class folders in {root / 'train'}")
        size = image_size or DEFAULT_IMAGE_SIZE
        return DatasetInfo("imagefolder", 3, (size, size), len(classes), _IMAGENET_MEAN, _IMAGENET_STD,
                           classes)
    return _STATIC_INFO[name]


def load_split(name: str, train: bool, data_dir: str | None = None, download: bool = True,
               image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole train or test split as (uint8 images N,C,H,W, int64 labels), decoded once."""
    root = str(Path(data_dir).expanduser().resolve()) if data_dir else None
    images, labels = _load_cached(name, train, root, download, image_size)
    return images, labels


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, train: bool, root: str | None, download: bool,
                 image_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "synthetic":
        return _synthetic(train)
    if name == "imagefolder":
        return _imagefolder(_imagefolder_root(root), train, image_size or DEFAULT_IMAGE_SIZE)
    base = Path(root) if root else default_data_dir()
    if name == "mnist-small":
        return _torchvision_split("mnist", _stage_mnist_small(base), train, download=False)
    return _torchvision_split(name, base, train, download)


# torchvision's dataset classes by our names; torchvision is imported only when one is needed.
_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
_MNIST_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _torchvision_split(name: str, root: Path, train: bool, download: bool):
    if name in ("mnist", "fashion-mnist"):
        staged = _read_staged_mnist(root / _TORCHVISION[name] / "raw", train)
        if staged is not None:
            return staged
    from torchvision import datasets as tv_datasets

    cls = getattr(tv_datasets, _TORCHVISION[name])
    try:
        ds = cls(str(root), train=train, download=False)  # pre-staged files first: no network needed
    except RuntimeError:
        if not download:
            raise DataNotFoundError(_missing_message(name, root)) from None
        try:
            ds = cls(str(root), train=train, download=True)
        except Exception as exc:  # offline: URLError, HTTPError, socket errors, checksum errors
            raise DataNotFoundError(f"{_missing_message(name, root)} (download failed: "
                                    f"{type(exc).__name__})") from None
    data = ds.data
    if not isinstance(data, torch.Tensor):  # CIFAR: numpy N,H,W,C
        data = torch.from_numpy(data).permute(0, 3, 1, 2)
    elif data.dim() == 3:  # MNIST family: N,H,W
        data = data.unsqueeze(1)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return data.contiguous(), labels


def _read_staged_mnist(raw: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """An MNIST-format split whose files are already where torchvision's reader looks, read here: the
    same tensors as torchvision's MNIST (tests/trainables/test_engine.py compares them), without
    importing torchvision. The study driver reads the data to check sizes before it starts Ray, and
    torchvision's import took 2.3 s of its 8 s start on two cores. None when a file is missing:
    torchvision then downloads them."""
    images_file, labels_file = (raw / name for name in _MNIST_FILES[train])
    if not (images_file.is_file() and labels_file.is_file()):
        return None
    images = _read_idx_ubyte(images_file, rank=3).unsqueeze(1)
    return images.contiguous(), _read_idx_ubyte(labels_file, rank=1).to(torch.int64)


def _read_idx_ubyte(path: Path, rank: int) -> torch.Tensor:
    """An IDX file of unsigned bytes: 0, 0, type 0x08, rank; the sizes as big-endian uint32; the data."""
    raw = path.read_bytes()
    header = 4 + 4 * rank
    dims = struct.unpack(f">{rank}I", raw[4:header]) if len(raw) >= header else ()
    if raw[:4] != bytes((0, 0, 0x08, rank)) or len(raw) != header + math.prod(dims):
        raise DataNotFoundError(f"{path}: not an IDX file of {rank}-dimensional unsigned bytes, or truncated; "
                                f"delete it to download it again")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).view(*dims)


def _missing_message(name: str, root: Path) -> str:
    if name in ("mnist", "fashion-mnist"):
        folder = root / _TORCHVISION[name] / "raw"
        files = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
        return (f"{name}: files missing in {folder} (need {files}, uncompressed); pre-stage them there "
                f"or run once with network access and pass --data-dir {root}")
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    return (f"{name}: files missing in {folder}; pre-stage the extracted {archive} in {root} "
            f"or run once with network access and pass --data-dir {root}")


def _stage_mnist_small(base: Path) -> Path:
    """Unpack the bundled IDX files to <base>/mnist-small/MNIST/raw/ where torchvision's reader looks."""
    target = base / "mnist-small"
    raw = target / "MNIST" / "raw"
    bundled = resources.files("hpstudy.data") / "mnist-small"
    for gz in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        out = raw / gz[:-3]
        if out.exists():
            continue
        raw.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        with resources.as_file(bundled / gz) as src, gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, out)  # atomic: a concurrent trial never reads a half-written file
    return target


def _synthetic(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n = SYNTHETIC_SIZES[train]
    g = torch.Generator().manual_seed(1234 if train else 4321)
    prototypes = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    labels = torch.arange(n) % 10
    noise = torch.rand(n, 1, 28, 28, generator=g)
    images = (0.6 * prototypes[labels] + 0.4 * noise).mul(255).to(torch.uint8)
    return images, labels.to(torch.int64)


def _imagefolder_root(data_dir: str | None) -> Path:
    if not data_dir:
        raise ConfigError("data_dir", "dataset imagefolder needs --data-dir DIR with train/ and val/ "
                                      "(or test/) folders of class subfolders")
    root = Path(data_dir).expanduser()
    if not (root / "train").is_dir():
        raise DataNotFoundError(f"imagefolder: {root / 'train'} is not a directory (expected "
                                f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg)")
    return root


def _imagefolder(root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and resize an ImageFolder tree once; cached as a .pt file next to the data."""
    from torchvision import datasets as tv_datasets
    from torchvision.transforms import v2

    split = "train" if train else ("val" if (root / "val").is_dir() else "test")
    folder = root / split
    if not folder.is_dir():
        raise DataNotFoundError(f"imagefolder: {root}/val (or test) is not a directory")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    key = hashlib.sha256(("\n".join(files) + f"|{size}").encode()).hexdigest()[:16]
    cache = root / ".hpstudy-cache" / f"{split}-{size}-{key}.pt"
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            return blob["images"], blob["labels"]
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    resize = v2.Compose([v2.ToImage(), v2.Resize(size), v2.CenterCrop(size)])
    ds = tv_datasets.ImageFolder(str(folder), transform=lambda img: resize(img.convert("RGB")))
    images = torch.empty(len(ds), 3, size, size, dtype=torch.uint8)
    for i in range(len(ds)):  # the one per-sample pass: decoding, done once and cached
        images[i] = ds[i][0]
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": images, "labels": labels}, tmp)
    os.replace(tmp, cache)
    return images, labels
