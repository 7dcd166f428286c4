"""A train-mode 2x2 AvgPool2D's backward deferred to the convolution before it
(fusion.defers_pool_backward, ops.conv2d_backward_pooled): the gradients from the pooling's
output gradient gp and the activation's output y, against the float64 oracle (pooling
backward, activation backward, convolution backward) over random shapes, activations,
blockings and both vector widths, on conv2d_rows' kernel, on the pixel-major pooling backward
(avgpool2d_backward_transposed) and on the fallback; the errors for inconsistent arguments;
and the model level: a training step defers both of LeNet-5's poolings and gives the gradients
of the undeferred schedule."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import clcnn
from clcnn import fusion, layers as L, tuning
from clcnn.errors import ShapeError
from clcnn.ops import _common, conv2d, conv2d_rows as rows, pool as pool_ops
from clcnn.oracle import activation as o_act, conv2d as o_conv, pool as o_pool
from tests.helpers import assert_close
from tests.test_conv2d import _bound
from tests.test_conv2d_rows import width  # noqa: F401 -- the fixture: float8 and float16 rows

ACTIVATIONS = [None, "relu", "tanh", "sigmoid", "leaky_relu", "relu6"]


def _arrays(seed, x_shape, w_shape, pads, activation):
    """x, w, y (a value the activation can give, None without one) and gp, float32."""
    rng = np.random.default_rng(seed)
    n, _, h, w = x_shape
    o, _, kh, kw = w_shape
    oh, ow = h + pads[0] + pads[1] - kh + 1, w + pads[2] + pads[3] - kw + 1
    x = rng.standard_normal(x_shape).astype(np.float32)
    wt = rng.standard_normal(w_shape).astype(np.float32)
    y = (o_act.activation_forward(activation, rng.standard_normal((n, o, oh, ow)) * 2, 0.01).astype(np.float32)
         if activation else None)
    gp = rng.standard_normal((n, o, oh // 2, ow // 2)).astype(np.float32)
    return x, wt, y, gp, (n, o, oh, ow)


def _pooled_gradient(gp, y, y_shape, activation):
    """dL/dy in float64: the pooling spreads gp / 4 (zero past the last whole window), then the
    activation's backward."""
    gy = o_pool.avgpool2d_backward(gp.astype(np.float64), y_shape, (2, 2), (2, 2), (0, 0, 0, 0))
    return o_act.activation_backward(activation, y.astype(np.float64), gy, 0.01) if activation else gy


def _oracle(x, y, gp, y_shape, pads, activation, w=None):
    """(gw, gb, gw's bound, gb's bound) in float64, and with w (gx, its bound): the pooling
    and activation backward (which scales by at most 1, sigmoid 1/4), then the convolution's
    backward, its sums bounded as test_conv2d's."""
    gy = _pooled_gradient(gp, y, y_shape, activation)
    w_any = np.zeros((y_shape[1], x.shape[1], x.shape[2] + pads[0] + pads[1] - y_shape[2] + 1,
                      x.shape[3] + pads[2] + pads[3] - y_shape[3] + 1))
    w64 = w_any if w is None else w.astype(np.float64)
    gx, gw, gb = o_conv.conv2d_backward(x.astype(np.float64), w64, gy, (1, 1), pads)
    abs_gx, abs_gw, abs_gb = o_conv.conv2d_backward(np.abs(x.astype(np.float64)), np.abs(w64), np.abs(gy),
                                                    (1, 1), pads)
    result = (gw, gb, _bound(abs_gw), _bound(abs_gb))
    return result if w is None else result + (gx, _bound(abs_gx))


@st.composite
def cases(draw):
    """conv2d_rows' weight-gradient shapes (1-4 input, 1-16 output channels, rows of 8+
    pixels), kernels 1x1..5x5, padding up to k, odd sizes (a last row or column in no
    window), every activation, a blocking (OBC, KHB, KWB, RPW) drawn or the rule's."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pads = tuple(draw(st.integers(0, k)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, kh + 1 - pads[0] - pads[1]), kh + 10))
    w = draw(st.integers(max(1, kw + 7 - pads[2] - pads[3]), kw + 30))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 16))
    divisors = [d for d in range(1, kh + 1) if kh % d == 0]
    block = draw(st.one_of(st.none(), st.tuples(st.integers(1, o), st.sampled_from(divisors),
                                                st.sampled_from([1, kw]), st.integers(1, 4))))
    return ((n, c, h, w), (o, c, kh, kw), pads, draw(st.sampled_from(ACTIVATIONS)), block,
            draw(st.integers(0, 2 ** 31)))


# The fixture holds the width for all examples, as intended; each shape compiles kernels.
@settings(max_examples=max(6, settings.default.max_examples // 2),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_rows_kernel_matches_oracle(device, width, monkeypatch, case):
    x_shape, w_shape, pads, activation, block, seed = case
    x, _, y, gp, y_shape = _arrays(seed, x_shape, w_shape, pads, activation)
    with monkeypatch.context() as m:
        m.setattr(rows, "_FORCE_WEIGHT_BLOCK", block)
        d = device.to_device
        gw, gb = rows.weight_grad_pooled(device, d(x), d(gp), d(y) if activation else None, w_shape, (1, 1), pads,
                                         True, activation, 0.01)
    gw_ref, gb_ref, gw_tol, gb_tol = _oracle(x, y, gp, y_shape, pads, activation)
    assert_close(gw.get(), gw_ref, gw_tol, 0.0, f"weight gradient ({activation}, block {block})")
    assert_close(gb.get(), gb_ref, gb_tol, 0.0, "bias gradient")


@st.composite
def transposed_cases(draw):
    """Pooling inputs with odd sizes (a last row or column in no window), 1-20 channels, a
    row length cop of the channels rounded up to 8 (16-channel passes where it is a multiple of
    16) or 8 more, every activation."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 20))
    h, w = draw(st.integers(2, 13)), draw(st.integers(2, 17))
    cop = -(-c // 8) * 8 + draw(st.sampled_from([0, 8]))
    return (n, c, h, w), cop, draw(st.sampled_from(ACTIVATIONS)), draw(st.integers(0, 2 ** 31))


@settings(max_examples=max(8, settings.default.max_examples // 2), deadline=None)
@given(case=transposed_cases())
def test_transposed_pooling_backward_matches_oracle(device, case):
    """avgpool2d_backward_transposed: dL/dy pixel-major, zeros past the channels; one
    multiply by 1/4 and the activation's backward per value, so within 2 ulp of the oracle."""
    x_shape, cop, activation, seed = case
    n, c, h, w = x_shape
    rng = np.random.default_rng(seed)
    gp = rng.standard_normal((n, c, h // 2, w // 2)).astype(np.float32)
    y = (o_act.activation_forward(activation, rng.standard_normal(x_shape) * 2, 0.01).astype(np.float32)
         if activation else None)
    d = device.to_device
    got = pool_ops.avgpool2d_backward_transposed(device, d(gp), x_shape, cop, activation=activation,
                                                 act_output=d(y) if activation else None).get()
    want = _pooled_gradient(gp, y, x_shape, activation).transpose(0, 2, 3, 1).reshape(n * h * w, c)
    assert got.shape == (n * h * w, cop)
    assert_close(got[:, :c], want, 0.0, 2.5e-7, f"pixel-major gradient ({activation})")
    assert not got[:, c:].any(), "the row past the channels must be zeros"


def test_transposed_pooling_backward_refuses_short_rows(device):
    gp = device.to_device(np.zeros((1, 9, 2, 2), np.float32))
    with pytest.raises(ValueError, match="cannot hold 9 channels"):
        pool_ops.avgpool2d_backward_transposed(device, gp, (1, 9, 4, 4), 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        pool_ops.avgpool2d_backward_transposed(device, gp, (1, 9, 4, 4), 12)


def _route(device, x_shape, w_shape, pads, need_input_grad):
    return conv2d._transposed_route(device, x_shape, w_shape, (1, 1), pads, (1, 1), 1, need_input_grad)


@pytest.mark.parametrize("need_input_grad", [False, True])
@pytest.mark.parametrize("x_shape,w_shape,pads,activation", [
    ((3, 1, 32, 32), (6, 1, 5, 5), (0, 0, 0, 0), "tanh"),     # LeNet-5 conv1: conv2d_rows' kernel
    ((2, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0), "tanh"),    # LeNet-5 conv2: pixel-major (AVX-512)
    ((2, 6, 15, 13), (16, 6, 5, 5), (0, 0, 0, 0), "sigmoid"),  # odd output sizes
    ((2, 3, 11, 9), (20, 3, 3, 3), (1, 1, 0, 1), "relu"),     # 20 output channels, odd
    ((2, 2, 10, 13), (4, 2, 3, 3), (1, 0, 1, 1), None),       # no activation
])
def test_op_matches_oracle_on_every_path(device, monkeypatch, x_shape, w_shape, pads, activation,
                                         need_input_grad):
    """conv2d_backward_pooled against the oracle, and the path it takes: the pixel-major
    pooling backward and no transpose where _transposed_route says so, else one of the
    other two (the rows kernel runs only without the input gradient)."""
    x, wt, y, gp, y_shape = _arrays(11, x_shape, w_shape, pads, activation)
    d = device.to_device
    names = []
    real = _common.launch
    for module in (conv2d, rows, pool_ops):
        monkeypatch.setattr(module, "launch", lambda dev, k, *a, **kw: names.append(k.function_name)
                            or real(dev, k, *a, **kw))
    gx, gw, gb = conv2d.conv2d_backward_pooled(device, d(x), d(wt), d(gp), d(y) if activation else None, (1, 1),
                                               pads, activation=activation, need_input_grad=need_input_grad)
    gw_ref, gb_ref, gw_tol, gb_tol, gx_ref, gx_tol = _oracle(x, y, gp, y_shape, pads, activation, wt)
    assert_close(gw.get(), gw_ref, gw_tol, 0.0, "weight gradient")
    assert_close(gb.get(), gb_ref, gb_tol, 0.0, "bias gradient")
    if need_input_grad:
        assert_close(gx.get(), gx_ref, gx_tol, 0.0, "input gradient")
    else:
        assert gx is None
    transposed = _route(device, x_shape, w_shape, pads, need_input_grad) is not None
    assert ("avgpool2d_backward_transposed" in names) == transposed
    assert ("conv2d_transpose_nchw" in names) == (not transposed and "conv2d_backward_weight" in names)
    if x_shape == (2, 6, 14, 14) and conv2d.vector_limits(device)[0] == 16 and device.is_cpu:
        assert transposed       # the sums form runs on float16 lanes


def test_route_waits_for_the_tuner(device, monkeypatch, tmp_path):
    """With timing on and no choice cached, the tuner would time the gradient forms on dL/dy
    in the NCHW layout: the op then takes the fallback (which times them and caches the
    choice), and the pixel-major route only once the choice is known."""
    monkeypatch.setenv("CLCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CLCNN_TUNE", "1")
    x_shape, w_shape, pads = (16, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)
    if _route(device, x_shape, w_shape, pads, True) is not None:
        pytest.fail("a route taken before the tuner has chosen")
    monkeypatch.setenv("CLCNN_TUNE", "0")
    expect = _route(device, x_shape, w_shape, pads, True)
    monkeypatch.setenv("CLCNN_TUNE", "1")
    x, wt, y, gp, y_shape = _arrays(5, x_shape, w_shape, pads, "tanh")
    d = device.to_device
    for _ in range(2):      # the first call tunes, the second takes the route the choices allow
        gx, gw, gb = conv2d.conv2d_backward_pooled(device, d(x), d(wt), d(gp), d(y), (1, 1), pads,
                                                   activation="tanh")
    gw_ref, gb_ref, gw_tol, gb_tol, gx_ref, gx_tol = _oracle(x, y, gp, y_shape, pads, "tanh", wt)
    assert_close(gx.get(), gx_ref, gx_tol, 0.0, "input gradient")
    assert_close(gw.get(), gw_ref, gw_tol, 0.0, "weight gradient")
    if device.is_cpu and expect is not None and tuning.get_tuner().settled(
            device, *conv2d._tuning_args(device, "weight", x_shape, w_shape, (1, 1), pads, ("direct", "tiled"))) \
            == "direct":
        assert _route(device, x_shape, w_shape, pads, True) == expect


def test_inconsistent_arguments_are_refused(device):
    x, wt, y, gp, _ = _arrays(3, (2, 1, 12, 12), (4, 1, 3, 3), (0, 0, 0, 0), "tanh")
    d = device.to_device
    with pytest.raises(ValueError, match="exactly when an activation is given"):
        conv2d.conv2d_backward_pooled(device, d(x), d(wt), d(gp), None, (1, 1), (0, 0, 0, 0), activation="tanh")
    with pytest.raises(ShapeError, match="pooled output gradient has shape"):
        rows.weight_grad_pooled(device, d(x), d(gp[:, :, :4]), d(y), wt.shape, (1, 1), (0, 0, 0, 0), True, "tanh")
    with pytest.raises(ShapeError, match="activation output has shape"):
        rows.weight_grad_pooled(device, d(x), d(gp), d(y[:, :, 1:]), wt.shape, (1, 1), (0, 0, 0, 0), True, "tanh")


def _lenet_like(device, activation_layer, pool_layer=L.AvgPool2D):
    """LeNet-5's convolutions and poolings; activation_layer None: none between them."""
    act = [activation_layer()] if activation_layer else []
    return clcnn.Sequential([L.Conv2D(1, 6, 5)] + act + [pool_layer(2), L.Conv2D(6, 16, 5)]
                            + ([activation_layer()] if activation_layer else []) + [pool_layer(2),
                            L.Flatten(), L.Dense(16 * 5 * 5, 10)], device=device)


@pytest.mark.parametrize("need_input_grad", [False, True])
@pytest.mark.parametrize("activation_layer", [L.Tanh, L.ReLU, L.Sigmoid, None])
def test_training_step_defers_both_poolings_and_matches_undeferred(device, monkeypatch, activation_layer,
                                                                   need_input_grad):
    """Both poolings are deferred: without the input gradient the first convolution's kernel
    forms its gradient (no pooling backward of its own), the second's pooling backward runs
    once, pixel-major where its convolution reads it so (then no transpose); every gradient
    equals the undeferred schedule's."""
    clcnn.seed(7)
    net = _lenet_like(device, activation_layer)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
    gy = device.to_device(rng.standard_normal((4, 10)).astype(np.float32))
    names = []
    real = _common.launch
    results = []
    for defer in (True, False):
        with monkeypatch.context() as m:
            if not defer:
                m.setattr(fusion, "defers_pool_backward", lambda *args: False)
            for module in (conv2d, rows, pool_ops):
                m.setattr(module, "launch", lambda dev, k, *a, defer=defer, **kw:
                          names.append((defer, k.function_name)) or real(dev, k, *a, **kw))
            net.forward(x)
            gx = net.backward(gy, need_input_grad=need_input_grad)
            assert (gx is None) != need_input_grad
            results.append([p.grad.get() for p in net.parameters()] + ([gx.get()] if need_input_grad else []))
    deferred = [n for d, n in names if d]
    undeferred = [n for d, n in names if not d]
    pool_backward = ("avgpool2d_backward_tiled", "avgpool2d_backward", "avgpool2d_backward_transposed")
    assert deferred.count("conv2d_rows_backward_weight_pooled") == (0 if need_input_grad else 1)
    assert sum(deferred.count(k) for k in pool_backward) == (2 if need_input_grad else 1)
    assert undeferred.count("conv2d_rows_backward_weight_pooled") == 0
    assert sum(undeferred.count(k) for k in pool_backward[:2]) == 2
    if _route(device, (4, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0), True) is not None:
        assert deferred.count("avgpool2d_backward_transposed") == 1
        assert deferred.count("conv2d_transpose_nchw") == undeferred.count("conv2d_transpose_nchw") - 1
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_deferral_rule(device):
    """Deferred: every 2x2 stride-2 AvgPool2D right after a Conv2D (and its activation), with
    the input gradient or without. Not deferred: a MaxPool2D, another window, a pooling of a
    layer other than a convolution."""
    def deferred(net):
        plan = net._plan()
        return [k for k, step in enumerate(plan)
                if fusion.defers_pool_backward(step, plan, net._calls, net._input_count())]
    assert len(deferred(_lenet_like(device, L.Tanh))) == 2
    assert len(deferred(_lenet_like(device, None))) == 2
    assert deferred(_lenet_like(device, L.ReLU, L.MaxPool2D)) == []
    second_only = clcnn.Sequential([L.Conv2D(1, 4, 3), L.Conv2D(4, 4, 3), L.Tanh(), L.AvgPool2D(2)], device=device)
    assert len(deferred(second_only)) == 1
    assert deferred(clcnn.Sequential([L.Conv2D(1, 4, 3), L.AvgPool2D(3)], device=device)) == []
    assert deferred(clcnn.Sequential([L.Conv2D(1, 4, 3), L.Tanh(), L.Dropout(0.5), L.AvgPool2D(2)],
                                     device=device)) == []
