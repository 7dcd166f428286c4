"""NumPy reference for kernels/layout.cl: Transpose and constant Pad of the last two axes."""
import numpy as np


def transpose(x, perm):
    return np.ascontiguousarray(np.transpose(x, perm))


def transpose_backward(gy, perm):
    return np.ascontiguousarray(np.transpose(gy, np.argsort(perm)))


def pad_forward(x, pads, value=0.0):
    """pads (top, bottom, left, right); negative ones crop."""
    top, bottom, left, right = pads
    crop = x[..., max(0, -top):x.shape[-2] - max(0, -bottom), max(0, -left):x.shape[-1] - max(0, -right)]
    widths = [(0, 0)] * (x.ndim - 2) + [(max(0, top), max(0, bottom)), (max(0, left), max(0, right))]
    return np.pad(crop, widths, constant_values=value)


def pad_backward(gy, x_shape, pads):
    top, bottom, left, right = pads
    gx = np.zeros(x_shape, dtype=gy.dtype)
    h, w = x_shape[-2], x_shape[-1]
    # x rows kept: [max(0, -top), h - max(0, -bottom)); they sit in gy from max(0, top).
    r0, r1 = max(0, -top), h - max(0, -bottom)
    c0, c1 = max(0, -left), w - max(0, -right)
    gx[..., r0:r1, c0:c1] = gy[..., r0 + top:r1 + top, c0 + left:c1 + left]
    return gx
