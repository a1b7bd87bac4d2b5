"""SSD: base network + extra layers + prediction heads, and the default boxes that go with them.

One ``SSDConfig`` describes a whole detector: the layer tables of each stage (one stage per
source map, see backbone.py) and the ``PriorConfig`` of its default boxes. ``SSD(config)``
checks that the feature maps the tables produce are exactly the maps the priors are laid on,
and gives each head as many boxes per location as the priors have, so network and priors
can never disagree.

Forward, for images (B, 3, S, S):

    x = images
    for each stage m:   x = stage_m(x);  source_m = x   (L2Norm(x) on SSD300's conv4_3)
    loc, conf = heads(source_1 .. source_M)            (B, P, 4), (B, P, C+1)

Backward walks the same path in reverse: the heads give one gradient per source map; the
gradient reaching stage m's output is its source gradient plus what stage m+1 sends back.
"""

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from ..data.augment import MEAN, STD
from ..errors import ConfigError
from ..nn import L2Norm, Module
from ..priors import SSD300_VOC, PriorConfig, default_boxes
from .backbone import SSD300_TABLES, build_stage, receptive_field, stage_output
from .heads import MultiBoxHead


@dataclass(frozen=True)
class SSDConfig:
    """Everything that fixes a detector's shape.

    - name: a short name stored in checkpoints ("ssd300", "tiny").
    - tables: one layer table per source map (backbone.py explains the entries).
    - priors: the default boxes; ``priors.image_size`` is the network's input side and
      ``priors.feature_maps`` must equal the sides the tables produce.
    - batch_norm: BatchNorm2d after every convolution of the tables (not the heads).
    - l2norm_first: L2Norm (scale 20) on the first source map, as SSD300 does on conv4_3.
    - mean, std: per-channel normalisation of the RGB input on the 0-255 scale,
      ``(pixel - mean) / std``, which the data pipeline and detect apply.
    """

    name: str
    tables: tuple
    priors: PriorConfig
    batch_norm: bool = False
    l2norm_first: bool = False
    mean: tuple = MEAN  # ImageNet statistics (minissd.data.augment), the usual choice
    std: tuple = STD
    notes: str = field(default="", compare=False)

    @property
    def input_size(self):
        return self.priors.image_size

    def feature_maps(self, in_channels=3):
        """[(side, channels)] of every source map, by arithmetic on the tables."""
        size, channels, maps = self.input_size, in_channels, []
        for table in self.tables:
            size, channels = stage_output(table, size, channels)
            maps.append((size, channels))
        return maps

    def to_dict(self):
        """A JSON-able dict (checkpoints store it, so a checkpoint rebuilds its own network)."""
        d = asdict(self)
        d.pop("notes")
        return d

    @classmethod
    def from_dict(cls, d, where="model config"):
        """The inverse of ``to_dict`` (JSON lists become the tuples the tables use).

        Raises ConfigError naming the missing or bad field (``where`` prefixes it, e.g. the
        checkpoint's path) for anything that does not describe a network: a missing or
        unknown field, a table entry that cannot be read, priors that are not a valid
        PriorConfig or that disagree with the maps the tables produce.
        """
        def tuples(v):
            return tuple(tuples(x) for x in v) if isinstance(v, list) else v

        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a dict of SSDConfig fields, got {type(d).__name__}")
        names = {f.name for f in fields(cls)} - {"notes"}
        required = {"name", "tables", "priors"}
        missing = sorted(required - set(d))
        if missing:
            raise ConfigError(f"{where}: missing field {', '.join(repr(m) for m in missing)}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown field {', '.join(repr(u) for u in unknown)}")
        d = {k: tuples(v) for k, v in d.items()}
        if not isinstance(d["priors"], dict):
            raise ConfigError(f"{where}: field 'priors' is {type(d['priors']).__name__}, expected a dict")
        prior_names = {f.name for f in fields(PriorConfig)}
        unknown = sorted(set(d["priors"]) - prior_names)
        if unknown:
            raise ConfigError(f"{where}: unknown field {', '.join('priors.' + u for u in unknown)}")
        try:
            d["priors"] = PriorConfig(**{k: tuples(v) for k, v in d["priors"].items()})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: field 'priors': {e}") from None
        if not isinstance(d["tables"], tuple) or not all(isinstance(t, tuple) for t in d["tables"]):
            raise ConfigError(f"{where}: field 'tables' must be a list of layer tables (lists)")
        config = cls(**d)
        try:
            maps = tuple(side for side, _ in config.feature_maps())
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: field 'tables': {e}") from None
        if maps != tuple(config.priors.feature_maps):
            raise ConfigError(f"{where}: field 'priors.feature_maps' is {config.priors.feature_maps} but the "
                              f"tables produce maps {maps}")
        return config

    def receptive_fields(self):
        """[(receptive field in pixels, stride in pixels)] of every source map."""
        return [receptive_field(self.tables, m) for m in range(len(self.tables))]


# ---- SSD300 (Liu et al. 2016, table 1 / fig. 2) ----------------------------------------------
SSD300_CONFIG = SSDConfig(name="ssd300", tables=SSD300_TABLES, priors=SSD300_VOC,
                          batch_norm=False, l2norm_first=True)

# ---- tiny SSD for tiny-voc ---------------------------------------------------------------------
# Input 128; the tiny-voc objects span ~7% to ~65% of the image side. Five source maps,
# 16, 8, 4, 2, 1 (strides 8, 16, 32, 64, 128 pixels), the same idea as SSD300's six: early
# large maps with small boxes, late small maps with large boxes. Narrow and shallow where the
# maps are large (a stride-2 first convolution, one conv at 32x32), wide where they are small
# (192 channels from 8x8 on): a conv at 8x8 costs a quarter of the same conv at 16x16.
# docs/ch06-network.md has the reasoning (receptive field of each map against its box
# sizes), the costs and the A/B runs that chose this layout.
TINY_EXTRA = (("conv", 96, 1, 1, 0, 1), ("conv", 192, 3, 2, 1, 1))  # 1x1 bottleneck, 3x3 stride 2
TINY_TABLES = (
    # 128 -> 64 -> 32 (two stride-2 convs), one conv at 32x32 -> 16: source 1, 16x16x128 (stride 8)
    (("conv", 16, 3, 2, 1, 1), ("conv", 32, 3, 2, 1, 1), 64, "M", 128, 128),
    # 16 -> 8: source 2, 8x8x192 (stride 16)
    ("M", 192, 192),
    # 8 -> 4 -> 2 -> 1: sources 3-5, the extra layers (1x1 bottleneck, then 3x3 stride 2)
    TINY_EXTRA,
    TINY_EXTRA,
    TINY_EXTRA,
)
# Scales: 0.1 on the 16x16 map (13 px boxes for the smallest objects), then the paper's linear
# rule from 0.2 to 0.8 over the other four maps; aspect ratios {1, 2, 1/2} everywhere (the
# shapes are stretched at most 1.4x, and the square resize of 160-240 px images adds at most
# 1.5x): k = 4 boxes per location, 1364 in all.
TINY_PRIORS = PriorConfig.from_scales(128, (16, 8, 4, 2, 1), s_min=0.2, s_max=0.8, first_scale=0.1,
                                      aspect_ratios=((2,),) * 5)
TINY_CONFIG = SSDConfig(name="tiny", tables=TINY_TABLES, priors=TINY_PRIORS, batch_norm=True)

# The tiny family: the same first two stages at any input side S (a multiple of 16), then one
# extra stage per halving until the map is 1x1: S = 128 gives maps 16, 8, 4, 2, 1 (TINY_CONFIG
# itself), S = 384 gives 48, 24, 12, 6, 3, 2, 1. The scales follow the same rule as tiny's
# (0.1 on the first map, 0.2..0.8 over the rest), unless given.
TINY_SIZES = (64, 1024)  # smallest and largest input side accepted


def tiny_config(input_size=128, prior_scales=None):
    """The tiny family's SSDConfig for a square input of ``input_size`` pixels.

    - input_size: a multiple of 16 in TINY_SIZES; 128 with no prior_scales is TINY_CONFIG
    - prior_scales: None for the paper's rule (as tiny), or m or m + 1 fractions of the
      image side, one per source map (``minissd.priors.fit_prior_scales`` chooses them)
    Raises ConfigError naming input_size or prior_scales when they cannot be used.
    """
    S = input_size
    if isinstance(S, bool) or not isinstance(S, (int, np.integer)) or S % 16 or not TINY_SIZES[0] <= S <= TINY_SIZES[1]:
        raise ConfigError(f"input_size: expected a multiple of 16 from {TINY_SIZES[0]} to {TINY_SIZES[1]} "
                          f"for the tiny model, got {S!r}")
    S = int(S)
    if prior_scales is not None:
        return with_prior_scales(tiny_config(S), prior_scales)
    if S == 128:
        return TINY_CONFIG
    tables, side = TINY_TABLES[:2], S // 16  # side of source 2
    while side > 1:
        tables += (TINY_EXTRA,)
        side = (side + 1) // 2  # 3x3, stride 2, padding 1: ceil(side / 2)
    size, channels, maps = S, 3, ()
    for table in tables:
        size, channels = stage_output(table, size, channels)
        maps += (size,)
    priors = PriorConfig.from_scales(S, maps, s_min=0.2, s_max=0.8, first_scale=0.1,
                                     aspect_ratios=((2,),) * len(maps))
    return SSDConfig(name=f"tiny-{S}", tables=tables, priors=priors, batch_norm=True)


# ---- changing a config: boxes, source maps, scales -------------------------------------------
# Each function returns a new SSDConfig in which the network and its default boxes still agree
# (``SSD`` checks it); ``model_config`` applies them in this order.

def with_aspect_ratios(config, aspect_ratios):
    """``config`` with other aspect ratios: each map's boxes are its two squares plus, for each
    ratio a, the pair (a, 1/a); the heads follow (2 + 2 * len(ratios) boxes per location).

    - aspect_ratios: one tuple of ratios per source map, e.g. ((2,), (2, 3), ()) (an empty
      tuple: the two squares only)
    Raises ConfigError for a wrong count of maps or a ratio that is not a number > 0.
    """
    ratios = tuple(tuple(r) for r in aspect_ratios)
    if len(ratios) != len(config.tables):
        raise ConfigError(f"aspect_ratios: expected one list of ratios per source map ({len(config.tables)} "
                          f"for {config.name}), got {len(ratios)}")
    return replace(config, priors=replace(config.priors, aspect_ratios=ratios))


def with_source_maps(config, source_maps):
    """``config`` predicting from the source maps ``source_maps`` only (the paper's Table 3).

    - source_maps: increasing indices into the config's source maps (0 = the first, finest),
      e.g. (0, 1): heads on the first two maps only
    - returns a config whose layer tables are regrouped so that each kept map ends a stage:
      the stages before a kept map are joined onto it (a map without a head is only a layer
      on the way), the stages after the last kept map are dropped (they would feed nothing);
      the same layers in the same order, so the weights are drawn as before. L2Norm stays
      only if the first map is kept (it normalises that map for its head).
    - default boxes: the kept maps keep their cells (feature_maps, steps) and aspect ratios;
      their scales are spread again over the whole range, from the first kept map's smallest
      scale a to the largest box's scale b (the last max_size): with n maps kept, map j's
      boxes get scale a + (b - a) j / n and its extra square sqrt(s_j s_{j+1}), so that the
      fewer maps still cover every object size, as the paper did for its Table 3 ("we adjust
      the default box scales"). Keeping every map returns ``config`` unchanged.
    Raises ConfigError for an index out of range, a repeated or unsorted index, or none.
    """
    n_maps = len(config.tables)
    keep = tuple(int(m) for m in source_maps)
    if not keep or any(not 0 <= m < n_maps for m in keep) or list(keep) != sorted(set(keep)):
        raise ConfigError(f"source_maps: expected increasing indices from 0 to {n_maps - 1} (the source maps "
                          f"of {config.name}), each at most once, got {list(keep)}")
    if keep == tuple(range(n_maps)):
        return config
    tables, start = [], 0
    for m in keep:  # stages start..m become one: map m ends it
        tables.append(tuple(entry for t in config.tables[start:m + 1] for entry in t))
        start = m + 1
    p, S, n = config.priors, config.priors.image_size, len(keep)
    a, b = p.min_sizes[keep[0]] / S, p.max_sizes[-1] / S
    scales = [a + (b - a) * j / n for j in range(n + 1)]
    priors = replace(p, feature_maps=tuple(p.feature_maps[m] for m in keep),
                     steps=tuple(p.steps[m] for m in keep),
                     min_sizes=tuple(scales[j] * S for j in range(n)),
                     max_sizes=tuple(scales[j + 1] * S for j in range(n)),
                     aspect_ratios=tuple(p.aspect_ratios[m] for m in keep))
    return replace(config, tables=tuple(tables), priors=priors,
                   l2norm_first=config.l2norm_first and keep[0] == 0)


def with_prior_scales(config, prior_scales):
    """``config`` with the default-box scales given (``PriorConfig.from_scale_list``: m or m + 1
    fractions of the image side, or m (s_k, t_k) pairs, one per source map); the name gets
    "-fit". The maps and aspect ratios stay; the steps become image_size / feature_map, as
    ``from_scale_list`` makes them. ConfigError for scales that cannot be used."""
    p = config.priors
    priors = PriorConfig.from_scale_list(p.image_size, p.feature_maps, prior_scales, p.aspect_ratios, clip=p.clip)
    return replace(config, name=config.name + "-fit", priors=priors)


class SSD(Module):
    """The Single Shot MultiBox Detector as a Module.

    - images: (B, 3, S, S) float32, S = config.input_size, normalised with config.mean/std
    - forward -> loc (B, P, 4) encoded offsets, conf (B, P, num_classes + 1) logits,
      in the order of ``self.priors`` (= ``default_boxes(config.priors)``)
    - backward(dloc, dconf) -> gradient w.r.t. images (None: the first conv skips it)
    - num_classes: object classes, background excluded (label 0 is background)
    - seed: the initialisation's seed (He normal for the body, Xavier uniform for the heads)
    """

    def __init__(self, config, num_classes, seed=0):
        if num_classes < 1:
            raise ValueError(f"SSD: num_classes must be >= 1, got {num_classes}")
        maps = config.feature_maps()
        sides = tuple(side for side, _ in maps)
        if sides != tuple(config.priors.feature_maps):
            raise ValueError(f"SSDConfig {config.name!r}: the tables produce feature maps {sides} "
                             f"but the priors are laid on {tuple(config.priors.feature_maps)}")
        self.config, self.num_classes = config, int(num_classes)
        rng = np.random.default_rng(seed)
        self.stages, in_channels = [], 3
        for table in config.tables:
            stage, in_channels = build_stage(table, in_channels, config.batch_norm, rng)
            self.stages.append(stage)
        self.stages[0][0].needs_input_grad = False  # nobody needs d(loss)/d(image): skip it
        self.l2norm = L2Norm(maps[0][1], scale=20.0) if config.l2norm_first else None
        self.heads = MultiBoxHead([c for _, c in maps], config.priors.boxes_per_location,
                                  num_classes, rng)
        self.priors = default_boxes(config.priors)  # (P, 4) centre form

    @property
    def num_priors(self):
        return len(self.priors)

    def forward(self, images):
        S = self.config.input_size
        if images.ndim != 4 or images.shape[1:] != (3, S, S):
            raise ValueError(f"SSD({self.config.name}): images must be (B, 3, {S}, {S}), got {images.shape}")
        sources, x = [], images
        for m, stage in enumerate(self.stages):
            x = stage.forward(x)  # (B, C_m, f_m, f_m)
            sources.append(self.l2norm.forward(x) if m == 0 and self.l2norm else x)
        return self.heads.forward(sources)  # (B, P, 4), (B, P, C+1)

    def backward(self, dloc, dconf):
        source_grads = self.heads.backward(dloc, dconf)  # one (B, C_m, f_m, f_m) per map
        grad = None  # what stage m + 1 sends back into stage m's output
        for m in range(len(self.stages) - 1, -1, -1):
            g = source_grads[m]
            if m == 0 and self.l2norm:
                g = self.l2norm.backward(g)
            if grad is not None:
                g = g + grad  # stage m's output feeds both its head and stage m + 1
            grad = self.stages[m].backward(g)
        return grad

    def extra_repr(self):
        return f"{self.config.name}, num_classes={self.num_classes}, priors={self.num_priors}"


def ssd300_vgg16(num_classes=20, seed=0, input_size=None, prior_scales=None):
    """The paper's SSD300: VGG16 (pool5 3x3/1/1, atrous fc6, fc7), L2Norm(20) on conv4_3, extras
    conv8..conv11, 8732 default boxes. Randomly initialised: no pretrained VGG weights can be
    downloaded here (the paper starts from ImageNet-trained VGG16)."""
    return SSD(model_config("ssd300", input_size, prior_scales), num_classes, seed=seed)


def ssd_tiny(num_classes, seed=0, input_size=None, prior_scales=None):
    """The small SSD for tiny-voc (input 128, five source maps, BatchNorm); see TINY_CONFIG.
    Other input sides and scales: see ``tiny_config``."""
    return SSD(model_config("tiny", input_size, prior_scales), num_classes, seed=seed)


# The registry: name -> builder(num_classes, seed=0, input_size=None, prior_scales=None).
# train's --model choices are its keys.
MODELS = {"tiny": ssd_tiny, "ssd300": ssd300_vgg16}
CONFIGS = {"ssd300": SSD300_CONFIG, "tiny": TINY_CONFIG}  # each name's default config


def model_config(name, input_size=None, prior_scales=None, aspect_ratios=None, source_maps=None,
                 clip=None):
    """The SSDConfig that ``build_model`` would build, without building it.

    - name: a key of MODELS; input_size: None for the model's own (tiny: 128, ssd300: 300);
      the tiny family takes any multiple of 16 from 64 to 1024, ssd300 only 300
    - aspect_ratios: None (the model's own), or one tuple of ratios per source map of the
      model (``with_aspect_ratios``)
    - source_maps: None (every map), or the indices of the maps that carry heads
      (``with_source_maps``; its scales re-spread over the kept maps)
    - prior_scales: None, or one scale per (kept) source map (+ optionally the last map's
      extra square): fractions of the input side (``with_prior_scales``)
    - clip: None (the model's own, "center"), or one of ``minissd.priors.CLIP_MODES``
    Applied in that order: ratios and map indices refer to the model's own maps.
    Raises ConfigError naming the model, input_size, prior_scales, aspect_ratios or source_maps.
    """
    if name not in MODELS:
        raise ConfigError(f"model: unknown name {name!r}, choose one of {sorted(MODELS)}")
    if name == "tiny":
        config = tiny_config(128 if input_size is None else input_size)
    elif input_size not in (None, 300):
        raise ConfigError(f"input_size: ssd300 takes 300 px only (its layers are the paper's), got {input_size!r}; "
                          "the tiny model takes other sizes")
    else:
        config = SSD300_CONFIG
    if aspect_ratios is not None:
        config = with_aspect_ratios(config, aspect_ratios)
    if source_maps is not None:
        config = with_source_maps(config, source_maps)
    if prior_scales is not None:
        config = with_prior_scales(config, prior_scales)
    if clip is not None and clip != config.priors.clip:
        config = replace(config, priors=replace(config.priors, clip=clip))
    return config


def build_model(name, num_classes, seed=0, input_size=None, prior_scales=None, aspect_ratios=None,
                source_maps=None, clip=None):
    """A model by name (a key of MODELS: "tiny", "ssd300"), randomly initialised from ``seed``.

    - input_size, prior_scales, aspect_ratios, source_maps, clip: see ``model_config``; the
      defaults give the named model as it always was (``build_model("tiny", C, seed)`` is
      ``ssd_tiny(C, seed)``, bit for bit)
    Raises ConfigError for an unknown name or a size/scales/layout the model cannot take.
    """
    return SSD(model_config(name, input_size, prior_scales, aspect_ratios, source_maps, clip),
               num_classes, seed=seed)
