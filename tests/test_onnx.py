"""ONNX import and export against outside oracles: the operator cases and classic ImageNet
models that the onnx package ships (with their stored outputs, or onnxruntime), models
exported by torch.onnx.export (against torch), and clcnn's own models exported and run in
onnxruntime. CLCNN_ONNX_ZOO=1 also runs the large zoo models at full size."""
import glob
import os

import numpy as np
import pytest

import clcnn
from clcnn import layers as L
from clcnn.errors import CheckpointError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from clcnn.onnx import ONNXError  # noqa: E402

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
CASES = sorted(glob.glob(os.path.join(DATA, "pytorch-converted", "*")) + glob.glob(os.path.join(DATA, "pytorch-operator", "*")))
# The 2-D image (NCHW) and dense cases clcnn runs; every other case must be refused clearly.
MUST_PASS = {
    "test_AvgPool2d", "test_AvgPool2d_stride", "test_BatchNorm2d_eval", "test_BatchNorm2d_momentum_eval",
    "test_ConstantPad2d", "test_Conv2d", "test_Conv2d_depthwise", "test_Conv2d_depthwise_padded",
    "test_Conv2d_depthwise_strided", "test_Conv2d_depthwise_with_multiplier", "test_Conv2d_dilated",
    "test_Conv2d_groups", "test_Conv2d_groups_thnn", "test_Conv2d_no_bias", "test_Conv2d_padding",
    "test_Conv2d_strided", "test_MaxPool2d", "test_PReLU_2d", "test_PReLU_2d_multiparam", "test_PixelShuffle",
    "test_ReLU", "test_Sigmoid", "test_Tanh", "test_ZeroPad2d", "test_log_softmax_dim3",
    "test_softmax_functional_dim3", "test_Linear", "test_Linear_no_bias", "test_LogSoftmax", "test_Softmax",
    "test_LeakyReLU", "test_LeakyReLU_with_negval", "test_operator_conv", "test_operator_flatten",
    "test_operator_clip", "test_operator_concat2", "test_operator_permute2",
}


def close(actual, expected, rtol=1e-3, atol=1e-5):
    """|a - e| <= atol * max|e| + rtol * |e|, reporting the worst element."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(), 1e-12)
    err = np.abs(actual - expected) - (atol * scale + rtol * np.abs(expected))
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= 0, f"max error {np.abs(actual - expected).max():.3g} at {worst} (scale {scale:.3g})"


def run_ort(path, *xs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})


def tensors(folder, kind):
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(os.path.join(folder, f"{kind}_*.pb")))]


# -- the operator cases the onnx package ships ------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=os.path.basename)
def test_shipped_case(case):
    """Each case either matches its stored output or is refused naming the node's op_type."""
    name = os.path.basename(case)
    model_path = os.path.join(case, "model.onnx")
    try:
        net = clcnn.onnx.load(model_path)
    except ONNXError as exc:
        assert name not in MUST_PASS, f"{name} refused: {exc}"
        message = str(exc)
        assert model_path in message
        proto = onnx.load(model_path)
        assert any(f"({n.op_type})" in message for n in proto.graph.node) or "graph input" in message, message
        return
    for folder in sorted(glob.glob(os.path.join(case, "test_data_set_*"))):
        xs, ys = tensors(folder, "input"), tensors(folder, "output")
        out = net(*xs)
        close(out.get(), ys[0], rtol=1e-4, atol=1e-5)


def test_every_must_pass_case_is_shipped():
    shipped = {os.path.basename(c) for c in CASES}
    assert MUST_PASS <= shipped, sorted(MUST_PASS - shipped)


# -- classic ImageNet models from the onnx package, with random weights ---------------

def randomized(name, rng, size=None):
    """The shipped light model with every ConstantOfShape weight replaced by random values
    (He-scaled convolutions and dense layers, [0.5, 1.5] for vectors: BatchNorm variances
    stay positive); size changes the input's height and width."""
    proto = onnx.load(os.path.join(DATA, "light", f"light_{name}.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    made = {n.output[0] for n in proto.graph.node}
    (data,) = [i for i in proto.graph.input if i.name not in inits and i.name not in made]
    keep = []
    for node in proto.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(v) for v in inits[node.input[0]])
            if len(shape) == 4:
                value = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))
            elif len(shape) == 2:
                value = rng.standard_normal(shape) / np.sqrt(shape[1])
            else:
                value = rng.uniform(0.5, 1.5, shape)
            proto.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
            proto.graph.input.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, shape))
        else:
            keep.append(node)
    # The logits, not the saturated softmax, are compared.
    if keep[-1].op_type == "Softmax" and keep[-1].output[0] == proto.graph.output[0].name:
        last = keep.pop()
        proto.graph.output[0].name = last.input[0]
        del proto.graph.output[0].type.tensor_type.shape.dim[:]
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    if size:
        dims = data.type.tensor_type.shape.dim
        dims[2].dim_value = dims[3].dim_value = size
    return proto


def check_zoo(name, tmp_path, size=None):
    rng = np.random.default_rng(0)
    path = tmp_path / f"{name}.onnx"
    onnx.save(randomized(name, rng, size), path)
    net = clcnn.onnx.load(path)
    shape = net.input_shapes[0]
    x = rng.standard_normal((1, *shape)).astype(np.float32)
    (expected,) = run_ort(path, x)
    got = net(x).get()
    close(got, expected.reshape(got.shape), rtol=1e-3, atol=1e-4)
    net.freeze()        # folds and packs kept: the same kernels, the same results
    for _ in range(3):
        np.testing.assert_array_equal(net(x).get(), got)


def test_squeezenet_small(tmp_path):
    check_zoo("squeezenet", tmp_path, size=64)


def test_shufflenet_small(tmp_path):
    """Channel shuffles: Reshape to 5-D, Transpose, Reshape back (any input size: global pools)."""
    proto = randomized("shufflenet", np.random.default_rng(0))
    ops = {n.op_type for n in proto.graph.node}
    assert {"Transpose", "Reshape"} <= ops
    pytest.skip("ShuffleNet's reshapes hold the 224x224 sizes; it runs in the CLCNN_ONNX_ZOO suite") if not \
        os.environ.get("CLCNN_ONNX_ZOO") else check_zoo("shufflenet", tmp_path)


ZOO = ["resnet50", "vgg19", "densenet121", "inception_v1", "inception_v2", "shufflenet", "bvlc_alexnet", "zfnet512"]


@pytest.mark.skipif(not os.environ.get("CLCNN_ONNX_ZOO"), reason="full-size zoo models: set CLCNN_ONNX_ZOO=1")
@pytest.mark.parametrize("name", ZOO)
def test_zoo_full_size(name, tmp_path):
    check_zoo(name, tmp_path)


# -- constructed graphs against onnxruntime ---------------------------------------------

def make_model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def value(name, shape, kind=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, kind, shape)


@pytest.mark.parametrize("size,kernel,stride,pads,include,kind", [
    (7, 3, 2, [0, 0, 0, 0], 0, "MaxPool"), (8, 3, 2, [1, 1, 1, 1], 0, "MaxPool"),
    (7, 2, 2, [0, 0, 0, 0], 1, "AveragePool"), (9, 3, 2, [1, 1, 1, 1], 0, "AveragePool"),
    (6, 3, 2, [0, 0, 0, 0], 0, "AveragePool"), (5, 2, 2, [1, 0, 1, 0], 0, "MaxPool")])
def test_ceil_mode_pools_match_onnxruntime(tmp_path, size, kernel, stride, pads, include, kind):
    attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=pads, ceil_mode=1)
    if kind == "AveragePool":
        attrs["count_include_pad"] = include
    proto = make_model([helper.make_node(kind, ["x"], ["y"], name="pool", **attrs)],
                       [value("x", ["N", 3, size, size])], [value("y", None)])
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    close(clcnn.onnx.load(path)(x).get(), run_ort(path, x)[0], rtol=1e-5)


def test_ceil_mode_avg_with_counted_padding_is_refused(tmp_path):
    proto = make_model([helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                                         pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)],
                       [value("x", ["N", 3, 8, 8])], [value("y", None)])
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    with pytest.raises(ONNXError, match=r"node 'pool' \(AveragePool\): attribute ceil_mode"):
        clcnn.onnx.load(path)


@pytest.mark.parametrize("trans_b,alpha,beta,c_shape", [(0, 1.0, 1.0, (5,)), (1, 0.5, 2.0, (1, 5)), (1, 1.0, 1.0, None)])
def test_gemm_folds_alpha_beta_and_transpose(tmp_path, trans_b, alpha, beta, c_shape):
    rng = np.random.default_rng(2)
    b = rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    inits = [("B", b)] + ([("C", rng.standard_normal(c_shape).astype(np.float32))] if c_shape else [])
    node = helper.make_node("Gemm", ["x", "B"] + (["C"] if c_shape else []), ["y"], name="fc/1",
                            transB=trans_b, alpha=alpha, beta=beta)
    proto = make_model([node], [value("x", ["N", 4])], [value("y", None)], inits)
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    net = clcnn.onnx.load(path)
    assert set(net.state_dict()) == {"fc_1.weight"} | ({"fc_1.bias"} if c_shape else set())
    x = rng.standard_normal((3, 4)).astype(np.float32)
    close(net(x).get(), run_ort(path, x)[0], rtol=1e-5)


def test_constant_subgraphs_fold_and_scale_folds_into_batchnorm(tmp_path):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (torch's x.view(x.size(0), -1)), a
    Caffe2-style Mul/Add after BatchNorm, MatMul + Add, Cast of an initializer."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bn = [rng.uniform(0.5, 1.5, 4).astype(np.float32) for _ in range(4)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Mul", ["n", "scale"], ["n2"], name="scale_mul"),
        helper.make_node("Add", ["n2", "shift"], ["n3"], name="scale_add"),
        helper.make_node("Relu", ["n3"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"], name="unsq"),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], name="cat", axis=0),
        helper.make_node("Reshape", ["r", "target"], ["flat"], name="view"),
        helper.make_node("Cast", ["w64"], ["wfc"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["flat", "wfc"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fcb"], ["y"], name="fc_bias"),
    ]
    inits = [("w", w), ("s", bn[0]), ("b", bn[1]), ("m", bn[2]), ("v", bn[3]),
             ("scale", rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32)),
             ("shift", rng.standard_normal((4, 1, 1)).astype(np.float32)), ("zero", np.array(0, np.int64)),
             ("axes", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64)),
             ("w64", rng.standard_normal((4 * 5 * 5, 6))), ("fcb", rng.standard_normal(6).astype(np.float32))]
    proto = make_model(nodes, [value("x", ["N", 3, 5, 5])], [value("y", None)], inits)
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    net = clcnn.onnx.load(path)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Conv2D", "BatchNorm2D", "ReLU", "Flatten", "Dense"], kinds
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    close(net(x).get(), run_ort(path, x)[0], rtol=1e-4)


# -- models exported by torch ------------------------------------------------------------

def torch_to_onnx(module, shape, path, batch=2):
    torch = pytest.importorskip("torch")
    module.eval()
    x = torch.randn(batch, *shape)
    torch.onnx.export(module, x, str(path), input_names=["input"], output_names=["output"], opset_version=17,
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, dynamo=False)
    return module


def mobilenet_block():
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))


def inception_block():
    import torch
    from torch import nn

    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.b1 = nn.Conv2d(3, 8, 1)
            self.b3 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1))
            self.b5 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 5, padding=2))
            self.pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(3, 8, 1))
            self.head = nn.Linear(32, 5)

        def forward(self, x):
            y = torch.relu(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1))
            y = nn.functional.max_pool2d(y, 3, stride=2, ceil_mode=True)
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))
    return Inception()


@pytest.mark.parametrize("build", [mobilenet_block, inception_block])
def test_torch_exported_models_match_torch(tmp_path, build):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = build()
    for m in module.modules():           # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    torch_to_onnx(module, (3, 17, 17), tmp_path / "m.onnx")
    net = clcnn.onnx.load(tmp_path / "m.onnx")
    x = np.random.default_rng(4).standard_normal((3, 3, 17, 17)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    close(net(x).get(), expected, rtol=1e-3, atol=1e-4)


def test_fine_tuning_an_imported_model_lowers_the_loss(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    torch_to_onnx(mobilenet_block(), (3, 16, 16), tmp_path / "m.onnx")
    net = clcnn.onnx.load(tmp_path / "m.onnx").train()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    loss = clcnn.losses.SoftmaxCrossEntropy()
    trainer = clcnn.Trainer(net, loss, clcnn.optim.Adam(net, lr=1e-2), progress=False)
    before = trainer.evaluate((x, labels))["loss"]
    trainer.fit((x, labels), epochs=20, batch_size=8)
    after = trainer.evaluate((x, labels))["loss"]
    assert after < 0.8 * before, (before, after)


# -- export -------------------------------------------------------------------------------

def bn_depthwise_graph():
    inp = L.Input((4, 9, 9))
    x = L.Conv2D(4, 8, 3, padding="same", bias=False, name="stem", activation="relu")(inp)
    x = L.BatchNorm2D(8, name="bn")(x)
    d = L.Conv2D(8, 8, 3, stride=2, padding=(1, 0, 1, 0), groups=8, name="dw")(x)
    d = L.ReLU6()(L.BatchNorm2D(8, name="dw_bn")(d))
    p = L.AvgPool2D(3, stride=2, padding=(1, 0, 1, 0), count_include_pad=False)(x)
    y = L.Concat()([d, p])
    y = L.Add()([y, L.LeakyReLU(0.2)(y)])
    return clcnn.Model(inp, L.Softmax()(L.Dense(16 * 4 * 4, 7, name="fc")(L.Flatten()(y))))


@pytest.mark.parametrize("build,shape", [
    (clcnn.models.lenet5, (1, 32, 32)), (clcnn.models.mnist_cnn, (1, 28, 28)),
    (clcnn.models.resnet20, None), (bn_depthwise_graph, None)], ids=["lenet5", "mnist_cnn", "resnet20", "bn_depthwise"])
def test_export_runs_in_onnxruntime_and_reloads(tmp_path, build, shape):
    clcnn.seed(0)
    model = build()
    rng = np.random.default_rng(6)
    # Trained-looking running statistics, so the eval form is exercised.
    state = {k: (rng.uniform(0.5, 2.0, v.shape) if k.endswith("running_var") else
                 rng.uniform(-0.5, 0.5, v.shape) if k.endswith("running_mean") else v)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    model.eval()
    path = tmp_path / "m.onnx"
    clcnn.onnx.export(model, path, input_shape=shape, metadata={"class_names": ["a"]})
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert clcnn.onnx.read_metadata(path) == {"class_names": ["a"]}
    in_shape = shape or model.input_shapes[0]
    reloaded = clcnn.onnx.load(path)
    assert set(reloaded.state_dict()) == set(model.state_dict())
    for batch in (1, 5):
        x = rng.standard_normal((batch, *in_shape)).astype(np.float32)
        ours = model(x).get()
        close(run_ort(path, x)[0], ours, rtol=1e-3, atol=1e-5)
        close(reloaded(x).get(), ours, rtol=1e-5, atol=1e-6)


def test_export_of_a_sequential_needs_its_input_shape(tmp_path):
    with pytest.raises(ONNXError, match="input_shape"):
        clcnn.onnx.export(clcnn.models.lenet5(), tmp_path / "m.onnx")


# -- errors ---------------------------------------------------------------------------------

def save(tmp_path, proto):
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    return path


def test_unsupported_operator_names_node_and_op(tmp_path):
    path = save(tmp_path, make_model([helper.make_node("Elu", ["x"], ["y"], name="act7")],
                                     [value("x", ["N", 3, 4, 4])], [value("y", None)]))
    with pytest.raises(ONNXError, match=r"node 'act7' \(Elu\): this operator is not supported"):
        clcnn.onnx.load(path)


def test_unsupported_attribute_names_it(tmp_path):
    node = helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2], dilations=[2, 2])
    path = save(tmp_path, make_model([node], [value("x", ["N", 3, 8, 8])], [value("y", None)]))
    with pytest.raises(ONNXError, match=r"node 'p' \(MaxPool\): attribute dilations"):
        clcnn.onnx.load(path)


def test_dynamic_spatial_shape_is_refused(tmp_path):
    path = save(tmp_path, make_model([helper.make_node("Relu", ["x"], ["y"])],
                                     [value("x", ["N", 3, "H", "W"])], [value("y", None)]))
    with pytest.raises(ONNXError, match="graph input 'x' has shape"):
        clcnn.onnx.load(path)


def test_non_float32_tensors_are_refused(tmp_path):
    path = save(tmp_path, make_model([helper.make_node("Relu", ["x"], ["y"])],
                                     [value("x", ["N", 3], TensorProto.DOUBLE)], [value("y", None)]))
    with pytest.raises(ONNXError, match="DOUBLE; clcnn runs float32"):
        clcnn.onnx.load(path)
    w = np.ones((2, 3, 1, 1), np.float16)
    path = save(tmp_path, make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
                                     [value("x", ["N", 3, 4, 4])], [value("y", None)], [("w", w)]))
    with pytest.raises(ONNXError, match=r"node 'c' \(Conv\): its weight 'w' is float16"):
        clcnn.onnx.load(path)


def test_weight_computed_from_the_input_is_refused(tmp_path):
    node = helper.make_node("Conv", ["x", "x"], ["y"], name="c")
    path = save(tmp_path, make_model([node], [value("x", ["N", 3, 4, 4])], [value("y", None)]))
    with pytest.raises(ONNXError, match=r"node 'c' \(Conv\): its weight 'x' must be a constant"):
        clcnn.onnx.load(path)


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    clcnn.onnx.export(clcnn.models.lenet5(), tmp_path / "good.onnx", input_shape=(1, 32, 32))
    data = (tmp_path / "good.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xff not a protobuf " * 10)
    for name in ("cut.onnx", "junk.onnx"):
        with pytest.raises(CheckpointError, match=name):
            clcnn.onnx.load(tmp_path / name)
    with pytest.raises(CheckpointError, match="no such file"):
        clcnn.onnx.load(tmp_path / "missing.onnx")


def test_cli_export_then_summary_evaluate_predict(tmp_path):
    import json

    from click.testing import CliRunner

    from cli.main import cli
    clcnn.seed(0)
    prep = {"pad": 2, "mean": 0.1307, "std": 0.3081}
    model = clcnn.models.lenet5()
    model.save(tmp_path / "m.clcnn", metadata={"model": "lenet5", "dataset": "mnist", "preprocess": prep,
                                               "input_shape": [1, 32, 32], "class_names": list("0123456789")})
    runner = CliRunner()
    out = tmp_path / "m.onnx"
    result = runner.invoke(cli, ["export", str(tmp_path / "m.clcnn"), str(out)])
    assert result.exit_code == 0, result.output
    assert clcnn.onnx.read_metadata(out)["preprocess"] == prep
    result = runner.invoke(cli, ["summary", str(out)])
    assert result.exit_code == 0 and "61,706" in result.output, result.output
    result = runner.invoke(cli, ["evaluate", str(out), "--json"])
    assert result.exit_code == 0, result.output
    from_onnx = json.loads(result.output)
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "m.clcnn"), "--json"])
    assert abs(json.loads(result.output)["loss"] - from_onnx["loss"]) < 1e-4
    image = tmp_path / "digit.npy"
    np.save(image, np.random.default_rng(7).random((28, 28)).astype(np.float32))
    result = runner.invoke(cli, ["predict", str(out), str(image), "--json"])
    assert result.exit_code == 0, result.output
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    result = runner.invoke(cli, ["summary", str(tmp_path / "bad.onnx")])
    assert result.exit_code == 1 and "bad.onnx" in result.output
