"""clcnn Model -> ONNX (opset 17, dynamic batch axis "N").

Each layer call becomes one node named after the call (a fused activation, the layer's own
`activation=`, becomes a second node "<name>.<activation>"); parameters become initializers
named by their state_dict keys, so `clcnn.onnx.load` of the file gives the same keys back.
BatchNorm is written in its eval form (running statistics). The file is checked with
onnx.checker.check_model(full_check=True) before it is written.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..model import Sequential
from . import ONNXError

OPSET = 17


class _Writer:
    def __init__(self, model):
        self.model = model
        self.state = model.state_dict()
        self.nodes = []
        self.inits = {}

    def init(self, name, value):
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def param(self, key, pname):
        return self.init(f"{key}.{pname}", self.state[f"{key}.{pname}"].astype(np.float32))

    def node(self, op, inputs, output, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def activation(self, act, x, out, name, slope=0.01):
        if act == "relu":
            return self.node("Relu", [x], out, name)
        if act == "relu6":
            lo = self.init(f"{name}.min", np.array(0, np.float32))
            hi = self.init(f"{name}.max", np.array(6, np.float32))
            return self.node("Clip", [x, lo, hi], out, name)
        if act == "leaky_relu":
            return self.node("LeakyRelu", [x], out, name, alpha=float(slope))
        if act == "tanh":
            return self.node("Tanh", [x], out, name)
        if act == "sigmoid":
            return self.node("Sigmoid", [x], out, name)
        raise ONNXError(f"activation {act!r} has no ONNX form in clcnn's exporter")

    def weighted(self, op, layer, key, xs, out, name, in_shape, **attrs):
        inputs = [xs[0], self.param(key, "weight")] + ([self.param(key, "bias")] if layer.bias else [])
        if not layer.activation:
            return self.node(op, inputs, out, name, **attrs)
        pre = self.node(op, inputs, f"{out}.pre", name, **attrs)
        return self.activation(layer.activation, pre, out, f"{name}.{layer.activation}", layer._slope())

    def emit(self, layer, key, xs, out, name, in_shapes):
        kind = type(layer).__name__
        shape = in_shapes[0]
        if kind == "Conv2D":
            t, b, l, r = layer.pads(shape)
            return self.weighted("Conv", layer, key, xs, out, name, shape, kernel_shape=list(layer.kernel_size),
                                 strides=list(layer.stride), pads=[t, l, b, r], dilations=list(layer.dilation),
                                 group=layer.groups)
        if kind == "Dense":
            return self.weighted("Gemm", layer, key, xs, out, name, shape, transB=1)
        if kind == "BatchNorm2D":
            c = layer.num_features
            scale = self.param(key, "weight") if layer.affine else self.init(f"{key}.weight", np.ones(c, np.float32))
            shift = self.param(key, "bias") if layer.affine else self.init(f"{key}.bias", np.zeros(c, np.float32))
            return self.node("BatchNormalization", [xs[0], scale, shift, self.param(key, "running_mean"),
                                                    self.param(key, "running_var")], out, name,
                             epsilon=layer.eps, momentum=1.0 - (layer.momentum if layer.momentum is not None else 0.1))
        if kind in ("ReLU", "ReLU6", "LeakyReLU", "Tanh", "Sigmoid"):
            return self.activation(layer.function, xs[0], out, name, layer.negative_slope)
        if kind in ("Softmax", "LogSoftmax"):
            return self.node(kind, xs, out, name, axis=int(getattr(layer, "axis", 1)))
        if kind in ("Identity", "Dropout"):
            return self.node("Identity", xs, out, name)
        if kind in ("MaxPool2D", "AvgPool2D"):
            t, b, l, r = layer.padding
            attrs = dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride), pads=[t, l, b, r])
            if kind == "AvgPool2D":
                return self.node("AveragePool", xs, out, name, count_include_pad=int(layer.count_include_pad), **attrs)
            return self.node("MaxPool", xs, out, name, **attrs)
        if kind in ("GlobalAvgPool2D", "GlobalMaxPool2D"):
            return self.node("GlobalAveragePool" if kind == "GlobalAvgPool2D" else "GlobalMaxPool", xs, out, name)
        if kind == "Flatten":
            return self.node("Flatten", xs, out, name, axis=1)
        if kind == "Add":
            return self.node("Add" if len(xs) == 2 else "Sum", xs, out, name)
        if kind == "Concat":
            return self.node("Concat", xs, out, name, axis=1)
        if kind in ("BroadcastAdd", "Sub", "Mul", "Div"):
            op = {"BroadcastAdd": "Add"}.get(kind, kind)
            if layer.buffers:
                c = self.init(f"{key}.constant", self.state[f"{key}.constant"].astype(np.float32))
                xs = [c, xs[0]] if layer.constant_first else [xs[0], c]
            return self.node(op, xs, out, name)
        if kind == "PReLU":
            slope = self.state[f"{key}.weight"].astype(np.float32)
            if len(shape) > 1:
                slope = slope.reshape((-1,) + (1,) * (len(shape) - 1))
            return self.node("PRelu", [xs[0], self.init(f"{key}.weight", slope)], out, name)
        if kind == "Clip":
            lo = "" if layer.min is None else self.init(f"{name}.min", np.array(layer.min, np.float32))
            hi = "" if layer.max is None else self.init(f"{name}.max", np.array(layer.max, np.float32))
            return self.node("Clip", [xs[0], lo, hi], out, name)
        if kind == "LRN":
            return self.node("LRN", xs, out, name, size=layer.size, alpha=layer.alpha, beta=layer.beta, bias=layer.k)
        if kind == "Transpose":
            perm = list(layer.perm) if len(layer.perm) == len(shape) + 1 else [0] + [p + 1 for p in layer.perm]
            return self.node("Transpose", xs, out, name, perm=perm)
        if kind == "Reshape":
            target = self.init(f"{name}.shape", np.array([0] + list(layer.output_shape(shape)), np.int64))
            return self.node("Reshape", [xs[0], target], out, name)
        if kind == "Pad":
            t, b, l, r = layer.pads
            pads = self.init(f"{name}.pads", np.array([0, 0, t, l, 0, 0, b, r], np.int64))
            value = self.init(f"{name}.value", np.array(layer.value, np.float32))
            return self.node("Pad", [xs[0], pads, value], out, name, mode="constant")
        raise ONNXError(f"layer {name!r} ({kind}) has no ONNX form in clcnn's exporter")


def export_model(model, path, input_shape=None, metadata=None):
    if isinstance(model, Sequential) or input_shape is not None:
        if input_shape is None:
            raise ONNXError("export of a Sequential needs input_shape=(C, H, W) (the per-sample shape "
                            "without the batch axis)")
        if model._input_count() != 1:
            raise ONNXError("input_shape fits a model of one input; this one has several")
        input_shapes = [tuple(int(n) for n in input_shape)]
    else:
        input_shapes = [tuple(s) for s in model.input_shapes]
    shapes = model._shapes(input_shapes)
    count = model._input_count()
    writer = _Writer(model)
    in_names = list(model.input_names)
    values = in_names + [call.name for call in model._calls]
    out_names = {v: ("output" if len(model._outputs) == 1 else f"output_{i}") for i, v in enumerate(model._outputs)}
    keys = model._keys
    for position, call in enumerate(model._calls):
        v = count + position
        out = out_names.get(v, values[v])
        values[v] = out
        xs = [values[i] for i in call.inputs]
        writer.emit(call.layer, keys[id(call.layer)], xs, out, call.name, [shapes[i] for i in call.inputs])
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *s])
              for name, s in zip(in_names, input_shapes)]
    outputs = []
    for v in model._outputs:
        if v < count:
            raise ONNXError("a model output that is a model input has no ONNX form; add an Identity layer")
        outputs.append(helper.make_tensor_value_info(out_names[v], TensorProto.FLOAT, ["N", *shapes[v]]))
    graph = helper.make_graph(writer.nodes, "clcnn", inputs, outputs, list(writer.inits.values()))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="clcnn")
    proto.ir_version = min(proto.ir_version, 8)    # what onnxruntime releases of opset 17 read
    if metadata is not None:
        helper.set_model_props(proto, {"clcnn": json.dumps(metadata)})
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ONNXError(f"the exported graph fails onnx's checker ({type(exc).__name__}: {exc})") from None
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), "." + os.path.basename(path) + ".tmp")
    onnx.save(proto, tmp)
    os.replace(tmp, path)
    return path
