"""minissd.cuda.boxes against its CPU twin minissd.boxes (on the CUDA simulator without a GPU)."""

import numpy as np
import pytest

from minissd import boxes

from minissd.cuda import boxes as cuda_boxes
from minissd.cuda import require


def random_corner_boxes(rng, n, dtype=np.float32):
    """n valid corner boxes inside [0, 1], some of them tiny, some overlapping."""
    xy = rng.uniform(0, 0.8, size=(n, 2))
    wh = rng.uniform(0.01, 0.5, size=(n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, 1.0)], axis=1).astype(dtype)


def random_priors(rng, n, dtype=np.float32):
    return np.concatenate([rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.05, 0.6, (n, 2))], 1).astype(dtype)


def test_cuda_iou_worked_example():
    # a = [0,0,2,2] (area 4), b = [1,1,3,3] (area 4): overlap [1,1,2,2] = 1, union 7 -> 1/7.
    # c = [5,5,6,6] is apart from both -> 0; a with itself -> 1.
    a = np.array([[0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
    got = cuda_boxes.iou(a, b)
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_allclose(got, [[1 / 7, 1, 0], [0, 0, 1]], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_iou_matches_cpu(rng, dtype):
    a, b = random_corner_boxes(rng, 5, dtype), random_corner_boxes(rng, 40, dtype)
    b[3] = a[1]  # an exact match, IoU 1
    got, want = cuda_boxes.iou(a, b), boxes.iou(a, b)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[1, 3] == pytest.approx(1.0)


def test_cuda_iou_grid_covers_ragged_edges(rng):
    # 33 x 9 is not a multiple of the (32, 8) block in either direction: the last blocks are
    # partly idle, and a wrong bound check would leave zeros or write out of range.
    a, b = random_corner_boxes(rng, 9), random_corner_boxes(rng, 33)
    np.testing.assert_allclose(cuda_boxes.iou(a, b), boxes.iou(a, b), rtol=1e-6, atol=1e-7)


def test_cuda_iou_device_arrays_stay_on_device(rng):
    cuda = require()
    a, b = random_corner_boxes(rng, 3), random_corner_boxes(rng, 7)
    out = cuda_boxes.iou(cuda.to_device(a), cuda.to_device(b))
    assert hasattr(out, "copy_to_host")  # no trip back to the host
    np.testing.assert_allclose(out.copy_to_host(), boxes.iou(a, b), rtol=1e-6, atol=1e-7)


def test_cuda_iou_refuses_bad_boxes_like_cpu():
    with pytest.raises(ValueError, match="xmax < xmin"):
        cuda_boxes.iou(np.array([[0.5, 0, 0.2, 1]]), np.array([[0, 0, 1, 1]]))


def test_cuda_encode_decode_match_cpu(rng):
    priors = random_priors(rng, 40)
    matched = random_corner_boxes(rng, 40)
    loc = cuda_boxes.encode(matched, priors)
    np.testing.assert_allclose(loc, boxes.encode(matched, priors), rtol=1e-5, atol=1e-5)
    back = cuda_boxes.decode(loc, priors)
    np.testing.assert_allclose(back, boxes.decode(loc, priors), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back, matched, atol=1e-5)  # the round trip


def test_cuda_encode_worked_example():
    # prior (0.5, 0.5, 0.2, 0.4); box [0.4, 0.4, 0.8, 0.6] has centre (0.6, 0.5), size (0.4, 0.2):
    # tx = 0.1 / (0.1 * 0.2) = 5, ty = 0, tw = log(2) / 0.2, th = log(0.5) / 0.2.
    got = cuda_boxes.encode(np.array([[0.4, 0.4, 0.8, 0.6]]), np.array([[0.5, 0.5, 0.2, 0.4]]))
    np.testing.assert_allclose(got, [[5, 0, np.log(2) / 0.2, np.log(0.5) / 0.2]], atol=1e-9)


def test_cuda_encode_decode_batch_uses_each_images_priors(rng):
    # (B, P, 4) rows: row p of image b reads prior p (the kernel's p % P); compare per image.
    priors = random_priors(rng, 40)
    matched = np.stack([random_corner_boxes(rng, 40) for _ in range(2)])  # (2, 40, 4)
    loc = cuda_boxes.encode(matched, priors, variances=(0.1, 0.2))
    assert loc.shape == (2, 40, 4)
    for b in range(2):
        np.testing.assert_allclose(loc[b], boxes.encode(matched[b], priors), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cuda_boxes.decode(loc, priors)[b], boxes.decode(loc[b], priors),
                                   rtol=1e-5, atol=1e-6)


def test_cuda_encode_refuses_what_cpu_refuses(rng):
    priors = random_priors(rng, 4)
    with pytest.raises(ValueError, match="does not match priors"):
        cuda_boxes.encode(random_corner_boxes(rng, 3), priors)
    with pytest.raises(ValueError, match="variances"):
        cuda_boxes.decode(np.zeros((4, 4)), priors, variances=(0.1, 0))
