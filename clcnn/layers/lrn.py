"""LRN: local response normalisation across channels (AlexNet, GoogLeNet), as ONNX LRN."""
from ..errors import ShapeError
from ..ops import lrn as lrn_ops
from .base import Layer


class LRN(Layer):
    """y = x / (k + alpha / size * sum of x^2 over `size` neighbouring channels)^beta, the
    window of channel c being [c - (size-1)//2, c + size//2] (ONNX LRN; the same as
    torch.nn.LocalResponseNorm for an odd size). (N, C, ...) -> same shape."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, name=None):
        super().__init__(name)
        self.size, self.alpha, self.beta, self.k = lrn_ops.check_lrn(size, alpha, beta, k)

    def output_shape(self, in_shape):
        if len(in_shape) < 1:
            raise ShapeError("LRN expects input with a channel axis, (N, C, ...)")
        return tuple(in_shape)

    def forward(self, ctx, x):
        self.output_shape(x.shape[1:])
        ctx.x = x
        ctx.y, ctx.s = lrn_ops.lrn_forward(self.device, x, self.size, self.alpha, self.beta, self.k)
        return ctx.y

    def backward(self, ctx, gy, need_input_grad=True):
        return lrn_ops.lrn_backward(self.device, ctx.x, ctx.y, ctx.s, gy, self.size, self.alpha, self.beta)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import lrn as o_lrn
        ctx.x = x
        ctx.y, ctx.s = o_lrn.lrn_forward(x, self.size, self.alpha, self.beta, self.k)
        return ctx.y

    def reference_backward(self, ctx, params, gy):
        from ..oracle import lrn as o_lrn
        return o_lrn.lrn_backward(ctx.x, ctx.y, ctx.s, gy, self.size, self.alpha, self.beta), {}

    def torch_module(self):
        from torch import nn
        if self.size % 2:
            return nn.LocalResponseNorm(self.size, self.alpha, self.beta, self.k)
        import torch.nn.functional as F
        from .base import torch_function
        front = (self.size - 1) // 2

        def lrn(x):       # ONNX's window, which torch's differs from for an even size
            sq = F.pad((x * x).movedim(1, -1), (front, self.size - 1 - front))
            s = sq.unfold(-1, self.size, 1).sum(-1).movedim(-1, 1)
            return x * (self.k + self.alpha / self.size * s) ** -self.beta
        return torch_function(lrn)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.lrn((batch,) + tuple(in_shapes[0]), self.size, self.alpha, self.beta, self.k)]

    def config(self):
        return {"size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}
