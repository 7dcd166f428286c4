"""Optimizers that update parameters on the device, exactly as torch.optim defines them."""
import numpy as np

from .ops.optim import adam_update, sgd_update_many


def _params(model_or_params):
    return model_or_params.parameters() if hasattr(model_or_params, "parameters") else list(model_or_params)


class Optimizer:
    def __init__(self, model_or_params, lr):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr!r}")
        self.params = _params(model_or_params)
        self.lr = float(lr)
        self.step_count = 0
        self.state = {}  # param name -> {buffer name: device array}

    def _buffer(self, param, name):
        slots = self.state.setdefault(param.name, {})
        if name not in slots:
            slots[name] = param.device.zeros(param.shape)
        return slots[name]

    def state_dict(self):
        arrays = {f"{name}/{slot}": value.get() for name, slots in self.state.items()
                  for slot, value in slots.items()}
        return {"step_count": self.step_count, "lr": self.lr}, arrays

    def load_state_dict(self, header, arrays):
        self.step_count = int(header["step_count"])
        self.lr = float(header["lr"])
        by_name = {p.name: p for p in self.params}
        for key, value in arrays.items():
            name, slot = key.rsplit("/", 1)
            if name not in by_name:
                raise KeyError(f"optimizer state for unknown parameter {name!r}")
            self._buffer(by_name[name], slot).set(np.ascontiguousarray(value, dtype=np.float32))


class SGD(Optimizer):
    def __init__(self, model_or_params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        super().__init__(model_or_params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)

    def step(self):
        if self.params:
            bufs = [self._buffer(p, "momentum_buffer") for p in self.params] if self.momentum else None
            sgd_update_many(self.params[0].device, [p.data for p in self.params],
                            [p.grad for p in self.params], bufs, self.lr, self.momentum,
                            self.dampening, self.weight_decay, self.nesterov,
                            first_step=self.step_count == 0)
        self.step_count += 1


class Adam(Optimizer):
    def __init__(self, model_or_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model_or_params, lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Adam betas must be in [0, 1), got {betas!r}")
        self.betas, self.eps, self.weight_decay = tuple(map(float, betas)), float(eps), float(weight_decay)

    def step(self):
        self.step_count += 1
        for p in self.params:
            adam_update(p.device, p.data, p.grad, self._buffer(p, "exp_avg"),
                        self._buffer(p, "exp_avg_sq"), self.lr, self.betas[0], self.betas[1],
                        self.eps, self.weight_decay, step=self.step_count)
