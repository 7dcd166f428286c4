"""clcnn: convolutional neural networks in hand-written OpenCL C kernels."""
from .device import Device, get_device, list_devices
from .errors import CheckpointError, ClcnnError, DataError, DeviceError, KernelBuildError, ShapeError

__version__ = "0.1.0"
