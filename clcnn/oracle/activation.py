"""NumPy reference for the elementwise activations and softmax, forward and backward.

The activation backward is written from the forward OUTPUT y, as the kernels do (see
activate_grad_from_output in kernels/common.h): relu' = [y > 0], leaky' = 1 or slope,
tanh' = 1 - y^2, sigmoid' = y (1 - y).
"""
import numpy as np

NAMES = ("relu", "leaky_relu", "tanh", "sigmoid")


def _check_name(name):
    if name not in NAMES:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(NAMES)}")


def activation_forward(name, x, negative_slope=0.01):
    _check_name(name)
    if name == "relu":
        return np.maximum(x, 0).astype(x.dtype)
    if name == "leaky_relu":
        return np.where(x > 0, x, x * x.dtype.type(negative_slope)).astype(x.dtype)
    if name == "tanh":
        return np.tanh(x)
    # Split by sign so exp never overflows: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) otherwise.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def activation_backward(name, y, gy, negative_slope=0.01):
    _check_name(name)
    if name == "relu":
        d = (y > 0).astype(y.dtype)
    elif name == "leaky_relu":
        d = np.where(y > 0, 1, negative_slope).astype(y.dtype)
    elif name == "tanh":
        d = 1 - y * y
    else:
        d = y * (1 - y)
    return (gy * d).astype(gy.dtype)


def softmax_forward(x):
    """Softmax of x (N, K) along axis 1, shifted by the row max so no exp overflows."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(y, gy):
    return y * (gy - (gy * y).sum(axis=1, keepdims=True))
