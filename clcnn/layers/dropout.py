"""Dropout: zero each element with probability p in train mode and scale the rest by
1/(1-p); identity in eval mode. The mask comes from a counter-based generator on the device,
keyed by (seed, step), so a run is reproducible and resumable from those two numbers."""
import numpy as np

from .. import init
from ..ops import dropout as dropout_ops
from .base import Layer


class Dropout(Layer):
    replayable = True

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
        recorder = self.device.recorder
        if recorder is not None and x.size:   # a recorded step: each replay draws a new mask
            earlier = recorder.calls.get(id(self), 0)     # calls of this layer before, this step
            recorder.calls[id(self)] = earlier + 1
            recorder.vary(dropout_ops.STEP_ARGUMENT,
                          lambda: np.uint32((self.step + earlier) & 0xFFFFFFFF))
        self.step += 1
        return y

    def replayed(self):
        if self.p != 0:
            self.step += 1

    def backward(self, ctx, gy, need_input_grad=True):
        if ctx.mask is None:
            return gy
        return dropout_ops.dropout_backward(self.device, gy, ctx.mask)

    def reference_state(self):
        return {"seed": self.seed, "step": self.step}

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import dropout as o_drop
        ctx.mask = None
        if not training or self.p == 0:
            return x
        ctx.mask = o_drop.dropout_mask(x.shape, self.p, params["seed"], params["step"])
        ctx.updates = {"step": params["step"] + 1}
        return x * ctx.mask

    def reference_backward(self, ctx, params, gy):
        return (gy if ctx.mask is None else gy * ctx.mask), {}

    def torch_module(self):
        from torch import nn
        return nn.Dropout(self.p)    # its own random mask

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        if not training or self.p == 0:
            return []
        return [opspec.dropout((batch,) + tuple(in_shapes[0]), self.p, self.seed, self.step)]

    def config(self):
        return {"p": self.p}
