"""NumPy reference for Conv2D (cross-correlation, as PyTorch's conv2d), forward and backward.

Layout NCHW, weights (O, C, KH, KW), stride=(sh, sw), pads=(top, bottom, left, right) of zeros.
Written tap by tap: for each kernel offset (kh, kw) the input pixels it meets form a strided
slice of the padded input, so every pass is a sum of small einsums. Works in the dtype it is
given (float64 for finite differences).
"""
import numpy as np


def _sizes(x, w, stride, pads):
    n, c, h, wd = x.shape
    o, wc, kh, kw = w.shape
    if wc != c:
        raise ValueError(f"weight has {wc} input channels, input has {c}")
    top, bottom, left, right = pads
    oh = (h + top + bottom - kh) // stride[0] + 1
    ow = (wd + left + right - kw) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError("kernel larger than the padded input")
    return oh, ow


def _window(i, j, oh, ow, stride):
    """The slices of the padded input that tap (i, j) reads for all output pixels."""
    sh, sw = stride
    return slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw)


def conv2d_forward(x, w, b, stride, pads):
    """y[n, o, p, q] = b[o] + sum_{c, i, j} xpad[n, c, p*sh + i, q*sw + j] * w[o, c, i, j]."""
    oh, ow = _sizes(x, w, stride, pads)
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    y = np.zeros((x.shape[0], w.shape[0], oh, ow), dtype=np.result_type(x, w))
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            rows, cols = _window(i, j, oh, ow, stride)
            y += np.einsum("nchw,oc->nohw", xp[:, :, rows, cols], w[:, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv2d_backward(x, w, gy, stride, pads):
    """Gradients of sum(gy * conv2d_forward(x, w, b)) w.r.t. x, w and b: (gx, gw, gb)."""
    oh, ow = _sizes(x, w, stride, pads)
    assert gy.shape == (x.shape[0], w.shape[0], oh, ow), "gy has the wrong shape"
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    gxp = np.zeros_like(xp, dtype=np.result_type(x, w, gy))
    gw = np.zeros(w.shape, dtype=np.result_type(x, gy))
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            rows, cols = _window(i, j, oh, ow, stride)
            gw[:, :, i, j] = np.einsum("nohw,nchw->oc", gy, xp[:, :, rows, cols])
            gxp[:, :, rows, cols] += np.einsum("nohw,oc->nchw", gy, w[:, :, i, j])
    gx = gxp[:, :, top:top + x.shape[2], left:left + x.shape[3]]
    gb = gy.sum(axis=(0, 2, 3))
    return gx, gw, gb
