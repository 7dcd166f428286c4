"""conv2d_forward's padding inside the kernel (conv2d.cl's PK: no padded copy) against the
float64 oracle with test_conv2d's bounds, for every block size the blocking rules give (the
host takes it only for blocks of up to 8 pixels; the tests take it wherever it can run), at
both vector widths where the device has them, over random kernels, strides, dilations,
asymmetric padding wider than the kernel, groups and channel chunks; and the copy it replaces
agrees with it."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close, hold_vector_width
from tests.test_conv2d import _bound, conv_cases


@pytest.fixture(params=[8, 16])
def width(request, device, monkeypatch):
    width = hold_vector_width(device, monkeypatch, request.param)
    # wherever the kernel can pad (not only where the host's rule takes it)
    monkeypatch.setattr(ops, "_pads_in_kernel",
                        lambda dev, co, oh, ow, pads, pool: any(pads) and pool is None and oh * ow > 1)
    return width


def _forward(device, x, w, b, stride, pads, dilation, groups, activation):
    return ops.conv2d_forward(device, device.to_device(x), device.to_device(w),
                              None if b is None else device.to_device(b), stride, pads,
                              activation=activation, algorithm="direct", dilation=dilation,
                              groups=groups).get()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 2))
@given(case=conv_cases(kernel=(5, 5), pad_slack=2, out_per_group=(1, 40),
                       grouping=st.tuples(st.sampled_from([1, 1, 2]), st.integers(1, 5))))
def test_padding_in_kernel_matches_oracle_and_the_padded_copy(device, width, monkeypatch, case):
    x_shape, w_shape, stride, pads, bias, activation, _, seed, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    geo = dict(dilation=dilation, groups=groups)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64)
    pre = oracle.conv2d_forward(x64, w64, b64, stride, pads, **geo)
    abs_pre = oracle.conv2d_forward(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64), stride,
                                    pads, **geo)
    y = _forward(device, x, w, b, stride, pads, dilation, groups, None)
    assert_close(y, pre, _bound(abs_pre), 0.0, f"forward, padding in the kernel ({width} lanes)")
    with monkeypatch.context() as m:    # undone before the next example
        m.setattr(ops, "_pads_in_kernel", lambda *args: False)
        copy = _forward(device, x, w, b, stride, pads, dilation, groups, None)
    assert_close(y, copy, 2 * _bound(abs_pre), 0.0, "padding in the kernel against the padded copy")


def test_the_host_pads_in_the_kernel_only_for_blocks_of_up_to_8_pixels(device, monkeypatch):
    hold_vector_width(device, monkeypatch, 16)
    assert ops._forward_blocking(32, 32, 16, 32)[2] == 8
    assert ops._pads_in_kernel(device, 32, 32, 32, (1, 1, 1, 1), None)       # 16 -> 32 at 32x32
    assert not ops._pads_in_kernel(device, 16, 32, 32, (1, 1, 1, 1), None)   # 16 pixels a block
    assert not ops._pads_in_kernel(device, 32, 32, 32, (0, 0, 0, 0), None)
    assert not ops._pads_in_kernel(device, 32, 32, 32, (1, 1, 1, 1), "max")
    assert not ops._pads_in_kernel(device, 32, 1, 1, (1, 1, 1, 1), None)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 3))
@given(case=conv_cases(kernel=(5, 5), max_stride=1, dilation=st.integers(1, 2), pad_slack=0, out_per_group=(1, 40),
                       grouping=st.tuples(st.sampled_from([1, 1, 2]), st.integers(1, 5))))
def test_input_gradient_pads_gy_in_the_kernel(device, width, monkeypatch, case):
    """The gather form of a stride-1 input gradient runs the forward kernel on gy padded by
    K-1-pad: inside the kernel where it can (the copy where a pad exceeds K-1), against the
    float64 oracle."""
    x_shape, w_shape, stride, pads, _, _, _, seed, dilation, groups = case
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y_shape = oracle.conv2d_forward(np.zeros(x_shape), w.astype(np.float64), None, stride, pads, dilation,
                                    groups).shape
    gy = rng.standard_normal(y_shape).astype(np.float32)
    monkeypatch.setattr(ops, "_INPUT_GRAD_FORM", "gather")
    gx = ops._input_grad_direct(device, device.to_device(w), device.to_device(gy), x_shape, stride, pads,
                                dilation, groups).get()
    x64 = np.zeros(x_shape)
    gx_ref, _, _ = oracle.conv2d_backward(x64, w.astype(np.float64), gy.astype(np.float64), stride, pads,
                                          dilation, groups)
    abs_gx, _, _ = oracle.conv2d_backward(x64, np.abs(w).astype(np.float64), np.abs(gy).astype(np.float64),
                                          stride, pads, dilation, groups)
    assert_close(gx, gx_ref, _bound(abs_gx), 0.0, f"input gradient, gy padded in the kernel ({width} lanes)")
