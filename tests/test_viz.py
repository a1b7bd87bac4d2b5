"""minissd.viz: boxes land on the right pixels, priors are split per map in default_boxes
order, and every function returns something a notebook can show or a script can save."""

import matplotlib
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from minissd import viz
from minissd.priors import PriorConfig, default_boxes

matplotlib.use("Agg")


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_draw_boxes_scales_normalised_corners_to_pixels():
    image = np.zeros((40, 80, 3), np.uint8)  # H=40, W=80
    ax = viz.draw_boxes(image, np.array([[0.25, 0.5, 0.75, 1.0]]), labels=[2], scores=[0.875],
                        class_names=["cat", "dog"])
    (rect,) = rectangles(ax)
    # x: 0.25*80 = 20, width 0.5*80 = 40; y: 0.5*40 = 20, height 0.5*40 = 20
    assert rect.get_xy() == pytest.approx((20, 20))
    assert rect.get_width() == pytest.approx(40) and rect.get_height() == pytest.approx(20)
    assert [t.get_text() for t in ax.texts] == ["dog 0.88"]
    assert rect.get_edgecolor()[:3] == pytest.approx(viz.class_color(2))


def test_draw_boxes_without_text_and_empty():
    ax = viz.draw_boxes(np.zeros((10, 10, 3)), np.zeros((0, 4)))
    assert rectangles(ax) == [] and len(ax.texts) == 0
    ax = viz.draw_boxes(np.zeros((10, 10, 3)), [[0, 0, 1, 1]], labels=[1], show_text=False)
    assert len(rectangles(ax)) == 1 and len(ax.texts) == 0


def test_split_priors_follows_default_boxes_order():
    config = PriorConfig.from_scales(100, (4, 2), s_min=0.2, s_max=0.6, aspect_ratios=((2,), ()))
    priors = default_boxes(config)
    blocks = viz.split_priors(priors, config.feature_maps, config.boxes_per_location)
    assert [b.shape for b in blocks] == [(4, 4, 4, 4), (2, 2, 2, 4)]
    # row i, column j: centre ((j + 0.5) / f, (i + 0.5) / f)
    assert blocks[0][1, 3, 0, :2] == pytest.approx((3.5 / 4, 1.5 / 4))
    with pytest.raises(ValueError, match="give"):
        viz.split_priors(priors[:-1], config.feature_maps, config.boxes_per_location)


def test_draw_priors_one_panel_per_map(tmp_path):
    config = PriorConfig.from_scales(64, (8, 4, 2), s_min=0.2, s_max=0.8)
    fig = viz.draw_priors(default_boxes(config), config.feature_maps, config.boxes_per_location, image_size=64)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    # the centre location's k boxes are drawn on each map
    assert [len(rectangles(ax)) for ax in panels] == list(config.boxes_per_location)
    path = viz.save_figure(fig, tmp_path / "priors.png")
    assert (tmp_path / "priors.png").stat().st_size > 1000 and path.name == "priors.png"


def test_matches_and_mined_negatives_are_counted():
    priors = np.array([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5]], np.float32)
    conf_t = np.array([1, 0, 0])
    image = np.zeros((20, 20, 3))
    ax = viz.draw_matches(image, np.array([[0.1, 0.1, 0.4, 0.4]]), priors, conf_t, gt_labels=[1])
    assert len(rectangles(ax)) == 2 and "1 positive" in ax.get_title()
    mask = np.array([True, True, False])
    ax = viz.draw_mined_negatives(image, priors, mask, conf_t)
    assert "1 positives, 1 mined negatives" in ax.get_title()
    assert len(rectangles(ax)) == 2


def test_curves_and_grid(tmp_path):
    history = {"iteration": [1, 2, 3], "loss_l": [3.0, 2.0, 1.0], "loss_c": [9.0, 5.0, 4.0],
               "eval_iteration": [3], "mAP": [0.5]}
    fig = viz.plot_loss_curves(history)
    assert len(fig.axes) == 2  # losses and the mAP axis
    viz.save_figure(fig, tmp_path / "curves.png")
    ax = viz.plot_pr_curves([(np.array([0.1, 0.5]), np.array([1.0, 0.8])), None], class_names=["a", "b"])
    assert len(ax.lines) == 1
    dets = [(np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([1]), np.array([0.9]))] * 2
    fig = viz.detection_grid([np.zeros((10, 10, 3))] * 2, dets, class_names=["a"], ncols=2,
                             ground_truth=[(np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([1]))] * 2)
    assert sum(len(rectangles(ax)) for ax in fig.axes) == 4  # one detection + one truth each
    viz.save_figure(fig, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").exists()


def test_to_image_undoes_the_normalisation():
    from minissd.data.augment import MEAN, STD, normalize

    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3)).astype(np.uint8)
    chw, _, _ = normalize(pixels, None, None)
    back = viz.to_image(chw, mean=MEAN, std=STD)
    np.testing.assert_allclose(back, pixels / 255.0, atol=1e-5)


def test_labels_of_stacked_boxes_never_overlap():
    # five boxes on almost the same spot (what NMS leaves for one object with several classes):
    # drawn naively, their labels print on top of each other ("ring 0.51.51.52")
    boxes = np.array([[0.30, 0.30, 0.60, 0.60]] * 4 + [[0.31, 0.31, 0.61, 0.61]])
    ax = viz.draw_boxes(np.zeros((128, 128, 3), np.uint8), boxes, labels=[1, 2, 3, 4, 5],
                        scores=[0.9, 0.8, 0.7, 0.6, 0.5], class_names=list("abcde"))
    renderer = ax.figure.canvas.get_renderer()
    extents = [t.get_window_extent(renderer=renderer) for t in ax.texts]
    assert 1 <= len(extents) <= 5
    for i, a in enumerate(extents):
        for b in extents[i + 1:]:
            assert not a.overlaps(b)
    # the best-scored boxes keep their labels: the first four places go to a, b, c, d
    assert [t.get_text() for t in ax.texts][:2] == ["a 0.90", "b 0.80"]


def test_analysis_pictures(tmp_path):
    from minissd.analyze import analyze

    gt = [(np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([1]), np.array([False]))] * 3
    det = [(np.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]]), np.array([1, 2]), np.array([0.9, 0.4]))] * 3
    result = analyze(det, gt, ["a", "b"])
    for name, fig in (("r", viz.plot_error_ranking(result)), ("s", viz.plot_sensitivity(result)),
                      ("c", viz.plot_confusion(result)), ("d", viz.plot_delta_map(result))):
        assert (tmp_path / f"{name}.png") == type(tmp_path)(viz.save_figure(fig, tmp_path / f"{name}.png"))
    data = [(np.zeros((64, 64, 3), np.uint8), gt[0][0], gt[0][1])] * 3
    fig = viz.false_positive_grid(data, result["false_positives"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["b 0.40"]


def test_draw_priors_names_each_box_colour_in_a_legend():
    config = PriorConfig.from_scales(64, (8, 4), s_min=0.2, s_max=0.6, aspect_ratios=((2, 3), (2,)))
    fig = viz.draw_priors(default_boxes(config), config.feature_maps, config.boxes_per_location)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "square s_k", "square sqrt(s_k s_k+1)", "w:h 2:1", "w:h 1:2", "w:h 3:1", "w:h 1:3"]
