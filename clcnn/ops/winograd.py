"""Winograd convolution F(m x m, r x r) for stride-1, undilated, ungrouped convolutions
(kernels/winograd.cl): the forward pass and the gather form of the input gradient.

Three launches around one matrix product per tile position: the input transform (padding
applied while reading, so no padded copy), the weight transform (straight into the packed
layout of conv2d.cl's direct kernel), the products as that kernel's grouped 1x1 convolution,
and the output transform with bias and activation. F(4x4, 3x3) does 36 multiplies per
4x4 output tile and input channel where the direct kernel does 144.

The transform matrices are Toom-Cook's for the points 0, 1, -1, 2, -2, ... (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016), built exactly in fractions by
`matrices`; the more points, the larger their entries and the float32 rounding: F(4x4, 3x3)
errs about 5x the direct form's, F(2x2, 3x3) about as much as it (tests/test_winograd.py
states the bounds).
"""
import functools
from fractions import Fraction

from .. import device as _device
from . import conv2d as _conv
from ._common import buf, f32, i32, launch

_FILE = "winograd.cl"
# Output tile side per filter side: F(4x4, 3x3). F(2x2, 3x3) moves 1.8x the bytes per output
# through its transforms for 2.25x the multiplies of F(4x4, 3x3) (see supports()).
TILE = {3: 4, 5: 4}


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
    filters of a side in TILE, padding at most r - 1 on every side."""
    o, c, kh, kw = w_shape
    return (tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1 and kh == kw
            and kh in TILE and max(pads) <= kh - 1)


# Register blocks of winograd_products: TM rows x NV vectors of VW tiles (gemm.cl's rule:
# the accumulators, NV vectors of V and a broadcast of U within the vector registers).
_BLOCKS = {8: (6, 2), 16: (8, 2)}
# Fixed local sizes (PoCL compiles a work-group function per local size). The scalar
# transforms get groups of 8 tiles, which PoCL runs as vectors: the input transform took
# 0.41 ms at 32x64x16x16 with 8, 1.06 with 4 and 0.47-0.61 with 16-32.
_LOCAL = (1, 1, 1)
_TRANSFORM_LOCAL = (8, 1)


def pays(pass_, x_shape, w_shape):
    """Whether Winograd beats the direct kernel on a CPU, by measurements on PoCL (AVX-512,
    batch 32-128, 3x3 and 5x5): from 64 channels in and out the forward ran 1.24-1.9x faster
    (64 at 8x8 and batch 64 the least), the input gradient 1.27-2.6x from 8192 input pixels
    (N*H*W) but 0.94x at 4096; at 32 channels both forms were even, at 16 the direct one won
    (0.70-0.85x), the transforms' memory traffic outweighing the saved multiplies."""
    n, c, h, w = x_shape
    wide = min(c, w_shape[0]) >= 64
    return wide and (pass_ == "forward" or n * h * w >= 8192)


@functools.lru_cache(maxsize=None)
def _defines(m, r, vw):
    """The -D defines of one tile size and vector width: one build serves every shape."""
    bt, g, at = matrices(m, r)
    tm, nv = _BLOCKS[vw]
    return dict(WM=m, WR=r, WBT=_c_list(bt), WG=_c_list(g), WAT=_c_list(at), VW=vw, TM=tm, NV=nv)


def _convolve(dev, x, w, b, co, oh, ow, pt, pl, activation, negative_slope, flip):
    """y (N, co, oh, ow) = act(x correlated with w's filters + b), x (N, C, H, W) zero-padded by
    pt rows on top and pl columns on the left (and as needed below and right)."""
    n, c, h, wd = x.shape
    r = w.shape[2]
    m = TILE[r]
    a = m + r - 1
    d = _defines(m, r, _conv.vector_limits(dev)[0])
    vw, nb = d["VW"], d["VW"] * d["NV"]
    tiles = n * -(-oh // m) * -(-ow // m)
    tp = -(-tiles // nb) * nb
    kernel = functools.partial(_conv._kernel, dev, _FILE, defines=d)
    v = dev.empty((a * a, c, tp))
    launch(dev, kernel("winograd_input"), (tp, c), _TRANSFORM_LOCAL, buf(x), buf(v), i32(c), i32(h),
           i32(wd), i32(oh), i32(ow), i32(pt), i32(pl), i32(tiles), i32(tp))
    u = dev.empty((a * a, c, co))
    launch(dev, kernel("winograd_weights"), (co, c), _TRANSFORM_LOCAL, buf(w), buf(u), i32(c), i32(co),
           i32(flip))
    products = dev.empty((a * a, co, tp))
    launch(dev, kernel("winograd_products"), (tp // nb, -(-co // d["TM"]), a * a), _LOCAL,
           buf(u), buf(v), buf(products), i32(c), i32(co), i32(tp))
    y = dev.empty((n, co, oh, ow))
    launch(dev, kernel("winograd_output"), (tp // vw, co), _LOCAL[:2], buf(products),
           buf(b if b is not None else products), buf(y), i32(b is not None),
           i32(_device.ACTIVATION_CODES[activation]), f32(negative_slope), i32(co), i32(oh), i32(ow),
           i32(tiles), i32(tp))
    return y


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
