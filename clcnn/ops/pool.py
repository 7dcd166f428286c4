"""Pooling host wrappers (kernels/pool.cl): max, average and global pooling, forward and backward.

x is NCHW float32; kernel=(kh, kw), stride=(sh, sw), pads=(top, bottom, left, right), all ints,
each pad smaller than the kernel on its axis (so no window lies wholly in padding).
Semantics are PyTorch's: max pooling pads with -inf and breaks ties towards the first maximum
in row-major window order, and a window holding NaN gives NaN with argmax at its last NaN; its
argmax (int32, shape of y) is ih * W + iw in x's H*W plane.
Average pooling counts padded zeros when count_include_pad=True, else only real pixels.
Backward kernels are deterministic and use no atomics: average pooling gathers (each input
pixel sums the outputs whose windows hold it, overlapping windows included); max pooling, whose
signature carries no window geometry to gather with, gives each (n, c) plane to one work item
that adds gy at argmax in row-major output order.
"""
import numpy as np

from ..device import ACTIVATION_CODES
from ..shapes import output_hw
from . import activation as act_ops
from ._common import buf, check_array, f32, i32, launch

_MAX_INT = 2 ** 31 - 1
VEC = 8            # pixels of a row per work item in the 2-D kernels (pool.cl works in float8)
# Work-group size of the tiled kernels (one output row per work item). Fixed: PoCL compiles one
# work-group function per local size; small, so that a small batch still feeds both cores.
_LOCAL = (16,)


def _tiled(defines):
    """Windows tile the plane (stride == kernel, no padding): the *_tiled kernels apply."""
    d = defines
    return (d["SH"], d["SW"]) == (d["KH"], d["KW"]) and not (d["PT"] or d["PB"] or d["PL"] or d["PR"])


def _ints(value, length, name):
    if (not isinstance(value, (tuple, list)) or len(value) != length
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name} must be a tuple of {length} ints, got {value!r}")
    return tuple(int(v) for v in value)


def _geometry(x_shape, kernel, stride, pads):
    """Validated -D defines for pool.cl and the output shape."""
    kh, kw = _ints(kernel, 2, "kernel")
    sh, sw = _ints(stride, 2, "stride")
    top, bottom, left, right = _ints(pads, 4, "pads")
    if min(kh, kw, sh, sw) < 1:
        raise ValueError(f"pool kernel and stride must be >= 1, got kernel={kernel}, stride={stride}")
    if min(top, bottom, left, right) < 0 or max(top, bottom) >= kh or max(left, right) >= kw:
        raise ValueError(f"pool padding {tuple(pads)} must be >= 0 and smaller than the kernel "
                         f"{kh}x{kw} on each side")
    n, c, h, w = x_shape
    oh, ow = output_hw((h, w), (kh, kw), (sh, sw), (top, bottom, left, right), where="pool")
    if n * c * max(h * (w + VEC), oh * (ow + VEC)) > _MAX_INT:
        raise ValueError(f"pool input {tuple(x_shape)} too large for 32-bit indexing")
    defines = dict(H=h, W=w, OH=oh, OW=ow, KH=kh, KW=kw, SH=sh, SW=sw, PT=top, PB=bottom, PL=left, PR=right)
    return defines, (n, c, oh, ow)


def _row_chunks(shape):
    """Work items of a 2-D pool kernel: one per VEC pixels of each row of each plane."""
    n, c, rows, width = shape
    return n * c * rows * -(-width // VEC)


def _x_shape(x_shape):
    x_shape = tuple(int(v) for v in x_shape)
    if len(x_shape) != 4 or min(x_shape) < 1:
        raise ValueError(f"x_shape must be 4 positive ints (N, C, H, W), got {x_shape!r}")
    return x_shape


def _check_out(array, shape, name, dtype=np.float32):
    check_array(array, 4, name, dtype)
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(array.shape)}")


def maxpool2d_forward(dev, x, kernel, stride, pads):
    """y, argmax = max over each window of x (N, C, H, W); argmax int32 as y, into the H*W plane."""
    check_array(x, 4, "x")
    defines, y_shape = _geometry(x.shape, kernel, stride, pads)
    y = dev.empty(y_shape)
    argmax = dev.empty(y_shape, np.int32)
    if _tiled(defines):
        rows = y_shape[0] * y_shape[1] * y_shape[2]
        launch(dev, dev.kernel("pool.cl", "maxpool2d_forward_tiled", **defines), (rows,), _LOCAL,
               buf(x), buf(y), buf(argmax), i32(rows))
        return y, argmax
    items = _row_chunks(y_shape)
    launch(dev, dev.kernel("pool.cl", "maxpool2d_forward", **defines), (items,), _LOCAL,
           buf(x), buf(y), buf(argmax), i32(items))
    return y, argmax


def maxpool2d_backward(dev, gy, argmax, x_shape, kernel=None, stride=None, pads=(0, 0, 0, 0),
                       activation=None, act_output=None, negative_slope=0.01):
    """gx (x_shape): gy added into x's pixel that each output's argmax names (zero elsewhere).

    kernel, stride, pads: the forward's window geometry, where the caller has it: windows that
    tile the plane then take a gathering kernel. activation and act_output (its forward
    output, the pool's input): also back-propagate through that activation, in that kernel's
    pass where it runs, else in a pass after."""
    n, c, h, w = _x_shape(x_shape)
    check_array(gy, 4, "gy")
    _check_out(argmax, gy.shape, "argmax", np.int32)
    if tuple(gy.shape[:2]) != (n, c):
        raise ValueError(f"gy {tuple(gy.shape)} does not match x_shape {(n, c, h, w)} in N, C")
    if activation is not None:
        _check_out(act_output, (n, c, h, w), "act_output")
    if kernel is not None:
        defines, y_shape = _geometry((n, c, h, w), kernel, stride, pads)
        if _tiled(defines) and tuple(gy.shape) == tuple(y_shape):
            gx = dev.empty((n, c, h, w))
            rows = y_shape[0] * y_shape[1] * y_shape[2]
            code = ACTIVATION_CODES[act_ops.check_name(activation)] if activation else 0
            launch(dev, dev.kernel("pool.cl", "maxpool2d_backward_tiled", **defines),
                   (rows,), _LOCAL, buf(gy), buf(argmax), buf(act_output if activation else gy), buf(gx),
                   i32(rows), i32(code), f32(negative_slope))
            return gx
    gx = dev.empty((n, c, h, w))
    # One work item per (n, c) plane: the signature carries no window geometry to gather with.
    launch(dev, dev.plain_kernel("pool.cl", "maxpool2d_backward"), (n * c,), None,
           buf(gy), buf(argmax), buf(gx), i32(n * c), i32(h * w), i32(gy.shape[2] * gy.shape[3]))
    if activation is not None:
        return act_ops.activation_backward(dev, activation, act_output, gx, negative_slope=negative_slope)
    return gx


def avgpool2d_forward(dev, x, kernel, stride, pads, count_include_pad=True):
    """y = mean over each window of x (N, C, H, W), divisor per count_include_pad."""
    check_array(x, 4, "x")
    defines, y_shape = _geometry(x.shape, kernel, stride, pads)
    y = dev.empty(y_shape)
    if _tiled(defines):
        rows = y_shape[0] * y_shape[1] * y_shape[2]
        launch(dev, dev.kernel("pool.cl", "avgpool2d_forward_tiled", **defines), (rows,), _LOCAL,
               buf(x), buf(y), i32(rows))
        return y
    items = _row_chunks(y_shape)
    launch(dev, dev.kernel("pool.cl", "avgpool2d_forward", **defines), (items,), None,
           buf(x), buf(y), i32(items), i32(bool(count_include_pad)))
    return y


def avgpool2d_backward(dev, gy, x_shape, kernel, stride, pads, count_include_pad=True,
                       activation=None, act_output=None, negative_slope=0.01):
    """gx (x_shape): each input pixel gathers gy / divisor from every window that holds it.

    activation (a name of ops.activation) and act_output (its forward output, which was the
    pool's input x): also back-propagate through that activation, giving dL/d(its input)."""
    x_shape = _x_shape(x_shape)
    defines, y_shape = _geometry(x_shape, kernel, stride, pads)
    _check_out(gy, y_shape, "gy")
    if activation is not None:
        _check_out(act_output, x_shape, "act_output")
    gx = dev.empty(x_shape)
    if _tiled(defines):
        rows = y_shape[0] * y_shape[1] * y_shape[2]
        code = ACTIVATION_CODES[act_ops.check_name(activation)] if activation else 0
        launch(dev, dev.kernel("pool.cl", "avgpool2d_backward_tiled", **defines),
               (rows,), _LOCAL, buf(gy), buf(act_output if activation else gx), buf(gx), i32(rows),
               i32(code), f32(negative_slope))
        return gx
    items = _row_chunks(x_shape)
    launch(dev, dev.kernel("pool.cl", "avgpool2d_backward", **defines), (items,), None,
           buf(gy), buf(gx), i32(items), i32(bool(count_include_pad)))
    if activation is not None:
        gx = act_ops.activation_backward(dev, activation, act_output, gx, negative_slope)
    return gx


def avgpool2d_backward_transposed(dev, gy, x_shape, cop, activation=None, act_output=None, negative_slope=0.01):
    """avgpool2d_backward's gx for 2x2 windows with stride 2 (no padding), pixel-major:
    gxt (N*H*W, cop), gxt[(n*H + ih)*W + iw, c] = gx[n, c, ih, iw], zeros for c >= C, cop a
    multiple of 8 and >= C (the transposed gradient conv2d's backward reads; the convolution
    before the pool hands it on without the NCHW one). activation, act_output: as there."""
    x_shape = _x_shape(x_shape)
    n, c, h, w = x_shape
    defines, y_shape = _geometry(x_shape, (2, 2), (2, 2), (0, 0, 0, 0))
    _check_out(gy, y_shape, "gy")
    if activation is not None:
        _check_out(act_output, x_shape, "act_output")
    if cop % 8 or cop < c:
        raise ValueError(f"avgpool2d_backward_transposed: rows of {cop} values cannot hold {c} channels "
                         f"(give a multiple of 8, at least the channel count)")
    gxt = dev.empty((n * h * w, cop))
    rows = n * y_shape[2]
    code = ACTIVATION_CODES[act_ops.check_name(activation)] if activation else 0
    # 16 channels per pass where the rows allow: whole 64-byte rows of gxt (0.14 against 0.15 ms
    # in 8-channel passes, LeNet-5's conv2 at batch 256)
    kernel = dev.kernel("pool.cl", "avgpool2d_backward_transposed", **defines, C=c, COP=cop,
                        CB=16 if cop % 16 == 0 else 8)
    launch(dev, kernel, (rows,), _LOCAL, buf(gy), buf(act_output if activation else gy), buf(gxt), i32(rows),
           i32(code), f32(negative_slope))
    return gxt


def _global_shape(x_shape):
    n, c, h, w = x_shape
    if n * c * h * w > _MAX_INT:
        raise ValueError(f"pool input {tuple(x_shape)} too large for 32-bit indexing")
    return n, c, h, w


def global_avgpool2d_forward(dev, x):
    """y (N, C, 1, 1) = mean of each H*W plane of x."""
    check_array(x, 4, "x")
    n, c, h, w = _global_shape(x.shape)
    y = dev.empty((n, c, 1, 1))
    launch(dev, dev.plain_kernel("pool.cl", "global_avgpool2d_forward"), (n * c,), None,
           buf(x), buf(y), i32(n * c), i32(h * w))
    return y


def global_avgpool2d_backward(dev, gy, x_shape):
    n, c, h, w = _global_shape(_x_shape(x_shape))
    _check_out(gy, (n, c, 1, 1), "gy")
    gx = dev.empty((n, c, h, w))
    total = n * c * h * w
    launch(dev, dev.plain_kernel("pool.cl", "global_avgpool2d_backward"), (total,), None,
           buf(gy), buf(gx), i32(total), i32(h * w))
    return gx


def global_maxpool2d_forward(dev, x):
    """y (N, C, 1, 1) = max of each H*W plane; argmax int32 (N, C, 1, 1), first maximum wins
    (a plane holding NaN: NaN, argmax at its last NaN)."""
    check_array(x, 4, "x")
    n, c, h, w = _global_shape(x.shape)
    y = dev.empty((n, c, 1, 1))
    argmax = dev.empty((n, c, 1, 1), np.int32)
    launch(dev, dev.plain_kernel("pool.cl", "global_maxpool2d_forward"), (n * c,), None,
           buf(x), buf(y), buf(argmax), i32(n * c), i32(h * w))
    return y, argmax


def global_maxpool2d_backward(dev, gy, argmax, x_shape):
    n, c, h, w = _global_shape(_x_shape(x_shape))
    _check_out(gy, (n, c, 1, 1), "gy")
    _check_out(argmax, (n, c, 1, 1), "argmax", np.int32)
    gx = dev.empty((n, c, h, w))
    total = n * c * h * w
    launch(dev, dev.plain_kernel("pool.cl", "global_maxpool2d_backward"), (total,), None,
           buf(gy), buf(argmax), buf(gx), i32(total), i32(h * w))
    return gx
