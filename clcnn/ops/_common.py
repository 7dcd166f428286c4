"""Small helpers shared by the op wrappers."""
import numpy as np

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


def launch(device, kernel, global_size, local_size, *args):
    """Enqueue `kernel` over global_size (rounded up to local_size where one is given).

    Scalars must come as numpy scalars (i32, f32). Their types are declared on the kernel once:
    pyopencl sets an untyped numpy-scalar argument through a slow generic path (~15 us per
    scalar on pip's PoCL 3.0, 100-250 us for a kernel with 8 scalars), a typed one in ~1 us.
    The Device caches kernel objects for the process, so the declaration is made once."""
    if not getattr(kernel, "_clcnn_typed", False):
        kernel.set_scalar_arg_dtypes([a.dtype if isinstance(a, np.generic) else None for a in args])
        kernel._clcnn_typed = True
    if local_size is not None:
        global_size = tuple(round_up(g, l) for g, l in zip(global_size, local_size))
    if device.recorder is not None:      # a training step being recorded (clcnn.replay)
        device.recorder.launch(kernel, global_size, local_size, args)
    return kernel(device.queue, global_size, local_size, *args)


def i32(value):
    return np.int32(value)


def f32(value):
    return np.float32(value)
