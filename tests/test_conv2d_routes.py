"""conv2d_forward's kept routes (ops._ROUTES): a call signature that ran the direct form once
runs its kept launches afterwards, skipping the checks and the choice of form. Repeated calls
with new arrays of the same shapes must match the float64 oracle as the first call did;
calls that differ in anything the route fixed (activation, slope, bias, pooling, the tuner's
mode) must not take it; an input that needs a padded copy keeps no route."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.errors import ShapeError
from clcnn.ops import conv2d as ops
from clcnn.oracle import conv2d as oracle
from clcnn.oracle import pool as oracle_pool
from tests.helpers import assert_close
from tests.test_conv2d import ACTIVATIONS, _bound, conv_cases


def _arrays(rng, x_shape, w_shape, bias):
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    return x, w, rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None


def _expected(x, w, b, stride, pads, dilation, groups, activation, slope, pool):
    """The oracle's output and its tolerance (pooling averages or picks values within it)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    geo = dict(dilation=dilation, groups=groups)
    pre = oracle.conv2d_forward(x64, w64, b64, stride, pads, **geo)
    abs_pre = oracle.conv2d_forward(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64), stride, pads,
                                    **geo)
    y = ACTIVATIONS[activation](pre) if activation != "leaky_relu" else np.where(pre > 0, pre, slope * pre)
    if pool == "avg":
        y = oracle_pool.avgpool2d_forward(y, (2, 2), (2, 2), (0, 0, 0, 0))
    elif pool == "max":
        y = oracle_pool.maxpool2d_forward(y, (2, 2), (2, 2), (0, 0, 0, 0))[0]
    return y, _bound(abs_pre)


def _call(device, x, w, b, stride, pads, dilation=(1, 1), groups=1, activation=None, slope=0.1, pool=None,
          saved=None):
    return ops.conv2d_forward(device, device.to_device(x), device.to_device(w),
                              None if b is None else device.to_device(b), stride, pads, activation=activation,
                              negative_slope=slope, algorithm="direct", dilation=dilation, groups=groups,
                              saved=saved, pool=pool).get()


def _refuse_choosing(patch):
    """From now on (within `patch`, a monkeypatch context), a call that chooses its form again
    instead of taking a kept route fails."""
    def refuse(*args, **kwargs):
        raise AssertionError("conv2d_forward chose its form again instead of taking the kept route")
    patch.setattr(ops, "_pick", refuse)
    patch.setattr(ops, "_plan", refuse)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 2))
@given(case=conv_cases(kernel=(5, 5), pad_slack=0, out_per_group=(1, 40),
                       grouping=st.tuples(st.sampled_from([1, 1, 2]), st.integers(1, 5)),
                       dilation=st.integers(1, 2)),
       pool=st.sampled_from([None, None, "avg", "max"]))
def test_repeated_calls_take_the_route_and_match_oracle(device, monkeypatch, case, pool):
    x_shape, w_shape, stride, pads, bias, activation, _, seed, dilation, groups = case
    if pool:    # the pooled direct kernel: unpadded, even outputs
        try:
            oh, ow = ops._output_hw(x_shape, w_shape, stride, (0, 0, 0, 0), dilation, groups)
        except ShapeError:      # the kernel needs the padding to fit
            oh = ow = 1
        pads, pool = ((0, 0, 0, 0), pool) if oh % 2 == ow % 2 == 0 and min(oh, ow) >= 2 else (pads, None)
    rng = np.random.default_rng(seed)
    with monkeypatch.context() as m:
        m.setattr(ops, "_ROUTES", {})
        first = _arrays(rng, x_shape, w_shape, bias)
        y = _call(device, *first, stride, pads, dilation, groups, activation, pool=pool)
        assert_close(y, *_expected(*first, stride, pads, dilation, groups, activation, 0.1, pool), 0.0, "first call")
        in_place = not any(pads) or ops._pads_in_kernel(device, w_shape[0] // groups, *ops._output_hw(
            x_shape, w_shape, stride, pads, dilation, groups), pads, pool)
        assert len(ops._ROUTES) == int(in_place), "a route exactly where the input is read in place"
        if in_place:
            _refuse_choosing(m)
        for call in ("second call", "third call"):     # new values each time: nothing of the first is kept
            arrays = _arrays(rng, x_shape, w_shape, bias)
            y = _call(device, *arrays, stride, pads, dilation, groups, activation, pool=pool)
            assert_close(y, *_expected(*arrays, stride, pads, dilation, groups, activation, 0.1, pool), 0.0, call)


def test_a_changed_signature_does_not_take_the_route(device, monkeypatch):
    rng = np.random.default_rng(3)
    x, w, b = _arrays(rng, (2, 6, 14, 14), (16, 6, 5, 5), True)
    stride, pads = (1, 1), (0, 0, 0, 0)
    variants = [dict(activation=None), dict(activation="tanh"), dict(activation="leaky_relu", slope=0.1),
                dict(activation="leaky_relu", slope=0.3), dict(pool="max"), dict(pool="avg")]
    for variant in variants + variants:    # the second round meets every route made in the first
        y = _call(device, x, w, b, stride, pads, **variant)
        expected = _expected(x, w, b, stride, pads, (1, 1), 1, variant.get("activation"), variant.get("slope", 0.1),
                             variant.get("pool"))
        assert_close(y, *expected, 0.0, str(variant))
    y = _call(device, x, w, None, stride, pads)
    assert_close(y, *_expected(x, w, None, stride, pads, (1, 1), 1, None, 0.1, None), 0.0, "without bias")
    assert len(ops._ROUTES) == len(variants) + 1
    monkeypatch.setenv("CLCNN_TUNE", "0")      # another tuner mode: the choice is made again
    _call(device, x, w, b, stride, pads)
    assert len(ops._ROUTES) == len(variants) + 2


def test_padded_copy_keeps_no_route_and_saves_the_copy(device, monkeypatch):
    """Where the forward pads a copy, every call makes it (and leaves it in `saved` for the
    backward), so there is no route to keep."""
    monkeypatch.setattr(ops, "_pads_in_kernel", lambda *args: False)
    rng = np.random.default_rng(5)
    x, w, b = _arrays(rng, (2, 3, 9, 9), (8, 3, 3, 3), True)
    for _ in range(2):
        saved = {}
        y = _call(device, x, w, b, (1, 1), (1, 1, 1, 1), saved=saved)
        assert_close(y, *_expected(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1, None, 0.1, None), 0.0, "padded")
        assert "padded" in saved
    assert not ops._ROUTES


def test_route_refuses_bad_arrays(device):
    """The route skips the shape checks (the key fixes the shapes) but not the array checks."""
    rng = np.random.default_rng(7)
    x, w, b = _arrays(rng, (2, 6, 14, 14), (16, 6, 5, 5), True)
    _call(device, x, w, b, (1, 1), (0, 0, 0, 0))
    assert ops._ROUTES
    with pytest.raises(TypeError, match="conv2d input must be float32"):
        ops.conv2d_forward(device, device.to_device(x.astype(np.float64), dtype=np.float64), device.to_device(w),
                           device.to_device(b), (1, 1), (0, 0, 0, 0), algorithm="direct")
