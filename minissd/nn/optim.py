"""Optimizers: SGD (momentum, weight decay, Nesterov) and Adam, with PyTorch's update rules.

Each holds a list of Parameters and updates ``p.data`` in place from ``p.grad`` in ``step()``.
The learning rate is the plain attribute ``opt.lr``: a schedule sets it every iteration
(``opt.lr = schedule(it)``). ``state_dict()`` / ``load_state_dict()`` save the per-parameter
buffers (momentum, Adam's moments and step count) so that training can resume exactly.
"""

import numpy as np


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if lr < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {lr}")
        self.lr = float(lr)

    def zero_grad(self):
        """Set every parameter's ``.grad`` to zero."""
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        raise NotImplementedError

    def state_dict(self):
        """Buffers as ``{name: ndarray}`` (numbered by parameter position), ready for .npz."""
        return {}

    def load_state_dict(self, state):
        pass


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's rule (``torch.optim.SGD``, dampening 0).

    For each parameter p with gradient g:
      g = g + weight_decay * p                      (L2 regularisation)
      buf = g (first step), else momentum * buf + g
      g = g + momentum * buf (Nesterov), else g = buf
      p = p - lr * g
    SSD (Liu et al. 2016): lr 1e-3, momentum 0.9, weight_decay 5e-4.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)
        self.buffers = [None] * len(self.params)  # momentum buffers, created on the first step

    def step(self):
        for i, p in enumerate(self.params):
            self.buffers[i] = sgd_update(p.data, p.grad, self.buffers[i], self.lr, self.momentum,
                                         self.weight_decay, self.nesterov)

    def state_dict(self):
        return {f"momentum.{i}": b for i, b in enumerate(self.buffers) if b is not None}

    def load_state_dict(self, state):
        for i, p in enumerate(self.params):
            b = state.get(f"momentum.{i}")
            if b is not None and b.shape != p.data.shape:
                raise ValueError(f"SGD.load_state_dict: momentum.{i} has shape {b.shape}, parameter {p.data.shape}")
            self.buffers[i] = None if b is None else np.array(b, dtype=p.data.dtype)


def sgd_update(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """One SGD step on one parameter, in place; returns the new momentum buffer (or None)."""
    # [assignment sgd_step] Add weight decay, update the momentum buffer (first step: buf = g), then step against it.
    g = grad + weight_decay * data if weight_decay else grad
    if momentum:
        if buf is None:
            buf = g.copy()
        else:
            buf *= momentum
            buf += g
        g = g + momentum * buf if nesterov else buf
    data -= lr * g
    return buf
    # [/assignment]


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), PyTorch's rule (``torch.optim.Adam``, L2 weight decay).

    With t the step count (from 1):
      g = g + weight_decay * p
      m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
      p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    The divisions by (1 - b^t) undo the bias of m and v towards their zero start.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = (float(betas[0]), float(betas[1])), float(eps), float(weight_decay)
        self.t = 0
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t  # bias corrections
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p.data -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def state_dict(self):
        state = {"t": np.array(self.t)}
        state.update({f"m.{i}": m for i, m in enumerate(self.m)})
        state.update({f"v.{i}": v for i, v in enumerate(self.v)})
        return state

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for i, p in enumerate(self.params):
            for name, bufs in (("m", self.m), ("v", self.v)):
                b = np.asarray(state[f"{name}.{i}"])
                if b.shape != p.data.shape:
                    raise ValueError(f"Adam.load_state_dict: {name}.{i} has shape {b.shape}, parameter {p.data.shape}")
                bufs[i][...] = b
