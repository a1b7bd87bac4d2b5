"""minissd.priors: the default boxes of SSD300 and of configs built from the scale formula."""

import math
from pathlib import Path

import numpy as np
import pytest

from minissd.priors import CLIP_MODES, SSD300_VOC, PriorConfig, default_boxes


def test_ssd300_has_8732_priors():
    priors = default_boxes(SSD300_VOC)
    # 38^2*4 + 19^2*6 + 10^2*6 + 5^2*6 + 3^2*4 + 1^2*4 = 5776 + 2166 + 600 + 150 + 36 + 4
    assert priors.shape == (8732, 4) and priors.dtype == np.float32
    assert SSD300_VOC.num_priors == 8732
    assert SSD300_VOC.boxes_per_location == (4, 6, 6, 6, 4, 4)
    assert np.all((priors >= 0) & (priors <= 1))


FIXTURES = Path(__file__).parent / "fixtures"


def test_ssd300_equals_the_stored_default_boxes():
    # tests/fixtures/ssd300_priors.npz: the reference's 8732 boxes (tests/fixtures/make_fixtures.py);
    # every centre, size and the order of the boxes at once
    stored = np.load(FIXTURES / "ssd300_priors.npz")["priors"]
    got = default_boxes(SSD300_VOC)
    assert got.shape == stored.shape
    wrong = np.flatnonzero(np.abs(got - stored).max(axis=1) > 1e-6)
    assert wrong.size == 0, (f"{wrong.size} of 8732 default boxes differ; the first, box {wrong[0]}: "
                             f"{got[wrong[0]].tolist()}, expected {stored[wrong[0]].tolist()}")


def test_ssd300_order_first_locations():
    p = default_boxes(SSD300_VOC).astype(np.float64)
    r2 = math.sqrt(2)
    c = 0.5 * 8 / 300  # centre of cell (0, 0) on conv4_3 (38x38, step 8)
    s, s_extra = 30 / 300, math.sqrt(30 * 60) / 300
    np.testing.assert_allclose(p[:4], [[c, c, s, s], [c, c, s_extra, s_extra],
                                       [c, c, s * r2, s / r2], [c, c, s / r2, s * r2]], rtol=1e-6)
    np.testing.assert_allclose(p[4, :2], [1.5 * 8 / 300, c], rtol=1e-6)  # next column j = 1
    np.testing.assert_allclose(p[4 * 38, :2], [c, 1.5 * 8 / 300], rtol=1e-6)  # next row i = 1
    # the fc7 map (19x19, step 16, 6 boxes) starts right after conv4_3's 5776 boxes
    c, s, r3 = 0.5 * 16 / 300, 60 / 300, math.sqrt(3)
    np.testing.assert_allclose(p[5776:5782], [
        [c, c, s, s], [c, c] + [math.sqrt(60 * 111) / 300] * 2,
        [c, c, s * r2, s / r2], [c, c, s / r2, s * r2], [c, c, s * r3, s / r3], [c, c, s / r3, s * r3]],
        rtol=1e-6)
    # the last location (1x1 map): its tall box s*sqrt(2) = 1.24 is clipped to 1
    np.testing.assert_allclose(p[-1], [0.5, 0.5, 264 / 300 / r2, 1.0], rtol=1e-6)


def test_clip_clamps_centres_and_sizes_outside_the_image():
    unclipped = default_boxes(PriorConfig(clip=False))
    clipped = default_boxes(SSD300_VOC)
    changed = np.any(unclipped != clipped, axis=1)
    # 10 x 32 = 320 and 5 x 64 = 320 pixels: the last row and column of conv8_2 and conv9_2
    # have centres beyond 300 (cx = 9.5 * 32 / 300 = 1.013); some boxes are wider than 1
    outside = np.any((unclipped < 0) | (unclipped > 1), axis=1)
    np.testing.assert_array_equal(changed, outside)
    np.testing.assert_allclose(unclipped[5776 + 2166 + 9 * 6, 0], 9.5 * 32 / 300, rtol=1e-6)
    assert clipped[5776 + 2166 + 9 * 6, 0] == 1.0


def test_scale_formula():
    # m = 6 maps, s_min 0.2, s_max 0.9: s_k = 0.2 + 0.14 (k - 1), k = 1..6, continued to s_7 = 1.04
    cfg = PriorConfig.from_scales(300, (38, 19, 10, 5, 3, 1))
    np.testing.assert_allclose(cfg.min_sizes, [60, 102, 144, 186, 228, 270])
    np.testing.assert_allclose(cfg.max_sizes, [102, 144, 186, 228, 270, 312])
    assert cfg.aspect_ratios == ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    assert cfg.num_priors == 8732 and default_boxes(cfg).shape == (8732, 4)
    # SSD300's own layout: conv4_3 gets 0.1 alone, the formula spreads 0.2..0.9 over the rest
    cfg = PriorConfig.from_scales(300, (38, 19, 10, 5, 3, 1), first_scale=0.1)
    np.testing.assert_allclose(cfg.min_sizes, [30, 60, 112.5, 165, 217.5, 270])
    np.testing.assert_allclose(cfg.steps, [300 / 38, 300 / 19, 30, 60, 100, 300])
    # a small model: evenly tiled cell centres
    tiny = default_boxes(PriorConfig.from_scales(128, (8, 4, 2, 1)))
    assert tiny.shape == (8 * 8 * 4 + 4 * 4 * 6 + 2 * 2 * 4 + 1 * 4, 4)
    np.testing.assert_allclose(tiny[:4, :2], 1 / 16)


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=(8, 16)), "steps"),
    (dict(min_sizes=(30, 60, 111, 162, 213, 400)), "min_sizes <= max_sizes"),
    (dict(aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (0,))), "aspect_ratios"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PriorConfig(**kwargs)
    with pytest.raises(ValueError, match="config"):
        default_boxes({"image_size": 300})


# ---- coverage of a dataset's objects and fitted scales ----------------------------------------

from minissd.errors import ConfigError  # noqa: E402
from minissd.priors import fit_prior_scales, prior_coverage  # noqa: E402

# one 2x2 map on a 100 px image, squares of side 0.5 only, centred at 0.25 and 0.75
QUAD = PriorConfig(image_size=100, feature_maps=(2,), steps=(50,), min_sizes=(50,), max_sizes=(50,),
                   aspect_ratios=((),))


def test_coverage_hand_worked():
    boxes = np.array([[0, 0, 0.5, 0.5],          # exactly the top-left prior: IoU 1
                      [0, 0, 0.25, 0.25],        # inside it, a quarter of its side: 1/16 / 1/4 = 0.25
                      [0.25, 0.25, 0.75, 0.75]], np.float32)  # a quarter of each of four: 1/16 / (7/16)
    share, best = prior_coverage(boxes, QUAD, iou_threshold=0.5)
    np.testing.assert_allclose(best, [1.0, 0.25, 1 / 7], rtol=1e-6)
    assert share == pytest.approx(1 / 3)
    assert prior_coverage(boxes, QUAD, iou_threshold=0.25)[0] == pytest.approx(2 / 3)
    assert prior_coverage(np.zeros((0, 4)), QUAD)[0] == 1.0


def test_fit_finds_the_scale_of_small_objects_at_cell_centres():
    # side-0.2 squares on the four cell centres: the 0.5 priors give IoU 0.16, the fit 0.2 gives 1
    c = np.array([0.25, 0.75])
    boxes = np.array([[x - 0.1, y - 0.1, x + 0.1, y + 0.1] for x in c for y in c], np.float32)
    assert prior_coverage(boxes, QUAD, 0.5)[0] == 0
    (s, t), = fit_prior_scales(boxes, QUAD, 0.5, candidates=[0.1, 0.2, 0.5, 0.8])
    assert s == pytest.approx(0.2)
    fitted = PriorConfig.from_scale_list(100, (2,), [(s, t)], aspect_ratios=((),))
    assert prior_coverage(boxes, fitted, 0.5)[0] == 1.0


def test_fit_covers_nearly_every_small_object_of_a_larger_input():
    # aerial-like: 10-50 px objects of a 400 px photo, aspect up to 1.5, at input 384, match at 0.4
    from minissd.model import tiny_config

    rng = np.random.default_rng(0)
    side = rng.uniform(10, 50, 3000) / 400
    ar = np.exp(rng.uniform(-0.4, 0.4, 3000))
    w, h = side * ar, side / ar
    cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
    layout = tiny_config(384).priors
    before = prior_coverage(boxes, layout, 0.4)[0]
    pairs = fit_prior_scales(boxes, layout, 0.4)
    after = prior_coverage(boxes, PriorConfig.from_scale_list(384, layout.feature_maps, pairs), 0.4)[0]
    assert before < 0.7 and after > 0.95  # 0.62 -> 0.96 when written (2026-12-02)
    assert len(pairs) == len(layout.feature_maps) and all(s <= t for s, t in pairs)


def test_fit_reads_a_dataset_without_decoding(tmp_path):
    class Boxes:  # what every minissd reader has: annotations with .boxes
        def __init__(self, b):
            self.annotations = [type("R", (), {"boxes": b})()]

    c = np.array([0.25, 0.75])
    boxes = np.array([[x - 0.1, y - 0.1, x + 0.1, y + 0.1] for x in c for y in c], np.float32)
    assert fit_prior_scales(Boxes(boxes), QUAD, 0.5, candidates=[0.2, 0.5])[0][0] == pytest.approx(0.2)
    with pytest.raises(ConfigError, match=r"\(N, 4\)"):
        fit_prior_scales(np.zeros((3, 2)), QUAD)


def test_fit_takes_the_layout_of_a_model_by_name():
    from minissd.model import tiny_config

    boxes = np.array([[0.1, 0.1, 0.2, 0.25], [0.5, 0.5, 0.9, 0.8]], np.float32)
    assert fit_prior_scales(boxes, input_size=256) == fit_prior_scales(boxes, tiny_config(256).priors)
    assert len(fit_prior_scales(boxes, model="ssd300", iou_threshold=0.5)) == 6


def test_the_three_clip_modes_on_a_box_wider_than_the_image():
    # image 100 px, one 2 x 2 map (step 50), squares of 120 px only: the first box is centred
    # at (0.25, 0.25) with sides 1.2, i.e. corners (-0.35, -0.35, 0.85, 0.85)
    cfg = dict(image_size=100, feature_maps=(2,), steps=(50,), min_sizes=(120,), max_sizes=(120,),
               aspect_ratios=((),))
    first = {mode: default_boxes(PriorConfig(**cfg, clip=mode))[0] for mode in CLIP_MODES}
    np.testing.assert_allclose(first["none"], [0.25, 0.25, 1.2, 1.2], rtol=1e-6)  # as tiled
    np.testing.assert_allclose(first["center"], [0.25, 0.25, 1.0, 1.0], rtol=1e-6)  # ssd.pytorch: w clamped
    # Caffe: corners clamped to (0, 0, 0.85, 0.85), the part inside the image
    np.testing.assert_allclose(first["corner"], [0.425, 0.425, 0.85, 0.85], rtol=1e-6)
    # a box inside the image is the same in every mode
    inner = dict(cfg, min_sizes=(40,), max_sizes=(40,))
    boxes = [default_boxes(PriorConfig(**inner, clip=mode)) for mode in CLIP_MODES]
    assert all(np.array_equal(boxes[0], b) for b in boxes)


def test_old_bool_clip_values_still_load():
    # configs saved before the clip modes hold clip: true / false
    assert PriorConfig(clip=True) == SSD300_VOC and PriorConfig(clip=True).clip == "center"
    assert PriorConfig(clip=False).clip == "none"
    assert PriorConfig(clip=np.bool_(True)).clip == "center"
    with pytest.raises(ConfigError, match="PriorConfig.clip"):
        PriorConfig(clip="edges")


def test_corner_clip_on_ssd300_keeps_every_box_inside_and_moves_only_the_crossing_ones():
    corner = default_boxes(PriorConfig(clip="corner")).astype(np.float64)
    none = default_boxes(PriorConfig(clip="none")).astype(np.float64)
    lo, hi = corner[:, :2] - corner[:, 2:] / 2, corner[:, :2] + corner[:, 2:] / 2
    assert (lo >= -1e-6).all() and (hi <= 1 + 1e-6).all() and (corner[:, 2:] > 0).all()
    crossing = np.any((none[:, :2] - none[:, 2:] / 2 < 0) | (none[:, :2] + none[:, 2:] / 2 > 1), axis=1)
    np.testing.assert_allclose(corner[~crossing], none[~crossing], atol=1e-7)
    assert (np.abs(corner[crossing] - none[crossing]).max(axis=1) > 1e-4).all()
