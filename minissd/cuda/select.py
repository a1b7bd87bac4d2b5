"""Block-wide selection of the k largest values, for the GPU's mining and detection kernels.

The CPU selects with a quickselect (``loss._hardest_negatives_threshold`` in ``loss._mine``)
and with NumPy (``np.argpartition`` and ``np.argsort`` in ``nms.detect``). On the GPU one *block* of threads handles one row (the
priors of one image, or the scores of one class of one image) and selects in three steps,
all exact, with the CPU's tie rule (equal values: the lower index first):

1. ``order_key``: each float32 becomes a uint32 whose integer order is the float order
   (flip the sign bit of positive numbers, all bits of negative ones: IEEE-754 floats of
   one sign are ordered like their bit patterns). Key 0 is left for "not a candidate".
2. ``kth_largest``: the k-th largest key, one bit at a time from the top ("radix select"):
   count the candidates that agree with the bits decided so far and have the next bit set;
   if there are at least k of them the answer has that bit set, else it has not and those
   candidates are all above it (k shrinks by their number). 32 rounds of counting, each a
   block-wide sum, for any number of candidates. It returns the key t and ``ties``: how
   many candidates equal to t belong to the k (the others equal to t are out).
3. ``tie_quota``: the ties go to the lowest indices. Each thread owns a contiguous chunk of
   the row, so "lower index" means "earlier thread, or earlier in my chunk": a prefix sum
   over the threads' tie counts tells each thread how many of its ties to take.

``sorted_selection`` adds a fourth step for NMS, which needs the k in order: it packs them
into a list in index order and gives each its rank (how many of the k beat it).

Every function here is a device function that *all* threads of the block must call
together (they contain ``cuda.syncthreads()``), with ``scratch``, a shared int64 array of
SCRATCH_SIZE (at least ``cuda.blockDim.x`` + 1) entries, allocated by the kernel.
"""

import numpy as np

from minissd.cuda import require

cuda = require()

SELECT_THREADS = 256  # threads of a selecting block
SCRATCH_SIZE = SELECT_THREADS + 1  # entries of its shared scratch array (blockDim + 1 at least)


@cuda.jit(device=True)
def order_key(x):
    """float32 -> uint32 with the same order (key 0 is below every finite float's key)."""
    box = cuda.local.array(1, np.float32)
    box[0] = x
    bits = box.view(np.uint32)[0]  # the float's bit pattern, reinterpreted
    if bits >> np.uint32(31):  # negative: larger magnitude = smaller number, so flip every bit
        return np.uint32(bits ^ np.uint32(0xFFFFFFFF))
    return np.uint32(bits | np.uint32(0x80000000))  # positive: above every negative


@cuda.jit(device=True)
def chunk(n):
    """[lo, hi): the contiguous part of 0..n-1 that this thread owns."""
    size = (n + cuda.blockDim.x - 1) // cuda.blockDim.x
    lo = min(n, cuda.threadIdx.x * size)
    return lo, min(n, lo + size)


@cuda.jit(device=True)
def block_sum(value, scratch):
    """The sum of ``value`` over the block's threads, returned to every thread."""
    cuda.syncthreads()  # everyone has read the previous result before it is overwritten
    if cuda.threadIdx.x == 0:
        scratch[0] = 0
    cuda.syncthreads()
    cuda.atomic.add(scratch, 0, value)  # integers: the same total in any order
    cuda.syncthreads()
    return scratch[0]


@cuda.jit(device=True)
def exclusive_prefix(value, scratch):
    """The sum of ``value`` over the threads before this one (thread 0 gets 0)."""
    t = cuda.threadIdx.x
    cuda.syncthreads()
    scratch[t + 1] = value
    cuda.syncthreads()
    if t == 0:  # one thread adds them up: blockDim additions, negligible next to the rest
        running = 0
        for i in range(1, cuda.blockDim.x + 1):
            v = scratch[i]
            scratch[i] = running
            running += v
    cuda.syncthreads()
    return scratch[t + 1]


@cuda.jit(device=True)
def kth_largest(keys, k, scratch):
    """(t, ties): the k-th largest nonzero key of ``keys`` (1-D), and how many equal to t are in.

    Requires 1 <= k <= the number of nonzero keys. The k largest are then: every key > t,
    and ``ties`` of the keys == t.
    """
    lo, hi = chunk(keys.shape[0])
    prefix = np.uint32(0)  # the bits of t decided so far
    decided = np.uint32(0)  # which bits those are
    remaining = k  # the answer is the remaining-th largest among the keys that match prefix
    for bit in range(31, -1, -1):
        b = np.uint32(np.uint32(1) << np.uint32(bit))
        mine = 0
        for i in range(lo, hi):
            key = keys[i]
            if key != 0 and (key & decided) == prefix and (key & b) != 0:
                mine += 1
        above = block_sum(mine, scratch)  # candidates with this bit set
        if above >= remaining:
            prefix = np.uint32(prefix | b)  # the answer is among them
        else:
            remaining -= above  # they are all above the answer
        decided = np.uint32(decided | b)
    return prefix, remaining


@cuda.jit(device=True)
def tie_quota(keys, t, ties, scratch):
    """How many keys == t in this thread's chunk are in (the lowest indices of the row win)."""
    lo, hi = chunk(keys.shape[0])
    mine = 0
    for i in range(lo, hi):
        mine += keys[i] == t
    before = exclusive_prefix(mine, scratch)  # ties owned by earlier threads
    return max(0, min(mine, ties - before))


@cuda.jit(device=True)
def sorted_selection(keys, k, packed, out, scratch):
    """Write the indices of the k largest nonzero keys to out[0:k], largest first.

    - keys: (n,) uint32; packed, out: (>= k,) int64; packed is scratch (global memory).
    Equal keys: lower index first. Requires 1 <= k <= the number of nonzero keys.
    """
    t, ties = kth_largest(keys, k, scratch)
    quota = tie_quota(keys, t, ties, scratch)
    lo, hi = chunk(keys.shape[0])
    mine = 0  # how many of the k this thread's chunk holds
    for i in range(lo, hi):
        mine += keys[i] > t
    slot = exclusive_prefix(mine + quota, scratch)  # where this chunk's picks go, in index order
    taken = 0
    for i in range(lo, hi):
        key = keys[i]
        if key > t or (key == t and taken < quota):
            taken += key == t
            packed[slot] = i
            slot += 1
    cuda.syncthreads()  # packed is complete (global memory, visible to the block after this)
    for j in range(cuda.threadIdx.x, k, cuda.blockDim.x):  # rank each pick among the k
        kj = keys[packed[j]]
        rank = 0
        for i in range(k):
            ki = keys[packed[i]]
            if ki > kj or (ki == kj and i < j):  # packed is in index order: i < j = lower index
                rank += 1
        out[rank] = packed[j]
    cuda.syncthreads()
