"""`clcnn check`: every op against the oracle on the device, a table, JSON, and failures that
are reported rather than hidden."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from clcnn import check
from clcnn.cli.main import cli
from clcnn.errors import KernelBuildError
from clcnn.ops import conv2d as conv_ops

FAMILIES = ["conv2d", "conv2d grouped", "conv2d depthwise", "conv2d dilated", "conv2d winograd", "conv2d im2col",
            "conv2d input residual",
            "maxpool2d",
            "avgpool2d",
            "global_maxpool2d", "global_avgpool2d", "activation", "softmax", "dense", "dropout",
            "batchnorm2d train", "batchnorm2d eval", "add", "concat", "cross_entropy", "mse",
            "broadcast add/sub/mul/div", "prelu", "clip", "transpose", "pad", "lrn", "softmax axis"]
EXPECTED_OPS = ({f"{f} {p}" for f in FAMILIES for p in ("forward", "backward")}
                | {"gemm", "cross_entropy train", "sgd update", "sgd update grouped", "adam update",
                   "lenet5 step", "resnet20 step", "conv2d residual"})   # (forward only)


@pytest.fixture(scope="module")
def report(device):
    return check.run(device)


def test_every_op_passes_on_the_test_device(report):
    assert {r["op"] for r in report["results"]} == EXPECTED_OPS
    for r in report["results"]:
        assert r["cases"] >= 1 and r["passed"] and r["max_error"] <= r["tolerance"], r
    assert report["passed"] is True
    assert report["seconds"] > 0
    json.dumps(report)                      # --json needs it JSON-able


def test_report_table_names_every_op(report):
    text = check.format_report(report)
    for op in EXPECTED_OPS:
        assert op in text
    assert "FAIL" not in text and f"all {len(EXPECTED_OPS)} ops pass" in text


def _only(monkeypatch, *names):
    monkeypatch.setattr(check, "FAMILIES", [entry for entry in check.FAMILIES if entry[0] in names])


def test_a_wrong_kernel_fails_the_check_and_the_cli_exits_1(device, monkeypatch):
    _only(monkeypatch, "conv2d", "gemm")
    real = conv_ops.conv2d_forward

    def off_by_one_percent(*args, **kwargs):
        y = real(*args, **kwargs)
        return y * np.float32(1.01)
    monkeypatch.setattr(conv_ops, "conv2d_forward", off_by_one_percent)
    report = check.run(device)
    by_op = {r["op"]: r for r in report["results"]}
    assert not report["passed"]
    assert not by_op["conv2d forward"]["passed"] and by_op["conv2d forward"]["max_error"] > 1e-3
    assert by_op["gemm"]["passed"]
    # The backward runs from the wrong forward output only through the fused activations.
    assert set(by_op) == {"conv2d forward", "conv2d backward", "gemm"}
    assert "conv2d forward" in check.format_report(report).splitlines()[-1]
    result = CliRunner().invoke(cli, ["check", "--device", device.index])
    assert result.exit_code == 1 and "FAIL" in result.output


def test_nan_from_a_kernel_is_a_failure(device, monkeypatch):
    _only(monkeypatch, "conv2d")
    real = conv_ops.conv2d_forward

    def nan_out(*args, **kwargs):
        y = real(*args, **kwargs)
        y.fill(np.float32(np.nan))
        return y
    monkeypatch.setattr(conv_ops, "conv2d_forward", nan_out)
    assert check.run(device)["results"][0]["max_error"] == float("inf")


def test_an_op_that_raises_is_reported_and_the_rest_still_run(device, monkeypatch):
    _only(monkeypatch, "conv2d", "dense")

    def broken(*args, **kwargs):
        raise KernelBuildError("building conv2d.cl failed: error: fake build log line")
    monkeypatch.setattr(conv_ops, "conv2d_backward", broken)
    report = check.run(device)
    conv, dense_fwd, dense_bwd = report["results"]
    assert not conv["passed"] and "fake build log line" in conv["error"]
    assert dense_fwd["passed"] and dense_bwd["passed"] and dense_fwd["cases"] == 3
    assert "fake build log line" in check.format_report(report)


def test_cli_json_and_unknown_device(device, monkeypatch):
    _only(monkeypatch, "gemm", "sgd update grouped")
    result = CliRunner().invoke(cli, ["check", "--device", device.index, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["passed"] and [r["op"] for r in data["results"]] == ["gemm", "sgd update grouped"]
    result = CliRunner().invoke(cli, ["check", "--device", "no-such-device"])
    assert result.exit_code == 1 and "no-such-device" in result.output and "Traceback" not in result.output


def test_a_wrong_merge_kernel_fails_the_resnet_step_not_lenet(device, monkeypatch):
    # The whole-step checks catch what a graph alone runs: a residual sum off by 0.5%.
    from clcnn.ops import merge as merge_ops
    _only(monkeypatch, "lenet5 step", "resnet20 step")
    real = merge_ops.add_forward
    monkeypatch.setattr(merge_ops, "add_forward", lambda *a, **k: real(*a, **k) * np.float32(1.005))
    by_op = {r["op"]: r for r in check.run(device)["results"]}
    assert by_op["lenet5 step"]["passed"] and not by_op["resnet20 step"]["passed"]


def test_a_wrong_batchnorm_statistic_fails(device, monkeypatch):
    from clcnn.ops import batchnorm as bn_ops
    _only(monkeypatch, "batchnorm2d train")
    real = bn_ops.batchnorm2d_forward_train

    def biased(*args, **kwargs):
        y, mean, invstd = real(*args, **kwargs)
        return y, mean, invstd * np.float32(1.001)
    monkeypatch.setattr(bn_ops, "batchnorm2d_forward_train", biased)
    report = check.run(device)
    assert not report["passed"]
