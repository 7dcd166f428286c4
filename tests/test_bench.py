"""The benchmark's op descriptions (clcnn.opspec) checked against the oracle at the benched
shapes, and the bench report's form. No speed is asserted: the machine is shared."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from clcnn import bench, models, opspec

BATCH = 3   # small: the kernels are built per shape, the oracle is slow


@pytest.mark.parametrize("model_name", sorted(models.MODELS))
def test_benched_ops_agree_with_oracle(device, model_name):
    # Tolerances are the cases' own (opspec.TOL_SUM for conv/dense, TOL_ELEMENTWISE else).
    build, input_shape = models.MODELS[model_name]
    failures = []
    for position, (_, case) in enumerate(opspec.model_cases(build(device=device), input_shape, BATCH)):
        result = opspec.check(case, device, np.random.default_rng(position))
        if not result["ok"]:
            failures.append(f"{case.name}: max error {result['max_error']} in {result['worst']}")
    assert not failures, failures


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
    assert [c.kind for _, c in lenet] == ["conv2d", "pool", "conv2d", "pool", "conv2d", "dense", "dense",
                                          "loss", "optim"]
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
    assert len(report["ops"]) == 9 and report["all_checks_ok"]
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
