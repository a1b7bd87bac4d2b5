"""Batches for training and evaluation: shuffle, augment, stack into NCHW float32.

    for images, targets in DataLoader(ds, batch_size=32, transform=train_transform(300), seed=0):
        images   (B, 3, S, S) float32
        targets  list of B (boxes (G_i, 4) float32 corner [0, 1], labels (G_i,) int64 1..C)

Determinism: the order of epoch e comes from ``default_rng([seed, e])`` and the augmentation of
dataset item i in epoch e from ``default_rng([seed, e, i])``. No random state is shared
between samples, so the batches are the same whatever the number of workers and whichever
worker finishes first.

Workers are threads by default. Decoding JPEGs, resizing (Pillow) and the large NumPy
operations release the GIL, so a thread or two keeps the next batches ready while the main
thread trains; threads need no pickling, start instantly and stop cleanly when a loop breaks
early. ``processes=True`` runs the workers as processes instead (started once, with "spawn",
and kept for later epochs until ``close()``): no GIL at all, at the price of pickling each
batch back (B x 3 x S x S float32). Either way the batches are the same numbers.

``DecodeCache(dataset, max_side)`` decodes each image once and keeps it in memory, reduced so
that no side exceeds ``max_side`` (JPEGs through Pillow's draft mode, which decodes at 1/2,
1/4 or 1/8 scale directly). Augmentation then works on small images: on 400x400 photos at a
128 px input it is several times cheaper (docs/own-data.md has the measurements). Unlike the
worker settings this changes the pixels a zoom-in crop sees, so it is a named setting.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import weakref
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .augment import normalize


class DataLoader:
    """Iterate over a dataset in (optionally shuffled) batches, each sample through ``transform``.

    - dataset: ``image, boxes, labels, difficult = dataset[i]`` (a VOCDataset)
    - batch_size: images per batch; drop_last drops a final smaller batch
    - shuffle, seed: a new permutation each epoch, from (seed, epoch)
    - transform: f(image, boxes, labels, rng) -> (image (3, S, S) float32, boxes, labels), e.g.
      ``train_transform(300)``; None only normalises (the images must then share one size)
    - num_workers: 0 loads in the calling thread; N > 0 uses N background workers, keeping
      up to ``prefetch * N`` batches in flight
    - processes: the workers are processes, not threads (the dataset and each batch's
      transform must pickle; ``close()`` stops them, as does the loader's garbage collection)
    - with_difficult: targets become (boxes, labels, difficult) triples (for evaluation)

    Each ``iter()`` is one epoch and advances ``self.epoch``; ``set_epoch`` replays an epoch.
    ``transform`` may be changed between epochs (train's curriculum does).
    """

    def __init__(self, dataset, batch_size, shuffle=True, seed=0, transform=None, num_workers=0,
                 drop_last=False, prefetch=2, with_difficult=False, processes=False):
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
        self.processes = processes
        self.epoch = 0
        self._pool = None  # the worker processes, started by the first epoch that needs them

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
        if self.processes:
            yield from self._iter_processes(batches, epoch)
        else:
            yield from self._iter_threads(batches, epoch)

    def close(self):
        """Stop the worker processes (if any); a later epoch starts new ones."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _window(self, submit, batches):
        """Keep ``prefetch * num_workers`` batches in flight through ``submit``; yield them in order."""
        pending = []  # futures, in batch order
        ahead = max(1, self.prefetch * self.num_workers)
        try:
            todo = iter(batches)
            for indices in todo:
                pending.append(submit(indices))
                if len(pending) >= ahead:
                    break
            while pending:
                batch = pending.pop(0).result()  # re-raises a worker's exception here
                for indices in todo:  # refill the window before handing the batch over
                    pending.append(submit(indices))
                    break
                yield batch
        finally:
            for f in pending:
                f.cancel()

    def _iter_processes(self, batches, epoch):
        """Batches from the worker processes: each task carries (indices, epoch, transform)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.num_workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(self.dataset, self.seed, self.with_difficult))
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        pool, transform = self._pool, self.transform
        try:
            yield from self._window(lambda idx: pool.submit(_worker_batch, idx, epoch, transform), batches)
        except BaseException:
            if getattr(pool, "_broken", False):  # a worker died: the next epoch starts new ones
                self._pool = None
            raise

    def _iter_threads(self, batches, epoch):
        """Keep a window of batches in flight on the pool; yield them in order.

        The ``finally`` runs when the epoch ends, when the consumer breaks out of its loop (the
        generator is closed) or on an exception: queued batches are cancelled and the threads
        joined, so nothing keeps loading behind the caller's back.
        """
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="minissd-loader")
        try:
            yield from self._window(lambda idx: pool.submit(self.load_batch, idx, epoch), batches)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ---- worker processes: one loader per process, made once from the pickled dataset -------------

_WORKER = None


def _start_worker(dataset, seed, with_difficult):
    global _WORKER
    _WORKER = DataLoader(dataset, 1, seed=seed, with_difficult=with_difficult)


def _worker_batch(indices, epoch, transform):
    _WORKER.transform = transform
    return _WORKER.load_batch(indices, epoch)


# ---- decoding once -------------------------------------------------------------------------

def decode_reduced(path, max_side=None, draft=True):
    """Decode an image to (H', W', 3) uint8 RGB with no side above ``max_side`` (None: as it is).

    Each side larger than max_side is scaled to max_side on its own (the network's input is
    square: the final resize changes the aspect anyway). With ``draft``, a JPEG is decoded
    straight at the smallest of 1/1, 1/2, 1/4, 1/8 scale that is still at least that size, then
    resized (bilinear, antialiased) the rest of the way.
    """
    try:
        with Image.open(path) as im:
            W, H = im.size
            size = (W, H) if max_side is None else (min(W, max_side), min(H, max_side))
            if draft and im.format == "JPEG" and size != (W, H):
                im.draft("RGB", size)
            im = im.convert("RGB")
            if im.size != size:
                im = im.resize(size, Image.BILINEAR)
            return np.array(im)  # (H', W', 3) uint8
    except Exception as e:  # Pillow raises several types for a corrupt file
        raise DatasetError(f"{path}: corrupt image ({e})") from None


class DecodeCache:
    """A dataset whose images are decoded once (on first access) and kept in memory.

    - dataset: a minissd dataset; with ``annotations`` (every minissd reader) the boxes come
      from there and the image file is decoded here (draft mode); otherwise ``dataset[i]``
    - max_side: None keeps every image as decoded (the same pixels: only faster); an int
      reduces larger images so that no side exceeds it (``decode_reduced``): about the
      network's input side, or 2x it to keep detail for zoom-in crops
    - memory: N x H' x W' x 3 bytes (10,000 images at 128 px: 0.5 GB). Threads share one
      cache; each worker process would fill its own
    ``ds[i]``, ``classes``, ``ids``, ``annotations`` as the dataset's.
    """

    def __init__(self, dataset, max_side=None, draft=True):
        self.dataset, self.max_side, self.draft = dataset, max_side, draft
        self.classes, self.ids = dataset.classes, dataset.ids
        self.annotations = getattr(dataset, "annotations", None)
        self._items = {}
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.dataset)

    def __getstate__(self):  # for worker processes: the decoded images travel, the lock does not
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __getitem__(self, i):
        item = self._items.get(i)
        if item is None:
            item = self._load(i)
            with self._lock:
                self._items[i] = item
        image, boxes, labels, difficult = item
        return image.copy(), boxes, labels, difficult  # augmentation may write into the image

    def _load(self, i):
        r = self.annotations[i] if self.annotations is not None else None
        if r is None or not hasattr(r, "image_path"):
            image, boxes, labels, difficult = self.dataset[i]
            if self.max_side is not None and max(image.shape[:2]) > self.max_side:
                H, W = image.shape[:2]
                image = np.array(Image.fromarray(image).resize((min(W, self.max_side), min(H, self.max_side)),
                                                               Image.BILINEAR))
            return image, boxes, labels, difficult
        from .images import load_image  # the reader's own errors for a corrupt file

        image = decode_reduced(r.image_path, self.max_side, self.draft) if self.max_side else load_image(r.image_path)
        keep = slice(None) if getattr(self.dataset, "keep_difficult", True) else ~r.difficult
        return image, r.boxes[keep], r.labels[keep], r.difficult[keep]

    def fill(self, threads=2):
        """Decode every image now (in ``threads`` threads: decoding releases the GIL)."""
        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(self.__getitem__, range(len(self))))
        return self
