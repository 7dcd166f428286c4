"""Losses: a forward that keeps what backward needs, and a backward giving dL/dprediction."""
import numpy as np
import pyopencl.array as cl_array

from .device import device_of
from .errors import ShapeError
from .ops import loss as loss_ops


class _Loss:
    def __call__(self, prediction, target):
        """The loss as a Python float (reads one number back from the device)."""
        return float(self.forward(prediction, target).get()[0])


class SoftmaxCrossEntropy(_Loss):
    """Mean over the batch of -log softmax(logits)[label]: torch.nn.functional.cross_entropy.
    logits (N, K) float32 on the device; labels (N,) integer class indices."""

    def forward(self, logits, labels):
        if logits.ndim != 2:
            raise ShapeError(f"SoftmaxCrossEntropy expects logits of shape (N, K), got {tuple(logits.shape)}")
        self.device = device_of(logits)
        n, k = logits.shape
        if isinstance(labels, cl_array.Array):
            if labels.dtype != np.int32 or labels.shape != (n,):
                raise ShapeError(f"labels must be int32 of shape ({n},), got {labels.dtype} {tuple(labels.shape)}")
            self._labels = labels
        else:
            labels = np.asarray(labels)
            if labels.shape != (n,):
                raise ShapeError(f"labels must have shape ({n},) for logits {tuple(logits.shape)}, got {labels.shape}")
            if not np.issubdtype(labels.dtype, np.integer):
                raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
            if n and (labels.min() < 0 or labels.max() >= k):
                raise ValueError(f"labels must lie in [0, {k - 1}], got values in [{labels.min()}, {labels.max()}]")
            self._labels = self.device.to_device(labels, dtype=np.int32)
        loss, self._probs = loss_ops.softmax_cross_entropy_forward(self.device, logits, self._labels)
        return loss

    def backward(self):
        return loss_ops.softmax_cross_entropy_backward(self.device, self._probs, self._labels)


class MSE(_Loss):
    """Mean over all elements of (prediction - target)^2, as torch.nn.MSELoss."""

    def forward(self, prediction, target):
        self.device = device_of(prediction)
        if not isinstance(target, cl_array.Array):
            target = self.device.to_device(np.asarray(target, dtype=np.float32))
        if tuple(target.shape) != tuple(prediction.shape):
            raise ShapeError(f"MSE target shape {tuple(target.shape)} != prediction shape {tuple(prediction.shape)}")
        self._prediction, self._target = prediction, target
        return loss_ops.mse_forward(self.device, prediction, target)

    def backward(self):
        return loss_ops.mse_backward(self.device, self._prediction, self._target)
