"""The layer API end to end: shapes, parameter counts, the whole network against the NumPy
oracle, state dicts, save/load and clear errors for bad input."""
import numpy as np
import pytest

import clcnn
from clcnn import layers as L
from clcnn.oracle import loss as oracle_loss
from clcnn import reference
from tests.helpers import assert_close


def test_lenet5_shape_table_and_parameter_count(device):
    model = clcnn.models.lenet5(device=device)
    shapes = model.output_shapes((1, 32, 32))
    # The table of DESIGN.md: conv1 6x28x28, pool 6x14x14, conv2 16x10x10, pool 16x5x5,
    # conv3 120x1x1, dense 84, dense 10.
    assert shapes[0] == (6, 28, 28) and shapes[2] == (6, 14, 14)
    assert shapes[3] == (16, 10, 10) and shapes[5] == (16, 5, 5)
    assert shapes[6] == (120, 1, 1) and shapes[9] == (84,) and shapes[11] == (10,)
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == 61706
    text = model.summary((1, 32, 32), print_fn=None)
    assert "61,706" in text and "6x28x28" in text


def test_state_dict_keys_follow_torch_sequential_naming(device):
    keys = list(clcnn.models.lenet5(device=device).state_dict())
    assert keys == ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias",
                    "9.weight", "9.bias", "11.weight", "11.bias"]


def test_default_init_bounds_match_pytorch(device):
    clcnn.seed(1)
    state = clcnn.Sequential([L.Conv2D(3, 8, 3), L.Flatten(), L.Dense(8 * 4 * 4, 5)], device=device).state_dict()
    # torch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases of Conv2d and Linear.
    for key, fan_in in (("0.weight", 27), ("0.bias", 27), ("2.weight", 128), ("2.bias", 128)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(state[key]).max() <= bound
        assert np.abs(state[key]).max() > 0.5 * bound


def _train_step_against_oracle(model, x, labels, atol, rtol):
    """One forward/backward on the device against clcnn.reference (the layers' float64 oracle
    hooks walked over the graph) from the same weights and state; returns the reference run."""
    state = reference.snapshot(model)
    logits = model(x)
    loss = clcnn.losses.SoftmaxCrossEntropy()
    value = loss(logits, labels)
    gx = model.backward(loss.backward())

    ref_logits, run = reference.forward(model, x.astype(np.float64), state)
    ref_value, probs = oracle_loss.softmax_cross_entropy_forward(ref_logits, labels)
    ref_gx, ref_grads = reference.backward(model, run, oracle_loss.softmax_cross_entropy_backward(probs, labels))
    assert_close(logits.get(), ref_logits, atol, rtol, "logits")
    assert_close(value, ref_value, atol, rtol, "loss")
    assert_close(gx.get(), ref_gx, atol * max(np.abs(ref_gx).max(), 1e-3), rtol, "input gradient")
    grads = {p.name: p.grad.get() for p in model.parameters()}
    assert set(grads) == set(ref_grads)
    for name, grad in grads.items():
        scale = np.abs(ref_grads[name]).max()
        assert_close(grad, ref_grads[name], atol * max(scale, 1e-3), rtol, f"grad {name}")
    return run


def test_lenet5_forward_backward_equals_oracle(device):
    # float32 kernels vs the float64 oracle through 12 layers: errors stay near 1e-5
    # relative; 1e-4 leaves room for the sums of 400-element dot products.
    clcnn.seed(0)
    model = clcnn.models.lenet5(device=device)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 1, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, size=5)
    _train_step_against_oracle(model, x, labels, atol=1e-4, rtol=1e-3)


def test_mixed_network_equals_oracle(device):
    # Every layer type once, "same" padding with stride 2, fused and unfused activations.
    clcnn.seed(3)
    model = clcnn.Sequential([
        L.Conv2D(2, 4, (3, 2), stride=2, padding="same"), L.LeakyReLU(0.1),
        L.MaxPool2D(2, stride=1), L.Conv2D(4, 5, 3, padding=(1, 0, 2, 1), activation="sigmoid"),
        L.AvgPool2D(3, stride=2, padding=1), L.ReLU(), L.GlobalMaxPool2D(), L.Flatten(),
        L.Dense(5, 6, activation="tanh"), L.Dense(6, 3), L.Sigmoid(), L.Dense(3, 4, bias=False),
    ], device=device)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 11, 9)).astype(np.float32)
    _train_step_against_oracle(model, x, rng.integers(0, 4, size=3), atol=1e-4, rtol=1e-3)


def test_resnet20_forward_backward_and_running_stats_equal_reference(device):
    # A graph: residual Adds (fused with ReLU), fan-out to the shortcut, BatchNorm in train
    # mode (batch statistics), projection shortcuts with stride 2, global pooling.
    clcnn.seed(4)
    model = clcnn.models.resnet20(input_size=16, device=device)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    run = _train_step_against_oracle(model, x, rng.integers(0, 10, size=2), atol=1e-4, rtol=1e-3)
    state = model.state_dict()
    for key, entry in run.state.items():
        if "running_mean" in entry:
            assert_close(state[f"{key}.running_mean"], entry["running_mean"], 1e-5, 1e-4, key)
            assert_close(state[f"{key}.running_var"], entry["running_var"], 1e-5, 1e-4, key)
            assert state[f"{key}.num_batches_tracked"] == entry["num_batches_tracked"] == 1


def test_graph_with_shared_layer_concat_and_eval_batchnorm_equals_reference(device):
    # A layer called twice (weights shared: gradients summed), a tensor read by three calls,
    # Concat, and BatchNorm in eval mode (running statistics; folded into the conv forward).
    clcnn.seed(6)
    inp = L.Input((2, 7, 6))
    shared = L.Conv2D(2, 3, 3, padding=1, name="shared")
    a = shared(inp)
    b = shared(L.ReLU()(inp))
    c = L.BatchNorm2D(3, name="bn")(L.Conv2D(2, 3, 1, name="proj")(inp))
    y = L.Concat()([a, L.Add()([b, c]), c])
    out = L.Dense(9 * 7 * 6, 4, name="fc")(L.Flatten()(L.Tanh()(y)))
    model = clcnn.Model(inp, out, device=device)
    rng = np.random.default_rng(3)
    model.load_state_dict({"bn.running_mean": rng.standard_normal(3), "bn.running_var": rng.uniform(0.5, 2, 3)},
                          strict=False)
    model.eval()
    x = rng.standard_normal((3, 2, 7, 6)).astype(np.float32)
    _train_step_against_oracle(model, x, rng.integers(0, 4, size=3), atol=1e-4, rtol=1e-3)


def test_dropout_is_identity_in_eval_and_masks_in_train(device):
    model = clcnn.Sequential([L.Flatten(), L.Dropout(0.5)], device=device)
    x = np.ones((4, 1, 10, 10), dtype=np.float32)
    model.eval()
    assert np.array_equal(model(x).get(), x.reshape(4, -1))
    model.train()
    y = model(x).get()
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.3 < (y == 0).mean() < 0.7


def test_save_load_round_trip_gives_identical_outputs(device, tmp_path):
    clcnn.seed(5)
    model = clcnn.models.mnist_cnn(device=device)
    model.eval()
    x = np.random.default_rng(2).standard_normal((2, 1, 28, 28)).astype(np.float32)
    path = tmp_path / "m.clcnn"
    model.save(path)
    loaded = clcnn.load(path, device=device)
    loaded.eval()
    assert repr(loaded) == repr(model)
    assert np.array_equal(loaded(x).get(), model(x).get())
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value)


def test_load_state_dict_checks_keys_and_shapes(device):
    model = clcnn.models.lenet5(device=device)
    state = model.state_dict()
    with pytest.raises(KeyError, match="missing"):
        model.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})
    state["0.weight"] = np.zeros((6, 1, 3, 3), np.float32)
    with pytest.raises(clcnn.ShapeError, match="0.weight"):
        model.load_state_dict(state)


def test_wrong_input_shape_names_the_layer(device):
    model = clcnn.models.lenet5(device=device)
    with pytest.raises(clcnn.ShapeError, match=r"layer 0 \(Conv2D\).*1 input channels"):
        model(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(clcnn.ShapeError, match="layer 9"):
        model.output_shapes((1, 36, 36))


def test_wrong_dtype_is_refused_and_float64_converted(device):
    model = clcnn.Sequential([L.Flatten(), L.Dense(4, 2)], device=device)
    with pytest.raises(TypeError, match="floating point"):
        model(np.zeros((1, 4), dtype=np.int64))
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert_close(model(x).get(), model(x.astype(np.float32)).get(), 0, 0, "float64 input")


def test_bad_layer_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="padding"):
        L.Conv2D(1, 2, 3, padding="full")
    with pytest.raises(ValueError, match="stride"):
        L.Conv2D(1, 2, 3, stride=0)
    with pytest.raises(ValueError, match="activation"):
        L.Dense(2, 2, activation="swish")
    with pytest.raises(ValueError, match="half the kernel"):
        L.MaxPool2D(2, padding=2)
    with pytest.raises(ValueError, match="Dropout"):
        L.Dropout(1.0)


def test_kernel_larger_than_padded_input_is_a_shape_error(device):
    model = clcnn.Sequential([L.Conv2D(1, 1, 7)], device=device)
    with pytest.raises(clcnn.ShapeError, match="larger than the padded input"):
        model(np.zeros((1, 1, 5, 5), np.float32))
