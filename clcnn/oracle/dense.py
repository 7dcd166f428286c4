"""NumPy reference for GEMM and the Dense layer, forward and backward.

Dense: y = act(x @ w.T + b) with x (N, I), w (O, I), b (O,) as in torch.nn.Linear. The backward
takes gy = dL/d(pre-activation) (the layer undoes a fused activation first) and gives
gx = gy @ w, gw = gy.T @ x, gb = gy.sum(0). Works in float64 when given float64.
"""
import numpy as np


def gemm(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b), op transposing when its flag is set."""
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


def _activate(v, activation, negative_slope):
    if activation is None:
        return v
    # np.maximum/np.minimum keep a NaN (np.fmax would not), as PyTorch's activations do.
    if activation == "relu":
        return np.maximum(v, 0)
    if activation == "leaky_relu":
        with np.errstate(invalid="ignore"):     # +inf * a zero slope: NaN, as on the device
            return np.where(v > 0, v, v * negative_slope)
    if activation == "relu6":
        return np.minimum(np.maximum(v, 0), 6)
    if activation == "tanh":
        return np.tanh(v)
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-v))
    raise ValueError(f"unknown activation {activation!r}")


def dense_forward(x, w, b, activation=None, negative_slope=0.01):
    y = x @ w.T
    if b is not None:
        y = y + b
    return _activate(y, activation, negative_slope).astype(np.result_type(x, w), copy=False)


def dense_backward(x, w, gy, has_bias=True, need_input_grad=True):
    """(gx or None, gw, gb or None) for gy = dL/d(pre-activation)."""
    gx = gy @ w if need_input_grad else None
    gw = gy.T @ x
    gb = gy.sum(axis=0) if has_bias else None
    return gx, gw, gb
