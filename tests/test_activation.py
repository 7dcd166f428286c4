"""Activation and softmax kernels vs the NumPy oracle, and the oracle's backward vs finite
differences."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from clcnn.ops import activation as ops
from clcnn.oracle import activation as oracle
from tests.helpers import assert_close, numeric_grad

NAMES = ["relu", "leaky_relu", "relu6", "tanh", "sigmoid"]
# Shapes of every rank the layers use; sizes cover the float4 tail (n % 4 != 0), a single
# element, and more than one grid-stride round.
shapes = st.lists(st.integers(1, 13), min_size=1, max_size=4).map(tuple)


@given(name=st.sampled_from(NAMES), shape=shapes, scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
       slope=st.sampled_from([0.01, 0.2, 0.0]), seed=st.integers(0, 2 ** 31))
def test_activation_matches_oracle(device, name, shape, scale, slope, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    y = ops.activation_forward(device, name, device.to_device(x), negative_slope=slope)
    y_ref = oracle.activation_forward(name, x.astype(np.float64), negative_slope=slope)
    # relu/leaky are exact up to one rounding of x * slope; OpenCL's tanh and exp are within
    # 5 and 3 ulp, and sigmoid's 1/(1+e) adds two roundings: rtol 1e-5 covers it; atol 1e-30
    # for sigmoid's results below float32's range (x < -87), which come out 0 or denormal.
    assert_close(y.get(), y_ref, atol=1e-30, rtol=1e-5, what=f"{name} forward")

    # Backward from a float32 y (the oracle's, so nothing here comes from the kernel).
    y32 = y_ref.astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    gx = ops.activation_backward(device, name, device.to_device(y32), device.to_device(gy),
                                 negative_slope=slope)
    gx_ref = oracle.activation_backward(name, y32.astype(np.float64), gy.astype(np.float64),
                                        negative_slope=slope)
    # f'(y) is 1 - y^2 or y(1 - y) in float32: absolute error ~ eps in f' (cancellation near
    # |y| = 1 makes relative error meaningless there), times |gy|.
    assert_close(gx.get(), gx_ref, atol=4e-7 * np.abs(gy).max(), rtol=1e-6, what=f"{name} backward")


@given(rows=st.integers(1, 9), k=st.integers(1, 40), scale=st.sampled_from([1e-3, 1.0, 10.0, 1000.0]),
       seed=st.integers(0, 2 ** 31))
def test_softmax_matches_oracle(device, rows, k, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, k)) * scale).astype(np.float32)
    y = ops.softmax_forward(device, device.to_device(x))
    y_ref = oracle.softmax_forward(x.astype(np.float64))
    # exp(x - max) for outputs that matter (|x - max| < ~90) has relative error below
    # 90 * eps (rounding of the difference) + 3 ulp; the sum of K terms adds K * eps / 2:
    # rtol 2e-5, atol 1e-7 for the tiny outputs near float32's underflow.
    assert_close(y.get(), y_ref, atol=1e-7, rtol=2e-5, what="softmax forward")

    y32 = y_ref.astype(np.float32)
    gy = rng.standard_normal((rows, k)).astype(np.float32)
    gx = ops.softmax_backward(device, device.to_device(y32), device.to_device(gy))
    gx_ref = oracle.softmax_backward(y32.astype(np.float64), gy.astype(np.float64))
    # dot(gy, y) is a float32 sum of K terms with sum(y) = 1: abs error ~ K * eps * max|gy|,
    # and gx = y * (gy - dot) inherits it scaled by y <= 1.
    assert_close(gx.get(), gx_ref, atol=(k + 4) * 1.2e-7 * np.abs(gy).max(), rtol=1e-5,
                 what="softmax backward")


def test_softmax_extreme_logits(device):
    # Logits of +-1000 must give finite probabilities that sum to 1 (a naive exp overflows).
    rng = np.random.default_rng(3)
    x = rng.choice([-1000.0, 1000.0, 999.0, 0.0], size=(16, 10)).astype(np.float32)
    x[0] = 1000.0          # all equal: uniform
    x[1] = -1000.0
    y = ops.softmax_forward(device, device.to_device(x)).get()
    assert np.isfinite(y).all()
    assert_close(y.sum(axis=1), np.ones(16), atol=1e-6, rtol=0, what="row sums")
    assert_close(y, oracle.softmax_forward(x.astype(np.float64)), atol=1e-7, rtol=1e-5, what="softmax")
    assert_close(y[0], np.full(10, 0.1), atol=1e-7, rtol=0, what="uniform row")


def test_relu6_values(device):
    # Both clamps, the linear middle, the ragged tail (n = 11) and NaN, as torch.nn.ReLU6.
    x = np.array([-3, -0.5, 0, 0.25, 5.99, 6, 6.01, 1e30, -np.inf, np.inf, np.nan], np.float32)
    y = ops.activation_forward(device, "relu6", device.to_device(x)).get()
    np.testing.assert_array_equal(y, [0, 0, 0, 0.25, np.float32(5.99), 6, 6, 6, 0, 6, np.nan])
    # gradient 1 strictly inside (0, 6) and where y is NaN (PyTorch's hardtanh backward), 0 else
    gy = np.arange(1, 12, dtype=np.float32)
    gx = ops.activation_backward(device, "relu6", device.to_device(y), device.to_device(gy)).get()
    np.testing.assert_array_equal(gx, [0, 0, 0, 4, 5, 0, 0, 0, 0, 0, 11])


def test_large_flat_array(device):
    # Several grid-stride rounds and many work items, with a ragged tail.
    rng = np.random.default_rng(5)
    x = rng.standard_normal(1_000_003).astype(np.float32)
    y = ops.activation_forward(device, "leaky_relu", device.to_device(x), 0.1).get()
    np.testing.assert_array_equal(y, np.where(x > 0, x, x * np.float32(0.1)))


def test_unknown_name_and_bad_shapes(device):
    x = device.to_device(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        ops.activation_forward(device, "gelu", x)
    with pytest.raises(ValueError):
        ops.activation_backward(device, "relu", x, device.to_device(np.zeros((3, 2), np.float32)))
    with pytest.raises(ValueError):
        ops.softmax_forward(device, device.to_device(np.zeros((2, 3, 4), np.float32)))


# ---- the oracle's backward vs float64 central differences (small shapes) ----------------------
@pytest.mark.parametrize("name", NAMES)
def test_oracle_activation_grad(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5)) * 4     # relu6 sees both kinks and both flat parts
    x = np.where((np.abs(x) < 0.1) | (np.abs(x - 6) < 0.1), 0.5, x)   # away from the kinks at 0, 6
    if name == "relu6":
        assert (x > 6).any() and (x < 0).any() and ((x > 0) & (x < 6)).any()
    gy = rng.standard_normal(x.shape)
    f = lambda v: float((oracle.activation_forward(name, v, 0.1) * gy).sum())
    gx = oracle.activation_backward(name, oracle.activation_forward(name, x, 0.1), gy, 0.1)
    # Smooth (or linear away from 0): central differences good to ~1e-9.
    assert_close(gx, numeric_grad(f, x), atol=1e-7, rtol=1e-6, what=f"{name} oracle backward")


def test_oracle_softmax_grad():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7)) * 3
    gy = rng.standard_normal(x.shape)
    f = lambda v: float((oracle.softmax_forward(v) * gy).sum())
    gx = oracle.softmax_backward(oracle.softmax_forward(x), gy)
    assert_close(gx, numeric_grad(f, x), atol=1e-7, rtol=1e-6, what="softmax oracle backward")
