"""The im2col forward (clcnn/ops/conv2d_im2col.py: the input's windows as columns, then a matrix
product with the weight as stored) against the float64 oracle over random shapes, strides,
dilations, padding and activations, and where the automatic choice takes it."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from clcnn.ops import conv2d_im2col
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close, launched_kernels as launched
from tests.test_conv2d import ACTIVATIONS, _bound


def _oracle(x, w, b, stride, pads, dilation, activation):
    as64 = (lambda a: None if a is None else a.astype(np.float64))
    ref = oracle.conv2d_forward(as64(x), as64(w), as64(b), stride, pads, dilation, 1)
    absolute = oracle.conv2d_forward(np.abs(as64(x)), np.abs(as64(w)), None if b is None else np.abs(as64(b)),
                                     stride, pads, dilation, 1)
    return ACTIVATIONS[activation](ref), _bound(absolute)


@st.composite
def cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h, w = draw(st.integers(dilation[0] * (kh - 1) + 1, 20)), draw(st.integers(dilation[1] * (kw - 1) + 1, 20))
    return ((draw(st.integers(1, 3)), draw(st.integers(1, 8)), h, w), (draw(st.integers(1, 20)),), (kh, kw),
            stride, pads, dilation, draw(st.booleans()), draw(st.sampled_from(sorted(ACTIVATIONS, key=str))),
            draw(st.integers(0, 2 ** 31)))


@settings(deadline=None)
@given(case=cases())
def test_im2col_forward_matches_oracle(device, case):
    x_shape, (o,), (kh, kw), stride, pads, dilation, bias, activation, seed = case
    w_shape = (o, x_shape[1], kh, kw)
    if not device.is_cpu:
        pytest.skip("the im2col forward runs the pointwise kernels, which run on CPUs")
    assume(conv2d_im2col.supports(device, x_shape, w_shape, stride, pads, dilation))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    y = ops.conv2d_forward(device, device.to_device(x), device.to_device(w),
                           None if b is None else device.to_device(b), stride, pads, activation=activation,
                           negative_slope=0.1, algorithm="im2col", dilation=dilation)
    want, bound = _oracle(x, w, b, stride, pads, dilation, activation)
    assert_close(y.get(), want, bound, 0.0, f"im2col forward, {activation}")


@pytest.mark.parametrize("x_shape,w_shape,stride,pads,taken", [
    ((1, 512, 7, 7), (512, 512, 3, 3), (1, 1), (1, 1, 1, 1), True),       # ResNet-50's last 3x3s, batch 1
    ((1, 1024, 14, 14), (512, 1024, 1, 1), (2, 2), (0, 0, 0, 0), True),   # its strided 1x1 shortcut
    ((2, 256, 14, 14), (256, 256, 3, 3), (1, 1), (1, 1, 1, 1), False),    # twice the pixels: direct
    ((64, 64, 8, 8), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), False),        # ResNet-20's last stage, batch 64
])
def test_automatic_choice(device, x_shape, w_shape, stride, pads, taken):
    if not device.is_cpu:
        pytest.skip("a CPU choice")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    names = []
    with launched(names):
        y = ops.conv2d_forward(device, device.to_device(x), device.to_device(w), device.to_device(b), stride, pads,
                               activation="relu")
    assert ("conv2d_im2col" in names) == taken, names
    want, bound = _oracle(x, w, b, stride, pads, (1, 1), "relu")
    assert_close(y.get(), want, bound, 0.0, "automatic forward")


def test_forcing_it_where_it_cannot_run_is_refused(device):
    x = device.zeros((1, 4, 4, 4))
    with pytest.raises(ValueError, match="'im2col' needs"):
        ops.conv2d_forward(device, x, device.zeros((4, 4, 3, 3)), None, (1, 1), (1, 1, 1, 1), algorithm="im2col")
    with pytest.raises(ValueError, match="'im2col' needs"):
        ops.conv2d_forward(device, device.zeros((1, 4, 12, 12)), device.zeros((4, 2, 3, 3)), None, (1, 1),
                           (1, 1, 1, 1), algorithm="im2col", groups=2)


def test_backward_of_a_forced_im2col_chooses_its_own_forms(device):
    """"im2col" is a forward form: conv2d_backward given it chooses as with None."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 6, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    args = (device, device.to_device(x), device.to_device(w), device.to_device(gy), (1, 1), (1, 1, 1, 1))
    forced = ops.conv2d_backward(*args, algorithm="im2col")
    auto = ops.conv2d_backward(*args)
    for a, b in zip(forced, auto):
        np.testing.assert_array_equal(a.get(), b.get())
