"""conv2d's direct kernels at both vector widths: float8, and float16 where the device prefers
16-wide floats (AVX-512; elsewhere those cases skip). Output channels 9-70, so the float16
blocks (taken for more than 8 channels) and their channel tails are exercised, against the
float64 oracle with test_conv2d's bounds, over random shapes, strides, padding, groups and
dilation; and the blocking rules' choices on the layers they were measured on."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from tests.helpers import hold_vector_width
from tests.test_conv2d import _check_case, conv_cases


def wide_cases():
    """9-70 output channels per group, 1-4 input channels per group, groups mostly 1 (or 2),
    kernels 1x1..5x5, strides 1-2, dilation mostly 1 (or 2), padding up to the kernel, batch 1..3."""
    return conv_cases(kernel=(5, 5), max_stride=2, dilation=st.sampled_from([1, 1, 2]), pad_slack=0, taller=6,
                      wider=20, grouping=st.tuples(st.sampled_from([1, 1, 1, 2]), st.integers(1, 4)),
                      out_per_group=(9, 70))


@pytest.fixture(params=[8, 16])
def width(request, device, monkeypatch):
    return hold_vector_width(device, monkeypatch, request.param)


# The fixture sets the width once for all examples, as intended.
# A third of the usual examples per width: every drawn shape compiles new kernels.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 3))
@given(case=wide_cases())
def test_wide_conv2d_matches_oracle(device, width, case):
    _check_case(device, "direct", case)


def test_float16_only_past_eight_channels():
    assert ops._forward_blocking(6, 28, 16, 32)[0] == 8          # LeNet conv1
    assert ops._weight_blocking(6, 5, 5, 16, 32)[0] == 8
    assert ops._forward_blocking(16, 10, 16, 32)[0] == 16        # LeNet conv2
    assert ops._forward_blocking(16, 10, 8, 16)[0] == 8          # float8 devices stay float8


def test_float16_blocks_stay_within_the_registers():
    for co in (9, 16, 32, 64, 120, 128, 256):
        for seg in (1, 5, 8, 10, 16, 28, 32, 64):
            vw, obv, pb = ops._forward_blocking(co, seg, 16, 32)
            assert vw == 16 and obv * pb <= 16 and pb <= seg
        for k in (1, 3, 5, 7):
            vw, obv, khb, pbw = ops._weight_blocking(co, k, k, 16, 32)
            # 24 accumulators, or a whole 5x5 kernel of one channel vector (25) with the gy
            # vectors of two pixels: 27 of the 32 registers
            assert vw == 16 and k % khb == 0 and 1 <= pbw <= 4
            assert obv * khb * k <= 24 or (obv, khb * k, pbw) == (1, 25, 2)


def test_measured_float16_blockings():
    assert ops._forward_blocking(64, 16, 16, 32) == (16, 4, 4)
    assert ops._weight_blocking(64, 3, 3, 16, 32)[:3] == (16, 2, 3)
    assert ops._weight_blocking(64, 5, 5, 16, 32)[:3] == (16, 4, 1)
    assert ops._weight_blocking(16, 5, 5, 16, 32) == (16, 1, 5, 2)     # LeNet-5 conv2
    assert ops._weight_blocking(120, 5, 5, 16, 32)[:3] == (16, 4, 1)   # LeNet-5 conv3


@pytest.mark.parametrize("x_shape, w_shape, pads", [
    ((3, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)),      # LeNet-5's conv2
    ((2, 3, 9, 11), (12, 3, 5, 5), (2, 1, 0, 2)),        # lanes past the 12 channels
])
def test_whole_kernel_weight_blocks_match_oracle(device, monkeypatch, x_shape, w_shape, pads):
    """The weight gradient's whole-5x5-kernel blocks (one float16 channel vector, 25
    accumulators, two pixels a step) against the oracle, with the rest of the pass."""
    hold_vector_width(device, monkeypatch, 16)
    assert ops._weight_blocking(w_shape[0], 5, 5, *ops.vector_limits(device))[1:] == (1, 5, 2)
    _check_case(device, "direct", (x_shape, w_shape, (1, 1), pads, True, "tanh", None, 7, (1, 1), 1))
