"""Callbacks: code that runs at fixed points of `Trainer.fit`, as in Keras.

    trainer.fit(data, epochs=30, validation_split=0.1, callbacks=[
        EarlyStopping(patience=5, restore_best_weights=True),
        ReduceLROnPlateau(factor=0.5, patience=2),
        CSVLogger("history.csv")])

The protocol (every method optional; subclass Callback for no-op defaults and self.trainer):
    set_trainer(trainer)          before anything else
    on_train_begin(logs)          once per fit, after the data checks, before the first step
    on_epoch_begin(epoch, logs)   epoch 0-based; the epoch's learning rate is already set
    on_batch_end(batch, logs)     every batch, in order, logs {"loss", "size"[, "accuracy"]}.
                                  Called when the trainer reads the batch statistics from the
                                  device (every 0.25 s and at the end of the epoch), not after
                                  each step, so callbacks never stall the device.
    on_epoch_end(epoch, logs)     logs: the epoch's history record ("loss", "accuracy" on the
                                  training batches, "val_loss", "val_accuracy" on the validation
                                  set, "lr", ...); what a callback adds to it stays in the history
    on_train_end(logs)            once per fit, logs {"interrupted": bool}
A callback stops the run by setting `trainer.stop_training = True` (the epoch finishes first).

The trainer's own work is callbacks on the same protocol: the run is
[TerminateOnNaN(), *the user's callbacks, Checkpoint(checkpoint_dir)], so a checkpoint holds
what the user's callbacks changed (a lowered learning rate, their counters). Callbacks with a
state_dict()/load_state_dict() pair have that state saved in checkpoints and restored on
--resume, so a resumed run stops and reduces exactly where an uninterrupted one would.
"""
import csv
import math
import os

import numpy as np
import pyopencl.array as cl_array

from .errors import ClcnnError
from .ops import loss as loss_ops


class TrainingDiverged(ClcnnError):
    """The loss became NaN or Inf."""


class Callback:
    """Base class: every hook does nothing. `self.trainer` is the Trainer running the fit."""

    trainer = None

    def set_trainer(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


def _monitored(callback, logs):
    value = logs.get(callback.monitor)
    if value is None:
        have = ", ".join(k for k, v in logs.items() if isinstance(v, (int, float)) and k != "epoch")
        raise ValueError(f"{type(callback).__name__} monitors {callback.monitor!r}, which this run does not "
                         f"report (it reports {have}); pass validation data (validation_split or "
                         f"validation_data) or monitor one of those")
    return float(value)


class _Monitor(Callback):
    """Tracks the best value of one logged figure (shared by EarlyStopping and ReduceLROnPlateau)."""

    def __init__(self, monitor, patience, min_delta, mode):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a whole number >= 0, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        # "auto": accuracies grow, everything else (losses) shrinks.
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self._reset()

    def _reset(self):
        self.best, self.wait = None, 0

    def _improved(self, value):
        if self.best is None:
            return math.isfinite(value)
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], state["wait"]


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs.

    mode "auto" maximises figures named *acc* and minimises the rest. restore_best_weights:
    at the end of the fit, load the weights (and BatchNorm statistics) of the best epoch seen in
    this fit; an interrupted (Ctrl-C) run keeps its current weights so that it resumes exactly."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        super().__init__(monitor, patience, min_delta, mode)
        self.restore_best_weights = bool(restore_best_weights)

    def _reset(self):
        super()._reset()
        self.stopped_epoch, self.best_epoch, self.best_weights = None, None, None

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored(self, logs)
        if self._improved(value):
            self.best, self.wait, self.best_epoch = value, 0, epoch
            if self.restore_best_weights:
                self.best_weights = self.trainer.model.state_dict()   # host copies
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self.trainer.progress:
                print(f"early stopping: {self.monitor} has not improved for {self.wait} epochs "
                      f"(best {self.best:.4f})", flush=True)

    def on_train_end(self, logs=None):
        if self.best_weights is not None and not (logs or {}).get("interrupted"):
            self.trainer.model.load_state_dict(self.best_weights)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by `factor` when `monitor` has not improved by more than
    min_delta for `patience` epochs; the `cooldown` epochs after a reduction are not counted.

    With a schedule (clcnn.schedules) the two compose as a product: the lr of an epoch is
    schedule(base_lr, epoch) * trainer.lr_scale, and a reduction multiplies trainer.lr_scale by
    factor, so the schedule keeps its shape at a lower level. min_lr bounds the reductions: one
    never takes the current lr below min_lr (a decaying schedule may still go lower later)."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_lr=0.0, min_delta=1e-4, mode="auto",
                 cooldown=0):
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        if not min_lr >= 0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr!r}")
        super().__init__(monitor, patience, min_delta, mode)
        self.factor, self.min_lr, self.cooldown = float(factor), float(min_lr), int(cooldown)

    def _reset(self):
        super()._reset()
        self.cooling = 0

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored(self, logs)
        improved = self._improved(value)
        if improved:
            self.best, self.wait = value, 0
        if self.cooling:            # the epochs right after a reduction are not counted
            self.cooling -= 1
            return
        if improved:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        trainer = self.trainer
        lr = trainer.optimizer.lr
        if lr > self.min_lr:
            new = max(lr * self.factor, self.min_lr)
            trainer.lr_scale *= new / lr
            trainer.optimizer.lr = new
            if trainer.progress:
                print(f"reducing the learning rate to {new:.4g}: {self.monitor} has not improved for "
                      f"{self.wait} epochs", flush=True)
        self.wait, self.cooling = 0, self.cooldown

    def state_dict(self):
        return {**super().state_dict(), "cooling": self.cooling}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.cooling = state.get("cooling", 0)


class CSVLogger(Callback):
    """The history as CSV at `path`, one row per epoch, rewritten whole (atomically) after each
    epoch, so a resumed run's file holds every epoch. Columns: the history keys in order of
    first appearance; a figure an epoch lacks is an empty cell."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def on_epoch_end(self, epoch, logs=None):
        write_csv(self.path, self.trainer.history)


def write_csv(path, history):
    """Write history records (dicts) as CSV to path, atomically."""
    columns = []
    for record in history:
        columns += [key for key in record if key not in columns]
    tmp = os.path.join(os.path.dirname(path) or ".", "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in record.items()} for record in history)
    os.replace(tmp, path)


class TerminateOnNaN(Callback):
    """Stop with TrainingDiverged naming the first batch whose loss is NaN or Inf, and (at each
    statistics read) when a parameter holds NaN or Inf although the loss was finite: the loss of a
    step is taken before its update, and a layer may hide a NaN from the loss. The run stops
    before any checkpoint of the bad weights is written."""

    def on_batch_end(self, batch, logs=None):
        trainer = self.trainer
        value = logs["loss"]
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss became {value} at epoch {trainer.epoch + 1}, batch {batch + 1}; "
                "training stopped, the last good checkpoint is kept. Try a smaller --lr.")
        if batch + 1 == trainer.batch:    # the newest batch read: the parameters are checked once per read
            self.check_parameters()

    def check_parameters(self):
        """One tiny launch and one number read per parameter: mean((p - p)^2) is 0 for finite p
        and NaN for NaN or Inf."""
        trainer = self.trainer
        dev = trainer.model.device
        checks = [(p.name, loss_ops.mse_forward(dev, p.data, p.data)) for p in trainer.model.parameters()
                  if isinstance(p.data, cl_array.Array) and p.data.dtype == np.float32 and p.data.size]
        for name, value in checks:
            if not math.isfinite(float(value.get()[0])):
                raise TrainingDiverged(
                    f"parameter {name} became NaN or Inf by epoch {trainer.epoch + 1}, batch {trainer.batch} "
                    "while the loss was finite; training stopped, the last good checkpoint is kept. "
                    "Check the data for NaN/Inf or try a smaller --lr.")


def score(record):
    """What best.clcnn maximises: the validation accuracy (the training accuracy without
    validation), or minus the loss where accuracy means nothing."""
    prefix = "val_" if "val_loss" in record else ""
    accuracy = record.get(prefix + "accuracy")
    return accuracy if accuracy is not None else -record[prefix + "loss"]


class Checkpoint(Callback):
    """last.clcnn in `directory` after every epoch and on Ctrl-C/SIGTERM (at the current batch,
    for an exact resume); best.clcnn whenever an epoch beats the best score (see `score`), kept
    in trainer.best_accuracy. directory None tracks the best score and writes nothing."""

    def __init__(self, directory=None):
        self.directory = None if directory is None else os.fspath(directory)

    def _save(self, name):
        if self.directory is not None:
            self.trainer.save_checkpoint(os.path.join(self.directory, name))

    def on_epoch_end(self, epoch, logs=None):
        trainer = self.trainer
        self._save("last.clcnn")
        value = score(logs)
        if trainer.best_accuracy is None or value > trainer.best_accuracy:
            trainer.best_accuracy = value
            self._save("best.clcnn")

    def on_train_end(self, logs=None):
        if (logs or {}).get("interrupted"):
            self._save("last.clcnn")
