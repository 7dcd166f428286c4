"""BatchNorm2D host wrappers (kernels/batchnorm.cl), torch.nn.BatchNorm2d semantics.

x is NCHW float32; statistics are per channel over its N*H*W values. weight and bias are
(C,) arrays, or both None for affine=False. Train mode normalises with the batch mean and
biased variance and updates running_mean / running_var in place on the device (the running
variance takes the unbiased variance); eval mode normalises with the running statistics.
fold_into_conv folds an eval-mode BatchNorm into the convolution before it (host NumPy).

The batchnorm2d_add_* functions run a BatchNorm2D whose output goes straight into an Add (a
residual block's bn2 and its shortcut) as one step: y = act(bn(x) + residual). Their backward
takes y, applies the activation's gradient once and returns it with the BatchNorm's gradients:
it is what the residual receives.

activation (None, "relu", "relu6" or "leaky_relu" with negative_slope >= 0) fuses that
activation after the normalisation: the forward returns act(bn(x)), and the backward then
takes gy = dL/d(act(bn(x))) and needs bias as well as weight, to recompute the pre-activation
from x (no pass over the output).
"""
import math

import numpy as np

from ..device import ACTIVATION_CODES
from ..errors import ShapeError
from ._common import buf, check_array, f32, i32, launch, round_up

FUSABLE_ACTIVATIONS = ("relu", "relu6", "leaky_relu")

# Elements per work item of the elementwise kernels (a run, walked plane segment by plane
# segment): long enough that the per-segment channel lookup and the item's start-up vanish
# next to the streaming (1024: a 32x32 plane, the speed of a plain copy on PoCL), shortened
# down to MIN_RUN for small tensors so that every compute unit gets ITEMS_PER_UNIT items.
RUN = 1024
MIN_RUN = 64
# Chunks of one channel's N*H*W values per reduction work item: at most MAX_CHUNK so that the
# chunk's second pass (squared deviations) reads it from cache, at least MIN_CHUNK so that a
# work item's start-up is small next to its loop, and enough chunks for ITEMS_PER_UNIT work
# items per compute unit (16 channels would otherwise give a 2-core CPU 16 long items, and a
# single channel only one).
MAX_CHUNK = 8192
MIN_CHUNK = 256
ITEMS_PER_UNIT = 8
_MAX_INT = 2 ** 31 - 1


def _chunks(dev, channels, m):
    """(S, L): S chunks of L values per channel (the last chunk may be shorter)."""
    target = ITEMS_PER_UNIT * dev.cl_device.max_compute_units
    s = max(-(-m // MAX_CHUNK), min(-(-target // channels), -(-m // MIN_CHUNK)))
    length = -(-m // s)
    return -(-m // length), length


# The train-mode forward and backward run a channel per work item
# (batchnorm_forward_train_channel, batchnorm_backward_channel: one launch, the normalisation
# or the input gradient reading the channel back from the core's L2) on CPUs where a
# channel's values fit in BY_CHANNEL_FLOATS, its planes have at least BY_CHANNEL_PLANE values
# and there are BY_CHANNEL_ITEMS channels per compute unit; elsewhere the statistics in chunks,
# their combination and the elementwise pass. Batch 64, against those three launches, forward
# / backward: 96 channels of 32x32 1.54 / 2.31 -> 1.26 / 1.77 ms, 16 of 32x32 0.25 / 0.35 ->
# 0.20 / 0.24, 144 of 16x16 0.56 / 0.82 -> 0.44 / 0.64; but the forward of 64 of 8x8 0.07 ->
# 0.10 and of 384 of 4x4 even (a channel's small planes lie far apart: latency-bound).
# Smaller planes, where a channel is one chunk, go BLOCK_CHANNELS adjacent channels (at most;
# as many as keep BY_CHANNEL_ITEMS items per compute unit, 2 or more) per work item, walked in
# step image by image (the _block kernels): one contiguous run of planes per image. Batch 64,
# forward / backward against the three launches: 384 channels of 4x4 0.25 / 0.23 -> 0.11 /
# 0.12 ms, 192 of 8x8 0.22 / 0.28 -> 0.14 / 0.18, 64 of 8x8 0.08 / 0.10 -> 0.06 / 0.07.
BY_CHANNEL_FLOATS = 256 * 1024
BY_CHANNEL_PLANE = 256
BY_CHANNEL_ITEMS = ITEMS_PER_UNIT
BLOCK_CHANNELS = 16     # batchnorm.cl's CB_MAX


def _channels_per_item(dev, channels, m, hw, chunks):
    """1: a channel per work item; 2..BLOCK_CHANNELS: a block of channels per item; 0: the
    chunked launches."""
    if not dev.is_cpu or m > BY_CHANNEL_FLOATS:
        return 0
    items = BY_CHANNEL_ITEMS * dev.cl_device.max_compute_units
    if channels < items:
        return 0
    if hw >= BY_CHANNEL_PLANE:
        return 1
    per_item = min(BLOCK_CHANNELS, channels // max(1, items))
    return per_item if chunks == 1 and per_item >= 2 else 0


def _run(dev, total):
    """(items, R): the elementwise kernels' range, items runs of R elements."""
    target = ITEMS_PER_UNIT * dev.cl_device.max_compute_units
    run = min(RUN, max(MIN_RUN, round_up(-(-total // target), 8)))
    return -(-total // run), run


def _check_x(x):
    check_array(x, 4, "x")
    n, c, h, w = x.shape
    if x.size > _MAX_INT - RUN:
        raise ValueError(f"x of {x.size} elements is too large for 32-bit indexing; split the batch")
    return n, c, h * w


def _check_channels(c, **arrays):
    for name, a in arrays.items():
        if a is None:
            continue
        check_array(a, 1, name)
        if a.shape[0] != c:
            raise ShapeError(f"{name} has shape {tuple(a.shape)} but x has {c} channels; "
                             f"{name} must have shape ({c},)")


def _check_pair(first, second, names):
    if (first is None) != (second is None):
        raise ValueError(f"give both {names[0]} and {names[1]} or neither (got only one)")


def _factor(momentum, num_batches_tracked):
    """The running statistics' weight for this batch, as torch computes it."""
    if momentum is None:
        if num_batches_tracked is None or num_batches_tracked < 1:
            raise ValueError("momentum=None (cumulative average) needs num_batches_tracked >= 1, "
                             "the number of batches including this one")
        return 1.0 / num_batches_tracked
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
    return momentum


def _act_defines(activation, negative_slope):
    """The kernels' ACTIVATION / NEG_SLOPE defines for a fused activation."""
    if activation is None:
        return {}
    if activation not in FUSABLE_ACTIVATIONS:
        raise ValueError(f"batchnorm2d: activation must be None or one of {', '.join(FUSABLE_ACTIVATIONS)}, "
                         f"got {activation!r}; run other activations as their own layer")
    if activation == "leaky_relu":
        if not negative_slope >= 0:
            raise ValueError(f"batchnorm2d: leaky_relu needs negative_slope >= 0, got {negative_slope}")
        return {"ACTIVATION": ACTIVATION_CODES[activation], "NEG_SLOPE": float(negative_slope)}
    return {"ACTIVATION": ACTIVATION_CODES[activation]}


def _check_eps(eps):
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def batchnorm2d_forward_train(dev, x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5,
                              num_batches_tracked=None, activation=None, negative_slope=0.01):
    """-> (y, save_mean, save_invstd): y = act((x - mean) * invstd * weight + bias) with the batch
    mean and invstd = 1 / sqrt(biased variance + eps), both (C,) and kept for the backward.
    running_mean and running_var (None for no tracking) become in place
    (1 - momentum) * running + momentum * batch statistic, the variance unbiased (M / (M - 1)).
    momentum=None is torch's cumulative average, with weight 1 / num_batches_tracked (the
    count including this batch)."""
    return _forward_train(dev, x, None, weight, bias, running_mean, running_var, momentum, eps,
                          num_batches_tracked, activation, negative_slope)


def batchnorm2d_add_forward_train(dev, x, residual, weight, bias, running_mean, running_var, momentum=0.1,
                                  eps=1e-5, num_batches_tracked=None, activation=None, negative_slope=0.01):
    """-> (y, save_mean, save_invstd) as batchnorm2d_forward_train, with y = act(bn(x) + residual);
    residual has x's shape."""
    return _forward_train(dev, x, residual, weight, bias, running_mean, running_var, momentum, eps,
                          num_batches_tracked, activation, negative_slope)


def _check_residual(x, residual):
    check_array(residual, 4, "residual")
    if tuple(residual.shape) != tuple(x.shape):
        raise ShapeError(f"residual has shape {tuple(residual.shape)} but x has shape {tuple(x.shape)}; "
                         "the tensors added must have one shape")


def _forward_train(dev, x, residual, weight, bias, running_mean, running_var, momentum, eps,
                   num_batches_tracked, activation, negative_slope):
    n, c, hw = _check_x(x)
    if residual is not None:
        _check_residual(x, residual)
    _check_pair(weight, bias, ("weight", "bias"))
    _check_pair(running_mean, running_var, ("running_mean", "running_var"))
    _check_channels(c, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    _check_eps(eps)
    act = _act_defines(activation, negative_slope)
    m = n * hw
    if m <= 1:
        raise ShapeError(f"Expected more than 1 value per channel when training, got input size "
                         f"{tuple(x.shape)}; use a batch of 2 or more (or eval mode)")
    tracking = running_mean is not None
    factor = _factor(momentum, num_batches_tracked) if tracking else 0.0
    save_mean, save_invstd, y = dev.empty((c,)), dev.empty((c,)), dev.empty(x.shape)
    if c == 0:
        return y, save_mean, save_invstd
    s, length = _chunks(dev, c, m)
    per_item = _channels_per_item(dev, c, m, hw, s)
    if per_item:
        name = "batchnorm_forward_train_channel" if per_item == 1 else "batchnorm_forward_train_block"
        kernel = dev.kernel("batchnorm.cl", name, AFFINE=weight is not None, UPDATE_RUNNING=tracking,
                            RESIDUAL=residual is not None, **act)
        shape_args = (i32(length), i32(s)) if per_item == 1 else (i32(per_item),)
        # a work-group per item: PoCL would otherwise put several in one group, run by one core
        launch(dev, kernel, (-(-c // per_item),), (1,), buf(x), None if residual is None else buf(residual),
               buf(weight) if weight is not None else None, buf(bias) if weight is not None else None,
               buf(save_mean), buf(save_invstd), buf(running_mean) if tracking else None,
               buf(running_var) if tracking else None, buf(y), i32(c), i32(hw), i32(m), *shape_args,
               f32(eps), f32(factor))
        return y, save_mean, save_invstd
    part = dev.empty((c, s, 2))
    launch(dev, dev.kernel("batchnorm.cl", "batchnorm_stats_partial"), (s, c), None,
           buf(x), buf(part), i32(c), i32(hw), i32(m), i32(length), i32(s))
    launch(dev, dev.kernel("batchnorm.cl", "batchnorm_stats_combine", UPDATE_RUNNING=tracking), (c,), None,
           buf(part), buf(save_mean), buf(save_invstd), buf(running_mean) if tracking else None,
           buf(running_var) if tracking else None, i32(c), i32(s), i32(length), i32(m), f32(eps), f32(factor))
    _normalize(dev, x, residual, save_mean, save_invstd, weight, bias, y, eps, False, act)
    return y, save_mean, save_invstd


def batchnorm2d_forward_eval(dev, x, weight, bias, running_mean, running_var, eps=1e-5, activation=None,
                             negative_slope=0.01):
    """y = act((x - running_mean) / sqrt(running_var + eps) * weight + bias)."""
    return _forward_eval(dev, x, None, weight, bias, running_mean, running_var, eps, activation, negative_slope)


def batchnorm2d_add_forward_eval(dev, x, residual, weight, bias, running_mean, running_var, eps=1e-5,
                                 activation=None, negative_slope=0.01):
    """y = act((x - running_mean) / sqrt(running_var + eps) * weight + bias + residual)."""
    return _forward_eval(dev, x, residual, weight, bias, running_mean, running_var, eps, activation,
                         negative_slope)


def _forward_eval(dev, x, residual, weight, bias, running_mean, running_var, eps, activation, negative_slope):
    _, c, _ = _check_x(x)
    if residual is not None:
        _check_residual(x, residual)
    _check_pair(weight, bias, ("weight", "bias"))
    if running_mean is None or running_var is None:
        raise ValueError("eval mode needs running_mean and running_var")
    _check_channels(c, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    _check_eps(eps)
    act = _act_defines(activation, negative_slope)
    y = dev.empty(x.shape)
    _normalize(dev, x, residual, running_mean, running_var, weight, bias, y, eps, True, act)
    return y


def _normalize(dev, x, residual, mean, istat, weight, bias, y, eps, from_var, act):
    if x.size == 0:
        return
    _, c, h, w = x.shape
    affine = weight is not None
    kernel = dev.kernel("batchnorm.cl", "batchnorm_forward_normalize", AFFINE=affine, FROM_VAR=from_var,
                        RESIDUAL=residual is not None, **act)
    items, run = _run(dev, x.size)
    launch(dev, kernel, (items,), None, buf(x), None if residual is None else buf(residual),
           buf(mean), buf(istat),
           buf(weight) if affine else None, buf(bias) if affine else None, buf(y),
           i32(x.size), i32(c), i32(h * w), i32(run), f32(eps))


def batchnorm2d_backward(dev, x, gy, weight, save_mean, save_invstd, need_input_grad=True, bias=None,
                         activation=None, negative_slope=0.01):
    """Train-mode backward from the forward's save_mean and save_invstd -> (gx, gweight, gbias):
    gx = weight * invstd / M * (M g - sum(g) - xhat * sum(g xhat)) (None unless
    need_input_grad), gweight = sum(g xhat), gbias = sum(g) per channel (both None when
    weight is None), with xhat = (x - mean) * invstd, M = N*H*W, and g = gy, or with a fused
    activation gy times the activation's derivative at the pre-activation (bias is then
    needed when weight is given)."""
    _check_x(x)
    c = x.shape[1]
    _check_channels(c, weight=weight, bias=bias, save_mean=save_mean, save_invstd=save_invstd)
    act = _act_defines(activation, negative_slope)
    _check_fused_bias(act, weight, bias)
    return _backward(dev, x, gy, weight, bias, save_mean, save_invstd, 1.0, need_input_grad, True, act)


def _check_fused_bias(act, weight, bias):
    if act and weight is not None and bias is None:
        raise ValueError("batchnorm2d backward with a fused activation needs bias (with weight) to "
                         "recompute the activation's input; pass the layer's bias")


def batchnorm2d_backward_eval(dev, x, gy, weight, running_mean, running_var, eps=1e-5, need_input_grad=True,
                              bias=None, activation=None, negative_slope=0.01):
    """Eval-mode backward (running statistics are constants) -> (gx, gweight, gbias):
    gx = g * weight / sqrt(running_var + eps), gweight = sum(g xhat), gbias = sum(g),
    xhat = (x - running_mean) / sqrt(running_var + eps), g as in batchnorm2d_backward."""
    _check_x(x)
    c = x.shape[1]
    _check_channels(c, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    if running_mean is None or running_var is None:
        raise ValueError("eval mode needs running_mean and running_var")
    _check_eps(eps)
    act = _act_defines(activation, negative_slope)
    _check_fused_bias(act, weight, bias)
    return _backward(dev, x, gy, weight, bias, running_mean, running_var, eps, need_input_grad, False, act)


def batchnorm2d_add_backward(dev, x, y, gy, weight, save_mean, save_invstd, need_input_grad=True,
                             activation=None, negative_slope=0.01):
    """Backward of batchnorm2d_add_forward_train from its output y -> (gx, gweight, gbias,
    gresidual): g = gy times the activation's derivative, taken from y (gy itself, not a copy,
    without an activation) is gresidual, and gx, gweight, gbias are batchnorm2d_backward's for
    gradient g (gx None unless need_input_grad; gweight, gbias None when weight is None)."""
    _check_x(x)
    _check_channels(x.shape[1], weight=weight, save_mean=save_mean, save_invstd=save_invstd)
    act = _act_defines(activation, negative_slope)
    return _backward(dev, x, gy, weight, None, save_mean, save_invstd, 1.0, need_input_grad, True, act, y)


def batchnorm2d_add_backward_eval(dev, x, y, gy, weight, running_mean, running_var, eps=1e-5,
                                  need_input_grad=True, activation=None, negative_slope=0.01):
    """Backward of batchnorm2d_add_forward_eval -> (gx, gweight, gbias, gresidual), as
    batchnorm2d_add_backward with the running statistics held constant."""
    _check_x(x)
    _check_channels(x.shape[1], weight=weight, running_mean=running_mean, running_var=running_var)
    if running_mean is None or running_var is None:
        raise ValueError("eval mode needs running_mean and running_var")
    _check_eps(eps)
    act = _act_defines(activation, negative_slope)
    return _backward(dev, x, gy, weight, None, running_mean, running_var, eps, need_input_grad, False, act, y)


def _backward(dev, x, gy, weight, bias, mean, istat, eps, need_input_grad, train, act, y=None):
    """(gx, gweight, gbias), or with y (the fused BatchNorm + Add's output) also gresidual."""
    check_array(gy, 4, "gy")
    if tuple(gy.shape) != tuple(x.shape):
        raise ShapeError(f"gy shape {tuple(gy.shape)} differs from x shape {tuple(x.shape)}")
    residual = y is not None
    if residual:
        check_array(y, 4, "y")
        if tuple(y.shape) != tuple(x.shape):
            raise ShapeError(f"y shape {tuple(y.shape)} differs from x shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    hw, m = h * w, n * h * w
    affine = weight is not None
    gweight = dev.empty((c,)) if affine else None
    gbias = dev.empty((c,)) if affine else None
    gx = dev.empty(x.shape) if need_input_grad else None
    # With a residual and an activation the sums' pass writes the masked gradient g, which is
    # the residual's gradient and the BatchNorm's; without an activation g is gy itself.
    masked = residual and bool(act)
    g = dev.empty(x.shape) if masked else gy
    done = (lambda: (gx, gweight, gbias, g)) if residual else (lambda: (gx, gweight, gbias))
    if not affine and not need_input_grad and not masked:
        return done()
    if x.size == 0:
        if affine:
            gweight.fill(0.0)
            gbias.fill(0.0)
        return done()
    s, length = _chunks(dev, c, m)
    params = (buf(istat), buf(weight) if affine else None, buf(bias) if act and affine and not residual else None)
    per_item = _channels_per_item(dev, c, m, hw, s) if train else 0
    if per_item:
        name = "batchnorm_backward_channel" if per_item == 1 else "batchnorm_backward_block"
        kernel = dev.kernel("batchnorm.cl", name, AFFINE=affine, RESIDUAL=masked, **act)
        shape_args = (i32(length), i32(s)) if per_item == 1 else (i32(per_item),)
        launch(dev, kernel, (-(-c // per_item),), (1,), buf(x), buf(gy), buf(y) if masked else None,
               buf(g) if masked else None, buf(mean), *params, buf(gweight) if affine else None,
               buf(gbias) if affine else None, buf(gx) if need_input_grad else None, i32(need_input_grad), i32(c),
               i32(hw), i32(m), *shape_args, f32(eps))
        return done()
    part, coef = dev.empty((c, s, 2)), dev.empty((c, 3))
    launch(dev, dev.kernel("batchnorm.cl", "batchnorm_backward_partial", AFFINE=affine, FROM_VAR=not train,
                           RESIDUAL=masked, **act),
           (s, c), None, buf(x), buf(gy), buf(y) if masked else None, buf(g) if masked else None, buf(mean),
           *params, buf(part), i32(c), i32(hw), i32(m), i32(length), i32(s), f32(eps))
    launch(dev, dev.kernel("batchnorm.cl", "batchnorm_backward_combine", AFFINE=affine, FROM_VAR=not train,
                           TRAIN=train), (c,), None,
           buf(part), buf(istat), buf(weight) if affine else None, buf(gweight) if affine else None,
           buf(gbias) if affine else None, buf(coef), i32(c), i32(s), i32(m), f32(eps))
    if need_input_grad:
        # The input pass reads g, already masked, when there is a residual.
        fused = {} if residual else act
        items, run = _run(dev, x.size)
        launch(dev, dev.kernel("batchnorm.cl", "batchnorm_backward_input", TRAIN=train, AFFINE=affine,
                               FROM_VAR=not train, **fused), (items,), None,
               buf(x), buf(g), buf(mean), buf(istat), buf(weight) if affine else None,
               buf(bias) if fused and affine else None, buf(coef), buf(gx), i32(x.size), i32(c), i32(hw),
               i32(run), f32(eps))
    return done()


def fold_into_conv_device(dev, weight_conv, bias_conv, bn_weight, bn_bias, running_mean, running_var,
                          eps=1e-5):
    """fold_into_conv on device arrays, in one kernel and float32 arithmetic -> (weight, bias)
    device arrays: no statistics read back to the host (an eval forward of ResNet-20 folds 19
    BatchNorms, each read-back a wait for the device), and a recorded eval pass can replay it."""
    check_array(weight_conv, 4, "weight_conv")
    o = weight_conv.shape[0]
    _check_pair(bn_weight, bn_bias, ("bn_weight", "bn_bias"))
    for name, a in (("bias_conv", bias_conv), ("bn_weight", bn_weight), ("bn_bias", bn_bias),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if a is not None:
            check_array(a, 1, name)
            if a.shape != (o,):
                raise ShapeError(f"{name} has shape {tuple(a.shape)} but the convolution has {o} output "
                                 f"channels; it must have shape ({o},)")
    if running_mean is None or running_var is None:
        raise ValueError("folding needs running_mean and running_var")
    _check_eps(eps)

    def fold():
        weight, bias = dev.empty(weight_conv.shape), dev.empty((o,))
        if weight_conv.size:
            affine = bn_weight is not None
            launch(dev, dev.kernel("batchnorm.cl", "batchnorm_fold"), (o,), (16,),
                   buf(weight_conv), None if bias_conv is None else buf(bias_conv),
                   buf(bn_weight) if affine else None, buf(bn_bias) if affine else None,
                   buf(running_mean), buf(running_var), buf(weight), buf(bias),
                   i32(weight_conv.size // o), i32(o), f32(eps), i32(bias_conv is not None), i32(affine))
        return weight, bias
    return dev.derived(("batchnorm_fold", float(eps)),
                       (weight_conv, bias_conv, bn_weight, bn_bias, running_mean, running_var), fold)


def fold_into_conv(weight_conv, bias_conv, bn_weight, bn_bias, running_mean, running_var, eps=1e-5):
    """An eval-mode BatchNorm after a convolution, folded into it -> (weight, bias) as float32
    NumPy arrays: with scale = bn_weight / sqrt(running_var + eps), weight = weight_conv * scale
    per output channel and bias = (bias_conv - running_mean) * scale + bn_bias. bias_conv None
    counts as zeros; bn_weight and bn_bias None (affine=False) as ones and zeros. Arrays may
    be NumPy or device arrays; the arithmetic is float64."""
    def host(a):
        return None if a is None else np.asarray(a.get() if hasattr(a, "get") else a, dtype=np.float64)

    w, b = host(weight_conv), host(bias_conv)
    gamma, beta, mean, var = host(bn_weight), host(bn_bias), host(running_mean), host(running_var)
    if w is None or w.ndim != 4:
        raise ShapeError(f"weight_conv must be (out_channels, in_channels/groups, kh, kw), got "
                         f"{None if w is None else w.shape}")
    o = w.shape[0]
    _check_pair(bn_weight, bn_bias, ("bn_weight", "bn_bias"))
    for name, a in (("bias_conv", b), ("bn_weight", gamma), ("bn_bias", beta),
                    ("running_mean", mean), ("running_var", var)):
        if a is not None and a.shape != (o,):
            raise ShapeError(f"{name} has shape {a.shape} but the convolution has {o} output "
                             f"channels; it must have shape ({o},)")
    if mean is None or var is None:
        raise ValueError("folding needs running_mean and running_var")
    _check_eps(eps)
    scale = (np.ones(o) if gamma is None else gamma) / np.sqrt(var + eps)
    shift = ((np.zeros(o) if b is None else b) - mean) * scale + (np.zeros(o) if beta is None else beta)
    return (w * scale[:, None, None, None]).astype(np.float32), shift.astype(np.float32)
