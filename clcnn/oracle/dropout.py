"""NumPy reference for dropout, reproducing the kernel's counter-based generator bit-exactly.

Each element's random word is a pure function of (seed, step, flat element index):

    mix(v)  = lowbias32 integer hash (xorshift-multiply, Chris Wellons' constants), a bijection
    key     = mix(seed ^ mix(step + 0x9E3779B9))      -- distinct steps give distinct keys
    bits[i] = mix(mix(i ^ key) + key)                 -- two rounds, key injected twice

An element is kept when bits >= threshold, threshold = min(floor(p * 2^32), 2^32 - 1), so the
keep probability is 1 - p to within 2^-32; kept elements are scaled by float32(1 / (1 - p)).
All arithmetic is uint32 and wraps, as in OpenCL C.
"""
import numpy as np

GOLDEN = 0x9E3779B9


def _mix(v):
    v = np.asarray(v, dtype=np.uint32).copy()
    v ^= v >> np.uint32(16)
    v *= np.uint32(0x7FEB352D)
    v ^= v >> np.uint32(15)
    v *= np.uint32(0x846CA68B)
    v ^= v >> np.uint32(16)
    return v


def _key(seed, step):
    step_word = np.array([(int(step) + GOLDEN) & 0xFFFFFFFF], dtype=np.uint32)
    return _mix(np.array([int(seed) & 0xFFFFFFFF], dtype=np.uint32) ^ _mix(step_word))[0]


def threshold(p):
    """The uint32 below which an element's random word drops it."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    return min(int(p * 2.0 ** 32), 2 ** 32 - 1)


def scale(p):
    return np.float32(1.0 / (1.0 - p))


def random_bits(size, seed, step):
    key = _key(seed, step)
    index = np.arange(size, dtype=np.uint32)
    return _mix(_mix(index ^ key) + key)


def dropout_mask(shape, p, seed, step):
    """float32 mask of `shape`: 0 for dropped elements, 1 / (1 - p) for kept ones."""
    t = np.uint32(threshold(p))
    bits = random_bits(int(np.prod(shape)), seed, step)
    return np.where(bits >= t, scale(p), np.float32(0)).astype(np.float32).reshape(shape)


def dropout_forward(x, p, seed, step):
    mask = dropout_mask(x.shape, p, seed, step)
    return (x * mask).astype(x.dtype), mask


def dropout_backward(gy, mask):
    return (gy * mask).astype(gy.dtype)
