"""clcnn: convolutional neural networks in hand-written OpenCL C kernels.

    import clcnn
    from clcnn import layers as L
    model = clcnn.Sequential([L.Conv2D(1, 6, 5), L.Tanh(), ...], device=clcnn.get_device())

    inp = L.Input((3, 32, 32))                    # or a graph of layers, Keras-style
    out = L.Dense(16, 10)(L.Flatten()(L.GlobalAvgPool2D()(L.Conv2D(3, 16, 3)(inp))))
    model = clcnn.Model(inp, out)
"""
from . import callbacks, datasets, layers, losses, models, optim
from . import onnx   # clcnn.onnx.load / export; the onnx package loads on first use
from .device import Device, get_device, list_devices
from .errors import CheckpointError, ClcnnError, DataError, DeviceError, KernelBuildError, ShapeError
from .init import seed
from .model import Model, Sequential, load
from .parameter import Parameter
from .train import Trainer

__version__ = "0.1.0"
