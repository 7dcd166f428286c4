"""Input: the start of a graph. `Input(shape)` gives a symbolic tensor to call layers on."""
from ..graph import Node
from .base import Layer, check_positive_int


class InputLayer(Layer):
    """Holds the per-sample shape of a model input (no batch axis); runs nothing."""
    replayable = True
    auto_name = "input"

    def __init__(self, shape, name=None):
        super().__init__(name)
        if isinstance(shape, int):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not shape:
            raise ValueError(f"Input shape must be a tuple of ints without the batch axis, e.g. (3, 32, 32); got {shape!r}")
        self.shape = tuple(check_positive_int(d, "Input shape entries") for d in shape)

    def config(self):
        return {"shape": list(self.shape)}


def Input(shape, name=None):
    """A symbolic model input of per-sample `shape` (e.g. (3, 32, 32) for NCHW images)."""
    layer = InputLayer(shape, name=name)
    return Node(layer, [], layer.shape).output
