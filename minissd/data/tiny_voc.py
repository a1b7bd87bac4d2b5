"""tiny-voc: a small synthetic detection dataset written in true Pascal VOC layout.

This machine cannot download VOC, so minissd draws its own: six shape classes on cluttered,
textured backgrounds, written as VOC XML + JPEG + ImageSets, read by the very reader that reads
the real VOCdevkit (``VOCDataset``). The dataset card is docs/tiny-voc.md.

- Shape, not colour, names the class: every instance gets a random colour and texture.
- Backgrounds are gradients + stripes + noise + scribbles (lines and arcs that are not objects).
- Objects range from very small (< 10% of the image side) to large (> 40%), overlap and occlude
  each other, and may run off the image edge; VOC's <truncated>, <occluded> and <difficult>
  flags are set from the pixels actually visible.
- Deterministic: image i is drawn from ``np.random.default_rng([seed, i])`` alone and written
  with fixed JPEG settings, so a seed gives the same bytes every time (on one Pillow build), and
  the first n images are the same whatever the total.
- Idempotent: the folder is built under a temporary name and renamed into place with a marker
  (``tiny-voc.json``: config, counts, content hash) written last; a complete copy is reused, a
  damaged one or one of another config is rebuilt.
- A user's files are theirs: a folder is deleted to be rebuilt only when it carries the marker
  (proof that minissd wrote it) and holds nothing but files tiny-voc writes; any other folder
  (a user's own VOC dataset, say) is refused with a DatasetError and left untouched.

Where it lives: ``tiny_voc_path()`` = ``default_data_dir() / "tiny-voc"``, and
``default_data_dir()`` is ``$MINISSD_DATA`` if set, else ``~/.cache/minissd``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .voc import CLASSES_FILE, DatasetError

TINY_VOC_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
MARKER = "tiny-voc.json"  # written last: its presence (with matching counts) means "complete"
POOL_MIN_IMAGES = 300  # below this, starting worker processes costs more than it saves
FORMAT_VERSION = 4  # bump when the drawing changes, so old copies are rebuilt
WRITTEN_BY = "minissd tiny-voc"  # in the marker: minissd wrote this folder and may rebuild it
BUILD_MARKER = ".minissd-build.json"  # in a build folder while it is written: its writer's pid


@dataclass(frozen=True)
class TinyVOCConfig:
    """How tiny-voc is drawn. The defaults make the dataset that ``--tiny-voc`` trains on.

    Sizes are sized so that a small SSD at 96-128 px input can reach a high mAP within minutes
    on a laptop CPU while still having to solve the problems VOC poses (scale, clutter,
    occlusion, truncation).
    """

    n_train: int = 10000          # images in ImageSets/Main/train.txt (a 15-minute run sees ~5 epochs)
    n_val: int = 400              # images in val.txt (trainval.txt lists both)
    min_side: int = 160           # image width and height are each drawn from [min_side, max_side]
    max_side: int = 240
    empty_fraction: float = 0.05  # images with no object at all (SSD must learn "nothing here")
    max_objects: int = 5          # a non-empty image holds 1..max_objects objects (fewer when crowded)
    small_fraction: float = 0.12  # objects drawn small: longest side 6-12% of the image's short side
    small_range: tuple = (0.06, 0.12)
    size_range: tuple = (0.12, 0.60)  # the others: log-uniform in this range of the short side
    aspect_range: tuple = (0.7, 1.4)  # width/height stretch of a shape's box
    max_rotation: float = 20.0    # degrees, for the polygons (circle and ring look the same anyway)
    truncate_fraction: float = 0.10   # objects placed so that they run off the image edge
    min_visible: float = 0.30     # a placement that hides more than 70% of an earlier object is retried
    difficult_visible: float = 0.45   # visible fraction below which an object is marked difficult
    occluded_visible: float = 0.85    # visible fraction of the in-image part below which <occluded>=1
    scribbles: tuple = (2, 7)     # distractor lines/arcs per image
    jpeg_quality: int = 90

    def __post_init__(self):
        if self.n_train < 0 or self.n_val < 0 or self.n_train + self.n_val == 0:
            raise ValueError(f"TinyVOCConfig: need n_train, n_val >= 0 and some images, got "
                             f"{self.n_train}, {self.n_val}")
        if not 16 <= self.min_side <= self.max_side:
            raise ValueError(f"TinyVOCConfig: need 16 <= min_side <= max_side, got "
                             f"{self.min_side}, {self.max_side}")
        for name in ("empty_fraction", "small_fraction", "truncate_fraction", "min_visible",
                     "difficult_visible", "occluded_visible"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TinyVOCConfig: {name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_objects < 1:
            raise ValueError(f"TinyVOCConfig: max_objects must be >= 1, got {self.max_objects}")


# ---- where the data lives ----------------------------------------------------------------------

def default_data_dir() -> Path:
    """``$MINISSD_DATA`` if set, else ``~/.cache/minissd`` (the same for notebooks, CLI and tests,
    whatever the working directory)."""
    env = os.environ.get("MINISSD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minissd"


def tiny_voc_path(data_dir=None) -> Path:
    """Where the default tiny-voc lives: ``data_dir / "tiny-voc"`` (data_dir defaults as above)."""
    return Path(data_dir if data_dir is not None else default_data_dir()) / "tiny-voc"


# ---- drawing: backgrounds ------------------------------------------------------------------------

def _random_colour(rng):
    return rng.integers(0, 256, size=3).astype(np.float32)


# The canvas is planar, (3, H, W) float32, while it is drawn: NumPy broadcasts a colour over
# (3, 1, 1) at full speed, whereas (H, W, 3) arrays with their length-3 inner axis run several
# times slower. It becomes (H, W, 3) uint8 once, at the end.

def _background(rng, h, w):
    """(3, h, w) float32 in about [0, 255]: a two-colour gradient and, often, faint stripes."""
    c0, c1 = _random_colour(rng), _random_colour(rng)
    yy = np.arange(h, dtype=np.float32)[:, None]  # (h, 1): broadcasting instead of full grids
    xx = np.arange(w, dtype=np.float32)[None, :]  # (1, w)
    angle = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(angle) + yy * math.sin(angle)  # (h, w)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)  # in [0, 1]
    img = c0[:, None, None] + t * (c1 - c0)[:, None, None]  # (3, h, w)
    if rng.random() < 0.6:  # stripes at a random angle and period, low contrast
        a = rng.uniform(0, math.pi)
        period = rng.uniform(6, 30)
        s = np.sin((xx * math.cos(a) + yy * math.sin(a)) * np.float32(2 * math.pi / period))
        img += s * (rng.uniform(10, 35) * rng.uniform(-1, 1, size=(3, 1, 1)).astype(np.float32))
    return img


def _scribble(draw, rng, w, h):
    """A distractor: a polyline or an arc, thin, in a random colour: clutter, not an object."""
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    width = int(rng.integers(1, 4))
    if rng.random() < 0.5:
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(int(rng.integers(2, 5)))]
        draw.line(pts, fill=colour, width=width)
    else:
        r = rng.uniform(0.1, 0.4) * min(w, h)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        start = rng.uniform(0, 360)
        draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(40, 160), fill=colour, width=width)


# ---- drawing: shapes -----------------------------------------------------------------------------

def _unit_polygons(name, rng):
    """The shape as polygons in the unit square [-1, 1]^2: (outer, hole or None)."""
    if name in ("circle", "ring"):
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        outer = np.stack([np.cos(t), np.sin(t)], 1)
        hole = outer * rng.uniform(0.45, 0.6) if name == "ring" else None
        return outer, hole
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), None
    if name == "triangle":
        return np.array([[0, -1], [1, 1], [-1, 1]], float), None
    if name == "star":
        k = np.arange(10)
        r = np.where(k % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        t = -math.pi / 2 + k * math.pi / 5
        return np.stack([r * np.cos(t), r * np.sin(t)], 1), None
    if name == "cross":
        a = rng.uniform(0.28, 0.4)  # half the arm thickness
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                         [-a, a], [-1, a], [-1, -a], [-a, -a]], float), None
    raise ValueError(f"unknown tiny-voc shape {name!r}")


def _shape_alpha(name, rng, size, aspect, rotation, cx, cy):
    """Rasterise one shape with 2x supersampling.

    Returns (alpha, x0, y0): alpha (h, w) float32 in [0, 1] covering image pixels
    [y0, y0 + h) x [x0, x0 + w) (may extend past the image: the caller clips).
    """
    outer, hole = _unit_polygons(name, rng)
    sx, sy = size * math.sqrt(aspect) / 2, size / math.sqrt(aspect) / 2  # half extents
    c, s = math.cos(rotation), math.sin(rotation)

    def place(p):  # unit square -> image pixels: stretch, rotate, move
        x, y = p[:, 0] * sx, p[:, 1] * sy
        return np.stack([x * c - y * s + cx, x * s + y * c + cy], 1)

    outer_px = place(outer)
    x0 = int(math.floor(outer_px[:, 0].min())) - 1
    y0 = int(math.floor(outer_px[:, 1].min())) - 1
    w = int(math.ceil(outer_px[:, 0].max())) + 2 - x0
    h = int(math.ceil(outer_px[:, 1].max())) + 2 - y0
    ss = 2  # supersampling factor: draw at 2x, average 2x2 blocks -> soft edges
    mask = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon([((x - x0) * ss, (y - y0) * ss) for x, y in outer_px], fill=255)
    if hole is not None:
        draw.polygon([((x - x0) * ss, (y - y0) * ss) for x, y in place(hole)], fill=0)
    a = np.asarray(mask.reduce(ss), dtype=np.float32) * np.float32(1 / 255)  # (h, w) 2x2 means
    return a, x0, y0


def _texture(rng, h, w):
    """(3, h, w) float32: the object's own look: flat, two-colour stripes, checks or a
    gradient, in random colours, so that colour says nothing about the class."""
    c0, c1 = _random_colour(rng)[:, None, None], _random_colour(rng)[:, None, None]  # (3, 1, 1)
    kind = rng.integers(0, 4)
    if kind == 0:
        return np.broadcast_to(c0, (3, h, w))
    yy = np.arange(h, dtype=np.float32)[:, None]  # (h, 1)
    xx = np.arange(w, dtype=np.float32)[None, :]  # (1, w)
    if kind == 1:  # stripes
        a, period = rng.uniform(0, math.pi), rng.uniform(3, 10)
        t = (np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / period)) > 0)
    elif kind == 2:  # checks
        cell = rng.uniform(2, 8)
        t = ((xx // cell + yy // cell) % 2).astype(bool)
    else:  # gradient
        t = (xx / max(w - 1, 1)) if rng.random() < 0.5 else (yy / max(h - 1, 1))
        return np.broadcast_to(c0 + t * (c1 - c0), (3, h, w))
    return np.where(t, c0, c1)  # (3, h, w)


def _far_colour(rng, avoid):
    """A colour whose brightness differs from ``avoid`` (the background under the object) by at
    least 60 of 255, so that every object can be seen at all."""
    lum = np.array([0.299, 0.587, 0.114], np.float32)
    candidates = rng.integers(0, 256, size=(16, 3)).astype(np.float32)  # drawn at once: one call
    far = np.abs(candidates @ lum - float(avoid @ lum)) >= 60
    if far.any():
        return candidates[np.argmax(far)]  # the first far one
    return np.full(3, 255.0 if float(avoid @ lum) < 128 else 0.0, np.float32)


# ---- one image -----------------------------------------------------------------------------------

def draw_image(config: TinyVOCConfig, seed: int, index: int):
    """Draw image ``index`` of the dataset with this seed.

    Returns (image, objects): image (H, W, 3) uint8; objects a list of dicts with name,
    bbox (xmin, ymin, xmax, ymax) in VOC's 1-based inclusive pixels, truncated, occluded,
    difficult.
    """
    rng = np.random.default_rng([seed, index])
    W = int(rng.integers(config.min_side, config.max_side + 1))
    H = int(rng.integers(config.min_side, config.max_side + 1))
    canvas = _background(rng, H, W)  # (3, H, W) float32
    pil = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy())
    draw = ImageDraw.Draw(pil)  # PIL draws the scribbles, on (H, W, 3) uint8
    for _ in range(int(rng.integers(*config.scribbles))):
        _scribble(draw, rng, W, H)
    canvas = np.asarray(pil).transpose(2, 0, 1).astype(np.float32)  # (3, H, W) again

    n = 0 if rng.random() < config.empty_fraction else int(rng.integers(1, config.max_objects + 1))
    owner = np.full((H, W), -1, np.int16)  # which object shows at each pixel (alpha > 0.5)
    # per placed object: name; total = solid pixels of the whole shape; inside = those inside
    # the image; visible = those not covered by a later object; bbox in VOC pixels
    shapes = []
    short = min(W, H)
    for _ in range(n):
        name = TINY_VOC_CLASSES[int(rng.integers(len(TINY_VOC_CLASSES)))]
        if rng.random() < config.small_fraction:
            size = rng.uniform(*config.small_range) * short
        else:
            lo, hi = config.size_range
            size = math.exp(rng.uniform(math.log(lo), math.log(hi))) * short
        aspect = math.exp(rng.uniform(math.log(config.aspect_range[0]), math.log(config.aspect_range[1])))
        rotation = math.radians(rng.uniform(-config.max_rotation, config.max_rotation))
        truncate = rng.random() < config.truncate_fraction
        placed = None
        for _try in range(8):
            if truncate:  # centre anywhere, up to ~40% of the shape past the edge
                cx, cy = rng.uniform(-0.1 * size, W + 0.1 * size), rng.uniform(-0.1 * size, H + 0.1 * size)
            else:
                m = 0.5 * size
                cx, cy = rng.uniform(m, max(m, W - m)), rng.uniform(m, max(m, H - m))
            alpha, x0, y0 = _shape_alpha(name, rng, size, aspect, rotation, cx, cy)
            h, w = alpha.shape
            # clip the footprint to the image
            ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            a = alpha[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]  # (h', w') the part inside the image
            solid = a > 0.5
            total = int((alpha > 0.5).sum())
            if total == 0 or solid.sum() < 0.5 * total:
                continue  # more than half off the image: try another place
            if solid.any(axis=0).sum() < 2 or solid.any(axis=1).sum() < 2:
                continue  # a sliver at the edge: VOC boxes need xmax > xmin
            # would this placement hide too much of an earlier object?
            hidden = np.bincount(owner[iy0:iy1, ix0:ix1][solid] + 1, minlength=len(shapes) + 1)[1:]
            if all(prev["visible"] - int(hid) >= config.min_visible * prev["total"]
                   for prev, hid in zip(shapes, hidden)):
                placed = (a, solid, ix0, iy0, ix1, iy1, total)
                break
        if placed is None:
            continue
        a, solid, ix0, iy0, ix1, iy1, total = placed
        hidden = np.bincount(owner[iy0:iy1, ix0:ix1][solid] + 1, minlength=len(shapes) + 1)[1:]
        for prev, hid in zip(shapes, hidden):  # pixels of earlier objects this one now covers
            prev["visible"] -= int(hid)
        region = canvas[:, iy0:iy1, ix0:ix1]  # (3, h', w') view
        fg = _far_colour(rng, region.mean(axis=(1, 2)))
        tex = _texture(rng, iy1 - iy0, ix1 - ix0)  # (3, h', w')
        tex = 0.5 * tex + 0.5 * fg[:, None, None]  # pull the texture toward a colour that stands out
        region += a * (tex - region)  # alpha blend, in place
        owner[iy0:iy1, ix0:ix1][solid] = len(shapes)
        ys, xs = np.nonzero(solid)
        shapes.append({
            "name": name, "total": total, "inside": int(solid.sum()), "visible": int(solid.sum()),
            # tight box of the whole shape's solid pixels, clipped to the image, VOC 1-based inclusive
            "bbox": (ix0 + int(xs.min()) + 1, iy0 + int(ys.min()) + 1,
                     ix0 + int(xs.max()) + 1, iy0 + int(ys.max()) + 1),
        })

    # grain over everything (objects included), strength varying per image: uniform noise with
    # standard deviation sigma (uniform numbers cost a fifth of normal ones, and look the same)
    sigma = rng.uniform(2, 10)
    canvas += (rng.random((H, W), dtype=np.float32) - 0.5) * np.float32(sigma * math.sqrt(12))
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()  # (H, W, 3)
    objects = []
    for s in shapes:
        visible = s["visible"] / s["total"]
        objects.append({
            "name": s["name"],
            "bbox": s["bbox"],
            "truncated": s["inside"] < 0.95 * s["total"],
            "occluded": s["visible"] < config.occluded_visible * s["inside"],
            "difficult": visible < config.difficult_visible,
        })
    return image, objects


def annotation_xml(image_id, width, height, objects) -> str:
    """The VOC XML for one image (the VOC2007 schema, plus <occluded> as in VOC2010+)."""
    lines = [
        "<annotation>",
        "\t<folder>tiny-voc</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>minissd tiny-voc</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for o in objects:
        xmin, ymin, xmax, ymax = o["bbox"]
        lines += [
            "\t<object>",
            f"\t\t<name>{o['name']}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(o['truncated'])}</truncated>",
            f"\t\t<occluded>{int(o['occluded'])}</occluded>",
            f"\t\t<difficult>{int(o['difficult'])}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{xmin}</xmin>",
            f"\t\t\t<ymin>{ymin}</ymin>",
            f"\t\t\t<xmax>{xmax}</xmax>",
            f"\t\t\t<ymax>{ymax}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def encode_jpeg(image, quality) -> bytes:
    """JPEG bytes with fixed settings and no metadata, so that equal pixels give equal bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False)
    return buf.getvalue()


# ---- the whole dataset ---------------------------------------------------------------------------

def _marker_expected(config, seed):
    return {"format": FORMAT_VERSION, "seed": seed, "config": asdict(config)}


def _is_complete(root: Path, config, seed) -> bool:
    """True when root holds a finished build of exactly this (config, seed)."""
    marker = _read_marker(root)
    if marker is None:
        return False
    expected = _marker_expected(config, seed)
    if any(marker.get(k) != json.loads(json.dumps(v)) for k, v in expected.items()):
        return False
    n = config.n_train + config.n_val
    try:  # cheap completeness check: file counts (a full re-hash is verify_tiny_voc's job)
        n_xml = sum(1 for _ in (root / "Annotations").glob("*.xml"))
        n_jpg = sum(1 for _ in (root / "JPEGImages").glob("*.jpg"))
    except OSError:
        return False
    return n_xml == n and n_jpg == n


def _read_marker(root: Path):
    """The marker's dict when ``root / MARKER`` proves that minissd wrote root, else None.

    Every tiny-voc ever written carries a marker that is a JSON object with "format" (an int),
    "seed" and "config" (an object); markers written since 2026-12-02 also say
    ``"written_by": "minissd tiny-voc"``, and older ones are recognised by the three keys alone
    (the drawing of format 4 did not change, so such a copy is reused as it is).
    """
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(marker, dict) and isinstance(marker.get("format"), int)
            and "seed" in marker and isinstance(marker.get("config"), dict)):
        return None
    if marker.get("written_by", WRITTEN_BY) != WRITTEN_BY:
        return None
    return marker


_SPLIT_FILES = {f"ImageSets/Main/{s}.txt" for s in ("train", "val", "trainval")}


def _foreign_file(root: Path, need_marker=True, extra=()):
    """Why root may not be deleted (a sentence naming the first reason), or None when it may.

    root may be deleted only when its marker proves minissd wrote it and every file and folder
    in it is one that ``make_tiny_voc`` writes (Annotations/NNNNNN.xml, JPEGImages/NNNNNN.jpg,
    the three split files, classes.txt, the marker).
    """
    if not root.is_dir():
        return f"{root}: exists and is not a folder"
    if need_marker and _read_marker(root) is None:
        return f"{root}: has no {MARKER} marker written by minissd, so minissd did not make it"
    ours = {"Annotations", "JPEGImages", "ImageSets", "ImageSets/Main", CLASSES_FILE, MARKER}
    ours |= _SPLIT_FILES | set(extra)
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            return f"{p}: is not a plain file or folder that tiny-voc writes"
        if rel in ours:
            continue
        folder, _, name = rel.partition("/")
        stem, dot, ext = name.partition(".")
        if p.is_file() and stem.isdigit() and len(stem) == 6 and (
                (folder, ext) in (("Annotations", "xml"), ("JPEGImages", "jpg"))):
            continue
        return f"{p}: is not a file that tiny-voc writes"
    return None


def content_hash(root) -> str:
    """sha256 over every file of a tiny-voc folder (the marker excluded), in sorted order."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MARKER:
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


def verify_tiny_voc(root) -> bool:
    """Re-hash every file and compare with the marker: True when nothing changed since the build."""
    root = Path(root)
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == content_hash(root)


def _write_images(folder, config, seed, indices):
    """Draw and write images ``indices`` (JPEG + XML) into a VOC folder (a pool worker's job)."""
    for i in indices:
        image_id = f"{i + 1:06d}"
        image, objects = draw_image(config, seed, i)
        (folder / "JPEGImages" / f"{image_id}.jpg").write_bytes(encode_jpeg(image, config.jpeg_quality))
        xml = annotation_xml(image_id, image.shape[1], image.shape[0], objects)
        (folder / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")


def make_tiny_voc(root=None, seed=0, config: TinyVOCConfig | None = None, workers=None,
                  **overrides) -> Path:
    """Write tiny-voc in VOC layout under ``root`` (default ``tiny_voc_path()``) and return root.

    - seed: the dataset's seed; image i comes from ``default_rng([seed, i])``
    - config / overrides: a TinyVOCConfig, or its fields as keywords (``n_train=100``)
    - workers: processes drawing images (default: the CPU count, at most 4); the bytes written
      do not depend on it

    A complete copy with the same seed and config is reused as is. Otherwise the folder is
    built under a temporary name next to root, the marker is written last, and the folder is
    renamed into place (so a crash never leaves a folder that looks complete). An existing
    root that is incomplete or was built with another config is rebuilt, but only if its
    marker proves minissd wrote it and it holds nothing but tiny-voc's own files; any other
    non-empty folder raises DatasetError naming it, and nothing in it is touched.
    """
    config = config or TinyVOCConfig()
    if overrides:
        config = TinyVOCConfig(**{**asdict(config), **overrides})
    root = Path(root) if root is not None else tiny_voc_path()
    if _is_complete(root, config, seed):
        return root
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        reason = _foreign_file(root)
        if reason is not None:
            raise DatasetError(f"{reason}; refusing to delete or overwrite {root} (choose "
                               "another folder, or delete it yourself if it is a tiny-voc copy)")

    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))  # a new name
    try:
        (tmp / BUILD_MARKER).write_text(json.dumps({"written_by": WRITTEN_BY, "pid": os.getpid()}))
        _build(tmp, config, seed, workers)
        if root.exists():  # empty, or (checked again now) minissd's marker and only our files
            reason = None if not any(root.iterdir()) else _foreign_file(root)
            if reason is not None:
                raise DatasetError(f"{reason}; refusing to delete or overwrite {root}")
            shutil.rmtree(root)
        os.replace(tmp, root)
    except OSError:  # another process finished first: keep its copy if it is complete
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(root, config, seed):
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own half-written build
        raise
    return root


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, another user's
    return True


def remove_stale_builds(root) -> list:
    """Remove the half-written builds of ``root`` that a killed ``make_tiny_voc`` left; return them.

    A build folder is ``.<root name>.tmp-XXXXXXXX`` next to root, and holds, from its first
    moment, the marker ``.minissd-build.json`` naming the process that writes it. Only folders
    with that marker, whose process is gone, and holding nothing but files tiny-voc writes,
    are removed.
    """
    root = Path(root)
    removed = []
    if not root.parent.is_dir():
        return removed
    for tmp in sorted(root.parent.glob(f".{root.name}.tmp-*")):
        try:
            mark = json.loads((tmp / BUILD_MARKER).read_text(encoding="utf-8"))
            pid = int(mark["pid"])
            if mark.get("written_by") != WRITTEN_BY or tmp.is_symlink() or _alive(pid):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _foreign_file(tmp, need_marker=False, extra={BUILD_MARKER}) is None:
            shutil.rmtree(tmp)
            removed.append(tmp)
    return removed


def _build(tmp: Path, config, seed, workers):
    """Write the whole dataset into the fresh folder ``tmp`` (holding BUILD_MARKER), the marker last."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 -> what mkdir would have given
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp / sub).mkdir(parents=True)

    n = config.n_train + config.n_val
    ids = [f"{i + 1:06d}" for i in range(n)]
    # Every image depends on (seed, i) only, so processes may draw them in any order and the
    # bytes stay the same; a pool pays off only past a few hundred images.
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    size = max(1, min(100, math.ceil(n / (4 * max(workers, 1)))))  # a few chunks per worker
    chunks = [range(a, min(a + size, n)) for a in range(0, n, size)]
    if workers > 1 and n >= POOL_MIN_IMAGES:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_images, [tmp] * len(chunks), [config] * len(chunks),
                          [seed] * len(chunks), chunks))
    else:
        for chunk in chunks:
            _write_images(tmp, config, seed, chunk)
    splits = {"train": ids[:config.n_train], "val": ids[config.n_train:], "trainval": ids}
    for split, split_ids in splits.items():
        (tmp / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
    (tmp / CLASSES_FILE).write_text("".join(f"{c}\n" for c in TINY_VOC_CLASSES))

    (tmp / BUILD_MARKER).unlink()  # the build is whole: from here its own marker speaks for it
    marker = {**_marker_expected(config, seed), "written_by": WRITTEN_BY, "images": n,
              "sha256": content_hash(tmp)}
    (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")


# ---- the numbers on the dataset card -----------------------------------------------------------

SIZE_BUCKETS = (0.0, 0.10, 0.20, 0.40, 0.60, 1.01)  # box's longer side / the image's matching side


def describe(root, splits=("train", "val")) -> dict:
    """Statistics of a VOC folder's splits, from the annotations (docs/tiny-voc.md prints these).

    Per split: images, image side range, objects (per class), objects per image histogram,
    empty images, difficult / truncated / occluded counts and a histogram of relative box size
    (max(box width / image width, box height / image height)) over SIZE_BUCKETS.
    """
    from .voc import VOCDataset

    out = {}
    for split in splits:
        ds = VOCDataset(root, split)
        anns = ds.annotations
        counts = np.array([len(a.labels) for a in anns])
        labels = np.concatenate([a.labels for a in anns])
        rel = np.concatenate([np.maximum(a.boxes[:, 2] - a.boxes[:, 0], a.boxes[:, 3] - a.boxes[:, 1])
                              for a in anns])
        hist, _ = np.histogram(rel, bins=SIZE_BUCKETS)
        out[split] = {
            "images": len(anns),
            "width_range": (min(a.width for a in anns), max(a.width for a in anns)),
            "height_range": (min(a.height for a in anns), max(a.height for a in anns)),
            "objects": int(len(labels)),
            "per_class": {c: int((labels == k + 1).sum()) for k, c in enumerate(ds.classes)},
            "objects_per_image": {int(k): int((counts == k).sum()) for k in range(counts.max() + 1)},
            "empty_images": int((counts == 0).sum()),
            "difficult": int(sum(a.difficult.sum() for a in anns)),
            "truncated": int(sum(a.truncated.sum() for a in anns)),
            "occluded": int(sum(a.occluded.sum() for a in anns)),
            "relative_size_histogram": {f"{lo:.0%}-{hi:.0%}" if hi <= 1 else f">{lo:.0%}": int(h)
                                        for lo, hi, h in zip(SIZE_BUCKETS[:-1], SIZE_BUCKETS[1:], hist)},
            "relative_size_median": float(np.median(rel)),
        }
    return out

