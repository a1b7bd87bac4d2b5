"""Batches for training and evaluation: shuffle, augment, stack into NCHW float32.

    for images, targets in DataLoader(ds, batch_size=32, transform=train_transform(300), seed=0):
        images   (B, 3, S, S) float32
        targets  list of B (boxes (G_i, 4) float32 corner [0, 1], labels (G_i,) int64 1..C)

Determinism: the order of epoch e comes from ``default_rng([seed, e])`` and the augmentation of
dataset item i in epoch e from ``default_rng([seed, e, i])``. No random state is shared
between samples, so the batches are the same whatever the number of workers and whichever
worker finishes first.

Workers are threads. Decoding JPEGs, resizing (Pillow) and the large NumPy operations release
the GIL, so a thread or two keeps the next batches ready while the main thread trains; threads
need no pickling, start instantly and stop cleanly when a loop breaks early.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .augment import normalize


class DataLoader:
    """Iterate over a dataset in (optionally shuffled) batches, each sample through ``transform``.

    - dataset: ``image, boxes, labels, difficult = dataset[i]`` (a VOCDataset)
    - batch_size: images per batch; drop_last drops a final smaller batch
    - shuffle, seed: a new permutation each epoch, from (seed, epoch)
    - transform: f(image, boxes, labels, rng) -> (image (3, S, S) float32, boxes, labels), e.g.
      ``train_transform(300)``; None only normalises (the images must then share one size)
    - num_workers: 0 loads in the calling thread; N > 0 uses N background threads, keeping
      up to ``prefetch * N`` batches in flight
    - with_difficult: targets become (boxes, labels, difficult) triples (for evaluation)

    Each ``iter()`` is one epoch and advances ``self.epoch``; ``set_epoch`` replays an epoch.
    """

    def __init__(self, dataset, batch_size, shuffle=True, seed=0, transform=None, num_workers=0,
                 drop_last=False, prefetch=2, with_difficult=False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.with_difficult = with_difficult
        self.epoch = 0

    def __len__(self):
        n = len(self.dataset) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    def set_epoch(self, epoch):
        """The next ``iter()`` yields epoch ``epoch`` (for resuming a run)."""
        self.epoch = epoch

    def batches(self, epoch):
        """The dataset indices of each batch of ``epoch``: a list of int arrays."""
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        cuts = range(0, len(self) * self.batch_size, self.batch_size)
        return [order[a:a + self.batch_size] for a in cuts]

    def load_sample(self, index, epoch):
        """Item ``index`` of the dataset, augmented with its own generator (seed, epoch, index).

        Returns image (3, S, S) float32, boxes (G, 4) float32, labels (G,) int64, difficult (G,) bool.
        """
        image, boxes, labels, difficult = self.dataset[int(index)]
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        # labels and difficult flags ride through the transform together as one (G, 2) array, so
        # that a crop drops both with their box
        extra = np.stack([labels, difficult.astype(np.int64)], axis=1)  # (G, 2)
        if self.transform is None:
            image, boxes, extra = normalize(image, boxes, extra)
        else:
            image, boxes, extra = self.transform(image, boxes, extra, rng)
        return image, boxes, extra[:, 0].astype(np.int64), extra[:, 1].astype(bool)

    def load_batch(self, indices, epoch):
        """Stack the samples of one batch: images (B, 3, S, S) float32 and the targets list."""
        samples = [self.load_sample(i, epoch) for i in indices]
        shapes = {s[0].shape for s in samples}
        if len(shapes) > 1:
            raise ValueError(f"DataLoader: images of one batch differ in shape {sorted(shapes)}; "
                             "give a transform that resizes them (train_transform / eval_transform)")
        images = np.stack([s[0] for s in samples]).astype(np.float32, copy=False)  # (B, 3, S, S)
        if self.with_difficult:
            targets = [(b, l, d) for _, b, l, d in samples]
        else:
            targets = [(b, l) for _, b, l, _ in samples]
        return images, targets

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        batches = self.batches(epoch)
        if self.num_workers == 0:
            for indices in batches:
                yield self.load_batch(indices, epoch)
            return
        yield from self._iter_threads(batches, epoch)

    def _iter_threads(self, batches, epoch):
        """Keep a window of batches in flight on the pool; yield them in order.

        The ``finally`` runs when the epoch ends, when the consumer breaks out of its loop (the
        generator is closed) or on an exception: queued batches are cancelled and the threads
        joined, so nothing keeps loading behind the caller's back.
        """
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="minissd-loader")
        pending = []  # futures, in batch order
        ahead = max(1, self.prefetch * self.num_workers)
        try:
            todo = iter(batches)
            for indices in todo:
                pending.append(pool.submit(self.load_batch, indices, epoch))
                if len(pending) >= ahead:
                    break
            while pending:
                batch = pending.pop(0).result()  # re-raises a worker's exception here
                for indices in todo:  # refill the window before handing the batch over
                    pending.append(pool.submit(self.load_batch, indices, epoch))
                    break
                yield batch
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
