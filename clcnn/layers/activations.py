"""Elementwise activations and Softmax. The elementwise ones can be fused into a preceding
Conv2D or Dense by the model (see `fusable_activation`)."""
from ..errors import ShapeError
from ..ops import activation as act_ops
from .base import Layer


class _Elementwise(Layer):
    name = None

    def __init__(self):
        super().__init__()
        self.negative_slope = 0.01

    @property
    def fusable_activation(self):
        return self.name

    def forward(self, x):
        self._y = act_ops.activation_forward(self.device, self.name, x, negative_slope=self.negative_slope)
        return self._y

    def backward(self, gy, need_input_grad=True):
        return act_ops.activation_backward(self.device, self.name, self._y, gy,
                                           negative_slope=self.negative_slope)


class ReLU(_Elementwise):
    name = "relu"


class Tanh(_Elementwise):
    name = "tanh"


class Sigmoid(_Elementwise):
    name = "sigmoid"


class LeakyReLU(_Elementwise):
    name = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        # The backward pass works from the output, which tells the sign of the input only for
        # a non-negative slope (as Keras also requires).
        if not isinstance(negative_slope, (int, float)) or negative_slope < 0:
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

    def forward(self, x):
        self.output_shape(x.shape[1:])
        self._y = act_ops.softmax_forward(self.device, x)
        return self._y

    def backward(self, gy, need_input_grad=True):
        return act_ops.softmax_backward(self.device, self._y, gy)
