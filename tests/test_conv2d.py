"""Conv2D kernels (every algorithm, grouped and dilated too) vs the NumPy oracle, the tuner that
picks among them, the oracle vs finite differences and PyTorch, and worked examples."""
import json
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from clcnn import tuning
from clcnn.errors import ShapeError
from clcnn.ops import conv2d as ops
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close, numeric_grad

ACTIVATIONS = {
    None: lambda v: v,
    "relu": lambda v: np.maximum(v, 0.0),
    "leaky_relu": lambda v: np.where(v > 0, v, 0.1 * v),   # the test passes negative_slope=0.1
    "tanh": np.tanh,
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
}


def _bound(abs_ref):
    """Tolerance of a float32 result against the float64 oracle. The kernels sum up to
    C*KH*KW (forward, gx) or N*OH*OW (gw, gb) products in float32, each sum's rounding error is
    at most (terms * eps32) times the sum of the absolute values of its terms and in practice
    about sqrt(terms) * eps32 times that; 2e-5 of the largest absolute sum (abs_ref, the oracle
    run on |x|, |w|, |gy|) covers the sqrt bound for every shape drawn here (<= 1e4 terms) with
    a margin, and 4e-7 more absorbs the tanh approximation of the fused activation."""
    return 2e-5 * float(np.max(abs_ref, initial=0.0)) + 4e-7


def _run(device, x, w, b, stride, pads, activation=None, algorithm=None, dilation=(1, 1), groups=1):
    y = ops.conv2d_forward(device, device.to_device(x), device.to_device(w),
                           None if b is None else device.to_device(b), stride, pads,
                           activation=activation, negative_slope=0.1, algorithm=algorithm,
                           dilation=dilation, groups=groups)
    return y.get()


FORMS = [None, "gather", "columns", "phases"]   # ops._INPUT_GRAD_FORM: the input gradient's forms


@st.composite
def conv_cases(draw, kernel=(11, 11), max_stride=3, dilation=st.just(1), pad_slack=1, taller=9, wider=17,
               grouping=st.tuples(st.just(1), st.integers(1, 6)), out_per_group=(1, 10), batch=(1, 3),
               activations=tuple(ACTIVATIONS), forms=tuple(FORMS), output_widths=(None,)):
    """Cases for _check_case: kernels 1x1 up to `kernel` (height, width), strides 1..max_stride
    and dilations drawn from `dilation` per axis, padding 0..k+pad_slack per side (asymmetric),
    images from the smallest the padded kernel fits up to `taller` / `wider` rows / columns more
    than the dilated kernel, (groups, input channels per group) from `grouping`, output channels
    per group and batch within the given bounds, an activation, an input-gradient form and a
    seed. An output width drawn from `output_widths` other than None sets the image width so
    the output has that many columns. The defaults: kernels up to 11x11, strides 1-3, padding up
    to more than the kernel needs, odd and non-square images, batch 1..3, channels 1..6 -> 1..10."""
    kh, kw = draw(st.integers(1, kernel[0])), draw(st.integers(1, kernel[1]))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    dh, dw = draw(dilation), draw(dilation)
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = tuple(draw(st.integers(0, k + pad_slack)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, ekh - pads[0] - pads[1]), ekh + taller))
    ow = draw(st.sampled_from(output_widths))
    low = max(1, ekw - pads[2] - pads[3])
    w = max(low, (ow - 1) * sw + ekw - pads[2] - pads[3]) if ow else draw(st.integers(low, ekw + wider))
    groups, cg = draw(grouping)
    og = draw(st.integers(*out_per_group))
    n = draw(st.integers(*batch))
    bias = draw(st.booleans())
    activation = draw(st.sampled_from(list(activations)))
    form = draw(st.sampled_from(list(forms)))
    seed = draw(st.integers(0, 2 ** 31))
    return ((n, groups * cg, h, w), (groups * og, cg, kh, kw), (sh, sw), pads, bias, activation, form, seed,
            (dh, dw), groups)


@st.composite
def _group_split(draw, depthwise):
    """(groups, input channels per group): groups 1, 2, 3 or C with 1-3 input channels per
    group, C of 1..6 groups of one; depthwise: C of 1..9 groups of one."""
    if depthwise:
        return draw(st.integers(1, 9)), 1
    kind = draw(st.sampled_from(["1", "2", "3", "C"]))
    cg = 1 if kind == "C" else draw(st.integers(1, 3))
    groups = draw(st.integers(1, 6)) if kind == "C" else int(kind)
    return groups, cg


def grouped_cases(depthwise=False):
    """Groups 1, 2, 3 or C (depthwise=True: always C) with 1-3 input and 1-3 output channels
    per group, dilation 1-3 and stride 1-3 per axis, kernels 1x1..5x5 (non-square too),
    asymmetric padding, batch 1..4."""
    return conv_cases(kernel=(5, 5), dilation=st.integers(1, 3), pad_slack=0, taller=8, wider=20,
                      grouping=_group_split(depthwise), out_per_group=(1, 3), batch=(1, 4))


@given(case=conv_cases())
def test_conv2d_matches_oracle(device, case):
    _check_case(device, "direct", case)


# Every new shape costs PoCL ~2-3 s compiling the tiled kernels' barrier work-groups (the
# direct ones ~0.1 s), so the tiled form gets a third of the examples (CLCNN_HYPOTHESIS_EXAMPLES
# raises both for deeper fuzzing).
@settings(max_examples=max(6, settings.default.max_examples // 3))
@given(case=conv_cases())
def test_conv2d_tiled_matches_oracle(device, case):
    _check_case(device, "tiled", case)


@given(case=grouped_cases())
def test_grouped_dilated_conv2d_matches_oracle(device, case):
    _check_case(device, "direct", case)


@settings(max_examples=max(6, settings.default.max_examples // 3))
@given(case=grouped_cases())
def test_grouped_dilated_conv2d_tiled_matches_oracle(device, case):
    _check_case(device, "tiled", case)


def _check_case(device, algorithm, case):
    """Forward (with bias and activation) and all three gradients of one drawn case against
    the float64 oracle; algorithm None, "direct", "tiled" or "depthwise"."""
    x_shape, w_shape, stride, pads, bias, activation, form, seed, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64)

    geo = dict(dilation=dilation, groups=groups)
    pre = oracle.conv2d_forward(x64, w64, b64, stride, pads, **geo)
    abs_pre = oracle.conv2d_forward(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64), stride, pads, **geo)
    y = _run(device, x, w, b, stride, pads, activation, algorithm, **geo)
    # The activations are 1-Lipschitz, so the pre-activation bound carries over.
    assert_close(y, ACTIVATIONS[activation](pre), _bound(abs_pre), 0.0, f"forward ({activation})")

    gy = rng.standard_normal(pre.shape).astype(np.float32)
    ops._INPUT_GRAD_FORM = form    # both forms of the input gradient, and the automatic choice
    try:
        gx, gw, gb = ops.conv2d_backward(device, device.to_device(x), device.to_device(w),
                                         device.to_device(gy), stride, pads, has_bias=bias,
                                         algorithm=algorithm, **geo)
    finally:
        ops._INPUT_GRAD_FORM = None
    gx_ref, gw_ref, gb_ref = oracle.conv2d_backward(x64, w64, gy.astype(np.float64), stride, pads, **geo)
    abs_gx, abs_gw, abs_gb = oracle.conv2d_backward(np.abs(x64), np.abs(w64),
                                                    np.abs(gy.astype(np.float64)), stride, pads, **geo)
    assert_close(gx.get(), gx_ref, _bound(abs_gx), 0.0, f"input gradient ({algorithm}, {form or 'auto'} form)")
    assert_close(gw.get(), gw_ref, _bound(abs_gw), 0.0, "weight gradient")
    if bias:
        assert_close(gb.get(), gb_ref, _bound(abs_gb), 0.0, "bias gradient")
    else:
        assert gb is None


@pytest.mark.parametrize("algorithm", ops.ALGORITHMS)
@pytest.mark.parametrize("n,c,h,w,o,k,stride,pads", [
    (64, 1, 32, 32, 6, (5, 5), (1, 1), (0, 0, 0, 0)),     # LeNet-5 conv1
    (4, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0, 0, 0)),     # conv2
    (9, 16, 5, 5, 120, (5, 5), (1, 1), (0, 0, 0, 0)),     # conv3: 1x1 outputs, blocks over the batch
    (2, 16, 32, 32, 32, (3, 3), (1, 1), (1, 1, 1, 1)),    # the 3x3 "same" benchmark layer
    (1, 3, 1, 40, 20, (1, 3), (1, 2), (0, 0, 1, 0)),      # one-row image
    (2, 2, 9, 1, 3, (4, 1), (2, 1), (2, 1, 0, 0)),        # one-column image
])
def test_conv2d_network_shapes(device, n, c, h, w, o, k, stride, pads, algorithm):
    """The shapes the models and benchmarks run, the same bounds as above."""
    rng = np.random.default_rng(n * 1000 + c)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c) + k)
    b = rng.standard_normal(o)
    y = _run(device, x.astype(np.float32), wt.astype(np.float32), b.astype(np.float32), stride, pads,
             "tanh", algorithm)
    pre = oracle.conv2d_forward(x, wt, b, stride, pads)
    assert_close(y, np.tanh(pre), _bound(oracle.conv2d_forward(np.abs(x), np.abs(wt), np.abs(b), stride, pads)), 0.0, "forward")
    gy = rng.standard_normal(pre.shape)
    gx, gw, gb = ops.conv2d_backward(device, device.to_device(x.astype(np.float32)),
                                     device.to_device(wt.astype(np.float32)),
                                     device.to_device(gy.astype(np.float32)), stride, pads,
                                     algorithm=algorithm)
    refs = oracle.conv2d_backward(x, wt, gy, stride, pads)
    abs_refs = oracle.conv2d_backward(np.abs(x), np.abs(wt), np.abs(gy), stride, pads)
    for got, ref, abs_ref, what in zip((gx, gw, gb), refs, abs_refs, ("gx", "gw", "gb")):
        assert_close(got.get(), ref, _bound(abs_ref), 0.0, what)


def test_conv2d_backward_skips_input_grad(device):
    x = device.to_device(np.ones((1, 2, 5, 5), np.float32))
    w = device.to_device(np.ones((3, 2, 3, 3), np.float32))
    gy = device.to_device(np.ones((1, 3, 3, 3), np.float32))
    gx, gw, gb = ops.conv2d_backward(device, x, w, gy, (1, 1), (0, 0, 0, 0),
                                     need_input_grad=False, has_bias=False)
    assert gx is None and gb is None
    np.testing.assert_allclose(gw.get(), np.full((3, 2, 3, 3), 9.0))


# -- the tuner ------------------------------------------------------------------------------------

@pytest.fixture
def tuner_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CLCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CLCNN_TUNE", "1")
    return tmp_path / "tuning.json"


def _fail():
    raise AssertionError("a cached choice must not be timed again")


def test_tuner_picks_faster_and_persists(device, tuner_env):
    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.01)

    def fast():
        calls["fast"] += 1
    choice = tuning.Tuner(str(tuner_env)).choose(device, "op:1", {"slow": slow, "fast": fast}, "slow")
    assert choice == "fast" and calls["slow"] >= 2 and calls["fast"] >= 2
    stored = json.loads(tuner_env.read_text())["choices"]
    assert [v["choice"] for k, v in stored.items() if k.endswith("|op:1")] == ["fast"]
    assert tuning.device_key(device) in next(iter(stored))
    # A fresh tuner (a new process) reads the choice back instead of timing.
    assert tuning.Tuner(str(tuner_env)).choose(device, "op:1", {"slow": _fail, "fast": _fail}, "slow") == "fast"


def test_tuner_off_and_auto_use_the_default(device, tuner_env, monkeypatch):
    monkeypatch.setenv("CLCNN_TUNE", "0")
    assert tuning.Tuner(str(tuner_env)).choose(device, "op:2", {"a": _fail, "b": _fail}, "b") == "b"
    monkeypatch.delenv("CLCNN_TUNE")
    assert tuning.Tuner(str(tuner_env)).choose(device, "op:2", {"a": _fail, "b": _fail}, "b",
                                               worth_tuning=False) == "b"
    assert not tuner_env.exists()


def test_tuner_settled_names_what_choose_takes_without_timing(device, tuner_env, monkeypatch):
    tuner = tuning.Tuner(str(tuner_env))
    assert tuner.settled(device, "op:3", ("a", "b"), "b") is None          # CLCNN_TUNE=1: it would time
    assert tuner.choose(device, "op:3", {"a": lambda: None, "b": lambda: time.sleep(0.01)}, "b") == "a"
    assert tuner.settled(device, "op:3", ("a", "b"), "b") == "a"           # now cached
    monkeypatch.delenv("CLCNN_TUNE")
    assert tuner.settled(device, "op:4", ("a", "b"), "b", worth_tuning=False) == "b"
    assert tuner.settled(device, "op:4", ("a", "b"), "b", worth_tuning=True) is None
    monkeypatch.setenv("CLCNN_TUNE", "0")
    assert tuner.settled(device, "op:3", ("a", "b"), "b") == "b"           # off: the default, cache or not


def test_tuner_survives_corrupt_cache(device, tuner_env):
    tuner_env.write_text('{"format": 1, "choices": {"x": ')
    with pytest.warns(RuntimeWarning, match="ignoring the tuning cache"):
        choice = tuning.Tuner(str(tuner_env)).choose(device, "op:3", {"a": lambda: None, "b": lambda: time.sleep(0.01)}, "b")
    assert choice == "a"
    assert json.loads(tuner_env.read_text())["format"] == 1    # rewritten whole


def test_tuner_skips_failing_candidate(device, tuner_env):
    with pytest.warns(RuntimeWarning, match="candidate failed"):
        choice = tuning.Tuner(str(tuner_env)).choose(device, "op:4", {"broken": lambda: 1 / 0, "ok": lambda: None}, "broken")
    assert choice == "ok"


def test_conv2d_tunes_real_candidates(device, tuner_env):
    """The op itself, tuned on a batch >= 16: both candidates run, the result is right either way."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = _run(device, x, w, None, (1, 1), (1, 1, 1, 1))
    ref = oracle.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, (1, 1), (1, 1, 1, 1))
    abs_ref = oracle.conv2d_forward(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), None, (1, 1), (1, 1, 1, 1))
    assert_close(y, ref, _bound(abs_ref), 0.0, "tuned forward")
    stored = json.loads(tuner_env.read_text())["choices"]
    (entry,) = [v for k, v in stored.items() if "conv2d.forward" in k]
    assert set(entry["ms"]) == set(ops.ALGORITHMS) and entry["choice"] in ops.ALGORITHMS


def test_unknown_algorithm(device):
    x = device.to_device(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="algorithm"):
        ops.conv2d_forward(device, x, x, None, (1, 1), (0, 0, 0, 0), algorithm="fft")


# -- worked examples (values computed by hand) ------------------------------------------------

def test_worked_example_2x2_kernel(device):
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    w = np.array([[0, 1], [2, 3]], np.float32).reshape(1, 1, 2, 2)
    expected = np.array([[19, 25], [37, 43]], np.float32).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(_run(device, x, w, None, (1, 1), (0, 0, 0, 0)), expected)
    np.testing.assert_array_equal(oracle.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0)), expected)


def test_worked_example_vertical_edge(device):
    x = np.zeros((1, 1, 6, 6), np.float32)
    x[..., :3] = 10.0
    w = np.tile(np.array([1, 0, -1], np.float32), (3, 1)).reshape(1, 1, 3, 3)
    expected = np.tile(np.array([0, 30, 30, 0], np.float32), (4, 1)).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(_run(device, x, w, None, (1, 1), (0, 0, 0, 0)), expected)
    np.testing.assert_array_equal(oracle.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0)), expected)


@pytest.mark.parametrize("n,f,p,s,out", [
    (6, 3, 0, 1, 4), (32, 5, 0, 1, 28), (28, 5, 2, 1, 28), (7, 3, 1, 2, 4), (8, 3, 1, 2, 4),
    (10, 4, 0, 3, 3), (5, 5, 0, 1, 1), (5, 7, 1, 1, 1), (11, 11, 5, 3, 4), (1, 1, 3, 2, 4),
])
def test_output_size_formula(device, n, f, p, s, out):
    """floor((n + 2p - f) / s) + 1, from the kernel and from the oracle (on an n x (n+3)
    image, so rows and columns are checked apart)."""
    assert (n + 2 * p - f) // s + 1 == out
    x = np.ones((1, 1, n, n + 3), np.float32)
    w = np.ones((2, 1, f, f), np.float32)
    expected = (1, 2, out, (n + 3 + 2 * p - f) // s + 1)
    assert _run(device, x, w, None, (s, s), (p, p, p, p)).shape == expected
    assert oracle.conv2d_forward(x, w, None, (s, s), (p, p, p, p)).shape == expected


def test_padding_bigger_than_needed(device):
    """Rows and columns of pure padding give the bias (through the activation) alone."""
    x = np.ones((1, 1, 2, 2), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    b = np.array([0.5], np.float32)
    y = _run(device, x, w, b, (1, 1), (2, 0, 0, 3), "relu")
    expected = np.full((1, 1, 4, 5), 0.5, np.float32)
    expected[0, 0, 2:, :2] = 1.5
    np.testing.assert_array_equal(y, expected)


# -- errors -------------------------------------------------------------------------------------

def test_shape_errors(device):
    x = device.to_device(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ShapeError, match="input channels"):
        ops.conv2d_forward(device, x, device.to_device(np.zeros((2, 4, 3, 3), np.float32)),
                           None, (1, 1), (0, 0, 0, 0))
    with pytest.raises(ShapeError, match="larger than the padded input"):
        ops.conv2d_forward(device, x, device.to_device(np.zeros((2, 3, 7, 3), np.float32)),
                           None, (1, 1), (0, 0, 0, 0))
    ops.conv2d_forward(device, x, device.to_device(np.zeros((2, 3, 7, 3), np.float32)),
                       None, (1, 1), (1, 1, 0, 0))   # fits once padded
    w = device.to_device(np.zeros((2, 3, 3, 3), np.float32))
    with pytest.raises(ShapeError, match="bias"):
        ops.conv2d_forward(device, x, w, device.to_device(np.zeros(3, np.float32)), (1, 1), (0, 0, 0, 0))
    with pytest.raises(ShapeError, match="4 dimensions"):
        ops.conv2d_forward(device, device.to_device(np.zeros((3, 5, 5), np.float32)), w, None,
                           (1, 1), (0, 0, 0, 0))
    with pytest.raises(ShapeError, match="output gradient"):
        ops.conv2d_backward(device, x, w, device.to_device(np.zeros((1, 2, 4, 3), np.float32)),
                            (1, 1), (0, 0, 0, 0))
    with pytest.raises(ShapeError, match="stride"):
        ops.conv2d_forward(device, x, w, None, (0, 1), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="activation"):
        ops.conv2d_forward(device, x, w, None, (1, 1), (0, 0, 0, 0), activation="gelu")


# -- the oracle's backward vs float64 central differences ---------------------------------------

@pytest.mark.parametrize("x_shape,w_shape,stride,pads", [
    ((2, 2, 5, 4), (3, 2, 3, 2), (1, 1), (0, 0, 0, 0)),
    ((1, 3, 6, 7), (2, 3, 2, 3), (2, 3), (1, 0, 2, 1)),
    ((2, 1, 4, 4), (2, 1, 3, 3), (1, 2), (3, 2, 0, 4)),    # padding bigger than the kernel
    ((1, 2, 3, 5), (1, 2, 3, 5), (1, 1), (0, 0, 0, 0)),    # kernel covering the whole image
])
def test_oracle_backward_matches_finite_differences(x_shape, w_shape, stride, pads):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    r = rng.standard_normal(oracle.conv2d_forward(x, w, b, stride, pads).shape)
    gx, gw, gb = oracle.conv2d_backward(x, w, r, stride, pads)
    # L = sum(r * y) is linear in each argument: central differences are exact up to
    # float64 rounding, ~1e-10 here.
    loss = lambda xx, ww, bb: float(np.sum(r * oracle.conv2d_forward(xx, ww, bb, stride, pads)))
    np.testing.assert_allclose(gx, numeric_grad(lambda v: loss(v, w, b), x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gw, numeric_grad(lambda v: loss(x, v, b), w), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gb, numeric_grad(lambda v: loss(x, w, v), b), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("x_shape,w_shape,stride,pads,dilation,groups", [
    ((2, 4, 7, 6), (6, 2, 3, 2), (1, 1), (1, 0, 2, 1), (2, 1), 2),
    ((1, 6, 9, 8), (3, 2, 2, 3), (2, 1), (0, 2, 1, 0), (3, 2), 3),
    ((2, 3, 6, 7), (6, 1, 3, 3), (1, 2), (1, 1, 1, 1), (1, 2), 3),      # depthwise, multiplier 2
])
def test_oracle_grouped_dilated_backward_matches_finite_differences(x_shape, w_shape, stride, pads,
                                                                     dilation, groups):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    geo = dict(dilation=dilation, groups=groups)
    r = rng.standard_normal(oracle.conv2d_forward(x, w, b, stride, pads, **geo).shape)
    gx, gw, gb = oracle.conv2d_backward(x, w, r, stride, pads, **geo)
    loss = lambda xx, ww, bb: float(np.sum(r * oracle.conv2d_forward(xx, ww, bb, stride, pads, **geo)))
    np.testing.assert_allclose(gx, numeric_grad(lambda v: loss(v, w, b), x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gw, numeric_grad(lambda v: loss(x, v, b), w), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gb, numeric_grad(lambda v: loss(x, w, v), b), rtol=1e-7, atol=1e-8)


@settings(max_examples=max(10, settings.default.max_examples // 2))
@given(case=grouped_cases())
def test_oracle_matches_torch(case):
    """The oracle against torch.nn.functional.conv2d, forward and autograd, in float64. Torch
    pads symmetrically, so the asymmetric padding is applied to the input first."""
    torch = pytest.importorskip("torch")
    x_shape, w_shape, stride, pads, bias, _, _, seed, dilation, groups = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    top, bottom, left, right = pads
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (left, right, top, bottom)), tw, tb,
                                    stride=stride, dilation=dilation, groups=groups)
    y = oracle.conv2d_forward(x, w, b, stride, pads, dilation, groups)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(gy))
    gx, gw, gb = oracle.conv2d_backward(x, w, gy, stride, pads, dilation, groups)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_grouped_dilated_output_size():
    """floor((n + pads - dilation*(k-1) - 1) / stride) + 1 on a case worked by hand:
    rows (10 + 1 + 2 - 2*2 - 1)//3 + 1 = 3, columns (7 + 0 + 0 - 3*1 - 1)//1 + 1 = 4."""
    x = np.zeros((1, 4, 10, 7))
    w = np.zeros((2, 2, 3, 2))
    assert oracle.conv2d_forward(x, w, None, (3, 1), (1, 2, 0, 0), (2, 3), 2).shape == (1, 2, 3, 4)


def test_grouped_worked_example(device):
    """Two groups of one channel each, 1x1 kernels: each output channel is its own input
    channel scaled, so the groups cannot see each other; dilation 2 of a 1x2 kernel adds
    x[:, :, :, q] and x[:, :, :, q + 2]."""
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    w = np.array([2, -1], np.float32).reshape(2, 1, 1, 1)
    np.testing.assert_array_equal(_run(device, x, w, None, (1, 1), (0, 0, 0, 0), groups=2, algorithm="direct"),
                                  np.stack([2 * x[0, 0], -x[0, 1]])[None])
    w2 = np.ones((1, 2, 1, 2), np.float32)
    expected = (x[:, 0] + x[:, 1])[:, :, 0:2] + (x[:, 0] + x[:, 1])[:, :, 2:4]
    np.testing.assert_array_equal(_run(device, x, w2, None, (1, 1), (0, 0, 0, 0), dilation=(1, 2)),
                                  expected[:, None])


def test_grouped_shape_errors(device):
    x = device.to_device(np.zeros((1, 6, 5, 5), np.float32))
    w = device.to_device(np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"6 channels are not divisible by groups=4"):
        ops.conv2d_forward(device, x, device.to_device(np.zeros((4, 1, 3, 3), np.float32)), None,
                           (1, 1), (0, 0, 0, 0), groups=4)
    with pytest.raises(ShapeError, match=r"4 filters .* not divisible by groups=3"):
        ops.conv2d_forward(device, x, w, None, (1, 1), (0, 0, 0, 0), groups=3)
    with pytest.raises(ShapeError, match=r"2 input channels per group .* needs 3"):
        ops.conv2d_forward(device, x, w, None, (1, 1), (0, 0, 0, 0), groups=2)
    w3 = device.to_device(np.zeros((3, 2, 3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"dilation 3x3 spans 7x7, which is larger than the padded input 5x5"):
        ops.conv2d_forward(device, x, w3, None, (1, 1), (0, 0, 0, 0), dilation=(3, 3), groups=3)
    ops.conv2d_forward(device, x, w3, None, (1, 1), (1, 1, 1, 1), dilation=(3, 3), groups=3)  # fits padded
    with pytest.raises(ShapeError, match="dilation"):
        ops.conv2d_forward(device, x, w3, None, (1, 1), (0, 0, 0, 0), dilation=(0, 1), groups=3)
    with pytest.raises(ShapeError, match="groups"):
        ops.conv2d_forward(device, x, w3, None, (1, 1), (0, 0, 0, 0), groups=0)
    with pytest.raises(ShapeError, match="not divisible by groups=4"):
        ops.conv2d_backward(device, x, w, device.to_device(np.zeros((1, 4, 3, 3), np.float32)),
                            (1, 1), (0, 0, 0, 0), groups=4)
    with pytest.raises(ValueError, match="depthwise"):
        ops.conv2d_forward(device, x, w3, None, (1, 1), (0, 0, 0, 0), groups=3, algorithm="depthwise")


@pytest.mark.parametrize("filters, width", [(16, 16), (20, 7), (16, 32)])
def test_backward_pads_x_as_the_forward_did(device, monkeypatch, filters, width):
    """Where the forward pads a copy of x, conv2d_forward(saved=) keeps it and
    conv2d_backward(saved=) takes it instead of padding x again; where the forward's kernel
    reads x unpadded (conv2d.cl's PK), the weight gradient's does too: x padded once or never
    in a step, the same gradients as the oracle."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 9, width)).astype(np.float32)
    w = rng.standard_normal((filters, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    pads = (1, 1, 1, 1)
    copies = 0 if ops._pads_in_kernel(device, filters, 9, width, pads, None) else 1
    pad_calls = []
    real_pad = ops._pad
    monkeypatch.setattr(ops, "_pad", lambda dev, src, *a: pad_calls.append(src) or real_pad(dev, src, *a))
    xd = device.to_device(x)
    saved = {}
    y = ops.conv2d_forward(device, xd, device.to_device(w), device.to_device(b), (1, 1), pads,
                           algorithm="direct", saved=saved)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = ops.conv2d_backward(device, xd, device.to_device(w), device.to_device(gy), (1, 1), pads,
                                     algorithm="direct", saved=saved)
    assert [src is xd for src in pad_calls].count(True) == copies
    x64, w64, gy64 = x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64)
    gx_ref, gw_ref, gb_ref = oracle.conv2d_backward(x64, w64, gy64, (1, 1), pads)
    abs_gx, abs_gw, abs_gb = oracle.conv2d_backward(np.abs(x64), np.abs(w64), np.abs(gy64), (1, 1), pads)
    assert_close(gw.get(), gw_ref, _bound(abs_gw), 0.0, "weight gradient")
    assert_close(gx.get(), gx_ref, _bound(abs_gx), 0.0, "input gradient")
    assert_close(gb.get(), gb_ref, _bound(abs_gb), 0.0, "bias gradient")
    # A saved copy of another tensor is not taken for this one.
    other = device.to_device(x + 1)
    _, gw_other, _ = ops.conv2d_backward(device, other, device.to_device(w), device.to_device(gy), (1, 1), pads,
                                         algorithm="direct", saved=saved)
    assert any(src is other for src in pad_calls) == bool(copies)
    gw_other_ref = oracle.conv2d_backward(x64 + 1, w64, gy64, (1, 1), pads)[1]
    abs_other = oracle.conv2d_backward(np.abs(x64 + 1), np.abs(w64), np.abs(gy64), (1, 1), pads)[1]
    assert_close(gw_other.get(), gw_other_ref, _bound(abs_other), 0.0, "weight gradient of another input")
