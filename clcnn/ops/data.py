"""Training batches gathered on the device (kernels/data.cl) from a dataset uploaded once, so a
training step copies nothing from the host."""
import numpy as np

from ..errors import ShapeError
from ._common import buf, check_array, f32, i32, launch

_LOCAL = (16,)


def batch_gather(dev, images, labels, order, start, count, shifts=None, fill=0.0):
    """(x (count, C, H, W), y int32 (count,)): images[order[start + i]] and its label, each image
    moved by shifts[start + i] = (dy, dx) when shifts (int32 (len(order), 2)) is given, the
    uncovered pixels set to fill (as clcnn.datasets.batches.shift_images)."""
    check_array(images, 4, "images")
    check_array(labels, 1, "labels", dtype=np.int32)
    check_array(order, 1, "order", dtype=np.int32)
    if shifts is not None:
        check_array(shifts, 2, "shifts", dtype=np.int32)
        if tuple(shifts.shape) != (order.shape[0], 2):
            raise ShapeError(f"shifts must be ({order.shape[0]}, 2), got {tuple(shifts.shape)}")
    m, c, h, w = images.shape
    if labels.shape[0] != m:
        raise ShapeError(f"{labels.shape[0]} labels for {m} images")
    if count < 1 or start < 0 or start + count > order.shape[0]:
        raise ShapeError(f"batch [{start}, {start + count}) outside the order of {order.shape[0]}")
    x = dev.empty((count, c, h, w))
    y = dev.empty((count,), np.int32)
    rows = count * c * h
    launch(dev, dev.kernel("data.cl", "batch_gather"), (rows,), _LOCAL,
           buf(images), buf(labels), buf(order), buf(shifts if shifts is not None else order),
           buf(x), buf(y), i32(start), i32(count), i32(c), i32(h), i32(w), i32(shifts is not None),
           f32(fill))
    return x, y
