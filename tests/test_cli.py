"""The clcnn command through click's CliRunner and as a real subprocess."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from clcnn.datasets import mnist, write_idx
from clcnn.imageio import read_image
from clcnn.cli.main import cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-5 trained one epoch on 2,000 digits through `clcnn train`."""
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(cli, ["train", "lenet5", "--epochs", "1", "--limit", "2000",
                                      "--device", "cpu", "--out", str(out), "--quiet", "--seed", "1"])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_checkpoints_history_and_curves(trained):
    for name in ("last.clcnn", "best.clcnn", "history.json", "curves.png"):
        assert (trained / name).is_file(), name
    history = json.loads((trained / "history.json").read_text())
    assert len(history) == 1 and history[0]["val_accuracy"] > 0.6
    assert read_image(trained / "curves.png").shape == (1, 240, 968)


def test_evaluate_json_reports_loss_accuracy_and_confusion(trained):
    result = CliRunner().invoke(cli, ["evaluate", str(trained / "last.clcnn"), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["n"] == 10000 and 0.6 < metrics["accuracy"] <= 1 and metrics["loss"] > 0
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10000
    assert np.isclose(np.trace(confusion) / 10000, metrics["accuracy"])


def test_summary_prints_the_lenet5_table():
    result = CliRunner().invoke(cli, ["summary", "lenet5", "--device", "cpu"])
    assert result.exit_code == 0
    assert "61,706" in result.output and "120x1x1" in result.output


def test_devices_lists_the_cpu():
    result = CliRunner().invoke(cli, ["devices"])
    assert result.exit_code == 0 and "CPU" in result.output


@pytest.mark.parametrize("args, fragment", [
    (["train", "alexnet"], "alexnet"),
    (["train", "lenet5", "--epochs", "-1"], "--epochs"),
    (["train", "lenet5", "--batch-size", "0"], "--batch-size"),
    (["train", "lenet5", "--lr", "fast"], "--lr"),
    (["train", "lenet5", "--device", "nonexistent-gpu"], "nonexistent-gpu"),
    (["train", "lenet5", "--dataset", "/no/such/folder"], "/no/such/folder"),
    (["train", "lenet5", "--resume", "/no/such.clcnn"], "no such checkpoint"),
    (["evaluate", "/no/such.clcnn"], "does not exist"),
])
def test_user_mistakes_give_one_clear_line(args, fragment):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert fragment in result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


def test_corrupt_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.clcnn"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(cli, ["evaluate", str(bad)])
    assert result.exit_code == 1 and "bad.clcnn" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_train_on_a_folder_of_idx_files_as_a_subprocess(tmp_path):
    """The real command in a real process, on a dataset folder: the loss must fall and the
    accuracy beat chance by far."""
    images, labels = mnist("train")
    test_images, test_labels = mnist("test")
    data = tmp_path / "digits"
    data.mkdir()
    write_idx(data / "train-images-idx3-ubyte.gz", images[:1500])
    write_idx(data / "train-labels-idx1-ubyte.gz", labels[:1500])
    write_idx(data / "t10k-images-idx3-ubyte", test_images[:500])
    write_idx(data / "t10k-labels-idx1-ubyte", test_labels[:500])
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "clcnn.cli.main", "train", "mnist-cnn", "--epochs", "2",
                             "--dataset", str(data), "--out", str(out), "--device", "cpu", "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    history = json.loads((out / "history.json").read_text())
    assert history[1]["loss"] < history[0]["loss"]
    assert history[1]["val_accuracy"] > 0.6
