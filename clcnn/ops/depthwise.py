"""Depthwise Conv2D (groups == input channels, channel multiplier M = O / C) on the device
(kernels/depthwise.cl): one launch forward with bias and activation fused, one for the input
gradient, one for partial weight and bias gradients that conv2d.cl's reduction sums.

A depthwise conv run by the general kernels would pad every output channel block to 8 lanes
and multiply zeros; here the float8 lanes run along the output row instead. conv2d_forward /
conv2d_backward call these for groups == C > 1 unless an algorithm is forced; they can also be
called directly.
"""
import functools

from .. import device as _device
from ..errors import ShapeError
from . import conv2d as _conv
from ._common import buf, check_array, f32, i32, launch

_FILE = "depthwise.cl"
# Work items to aim for in the weight-gradient kernel, so both cores (or a GPU) get work.
_WEIGHT_GRAD_ITEMS = 64
# Vectors of pixels per work item in the _rows kernels (rows wider than that take the others).
ROWS_VECTORS = 4


def _check(x, w, stride, pads, dilation):
    check_array(x, 4, "depthwise conv2d input")
    check_array(w, 4, "depthwise conv2d weight")
    c = x.shape[1]
    stride, pads, dilation, _ = _conv._check_params(stride, pads, dilation, c)
    if w.shape[0] % c or w.shape[1] != 1:
        raise ShapeError(f"depthwise conv2d: weight must be (C*M, 1, KH, KW) for an input of {c} "
                         f"channels, got shape {tuple(w.shape)}")
    oh, ow = _conv._output_hw(x.shape, w.shape, stride, pads, dilation, c)
    return stride, pads, dilation, oh, ow


@functools.lru_cache(maxsize=None)
def _defines(c, m, h, wd, oh, ow, kh, kw, stride, pads, dilation):
    # RB rows per item: with stride 1 an input row feeds KH output rows, so 4 rows of 3x3 read
    # 6 input rows instead of 12; fewer when the image is short.
    return dict(C=c, M=m, H=h, W=wd, OH=oh, OW=ow, KH=kh, KW=kw, SH=stride[0], SW=stride[1],
                DH=dilation[0], DW=dilation[1], PT=pads[0], PL=pads[2], RB=min(4, oh, h))


def _block_rows(height, width, vw, multiple=1):
    """Rows per block of the _rows kernels: about ROWS_VECTORS vectors of pixels, the blocks of
    a plane equally long, a multiple of `multiple` unless one block covers the plane; None
    when a row is wider than ROWS_VECTORS vectors (the float8-per-item kernels then)."""
    pixels = ROWS_VECTORS * vw
    if width > pixels:
        return None
    rb = min(height, max(1, pixels // width))
    if rb < height:
        rb = -(-height // -(-height // rb))
        rb = max(multiple, rb - rb % multiple)
    return rb


def _plans(dev, *shape):
    """(float8-per-item defines, forward / weight-gradient _rows defines, input-gradient _rows
    defines); a _rows plan is None where a row is too wide for it."""
    return _plans_for(_conv.vector_limits(dev)[0], *shape)


@functools.lru_cache(maxsize=None)
def _plans_for(vw, c, m, h, wd, oh, ow, kh, kw, stride, pads, dilation):
    base = _defines(c, m, h, wd, oh, ow, kh, kw, stride, pads, dilation)
    rb, rb_in = _block_rows(oh, ow, vw), _block_rows(h, wd, vw, stride[0])
    return (base, None if rb is None else dict(base, VW=vw, RB=rb),
            None if rb_in is None else dict(base, VW=vw, RB=rb_in))


def _launch_form(dev, name, d, rows, width, height, planes):
    """(kernel, grid, local) of a pass over `planes` planes of height x width outputs: the
    row-block kernel name + "_rows" where its plan `rows` exists (blocks of RB whole rows),
    else the float8-per-item kernel `name` of plan d (8 columns x RB rows per item)."""
    if rows is not None:
        grid = (-(-height // rows["RB"]), planes)
        return _conv._kernel(dev, _FILE, name + "_rows", rows), grid, _conv._local(dev, grid)
    grid = (-(-width // 8) * -(-height // d["RB"]), planes)
    return _conv._kernel(dev, _FILE, name, d), grid, _conv._local(dev, grid)


def depthwise_forward(dev, x, w, b, stride, pads, activation=None, negative_slope=0.01,
                      dilation=(1, 1)):
    """x (N,C,H,W), w (C*M,1,KH,KW), b (C*M,) or None: conv2d_forward with groups=C.
    Output (N,C*M,OH,OW), OH = (H+top+bottom - dh*(KH-1) - 1)//sh + 1; activation fused."""
    stride, pads, dilation, oh, ow = _check(x, w, stride, pads, dilation)
    if activation not in _device.ACTIVATION_CODES:
        raise ValueError(f"conv2d: unknown activation {activation!r}; "
                         f"choose one of {list(_device.ACTIVATION_CODES)}")
    if b is not None:
        check_array(b, 1, "conv2d bias")
        if b.shape[0] != w.shape[0]:
            raise ShapeError(f"conv2d: bias has {b.shape[0]} elements, the weight has {w.shape[0]} filters")
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    d, rows, _ = _plans(dev, c, o // c, h, wd, oh, ow, kh, kw, stride, pads, dilation)
    y = dev.empty((n, o, oh, ow))
    kernel, grid, local = _launch_form(dev, "depthwise_forward", d, rows, ow, oh, n * o)
    launch(dev, kernel, grid, local, buf(x), buf(w),
           buf(b if b is not None else w), buf(y), i32(b is not None),
           i32(_device.ACTIVATION_CODES[activation]), f32(negative_slope))
    return y


def depthwise_backward(dev, x, w, gy, stride, pads, need_input_grad=True, has_bias=True,
                       dilation=(1, 1)):
    """gy = dL/dy (N,C*M,OH,OW) of the pre-activation output. Returns (gx or None,
    gw (C*M,1,KH,KW), gb (C*M,) or None): conv2d_backward with groups=C."""
    stride, pads, dilation, oh, ow = _check(x, w, stride, pads, dilation)
    check_array(gy, 4, "conv2d output gradient")
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    if tuple(gy.shape) != (n, o, oh, ow):
        raise ShapeError(f"conv2d: output gradient has shape {tuple(gy.shape)}, expected {(n, o, oh, ow)}")
    d, rows, rows_in = _plans(dev, c, o // c, h, wd, oh, ow, kh, kw, stride, pads, dilation)

    if rows is not None and stride[0] > 1:
        # The row-block form pays for strided layers (MobileNet's 96x32x32 stride 2 at batch
        # 64: 2.8 -> 1.8 ms); with stride 1 the float8-per-item kernel's row loads are faster
        # (144x16x16: 0.92 against 2.05 ms). Blocks of RB output rows, sliced so that about _WEIGHT_GRAD_ITEMS items run.
        units, name, plan = n * -(-oh // rows["RB"]), "depthwise_backward_weight_rows", rows
    else:
        units, name, plan = n * oh, "depthwise_backward_weight", d
    per_slice = -(-units // max(1, min(units, -(-_WEIGHT_GRAD_ITEMS // o))))
    slices = -(-units // per_slice)
    part = dev.empty((slices, 1, kh * kw, o))
    partb = dev.empty((slices, 1, o))
    grid = (o, slices)
    launch(dev, _conv._kernel(dev, _FILE, name, plan), grid, _conv._local(dev, grid), buf(x),
           buf(gy), buf(part), buf(partb), i32(n), i32(per_slice))
    gw, gb = _conv._reduce_weight_grad(dev, part, partb, slices, w.shape, o, has_bias)

    gx = None
    if need_input_grad:
        gx = dev.empty(x.shape)
        kernel, grid, local = _launch_form(dev, "depthwise_backward_input", d, rows_in, wd, h, n * c)
        launch(dev, kernel, grid, local, buf(gy), buf(w), buf(gx))
    return gx, gw, gb
