"""Block-wide float sums without atomics, for BatchNorm, L2Norm, the loss and the gradient norm.

The CPU adds up a channel's values (``norm.batchnorm_forward``), a batch's losses
(``loss.multibox_loss``) or every squared gradient (``step.clip_grad_norm``) in one loop.
On the GPU the threads of one block share such a sum: thread t first adds up its own
stride of the values (t, t + T, t + 2T, ...), then ``block_sum_float`` halves the T partial
sums in shared memory, T/2, T/4, ... 1, with a ``cuda.syncthreads()`` after each halving
(Kirk & Hwu, ch. 10). The tree is fixed by T, so the same inputs give the same bits on
every run, which float ``cuda.atomic.add`` (an order that changes from run to run) would not.

Sums are float64, as the CPU's BatchNorm and loss sums are. A sum over more values than
one block should walk (every squared gradient of the model) is split in two launches:
``partial_sums_kernel``-style kernels give each block a part and write one partial sum per
block; a second, one-thread launch adds the partials in order.
"""

from minissd.cuda import require

cuda = require()

SUM_THREADS = 256  # threads of a summing block (a power of two, at most SUM_SCRATCH)
SUM_SCRATCH = 256  # entries of its shared scratch array (a compile-time size: never patched)


@cuda.jit(device=True)
def block_sum_float(value, scratch):
    """The sum of ``value`` over the block's threads, returned to every thread (float64).

    - scratch: a shared float64 array of >= blockDim entries; blockDim a power of two.
    Every thread of the block must call it (it contains ``cuda.syncthreads()``).
    """
    t, T = cuda.threadIdx.x, cuda.blockDim.x
    cuda.syncthreads()  # everyone has read the previous result before it is overwritten
    scratch[t] = value
    cuda.syncthreads()
    half = T // 2
    while half > 0:
        if t < half:
            scratch[t] += scratch[t + half]
        cuda.syncthreads()  # this halving is finished before the next one reads it
        half //= 2
    return scratch[0]
