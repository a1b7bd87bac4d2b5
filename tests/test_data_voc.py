"""The VOC reader against the hand-written fixture in tests/fixtures/voc, and every bad input.

The fixture (VOC2007 layout, VOC class names, no classes.txt, so the 20 VOC classes apply):
  000001  16 x 12, left half red, right half blue; dog (whole image), person (truncated),
          aeroplane (difficult)
  000002  10 x 10 grey, no object
  000003  20 x 8 green; tvmonitor with no <difficult>/<truncated> tags (they default to 0)
train = 000001, 000002; val = 000003; trainval = all three.
"""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from minissd.data import VOC_CLASSES, DatasetError, VOCDataset
from minissd.data.images import load_image
from minissd.data.voc import voc_box_to_normalised

FIXTURE = Path(__file__).parent / "fixtures" / "voc"


@pytest.fixture
def voc(tmp_path):
    """A private, writable copy of the fixture, for the cases that break it."""
    root = tmp_path / "VOC2007"
    shutil.copytree(FIXTURE, root)
    return root


def label(name):
    return VOC_CLASSES.index(name) + 1


# ---- the good fixture ------------------------------------------------------------------------------

def test_reads_split_ids_and_default_classes():
    ds = VOCDataset(FIXTURE, "train")
    assert len(ds) == 2 and ds.ids == ["000001", "000002"]
    assert ds.classes == list(VOC_CLASSES) and len(ds.classes) == 20
    assert VOCDataset(FIXTURE, "trainval").ids == ["000001", "000002", "000003"]


def test_boxes_labels_and_1_based_conversion():
    image, boxes, labels, difficult = VOCDataset(FIXTURE, "train")[0]
    # 16 x 12 image; (xmin-1)/W, (ymin-1)/H, xmax/W, ymax/H:
    #   dog       (1, 1, 16, 12) -> (0, 0, 1, 1): the whole image
    #   person    (5, 4, 8, 9)   -> (4/16, 3/12, 8/16, 9/12) = (0.25, 0.25, 0.5, 0.75)
    #   aeroplane (9, 2, 12, 3)  -> (8/16, 1/12, 12/16, 3/12) = (0.5, 0.0833, 0.75, 0.25)
    expected = np.array([[0, 0, 1, 1], [0.25, 0.25, 0.5, 0.75], [0.5, 1 / 12, 0.75, 0.25]], np.float32)
    assert boxes.dtype == np.float32 and boxes.shape == (3, 4)
    np.testing.assert_allclose(boxes, expected, atol=1e-7)
    assert labels.dtype == np.int64
    assert labels.tolist() == [label("dog"), label("person"), label("aeroplane")] == [12, 15, 1]
    assert difficult.dtype == bool and difficult.tolist() == [False, False, True]


def test_image_pixels_rgb_uint8():
    image = VOCDataset(FIXTURE, "train")[0][0]
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    assert image.flags.writeable  # a learner may draw on it
    # left half red, right half blue (JPEG is lossy, so a tolerance)
    np.testing.assert_allclose(image[6, 2], (255, 0, 0), atol=25)
    np.testing.assert_allclose(image[6, 13], (0, 0, 255), atol=25)


def test_truncated_and_missing_flags():
    ds = VOCDataset(FIXTURE, "trainval")
    assert ds.annotations[0].truncated.tolist() == [False, True, False]
    assert ds.annotations[0].boxes_px[1].tolist() == [5, 4, 8, 9]  # raw VOC numbers kept too
    # 000003 has neither <difficult> nor <truncated>: 0, as the devkit reads them
    ann = ds.annotations[2]
    assert ann.difficult.tolist() == [False] and ann.truncated.tolist() == [False]
    np.testing.assert_allclose(ann.boxes, [[10 / 20, 0, 1, 4 / 8]])  # tvmonitor (11, 1, 20, 4)
    assert ann.labels.tolist() == [20]


def test_empty_image_has_empty_arrays_of_the_right_types():
    image, boxes, labels, difficult = VOCDataset(FIXTURE, "train")[1]
    assert image.shape == (10, 10, 3)
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert labels.shape == (0,) and labels.dtype == np.int64
    assert difficult.shape == (0,) and difficult.dtype == bool


def test_keep_difficult_false_drops_them():
    _, boxes, labels, difficult = VOCDataset(FIXTURE, "train", keep_difficult=False)[0]
    assert labels.tolist() == [12, 15] and boxes.shape == (2, 4) and not difficult.any()


def test_custom_classes_define_labels():
    ds = VOCDataset(FIXTURE, "train", classes=["person", "dog", "aeroplane"])
    assert ds[0][2].tolist() == [2, 1, 3]


def test_classes_txt_is_picked_up(voc):
    (voc / "classes.txt").write_text("person\ndog\naeroplane\ntvmonitor\n")
    ds = VOCDataset(voc, "trainval")
    assert ds.classes == ["person", "dog", "aeroplane", "tvmonitor"]
    assert ds[0][2].tolist() == [2, 1, 3]


def test_conversion_inverts_to_continuous_pixels():
    # A box over 1-based columns 3..5 covers continuous x in [2, 5): 3 pixels wide.
    b = voc_box_to_normalised([[3, 1, 5, 10]], width=10, height=10)
    np.testing.assert_allclose(b * 10, [[2, 0, 5, 10]])


# ---- bad input: each names the file and the problem ----------------------------------------------------

def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def expect_error(voc, split, *words):
    with pytest.raises(DatasetError) as info:
        VOCDataset(voc, split)
    for w in words:
        assert w in str(info.value), str(info.value)
    return info.value


def test_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_truncated_xml(voc):
    xml = voc / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text()[:300])
    expect_error(voc, "train", "000001.xml", "malformed or truncated XML")


def test_not_xml_at_all(voc):
    (voc / "Annotations" / "000002.xml").write_text("this is not XML\n")
    expect_error(voc, "train", "000002.xml", "malformed")


def test_box_outside_the_image(voc):
    edit(voc / "Annotations" / "000001.xml", "<xmax>8</xmax>", "<xmax>17</xmax>")  # width is 16
    expect_error(voc, "train", "000001.xml", "outside the 16x12 image", "person")


def test_zero_coordinate_is_outside(voc):
    # VOC is 1-based: 0 is a 0-based writer's mistake
    edit(voc / "Annotations" / "000003.xml", "<xmin>11</xmin>", "<xmin>0</xmin>")
    expect_error(voc, "val", "000003.xml", "outside")


@pytest.mark.parametrize("xmax", ["5", "4"])
def test_xmax_not_above_xmin(voc, xmax):
    edit(voc / "Annotations" / "000001.xml", "<xmax>8</xmax>", f"<xmax>{xmax}</xmax>")  # xmin is 5
    expect_error(voc, "train", "000001.xml", "empty", "xmax > xmin")


def test_unknown_class(voc):
    edit(voc / "Annotations" / "000001.xml", "<name>dog</name>", "<name>unicorn</name>")
    expect_error(voc, "train", "000001.xml", "unknown class 'unicorn'")


def test_missing_coordinate_and_non_number(voc):
    edit(voc / "Annotations" / "000003.xml", "<ymax>4</ymax>", "")
    expect_error(voc, "val", "000003.xml", "missing <ymax>")
    edit(voc / "Annotations" / "000001.xml", "<ymax>9</ymax>", "<ymax>nine</ymax>")
    expect_error(voc, "train", "000001.xml", "'nine', not a number")


def test_missing_jpeg(voc):
    (voc / "JPEGImages" / "000002.jpg").unlink()
    expect_error(voc, "train", "000002.jpg", "missing")


def test_corrupt_jpeg(voc):
    (voc / "JPEGImages" / "000002.jpg").write_bytes(b"\x00garbage" * 20)
    expect_error(voc, "train", "000002.jpg", "not a readable image")


def test_truncated_jpeg(voc):
    path = voc / "JPEGImages" / "000001.jpg"
    path.write_bytes(path.read_bytes()[:400])  # header intact, the end cut off
    expect_error(voc, "train", "000001.jpg", "truncated")


def test_corrupt_pixels_found_on_load(tmp_path):
    path = tmp_path / "x.jpg"
    data = (FIXTURE / "JPEGImages" / "000001.jpg").read_bytes()
    path.write_bytes(data[:300] + data[-2:])  # keeps the header and the end marker, loses the scan
    with pytest.raises(DatasetError, match="x.jpg: corrupt image"):
        load_image(path)


def test_size_mismatch(voc):
    edit(voc / "Annotations" / "000002.xml", "<width>10</width>", "<width>11</width>")
    expect_error(voc, "train", "000002.jpg", "10x10 but 000002.xml says 11x10")


def test_missing_split_file(voc):
    expect_error(voc, "test", "test.txt", "split file is missing")


def test_an_id_listed_twice_in_a_split(voc):
    split = voc / "ImageSets" / "Main" / "train.txt"
    split.write_text(split.read_text() + "000001\n")  # would train on it twice, count it twice in mAP
    expect_error(voc, "train", "VOC2007", "image ids repeat", "000001")


def test_missing_annotation(voc):
    (voc / "Annotations" / "000002.xml").unlink()
    expect_error(voc, "train", "000002.xml", "annotation file is missing")


def test_skip_bad_warns_and_leaves_out(voc, caplog):
    edit(voc / "Annotations" / "000001.xml", "<name>dog</name>", "<name>unicorn</name>")
    with pytest.warns(UserWarning, match="000001.xml.*unknown class"):
        ds = VOCDataset(voc, "trainval", skip_bad=True)
    assert ds.ids == ["000002", "000003"]
    assert [i for i, _ in ds.skipped] == ["000001"]
    assert "skipping bad image" in caplog.text  # logged as well: never silent


def test_skip_bad_off_by_default_raises(voc):
    (voc / "JPEGImages" / "000003.jpg").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning in strict mode: an error instead
        with pytest.raises(DatasetError):
            VOCDataset(voc, "val")


def test_concat_dataset_reads_parts_in_order(voc):
    from minissd.data import ConcatDataset

    both = ConcatDataset([VOCDataset(FIXTURE, "train"), VOCDataset(voc, "val")])  # "07+12" style
    assert len(both) == 3 and both.ids == ["000001", "000002", "000003"]
    assert both[0][2].tolist() == [12, 15, 1]  # first part, item 0
    assert both[2][2].tolist() == [20] and both[-1][0].shape == (8, 20, 3)  # second part, item 0
    with pytest.raises(IndexError):
        both[3]
    with pytest.raises(ValueError, match="labels would not agree"):
        ConcatDataset([VOCDataset(FIXTURE, "train"), VOCDataset(FIXTURE, "train", classes=["dog", "person", "aeroplane"])])


# ---- issue 19: a byte-order mark, inf in a number, a JPEG cut short that still ends well ----------

def test_split_file_with_a_byte_order_mark(voc):
    split = voc / "ImageSets" / "Main" / "train.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())  # as Notepad saves "UTF-8"
    assert VOCDataset(voc, "train").ids == ["000001", "000002"]  # not "\ufeff000001" missing
    (voc / "classes.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(VOC_CLASSES).encode() + b"\n")
    assert VOCDataset(voc, "train").classes == list(VOC_CLASSES)


@pytest.mark.parametrize("tag, value", [("width", "inf"), ("height", "-inf"), ("width", "nan"),
                                        ("xmax", "inf"), ("ymin", "1e999")])
def test_non_finite_numbers_are_named(voc, tag, value):
    xml = voc / "Annotations" / "000001.xml"
    text = xml.read_text()
    start = text.index(f"<{tag}>")
    end = text.index(f"</{tag}>", start)
    xml.write_text(text[:start] + f"<{tag}>{value}" + text[end:])  # OverflowError before
    expect_error(voc, "train", "000001.xml", f"<{tag}> is {value!r}, not a finite number")


def _jpeg(image, **options):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90, **options)
    return buf.getvalue()


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_short_that_still_ends_with_its_marker_is_refused(tmp_path, progressive):
    # Real bytes: a noisy 240x320 photo-like image, its data cut short and the end-of-image
    # marker put back. libjpeg decodes the missing part as grey 128 without a word.
    rng = np.random.default_rng(0)
    image = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    data = _jpeg(image, progressive=progressive)
    keep = 0.6 if not progressive else 0.02  # progressive: cut inside the first (DC) scan
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:int(len(data) * keep)] + b"\xff\xd9")
    from PIL import Image

    grey = np.array(Image.open(path).convert("RGB"))  # what Pillow gives silently
    assert np.all(grey[-8:, -8:] == 128)
    with pytest.raises(DatasetError, match="cut.jpg: JPEG is truncated"):
        load_image(path)
    path.write_bytes(data)  # the whole file loads
    assert load_image(path).shape == (240, 320, 3)


def test_a_complete_jpeg_that_really_ends_in_grey_loads(tmp_path):
    # The cheap trigger (grey bottom-right corner) is confirmed before refusing: a genuine
    # image with a mid-grey corner is decoded a second time and accepted.
    image = np.full((48, 64, 3), 128, np.uint8)
    image[:16] = np.random.default_rng(1).integers(0, 256, (16, 64, 3))
    path = tmp_path / "grey.jpg"
    path.write_bytes(_jpeg(image))
    out = load_image(path)
    assert out.shape == (48, 64, 3) and np.all(out[-2:, -2:] == 128)
