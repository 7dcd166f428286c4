"""Training batches gathered on the device (kernels/data.cl) from a dataset uploaded once, so a
training step copies nothing from the host."""
import weakref

import numpy as np
import pyopencl.array as cl_array

from ..datasets.batches import normalization
from ..errors import ShapeError
from ._common import buf, check_array, f32, i32, launch

_LOCAL = (16,)

# Per-channel fill values and normalisation constants uploaded once per device: a training
# step makes no host copy.
_FILLS = weakref.WeakKeyDictionary()
_NORMS = weakref.WeakKeyDictionary()


def batch_gather(dev, images, labels, order, start, count, shifts=None, fill=0.0, flips=None,
                 pad=None, mean=None, std=None):
    """(x (count, C, H, W), y int32 (count,)): images[order[start + i]] and its label.

    Augmentation (see kernels/data.cl): with shifts (int32 (len(order), 2)) each image moves by
    shifts[start + i] = (dy, dx), the uncovered pixels set to fill (as
    clcnn.datasets.batches.shift_images); with flips (int32 (len(order),), 0 or 1) the images
    whose flips[start + i] is 1 are then mirrored left-right. Shifts of up to p pixels and flips
    are torchvision's RandomCrop(H, padding=p) followed by RandomHorizontalFlip. fill is one
    number, or one per channel (a sequence of C numbers, or a float32 device array (C,)).

    uint8 images (M, C, H, W) are prepared on the way as clcnn.datasets.prepare_images(images,
    pad, mean, std) would (bit-identical): padded by `pad` (default 0) with the background value
    and normalised to (pixel / 255 - mean) / std (defaults 0 and 1; one number or one per
    channel), before the shift and flip; x is then (count, C, H + 2 pad, W + 2 pad)."""
    raw = images.dtype == np.uint8
    if not raw and (pad, mean, std) != (None, None, None):
        raise ValueError(f"pad, mean and std prepare uint8 images; these are {images.dtype}: "
                         "pass them prepared, without pad, mean and std")
    check_array(images, 4, "images", dtype=np.uint8 if raw else np.float32)
    check_array(labels, 1, "labels", dtype=np.int32)
    check_array(order, 1, "order", dtype=np.int32)
    if shifts is not None:
        check_array(shifts, 2, "shifts", dtype=np.int32)
        if tuple(shifts.shape) != (order.shape[0], 2):
            raise ShapeError(f"shifts must be ({order.shape[0]}, 2), got {tuple(shifts.shape)}")
    if flips is not None:
        check_array(flips, 1, "flips", dtype=np.int32)
        if flips.shape[0] != order.shape[0]:
            raise ShapeError(f"flips must be ({order.shape[0]},), got {tuple(flips.shape)}")
    m, c, h, w = images.shape
    if labels.shape[0] != m:
        raise ShapeError(f"{labels.shape[0]} labels for {m} images")
    if count < 1 or start < 0 or start + count > order.shape[0]:
        raise ShapeError(f"batch [{start}, {start + count}) outside the order of {order.shape[0]}")
    fills = _channel_fills(dev, fill, c)
    if raw:
        pad = 0 if pad is None else int(pad)
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        norm = _normalization(dev, 0.0 if mean is None else mean, 1.0 if std is None else std, c)
        x = dev.empty((count, c, h + 2 * pad, w + 2 * pad))
        y = dev.empty((count,), np.int32)
        launch(dev, dev.kernel("data.cl", "batch_gather_u8"), (count * c * (h + 2 * pad),), _LOCAL,
               buf(images), buf(labels), buf(order), buf(shifts if shifts is not None else order),
               buf(x), buf(y), i32(start), i32(count), i32(c), i32(h), i32(w), i32(pad), buf(norm),
               i32(shifts is not None), f32(fill if fills is None else 0.0),
               buf(flips if flips is not None else order), i32(flips is not None),
               buf(fills if fills is not None else norm), i32(fills is not None))
        return x, y
    x = dev.empty((count, c, h, w))
    y = dev.empty((count,), np.int32)
    rows = count * c * h
    launch(dev, dev.kernel("data.cl", "batch_gather"), (rows,), _LOCAL,
           buf(images), buf(labels), buf(order), buf(shifts if shifts is not None else order),
           buf(x), buf(y), i32(start), i32(count), i32(c), i32(h), i32(w), i32(shifts is not None),
           f32(fill if fills is None else 0.0),
           buf(flips if flips is not None else order), i32(flips is not None),
           buf(fills if fills is not None else images), i32(fills is not None))
    return x, y


def _channel_fills(dev, fill, channels):
    """None for one fill value, else a float32 device array of `channels` values."""
    if isinstance(fill, cl_array.Array):
        check_array(fill, 1, "fill")
    else:
        values = np.asarray(fill, dtype=np.float64)
        if values.ndim == 0:
            return None
        if values.ndim != 1:
            raise ShapeError(f"fill must be a number or one value per channel, got shape {values.shape}")
        key = tuple(values.tolist())
        per_device = _FILLS.setdefault(dev, {})
        if key not in per_device:
            per_device[key] = dev.to_device(values, dtype=np.float32)
        fill = per_device[key]
    if fill.shape[0] != channels:
        raise ShapeError(f"fill has {fill.shape[0]} values for images of {channels} channels: "
                         "give one number or one per channel")
    return fill


def _normalization(dev, mean, std, channels):
    """The float32 (3, channels) device array of datasets.batches.normalization, made once."""
    key = (tuple(np.ravel(mean).tolist()), tuple(np.ravel(std).tolist()), channels)
    per_device = _NORMS.setdefault(dev, {})
    if key not in per_device:
        per_device[key] = dev.to_device(normalization(mean, std, channels))
    return per_device[key]
