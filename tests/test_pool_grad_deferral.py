"""A train-mode 2x2 AvgPool2D's backward deferred to the convolution before it
(fusion.defers_pool_backward, ops.conv2d_weight_grad_pooled): the weight and bias gradients
from the pooling's output gradient gp and the activation's output y, against the float64
oracle (pooling backward, activation backward, convolution weight gradient) over random
shapes, activations, blockings and both vector widths, on conv2d_rows' kernel and on the
fallback; the errors for inconsistent arguments; and the model level: a training step defers
exactly the first convolution's pooling and gives the gradients of the undeferred schedule."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import clcnn
from clcnn import fusion, layers as L
from clcnn.errors import ShapeError
from clcnn.ops import _common, conv2d, conv2d_rows as rows
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


def _oracle(x, y, gp, y_shape, pads, activation):
    """(gw, gb) in float64 and their bounds: the pooling spreads gp / 4 (zero past the last
    whole window), the activation's backward scales it by at most 1 (sigmoid 1/4), then the
    convolution's weight gradient sums products of it, bounded as test_conv2d's."""
    gy = o_pool.avgpool2d_backward(gp.astype(np.float64), y_shape, (2, 2), (2, 2), (0, 0, 0, 0))
    if activation:
        gy = o_act.activation_backward(activation, y.astype(np.float64), gy, 0.01)
    w_any = np.zeros((y_shape[1], x.shape[1], x.shape[2] + pads[0] + pads[1] - y_shape[2] + 1,
                      x.shape[3] + pads[2] + pads[3] - y_shape[3] + 1))
    _, gw, gb = o_conv.conv2d_backward(x.astype(np.float64), w_any, gy, (1, 1), pads)
    _, abs_gw, abs_gb = o_conv.conv2d_backward(np.abs(x.astype(np.float64)), w_any, np.abs(gy), (1, 1), pads)
    return gw, gb, _bound(abs_gw), _bound(abs_gb)


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


@pytest.mark.parametrize("x_shape,w_shape,pads,activation", [
    ((3, 1, 32, 32), (6, 1, 5, 5), (0, 0, 0, 0), "tanh"),     # LeNet-5 conv1: conv2d_rows' kernel
    ((2, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0), "tanh"),    # six input channels: the fallback
    ((2, 3, 11, 9), (20, 3, 3, 3), (1, 1, 0, 1), "relu"),     # 20 output channels, odd: the fallback
    ((2, 2, 10, 13), (4, 2, 3, 3), (1, 0, 1, 1), None),       # no activation
])
def test_op_matches_oracle_on_both_paths(device, x_shape, w_shape, pads, activation):
    x, wt, y, gp, y_shape = _arrays(11, x_shape, w_shape, pads, activation)
    d = device.to_device
    gw, gb = conv2d.conv2d_weight_grad_pooled(device, d(x), d(wt), d(gp), d(y) if activation else None, (1, 1),
                                              pads, activation=activation)
    gw_ref, gb_ref, gw_tol, gb_tol = _oracle(x, y, gp, y_shape, pads, activation)
    assert_close(gw.get(), gw_ref, gw_tol, 0.0, "weight gradient")
    assert_close(gb.get(), gb_ref, gb_tol, 0.0, "bias gradient")


def test_inconsistent_arguments_are_refused(device):
    x, wt, y, gp, _ = _arrays(3, (2, 1, 12, 12), (4, 1, 3, 3), (0, 0, 0, 0), "tanh")
    d = device.to_device
    with pytest.raises(ValueError, match="exactly when an activation is given"):
        conv2d.conv2d_weight_grad_pooled(device, d(x), d(wt), d(gp), None, (1, 1), (0, 0, 0, 0), activation="tanh")
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


@pytest.mark.parametrize("activation_layer", [L.Tanh, L.ReLU, L.Sigmoid, None])
def test_training_step_defers_the_first_pooling_and_matches_undeferred(device, monkeypatch, activation_layer):
    """A backward pass without the input gradient defers only the first pooling (the second
    convolution needs its input gradient): its kernel forms the gradient, the pooling's own
    backward runs once (the second pool); every gradient equals the undeferred schedule's."""
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
            m.setattr(_common, "launch", lambda dev, k, *a, **kw: names.append((defer, k.function_name))
                      or real(dev, k, *a, **kw))
            for module in (conv2d, rows):
                m.setattr(module, "launch", _common.launch)
            from clcnn.ops import pool as pool_ops
            m.setattr(pool_ops, "launch", _common.launch)
            net.forward(x)
            assert net.backward(gy, need_input_grad=False) is None
            results.append([p.grad.get() for p in net.parameters()])
    deferred = [n for d, n in names if d]
    undeferred = [n for d, n in names if not d]
    assert deferred.count("conv2d_rows_backward_weight_pooled") == 1
    assert deferred.count("avgpool2d_backward_tiled") + deferred.count("avgpool2d_backward") == 1
    assert undeferred.count("conv2d_rows_backward_weight_pooled") == 0
    assert undeferred.count("avgpool2d_backward_tiled") + undeferred.count("avgpool2d_backward") == 2
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_deferral_rule(device):
    """Deferred: the first AvgPool2D of a step that asks for no input gradient. Not deferred:
    with the input gradient, a MaxPool2D, or a pooling of a convolution that reads another
    layer's output."""
    def deferred(net, need_input_grad=False):
        plan = net._plan()
        return [k for k, step in enumerate(plan)
                if fusion.defers_pool_backward(step, plan, net._calls, net._input_count(), need_input_grad)]
    avg = _lenet_like(device, L.Tanh)
    assert len(deferred(avg)) == 1
    assert deferred(avg, need_input_grad=True) == []
    assert deferred(_lenet_like(device, L.ReLU, L.MaxPool2D)) == []
    second_only = clcnn.Sequential([L.Conv2D(1, 4, 3), L.Conv2D(4, 4, 3), L.Tanh(), L.AvgPool2D(2)], device=device)
    assert deferred(second_only) == []
