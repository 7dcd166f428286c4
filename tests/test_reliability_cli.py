"""Reliability of `clcnn train` and of checkpoints: run folders, the folder lock, SIGTERM,
resume checks, label and target checks of every split, the parameter guard, messages.
Signals, locks and concurrency go through real subprocesses."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import clcnn
from clcnn import serialization
from clcnn.cli.main import cli
from clcnn.datasets import mnist, prepare_images, write_idx
from clcnn.errors import CheckpointError
from clcnn.rundir import LOCK_NAME
from clcnn.train import Trainer, TrainingDiverged, evaluate, predict

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--epochs", "1", "--limit", "128", "--batch-size", "64", "--device", "cpu", "--quiet", "--seed", "2"]


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def one_line_error(result, *fragments):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def spawn(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "clcnn.cli.main", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc, seconds=120):
    deadline = time.time() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished `clcnn train` run (1 epoch, 128 images, batch 64)."""
    out = tmp_path_factory.mktemp("run") / "lenet5"
    result = run_cli("train", "lenet5", *QUICK, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / LOCK_NAME).unlink(missing_ok=True)
    return copy


# ------------------------------------------------------------- 2: numbered folders, --overwrite

def test_default_out_is_a_new_numbered_folder_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run_cli("train", "lenet5", *QUICK)
    assert first.exit_code == 0, first.output
    before = (tmp_path / "runs/lenet5/best.clcnn").read_bytes()
    second = run_cli("train", "lenet5", *QUICK, "--seed", "5")
    assert second.exit_code == 0, second.output
    assert (tmp_path / "runs/lenet5/best.clcnn").read_bytes() == before
    assert (tmp_path / "runs/lenet5-2/last.clcnn").is_file() and "runs/lenet5-2" in second.output


def test_out_holding_a_run_is_refused_unless_overwrite(run_copy):
    before = {name: (run_copy / name).read_bytes() for name in ("last.clcnn", "best.clcnn")}
    refused = run_cli("train", "lenet5", *QUICK, "--out", run_copy)
    one_line_error(refused, str(run_copy), "--overwrite", "--resume")
    assert all((run_copy / name).read_bytes() == data for name, data in before.items())
    replaced = run_cli("train", "lenet5", *QUICK, "--seed", "9", "--out", run_copy, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (run_copy / "last.clcnn").read_bytes() != before["last.clcnn"]
    assert serialization.read_archive(run_copy / "last.clcnn")[0]["trainer"]["seed"] == 9


def test_out_that_is_a_file_fails_before_training(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("x")
    result = run_cli("train", "lenet5", *QUICK, "--out", target)
    one_line_error(result, "notes.txt", "not a folder")
    assert target.read_text() == "x" and "epoch" not in result.output


# ------------------------------------------------------------- 3 and 9: the lock, SIGTERM

def test_second_run_is_refused_while_the_first_lives_and_sigterm_saves(tmp_path):
    out = tmp_path / "shared"
    args = ["train", "lenet5", "--epochs", "50", "--limit", "1024", "--batch-size", "64", "--device", "cpu",
            "--seed", "3", "--quiet", "--out", out]
    first = spawn(*args)
    try:
        wait_for(lambda: (out / "last.clcnn").exists(), first)      # epoch 1 done, training on
        second = spawn(*args, "--overwrite")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1 and str(out) in err and f"pid {first.pid}" in err, err
        assert "Traceback" not in err
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, stderr
    assert "terminated (SIGTERM): checkpoint saved" in stdout and "--resume" in stdout
    state = serialization.read_archive(out / "last.clcnn")[0]["trainer"]
    assert state["epoch"] >= 1
    resumed = run_cli(*args[:2], "--epochs", state["epoch"] + 1, *args[4:], "--resume", out / "last.clcnn")
    assert resumed.exit_code == 0, resumed.output
    assert f"at epoch {state['epoch'] + 1}, batch {state['batch']}" in resumed.output
    assert len(json.loads((out / "history.json").read_text())) == state["epoch"] + 1


def test_stale_lock_is_taken_over_and_only_stale_temporaries_go(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{dead.pid}\n")
    stale = out / f".tmp-{dead.pid}-abc.clcnn"         # its writer is dead
    live = out / f".tmp-{os.getpid()}-def.clcnn"        # this process could be writing it
    legacy = out / ".tmp-old123.clcnn"                  # no pid, older than the lock
    for path in (stale, live, legacy):
        path.write_bytes(b"half a checkpoint")
    result = run_cli("train", "lenet5", *QUICK, "--out", out)
    assert result.exit_code == 0, result.output
    assert live.exists() and not stale.exists() and not legacy.exists()
    assert (out / "last.clcnn").is_file()
    # The finished run let go of the lock: another process can take it at once.
    probe = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    assert subprocess.run([sys.executable, "-c", probe, str(out / LOCK_NAME)]).returncode == 0


# ------------------------------------------------------------- 4 and 12: resume checks

@pytest.mark.parametrize("option, value, saved", [("--batch-size", "32", "64"), ("--limit", "256", "128")])
def test_resume_with_other_data_or_batch_settings_is_refused(run_copy, option, value, saved):
    args = ["train", "lenet5", *QUICK, "--epochs", "2", "--out", run_copy, "--resume", run_copy / "last.clcnn"]
    args[args.index(option) + 1] = value
    before = (run_copy / "last.clcnn").read_bytes()
    result = run_cli(*args)
    one_line_error(result, option, saved, value)
    assert (run_copy / "last.clcnn").read_bytes() == before


def test_resume_from_a_finished_run_says_nothing_was_trained(run_copy):
    before = (run_copy / "last.clcnn").read_bytes()
    result = run_cli("train", "lenet5", *QUICK, "--resume", run_copy / "last.clcnn")
    assert result.exit_code == 0, result.output
    assert "already trained 1 of 1 epochs" in result.output and "--epochs" in result.output
    assert (run_copy / "last.clcnn").read_bytes() == before


def test_trainer_refuses_to_resume_with_another_batch_size(device, run_copy):
    images, labels = mnist("train")
    clcnn.seed(0)
    model = clcnn.models.lenet5(device=device)
    trainer = Trainer(model, clcnn.losses.SoftmaxCrossEntropy(), clcnn.optim.SGD(model, lr=0.05, momentum=0.9),
                      progress=False)
    trainer.load_checkpoint(run_copy / "last.clcnn")
    with pytest.raises(CheckpointError, match="batch_size 64, this run has 32"):
        trainer.fit((prepare_images(images[:128], pad=2), labels[:128]), epochs=2, batch_size=32)


# ------------------------------------------------------------- 6: labels of every split

@pytest.fixture(scope="module")
def small():
    images, labels = mnist("train")
    return prepare_images(images[:96], pad=2), labels[:96].astype(np.int64)


def lenet_trainer(device, loss=None, tmp_path=None, optimizer=None):
    clcnn.seed(0)
    model = clcnn.models.lenet5(device=device)
    opt = optimizer(model) if optimizer else clcnn.optim.SGD(model, lr=0.05, momentum=0.9)
    return Trainer(model, loss or clcnn.losses.SoftmaxCrossEntropy(), opt, progress=False,
                   checkpoint_dir=str(tmp_path) if tmp_path else None)


@pytest.mark.parametrize("bad, fragment", [(10, "label 10 at index 5"), (-1, "label -1 at index 5"),
                                           (2.5, "whole class indices, got 2.5 at index 5")])
def test_bad_validation_labels_are_refused_before_training(device, small, tmp_path, bad, fragment):
    images, labels = small
    val_labels = labels.astype(np.float64 if isinstance(bad, float) else np.int64)
    val_labels[5] = bad
    trainer = lenet_trainer(device, tmp_path=tmp_path)
    before = trainer.model.state_dict()
    with pytest.raises(ValueError, match=fragment):
        trainer.fit((images, labels), epochs=1, batch_size=32, validation_data=(images, val_labels))
    assert not (tmp_path / "last.clcnn").exists()
    for key, value in trainer.model.state_dict().items():
        assert np.array_equal(value, before[key]), key
    with pytest.raises(ValueError, match=fragment):
        evaluate(trainer.model, (images, val_labels))


def test_whole_float_labels_are_class_indices(device, small):
    images, labels = small
    model = clcnn.models.lenet5(device=device)
    as_int, as_float = evaluate(model, (images, labels)), evaluate(model, (images, labels.astype(np.float32)))
    assert as_int["loss"] == as_float["loss"] and as_int["accuracy"] == as_float["accuracy"]


def test_cli_refuses_a_test_split_with_bad_labels_before_training(tmp_path):
    images, labels = mnist("train")
    data, out = tmp_path / "digits", tmp_path / "out"
    data.mkdir()
    bad = labels[:64].copy()
    bad[7] = 12
    write_idx(data / "train-images-idx3-ubyte", images[:128])
    write_idx(data / "train-labels-idx1-ubyte", labels[:128])
    write_idx(data / "t10k-images-idx3-ubyte", images[:64])
    write_idx(data / "t10k-labels-idx1-ubyte", bad)
    result = run_cli("train", "lenet5", *QUICK, "--dataset", data, "--out", out)
    one_line_error(result, "the test set", "label 12 at index 7")
    assert not (out / "last.clcnn").exists()


# ------------------------------------------------------------- 7: every loss with validation

def test_mse_with_one_hot_targets_trains_and_validates(device, small, tmp_path):
    images, labels = small
    onehot = np.eye(10, dtype=np.float32)[labels]
    trainer = lenet_trainer(device, clcnn.losses.MSE(), tmp_path)
    history = trainer.fit((images, onehot), epochs=2, batch_size=32, validation_data=(images[:64], onehot[:64]))
    assert len(history) == 2 and (tmp_path / "best.clcnn").is_file()
    logits = predict(trainer.model, images[:64]).astype(np.float64)
    assert np.isclose(history[-1]["val_loss"], np.mean((logits - onehot[:64]) ** 2), rtol=1e-5)
    assert history[-1]["val_accuracy"] == np.mean(logits.argmax(1) == labels[:64])
    assert 0 <= history[-1]["accuracy"] <= 1


def test_mse_regression_targets_have_no_accuracy_and_best_follows_the_loss(device, small, tmp_path):
    images, _ = small
    targets = np.random.default_rng(0).normal(size=(len(images), 10)).astype(np.float32)
    trainer = lenet_trainer(device, clcnn.losses.MSE(), tmp_path)
    history = trainer.fit((images, targets), epochs=2, batch_size=32, validation_data=(images, targets))
    assert all(h["accuracy"] is None and h["val_accuracy"] is None for h in history)
    best = min(history, key=lambda h: h["val_loss"])["epoch"]
    saved = serialization.read_archive(tmp_path / "best.clcnn")[0]["trainer"]["epoch"]
    assert saved == best


def test_mse_with_class_labels_is_refused_with_a_hint(device, small):
    images, labels = small
    trainer = lenet_trainer(device, clcnn.losses.MSE())
    with pytest.raises(ValueError, match=r"np.eye\(10\)\[labels\]"):
        trainer.fit((images, labels), epochs=1, batch_size=32)


# ------------------------------------------------------------- 5: the parameter guard

class PoisonedSGD(clcnn.optim.SGD):
    """An update that turns one weight into NaN at its third step, the loss staying finite."""

    def step(self):
        super().step()
        if self.step_count == 3:
            p = self.params[0]
            host = p.data.get()
            host.flat[0] = np.nan
            p.data.set(host)


def test_a_non_finite_update_stops_training_although_the_loss_is_finite(device, small, tmp_path):
    images, labels = small
    trainer = lenet_trainer(device, tmp_path=tmp_path, optimizer=lambda m: PoisonedSGD(m, lr=0.05))
    with pytest.raises(TrainingDiverged, match="parameter 0.weight became NaN or Inf by epoch 1"):
        trainer.fit((images, labels), epochs=1, batch_size=32)
    assert not (tmp_path / "last.clcnn").exists()


def test_nan_images_stop_training(device, small):
    """NaN inputs poison the weights; whether a layer hides them from the loss or not, the run
    must stop."""
    _, labels = small
    nan_images = np.full((len(labels), 1, 28, 28), np.nan, np.float32)
    clcnn.seed(0)
    model = clcnn.models.mnist_cnn(device=device)
    trainer = Trainer(model, clcnn.losses.SoftmaxCrossEntropy(), clcnn.optim.SGD(model, lr=0.05), progress=False)
    with pytest.raises(TrainingDiverged):
        trainer.fit((nan_images, labels), epochs=1, batch_size=32)


# ------------------------------------------------------------- 8, 12, 13: files and messages

def write_checkpoint(path, device, header_changes=None, weights=None):
    model = clcnn.models.lenet5(device=device)
    state = model.state_dict() if weights is None else weights
    header = {"architecture": model.architecture()}
    header.update(header_changes or {})
    serialization.write_archive(path, header, {f"param/{k}": v for k, v in state.items()})
    return path


@pytest.mark.parametrize("changes, fragment", [
    ({"architecture": "lenet5"}, "architecture"),
    ({"architecture": ["Conv2D"]}, "odd.clcnn: "),
    ({"architecture": []}, "no layers"),
    ({"metadata": "mnist"}, "'metadata' must be an object"),
    ({"metadata": [1, 2]}, "'metadata' must be an object"),
    ({"metadata": {"preprocess": {"pad": 2}}}, "lacks mean, std"),
])
def test_malformed_checkpoint_headers_are_one_line(device, tmp_path, changes, fragment):
    path = write_checkpoint(tmp_path / "odd.clcnn", device, changes)
    result = run_cli("evaluate", path, "--device", "cpu")
    one_line_error(result, "odd.clcnn", fragment)
    assert len(result.output.strip().splitlines()) == 1


def test_json_file_as_a_checkpoint_is_named_not_pickle(tmp_path):
    path = tmp_path / "history.json"
    path.write_text("[{\"epoch\": 1}]")
    result = run_cli("evaluate", path)
    one_line_error(result, "history.json", "not a clcnn checkpoint")
    assert "pickle" not in result.output


def test_evaluate_json_writes_null_for_nan(device, tmp_path):
    weights = {k: np.full_like(v, np.nan) for k, v in clcnn.models.lenet5(device=device).state_dict().items()}
    path = write_checkpoint(tmp_path / "nan.clcnn", device, weights=weights)
    result = run_cli("evaluate", path, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")
    metrics = json.loads(result.output, parse_constant=refuse)
    assert metrics["loss"] is None and metrics["n"] == 10000


def test_checkpoints_get_the_umask_mode(tmp_path, run):
    old = os.umask(0o027)
    try:
        serialization.write_archive(tmp_path / "m.clcnn", {}, {"a": np.zeros(3)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.clcnn").stat().st_mode) == 0o640
    modes = {name: stat.S_IMODE((run / name).stat().st_mode) for name in ("last.clcnn", "history.json")}
    assert modes["last.clcnn"] == modes["history.json"], modes


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -0.1, 0.0])
def test_optimizers_refuse_a_learning_rate_that_is_not_finite_and_positive(device, lr):
    model = clcnn.models.lenet5(device=device)
    for make in (clcnn.optim.SGD, clcnn.optim.Adam):
        with pytest.raises(ValueError, match="learning rate"):
            make(model, lr=lr)
        opt = make(model, lr=0.01)
        with pytest.raises(ValueError, match="learning rate"):
            opt.load_state_dict({"step_count": 1, "lr": lr}, {})


def test_broken_pipe_exits_quietly():
    proc = spawn("devices")
    proc.stdout.close()            # the reader is gone before anything is written (| head -0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Broken pipe" not in err and "Error" not in err, err
