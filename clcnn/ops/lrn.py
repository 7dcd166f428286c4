"""Host wrappers for kernels/lrn.cl: local response normalisation across channels (ONNX LRN)."""
import math

from ..errors import ShapeError
from ._common import buf, check_array, f32, i32, launch
from .elementwise import _check_size


def check_lrn(size, alpha, beta, k):
    """The LRN settings as (int, float, float, float); ValueError on a bad one."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"LRN size must be a positive int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"LRN {name} must be a finite number, got {value!r}")
    if not k > 0 or alpha < 0:
        # s = k + alpha/size * (sum of squares) must stay > 0 for s^-beta to be defined.
        raise ValueError(f"LRN needs k > 0 and alpha >= 0, got k={k!r}, alpha={alpha!r}")
    return size, float(alpha), float(beta), float(k)


def _geometry(x, size):
    if x.ndim < 2:
        raise ShapeError(f"lrn expects (N, C, ...) input, got shape {tuple(x.shape)}")
    _check_size("lrn", x.size)
    n, channels, hw = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    front = (size - 1) // 2
    return channels, hw, n * -(-hw // 8), front, size - 1 - front    # items: 8 pixels each


def lrn_forward(dev, x, size, alpha=1e-4, beta=0.75, k=1.0):
    """(y, s): y = x * s^-beta with s = k + alpha/size * (sum of x^2 over the `size` channels
    around each one, ONNX's window); s is kept for the backward."""
    size, alpha, beta, k = check_lrn(size, alpha, beta, k)
    check_array(x, x.ndim, "x")
    channels, hw, items, front, back = _geometry(x, size)
    y, s = dev.empty(x.shape), dev.empty(x.shape)
    if x.size:
        launch(dev, dev.kernel("lrn.cl", "lrn_forward"), (items,), None, buf(x), buf(y), buf(s),
               i32(channels), i32(hw), i32(items), i32(front), i32(back), f32(alpha / size), f32(beta), f32(k))
    return y, s


def lrn_backward(dev, x, y, s, gy, size, alpha=1e-4, beta=0.75):
    """gx from the input x, the forward's y and s, and the upstream gy."""
    size, alpha, beta, _ = check_lrn(size, alpha, beta, 1.0)
    for name, a in (("x", x), ("y", y), ("s", s), ("gy", gy)):
        check_array(a, x.ndim, name)
        if a.shape != x.shape:
            raise ShapeError(f"lrn backward: {name} has shape {tuple(a.shape)}, x has {tuple(x.shape)}")
    channels, hw, items, front, back = _geometry(x, size)
    gx = dev.empty(x.shape)
    if x.size:
        launch(dev, dev.kernel("lrn.cl", "lrn_backward"), (items,), None, buf(x), buf(y), buf(s), buf(gy), buf(gx),
               i32(channels), i32(hw), i32(items), i32(front), i32(back), f32(alpha / size), f32(beta))
    return gx
