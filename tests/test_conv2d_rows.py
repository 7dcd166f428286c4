"""conv2d_rows (lanes along output rows, for few output channels and stride 1) against the
float64 oracle with test_conv2d's bounds: forward with every activation, weight and bias
gradients, over random small odd shapes, padding and both vector widths (float16 only where
the device takes it), LeNet-5's conv1 exactly, NaN propagation, and supports()."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clcnn.errors import ShapeError
from clcnn.ops import conv2d, conv2d_rows as rows
from clcnn.oracle import conv2d as oracle
from tests.helpers import assert_close, outputs_in_reverse_item_order
from tests.test_conv2d import _bound

SLOPE = 0.1
ACTIVATIONS = {
    None: lambda v: v,
    "relu": lambda v: np.maximum(v, 0.0),
    "leaky_relu": lambda v: np.where(v > 0, v, SLOPE * v),
    "relu6": lambda v: np.clip(v, 0.0, 6.0),
    "tanh": np.tanh,
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
}


@pytest.fixture(params=[8, 16])
def width(request, device, monkeypatch):
    """The widest vector the kernels may take; rows narrower than it take 4, 2 or 1 lanes."""
    if request.param == 16 and conv2d.vector_limits(device)[0] != 16:
        pytest.skip("this device does not take float16 (pip's PoCL aborts on AVX2 float16 FMAs)")
    monkeypatch.setattr(rows, "_FORCE_VW", request.param)
    return request.param


@st.composite
def cases(draw, most_channels=8):
    """Batch 1-4, 1-4 input and 1-8 output channels (9-16 with most_channels=16), kernels
    1x1..7x7 (non-square too), padding 0..k per side, small odd images; a weight-gradient
    blocking (OBC, KHB, KWB, RPW) and the forward's row blocks per work item drawn or the
    rules' (more blocks than an image has: one item per column of blocks)."""
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    pads = tuple(draw(st.integers(0, k)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), kh + 12))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), kw + 40))
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    o = draw(st.integers(1, 8) if most_channels == 8 else st.integers(9, most_channels))
    divisors = [d for d in range(1, kh + 1) if kh % d == 0]
    block = draw(st.one_of(st.none(), st.tuples(st.integers(1, o), st.sampled_from(divisors),
                                                st.sampled_from([1, kw]), st.integers(1, 4))))
    return dict(x_shape=(n, c, h, w), w_shape=(o, c, kh, kw), pads=pads, bias=draw(st.booleans()),
                activation=draw(st.sampled_from(list(ACTIVATIONS))), block=block,
                rows_per_item=draw(st.sampled_from([None, 1, 2, 3, 64])), seed=draw(st.integers(0, 2 ** 31)))


def _check(device, x_shape, w_shape, pads, bias, activation, seed, block=None, rows_per_item=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    pre = oracle.conv2d_forward(x64, w64, b64, (1, 1), pads)
    abs_pre = oracle.conv2d_forward(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64),
                                    (1, 1), pads)
    d = device.to_device
    rows._FORCE_RL = rows_per_item
    try:
        y = rows.forward(device, d(x), d(w), None if b is None else d(b), (1, 1), pads, activation,
                         negative_slope=SLOPE)
    finally:
        rows._FORCE_RL = None
    # The activations are 1-Lipschitz, so the pre-activation bound carries over.
    assert_close(y.get(), ACTIVATIONS[activation](pre), _bound(abs_pre), 0.0,
                 f"forward ({activation}, {rows_per_item} row blocks per item)")

    gy = rng.standard_normal(pre.shape).astype(np.float32)
    rows._FORCE_WEIGHT_BLOCK = block
    try:
        gw, gb = rows.weight_grad(device, d(x), d(gy), w_shape, (1, 1), pads, has_bias=bias)
    finally:
        rows._FORCE_WEIGHT_BLOCK = None
    _, gw_ref, gb_ref = oracle.conv2d_backward(x64, w64, gy.astype(np.float64), (1, 1), pads)
    _, abs_gw, abs_gb = oracle.conv2d_backward(np.abs(x64), w64, np.abs(gy.astype(np.float64)),
                                               (1, 1), pads)
    assert_close(gw.get(), gw_ref, _bound(abs_gw), 0.0, f"weight gradient (block {block})")
    if bias:
        assert_close(gb.get(), gb_ref, _bound(abs_gb), 0.0, "bias gradient")
    else:
        assert gb is None


# The fixture sets the width once for all examples, as intended. Each width takes half the
# examples (each new shape costs PoCL ~1 s of compiling), so the two together run the usual
# count.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 3))
@given(case=cases())
def test_matches_oracle(device, width, case):
    _check(device, **case)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 4))
@given(case=cases(most_channels=16))
def test_nine_to_sixteen_channels_match_oracle(device, case):
    """With 32 vector registers (AVX-512) the kernels also take 9-16 output channels."""
    if rows._accumulators(device) < 16:
        pytest.skip("9-16 output channels need 16 accumulators (32 vector registers)")
    _check(device, **case)


@pytest.mark.parametrize("activation", ["tanh", None])
def test_lenet_conv1(device, width, activation):
    _check(device, (64, 1, 32, 32), (6, 1, 5, 5), (0, 0, 0, 0), True, activation, seed=5)


def test_row_and_channel_tails(device, width):
    """Rows one pixel longer than a vector block (the last block overlaps its neighbour) and
    channel blocks that do not divide the output channels (a last block past CO)."""
    for ow, block in ((width + 1, (3, 1, 1, 2)), (2 * width - 1, (5, 3, 1, 1)), (width + 1, (3, 3, 3, 2)),
                      (2 * width - 1, (2, 1, 3, 1))):
        _check(device, (2, 2, 5 + 2, ow + 2), (7, 2, 3, 3), (0, 0, 0, 0), True, "relu", ow, block)


def test_nan_propagates(device):
    """A NaN input pixel makes every output whose window holds it NaN, under every
    activation (ReLU(NaN) is NaN, as in PyTorch), and leaves the others finite."""
    x = np.ones((1, 1, 12, 20), np.float32)
    x[0, 0, 6, 9] = np.nan
    w = np.full((3, 1, 3, 3), -1.0, np.float32)
    expected = np.zeros((10, 18), bool)
    expected[4:7, 7:10] = True
    for activation in ACTIVATIONS:
        y = rows.forward(device, device.to_device(x), device.to_device(w), None, (1, 1),
                         (0, 0, 0, 0), activation).get()
        for o in range(3):
            assert (np.isnan(y[0, o]) == expected).all(), activation


def test_supports():
    lenet = ((64, 1, 32, 32), (6, 1, 5, 5), (1, 1), (0, 0, 0, 0))
    assert rows.supports(*lenet) and rows.supports(*lenet, pass_="weight")
    assert rows.supports((8, 3, 9, 9), (8, 3, 3, 3), (1, 1), (1, 1, 1, 1))
    x, w, s, p = lenet
    for pass_ in ("forward", "weight"):
        assert not rows.supports(x, w, (2, 2), p, pass_=pass_)                      # stride
        assert not rows.supports(x, w, (1, 2), p, pass_=pass_)
        assert not rows.supports(x, w, s, p, dilation=(2, 2), pass_=pass_)          # dilation
        assert not rows.supports((64, 4, 32, 32), (6, 2, 5, 5), s, p, groups=2, pass_=pass_)
        assert not rows.supports(x, (9, 1, 5, 5), s, p, pass_=pass_)                # channels past 8
        assert rows.supports(x, (16, 1, 5, 5), s, p, pass_=pass_, registers=32)     # ... with 32 registers
        assert not rows.supports(x, (17, 1, 5, 5), s, p, pass_=pass_, registers=32)
        assert not rows.supports((64, 1, 11, 11), w, s, p, pass_=pass_)             # rows of 7 pixels
    assert rows.supports((64, 1, 8, 8), w, s, (0, 0, 2, 2))                          # rows of 8 pixels
    assert rows.supports((64, 5, 32, 32), (6, 5, 5, 5), s, p)                       # 5 input channels:
    assert not rows.supports((64, 5, 32, 32), (6, 5, 5, 5), s, p, pass_="weight")   # forward only
    # 9-16 channels (32 registers): the forward only on rows of 16 pixels or more
    assert not rows.supports((64, 6, 14, 14), (16, 6, 5, 5), s, p, registers=32)    # LeNet's conv2
    assert rows.supports((64, 16, 32, 32), (16, 16, 3, 3), s, (1, 1, 1, 1), registers=32)
    with pytest.raises(ValueError, match="pass_"):
        rows.supports(*lenet, pass_="input")


def test_unhandled_shapes_return_none(device):
    d = device.to_device
    x = d(np.zeros((1, 2, 9, 9), np.float32))
    w = d(np.zeros((4, 2, 3, 3), np.float32))
    gy = d(np.zeros((1, 4, 4, 4), np.float32))
    assert rows.forward(device, x, w, None, (2, 2), (0, 0, 0, 0)) is None
    assert rows.weight_grad(device, x, gy, (4, 2, 3, 3), (2, 2), (0, 0, 0, 0)) is None
    many = d(np.zeros((17, 2, 3, 3), np.float32))
    assert rows.forward(device, x, many, None, (1, 1), (0, 0, 0, 0)) is None


def test_bad_input_is_refused(device):
    d = device.to_device
    x = d(np.zeros((1, 2, 9, 9), np.float32))
    w = d(np.zeros((4, 3, 3, 3), np.float32))
    with pytest.raises(ShapeError, match="input channels"):
        rows.forward(device, x, w, None, (1, 1), (0, 0, 0, 0))
    w = d(np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(ShapeError, match="bias"):
        rows.forward(device, x, w, d(np.zeros(3, np.float32)), (1, 1), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="activation"):
        rows.forward(device, x, w, None, (1, 1), (0, 0, 0, 0), "gelu")
    with pytest.raises(ShapeError, match="output gradient"):
        rows.weight_grad(device, x, d(np.zeros((1, 4, 6, 6), np.float32)), (4, 2, 3, 3), (1, 1),
                         (0, 0, 0, 0))


def test_conv2d_dispatches_lenet_conv1_here_on_cpus(device, monkeypatch):
    """conv2d_forward / conv2d_backward with no algorithm forced run LeNet-5's conv1 through
    conv2d_rows on CPU devices (the forward and the weight gradient), with the oracle's results."""
    if not device.is_cpu:
        pytest.skip("conv2d_rows is dispatched on CPU devices only")
    from clcnn.ops import conv2d as conv
    calls = []
    for name in ("forward", "weight_grad"):
        real = getattr(rows, name)
        monkeypatch.setattr(rows, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = conv.conv2d_forward(device, device.to_device(x), device.to_device(w), device.to_device(b), (1, 1), (0, 0, 0, 0))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    _, gw, gb = conv.conv2d_backward(device, device.to_device(x), device.to_device(w), device.to_device(gy),
                                     (1, 1), (0, 0, 0, 0), need_input_grad=False)
    assert calls == ["forward", "weight_grad"]
    x64, w64, gy64 = x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64)
    np.testing.assert_allclose(y.get(), oracle.conv2d_forward(x64, w64, b.astype(np.float64), (1, 1), (0, 0, 0, 0)),
                               rtol=1e-4, atol=1e-4)
    _, gw_ref, gb_ref = oracle.conv2d_backward(x64, w64, gy64, (1, 1), (0, 0, 0, 0))
    np.testing.assert_allclose(gw.get(), gw_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(gb.get(), gb_ref, rtol=1e-4, atol=1e-3)


def test_conv2d_input_gradient_of_lenet_conv2_runs_by_rows(device, monkeypatch):
    """The gather-form input gradient of a layer with few input channels (LeNet-5's conv2:
    6 -> 16, 5x5) runs conv2d_rows' forward kernel over gy with the flipped kernel, on CPUs,
    where the sums form (test_conv2d_sums.py; LeNet-5's conv2 on float16 devices) does not
    take it; padded layers too; the oracle's gradient either way. Its build leaves the weight
    gradient kernel out (no weight gradient runs on gy's shape)."""
    if not device.is_cpu:
        pytest.skip("conv2d_rows is dispatched on CPU devices only")
    from clcnn.ops import conv2d as conv
    monkeypatch.setattr(conv, "_sums_pay", lambda *a: False)
    calls = []
    real = rows.forward
    monkeypatch.setattr(rows, "forward", lambda *a, **k: calls.append((a[2].shape, k.get("alone"))) or real(*a, **k))
    rng = np.random.default_rng(4)
    for x_shape, w_shape, pads in [((3, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)),
                                   ((2, 3, 12, 11), (5, 3, 3, 3), (1, 1, 1, 0))]:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        gy = rng.standard_normal(oracle.conv2d_forward(x64, w64, None, (1, 1), pads).shape)
        calls.clear()
        gx, _, _ = conv.conv2d_backward(device, device.to_device(x), device.to_device(w),
                                        device.to_device(gy.astype(np.float32)), (1, 1), pads)
        assert calls == [((w_shape[1], w_shape[0], w_shape[2], w_shape[3]), True)]    # the flipped kernel
        alone = [p for (name, options), p in device._programs.items()
                 if name == "conv2d_rows.cl" and "-DWITH_WEIGHT_GRAD=0" in options and f"-DN={x_shape[0]}" in options]
        assert alone and all("conv2d_rows_backward_weight" not in p.kernel_names.split(";") for p in alone)
        assert all("conv2d_rows_forward" in p.kernel_names.split(";") for p in alone)
        gx_ref, _, _ = oracle.conv2d_backward(x64, w64, gy, (1, 1), pads)
        abs_gx, _, _ = oracle.conv2d_backward(np.abs(x64), np.abs(w64), np.abs(gy), (1, 1), pads)
        assert_close(gx.get(), gx_ref, _bound(abs_gx), 0.0, "input gradient")


# Padding inside the forward kernel: blocks whose loads touch the left or right padding mask
# the lanes outside the row (lane by lane where the item's loads could leave the buffer: the
# first and last images of small inputs), row blocks touching the top or bottom mask whole rows.
EDGE_CASES = [
    # (x_shape, w_shape, pads): rows narrower than a vector
    ((3, 2, 6, 3), (4, 2, 3, 3), (1, 1, 2, 2)),
    ((4, 1, 5, 5), (3, 1, 5, 5), (4, 4, 4, 4)),
    # padding wider than the kernel's reach on one side only: output columns / rows of padding
    ((3, 2, 7, 20), (5, 2, 3, 3), (0, 0, 6, 0)),
    ((3, 2, 7, 20), (5, 2, 3, 3), (0, 0, 0, 7)),
    ((3, 3, 6, 19), (4, 3, 3, 2), (5, 0, 1, 0)),
    ((3, 3, 6, 19), (4, 3, 2, 3), (0, 6, 0, 1)),
    # 1-pixel images
    ((5, 2, 1, 1), (3, 2, 3, 3), (2, 2, 2, 2)),
    ((4, 1, 1, 1), (6, 1, 1, 1), (0, 0, 9, 3)),
    ((1, 3, 1, 1), (2, 3, 5, 5), (4, 4, 4, 4)),
]


@pytest.mark.parametrize("x_shape, w_shape, pads", [
    ((2, 3, 9, 16), (5, 3, 5, 5), (0, 0, 0, 0)),       # 12-pixel rows, no padding
    ((3, 16, 10, 10), (6, 16, 5, 5), (4, 4, 4, 4)),    # LeNet-5 conv2's input gradient (14)
    ((1, 2, 4, 13), (8, 2, 3, 3), (1, 1, 1, 1)),       # 13: the last loads reach the buffer's end
    ((2, 1, 3, 15), (3, 1, 1, 1), (0, 0, 0, 0)),       # 15, a 1x1 kernel
])
def test_rows_of_12_to_15_pixels_take_one_wide_vector(device, x_shape, w_shape, pads):
    """Float16 lanes over rows of 12-15 pixels (the forward computes lanes past the row and
    stores only the row)."""
    if conv2d.vector_limits(device)[0] != 16:
        pytest.skip("this device does not take float16")
    ow = x_shape[3] + pads[2] + pads[3] - w_shape[3] + 1
    assert 12 <= ow < 16 and rows._vector_width(ow, device, wide=True) == 16
    _check(device, x_shape, w_shape, pads, True, "tanh", seed=ow)


@pytest.mark.parametrize("x_shape, w_shape, pads", EDGE_CASES)
def test_edge_blocks_match_oracle(device, width, x_shape, w_shape, pads):
    _check(device, x_shape, w_shape, pads, True, "leaky_relu", seed=sum(x_shape) + sum(pads))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
          max_examples=max(4, settings.default.max_examples // 4))
@given(case=cases(), wide=st.booleans())
def test_padding_in_kernel_equals_padded_copy(device, case, wide, monkeypatch):
    """The kernel's own padding adds the padded input's terms, less the zero products of rows
    in the padding (blocks touching the top or bottom sum by rows): its output equals the
    kernel's run on a zero-padded copy within twice the oracle's bound (the two sum in
    different orders there), with NaNs at the very same places."""
    if wide and conv2d.vector_limits(device)[0] == 16:
        monkeypatch.setattr(rows, "_FORCE_VW", 16)
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"]).astype(np.float32)
    x.reshape(-1)[rng.integers(0, x.size, 2)] = np.nan
    w = rng.standard_normal(case["w_shape"]).astype(np.float32)
    b = rng.standard_normal(case["w_shape"][0]).astype(np.float32)
    out = {}
    for in_kernel in (False, True):
        monkeypatch.setattr(rows, "_FORCE_PAD_IN_KERNEL", in_kernel)
        out[in_kernel] = rows.forward(device, device.to_device(x), device.to_device(w), device.to_device(b),
                                      (1, 1), case["pads"], case["activation"], SLOPE).get()
    nan = np.isnan(out[False])
    np.testing.assert_array_equal(np.isnan(out[True]), nan)
    abs_pre = oracle.conv2d_forward(np.abs(np.nan_to_num(x)).astype(np.float64), np.abs(w).astype(np.float64),
                                    np.abs(b).astype(np.float64), (1, 1), case["pads"])
    assert_close(np.where(nan, 0.0, out[True]), np.where(nan, 0.0, out[False]), 2 * _bound(abs_pre), 0.0,
                 "padding in the kernel against the padded copy")


def test_nan_at_the_corner_propagates_through_padding(device):
    """NaNs at the input's corners reach exactly the outputs whose (padded) windows hold them."""
    x = np.ones((3, 1, 4, 19), np.float32)
    x[1, 0, 0, 0] = x[1, 0, 3, 18] = np.nan
    w = np.full((2, 1, 3, 3), -1.0, np.float32)
    y = rows.forward(device, device.to_device(x), device.to_device(w), None, (1, 1), (2, 2, 2, 2),
                     "relu").get()
    expected = np.zeros((3, 2, 6, 21), bool)
    expected[1, :, 0:3, 0:3] = True
    expected[1, :, 3:6, 18:21] = True
    assert (np.isnan(y) == expected).all()


@pytest.mark.parametrize("x_shape, w_shape, pads, pool", [
    ((2, 4, 8, 8), (4, 4, 3, 3), (2, 2, 2, 2), None),          # row and column blocks shifted back
    ((2, 16, 10, 10), (6, 16, 5, 5), (4, 4, 4, 4), None),      # LeNet-5 conv2's input gradient
    ((2, 1, 28, 28), (6, 1, 5, 5), (2, 2, 2, 2), "avg"),       # LeNet-5 conv1 (columns shifted)
    ((3, 2, 13, 21), (5, 2, 3, 3), (1, 2, 0, 1), None),
])
def test_forward_does_not_depend_on_the_order_of_work_items(device, width, x_shape, w_shape, pads, pool):
    """Blocks shifted back to end at a row's or an image's end overlap their neighbours: the
    result must not depend on which of them runs last (on a loaded machine PoCL's threads take
    them in any order; a difference in the last bit broke replayed steps' bit-for-bit match).
    Each work item is launched alone, last to first, over the output of one whole launch: the
    lowest-numbered block covering a pixel then writes it last, where one launch's order
    usually lets the highest; the two outputs must be identical."""
    if pool is not None and not rows.pools(device, x_shape, w_shape, pads, pool):
        pytest.skip(f"{w_shape[0]} channels' pair of pooled rows needs more accumulators than this "
                    f"device's vector registers hold (AVX2: 8)")
    rng = np.random.default_rng(sum(x_shape))
    x = device.to_device(rng.standard_normal(x_shape).astype(np.float32))
    w = device.to_device(rng.standard_normal(w_shape).astype(np.float32))
    once, reversed_ = outputs_in_reverse_item_order(
        device, lambda: rows.forward(device, x, w, None, (1, 1), pads, "tanh", pool=pool))
    np.testing.assert_array_equal(reversed_[0], once[0])
