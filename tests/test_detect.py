"""minissd.detect: a checkpoint rebuilds its own network; predict/predict_dataset return
detections in the documented form; the CLI writes one picture per image."""

import numpy as np
import pytest
from PIL import Image

from minissd import detect
from minissd.checkpoint import CheckpointError, save_checkpoint
from minissd.data import VOCDataset, make_tiny_voc
from minissd.model import SSD, SSDConfig
from minissd.priors import PriorConfig

MINI = SSDConfig(
    name="mini",
    tables=((("conv", 8, 3, 2, 1, 1), "M", 16), ("M", 16)),  # 32 -> 8 -> 4
    priors=PriorConfig.from_scales(32, (8, 4), s_min=0.2, s_max=0.7),
    batch_norm=True)
CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("data") / "tiny-voc", n_train=2, n_val=5, workers=1)


@pytest.fixture
def checkpoint(tmp_path):
    model = SSD(MINI, len(CLASSES), seed=1)
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, extra={"classes": CLASSES, "model": "mini",
                                        "model_config": MINI.to_dict()})
    return path, model


def test_load_model_rebuilds_the_trained_network(checkpoint):
    path, original = checkpoint
    model, classes = detect.load_model(path)
    assert classes == CLASSES and model.config == MINI and not model.training
    for (k, a), (k2, b) in zip(original.state_dict().items(), model.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)


def test_load_model_refuses_a_bare_weights_file(tmp_path):
    save_checkpoint(tmp_path / "c.npz", SSD(MINI, 2))  # no classes / config in it
    with pytest.raises(CheckpointError, match="model config"):
        detect.load_model(tmp_path / "c.npz")


def test_predict_returns_ranked_boxes_in_the_unit_square(checkpoint, rng):
    model = checkpoint[1].eval()
    out = detect.predict(model, rng.standard_normal((2, 3, 32, 32)).astype(np.float32), top_k=7)
    assert len(out) == 2
    for boxes, labels, scores in out:
        assert boxes.shape == (len(labels), 4) and len(scores) == len(labels) <= 7
        assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] >= boxes[:, :2])
        assert np.all((labels >= 1) & (labels <= len(CLASSES)))
        assert np.all(np.diff(scores) <= 0)  # best first


def test_predict_dataset_keeps_the_original_ground_truth(checkpoint, voc):
    ds = VOCDataset(voc, "val")
    detections, truths = detect.predict_dataset(checkpoint[1].eval(), ds, max_images=3, batch_size=2)
    assert len(detections) == len(truths) == 3
    for i, (boxes, labels, difficult) in enumerate(truths):
        _, b, l, d = ds[i]  # evaluation resizes only: the normalised boxes are unchanged
        np.testing.assert_allclose(boxes, b, atol=1e-6)
        np.testing.assert_array_equal(labels, l)
        np.testing.assert_array_equal(difficult, d)


def test_cli_writes_one_picture_per_image(checkpoint, tmp_path, capsys):
    images = []
    for i in range(2):
        p = tmp_path / f"img{i}.jpg"
        Image.fromarray(np.full((50, 70, 3), 40 * i, np.uint8)).save(p)
        images.append(str(p))
    out = tmp_path / "out"
    rc = detect.main(["--checkpoint", str(checkpoint[0]), *images, "--out", str(out),
                      "--score-threshold", "0.0"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png"]
    assert "img1.jpg:" in capsys.readouterr().out


def test_cli_names_an_unreadable_image(checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    assert detect.main(["--checkpoint", str(checkpoint[0]), str(bad), "--out", str(tmp_path)]) == 2
    assert "broken.jpg" in capsys.readouterr().err
