"""NumPy reference for the merge ops: Add of several tensors (optionally + ReLU), gradient
accumulation, Concat and its backward (split).

ReLU keeps NaN, as PyTorch's does (np.maximum propagates it); its gradient is written from the
forward output y as the kernels and torch's threshold_backward do: y <= 0 ? 0 : gy, so a NaN y
passes gy and a NaN gy where y <= 0 gives 0.
"""
import numpy as np


def add_forward(xs, activation=None):
    s = xs[0]
    for x in xs[1:]:
        s = s + x
    if activation == "relu":
        return np.maximum(s, 0)
    if activation is not None:
        raise ValueError(f"add: activation must be None or 'relu', got {activation!r}")
    return s


def add_backward(gy, count, activation=None, y=None):
    """The gradient every one of the `count` inputs receives (the same for all)."""
    if activation == "relu":
        return np.where(y <= 0, 0, gy).astype(gy.dtype)
    return gy


def accumulate(total, g):
    return total + g


def concat_forward(xs, axis=1):
    return np.concatenate(xs, axis=axis)


def concat_backward(gy, sizes, axis=1):
    return np.split(gy, np.cumsum(sizes)[:-1], axis=axis)
