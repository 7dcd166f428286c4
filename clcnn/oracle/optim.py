"""NumPy reference for the optimizer updates, written from the torch.optim.SGD and
torch.optim.Adam documentation. Each returns new arrays instead of updating in place.
"""
import numpy as np


def sgd_update(param, grad, momentum_buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
               nesterov=False, first_step=False):
    """(new param, new momentum buffer or None)."""
    g = grad + weight_decay * param if weight_decay else grad.copy()
    buf = None
    if momentum:
        buf = g.copy() if first_step else momentum * momentum_buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return param - lr * g, buf


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, step=1):
    """(new param, new exp_avg, new exp_avg_sq); L2 weight decay added to the gradient (Adam,
    not AdamW); step counts from 1."""
    g = grad + weight_decay * param if weight_decay else grad
    m = beta1 * exp_avg + (1 - beta1) * g
    v = beta2 * exp_avg_sq + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
