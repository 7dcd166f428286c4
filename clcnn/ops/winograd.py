"""Winograd convolution F(m x m, r x r) for stride-1, undilated, ungrouped convolutions
(kernels/winograd.cl): the forward pass, the gather form of the input gradient, and the
weight gradient as F(r x r, m x m).

Forward: an input transform (padding applied while reading, so no padded copy), a weight
transform, one matrix product per tile position (winograd_products, register blocks), and
an output transform with bias and activation; on CPUs, where a block of tiles' transformed
tensors fit a core's L2 (fuses()), the three steps after the weight transform run in one
launch (winograd_fused), block by block, so those tensors never go through memory. F(4x4, 3x3) does 36 multiplies per 4x4 output
tile and input channel where the direct kernel does 144. The weight gradient transforms
the same input tiles and the output gradient's 4x4 tiles and sums their products over the
tiles, split into slices where there are few work items.

The transform matrices are Toom-Cook's for the points 0, 1, -1, 2, -2, 1/2, -1/2 (Lavin &
Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), built exactly in fractions
by `matrices`; the more points, the larger their entries and the float32 rounding: here about
ten times the direct kernels' (tests/test_winograd.py states the bounds).
"""
import functools
from fractions import Fraction

from .. import device as _device
from . import conv2d as _conv
from ._common import buf, f32, i32, launch

_FILE = "winograd.cl"
# Output tile side per filter side: F(4x4, 3x3) and F(4x4, 5x5). F(2x2, 3x3) would move 1.8x
# the bytes per output through its transforms for 2.25x the multiplies; F(2x2, 5x5) 4x the
# bytes of F(4x4, 5x5).
TILE = {3: 4, 5: 4}
# Output tiles (over the batch) below which the forward and the input gradient stay direct:
# both transform the whole weight (36 or 64 values per pair of channels, 4-7x its size) on
# every call, which few tiles do not repay. Batch-1 inference, 3x3 pad 1, against the direct
# kernel: 512 channels at 7x7 (4 tiles) 3.3x slower, 256 at 14x14 (16) 1.27x slower, 128 at
# 28x28 (49) 0.94x, 512 at 7x7 batch 8 (32) 0.69x.
_MIN_TILES = 32


def _points(count):
    """count interpolation points 0, 1, -1, 2, -2, 1/2, -1/2 (infinity is the extra, implicit
    one): the halves rather than 3, -3 keep F(4x4, 5x5)'s entries small."""
    return [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2),
            Fraction(-1, 2)][:count]


def _poly_mul(p, q):
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


@functools.lru_cache(maxsize=None)
def matrices(m, r):
    """(BT (a x a), G (a x r), AT (m x a)) of F(m, r), a = m + r - 1, as lists of Fractions:
    y = AT [(G g) * (BT d)] is the correlation y[i] = sum_k g[k] d[i + k] of a tile d of a
    inputs with a filter g of r taps. Toom-Cook on a - 1 points and infinity: the evaluations
    G and AT (transposed), and BT's rows the coefficients of M(x) / (x - a_j), the last row
    those of M(x) = prod (x - a_j); the Lagrange denominators go into G."""
    a = m + r - 1
    pts = _points(a - 1)
    full = [Fraction(1)]
    for p in pts:
        full = _poly_mul(full, [-p, Fraction(1)])          # coefficients, lowest first
    bt = []
    g = []
    for j, p in enumerate(pts):
        row = [Fraction(1)]
        denominator = Fraction(1)
        for k, q in enumerate(pts):
            if k != j:
                row = _poly_mul(row, [-q, Fraction(1)])
                denominator *= p - q
        bt.append(row + [Fraction(0)] * (a - len(row)))
        g.append([p ** k / denominator for k in range(r)])
    bt.append(full)
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    at = [[p ** i for p in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    return bt, g, at


def _c_list(rows):
    return ",".join(f"{float(v)!r}f" for row in rows for v in row)


def supports(x_shape, w_shape, stride, pads, dilation, groups):
    """Whether Winograd can run this convolution: stride 1, no dilation, one group, square
    filters of a side in TILE, padding at most r - 1 on every side, and transformed tensors
    (a*a x channels x tiles) within the kernels' 32-bit indices."""
    o, c, kh, kw = w_shape
    if not (tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1 and kh == kw
            and kh in TILE and max(pads) <= kh - 1):
        return False
    n, _, h, w = x_shape
    m, a = TILE[kh], TILE[kh] + kh - 1
    tiles = n * -(-(h + pads[0] + pads[1] - kh + 1) // m) * -(-(w + pads[2] + pads[3] - kw + 1) // m)
    return a * a * max(c, o) * (tiles + 64) < 2**31


# Register blocks of winograd_products: TM rows x NV vectors of VW tiles (gemm.cl's rule:
# the accumulators, NV vectors of V and a broadcast of U within the vector registers).
_BLOCKS = {8: (6, 2), 16: (8, 2)}
# Fixed local sizes (PoCL compiles a work-group function per local size). The scalar
# weight-gradient output gets groups of 8 channels, which PoCL may run as vectors; the input,
# gy and weight transforms take their TL lanes explicitly (winograd.cl), TL = 8, in groups of
# one item: in groups of 2x4 items PoCL's loop over the items made the input transform 1.4-1.9x
# and the gy transform 2.4x slower (32x64x16x16, 64 filters 3x3 and 5x5; min of 80 calls,
# alternating).
_LOCAL = (1, 1, 1)
_TRANSFORM_LOCAL = (8, 1)
_LANES = 8
_LANES_LOCAL = (1, 1)


def pays(pass_, x_shape, w_shape):
    """Whether Winograd beats the direct kernels on a CPU (pass_ "forward", "input" or
    "weight"), by measurements on PoCL (AVX-512, batch 32-128, 3x3 and 5x5): from 64 channels
    in and out the weight gradient ran 1.19-1.96x faster, the input gradient 1.27-2.6x from
    8192 input pixels (N*H*W) but 0.94x at 4096; at 32 channels the forms were even or the
    direct one won (weight gradient 0.61x), at 16 the direct one won (0.70-0.85x): the
    transforms' memory traffic outweighs the saved multiplies. The forward takes Winograd from
    64 channels for 5x5 kernels (1.26x) and for 3x3 ones from 128 (1.64x), or from 64 on
    planes of 16x16 and more: there it ran 1.19x faster (16x16, batch 32) and 1.27x (32x32),
    but on 8x8 planes (ResNet-20's last stage) the direct kernel, which pads inside itself,
    ran 1.09-1.33x faster (batch 64 and 128; whole calls, one at a time, as a model makes
    them; the transforms in work-groups of one item). The forward and the input gradient
    also need _MIN_TILES output tiles over the batch (a small batch's few tiles do not repay
    transforming the weights)."""
    n, c, h, w = x_shape
    channels = min(c, w_shape[0])
    tile = TILE.get(w_shape[2], 4)
    if pass_ in ("forward", "input") and n * -(-h // tile) * -(-w // tile) < _MIN_TILES:
        return False
    if pass_ == "forward":
        return channels >= 128 or (channels >= 64 and (w_shape[2] == 5 or h * w >= 256))
    return channels >= 64 and (pass_ != "input" or n * h * w >= 8192)


@functools.lru_cache(maxsize=None)
def _defines(m, r, vw):
    """The -D defines of one tile size and vector width: one build serves every shape."""
    bt, g, at = matrices(m, r)
    _, g2, at2 = matrices(r, m)     # the weight gradient's F(r x r, m x m); its BT is bt
    tm, nv = _BLOCKS[vw]
    return dict(WM=m, WR=r, WBT=_c_list(bt), WG=_c_list(g), WAT=_c_list(at), WG2=_c_list(g2),
                WAT2=_c_list(at2), VW=vw, TM=tm, NV=nv)


def _setup(dev, r, oh, ow, n):
    """(defines, tile side m, a = m + r - 1, tiles, tp: tiles rounded up to the column block)."""
    m = TILE[r]
    d = _defines(m, r, _conv.vector_limits(dev)[0])
    nb = d["VW"] * d["NV"]
    tiles = n * -(-oh // m) * -(-ow // m)
    return d, m, m + r - 1, tiles, -(-tiles // nb) * nb


def _input_transform(dev, kernel, x, a, oh, ow, pt, pl, tiles, tp, cp=0):
    """V of x: (a*a, C, tp), or with cp > 0 transposed, (a*a, tp, cp)."""
    n, c, h, wd = x.shape
    v = dev.empty((a * a, c, tp) if cp == 0 else (a * a, tp, cp))
    grid = (tp // _LANES, c) if cp == 0 else (cp // _LANES, tp)
    launch(dev, kernel("winograd_input"), grid, _LANES_LOCAL, buf(x), buf(v),
           i32(c), i32(h), i32(wd), i32(oh), i32(ow), i32(pt), i32(pl), i32(tiles), i32(tp), i32(cp))
    return v


def _products(dev, kernel, d, a_, b_, out, a, rows, cols, k_count, slices, a_k, a_row, b_k):
    """winograd_products: out (slices, a*a, rows, cols) from a_ and b_ at the given strides."""
    k_slice = -(-k_count // slices)
    launch(dev, kernel("winograd_products"), (cols // (d["VW"] * d["NV"]), -(-rows // d["TM"]), a * a * slices),
           _LOCAL, buf(a_), buf(b_), buf(out), i32(rows), i32(k_count), i32(k_slice), i32(a_k), i32(a_row),
           i32(b_k), i32(cols))


def _convolve(dev, x, w, b, co, oh, ow, pt, pl, activation, negative_slope, flip):
    """y (N, co, oh, ow) = act(x correlated with w's filters + b), x (N, C, H, W) zero-padded by
    pt rows on top and pl columns on the left (and as needed below and right)."""
    n, c, h, wd = x.shape
    d, m, a, tiles, tp = _setup(dev, w.shape[2], oh, ow, n)
    kernel = functools.partial(_conv._kernel, dev, _FILE, defines=d)

    def transformed():
        u = dev.empty((a * a, c, co))
        launch(dev, kernel("winograd_weights"), (-(-co // _LANES), c), _LANES_LOCAL, buf(w), buf(u), i32(c),
               i32(co), i32(flip))
        return u
    u = dev.derived(("winograd_weights", a, flip), (w,), transformed)
    y = dev.empty((n, co, oh, ow))
    bias = buf(b if b is not None else u)
    act = (i32(b is not None), i32(_device.ACTIVATION_CODES[activation]), f32(negative_slope))
    nb = d["VW"] * d["NV"]
    blocks = tp // nb
    if fuses(dev, a, c, co, nb, blocks):
        items = min(blocks, _FUSED_ITEMS_PER_UNIT * dev.cl_device.max_compute_units)
        scratch = dev.empty((items, a * a * (c + co) * nb))
        launch(dev, kernel("winograd_fused"), (items,), (1,), buf(x), buf(u), bias, buf(y), buf(scratch), *act,
               i32(c), i32(co), i32(h), i32(wd), i32(oh), i32(ow), i32(pt), i32(pl), i32(tiles))
        return y
    v = _input_transform(dev, kernel, x, a, oh, ow, pt, pl, tiles, tp)
    products = dev.empty((a * a, co, tp))
    _products(dev, kernel, d, u, v, products, a, co, tp, c, 1, co, 1, tp)
    launch(dev, kernel("winograd_output"), (tp // _LANES, co), _LOCAL[:2], buf(products), bias, buf(y), *act,
           i32(co), i32(oh), i32(ow), i32(tiles), i32(tp))
    return y


# The one-launch form (winograd_fused) on CPUs where a work item's V and M of one block of
# tiles (its scratch) take at most _FUSED_SCRATCH_BYTES, so that they stay in a core's L2,
# and every compute unit gets a block; _FUSED_ITEMS_PER_UNIT work items per compute unit,
# each looping over its share of the blocks. Against the four launches (forward, batch 32,
# alternating rounds): 64 -> 64 3x3 at 16x16 1.43 against 1.61 ms (the direct kernel 1.60),
# 5x5 2.57 against 2.72, 32 -> 32 3x3 at 16x16 batch 64 1.13 against 1.35, 64 -> 64 at 8x8
# batch 128 1.46 against 1.66 (the direct kernel 1.54).
_FUSED_SCRATCH_BYTES = 1 << 20
_FUSED_ITEMS_PER_UNIT = 4


def fuses(dev, a, c, co, nb, blocks):
    """Whether _convolve runs as winograd_fused: a*a positions, c and co channels, blocks of
    nb tiles."""
    return (dev.is_cpu and a * a * (c + co) * nb * 4 <= _FUSED_SCRATCH_BYTES
            and blocks >= dev.cl_device.max_compute_units)


def forward(dev, x, w, b, pads, oh, ow, activation=None, negative_slope=0.01):
    """conv2d_forward's result for a convolution supports() accepts."""
    return _convolve(dev, x, w, b, w.shape[0], oh, ow, pads[0], pads[2], activation, negative_slope,
                     flip=False)


def input_grad(dev, w, gy, x_shape, pads):
    """dL/dx of a convolution supports() accepts: gy padded by r - 1 - pad and correlated with
    the flipped filters, the channel axes swapped (the gather form, conv2d.cl)."""
    r = w.shape[2]
    return _convolve(dev, gy, w, None, x_shape[1], x_shape[2], x_shape[3], r - 1 - pads[0],
                     r - 1 - pads[2], None, 0.01, flip=True)


# Work items to aim for in the weight gradient's products (slices of the tiles are summed
# afterwards), and the fewest tiles a slice should sum.
_WEIGHT_GRAD_ITEMS = 128
_MIN_SLICE_TILES = 256


def weight_grad(dev, x, gy, w_shape, pads, has_bias=True):
    """(gw, gb or None) of a convolution supports() accepts, as F(r x r, m x m): the products
    of the gy tiles' and the input tiles' transforms summed over the tiles (see winograd.cl)."""
    n, c, h, wd = x.shape
    co, _, r, _ = w_shape
    _, _, oh, ow = gy.shape
    d, m, a, tiles, tp = _setup(dev, r, oh, ow, n)
    kernel = functools.partial(_conv._kernel, dev, _FILE, defines=d)
    nb = d["VW"] * d["NV"]
    cp = -(-c // nb) * nb
    v = _input_transform(dev, kernel, x, a, oh, ow, pads[0], pads[2], tiles, tp, cp)
    ug = dev.empty((a * a, co, tp))
    launch(dev, kernel("winograd_gy"), (tp // _LANES, co), _LANES_LOCAL, buf(gy), buf(ug), i32(co), i32(oh),
           i32(ow), i32(tiles), i32(tp))
    items = cp // nb * -(-co // d["TM"]) * a * a
    slices = max(1, min(-(-_WEIGHT_GRAD_ITEMS // items), tp // _MIN_SLICE_TILES))
    mw = dev.empty((slices, a * a, co, cp))
    _products(dev, kernel, d, ug, v, mw, a, co, cp, tp, slices, 1, tp, cp)
    gw = dev.empty(tuple(w_shape))
    gb = dev.empty((co,)) if has_bias else None
    launch(dev, kernel("winograd_weight_output"), (c + int(has_bias), co), _TRANSFORM_LOCAL, buf(mw), buf(gy),
           buf(gw), buf(gb if has_bias else gw), i32(c), i32(co), i32(cp), i32(slices), i32(has_bias), i32(n),
           i32(oh * ow))
    return gw, gb
