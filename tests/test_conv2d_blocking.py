"""conv2d's float8 weight gradient with 25-32 output channels and kernels up to 3 wide, which
runs one work item over all four channel vectors (ops._weight_blocking), against the float64
oracle over random shapes, strides, padding, groups and dilation (the bounds of test_conv2d).
The kernels are held at float8 (on AVX-512 devices they would otherwise take float16).
Also the weight gradient's split of the output rows into slices (ops._rows_per_slice) with
slices of a few rows, uneven last slices included, at the device's own vector width."""
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from tests.test_conv2d import _check_case, conv_cases


def wide_block_cases():
    """25-32 output channels per group, 1-4 input channels per group, groups 1 or 2, kernels
    1x1..5x3, strides and dilations 1-2, padding up to the kernel, batch 1..3."""
    return conv_cases(kernel=(5, 3), max_stride=2, dilation=st.integers(1, 2), pad_slack=0, taller=8, wider=12,
                      grouping=st.tuples(st.sampled_from([1, 1, 2]), st.integers(1, 4)), out_per_group=(25, 32))


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


def sliding_window_cases():
    """9-16 output channels per group (two float8 vectors), kernels 5 or 6 wide and of odd
    height (even ones take two kernel rows of one vector instead): the weight gradient steps
    one pixel at a time and reads its inputs with volatile loads (conv2d.cl,
    BW_INPUT); strides, padding, dilation and groups as test_conv2d draws them."""
    return conv_cases(kernel=(6, 6), max_stride=2, dilation=st.integers(1, 2), pad_slack=0, taller=6, wider=12,
                      grouping=st.tuples(st.sampled_from([1, 1, 2]), st.integers(1, 4)),
                      out_per_group=(9, 16)).filter(lambda case: case[1][3] >= 5 and case[1][2] % 2)


@settings(max_examples=max(4, settings.default.max_examples // 3),     # each shape compiles kernels
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(case=sliding_window_cases())
def test_one_pixel_steps_with_volatile_loads_match_oracle(device, float8_only, case):
    og, kh, kw = case[1][0] // case[9], case[1][2], case[1][3]
    assert ops._weight_blocking(og, kh, kw, *ops.vector_limits(device)) == (8, 2, 1, 1)
    _check_case(device, "direct", case)


def sliced_cases():
    """1-40 output channels per group, 1-5 input channels per group, groups 1 or 2, kernels
    1x1..5x5, strides 1-2, padding less than the kernel, batch 1..4, no activation."""
    return conv_cases(kernel=(5, 5), max_stride=2, pad_slack=-1, taller=9, wider=20,
                      grouping=st.tuples(st.sampled_from([1, 1, 2]), st.integers(1, 5)), out_per_group=(1, 40),
                      batch=(1, 4), activations=[None], forms=[None])


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


def row_store_cases():
    """Outputs of 8-40 columns (conv2d.cl stores the pixel blocks of 8 or more 8 at a time, an
    8x8 transpose per 8 channel lanes, the rest lane by lane), 1-40 output channels per group
    (partly filled channel vectors), 1-4 input channels, groups 1 or 2, kernels up to 5x5,
    strides 1-2, padding up to the kernel (read inside the kernel or from a padded copy)."""
    return conv_cases(kernel=(5, 5), max_stride=2, pad_slack=0, taller=6,
                      grouping=st.tuples(st.sampled_from([1, 1, 2]), st.integers(1, 4)), out_per_group=(1, 40),
                      output_widths=tuple(range(8, 41)), forms=[None, "gather"])


@pytest.fixture(params=[8, None], ids=["float8", "device-width"])
def vector_width(request, monkeypatch):
    if request.param:
        monkeypatch.setattr(ops, "MAX_VECTOR_WIDTH", request.param)
    return request.param


@settings(max_examples=max(6, settings.default.max_examples // 2),     # each shape compiles kernels
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(case=row_store_cases())
def test_pixel_blocks_stored_as_rows_match_oracle(device, vector_width, case):
    (n, c, h, w), (o, cg, kh, kw), stride, pads, *_, dilation, groups = case
    ow = (w + pads[2] + pads[3] - kw) // stride[1] + 1
    # only the blockings that reach the row stores (a third to a half of these channel counts
    # and widths take blocks of 8 pixels or more)
    assume(ops._forward_blocking(o // groups, ow, *ops.vector_limits(device))[2] >= 8)
    _check_case(device, "direct", case)
