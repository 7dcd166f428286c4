"""Comparison and finite-difference helpers for the tests."""
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
