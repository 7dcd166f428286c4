"""The Trainer: real learning, exact resume, clean interruption, divergence handling."""
import os
import signal

import numpy as np
import pytest

import clcnn
from clcnn.datasets import mnist, prepare_images
from clcnn.errors import CheckpointError
from clcnn.train import Trainer, TrainingDiverged


@pytest.fixture(scope="module")
def digits():
    images, labels = mnist("train")
    test_images, test_labels = mnist("test")
    return ((prepare_images(images[:768], pad=2), labels[:768]),
            (prepare_images(test_images[:500], pad=2), test_labels[:500]))


def make_trainer(device, tmp_path=None, seed=0, optimizer="sgd", augment=0):
    clcnn.seed(seed)
    model = clcnn.models.lenet5(device=device)
    opt = (clcnn.optim.SGD(model, lr=0.05, momentum=0.9) if optimizer == "sgd"
           else clcnn.optim.Adam(model, lr=2e-3))
    return Trainer(model, clcnn.losses.SoftmaxCrossEntropy(), opt, seed=seed, augment_shift=augment,
                   checkpoint_dir=str(tmp_path) if tmp_path else None, progress=False)


def test_training_lowers_the_loss_and_beats_chance(device, digits):
    train, test = digits
    trainer = make_trainer(device, optimizer="adam")
    before = trainer.evaluate(test)
    history = trainer.fit(train, epochs=3, batch_size=32, validation_data=test)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["val_loss"] < before["loss"]
    assert history[-1]["val_accuracy"] > 0.7      # chance is 0.1
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_second", "lr"):
        assert key in history[-1]


def test_seeded_runs_are_reproducible(device, digits):
    train, _ = digits
    a, b = make_trainer(device, seed=4, augment=2), make_trainer(device, seed=4, augment=2)
    a.fit((train[0][:256], train[1][:256]), epochs=1, batch_size=64)
    b.fit((train[0][:256], train[1][:256]), epochs=1, batch_size=64)
    for key, value in a.model.state_dict().items():
        assert np.array_equal(value, b.model.state_dict()[key]), key


def _weights(trainer):
    return trainer.model.state_dict()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_after_an_epoch_equals_an_uninterrupted_run(device, digits, tmp_path, optimizer):
    train = (digits[0][0][:384], digits[0][1][:384])
    straight = make_trainer(device, optimizer=optimizer)
    straight.fit(train, epochs=2, batch_size=64)

    first = make_trainer(device, tmp_path, optimizer=optimizer)
    first.fit(train, epochs=1, batch_size=64)
    resumed = make_trainer(device, seed=99, optimizer=optimizer)   # other init: the checkpoint must win
    resumed.load_checkpoint(tmp_path / "last.clcnn")
    history = resumed.fit(train, epochs=2, batch_size=64)
    assert [h["epoch"] for h in history] == [1, 2]
    for key, value in _weights(straight).items():
        assert np.array_equal(value, _weights(resumed)[key]), key


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(device, digits, tmp_path):
    train = (digits[0][0][:384], digits[0][1][:384])
    straight = make_trainer(device, augment=2)
    straight.fit(train, epochs=2, batch_size=64)

    interrupted = make_trainer(device, tmp_path, augment=2)
    real_step, calls = interrupted.train_step, []

    def step_then_ctrl_c(x, y):
        calls.append(1)
        if len(calls) == 8:   # epoch 2, batch 2: a SIGINT arrives in the middle of training
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(x, y)

    interrupted.train_step = step_then_ctrl_c
    interrupted.fit(train, epochs=2, batch_size=64)
    assert interrupted.interrupted and (interrupted.epoch, interrupted.batch) == (1, 2)

    resumed = make_trainer(device, seed=7, augment=2)
    resumed.load_checkpoint(tmp_path / "last.clcnn")
    assert (resumed.epoch, resumed.batch) == (1, 2)
    resumed.fit(train, epochs=2, batch_size=64)
    for key, value in _weights(straight).items():
        assert np.array_equal(value, _weights(resumed)[key]), key


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(device, digits, tmp_path):
    train = (digits[0][0][:128], digits[0][1][:128])
    trainer = make_trainer(device, tmp_path)
    trainer.fit(train, epochs=1, batch_size=64)
    good = clcnn.load(tmp_path / "last.clcnn", device=device).state_dict()
    poisoned = (np.full_like(train[0], np.nan), train[1])
    with pytest.raises(TrainingDiverged, match="epoch 2, batch 1"):
        trainer.fit(poisoned, epochs=2, batch_size=64)
    kept = clcnn.load(tmp_path / "last.clcnn", device=device).state_dict()
    for key, value in good.items():
        assert np.array_equal(value, kept[key])


def test_checkpoint_of_another_architecture_or_optimizer_is_refused(device, tmp_path, digits):
    trainer = make_trainer(device, tmp_path)
    trainer.fit((digits[0][0][:64], digits[0][1][:64]), epochs=1, batch_size=64)
    clcnn.seed(0)
    other = Trainer(clcnn.models.mnist_cnn(device=device), clcnn.losses.SoftmaxCrossEntropy(),
                    clcnn.optim.SGD(clcnn.models.mnist_cnn(device=device), lr=0.1), progress=False)
    with pytest.raises(CheckpointError, match="another architecture"):
        other.load_checkpoint(tmp_path / "last.clcnn")
    adam = make_trainer(device, optimizer="adam")
    with pytest.raises(CheckpointError, match="SGD"):
        adam.load_checkpoint(tmp_path / "last.clcnn")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoints_raise_checkpoint_error(device, tmp_path, damage):
    path = tmp_path / "m.clcnn"
    clcnn.models.lenet5(device=device).save(path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:len(data) // 2], "garbage": b"\x00junk" * 100, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="m.clcnn"):
        clcnn.load(path, device=device)


def test_checkpoint_from_a_future_format_is_refused(device, tmp_path):
    from clcnn import serialization
    path = tmp_path / "future.clcnn"
    serialization.write_archive(path, {"version": serialization.VERSION + 1, "architecture": []}, {})
    with pytest.raises(CheckpointError, match="newer clcnn"):
        clcnn.load(path, device=device)


def test_schedules():
    from clcnn.schedules import CosineLR, StepLR
    assert StepLR(2, 0.5)(1.0, 0) == 1.0 and StepLR(2, 0.5)(1.0, 3) == 0.5
    cosine = CosineLR(10)
    assert cosine(1.0, 0) == 1.0 and abs(cosine(1.0, 5) - 0.5) < 1e-12 and cosine(1.0, 10) < 1e-12


def test_fit_removes_temporaries_left_by_a_killed_checkpoint_write(device, digits, tmp_path):
    leftover = tmp_path / ".tmp-abc123.clcnn"
    leftover.write_bytes(b"half a checkpoint")
    make_trainer(device, tmp_path).fit((digits[0][0][:64], digits[0][1][:64]), epochs=1, batch_size=64)
    assert not leftover.exists() and (tmp_path / "last.clcnn").is_file()
