"""Host wrappers for kernels/elementwise.cl: binary ops with NumPy broadcasting (add, sub, mul,
div) and their backward (the gradient summed over the broadcast axes), Clip and PReLU.

Shapes follow NumPy: the operands' shapes are aligned at the right and each axis must agree or
be 1. The device arrays stay C-contiguous; broadcasting is done by strides of 0 in the kernel,
never by materialising the broadcast operand. Up to 6 axes.
"""
import math

import numpy as np

from ..errors import ShapeError
from ._common import buf, check_array, f32, i32, launch

OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3}
MAX_RANK = 6
VEC = 8          # elements of the innermost run per work item (binary_forward)
_MAX_INT = 2 ** 31 - 1


def _check_size(op, n):
    if n > _MAX_INT - VEC:
        raise ValueError(f"{op}: a tensor of {n} elements is too large for 32-bit indexing; use a smaller batch")


def broadcast_shape(op, *shapes):
    """NumPy's broadcast shape, or a ShapeError naming both shapes."""
    try:
        shape = np.broadcast_shapes(*[tuple(s) for s in shapes])
    except ValueError:
        raise ShapeError(f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast "
                         "(NumPy rules: aligned at the right, each axis equal or 1)") from None
    if len(shape) > MAX_RANK:
        raise ShapeError(f"{op}: at most {MAX_RANK} axes are supported, got shape {shape}")
    return shape


def _strides(shape, out_shape):
    """Element strides of a C-contiguous `shape` read as `out_shape` (0 on broadcast axes)."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step if size != 1 else 0)
        step *= size
    return strides[::-1]


def collapse(out_shape, *strides):
    """Merge neighbouring axes that every stride list walks as one; drop axes of size 1.
    Returns (sizes, [strides per operand]), at least one axis."""
    sizes, merged = [], [[] for _ in strides]
    for ax, size in enumerate(out_shape):
        if size == 1:
            continue
        if sizes and all(s[ax] * size == m[-1] for s, m in zip(strides, merged)):
            sizes[-1] *= size
            for s, m in zip(strides, merged):
                m[-1] = s[ax]
            continue
        sizes.append(size)
        for s, m in zip(strides, merged):
            m.append(s[ax])
    if not sizes:
        return [1], [[0] for _ in strides]
    return sizes, merged


def geometry(dev, out_shape, *strides):
    """The geo buffer of binary_forward/transpose: 6 sizes then 6 strides per operand, and the
    (ceil(S5 / 8), outer) range."""
    sizes, merged = collapse(out_shape, *strides)
    if len(sizes) > MAX_RANK:
        raise ShapeError(f"shape {tuple(out_shape)} has more than {MAX_RANK} axes after merging")
    pad = MAX_RANK - len(sizes)
    sizes = [1] * pad + sizes
    geo = list(sizes)
    for m in merged:
        geo += [0] * pad + m
    return dev.to_device(np.array(geo, np.int32), dtype=np.int32), (-(-sizes[-1] // VEC), math.prod(sizes[:-1]))


def binary_forward(dev, op, a, b):
    """y = a <op> b with NumPy broadcasting; op in "add", "sub", "mul", "div" (IEEE division:
    x / 0 is +-inf or NaN, as in torch)."""
    if op not in OPS:
        raise ValueError(f"unknown binary op {op!r}; expected one of {', '.join(OPS)}")
    check_array(a, a.ndim, "a")
    check_array(b, b.ndim, "b")
    shape = broadcast_shape(op, a.shape, b.shape)
    _check_size(op, max(math.prod(shape), a.size, b.size))
    y = dev.empty(shape)
    if y.size == 0:
        return y
    geo, grid = geometry(dev, shape, _strides(a.shape, shape), _strides(b.shape, shape))
    launch(dev, dev.kernel("elementwise.cl", "binary_forward", OP=OPS[op]), grid, None,
           buf(a), buf(b), buf(y), buf(geo))
    return y


def sum_to_shape(dev, g, shape, scale=1.0):
    """scale * g summed over the axes along which `shape` was broadcast to g's shape (the
    gradient of a broadcast operand). Returns g itself where nothing is summed and scale is 1."""
    check_array(g, g.ndim, "g")
    shape = tuple(shape)
    if broadcast_shape("sum_to_shape", shape, g.shape) != tuple(g.shape):
        raise ShapeError(f"sum_to_shape: {shape} does not broadcast to the gradient's shape {tuple(g.shape)}")
    if shape == tuple(g.shape) and scale == 1.0:
        return g
    _check_size("sum_to_shape", g.size)
    out = dev.empty(shape)
    if out.size == 0:
        return out
    if g.size == 0:
        return fill(dev, out)
    full = (1,) * (g.ndim - len(shape)) + shape
    kept = [size if t != 1 else 1 for size, t in zip(g.shape, full)]
    reduced = [size if t == 1 else 1 for size, t in zip(g.shape, full)]
    gstr = _strides(g.shape, g.shape)
    ksizes, (kstr,) = collapse(kept, [s if k > 1 else 0 for s, k in zip(gstr, kept)])
    rsizes, (rstr,) = collapse(reduced, [s if r > 1 else 0 for s, r in zip(gstr, reduced)])
    if len(ksizes) > 3 or len(rsizes) > 3:
        raise ShapeError(f"sum_to_shape: {shape} against {tuple(g.shape)} alternates kept and summed axes "
                         "more than 3 times")
    pk, pr = 3 - len(ksizes), 3 - len(rsizes)
    geo = np.array([1] * pk + ksizes + [0] * pk + kstr + [1] * pr + rsizes + [0] * pr + rstr, np.int32)
    launch(dev, dev.kernel("elementwise.cl", "sum_to_shape"), (out.size,), None,
           buf(g), buf(out), buf(dev.to_device(geo, dtype=np.int32)), f32(scale))
    return out


def binary_backward(dev, op, a, b, gy, y=None, need=(True, True)):
    """(ga, gb) of y = a <op> b for upstream gy (y's shape), each summed to its operand's
    shape; need=(False, True) skips ga (a constant operand), giving None in its place. div
    needs y (its forward output): gb = -sum(gy / b * y)."""
    if op not in OPS:
        raise ValueError(f"unknown binary op {op!r}; expected one of {', '.join(OPS)}")
    shape = broadcast_shape(op, a.shape, b.shape)
    check_array(gy, gy.ndim, "gy")
    if tuple(gy.shape) != shape:
        raise ShapeError(f"{op} backward: gy has shape {tuple(gy.shape)}, the output's is {shape}")
    ga = gb = None
    if op in ("add", "sub"):
        ga = sum_to_shape(dev, gy, a.shape) if need[0] else None
        gb = sum_to_shape(dev, gy, b.shape, -1.0 if op == "sub" else 1.0) if need[1] else None
    elif op == "mul":
        ga = sum_to_shape(dev, binary_forward(dev, "mul", gy, b), a.shape) if need[0] else None
        gb = sum_to_shape(dev, binary_forward(dev, "mul", gy, a), b.shape) if need[1] else None
    else:
        t = binary_forward(dev, "div", gy, b)
        ga = sum_to_shape(dev, t, a.shape) if need[0] else None
        if need[1]:
            if y is None:
                raise ValueError("div backward needs the forward output y for the divisor's gradient")
            gb = sum_to_shape(dev, binary_forward(dev, "mul", t, y), b.shape, -1.0)
    return ga, gb


def _flat_launch(dev, name, n, *args):
    _check_size(name, n)
    if n:
        launch(dev, dev.kernel("elementwise.cl", name), (n,), None, *args)


def fill(dev, y, value=0.0):
    """y[...] = value in place (a float32 device array); returns y. A kernel of clcnn's rather
    than pyopencl's Array.fill, so that a recorded training step replays it (clcnn.replay)."""
    check_array(y, y.ndim, "y")
    _check_size("fill", y.size)
    if y.size:     # a fixed local size: PoCL compiles once per local size, not per array size
        launch(dev, dev.kernel("elementwise.cl", "fill"), (y.size,), (64,), buf(y), i32(y.size), f32(value))
    return y


def clip_forward(dev, x, lo=None, hi=None):
    """y = min(max(x, lo), hi) elementwise (None: unbounded on that side); NaN stays NaN."""
    lo, hi = _bounds(lo, hi)
    check_array(x, x.ndim, "x")
    y = dev.empty(x.shape)
    _flat_launch(dev, "clip_forward", x.size, buf(x), buf(y), i32(x.size), f32(lo), f32(hi))
    return y


def clip_backward(dev, x, gy, lo=None, hi=None):
    """gx = gy where lo <= x <= hi, else 0 (torch.clamp's gradient; a NaN x gives 0)."""
    lo, hi = _bounds(lo, hi)
    check_array(x, x.ndim, "x")
    check_array(gy, x.ndim, "gy")
    if gy.shape != x.shape:
        raise ShapeError(f"clip backward: gy has shape {tuple(gy.shape)}, x has {tuple(x.shape)}")
    gx = dev.empty(x.shape)
    _flat_launch(dev, "clip_backward", x.size, buf(x), buf(gy), buf(gx), i32(x.size), f32(lo), f32(hi))
    return gx


def _bounds(lo, hi):
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    if np.isnan(lo) or np.isnan(hi) or lo > hi:
        raise ValueError(f"clip needs min <= max (None for no bound), got min={lo}, max={hi}")
    return lo, hi


def _prelu_geometry(x, w):
    if x.ndim < 2:
        raise ShapeError(f"prelu expects (N, C, ...) input, got shape {tuple(x.shape)}")
    channels = w.size
    if channels not in (1, x.shape[1]):
        raise ShapeError(f"prelu has {channels} slopes; the input's channel axis has {x.shape[1]} "
                         "(use 1 slope, or one per channel)")
    return i32(math.prod(x.shape[2:])), i32(channels)


def prelu_forward(dev, x, weight):
    """y = x if x > 0 else weight[c] * x, c the channel (axis 1); weight of 1 or C slopes."""
    check_array(x, x.ndim, "x")
    check_array(weight, weight.ndim, "weight")
    inner, channels = _prelu_geometry(x, weight)
    y = dev.empty(x.shape)
    _flat_launch(dev, "prelu_forward", x.size, buf(x), buf(weight), buf(y), i32(x.size), inner, channels)
    return y


def prelu_backward(dev, x, weight, gy):
    """(gx, gweight): gx = gy if x > 0 else weight[c] * gy; gweight[c] = sum of x * gy where
    x <= 0 over every axis but the channel (over all axes for one slope), weight's shape."""
    check_array(x, x.ndim, "x")
    check_array(gy, x.ndim, "gy")
    check_array(weight, weight.ndim, "weight")
    if gy.shape != x.shape:
        raise ShapeError(f"prelu backward: gy has shape {tuple(gy.shape)}, x has {tuple(x.shape)}")
    inner, channels = _prelu_geometry(x, weight)
    gx, gwf = dev.empty(x.shape), dev.empty(x.shape)
    _flat_launch(dev, "prelu_backward", x.size, buf(x), buf(weight), buf(gy), buf(gx), buf(gwf),
                 i32(x.size), inner, channels)
    per = (1, int(channels)) + (1,) * (x.ndim - 2)
    return gx, sum_to_shape(dev, gwf, per).reshape(weight.shape)
