"""NumPy reference for kernels/softmax.cl: Softmax and LogSoftmax along any axis."""
import numpy as np


def softmax_forward(x, axis=-1, log=False):
    z = x - np.max(x, axis=axis, keepdims=True)
    if log:
        return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def softmax_backward(y, gy, axis=-1, log=False):
    if log:
        return gy - np.exp(y) * np.sum(gy, axis=axis, keepdims=True)
    return y * (gy - np.sum(gy * y, axis=axis, keepdims=True))
