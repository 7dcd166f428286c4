"""The operators of imported (ONNX) models: broadcasting add/sub/mul/div, PReLU, Clip,
Transpose, Reshape, Pad, LRN, Softmax/LogSoftmax along an axis. Kernels against the NumPy
oracle over random shapes, the oracle's backward against float64 central differences, the
layers against torch, and the layers in a Model against clcnn.reference."""
import numpy as np
import pytest
try:
    import torch
except ImportError:     # the comparisons with PyTorch skip; the oracle checks still run
    torch = None
from hypothesis import given, strategies as st

import clcnn
from clcnn import layers as L
from clcnn import opspec, reference
from clcnn.bench import torch_model
from clcnn.errors import ShapeError
from clcnn.ops import elementwise as k_ew
from clcnn.ops import layout as k_layout
from clcnn.ops import lrn as k_lrn
from clcnn.ops import softmax as k_sm
from clcnn.oracle import elementwise as o_ew
from clcnn.oracle import layout as o_layout
from clcnn.oracle import lrn as o_lrn
from clcnn.oracle import softmax as o_sm
from tests.helpers import assert_close, numeric_grad, op_calls_of_model_cases, record_op_calls

seeds = st.integers(0, 2 ** 31)
# Elementwise results: a few float32 roundings each. Gradients summed over broadcast axes: a
# compensated float32 sum, ~1e-6 relative to the sum of |terms|, so atol scales with the terms.
RTOL = 1e-5

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _f32(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _d(device, a):
    return device.to_device(a)


@st.composite
def broadcast_pairs(draw):
    """Two shapes that broadcast: ranks 0..5 each, every axis equal or 1 on one side."""
    rank = draw(st.integers(1, 5))
    out = draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank))
    shapes = []
    for _ in range(2):
        keep = draw(st.integers(0, rank))
        shapes.append(tuple(s if draw(st.booleans()) else 1 for s in out[rank - keep:]) or (1,))
    return shapes


# -- broadcasting binary ops ----------------------------------------------------------------
@given(pair=broadcast_pairs(), op=st.sampled_from(["add", "sub", "mul", "div"]), seed=seeds)
def test_binary_matches_oracle_forward_and_backward(device, pair, op, seed):
    rng = np.random.default_rng(seed)
    a = _f32(rng, pair[0])
    b = _f32(rng, pair[1])
    if op == "div":
        b = (np.sign(b) + (b == 0)) * (0.5 + np.abs(b))
    y = k_ew.binary_forward(device, op, _d(device, a), _d(device, b))
    want = o_ew.binary_forward(op, a.astype(np.float64), b.astype(np.float64))
    assert y.shape == np.broadcast_shapes(a.shape, b.shape)
    assert_close(y.get(), want, 0, 2 ** -23, f"{op} {a.shape} {b.shape}")    # one rounding

    gy = _f32(rng, want.shape)
    ga, gb = k_ew.binary_backward(device, op, _d(device, a), _d(device, b), _d(device, gy), y)
    oa, ob = o_ew.binary_backward(op, a.astype(np.float64), b.astype(np.float64), gy.astype(np.float64))
    # The bound of a float32 sum of the terms |gy * dy/da|: ~ 4 roundings per term.
    terms = float(np.abs(gy).sum() * (1 + np.abs(a).max()) * (1 + 1 / np.abs(b).min()) ** 2)
    assert_close(ga.get(), oa, 1e-6 * terms, RTOL, f"{op} grad a")
    assert_close(gb.get(), ob, 1e-6 * terms, RTOL, f"{op} grad b")


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_oracle_backward_matches_finite_differences(op):
    rng = np.random.default_rng(1)
    for sa, sb in (((2, 3, 4), (3, 1)), ((1, 4), (3, 1)), ((5,), (2, 1, 5))):
        a, b = rng.standard_normal(sa), rng.standard_normal(sb) + 3.0
        gy = rng.standard_normal(np.broadcast_shapes(sa, sb))
        ga, gb = o_ew.binary_backward(op, a, b, gy)
        assert_close(ga, numeric_grad(lambda v: np.sum(o_ew.binary_forward(op, v, b) * gy), a), 1e-6, 1e-6, "ga")
        assert_close(gb, numeric_grad(lambda v: np.sum(o_ew.binary_forward(op, a, v) * gy), b), 1e-6, 1e-6, "gb")


@given(shape=st.lists(st.integers(0, 70), min_size=1, max_size=4), value=st.floats(-1e6, 1e6, width=32))
def test_fill_sets_every_element_and_nothing_else(device, shape, value):
    """elementwise.fill (the zero fill a recorded step can replay): every element, whatever the
    size against its fixed work-group of 64, and no write past the array."""
    shape = tuple(shape)
    size = int(np.prod(shape))
    guard = device.to_device(np.full(size + 70, 7.0, np.float32))
    array = guard[:size].reshape(shape) if size else device.empty(shape)
    if size:     # fill takes offset-0 arrays: fill the front of the guarded buffer
        k_ew.fill(device, array, value)
        got = guard.get()
        np.testing.assert_array_equal(got[:size], np.float32(value))
        np.testing.assert_array_equal(got[size:], 7.0)
    else:
        assert k_ew.fill(device, array, value) is array


def test_clip_keeps_denormal_bounds_and_values(device):
    """elementwise.cl keeps denormals (device.EXACT_DENORMAL_FILES): Clip selects by comparison,
    and with flushing a denormal bound came out as 0 where NumPy and torch keep it."""
    tiny = np.float32(1.401298464324817e-45)
    x = np.array([0.5, -3.0, tiny, -tiny, 0.0], np.float32)
    for lo, hi in [(None, tiny), (-tiny, None), (np.float32(-1e-40), np.float32(1e-40))]:
        got = k_ew.clip_forward(device, _d(device, x), lo, hi).get()
        np.testing.assert_array_equal(got, o_ew.clip_forward(x, lo, hi).astype(np.float32))


def test_sum_to_shape_large_scalar_sum_is_accurate(device):
    # One work item adds up a whole million-element tensor (a scalar operand's gradient): the
    # compensated sum keeps it within a few float32 roundings of the exact sum.
    rng = np.random.default_rng(2)
    g = _f32(rng, (16, 250, 250)) + 1.0
    got = k_ew.sum_to_shape(device, _d(device, g), (1,)).get()
    want = g.astype(np.float64).sum()
    assert abs(got[0] - want) <= 4 * 2 ** -24 * np.abs(g).sum()


def test_binary_propagates_nan_and_divides_by_zero_as_ieee(device):
    a = np.array([[np.nan, 1.0, -1.0, 0.0, 2.0]], np.float32)
    b = np.array([[1.0], [0.0]], np.float32)
    for op in ("add", "mul", "div"):
        got = k_ew.binary_forward(device, op, _d(device, a), _d(device, b)).get()
        np.testing.assert_array_equal(got, o_ew.binary_forward(op, a, b))   # NaNs compare equal
    got = k_ew.binary_forward(device, "div", _d(device, a), _d(device, b)).get()
    np.testing.assert_array_equal(got[1], [np.nan, np.inf, -np.inf, np.nan, np.inf])


@needs_torch
def test_binary_layers_match_torch_with_constants(device):
    rng = np.random.default_rng(3)
    x = _f32(rng, (3, 4, 5, 6))
    other = _f32(rng, (3, 4, 1, 6))
    scale = _f32(rng, (4, 1, 1)) + 2.0
    inp, inp2 = L.Input((4, 5, 6)), L.Input((4, 1, 6))
    t = L.Mul(constant=scale, name="scale")(inp)
    t = L.Sub(constant=0.5, constant_first=True, name="rsub")(t)
    t = L.Div()([t, L.BroadcastAdd(constant=np.full((1, 4, 1, 1), 3.0))(L.Mul()([inp2, inp2]))])
    t = L.Div(constant=_f32(rng, (6,)) + 4.0, constant_first=True)(L.BroadcastAdd(constant=5.0)(t))
    out = L.Sub()([t, inp2])
    model = clcnn.Model([inp, inp2], out, device=device)
    state = model.state_dict()
    assert len(state) == 5 and all(k.endswith(".constant") for k in state)
    np.testing.assert_array_equal(state["scale.constant"], scale)
    assert not model.parameters()            # constants are buffers, not trained
    _against_torch_and_reference(model, [x, other], rng)


# -- PReLU and Clip --------------------------------------------------------------------------
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4).map(tuple), shared=st.booleans(), seed=seeds)
def test_prelu_matches_oracle(device, shape, shared, seed):
    rng = np.random.default_rng(seed)
    x = _f32(rng, (2,) + shape)
    w = _f32(rng, (1 if shared else shape[0],), 0.5)
    gy = _f32(rng, x.shape)
    y = k_ew.prelu_forward(device, _d(device, x), _d(device, w)).get()
    np.testing.assert_array_equal(y, o_ew.prelu_forward(x, w).astype(np.float32))     # one product
    gx, gw = k_ew.prelu_backward(device, _d(device, x), _d(device, w), _d(device, gy))
    ogx, ogw = o_ew.prelu_backward(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64))
    assert_close(gx.get(), ogx, 0, 2 ** -23)
    assert_close(gw.get(), ogw, 1e-6 * np.abs(x * gy).sum(), RTOL, "slope gradient")


def test_prelu_and_clip_oracle_backward_match_finite_differences():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 2))
    x[np.abs(x) < 0.05] = 0.3                  # away from the kinks
    w, gy = rng.standard_normal(3), rng.standard_normal(x.shape)
    gx, gw = o_ew.prelu_backward(x, w, gy)
    assert_close(gx, numeric_grad(lambda v: np.sum(o_ew.prelu_forward(v, w) * gy), x), 1e-6, 1e-6, "prelu gx")
    assert_close(gw, numeric_grad(lambda v: np.sum(o_ew.prelu_forward(x, v) * gy), w), 1e-6, 1e-6, "prelu gw")
    x[np.abs(np.abs(x) - 0.5) < 0.05] = 0.2
    assert_close(o_ew.clip_backward(x, gy, -0.5, 0.5),
                 numeric_grad(lambda v: np.sum(o_ew.clip_forward(v, -0.5, 0.5) * gy), x), 1e-6, 1e-6, "clip")


@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
       lo=st.one_of(st.none(), st.floats(-2, 0)), hi=st.one_of(st.none(), st.floats(0, 2)), seed=seeds)
def test_clip_matches_oracle(device, shape, lo, hi, seed):
    rng = np.random.default_rng(seed)
    x, gy = _f32(rng, shape), _f32(rng, shape)
    lo32 = None if lo is None else float(np.float32(lo))   # the kernel compares with float32 bounds
    hi32 = None if hi is None else float(np.float32(hi))
    y = k_ew.clip_forward(device, _d(device, x), lo, hi).get()
    np.testing.assert_array_equal(y, o_ew.clip_forward(x, lo32, hi32).astype(np.float32))
    gx = k_ew.clip_backward(device, _d(device, x), _d(device, gy), lo, hi).get()
    np.testing.assert_array_equal(gx, o_ew.clip_backward(x, gy, lo32, hi32))


@needs_torch
def test_prelu_and_clip_nan_as_torch(device):
    # NaN, infinities, and Clip's bounds themselves (torch passes the gradient at a bound).
    x = np.array([[np.nan, -1.0, 2.0, -np.inf, np.inf, 0.0, 7.0, -0.5, 6.0]], np.float32)
    gy = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]], np.float32)
    w = np.array([0.25], np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.prelu(tx, torch.tensor(w))
    ty.backward(torch.tensor(gy))
    np.testing.assert_array_equal(k_ew.prelu_forward(device, _d(device, x), _d(device, w)).get(), ty.detach().numpy())
    np.testing.assert_array_equal(k_ew.prelu_backward(device, _d(device, x), _d(device, w), _d(device, gy))[0].get(),
                                  tx.grad.numpy())
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.clamp(tx, -0.5, 6.0)
    ty.backward(torch.tensor(gy))
    np.testing.assert_array_equal(k_ew.clip_forward(device, _d(device, x), -0.5, 6.0).get(), ty.detach().numpy())
    np.testing.assert_array_equal(k_ew.clip_backward(device, _d(device, x), _d(device, gy), -0.5, 6.0).get(),
                                  tx.grad.numpy())


# -- Transpose, Reshape, Pad -------------------------------------------------------------------
@st.composite
def shape_and_perm(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=6)))
    return shape, tuple(draw(st.permutations(range(len(shape)))))


@given(sp=shape_and_perm(), seed=seeds)
def test_transpose_any_permutation_is_exact(device, sp, seed):
    shape, perm = sp
    x = _f32(np.random.default_rng(seed), shape)
    y = k_layout.transpose(device, _d(device, x), perm).get()
    np.testing.assert_array_equal(y, np.transpose(x, perm))
    np.testing.assert_array_equal(k_layout.transpose_backward(device, _d(device, y), perm).get(), x)


@given(shape=st.lists(st.integers(1, 7), min_size=2, max_size=4).map(tuple),
       pads=st.tuples(*[st.integers(-2, 3)] * 4), value=st.sampled_from([0.0, -1.5]), seed=seeds)
def test_pad_matches_oracle_and_torch(device, shape, pads, value, seed):
    top, bottom, left, right = pads
    if shape[-2] + top + bottom < 1 or shape[-1] + left + right < 1:
        with pytest.raises(ShapeError, match="crop all"):
            k_layout.pad_shape(shape, pads)
        return
    rng = np.random.default_rng(seed)
    x = _f32(rng, shape)
    y = k_layout.pad_forward(device, _d(device, x), pads, value).get()
    np.testing.assert_array_equal(y, o_layout.pad_forward(x, pads, value))
    if torch is not None and max(0, -top) + max(0, -bottom) < shape[-2] and max(0, -left) + max(0, -right) < shape[-1]:
        # torch crops first, so it refuses crops that eat into the padding; elsewhere it agrees
        want = torch.nn.functional.pad(torch.tensor(x), (left, right, top, bottom), value=value).numpy()
        np.testing.assert_array_equal(y, want)
    gy = _f32(rng, y.shape)
    gx = k_layout.pad_backward(device, _d(device, gy), shape, pads).get()
    np.testing.assert_array_equal(gx, o_layout.pad_backward(gy, shape, pads))


def test_pad_oracle_backward_matches_finite_differences():
    rng = np.random.default_rng(5)
    for pads in ((1, 2, 0, 1), (-1, 1, 2, -2)):
        x = rng.standard_normal((2, 3, 5, 4))
        gy = rng.standard_normal(o_layout.pad_forward(x, pads).shape)
        assert_close(o_layout.pad_backward(gy, x.shape, pads),
                     numeric_grad(lambda v: np.sum(o_layout.pad_forward(v, pads, 0.7) * gy), x), 1e-6, 1e-6)


@needs_torch
def test_channel_shuffle_as_reshape_transpose_reshape(device):
    # ShuffleNet's channel shuffle, as ONNX writes it: (N, g*k, H, W) -> (N, g, k, H, W) ->
    # (N, k, g, H, W) -> (N, g*k, H, W); against the same in torch, forward and backward.
    rng = np.random.default_rng(6)
    inp = L.Input((6, 3, 5))
    t = L.Reshape((2, 3, 0, -1))(L.Conv2D(6, 6, 1, name="conv")(inp))
    t = L.Transpose((0, 2, 1, 3, 4))(t)
    out = L.Flatten()(L.Reshape((-1, 3, 5))(t))
    model = clcnn.Model(inp, out, device=device)
    assert model.output_shapes((6, 3, 5))[-1] == (90,)
    _against_torch_and_reference(model, [_f32(rng, (4, 6, 3, 5))], rng)


# -- LRN ------------------------------------------------------------------------------------------
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple), size=st.integers(1, 7),
       alpha=st.sampled_from([1e-4, 0.1, 1.0]), beta=st.sampled_from([0.5, 0.75, 1.3]),
       k=st.sampled_from([1.0, 2.0, 0.5]), seed=seeds)
def test_lrn_matches_oracle(device, shape, size, alpha, beta, k, seed):
    rng = np.random.default_rng(seed)
    x, gy = _f32(rng, (2,) + shape, 2.0), _f32(rng, (2,) + shape)
    y, s = k_lrn.lrn_forward(device, _d(device, x), size, alpha, beta, k)
    oy, os_ = o_lrn.lrn_forward(x.astype(np.float64), size, alpha, beta, k)
    assert_close(s.get(), os_, 0, 1e-6, "scale")
    assert_close(y.get(), oy, 1e-6, 1e-5, "y")       # pow of a float32 scale: a few ulps
    gx = k_lrn.lrn_backward(device, _d(device, x), y, s, _d(device, gy), size, alpha, beta).get()
    assert_close(gx, o_lrn.lrn_backward(x.astype(np.float64), oy, os_, gy.astype(np.float64), size, alpha, beta),
                 1e-5 * max(1.0, np.abs(gy).max()), 1e-4, "gx")


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn_oracle_backward_matches_finite_differences(size):
    rng = np.random.default_rng(7)
    x, gy = rng.standard_normal((2, 6, 2, 3)), rng.standard_normal((2, 6, 2, 3))
    y, s = o_lrn.lrn_forward(x, size, 0.5, 0.75, 1.5)
    assert_close(o_lrn.lrn_backward(x, y, s, gy, size, 0.5, 0.75),
                 numeric_grad(lambda v: np.sum(o_lrn.lrn_forward(v, size, 0.5, 0.75, 1.5)[0] * gy), x), 1e-6, 1e-6)


def test_lrn_window_is_onnx_and_equals_torch_for_odd_sizes():
    # ONNX: channels max(0, c - floor((size-1)/2)) .. min(C-1, c + ceil((size-1)/2)), written
    # out here element by element; torch.nn.LocalResponseNorm agrees for an odd size.
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 7, 3, 2))
    for size in (2, 3, 4, 5):
        want = np.empty_like(x)
        for c in range(7):
            lo, hi = max(0, c - (size - 1) // 2), min(6, c + -(-(size - 1) // 2))
            want[:, c] = x[:, c] / (2.0 + 0.3 / size * (x[:, lo:hi + 1] ** 2).sum(axis=1)) ** 0.75
        assert_close(o_lrn.lrn_forward(x, size, 0.3, 0.75, 2.0)[0], want, 1e-12, 1e-12, f"size {size}")
        if size % 2 and torch is not None:
            t = torch.nn.LocalResponseNorm(size, 0.3, 0.75, 2.0)(torch.tensor(x)).numpy()
            assert_close(want, t, 1e-12, 1e-12, f"torch size {size}")


def test_lrn_against_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    x = np.random.default_rng(9).standard_normal((2, 8, 3, 3)).astype(np.float32)
    for size in (3, 5):      # onnxruntime refuses even sizes; their window is checked above
        node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.4, beta=0.6, bias=1.5)
        graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        assert_close(o_lrn.lrn_forward(x.astype(np.float64), size, 0.4, 0.6, 1.5)[0], want, 1e-6, 1e-5, f"size {size}")


# -- Softmax / LogSoftmax along an axis -----------------------------------------------------------
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4).map(tuple), data=st.data(),
       log=st.booleans(), scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_softmax_axis_matches_oracle(device, shape, data, log, scale, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    x, gy = _f32(rng, shape, scale), _f32(rng, shape)
    y = k_sm.softmax_forward(device, _d(device, x), axis, log)
    oy = o_sm.softmax_forward(x.astype(np.float64), axis, log)
    assert_close(y.get(), oy, 1e-6 * (scale if log else 1), 1e-5, "y")
    gx = k_sm.softmax_backward(device, _d(device, oy.astype(np.float32)), _d(device, gy), axis, log)
    assert_close(gx.get(), o_sm.softmax_backward(oy, gy.astype(np.float64), axis, log),
                 1e-6 * shape[axis], 1e-5, "gx")


@pytest.mark.parametrize("log", [False, True])
def test_softmax_oracle_backward_matches_finite_differences(log):
    rng = np.random.default_rng(10)
    x, gy = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3))
    for axis in (0, 1, 2):
        y = o_sm.softmax_forward(x, axis, log)
        assert_close(o_sm.softmax_backward(y, gy, axis, log),
                     numeric_grad(lambda v: np.sum(o_sm.softmax_forward(v, axis, log) * gy), x), 1e-6, 1e-6)


def test_softmax_keeps_its_nk_behaviour_and_checkpoints(device, tmp_path):
    layer = L.Softmax()
    assert layer.config() == {"axis": 1} and repr(layer) == "Softmax()"
    assert L.LAYER_TYPES["Softmax"] is L.Softmax and isinstance(layer, clcnn.layers.activations.Softmax)
    [case] = layer.op_cases([(10,)], 4)
    assert case.name == "softmax"                       # the (N, K) kernels, as before
    assert L.Softmax(axis=-1).op_cases([(10,)], 4)[0].name == "softmax"
    assert L.Softmax(axis=1).op_cases([(3, 4, 5)], 2)[0].name == "softmax axis=1"
    with pytest.raises(ShapeError, match="batch axis"):
        L.Softmax(axis=0).output_shape((10,))
    with pytest.raises(ShapeError, match="axis"):
        L.LogSoftmax(axis=3).output_shape((10,))


@needs_torch
def test_norm_and_activation_layers_in_a_model_match_torch_and_reference(device):
    rng = np.random.default_rng(11)
    inp = L.Input((6, 5, 4))
    t = L.LRN(3, alpha=0.5, beta=0.75, k=2.0, name="norm1")(inp)
    t = L.PReLU(6, name="act")(L.Conv2D(6, 6, 3, padding=1, name="conv")(t))
    t = L.Clip(-0.3, 0.6)(L.LRN(4, alpha=0.2, k=1.0)(t))
    t = L.Pad((1, 0, 2, -1), value=0.25)(t)
    t = L.PReLU(name="shared")(L.Softmax(axis=1)(t))
    t = L.LogSoftmax(axis=-1)(L.Transpose((2, 0, 1))(t))
    out = L.Dense(6 * 6 * 5, 4, name="fc")(L.Flatten()(t))
    model = clcnn.Model(inp, out, device=device)
    next(layer for layer in model.layers if layer.name == "act").params["weight"].set_value(rng.uniform(0.1, 0.4, 6))
    _against_torch_and_reference(model, [_f32(rng, (3, 6, 5, 4))], rng)


def _against_torch_and_reference(model, xs, rng):
    """Forward and backward of `model` on the device against clcnn.reference (float64) and
    against its torch mirror (float32): outputs, input gradients and parameter gradients."""
    state = reference.snapshot(model)
    net = torch_model(model)
    y = model(xs if len(xs) > 1 else xs[0])
    gy = _f32(rng, y.shape)
    gxs = model.backward(gy)
    gxs = gxs if isinstance(gxs, list) else [gxs]
    ref_y, run = reference.forward(model, [x.astype(np.float64) for x in xs] if len(xs) > 1 else
                                   xs[0].astype(np.float64), state)
    ref_gx, ref_grads = reference.backward(model, run, gy.astype(np.float64))
    ref_gx = ref_gx if isinstance(ref_gx, list) else [ref_gx]
    txs = [torch.tensor(x, requires_grad=True) for x in xs]
    ty = net(*txs)
    ty.backward(torch.tensor(gy))
    scale = max(1.0, float(np.abs(ref_y).max()))
    assert_close(y.get(), ref_y, 1e-5 * scale, 1e-4, "output vs reference")
    assert_close(y.get(), ty.detach().numpy(), 1e-5 * scale, 1e-4, "output vs torch")
    for i, (gx, want, tx) in enumerate(zip(gxs, ref_gx, txs)):
        g = max(1e-3, float(np.abs(want).max()))
        assert_close(gx.get(), want, 1e-4 * g, 1e-3, f"input gradient {i} vs reference")
        assert_close(gx.get(), tx.grad.numpy(), 1e-4 * g, 1e-3, f"input gradient {i} vs torch")
    named = dict(net.named_parameters())
    for p in model.parameters():
        g = max(1e-3, float(np.abs(ref_grads[p.name]).max()))
        assert_close(p.grad.get(), ref_grads[p.name], 1e-4 * g, 1e-3, f"grad {p.name} vs reference")
        assert_close(p.grad.get(), named[p.name].grad.numpy(), 1e-4 * g, 1e-3, f"grad {p.name} vs torch")


# -- descriptions, saving, errors -----------------------------------------------------------------
def test_op_descriptions_pass_check(device):
    from clcnn import check
    families = {"broadcast add/sub/mul/div", "prelu", "clip", "transpose", "pad", "lrn", "softmax axis"}
    found = [(name, make) for name, make in check.FAMILIES if name in families]
    assert {name for name, _ in found} == families
    rng = np.random.default_rng(12)
    for name, make in found:
        for case in make():
            result = opspec.check(case, device, rng)
            assert result["ok"], f"{name} {case.name}: {result}"


def test_save_and_load_keep_constants_and_settings(device, tmp_path):
    rng = np.random.default_rng(13)
    inp = L.Input((3, 4, 4))
    t = L.Sub(constant=_f32(rng, (3, 1, 4)), constant_first=True, name="c")(inp)
    t = L.Pad(1, value=2.0)(L.Clip(None, 0.5)(L.PReLU(3, init=0.1)(t)))
    t = L.Reshape((0, 18))(L.Transpose((0, 2, 1, 3))(L.LRN(2, 0.1, 0.5, 1.5)(t)))
    out = L.LogSoftmax(axis=2)(L.Div(constant=3.0)(t))
    model = clcnn.Model(inp, out, device=device)
    x = _f32(rng, (2, 3, 4, 4))
    before = model(x).get()
    model.save(tmp_path / "m.clcnn")
    again = clcnn.load(tmp_path / "m.clcnn", device=device)
    np.testing.assert_array_equal(again(x).get(), before)
    assert np.array_equal(again.state_dict()["c.constant"], model.state_dict()["c.constant"])
    assert [repr(a) for a in again.layers] == [repr(b) for b in model.layers]


def test_bad_settings_and_shapes_are_clear_errors(device):
    with pytest.raises(ValueError, match="permutation"):
        L.Transpose((0, 0, 1))
    with pytest.raises(ShapeError, match="batch axis"):
        L.Transpose((1, 0, 2, 3))(L.Input((3, 4, 5)))
    with pytest.raises(ShapeError, match="has 2 axes"):
        L.Transpose((1, 0))(L.Input((3, 4, 5)))
    with pytest.raises(ValueError, match="at most one -1"):
        L.Reshape((-1, -1))
    with pytest.raises(ShapeError, match="60 elements per sample"):
        L.Reshape((7, -1))(L.Input((3, 4, 5)))
    with pytest.raises(ShapeError, match="do not broadcast"):
        L.Mul()([L.Input((3, 4)), L.Input((2, 4))])
    with pytest.raises(ShapeError, match="one rank per sample"):
        L.Mul()([L.Input((3, 4)), L.Input((4,))])
    with pytest.raises(ShapeError, match="leading axis must be 1"):
        L.Mul(constant=np.ones((2, 3, 1)))(L.Input((3, 4)))
    with pytest.raises(TypeError, match="takes one tensor"):
        L.Mul(constant=2.0)([L.Input((3,)), L.Input((3,))])
    with pytest.raises(ValueError, match="constant_first needs a constant"):
        L.Sub(constant_first=True)
    with pytest.raises(ShapeError, match="2 slopes but the input has 3 channels"):
        L.PReLU(2)(L.Input((3, 4, 4)))
    with pytest.raises(ValueError, match="min <= max"):
        L.Clip(1.0, 0.0)
    with pytest.raises(ValueError, match="k > 0"):
        L.LRN(3, k=0.0)
    with pytest.raises(ValueError, match="size must be a positive int"):
        L.LRN(0)
    with pytest.raises(ShapeError, match="crop all"):
        L.Pad((-2, -2, 0, 0))(L.Input((3, 4, 4)))
    with pytest.raises(ValueError, match="top, bottom, left, right"):
        L.Pad((1, 2, 3))
    with pytest.raises(ShapeError, match="do not broadcast"):
        k_ew.binary_forward(device, "mul", device.to_device(np.ones((2, 3), np.float32)),
                            device.to_device(np.ones((4,), np.float32)))


def test_model_cases_list_exactly_the_new_ops_a_training_step_runs(device, monkeypatch):
    # The layers' op_cases hooks against what a Trainer step really calls: the same multiset
    # of calls into the new op modules (calls made inside another op not counted).
    from collections import Counter
    from clcnn import losses, optim
    from clcnn.train import Trainer
    inp = L.Input((4, 5, 5))
    t = L.PReLU(4)(L.LRN(3)(L.Conv2D(4, 4, 3, padding=1)(inp)))
    t = L.Clip(-1.0, 1.0)(L.Pad((1, 0, 0, 1))(t))
    t = L.Sub()([L.Mul(constant=np.ones((4, 1, 1)))(t), L.Div(constant=2.0, constant_first=True)(t)])
    t = L.LogSoftmax(axis=1)(L.Softmax(axis=3)(L.Transpose((0, 2, 3, 1))(t)))
    out = L.Dense(4 * 6 * 6, 10)(L.Reshape((-1,))(t))
    model = clcnn.Model(inp, out, device=device)
    cases = opspec.model_cases(model, (4, 5, 5), 2)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.01), progress=False)
    rng = np.random.default_rng(14)
    x, y = _f32(rng, (2, 4, 5, 5)), rng.integers(0, 10, 2)
    trainer.train_step(x, y)
    log = record_op_calls(monkeypatch, ("elementwise", "layout", "lrn", "softmax"),
                          helpers=("broadcast_shape", "collapse", "geometry", "pad_shape"))
    trainer.train_step(x, y)
    step = Counter(log)
    assert op_calls_of_model_cases(device, cases, rng, log) == step
    assert step["elementwise.binary_forward"] == 3 and step["layout.transpose"] == 1
