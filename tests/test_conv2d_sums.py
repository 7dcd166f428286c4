"""The sums form of conv2d's input gradient (kernels/conv2d_sums.cl: lanes over the forward's
output channels, real taps only) against the float64 oracle with test_conv2d's bounds over
random narrow shapes (rows of up to 16 pixels, 1-40 output channels: one to three vectors of
lanes, asymmetric padding up to past the kernel), the rule that picks it, the one transpose of
gy that both gradients share, and the error where it cannot run."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.ops import _common, conv2d as ops
from tests.test_conv2d import _check_case, conv_cases


@pytest.fixture
def float16_device(device):
    if not ops._sums_runs(device, (1, 1, 1, 1), (1, 1, 1, 1), (1, 1), (1, 1), 1):
        pytest.skip("the sums form needs float16 vectors (AVX-512 here)")
    return device


def sums_cases():
    """Stride 1, one group of 1-8 input channels, 1-40 output channels, kernels 1x1..5x5, padding
    0..k+1 per side, inputs up to 16 columns wide (the kernel's limit), batch 1..3; every case
    runs the forced sums form (conv_cases' form slot)."""
    return conv_cases(kernel=(5, 5), max_stride=1, taller=7, wider=11, grouping=st.tuples(st.just(1), st.integers(1, 8)),
                      out_per_group=(1, 40), activations=[None, "tanh"], forms=["sums"]).filter(
                          lambda case: case[0][3] <= 16)


# each shape compiles a kernel; the fixture only skips devices without float16
@settings(max_examples=max(8, settings.default.max_examples // 2), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=sums_cases())
def test_sums_form_matches_oracle(float16_device, case):
    _check_case(float16_device, "direct", case)


def test_rule_takes_the_sums_form_where_the_gather_form_multiplies_zeros(float16_device):
    pay = ops._sums_pay
    dev = float16_device
    # LeNet-5's conv2 (gx 6x14x14 from 16 channels of 10x10, 5x5): 0.74x the gather form's time
    assert pay(dev, (64, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert pay(dev, (64, 8, 10, 10), (64, 8, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    # 3x3 "same" layers, where the gather form meets few zeros: 1.07-1.8x its time
    assert not pay(dev, (64, 3, 16, 16), (16, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert not pay(dev, (64, 4, 16, 16), (12, 4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    # beyond its ground: wide rows, strides, groups, many input channels
    assert not pay(dev, (64, 6, 28, 28), (16, 6, 5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert not pay(dev, (64, 6, 14, 14), (16, 6, 5, 5), (2, 2), (0, 0, 0, 0), (1, 1), 1)
    assert not pay(dev, (64, 6, 14, 14), (16, 3, 5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 2)
    assert not pay(dev, (64, 16, 14, 14), (16, 16, 5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1)


def test_both_gradients_share_one_transpose_of_gy(float16_device, monkeypatch):
    dev = float16_device
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    gy = rng.standard_normal((4, 16, 10, 10)).astype(np.float32)
    names = []
    real = _common.launch
    monkeypatch.setattr(ops, "launch", lambda d, k, *a: names.append(k.function_name) or real(d, k, *a))
    gx, gw, gb = ops.conv2d_backward(dev, dev.to_device(x), dev.to_device(w), dev.to_device(gy), (1, 1), (0, 0, 0, 0))
    assert "conv2d_input_grad_sums" in names
    assert names.count("conv2d_transpose_nchw") == 1, names
    names.clear()
    monkeypatch.setattr(ops, "_INPUT_GRAD_FORM", "gather")
    gx_gather, gw_gather, _ = ops.conv2d_backward(dev, dev.to_device(x), dev.to_device(w), dev.to_device(gy),
                                                  (1, 1), (0, 0, 0, 0))
    assert "conv2d_input_grad_sums" not in names
    np.testing.assert_allclose(gx.get(), gx_gather.get(), rtol=0, atol=2e-5 * np.abs(gx_gather.get()).max())
    np.testing.assert_array_equal(gw.get(), gw_gather.get())


def test_forced_sums_form_names_what_it_needs(device, monkeypatch):
    monkeypatch.setattr(ops, "_INPUT_GRAD_FORM", "sums")
    w = device.to_device(np.ones((4, 2, 3, 3), np.float32))
    gy = device.to_device(np.ones((1, 4, 10, 18), np.float32))
    with pytest.raises(ValueError, match="sums form .* at most 16"):
        ops._input_grad_direct(device, w, gy, (1, 2, 12, 20), (1, 1), (0, 0, 0, 0))
