"""GEMM and Dense-layer host wrappers (kernels/gemm.cl).

gemm(a, b) computes op(a) @ op(b) for 2-D row-major float32 arrays; the Dense layer is
GEMMs: y = x @ w.T (on CPUs dot products on w as stored, gemm_nt; elsewhere w transposed
once per call; bias and activation fused into the GEMM's store), then in one launch
gx = gy @ w (through the previous layer's activation backward, where the model fuses it) and
gw = gy.T @ x with the bias gradient gb (the column sums of gy) summed in the same pass.
Shapes (M, N, K) are kernel arguments and the block sizes -D defines, fixed per device: one
build serves every GEMM, its kernels differing in the transpose of A, the row sums and the
fused activation.
"""
from ..device import ACTIVATION_CODES
from ..errors import ShapeError
from ._common import buf, check_array, f32, i32, launch, round_up
from .conv2d import vector_limits

# Register blocks of gemm_block (see gemm.cl): TM rows x NV vectors of VW columns; the TM*NV
# accumulators, NV vectors of B and a broadcast of A fill at most the vector registers (float8:
# 16 AVX2 ones, float16: 32 AVX-512 ones). Measured on PoCL 3.0, AVX-512, medians: 256x120x400 and 512^3 at 8 x 2
# float16 ~170-190 GFLOP/s, 6 x 2 ~175, 12 x 1 ~70; float8 6 x 2 and 4 x 3 ~110.
_TM = {8: 6, 16: 8}
_NV = {8: 2, 16: 2}
# A fixed local size, not None: PoCL compiles a work-group function per local size (~0.25 s
# each), and with None it picks one per global size, i.e. one compile per new matrix shape.
# On CPUs one item: PoCL unrolls the loop over a group's items, and LeNet-5's four gemm_block
# builds took 0.4-1.5 s each to compile with 4 items, about half that with 1; steps ran even.
_LOCAL = (1, 4)
_CPU_LOCAL = (1, 1)
_LOCAL_1D = (16,)
# gemm_nt's work item: (rows, columns) of C by vector width (gemm.cl's NT_ROWS, NT_COLS).
_NT_BLOCK = {16: (4, 4), 8: (2, 4)}


def _blocking(dev):
    """(TM, VW, NV): one register block per device, so that one build of gemm.cl serves every
    GEMM (each build and each kernel's first compile cost PoCL 0.2-1 s on a cold cache). A B
    narrower than the block is padded to it: a layer of n < VW*NV outputs (a classifier's last)
    does up to VW*NV/n times its products, which at LeNet-5's 84 -> 10 is ~5 us a batch."""
    vw = vector_limits(dev)[0]
    return _TM[vw], vw, _NV[vw]


def _pack(dev, s, trans, ldt):
    """s (or s.T with trans) with its rows ldt apart, zero past its columns. An 8 x 8 tiled
    transpose in registers measured no faster on PoCL (4-5 us for LeNet's 84 x 120 weight,
    14-18 us for 120 x 400), so the kernel stays a plain row loop."""
    r, q = s.shape
    t = dev.empty(((q if trans else r), ldt))
    launch(dev, dev.plain_kernel("gemm.cl", "gemm_pack"), (q if trans else r,), _LOCAL_1D,
           buf(s), buf(t), i32(r), i32(q), i32(ldt), i32(bool(trans)))
    return t


def _gemm(dev, a, b, trans_a, trans_b=False, bias=None, activation=None, negative_slope=0.01,
          row_sums=None):
    """C = act(op(a) @ op(b) + bias); row_sums, when given, receives op(a)'s row sums. A
    transposed b, or one narrower than a block, is packed into a padded copy first."""
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {sorted(map(str, ACTIVATION_CODES))}, got {activation!r}")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    c = dev.empty((m, n))
    if m == 0 or n == 0:
        return c
    tm, vw, nv = _blocking(dev)
    padded = trans_b or n < vw * nv
    ldb = round_up(n, vw * nv) if padded else n
    if activation is not None and (trans_a or row_sums is not None):
        raise ValueError("gemm: a fused activation goes with the plain product only (no trans_a, no row sums)")
    name = "gemm_block" + ("_ta" if trans_a else "") + ("_sums" if row_sums is not None else "") + \
        (f"_{activation}" if activation else "")
    kernel = dev.kernel("gemm.cl", name, TM=tm, VW=vw, NV=nv)     # first: the packing kernel comes from it
    if padded:
        b = _pack(dev, b, trans_b, ldb)
    launch(dev, kernel, (-(-n // (vw * nv)), -(-m // tm)), _CPU_LOCAL if dev.is_cpu else _LOCAL,
           buf(a), buf(b), buf(c), buf(bias if bias is not None else c),
           buf(row_sums if row_sums is not None else c), i32(m), i32(n), i32(k), i32(ldb),
           i32(padded), i32(bias is not None), f32(negative_slope))
    return c


def _gemm_nt(dev, a, b, bias=None, activation=None, negative_slope=0.01):
    """act(a @ b.T + bias) for a (M, K), b (N, K) with K at least a vector (gemm_nt): no
    transposed copy of b."""
    m, k = a.shape
    n = b.shape[0]
    c = dev.empty((m, n))
    if m == 0 or n == 0:
        return c
    tm, vw, nv = _blocking(dev)
    rows, cols = _NT_BLOCK[vw]
    kernel = dev.kernel("gemm.cl", "gemm_nt" + (f"_{activation}" if activation else ""), TM=tm, VW=vw, NV=nv)
    launch(dev, kernel, (-(-n // cols), -(-m // rows)), _CPU_LOCAL if dev.is_cpu else _LOCAL,
           buf(a), buf(b), buf(c), buf(bias if bias is not None else c), i32(m), i32(n), i32(k),
           i32(bias is not None), f32(negative_slope))
    return c


def _check_inner(m, k, k_b, n, trans_a, trans_b):
    if k != k_b:
        raise ShapeError(f"gemm: op(a) is {m}x{k} but op(b) is {k_b}x{n} (trans_a={trans_a}, "
                         f"trans_b={trans_b}); the inner dimensions must agree")
    if k == 0 and m and n:
        raise ShapeError("gemm: the inner dimension K must be >= 1")


def gemm(dev, a, b, trans_a=False, trans_b=False):
    """c = op(a) @ op(b) for 2-D float32 arrays; op transposes when its flag is set."""
    check_array(a, 2, "a")
    check_array(b, 2, "b")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k_b, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    _check_inner(m, k, k_b, n, trans_a, trans_b)
    return _gemm(dev, a, b, trans_a, trans_b)


def dense_forward(dev, x, w, b, activation=None, negative_slope=0.01):
    """y = act(x @ w.T + b) for x (N, I), w (O, I), b (O,) or None; activation fused."""
    check_array(x, 2, "x")
    check_array(w, 2, "w")
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"dense: input has {x.shape[1]} features but the weight {tuple(w.shape)} "
                         f"expects {w.shape[1]}")
    if b is not None:
        check_array(b, 1, "bias")
        if b.shape[0] != w.shape[0]:
            raise ShapeError(f"bias has {b.shape[0]} entries for {w.shape[0]} output features")
    _check_inner(x.shape[0], x.shape[1], w.shape[1], w.shape[0], False, True)
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {sorted(map(str, ACTIVATION_CODES))}, got {activation!r}")
    if _takes_dot_products(dev, *x.shape, w.shape[0]):
        return _gemm_nt(dev, x, w, b, activation, negative_slope)
    return _gemm(dev, x, w, False, True, bias=b, activation=activation, negative_slope=negative_slope)


def _takes_dot_products(dev, m, k, n):
    """Whether dense_forward runs as gemm_nt (w read as stored) rather than gemm_pack and
    gemm_block: on CPUs, where K is at least a vector. Event times on PoCL 3.0, AVX-512 (the
    pack, its launch gap and gemm_block against gemm_nt, alternating rounds): LeNet-5's
    400 -> 120 at batch 64 0.104 -> 0.070 ms, at 256 0.169 -> 0.167; 120 -> 84 at 256 0.075 ->
    0.074; 84 -> 10 at 256 0.032 -> 0.027, at 64 0.016 -> 0.008. Whole LeNet-5 steps, 5 process
    pairs: training at batch 64 1.04x, at 256 1.05x; inference at 64 1.10x. GPUs keep the
    outer-product kernel (not measured there)."""
    return dev.is_cpu and k >= _blocking(dev)[1]


def dense_backward(dev, x, w, gy, has_bias=True, need_input_grad=True, input_activation=None,
                   negative_slope=0.01):
    """(gx or None, gw, gb or None) for gy = dL/d(pre-activation) of shape (N, O):
    gx = gy @ w, gw = gy.T @ x, gb = gy.sum(0) (every sum in row order: deterministic).
    input_activation: x is that activation's output (the previous layer's, negative_slope
    LeakyReLU's), and gx comes out through its backward, dL/d(its input), as
    activation.activation_backward(input_activation, x, gy @ w) would give it.
    With the input gradient and at least one vector block of input features the three come
    from one launch (dense_backward_pair), else from one GEMM launch each."""
    check_array(x, 2, "x")
    check_array(w, 2, "w")
    check_array(gy, 2, "gy")
    n, o = gy.shape
    if x.shape[0] != n or w.shape[0] != o or x.shape[1] != w.shape[1]:
        raise ShapeError(f"dense backward: x {tuple(x.shape)}, w {tuple(w.shape)} and gy {tuple(gy.shape)} "
                         f"do not fit (x (N, I), w (O, I), gy (N, O))")
    if input_activation is not None:
        if input_activation not in ACTIVATION_CODES:
            raise ValueError(f"input_activation must be one of {sorted(map(str, ACTIVATION_CODES))}, "
                             f"got {input_activation!r}")
        if not need_input_grad:
            raise ValueError("dense backward: input_activation shapes the input gradient; "
                             "it needs need_input_grad=True")
        if input_activation == "leaky_relu" and negative_slope < 0:
            raise ValueError(f"leaky_relu backward needs negative_slope >= 0, got {negative_slope}")
    _check_inner(o, n, n, x.shape[1], True, False)
    tm, vw, nv = _blocking(dev)
    features = x.shape[1]
    if need_input_grad and features >= vw * nv and n and o:
        gx, gw = dev.empty((n, features)), dev.empty((o, features))
        gb = dev.empty((o,)) if has_bias else None
        columns = -(-features // (vw * nv))
        blocks = columns * (-(-n // tm) + -(-o // tm))
        kernel = dev.kernel("gemm.cl", "dense_backward_pair", TM=tm, VW=vw, NV=nv)
        launch(dev, kernel, (blocks,), (1,) if dev.is_cpu else _LOCAL_1D, buf(gy), buf(w), buf(x), buf(gx), buf(gw),
               buf(gb if gb is not None else gw), i32(n), i32(o), i32(features), i32(has_bias),
               i32(ACTIVATION_CODES[input_activation]), f32(negative_slope))
        return gx, gw, gb
    gx = None
    if need_input_grad:
        _check_inner(n, o, o, x.shape[1], False, False)
        gx = _gemm(dev, gy, w, False)
        if input_activation is not None:
            from .activation import activation_backward
            gx = activation_backward(dev, input_activation, x, gx, negative_slope)
    gb = dev.empty((o,)) if has_bias else None
    gw = _gemm(dev, gy, x, True, row_sums=gb)
    if gb is not None and o and not x.shape[1]:
        gb = dev.to_device(gy.get().sum(0))   # no columns of gw, so no work item summed gb
    return gx, gw, gb
