"""Conv2D: 2-D convolution (cross-correlation, as PyTorch) over NCHW input."""
from .. import init
from ..device import ACTIVATION_CODES
from ..errors import ShapeError
from ..ops import conv2d as conv_ops
from ..parameter import Parameter
from ..shapes import check_padding, output_hw, pair, resolve_padding
from .base import WeightedLayer


def check_activation(activation):
    if activation not in ACTIVATION_CODES:
        names = ", ".join(repr(a) for a in ACTIVATION_CODES)
        raise ValueError(f"unknown activation {activation!r}; expected one of {names}")
    return activation


class Conv2D(WeightedLayer):
    """y = act(conv(x, weight) + bias); weight (out, in, kh, kw).

    Output size per axis: floor((n + pad_before + pad_after - k) / stride) + 1; padding is an
    int, (ph, pw), (top, bottom, left, right), "valid" or "same" (ceil(n / stride) outputs).

    >>> Conv2D(1, 6, kernel_size=5)          # (N, 1, 32, 32) -> (N, 6, 28, 28)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 activation=None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Conv2D {name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = check_padding(padding)
        self.activation = check_activation(activation)
        self.bias = bool(bias)
        self.reset_parameters()

    def reset_parameters(self):
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        self.params = {"weight": Parameter("weight", init.uniform_fan_in(
            (self.out_channels, self.in_channels, kh, kw), fan_in))}
        if self.bias:
            self.params["bias"] = Parameter("bias", init.uniform_fan_in((self.out_channels,), fan_in))

    def _pads(self, in_shape):
        return resolve_padding(self.padding, in_shape[1:], self.kernel_size, self.stride)

    def output_shape(self, in_shape):
        self._require_rank(in_shape, 3, "(C, H, W)")
        if in_shape[0] != self.in_channels:
            raise ShapeError(f"Conv2D expects {self.in_channels} input channels, got input of "
                             f"shape {tuple(in_shape)}")
        oh, ow = output_hw(in_shape[1:], self.kernel_size, self.stride, self._pads(in_shape), "Conv2D")
        return (self.out_channels, oh, ow)

    def _forward_op(self, x, bias, activation, negative_slope):
        return conv_ops.conv2d_forward(self.device, x, self.params["weight"].data, bias, self.stride,
                                       self._pads(x.shape[1:]), activation=activation,
                                       negative_slope=negative_slope)

    def _backward_op(self, gy, need_input_grad):
        return conv_ops.conv2d_backward(self.device, self._x, self.params["weight"].data, gy, self.stride,
                                        self._pads(self._x.shape[1:]), need_input_grad=need_input_grad,
                                        has_bias=self.bias)

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "bias": self.bias, "activation": self.activation}
