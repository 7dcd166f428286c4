"""Conv2D with the vector lanes along output rows (kernels/conv2d_rows.cl), for layers with
few output channels and stride 1, such as LeNet-5's conv1 (1 -> 6 channels, 5x5).

conv2d.py's direct kernels put their lanes over output channels: with 6 channels a float8
leaves 2 lanes idle and every FMA needs a broadcast input pixel. Here one unaligned vector
load of VW neighbouring input pixels per tap feeds one FMA per output channel (the weight a
scalar broadcast), and a work item keeps CO x RB row vectors so that RB output rows share
each input row load. Padding: the input is zero-padded first (conv2d._pad), as conv2d.py does.

supports() says when these kernels apply and pay; forward() and weight_grad() return None for
shapes they do not handle, so a caller can fall back to conv2d.py.
"""
import functools

from .. import device as _device
from ..errors import ShapeError
from . import conv2d as _conv
from ._common import buf, check_array, f32, i32, launch

_FILE = "conv2d_rows.cl"
_MAX_CHANNELS = 8          # supports(): more output channels fill conv2d.py's channel lanes
_ACCUMULATORS = 16         # accumulator vectors per work item
# Forced blockings for measurements (None: the rules below).
_FORCE_VW = None
_FORCE_RB = None
_FORCE_LOCAL = None


def _vector_width(ow, dev):
    """The widest of 16 (only where conv2d.vector_limits allows float16), 8, 4, 2, 1 that
    fits in an output row."""
    widest = _FORCE_VW or _conv.vector_limits(dev)[0]
    return max(v for v in (16, 8, 4, 2, 1) if v <= min(ow, widest))


@functools.lru_cache(maxsize=None)
def _defines(n, ci, hp, wp, co, kh, kw, vw, rb, obc, khb):
    """The -D defines of one shape: the same for its forward and weight-gradient kernels, so
    that one build serves both."""
    return dict(N=n, CI=ci, HP=hp, WP=wp, CO=co, KH=kh, KW=kw, VW=vw, RB=rb, OBC=obc, KHB=khb)


def _plan(dev, xp_shape, w_shape):
    n, c, hp, wp = xp_shape
    o, _, kh, kw = w_shape
    rb = min(_FORCE_RB or max(1, _ACCUMULATORS // o), hp - kh + 1)
    return _defines(n, c, hp, wp, o, kh, kw, _vector_width(wp - kw + 1, dev), rb,
                    *_weight_blocking(o, kh))


def _handles(x_shape, w_shape, stride, dilation, groups):
    """The kernels' own limits (correctness, not speed): stride 1, no dilation, groups 1 and
    at most _ACCUMULATORS output channels (a work item holds them all)."""
    return (tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1
            and w_shape[1] == x_shape[1] and w_shape[0] <= _ACCUMULATORS)


def supports(x_shape, w_shape, stride, pads, dilation=(1, 1), groups=1):
    """True where forward() and weight_grad() apply and beat conv2d.py's direct kernels:
    stride 1, no dilation, groups 1, at most _MAX_CHANNELS output channels."""
    return _handles(x_shape, w_shape, stride, dilation, groups) and w_shape[0] <= _MAX_CHANNELS


def _padded(dev, x, pads):
    top, bottom, left, right = pads
    if not any(pads):
        return x
    n, c, h, wd = x.shape
    return _conv._pad(dev, x, h + top + bottom, wd + left + right, top, left)


def _check(x, w, stride, pads, dilation, groups):
    check_array(x, 4, "conv2d input")
    check_array(w, 4, "conv2d weight")
    stride, pads, dilation, groups = _conv._check_params(stride, pads, dilation, groups)
    oh, ow = _conv._output_hw(x.shape, w.shape, stride, pads, dilation, groups)
    return stride, pads, dilation, groups, oh, ow


def forward(dev, x, w, b, stride, pads, activation=None, negative_slope=0.01, dilation=(1, 1),
            groups=1):
    """conv2d.conv2d_forward's result for x (N,C,H,W), w (O,C,KH,KW), b (O,) or None,
    pads=(top,bottom,left,right), activation fused after the bias; None where the kernels do
    not handle the shape (stride or dilation other than 1, groups > 1, O > 16)."""
    stride, pads, dilation, groups, oh, ow = _check(x, w, stride, pads, dilation, groups)
    if activation not in _device.ACTIVATION_CODES:
        raise ValueError(f"conv2d: unknown activation {activation!r}; "
                         f"choose one of {list(_device.ACTIVATION_CODES)}")
    if b is not None:
        check_array(b, 1, "conv2d bias")
        if b.shape[0] != w.shape[0]:
            raise ShapeError(f"conv2d: bias has {b.shape[0]} elements, the weight has {w.shape[0]} filters")
    if not _handles(x.shape, w.shape, stride, dilation, groups):
        return None
    xp = _padded(dev, x, pads)
    n, c, hp, wp = xp.shape
    o, _, kh, kw = w.shape
    d = _plan(dev, xp.shape, w.shape)
    items = n * -(-oh // d["RB"]) * -(-ow // d["VW"])
    y = dev.empty((n, o, oh, ow))
    grid = (items,)
    launch(dev, _conv._kernel(dev, _FILE, "conv2d_rows_forward", d), grid, (_FORCE_LOCAL,) if _FORCE_LOCAL else _conv._local(dev, grid),
           buf(xp), buf(w), buf(b if b is not None else w), buf(y), i32(b is not None),
           i32(_device.ACTIVATION_CODES[activation]), f32(negative_slope))
    return y


# Work items to aim for in the weight gradient, so that both cores (or more) get work.
_WEIGHT_GRAD_ITEMS = 64
_FORCE_WEIGHT_BLOCK = None     # (OBC, KHB) for measurements


def _weight_blocking(co, kh):
    """(OBC, KHB): OBC output channels x KHB tap rows (KHB divides KH) per work item, with
    OBC more vectors for the bias, at most _ACCUMULATORS; fewest channels computed twice
    (a last block past CO), then the most accumulators (each gy load feeds KHB FMAs, each
    input load OBC)."""
    if _FORCE_WEIGHT_BLOCK:
        return _FORCE_WEIGHT_BLOCK
    options = [(obc, khb) for obc in range(1, co + 1) for khb in range(1, kh + 1)
               if kh % khb == 0 and obc * (khb + 1) <= _ACCUMULATORS] or [(1, 1)]
    return min(options, key=lambda o: (-(-co // o[0]) * o[0], -o[0] * o[1], -o[1]))


def weight_grad(dev, x, gy, w_shape, stride, pads, has_bias=True, dilation=(1, 1), groups=1):
    """conv2d.conv2d_backward's weight and bias gradients (gw (O,C,KH,KW), gb (O,) or None)
    for x (N,C,H,W) and gy = dL/dy (N,O,OH,OW) of the pre-activation output; None where the
    kernels do not handle the shape (as forward)."""
    check_array(gy, 4, "conv2d output gradient")
    w_shape = tuple(int(v) for v in w_shape)
    if len(w_shape) != 4:
        raise ShapeError(f"conv2d: weight shape must be (O, C, KH, KW), got {w_shape}")
    check_array(x, 4, "conv2d input")
    stride, pads, dilation, groups = _conv._check_params(stride, pads, dilation, groups)
    oh, ow = _conv._output_hw(x.shape, w_shape, stride, pads, dilation, groups)
    expected = (x.shape[0], w_shape[0], oh, ow)
    if tuple(gy.shape) != expected:
        raise ShapeError(f"conv2d: output gradient has shape {tuple(gy.shape)}, expected {expected}")
    if not _handles(x.shape, w_shape, stride, dilation, groups):
        return None
    xp = _padded(dev, x, pads)
    n, c, hp, wp = xp.shape
    o, _, kh, kw = w_shape
    d = _plan(dev, xp.shape, w_shape)
    obc, khb = d["OBC"], d["KHB"]
    blocks = -(-o // obc)
    items = blocks * c * kw * (kh // khb)
    rows = n * oh
    rows_per_slice = -(-rows // max(1, min(rows, -(-_WEIGHT_GRAD_ITEMS // items))))
    slices = -(-rows // rows_per_slice)
    part = dev.empty((slices, o * c * kh * kw))
    partb = dev.empty((slices, o))
    grid = (blocks, c * kw * (kh // khb), slices)
    launch(dev, _conv._kernel(dev, _FILE, "conv2d_rows_backward_weight", d), grid,
           (1, 1, 1) if dev.is_cpu else None, buf(xp), buf(gy), buf(part), buf(partb),
           i32(rows_per_slice))
    gw = dev.empty(w_shape)
    gb = dev.empty((o,)) if has_bias else None
    taps = o * c * kh * kw
    launch(dev, _conv._kernel(dev, _FILE, "conv2d_rows_backward_weight_reduce"),
           (taps + (o if has_bias else 0),), None, buf(part), buf(partb), buf(gw),
           buf(gb if has_bias else gw), i32(slices), i32(taps), i32(o))
    return gw, gb
