"""Merge host wrappers (kernels/merge.cl): Add of several tensors (optionally + ReLU), the
gradient accumulation at fan-out, and Concat with its backward.

Add sums left to right in float32, up to 8 inputs per launch (more continue in place from the
partial sum, so the order stays left to right). Concat copies each input's contiguous runs
(one image's C_i*H*W block for NCHW) into the output, one launch per input.

Aliasing: add_backward without an activation returns gy itself (every input of an Add receives
the upstream gradient unchanged, so no copy is made). A graph that sums the gradients of a
tensor feeding several layers should therefore start the sum in a new array, e.g.
`total = add_forward(dev, [g1, g2])`, and only then `accumulate(dev, total, g3)`, so that no
gradient another layer still reads is changed in place.
"""
import numpy as np

from ..device import ACTIVATION_CODES
from ..errors import ShapeError
from ._common import buf, check_array, i32, launch, round_up

ACTIVATIONS = (None, "relu")
# Inputs summed per launch (add_forward's x0..x7).
MAX_INPUTS = 8
VEC = 8
# Elements per add_forward work item: a run of RUN (the speed of a plain copy on PoCL),
# shortened down to MIN_RUN for small tensors so that every compute unit gets ITEMS_PER_UNIT.
RUN = 1024
MIN_RUN = 64
ITEMS_PER_UNIT = 8
_MAX_INT = 2 ** 31 - 1


def _check_activation(op, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")


def _check_size(op, n):
    if n > _MAX_INT - RUN:
        raise ValueError(f"{op}: a tensor of {n} elements is too large for 32-bit indexing; "
                         "use a smaller batch")


def _check_same_shapes(op, arrays, names):
    first = tuple(arrays[0].shape)
    for name, a in zip(names, arrays):
        check_array(a, a.ndim, name)
        if tuple(a.shape) != first:
            raise ShapeError(f"{op}: {name} has shape {tuple(a.shape)} but {names[0]} has shape "
                             f"{first}; the tensors must have the same shape")


def _sum_into(dev, y, xs, activation, accumulate):
    """y = act(sum(xs)) (or act(y + sum(xs))), at most MAX_INPUTS inputs per launch."""
    n = y.size
    if n == 0:
        return y
    target = ITEMS_PER_UNIT * dev.cl_device.max_compute_units
    run = min(RUN, max(MIN_RUN, round_up(-(-n // target), VEC)))
    items = -(-n // run)
    for start in range(0, len(xs), MAX_INPUTS):
        chunk = xs[start:start + MAX_INPUTS]
        last = start + MAX_INPUTS >= len(xs)
        kernel = dev.kernel("merge.cl", "add_forward", INPUTS=len(chunk),
                            ACCUMULATE=int(accumulate or start > 0),
                            ACTIVATION=ACTIVATION_CODES[activation if last else None])
        launch(dev, kernel, (items,), None, buf(y), i32(n), i32(run), *[buf(x) for x in chunk])
    return y


def add_forward(dev, xs, activation=None):
    """y = act(x0 + x1 + ...) for two or more tensors of one shape, summed left to right in
    float32; activation None or "relu" (relu passes NaN on, as PyTorch's does)."""
    _check_activation("add", activation)
    xs = list(xs)
    if len(xs) < 2:
        raise ValueError(f"add needs at least 2 inputs, got {len(xs)}")
    _check_same_shapes("add", xs, [f"input {i}" for i in range(len(xs))])
    _check_size("add", xs[0].size)
    return _sum_into(dev, dev.empty(xs[0].shape), xs, activation, accumulate=False)


def add_backward(dev, gy, count, activation=None, y=None):
    """The gradient each of the `count` inputs of an Add receives: gy, or gy * [y > 0] through a
    fused relu (y: the forward output). One array, handed to every input; without an
    activation it is gy itself, not a copy (see the module note)."""
    from .activation import activation_backward
    _check_activation("add backward", activation)
    if count < 2:
        raise ValueError(f"add backward: an Add has at least 2 inputs, got count={count}")
    check_array(gy, gy.ndim, "gy")
    if activation is None:
        return gy
    if y is None:
        raise ValueError("add backward with activation='relu' needs the forward output y")
    _check_same_shapes("add backward", [gy, y], ["gy", "y"])
    return activation_backward(dev, activation, y, gy)


def accumulate(dev, total, g):
    """total += g in place (a tensor feeding several layers gets the sum of their gradients);
    returns total."""
    _check_same_shapes("accumulate", [total, g], ["total", "g"])
    _check_size("accumulate", total.size)
    return _sum_into(dev, total, [g], None, accumulate=True)


def add_into(dev, out, a, b):
    """out = a + b, into an existing array (which may be a or b); returns out."""
    _check_same_shapes("add_into", [out, a, b], ["out", "a", "b"])
    _check_size("add_into", out.size)
    return _sum_into(dev, out, [a, b], None, accumulate=False)


def _axis(op, ndim, axis):
    if ndim not in (2, 4):
        raise ShapeError(f"{op}: inputs must be 4-D (N, C, H, W) or 2-D (N, K), got {ndim}-D")
    if axis not in (1, 1 - ndim):
        raise ValueError(f"{op}: only the channel axis (axis=1) is supported, got axis={axis}")
    return 1


def _runs(shape, axis):
    """(rows, inner): the products of the axes before and after `axis`."""
    return int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1:]))


def _copy(dev, src, dst, rows, run, src_stride, src_off, dst_stride, dst_off):
    if rows == 0 or run == 0:
        return
    launch(dev, dev.kernel("merge.cl", "concat_copy"), (-(-run // VEC), rows), None,
           buf(src), buf(dst), i32(run), i32(src_stride), i32(src_off), i32(dst_stride), i32(dst_off))


def concat_forward(dev, xs, axis=1):
    """y = the inputs joined along `axis` (1: channels of NCHW or features of (N, K)); the
    inputs must agree on every other axis."""
    xs = list(xs)
    if len(xs) < 2:
        raise ValueError(f"concat needs at least 2 inputs, got {len(xs)}")
    axis = _axis("concat", xs[0].ndim, axis)
    first = tuple(xs[0].shape)
    for i, x in enumerate(xs):
        if x.ndim != len(first):
            raise ShapeError(f"concat: input {i} has shape {tuple(x.shape)} but input 0 has shape "
                             f"{first}; the inputs must have the same number of axes")
        check_array(x, x.ndim, f"input {i}")
        for ax, (a, b) in enumerate(zip(x.shape, first)):
            if ax != axis and a != b:
                raise ShapeError(f"concat along axis {axis}: input {i} has shape {tuple(x.shape)} "
                                 f"but input 0 has shape {first}; they differ on axis {ax}, and "
                                 f"only axis {axis} may differ")
    total = sum(x.shape[axis] for x in xs)
    out_shape = first[:axis] + (total,) + first[axis + 1:]
    rows, inner = _runs(out_shape, axis)
    _check_size("concat", rows * total * inner)
    y = dev.empty(out_shape)
    offset = 0
    for x in xs:
        run = x.shape[axis] * inner
        _copy(dev, x, y, rows, run, run, 0, total * inner, offset * inner)
        offset += x.shape[axis]
    return y


def concat_backward(dev, gy, sizes, axis=1):
    """[gx_i]: gy split along `axis` into pieces of sizes[i] (the inputs' sizes on that axis)."""
    check_array(gy, gy.ndim, "gy")
    axis = _axis("concat backward", gy.ndim, axis)
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 0 or sum(sizes) != gy.shape[axis]:
        raise ShapeError(f"concat backward: sizes {sizes} must be 2 or more non-negative sizes "
                         f"summing to gy's axis {axis} ({gy.shape[axis]}, gy shape {tuple(gy.shape)})")
    _check_size("concat backward", gy.size)
    total = gy.shape[axis]
    rows, inner = _runs(gy.shape, axis)
    grads, offset = [], 0
    for s in sizes:
        g = dev.empty(tuple(gy.shape[:axis]) + (s,) + tuple(gy.shape[axis + 1:]))
        _copy(dev, gy, g, rows, s * inner, total * inner, offset * inner, s * inner, 0)
        grads.append(g)
        offset += s
    return grads
