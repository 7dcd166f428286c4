"""Dense (fully connected): y = act(x @ weight.T + bias), weight (out_features, in_features)."""
from .. import init
from ..errors import ShapeError
from ..ops import dense as dense_ops
from ..parameter import Parameter
from .base import WeightedLayer, check_positive_int
from .conv import check_activation


class Dense(WeightedLayer):
    """(N, in_features) -> (N, out_features). Put a Flatten before it for NCHW input."""
    replayable = True

    def __init__(self, in_features, out_features, bias=True, activation=None, name=None):
        super().__init__(name)
        self.in_features = check_positive_int(in_features, "Dense in_features")
        self.out_features = check_positive_int(out_features, "Dense out_features")
        self.bias = bool(bias)
        self.activation = check_activation(activation)
        self.reset_parameters()

    def reset_parameters(self):
        self.params = {"weight": Parameter("weight", init.uniform_fan_in(
            (self.out_features, self.in_features), self.in_features))}
        if self.bias:
            self.params["bias"] = Parameter("bias", init.uniform_fan_in((self.out_features,), self.in_features))

    def output_shape(self, in_shape):
        if len(in_shape) != 1 or in_shape[0] != self.in_features:
            raise ShapeError(f"Dense expects {self.in_features} input features per sample, got "
                             f"input of shape {tuple(in_shape)}"
                             + (" (add a Flatten before it)" if len(in_shape) > 1 else ""))
        return (self.out_features,)

    def _forward_op(self, x, weight, bias, activation, negative_slope, saved=None):
        return dense_ops.dense_forward(self.device, x, weight, bias, activation=activation,
                                       negative_slope=negative_slope)

    # model.backward may hand this layer the backward of the activation its input comes from
    takes_input_activation = True

    def _backward_op(self, x, weight, gy, need_input_grad, saved=None, input_activation=None, input_slope=0.01):
        return dense_ops.dense_backward(self.device, x, weight, gy, has_bias=self.bias,
                                        need_input_grad=need_input_grad, input_activation=input_activation,
                                        negative_slope=input_slope)

    def _reference_op(self, x, weight, bias):
        from ..oracle import dense as o_dense
        return o_dense.dense_forward(x, weight, bias)

    def _reference_backward_op(self, x, weight, gy):
        from ..oracle import dense as o_dense
        return o_dense.dense_backward(x, weight, gy, has_bias=self.bias)

    def torch_module(self):
        from torch import nn
        return self._torch_activation(nn.Linear(self.in_features, self.out_features, bias=self.bias))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True,
                 negative_slope=0.01, pre_activation=False, input_activation=None, input_slope=0.01):
        from .. import opspec
        return [opspec.dense(batch, self.in_features, self.out_features, bias=self.bias,
                             activation=fused_activation or self.activation, need_input_grad=need_input_grad,
                             negative_slope=negative_slope if fused_activation else self._slope(),
                             pre_activation=pre_activation, input_activation=input_activation,
                             input_slope=input_slope)]

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "activation": self.activation}
