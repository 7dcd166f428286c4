"""Comparison and finite-difference helpers for the tests."""
import numpy as np


def assert_close(actual, expected, atol, rtol, what="value"):
    """|actual - expected| <= atol + rtol * |expected| everywhere; reports max error and where."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    bad = ~(err <= bound)
    if bad.any():
        where = np.unravel_index(np.argmax(np.where(bad, err - bound, -np.inf)), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} elements off; max abs error {err.max():.3g}; "
            f"worst at {where}: got {actual[where]!r}, expected {expected[where]!r} "
            f"(atol={atol}, rtol={rtol})")


def numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar f at float64 x."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad
