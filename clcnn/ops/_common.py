"""Small helpers shared by the op wrappers."""
import operator

import numpy as np
import pyopencl as cl

from ..errors import ShapeError


def round_up(value, multiple):
    return (value + multiple - 1) // multiple * multiple


def check_array(array, ndim, name, dtype=np.float32):
    """Refuse arrays the kernels cannot read: wrong rank, wrong dtype, non-contiguous."""
    if array.ndim != ndim:
        raise ShapeError(f"{name} must have {ndim} dimensions, got shape {tuple(array.shape)}")
    if array.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return array


def buf(array):
    """The cl.Buffer behind an array, refusing sub-views the kernels would misread."""
    if array.offset:
        raise ValueError("clcnn kernels take arrays that start at offset 0")
    return array.base_data


# Kernel objects with preset scalars kept per kernel. Creating one costs PoCL about 70 us, so
# a kernel whose scalars keep changing (a seed, a step count) goes through pyopencl's own
# setting of every argument once this many sets of scalars have come.
_PRESETS_PER_KERNEL = 8


def launch(device, kernel, global_size, local_size, *args):
    """Enqueue `kernel` over global_size (rounded up to local_size where one is given).

    Scalars must come as numpy scalars (i32, f32). The launch goes through a copy of `kernel`
    (a kernel object of its own) whose scalar arguments were set when that set of scalars first
    came, so a call sets only its buffers: pyopencl sets each scalar through Python (about 1 us
    each), and LeNet-5 conv2's forward on its own, a weight pack of 13 scalars then the
    convolution, spent 30 us of its 158 in the two enqueues against 21 of 141 with the scalars
    preset (batch 64, medians of 8 alternating rounds). OpenCL takes a launch's arguments when
    it is enqueued: setting them again for the next launch leaves queued ones as they were.
    Scalars are declared typed on `kernel` for the other launches: pyopencl sets an untyped
    numpy scalar through a slow generic path (~15 us per scalar on pip's PoCL 3.0)."""
    plan = getattr(kernel, "_clcnn_args", None)
    if plan is None:
        dtypes = [a.dtype if isinstance(a, np.generic) else None for a in args]
        kernel.set_scalar_arg_dtypes(dtypes)
        scalars = [i for i, t in enumerate(dtypes) if t is not None]
        plan = kernel._clcnn_args = (len(args), _picker(scalars), [i for i, t in enumerate(dtypes) if t is None],
                                     [(i, dtypes[i].type) for i in scalars], {})
    count, pick_scalars, buffers, scalar_types, presets = plan
    if local_size is not None:
        global_size = tuple(round_up(g, l) for g, l in zip(global_size, local_size))
    if device.recorder is not None:      # a training step being recorded (clcnn.replay)
        device.recorder.launch(kernel, global_size, local_size, args)
    if len(args) != count:              # pyopencl's call names the mismatch
        return kernel(device.queue, global_size, local_size, *args)
    values = pick_scalars(args)
    preset = presets.get(values)
    if preset is None:
        if len(presets) >= _PRESETS_PER_KERNEL:
            return kernel(device.queue, global_size, local_size, *args)
        preset = presets[values] = cl.Kernel(kernel.program, kernel.function_name)
        for i, scalar_type in scalar_types:
            preset.set_arg(i, scalar_type(args[i]))
    for i in buffers:
        preset.set_arg(i, args[i])
    return cl.enqueue_nd_range_kernel(device.queue, preset, global_size, local_size)


def _picker(indices):
    """A function of args giving the tuple of args at `indices` (a dict key)."""
    if not indices:
        return lambda args: ()
    getter = operator.itemgetter(*indices)
    return getter if len(indices) > 1 else (lambda args: (getter(args),))


def i32(value):
    return np.int32(value)


def f32(value):
    return np.float32(value)
