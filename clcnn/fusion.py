"""The fusion pass: which layer calls of a model run together as one kernel launch.

A plan is a list of Steps in running order. Each step runs one layer call (`position`) and
may absorb calls that only it feeds:
- an elementwise activation after a Conv2D, Dense or Add (one kernel with the activation in
  its epilogue; its backward then works from the fused output);
- a ReLU, ReLU6 or LeakyReLU after a BatchNorm2D not folded into a convolution (train mode,
  or eval mode after a layer other than Conv2D): the normalising pass applies it, the backward
  passes apply its gradient, recomputed from the BatchNorm's input;
- in eval mode, a BatchNorm2D after a Conv2D, folded into the convolution's weight and bias;
- in eval mode, a 2x2 stride-2 AvgPool2D or MaxPool2D after a Conv2D (and its fused
  activation): the convolution's kernel pools what it computes where it can (conv2d_rows),
  so the full-size map is never written (LeNet-5's conv1 -> tanh -> pool);
- in train mode, a 2x2 stride-2 AvgPool2D after a Conv2D (and its fused activation) stays a
  step of its own for the backward pass, but its forward output comes from the convolution's
  step, which keeps the full-size map for the backward and writes the pooled one in the same
  pass where it can (conv2d_rows: LeNet-5's conv1, one read of its 6x28x28 maps less);
- in eval mode, a Conv2D (with its folded BatchNorm, no activation of its own) whose output
  only an Add reads, with the Add's fused activation (a bottleneck's conv3 -> bn3 -> Add(shortcut)
  -> ReLU): as below, the step runs where the Add runs, reading the convolution's input and the
  Add's other inputs (step_call); the convolution adds them before the activation
  (ops.conv2d's residual: in the matrix product's epilogue for 1x1 and im2col convolutions);
- a BatchNorm2D (not folded) whose output only an Add reads, with the Add's fused activation (a
  residual block's bn2 -> Add(shortcut) -> ReLU): the step runs where the Add runs, as the
  BatchNorm layer reading its own input and the Add's other inputs (step_call), one normalising
  pass y = act(bn(x) + shortcut); its backward applies the activation's gradient once and hands
  that one array to the shortcut and to the BatchNorm's backward. An Add reading several such
  BatchNorms absorbs the first.
In the backward pass an AvgPool2D or MaxPool2D whose input comes from such a fused activation
also undoes that activation (one pass over the big gradient instead of two). A 2x2 stride-2
AvgPool2D of a convolution leaves its backward to that convolution (defers_pool_backward):
LeNet-5's conv1 (no input gradient) then never writes its full-size gradient, and conv2's is
written once, in the layout its backward reads.

Fusion never changes names, state_dict or results beyond float rounding: the model keeps its
layer list; only the schedule changes.
"""
from collections import namedtuple

# position: the main call (whose layer runs the step); output: the value the step writes (its
# last absorbed call's); activation / batchnorm / add: positions of absorbed calls or None
# (add: the Add a BatchNorm runs into; pool: an eval-mode pooling the step ends with);
# pool_from: for an AvgPool2D or MaxPool2D, the plan index of the step whose fused activation
# its backward also undoes, else None; keeps_pool: the train-mode AvgPool2D whose output this
# step also writes (position), else None; pooled: this pooling step's output was written so.
Step = namedtuple("Step", "position output activation batchnorm pool_from add pool keeps_pool pooled",
                  defaults=(None, None, None, False))


def _readers(calls, outputs, count):
    readers = {}
    for position, call in enumerate(calls):
        for v in call.inputs:
            readers.setdefault(v, []).append(position)
    for v in outputs:
        readers.setdefault(v, []).append(None)   # read by the user
    return readers


def plan(calls, outputs, count, training, fold_batchnorm=True, fuse_pools=True):
    """The fusion plan of `calls` (see model._Call) for train or eval mode; fold_batchnorm
    False leaves out every eval-only fusion (BatchNorm folds, pools, Adds run into
    convolutions), fuse_pools False the pools and the Adds run into convolutions (so that
    every convolution's own map is formed, at full size)."""
    from .layers.base import WeightedLayer
    from .layers.batchnorm import BatchNorm2D
    from .layers.conv import Conv2D
    from .layers.merge import Add
    from .layers.pooling import AvgPool2D, MaxPool2D
    readers = _readers(calls, outputs, count)

    def sole_reader(position):
        """The call that alone reads the output of call `position`, else None."""
        users = readers.get(count + position, [])
        return users[0] if len(users) == 1 and users[0] is not None else None

    steps, absorbed, step_of_value = [], set(), {}
    into_add = {}      # Add position -> the BatchNorm or Conv2D call that runs with it
    folded = {}        # Conv2D position run into an Add -> the position of its folded BatchNorm
    for position, call in enumerate(calls):
        if position in absorbed:
            continue
        layer, last, batchnorm, activation = call.layer, position, None, None
        if isinstance(layer, BatchNorm2D):
            nxt = sole_reader(position)
            if nxt is not None and isinstance(calls[nxt].layer, Add) and nxt not in into_add:
                into_add[nxt] = position
                continue
        add = None
        if position in into_add:      # last stays the Add: the step writes its output
            add, position = position, into_add[position]
            layer = calls[position].layer
            batchnorm = folded.get(position)
        elif isinstance(layer, Conv2D) and not training and fold_batchnorm:
            nxt = sole_reader(last)
            if nxt is not None and isinstance(calls[nxt].layer, BatchNorm2D) and layer.activation is None:
                batchnorm, last = nxt, nxt
            nxt = sole_reader(last)
            if (fuse_pools and layer.takes_residuals and layer.activation is None and nxt is not None
                    and isinstance(calls[nxt].layer, Add) and nxt not in into_add):
                into_add[nxt], folded[position] = position, batchnorm
                if batchnorm is not None:
                    absorbed.add(batchnorm)
                continue
        can_fuse = ((isinstance(layer, WeightedLayer) and layer.activation is None)
                    or isinstance(layer, (Add, BatchNorm2D)))
        nxt = sole_reader(last)
        if can_fuse and nxt is not None:
            function = calls[nxt].layer.fusable_activation
            if function is not None and function in getattr(layer, "fusable_activations", ()):
                activation, last = nxt, nxt
        pool = None
        if not training and fold_batchnorm and fuse_pools and add is None and getattr(layer, "fusable_pools", ()):
            nxt = sole_reader(last)
            kind = getattr(calls[nxt].layer, "fusable_as", None) if nxt is not None else None
            if kind in layer.fusable_pools:
                pool, last = nxt, nxt
        keeps_pool = None
        if training and fuse_pools and "avg" in getattr(layer, "fusable_pools", ()):
            nxt = sole_reader(last)
            if nxt is not None and getattr(calls[nxt].layer, "fusable_as", None) == "avg":
                keeps_pool = nxt
        pool_from, pooled = None, False
        if isinstance(layer, (AvgPool2D, MaxPool2D)):
            producer = step_of_value.get(call.inputs[0])
            if producer is not None and sole_reader(steps[producer].output - count) == position:
                pool_from = producer
                pooled = steps[producer].keeps_pool == position
        absorbed.update(p for p in (batchnorm, activation, pool) if p is not None)
        step_of_value[count + last] = len(steps)
        steps.append(Step(position, count + last, activation, batchnorm, pool_from, add, pool, keeps_pool,
                          pooled))
    return steps


def step_call(step, calls, count):
    """(layer, value indices it reads) of the step: the main call's, or for a BatchNorm or
    Conv2D run into an Add, its input followed by the Add's other inputs."""
    call = calls[step.position]
    if step.add is None:
        return call.layer, call.inputs
    own = count + (step.batchnorm if step.batchnorm is not None else step.position)
    return call.layer, call.inputs + [v for v in calls[step.add].inputs if v != own]


def forward_arguments(step, calls):
    """Keyword arguments of the main layer's forward for this step."""
    kwargs = {}
    if step.activation is not None:
        act = calls[step.activation].layer
        kwargs.update(activation=act.fusable_activation, negative_slope=act.negative_slope)
    if step.batchnorm is not None:
        kwargs["weight"], kwargs["bias"] = fold_batchnorm(calls[step.position].layer, calls[step.batchnorm].layer)
    if step.pool is not None:
        kwargs["pool"] = calls[step.pool].layer.fusable_as
    if step.keeps_pool is not None:
        kwargs.update(pool=calls[step.keeps_pool].layer.fusable_as, keep_full=True)
    return kwargs


def backward_arguments(step, plan_steps, contexts):
    """Keyword arguments of the main layer's backward for this step; "producer" says that the
    step pool_from names has had its activation undone here."""
    if step.pool_from is None:
        return {}
    ctx = contexts[step.pool_from]
    if not getattr(ctx, "act", None):
        return {}
    return {"activation": ctx.act, "act_output": ctx.y, "negative_slope": ctx.slope, "producer": step.pool_from}


def defers_pool_backward(step, plan_steps, calls, count):
    """Whether this step, a train-mode 2x2 stride-2 AvgPool2D of a convolution's (activated)
    output (pool_from), leaves its backward to that convolution, which then takes the
    pooling's output gradient (ops.conv2d.conv2d_backward_pooled): without an input gradient
    its weight gradient forms dL/d(its output) as it reads it (LeNet-5's conv1), with one the
    pooling's backward writes that gradient in the layout the convolution's backward reads
    (LeNet-5's conv2); one pass over the full-size map less either way."""
    if step.pool_from is None or getattr(calls[step.position].layer, "fusable_as", None) != "avg":
        return False
    producer = plan_steps[step.pool_from]
    return (getattr(calls[producer.position].layer, "takes_pooled_gradient", False)
            and producer.batchnorm is None and producer.add is None)


def activation_deferrals(plan_steps, calls, outputs, count):
    """{plan index of a step: plan index of the step whose activation backward it runs}. A
    layer with takes_input_activation (Dense) whose input is, alone or through a Flatten that
    alone reads it, the activated output of a Conv2D or Dense step (its own activation or a
    fused one; no BatchNorm, pooling or Add in that step) computes its input gradient through
    that activation's backward in the same kernel (ops.dense.dense_backward), and that step
    then takes dL/d(its pre-activation output) (pre_activation): one launch and one pass over
    the gradient less each (LeNet-5: conv3 -> tanh -> Flatten -> dense1, dense1 -> tanh ->
    dense2). Whether the producer has an activation at all is known from its forward context
    (model.backward checks ctx.act)."""
    from .layers.base import WeightedLayer
    readers = _readers(calls, outputs, count)
    producer_of = {step.output: k for k, step in enumerate(plan_steps)}

    def sole_producer(value, position):
        """The plan index of the step writing `value` where the call at `position` alone reads it."""
        return producer_of.get(value) if readers.get(value) == [position] else None

    deferrals = {}
    for k, step in enumerate(plan_steps):
        call = calls[step.position]
        if not getattr(call.layer, "takes_input_activation", False) or step.add is not None or len(call.inputs) != 1:
            continue
        p = sole_producer(call.inputs[0], step.position)
        if p is not None and getattr(calls[plan_steps[p].position].layer, "reshapes_only", False):
            through = calls[plan_steps[p].position]
            p = sole_producer(through.inputs[0], plan_steps[p].position) if len(through.inputs) == 1 else None
        if p is None:
            continue
        producer = plan_steps[p]
        if (isinstance(calls[producer.position].layer, WeightedLayer) and producer.batchnorm is None
                and producer.pool is None and producer.keeps_pool is None and producer.add is None):
            deferrals[k] = p
    return deferrals


def input_residual_steps(plan_steps, calls, count):
    """Plan indices of the steps whose backward adds the gradient their input already has to
    their own input gradient (the layer's input_residual): model.backward runs the steps in
    reverse, the first reader of a value gives it its gradient and each later one adds to it;
    a later reader whose layer has adds_input_residual (Conv2D), that value (not a model
    input, whose gradient a training step does not ask for) as its only input and no deferred
    pooling backward adds it in its kernel (a residual block's first convolution, after the
    shortcut), the others by an add pass (accumulate)."""
    pooled_backward = {step.pool_from for step in plan_steps if defers_pool_backward(step, plan_steps, calls, count)}
    seen, folds = set(), set()
    for k in range(len(plan_steps) - 1, -1, -1):
        layer, inputs = step_call(plan_steps[k], calls, count)
        if (len(inputs) == 1 and inputs[0] >= count and inputs[0] in seen
                and getattr(layer, "adds_input_residual", False) and k not in pooled_backward):
            folds.add(k)
        seen.update(inputs)
    return folds


def step_activation(step, calls):
    """(activation name, negative slope) that a Conv2D or Dense step applies, fused or its
    own, or None: what its forward context's act and slope will say."""
    if step.activation is not None:
        act = calls[step.activation].layer
        return act.fusable_activation, act.negative_slope
    layer = calls[step.position].layer
    if getattr(layer, "activation", None):
        return layer.activation, layer._slope()
    return None


def has_folds(plan_steps, calls):
    """Whether the plan has eval-only fusions (folded BatchNorms, pooled convolutions, Adds run
    into convolutions), whose intermediates a backward pass would need."""
    from .layers.batchnorm import BatchNorm2D
    return any(step.batchnorm is not None or step.pool is not None
               or (step.add is not None and not isinstance(calls[step.position].layer, BatchNorm2D))
               for step in plan_steps)


def fold_batchnorm(conv, bn):
    """(weight, bias) on the device of the convolution that equals conv then bn in eval mode
    (see ops.batchnorm.fold_into_conv_device). Folded at each eval forward from the current
    weights, so it never goes stale; one small kernel, no read-back."""
    from .ops.batchnorm import fold_into_conv_device
    gamma, beta = (bn.params["weight"].data, bn.params["bias"].data) if bn.affine else (None, None)
    return fold_into_conv_device(conv.device, conv.params["weight"].data,
                                 conv.params["bias"].data if conv.bias else None, gamma, beta,
                                 bn.buffers["running_mean"].data, bn.buffers["running_var"].data, bn.eps)


def accumulate(device, total, g):
    """total + g for a value read by several calls (their gradients add up). A new array:
    gradients may be shared between values (Add hands one array to all its inputs)."""
    from .ops.merge import add_forward
    return add_forward(device, [total, g])
