"""Flatten: (N, ...) -> (N, prod(...)) as a view of the same device buffer, no copy."""
import math

from .base import Layer


class Flatten(Layer):
    replayable = True
    #: its backward only reshapes the gradient, so an activation's backward may run across it
    #: (fusion.activation_deferrals)
    reshapes_only = True

    def output_shape(self, in_shape):
        return (math.prod(in_shape),)

    def forward(self, ctx, x):
        ctx.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, ctx, gy, need_input_grad=True):
        return gy.reshape(ctx.x_shape)

    def reference_forward(self, ctx, params, x, training):
        ctx.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def reference_backward(self, ctx, params, gy):
        return gy.reshape(ctx.x_shape), {}

    def torch_module(self):
        from torch import nn
        return nn.Flatten()

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        return []    # a view: no kernel
