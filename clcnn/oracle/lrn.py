"""NumPy reference for kernels/lrn.cl: local response normalisation across channels (ONNX LRN:
the window of channel c is [c - (size-1)//2, c + size//2], clipped to the channels)."""
import numpy as np


def _window_sum(v, size):
    """sum of v over each channel's window, v of shape (N, C, ...)."""
    front = (size - 1) // 2
    back = size - 1 - front
    channels = v.shape[1]
    out = np.zeros_like(v)
    for c in range(channels):
        out[:, c] = v[:, max(0, c - front):min(channels, c + back + 1)].sum(axis=1)
    return out


def lrn_forward(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """(y, s): s = k + alpha/size * window sum of x^2, y = x * s^-beta."""
    s = k + alpha / size * _window_sum(x * x, size)
    return x * s ** -beta, s


def lrn_backward(x, y, s, gy, size, alpha=1e-4, beta=0.75):
    """gx = gy s^-beta - 2 alpha beta / size * x * (transposed window sum of gy x s^(-beta-1)),
    with x s^(-beta-1) = y / s (y the forward output)."""
    t = gy * y / s
    front = (size - 1) // 2
    back = size - 1 - front
    channels = x.shape[1]
    acc = np.zeros_like(t)
    for i in range(channels):      # the channels c whose window holds i: [i - back, i + front]
        acc[:, i] = t[:, max(0, i - back):min(channels, i + front + 1)].sum(axis=1)
    return gy * s ** -beta - 2 * alpha * beta / size * x * acc
