"""Fuzzing every op family, forward and backward, against the NumPy oracle with hostile values:
large magnitudes (kept where float32 results stay finite), tiny and denormal numbers, exact
ties (integers, for max pooling's tie rule), mixed signs and zeros, on random geometry.

The bounds are the per-family ones of the op tests plus one term for denormals: a device may
flush denormal inputs and results to zero (OpenCL allows it; PoCL on x86 does with DAZ/FTZ),
which moves each product by at most FLT_MIN times its other factor, so `terms * FLT_MIN *
(1 + max factor)` is added to the absolute tolerance. Runs CLCNN_HYPOTHESIS_EXAMPLES examples
per test (25 by default, see conftest.py)."""
import numpy as np
from hypothesis import example, given, strategies as st

from clcnn.ops import activation as act_ops
from clcnn.ops import conv2d as conv_ops
from clcnn.ops import dense as dense_ops
from clcnn.ops import dropout as drop_ops
from clcnn.ops import loss as loss_ops
from clcnn.ops import optim as optim_ops
from clcnn.ops import pool as pool_ops
from clcnn.oracle import activation as o_act
from clcnn.oracle import conv2d as o_conv
from clcnn.oracle import dense as o_dense
from clcnn.oracle import dropout as o_drop
from clcnn.oracle import loss as o_loss
from clcnn.oracle import optim as o_optim
from clcnn.oracle import pool as o_pool
from tests.helpers import assert_close

TINY = float(np.finfo(np.float32).tiny)       # smallest normal float32, 1.18e-38
EPS = float(np.finfo(np.float32).eps)
KINDS = ("normal", "ties", "denormal", "tiny", "large", "zeros_and_signs")
# Scales of a factor in a product: their pairwise products stay <= 1e30, so sums of up to
# 1e4 terms stay finite in float32 (max 3.4e38).
SCALES = {"normal": 1.0, "ties": 1.0, "denormal": 1e-39, "tiny": 1e-20, "large": 1e15, "zeros_and_signs": 1.0}


def values(rng, shape, kind):
    """float32 array of `shape` drawn as `kind`."""
    if kind == "ties":
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    if kind == "zeros_and_signs":
        return (rng.integers(-1, 2, size=shape) * rng.choice([0.0, 1.0, -0.0], size=shape)).astype(np.float32)
    x = rng.standard_normal(shape) * SCALES[kind]
    return x.astype(np.float32)


kinds = st.sampled_from(KINDS)
seeds = st.integers(0, 2 ** 32 - 1)


def _ftz(terms, *maxes):
    return terms * TINY * (1.0 + sum(maxes))


def _amax(a):
    return float(np.max(np.abs(a), initial=0.0))


# ------------------------------------------------------------------------------- conv2d

ACT = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
       "sigmoid": lambda v: 0.5 * (1 + np.tanh(v / 2)), "leaky_relu": lambda v: np.where(v > 0, v, 0.1 * v)}


def _conv_geometries(count, seed=7):
    """A fixed, seeded set of geometries (kernels 1-7 non-square, strides 1-3, asymmetric
    padding up to the kernel size, odd sizes, batch 1-3). Shapes are -D defines, so every new
    shape costs kernel builds (and tuning); values are what this suite fuzzes, geometry is
    fuzzed widely in test_conv2d.py."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < count:
        kh, kw = (int(v) for v in rng.integers(1, 8, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
        pads = tuple(int(rng.integers(0, k + 1)) for k in (kh, kh, kw, kw))
        h = int(rng.integers(max(1, kh - pads[0] - pads[1]), kh + 9))
        w = int(rng.integers(max(1, kw - pads[2] - pads[3]), kw + 11))
        n, c, o = (int(v) for v in (rng.integers(1, 4), rng.integers(1, 6), rng.integers(1, 10)))
        out.append(((n, c, h, w), (o, c, kh, kw), stride, pads))
    return out


CONV_GEOMETRIES = _conv_geometries(12)


@st.composite
def conv_cases(draw):
    x_shape, w_shape, stride, pads = draw(st.sampled_from(CONV_GEOMETRIES))
    return (x_shape, w_shape, stride, pads, draw(kinds), draw(kinds),
            draw(st.sampled_from(list(ACT))), draw(seeds))


@given(conv_cases())
def test_fuzz_conv2d(device, case):
    x_shape, w_shape, stride, pads, kx, kw_, activation, seed = case
    rng = np.random.default_rng(seed)
    x, w, b = values(rng, x_shape, kx), values(rng, w_shape, kw_), values(rng, w_shape[:1], "normal")
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    terms = w_shape[1] * w_shape[2] * w_shape[3]
    pre = o_conv.conv2d_forward(x64, w64, b64, stride, pads)
    abs_pre = o_conv.conv2d_forward(np.abs(x64), np.abs(w64), np.abs(b64), stride, pads)
    y = conv_ops.conv2d_forward(device, device.to_device(x), device.to_device(w), device.to_device(b),
                                stride, pads, activation=activation, negative_slope=0.1)
    # Sums of `terms` float32 products (see test_conv2d._bound), then a 1-Lipschitz activation.
    bound = 2e-5 * _amax(abs_pre) + 4e-7 + _ftz(terms, _amax(x), _amax(w))
    assert_close(y.get(), ACT[activation](pre), bound, 0.0, f"forward {activation} x:{kx} w:{kw_}")

    gy = values(rng, pre.shape, "normal" if kx == "large" or kw_ == "large" else kx)
    gx, gw, gb = conv_ops.conv2d_backward(device, device.to_device(x), device.to_device(w),
                                          device.to_device(gy), stride, pads)
    refs = o_conv.conv2d_backward(x64, w64, gy.astype(np.float64), stride, pads)
    abs_refs = o_conv.conv2d_backward(np.abs(x64), np.abs(w64), np.abs(gy.astype(np.float64)), stride, pads)
    n_pix = pre.shape[0] * pre.shape[2] * pre.shape[3]
    for got, ref, abs_ref, count, what in zip((gx, gw, gb), refs, abs_refs,
                                              (terms * w_shape[0], n_pix, n_pix), ("gx", "gw", "gb")):
        bound = 2e-5 * _amax(abs_ref) + _ftz(count, _amax(x), _amax(w), _amax(gy))
        assert_close(got.get(), ref, bound, 0.0, f"{what} x:{kx} w:{kw_}")


# ------------------------------------------------------------------------------- pooling

@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pads = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kh // 2)),
            draw(st.integers(0, kw // 2)), draw(st.integers(0, kw // 2)))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), kh + 9))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), kw + 17))
    return ((draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w), (kh, kw), (sh, sw), pads,
            draw(kinds), draw(seeds))


@given(pool_cases())
def test_fuzz_pool2d(device, case):
    shape, kernel, stride, pads, kind, seed = case
    rng = np.random.default_rng(seed)
    x = values(rng, shape, kind)
    if kind == "large":
        x *= np.float32(1e20)        # no products in pooling: up to 1e35
    xd = device.to_device(x)
    y, argmax = pool_ops.maxpool2d_forward(device, xd, kernel, stride, pads)
    y_ref, arg_ref = o_pool.maxpool2d_forward(x, kernel, stride, pads)
    # A selection: exact, ties broken towards the first maximum in row-major window order.
    np.testing.assert_array_equal(argmax.get(), arg_ref, err_msg=f"argmax ({kind})")
    np.testing.assert_array_equal(y.get(), y_ref, err_msg=f"max ({kind})")
    gy = values(rng, y_ref.shape, kind if kind != "large" else "normal")
    gx = pool_ops.maxpool2d_backward(device, device.to_device(gy), argmax, shape)
    gx_ref = o_pool.maxpool2d_backward(gy.astype(np.float64), arg_ref, shape)
    overlap = -(-kernel[0] // stride[0]) * -(-kernel[1] // stride[1])
    assert_close(gx.get(), gx_ref, overlap * EPS * _amax(gy) + _ftz(overlap), 0.0, f"max backward ({kind})")

    terms = kernel[0] * kernel[1]
    for include in (True, False):
        y = pool_ops.avgpool2d_forward(device, xd, kernel, stride, pads, include)
        y_ref = o_pool.avgpool2d_forward(x.astype(np.float64), kernel, stride, pads, include)
        assert_close(y.get(), y_ref, 2 * terms * EPS * _amax(x) + _ftz(terms), 1e-6, f"avg ({kind}, {include})")
        gx = pool_ops.avgpool2d_backward(device, device.to_device(gy), shape, kernel, stride, pads, include)
        gx_ref = o_pool.avgpool2d_backward(gy.astype(np.float64), shape, kernel, stride, pads, include)
        assert_close(gx.get(), gx_ref, 4 * overlap * EPS * _amax(gy) + _ftz(overlap), 1e-6,
                     f"avg backward ({kind}, {include})")


@given(st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 13), st.integers(1, 13)), kinds, seeds)
def test_fuzz_global_pool(device, shape, kind, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, shape, kind)
    xd = device.to_device(x)
    y, argmax = pool_ops.global_maxpool2d_forward(device, xd)
    y_ref, arg_ref = o_pool.global_maxpool2d_forward(x)
    np.testing.assert_array_equal(argmax.get(), arg_ref)
    np.testing.assert_array_equal(y.get(), y_ref)
    gy = values(rng, y_ref.shape, kind)
    gx = pool_ops.global_maxpool2d_backward(device, device.to_device(gy), argmax, shape)
    np.testing.assert_array_equal(gx.get(), o_pool.global_maxpool2d_backward(gy, arg_ref, shape))
    hw = shape[2] * shape[3]
    assert_close(pool_ops.global_avgpool2d_forward(device, xd).get(),
                 o_pool.global_avgpool2d_forward(x.astype(np.float64)),
                 hw * EPS * _amax(x) + _ftz(hw), 1e-6, f"global avg ({kind})")
    assert_close(pool_ops.global_avgpool2d_backward(device, device.to_device(gy), shape).get(),
                 o_pool.global_avgpool2d_backward(gy.astype(np.float64), shape), _ftz(1), 2 * EPS,
                 f"global avg backward ({kind})")


# ------------------------------------------------------------------------------- activations

@given(st.sampled_from(act_ops.NAMES), st.lists(st.integers(1, 9), min_size=1, max_size=4), kinds, seeds,
       st.sampled_from([0.0, 0.01, 0.3]))
@example(name="tanh", shape=[8], kind="normal", seed=3, slope=0.0)   # 1 - y*y cancels: needs the FMA
def test_fuzz_activation(device, name, shape, kind, seed, slope):
    rng = np.random.default_rng(seed)
    x = values(rng, tuple(shape), kind)
    if kind == "large":
        x *= np.float32(1e20)
    y = act_ops.activation_forward(device, name, device.to_device(x), negative_slope=slope)
    ref = o_act.activation_forward(name, x.astype(np.float64), negative_slope=slope)
    # A few ulps for the transcendental ones (fast tanh/exp), exact-ish otherwise.
    assert_close(y.get(), ref, 4e-7 + 2 * TINY, 4 * EPS, f"{name} forward ({kind})")
    gy = values(rng, tuple(shape), "normal" if kind == "large" else kind)
    yv = y.get()
    gx = act_ops.activation_backward(device, name, y, device.to_device(gy), negative_slope=slope)
    ref = o_act.activation_backward(name, yv.astype(np.float64), gy.astype(np.float64), slope)
    assert_close(gx.get(), ref, 2 * TINY, 4 * EPS, f"{name} backward ({kind})")


@given(st.integers(1, 9), st.integers(1, 40), kinds, seeds)
def test_fuzz_softmax(device, rows, k, kind, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, (rows, k), kind)
    if kind == "large":
        x *= np.float32(1e20)       # the row-max shift keeps exp finite for any finite logits
    y = act_ops.softmax_forward(device, device.to_device(x))
    ref = o_act.softmax_forward(x.astype(np.float64))
    assert_close(y.get(), ref, 1e-7, 1e-5, f"softmax ({kind})")
    gy = values(rng, (rows, k), "normal")
    gx = act_ops.softmax_backward(device, y, device.to_device(gy))
    ref = o_act.softmax_backward(y.get().astype(np.float64), gy.astype(np.float64))
    assert_close(gx.get(), ref, 1e-6 * max(1.0, _amax(gy)), 1e-5, f"softmax backward ({kind})")


# ------------------------------------------------------------------------------- gemm / dense

@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 70), st.booleans(), st.booleans(),
       kinds, kinds, st.sampled_from([None, "relu", "tanh"]), seeds)
def test_fuzz_gemm_and_dense(device, m, n, k, trans_a, trans_b, ka, kb, activation, seed):
    rng = np.random.default_rng(seed)
    a = values(rng, (k, m) if trans_a else (m, k), ka)
    b = values(rng, (n, k) if trans_b else (k, n), kb)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    got = dense_ops.gemm(device, device.to_device(a), device.to_device(b), trans_a, trans_b)
    abs_ref = o_dense.gemm(np.abs(a64), np.abs(b64), trans_a, trans_b)
    bound = 2e-5 * _amax(abs_ref) + _ftz(k, _amax(a), _amax(b))
    assert_close(got.get(), o_dense.gemm(a64, b64, trans_a, trans_b), bound, 0.0, f"gemm {ka}x{kb}")

    # Dense: x (m, k), w (n, k), bias, fused activation; backward with gy (m, n).
    x, w = values(rng, (m, k), ka), values(rng, (n, k), kb)
    bias = values(rng, (n,), "normal")
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = dense_ops.dense_forward(device, device.to_device(x), device.to_device(w), device.to_device(bias), activation)
    pre = o_dense.dense_forward(x64, w64, bias.astype(np.float64))
    abs_pre = o_dense.dense_forward(np.abs(x64), np.abs(w64), np.abs(bias.astype(np.float64)))
    bound = 2e-5 * _amax(abs_pre) + 4e-7 + _ftz(k, _amax(x), _amax(w))
    assert_close(y.get(), ACT[activation](pre), bound, 0.0, f"dense {activation} {ka}x{kb}")
    gy = values(rng, (m, n), "normal" if "large" in (ka, kb) else ka)
    got = dense_ops.dense_backward(device, device.to_device(x), device.to_device(w), device.to_device(gy))
    refs = o_dense.dense_backward(x64, w64, gy.astype(np.float64))
    abs_refs = o_dense.dense_backward(np.abs(x64), np.abs(w64), np.abs(gy.astype(np.float64)))
    for g, r, ar, count, what in zip(got, refs, abs_refs, (n, m, m), ("gx", "gw", "gb")):
        bound = 2e-5 * _amax(ar) + _ftz(count, _amax(x), _amax(w), _amax(gy))
        assert_close(g.get(), r, bound, 0.0, f"dense {what} {ka}x{kb}")


# ------------------------------------------------------------------------------- dropout

@given(st.lists(st.integers(1, 30), min_size=1, max_size=4), st.sampled_from([0.0, 0.1, 0.5, 0.9]),
       st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1), kinds, seeds)
def test_fuzz_dropout(device, shape, p, drop_seed, step, kind, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, tuple(shape), kind)
    y, mask = drop_ops.dropout_forward(device, device.to_device(x), p, drop_seed, step)
    y_ref, mask_ref = o_drop.dropout_forward(x, p, drop_seed, step)
    np.testing.assert_array_equal(mask.get(), mask_ref)              # the mask is bit-exact
    assert_close(y.get(), y_ref, 4 * TINY, 0.0, f"dropout ({kind})")  # one product each
    gy = values(rng, tuple(shape), kind)
    gx = drop_ops.dropout_backward(device, device.to_device(gy), mask)
    assert_close(gx.get(), o_drop.dropout_backward(gy, mask_ref), 4 * TINY, 0.0, f"dropout backward ({kind})")


# ------------------------------------------------------------------------------- losses

@given(st.integers(1, 40), st.integers(1, 30), kinds, seeds)
def test_fuzz_cross_entropy(device, n, k, kind, seed):
    rng = np.random.default_rng(seed)
    logits = values(rng, (n, k), kind)
    if kind == "large":
        logits *= np.float32(1e20)
    labels = rng.integers(0, k, size=n).astype(np.int32)
    loss, probs = loss_ops.softmax_cross_entropy_forward(device, device.to_device(logits),
                                                         device.to_device(labels, np.int32))
    ref_loss, ref_probs = o_loss.softmax_cross_entropy_forward(logits.astype(np.float64), labels)
    # logsumexp(z) - z[label]: a difference of numbers up to max|z|, so its error scales with that.
    assert_close(loss.get()[0], ref_loss, 1e-6 * (1 + _amax(logits)) + 1e-6 * np.log(k), 1e-5, f"loss ({kind})")
    assert_close(probs.get(), ref_probs, 1e-7, 1e-5, f"probs ({kind})")
    grad = loss_ops.softmax_cross_entropy_backward(device, probs, device.to_device(labels, np.int32))
    assert_close(grad.get(), o_loss.softmax_cross_entropy_backward(ref_probs, labels), 1e-7 / n, 1e-5,
                 f"dlogits ({kind})")


@given(st.lists(st.integers(1, 20), min_size=1, max_size=4), kinds, kinds, seeds)
def test_fuzz_mse(device, shape, kp, kt, seed):
    rng = np.random.default_rng(seed)
    pred, target = values(rng, tuple(shape), kp), values(rng, tuple(shape), kt)
    p64, t64 = pred.astype(np.float64), target.astype(np.float64)
    count = pred.size
    loss = loss_ops.mse_forward(device, device.to_device(pred), device.to_device(target))
    # Squares of up to 1e30, summed, then scaled: relative error ~ (count + a few) * eps;
    # squares of denormals underflow.
    sq_scale = float(np.mean((np.abs(p64) + np.abs(t64)) ** 2))
    assert_close(loss.get()[0], o_loss.mse_forward(p64, t64), (count + 4) * EPS * sq_scale + 4 * TINY, 0.0,
                 f"mse ({kp}, {kt})")
    grad = loss_ops.mse_backward(device, device.to_device(pred), device.to_device(target))
    assert_close(grad.get(), o_loss.mse_backward(p64, t64), 4 * TINY, 4 * EPS, f"mse backward ({kp}, {kt})")


# ------------------------------------------------------------------------------- optimizers

@given(st.lists(st.integers(1, 40), min_size=1, max_size=3), kinds, st.booleans(), st.booleans(), seeds)
def test_fuzz_optimizers(device, shape, kind, nesterov, first_step, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    param, grad, mom = values(rng, shape, "normal"), values(rng, shape, kind), values(rng, shape, kind)
    pd, md = device.to_device(param), device.to_device(mom)
    optim_ops.sgd_update(device, pd, device.to_device(grad), md, lr=0.05, momentum=0.9, weight_decay=1e-4,
                         nesterov=nesterov, first_step=first_step)
    ref_p, ref_m = o_optim.sgd_update(param.astype(np.float64), grad.astype(np.float64), mom.astype(np.float64),
                                      lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=nesterov,
                                      first_step=first_step)
    # A handful of float32 multiply-adds per element.
    scale = _amax(param) + _amax(grad) + _amax(mom)
    assert_close(md.get(), ref_m, 4 * EPS * scale + 8 * TINY, 0.0, f"sgd momentum ({kind})")
    assert_close(pd.get(), ref_p, 4 * EPS * scale + 8 * TINY, 0.0, f"sgd param ({kind})")

    m, v = values(rng, shape, kind), np.abs(values(rng, shape, kind))
    if kind == "large":
        v = v * v                    # second moments are squares of gradients
    arrays = [device.to_device(a) for a in (param, grad, m, v)]
    optim_ops.adam_update(device, *arrays, lr=1e-3, weight_decay=1e-2, step=5)
    ref = o_optim.adam_update(*(a.astype(np.float64) for a in (param, grad, m, v)), lr=1e-3, weight_decay=1e-2, step=5)
    assert_close(arrays[2].get(), ref[1], 4 * EPS * (_amax(m) + _amax(grad) + 0.01 * _amax(param)) + 8 * TINY, 0.0,
                 f"adam m ({kind})")
    assert_close(arrays[3].get(), ref[2], 4 * EPS * _amax(ref[2]) + 8 * TINY, 4 * EPS, f"adam v ({kind})")
    # A few ulps of the parameter and of the new value (v = 0 with m != 0, drawn here though a
    # real run never reaches it, makes a step of lr * m_hat / eps), plus a small fraction of lr.
    assert_close(arrays[0].get(), ref[0], 4 * EPS * _amax(param) + 1e-3 * 1e-4, 4 * EPS, f"adam param ({kind})")
