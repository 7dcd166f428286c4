"""Elementwise layers of imported models: the binary ops with NumPy broadcasting (BroadcastAdd,
Sub, Mul, Div) between two tensors or a tensor and a constant, PReLU and Clip.

A binary layer is called on a list of two tensors of one rank (per sample), or, built with
`constant=`, on one tensor: the constant is a buffer (saved and loaded, never trained) that
broadcasts against the whole (N, ...) input, so its leading axis, if it has as many axes as
the input, must be 1. `constant_first=True` makes it the left operand (ONNX's Sub(c, x)).
The existing `Add` (same shapes, fusable ReLU) stays as it is; BroadcastAdd is the
broadcasting one.
"""
import numpy as np

from ..errors import ShapeError
from ..ops import elementwise as ew_ops
from ..parameter import Parameter
from .base import Layer, check_positive_int


def _torch_constant_module(fn, constant):
    """A torch module computing fn(x, constant) with `constant` as a buffer named "constant"."""
    import torch
    from torch import nn

    class WithConstant(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("constant", torch.as_tensor(constant))

        def forward(self, x):
            return fn(x, self.constant)
    return WithConstant()


class _Binary(Layer):
    #: "add", "sub", "mul" or "div" (ops/elementwise.py)
    op = None

    def __init__(self, constant=None, constant_first=False, constant_shape=None, name=None):
        """constant_shape: the constant's shape without its value (set by load_state_dict); how
        a saved model rebuilds the layer."""
        super().__init__(name)
        what = type(self).__name__
        if constant is not None and constant_shape is not None:
            raise ValueError(f"{what}: give constant= or constant_shape=, not both")
        if constant_shape is not None:
            constant = np.zeros(tuple(constant_shape), np.float32)
        self.constant_first = bool(constant_first)
        self.arity = None
        if constant is not None:
            try:
                value = np.array(constant, dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(f"{what}: constant must be a number or an array of numbers, got "
                                 f"{type(constant).__name__}") from None
            if value.ndim > ew_ops.MAX_RANK:
                raise ValueError(f"{what}: a constant of at most {ew_ops.MAX_RANK} axes, got shape {value.shape}")
            value = value.reshape(value.shape or (1,))
            self.buffers = {"constant": Parameter("constant", value, trainable=False)}
            self.arity = 1
        elif constant_first:
            raise ValueError(f"{what}: constant_first needs a constant")

    @property
    def constant_shape(self):
        return self.buffers["constant"].shape if self.buffers else None

    def output_shape(self, *in_shapes):
        what = type(self).__name__
        if self.buffers:
            (shape,) = in_shapes
            cshape = self.constant_shape
            if len(cshape) > len(shape) + 1 or (len(cshape) == len(shape) + 1 and cshape[0] != 1):
                raise ShapeError(f"{what}'s constant of shape {cshape} would broadcast over the batch axis "
                                 f"of input (N,) + {tuple(shape)}; its leading axis must be 1")
            return ew_ops.broadcast_shape(what, (1,) + tuple(shape), cshape)[1:]
        if len(in_shapes) != 2:
            raise ShapeError(f"{what} takes two tensors, got {len(in_shapes)}")
        a, b = (tuple(s) for s in in_shapes)
        if len(a) != len(b):
            raise ShapeError(f"{what} of two tensors needs one rank per sample, got {a} and {b}; "
                             "add a Reshape with axes of size 1 to the smaller one")
        return ew_ops.broadcast_shape(what, a, b)

    def _operands(self, xs, constant):
        if constant is None:
            return xs
        return (constant, xs[0]) if self.constant_first else (xs[0], constant)

    def forward(self, ctx, *xs):
        self.output_shape(*[x.shape[1:] for x in xs])
        constant = self.buffers["constant"].data if self.buffers else None
        ctx.a, ctx.b = self._operands(xs, constant)
        y = ew_ops.binary_forward(self.device, self.op, ctx.a, ctx.b)
        ctx.y = y if self.op == "div" else None
        return y

    def _need(self):
        if not self.buffers:
            return (True, True)
        return (False, True) if self.constant_first else (True, False)

    def backward(self, ctx, gy, need_input_grad=True):
        ga, gb = ew_ops.binary_backward(self.device, self.op, ctx.a, ctx.b, gy, ctx.y, need=self._need())
        if not self.buffers:
            return [ga, gb]
        return gb if self.constant_first else ga

    def reference_forward(self, ctx, params, *xs, training):
        from ..oracle import elementwise as o_ew
        ctx.a, ctx.b = self._operands(xs, params.get("constant"))
        return o_ew.binary_forward(self.op, ctx.a, ctx.b)

    def reference_backward(self, ctx, params, gy):
        from ..oracle import elementwise as o_ew
        ga, gb = o_ew.binary_backward(self.op, ctx.a, ctx.b, gy)
        if not self.buffers:
            return [ga, gb], {}
        return (gb if self.constant_first else ga), {}

    def _torch_fn(self):
        import torch
        return {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}[self.op]

    def torch_module(self):
        fn = self._torch_fn()
        if not self.buffers:
            from .base import torch_function
            return torch_function(fn)
        if self.constant_first:
            return _torch_constant_module(lambda x, c: fn(c, x), np.zeros(self.constant_shape, np.float32))
        return _torch_constant_module(fn, np.zeros(self.constant_shape, np.float32))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        shapes = [(batch,) + tuple(s) for s in in_shapes]
        if self.buffers:
            shapes = list(self._operands(shapes, self.constant_shape))
        return [opspec.binary(self.op, shapes[0], shapes[1], need=self._need())]

    def config(self):
        if not self.buffers:
            return {}
        return {"constant_shape": list(self.constant_shape), "constant_first": self.constant_first}


class BroadcastAdd(_Binary):
    """y = a + b with NumPy broadcasting: `BroadcastAdd()([a, b])` or `BroadcastAdd(constant=c)(x)`
    (Add keeps to one shape and can fuse a ReLU)."""
    op = "add"


class Sub(_Binary):
    """y = a - b with NumPy broadcasting (constant_first=True: c - x)."""
    op = "sub"


class Mul(_Binary):
    """y = a * b with NumPy broadcasting (e.g. a per-channel scale of shape (C, 1, 1))."""
    op = "mul"


class Div(_Binary):
    """y = a / b with NumPy broadcasting (constant_first=True: c / x); IEEE division."""
    op = "div"


class PReLU(Layer):
    """y = x if x > 0 else weight[c] * x, c the channel (axis 1), as torch.nn.PReLU: one slope
    shared by every channel (num_parameters=1) or one per channel (num_parameters=C). The
    slopes are trained; NaN propagates."""

    def __init__(self, num_parameters=1, init=0.25, name=None):
        super().__init__(name)
        self.num_parameters = check_positive_int(num_parameters, "PReLU num_parameters")
        if isinstance(init, bool) or not isinstance(init, (int, float)):
            raise ValueError(f"PReLU init must be a number, got {init!r}")
        self.init = float(init)
        self.reset_parameters()

    def reset_parameters(self):
        self.params = {"weight": Parameter("weight", np.full(self.num_parameters, self.init, np.float32))}

    def output_shape(self, in_shape):
        if len(in_shape) < 1:
            raise ShapeError("PReLU expects input with a channel axis, (N, C, ...)")
        if self.num_parameters not in (1, in_shape[0]):
            raise ShapeError(f"PReLU has {self.num_parameters} slopes but the input has {in_shape[0]} "
                             f"channels (shape {tuple(in_shape)}); use 1 or {in_shape[0]}")
        return tuple(in_shape)

    def forward(self, ctx, x):
        self.output_shape(x.shape[1:])
        ctx.x = x
        return ew_ops.prelu_forward(self.device, x, self.params["weight"].data)

    def backward(self, ctx, gy, need_input_grad=True):
        gx, gw = ew_ops.prelu_backward(self.device, ctx.x, self.params["weight"].data, gy)
        self.params["weight"].accumulate(gw)
        return gx

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import elementwise as o_ew
        ctx.x = x
        return o_ew.prelu_forward(x, params["weight"])

    def reference_backward(self, ctx, params, gy):
        from ..oracle import elementwise as o_ew
        gx, gw = o_ew.prelu_backward(ctx.x, params["weight"], gy)
        return gx, {"weight": gw}

    def torch_module(self):
        from torch import nn
        return nn.PReLU(self.num_parameters, self.init)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.prelu((batch,) + tuple(in_shapes[0]), self.num_parameters)]

    def config(self):
        return {"num_parameters": self.num_parameters, "init": self.init}


class Clip(Layer):
    """y = min(max(x, min), max) elementwise (None: no bound on that side), as torch.clamp and
    ONNX Clip; the gradient passes where min <= x <= max. NaN propagates."""

    def __init__(self, min=None, max=None, name=None):
        super().__init__(name)
        for what, value in (("min", min), ("max", max)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or np.isnan(value)):
                raise ValueError(f"Clip {what} must be a number or None, got {value!r}")
        if min is not None and max is not None and min > max:
            raise ValueError(f"Clip needs min <= max, got min={min}, max={max}")
        self.min = None if min is None else float(min)
        self.max = None if max is None else float(max)

    def forward(self, ctx, x):
        ctx.x = x
        return ew_ops.clip_forward(self.device, x, self.min, self.max)

    def backward(self, ctx, gy, need_input_grad=True):
        return ew_ops.clip_backward(self.device, ctx.x, gy, self.min, self.max)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import elementwise as o_ew
        ctx.x = x
        return o_ew.clip_forward(x, self.min, self.max)

    def reference_backward(self, ctx, params, gy):
        from ..oracle import elementwise as o_ew
        return o_ew.clip_backward(ctx.x, gy, self.min, self.max), {}

    def torch_module(self):
        import torch
        from .base import torch_function
        if self.min is None and self.max is None:
            return torch_function(lambda x: x)
        return torch_function(lambda x: torch.clamp(x, self.min, self.max))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.clip((batch,) + tuple(in_shapes[0]), self.min, self.max)]

    def config(self):
        return {"min": self.min, "max": self.max}
