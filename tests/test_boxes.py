"""minissd.boxes: IoU, centre/corner conversions, encode/decode."""

import numpy as np
import pytest

import naive
from minissd import boxes
from minissd.boxes import center_to_corner, corner_to_center, decode, encode, iou


def random_boxes(rng, n, dtype=np.float32):
    """n corner boxes inside [0, 1] with positive width and height."""
    c = rng.uniform(0.1, 0.9, (n, 2))
    wh = rng.uniform(0.02, 0.6, (n, 2))
    return np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=1), 0, 1).astype(dtype)


def test_iou_known_boxes():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=np.float64)
    b = np.array([[1, 1, 3, 3], [0.5, 0, 1.5, 1], [1, 0, 2, 1]], dtype=np.float64)
    got = iou(a, b)
    # (0,0,2,2) & (1,1,3,3): overlap 1x1 = 1, union 4 + 4 - 1 = 7      -> 1/7
    # (0,0,1,1) & (0.5,0,1.5,1): overlap 0.5, union 1 + 1 - 0.5 = 1.5  -> 1/3
    # (0,0,1,1) & (1,0,2,1): they only touch: overlap 0 (no "+1" in continuous coordinates)
    assert got.shape == (3, 3)
    np.testing.assert_allclose(np.diag(got), [1 / 7, 1 / 3, 0.0], rtol=1e-12)
    np.testing.assert_allclose(iou(a[1:2], a[1:2]), [[1.0]])


def test_iou_of_boxes_apart_is_zero():
    # each overlap side is clamped at 0 on its own: apart in x only, in y only, in both
    a = np.array([[0.0, 0.0, 0.2, 0.5]] * 3 + [[0.5, 0.5, 0.9, 0.9]])
    b = np.array([[0.3, 0.1, 0.6, 0.4],    # x: 0.2 - 0.3 < 0, y: 0.3 > 0 -> 0, not negative
                  [0.05, 0.6, 0.15, 0.9],  # y apart, x overlaps by 0.1 -> 0
                  [0.4, 0.7, 0.8, 0.9],    # apart in both: (-0.2) * (-0.2) > 0 if unclamped -> 0
                  [0.6, 0.6, 0.8, 1.0]])   # inside in x, 0.3 of 0.4 in y: 0.06 / (0.16 + 0.08 - 0.06)
    np.testing.assert_allclose(np.diag(iou(a, b)), [0.0, 0.0, 0.0, 0.06 / 0.18], atol=1e-12)
    assert np.all(iou(a, b) >= 0)


def test_iou_matches_naive_and_is_symmetric_in_unit_range(rng):
    a, b = random_boxes(rng, 7), random_boxes(rng, 11)
    got = iou(a, b)
    assert got.dtype == np.float32 and got.shape == (7, 11)
    np.testing.assert_allclose(got, naive.iou(a, b), atol=1e-6)
    np.testing.assert_array_equal(got, iou(b, a).T)  # symmetric
    assert np.all((got >= 0) & (got <= 1))
    assert iou(a.astype(np.float64), b).dtype == np.float64


def test_iou_empty_and_degenerate():
    assert iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    point = np.array([[0.5, 0.5, 0.5, 0.5]])
    assert iou(point, point)[0, 0] == 0.0  # union 0: defined as 0, not NaN


def test_center_corner_round_trip(rng):
    b = random_boxes(rng, 9, np.float64)
    c = corner_to_center(b)
    np.testing.assert_allclose(c[0], [(b[0, 0] + b[0, 2]) / 2, (b[0, 1] + b[0, 3]) / 2,
                                      b[0, 2] - b[0, 0], b[0, 3] - b[0, 1]])
    np.testing.assert_allclose(center_to_corner(c), b, atol=1e-15)
    assert center_to_corner(c.reshape(3, 3, 4)).shape == (3, 3, 4)  # any leading shape


def test_encode_worked_example():
    prior = np.array([[0.5, 0.5, 0.2, 0.4]])  # centre form
    box = np.array([[0.45, 0.4, 0.65, 0.8]])  # centre (0.55, 0.6), size (0.2, 0.4)
    # tx = (0.55 - 0.5) / (0.1 * 0.2) = 2.5, ty = (0.6 - 0.5) / (0.1 * 0.4) = 2.5, same size: 0
    np.testing.assert_allclose(encode(box, prior), [[2.5, 2.5, 0.0, 0.0]], atol=1e-12)
    box2 = np.array([[0.3, 0.3, 0.7, 0.5]])  # centre (0.5, 0.4), size (0.4, 0.2)
    # tw = log(0.4 / 0.2) / 0.2 = 3.4657, th = log(0.2 / 0.4) / 0.2 = -3.4657, ty = -0.1 / 0.04
    np.testing.assert_allclose(encode(box2, prior), [[0.0, -2.5, np.log(2) / 0.2, -np.log(2) / 0.2]],
                               atol=1e-12)
    np.testing.assert_allclose(encode(box2, prior, variances=(1, 1)), [[0, -0.25, np.log(2), -np.log(2)]],
                               atol=1e-12)


def test_decode_worked_example():
    prior = np.array([[0.5, 0.5, 0.2, 0.4]])  # centre form
    # centre 0.5 + 0.1 * 2.5 * 0.2 = 0.55, 0.5 + 0.1 * (-1) * 0.4 = 0.46;
    # size 0.2 * exp(0.2 * log 2 / 0.2) = 0.4, 0.4 * exp(0) = 0.4
    loc = np.array([[2.5, -1.0, np.log(2) / 0.2, 0.0]])
    np.testing.assert_allclose(decode(loc, prior), [[0.35, 0.26, 0.75, 0.66]], atol=1e-12)
    # the variances scale the offsets: (1, 1) reads them as plain fractions and logs
    np.testing.assert_allclose(decode(np.array([[0.25, 0.0, np.log(0.5), 0.0]]), prior, variances=(1, 1)),
                               [[0.5, 0.3, 0.6, 0.7]], atol=1e-12)


def test_encode_decode_round_trip_and_naive(rng):
    matched = random_boxes(rng, 50, np.float64)
    priors = corner_to_center(random_boxes(rng, 50, np.float64))
    loc = encode(matched, priors)
    np.testing.assert_allclose(loc, [naive.encode(m, p) for m, p in zip(matched, priors)], rtol=1e-12)
    np.testing.assert_allclose(decode(loc, priors), matched, atol=1e-12)
    # zero offsets decode to the prior itself
    np.testing.assert_allclose(decode(np.zeros_like(priors), priors), center_to_corner(priors), atol=1e-15)


@pytest.mark.parametrize("bad, message", [
    (np.array([[0.5, 0.0, 0.4, 1.0]]), "xmax < xmin"),
    (np.array([[0.0, 0.0, np.nan, 1.0]]), "NaN"),
    (np.array([[0.0, 0.0, np.inf, 1.0]]), "inf"),
    (np.zeros((2, 3)), "shape"),
    (np.array(["a", "b", "c", "d"]), "dtype"),
])
def test_iou_rejects_bad_boxes(bad, message):
    good = np.array([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=message) as err:
        iou(good, bad)
    assert str(err.value).startswith("b:")  # names the argument


def test_encode_decode_reject_bad_input():
    prior = np.array([[0.5, 0.5, 0.2, 0.4]])
    with pytest.raises(ValueError, match="matched"):
        encode(np.array([[0.2, 0.2, 0.2, 0.5]]), prior)  # zero width: log(0)
    with pytest.raises(ValueError, match="priors"):
        encode(np.array([[0.2, 0.2, 0.3, 0.5]]), np.array([[0.5, 0.5, 0.0, 0.4]]))
    with pytest.raises(ValueError, match="shape"):
        decode(np.zeros((2, 4)), prior)
    with pytest.raises(ValueError, match="variances"):
        decode(np.zeros((1, 4)), prior, variances=(0.1, -1))


def test_compiled_once():
    """cache=True and stable argument types: repeated calls add no new compilation."""
    a = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    iou(a, a)
    n = len(boxes._iou_matrix.signatures)
    for _ in range(3):
        iou(a, a)
    assert len(boxes._iou_matrix.signatures) == n
