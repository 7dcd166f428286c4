"""The clcnn command through click's CliRunner and as a real subprocess."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from PIL import Image

from clcnn.datasets import mnist, write_idx
from clcnn.cli.main import cli


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A LeNet-5 trained one epoch on 2,000 digits through `clcnn train`: (folder, output)."""
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(cli, ["train", "lenet5", "--epochs", "1", "--limit", "2000",
                                      "--device", "cpu", "--out", str(out), "--quiet", "--seed", "1"])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def trained(trained_run):
    return trained_run[0]


def pixel_size(path):
    with Image.open(path) as image:
        return image.size


def test_train_writes_checkpoints_history_and_curves(trained_run):
    trained, output = trained_run
    for name in ("last.clcnn", "best.clcnn", "history.json", "history.csv", "curves.png", "test.json"):
        assert (trained / name).is_file(), name
    history = json.loads((trained / "history.json").read_text())
    assert len(history) == 1 and history[0]["val_accuracy"] > 0.6
    assert history[0]["val_set"] == "validation split (10% of train)"
    with open(trained / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["val_loss"]) == history[0]["val_loss"]
    assert rows[0]["val_set"] == history[0]["val_set"]
    assert pixel_size(trained / "curves.png") == (1200, 360)
    test = json.loads((trained / "test.json").read_text())
    done = output.strip().splitlines()[-1]
    assert done.startswith("done: train accuracy ") and "(held-out 10% of train)" in done
    assert f"test accuracy of best.clcnn {100 * test['test_accuracy']:.2f}%" in done


def test_train_reduces_the_lr_on_plateau_and_stops_early(tmp_path):
    """Patience 0: the lr drops by 10x after every epoch whose validation loss is no new best;
    patience 1 stops after the first such epoch. Expected from the run's own validation losses."""
    base = ["train", "lenet5", "--limit", "600", "--device", "cpu", "--quiet", "--schedule", "none", "--lr", "0.2"]
    result = CliRunner().invoke(cli, base + ["--epochs", "5", "--out", str(tmp_path / "a"),
                                             "--reduce-lr-on-plateau", "0"])
    assert result.exit_code == 0, result.output
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    lr, best = 0.2, float("inf")
    for record in history:
        assert record["lr"] == pytest.approx(lr, rel=1e-12)
        if record["val_loss"] < best - 1e-4:
            best = record["val_loss"]
        else:
            lr *= 0.1
    result = CliRunner().invoke(cli, base + ["--epochs", "6", "--out", str(tmp_path / "b"), "--early-stopping", "1"])
    assert result.exit_code == 0, result.output
    history = json.loads((tmp_path / "b" / "history.json").read_text())
    losses = [h["val_loss"] for h in history]
    stop = next((e for e in range(1, len(losses)) if losses[e] >= min(losses[:e])), None)
    assert len(history) == (6 if stop is None else stop + 1)


def test_show_filters_and_features_write_pictures(trained, tmp_path):
    result = CliRunner().invoke(cli, ["show", "filters", str(trained / "best.clcnn"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert pixel_size(trained / "filters.png") == (480, 260)          # 6 kernels in a 2x3 grid
    digit = tmp_path / "digit.png"
    Image.fromarray(mnist("test")[0][0]).save(digit)
    out = tmp_path / "maps.png"
    result = CliRunner().invoke(cli, ["show", "features", str(trained / "best.clcnn"), str(digit), "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert pixel_size(out) == (1530, 440)       # 4 rows (conv, pool, conv, pool) of input + 16 maps
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(tmp_path / "odd.png")
    result = CliRunner().invoke(cli, ["show", "features", str(trained / "best.clcnn"), str(tmp_path / "odd.png"),
                                      "--device", "cpu"])
    assert result.exit_code == 1 and "odd.png" in result.output and "Traceback" not in result.output


def test_evaluate_plot_draws_the_confusion_and_the_mistakes(trained, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(trained / "best.clcnn"), "--plot", "--out", str(tmp_path),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert pixel_size(tmp_path / "confusion.png") == (800, 700)       # 10 classes
    assert pixel_size(tmp_path / "misclassified.png") == (640, 770)   # 16 mistakes in a 4x4 grid
    assert f"wrote {tmp_path / 'confusion.png'}" in result.output


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
