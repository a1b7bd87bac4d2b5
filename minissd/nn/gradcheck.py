"""Gradient checks: compare a hand-written backward with centred finite differences in float64.

For a random fixed ``g`` shaped like the output, the scalar L = sum(f(x) * g) has
dL/dx = backward(g), which is what every backward computes. The numerical estimate of each
entry is (L(x + h e_i) - L(x - h e_i)) / (2h), whose error is O(h^2): with h = 1e-6 in
float64 a correct backward agrees to about 1e-9 .. 1e-11 (rounding, ~1e-16 / h, dominates),
a wrong one is off by O(1). Tests assert ``gradcheck(...) < 1e-6``.
"""

import numpy as np

from .module import Module


def rel_error(a, b):
    """max |a - b| / max(max |a|, max |b|): one number, scale-free, 0 when a == b.

    Taken over whole arrays rather than entry by entry, so entries whose true gradient is
    tiny (where finite differences are mostly rounding) do not dominate.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return float(np.abs(a - b).max(initial=0.0) / scale) if scale > 0 else 0.0


def numerical_gradient(loss, x, h=1e-6):
    """Centred differences of the scalar ``loss()`` with respect to every entry of ``x``.

    ``x`` is changed in place and restored, so ``loss`` must read it afresh each call.
    """
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views: writing flat[i] changes x
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = loss()
        flat[i] = old - h
        minus = loss()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def directional_error(module, x, grad_out, grad_x, rng, h=1e-5):
    """How far a float64 layer's gradients are from the gradient, along random directions.

    - module: in float64, after ``backward(grad_out)`` on a fresh ``.grad`` (its parameters'
      ``.grad`` hold that one backward); x: the float64 input of that forward; grad_x: what
      backward returned
    - returns the largest relative error of <grad, v> against (L(x + h v) - L(x - h v)) / 2h,
      L = sum(module(x) * grad_out), over one random v for the input and one per parameter
    One loss per direction instead of one per entry: a cheap check for layers too large for
    ``gradcheck`` (a wrong gradient is off by O(1) along almost every direction).
    """
    def loss():
        return float(np.vdot(grad_out, module.forward(x)))

    def along(array, grad):
        v, start = rng.standard_normal(array.shape), array.copy()
        array[...] = start + h * v
        up = loss()
        array[...] = start - h * v
        down = loss()
        array[...] = start
        want, got = (up - down) / (2 * h), float(np.vdot(grad, v))
        return abs(got - want) / max(abs(want), abs(got), 1e-12)

    errors = [along(x, grad_x)] + [along(p.data, p.grad.copy()) for p in module.parameters()]
    return max(errors)


def gradcheck(module_or_fn, inputs, backward=None, h=1e-6, seed=0, details=False):
    """Relative error between analytic and numerical gradients, in float64.

    - module_or_fn: a Module (its input gradient and every parameter's ``.grad`` are checked),
      or a function ``fn(*inputs) -> out`` together with ``backward(grad_out) -> grad`` (one
      array, or a tuple with one gradient per input) for the LAST call of ``fn``
    - inputs: one array or a list of arrays; they are copied to float64
    - details: return ``{"input.0": err, "weight": err, ...}`` instead of the largest error

    A Module is converted to float64 for the check and restored afterwards (dtypes,
    parameter values, gradients and buffers such as BatchNorm's running statistics).
    """
    single = isinstance(inputs, np.ndarray)
    xs = [np.array(x, dtype=np.float64) for x in ([inputs] if single else inputs)]
    if isinstance(module_or_fn, Module):
        errors = _check_module(module_or_fn, xs, h, seed)
    else:
        if backward is None:
            raise ValueError("gradcheck: a function needs backward=, the function computing its gradient")
        errors = _check_function(module_or_fn, backward, xs, h, seed)
    return errors if details else max(errors.values())


def _grad_out_rng(seed):
    """The generator of the fixed grad_out: a stream of its own ([seed, 1]) rather than
    default_rng(seed), which is what tests typically draw the inputs from. With the same
    stream, grad_out == x, and for layers such as BatchNorm (whose output is invariant to
    shifting and scaling x) the true gradient of sum(f(x) * x) is then ~0, leaving nothing
    but rounding for rel_error to measure."""
    return np.random.default_rng([seed, 1])


def _check_function(fn, backward, xs, h, seed):
    g = _grad_out_rng(seed).standard_normal(np.shape(fn(*xs)))  # fixed grad_out
    analytic = backward(g)
    if isinstance(analytic, np.ndarray) or np.isscalar(analytic):
        analytic = (analytic,)

    def loss():
        return float(np.sum(fn(*xs) * g))

    return {f"input.{i}": rel_error(a, numerical_gradient(loss, x, h)) for i, (x, a) in enumerate(zip(xs, analytic))}


def _check_module(module, xs, h, seed):
    if len(xs) != 1:
        raise ValueError(f"gradcheck: a Module takes one input, got {len(xs)}")
    x = xs[0]
    params = list(module.named_parameters())
    saved_state = module.state_dict()
    saved_grads = [(p, p.grad.copy()) for _, p in params]
    buffer_dtypes = {name: b.dtype for name, b in module.named_buffers()}
    param_dtypes = [(p, p.data.dtype) for _, p in params]
    module.to(np.float64)
    try:
        module.zero_grad()
        g = _grad_out_rng(seed).standard_normal(module.forward(x).shape)  # fixed grad_out
        module.zero_grad()
        module.forward(x)
        grad_x = module.backward(g)
        analytic = {name: p.grad.copy() for name, p in params}

        def loss():
            return float(np.sum(module.forward(x) * g))

        errors = {}
        if grad_x is not None:
            errors["input.0"] = rel_error(grad_x, numerical_gradient(loss, x, h))
        for name, p in params:
            errors[name] = rel_error(analytic[name], numerical_gradient(loss, p.data, h))
        return errors
    finally:  # put the module back as it was: dtypes, values, gradients, buffers
        for p, dtype in param_dtypes:
            p.data = p.data.astype(dtype)
        for p, grad in saved_grads:
            p.grad = grad
        _restore_buffer_dtypes(module, buffer_dtypes)
        module.load_state_dict(saved_state)


def _restore_buffer_dtypes(module, dtypes, prefix=""):
    for name in getattr(module, "_buffers", ()):
        setattr(module, name, getattr(module, name).astype(dtypes[prefix + name]))
    for name, child in module.named_children():
        _restore_buffer_dtypes(child, dtypes, prefix + name + ".")
