"""conv2d's direct kernels at both vector widths: float8, and float16 where the device prefers
16-wide floats (AVX-512; elsewhere those cases skip). Output channels 9-70, so the float16
blocks (taken for more than 8 channels) and their channel tails are exercised, against the
float64 oracle with test_conv2d's bounds, over random shapes, strides, padding, groups and
dilation; and the blocking rules' choices on the layers they were measured on."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from tests.test_conv2d import ACTIVATIONS, _check_case


@st.composite
def wide_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dh, dw = draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([1, 1, 2]))
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = tuple(draw(st.integers(0, k)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, ekh - pads[0] - pads[1]), ekh + 6))
    w = draw(st.integers(max(1, ekw - pads[2] - pads[3]), ekw + 20))
    groups = draw(st.sampled_from([1, 1, 1, 2]))
    cg, og = draw(st.integers(1, 4)), draw(st.integers(9, 70))
    n = draw(st.integers(1, 3))
    activation = draw(st.sampled_from(list(ACTIVATIONS)))
    form = draw(st.sampled_from([None, "gather", "columns", "phases"]))
    seed = draw(st.integers(0, 2 ** 31))
    return ((n, groups * cg, h, w), (groups * og, cg, kh, kw), (sh, sw), pads, draw(st.booleans()),
            activation, form, seed, (dh, dw), groups)


@pytest.fixture(params=[8, 16])
def width(request, device, monkeypatch):
    monkeypatch.setattr(ops, "MAX_VECTOR_WIDTH", request.param)
    if ops.vector_limits(device)[0] != request.param:
        pytest.skip(f"this device does not take float{request.param} (preferred float vector "
                    f"{device.cl_device.preferred_vector_width_float} wide)")
    return request.param


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
            assert vw == 16 and obv * khb * k <= 24 and k % khb == 0 and 1 <= pbw <= 4


def test_measured_float16_blockings():
    assert ops._forward_blocking(64, 16, 16, 32) == (16, 4, 4)
    assert ops._weight_blocking(64, 3, 3, 16, 32)[:3] == (16, 2, 3)
    assert ops._weight_blocking(64, 5, 5, 16, 32)[:3] == (16, 4, 1)
