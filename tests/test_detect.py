"""minissd.detect: a checkpoint rebuilds its own network; predict/predict_dataset return
detections in the documented form; the CLI writes one picture per image."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minissd import cli, detect, evaluate
from minissd.checkpoint import CheckpointError, save_checkpoint
from minissd.data.augment import eval_transform
from minissd.data.images import load_image
from minissd.errors import ConfigError, DatasetError
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
    with pytest.raises(CheckpointError, match="was it written by minissd.train"):
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


def _photo(path, value, size=(50, 70)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


def test_cli_writes_one_picture_per_image_and_one_detections_file(checkpoint, tmp_path, capsys):
    images = [str(_photo(tmp_path / f"img{i}.jpg", 40 * i)) for i in range(2)]
    out = tmp_path / "out"
    rc = detect.main(["--checkpoint", str(checkpoint[0]), *images, "--out", str(out),
                      "--score-threshold", "0.0"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "img0.png", "img1.png"]
    assert "img1.jpg:" in capsys.readouterr().out
    # the detections file is evaluate's (one writer): every detection of predict, per image
    rows = json.loads((out / "detections.json").read_text())
    assert evaluate.is_detections_file(out / "detections.json")
    model = checkpoint[1].eval()
    transform = eval_transform(model.config.input_size, model.config.mean, model.config.std)
    expected = []
    for path in images:
        x, _, _ = transform(load_image(path), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), None)
        expected.append(detect.predict(model, x[None])[0])
    want = evaluate.detection_rows(images, expected, CLASSES)
    assert len(rows) == len(want) > 0 and [r["image_id"] for r in rows] == [r["image_id"] for r in want]
    np.testing.assert_allclose([r["box"] + [r["score"]] for r in rows],
                               [r["box"] + [r["score"]] for r in want], atol=1e-6)


def test_cli_takes_a_folder_and_reruns_into_it(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo(photos / "a.jpg", 10)
    _photo(photos / "b.png", 200)
    (photos / "notes.txt").write_text("not an image")
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    args = ["--checkpoint", str(checkpoint[0]), str(photos), "--out", str(tmp_path / "out")]
    assert detect.main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "detections.json"]
    ids = {r["image_id"] for r in json.loads((tmp_path / "out/detections.json").read_text())}
    assert ids <= {str(photos / "a.jpg"), str(photos / "b.png")}
    # the pictures may go into the folder itself when no input is replaced ... (a.png is new)
    with pytest.raises(ConfigError, match="b.png is one of the input images"):
        detect.main(["--checkpoint", str(checkpoint[0]), str(photos), "--out", str(photos)])
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before  # nothing written
    # ... and a second run over the same folder and out is fine: its own pictures are its own
    assert detect.main(args) == 0


def test_cli_never_replaces_an_input_or_a_users_file(checkpoint, tmp_path):
    # python -m minissd.detect --checkpoint C photos/holiday.png --out photos (issue 19)
    holiday = _photo(tmp_path / "photos" / "holiday.png", 90)
    photo = holiday.read_bytes()
    run = subprocess.run([sys.executable, "-m", "minissd.detect", "--checkpoint", str(checkpoint[0]),
                          str(holiday), "--out", str(holiday.parent)], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"error: --out {holiday.parent}: {holiday} is one of the input images; choose another "
        "--out folder (minissd never replaces an input)"]
    assert holiday.read_bytes() == photo
    # a file of the user's that is not an input but has the output's name: also kept
    other = _photo(tmp_path / "in" / "holiday.jpg", 30)
    with pytest.raises(ConfigError, match="holiday.png exists and was not written by minissd.detect"):
        detect.main(["--checkpoint", str(checkpoint[0]), str(other), "--out", str(holiday.parent)])
    assert holiday.read_bytes() == photo


def test_inputs_with_the_same_name_get_pictures_that_cannot_collide(checkpoint, tmp_path):
    a, b = _photo(tmp_path / "a" / "x.jpg", 10), _photo(tmp_path / "b" / "x.jpg", 250)
    c = _photo(tmp_path / "a" / "x.png", 128)
    assert detect.picture_names([a, b, c, tmp_path / "y.jpg"]) == ["a_x_jpg.png", "b_x.png", "a_x_png.png", "y.png"]
    assert detect.picture_names(["p/X.jpg", "q/x.jpg"]) == ["p_X.png", "q_x.png"]  # case-blind file systems
    assert detect.main(["--checkpoint", str(checkpoint[0]), str(a), str(b), "--out", str(tmp_path / "o")]) == 0
    pictures = sorted(p.name for p in (tmp_path / "o").glob("*.png"))
    assert pictures == ["a_x.png", "b_x.png"]
    assert (tmp_path / "o/a_x.png").read_bytes() != (tmp_path / "o/b_x.png").read_bytes()


def test_cli_names_an_unreadable_image_and_writes_nothing(checkpoint, tmp_path):
    good = _photo(tmp_path / "good.jpg", 10)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    argv = ["--checkpoint", str(checkpoint[0]), str(good), str(bad), "--out", str(tmp_path / "o")]
    with pytest.raises(DatasetError, match="broken.jpg: cannot read the image"):
        detect.main(argv)
    assert not (tmp_path / "o").exists()
    assert cli.run(detect.main, argv) == 2
    with pytest.raises(ConfigError, match="nothere: no such image file or folder"):
        detect.main(["--checkpoint", str(checkpoint[0]), str(tmp_path / "nothere")])
