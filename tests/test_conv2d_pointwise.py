"""Pointwise convolutions (1x1, stride 1, unpadded) as one matrix product per image
(clcnn/ops/conv2d_pointwise.py) against the float64 oracle with test_conv2d's bounds: forward
with every activation, input, weight and bias gradients over random shapes (planes one block
wide and more, channel counts off the register blocks), through conv2d_forward /
conv2d_backward as layers call them; the results independent of the order of the work items;
and which convolutions take this path."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from clcnn.ops import conv2d_pointwise as pointwise
from clcnn.ops.dense import _NT_BLOCK, _blocking
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close, outputs_in_reverse_item_order
from tests.test_conv2d import _bound
from tests.test_conv2d_rows import ACTIVATIONS, SLOPE


def _min_plane(device):
    tm, vw, nv = _blocking(device)
    return vw * nv


@st.composite
def cases(draw):
    """Batch 1-3, 1-4 groups of 1-12 input and 1-12 output channels each (one group: 1-40),
    planes of the smallest size the path takes (one register block of pixels) up to a few
    blocks, every activation, with and without bias."""
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 40))
    groups = draw(st.integers(1, 4))
    most = 40 if groups == 1 else 12
    c, o = groups * draw(st.integers(1, most)), groups * draw(st.integers(1, most))
    if groups == c:                 # depthwise: conv2d.py sends it to its own kernels
        c *= 2
    return dict(n=draw(st.integers(1, 3)), c=c, o=o, h=h, w=w, groups=groups,
                bias=draw(st.booleans()), activation=draw(st.sampled_from(list(ACTIVATIONS))),
                seed=draw(st.integers(0, 2 ** 31)))


def _check(device, n, c, o, h, w, bias, activation, seed, groups=1):
    w_shape = (o, c // groups, 1, 1)
    if not pointwise.supports(device, (n, c, h, w), w_shape, (1, 1), (0, 0, 0, 0), groups=groups):
        h = -(-_min_plane(device) // w)         # the smallest plane of this width that it takes
    assert pointwise.supports(device, (n, c, h, w), w_shape, (1, 1), (0, 0, 0, 0), groups=groups)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    gy = rng.standard_normal((n, o, h, w)).astype(np.float32)
    x64, w64, gy64 = x.astype(np.float64), wt.astype(np.float64), gy.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    pads = (0, 0, 0, 0)
    g = dict(groups=groups)
    pre = oracle.conv2d_forward(x64, w64, b64, (1, 1), pads, **g)
    abs_pre = oracle.conv2d_forward(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64), (1, 1), pads, **g)
    d = device.to_device
    y = ops.conv2d_forward(device, d(x), d(wt), None if b is None else d(b), (1, 1), pads, activation,
                           negative_slope=SLOPE, **g)
    assert_close(y.get(), ACTIVATIONS[activation](pre), _bound(abs_pre), 0.0, f"forward ({activation})")

    gx, gw, gb = ops.conv2d_backward(device, d(x), d(wt), d(gy), (1, 1), pads, has_bias=bias, **g)
    gx_ref, gw_ref, gb_ref = oracle.conv2d_backward(x64, w64, gy64, (1, 1), pads, **g)
    abs_gx, abs_gw, abs_gb = oracle.conv2d_backward(np.abs(x64), np.abs(w64), np.abs(gy64), (1, 1), pads, **g)
    assert_close(gx.get(), gx_ref, _bound(abs_gx), 0.0, "input gradient")
    assert_close(gw.get(), gw_ref, _bound(abs_gw), 0.0, "weight gradient")
    if bias:
        assert_close(gb.get(), gb_ref, _bound(abs_gb), 0.0, "bias gradient")
    else:
        assert gb is None


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(6, settings.default.max_examples // 2))
@given(case=cases())
def test_matches_oracle(device, case):
    _check(device, **case)


@pytest.mark.parametrize("n, c, o, h, w", [(64, 16, 96, 32, 32), (4, 144, 24, 8, 8), (2, 3, 17, 5, 7)])
def test_mobilenet_like_layers(device, n, c, o, h, w):
    """An inverted residual block's expansion and projection, and a plane just over one block."""
    _check(device, n, c, o, h, w, True, "relu6", seed=n + c + o)


def test_shufflenet_like_grouped_layer(device):
    """ShuffleNet's grouped 1x1 (3 groups of 80 -> 80) with the weight gradient's slices."""
    _check(device, 4, 240, 240, 7, 7, False, "relu", seed=3, groups=3)


@pytest.mark.parametrize("n, c, o, h, w", [(2, 5, 11, 5, 9), (1, 33, 17, 3, 41), (3, 8, 24, 8, 8)])
def test_row_blocks_first(device, monkeypatch, n, c, o, h, w):
    """Products whose right-hand matrix outgrows the cache run their row blocks first
    (rows_first, the grid's first two sizes swapped): forced here on small shapes, with
    partial row blocks and overlapping last column blocks."""
    monkeypatch.setattr(pointwise, "_ROWS_FIRST_BYTES", 0)
    _check(device, n, c, o, h, w, True, "leaky_relu", seed=c * o)


@pytest.mark.parametrize("slices", [1, 2, 5])
def test_weight_gradient_over_slices_of_the_batch(device, monkeypatch, slices):
    """The weight gradient sums its images in slices (one slice of five images, slices of three
    and two, one image each) and then the slices."""
    nt_rows, nt_cols = _NT_BLOCK[_blocking(device)[1]]
    items = -(-7 // nt_cols) * -(-7 // nt_rows)       # 6 input channels and the bias, 7 outputs
    monkeypatch.setattr(pointwise, "_SLICE_ITEMS", items * slices)
    _check(device, 5, 6, 7, 1, _min_plane(device), True, None, seed=slices)


def test_results_do_not_depend_on_work_item_order(device, monkeypatch):
    """The last column block of each image overlaps its neighbour (planes that are not a
    multiple of the block): both store the same sums, so any order of the items gives the same
    bits; the weight gradient's per-image sums are added in image order."""
    rng = np.random.default_rng(3)
    n, c, o, h, w = 2, 5, 11, 5, 9
    assert pointwise.supports(device, (n, c, h, w), (o, c, 1, 1), (1, 1), (0, 0, 0, 0))
    x, wt = device.to_device(rng.standard_normal((n, c, h, w))), device.to_device(rng.standard_normal((o, c, 1, 1)))
    b, gy = device.to_device(rng.standard_normal(o)), device.to_device(rng.standard_normal((n, o, h, w)))
    pads = (0, 0, 0, 0)
    for rows_first_bytes in (pointwise._ROWS_FIRST_BYTES, 0):      # the grid's both orders
        monkeypatch.setattr(pointwise, "_ROWS_FIRST_BYTES", rows_first_bytes)
        for call in (lambda: ops.conv2d_forward(device, x, wt, b, (1, 1), pads, "tanh"),
                     lambda: ops.conv2d_backward(device, x, wt, gy, (1, 1), pads)):
            once, reversed_order = outputs_in_reverse_item_order(device, call)
            for a, r in zip(once, reversed_order):
                assert np.array_equal(a, r)


def test_supports(device):
    plane = _min_plane(device)
    wide = (2, 8, 1, plane)
    assert pointwise.supports(device, wide, (4, 8, 1, 1), (1, 1), (0, 0, 0, 0)) == device.is_cpu
    if not device.is_cpu:
        return
    assert not pointwise.supports(device, (2, 8, 1, plane - 1), (4, 8, 1, 1), (1, 1), (0, 0, 0, 0))  # plane
    assert not pointwise.supports(device, wide, (4, 8, 3, 3), (1, 1), (0, 0, 0, 0))      # kernel
    assert not pointwise.supports(device, wide, (4, 8, 1, 1), (2, 2), (0, 0, 0, 0))      # stride
    assert not pointwise.supports(device, wide, (4, 8, 1, 1), (1, 1), (1, 1, 1, 1))      # padding
    assert not pointwise.supports(device, wide, (4, 8, 1, 1), (1, 1), (0, 0, 0, 0), dilation=(2, 2))
    assert pointwise.supports(device, wide, (4, 4, 1, 1), (1, 1), (0, 0, 0, 0), groups=2)         # grouped
    assert not pointwise.supports(device, wide, (8, 1, 1, 1), (1, 1), (0, 0, 0, 0), groups=8)     # depthwise
    assert not pointwise.supports(device, wide, (6, 2, 1, 1), (1, 1), (0, 0, 0, 0), groups=4)     # 6 % 4


def test_layers_take_this_path(device, monkeypatch):
    """conv2d_forward and conv2d_backward route a pointwise convolution here (a forced
    algorithm does not), so the oracle tests above test what layers run."""
    if not device.is_cpu:
        pytest.skip("the pointwise kernels serve CPU devices")
    calls = []
    for name in ("forward", "input_grad", "weight_grad"):
        original = getattr(pointwise, name)
        monkeypatch.setattr(pointwise, name, lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    rng = np.random.default_rng(0)
    shape = (2, 4, 4, _min_plane(device))
    x, wt = device.to_device(rng.standard_normal(shape)), device.to_device(rng.standard_normal((6, 4, 1, 1)))
    gy = device.to_device(rng.standard_normal((2, 6) + shape[2:]))
    ops.conv2d_forward(device, x, wt, None, (1, 1), (0, 0, 0, 0))
    ops.conv2d_backward(device, x, wt, gy, (1, 1), (0, 0, 0, 0), has_bias=False)
    assert calls == ["forward", "weight_grad", "input_grad"]
    calls.clear()
    ops.conv2d_forward(device, x, wt, None, (1, 1), (0, 0, 0, 0), algorithm="direct")
    assert calls == []
