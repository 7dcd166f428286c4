"""conv2d_forward summing the input channels over several launches (ops._input_chunk: deep
layers keep a work item's weights within its core's L2), forced down to chunks of one to a few
channels, against the float64 oracle: the forward pass and the input gradients built from it
(gather, columns and phases forms), over random shapes, strides, padding, groups and dilation."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from tests.test_conv2d import _check_case, conv_cases


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Every launch that may chunk does so, down to single channels."""
    monkeypatch.setattr(ops, "_CHUNK_WEIGHT_BYTES", 1)
    monkeypatch.setattr(ops, "_MIN_CHUNK_CHANNELS", 1)
    ops._plan.cache_clear()
    ops._weight_plan.cache_clear()
    yield
    ops._plan.cache_clear()
    ops._weight_plan.cache_clear()


def chunked_cases():
    """2-6 input and 1-40 output channels per group, groups 1 or 2, kernels 1x1..3x3, strides
    and dilations 1-2, padding less than the kernel, batch 1..3; output widths of 8 and 16
    give pixel blocks that tile a row (the chunked case) as well."""
    return conv_cases(kernel=(3, 3), max_stride=2, dilation=st.integers(1, 2), pad_slack=-1, taller=6, wider=12,
                      grouping=st.tuples(st.sampled_from([1, 1, 2]), st.integers(2, 6)), out_per_group=(1, 40),
                      output_widths=[None, 8, 16])


# The fixture holds the budget once for all examples, as intended; each shape compiles kernels.
@settings(max_examples=max(4, settings.default.max_examples // 2),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=chunked_cases())
def test_chunked_forward_matches_oracle(device, tiny_chunks, case):
    _check_case(device, "direct", case)


@pytest.mark.parametrize("x_shape,w_shape,pads", [
    ((2, 8, 6, 8), (16, 8, 3, 3), (1, 1, 1, 1)),       # rows of 8 pixels: blocks tile them
    ((3, 6, 5, 5), (20, 6, 5, 5), (0, 0, 0, 0)),       # 1x1 outputs: blocks over the batch
    ((2, 12, 9, 16), (40, 12, 3, 3), (1, 1, 1, 1)),    # three channel vectors, 16-pixel rows
])
def test_known_chunked_shapes_match_oracle(device, tiny_chunks, x_shape, w_shape, pads):
    n, c, h, w = x_shape
    o, _, kh, kw = w_shape
    oh, ow = h + pads[0] + pads[1] - kh + 1, w + pads[2] + pads[3] - kw + 1
    plan = ops._plan(n, c, h + pads[0] + pads[1], w + pads[2] + pads[3], o, kh, kw, (1, 1), oh, ow,
                     limits=ops.vector_limits(device))
    assert plan["CIC"] < plan["CI"], f"the shape must really be chunked: {plan}"
    for activation in ("tanh", None):
        _check_case(device, "direct", (x_shape, w_shape, (1, 1), pads, True, activation, None, 7, (1, 1), 1))


def test_chunk_rule():
    # 32x128x16x16 -> 128 5x5, float16 x 4 channel vectors: 820 KiB of weights per item in
    # two chunks of 64 channels (410 KiB); 128 -> 128 3x3 (295 KiB) stays whole.
    assert ops._input_chunk(128, 5, 5, 64, 16, 4) == 64
    assert ops._input_chunk(128, 3, 3, 64, 16, 4) == 128
    # Overlapping last blocks (16 % 5) are never chunked; 8 channels at least.
    assert ops._input_chunk(128, 5, 5, 64, 16, 5) == 128
    assert ops._input_chunk(4096, 7, 7, 64, 16, 4) == 32      # 392 KiB
    assert ops._input_chunk(64, 31, 31, 64, 16, 4) == 8       # 246 KiB a channel: 8 is the floor


def test_kernel_cache_never_hands_a_plan_another_plans_kernel(device, monkeypatch):
    """_kernel keys its cache by the id of a plan dict; an id is reused once its dict is gone
    (the fixture above clears the plan caches), so the cache must check the dict itself."""
    built = []
    monkeypatch.setattr(device, "kernel", lambda filename, name, **defines: built.append(defines) or object())
    old, new = {"CI": 4, "CIC": 4}, {"CI": 4, "CIC": 1}
    monkeypatch.setitem(ops._KERNELS, (device, "conv2d.cl", "conv2d_forward", id(new)), (old, "stale kernel"))
    kernel = ops._kernel(device, "conv2d.cl", "conv2d_forward", new)
    assert kernel != "stale kernel" and built == [new]
    assert ops._kernel(device, "conv2d.cl", "conv2d_forward", new) is kernel and len(built) == 1
