"""conv2d's float8 weight gradient with 25-32 output channels and kernels up to 3 wide, which
runs one work item over all four channel vectors (ops._weight_blocking), against the float64
oracle over random shapes, strides, padding, groups and dilation (the bounds of test_conv2d).
The kernels are held at float8 (on AVX-512 devices they would otherwise take float16)."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from tests.test_conv2d import ACTIVATIONS, _check_case


@st.composite
def wide_block_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = tuple(draw(st.integers(0, k)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, ekh - pads[0] - pads[1]), ekh + 8))
    w = draw(st.integers(max(1, ekw - pads[2] - pads[3]), ekw + 12))
    groups = draw(st.sampled_from([1, 1, 2]))
    cg, og = draw(st.integers(1, 4)), draw(st.integers(25, 32))
    n = draw(st.integers(1, 3))
    activation = draw(st.sampled_from(list(ACTIVATIONS)))
    form = draw(st.sampled_from([None, "gather", "columns", "phases"]))
    seed = draw(st.integers(0, 2 ** 31))
    return ((n, groups * cg, h, w), (groups * og, cg, kh, kw), (sh, sw), pads, draw(st.booleans()),
            activation, form, seed, (dh, dw), groups)


@pytest.fixture
def float8_only(monkeypatch):
    monkeypatch.setattr(ops, "MAX_VECTOR_WIDTH", 8)


# The fixture sets the width once for all examples, as intended.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=wide_block_cases())
def test_wide_channel_block_matches_oracle(device, float8_only, case):
    og, kw = case[1][0] // case[9], case[1][3]
    assert ops._weight_blocking(og, case[1][2], kw, *ops.vector_limits(device))[:3] == (8, 4, 1)
    _check_case(device, "direct", case)


def test_blocking_rule_leaves_other_widths():
    assert ops._weight_blocking(32, 3, 3)[:3] == (8, 4, 1)
    assert ops._weight_blocking(16, 3, 3)[:3] == (8, 1, 3)
    assert ops._weight_blocking(64, 3, 3)[:3] == (8, 1, 3)
