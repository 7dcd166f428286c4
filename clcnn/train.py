"""Trainer: mini-batch training with validation, checkpoints, resume and clean interruption.

All randomness of a run derives from (seed, epoch, batch): the epoch's shuffle from
(seed, epoch), augmentation from (seed, epoch, batch), dropout masks from each layer's
(seed, step). A checkpoint therefore needs only those counters to resume exactly, even from
the middle of an epoch.
"""
import math
import os
import signal
import threading
import time

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from .datasets.batches import BACKGROUND
from .errors import CheckpointError, ClcnnError, ShapeError
from .layers import Dropout
from .losses import SoftmaxCrossEntropy
from .ops import data as data_ops
from .ops import loss as loss_ops
from .progress import ProgressBar
from .serialization import architecture, load_weights, read_archive, write_archive

# Seconds between reads of the per-step loss and accuracy (each read waits for the device).
_READ_INTERVAL = 0.25


class TrainingDiverged(ClcnnError):
    """The loss became NaN or Inf."""


def random_shift(images, max_shift, rng):
    """Shift each image by up to max_shift pixels in x and y, filling with its border value."""
    from .datasets.batches import random_shift as shift
    return shift(images, max_shift, rng)


def _shifts(seed, epoch, batch, count, max_shift):
    """The (dy, dx) of each image of a batch: the draw of datasets.batches.random_shift from the
    (seed, epoch, batch) generator, so host and device augmentation agree."""
    rng = np.random.default_rng([seed, epoch, batch])
    return rng.integers(-max_shift, max_shift + 1, size=(count, 2))


class _DeviceData:
    """A training set uploaded once; batches are gathered (and shifted) on the device."""

    def __init__(self, device, images, labels):
        self.device = device
        self.images = device.to_device(images)
        self.labels = device.to_device(labels, dtype=np.int32)
        self.order = self.shifts = None

    @staticmethod
    def fits(device, images):
        dev = device.cl_device
        return images.nbytes <= min(dev.max_mem_alloc_size, dev.global_mem_size // 4)

    def start_epoch(self, order, shifts):
        self.order = self.device.to_device(order, dtype=np.int32)
        self.shifts = None if shifts is None else self.device.to_device(shifts, dtype=np.int32)

    def batch(self, start, count):
        return data_ops.batch_gather(self.device, self.images, self.labels, self.order, start, count,
                                     self.shifts, BACKGROUND)


class Trainer:
    """Train `model` with `loss` and `optimizer`.

    schedule: optional callable (base_lr, epoch) -> lr (see clcnn.schedules).
    augment_shift: random shifts of up to this many pixels for each training image.
    checkpoint_dir: where last.clcnn (every epoch, and on Ctrl-C) and best.clcnn go.
    """

    def __init__(self, model, loss, optimizer, schedule=None, augment_shift=0, seed=0,
                 checkpoint_dir=None, progress=True, metadata=None):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.metadata = metadata or {}  # saved in checkpoints (e.g. preprocessing for predict)
        self.schedule, self.augment_shift, self.seed = schedule, int(augment_shift), int(seed)
        self.checkpoint_dir, self.progress = checkpoint_dir, progress
        self.base_lr = optimizer.lr
        self.history = []
        self.epoch = 0            # epochs completed
        self.batch = 0            # batches completed in the current epoch
        self._partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.best_accuracy = -1.0
        self.interrupted = False
        self._stats = None        # device (slots, 2): loss and correct count of each batch
        self._in_flight = None    # marker event after the last enqueued step

    # -- one step -----------------------------------------------------------------------
    def train_step(self, x, y):
        """Forward, backward and update on one batch (numpy or device arrays; y int labels).

        Nothing is read back: the batch's loss and correct count go to slot `self.batch` of a
        device buffer (see step_stats). At most two steps are in flight: the call returns when
        the previous step has finished, so the host prepares the next batch while the device
        computes this one."""
        dev, slot = self.model.device, self.batch
        if self._stats is None or slot >= self._stats.shape[0]:
            self._stats = dev.zeros((max(slot + 1, 64), 2))
        logits = self.model.forward(x)
        labels = self._labels(y, logits)
        if isinstance(self.loss, SoftmaxCrossEntropy) and labels is not None:
            grad = loss_ops.softmax_cross_entropy_train(dev, logits, labels, self._stats, slot)
        else:
            loss = self.loss.forward(logits, y)
            loss_ops.step_stats(dev, loss, logits, labels, self._stats, slot)
            grad = self.loss.backward()
        self.model.backward(grad, need_input_grad=False)
        self.optimizer.step()
        done, self._in_flight = self._in_flight, cl.enqueue_marker(dev.queue)
        if done is not None:
            done.wait()

    def _labels(self, y, logits):
        """y as int32 class indices on the device, or None when y is no such thing (MSE)."""
        if isinstance(y, cl_array.Array):
            return y if y.dtype == np.int32 and y.ndim == 1 else None
        y = np.asarray(y)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or logits.ndim != 2:
            return None
        if len(y) and (y.min() < 0 or y.max() >= logits.shape[1]):
            raise ValueError(f"labels must lie in [0, {logits.shape[1] - 1}], got values in "
                             f"[{y.min()}, {y.max()}]")
        labels = self.model.device.empty(y.shape, np.int32)
        labels.set(np.ascontiguousarray(y, dtype=np.int32), async_=True)   # no wait for the device
        return labels

    def step_stats(self, first=0, last=None):
        """[(loss, correct count), ...] of the steps in slots [first, last) (waits for them)."""
        if self._stats is None:
            return []
        host = self._stats.get()[first:last]
        return [(float(loss), int(correct)) for loss, correct in host]

    # -- epochs -------------------------------------------------------------------------
    def fit(self, train_data, epochs=10, batch_size=64, validation_data=None):
        """Train until `epochs` epochs are complete (counting any resumed ones); returns the
        history: one dict per epoch with loss, accuracy, val_loss, val_accuracy, seconds,
        images_per_second and lr."""
        images, labels = check_data(train_data, "train_data")
        self._remove_stale_temporaries()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        data = None
        if labels.ndim == 1 and _DeviceData.fits(self.model.device, images):
            try:
                classes = self.model.output_shapes(images.shape[1:])[-1]
            except ShapeError:
                classes = ()    # the first forward reports it, as on the host path
            if len(classes) == 1 and (labels.min() < 0 or labels.max() >= classes[0]):
                raise ValueError(f"train_data: labels must lie in [0, {classes[0] - 1}], got values "
                                 f"in [{labels.min()}, {labels.max()}]")
            data = _DeviceData(self.model.device, images, labels)
        self.interrupted = False
        with _DeferredInterrupt() as interrupt:
            while self.epoch < epochs:
                self._run_epoch(images, labels, data, batch_size, epochs, interrupt)
                if interrupt.requested:
                    self.interrupted = True
                    self._save_checkpoint("last.clcnn")
                    break
                record = self._finish_epoch(validation_data, batch_size)
                self.history.append(record)
                self._save_checkpoint("last.clcnn")
                if record.get("val_accuracy", record["accuracy"]) > self.best_accuracy:
                    self.best_accuracy = record.get("val_accuracy", record["accuracy"])
                    self._save_checkpoint("best.clcnn")
        return self.history

    def _run_epoch(self, images, labels, data, batch_size, epochs, interrupt):
        n = len(images)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        batches = math.ceil(n / batch_size)
        self.optimizer.lr = self.schedule(self.base_lr, self.epoch) if self.schedule else self.base_lr
        self.model.train()
        bar = ProgressBar(batches, f"epoch {self.epoch + 1}/{epochs}") if self.progress else None
        if data is not None:
            shifts = None
            if self.augment_shift:
                shifts = np.concatenate([_shifts(self.seed, self.epoch, b, min(batch_size, n - b * batch_size),
                                                 self.augment_shift) for b in range(batches)])
            data.start_epoch(order, shifts)
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
            if data is not None:
                x, y = data.batch(self.batch * batch_size, count)
            else:
                index = order[self.batch * batch_size:self.batch * batch_size + count]
                x, y = images[index], labels[index]
                if self.augment_shift:
                    rng = np.random.default_rng([self.seed, self.epoch, self.batch])
                    x = random_shift(x, self.augment_shift, rng)
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
            bar.close(f"loss {part['loss'] / part['seen']:.4f} acc {100 * part['correct'] / part['seen']:.2f}% "
                      f"{part['seen'] / part['seconds']:,.0f} img/s")

    def _collect(self, bar=None):
        """Read the statistics of the steps done since the last read into the epoch's running
        totals; stop with TrainingDiverged naming the first step whose loss is not finite."""
        start = time.perf_counter()
        part, first = self._partial, self._read_from
        for slot, (value, correct) in enumerate(self.step_stats(first, self.batch), start=first):
            if not math.isfinite(value):
                if bar:
                    bar.close("diverged")
                raise TrainingDiverged(
                    f"loss became {value} at epoch {self.epoch + 1}, batch {slot + 1}; "
                    "training stopped, the last good checkpoint is kept. Try a smaller --lr.")
            count = min(self._batch_size, self._n - slot * self._batch_size)
            part["loss"] += value * count
            part["correct"] += correct
            part["seen"] += count
        self._read_from = self.batch
        part["seconds"] += time.perf_counter() - start   # the wait for the device
        if bar and part["seen"]:
            bar.update(self.batch, loss=f"{part['loss'] / part['seen']:.4f}",
                       acc=f"{100 * part['correct'] / part['seen']:.2f}%",
                       **{"img/s": f"{part['seen'] / part['seconds']:,.0f}"})

    def _finish_epoch(self, validation_data, batch_size):
        part = self._partial
        record = {"epoch": self.epoch + 1, "loss": part["loss"] / part["seen"],
                  "accuracy": part["correct"] / part["seen"], "seconds": part["seconds"],
                  "images_per_second": part["seen"] / part["seconds"], "lr": self.optimizer.lr}
        if validation_data is not None:
            metrics = self.evaluate(validation_data, batch_size=max(batch_size, 256))
            record["val_loss"], record["val_accuracy"] = metrics["loss"], metrics["accuracy"]
            if self.progress:
                print(f"  validation: loss {metrics['loss']:.4f} accuracy {100 * metrics['accuracy']:.2f}%",
                      flush=True)
        self.epoch += 1
        self.batch = 0
        self._partial = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        return record

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, data, batch_size=256):
        """{"loss", "accuracy", "n", "confusion"} of the model on (images, labels)."""
        return evaluate(self.model, data, batch_size)

    # -- checkpoints --------------------------------------------------------------------
    def state(self):
        opt_header, opt_arrays = self.optimizer.state_dict()
        header = {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                  "base_lr": self.base_lr, "partial": self._partial, "history": self.history,
                  "best_accuracy": self.best_accuracy, "optimizer": {"type": type(self.optimizer).__name__, **opt_header},
                  "dropout": [[i, layer.seed, layer.step] for i, layer in enumerate(self.model.layers)
                              if isinstance(layer, Dropout)]}
        return header, {f"optim/{k}": v for k, v in opt_arrays.items()}

    def save_checkpoint(self, path):
        header, arrays = self.state()
        arrays.update({f"param/{k}": v for k, v in self.model.state_dict().items()})
        write_archive(path, {"architecture": architecture(self.model), "trainer": header,
                             "metadata": self.metadata}, arrays)

    def _remove_stale_temporaries(self):
        """A process killed while writing a checkpoint leaves its temporary file behind (the
        checkpoint itself is intact, see serialization.write_archive); tidy those up."""
        if self.checkpoint_dir and os.path.isdir(self.checkpoint_dir):
            for name in os.listdir(self.checkpoint_dir):
                if name.startswith(".tmp-") and name.endswith(".clcnn"):
                    os.unlink(os.path.join(self.checkpoint_dir, name))

    def _save_checkpoint(self, name):
        if self.checkpoint_dir:
            self.save_checkpoint(os.path.join(self.checkpoint_dir, name))

    def load_checkpoint(self, path):
        """Restore weights, optimizer state and position from a checkpoint of this model."""
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
        self.base_lr, self._partial = state["base_lr"], state["partial"]
        self.history, self.best_accuracy = state["history"], state["best_accuracy"]
        for index, seed, step in state["dropout"]:
            self.model.layers[index].seed, self.model.layers[index].step = seed, step


def check_data(data, name):
    """(images float32, labels int64) from a pair, or a clear error."""
    try:
        images, labels = data
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (images float32 (N, C, H, W), labels (N,))") from None
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim < 2 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"{name}: need as many labels as images (> 0), got {images.shape} and {labels.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"{name}: images must be float32 (normalised), got {images.dtype}")
    return images.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)


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


def evaluate(model, data, batch_size=256):
    """{"loss", "accuracy", "n", "confusion"}: mean cross-entropy, accuracy, count and the
    confusion matrix (rows: true class, columns: predicted)."""
    images, labels = check_data(data, "data")
    logits = predict(model, images, batch_size).astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    predicted = logits.argmax(axis=1)
    classes = logits.shape[1]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return {"loss": loss, "accuracy": float((predicted == labels).mean()), "n": int(len(labels)),
            "confusion": confusion}


class _DeferredInterrupt:
    """Turn Ctrl-C (SIGINT) into a flag checked between steps, so a checkpoint is never taken
    of half-updated weights. A second Ctrl-C interrupts at once."""

    def __enter__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
