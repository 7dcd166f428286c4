"""Parameters and buffers: a layer's tensors, their device data and the gradient of the last
backward pass."""
import weakref

import numpy as np

# Models frozen for inference (Model.freeze) keep arrays derived from their weights; clcnn's
# own writes to a parameter (set_value, optimizer steps) unfreeze the models that hold it.
frozen_models = weakref.WeakSet()


def changing(params):
    """Unfreeze every frozen model holding one of params: their values are about to change."""
    if not frozen_models:
        return
    ids = {id(p) for p in params}
    for model in list(frozen_models):
        if any(id(t) in ids for t in model.named_tensors().values()):
            model.unfreeze()


class Parameter:
    """A tensor of a layer. Trainable ones get a gradient and the optimizer's updates; buffers
    (trainable=False, e.g. BatchNorm's running statistics) are saved and loaded, nothing else.
    `host=True` keeps the value in NumPy (counters such as num_batches_tracked)."""

    def __init__(self, name, host_value, trainable=True, host=False):
        self.name = name            # "weight" on the layer; "<layer>.weight" once a model owns it
        self.shape = tuple(host_value.shape)
        self.dtype = np.dtype(host_value.dtype)
        self.trainable, self.host = bool(trainable), bool(host)
        self._initial = host_value  # dropped once uploaded: the device copy is the truth
        self.data = host_value if host else None   # pyopencl Array once bound to a device
        self.grad = None
        self.device = None
        self._owner = None          # weak reference to the model that named it
        self._fresh = False         # True from the start of a backward pass until its first gradient

    def bind(self, device):
        if self.device is not None and self.device is not device:
            raise ValueError(f"parameter {self.name!r} already lives on {self.device.name}; a layer "
                             "can be shared only by models on the same device")
        if self.device is None:
            self.device = device
            if not self.host:
                self.data = device.to_device(self._initial)
                self.grad = device.zeros(self.shape) if self.trainable else None
            self._initial = None

    def claim(self, model, name):
        """Name this parameter for `model`. A parameter keeps the name its first model gave it
        while that model lives: a second model that would rename it is refused, so a file
        saved by the first model always loads again."""
        owner = self._owner() if self._owner is not None else None
        if owner is not None and owner is not model and self.name != name:
            raise ValueError(
                f"this layer's {name.rsplit('.', 1)[-1]!r} already belongs to another model, where it "
                f"is named {self.name!r}; here it would be {name!r}. Share a layer only between "
                "models that give it the same name (clcnn.Model with name= on the layer), or build "
                "a new layer")
        self.name, self._owner = name, weakref.ref(model)

    def value(self):
        """The value as a NumPy array."""
        return self.data.copy() if self.host else self.data.get()

    def set_value(self, value):
        changing([self])
        if self.host:
            self.data = np.array(value, dtype=self.dtype).reshape(self.shape)
        else:
            self.data.set(np.ascontiguousarray(value, dtype=np.float32))

    def accumulate(self, grad):
        """Add grad to this backward pass's gradient (a shared layer adds one per call)."""
        if self._fresh:
            self.grad, self._fresh = grad, False
        else:
            self.device.untracked("a gradient sum")   # pyopencl's own kernel, not launch()
            self.grad = self.grad + grad

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.shape})"
