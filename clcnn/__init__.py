"""clcnn: convolutional neural networks in hand-written OpenCL C kernels.

    import clcnn
    from clcnn import layers as L
    model = clcnn.Sequential([L.Conv2D(1, 6, 5), L.Tanh(), ...], device=clcnn.get_device())
"""
from . import datasets, layers, losses, models, optim
from .device import Device, get_device, list_devices
from .errors import CheckpointError, ClcnnError, DataError, DeviceError, KernelBuildError, ShapeError
from .init import seed
from .model import Sequential
from .parameter import Parameter
from .serialization import load
from .train import Trainer

__version__ = "0.1.0"
