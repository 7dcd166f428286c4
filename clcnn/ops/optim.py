"""Optimizer update host wrappers (kernels/optim.cl): in place on device arrays, exactly the
update rules of torch.optim.SGD and torch.optim.Adam (Adam's weight decay is L2, not AdamW)."""
import math

import numpy as np

from ..errors import ShapeError
from ._common import buf, f32, i32, launch

# A fixed local size: PoCL compiles one work-group function per local size, and with None it
# would pick (and compile) a new one for every new parameter size.
_LOCAL = (64,)
_MAX_INT = 2 ** 31 - 1
_CHUNK = 16    # elements per work item in sgd_update_group: optim.cl's CHUNK
_GROUP = 12    # tensors per sgd_update_group launch


def _check_same(param, *others):
    for name, array in others:
        if array.dtype != np.float32 or param.dtype != np.float32:
            raise TypeError(f"optimizer buffers must be float32, got {param.dtype} and {name} {array.dtype}")
        if tuple(array.shape) != tuple(param.shape):
            raise ShapeError(f"{name} shape {tuple(array.shape)} != parameter shape {tuple(param.shape)}")
        if not array.flags.c_contiguous or not param.flags.c_contiguous:
            raise ValueError("optimizer buffers must be C-contiguous")
    return param.size


def sgd_update(dev, param, grad, momentum_buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
               nesterov=False, first_step=False):
    """param -= lr * step, torch.optim.SGD's rule; momentum_buf (updated in place) may be None
    when momentum == 0. first_step: the buffer is set to the gradient instead of decayed."""
    use_momentum = momentum != 0
    if use_momentum and momentum_buf is None:
        raise ValueError("sgd_update with momentum needs a momentum buffer")
    count = _check_same(param, ("grad", grad), *([("momentum_buf", momentum_buf)] if use_momentum else []))
    if count == 0:
        return
    launch(dev, dev.kernel("optim.cl", "sgd_update"), (count,), _LOCAL,
           buf(param), buf(grad), buf(momentum_buf if use_momentum else param), i32(count),
           f32(lr), f32(momentum), f32(1.0 - dampening), f32(weight_decay),
           i32(use_momentum), i32(bool(nesterov)), i32(bool(first_step)))


def sgd_update_many(dev, params, grads, momentum_bufs, lr, momentum=0.0, dampening=0.0,
                    weight_decay=0.0, nesterov=False, first_step=False):
    """sgd_update of every (param, grad, momentum_buf) of the lists, twelve tensors per launch.
    momentum_bufs may be None (no momentum)."""
    use_momentum = momentum != 0
    if momentum_bufs is None:
        if use_momentum:
            raise ValueError("sgd_update_many with momentum needs momentum buffers")
        momentum_bufs = params
    triples = []
    for param, grad, mbuf in zip(params, grads, momentum_bufs):
        count = _check_same(param, ("grad", grad), *([("momentum_buf", mbuf)] if use_momentum else []))
        if count:
            triples.append((param, grad, mbuf, count))
    kernel = dev.kernel("optim.cl", "sgd_update_group")
    for start in range(0, len(triples), _GROUP):
        group = triples[start:start + _GROUP]
        group += [group[-1][:3] + (0,)] * (_GROUP - len(group))   # unused slots: count 0
        counts = [t[3] for t in group]
        if max(counts) > _MAX_INT - _CHUNK or sum(-(-c // _CHUNK) for c in counts) > _MAX_INT:
            raise ValueError("parameters too large for 32-bit indexing")
        firsts = [0] + list(np.cumsum([-(-c // _CHUNK) for c in counts]))
        slots = [a for t in reversed(range(_GROUP)) for a in (buf(group[t][0]), buf(group[t][1]), buf(group[t][2]),
                                                           i32(counts[t]), i32(firsts[t]))]
        launch(dev, kernel, (int(firsts[-1]),), _LOCAL, *slots, i32(firsts[-1]), f32(lr), f32(momentum),
               f32(1.0 - dampening), f32(weight_decay), i32(use_momentum), i32(bool(nesterov)),
               i32(bool(first_step)))


# Positions of the step's two bias-correction scalars among adam_update's kernel arguments: a
# recorded training step sets them anew at each replay (optim.Adam, clcnn.replay).
ADAM_STEP_ARGUMENTS = (11, 12)


def adam_step_scalars(lr, beta1, beta2, step):
    """(step size, sqrt of the second bias correction) of Adam step `step` as float32 kernel
    arguments: computed in double precision on the host, as torch does for its Python-float
    step."""
    return f32(lr / (1.0 - beta1 ** step)), f32(math.sqrt(1.0 - beta2 ** step))


def adam_update(dev, param, grad, exp_avg, exp_avg_sq, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, step=1):
    """One torch.optim.Adam step (step counts from 1); param, exp_avg, exp_avg_sq in place.
    Returns whether it launched a kernel (an empty parameter needs none)."""
    if step < 1:
        raise ValueError(f"Adam step counts from 1, got {step}")
    count = _check_same(param, ("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq))
    if count == 0:
        return False
    launch(dev, dev.kernel("optim.cl", "adam_update"), (count,), _LOCAL,
           buf(param), buf(grad), buf(exp_avg), buf(exp_avg_sq), i32(count),
           f32(beta1), f32(beta2), f32(1.0 - beta1), f32(1.0 - beta2), f32(eps), f32(weight_decay),
           *adam_step_scalars(lr, beta1, beta2, step))
    return True
