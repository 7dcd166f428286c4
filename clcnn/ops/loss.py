"""Loss host wrappers (kernels/loss.cl): softmax cross-entropy and MSE, forward and backward.

Losses come back as device arrays of shape (1,) (the caller decides when to read them), means
summed in a fixed order without atomics: deterministic run to run.
"""
import numpy as np

from ..errors import ShapeError
from ._common import buf, check_array, f32, i32, launch

# MSE sums squared differences in this many contiguous chunks, then the chunk sums in order.
_MSE_PARTS = 64
# Fixed local sizes: PoCL compiles one work-group function per local size, and with None it
# would pick (and compile) a new one for every new array length.
_ROWS, _ELEMENTS, _SINGLE = (8,), (64,), (1,)


def _check_flat_pair(pred, target):
    if pred.dtype != np.float32 or target.dtype != np.float32:
        raise TypeError(f"MSE takes float32 arrays, got {pred.dtype} and {target.dtype}")
    if tuple(pred.shape) != tuple(target.shape):
        raise ShapeError(f"MSE target shape {tuple(target.shape)} != prediction shape {tuple(pred.shape)}")
    check_array(pred, pred.ndim, "pred")
    check_array(target, target.ndim, "target")
    if pred.size == 0:
        raise ShapeError("MSE of an empty array is undefined")
    return pred.size


def _check_logits_labels(logits, labels, name="logits"):
    check_array(logits, 2, name)
    check_array(labels, 1, "labels", dtype=np.int32)
    n, k = logits.shape
    if labels.shape[0] != n:
        raise ShapeError(f"labels has {labels.shape[0]} entries for {n} rows of {name}")
    if n == 0 or k == 0:
        raise ShapeError(f"cross-entropy needs at least one row and one class, got {name} {(n, k)}")
    return n, k


def softmax_cross_entropy_forward(dev, logits, labels):
    """(loss (1,) = mean over rows of -log softmax(logits)[label], probs (N, K)).
    A label outside [0, K) makes the loss NaN (the host API validates labels before)."""
    n, k = _check_logits_labels(logits, labels)
    probs = dev.empty((n, k))
    row_loss = dev.empty((n,))
    loss = dev.empty((1,))
    launch(dev, dev.kernel("loss.cl", "softmax_cross_entropy_forward"), (n,), _ROWS,
           buf(logits), buf(labels), buf(probs), buf(row_loss), i32(n), i32(k))
    launch(dev, dev.kernel("loss.cl", "loss_mean_finish"), (1,), _SINGLE,
           buf(row_loss), buf(loss), i32(n), f32(1.0 / n))
    return loss, probs


def softmax_cross_entropy_backward(dev, probs, labels):
    """dL/dlogits = (probs - onehot(labels)) / N."""
    n, k = _check_logits_labels(probs, labels, "probs")
    dlogits = dev.empty((n, k))
    launch(dev, dev.kernel("loss.cl", "softmax_cross_entropy_backward"), (n * k,), _ELEMENTS,
           buf(probs), buf(labels), buf(dlogits), i32(n), i32(k), f32(1.0 / n))
    return dlogits


def mse_forward(dev, pred, target):
    """loss (1,) = mean over every element of (pred - target)^2 (any shape, as torch.nn.MSELoss)."""
    count = _check_flat_pair(pred, target)
    chunk = -(-count // _MSE_PARTS)
    parts = -(-count // chunk)
    partial = dev.empty((parts,))
    loss = dev.empty((1,))
    launch(dev, dev.kernel("loss.cl", "mse_forward_partial"), (parts,), _ROWS,
           buf(pred), buf(target), buf(partial), i32(count), i32(chunk), i32(parts))
    launch(dev, dev.kernel("loss.cl", "loss_mean_finish"), (1,), _SINGLE,
           buf(partial), buf(loss), i32(parts), f32(1.0 / count))
    return loss


def mse_backward(dev, pred, target):
    """dL/dpred = 2 * (pred - target) / numel, shaped like pred."""
    count = _check_flat_pair(pred, target)
    grad = dev.empty(pred.shape)
    launch(dev, dev.kernel("loss.cl", "mse_backward"), (count,), _ELEMENTS,
           buf(pred), buf(target), buf(grad), i32(count), f32(2.0 / count))
    return grad


def softmax_cross_entropy_train(dev, logits, labels, stats, slot):
    """Training form of the loss, no host round trip: returns dlogits = dL/dlogits of the mean
    cross-entropy and writes stats[slot] = (that loss, rows whose argmax is the label) into
    `stats`, a float32 device array (slots, 2) that the caller reads when it likes."""
    n, k = _check_logits_labels(logits, labels)
    _check_stats(stats, slot)
    dlogits = dev.empty((n, k))
    row_loss = dev.empty((n,))
    row_correct = dev.empty((n,))
    launch(dev, dev.kernel("loss.cl", "softmax_cross_entropy_train"), (n,), _ROWS,
           buf(logits), buf(labels), buf(dlogits), buf(row_loss), buf(row_correct), i32(n), i32(k),
           f32(1.0 / n))
    launch(dev, dev.kernel("loss.cl", "step_stats_rows"), (1,), _SINGLE,
           buf(row_loss), buf(row_correct), buf(stats), i32(slot), i32(n), f32(1.0 / n))
    return dlogits


def step_stats(dev, loss, logits, labels, stats, slot):
    """stats[slot] = (loss[0], rows of logits (N, K) whose argmax is the label); labels int32
    (N,) or None (count 0): what the Trainer keeps for a loss other than cross-entropy."""
    check_array(loss, 1, "loss")
    _check_stats(stats, slot)
    if labels is not None:
        n, k = _check_logits_labels(logits, labels)
    else:
        n, k = 0, 1
    launch(dev, dev.kernel("loss.cl", "step_stats_generic"), (1,), _SINGLE,
           buf(loss), buf(logits), buf(labels if labels is not None else loss), buf(stats),
           i32(slot), i32(n), i32(k), i32(labels is not None))


def _check_stats(stats, slot):
    check_array(stats, 2, "stats")
    if stats.shape[1] != 2 or not 0 <= slot < stats.shape[0]:
        raise ShapeError(f"stats must be (slots, 2) with 0 <= slot < slots, got {tuple(stats.shape)} "
                         f"and slot {slot}")
