"""Trainer: mini-batch training with validation, checkpoints, resume and clean interruption.

All randomness of a run derives from (seed, epoch, batch): the epoch's shuffle from
(seed, epoch), augmentation from (seed, epoch, batch), dropout masks from each layer's
(seed, step). A checkpoint therefore needs only those counters to resume exactly, even from
the middle of an epoch.
"""
import contextlib
import math
import os
import signal
import threading
import time

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from .callbacks import Checkpoint, TerminateOnNaN, TrainingDiverged
from .datasets.augment import augment_draw, crop_flip
from .datasets.batches import BACKGROUND, PreparedImages
from .distributed import communicator as _communicator
from .errors import CheckpointError, ClcnnError, ShapeError
from .layers import Dropout
from .losses import MSE, SoftmaxCrossEntropy
from .ops import data as data_ops
from .ops import loss as loss_ops
from .progress import ProgressBar
from .replay import StepReplay, private_input
from .rundir import FolderLock
from .model import _check_input, architecture, load_weights
from .serialization import read_archive, write_archive

# Seconds between reads of the per-step loss and accuracy (each read waits for the device).
_READ_INTERVAL = 0.25


def prepare(dev):
    """Start building, in the background, the programs whose kernels every fit's first step
    runs whatever the model: the batch gather (data.cl) and the losses (loss.cl), one build
    with the optimizers and the activation backward (device.BUNDLE). Called before
    loading the data, a cold start's compiler start-up and these builds (~1 s) overlap the
    loading and the model's set-up (`clcnn train lenet5` on empty caches, six alternating pairs
    on a noisy machine: medians 13.5 s against 14.3 s)."""
    dev.prepare("data.cl", "loss.cl")




class _DeviceData:
    """A training set uploaded once; batches are gathered (and shifted) on the device.
    PreparedImages go up as their uint8 pixels (a quarter of the bytes, and no float32 copy on
    the host) and each batch is normalised and padded as it is gathered."""

    def __init__(self, device, images, labels):
        self.device = device
        self.prep, self.index = {}, None
        if isinstance(images, PreparedImages):
            self.prep = {"pad": images.pad, "mean": images.mean, "std": images.std}
            source, self.index = images.source()
            self.images = device.to_device(source, dtype=np.uint8)
            if self.index is not None:   # the gather reads labels where it reads images
                labels, full = np.asarray(labels), np.zeros(len(source), np.int32)
                full[self.index] = labels
                labels = full
        else:
            self.images = device.to_device(images)
        self.labels = device.to_device(labels, dtype=np.int32)
        self.order = self.shifts = None

    @staticmethod
    def fits(device, images):
        dev = device.cl_device
        nbytes = images.source()[0].nbytes if isinstance(images, PreparedImages) else images.nbytes
        return nbytes <= min(dev.max_mem_alloc_size, dev.global_mem_size // 4)

    def start_epoch(self, order, shifts, flips, fill):
        order = order if self.index is None else self.index[order]
        self.order = self.device.to_device(order, dtype=np.int32)
        self.shifts = None if shifts is None else self.device.to_device(shifts, dtype=np.int32)
        self.flips = None if flips is None else self.device.to_device(flips, dtype=np.int32)
        self.fill = fill

    def batch(self, start, count):
        return data_ops.batch_gather(self.device, self.images, self.labels, self.order, start, count,
                                     self.shifts, self.fill, self.flips, **self.prep)


class Trainer:
    """Train `model` with `loss` and `optimizer`.

    schedule: optional callable (base_lr, epoch) -> lr (see clcnn.schedules).
    augment_shift: random shifts of up to this many pixels for each training image (for
    3-channel images with augment_flip, torchvision's pad-and-crop plus horizontal flip);
    augment_fill: the value of uncovered pixels (the normalised background: one number or one
    per channel; default MNIST's).
    checkpoint_dir: where last.clcnn (every epoch, and on Ctrl-C) and best.clcnn go.
    comm / distributed: data-parallel training over MPI (see clcnn.distributed): a
    Communicator or mpi4py communicator, or distributed=True for MPI.COMM_WORLD. fit's
    batch_size stays the global batch; each rank trains on its slice and rank 0 alone
    prints and writes checkpoints.
    callbacks: clcnn.callbacks objects run by every fit, before fit's own `callbacks=`.
    lr_scale: a multiplier on the scheduled learning rate (ReduceLROnPlateau lowers it).
    """

    def __init__(self, model, loss, optimizer, schedule=None, augment_shift=0, seed=0,
                 checkpoint_dir=None, progress=True, metadata=None, augment_flip=False, augment_fill=None,
                 callbacks=None,
                 comm=None, distributed=False):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.metadata = metadata or {}  # saved in checkpoints (e.g. preprocessing for predict)
        self.schedule, self.augment_shift, self.seed = schedule, int(augment_shift), int(seed)
        self.augment_flip = bool(augment_flip)
        self.augment_fill = BACKGROUND if augment_fill is None else augment_fill
        self.checkpoint_dir, self.progress = checkpoint_dir, progress
        self.comm = _communicator(comm, distributed)
        if self.comm is not None and self.comm.rank != 0:
            self.checkpoint_dir, self.progress = None, False
        self.base_lr = optimizer.lr
        self.history = []
        self.callbacks = list(callbacks or [])
        self.lr_scale = 1.0            # the lr of an epoch is schedule(base_lr, epoch) * lr_scale
        self.stop_training = False     # a callback sets it to end the fit after the current epoch
        self._callbacks = []           # those of the running fit, built-in ones included
        self._callback_states = {}     # from a loaded checkpoint, for the next fit's callbacks
        self.epoch = 0            # epochs completed
        self.batch = 0            # batches completed in the current epoch
        self._partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.best_accuracy = None  # best validation accuracy so far (or -loss where accuracy means nothing)
        self.interrupted = False
        self.interrupt_signal = None   # signal.SIGINT or signal.SIGTERM when interrupted
        self._settings = None          # data and batch settings of the current fit, kept in checkpoints
        self._resumed_settings = None  # those of the checkpoint loaded, checked by the next fit
        self._has_accuracy = True
        self._stats = None        # device (slots, 2): loss and correct count of each batch
        self._in_flight = None    # marker event after the last enqueued step
        self.replay = True        # replay recorded steps (see train_step)
        self._replay = StepReplay()
        self._classes = None      # the logits' width, for checking replayed labels

    # -- one step -----------------------------------------------------------------------
    def train_step(self, x, y):
        """Forward, backward and update on one batch (numpy or device arrays; y int labels).

        Nothing is read back: the batch's loss and correct count go to slot `self.batch` of a
        device buffer (see step_stats). At most two steps are in flight: the call returns when
        the previous step has finished, so the host prepares the next batch while the device
        computes this one. Steps of one signature after the first are recorded once and then
        replayed (clcnn.replay; `replay = False` on the trainer turns that off). Distributed:
        x, y are this rank's images; the gradients are summed over the ranks, each weighted by
        its share of the global batch (fit sets it; else 1 / ranks)."""
        dev, slot = self.model.device, self.batch
        if self._stats is None or slot >= self._stats.shape[0]:
            self._stats = dev.zeros((max(slot + 1, 64), 2))
        due = self._replay.due(self._replay.signature_of(self, x, y)) if self.replay else None
        labels = None
        if due is not None:
            if isinstance(y, cl_array.Array):
                labels = y
            elif self._classes is not None:   # known from the signature's first (plain) step
                labels = self._host_labels(y, self._classes)
        if due == "replay" and labels is not None:
            self._replay.replay(self, x, labels, slot)
        elif due == "record" and labels is not None:
            x_device = _check_input(x, dev)       # an upload of a NumPy x is already private
            self._replay.record(self, private_input(dev, x) if x_device is x else x_device,
                                private_input(dev, labels, np.int32), slot, self._step)
        else:
            self._step(x, y, slot)
        done, self._in_flight = self._in_flight, cl.enqueue_marker(dev.queue)
        if done is not None:
            done.wait()

    def _step(self, x, y, slot):
        logits = self.model.forward(x)
        labels = self._labels(y, logits)
        if isinstance(self.loss, SoftmaxCrossEntropy) and labels is not None:
            grad = loss_ops.softmax_cross_entropy_train(self.model.device, logits, labels, self._stats, slot)
        else:
            loss = self.loss.forward(logits, y)
            loss_ops.step_stats(self.model.device, loss, logits, labels, self._stats, slot)
            grad = self.loss.backward()
        self.model.backward(grad, need_input_grad=False)
        if self.comm is not None:   # every rank then applies the same full-batch gradient
            share, self._share = getattr(self, "_share", None), None
            self.comm.reduce_step(self.optimizer.params, self._stats, slot,
                                  1 / self.comm.size if share is None else share)
        self.optimizer.step()

    def _labels(self, y, logits):
        """y as int32 class indices on the device (the argmax of one-hot rows for MSE), or
        None when y holds no classes."""
        if isinstance(y, cl_array.Array):
            return y if y.dtype == np.int32 and y.ndim == 1 else None
        if logits.ndim != 2:
            return None
        self._classes = logits.shape[1]
        y = self._host_labels(y, self._classes)
        if y is None:
            return None
        labels = self.model.device.empty(y.shape, np.int32)
        labels.set(y, async_=True)   # a private copy (_host_labels made it): no wait for the device
        return labels

    @staticmethod
    def _host_labels(y, classes):
        """y as int32 class indices (numpy), None when y holds no classes; labels outside
        [0, classes) are refused."""
        y = class_labels(np.asarray(y))
        if y is None:
            return None
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise ValueError(f"labels must lie in [0, {classes - 1}], got values in "
                             f"[{y.min()}, {y.max()}]")
        return np.array(y, dtype=np.int32, order="C", copy=True)

    def step_stats(self, first=0, last=None):
        """[(loss, correct count), ...] of the steps in slots [first, last) (waits for them)."""
        if self._stats is None:
            return []
        host = self._stats.get()[first:last]
        return [(float(loss), int(correct)) for loss, correct in host]

    # -- epochs -------------------------------------------------------------------------
    def fit(self, train_data, epochs=10, batch_size=64, validation_data=None, validation_split=0.0, callbacks=None):
        """Train until `epochs` epochs are complete (counting any resumed ones); returns the
        history: one dict per epoch with loss, accuracy, val_loss, val_accuracy, seconds,
        images_per_second and lr. validation_split (as Keras'): hold out that fraction of
        train_data, drawn with the seed before any shuffling, and validate on it (instead of
        validation_data); best.clcnn is chosen on the validation figures. callbacks: run after
        the trainer's own (see clcnn.callbacks for the protocol and the order)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Every split is checked before the first step: a bad label must not cost an epoch.
        images, labels = check_data(train_data, "train_data")
        if validation_split:
            if validation_data is not None:
                raise ValueError("pass validation_data or validation_split, not both")
            (images, labels), validation_data = split_validation(images, labels, validation_split, self.seed)
        output_shape = _output_shape(self.model, images)
        labels = check_targets(labels, output_shape, self.loss, "train_data")
        if validation_data is not None:
            val_images, val_labels = check_data(validation_data, "validation_data")
            if val_images.shape[1:] != images.shape[1:]:
                raise ShapeError(f"validation_data: images of shape {val_images.shape[1:]}, train_data's are "
                                 f"{images.shape[1:]}; both splits must be prepared the same way")
            validation_data = (val_images, check_targets(val_labels, output_shape, self.loss, "validation_data"))
        self._settings = {"batch_size": int(batch_size), "train_size": len(images),
                          "augment_shift": self.augment_shift, "augment_flip": self.augment_flip}
        self._check_resumed_settings()
        if self.comm is not None:
            self.comm.check_batches(len(images), batch_size)
            self.comm.broadcast_model(self.model)
            if self.comm.rank != 0:
                validation_data = None   # rank 0 validates and sends its record to the others
        self._has_accuracy = class_labels(labels) is not None
        data = None
        if labels.ndim == 1 and _DeviceData.fits(self.model.device, images):
            data = _DeviceData(self.model.device, images, labels)
        self.interrupted, self.interrupt_signal, self.stop_training = False, None, False
        self._callbacks = [TerminateOnNaN(), *self.callbacks, *(callbacks or []), Checkpoint(self.checkpoint_dir)]
        lock = FolderLock(self.checkpoint_dir) if self.checkpoint_dir else contextlib.nullcontext()
        guard = self.comm.guard() if self.comm is not None else contextlib.nullcontext()
        with guard, lock, _DeferredInterrupt() as interrupt:
            if self.comm is not None:   # every rank stops after the same step
                interrupt = self.comm.agreed_interrupt(interrupt)
            for callback in self._callbacks:
                if hasattr(callback, "set_trainer"):
                    callback.set_trainer(self)
            self._dispatch("on_train_begin", {})
            saved, self._callback_states = self._callback_states, {}
            for key, callback in self._stateful_callbacks().items():   # a resumed run continues their counters
                if key in saved:
                    callback.load_state_dict(saved[key])
            while self.epoch < epochs and not self.stop_training:
                self._run_epoch(images, labels, data, batch_size, epochs, interrupt)
                if self.comm is not None:
                    self.comm.average_buffers(self.model)
                if interrupt.requested:
                    self.interrupted, self.interrupt_signal = True, interrupt.signum
                    break
                record = self._finish_epoch(validation_data, batch_size)
                if self.comm is not None:
                    record = self.comm.bcast(record, what="the epoch's record")
                self.history.append(record)
                self._dispatch("on_epoch_end", self.epoch - 1, record)
            self._dispatch("on_train_end", {"interrupted": self.interrupted})
        return self.history

    def _dispatch(self, hook, *args):
        for callback in self._callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(*args)

    def _stateful_callbacks(self):
        """{key: callback} of the running fit's callbacks that keep a state in checkpoints; the
        key is the class name, numbered from the second of a kind on."""
        keyed = {}
        for callback in self._callbacks:
            if hasattr(callback, "state_dict") and hasattr(callback, "load_state_dict"):
                name = type(callback).__name__
                key, k = name, 1
                while key in keyed:
                    k += 1
                    key = f"{name}#{k}"
                keyed[key] = callback
        return keyed

    def _check_resumed_settings(self):
        """A resumed run must see the same data in the same batches, or its epoch and batch
        counters mean other images than the checkpoint's."""
        saved, self._resumed_settings = self._resumed_settings, None
        for key, value in (saved or {}).items():
            if key in self._settings and value != self._settings[key]:
                raise CheckpointError(f"the checkpoint was trained with {key} {value}, this run has "
                                      f"{self._settings[key]}; resume with the same {key} or start a new run")

    def _augment_draw(self, batch, count):
        """(shifts, flips or None) of one batch, drawn from (seed, epoch, batch), so host and
        device augmentation agree and a resumed run draws the same."""
        return augment_draw(self.seed, self.epoch, batch, count, self.augment_shift, self.augment_flip)

    def _run_epoch(self, images, labels, data, batch_size, epochs, interrupt):
        n = len(images)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        batches = math.ceil(n / batch_size)
        scheduled = self.schedule(self.base_lr, self.epoch) if self.schedule else self.base_lr
        self.optimizer.lr = scheduled * self.lr_scale
        self.model.train()
        self._dispatch("on_epoch_begin", self.epoch, {"lr": self.optimizer.lr})
        bar = (ProgressBar(batches, f"epoch {self.epoch + 1}/{epochs}", initial=self.batch)
               if self.progress else None)
        if data is not None:
            shifts = flips = None
            if self.augment_shift or self.augment_flip:
                draws = [self._augment_draw(b, min(batch_size, n - b * batch_size)) for b in range(batches)]
                shifts = np.concatenate([d[0] for d in draws])
                flips = np.concatenate([d[1] for d in draws]) if self.augment_flip else None
            data.start_epoch(order, shifts, flips, self.augment_fill)
        # Per-batch loss and correct count stay on the device until read (every
        # _READ_INTERVAL seconds, at the end of the epoch and before a checkpoint).
        self._stats = self.model.device.zeros((batches, 2))
        self._in_flight = None
        self._read_from, self._batch_size, self._n = self.batch, batch_size, n
        last_read = time.perf_counter()
        while self.batch < batches:
            if interrupt.requested:
                self._collect(bar)
                if bar:
                    bar.close("interrupted")
                return
            start = time.perf_counter()
            count = min(batch_size, n - self.batch * batch_size)
            # Distributed, this rank takes the slice [offset, offset + take) of the batch.
            offset, take = self.comm.split(count) if self.comm is not None else (0, count)
            first = self.batch * batch_size + offset
            if data is not None:
                x, y = data.batch(first, take)
            else:
                index = order[first:first + take]
                x, y = images[index], labels[index]
                if self.augment_shift or self.augment_flip:
                    draw = [d if d is None else d[offset:offset + take] for d in self._augment_draw(self.batch, count)]
                    x = crop_flip(x, *draw, fill=self.augment_fill)
            self._share = take / count
            self.train_step(x, y)
            self.batch += 1
            now = time.perf_counter()
            self._partial["seconds"] += now - start
            if now - last_read >= _READ_INTERVAL:
                self._collect(bar)
                last_read = time.perf_counter()
        self._collect(bar)
        part = self._partial
        if bar:
            acc = f"acc {100 * part['correct'] / part['seen']:.2f}% " if self._has_accuracy else ""
            bar.close(f"loss {part['loss'] / part['seen']:.4f} {acc}{part['seen'] / part['seconds']:,.0f} img/s")

    def _collect(self, bar=None):
        """Read the statistics of the steps done since the last read into the epoch's running
        totals and hand each batch to the callbacks' on_batch_end (TerminateOnNaN stops there
        with TrainingDiverged)."""
        start = time.perf_counter()
        part, first = self._partial, self._read_from
        if first == self.batch:
            return
        try:
            for slot, (value, correct) in enumerate(self.step_stats(first, self.batch), start=first):
                count = min(self._batch_size, self._n - slot * self._batch_size)
                part["loss"] += value * count
                part["correct"] += correct
                part["seen"] += count
                logs = {"loss": value, "size": count}
                if self._has_accuracy:
                    logs["accuracy"] = correct / count
                self._dispatch("on_batch_end", slot, logs)
        except TrainingDiverged:
            if bar:
                bar.close("diverged")
            raise
        self._read_from = self.batch
        part["seconds"] += time.perf_counter() - start   # the wait for the device
        if bar and part["seen"]:
            fields = {"loss": f"{part['loss'] / part['seen']:.4f}"}
            if self._has_accuracy:
                fields["acc"] = f"{100 * part['correct'] / part['seen']:.2f}%"
            fields["img/s"] = f"{part['seen'] / part['seconds']:,.0f}"
            bar.update(self.batch, **fields)

    def _finish_epoch(self, validation_data, batch_size):
        part = self._partial
        record = {"epoch": self.epoch + 1, "loss": part["loss"] / part["seen"],
                  "accuracy": part["correct"] / part["seen"] if self._has_accuracy else None,
                  "seconds": part["seconds"],
                  "images_per_second": part["seen"] / part["seconds"], "lr": self.optimizer.lr}
        if validation_data is not None:
            metrics = self.evaluate(validation_data, batch_size=max(batch_size, 256))
            record["val_loss"], record["val_accuracy"] = metrics["loss"], metrics["accuracy"]
            if self.progress:
                acc = "" if metrics["accuracy"] is None else f" accuracy {100 * metrics['accuracy']:.2f}%"
                print(f"  validation: loss {metrics['loss']:.4f}{acc}", flush=True)
        self.epoch += 1
        self.batch = 0
        self._partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        return record

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, data, batch_size=256):
        """{"loss", "accuracy", "n", "confusion"} of the model on (images, targets), with this
        trainer's loss (see the module-level evaluate)."""
        return evaluate(self.model, data, batch_size, loss=self.loss)

    # -- checkpoints --------------------------------------------------------------------
    def state(self):
        opt_header, opt_arrays = self.optimizer.state_dict()
        header = {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                  "base_lr": self.base_lr, "partial": self._partial, "history": self.history,
                  "best_accuracy": self.best_accuracy, "settings": self._settings, "lr_scale": self.lr_scale,
                  "callbacks": {key: cb.state_dict() for key, cb in self._stateful_callbacks().items()},
                  "optimizer": {"type": type(self.optimizer).__name__, **opt_header},
                  "dropout": {key: [layer.seed, layer.step] for key, layer in self.model.named_layers().items()
                              if isinstance(layer, Dropout)}}
        return header, {f"optim/{k}": v for k, v in opt_arrays.items()}

    def save_checkpoint(self, path):
        header, arrays = self.state()
        arrays.update({f"param/{k}": v for k, v in self.model.state_dict().items()})
        write_archive(path, {"architecture": architecture(self.model), "trainer": header,
                             "metadata": self.metadata}, arrays)

    def load_checkpoint(self, path):
        """Restore weights, optimizer state and position from a checkpoint of this model;
        returns the checkpoint's header. The next fit refuses other data or batch settings."""
        header, arrays = read_archive(path)
        if "trainer" not in header:
            raise CheckpointError(f"{path}: a model file, not a training checkpoint (no trainer state)")
        if header.get("architecture") != architecture(self.model):
            raise CheckpointError(f"{path}: checkpoint of another architecture than this model")
        state = header["trainer"]
        if state["optimizer"]["type"] != type(self.optimizer).__name__:
            raise CheckpointError(f"{path}: checkpoint used {state['optimizer']['type']}, "
                                  f"this run {type(self.optimizer).__name__}")
        load_weights(self.model, arrays, path)
        self.optimizer.load_state_dict(state["optimizer"], {k[len("optim/"):]: v for k, v in arrays.items()
                                                            if k.startswith("optim/")})
        self.epoch, self.batch, self.seed = state["epoch"], state["batch"], state["seed"]
        base_lr = state["base_lr"]
        if not (isinstance(base_lr, (int, float)) and math.isfinite(base_lr) and base_lr > 0):
            raise CheckpointError(f"{path}: corrupt trainer state: learning rate {base_lr!r}")
        self.base_lr, self._partial = float(base_lr), state["partial"]
        self.history, self.best_accuracy = state["history"], state["best_accuracy"]
        self._resumed_settings = state.get("settings")
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self._callback_states = state.get("callbacks") or {}
        dropout = state["dropout"]
        if isinstance(dropout, list):    # checkpoints of clcnn 0.1 keyed them by layer index
            dropout = {str(index): [seed, step] for index, seed, step in dropout}
        layers = self.model.named_layers()
        for key, (seed, step) in dropout.items():
            layers[key].seed, layers[key].step = seed, step
        return header


def split_validation(images, labels, fraction, seed=0):
    """((train images, labels), (validation images, labels)): a fraction of the examples held
    out, chosen by a generator seeded with `seed` alone, so every run (and every resume) of
    the same seed holds out the same examples; both parts keep their original order."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"validation_split must be a fraction in [0, 1), got {fraction!r}")
    n = len(images)
    held = int(round(n * fraction))
    if fraction and not 1 <= held < n:
        raise ValueError(f"validation_split {fraction} of {n} examples leaves no example on one side; "
                         "use more data or another fraction")
    chosen = np.zeros(n, bool)
    chosen[np.random.default_rng([seed, 0x5EED]).permutation(n)[:held]] = True
    pick = images.take if isinstance(images, PreparedImages) else images.__getitem__   # stays lazy
    return (pick(~chosen), labels[~chosen]), (pick(chosen), labels[chosen])


def check_data(data, name):
    """(images float32, targets ndarray) from a pair, or a clear error (see check_targets)."""
    try:
        images, labels = data
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (images float32 (N, C, H, W), labels (N,))") from None
    if not isinstance(images, PreparedImages):   # those are float32 when read
        images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim < 2 or labels.ndim < 1 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"{name}: need as many labels as images (> 0), got {images.shape} and {labels.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"{name}: images must be float32 (normalised), got {images.dtype}")
    return (images if isinstance(images, PreparedImages) else images.astype(np.float32, copy=False)), labels


def check_targets(targets, output_shape, loss, name):
    """The targets of one split checked against the model's output shape (no batch axis) and
    the loss: int64 class indices (N,) in [0, classes) for SoftmaxCrossEntropy (and for integer
    labels with any other loss but MSE); float32 of the output's shape for MSE and the rest."""
    targets = np.asarray(targets)
    output_shape = tuple(output_shape)
    integer = np.issubdtype(targets.dtype, np.integer)
    if isinstance(loss, SoftmaxCrossEntropy) or (not isinstance(loss, MSE) and integer and targets.ndim == 1):
        return _check_labels(targets, output_shape, name)
    if not (integer or np.issubdtype(targets.dtype, np.floating)):
        raise TypeError(f"{name}: targets must be numbers, got {targets.dtype}")
    want = (len(targets),) + output_shape
    if targets.shape != want:
        hint = (f"; for class labels pass one-hot rows, e.g. np.eye({output_shape[0]})[labels]"
                if targets.ndim == 1 and len(output_shape) == 1 else "")
        raise ShapeError(f"{name}: {type(loss).__name__} targets must have the model's output shape {want}, "
                         f"got {targets.shape}{hint}")
    return targets.astype(np.float32, copy=False)


def _check_labels(labels, output_shape, name):
    if labels.ndim != 1:
        raise ShapeError(f"{name}: class labels must have shape (N,), got {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating):
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            i = int(np.argmin(whole))
            raise ValueError(f"{name}: labels must be whole class indices, got {labels[i]} at index {i}")
    elif not np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        raise TypeError(f"{name}: labels must be integer class indices, got {labels.dtype}")
    if len(output_shape) == 1:
        classes = output_shape[0]
        bad = (labels < 0) | (labels >= classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name}: label {labels[i]} at index {i} is outside [0, {classes - 1}] (the model "
                             f"has {classes} outputs); {int(bad.sum())} labels are out of range")
    return labels.astype(np.int64)


def class_labels(targets):
    """Class indices behind checked targets: the labels themselves, or the argmax of rows that
    are class distributions (one-hot or smoothed: values in [0, 1] summing to 1); None when the
    targets are no classes (regression), where accuracy means nothing."""
    if targets.ndim == 1:
        return targets if np.issubdtype(targets.dtype, np.integer) else None
    if (targets.ndim == 2 and targets.shape[1] > 1 and np.issubdtype(targets.dtype, np.floating)
            and targets.min() >= 0 and targets.max() <= 1
            and np.allclose(targets.sum(axis=1), 1, atol=1e-3)):
        return targets.argmax(axis=1)
    return None


def _output_shape(model, images):
    """The model's output shape for these images, without the batch axis."""
    try:
        return tuple(model.output_shapes(images.shape[1:])[-1])
    except (AttributeError, IndexError, ShapeError):
        return predict(model, images[:1]).shape[1:]   # a mismatch raises the forward's own error


def predict(model, images, batch_size=256):
    """Logits for every image, in eval mode, as a NumPy array (N, classes)."""
    if len(images) == 0:
        raise ShapeError("predict got no images: pass an array of shape (N, C, H, W) with N >= 1")
    was_training = model.training
    model.eval()
    dev, pending, out = model.device, [], []
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size]
            if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating) and x.size:
                # Upload without waiting and read each result two batches later, so the host
                # never leaves the device idle between batches.
                host, x = np.ascontiguousarray(x, dtype=np.float32), dev.empty(x.shape)
                x.set(host, async_=True)
            pending.append(model.forward(x))
            if len(pending) > 2:
                out.append(pending.pop(0).get())
        out += [y.get() for y in pending]
    finally:
        model.train(was_training)
    return np.concatenate(out)


def evaluate(model, data, batch_size=256, loss=None):
    """{"loss", "accuracy", "n", "confusion"} of the model on (images, targets): the mean of
    `loss` (default SoftmaxCrossEntropy), the accuracy and the confusion matrix (rows: true
    class, columns: predicted). Targets are checked as check_targets does before anything runs.
    Accuracy and confusion are None where the targets hold no classes (see class_labels)."""
    loss = SoftmaxCrossEntropy() if loss is None else loss
    images, targets = check_data(data, "data")
    targets = check_targets(targets, _output_shape(model, images), loss, "data")
    logits = predict(model, images, batch_size).astype(np.float64)
    n = len(targets)
    if isinstance(loss, SoftmaxCrossEntropy):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        value = float(-log_probs[np.arange(n), targets].mean())
    elif isinstance(loss, MSE):
        value = float(np.mean((logits - targets) ** 2))
    else:  # any other loss: its own forward, batch means weighted by batch size
        value = sum(loss(model.device.to_device(logits[i:i + batch_size].astype(np.float32)),
                         targets[i:i + batch_size]) * len(targets[i:i + batch_size])
                    for i in range(0, n, batch_size)) / n
    labels = class_labels(targets)
    if labels is None or logits.ndim != 2:
        return {"loss": value, "accuracy": None, "n": n, "confusion": None}
    predicted = logits.argmax(axis=1)
    classes = logits.shape[1]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return {"loss": value, "accuracy": float((predicted == labels).mean()), "n": n, "confusion": confusion}


class _DeferredInterrupt:
    """Turn Ctrl-C (SIGINT) and SIGTERM (timeout, docker stop, Slurm) into a flag checked
    between steps, so a checkpoint is never taken of half-updated weights. A second signal
    interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self.signum = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False
