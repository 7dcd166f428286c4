"""The layers of a model (NCHW float32; weights laid out as PyTorch's)."""
from .activations import Identity, LeakyReLU, ReLU, ReLU6, Sigmoid, Tanh
from .base import Layer
from .batchnorm import BatchNorm2D
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .elementwise import BroadcastAdd, Clip, Div, Mul, PReLU, Sub
from .input import Input, InputLayer
from .layout import Pad, Reshape, Transpose
from .lrn import LRN
from .merge import Add, Concat
from .pooling import AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D
from .reshape import Flatten
from .softmax import LogSoftmax, Softmax   # Softmax with an axis; (N, K) as before

LAYER_TYPES = {cls.__name__: cls for cls in (
    Conv2D, Dense, ReLU, ReLU6, LeakyReLU, Tanh, Sigmoid, Softmax, Identity, MaxPool2D, AvgPool2D,
    GlobalAvgPool2D, GlobalMaxPool2D, Flatten, Dropout, BatchNorm2D, Add, Concat,
    LRN, PReLU, Clip, BroadcastAdd, Sub, Mul, Div, Transpose, Reshape, Pad, LogSoftmax)}

__all__ = sorted(LAYER_TYPES) + ["Layer", "LAYER_TYPES", "Input", "InputLayer"]
