"""Model.freeze(): an eval forward keeps what it derives from the weights alone (BatchNorm
folds, packed and Winograd-transformed weights) instead of deriving it at every call. A
frozen model gives the unfrozen model's outputs bit for bit and the NumPy reference's within
float32 rounding; clcnn's own writes to the weights (train(), load_state_dict, optimizer
steps, set_value) unfreeze it, so no later output comes from stale weights."""
import numpy as np
import pytest

import clcnn
from clcnn import layers as L
from clcnn import reference
from clcnn.ops import conv2d as conv_ops
from tests.helpers import assert_close, launched_kernels as launched, randomise_state

DERIVING = {"batchnorm_fold", "conv2d_pack_weights", "winograd_weights"}


def small_net(device):
    """Convolutions with folded BatchNorms (a packed direct one, a depthwise one), a residual
    Add, a plain biased convolution and a Dense head."""
    inp = L.Input((3, 12, 12))
    x = L.ReLU()(L.BatchNorm2D(24, name="bn1")(L.Conv2D(3, 24, 3, padding=1, bias=False, name="conv1")(inp)))
    y = L.BatchNorm2D(24, name="bn2")(L.Conv2D(24, 24, 3, padding=1, groups=24, bias=False, name="dw")(x))
    z = L.ReLU()(L.Add()([x, y]))
    z = L.Conv2D(24, 20, 3, stride=2, name="conv2", activation="tanh")(z)
    out = L.Dense(20, 10, name="fc")(L.Flatten()(L.GlobalAvgPool2D()(z)))
    return clcnn.Model(inp, out, device=device)


def reference_output(model, x):
    want, _ = reference.forward(model, x.astype(np.float64), reference.snapshot(model), training=False)
    return want


def test_frozen_forward_derives_once_and_matches(device):
    rng = np.random.default_rng(0)
    model = small_net(device)
    randomise_state(model, rng)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    model.eval()
    plain = model(x).get()
    assert_close(plain, reference_output(model, x), 1e-4, 1e-4, "eval forward")
    assert model.freeze() is model and model.frozen and not model.training
    first, later = [], []
    with launched(first):
        outputs = [model(x).get()]
    with launched(later):
        outputs += [model(x).get() for _ in range(3)]     # plain, recorded, replayed
    assert {"batchnorm_fold", "conv2d_pack_weights"} <= set(first)
    assert not DERIVING & set(later), sorted(DERIVING & set(later))
    for out in outputs:
        np.testing.assert_array_equal(out, plain)
    # Another batch size takes other routes: what they derive is kept too.
    x2 = rng.standard_normal((9, 3, 12, 12)).astype(np.float32)
    model(x2)
    with launched(later := []):
        y2 = model(x2).get()
    assert not DERIVING & set(later)
    assert_close(y2, reference_output(model, x2), 1e-4, 1e-4, "frozen forward, batch 9")


def test_writes_through_clcnn_unfreeze(device):
    """Every way clcnn changes weights drops what the frozen model kept, and the next outputs
    follow the new weights (the NumPy reference on them), replayed forwards included."""
    rng = np.random.default_rng(1)
    model = small_net(device)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)

    def check(what):
        assert not model.frozen, f"{what} left the model frozen"
        model.freeze()
        for _ in range(3):
            assert_close(model(x).get(), reference_output(model, x), 1e-4, 1e-4, f"after {what}")

    model.freeze()
    for _ in range(3):
        model(x)
    randomise_state(model, rng)                                  # load_state_dict
    check("load_state_dict")
    model.named_tensors()["bn1.running_var"].set_value(rng.uniform(0.5, 2, 24))
    check("set_value on a buffer")
    loss = clcnn.losses.SoftmaxCrossEntropy()
    opt = clcnn.optim.SGD(model, lr=0.5)
    loss(model(x), np.array([1, 2], np.int32))
    model.backward(loss.backward())
    opt.step()
    check("an SGD step")
    adam = clcnn.optim.Adam(model, lr=0.1)
    loss(model(x), np.array([3, 4], np.int32))
    model.backward(loss.backward())
    adam.step()
    check("an Adam step")
    model.train()
    check("train()")
    model.unfreeze()
    assert not model.frozen and not model.training     # unfreeze keeps eval mode


def test_a_shared_layer_trained_elsewhere_unfreezes(device):
    """A layer shared with another model: that model's optimizer step unfreezes this one."""
    conv = L.Conv2D(3, 8, 3, name="conv")
    a = clcnn.Sequential([conv, L.GlobalAvgPool2D(), L.Flatten()], device=device).freeze()
    b = clcnn.Sequential([conv, L.ReLU(), L.GlobalAvgPool2D(), L.Flatten()], device=device)
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 9)).astype(np.float32)
    a(x)
    b(x)
    b.backward(device.to_device(np.ones((2, 8), np.float32)))
    clcnn.optim.SGD(b, lr=1.0).step()
    assert not a.frozen
    assert_close(a(x).get(), reference_output(a, x), 1e-4, 1e-4, "after the shared layer's step")


@pytest.mark.parametrize("algorithm,kernel", [("winograd", "winograd_weights"), ("direct", "conv2d_pack_weights")])
def test_conv_weight_derivations_are_kept_for_the_same_arrays(device, algorithm, kernel):
    """conv2d_forward with a frozen model's store on the device: the weights are transformed
    or packed once per weight array, and results equal those of a call without it."""
    rng = np.random.default_rng(3)
    x = device.to_device(rng.standard_normal((2, 16, 10, 10)).astype(np.float32))
    ws = [device.to_device(rng.standard_normal((24, 16, 3, 3)).astype(np.float32)) for _ in range(2)]
    b = device.to_device(rng.standard_normal(24).astype(np.float32))
    want = [conv_ops.conv2d_forward(device, x, w, b, (1, 1), (1, 1, 1, 1), algorithm=algorithm).get() for w in ws]
    device.frozen_weights = {}
    names = []
    try:
        with launched(names):
            got = [conv_ops.conv2d_forward(device, x, w, b, (1, 1), (1, 1, 1, 1), algorithm=algorithm).get()
                   for w in ws + ws]
    finally:
        device.frozen_weights = None
    assert names.count(kernel) == 2        # once per weight array
    for k, out in enumerate(got):
        np.testing.assert_array_equal(out, want[k % 2])
