"""The benchmark's op descriptions (clcnn.opspec) checked against the oracle at the benched
shapes, and the bench report's form. No speed is asserted: the machine is shared."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from clcnn import bench, models, opspec
from tests.helpers import op_calls_of_model_cases, record_op_calls

BATCH = 3   # small: the kernels are built per shape, the oracle is slow


def _small(model_name, device):
    """The model and input shape of the bench, at 16x16 for the 32x32 graphs (same kernels,
    a quarter of the oracle's work)."""
    build, input_shape = models.MODELS[model_name]
    if input_shape[1:] == (32, 32) and model_name != "lenet5":
        return build(input_size=16, device=device), input_shape[:1] + (16, 16)
    return build(device=device), input_shape


@pytest.mark.parametrize("model_name", sorted(models.MODELS))
def test_benched_ops_agree_with_oracle(device, model_name):
    # Tolerances are the cases' own (opspec.TOL_SUM for conv/dense, TOL_ELEMENTWISE else).
    model, input_shape = _small(model_name, device)
    failures = []
    for position, (_, case) in enumerate(opspec.model_cases(model, input_shape, BATCH)):
        result = opspec.check(case, device, np.random.default_rng(position))
        if not result["ok"]:
            failures.append(f"{case.name}: max error {result['max_error']} in {result['worst']}")
    assert not failures, failures


_OP_MODULES = ("conv2d", "depthwise", "dense", "pool", "activation", "batchnorm", "merge", "dropout",
               "loss", "optim", "elementwise", "layout", "lrn", "softmax")
# Public functions of those modules that compute shapes rather than launch kernels.
_SHAPE_HELPERS = ("broadcast_shape", "collapse", "geometry", "pad_shape")


@pytest.mark.parametrize("model_name", ["lenet5", "mnist-cnn", "resnet20", "mobilenet-small"])
def test_model_cases_list_exactly_the_ops_a_training_step_runs(device, model_name, monkeypatch):
    # The same multiset of op calls (kernel wrappers) from Trainer.train_step as from running
    # every case model_cases lists, forward and backward: nothing missing, nothing extra.
    from collections import Counter
    from clcnn import losses, optim
    from clcnn.train import Trainer
    model, input_shape = _small(model_name, device)
    cases = opspec.model_cases(model, input_shape, 2)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.01, momentum=0.9),
                      progress=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2,) + tuple(input_shape)).astype(np.float32)
    y = rng.integers(0, 10, 2)
    trainer.train_step(x, y)          # builds the kernels and the momentum buffers
    log = record_op_calls(monkeypatch, _OP_MODULES, helpers=_SHAPE_HELPERS)
    trainer.train_step(x, y)
    device.synchronize()
    step_ops = Counter(log)
    assert op_calls_of_model_cases(device, cases, rng, log) == step_ops
    assert cases[-2][1].name == "softmax cross-entropy train" and cases[-1][1].name.startswith("sgd grouped")


def test_torch_mirror_matches_forward_and_backward(device):
    torch = pytest.importorskip("torch")
    import clcnn
    clcnn.seed(2)
    model = models.resnet20(input_size=8, device=device)
    net = bench.torch_model(model)
    assert set(net.state_dict()) == set(model.state_dict())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    gy = rng.standard_normal((3, 10)).astype(np.float32)
    y = model(x)
    model.backward(gy)
    xt = torch.from_numpy(x)
    yt = net(xt)
    yt.backward(torch.from_numpy(gy))
    # float32 on both sides through 20 layers with batch statistics: 1e-4 of the scale.
    np.testing.assert_allclose(y.get(), yt.detach().numpy(), atol=1e-4 * np.abs(y.get()).max(), rtol=1e-3)
    grads = dict(net.named_parameters())
    for p in model.parameters():
        want = grads[p.name].grad.numpy()
        np.testing.assert_allclose(p.grad.get(), want, atol=2e-4 * np.abs(want).max(), rtol=1e-3, err_msg=p.name)
    state = model.state_dict()
    for key, value in net.state_dict().items():
        if "running" in key:
            np.testing.assert_allclose(state[key], value.numpy(), atol=1e-5, rtol=1e-4, err_msg=key)


def test_check_can_fail(device):
    # A case whose device call is wrong on purpose must be reported, not passed.
    case = opspec.pool2d("avg", (2, 3, 8, 8))
    real = case.forward
    case.forward = lambda dev, a: tuple(y * 1.01 for y in real(dev, a))
    assert not opspec.check(case, device, np.random.default_rng(0))["ok"]


def test_flop_counts(device):
    # 2*N*O*C*KH*KW*OH*OW for the forward; the backward doubles it (input and weight
    # gradients) unless the input gradient is skipped (first layer of a training step).
    case = opspec.conv2d((2, 3, 10, 12), (4, 3, 3, 5), pads=(1, 1, 2, 2))
    assert case.flops == (2 * 2 * 4 * 3 * 3 * 5 * 10 * 12, 4 * 2 * 4 * 3 * 3 * 5 * 10 * 12)
    first = opspec.conv2d((2, 3, 10, 12), (4, 3, 3, 5), need_input_grad=False)
    assert first.flops[1] == first.flops[0]
    assert opspec.dense(5, 7, 11).flops == (2 * 5 * 7 * 11, 4 * 5 * 7 * 11)
    lenet = opspec.model_cases(models.lenet5(device=device), (1, 32, 32), 1)
    # each conv's case takes its pool's backward (fusion.defers_pool_backward), whose forward is the conv's too
    assert [c.kind for _, c in lenet] == ["conv2d", "conv2d", "conv2d", "dense", "dense", "loss", "optim"]
    assert lenet[0][1].name.endswith("+avgpool +pool backward") and lenet[1][1].name.endswith("+avgpool +pool backward")
    # Grouped: each output channel sees C/groups inputs; depthwise C->2C with a 3x3 kernel.
    assert opspec.conv2d((1, 4, 6, 6), (8, 2, 3, 3), groups=2).flops[0] == 2 * 8 * 2 * 9 * 4 * 4
    assert opspec.conv2d((1, 4, 6, 6), (8, 1, 3, 3), groups=4).flops[0] == 2 * 8 * 9 * 4 * 4
    resnet = opspec.model_cases(models.resnet20(input_size=8, device=device), (3, 8, 8), 1)
    names = [c.name for _, c in resnet]
    assert sum(c.kind == "conv2d" for _, c in resnet) == 21 and sum(c.kind == "batchnorm" for _, c in resnet) == 21
    # every block's bn2 (or its shortcut's BatchNorm) runs into the Add and its ReLU
    assert sum(n.endswith(" +add x2 +relu") for n in names) == 9
    # and every block's input gradient adds the shortcut's in the block's first convolution
    # (fusion.input_residual_steps) rather than in an add pass
    assert sum(n.endswith(" +input residual") for n in names) == 9 and names.count("accumulate") == 0
    # LeNet-5's multiply-adds per image: 117,600 + 240,000 + 48,000 + 10,080 + 840.
    assert sum(c.flops[0] for _, c in lenet) == 2 * (117600 + 240000 + 48000 + 10080 + 840)


def _figures(report):
    """Every number under a *_ms / images_per_s / gflops / gbs key."""
    if isinstance(report, dict):
        for key, value in report.items():
            if isinstance(value, (int, float)) and key.endswith(("_ms", "images_per_s", "gflops", "gbs")):
                yield key, value
            else:
                yield from _figures(value)
    elif isinstance(report, list):
        for value in report:
            yield from _figures(value)


def test_run_report_is_well_formed(device):
    report = bench.run(device.index, model="lenet5", batch_size=4, repeat=3, progress=False)
    json.loads(json.dumps(report))
    assert report["device"]["name"] and report["host"]["cores"] >= 1
    assert len(report["ops"]) == 7 and report["all_checks_ok"]
    for op in report["ops"]:
        assert op["forward"]["runs"] == 3
        assert ("gflops" in op["forward"]) == (op["kind"] in ("conv2d", "dense"))
    figures = list(_figures(report))
    assert len(figures) > 40
    for key, value in figures:
        assert math.isfinite(value) and value > 0, (key, value)
    for part in ("train_step", "inference", "numpy_train_step"):
        stats = report[part]
        assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert "available" in report["torch"]
    assert "conv2d 6->16 5x5 +tanh" in bench.format_report(report)


def test_cli_bench_json(device):
    from clcnn.cli.main import cli
    result = CliRunner().invoke(cli, ["bench", "--device", device.index, "--batch-size", "2",
                                      "--repeat", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["batch_size"] == 2 and report["model"] == "lenet5"
