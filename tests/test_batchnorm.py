"""BatchNorm2D kernels (train and eval, forward and backward, running statistics) vs the NumPy
oracle over random shapes; the oracle vs finite differences and vs torch; fold_into_conv."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from clcnn.errors import ShapeError
from clcnn.ops import batchnorm as ops
from clcnn.oracle import batchnorm as oracle
from clcnn.oracle import conv2d as o_conv
from tests.helpers import assert_close, kernel_runs, launched_kernels as launched, numeric_grad

# Tolerance of the float32 kernels against the float64 oracle, as a multiple of each result's
# error scale (_scales). The kernels' sums have at most MAX_CHUNK / 8 = 1024 terms per float
# lane before lanes, segments and chunks are added pairwise-ish: a float32 sum of n terms is
# off by about sqrt(n) * 6e-8 (1.9e-6 for 1024) times the size of its terms, by n * 6e-8
# (6e-5) at worst. 1e-5 sits between the two: over 300 random cases and 128x16x32x32 the largest
# error was 1/12 of it for y and the mean, 1/100 for the gradients and running statistics.
TOL = 1e-5


def _scales(x, gy, weight, bias, mean, invstd):
    """Error scale of every result, float64, from the sizes of the terms each one adds up.
    rel (per channel) = 1 + |mean| * invstd: the mean is rounded to float32 at |mean| * 6e-8,
    which moves xhat by that times invstd, so channels whose mean is large next to their spread
    carry proportionally more error (in the oracle too, were it float32)."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    pc = lambda v: np.asarray(v)[None, :, None, None]   # noqa: E731
    w = np.ones_like(mean) if weight is None else np.abs(weight)
    b = np.zeros_like(mean) if bias is None else np.abs(bias)
    rel = 1.0 + np.abs(mean) * invstd
    xhat = np.abs(x - pc(mean)) * pc(invstd)
    y = pc(w) * (xhat + pc(rel)) + pc(b)
    agy = np.abs(gy)
    gbias = agy.sum(axis=(0, 2, 3))
    gweight = (agy * (xhat + pc(rel))).sum(axis=(0, 2, 3))
    gx = pc(w * invstd) * (agy + pc(gbias / m) + (xhat + pc(rel)) * pc(gweight / m))
    return {"y": y, "gx": gx, "gweight": gweight, "gbias": gbias,
            "mean": np.abs(mean) + 1.0 / invstd, "invstd": invstd}


@st.composite
def bn_cases(draw, train=True):
    """Batch 1..8, channels 1..40, maps 1..12 per side (odd sizes, 1x1), N*H*W > 1 in train;
    per-channel offsets up to 20x the spread; small chunk limits so chunks straddle planes."""
    n, c = draw(st.integers(1, 8)), draw(st.integers(1, 40))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    if train and n * h * w == 1:
        w = 2
    affine = draw(st.booleans())
    tracking = draw(st.booleans())
    momentum = draw(st.sampled_from([0.1, 0.0, 1.0, 0.37, None]))
    batches = draw(st.integers(1, 5))
    max_chunk = draw(st.sampled_from([ops.MAX_CHUNK, 3, 13, 64]))
    need_input_grad = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 31))
    return (n, c, h, w), affine, tracking, momentum, batches, max_chunk, need_input_grad, seed


def _data(rng, shape, affine):
    c = shape[1]
    spread = rng.uniform(0.05, 5.0, c)
    loc = spread * rng.uniform(-20, 20, c)
    x = (loc[None, :, None, None] + spread[None, :, None, None] * rng.standard_normal(shape)).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal(c).astype(np.float32) if affine else None
    bias = rng.standard_normal(c).astype(np.float32) if affine else None
    rmean = rng.standard_normal(c).astype(np.float32)
    rvar = rng.uniform(0.1, 3.0, c).astype(np.float32)
    return x, gy, weight, bias, rmean, rvar


def _f64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def _dev(device, *arrays):
    return [None if a is None else device.to_device(a) for a in arrays]


class _Chunks:
    """Set ops.MAX_CHUNK (and MIN_CHUNK 1) for a block: tiny chunks split planes mid-way."""
    def __init__(self, max_chunk):
        self.max_chunk = max_chunk

    def __enter__(self):
        self.saved = ops.MAX_CHUNK, ops.MIN_CHUNK
        ops.MAX_CHUNK, ops.MIN_CHUNK = self.max_chunk, min(ops.MIN_CHUNK, self.max_chunk)

    def __exit__(self, *exc):
        ops.MAX_CHUNK, ops.MIN_CHUNK = self.saved


@contextlib.contextmanager
def by_channel(mode):
    """The train-mode kernels for a block: "channel", a channel per work item
    (batchnorm_forward_train_channel, batchnorm_backward_channel) for any shape on CPUs;
    "block", blocks of channels per item (the _block kernels) where a channel is one chunk;
    "chunks", the three launches each (chunked sums, their combination, the elementwise
    pass); None, the module's own rule."""
    names = ("BY_CHANNEL_FLOATS", "BY_CHANNEL_PLANE", "BY_CHANNEL_ITEMS")
    saved = [getattr(ops, name) for name in names]
    values = {"channel": (2 ** 31, 1, 0), "block": (2 ** 31, 2 ** 31, 0), "chunks": (0, 1, 0)}.get(mode)
    if values:
        for name, value in zip(names, values):
            setattr(ops, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            setattr(ops, name, value)


PATHS = [None, "channel", "block", "chunks"]


# Run lengths of the elementwise kernels (None: the default choice): one element, one float8,
# 13 and 49 (not multiples of 8; 49 equals a 7x7 plane), 64; with maps of 1..12 per side the
# runs are shorter than, equal to and longer than a plane, and start mid-plane.
RUNS = [None, 1, 8, 13, 49, 64]


@st.composite
def fused_cases(draw, activations):
    """Cases of the BatchNorm kernels with a fused activation (and residual): batch 1..6,
    channels 1..24, maps 1..10 per side (N*H*W > 1 in train), train or eval, affine or not, one
    of `activations`, a negative slope of 0, 0.01 or 0.3, need_input_grad and a seed."""
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 24))
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    training = draw(st.booleans())
    if training and n * h * w == 1:
        w = 2
    return ((n, c, h, w), training, draw(st.booleans()), draw(st.sampled_from(activations)),
            draw(st.sampled_from([0.0, 0.01, 0.3])), draw(st.booleans()), draw(st.integers(0, 2 ** 31)))


def _fused_data(rng, shape, affine, residual=False):
    """float32 x ~ N(1, 2), a residual ~ N(0, 3) (None unless `residual`), gy ~ N(0, 1), weight and
    bias ~ N(0, 3) (None unless affine: they spread the outputs over both sides of relu6's
    kinks), running mean ~ N(0, 0.5) and running var in [0.5, 2], drawn in that order."""
    c = shape[1]
    x = (rng.standard_normal(shape) * 2.0 + 1.0).astype(np.float32)
    res = (rng.standard_normal(shape) * 3.0).astype(np.float32) if residual else None
    gy = rng.standard_normal(shape).astype(np.float32)
    weight = (rng.standard_normal(c) * 3.0).astype(np.float32) if affine else None
    bias = (rng.standard_normal(c) * 3.0).astype(np.float32) if affine else None
    rmean = (rng.standard_normal(c) * 0.5).astype(np.float32)
    rvar = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return x, res, gy, weight, bias, rmean, rvar


def _oracle_forward(training, x, weight, bias, rmean, rvar):
    """The float64 oracle's BatchNorm forward (momentum 0.1, eps 1e-5) of float32 arrays:
    y, the batch's (train) or running (eval) mean and invstd, and the updated running mean and
    var (train; None in eval)."""
    x64, w64, b64, rm64, rv64 = _f64(x, weight, bias, rmean, rvar)
    if training:
        return oracle.batchnorm2d_forward_train(x64, w64, b64, rm64, rv64, 0.1, 1e-5)
    y = oracle.batchnorm2d_forward_eval(x64, w64, b64, rm64, rv64, 1e-5)
    return y, rm64, 1.0 / np.sqrt(rv64 + 1e-5), None, None


def _fused_reference(shape, training, affine, seed, residual=False):
    """The operands of a fused_cases case, drawn from its seed (_fused_data: x, residual, gy,
    weight, bias, running mean and var) and the oracle's BatchNorm forward of them
    (_oracle_forward: y, mean, invstd, new running mean and var)."""
    x, res, gy, weight, bias, rmean, rvar = _fused_data(np.random.default_rng(seed), shape, affine, residual)
    return (x, res, gy, weight, bias, rmean, rvar), _oracle_forward(training, x, weight, bias, rmean, rvar)


def _assert_statistics(smean, sinv, drm, drv, reference, scale):
    """A train forward's saved mean and invstd (to TOL of their error scales) and the running
    mean and var it updated (to 1e-5) against the oracle's (_oracle_forward's output)."""
    _, mean, invstd, new_mean, new_var = reference
    assert_close(smean.get(), mean, TOL * scale["mean"], 0, "mean")
    assert_close(sinv.get(), invstd, TOL * scale["invstd"], 0, "invstd")
    assert_close(drm.get(), new_mean, 1e-5, 1e-5, "running_mean")
    assert_close(drv.get(), new_var, 1e-5, 1e-5, "running_var")


def _assert_gradients(gx, gw, gb, want, scale, need_input_grad, affine, what):
    """gx (None unless need_input_grad), gweight and gbias (None unless affine) against the
    oracle's `want` = (gx, gweight, gbias), each to TOL of its error scale."""
    if need_input_grad:
        assert_close(gx.get(), want[0], TOL * scale["gx"], 0, f"gx ({what})")
    else:
        assert gx is None
    if affine:
        assert_close(gw.get(), want[1], TOL * scale["gweight"], 0, "gweight")
        assert_close(gb.get(), want[2], TOL * scale["gbias"], 0, "gbias")
    else:
        assert gw is None and gb is None


def _check_train(device, shape, affine, tracking, momentum, batches, need_input_grad, seed):
    rng = np.random.default_rng(seed)
    x, gy, weight, bias, rmean, rvar = _data(rng, shape, affine)
    dx, dgy, dw, db = _dev(device, x, gy, weight, bias)
    drm, drv = _dev(device, rmean, rvar) if tracking else (None, None)
    y, save_mean, save_invstd = ops.batchnorm2d_forward_train(
        device, dx, dw, db, drm, drv, momentum, 1e-5, num_batches_tracked=batches)
    x64, gy64, w64, b64, rm64, rv64 = _f64(x, gy, weight, bias, rmean, rvar)
    ry, rmean_b, rinvstd, new_rm, new_rv = oracle.batchnorm2d_forward_train(
        x64, w64, b64, rm64 if tracking else None, rv64 if tracking else None, momentum, 1e-5, batches)
    s = _scales(x64, gy64, w64, b64, rmean_b, rinvstd)
    assert_close(y.get(), ry, TOL * s["y"], 0.0, "y")
    assert_close(save_mean.get(), rmean_b, TOL * s["mean"], 0.0, "save_mean")
    assert_close(save_invstd.get(), rinvstd, 0.0, TOL, "save_invstd")
    if tracking:
        assert_close(drm.get(), new_rm, TOL * (np.abs(rm64) + s["mean"]), 0.0, "running_mean")
        unbiased = 1.0 / rinvstd ** 2 * x.size / shape[1] / (x.size / shape[1] - 1)
        assert_close(drv.get(), new_rv, TOL * (rv64 + unbiased), 0.0, "running_var")

    gx, gw, gb = ops.batchnorm2d_backward(device, dx, dgy, dw, save_mean, save_invstd,
                                          need_input_grad=need_input_grad)
    rgx, rgw, rgb = oracle.batchnorm2d_backward(x64, gy64, w64, rmean_b, rinvstd)
    if need_input_grad:
        assert_close(gx.get(), rgx, TOL * s["gx"], 0.0, "gx")
    else:
        assert gx is None
    if affine:
        assert_close(gw.get(), rgw, TOL * s["gweight"], 0.0, "gweight")
        assert_close(gb.get(), rgb, TOL * s["gbias"], 0.0, "gbias")
    else:
        assert gw is None and gb is None


@given(case=bn_cases(), run=st.sampled_from(RUNS), path=st.sampled_from(PATHS))
def test_train_matches_oracle(device, case, run, path):
    shape, affine, tracking, momentum, batches, max_chunk, need_input_grad, seed = case
    with _Chunks(max_chunk), kernel_runs(ops, run), by_channel(path):
        _check_train(device, shape, affine, tracking, momentum, batches, need_input_grad, seed)


@pytest.mark.parametrize("shape,path_on_cpus", [
    ((64, 16, 32, 32), "channel"), ((8, 144, 16, 16), "channel"),
    ((64, 64, 8, 8), "block"), ((64, 384, 4, 4), "block"),     # small planes: contiguous runs of planes
    ((4, 3, 32, 32), "chunks"),               # fewer than BY_CHANNEL_ITEMS channels per compute unit
    ((257, 16, 32, 32), "chunks"),            # a channel past BY_CHANNEL_FLOATS
    ((256, 64, 8, 8), "chunks"),              # small planes, a channel of several chunks
])
def test_train_kernels_by_shape(device, shape, path_on_cpus):
    x = device.to_device(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    names = []
    with launched(names):
        _, mean, invstd = ops.batchnorm2d_forward_train(device, x, None, None, None, None)
        ops.batchnorm2d_backward(device, x, x, None, mean, invstd)
    items = ops.BY_CHANNEL_ITEMS * device.cl_device.max_compute_units
    path = path_on_cpus if device.is_cpu and shape[1] >= items * (2 if path_on_cpus == "block" else 1) else "chunks"
    assert names == {"channel": ["batchnorm_forward_train_channel", "batchnorm_backward_channel"],
                     "block": ["batchnorm_forward_train_block", "batchnorm_backward_block"],
                     "chunks": ["batchnorm_stats_partial", "batchnorm_stats_combine", "batchnorm_forward_normalize",
                                "batchnorm_backward_partial", "batchnorm_backward_combine",
                                "batchnorm_backward_input"]}[path]


@given(case=bn_cases(train=False), run=st.sampled_from(RUNS))
def test_eval_matches_oracle(device, case, run):
    with kernel_runs(ops, run):
        _check_eval(device, case)


def _check_eval(device, case):
    shape, affine, _, _, _, max_chunk, need_input_grad, seed = case
    rng = np.random.default_rng(seed)
    x, gy, weight, bias, rmean, rvar = _data(rng, shape, affine)
    dx, dgy, dw, db, drm, drv = _dev(device, x, gy, weight, bias, rmean, rvar)
    x64, gy64, w64, b64, rm64, rv64 = _f64(x, gy, weight, bias, rmean, rvar)
    s = _scales(x64, gy64, w64, b64, rm64, 1.0 / np.sqrt(rv64 + 1e-5))
    y = ops.batchnorm2d_forward_eval(device, dx, dw, db, drm, drv, 1e-5)
    assert_close(y.get(), oracle.batchnorm2d_forward_eval(x64, w64, b64, rm64, rv64, 1e-5), TOL * s["y"], 0.0, "y")
    with _Chunks(max_chunk):
        gx, gw, gb = ops.batchnorm2d_backward_eval(device, dx, dgy, dw, drm, drv, 1e-5,
                                                   need_input_grad=need_input_grad)
    rgx, rgw, rgb = oracle.batchnorm2d_backward_eval(x64, gy64, w64, rm64, rv64, 1e-5)
    if need_input_grad:
        assert_close(gx.get(), rgx, TOL * s["gx"], 0.0, "gx")
    if affine:
        assert_close(gw.get(), rgw, TOL * s["gweight"], 0.0, "gweight")
        assert_close(gb.get(), rgb, TOL * s["gbias"], 0.0, "gbias")
    # the running statistics are inputs here: eval mode must leave them alone
    assert np.array_equal(drm.get(), rmean) and np.array_equal(drv.get(), rvar)


@pytest.mark.parametrize("shape", [(16, 32, 16, 16), (32, 4, 32, 32), (2, 3, 7, 7), (1, 3, 33, 33),
                                   (5, 300, 1, 1)])
def test_network_shapes(device, shape):
    """A ResNet-sized map (one chunk per channel), a large M (several chunks of MAX_CHUNK), a
    7x7 map (runs straddle planes), batch 1 with planes longer than the default run and not a
    multiple of 8, 1x1 maps (runs of many planes), all with the default chunking."""
    _check_train(device, shape, True, True, 0.1, 1, True, 7)


def test_constant_channel_is_exact(device):
    """A channel of one repeated value has variance 0: mean is exact (the chunk sums are
    shifted by a value of the chunk), so y = bias exactly and gx stays finite."""
    x = np.full((4, 2, 5, 5), 3.75, np.float32)
    x[:, 1] = np.random.default_rng(0).standard_normal((4, 5, 5))
    w, b = np.array([2.0, 1.0], np.float32), np.array([0.5, -1.0], np.float32)
    y, mean, invstd = ops.batchnorm2d_forward_train(device, *_dev(device, x, w, b), None, None)
    assert mean.get()[0] == np.float32(3.75)
    assert np.all(y.get()[:, 0] == np.float32(0.5))
    gx, _, _ = ops.batchnorm2d_backward(device, device.to_device(x), device.to_device(np.ones_like(x)),
                                        device.to_device(w), mean, invstd)
    assert np.all(np.isfinite(gx.get()))


def test_several_steps_running_stats(device):
    """Running statistics after 4 train steps (momentum 0.1 and torch's cumulative average),
    each step on fresh data, against the oracle carried through the same steps."""
    rng = np.random.default_rng(3)
    c = 5
    for momentum in (0.1, None):
        rm, rv = np.zeros(c), np.ones(c)
        drm, drv = _dev(device, np.zeros(c, np.float32), np.ones(c, np.float32))
        for step in range(1, 5):
            x = (2.0 + 3.0 * rng.standard_normal((3, c, 4, 6))).astype(np.float32)
            ops.batchnorm2d_forward_train(device, device.to_device(x), None, None, drm, drv,
                                          momentum, 1e-5, num_batches_tracked=step)
            _, _, _, rm, rv = oracle.batchnorm2d_forward_train(x.astype(np.float64), None, None, rm, rv,
                                                               momentum, 1e-5, step)
        assert_close(drm.get(), rm, 1e-5 * (np.abs(rm) + 3.0), 0.0, f"running_mean (momentum {momentum})")
        assert_close(drv.get(), rv, 1e-5 * rv, 0.0, f"running_var (momentum {momentum})")


# -- the oracle --------------------------------------------------------------------------------
@pytest.mark.parametrize("affine", [True, False])
def test_oracle_train_backward_matches_finite_differences(affine):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 2, 3, 2)) * 2.0 + 1.0
    gy = rng.standard_normal(x.shape)
    w = rng.standard_normal(2) if affine else None
    b = rng.standard_normal(2) if affine else None

    def loss(xv, wv, bv):
        return float((oracle.batchnorm2d_forward_train(xv, wv, bv, None, None, 0.1, 1e-5)[0] * gy).sum())

    _, mean, invstd, _, _ = oracle.batchnorm2d_forward_train(x, w, b, None, None, 0.1, 1e-5)
    gx, gw, gb = oracle.batchnorm2d_backward(x, gy, w, mean, invstd)
    assert_close(gx, numeric_grad(lambda v: loss(v, w, b), x), 1e-7, 1e-6, "gx")
    if affine:
        assert_close(gw, numeric_grad(lambda v: loss(x, v, b), w), 1e-7, 1e-6, "gweight")
        assert_close(gb, numeric_grad(lambda v: loss(x, w, v), b), 1e-7, 1e-6, "gbias")
    else:
        assert gw is None and gb is None


def test_oracle_eval_backward_matches_finite_differences():
    rng = np.random.default_rng(12)
    x, gy = rng.standard_normal((2, 3, 2, 3)), rng.standard_normal((2, 3, 2, 3))
    w, b, rm, rv = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3), rng.uniform(0.5, 2, 3)

    def loss(xv, wv, bv):
        return float((oracle.batchnorm2d_forward_eval(xv, wv, bv, rm, rv, 1e-5) * gy).sum())

    gx, gw, gb = oracle.batchnorm2d_backward_eval(x, gy, w, rm, rv, 1e-5)
    assert_close(gx, numeric_grad(lambda v: loss(v, w, b), x), 1e-7, 1e-6, "gx")
    assert_close(gw, numeric_grad(lambda v: loss(x, v, b), w), 1e-7, 1e-6, "gweight")
    assert_close(gb, numeric_grad(lambda v: loss(x, w, v), b), 1e-7, 1e-6, "gbias")


@pytest.mark.parametrize("affine,momentum", [(True, 0.1), (False, 0.3), (True, None)])
def test_oracle_and_kernels_match_torch(device, affine, momentum):
    """torch.nn.BatchNorm2d in float64 over 3 train steps (output, autograd gradients, running
    statistics, num_batches_tracked for momentum=None), then eval mode; the kernels run the
    same steps."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    c = 4
    bn = torch.nn.BatchNorm2d(c, momentum=momentum, affine=affine).double()
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.from_numpy(rng.standard_normal(c)))
            bn.bias.copy_(torch.from_numpy(rng.standard_normal(c)))
    w = bn.weight.detach().numpy().copy() if affine else None
    b = bn.bias.detach().numpy().copy() if affine else None
    rm, rv = np.zeros(c), np.ones(c)
    dw, db = _dev(device, *[None if a is None else a.astype(np.float32) for a in (w, b)])
    drm, drv = _dev(device, np.zeros(c, np.float32), np.ones(c, np.float32))
    for step in range(1, 4):
        x = 1.5 + 2.0 * rng.standard_normal((3, c, 5, 4))
        gy = rng.standard_normal(x.shape)
        tx = torch.from_numpy(x).requires_grad_()
        ty = bn(tx)
        ty.backward(torch.from_numpy(gy))
        y, mean, invstd, rm, rv = oracle.batchnorm2d_forward_train(x, w, b, rm, rv, momentum, 1e-5, step)
        gx, gw, gb = oracle.batchnorm2d_backward(x, gy, w, mean, invstd)
        assert_close(y, ty.detach().numpy(), 1e-12, 1e-10, "y")
        assert_close(gx, tx.grad.numpy(), 1e-12, 1e-10, "gx")
        if affine:
            assert_close(gw, bn.weight.grad.numpy(), 1e-12, 1e-10, "gweight")
            assert_close(gb, bn.bias.grad.numpy(), 1e-12, 1e-10, "gbias")
            bn.weight.grad = bn.bias.grad = None
        assert_close(rm, bn.running_mean.numpy(), 1e-12, 1e-10, "running_mean")
        assert_close(rv, bn.running_var.numpy(), 1e-12, 1e-10, "running_var")
        assert int(bn.num_batches_tracked) == step
        ops.batchnorm2d_forward_train(device, device.to_device(x.astype(np.float32)), dw, db, drm, drv,
                                      momentum, 1e-5, num_batches_tracked=step)
        assert_close(drm.get(), rm, 1e-5 * (np.abs(rm) + 2.0), 0.0, "kernel running_mean")
        assert_close(drv.get(), rv, 1e-5 * rv, 0.0, "kernel running_var")

    bn.eval()
    x = 1.5 + 2.0 * rng.standard_normal((2, c, 3, 3))
    gy = rng.standard_normal(x.shape)
    tx = torch.from_numpy(x).requires_grad_()
    ty = bn(tx)
    ty.backward(torch.from_numpy(gy))
    assert_close(oracle.batchnorm2d_forward_eval(x, w, b, rm, rv, 1e-5), ty.detach().numpy(), 1e-12, 1e-10, "eval y")
    gx, gw, gb = oracle.batchnorm2d_backward_eval(x, gy, w, rm, rv, 1e-5)
    assert_close(gx, tx.grad.numpy(), 1e-12, 1e-10, "eval gx")
    if affine:
        assert_close(gw, bn.weight.grad.numpy(), 1e-12, 1e-10, "eval gweight")
        assert_close(gb, bn.bias.grad.numpy(), 1e-12, 1e-10, "eval gbias")


def test_oracle_refuses_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        oracle.batchnorm2d_forward_train(np.ones((1, 3, 1, 1)), None, None, None, None)


# -- folding into a convolution -----------------------------------------------------------------
@pytest.mark.parametrize("conv_bias,affine", [(True, True), (False, True), (True, False)])
def test_fold_into_conv_equals_conv_then_batchnorm(conv_bias, affine):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 3, 7, 6))
    wc = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    bc = rng.standard_normal(5).astype(np.float32) if conv_bias else None
    gamma = rng.standard_normal(5).astype(np.float32) if affine else None
    beta = rng.standard_normal(5).astype(np.float32) if affine else None
    rm, rv = rng.standard_normal(5).astype(np.float32), rng.uniform(0.2, 2, 5).astype(np.float32)
    stride, pads = (2, 1), (1, 1, 0, 2)
    conv = o_conv.conv2d_forward(x, wc.astype(np.float64), None if bc is None else bc.astype(np.float64), stride, pads)
    expected = oracle.batchnorm2d_forward_eval(conv, *_f64(gamma, beta, rm, rv), 1e-5)
    wf, bf = ops.fold_into_conv(wc, bc, gamma, beta, rm, rv, 1e-5)
    assert wf.dtype == np.float32 and bf.dtype == np.float32 and wf.shape == wc.shape and bf.shape == (5,)
    got = o_conv.conv2d_forward(x, wf.astype(np.float64), bf.astype(np.float64), stride, pads)
    # the folded weights and bias are rounded to float32 once (relative 6e-8 each); the sums
    # have 27 terms of |x w|
    mag = o_conv.conv2d_forward(np.abs(x), np.abs(wf.astype(np.float64)), np.abs(bf.astype(np.float64)), stride, pads)
    assert_close(got, expected, 1e-6 * mag, 0.0, "folded conv")


def test_fold_into_conv_takes_device_arrays(device):
    rng = np.random.default_rng(2)
    wc = rng.standard_normal((2, 1, 1, 1)).astype(np.float32)
    rm, rv = np.zeros(2, np.float32), np.full(2, 4.0, np.float32)
    wf, bf = ops.fold_into_conv(device.to_device(wc), None, None, None, device.to_device(rm), device.to_device(rv), 0.0 + 1e-5)
    assert_close(wf, wc / np.sqrt(4.0 + 1e-5), 0.0, 1e-6, "weight")
    assert np.all(bf == 0.0)


@settings(deadline=None)
@given(o=st.integers(1, 40), c=st.integers(1, 9), k=st.sampled_from([(1, 1), (3, 3), (5, 2)]),
       conv_bias=st.booleans(), affine=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fold_on_the_device_matches_the_host_fold(device, o, c, k, conv_bias, affine, seed):
    """fold_into_conv_device (the eval forward's fold) against fold_into_conv, whose float64
    arithmetic is the oracle: float32 division and sqrt (at most 3 ulp each in OpenCL) and one
    product or sum, so within 1e-6 relative of each folded value's terms."""
    rng = np.random.default_rng(seed)
    wc = rng.standard_normal((o, c) + k).astype(np.float32)
    bc = rng.standard_normal(o).astype(np.float32) if conv_bias else None
    gamma = rng.standard_normal(o).astype(np.float32) if affine else None
    beta = rng.standard_normal(o).astype(np.float32) if affine else None
    rm = rng.standard_normal(o).astype(np.float32)
    rv = rng.uniform(0.01, 3, o).astype(np.float32)
    on = (lambda a: None if a is None else device.to_device(a))
    wf, bf = ops.fold_into_conv_device(device, on(wc), on(bc), on(gamma), on(beta), on(rm), on(rv), 1e-5)
    want_w, want_b = ops.fold_into_conv(wc, bc, gamma, beta, rm, rv, 1e-5)
    scale = np.abs(1.0 if gamma is None else gamma) / np.sqrt(rv.astype(np.float64) + 1e-5)
    assert_close(wf.get(), want_w, 1e-6 * np.abs(wc) * scale[:, None, None, None], 0.0, "folded weight")
    b_terms = (np.abs(0 if bc is None else bc) + np.abs(rm)) * scale + np.abs(0 if beta is None else beta)
    assert_close(bf.get(), want_b, 1e-6 * b_terms, 0.0, "folded bias")


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_errors(device):
    x = device.to_device(np.ones((2, 3, 2, 2), np.float32))
    three, four = device.to_device(np.ones(3, np.float32)), device.to_device(np.ones(4, np.float32))
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel when training"):
        ops.batchnorm2d_forward_train(device, device.to_device(np.ones((1, 3, 1, 1), np.float32)),
                                      None, None, None, None)
    with pytest.raises(ShapeError, match=r"weight has shape \(4,\) but x has 3 channels"):
        ops.batchnorm2d_forward_train(device, x, four, three, None, None)
    with pytest.raises(ValueError, match="both weight and bias"):
        ops.batchnorm2d_forward_train(device, x, three, None, None, None)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        ops.batchnorm2d_forward_train(device, x, None, None, three, three, momentum=None)
    with pytest.raises(ValueError, match="momentum must be in"):
        ops.batchnorm2d_forward_train(device, x, None, None, three, three, momentum=1.5)
    with pytest.raises(ValueError, match="eval mode needs running_mean"):
        ops.batchnorm2d_forward_eval(device, x, None, None, None, None)
    with pytest.raises(ShapeError, match="gy shape"):
        ops.batchnorm2d_backward(device, x, device.to_device(np.ones((2, 3, 2, 1), np.float32)), None, three, three)
    with pytest.raises(ShapeError, match="4 dimensions"):
        ops.batchnorm2d_forward_eval(device, device.to_device(np.ones((2, 3), np.float32)), None, None, three, three)
    with pytest.raises(ShapeError, match="running_var has shape"):
        ops.fold_into_conv(np.ones((3, 1, 1, 1), np.float32), None, None, None, np.ones(3), np.ones(4))


@pytest.mark.parametrize("kwargs", [{}, {"training": False}, {"affine": False, "need_input_grad": False},
                                    {"affine": False, "training": False}])
def test_opspec_cases_pass_check(device, kwargs):
    """The op description that clcnn check and clcnn bench run agrees with the oracle."""
    from clcnn import opspec
    for shape in [(4, 16, 7, 7), (2, 3, 1, 1)]:
        result = opspec.check(opspec.batchnorm2d(shape, **kwargs), device, np.random.default_rng(1))
        assert result["ok"], (shape, kwargs, result)
