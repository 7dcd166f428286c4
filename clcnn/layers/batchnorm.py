"""BatchNorm2D: per-channel normalisation of NCHW input, as torch.nn.BatchNorm2d.

Train mode normalises with the batch's mean and biased variance and updates the running
statistics (running_var with the unbiased variance); eval mode uses the running statistics.
The running statistics and num_batches_tracked are buffers: saved and loaded, never trained.
A ReLU, ReLU6 or LeakyReLU that alone reads the output runs in the same kernels (fusion.plan):
the normalising pass applies it, and the backward passes apply its gradient, recomputed from x.
An Add that alone reads the output (a residual block's bn2) runs in them too, with its fused
activation: the step then reads x and the Add's other inputs (fusion.step_call).
"""
import numpy as np

from ..errors import ShapeError
from ..ops import batchnorm as bn_ops
from ..ops import merge as merge_ops
from ..parameter import Parameter
from .base import Layer, check_positive_int


class BatchNorm2D(Layer):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel; (N, C, H, W) -> same."""
    fusable_activations = bn_ops.FUSABLE_ACTIVATIONS

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, name=None):
        super().__init__(name)
        self.num_features = check_positive_int(num_features, "BatchNorm2D num_features")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"BatchNorm2D eps must be a number > 0, got {eps!r}")
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                     or not 0 <= momentum <= 1):
            raise ValueError(f"BatchNorm2D momentum must be in [0, 1] or None, got {momentum!r}")
        self.eps, self.momentum, self.affine = float(eps), momentum, bool(affine)
        self.reset_parameters()

    def reset_parameters(self):
        c = self.num_features
        self.params = ({"weight": Parameter("weight", np.ones(c, np.float32)),
                        "bias": Parameter("bias", np.zeros(c, np.float32))} if self.affine else {})
        self.buffers = {"running_mean": Parameter("running_mean", np.zeros(c, np.float32), trainable=False),
                        "running_var": Parameter("running_var", np.ones(c, np.float32), trainable=False),
                        "num_batches_tracked": Parameter("num_batches_tracked", np.zeros((), np.int64),
                                                         trainable=False, host=True)}

    @property
    def replayable(self):
        """A replayed step counts its batch like a plain one (replayed); with momentum None the
        running averages' factor is 1 / that count, a scalar that changes every step, which a
        recording cannot follow."""
        return self.momentum is not None

    def replayed(self):
        tracked = self.buffers["num_batches_tracked"]
        tracked.data = tracked.data + 1

    def output_shape(self, in_shape):
        self._require_rank(in_shape, 3, "(C, H, W)")
        if in_shape[0] != self.num_features:
            raise ShapeError(f"BatchNorm2D expects {self.num_features} channels, got input of shape "
                             f"{tuple(in_shape)}")
        return tuple(in_shape)

    def _affine(self):
        if not self.affine:
            return None, None
        return self.params["weight"].data, self.params["bias"].data

    def forward(self, ctx, x, *residuals, activation=None, negative_slope=0.01):
        """activation: a fused activation (fusion.plan), applied to the normalised output.
        residuals: the other inputs of an Add fused after this layer (fusion.step_call): the
        step returns act(bn(x) + sum(residuals))."""
        self.output_shape(x.shape[1:])
        weight, bias = self._affine()
        mean, var = self.buffers["running_mean"].data, self.buffers["running_var"].data
        # Not ctx.act: that name would make fusion hand this step a pooling layer's
        # pre-activation gradient, which the fused backward does not take.
        ctx.x, ctx.training, ctx.fused = x, self.training, dict(activation=activation, negative_slope=negative_slope)
        ctx.residuals = len(residuals)
        residual = None
        if len(residuals) > 1:
            residual = merge_ops.add_forward(self.device, residuals)
        elif residuals:
            residual = residuals[0]
        if not self.training:
            if residual is None:
                return bn_ops.batchnorm2d_forward_eval(self.device, x, weight, bias, mean, var, self.eps, **ctx.fused)
            # the backward takes the activation's mask from the output
            ctx.out = bn_ops.batchnorm2d_add_forward_eval(self.device, x, residual, weight, bias, mean, var,
                                                          self.eps, **ctx.fused)
            return ctx.out
        tracked = self.buffers["num_batches_tracked"]
        tracked.data = tracked.data + 1
        if residual is None:
            y, ctx.mean, ctx.invstd = bn_ops.batchnorm2d_forward_train(
                self.device, x, weight, bias, mean, var, self.momentum, self.eps,
                num_batches_tracked=int(tracked.data), **ctx.fused)
            return y
        ctx.out, ctx.mean, ctx.invstd = bn_ops.batchnorm2d_add_forward_train(
            self.device, x, residual, weight, bias, mean, var, self.momentum, self.eps,
            num_batches_tracked=int(tracked.data), **ctx.fused)
        return ctx.out

    def backward(self, ctx, gy, need_input_grad=True):
        """gy: the gradient of the step's output (the fused activation's, when there is one).
        With fused residuals: [gx, then the gradient of each residual] (one array, shared)."""
        weight, bias = self._affine()
        if ctx.residuals:
            if ctx.training:
                gx, gw, gb, gr = bn_ops.batchnorm2d_add_backward(
                    self.device, ctx.x, ctx.out, gy, weight, ctx.mean, ctx.invstd,
                    need_input_grad=need_input_grad, **ctx.fused)
            else:
                gx, gw, gb, gr = bn_ops.batchnorm2d_add_backward_eval(
                    self.device, ctx.x, ctx.out, gy, weight, self.buffers["running_mean"].data,
                    self.buffers["running_var"].data, self.eps, need_input_grad=need_input_grad, **ctx.fused)
        elif ctx.training:
            gx, gw, gb = bn_ops.batchnorm2d_backward(self.device, ctx.x, gy, weight, ctx.mean, ctx.invstd,
                                                     need_input_grad=need_input_grad, bias=bias, **ctx.fused)
        else:
            gx, gw, gb = bn_ops.batchnorm2d_backward_eval(
                self.device, ctx.x, gy, weight, self.buffers["running_mean"].data,
                self.buffers["running_var"].data, self.eps, need_input_grad=need_input_grad, bias=bias,
                **ctx.fused)
        if self.affine:
            self.params["weight"].accumulate(gw)
            self.params["bias"].accumulate(gb)
        return [gx] + [gr] * ctx.residuals if ctx.residuals else gx

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import batchnorm as o_bn
        weight, bias = params.get("weight"), params.get("bias")
        mean, var = params["running_mean"], params["running_var"]
        ctx.x, ctx.training = x, training
        if not training:
            return o_bn.batchnorm2d_forward_eval(x, weight, bias, mean, var, self.eps)
        tracked = params["num_batches_tracked"] + 1
        y, ctx.mean, ctx.invstd, new_mean, new_var = o_bn.batchnorm2d_forward_train(
            x, weight, bias, mean, var, self.momentum, self.eps, num_batches_tracked=tracked)
        ctx.updates = {"running_mean": new_mean, "running_var": new_var, "num_batches_tracked": tracked}
        return y

    def reference_backward(self, ctx, params, gy):
        from ..oracle import batchnorm as o_bn
        weight = params.get("weight")
        if ctx.training:
            gx, gw, gb = o_bn.batchnorm2d_backward(ctx.x, gy, weight, ctx.mean, ctx.invstd)
        else:
            gx, gw, gb = o_bn.batchnorm2d_backward_eval(ctx.x, gy, weight, params["running_mean"],
                                                        params["running_var"], self.eps)
        return gx, ({"weight": gw, "bias": gb} if self.affine else {})

    def torch_module(self):
        from torch import nn
        return nn.BatchNorm2d(self.num_features, self.eps, self.momentum, self.affine)

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True,
                 negative_slope=0.01, **fused):
        """in_shapes: x's, then those of the residuals of a fused Add (fusion.step_call)."""
        from .. import opspec
        kwargs = dict(training=training, affine=self.affine, momentum=self.momentum, eps=self.eps,
                      need_input_grad=need_input_grad, activation=fused_activation, negative_slope=negative_slope)
        if len(in_shapes) > 1:
            kwargs["residuals"] = len(in_shapes) - 1
        return [opspec.batchnorm2d((batch,) + tuple(in_shapes[0]), **kwargs)]

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine}
