"""Host wrappers for kernels/softmax.cl: Softmax and LogSoftmax along any axis of a tensor."""
import math

from ..errors import ShapeError
from ._common import buf, check_array, i32, launch
from .elementwise import _check_size


def check_axis(axis, ndim, what="softmax"):
    """axis as a non-negative index (negative ones count from the end)."""
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ShapeError(f"{what}: axis must be an int in [{-ndim}, {ndim - 1}] for a {ndim}-D tensor, got {axis!r}")
    return axis % ndim


def _run(dev, name, arrays, shape, axis, log):
    axis = check_axis(axis, len(shape), "log_softmax" if log else "softmax")
    _check_size(name, math.prod(shape))
    out = dev.empty(shape)
    inner = math.prod(shape[axis + 1:])
    items = math.prod(shape[:axis]) * inner
    if out.size:
        launch(dev, dev.kernel("softmax.cl", name, LOG=int(log)), (items,), None,
               *[buf(a) for a in arrays], buf(out), i32(shape[axis]), i32(inner), i32(items))
    return out


def softmax_forward(dev, x, axis=-1, log=False):
    """Softmax of x along `axis` (log=True: LogSoftmax), shifted by the max along the axis."""
    check_array(x, x.ndim, "x")
    return _run(dev, "softmax_axis_forward", [x], tuple(x.shape), axis, log)


def softmax_backward(dev, y, gy, axis=-1, log=False):
    """gx from the forward output y: y * (gy - sum(gy * y)), or for log: gy - exp(y) * sum(gy)."""
    check_array(y, y.ndim, "y")
    check_array(gy, y.ndim, "gy")
    if gy.shape != y.shape:
        raise ShapeError(f"softmax backward: gy has shape {tuple(gy.shape)}, y has {tuple(y.shape)}")
    return _run(dev, "softmax_axis_backward", [y, gy], tuple(y.shape), axis, log)
