"""BatchNorm2D with a fused activation (relu, relu6, leaky_relu): the kernels against the
float64 oracle (BatchNorm then the activation) over random shapes, train and eval, forward and
backward; the composed oracle against central differences; the fusion plan of models (the
activation is absorbed only where it alone reads the BatchNorm) and whole models against
clcnn.reference."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import clcnn
from clcnn import layers as L
from clcnn import reference
from clcnn.ops import batchnorm as ops
from clcnn.oracle import activation as o_act
from clcnn.oracle import batchnorm as oracle
from tests.helpers import assert_close, kernel_runs, numeric_grad, randomise_state
from tests.test_batchnorm import (RUNS, TOL, _assert_gradients, _assert_statistics, _fused_reference, _scales,
                                  fused_cases)

KINKS = {"relu": (0.0,), "relu6": (0.0, 6.0), "leaky_relu": (0.0,)}


def _pre_activation(x, weight, bias, mean, invstd):
    pc = lambda v: np.asarray(v, np.float64)[None, :, None, None]   # noqa: E731
    w = 1.0 if weight is None else pc(weight)
    b = 0.0 if bias is None else pc(bias)
    return (x - pc(mean)) * pc(invstd) * w + b


@given(fused_cases(sorted(KINKS)), st.sampled_from(RUNS))
def test_fused_kernels_match_oracle(device, case, run):
    with kernel_runs(ops, run):
        _check_fused(device, *case)


def _check_fused(device, shape, training, affine, act, slope, need_input_grad, seed):
    (x, _, gy, weight, bias, rmean, rvar), reference = _fused_reference(shape, training, affine, seed)
    y_pre, mean, invstd = reference[:3]
    x64 = x.astype(np.float64)
    f64 = lambda a: None if a is None else a.astype(np.float64)   # noqa: E731
    v = _pre_activation(x64, weight, bias, mean, invstd)
    scale = _scales(x64, gy.astype(np.float64), f64(weight), f64(bias), mean, invstd)
    # Where the pre-activation sits within rounding of a kink the float32 kernel may take the
    # other side: give those elements no gradient, so either side is right.
    near = np.zeros(shape, bool)
    for k in KINKS[act]:
        near |= np.abs(v - k) <= 1e-4 * scale["y"]
    gy[near] = 0.0
    y_want = o_act.activation_forward(act, y_pre, slope)
    g_pre = o_act.activation_backward(act, y_want, gy.astype(np.float64), slope)

    d = device.to_device
    dw, db = (d(weight), d(bias)) if affine else (None, None)
    drm, drv = d(rmean), d(rvar)
    fused = dict(activation=act, negative_slope=slope)
    if training:
        y, smean, sinv = ops.batchnorm2d_forward_train(device, d(x), dw, db, drm, drv, 0.1, 1e-5, **fused)
        _assert_statistics(smean, sinv, drm, drv, reference, scale)
        gx, gw, gb = ops.batchnorm2d_backward(device, d(x), d(gy), dw, smean, sinv, need_input_grad, bias=db,
                                              **fused)
        want = oracle.batchnorm2d_backward(x64, g_pre, f64(weight), mean, invstd)
    else:
        y = ops.batchnorm2d_forward_eval(device, d(x), dw, db, drm, drv, 1e-5, **fused)
        gx, gw, gb = ops.batchnorm2d_backward_eval(device, d(x), d(gy), dw, drm, drv, 1e-5, need_input_grad,
                                                   bias=db, **fused)
        want = oracle.batchnorm2d_backward_eval(x64, g_pre, f64(weight), f64(rmean), f64(rvar), 1e-5)
    assert_close(y.get(), y_want, TOL * scale["y"], 0, f"y ({act})")
    _assert_gradients(gx, gw, gb, want, scale, need_input_grad, affine, act)


@pytest.mark.parametrize("act", sorted(KINKS))
def test_composed_oracle_gradient_matches_central_differences(act):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 3, 2)) * 2.0
    gy = rng.standard_normal(x.shape)
    weight, bias = rng.standard_normal(3) * 3.0, rng.standard_normal(3) * 3.0

    def loss(xv, wv=weight, bv=bias):
        y = oracle.batchnorm2d_forward_train(xv, wv, bv, None, None, 0.1, 1e-5)[0]
        return float((o_act.activation_forward(act, y, 0.2) * gy).sum())

    y, mean, invstd = oracle.batchnorm2d_forward_train(x, weight, bias, None, None, 0.1, 1e-5)[:3]
    ya = o_act.activation_forward(act, y, 0.2)
    gx, gw, gb = oracle.batchnorm2d_backward(x, o_act.activation_backward(act, ya, gy, 0.2), weight, mean, invstd)
    assert_close(gx, numeric_grad(loss, x), 1e-6, 1e-5, "gx")
    assert_close(gw, numeric_grad(lambda w: loss(x, w), weight), 1e-6, 1e-5, "gweight")
    assert_close(gb, numeric_grad(lambda b: loss(x, weight, b), bias), 1e-6, 1e-5, "gbias")


def test_bad_fused_arguments_are_one_clear_error(device):
    x = device.to_device(np.ones((2, 3, 2, 2), np.float32))
    w, b = device.to_device(np.ones(3, np.float32)), device.to_device(np.zeros(3, np.float32))
    rm, rv = device.to_device(np.zeros(3, np.float32)), device.to_device(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="activation must be None or one of relu"):
        ops.batchnorm2d_forward_eval(device, x, w, b, rm, rv, activation="tanh")
    with pytest.raises(ValueError, match="negative_slope >= 0"):
        ops.batchnorm2d_forward_eval(device, x, w, b, rm, rv, activation="leaky_relu", negative_slope=-1.0)
    with pytest.raises(ValueError, match="needs bias"):
        ops.batchnorm2d_backward_eval(device, x, x, w, rm, rv, activation="relu")


def _fused_steps(model):
    """{BatchNorm call name: absorbed activation's call name or None} of the current plan."""
    out = {}
    for step in model._plan():
        call = model._calls[step.position]
        if isinstance(call.layer, L.BatchNorm2D):
            out[call.name] = None if step.activation is None else model._calls[step.activation].name
    return out


def _check_against_reference(model, x, rng):
    state = reference.snapshot(model)
    y = model(x).get()
    want, run = reference.forward(model, x.astype(np.float64), state)
    assert_close(y, want, 1e-4, 1e-4, "output")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy).get()
    gx_want, grads = reference.backward(model, run, gy.astype(np.float64))
    assert_close(gx, gx_want, 1e-4, 1e-3, "input gradient")
    for layer in model.layers:
        for name, param in layer.params.items():
            key = f"{model._keys[id(layer)]}.{name}"
            assert_close(param.grad.get(), grads[key], 1e-4, 1e-3, key)
    for key, value in run.state.items():
        for name in ("running_mean", "running_var"):
            if name in value:
                got = model.state_dict()[f"{key}.{name}"]
                assert_close(got, value[name], 1e-5, 1e-4, f"{key}.{name}")


def _conv_bn_act(activation, device):
    inp = L.Input((3, 6, 6), name="input")
    h = L.Conv2D(3, 5, 3, padding=1, bias=False, name="conv")(inp)
    h = activation(name="act")(L.BatchNorm2D(5, name="bn")(h))
    out = L.Conv2D(5, 4, 3, padding=1, name="head")(h)
    return clcnn.Model(inp, out, device=device)


@pytest.mark.parametrize("activation", [L.ReLU, L.ReLU6, lambda name: L.LeakyReLU(0.2, name=name)])
def test_train_mode_conv_bn_activation_fuses_and_matches_reference(device, activation):
    rng = np.random.default_rng(5)
    model = _conv_bn_act(activation, device)
    randomise_state(model, rng, shift=0.3)
    model.train()
    assert _fused_steps(model) == {"bn": "act"}
    _check_against_reference(model, rng.standard_normal((4, 3, 6, 6)).astype(np.float32), rng)


def _add_bn_relu(device):
    """BatchNorm after an Add: in eval mode it is not folded, so it keeps its activation."""
    inp = L.Input((4, 5, 5), name="input")
    a = L.Conv2D(4, 4, 3, padding=1, name="a")(inp)
    h = L.ReLU(name="act")(L.BatchNorm2D(4, name="bn")(L.Add(name="add")([inp, a])))
    return clcnn.Model(inp, L.Conv2D(4, 3, 1, name="head")(h), device=device)


def test_eval_mode_bn_activation_fuses_forward_and_backward_match_reference(device):
    rng = np.random.default_rng(6)
    model = _add_bn_relu(device)
    randomise_state(model, rng, shift=0.3)
    model.eval()
    assert _fused_steps(model) == {"bn": "act"}
    _check_against_reference(model, rng.standard_normal((3, 4, 5, 5)).astype(np.float32), rng)


def test_no_fusion_where_the_batchnorm_output_is_read_twice(device):
    """BN's output feeds both the ReLU and an Add (fan-out): the ReLU stays its own step, the
    Add reads the un-activated value, and gradients from both readers add up."""
    rng = np.random.default_rng(7)
    inp = L.Input((3, 6, 6), name="input")
    bn = L.BatchNorm2D(3, name="bn")(L.Conv2D(3, 3, 3, padding=1, name="conv")(inp))
    out = L.Add(name="add")([bn, L.ReLU(name="act")(bn)])
    model = clcnn.Model(inp, out, device=device)
    randomise_state(model, rng, shift=0.3)
    for training in (True, False):
        model.train(training)
        assert _fused_steps(model) == ({"bn": None} if training else {})   # eval: folded into conv
        _check_against_reference(model, rng.standard_normal((4, 3, 6, 6)).astype(np.float32), rng)


def test_no_fusion_into_a_shared_batchnorm_whose_output_is_also_a_model_output(device):
    rng = np.random.default_rng(8)
    inp = L.Input((2, 4, 4), name="input")
    bn = L.BatchNorm2D(2, name="bn")(inp)
    model = clcnn.Model(inp, [bn, L.ReLU(name="act")(bn)], device=device)
    model.train()
    assert _fused_steps(model) == {"bn": None}
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    a, b = model(x)
    assert_close(b.get(), np.maximum(a.get(), 0), 0, 0, "relu of the shared output")
