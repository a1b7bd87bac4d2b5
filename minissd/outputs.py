"""What a training run says and leaves in its folder besides the checkpoint: the paragraph it
starts with, the validation mAP, metrics.json, curves.png, detections.png, the final summary.

    print_start(cfg, model, train_set, val_set, iters, processes)       the run in one paragraph
    result, detections = validate(model, val_set, max_images=100)     VOC07 mAP (+ area AP)
    write_outputs(out, metrics, history, model, val_set, detections)  metrics.json + pictures
"""

import json
import os

from . import config, viz
from .detect import predict_dataset
from .evaluate import evaluate_detections, format_ap_table
from .model.summary import layer_table


def print_start(cfg, model, train_set, val_set, iters, processes):
    """One paragraph: the recipe, the model, its input, the data, the iterations, the time it may take."""
    try:
        macs = layer_table(model.config, model.num_classes)[-1]["macs"]
    except Exception:  # noqa: BLE001 - the estimate is a courtesy
        macs = 0
    seconds = config.estimate_seconds(cfg, iters, macs, processes)
    size = model.config.input_size
    where = "the GPU" if cfg.device == "cuda" else f"the CPU, {processes} step process(es)"
    print(f"recipe {cfg.recipe}: model {cfg.model}, input {size}x{size}, {model.num_priors} default boxes, "
          f"{sum(p.data.size for p in model.parameters()):,} parameters; {iters} iterations of "
          f"{cfg.batch_size} ({iters * cfg.batch_size / len(train_set):.1f} epochs of {len(train_set)} "
          f"images; {len(val_set)} val) on {where}, BatchNorm over groups of {cfg.bn_group}"
          + (f"; about {config.format_duration(seconds)} of training (at a 2-core laptop's speed)"
             if seconds else ""))


def validate(model, dataset, max_images=None, batch_size=32):
    """VOC07 11-point mAP at IoU 0.5 of ``model`` on (the first ``max_images`` of) ``dataset``.

    - returns (result, detections): result as ``evaluate_detections`` gives it, plus
      "mAP_area" and "ap_area" (the area-under-the-curve AP); detections per image
    The model is put in eval mode for the predictions and back in training mode after.
    """
    model.eval()
    detections, ground_truth = predict_dataset(model, dataset, max_images=max_images, batch_size=batch_size)
    result = evaluate_detections(detections, ground_truth, class_names=dataset.classes)
    area = evaluate_detections(detections, ground_truth, class_names=dataset.classes, use_07_metric=False)
    result["mAP_area"], result["ap_area"] = area["mAP"], area["ap"]
    model.train()
    return result, detections


def save_pictures(out, history, model, dataset, detections, n=8):
    """curves.png (loss and val mAP) and detections.png (the first ``n`` val images)."""
    viz.save_figure(viz.plot_loss_curves(history), os.path.join(out, "curves.png"))
    n = min(n, len(dataset))
    images, gts = [], []
    for i in range(n):
        image, boxes, labels, _ = dataset[i]
        images.append(image)
        gts.append((boxes, labels))
    fig = viz.detection_grid(images, detections[:n], class_names=dataset.classes, ground_truth=gts)
    viz.save_figure(fig, os.path.join(out, "detections.png"))


def write_outputs(out, metrics, model, dataset, detections):
    """metrics.json, curves.png and detections.png in ``out``; then print the summary.

    - metrics: the dict written to metrics.json ("mAP", "per_class_AP", "history", ...)
    """
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    save_pictures(out, metrics["history"], model, dataset, detections)
    profile = metrics["profile_seconds"]
    print(f"\nval mAP (VOC07 11-point, IoU 0.5, {len(dataset)} images): {metrics['mAP']:.4f}")
    print(format_ap_table(dataset.classes, list(metrics["per_class_AP"].values()),
                          list(metrics["per_class_AP_area"].values()), metrics["num_objects"]))
    print("where the time went: " + ", ".join(f"{k} {v:.0f} s" for k, v in profile.items())
          + f"; {metrics['images_per_second']:.1f} images/s; wall {metrics['wall_seconds']:.0f} s")
    print(f"wrote {out}/: checkpoint.npz, metrics.json, curves.png, detections.png")
