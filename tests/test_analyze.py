"""minissd.analyze: hand-built detection sets where every error type is known, AP values worked
by hand, what fixing each type is worth, buckets, the confusion matrix and the command line."""

import json
import math

import numpy as np
import pytest

from minissd import analyze as A
from minissd.evaluate import evaluate_detections

CLASSES = ["star", "cross"]


def dets(*rows):
    """detections of one image from (box, label, score) rows."""
    if not rows:
        return (np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    return (np.array([r[0] for r in rows], float), np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows], float))


def gts(*rows):
    """ground truth of one image from (box, label[, difficult]) rows."""
    return (np.array([r[0] for r in rows], float).reshape(-1, 4), np.array([r[1] for r in rows], np.int64),
            np.array([r[2] if len(r) > 2 else False for r in rows], bool))


STAR = [0.0, 0.0, 0.4, 0.4]   # a star, area 0.16
CROSS = [0.6, 0.6, 1.0, 1.0]  # a cross, far from it
SHIFTED = [0.2, 0.0, 0.6, 0.4]  # STAR moved by half its width: IoU 0.08/0.24 = 1/3
FAR = [0.45, 0.0, 0.55, 0.1]  # touches nothing


def one_of_each():
    """image 0: a star and a cross; image 1: a star (difficult) and a cross nobody finds."""
    detections = [
        dets((STAR, 1, 0.9),       # correct
             (STAR, 1, 0.8),       # duplicate: the star is taken
             (SHIFTED, 1, 0.7),    # localisation: IoU 1/3 with the star... but the star is taken by then; still loc
             (CROSS, 1, 0.6),      # confusion: a star detector firing on the cross
             (FAR, 2, 0.5),        # background
             (CROSS, 2, 0.2)),     # correct, below the 0.3 threshold of the counts
        dets((STAR, 1, 0.95)),     # on a difficult star: ignored
    ]
    ground_truths = [gts((STAR, 1), (CROSS, 2)), gts((STAR, 1, True), (CROSS, 2))]
    return detections, ground_truths


def test_every_type_is_classified():
    detections, ground_truths = one_of_each()
    d, g = A._check_inputs(detections, ground_truths, 2)
    types, targets, ious = A.classify(d, g, 2)
    names = [A.ERROR_TYPES[t] if t >= 0 else "ignored" for t in types[0]]
    assert names == ["correct", "duplicate", "localisation", "confusion", "background", "correct"]
    assert types[1].tolist() == [A.IGNORED]
    assert targets[0].tolist() == [0, 0, 0, 1, -1, 1]
    assert ious[0][2] == pytest.approx(1 / 3)


def test_counts_above_the_threshold_and_missed():
    detections, ground_truths = one_of_each()
    r = A.analyze(detections, ground_truths, CLASSES, score_threshold=0.3)
    # the cross of image 0 is found only at 0.2 (below 0.3), the cross of image 1 never: 2 missed;
    # the difficult star is never missed
    assert r["counts"] == {"correct": 1, "localisation": 1, "duplicate": 1, "confusion": 1,
                           "background": 1, "missed": 2}
    assert r["counts_per_class"]["star"]["confusion"] == 1
    assert r["counts_per_class"]["cross"]["missed"] == 2
    # rows: object class (star, cross, background); columns: predicted (star, cross, missed)
    assert r["confusion"]["matrix"] == [[1, 0, 0],
                                        [1, 0, 2],
                                        [0, 1, 0]]
    assert set(r) >= {"counts", "delta_map", "map"}
    json.dumps(r)  # JSON-able as it is


def test_ap_worked_by_hand_and_equal_to_evaluate():
    detections, ground_truths = one_of_each()
    r = A.analyze(detections, ground_truths, CLASSES)
    # star: one object (the other is difficult); ranking TP, FP, FP, FP (the 0.95 one is ignored):
    # precision 1 at recall 1 -> AP 1. cross: two objects; ranking FP (0.5), TP (0.2):
    # recall 0, 0.5; precision 0, 0.5 -> 11-point: t = 0..0.5 (6 points) at 0.5, others 0 -> 3/11
    assert r["ap"]["star"] == pytest.approx(1.0)
    assert r["ap"]["cross"] == pytest.approx(3 / 11)
    assert r["map"] == pytest.approx((1 + 3 / 11) / 2)
    assert r["map"] == pytest.approx(evaluate_detections(detections, ground_truths, class_names=CLASSES)["mAP"])


def test_delta_map_of_each_fix_by_hand():
    detections, ground_truths = one_of_each()
    r = A.analyze(detections, ground_truths, CLASSES)
    d = r["delta_map"]
    # star is at AP 1 already: only cross moves. cross ranking: background FP (0.5), TP (0.2).
    # background fixed: TP alone, recall 0.5 at precision 1 -> 6/11 (+3/11 on cross, +3/22 mAP)
    assert d["background"] == pytest.approx(3 / 22)
    # missed fixed: the never-found cross leaves the count: FP, TP with 1 object -> recall 1 at
    # precision 0.5 -> 0.5 (from 3/11: +(0.5 - 3/11)/2)
    assert d["missed"] == pytest.approx((0.5 - 3 / 11) / 2)
    for fix in ("localisation", "duplicate", "confusion"):  # errors of the star class only
        assert d[fix] == pytest.approx(0.0)


def test_localisation_fix_finds_an_object_nobody_found():
    # two stars; the first is found, the second only by a poorly placed box
    star2 = [0.5, 0.5, 0.9, 0.9]
    near2 = [0.7, 0.5, 1.0, 0.9]  # IoU with star2: 0.2*0.4 / (0.16 + 0.12 - 0.08) = 0.4
    detections = [dets((STAR, 1, 0.9), (near2, 1, 0.8))]
    ground_truths = [gts((STAR, 1), (star2, 1))]
    r = A.analyze(detections, ground_truths, ["star"])
    assert r["counts"]["localisation"] == 1 and r["counts"]["missed"] == 1
    # now: TP, FP -> recall 0.5 at precision 1 -> 6/11; fixed: TP, TP -> 1
    assert r["map"] == pytest.approx(6 / 11)
    assert r["delta_map"]["localisation"] == pytest.approx(5 / 11)
    # a localisation error next to an object already found is dropped, not made a duplicate
    detections = [dets((STAR, 1, 0.9), (SHIFTED, 1, 0.8))]
    r = A.analyze(detections, [gts((STAR, 1))], ["star"])
    assert r["map"] == pytest.approx(1.0) and r["delta_map"]["localisation"] == pytest.approx(0.0)


def test_duplicate_and_confusion_fixes_drop_them():
    # cross: a duplicate outranks... no: rank TP 0.9, DUP 0.8, then a second object found at 0.7
    cross2 = [0.0, 0.6, 0.4, 1.0]
    detections = [dets((CROSS, 2, 0.9), (CROSS, 2, 0.8), (STAR, 2, 0.75), (cross2, 2, 0.7))]
    ground_truths = [gts((STAR, 1), (CROSS, 2), (cross2, 2))]
    r = A.analyze(detections, ground_truths, CLASSES, score_threshold=0.0)
    assert r["counts"]["duplicate"] == 1 and r["counts"]["confusion"] == 1
    # cross: TP FP FP TP -> p at recall 1 is 2/4 -> 11-pt: 6 points at 1, 5 at 0.5 -> 8.5/11
    assert r["ap"]["cross"] == pytest.approx(8.5 / 11)
    # star: no detection -> AP 0; mAP = 8.5/22. Fix duplicates: TP FP TP -> 6 + 5*2/3 = 28/3 / 11
    assert r["delta_map"]["duplicate"] == pytest.approx((28 / 3 / 11 - 8.5 / 11) / 2)
    assert r["delta_map"]["confusion"] == pytest.approx((28 / 3 / 11 - 8.5 / 11) / 2)
    assert r["confusion"]["matrix"][0][1] == 1  # a star predicted as cross


def test_a_wrong_order_of_tests_would_fail():
    # a star box half on the star (IoU 1/3) and fully on a cross of the same size: right class
    # is tested first, so this is localisation, not confusion
    detections = [dets((SHIFTED, 1, 0.9))]
    ground_truths = [gts((STAR, 1), (SHIFTED, 2))]
    r = A.analyze(detections, ground_truths, CLASSES)
    assert r["counts"]["localisation"] == 1 and r["counts"]["confusion"] == 0


def test_buckets_by_size_and_aspect():
    # ten stars of growing area in ten images, each found except the smallest; percentiles
    # 10/30/70/90 of the areas put one object in XS, two in S, four in M, two in L, one in XL
    sides = np.linspace(0.1, 0.55, 10)
    ground_truths = [gts(([0, 0, s, s], 1)) for s in sides]
    detections = [dets(([0, 0, s, s], 1, 0.9)) if k else dets() for k, s in enumerate(sides)]
    r = A.analyze(detections, ground_truths, ["star"])
    assert [b["objects"] for b in r["by_size"].values()] == [1, 2, 4, 2, 1]
    assert r["by_size"]["XS"]["recall"] == 0.0 and r["by_size"]["XS"]["ap"] == 0.0
    assert all(r["by_size"][b]["recall"] == 1.0 and r["by_size"][b]["ap"] == pytest.approx(1.0) for b in ("S", "M", "L", "XL"))
    # all square: every aspect ratio is 1, so one bucket (the one past the tied percentiles) holds them
    assert sum(b["objects"] for b in r["by_aspect"].values()) == 10
    # pixel sizes change the aspect: on a 100 x 200 image (H, W) a normalised square is 2:1 wide
    r = A.analyze(detections, ground_truths, ["star"], image_sizes=[(100, 200)] * 10)
    assert sum(b["objects"] for b in r["by_size"].values()) == 10


def test_an_out_of_bucket_detection_counts_neither_way():
    # a small star found, a large star found twice (a duplicate): the duplicate belongs to the
    # large object's bucket and must not lower the small bucket's AP
    # (ten images, sides 0.05..0.14 and 0.4..0.49: the two smallest objects are XS)
    smalls = [[0, 0, s, s] for s in np.arange(10) * 0.01 + 0.05]
    larges = [[0.5, 0.5, 0.5 + s, 0.5 + s] for s in np.arange(10) * 0.01 + 0.4]
    ground_truths = [gts((small, 1), (large, 1)) for small, large in zip(smalls, larges)]
    detections = [dets((large, 1, 0.95), (large, 1, 0.9), (small, 1, 0.5)) for small, large in zip(smalls, larges)]
    r = A.analyze(detections, ground_truths, ["star"])
    assert r["by_size"]["XS"]["objects"] == 2
    assert r["by_size"]["XS"]["ap"] == pytest.approx(1.0)  # plain VOC would rank 20 duplicates above them
    assert r["ap"]["star"] < 1.0


def test_ranking_shares_sum_to_one_and_false_positives_best_first():
    detections, ground_truths = one_of_each()
    r = A.analyze(detections, ground_truths, CLASSES)
    total = sum(np.asarray(r["ranking"][t]) for t in A.ERROR_TYPES)
    assert np.allclose(total, 1.0)
    assert r["ranking"]["objects"] == 3
    scores = [f["score"] for f in r["false_positives"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 4
    assert r["false_positives"][2]["type"] == "confusion" and r["false_positives"][2]["object_label"] == "cross"


def test_no_detections_at_all():
    r = A.analyze([dets()], [gts((STAR, 1))], ["star"])
    assert r["map"] == 0.0 and r["counts"]["missed"] == 1
    assert r["delta_map"]["missed"] == 0.0 and not math.isnan(r["delta_map"]["background"])


# ---- reading detections and the command line -----------------------------------------------------

def test_read_detections_and_its_errors(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"image_id": "b", "label": "cross", "score": 0.5, "box": [0, 0, 1, 1]}]))
    got = A.read_detections(path, ["a", "b"], CLASSES)
    assert len(got[0][0]) == 0 and got[1][1].tolist() == [2] and got[1][0].shape == (1, 4)
    for rows, match in (([{"image_id": "z", "label": "cross", "score": 1, "box": [0, 0, 1, 1]}], "image_id 'z'"),
                        ([{"image_id": "a", "label": "dog", "score": 1, "box": [0, 0, 1, 1]}], "label 'dog'"),
                        ([{"image_id": "a"}], "detection 0")):
        path.write_text(json.dumps(rows))
        with pytest.raises(A.DatasetError, match=match):
            A.read_detections(path, ["a", "b"], CLASSES)
    path.write_text("{not json")
    with pytest.raises(A.DatasetError, match="d.json"):
        A.read_detections(path, ["a"], CLASSES)


def test_cli_on_a_detections_file(tmp_path, capsys):
    from minissd.data import make_tiny_voc
    from minissd.data.voc import VOCDataset

    root = make_tiny_voc(tmp_path / "tv", n_train=2, n_val=6)
    ds = VOCDataset(root, "val")
    rows = [{"image_id": image_id, "label": ds.classes[int(l) - 1], "score": 0.9, "box": [float(v) for v in b]}
            for image_id, a in zip(ds.ids, ds.annotations) for b, l in zip(a.boxes, a.labels)]
    rows.append({"image_id": ds.ids[0], "label": ds.classes[0], "score": 0.8, "box": [0.0, 0.0, 0.01, 0.01]})
    (tmp_path / "d.json").write_text(json.dumps(rows))
    argv = ["--voc-root", str(root), "--split", "val", "--detections", str(tmp_path / "d.json"),
            "--json", str(tmp_path / "a.json"), "--out", str(tmp_path / "pics")]
    assert A.main(argv) == 0
    result = json.loads((tmp_path / "a.json").read_text())
    n_objects = sum(int((~a.difficult).sum()) for a in ds.annotations)
    # the ground truth itself: every object correct (difficult ones ignored), plus one background box
    assert result["counts"]["correct"] == n_objects and result["counts"]["background"] == 1
    assert result["counts"]["missed"] == 0
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == [
        "confusion.png", "errors.png", "false_positives.png", "sensitivity.png"]
    assert "mAP" in capsys.readouterr().out


def test_cli_messages(tmp_path, capsys):
    from minissd import cli

    assert cli.run(A.main, ["--tiny-voc", "--data-dir", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert cli.run(A.main, ["--voc-root", str(tmp_path), "--checkpoint", str(tmp_path / "no.npz")]) == 2
    assert "no.npz" in capsys.readouterr().err
