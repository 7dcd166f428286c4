"""A Dense layer running the backward of the activation its input comes from
(ops.dense.dense_backward(input_activation=...), fusion.activation_deferrals): the op against
the float64 oracle over random shapes, activations and both vector widths, in one launch where
the input features fill a vector block; the model level: a training step hands conv3's and
dense1's activation backwards to the next Dense (through LeNet-5's Flatten), two launches
fewer, every gradient equal to the undeferred schedule's; and the rule's limits."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import clcnn
from clcnn import fusion, layers as L, losses, models
from clcnn.ops import dense as ops
from clcnn.oracle import activation as o_act, dense as oracle
from tests.helpers import assert_close, hold_vector_width

U32 = 2.0 ** -24
ACTIVATIONS = [None, "relu", "leaky_relu", "tanh", "sigmoid", "relu6"]
SLOPE = 0.2


@pytest.fixture(params=[8, 16])
def width(request, device, monkeypatch):
    return hold_vector_width(device, monkeypatch, request.param)


def _launches(monkeypatch):
    names = []
    real = ops.launch
    monkeypatch.setattr(ops, "launch", lambda dev, k, *a, **kw: names.append(k.function_name) or real(dev, k, *a, **kw))
    return names


# Input features 1-80 put both paths at both widths (a vector block is 16 or 32 columns):
# narrower ones take the GEMMs and activation_backward, wider ones dense_backward_pair.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 30), i=st.integers(1, 80), o=st.integers(1, 40), bias=st.booleans(),
       activation=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2 ** 31))
def test_backward_through_the_input_activation_matches_oracle(device, width, monkeypatch, n, i, o, bias,
                                                               activation, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, i)) * 2
    x = (o_act.activation_forward(activation, z, SLOPE) if activation else z).astype(np.float32)
    w = (rng.standard_normal((o, i)) * 0.3).astype(np.float32)
    gy = rng.standard_normal((n, o)).astype(np.float32)
    names = _launches(monkeypatch)
    gx, gw, gb = ops.dense_backward(device, device.to_device(x), device.to_device(w), device.to_device(gy),
                                    has_bias=bias, input_activation=activation, negative_slope=SLOPE)
    x64, w64, gy64 = (v.astype(np.float64) for v in (x, w, gy))
    gx_ref, gw_ref, gb_ref = oracle.dense_backward(x64, w64, gy64, has_bias=bias)
    # every activation's derivative here lies in [0, 1] at its outputs: the product's rounding
    # bound passes through, plus the multiply's own rounding
    bound = (o + 2) * U32 * (np.abs(gy64) @ np.abs(w64)) + 2 * U32 * np.abs(gx_ref) + 1e-30
    if activation:
        gx_ref = o_act.activation_backward(activation, x64, gx_ref, SLOPE)
    assert_close(gx.get(), gx_ref, atol=bound, rtol=0, what=f"gx through {activation}")
    assert_close(gw.get(), gw_ref, atol=(n + 2) * U32 * (np.abs(gy64).T @ np.abs(x64)) + 1e-30, rtol=0, what="gw")
    if bias:
        assert_close(gb.get(), gb_ref, atol=(n + 2) * U32 * np.abs(gy64).sum(0) + 1e-30, rtol=0, what="gb")
    else:
        assert gb is None
    if i >= width * ops._blocking(device)[2]:
        assert names == ["dense_backward_pair"]
    else:
        assert "dense_backward_pair" not in names


def test_one_launch_equals_the_separate_passes_bit_for_bit(device, monkeypatch):
    """LeNet-5's dense layers at batch 256: the one launch gives exactly the separate GEMMs'
    and activation_backward's results (the same sums in the same order)."""
    from clcnn.ops import activation as act_ops
    rng = np.random.default_rng(3)
    for i, o in [(400, 120), (120, 84), (84, 10)]:
        x = np.tanh(rng.standard_normal((256, i))).astype(np.float32)
        w = (rng.standard_normal((o, i)) * 0.1).astype(np.float32)
        gy = rng.standard_normal((256, o)).astype(np.float32)
        xd, wd, gyd = (device.to_device(v) for v in (x, w, gy))
        fused = ops.dense_backward(device, xd, wd, gyd, input_activation="tanh")
        gx = act_ops.activation_backward(device, "tanh", xd, ops.gemm(device, gyd, wd))
        gw = ops.gemm(device, gyd, xd, trans_a=True)
        np.testing.assert_array_equal(fused[0].get(), gx.get())
        np.testing.assert_array_equal(fused[1].get(), gw.get())
        np.testing.assert_allclose(fused[2].get(), gy.astype(np.float64).sum(0), rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_refused(device):
    d = device.to_device
    x, w, gy = d(np.zeros((4, 40), np.float32)), d(np.zeros((3, 40), np.float32)), d(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="needs need_input_grad=True"):
        ops.dense_backward(device, x, w, gy, need_input_grad=False, input_activation="tanh")
    with pytest.raises(ValueError, match="input_activation must be one of"):
        ops.dense_backward(device, x, w, gy, input_activation="softplus")
    with pytest.raises(ValueError, match="negative_slope >= 0"):
        ops.dense_backward(device, x, w, gy, input_activation="leaky_relu", negative_slope=-0.1)


def _step_gradients(device, monkeypatch, net, defer, rng_seed=4, batch=8):
    """Gradients of one loss backward (parameters' .grad, in order) and the kernel names it ran."""
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal((batch, 1, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    names = []
    with monkeypatch.context() as m:
        if not defer:
            m.setattr(fusion, "activation_deferrals", lambda *args: {})
        import pyopencl as cl
        real = cl.Kernel.__call__
        m.setattr(cl.Kernel, "__call__", lambda k, *a, **kw: names.append(k.function_name) or real(k, *a, **kw))
        loss = losses.SoftmaxCrossEntropy()
        loss.forward(net(device.to_device(x)), labels)
        net.backward(loss.backward(), need_input_grad=False)
    return [p.grad.get().copy() for p in net.parameters()], names


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "leaky_relu"])
def test_training_step_hands_activation_backwards_to_the_next_dense(device, monkeypatch, activation):
    """LeNet-5 with each activation: conv3's (through the Flatten) and dense1's activation
    backwards run in the next Dense's launch: two activation_backward launches fewer, every
    gradient equal to the undeferred schedule's."""
    def layer():
        return L.LeakyReLU(0.2) if activation == "leaky_relu" else {"tanh": L.Tanh, "relu": L.ReLU,
                                                                    "sigmoid": L.Sigmoid}[activation]()
    clcnn.seed(11)
    net = clcnn.Sequential([L.Conv2D(1, 6, 5), layer(), L.AvgPool2D(2), L.Conv2D(6, 16, 5), layer(),
                            L.AvgPool2D(2), L.Conv2D(16, 120, 5), layer(), L.Flatten(), L.Dense(120, 84), layer(),
                            L.Dense(84, 10)], device=device)
    deferred, names = _step_gradients(device, monkeypatch, net, True)
    undeferred, plain_names = _step_gradients(device, monkeypatch, net, False)
    assert plain_names.count("activation_backward") - names.count("activation_backward") == 2
    assert names.count("dense_backward_pair") == 3
    for got, want in zip(deferred, undeferred):
        np.testing.assert_array_equal(got, want)


def test_deferral_rule(device):
    """Deferred: a Dense reading a Conv2D's or Dense's activated output, directly or through
    a Flatten, as its only reader. Not: another layer between (Dropout), a producer with a
    BatchNorm, a value read twice, a model input."""
    def deferrals(net):
        plan = net._plan()
        found = fusion.activation_deferrals(plan, net._calls, net._outputs, net._input_count())
        return {plan[k].position: plan[p].position for k, p in found.items()
                if fusion.step_activation(plan[p], net._calls) is not None}
    # LeNet-5's layers: conv3 (6) -> tanh -> Flatten (8) -> dense1 (9) -> tanh -> dense2 (11)
    assert deferrals(models.lenet5(device=device)) == {9: 6, 11: 9}
    own = clcnn.Sequential([L.Dense(8, 40, activation="relu"), L.Dense(40, 3)], device=device)
    assert deferrals(own) == {1: 0}
    assert deferrals(clcnn.Sequential([L.Dense(8, 40), L.Dense(40, 3)], device=device)) == {}
    assert deferrals(clcnn.Sequential([L.Dense(8, 40), L.Tanh(), L.Dropout(0.5), L.Dense(40, 3)],
                                      device=device)) == {}
    assert deferrals(clcnn.Sequential([L.Conv2D(1, 4, 3), L.BatchNorm2D(4), L.ReLU(), L.Flatten(),
                                       L.Dense(4 * 6 * 6, 3)], device=device)) == {}
    inp = L.Input((8,))
    hidden = L.Dense(8, 40, activation="tanh")(inp)
    twice = clcnn.Model(inp, [L.Dense(40, 3)(hidden), L.Dense(40, 2)(hidden)], device=device)
    assert deferrals(twice) == {}
