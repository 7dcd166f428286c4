"""BatchNorm2D + Add (+ activation) as one step, a residual block's bn2 -> Add(shortcut) -> ReLU:
the kernels against the float64 oracle (BatchNorm, plus the residual, then the activation) over
random shapes, train and eval, forward and backward; the composed oracle against central
differences; the fusion plan; whole blocks and ResNet-20 fused against the same model run
unfused (forward, every gradient, running statistics, after SGD steps) and against PyTorch."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import clcnn
from clcnn import fusion, models
from clcnn import layers as L
from clcnn.errors import ShapeError
from clcnn.ops import batchnorm as ops
from clcnn.oracle import activation as o_act
from clcnn.oracle import batchnorm as oracle
from tests.helpers import (assert_close, assert_matches_torch_over_sgd_steps, kernel_runs, numeric_grad,
                           randomise_state)
from tests.test_batchnorm import (PATHS, RUNS, TOL, _assert_gradients, _assert_statistics, _fused_reference,
                                  _scales, by_channel, fused_cases)

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

KINKS = {None: (), "relu": (0.0,), "relu6": (0.0, 6.0), "leaky_relu": (0.0,)}


def _act(name, v, slope):
    return v if name is None else o_act.activation_forward(name, v, slope)


def _act_grad(name, y, gy, slope):
    return gy if name is None else o_act.activation_backward(name, y, gy, slope)


@given(fused_cases(sorted(KINKS, key=str)), st.sampled_from(RUNS), st.sampled_from(PATHS))
def test_fused_kernels_match_oracle(device, case, run, path):
    with kernel_runs(ops, run), by_channel(path):
        _check_fused(device, *case)


def _check_fused(device, shape, training, affine, act, slope, need_input_grad, seed):
    # the residual spreads the sums over both sides of relu6's kinks
    (x, res, gy, weight, bias, rmean, rvar), reference = _fused_reference(shape, training, affine, seed,
                                                                          residual=True)
    bn, mean, invstd = reference[:3]
    f64 = lambda a: None if a is None else a.astype(np.float64)   # noqa: E731
    x64 = f64(x)
    v = bn + res
    scale = _scales(x64, f64(gy), f64(weight), f64(bias), mean, invstd)
    y_scale = scale["y"] + np.abs(res)
    # Within rounding of a kink the float32 kernel may take the other side: no gradient there.
    near = np.zeros(shape, bool)
    for k in KINKS[act]:
        near |= np.abs(v - k) <= 1e-4 * y_scale
    gy[near] = 0.0
    y_want = _act(act, v, slope)
    g_want = _act_grad(act, y_want, f64(gy), slope)

    d = device.to_device
    dw, db = (d(weight), d(bias)) if affine else (None, None)
    drm, drv, dx, dres, dgy = d(rmean), d(rvar), d(x), d(res), d(gy)
    fused = dict(activation=act, negative_slope=slope)
    if training:
        y, smean, sinv = ops.batchnorm2d_add_forward_train(device, dx, dres, dw, db, drm, drv, 0.1, 1e-5, **fused)
        _assert_statistics(smean, sinv, drm, drv, reference, scale)
        gx, gw, gb, gr = ops.batchnorm2d_add_backward(device, dx, y, dgy, dw, smean, sinv, need_input_grad,
                                                      **fused)
        want = oracle.batchnorm2d_backward(x64, g_want, f64(weight), mean, invstd)
    else:
        y = ops.batchnorm2d_add_forward_eval(device, dx, dres, dw, db, drm, drv, 1e-5, **fused)
        gx, gw, gb, gr = ops.batchnorm2d_add_backward_eval(device, dx, y, dgy, dw, drm, drv, 1e-5,
                                                           need_input_grad, **fused)
        want = oracle.batchnorm2d_backward_eval(x64, g_want, f64(weight), f64(rmean), f64(rvar), 1e-5)
    assert_close(y.get(), y_want, TOL * y_scale, 0, f"y ({act})")
    # The activation's gradient is gy selected, or times the slope: one float32 rounding.
    assert_close(gr.get(), g_want, 0, 1e-7, f"gresidual ({act})")
    if act is None:
        assert gr is dgy
    _assert_gradients(gx, gw, gb, want, scale, need_input_grad, affine, act)


@pytest.mark.parametrize("act", ["relu", None])
def test_composed_oracle_gradient_matches_central_differences(act):
    # The backward the kernels implement: g = act'(y) * gy to the residual, g into BatchNorm's.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 3, 2)) * 2.0
    res = rng.standard_normal(x.shape)
    gy = rng.standard_normal(x.shape)
    weight, bias = rng.standard_normal(3) * 3.0, rng.standard_normal(3)

    def loss(xv, wv=weight, bv=bias, rv=res):
        bn = oracle.batchnorm2d_forward_train(xv, wv, bv, None, None, 0.1, 1e-5)[0]
        return float((_act(act, bn + rv, 0.0) * gy).sum())

    bn, mean, invstd = oracle.batchnorm2d_forward_train(x, weight, bias, None, None, 0.1, 1e-5)[:3]
    g = _act_grad(act, _act(act, bn + res, 0.0), gy, 0.0)
    gx, gw, gb = oracle.batchnorm2d_backward(x, g, weight, mean, invstd)
    assert_close(gx, numeric_grad(loss, x), 1e-6, 1e-5, "gx")
    assert_close(gw, numeric_grad(lambda w: loss(x, w), weight), 1e-6, 1e-5, "gweight")
    assert_close(gb, numeric_grad(lambda b: loss(x, weight, b), bias), 1e-6, 1e-5, "gbias")
    assert_close(g, numeric_grad(lambda r: loss(x, rv=r), res), 1e-6, 1e-5, "gresidual")


def test_bad_arguments_are_one_clear_error(device):
    x = device.to_device(np.ones((2, 3, 2, 2), np.float32))
    w, b = device.to_device(np.ones(3, np.float32)), device.to_device(np.zeros(3, np.float32))
    rm, rv = device.to_device(np.zeros(3, np.float32)), device.to_device(np.ones(3, np.float32))
    other = device.to_device(np.ones((2, 3, 2, 3), np.float32))
    with pytest.raises(ShapeError, match=r"residual has shape \(2, 3, 2, 3\) but x has shape \(2, 3, 2, 2\)"):
        ops.batchnorm2d_add_forward_train(device, x, other, w, b, rm, rv)
    with pytest.raises(ShapeError, match="residual has shape"):
        ops.batchnorm2d_add_forward_eval(device, x, other, w, b, rm, rv)
    with pytest.raises(ShapeError, match=r"y shape \(2, 3, 2, 3\) differs from x shape"):
        ops.batchnorm2d_add_backward(device, x, other, x, w, rm, rv, activation="relu")
    with pytest.raises(ValueError, match="activation must be None or one of relu"):
        ops.batchnorm2d_add_forward_eval(device, x, x, w, b, rm, rv, activation="tanh")


# -- the plan ------------------------------------------------------------------------------

def _unfused_plan(model):
    """Every call its own step: the schedule without any fusion."""
    count = model._input_count()
    return [fusion.Step(p, count + p, None, None, None) for p in range(len(model._calls))]


def _bn_add_steps(model):
    """[(BatchNorm call name, Add call name, activation call name or None)] of the plan."""
    name = lambda p: None if p is None else model._calls[p].name   # noqa: E731
    return [(name(s.position), name(s.add), name(s.activation)) for s in model._plan() if s.add is not None]


def _block(c=6, size=7, stride=1, cout=None, act=L.ReLU, three=False):
    """conv-bn-relu-conv-bn2, an Add with the shortcut (1x1 conv-bn where the shape changes),
    optionally a third input, optionally an activation."""
    cout = cout or c
    inp = L.Input((c, size, size), name="x")
    y = L.Conv2D(c, cout, 3, stride=stride, padding=1, bias=False, name="conv1")(inp)
    y = L.ReLU()(L.BatchNorm2D(cout, name="bn1")(y))
    y = L.Conv2D(cout, cout, 3, padding=1, bias=False, name="conv2")(y)
    y = L.BatchNorm2D(cout, name="bn2")(y)
    short = inp
    if stride != 1 or cout != c:
        short = L.Conv2D(c, cout, 1, stride=stride, bias=False, name="short_conv")(inp)
        short = L.BatchNorm2D(cout, name="short_bn")(short)
    ins = [short, y] + ([L.MaxPool2D(3, stride=1, padding=1)(short)] if three else [])
    out = L.Add(name="add")(ins)
    return inp, (act(name="act")(out) if act else out)


def test_plan_runs_bn2_into_the_add_and_its_activation(device):
    assert _bn_add_steps(clcnn.Model(*_block(), device=device)) == [("bn2", "add", "act")]
    assert _bn_add_steps(clcnn.Model(*_block(act=None), device=device)) == [("bn2", "add", None)]
    # Two BatchNorms into one Add: the first in running order is absorbed, the other runs alone.
    model = clcnn.Model(*_block(stride=2, cout=8), device=device)
    steps = _bn_add_steps(model)
    assert len(steps) == 1 and steps[0][0] in ("bn2", "short_bn") and steps[0][1:] == ("add", "act")
    alone = {"bn2", "short_bn"} - {steps[0][0]}
    assert [model._calls[s.position].name for s in model._plan() if s.add is None
            and model._calls[s.position].name in alone] == list(alone)
    # An activation the Add alone cannot fuse runs in the BatchNorm's kernel.
    assert _bn_add_steps(clcnn.Model(*_block(act=L.ReLU6), device=device)) == [("bn2", "add", "act")]
    assert _bn_add_steps(clcnn.Model(*_block(act=L.Tanh), device=device)) == [("bn2", "add", None)]
    # Names and state_dict keys are those of the layers, not of the schedule.
    model = clcnn.Model(*_block(), device=device)
    assert set(model.state_dict()) == {"conv1.weight", "conv2.weight"} | {
        f"{layer}.{p}" for layer in ("bn1", "bn2")
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def test_no_fusion_where_the_batchnorm_output_has_other_readers(device):
    inp = L.Input((4, 5, 5), name="x")
    y = L.BatchNorm2D(4, name="bn")(L.Conv2D(4, 4, 3, padding=1, name="conv")(inp))
    model = clcnn.Model(inp, [L.ReLU()(L.Add()([inp, y])), y], device=device)     # also an output
    assert _bn_add_steps(model) == []
    model = clcnn.Model(inp, L.Add()([y, L.ReLU()(y)]), device=device)            # read twice
    assert _bn_add_steps(model) == []
    model = clcnn.Model(inp, L.Add()([y, y]), device=device)                      # both inputs
    assert _bn_add_steps(model) == []


# -- whole models: fused against the same model unfused ------------------------------------

def _twins(build, device, seed):
    rng = np.random.default_rng(seed)
    fused, plain = build(), build()
    randomise_state(fused, rng)
    plain.load_state_dict(fused.state_dict())
    return fused, plain, rng


def _run_unfused(model):
    """Every schedule of the model (its _plans keys: training, fold, fuse_pools) unfused."""
    for training in (True, False):
        for fold in (True, False):
            for fuse_pools in (True, False):
                model._plans[(training, fold, fuse_pools)] = _unfused_plan(model)


def _compare_steps(fused, plain, rng, batch, steps=2, training=True, tol=1e-5):
    """Forward, input and parameter gradients, then an SGD step, `steps` times; then every
    parameter and buffer. tol: relative to each tensor's largest value."""
    fused.train(training)
    plain.train(training)
    _run_unfused(plain)
    opts = [clcnn.optim.SGD(m, lr=0.05, momentum=0.9) for m in (fused, plain)]
    shape = fused.input_shapes[0]
    for step in range(steps):
        x = rng.standard_normal((batch,) + tuple(shape)).astype(np.float32)
        gy = rng.standard_normal((batch,) + tuple(fused.output_shapes()[-1])).astype(np.float32)
        y, want = fused(x).get(), plain(x).get()
        assert_close(y, want, tol * max(1.0, np.abs(want).max()), 0, f"step {step} output")
        gx, gx_want = fused.backward(gy).get(), plain.backward(gy).get()
        assert_close(gx, gx_want, tol * max(1.0, np.abs(gx_want).max()), 0, f"step {step} input gradient")
        grads = {p.name: p.grad.get() for p in plain.parameters()}
        for p in fused.parameters():
            want = grads[p.name]
            assert_close(p.grad.get(), want, tol * max(1.0, np.abs(want).max()), 0, f"step {step} grad {p.name}")
        for opt in opts:
            opt.step()
    state, want_state = fused.state_dict(), plain.state_dict()
    assert list(state) == list(want_state)
    for key, want in want_state.items():
        assert_close(state[key], want, tol * max(1.0, np.abs(want).max()), 0, f"after {steps} steps: {key}")


@pytest.mark.parametrize("kind", ["identity", "projection", "three inputs", "no activation", "relu6"])
def test_block_fused_equals_unfused_train_mode(device, kind):
    settings = {"identity": {}, "projection": dict(stride=2, cout=8), "three inputs": dict(three=True),
                "no activation": dict(act=None), "relu6": dict(act=L.ReLU6)}[kind]
    build = lambda: clcnn.Model(*_block(**settings), device=device)   # noqa: E731
    fused, plain, rng = _twins(build, device, 7)
    assert _bn_add_steps(fused)
    _compare_steps(fused, plain, rng, batch=3)


def test_block_fused_equals_unfused_eval_mode(device):
    # In eval mode bn2 folds into conv2; after a layer that is not a convolution it runs into
    # the Add, forward and backward, with the running statistics.
    def build():
        inp = L.Input((5, 6, 6), name="x")
        y = L.BatchNorm2D(5, name="bn")(L.MaxPool2D(3, stride=1, padding=1)(inp))
        return clcnn.Model(inp, L.ReLU()(L.Add()([inp, y])), device=device)
    fused, plain, rng = _twins(build, device, 8)
    fused.eval()
    assert _bn_add_steps(fused) == [("bn", fused._calls[2].name, fused._calls[3].name)]
    _compare_steps(fused, plain, rng, batch=2, steps=1, training=False)


def test_resnet20_fused_equals_unfused(device):
    build = lambda: models.resnet20(input_size=8, device=device)   # noqa: E731
    fused, plain, rng = _twins(build, device, 9)
    assert len(_bn_add_steps(fused)) == 9
    _compare_steps(fused, plain, rng, batch=2)
    # eval mode: bn2 folds into conv2 for the forward; a backward in eval mode runs it unfolded,
    # into the Add
    fused.eval()
    plain.eval()
    _compare_steps(fused, plain, rng, batch=2, steps=1, training=False)


def test_mobilenet_fused_equals_unfused(device):
    build = lambda: models.mobilenet_small(input_size=8, device=device)   # noqa: E731
    fused, plain, rng = _twins(build, device, 10)
    assert _bn_add_steps(fused)
    _compare_steps(fused, plain, rng, batch=2, steps=1)


# -- against PyTorch -----------------------------------------------------------------------

class _TorchBlock(torch.nn.Module if torch else object):
    def __init__(self, c, cout, stride, three):
        super().__init__()
        self.three = three
        self.conv1 = torch.nn.Conv2d(c, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        if stride != 1 or cout != c:
            self.short_conv = torch.nn.Conv2d(c, cout, 1, stride, bias=False)
            self.short_bn = torch.nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = self.short_bn(self.short_conv(x)) if hasattr(self, "short_conv") else x
        total = short + y
        if self.three:
            total = total + F.max_pool2d(short, 3, 1, 1)
        return F.relu(total)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("stride, cout, three", [(1, 6, False), (2, 8, False), (1, 6, True)])
def test_block_matches_pytorch_over_sgd_steps(device, stride, cout, three):
    rng = np.random.default_rng(11)
    model = clcnn.Model(*_block(stride=stride, cout=cout, three=three), device=device)
    assert _bn_add_steps(model)
    randomise_state(model, rng)
    assert_matches_torch_over_sgd_steps(model, _TorchBlock(6, cout, stride, three), rng, (6, 7, 7), batch=4, steps=2)
