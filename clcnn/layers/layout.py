"""Layout layers of imported models: Transpose (on the device), Reshape (a view) and constant
Pad of H and W."""
import math

from ..errors import ShapeError
from ..ops import layout as layout_ops
from .base import Layer


class Transpose(Layer):
    """Permute the axes. `perm` lists either the per-sample axes (0 is the first axis after the
    batch: Transpose((1, 2, 0)) turns (N, C, H, W) into (N, H, W, C)) or, one entry longer,
    every axis as ONNX Transpose does (Transpose((0, 2, 3, 1)), the same). In a model the batch
    axis stays first; clcnn.ops.layout.transpose moves any axis of a device array."""

    def __init__(self, perm, name=None):
        super().__init__(name)
        try:
            perm = tuple(perm)
        except TypeError:
            raise ValueError(f"Transpose perm must be a sequence of axis indices, got {perm!r}") from None
        if any(isinstance(p, bool) or not isinstance(p, int) for p in perm) or sorted(perm) != list(range(len(perm))):
            raise ValueError(f"Transpose perm must be a permutation of 0..{len(perm) - 1}, got {perm!r}")
        self.perm = perm

    def _full_perm(self, rank):
        """The permutation of all rank + 1 axes (batch included) for per-sample rank `rank`."""
        if len(self.perm) == rank:
            return (0,) + tuple(p + 1 for p in self.perm)
        if len(self.perm) == rank + 1:
            if self.perm[0] != 0:
                raise ShapeError(f"Transpose perm {self.perm} moves the batch axis; in a model the batch "
                                 "axis stays first (perm[0] == 0)")
            return self.perm
        raise ShapeError(f"Transpose perm {self.perm} has {len(self.perm)} axes; the input has {rank} per "
                         f"sample ({rank + 1} with the batch axis)")

    def output_shape(self, in_shape):
        full = self._full_perm(len(in_shape))
        return tuple(in_shape[p - 1] for p in full[1:])

    def forward(self, ctx, x):
        ctx.perm = self._full_perm(x.ndim - 1)
        return layout_ops.transpose(self.device, x, ctx.perm)

    def backward(self, ctx, gy, need_input_grad=True):
        return layout_ops.transpose_backward(self.device, gy, ctx.perm)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import layout as o_layout
        ctx.perm = self._full_perm(x.ndim - 1)
        return o_layout.transpose(x, ctx.perm)

    def reference_backward(self, ctx, params, gy):
        from ..oracle import layout as o_layout
        return o_layout.transpose_backward(gy, ctx.perm), {}

    def torch_module(self):
        from .base import torch_function
        return torch_function(lambda x: x.permute(*self._full_perm(x.dim() - 1)))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.transpose((batch,) + tuple(in_shapes[0]), self._full_perm(len(in_shapes[0])))]

    def config(self):
        return {"perm": list(self.perm)}


class Reshape(Layer):
    """Reshape each sample to `shape` (the batch axis is kept): -1 takes what is left (once), 0
    keeps the input's size on that axis, as in ONNX Reshape. A view: no copy, no kernel."""

    def __init__(self, shape, name=None):
        super().__init__(name)
        try:
            shape = tuple(shape)
        except TypeError:
            raise ValueError(f"Reshape shape must be a sequence of ints, got {shape!r}") from None
        if any(isinstance(s, bool) or not isinstance(s, int) or s < -1 for s in shape) or list(shape).count(-1) > 1:
            raise ValueError(f"Reshape shape must hold ints >= 0 and at most one -1, got {shape!r}")
        self.shape = shape

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        out = []
        for i, s in enumerate(self.shape):
            if s == 0:
                if i >= len(in_shape):
                    raise ShapeError(f"Reshape {self.shape}: 0 at axis {i} copies an input axis, but the input "
                                     f"{in_shape} has {len(in_shape)} per sample")
                s = in_shape[i]
            out.append(s)
        total = math.prod(in_shape)
        if -1 in out:
            known = math.prod(s for s in out if s != -1)
            if known == 0 or total % known:
                raise ShapeError(f"Reshape {self.shape} cannot take input {in_shape} ({total} elements per sample)")
            out[out.index(-1)] = total // known
        if math.prod(out) != total:
            raise ShapeError(f"Reshape {self.shape} gives {tuple(out)} ({math.prod(out)} elements) but the input "
                             f"{in_shape} has {total} per sample")
        return tuple(out)

    def forward(self, ctx, x):
        ctx.x_shape = x.shape
        return x.reshape((x.shape[0],) + self.output_shape(x.shape[1:]))

    def backward(self, ctx, gy, need_input_grad=True):
        return gy.reshape(ctx.x_shape)

    def reference_forward(self, ctx, params, x, training):
        ctx.x_shape = x.shape
        return x.reshape((x.shape[0],) + self.output_shape(x.shape[1:]))

    def reference_backward(self, ctx, params, gy):
        return gy.reshape(ctx.x_shape), {}

    def torch_module(self):
        from .base import torch_function
        return torch_function(lambda x: x.reshape((x.shape[0],) + self.output_shape(tuple(x.shape[1:]))))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        return []    # a view: no kernel

    def config(self):
        return {"shape": list(self.shape)}


class Pad(Layer):
    """Constant padding of the last two axes (H, W): pads an int, (ph, pw) or (top, bottom,
    left, right), as Conv2D's padding; negative pads crop (ONNX Pad, mode constant).
    (N, C, H, W) -> (N, C, H + top + bottom, W + left + right)."""

    def __init__(self, pads, value=0.0, name=None):
        super().__init__(name)
        self.pads = layout_ops.check_pads(pads, "Pad")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Pad value must be a number, got {value!r}")
        self.value = float(value)

    def output_shape(self, in_shape):
        return layout_ops.pad_shape(tuple(in_shape), self.pads, "Pad")

    def forward(self, ctx, x):
        ctx.x_shape = x.shape
        return layout_ops.pad_forward(self.device, x, self.pads, self.value)

    def backward(self, ctx, gy, need_input_grad=True):
        return layout_ops.pad_backward(self.device, gy, ctx.x_shape, self.pads)

    def reference_forward(self, ctx, params, x, training):
        from ..oracle import layout as o_layout
        ctx.x_shape = x.shape
        return o_layout.pad_forward(x, self.pads, self.value)

    def reference_backward(self, ctx, params, gy):
        from ..oracle import layout as o_layout
        return o_layout.pad_backward(gy, ctx.x_shape, self.pads), {}

    def torch_module(self):
        import torch.nn.functional as F
        from .base import torch_function
        top, bottom, left, right = self.pads
        return torch_function(lambda x: F.pad(x, (left, right, top, bottom), value=self.value))

    def op_cases(self, in_shapes, batch, fused_activation=None, need_input_grad=True, training=True, **fused):
        from .. import opspec
        return [opspec.pad((batch,) + tuple(in_shapes[0]), self.pads, self.value)]

    def config(self):
        return {"pads": list(self.pads), "value": self.value}
