"""The batch loader: shapes, shuffling, determinism whatever the workers, clean early exit."""

import threading
import time

import numpy as np
import pytest

from minissd.data import DataLoader, VOCDataset, make_tiny_voc, train_transform


class Items:
    """A dataset of n tiny images; image i is filled with the value i, and has i % 3 boxes."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.reads = n, fail_at, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        if i == self.fail_at:
            raise ValueError(f"item {i} is broken")
        g = i % 3
        boxes = np.array([[0.1 * k, 0.1, 0.1 * k + 0.3, 0.5] for k in range(g)], np.float32).reshape(g, 4)
        labels = np.arange(1, g + 1, dtype=np.int64)
        difficult = np.array([k == 1 for k in range(g)], bool)
        return np.full((8, 8, 3), i % 256, np.uint8), boxes, labels, difficult


def raw(image, boxes, labels, rng):
    """A transform that keeps the pixel values (so the tests can read the item index back)."""
    return image.transpose(2, 0, 1).astype(np.float32), boxes, labels


def indices_of(images):
    return images[:, 0, 0, 0].astype(int).tolist()


def test_len_and_drop_last():
    assert len(DataLoader(Items(10), 4)) == 3
    assert len(DataLoader(Items(10), 4, drop_last=True)) == 2
    assert len(list(DataLoader(Items(10), 4, drop_last=True))) == 2
    assert len(DataLoader(Items(8), 4, drop_last=True)) == 2


def test_batch_shapes_and_targets():
    images, targets = next(iter(DataLoader(Items(7), 4, shuffle=False)))
    assert images.shape == (4, 3, 8, 8) and images.dtype == np.float32
    assert len(targets) == 4
    for i, (boxes, labels) in enumerate(targets):
        assert boxes.shape == (i % 3, 4) and boxes.dtype == np.float32
        assert labels.dtype == np.int64 and labels.tolist() == list(range(1, i % 3 + 1))


def test_with_difficult_gives_triples():
    _, targets = next(iter(DataLoader(Items(3), 3, shuffle=False, with_difficult=True)))
    assert [d.tolist() for _, _, d in targets] == [[], [False], [False, True]]


def test_shuffle_is_a_permutation_per_epoch_and_seeded():
    loader = DataLoader(Items(10), 3, seed=5, transform=raw)
    e0 = [i for images, _ in loader for i in indices_of(images)]
    e1 = [i for images, _ in loader for i in indices_of(images)]
    assert sorted(e0) == sorted(e1) == list(range(10))
    assert e0 != e1  # a new order each epoch
    again = DataLoader(Items(10), 3, seed=5, transform=raw)
    assert [i for images, _ in again for i in indices_of(images)] == e0
    loader.set_epoch(0)
    assert [i for images, _ in loader for i in indices_of(images)] == e0
    ordered = DataLoader(Items(10), 3, shuffle=False, transform=raw)
    assert [i for images, _ in ordered for i in indices_of(images)] == list(range(10))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_tiny_voc(tmp_path_factory.mktemp("tv") / "tiny-voc", seed=0, n_train=12, n_val=2, workers=1)
    return VOCDataset(root, "train")


def test_same_batches_whatever_the_number_of_workers(tiny):
    def epoch(workers):
        loader = DataLoader(tiny, 5, seed=1, transform=train_transform(48), num_workers=workers)
        return list(loader)

    ref = epoch(0)
    assert [b[0].shape for b in ref] == [(5, 3, 48, 48), (5, 3, 48, 48), (2, 3, 48, 48)]
    for workers in (1, 3):
        got = epoch(workers)
        assert len(got) == len(ref)
        for (im_a, t_a), (im_b, t_b) in zip(ref, got):
            np.testing.assert_array_equal(im_a, im_b)
            for (b_a, l_a), (b_b, l_b) in zip(t_a, t_b):
                np.testing.assert_array_equal(b_a, b_b)
                np.testing.assert_array_equal(l_a, l_b)


def test_augmentation_differs_between_epochs(tiny):
    loader = DataLoader(tiny, 4, shuffle=False, seed=1, transform=train_transform(48))
    a, b = next(iter(loader))[0], next(iter(loader))[0]
    assert not np.array_equal(a, b)


def loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("minissd-loader")]


def test_early_break_stops_the_workers():
    items = Items(400)
    loader = DataLoader(items, 2, num_workers=2, prefetch=2, transform=raw)
    for k, _ in enumerate(loader):
        if k == 1:
            break
    assert loader_threads() == []  # joined by the generator's finally
    reads = items.reads
    time.sleep(0.05)
    assert items.reads == reads <= 2 * (2 + 2 * 2)  # at most the window in flight was loaded


def test_worker_error_reaches_the_caller():
    loader = DataLoader(Items(20, fail_at=13), 4, shuffle=False, num_workers=2, transform=raw)
    with pytest.raises(ValueError, match="item 13 is broken"):
        list(loader)
    assert loader_threads() == []


def test_images_of_different_sizes_need_a_resizing_transform(tiny):
    with pytest.raises(ValueError, match="differ in shape"):
        next(iter(DataLoader(tiny, 4)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(Items(3), 0)
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(Items(3), 1, num_workers=-1)


# ---- worker processes and the decode cache -----------------------------------------------------

from PIL import Image  # noqa: E402

from minissd.data.loader import DecodeCache, decode_reduced  # noqa: E402
from minissd.errors import DatasetError  # noqa: E402


def test_worker_processes_give_the_same_batches(tiny):
    def epochs(**kw):
        loader = DataLoader(tiny, 5, seed=1, transform=train_transform(48), **kw)
        out = [list(loader), list(loader)]  # two epochs: the processes are kept between them
        loader.close()
        return out

    ref = epochs()
    got = epochs(num_workers=2, processes=True)
    for ep_a, ep_b in zip(ref, got):
        for (im_a, t_a), (im_b, t_b) in zip(ep_a, ep_b):
            np.testing.assert_array_equal(im_a, im_b)
            for (b_a, l_a), (b_b, l_b) in zip(t_a, t_b):
                np.testing.assert_array_equal(b_a, b_b)
                np.testing.assert_array_equal(l_a, l_b)


def test_worker_process_error_reaches_the_caller():
    loader = DataLoader(Items(20, fail_at=13), 4, shuffle=False, num_workers=2, transform=raw, processes=True)
    with pytest.raises(ValueError, match="item 13 is broken"):
        list(loader)
    loader.close()


def test_decode_cache_same_pixels_at_full_size_and_decodes_once(tiny):
    cache = DecodeCache(tiny)
    for i in (0, 3):
        a, b = tiny[i], cache[i]
        np.testing.assert_array_equal(a[0], b[0])
        for x, y in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(x, y)
    cache[0][0][...] = 0  # a caller writing into its image does not change the cache
    assert cache[0][0].any()
    assert len(cache._items) == 2
    loader = DataLoader(cache, 4, seed=3, transform=train_transform(48))
    ref = DataLoader(tiny, 4, seed=3, transform=train_transform(48))
    np.testing.assert_array_equal(next(iter(loader))[0], next(iter(ref))[0])


def test_decode_reduced_draft_and_sides(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (400, 300, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    assert decode_reduced(tmp_path / "a.jpg").shape == (400, 300, 3)
    assert decode_reduced(tmp_path / "a.jpg", 128).shape == (128, 128, 3)
    assert decode_reduced(tmp_path / "a.jpg", 350).shape == (350, 300, 3)  # only the side above 350 shrinks
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 6, 3), dtype=np.uint8)).resize((300, 400)))
    Image.fromarray(smooth).save(tmp_path / "s.jpg", quality=95)
    a, b = decode_reduced(tmp_path / "s.jpg", 100, draft=True), decode_reduced(tmp_path / "s.jpg", 100, draft=False)
    assert np.abs(a.astype(int) - b).mean() < 3  # draft mode: nearly the same small image
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(DatasetError, match="bad.jpg: corrupt image"):
        decode_reduced(tmp_path / "bad.jpg", 100)


def test_reduced_cache_keeps_boxes_and_drops_difficult_like_the_dataset(tiny):
    cache = DecodeCache(VOCDataset(tiny.root, "train", keep_difficult=False), max_side=64)
    ds = VOCDataset(tiny.root, "train", keep_difficult=False)
    for i in range(3):
        image, boxes, labels, difficult = cache[i]
        assert max(image.shape[:2]) <= 64
        np.testing.assert_array_equal(boxes, ds[i][1])
        np.testing.assert_array_equal(labels, ds[i][2])
        assert not difficult.any()


def test_a_filled_cache_feeds_worker_processes(tiny):
    cache = DecodeCache(tiny, max_side=40).fill(2)
    ref = list(DataLoader(cache, 6, seed=2, transform=train_transform(32)))
    loader = DataLoader(cache, 6, seed=2, transform=train_transform(32), num_workers=2, processes=True)
    got = list(loader)
    loader.close()
    for (a, _), (b, _) in zip(ref, got):
        np.testing.assert_array_equal(a, b)
