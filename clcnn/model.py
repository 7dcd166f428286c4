"""Model: a graph of layers on one device (any DAG: branches, merges, shared layers), and
Sequential, the chain. Forward, backward, parameters, state_dict, summary, save and load.

Both keep their layer calls as one list of `_Call`s in an order where every call comes after
the calls it reads; a call reads "values": the model inputs first, then each call's output.
Everything else (fusion, running, saving) walks that list.
"""
import math
import types
from collections import namedtuple

import numpy as np
import pyopencl.array as cl_array

from . import fusion
from .device import get_device
from .errors import CheckpointError, DeviceOutOfMemory, NonFiniteError, ShapeError
from .graph import as_tensor_list, topological_order
from .layers.base import Layer
from .ops import elementwise as elementwise_ops
from .parameter import frozen_models
from .replay import ForwardReplay, fill_in_place, private_input
from .serialization import read_archive, write_archive

# One layer call: the layer, the value indices it reads, the name of its output.
_Call = namedtuple("_Call", "layer inputs name")


def _check_input(x, device, what="input"):
    """Device arrays pass through; NumPy floats become float32 device arrays; others refused.
    An empty batch is refused before anything is uploaded."""
    if isinstance(x, cl_array.Array):
        if x.dtype != np.float32:
            raise TypeError(f"{what} must be float32, got a device array of {x.dtype}")
    else:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{what} must be floating point (float32), got {x.dtype}; "
                            "convert it, e.g. images.astype(np.float32) / 255")
    if x.ndim < 2 or x.shape[0] == 0 or 0 in x.shape:
        raise ShapeError(f"{what} must be a non-empty batch (N, ...) with N >= 1, got shape "
                         f"{tuple(x.shape)}; check the data slice or the --limit/--batch-size")
    if isinstance(x, cl_array.Array):
        return x
    try:
        return device.upload(x)
    except DeviceOutOfMemory as exc:
        raise DeviceOutOfMemory(f"{what} of batch size {x.shape[0]}: {exc}") from None


def _check_finite(x, what="input"):
    """NonFiniteError when x (NumPy or device array; the latter is read back) holds NaN/Inf."""
    host = x.get() if isinstance(x, cl_array.Array) else np.asarray(x)
    finite = np.isfinite(host)
    if not finite.all():
        bad = ~finite
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteError(
            f"{what} holds {int(np.isnan(host).sum())} NaN and {int(np.isinf(host).sum())} Inf "
            f"values (first at index {first}); clean or re-normalise the data "
            "(e.g. np.nan_to_num), or pass check_finite=False to skip this check")


class Model:
    """A graph of layers: `Model(inputs, outputs)` from `L.Input` tensors and the tensors that
    layers called on them return (one or a list of each).

        inp = L.Input((1, 28, 28))
        x = L.Conv2D(1, 8, 3, padding=1, name="conv")(inp)
        out = L.Dense(8 * 28 * 28, 10, name="fc")(L.Flatten()(L.ReLU()(x)))
        model = clcnn.Model(inp, out, device=dev)

    `state_dict()` keys are "<layer name>.<param>". A tensor read by several layers gets the
    sum of their gradients; a layer called twice shares its weights (gradients summed).
    """

    def __init__(self, inputs, outputs, device=None, check_finite=False):
        self._single_input = not isinstance(inputs, (list, tuple))
        self._single_output = not isinstance(outputs, (list, tuple))
        inputs = as_tensor_list(inputs, "Model inputs")
        outputs = as_tensor_list(outputs, "Model outputs")
        for tensor in inputs:
            if tensor.node.inputs:
                raise ValueError(f"Model inputs must be L.Input tensors; {tensor.name!r} is the output "
                                 f"of a {type(tensor.node.layer).__name__}")
        nodes = [n for n in topological_order(inputs, outputs) if n.inputs]
        index = {id(t.node): i for i, t in enumerate(inputs)}
        calls = []
        for node in nodes:
            index[id(node)] = len(inputs) + len(calls)
            calls.append(_Call(node.layer, [index[id(t.node)] for t in node.inputs], node.name))
        self.input_shapes = [t.shape for t in inputs]
        self.input_names = [t.name for t in inputs]
        self._setup(calls, [index[id(t.node)] for t in outputs], device, check_finite)

    def _setup(self, calls, outputs, device, check_finite):
        """Shared by Model and Sequential: bind the layers and name their tensors."""
        self._calls = calls
        self._outputs = outputs
        self.device = get_device(device)
        self.training = True
        # check_finite: refuse inputs holding NaN/Inf (costs a host read of device inputs).
        self.check_finite = bool(check_finite)
        self.layers = []
        for call in calls:
            if not any(call.layer is layer for layer in self.layers):
                self.layers.append(call.layer)
        self._keys = self._layer_keys()
        self._named = {}
        for layer in self.layers:
            layer.bind(self.device)
            for pname, tensor in layer.tensors().items():
                self._named[f"{self._keys[id(layer)]}.{pname}"] = tensor
        for name, tensor in self._named.items():
            tensor.claim(self, name)
        self._plans = {}      # (training mode, folds, pools) -> fusion plan
        self._fuse_pools = True   # eval mode: pool inside convolutions (off for intermediate_outputs)
        self.replay = True        # replay recorded eval-mode forward passes (clcnn.replay)
        self._forward_replay = ForwardReplay()
        self._run = None      # what the last forward saved for backward
        self._run_unfilled = []   # its inputs a replay read in place (replay.fill_in_place)
        self._frozen_weights = None   # while frozen: {derivation: (source arrays, derived)} (freeze)
        self._freezes = 0         # freeze() and unfreeze() calls: recorded forwards depend on it

    def _layer_keys(self):
        """id(layer) -> the prefix of its state_dict keys: its name (unique per model)."""
        keys, seen = {}, {}
        for layer in self.layers:
            if layer.name in seen:
                raise ValueError(f"two layers are named {layer.name!r} ({type(seen[layer.name]).__name__} and "
                                 f"{type(layer).__name__}); give each layer its own name=")
            seen[layer.name] = layer
            keys[id(layer)] = layer.name
        return keys

    def _describe(self, position):
        """How errors name call `position`."""
        call = self._calls[position]
        return f"layer {call.name!r} ({type(call.layer).__name__})"

    def _describe_value(self, value):
        count = self._input_count()
        if value < count:
            return "the model input" if count == 1 else f"model input {value}"
        return f"the output of {self._describe(value - count)}"

    def _describe_source(self, value):
        """Short form for shape tables: "model input" or "output of layer 'conv', Conv2D"."""
        count = self._input_count()
        if value < count:
            return "model input" if count == 1 else f"model input {self.input_names[value]!r}"
        call = self._calls[value - count]
        return f"output of layer {self._key_of(value - count)}, {type(call.layer).__name__}"

    def _key_of(self, position):
        return repr(self._calls[position].name)

    def _input_count(self):
        return len(self.input_shapes)

    # -- running -----------------------------------------------------------------------
    def _plan(self, fold=True):
        key = (self.training, fold, self._fuse_pools)
        if key not in self._plans:
            self._plans[key] = fusion.plan(self._calls, self._outputs, self._input_count(),
                                           training=self.training, fold_batchnorm=fold,
                                           fuse_pools=self._fuse_pools)
        return self._plans[key]

    def forward(self, *xs, check_finite=None):
        """The outputs for inputs xs (numpy or device arrays, NCHW float32): one array, or a
        list for a model of several outputs. check_finite (default: the model's setting)
        refuses inputs holding NaN or Inf with NonFiniteError."""
        if len(xs) == 1 and isinstance(xs[0], (list, tuple)):
            xs = tuple(xs[0])
        count = self._input_count()
        if len(xs) != count:
            raise TypeError(f"the model takes {count} input{'s' if count != 1 else ''} "
                            f"({', '.join(self.input_names)}), got {len(xs)}")
        what = ["input"] if count == 1 else [f"input {name!r}" for name in self.input_names]
        if self.check_finite if check_finite is None else check_finite:
            for x, name in zip(xs, what):
                _check_finite(x, name)
        due = None
        if self.replay and not self.training:
            due = self._forward_replay.due(self._forward_replay.signature_of(self, xs))
        if due == "replay":
            outputs = self._forward_replay.replay(self, xs)
            return outputs[0] if self._single_output else outputs
        values = [None] * (count + len(self._calls))
        for i, (x, name) in enumerate(zip(xs, what)):
            values[i] = _check_input(x, self.device, name)
            if due == "record" and values[i] is x:     # the caller's device array: copy it
                values[i] = private_input(self.device, x)

        def plain():
            plan = self._plan()
            self.device.frozen_weights = self._frozen_weights
            try:
                contexts = [self._forward_step(step, values) for step in plan]
            finally:
                self.device.frozen_weights = None
            self._run, self._run_unfilled = (values, contexts, plan), []
            return [values[v] for v in self._outputs]

        outputs = self._forward_replay.record(self, values, plain) if due == "record" else plain()
        return outputs[0] if self._single_output else outputs

    __call__ = forward

    def intermediate_outputs(self, *xs):
        """{layer call name: NumPy array} of every layer call's output for inputs xs, in eval
        mode, in running order (for pictures of feature maps). Calls fused into one kernel
        (conv + BatchNorm + activation) all report the fused result: the values between them are
        never formed. Pooling is not fused here, so a convolution's map keeps its full size."""
        was_training = self.training
        self.eval()
        self._fuse_pools = False
        try:
            self.forward(*xs)
            values, _, plan = self._saved_run()
            return {self._calls[p].name: values[step.output].get()
                    for step in plan for p in (step.position, step.batchnorm, step.add, step.activation)
                    if p is not None}
        finally:
            self._fuse_pools = True
            self.train(was_training)

    def _forward_step(self, step, values):
        layer, inputs = fusion.step_call(step, self._calls, self._input_count())
        xs = [values[v] for v in inputs]
        ctx = types.SimpleNamespace()
        kwargs = fusion.forward_arguments(step, self._calls)
        if step.pooled:
            kwargs["pooled"] = values[step.output]      # written by the producer's step
        try:
            # An out-of-memory error at enqueue time (drivers allocate lazily) gets one
            # retry after the pool frees its cached blocks, then a DeviceOutOfMemory. The
            # message is only made then (a step runs dozens of calls).
            y = self.device.with_memory_retry(
                lambda: f"{self._describe(step.position)} at batch size {xs[0].shape[0]}",
                layer.forward, ctx, *xs, **kwargs)
        except ShapeError as exc:
            name = self._describe(step.position)
            sources = " and ".join(f"{self._describe_value(v)} of shape {tuple(values[v].shape)}"
                                   for v in inputs)
            raise ShapeError(f"{name} cannot take {sources}: {exc}") from None
        except DeviceOutOfMemory as exc:
            if str(exc).startswith("layer "):
                raise
            raise DeviceOutOfMemory(f"{self._describe(step.position)} at batch size {xs[0].shape[0]}: "
                                    f"{exc}") from None
        values[step.output] = y
        if step.keeps_pool is not None:
            values[self._input_count() + step.keeps_pool] = ctx.__dict__.pop("pooled")
        return ctx

    def _saved_run(self):
        """What the last forward saved for backward, its inputs copied in first where a
        replayed forward read them in place."""
        if self._run_unfilled:
            fill_in_place(self.device.queue, self._run_unfilled)
            self._run_unfilled = []
        return self._run

    def backward(self, gy, need_input_grad=True):
        """Back-propagate dL/dy (a list for a model of several outputs); writes every
        parameter's .grad and returns dL/dx (a list for several inputs; None when
        need_input_grad is False, which saves the first layers' input-gradient passes)."""
        gys = list(gy) if isinstance(gy, (list, tuple)) else [gy]
        gys = [_check_input(g, self.device, "output gradient") for g in gys]
        if self._run is None:
            raise RuntimeError("backward() needs a forward() first: call model(x), then "
                               "model.backward(dL/dy)")
        if len(gys) != len(self._outputs):
            raise TypeError(f"backward takes one gradient per model output ({len(self._outputs)}), got {len(gys)}")
        values, contexts, plan = self._saved_run()
        count = self._input_count()
        if fusion.has_folds(plan, self._calls):
            # Eval-mode forward folded BatchNorm into convolutions, whose backward needs the
            # unfolded intermediates: run the forward again without folding (rare: gradients
            # in eval mode), same inputs, same results up to rounding.
            plan = self._plan(fold=False)
            contexts = [self._forward_step(step, values) for step in plan]
        grads = [None] * len(values)
        for v, g in zip(self._outputs, gys):
            if tuple(g.shape) != tuple(values[v].shape):
                raise ShapeError(f"output gradient has shape {tuple(g.shape)}, the output {tuple(values[v].shape)}")
            grads[v] = g if grads[v] is None else grads[v] + g
        for param in self.parameters():
            param._fresh = True
        pre_activation = set()
        pooled = {}         # plan index of a convolution -> the gradient of the pooling it defers to
        input_activations = fusion.activation_deferrals(plan, self._calls, self._outputs, count)
        residual_steps = fusion.input_residual_steps(plan, self._calls, count)
        for k in range(len(plan) - 1, -1, -1):
            step, ctx = plan[k], contexts[k]
            g = grads[step.output]
            if g is None and k not in pooled:
                continue     # nothing downstream of this step reaches an output
            grads[step.output] = None
            layer, inputs = fusion.step_call(step, self._calls, count)
            if fusion.defers_pool_backward(step, plan, self._calls, count):
                pooled[step.pool_from] = g
                continue
            needed = need_input_grad or any(v >= count for v in inputs)
            if k in pooled:
                g = pooled.pop(k)
                run, kwargs = layer.backward_pooled, {}
            else:
                run, kwargs = layer.backward, fusion.backward_arguments(step, plan, contexts)
                producer = kwargs.pop("producer", None)
                if producer is not None:
                    pre_activation.add(producer)
                if k in pre_activation:
                    kwargs["pre_activation"] = True
                producer = input_activations.get(k)
                if producer is not None and contexts[producer].act:
                    kwargs.update(input_activation=contexts[producer].act, input_slope=contexts[producer].slope)
                    pre_activation.add(producer)
                # An input that already has a gradient from its other readers (a residual
                # block's input, after the shortcut): the layer adds it to its own as it
                # stores (one pass less than fusion.accumulate).
                if k in residual_steps and grads[inputs[0]] is not None:
                    kwargs["input_residual"] = grads[inputs[0]]
                    grads[inputs[0]] = None
            gxs = self.device.with_memory_retry(
                lambda: f"the backward pass of {self._describe(step.position)} at batch size {g.shape[0]}",
                run, ctx, g, need_input_grad=needed, **kwargs)
            if layer.arity == 1 and len(inputs) == 1:
                gxs = [gxs]
            for v, gx in zip(inputs, gxs):
                if gx is None or (v < count and not need_input_grad):
                    continue
                grads[v] = gx if grads[v] is None else fusion.accumulate(self.device, grads[v], gx)
        for param in self.parameters():
            if param._fresh:       # not reached by this backward pass: its gradient is zero
                elementwise_ops.fill(self.device, param.grad)
                param._fresh = False
        if not need_input_grad:
            return None
        inputs = [grads[i] for i in range(count)]
        return inputs[0] if self._single_input else inputs

    def train(self, mode=True):
        """Train mode (mode True; unfreezes the model) or eval mode."""
        self.training = bool(mode)
        for layer in self.layers:
            layer.training = self.training
        if self.training:
            self.unfreeze()
        return self

    def eval(self):
        return self.train(False)

    def freeze(self):
        """Eval mode for inference with fixed weights: what an eval forward derives from the
        weights alone (BatchNorms folded into convolutions, weights packed for the kernels,
        Winograd-transformed weights) is made at the next forward and kept, not made again at
        every call (ResNet-50 at batch 1 spends about a third of its kernel time on it).
        The weights must not change while frozen: train(), load_state_dict(), optimizer steps
        and Parameter.set_value unfreeze the model themselves; after writing a Parameter's
        .data on the device in any other way, call unfreeze() (or freeze() again)."""
        self.eval()
        self._frozen_weights = {}
        self._freezes += 1
        frozen_models.add(self)
        return self

    def unfreeze(self):
        """Drop what freeze() kept; each eval forward derives from the current weights again."""
        if self._frozen_weights is not None:
            self._frozen_weights = None
            self._freezes += 1
            frozen_models.discard(self)
        return self

    @property
    def frozen(self):
        return self._frozen_weights is not None

    # -- parameters -----------------------------------------------------------------------
    def parameters(self):
        """The trainable parameters (a layer called twice counts once)."""
        return [p for p in self._named.values() if p.trainable]

    def named_layers(self):
        """{name: layer} (a Sequential's names are its indices; a repeated layer counts once)."""
        return {self._keys[id(layer)]: layer for layer in self.layers}

    def named_tensors(self):
        """{state_dict key: Parameter} of parameters and buffers."""
        return dict(self._named)

    def state_dict(self):
        return {name: p.value() for name, p in self._named.items()}

    def load_state_dict(self, state, strict=True):
        """Set parameters and buffers from {key: array}. Every key and shape is checked before
        anything is written, so a bad entry leaves the model as it was. strict=False skips
        missing and unexpected keys (e.g. to load a backbone)."""
        missing = sorted(set(self._named) - set(state))
        unexpected = sorted(set(state) - set(self._named))
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict does not fit this model: missing {missing}, unexpected {unexpected}")
        checked = {}
        for name, param in self._named.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if tuple(value.shape) != param.shape:
                raise ShapeError(f"state_dict entry {name!r} has shape {tuple(value.shape)}, "
                                 f"the model's parameter has {param.shape}")
            if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
                raise TypeError(f"state_dict entry {name!r} holds {value.dtype}, not real numbers")
            checked[name] = value
        for name, value in checked.items():
            self._named[name].set_value(value)

    # -- description ----------------------------------------------------------------------
    def _shapes(self, input_shapes):
        """Per-sample shape of every value; ShapeError names the layer that breaks."""
        shapes = [tuple(s) for s in input_shapes]
        for position, call in enumerate(self._calls):
            ins = [shapes[v] for v in call.inputs]
            try:
                shapes.append(tuple(call.layer.output_shape(*ins)))
            except ShapeError as exc:
                sources = " and ".join(f"{ins[j]} ({self._describe_source(v)})" for j, v in enumerate(call.inputs))
                raise ShapeError(f"{self._describe(position)} cannot take input {sources}: {exc}") from None
        return shapes

    def output_shapes(self, input_shape=None):
        """Per-sample output shape of each layer call, in running order."""
        shapes = self.input_shapes if input_shape is None else [input_shape]
        return self._shapes(shapes)[self._input_count():]

    def _summary_rows(self, shapes):
        count = self._input_count()
        rows = [("name", "layer", "inputs", "output shape", "params")]
        for i, (name, shape) in enumerate(zip(self.input_names, shapes)):
            rows.append((name, "Input", "", "x".join(map(str, shape)), "0"))
        seen = set()
        for position, call in enumerate(self._calls):
            params = sum(math.prod(p.shape) for p in call.layer.parameters()) if id(call.layer) not in seen else 0
            seen.add(id(call.layer))
            inputs = ", ".join(self.input_names[v] if v < count else self._calls[v - count].name for v in call.inputs)
            rows.append((call.name, repr(call.layer), inputs, "x".join(map(str, shapes[count + position])),
                         f"{params:,}"))
        return rows

    def summary(self, input_shape=None, print_fn=print):
        """Print and return a table of layer, inputs, output shape and parameter count."""
        inputs = self.input_shapes if input_shape is None else [tuple(input_shape)]
        rows = self._summary_rows(self._shapes(inputs))
        total = sum(math.prod(p.shape) for p in self.parameters())
        columns = len(rows[0])
        widths = [max(len(r[c]) for r in rows) for c in range(columns)]
        lines = ["  ".join(cell.ljust(w) if c < columns - 1 else cell.rjust(w)
                           for c, (cell, w) in enumerate(zip(row, widths))) for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines += ["-" * len(lines[0]), f"input {', '.join('x'.join(map(str, s)) for s in inputs)}; "
                  f"total parameters: {total:,}"]
        text = "\n".join(lines)
        if print_fn:
            print_fn(text)
        return text

    def __repr__(self):
        inner = "\n".join(f"  ({call.name}): {call.layer!r}" for call in self._calls)
        return f"{type(self).__name__}(\n{inner}\n)"

    # -- files ----------------------------------------------------------------------------
    def architecture(self):
        """The graph as plain JSON-able data (layer types, settings, connections)."""
        count = self._input_count()
        value_names = list(self.input_names) + [call.name for call in self._calls]
        return {"graph": {
            "inputs": [{"name": n, "shape": list(s)} for n, s in zip(self.input_names, self.input_shapes)],
            "layers": [{"name": layer.name, "type": type(layer).__name__, "config": layer.config()}
                       for layer in self.layers],
            "calls": [{"layer": call.layer.name, "inputs": [value_names[v] for v in call.inputs]}
                      for call in self._calls],
            "outputs": [value_names[v] for v in self._outputs],
            "single_input": self._single_input, "single_output": self._single_output}}

    def save(self, path, metadata=None):
        """Write architecture and weights (and `metadata`, a JSON-able dict such as the
        preprocessing and class names) to path, atomically; no pickle."""
        header = {"architecture": self.architecture()}
        if metadata is not None:
            header["metadata"] = metadata
        write_archive(path, header, {f"param/{k}": v for k, v in self.state_dict().items()})


class Sequential(Model):
    """Layers applied in order. Parameters are named "<index>.<name>" as torch.nn.Sequential
    names them, so state dicts move between the two. The same layer object at two places
    shares its weights (named after its first place; gradients summed).

    A Conv2D or Dense followed by an elementwise activation layer runs as one fused kernel;
    the layer list (and so the names) stays as written.
    """

    def __init__(self, layers, device=None, check_finite=False):
        if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
            raise TypeError("Sequential takes a list of layers, e.g. Sequential([L.Conv2D(1, 6, 5), L.ReLU()])")
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for index, layer in enumerate(layers):
            if isinstance(layer, type) and issubclass(layer, Layer):
                raise TypeError(f"Sequential layer {index} is the class {layer.__name__}, not a layer: "
                                f"write {layer.__name__}(...) with parentheses")
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential layer {index} is {type(layer).__name__} {layer!r}, not a "
                                "layer: pass layer objects such as L.ReLU()")
            if layer.arity != 1:
                raise TypeError(f"Sequential layer {index} ({type(layer).__name__}) takes several inputs; "
                                "build a clcnn.Model for branches and merges")
        self._sequence = layers
        self.input_shapes, self.input_names = [None], ["input"]
        self._single_input = self._single_output = True
        calls = [_Call(layer, [index], str(index)) for index, layer in enumerate(layers)]
        self._setup(calls, [len(layers)], device, check_finite)
        self.layers = layers          # as written, repeats included (torch's indexing)

    def _layer_keys(self):
        keys = {}
        for index, layer in enumerate(self._sequence):
            keys.setdefault(id(layer), str(index))
        return keys

    def _describe(self, position):
        return f"layer {position} ({type(self._sequence[position]).__name__})"

    def _key_of(self, position):
        return str(position)

    def output_shapes(self, input_shape):
        return self._shapes([input_shape])[1:]

    def summary(self, input_shape, print_fn=print):
        return super().summary(input_shape, print_fn)

    def _summary_rows(self, shapes):
        rows = [("#", "layer", "output shape", "params")]
        seen = set()
        for index, layer in enumerate(self._sequence):
            count = sum(math.prod(p.shape) for p in layer.parameters()) if id(layer) not in seen else 0
            seen.add(id(layer))
            rows.append((str(index), repr(layer), "x".join(map(str, shapes[index + 1])), f"{count:,}"))
        return rows

    def architecture(self):
        """[{"type", "config"}, ...]; a layer repeated from index j is {"same_as": j}."""
        arch, first = [], {}
        for index, layer in enumerate(self._sequence):
            if id(layer) in first:
                arch.append({"same_as": first[id(layer)]})
            else:
                first[id(layer)] = index
                arch.append({"type": type(layer).__name__, "config": layer.config()})
        return arch


def architecture(model):
    return model.architecture()


def _build_layer(entry, where):
    from .layers import LAYER_TYPES
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: expected an object with 'type' and 'config', got {type(entry).__name__}")
    cls = LAYER_TYPES.get(entry.get("type"))
    if cls is None:
        raise CheckpointError(f"{where}: unknown layer type {entry.get('type')!r}")
    config = entry.get("config", {})
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} ({cls.__name__}): its config is not an object")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    if "name" in entry:
        config["name"] = entry["name"]
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where} ({cls.__name__}): bad settings in the file: {exc}") from None


def from_architecture(arch, device=None):
    """The model that `architecture()` described (fresh weights)."""
    if isinstance(arch, list):
        if not arch:
            raise CheckpointError("the architecture holds no layers")
        layers = []
        for index, entry in enumerate(arch):
            if isinstance(entry, dict) and "same_as" in entry:
                j = entry["same_as"]
                if not isinstance(j, int) or not 0 <= j < index:
                    raise CheckpointError(f"layer {index}: 'same_as' must name an earlier layer, got {j!r}")
                layers.append(layers[j])
            else:
                layers.append(_build_layer(entry, f"layer {index}"))
        return Sequential(layers, device=device)
    if not isinstance(arch, dict) or not isinstance(arch.get("graph"), dict):
        raise CheckpointError(f"the architecture must be a list of layers or a graph, got {type(arch).__name__}")
    return _graph_from_architecture(arch["graph"], device)


def _graph_from_architecture(graph, device):
    from .layers import Input
    try:
        tensors = {}
        inputs = []
        for entry in graph["inputs"]:
            tensors[entry["name"]] = Input(tuple(entry["shape"]), name=entry["name"])
            inputs.append(tensors[entry["name"]])
        layers = {}
        for entry in graph["layers"]:
            if entry.get("name") in layers:
                raise CheckpointError(f"two layers are named {entry.get('name')!r}")
            layers[entry.get("name")] = _build_layer(entry, f"layer {entry.get('name')!r}")
        for entry in graph["calls"]:
            layer = layers[entry["layer"]]
            args = [tensors[name] for name in entry["inputs"]]
            out = layer(args if layer.arity != 1 else args[0])
            tensors[out.name] = out
        outputs = [tensors[name] for name in graph["outputs"]]
        single_in, single_out = graph.get("single_input", True), graph.get("single_output", True)
    except CheckpointError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"the graph description is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    except (ShapeError, ValueError) as exc:
        raise CheckpointError(f"the graph does not build: {exc}") from None
    return Model(inputs[0] if single_in and len(inputs) == 1 else inputs,
                 outputs[0] if single_out and len(outputs) == 1 else outputs, device=device)


def load(path, device=None):
    """The model saved at path (architecture and weights) on device."""
    header, arrays = read_archive(path)
    if "architecture" not in header:
        raise CheckpointError(f"{path}: holds no model architecture")
    arch = header["architecture"]
    entries = arch if isinstance(arch, list) else [arch]
    if not all(isinstance(entry, dict) for entry in entries):
        raise CheckpointError(f"{path}: corrupt header: 'architecture' is not a model description "
                              f"(got {type(arch).__name__}); use a file written by model.save or clcnn train")
    if not isinstance(header.get("metadata", {}), dict):
        raise CheckpointError(f"{path}: corrupt header: 'metadata' must be an object, "
                              f"got {type(header['metadata']).__name__}")
    try:
        model = from_architecture(arch, device=device)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (AttributeError, TypeError, KeyError, IndexError) as exc:   # a well-formed header of nonsense
        raise CheckpointError(f"{path}: corrupt header: 'architecture' is not a model description "
                              f"({type(exc).__name__}: {exc})") from None
    load_weights(model, arrays, path)
    return model


def load_weights(model, arrays, path):
    state = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise CheckpointError(f"{path}: weights do not fit the model: {message}") from None
