"""SGD and Adam kernels vs the NumPy oracle over several steps, the oracle vs torch.optim."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from clcnn.errors import ShapeError
from clcnn.ops import optim as ops
from clcnn.oracle import optim as oracle
from tests.helpers import assert_close

STEPS = 6

SGD_CONFIGS = [
    dict(lr=0.1),                                                   # plain
    dict(lr=0.05, momentum=0.9),                                    # momentum
    dict(lr=0.05, momentum=0.9, dampening=0.3),                     # dampening
    dict(lr=0.05, momentum=0.8, nesterov=True),                     # nesterov
    dict(lr=0.1, weight_decay=0.01),                                # weight decay alone
    dict(lr=0.02, momentum=0.9, dampening=0.1, weight_decay=5e-4),  # all but nesterov
    dict(lr=0.02, momentum=0.5, weight_decay=0.1, nesterov=True),
]
ADAM_CONFIGS = [
    dict(lr=1e-3),
    dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-6),
    dict(lr=1e-3, weight_decay=0.01),
    dict(lr=5e-3, weight_decay=0.1, eps=1e-4),
]

# Tolerances: each step is a handful of float32 operations per element (the oracle runs the
# same formulas in float64 from the same float32 inputs), so each step adds a few float32 ulp
# of the terms involved. Parameters, gradients and momentum buffers are O(1) to O(5) here
# (standard-normal values, buffers summing up to 6 gradients), and a buffer can cancel to near
# zero, so the bound is absolute in the terms' scale: 6 steps x ~3 ulp of ~5 = 1e-6, plus
# rtol 2e-6. Adam's exp_avg carries (1 - beta1) * g (10x smaller terms: atol 1e-7) and exp_avg_sq
# sums non-negative terms (pure rtol); its update divides by sqrt(v) + eps, which halves v's
# relative error, and moves p by ~lr per step, so p's error stays a few ulp of p.
RTOL, ATOL, ATOL_M = 2e-6, 1e-6, 1e-7


def _grads(rng, shape):
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(STEPS)]


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), seed=st.integers(0, 2 ** 31))
def test_sgd_matches_oracle(device, config, shape, seed):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(shape).astype(np.float32)
    momentum = config.get("momentum", 0.0)
    pd, bufd = device.to_device(p), (device.zeros(p.shape) if momentum else None)
    p_ref, buf_ref = p.astype(np.float64), None
    for step, g in enumerate(_grads(rng, shape)):
        ops.sgd_update(device, pd, device.to_device(g), bufd, first_step=step == 0, **config)
        p_ref, buf_ref = oracle.sgd_update(p_ref, g.astype(np.float64), buf_ref, first_step=step == 0, **config)
    assert_close(pd.get(), p_ref, ATOL, RTOL, "param")
    if momentum:
        assert_close(bufd.get(), buf_ref, ATOL, RTOL, "momentum buffer")


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), seed=st.integers(0, 2 ** 31))
def test_adam_matches_oracle(device, config, shape, seed):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(shape).astype(np.float32)
    pd, md, vd = device.to_device(p), device.zeros(p.shape), device.zeros(p.shape)
    p_ref, m_ref, v_ref = p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape)
    for step, g in enumerate(_grads(rng, shape), start=1):
        ops.adam_update(device, pd, device.to_device(g), md, vd, step=step, **config)
        p_ref, m_ref, v_ref = oracle.adam_update(p_ref, g.astype(np.float64), m_ref, v_ref, step=step, **config)
    assert_close(pd.get(), p_ref, ATOL, RTOL, "param")
    assert_close(md.get(), m_ref, ATOL_M, RTOL, "exp_avg")
    assert_close(vd.get(), v_ref, 1e-30, RTOL, "exp_avg_sq")


def test_optim_rejects_mismatched_buffers(device):
    with pytest.raises(ShapeError):
        ops.sgd_update(device, device.zeros((3,)), device.zeros((4,)), None, lr=0.1)
    with pytest.raises(ValueError):
        ops.sgd_update(device, device.zeros((3,)), device.zeros((3,)), None, lr=0.1, momentum=0.9)


def test_oracle_first_steps_by_hand():
    """The oracle against hand-worked numbers from the torch documentation's formulas."""
    p, g = np.array([1.0]), np.array([0.5])
    # SGD momentum 0.9, dampening 0.5: step 1 buf = g = 0.5, p = 1 - 0.1 * 0.5 = 0.95;
    # step 2 (grad 0.5): buf = 0.9 * 0.5 + 0.5 * 0.5 = 0.7, p = 0.95 - 0.07 = 0.88.
    p1, b1 = oracle.sgd_update(p, g, None, 0.1, momentum=0.9, dampening=0.5, first_step=True)
    p2, b2 = oracle.sgd_update(p1, g, b1, 0.1, momentum=0.9, dampening=0.5)
    assert_close(np.concatenate([p1, b1, p2, b2]), [0.95, 0.5, 0.88, 0.7], 0, 1e-14, "sgd")
    # Nesterov, weight decay 0.1: g' = 0.5 + 0.1 = 0.6, buf = 0.6, step = 0.6 + 0.9 * 0.6 = 1.14.
    p1, _ = oracle.sgd_update(p, g, None, 0.1, momentum=0.9, weight_decay=0.1, nesterov=True, first_step=True)
    assert_close(p1, [1 - 0.114], 0, 1e-14, "nesterov")
    # Adam step 1: m_hat = g, v_hat = g^2, so p moves by lr * g / (|g| + eps) = lr * sign(g).
    p1, m1, v1 = oracle.adam_update(p, g, np.zeros(1), np.zeros(1), 0.01, eps=0.0)
    assert_close(np.concatenate([p1, m1, v1]), [0.99, 0.05, 0.00025], 0, 1e-12, "adam")


@pytest.mark.parametrize("kind", ["sgd", "sgd_nesterov", "adam", "adam_wd"])
def test_kernels_match_torch_optim(device, kind):
    """Extra check against torch.optim itself (skipped without torch)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    p = rng.standard_normal((5, 4)).astype(np.float32)
    grads = _grads(rng, p.shape)
    tp = torch.nn.Parameter(torch.tensor(p, dtype=torch.float64))
    pd, ad, bd = device.to_device(p), device.zeros(p.shape), device.zeros(p.shape)
    if kind.startswith("sgd"):
        nesterov = kind == "sgd_nesterov"
        cfg = dict(lr=0.05, momentum=0.9, dampening=0.0 if nesterov else 0.2, weight_decay=0.01, nesterov=nesterov)
        opt = torch.optim.SGD([tp], **cfg)
    else:
        cfg = dict(lr=1e-2, weight_decay=0.05 if kind == "adam_wd" else 0.0)
        opt = torch.optim.Adam([tp], lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg["weight_decay"])
    for step, g in enumerate(grads):
        tp.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        if kind.startswith("sgd"):
            ops.sgd_update(device, pd, device.to_device(g), ad, first_step=step == 0, **cfg)
        else:
            ops.adam_update(device, pd, device.to_device(g), ad, bd, step=step + 1, **cfg)
    assert_close(pd.get(), tp.detach().numpy(), ATOL, RTOL, f"{kind} vs torch")
