"""Shape arithmetic shared by layers and ops: padding forms and output sizes."""
import math

from .errors import ShapeError


def pair(value, name):
    """An int or a pair of ints as a (height, width) tuple of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return tuple(value)


def check_padding(padding):
    """Validate a padding argument; returns it as "valid", "same" or (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid', 'same', an int or a tuple of 2 or 4 ints, got {padding!r}")
        return padding.lower() if padding.lower() == "same" else (0, 0, 0, 0)
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding, padding, padding, padding)
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        padding = (padding[0], padding[0], padding[1], padding[1])
    if (not isinstance(padding, (tuple, list)) or len(padding) != 4
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in padding)):
        raise ValueError(f"padding must be 'valid', 'same', an int or a tuple of 2 or 4 ints, got {padding!r}")
    if min(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return tuple(padding)


def effective_kernel(kernel_hw, dilation_hw=(1, 1)):
    """The extent a dilated kernel covers: dilation * (k - 1) + 1 per axis."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel_hw, dilation_hw))


def resolve_padding(padding, size_hw, kernel_hw, stride_hw, dilation_hw=(1, 1)):
    """(top, bottom, left, right) for an input of size_hw. "same" gives ceil(n / s) outputs
    with any odd pixel of padding at the bottom/right, as TensorFlow and Keras do."""
    if padding != "same":
        return padding
    pads = []
    for n, k, s in zip(size_hw, effective_kernel(kernel_hw, dilation_hw), stride_hw):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def output_size(n, k, s, before, after):
    """floor((n + before + after - k) / s) + 1."""
    return (n + before + after - k) // s + 1


def output_hw(size_hw, kernel_hw, stride_hw, pads, where="layer", dilation_hw=(1, 1)):
    """Output (height, width) of a conv or pool: floor((n + pads - dilation * (k - 1) - 1) /
    stride) + 1 per axis, as PyTorch; ShapeError when the kernel overhangs the padded input."""
    spans = effective_kernel(kernel_hw, dilation_hw)
    top, bottom, left, right = pads
    oh = output_size(size_hw[0], spans[0], stride_hw[0], top, bottom)
    ow = output_size(size_hw[1], spans[1], stride_hw[1], left, right)
    if oh < 1 or ow < 1:
        kernel = f"kernel {kernel_hw[0]}x{kernel_hw[1]}"
        if tuple(spans) != tuple(kernel_hw):
            kernel += f" with dilation {dilation_hw[0]}x{dilation_hw[1]} spans {spans[0]}x{spans[1]}, which"
        raise ShapeError(f"{where}: {kernel} is larger than the padded input "
                         f"{size_hw[0] + top + bottom}x{size_hw[1] + left + right}")
    return oh, ow
