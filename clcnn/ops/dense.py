"""GEMM and Dense-layer host wrappers (kernels/gemm.cl).

gemm(a, b) computes op(a) @ op(b) for 2-D row-major float32 arrays; the Dense layer is three
GEMMs: y = x @ w.T (+ bias, activation fused into the GEMM's store), gx = gy @ w, gw = gy.T @ x,
and a column sum for the bias gradient. Shapes (M, N, K) are kernel arguments, so one build per
layout serves every size; only the transposes, tile sizes and fused epilogue are -D defines.
"""
from ..device import ACTIVATION_CODES
from ..errors import ShapeError
from ._common import buf, check_array, i32, launch

# Register-block sizes (see gemm.cl). The dot-product kernel (not trans_a, trans_b) owns TM x TN
# outputs with a float8 accumulator each; the outer-product kernel owns TM rows x 8*NV columns.
# Both keep 12 float8 accumulators, what 16 AVX2 registers hold next to the operands (measured
# on PoCL: 6 x 2 dot-product ~70-100 GFLOP/s, 6 x 16 outer-product ~70 GFLOP/s at 1024^3).
_NT_TILE = dict(TM=6, TN=2)
_OUTER_TILE = dict(TM=6, NV=2)
# A fixed local size, not None: PoCL compiles a work-group function per local size (~0.25 s
# each), and with None it picks one per global size, i.e. one compile per new matrix shape.
_LOCAL = (4, 4)
_LOCAL_1D = (64,)


def _gemm_kernel(dev, trans_a, trans_b, bias, activation, negative_slope):
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {sorted(map(str, ACTIVATION_CODES))}, got {activation!r}")
    defines = dict(TRANS_A=bool(trans_a), TRANS_B=bool(trans_b), HAS_BIAS=bias is not None,
                   ACTIVATION=ACTIVATION_CODES[activation])
    if activation == "leaky_relu":
        defines["NEG_SLOPE"] = float(negative_slope)
    if not trans_a and trans_b:
        defines.update(_NT_TILE)
        name, cols_per_item = "gemm_block_nt", _NT_TILE["TN"]
    else:
        defines.update(_OUTER_TILE)
        name, cols_per_item = "gemm_block", 8 * _OUTER_TILE["NV"]
    return dev.kernel("gemm.cl", name, **defines), cols_per_item, defines["TM"]


def _gemm(dev, a, b, trans_a, trans_b, bias=None, activation=None, negative_slope=0.01):
    check_array(a, 2, "a")
    check_array(b, 2, "b")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k_b, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k_b:
        raise ShapeError(f"gemm: op(a) is {m}x{k} but op(b) is {k_b}x{n} (trans_a={trans_a}, "
                         f"trans_b={trans_b}); the inner dimensions must agree")
    if bias is not None:
        check_array(bias, 1, "bias")
        if bias.shape[0] != n:
            raise ShapeError(f"bias has {bias.shape[0]} entries for {n} output columns")
    c = dev.empty((m, n))
    if m == 0 or n == 0:
        return c
    if k == 0:
        # An empty sum: the kernels would read no element, but keep them free of that case.
        raise ShapeError("gemm: the inner dimension K must be >= 1")
    kernel, cols, rows = _gemm_kernel(dev, trans_a, trans_b, bias, activation, negative_slope)
    launch(dev, kernel, (-(-n // cols), -(-m // rows)), _LOCAL,
           buf(a), buf(b), buf(c), buf(bias if bias is not None else c), i32(m), i32(n), i32(k))
    return c


def gemm(dev, a, b, trans_a=False, trans_b=False):
    """c = op(a) @ op(b) for 2-D float32 arrays; op transposes when its flag is set."""
    return _gemm(dev, a, b, trans_a, trans_b)


def dense_forward(dev, x, w, b, activation=None, negative_slope=0.01):
    """y = act(x @ w.T + b) for x (N, I), w (O, I), b (O,) or None; activation fused."""
    check_array(x, 2, "x")
    check_array(w, 2, "w")
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"dense: input has {x.shape[1]} features but the weight {tuple(w.shape)} "
                         f"expects {w.shape[1]}")
    return _gemm(dev, x, w, False, True, bias=b, activation=activation, negative_slope=negative_slope)


def dense_backward(dev, x, w, gy, has_bias=True, need_input_grad=True):
    """(gx or None, gw, gb or None) for gy = dL/d(pre-activation) of shape (N, O):
    gx = gy @ w, gw = gy.T @ x, gb = gy.sum(0) (summed in row order: deterministic)."""
    check_array(x, 2, "x")
    check_array(w, 2, "w")
    check_array(gy, 2, "gy")
    n, o = gy.shape
    if x.shape[0] != n or w.shape[0] != o or x.shape[1] != w.shape[1]:
        raise ShapeError(f"dense backward: x {tuple(x.shape)}, w {tuple(w.shape)} and gy {tuple(gy.shape)} "
                         f"do not fit (x (N, I), w (O, I), gy (N, O))")
    gx = _gemm(dev, gy, w, False, False) if need_input_grad else None
    gw = _gemm(dev, gy, x, True, False)
    gb = None
    if has_bias:
        gb = dev.empty((o,))
        if o:
            launch(dev, dev.kernel("gemm.cl", "dense_backward_bias"), (o,), _LOCAL_1D,
                   buf(gy), buf(gb), i32(n), i32(o))
    return gx, gw, gb
