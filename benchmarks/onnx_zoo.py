"""Batch-1 inference of ONNX models in clcnn (OpenCL) beside onnxruntime (CPU) in the same run.

The architectures are the classic ImageNet models the onnx package ships in its backend test
data (weights replaced by random values, as the shipped files hold placeholders) and clcnn's
own models exported with clcnn.onnx.export. Each row: the median of --repeat runs after a
warm-up, of clcnn's model as loaded and frozen (Model.freeze: BatchNorm folds and weight packs
made once), the ratio frozen clcnn / onnxruntime (above 1: clcnn slower), the largest output
difference relative to the output's scale, and the layer types taking most of clcnn's time
(each layer timed alone with a queue finish after it, so these shares add up to a little
more).

    python benchmarks/onnx_zoo.py [--models resnet50,squeezenet] [--repeat 5] [--device pocl]
"""
import argparse
import os
import tempfile
import time
from collections import defaultdict

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import clcnn

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
ZOO = ["squeezenet", "resnet50", "inception_v1", "inception_v2", "densenet121", "shufflenet", "bvlc_alexnet",
       "zfnet512", "vgg19"]
OWN = {"lenet5": (clcnn.models.lenet5, (1, 32, 32)), "resnet20": (clcnn.models.resnet20, None),
       "mobilenet_small": (clcnn.models.mobilenet_small, None)}


def randomized(name, rng):
    """The shipped model with its ConstantOfShape placeholders replaced by random weights."""
    proto = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(v) for v in inits[node.input[0]])
            value = (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:])) if len(shape) > 1
                     else rng.uniform(0.5, 1.5, shape))
            proto.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
            proto.graph.input.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, shape))
        else:
            keep.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    return proto


def median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def layer_shares(net, x):
    """{layer type: seconds} of one forward, each layer finished before the next starts."""
    spent = defaultdict(float)
    queue = net.device.queue
    originals = {}
    for layer in net.layers:
        def timed(*args, _forward=layer.forward, _kind=type(layer).__name__, **kwargs):
            start = time.perf_counter()
            out = _forward(*args, **kwargs)
            queue.finish()
            spent[_kind] += time.perf_counter() - start
            return out
        originals[id(layer)] = layer.forward
        layer.forward = timed
    try:
        net(x)
        queue.finish()
    finally:
        for layer in net.layers:
            del layer.forward
    return spent


def bench(name, path, device, repeat):
    net = clcnn.onnx.load(path, device=device)
    x = np.random.default_rng(0).standard_normal((1, *net.input_shapes[0])).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    ours = median_time(lambda: net(x).get(), repeat)
    theirs = median_time(lambda: sess.run(None, feed), repeat)
    net.freeze()
    frozen = median_time(lambda: net(x).get(), repeat)
    ref = sess.run(None, feed)[0]
    out = net(x).get()
    err = float(np.abs(out - ref.reshape(out.shape)).max() / max(np.abs(ref).max(), 1e-12))
    shares = layer_shares(net, x)
    total = sum(shares.values())
    slow = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:3])
    return {"model": name, "input": "x".join(map(str, net.input_shapes[0])), "clcnn_ms": 1e3 * ours,
            "frozen_ms": 1e3 * frozen, "onnxruntime_ms": 1e3 * theirs, "ratio": frozen / theirs,
            "max_rel_err": err, "slowest": slow}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO + list(OWN)))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = clcnn.get_device(args.device)
    rng = np.random.default_rng(0)
    print(f"device: {device.name}; onnxruntime {ort.__version__} CPU")
    print("| model | input | clcnn ms | frozen ms | onnxruntime ms | ratio | max rel. err | clcnn's slowest layer types |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = os.path.join(tmp, f"{name}.onnx")
            if name in OWN:
                build, shape = OWN[name]
                clcnn.onnx.export(build().eval(), path, input_shape=shape)
            else:
                onnx.save(randomized(name, rng), path)
            r = bench(name, path, device, args.repeat)
            print(f"| {r['model']} | {r['input']} | {r['clcnn_ms']:.1f} | {r['frozen_ms']:.1f} | {r['onnxruntime_ms']:.1f} | "
                  f"{r['ratio']:.2f} | {r['max_rel_err']:.1e} | {r['slowest']} |", flush=True)


if __name__ == "__main__":
    main()
