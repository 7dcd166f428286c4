"""Conv2D kernels (every algorithm) vs the NumPy oracle, the tuner that picks among them, the
oracle vs finite differences and worked examples."""
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


def _run(device, x, w, b, stride, pads, activation=None, algorithm=None):
    y = ops.conv2d_forward(device, device.to_device(x), device.to_device(w),
                           None if b is None else device.to_device(b), stride, pads,
                           activation=activation, negative_slope=0.1, algorithm=algorithm)
    return y.get()


@st.composite
def conv_cases(draw):
    """Kernels 1x1..11x11 (non-square too), strides 1-3 per axis, asymmetric padding up to
    more than the kernel needs, odd and non-square images, batch 1..3, channels 1..10."""
    kh, kw = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(draw(st.integers(0, k + 1)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), kh + 9))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), kw + 17))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 10))
    bias = draw(st.booleans())
    activation = draw(st.sampled_from(list(ACTIVATIONS)))
    form = draw(st.sampled_from([None, "gather", "columns"]))
    seed = draw(st.integers(0, 2 ** 31))
    return (n, c, h, w), (o, c, kh, kw), (sh, sw), pads, bias, activation, form, seed


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


def _check_case(device, algorithm, case):
    x_shape, w_shape, stride, pads, bias, activation, form, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64)

    pre = oracle.conv2d_forward(x64, w64, b64, stride, pads)
    abs_pre = oracle.conv2d_forward(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64), stride, pads)
    y = _run(device, x, w, b, stride, pads, activation, algorithm)
    # The activations are 1-Lipschitz, so the pre-activation bound carries over.
    assert_close(y, ACTIVATIONS[activation](pre), _bound(abs_pre), 0.0, f"forward ({activation})")

    gy = rng.standard_normal(pre.shape).astype(np.float32)
    ops._INPUT_GRAD_FORM = form    # both forms of the input gradient, and the automatic choice
    try:
        gx, gw, gb = ops.conv2d_backward(device, device.to_device(x), device.to_device(w),
                                         device.to_device(gy), stride, pads, has_bias=bias,
                                         algorithm=algorithm)
    finally:
        ops._INPUT_GRAD_FORM = None
    gx_ref, gw_ref, gb_ref = oracle.conv2d_backward(x64, w64, gy.astype(np.float64), stride, pads)
    abs_gx, abs_gw, abs_gb = oracle.conv2d_backward(np.abs(x64), np.abs(w64),
                                                    np.abs(gy.astype(np.float64)), stride, pads)
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
        ops.conv2d_forward(device, x, x, None, (1, 1), (0, 0, 0, 0), algorithm="winograd")


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
