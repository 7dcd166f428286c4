"""Elementwise activations, Softmax and Identity. The elementwise ones can be fused into a
preceding Conv2D or Dense (or Add) by the model (see `fusable_activation`)."""
from ..errors import ShapeError
from ..ops import activation as act_ops
from .base import Layer


class _Elementwise(Layer):
    replayable = True
    #: the kernels' name of the activation ("relu", "tanh", ...)
    function = None

    def __init__(self, name=None):
        super().__init__(name)
        self.negative_slope = 0.01

    @property
    def fusable_activation(self):
        return self.function

    def forward(self, ctx, x):
        ctx.y = act_ops.activation_forward(self.device, self.function, x, negative_slope=self.negative_slope)
        return ctx.y

    def backward(self, ctx, gy, need_input_grad=True):
        return act_ops.activation_backward(self.device, self.function, ctx.y, gy,
                                           negative_slope=self.negative_slope)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import activation as o_act
        ctx.y = o_act.activation_forward(self.function, x, self.negative_slope)
        return ctx.y

    def reference_backward(self, ctx, params, gy):
        from ..oracle import activation as o_act
        return o_act.activation_backward(self.function, ctx.y, gy, self.negative_slope), {}

    def torch_module(self):
        from .base import torch_activation
        return torch_activation(self.function, self.negative_slope)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.activation(self.function, (batch,) + tuple(in_shapes[0]), self.negative_slope)]


class ReLU(_Elementwise):
    function = "relu"


class ReLU6(_Elementwise):
    """min(max(x, 0), 6), as torch.nn.ReLU6 (MobileNet)."""
    function = "relu6"


class Tanh(_Elementwise):
    function = "tanh"


class Sigmoid(_Elementwise):
    function = "sigmoid"


class LeakyReLU(_Elementwise):
    function = "leaky_relu"

    def __init__(self, negative_slope=0.01, name=None):
        super().__init__(name)
        # The backward pass works from the output, which tells the sign of the input only for
        # a non-negative slope (as Keras also requires).
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) or not negative_slope >= 0:
            raise ValueError(f"LeakyReLU negative_slope must be a number >= 0, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def config(self):
        return {"negative_slope": self.negative_slope}


class Softmax(Layer):
    """Softmax over the features of (N, K) input. For training, prefer logits with
    losses.SoftmaxCrossEntropy, which fuses softmax and the loss stably."""

    def output_shape(self, in_shape):
        if len(in_shape) != 1:
            raise ShapeError(f"Softmax expects (N, K) input, got per-sample shape {tuple(in_shape)}")
        return tuple(in_shape)

    def forward(self, ctx, x):
        self.output_shape(x.shape[1:])
        ctx.y = act_ops.softmax_forward(self.device, x)
        return ctx.y

    def backward(self, ctx, gy, need_input_grad=True):
        return act_ops.softmax_backward(self.device, ctx.y, gy)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import activation as o_act
        ctx.y = o_act.softmax_forward(x)
        return ctx.y

    def reference_backward(self, ctx, params, gy):
        from ..oracle import activation as o_act
        return o_act.softmax_backward(ctx.y, gy), {}

    def torch_module(self):
        from torch import nn
        return nn.Softmax(dim=1)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.softmax((batch,) + tuple(in_shapes[0]))]


class Identity(Layer):
    """Returns its input (a placeholder, e.g. the shortcut of a residual block)."""
    replayable = True

    def forward(self, ctx, x):
        return x

    def backward(self, ctx, gy, need_input_grad=True):
        return gy

    def reference_forward(self, ctx, params, x, training):
        return x

    def reference_backward(self, ctx, params, gy):
        return gy, {}

    def torch_module(self):
        from torch import nn
        return nn.Identity()

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        return []    # no kernel
