"""A trainable tensor: its device data and the gradient the last backward wrote."""


class Parameter:
    def __init__(self, name, host_value):
        self.name = name            # "weight" on the layer; "3.weight" once a model owns it
        self.shape = tuple(host_value.shape)
        self._initial = host_value  # dropped once uploaded: the device copy is the truth
        self.data = None            # pyopencl Array once bound to a device
        self.grad = None

    def bind(self, device):
        if self.data is None:
            self.device = device
            self.data = device.to_device(self._initial)
            self.grad = device.zeros(self.shape)
            self._initial = None

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.shape})"
