"""A convolution's input gradient plus the gradient its input already has from other readers
(ops.conv2d_backward(input_residual=), a residual block's first convolution in training, whose
input the shortcut reads too): the gather form adds it as its kernel stores gx, the other
forms in one add pass after. Checked against the float64 oracle over random shapes and every
form, and a residual block's backward against the same model accumulating by add passes."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import clcnn
from clcnn import layers as L
from clcnn import opspec
from clcnn.errors import ShapeError
from clcnn.ops import conv2d as ops
from tests.helpers import assert_close, launched_kernels as launched

FORMS = [None, "gather", "columns", "phases"]   # ops._INPUT_GRAD_FORM; None: the automatic choice


@st.composite
def cases(draw):
    """Plain, strided, padded, grouped (depthwise too) and 1x1 convolutions, a form forced or
    chosen, the direct, tiled or Winograd algorithm."""
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 20))
    k, stride = draw(st.integers(1, 5)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, min(2, k - 1))) for _ in range(4))
    h, w = draw(st.integers(k + 2, 14)), draw(st.integers(k + 2, 14))
    groups = draw(st.sampled_from([g for g in (1, 2, c) if c % g == 0 and o % g == 0]))
    if groups == c and c > 1:
        o = c   # depthwise
    algorithm = draw(st.sampled_from([None, "direct", "tiled"] + (["winograd"] if stride == 1 and groups == 1
                                                                  and k in (3, 5) else [])))
    return dict(x_shape=(n, c, h, w), w_shape=(o, c // groups, k, k), stride=(stride, stride), pads=pads,
                groups=groups, algorithm=algorithm, form=draw(st.sampled_from(FORMS)),
                seed=draw(st.integers(0, 2 ** 31)))


@given(case=cases())
def test_input_gradient_plus_residual_matches_oracle(device, case):
    spec = opspec.conv2d(case["x_shape"], case["w_shape"], case["stride"], case["pads"], groups=case["groups"],
                         algorithm=case["algorithm"], input_residual=True)
    ops._INPUT_GRAD_FORM = case["form"]
    try:
        result = opspec.check(spec, device, np.random.default_rng(case["seed"]))
    finally:
        ops._INPUT_GRAD_FORM = None
    assert result["ok"], (spec.name, case["form"], result)


@pytest.mark.parametrize("x_shape,w_shape,stride,form,kernels", [
    # ResNet-20's stages: the gather form's kernel adds it (conv2d_rows or conv2d_forward)
    ((2, 16, 32, 32), (16, 16, 3, 3), 1, None, None),
    ((4, 32, 16, 16), (32, 32, 3, 3), 1, "gather", None),
    ((2, 6, 14, 14), (16, 6, 5, 5), 1, "gather", None),
    # the strided phases and the columns form: one add pass after
    ((2, 16, 12, 12), (32, 16, 3, 3), 2, None, ["add_forward"]),
    ((2, 8, 9, 9), (8, 8, 3, 3), 1, "columns", ["add_forward"]),
])
def test_gather_form_adds_the_residual_in_its_kernel(device, monkeypatch, x_shape, w_shape, stride, form, kernels):
    if not device.is_cpu:
        pytest.skip("which kernel runs differs on GPUs")
    monkeypatch.setattr(ops, "_INPUT_GRAD_FORM", form)
    spec = opspec.conv2d(x_shape, w_shape, (stride, stride), (1, 1, 1, 1), bias=False, input_residual=True)
    names = []
    with launched(names):
        result = opspec.check(spec, device, np.random.default_rng(3))
    assert result["ok"], result
    assert [n for n in names if n == "add_forward"] == (kernels or []), names


def test_input_residual_refusals(device):
    x = device.to_device(np.zeros((1, 4, 8, 8), np.float32))
    w = device.to_device(np.zeros((6, 4, 3, 3), np.float32))
    gy = device.to_device(np.zeros((1, 6, 6, 6), np.float32))
    with pytest.raises(ShapeError, match=r"input_residual must have the input's shape \(1, 4, 8, 8\)"):
        ops.conv2d_backward(device, x, w, gy, (1, 1), (0, 0, 0, 0), input_residual=gy)
    with pytest.raises(ShapeError, match="need_input_grad=True"):
        ops.conv2d_backward(device, x, w, gy, (1, 1), (0, 0, 0, 0), need_input_grad=False, input_residual=x)


def _block(device):
    """Two identity-shortcut residual blocks (their first convolutions' inputs have the
    shortcut's gradient) after a stem convolution."""
    inp = L.Input((8, 10, 10))
    y = L.ReLU()(L.BatchNorm2D(8)(L.Conv2D(8, 8, 3, padding=1, bias=False)(inp)))
    for _ in range(2):
        a = L.ReLU()(L.BatchNorm2D(8)(L.Conv2D(8, 8, 3, padding=1, bias=False)(y)))
        a = L.BatchNorm2D(8)(L.Conv2D(8, 8, 3, padding=1, bias=False)(a))
        y = L.ReLU()(L.Add()([a, y]))
    return clcnn.Model(inp, y, device=device)


def _gradients(model, x, gy, names):
    model.train()
    model.forward(x)
    with launched(names):
        gx = model.backward(gy, need_input_grad=True)
    return [gx.get()] + [p.grad.get() for p in model.parameters()]


def test_residual_block_backward_adds_the_shortcut_gradient_in_the_convolution(device, monkeypatch):
    model = _block(device)
    rng = np.random.default_rng(4)
    x = device.to_device(rng.standard_normal((3, 8, 10, 10)).astype(np.float32))
    gy = device.to_device(rng.standard_normal((3, 8, 10, 10)).astype(np.float32))
    folded_names, plain_names = [], []
    folded = _gradients(model, x, gy, folded_names)
    monkeypatch.setattr(L.Conv2D, "adds_input_residual", False)
    plain = _gradients(model, x, gy, plain_names)
    for got, want in zip(folded, plain):
        assert_close(got, want, 1e-5 * max(1.0, np.abs(want).max()), 0, "gradient")
    # the two blocks' inputs: one add pass each without the fold, none with it on CPUs
    assert plain_names.count("add_forward") == folded_names.count("add_forward") + 2 * device.is_cpu


def test_a_model_input_read_twice_keeps_its_add_pass(device, monkeypatch):
    """The model's input read by a convolution and an Add: its gradient (asked for or not) is
    summed by an add pass, as model_cases lists it, and equals the unfolded model's."""
    from collections import Counter
    from clcnn import opspec
    inp = L.Input((4, 6, 6))
    model = clcnn.Model(inp, L.Add()([L.Conv2D(4, 4, 3, padding=1)(inp), inp]), device=device)
    cases = opspec.model_cases(model, (4, 6, 6), 2)
    assert not any(case.name.endswith("+input residual") for _, case in cases)
    rng = np.random.default_rng(5)
    x = device.to_device(rng.standard_normal((2, 4, 6, 6)).astype(np.float32))
    gy = device.to_device(rng.standard_normal((2, 4, 6, 6)).astype(np.float32))
    names = []
    folded = _gradients(model, x, gy, names)
    assert Counter(names)["add_forward"] == 1
    monkeypatch.setattr(L.Conv2D, "adds_input_residual", False)
    for got, want in zip(folded, _gradients(model, x, gy, [])):
        assert_close(got, want, 1e-6 * max(1.0, np.abs(want).max()), 0, "gradient")
