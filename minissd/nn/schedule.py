"""Learning-rate schedules: callables ``lr = schedule(iteration)`` (iteration counts from 0).

The training loop sets ``optimizer.lr = schedule(it)`` before each step. They compose:
``LinearWarmup(MultiStep(1e-3, (80_000, 100_000)), warmup_iters=500)``.
"""

import math
from dataclasses import dataclass


@dataclass
class Constant:
    """lr at every iteration."""
    lr: float

    def __call__(self, it):
        return self.lr


@dataclass
class MultiStep:
    """base_lr * gamma ** (number of milestones <= it): the paper's schedule.

    SSD300 on VOC07+12 (ssd.pytorch): base_lr 1e-3, milestones (80_000, 100_000), gamma 0.1,
    120_000 iterations in all (the paper: 1e-3 for 40k iterations, then 1e-4 and 1e-5).
    """
    base_lr: float
    milestones: tuple
    gamma: float = 0.1

    def __call__(self, it):
        return self.base_lr * self.gamma ** sum(1 for m in self.milestones if it >= m)


@dataclass
class Cosine:
    """min_lr + (base_lr - min_lr) * (1 + cos(pi * it / total_iters)) / 2, then min_lr."""
    base_lr: float
    total_iters: int
    min_lr: float = 0.0

    def __call__(self, it):
        t = min(it, self.total_iters) / self.total_iters
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass
class LinearWarmup:
    """Multiply ``schedule(it)`` by a factor rising linearly from start_factor to 1.

    factor = start_factor + (1 - start_factor) * it / warmup_iters for it < warmup_iters,
    then 1. lufficc/SSD warms up for 500 iterations from 1/3 of the rate; warm-up keeps the
    first large gradients of a randomly initialised network from blowing it up.
    """
    schedule: object
    warmup_iters: int
    start_factor: float = 1.0 / 3

    def __call__(self, it):
        if it >= self.warmup_iters:
            return self.schedule(it)
        alpha = it / self.warmup_iters
        return self.schedule(it) * (self.start_factor + (1 - self.start_factor) * alpha)
