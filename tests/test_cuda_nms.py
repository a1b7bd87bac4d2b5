"""minissd.cuda.nms against its CPU twin minissd.nms and the naive.nms oracle."""

import numpy as np
import pytest

import naive
from minissd import nms as cpu_nms

import minissd.cuda as mc
from minissd.cuda import nms as cuda_nms


def clustered_boxes(rng, n):
    """n boxes around 3 centres, so that many overlap (NMS has work to do)."""
    centres = rng.uniform(0.3, 0.7, (3, 2))[rng.integers(0, 3, n)]
    xy = centres + rng.normal(0, 0.05, (n, 2))
    wh = rng.uniform(0.1, 0.3, (n, 2))
    return np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype(np.float32)


def test_cuda_nms_worked_example():
    # Box 0 [0,0,1,1] score 0.9 is kept. Box 1 [0,0,1,0.8]: IoU 0.8 > 0.5 -> dropped.
    # Box 2 [0.5,0,1.5,1]: IoU with box 0 = 0.5 / 1.5 = 1/3 -> kept. Box 3 = box 2, equal
    # score 0.7: the lower index (2) comes first, so 3 is dropped by 2 (IoU 1).
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.8], [0.5, 0, 1.5, 1], [0.5, 0, 1.5, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.7])
    np.testing.assert_array_equal(cuda_nms.nms(boxes, scores, 0.5), [0, 2])


@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_cuda_nms_matches_cpu_and_naive(rng, threshold):
    # 8 threads for 30 boxes (simulator): every step's comparisons are shared by several threads.
    boxes = clustered_boxes(rng, 30)
    scores = np.round(rng.uniform(0, 1, 30), 1)  # many equal scores: ties by index
    got = cuda_nms.nms(boxes, scores, threshold)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, cpu_nms.nms(boxes, scores, threshold))
    np.testing.assert_array_equal(got, naive.nms(boxes, scores, threshold))


def test_cuda_nms_empty_and_refusals():
    assert cuda_nms.nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    with pytest.raises(ValueError, match="scores"):
        cuda_nms.nms(np.zeros((2, 4)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        cuda_nms.nms(np.zeros((1, 4)), np.zeros(1), 1.5)


def test_cuda_detect_matches_cpu(rng, monkeypatch):
    # 2 images, 40 priors, 3 classes + background. Small caps so that they bite: 6 boxes per
    # class enter NMS (of ~10-25 above the threshold), and 5 detections per image come out.
    # Deliberately several 1-D blocks on the simulator (conftest has 1): the decode, clip and
    # softmax kernels get more than one block only here (80 rows -> 3 blocks of 32, 320 values -> 4).
    if mc.simulating():
        monkeypatch.setattr(mc, "MAX_BLOCKS_1D", 4)
    priors = np.concatenate([rng.uniform(0.3, 0.7, (40, 2)), rng.uniform(0.1, 0.4, (40, 2))], 1)
    loc = rng.normal(0, 1, (2, 40, 4)).astype(np.float32)
    conf = rng.normal(0, 2, (2, 40, 4)).astype(np.float32)
    conf[1, :, 1:] = -20  # image 1: only class... none above 0.2 -> fewer than top_k
    conf[1, 7, 2] = 20  # ... except one confident box of class 2
    kwargs = dict(conf_threshold=0.2, nms_threshold=0.45, top_k=5, max_per_class=6)
    got = cuda_nms.detect(loc, conf, priors, **kwargs)
    want = cpu_nms.detect(loc, conf, priors, **kwargs)
    assert len(got) == 2
    for (gb, gl, gs), (wb, wl, ws) in zip(got, want):
        np.testing.assert_array_equal(gl, wl)
        np.testing.assert_allclose(gs, ws, rtol=1e-5)
        np.testing.assert_allclose(gb, wb, atol=1e-5)
    assert len(got[0][0]) == 5 and len(got[1][0]) == 1 and got[1][1][0] == 2
