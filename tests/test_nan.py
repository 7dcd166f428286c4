"""NaN propagation: inputs holding NaN at random places give NaN exactly where PyTorch gives
NaN, forward and backward, for every kernel that compares (and the smooth ones beside them).

The reference is torch when it is installed, else the oracle; the oracle itself is checked
against torch (those tests skip without torch). Finite results are compared with the same
tolerances as the per-op tests.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from clcnn.ops import activation as act_ops
from clcnn.ops import conv2d as conv_ops
from clcnn.ops import dense as dense_ops
from clcnn.ops import loss as loss_ops
from clcnn.ops import pool as pool_ops
from clcnn.oracle import activation as o_act
from clcnn.oracle import dense as o_dense
from clcnn.oracle import loss as o_loss
from clcnn.oracle import pool as o_pool

try:
    import torch
    import torch.nn.functional as F
except ImportError:     # the oracle stands in; the oracle-vs-torch tests skip
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
EPS32 = float(np.finfo(np.float32).eps)
ACTS = ["relu", "leaky_relu", "relu6", "tanh", "sigmoid"]
FUSABLE = ["relu", "leaky_relu", "relu6"]


def assert_nan_close(actual, expected, atol=0.0, rtol=0.0, what="value"):
    """NaN exactly where expected has NaN; elsewhere |actual - expected| <= atol + rtol|expected|
    (infinities must match exactly)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    if (nan_a != nan_e).any():
        where = tuple(int(i) for i in np.argwhere(nan_a != nan_e)[0])
        raise AssertionError(f"{what}: NaN pattern differs at {int((nan_a != nan_e).sum())} of "
                             f"{actual.size} elements; first at {where}: got {actual[where]!r}, "
                             f"expected {expected[where]!r}")
    a, e = actual[~nan_e], expected[~nan_e]
    inf = np.isinf(e)
    assert (a[inf] == e[inf]).all(), f"{what}: infinities differ"
    err = np.abs(a[~inf] - e[~inf])
    bad = ~(err <= atol + rtol * np.abs(e[~inf]))
    assert not bad.any(), (f"{what}: {int(bad.sum())} finite elements off, max abs error "
                           f"{err.max():.3g} (atol={atol}, rtol={rtol})")


def with_nans(rng, shape, fraction, scale=1.0, infs=False):
    """Standard normal * scale with NaN (and, if infs, +-inf) at random places."""
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    u = rng.random(shape)
    x[u < fraction] = np.nan
    if infs:
        x[(u >= fraction) & (u < fraction + 0.05)] = np.inf
        x[(u >= fraction + 0.05) & (u < fraction + 0.1)] = -np.inf
    return x


fractions = st.sampled_from([0.02, 0.2, 0.6, 1.0])
seeds = st.integers(0, 2 ** 31)


# ---- references: torch when installed, else the oracle -----------------------------------------

def _torch_act(name, slope):
    return {"relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, slope), "relu6": F.relu6,
            "tanh": torch.tanh, "sigmoid": torch.sigmoid}[name]


def torch_act(name, x, gy, slope, dtype=None):
    """(y, dL/dx for dL/dy = gy) from torch autograd."""
    t = torch.tensor(x if dtype is None else x.astype(dtype), requires_grad=True)
    y = _torch_act(name, slope)(t)
    y.backward(torch.tensor(gy if dtype is None else gy.astype(dtype)))
    gx = t.grad.numpy().copy()
    if name == "relu6":
        # torch's relu6 gradient at NaN is not one value: its scalar CPU path and CUDA pass gy
        # ((x <= 0 || x >= 6) ? 0 : gy), its vectorised CPU path gives 0, so the result depends
        # on where the NaN sits in the tensor. clcnn takes the scalar rule, as for relu.
        gx[np.isnan(x)] = np.asarray(gy)[np.isnan(x)]
    return y.detach().numpy(), gx


def ref_act(name, x, gy, slope):
    if torch is not None:
        return torch_act(name, x, gy, slope)
    y = o_act.activation_forward(name, x, slope)
    return y, o_act.activation_backward(name, y, gy, slope)


def ref_maxpool(x, kernel, stride, pad):
    if torch is not None:
        y, i = F.max_pool2d(torch.tensor(x), kernel, stride, pad, return_indices=True)
        return y.numpy(), i.numpy()
    return o_pool.maxpool2d_forward(x, kernel, stride, (pad[0], pad[0], pad[1], pad[1]))


# ---- kernels --------------------------------------------------------------------------------

@given(name=st.sampled_from(ACTS), shape=st.lists(st.integers(1, 13), min_size=1, max_size=4).map(tuple),
       fraction=fractions, slope=st.sampled_from([0.0, 0.01, 0.2]), seed=seeds)
def test_activation_nan(device, name, shape, fraction, slope, seed):
    rng = np.random.default_rng(seed)
    x = with_nans(rng, shape, fraction, scale=4.0, infs=True)
    gy = with_nans(rng, shape, fraction / 2)        # NaN in the incoming gradient too
    y_ref, gx_ref = ref_act(name, x, gy, slope)
    y = act_ops.activation_forward(device, name, device.to_device(x), negative_slope=slope)
    # tolerances as tests/test_activation.py (ulp-level libm differences for tanh, sigmoid)
    assert_nan_close(y.get(), y_ref, atol=1e-30, rtol=1e-5, what=f"{name} forward")
    gx = act_ops.activation_backward(device, name, device.to_device(y_ref), device.to_device(gy),
                                     negative_slope=slope)
    assert_nan_close(gx.get(), gx_ref, atol=4e-7 * np.nanmax(np.abs(gy), initial=1.0), rtol=1e-6,
                     what=f"{name} backward")


def _conv_ref(x, w, b, pad, name):
    if torch is not None:
        z = F.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                     torch.tensor(b, dtype=torch.float64), padding=pad)
        return _torch_act(name, 0.1)(z).numpy()
    from clcnn.oracle import conv2d as o_conv
    z = o_conv.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                              (1, 1), (pad, pad, pad, pad))
    return o_act.activation_forward(name, z, 0.1)


def _check_conv(device, x, w, b, pad, name, algorithm):
    ref = _conv_ref(x, w, b, pad, name)
    y = conv_ops.conv2d_forward(device, device.to_device(x), device.to_device(w), device.to_device(b),
                                (1, 1), (pad, pad, pad, pad), activation=name, negative_slope=0.1,
                                algorithm=algorithm)
    # float32 sum of C*KH*KW products vs float64: error below that many eps times the sum of
    # |products| (bounded here by the largest finite |x| times sum |w| per filter)
    taps = w.shape[1] * w.shape[2] * w.shape[3]
    atol = 2 * taps * EPS32 * np.nanmax(np.abs(x), initial=1.0) * np.abs(w).sum(axis=(1, 2, 3)).max()
    assert_nan_close(y.get(), ref, atol=atol, rtol=1e-5, what=f"conv2d+{name} ({algorithm})")


# A few geometries (each is its own build; tests/test_conv2d.py covers shapes): ragged channel
# and pixel blocks, 1x1 and 3x3 padded.
CONV_SHAPES = [((1, 3, 7, 9), 5, 3), ((2, 2, 6, 11), 9, 1), ((1, 1, 10, 10), 8, 3)]


@given(name=st.sampled_from(FUSABLE), shape=st.sampled_from(CONV_SHAPES), fraction=fractions, seed=seeds)
def test_fused_conv_nan(device, name, shape, fraction, seed):
    rng = np.random.default_rng(seed)
    (n, c, h, w), o, k = shape
    x = with_nans(rng, (n, c, h, w), fraction / 4, scale=4.0)
    wt = rng.standard_normal((o, c, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    _check_conv(device, x, wt, b, k // 2, name, "direct")


def test_fused_conv_nan_tiled(device):
    # One shape (the tiled kernels take seconds to build on PoCL), every fusable activation.
    rng = np.random.default_rng(7)
    x = with_nans(rng, (2, 3, 9, 11), 0.03, scale=4.0)
    wt = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    for name in FUSABLE:
        _check_conv(device, x, wt, b, 1, name, "tiled")


@given(name=st.sampled_from(FUSABLE), n=st.integers(1, 9), i=st.integers(1, 40), o=st.integers(1, 20),
       fraction=fractions, seed=seeds)
def test_fused_dense_nan(device, name, n, i, o, fraction, seed):
    rng = np.random.default_rng(seed)
    x = with_nans(rng, (n, i), fraction / 8, scale=4.0)
    w = rng.standard_normal((o, i)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    if torch is not None:
        z = F.linear(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                     torch.tensor(b, dtype=torch.float64))
        ref = _torch_act(name, 0.1)(z).numpy()
    else:
        ref = o_dense.dense_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                    name, 0.1)
    y = dense_ops.dense_forward(device, device.to_device(x), device.to_device(w), device.to_device(b),
                                activation=name, negative_slope=0.1)
    atol = 2 * i * EPS32 * np.nanmax(np.abs(x), initial=1.0) * np.abs(w).sum(axis=1).max()
    assert_nan_close(y.get(), ref, atol=atol, rtol=1e-5, what=f"dense+{name}")


# (x shape, kernel, stride, pad): tiling, overlapping with padding, stride > kernel, one
# window per plane; widths give partial float8 chunks. torch allows pad <= kernel / 2.
POOL_CASES = [((2, 3, 8, 12), 2, 2, 0), ((1, 2, 9, 11), 3, 1, 1), ((2, 1, 7, 19), 2, 3, 1),
              ((1, 2, 4, 5), 4, 1, 2)]


@given(case=st.sampled_from(POOL_CASES), fraction=fractions, ties=st.booleans(), seed=seeds)
def test_maxpool_nan(device, case, fraction, ties, seed):
    rng = np.random.default_rng(seed)
    (n, c, h, w), k, s, pad = case
    x = with_nans(rng, (n, c, h, w), fraction / 3, infs=True)
    if ties:
        x = np.where(np.isnan(x), x, np.round(x)).astype(np.float32)
    y_ref, argmax_ref = ref_maxpool(x, (k, k), (s, s), (pad, pad))
    y, argmax = pool_ops.maxpool2d_forward(device, device.to_device(x), (k, k), (s, s), (pad,) * 4)
    # a selection: bit-exact, NaN where torch has NaN, argmax on the same pixel (its last NaN)
    np.testing.assert_array_equal(y.get(), y_ref)
    np.testing.assert_array_equal(argmax.get(), argmax_ref)
    gy = with_nans(rng, y_ref.shape, fraction / 3)
    gx = pool_ops.maxpool2d_backward(device, device.to_device(gy), argmax, x.shape).get()
    if torch is not None:
        t = torch.tensor(x, requires_grad=True)
        F.max_pool2d(t, k, s, pad).backward(torch.tensor(gy))
        gx_ref = t.grad.numpy()
    else:
        gx_ref = o_pool.maxpool2d_backward(gy, argmax_ref, x.shape)
    # both add gy into each pixel in row-major output order in float32
    assert_nan_close(gx, gx_ref, atol=0, rtol=4 * EPS32, what="maxpool backward")


@given(n=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 17), w=st.integers(1, 17),
       fraction=fractions, seed=seeds)
def test_global_maxpool_nan(device, n, c, h, w, fraction, seed):
    rng = np.random.default_rng(seed)
    x = with_nans(rng, (n, c, h, w), fraction / 4, infs=True)
    if torch is not None:
        y_ref, argmax_ref = (t.numpy() for t in F.adaptive_max_pool2d(torch.tensor(x), 1, return_indices=True))
    else:
        y_ref, argmax_ref = o_pool.global_maxpool2d_forward(x)
    y, argmax = pool_ops.global_maxpool2d_forward(device, device.to_device(x))
    np.testing.assert_array_equal(y.get(), y_ref)
    np.testing.assert_array_equal(argmax.get(), argmax_ref)
    gy = rng.standard_normal(y_ref.shape).astype(np.float32)
    gx = pool_ops.global_maxpool2d_backward(device, device.to_device(gy), argmax, x.shape).get()
    if torch is not None:
        t = torch.tensor(x, requires_grad=True)
        F.adaptive_max_pool2d(t, 1).backward(torch.tensor(gy))
        gx_ref = t.grad.numpy()
    else:
        gx_ref = o_pool.global_maxpool2d_backward(gy, argmax_ref, x.shape)
    np.testing.assert_array_equal(gx, gx_ref)


@given(rows=st.integers(1, 9), k=st.integers(1, 40), fraction=fractions, seed=seeds)
def test_softmax_and_cross_entropy_nan(device, rows, k, fraction, seed):
    rng = np.random.default_rng(seed)
    x = with_nans(rng, (rows, k), fraction / 10, scale=3.0)
    gy = rng.standard_normal((rows, k)).astype(np.float32)
    labels = rng.integers(0, k, rows)
    if torch is not None:
        t = torch.tensor(x, requires_grad=True)
        y_ref = torch.softmax(t, 1)
        y_ref.backward(torch.tensor(gy))
        y_ref, gx_ref = y_ref.detach().numpy(), t.grad.numpy()
        loss_ref = float(F.cross_entropy(torch.tensor(x), torch.tensor(labels)))
    else:
        y_ref = o_act.softmax_forward(x.astype(np.float64))
        gx_ref = o_act.softmax_backward(y_ref, gy.astype(np.float64))
        loss_ref = float(o_loss.softmax_cross_entropy_forward(x.astype(np.float64), labels)[0])
    y = act_ops.softmax_forward(device, device.to_device(x))
    # a NaN makes its whole row NaN; other rows as tests/test_activation.py
    assert_nan_close(y.get(), y_ref, atol=1e-7, rtol=2e-5, what="softmax forward")
    gx = act_ops.softmax_backward(device, device.to_device(y_ref.astype(np.float32)), device.to_device(gy))
    assert_nan_close(gx.get(), gx_ref, atol=(k + 4) * 1.2e-7 * np.abs(gy).max(), rtol=1e-5,
                     what="softmax backward")
    loss, probs = loss_ops.softmax_cross_entropy_forward(
        device, device.to_device(x), device.to_device(labels, dtype=np.int32))
    assert_nan_close(probs.get(), y_ref, atol=1e-7, rtol=2e-5, what="cross-entropy probs")
    assert_nan_close(loss.get()[0], loss_ref, atol=1e-6, rtol=1e-5, what="cross-entropy loss")


# ---- the oracle against torch -----------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_oracle_activation_matches_torch(name, slope):
    rng = np.random.default_rng(1)
    x = with_nans(rng, (6, 50), 0.2, scale=5.0, infs=True).astype(np.float64)
    x[0, :4] = [0.0, -0.0, 6.0, -6.0]           # the kinks themselves
    gy = with_nans(rng, x.shape, 0.1).astype(np.float64)
    y_ref, gx_ref = torch_act(name, x, gy, slope)
    y = o_act.activation_forward(name, x, slope)
    # float64 both sides; libm tanh/exp and 1 - y^2 differ by a few ulp of 1
    assert_nan_close(y, y_ref, atol=1e-15, rtol=1e-13, what=f"oracle {name} forward")
    assert_nan_close(o_act.activation_backward(name, y, gy, slope), gx_ref, atol=1e-15, rtol=1e-12,
                     what=f"oracle {name} backward")
    if name in FUSABLE:      # the dense oracle's fused activation
        assert_nan_close(o_dense._activate(x, name, slope), y_ref, what=f"oracle dense {name}")


@needs_torch
@pytest.mark.parametrize("kernel, stride, pad", [(2, 2, 0), (3, 1, 1), (3, 2, 1), (4, 3, 2)])
def test_oracle_maxpool_matches_torch(kernel, stride, pad):
    rng = np.random.default_rng(kernel * 10 + stride)
    x = with_nans(rng, (2, 3, 9, 10), 0.15, infs=True)
    x[0, 0] = np.round(x[0, 0])                  # ties
    y_ref, i_ref = F.max_pool2d(torch.tensor(x), kernel, stride, pad, return_indices=True)
    y, argmax = o_pool.maxpool2d_forward(x, (kernel, kernel), (stride, stride), (pad,) * 4)
    np.testing.assert_array_equal(y, y_ref.numpy())
    np.testing.assert_array_equal(argmax, i_ref.numpy())
    yg, ig = F.adaptive_max_pool2d(torch.tensor(x), 1, return_indices=True)
    y, argmax = o_pool.global_maxpool2d_forward(x)
    np.testing.assert_array_equal(y, yg.numpy())
    np.testing.assert_array_equal(argmax, ig.numpy())


@needs_torch
def test_oracle_softmax_matches_torch():
    rng = np.random.default_rng(2)
    x = with_nans(rng, (12, 7), 0.05, scale=3.0).astype(np.float64)
    x[0] = np.nan
    gy = rng.standard_normal(x.shape)
    t = torch.tensor(x, requires_grad=True)
    y_ref = torch.softmax(t, 1)
    y_ref.backward(torch.tensor(gy))
    y = o_act.softmax_forward(x)
    assert_nan_close(y, y_ref.detach().numpy(), atol=1e-16, rtol=1e-13, what="oracle softmax")
    assert_nan_close(o_act.softmax_backward(y, gy), t.grad.numpy(), atol=1e-16, rtol=1e-12,
                     what="oracle softmax backward")
    labels = rng.integers(0, 7, 12)
    loss = float(o_loss.softmax_cross_entropy_forward(x, labels)[0])
    assert np.isnan(loss) and np.isnan(float(F.cross_entropy(torch.tensor(x), torch.tensor(labels))))
