"""Decoding image files, for every reader: ``load_image`` and its check for cut-off JPEGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError


def load_image(path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB (grey images are expanded to three channels).

    Raises DatasetError naming the file when it does not decode, or when it is a JPEG cut
    short that still ends with an end-of-image marker (``_cut_short``): libjpeg fills what is
    missing with grey and says nothing, and Pillow passes that on.
    """
    try:
        with Image.open(path) as im:
            fmt = im.format
            image = np.array(im.convert("RGB"))  # (H, W, 3) uint8, writeable (asarray's is not)
    except Exception as e:
        raise DatasetError(f"{path}: corrupt image ({e})") from None
    if fmt == "JPEG" and _cut_short(path, image):
        raise DatasetError(f"{path}: JPEG is truncated (its image data ends early; the rest "
                           "would decode as grey)")
    return image


# Bytes put before the end-of-image marker to tell a complete JPEG from a cut one; no 0xFF
# (which would start a marker), fixed so that the check is deterministic.
_PROBE = bytes(np.random.default_rng(0).integers(0, 255, 2048, dtype=np.uint8))


def _cut_short(path, image) -> bool:
    """True when the JPEG at ``path`` (decoded as ``image``) lost part of its image data.

    When the entropy-coded data stops early, libjpeg decodes every missing block as mid-grey
    (all coefficients 0: RGB 128, 128, 128), so a cut image always ends, bottom right, in
    that grey. Only when it does (rare in a real photo) is the file decoded a second time with
    extra bytes put just before its end-of-image marker: a complete image has already
    decoded every block and ignores them, a cut one decodes them as image data and changes.
    """
    if not np.all(image[-2:, -2:] == 128):
        return False
    data = Path(path).read_bytes()
    end = data.rfind(b"\xff\xd9")
    if end < 0:
        return False  # check_image_file reports a missing marker
    try:
        with Image.open(io.BytesIO(data[:end] + _PROBE + data[end:])) as im:
            probed = np.array(im.convert("RGB"))
    except Exception:
        return True  # the extra bytes were read as image data, and did not decode
    return not np.array_equal(probed, image)
