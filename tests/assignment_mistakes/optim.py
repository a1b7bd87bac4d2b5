"""Wrong SGD steps (drop-ins for minissd.nn.optim.sgd_update), as students write them.

PyTorch's rule, which the reference follows: g = grad + wd * p; buf = m * buf + g (the first
step: buf = a copy of g); p -= lr * buf (Nesterov: p -= lr * (g + m * buf)).
"""


def sgd_folding_lr_into_momentum(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """buf = m * buf + lr * g; p -= buf: the same while lr is constant, not under a schedule."""
    g = grad + weight_decay * data
    if momentum:
        buf = lr * g if buf is None else momentum * buf + lr * g
        data -= (lr * g + momentum * buf) if nesterov else buf
    else:
        data -= lr * g
    return buf


def sgd_weight_decay_after_momentum(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """The momentum buffer built from the bare gradient, weight decay added at the step."""
    if momentum:
        buf = grad.copy() if buf is None else momentum * buf + grad
        step = grad + momentum * buf if nesterov else buf
    else:
        step = grad
    data -= lr * (step + weight_decay * data)
    return buf


def sgd_nesterov_with_the_wrong_sign(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """Nesterov's look-ahead subtracted: g - m * buf."""
    g = grad + weight_decay * data
    if momentum:
        buf = g.copy() if buf is None else momentum * buf + g
        g = g - momentum * buf if nesterov else buf
    data -= lr * g
    return buf


def sgd_buffer_aliasing_the_gradient(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """The first step's buffer is the gradient array itself (no copy): zero_grad then wipes it,
    and ``buf *= m`` scales the gradient."""
    g = grad + weight_decay * data if weight_decay else grad
    if momentum:
        if buf is None:
            buf = g
        else:
            buf *= momentum
            buf += g
        g = g + momentum * buf if nesterov else buf
    data -= lr * g
    return buf


def sgd_dampened_momentum(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """An average, buf = m * buf + (1 - m) * g, for PyTorch's sum buf = m * buf + g."""
    g = grad + weight_decay * data
    if momentum:
        buf = g.copy() if buf is None else momentum * buf + (1 - momentum) * g
        g = g + momentum * buf if nesterov else buf
    data -= lr * g
    return buf


def sgd_rebinding_data(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """``data = data - lr * g`` binds a new local array: the parameter never moves."""
    g = grad + weight_decay * data
    if momentum:
        buf = g.copy() if buf is None else momentum * buf + g
        g = g + momentum * buf if nesterov else buf
    data = data - lr * g
    return buf


def sgd_weight_decay_into_the_grad(data, grad, buf, lr, momentum, weight_decay, nesterov):
    """Weight decay added into the caller's .grad in place (``grad += wd * p``)."""
    grad += weight_decay * data
    if momentum:
        buf = grad.copy() if buf is None else momentum * buf + grad
        step = grad + momentum * buf if nesterov else buf
    else:
        step = grad
    data -= lr * step
    return buf
