"""Depthwise Conv2D (groups == input channels, any channel multiplier) on its own kernels
(kernels/depthwise.cl) vs the NumPy oracle, with the same cases and bounds as the general
conv tests (tests/test_conv2d.py)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from clcnn.errors import ShapeError
from clcnn.ops import conv2d as ops
from clcnn.ops import depthwise
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close
from tests.test_conv2d import _bound, _check_case, grouped_cases


# Two thirds of the usual examples: each drawn shape compiles its own depthwise kernels
# (4-5 s apiece on the 2-core CI machine); CLCNN_HYPOTHESIS_EXAMPLES raises both.
@settings(max_examples=max(6, settings.default.max_examples * 2 // 3))
@given(case=grouped_cases(depthwise=True))
def test_depthwise_matches_oracle(device, case):
    """conv2d with groups == C picks the depthwise kernels by itself (algorithm None)."""
    _check_case(device, None, case)


# Each new shape costs PoCL seconds of compiling (the row-block kernels unroll whole rows),
# so the variants below share the example budget: the automatic choice gets the full count.
@settings(max_examples=max(4, settings.default.max_examples // 4))
@given(case=grouped_cases(depthwise=True))
def test_depthwise_forced_matches_oracle(device, case):
    _check_case(device, "depthwise", case)


@pytest.fixture(params=[(8, 1), (16, 1), (16, 4)], ids=lambda p: f"float{p[0]}-{p[1]}vec")
def rows_plan(request, device, monkeypatch):
    """The row-block kernels at both vector widths, with blocks of one vector (many blocks a
    plane: first, middle, last and runtime-checked ones) and of four (whole small planes)."""
    vw, vectors = request.param
    monkeypatch.setattr(ops, "MAX_VECTOR_WIDTH", vw)
    if ops.vector_limits(device)[0] != vw:
        pytest.skip(f"this device does not take float{vw}")
    monkeypatch.setattr(depthwise, "ROWS_VECTORS", vectors)
    return request.param


# The fixture sets the plan once for all examples, as intended.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 5))
@given(case=grouped_cases(depthwise=True))
def test_depthwise_rows_matches_oracle(device, rows_plan, case):
    """Rows wider than the block fall back to the float8-per-item kernels, which
    test_depthwise_per_item_matches_oracle covers alone."""
    _check_case(device, "depthwise", case)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 4))
@given(case=grouped_cases(depthwise=True))
def test_depthwise_per_item_matches_oracle(device, monkeypatch, case):
    monkeypatch.setattr(depthwise, "ROWS_VECTORS", 0)
    _check_case(device, "depthwise", case)


def test_depthwise_row_blocks():
    """Blocks of about ROWS_VECTORS vectors, equal in a plane, whole stride multiples for the
    input gradient, and none for rows wider than the block."""
    assert depthwise._block_rows(32, 32, 16) == 2
    assert depthwise._block_rows(16, 16, 16) == 4
    assert depthwise._block_rows(4, 4, 16) == 4            # a whole plane in one vector
    assert depthwise._block_rows(10, 8, 8) == 4            # 10 rows as 4, 4, 2
    assert depthwise._block_rows(9, 8, 8, 2) == 2          # 3 rows a block, less one for stride 2
    assert depthwise._block_rows(40, 65, 16) is None


@pytest.mark.parametrize("n,c,h,m,stride,activation", [
    (4, 16, 32, 1, 1, "relu"),     # MobileNet-style 3x3, pad 1
    (3, 32, 16, 1, 2, None),
    (2, 64, 8, 2, 1, "tanh"),      # channel multiplier 2
    (5, 256, 4, 1, 1, "relu"),
    (2, 24, 7, 1, 2, "sigmoid"),   # odd size: the last float8 of a row is partly outside
])
def test_depthwise_network_shapes(device, n, c, h, m, stride, activation):
    rng = np.random.default_rng(c * 10 + h)
    x = rng.standard_normal((n, c, h, h))
    w = rng.standard_normal((c * m, 1, 3, 3))
    b = rng.standard_normal(c * m)
    args = ((stride, stride), (1, 1, 1, 1), (1, 1), c)
    y = depthwise.depthwise_forward(device, device.to_device(x.astype(np.float32)),
                                    device.to_device(w.astype(np.float32)),
                                    device.to_device(b.astype(np.float32)), args[0], args[1],
                                    activation=activation).get()
    pre = oracle.conv2d_forward(x, w, b, *args)
    act = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
           "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[activation]
    assert_close(y, act(pre), _bound(oracle.conv2d_forward(np.abs(x), np.abs(w), np.abs(b), *args)), 0.0, "forward")
    gy = rng.standard_normal(pre.shape)
    got = depthwise.depthwise_backward(device, device.to_device(x.astype(np.float32)),
                                       device.to_device(w.astype(np.float32)),
                                       device.to_device(gy.astype(np.float32)), args[0], args[1])
    refs = oracle.conv2d_backward(x, w, gy, *args)
    abs_refs = oracle.conv2d_backward(np.abs(x), np.abs(w), np.abs(gy), *args)
    for g, ref, abs_ref, what in zip(got, refs, abs_refs, ("gx", "gw", "gb")):
        assert_close(g.get(), ref, _bound(abs_ref), 0.0, what)


def test_depthwise_backward_options(device):
    """need_input_grad=False and has_bias=False leave those gradients out; all-ones input and
    gradient make every weight gradient count its window's valid taps (hand-counted: a 3x3
    kernel, pad 1, on a 3x3 image, 9 output pixels: corner taps meet 4 inputs, edge taps 6,
    the centre 9)."""
    x = device.to_device(np.ones((1, 2, 3, 3), np.float32))
    w = device.to_device(np.ones((2, 1, 3, 3), np.float32))
    gy = device.to_device(np.ones((1, 2, 3, 3), np.float32))
    gx, gw, gb = ops.conv2d_backward(device, x, w, gy, (1, 1), (1, 1, 1, 1), need_input_grad=False,
                                     has_bias=False, groups=2)
    assert gx is None and gb is None
    counts = np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]], np.float32)
    np.testing.assert_array_equal(gw.get(), np.stack([counts, counts])[:, None])


def test_depthwise_shape_errors(device):
    x = device.to_device(np.zeros((1, 4, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"\(C\*M, 1, KH, KW\)"):
        depthwise.depthwise_forward(device, x, device.to_device(np.zeros((4, 2, 3, 3), np.float32)),
                                    None, (1, 1), (0, 0, 0, 0))
    with pytest.raises(ShapeError, match=r"6 filters .* not divisible by groups=4"):
        ops.conv2d_forward(device, x, device.to_device(np.zeros((6, 1, 3, 3), np.float32)), None,
                           (1, 1), (0, 0, 0, 0), groups=4)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        depthwise.depthwise_forward(device, x, device.to_device(np.zeros((4, 1, 3, 3), np.float32)),
                                    None, (1, 1), (0, 0, 0, 0), dilation=(3, 1))
