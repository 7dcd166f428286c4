"""The fused and batched training-step kernels vs the NumPy oracle (or vs the plain kernels
they replace): tiled average pooling with a fused activation backward, the fused softmax
cross-entropy training kernel, the multi-tensor SGD update and the device-side batch gather."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from clcnn.datasets.batches import BACKGROUND, shift_images
from clcnn.ops import data as data_ops
from clcnn.ops import loss as loss_ops
from clcnn.ops import optim as optim_ops
from clcnn.ops import pool as pool_ops
from clcnn.oracle import activation as o_act
from clcnn.oracle import loss as o_loss
from clcnn.oracle import pool as o_pool
from tests.helpers import assert_close


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 13), st.integers(1, 19), st.integers(1, 4),
       st.integers(1, 4), st.sampled_from([None, "tanh", "relu", "sigmoid", "leaky_relu"]),
       st.integers(0, 2 ** 31))
def test_tiled_avgpool_and_fused_activation_backward(device, n, c, h, w, kh, kw, act, seed):
    # Windows that tile the plane (stride == kernel, no padding) take the *_tiled kernels,
    # including planes whose size is not a multiple of the window (floor output).
    if kh > h or kw > w:
        return
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, c, h, w)).astype(np.float32)
    args = ((kh, kw), (kh, kw), (0, 0, 0, 0))
    y = pool_ops.avgpool2d_forward(device, device.to_device(x), *args).get()
    # Tolerance: a mean of at most 16 float32 values, a few ulps of the magnitude (<= 1).
    assert_close(y, o_pool.avgpool2d_forward(x.astype(np.float64), *args), 1e-6, 1e-6, "forward")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    expected = o_pool.avgpool2d_backward(gy.astype(np.float64), x.shape, *args)
    kwargs = {}
    if act:
        # x plays the activation's output here; values in (0, 1) suit every activation's f'(y).
        x = rng.uniform(0.01, 0.99, x.shape).astype(np.float32)
        expected = o_act.activation_backward(act, x.astype(np.float64), expected)
        kwargs = dict(activation=act, act_output=device.to_device(x))
    gx = pool_ops.avgpool2d_backward(device, device.to_device(gy), x.shape, *args, **kwargs).get()
    assert_close(gx, expected, 1e-6, 1e-5, "backward")


@pytest.mark.parametrize("n,k", [(1, 2), (7, 10), (64, 10), (33, 3)])
def test_softmax_cross_entropy_train_kernel(device, n, k):
    rng = np.random.default_rng(n * 100 + k)
    logits = (rng.standard_normal((n, k)) * 3).astype(np.float32)
    logits[0, :] = 0.5          # a tie: argmax is the first maximum, as numpy
    labels = rng.integers(0, k, n).astype(np.int32)
    stats = device.zeros((3, 2))
    grad = loss_ops.softmax_cross_entropy_train(device, device.to_device(logits),
                                                device.to_device(labels, dtype=np.int32), stats, 1)
    loss, probs = o_loss.softmax_cross_entropy_forward(logits.astype(np.float64), labels)
    # Tolerance: exp/log in float32 over at most 10 classes, summed over n rows.
    assert_close(grad.get(), o_loss.softmax_cross_entropy_backward(probs, labels), 1e-6, 1e-5, "dlogits")
    got = stats.get()
    assert_close(got[1, 0], loss, 1e-6, 1e-5, "loss")
    assert got[1, 1] == (logits.argmax(axis=1) == labels).sum()
    assert not got[0].any() and not got[2].any()


def test_sgd_update_many_equals_one_launch_per_tensor(device):
    rng = np.random.default_rng(0)
    lenet = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (0,), (120, 400), (120,), (84, 120), (84,), (10, 84), (10,)]
    shapes = lenet + [(17,), (1,), (0,)] + lenet    # 25 tensors: three launches of up to twelve
    for config in [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
                   dict(momentum=0.0, weight_decay=0.1), dict(momentum=0.5, dampening=0.3)]:
        ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        one = [[device.to_device(p), device.to_device(g), device.zeros(p.shape)] for p, g in zip(ps, gs)]
        many = [[device.to_device(p), device.to_device(g), device.zeros(p.shape)] for p, g in zip(ps, gs)]
        for step in range(3):
            for p, g, b in one:
                optim_ops.sgd_update(device, p, g, b if config["momentum"] else None, 0.1,
                                     first_step=step == 0, **config)
            bufs = [b for _, _, b in many] if config["momentum"] else None
            optim_ops.sgd_update_many(device, [p for p, _, _ in many], [g for _, g, _ in many], bufs, 0.1,
                                      first_step=step == 0, **config)
        for (p1, _, b1), (p2, _, b2) in zip(one, many):
            assert np.array_equal(p1.get(), p2.get()) and np.array_equal(b1.get(), b2.get())


@pytest.mark.parametrize("shifted", [False, True])
def test_batch_gather_equals_host_indexing_and_shift(device, shifted):
    rng = np.random.default_rng(3)
    images = rng.standard_normal((50, 2, 9, 11)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    order = rng.permutation(50)
    shifts = rng.integers(-3, 4, (50, 2)) if shifted else None
    x, y = data_ops.batch_gather(device, device.to_device(images), device.to_device(labels, dtype=np.int32),
                                 device.to_device(order, dtype=np.int32), 20, 17,
                                 None if shifts is None else device.to_device(shifts, dtype=np.int32),
                                 BACKGROUND)
    expected = images[order[20:37]]
    if shifted:
        expected = shift_images(expected, shifts[20:37])
    assert np.array_equal(x.get(), expected)
    assert np.array_equal(y.get(), labels[order[20:37]])
