"""Results that do not depend on the order in which the device runs work items: every op's
launches run again with each work item launched alone, last to first, and must reproduce one
launch's outputs bit for bit. PoCL's threads take work-groups in any order on a loaded
machine, so a kernel whose overlapping blocks stored different sums would make runs (and
replayed steps, tests/test_replay.py) differ in their last bits. conv2d_rows' forward has its
own cases in tests/test_conv2d_rows.py."""
import numpy as np
import pytest

from clcnn.ops import conv2d, conv2d_rows, dense, pool
from tests.helpers import outputs_in_reverse_item_order


def _arrays(device, *shapes):
    rng = np.random.default_rng(sum(map(sum, shapes)))
    return [device.to_device(rng.standard_normal(s).astype(np.float32)) for s in shapes]


CASES = {
    # direct kernels: pixel blocks shifted back to a row's end, padding inside the kernel
    "conv forward, asymmetric padding": (
        ((3, 6, 9, 11), (8, 6, 3, 3), (8,)),
        lambda d, x, w, b: conv2d.conv2d_forward(d, x, w, b, (1, 1), (2, 0, 1, 2), "tanh", algorithm="direct")),
    "conv forward, stride 2": (
        ((3, 6, 9, 11), (8, 6, 3, 3), (8,)),
        lambda d, x, w, b: conv2d.conv2d_forward(d, x, w, b, (2, 2), (1, 1, 1, 1), algorithm="direct")),
    "conv forward, 2x2 average pool": (
        ((3, 6, 10, 10), (16, 6, 3, 3), (16,)),
        lambda d, x, w, b: conv2d.conv2d_forward(d, x, w, b, (1, 1), (1, 1, 1, 1), "relu", algorithm="direct",
                                                 pool="avg")),
    "conv backward": (
        ((3, 6, 9, 11), (8, 6, 3, 3), (3, 8, 9, 11)),
        lambda d, x, w, gy: conv2d.conv2d_backward(d, x, w, gy, (1, 1), (1, 1, 1, 1), algorithm="direct")),
    "conv backward, stride 2": (
        ((3, 6, 9, 11), (8, 6, 3, 3), (3, 8, 5, 6)),
        lambda d, x, w, gy: conv2d.conv2d_backward(d, x, w, gy, (2, 2), (1, 1, 1, 1), algorithm="direct")),
    "winograd backward": (
        ((2, 64, 10, 10), (64, 64, 3, 3), (2, 64, 10, 10)),
        lambda d, x, w, gy: conv2d.conv2d_backward(d, x, w, gy, (1, 1), (1, 1, 1, 1), algorithm="winograd")),
    "depthwise backward": (
        ((2, 8, 11, 13), (8, 1, 3, 3), (2, 8, 11, 13)),
        lambda d, x, w, gy: conv2d.conv2d_backward(d, x, w, gy, (1, 1), (1, 1, 1, 1), groups=8)),
    "depthwise backward, stride 2": (
        ((2, 8, 11, 13), (8, 1, 3, 3), (2, 8, 6, 7)),
        lambda d, x, w, gy: conv2d.conv2d_backward(d, x, w, gy, (2, 2), (1, 1, 1, 1), groups=8)),
    "conv2d_rows weight gradient": (
        ((3, 2, 13, 21), (3, 5, 14, 20)),
        lambda d, x, gy: conv2d_rows.weight_grad(d, x, gy, (5, 2, 3, 3), (1, 1), (1, 2, 0, 1))),
    # GEMM: a last column block shifted back over its neighbour
    "dense forward": (
        ((37, 70), (45, 70), (45,)), lambda d, x, w, b: dense.dense_forward(d, x, w, b, "tanh")),
    "dense backward": (
        ((37, 70), (45, 70), (37, 45)), lambda d, x, w, gy: dense.dense_backward(d, x, w, gy, True, True)),
    "max pool, overlapping windows": (
        ((3, 5, 9, 11),), lambda d, x: pool.maxpool2d_forward(d, x, (3, 3), (2, 2), (0, 0, 0, 0))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_do_not_depend_on_the_order_of_work_items(device, name):
    shapes, call = CASES[name]
    args = _arrays(device, *shapes)
    once, reversed_ = outputs_in_reverse_item_order(device, lambda: call(device, *args))
    assert once
    for k, (a, b) in enumerate(zip(once, reversed_)):
        np.testing.assert_array_equal(b, a, err_msg=f"{name}: output {k}")
