"""Wrong answers a student could hand in, one per common mistake; the grader must take points.

Each is a drop-in replacement for the function that holds a marked region (same arguments,
same outputs), wrong in exactly one way and named after the mistake; most are written
plainly in NumPy, a few wrap the reference with one argument changed. ``run.py`` grades the
part of each with it swapped in; tests/test_assignments_parts.py checks every one loses points.
"""

# (part, reference function "module:name", wrong answer "module:name" in this package)
MISTAKES = [
    ("iou", "minissd.boxes:_iou_matrix", "boxes:iou_matrix_without_clamp"),
    ("encode_decode", "minissd.boxes:_encode_rows", "boxes:encode_rows_without_variances"),
    ("match", "minissd.matching:_match_one", "matching:match_without_forced_best_prior"),
    ("match", "minissd.matching:_match_one", "matching:match_with_strict_threshold"),
    ("hard_negative_mining", "minissd.loss:_mine", "loss:mine_ignoring_ratio"),
    ("hard_negative_mining", "minissd.loss:_mine", "loss:mine_counting_positives_as_negatives"),
    ("multibox_loss", "minissd.loss:multibox_loss", "loss:multibox_loss_over_batch_size"),
    ("conv_backward", "minissd.nn.conv:conv2d_backward", "nn:conv_backward_ignoring_stride"),
    ("conv_backward", "minissd.nn.conv:conv2d_backward", "nn:conv_backward_ignoring_dilation"),
    ("heads", "minissd.model.heads:MultiBoxHead.forward", "heads:heads_forward_without_transpose"),
    ("heads", "minissd.model.heads:MultiBoxHead.forward", "heads:heads_forward_columns_before_rows"),
    ("heads", "minissd.model.heads:MultiBoxHead.forward", "heads:heads_forward_loc_then_conf_channels"),
    ("heads", "minissd.model.heads:MultiBoxHead.forward", "heads:heads_forward_maps_in_reverse"),
    ("heads", "minissd.model.heads:MultiBoxHead.backward", "heads:heads_backward_columns_before_rows"),
    ("heads", "minissd.model.heads:MultiBoxHead.backward", "heads:heads_backward_conf_before_loc"),
    ("heads", "minissd.model.heads:MultiBoxHead.backward", "heads:heads_backward_every_map_from_the_start"),
    ("train_step", "minissd.step:forward_backward", "step:step_without_zero_grad"),
    ("train_step", "minissd.step:forward_backward", "step:step_dropping_the_matching_rule"),
    ("train_step", "minissd.step:forward_backward", "step:step_dropping_the_conf_loss"),
    ("train_step", "minissd.step:forward_backward", "step:step_without_the_finite_checks"),
    ("train_step", "minissd.step:forward_backward", "step:step_returning_the_sum"),
    ("nms", "minissd.nms:_suppress", "nms:suppress_with_greater_or_equal"),
    ("nms", "minissd.nms:_suppress", "nms:suppress_in_index_order"),
    ("nms", "minissd.nms:_suppress", "nms:suppress_by_suppressed_boxes_too"),
    ("per_class_nms", "minissd.nms:per_class_nms", "nms:per_class_nms_class_agnostic"),
    ("per_class_nms", "minissd.nms:per_class_nms", "nms:per_class_nms_with_background"),
    ("per_class_nms", "minissd.nms:per_class_nms", "nms:per_class_nms_capping_after_nms"),
    ("per_class_nms", "minissd.nms:per_class_nms", "nms:per_class_nms_threshold_inclusive"),
    ("per_class_nms", "minissd.nms:per_class_nms", "nms:per_class_nms_suppressed_in_every_class"),
    ("per_class_nms", "minissd.nms:per_class_nms", "nms:per_class_nms_top_k_per_class"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_difficult_as_false_positive"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_duplicates_as_true_positives"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_first_object_over_threshold"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_best_untaken_object"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_skipping_difficult_objects"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_not_ranked"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_ranked_by_reversed_argsort"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_with_strict_threshold"),
    ("voc_tp_fp", "minissd.evaluate:voc_tp_fp", "evaluate:tp_fp_objects_taken_across_images"),
    ("voc_ap", "minissd.evaluate:voc_ap", "evaluate:voc_ap_on_10_points"),
    ("voc_ap", "minissd.evaluate:voc_ap", "evaluate:voc_ap_without_the_envelope"),
]
