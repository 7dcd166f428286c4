"""Sequential: a chain of layers on one device, with state_dict, summary, save and load."""
import math

import numpy as np
import pyopencl.array as cl_array

from .device import get_device
from .errors import ShapeError
from .layers import Conv2D, Dense


def _check_input(x, device):
    """Device arrays pass through; NumPy floats become float32 device arrays; others refused."""
    if isinstance(x, cl_array.Array):
        if x.dtype != np.float32:
            raise TypeError(f"input must be float32, got a device array of {x.dtype}")
        return x
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"input must be floating point (float32), got {x.dtype}; "
                        "convert it, e.g. images.astype(np.float32) / 255")
    return device.to_device(x)


class Sequential:
    """Layers applied in order. Parameters are named "<index>.<name>" as torch.nn.Sequential
    names them, so state dicts move between the two.

    A Conv2D or Dense followed by an elementwise activation layer runs as one fused kernel;
    the layer list (and so the names) stays as written.
    """

    def __init__(self, layers, device=None):
        self.layers = list(layers)
        self.device = get_device(device)
        self.training = True
        for index, layer in enumerate(self.layers):
            layer.bind(self.device)
            for name, param in layer.params.items():
                param.name = f"{index}.{name}"
        self._plan = self._fuse()

    def _fuse(self):
        """[(layer index, index of an activation fused into it or None), ...]."""
        plan, i = [], 0
        while i < len(self.layers):
            layer = self.layers[i]
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if (isinstance(layer, (Conv2D, Dense)) and layer.activation is None
                    and nxt is not None and nxt.fusable_activation):
                plan.append((i, i + 1))
                i += 2
            else:
                plan.append((i, None))
                i += 1
        return plan

    # -- running -----------------------------------------------------------------------
    def forward(self, x):
        x = _check_input(x, self.device)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ShapeError(f"input must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
        for index, fused in self._plan:
            layer = self.layers[index]
            try:
                if fused is None:
                    x = layer.forward(x)
                else:
                    act = self.layers[fused]
                    x = layer.forward(x, activation=act.fusable_activation,
                                      negative_slope=act.negative_slope)
            except ShapeError as exc:
                raise ShapeError(f"layer {index} ({type(layer).__name__}): {exc}") from None
        return x

    __call__ = forward

    def backward(self, gy, need_input_grad=True):
        """Back-propagate dL/dy; writes every parameter's .grad and returns dL/dx (None when
        need_input_grad is False, which saves the first layer's input-gradient pass)."""
        gy = _check_input(gy, self.device)
        for position in range(len(self._plan) - 1, -1, -1):
            index, _ = self._plan[position]
            gy = self.layers[index].backward(gy, need_input_grad=position > 0 or need_input_grad)
        return gy

    def train(self, mode=True):
        self.training = mode
        for layer in self.layers:
            layer.training = mode
        return self

    def eval(self):
        return self.train(False)

    # -- parameters -----------------------------------------------------------------------
    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def state_dict(self):
        return {p.name: p.data.get() for p in self.parameters()}

    def load_state_dict(self, state):
        params = {p.name: p for p in self.parameters()}
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise KeyError(f"state_dict does not fit this model: missing {missing}, unexpected {unexpected}")
        for name, param in params.items():
            value = np.asarray(state[name])
            if tuple(value.shape) != param.shape:
                raise ShapeError(f"state_dict entry {name!r} has shape {tuple(value.shape)}, "
                                 f"the model's parameter has {param.shape}")
            param.data.set(np.ascontiguousarray(value, dtype=np.float32))

    # -- description ----------------------------------------------------------------------
    def output_shapes(self, input_shape):
        """Per-sample output shape after each layer; ShapeError names the layer that breaks."""
        shapes, shape = [], tuple(input_shape)
        for index, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except ShapeError as exc:
                previous = (f" (output of layer {index - 1}, {type(self.layers[index - 1]).__name__})"
                            if index else "")
                raise ShapeError(f"layer {index} ({type(layer).__name__}) cannot take input "
                                 f"{shape}{previous}: {exc}") from None
            shapes.append(shape)
        return shapes

    def summary(self, input_shape, print_fn=print):
        """Print and return a table of layer, output shape and parameter count."""
        shapes = self.output_shapes(input_shape)
        rows = [("#", "layer", "output shape", "params")]
        for index, (layer, shape) in enumerate(zip(self.layers, shapes)):
            count = sum(math.prod(p.shape) for p in layer.parameters())
            rows.append((str(index), repr(layer), "x".join(map(str, shape)), f"{count:,}"))
        total = sum(math.prod(p.shape) for p in self.parameters())
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = ["  ".join(cell.ljust(w) if c < 3 else cell.rjust(w)
                           for c, (cell, w) in enumerate(zip(row, widths))) for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines += ["-" * len(lines[0]), f"input {'x'.join(map(str, input_shape))}; "
                  f"total parameters: {total:,}"]
        text = "\n".join(lines)
        if print_fn:
            print_fn(text)
        return text

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"

    # -- files ----------------------------------------------------------------------------
    def save(self, path):
        from .serialization import save_model
        save_model(self, path)
