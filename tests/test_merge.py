"""Merge kernels (Add, Add+ReLU, accumulate, Concat and its backward) vs the NumPy oracle, the
oracle's backward vs finite differences, NaN propagation and the errors for bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from clcnn import opspec
from clcnn.errors import ShapeError
from clcnn.ops import merge as ops
from clcnn.oracle import merge as oracle
from tests.helpers import assert_close, kernel_runs, numeric_grad

EPS32 = 2.0 ** -24   # float32's unit roundoff
# Shapes of every rank the graph may add (odd sizes, batch 1 often, tails that are not a
# multiple of 8 and tensors shorter than one float8).
shapes = st.lists(st.integers(1, 11), min_size=1, max_size=4).map(tuple)


# add_forward's run lengths (None: the default choice): shorter than, equal to and longer than
# a tensor of up to 11**4 elements, multiples of 8 and not.
RUNS = [None, 1, 8, 13, 64]


def _inputs(rng, shape, count, scale=1.0):
    return [(rng.standard_normal(shape) * scale).astype(np.float32) for _ in range(count)]


def _check_sum(got, xs, activation, what):
    """Against the float64 oracle. Two float32 inputs: the kernel's one rounding of the exact
    sum equals float32(oracle) exactly (the float64 sum of two float32s rounds to float32 as
    the exact sum does). k inputs summed left to right: |error| <= (k-1) u sum|x_i| (u = 2^-24,
    the classic bound of recursive summation), a bound ReLU (1-Lipschitz) keeps."""
    x64 = [x.astype(np.float64) for x in xs]
    ref = oracle.add_forward(x64, activation)
    if len(xs) == 2:
        np.testing.assert_array_equal(got, ref.astype(np.float32), err_msg=what)
    else:
        bound = (len(xs) - 1) * EPS32 * 1.001 * sum(np.abs(x) for x in x64)
        err = np.abs(got - ref)
        assert np.all(err <= bound), f"{what}: max error {err.max():.3g} over the bound at " \
                                     f"{np.unravel_index(np.argmax(err - bound), err.shape)}"


@given(shape=shapes, count=st.integers(2, 5), activation=st.sampled_from([None, "relu"]),
       scale=st.sampled_from([1e-3, 1.0, 1e4]), seed=st.integers(0, 2 ** 31), run=st.sampled_from(RUNS))
def test_add_matches_oracle(device, shape, count, activation, scale, seed, run):
    rng = np.random.default_rng(seed)
    xs = _inputs(rng, shape, count, scale)
    with kernel_runs(ops, run):
        y = ops.add_forward(device, [device.to_device(x) for x in xs], activation=activation)
    assert y.shape == shape
    _check_sum(y.get(), xs, activation, f"add of {count} {shape} +{activation}")

    # Backward from the oracle's float32 output, so nothing here comes from the kernel:
    # a selection between gy and 0, exact.
    y32 = oracle.add_forward([x.astype(np.float64) for x in xs], activation).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    gx = ops.add_backward(device, device.to_device(gy), count, activation, device.to_device(y32))
    np.testing.assert_array_equal(gx.get(), oracle.add_backward(gy, count, activation, y32))


@given(count=st.integers(9, 19), shape=shapes, activation=st.sampled_from([None, "relu"]),
       seed=st.integers(0, 2 ** 31), run=st.sampled_from(RUNS))
def test_add_of_more_than_one_launch(device, count, shape, activation, seed, run):
    # Above 8 inputs the sum continues in place, launch after launch; the activation applies
    # once, at the end (a relu in between would clip partial sums).
    rng = np.random.default_rng(seed)
    xs = _inputs(rng, shape, count)
    with kernel_runs(ops, run):
        y = ops.add_forward(device, [device.to_device(x) for x in xs], activation=activation)
    _check_sum(y.get(), xs, activation, f"add of {count}")


def test_add_relu_keeps_nan_and_infinities(device):
    # PyTorch's relu(NaN) is NaN; a NaN (or inf - inf) anywhere in a sum must reach the output.
    a = np.array([np.nan, 1.0, -2.0, np.inf, np.inf, -np.inf, 3.0, -1.0, np.nan, 0.5], np.float32)
    b = np.array([1.0, np.nan, 1.0, -np.inf, 1.0, 1.0, -3.0, 0.5, 2.0, -0.5], np.float32)
    for activation in (None, "relu"):
        y = ops.add_forward(device, [device.to_device(a), device.to_device(b)], activation).get()
        with np.errstate(invalid="ignore"):       # inf - inf
            ref = oracle.add_forward([a.astype(np.float64), b.astype(np.float64)], activation)
        np.testing.assert_array_equal(y, ref.astype(np.float32))   # NaNs compare equal here
        assert np.isnan(y[[0, 1, 3, 8]]).all()
    # The same through the float8 path (the 10 elements above are one float8 and a tail).
    big = np.tile(a, 8)
    y = ops.add_forward(device, [device.to_device(big), device.to_device(np.tile(b, 8))], "relu").get()
    assert np.isnan(y.reshape(8, 10)[:, [0, 1, 3, 8]]).all()
    assert np.array_equal(np.isnan(y), np.isnan(np.tile(y[:10], 8)))
    # Backward as torch's threshold_backward: y <= 0 ? 0 : gy, so a NaN y passes gy and a NaN
    # gy where y <= 0 gives 0.
    y = np.array([np.nan, np.nan, 0.0, -0.0, 0.0, 2.0, 1.0, np.inf, 3.0], np.float32)
    gy = np.array([1.5, np.nan, np.nan, 2.0, 3.0, np.nan, -1.0, 2.0, np.inf], np.float32)
    gx = ops.add_backward(device, device.to_device(gy), 2, "relu", device.to_device(y)).get()
    np.testing.assert_array_equal(gx, oracle.add_backward(gy, 2, "relu", y))
    np.testing.assert_array_equal(gx, [1.5, np.nan, 0, 0, 0, np.nan, -1.0, 2.0, np.inf])


def test_add_large_flat_array(device):
    # Many work items and a ragged tail: exact for two inputs.
    rng = np.random.default_rng(7)
    a, b, c = _inputs(rng, (1_000_003,), 3)
    y = ops.add_forward(device, [device.to_device(a), device.to_device(b)], "relu").get()
    np.testing.assert_array_equal(y, np.maximum(a + b, 0))
    y = ops.add_forward(device, [device.to_device(v) for v in (a, b, c)]).get()
    np.testing.assert_array_equal(y, (a + b) + c)   # float32 left to right, as the kernel sums


@given(shape=shapes, seed=st.integers(0, 2 ** 31), run=st.sampled_from(RUNS))
def test_accumulate_and_add_into(device, shape, seed, run):
    with kernel_runs(ops, run):
        _check_accumulate(device, shape, seed)


def _check_accumulate(device, shape, seed):
    rng = np.random.default_rng(seed)
    t, g, h = _inputs(rng, shape, 3)
    # One rounding each: exact against float32 of the float64 sum.
    total = device.to_device(t)
    data = total.base_data
    out = ops.accumulate(device, total, device.to_device(g))
    assert out is total and total.base_data is data                 # in place
    np.testing.assert_array_equal(total.get(), oracle.accumulate(t.astype(np.float64), g).astype(np.float32))
    out = device.to_device(np.zeros(shape, np.float32))
    assert ops.add_into(device, out, device.to_device(g), device.to_device(h)) is out
    np.testing.assert_array_equal(out.get(), (g.astype(np.float64) + h).astype(np.float32))
    # out may be one of its inputs, and a tensor may accumulate itself (Add([x, x])).
    ga = device.to_device(g)
    ops.add_into(device, ga, ga, device.to_device(h))
    np.testing.assert_array_equal(ga.get(), (g.astype(np.float64) + h).astype(np.float32))
    ops.accumulate(device, ga, ga)
    np.testing.assert_array_equal(ga.get(), 2 * (g.astype(np.float64) + h).astype(np.float32))


def test_add_backward_without_activation_is_gy(device):
    gy = device.to_device(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert ops.add_backward(device, gy, 3) is gy


@st.composite
def concat_cases(draw):
    """2..5 inputs, 4-D (N, C_i, H, W) or 2-D (N, K_i), odd sizes, batch 1 often, an input
    with 0 channels now and then (torch.cat accepts it)."""
    count = draw(st.integers(2, 5))
    n = draw(st.sampled_from([1, 1, 2, 3]))
    sizes = [draw(st.integers(1, 9))] + [draw(st.integers(0, 9)) for _ in range(count - 1)]
    rest = tuple(draw(st.integers(1, 9)) for _ in range(2)) if draw(st.booleans()) else ()
    return [(n, s) + rest for s in sizes], draw(st.sampled_from([1, -len(rest) - 1])), draw(st.integers(0, 2 ** 31))


@given(case=concat_cases())
def test_concat_matches_oracle(device, case):
    # Copies: bit-exact both ways.
    shapes_, axis, seed = case
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes_]
    y = ops.concat_forward(device, [device.to_device(x) for x in xs], axis=axis)
    np.testing.assert_array_equal(y.get(), oracle.concat_forward(xs, axis=1))
    sizes = [s[1] for s in shapes_]
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gxs = ops.concat_backward(device, device.to_device(gy), sizes, axis=axis)
    assert len(gxs) == len(xs)
    for gx, ref, s in zip(gxs, oracle.concat_backward(gy, sizes, axis=1), shapes_):
        assert gx.shape == s
        np.testing.assert_array_equal(gx.get(), ref)


def test_concat_large(device):
    # Runs of many float8s with ragged ends, several rows.
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((3, c, 33, 35)).astype(np.float32) for c in (5, 16, 7)]
    y = ops.concat_forward(device, [device.to_device(x) for x in xs]).get()
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=1))
    parts = ops.concat_backward(device, device.to_device(y), [5, 16, 7])
    for part, x in zip(parts, xs):
        np.testing.assert_array_equal(part.get(), x)


@pytest.mark.parametrize("make", [
    lambda: opspec.add((1, 5, 7, 9), 2), lambda: opspec.add((2, 3, 5, 5), 3, "relu"),
    lambda: opspec.add((1, 13), 5), lambda: opspec.concat([(1, 3, 5, 7), (1, 4, 5, 7), (1, 1, 5, 7)]),
    lambda: opspec.concat([(3, 5), (3, 11)])])
def test_opspec_cases_pass_their_check(device, make):
    result = opspec.check(make(), device, np.random.default_rng(0))
    assert result["ok"], result


# ---- bad input: one clear error each ------------------------------------------------------
def _dev(device, *shapes_):
    return [device.to_device(np.zeros(s, np.float32)) for s in shapes_]


def test_errors(device):
    with pytest.raises(ShapeError, match=r"input 2 has shape \(1, 3, 5, 6\) but input 0 has shape \(1, 3, 5, 5\)"):
        ops.add_forward(device, _dev(device, (1, 3, 5, 5), (1, 3, 5, 5), (1, 3, 5, 6)))
    with pytest.raises(ValueError, match="at least 2 inputs, got 1"):
        ops.add_forward(device, _dev(device, (2, 3)))
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        ops.add_forward(device, _dev(device, (2, 3), (2, 3)), activation="tanh")
    with pytest.raises(ValueError, match="needs the forward output y"):
        ops.add_backward(device, _dev(device, (2, 3))[0], 2, "relu")
    with pytest.raises(ShapeError, match=r"g has shape \(3, 2\) but total has shape \(2, 3\)"):
        ops.accumulate(device, *_dev(device, (2, 3), (3, 2)))
    with pytest.raises(ShapeError, match=r"concat along axis 1: input 1 has shape \(1, 4, 5, 6\) "
                                         r"but input 0 has shape \(1, 3, 5, 5\); they differ on axis 3"):
        ops.concat_forward(device, _dev(device, (1, 3, 5, 5), (1, 4, 5, 6)))
    with pytest.raises(ShapeError, match="input 1 has shape \\(1, 3\\) .* same number of axes"):
        ops.concat_forward(device, _dev(device, (1, 3, 5, 5), (1, 3)))
    with pytest.raises(ValueError, match="only the channel axis"):
        ops.concat_forward(device, _dev(device, (1, 3, 5, 5), (1, 3, 5, 5)), axis=2)
    with pytest.raises(ShapeError, match="4-D .* or 2-D"):
        ops.concat_forward(device, _dev(device, (1, 3, 5), (1, 3, 5)))
    with pytest.raises(ValueError, match="at least 2 inputs"):
        ops.concat_forward(device, _dev(device, (1, 3, 5, 5)))
    with pytest.raises(ShapeError, match=r"sizes \[2, 2\] must be .* summing to gy's axis 1 \(5"):
        ops.concat_backward(device, _dev(device, (1, 5, 2, 2))[0], [2, 2])
    with pytest.raises(TypeError, match="float32"):
        ops.add_forward(device, [device.to_device(np.zeros(3), dtype=np.float64)] * 2)


# ---- the oracle's backward vs float64 central differences ---------------------------------
@pytest.mark.parametrize("activation", [None, "relu"])
def test_oracle_add_grad(activation):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 3, 4)) for _ in range(3)]
    xs[0] = np.where(np.abs(sum(xs)) < 0.05, xs[0] + 0.2, xs[0])   # away from relu's kink
    gy = rng.standard_normal(xs[0].shape)
    y = oracle.add_forward(xs, activation)
    gx = oracle.add_backward(gy, 3, activation, y)
    for i in range(3):
        def f(v, i=i):
            return float((oracle.add_forward(xs[:i] + [v] + xs[i + 1:], activation) * gy).sum())
        assert_close(gx, numeric_grad(f, xs[i]), atol=1e-7, rtol=1e-6, what=f"add oracle grad {i}")


def test_oracle_accumulate_grad():
    rng = np.random.default_rng(1)
    t, g, gy = (rng.standard_normal((3, 5)) for _ in range(3))
    # d/dt and d/dg of sum(accumulate(t, g) * gy) are both gy.
    assert_close(numeric_grad(lambda v: float((oracle.accumulate(v, g) * gy).sum()), t), gy,
                 atol=1e-7, rtol=1e-6, what="accumulate oracle grad")
    assert_close(numeric_grad(lambda v: float((oracle.accumulate(t, v) * gy).sum()), g), gy,
                 atol=1e-7, rtol=1e-6, what="accumulate oracle grad")


@pytest.mark.parametrize("shapes_", [[(2, 3, 2, 3), (2, 1, 2, 3), (2, 2, 2, 3)], [(3, 2), (3, 5)]])
def test_oracle_concat_grad(shapes_):
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal(s) for s in shapes_]
    gy = rng.standard_normal(oracle.concat_forward(xs).shape)
    gxs = oracle.concat_backward(gy, [s[1] for s in shapes_])
    for i in range(len(xs)):
        def f(v, i=i):
            return float((oracle.concat_forward(xs[:i] + [v] + xs[i + 1:]) * gy).sum())
        assert_close(gxs[i], numeric_grad(f, xs[i]), atol=1e-7, rtol=1e-6, what=f"concat oracle grad {i}")
