"""The one-launch Winograd form (winograd_fused, clcnn/ops/winograd.py's fuses()): the forward
and the gather-form input gradient against the float64 oracle with the form forced on (work
items looping over several blocks of tiles, a last block only partly filled) and forced off
(the four-launch pipeline), which launches each form makes, and when it is chosen."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from clcnn.ops import conv2d as ops
from clcnn.ops import winograd
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close, launched_kernels
from tests.test_winograd import _bound, assert_forward_matches, winograd_backward


@st.composite
def cases(draw):
    """Batches and planes with several blocks of tiles (32 to a block with float16 lanes, 16
    with float8), channel counts off the register blocks' multiples."""
    k = draw(st.sampled_from(sorted(winograd.TILE)))
    pads = tuple(draw(st.integers(0, k - 1)) for _ in range(4))
    h = draw(st.integers(max(1, k - pads[0] - pads[1]), 20))
    w = draw(st.integers(max(1, k - pads[2] - pads[3]), 20))
    return (draw(st.integers(2, 12)), draw(st.integers(1, 20)), h, w, draw(st.integers(1, 20)), k, pads,
            draw(st.sampled_from([None, "relu", "tanh"])), draw(st.booleans()), draw(st.booleans()),
            draw(st.integers(0, 2**31)))


def _force(monkeypatch, device, fused, items_per_unit=1):
    if not device.is_cpu:
        pytest.skip("the fused form runs on CPU devices only")
    monkeypatch.setattr(winograd, "_FUSED_SCRATCH_BYTES", 1 << 30 if fused else 0)
    monkeypatch.setattr(winograd, "_FUSED_ITEMS_PER_UNIT", items_per_unit)


@settings(deadline=None, max_examples=30)
@given(case=cases())
def test_fused_and_pipelined_forms_match_the_oracle(device, case):
    """Forward (bias and activation fused) and input gradient, each form forced, one work item
    per compute unit so that items loop over their blocks."""
    n, c, h, w, o, k, pads, activation, bias, fused, seed = case
    with pytest.MonkeyPatch.context() as monkeypatch:
        _force(monkeypatch, device, fused)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, c, h, w))
        wt = rng.standard_normal((o, c, k, k)) / k
        b = rng.standard_normal(o) if bias else None
        names = []
        with launched_kernels(names):
            y = ops.conv2d_forward(device, device.to_device(x.astype(np.float32)),
                                   device.to_device(wt.astype(np.float32)),
                                   None if b is None else device.to_device(b.astype(np.float32)), (1, 1), pads,
                                   activation=activation, algorithm="winograd").get()
        oh, ow = y.shape[2:]
        tiles = n * -(-oh // 4) * -(-ow // 4)
        block = 2 * ops.vector_limits(device)[0]        # two vectors of tiles
        blocks_for_every_unit = -(-tiles // block) >= device.cl_device.max_compute_units
        assert ("winograd_fused" in names) == (fused and blocks_for_every_unit), (names, tiles)
        pre = assert_forward_matches(y, x, wt, b, pads, activation, f"forward {case}")

        gy = rng.standard_normal(pre.shape)
        gx = winograd_backward(device, x, wt, gy, pads, bias)[0]
        gx_ref = oracle.conv2d_backward(x, wt, gy, (1, 1), pads)[0]
        abs_gx = oracle.conv2d_backward(np.abs(x), np.abs(wt), np.abs(gy), (1, 1), pads)[0]
        assert_close(gx.get(), gx_ref, _bound(abs_gx), 0.0, f"input gradient {case}")


def test_conv_sweep_layer_runs_in_one_launch_after_the_weight_transform(device):
    """The benchmark's 32x64x16x16 -> 64 3x3 layer: winograd_weights, then winograd_fused
    alone (16 blocks of 32 tiles, or 32 of 16, over at most 4 items per compute unit); the
    same with the weights kept (a frozen model's) is the one launch."""
    if not device.is_cpu:
        pytest.skip("the fused form runs on CPU devices only")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 64, 16, 16)).astype(np.float32)
    wt = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    args = (device, device.to_device(x), device.to_device(wt), device.to_device(b), (1, 1), (1, 1, 1, 1))
    names = []
    with launched_kernels(names):
        y = ops.conv2d_forward(*args, activation="relu")
    assert names == ["winograd_weights", "winograd_fused"]
    device.frozen_weights = {}
    try:
        ops.conv2d_forward(*args, activation="relu")
        names.clear()
        with launched_kernels(names):
            kept = ops.conv2d_forward(*args, activation="relu")
    finally:
        device.frozen_weights = None
    assert names == ["winograd_fused"]
    ref = np.maximum(oracle.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64),
                                           (1, 1), (1, 1, 1, 1)), 0.0)
    bound = _bound(oracle.conv2d_forward(np.abs(x).astype(np.float64), np.abs(wt).astype(np.float64),
                                         np.abs(b).astype(np.float64), (1, 1), (1, 1, 1, 1)))
    assert_close(y.get(), ref, bound, 0.0, "fused forward")
    np.testing.assert_array_equal(kept.get(), y.get())


class _Device:
    def __init__(self, is_cpu=True, units=2):
        self.is_cpu = is_cpu
        self.cl_device = type("D", (), {"max_compute_units": units})()


def test_fuses_where_a_block_fits_the_scratch_and_every_unit_gets_one():
    cpu = _Device()
    assert winograd.fuses(cpu, 6, 64, 64, 32, 16)           # 3x3, 64 -> 64: 576 KiB a block
    assert winograd.fuses(cpu, 8, 64, 64, 32, 16)           # 5x5, 64 -> 64: 1 MiB
    assert not winograd.fuses(cpu, 6, 128, 128, 32, 16)     # 1.1 MiB
    assert winograd.fuses(cpu, 6, 128, 128, 16, 16)         # float8 lanes: blocks of 16 tiles
    assert not winograd.fuses(cpu, 6, 64, 64, 32, 1)        # one block for two compute units
    assert not winograd.fuses(_Device(is_cpu=False), 6, 64, 64, 32, 16)
