"""NumPy reference for kernels/layout.cl: Transpose and constant Pad of the last two axes."""
import numpy as np


def transpose(x, perm):
    return np.ascontiguousarray(np.transpose(x, perm))


def transpose_backward(gy, perm):
    return np.ascontiguousarray(np.transpose(gy, np.argsort(perm)))


def pad_forward(x, pads, value=0.0):
    """pads (top, bottom, left, right): pad by the positive ones, then crop by the negative ones
    (ONNX's meaning; a crop may eat into the padding)."""
    top, bottom, left, right = pads
    widths = [(0, 0)] * (x.ndim - 2) + [(max(0, top), max(0, bottom)), (max(0, left), max(0, right))]
    padded = np.pad(x, widths, constant_values=value)
    hp, wp = padded.shape[-2:]
    return padded[..., max(0, -top):hp - max(0, -bottom), max(0, -left):wp - max(0, -right)]


def pad_backward(gy, x_shape, pads):
    """The adjoint of pad_forward: gy placed into the padded frame, x's part of it taken."""
    top, bottom, left, right = pads
    h, w = x_shape[-2], x_shape[-1]
    hp, wp = h + max(0, top) + max(0, bottom), w + max(0, left) + max(0, right)
    frame = np.zeros(tuple(x_shape[:-2]) + (hp, wp), dtype=gy.dtype)
    frame[..., max(0, -top):hp - max(0, -bottom), max(0, -left):wp - max(0, -right)] = gy
    return frame[..., max(0, top):max(0, top) + h, max(0, left):max(0, left) + w].copy()
