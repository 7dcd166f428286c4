"""Sequential: a chain of layers on one device, with state_dict, summary, save and load."""
import math

import numpy as np
import pyopencl.array as cl_array

from .device import get_device
from .errors import DeviceOutOfMemory, NonFiniteError, ShapeError
from .layers import AvgPool2D, Conv2D, Dense


def _check_input(x, device, what="input"):
    """Device arrays pass through; NumPy floats become float32 device arrays; others refused.
    An empty batch is refused before anything is uploaded."""
    if isinstance(x, cl_array.Array):
        if x.dtype != np.float32:
            raise TypeError(f"{what} must be float32, got a device array of {x.dtype}")
    else:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{what} must be floating point (float32), got {x.dtype}; "
                            "convert it, e.g. images.astype(np.float32) / 255")
    if x.ndim < 2 or x.shape[0] == 0 or 0 in x.shape:
        raise ShapeError(f"{what} must be a non-empty batch (N, ...) with N >= 1, got shape "
                         f"{tuple(x.shape)}; check the data slice or the --limit/--batch-size")
    if isinstance(x, cl_array.Array):
        return x
    try:
        return device.to_device(x)
    except DeviceOutOfMemory as exc:
        raise DeviceOutOfMemory(f"{what} of batch size {x.shape[0]}: {exc}") from None


def _check_finite(x, what="input"):
    """NonFiniteError when x (NumPy or device array; the latter is read back) holds NaN/Inf."""
    host = x.get() if isinstance(x, cl_array.Array) else np.asarray(x)
    finite = np.isfinite(host)
    if not finite.all():
        bad = ~finite
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteError(
            f"{what} holds {int(np.isnan(host).sum())} NaN and {int(np.isinf(host).sum())} Inf "
            f"values (first at index {first}); clean or re-normalise the data "
            "(e.g. np.nan_to_num), or pass check_finite=False to skip this check")


class Sequential:
    """Layers applied in order. Parameters are named "<index>.<name>" as torch.nn.Sequential
    names them, so state dicts move between the two.

    A Conv2D or Dense followed by an elementwise activation layer runs as one fused kernel;
    the layer list (and so the names) stays as written.
    """

    def __init__(self, layers, device=None, check_finite=False):
        self.layers = list(layers)
        self.device = get_device(device)
        self.training = True
        # check_finite: refuse inputs holding NaN/Inf (costs a host read of device inputs).
        self.check_finite = bool(check_finite)
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
    def forward(self, x, check_finite=None):
        """y = the layers applied to x (N, C, H, W) or (N, features). check_finite (default:
        the model's setting) refuses inputs holding NaN or Inf with NonFiniteError."""
        if self.check_finite if check_finite is None else check_finite:
            _check_finite(x)
        x = _check_input(x, self.device)
        source = "the model input"
        for index, fused in self._plan:
            layer = self.layers[index]
            kwargs = {}
            if fused is not None:
                act = self.layers[fused]
                kwargs = dict(activation=act.fusable_activation, negative_slope=act.negative_slope)
            name = f"layer {index} ({type(layer).__name__})"
            try:
                # An out-of-memory error at enqueue time (drivers allocate lazily) gets one
                # retry after the pool frees its cached blocks, then a DeviceOutOfMemory.
                x = self.device.with_memory_retry(f"{name} at batch size {x.shape[0]}",
                                                  layer.forward, x, **kwargs)
            except ShapeError as exc:
                raise ShapeError(f"{name} cannot take {source} of shape {tuple(x.shape)}: {exc}") from None
            except DeviceOutOfMemory as exc:
                if str(exc).startswith("layer "):
                    raise
                raise DeviceOutOfMemory(f"layer {index} ({type(layer).__name__}) at batch size "
                                        f"{x.shape[0]}: {exc}") from None
            last = fused if fused is not None else index
            source = f"the output of layer {last} ({type(self.layers[last]).__name__})"
        return x

    __call__ = forward

    def backward(self, gy, need_input_grad=True):
        """Back-propagate dL/dy; writes every parameter's .grad and returns dL/dx (None when
        need_input_grad is False, which saves the first layer's input-gradient pass)."""
        gy = _check_input(gy, self.device, "output gradient")
        position = len(self._plan) - 1
        while position >= 0:
            index, _ = self._plan[position]
            layer, kwargs = self.layers[index], {}
            before = self.layers[self._plan[position - 1][0]] if position > 0 else None
            if (isinstance(layer, AvgPool2D) and isinstance(before, (Conv2D, Dense))
                    and before._act is not None):
                # The pool's backward also undoes the activation fused into the layer before
                # it (one pass over the big gradient instead of two); that layer then starts
                # from the pre-activation gradient.
                kwargs = dict(activation=before._act, act_output=before._y, negative_slope=before._slope)
            gy = self.device.with_memory_retry(
                f"the backward pass of layer {index} ({type(layer).__name__}) at batch "
                f"size {gy.shape[0]}", layer.backward, gy,
                need_input_grad=position > 0 or need_input_grad, **kwargs)
            if kwargs:
                position -= 1
                index = self._plan[position][0]
                gy = self.device.with_memory_retry(
                    f"the backward pass of layer {index} ({type(before).__name__}) at batch "
                    f"size {gy.shape[0]}", before.backward, gy,
                    need_input_grad=position > 0 or need_input_grad, pre_activation=True)
            position -= 1
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
