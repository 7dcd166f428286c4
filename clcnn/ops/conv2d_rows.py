"""Conv2D with the vector lanes along output rows (kernels/conv2d_rows.cl), for layers with
few output channels and stride 1, such as LeNet-5's conv1 (1 -> 6 channels, 5x5).

conv2d.py's direct kernels put their lanes over output channels: with 6 channels a float8
leaves 2 lanes idle and every FMA needs a broadcast input pixel. Here one unaligned vector
load of VW neighbouring input pixels per tap feeds one FMA per output channel (the weight a
scalar broadcast), and a work item keeps CO x RB row vectors so that RB output rows share
each input row load. Padding: the forward reads the unpadded input and masks what lies
outside it (no padded copy); the weight gradient zero-pads the input first (conv2d._pad).
weight_grad_pooled() is the weight gradient of a convolution whose output a 2x2 average
pooling reads, taking the pooling's output gradient (the model defers that pooling's backward
to it, fusion.defers_pool_backward).

supports() says where these kernels pay (measured against conv2d.py's direct kernels on
PoCL, see supports); forward(), weight_grad() and weight_grad_pooled() return None for shapes
they cannot run, so a caller can fall back to conv2d.py.
"""
import functools

from .. import device as _device
from ..errors import ShapeError
from . import conv2d as _conv
from ._common import buf, check_array, f32, i32, launch

_FILE = "conv2d_rows.cl"
# Work items to aim for in the weight gradient, so that both cores (or more) get work.
_WEIGHT_GRAD_ITEMS = 64
# Forced choices for tests and measurements (None: the rules below): the widest vector, the
# forward's rows per block, its row blocks per work item, the weight gradient's blocking, the
# forward's padding inside its kernel (True) or by a padded copy (False).
_FORCE_VW = None
_FORCE_RB = None
_FORCE_RL = None
_FORCE_WEIGHT_BLOCK = None     # (OBC, KHB, KWB, RPW)
# The weight gradient's every-tap blocking (_weight_blocking) where it fits; False: never.
_ALL_TAPS = True
_FORCE_PAD_IN_KERNEL = None


def _accumulators(dev):
    """Accumulator vectors a work item may hold: half the vector registers (16 with AVX-512's
    32, 8 with AVX2's 16), the rest hold the loaded row, the weights and addresses."""
    return _conv.vector_limits(dev)[1] // 2


# The forward takes float16 lanes over rows of 12-15 pixels too (the lanes past the row
# computed and not stored): LeNet-5 conv2's input gradient (14-pixel rows) then runs 16 lanes
# of one vector per row where float8 took two vectors.
_WIDE_ROWS_FROM = 12


def _vector_width(ow, dev, wide=False):
    """The widest of 16 (only where conv2d.vector_limits allows float16), 8, 4, 2, 1 that
    fits in an output row; with `wide` (the forward) 16 also for rows of _WIDE_ROWS_FROM
    pixels or more."""
    widest = _FORCE_VW or _conv.vector_limits(dev)[0]
    if wide and widest == 16 and _WIDE_ROWS_FROM <= ow < 16:
        return 16
    return max(v for v in (16, 8, 4, 2, 1) if v <= min(ow, widest))


def _weight_blocking(co, kh, kw, limit, all_taps=True):
    """(OBC, KHB, KWB, RPW): OBC output channels x KHB tap rows (KHB divides KH) x KWB tap
    columns (1 or KW) per work item, and RPW output rows per step.

    KWB = KW (every tap of the item's channels) where they, their bias, RPW gy vectors each
    and the loaded row fit the vector registers (2 * limit): most channels, then fewest
    computed for nothing, then the most rows per step (up to 4: each loaded input row feeds
    up to RPW rows' multiply-adds; LeNet-5 conv1's pooled gradient at batch 256 0.482 ms with
    2 rows, 0.460 with 3, 0.433 with 4, 0.469-0.492 with 5-7; 1 -> 16 5x5 0.299 -> 0.272,
    3 -> 16 3x3 (2 channels an item) 0.453 -> 0.428, 3 -> 8 3x3 even); only with all_taps
    (CPUs: its shifted loads are typed unaligned vector loads, which a GPU compiler need not
    take) and _ALL_TAPS.
    Otherwise KWB = 1 and (OBC, KHB), plus OBC vectors for the bias, at most `limit`: fewest
    channels computed for nothing (a last block past CO), then the most accumulators (each gy
    load feeds KHB FMAs, each input load OBC). LeNet conv1 (CO 6, KH 5) got (2, 5) there:
    batch 64 0.20 ms, against 0.30 for (1, 5), 0.34 for (6, 1) and 0.44 for (3, 1) (medians of
    25, one process, loaded machine)."""
    if _FORCE_WEIGHT_BLOCK:
        return _FORCE_WEIGHT_BLOCK
    if _ALL_TAPS and all_taps:
        fits = [(obc, rpw) for obc in range(1, co + 1) for rpw in (4, 3, 2, 1)
                if obc * (kh * kw + 1 + rpw) + 1 <= 2 * limit]
        if fits:
            obc, rpw = min(fits, key=lambda f: (-f[0] if -(-co // f[0]) * f[0] == co else 0,
                                                -(-co // f[0]) * f[0], -f[1]))
            return obc, kh, kw, rpw
    options = [(obc, khb) for obc in range(1, co + 1) for khb in range(1, kh + 1)
               if kh % khb == 0 and obc * (khb + 1) <= limit] or [(1, 1)]
    obc, khb = min(options, key=lambda o: (-(-co // o[0]) * o[0], -o[0] * o[1], -o[1]))
    # Output rows per step, their OBC gy vectors each in the registers left (4 kept for the
    # loaded row and addresses). LeNet conv1, batch 64 (medians of 25, one process, loaded
    # machine): 1 row 0.213 ms, 2 rows 0.176, 3 0.164, 4 0.166.
    rpw = max(r for r in (1, 2, 3, 4) if r == 1 or obc * (khb + 1 + r) <= 2 * limit - 4)
    return obc, khb, 1, rpw


# The forward's fused pooling (2x2, stride 2): its `pool` argument.
POOL_CODES = {None: 0, "avg": 1, "max": 2}


@functools.lru_cache(maxsize=None)
def _defines(n, ci, h, w, pads, co, kh, kw, vw, rb, obc, khb, kwb, rpw, rl=1, alone=False):
    """The -D defines of one shape: the same for its forward (pooled or not) and weight-gradient
    kernels, so that one build serves them all where the pooled forward's blocking agrees; a
    forward `alone` (an input gradient: no weight gradient on this shape) leaves that out."""
    pt, pb, pl, pr = pads
    defines = dict(N=n, CI=ci, H=h, W=w, PT=pt, PB=pb, PL=pl, PR=pr, CO=co, KH=kh, KW=kw, VW=vw,
                   RB=rb, RL=rl, OBC=obc, KHB=khb, KWB=kwb, RPW=rpw)
    if alone:
        defines["WITH_WEIGHT_GRAD"] = 0
    return defines


def _plan(dev, x_shape, w_shape, pads, pool=None, wide=False, alone=False):
    n, c, h, w = x_shape
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    o, _, kh, kw = w_shape
    limit = _accumulators(dev)
    rb = min(_FORCE_RB or max(1, limit // o), hp - kh + 1)
    if pool:
        rb -= rb % 2        # pooled rows come in pairs (pools() checks that 2 fit)
    obc, khb, kwb, rpw = _weight_blocking(o, kh, kw, limit, all_taps=dev.is_cpu)
    vw = _vector_width(wp - kw + 1, dev, wide)
    rl = _row_blocks_per_item(n, hp - kh + 1, wp - kw + 1, rb, vw, dev.cl_device.max_compute_units)
    return _defines(n, c, h, w, tuple(pads), o, kh, kw, vw, rb, obc, khb, kwb, rpw, rl, alone)


# Work items to leave per compute unit when the forward's items take several row blocks.
_ITEMS_PER_UNIT = 64


def _row_blocks_per_item(n, oh, ow, rb, vw, units):
    """RL: the forward's row blocks per work item, run one after another, so that the
    per-item costs (its place in the output, PoCL's dispatch of a one-item group) spread over
    more work: a whole column of blocks where that leaves _ITEMS_PER_UNIT items per compute
    unit, else half as many and so on. Event times, new/old (one block per item), alternating
    rounds: LeNet-5 conv1 + tanh + pool at batch 64 0.95 (14 blocks), 3 -> 16 3x3 pad 1 on
    32x32 at batch 64 0.92 (32 blocks), at batch 8 0.88 (4 blocks; 16 per item, 32 items, had
    been 1.25), at 32 1.02, LeNet-5 conv2's input gradient at batch 64 0.99 (4 blocks)."""
    if _FORCE_RL:
        return _FORCE_RL
    blocks, columns = -(-oh // rb), -(-ow // vw)
    rl = blocks
    while rl > 1 and n * columns * -(-blocks // rl) < _ITEMS_PER_UNIT * units:
        rl = -(-rl // 2)
    return rl


def _handles(dev, x_shape, w_shape, stride, dilation, groups):
    """What the kernels can run at all: stride 1, no dilation, groups 1, and as many output
    channels as a work item has accumulators (it holds them all)."""
    return (tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1
            and w_shape[0] <= _accumulators(dev))


def supports(x_shape, w_shape, stride, pads, dilation=(1, 1), groups=1, pass_="forward", registers=16):
    """True where forward() (pass_="forward") or weight_grad() (pass_="weight") runs and beats
    conv2d.py's direct kernels: stride 1, no dilation, groups 1, at most 8 output channels
    (the accumulators fit AVX2's 16 registers too), output rows of 8 pixels or more; the weight
    gradient also at most 4 input channels. With 32 vector registers (`registers`, from
    conv2d.vector_limits: AVX-512) also 9-16 output channels, the forward only on rows of 16
    pixels or more.

    Measured on PoCL 3.0, 2-core AVX-512 CPU, batch 64, old/new time (medians of 21 alternating
    runs, loaded machine): forward 1.2-7x faster on every stride-1 shape with CO <= 16 and
    OW >= 8 tried (LeNet conv1 2.5x, 3->8 3x3 1.9x, 32->8 3x3 at 16x16 1.5x), slower at OW 5-6
    (0.68-0.92x); weight gradient 1.3-6x faster with CI <= 4 (LeNet conv1 2.45x, 3->8 3x3 1.6x),
    0.4-1.1x from CI 6 on (every input channel re-reads gy). 16 channels (min of 25 runs, two
    rounds): forward 16->16 3x3 on 32x32 1.37-1.41 against 1.82-1.83 ms, 3->16 3x3 0.68 against
    0.95-1.59 ms, but LeNet's 6->16 5x5 on 10-pixel rows 0.30 against 0.17 ms; weight gradient
    3->16 3x3 0.68-0.96 against 0.95-1.03 ms, 1->16 5x5 0.48 against 0.78 ms."""
    if pass_ not in ("forward", "weight"):
        raise ValueError(f"conv2d_rows.supports: pass_ must be 'forward' or 'weight', got {pass_!r}")
    if (tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or groups != 1
            or len(x_shape) != 4 or len(w_shape) != 4 or w_shape[1] != x_shape[1]):
        return False
    ow = x_shape[3] + pads[2] + pads[3] - w_shape[3] + 1
    if pass_ == "weight":
        return w_shape[0] <= max(8, registers // 2) and ow >= 8 and x_shape[1] <= 4
    return (w_shape[0] <= 8 and ow >= 8) or (w_shape[0] <= registers // 2 and ow >= 16)


def _pads_in_kernel(x_shape, w_shape, pads):
    """Whether the forward pads inside its kernel (True) or runs on a zero-padded copy (the
    same sums less the zero products of padding rows, which it skips). Inside measured as fast
    or faster on every shape tried (PoCL 3.0, 2-core AVX-512, event times of one process, min of 30-40 alternating runs, loaded machine;
    copy + kernel against kernel alone): LeNet-5 conv2's input gradient (gy 64x16x10x10 padded
    by 4, 6x16x5x5) 0.65 -> 0.60 ms, at batch 256 3.11 -> 2.44, ResNet-20's 64x16x32x32 -> 16
    3x3 pad 1 1.21 -> 1.15 and 2.25 -> 2.12, 64x3x32x32 -> 16 0.58-0.59 -> 0.56-0.58 (a tie:
    its copy is small and in cache)."""
    if _FORCE_PAD_IN_KERNEL is not None:
        return _FORCE_PAD_IN_KERNEL
    return True


def _padded(dev, x, pads):
    if not any(pads):
        return x
    top, bottom, left, right = pads
    n, c, h, wd = x.shape
    return _conv._pad(dev, x, h + top + bottom, wd + left + right, top, left)


def pools(dev, x_shape, w_shape, pads, pool):
    """Whether forward() can fuse `pool` ("avg" or "max", 2x2 windows, stride 2) for this
    shape: even output height and width, and a pair of rows of accumulators per work item."""
    oh = x_shape[2] + pads[0] + pads[1] - w_shape[2] + 1
    ow = x_shape[3] + pads[2] + pads[3] - w_shape[3] + 1
    return (pool in ("avg", "max") and oh % 2 == 0 and ow % 2 == 0 and ow >= 2
            and 2 * w_shape[0] <= _accumulators(dev))


def forward(dev, x, w, b, stride, pads, activation=None, negative_slope=0.01, dilation=(1, 1),
            groups=1, pool=None, keep_full=False, alone=False, residual=None):
    """conv2d.conv2d_forward's result y (N,O,OH,OW) for x (N,C,H,W), w (O,C,KH,KW), b (O,) or
    None, stride=(1,1), pads=(top,bottom,left,right), activation None|"relu"|"leaky_relu"|
    "relu6"|"tanh"|"sigmoid" fused after the bias; OH = H+top+bottom-KH+1, likewise OW.
    pool "avg" or "max" (where pools() says so): y pooled 2x2 with stride 2 after the
    activation, (N,O,OH/2,OW/2), in the same kernel; with keep_full also the full-size y:
    (y, pooled). alone: no weight gradient will run on this shape (an input gradient computed
    as this forward), so its build leaves that kernel out. residual (not with pool): an array
    of y's shape added before the activation.
    None where the kernels cannot run the shape (stride or dilation other than 1, groups > 1,
    more output channels than accumulators: 16 on AVX-512, 8 elsewhere)."""
    check_array(x, 4, "conv2d input")
    check_array(w, 4, "conv2d weight")
    stride, pads, dilation, groups = _conv._check_params(stride, pads, dilation, groups)
    oh, ow = _conv._output_hw(x.shape, w.shape, stride, pads, dilation, groups)
    if activation not in _device.ACTIVATION_CODES:
        raise ValueError(f"conv2d: unknown activation {activation!r}; "
                         f"choose one of {list(_device.ACTIVATION_CODES)}")
    if b is not None:
        check_array(b, 1, "conv2d bias")
        if b.shape[0] != w.shape[0]:
            raise ShapeError(f"conv2d: bias has {b.shape[0]} elements, the weight has {w.shape[0]} filters")
    if not _handles(dev, x.shape, w.shape, stride, dilation, groups):
        return None
    if pool is not None and not pools(dev, x.shape, w.shape, pads, pool):
        raise ValueError(f"conv2d_rows.forward cannot fuse pool={pool!r} for input {tuple(x.shape)} "
                         f"and weight {tuple(w.shape)}: check pools() first")
    if any(pads) and not _pads_in_kernel(x.shape, w.shape, pads):
        x, pads = _padded(dev, x, pads), (0, 0, 0, 0)
    d = _plan(dev, x.shape, w.shape, pads, pool, wide=pool is None, alone=alone)
    n, o = x.shape[0], w.shape[0]
    y = dev.empty((n, o, oh // 2, ow // 2) if pool else (n, o, oh, ow))
    full = dev.empty((n, o, oh, ow)) if pool and keep_full else None
    row_blocks = -(-oh // d["RB"])
    grid = (n * -(-row_blocks // d["RL"]) * -(-ow // d["VW"]),)
    launch(dev, _conv._kernel(dev, _FILE, "conv2d_rows_forward", d), grid, _conv._local(dev, grid),
           buf(x), buf(w), buf(b if b is not None else w), buf(y), buf(full if full is not None else y),
           buf(residual if residual is not None else y), i32(b is not None), i32(residual is not None),
           i32(_device.ACTIVATION_CODES[activation]), f32(negative_slope),
           i32(POOL_CODES[pool]), i32(full is not None))
    return (full, y) if full is not None else y


def weight_grad(dev, x, gy, w_shape, stride, pads, has_bias=True, dilation=(1, 1), groups=1):
    """conv2d.conv2d_backward's weight and bias gradients (gw (O,C,KH,KW), gb (O,) or None)
    for x (N,C,H,W) and gy = dL/dy (N,O,OH,OW) of the pre-activation output; None where the
    kernels cannot run the shape (as forward)."""
    check_array(gy, 4, "conv2d output gradient")
    oh, ow = _weight_grad_shape(x, w_shape, stride, pads, dilation, groups)
    expected = (x.shape[0], int(w_shape[0]), oh, ow)
    if tuple(gy.shape) != expected:
        raise ShapeError(f"conv2d: output gradient has shape {tuple(gy.shape)}, expected {expected}")
    if not _handles(dev, x.shape, w_shape, stride, dilation, groups):
        return None
    return _weight_grad(dev, x, w_shape, pads, has_bias, "conv2d_rows_backward_weight", buf(gy))


def weight_grad_pooled(dev, x, gp, y, w_shape, stride, pads, has_bias=True, activation=None,
                       negative_slope=0.01, dilation=(1, 1), groups=1):
    """weight_grad where dL/dy comes from a 2x2 stride-2 average pooling (no padding, floor
    mode) of act(y): gp (N,O,OH//2,OW//2) the pooling's output gradient, y (N,O,OH,OW) the
    activation's output (None without an activation). The kernel forms
    gy = gp / 4 * act'(y) as it reads it: no pooling backward pass, no gy in memory. None
    where the kernels cannot run the shape."""
    check_array(gp, 4, "pooled output gradient")
    oh, ow = _weight_grad_shape(x, w_shape, stride, pads, dilation, groups)
    n, o = x.shape[0], int(w_shape[0])
    if (y is None) != (activation is None):
        raise ValueError("conv2d_rows.weight_grad_pooled: give y (the activation's output) exactly when an "
                         "activation is given")
    if y is None:
        y = gp      # not read: without an activation dL/dy is gp's spread alone
    elif check_array(y, 4, "activation output").shape != (n, o, oh, ow):
        raise ShapeError(f"conv2d: activation output has shape {tuple(y.shape)}, expected {(n, o, oh, ow)}")
    if tuple(gp.shape) != (n, o, oh // 2, ow // 2) or min(oh, ow) < 2:
        raise ShapeError(f"conv2d: pooled output gradient has shape {tuple(gp.shape)}, expected "
                         f"{(n, o, oh // 2, ow // 2)} (2x2 windows, stride 2, of a {oh}x{ow} output)")
    if not _handles(dev, x.shape, w_shape, stride, dilation, groups):
        return None
    return _weight_grad(dev, x, w_shape, pads, has_bias, "conv2d_rows_backward_weight_pooled", buf(gp), buf(y),
                        extra=(f32(negative_slope),), act=_device.ACTIVATION_CODES[activation])


_PLANS_WITH_ACTIVATION = {}


def _with_activation(defines, act):
    """defines plus POOLED_ACT=act, one dict per pair (conv2d._kernel keys builds by the dict's
    identity): a build of its own, beside the forward's, for the pooled weight gradient."""
    key = (id(defines), act)
    entry = _PLANS_WITH_ACTIVATION.get(key)
    if entry is None or entry[0] is not defines:
        entry = _PLANS_WITH_ACTIVATION[key] = (defines, dict(defines, POOLED_ACT=act))
    return entry[1]


def _weight_grad_shape(x, w_shape, stride, pads, dilation, groups):
    """(OH, OW) of the convolution, after checking x and the parameters."""
    check_array(x, 4, "conv2d input")
    w_shape = tuple(int(v) for v in w_shape)
    if len(w_shape) != 4:
        raise ShapeError(f"conv2d: weight shape must be (O, C, KH, KW), got {w_shape}")
    stride, pads, dilation, groups = _conv._check_params(stride, pads, dilation, groups)
    return _conv._output_hw(x.shape, w_shape, stride, pads, dilation, groups)


def _weight_grad(dev, x, w_shape, pads, has_bias, kernel_name, *gy_buffers, extra=(), act=None):
    """Partial sums over slices of the output rows by `kernel_name` (reading gy_buffers, then
    taking `extra` after rows_per_slice; act: the pooled kernel's POOLED_ACT), then their
    reduction: (gw, gb or None)."""
    pads = tuple(int(p) for p in pads)
    xp = _padded(dev, x, pads)
    d = _plan(dev, x.shape, w_shape, pads)
    if act is not None:
        d = _with_activation(d, act)
    n, c = x.shape[:2]
    o, _, kh, kw = (int(v) for v in w_shape)
    oh = x.shape[2] + pads[0] + pads[1] - kh + 1
    blocks = -(-o // d["OBC"])
    items = blocks * c * (kw // d["KWB"]) * (kh // d["KHB"])
    rows = n * oh
    rows_per_slice = -(-rows // max(1, min(rows, -(-_WEIGHT_GRAD_ITEMS // items))))
    slices = -(-rows // rows_per_slice)
    taps = o * c * kh * kw
    part = dev.empty((slices, taps))
    partb = dev.empty((slices, o))
    launch(dev, _conv._kernel(dev, _FILE, kernel_name, d),
           (blocks, c * (kw // d["KWB"]) * (kh // d["KHB"]), slices), (1, 1, 1) if dev.is_cpu else None,
           buf(xp), *gy_buffers, buf(part), buf(partb), i32(rows_per_slice), *extra)
    gw = dev.empty((o, c, kh, kw))
    gb = dev.empty((o,)) if has_bias else None
    launch(dev, _conv._kernel(dev, _FILE, "conv2d_rows_backward_weight_reduce"),
           (taps + (o if has_bias else 0),), None, buf(part), buf(partb), buf(gw),
           buf(gb if has_bias else gw), i32(slices), i32(taps), i32(o))
    return gw, gb
