"""Comparison, finite-difference and set-up helpers shared by the tests."""
import contextlib
import functools
import http.server
import threading
from collections import Counter

import numpy as np


def assert_close(actual, expected, atol, rtol, what="value"):
    """|actual - expected| <= atol + rtol * |expected| everywhere; reports max error and where."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    bad = ~(err <= bound)
    if bad.any():
        where = np.unravel_index(np.argmax(np.where(bad, err - bound, -np.inf)), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} elements off; max abs error {err.max():.3g}; "
            f"worst at {where}: got {actual[where]!r}, expected {expected[where]!r} "
            f"(atol={atol}, rtol={rtol})")


def numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar f at float64 x."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def record_op_calls(monkeypatch, modules, helpers=()):
    """Patch every public function of the clcnn.ops modules named in `modules` (and the names
    clcnn.layers.base and clcnn.optim imported from them) to log its "<module>.<name>" when
    called from outside another op; returns the log. Functions whose names start with "check_"
    or are in `helpers` are shape helpers, not kernel launches, and are left alone."""
    import importlib
    log, depth, wrapped = [], [0], {}

    def wrap(name, fn):
        def recorded(*args, **kwargs):
            if depth[0] == 0:
                log.append(name)
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
        return recorded
    for module_name in modules:
        module = importlib.import_module(f"clcnn.ops.{module_name}")
        for name, fn in list(vars(module).items()):
            if (callable(fn) and not name.startswith(("_", "check_")) and name not in helpers
                    and getattr(fn, "__module__", None) == module.__name__):
                wrapped[id(fn)] = wrap(f"{module_name}.{name}", fn)
                monkeypatch.setattr(module, name, wrapped[id(fn)])
    for module_name in ("clcnn.layers.base", "clcnn.optim"):
        module = importlib.import_module(module_name)
        for name, fn in list(vars(module).items()):
            if id(fn) in wrapped:
                monkeypatch.setattr(module, name, wrapped[id(fn)])
    return log


def randomise_state(model, rng, shift=0.2):
    """Random weights, BatchNorm affine parameters and running statistics (running_var in
    [0.5, 2], means and biases ~ N(0, shift)), so no comparison passes by symmetry."""
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif key.endswith(("running_mean", ".bias")):
            state[key] = (shift * rng.standard_normal(value.shape)).astype(np.float32)
        else:
            state[key] = (rng.standard_normal(value.shape) * (1.5 / np.sqrt(max(1, value[0].size)))).astype(np.float32)
    model.load_state_dict(state)


@contextlib.contextmanager
def kernel_runs(ops_module, run):
    """Sets ops_module.RUN and ops_module.MIN_RUN (the run length of its elementwise kernels)
    to `run` for a block, then restores them; run None keeps the module's defaults."""
    saved = ops_module.RUN, ops_module.MIN_RUN
    if run is not None:
        ops_module.RUN = ops_module.MIN_RUN = run
    try:
        yield
    finally:
        ops_module.RUN, ops_module.MIN_RUN = saved


def hold_vector_width(device, monkeypatch, width):
    """Holds clcnn.ops.conv2d.MAX_VECTOR_WIDTH (read by the conv and GEMM kernels) at `width`
    for the test; skips the test where the device does not take float<width> vectors."""
    from clcnn.ops import conv2d as conv_ops
    monkeypatch.setattr(conv_ops, "MAX_VECTOR_WIDTH", width)
    if conv_ops.vector_limits(device)[0] != width:
        import pytest
        pytest.skip(f"this device does not take float{width} (preferred float vector "
                    f"{device.cl_device.preferred_vector_width_float} wide)")
    return width


def op_calls_of_model_cases(device, cases, rng, log):
    """Clears `log` (from record_op_calls), runs every (name, case) of opspec.model_cases once
    (inputs from case.make_inputs(rng) on the device, forward, and backward where the case has
    one) and returns the Counter of the op calls logged meanwhile."""
    log.clear()
    for _, case in cases:
        d = {k: device.to_device(v, dtype=v.dtype) for k, v in case.make_inputs(rng).items()}
        out = case.forward(device, d)
        if case.backward is not None:
            case.backward(device, d, out)
    return Counter(log)


def assert_matches_torch_over_sgd_steps(model, ref, rng, input_shape, batch, steps):
    """Copies the clcnn model's state into the PyTorch module `ref`, then takes `steps` SGD
    steps (lr 0.05, momentum 0.9) of both on the same random inputs (batch x input_shape) and
    output gradients, comparing the output, the input gradient and every parameter gradient at
    each step and the whole state (running statistics included) after the last."""
    import torch
    missing, unexpected = ref.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()})
    assert not missing and not unexpected
    import clcnn
    opt = clcnn.optim.SGD(model, lr=0.05, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        x = rng.standard_normal((batch,) + tuple(input_shape)).astype(np.float32)
        gy = rng.standard_normal((batch,) + tuple(model.output_shapes()[-1])).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_(True)
        ref_opt.zero_grad()
        yt = ref(xt)
        yt.backward(torch.from_numpy(gy))
        y = model(x)
        gx = model.backward(gy)
        assert_close(y.get(), yt.detach().numpy(), 1e-4, 1e-3, f"step {step} output")
        assert_close(gx.get(), xt.grad.numpy(), 1e-4 * max(1.0, float(np.abs(xt.grad.numpy()).max())), 1e-3,
                     f"step {step} input gradient")
        ref_grads = {k: p.grad.numpy() for k, p in ref.named_parameters()}
        for p in model.parameters():
            scale = max(1.0, float(np.abs(ref_grads[p.name]).max()))
            assert_close(p.grad.get(), ref_grads[p.name], 2e-4 * scale, 2e-3, f"step {step} grad {p.name}")
        opt.step()
        ref_opt.step()
    state, ref_state = model.state_dict(), ref.state_dict()
    for key, value in ref_state.items():
        assert_close(state[key], value.numpy(), 2e-4, 2e-3, f"after {steps} steps: {key}")


class TruncatingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging; a file whose name is in server.truncate goes out cut in
    half, with the full length in its Content-Length."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        if name not in self.server.truncate:
            return super().do_GET()
        data = (self.server.root / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True


@contextlib.contextmanager
def serve_folder(root):
    """An HTTP server on 127.0.0.1 (a free port) serving the folder `root` with TruncatingHandler
    from a daemon thread; yields the server (.root, .truncate: the set of names to cut short,
    empty at first, .server_address) and shuts it down after the block."""
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(TruncatingHandler, directory=str(root)))
    httpd.root, httpd.truncate = root, set()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class _Launches:
    """Stands in for a replay.Recorder on the Device: collects an op call's kernel launches
    (they still run)."""

    def __init__(self, device):
        self.pool, self.calls = device.pool, []

    def launch(self, kernel, global_size, local_size, args):
        self.calls.append((kernel, global_size, args))

    def refuse(self, what):
        pass


def outputs_in_reverse_item_order(device, call):
    """(outputs of call(), the same arrays after its launches ran again with every work item
    launched alone, last to first). Where blocks overlap, one launch usually lets the highest
    numbered block store last and the reverse run the lowest: a kernel whose result depends on
    the order of its work items gives two different results."""
    import itertools

    import pyopencl as cl
    launches = _Launches(device)
    device.recorder = launches
    try:
        result = call()
    finally:
        device.recorder = None
    arrays = [a for a in (result if isinstance(result, (tuple, list)) else [result]) if a is not None]
    once = [a.get() for a in arrays]
    for kernel, global_size, args in launches.calls:
        kernel.set_args(*args)
        for item in itertools.product(*(range(n - 1, -1, -1) for n in global_size)):
            cl.enqueue_nd_range_kernel(device.queue, kernel, (1,) * len(item), (1,) * len(item),
                                       global_work_offset=item)
    return once, [a.get() for a in arrays]


@contextlib.contextmanager
def launched_kernels(names):
    """Appends the name of every kernel the op wrappers (clcnn.ops' modules) launch to `names`
    while the block runs."""
    import importlib
    import pkgutil

    import pytest

    import clcnn.ops
    from clcnn.ops import _common
    launch = _common.launch

    def counting(dev, kernel, *args):
        names.append(kernel.function_name)
        return launch(dev, kernel, *args)
    modules = [importlib.import_module(f"clcnn.ops.{m.name}") for m in pkgutil.iter_modules(clcnn.ops.__path__)]
    with pytest.MonkeyPatch.context() as patch:
        for module in modules:
            if getattr(module, "launch", None) is launch:
                patch.setattr(module, "launch", counting)
        yield names
