"""Convolutions whose kernel covers the whole unpadded input (one output pixel per image, as
LeNet-5's conv3) run as a matrix product on the Dense layer's GEMM kernels: forward (bias and
fused activation) and all three gradients against the float64 oracle with test_conv2d's
bounds, the automatic choice taking that form on CPUs, and the forced form refusing other
shapes."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from clcnn.ops import conv2d as ops
from clcnn.ops import dense
from tests.helpers import assert_close
from tests.test_conv2d import ACTIVATIONS, _check_case


@st.composite
def whole_window_cases(draw):
    """(N, C, KH, KW) inputs with a (O, C, KH, KW) kernel: batch 1..5, 1..6 channels in, 1..40
    out, kernels 1x1..6x6 (non-square too), any stride (the one window ignores it)."""
    kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n, c, o = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 40))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return ((n, c, kh, kw), (o, c, kh, kw), stride, (0, 0, 0, 0), draw(st.booleans()),
            draw(st.sampled_from(list(ACTIVATIONS))), None, draw(st.integers(0, 2 ** 31)), (1, 1), 1)


@given(case=whole_window_cases())
def test_whole_window_conv_as_gemm_matches_oracle(device, case):
    _check_case(device, "gemm", case)


def test_cpus_run_whole_window_convs_as_gemm_by_default(device, monkeypatch):
    if not device.is_cpu:
        pytest.skip("the automatic GEMM form is a CPU choice")
    calls = []
    for name in ("dense_forward", "dense_backward"):
        real = getattr(dense, name)
        monkeypatch.setattr(dense, name, lambda *args, real=real, **kwargs: calls.append(1) or real(*args, **kwargs))
    rng = np.random.default_rng(0)
    x = device.to_device(rng.standard_normal((4, 16, 5, 5)).astype(np.float32))
    w = device.to_device(rng.standard_normal((120, 16, 5, 5)).astype(np.float32))
    y = ops.conv2d_forward(device, x, w, None, (1, 1), (0, 0, 0, 0), activation="tanh")
    assert y.shape == (4, 120, 1, 1) and len(calls) == 1
    gy = device.to_device(rng.standard_normal((4, 120, 1, 1)).astype(np.float32))
    gx, gw, gb = ops.conv2d_backward(device, x, w, gy, (1, 1), (0, 0, 0, 0), need_input_grad=False)
    assert gx is None and gw.shape == (120, 16, 5, 5) and gb.shape == (120,) and len(calls) == 2
    # the same sums as the direct kernels, in another order (gemm_nt's lanes split the 400 terms
    # where the batch is small): each within float32 rounding of the exact sum, tanh 1-Lipschitz
    direct = ops.conv2d_forward(device, x, w, None, (1, 1), (0, 0, 0, 0), activation="tanh", algorithm="direct")
    abs_sums = np.abs(x.get()).reshape(4, -1) @ np.abs(w.get()).reshape(120, -1).T
    bound = 2 * (400 + 2) * 2.0 ** -24 * abs_sums.reshape(4, 120, 1, 1) + 1e-6
    assert_close(y.get(), direct.get(), atol=bound, rtol=0, what="GEMM form against the direct kernel")
    assert len(calls) == 2


@pytest.mark.parametrize("x_shape,w_shape,pads", [
    ((2, 3, 6, 5), (4, 3, 5, 5), (0, 0, 0, 0)),     # the kernel is smaller than the input
    ((2, 3, 5, 5), (4, 3, 5, 5), (1, 1, 1, 1)),     # padded
])
def test_forced_gemm_refuses_other_shapes(device, x_shape, w_shape, pads):
    x = device.to_device(np.zeros(x_shape, np.float32))
    w = device.to_device(np.zeros(w_shape, np.float32))
    with pytest.raises(ValueError, match="kernel the size of the input"):
        ops.conv2d_forward(device, x, w, None, (1, 1), pads, algorithm="gemm")
