"""conv2d's float8 weight gradient with 25-32 output channels and kernels up to 3 wide, which
runs one work item over all four channel vectors (ops._weight_blocking), against the float64
oracle over random shapes, strides, padding, groups and dilation (the bounds of test_conv2d).
The kernels are held at float8 (on AVX-512 devices they would otherwise take float16).
Also the weight gradient's split of the output rows into slices (ops._rows_per_slice) with
slices of a few rows, uneven last slices included, at the device's own vector width."""
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


@st.composite
def sliced_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, k - 1)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), kh + 9))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), kw + 20))
    groups = draw(st.sampled_from([1, 1, 2]))
    cg, og = draw(st.integers(1, 5)), draw(st.integers(1, 40))
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 31))
    return ((n, groups * cg, h, w), (groups * og, cg, kh, kw), (sh, sw), pads, draw(st.booleans()),
            None, None, seed, (1, 1), groups)


@settings(max_examples=max(4, settings.default.max_examples // 3))     # each shape compiles kernels
@given(case=sliced_cases(), slice_bytes=st.integers(1, 4096))
def test_small_slices_match_oracle(device, case, slice_bytes):
    saved = ops._WEIGHT_GRAD_SLICE_BYTES
    ops._WEIGHT_GRAD_SLICE_BYTES = slice_bytes    # 1 to a few rows of gyt per slice
    try:
        _check_case(device, "direct", case)
    finally:
        ops._WEIGHT_GRAD_SLICE_BYTES = saved


def test_slices_stay_within_the_budget():
    # 32x128x16x16 -> 128 3x3 (float16 rows of 16 pixels x 128 channels): 512 rows in 8 slices
    # of 512 KiB, where the work-item count alone (512 items) would take one slice of 4 MiB.
    assert ops._rows_per_slice(512, 16 * 128 * 4, 512) == 64
    # Small layers keep the split that gives both cores work: LeNet conv2 at batch 64 (640
    # rows of 10 pixels x 16 channels, 6 items) in 11 slices of 59 rows.
    assert ops._rows_per_slice(640, 10 * 16 * 4, 6) == 59
    assert ops._rows_per_slice(3, 10 ** 9, 1) == 1
