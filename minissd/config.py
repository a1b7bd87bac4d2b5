"""What a training run is: ``TrainConfig``, its flags, the named recipes, and their checks.

Every field of ``TrainConfig`` is a flag of ``python -m minissd.train`` (``batch_size`` ->
``--batch-size``). Where a value comes from, first match wins:

1. the flag, when given on the command line;
2. the recipe: ``--recipe tiny-voc`` (the defaults below) or ``--recipe paper`` (the paper's
   SSD300, ``RECIPES["paper"]``); without ``--recipe`` the dataset picks one
   (``default_recipe``): tiny-voc for every dataset, since the paper's 120k iterations of
   SSD300 take days on a CPU and run only when asked for;
3. the field's default.

``check(cfg)`` refuses, before anything runs, every value that cannot train (a ConfigError
naming the flag); ``check_against_data`` does the same for what needs the dataset's size.
Speed settings (``processes``, ``loader_threads``, ``loader_processes``, ``device``) never change the numbers a run
computes; what changes the maths (``bn_group``, the matching threshold, the recipe) is a field
here, saved in the checkpoint and metrics.json.

``SWITCHES`` are the choices SSD implementations disagree on (docs/switches.md): the matching
rule, the confidence loss, the IoU crop's acceptance rule, the clipping of the default boxes,
their aspect ratios and the maps that carry heads. Each defaults to what minissd always did;
a run resumed from a checkpoint must keep them.
"""

import argparse
import math
import os
from dataclasses import asdict, dataclass, fields

from .data import dataset_spec
from .data.augment import AUGMENTATIONS, CROP_RULES
from .errors import ConfigError
from .model import MODELS, model_config
from .priors import CLIP_MODES


@dataclass
class TrainConfig:
    """One training run. Defaults: the tiny-voc recipe (the default ``--tiny-voc`` run)."""

    recipe: str = ""         # "tiny-voc" or "paper"; "" : the dataset's default (tiny-voc)
    # ---- data ------------------------------------------------------------------------------
    data: str = ""           # a dataset spec: tiny-voc, voc:PATH, coco:ANN.json[,IMAGES], yolo:PATH
    tiny_voc: bool = False   # = --data tiny-voc (generated on first use; the default dataset)
    voc_root: str = ""       # = --data voc:PATH (a VOC year folder: Annotations, JPEGImages...)
    data_dir: str = ""       # where tiny-voc lives; default $MINISSD_DATA, else ~/.cache/minissd
    train_split: str = "train"
    val_split: str = "val"
    loader_threads: int = 1  # background threads preparing batches (0: in the training thread)
    loader_processes: int = 0  # > 0: this many background processes instead of the threads (no GIL)
    decode_cache: int = 0    # > 0: decode each training image once, kept in memory, sides <= this (pixels)
    augment: str = "ssd"     # a name in minissd.data.augment.AUGMENTATIONS: "ssd" (the paper's), "light", "none"
    crop: str = "any"        # the IoU crop accepts a patch when "any" object meets the IoU (Caffe), the "best"
                             # one whose centre is inside (torchvision), "all" do, or "never-reject" (ssd.pytorch)
    light_first: float = 0.7 # with "ssd": the first this fraction of the epochs use "light" (a curriculum)
    max_expand: float = 2.0  # zoom-out: canvas up to this many times the image (paper: 4, at 300 px)
    # ---- model -----------------------------------------------------------------------------
    model: str = "tiny"      # a name in minissd.model.MODELS: "tiny" (tiny-voc), "ssd300" (the paper's)
    input_size: int = 0      # input side in pixels for the tiny family (0: the model's own, 128)
    fit_priors: bool = False # default-box scales fitted to the training set's boxes
    aspect_ratios: str = ""  # per source map, maps by ";", ratios by ",", e.g. "2;2,3;2,3;2;2" ("1": squares
                             # only; one map's list alone: every map); "" : the model's own (tiny: 2 on every map)
    source_maps: str = ""    # indices of the source maps that carry heads, e.g. "0,1,2" ("" : all)
    clip_priors: str = "center"  # default boxes clamped in "center" form (ssd.pytorch), by their "corner"s, or "none"
    # ---- optimisation (SSD: SGD, momentum 0.9, weight decay 5e-4, batch 32) -----------------
    iters: int = 3600        # 58k images: ~13 min end to end on 2 cores (docs/training-results.md)
    epochs: float = 0.0      # if > 0: iters = epochs * len(train set) / batch_size
    batch_size: int = 16     # the paper: 32; 16 is 1.5x faster per image here and updates twice as often
    bn_group: int = 8        # BatchNorm normalises every this many images of a batch together
    optimizer: str = "sgd"   # "sgd" (the paper's) or "adam"
    lr: float = 0.06         # peak learning rate (BatchNorm allows 60x the paper's 1e-3; 0.02 until
                             # 2026-12-04: docs/training-results.md, fourth day)
    momentum: float = 0.9    # the paper's (Adam: its beta1)
    weight_decay: float = 5e-4  # the paper's
    warmup_iters: int = 200  # linear warm-up from lr/3, as lufficc/SSD does
    schedule: str = "cosine" # "cosine" to lr/100 at the end, or "step" (the paper's: x0.1 at milestones)
    milestones: str = ""     # step schedule: comma-separated iterations, e.g. "80000,100000"
    grad_clip: float = 10.0  # clip the global gradient norm (0: off); guards the first steps
    # ---- SSD's loss (the paper's numbers, but for the matching threshold) ---------------------
    iou_threshold: float = 0.4  # a default box is positive at IoU >= this with a ground truth (paper: 0.5;
                                # tiny's coarse grids leave objects 2.2 positives at 0.5, 5.7 at 0.4)
    neg_pos_ratio: float = 3.0  # hard negative mining keeps at most 3 negatives per positive
    alpha: float = 1.0          # weight of the localisation loss
    matching: str = "per-prediction"  # "per-prediction" (ssd.pytorch, torchvision) or "bipartite" (Caffe's greedy step)
    conf_loss: str = "hnm"      # "hnm" (softmax + 3:1 hard negative mining, the paper), "all" (softmax over
                                # every default box, d2l), "focal" (RetinaNet's, no mining)
    # ---- evaluation and output -------------------------------------------------------------
    eval_every: int = 1000   # validation mAP every this many iterations (0: only at the end)
    eval_images: int = 100   # periodic validation on the first N val images (the end: all)
    out: str = "runs/tiny-voc"
    resume: bool = False     # continue from OUT/checkpoint.npz
    seed: int = 0
    log_every: int = 10      # history points (loss, lr) every this many iterations
    # ---- speed only: none of these changes a result ------------------------------------------
    device: str = "cpu"      # "cpu" or "cuda" (needs a GPU and numba-cuda)
    processes: int = 0       # CPU step processes, each on whole BatchNorm groups (0: min(cores, batch / bn_group))


# The paper's SSD300 recipe (Liu et al. 2016 sec. 3 / ssd.pytorch config.py "voc"): 120k
# iterations of batch 32, lr 1e-3 dropped x0.1 at 80k and 100k (the VOC07+12 schedule), the
# whole augmentation with zoom-out 4x, matching at 0.5. Without ImageNet VGG16 weights (none
# here), expect to need the warm-up.
RECIPES = {
    "tiny-voc": {},  # TrainConfig's defaults (docs/ch07-training.md explains each number)
    "paper": dict(model="ssd300", iters=120_000, batch_size=32, lr=1e-3, schedule="step",
                  milestones="80000,100000", warmup_iters=500, augment="ssd", light_first=0.0,
                  max_expand=4.0, iou_threshold=0.5, eval_every=5000, eval_images=500, out="runs/voc"),
}

CHOICES = {"recipe": tuple(RECIPES), "device": ("cpu", "cuda"), "schedule": ("cosine", "step"),
           "optimizer": ("sgd", "adam"), "model": tuple(MODELS), "augment": tuple(AUGMENTATIONS),
           "matching": ("per-prediction", "bipartite"), "conf_loss": ("hnm", "all", "focal"),
           "crop": CROP_RULES, "clip_priors": CLIP_MODES}

# The choices implementations disagree on (docs/switches.md): fields that change the maths of a
# run without changing its length or its optimiser. A resumed run must keep them.
SWITCHES = ("matching", "conf_loss", "crop", "clip_priors", "aspect_ratios", "source_maps")


def default_recipe(cfg_or_given):
    """The recipe a run gets without ``--recipe``: "tiny-voc", whatever the dataset (the
    paper's SSD300 recipe takes days on a CPU, so it runs only when asked for)."""
    return "tiny-voc"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a bad flag is bad input: one line, exit status 2 (minissd.cli)
        raise ConfigError(message)


def parse_args(argv=None):
    """Flags -> a checked TrainConfig: flag > recipe > default (see the module docstring).

    Raises ConfigError naming the flag for an unknown flag, a value of the wrong type or
    outside its range (``check``).
    """
    parser = _Parser(prog="python -m minissd.train", argument_default=argparse.SUPPRESS,
                     description="Train SSD (python -m minissd.train --tiny-voc).")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", help=f"(default: {f.default})")
        else:
            parser.add_argument(flag, type=type(f.default), choices=CHOICES.get(f.name),
                                help=f"(default: {f.default})")
    given = vars(parser.parse_args(argv))
    recipe = given.get("recipe") or default_recipe(given)
    cfg = TrainConfig(**{**RECIPES[recipe], **given, "recipe": recipe})
    spec = dataset_spec(cfg.data, cfg.tiny_voc, cfg.voc_root)  # ConfigError for two dataset flags
    if "out" not in given and "out" not in RECIPES[recipe] and spec != "tiny-voc":
        cfg.out = default_out(spec)  # never the tiny-voc run's folder for another dataset
    check(cfg)
    return cfg


def default_out(spec):
    """runs/<the dataset's folder or file name>, e.g. voc:data/VOC2007 -> runs/VOC2007."""
    path = spec.partition(":")[2] if ":" in spec else spec
    path = path.split(",")[0].replace("{split}", "")
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0].strip("_-.") or "data"
    return os.path.join("runs", name)


def _flag(name):
    return "--" + name.replace("_", "-")


def check(cfg):
    """Raise ConfigError naming the flag for the first value of ``cfg`` that cannot train."""

    def need(ok, name, why):
        if not ok:
            raise ConfigError(f"{_flag(name)} {getattr(cfg, name)!r}: {why}")

    for name in ("lr", "momentum", "weight_decay", "grad_clip", "iou_threshold", "neg_pos_ratio",
                 "alpha", "light_first", "max_expand", "epochs"):
        need(math.isfinite(getattr(cfg, name)), name, "must be a finite number")
    need(cfg.lr > 0, "lr", "the learning rate must be > 0")
    need(0 <= cfg.momentum < 1, "momentum", "must be in [0, 1)")
    need(cfg.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(cfg.grad_clip >= 0, "grad_clip", "must be >= 0 (0 turns clipping off)")
    need(0 < cfg.iou_threshold <= 1, "iou_threshold", "must be in (0, 1]")
    need(cfg.neg_pos_ratio > 0, "neg_pos_ratio", "must be > 0")
    need(cfg.alpha >= 0, "alpha", "must be >= 0")
    need(0 <= cfg.light_first <= 1, "light_first", "a fraction of the epochs: must be in [0, 1]")
    need(cfg.max_expand >= 1, "max_expand", "the zoom-out canvas is at least the image: must be >= 1")
    need(cfg.epochs >= 0, "epochs", "must be >= 0 (0: use --iters)")
    need(cfg.iters >= 1 or cfg.epochs > 0, "iters", "must be >= 1 (or give --epochs)")
    need(cfg.warmup_iters >= 0, "warmup_iters", "must be >= 0")
    need(cfg.log_every >= 1, "log_every", "must be >= 1")
    need(cfg.eval_every >= 0, "eval_every", "must be >= 0 (0: only at the end)")
    need(cfg.eval_images >= 1, "eval_images", "must be >= 1")
    need(cfg.loader_threads >= 0, "loader_threads", "must be >= 0 (0: in the training thread)")
    need(cfg.loader_processes >= 0, "loader_processes", "must be >= 0 (0: threads)")
    need(cfg.decode_cache >= 0, "decode_cache", "must be >= 0 (0: off)")
    need(cfg.processes >= 0, "processes", "must be >= 0 (0: as many as the cores and the batch allow)")
    need(cfg.input_size >= 0, "input_size", "must be > 0 (or 0: the model's own)")
    need(cfg.bn_group >= 2, "bn_group", "BatchNorm needs at least 2 images per group")
    need(cfg.batch_size >= cfg.bn_group, "batch_size",
         f"smaller than --bn-group {cfg.bn_group} (images per BatchNorm group); lower --bn-group")
    need(cfg.batch_size % cfg.bn_group == 0, "batch_size",
         f"not a multiple of --bn-group {cfg.bn_group} (BatchNorm normalises whole groups of images)")
    groups = cfg.batch_size // cfg.bn_group
    need(cfg.processes <= groups, "processes",
         f"a batch of {cfg.batch_size} holds {groups} BatchNorm group(s) of {cfg.bn_group}: at most {groups}")
    for name, choices in CHOICES.items():  # argparse checks the flags; this, configs built in code
        need(getattr(cfg, name) in choices + (("",) if name == "recipe" else ()), name,
             f"choose one of {', '.join(choices)}")
    if cfg.device == "cuda":  # the GPU step has one matching rule and one loss (minissd/cuda/step.py)
        need(cfg.matching == "per-prediction", "matching",
             "the GPU step matches per prediction only (minissd/cuda/matching.py); use --device cpu")
        need(cfg.conf_loss == "hnm", "conf_loss",
             "the GPU step has only the softmax loss with hard negative mining (minissd/cuda/loss.py); "
             "use --device cpu")
    milestones(cfg)  # parses, or says what is wrong
    model_layout(cfg)


def check_device(cfg):
    """ConfigError when ``--device cuda`` cannot run here (no GPU, no numba-cuda, the simulator)."""
    if cfg.device != "cuda":
        return
    from . import cuda
    try:
        cuda.require()  # a clear error without a GPU or without numba-cuda
    except RuntimeError as err:
        raise ConfigError(f"--device cuda: {err}") from None
    if cfg.optimizer != "sgd":
        raise ConfigError(f"--device cuda: only SGD has a GPU twin; --optimizer {cfg.optimizer} runs on the CPU")
    if cuda.simulating() and os.environ.get("MINISSD_ALLOW_CUDASIM") != "1":
        raise ConfigError("--device cuda: NUMBA_ENABLE_CUDASIM=1: numba's CUDA simulator runs every GPU "
                          "thread in Python, far too slow to train on (unset it on a machine with a GPU; "
                          "the tests set MINISSD_ALLOW_CUDASIM=1 to train a toy model on it)")


def milestones(cfg):
    """The step schedule's milestones: a sorted tuple of positive ints ("" -> ())."""
    try:
        values = tuple(int(m) for m in cfg.milestones.split(",") if m.strip())
    except ValueError:
        raise ConfigError(f"--milestones {cfg.milestones!r}: expected comma-separated iterations, "
                          f"e.g. 80000,100000") from None
    if any(m <= 0 for m in values) or list(values) != sorted(set(values)):
        raise ConfigError(f"--milestones {cfg.milestones!r}: iterations must be positive and increasing")
    return values


def model_layout(cfg):
    """--aspect-ratios, --source-maps, --clip-priors as ``model_config`` keywords (a dict; empty
    at the defaults). ConfigError naming the flag for a value the model cannot take: a wrong
    count of maps, a ratio that is not a number >= 1, a repeated ratio or map, an index out of
    range. The ratios and indices refer to the model's own maps (tiny at 128 px: 5, finest first).
    """
    layout = {}
    if cfg.clip_priors != TrainConfig.clip_priors:
        layout["clip"] = cfg.clip_priors
    if not (cfg.aspect_ratios.strip() or cfg.source_maps.strip()):
        return layout
    try:
        n_maps = len(model_config(cfg.model, cfg.input_size or None).tables)
    except ConfigError as err:
        raise ConfigError(f"--model {cfg.model} --input-size {cfg.input_size}: {err}") from None
    if cfg.aspect_ratios.strip():
        layout["aspect_ratios"] = parse_aspect_ratios(cfg.aspect_ratios, n_maps, f"{cfg.model} has {n_maps} maps")
    if cfg.source_maps.strip():
        layout["source_maps"] = parse_source_maps(cfg.source_maps, n_maps, f"{cfg.model} has {n_maps} maps")
    return layout


def parse_aspect_ratios(text, n_maps, why=""):
    """"2;2,3;2,3;2;2" -> ((2,), (2, 3), (2, 3), (2,), (2,)): one tuple of ratios per map.

    - maps are separated by ";", one map's ratios by ","; each ratio a >= 1 also gives 1/a
      (so "2" means the boxes 2:1 and 1:2); 1 adds nothing (the two squares are always
      there, as Caffe's PriorBox skips a ratio of 1), so "1" is the squares only
    - one map's list alone ("2,3", "1") applies to every map; otherwise exactly ``n_maps``
    Raises ConfigError naming --aspect-ratios.
    """
    def bad(what):
        return ConfigError(f"--aspect-ratios {text!r}: {what}")

    maps = [m.strip() for m in text.split(";")]
    if len(maps) not in (1, n_maps):
        raise bad(f"expected one list of ratios for every map or {n_maps} lists separated by ';' "
                  f"({why}), got {len(maps)}")
    out = []
    for k, m in enumerate(maps):
        try:
            values = [float(v) for v in m.split(",")]
        except ValueError:
            raise bad(f"map {k}: expected numbers separated by ',' (e.g. 2,3), got {m!r}") from None
        if not all(math.isfinite(v) and v >= 1 for v in values):
            raise bad(f"map {k}: ratios must be numbers >= 1 (a ratio a gives the boxes a:1 and 1:a), got {m!r}")
        ratios = [int(v) if v.is_integer() else v for v in values if v != 1]
        if len(set(ratios)) != len(ratios):
            raise bad(f"map {k}: a ratio is repeated in {m!r}")
        out.append(tuple(ratios))
    return tuple(out) * n_maps if len(out) == 1 else tuple(out)


def parse_source_maps(text, n_maps, why=""):
    """"0,1,2" -> (0, 1, 2): the indices of the maps that carry heads, increasing, each once,
    from 0 (the finest map) to ``n_maps`` - 1. Raises ConfigError naming --source-maps."""
    try:
        maps = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--source-maps {text!r}: expected map indices separated by ',' (e.g. 0,1,2)") from None
    if any(not 0 <= m < n_maps for m in maps):
        raise ConfigError(f"--source-maps {text!r}: indices go from 0 to {n_maps - 1} ({why})")
    if len(set(maps)) != len(maps):
        raise ConfigError(f"--source-maps {text!r}: a map is named twice")
    if list(maps) != sorted(maps):
        raise ConfigError(f"--source-maps {text!r}: give the maps in increasing order (finest first)")
    return maps


def check_resume(cfg, saved):
    """ConfigError when a run resumed from a checkpoint changes a switch (``SWITCHES``).

    - saved: the checkpoint's config dict; a switch it lacks (saved before the switch
      existed) counts as its default
    """
    for name in SWITCHES:
        before = saved.get(name, getattr(TrainConfig, name))
        if before != getattr(cfg, name):
            raise ConfigError(f"{_flag(name)} {getattr(cfg, name)!r}: the checkpoint was trained with "
                              f"{_flag(name)} {before!r}; a resumed run keeps it (give the same flag, or "
                              f"another --out)")


def check_against_data(cfg, train_size):
    """ConfigError when the training set cannot fill one batch (every batch is whole)."""
    if cfg.batch_size > train_size:
        raise ConfigError(f"--batch-size {cfg.batch_size}: the training set has only {train_size} "
                          f"image(s); choose a batch size of at most {train_size}")


def total_iters(cfg, train_size):
    """The run's length in iterations: ``--iters``, or ``--epochs`` of the training set."""
    if cfg.epochs > 0:
        return max(1, round(cfg.epochs * train_size / cfg.batch_size))
    return cfg.iters


def cores():
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def step_processes(cfg):
    """How many processes run the CPU step: ``--processes``, or min(cores, BatchNorm groups)."""
    if cfg.device == "cuda":
        return 1
    return cfg.processes or max(1, min(cores(), cfg.batch_size // cfg.bn_group))


# Speed of the CPU step for the time estimate: the default tiny-voc run does 3600 x 16 images
# of 142 M forward multiply-adds in ~13 min on 2 cores (docs/training-results.md, 2026), i.e.
# about 5e9 forward multiply-adds per second per core, evaluation included.
MACS_PER_CORE_SECOND = 5e9


def estimate_seconds(cfg, iters, forward_macs, processes):
    """A rough wall time for ``iters`` iterations on the CPU (None on the GPU: not measured)."""
    if cfg.device == "cuda" or not forward_macs:
        return None
    return iters * cfg.batch_size * forward_macs / (MACS_PER_CORE_SECOND * max(1, processes))


def format_duration(seconds):
    """Seconds in the unit a person reads: "40 s", "14 min", "3.2 h", "138 days"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def describe(cfg):
    """The config as a JSON-able dict (saved in checkpoints and metrics.json)."""
    return asdict(cfg)
