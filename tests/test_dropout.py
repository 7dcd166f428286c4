"""Dropout kernels vs the NumPy oracle (bit-exact masks) and statistics of the generator."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from clcnn.ops import dropout as ops
from clcnn.oracle import dropout as oracle

shapes = st.lists(st.integers(1, 17), min_size=1, max_size=4).map(tuple)


@given(shape=shapes, p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.999]) | st.floats(0.0, 0.99),
       seed=st.integers(0, 2 ** 32 - 1), step=st.integers(0, 2 ** 32 - 1), data_seed=st.integers(0, 2 ** 31))
def test_dropout_matches_oracle_exactly(device, shape, p, seed, step, data_seed):
    rng = np.random.default_rng(data_seed)
    x = rng.standard_normal(shape).astype(np.float32)
    y, mask = ops.dropout_forward(device, device.to_device(x), p, seed, step)
    y_ref, mask_ref = oracle.dropout_forward(x, p, seed, step)
    # Same integer generator, same float32 scale, one float32 multiply: bit-identical.
    np.testing.assert_array_equal(mask.get(), mask_ref)
    np.testing.assert_array_equal(y.get(), y_ref)
    gy = rng.standard_normal(shape).astype(np.float32)
    gx = ops.dropout_backward(device, device.to_device(gy), mask)
    np.testing.assert_array_equal(gx.get(), gy * mask_ref)


def _mix_int(v):
    # lowbias32 in Python integers with explicit 32-bit wrap-around: independent of NumPy's
    # uint32 overflow rules, which the oracle relies on.
    m = 0xFFFFFFFF
    v ^= v >> 16
    v = (v * 0x7FEB352D) & m
    v ^= v >> 15
    v = (v * 0x846CA68B) & m
    v ^= v >> 16
    return v


@pytest.mark.parametrize("seed,step", [(0, 0), (1, 0), (0, 1), (2 ** 32 - 1, 2 ** 32 - 1), (12345, 678)])
def test_oracle_generator_matches_integer_reference(seed, step):
    key = _mix_int(seed ^ _mix_int((step + 0x9E3779B9) & 0xFFFFFFFF))
    expected = [_mix_int((_mix_int(i ^ key) + key) & 0xFFFFFFFF) for i in range(64)]
    np.testing.assert_array_equal(oracle.random_bits(64, seed, step), np.array(expected, dtype=np.uint32))


N = 1 << 20


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_and_independence(device, p):
    x = device.to_device(np.ones(N, dtype=np.float32))
    _, mask = ops.dropout_forward(device, x, p, seed=1234, step=7)
    keep = mask.get() > 0
    # Binomial(N, 1-p): standard deviation sqrt(p(1-p)/N) <= 4.9e-4; 6 sigma is a bound that a
    # working generator misses with probability ~1e-9.
    sigma = np.sqrt(p * (1 - p) / N)
    assert abs(keep.mean() - (1 - p)) < 6 * sigma
    # Neighbouring elements independent: P(both kept) = (1-p)^2 within 6 sigma.
    both = keep[:-1] & keep[1:]
    q = (1 - p) ** 2
    assert abs(both.mean() - q) < 6 * np.sqrt(q * (1 - q) / (N - 1)) * 2   # x2: overlapping pairs
    # Kept elements carry exactly 1/(1-p) (as float32), dropped ones 0.
    assert set(np.unique(mask.get())) <= {np.float32(0), np.float32(1 / (1 - p))}


def test_steps_and_seeds_give_different_independent_masks(device):
    x = device.to_device(np.ones(N, dtype=np.float32))
    p = 0.5
    masks = [ops.dropout_forward(device, x, p, seed, step)[1].get() > 0
             for seed, step in [(0, 0), (0, 1), (1, 0), (0, 2 ** 32 - 1)]]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            agree = (masks[i] == masks[j]).mean()
            # Independent masks agree with probability p^2 + (1-p)^2 = 0.5, sd 4.9e-4.
            assert abs(agree - 0.5) < 6 * np.sqrt(0.25 / N), (i, j, agree)
    # Reproducible: the same (seed, step) gives the same mask.
    again = ops.dropout_forward(device, x, p, 0, 1)[1].get() > 0
    np.testing.assert_array_equal(again, masks[1])


def test_p_zero_is_identity(device):
    x = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)
    y, mask = ops.dropout_forward(device, device.to_device(x), 0.0, 5, 9)
    np.testing.assert_array_equal(y.get(), x)
    np.testing.assert_array_equal(mask.get(), np.ones_like(x))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_p_raises(device, p):
    x = device.to_device(np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError):
        ops.dropout_forward(device, x, p, 0, 0)
    with pytest.raises(ValueError):
        oracle.dropout_mask((4,), p, 0, 0)
