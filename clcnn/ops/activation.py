"""Activation and softmax host wrappers (kernels/activation.cl).

activation_forward/backward work on arrays of any shape (elementwise, flat); the backward
takes the forward OUTPUT y, as the fused conv and dense kernels do. Softmax works on (N, K)
along axis 1. NaN propagates as in PyTorch: f(NaN) is NaN, and the backward of relu/relu6
passes gy where y is NaN and gives 0 (even for a NaN gy) where the gradient is 0.
"""
import numpy as np

from ..device import ACTIVATION_CODES
from ._common import buf, check_array, f32, i32, launch

NAMES = ("relu", "leaky_relu", "relu6", "tanh", "sigmoid")
# Elements per work item: activation.cl works on one float8 per item.
VEC = 8
_MAX_INT = 2 ** 31 - 1


def check_name(name):
    if name not in NAMES:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(NAMES)}")
    return name


def _code(name):
    return ACTIVATION_CODES[check_name(name)]


def _flat(dev, kernel, arrays, out_shape, scalars):
    n = int(np.prod(out_shape))
    if n > _MAX_INT - VEC:
        raise ValueError(f"array of {n} elements too large for 32-bit indexing")
    out = dev.empty(out_shape)
    if n == 0:
        return out
    items = -(-n // VEC)
    launch(dev, kernel, (items,), None, *[buf(a) for a in arrays], buf(out), i32(n), *scalars)
    return out


def activation_forward(dev, name, x, negative_slope=0.01):
    """y = f(x) elementwise; name in NAMES (relu6 is min(max(x, 0), 6))."""
    code = _code(name)
    check_array(x, x.ndim, "x")
    kernel = dev.kernel("activation.cl", "activation_forward", ACTIVATION=code)
    return _flat(dev, kernel, [x], x.shape, (f32(negative_slope),))


def activation_backward(dev, name, y, gy, negative_slope=0.01):
    """gx = gy * f'(x), with f' computed from the forward output y (relu6: gy where 0 < y < 6)."""
    code = _code(name)
    check_array(y, y.ndim, "y")
    check_array(gy, y.ndim, "gy")
    if tuple(gy.shape) != tuple(y.shape):
        raise ValueError(f"gy shape {tuple(gy.shape)} differs from y shape {tuple(y.shape)}")
    if name == "leaky_relu" and negative_slope < 0:
        # From the output alone the sign of x is y's sign only when the slope is >= 0.
        raise ValueError(f"leaky_relu backward needs negative_slope >= 0, got {negative_slope}")
    kernel = dev.kernel("activation.cl", "activation_backward")     # the code is an argument
    return _flat(dev, kernel, [y, gy], y.shape, (i32(code), f32(negative_slope)))


def softmax_forward(dev, x):
    """y = softmax of x (N, K) along axis 1, shifted by the row max (finite for any finite x)."""
    check_array(x, 2, "x")
    rows, k = x.shape
    y = dev.empty(x.shape)
    if x.size:
        launch(dev, dev.kernel("activation.cl", "softmax_forward"), (rows,), None,
               buf(x), buf(y), i32(rows), i32(k))
    return y


def softmax_backward(dev, y, gy):
    """gx = y * (gy - sum(gy * y, axis=1))."""
    check_array(y, 2, "y")
    check_array(gy, 2, "gy")
    if tuple(gy.shape) != tuple(y.shape):
        raise ValueError(f"gy shape {tuple(gy.shape)} differs from y shape {tuple(y.shape)}")
    rows, k = y.shape
    gx = dev.empty(y.shape)
    if y.size:
        launch(dev, dev.kernel("activation.cl", "softmax_backward"), (rows,), None,
               buf(y), buf(gy), buf(gx), i32(rows), i32(k))
    return gx
