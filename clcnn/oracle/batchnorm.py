"""BatchNorm2D reference (torch.nn.BatchNorm2d semantics), forward and backward, train and eval.

x is NCHW; statistics are per channel over the N*H*W values of that channel. Pure functions:
the running statistics come back as new arrays instead of being updated in place.
weight and bias are both None for affine=False.
"""
import numpy as np


def _per_channel(v):
    return np.asarray(v)[None, :, None, None]


def momentum_factor(momentum, num_batches_tracked=None):
    """The weight of this batch in the running statistics: momentum, or with momentum=None
    torch's cumulative average 1 / num_batches_tracked (the count including this batch)."""
    if momentum is not None:
        return momentum
    return 1.0 / num_batches_tracked


def batchnorm2d_forward_train(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5,
                              num_batches_tracked=None):
    """-> (y, save_mean, save_invstd, new_running_mean, new_running_var).
    Normalises with the batch mean and biased variance; the running variance takes the
    unbiased one. Running statistics None stay None."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    if m <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
    mean = x.mean(axis=(0, 2, 3))
    var = ((x - _per_channel(mean)) ** 2).mean(axis=(0, 2, 3))
    invstd = 1.0 / np.sqrt(var + eps)
    y = _affine((x - _per_channel(mean)) * _per_channel(invstd), weight, bias)
    if running_mean is None:
        return y, mean, invstd, None, None
    f = momentum_factor(momentum, num_batches_tracked)
    new_mean = (1 - f) * running_mean + f * mean
    new_var = (1 - f) * running_var + f * var * m / (m - 1)
    return y, mean, invstd, new_mean, new_var


def batchnorm2d_forward_eval(x, weight, bias, running_mean, running_var, eps=1e-5):
    invstd = 1.0 / np.sqrt(running_var + eps)
    return _affine((x - _per_channel(running_mean)) * _per_channel(invstd), weight, bias)


def _affine(xhat, weight, bias):
    if weight is None:
        return xhat
    return xhat * _per_channel(weight) + _per_channel(bias)


def batchnorm2d_backward(x, gy, weight, save_mean, save_invstd):
    """Train mode: mean and invstd depend on x, so gx has the batch-statistics terms:
    gx = weight * invstd / M * (M gy - sum gy - xhat sum(gy xhat)). -> (gx, gweight, gbias);
    gweight and gbias are None when weight is None."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    xhat = (x - _per_channel(save_mean)) * _per_channel(save_invstd)
    sum_gy = gy.sum(axis=(0, 2, 3))
    sum_gy_xhat = (gy * xhat).sum(axis=(0, 2, 3))
    w = np.ones_like(save_mean) if weight is None else weight
    gx = _per_channel(w * save_invstd / m) * (m * gy - _per_channel(sum_gy) - xhat * _per_channel(sum_gy_xhat))
    if weight is None:
        return gx, None, None
    return gx, sum_gy_xhat, sum_gy


def batchnorm2d_backward_eval(x, gy, weight, running_mean, running_var, eps=1e-5):
    """Eval mode: the running statistics are constants, so y is affine in x per channel."""
    invstd = 1.0 / np.sqrt(running_var + eps)
    w = np.ones_like(running_mean) if weight is None else weight
    gx = gy * _per_channel(w * invstd)
    if weight is None:
        return gx, None, None
    xhat = (x - _per_channel(running_mean)) * _per_channel(invstd)
    return gx, (gy * xhat).sum(axis=(0, 2, 3)), gy.sum(axis=(0, 2, 3))
