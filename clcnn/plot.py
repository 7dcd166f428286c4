"""Training curves as a PNG, drawn with NumPy (no plotting library needed)."""
import numpy as np

from .imageio import write_png

_COLORS = {"train": (31, 119, 180), "validation": (214, 39, 40)}


def _panel(height, width, series, lo, hi):
    panel = np.full((height, width, 3), 255, dtype=np.uint8)
    panel[[0, -1], :] = 160
    panel[:, [0, -1]] = 160
    for name, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            continue
        xs = np.linspace(4, width - 5, max(len(values), 2))[:len(values)]
        ys = (height - 5) - (np.clip(values, lo, hi) - lo) / max(hi - lo, 1e-12) * (height - 10)
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
            for t in np.linspace(0, 1, steps):
                x, y = int(round(x0 + t * (x1 - x0))), int(round(y0 + t * (y1 - y0)))
                panel[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = _COLORS[name]
        for x, y in zip(xs, ys):
            panel[max(int(y) - 2, 0):int(y) + 3, max(int(x) - 2, 0):int(x) + 3] = _COLORS[name]
    return panel


def plot_history(history, path, width=480, height=240):
    """Two panels side by side: loss (left) and accuracy (right); blue train, red validation."""
    loss = {"train": [h["loss"] for h in history],
            "validation": [h["val_loss"] for h in history if "val_loss" in h]}
    acc = {"train": [h["accuracy"] for h in history],
           "validation": [h["val_accuracy"] for h in history if "val_accuracy" in h]}
    all_loss = [v for vs in loss.values() for v in vs] or [0, 1]
    all_acc = [v for vs in acc.values() for v in vs] or [0, 1]
    left = _panel(height, width, loss, 0.0, max(all_loss) * 1.05)
    right = _panel(height, width, acc, min(all_acc) - 0.01, min(max(all_acc) + 0.01, 1.0))
    gap = np.full((height, 8, 3), 255, dtype=np.uint8)
    write_png(path, np.concatenate([left, gap, right], axis=1))
