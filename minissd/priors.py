"""Default boxes (priors): a fixed set of boxes tiled over several feature maps.

SSD predicts, at every cell of every source feature map, offsets and class scores for k
default boxes centred on that cell (Liu et al. 2016, sec. 2.2 "Choosing scales and aspect
ratios for default boxes"). This module builds those boxes from a ``PriorConfig``.

Order (DESIGN.md, the same as ssd.pytorch): feature map by feature map, then row i, then
column j, then the boxes of one location: the square of size s_k, the square of size
sqrt(s_k s_{k+1}), then for each aspect ratio a: (s_k sqrt(a), s_k / sqrt(a)) followed by its
transpose (s_k / sqrt(a), s_k sqrt(a)).

Fitting default boxes to a dataset (a user's objects are rarely VOC's):

    prior_coverage(boxes, config, iou_threshold)     share of objects with an IoU >= threshold
                                                     with at least one default box
    fit_prior_scales(data, config, iou_threshold)    per-map scales that raise that share
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

# How default boxes that cross the image border are clipped (``PriorConfig.clip``, the flag
# ``python -m minissd.train --clip-priors``; docs/switches.md):
# - "center": each of (cx, cy, w, h) clamped to [0, 1] (ssd.pytorch layers/functions/prior_box.py
#   and torchvision's DefaultBoxGenerator(clip=True), which both clamp the centre form): a box
#   wider than the image gets w = 1 but keeps its centre, so it still pokes out of the image;
# - "corner": (xmin, ymin, xmax, ymax) clamped to [0, 1], then back to centre form (the authors'
#   Caffe PriorBoxLayer with clip: true, src/caffe/layers/prior_box_layer.cpp, whose priors are
#   corner boxes): the box becomes its part inside the image, its centre moves inwards;
# - "none": left as tiled (Caffe's ssd_pascal.py trains VOC with clip = False).
CLIP_MODES = ("center", "corner", "none")


@dataclass(frozen=True)
class PriorConfig:
    """Where the default boxes go and how big they are; defaults are the paper's SSD300.

    Sizes are in pixels of the (square) network input; ``default_boxes`` divides by
    ``image_size``. Numbers from Liu et al. 2016 and weiliu89/caffe ssd_pascal.py (as
    tabulated in ssd.pytorch data/config.py ``voc``).
    """

    image_size: int = 300
    feature_maps: tuple = (38, 19, 10, 5, 3, 1)  # conv4_3, fc7, conv8_2, conv9_2, conv10_2, conv11_2
    steps: tuple = (8, 16, 32, 64, 100, 300)  # pixels between cell centres on each map
    min_sizes: tuple = (30, 60, 111, 162, 213, 264)  # s_k * 300; conv4_3 gets 0.1, then 0.2..0.88
    max_sizes: tuple = (60, 111, 162, 213, 264, 315)  # s_{k+1} * 300: the extra square is sqrt(s_k s_{k+1})
    aspect_ratios: tuple = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))  # each a also gives 1/a
    clip: str = "center"  # one of CLIP_MODES: "center" clamps (cx, cy, w, h) to [0, 1] (ssd.pytorch)

    def __post_init__(self):
        # configs saved before the clip modes existed hold a bool: True was "center", False "none"
        if isinstance(self.clip, (bool, np.bool_)):
            object.__setattr__(self, "clip", "center" if self.clip else "none")
        if self.clip not in CLIP_MODES:
            raise ConfigError(f"PriorConfig.clip: expected one of {', '.join(CLIP_MODES)}, got {self.clip!r}")
        m = len(self.feature_maps)
        for name in ("steps", "min_sizes", "max_sizes", "aspect_ratios"):
            if len(getattr(self, name)) != m:
                raise ConfigError(f"PriorConfig.{name}: expected {m} entries (one per feature map), "
                                 f"got {len(getattr(self, name))}")
        if self.image_size <= 0:
            raise ConfigError(f"PriorConfig.image_size: expected > 0, got {self.image_size}")
        for k in range(m):
            if self.feature_maps[k] < 1 or self.steps[k] <= 0:
                raise ConfigError(f"PriorConfig: map {k} needs feature_maps >= 1 and steps > 0")
            if not 0 < self.min_sizes[k] <= self.max_sizes[k]:
                raise ConfigError(f"PriorConfig: map {k} needs 0 < min_sizes <= max_sizes, got "
                                 f"{self.min_sizes[k]}, {self.max_sizes[k]}")
            if any(a <= 0 for a in self.aspect_ratios[k]):
                raise ConfigError(f"PriorConfig.aspect_ratios[{k}]: ratios must be > 0")

    @property
    def boxes_per_location(self):
        """k for each map: 2 squares + 2 per aspect ratio (a and 1/a); SSD300: (4, 6, 6, 6, 4, 4)."""
        return tuple(2 + 2 * len(ars) for ars in self.aspect_ratios)

    @property
    def num_priors(self):
        """Total number of default boxes; 8732 for SSD300."""
        return sum(f * f * k for f, k in zip(self.feature_maps, self.boxes_per_location))

    @classmethod
    def from_scales(cls, image_size, feature_maps, s_min=0.2, s_max=0.9, first_scale=None,
                    aspect_ratios=None, clip="center"):
        """Build a config with the paper's linear scale rule (Liu et al. 2016, eq. 4).

        - image_size: side of the square input, pixels.
        - feature_maps: side of each source map, largest first, e.g. (38, 19, 10, 5, 3, 1).
        - s_min, s_max: scales of the first and last map, as fractions of the image.
        - first_scale: if given, the first map gets this scale on its own and the formula
          spreads s_min..s_max over the remaining maps (SSD300 gives conv4_3 0.1 this way).
        - aspect_ratios: per map, default (2,) for the first and last two maps, (2, 3) between.
        s_k = s_min + (s_max - s_min) (k - 1) / (m - 1), k = 1..m. The extra square of map k
        uses sqrt(s_k s_{k+1}); the last map continues the same line one step further (as
        the released code does: 264 + 51 = 315 pixels for SSD300). Steps are
        image_size / feature_map, so cell centres tile the image evenly.
        """
        feature_maps = tuple(int(f) for f in feature_maps)
        n = len(feature_maps)
        m = n - 1 if first_scale is not None else n  # maps that follow the linear rule
        if m < 1 or not 0 < s_min <= s_max:
            raise ValueError(f"from_scales: need at least one map and 0 < s_min <= s_max, got "
                             f"{n} maps, s_min={s_min}, s_max={s_max}")
        delta = (s_max - s_min) / (m - 1) if m > 1 else 0.0
        scales = [s_min + delta * k for k in range(m + 1)]  # s_1 .. s_{m+1}
        if m == 1:
            scales = [s_min, s_max]  # one map: its extra square is sqrt(s_min s_max)
        if first_scale is not None:
            scales = [first_scale] + scales
        if aspect_ratios is None:
            aspect_ratios = tuple((2,) if k == 0 or k >= n - 2 else (2, 3) for k in range(n))
        return cls(
            image_size=image_size,
            feature_maps=feature_maps,
            steps=tuple(image_size / f for f in feature_maps),
            min_sizes=tuple(scales[k] * image_size for k in range(n)),
            max_sizes=tuple(scales[k + 1] * image_size for k in range(n)),
            aspect_ratios=tuple(tuple(a) for a in aspect_ratios),
            clip=clip,
        )


    @classmethod
    def from_scale_list(cls, image_size, feature_maps, scales, aspect_ratios=None, clip="center"):
        """A config with the scales given (fractions of the image side).

        - scales, one of
          - m values s_1 <= ... <= s_m (one per map) or m + 1 (the last is s_{m+1}): the
            paper's chain, map k's extra square is sqrt(s_k s_{k+1}); with m values s_{m+1}
            continues the line, s_m + (s_m - s_{m-1});
          - m pairs (s_k, t_k) with s_k <= t_k: map k's own two scales, its boxes of every
            aspect ratio at s_k and its extra square at sqrt(s_k t_k) (what
            ``fit_prior_scales`` returns);
        - aspect_ratios: per map, default (2,) everywhere
        Steps are image_size / feature_map, as in ``from_scales``. ConfigError for bad scales.
        """
        feature_maps = tuple(int(f) for f in feature_maps)
        n = len(feature_maps)
        try:
            values = np.asarray(scales, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"prior scales: expected numbers, got {scales!r}") from None
        if values.ndim == 2 and values.shape == (n, 2):
            lo, hi = values[:, 0], values[:, 1]
        elif values.ndim == 1 and len(values) in (n, n + 1):
            chain = list(values)
            if len(chain) == n:
                chain.append(chain[-1] + (chain[-1] - chain[-2]) if n > 1 else chain[-1])
            if any(b < a for a, b in zip(chain, chain[1:])):
                raise ConfigError(f"prior scales: a chain of scales must not decrease, got {list(values)}")
            lo, hi = np.array(chain[:-1]), np.array(chain[1:])
        else:
            raise ConfigError(f"prior scales: expected {n} or {n + 1} values or {n} (min, max) pairs, one per "
                              f"feature map {feature_maps}; got shape {values.shape}")
        if not (np.isfinite(values).all() and (values > 0).all()) or (hi < lo).any():
            raise ConfigError(f"prior scales: expected positive fractions of the image with min <= max, got {values.tolist()}")
        if aspect_ratios is None:
            aspect_ratios = ((2,),) * n
        return cls(
            image_size=image_size,
            feature_maps=feature_maps,
            steps=tuple(image_size / f for f in feature_maps),
            min_sizes=tuple(float(v) * image_size for v in lo),
            max_sizes=tuple(float(v) * image_size for v in hi),
            aspect_ratios=tuple(tuple(a) for a in aspect_ratios),
            clip=clip,
        )

    @property
    def scales(self):
        """(s_1, ..., s_m, s_{m+1}): min_sizes and the last max_size as fractions of image_size."""
        return tuple(v / self.image_size for v in self.min_sizes) + (self.max_sizes[-1] / self.image_size,)


SSD300_VOC = PriorConfig()  # the paper's SSD300 on VOC: 8732 default boxes


def default_boxes(config=SSD300_VOC):
    """All default boxes of a config, in the order DESIGN.md fixes.

    - config: a PriorConfig (default SSD300_VOC).
    - returns: (P, 4) float32, centre form (cx, cy, w, h) normalised to [0, 1];
      P = config.num_priors (8732 for SSD300). ``config.clip`` (see ``CLIP_MODES``):
      "center" clamps each of the four numbers to [0, 1] (as ssd.pytorch does): in SSD300
      this changes the boxes wider or taller than the image and the last row and column of
      the 10x10 and 5x5 maps, whose steps (32, 64 pixels) put their centres past 300 pixels
      (9.5 * 32 = 304); "corner" clamps the corners instead and returns the part of each box
      inside the image; "none" leaves the boxes as tiled.
    """
    if not isinstance(config, PriorConfig):
        raise ValueError(f"config: expected a PriorConfig, got {type(config).__name__}")
    # [assignment default_boxes] Per map, row i, column j: centre ((j+0.5)*step, (i+0.5)*step)/image_size; boxes: s_k, s'_k = sqrt(s_k * s_{k+1}) (s_{k+1} = max_size / image_size), then (s_k*sqrt(a), s_k/sqrt(a)) and its transpose.
    boxes = []
    for k, f in enumerate(config.feature_maps):
        s_k = config.min_sizes[k] / config.image_size
        s_extra = math.sqrt(s_k * config.max_sizes[k] / config.image_size)
        for i, j in itertools.product(range(f), repeat=2):  # row i, then column j
            cx = (j + 0.5) * config.steps[k] / config.image_size
            cy = (i + 0.5) * config.steps[k] / config.image_size
            boxes.append((cx, cy, s_k, s_k))
            boxes.append((cx, cy, s_extra, s_extra))
            for a in config.aspect_ratios[k]:
                r = math.sqrt(a)
                boxes.append((cx, cy, s_k * r, s_k / r))
                boxes.append((cx, cy, s_k / r, s_k * r))
    priors = np.array(boxes, dtype=np.float64)  # (P, 4)
    # [/assignment]
    if config.clip == "center":
        np.clip(priors, 0.0, 1.0, out=priors)
    elif config.clip == "corner":
        priors = _clip_corners(priors)
    return priors.astype(np.float32)


def _clip_corners(priors):
    """(P, 4) centre form -> the same boxes cut to the image [0, 1]^2, centre form (float64).

    A box wholly outside the image would become empty (w or h = 0); no layout here tiles one,
    since every cell centre lies inside the image or at most a few pixels past its edge.
    """
    half = priors[:, 2:] / 2
    lo = np.clip(priors[:, :2] - half, 0.0, 1.0)  # (P, 2) xmin, ymin
    hi = np.clip(priors[:, :2] + half, 0.0, 1.0)  # (P, 2) xmax, ymax
    return np.concatenate([(lo + hi) / 2, hi - lo], axis=1)


# ---- fitting default boxes to a dataset ------------------------------------------------------

def dataset_boxes(data):
    """All ground-truth boxes of a dataset as one (N, 4) float32 array, corner [0, 1].

    - data: a dataset with ``annotations`` (every minissd reader: no pixels decoded), a
      ConcatDataset (``datasets``), any ``image, boxes, ... = data[i]`` dataset, or already
      an (N, 4) array of corner boxes
    """
    if hasattr(data, "annotations"):
        parts = [a.boxes for a in data.annotations]
    elif hasattr(data, "datasets"):
        parts = [dataset_boxes(d) for d in data.datasets]
    elif isinstance(data, (np.ndarray, list, tuple)):
        b = np.asarray(data, dtype=np.float32)
        if b.size == 0:
            return b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ConfigError(f"boxes: expected a dataset or an (N, 4) array of corner boxes, got shape {b.shape}")
        return b
    else:  # any dataset: image, boxes, labels, difficult = data[i] (decodes every image)
        parts = [data[i][1] for i in range(len(data))]
    return np.concatenate([np.asarray(p, np.float32).reshape(-1, 4) for p in parts] or [np.zeros((0, 4), np.float32)])


def prior_coverage(data, config, iou_threshold=0.5, chunk=512):
    """The share of objects that at least one default box overlaps with IoU >= iou_threshold.

    - data: a dataset or (N, 4) corner boxes (see ``dataset_boxes``)
    - config: the PriorConfig of the model (the boxes are compared as ``default_boxes`` makes them)
    - returns (share, best): share in [0, 1] (1.0 for no objects), best (N,) float32, each
      object's highest IoU with any default box

    Matching still gives every object its best default box as a positive (DESIGN.md), but an
    object whose best IoU is under the threshold gets only that one, poorly placed: this share
    is the number that tells whether the priors fit the objects.
    """
    from .boxes import center_to_corner, iou

    boxes = dataset_boxes(data)
    priors = center_to_corner(default_boxes(config))  # (P, 4) corner
    best = np.zeros(len(boxes), np.float32)
    for a in range(0, len(boxes), chunk):
        best[a:a + chunk] = iou(boxes[a:a + chunk], priors).max(axis=1)  # (chunk,)
    share = float((best >= iou_threshold).mean()) if len(boxes) else 1.0
    return share, best


def _iou_at_nearest_cell(w, h, dx, dy, pw, ph):
    """IoU of a (w, h) box and a (pw, ph) box whose centre is (dx, dy) away; arrays broadcast."""
    ix = np.clip(np.minimum(w / 2, dx + pw / 2) - np.maximum(-w / 2, dx - pw / 2), 0, None)
    iy = np.clip(np.minimum(h / 2, dy + ph / 2) - np.maximum(-h / 2, dy - ph / 2), 0, None)
    inter = ix * iy
    return inter / (w * h + pw * ph - inter)


def fit_prior_scales(data, config=None, iou_threshold=0.5, candidates=None, sweeps=4, model="tiny",
                     input_size=None):
    """Default-box scales for each map, chosen so that as many objects as possible get a positive.

    - data: a dataset (boxes read from its annotations, no pixels decoded) or (N, 4) corner boxes
    - config: a PriorConfig giving the layout to fit: image_size, feature_maps and
      aspect_ratios stay; only the sizes change. None: the layout of
      ``minissd.model.model_config(model, input_size)``
    - iou_threshold: the matching threshold training uses
    - candidates: the scale values to choose from (default 128 values, evenly spaced in log
      from 0.005 to 1)
    - returns m pairs (s_k, t_k), fractions of the image side: map k's boxes of every aspect
      ratio at scale s_k, its extra square at sqrt(s_k t_k); pass them on as
      ``build_model(..., prior_scales=...)`` / ``PriorConfig.from_scale_list``

    How: an object is *covered* by a box shape of map k when that box, placed at the cell
    centre nearest the object's centre (the best place for a box of a given shape), overlaps it
    with IoU >= iou_threshold. Each map has two free sizes: s_k (the square and the
    aspect-ratio pairs) and its extra square's side g_k = sqrt(s_k t_k) >= s_k. Starting from
    ``config``'s own sizes, each of the 2m sizes in turn takes the candidate that covers the
    most objects given the others (ties: the one nearest its current value, so maps that no
    object needs keep the paper's rule), for a few sweeps. ``prior_coverage`` measures the
    result with the real default boxes. A map's step bounds what any size can do: an object
    much smaller than the step of the finest map may sit too far from every centre for an IoU
    of 0.5, whatever the scale (then a larger input size helps, not other scales).
    Aspect ratios are not fitted: with {1, 2, 1/2} objects up to about 1:3 are coverable.
    """
    if config is None:
        from .model import model_config  # here: minissd.model imports this module

        config = model_config(model, input_size).priors
    boxes = dataset_boxes(data).astype(np.float64)
    n_maps = len(config.feature_maps)
    S = config.image_size
    own = [(config.min_sizes[k] / S, config.max_sizes[k] / S) for k in range(n_maps)]
    if len(boxes) == 0:
        return tuple(own)
    cand = np.geomspace(0.005, 1.0, 128) if candidates is None else np.sort(np.asarray(candidates, np.float64))
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2  # (N,)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]

    # main[k, j, n]: object n covered by map k's square or aspect pairs at scale cand[j];
    # square[k, j, n]: by map k's square of side cand[j] (the extra square)
    main = np.zeros((n_maps, len(cand), len(boxes)), bool)
    square = np.zeros_like(main)
    for k, f in enumerate(config.feature_maps):
        step = config.steps[k] / S
        dx = np.abs(cx - (np.clip(np.floor(cx / step), 0, f - 1) + 0.5) * step)  # (N,) to the nearest centre
        dy = np.abs(cy - (np.clip(np.floor(cy / step), 0, f - 1) + 0.5) * step)
        shapes = [(math.sqrt(a), 1 / math.sqrt(a)) for a in config.aspect_ratios[k]]
        shapes += [(b, a) for a, b in shapes]
        for j, s in enumerate(cand):
            q = min(s, 1.0)  # the "center" clip clamps sizes at 1 (an estimate for the other modes)
            square[k, j] = _iou_at_nearest_cell(w, h, dx, dy, q, q) >= iou_threshold
            main[k, j] = square[k, j]
            for rw, rh in shapes:
                main[k, j] |= _iou_at_nearest_cell(w, h, dx, dy, min(s * rw, 1.0), min(s * rh, 1.0)) >= iou_threshold

    def nearest(v):
        return int(np.argmin(np.abs(np.log(cand) - math.log(v))))

    pick_s = [nearest(lo) for lo, _ in own]
    pick_g = [max(nearest(math.sqrt(lo * hi)), pick_s[k]) for k, (lo, hi) in enumerate(own)]
    for _ in range(sweeps):
        changed = False
        for k in range(n_maps):
            for which in ("s", "g"):
                others = np.zeros(len(boxes), bool)  # covered by every size but this one
                for m in range(n_maps):
                    if not (m == k and which == "s"):
                        others |= main[m, pick_s[m]]
                    if not (m == k and which == "g"):
                        others |= square[m, pick_g[m]]
                if which == "s":
                    js = np.arange(0, pick_g[k] + 1)  # s_k <= g_k
                    counts = (main[k, js] | others).sum(axis=1)
                    current = pick_s[k]
                else:
                    js = np.arange(pick_s[k], len(cand))
                    counts = (square[k, js] | others).sum(axis=1)
                    current = pick_g[k]
                best = js[counts == counts.max()]
                j = int(best[np.argmin(np.abs(best - current))])
                changed |= j != current
                if which == "s":
                    pick_s[k] = j
                else:
                    pick_g[k] = j
        if not changed:
            break
    pairs = []
    for k in range(n_maps):
        s, g = float(cand[pick_s[k]]), float(cand[pick_g[k]])
        pairs.append((round(s, 5), round(max(g * g / s, s), 5)))  # t_k = g_k^2 / s_k
    return tuple(pairs)

