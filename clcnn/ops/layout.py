"""Host wrappers for kernels/layout.cl: Transpose of any permutation (up to 6 axes) and constant
Pad of the last two axes with its backward. Reshape needs no kernel: a C-contiguous device
array is reshaped as a view (pyopencl's reshape)."""
import math

from ..errors import ShapeError
from ._common import buf, check_array, f32, i32, launch
from .elementwise import MAX_RANK, _check_size, _strides, geometry


def check_perm(perm, ndim, what="transpose"):
    """perm as a tuple, a permutation of range(ndim) (negative entries count from the end)."""
    try:
        perm = tuple(int(p) + ndim if int(p) < 0 else int(p) for p in perm)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: perm must be a sequence of axis indices, got {perm!r}") from None
    if sorted(perm) != list(range(ndim)):
        raise ValueError(f"{what}: perm {perm} is not a permutation of the {ndim} axes 0..{ndim - 1}")
    return perm


def transpose(dev, x, perm):
    """y = x.transpose(perm) as a new C-contiguous array (NumPy's/ONNX's meaning of perm:
    output axis i is input axis perm[i])."""
    check_array(x, x.ndim, "x")
    perm = check_perm(perm, x.ndim)
    if x.ndim > MAX_RANK:
        raise ShapeError(f"transpose: at most {MAX_RANK} axes are supported, got shape {tuple(x.shape)}")
    shape = tuple(x.shape[p] for p in perm)
    y = dev.empty(shape)
    if y.size == 0:
        return y
    _check_size("transpose", x.size)
    stride = _strides(x.shape, x.shape)
    in_strides = [stride[p] if x.shape[p] != 1 else 0 for p in perm]
    geo, grid = geometry(dev, shape, in_strides)
    launch(dev, dev.kernel("layout.cl", "transpose"), grid, None, buf(x), buf(y), buf(geo))
    return y


def transpose_backward(dev, gy, perm):
    """gx: gy transposed by the inverse permutation."""
    perm = check_perm(perm, gy.ndim)
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return transpose(dev, gy, inverse)


def check_pads(pads, what="pad"):
    """(top, bottom, left, right) from an int, (ph, pw) or (top, bottom, left, right)."""
    if isinstance(pads, bool):
        raise ValueError(f"{what}: pads must be ints, got {pads!r}")
    if isinstance(pads, int):
        pads = (pads,) * 4
    try:
        pads = tuple(pads)
    except TypeError:
        raise ValueError(f"{what}: pads must be an int, (ph, pw) or (top, bottom, left, right), got {pads!r}") from None
    if len(pads) == 2:
        pads = (pads[0], pads[0], pads[1], pads[1])
    if len(pads) != 4 or any(isinstance(p, bool) or not isinstance(p, int) for p in pads):
        raise ValueError(f"{what}: pads must be an int, (ph, pw) or (top, bottom, left, right) of ints, "
                         f"got {pads!r}")
    return pads


def pad_shape(shape, pads, what="pad"):
    top, bottom, left, right = pads
    if len(shape) < 2:
        raise ShapeError(f"{what} pads the last two axes (H, W); got shape {tuple(shape)}")
    oh, ow = shape[-2] + top + bottom, shape[-1] + left + right
    if oh < 1 or ow < 1:
        raise ShapeError(f"{what}: pads {pads} crop all of H x W = {shape[-2]} x {shape[-1]}")
    return tuple(shape[:-2]) + (oh, ow)


def pad_forward(dev, x, pads, value=0.0):
    """y = x padded with `value` on the last two axes by pads (top, bottom, left, right);
    negative pads crop."""
    check_array(x, x.ndim, "x")
    pads = check_pads(pads)
    shape = pad_shape(x.shape, pads)
    y = dev.empty(shape)
    if y.size == 0:
        return y
    _check_size("pad", max(y.size, x.size))
    rows = math.prod(shape[:-2])
    launch(dev, dev.kernel("layout.cl", "pad_forward"), (shape[-1], rows * shape[-2]), None,
           buf(x), buf(y), i32(x.shape[-2]), i32(x.shape[-1]), i32(shape[-2]), i32(shape[-1]),
           i32(pads[0]), i32(pads[2]), f32(value))
    return y


def pad_backward(dev, gy, x_shape, pads):
    """gx (x_shape): the part of gy that came from x; 0 where a negative pad cropped x."""
    pads = check_pads(pads)
    x_shape = tuple(x_shape)
    check_array(gy, len(x_shape), "gy")
    if tuple(gy.shape) != pad_shape(x_shape, pads):
        raise ShapeError(f"pad backward: gy has shape {tuple(gy.shape)}, padding {x_shape} by {pads} "
                         f"gives {pad_shape(x_shape, pads)}")
    gx = dev.empty(x_shape)
    if gx.size == 0:
        return gx
    _check_size("pad backward", max(gy.size, gx.size))
    rows = math.prod(x_shape[:-2])
    launch(dev, dev.kernel("layout.cl", "pad_backward"), (x_shape[-1], rows * x_shape[-2]), None,
           buf(gy), buf(gx), i32(x_shape[-2]), i32(x_shape[-1]), i32(gy.shape[-2]), i32(gy.shape[-1]),
           i32(pads[0]), i32(pads[2]))
    return gx
