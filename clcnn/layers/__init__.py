"""The layers of a Sequential model (NCHW float32; weights laid out as PyTorch's)."""
from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .pooling import AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D
from .reshape import Flatten

LAYER_TYPES = {cls.__name__: cls for cls in (
    Conv2D, Dense, ReLU, LeakyReLU, Tanh, Sigmoid, Softmax, MaxPool2D, AvgPool2D,
    GlobalAvgPool2D, GlobalMaxPool2D, Flatten, Dropout)}

__all__ = sorted(LAYER_TYPES) + ["Layer", "LAYER_TYPES"]
