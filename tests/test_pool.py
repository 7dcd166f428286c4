"""Pooling kernels vs the NumPy oracle, and the oracle's backward vs finite differences."""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from clcnn.ops import pool as ops
from clcnn.oracle import activation as o_act, pool as oracle
from tests.helpers import assert_close, numeric_grad

EPS32 = float(np.finfo(np.float32).eps)


@st.composite
def pool_cases(draw):
    """Random geometry: odd and non-square planes, batch 1, stride != kernel, overlapping
    windows, asymmetric padding (each side < kernel), kernels up to 6x6."""
    kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kh - 1)),
            draw(st.integers(0, kw - 1)), draw(st.integers(0, kw - 1)))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), kh + 11))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), kw + 19))   # 1 to 4 chunks of 8
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    ties = draw(st.booleans())
    scale = draw(st.sampled_from([1e-3, 1.0, 1e4, 1e30]))
    seed = draw(st.integers(0, 2 ** 31))
    return (n, c, h, w), (kh, kw), (sh, sw), pads, ties, scale, seed


def _data(shape, ties, scale, rng):
    if ties:
        # Few distinct values: exact ties inside windows and between overlapping windows.
        return (rng.integers(-2, 3, size=shape) * scale).astype(np.float32)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@given(pool_cases())
def test_pool2d_matches_oracle(device, case):
    shape, kernel, stride, pads, ties, scale, seed = case
    rng = np.random.default_rng(seed)
    x = _data(shape, ties, scale, rng)
    xd = device.to_device(x)

    # Max pooling is a selection: y and argmax must match exactly, ties included (both take
    # the first maximum in row-major window order).
    y, argmax = ops.maxpool2d_forward(device, xd, kernel, stride, pads)
    y_ref, argmax_ref = oracle.maxpool2d_forward(x, kernel, stride, pads)
    np.testing.assert_array_equal(argmax.get(), argmax_ref)
    np.testing.assert_array_equal(y.get(), y_ref)

    gy = _data(y_ref.shape, False, 1.0, rng)
    gyd = device.to_device(gy)
    # Both sum gy into each pixel in row-major output order in float32: bit-identical.
    gx = ops.maxpool2d_backward(device, gyd, argmax, shape)
    np.testing.assert_array_equal(gx.get(), oracle.maxpool2d_backward(gy, argmax_ref, shape))

    kh, kw = kernel
    overlap = -(-kh // stride[0]) * -(-kw // stride[1])   # most windows holding one pixel
    for include in (True, False):
        # float32 sum of up to kh*kw terms (oracle in float64): rounding error below
        # kh*kw * eps * max|x|, plus a few ulps relative for the division.
        y = ops.avgpool2d_forward(device, xd, kernel, stride, pads, include)
        y_ref = oracle.avgpool2d_forward(x.astype(np.float64), kernel, stride, pads, include)
        assert_close(y.get(), y_ref, atol=2 * kh * kw * EPS32 * np.abs(x).max(), rtol=1e-6,
                     what=f"avgpool forward include_pad={include}")
        # Backward gathers at most `overlap` terms gy/div, each off by an ulp or two.
        gx = ops.avgpool2d_backward(device, gyd, shape, kernel, stride, pads, include)
        gx_ref = oracle.avgpool2d_backward(gy.astype(np.float64), shape, kernel, stride, pads, include)
        assert_close(gx.get(), gx_ref, atol=4 * overlap * EPS32 * np.abs(gy).max(), rtol=1e-6,
                     what=f"avgpool backward include_pad={include}")


@st.composite
def global_cases(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 17)), draw(st.integers(1, 17)))
    return shape, draw(st.booleans()), draw(st.sampled_from([1e-3, 1.0, 1e4])), draw(st.integers(0, 2 ** 31))


@given(global_cases())
def test_global_pool_matches_oracle(device, case):
    shape, ties, scale, seed = case
    rng = np.random.default_rng(seed)
    x = _data(shape, ties, scale, rng)
    xd = device.to_device(x)
    hw = shape[2] * shape[3]

    y, argmax = ops.global_maxpool2d_forward(device, xd)
    y_ref, argmax_ref = oracle.global_maxpool2d_forward(x)
    np.testing.assert_array_equal(argmax.get(), argmax_ref)      # selection: exact
    np.testing.assert_array_equal(y.get(), y_ref)
    gy = _data(y_ref.shape, False, 1.0, rng)
    gyd = device.to_device(gy)
    gx = ops.global_maxpool2d_backward(device, gyd, argmax, shape)
    np.testing.assert_array_equal(gx.get(), oracle.global_maxpool2d_backward(gy, argmax_ref, shape))

    # float32 sum of H*W terms (four partial sums) vs float64: error < H*W * eps * max|x|.
    y = ops.global_avgpool2d_forward(device, xd)
    assert_close(y.get(), oracle.global_avgpool2d_forward(x.astype(np.float64)),
                 atol=hw * EPS32 * np.abs(x).max(), rtol=1e-6, what="global avgpool forward")
    # One division per element: within an ulp.
    gx = ops.global_avgpool2d_backward(device, gyd, shape)
    assert_close(gx.get(), oracle.global_avgpool2d_backward(gy.astype(np.float64), shape),
                 atol=0, rtol=2 * EPS32, what="global avgpool backward")


def test_backward_is_deterministic(device):
    # Heavily overlapping windows (3x3 stride 1) and many ties: the gather/plane-owner kernels
    # must give bit-identical results run after run.
    rng = np.random.default_rng(1)
    x = device.to_device(rng.integers(-1, 2, size=(4, 8, 23, 19)).astype(np.float32))
    args = ((3, 3), (1, 1), (1, 2, 2, 1))
    y, argmax = ops.maxpool2d_forward(device, x, *args)
    gy = device.to_device(rng.standard_normal(y.shape).astype(np.float32))
    first = ops.maxpool2d_backward(device, gy, argmax, x.shape).get()
    avg_first = ops.avgpool2d_backward(device, gy, x.shape, *args).get()
    for _ in range(3):
        np.testing.assert_array_equal(ops.maxpool2d_backward(device, gy, argmax, x.shape).get(), first)
        np.testing.assert_array_equal(ops.avgpool2d_backward(device, gy, x.shape, *args).get(), avg_first)


def test_maxpool_specials(device):
    # Tie rule spelled out: the first maximum in row-major order of the window wins; a window
    # of -inf picks its first real pixel (padding counts as -inf but never wins); NaN wins.
    x = np.array([[[[1, 5, 5],
                    [5, 2, 0],
                    [-np.inf, -np.inf, np.nan]]]], dtype=np.float32)
    y, argmax = ops.maxpool2d_forward(device, device.to_device(x), (2, 2), (1, 1), (0, 0, 0, 0))
    np.testing.assert_array_equal(argmax.get().ravel(), [1, 1, 3, 8])
    y_ref, argmax_ref = oracle.maxpool2d_forward(x, (2, 2), (1, 1), (0, 0, 0, 0))
    np.testing.assert_array_equal(argmax_ref.ravel(), [1, 1, 3, 8])
    np.testing.assert_array_equal(y.get(), y_ref)
    x = np.full((1, 1, 2, 2), -np.inf, dtype=np.float32)
    y, argmax = ops.maxpool2d_forward(device, device.to_device(x), (2, 2), (1, 1), (1, 0, 1, 0))
    np.testing.assert_array_equal(argmax.get().ravel(), [0, 0, 0, 0])
    np.testing.assert_array_equal(oracle.maxpool2d_forward(x, (2, 2), (1, 1), (1, 0, 1, 0))[1].ravel(), [0, 0, 0, 0])


def test_maxpool_nan_rule(device):
    # A window holding NaN gives NaN, argmax at its LAST NaN in row-major order (PyTorch's
    # kernels take any value > the best or NaN); ties elsewhere still go to the first maximum.
    x = np.array([[[[np.nan, 1, np.nan, 7],
                    [2, np.nan, 7, 3],
                    [9, 9, 0, -np.inf]]]], dtype=np.float32)
    args = ((2, 2), (1, 1), (0, 0, 0, 0))
    y, argmax = ops.maxpool2d_forward(device, device.to_device(x), *args)
    expected_argmax = [[5, 5, 2], [5, 5, 6]]
    expected_y = [[np.nan, np.nan, np.nan], [np.nan, np.nan, 7]]
    np.testing.assert_array_equal(argmax.get()[0, 0], expected_argmax)
    np.testing.assert_array_equal(y.get()[0, 0], expected_y)
    y_ref, argmax_ref = oracle.maxpool2d_forward(x, *args)
    np.testing.assert_array_equal(argmax_ref[0, 0], expected_argmax)
    np.testing.assert_array_equal(y_ref[0, 0], expected_y)
    # the gradient goes to the NaN pixel the argmax names
    gx = ops.maxpool2d_backward(device, device.to_device(np.ones_like(y_ref)), argmax, x.shape).get()
    np.testing.assert_array_equal(gx[0, 0], [[0, 0, 1, 0], [0, 4, 1, 0], [0, 0, 0, 0]])
    y, argmax = ops.global_maxpool2d_forward(device, device.to_device(x))
    assert np.isnan(y.get()).all() and argmax.get().ravel().tolist() == [5]


@settings(max_examples=max(6, settings.default.max_examples // 2))
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), n=st.integers(1, 3), c=st.integers(1, 4),
       extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), out=st.tuples(st.integers(1, 6), st.integers(1, 13)),
       ties=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_tiled_maxpool_matches_oracle(device, kernel, n, c, extra, out, ties, seed):
    """Windows that tile the plane (stride == kernel, no padding) take maxpool2d_forward_tiled:
    exact y and argmax, ties, NaN and -inf included, rows and columns past the last window
    (floor mode) ignored."""
    kh, kw = kernel
    shape = (n, c, out[0] * kh + min(extra[0], kh - 1), out[1] * kw + min(extra[1], kw - 1))
    rng = np.random.default_rng(seed)
    x = _data(shape, ties, 1.0, rng)
    specials = rng.random(shape)
    x[specials < 0.05] = np.nan
    x[(specials >= 0.05) & (specials < 0.15)] = -np.inf
    y, argmax = ops.maxpool2d_forward(device, device.to_device(x), kernel, kernel, (0, 0, 0, 0))
    y_ref, argmax_ref = oracle.maxpool2d_forward(x, kernel, kernel, (0, 0, 0, 0))
    np.testing.assert_array_equal(argmax.get(), argmax_ref)
    np.testing.assert_array_equal(y.get(), y_ref)


@pytest.mark.parametrize("act", [None, "relu", "leaky_relu", "relu6", "tanh", "sigmoid"])
@pytest.mark.parametrize("shape,kernel", [((2, 3, 8, 12), (2, 2)), ((1, 2, 7, 11), (3, 3)), ((3, 1, 5, 9), (2, 4))])
def test_tiled_maxpool_backward_through_activation(device, act, shape, kernel):
    """maxpool2d_backward with the window geometry takes the gathering kernel for tiling
    windows: gy at each window's argmax (ties and floor-mode leftovers included), times the
    activation's derivative at its output y where an activation is given."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.integers(-3, 4, size=shape) * 0.7).astype(np.float32)      # exact ties in windows
    y = o_act.activation_forward(act, x.astype(np.float64), 0.1).astype(np.float32) if act else x
    y_pool, argmax = ops.maxpool2d_forward(device, device.to_device(y), kernel, kernel, (0, 0, 0, 0))
    _, argmax_ref = oracle.maxpool2d_forward(y, kernel, kernel, (0, 0, 0, 0))
    gy = rng.standard_normal(y_pool.shape).astype(np.float32)
    gx = ops.maxpool2d_backward(device, device.to_device(gy), argmax, shape, kernel, kernel, (0, 0, 0, 0),
                                activation=act, act_output=device.to_device(y) if act else None,
                                negative_slope=0.1).get()
    expected = oracle.maxpool2d_backward(gy.astype(np.float64), argmax_ref, shape)
    if act:
        expected = o_act.activation_backward(act, y.astype(np.float64), expected, 0.1)
    # one gy per pixel, times f'(y) in float32
    np.testing.assert_allclose(gx, expected, rtol=1e-6, atol=1e-6, err_msg=f"{act} {kernel}")


@settings(max_examples=max(6, settings.default.max_examples // 2))
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), n=st.integers(1, 2), c=st.integers(1, 3),
       extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), out=st.tuples(st.integers(1, 5), st.integers(1, 12)),
       pool=st.sampled_from(["avg", "max"]), act=st.sampled_from([None, "relu", "relu6", "tanh", "sigmoid"]),
       seed=st.integers(0, 2 ** 31))
# 17 columns under 3-wide windows: leftover column 15 inside the second float8, 16 in the tail
@example(kernel=(3, 3), n=1, c=2, extra=(2, 2), out=(2, 5), pool="avg", act="tanh", seed=1)
@example(kernel=(3, 3), n=1, c=2, extra=(2, 2), out=(2, 5), pool="max", act=None, seed=2)
def test_tiled_pool_backward_matches_oracle(device, kernel, n, c, extra, out, pool, act, seed):
    """The tiled backward kernels write gx eight columns at a time: planes 1 to 48 columns wide
    (whole vectors, a scalar tail, or none), floor-mode leftover columns and rows (inside a
    vector or in the tail) zero, each with an activation's derivative at y or without."""
    kh, kw = kernel
    shape = (n, c, out[0] * kh + min(extra[0], kh - 1), out[1] * kw + min(extra[1], kw - 1))
    rng = np.random.default_rng(seed)
    y = o_act.activation_forward(act, rng.standard_normal(shape) * 3, 0.1).astype(np.float32) if act \
        else rng.standard_normal(shape).astype(np.float32)
    args = (kernel, kernel, (0, 0, 0, 0))
    act_args = dict(activation=act, act_output=device.to_device(y) if act else None, negative_slope=0.1)
    if pool == "max":
        y_pool, argmax = ops.maxpool2d_forward(device, device.to_device(y), *args)
        gy = rng.standard_normal(y_pool.shape).astype(np.float32)
        gx = ops.maxpool2d_backward(device, device.to_device(gy), argmax, shape, *args, **act_args).get()
        expected = oracle.maxpool2d_backward(gy.astype(np.float64), oracle.maxpool2d_forward(y, *args)[1], shape)
    else:
        gy = rng.standard_normal(oracle.avgpool2d_forward(y, *args).shape).astype(np.float32)
        gx = ops.avgpool2d_backward(device, device.to_device(gy), shape, *args, **act_args).get()
        expected = oracle.avgpool2d_backward(gy.astype(np.float64), shape, *args)
    if act:
        expected = o_act.activation_backward(act, y.astype(np.float64), expected, 0.1)
    # gy (divided by the window size) times f'(y), each rounded once or twice in float32
    np.testing.assert_allclose(gx, expected, rtol=1e-6, atol=1e-6, err_msg=f"{pool} {act} {kernel} {shape}")


def test_tiled_maxpool_specials(device):
    # 2x2 windows, stride 2: ties to the first maximum, the last NaN wins, an all--inf window
    # takes its first pixel; the odd last row and column lie outside every window.
    x = np.array([[[[5, 5, np.nan, 1, 9],
                    [1, 5, 2, np.nan, 9],
                    [-np.inf, -np.inf, 0, 3, 9],
                    [-np.inf, -np.inf, 3, 3, 9],
                    [99, 99, 99, 99, 99]]]], dtype=np.float32)
    y, argmax = ops.maxpool2d_forward(device, device.to_device(x), (2, 2), (2, 2), (0, 0, 0, 0))
    np.testing.assert_array_equal(argmax.get()[0, 0], [[0, 8], [10, 13]])
    np.testing.assert_array_equal(y.get()[0, 0], [[5, np.nan], [-np.inf, 3]])
    y_ref, argmax_ref = oracle.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0))
    np.testing.assert_array_equal(argmax_ref[0, 0], [[0, 8], [10, 13]])


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "relu6", "tanh", "sigmoid"])
@pytest.mark.parametrize("stride", [2, 1])     # 2: the tiled kernel's fused form; 1: the general one
def test_avgpool_backward_through_activation(device, act, stride):
    # The pool's input is an activation's output y, here holding the kinks 0 and 6, values past
    # them and NaN: the fused backward must select exactly as the activation's own backward.
    from clcnn.oracle import activation as o_act
    rng = np.random.default_rng(stride)
    y = rng.choice(np.array([0, -0.0, 6, 0.5, 3, 7, -2, np.nan], np.float32), size=(2, 3, 6, 10))
    args = ((2, 2), (stride, stride), (0, 0, 0, 0))
    gy = rng.standard_normal(oracle.avgpool2d_forward(y, *args).shape).astype(np.float32)
    expected = o_act.activation_backward(
        act, y.astype(np.float64), oracle.avgpool2d_backward(gy.astype(np.float64), y.shape, *args), 0.1)
    gx = ops.avgpool2d_backward(device, device.to_device(gy), y.shape, *args, activation=act,
                                act_output=device.to_device(y), negative_slope=0.1).get()
    # float32 sums of at most 4 terms gy / 4, times f'(y) (up to 48 in size for tanh at y = 7)
    np.testing.assert_allclose(gx, expected, rtol=1e-6, atol=1e-5, err_msg=f"{act} stride {stride}")
    assert (np.isnan(gx) == np.isnan(expected)).all()


def test_avgpool_divisors_match_pytorch_values(device):
    # Hand-computed: 3x3 input of ones, kernel 2, stride 2, pad 1 on every side gives windows
    # of 1, 2 (edges) and 4 real pixels out of 4 -> 0.25, 0.5, 1 with pad counted, 1 without.
    x = device.to_device(np.ones((1, 1, 3, 3), dtype=np.float32))
    y = ops.avgpool2d_forward(device, x, (2, 2), (2, 2), (1, 1, 1, 1), True).get()
    np.testing.assert_array_equal(y[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    y = ops.avgpool2d_forward(device, x, (2, 2), (2, 2), (1, 1, 1, 1), False).get()
    np.testing.assert_array_equal(y[0, 0], np.ones((2, 2)))


@pytest.mark.parametrize("pads", [(2, 0, 0, 0), (0, 0, 0, 2), (-1, 0, 0, 0)])
def test_bad_padding_raises(device, pads):
    x = device.to_device(np.zeros((1, 1, 6, 6), dtype=np.float32))
    with pytest.raises(ValueError):
        ops.maxpool2d_forward(device, x, (2, 2), (2, 2), pads)
    with pytest.raises(ValueError):
        ops.avgpool2d_forward(device, x, (2, 2), (2, 2), pads)
    with pytest.raises(ValueError):
        oracle.maxpool2d_forward(np.zeros((1, 1, 6, 6)), (2, 2), (2, 2), pads)


def test_kernel_larger_than_input_raises(device):
    x = device.to_device(np.zeros((1, 1, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        ops.avgpool2d_forward(device, x, (5, 5), (1, 1), (0, 0, 0, 0))


# ---- the oracle's backward vs float64 central differences (small shapes) ----------------------
GEOMETRIES = [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (1, 1), (1, 1, 1, 1)),
              ((3, 2), (2, 1), (2, 0, 0, 1)), ((4, 3), (3, 2), (1, 2, 2, 0))]


def _check_grad(forward, backward, x, rng):
    gy = rng.standard_normal(forward(x).shape)
    numeric = numeric_grad(lambda v: float((forward(v) * gy).sum()), x)
    # Pooling is piecewise linear in x: central differences are exact up to float64 rounding
    # (~1e-16 / 1e-6 per element).
    assert_close(backward(gy), numeric, atol=1e-7, rtol=1e-7, what="oracle backward")


@pytest.mark.parametrize("kernel,stride,pads", GEOMETRIES)
def test_oracle_maxpool_grad(kernel, stride, pads):
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.01   # distinct values: no ties
    _, argmax = oracle.maxpool2d_forward(x, kernel, stride, pads)
    _check_grad(lambda v: oracle.maxpool2d_forward(v, kernel, stride, pads)[0],
                lambda g: oracle.maxpool2d_backward(g, argmax, x.shape), x, rng)


@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("kernel,stride,pads", GEOMETRIES)
def test_oracle_avgpool_grad(kernel, stride, pads, include):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    _check_grad(lambda v: oracle.avgpool2d_forward(v, kernel, stride, pads, include),
                lambda g: oracle.avgpool2d_backward(g, x.shape, kernel, stride, pads, include), x, rng)


def test_oracle_global_pool_grads():
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 3 * 5 * 4).reshape(2, 3, 5, 4) * 0.01
    _check_grad(oracle.global_avgpool2d_forward,
                lambda g: oracle.global_avgpool2d_backward(g, x.shape), x, rng)
    _, argmax = oracle.global_maxpool2d_forward(x)
    _check_grad(lambda v: oracle.global_maxpool2d_forward(v)[0],
                lambda g: oracle.global_maxpool2d_backward(g, argmax, x.shape), x, rng)
