"""Default boxes (priors): a fixed set of boxes tiled over several feature maps.

SSD predicts, at every cell of every source feature map, offsets and class scores for k
default boxes centred on that cell (Liu et al. 2016, sec. 2.2 "Choosing scales and aspect
ratios for default boxes"). This module builds those boxes from a ``PriorConfig``.

Order (DESIGN.md, the same as ssd.pytorch): feature map by feature map, then row i, then
column j, then the boxes of one location: the square of size s_k, the square of size
sqrt(s_k s_{k+1}), then for each aspect ratio a: (s_k sqrt(a), s_k / sqrt(a)) followed by its
transpose (s_k / sqrt(a), s_k sqrt(a)).
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np


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
    clip: bool = True  # clamp (cx, cy, w, h) to [0, 1], as ssd.pytorch's PriorBox does

    def __post_init__(self):
        m = len(self.feature_maps)
        for name in ("steps", "min_sizes", "max_sizes", "aspect_ratios"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"PriorConfig.{name}: expected {m} entries (one per feature map), "
                                 f"got {len(getattr(self, name))}")
        if self.image_size <= 0:
            raise ValueError(f"PriorConfig.image_size: expected > 0, got {self.image_size}")
        for k in range(m):
            if self.feature_maps[k] < 1 or self.steps[k] <= 0:
                raise ValueError(f"PriorConfig: map {k} needs feature_maps >= 1 and steps > 0")
            if not 0 < self.min_sizes[k] <= self.max_sizes[k]:
                raise ValueError(f"PriorConfig: map {k} needs 0 < min_sizes <= max_sizes, got "
                                 f"{self.min_sizes[k]}, {self.max_sizes[k]}")
            if any(a <= 0 for a in self.aspect_ratios[k]):
                raise ValueError(f"PriorConfig.aspect_ratios[{k}]: ratios must be > 0")

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
                    aspect_ratios=None, clip=True):
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


SSD300_VOC = PriorConfig()  # the paper's SSD300 on VOC: 8732 default boxes


def default_boxes(config=SSD300_VOC):
    """All default boxes of a config, in the order DESIGN.md fixes.

    - config: a PriorConfig (default SSD300_VOC).
    - returns: (P, 4) float32, centre form (cx, cy, w, h) normalised to [0, 1];
      P = config.num_priors (8732 for SSD300). With ``config.clip`` each of the four
      numbers is clamped to [0, 1] (as ssd.pytorch does): in SSD300 this changes the boxes
      wider or taller than the image and the last row and column of the 10x10 and 5x5 maps,
      whose steps (32, 64 pixels) put their centres past 300 pixels (9.5 * 32 = 304).
    """
    if not isinstance(config, PriorConfig):
        raise ValueError(f"config: expected a PriorConfig, got {type(config).__name__}")
    # [assignment default_boxes] Per map, row i, column j: centre ((j+0.5)*step, (i+0.5)*step)/image_size; boxes: s_k, sqrt(s_k*s_k+1), then (s_k*sqrt(a), s_k/sqrt(a)) and its transpose.
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
    if config.clip:
        np.clip(priors, 0.0, 1.0, out=priors)
    return priors.astype(np.float32)
