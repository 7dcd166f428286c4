"""The Layer base class: validate and store hyperparameters, own parameters, build graph nodes
when called on symbolic tensors, and run forward/backward on device arrays."""
import itertools
import re

from ..errors import ShapeError
from ..graph import Node, Tensor, as_tensor_list
from ..ops.activation import activation_backward

_counters = {}


def check_positive_int(value, what):
    """value as an int >= 1; ValueError naming `what` otherwise (bools are refused too)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def check_layer_name(name):
    if not isinstance(name, str) or not name or re.search(r"[/:\s]", name):
        raise ValueError(f"a layer name must be a non-empty string without '/', ':' or spaces, got {name!r}")
    return name


class Layer:
    """A step of a model.

    Subclasses set `self.params` (ordered name -> Parameter; `self.buffers` for state that is
    saved but not trained), implement `output_shape(*in_shapes)` (shapes without the batch
    axis; raise ShapeError on a bad input), `forward(ctx, *xs)` on device arrays, saving on
    `ctx` (a fresh namespace per call) what backward needs, and `backward(ctx, gy,
    need_input_grad)` returning dL/dx (a list of them for layers of several inputs) and adding
    the parameters' gradients with Parameter.accumulate. `config()` returns the constructor
    arguments, for saving. Layers hold no per-call state, so one layer can appear at several
    places of a graph (shared weights).
    """

    #: elementwise activation name that a preceding Conv2D/Dense may fuse, else None
    fusable_activation = None
    #: prefix of automatic names ("<prefix>_<k>"); None: the class name in lower case
    auto_name = None
    #: how many inputs a call takes: 1, or None for a list of two or more (Add, Concat)
    arity = 1

    def __init__(self, name=None):
        self.params = {}
        self.buffers = {}
        self.device = None
        self.training = True
        self.nodes = []
        if name is None:
            kind = self.auto_name or type(self).__name__.lower()
            counter = _counters.setdefault(kind, itertools.count(1))
            self.name, self.named = f"{kind}_{next(counter)}", False
        else:
            self.name, self.named = check_layer_name(name), True

    def bind(self, device):
        self.device = device
        for param in self.tensors().values():
            param.bind(device)

    def parameters(self):
        return list(self.params.values())

    def tensors(self):
        """Parameters and buffers, name -> Parameter, in state_dict order."""
        return {**self.params, **self.buffers}

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def forward(self, ctx, x):
        raise NotImplementedError

    def backward(self, ctx, gy, need_input_grad=True):
        raise NotImplementedError

    def config(self):
        return {}

    def __call__(self, inputs):
        """Called on a symbolic tensor (or a list, for Add/Concat): the output tensor of a new
        node of the graph. Build a Model from those tensors to run it."""
        what = f"{type(self).__name__} {self.name!r}"
        if self.arity == 1 and isinstance(inputs, (list, tuple)):
            raise TypeError(f"{what} takes one tensor, got a list of {len(inputs)}")
        if self.arity is None and not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{what} takes a list of tensors, e.g. {type(self).__name__}()([a, b])")
        if not isinstance(inputs, (list, tuple, Tensor)):
            raise TypeError(f"{what} is called on symbolic tensors (from L.Input(shape)) to build a "
                            f"clcnn.Model, got {type(inputs).__name__}; to run layers on arrays, "
                            "put them in a model and call the model")
        tensors = as_tensor_list(inputs, f"{what} inputs")
        try:
            shape = self.output_shape(*[t.shape for t in tensors])
        except ShapeError as exc:
            sources = ", ".join(f"{t.name} {t.shape}" for t in tensors)
            raise ShapeError(f"layer {self.name!r} ({type(self).__name__}) cannot take {sources}: {exc}") from None
        return Node(self, tensors, shape).output

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def _require_rank(self, in_shape, rank, layout):
        if len(in_shape) != rank:
            raise ShapeError(f"{type(self).__name__} expects input of shape {layout} per sample, "
                             f"got {tuple(in_shape)}")


class WeightedLayer(Layer):
    """Shared by Conv2D and Dense: a weight, an optional bias and an optional fused activation.

    Subclasses implement `_forward_op(x, weight, bias, activation, negative_slope)` and
    `_backward_op(x, weight, gy, need_input_grad) -> (gx, gw, gb)` around their kernels."""

    #: activation layers the model may fuse into this layer's kernel (the ACT_ codes)
    fusable_activations = ("relu", "leaky_relu", "tanh", "sigmoid", "relu6")

    def forward(self, ctx, x, activation=None, negative_slope=0.01, weight=None, bias=None):
        """`activation` lets the model fuse the activation layer that follows this one;
        `weight`/`bias` replace the layer's own (the model folds an eval-mode BatchNorm in)."""
        self.output_shape(x.shape[1:])
        ctx.x = x
        ctx.act = activation or self.activation
        ctx.slope = negative_slope if activation else getattr(self, "negative_slope", 0.01)
        if weight is None:
            weight = self.params["weight"].data
            bias = self.params["bias"].data if self.bias else None
        y = self._forward_op(x, weight, bias, ctx.act, ctx.slope)
        ctx.y = y if ctx.act else None   # the activation's backward works from its output
        return y

    def backward(self, ctx, gy, need_input_grad=True, pre_activation=False):
        """pre_activation: gy is already dL/d(output before the fused activation) (the model
        lets the next layer back-propagate through the activation in its own pass)."""
        if ctx.act and not pre_activation:
            gy = activation_backward(self.device, ctx.act, ctx.y, gy, negative_slope=ctx.slope)
        gx, gw, gb = self._backward_op(ctx.x, self.params["weight"].data, gy, need_input_grad)
        self.params["weight"].accumulate(gw)
        if self.bias:
            self.params["bias"].accumulate(gb)
        return gx
