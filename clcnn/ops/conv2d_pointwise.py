"""Pointwise convolutions (1x1 kernels, stride 1, no padding) on CPUs as one matrix product per
image and group (kernels/gemm.cl's pointwise_* kernels): y[n] (O, HW) = w (O, C) @ x[n] (C, HW),
gx[n] = w.T @ gy[n], and gw = the sum over images of gy[n] @ x[n].T, with the bias gradient from
the same pass (a row of ones beside x[n]'s rows).

conv2d.py's direct kernels put their vector lanes over the output channels, so each work item
stores its pixels to O different NCHW planes, a few floats per cache line, lines its neighbours
(on the other core) write too. MobileNet-style expansions made that the slowest layer of a
step: 64x16x32x32 -> 96 1x1 at batch 64 took 6.9 ms forward and 18.8 ms backward (a transpose
of gy, the weight-gradient kernel, the input gradient through conv2d_rows) on PoCL 3.0,
2-core AVX-512. Here the lanes run along the pixels, every store is a whole row, and the weight
gradient reads gy as stored. Grouped 1x1s (ShuffleNet's 3 groups, batch 32): 240x28x28 -> 60
forward 2.14 -> 1.66 ms, backward 8.7 -> 3.4 ms; batch 1 0.45-1.01x the direct kernel's time."""
from ._common import buf, f32, i32, launch
from .dense import _NT_BLOCK, _blocking

_FILE = "gemm.cl"
# Work items the weight gradient aims at: its images are split into slices of about that many
# items' worth, each slice's partial sum an (O, C + 1) array (one slice per image would make
# a 2048 -> 512 layer's partial sums 4 MB an image). Event times, alone, 64x16x32x32 -> 96 /
# 64x144x16x16 -> 24: a slice per image 1.45 / 0.96-1.00 ms, 4096 items 1.51 / 0.74-0.76,
# 256 items 1.68 / 0.97-1.03 (fewer items stream more images each, and neighbouring items no
# longer share rows in cache).
_SLICE_ITEMS = 4096
# Bytes of an image's right-hand matrix (input channels x pixels) from which the product's row
# blocks run first (rows_first in gemm.cl): the items reading one strip of its columns then
# follow each other, the strip still in cache. Event times, batch 1 (ResNet-50's and
# Inception's 1x1 layers): 256x56x56 -> 64 1.07 -> 0.51 ms, 512x28x28 -> 128 0.64 -> 0.47;
# but MobileNet-small's 16x32x32 -> 96 at batch 64 (64 KB) 1.56 -> 1.69-1.82 ms (its output
# rows then come out in a scattered order) and 64x56x56 -> 64 (0.8 MB) 0.16 -> 0.18.
_ROWS_FIRST_BYTES = 1 << 20


def supports(dev, x_shape, w_shape, stride, pads, dilation=(1, 1), groups=1):
    """Whether these kernels run this convolution: a CPU device, a 1x1 kernel, stride 1, no
    padding or dilation, groups dividing both channel counts (ShuffleNet's grouped 1x1s; not
    depthwise ones, which have their own kernels), and planes of at least one register block of
    pixels (gemm_block's last column block is shifted back, never past the plane)."""
    if not dev.is_cpu or len(x_shape) != 4 or len(w_shape) != 4:
        return False
    _, vw, nv = _blocking(dev)
    return (tuple(w_shape[2:]) == (1, 1) and tuple(stride) == (1, 1) and not any(pads)
            and tuple(dilation) == (1, 1) and w_shape[1] * groups == x_shape[1] and w_shape[0] % groups == 0
            and (groups == 1 or groups < x_shape[1]) and x_shape[2] * x_shape[3] >= vw * nv)


def _kernel(dev, name):
    tm, vw, nv = _blocking(dev)
    return dev.kernel(_FILE, name, TM=tm, VW=vw, NV=nv), tm, vw * nv


def forward(dev, x, w, b, activation_code, negative_slope, groups=1, residual=None):
    """act(conv(x, w) + b + residual) for x (N, C, H, W), w (O, C / groups, 1, 1), b (O,) or
    None, residual (N, O, H, W) or None."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    kernel, tm, nb = _kernel(dev, "pointwise_forward")
    y = dev.empty((n, o, h, wd))
    grid, rows_first = _grid(o // groups, h * wd, c // groups, tm, nb)
    launch(dev, kernel, grid + (n * groups,), (1, 1, 1), buf(w), buf(x), buf(y),
           buf(b if b is not None else w), buf(residual if residual is not None else y), i32(o), i32(c),
           i32(h * wd), i32(groups), i32(b is not None), i32(residual is not None), i32(activation_code),
           f32(negative_slope), i32(rows_first))
    return y


def _grid(rows, hw, k, tm, nb):
    """(the first two global sizes, rows_first) of a product with `rows` rows, hw columns and
    inner size k."""
    blocks = (-(-hw // nb), -(-rows // tm))
    rows_first = 4 * k * hw >= _ROWS_FIRST_BYTES
    return (blocks[::-1] if rows_first else blocks), rows_first


def input_grad(dev, w, gy, x_shape, groups=1):
    """dL/dx (N, C, H, W) from gy (N, O, H, W)."""
    n, c, h, wd = x_shape
    o = w.shape[0]
    kernel, tm, nb = _kernel(dev, "pointwise_input_grad")
    gx = dev.empty(tuple(x_shape))
    grid, rows_first = _grid(c // groups, h * wd, o // groups, tm, nb)
    launch(dev, kernel, grid + (n * groups,), (1, 1, 1), buf(w), buf(gy), buf(gx), i32(o), i32(c), i32(h * wd),
           i32(groups), i32(rows_first))
    return gx


def weight_grad(dev, x, gy, w_shape, has_bias, groups=1):
    """(dL/dw (O, C / groups, 1, 1), dL/db (O,) or None): partial sums over slices of the
    batch, then their sum."""
    n, c, h, wd = x.shape
    o = w_shape[0]
    kernel, _, _ = _kernel(dev, "pointwise_weight_grad")
    nt_rows, nt_cols = _NT_BLOCK[_blocking(dev)[1]]
    cols = c // groups + int(has_bias)
    items = -(-cols // nt_cols) * -(-(o // groups) // nt_rows) * groups
    slices = max(1, min(n, -(-_SLICE_ITEMS // items)))
    per = -(-n // slices)
    slices = -(-n // per)
    part = dev.empty((slices, o, cols))
    launch(dev, kernel, (-(-cols // nt_cols), -(-(o // groups) // nt_rows), slices * groups), (1, 1, 1),
           buf(gy), buf(x), buf(part), i32(n), i32(per), i32(o), i32(c), i32(h * wd), i32(groups), i32(has_bias))
    gw = dev.empty(tuple(w_shape))
    gb = dev.empty((o,)) if has_bias else None
    reduce, _, _ = _kernel(dev, "pointwise_weight_reduce")
    launch(dev, reduce, (o * cols,), (16,), buf(part), buf(gw), buf(gb if has_bias else gw), i32(slices), i32(o),
           i32(c // groups), i32(has_bias))
    return gw, gb
