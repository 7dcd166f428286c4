"""GEMM and Dense kernels vs the NumPy oracle, and the oracle's backward vs finite differences."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.errors import ShapeError
from clcnn.ops import dense as ops
from clcnn.oracle import dense as oracle
from tests.helpers import assert_close, hold_vector_width, numeric_grad

U32 = 2.0 ** -24   # float32 unit roundoff
ACTIVATIONS = [None, "relu", "leaky_relu", "tanh", "sigmoid"]


def _sum_bound(k, abs_terms):
    """Rounding bound of a float32 sum of k products vs the exact (float64) one: the classic
    gamma_k = k*u times the sum of |terms| (Higham 3.1), with one extra u per product. Any
    summation order the kernels use (8 lanes then a tree, or sequential FMAs) stays within it,
    and a wrong index or a missed term breaks it by far."""
    return (k + 2) * U32 * abs_terms + 1e-30


def _rand(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _check_gemm(device, m, n, k, trans_a, trans_b, rng):
    a = _rand(rng, (k, m) if trans_a else (m, k))
    b = _rand(rng, (n, k) if trans_b else (k, n))
    c = ops.gemm(device, device.to_device(a), device.to_device(b), trans_a, trans_b).get()
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = oracle.gemm(a64, b64, trans_a, trans_b)
    bound = _sum_bound(k, oracle.gemm(np.abs(a64), np.abs(b64), trans_a, trans_b))
    assert_close(c, ref, atol=bound, rtol=0.0, what=f"gemm {m}x{n}x{k} ta={trans_a} tb={trans_b}")


TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]


@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 40), seed=st.integers(0, 2 ** 31))
def test_gemm_random_shapes(device, trans_a, trans_b, m, n, k, seed):
    _check_gemm(device, m, n, k, trans_a, trans_b, np.random.default_rng(seed))


# Edges of the register blocks (6 rows, 16 or 2 columns, 8-wide k), 1s, primes, and larger
# shapes where several blocks and the interior fast paths are taken.
EDGE_SHAPES = [(1, 1, 1), (1, 17, 1), (13, 1, 9), (6, 16, 8), (7, 17, 9), (5, 15, 7), (12, 32, 16),
               (97, 33, 65), (64, 10, 84), (31, 129, 120), (256, 84, 120)]


@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", EDGE_SHAPES)
def test_gemm_edge_shapes(device, trans_a, trans_b, m, n, k):
    _check_gemm(device, m, n, k, trans_a, trans_b, np.random.default_rng(m * 10007 + n * 101 + k))


def test_gemm_rejects_mismatched_shapes(device):
    a, b = device.zeros((3, 4)), device.zeros((5, 6))
    with pytest.raises(ShapeError):
        ops.gemm(device, a, b)
    with pytest.raises(ShapeError):
        ops.dense_forward(device, a, device.zeros((2, 5)), None)


def _act_bound(activation, y_ref, pre_bound):
    """Every activation here has |slope| <= 1, so the pre-activation error passes through at
    most unchanged; exp in OpenCL C may be off by a few ulp (spec: 3; the sigmoid's divide adds
    ~2.5), so allow 8 ulp of the output plus a denormal floor; gemm.cl's rational tanh is
    within 4e-7 of tanh (Eigen's approximation, as conv2d.cl's), plus its own roundings."""
    if activation == "tanh":
        return pre_bound + 8 * 2 * U32 * np.abs(y_ref) + 4e-7
    if activation == "sigmoid":
        return pre_bound + 8 * 2 * U32 * np.abs(y_ref) + 1e-37
    return pre_bound


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
@given(n=st.integers(1, 20), i=st.integers(1, 40), o=st.integers(1, 30), seed=st.integers(0, 2 ** 31))
def test_dense_forward_matches_oracle(device, activation, bias, n, i, o, seed):
    rng = np.random.default_rng(seed)
    x, w = _rand(rng, (n, i)), _rand(rng, (o, i), 0.3)
    b = _rand(rng, (o,)) if bias else None
    y = ops.dense_forward(device, device.to_device(x), device.to_device(w),
                          device.to_device(b) if bias else None, activation, negative_slope=0.2).get()
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    b64 = b.astype(np.float64) if bias else None
    ref = oracle.dense_forward(x64, w64, b64, activation, negative_slope=0.2)
    pre_abs = np.abs(x64) @ np.abs(w64).T + (np.abs(b64) if bias else 0)
    bound = _act_bound(activation, ref, _sum_bound(i + 1, pre_abs))
    assert_close(y, ref, atol=bound, rtol=0.0, what=f"dense_forward {activation} bias={bias}")


@pytest.mark.parametrize("has_bias,need_input_grad", [(True, True), (False, True), (True, False)])
@given(n=st.integers(1, 20), i=st.integers(1, 40), o=st.integers(1, 30), seed=st.integers(0, 2 ** 31))
def test_dense_backward_matches_oracle(device, has_bias, need_input_grad, n, i, o, seed):
    rng = np.random.default_rng(seed)
    x, w, gy = _rand(rng, (n, i)), _rand(rng, (o, i)), _rand(rng, (n, o))
    gx, gw, gb = ops.dense_backward(device, device.to_device(x), device.to_device(w),
                                    device.to_device(gy), has_bias, need_input_grad)
    x64, w64, gy64 = (v.astype(np.float64) for v in (x, w, gy))
    gx_ref, gw_ref, gb_ref = oracle.dense_backward(x64, w64, gy64, has_bias, need_input_grad)
    assert_close(gw.get(), gw_ref, atol=_sum_bound(n, np.abs(gy64).T @ np.abs(x64)), rtol=0, what="gw")
    if need_input_grad:
        assert_close(gx.get(), gx_ref, atol=_sum_bound(o, np.abs(gy64) @ np.abs(w64)), rtol=0, what="gx")
    else:
        assert gx is None
    if has_bias:
        assert_close(gb.get(), gb_ref, atol=_sum_bound(n, np.abs(gy64).sum(0)), rtol=0, what="gb")
    else:
        assert gb is None


def test_dense_lenet_shapes_and_determinism(device):
    """LeNet-5's dense layers at batch 256, forward with tanh then backward, twice: the
    results must be bit-identical run to run (fixed summation order, no atomics)."""
    rng = np.random.default_rng(5)
    for i, o in [(120, 84), (84, 10)]:
        x, w, b, gy = _rand(rng, (256, i)), _rand(rng, (o, i), 0.1), _rand(rng, (o,)), _rand(rng, (256, o))
        xd, wd, bd, gyd = (device.to_device(v) for v in (x, w, b, gy))
        outs = []
        for _ in range(2):
            y = ops.dense_forward(device, xd, wd, bd, "tanh")
            outs.append([y.get()] + [g.get() for g in ops.dense_backward(device, xd, wd, gyd)])
        for first, second in zip(*outs):
            np.testing.assert_array_equal(first, second)
        ref = oracle.dense_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), "tanh")
        assert_close(outs[0][0], ref, atol=1e-5, rtol=0, what=f"lenet dense {i}->{o}")


def test_dense_oracle_backward_vs_finite_differences():
    """Oracle gradients of L = sum(R * (x @ w.T + b)) against float64 central differences."""
    rng = np.random.default_rng(0)
    x, w, b, r = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4), rng.standard_normal((3, 4))
    gx, gw, gb = oracle.dense_backward(x, w, r)
    assert_close(gx, numeric_grad(lambda v: np.sum(r * oracle.dense_forward(v, w, b)), x), 1e-7, 1e-6, "gx")
    assert_close(gw, numeric_grad(lambda v: np.sum(r * oracle.dense_forward(x, v, b)), w), 1e-7, 1e-6, "gw")
    assert_close(gb, numeric_grad(lambda v: np.sum(r * oracle.dense_forward(x, w, v)), b), 1e-7, 1e-6, "gb")


# -- both vector widths: float8, and float16 where the device prefers it (AVX-512) ----------
@pytest.fixture(params=[8, 16])
def width(request, device, monkeypatch):
    return hold_vector_width(device, monkeypatch, request.param)


# Columns 1-80 take every column case at each width's block (2x8 or 2x16 wide): B narrower
# than the block packed and padded, the overlapping last block of a wider B, and the padded
# last partial vector of a transposed B; rows 1-40 cross the 6- and 8-row blocks; K from 1.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 40), n=st.integers(1, 80), k=st.integers(1, 50), trans=st.sampled_from(TRANSPOSES),
       seed=st.integers(0, 2 ** 31))
def test_gemm_widths_random_shapes(device, width, m, n, k, trans, seed):
    _check_gemm(device, m, n, k, *trans, np.random.default_rng(seed))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), i=st.integers(1, 70), o=st.integers(1, 70), bias=st.booleans(),
       activation=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2 ** 31))
def test_dense_widths_forward_backward(device, width, n, i, o, bias, activation, seed):
    """Forward (the packed, padded w.T with bias and activation on the last partial vector) and
    backward (gw with the bias gradient from the same pass) at each width."""
    rng = np.random.default_rng(seed)
    x, w, gy = _rand(rng, (n, i)), _rand(rng, (o, i), 0.3), _rand(rng, (n, o))
    b = _rand(rng, (o,)) if bias else None
    xd, wd, gyd = device.to_device(x), device.to_device(w), device.to_device(gy)
    y = ops.dense_forward(device, xd, wd, device.to_device(b) if bias else None, activation, 0.2).get()
    x64, w64, gy64 = (v.astype(np.float64) for v in (x, w, gy))
    b64 = b.astype(np.float64) if bias else None
    ref = oracle.dense_forward(x64, w64, b64, activation, negative_slope=0.2)
    pre_abs = np.abs(x64) @ np.abs(w64).T + (np.abs(b64) if bias else 0)
    assert_close(y, ref, atol=_act_bound(activation, ref, _sum_bound(i + 1, pre_abs)), rtol=0.0, what="y")
    gx, gw, gb = ops.dense_backward(device, xd, wd, gyd, has_bias=bias)
    gx_ref, gw_ref, gb_ref = oracle.dense_backward(x64, w64, gy64, has_bias=bias)
    assert_close(gx.get(), gx_ref, atol=_sum_bound(o, np.abs(gy64) @ np.abs(w64)), rtol=0, what="gx")
    assert_close(gw.get(), gw_ref, atol=_sum_bound(n, np.abs(gy64).T @ np.abs(x64)), rtol=0, what="gw")
    if bias:
        assert_close(gb.get(), gb_ref, atol=_sum_bound(n, np.abs(gy64).sum(0)), rtol=0, what="gb")


@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n", [(0, 5), (5, 0), (0, 0)])
def test_gemm_empty_output(device, trans_a, trans_b, m, n):
    k = 3
    a = device.zeros((k, m) if trans_a else (m, k))
    b = device.zeros((n, k) if trans_b else (k, n))
    assert ops.gemm(device, a, b, trans_a, trans_b).shape == (m, n)


def test_gemm_rejects_empty_inner_dimension(device):
    with pytest.raises(ShapeError, match="inner dimension"):
        ops.gemm(device, device.zeros((3, 0)), device.zeros((0, 4)))


def test_dense_empty_batch_forward(device):
    y = ops.dense_forward(device, device.zeros((0, 7)), device.zeros((5, 7)), device.zeros((5,)), "tanh")
    assert y.shape == (0, 5)


def test_blockings_stay_within_the_registers(device, width):
    """TM * NV accumulators, NV vectors of B and a broadcast of A within the vector registers
    of the width (16 AVX2 ymm, 32 AVX-512 zmm), and the device's one blocking at its width."""
    for vw, regs in ((8, 16), (16, 32)):
        assert ops._TM[vw] * ops._NV[vw] + ops._NV[vw] + 1 <= regs
    assert ops._blocking(device) == (ops._TM[width], width, ops._NV[width])


@pytest.mark.parametrize("batch", [64, 256])
def test_dense_forward_takes_dot_products_on_cpus(device, monkeypatch, batch):
    """LeNet-5's dense shapes: on CPUs gemm_nt (the weight read as stored, no gemm_pack),
    elsewhere gemm_pack and gemm_block; against the oracle within the float32 sum bound, tanh
    1-Lipschitz plus its approximation's 4e-7."""
    names = []
    real = ops.launch
    monkeypatch.setattr(ops, "launch", lambda dev, k, *a, **kw: names.append(k.function_name) or real(dev, k, *a, **kw))
    rng = np.random.default_rng(batch)
    for i, o in [(400, 120), (120, 84), (84, 10)]:
        names.clear()
        x, w, b = _rand(rng, (batch, i)), _rand(rng, (o, i), 0.1), _rand(rng, (o,))
        y = ops.dense_forward(device, device.to_device(x), device.to_device(w), device.to_device(b), "tanh").get()
        assert names == (["gemm_nt_tanh"] if device.is_cpu else ["gemm_pack", "gemm_block_tanh"])
        x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
        ref = oracle.dense_forward(x64, w64, b64, "tanh")
        bound = _sum_bound(i + 1, np.abs(x64) @ np.abs(w64).T + np.abs(b64)) + 8 * 2 * U32 * np.abs(ref) + 4e-7
        assert_close(y, ref, atol=bound, rtol=0.0, what=f"dense {i}->{o} at batch {batch}")
