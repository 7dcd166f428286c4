"""Dropout: zero each element with probability p in train mode and scale the rest by
1/(1-p); identity in eval mode. The mask comes from a counter-based generator on the device,
keyed by (seed, step), so a run is reproducible and resumable from those two numbers."""
from .. import init
from ..ops import dropout as dropout_ops
from .base import Layer


class Dropout(Layer):
    def __init__(self, p=0.5, name=None):
        super().__init__(name)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"Dropout p must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.seed = int(init.generator().integers(0, 2**31 - 1))
        self.step = 0

    def forward(self, ctx, x):
        ctx.mask = None
        if not self.training or self.p == 0:
            return x
        y, ctx.mask = dropout_ops.dropout_forward(self.device, x, self.p, self.seed, self.step)
        self.step += 1
        return y

    def backward(self, ctx, gy, need_input_grad=True):
        if ctx.mask is None:
            return gy
        return dropout_ops.dropout_backward(self.device, gy, ctx.mask)

    def config(self):
        return {"p": self.p}
