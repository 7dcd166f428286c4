"""Winograd convolution (kernels/winograd.cl, clcnn/ops/winograd.py): its transform matrices
in exact arithmetic, the forward pass and both gradients against the float64 oracle over
random shapes, and when conv2d runs it."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from clcnn.ops import conv2d as ops
from clcnn.ops import winograd
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close


def _bound(abs_ref):
    """Tolerance against the float64 oracle (abs_ref: the oracle on |x|, |w|, |gy|). The
    transforms multiply by entries up to 8 (AT of F(4x4, 3x3)) and 5.25 (BT of F(4x4, 5x5))
    before and after the sums, so their rounding reaches about 20x the direct form's: measured
    up to 2.5e-5 of max |y| (64 channels, 5x5), 4e-6 of max abs_ref. 2e-5 of max abs_ref is
    the direct kernels' bound of tests/test_conv2d.py five times over, 4e-7 the tanh."""
    return 1e-4 * float(np.max(abs_ref, initial=0.0)) + 4e-7


def assert_forward_matches(y, x, wt, b, pads, activation, label):
    """y against the oracle's stride-1 forward of x (float64) with activation applied; returns
    the oracle's output before the activation."""
    pre = oracle.conv2d_forward(x, wt, b, (1, 1), pads)
    act = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0.0), "tanh": np.tanh}[activation]
    abs_b = None if b is None else np.abs(b)
    assert_close(y, act(pre), _bound(oracle.conv2d_forward(np.abs(x), np.abs(wt), abs_b, (1, 1), pads)), 0.0,
                 label)
    return pre


def winograd_backward(device, x, wt, gy, pads, bias):
    """conv2d_backward (stride 1) with Winograd forced, on float32 copies of x, wt and gy."""
    return ops.conv2d_backward(device, *(device.to_device(a.astype(np.float32)) for a in (x, wt, gy)), (1, 1),
                               pads, has_bias=bias, algorithm="winograd")


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (2, 5), (4, 5), (3, 4), (5, 4)])
def test_matrices_compute_the_correlation_exactly(m, r):
    """y = AT [(G g) * (BT d)] equals y[i] = sum_k g[k] d[i + k] in exact fractions, for every
    unit input and filter (so for all of them, the map being bilinear)."""
    bt, g, at = winograd.matrices(m, r)
    a = m + r - 1
    for p in range(a):
        for q in range(r):
            d = [Fraction(int(k == p)) for k in range(a)]
            f = [Fraction(int(k == q)) for k in range(r)]
            gf = [sum(g[i][k] * f[k] for k in range(r)) for i in range(a)]
            bd = [sum(bt[i][k] * d[k] for k in range(a)) for i in range(a)]
            y = [sum(at[i][k] * gf[k] * bd[k] for k in range(a)) for i in range(m)]
            assert y == [int(p == i + q) for i in range(m)], (p, q, y)


@st.composite
def cases(draw):
    k = draw(st.sampled_from(sorted(winograd.TILE)))
    pads = tuple(draw(st.integers(0, k - 1)) for _ in range(4))
    h = draw(st.integers(max(1, k - pads[0] - pads[1]), 14))
    w = draw(st.integers(max(1, k - pads[2] - pads[3]), 14))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 12)), h, w, draw(st.integers(1, 12)), k, pads,
            draw(st.sampled_from([None, "relu", "tanh"])), draw(st.booleans()), draw(st.integers(0, 2**31)))


@settings(deadline=None)
@given(cases())
def test_winograd_matches_the_oracle(device, case):
    """Forward (bias and activation fused), input, weight and bias gradients, algorithm=
    "winograd" forced: 3x3 and 5x5 kernels, asymmetric padding up to k - 1, odd and non-square
    images whose outputs end inside a tile."""
    n, c, h, w, o, k, pads, activation, bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c, k, k)) / k
    b = rng.standard_normal(o) if bias else None
    y = ops.conv2d_forward(device, device.to_device(x.astype(np.float32)),
                           device.to_device(wt.astype(np.float32)),
                           None if b is None else device.to_device(b.astype(np.float32)), (1, 1), pads,
                           activation=activation, algorithm="winograd").get()
    pre = assert_forward_matches(y, x, wt, b, pads, activation, f"winograd forward {case}")

    gy = rng.standard_normal(pre.shape)
    gx, gw, gb = winograd_backward(device, x, wt, gy, pads, bias)
    gx_ref, gw_ref, gb_ref = oracle.conv2d_backward(x, wt, gy, (1, 1), pads)
    abs_gx, abs_gw, abs_gb = oracle.conv2d_backward(np.abs(x), np.abs(wt), np.abs(gy), (1, 1), pads)
    assert_close(gx.get(), gx_ref, _bound(abs_gx), 0.0, f"winograd input gradient {case}")
    assert_close(gw.get(), gw_ref, _bound(abs_gw), 0.0, f"winograd weight gradient {case}")
    if bias:
        assert_close(gb.get(), gb_ref, _bound(abs_gb), 0.0, f"bias gradient {case}")
    else:
        assert gb is None


def test_wide_layers_run_winograd_by_default(device, monkeypatch):
    """On a CPU, 64 channels in and out (3x3, stride 1, 64x64 planes) go to Winograd in the
    forward (from 16x16 planes at 64 channels) and in both gradients (the input gradient from
    8192 input pixels); 16 channels take none; the results match the oracle."""
    if not device.is_cpu:
        pytest.skip("Winograd is chosen automatically on CPU devices only")
    calls = []
    for name in ("forward", "input_grad", "weight_grad"):
        original = getattr(winograd, name)
        monkeypatch.setattr(winograd, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    rng = np.random.default_rng(5)
    for c, expected in ((64, ["forward", "weight_grad", "input_grad"]), (16, [])):
        calls.clear()
        x = rng.standard_normal((2, c, 64, 64)).astype(np.float32)
        wt = (rng.standard_normal((c, c, 3, 3)) / 24).astype(np.float32)
        gy = rng.standard_normal((2, c, 64, 64)).astype(np.float32)
        y = ops.conv2d_forward(device, device.to_device(x), device.to_device(wt), None, (1, 1), (1, 1, 1, 1))
        gx, gw, _ = ops.conv2d_backward(device, device.to_device(x), device.to_device(wt),
                                        device.to_device(gy), (1, 1), (1, 1, 1, 1), has_bias=False)
        assert calls == expected
        x64, w64 = x.astype(np.float64), wt.astype(np.float64)
        assert_close(y.get(), oracle.conv2d_forward(x64, w64, None, (1, 1), (1, 1, 1, 1)),
                     _bound(oracle.conv2d_forward(np.abs(x64), np.abs(w64), None, (1, 1), (1, 1, 1, 1))),
                     0.0, f"forward, {c} channels")
        gx_ref = oracle.conv2d_backward(x64, w64, gy.astype(np.float64), (1, 1), (1, 1, 1, 1))[0]
        abs_gx = oracle.conv2d_backward(np.abs(x64), np.abs(w64), np.abs(gy.astype(np.float64)), (1, 1),
                                        (1, 1, 1, 1))[0]
        assert_close(gx.get(), gx_ref, _bound(abs_gx), 0.0, f"input gradient, {c} channels")
        gw_ref = oracle.conv2d_backward(x64, w64, gy.astype(np.float64), (1, 1), (1, 1, 1, 1))[1]
        abs_gw = oracle.conv2d_backward(np.abs(x64), np.abs(w64), np.abs(gy.astype(np.float64)), (1, 1),
                                        (1, 1, 1, 1))[1]
        assert_close(gw.get(), gw_ref, _bound(abs_gw), 0.0, f"weight gradient, {c} channels")


@pytest.mark.parametrize("stride,dilation,k,pads", [((2, 2), (1, 1), 3, (1, 1, 1, 1)),
                                                   ((1, 1), (2, 2), 3, (2, 2, 2, 2)),
                                                   ((1, 1), (1, 1), 7, (3, 3, 3, 3)),
                                                   ((1, 1), (1, 1), 3, (3, 0, 0, 0))])
def test_forced_winograd_refuses_what_it_cannot_run(device, stride, dilation, k, pads):
    x = device.to_device(np.zeros((1, 2, 9, 9), np.float32))
    w = device.to_device(np.zeros((2, 2, k, k), np.float32))
    with pytest.raises(ValueError, match="winograd.*'direct'"):
        ops.conv2d_forward(device, x, w, None, stride, pads, algorithm="winograd", dilation=dilation)


def test_forward_winograd_pays_from_128_channels_at_3x3_and_64_at_5x5_or_larger_planes():
    """winograd.pays' forward rule, by channels, kernel size and plane (the gradients keep 64)."""
    assert not winograd.pays("forward", (64, 64, 8, 8), (64, 64, 3, 3))
    assert winograd.pays("forward", (32, 64, 16, 16), (64, 64, 3, 3))
    assert winograd.pays("forward", (64, 128, 8, 8), (128, 128, 3, 3))
    assert winograd.pays("forward", (32, 128, 16, 16), (128, 128, 3, 3))
    assert winograd.pays("forward", (32, 64, 16, 16), (64, 64, 5, 5))
    assert not winograd.pays("forward", (32, 32, 16, 16), (32, 32, 5, 5))
    assert winograd.pays("weight", (32, 64, 16, 16), (64, 64, 3, 3))
    assert winograd.pays("input", (32, 64, 16, 16), (64, 64, 3, 3))


def test_winograd_needs_enough_tiles_to_repay_the_weight_transform():
    """Batch-1 inference on small planes stays direct (ResNet-50's last stage: 4 tiles of 4x4),
    the forward and the input gradient alike; the weight gradient transforms no weights."""
    assert not winograd.pays("forward", (1, 512, 7, 7), (512, 512, 3, 3))
    assert not winograd.pays("input", (1, 512, 7, 7), (512, 512, 3, 3))
    assert not winograd.pays("forward", (1, 256, 14, 14), (256, 256, 3, 3))       # 16 tiles
    assert winograd.pays("forward", (8, 512, 7, 7), (512, 512, 3, 3))             # 32 tiles
    assert winograd.pays("forward", (1, 128, 28, 28), (128, 128, 3, 3))           # 49 tiles
    assert winograd.pays("weight", (1, 512, 7, 7), (512, 512, 3, 3))
