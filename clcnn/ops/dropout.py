"""Dropout host wrappers (kernels/dropout.cl): inverted dropout with a counter-based mask.

The mask (float32, shape of x: 0 or 1 / (1 - p)) is a pure function of (seed, step, element
index), so the same (seed, step) always gives the same mask, and a trainer advances `step`
every batch for a fresh one. p == 0 keeps everything (mask of ones, y equal to x).
"""
import numpy as np

from ._common import buf, check_array, f32, i32, launch

_MAX_INT = 2 ** 31 - 1
VEC = 8          # elements per work item: dropout.cl works on float8 chunks


def _threshold(p):
    """uint32 threshold below which an element is dropped: floor(p * 2^32), capped."""
    return min(int(p * 2.0 ** 32), 2 ** 32 - 1)


# Position of the step among dropout_forward's kernel arguments: a recorded training step
# sets it anew at each replay (layers.Dropout, clcnn.replay).
STEP_ARGUMENT = 5


def dropout_forward(dev, x, p, seed, step):
    """(y, mask): mask 0 with probability p, else 1 / (1 - p); y = x * mask."""
    check_array(x, x.ndim, "x")
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    n = int(x.size)
    if n > _MAX_INT - VEC:
        raise ValueError(f"array of {n} elements too large for 32-bit indexing")
    y = dev.empty(x.shape)
    mask = dev.empty(x.shape)
    if n:
        launch(dev, dev.kernel("dropout.cl", "dropout_forward"), (-(-n // VEC),), None,
               buf(x), buf(y), buf(mask), i32(n), np.uint32(int(seed) & 0xFFFFFFFF),
               np.uint32(int(step) & 0xFFFFFFFF), np.uint32(_threshold(p)), f32(1.0 / (1.0 - p)))
    return y, mask


def dropout_backward(dev, gy, mask):
    """gx = gy * mask."""
    check_array(gy, gy.ndim, "gy")
    check_array(mask, gy.ndim, "mask")
    if tuple(mask.shape) != tuple(gy.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from gy shape {tuple(gy.shape)}")
    gx = dev.empty(gy.shape)
    n = int(gy.size)
    if n:
        launch(dev, dev.kernel("dropout.cl", "dropout_backward"), (-(-n // VEC),), None,
               buf(gy), buf(mask), buf(gx), i32(n))
    return gx
