"""Eval-mode fusion of a 2x2 stride-2 pooling into the convolution before it
(conv2d_forward(pool=...); fused into conv2d_rows' kernel where it pools the shape, a pooling
pass after the convolution elsewhere) against the float64 oracle: conv, activation, then the
oracle's pooling, over random shapes, activations, both pools and both vector widths; and the
model level: a Sequential's eval forward equals its unfused forward, a backward pass in eval
mode still gives the unfused gradients, and intermediate_outputs keeps full-size maps."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import clcnn
from clcnn import layers as L
from clcnn.ops import conv2d, conv2d_rows as rows
from clcnn.oracle import activation as o_act, conv2d as o_conv, pool as o_pool
from tests.helpers import assert_close
from tests.test_conv2d import _bound

ACTIVATIONS = [None, "relu", "tanh", "sigmoid", "leaky_relu", "relu6"]


def _oracle(x, w, b, pads, activation, pool):
    """conv, activation and pooling in float64, and the bound of test_conv2d (each pooled
    value is an average or a maximum of convolution outputs, so it keeps their bound)."""
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64)
    y = o_conv.conv2d_forward(x64, w64, b64, (1, 1), pads)
    if activation:
        y = o_act.activation_forward(activation, y, 0.01)
    pooled = (o_pool.avgpool2d_forward(y, (2, 2), (2, 2), (0, 0, 0, 0)) if pool == "avg"
              else o_pool.maxpool2d_forward(y, (2, 2), (2, 2), (0, 0, 0, 0))[0])
    abs_y = o_conv.conv2d_forward(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64), (1, 1), pads)
    return pooled, _bound(abs_y)


@st.composite
def cases(draw):
    """Few output channels and rows of 8+ pixels (conv2d_rows pools them), more channels or
    narrow rows (the direct kernel pools them), odd sizes too (the pooling pass after the
    convolution), kernels 1x1..5x5, padding up to k-1; conv2d_rows' row blocks per work item
    drawn or its rule's."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pads = tuple(draw(st.integers(0, k - 1)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, kh + 1 - pads[0] - pads[1]), kh + 12))
    w = draw(st.integers(max(1, kw + 1 - pads[2] - pads[3]), kw + 24))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.sampled_from([1, 3, 6, 8, 12, 16, 20, 33]))
    return ((n, c, h, w), (o, c, kh, kw), pads, draw(st.booleans()), draw(st.sampled_from(ACTIVATIONS)),
            draw(st.sampled_from(["avg", "max"])), draw(st.integers(0, 2 ** 31)),
            draw(st.sampled_from([None, 1, 2, 3, 64])))


@pytest.fixture(params=[8, 16])
def width(request, device):
    if request.param == 16 and conv2d.vector_limits(device)[0] != 16:
        pytest.skip("this device does not take float16 (pip's PoCL aborts on AVX2 float16 FMAs)")
    saved = rows._FORCE_VW
    rows._FORCE_VW = request.param
    yield request.param
    rows._FORCE_VW = saved


# The fixture holds the width for all examples, as intended; each shape compiles kernels.
@settings(max_examples=max(6, settings.default.max_examples // 2),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_pooled_convolution_matches_oracle(device, width, case, monkeypatch):
    x_shape, w_shape, pads, bias, activation, pool, seed, rows_per_item = case
    monkeypatch.setattr(rows, "_FORCE_RL", rows_per_item)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    y = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w),
                              None if b is None else device.to_device(b), (1, 1), pads,
                              activation=activation, pool=pool)
    expected, bound = _oracle(x, w, b, pads, activation, pool)
    assert_close(y.get(), expected, bound, 0.0, f"conv + {activation} + {pool} pool")
    # keep_full (a training step): the full-size map beside the same pooled one
    full, pooled = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w),
                                         None if b is None else device.to_device(b), (1, 1), pads,
                                         activation=activation, pool=pool, keep_full=True)
    assert_close(pooled.get(), expected, bound, 0.0, f"conv + {activation} + {pool} pool, full map kept")
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    pre = o_conv.conv2d_forward(x64, w64, None if b is None else b.astype(np.float64), (1, 1), pads)
    assert_close(full.get(), o_act.activation_forward(activation, pre, 0.01) if activation else pre, bound, 0.0,
                 f"conv + {activation}, the full map kept beside the {pool} pool")


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_lenet_conv1_pools_in_its_kernel(device, pool):
    """Fused where a work item holds two rows of its 6 channels (12 accumulators: 32 vector
    registers, AVX-512); with 16 registers (AVX2, CLCNN_VECTOR_WIDTH=8) the pooling runs after
    the kernel, with the same result."""
    x_shape, w_shape = (64, 1, 32, 32), (6, 1, 5, 5)
    fused = rows.pools(device, x_shape, w_shape, (0, 0, 0, 0), pool)
    assert fused == (rows._accumulators(device) >= 2 * w_shape[0])
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.2).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    args = (device, device.to_device(x), device.to_device(w), device.to_device(b), (1, 1), (0, 0, 0, 0))
    y = rows.forward(*args, "tanh", pool=pool) if fused else conv2d.conv2d_forward(*args, "tanh", pool=pool)
    expected, bound = _oracle(x, w, b, (0, 0, 0, 0), "tanh", pool)
    assert y.shape == (64, 6, 14, 14)
    assert_close(y.get(), expected, bound, 0.0, f"LeNet conv1 + tanh + {pool} pool")


@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("x_shape,w_shape,pads", [
    ((64, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)),      # LeNet-5's conv2: 10x10 -> 5x5
    ((3, 5, 12, 12), (40, 5, 3, 3), (1, 1, 1, 1)),       # three channel vectors, 12-pixel rows
    ((2, 3, 9, 8), (20, 3, 2, 2), (0, 0, 0, 1)),         # 8x8 from a right-padded input
])
def test_direct_kernel_pools(device, pool, x_shape, w_shape, pads):
    """The direct kernel's pooled forward, and with keep_full (a training step) the full map
    beside the pooled one."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    y = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w), device.to_device(b),
                              (1, 1), pads, activation="tanh", algorithm="direct", pool=pool)
    expected, bound = _oracle(x, w, b, pads, "tanh", pool)
    assert_close(y.get(), expected, bound, 0.0, f"direct conv + tanh + {pool} pool")
    full, pooled = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w), device.to_device(b),
                                         (1, 1), pads, activation="tanh", algorithm="direct", pool=pool,
                                         keep_full=True)
    assert_close(pooled.get(), expected, bound, 0.0, f"direct conv + tanh + {pool} pool, full map kept")
    pre = o_conv.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1), pads)
    assert_close(full.get(), np.tanh(pre), bound, 0.0, f"direct conv + tanh, the full map kept beside the {pool} pool")


@st.composite
def pair_cases(draw):
    """Shapes of even output size whose direct forward takes whole rows (conv2d.pairs)."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pads = tuple(draw(st.integers(0, k - 1)) for k in (kh, kh, kw, kw))
    oh, ow = 2 * draw(st.integers(1, 6)), 2 * draw(st.integers(1, 8))
    h, w = oh + kh - 1 - pads[0] - pads[1], ow + kw - 1 - pads[2] - pads[3]
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.sampled_from([1, 3, 6, 12, 16, 20, 33]))
    return ((n, c, max(h, 1), max(w, 1)), (o, c, kh, kw), pads, draw(st.booleans()),
            draw(st.sampled_from(ACTIVATIONS)), draw(st.sampled_from(["avg", "max"])), draw(st.integers(0, 2 ** 31)))


@settings(max_examples=max(8, settings.default.max_examples // 2), deadline=None)
@given(case=pair_cases())
def test_row_pairs_keep_the_full_map_and_pool_it(device, case):
    """conv2d_forward's row pairs (PAIR: a work item makes two whole rows, then pools them):
    the full-size map and its pooling against the float64 oracle (a training forward,
    keep_full), and the pooling alone (an eval-mode one)."""
    x_shape, w_shape, pads, bias, activation, pool, seed = case
    oh = x_shape[2] + pads[0] + pads[1] - w_shape[2] + 1
    ow = x_shape[3] + pads[2] + pads[3] - w_shape[3] + 1
    assume(oh == 2 * (oh // 2) and ow == 2 * (ow // 2) and oh >= 2 and ow >= 2)
    assume(conv2d.pairs(device, x_shape, w_shape, (1, 1), pads, oh, ow))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    full, pooled = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w),
                                         None if b is None else device.to_device(b), (1, 1), pads,
                                         activation=activation, algorithm="direct", pool=pool, keep_full=True)
    expected, bound = _oracle(x, w, b, pads, activation, pool)
    assert_close(pooled.get(), expected, bound, 0.0, f"row pairs: conv + {activation} + {pool} pool")
    pre = o_conv.conv2d_forward(x.astype(np.float64), w.astype(np.float64),
                                None if b is None else b.astype(np.float64), (1, 1), pads)
    assert_close(full.get(), o_act.activation_forward(activation, pre, 0.01) if activation else pre, bound, 0.0,
                 f"row pairs: conv + {activation}, the full map")
    alone = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w),
                                  None if b is None else device.to_device(b), (1, 1), pads,
                                  activation=activation, algorithm="direct", pool=pool)
    assert_close(alone.get(), expected, bound, 0.0, f"row pairs: conv + {activation} + {pool} pool, no full map")


def test_lenet_conv2_training_forward_pools_in_its_kernel(device, monkeypatch):
    """LeNet-5's conv2 in a training step (keep_full) and in eval mode runs as row pairs where
    the blocking takes whole 10-pixel rows (float16 lanes), with no pooling pass after it."""
    x_shape, w_shape = (64, 6, 14, 14), (16, 6, 5, 5)
    if not conv2d.pairs(device, x_shape, w_shape, (1, 1), (0, 0, 0, 0), 10, 10):
        assert conv2d.vector_limits(device)[0] == 8
        pytest.skip("float8 blocks take at most 8 pixels of a row: the pooling runs after the kernel")
    from clcnn.ops import pool as pool_ops

    def no_pass(*args, **kwargs):
        raise AssertionError("a pooling pass ran after the convolution")
    monkeypatch.setattr(pool_ops, "avgpool2d_forward", no_pass)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.2).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    full, pooled = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w), device.to_device(b),
                                         (1, 1), (0, 0, 0, 0), activation="tanh", pool="avg", keep_full=True)
    expected, bound = _oracle(x, w, b, (0, 0, 0, 0), "tanh", "avg")
    assert_close(pooled.get(), expected, bound, 0.0, "LeNet conv2 + tanh + avg pool, training")
    assert full.shape == (64, 16, 10, 10)
    alone = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w), device.to_device(b),
                                  (1, 1), (0, 0, 0, 0), activation="tanh", pool="avg")
    assert_close(alone.get(), expected, bound, 0.0, "LeNet conv2 + tanh + avg pool, eval")


def test_pool_blocking_covers_two_rows():
    for co, ow in [(16, 10), (40, 12), (6, 2), (120, 64)]:
        for limits in [(16, 32), (8, 16)]:
            vw, obv, pc = conv2d._pool_blocking(co, ow, *limits)
            assert pc % 2 == 0 and 2 <= pc <= ow and 2 * obv * pc <= (16 if vw == 16 else 8)


def test_pool_rules(device):
    assert not rows.pools(device, (1, 1, 9, 16), (4, 1, 2, 2), (0, 0, 0, 0), "avg")     # 8x15: odd width
    assert not rows.pools(device, (1, 1, 9, 16), (4, 1, 3, 3), (0, 0, 0, 0), "sum")
    with pytest.raises(ValueError, match="pool"):
        conv2d.conv2d_forward(device, device.zeros((1, 1, 8, 8)), device.zeros((2, 1, 3, 3)), None,
                              (1, 1), (0, 0, 0, 0), pool="median")


def _lenet_like(device, pool_layer, activation_layer):
    return clcnn.Sequential([L.Conv2D(1, 6, 5), activation_layer(), pool_layer(2),
                             L.Conv2D(6, 16, 5), activation_layer(), pool_layer(2),
                             L.Flatten(), L.Dense(16 * 5 * 5, 10)], device=device)


@pytest.mark.parametrize("pool_layer,activation_layer", [(L.AvgPool2D, L.Tanh), (L.MaxPool2D, L.ReLU)])
def test_model_eval_forward_and_backward_match_unfused(device, pool_layer, activation_layer):
    clcnn.seed(3)
    net = _lenet_like(device, pool_layer, activation_layer)
    net.eval()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 1, 32, 32)).astype(np.float32)
    fused = net.forward(x).get()
    assert any(step.pool is not None for step in net._plan()), "the eval plan must pool inside a conv"
    net._fuse_pools = False
    try:
        unfused = net.forward(x).get()
    finally:
        net._fuse_pools = True
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)
    # A backward pass after a fused eval forward runs the unfused forward again: the same
    # gradients as after an unfused one.
    gy = rng.standard_normal(fused.shape).astype(np.float32)
    net.forward(x)
    gx_fused = net.backward(device.to_device(gy)).get()
    gw_fused = net.layers[0].params["weight"].grad.get()
    net._fuse_pools = False
    try:
        net.forward(x)
        gx = net.backward(device.to_device(gy)).get()
        gw = net.layers[0].params["weight"].grad.get()
    finally:
        net._fuse_pools = True
    np.testing.assert_allclose(gx_fused, gx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gw_fused, gw, rtol=1e-5, atol=1e-6)


def test_training_plan_and_feature_maps_keep_full_size(device):
    net = _lenet_like(device, L.AvgPool2D, L.Tanh)
    assert all(step.pool is None for step in net._plan()), "training mode must not pool inside convs"
    maps = net.intermediate_outputs(np.zeros((2, 1, 32, 32), np.float32))
    first = next(iter(maps.values()))
    assert first.shape == (2, 6, 28, 28), "the first conv's map is reported before pooling"


@pytest.mark.parametrize("pool_layer,activation_layer,kept", [(L.AvgPool2D, L.Tanh, True),
                                                              (L.MaxPool2D, L.ReLU, False)])
def test_training_step_writes_the_pool_from_the_conv_and_matches_unfused(device, pool_layer, activation_layer,
                                                                           kept):
    """Train mode: a 2x2 AvgPool2D after a conv gets its output from the conv's step (which
    keeps the full-size map for the backward); MaxPool2D, whose backward needs its argmax,
    runs its own forward. Outputs and every gradient equal those of the unfused schedule."""
    clcnn.seed(5)
    net = _lenet_like(device, pool_layer, activation_layer)
    plan = net._plan()
    assert [step.keeps_pool is not None for step in plan].count(True) == (2 if kept else 0)
    assert [step.pooled for step in plan].count(True) == (2 if kept else 0)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 1, 32, 32)).astype(np.float32)
    gy = rng.standard_normal((5, 10)).astype(np.float32)
    results = []
    for fuse in (True, False):
        net._fuse_pools = fuse
        try:
            out = net.forward(x).get()
            gx = net.backward(device.to_device(gy)).get()
            results.append([out, gx] + [p.grad.get() for p in net.parameters()])
        finally:
            net._fuse_pools = True
    for fused, unfused in zip(*results):
        np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)
