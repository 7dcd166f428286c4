"""The Layer base class: validate and store hyperparameters, own parameters, forward/backward."""
from ..errors import ShapeError
from ..ops.activation import activation_backward


class Layer:
    """A step of a Sequential model.

    Subclasses set `self.params` (ordered name -> Parameter), implement `output_shape(in_shape)`
    (shapes without the batch axis; raise ShapeError on a bad input), `forward(x)` on device
    arrays keeping what backward needs, and `backward(gy)` returning dL/dx and writing the
    parameters' .grad. `config()` returns the constructor arguments, for saving.
    """

    #: elementwise activation name that a preceding Conv2D/Dense may fuse, else None
    fusable_activation = None

    def __init__(self):
        self.params = {}
        self.device = None
        self.training = True

    def bind(self, device):
        self.device = device
        for param in self.params.values():
            param.bind(device)

    def parameters(self):
        return list(self.params.values())

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    def config(self):
        return {}

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def _require_rank(self, in_shape, rank, layout):
        if len(in_shape) != rank:
            raise ShapeError(f"{type(self).__name__} expects input of shape {layout} per sample, "
                             f"got {tuple(in_shape)}")


class WeightedLayer(Layer):
    """Shared by Conv2D and Dense: a weight, an optional bias and an optional fused activation.

    Subclasses implement `_forward_op(x, bias, activation, negative_slope)` and
    `_backward_op(gy, need_input_grad) -> (gx, gw, gb)` around their kernels."""

    def forward(self, x, activation=None, negative_slope=0.01):
        """`activation` lets the model fuse the activation layer that follows this one."""
        self.output_shape(x.shape[1:])
        self._x = x
        self._act = activation or self.activation
        self._slope = negative_slope
        bias = self.params["bias"].data if self.bias else None
        y = self._forward_op(x, bias, self._act, negative_slope)
        self._y = y if self._act else None   # the activation's backward works from its output
        return y

    def backward(self, gy, need_input_grad=True, pre_activation=False):
        """pre_activation: gy is already dL/d(output before the fused activation) (the model
        lets the next layer back-propagate through the activation in its own pass)."""
        if self._act and not pre_activation:
            gy = activation_backward(self.device, self._act, self._y, gy, negative_slope=self._slope)
        gx, gw, gb = self._backward_op(gy, need_input_grad)
        self.params["weight"].grad = gw
        if self.bias:
            self.params["bias"].grad = gb
        return gx
