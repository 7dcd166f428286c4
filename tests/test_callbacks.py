"""Callbacks: early stopping, learning-rate reduction on plateau, the CSV log, the protocol's
call order, their state across a resume, and the progress line's clock."""
import csv
import io
import math

import numpy as np
import pytest

import clcnn
from clcnn.callbacks import Callback, CSVLogger, EarlyStopping, ReduceLROnPlateau
from clcnn.datasets import mnist, prepare_images
from clcnn.progress import ProgressBar, format_seconds
from clcnn.schedules import CosineLR
from clcnn.train import Trainer


@pytest.fixture(scope="module")
def digits():
    images, labels = mnist("train")
    return prepare_images(images[:256], pad=2), labels[:256]


def make_trainer(device, tmp_path=None, schedule=None, lr=0.05, seed=0):
    clcnn.seed(seed)
    model = clcnn.models.lenet5(device=device)
    return Trainer(model, clcnn.losses.SoftmaxCrossEntropy(), clcnn.optim.SGD(model, lr=lr, momentum=0.9),
                   schedule=schedule, seed=seed, checkpoint_dir=str(tmp_path) if tmp_path else None,
                   progress=False)


class Scripted(Callback):
    """Writes a given value of "score" into each epoch's logs, so the monitored figure is known."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.values[epoch]


class Snapshots(Callback):
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.trainer.model.state_dict())


SCORES = [5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 2.0, 1.0]   # best at epoch 1, then no improvement


@pytest.mark.parametrize("patience, min_delta, stops_after", [
    (3, 0.0, 5),      # epochs 2, 3, 4 fail to beat 4.0: stop after the 5th epoch
    (1, 0.0, 3),
    (0, 0.0, 3),      # patience 0: the first epoch without improvement stops
    (4, 0.0, 8),      # epoch 5 (3.0) improves in time: all 8 epochs run
    (4, 1.5, 5),      # min_delta 1.5: epoch 1's gain of 1.0 does not count, 5.0 stays best
])
def test_early_stopping_stops_after_patience_epochs_without_improvement(device, digits, patience, min_delta,
                                                                        stops_after):
    trainer = make_trainer(device)
    stopper = EarlyStopping(monitor="score", patience=patience, min_delta=min_delta)
    history = trainer.fit((digits[0][:64], digits[1][:64]), epochs=8, batch_size=64,
                          callbacks=[Scripted(SCORES), stopper])
    assert len(history) == stops_after
    assert stopper.stopped_epoch == (stops_after - 1 if stops_after < 8 else None)


def test_early_stopping_mode_max_and_auto_for_accuracy():
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="val_loss").mode == "min"
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


def test_restore_best_weights_restores_exactly_the_best_epochs_weights(device, digits):
    trainer = make_trainer(device)
    snapshots = Snapshots()
    trainer.fit(digits, epochs=8, batch_size=64, callbacks=[
        Scripted(SCORES), snapshots, EarlyStopping(monitor="score", patience=2, restore_best_weights=True)])
    assert len(snapshots.weights) == 4                      # stopped after epoch 4 (index 3)
    final = trainer.model.state_dict()
    for key, value in snapshots.weights[1].items():         # the best epoch: index 1
        assert np.array_equal(final[key], value), key
    assert any(not np.array_equal(final[k], v) for k, v in snapshots.weights[3].items())


def test_early_stopping_on_real_validation_loss_names_a_missing_figure(device, digits):
    trainer = make_trainer(device)
    with pytest.raises(ValueError, match="'val_loss'.*validation_split"):
        trainer.fit(digits, epochs=1, batch_size=64, callbacks=[EarlyStopping()])
    history = make_trainer(device).fit(digits, epochs=2, batch_size=64, validation_split=0.25,
                                       callbacks=[EarlyStopping(patience=5)])
    assert len(history) == 2 and all(math.isfinite(h["val_loss"]) for h in history)


def test_plateau_reduction_multiplies_the_scheduled_lr_by_the_factor_after_patience(device, digits):
    base, schedule = 0.05, CosineLR(7)
    trainer = make_trainer(device, schedule=schedule, lr=base)
    history = trainer.fit((digits[0][:64], digits[1][:64]), epochs=7, batch_size=64,
                          callbacks=[Scripted([1.0] * 7), ReduceLROnPlateau(monitor="score", factor=0.5, patience=2)])
    # epoch 0 sets the best; epochs 1, 2 fail -> halve after epoch 2; epochs 3, 4 fail -> halve after 4
    scale = [1, 1, 1, 0.5, 0.5, 0.25, 0.25]
    expected = [schedule(base, e) * scale[e] for e in range(7)]
    assert np.allclose([h["lr"] for h in history], expected, rtol=1e-12, atol=0)
    assert trainer.lr_scale == 0.125                  # and once more after epoch 6


def test_plateau_reduction_stops_at_min_lr_and_respects_cooldown(device, digits):
    trainer = make_trainer(device, lr=0.1)
    history = trainer.fit((digits[0][:64], digits[1][:64]), epochs=6, batch_size=64, callbacks=[
        Scripted([1.0] * 6), ReduceLROnPlateau(monitor="score", factor=0.1, patience=1, min_lr=0.03)])
    assert np.allclose([h["lr"] for h in history], [0.1, 0.1, 0.03, 0.03, 0.03, 0.03], rtol=1e-12)
    trainer = make_trainer(device, lr=0.1)
    history = trainer.fit((digits[0][:64], digits[1][:64]), epochs=6, batch_size=64, callbacks=[
        Scripted([1.0] * 6), ReduceLROnPlateau(monitor="score", factor=0.5, patience=1, cooldown=2)])
    # reduce after epoch 1, cool down through epochs 2 and 3, count again: reduce after epoch 4
    assert np.allclose([h["lr"] for h in history], [0.1, 0.1, 0.05, 0.05, 0.05, 0.025], rtol=1e-12)


def test_callback_state_survives_a_resume(device, digits, tmp_path):
    """A run stopped after 3 epochs and resumed stops early and reduces the lr exactly where an
    uninterrupted run does."""
    data = (digits[0][:64], digits[1][:64])
    scores = [1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.5, 0.4]

    def callbacks():
        return [Scripted(scores), ReduceLROnPlateau(monitor="score", factor=0.5, patience=1),
                EarlyStopping(monitor="score", patience=4)]

    straight = make_trainer(device).fit(data, epochs=8, batch_size=64, callbacks=callbacks())
    make_trainer(device, tmp_path).fit(data, epochs=3, batch_size=64, callbacks=callbacks())
    resumed = make_trainer(device, seed=5)
    resumed.load_checkpoint(tmp_path / "last.clcnn")
    history = resumed.fit(data, epochs=8, batch_size=64, callbacks=callbacks())
    assert len(history) == len(straight) == 6
    assert [h["lr"] for h in history] == [h["lr"] for h in straight]


def test_csv_logger_writes_the_history(device, digits, tmp_path):
    path = tmp_path / "history.csv"
    history = make_trainer(device).fit(digits, epochs=2, batch_size=64, validation_split=0.25,
                                       callbacks=[CSVLogger(path)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row, record in zip(rows, history):
        assert set(row) == set(record)
        for key, value in record.items():
            assert float(row[key]) == value, key    # written with repr: exact


class Recorder(Callback):
    def __init__(self):
        self.calls, self.batch_logs = [], []

    def set_trainer(self, trainer):
        super().set_trainer(trainer)
        self.calls.append(("set_trainer",))

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))
        assert logs["lr"] == self.trainer.optimizer.lr

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch))
        self.batch_logs.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch))
        assert logs is self.trainer.history[-1]

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", logs["interrupted"]))


def test_a_user_callback_receives_the_calls_in_order(device, digits):
    recorder = Recorder()
    trainer = make_trainer(device)
    trainer.callbacks.append(recorder)
    history = trainer.fit((digits[0][:200], digits[1][:200]), epochs=2, batch_size=64)
    epoch = lambda e: [("epoch_begin", e), *(("batch_end", b) for b in range(4)), ("epoch_end", e)]
    assert recorder.calls == [("set_trainer",), ("train_begin",), *epoch(0), *epoch(1), ("train_end", False)]
    # the batch logs are the batches' own figures: their size-weighted mean is the epoch's loss
    first = recorder.batch_logs[:4]
    assert [b["size"] for b in first] == [64, 64, 64, 8]
    mean = sum(b["loss"] * b["size"] for b in first) / 200
    assert math.isclose(mean, history[0]["loss"], rel_tol=1e-12)
    assert all(0 <= b["accuracy"] <= 1 for b in first)


def test_a_callback_stops_training_with_stop_training(device, digits):
    class StopAfterTwo(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.trainer.stop_training = True

    history = make_trainer(device).fit((digits[0][:64], digits[1][:64]), epochs=5, batch_size=64,
                                       callbacks=[StopAfterTwo()])
    assert [h["epoch"] for h in history] == [1, 2]


def test_progress_bar_reports_elapsed_time_and_eta():
    stream = io.StringIO()
    bar = ProgressBar(20, "epoch 1/1", stream=stream, initial=5)
    bar.start, bar.min_interval = 100.0, 0.0
    elapsed, left = bar.times(10, now=110.0)        # 5 steps timed in 10 s, 10 to go
    assert (elapsed, left) == (10.0, 20.0)
    assert bar.times(5, now=101.0)[1] is None       # nothing timed yet: no estimate
    bar.update(10, loss="0.1")
    assert "elapsed" in stream.getvalue() and "ETA" in stream.getvalue()
    assert format_seconds(65) == "1:05" and format_seconds(3723) == "1:02:03" and format_seconds(-1) == "0:00"
