"""`clcnn check`: every op's kernels, forward and backward, on one device against the NumPy
oracle over a fixed set of shapes, then whole training steps of LeNet-5 and a small ResNet-20
against clcnn.reference.

Every case is a clcnn.opspec description and is judged by opspec.check: one error rule,
|kernel - oracle| <= atol * max(1, rms(oracle)) + rtol * |oracle| with the case's (atol, rtol),
and a NaN the oracle does not have fails. Each family of cases gives a forward and a backward
row: the cases' count, the largest |kernel - oracle|, the tolerance and pass/fail. An op whose
kernels raise (a build failure on this driver) fails with the message, and the check goes on.
"""
import time

import numpy as np

from . import opspec
from .device import get_device

ACTIVATIONS = ("relu", "leaky_relu", "relu6", "tanh", "sigmoid")


def _conv():
    # LeNet-5's convolutions, a stride-2 3x3, two 1x1 (on CPUs the pointwise kernels: without
    # bias, and a MobileNet-style expansion with bias and ReLU6), an asymmetric kernel and
    # padding; fused activations in the forward and the activation gradient in the backward.
    return [opspec.conv2d((2, 1, 32, 32), (6, 1, 5, 5), activation="tanh"),
            opspec.conv2d((2, 6, 14, 14), (16, 6, 5, 5)),
            opspec.conv2d((3, 16, 5, 5), (120, 16, 5, 5), activation="relu"),
            opspec.conv2d((2, 3, 15, 13), (8, 3, 3, 3), (2, 2), (1, 1, 1, 1), activation="relu6"),
            opspec.conv2d((1, 5, 7, 9), (4, 5, 1, 1), bias=False),
            opspec.conv2d((2, 16, 8, 8), (24, 16, 1, 1), activation="relu6"),
            opspec.conv2d((2, 2, 9, 11), (3, 2, 4, 2), (1, 3), (2, 1, 0, 1), activation="leaky_relu",
                          negative_slope=0.2)]


def _conv_grouped():
    return [opspec.conv2d((2, 4, 9, 8), (6, 2, 3, 3), pads=(1, 1, 1, 1), groups=2),
            opspec.conv2d((2, 6, 7, 7), (9, 2, 3, 1), (2, 1), (0, 1, 1, 0), groups=3, bias=False)]


def _conv_depthwise():
    return [opspec.conv2d((2, 8, 10, 9), (8, 1, 3, 3), pads=(1, 1, 1, 1), groups=8, activation="relu6"),
            opspec.conv2d((2, 3, 11, 8), (6, 1, 3, 3), (2, 2), (1, 1, 1, 1), groups=3, bias=False),
            opspec.conv2d((1, 4, 9, 9), (4, 1, 5, 3), (1, 2), (2, 2, 1, 1), dilation=(2, 1), groups=4)]


def _conv_dilated():
    return [opspec.conv2d((2, 3, 12, 11), (4, 3, 3, 3), pads=(2, 2, 2, 2), dilation=(2, 2)),
            opspec.conv2d((1, 4, 13, 10), (6, 2, 3, 2), (2, 1), (1, 0, 2, 1), dilation=(3, 2), groups=2)]


def _conv_winograd():
    # Forced (3x3 and 5x5, asymmetric padding, outputs ending inside a tile), and a 64-channel
    # layer, which CPUs run as Winograd by themselves.
    return [opspec.conv2d((2, 8, 10, 9), (6, 8, 3, 3), pads=(1, 1, 1, 1), activation="relu", algorithm="winograd"),
            opspec.conv2d((1, 5, 9, 7), (4, 5, 5, 5), pads=(2, 1, 0, 2), bias=False, algorithm="winograd"),
            opspec.conv2d((1, 64, 6, 6), (64, 64, 3, 3), pads=(1, 1, 1, 1))]


def _conv_im2col():
    # Shapes CPUs run as im2col by themselves (a reduction of 2304 over 49 pixels; a strided 1x1
    # over 1024), odd padding and a dilation forced.
    cases = [opspec.conv2d((1, 256, 7, 7), (64, 256, 3, 3), pads=(1, 1, 1, 1), activation="relu"),
             opspec.conv2d((1, 1024, 14, 14), (32, 1024, 1, 1), (2, 2), bias=False)]
    if get_device(_DEVICE[0]).is_cpu:
        cases.append(opspec.conv2d((2, 5, 13, 12), (7, 5, 3, 2), (2, 1), (2, 1, 0, 1), dilation=(1, 2),
                                   activation="tanh", algorithm="im2col"))
    return cases


def _conv_residual():
    # An eval-mode convolution run into the Add after it: a bottleneck's last 1x1 (the residual
    # in the product's epilogue on CPUs), a strided 1x1 over 1024 (im2col on CPUs) and a 3x3
    # (an add pass after it).
    return [opspec.conv2d((2, 64, 7, 7), (256, 64, 1, 1), activation="relu", residual=True),
            opspec.conv2d((1, 1024, 14, 14), (32, 1024, 1, 1), (2, 2), bias=False, residual=True),
            opspec.conv2d((2, 8, 9, 9), (8, 8, 3, 3), pads=(1, 1, 1, 1), activation="relu", residual=True)]


def _conv_input_residual():
    # A residual block's first convolution in training: its input gradient includes the
    # shortcut's, added as the gather form's kernel stores (conv2d_rows at 16 channels,
    # conv2d_forward at 32) or in a pass after the phases form of a stride 2.
    return [opspec.conv2d((4, 16, 12, 12), (16, 16, 3, 3), pads=(1, 1, 1, 1), bias=False, input_residual=True),
            opspec.conv2d((2, 32, 10, 10), (32, 32, 3, 3), pads=(1, 1, 1, 1), bias=False, input_residual=True),
            opspec.conv2d((2, 16, 12, 12), (32, 16, 3, 3), (2, 2), (1, 1, 1, 1), bias=False, input_residual=True)]


def _maxpool():
    # Integer inputs: exact ties inside windows, which must be broken as the oracle breaks them.
    return [opspec.pool2d("max", (2, 6, 28, 28), integers=True),
            opspec.pool2d("max", (2, 3, 11, 9), (3, 3), (2, 2), (1, 1, 1, 1), integers=True),
            opspec.pool2d("max", (1, 2, 8, 13), (3, 2), (1, 2), (0, 1, 1, 0), integers=True)]


def _avgpool():
    return [opspec.pool2d("avg", (2, 6, 28, 28), undo_activation="tanh"),
            opspec.pool2d("avg", (2, 3, 11, 9), (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad=False),
            opspec.pool2d("avg", (1, 2, 8, 13), (3, 2), (1, 2), (0, 1, 1, 0), undo_activation="relu6")]


def _global(kind):
    return lambda: [opspec.pool2d(kind, (2, 5, 7, 7), integers=kind == "global_max"),
                    opspec.pool2d(kind, (3, 4, 1, 9))]


def _activation():
    return [opspec.activation(name, shape, 0.1) for name in ACTIVATIONS
            for shape in ((2, 6, 28, 28), (5, 84), (3, 1, 1, 7))]


def _batchnorm(training):
    return lambda: [opspec.batchnorm2d((4, 6, 5, 7), training=training),
                    opspec.batchnorm2d((2, 3, 1, 9), training=training, affine=False, momentum=0.3),
                    opspec.batchnorm2d((3, 16, 8, 8), training=training, need_input_grad=False)]


def _model_step(name):
    def cases():
        from . import init, models
        init.seed(0)
        dev = get_device(_DEVICE[0])
        if name == "lenet5":
            return [opspec.model_step(models.lenet5(device=dev), (1, 32, 32), 4)]
        return [opspec.model_step(models.resnet20(input_size=8, device=dev), (3, 8, 8), 2)]
    return cases


_DEVICE = [None]   # the device spec of the run, for the whole-model cases

SHAPES_2D = ((8, 10), (1, 3), (33, 17))
PARAMS = ((6, 1, 5, 5), (84,), (10, 84), (3,), (7, 2))

# (family, its cases): each family gives a "<family> forward" and, for cases with a backward
# pass, a "<family> backward" row (one row named as the family for the forward-only ones).
FAMILIES = [
    ("conv2d", _conv),
    ("conv2d grouped", _conv_grouped),
    ("conv2d depthwise", _conv_depthwise),
    ("conv2d dilated", _conv_dilated),
    ("conv2d winograd", _conv_winograd),
    ("conv2d im2col", _conv_im2col),
    ("conv2d residual", _conv_residual),
    ("conv2d input residual", _conv_input_residual),
    ("maxpool2d", _maxpool),
    ("avgpool2d", _avgpool),
    ("global_maxpool2d", _global("global_max")),
    ("global_avgpool2d", _global("global_avg")),
    ("activation", _activation),
    ("softmax", lambda: [opspec.softmax(s) for s in SHAPES_2D]),
    ("gemm", lambda: [opspec.gemm(m, n, k, ta, tb) for m, n, k in ((64, 84, 120), (7, 13, 5), (1, 10, 84))
                      for ta in (False, True) for tb in (False, True)]),
    ("dense", lambda: [opspec.dense(4, 120, 84, activation="tanh"), opspec.dense(3, 84, 10),
                       opspec.dense(5, 7, 1, bias=False, activation="relu")]),
    ("dropout", lambda: [opspec.dropout((4, 84), 0.5, 12345, 7), opspec.dropout((2, 3, 7, 5), 0.2, 1, 0),
                         opspec.dropout((1, 1000), 0.9, 99, 3)]),
    ("batchnorm2d train", _batchnorm(True)),
    ("batchnorm2d eval", _batchnorm(False)),
    ("add", lambda: [opspec.add((2, 4, 5, 6)), opspec.add((3, 7, 3, 3), 3, "relu"), opspec.add((5, 84), 4)]),
    ("concat", lambda: [opspec.concat([(2, 3, 4, 5), (2, 5, 4, 5)]), opspec.concat([(1, 2, 3, 3)] * 3),
                        opspec.concat([(4, 7), (4, 9)])]),
    ("cross_entropy", lambda: [opspec.softmax_cross_entropy(n, k) for n, k in SHAPES_2D]),
    ("cross_entropy train", lambda: [opspec.softmax_cross_entropy_train(n, k) for n, k in SHAPES_2D]),
    ("mse", lambda: [opspec.mse(s) for s in ((8, 10), (3, 1, 5, 5), (1000,))]),
    ("sgd update", lambda: [opspec.sgd([s], lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True, grouped=False)
                            for s in PARAMS[:3]]),
    ("sgd update grouped", lambda: [opspec.sgd(PARAMS, lr=0.1, momentum=0.9, weight_decay=1e-3),
                                    opspec.sgd(PARAMS[:2], lr=0.05, momentum=0.5)]),
    ("adam update", lambda: [opspec.adam([s], lr=1e-3, weight_decay=1e-2) for s in PARAMS[:3]]),
    ("broadcast add/sub/mul/div", lambda: [
        opspec.binary(op, a, b, need) for op in ("add", "sub", "mul", "div")
        for a, b, need in (((2, 3, 5, 4), (3, 1, 1), (True, True)), ((2, 6), (2, 6), (True, False)),
                           ((1, 7, 3, 1), (2, 1, 1, 5), (False, True)))]),
    ("prelu", lambda: [opspec.prelu((2, 3, 5, 7), 3), opspec.prelu((3, 4, 2, 2), 1), opspec.prelu((5, 9), 9)]),
    ("clip", lambda: [opspec.clip((2, 3, 5, 7), -0.5, 0.8), opspec.clip((4, 9), None, 1.0)]),
    ("transpose", lambda: [opspec.transpose((2, 3, 4, 5), p) for p in ((0, 2, 3, 1), (0, 3, 1, 2), (1, 0, 3, 2))]
     + [opspec.transpose((2, 4, 3, 2, 5), (0, 2, 1, 3, 4))]),
    ("pad", lambda: [opspec.pad((2, 3, 5, 4), (1, 2, 0, 3), 0.5), opspec.pad((1, 2, 6, 6), (-1, 2, 2, -3))]),
    ("lrn", lambda: [opspec.lrn((2, 7, 4, 5), 5, 1e-2, 0.75, 2.0), opspec.lrn((3, 4, 3, 3), 2, 0.5, 0.6, 1.0)]),
    ("softmax axis", lambda: [opspec.softmax_axis((2, 5, 3, 4), 1), opspec.softmax_axis((2, 5, 3, 4), 3, log=True),
                              opspec.softmax_axis((6, 10), 1, log=True)]),
    ("lenet5 step", _model_step("lenet5")),
    ("resnet20 step", _model_step("resnet20")),
]


def _row(op, tol):
    return {"op": op, "cases": 0, "max_error": 0.0, "tolerance": tol[0], "rtol": tol[1], "passed": True}


def _check_family(dev, family, make_cases, rng):
    """The rows of one family: forward, and backward where its cases have one."""
    rows = {}
    try:
        for case in make_cases():
            result = opspec.check(case, dev, rng)
            for what in ("forward", "backward"):
                part = result.get(what)
                if part is None:
                    continue
                row = rows.setdefault(what, _row(family if case.backward is None else f"{family} {what}", case.tol))
                row["cases"] += 1
                row["max_error"] = max(row["max_error"], part["max_error"])
                row["passed"] = row["passed"] and part["ok"]
        dev.synchronize()
    except Exception as exc:   # a kernel that fails to build or run on this driver
        row = rows.get("forward") or _row(family, opspec.TOL_SUM)
        rows.setdefault("forward", row)
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["passed"] = False
    return list(rows.values())


def run(device_spec=None, seed=0):
    """Run every op on the device; {"device", "index", "passed", "seconds", "results": [{"op",
    "cases", "max_error", "tolerance" (atol), "rtol", "passed"[, "error"]}, ...]}. JSON-able."""
    dev = get_device(device_spec)
    _DEVICE[0] = dev.index
    start = time.perf_counter()
    results = []
    for k, (family, make_cases) in enumerate(FAMILIES):
        results += _check_family(dev, family, make_cases, np.random.default_rng([seed, k]))
    return {"device": f"{dev.name} ({dev.platform.name.strip()})", "index": dev.index,
            "passed": all(r["passed"] for r in results), "seconds": round(time.perf_counter() - start, 2),
            "results": results}


def format_report(report):
    """The table: op, cases, max error, tolerance, PASS/FAIL; then a one-line verdict."""
    rows = [("op", "cases", "max error", "tolerance", "result")]
    for r in report["results"]:
        rows.append((r["op"], str(r["cases"]), f"{r['max_error']:.2e}",
                     f"{r['tolerance']:.0e}+{r['rtol']:.0e}|ref|", "pass" if r["passed"] else "FAIL"))
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
