"""Loss kernels vs the NumPy oracle (float64), and the oracle's backward vs finite differences."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from clcnn.errors import ShapeError
from clcnn.ops import loss as ops
from clcnn.oracle import loss as oracle
from tests.helpers import assert_close, numeric_grad


def _ce_case(device, logits, labels):
    loss, probs = ops.softmax_cross_entropy_forward(device, device.to_device(logits),
                                                     device.to_device(labels, dtype=np.int32))
    dlogits = ops.softmax_cross_entropy_backward(device, probs, device.to_device(labels, dtype=np.int32))
    return loss.get(), probs.get(), dlogits.get()


# Tolerances: each row loss is log(sum exp(z - max)) - (z_label - max) in float32; z - max is
# exact or within 1 ulp of a value up to 2 * scale, exp/log are within 3-4 ulp, so the error is
# a few float32 ulp of max(|loss|, |z - max|): rtol 1e-6 of the scale plus 1e-5 relative.
# probs are single exps and one divide: 1e-5 relative, plus 1e-7 absolute for probabilities
# that underflow towards 0. dlogits at the label is (p - 1) / N, which cancels when p is near 1:
# there the error is p's absolute error, a few ulp of 1 (2^-24 each), so atol 3e-7 / N.
@given(n=st.integers(1, 40), k=st.integers(1, 30), scale=st.sampled_from([0.01, 1.0, 30.0, 1000.0]),
       seed=st.integers(0, 2 ** 31))
def test_softmax_cross_entropy_matches_oracle(device, n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    labels = rng.integers(0, k, n).astype(np.int32)
    loss, probs, dlogits = _ce_case(device, logits, labels)
    loss_ref, probs_ref = oracle.softmax_cross_entropy_forward(logits.astype(np.float64), labels)
    assert np.isfinite(loss).all() and np.isfinite(probs).all()
    assert_close(loss, [loss_ref], atol=4e-6 * scale, rtol=1e-5, what="loss")
    assert_close(probs, probs_ref, atol=1e-7, rtol=1e-5, what="probs")
    assert_close(dlogits, oracle.softmax_cross_entropy_backward(probs_ref, labels),
                 atol=3e-7 / n, rtol=1e-5, what="dlogits")


def test_softmax_cross_entropy_extreme_logits(device):
    """Logits of +-1000 (exp would overflow without the max shift) stay finite and match."""
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0],
                       [1000.0, 1000.0, -1000.0], [-1000.0, 999.0, 1000.0]], dtype=np.float32)
    labels = np.array([1, 0, 2, 1], dtype=np.int32)
    loss, probs, dlogits = _ce_case(device, logits, labels)
    # rows: 2000, log 3, 2000 + log 2, log(1 + e^-1) + 1
    expected = (2000.0 + np.log(3.0) + 2000.0 + np.log(2.0) + np.log1p(np.exp(-1.0)) + 1.0) / 4
    assert np.isfinite(loss).all() and np.isfinite(probs).all() and np.isfinite(dlogits).all()
    assert_close(loss, [expected], atol=0, rtol=1e-6, what="loss")
    loss_ref, probs_ref = oracle.softmax_cross_entropy_forward(logits.astype(np.float64), labels)
    assert_close(loss_ref, expected, atol=0, rtol=1e-12, what="oracle loss")
    assert_close(probs, probs_ref, atol=1e-7, rtol=1e-6, what="probs")
    assert_close(dlogits, oracle.softmax_cross_entropy_backward(probs_ref, labels), 3e-7 / 4, 1e-6, "dlogits")


def test_softmax_cross_entropy_matches_torch(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((17, 10)) * 5).astype(np.float32)
    labels = rng.integers(0, 10, 17).astype(np.int32)
    loss, _, dlogits = _ce_case(device, logits, labels)
    t = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t, torch.tensor(labels, dtype=torch.long))
    ref.backward()
    assert_close(loss, [ref.item()], atol=0, rtol=1e-5, what="loss vs torch")
    assert_close(dlogits, t.grad.numpy(), atol=1e-8, rtol=1e-5, what="dlogits vs torch")


def test_softmax_cross_entropy_is_deterministic(device):
    rng = np.random.default_rng(4)
    logits = device.to_device(rng.standard_normal((256, 10)).astype(np.float32))
    labels = device.to_device(rng.integers(0, 10, 256), dtype=np.int32)
    first = ops.softmax_cross_entropy_forward(device, logits, labels)[0].get()
    for _ in range(3):
        np.testing.assert_array_equal(ops.softmax_cross_entropy_forward(device, logits, labels)[0].get(), first)


def test_softmax_cross_entropy_rejects_bad_labels(device):
    logits = device.zeros((3, 4))
    with pytest.raises(ShapeError):
        ops.softmax_cross_entropy_forward(device, logits, device.to_device(np.zeros(2), dtype=np.int32))
    with pytest.raises(TypeError):
        ops.softmax_cross_entropy_forward(device, logits, device.to_device(np.zeros(3), dtype=np.float32))


# MSE: the float32 sum of `count` squares (in 64 chunks) is within count * u of the exact sum of
# non-negative terms; for these sizes (<= 4000) rtol 1e-5 covers it with margin (the error grows
# like sqrt(count) * u in practice). The gradient is one subtract and one multiply: 2 ulp.
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 2 ** 31))
def test_mse_matches_oracle(device, shape, seed):
    rng = np.random.default_rng(seed)
    pred, target = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    pd, td = device.to_device(pred), device.to_device(target)
    p64, t64 = pred.astype(np.float64), target.astype(np.float64)
    assert_close(ops.mse_forward(device, pd, td).get(), [oracle.mse_forward(p64, t64)], 0, 1e-5, "mse")
    grad = ops.mse_backward(device, pd, td).get()
    assert grad.shape == pred.shape
    assert_close(grad, oracle.mse_backward(p64, t64), 1e-30, 3e-7, "mse grad")


def test_mse_large_and_vs_torch(device):
    rng = np.random.default_rng(6)
    pred, target = (rng.standard_normal((64, 3, 17, 19)).astype(np.float32) for _ in range(2))
    value = ops.mse_forward(device, device.to_device(pred), device.to_device(target)).get()
    assert_close(value, [oracle.mse_forward(pred.astype(np.float64), target.astype(np.float64))], 0, 1e-5, "mse")
    torch = pytest.importorskip("torch")
    ref = torch.nn.MSELoss()(torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64))
    assert_close(value, [ref.item()], 0, 1e-5, "mse vs torch")


def test_mse_rejects_mismatched_shapes(device):
    with pytest.raises(ShapeError):
        ops.mse_forward(device, device.zeros((2, 3)), device.zeros((3, 2)))


def test_loss_oracle_backward_vs_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5)) * 3
    labels = np.array([0, 4, 2, 2])
    _, probs = oracle.softmax_cross_entropy_forward(logits, labels)
    numeric = numeric_grad(lambda z: float(oracle.softmax_cross_entropy_forward(z, labels)[0]), logits)
    assert_close(oracle.softmax_cross_entropy_backward(probs, labels), numeric, 1e-8, 1e-6, "ce grad")
    pred, target = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    numeric = numeric_grad(lambda p: float(oracle.mse_forward(p, target)), pred)
    assert_close(oracle.mse_backward(pred, target), numeric, 1e-8, 1e-6, "mse grad")


def test_cross_entropy_oracle_is_negative_log_softmax():
    """The oracle against the textbook formula, written independently: -log(e^z_y / sum e^z)."""
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]])
    labels = np.array([2, 1])
    direct = np.mean([-np.log(np.exp(z[y]) / np.exp(z).sum()) for z, y in zip(logits, labels)])
    assert_close(oracle.softmax_cross_entropy_forward(logits, labels)[0], direct, 0, 1e-14, "oracle ce")
