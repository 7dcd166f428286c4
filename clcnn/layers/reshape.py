"""Flatten: (N, ...) -> (N, prod(...)) as a view of the same device buffer, no copy."""
import math

from .base import Layer


class Flatten(Layer):
    def output_shape(self, in_shape):
        return (math.prod(in_shape),)

    def forward(self, x):
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, gy, need_input_grad=True):
        return gy.reshape(self._x_shape)
