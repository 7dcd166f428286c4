"""Pictures drawn with matplotlib (the `plot` extra): training curves, the first layer's
filters, feature maps, the confusion matrix and the most confidently misclassified images.

Every function returns the matplotlib Figure and, given `path`, also writes it as a PNG of
exactly figsize * DPI pixels. Figures are made on the Agg canvas directly, never through
pyplot, so nothing depends on a display or on pyplot's global state.
"""
import math

import numpy as np

from .errors import ClcnnError

DPI = 100


def _figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ClcnnError("pictures need matplotlib: pip install \"clcnn[plot]\" (or pip install matplotlib)") from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=DPI)
    return fig


def _integer_epochs(ax, epochs):
    from matplotlib.ticker import MaxNLocator
    if len(epochs) == 1:
        ax.set_xticks(epochs)        # the locator finds no whole number in a one-point range
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_history(history, path=None, title="Training curves"):
    """Loss, accuracy and learning rate per epoch (three panels, 1200x360 pixels): "loss" and
    "accuracy" of the training batches, "val_loss" and "val_accuracy" of the validation set
    (named by the records' "val_set" where present, e.g. "validation split")."""
    if not history:
        raise ValueError("plot_history needs at least one epoch of history")
    epochs = [h["epoch"] for h in history]
    val_name = next((h["val_set"] for h in history if h.get("val_set")), "validation")
    fig = _figure(12, 3.6)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    panels = ((loss_ax, "loss", "Loss", 1), (acc_ax, "accuracy", "Accuracy", 100))
    for ax, key, name, scale in panels:
        for prefix, label, style in (("", "train", "o-"), ("val_", val_name, "s-")):
            points = [(e, h[prefix + key] * scale) for e, h in zip(epochs, history)
                      if h.get(prefix + key) is not None]
            if points:
                ax.plot(*zip(*points), style, label=label, markersize=4)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if key == "accuracy" else "loss")
        _integer_epochs(ax, epochs)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    lr_ax.plot(epochs, [h["lr"] for h in history], "o-", color="tab:green", markersize=4)
    lr_ax.set_title("Learning rate")
    lr_ax.set_xlabel("epoch")
    lr_ax.set_ylabel("learning rate")
    _integer_epochs(lr_ax, epochs)
    lr_ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def _grid(count):
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def _first_conv(model):
    from .layers import Conv2D
    for key, layer in model.named_layers().items():
        if isinstance(layer, Conv2D):
            return key, layer
    raise ValueError("the model has no Conv2D layer, so no filters to show")


def plot_filters(model, path=None, title=None):
    """The first Conv2D layer's kernels as an image grid: one colour tile per filter when it
    reads 3 channels (each filter scaled to [0, 1] on its own), otherwise one tile per
    (filter, input channel) on a shared blue-white-red scale centred on 0."""
    key, layer = _first_conv(model)
    weight = model.state_dict()[f"{key}.weight"]      # (out, in / groups, kh, kw)
    out_channels, in_channels = weight.shape[:2]
    title = title or f"Filters of layer {key} ({out_channels} x {in_channels} x {weight.shape[2]}x{weight.shape[3]})"
    if in_channels == 3:
        rows, cols = _grid(out_channels)
        fig = _figure(max(cols * 1.0, 4), rows * 1.0 + 0.6)
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for ax in axes:
            ax.set_axis_off()
        for f in range(out_channels):
            tile = weight[f].transpose(1, 2, 0)
            lo, hi = tile.min(), tile.max()
            axes[f].imshow((tile - lo) / (hi - lo) if hi > lo else np.full_like(tile, 0.5), interpolation="nearest")
            axes[f].set_title(str(f), fontsize=7)
        fig.suptitle(title)
        return _save(fig, path)
    if in_channels == 1:
        rows, cols = _grid(out_channels)
        tiles = [(f, 0, divmod(f, cols)) for f in range(out_channels)]
    else:
        rows, cols = min(out_channels, 32), in_channels
        tiles = [(f, c, (f, c)) for f in range(rows) for c in range(cols)]
    fig = _figure(max(cols * 1.0, 4) + 0.8, rows * 1.0 + 0.6)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    limit = float(np.abs(weight).max()) or 1.0
    image = None
    for f, c, (r, k) in tiles:
        image = axes[r, k].imshow(weight[f, c], cmap="bwr", vmin=-limit, vmax=limit, interpolation="nearest")
        axes[r, k].set_title(f"{f}" if in_channels == 1 else f"{f}/{c}", fontsize=7)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="weight")
    fig.suptitle(title)
    return _save(fig, path)


def plot_features(model, image, path=None, max_maps=16, title="Feature maps"):
    """The feature maps of every Conv2D and pooling layer for one prepared image (C, H, W),
    as the model computes them in eval mode (a convolution fused with its activation shows the
    activated map): one row per layer, its first max_maps channels, each scaled on its own."""
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"plot_features takes one image (C, H, W), got shape {image.shape}")
    from .layers import AvgPool2D, Conv2D, MaxPool2D
    layers = model.named_layers()
    rows = []
    for name, value in model.intermediate_outputs(image[None]).items():
        layer = layers.get(name.split(":")[0])     # a shared layer's later calls are "name:k"
        if isinstance(layer, (Conv2D, MaxPool2D, AvgPool2D)) and value.ndim == 4 and value.shape[2] * value.shape[3] > 1:
            rows.append((name, layer, value[0]))
    if not rows:
        raise ValueError("the model has no Conv2D or pooling layer with a map larger than 1x1")
    cols = min(max_maps, max(maps.shape[0] for _, _, maps in rows)) + 1
    fig = _figure(cols * 0.9, len(rows) * 0.95 + 0.6)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    shown = image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0]
    for r, (name, layer, maps) in enumerate(rows):
        if r == 0:
            axes[0, 0].imshow(_unit(shown), cmap=None if shown.ndim == 3 else "gray", interpolation="nearest")
            axes[0, 0].set_title("input", fontsize=7)
        label = f"{name} {type(layer).__name__}\n{maps.shape[0]}x{maps.shape[1]}x{maps.shape[2]}"
        axes[r, 1].text(-0.1, 0.5, label, transform=axes[r, 1].transAxes, ha="right", va="center", fontsize=7)
        for c in range(min(max_maps, maps.shape[0])):
            axes[r, c + 1].imshow(maps[c], cmap="viridis", interpolation="nearest")
    fig.suptitle(title)
    return _save(fig, path)


def _unit(image):
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def plot_confusion(confusion, class_names=None, path=None, title="Confusion matrix"):
    """The confusion matrix (rows: true class, columns: predicted) as a heat map coloured by
    the fraction of each true class, with the counts written in the cells (up to 20 classes)."""
    confusion = np.asarray(confusion)
    classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    side = max(4.0, 0.5 * classes + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    fraction = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(classes), names, rotation=45, ha="right")
    ax.set_yticks(range(classes), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if classes <= 20:
        for t in range(classes):
            for p in range(classes):
                ax.text(p, t, str(int(confusion[t, p])), ha="center", va="center", fontsize=7,
                        color="white" if fraction[t, p] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    return _save(fig, path)


def plot_misclassified(images, labels, probabilities, class_names=None, path=None, count=16,
                       title="Most confidently misclassified"):
    """A grid of the `count` misclassified images with the highest predicted probability, each
    titled with its true and predicted class. images: (N, C, H, W) for display (any scale;
    each is scaled to [0, 1]); probabilities: (N, classes)."""
    images, labels, probabilities = np.asarray(images), np.asarray(labels), np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(labels)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    names = list(class_names) if class_names is not None else [str(c) for c in range(probabilities.shape[1])]
    rows, cols = _grid(max(len(chosen), 1))
    fig = _figure(max(cols * 1.6, 4), rows * 1.8 + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    if not len(chosen):
        axes[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    for ax, i in zip(axes, chosen):
        image = images[i].transpose(1, 2, 0) if images.shape[1] == 3 else images[i, 0]
        ax.imshow(_unit(image), cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title(f"true {names[labels[i]]}\npredicted {names[predicted[i]]} {confidence[i]:.2f}", fontsize=7)
    fig.suptitle(f"{title} ({len(wrong)} of {len(labels)} wrong)")
    return _save(fig, path)
