"""An eval-mode convolution run into the Add after it: ops.conv2d_forward(residual=) gives
act(conv(x, w) + b + residual), added in the kernel's epilogue for 1x1, im2col, conv2d_rows
and direct convolutions and by one add pass after the others (depthwise, Winograd, tiled); the fusion plan runs a Conv2D (its BatchNorm
folded) whose output only an Add reads at the Add's place, with the Add's activation. Checked
against the float64 oracle over random shapes, and whole models against their unfused
schedule and the NumPy reference."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import clcnn
from clcnn import fusion, opspec, reference
from clcnn import layers as L
from clcnn.errors import ShapeError
from clcnn.ops import conv2d as ops
from clcnn.ops import conv2d_im2col
from tests.helpers import assert_close, launched_kernels as launched, outputs_in_reverse_item_order, randomise_state

ACTIVATIONS = [None, "relu", "leaky_relu", "tanh", "sigmoid", "relu6"]


@st.composite
def cases(draw):
    """1x1 convolutions over planes of 32-100 pixels (the pointwise kernels' epilogue), forced
    im2col ones, and 1x1-5x5 strided, padded or grouped ones (the add pass after them)."""
    form = draw(st.sampled_from(["pointwise", "im2col", "other"]))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 20))
    groups, algorithm = 1, None
    if form == "pointwise":
        h, w, k, stride, pads = draw(st.integers(4, 10)), draw(st.integers(8, 10)), 1, 1, (0, 0, 0, 0)
        groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0 and o % g == 0 and (g == 1 or g < c)]))
    else:
        k, stride = draw(st.integers(1, 5)), draw(st.integers(1, 2))
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        h, w = draw(st.integers(k + 6, 16)), draw(st.integers(k + 6, 16))
        algorithm = "im2col" if form == "im2col" else None
    return dict(x_shape=(n, c, h, w), w_shape=(o, c // groups, k, k), stride=(stride, stride), pads=pads,
                groups=groups, algorithm=algorithm, bias=draw(st.booleans()),
                activation=draw(st.sampled_from(ACTIVATIONS)), seed=draw(st.integers(0, 2 ** 31)))


@settings(deadline=None)
@given(case=cases())
def test_conv2d_with_residual_matches_oracle(device, case):
    if case["algorithm"] == "im2col":
        if not device.is_cpu:
            pytest.skip("the im2col forward runs on CPUs")
        assume(conv2d_im2col.supports(device, case["x_shape"], case["w_shape"], case["stride"], case["pads"]))
    spec = opspec.conv2d(case["x_shape"], case["w_shape"], case["stride"], case["pads"], bias=case["bias"],
                         activation=case["activation"], negative_slope=0.1, groups=case["groups"],
                         algorithm=case["algorithm"], residual=True)
    result = opspec.check(spec, device, np.random.default_rng(case["seed"]))
    assert result["ok"], (spec.name, result)


def test_pointwise_residual_in_the_epilogue(device):
    """A 1x1 convolution adds its residual in its one product launch, whatever order its
    (overlapping: the last column block is shifted back) work items run in."""
    if not device.is_cpu:
        pytest.skip("the pointwise kernels run on CPUs")
    rng = np.random.default_rng(1)
    x, w, b, r = (rng.standard_normal(s).astype(np.float32) for s in ((2, 24, 7, 7), (40, 24, 1, 1), (40,),
                                                                       (2, 40, 7, 7)))
    d = [device.to_device(a) for a in (x, w, b, r)]
    names = []
    with launched(names):
        y = ops.conv2d_forward(device, d[0], d[1], d[2], (1, 1), (0, 0, 0, 0), activation="relu", residual=d[3])
    assert names == ["pointwise_forward"]
    want = np.maximum(np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), x) + b[:, None, None] + r, 0)
    assert_close(y.get(), want, 1e-5, 1e-5, "pointwise + residual")
    once, reverse = outputs_in_reverse_item_order(
        device, lambda: ops.conv2d_forward(device, d[0], d[1], d[2], (1, 1), (0, 0, 0, 0), activation="relu",
                                           residual=d[3]))
    np.testing.assert_array_equal(once[0], reverse[0])


@pytest.mark.parametrize("x_shape,w_shape,pads", [
    ((3, 16, 32, 32), (16, 16, 3, 3), (1, 1, 1, 1)),     # ResNet-20's first stage
    ((2, 2, 9, 11), (4, 2, 3, 3), (1, 1, 0, 2)),
    ((2, 1, 12, 12), (6, 1, 5, 5), (0, 0, 0, 0)),
])
def test_conv2d_rows_adds_the_residual_in_its_epilogue(device, x_shape, w_shape, pads):
    if not device.is_cpu:
        pytest.skip("conv2d_rows runs on CPUs")
    case = opspec.conv2d(x_shape, w_shape, pads=pads, activation="relu", residual=True)
    names = []
    with launched(names):
        result = opspec.check(case, device, np.random.default_rng(5))
    assert result["ok"], result
    assert names == ["conv2d_rows_forward"]


@pytest.mark.parametrize("x_shape,w_shape,stride,kwargs,kernels", [
    ((4, 32, 16, 16), (32, 32, 3, 3), (1, 1), {}, ["conv2d_forward"]),        # ResNet-20's later stages
    ((2, 16, 9, 9), (20, 16, 3, 3), (2, 2), {}, ["conv2d_forward"]),
    ((2, 512, 6, 6), (24, 512, 3, 3), (1, 1), dict(algorithm="direct"),       # input channels in chunks
     ["conv2d_forward", "conv2d_forward"]),
    ((2, 6, 9, 9), (6, 1, 3, 3), (1, 1), dict(groups=6), ["add_forward"]),    # depthwise: an add pass
    ((2, 8, 9, 9), (6, 8, 3, 3), (1, 1), dict(algorithm="winograd"), ["add_forward"]),
])
def test_direct_kernel_adds_the_residual_where_it_runs(device, x_shape, w_shape, stride, kwargs, kernels):
    if not device.is_cpu and not kwargs.get("algorithm"):
        pytest.skip("which kernel runs differs on GPUs")
    case = opspec.conv2d(x_shape, w_shape, stride, (1, 1, 1, 1), activation="relu", residual=True, **kwargs)
    names = []
    with launched(names):
        result = opspec.check(case, device, np.random.default_rng(6))
    assert result["ok"], result
    assert [n for n in names if n in ("conv2d_forward", "add_forward")] == kernels, names


def test_residual_refusals(device):
    x, w = device.to_device(np.zeros((1, 4, 8, 8), np.float32)), device.to_device(np.zeros((6, 4, 1, 1), np.float32))
    wrong = device.to_device(np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(ShapeError, match=r"residual has shape \(1, 4, 8, 8\), the output \(1, 6, 8, 8\)"):
        ops.conv2d_forward(device, x, w, None, (1, 1), (0, 0, 0, 0), residual=wrong)
    right = device.to_device(np.zeros((1, 6, 8, 8), np.float32))
    with pytest.raises(ValueError, match="pool or residual, not both"):
        ops.conv2d_forward(device, x, w, None, (1, 1), (0, 0, 0, 0), residual=right, pool="max")


def bottlenecks(device):
    """Two ResNet-50 bottlenecks at small size: one with a strided projection shortcut (1x1
    conv and BatchNorm on both inputs of its Add), one with the identity; a 3x3 block whose
    Add follows a 3x3 conv (the add pass); a Dense head."""
    def bn(c, name):
        return L.BatchNorm2D(c, name=name)

    inp = L.Input((8, 12, 12))
    a = L.ReLU()(bn(6, "bn1")(L.Conv2D(8, 6, 1, bias=False, name="conv1")(inp)))
    a = L.ReLU()(bn(6, "bn2")(L.Conv2D(6, 6, 3, stride=2, padding=1, bias=False, name="conv2")(a)))
    a = bn(24, "bn3")(L.Conv2D(6, 24, 1, bias=False, name="conv3")(a))
    s = bn(24, "bn_s")(L.Conv2D(8, 24, 1, stride=2, bias=False, name="shortcut")(inp))
    y = L.ReLU()(L.Add()([a, s]))
    b = L.ReLU()(bn(6, "bn4")(L.Conv2D(24, 6, 1, bias=False, name="conv4")(y)))
    b = L.Conv2D(6, 24, 1, name="conv5")(b)            # biased, no BatchNorm
    y = L.ReLU()(L.Add()([y, b]))
    c = L.BatchNorm2D(24, name="bn6")(L.Conv2D(24, 24, 3, padding=1, bias=False, name="conv6")(y))
    y = L.Add()([c, y])                                # no activation after this one
    out = L.Dense(24, 5, name="fc")(L.Flatten()(L.GlobalAvgPool2D()(y)))
    return clcnn.Model(inp, out, device=device)


def _adds_into_convs(model):
    calls = model._calls
    return [(calls[s.position].name, calls[s.batchnorm].name if s.batchnorm is not None else None)
            for s in model._plan() if s.add is not None]


def test_eval_model_runs_its_adds_in_convolutions(device):
    rng = np.random.default_rng(2)
    model = bottlenecks(device)
    randomise_state(model, rng)
    model.eval()
    assert _adds_into_convs(model) == [("conv3", "bn3"), ("conv5", None), ("conv6", "bn6")]
    x = rng.standard_normal((3, 8, 12, 12)).astype(np.float32)
    names = []
    with launched(names):
        y = model(x).get()
    if device.is_cpu:       # the 1x1s add in their product, the 3x3 conv6 in the direct kernel
        assert "add_forward" not in names, names
    want, _ = reference.forward(model, x.astype(np.float64), reference.snapshot(model), training=False)
    assert_close(y, want, 1e-4, 1e-4, "eval forward against the reference")
    model.freeze()
    np.testing.assert_array_equal(model(x).get(), y)
    model.unfreeze()
    # the same model with every call its own step
    count = model._input_count()
    model._plans[(False, True, True)] = [fusion.Step(p, count + p, None, None, None)
                                         for p in range(len(model._calls))]
    assert_close(model(x).get(), y, 1e-5, 1e-5, "fused against unfused")


def test_backward_after_an_eval_forward_whose_only_fusion_is_an_add(device):
    """No BatchNorm to fold: the Add run into the convolution alone makes the backward pass
    run the forward again unfused (the fused step keeps nothing a backward needs). The Add has
    three inputs: the convolution's step sums the other two first."""
    rng = np.random.default_rng(4)
    inp = L.Input((6, 8, 8))
    y = L.ReLU()(L.Add()([L.Conv2D(6, 6, 1, name="conv")(inp), inp, L.Sigmoid()(inp)]))
    model = clcnn.Model(inp, L.Dense(6 * 64, 3, name="fc")(L.Flatten()(y)), device=device).eval()
    randomise_state(model, rng)
    assert _adds_into_convs(model) == [("conv", None)]
    x = rng.standard_normal((2, 6, 8, 8)).astype(np.float32)
    want, run = reference.forward(model, x.astype(np.float64), reference.snapshot(model), training=False)
    y = model(x)
    assert_close(y.get(), want, 1e-4, 1e-4, "eval forward")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx_want, grads = reference.backward(model, run, gy.astype(np.float64))
    assert_close(model.backward(gy).get(), gx_want, 1e-4, 1e-4, "input gradient")
    conv = model._calls[0].layer
    assert_close(conv.params["weight"].grad.get(), grads[f"{model._keys[id(conv)]}.weight"], 1e-4, 1e-4,
                 "the convolution's weight gradient")


def test_train_mode_feature_maps_and_eval_backward_keep_the_adds(device):
    """Training runs the Adds as before (the residual has no backward); intermediate_outputs
    forms each convolution's own map; a backward pass after an eval forward runs unfused and
    gives the reference's gradients."""
    rng = np.random.default_rng(3)
    model = bottlenecks(device)
    randomise_state(model, rng)
    model.train()
    assert all(isinstance(model._calls[s.position].layer, L.BatchNorm2D) for s in model._plan() if s.add is not None)
    model.eval()
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    want, run = reference.forward(model, x.astype(np.float64), reference.snapshot(model), training=False)
    value = {call.name: run.values[model._input_count() + p] for p, call in enumerate(model._calls)}
    maps = model.intermediate_outputs(x)
    assert_close(maps["conv3"], value["bn3"], 1e-4, 1e-4, "conv3's map (bn3 folded in, no shortcut)")
    assert_close(maps["conv5"], value["conv5"], 1e-4, 1e-4, "conv5's map")
    y = model(x)
    assert_close(y.get(), want, 1e-4, 1e-4, "eval forward")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = model.backward(gy).get()
    gx_want, grads = reference.backward(model, run, gy.astype(np.float64))
    assert_close(gx, gx_want, 1e-4, 1e-4, "input gradient after an eval forward")
    conv3 = model._keys[id(model._calls[[c.name for c in model._calls].index("conv3")].layer)]
    assert_close(model._calls[[c.name for c in model._calls].index("conv3")].layer.params["weight"].grad.get(),
                 grads[f"{conv3}.weight"], 1e-4, 1e-4, "conv3's weight gradient")
