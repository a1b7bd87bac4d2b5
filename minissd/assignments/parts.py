"""The graded parts: the one table an instructor edits.

Each part names the marked regions a student writes for it (``# [assignment NAME]`` in the
reference code) and the tests that grade it, as pytest node ids (``file::test_name``, where
``*`` matches any run of characters; a test's parametrised cases ``name[...]`` are included),
each with a weight. A part scores ``points * sum(weight * share of the pattern's cases that
pass) / sum(weight)`` over the patterns that ran: a test function is one unit whatever its
number of cases, and its weight says how wrong a result that fails it is (a wrong answer on
every input: high; a convention at one corner: low), so the points lost follow the size of the
mistake, not the number of tests that happen to catch it. Pick tests that exercise the
computation: a bad-input test passes with the function still blank (the checks sit outside
the region), and a test that monkeypatches in a wrong version checks the tests, not the
student. A test may count for two parts; keep that rare, or one mistake costs twice.

Parts build on one another as the chapters do (``match`` calls ``iou`` and ``encode``), so a
student works through them in order. ``python -m minissd.assignments check`` verifies that
every region belongs to a part and every part's regions exist; a part whose patterns select
no test scores zero, which the test of the reference (full marks) catches.
"""

from __future__ import annotations

from dataclasses import dataclass

# Chapter numbers follow the notebooks (notebooks/NN_*.ipynb).
CHAPTERS = {
    1: "Boxes and IoU",
    2: "Default boxes",
    3: "Matching",
    4: "Loss and hard negative mining",
    5: "Layers and backprop",
    6: "The network and its heads",
    7: "Training",
    8: "Inference and evaluation",
    9: "Augmentation and small objects",
}


@dataclass(frozen=True)
class Part:
    """One graded part.

    - name: short id, used by ``pytest --part NAME`` and ``student --only``
    - chapter: key of CHAPTERS
    - title: what the student builds, in a few words
    - points: what the part is worth
    - regions: the ``[assignment NAME]`` regions the student fills in for it
    - tests: node-id patterns of the tests that grade it (``*`` wildcard), each a string
      (weight 1) or a pair ``(pattern, weight)``
    """

    name: str
    chapter: int
    title: str
    points: float
    regions: tuple
    tests: tuple

    @property
    def patterns(self) -> tuple:
        """The node-id patterns, without their weights."""
        return tuple(t if isinstance(t, str) else t[0] for t in self.tests)

    @property
    def weights(self) -> tuple:
        """One weight per pattern."""
        return tuple(1.0 if isinstance(t, str) else float(t[1]) for t in self.tests)


def _tests(file, *names):
    """Node-id patterns for tests ``names`` of one test file; a name given as ``(name, w)``
    has weight ``w``."""
    return tuple(f"tests/{file}::{n}" if isinstance(n, str) else (f"tests/{file}::{n[0]}", n[1])
                 for n in names)


PARTS = (
    # -- 1. boxes -----------------------------------------------------------------------------
    Part("iou", 1, "IoU matrix of two sets of boxes", 6, ("iou",), _tests(
        "test_boxes.py", ("test_iou_known_boxes", 3), ("test_iou_of_boxes_apart_is_zero", 3),
        ("test_iou_matches_naive_and_is_symmetric_in_unit_range", 3), "test_iou_empty_and_degenerate")),
    Part("encode_decode", 1, "encode and decode against default boxes", 6, ("encode", "decode"),
         _tests("test_boxes.py", ("test_encode_worked_example", 2), ("test_decode_worked_example", 2),
                ("test_encode_decode_round_trip_and_naive", 2))),
    Part("voc_boxes", 1, "VOC pixel boxes to normalised corners", 2, ("voc_to_normalised",),
         _tests("test_data_voc.py", "test_boxes_labels_and_1_based_conversion",
                "test_conversion_inverts_to_continuous_pixels")),
    # -- 2. default boxes ---------------------------------------------------------------------
    Part("default_boxes", 2, "SSD300's 8732 default boxes", 6, ("default_boxes",), _tests(
        "test_priors.py", "test_ssd300_has_8732_priors", ("test_ssd300_equals_the_stored_default_boxes", 4),
        ("test_ssd300_order_first_locations", 2), "test_clip_clamps_centres_and_sizes_outside_the_image",
        "test_scale_formula")),
    # -- 3. matching --------------------------------------------------------------------------
    Part("match", 3, "matching ground truths to default boxes", 8, ("match",), _tests(
        "test_matching.py", ("test_worked_example_best_prior_below_threshold_is_still_positive", 2),
        "test_threshold_is_inclusive_and_configurable",
        ("test_forced_prior_overrides_a_better_object", 2),
        ("test_two_objects_over_the_threshold_on_one_prior_take_the_best", 5),
        ("test_clusters_of_overlapping_objects_match_naive", 5),
        ("test_matches_naive_on_random_images", 2), "test_batch_equals_one_image_at_a_time")),
    # -- 4. loss ------------------------------------------------------------------------------
    Part("hard_negative_mining", 4, "hard negative mining at 3:1", 6, ("hard_negative_mining",),
         _tests("test_loss.py", ("test_mining_worked_example_with_known_ranks", 2),
                ("test_mining_is_per_image", 2), ("test_mining_matches_naive", 3))),
    Part("multibox_loss", 4, "the multibox loss and its gradients", 8, ("multibox_loss",), _tests(
        "test_loss.py", ("test_multibox_loss_values_by_hand", 3), ("test_multibox_loss_gradients_by_hand", 4),
        ("test_multibox_loss_divides_by_the_positives_of_the_whole_batch", 2),
        ("test_multibox_loss_gradient_check", 3), "test_multibox_loss_float32_and_no_positives")),
    # -- 5. layers ----------------------------------------------------------------------------
    Part("relu_backward", 5, "ReLU backward", 2, ("relu_backward",), _tests(
        "test_nn_activation.py", ("test_relu_backward_worked_example", 3),
        ("test_relu_gradient_matches_finite_differences", 2),
        ("test_relu_float32_gradient_stays_float32", 6.5),
        "test_relu_backward_leaves_the_callers_gradient_alone")),
    Part("conv_backward", 5, "convolution backward (stride, padding, dilation)", 8,
         ("conv_backward", "col2im"), _tests(
             "test_nn_conv.py", ("test_gradients_match_finite_differences", 3),
             ("test_a_stack_of_ssd_layers_each_of_several_chunks_gets_its_gradient", 4),
             "test_many_small_chunks_give_the_same_result",
             ("test_float32_layer_gets_float32_gradients_added_into_grad", 9),
             ("test_without_bias_and_without_input_grad", 0.5))),
    Part("maxpool_backward", 5, "max-pool backward", 4, ("maxpool_backward",), _tests(
        "test_nn_pool.py", ("test_gradient_matches_finite_differences", 3),
        ("test_backward_worked_example", 2),
        ("test_float32_gradient_stays_float32_and_matches_float64", 5.5))),
    Part("l2norm_backward", 5, "L2Norm backward", 4, ("l2norm_backward",), _tests(
        "test_nn_norm.py", ("test_l2norm_gradients", 4),
        ("test_l2norm_zero_vector_maps_to_zero_with_a_finite_gradient", 1.5),
        "test_l2norm_gradient_follows_the_eps_of_forward",
        ("test_l2norm_float32_gradients_added_into_grad", 7))),
    Part("sgd_step", 5, "SGD with momentum and weight decay", 4, ("sgd_step",), _tests(
        "test_nn_optim.py", "test_plain_sgd", ("test_sgd_momentum_and_weight_decay_by_hand", 2),
        "test_sgd_nesterov_by_hand",
        ("test_sgd_momentum_follows_warmup_then_cosine_as_training_sets_it", 4),
        ("test_sgd_weight_decay_and_momentum_under_warmup_by_hand", 2))),
    # -- 6. the network ----------------------------------------------------------------------
    Part("heads", 6, "prediction heads: flatten, concatenate the maps, split", 6,
         ("heads_forward", "heads_backward"), _tests(
             "test_heads.py", ("test_every_prediction_lands_at_its_default_box", 3),
             ("test_each_conv_reads_its_own_source_and_outputs_keep_the_dtype", 0.5),
             ("test_backward_is_the_transpose_of_forward", 3),
             ("test_backward_puts_each_gradient_where_its_output_came_from", 3),
             ("test_backward_returns_each_maps_source_gradient_in_order", 0.5))),
    # -- 7. training ---------------------------------------------------------------------------
    Part("train_step", 7, "the training step: match, forward, loss, backward", 6, ("train_step",),
         _tests("test_training_step.py", ("test_the_step_leaves_the_gradient_of_the_loss_it_returns", 3),
                ("test_the_step_zeroes_the_gradients_first", 3),
                ("test_the_loss_config_reaches_matching_and_the_loss", 3),
                "test_a_non_finite_output_or_loss_stops_before_backward",
                "test_times_add_up_per_stage_and_stats_count_the_positives",
                ("test_the_loss_falls_when_stepping_on_a_few_images", 2))),
    # -- 8. inference and evaluation -----------------------------------------------------------
    Part("nms", 8, "greedy non-maximum suppression", 5, ("nms",), _tests(
        "test_nms.py", ("test_nms_worked_example", 3), ("test_suppressed_boxes_do_not_suppress", 2),
        ("test_nms_matches_naive", 3))),
    Part("per_class_nms", 8, "per-class thresholds, NMS and top-k of one image", 4,
         ("per_class_nms",), _tests(
             "test_nms.py", ("test_per_class_nms_worked_example", 3),
             ("test_background_is_never_detected", 2), ("test_each_class_is_suppressed_on_its_own", 3),
             "test_score_threshold_is_strict", ("test_max_per_class_caps_before_nms", 2),
             ("test_top_k_is_over_all_classes", 2), "test_equal_scores_lower_class_first",
             "test_nms_threshold_reaches_nms", ("test_per_class_nms_matches_naive", 3))),
    Part("voc_tp_fp", 8, "VOC true and false positives (duplicates, difficult objects)", 5,
         ("voc_tp_fp",), _tests(
             "test_evaluate.py", ("test_tp_fp_worked_example", 3),
             ("test_tp_fp_duplicates_are_false_positives", 3),
             ("test_tp_fp_takes_the_best_object_not_the_first", 3),
             ("test_tp_fp_a_taken_best_object_is_not_replaced", 2),
             ("test_tp_fp_difficult_objects_are_neither", 3),
             "test_tp_fp_the_best_object_decides_even_if_difficult", ("test_tp_fp_two_images", 5),
             "test_tp_fp_threshold_is_inclusive", "test_tp_fp_equal_scores_keep_the_given_order",
             ("test_tp_fp_matches_the_devkit_on_random_detections", 15), ("test_tp_fp_properties", 2))),
    Part("voc_ap", 8, "VOC average precision (11-point and area)", 4, ("voc_ap",), _tests(
        "test_evaluate.py", ("test_voc_ap_worked_11_point_example", 3), "test_voc_ap_extremes",
        ("test_voc_ap_area_takes_the_envelope", 3),
        ("test_voc_ap_matches_naive_devkit_on_random_rankings", 3))),
    # -- 9. augmentation ------------------------------------------------------------------------
    Part("photometric_distort", 9, "photometric distortion", 2, ("photometric_distort",), _tests(
        "test_data_augment.py", "test_brightness_alone_adds_delta",
        "test_photometric_leaves_boxes_and_shape", ("test_photometric_equals_the_stored_reference_for_24_seeds", 4))),
    Part("expand", 9, "zoom out (expand) for small objects", 2, ("expand",), _tests(
        "test_data_augment.py", ("test_expand_keeps_boxes_on_the_same_pixels", 2),
        "test_expand_fills_with_the_mean", ("test_expand_equals_the_stored_reference_for_24_seeds", 3))),
    Part("random_iou_crop", 9, "random IoU crop", 2, ("random_iou_crop",), _tests(
        "test_data_augment.py", ("test_crop_keeps_exactly_the_boxes_whose_centres_are_inside", 2),
        "test_crop_meets_its_min_iou", ("test_crop_equals_the_stored_reference_for_24_seeds", 3))),
)
