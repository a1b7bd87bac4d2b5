"""The arms of ``python -m minissd.ablate``: which runs it trains, and the tables they make.

An arm is one training run: the budget's ``TrainConfig`` with a few fields changed
(``Arm.changes``, field name -> value, exactly as the flags of ``python -m minissd.train``
would set them). A table is a list of arms against one reference arm; an arm shared by two
tables (the reference of one is a row of another) is trained once.

The three tables:

1. **design choices**, after the paper's Table 2 (Liu et al. 2016, arXiv:1512.02325 v5):
   the full detector (the paper's boxes: {1/3, 3} on the middle maps), then without the
   extended augmentation (no zoom-out, no IoU crops: colour and flip only), without the
   {1/3, 3} boxes (tiny-voc's own default), also without {1/2, 2} (squares only);
2. **source maps**, after the paper's Table 3: the full detector predicting from fewer maps,
   the coarsest removed first, down to the second map alone (the stride-16 map, tiny's
   counterpart of SSD300's conv7, the paper's last row);
3. **switches**: the choices SSD implementations disagree on, each changed alone from the
   tiny-voc default (matching rule, IoU-crop acceptance rule, confidence loss, prior clipping),
   and the augmentation ablation once more on tiny-voc's own default boxes.

``PAPER`` holds the paper's VOC2007-test mAP for the arms that have a counterpart.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arm:
    """One run of the ablation.

    - name: its folder under ``--out`` and its key in ablation.json (letters, digits, "-")
    - label: what a reader sees in the tables and the chart
    - changes: TrainConfig field -> value, applied over the budget's config
    """

    name: str
    label: str
    changes: dict = field(default_factory=dict)


# Aspect ratios per map, in the flag's syntax (minissd.config: maps separated by ";", each
# map's ratios by ","; "1" = squares only). The paper's SSD300 gives {2, 3} to its middle maps
# and {2} to the first and last two (ssd.pytorch config.py "voc"); on tiny's five maps that
# rule reads 2 | 2,3 | 2,3 | 2 | 2.
PAPER_RATIOS = "2;2,3;2,3;2;2"
TINY_RATIOS = "2;2;2;2;2"    # tiny-voc's default: {1/2, 2} everywhere
SQUARES = "1;1;1;1;1"        # only the two squares per location

FULL = {"aspect_ratios": PAPER_RATIOS}  # Table 2's and Table 3's reference

ARMS = [
    # ---- 1. design choices (the paper's Table 2) ----------------------------------------------
    Arm("full", "full: extended augmentation, {1/2,2} and {1/3,3} boxes", dict(FULL)),
    Arm("no-extended-aug", "without the extended augmentation (colour + flip only)",
        {**FULL, "augment": "light"}),
    Arm("default", "without {1/3,3} boxes (tiny-voc's default)", {}),
    Arm("squares-only", "also without {1/2,2} boxes (squares only)", {"aspect_ratios": SQUARES}),
    # ---- 2. source maps (the paper's Table 3): the coarsest maps removed first ---------------
    Arm("maps-0123", "maps 16, 8, 4, 2 (no 1x1)", {**FULL, "source_maps": "0,1,2,3"}),
    Arm("maps-012", "maps 16, 8, 4", {**FULL, "source_maps": "0,1,2"}),
    Arm("maps-01", "maps 16, 8", {**FULL, "source_maps": "0,1"}),
    Arm("maps-1", "map 8 alone (the paper's conv7 alone)", {**FULL, "source_maps": "1"}),
    # ---- 3. the switches implementations disagree on, one at a time ---------------------------
    Arm("bipartite", "matching: greedy bipartite first (caffe)", {"matching": "bipartite"}),
    Arm("crop-best", "IoU crop accepted when the best box meets the IoU (torchvision)", {"crop": "best"}),
    Arm("crop-all", "IoU crop accepted when every box meets the IoU", {"crop": "all"}),
    Arm("crop-never-reject", "IoU crop never rejected (ssd.pytorch's bug)", {"crop": "never-reject"}),
    Arm("conf-all", "softmax over all priors, no mining (d2l)", {"conf_loss": "all"}),
    Arm("conf-focal", "focal loss, no mining (RetinaNet)", {"conf_loss": "focal"}),
    Arm("clip-none", "priors not clipped to the image", {"clip_priors": "none"}),
    Arm("default-light", "without the extended augmentation, tiny-voc's boxes", {"augment": "light"}),
]
ARM_BY_NAME = {arm.name: arm for arm in ARMS}


@dataclass(frozen=True)
class Table:
    """One table of the report: ``rows`` (arm names, the reference first) compared with ``reference``."""

    title: str
    reference: str
    rows: tuple
    paper_table: str = ""  # where the paper's numbers come from ("" : no counterpart)


TABLES = (
    Table("Design choices (the paper's Table 2)", "full",
          ("full", "no-extended-aug", "default", "squares-only"), "Table 2"),
    Table("Source maps (the paper's Table 3)", "full",
          ("full", "maps-0123", "maps-012", "maps-01", "maps-1"), "Table 3"),
    Table("Switches implementations disagree on (each alone, from the default)", "default",
          ("default", "bipartite", "crop-best", "crop-all", "crop-never-reject", "conf-all",
           "conf-focal", "clip-none", "default-light")),
)

# The paper's SSD300 mAP (%) on VOC2007 test, trained on VOC07+12 (Liu et al. 2016, v5):
# Table 2: all choices 74.3; without the extended augmentation 65.5; without {1/3, 3} 73.7;
# also without {1/2, 2} 71.6. Table 3 (which maps predict; the coarsest removed first, the
# box scales re-tiled so the count stays near 8732): six maps 74.3, five 74.6, four 73.8,
# three 70.7, two (conv4_3, conv7) 64.2, conv7 alone 62.4. Tiny's maps are paired with the
# paper's by what is kept: its k finest maps with the paper's k finest, map 8 with conv7.
PAPER = {"full": 74.3, "no-extended-aug": 65.5, "default": 73.7, "squares-only": 71.6,
         "maps-0123": 73.8, "maps-012": 70.7, "maps-01": 64.2, "maps-1": 62.4}
