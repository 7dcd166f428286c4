"""The Layer base class: validate and store hyperparameters, own parameters, build graph nodes
when called on symbolic tensors, and run forward/backward on device arrays."""
import inspect
import itertools
import re

from ..errors import ShapeError
from ..graph import Node, Tensor, as_tensor_list
from ..ops.activation import activation_backward
from ..ops.merge import add_forward

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
    #: whether a recorded training step through this layer may be replayed (clcnn.replay):
    #: its passes make device commands only through ops' launch(), and what they change on
    #: the host per call, replayed() does again
    replayable = False

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

    def replayed(self):
        """The host-side effects of one training-mode call whose launches were replayed
        (clcnn.replay): none for most layers."""

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

    # -- hooks: the float64 reference (clcnn.reference), the PyTorch mirror (clcnn.bench) and
    # the op descriptions of a training step (clcnn.opspec.model_cases). A new layer fills
    # these in its own file; nothing else matches layer types.
    def reference_state(self):
        """State besides parameters and buffers that the reference reads (e.g. Dropout's seed)."""
        return {}

    def reference_forward(self, ctx, params, *xs, training):
        """The output in NumPy (clcnn.oracle) from `params` ({name: array} of this layer's
        parameters, buffers and reference_state). Saves on ctx what reference_backward needs;
        sets ctx.updates ({name: new value}) for state the call changes (running statistics)."""
        raise NotImplementedError(f"{type(self).__name__} has no NumPy reference")

    def reference_backward(self, ctx, params, gy):
        """(dL/dx, or a list of them for several inputs; {param name: gradient})."""
        raise NotImplementedError(f"{type(self).__name__} has no NumPy reference")

    def torch_module(self):
        """The equivalent torch.nn module with the same state_dict keys (called with the
        inputs' tensors), or None where torch has none."""
        return None

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        """The opspec.OpCases that one call runs on inputs (batch,) + in_shapes[i]; with
        `fused_activation` (a kernel activation name; `negative_slope` in fused) absorbed."""
        raise NotImplementedError(f"{type(self).__name__} has no op description")

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
        """The class and its settings that differ from the defaults, as PyTorch shows them."""
        defaults = inspect.signature(type(self).__init__).parameters
        args, positional = [], True
        for key, value in self.config().items():
            if isinstance(value, (list, tuple)) and value and all(v == value[0] for v in value):
                value = value[0]      # [3, 3] reads as 3, (1, 1, 1, 1) as 1
            default = defaults[key].default if key in defaults else inspect.Parameter.empty
            positional = positional and default is inspect.Parameter.empty
            if default is inspect.Parameter.empty or default != value:
                args.append(repr(value) if positional else f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _require_rank(self, in_shape, rank, layout):
        if len(in_shape) != rank:
            raise ShapeError(f"{type(self).__name__} expects input of shape {layout} per sample, "
                             f"got {tuple(in_shape)}")


class WeightedLayer(Layer):
    """Shared by Conv2D and Dense: a weight, an optional bias and an optional fused activation.

    Subclasses implement `_forward_op(x, weight, bias, activation, negative_slope, saved)` and
    `_backward_op(x, weight, gy, need_input_grad, saved) -> (gx, gw, gb)` around their kernels;
    `saved` is a dict the forward may fill with what its backward can reuse (Conv2D: the
    zero-padded input), None in eval mode."""

    #: activation layers the model may fuse into this layer's kernel (the ACT_ codes)
    fusable_activations = ("relu", "leaky_relu", "tanh", "sigmoid", "relu6")
    #: 2x2 stride-2 poolings the model may fuse after that activation in eval mode (Conv2D);
    #: in train mode an "avg" one gets its output from this layer's forward (keep_full)
    fusable_pools = ()
    #: whether _forward_op takes `residual` (an array of the output's shape added before the
    #: activation), so that in eval mode the model runs the Add after this layer in its step
    takes_residuals = False

    def forward(self, ctx, x, *residuals, activation=None, negative_slope=0.01, weight=None, bias=None, pool=None,
                keep_full=False):
        """`activation` lets the model fuse the activation layer that follows this one;
        `weight`/`bias` replace the layer's own (the model folds an eval-mode BatchNorm in);
        `pool` (one of fusable_pools, eval mode) the 2x2 pooling layer after the activation;
        with keep_full (train mode) the output stays full-size and ctx.pooled gets it pooled.
        residuals (layers with takes_residuals, eval mode): the other inputs of the Add that
        alone reads this layer's output (fusion.plan), added before the activation."""
        self.output_shape(x.shape[1:])
        ctx.x = x
        ctx.act = activation or self.activation
        ctx.slope = negative_slope if activation else getattr(self, "negative_slope", 0.01)
        if weight is None:
            weight = self.params["weight"].data
            bias = self.params["bias"].data if self.bias else None
        ctx.saved = {} if self.training else None
        if pool is not None and keep_full:
            y, ctx.pooled = self._forward_op(x, weight, bias, ctx.act, ctx.slope, ctx.saved, pool=pool,
                                             keep_full=True)
            ctx.y = y if ctx.act else None
            return y
        if pool is not None:
            ctx.y = None    # pooled: the model runs an unfused forward again for a backward pass
            return self._forward_op(x, weight, bias, ctx.act, ctx.slope, ctx.saved, pool=pool)
        if residuals:
            ctx.y = None    # eval only: the model runs an unfused forward again for a backward pass
            residual = residuals[0] if len(residuals) == 1 else add_forward(self.device, residuals)
            return self._forward_op(x, weight, bias, ctx.act, ctx.slope, ctx.saved, residual=residual)
        y = self._forward_op(x, weight, bias, ctx.act, ctx.slope, ctx.saved)
        ctx.y = y if ctx.act else None   # the activation's backward works from its output
        return y

    def backward(self, ctx, gy, need_input_grad=True, pre_activation=False, input_activation=None,
                 input_slope=0.01, input_residual=None):
        """pre_activation: gy is already dL/d(output before the fused activation) (the model
        lets the next layer back-propagate through the activation in its own pass).
        input_activation (layers with takes_input_activation): the input is that activation's
        output (input_slope LeakyReLU's), and the input gradient is returned through its
        backward, dL/d(the activation's input): the model hands the previous layer's
        activation backward to this one (fusion.activation_deferrals).
        input_residual (layers with adds_input_residual): the gradient the input already has
        from its other readers; the returned input gradient is the sum (the model's
        accumulation of that input's gradients, in the same kernel where the op can)."""
        if ctx.act and not pre_activation:
            gy = activation_backward(self.device, ctx.act, ctx.y, gy, negative_slope=ctx.slope)
        extra = dict(input_activation=input_activation, input_slope=input_slope) if input_activation else {}
        if input_residual is not None:
            extra["input_residual"] = input_residual
        gx, gw, gb = self._backward_op(ctx.x, self.params["weight"].data, gy, need_input_grad, ctx.saved, **extra)
        self.params["weight"].accumulate(gw)
        if self.bias:
            self.params["bias"].accumulate(gb)
        return gx

    def _slope(self):
        return getattr(self, "negative_slope", 0.01)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import activation as o_act
        ctx.x = x
        y = self._reference_op(x, params["weight"], params.get("bias"))
        if self.activation:
            y = o_act.activation_forward(self.activation, y, self._slope())
        ctx.y = y
        return y

    def reference_backward(self, ctx, params, gy):
        from ..oracle import activation as o_act
        if self.activation:
            gy = o_act.activation_backward(self.activation, ctx.y, gy, self._slope())
        gx, gw, gb = self._reference_backward_op(ctx.x, params["weight"], gy)
        return gx, ({"weight": gw, "bias": gb} if self.bias else {"weight": gw})

    def _torch_activation(self, module):
        """module followed by this layer's own activation (a forward hook keeps the keys)."""
        if self.activation:
            act = torch_activation(self.activation, self._slope())
            module.register_forward_hook(lambda mod, args, out: act(out))
        return module


def torch_activation(name, negative_slope=0.01):
    """The torch.nn module of a kernel activation name."""
    from torch import nn
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
            "leaky_relu": lambda: nn.LeakyReLU(negative_slope)}[name]()


def torch_function(fn):
    """A parameterless torch.nn module applying fn to its inputs (Add, Concat)."""
    from torch import nn

    class Function(nn.Module):
        def forward(self, *xs):
            return fn(*xs)
    return Function()
