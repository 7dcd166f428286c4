"""Conv2D: 2-D convolution (cross-correlation, as PyTorch) over NCHW input, with optional
stride, padding, dilation and groups (groups == in_channels: depthwise)."""
from .. import init
from ..device import ACTIVATION_CODES
from ..errors import ShapeError
from ..ops import conv2d as conv_ops
from ..parameter import Parameter
from ..shapes import check_padding, output_hw, pair, resolve_padding
from .base import WeightedLayer, check_positive_int


def check_activation(activation):
    if activation not in ACTIVATION_CODES:
        names = ", ".join(repr(a) for a in ACTIVATION_CODES)
        raise ValueError(f"unknown activation {activation!r}; expected one of {names}")
    return activation


class Conv2D(WeightedLayer):
    """y = act(conv(x, weight) + bias); weight (out, in / groups, kh, kw).

    Output size per axis: floor((n + pad_before + pad_after - dilation * (k - 1) - 1) / stride)
    + 1; padding is an int, (ph, pw), (top, bottom, left, right), "valid" or "same"
    (ceil(n / stride) outputs). groups splits the channels into that many independent
    convolutions; groups == in_channels is a depthwise convolution (out_channels a multiple).

    >>> Conv2D(1, 6, kernel_size=5)          # (N, 1, 32, 32) -> (N, 6, 28, 28)
    """
    replayable = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, activation=None, name=None):
        super().__init__(name)
        self.in_channels = check_positive_int(in_channels, "Conv2D in_channels")
        self.out_channels = check_positive_int(out_channels, "Conv2D out_channels")
        self.groups = check_positive_int(groups, "Conv2D groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2D channels must be divisible by groups: in_channels {in_channels} "
                             f"and out_channels {out_channels}, groups {groups}")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.padding = check_padding(padding)
        self.activation = check_activation(activation)
        self.bias = bool(bias)
        self.reset_parameters()

    def reset_parameters(self):
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        self.params = {"weight": Parameter("weight", init.uniform_fan_in(
            (self.out_channels, self.in_channels // self.groups, kh, kw), fan_in))}
        if self.bias:
            self.params["bias"] = Parameter("bias", init.uniform_fan_in((self.out_channels,), fan_in))

    def pads(self, in_shape):
        """(top, bottom, left, right) for a per-sample input shape (C, H, W)."""
        return resolve_padding(self.padding, in_shape[1:], self.kernel_size, self.stride, self.dilation)

    def output_shape(self, in_shape):
        self._require_rank(in_shape, 3, "(C, H, W)")
        if in_shape[0] != self.in_channels:
            raise ShapeError(f"Conv2D expects {self.in_channels} input channels, got input of "
                             f"shape {tuple(in_shape)}")
        oh, ow = output_hw(in_shape[1:], self.kernel_size, self.stride, self.pads(in_shape), "Conv2D",
                           self.dilation)
        return (self.out_channels, oh, ow)

    def _extra(self):
        """dilation/groups keywords for the ops, only when not the default."""
        extra = {}
        if self.dilation != (1, 1):
            extra["dilation"] = self.dilation
        if self.groups != 1:
            extra["groups"] = self.groups
        return extra

    fusable_pools = ("avg", "max")
    takes_residuals = True

    def _forward_op(self, x, weight, bias, activation, negative_slope, saved=None, pool=None, keep_full=False,
                    residual=None):
        return conv_ops.conv2d_forward(self.device, x, weight, bias, self.stride, self.pads(x.shape[1:]),
                                       activation=activation, negative_slope=negative_slope, saved=saved,
                                       pool=pool, keep_full=keep_full, residual=residual, **self._extra())

    def _backward_op(self, x, weight, gy, need_input_grad, saved=None, input_residual=None):
        return conv_ops.conv2d_backward(self.device, x, weight, gy, self.stride, self.pads(x.shape[1:]),
                                        need_input_grad=need_input_grad, has_bias=self.bias, saved=saved,
                                        input_residual=input_residual, **self._extra())

    # model.backward may hand this layer its input's gradient from other readers to add to its
    # own (backward's input_residual)
    adds_input_residual = True

    # model.backward may hand this layer its pooling's output gradient (fusion.defers_pool_backward)
    takes_pooled_gradient = True

    def backward_pooled(self, ctx, gp, need_input_grad=True):
        """backward() where dL/d(output) comes from a 2x2 stride-2 average pooling of the
        (activated) output, gp its output gradient: the input gradient (or None) and the
        parameters' gradients accumulated (ops.conv2d_backward_pooled)."""
        gx, gw, gb = conv_ops.conv2d_backward_pooled(self.device, ctx.x, self.params["weight"].data, gp,
                                                     ctx.y if ctx.act else None, self.stride,
                                                     self.pads(ctx.x.shape[1:]), activation=ctx.act,
                                                     negative_slope=ctx.slope, need_input_grad=need_input_grad,
                                                     has_bias=self.bias, saved=ctx.saved, **self._extra())
        self.params["weight"].accumulate(gw)
        if self.bias:
            self.params["bias"].accumulate(gb)
        return gx

    def _reference_op(self, x, weight, bias):
        from ..oracle import conv2d as o_conv
        return o_conv.conv2d_forward(x, weight, bias, self.stride, self.pads(x.shape[1:]), self.dilation, self.groups)

    def _reference_backward_op(self, x, weight, gy):
        from ..oracle import conv2d as o_conv
        return o_conv.conv2d_backward(x, weight, gy, self.stride, self.pads(x.shape[1:]), self.dilation, self.groups)

    def torch_module(self):
        import torch.nn.functional as F
        from torch import nn
        pads = self.padding
        symmetric = not isinstance(pads, str) and pads[0] == pads[1] and pads[2] == pads[3]
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         (pads[0], pads[2]) if symmetric else 0, self.dilation, self.groups, self.bias)
        if not symmetric:   # torch pads both sides alike: pad the input first
            def pad(module, args):
                top, bottom, left, right = self.pads(tuple(args[0].shape[1:]))
                return (F.pad(args[0], (left, right, top, bottom)),)
            conv.register_forward_pre_hook(pad)
        return self._torch_activation(conv)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True,
                 negative_slope=0.01, pre_activation=False, keep_pool=None, grad_from_pool=False,
                 input_residual=False):
        from .. import opspec
        (shape,) = in_shapes
        w_shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        return [opspec.conv2d((batch,) + tuple(shape), w_shape, self.stride, self.pads(shape), bias=self.bias,
                              activation=fused_activation or self.activation, need_input_grad=need_input_grad,
                              dilation=self.dilation, groups=self.groups, pre_activation=pre_activation,
                              negative_slope=negative_slope if fused_activation else self._slope(),
                              keep_pool=keep_pool, grad_from_pool=grad_from_pool, input_residual=input_residual)]

    def config(self):
        config = {"in_channels": self.in_channels, "out_channels": self.out_channels,
                  "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                  "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                  "bias": self.bias, "activation": self.activation}
        # Written only when set, so files of plain convolutions stay as they were.
        if self.dilation != (1, 1):
            config["dilation"] = list(self.dilation)
        if self.groups != 1:
            config["groups"] = self.groups
        return config
