"""Softmax and LogSoftmax along any axis but the batch axis. Softmax keeps the (N, K) layer's
behaviour and kernels (activations.Softmax) for 2-D input; other input runs softmax.cl."""
from ..errors import ShapeError
from ..ops import softmax as sm_ops
from . import activations
from .base import Layer


class _AxisSoftmax(Layer):
    log = False

    def __init__(self, axis=1, name=None):
        super().__init__(name)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"{type(self).__name__} axis must be an int, got {axis!r}")
        self.axis = axis

    def _axis(self, rank):
        """The axis of the (N, ...) tensor, for per-sample rank `rank`."""
        axis = sm_ops.check_axis(self.axis, rank + 1, type(self).__name__)
        if axis == 0:
            raise ShapeError(f"{type(self).__name__} axis {self.axis} is the batch axis; samples are "
                             "normalised one by one (use an axis >= 1)")
        return axis

    def _rows(self, rank):
        """True where the (N, K) kernels of activations.Softmax apply."""
        return not self.log and rank == 1

    def output_shape(self, in_shape):
        self._axis(len(in_shape))
        return tuple(in_shape)

    def forward(self, ctx, x):
        ctx.axis = self._axis(x.ndim - 1)
        ctx.y = sm_ops.softmax_forward(self.device, x, ctx.axis, self.log)
        return ctx.y

    def backward(self, ctx, gy, need_input_grad=True):
        return sm_ops.softmax_backward(self.device, ctx.y, gy, ctx.axis, self.log)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import softmax as o_sm
        ctx.axis = self._axis(x.ndim - 1)
        ctx.y = o_sm.softmax_forward(x, ctx.axis, self.log)
        return ctx.y

    def reference_backward(self, ctx, params, gy):
        from ..oracle import softmax as o_sm
        return o_sm.softmax_backward(ctx.y, gy, ctx.axis, self.log), {}

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        shape = (batch,) + tuple(in_shapes[0])
        return [opspec.softmax_axis(shape, self._axis(len(in_shapes[0])), self.log)]

    def config(self):
        return {"axis": self.axis}


class Softmax(_AxisSoftmax, activations.Softmax):
    """Softmax along `axis` of (N, ...) input (1: the features of (N, K), or the channels of
    NCHW; negative axes count from the end, as torch.nn.Softmax(dim=axis)). For training,
    prefer logits with losses.SoftmaxCrossEntropy, which fuses softmax and the loss stably."""

    def forward(self, ctx, x):
        if self._rows(x.ndim - 1) and self._axis(1) == 1:
            ctx.rows = True
            return activations.Softmax.forward(self, ctx, x)
        ctx.rows = False
        return _AxisSoftmax.forward(self, ctx, x)

    def backward(self, ctx, gy, need_input_grad=True):
        if ctx.rows:
            return activations.Softmax.backward(self, ctx, gy, need_input_grad)
        return _AxisSoftmax.backward(self, ctx, gy, need_input_grad)

    def torch_module(self):
        from torch import nn
        return nn.Softmax(dim=self.axis)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        if self._rows(len(in_shapes[0])) and self._axis(1) == 1:
            return activations.Softmax.op_cases(self, in_shapes, batch)
        return _AxisSoftmax.op_cases(self, in_shapes, batch)


class LogSoftmax(_AxisSoftmax):
    """log(softmax(x)) along `axis` of (N, ...) input, computed as x - max - log(sum exp(x -
    max)), as torch.nn.LogSoftmax(dim=axis)."""
    log = True

    def torch_module(self):
        from torch import nn
        return nn.LogSoftmax(dim=self.axis)
