"""minissd.nn: layers with hand-written backward passes, optimizers, schedules, gradient checks.

Contract (DESIGN.md): NCHW float32 at every module boundary (float64 works too, for gradient
checks); conv weights (out, in, kh, kw) as in PyTorch; ``forward(x)`` then
``backward(grad_out) -> grad_in``, which ADDS into every ``param.grad``.
"""

from . import init
from .activation import ReLU
from .conv import Conv2d
from .gradcheck import directional_error, gradcheck, numerical_gradient, rel_error
from .module import Module, Parameter, Sequential
from .norm import BatchNorm2d, L2Norm, set_batchnorm_group
from .optim import SGD, Adam
from .pool import MaxPool2d
from .schedule import Constant, Cosine, LinearWarmup, MultiStep

__all__ = ["Module", "Parameter", "Sequential", "Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d",
           "L2Norm", "set_batchnorm_group", "SGD", "Adam", "Constant", "MultiStep", "Cosine", "LinearWarmup",
           "gradcheck", "directional_error", "rel_error", "numerical_gradient", "init"]
