"""NumPy reference for pooling (NCHW), forward and backward, with PyTorch's semantics.

kernel=(kh, kw), stride=(sh, sw), pads=(top, bottom, left, right).
Output size per axis: floor((n + before + after - k) / s) + 1.

Max pooling pads with -inf: padding never wins, so the window is simply clipped to the real
pixels. Ties go to the first maximum in row-major window order (np.argmax's rule); a window
holding only -inf picks its first real pixel, and a NaN wins: the LAST NaN in row-major order,
as PyTorch's kernels take every value that is greater than the best so far or NaN.
argmax is the flat index ih * W + iw into the H*W plane of x.

Average pooling: with count_include_pad the divisor is the window clipped to the padded
extent (H + top + bottom), so padded zeros count; without it, the number of real pixels.
"""
import numpy as np


def _check_pool_args(x_shape, kernel, stride, pads):
    kh, kw = kernel
    sh, sw = stride
    top, bottom, left, right = pads
    if min(kh, kw, sh, sw) < 1:
        raise ValueError(f"kernel and stride must be >= 1, got kernel={kernel}, stride={stride}")
    if min(pads) < 0 or top >= kh or bottom >= kh or left >= kw or right >= kw:
        raise ValueError(f"pool padding {pads} must be >= 0 and smaller than the kernel {kernel} on each side")
    _, _, h, w = x_shape
    oh = (h + top + bottom - kh) // sh + 1
    ow = (w + left + right - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"pool kernel {kernel} is larger than the padded input {h + top + bottom}x{w + left + right}")
    return oh, ow


def _window(i, k, s, pad_before, n):
    """Real-pixel range [lo, hi) of output position i's window along one axis."""
    start = i * s - pad_before
    return max(start, 0), min(start + k, n)


def maxpool2d_forward(x, kernel, stride, pads):
    n, c, h, w = x.shape
    oh, ow = _check_pool_args(x.shape, kernel, stride, pads)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n, c, oh, ow), dtype=np.int32)
    for i in range(oh):
        h0, h1 = _window(i, kernel[0], stride[0], pads[0], h)
        for j in range(ow):
            w0, w1 = _window(j, kernel[1], stride[1], pads[2], w)
            win = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            k = np.argmax(win, axis=2)          # first maximum (or first NaN) in row-major order
            nan = np.isnan(win)
            last_nan = win.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
            k = np.where(nan.any(axis=2), last_nan, k)
            wh = w1 - w0
            argmax[:, :, i, j] = (h0 + k // wh) * w + (w0 + k % wh)
            y[:, :, i, j] = np.take_along_axis(win, k[:, :, None], axis=2)[:, :, 0]
    return y, argmax


def maxpool2d_backward(gy, argmax, x_shape):
    n, c, h, w = x_shape
    gx = np.zeros((n, c, h * w), dtype=gy.dtype)
    for b in range(n):
        for ch in range(c):
            np.add.at(gx[b, ch], argmax[b, ch].reshape(-1), gy[b, ch].reshape(-1))
    return gx.reshape(x_shape)


def _avg_divisor(i, j, x_shape, kernel, stride, pads, count_include_pad):
    _, _, h, w = x_shape
    top, bottom, left, right = pads
    if count_include_pad:
        hs, ws = i * stride[0] - top, j * stride[1] - left
        he, we = min(hs + kernel[0], h + bottom), min(ws + kernel[1], w + right)
        return (he - hs) * (we - ws)
    h0, h1 = _window(i, kernel[0], stride[0], top, h)
    w0, w1 = _window(j, kernel[1], stride[1], left, w)
    return (h1 - h0) * (w1 - w0)


def avgpool2d_forward(x, kernel, stride, pads, count_include_pad=True):
    n, c, h, w = x.shape
    oh, ow = _check_pool_args(x.shape, kernel, stride, pads)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    for i in range(oh):
        h0, h1 = _window(i, kernel[0], stride[0], pads[0], h)
        for j in range(ow):
            w0, w1 = _window(j, kernel[1], stride[1], pads[2], w)
            div = _avg_divisor(i, j, x.shape, kernel, stride, pads, count_include_pad)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / div
    return y


def avgpool2d_backward(gy, x_shape, kernel, stride, pads, count_include_pad=True):
    n, c, h, w = x_shape
    oh, ow = _check_pool_args(x_shape, kernel, stride, pads)
    gx = np.zeros(x_shape, dtype=gy.dtype)
    for i in range(oh):
        h0, h1 = _window(i, kernel[0], stride[0], pads[0], h)
        for j in range(ow):
            w0, w1 = _window(j, kernel[1], stride[1], pads[2], w)
            div = _avg_divisor(i, j, x_shape, kernel, stride, pads, count_include_pad)
            gx[:, :, h0:h1, w0:w1] += (gy[:, :, i, j] / div)[:, :, None, None]
    return gx


def global_avgpool2d_forward(x):
    return x.mean(axis=(2, 3), keepdims=True)


def global_avgpool2d_backward(gy, x_shape):
    n, c, h, w = x_shape
    return np.broadcast_to(gy.reshape(n, c, 1, 1) / (h * w), x_shape).astype(gy.dtype)


def global_maxpool2d_forward(x):
    n, c, h, w = x.shape
    return maxpool2d_forward(x, (h, w), (1, 1), (0, 0, 0, 0))


def global_maxpool2d_backward(gy, argmax, x_shape):
    return maxpool2d_backward(gy, argmax, x_shape)
