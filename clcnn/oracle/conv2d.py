"""NumPy reference for Conv2D (cross-correlation, as PyTorch's conv2d), forward and backward.

Layout NCHW, weights (O, C/groups, KH, KW), stride=(sh, sw), pads=(top, bottom, left, right) of
zeros, dilation=(dh, dw) (tap (i, j) reads input offset (i*dh, j*dw)), groups: input channels
g*C/groups.. and output channels g*O/groups.. form group g, convolved only with each other.
Written tap by tap: for each kernel offset (i, j) the input pixels it meets form a strided
slice of the padded input, so every pass is a sum of small einsums, one group at a time.
Works in the dtype it is given (float64 for finite differences).
"""
import numpy as np


def _sizes(x, w, stride, pads, dilation, groups):
    n, c, h, wd = x.shape
    o, wc, kh, kw = w.shape
    if c % groups or o % groups:
        raise ValueError(f"{c} input and {o} output channels are not both divisible by {groups} groups")
    if wc * groups != c:
        raise ValueError(f"weight has {wc} input channels per group, input has {c} in {groups} groups")
    top, bottom, left, right = pads
    oh = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError("kernel larger than the padded input")
    return oh, ow


def _window(i, j, oh, ow, stride, dilation):
    """The slices of the padded input that tap (i, j) reads for all output pixels."""
    (sh, sw), (dh, dw) = stride, dilation
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def _group_slices(x, w, groups):
    cg, og = x.shape[1] // groups, w.shape[0] // groups
    return [(slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)) for g in range(groups)]


def conv2d_forward(x, w, b, stride, pads, dilation=(1, 1), groups=1):
    """y[n, o, p, q] = b[o] + sum_{c in o's group, i, j}
    xpad[n, c, p*sh + i*dh, q*sw + j*dw] * w[o, c - group start, i, j]."""
    oh, ow = _sizes(x, w, stride, pads, dilation, groups)
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    y = np.zeros((x.shape[0], w.shape[0], oh, ow), dtype=np.result_type(x, w))
    for cs, os_ in _group_slices(x, w, groups):
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                rows, cols = _window(i, j, oh, ow, stride, dilation)
                y[:, os_] += np.einsum("nchw,oc->nohw", xp[:, cs, rows, cols], w[os_, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv2d_backward(x, w, gy, stride, pads, dilation=(1, 1), groups=1):
    """Gradients of sum(gy * conv2d_forward(x, w, b)) w.r.t. x, w and b: (gx, gw, gb)."""
    oh, ow = _sizes(x, w, stride, pads, dilation, groups)
    assert gy.shape == (x.shape[0], w.shape[0], oh, ow), "gy has the wrong shape"
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    gxp = np.zeros_like(xp, dtype=np.result_type(x, w, gy))
    gw = np.zeros(w.shape, dtype=np.result_type(x, gy))
    for cs, os_ in _group_slices(x, w, groups):
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                rows, cols = _window(i, j, oh, ow, stride, dilation)
                gw[os_, :, i, j] = np.einsum("nohw,nchw->oc", gy[:, os_], xp[:, cs, rows, cols])
                gxp[:, cs, rows, cols] += np.einsum("nohw,oc->nchw", gy[:, os_], w[os_, :, i, j])
    gx = gxp[:, :, top:top + x.shape[2], left:left + x.shape[3]]
    gb = gy.sum(axis=(0, 2, 3))
    return gx, gw, gb
