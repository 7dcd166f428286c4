"""One description per op: its inputs, the device call, the NumPy oracle, FLOP and byte counts.

The benchmark (clcnn.bench, benchmarks/) times exactly these calls and tests/test_bench.py
checks exactly these calls against the oracle, so every benchmark figure is of a verified
computation (STYLE.md point 5).

An `OpCase` holds:
  make_inputs(rng) -> {name: numpy array}   (float32; "labels" int32; "gy" = upstream gradient)
  forward(dev, a)  -> tuple of device arrays   (a: the inputs on the device)
  backward(dev, a, out) -> tuple of device arrays, or None for a forward-only op
  oracle_forward(a) / oracle_backward(a, out): the same in NumPy (a, out: numpy arrays)
  flops / bytes: (forward, backward) counts, for GFLOP/s (conv, dense) or GB/s (the rest)

model_cases(model, input_shape, batch) lists the cases a training step of any Model runs: each
step of its fusion plan through the layers' `op_cases` hooks (so nothing here matches layer
types), the gradient sums of fan-out, then the fused loss and the grouped SGD update.
"""
import math

import numpy as np

from .oracle import activation as o_act
from .oracle import batchnorm as o_bn
from .oracle import conv2d as o_conv
from .oracle import dense as o_dense
from .oracle import dropout as o_drop
from .oracle import elementwise as o_ew
from .oracle import layout as o_layout
from .oracle import loss as o_loss
from .oracle import lrn as o_lrn
from .oracle import merge as o_merge
from .oracle import optim as o_optim
from .oracle import pool as o_pool
from .oracle import softmax as o_sm
from .ops import activation as k_act
from .ops import batchnorm as k_bn
from .ops import conv2d as k_conv
from .ops import dense as k_dense
from .ops import dropout as k_drop
from .ops import elementwise as k_ew
from .ops import layout as k_layout
from .ops import loss as k_loss
from .ops import lrn as k_lrn
from .ops import merge as k_merge
from .ops import optim as k_optim
from .ops import pool as k_pool
from .ops import softmax as k_sm
from .shapes import output_hw

F32 = 4  # bytes per element
# Tolerances (atol, rtol) for comparing a kernel with the float64 oracle; check() accepts
# |kernel - oracle| <= atol * max(1, rms(oracle)) + rtol * |oracle|. The absolute part scales
# with the tensor's RMS because a float32 sum's rounding error follows the size of its terms,
# not of its result: a weight gradient sums N*OH*OW products (65,536 in the benched layers)
# and entries near zero carry the error of the large ones around them.
# Conv/dense: sums of float32 products and conv2d.cl's rational tanh, ~1e-5 relative.
TOL_SUM = (1e-4, 1e-3)
# Pooling, activations, dropout, loss, the optimizer: a few float32 roundings per element.
TOL_ELEMENTWISE = (1e-5, 1e-4)


class OpCase:
    def __init__(self, name, kind, make_inputs, forward, oracle_forward, backward=None,
                 oracle_backward=None, flops=(0, 0), bytes=(0, 0), tol=TOL_ELEMENTWISE):
        self.name, self.kind = name, kind
        self.make_inputs, self.forward, self.backward = make_inputs, forward, backward
        self.oracle_forward, self.oracle_backward = oracle_forward, oracle_backward
        self.flops, self.bytes, self.tol = flops, bytes, tol

    @property
    def compute_bound(self):
        return self.flops[0] > 0

    def __repr__(self):
        return f"OpCase({self.name!r})"


def _normal(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _uniform(rng, shape, fan_in):
    bound = 1.0 / math.sqrt(fan_in)   # the layers' init: keeps tanh out of saturation
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _numel(*shapes):
    return sum(math.prod(s) for s in shapes)


def _drop_none(values):
    return tuple(v for v in values if v is not None)


# -- compute-bound ops ---------------------------------------------------------------------
def conv2d(x_shape, w_shape, stride=(1, 1), pads=(0, 0, 0, 0), bias=True, activation=None,
           need_input_grad=True, name=None, dilation=(1, 1), groups=1, negative_slope=0.01,
           pre_activation=False, algorithm=None, keep_pool=None, grad_from_pool=False, residual=False,
           input_residual=False):
    """Conv2D forward (bias and activation fused) and backward (activation gradient, then the
    input gradient if need_input_grad, the weight and bias gradients). groups == C > 1 runs
    the depthwise kernels (ops/depthwise.py), as the layer does. pre_activation: gy is already
    the gradient before the activation (the next AvgPool2D's backward undid it, fusion.py).
    algorithm: as ops.conv2d's (None: chosen per device and shape, as the layer does).
    keep_pool "avg" / "max": the forward also gives its output pooled 2x2 (stride 2) from the
    same call (keep_full, a train-mode fusion with the pooling layer after it, fusion.py).
    grad_from_pool: the backward takes the gradient of a 2x2 stride-2 average pooling of the
    activated output ("gy" has the pooled shape; ops.conv2d_backward_pooled: the pooling's
    backward deferred to it, fusion.py).
    residual: the forward adds an input "r" of the output's shape before the activation (an
    eval-mode convolution run into the Add after it, fusion.py); forward only.
    input_residual: the backward's input gradient includes an input "gr" of x's shape (the
    gradient a residual block's input has from its shortcut, model.backward)."""
    if grad_from_pool and pre_activation:
        raise ValueError("conv2d: grad_from_pool undoes the activation itself (no pre_activation)")
    if residual and (keep_pool or grad_from_pool):
        raise ValueError("conv2d: a residual is an eval-mode fusion: no keep_pool or grad_from_pool with it")
    if input_residual and (grad_from_pool or not need_input_grad or residual):
        raise ValueError("conv2d: input_residual goes with need_input_grad, without grad_from_pool or residual")
    n, c, h, w = x_shape
    o, cg, kh, kw = w_shape
    stride, pads, dilation = tuple(stride), tuple(pads), tuple(dilation)
    oh, ow = output_hw((h, w), (kh, kw), stride, pads, "conv2d", dilation)
    y_shape = (n, o, oh, ow)
    macs = n * o * cg * kh * kw * oh * ow
    extra = dict(dilation=dilation, groups=groups, algorithm=algorithm)
    undo = activation and not pre_activation

    gy_shape = (n, o, oh // 2, ow // 2) if grad_from_pool else y_shape

    def make(rng):
        a = {"x": _normal(rng, x_shape), "w": _uniform(rng, w_shape, cg * kh * kw),
             "gy": _normal(rng, gy_shape)}
        if bias:
            a["b"] = _uniform(rng, (o,), cg * kh * kw)
        if residual:
            a["r"] = _normal(rng, y_shape)
        if input_residual:
            a["gr"] = _normal(rng, x_shape)
        return a

    def forward(dev, a):
        if residual:
            return (k_conv.conv2d_forward(dev, a["x"], a["w"], a.get("b"), stride, pads, activation=activation,
                                          negative_slope=negative_slope, residual=a["r"], **extra),)
        if keep_pool:
            return k_conv.conv2d_forward(dev, a["x"], a["w"], a.get("b"), stride, pads, activation=activation,
                                         negative_slope=negative_slope, pool=keep_pool, keep_full=True, **extra)
        return (k_conv.conv2d_forward(dev, a["x"], a["w"], a.get("b"), stride, pads, activation=activation,
                                      negative_slope=negative_slope, **extra),)

    def backward(dev, a, out):
        if grad_from_pool:
            return _drop_none(k_conv.conv2d_backward_pooled(
                dev, a["x"], a["w"], a["gy"], out[0] if activation else None, stride, pads, activation=activation,
                negative_slope=negative_slope, need_input_grad=need_input_grad, has_bias=bias, dilation=dilation,
                groups=groups))
        gy = a["gy"]
        if undo:
            gy = k_act.activation_backward(dev, activation, out[0], gy, negative_slope)
        return _drop_none(k_conv.conv2d_backward(dev, a["x"], a["w"], gy, stride, pads,
                                                 need_input_grad=need_input_grad, has_bias=bias,
                                                 input_residual=a.get("gr"), **extra))

    def o_forward(a):
        y = o_conv.conv2d_forward(a["x"], a["w"], a.get("b"), stride, pads, dilation, groups)
        y = y + a["r"] if residual else y
        y = o_act.activation_forward(activation, y, negative_slope) if activation else y
        if keep_pool == "avg":
            return y, o_pool.avgpool2d_forward(y, (2, 2), (2, 2), (0, 0, 0, 0))
        if keep_pool == "max":
            return y, o_pool.maxpool2d_forward(y, (2, 2), (2, 2), (0, 0, 0, 0))[0]
        return (y,)

    def o_backward(a, out):
        gy = a["gy"]
        if grad_from_pool:
            gy = o_pool.avgpool2d_backward(gy, y_shape, (2, 2), (2, 2), (0, 0, 0, 0))
        gy = o_act.activation_backward(activation, out[0], gy, negative_slope) if undo else gy
        gx, gw, gb = o_conv.conv2d_backward(a["x"], a["w"], gy, stride, pads, dilation, groups)
        gx = gx + a["gr"] if input_residual else gx
        return _drop_none((gx if need_input_grad else None, gw, gb if bias else None))

    act_bytes = 2 * _numel(y_shape) if undo else 0
    pooled_shape = (n, o, oh // 2, ow // 2) if keep_pool else ()
    fwd_bytes = F32 * _numel(x_shape, w_shape, y_shape, (o,) if bias else (), pooled_shape,
                             y_shape if residual else ())
    bwd_bytes = F32 * (_numel(x_shape, w_shape, y_shape) * 2 + act_bytes + (_numel(x_shape) if input_residual else 0))
    kind = "depthwise " if groups > 1 and groups == c else (f"g{groups} " if groups > 1 else "")
    name = name or (f"conv2d {kind}{c}->{o} {kh}x{kw}" + (f" s{stride[0]}" if stride != (1, 1) else "")
                    + (f" d{dilation[0]}" if dilation != (1, 1) else "")
                    + (f" pad{pads}" if any(pads) else "") + (f" +{activation}" if activation else "")
                    + (f" +{keep_pool}pool" if keep_pool else "") + (" +pool backward" if grad_from_pool else "")
                    + (" +residual" if residual else "") + (" +input residual" if input_residual else "")
                    + (f" ({algorithm})" if algorithm else ""))
    if residual:
        backward = o_backward = None
    return OpCase(name, "conv2d", make, forward, o_forward, backward, o_backward,
                  flops=(2 * macs, 2 * macs * (2 if need_input_grad else 1)),
                  bytes=(fwd_bytes, bwd_bytes), tol=TOL_SUM)


def dense(n, in_features, out_features, bias=True, activation=None, need_input_grad=True, name=None,
          negative_slope=0.01, pre_activation=False, input_activation=None, input_slope=0.01):
    """Dense forward y = act(x w^T + b) and backward (activation gradient unless
    pre_activation, gx if need_input_grad, gw, gb). input_activation: x is that activation's
    output (input_slope LeakyReLU's) and gx comes through its backward, in the same launch
    (the previous layer's activation backward, fusion.activation_deferrals)."""
    undo = activation and not pre_activation

    def make(rng):
        x = _normal(rng, (n, in_features))
        if input_activation:
            x = o_act.activation_forward(input_activation, x, input_slope).astype(np.float32)
        a = {"x": x, "w": _uniform(rng, (out_features, in_features), in_features),
             "gy": _normal(rng, (n, out_features))}
        if bias:
            a["b"] = _uniform(rng, (out_features,), in_features)
        return a

    def forward(dev, a):
        return (k_dense.dense_forward(dev, a["x"], a["w"], a.get("b"), activation=activation,
                                      negative_slope=negative_slope),)

    def backward(dev, a, out):
        gy = a["gy"]
        if undo:
            gy = k_act.activation_backward(dev, activation, out[0], gy, negative_slope)
        return _drop_none(k_dense.dense_backward(dev, a["x"], a["w"], gy, has_bias=bias,
                                                 need_input_grad=need_input_grad,
                                                 input_activation=input_activation, negative_slope=input_slope))

    def o_forward(a):
        return (o_dense.dense_forward(a["x"], a["w"], a.get("b"), activation=activation,
                                      negative_slope=negative_slope),)

    def o_backward(a, out):
        gy = o_act.activation_backward(activation, out[0], a["gy"], negative_slope) if undo else a["gy"]
        gx, gw, gb = o_dense.dense_backward(a["x"], a["w"], gy, has_bias=bias, need_input_grad=need_input_grad)
        if input_activation:
            gx = o_act.activation_backward(input_activation, a["x"], gx, input_slope)
        return _drop_none((gx, gw, gb))

    macs = n * in_features * out_features
    shapes = ((n, in_features), (out_features, in_features), (n, out_features))
    name = name or (f"dense {in_features}->{out_features}" + (f" +{activation}" if activation else "")
                    + (f" +{input_activation} backward of its input" if input_activation else ""))
    return OpCase(name, "dense", make, forward, o_forward, backward, o_backward,
                  flops=(2 * macs, 2 * macs * (2 if need_input_grad else 1)),
                  bytes=(F32 * _numel(*shapes), 2 * F32 * _numel(*shapes)), tol=TOL_SUM)


def gemm(m, n, k, trans_a=False, trans_b=False):
    """C = op(A) op(B), (M, N), op a transpose where asked: the kernel under dense and the
    conv weight gradient."""
    def make(rng):
        return {"a": _normal(rng, (k, m) if trans_a else (m, k)), "b": _normal(rng, (n, k) if trans_b else (k, n))}
    return OpCase(f"gemm {m}x{n}x{k}" + (" At" if trans_a else "") + (" Bt" if trans_b else ""), "gemm", make,
                  lambda dev, a: (k_dense.gemm(dev, a["a"], a["b"], trans_a, trans_b),),
                  lambda a: (o_dense.gemm(a["a"], a["b"], trans_a, trans_b),),
                  flops=(2 * m * n * k, 0), bytes=(F32 * (m * k + k * n + m * n), 0), tol=TOL_SUM)


# -- memory-bound ops ----------------------------------------------------------------------
def pool2d(kind, x_shape, kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0), count_include_pad=True,
           undo_activation=None, negative_slope=0.01, integers=False, pooled_by_producer=False):
    """kind: "max", "avg", "global_max" or "global_avg". undo_activation (avg and max): x is
    that activation's output and the backward also goes back through it, in one pass
    (fusion.py). integers: small integer inputs, so max windows hold exact ties.
    pooled_by_producer (avg): the convolution before it wrote its output (a train-mode fusion,
    fusion.py): no forward kernel of its own, the backward only."""
    n, c, h, w = x_shape
    kernel, stride, pads = tuple(kernel), tuple(stride), tuple(pads)
    if kind.startswith("global"):
        y_shape = (n, c, 1, 1)
        name = f"{kind}pool2d"
    else:
        y_shape = (n, c) + output_hw((h, w), kernel, stride, pads, "pool")
        name = f"{kind}pool2d {kernel[0]}x{kernel[1]} s{stride[0]}"

    if undo_activation and kind not in ("avg", "max"):
        raise ValueError("pool2d: only the average and max pools' backward undo an activation")
    act = undo_activation

    def make(rng):
        x = rng.integers(-3, 4, x_shape).astype(np.float32) if integers else _normal(rng, x_shape)
        if act:     # a value the activation can give
            x = o_act.activation_forward(act, x.astype(np.float64), negative_slope).astype(np.float32)
        return {"x": x, "gy": _normal(rng, y_shape)}

    if kind == "avg":
        def forward(dev, a):
            return (k_pool.avgpool2d_forward(dev, a["x"], kernel, stride, pads, count_include_pad),)

        def backward(dev, a, out):
            return (k_pool.avgpool2d_backward(dev, a["gy"], x_shape, kernel, stride, pads, count_include_pad,
                                              activation=act, act_output=a["x"] if act else None,
                                              negative_slope=negative_slope),)

        def o_forward(a):
            return (o_pool.avgpool2d_forward(a["x"], kernel, stride, pads, count_include_pad),)

        def o_backward(a, out):
            gx = o_pool.avgpool2d_backward(a["gy"], x_shape, kernel, stride, pads, count_include_pad)
            return (o_act.activation_backward(act, a["x"], gx, negative_slope) if act else gx,)
    elif kind == "max":
        def forward(dev, a):
            return k_pool.maxpool2d_forward(dev, a["x"], kernel, stride, pads)

        def backward(dev, a, out):
            return (k_pool.maxpool2d_backward(dev, a["gy"], out[1], x_shape, kernel, stride, pads,
                                              activation=act, act_output=a["x"] if act else None,
                                              negative_slope=negative_slope),)

        def o_forward(a):
            return o_pool.maxpool2d_forward(a["x"], kernel, stride, pads)

        def o_backward(a, out):
            gx = o_pool.maxpool2d_backward(a["gy"], out[1], x_shape)
            return (o_act.activation_backward(act, a["x"], gx, negative_slope) if act else gx,)
    elif kind == "global_avg":
        def forward(dev, a):
            return (k_pool.global_avgpool2d_forward(dev, a["x"]),)

        def backward(dev, a, out):
            return (k_pool.global_avgpool2d_backward(dev, a["gy"], x_shape),)

        def o_forward(a):
            return (o_pool.global_avgpool2d_forward(a["x"]),)

        def o_backward(a, out):
            return (o_pool.global_avgpool2d_backward(a["gy"], x_shape),)
    elif kind == "global_max":
        def forward(dev, a):
            return k_pool.global_maxpool2d_forward(dev, a["x"])

        def backward(dev, a, out):
            return (k_pool.global_maxpool2d_backward(dev, a["gy"], out[1], x_shape),)

        def o_forward(a):
            return o_pool.global_maxpool2d_forward(a["x"])

        def o_backward(a, out):
            return (o_pool.global_maxpool2d_backward(a["gy"], out[1], x_shape),)
    else:
        raise ValueError(f"unknown pooling {kind!r}")
    # Forward reads x and writes y (+ argmax for max); backward reads gy (+ argmax), writes gx.
    extra = _numel(y_shape) if "max" in kind else 0
    moved = (F32 * (_numel(x_shape, y_shape) + extra),
             F32 * (_numel(x_shape, y_shape) + extra + (_numel(x_shape) if act else 0)))
    name += f" +{act} backward" if act else ""
    if pooled_by_producer:
        if kind != "avg":
            raise ValueError("pool2d: only the average pool's output comes from its producer")
        forward, o_forward = (lambda dev, a: ()), (lambda a: ())
        moved, name = (0, moved[1]), name.replace("avgpool2d", "avgpool2d (fwd in conv)")
    return OpCase(name, "pool", make, forward, o_forward, backward, o_backward, bytes=moved)


def activation(name, shape, negative_slope=0.01):
    def make(rng):
        return {"x": _normal(rng, shape), "gy": _normal(rng, shape)}
    size = _numel(shape)
    return OpCase(
        name, "activation", make,
        lambda dev, a: (k_act.activation_forward(dev, name, a["x"], negative_slope),),
        lambda a: (o_act.activation_forward(name, a["x"], negative_slope),),
        lambda dev, a, out: (k_act.activation_backward(dev, name, out[0], a["gy"], negative_slope),),
        lambda a, out: (o_act.activation_backward(name, out[0], a["gy"], negative_slope),),
        bytes=(2 * F32 * size, 3 * F32 * size))


def softmax(shape):
    def make(rng):
        return {"x": _normal(rng, shape), "gy": _normal(rng, shape)}
    size = _numel(shape)
    return OpCase(
        "softmax", "activation", make,
        lambda dev, a: (k_act.softmax_forward(dev, a["x"]),),
        lambda a: (o_act.softmax_forward(a["x"]),),
        lambda dev, a, out: (k_act.softmax_backward(dev, out[0], a["gy"]),),
        lambda a, out: (o_act.softmax_backward(out[0], a["gy"]),),
        bytes=(2 * F32 * size, 3 * F32 * size))


def dropout(shape, p, seed=1234, step=0):
    def make(rng):
        return {"x": _normal(rng, shape), "gy": _normal(rng, shape)}
    size = _numel(shape)
    return OpCase(
        f"dropout p={p}", "dropout", make,
        lambda dev, a: k_drop.dropout_forward(dev, a["x"], p, seed, step),
        lambda a: o_drop.dropout_forward(a["x"], p, seed, step),
        lambda dev, a, out: (k_drop.dropout_backward(dev, a["gy"], out[1]),),
        lambda a, out: (o_drop.dropout_backward(a["gy"], out[1]),),
        bytes=(3 * F32 * size, 3 * F32 * size))


def add(shape, count=2, activation=None, name=None):
    """Add of `count` tensors of one shape (+ fused relu); backward: the one gradient every
    input receives."""
    def make(rng):
        a = {f"x{i}": _normal(rng, shape) for i in range(count)}
        a["gy"] = _normal(rng, shape)
        return a
    xs = lambda a: [a[f"x{i}"] for i in range(count)]
    size = _numel(shape)
    return OpCase(
        name or f"add x{count}" + (f" +{activation}" if activation else ""), "merge", make,
        lambda dev, a: (k_merge.add_forward(dev, xs(a), activation),),
        lambda a: (o_merge.add_forward(xs(a), activation),),
        lambda dev, a, out: (k_merge.add_backward(dev, a["gy"], count, activation, out[0]),),
        lambda a, out: (o_merge.add_backward(a["gy"], count, activation, out[0]),),
        bytes=((count + 1) * F32 * size, (3 if activation else 0) * F32 * size))


def concat(shapes, axis=1):
    """Concat of tensors that agree on every axis but `axis`; backward splits gy."""
    sizes = [s[axis] for s in shapes]
    y_shape = tuple(shapes[0][:axis]) + (sum(sizes),) + tuple(shapes[0][axis + 1:])

    def make(rng):
        a = {f"x{i}": _normal(rng, s) for i, s in enumerate(shapes)}
        a["gy"] = _normal(rng, y_shape)
        return a
    xs = lambda a: [a[f"x{i}"] for i in range(len(shapes))]
    size = _numel(y_shape)
    return OpCase(
        f"concat x{len(shapes)} axis={axis}", "merge", make,
        lambda dev, a: (k_merge.concat_forward(dev, xs(a), axis),),
        lambda a: (o_merge.concat_forward(xs(a), axis),),
        lambda dev, a, out: tuple(k_merge.concat_backward(dev, a["gy"], sizes, axis)),
        lambda a, out: tuple(o_merge.concat_backward(a["gy"], sizes, axis)),
        bytes=(2 * F32 * size, 2 * F32 * size))


def batchnorm2d(x_shape, affine=True, training=True, need_input_grad=True, momentum=0.1, eps=1e-5, name=None,
                activation=None, negative_slope=0.01, residuals=0):
    """BatchNorm2D as torch.nn.BatchNorm2d, with an optional fused activation after it (y =
    act(bn(x)), gy its gradient). Train: forward (y, save_mean, save_invstd, running_mean,
    running_var), the running statistics updated in place; backward (gx if need_input_grad,
    gweight, gbias if affine) with the batch-statistics terms. Eval: forward (y,) from the
    running statistics; backward with them held constant. residuals > 0: the BatchNorm runs
    into an Add of that many more tensors of x's shape (fusion.step_call), y = act(bn(x) +
    r0 + ...), and the backward also gives the residuals' one gradient."""
    c = x_shape[1]
    act = dict(activation=activation, negative_slope=negative_slope)
    rs = [f"r{i}" for i in range(residuals)]

    def make(rng):
        a = {"x": _normal(rng, x_shape, 2.0) + 1.0, "gy": _normal(rng, x_shape),
             "running_mean": _normal(rng, (c,), 0.5),
             "running_var": rng.uniform(0.5, 2.0, c).astype(np.float32)}
        if affine:
            a["weight"], a["bias"] = _normal(rng, (c,)), _normal(rng, (c,))
        for r in rs:
            a[r] = _normal(rng, x_shape)
        return a

    def residual(dev, a):
        return a[rs[0]] if residuals == 1 else k_merge.add_forward(dev, [a[r] for r in rs])

    def forward(dev, a):
        stats = (a["running_mean"], a["running_var"])
        if residuals and not training:
            return (k_bn.batchnorm2d_add_forward_eval(dev, a["x"], residual(dev, a), a.get("weight"), a.get("bias"),
                                                      *stats, eps, **act),)
        if residuals:
            out = k_bn.batchnorm2d_add_forward_train(dev, a["x"], residual(dev, a), a.get("weight"), a.get("bias"),
                                                     *stats, momentum, eps, **act)
            return out + stats
        if not training:
            return (k_bn.batchnorm2d_forward_eval(dev, a["x"], a.get("weight"), a.get("bias"), *stats, eps, **act),)
        return k_bn.batchnorm2d_forward_train(dev, a["x"], a.get("weight"), a.get("bias"), *stats, momentum, eps,
                                              **act) + stats

    def backward(dev, a, out):
        if residuals and training:
            grads = k_bn.batchnorm2d_add_backward(dev, a["x"], out[0], a["gy"], a.get("weight"), out[1], out[2],
                                                  need_input_grad=need_input_grad, **act)
        elif residuals:
            grads = k_bn.batchnorm2d_add_backward_eval(dev, a["x"], out[0], a["gy"], a.get("weight"),
                                                       a["running_mean"], a["running_var"], eps,
                                                       need_input_grad=need_input_grad, **act)
        elif training:
            grads = k_bn.batchnorm2d_backward(dev, a["x"], a["gy"], a.get("weight"), out[1], out[2],
                                              need_input_grad=need_input_grad, bias=a.get("bias"), **act)
        else:
            grads = k_bn.batchnorm2d_backward_eval(dev, a["x"], a["gy"], a.get("weight"), a["running_mean"],
                                                   a["running_var"], eps, need_input_grad=need_input_grad,
                                                   bias=a.get("bias"), **act)
        return _drop_none(grads)

    def activate(y):
        return o_act.activation_forward(activation, y, negative_slope) if activation else y

    def o_forward(a):
        added = sum((a[r] for r in rs), np.zeros(x_shape))
        if not training:
            return (activate(o_bn.batchnorm2d_forward_eval(a["x"], a.get("weight"), a.get("bias"),
                                                           a["running_mean"], a["running_var"], eps) + added),)
        out = o_bn.batchnorm2d_forward_train(a["x"], a.get("weight"), a.get("bias"), a["running_mean"],
                                             a["running_var"], momentum, eps)
        return (activate(out[0] + added),) + tuple(out[1:])

    def o_backward(a, out):
        gy = o_act.activation_backward(activation, out[0], a["gy"], negative_slope) if activation else a["gy"]
        if training:
            gx, gw, gb = o_bn.batchnorm2d_backward(a["x"], gy, a.get("weight"), out[1], out[2])
        else:
            gx, gw, gb = o_bn.batchnorm2d_backward_eval(a["x"], gy, a.get("weight"), a["running_mean"],
                                                        a["running_var"], eps)
        return _drop_none((gx if need_input_grad else None, gw, gb, gy if residuals else None))

    size = _numel(x_shape)
    # Forward: the statistics read x once (the second pass over a chunk hits the cache), the
    # normalisation reads x (and the residual) and writes y. Backward: the sums read x and gy, gx
    # reads both again (a fused activation's gradient is recomputed from x: no more traffic;
    # with a residual its mask is read from y and the masked gradient written once).
    fwd = ((3 if training else 2) + min(residuals, 1)) * F32 * size
    bwd = ((5 if need_input_grad else 2) + (2 if residuals and activation else 0)) * F32 * size
    name = (name or f"batchnorm2d {c}" + ("" if training else " eval") + ("" if affine else " affine=False")
            + (f" +add x{residuals + 1}" if residuals else "") + (f" +{activation}" if activation else ""))
    # Sums over N*H*W values per channel, as the conv weight gradient: TOL_SUM.
    return OpCase(name, "batchnorm", make, forward, o_forward, backward, o_backward,
                  bytes=(fwd, bwd), tol=TOL_SUM)

def softmax_cross_entropy(n, classes):
    """Forward: (loss (1,), probs); backward: dL/dlogits."""
    def make(rng):
        return {"logits": _normal(rng, (n, classes), 3.0),
                "labels": rng.integers(0, classes, n).astype(np.int32)}

    def o_forward(a):
        loss, probs = o_loss.softmax_cross_entropy_forward(a["logits"], a["labels"])
        return np.reshape(loss, (1,)), probs
    size = n * classes
    return OpCase(
        "softmax cross-entropy", "loss", make,
        lambda dev, a: k_loss.softmax_cross_entropy_forward(dev, a["logits"], a["labels"]),
        o_forward,
        lambda dev, a, out: (k_loss.softmax_cross_entropy_backward(dev, out[1], a["labels"]),),
        lambda a, out: (o_loss.softmax_cross_entropy_backward(out[1], a["labels"]),),
        bytes=(F32 * (2 * size + 2 * n), F32 * (2 * size + n)))


def softmax_cross_entropy_train(n, classes):
    """The training form of the loss (what Trainer.train_step runs): one kernel gives dL/dlogits
    of the mean cross-entropy and the batch's (loss, correct count) into a stats slot."""
    def make(rng):
        return {"logits": _normal(rng, (n, classes), 3.0),
                "labels": rng.integers(0, classes, n).astype(np.int32),
                "stats": np.zeros((2, 2), np.float32)}

    def forward(dev, a):
        dlogits = k_loss.softmax_cross_entropy_train(dev, a["logits"], a["labels"], a["stats"], 1)
        return dlogits, a["stats"]

    def o_forward(a):
        loss, probs = o_loss.softmax_cross_entropy_forward(a["logits"], a["labels"])
        stats = np.zeros((2, 2))
        stats[1] = loss, np.sum(np.argmax(a["logits"], axis=1) == a["labels"])
        return o_loss.softmax_cross_entropy_backward(probs, a["labels"]), stats
    size = n * classes
    return OpCase("softmax cross-entropy train", "loss", make, forward, o_forward,
                  bytes=(F32 * (2 * size + 3 * n), 0))


def mse(shape):
    """Mean squared error: forward (loss (1,)), backward dL/dpred."""
    def make(rng):
        return {"pred": _normal(rng, shape), "target": _normal(rng, shape)}
    size = _numel(shape)
    return OpCase(
        "mse", "loss", make,
        lambda dev, a: (k_loss.mse_forward(dev, a["pred"], a["target"]),),
        lambda a: (np.reshape(o_loss.mse_forward(a["pred"], a["target"]), (1,)),),
        lambda dev, a, out: (k_loss.mse_backward(dev, a["pred"], a["target"]),),
        lambda a, out: (o_loss.mse_backward(a["pred"], a["target"]),),
        bytes=(2 * F32 * size, 3 * F32 * size))


def sgd(param_shapes, lr=0.01, momentum=0.9, weight_decay=0.0, nesterov=False, grouped=True):
    """One SGD step over every parameter (torch.optim.SGD, not the first step). grouped: the
    one call optim.SGD makes (sgd_update_many, twelve tensors a launch); else sgd_update per
    tensor. Forward only; it updates param and buffer in place and returns them."""
    def make(rng):
        a = {}
        for i, shape in enumerate(param_shapes):
            a[f"p{i}"], a[f"g{i}"], a[f"m{i}"] = _normal(rng, shape), _normal(rng, shape), _normal(rng, shape)
        return a
    count = range(len(param_shapes))
    settings = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)

    def forward(dev, a):
        if grouped:
            k_optim.sgd_update_many(dev, [a[f"p{i}"] for i in count], [a[f"g{i}"] for i in count],
                                    [a[f"m{i}"] for i in count], **settings)
        else:
            for i in count:
                k_optim.sgd_update(dev, a[f"p{i}"], a[f"g{i}"], a[f"m{i}"], **settings)
        return tuple(x for i in count for x in (a[f"p{i}"], a[f"m{i}"]))

    def o_forward(a):
        return tuple(x for i in count for x in o_optim.sgd_update(a[f"p{i}"], a[f"g{i}"], a[f"m{i}"], **settings))
    size = _numel(*param_shapes)
    return OpCase(f"sgd{' grouped' if grouped else ''} momentum={momentum} ({len(param_shapes)} tensors)", "optim",
                  make, forward, o_forward, bytes=(5 * F32 * size, 0))


def adam(param_shapes, lr=1e-3, weight_decay=0.0, step=3):
    """One torch.optim.Adam step (number `step`) over every parameter, in place."""
    def make(rng):
        a = {}
        for i, shape in enumerate(param_shapes):
            a[f"p{i}"], a[f"g{i}"], a[f"m{i}"] = _normal(rng, shape), _normal(rng, shape), _normal(rng, shape, 0.1)
            a[f"v{i}"] = np.abs(_normal(rng, shape, 0.1))
        return a
    count = range(len(param_shapes))

    def forward(dev, a):
        for i in count:
            k_optim.adam_update(dev, a[f"p{i}"], a[f"g{i}"], a[f"m{i}"], a[f"v{i}"], lr,
                                weight_decay=weight_decay, step=step)
        return tuple(a[f"{k}{i}"] for i in count for k in "pmv")

    def o_forward(a):
        return tuple(x for i in count for x in o_optim.adam_update(
            a[f"p{i}"], a[f"g{i}"], a[f"m{i}"], a[f"v{i}"], lr, weight_decay=weight_decay, step=step))
    return OpCase(f"adam ({len(param_shapes)} tensors)", "optim", make, forward, o_forward,
                  bytes=(7 * F32 * _numel(*param_shapes), 0))


# -- a whole model ---------------------------------------------------------------------------
def model_cases(model, input_shape, batch, momentum=0.9):
    """[(call name, OpCase), ...]: the kernels one training step of `model` (any Model) runs on
    (batch,) + input_shape, as Trainer.train_step runs it: the forward and backward of each
    step of the model's fusion plan (a conv/dense/Add with the activation it absorbs as one
    case, an AvgPool2D whose backward also undoes its producer's activation, BatchNorm in train
    mode), the sums of gradients where a tensor feeds several calls ("accumulate", add x2),
    then (None, the fused softmax cross-entropy train kernel) and (None, the grouped SGD
    update). Calls without a kernel (Flatten, Identity, Dropout p=0) give nothing."""
    from . import fusion
    calls, count = model._calls, model._input_count()
    shapes = model._shapes([tuple(input_shape)] if count == 1 else model.input_shapes)
    plan = fusion.plan(calls, model._outputs, count, training=True)
    undone = {step.pool_from for step in plan if step.pool_from is not None}
    deferred = {step.pool_from: k for k, step in enumerate(plan)
                if fusion.defers_pool_backward(step, plan, calls, count)}
    # a Dense running the backward of the activation its input comes from (k -> its producer)
    input_activations = {k: p for k, p in fusion.activation_deferrals(plan, calls, model._outputs, count).items()
                         if fusion.step_activation(plan[p], calls) is not None}
    # a Conv2D adding its input's gradient from the other readers to its own (no accumulate)
    residual_steps = fusion.input_residual_steps(plan, calls, count)
    cases = []
    for k, step in enumerate(plan):
        call = calls[step.position]
        layer, inputs = fusion.step_call(step, calls, count)
        if k in deferred.values():
            # Both passes run in its convolution's: the forward (a train-mode plan pools every
            # deferred AvgPool2D in its Conv2D's step, step.pooled) and the backward
            # (grad_from_pool below).
            continue
        fused = {}
        if step.activation is not None:
            act = calls[step.activation].layer
            fused = dict(fused_activation=act.fusable_activation, negative_slope=act.negative_slope)
        if (k in undone and k not in deferred) or k in input_activations.values():
            fused["pre_activation"] = True
        if k in input_activations:
            name, slope = fusion.step_activation(plan[input_activations[k]], calls)
            fused.update(input_activation=name, input_slope=slope)
        if step.pool_from is not None:
            producer = plan[step.pool_from]
            if producer.activation is not None:
                act = calls[producer.activation].layer
                fused.update(undo_activation=act.fusable_activation, negative_slope=act.negative_slope)
        if step.keeps_pool is not None:
            fused["keep_pool"] = calls[step.keeps_pool].layer.fusable_as
        if k in deferred:
            fused["grad_from_pool"] = True
        if step.pooled:
            fused["pooled_by_producer"] = True
        if k in residual_steps:
            fused["input_residual"] = True
        for case in layer.op_cases([shapes[v] for v in inputs], batch,
                                   need_input_grad=any(v >= count for v in inputs), **fused):
            cases.append((call.name, case))
    # Model.backward sums the gradients of a value read by several calls (inputs excepted: a
    # training step asks for no input gradient), by an add pass where no convolution adds
    # them in its kernel.
    for v in range(count, count + len(calls)):
        readers = sum(call.inputs.count(v) for call in calls)
        folded = sum(1 for k in residual_steps if fusion.step_call(plan[k], calls, count)[1] == [v])
        for _ in range(readers - 1 - folded):
            case = add((batch,) + shapes[v], 2, name="accumulate")
            case.backward = case.oracle_backward = None      # a sum of gradients has no backward
            case.bytes = (case.bytes[0], 0)
            cases.append((calls[v - count].name, case))
    cases.append((None, softmax_cross_entropy_train(batch, math.prod(shapes[-1]))))
    cases.append((None, sgd([p.shape for p in model.parameters()], momentum=momentum)))
    return cases


def _compare(got, want, atol, rtol):
    """(ok, max |got - want|, max ratio of error to bound) under the one error rule."""
    got = got.get().astype(np.float64) if hasattr(got, "get") else np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, float("inf"), float("inf")
    if not want.size:
        return True, 0.0, 0.0
    got, want = np.atleast_1d(got), np.atleast_1d(want)
    err = np.abs(got - want)
    err[np.isnan(got) != np.isnan(want)] = np.inf      # NaN where the oracle has a number, or back
    err[np.isnan(got) & np.isnan(want)] = 0.0
    finite = want[np.isfinite(want)]
    scale = max(1.0, float(np.sqrt(np.mean(finite ** 2)))) if finite.size else 1.0
    bound = atol * scale + rtol * np.abs(np.where(np.isfinite(want), want, 0.0))
    err[np.isinf(want) & (got == want)] = 0.0
    worst = float(err.max())
    return bool(np.all(err <= bound)), worst, float(np.max(err / bound))


def check(case, dev, rng):
    """Run the case on `dev` and in the float64 oracle from the same inputs. The one error
    rule: |kernel - oracle| <= atol * max(1, rms(oracle)) + rtol * |oracle| everywhere (case.tol
    = (atol, rtol)); a NaN the oracle does not have fails. Returns {"ok", "max_error": max
    |kernel - oracle|, "worst": the output holding it, "forward"/"backward": {"ok",
    "max_error", "ratio"} per pass (backward None for a forward-only op), "ratio": the largest
    error / bound (<= 1 passes)}."""
    a = case.make_inputs(rng)
    d = {k: dev.to_device(v, dtype=v.dtype) for k, v in a.items()}
    a64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in a.items()}
    out = case.forward(dev, d)
    expected = case.oracle_forward(a64)
    passes = {"forward": list(zip(out, expected)), "backward": None}
    if case.backward is not None:
        passes["backward"] = list(zip(case.backward(dev, d, out), case.oracle_backward(a64, expected)))
    result = {"ok": True, "max_error": 0.0, "worst": None, "ratio": 0.0, "backward": None}
    for what, pairs in passes.items():
        if pairs is None:
            continue
        entry = {"ok": True, "max_error": 0.0, "ratio": 0.0}
        for j, (got, want) in enumerate(pairs):
            ok, err, ratio = _compare(got, want, *case.tol)
            entry["ok"] &= ok
            entry["ratio"] = max(entry["ratio"], ratio)
            if err >= entry["max_error"]:
                entry["max_error"] = err
            if err >= result["max_error"]:
                result["max_error"], result["worst"] = err, f"{what}[{j}]"
        result[what] = entry
        result["ok"] &= entry["ok"]
        result["ratio"] = max(result["ratio"], entry["ratio"])
    return result


def model_step(model, input_shape, batch, lr=0.1):
    """One training step of `model` (on its device) as Trainer.train_step runs it: forward,
    the fused cross-entropy train kernel, backward, a plain SGD update; against clcnn.reference
    over the same graph from the state the forward starts from. Outputs: logits, the step's
    (loss, correct), each parameter's gradient and new value, each buffer's new value (sorted
    by name). check() runs forward before the oracle, which reads the state forward saw."""
    from . import reference
    from .optim import SGD
    classes = model.output_shapes(tuple(input_shape))[-1][0]
    trainable = sorted(p.name for p in model.parameters())
    buffers = sorted(k for k, p in model.named_tensors().items() if not p.trainable)
    seen = {}

    def make(rng):
        return {"x": _normal(rng, (batch,) + tuple(input_shape)),
                "labels": rng.integers(0, classes, batch).astype(np.int32)}

    def forward(dev, a):
        seen["state"] = reference.snapshot(model)
        model.train()
        logits = model(a["x"])
        stats = dev.zeros((1, 2))
        model.backward(k_loss.softmax_cross_entropy_train(dev, logits, a["labels"], stats, 0), need_input_grad=False)
        named = model.named_tensors()
        grads = [named[k].grad.copy() for k in trainable]
        SGD(model, lr=lr).step()
        return (logits, stats.reshape(2), *grads, *[named[k].data for k in trainable + buffers])

    def o_forward(a):
        logits, run = reference.forward(model, a["x"], seen["state"], training=True)
        loss, probs = o_loss.softmax_cross_entropy_forward(logits, a["labels"])
        correct = np.sum(np.argmax(logits, axis=1) == a["labels"])
        _, grads = reference.backward(model, run, o_loss.softmax_cross_entropy_backward(probs, a["labels"]))

        def value(key):
            layer, name = key.rsplit(".", 1)
            return run.state[layer][name]
        return (logits, np.array([loss, correct]), *[grads[k] for k in trainable],
                *[value(k) - lr * grads[k] for k in trainable], *[value(k) for k in buffers])
    return OpCase(f"training step {type(model).__name__} {len(model._calls)} calls", "model", make, forward,
                  o_forward, tol=TOL_SUM)


# -- the operators of imported (ONNX) models -------------------------------------------------
def binary(op, a_shape, b_shape, need=(True, True)):
    """y = a <op> b with NumPy broadcasting (op: add, sub, mul, div); backward: the gradients
    of the operands in `need` (a constant operand has none), each summed over its broadcast
    axes. Divisors are kept away from 0 (|b| >= 0.5)."""
    shape = k_ew.broadcast_shape(op, a_shape, b_shape)

    def make(rng):
        b = _normal(rng, b_shape)
        if op == "div":
            b = (np.sign(b) + (b == 0)) * (0.5 + np.abs(b))
        return {"a": _normal(rng, a_shape), "b": b.astype(np.float32), "gy": _normal(rng, shape)}

    def backward(dev, a, out):
        return _drop_none(k_ew.binary_backward(dev, op, a["a"], a["b"], a["gy"], out[0], need=need))

    def o_backward(a, out):
        grads = o_ew.binary_backward(op, a["a"], a["b"], a["gy"])
        return tuple(g for g, wanted in zip(grads, need) if wanted)
    size = _numel(shape)
    return OpCase(f"{op} {tuple(a_shape)} {tuple(b_shape)}", "elementwise", make,
                  lambda dev, a: (k_ew.binary_forward(dev, op, a["a"], a["b"]),),
                  lambda a: (o_ew.binary_forward(op, a["a"], a["b"]),), backward, o_backward,
                  bytes=(F32 * (size + _numel(a_shape, b_shape)), F32 * 4 * size), tol=TOL_SUM)


def prelu(shape, num_parameters=1):
    """PReLU with 1 or C slopes; backward (gx, gweight), gweight summed over all but channels."""
    def make(rng):
        return {"x": _normal(rng, shape), "w": _normal(rng, (num_parameters,), 0.5), "gy": _normal(rng, shape)}
    size = _numel(shape)
    return OpCase(f"prelu x{num_parameters}", "activation", make,
                  lambda dev, a: (k_ew.prelu_forward(dev, a["x"], a["w"]),),
                  lambda a: (o_ew.prelu_forward(a["x"], a["w"]),),
                  lambda dev, a, out: k_ew.prelu_backward(dev, a["x"], a["w"], a["gy"]),
                  lambda a, out: o_ew.prelu_backward(a["x"], a["w"], a["gy"]),
                  bytes=(2 * F32 * size, 4 * F32 * size), tol=TOL_SUM)


def clip(shape, lo=None, hi=None):
    def make(rng):
        return {"x": _normal(rng, shape), "gy": _normal(rng, shape)}
    size = _numel(shape)
    return OpCase(f"clip [{lo}, {hi}]", "activation", make,
                  lambda dev, a: (k_ew.clip_forward(dev, a["x"], lo, hi),),
                  lambda a: (o_ew.clip_forward(a["x"], lo, hi),),
                  lambda dev, a, out: (k_ew.clip_backward(dev, a["x"], a["gy"], lo, hi),),
                  lambda a, out: (o_ew.clip_backward(a["x"], a["gy"], lo, hi),),
                  bytes=(2 * F32 * size, 3 * F32 * size))


def transpose(shape, perm):
    """Transpose by perm (every axis, batch included); backward: the inverse permutation."""
    def make(rng):
        return {"x": _normal(rng, shape), "gy": _normal(rng, tuple(shape[p] for p in perm))}
    size = _numel(shape)
    return OpCase(f"transpose {tuple(perm)}", "layout", make,
                  lambda dev, a: (k_layout.transpose(dev, a["x"], perm),),
                  lambda a: (o_layout.transpose(a["x"], perm),),
                  lambda dev, a, out: (k_layout.transpose_backward(dev, a["gy"], perm),),
                  lambda a, out: (o_layout.transpose_backward(a["gy"], perm),),
                  bytes=(2 * F32 * size, 2 * F32 * size))


def pad(shape, pads, value=0.0):
    """Constant pad of the last two axes by (top, bottom, left, right); backward: the inner part."""
    y_shape = k_layout.pad_shape(shape, pads)

    def make(rng):
        return {"x": _normal(rng, shape), "gy": _normal(rng, y_shape)}
    return OpCase(f"pad {tuple(pads)}", "layout", make,
                  lambda dev, a: (k_layout.pad_forward(dev, a["x"], pads, value),),
                  lambda a: (o_layout.pad_forward(a["x"], pads, value),),
                  lambda dev, a, out: (k_layout.pad_backward(dev, a["gy"], shape, pads),),
                  lambda a, out: (o_layout.pad_backward(a["gy"], shape, pads),),
                  bytes=(F32 * _numel(shape, y_shape),) * 2)


def lrn(shape, size, alpha=1e-4, beta=0.75, k=1.0):
    """LRN across channels; forward (y, s), backward gx from x, y, s and gy."""
    def make(rng):
        return {"x": _normal(rng, shape), "gy": _normal(rng, shape)}
    n = _numel(shape)
    return OpCase(f"lrn size={size}", "normalization", make,
                  lambda dev, a: k_lrn.lrn_forward(dev, a["x"], size, alpha, beta, k),
                  lambda a: o_lrn.lrn_forward(a["x"], size, alpha, beta, k),
                  lambda dev, a, out: (k_lrn.lrn_backward(dev, a["x"], out[0], out[1], a["gy"], size, alpha, beta),),
                  lambda a, out: (o_lrn.lrn_backward(a["x"], out[0], out[1], a["gy"], size, alpha, beta),),
                  bytes=(3 * F32 * n, 4 * F32 * n))


def softmax_axis(shape, axis, log=False):
    """Softmax (log: LogSoftmax) along any axis; backward from the forward output."""
    def make(rng):
        return {"x": _normal(rng, shape), "gy": _normal(rng, shape)}
    size = _numel(shape)
    return OpCase(f"{'log_' if log else ''}softmax axis={axis}", "activation", make,
                  lambda dev, a: (k_sm.softmax_forward(dev, a["x"], axis, log),),
                  lambda a: (o_sm.softmax_forward(a["x"], axis, log),),
                  lambda dev, a, out: (k_sm.softmax_backward(dev, out[0], a["gy"], axis, log),),
                  lambda a, out: (o_sm.softmax_backward(out[0], a["gy"], axis, log),),
                  bytes=(2 * F32 * size, 3 * F32 * size))
