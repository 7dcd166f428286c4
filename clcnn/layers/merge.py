"""Merges of several tensors: Add (residual connections) and Concat (Inception, DenseNet)."""
from ..errors import ShapeError
from ..ops import merge as merge_ops
from .base import Layer


class Add(Layer):
    """y = a + b + ...: `Add()([a, b])`, inputs of one shape. A ReLU that alone reads the sum
    runs in the same kernel."""
    replayable = True
    arity = None
    fusable_activations = ("relu",)

    def output_shape(self, *in_shapes):
        if len(in_shapes) < 2:
            raise ShapeError(f"Add needs two or more inputs, got {len(in_shapes)}")
        for i, shape in enumerate(in_shapes[1:], start=1):
            if tuple(shape) != tuple(in_shapes[0]):
                raise ShapeError(f"Add inputs must have one shape: input 0 is {tuple(in_shapes[0])}, "
                                 f"input {i} is {tuple(shape)}")
        return tuple(in_shapes[0])

    def forward(self, ctx, *xs, activation=None, negative_slope=0.01):
        self.output_shape(*[x.shape[1:] for x in xs])
        ctx.count, ctx.act = len(xs), activation
        ctx.y = merge_ops.add_forward(self.device, xs, activation=activation)
        return ctx.y

    def backward(self, ctx, gy, need_input_grad=True):
        g = merge_ops.add_backward(self.device, gy, ctx.count, activation=ctx.act, y=ctx.y)
        return [g] * ctx.count

    def reference_forward(self, ctx, params, *xs, training):
        from ..oracle import merge as o_merge
        ctx.count = len(xs)
        return o_merge.add_forward(xs)

    def reference_backward(self, ctx, params, gy):
        return [gy] * ctx.count, {}

    def torch_module(self):
        from .base import torch_function
        return torch_function(lambda *xs: sum(xs[1:], xs[0]))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.add((batch,) + tuple(in_shapes[0]), len(in_shapes), activation=fused_activation)]


class Concat(Layer):
    """Inputs joined along `axis` (1: channels of NCHW, or features of (N, K)):
    `Concat()([a, b])`; the inputs agree on every other axis."""
    replayable = True
    arity = None

    def __init__(self, axis=1, name=None):
        super().__init__(name)
        if isinstance(axis, bool) or axis not in (1, -3):
            raise ValueError(f"Concat axis must be 1 (the channel axis; -3 for NCHW), got {axis!r}")
        self.axis = 1

    def output_shape(self, *in_shapes):
        if len(in_shapes) < 2:
            raise ShapeError(f"Concat needs two or more inputs, got {len(in_shapes)}")
        first = tuple(in_shapes[0])
        for i, shape in enumerate(in_shapes[1:], start=1):
            if len(shape) != len(first) or tuple(shape[1:]) != first[1:]:
                raise ShapeError(f"Concat along axis 1 needs inputs that agree on every other axis: "
                                 f"input 0 is {first}, input {i} is {tuple(shape)}")
        return (sum(s[0] for s in in_shapes),) + first[1:]

    def forward(self, ctx, *xs):
        self.output_shape(*[x.shape[1:] for x in xs])
        ctx.sizes = [x.shape[1] for x in xs]
        return merge_ops.concat_forward(self.device, xs, axis=1)

    def backward(self, ctx, gy, need_input_grad=True):
        return merge_ops.concat_backward(self.device, gy, ctx.sizes, axis=1)

    def reference_forward(self, ctx, params, *xs, training):
        from ..oracle import merge as o_merge
        ctx.sizes = [x.shape[1] for x in xs]
        return o_merge.concat_forward(xs, axis=1)

    def reference_backward(self, ctx, params, gy):
        from ..oracle import merge as o_merge
        return o_merge.concat_backward(gy, ctx.sizes, axis=1), {}

    def torch_module(self):
        import torch
        from .base import torch_function
        return torch_function(lambda *xs: torch.cat(xs, 1))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.concat([(batch,) + tuple(s) for s in in_shapes], axis=1)]

    def config(self):
        return {"axis": self.axis}
