"""DataParallel: each thread runs the whole network on its share of the batch.

Why. ``threads.run_pieces`` splits every layer's big matrix product over the cores, but the
threads meet at the end of every layer, and what lies between the products (BatchNorm, ReLU,
pooling, the heads' reshapes, Python itself) runs on one core. On the tiny SSD (batch 16, 2
cores) that left a 1-thread step of 342 ms at 231 ms with two threads: 1.5x, not 2x. Giving
each thread half of the batch instead, for the whole forward and the whole backward, leaves
nothing serial but the loss and the sum of the gradients (docs/ch05-nn.md has the figures).

How. Replica 0 is the model itself; every other replica is a copy whose parameters share the
model's weight arrays (``Parameter.data``: one array, so an optimizer step on the model moves
every replica) but have their own ``.grad``, and whose layers keep their own activations for
backward. Inside a replica every layer runs single-threaded (``threads.inline``).

    forward(x):       replica r runs images [b_r, b_r+1) in thread r; outputs concatenated
    backward(*grads): replica r runs rows [b_r, b_r+1) of every gradient in thread r;
                      then the replicas' parameter gradients are added into the model's

The one difference from running the model on the whole batch: BatchNorm normalises each
share with its own statistics ("ghost batch norm", Hoffer et al. 2017), as PyTorch's
DistributedDataParallel does without SyncBatchNorm. The running statistics of the replicas
are averaged after every training forward, so the model's buffers follow the whole batch.
"""

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import threads


class DataParallel:
    """Run ``model`` on shares of a batch in ``n`` threads (see the module docstring).

    - model: a Module whose forward takes (B, ...) and returns an array or a tuple of arrays
      with B first, and whose backward takes one gradient per output (as ``SSD`` does)
    - n: replicas (threads); a batch smaller than n uses fewer
    - forward(x) -> what model.forward returns, for the whole batch
    - backward(*grads) -> None; ADDS the parameter gradients into the model's ``.grad``
    """

    def __init__(self, model, n):
        if int(n) < 1:
            raise ValueError(f"DataParallel: n must be >= 1, got {n}")
        self.model = model
        shared = {id(p.data): p.data for p in model.parameters()}  # deepcopy keeps these arrays
        self.replicas = [model] + [copy.deepcopy(model, dict(shared)) for _ in range(int(n) - 1)]
        self._pool = ThreadPoolExecutor(max_workers=len(self.replicas), thread_name_prefix="minissd-dp")
        self._shares = None

    def _run(self, work):
        """``[work(r, share_r) for each replica r]`` on the pool, every layer single-threaded."""
        def task(r):
            with threads.inline():
                return work(self.replicas[r], self._shares[r])
        if len(self._shares) == 1:
            return [task(0)]
        return list(self._pool.map(task, range(len(self._shares))))

    def forward(self, x):
        B = len(x)
        n = min(len(self.replicas), B)
        sizes = [B // n + (r < B % n) for r in range(n)]  # as np.array_split: the first ones larger
        bounds = np.cumsum([0] + sizes)
        self._shares = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        for replica in self.replicas[1:]:
            replica.train(self.model.training)
        outs = self._run(lambda replica, share: replica.forward(x[share]))
        if self.model.training and n > 1:
            self._average_buffers(n)
        if isinstance(outs[0], tuple):
            return tuple(np.concatenate(parts) for parts in zip(*outs))
        return np.concatenate(outs)

    def backward(self, *grads):
        def work(replica, share):
            if replica is not self.model:
                replica.zero_grad()
            replica.backward(*(g[share] for g in grads))
        self._run(work)
        model_params = list(self.model.parameters())
        for replica in self.replicas[1:len(self._shares)]:
            for p, q in zip(model_params, replica.parameters()):
                p.grad += q.grad

    def _average_buffers(self, n):
        """Every replica's running statistics := their mean over the n replicas that ran."""
        per_replica = [[b for _, b in replica.named_buffers()] for replica in self.replicas[:n]]
        for same in zip(*per_replica):
            mean = sum(same) / n
            for b in same:
                b[...] = mean
