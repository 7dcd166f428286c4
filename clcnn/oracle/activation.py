"""NumPy reference for the elementwise activations and softmax, forward and backward.

The activation backward is written from the forward OUTPUT y, as the kernels do (see
activate_backward in kernels/common.h): relu' = [y > 0], leaky' = 1 or slope,
relu6' = [0 < y < 6], tanh' = 1 - y^2, sigmoid' = y (1 - y).

NaN propagates as in PyTorch: np.maximum/np.minimum keep a NaN (np.fmax would drop it), and
the piecewise-linear backwards select as torch's do (relu: y <= 0 ? 0 : gy), so a NaN y passes
gy and a NaN gy where the gradient is 0 gives 0.
"""
import numpy as np

NAMES = ("relu", "leaky_relu", "relu6", "tanh", "sigmoid")


def _check_name(name):
    if name not in NAMES:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(NAMES)}")


def activation_forward(name, x, negative_slope=0.01):
    _check_name(name)
    if name == "relu":
        return np.maximum(x, 0).astype(x.dtype)
    if name == "leaky_relu":
        # +inf * a slope of 0 is NaN, as on the device; NumPy would also warn of it
        with np.errstate(invalid="ignore"):
            return np.where(x > 0, x, x * x.dtype.type(negative_slope)).astype(x.dtype)
    if name == "relu6":
        return np.minimum(np.maximum(x, 0), 6).astype(x.dtype)
    if name == "tanh":
        return np.tanh(x)
    # Split by sign so exp never overflows: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) otherwise.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def activation_backward(name, y, gy, negative_slope=0.01):
    _check_name(name)
    if name == "relu":
        return np.where(y <= 0, 0, gy).astype(gy.dtype)
    if name == "leaky_relu":
        return np.where(y > 0, gy, gy * negative_slope).astype(gy.dtype)
    if name == "relu6":
        return np.where((y <= 0) | (y >= 6), 0, gy).astype(gy.dtype)
    d = 1 - y * y if name == "tanh" else y * (1 - y)
    return (gy * d).astype(gy.dtype)


def softmax_forward(x):
    """Softmax of x (N, K) along axis 1, shifted by the row max so no exp overflows (a NaN
    makes its row's max, and so the whole row, NaN, as in PyTorch)."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(y, gy):
    return y * (gy - (gy * y).sum(axis=1, keepdims=True))
