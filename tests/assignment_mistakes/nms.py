"""Wrong NMS (replacement for minissd.nms._suppress, same arguments)."""

from minissd.nms import _box_iou


def suppress_with_greater_or_equal(boxes, order, iou_threshold, keep):
    """Suppresses a box whose IoU with a kept box is >= the threshold (should be >)."""
    suppressed = [False] * len(order)
    n_kept = 0
    for a in range(len(order)):
        if suppressed[a]:
            continue
        keep[n_kept] = order[a]
        n_kept += 1
        for b in range(a + 1, len(order)):
            if _box_iou(*boxes[order[a]], *boxes[order[b]]) >= iou_threshold:  # the mistake
                suppressed[b] = True
    return n_kept
