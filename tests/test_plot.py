"""Pictures: each function returns the matplotlib Figure it drew (checked here for its panels,
labels and the data it shows) and writes a PNG of the stated pixel size."""
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image

import clcnn
from clcnn import plot
from clcnn.oracle.conv2d import conv2d_forward
from clcnn.oracle.pool import avgpool2d_forward
from tests.helpers import assert_close


def pixel_size(path):
    with Image.open(path) as image:
        return image.size


def history(epochs, validation=True):
    rng = np.random.default_rng(epochs)
    records = []
    for e in range(epochs):
        record = {"epoch": e + 1, "loss": float(rng.random()), "accuracy": float(rng.random()), "lr": 0.1 / (e + 1)}
        if validation:
            record.update(val_loss=float(rng.random()), val_accuracy=float(rng.random()), val_set="validation split")
        records.append(record)
    return records


@given(epochs=st.integers(1, 12), validation=st.booleans())
def test_curves_show_loss_accuracy_and_lr_per_epoch_with_labels(epochs, validation):
    records = history(epochs, validation)
    fig = plot.plot_history(records)
    loss_ax, acc_ax, lr_ax = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy", "Learning rate"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch"] * 3
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy (%)", "learning rate"]
    assert fig._suptitle.get_text() == "Training curves"
    names = ["train", "validation split"] if validation else ["train"]
    for ax, key, scale in ((loss_ax, "loss", 1), (acc_ax, "accuracy", 100)):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == names
        assert list(ax.lines[0].get_xdata()) == list(range(1, epochs + 1))
        assert_close(ax.lines[0].get_ydata(), [r[key] * scale for r in records], 0, 1e-12, key)
        if validation:
            assert_close(ax.lines[1].get_ydata(), [r["val_" + key] * scale for r in records], 0, 1e-12, key)
    assert_close(lr_ax.lines[0].get_ydata(), [r["lr"] for r in records], 0, 1e-12, "lr")
    ticks = [t for t in loss_ax.get_xticks() if 1 <= t <= epochs]
    assert ticks and all(float(t).is_integer() for t in ticks)     # whole epochs only


def test_curves_png_is_1200_by_360(tmp_path):
    plot.plot_history(history(3), tmp_path / "curves.png")
    assert pixel_size(tmp_path / "curves.png") == (1200, 360)


def test_curves_without_accuracy_and_an_empty_history():
    records = [{"epoch": 1, "loss": 0.5, "accuracy": None, "lr": 0.1}]
    fig = plot.plot_history(records)
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[1].lines) == 0
    with pytest.raises(ValueError, match="at least one epoch"):
        plot.plot_history([])


def test_filters_of_a_one_channel_conv_are_its_weights(device, tmp_path):
    clcnn.seed(3)
    model = clcnn.models.lenet5(device=device)
    fig = plot.plot_filters(model, tmp_path / "filters.png")
    weight = model.state_dict()["0.weight"]
    tiles = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(tiles) == 6
    for f, tile in enumerate(tiles):
        assert np.array_equal(tile.get_array(), weight[f, 0])
        assert tile.get_clim() == (-np.abs(weight).max(), np.abs(weight).max())   # one scale, centred on 0
    width, height = fig.get_size_inches() * plot.DPI
    assert pixel_size(tmp_path / "filters.png") == (round(width), round(height))
    assert "Filters of layer 0" in fig._suptitle.get_text()


def test_filters_of_an_rgb_conv_are_colour_tiles(device, tmp_path):
    clcnn.seed(4)
    model = clcnn.models.resnet20(device=device)
    fig = plot.plot_filters(model, tmp_path / "filters.png")
    weight = model.state_dict()["conv1.weight"]
    tiles = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(tiles) == 16
    for f, tile in enumerate(tiles):
        w = weight[f].transpose(1, 2, 0)
        assert_close(tile, (w - w.min()) / (w.max() - w.min()), 1e-6, 0, f"filter {f}")
    assert pixel_size(tmp_path / "filters.png") == tuple(round(v) for v in fig.get_size_inches() * plot.DPI)


def test_a_model_without_convolutions_has_no_filters(device):
    model = clcnn.Sequential([clcnn.layers.Flatten(), clcnn.layers.Dense(4, 2)], device=device)
    with pytest.raises(ValueError, match="no Conv2D"):
        plot.plot_filters(model)


def test_feature_maps_are_the_conv_and_pool_outputs(device, tmp_path):
    """LeNet-5's rows: conv (fused with tanh), avg pool, conv, avg pool; each against the oracle."""
    clcnn.seed(5)
    model = clcnn.models.lenet5(device=device)
    x = np.random.default_rng(0).standard_normal((1, 32, 32)).astype(np.float32)
    fig = plot.plot_features(model, x, tmp_path / "features.png")
    assert pixel_size(tmp_path / "features.png") == tuple(round(v) for v in fig.get_size_inches() * plot.DPI)
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    a1 = np.tanh(conv2d_forward(x[None].astype(np.float64), state["0.weight"], state["0.bias"], (1, 1), (0, 0, 0, 0)))
    p1 = avgpool2d_forward(a1, (2, 2), (2, 2), (0, 0, 0, 0))
    a2 = np.tanh(conv2d_forward(p1, state["3.weight"], state["3.bias"], (1, 1), (0, 0, 0, 0)))
    p2 = avgpool2d_forward(a2, (2, 2), (2, 2), (0, 0, 0, 0))
    rows = fig.axes[1:]                              # the input tile first, then 4 rows of 17 axes
    cols = 17
    expected = [a1[0], p1[0], a2[0], p2[0]]
    shown = [[ax.images[0].get_array() for ax in fig.axes[r * cols + 1:(r + 1) * cols] if ax.images]
             for r in range(4)]
    assert len(rows) == 4 * cols - 1 and [len(s) for s in shown] == [6, 6, 16, 16]
    for maps, want in zip(shown, expected):
        for got, ref in zip(maps, want):
            assert_close(got, ref, 1e-5, 1e-4, "feature map")
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert labels == ["0 Conv2D\n6x28x28", "2 AvgPool2D\n6x14x14", "3 Conv2D\n16x10x10", "5 AvgPool2D\n16x5x5"]


def test_feature_maps_of_a_graph_model_follow_its_layer_calls(device):
    clcnn.seed(6)
    model = clcnn.models.resnet20(device=device)
    x = np.random.default_rng(1).standard_normal((3, 32, 32)).astype(np.float32)
    outputs = model.intermediate_outputs(x[None])
    assert_close(outputs[list(outputs)[-1]], clcnn.train.predict(model, x[None]), 1e-5, 1e-4, "logits")
    fig = plot.plot_features(model, x, max_maps=4)
    labels = [t.get_text().split()[0] for ax in fig.axes for t in ax.texts]
    convs = [name for name, layer in model.named_layers().items() if isinstance(layer, clcnn.layers.Conv2D)]
    assert labels == convs and len(convs) >= 19


@given(classes=st.integers(2, 12), seed=st.integers(0, 100))
def test_confusion_heat_map_has_names_counts_and_labels(classes, seed):
    confusion = np.random.default_rng(seed).integers(0, 50, (classes, classes))
    names = [f"class {c}" for c in range(classes)]
    path = None if seed % 10 else f"/tmp/clcnn-test-confusion-{os.getpid()}.png"   # writing each costs 0.3 s
    fig = plot.plot_confusion(confusion, names, path)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("predicted class", "true class", "Confusion matrix")
    assert [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
    counts = np.array([int(t.get_text()) for t in ax.texts]).reshape(classes, classes)
    assert np.array_equal(counts, confusion)
    assert_close(ax.images[0].get_array(), confusion / np.maximum(confusion.sum(1, keepdims=True), 1), 1e-12, 0, "")
    if path:
        assert pixel_size(path) == tuple(round(v) for v in fig.get_size_inches() * plot.DPI)
        os.unlink(path)


def test_misclassified_grid_shows_the_most_confident_mistakes_first(tmp_path):
    rng = np.random.default_rng(2)
    n = 40
    labels = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    images = rng.random((n, 1, 8, 8))
    predicted = probs.argmax(1)
    wrong = [i for i in np.argsort(-probs.max(1), kind="stable") if predicted[i] != labels[i]]
    names = ["cat", "dog", "owl"]
    fig = plot.plot_misclassified(images, labels, probs, names, tmp_path / "m.png", count=5)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == [f"true {names[labels[i]]}\npredicted {names[predicted[i]]} {probs[i].max():.2f}"
                      for i in wrong[:5]]
    assert f"({len(wrong)} of {n} wrong)" in fig._suptitle.get_text()
    assert pixel_size(tmp_path / "m.png") == tuple(round(v) for v in fig.get_size_inches() * plot.DPI)
    right = plot.plot_misclassified(images, predicted, probs, names)
    assert [t.get_text() for ax in right.axes for t in ax.texts] == ["no misclassified images"]
