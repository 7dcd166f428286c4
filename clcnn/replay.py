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

Only what a recording can reproduce is replayed:
- every layer must say `replayable`: its passes run through ops' launch() only, it redoes its
  per-call host effects in replayed() (BatchNorm counts the batch, Dropout its step), and a
  scalar that changes between steps it names to the recorder (Recorder.vary: Dropout's step);
- the optimizer must give a `replay_key`, the settings behind the scalars of its launches
  (SGD, Adam: Adam's bias corrections, which change every step, it names to the recorder);
- the loss must be SoftmaxCrossEntropy with class labels; no communicator, no input check on
  the host.
A step that makes any other device command while recorded (Device.zeros, an array fill, a
memory retry) is not replayed: the Device reports it to the recorder.

Eval-mode forward passes (inference, validation) replay the same way (ForwardReplay).
"""
import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array
import pyopencl.tools as cl_tools


class Recorder:
    """Device.recorder while a step is recorded: the launches in order, or why the step
    cannot be replayed.

    The step allocates from a memory pool of the recording's own (Device.allocate), which
    nothing else draws from afterwards: its arrays freed during the step are reused later in
    the step, as in a plain step (a recording that kept every temporary apart made ResNet-20's
    step 7-10% slower: more memory, colder caches), and a replay may write them all again
    without touching anyone else's array. The launches therefore keep their buffers by
    handle (not the pool's buffer objects, whose lifetime frees them to the pool)."""

    def __init__(self, queue):
        self.pool = cl_tools.MemoryPool(cl_tools.ImmediateAllocator(queue))
        self.launches = []     # (kernel, global size, local size, args)
        self.varying = []      # (launch index, argument index, function giving its value)
        self.calls = {}        # id(layer) -> its calls so far that registered a varying argument
        self.refusal = None

    def vary(self, argument, value_of):
        """The last launch's argument `argument` changes between steps: a replay sets it to
        value_of() first (Dropout's step)."""
        self.varying.append((len(self.launches) - 1, argument, value_of))

    def launch(self, kernel, global_size, local_size, args):
        args = tuple(cl.MemoryObject.from_int_ptr(a.int_ptr, retain=True)
                     if isinstance(a, cl.MemoryObjectHolder) else a for a in args)
        self.launches.append((kernel, global_size, local_size, args))

    def refuse(self, why):
        if self.refusal is None:
            self.refusal = why


def model_refusal(model):
    """Why `model`'s steps cannot be replayed, or None."""
    for layer in model.layers:
        if not getattr(layer, "replayable", False):
            return f"layer {layer.name!r} ({type(layer).__name__}) keeps per-step state or issues its own commands"
    return None


class Recording:
    """Recorded launches, ready to enqueue again.

    Each launch gets its own kernel object with its arguments set once (launches of one kernel
    differ in their buffers), so a replayed launch is one clEnqueueNDRangeKernel. `inputs`:
    the device arrays the recording read its data from, refilled by run(). `stats`: for a
    training step, the buffer of loss statistics, whose slot is the one argument that changes
    between steps: it follows the stats buffer in the kernel that writes it
    (loss.softmax_cross_entropy_train)."""

    def __init__(self, device, recorder, inputs, stats=None, in_place=False):
        self.device, self.inputs, self.pool = device, inputs, recorder.pool
        self.commands, self.slot_at = [], None
        stats_buffer = stats.base_data.int_ptr if stats is not None else None
        for kernel, global_size, local_size, args in recorder.launches:
            clone = cl.Kernel(kernel.program, kernel.function_name)
            clone.set_scalar_arg_dtypes([a.dtype if isinstance(a, np.generic) else None for a in args])
            clone.set_args(*args)
            self.commands.append((clone, global_size, local_size, args))
            for i, arg in enumerate(args[:-1]):
                if (stats_buffer is not None and isinstance(arg, cl.MemoryObject) and arg.int_ptr == stats_buffer
                        and isinstance(args[i + 1], np.int32)):
                    if self.slot_at is not None:
                        raise ValueError("two launches write the loss statistics")
                    self.slot_at = (clone, i + 1)
        if stats is not None and self.slot_at is None:
            raise ValueError("no launch writes the loss statistics")
        self.varying = [(self.commands[launch][0], argument, value_of)
                        for launch, argument, value_of in recorder.varying]
        # The launches whose scalars change between runs: (kernel, its arguments, [(index, the
        # value's source: None for the stats slot, else a varying argument's function)]).
        # set_args with the recorded arguments (its scalar types declared) takes ~0.5 us where
        # set_arg of one numpy scalar took pyopencl 5.5 us.
        changing = {}
        args_of = {id(kernel): args for kernel, _, _, args in self.commands}
        if self.slot_at is not None:
            kernel, index = self.slot_at
            changing.setdefault(id(kernel), (kernel, list(args_of[id(kernel)]), []))[2].append((index, None))
        for kernel, argument, value_of in self.varying:
            changing.setdefault(id(kernel), (kernel, list(args_of[id(kernel)]), []))[2].append((argument, value_of))
        self.changing = list(changing.values())
        # each input refilled by one of the two: a staged upload or a host array read in place
        self.in_place = [_InPlace(device.context, target, self._readers(target)) if in_place and target.size else None
                         for target in inputs]
        self.staging = [_Staging(target) if reader is None else None
                        for target, reader in zip(inputs, self.in_place)]

    def _readers(self, target):
        """(kernel, argument index) of every recorded launch that takes target's buffer."""
        handle = target.base_data.int_ptr
        return [(kernel, i) for kernel, _, _, args in self.commands for i, arg in enumerate(args)
                if isinstance(arg, cl.MemoryObject) and arg.int_ptr == handle]

    def run(self, sources, slot=None):
        """Enqueue the launches on new data: one source per input, numpy (copied now into a
        host staging array, written without a wait, or read in place: see _InPlace) or a
        device array (copied on the device). Returns (input array, _InPlace slot) for each
        input read in place: that array does not hold this run's data (fill_in_place)."""
        queue = self.device.queue
        # The changing scalars first (set_args sets every argument): an input read in place
        # then sets its buffer on its readers.
        for kernel, args, changes in self.changing:
            for index, value_of in changes:
                if value_of is not None:
                    args[index] = value_of()
                elif slot is not None:
                    args[index] = np.int32(slot)
            kernel.set_args(*args)
        placed = []
        for target, staging, in_place, source in zip(self.inputs, self.staging, self.in_place, sources):
            if isinstance(source, cl_array.Array):
                if in_place is not None:
                    in_place.restore()
                _copy_on_device(queue, target, source)
            elif in_place is not None:
                placed.append((target, in_place.place(source)))
            else:
                staging.upload(queue, target, source)
        last = None
        for kernel, global_size, local_size, _ in self.commands:
            last = cl.enqueue_nd_range_kernel(queue, kernel, global_size, local_size)
        for _, slot in placed:
            slot[2] = last      # the in-order queue: this step's last launch ends its reads
        return placed


class _Staging:
    """Host arrays that a replay's NumPy input is copied into before its upload, reused.

    The copy lets the caller refill its batch at once while the upload waits in the queue. A
    new array per call (np.array) cost twice the copy's time at batch 256 (125 against 62 us
    of host CPU for LeNet-5's 1 MB batch, as the host thread shares the cores with PoCL's
    workers): fresh pages, cold in cache. The least recently used array is reused once the
    upload that last read it has run; a new one is made while that upload is still queued (a
    Trainer's two steps in flight), up to `most`, after which the upload is waited for. So
    inference that reads its output keeps one array, a Trainer two."""

    def __init__(self, target, most=2):
        self.shape, self.dtype, self.most = target.shape, target.dtype, most
        self.arrays, self.uploads = [], []      # least recently used first; each array's last upload

    def upload(self, queue, target, source):
        if _oldest_free(len(self.arrays), self.most, self.uploads[0] if self.uploads else None):
            array, upload = self.arrays.pop(0), self.uploads.pop(0)
            upload.wait()       # at once unless `most` uploads are queued
        else:
            array = np.empty(self.shape, self.dtype)
        np.copyto(array, source, casting="unsafe")   # as np.array(source, dtype=...)
        self.arrays.append(array)
        self.uploads.append(cl.enqueue_copy(queue, target.base_data, array, is_blocking=False))


def _oldest_free(count, most, last_use):
    """Whether the least recently used of `count` rotating host arrays is taken again (its
    last use, an event, waited for if need be) rather than a new one made: always at `most`,
    else once that use has run (None: never used)."""
    return count > 0 and (count == most or last_use is None
                          or last_use.command_execution_status == cl.command_execution_status.COMPLETE)


class _InPlace:
    """A recording's NumPy input read where it lies in host memory, on a device that computes
    in it (reads_host_arrays): each batch is copied into a host array wrapped as a buffer
    (USE_HOST_PTR), and the launches that read the input take that buffer, so the step makes
    no upload.

    The upload of a staged copy was a whole command per step: LeNet-5's 1 MB batch at 256
    images took 135-155 us of a worker's time, on top of the host's copy (whole steps, 5
    alternating process pairs: training 1.01x at batch 256, 1.00-1.04 at 64; inference
    1.05-1.11x at both). The arrays rotate like _Staging's: at most `most` in flight (a
    Trainer keeps two steps queued), the least recently used one reused once the step that
    read it has run. A device-array input makes the launches read the recorded input again
    (restore), which it is copied into."""

    def __init__(self, context, target, readers, most=2):
        self.context, self.target, self.readers, self.most = context, target, readers, most
        self.slots = []     # [host array, its buffer, the last launch of the step that read it]

    def place(self, source):
        slots = self.slots
        if _oldest_free(len(slots), self.most, slots[0][2] if slots else None):
            slot = slots.pop(0)
            if slot[2] is not None:
                slot[2].wait()      # at once unless `most` steps are queued
        else:
            array = _aligned_empty(self.target.shape, self.target.dtype)
            slot = [array, cl.Buffer(self.context, cl.mem_flags.READ_WRITE | cl.mem_flags.USE_HOST_PTR,
                                     hostbuf=array), None]
        np.copyto(slot[0], source, casting="unsafe")   # as np.array(source, dtype=...)
        for kernel, index in self.readers:
            kernel.set_arg(index, slot[1])
        slots.append(slot)
        return slot

    def __del__(self):
        # A buffer made on a host array does not keep that array alive: launches still queued
        # when a new signature drops this recording would read freed memory (seen as flaky
        # weights in test_replay's tests before this wait).
        for _, _, last in self.slots:
            if last is not None:
                try:
                    last.wait()
                except Exception:   # the queue already gone at interpreter exit
                    pass

    def restore(self):
        for kernel, index in self.readers:
            kernel.set_arg(index, self.target.base_data)


def reads_host_arrays(device):
    """Whether the device's kernels read a USE_HOST_PTR buffer in its host array, so that a
    host write between launches reaches them (_InPlace): PoCL's CPU driver computes in host
    memory. OpenCL leaves such writes undefined without a map, so other drivers upload."""
    platform = device.platform.name.lower()
    return device.is_cpu and ("portable computing language" in platform or "pocl" in platform)


def fill_in_place(queue, placed):
    """Copy each (input array, slot) that Recording.run read in place into the input array,
    for a later reader of the recorded arrays (a backward pass after a replayed eval
    forward); the slot is not reused before the copy has run."""
    for target, slot in placed:
        slot[2] = cl.enqueue_copy(queue, target.base_data, slot[1], byte_count=target.nbytes)


def _aligned_empty(shape, dtype, alignment=4096):
    """An empty array whose data starts on a page: OpenCL CPU drivers use a USE_HOST_PTR
    array in place only where it is aligned to the device's base address alignment (128
    bytes on PoCL), and copy it otherwise."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _copy_on_device(queue, target, source):
    cl.enqueue_copy(queue, target.base_data, source.base_data, byte_count=target.nbytes)


def private_input(device, x, dtype=np.float32):
    """x as a device array of its own: a recording refills its input arrays and overwrites its
    outputs at each replay, so neither may be an array the caller holds. A NumPy x is
    uploaded (Device.upload copies it); a device array is copied on the device."""
    if isinstance(x, cl_array.Array):
        copy = device.empty(x.shape, x.dtype)
        _copy_on_device(device.queue, copy, x)
        return copy
    return device.upload(x, dtype)


def _input_signature(x, device_dtype=np.float32, ndim=None):
    """(on device, shape, dtype) of an input a recording can copy in, else None."""
    if isinstance(x, cl_array.Array):
        ok = x.dtype == device_dtype and not x.offset and x.flags.c_contiguous
        return (True, x.shape, x.dtype) if ok and (ndim is None or x.ndim == ndim) else None
    if isinstance(x, np.ndarray):
        return (False, x.shape, x.dtype)
    return None


class _Schedule:
    """When to record: the signature of the recent calls, how many ran with it, and the
    recording once made. The first call of a signature runs plain (it may tune and build
    kernels), the second is recorded, later ones replay."""

    def __init__(self):
        self.signature, self.seen, self.recording = None, 0, None
        self.refused = {}      # id(model) -> why it cannot be replayed
        self.replays = 0       # calls replayed so far

    def due(self, signature):
        """'replay', 'record' or None (a plain call) for a call of this signature."""
        if signature is None:
            self.signature, self.seen, self.recording = None, 0, None
            return None
        if signature != self.signature:
            self.signature, self.seen, self.recording = signature, 0, None
        if self.recording is not None:
            return "replay"
        self.seen += 1
        return "record" if self.seen >= 2 else None

    def _recorded(self, model, device, run):
        """run() with the device recording it: the Recorder, or None (and the model refused)."""
        refusal = model_refusal(model)
        if refusal is not None:
            self.refused[id(model)] = refusal
            run()
            return None
        recorder = Recorder(device.queue)
        device.recorder = recorder
        try:
            run()
        finally:
            device.recorder = None
        if recorder.refusal is not None:
            self.refused[id(model)] = recorder.refusal
            return None
        # The recording's pool now holds a step's temporaries; the blocks the plain steps
        # before it left cached in the device's pool would double that memory.
        device.pool.free_held()
        return recorder


class ForwardReplay(_Schedule):
    """A model's eval-mode forward passes (inference, validation): the same scheme as a
    training step's. A replay returns copies of the recorded outputs, so an output kept by
    the caller is never overwritten by a later call."""

    def signature_of(self, model, xs):
        if model.training or id(model) in self.refused:
            return None
        inputs = tuple(_input_signature(x) for x in xs)
        if any(i is None or (not i[0] and not np.issubdtype(i[2], np.floating)) for i in inputs):
            return None
        return (id(model), model._fuse_pools, model._freezes, inputs,
                tuple(id(p.data) for layer in model.layers
                      for p in list(layer.params.values()) + list(layer.buffers.values()) if not p.host))

    def replay(self, model, xs):
        """The outputs for inputs xs from the recording, as new arrays; the model's saved run
        is the recorded one, which now holds this call's values."""
        recording, run, outputs = self.recording
        model._run, model._run_unfilled = run, recording.run(xs)
        self.replays += 1
        return [private_input(model.device, y) for y in outputs]

    def record(self, model, values, forward):
        """forward() (the model's plain pass over the device inputs in `values`, which must
        be private_input arrays), recorded."""
        result = []
        recorder = self._recorded(model, model.device, lambda: result.append(forward()))
        if recorder is None:
            return result[0]
        device = model.device
        self.recording = (Recording(device, recorder, list(values[:len(model.input_shapes)]),
                                    in_place=reads_host_arrays(device)),
                          model._run, result[0])
        return [private_input(model.device, y) for y in result[0]]   # later replays overwrite these


class StepReplay(_Schedule):
    """A Trainer's training steps (see the module's docstring)."""

    def signature_of(self, trainer, x, y):
        """What a recording depends on, or None where the step cannot be replayed."""
        from .losses import SoftmaxCrossEntropy
        model, optimizer = trainer.model, trainer.optimizer
        if (trainer.comm is not None or model.check_finite or not isinstance(trainer.loss, SoftmaxCrossEntropy)
                or id(model) in self.refused):
            return None
        optimizer_key = optimizer.replay_key()
        x_key, y_key = _input_signature(x), _input_signature(y, np.int32, ndim=1)
        if optimizer_key is None or x_key is None or y_key is None:
            return None
        if not x_key[0] and not np.issubdtype(x_key[2], np.floating):
            return None     # the plain step converts or refuses it
        return (id(model), id(trainer.loss), model.training, x_key, y_key, optimizer_key, id(trainer._stats),
                tuple(id(p.data) for p in optimizer.params))

    def replay(self, trainer, x, labels, slot):
        """The step on batch (x, labels) from the recording, with the host-side effects of a
        plain step: each parameter's .grad is the recorded gradient, the optimizer counts
        the step."""
        recording, grads = self.recording
        recording.run([x, labels], slot)
        for param, grad in zip(trainer.optimizer.params, grads):
            param.grad = grad
        for call in trainer.model._calls:
            call.layer.replayed()
        trainer.optimizer.replayed_step()
        self.replays += 1

    def record(self, trainer, x, labels, slot, run_step):
        """Run the step on device inputs (x, labels) with the device recording it."""
        recorder = self._recorded(trainer.model, trainer.model.device, lambda: run_step(x, labels, slot))
        if recorder is None:
            return
        try:
            device = trainer.model.device
            recording = Recording(device, recorder, [x, labels], stats=trainer._stats,
                                  in_place=reads_host_arrays(device))
        except ValueError as exc:
            self.refused[id(trainer.model)] = str(exc)
            return
        self.recording = (recording, [p.grad for p in trainer.optimizer.params])
