"""Replay of a recorded training step: the launch list of one Trainer.train_step, enqueued
again with no Python per layer.

A small model's step is host-bound: LeNet-5 at batch 64 makes 36 launches, and the Python
that plans each one (shape checks, plan lookups, arrays from the pool) takes ~40 us against
~5 us for the enqueue itself, 1.8 ms of a 2.2 ms step on a 2-core machine where the host
thread also competes with PoCL's workers. Between steps with the same signature (input
shapes, model mode, optimizer settings, parameter buffers) that Python makes the same
launches with the same arguments, so the second such step is recorded (each launch's
kernel, sizes and arguments, with the step's own buffers kept alive) and later ones enqueue
the recording: a copy of the batch into the recorded input buffers, the batch's slot of the
loss statistics set on its kernel, and one enqueue per launch.

Only what a recording can reproduce is replayed: every layer must say `replayable` (its
passes run through ops' launch() only and keep no per-step host state: BatchNorm's batch
counter and Dropout's seeds rule those out), the optimizer must give a `replay_key` (its
launches' scalars; SGD, not Adam, whose bias corrections change every step), the loss must
be SoftmaxCrossEntropy with class labels, and there is no communicator or input check on
the host. A step that issues any other device command while recorded (Device.zeros, an
array fill, a memory retry) is not replayed: the Device reports it to the recorder.
"""
import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array


class Recorder:
    """Device.recorder while a step is recorded: the launches in order, or why the step
    cannot be replayed."""

    def __init__(self):
        self.launches = []     # (kernel, global size, local size, args)
        self.refusal = None

    def refuse(self, why):
        if self.refusal is None:
            self.refusal = why


def model_refusal(model):
    """Why `model`'s steps cannot be replayed, or None."""
    for layer in model.layers:
        if not getattr(layer, "replayable", False):
            return f"layer {layer.name!r} ({type(layer).__name__}) keeps per-step state or issues its own commands"
        if any(p.host for p in list(layer.params.values()) + list(layer.buffers.values())):
            return f"layer {layer.name!r} keeps a value on the host"
    return None


class Recording:
    """One recorded step, ready to enqueue again.

    Each launch gets its own kernel object with its arguments set once (launches of one kernel
    differ in their buffers), so a replayed launch is one clEnqueueNDRangeKernel. The slot of
    the loss statistics is the one argument that changes between steps: it follows the stats
    buffer in the kernel that writes it (loss.softmax_cross_entropy_train)."""

    def __init__(self, device, launches, x, labels, stats, grads):
        self.device, self.x, self.labels, self.grads = device, x, labels, grads
        self.commands, self.slot_at = [], None
        stats_buffer = stats.base_data
        for kernel, global_size, local_size, args in launches:
            clone = cl.Kernel(kernel.program, kernel.function_name)
            clone.set_scalar_arg_dtypes([a.dtype if isinstance(a, np.generic) else None for a in args])
            clone.set_args(*args)
            self.commands.append((clone, global_size, local_size, args))
            for i, arg in enumerate(args[:-1]):
                if arg is stats_buffer and isinstance(args[i + 1], np.int32):
                    if self.slot_at is not None:
                        raise ValueError("two launches write the loss statistics")
                    self.slot_at = (clone, i + 1)
        if self.slot_at is None:
            raise ValueError("no launch writes the loss statistics")

    def run(self, x, labels, slot):
        """Enqueue the step for batch (x, labels): numpy (copied now, written without a wait)
        or device arrays (copied on the device)."""
        queue = self.device.queue
        _write(queue, self.x, x, np.float32)
        _write(queue, self.labels, labels, np.int32)
        kernel, index = self.slot_at
        kernel.set_arg(index, np.int32(slot))
        for kernel, global_size, local_size, _ in self.commands:
            cl.enqueue_nd_range_kernel(queue, kernel, global_size, local_size)
        return self.grads


def _write(queue, target, source, dtype):
    if isinstance(source, cl_array.Array):
        cl.enqueue_copy(queue, target.base_data, source.base_data, byte_count=target.nbytes)
    else:
        target.set(np.array(source, dtype=dtype, order="C", copy=True), async_=True)


class StepReplay:
    """A Trainer's replay state: the signature of its recent steps, how many ran with it, and
    the recording once made."""

    def __init__(self):
        self.signature, self.seen, self.recording = None, 0, None
        self.refused = {}      # id(model) -> why it cannot be replayed
        self.replays = 0       # steps replayed so far

    def signature_of(self, trainer, x, y):
        """What a recording depends on, or None where the step cannot be replayed."""
        from .losses import SoftmaxCrossEntropy
        model, optimizer = trainer.model, trainer.optimizer
        if (trainer.comm is not None or model.check_finite or not isinstance(trainer.loss, SoftmaxCrossEntropy)
                or id(model) in self.refused):
            return None
        optimizer_key = optimizer.replay_key()
        if optimizer_key is None:
            return None
        x_on_device, y_on_device = isinstance(x, cl_array.Array), isinstance(y, cl_array.Array)
        if x_on_device:
            if x.dtype != np.float32 or x.offset:
                return None
        elif not (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)):
            return None     # the plain step converts or refuses it
        if y_on_device:
            if y.dtype != np.int32 or y.ndim != 1 or y.offset:
                return None
        elif not isinstance(y, np.ndarray):
            return None
        return (id(model), model.training, x_on_device, x.shape, y_on_device, y.shape, y.dtype,
                optimizer_key, id(trainer._stats), tuple(id(p.data) for p in optimizer.params))

    def due(self, signature):
        """'replay', 'record' or None (a plain step) for a step of this signature."""
        if signature is None:
            self.signature, self.seen, self.recording = None, 0, None
            return None
        if signature != self.signature:
            self.signature, self.seen, self.recording = signature, 0, None
        if self.recording is not None:
            return "replay"
        self.seen += 1
        return "record" if self.seen >= 2 else None   # the first may tune and build kernels

    def replay(self, trainer, x, labels, slot):
        """The step on batch (x, labels) from the recording, with the host-side effects of a
        plain step: each parameter's .grad is the recorded gradient, the optimizer counts
        the step."""
        grads = self.recording.run(x, labels, slot)
        for param, grad in zip(trainer.optimizer.params, grads):
            param.grad = grad
        trainer.optimizer.replayed_step()
        self.replays += 1

    def record(self, trainer, x, labels, slot, run_step):
        """Run the step on device inputs (x, labels) with the device recording it."""
        device, model = trainer.model.device, trainer.model
        refusal = model_refusal(model)
        if refusal is not None:
            self.refused[id(model)] = refusal
            run_step(x, labels, slot)
            return
        recorder = Recorder()
        device.recorder = recorder
        try:
            run_step(x, labels, slot)
        finally:
            device.recorder = None
        if recorder.refusal is not None:
            self.refused[id(model)] = recorder.refusal
            return
        grads = [p.grad for p in trainer.optimizer.params]
        try:
            self.recording = Recording(device, recorder.launches, x, labels, trainer._stats, grads)
        except ValueError as exc:
            self.refused[id(model)] = str(exc)
