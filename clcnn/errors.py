"""The exceptions clcnn raises. Each message names the thing that was wrong and what to do."""


class ClcnnError(Exception):
    """Base class of every clcnn error."""


class DeviceError(ClcnnError):
    """No OpenCL device matches, or the device failed (out of memory, lost)."""


class KernelBuildError(ClcnnError):
    """An OpenCL program failed to build; the message carries the full build log."""


class ShapeError(ClcnnError, ValueError):
    """A tensor's shape does not fit the layer or op it was given to."""


class CheckpointError(ClcnnError):
    """A checkpoint or saved model file is missing, truncated, corrupt or incompatible."""


class DataError(ClcnnError):
    """A data file (IDX, image) is missing, truncated or corrupt."""


class DeviceOutOfMemory(DeviceError):
    """The device could not hold a buffer (or a launch's working set), even after the memory
    pool gave back every block it was holding."""


class NonFiniteError(ClcnnError, ValueError):
    """An input holds NaN or Inf where finite values were asked for (check_finite=True)."""
