"""The Layer base class: validate and store hyperparameters, own parameters, forward/backward."""
from ..errors import ShapeError


class Layer:
    """A step of a Sequential model.

    Subclasses set `self.params` (ordered name -> Parameter), implement `output_shape(in_shape)`
    (shapes without the batch axis; raise ShapeError on a bad input), `forward(x)` on device
    arrays keeping what backward needs, and `backward(gy)` returning dL/dx and writing the
    parameters' .grad. `config()` returns the constructor arguments, for saving.
    """

    #: elementwise activation name that a preceding Conv2D/Dense may fuse, else None
    fusable_activation = None

    def __init__(self):
        self.params = {}
        self.device = None
        self.training = True

    def bind(self, device):
        self.device = device
        for param in self.params.values():
            param.bind(device)

    def parameters(self):
        return list(self.params.values())

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    def config(self):
        return {}

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def _require_rank(self, in_shape, rank, layout):
        if len(in_shape) != rank:
            raise ShapeError(f"{type(self).__name__} expects input of shape {layout} per sample, "
                             f"got {tuple(in_shape)}")
