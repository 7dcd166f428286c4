"""ONNX graph -> clcnn.Model.

Every ONNX value becomes either a constant (a NumPy array: initializers, Constant nodes and
any node whose inputs are all constants or static shapes, folded at load time with onnx's
reference evaluator) or a symbolic clcnn tensor (per-sample shape, no batch axis). Each node
on symbolic tensors maps onto clcnn layers; its weights must be constants. A constant
per-channel Mul/Add/Sub/Div right after a BatchNorm, Conv or Dense that nothing else reads is
folded into that layer's weights (Caffe2's Scale after BatchNorm in Inception v2 and
DenseNet). Files older than opset 13 are upgraded with onnx.version_converter first, so the
handlers read opset 13+ semantics.
"""
import json
import math
import re

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from .. import layers as L
from ..errors import CheckpointError, ShapeError
from ..model import Model
from . import ONNXError

BASE_OPSET = 13
FLOAT = onnx.TensorProto.FLOAT


def read_model(path):
    """(ModelProto upgraded to opset >= 13, the file's own opset); errors name the file."""
    try:
        proto = onnx.load(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as exc:     # protobuf's DecodeError and friends
        raise CheckpointError(f"{path}: not a readable ONNX file, truncated or corrupt "
                              f"({type(exc).__name__}: {exc}); export it again") from None
    if not proto.graph.node and not proto.graph.output:
        raise CheckpointError(f"{path}: not an ONNX model (empty graph); the file may be truncated or corrupt")
    opset = _opset(proto)
    if opset < BASE_OPSET:
        try:
            proto = version_converter.convert_version(proto, BASE_OPSET)
        except Exception as exc:
            raise ONNXError(f"{path}: onnx's version converter cannot upgrade opset {opset} to {BASE_OPSET} "
                            f"({type(exc).__name__}: {exc}); export the model again at opset {BASE_OPSET} or newer") from None
    return proto, opset


def _opset(proto):
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def read_metadata(path):
    proto = onnx.load(str(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == "clcnn":
            try:
                meta = json.loads(prop.value)
            except ValueError:
                raise CheckpointError(f"{path}: its 'clcnn' metadata is not JSON") from None
            return meta if isinstance(meta, dict) else {}
    return {}


def load_model(path, device=None):
    proto, opset = read_model(path)
    builder = _Builder(proto, path, opset)
    return builder.build(device)


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


class _Builder:
    def __init__(self, proto, path, file_opset):
        self.proto, self.path = proto, path
        self.graph = proto.graph
        self.opset = _opset(proto)
        self.consts = {}       # value name -> np.ndarray
        self.tensors = {}      # value name -> symbolic clcnn Tensor
        self.owner = {}        # value name -> layer whose (unactivated) output it is, for folds
        self.state = {}        # state_dict of the model being built
        self.names = set()
        self.reads = {}        # value name -> how many node inputs and graph outputs read it
        for node in self.graph.node:
            for name in node.input:
                self.reads[name] = self.reads.get(name, 0) + 1
        for out in self.graph.output:
            self.reads[out.name] = self.reads.get(out.name, 0) + 1
        self.batch = 1
        # Before opset 7, PRelu's 1-D slope was per channel, not broadcast from the last axis.
        self.legacy_prelu = file_opset < 7

    # -- values -------------------------------------------------------------------------
    def where(self, node):
        return f"{self.path}: node {node.name or node.output[0]!r} ({node.op_type})"

    def refuse(self, node, what, attribute=None):
        attr = f" attribute {attribute}:" if attribute else ""
        raise ONNXError(f"{self.where(node)}:{attr} {what}")

    def is_const(self, name):
        return name == "" or name in self.consts

    def const(self, node, index, what="input"):
        """Input `index` of node as a constant array; it must be computable at load time."""
        name = node.input[index] if index < len(node.input) else ""
        if name == "":
            return None
        if name not in self.consts:
            self.refuse(node, f"its {what} {name!r} must be a constant (an initializer or computed from them); "
                        "clcnn folds only values known at load time")
        return self.consts[name]

    def weight(self, node, index, what):
        value = self.const(node, index, what)
        if value is not None and value.dtype != np.float32:
            self.refuse(node, f"its {what} {node.input[index]!r} is {value.dtype}; clcnn runs float32 tensors only")
        return value

    def sym(self, node, index=0):
        name = node.input[index]
        if name not in self.tensors:
            if name in self.consts:
                self.refuse(node, f"input {name!r} is a constant where clcnn needs a computed tensor")
            self.refuse(node, f"input {name!r} is not produced by any node or graph input")
        return self.tensors[name]

    def full(self, tensor):
        return (self.batch,) + tuple(tensor.shape)

    def name_for(self, node):
        raw = node.name or node.output[0] or node.op_type.lower()
        base = re.sub(r"[/:\s]", "_", raw) or node.op_type.lower()
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def call(self, node, layer, inputs, owner=False):
        """Apply layer to inputs; layer errors become errors naming the node."""
        try:
            out = layer(inputs)
        except (ShapeError, ValueError, TypeError) as exc:
            self.refuse(node, f"clcnn cannot apply it: {exc}")
        if owner:
            self.owner[node.output[0]] = layer
        return out

    def make(self, node, cls, *args, **kwargs):
        try:
            return cls(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            self.refuse(node, f"clcnn's {cls.__name__} does not take these settings: {exc}")

    # -- the graph ----------------------------------------------------------------------
    def build(self, device):
        for init in self.graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        inputs = []
        for value in self.graph.input:
            if value.name in self.consts:
                continue       # old files list initializers among the inputs
            inputs.append(self.graph_input(value))
        if not inputs:
            raise ONNXError(f"{self.path}: the graph has no inputs besides constants; nothing to run")
        for node in self.graph.node:
            self.convert(node)
        outputs = []
        for value in self.graph.output:
            if value.name not in self.tensors:
                raise ONNXError(f"{self.path}: graph output {value.name!r} is a constant; clcnn models compute "
                                "their outputs from their inputs")
            outputs.append(self.tensors[value.name])
        try:
            model = Model(inputs[0] if len(inputs) == 1 else inputs,
                          outputs[0] if len(outputs) == 1 else outputs, device=device)
        except (ValueError, TypeError) as exc:
            raise ONNXError(f"{self.path}: the graph does not make a clcnn model: {exc}") from None
        model.load_state_dict(self.state)
        return model.eval()

    def graph_input(self, value):
        kind = value.type.tensor_type
        if not value.type.HasField("tensor_type") or kind.elem_type != FLOAT:
            raise ONNXError(f"{self.path}: graph input {value.name!r} is of type "
                            f"{onnx.TensorProto.DataType.Name(kind.elem_type)}; clcnn runs float32 tensors only")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
        if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
            shown = [d.dim_param or d.dim_value for d in kind.shape.dim]
            raise ONNXError(f"{self.path}: graph input {value.name!r} has shape {shown}; clcnn needs a batch axis "
                            "then static sizes, e.g. [N, 3, 224, 224]")
        if dims[0]:
            self.batch = dims[0]
        name = re.sub(r"[/:\s]", "_", value.name) or "input"
        self.names.add(name)
        tensor = L.Input(tuple(dims[1:]), name=name)
        self.tensors[value.name] = tensor
        return tensor

    def convert(self, node):
        if node.domain not in ("", "ai.onnx"):
            self.refuse(node, f"operators of domain {node.domain!r} are not supported; clcnn reads the standard "
                        "ONNX operators only")
        attrs = _attrs(node)
        if node.op_type == "Shape" and node.input[0] in self.tensors:
            shape = np.array(self.full(self.tensors[node.input[0]]), np.int64)
            start, end = attrs.get("start", 0), attrs.get("end", None)
            self.consts[node.output[0]] = shape[start:end]
            return
        handler = _HANDLERS.get(node.op_type)
        if all(self.is_const(name) for name in node.input) and node.op_type not in _NEVER_FOLD:
            self.fold(node)
            return
        if handler is None:
            self.refuse(node, "this operator is not supported by clcnn (supported: "
                        f"{', '.join(sorted(_HANDLERS))}, and anything computable from constants)")
        result = handler(self, node, attrs)
        outputs = result if isinstance(result, list) else [result]
        used = [name for name in node.output[len(outputs):] if name and self.reads.get(name)]
        if used:
            self.refuse(node, f"its output {used[0]!r} is used; clcnn computes only the first "
                        f"{len(outputs)} output{'s' if len(outputs) > 1 else ''} of {node.op_type}")
        for name, out in zip(node.output, outputs):
            self.tensors[name] = out

    def fold(self, node):
        from onnx.reference import ReferenceEvaluator
        feeds = {name: self.consts[name] for name in node.input if name}
        try:
            results = ReferenceEvaluator(node).run(None, feeds)
        except Exception as exc:
            self.refuse(node, f"cannot be computed at load time from its constant inputs ({type(exc).__name__}: {exc})")
        for name, value in zip(node.output, results):
            if name:
                self.consts[name] = np.asarray(value)

    # -- folds of constant per-channel arithmetic into the producing layer ------------
    def channel_vector(self, tensor, value):
        """value (a constant) as a per-channel vector of tensor, or None when it is not one."""
        shape = tuple(tensor.shape)
        value = np.asarray(value)
        if value.ndim > len(shape) + 1:
            return None
        padded = value.reshape((1,) * (len(shape) + 1 - value.ndim) + value.shape)
        if padded.shape[0] != 1 or any(n not in (1,) for n in padded.shape[2:]):
            return None
        if padded.shape[1] not in (1, shape[0]):
            return None
        return np.broadcast_to(padded.reshape(-1), (shape[0],)).astype(np.float32)

    def try_fold(self, node, x_name, value, op):
        """Fold `x op value` (op "mul" or "add") into the layer that made x; True when done."""
        layer = self.owner.get(x_name)
        if layer is None or self.reads.get(x_name, 0) != 1 or value.dtype != np.float32:
            return False
        tensor = self.tensors[x_name]
        vec = self.channel_vector(tensor, value)
        if vec is None:
            return False
        key = layer.name
        if isinstance(layer, L.BatchNorm2D):
            if op == "mul":
                self.state[f"{key}.weight"] = self.state[f"{key}.weight"] * vec
                self.state[f"{key}.bias"] = self.state[f"{key}.bias"] * vec
            else:
                self.state[f"{key}.bias"] = self.state[f"{key}.bias"] + vec
        elif isinstance(layer, (L.Conv2D, L.Dense)):
            if not layer.bias:           # not yet bound: give it a bias of zeros
                layer.bias = True
                layer.reset_parameters()
                self.state[f"{key}.bias"] = np.zeros(vec.shape, np.float32)
            if op == "mul":
                w = self.state[f"{key}.weight"]
                self.state[f"{key}.weight"] = w * vec.reshape((-1,) + (1,) * (w.ndim - 1))
                self.state[f"{key}.bias"] = self.state[f"{key}.bias"] * vec
            else:
                self.state[f"{key}.bias"] = self.state[f"{key}.bias"] + vec
        else:
            return False
        self.owner[node.output[0]] = layer
        self.tensors[node.output[0]] = tensor
        return True


# -- operator handlers: (builder, node, attributes) -> output tensor(s) --------------------

def _pads_2d(g, node, a, in_hw, kernel, strides, dilations):
    """(top, bottom, left, right) from pads / auto_pad for a static input size."""
    auto = _decode(a.get("auto_pad", "NOTSET"))
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or min(pads) < 0:
            g.refuse(node, f"pads={pads} is not 4 non-negative values of a 2-D window", "pads")
        return (pads[0], pads[2], pads[1], pads[3])
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        g.refuse(node, f"auto_pad={auto!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID", "auto_pad")
    out = []
    for n, k, s, d in zip(in_hw, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        out += [small, big] if auto == "SAME_UPPER" else [big, small]
    return tuple(out)


def _spatial(g, node, a, x, name, default):
    value = list(a.get(name, default))
    if len(value) != 2:
        g.refuse(node, f"{name}={value}: clcnn runs 2-D windows on NCHW input only", name)
    return tuple(value)


def _require_4d(g, node, x):
    if len(x.shape) != 3:
        g.refuse(node, f"input of shape {list(g.full(x))}: clcnn runs 2-D convolution and pooling on "
                 "NCHW (4-D) tensors only")


def _conv(g, node, a):
    x = g.sym(node, 0)
    w = g.weight(node, 1, "weight")
    b = g.weight(node, 2, "bias")
    if w.ndim != 4:
        g.refuse(node, f"a weight of shape {list(w.shape)}: clcnn runs 2-D convolutions (4-D weights) only")
    _require_4d(g, node, x)
    kernel = tuple(w.shape[2:])
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != kernel:
        g.refuse(node, f"kernel_shape={list(a['kernel_shape'])} disagrees with the weight {list(w.shape)}",
                 "kernel_shape")
    strides = _spatial(g, node, a, x, "strides", [1, 1])
    dilations = _spatial(g, node, a, x, "dilations", [1, 1])
    pads = _pads_2d(g, node, a, x.shape[1:], kernel, strides, dilations)
    groups = a.get("group", 1)
    layer = g.make(node, L.Conv2D, x.shape[0], w.shape[0], kernel, stride=strides, padding=pads,
                   dilation=dilations, groups=groups, bias=b is not None, name=g.name_for(node))
    if w.shape[1] * groups != x.shape[0]:
        g.refuse(node, f"weight {list(w.shape)} with group={groups} does not fit {x.shape[0]} input channels", "group")
    g.state[f"{layer.name}.weight"] = w
    if b is not None:
        g.state[f"{layer.name}.bias"] = b
    return g.call(node, layer, x, owner=True)


def _batchnorm(g, node, a):
    x = g.sym(node, 0)
    if a.get("training_mode", 0):
        g.refuse(node, "training_mode=1: clcnn imports the inference form (export in eval mode)", "training_mode")
    _require_4d(g, node, x)
    scale, bias, mean, var = (g.weight(node, i, what) for i, what in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    momentum = 1.0 - float(a.get("momentum", 0.9))
    layer = g.make(node, L.BatchNorm2D, x.shape[0], eps=float(a.get("epsilon", 1e-5)),
                   momentum=min(max(momentum, 0.0), 1.0), name=g.name_for(node))
    key = layer.name
    g.state.update({f"{key}.weight": scale, f"{key}.bias": bias, f"{key}.running_mean": mean,
                    f"{key}.running_var": var, f"{key}.num_batches_tracked": np.zeros((), np.int64)})
    return g.call(node, layer, x, owner=True)


def _simple(cls):
    def handler(g, node, a):
        return g.call(node, g.make(node, cls, name=g.name_for(node)), g.sym(node, 0))
    return handler


def _leaky(g, node, a):
    return g.call(node, g.make(node, L.LeakyReLU, float(a.get("alpha", 0.01)), name=g.name_for(node)), g.sym(node, 0))


def _clip(g, node, a):
    x = g.sym(node, 0)
    lo, hi = g.const(node, 1, "min"), g.const(node, 2, "max")
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    if lo == 0 and hi == 6:
        return g.call(node, L.ReLU6(name=g.name_for(node)), x)
    if lo == 0 and hi is None:
        return g.call(node, L.ReLU(name=g.name_for(node)), x)
    return g.call(node, g.make(node, L.Clip, lo, hi, name=g.name_for(node)), x)


def _softmax(g, node, a):
    x = g.sym(node, 0)
    rank = len(x.shape) + 1
    axis = a.get("axis", -1)
    if not -rank <= axis < rank or axis % rank == 0:
        g.refuse(node, f"axis={axis} on a tensor of shape {list(g.full(x))}: clcnn normalises along an axis "
                 "after the batch axis", "axis")
    cls = L.Softmax if node.op_type == "Softmax" else L.LogSoftmax
    return g.call(node, g.make(node, cls, axis=axis % rank, name=g.name_for(node)), x)


def _pool(kind):
    def handler(g, node, a):
        x = g.sym(node, 0)
        _require_4d(g, node, x)
        kernel = _spatial(g, node, a, x, "kernel_shape", [])
        strides = _spatial(g, node, a, x, "strides", [1, 1])
        if tuple(a.get("dilations", [1, 1])) != (1, 1):
            g.refuse(node, f"dilations={list(a['dilations'])}: clcnn pools without dilation", "dilations")
        if a.get("storage_order", 0):
            g.refuse(node, "storage_order=1 is not supported", "storage_order")
        top, bottom, left, right = _pads_2d(g, node, a, x.shape[1:], kernel, strides, (1, 1))
        include = bool(a.get("count_include_pad", 0))
        if a.get("ceil_mode", 0):
            extra = []
            for n, k, s, before, after in zip(x.shape[1:], kernel, strides, (top, left), (bottom, right)):
                out = math.ceil((n + before + after - k) / s) + 1
                if (out - 1) * s >= n + before:       # a last window wholly in the padding is dropped
                    out -= 1
                extra.append(max((out - 1) * s + k - (n + before + after), 0))
            if any(extra):
                if kind == "avg" and include and (top, bottom, left, right) != (0, 0, 0, 0):
                    g.refuse(node, "ceil_mode=1 with count_include_pad=1 and padding: the windows that hang over "
                             "the padded input divide by a count clcnn cannot express", "ceil_mode")
                include = False if kind == "avg" and (top, bottom, left, right) == (0, 0, 0, 0) else include
                bottom, right = bottom + extra[0], right + extra[1]
        if kind == "max" and (bottom > kernel[0] // 2 or right > kernel[1] // 2):
            # clcnn's pools pad at most half a window: the ceil_mode overhang goes in a -inf Pad first.
            extra_h, extra_w = max(bottom - kernel[0] // 2, 0), max(right - kernel[1] // 2, 0)
            x = g.call(node, g.make(node, L.Pad, (0, extra_h, 0, extra_w), value=float("-inf"),
                                    name=g.name_for(node) + "_ceil_pad"), x)
            bottom, right = bottom - extra_h, right - extra_w
        name = g.name_for(node)
        if kind == "max":
            layer = g.make(node, L.MaxPool2D, kernel, stride=strides, padding=(top, bottom, left, right), name=name)
        else:
            layer = g.make(node, L.AvgPool2D, kernel, stride=strides, padding=(top, bottom, left, right),
                           count_include_pad=include, name=name)
        return g.call(node, layer, x)
    return handler


def _global(cls):
    def handler(g, node, a):
        x = g.sym(node, 0)
        _require_4d(g, node, x)
        return g.call(node, cls(name=g.name_for(node)), x)
    return handler


def _dense(g, node, x, w, b):
    """A Dense layer of weight w (out, in) and bias b (or None) on the 2-D tensor x."""
    if len(x.shape) != 1:
        g.refuse(node, f"input of shape {list(g.full(x))}: clcnn's Dense takes (N, K) input")
    layer = g.make(node, L.Dense, w.shape[1], w.shape[0], bias=b is not None, name=g.name_for(node))
    g.state[f"{layer.name}.weight"] = np.ascontiguousarray(w, np.float32)
    if b is not None:
        g.state[f"{layer.name}.bias"] = np.ascontiguousarray(b, np.float32)
    return g.call(node, layer, x, owner=True)


def _gemm(g, node, a):
    x = g.sym(node, 0)
    if a.get("transA", 0):
        g.refuse(node, "transA=1 would move the batch axis; clcnn takes the activations as (N, K)", "transA")
    w = g.weight(node, 1, "B")
    c = g.weight(node, 2, "C")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    w = (w if a.get("transB", 0) else w.T) * np.float32(alpha)
    b = None
    if c is not None:
        if c.size not in (1, w.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
            g.refuse(node, f"C of shape {list(c.shape)}: clcnn takes a bias of one value per output", "C")
        b = np.broadcast_to(c.reshape(-1), (w.shape[0],)) * np.float32(beta)
    return _dense(g, node, x, w, b)


def _matmul(g, node, a):
    x = g.sym(node, 0)
    w = g.weight(node, 1, "right-hand side")
    if w.ndim != 2:
        g.refuse(node, f"a right-hand side of shape {list(w.shape)}: clcnn runs MatMul as Dense (a 2-D constant)")
    return _dense(g, node, x, w.T, None)


def _flatten(g, node, a):
    x = g.sym(node, 0)
    axis = a.get("axis", 1) % (len(x.shape) + 1)
    if axis == 1:
        return g.call(node, L.Flatten(name=g.name_for(node)), x)
    return _reshape_to(g, node, x, (int(np.prod(x.shape[:axis - 1])), int(np.prod(x.shape[axis - 1:]))))


def _reshape_to(g, node, x, shape):
    """x reshaped to the per-sample shape."""
    shape = tuple(int(n) for n in shape)
    if shape == tuple(x.shape):
        return x
    if len(shape) == 1:
        return g.call(node, L.Flatten(name=g.name_for(node)), x)
    return g.call(node, g.make(node, L.Reshape, shape, name=g.name_for(node)), x)


def _reshape(g, node, a):
    x = g.sym(node, 0)
    target = [int(n) for n in g.const(node, 1, "shape")]
    full = g.full(x)
    if a.get("allowzero", 0) and 0 in target:
        g.refuse(node, "allowzero=1 with a 0 in the shape is not supported", "allowzero")
    target = [full[i] if n == 0 else n for i, n in enumerate(target)]
    if not target or target[0] not in (-1, g.batch):
        g.refuse(node, f"shape {target} of a tensor of shape {list(full)}: clcnn keeps the batch axis first "
                 "(the shape must start with 0, -1 or the batch size)")
    rest = target[1:]
    if target[0] == -1 and -1 in rest:
        g.refuse(node, f"shape {target} has two -1 entries")
    size = int(np.prod(x.shape))
    if -1 in rest:
        known = int(np.prod([n for n in rest if n != -1]))
        if known == 0 or size % known:
            g.refuse(node, f"shape {target} does not fit a tensor of shape {list(full)}")
        rest[rest.index(-1)] = size // known
    if int(np.prod(rest)) != size:
        g.refuse(node, f"shape {target} does not fit a tensor of shape {list(full)}")
    return _reshape_to(g, node, x, rest)


def _squeeze_like(g, node, a):
    """Squeeze/Unsqueeze of a computed tensor: a reshape that keeps the batch axis."""
    x = g.sym(node, 0)
    axes = g.const(node, 1, "axes") if len(node.input) > 1 else None
    full = list(g.full(x))
    if node.op_type == "Unsqueeze":
        rank = len(full) + len(axes)
        for axis in sorted(int(n) % rank for n in axes):
            full.insert(axis, 1)
        out = full
        moved = 0 in [int(n) % rank for n in axes]
    else:
        rank = len(full)
        drop = [int(n) % rank for n in axes] if axes is not None else [i for i, n in enumerate(full) if n == 1 and i]
        moved = 0 in drop
        out = [n for i, n in enumerate(full) if i not in drop]
    if moved:
        g.refuse(node, "it would move the batch axis; clcnn keeps the batch axis first", "axes")
    return _reshape_to(g, node, x, out[1:])


def _transpose(g, node, a):
    x = g.sym(node, 0)
    perm = list(a.get("perm", range(len(x.shape), -1, -1)))
    if perm[0] != 0:
        g.refuse(node, f"perm={perm} moves the batch axis; clcnn keeps it first", "perm")
    if perm == sorted(perm):
        return x
    return g.call(node, g.make(node, L.Transpose, tuple(p - 1 for p in perm[1:]), name=g.name_for(node)), x)


def _elementwise(g, node, a):
    """Add/Sum/Mul/Sub/Div: tensors of one shape, constants folded into the layer before, or
    the broadcasting layers."""
    op = node.op_type
    names = [n for n in node.input]
    if op == "Sum" and len(names) == 1:
        return g.sym(node, 0)
    syms = [n for n in names if n in g.tensors]
    consts = [n for n in names if n not in g.tensors]
    if len(syms) == 1 and len(consts) == 1 and op in ("Add", "Mul", "Sub", "Div", "Sum"):
        value = g.consts[consts[0]]
        x_first = names[0] == syms[0]
        if value.dtype == np.float32 and (x_first or op in ("Add", "Mul", "Sum")):
            kind, v = {"Add": ("add", value), "Sum": ("add", value), "Mul": ("mul", value),
                       "Sub": ("add", -value), "Div": ("mul", 1 / value)}[op]
            if g.try_fold(node, syms[0], v, kind):
                return g.tensors[node.output[0]]
    if not consts:
        shapes = {tuple(g.tensors[n].shape) for n in names}
        if op in ("Add", "Sum") and len(shapes) == 1:
            return g.call(node, L.Add(name=g.name_for(node)), [g.tensors[n] for n in names])
    return _broadcast(g, node, op, names)


def _broadcast(g, node, op, names):
    """The broadcasting layers: two computed tensors, or one and a constant (kept as the
    layer's buffer "constant")."""
    cls = {"Add": L.BroadcastAdd, "Sum": L.BroadcastAdd, "Sub": L.Sub, "Mul": L.Mul, "Div": L.Div}[op]
    syms = [n for n in names if n in g.tensors]
    if len(names) != 2 or not syms:
        g.refuse(node, f"{op} of {' and '.join(_describe(g, n) for n in names)}: clcnn runs it on two tensors, "
                 "or one tensor and a constant")
    if len(syms) == 2:
        return g.call(node, g.make(node, cls, name=g.name_for(node)), [g.tensors[n] for n in names])
    const = g.consts[names[0] if names[1] in g.tensors else names[1]]
    if const.dtype != np.float32:
        g.refuse(node, f"a constant of {const.dtype}; clcnn runs float32 tensors only")
    layer = g.make(node, cls, constant=const, constant_first=names[1] in g.tensors, name=g.name_for(node))
    g.state[f"{layer.name}.constant"] = const.reshape(const.shape or (1,))
    return g.call(node, layer, g.tensors[syms[0]])


def _describe(g, name):
    if name in g.tensors:
        return f"a tensor of shape {list(g.full(g.tensors[name]))}"
    return f"a constant of shape {list(g.consts[name].shape)}"


def _concat(g, node, a):
    xs = [g.sym(node, i) for i in range(len(node.input))]
    rank = len(xs[0].shape) + 1
    axis = a.get("axis") % rank
    if axis != 1:
        g.refuse(node, f"axis={a.get('axis')} on tensors of rank {rank}: clcnn concatenates along the channel "
                 "axis (1) only", "axis")
    if len(xs) == 1:
        return xs[0]
    return g.call(node, L.Concat(name=g.name_for(node)), xs)


def _dropout(g, node, a):
    x = g.sym(node, 0)
    ratio = g.const(node, 1, "ratio") if len(node.input) > 1 else None
    ratio = 0.5 if ratio is None else float(ratio)
    return g.call(node, g.make(node, L.Dropout, ratio, name=g.name_for(node)), x)


def _identity(g, node, a):
    return g.sym(node, 0)


def _lrn(g, node, a):
    x = g.sym(node, 0)
    _require_4d(g, node, x)
    layer = g.make(node, L.LRN, int(a["size"]), alpha=float(a.get("alpha", 1e-4)), beta=float(a.get("beta", 0.75)),
                   k=float(a.get("bias", 1.0)), name=g.name_for(node))
    return g.call(node, layer, x)


def _prelu(g, node, a):
    x = g.sym(node, 0)
    slope = g.weight(node, 1, "slope")
    if g.legacy_prelu and slope.ndim == 1 and len(x.shape) > 1:
        slope = slope.reshape((-1,) + (1,) * (len(x.shape) - 1))
    vec = g.channel_vector(x, slope)
    if vec is None:
        g.refuse(node, f"a slope of shape {list(slope.shape)}: clcnn's PReLU takes one slope per channel or one in all")
    count = 1 if slope.size == 1 else x.shape[0]
    layer = g.make(node, L.PReLU, count, name=g.name_for(node))
    g.state[f"{layer.name}.weight"] = vec[:count].copy()
    return g.call(node, layer, x)


def _pad(g, node, a):
    x = g.sym(node, 0)
    mode = _decode(a.get("mode", "constant"))
    if mode != "constant":
        g.refuse(node, f"mode={mode!r}: clcnn pads with a constant only", "mode")
    pads = [int(n) for n in g.const(node, 1, "pads")]
    value = g.const(node, 2, "constant_value") if len(node.input) > 2 else None
    value = 0.0 if value is None else float(value)
    axes = g.const(node, 3, "axes") if len(node.input) > 3 else None
    rank = len(x.shape) + 1
    axes = list(range(rank)) if axes is None else [int(n) % rank for n in axes]
    before, after = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        before[axis], after[axis] = pads[i], pads[i + len(axes)]
    if rank != 4 or any(before[:2] + after[:2]):
        g.refuse(node, f"pads={pads} on shape {list(g.full(x))}: clcnn pads the height and width of NCHW "
                 "tensors only", "pads")
    layer = g.make(node, L.Pad, (before[2], after[2], before[3], after[3]), value=value, name=g.name_for(node))
    return g.call(node, layer, x)


_HANDLERS = {
    "Conv": _conv, "BatchNormalization": _batchnorm, "Relu": _simple(L.ReLU), "LeakyRelu": _leaky,
    "PRelu": _prelu, "Clip": _clip, "Sigmoid": _simple(L.Sigmoid), "Tanh": _simple(L.Tanh),
    "Softmax": _softmax, "LogSoftmax": _softmax, "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global(L.GlobalAvgPool2D), "GlobalMaxPool": _global(L.GlobalMaxPool2D),
    "Gemm": _gemm, "MatMul": _matmul, "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose,
    "Squeeze": _squeeze_like, "Unsqueeze": _squeeze_like,
    "Add": _elementwise, "Sum": _elementwise, "Mul": _elementwise, "Sub": _elementwise, "Div": _elementwise,
    "Concat": _concat, "Pad": _pad, "Dropout": _dropout, "LRN": _lrn, "Identity": _identity,
}
# Random nodes have no load-time value.
_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
