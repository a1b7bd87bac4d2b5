"""Weight initialisers, seeded by a NumPy Generator.

Each returns a new float32 array of the given shape (``dtype=`` to change it):
- shape: (out, in, kh, kw) for a conv weight (PyTorch's layout), (out, in) for a matrix
- rng: ``numpy.random.Generator``, so that a seed reproduces the network exactly

fan_in = in * kh * kw (inputs feeding one output), fan_out = out * kh * kw.
- Xavier/Glorot (Glorot & Bengio 2010): Var = 2 / (fan_in + fan_out), keeps the variance of
  activations and of gradients about constant through linear layers. ssd.pytorch uses
  xavier_uniform for the extra layers and the prediction heads.
- He/Kaiming (He et al. 2015): Var = 2 / fan_in, compensates for ReLU zeroing half the
  inputs. The default of Conv2d here (fan_in, normal), for training from scratch.
"""

import math

import numpy as np


def fans(shape):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel)."""
    if len(shape) < 2:
        raise ValueError(f"fans: a weight needs at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def xavier_uniform(shape, rng, gain=1.0, dtype=np.float32):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


def xavier_normal(shape, rng, gain=1.0, dtype=np.float32):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return (rng.standard_normal(shape) * std).astype(dtype)


def he_normal(shape, rng, dtype=np.float32):
    """N(0, std^2) with std = sqrt(2 / fan_in) (ReLU gain, fan_in mode)."""
    fan_in, _ = fans(shape)
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(shape, rng, dtype=np.float32):
    """U(-a, a) with a = sqrt(6 / fan_in) (ReLU gain, fan_in mode)."""
    fan_in, _ = fans(shape)
    a = math.sqrt(6.0 / fan_in)
    return rng.uniform(-a, a, size=shape).astype(dtype)


INITIALISERS = {"he_normal": he_normal, "he_uniform": he_uniform,
                "xavier_uniform": xavier_uniform, "xavier_normal": xavier_normal}


def initialise(shape, rng, name, dtype=np.float32):
    """Look an initialiser up by name (``"he_normal"``, ``"xavier_uniform"`` ...) and call it."""
    if name not in INITIALISERS:
        raise ValueError(f"init: unknown initialiser {name!r}, choose one of {sorted(INITIALISERS)}")
    if rng is None:
        rng = np.random.default_rng()
    return INITIALISERS[name](shape, rng, dtype=dtype)
