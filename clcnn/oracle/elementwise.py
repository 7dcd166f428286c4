"""NumPy reference for kernels/elementwise.cl: broadcasting binary ops and their backward,
Clip and PReLU."""
import numpy as np

_FORWARD = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}


def binary_forward(op, a, b):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _FORWARD[op](a, b)


def sum_to_shape(g, shape):
    """g summed over the axes along which `shape` was broadcast to g.shape."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes).reshape(shape) if axes else g


def binary_backward(op, a, b, gy):
    """(ga, gb) for y = a <op> b, each summed to its operand's shape."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if op == "add":
            ga, gb = gy, gy
        elif op == "sub":
            ga, gb = gy, -gy
        elif op == "mul":
            ga, gb = gy * b, gy * a
        else:
            ga, gb = gy / b, -gy * a / (b * b)
    return sum_to_shape(np.broadcast_to(ga, gy.shape), np.shape(a)), sum_to_shape(np.broadcast_to(gb, gy.shape), np.shape(b))


def clip_forward(x, lo=None, hi=None):
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    return np.where(x < lo, lo, np.where(x > hi, hi, x))       # NaN fails both tests: kept


def clip_backward(x, gy, lo=None, hi=None):
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    return np.where((x >= lo) & (x <= hi), gy, 0.0)


def _slopes(x, weight):
    """weight (1 or C slopes) shaped to broadcast along x's channel axis."""
    return np.asarray(weight).reshape((1, -1) + (1,) * (x.ndim - 2))


def prelu_forward(x, weight):
    with np.errstate(invalid="ignore"):
        return np.where(x > 0, x, _slopes(x, weight) * x)


def prelu_backward(x, weight, gy):
    """(gx, gweight), gweight shaped as weight."""
    w = _slopes(x, weight)
    gx = np.where(x > 0, gy, w * gy)
    contrib = np.where(x > 0, 0.0, x * gy)
    gw = sum_to_shape(contrib, w.shape)
    return gx, gw.reshape(np.shape(weight))
