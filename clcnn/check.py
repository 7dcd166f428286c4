"""`clcnn check`: every op's kernels, forward and backward, on one device against the NumPy
oracle over a fixed set of shapes, then one LeNet-5 training step against the oracle network.

Each op is scored by its largest scaled error over its cases: max |kernel - oracle| divided by
the largest |oracle| value of that output (so one number fits outputs of any magnitude); a NaN
where the oracle has a number scores inf. The tolerance per op says what float32 can be held
to: selections and the dropout mask are exact, elementwise maps a few ulps (tanh and sigmoid
use fast approximations in the fused kernels), sums of hundreds of products ~1e-6 relative in
practice, allowed 1e-4. An op whose kernels raise (a build failure on this driver) fails with
the message, and the check goes on with the next op.
"""
import time

import numpy as np

from .device import get_device
from .oracle import activation as o_act
from .oracle import conv2d as o_conv
from .oracle import dense as o_dense
from .oracle import dropout as o_drop
from .oracle import loss as o_loss
from .oracle import network as o_net
from .oracle import optim as o_optim
from .oracle import pool as o_pool

SUM_TOL = 1e-4        # float32 sums of up to a few thousand products vs the float64 oracle
ELEMENTWISE_TOL = 1e-5
EXACT_TOL = 0.0

# (x shape, w shape, stride, pads): LeNet-5's three convolutions at batch 2, a 3x3 "same"
# layer with stride 2, a 1x1, and an asymmetric kernel with asymmetric padding.
CONV_SHAPES = [
    ((2, 1, 32, 32), (6, 1, 5, 5), (1, 1), (0, 0, 0, 0)),
    ((2, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0, 0, 0)),
    ((3, 16, 5, 5), (120, 16, 5, 5), (1, 1), (0, 0, 0, 0)),
    ((2, 3, 15, 13), (8, 3, 3, 3), (2, 2), (1, 1, 1, 1)),
    ((1, 5, 7, 9), (4, 5, 1, 1), (1, 1), (0, 0, 0, 0)),
    ((2, 2, 9, 11), (3, 2, 4, 2), (1, 3), (2, 1, 0, 1)),
]
# (x shape, kernel, stride, pads)
POOL_SHAPES = [
    ((2, 6, 28, 28), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((2, 3, 11, 9), (3, 3), (2, 2), (1, 1, 1, 1)),
    ((1, 2, 8, 13), (3, 2), (1, 2), (0, 2, 1, 0)),
]
GLOBAL_SHAPES = [(2, 5, 7, 7), (3, 4, 1, 9)]
ELEMENTWISE_SHAPES = [(2, 6, 28, 28), (5, 84), (3, 1, 1, 7)]
GEMM_SHAPES = [(64, 84, 120), (7, 13, 5), (1, 10, 84)]                  # (M, N, K)
DENSE_SHAPES = [(4, 120, 84), (3, 84, 10), (5, 7, 1)]                   # (N, in, out)
LOSS_SHAPES = [(8, 10), (1, 3), (33, 17)]
OPTIM_SHAPES = [(6, 1, 5, 5), (84,), (10, 84)]


def _error(got, ref):
    """max |got - ref| / max |ref| (inf for a NaN or Inf the oracle does not have)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf")
    if not np.array_equal(np.isfinite(got), np.isfinite(ref)):
        return float("inf")
    finite = np.isfinite(ref)
    if not finite.any():
        return 0.0
    diff = np.abs(got[finite] - ref[finite])
    scale = np.abs(ref[finite]).max()
    return float(diff.max() / scale) if scale > 0 else float(diff.max())


def _f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# -- one function per op: yields, per case, [(kernel output, oracle output), ...] ------------

def _conv2d(dev, rng, backward):
    from .ops import conv2d as ops
    for x_shape, w_shape, stride, pads in CONV_SHAPES:
        x, w, b = _f32(rng, x_shape), _f32(rng, w_shape, 0.2), _f32(rng, w_shape[:1])
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        if not backward:
            y = ops.conv2d_forward(dev, dev.to_device(x), dev.to_device(w), dev.to_device(b), stride, pads)
            yield [(y.get(), o_conv.conv2d_forward(x64, w64, b.astype(np.float64), stride, pads))]
            continue
        ref_y = o_conv.conv2d_forward(x64, w64, None, stride, pads)
        gy = _f32(rng, ref_y.shape)
        got = ops.conv2d_backward(dev, dev.to_device(x), dev.to_device(w), dev.to_device(gy), stride, pads)
        ref = o_conv.conv2d_backward(x64, w64, gy.astype(np.float64), stride, pads)
        yield [(g.get(), r) for g, r in zip(got, ref)]


def _pool(dev, rng, kind, backward):
    from .ops import pool as ops
    for shape, kernel, stride, pads in POOL_SHAPES:
        # Integer values: exact ties inside windows, which max pooling must break like the oracle.
        x = rng.integers(-3, 4, size=shape).astype(np.float32) if kind == "max" else _f32(rng, shape)
        xd = dev.to_device(x)
        if kind == "max":
            y, argmax = ops.maxpool2d_forward(dev, xd, kernel, stride, pads)
            ref_y, ref_arg = o_pool.maxpool2d_forward(x, kernel, stride, pads)
            if not backward:
                yield [(y.get(), ref_y), (argmax.get(), ref_arg)]
                continue
            gy = _f32(rng, ref_y.shape)
            gx = ops.maxpool2d_backward(dev, dev.to_device(gy), argmax, shape)
            yield [(gx.get(), o_pool.maxpool2d_backward(gy.astype(np.float64), ref_arg, shape))]
        else:
            x64 = x.astype(np.float64)
            if not backward:
                yield [(ops.avgpool2d_forward(dev, xd, kernel, stride, pads, inc).get(),
                        o_pool.avgpool2d_forward(x64, kernel, stride, pads, inc)) for inc in (True, False)]
                continue
            ref_y = o_pool.avgpool2d_forward(x64, kernel, stride, pads)
            gy = _f32(rng, ref_y.shape)
            yield [(ops.avgpool2d_backward(dev, dev.to_device(gy), shape, kernel, stride, pads, inc).get(),
                    o_pool.avgpool2d_backward(gy.astype(np.float64), shape, kernel, stride, pads, inc))
                   for inc in (True, False)]


def _global_pool(dev, rng, kind, backward):
    from .ops import pool as ops
    for shape in GLOBAL_SHAPES:
        x = rng.integers(-3, 4, size=shape).astype(np.float32) if kind == "max" else _f32(rng, shape)
        xd = dev.to_device(x)
        gy = _f32(rng, shape[:2] + (1, 1))
        if kind == "max":
            y, argmax = ops.global_maxpool2d_forward(dev, xd)
            ref_y, ref_arg = o_pool.global_maxpool2d_forward(x)
            yield ([(ops.global_maxpool2d_backward(dev, dev.to_device(gy), argmax, shape).get(),
                     o_pool.global_maxpool2d_backward(gy.astype(np.float64), ref_arg, shape))] if backward
                   else [(y.get(), ref_y), (argmax.get(), ref_arg)])
        elif backward:
            yield [(ops.global_avgpool2d_backward(dev, dev.to_device(gy), shape).get(),
                    o_pool.global_avgpool2d_backward(gy.astype(np.float64), shape))]
        else:
            yield [(ops.global_avgpool2d_forward(dev, xd).get(),
                    o_pool.global_avgpool2d_forward(x.astype(np.float64)))]


def _activation(dev, rng, backward):
    from .ops import activation as ops
    for shape in ELEMENTWISE_SHAPES:
        x = _f32(rng, shape, 3.0)
        pairs = []
        for name in ops.NAMES:
            y = ops.activation_forward(dev, name, dev.to_device(x), negative_slope=0.1)
            ref_y = o_act.activation_forward(name, x.astype(np.float64), negative_slope=0.1)
            if backward:
                gy = _f32(rng, shape)
                # Both from the same forward output, so only the backward kernel is compared.
                got = ops.activation_backward(dev, name, y, dev.to_device(gy), negative_slope=0.1)
                ref = o_act.activation_backward(name, y.get().astype(np.float64), gy.astype(np.float64), 0.1)
                pairs.append((got.get(), ref))
            else:
                pairs.append((y.get(), ref_y))
        yield pairs


def _softmax(dev, rng, backward):
    from .ops import activation as ops
    for shape in LOSS_SHAPES:
        x = _f32(rng, shape, 4.0)
        y = ops.softmax_forward(dev, dev.to_device(x))
        if not backward:
            yield [(y.get(), o_act.softmax_forward(x.astype(np.float64)))]
            continue
        gy = _f32(rng, shape)
        got = ops.softmax_backward(dev, y, dev.to_device(gy))
        yield [(got.get(), o_act.softmax_backward(y.get().astype(np.float64), gy.astype(np.float64)))]


def _gemm(dev, rng, backward):
    from .ops import dense as ops
    for m, n, k in GEMM_SHAPES:
        pairs = []
        for trans_a in (False, True):
            for trans_b in (False, True):
                a = _f32(rng, (k, m) if trans_a else (m, k))
                b = _f32(rng, (n, k) if trans_b else (k, n))
                got = ops.gemm(dev, dev.to_device(a), dev.to_device(b), trans_a, trans_b)
                pairs.append((got.get(), o_dense.gemm(a.astype(np.float64), b.astype(np.float64), trans_a, trans_b)))
        yield pairs


def _dense(dev, rng, backward):
    from .ops import dense as ops
    for n, i, o in DENSE_SHAPES:
        x, w, b = _f32(rng, (n, i)), _f32(rng, (o, i), 0.3), _f32(rng, (o,))
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        if not backward:
            yield [(ops.dense_forward(dev, dev.to_device(x), dev.to_device(w), dev.to_device(b), act).get(),
                    o_dense.dense_forward(x64, w64, b.astype(np.float64), act)) for act in (None, "relu")]
            continue
        gy = _f32(rng, (n, o))
        got = ops.dense_backward(dev, dev.to_device(x), dev.to_device(w), dev.to_device(gy))
        ref = o_dense.dense_backward(x64, w64, gy.astype(np.float64))
        yield [(g.get(), r) for g, r in zip(got, ref)]


def _dropout(dev, rng, backward):
    from .ops import dropout as ops
    for shape, p in (((4, 84), 0.5), ((2, 3, 7, 5), 0.2), ((1, 1000), 0.9)):
        x = _f32(rng, shape)
        y, mask = ops.dropout_forward(dev, dev.to_device(x), p, seed=12345, step=7)
        ref_y, ref_mask = o_drop.dropout_forward(x, p, 12345, 7)
        if not backward:
            yield [(y.get(), ref_y), (mask.get(), ref_mask)]
            continue
        gy = _f32(rng, shape)
        yield [(ops.dropout_backward(dev, dev.to_device(gy), mask).get(), o_drop.dropout_backward(gy, ref_mask))]


def _cross_entropy(dev, rng, backward):
    from .ops import loss as ops
    for n, k in LOSS_SHAPES:
        logits = _f32(rng, (n, k), 3.0)
        labels = rng.integers(0, k, size=n).astype(np.int32)
        loss, probs = ops.softmax_cross_entropy_forward(dev, dev.to_device(logits), dev.to_device(labels, np.int32))
        ref_loss, ref_probs = o_loss.softmax_cross_entropy_forward(logits.astype(np.float64), labels)
        if not backward:
            yield [(loss.get()[0], ref_loss), (probs.get(), ref_probs)]
            continue
        got = ops.softmax_cross_entropy_backward(dev, probs, dev.to_device(labels, np.int32))
        yield [(got.get(), o_loss.softmax_cross_entropy_backward(ref_probs, labels))]


def _mse(dev, rng, backward):
    from .ops import loss as ops
    for shape in ((8, 10), (3, 1, 5, 5), (1000,)):
        pred, target = _f32(rng, shape), _f32(rng, shape)
        p64, t64 = pred.astype(np.float64), target.astype(np.float64)
        args = (dev, dev.to_device(pred), dev.to_device(target))
        yield ([(ops.mse_backward(*args).get(), o_loss.mse_backward(p64, t64))] if backward
               else [(ops.mse_forward(*args).get()[0], o_loss.mse_forward(p64, t64))])


def _sgd(dev, rng, backward):
    from .ops import optim as ops
    for shape in OPTIM_SHAPES:
        param, grad, mom = _f32(rng, shape), _f32(rng, shape), _f32(rng, shape)
        pd, md = dev.to_device(param), dev.to_device(mom)
        ops.sgd_update(dev, pd, dev.to_device(grad), md, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
        ref_p, ref_m = o_optim.sgd_update(*(a.astype(np.float64) for a in (param, grad, mom)), lr=0.1,
                                          momentum=0.9, weight_decay=1e-3, nesterov=True)
        yield [(pd.get(), ref_p), (md.get(), ref_m)]


def _adam(dev, rng, backward):
    from .ops import optim as ops
    for shape in OPTIM_SHAPES:
        param, grad, m = _f32(rng, shape), _f32(rng, shape), _f32(rng, shape, 0.1)
        v = np.abs(_f32(rng, shape, 0.1))
        arrays = [dev.to_device(a) for a in (param, grad, m, v)]
        ops.adam_update(dev, *arrays, lr=1e-3, weight_decay=1e-2, step=3)
        ref = o_optim.adam_update(*(a.astype(np.float64) for a in (param, grad, m, v)), lr=1e-3,
                                  weight_decay=1e-2, step=3)
        yield [(arrays[0].get(), ref[0]), (arrays[2].get(), ref[1]), (arrays[3].get(), ref[2])]


def _lenet5_step(dev, rng, backward):
    """One forward/backward of LeNet-5 (fused conv+tanh, pooling, dense) and an SGD update,
    against the oracle network run in float64 on the same weights."""
    from . import init
    from .losses import SoftmaxCrossEntropy
    from .models import lenet5
    from .optim import SGD
    from .serialization import architecture
    init.seed(0)
    model = lenet5(device=dev)
    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    x = _f32(rng, (4, 1, 32, 32))
    labels = rng.integers(0, 10, size=4)
    loss = SoftmaxCrossEntropy()
    logits = model(x)
    value = loss(logits, labels)
    model.backward(loss.backward())
    grads = {p.name: p.grad.get() for p in model.parameters()}
    SGD(model, lr=0.1).step()

    arch = architecture(model)
    ref_logits, tape = o_net.forward(arch, params, x.astype(np.float64))
    ref_value, probs = o_loss.softmax_cross_entropy_forward(ref_logits, labels)
    _, ref_grads = o_net.backward(arch, params, tape, o_loss.softmax_cross_entropy_backward(probs, labels))
    after = model.state_dict()
    pairs = [(logits.get(), ref_logits), (value, ref_value)]
    pairs += [(grads[name], ref_grads[name]) for name in sorted(ref_grads)]
    pairs += [(after[name], params[name] - 0.1 * ref_grads[name]) for name in sorted(ref_grads)]
    yield pairs


# (op, function, keyword arguments, tolerance on the scaled error)
OPS = [
    ("conv2d forward", _conv2d, dict(backward=False), SUM_TOL),
    ("conv2d backward", _conv2d, dict(backward=True), SUM_TOL),
    ("maxpool2d forward", _pool, dict(kind="max", backward=False), EXACT_TOL),
    ("maxpool2d backward", _pool, dict(kind="max", backward=True), ELEMENTWISE_TOL),
    ("avgpool2d forward", _pool, dict(kind="avg", backward=False), ELEMENTWISE_TOL),
    ("avgpool2d backward", _pool, dict(kind="avg", backward=True), ELEMENTWISE_TOL),
    ("global_maxpool2d forward", _global_pool, dict(kind="max", backward=False), EXACT_TOL),
    ("global_maxpool2d backward", _global_pool, dict(kind="max", backward=True), ELEMENTWISE_TOL),
    ("global_avgpool2d forward", _global_pool, dict(kind="avg", backward=False), ELEMENTWISE_TOL),
    ("global_avgpool2d backward", _global_pool, dict(kind="avg", backward=True), ELEMENTWISE_TOL),
    ("activation forward", _activation, dict(backward=False), ELEMENTWISE_TOL),
    ("activation backward", _activation, dict(backward=True), ELEMENTWISE_TOL),
    ("softmax forward", _softmax, dict(backward=False), ELEMENTWISE_TOL),
    ("softmax backward", _softmax, dict(backward=True), ELEMENTWISE_TOL),
    ("gemm", _gemm, dict(backward=False), SUM_TOL),
    ("dense forward", _dense, dict(backward=False), SUM_TOL),
    ("dense backward", _dense, dict(backward=True), SUM_TOL),
    ("dropout forward", _dropout, dict(backward=False), EXACT_TOL),
    ("dropout backward", _dropout, dict(backward=True), EXACT_TOL),
    # The loss is logsumexp(z) - z[label]: a difference, so its error scales with |z|, not with
    # the (smaller) loss it is divided by.
    ("cross_entropy forward", _cross_entropy, dict(backward=False), SUM_TOL),
    ("cross_entropy backward", _cross_entropy, dict(backward=True), ELEMENTWISE_TOL),
    ("mse forward", _mse, dict(backward=False), ELEMENTWISE_TOL),
    ("mse backward", _mse, dict(backward=True), ELEMENTWISE_TOL),
    ("sgd update", _sgd, dict(backward=False), ELEMENTWISE_TOL),
    ("adam update", _adam, dict(backward=False), ELEMENTWISE_TOL),
    ("lenet5 step", _lenet5_step, dict(backward=True), SUM_TOL),
]


def run(device_spec=None, seed=0):
    """Run every op on the device; {"device", "index", "passed", "seconds", "results": [{"op",
    "cases", "max_error", "tolerance", "passed"[, "error"]}, ...]}. JSON-able."""
    dev = get_device(device_spec)
    start = time.perf_counter()
    results = []
    for op, func, kwargs, tol in OPS:
        rng = np.random.default_rng([seed, len(results)])
        entry = {"op": op, "cases": 0, "max_error": 0.0, "tolerance": tol, "passed": True}
        try:
            for pairs in func(dev, rng, **kwargs):
                entry["cases"] += 1
                entry["max_error"] = max([entry["max_error"]] + [_error(g, r) for g, r in pairs])
            dev.synchronize()
        except Exception as exc:   # a kernel that fails to build or run on this driver
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["passed"] = False
        if not entry["max_error"] <= tol:
            entry["passed"] = False
        results.append(entry)
    return {"device": f"{dev.name} ({dev.platform.name.strip()})", "index": dev.index,
            "passed": all(r["passed"] for r in results), "seconds": round(time.perf_counter() - start, 2),
            "results": results}


def format_report(report):
    """The table: op, cases, max error, tolerance, PASS/FAIL; then a one-line verdict."""
    rows = [("op", "cases", "max error", "tolerance", "result")]
    for r in report["results"]:
        rows.append((r["op"], str(r["cases"]), f"{r['max_error']:.2e}", f"{r['tolerance']:.0e}",
                     "pass" if r["passed"] else "FAIL"))
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    lines = [f"clcnn check on {report['device']} [{report['index']}]"]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append("-" * len(lines[-1]))
    for r in report["results"]:
        if r.get("error"):
            lines.append(f"{r['op']}: {r['error']}")
    failed = [r["op"] for r in report["results"] if not r["passed"]]
    lines.append(f"all {len(rows) - 1} ops pass ({report['seconds']:.1f} s)" if not failed
                 else f"{len(failed)} of {len(rows) - 1} ops FAIL: {', '.join(failed)}")
    return "\n".join(lines)
