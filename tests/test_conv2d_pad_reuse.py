"""The forward's padded input reused by the weight gradient (clcnn/ops/conv2d.py
_PaddedInputs): results against the oracle with and without the kept copy, an array refilled
in place between forwards, other paddings, and the copies freed with their input."""
import gc

import numpy as np
from hypothesis import given, strategies as st

from clcnn.ops import conv2d as ops
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close


def _bound(x, w, gy, stride, pads):
    """2e-5 of the largest absolute sum, as tests/test_conv2d.py's _bound."""
    ref = oracle.conv2d_backward(np.abs(x), np.abs(w), np.abs(gy), stride, pads)[1]
    return 2e-5 * float(np.abs(ref).max(initial=0.0)) + 4e-7


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 9), st.integers(3, 9), st.integers(3, 9),
       st.integers(0, 2), st.integers(1, 2), st.integers(0, 2 ** 31))
def test_weight_gradient_after_a_forward_matches_oracle_also_after_refill(device, n, c, o, h, w, pad, s, seed):
    rng = np.random.default_rng(seed)
    k = 3
    pads, stride = (pad, pad, pad, pad), (s, s)
    x1, x2 = (rng.standard_normal((n, c, h, w)).astype(np.float32) for _ in range(2))
    wt = rng.standard_normal((o, c, k, k)).astype(np.float32)
    xd, wd = device.to_device(x1), device.to_device(wt)
    y = ops.conv2d_forward(device, xd, wd, None, stride, pads, algorithm="direct")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    _, gw, _ = ops.conv2d_backward(device, xd, wd, device.to_device(gy), stride, pads, need_input_grad=False,
                                   has_bias=False, algorithm="direct")
    want = oracle.conv2d_backward(x1.astype(np.float64), wt.astype(np.float64), gy.astype(np.float64), stride, pads)[1]
    assert_close(gw.get(), want, _bound(x1, wt, gy, stride, pads), 0, "gw after the forward")
    # a forward kept a copy of x1; refilled in place, then a new forward: the backward sees
    # the new values
    ops.conv2d_forward(device, xd, wd, None, stride, pads, algorithm="direct")
    xd.set(x2)
    ops.conv2d_forward(device, xd, wd, None, stride, pads, algorithm="direct")
    _, gw, _ = ops.conv2d_backward(device, xd, wd, device.to_device(gy), stride, pads, need_input_grad=False,
                                   has_bias=False, algorithm="direct")
    want = oracle.conv2d_backward(x2.astype(np.float64), wt.astype(np.float64), gy.astype(np.float64), stride, pads)[1]
    assert_close(gw.get(), want, _bound(x2, wt, gy, stride, pads), 0, "gw after a refill and a new forward")
    # a second backward (the copy was used up) pads afresh
    _, gw, _ = ops.conv2d_backward(device, xd, wd, device.to_device(gy), stride, pads, need_input_grad=False,
                                   has_bias=False, algorithm="direct")
    assert_close(gw.get(), want, _bound(x2, wt, gy, stride, pads), 0, "gw of a second backward")


def test_a_kept_copy_serves_only_its_padding_and_dies_with_its_input(device):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    wt = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    xd, wd = device.to_device(x), device.to_device(wt)
    before = ops._PADDED.bytes
    ops.conv2d_forward(device, xd, wd, None, (1, 1), (1, 1, 1, 1), algorithm="direct")
    assert ops._PADDED.bytes == before + 2 * 3 * 8 * 8 * 4
    gy = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)
    pads = (1, 1, 2, 2)          # other padding: not the kept copy
    _, gw, _ = ops.conv2d_backward(device, xd, wd, device.to_device(gy), (1, 1), pads, need_input_grad=False,
                                   has_bias=False, algorithm="direct")
    want = oracle.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), gy.astype(np.float64), (1, 1), pads)[1]
    assert_close(gw.get(), want, _bound(x, wt, gy, (1, 1), pads), 0, "gw with other padding")
    del xd
    gc.collect()
    assert ops._PADDED.bytes == before
