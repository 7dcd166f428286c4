"""Optimizers that update parameters on the device, exactly as torch.optim defines them."""
import math

import numpy as np

from .ops.optim import ADAM_STEP_ARGUMENTS, adam_step_scalars, adam_update, sgd_update_many
from .parameter import changing


def _params(model_or_params):
    return model_or_params.parameters() if hasattr(model_or_params, "parameters") else list(model_or_params)


def _check_number(name, value, low=0.0, low_open=False):
    """value as a float, or ValueError: NaN and Inf never make a usable setting."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < low or (low_open and number == low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


class Optimizer:
    def __init__(self, model_or_params, lr):
        lr = _check_number("learning rate", lr, low_open=True)
        self.params = _params(model_or_params)
        self.lr = float(lr)
        self.step_count = 0
        self.state = {}  # param name -> {buffer name: device array}

    def _buffer(self, param, name):
        slots = self.state.setdefault(param.name, {})
        if name not in slots:
            slots[name] = param.device.zeros(param.shape)
        return slots[name]

    def replay_key(self):
        """The settings a recorded training step of this optimizer depends on (see
        clcnn.replay), or None when its steps cannot be replayed: a replay enqueues the
        recorded launches again, so their scalars must not change between steps."""
        return None

    def replayed_step(self):
        """The host-side part of step() for a step whose launches were replayed."""
        self.step_count += 1

    def state_dict(self):
        arrays = {f"{name}/{slot}": value.get() for name, slots in self.state.items()
                  for slot, value in slots.items()}
        return {"step_count": self.step_count, "lr": self.lr}, arrays

    def load_state_dict(self, header, arrays):
        self.step_count = int(header["step_count"])
        self.lr = _check_number("the saved learning rate", header["lr"], low_open=True)
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
        momentum, dampening = _check_number("momentum", momentum), _check_number("dampening", dampening)
        weight_decay = _check_number("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)

    def replay_key(self):
        if type(self).step is not SGD.step:    # a subclass's own update may differ per step
            return None
        return (id(self), self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov,
                self.step_count == 0)

    def step(self):
        changing(self.params)
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
        if len(betas) != 2 or not all(0 <= _check_number("Adam betas", b) < 1 for b in betas):
            raise ValueError(f"Adam betas must be two numbers in [0, 1), got {betas!r}")
        eps, weight_decay = _check_number("eps", eps), _check_number("weight_decay", weight_decay)
        self.betas, self.eps, self.weight_decay = tuple(map(float, betas)), eps, weight_decay

    def replay_key(self):
        if type(self).step is not Adam.step:
            return None
        return (id(self), self.lr, self.betas, self.eps, self.weight_decay)

    def step(self):
        changing(self.params)
        self.step_count += 1
        for p in self.params:
            launched = adam_update(p.device, p.data, p.grad, self._buffer(p, "exp_avg"),
                                   self._buffer(p, "exp_avg_sq"), self.lr, self.betas[0], self.betas[1],
                                   self.eps, self.weight_decay, step=self.step_count)
            recorder = p.device.recorder
            if launched and recorder is not None:   # a replay runs the next step's bias corrections
                for argument, k in zip(ADAM_STEP_ARGUMENTS, range(2)):
                    recorder.vary(argument, lambda k=k: adam_step_scalars(
                        self.lr, self.betas[0], self.betas[1], self.step_count + 1)[k])
