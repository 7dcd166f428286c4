"""Max, average and global pooling over NCHW input (PyTorch semantics: max pads with -inf,
average counts padded zeros unless count_include_pad=False)."""
from ..ops import pool as pool_ops
from ..shapes import check_padding, output_hw, pair
from .base import Layer


class _Pool2D(Layer):
    replayable = True
    def __init__(self, kernel_size, stride=None, padding=0, name=None):
        super().__init__(name)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride if stride is not None else kernel_size, "stride")
        pads = check_padding(padding)
        if pads == "same":
            raise ValueError(f"{type(self).__name__} padding must be ints, not 'same'")
        kh, kw = self.kernel_size
        if pads[0] > kh // 2 or pads[1] > kh // 2 or pads[2] > kw // 2 or pads[3] > kw // 2:
            raise ValueError(f"{type(self).__name__} padding {pads} must be at most half the "
                             f"kernel size {self.kernel_size} (a window must see real pixels)")
        self.padding = pads

    @property
    def fusable_as(self):
        """The pool a convolution may fuse in eval mode ("avg" / "max": 2x2 windows, stride 2,
        no padding), else None."""
        plain = self.kernel_size == (2, 2) and self.stride == (2, 2) and not any(self.padding)
        return self.fusable_pool if plain else None

    def output_shape(self, in_shape):
        self._require_rank(in_shape, 3, "(C, H, W)")
        oh, ow = output_hw(in_shape[1:], self.kernel_size, self.stride, self.padding, type(self).__name__)
        return (in_shape[0], oh, ow)

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}

    def _torch_pool(self, make, fill):
        """make(padding) -> the torch pool; padding torch cannot express (unequal sides)
        becomes a pad of the input by `fill` first (a pre-hook keeps the keys)."""
        import torch.nn.functional as F
        top, bottom, left, right = self.padding
        if top == bottom and left == right:
            return make((top, left))
        module = make(0)
        module.register_forward_pre_hook(
            lambda mod, args: (F.pad(args[0], (left, right, top, bottom), value=fill),))
        return module


class MaxPool2D(_Pool2D):
    fusable_pool = "max"

    def forward(self, ctx, x):
        self.output_shape(x.shape[1:])
        ctx.x_shape = x.shape
        y, ctx.argmax = pool_ops.maxpool2d_forward(self.device, x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, ctx, gy, need_input_grad=True, activation=None, act_output=None, negative_slope=0.01):
        """With activation and act_output (that activation's output, this layer's input), the
        gradient also goes back through the activation: dL/d(its input)."""
        return pool_ops.maxpool2d_backward(self.device, gy, ctx.argmax, ctx.x_shape, self.kernel_size,
                                           self.stride, self.padding, activation=activation,
                                           act_output=act_output, negative_slope=negative_slope)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import pool as o_pool
        ctx.x_shape = x.shape
        y, ctx.argmax = o_pool.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def reference_backward(self, ctx, params, gy):
        from ..oracle import pool as o_pool
        return o_pool.maxpool2d_backward(gy, ctx.argmax, ctx.x_shape), {}

    def torch_module(self):
        from torch import nn
        return self._torch_pool(lambda pads: nn.MaxPool2d(self.kernel_size, self.stride, pads), float("-inf"))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True,
                 undo_activation=None, negative_slope=0.01, **fused):
        """undo_activation: the backward also goes back through that activation (fusion.py)."""
        from .. import opspec
        return [opspec.pool2d("max", (batch,) + tuple(in_shapes[0]), self.kernel_size, self.stride, self.padding,
                              undo_activation=undo_activation, negative_slope=negative_slope)]


class AvgPool2D(_Pool2D):
    fusable_pool = "avg"

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True, name=None):
        super().__init__(kernel_size, stride, padding, name)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, ctx, x, pooled=None):
        """pooled: this layer's output, already written by the convolution before it (a
        train-mode fusion, fusion.py)."""
        self.output_shape(x.shape[1:])
        ctx.x_shape = x.shape
        if pooled is not None:
            return pooled
        return pool_ops.avgpool2d_forward(self.device, x, self.kernel_size, self.stride, self.padding,
                                          count_include_pad=self.count_include_pad)

    def backward(self, ctx, gy, need_input_grad=True, activation=None, act_output=None, negative_slope=0.01):
        """With activation and act_output (that activation's output, this layer's input), the
        gradient also goes back through the activation: dL/d(its input), in the same pass."""
        return pool_ops.avgpool2d_backward(self.device, gy, ctx.x_shape, self.kernel_size, self.stride,
                                           self.padding, count_include_pad=self.count_include_pad,
                                           activation=activation, act_output=act_output,
                                           negative_slope=negative_slope)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import pool as o_pool
        ctx.x_shape = x.shape
        return o_pool.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)

    def reference_backward(self, ctx, params, gy):
        from ..oracle import pool as o_pool
        return o_pool.avgpool2d_backward(gy, ctx.x_shape, self.kernel_size, self.stride, self.padding,
                                         self.count_include_pad), {}

    def torch_module(self):
        from torch import nn
        top, bottom, left, right = self.padding
        if not self.count_include_pad and (top != bottom or left != right):
            return None     # torch cannot leave out padding of unequal sides
        return self._torch_pool(lambda pads: nn.AvgPool2d(self.kernel_size, self.stride, pads,
                                                          count_include_pad=self.count_include_pad), 0.0)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True,
                 undo_activation=None, negative_slope=0.01, **fused):
        """undo_activation: the backward also goes back through that activation (fusion.py)."""
        from .. import opspec
        return [opspec.pool2d("avg", (batch,) + tuple(in_shapes[0]), self.kernel_size, self.stride, self.padding,
                              self.count_include_pad, undo_activation=undo_activation, negative_slope=negative_slope,
                              pooled_by_producer=fused.get("pooled_by_producer", False))]

    def config(self):
        return {**super().config(), "count_include_pad": self.count_include_pad}


class GlobalAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C, 1, 1): the mean of each channel."""
    replayable = True

    def output_shape(self, in_shape):
        self._require_rank(in_shape, 3, "(C, H, W)")
        return (in_shape[0], 1, 1)

    def forward(self, ctx, x):
        self.output_shape(x.shape[1:])
        ctx.x_shape = x.shape
        return pool_ops.global_avgpool2d_forward(self.device, x)

    def backward(self, ctx, gy, need_input_grad=True):
        return pool_ops.global_avgpool2d_backward(self.device, gy, ctx.x_shape)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import pool as o_pool
        ctx.x_shape = x.shape
        return o_pool.global_avgpool2d_forward(x)

    def reference_backward(self, ctx, params, gy):
        from ..oracle import pool as o_pool
        return o_pool.global_avgpool2d_backward(gy, ctx.x_shape), {}

    def torch_module(self):
        from torch import nn
        return nn.AdaptiveAvgPool2d(1)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.pool2d("global_avg", (batch,) + tuple(in_shapes[0]))]


class GlobalMaxPool2D(GlobalAvgPool2D):
    """(N, C, H, W) -> (N, C, 1, 1): the max of each channel."""

    def forward(self, ctx, x):
        self.output_shape(x.shape[1:])
        ctx.x_shape = x.shape
        y, ctx.argmax = pool_ops.global_maxpool2d_forward(self.device, x)
        return y

    def backward(self, ctx, gy, need_input_grad=True):
        return pool_ops.global_maxpool2d_backward(self.device, gy, ctx.argmax, ctx.x_shape)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import pool as o_pool
        ctx.x_shape = x.shape
        y, ctx.argmax = o_pool.global_maxpool2d_forward(x)
        return y

    def reference_backward(self, ctx, params, gy):
        from ..oracle import pool as o_pool
        return o_pool.global_maxpool2d_backward(gy, ctx.argmax, ctx.x_shape), {}

    def torch_module(self):
        from torch import nn
        return nn.AdaptiveMaxPool2d(1)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.pool2d("global_max", (batch,) + tuple(in_shapes[0]))]
