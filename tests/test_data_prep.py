"""Training batches normalised on the device from uint8 images (kernels/data.cl batch_gather_u8)
against NumPy's prepare_images followed by the host augmentation, and the lazy PreparedImages
that carries uint8 images through Trainer.fit."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clcnn
from clcnn.datasets import PreparedImages, crop_flip, prepare_images
from clcnn.ops.data import batch_gather
from clcnn.train import Trainer, split_validation


@pytest.fixture(scope="module")
def dev():
    return clcnn.get_device()


@settings(deadline=None)
@given(m=st.integers(1, 9), c=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
       pad=st.integers(0, 3), shift=st.integers(0, 4), flip=st.booleans(), per_channel=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_gather_u8_matches_prepare_then_augment(dev, m, c, h, w, pad, shift, flip, per_channel, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (m, c, h, w), dtype=np.uint8)
    labels = rng.integers(0, 10, m).astype(np.int32)
    if per_channel:
        mean = tuple(rng.uniform(0, 1, c).tolist())
        std = tuple(rng.uniform(0.1, 1, c).tolist())
        fill = tuple(rng.uniform(-3, 3, c).tolist())
    else:
        mean, std, fill = float(rng.uniform(0, 1)), float(rng.uniform(0.1, 1)), float(rng.uniform(-3, 3))
    order = rng.permutation(m).astype(np.int32)
    start = int(rng.integers(0, m))
    count = int(rng.integers(1, m - start + 1))
    shifts = rng.integers(-shift, shift + 1, (m, 2)).astype(np.int32) if shift else None
    flips = rng.integers(0, 2, m).astype(np.int32) if flip else None

    x, y = batch_gather(dev, dev.to_device(images, np.uint8), dev.to_device(labels, np.int32),
                        dev.to_device(order, np.int32), start, count,
                        None if shifts is None else dev.to_device(shifts, np.int32), fill,
                        None if flips is None else dev.to_device(flips, np.int32), pad=pad, mean=mean, std=std)

    idx = order[start:start + count]
    ref = prepare_images(images[idx], pad=pad, mean=mean, std=std)
    if shifts is not None or flips is not None:
        ref = crop_flip(ref, None if shifts is None else shifts[start:start + count],
                        None if flips is None else flips[start:start + count], fill=fill)
    got = x.get()
    assert got.shape == ref.shape
    # The same float32 operations in the same order (no fused multiply-add): bit-identical.
    bad = np.argwhere(got != ref)
    assert bad.size == 0, f"{len(bad)} pixels differ, first at {tuple(bad[0])}: {got[tuple(bad[0])]} vs {ref[tuple(bad[0])]}"
    np.testing.assert_array_equal(y.get(), labels[idx])


def test_gather_u8_mnist_batch_bit_identical(dev):
    images, labels = clcnn.datasets.mnist("test")
    images = np.ascontiguousarray(images[:300, None])
    order = np.arange(300, dtype=np.int32)[::-1].copy()
    x, _ = batch_gather(dev, dev.to_device(images, np.uint8), dev.to_device(labels[:300], np.int32),
                        dev.to_device(order, np.int32), 0, 300, pad=2, mean=0.1307, std=0.3081)
    np.testing.assert_array_equal(x.get(), prepare_images(images[order], pad=2))


def test_gather_refuses_preparation_of_float_images(dev):
    images = dev.to_device(np.zeros((2, 1, 3, 3), np.float32))
    z = dev.to_device(np.zeros(2, np.int32), np.int32)
    with pytest.raises(ValueError, match="prepare uint8 images"):
        batch_gather(dev, images, z, z, 0, 2, pad=2)
    with pytest.raises(ValueError, match="one per channel"):
        batch_gather(dev, dev.to_device(np.zeros((2, 2, 3, 3), np.uint8), np.uint8), z, z, 0, 2,
                     mean=(0.1, 0.2, 0.3), std=1.0)


@settings(deadline=None)
@given(n=st.integers(1, 12), c=st.sampled_from([1, 3]), pad=st.integers(0, 2), seed=st.integers(0, 2**31 - 1))
def test_prepared_images_read_as_prepare_images(n, c, pad, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, c, 5, 4), dtype=np.uint8)
    mean, std = tuple(rng.uniform(0, 1, c).tolist()), tuple(rng.uniform(0.1, 1, c).tolist())
    lazy, ref = PreparedImages(images, pad, mean, std), prepare_images(images, pad, mean, std)
    assert lazy.shape == ref.shape and len(lazy) == n and lazy.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(lazy), ref)
    k = int(rng.integers(-n, n))
    index = rng.integers(0, n, 5)
    mask = rng.random(n) < 0.5
    for key in (k, slice(1, None, 2), index, mask, (k, 0), (slice(None), c - 1)):
        np.testing.assert_array_equal(lazy[key], ref[key])
    np.testing.assert_array_equal(np.asarray(lazy.take(mask)), ref[mask])
    twice = lazy.take(index).take(slice(None, None, -1))   # an index into an index
    np.testing.assert_array_equal(np.asarray(twice), ref[index][::-1])
    np.testing.assert_array_equal(twice[1:3], ref[index][::-1][1:3])


def _lenet_data(n):
    images, labels = clcnn.datasets.mnist("train")
    return images[:n], labels[:n].astype(np.int64)


@pytest.mark.parametrize("augment", [False, True])
def test_fit_on_prepared_images_equals_fit_on_float32(dev, augment):
    """The device path from uint8 trains exactly the weights that prepared float32 trains."""
    images, labels = _lenet_data(320)
    results = []
    for data in (PreparedImages(images, pad=2), prepare_images(images, pad=2)):
        clcnn.seed(3)
        net = clcnn.models.lenet5(device=dev)
        opt = clcnn.optim.SGD(net, lr=0.05, momentum=0.9)
        kwargs = {"augment_shift": 2} if augment else {}
        trainer = Trainer(net, clcnn.losses.SoftmaxCrossEntropy(), opt, seed=5, progress=False, **kwargs)
        history = trainer.fit((data, labels), epochs=1, batch_size=64, validation_split=0.2)
        results.append((net.state_dict(), history[-1]))
    (w_lazy, h_lazy), (w_ref, h_ref) = results
    for key in w_ref:
        np.testing.assert_array_equal(w_lazy[key], w_ref[key], err_msg=key)
    assert h_lazy["loss"] == h_ref["loss"] and h_lazy["val_accuracy"] == h_ref["val_accuracy"]


def test_split_validation_keeps_prepared_images_lazy():
    images, labels = _lenet_data(50)
    (train, _), (val, _) = split_validation(PreparedImages(images, pad=2), labels, 0.2, seed=1)
    (train_ref, _), (val_ref, _) = split_validation(prepare_images(images, pad=2), labels, 0.2, seed=1)
    assert isinstance(train, PreparedImages) and isinstance(val, PreparedImages)
    np.testing.assert_array_equal(np.asarray(train), train_ref)
    np.testing.assert_array_equal(np.asarray(val), val_ref)


def test_fit_on_a_taken_subset_gathers_through_its_index(dev):
    """A validation split of PreparedImages shares the uint8 array: the device gathers through
    the index (train part >= half) and copies a small part; weights equal the float32 run's."""
    images, labels = _lenet_data(400)
    lazy = PreparedImages(images, pad=2)
    big, small = lazy.take(np.arange(400) % 5 != 0), lazy.take(np.arange(400) % 5 == 0)
    assert big.source()[1] is not None and small.source()[1] is None
    for part, mask in ((big, np.arange(400) % 5 != 0), (small, np.arange(400) % 5 == 0)):
        results = []
        for data in (part, prepare_images(images[mask], pad=2)):
            clcnn.seed(4)
            net = clcnn.models.lenet5(device=dev)
            trainer = Trainer(net, clcnn.losses.SoftmaxCrossEntropy(), clcnn.optim.SGD(net, lr=0.05),
                              seed=2, progress=False, augment_shift=1)
            trainer.fit((data, labels[mask]), epochs=1, batch_size=32)
            results.append(net.state_dict())
        for key in results[1]:
            np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)
