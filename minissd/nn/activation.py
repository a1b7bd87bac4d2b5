"""ReLU: max(0, x), and its gradient: pass grad_out where x > 0, zero elsewhere."""

import numpy as np

from .module import Module


class ReLU(Module):
    """y = max(0, x), elementwise.

    - x: any shape, float32 or float64
    - backward: grad_in = grad_out * (x > 0); the kink at 0 gets gradient 0, as in PyTorch
    """

    def forward(self, x):
        self._mask = x > 0  # kept for backward: which inputs let the gradient through
        return np.maximum(x, 0)

    def backward(self, grad_out):
        # [assignment relu_backward] The gradient passes where the input was positive, else 0.
        return grad_out * self._mask
        # [/assignment]
