"""`clcnn bench`: per-op kernel times of a model's training step, the whole step, and the same
step in the NumPy oracle and (when installed) PyTorch.

Per-op times come from OpenCL event profiling: the op's kernels are enqueued behind a gate
(a barrier on a user event) between two markers, then the gate opens, so the span between the
markers is the device running those kernels back to back, without Python's enqueue cost in
between. The op's host wall time (call + queue.finish()) is reported beside it. The ops and
their FLOP/byte counts come from clcnn.opspec, which the tests use to check the same calls
against the oracle; the bench checks them too, once, at the benched shapes.

Every figure is the median of `repeat` runs after warm-up, with min and max (the oracle's
step may stop earlier when slow, see _ORACLE_BUDGET_S; "runs" says how many were taken).
"""
import os
import platform
import statistics
import sys
import threading
import time

import numpy as np
import pyopencl as cl

from . import opspec
from .device import get_device, list_devices

_WARMUP = 2
# Whole steps, clcnn's and PyTorch's, are timed for at least this long (beyond `repeat` runs).
_STEP_MIN_S = 1.0
# The NumPy oracle takes ~0.1-1 s a step: stop its timing after this long (at least 3 runs).
_ORACLE_BUDGET_S = 10.0
# Safety net for the gate: an op that waited on the queue (a host read) would wait forever
# behind it; the gate opens by itself after this long and the figure is refused.
_GATE_TIMEOUT_S = 60.0
LR, MOMENTUM = 0.01, 0.9


def _stats(seconds):
    ms = [1e3 * s for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "runs": len(ms)}


def time_host(fn, repeat, warmup=_WARMUP, budget_s=None, warmup_s=0.0, min_s=0.0):
    """Wall-clock stats of fn() (which must finish its own device work), after `warmup` calls
    and at least warmup_s seconds of them: `repeat` runs, more until min_s seconds of runs
    (a median of 20 steps of a few ms moved by 10% between runs on a shared machine), fewer
    once budget_s seconds have passed (at least 3)."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    while time.perf_counter() - start < warmup_s:
        fn()
    times, begin = [], time.perf_counter()
    while len(times) < repeat or time.perf_counter() - begin < min_s:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if budget_s and len(times) >= 3 and time.perf_counter() - begin > budget_s:
            break
    return _stats(times)


def _gated_seconds(dev, fn):
    gate = cl.UserEvent(dev.context)
    lock, opened = threading.Lock(), []

    def open_gate():
        with lock:
            if not opened:
                opened.append(True)
                gate.set_status(cl.command_execution_status.COMPLETE)
    timer = threading.Timer(_GATE_TIMEOUT_S, open_gate)
    cl.enqueue_barrier(dev.queue, wait_for=[gate])
    start = cl.enqueue_marker(dev.queue)
    timer.start()
    try:
        fn()
        end = cl.enqueue_marker(dev.queue)
    finally:
        timed_out = timer.finished.is_set()
        timer.cancel()
        open_gate()
    end.wait()
    if timed_out:
        raise RuntimeError("bench: an op waited on the device queue (host round trip); cannot time it")
    return (end.profile.end - start.profile.end) * 1e-9


def time_device(dev, fn, repeat, warmup=_WARMUP):
    """Device-time stats of the kernels fn() enqueues (dev opened with profiling=True)."""
    for _ in range(warmup):
        fn()
    dev.queue.finish()
    return _stats([_gated_seconds(dev, fn) for _ in range(repeat)])


def _rate(case, pass_index, stats):
    if not case.flops[pass_index] and not case.bytes[pass_index]:
        return {}       # a pass another op's kernel does (a pooling's forward in the conv's)
    seconds = stats["median_ms"] * 1e-3
    if case.compute_bound:
        return {"gflops": case.flops[pass_index] / seconds * 1e-9}
    return {"gbs": case.bytes[pass_index] / seconds * 1e-9}


def bench_case(dev, case, repeat, rng=None, verify=True):
    """{"forward": {...}, "backward": {...} or None, "check": {...}} for one OpCase on dev."""
    rng = rng or np.random.default_rng(0)
    result = {"name": case.name, "kind": case.kind,
              "flops": {"forward": case.flops[0], "backward": case.flops[1]},
              "bytes": {"forward": case.bytes[0], "backward": case.bytes[1]}}
    if verify:
        result["check"] = opspec.check(case, dev, rng)
    d = {k: dev.to_device(v, dtype=v.dtype) for k, v in case.make_inputs(rng).items()}

    def run_forward():
        return case.forward(dev, d)

    def finish(fn):
        return lambda: (fn(), dev.queue.finish())
    stats = time_device(dev, run_forward, repeat)
    result["forward"] = {**stats, **_rate(case, 0, stats), "host": time_host(finish(run_forward), repeat)}
    result["backward"] = None
    if case.backward is not None:
        out = case.forward(dev, d)

        def run_backward():
            return case.backward(dev, d, out)
        stats = time_device(dev, run_backward, repeat)
        result["backward"] = {**stats, **_rate(case, 1, stats), "host": time_host(finish(run_backward), repeat)}
    return result


# -- descriptions ------------------------------------------------------------------------------
def describe_device(dev):
    d, p = dev.cl_device, dev.platform
    return {"index": dev.index, "platform": p.name.strip(), "platform_version": p.version.strip(),
            "name": dev.name, "type": dev.type, "driver_version": d.driver_version.strip(),
            "opencl_version": d.version.strip(), "compute_units": d.max_compute_units,
            "global_memory_mb": d.global_mem_size // 2**20}


def describe_host():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import pyopencl
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "os": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "pyopencl": pyopencl.VERSION_TEXT}


# -- whole steps -------------------------------------------------------------------------------
def _batch(input_shape, batch_size, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size,) + tuple(input_shape)).astype(np.float32)
    return x, rng.integers(0, classes, batch_size).astype(np.int64)


def _per_image(stats, batch_size):
    return {**stats, "images_per_s": batch_size / (stats["median_ms"] * 1e-3)}


def benched_trainer(dev, model_name, batch_size):
    """(trainer, x, y): the model on dev with the benchmark's SGD and loss, and its random
    NumPy batch."""
    from . import losses, models, optim
    from .train import Trainer
    build, input_shape = models.MODELS[model_name]
    model = build(device=dev)
    x, y = _batch(input_shape, batch_size, model.output_shapes(input_shape)[-1][0])
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, lr=LR, momentum=MOMENTUM),
                      progress=False)
    return trainer, x, y


def clcnn_steps(dev, model_name, batch_size, repeat):
    """Training step (Trainer.train_step on a NumPy batch: upload, forward, loss, backward, SGD,
    at most two steps in flight; from the third step on a replay of the recorded second, see
    clcnn.replay) and inference (eval forward, logits read back; replayed likewise), in
    images/s."""
    trainer, x, y = benched_trainer(dev, model_name, batch_size)
    model = trainer.model
    train = _per_image(time_host(lambda: trainer.train_step(x, y), repeat, min_s=_STEP_MIN_S), batch_size)
    model.eval()
    infer = _per_image(time_host(lambda: model.forward(x).get(), repeat, min_s=_STEP_MIN_S), batch_size)
    return train, infer, model


def oracle_step(model, input_shape, batch_size, repeat):
    """The same SGD training step in the NumPy reference (clcnn.reference over the model's
    graph; float32 inputs and weights)."""
    from . import reference
    from .oracle import loss as o_loss
    from .oracle import optim as o_optim
    state = reference.snapshot(model, dtype=np.float32)
    momentum = {p.name: np.zeros(p.shape, np.float32) for p in model.parameters()}
    x, y = _batch(input_shape, batch_size, model.output_shapes(input_shape)[-1][0])

    def step():
        logits, run = reference.forward(model, x, state, training=True)
        _, probs = o_loss.softmax_cross_entropy_forward(logits, y)
        _, grads = reference.backward(model, run, o_loss.softmax_cross_entropy_backward(probs, y))
        state.update(run.state)
        for name, grad in grads.items():
            key, pname = name.rsplit(".", 1)
            state[key][pname], momentum[name] = o_optim.sgd_update(state[key][pname], grad, momentum[name],
                                                                   LR, MOMENTUM)
    return _per_image(time_host(step, repeat, warmup=1, budget_s=_ORACLE_BUDGET_S), batch_size)


def torch_model(model):
    """The same graph in torch.nn from the layers' torch_module hooks, with the model's
    weights and buffers; each layer is an attribute path named as the layer ("layer1.0.conv1"
    -> net.layer1[0].conv1; "3" in a Sequential), so the state_dict keys are clcnn's. None
    when a layer has no torch equivalent."""
    import torch
    from torch import nn

    class Graph(nn.Module):
        def forward(self, *xs):
            values = list(xs)
            for call, module in zip(model._calls, self._modules_in_order):
                values.append(module(*[values[v] for v in call.inputs]))
            outputs = [values[v] for v in model._outputs]
            return outputs[0] if model._single_output else outputs

    net = Graph()
    modules = {}
    for layer in model.layers:
        if id(layer) in modules:
            continue
        module = layer.torch_module()
        if module is None:
            return None
        modules[id(layer)] = module
        parent, *path = [net] + model._keys[id(layer)].split(".")
        for part in path[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(path[-1], module)
    net._modules_in_order = [modules[id(call.layer)] for call in model._calls]   # a plain list: not registered twice
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict().items()})
    return net


def torch_steps(model, input_shape, batch_size, repeat):
    """{"available": False, "reason"} or PyTorch's train step and inference on the same batch."""
    try:
        import torch
    except ImportError as exc:
        return {"available": False, "reason": f"import torch failed: {exc}"}
    net = torch_model(model)
    if net is None:
        return {"available": False, "reason": "model has a layer the PyTorch mirror does not cover"}
    x_np, y_np = _batch(input_shape, batch_size, model.output_shapes(input_shape)[-1][0])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    fn = torch.nn.functional.cross_entropy

    def train():   # as Trainer.train_step: loss and accuracy come back to Python
        opt.zero_grad(set_to_none=True)
        logits = net(x)
        loss = fn(logits, y)
        loss.backward()
        opt.step()
        return loss.item(), int((logits.argmax(1) == y).sum())

    def infer():
        with torch.no_grad():
            return net(x).numpy()
    net.train()
    result = {"available": True, "version": torch.__version__, "threads": torch.get_num_threads(),
              "train_step": _per_image(time_host(train, repeat, min_s=_STEP_MIN_S), batch_size)}
    net.eval()
    result["inference"] = _per_image(time_host(infer, repeat, min_s=_STEP_MIN_S), batch_size)
    return result


# -- the report --------------------------------------------------------------------------------
def _log(progress, text):
    if progress:
        print(f"bench: {text}", file=sys.stderr, flush=True)


def run_device(device_spec, model="lenet5", batch_size=64, repeat=20, progress=True, compare=True):
    """The report of one device (see run)."""
    from . import models
    if model not in models.MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(sorted(models.MODELS))}")
    if repeat < 1 or batch_size < 1:
        raise ValueError("repeat and batch_size must be >= 1")
    build, input_shape = models.MODELS[model]
    dev = get_device(device_spec, profiling=True)
    report = {"model": model, "batch_size": batch_size, "repeat": repeat, "input_shape": list(input_shape),
              "device": describe_device(dev), "host": describe_host()}
    _log(progress, f"{dev.name} ({dev.platform.name.strip()}): {model}, batch {batch_size}, {repeat} runs")
    # Whole steps first, on a queue without profiling (as users run it).
    plain = get_device(dev.index)
    train, infer, net = clcnn_steps(plain, model, batch_size, repeat)
    report["train_step"], report["inference"] = train, infer
    _log(progress, f"train step {train['images_per_s']:,.0f} img/s, inference {infer['images_per_s']:,.0f} img/s")

    ops = []
    for name, case in opspec.model_cases(build(device=dev), input_shape, batch_size, momentum=MOMENTUM):
        _log(progress, f"op {len(ops) + 1}: {case.name}")
        ops.append({"layer": name, **bench_case(dev, case, repeat)})
    report["ops"] = ops
    report["ops_total_ms"] = {p: sum(op[p]["median_ms"] for op in ops if op[p]) for p in ("forward", "backward")}
    report["all_checks_ok"] = all(op["check"]["ok"] for op in ops)

    if compare:
        _log(progress, "NumPy oracle step")
        numpy_step = oracle_step(net, input_shape, batch_size, repeat)
        numpy_step["clcnn_speedup"] = train["images_per_s"] / numpy_step["images_per_s"]
        report["numpy_train_step"] = numpy_step
        _log(progress, "PyTorch")
        torch_result = torch_steps(net, input_shape, batch_size, repeat)
        if torch_result["available"]:
            torch_result["clcnn_train_ratio"] = train["images_per_s"] / torch_result["train_step"]["images_per_s"]
            torch_result["clcnn_inference_ratio"] = infer["images_per_s"] / torch_result["inference"]["images_per_s"]
        report["torch"] = torch_result
    return report


def run(device_spec, model="lenet5", batch_size=64, repeat=20, progress=True):
    """JSON-able bench report of one device, or a list of them for device_spec "all"."""
    if device_spec is not None and str(device_spec).strip().lower() == "all":
        return [run_device(index, model, batch_size, repeat, progress) for index, *_ in list_devices()]
    return run_device(device_spec, model, batch_size, repeat, progress)


def _fmt_stats(stats):
    return f"{stats['median_ms']:8.3f} ({stats['min_ms']:.3f}-{stats['max_ms']:.3f})"


def _fmt_rate(entry):
    if "gflops" in entry:
        return f"{entry['gflops']:7.1f} GFLOP/s"
    if "gbs" in entry:
        return f"{entry['gbs']:7.2f} GB/s   "
    return f"{'-':<15}"


def format_report(report):
    """A readable table (of each device, for a list)."""
    if isinstance(report, list):
        return "\n\n".join(format_report(r) for r in report)
    d, h = report["device"], report["host"]
    width = max([5] + [len(str(op["layer"])) for op in report["ops"] if op["layer"] is not None])
    lines = [
        f"clcnn bench: {report['model']}, batch {report['batch_size']}; median (min-max) of "
        f"{report['repeat']} runs after warm-up",
        f"device {d['index']}: {d['name']} ({d['type']}), {d['platform']} {d['platform_version']}, "
        f"driver {d['driver_version']}, {d['compute_units']} compute units",
        f"host: {h['cpu']}, {h['usable_cores']} of {h['cores']} cores usable; {h['os']}; "
        f"numpy {h['numpy']}, pyopencl {h['pyopencl']}",
        "",
        f"{'layer':<{width}}  {'op':<34} {'forward ms (device)':<26} {'rate':<15}  "
        f"{'backward ms (device)':<26} {'rate':<15}  check",
    ]
    for op in report["ops"]:
        f, b = op["forward"], op["backward"]
        layer = "" if op["layer"] is None else str(op["layer"])
        bwd = f"{_fmt_stats(b):<26} {_fmt_rate(b)}" if b else f"{'-':<26} {'':<15}"
        check = f"{'ok' if op['check']['ok'] else 'FAILED'} {op['check']['max_error']:.1e}"
        lines.append(f"{layer:<{width}}  {op['name'][:34]:<34} {_fmt_stats(f):<26} {_fmt_rate(f)}  {bwd}  {check}")
    total = report["ops_total_ms"]
    lines.append(f"{'':<{width}}  {'kernels, whole step':<34} {total['forward']:8.3f} ms {'':<31}"
                 f"{total['backward']:8.3f} ms")
    lines += ["", f"{'whole step':<24} {'ms (min-max)':<28} {'images/s':>10}"]

    def row(label, stats, note=""):
        lines.append(f"{label:<24} {_fmt_stats(stats):<28} {stats['images_per_s']:>10,.0f}  {note}")
    row("clcnn train step", report["train_step"],
        f"kernels are {100 * (total['forward'] + total['backward']) / report['train_step']['median_ms']:.0f}% of it")
    row("clcnn inference", report["inference"])
    if "numpy_train_step" in report:
        n = report["numpy_train_step"]
        row("numpy oracle train", n, f"clcnn {n['clcnn_speedup']:.1f}x faster ({n['runs']} runs)")
    t = report.get("torch")
    if t and t["available"]:
        row(f"torch {t['version']} train", t["train_step"], f"clcnn/torch = {t['clcnn_train_ratio']:.2f}")
        row(f"torch inference", t["inference"], f"clcnn/torch = {t['clcnn_inference_ratio']:.2f}")
    elif t:
        lines.append(f"torch: absent ({t['reason']})")
    if not report["all_checks_ok"]:
        lines.append("WARNING: some kernels disagree with the NumPy oracle (see check column)")
    return "\n".join(lines)
