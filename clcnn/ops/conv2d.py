"""Conv2D forward and backward on the device (kernels/conv2d.cl).

Forward: zero-pad the input once (skipped when there is no padding; in training the padded
copy is kept for the weight gradient), pack the weights as (C*KH*KW, O rounded up to the
channel block) with the bias as one more row, then one register-blocked direct convolution
with bias and activation fused. Backward w.r.t. the input runs the same kernel: for strides
> 1, once per phase of the input (pixels congruent modulo the stride) over gy with that
phase's flipped sub-kernel, written strided into gx (phases form); otherwise either on gy
padded by K-1-pad with the kernel flipped and its channel axes swapped (gather form), or as a
1x1 convolution making columns w^T gy that conv2d_col2im sums per input pixel (columns form,
for outputs smaller than the kernel); a cost estimate picks. On CPUs, narrow inputs with few
channels (LeNet-5's conv2) take the sums form (kernels/conv2d_sums.cl: lanes over the output
channels, only the taps that meet gy) where a count of multiply-adds says it pays. Backward w.r.t. the weights transposes gy to
pixel-major order, sums slices of the output rows in parallel, and a small kernel adds the
slices up (bias gradient included).

The direct kernels' vector lanes run over output channels: float8, or float16 on CPUs that
prefer 16-wide floats (AVX-512) for layers of more than 8 channels (vector_limits; the
blockings below are chosen per width). On this project's AVX-512 machine float16 ran the
benchmark's 64- and 128-channel layers 1.5-2.7x faster than float8 (forward and backward).

Grouped convolutions run every group in the same launches (a group index on one grid axis,
the groups' weights packed one block after another); dilation is folded into the kernels'
index arithmetic by -D defines, so groups=1, dilation=1 builds exactly the plain kernels.
Depthwise convolutions (groups == input channels > 1) go to their own kernels
(clcnn/ops/depthwise.py) unless an algorithm is forced.

On CPUs, 1x1 stride-1 unpadded convolutions run as one matrix product per image
(clcnn/ops/conv2d_pointwise.py, all three passes), and layers with few output channels
(LeNet-5's conv1) run conv2d_rows' kernels instead,
whose vector lanes run along output rows (see clcnn/ops/conv2d_rows.py for when), and wide
3x3 and 5x5 stride-1 layers run as Winograd convolutions where winograd.pays() says so (both
gradients from 64 channels, the forward from 64 at 5x5 and 128 at 3x3), F(4x4, 3x3) /
F(4x4, 5x5) and for the weight gradient F(3x3, 4x4) / F(5x5, 4x4) (clcnn/ops/winograd.py); a kernel the size of the unpadded input (LeNet-5's conv3: one
output pixel per image) runs as the Dense layer's matrix products (clcnn/ops/dense.py).

Each pass also has a GPU-style implicit-GEMM form (kernels/conv2d_tiled.cl: __local tiles and
barriers, padding folded into bounds checks, weights read unpacked, so one launch per pass).
`algorithm` ("direct" | "tiled" | None) forces one; None lets clcnn.tuning pick per device and
shape (timed once for batches >= 16 and cached on disk, else direct on CPUs, tiled on GPUs).
"""
import functools
import math
import os

from .. import device as _device
from .. import tuning
from ..errors import ShapeError
from ..shapes import output_hw
from . import elementwise as _elementwise
from ._common import buf, check_array, f32, i32, launch

_FILE = "conv2d.cl"
_TILED_FILE = "conv2d_tiled.cl"
ALGORITHMS = ("direct", "tiled")
_TUNE_MIN_BATCH = 16    # smaller batches (tests, single images) run the heuristic untimed
_INT32_MAX = 2**31 - 1
# Cost of moving one column value through memory (written, then read by conv2d_col2im), in
# multiply-add lanes, for choosing the form of the input gradient. Measured on PoCL (batch 64,
# nine stride 2-4 shapes with 1x1-7x7 kernels, ResNet-20's four among them): gather won every
# shape whose break-even cost was <= 192 (by 1.07-3.3x), columns the two at 256 and 480 (1.12x,
# 1.45x); 64 had sent all four ResNet-20 downsampling layers to the slower columns form.
_COLUMN_COST = 224
# "gather", "columns" or "sums" forces that form of the input gradient (the tests run them);
# None picks.
_INPUT_GRAD_FORM = None
# Work items to aim for in the weight-gradient kernel, so both cores (or a GPU) get work.
_WEIGHT_GRAD_ITEMS = 64
# Most bytes of gyt one slice of the weight gradient's rows may span. The work items of a slice
# run one after another and each reads the slice's gyt rows, so the slice should stay in a
# CPU core's L2 (2 MiB here): 32x128x16x16 -> 128 3x3 at batch 32 took 39 ms with the whole
# batch in one slice (4 MiB of gyt), 7-16 with 512 KiB slices; 256 KiB measured no better, and
# each slice adds a partial sum of the whole gradient for the reduction to read.
_WEIGHT_GRAD_SLICE_BYTES = 512 * 1024


def _check_params(stride, pads, dilation=(1, 1), groups=1):
    if len(stride) != 2 or min(stride) < 1:
        raise ShapeError(f"conv2d: stride must be two ints >= 1, got {stride!r}")
    if len(pads) != 4 or min(pads) < 0:
        raise ShapeError(f"conv2d: pads must be four ints >= 0 (top, bottom, left, right), got {pads!r}")
    if len(dilation) != 2 or min(dilation) < 1:
        raise ShapeError(f"conv2d: dilation must be two ints >= 1, got {dilation!r}")
    if int(groups) != groups or groups < 1:
        raise ShapeError(f"conv2d: groups must be an int >= 1, got {groups!r}")
    return (tuple(int(s) for s in stride), tuple(int(p) for p in pads),
            tuple(int(d) for d in dilation), int(groups))


def _output_hw(x_shape, w_shape, stride, pads, dilation=(1, 1), groups=1):
    n, c, h, wd = x_shape
    o, wc, kh, kw = w_shape
    if c % groups:
        raise ShapeError(f"conv2d: the input's {c} channels are not divisible by groups={groups}; "
                         f"use a number of groups that divides {c}")
    if o % groups:
        raise ShapeError(f"conv2d: the weight's {o} filters (output channels) are not divisible by "
                         f"groups={groups}; use a number of groups that divides {o}")
    if wc * groups != c:
        raise ShapeError(f"conv2d: weight has {wc} input channels per group (shape {tuple(w_shape)}) "
                         f"but the input has {c} channels (shape {tuple(x_shape)}) in {groups} "
                         f"group(s), so it needs {c // groups}: weights are (O, C/groups, KH, KW)")
    oh, ow = output_hw((h, wd), (kh, kw), stride, pads, "conv2d", dilation)
    top, bottom, left, right = pads
    if max(n * c * (h + top + bottom) * (wd + left + right), n * o * oh * ow) > _INT32_MAX:
        raise ShapeError("conv2d: tensors above 2**31 elements are not supported (32-bit indices)")
    return oh, ow


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


# The widest vector the direct kernels may use: 16 by default (taken only where the device
# prefers float16, see vector_limits); CLCNN_VECTOR_WIDTH=8 keeps them at float8 everywhere.
MAX_VECTOR_WIDTH = 8 if os.environ.get("CLCNN_VECTOR_WIDTH", "16").strip() == "8" else 16


def vector_limits(dev):
    """(widest vector, vector registers) for the direct kernels on dev: float16 and 32
    registers on CPUs whose preferred float vector is 16 wide (AVX-512), else float8 and 16.
    pip's PoCL 3.0 aborts on float16 FMAs on AVX2 CPUs, whose preferred width is 8."""
    return _device_vector_limits(dev) if MAX_VECTOR_WIDTH == 16 else (8, 16)


@functools.lru_cache(maxsize=None)
def _device_vector_limits(dev):
    if dev.is_cpu and dev.cl_device.preferred_vector_width_float >= 16:
        return 16, 32
    return 8, 16


def _accumulator_limit(regs):
    """Accumulators a work item may hold: half the vector registers (the rest hold the
    weights, the broadcast inputs and addresses)."""
    return regs // 2


@functools.lru_cache(maxsize=None)
def _forward_blocking(co, seg, max_vw=8, regs=16):
    """(VW, OBV, PB) of conv2d_forward: vectors of VW output channels x pixels per work item.
    Float16 wherever the device allows it and there are more than 8 channels (LeNet's
    6-channel conv1 took 0.83 ms with float16 against 0.46 ms with float8)."""
    if max_vw == 16 and co > 8:
        return (16,) + _forward_blocking16(co, seg, _accumulator_limit(regs))
    return (8,) + _forward_blocking8(co, seg)


def _forward_blocking8(co, seg):
    """(OBV, PB) of float8s: fewest wasted lanes (channels past CO, pixels computed twice), at
    most 8 accumulators (3x4 also fits) because AVX2 code gets 16 vector registers; ties to
    the bigger block and to two channel vectors (each broadcast input feeds two FMAs)."""
    def key(obv_pb):
        obv, pb = obv_pb
        waste = _round_up(co, 8 * obv) / co * (_round_up(seg, pb) / seg)
        return (round(waste * (8 / min(8, obv * pb)) ** 0.5, 3), -obv * pb, abs(obv - 2))
    options = [(obv, pb) for obv in range(1, 5) for pb in range(1, min(seg, 8) + 1)
               if obv * pb <= 8 or (obv, pb) == (3, 4)]
    return min(options, key=key)


def _forward_blocking16(co, seg, limit):
    """(OBV, PB) of float16s: least FMA instructions (lanes past CO and pixels computed twice
    count) times (1 + loads per FMA: each tap loads OBV weight vectors and PB inputs for
    OBV*PB FMAs), at most `limit` accumulators; square blocks load least (64 -> 64 3x3 at
    batch 32: 4x4 1.96-3.47 ms, 2x8 3.88-4.22, 1x16 2.88-4.88, under load)."""
    def key(obv_pb):
        obv, pb = obv_pb
        acc = obv * pb
        instructions = _round_up(co, 16 * obv) * (_round_up(seg, pb) / seg)
        return (round(instructions * (1 + (obv + pb) / acc) * (8 / min(8, acc)) ** 0.5, 3), -acc)
    options = [(obv, pb) for obv in range(1, 5) for pb in range(1, min(seg, limit) + 1)
               if obv * pb <= limit]
    return min(options, key=key)


@functools.lru_cache(maxsize=None)
def _weight_blocking(co, kh, kw, max_vw=8, regs=16):
    """(VW, OBVW, KHB, PBW) of conv2d_backward_weight: vectors of VW output channels x kernel
    rows per work item (OBVW*KHB*KW accumulators; KHB divides KH so no row is done twice),
    then pixels per step with their OBVW gy vectors in the registers left. Float16 as in
    _forward_blocking."""
    if max_vw == 16 and co > 8:
        return (16,) + _weight_blocking16(co, kh, kw, regs * 3 // 4)
    return (8,) + _weight_blocking8(co, kh, kw)


def _pixels_per_step(obv, khb, kw, limit):
    return max(1, min(4, (limit + 1 - obv * khb * kw) // obv))


def _weight_blocking8(co, kh, kw):
    """(OBVW, KHB, PBW) of float8s: at most 12 accumulators (AVX2 has 16 registers)."""
    def key(option):
        obv, khb = option
        acc = obv * khb * kw
        return (round(_round_up(co, 8 * obv) / co * (8 / min(8, acc)) ** 0.5, 3),
                -_pixels_per_step(obv, khb, kw, 12), -acc)
    if _round_up(co, 8) == 32 and 4 * kw <= 12:
        # Four channel vectors span the whole 128-byte gyt row, so each item reads every
        # row it touches once and each broadcast input feeds four FMAs: 1.51x (1.45-1.56) at
        # 64x16x32x32 -> 32 3x3 and 1.12-1.13x at ResNet-20's 32-channel stage (batch 64,
        # 128) over (1, 3, 4). Wider CO (the row is split) and CO 16 ((2, 1, *): 0.8x) keep
        # the rule below.
        return (4, 1, _pixels_per_step(4, 1, kw, 12))
    options = [(obv, khb) for obv in range(1, 5) for khb in range(1, kh + 1)
               if kh % khb == 0 and obv * khb * kw <= 12] or [(1, 1)]
    best = min(options, key=key)
    return best + (_pixels_per_step(*best, kw, 12),)


def _weight_blocking16(co, kh, kw, limit):
    """(OBVW, KHB, PBW) of float16s: fewest wasted lanes, then the most accumulators up to
    `limit` (each broadcast input feeds OBVW FMAs), then whole kernel rows. Measured at batch
    32 under load: 64 -> 64 3x3 backward 8.6-8.7 ms with (2, 3), 10.0-10.4 with (1, 3), 11.2-12.2
    with (4, 1); 5x5: (4, 1) 12.1-17.8, (2, 1) 12.7-29.3, (1, 5) 13.5-27.2."""
    if co <= 16 and limit < kh * kw <= 25:
        # One channel vector of a 5x5 kernel: a row block holds only 5 accumulators, too few
        # chains to hide the FMA latency, so the item takes the whole kernel (25) and two
        # pixels a step. LeNet-5's conv2 (6 -> 16), alternating rounds: 1.38x at batch 64
        # (0.31 against 0.43 ms), 1.4x at batch 256 (0.77 against 1.08); one pixel a step
        # measured even at 64, 7% slower at 256, four 4% slower at both.
        return 1, kh, 2

    def key(option):
        obv, khb = option
        return (round(_round_up(co, 16 * obv) / co, 3), -obv * khb * kw, -khb)
    options = [(obv, khb) for obv in range(1, 5) for khb in range(1, kh + 1)
               if kh % khb == 0 and obv * khb * kw <= limit] or [(1, 1)]
    best = min(options, key=key)
    # The gy vectors of a pixel step may take the registers past `limit`: 64 -> 64 5x5 at batch
    # 32 ran 6.3-6.7 ms with one pixel a step (4, 1, 1) and 5.6-5.9 with three (4, 1, 3); four
    # spilled (7.7). 3x3 layers go from (2, 3, 3) to (2, 3, 4), which measured even.
    return best + (_pixels_per_step(*best, kw, limit * 4 // 3),)


# Weights one forward work item may stream per launch: it reads CI*KH*KW*OB of them for
# every pixel block, and they stay in its core's L2 only up to about this much (2 MiB L2s,
# float16 lanes, batch 32 at 16x16, GFLOP/s: 64 -> 128 5x5 (410 KiB) 361, 128 -> 128 3x3
# (295 KiB) 344-382, but 256 -> 128 3x3 (590 KiB) 307 and 128 -> 128 5x5 (820 KiB) 257-297).
_CHUNK_WEIGHT_BYTES = 448 * 1024
_MIN_CHUNK_CHANNELS = 8


def _input_chunk(ci, kh, kw, ob, seg, pb):
    """Input channels per conv2d_forward launch (CIC): all of them, or the most that keep a
    work item's weights within _CHUNK_WEIGHT_BYTES (a divisor of ci, at least 8 channels);
    each further chunk reads and writes y once more. Not where the last pixel block of a
    segment overlaps its neighbour (seg % pb): both would add their sums to the same pixels."""
    per_channel = kh * kw * ob * 4
    if seg % pb or ci * per_channel <= _CHUNK_WEIGHT_BYTES:
        return ci
    sizes = [d for d in range(_MIN_CHUNK_CHANNELS, ci) if ci % d == 0]
    fitting = [d for d in sizes if d * per_channel <= _CHUNK_WEIGHT_BYTES]
    return max(fitting) if fitting else min(sizes, default=ci)


def _pool_blocking(co, ow, max_vw=8, regs=16):
    """(VW, OBV, PC) of a pooled conv2d_forward: vectors of VW output channels x PC columns
    (even) of two output rows per work item, at most the accumulator limit, by
    _forward_blocking16's cost (lanes past CO, columns computed twice, loads per FMA)."""
    vw = 16 if max_vw == 16 and co > 8 else 8
    limit = _accumulator_limit(regs) if vw == 16 else 8

    def key(option):
        obv, pc = option
        acc = 2 * obv * pc
        instructions = _round_up(co, vw * obv) * (-(-ow // pc) * pc / ow)
        return (round(instructions * (1 + (obv + 2 * pc) / acc) * (8 / min(8, acc)) ** 0.5, 3), -acc)
    options = [(obv, pc) for obv in range(1, 5) for pc in range(2, ow + 1, 2) if 2 * obv * pc <= limit]
    return (vw,) + min(options, key=key)


@functools.lru_cache(maxsize=None)
def _plan(n, ci, hp, wp, co, kh, kw, stride, oh, ow, groups=1, dilation=(1, 1), limits=(8, 16), out=None,
          pool=None, pads=None, pair=None, selfpack=0, pair_full=True):
    """The -D defines of one convolution shape (ci, co per group), shared by its forward and
    weight-gradient kernels so that both come from one build; limits: vector_limits(dev).
    The two kernels may pick different vector widths: VW is the forward's, _weight_plan's
    copy has the weight gradient's. out: (YH, YW, YSH, YSW, YOFF), the forward's output
    written strided into planes of YH x YW (a phase of a strided input gradient), else None.
    pool: "avg" / "max" for a forward that pools its output 2x2 (_pool_blocking; OH, OW even),
    else None; pair: "avg" / "max" for a forward that writes its output and that pooled 2x2
    from row pairs (PAIR: see pairs()), else None. pads: (top, bottom, left, right) for a
    forward that reads the input unpadded (_pads_in_kernel; hp, wp still count the padding),
    else None. selfpack: the device's compute units for a forward that packs its weights
    itself where _selfpack_blocks allows it (SELFPACK: its units per work item), else 0."""
    seg = n if oh * ow == 1 else ow     # pixels of a block share a row (or, 1x1, the batch)
    vw, obv, pb = _forward_blocking(co, seg, *limits)
    pc = None
    if pool:
        vw, obv, pc = _pool_blocking(co, ow, *limits)
        pb = 2 * pc
    vww, obvw, khb, pbw = _weight_blocking(co, kh, kw, *limits)
    plan = dict(CI=ci, CIC=ci if pool else _input_chunk(ci, kh, kw, vw * obv, seg, pb),
                HP=hp, WP=wp, KH=kh, KW=kw, SH=stride[0], SW=stride[1], CO=co,
                OH=oh, OW=ow, NPIX=n * oh * ow, VW=vw, OBV=obv, PB=pb, COP=_round_up(co, vw * obv),
                VWW=vww, OBVW=obvw, KHB=khb, PBW=pbw, COPW=_round_up(co, vww * obvw), G=groups,
                DH=dilation[0], DW=dilation[1])
    if out is not None:
        plan.update(zip(("YH", "YW", "YSH", "YSW", "YOFF"), out))
    if pool:
        plan.update(POOL=POOL_CODES[pool], PC=pc)
    if pair:
        plan.update(PAIR=POOL_CODES[pair], PAIR_FULL=int(pair_full))
    blocks = selfpack and not (pool or out or pads) and _selfpack_blocks(plan, selfpack)
    if blocks:
        plan.update(SELFPACK=blocks)
    if pads is not None:
        plan.update(PK=1, XH=hp - pads[0] - pads[1], XW=wp - pads[2] - pads[3], PT=pads[0], PL=pads[2])
    return plan


# The forward reads padded inputs in place (conv2d.cl's PK) rather than from a padded copy
# where that measured faster: blocks of at most 8 pixels. Alternating rounds, batch 64, 3x3
# pad 1, against the copy: 16 -> 32 at 32x32 (2 x 8 blocks) 1.12x, 16 -> 48 (3 x 4) 1.09x,
# 64 -> 64 at 8x8 1.2x, 32 -> 32 at 16x16 0.97-1.13x, float8 16 -> 8 1.0x; but 16 -> 16 (one
# channel vector by 16 pixels) 0.68-0.72x. tests/test_conv2d_padding.py compares it with the
# copy; the weight gradient of such a layer reads x unpadded too (_weight_direct_plan). The
# gather form of a stride-1 input gradient pads gy so too (its copy was 8-16% of a
# ResNet-20 32-channel layer's backward): 64x32x16x16 -> 32 3x3 pad 1 1.2x, 32x32x8x8 1.39x.
def _pads_in_kernel(dev, co, oh, ow, pads, pool):
    """Whether conv2d_forward pads inside the kernel (co: output channels per group): padded,
    not pooled, an output of more than one pixel (a 1x1 output's pixel blocks run along the
    batch instead of a row) and pixel blocks of at most 8."""
    return (any(pads) and pool is None and oh * ow > 1
            and _forward_blocking(co, ow, *vector_limits(dev))[2] <= 8)


@functools.lru_cache(maxsize=None)
def _weight_plan(*args, **kwargs):
    """_plan's defines for the weight-gradient kernel: VW set to its own width (the same dict,
    so the same build, when both widths agree)."""
    plan = _plan(*args, **kwargs)
    return plan if plan["VW"] == plan["VWW"] else dict(plan, VW=plan["VWW"])


_KERNELS = {}


def _kernel(dev, filename, name, defines=None):
    """dev.kernel without rebuilding the option strings on every call (host overhead counts
    on the small LeNet layers): `defines` is a dict that _plan / _tiled_plan cache, so its
    id stands for its contents. The entry keeps the dict itself too: an id is unique only
    among live objects, and a plan dropped from those caches (tests clear them) could
    otherwise hand its id, and so its kernel, to a different plan."""
    key = (dev, filename, name, id(defines))
    entry = _KERNELS.get(key)
    if entry is None or entry[0] is not defines:
        kernel = dev.plain_kernel(filename, name) if defines is None else dev.kernel(filename, name, **defines)
        entry = _KERNELS[key] = (defines, kernel)
    return entry[1]


def _local(dev, global_size):
    """CPU: one item per work-group, so that both cores get groups (PoCL runs a group on one
    thread and would otherwise pick one big group for a small grid). Elsewhere the driver
    chooses. PoCL compiles a work-group function per local size, unrolling the loop over a
    group's items: with two items LeNet-5's two conv2d_rows_forward kernels took 3.0 and 2.5 s
    to compile on a cold cache, with one 1.0 and 0.9 s (the cold start 23 -> 19 s), and whole
    steps ran even (alternating rounds, Intel AVX-512, medians of the two's ratio: LeNet-5
    training 0.99-1.03 at batch 64 and 256, ResNet-20 1.02; 8 items per group had been 5-7%
    slower than 2)."""
    if not dev.is_cpu:
        return None
    return (1,) * len(global_size)


def _pad(dev, x, hp, wp, top, left, sh=1, sw=1):
    """x (N, C, H, W) into a zeroed (N, C, hp, wp) at rows top + k*sh, columns left + k*sw."""
    n, c, h, w = x.shape
    out = dev.empty((n, c, hp, wp))
    kernel = _kernel(dev, _FILE, "conv2d_pad")
    launch(dev, kernel, (hp, n * c), None, buf(x), buf(out), i32(h), i32(w), i32(hp), i32(wp),
           i32(top), i32(left), i32(sh), i32(sw))
    return out


def _padded(dev, x, pads, saved=None):
    """x zero-padded by pads (x itself without padding), reusing the copy the forward pass
    saved for this x (one pad kernel less per convolution in the backward pass)."""
    if not any(pads):
        return x
    if saved is not None and "padded" in saved:
        source, source_pads, xp = saved["padded"]
        if source is x and source_pads == pads:
            return xp
    n, c, h, wd = x.shape
    top, bottom, left, right = pads
    return _pad(dev, x, h + top + bottom, wd + left + right, top, left)


def _pack_launch(dev, w_shape, has_bias, cop, mode, groups=1, taps=None):
    """The launch of _pack_weights for a weight of w_shape: (kernel, global size, local size,
    scalar arguments, packed shape)."""
    o, c, kh, kw = w_shape
    o //= groups
    th, tw, rh, rw, sh, sw = taps or (kh, kw, 0, 0, 1, 1)
    rows = (c * kh * kw, o * th * tw, o)[mode]
    grid = (rows + 1, groups)
    scalars = tuple(i32(v) for v in (o, c, kh, kw, cop, mode, has_bias, th, tw, rh, rw, sh, sw))
    return _kernel(dev, _FILE, "conv2d_pack_weights"), grid, _local(dev, grid), scalars, (groups * (rows + 1), cop)


def _pack_weights(dev, w, b, cop, mode, groups=1, taps=None):
    """w packed for conv2d_forward (mode 0: forward, 1: flipped for the gather-form input
    gradient, 2: a 1x1 conv making columns), the bias (or zeros) as one more row; one such
    block per group. taps (mode 1): (th, tw, rh, rw, sh, sw), the sub-kernel of rows rh,
    rh + sh, ... (th of them) and columns rw, rw + sw, ... (tw) that one phase of a strided
    input gradient uses; None: the whole kernel."""
    kernel, grid, local, scalars, shape = _pack_launch(dev, w.shape, b is not None, cop, mode, groups, taps)
    out = dev.empty(shape)
    launch(dev, kernel, grid, local, buf(w), buf(b if b is not None else w), buf(out), *scalars)
    return out


# A forward packs its weights itself (SELFPACK) where they fit in this many floats of private
# memory and each work item gets at least _SELFPACK_MIN_BLOCKS pixel blocks (row pairs count
# two) to repay its packing (8x8 transposes in registers, about half of one of LeNet-5 conv2's
# 10-pixel blocks), with about _SELFPACK_ITEMS work items per compute unit. From 2 blocks an
# item the one launch beat the packing launch and the convolution (batch 4-16, 6 -> 16 5x5
# at 14x14: 67-70 against 81-89 us; 16 -> 16 3x3 at 16x16, batch 8: 82 against 96).
_SELFPACK_FLOATS = 4096
_SELFPACK_MIN_BLOCKS = 2
_SELFPACK_ITEMS = 8


def _pixel_blocks(d):
    """conv2d_forward's pixel blocks of plan d (its work items without POOL, PAIR or SELFPACK)."""
    seg = d["NPIX"] if d["OH"] * d["OW"] == 1 else d["OW"]
    return d["NPIX"] // seg * -(-seg // d["PB"])


def _selfpack_blocks(plan, compute_units):
    """SELFPACK's units per work item for a plan (pixel blocks, or row pairs with PAIR; one
    group, one channel block, every input channel in one launch, weights within
    _SELFPACK_FLOATS), or 0."""
    d = plan
    if d["G"] != 1 or d["COP"] != d["VW"] * d["OBV"] or d["CIC"] != d["CI"]:
        return 0
    if (d["CI"] * d["KH"] * d["KW"] + 1) * d["COP"] > _SELFPACK_FLOATS:
        return 0
    per_item = _pixel_blocks(d) // (_SELFPACK_ITEMS * compute_units)
    if per_item < _SELFPACK_MIN_BLOCKS:
        return 0
    return per_item // 2 if d.get("PAIR") else per_item


def _conv_launch(dev, plan, activation=None, negative_slope=0.01):
    """The launches of conv2d_forward for `plan`: (kernel, global size, local size, the scalar
    arguments of each input-channel chunk's launch, output shape). A plan with a strided
    output (YH, ...) writes into a given array instead; a pooled plan (POOL) gives the output
    pooled 2x2, a row-pair plan (PAIR) the output and that pooled (two shapes)."""
    d = plan
    n = d["NPIX"] // (d["OH"] * d["OW"])
    channel_blocks = d["G"] * d["COP"] // (d["VW"] * d["OBV"])
    if d.get("POOL"):
        grid = (d["NPIX"] // (2 * d["OW"]) * (-(-d["OW"] // d["PC"])), channel_blocks)
        y_shape = (n, d["G"] * d["CO"], d["OH"] // 2, d["OW"] // 2)
    elif d.get("PAIR"):     # a work item per row pair; (full or None, pooled) shapes
        grid = (d["NPIX"] // (2 * d["OW"]), channel_blocks)
        y_shape = ((n, d["G"] * d["CO"], d["OH"], d["OW"]) if d["PAIR_FULL"] else None,
                   (n, d["G"] * d["CO"], d["OH"] // 2, d["OW"] // 2))
    else:
        grid = (_pixel_blocks(d), channel_blocks)
        y_shape = (n, d["G"] * d["CO"], d["OH"], d["OW"])
    if d.get("SELFPACK"):   # SELFPACK units per work item, one channel block
        grid = (-(-grid[0] // d["SELFPACK"]), 1)
    chunks = d["CI"] // d["CIC"]
    code = i32(_device.ACTIVATION_CODES[activation])
    scalars = [(code, f32(negative_slope), i32(k * d["CIC"]), i32(k > 0), i32(k == chunks - 1))
               for k in range(chunks)]
    return _kernel(dev, _FILE, "conv2d_forward", plan), grid, _local(dev, grid), scalars, y_shape


# conv2d_forward's has_residual argument, made once: a call is only allocations and enqueues.
_NO_RESIDUAL, _RESIDUAL = i32(0), i32(1)


def _direct_conv(dev, xp, wt, plan, activation=None, negative_slope=0.01, y=None, residual=None):
    """conv2d_forward over an already padded input xp (or, with the plan's PK, the unpadded
    input) and packed weights wt, into a new array or, for a plan with a strided output (YH,
    ...), into y; a pooled plan (POOL) gives the output pooled 2x2. residual (not with POOL or
    a strided output): an array of the output's shape added before the activation."""
    kernel, grid, local, chunks, y_shape = _conv_launch(dev, plan, activation, negative_slope)
    if y is None:
        y = dev.empty(y_shape)
    unused = (buf(y), _NO_RESIDUAL)
    for k, scalars in enumerate(chunks):
        finishing = residual is not None and k == len(chunks) - 1    # the chunk that adds the bias
        launch(dev, kernel, grid, local, buf(xp), buf(wt), buf(y), *scalars,
               *((buf(residual), _RESIDUAL) if finishing else unused))
    return y


class _DirectForward:
    """The launches of one direct forward: the weight pack, then conv2d_forward once per
    input-channel chunk. Everything but the arrays is worked out here, so that calling it
    is only allocations and enqueues: conv2d_forward keeps one per call signature (_ROUTES)."""

    def __init__(self, dev, plan, w_shape, has_bias, groups, activation, negative_slope):
        # The convolution's build first: the packing kernel comes from its program.
        self.conv = _conv_launch(dev, plan, activation, negative_slope)
        self.pack = _pack_launch(dev, w_shape, has_bias, plan["COP"], 0, groups)
        self.groups = groups
        self.selfpack = bool(plan.get("SELFPACK"))

    def __call__(self, dev, xp, w, b, saved=None, residual=None):
        """y, or for a row-pair plan (y, y pooled) or y pooled alone (PAIR_FULL 0); saved: a
        dict that keeps the packed weights for the backward pass (the sums form of the input
        gradient reads them in the same layout), or None; residual (not with a pooling plan):
        an array of y's shape added before the activation, or None."""
        pack_kernel, pack_grid, pack_local, pack_scalars, wt_shape = self.pack
        kernel, grid, local, chunks, y_shape = self.conv
        # Both arrays before the first launch: that launch wakes PoCL's workers, and host work
        # after it shares a core with one of them.
        pair = isinstance(y_shape[1], tuple)   # (full or None, pooled) from a row-pair plan
        if pair:
            pooled = dev.empty(y_shape[1])
            y = dev.empty(y_shape[0]) if y_shape[0] is not None else None
        else:
            y, pooled = dev.empty(y_shape), None
        out = buf(y if y is not None else pooled)
        # (res, has_residual): the residual goes with the last input-channel chunk, which
        # finishes the sums; the others get a placeholder buffer
        unused = (out, _NO_RESIDUAL)
        finishing = (buf(residual), _RESIDUAL) if residual is not None else unused
        keep = saved is not None and self.groups == 1
        if self.selfpack:   # one launch; item 0 writes the packed weights where they are kept
            wt = dev.empty(wt_shape) if keep else None
            launch(dev, kernel, grid, local, buf(xp), buf(w), out, *chunks[0], *finishing, *((buf(pooled),) if pair else ()),
                   buf(b if b is not None else w), i32(b is not None), buf(wt if keep else w), i32(keep))
        else:
            def pack():
                wt = dev.empty(wt_shape)
                launch(dev, pack_kernel, pack_grid, pack_local, buf(w), buf(b if b is not None else w), buf(wt),
                       *pack_scalars)
                return wt
            wt = dev.derived(("conv2d_pack_weights", wt_shape) + pack_scalars, (w, b), pack)
            for k, scalars in enumerate(chunks):
                launch(dev, kernel, grid, local, buf(xp), buf(wt), out, *scalars,
                       *(finishing if k == len(chunks) - 1 else unused), *((buf(pooled),) if pair else ()))
        if keep:
            saved["packed"] = (w, wt)
        if pair:
            return (y, pooled) if y is not None else pooled
        return y


def _forward_direct(dev, x, w, b, stride, pads, oh, ow, activation, negative_slope,
                    dilation=(1, 1), groups=1, saved=None, pool=None, route_key=None, pair=None, pair_full=True,
                    residual=None):
    """The direct forward; route_key: where the input is read in place (no padded copy), its
    _DirectForward is kept under that key for the next calls. pair (see pairs()): (y, y
    pooled) from one pass. residual: see conv2d_forward."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    in_kernel = _pads_in_kernel(dev, o // groups, oh, ow, pads, pool or pair)
    # Packing in the kernel on CPUs (a work item's private memory).
    plan = _plan(n, c // groups, h + pads[0] + pads[1], wd + pads[2] + pads[3], o // groups, kh, kw,
                 stride, oh, ow, groups, dilation, vector_limits(dev), pool=pool,
                 pads=tuple(pads) if in_kernel else None, pair=pair, pair_full=pair_full,
                 selfpack=dev.cl_device.max_compute_units if dev.is_cpu else 0)
    run = _DirectForward(dev, plan, w.shape, b is not None, groups, activation, negative_slope)
    if in_kernel or not any(pads):
        if route_key is not None:
            _keep_route(route_key, run)
        return run(dev, x, w, b, saved, residual)
    xp = _padded(dev, x, pads)
    if saved is not None:
        saved["padded"] = (x, pads, xp)
    return run(dev, xp, w, b, saved, residual)


# -- the tiled implicit-GEMM form (conv2d_tiled.cl) -------------------------------------------

@functools.lru_cache(maxsize=None)
def _tiled_geometry(max_group, m, nc):
    """(RTSM, RTSN, WPTM, WPTN) for a product of m x nc outputs: 16x16 work items (8x8 where
    the device allows fewer than 256), and the fewest outputs per item (1, 2 or 4) whose tile
    still covers m (nc): small LeNet layers (6 or 16 filters) waste less of a 16-row tile."""
    rts = 16 if max_group >= 256 else 8
    wptm = next((v for v in (1, 2) if rts * v >= m), 4)
    wptn = next((v for v in (1, 2) if rts * v >= nc), 4)
    return rts, rts, wptm, wptn


@functools.lru_cache(maxsize=None)
def _tiled_plan(max_group, compute_units, n, c, h, wd, o, kh, kw, stride, pads, oh, ow,
                groups=1, dilation=(1, 1)):
    """-D defines of one shape (all three passes come from one build) and the (global, local)
    size of each pass; c and o count one group's channels, each group is grid axis 2."""
    products = {"forward": (o, n * oh * ow), "input": (c, n * h * wd), "weight": (o, c * kh * kw + 1)}
    defines = dict(CI=c, H=h, W=wd, CO=o, KH=kh, KW=kw, SH=stride[0], SW=stride[1], PT=pads[0],
                   PL=pads[2], OH=oh, OW=ow, NB=n, TSK=16, G=groups, DH=dilation[0], DW=dilation[1])
    sizes = {}
    for pass_, (m, nc) in products.items():
        rtsm, rtsn, wptm, wptn = _tiled_geometry(max_group, m, nc)
        suffix = {"forward": "F", "input": "I", "weight": "G"}[pass_]
        defines.update({"RTSM": rtsm, "RTSN": rtsn, "WPTM_" + suffix: wptm, "WPTN_" + suffix: wptn})
        sizes[pass_] = [-(-nc // (rtsn * wptn)) * rtsn, -(-m // (rtsm * wptm)) * rtsm, groups], (rtsn, rtsm, 1)
    # The weight gradient has few output tiles but a long K (the batch's pixels): split K so
    # that every compute unit gets a few groups, keeping >= 8 K-tiles (128 pixels) per slice.
    grid, local = sizes["weight"]
    tiles = grid[0] // local[0] * (grid[1] // local[1]) * groups
    defines["KSPLIT"] = max(1, min(-(-4 * compute_units // tiles), n * oh * ow // (16 * 8)))
    grid[2] = groups * defines["KSPLIT"]
    return defines, {k: (tuple(g), l) for k, (g, l) in sizes.items()}


@functools.lru_cache(maxsize=None)
def _limits(dev):
    return dev.cl_device.max_work_group_size, dev.cl_device.max_compute_units


def _tiled(dev, x_shape, w_shape, stride, pads, oh, ow, pass_, dilation, groups):
    o, _, kh, kw = w_shape
    n, c, h, wd = x_shape
    defines, sizes = _tiled_plan(*_limits(dev), n, c // groups, h, wd, o // groups, kh, kw, stride,
                                 pads, oh, ow, groups, dilation)
    return (defines,) + sizes[pass_]


def _forward_tiled(dev, x, w, b, stride, pads, oh, ow, activation, negative_slope,
                   dilation=(1, 1), groups=1, saved=None):
    defines, grid, local = _tiled(dev, x.shape, w.shape, stride, pads, oh, ow, "forward", dilation, groups)
    y = dev.empty((x.shape[0], w.shape[0], oh, ow))
    launch(dev, _kernel(dev, _TILED_FILE, "conv2d_forward_tiled", defines), grid, local,
           buf(x), buf(w), buf(b if b is not None else w), buf(y), i32(b is not None),
           i32(_device.ACTIVATION_CODES[activation]), f32(negative_slope))
    return y


def _input_grad_tiled(dev, w, gy, x_shape, stride, pads, dilation=(1, 1), groups=1):
    defines, grid, local = _tiled(dev, x_shape, w.shape, stride, pads, gy.shape[2], gy.shape[3],
                                  "input", dilation, groups)
    gx = dev.empty(x_shape)
    launch(dev, _kernel(dev, _TILED_FILE, "conv2d_backward_input_tiled", defines), grid, local,
           buf(gy), buf(w), buf(gx))
    return gx


def _weight_grad_tiled(dev, x, gy, w_shape, stride, pads, has_bias, dilation=(1, 1), groups=1, saved=None):
    defines, grid, local = _tiled(dev, x.shape, w_shape, stride, pads, gy.shape[2], gy.shape[3],
                                  "weight", dilation, groups)
    o, c, kh, kw = w_shape
    slices, t_count, og = defines["KSPLIT"], c * kh * kw, o // groups
    part = dev.empty((slices, groups, t_count, og))
    partb = dev.empty((slices, groups, og))
    launch(dev, _kernel(dev, _TILED_FILE, "conv2d_backward_weight_tiled", defines), grid, local,
           buf(x), buf(gy), buf(part), buf(partb))
    return _reduce_weight_grad(dev, part, partb, slices, w_shape, og, has_bias)


def _reduce_weight_grad(dev, part, partb, slices, w_shape, cop, has_bias):
    """gw (and gb) from per-slice partial sums part (slices, groups, C/groups*KH*KW, cop) and
    partb (slices, groups, cop)."""
    o, c, kh, kw = w_shape
    groups = part.shape[1]
    gw = dev.empty(w_shape)
    gb = dev.empty((o,)) if has_bias else None
    t_count = c * kh * kw
    launch(dev, _kernel(dev, _FILE, "conv2d_backward_weight_reduce"), (t_count + int(has_bias),),
           _local(dev, (t_count + int(has_bias),)), buf(part), buf(partb), buf(gw), buf(gb if has_bias else gw), i32(slices),
           i32(t_count), i32(o), i32(cop), i32(o // groups), i32(has_bias))
    return gw, gb


# -- choosing ------------------------------------------------------------------------------------

def _pick(dev, algorithm, pass_, x_shape, w_shape, stride, pads, candidates, dilation=(1, 1), groups=1):
    """The algorithm to run: the forced one, else the tuner's choice for this device and shape
    (timed once when the batch is >= _TUNE_MIN_BATCH), else direct on CPUs, tiled elsewhere.

    On CPU devices the automatic mode does not time: there the tiled kernels measured 50-1000x
    slower than the direct ones on every LeNet and 3x3 layer, and compiling their barrier
    work-groups costs PoCL 2-3 s a shape, which would only slow the first run. CLCNN_TUNE=1
    times them anyway."""
    if algorithm is not None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"conv2d: unknown algorithm {algorithm!r}; choose one of {ALGORITHMS} "
                             f"(or 'depthwise' for groups == input channels)")
        return algorithm
    return tuning.get_tuner().choose(dev, *_tuning_args(dev, pass_, x_shape, w_shape, stride, pads, candidates,
                                                        dilation, groups))


def _tuning_args(dev, pass_, x_shape, w_shape, stride, pads, names, dilation=(1, 1), groups=1):
    """_pick's arguments of Tuner.choose after the device: key, candidates, default,
    worth_tuning."""
    key = f"conv2d.{pass_}:{tuple(x_shape)}:{tuple(w_shape)}:{tuple(stride)}:{tuple(pads)}".replace(" ", "")
    if groups != 1 or dilation != (1, 1):     # plain convs keep the keys of earlier caches
        key += f":d{dilation[0]}x{dilation[1]}:g{groups}"
    return (key, names, "direct" if dev.is_cpu else "tiled",
            x_shape[0] >= _TUNE_MIN_BATCH and not dev.is_cpu)


def _use_winograd(dev, algorithm, pass_, x_shape, w_shape, stride, pads, dilation, groups):
    """Winograd kernels (clcnn/ops/winograd.py) when "winograd" is forced (refused for shapes
    it cannot run) or, on CPUs, where winograd.pays() says so."""
    if algorithm not in (None, "winograd") or (algorithm is None and not dev.is_cpu):
        return False
    from . import winograd
    runs = winograd.supports(x_shape, w_shape, stride, pads, dilation, groups)
    if algorithm == "winograd":
        if not runs:
            raise ValueError(f"conv2d: algorithm 'winograd' needs stride 1, dilation 1, groups 1, a "
                             f"square {' or '.join(f'{k}x{k}' for k in winograd.TILE)} kernel, pads "
                             f"below its size and transformed tensors under 2**31 elements; got kernel "
                             f"{tuple(w_shape[2:])}, stride {stride}, dilation {dilation}, groups {groups}, "
                             f"pads {pads}, input {tuple(x_shape)}. Use 'direct'")
        return True
    return runs and winograd.pays(pass_, x_shape, w_shape)


def _use_depthwise(algorithm, x_shape, groups):
    """Depthwise kernels for groups == C > 1 unless "direct" or "tiled" is forced, and for
    groups == C (1 included) when "depthwise" is."""
    if algorithm == "depthwise":
        if groups != x_shape[1]:
            raise ValueError(f"conv2d: algorithm 'depthwise' needs groups == input channels, got "
                             f"groups={groups} for {x_shape[1]} channels")
        return True
    return algorithm is None and 1 < groups == x_shape[1]


# A convolution whose window covers its whole unpadded input (LeNet-5's conv3: 16x5x5 in, 5x5
# kernel) has one output pixel per image: it is the matrix product x (N, C*H*W) @ w (O,
# C*KH*KW).T, so on CPUs it runs as a Dense layer (clcnn/ops/dense.py) on reshaped views.
# Whole LeNet-5 steps against the direct kernels (PoCL 3.0, 2-core AVX-512, 9 alternating
# rounds of 30 replayed steps, medians): training at batch 64 1.49 -> 1.40 ms, at 256 4.51 ->
# 4.39 (the backward is 2 launches instead of 5), inference a tie (+-3%); and its first
# training step (cold caches) 10.4 -> 7.8 s: the GEMM programs are the Dense layers' already,
# where conv3's own conv2d.cl builds and first launches took 2.6 s. Results are the same sums
# in the same order as the direct kernels'.
def _use_gemm(dev, algorithm, x_shape, w_shape, pads, dilation, groups):
    """The GEMM form when "gemm" is forced (refused where the window does not cover the whole
    input) or, with algorithm None on CPUs, wherever it can run."""
    if algorithm not in (None, "gemm") or (algorithm is None and not dev.is_cpu):
        return False
    whole = (groups == 1 and tuple(dilation) == (1, 1) and not any(pads)
             and tuple(x_shape[2:]) == tuple(w_shape[2:]))
    if algorithm == "gemm" and not whole:
        raise ValueError(f"conv2d: algorithm 'gemm' needs a kernel the size of the input, no padding, "
                         f"dilation 1 and groups 1; got input {tuple(x_shape)}, kernel "
                         f"{tuple(w_shape[2:])}, pads {pads}, dilation {dilation}, groups {groups}. "
                         f"Use 'direct'")
    return whole


def _use_im2col(dev, algorithm, x_shape, w_shape, stride, pads, dilation, groups):
    """The im2col forward (clcnn/ops/conv2d_im2col.py) when "im2col" is forced (refused where
    it cannot run) or, with algorithm None, where it runs and pays."""
    if algorithm not in (None, "im2col"):
        return False
    from . import conv2d_im2col
    if algorithm is None:       # the shape rule first: it needs no device query
        return (groups == 1 and conv2d_im2col.pays(x_shape, w_shape, stride, pads, dilation)
                and conv2d_im2col.supports(dev, x_shape, w_shape, stride, pads, dilation, groups))
    runs = conv2d_im2col.supports(dev, x_shape, w_shape, stride, pads, dilation, groups)
    if not runs:
        raise ValueError(f"conv2d: algorithm 'im2col' needs a CPU device, one group and at least "
                         f"{conv2d_im2col.min_pixels(dev)} output pixels per image; got input "
                         f"{tuple(x_shape)}, weight {tuple(w_shape)}, stride {stride}, groups {groups} on "
                         f"{dev.name}. Use 'direct'")
    return True


def _as_matrix(dev, a):
    """The (N, C, H, W) array a as an (N, C*H*W) view."""
    return dev.view(a, (a.shape[0], math.prod(a.shape[1:])))


# A forward on small tensors is mostly host work. LeNet-5's conv2 at batch 64, a 0.1 ms kernel,
# spent 44 us in Python before its first launch: the checks, the choice of form, the tuner and
# the plan, all running with cold caches after the wait for the previous call. So once a call
# has run the direct form on an input read in place, its _DirectForward is kept under the
# call's signature, and later calls with that signature only check the arrays, allocate and
# enqueue: 17 us before the first launch. Whole calls of that layer (with queue.finish()),
# medians of 12 rounds of 10, three pairs of processes: 197-209 us -> 168-185 us (PyTorch's
# call: about 160 us; most of the rest is PoCL waking its workers, and the host, around the
# 0.1 ms kernel). The key holds everything the choice reads that a caller can change: the
# arguments and the tuner's mode and cache file.
_ROUTES = {}
_MAX_ROUTES = 512


def _route_key(dev, x, w, b, stride, pads, activation, negative_slope, algorithm, dilation, groups, pool,
               keep_full):
    """conv2d_forward's call signature, or None where it does not hash (lists as stride, ...)."""
    key = (dev, x.shape, w.shape, None if b is None else b.shape, stride, pads, activation, negative_slope,
           algorithm, dilation, groups, pool, keep_full, tuning.mode(), tuning.cache_path())
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _keep_route(key, run):
    if len(_ROUTES) >= _MAX_ROUTES:     # shapes that keep changing (random tests): start again
        _ROUTES.clear()
    _ROUTES[key] = run


def conv2d_forward(dev, x, w, b, stride, pads, activation=None, negative_slope=0.01, algorithm=None,
                   dilation=(1, 1), groups=1, saved=None, pool=None, keep_full=False, residual=None):
    """x (N,C,H,W), w (O,C/groups,KH,KW), b (O,) or None, stride=(sh,sw), pads=(top,bottom,left,right),
    dilation=(dh,dw), groups dividing C and O (input channels g*C/groups.. meet only output
    channels g*O/groups..). Output (N,O,OH,OW), OH = (H+top+bottom - dh*(KH-1) - 1)//sh + 1.
    activation None|"relu"|"leaky_relu"|"tanh"|"sigmoid" fused after the bias.
    algorithm: "direct", "tiled", "winograd" (stride 1, dilation 1, one group, 3x3 or 5x5
    kernels), "depthwise" (groups == C only), "gemm" (a kernel the size of the unpadded input:
    one output pixel, a matrix product), "im2col" (CPUs, one group: the windows as columns,
    then a matrix product, see conv2d_im2col.py) or None (the GEMM form where it runs on CPUs,
    depthwise kernels when groups == C > 1, im2col where conv2d_im2col.pays() says so,
    Winograd on CPUs where winograd.pays() says so, else tuned per device and shape, see
    clcnn.tuning).
    saved: a dict to keep what conv2d_backward(saved=) can reuse (the zero-padded input), or
    None.
    pool: None, or "avg" / "max": the result pooled 2x2 with stride 2 after the activation
    (PyTorch's floor mode), (N,O,OH//2,OW//2); fused into the kernel of conv2d_rows (where
    pools() says so) or of the direct form (even OH and OW), so the full-size map is never
    written (an eval-mode Conv2D -> activation -> pool, LeNet-5's), else a pooling pass after
    the convolution. keep_full (with pool): returns (y, y pooled), both from one pass of
    conv2d_rows where it pools or of the direct form's row pairs (pairs()) (a training step,
    which keeps y for the activation's backward), else from a pooling pass after the
    convolution.
    residual: an array of the output's shape added before the activation, act(conv(x, w) + b +
    residual) (an eval-mode convolution run into the Add after it, clcnn.fusion), or None; not
    with pool."""
    check_array(x, 4, "conv2d input")
    check_array(w, 4, "conv2d weight")
    if b is not None:
        check_array(b, 1, "conv2d bias")
    route_key = None if residual is not None else _route_key(dev, x, w, b, stride, pads, activation,
                                                             negative_slope, algorithm, dilation, groups,
                                                             pool, keep_full)
    route = _ROUTES.get(route_key) if route_key is not None else None
    if route is not None:
        return route(dev, x, w, b, saved)
    stride, pads, dilation, groups = _check_params(stride, pads, dilation, groups)
    if activation not in _device.ACTIVATION_CODES:
        raise ValueError(f"conv2d: unknown activation {activation!r}; "
                         f"choose one of {list(_device.ACTIVATION_CODES)}")
    if pool not in (None, "avg", "max"):
        raise ValueError(f"conv2d: pool must be None, 'avg' or 'max', got {pool!r}")
    oh, ow = _output_hw(x.shape, w.shape, stride, pads, dilation, groups)
    if pool is not None and min(oh, ow) < 2:
        raise ShapeError(f"conv2d: a {oh}x{ow} output cannot be pooled 2x2")
    if keep_full and pool is None:
        raise ValueError("conv2d: keep_full=True keeps the full-size map beside the pooled one: give pool too")
    if b is not None:
        if b.shape[0] != w.shape[0]:
            raise ShapeError(f"conv2d: bias has {b.shape[0]} elements, the weight has {w.shape[0]} filters")
    if residual is not None:
        return _forward_residual(dev, x, w, b, stride, pads, oh, ow, activation, negative_slope, algorithm,
                                 dilation, groups, pool, residual)
    if _use_gemm(dev, algorithm, x.shape, w.shape, pads, dilation, groups):
        from . import dense
        y = dense.dense_forward(dev, _as_matrix(dev, x), _as_matrix(dev, w), b, activation, negative_slope)
        return dev.view(y, (x.shape[0], w.shape[0], 1, 1))
    if _use_depthwise(algorithm, x.shape, groups):
        from . import depthwise
        return _pooled(dev, depthwise.depthwise_forward(dev, x, w, b, stride, pads, activation,
                                                        negative_slope, dilation), pool, keep_full)
    from . import conv2d_pointwise
    if algorithm is None and conv2d_pointwise.supports(dev, x.shape, w.shape, stride, pads, dilation, groups):
        return _pooled(dev, conv2d_pointwise.forward(dev, x, w, b, _device.ACTIVATION_CODES[activation],
                                                     negative_slope, groups), pool, keep_full)
    if _use_im2col(dev, algorithm, x.shape, w.shape, stride, pads, dilation, groups):
        from . import conv2d_im2col
        return _pooled(dev, conv2d_im2col.forward(dev, x, w, b, stride, pads, oh, ow,
                                                  _device.ACTIVATION_CODES[activation], negative_slope,
                                                  dilation), pool, keep_full)
    if algorithm is None and dev.is_cpu:
        from . import conv2d_rows
        if conv2d_rows.supports(x.shape, w.shape, stride, pads, dilation, groups,
                                registers=vector_limits(dev)[1]):
            if pool is not None and conv2d_rows.pools(dev, x.shape, w.shape, pads, pool):
                return conv2d_rows.forward(dev, x, w, b, stride, pads, activation, negative_slope,
                                           pool=pool, keep_full=keep_full)
            return _pooled(dev, conv2d_rows.forward(dev, x, w, b, stride, pads, activation,
                                                    negative_slope), pool, keep_full)
    if _use_winograd(dev, algorithm, "forward", x.shape, w.shape, stride, pads, dilation, groups):
        from . import winograd
        return _pooled(dev, winograd.forward(dev, x, w, b, pads, oh, ow, activation, negative_slope), pool,
                       keep_full)
    forms = {"direct": _forward_direct, "tiled": _forward_tiled}
    args = (dev, x, w, b, stride, pads, oh, ow, activation, negative_slope, dilation, groups)
    algo = _pick(dev, algorithm, "forward", x.shape, w.shape, stride, pads,
                 {name: functools.partial(f, *args) for name, f in forms.items()}, dilation, groups)
    if algo == "direct" and pool is not None and pairs(dev, x.shape, w.shape, stride, pads, oh, ow, dilation, groups):
        return _forward_direct(*args, saved=saved, route_key=route_key, pair=pool, pair_full=keep_full)
    if algo == "direct" and pool is not None and oh % 2 == 0 and ow % 2 == 0 and not keep_full:
        return _forward_direct(*args, saved=saved, pool=pool, route_key=route_key)
    if algo == "direct" and pool is None:
        return _forward_direct(*args, saved=saved, route_key=route_key)
    return _pooled(dev, forms[algo](*args, saved=saved), pool, keep_full)


def _forward_residual(dev, x, w, b, stride, pads, oh, ow, activation, negative_slope, algorithm, dilation, groups,
                      pool, residual):
    """conv2d_forward with a residual: added in the kernel's epilogue where the pointwise,
    im2col, conv2d_rows or direct form runs (one pass over the output instead of three:
    ResNet-50's bottlenecks end in a 1x1 convolution, ResNet-20's blocks in a 3x3), else (the
    depthwise, Winograd and tiled forms) the convolution, then one pass that adds it and
    applies the activation."""
    if pool is not None:
        raise ValueError("conv2d: a residual is added to the full-size output: give pool or residual, not both")
    check_array(residual, 4, "conv2d residual")
    if tuple(residual.shape) != (x.shape[0], w.shape[0], oh, ow):
        raise ShapeError(f"conv2d: residual has shape {tuple(residual.shape)}, the output "
                         f"{(x.shape[0], w.shape[0], oh, ow)}")
    from . import conv2d_im2col, conv2d_pointwise
    code = _device.ACTIVATION_CODES[activation]
    if algorithm is None and conv2d_pointwise.supports(dev, x.shape, w.shape, stride, pads, dilation, groups):
        return conv2d_pointwise.forward(dev, x, w, b, code, negative_slope, groups, residual=residual)
    if _use_im2col(dev, algorithm, x.shape, w.shape, stride, pads, dilation, groups):
        return conv2d_im2col.forward(dev, x, w, b, stride, pads, oh, ow, code, negative_slope, dilation,
                                     residual=residual)
    if algorithm is None and dev.is_cpu:
        from . import conv2d_rows
        if conv2d_rows.supports(x.shape, w.shape, stride, pads, dilation, groups, registers=vector_limits(dev)[1]):
            return conv2d_rows.forward(dev, x, w, b, stride, pads, activation, negative_slope, residual=residual)
    if algorithm in (None, "direct") and not _use_depthwise(algorithm, x.shape, groups) and not _use_winograd(
            dev, algorithm, "forward", x.shape, w.shape, stride, pads, dilation, groups) and not _use_gemm(
            dev, algorithm, x.shape, w.shape, pads, dilation, groups):
        args = (dev, x, w, b, stride, pads, oh, ow, activation, negative_slope, dilation, groups)
        forms = {"direct": _forward_direct, "tiled": _forward_tiled}
        if _pick(dev, algorithm, "forward", x.shape, w.shape, stride, pads,
                 {name: functools.partial(f, *args) for name, f in forms.items()}, dilation, groups) == "direct":
            return _forward_direct(*args, residual=residual)
    from . import activation as activation_ops
    from . import merge
    y = conv2d_forward(dev, x, w, b, stride, pads, algorithm=algorithm, dilation=dilation, groups=groups)
    if activation in (None, "relu"):
        return merge.add_forward(dev, [y, residual], activation=activation)
    return activation_ops.activation_forward(dev, activation, merge.add_forward(dev, [y, residual]), negative_slope)


# The pooled forward's POOL define values.
POOL_CODES = {"avg": 1, "max": 2}


def pairs(dev, x_shape, w_shape, stride, pads, oh, ow, dilation=(1, 1), groups=1):
    """Whether a forward pooled 2x2 runs as conv2d_forward's row pairs (PAIR), keeping its
    full-size output beside the pooled one in a training step (keep_full) or not in eval
    mode: even OH and OW, blocks of whole rows, the input channels in one launch, stride 1 and
    no dilation (LeNet-5's conv2; what the tests draw). Event times at batch 256, training:
    0.45 ms against 0.43 for the plain forward and 0.075-0.083 for the pooling pass after it
    (whole LeNet-5 training steps, two recorded trainers in one process, alternating rounds:
    0.972x and 0.981x the time at batch 256, 0.978x at 64); eval: 0.34 ms against 0.41-0.44 for
    the POOL blocks of two rows (LeNet-5 inference 0.963x the time at batch 256, 0.973x at
    64)."""
    if oh % 2 or ow % 2 or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1):
        return False
    n, c, h, wd = x_shape
    o = w_shape[0]
    plan = _plan(n, c // groups, h + pads[0] + pads[1], wd + pads[2] + pads[3], o // groups, w_shape[2],
                 w_shape[3], tuple(stride), oh, ow, groups, tuple(dilation), vector_limits(dev))
    return plan["PB"] == ow and plan["CIC"] == plan["CI"] and oh * ow > 1


def _pooled(dev, y, pool, keep_full=False):
    """y pooled 2x2 with stride 2 by the pooling kernels (pool "avg" or "max"), or y itself;
    with keep_full (y, pooled)."""
    if keep_full:
        return y, _pooled(dev, y, pool)
    if pool is None:
        return y
    from . import pool as pool_ops
    if pool == "avg":
        return pool_ops.avgpool2d_forward(dev, y, (2, 2), (2, 2), (0, 0, 0, 0))
    return pool_ops.maxpool2d_forward(dev, y, (2, 2), (2, 2), (0, 0, 0, 0))[0]


def conv2d_backward_pooled(dev, x, w, gp, y, stride, pads, activation=None, negative_slope=0.01,
                           need_input_grad=True, has_bias=True, dilation=(1, 1), groups=1, saved=None):
    """conv2d_backward (gx or None, gw, gb or None) of a convolution whose output, through
    `activation`, feeds a 2x2 stride-2 average pooling (no padding, floor mode) with output
    gradient gp (N,O,OH//2,OW//2); y (N,O,OH,OW): the activation's output (None without an
    activation). The model defers the pooling's backward to this op (fusion.py), which runs it
    where it pays, so dL/dy in the NCHW layout is never written:
    - no input gradient, where conv2d_rows runs the weight gradient (CPUs, few channels:
      LeNet-5's conv1): its kernel forms dL/dy from gp and y as it reads it;
    - where the direct weight gradient and the sums form of the input gradient would both read
      dL/dy transposed pixel-major (LeNet-5's conv2): the pooling's backward writes it so
      (avgpool2d_backward_transposed), in place of the NCHW gradient and its transpose;
    - elsewhere the pooling's backward (undoing the activation) runs first, then
      conv2d_backward."""
    check_array(gp, 4, "pooled output gradient")
    check_array(x, 4, "conv2d input")
    check_array(w, 4, "conv2d weight")
    if (y is None) != (activation is None):
        raise ValueError("conv2d_backward_pooled: give y (the activation's output) exactly when an "
                         "activation is given")
    if dev.is_cpu and not need_input_grad:
        from . import conv2d_rows
        if conv2d_rows.supports(x.shape, w.shape, stride, pads, dilation, groups, pass_="weight",
                                registers=vector_limits(dev)[1]):
            grads = conv2d_rows.weight_grad_pooled(dev, x, gp, y, w.shape, stride, pads, has_bias, activation,
                                                   negative_slope, dilation, groups)
            if grads is not None:
                return (None,) + grads
    from . import pool as pool_ops
    stride, pads, dilation, groups = _check_params(stride, pads, dilation, groups)
    oh, ow = _output_hw(x.shape, w.shape, stride, pads, dilation, groups)
    n, o = x.shape[0], w.shape[0]
    cop = _transposed_route(dev, x.shape, w.shape, stride, pads, dilation, groups, need_input_grad)
    if cop is not None:
        gyt = pool_ops.avgpool2d_backward_transposed(dev, gp, (n, o, oh, ow), cop, activation=activation,
                                                     act_output=y, negative_slope=negative_slope)
        gw, gb = _weight_grad_direct(dev, x, None, w.shape, stride, pads, has_bias, saved=saved, gyt=gyt)
        gx = _input_grad_sums(dev, w, None, x.shape, pads, gyt=(gyt, cop), saved=saved) if need_input_grad else None
        return gx, gw, gb
    gy = pool_ops.avgpool2d_backward(dev, gp, (n, o, oh, ow), (2, 2), (2, 2), (0, 0, 0, 0), activation=activation,
                                     act_output=y, negative_slope=negative_slope)
    return conv2d_backward(dev, x, w, gy, stride, pads, need_input_grad=need_input_grad, has_bias=has_bias,
                           dilation=dilation, groups=groups, saved=saved)


def _transposed_route(dev, x_shape, w_shape, stride, pads, dilation, groups, need_input_grad):
    """gyt's row length where conv2d_backward would run the direct weight gradient (chosen
    without timing) and, with the input gradient, the sums form, so that both read dL/dy only
    transposed; else None."""
    if not (dev.is_cpu and groups == 1 and dilation == (1, 1) and stride == (1, 1)
            and not _use_gemm(dev, None, x_shape, w_shape, pads, dilation, groups)
            and not _use_winograd(dev, None, "weight", x_shape, w_shape, stride, pads, dilation, groups)):
        return None
    from . import conv2d_rows
    if conv2d_rows.supports(x_shape, w_shape, stride, pads, dilation, groups, pass_="weight",
                            registers=vector_limits(dev)[1]):
        return None
    if need_input_grad and not (
            _INPUT_GRAD_FORM is None
            and not _use_winograd(dev, None, "input", x_shape, w_shape, stride, pads, dilation, groups)
            and _sums_pay(dev, x_shape, w_shape, stride, pads, dilation, groups)
            and _untimed_pick(dev, "input", x_shape, w_shape, stride, pads) == "direct"):
        return None
    if _untimed_pick(dev, "weight", x_shape, w_shape, stride, pads) != "direct":
        return None
    cop = _weight_direct_plan(dev, x_shape, w_shape, stride, pads, dilation, groups)["COPW"]
    if cop % 8 or (need_input_grad and (cop % 16 or cop < _round_up(w_shape[0], 16))):
        return None
    return cop


def _untimed_pick(dev, pass_, x_shape, w_shape, stride, pads):
    """_pick's choice where it times nothing, else None (the tuner would time the forms on dL/dy
    in its NCHW layout)."""
    return tuning.get_tuner().settled(dev, *_tuning_args(dev, pass_, x_shape, w_shape, stride, pads,
                                                         ("direct", "tiled")))


def _input_grad_direct(dev, w, gy, x_shape, stride, pads, dilation=(1, 1), groups=1, scratch=None,
                       residual=None):
    """dL/dx, plus residual where that is given (see conv2d_backward's input_residual: the
    gather form adds it as it stores, the others in one more pass), by the form that
    _input_grad_form picks. scratch: the dict where the weight gradient left gy transposed, or
    None."""
    form = _input_grad_form(dev, w.shape, x_shape, gy.shape, stride, pads, dilation, groups)
    if form == "gather":
        return _input_grad_gather(dev, w, gy, x_shape, stride, pads, dilation, groups, residual)
    if form == "phases":
        gx = _input_grad_phases(dev, w, gy, x_shape, stride, pads, groups)
    elif form == "sums":
        gx = _input_grad_sums(dev, w, gy, x_shape, pads, scratch)
    else:
        gx = _input_grad_columns(dev, w, gy, x_shape, stride, pads, dilation, groups)
    return _plus(dev, gx, residual)


def _input_grad_form(dev, w_shape, x_shape, gy_shape, stride, pads, dilation, groups):
    """The form of _input_grad_direct: strided convolutions (without dilation) one phase of
    the input at a time ("phases"), narrow inputs with few channels the sums form (_sums_pay),
    others the cheaper of two forms (see conv2d.cl): "gather" multiplies every input pixel by
    all KH*KW taps, "columns" only the taps that hit, but writes and reads N*C*KH*KW*OH*OW
    columns in between. _INPUT_GRAD_FORM forces one (tests)."""
    if dilation == (1, 1) and (_INPUT_GRAD_FORM == "phases" or (_INPUT_GRAD_FORM is None and max(stride) > 1)):
        return "phases"
    if _INPUT_GRAD_FORM == "sums" or (_INPUT_GRAD_FORM is None and _sums_pay(dev, x_shape, w_shape, stride, pads,
                                                                             dilation, groups)):
        if not _sums_runs(dev, x_shape, w_shape, stride, dilation, groups):
            raise ValueError(f"conv2d: the sums form of the input gradient needs float16 vectors on the "
                             f"device, stride 1, dilation 1, one group and input rows of at most 16 "
                             f"pixels; got input {tuple(x_shape)}, stride {stride}, dilation {dilation}, "
                             f"groups {groups} on {dev.name}")
        return "sums"
    n, c, h, wd = x_shape
    o, cg, kh, kw = w_shape
    og = o // groups
    _, _, oh, ow = gy_shape
    if n * c * kh * kw * oh * ow > _INT32_MAX:
        return "gather"     # the columns would overflow the kernels' 32-bit indices
    if _INPUT_GRAD_FORM in ("gather", "columns"):
        return _INPUT_GRAD_FORM
    gather_cost = groups * h * wd * kh * kw * og * _round_up(cg, 8)
    columns_cost = groups * oh * ow * og * _round_up(cg * kh * kw, 8) + _COLUMN_COST * oh * ow * c * kh * kw
    return "gather" if gather_cost <= columns_cost else "columns"


def _plus(dev, gx, residual):
    """gx + residual in one more pass (the input-gradient forms that cannot add it as they store)."""
    if residual is None:
        return gx
    from .merge import add_forward
    return add_forward(dev, [gx, residual])


def _input_grad_gather(dev, w, gy, x_shape, stride, pads, dilation, groups, residual=None):
    """The gather form of dL/dx (+ residual, added as the kernel stores): gy dilated by the
    stride, padded by (dilated extent - 1 - pad), convolved (same dilation, stride 1) with
    the flipped kernel, per group with the channel axes swapped."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    og = o // groups
    top, bottom, left, right = pads
    ekh, ekw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    rows = _gather_by_rows(dev, w, gy, x_shape, stride, pads, dilation, groups, residual)
    if rows is not None:
        return rows
    gather_pads = (ekh - 1 - top, ekh - 1 - bottom, ekw - 1 - left, ekw - 1 - right)
    in_kernel = (gather_pads if stride == (1, 1) and min(gather_pads) >= 0
                 and _pads_in_kernel(dev, cg, h, wd, gather_pads, None) else None)
    # with in_kernel the forward kernel pads gy as it reads it
    gyd = gy if in_kernel else _pad(dev, gy, h + ekh - 1, wd + ekw - 1, ekh - 1 - top, ekw - 1 - left, *stride)
    plan = _plan(n, og, h + ekh - 1, wd + ekw - 1, cg, kh, kw, (1, 1), h, wd, groups, dilation,
                 vector_limits(dev), pads=in_kernel)
    wt = _pack_weights(dev, w, None, plan["COP"], mode=1, groups=groups)
    return _direct_conv(dev, gyd, wt, plan, residual=residual)


def _input_grad_columns(dev, w, gy, x_shape, stride, pads, dilation, groups):
    """The columns form of dL/dx: cols = w^T gy as a 1x1 convolution, then conv2d_col2im sums
    each input pixel's taps."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    og = o // groups
    _, _, oh, ow = gy.shape
    top, _, left, _ = pads
    plan = _plan(n, og, oh, ow, cg * kh * kw, 1, 1, (1, 1), oh, ow, groups, limits=vector_limits(dev))
    cols = _direct_conv(dev, gy, _pack_weights(dev, w, None, plan["COP"], mode=2, groups=groups), plan)
    if (oh, ow, h, wd, dilation) == (1, 1, kh, kw, (1, 1)) and not any(pads):
        return cols.reshape(x_shape)    # one window covering the input: the columns are gx
    gx = dev.empty(x_shape)
    launch(dev, _kernel(dev, _FILE, "conv2d_col2im"), (wd, h, n * c), None, buf(cols), buf(gx),
           i32(c), i32(h), i32(wd), i32(kh), i32(kw), i32(oh), i32(ow), i32(stride[0]),
           i32(stride[1]), i32(top), i32(left), i32(dilation[0]), i32(dilation[1]))
    return gx


# The sums form (kernels/conv2d_sums.cl): lanes over the forward's output channels, only the
# taps that meet gy, one row of gx per work item, its lanes added up at the end.
def _sums_runs(dev, x_shape, w_shape, stride, dilation, groups):
    """Where conv2d_sums.cl can run: float16 lanes on the device, stride 1, no dilation, one
    group, input rows of at most 16 pixels."""
    return (vector_limits(dev)[0] == 16 and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and groups == 1 and x_shape[3] <= 16)


def _taps_inside(size, out, k, pad):
    """Taps (pixel, kernel offset) of an input axis of `size` that meet one of the `out`
    outputs: sum over input positions i of the offsets k' with 0 <= i + pad - k' < out."""
    return sum(1 for i in range(size) for t in range(k) if 0 <= i + pad - t < out)


# One row of gx's lane sums and stores against the multiply-adds, in lane-FMAs: 45 vector
# additions and shuffles of 16 lanes, fitted to LeNet-5's conv2 (0.146 against 0.198 ms).
_SUMS_ROW_COST = 526


def _sums_pay(dev, x_shape, w_shape, stride, pads, dilation, groups):
    """Where the automatic choice takes the sums form: CPUs where it runs, on the ground of
    conv2d_rows' gather form (inputs of at most 8 channels, rows of 8 or more pixels), where a
    count of lane multiply-adds puts it below 0.9 of that form's: the gather form's lanes run
    along gx rows (rounded up to its vector) over every tap column, zeros of the padded gy
    included; the sums form's over the output channels (rounded up to 16), real taps only,
    plus _SUMS_ROW_COST per row. Batch 64, sums / gather (gy transposed once for both
    gradients): LeNet-5's conv2 (6 <- 16, 5x5, 14x14) 0.74, 1 <- 16 5x5 pad 2 on 12x12 0.58,
    8 <- 64 3x3 on 10x10 0.49 (the count: 0.74, 0.77, 0.57); 3 <- 16 3x3 pad 1 on 16x16 1.26,
    4 <- 12 1.82, 8 <- 32 on 8x8 0.99 (the count: 1.20, 1.60, 1.17)."""
    if not (dev.is_cpu and _sums_runs(dev, x_shape, w_shape, stride, dilation, groups)
            and x_shape[1] <= 8 and x_shape[3] >= 8):
        return False
    from . import conv2d_rows
    oh, ow = _output_hw(x_shape, w_shape, stride, pads, dilation, groups)
    return _sums_cheaper(x_shape[2], x_shape[3], oh, ow, w_shape[0], w_shape[2], w_shape[3], pads[0], pads[2],
                         conv2d_rows._vector_width(x_shape[3], dev, wide=True))


@functools.lru_cache(maxsize=None)
def _sums_cheaper(h, wd, oh, ow, o, kh, kw, top, left, vw):
    """_sums_pay's count (cached: its loops would otherwise run on every eager backward)."""
    rows = _taps_inside(h, oh, kh, top)
    gather = rows * _round_up(wd, vw) * kw * o
    sums = rows * _taps_inside(wd, ow, kw, left) * _round_up(o, 16) + h * _SUMS_ROW_COST
    return sums < 0.9 * gather


@functools.lru_cache(maxsize=None)
def _sums_plan(n, c, h, wd, oh, ow, kh, kw, top, left, cop):
    return dict(N=n, C=c, H=h, W=wd, OH=oh, OW=ow, KH=kh, KW=kw, PT=top, PL=left, COP=cop)


def _transposed(dev, gy, cop, scratch=None):
    """gy (N, O, OH, OW) as gyt (N*OH*OW, cop), zeros past O (conv2d_transpose_nchw), taken
    from `scratch` when the weight gradient made it for this gy with a row length that
    works (one transpose per backward pass)."""
    kept = (scratch or {}).get("gyt")
    if kept is not None and kept[0] is gy and kept[2] % 16 == 0 and kept[2] >= cop:
        return kept[1], kept[2]
    return _transpose_gy(dev, gy, gy.shape[1], 1, cop), cop


def _transpose_gy(dev, gy, og, groups, cop):
    """gy (N, groups*og, OH, OW) pixel-major: (N*OH*OW, groups*cop), each group's og channels
    at g*cop, zeros past them (conv2d_transpose_nchw)."""
    n, _, oh, ow = gy.shape
    gyt = dev.empty((n * oh * ow, groups * cop))
    tgrid = (-(-n * oh * ow // 16),)
    launch(dev, _kernel(dev, _FILE, "conv2d_transpose_nchw"), tgrid, _local(dev, tgrid),
           buf(gy), buf(gyt), i32(og), i32(oh * ow), i32(cop), i32(groups), i32(n * oh * ow))
    return gyt


def _input_grad_sums(dev, w, gy, x_shape, pads, scratch=None, gyt=None, saved=None):
    """dL/dx by conv2d_sums.cl (stride 1, no dilation, one group; _sums_runs). gyt: (dL/dy
    already transposed, its row length), gy then unread (None). saved: conv2d_forward's dict,
    whose packed weights (the forward's layout, its bias row unread here) serve where their
    rows have the length this pass needs."""
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    oh, ow = _output_hw(x_shape, w.shape, (1, 1), pads)
    gyt, cop = gyt or _transposed(dev, gy, _round_up(o, 16), scratch)
    packed = (saved or scratch or {}).get("packed")
    if packed is not None and packed[0] is w and packed[1].shape == (c * kh * kw + 1, cop):
        wt = packed[1]
    else:
        wt = _pack_weights(dev, w, None, cop, mode=0)
    gx = dev.empty(x_shape)
    grid = (n * c * h,)
    launch(dev, _kernel(dev, "conv2d_sums.cl", "conv2d_input_grad_sums",
                        _sums_plan(n, c, h, wd, oh, ow, kh, kw, pads[0], pads[2], cop)),
           grid, _sums_local(dev, h, grid), buf(gyt), buf(wt), buf(gx))
    return gx


def _sums_local(dev, h, grid):
    """On CPUs a work-group per plane of gx (its H rows, one work item each): this kernel's
    items are small (a row of at most 16 pixels), and a group per item cost PoCL's dispatch of
    a group each time (LeNet-5's conv2 at batch 256: 0.62-0.64 ms against 0.56-0.57 with
    groups of 8 to 56 items; batch 64 0.160 against 0.144); the build took as long."""
    return (h,) if dev.is_cpu and h <= 64 else _local(dev, grid)


def _gather_by_rows(dev, w, gy, x_shape, stride, pads, dilation, groups, residual=None):
    """The gather form (+ residual) by conv2d_rows' forward kernel where it pays (few input
    channels, as LeNet-5's conv2: 6; stride 1; CPUs), else None: gy padded by K-1-pad,
    convolved with the flipped kernel as plain (C, O, KH, KW) weights."""
    if not dev.is_cpu or groups != 1 or _INPUT_GRAD_FORM == "gather":
        return None
    o, c, kh, kw = w.shape
    top, bottom, left, right = pads
    gather_pads = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
    from . import conv2d_rows
    if min(gather_pads) < 0 or not conv2d_rows.supports(gy.shape, (c, o, kh, kw), stride, gather_pads,
                                                        dilation, groups, registers=vector_limits(dev)[1]):
        return None
    wf = dev.empty((c, o, kh, kw))
    # On CPUs a group per filter: with None PoCL made the whole grid one group, whose loop
    # over the items it unrolled and vectorised, 0.5 s to compile on a cold cache; a group of
    # kh*kw items took 0.03 s, and both ran in ~32 us (LeNet-5's conv2). The kernel has no
    # bounds check, so the group must divide the grid and fit the device's limit.
    per_filter = dev.is_cpu and kh * kw <= dev.cl_device.max_work_group_size
    launch(dev, _kernel(dev, _FILE, "conv2d_flip_weights"), (kh * kw, o, c), (kh * kw, 1, 1) if per_filter else None,
           buf(w), buf(wf), i32(o), i32(c), i32(kh), i32(kw))
    return conv2d_rows.forward(dev, gy, wf, None, (1, 1), gather_pads, alone=True, residual=residual)


def _input_grad_phases(dev, w, gy, x_shape, stride, pads, groups=1):
    """dL/dx of a convolution with stride (sh, sw), dilation 1, one phase at a time: input
    pixels (ph + sh*a, pw + sw*b) receive gy only through the kernel rows rh, rh + sh, ...
    (rh = (ph + top) mod sh) and the columns rw, rw + sw, ..., so each phase is a stride-1
    gather-form convolution of gy (padded by taps - 1 - (ph + top) // sh) with that flipped
    sub-kernel, written strided into gx. The gather form on gy dilated by the stride multiplies
    the zeros between its pixels too (3 in 4 at stride 2); a phase that no tap reaches (a
    kernel smaller than the stride) stays zero."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    sh, sw = stride
    top, _, left, _ = pads
    phases = []
    for ph in range(min(sh, h)):
        for pw in range(min(sw, wd)):
            rh, rw = (ph + top) % sh, (pw + left) % sw
            phases.append((ph, pw, rh, rw, (ph + top) // sh, (pw + left) // sw,
                           len(range(rh, kh, sh)), len(range(rw, kw, sw)),
                           len(range(ph, h, sh)), len(range(pw, wd, sw))))
    reached = [p for p in phases if p[6] and p[7]]
    gx = dev.empty(x_shape)
    if len(reached) < len(phases):    # positions no tap reaches get no gradient
        _elementwise.fill(dev, gx)
    for ph, pw, rh, rw, qh, qw, th, tw, rows, cols in reached:
        hp, wp, pt, pl = rows + th - 1, cols + tw - 1, th - 1 - qh, tw - 1 - qw
        gyp = gy if (hp, wp, pt, pl) == (gy.shape[2], gy.shape[3], 0, 0) else _pad(dev, gy, hp, wp, pt, pl)
        plan = _plan(n, o // groups, hp, wp, cg, th, tw, (1, 1), rows, cols, groups, (1, 1),
                     vector_limits(dev), out=(h, wd, sh, sw, ph * wd + pw))
        wt = _pack_weights(dev, w, None, plan["COP"], mode=1, groups=groups, taps=(th, tw, rh, rw, sh, sw))
        _direct_conv(dev, gyp, wt, plan, y=gx)
    return gx


def _rows_per_slice(rows, row_bytes, items):
    """Output rows per slice of the weight gradient: few enough that the slices times `items`
    (work items per slice) reach _WEIGHT_GRAD_ITEMS and that a slice spans at most
    _WEIGHT_GRAD_SLICE_BYTES of gyt (rows of row_bytes), else all rows in one slice."""
    by_items = -(-rows // max(1, min(rows, -(-_WEIGHT_GRAD_ITEMS // items))))
    return min(by_items, max(1, _WEIGHT_GRAD_SLICE_BYTES // row_bytes))


def _weight_direct_plan(dev, x_shape, w_shape, stride, pads, dilation, groups):
    """conv2d_backward_weight's plan for x_shape: the forward's defines, so that it reads x
    unpadded where the forward does (PK), else a zero-padded copy."""
    o, cg, kh, kw = w_shape
    oh, ow = _output_hw(x_shape, w_shape, stride, pads, dilation, groups)
    # The forward's defines (PK included), so that both kernels come from one build.
    in_kernel = _pads_in_kernel(dev, o // groups, oh, ow, pads, None)
    hp, wp = x_shape[2] + pads[0] + pads[1], x_shape[3] + pads[2] + pads[3]
    return _weight_plan(x_shape[0], cg, hp, wp, o // groups, kh, kw, stride, oh, ow, groups, dilation,
                        vector_limits(dev), pads=tuple(pads) if in_kernel else None)


def _weight_grad_direct(dev, x, gy, w_shape, stride, pads, has_bias, dilation=(1, 1), groups=1, saved=None,
                        scratch=None, gyt=None):
    """dL/dw and dL/db; scratch: a dict that keeps gy transposed for the input gradient of the
    same backward pass (_transposed), or None. gyt: gy already transposed (rows of the plan's
    COPW), gy then unread (None)."""
    o, cg, kh, kw = w_shape
    og = o // groups
    n = x.shape[0]
    oh, ow = _output_hw(x.shape, w_shape, stride, pads, dilation, groups)
    plan = _weight_direct_plan(dev, x.shape, w_shape, stride, pads, dilation, groups)
    xp = x if plan.get("PK") else _padded(dev, x, pads, saved)
    cop, ob, khb = plan["COPW"], plan["VWW"] * plan["OBVW"], plan["KHB"]
    if gyt is None:
        gyt = _transpose_gy(dev, gy, og, groups, cop)
        if scratch is not None and groups == 1:
            scratch["gyt"] = (gy, gyt, cop)

    rows = n * oh
    rows_per_slice = _rows_per_slice(rows, ow * groups * cop * 4, groups * cop // ob * cg * (kh // khb))
    slices = -(-rows // rows_per_slice)
    part = dev.empty((slices, groups, cg * kh * kw, cop))
    partb = dev.empty((slices, groups, cop))
    grid = (groups * cop // ob, cg * (kh // khb), slices)
    launch(dev, _kernel(dev, _FILE, "conv2d_backward_weight", plan), grid, (1, 1, 1) if dev.is_cpu else None,
           buf(xp), buf(gyt), buf(part), buf(partb), i32(rows_per_slice))
    return _reduce_weight_grad(dev, part, partb, slices, w_shape, cop, has_bias)


def conv2d_backward(dev, x, w, gy, stride, pads, need_input_grad=True, has_bias=True, algorithm=None,
                    dilation=(1, 1), groups=1, saved=None, input_residual=None):
    """gy = dL/dy (N,O,OH,OW) of the PRE-activation output (the layer undoes the fused activation
    first). Returns (gx or None, gw (O,C/groups,KH,KW), gb (O,) or None). dilation, groups and
    algorithm: as conv2d_forward, the algorithm chosen separately for the weight and the input
    gradient when None ("im2col", a forward form, chooses so too). saved: the dict
    conv2d_forward(saved=) filled for this x, or None. input_residual (with need_input_grad):
    an array of x's shape that gx includes, the gradient x already has from its other readers
    (a residual block's shortcut), added as the gather form's kernel stores gx, by the other
    forms in one more pass; or None."""
    if algorithm == "im2col":
        algorithm = None
    check_array(x, 4, "conv2d input")
    check_array(w, 4, "conv2d weight")
    check_array(gy, 4, "conv2d output gradient")
    stride, pads, dilation, groups = _check_params(stride, pads, dilation, groups)
    oh, ow = _output_hw(x.shape, w.shape, stride, pads, dilation, groups)
    expected = (x.shape[0], w.shape[0], oh, ow)
    if tuple(gy.shape) != expected:
        raise ShapeError(f"conv2d: output gradient has shape {tuple(gy.shape)}, expected {expected}")
    if input_residual is not None:
        check_array(input_residual, 4, "conv2d input residual")
        if tuple(input_residual.shape) != tuple(x.shape) or not need_input_grad:
            raise ShapeError(f"conv2d: input_residual must have the input's shape {tuple(x.shape)} and "
                             f"come with need_input_grad=True; got {tuple(input_residual.shape)}, "
                             f"need_input_grad={need_input_grad}")
    if _use_gemm(dev, algorithm, x.shape, w.shape, pads, dilation, groups):
        from . import dense
        gx, gw, gb = dense.dense_backward(dev, _as_matrix(dev, x), _as_matrix(dev, w), _as_matrix(dev, gy),
                                          has_bias, need_input_grad)
        gx = None if gx is None else _plus(dev, dev.view(gx, x.shape), input_residual)
        return gx, dev.view(gw, w.shape), gb
    if _use_depthwise(algorithm, x.shape, groups):
        from . import depthwise
        gx, gw, gb = depthwise.depthwise_backward(dev, x, w, gy, stride, pads, need_input_grad, has_bias,
                                                  dilation)
        return (None if gx is None else _plus(dev, gx, input_residual)), gw, gb
    from . import conv2d_pointwise
    pointwise = algorithm is None and conv2d_pointwise.supports(dev, x.shape, w.shape, stride, pads, dilation,
                                                                groups)
    rows = None
    # gy transposed by the weight gradient, and the forward's packed weights, for the input
    # gradient's sums form
    scratch = {"packed": saved["packed"]} if saved and "packed" in saved else {}
    if algorithm is None and dev.is_cpu and not pointwise:
        from . import conv2d_rows
        if conv2d_rows.supports(x.shape, w.shape, stride, pads, dilation, groups, pass_="weight",
                                registers=vector_limits(dev)[1]):
            rows = conv2d_rows.weight_grad(dev, x, gy, w.shape, stride, pads, has_bias)
    if pointwise:
        gw, gb = conv2d_pointwise.weight_grad(dev, x, gy, w.shape, has_bias, groups)
    elif rows is not None:
        gw, gb = rows
    elif _use_winograd(dev, algorithm, "weight", x.shape, w.shape, stride, pads, dilation, groups):
        from . import winograd
        gw, gb = winograd.weight_grad(dev, x, gy, w.shape, pads, has_bias)
    else:
        weight_forms = {"direct": _weight_grad_direct, "tiled": _weight_grad_tiled}
        args = (dev, x, gy, w.shape, stride, pads, has_bias, dilation, groups)
        algo = _pick(dev, algorithm, "weight", x.shape, w.shape, stride, pads,
                     {name: functools.partial(f, *args) for name, f in weight_forms.items()}, dilation, groups)
        gw, gb = weight_forms[algo](*args, saved=saved, **({"scratch": scratch} if algo == "direct" else {}))
    gx = None
    if need_input_grad and pointwise:
        gx = _plus(dev, conv2d_pointwise.input_grad(dev, w, gy, x.shape, groups), input_residual)
    elif need_input_grad and _use_winograd(dev, algorithm, "input", x.shape, w.shape, stride, pads,
                                         dilation, groups):
        from . import winograd
        gx = _plus(dev, winograd.input_grad(dev, w, gy, x.shape, pads), input_residual)
    elif need_input_grad:
        input_forms = {"direct": _input_grad_direct, "tiled": _input_grad_tiled}
        args = (dev, w, gy, x.shape, stride, pads, dilation, groups)
        algo = _pick(dev, algorithm, "input", x.shape, w.shape, stride, pads,
                     {name: functools.partial(f, *args) for name, f in input_forms.items()},
                     dilation, groups)
        if algo == "direct":
            gx = _input_grad_direct(*args, scratch=scratch, residual=input_residual)
        else:
            gx = _plus(dev, _input_grad_tiled(*args), input_residual)
    return gx, gw, gb
