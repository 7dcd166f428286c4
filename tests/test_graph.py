"""The layer graph (clcnn.Model): branches, merges, shared layers, names, fusion, save/load,
and whole blocks (residual with BatchNorm, Inception-style concat, depthwise-separable)
against PyTorch: forward, backward, running statistics and three SGD steps."""
import numpy as np
import pytest

import clcnn
from clcnn import layers as L
from clcnn.errors import CheckpointError, ShapeError
from tests.helpers import assert_close, assert_matches_torch_over_sgd_steps, randomise_state

try:
    import torch
    import torch.nn.functional as F
except ImportError:      # the PyTorch comparisons skip; everything else runs
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _residual_block(channels=8, name="block"):
    inp = L.Input((channels, 10, 10), name="x")
    y = L.Conv2D(channels, channels, 3, padding=1, bias=False, name="conv1")(inp)
    y = L.BatchNorm2D(channels, name="bn1")(y)
    y = L.ReLU()(y)
    y = L.Conv2D(channels, channels, 3, padding=1, bias=False, name="conv2")(y)
    y = L.BatchNorm2D(channels, name="bn2")(y)
    out = L.ReLU()(L.Add()([inp, y]))
    return inp, out


def _inception_block():
    inp = L.Input((6, 9, 9), name="x")
    a = L.Conv2D(6, 4, 1, name="b1", activation="relu")(inp)
    b = L.ReLU()(L.Conv2D(6, 3, 3, padding=1, name="b2")(inp))
    c = L.MaxPool2D(3, stride=1, padding=1)(inp)
    c = L.Conv2D(6, 2, 1, name="b3")(c)
    out = L.Concat()([a, b, c])
    out = L.Dense(9 * 9 * 9, 5, name="fc")(L.Flatten()(out))
    return inp, out


def _separable_block():
    inp = L.Input((4, 8, 8), name="x")
    y = L.Conv2D(4, 8, 1, bias=False, name="expand")(inp)
    y = L.BatchNorm2D(8, name="bn1")(y)
    y = L.ReLU6()(y)
    y = L.Conv2D(8, 8, 3, padding=1, groups=8, bias=False, name="dw")(y)
    y = L.BatchNorm2D(8, name="bn2")(y)
    y = L.ReLU6()(y)
    y = L.Conv2D(8, 4, 1, bias=False, name="project")(y)
    y = L.BatchNorm2D(4, name="bn3")(y)
    out = L.Add()([inp, y])
    return inp, out


class _TorchResidual(torch.nn.Module if torch else object):
    def __init__(self, c):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class _TorchInception(torch.nn.Module if torch else object):
    def __init__(self):
        super().__init__()
        self.b1 = torch.nn.Conv2d(6, 4, 1)
        self.b2 = torch.nn.Conv2d(6, 3, 3, padding=1)
        self.b3 = torch.nn.Conv2d(6, 2, 1)
        self.fc = torch.nn.Linear(9 * 9 * 9, 5)

    def forward(self, x):
        a = F.relu(self.b1(x))
        b = F.relu(self.b2(x))
        c = self.b3(F.max_pool2d(x, 3, 1, 1))
        return self.fc(torch.cat([a, b, c], 1).flatten(1))


class _TorchSeparable(torch.nn.Module if torch else object):
    def __init__(self):
        super().__init__()
        self.expand = torch.nn.Conv2d(4, 8, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.project = torch.nn.Conv2d(8, 4, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        y = F.relu6(self.bn1(self.expand(x)))
        y = F.relu6(self.bn2(self.dw(y)))
        return x + self.bn3(self.project(y))


@needs_torch
@pytest.mark.parametrize("block, torch_block, shape", [
    (_residual_block, lambda: _TorchResidual(8), (8, 10, 10)),
    (_inception_block, _TorchInception, (6, 9, 9)),
    (_separable_block, _TorchSeparable, (4, 8, 8)),
])
def test_block_matches_pytorch_forward_backward_running_stats_and_sgd(device, block, torch_block, shape):
    rng = np.random.default_rng(0)
    inp, out = block()
    model = clcnn.Model(inp, out, device=device)
    randomise_state(model, rng)
    ref = torch_block()
    assert_matches_torch_over_sgd_steps(model, ref, rng, shape, batch=5, steps=3)
    # eval mode: running statistics (folded into the convolutions by the fusion pass)
    model.eval()
    ref.eval()
    x = rng.standard_normal((3,) + shape).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    assert_close(model(x).get(), want, 1e-4, 1e-3, "eval output")


def test_fan_out_gets_the_sum_of_gradients_and_a_shared_layer_sums_its_weight_gradient(device):
    rng = np.random.default_rng(1)
    inp = L.Input((3, 6, 6))
    shared = L.Conv2D(3, 3, 3, padding=1, name="shared")
    a = shared(inp)
    b = shared(L.Tanh()(a))            # the same weights applied twice, in sequence
    out = L.Add()([a, b, inp])         # inp and a each feed two layers
    model = clcnn.Model(inp, out, device=device)
    assert [p.name for p in model.parameters()] == ["shared.weight", "shared.bias"]
    w = model.state_dict()["shared.weight"].astype(np.float64)
    bias = model.state_dict()["shared.bias"].astype(np.float64)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    gy = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)

    def loss(xv, wv, bv):
        from clcnn.oracle.conv2d import conv2d_forward
        a = conv2d_forward(xv, wv, bv, (1, 1), (1, 1, 1, 1))
        b = conv2d_forward(np.tanh(a), wv, bv, (1, 1), (1, 1, 1, 1))
        return float(((a + b + xv) * gy).sum())

    y = model(x)
    gx = model.backward(gy)
    from tests.helpers import numeric_grad
    x64 = x.astype(np.float64)
    assert_close(gx.get(), numeric_grad(lambda v: loss(v, w, bias), x64), 1e-3, 1e-3, "dL/dx")
    assert_close(model.parameters()[0].grad.get(), numeric_grad(lambda v: loss(x64, v, bias), w), 1e-3, 1e-3,
                 "dL/dweight summed over both uses")
    assert_close(y.get(), loss_output(x64, w, bias), 1e-4, 1e-4, "output")


def loss_output(x, w, b):
    from clcnn.oracle.conv2d import conv2d_forward
    a = conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1))
    return a + conv2d_forward(np.tanh(a), w, b, (1, 1), (1, 1, 1, 1)) + x


def test_same_layer_twice_in_a_sequential_sums_gradients_and_updates_once(device):
    rng = np.random.default_rng(2)
    dense = L.Dense(4, 4)
    model = clcnn.Sequential([dense, L.Tanh(), dense], device=device)
    assert list(model.state_dict()) == ["0.weight", "0.bias"]
    w, b = (model.state_dict()[k].astype(np.float64) for k in ("0.weight", "0.bias"))
    x = rng.standard_normal((3, 4)).astype(np.float32)
    gy = rng.standard_normal((3, 4))

    def loss(wv):
        return float(((np.tanh(x @ wv.T + b) @ wv.T + b) * gy).sum())

    model(x)
    model.backward(gy.astype(np.float32))
    from tests.helpers import numeric_grad
    assert_close(model.parameters()[0].grad.get(), numeric_grad(loss, w), 1e-4, 1e-4, "summed weight gradient")
    before = model.state_dict()["0.weight"]
    grad = model.parameters()[0].grad.get()
    clcnn.optim.SGD(model, lr=0.1).step()
    assert_close(model.state_dict()["0.weight"], before - 0.1 * grad, 1e-6, 1e-6, "one SGD update")


def test_a_layer_in_two_sequentials_under_other_names_is_refused_and_the_first_still_saves(device, tmp_path):
    conv = L.Conv2D(1, 2, 3)
    first = clcnn.Sequential([conv, L.ReLU()], device=device)
    with pytest.raises(ValueError, match=r"already belongs to another model.*'0.weight'.*'1.weight'"):
        clcnn.Sequential([L.Identity(), conv], device=device)
    first.save(tmp_path / "m.clcnn")
    again = clcnn.load(tmp_path / "m.clcnn", device=device)
    assert list(again.state_dict()) == ["0.weight", "0.bias"]
    same_place = clcnn.Sequential([conv, L.Tanh()], device=device)   # same names: shared weights
    assert same_place.parameters()[0] is first.parameters()[0]


def test_names_keys_and_summary_list_each_layers_inputs(device):
    inp, out = _residual_block()
    model = clcnn.Model(inp, out, device=device)
    keys = list(model.state_dict())
    assert keys[:2] == ["conv1.weight", "bn1.weight"]
    assert "bn1.running_mean" in keys and "bn1.num_batches_tracked" in keys
    assert [p.name for p in model.parameters()] == ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight",
                                                    "bn2.weight", "bn2.bias"]
    text = model.summary(print_fn=None)
    add_row = next(line for line in text.splitlines() if line.startswith("add_"))
    assert "x, bn2" in add_row and "8x10x10" in add_row
    auto = L.Conv2D(1, 1, 1)
    assert auto.name.startswith("conv2d_")


def test_graph_save_load_round_trip_with_shared_layer_and_buffers(device, tmp_path):
    rng = np.random.default_rng(3)
    inp = L.Input((2, 5, 5), name="image")
    conv = L.Conv2D(2, 2, 3, padding=1, name="conv")
    y = L.BatchNorm2D(2, name="bn")(conv(inp))
    y = conv(L.ReLU()(y))
    out = L.Concat()([y, inp])
    model = clcnn.Model(inp, out, device=device)
    randomise_state(model, rng)
    x = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    model(x)                                   # a train step updates the running statistics
    model.eval()
    want = model(x).get()
    model.save(tmp_path / "g.clcnn")
    again = clcnn.load(tmp_path / "g.clcnn", device=device).eval()
    assert again.architecture() == model.architecture()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)
    np.testing.assert_array_equal(again(x).get(), want)


def test_eval_fusion_of_batchnorm_changes_nothing_but_rounding(device):
    rng = np.random.default_rng(4)
    inp, out = _residual_block()
    model = clcnn.Model(inp, out, device=device)
    randomise_state(model, rng)
    model.eval()
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    fused = model(x).get()
    assert any(step.batchnorm is not None for step in model._plan())
    from clcnn import fusion
    plan = model._plan(fold=False)
    assert not fusion.has_folds(plan, model._calls)
    model._plans[(False, True, True)] = plan      # run the unfused schedule (keys: training, fold, fuse_pools)
    assert_close(fused, model(x).get(), 1e-5, 1e-4, "folded vs unfolded")
    keys = list(model.state_dict())
    assert keys == list(model.state_dict())


def test_graph_errors_name_the_layer_and_the_problem(device, tmp_path):
    a, b = L.Input((3, 8, 8), name="a"), L.Input((4, 8, 8), name="b")
    with pytest.raises(ShapeError, match=r"'add_.*input 0 is \(3, 8, 8\), input 1 is \(4, 8, 8\)"):
        L.Add()([a, b])
    with pytest.raises(ShapeError, match=r"agree on every other axis.*\(3, 8, 8\).*\(4, 4, 4\)"):
        L.Concat()([a, L.MaxPool2D(2)(b)])
    with pytest.raises(ValueError, match="divisible by groups.*in_channels 6.*groups 4"):
        L.Conv2D(6, 8, 3, groups=4)
    out = L.Add()([L.Conv2D(3, 4, 1)(a), b])
    with pytest.raises(ValueError, match="need input .b.*add it to the inputs"):
        clcnn.Model(a, out, device=device)
    x = L.Conv2D(3, 3, 1, name="same")(a)
    with pytest.raises(ValueError, match="two layers are named 'same'"):
        clcnn.Model(a, L.Conv2D(3, 3, 1, name="same")(x), device=device)
    model = clcnn.Model(a, L.ReLU()(x), device=device)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="symbolic tensors"):
        L.ReLU()(np.zeros((1, 3, 8, 8), np.float32))
    # a cycle can only be made by editing a node by hand; it is found, not looped on
    y = L.ReLU()(x)
    x.node.inputs = [y]
    with pytest.raises(ValueError, match="cycle"):
        clcnn.Model(a, y, device=device)
    # a checkpoint of one graph loaded into another names the file and the keys
    other = clcnn.Model(*_residual_block(), device=device)
    other.save(tmp_path / "res.clcnn")
    from clcnn.model import load_weights
    from clcnn.serialization import read_archive
    _, arrays = read_archive(tmp_path / "res.clcnn")
    with pytest.raises(CheckpointError, match=r"res.clcnn.*missing.*unexpected"):
        load_weights(clcnn.Model(*_inception_block(), device=device), arrays, str(tmp_path / "res.clcnn"))


@pytest.mark.parametrize("bad, match", [
    (lambda: clcnn.Sequential(["relu"]), "layer 0 is str 'relu', not a layer"),
    (lambda: clcnn.Sequential([L.ReLU]), "layer 0 is the class ReLU.*parentheses"),
    (lambda: L.Dense(True, 3), "in_features must be a positive int, got True"),
    (lambda: clcnn.Sequential([]), "at least one layer"),
    (lambda: clcnn.Sequential([L.Add()]), "several inputs"),
])
def test_bad_models_are_refused_in_one_line(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        bad()


def test_backward_before_forward_is_one_clear_error(device):
    model = clcnn.Sequential([L.Dense(2, 2)], device=device)
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) first"):
        model.backward(np.zeros((1, 2), np.float32))


def test_load_state_dict_is_atomic(device):
    model = clcnn.Sequential([L.Dense(3, 2), L.ReLU(), L.Dense(2, 2)], device=device)
    before = model.state_dict()
    bad = {k: np.full_like(v, 7.0) for k, v in before.items()}
    bad["2.bias"] = np.zeros(5, np.float32)            # the last key is wrong
    with pytest.raises(ShapeError, match="2.bias"):
        model.load_state_dict(bad)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
