"""Weight initialisation as PyTorch does it by default, from one seedable generator."""
import math

import numpy as np

_generator = np.random.default_rng()


def seed(value):
    """Seed the generator that initialises weights and draws dropout seeds."""
    global _generator
    _generator = np.random.default_rng(value)


def generator():
    return _generator


def uniform_fan_in(shape, fan_in):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): what torch's kaiming_uniform_(a=sqrt(5)) gives for
    Conv2d/Linear weights, and the bound torch uses for their biases."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return _generator.uniform(-bound, bound, size=shape).astype(np.float32)
