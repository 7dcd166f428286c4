"""conv2d_forward packing its weights in the kernel (SELFPACK: one launch instead of the
packing launch and the convolution; its first work item writes the packed weights where a
backward pass keeps them) against the float64 oracle, over shapes that take it: small
weights, enough pixel blocks per work item."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from clcnn.ops import conv2d as ops
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close, launched_kernels
from tests.test_conv2d import ACTIVATIONS, _bound


def _plan_of(device, x_shape, w_shape, pads, stride=(1, 1)):
    n, c, h, w = x_shape
    o, _, kh, kw = w_shape
    oh, ow = ops._output_hw(x_shape, w_shape, stride, pads)
    in_kernel = ops._pads_in_kernel(device, o, oh, ow, pads, None)    # as _forward_direct decides
    return ops._plan(n, c, h + pads[0] + pads[1], w + pads[2] + pads[3], o, kh, kw, stride, oh, ow, 1, (1, 1),
                     ops.vector_limits(device), pads=tuple(pads) if in_kernel else None,
                     selfpack=device.cl_device.max_compute_units)


@st.composite
def cases(draw):
    """Mostly unpadded inputs (a padded one is mostly read in place, PK, which packs apart),
    enough rows for 16 blocks per work item, up to two channel vectors."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    padded = draw(st.integers(0, 2)) == 0
    pads = tuple(draw(st.integers(0, k - 1)) if padded else 0 for k in (kh, kh, kw, kw))
    h, w = draw(st.integers(kh + 7, kh + 16)), draw(st.integers(kw, 20))
    n, c = draw(st.integers(24, 48)), draw(st.integers(1, 4))
    o = draw(st.sampled_from([1, 3, 6, 12, 16, 20, 32]))
    stride = draw(st.sampled_from([(1, 1), (1, 1), (1, 1), (2, 2)]))
    return ((n, c, h, w), (o, c, kh, kw), pads, stride, draw(st.booleans()),
            draw(st.sampled_from(sorted(ACTIVATIONS, key=str))), draw(st.integers(0, 2 ** 31)))


@settings(max_examples=max(8, settings.default.max_examples // 2), deadline=None)
@given(case=cases())
def test_selfpacking_forward_matches_oracle(device, case):
    x_shape, w_shape, pads, stride, bias, activation, seed = case
    if not device.is_cpu:
        pytest.skip("the forward packs its weights itself on CPUs only")
    plan = _plan_of(device, x_shape, w_shape, pads, stride)
    assume(plan.get("SELFPACK"))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    names = []
    with launched_kernels(names):
        y = ops.conv2d_forward(device, device.to_device(x), device.to_device(w),
                               None if b is None else device.to_device(b), stride, pads, activation=activation,
                               negative_slope=0.1, algorithm="direct")
    ref = oracle.conv2d_forward(x.astype(np.float64), w.astype(np.float64),
                                None if b is None else b.astype(np.float64), stride, pads)
    abs_ref = oracle.conv2d_forward(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                                    None if b is None else np.abs(b).astype(np.float64), stride, pads)
    assert_close(y.get(), ACTIVATIONS[activation](ref), _bound(abs_ref), 0.0,
                 f"self-packing forward, {activation}")
    assert "conv2d_pack_weights" not in names and names.count("conv2d_forward") == 1


def test_lenet_conv2_standalone_forward_is_one_launch(device):
    """The conv sweep's LeNet-5 conv2 at batch 64, called alone: one launch; a call that keeps
    the packed weights for its backward (saved) too, its first work item writing them as
    conv2d_pack_weights would."""
    if not device.is_cpu:
        pytest.skip("the forward packs its weights itself on CPUs only")
    names = []
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 6, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((16, 6, 5, 5)) * 0.2).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    args = (device, device.to_device(x), device.to_device(w), device.to_device(b), (1, 1), (0, 0, 0, 0))
    with launched_kernels(names):
        y = ops.conv2d_forward(*args, algorithm="direct")
    assert names == ["conv2d_forward"]
    names.clear()
    saved = {}
    with launched_kernels(names):
        kept = ops.conv2d_forward(*args, algorithm="direct", saved=saved)
    assert names == ["conv2d_forward"] and saved["packed"][0] is args[2]
    expected = ops._pack_weights(device, args[2], args[3], 16, mode=0).get()
    np.testing.assert_array_equal(saved["packed"][1].get(), expected)
    ref = oracle.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1),
                                (0, 0, 0, 0))
    bound = _bound(oracle.conv2d_forward(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                                         np.abs(b).astype(np.float64), (1, 1), (0, 0, 0, 0)))
    assert_close(y.get(), ref, bound, 0.0, "LeNet conv2, packed in the kernel")
    assert_close(kept.get(), ref, bound, 0.0, "LeNet conv2, packed by its own launch")


def test_selfpack_rules():
    base = dict(G=1, VW=16, OBV=1, COP=16, CI=6, CIC=6, KH=5, KW=5, NPIX=64 * 100, OH=10, OW=10, PB=10)
    assert ops._selfpack_blocks(base, 2) == 40                  # 640 blocks over 16 items
    assert ops._selfpack_blocks(dict(base, NPIX=8 * 100), 2) == 5       # 80 blocks over 16 items
    assert ops._selfpack_blocks(dict(base, NPIX=2 * 100), 2) == 0       # too few blocks per item
    assert ops._selfpack_blocks(dict(base, CI=64, CIC=64), 2) == 0      # weights past private memory
    assert ops._selfpack_blocks(dict(base, G=2), 2) == 0
    assert ops._selfpack_blocks(dict(base, COP=32), 2) == 0              # two channel blocks
    assert ops._selfpack_blocks(dict(base, CIC=3), 2) == 0               # input-channel chunks
