"""Random crop (shift) and horizontal flip: the device batch gather (kernels/data.cl) and the
host version (clcnn.datasets.augment) against a plain per-pixel reference, exactly; the draws;
per-channel normalisation in prepare_images."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clcnn.datasets import (CIFAR10_MEAN, CIFAR10_STD, augment_draw, background_value, crop_flip,
                            prepare_images, random_crop_flip)
from clcnn.errors import ShapeError
from clcnn.ops import data as data_ops


def reference(images, order, start, count, shifts, flips, fill):
    """out[i, c, y, x] = image[c, y - dy, x' - dx], x' = W - 1 - x when flipped, one pixel at
    a time; fill per channel."""
    m, c, h, w = images.shape
    fill = np.broadcast_to(np.asarray(fill, np.float32), (c,))
    out = np.empty((count, c, h, w), np.float32)
    for i in range(count):
        k = start + i
        dy, dx = shifts[k] if shifts is not None else (0, 0)
        flip = flips is not None and flips[k]
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    sy, sx = y - dy, (w - 1 - x if flip else x) - dx
                    inside = 0 <= sy < h and 0 <= sx < w
                    out[i, ch, y, x] = images[order[k], ch, sy, sx] if inside else fill[ch]
    return out


@st.composite
def cases(draw):
    m = draw(st.integers(1, 12))
    c = draw(st.sampled_from([1, 2, 3, 4]))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    n = draw(st.integers(1, 14))                        # order may repeat images
    start = draw(st.integers(0, n - 1))
    count = draw(st.integers(1, n - start))
    reach = draw(st.integers(0, max(h, w) + 1))          # shifts past the whole image too
    mode = draw(st.sampled_from(["none", "shifts", "flips", "both"]))
    per_channel = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return m, c, h, w, n, start, count, reach, mode, per_channel, seed


def _arrays(case):
    m, c, h, w, n, start, count, reach, mode, per_channel, seed = case
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((m, c, h, w)).astype(np.float32)
    labels = rng.integers(0, 100, m)
    order = rng.integers(0, m, n)
    shifts = rng.integers(-reach, reach + 1, (n, 2)) if mode in ("shifts", "both") else None
    flips = rng.integers(0, 2, n) if mode in ("flips", "both") else None
    fill = tuple(rng.standard_normal(c).tolist()) if per_channel else float(rng.standard_normal())
    return images, labels, order, shifts, flips, fill


@given(cases())
def test_batch_gather_crop_flip_matches_reference(device, case):
    images, labels, order, shifts, flips, fill = _arrays(case)
    start, count = case[5], case[6]
    put = lambda a: None if a is None else device.to_device(a, dtype=np.int32)  # noqa: E731
    x, y = data_ops.batch_gather(device, device.to_device(images), put(labels), put(order), start, count,
                                 shifts=put(shifts), fill=fill, flips=put(flips))
    expected = reference(images, order, start, count, shifts, flips, fill)
    assert np.array_equal(x.get(), expected)
    assert np.array_equal(y.get(), labels[order[start:start + count]])


@given(cases())
def test_host_crop_flip_matches_reference(case):
    images, _, order, shifts, flips, fill = _arrays(case)
    batch = images[order]
    got = crop_flip(batch, shifts, flips, fill)
    assert got.dtype == np.float32
    assert np.array_equal(got, reference(images, order, 0, len(order), shifts, flips, fill))


def test_fill_from_a_device_array_and_old_positional_call(device):
    rng = np.random.default_rng(5)
    images = rng.standard_normal((6, 3, 5, 7)).astype(np.float32)
    labels, order = np.arange(6), rng.permutation(6)
    shifts, flips = rng.integers(-3, 4, (6, 2)), np.array([1, 0, 1, 1, 0, 0])
    fill = np.array([-1.5, 0.25, 2.0], np.float32)
    args = [device.to_device(images), device.to_device(labels, dtype=np.int32),
            device.to_device(order, dtype=np.int32), 1, 4, device.to_device(shifts, dtype=np.int32)]
    x, _ = data_ops.batch_gather(device, *args, device.to_device(fill),
                                 flips=device.to_device(flips, dtype=np.int32))
    assert np.array_equal(x.get(), reference(images, order, 1, 4, shifts, flips, fill))
    x, _ = data_ops.batch_gather(device, *args, -0.75)     # the signature before flips existed
    assert np.array_equal(x.get(), reference(images, order, 1, 4, shifts, None, -0.75))


def test_batch_gather_bad_augmentation_arguments(device):
    images = device.to_device(np.zeros((4, 3, 5, 5), np.float32))
    labels = device.to_device(np.zeros(4), dtype=np.int32)
    order = device.to_device(np.arange(4), dtype=np.int32)
    with pytest.raises(ShapeError, match="flips must be"):
        data_ops.batch_gather(device, images, labels, order, 0, 4,
                              flips=device.to_device(np.zeros(3), dtype=np.int32))
    with pytest.raises(TypeError, match="flips must be int32"):
        data_ops.batch_gather(device, images, labels, order, 0, 4, flips=device.to_device(np.zeros(4)))
    with pytest.raises(ShapeError, match="fill has 2 values for images of 3 channels"):
        data_ops.batch_gather(device, images, labels, order, 0, 4, fill=(0.0, 1.0))


def test_augment_draw_is_seeded_and_keeps_the_shift_draw():
    shifts, flips = augment_draw(7, 2, 5, 300, 4, flip=True)
    again = augment_draw(7, 2, 5, 300, 4, flip=True)
    assert np.array_equal(shifts, again[0]) and np.array_equal(flips, again[1])
    other = augment_draw(7, 2, 6, 300, 4, flip=True)
    assert not np.array_equal(shifts, other[0]) or not np.array_equal(flips, other[1])
    # The shifts are those of a shift-only draw from the same (seed, epoch, batch) generator.
    alone = np.random.default_rng([7, 2, 5]).integers(-4, 5, size=(300, 2))
    assert np.array_equal(shifts, alone) and augment_draw(7, 2, 5, 300, 4)[1] is None
    assert shifts.min() == -4 and shifts.max() == 4 and set(np.unique(flips)) == {0, 1}
    assert 100 < flips.sum() < 200          # a fair coin: 150 expected, sd 8.7
    # random_crop_flip with that generator applies exactly that draw.
    batch = np.random.default_rng(1).standard_normal((300, 3, 6, 6)).astype(np.float32)
    assert np.array_equal(random_crop_flip(batch, 4, np.random.default_rng([7, 2, 5]), fill=0.5),
                          crop_flip(batch, shifts, flips, 0.5))


@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 3), st.integers(0, 2 ** 32 - 1))
def test_prepare_images_per_channel(n, c, pad, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, c, 4, 5), dtype=np.uint8)
    mean, std = rng.uniform(0.1, 0.9, c), rng.uniform(0.1, 0.5, c)
    got = prepare_images(images, pad=pad, mean=tuple(mean), std=tuple(std))
    assert got.shape == (n, c, 4 + 2 * pad, 5 + 2 * pad) and got.dtype == np.float32
    padded = np.zeros((n, c, 4 + 2 * pad, 5 + 2 * pad))
    padded[:, :, pad:pad + 4, pad:pad + 5] = images
    expected = (padded / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


def test_prepare_images_cifar_constants_and_bad_lengths():
    images = np.zeros((1, 3, 2, 2), np.uint8)
    images[0, :, 0, 0] = 255
    got = prepare_images(images, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    for ch, (m, s) in enumerate(zip(CIFAR10_MEAN, CIFAR10_STD)):
        np.testing.assert_allclose(got[0, ch, 0, 0], (1 - m) / s, rtol=1e-6)
        np.testing.assert_allclose(got[0, ch, 1, 1], -m / s, rtol=1e-6)
    with pytest.raises(ValueError, match="mean must be one number or 3"):
        prepare_images(images, mean=(0.5, 0.5), std=0.25)
    with pytest.raises(ValueError, match="std must be one number or 1"):
        prepare_images(images[:, 0], std=(0.2, 0.3, 0.4))


def test_device_crop_flip_equals_crop_of_black_padded_pixels_then_normalise(device):
    """torchvision's CIFAR recipe (pad the uint8 image with 4 black pixels, crop 32x32 at a
    random corner, maybe mirror, then normalise) equals gathering the normalised images with
    shifts, flips and the per-channel value of a black pixel as fill."""
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    order, p = rng.permutation(10), 4
    corners = rng.integers(0, 2 * p + 1, (10, 2))           # crop corner in the padded image
    flips = rng.integers(0, 2, 10)
    fill = background_value(CIFAR10_MEAN, CIFAR10_STD)
    assert len(fill) == 3 and fill[0] == pytest.approx(-0.4914 / 0.2470)
    x, _ = data_ops.batch_gather(
        device, device.to_device(prepare_images(images, mean=CIFAR10_MEAN, std=CIFAR10_STD)),
        device.to_device(np.zeros(10), dtype=np.int32), device.to_device(order, dtype=np.int32), 0, 10,
        device.to_device(p - corners, dtype=np.int32), fill, device.to_device(flips, dtype=np.int32))
    crops = []
    for k, m in enumerate(order):
        padded = np.pad(images[m], ((0, 0), (p, p), (p, p)))
        crop = padded[:, corners[k, 0]:corners[k, 0] + 32, corners[k, 1]:corners[k, 1] + 32]
        crops.append(crop[:, :, ::-1] if flips[k] else crop)
    expected = prepare_images(np.stack(crops), mean=CIFAR10_MEAN, std=CIFAR10_STD)
    np.testing.assert_allclose(x.get(), expected, rtol=0, atol=1e-6)
