import pytest
import torch
import torch.nn.functional as F

from hpstudy.trainables.augment import AUGMENTATIONS, augment_batch

FILL = (0.25, 0.5, 0.75)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(channels: int = 3, height: int = 32, width: int = 32, seed: int = 123) -> torch.Tensor:
    return torch.rand(channels, height, width, generator=_gen(seed))


def _copies(n: int, **kwargs) -> torch.Tensor:
    return _image(**kwargs).expand(n, -1, -1, -1).clone()


def _distinct(batch: torch.Tensor) -> int:
    return torch.unique(batch.flatten(1), dim=0).shape[0]


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_keeps_shape_dtype_device_and_input(name):
    images = torch.rand(8, 3, 32, 32, generator=_gen(1))
    before = images.clone()
    out = augment_batch(images, [name], _gen(), FILL)
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert out is not images
    assert torch.equal(images, before)


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 24, 40)])
def test_grey_and_non_square_images(name, shape):
    images = torch.rand(4, *shape, generator=_gen(1))
    fill = FILL[: shape[0]]
    assert augment_batch(images, [name], _gen(), fill).shape == images.shape


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_randomness_is_per_sample(name):
    # A batch-level transform (torchvision v2) would give 64 identical outputs here.
    out = augment_batch(_copies(64), [name], _gen(), FILL)
    assert _distinct(out) > 1


def test_same_seed_same_output_different_seed_different_output():
    images = torch.rand(16, 3, 32, 32, generator=_gen(1))
    a = augment_batch(images, AUGMENTATIONS, _gen(7), FILL)
    b = augment_batch(images, AUGMENTATIONS, _gen(7), FILL)
    c = augment_batch(images, AUGMENTATIONS, _gen(8), FILL)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_applied_in_canonical_order_whatever_order_given():
    images = torch.rand(8, 3, 32, 32, generator=_gen(1))
    canonical = augment_batch(images, AUGMENTATIONS, _gen(3), FILL)
    shuffled = augment_batch(images, ("erase", "jitter", "flip", "affine", "crop"), _gen(3), FILL)
    assert torch.equal(canonical, shuffled)


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    _, h, w = image.shape
    padded = F.pad(image, (4, 4, 4, 4))
    return padded[:, 4 - dy : 4 - dy + h, 4 - dx : 4 - dx + w]


def test_crop_is_an_exact_integer_shift_with_zero_fill():
    image = _image()
    out = augment_batch(_copies(16), ["crop"], _gen(), FILL)
    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
    found = set()
    for sample in out[:8]:
        matches = [s for s in shifts if torch.equal(sample, _shifted(image, *s))]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) > 1


def test_flip_gives_input_or_mirror_and_both_occur():
    image = _image()
    out = augment_batch(_copies(256), ["flip"], _gen(), FILL)
    same = (out == image).flatten(1).all(1)
    mirrored = (out == image.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert bool(same.any()) and bool(mirrored.any())


def test_erase_fills_one_rectangle_of_bounded_area():
    image = _image()
    out = augment_batch(_copies(128), ["erase"], _gen(), FILL)
    fill = torch.tensor(FILL)[:, None]
    erased_count = 0
    for sample in out:
        changed = (sample != image).any(0)
        if not changed.any():
            continue
        erased_count += 1
        assert torch.equal(sample[:, changed], fill.expand(-1, int(changed.sum())))
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert int(changed.sum()) == int(box)  # one solid rectangle
        # Rounding the sides to whole pixels moves the area by at most half the short side,
        # i.e. under 0.003 at the low end and 0.009 at the high end of a 32x32 image.
        assert 0.017 <= changed.float().mean().item() <= 0.34
    assert 0 < erased_count < len(out)  # erased with probability 0.5


def test_jitter_output_stays_in_unit_range():
    images = torch.rand(64, 3, 32, 32, generator=_gen(1))
    images[:, :, :4] = 1.0  # saturated pixels get pushed above 1 by brightness > 1
    images[:, :, -4:] = 0.0
    out = augment_batch(images, ["jitter"], _gen(), FILL)
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, images)


def test_unknown_name_raises_naming_it():
    with pytest.raises(ValueError, match="blur") as excinfo:
        augment_batch(torch.rand(2, 3, 8, 8), ["flip", "blur"], _gen(), FILL)
    assert "erase" in str(excinfo.value)  # lists the valid choices


def test_empty_names_returns_images_unchanged():
    images = torch.rand(2, 3, 8, 8)
    assert augment_batch(images, [], _gen(), FILL) is images


def test_fill_must_match_channels():
    with pytest.raises(ValueError, match="fill"):
        augment_batch(torch.rand(2, 3, 8, 8), ["erase"], _gen(), (0.5,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    images = torch.rand(16, 3, 32, 32, generator=_gen(1))
    on_cpu = augment_batch(images, AUGMENTATIONS, _gen(5), FILL)
    on_cuda = augment_batch(images.cuda(), AUGMENTATIONS, _gen(5), FILL)
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, atol=1e-5, rtol=1e-5)
