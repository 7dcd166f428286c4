"""The im2col forward: the input's windows laid out as columns (N, C*KH*KW, OH, OW)
(conv2d.cl's conv2d_im2col), then one matrix product per image with the weight viewed as
(O, C*KH*KW), by the pointwise kernels (gemm.cl): y[n] = w @ cols[n], bias and activation in
its epilogue. The weight is read as stored, so nothing is packed.

It pays where the direct kernels have few output pixels to share each weight among (batch-1
inference of ImageNet models' last stages): their blocks are runs of one output row, so on a
7x7 or 14x14 plane every block reads the whole weight again for at most 7 or 14 pixels, while
the product's register blocks take 8 filters by 32 columns at a time.
"""
from . import conv2d as _conv
from . import conv2d_pointwise
from ._common import buf, i32, launch
from .dense import _blocking

# Where the automatic choice takes it (CPUs): a reduction of at least _MIN_K values (C*KH*KW)
# over at most _MAX_PIXELS output pixels (N*OH*OW), or a strided 1x1 convolution (which the
# direct kernels run at a third of their usual rate) over at least _MIN_K_STRIDED values and at
# most twice the pixels. Event times, PoCL 3.0, 2-core AVX-512, im2col against the direct
# kernels with their weights packed beforehand (a frozen model) / packed in the call: 3x3 512
# at 7x7 1.24 / 1.96x as fast at batch 1, 1.18 / 1.43x at batch 4; 256 at 14x14 1.07 / 1.43x,
# stride 2 from 28x28 1.17 / 1.49x; 512 at 14x14 1.36 / 1.62x; strided 1x1 1024 -> 512 to 7x7
# 1.40 / 2.28x at batch 1, 1.64 / 1.85x at batch 8. Slower: 128 at 28x28 or 14x14 (0.46-0.83x),
# 256 at 14x14 at batch 2 (0.42-0.77x: the direct kernels then have twice the rows to share
# out), 512 -> 256 strided to 14x14 0.89x (frozen), 5x5s with few channels (0.37-0.87x).
_MIN_K = 2048
_MAX_PIXELS = 196
_MIN_K_STRIDED = 1024


def min_pixels(dev):
    """Output pixels per image the product needs: one register block of columns."""
    _, vw, nv = _blocking(dev)
    return vw * nv


def supports(dev, x_shape, w_shape, stride, pads, dilation=(1, 1), groups=1):
    """Where the im2col forward runs: CPUs (the pointwise kernels), one group, and at least
    min_pixels output pixels per image."""
    if groups != 1:
        return False
    n, c = x_shape[:2]
    o, _, kh, kw = w_shape
    oh, ow = _conv._output_hw(x_shape, w_shape, stride, pads, dilation)
    return conv2d_pointwise.supports(dev, (n, c * kh * kw, oh, ow), (o, c * kh * kw, 1, 1), (1, 1), (0, 0, 0, 0))


def pays(x_shape, w_shape, stride, pads, dilation=(1, 1)):
    """Whether the automatic choice takes the im2col forward (see _MIN_K)."""
    oh, ow = _conv._output_hw(x_shape, w_shape, stride, pads, dilation)
    pixels, k = x_shape[0] * oh * ow, x_shape[1] * w_shape[2] * w_shape[3]
    if tuple(w_shape[2:]) == (1, 1) and tuple(stride) != (1, 1):
        return k >= _MIN_K_STRIDED and pixels <= 2 * _MAX_PIXELS
    return k >= _MIN_K and pixels <= _MAX_PIXELS


def forward(dev, x, w, b, stride, pads, oh, ow, activation_code, negative_slope, dilation=(1, 1), residual=None):
    """act(conv(x, w) + b + residual) (N, O, oh, ow) for x (N, C, H, W), w (O, C, KH, KW), b
    (O,) or None, residual (N, O, oh, ow) or None, pads (top, bottom, left, right): the
    columns, then their product with w."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    rows = c * kh * kw
    cols = dev.empty((n, rows, oh, ow))
    grid = (rows, n)
    launch(dev, _conv._kernel(dev, _conv._FILE, "conv2d_im2col"), grid, _conv._local(dev, grid), buf(x), buf(cols),
           i32(c), i32(h), i32(wd), i32(kh), i32(kw), i32(oh), i32(ow), i32(stride[0]), i32(stride[1]),
           i32(pads[0]), i32(pads[2]), i32(dilation[0]), i32(dilation[1]))
    return conv2d_pointwise.forward(dev, cols, dev.view(w, (o, rows, 1, 1)), b, activation_code, negative_slope,
                                     residual=residual)
