"""Which details of SSD matter? ``python -m minissd.ablate --tiny-voc [--quick] [--out DIR]``.

Trains every arm of three tables (minissd/ablate_arms.py) on the same data with the same
seed and the same budget, evaluates each on the whole validation split (VOC07 11-point mAP
at IoU 0.5, ``minissd.evaluate``), and writes into ``--out``:

- ``ablation.md``: the three tables (mAP, the difference to the table's reference, the
  paper's number where the paper has the same ablation), as Markdown;
- ``ablation.json``: the same, with every arm's changed fields, default-box count, timing;
- ``ablation.png``: one bar chart per table, tiny-voc's difference to the reference next to
  the paper's;
- ``<arm>/``: each arm's own training run (checkpoint.npz, metrics.json, curves.png, ...).

Each arm is ``minissd.train.train`` on the budget's ``TrainConfig`` with the arm's fields
changed (``arm_config``). Resume-safe: an arm whose folder already holds the metrics of the
same config is not trained again, one with only a checkpoint continues from it (``--resume``),
and a folder holding a run of another config is refused (a ConfigError naming it), never
overwritten. So an interrupted ablation continues with the same command.

Budgets (``BUDGETS``): the default trains each arm 1000 iterations of 16 images (3-4 minutes
an arm on a 2-core AMD EPYC, 60 minutes for all 16, measured 2026-12-03); ``--quick`` 400,
about 1.5-2 minutes an arm (half an hour for all 16, a few minutes for two or three chosen with
``--arms``), which ranks only the large effects. One seed: the spread between seeds of the
same run is about 1.5 mAP points at the full 3600-iteration budget (docs/training-results.md),
more at these budgets, so read small differences as noise (docs/ch11-ablations.md).
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

from . import cli, config, train
from .ablate_arms import ARM_BY_NAME, ARMS, PAPER, TABLES
from .errors import ConfigError

# The budget's TrainConfig fields, over the tiny-voc recipe. No periodic validation: each arm
# is evaluated once, at the end, on the whole val split.
BUDGETS = {
    "default": dict(iters=1000, eval_every=0, log_every=10),
    "quick": dict(iters=400, warmup_iters=50, eval_every=0, log_every=10),
}
# Fields that never change a result (config.py): two runs that differ only in these are the same run.
SPEED_FIELDS = ("device", "processes", "loader_threads", "loader_processes", "decode_cache",
                "resume", "out", "data_dir")


def base_config(data="tiny-voc", data_dir="", budget="default", iters=0, seed=0):
    """The TrainConfig every arm starts from: the tiny-voc recipe with the budget's fields."""
    fields = dict(BUDGETS[budget], data=data, data_dir=data_dir, seed=seed)
    if iters:
        fields["iters"] = iters
    return dataclasses.replace(config.TrainConfig(recipe="tiny-voc"), **fields)


def missing_fields(arm):
    """The fields ``arm`` changes that TrainConfig does not have (a switch not built yet)."""
    return sorted(set(arm.changes) - {f.name for f in dataclasses.fields(config.TrainConfig)})


def arm_config(base, arm, out):
    """The TrainConfig of ``arm``: ``base`` with the arm's changes, its run in ``out/<arm.name>``.

    Raises ConfigError naming the arm when a change is not a TrainConfig field or is refused
    by ``config.check``.
    """
    unknown = missing_fields(arm)
    if unknown:
        raise ConfigError(f"arm {arm.name}: {', '.join(unknown)} is not a TrainConfig field "
                          f"(is the switch built? minissd/config.py)")
    cfg = dataclasses.replace(base, **arm.changes, out=os.path.join(out, arm.name), resume=False)
    try:
        config.check(cfg)
    except ConfigError as err:
        raise ConfigError(f"arm {arm.name}: {err}") from None
    return cfg


def same_run(a, b):
    """True when two config dicts describe the same maths (speed fields and paths aside). A
    field one of them lacks (written before that field existed) counts as its default."""
    defaults = config.describe(config.TrainConfig())
    keys = (set(a) | set(b)) - set(SPEED_FIELDS)
    return all(a.get(k, defaults.get(k)) == b.get(k, defaults.get(k)) for k in keys)


def arm_state(cfg):
    """What ``cfg.out`` holds: "done" (metrics of this config), "partial" (a checkpoint of
    this config: resume it) or "new" (nothing yet). ConfigError for a run of another config."""
    metrics_path = os.path.join(cfg.out, "metrics.json")
    ckpt_path = os.path.join(cfg.out, "checkpoint.npz")
    mine = config.describe(cfg)
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            theirs = json.load(f).get("config", {})
        if same_run(theirs, mine):
            return "done"
        raise ConfigError(f"{cfg.out}: holds a finished run of another config "
                          f"({_difference(theirs, mine)}); choose another --out or remove that folder")
    if os.path.isfile(ckpt_path):
        from .checkpoint import read_meta
        theirs = read_meta(ckpt_path).get("config") or {}
        if same_run(theirs, mine):
            return "partial"
        raise ConfigError(f"{cfg.out}: holds a checkpoint of another config "
                          f"({_difference(theirs, mine)}); choose another --out or remove that folder")
    return "new"


def _difference(theirs, mine):
    keys = sorted(k for k in set(theirs) | set(mine)
                  if k not in SPEED_FIELDS and theirs.get(k) != mine.get(k))
    return ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in keys[:3])


# ---- the time it may take ------------------------------------------------------------------

def arm_shape(cfg, num_classes):
    """(default boxes, forward multiply-adds per image) of the network ``cfg`` trains."""
    from .model.summary import layer_table
    model = train.make_model(cfg, _Classes(num_classes))
    return model.num_priors, layer_table(model.config, num_classes)[-1]["macs"]


class _Classes:
    """Stands in for a dataset where ``make_model`` only needs the class count."""

    def __init__(self, n):
        self.classes = tuple(f"class{i}" for i in range(n))


def estimate(cfgs, num_classes=6):
    """Seconds the arms in ``cfgs`` may take to train, each by ``config.estimate_seconds``."""
    total = 0.0
    for cfg in cfgs:
        _, macs = arm_shape(cfg, num_classes)
        total += config.estimate_seconds(cfg, cfg.iters, macs, config.step_processes(cfg)) or 0.0
    return total


# ---- running the arms ----------------------------------------------------------------------

def run_arms(base, arms, out, stop):
    """Train and evaluate each arm (skipping finished ones); returns (results, status).

    - results: arm name -> dict (label, changes, mAP, mAP_area, num_priors, iterations,
      wall_seconds, per_class_AP) for every arm finished, now or before
    - status: 0, or the first non-zero exit status of ``train.train`` (the ablation stops
      there: Ctrl-C, SIGTERM, a blown-up run); the arms finished so far are in results
    """
    cfgs = [arm_config(base, arm, out) for arm in arms]  # every arm checked before any runs
    states = [arm_state(cfg) for cfg in cfgs]
    todo = [cfg for cfg, state in zip(cfgs, states) if state != "done"]
    print(f"ablation: {len(arms)} arms ({len(arms) - len(todo)} already done in {out}), "
          f"{base.iters} iterations of {base.batch_size} each"
          + (f", seed {base.seed}; about {config.format_duration(estimate(todo))} of training "
             f"(at a quiet 2-core laptop's speed; evaluation and start-up extra)" if todo else ""))
    results = {}
    for k, (arm, cfg, state) in enumerate(zip(arms, cfgs, states), 1):
        where = f"[{k}/{len(arms)}] {arm.name}: {arm.label}"
        if state == "done":
            print(f"{where}: done before, reusing {cfg.out}/metrics.json")
        else:
            print(f"\n{where}" + (f" (continuing {cfg.out}/checkpoint.npz)" if state == "partial" else ""))
            t = time.perf_counter()
            status = train.train(dataclasses.replace(cfg, resume=state == "partial"), stop)
            if status != 0:
                print(f"ablation stopped at arm {arm.name} (exit status {status}); the same command "
                      f"continues from there")
                return results, status
            print(f"{where}: {time.perf_counter() - t:.0f} s")
        results[arm.name] = arm_result(arm, cfg)
    return results, 0


def arm_result(arm, cfg):
    """An arm's row of ablation.json, from its metrics.json."""
    with open(os.path.join(cfg.out, "metrics.json")) as f:
        metrics = json.load(f)
    priors = metrics.get("model_config", {}).get("priors", {})
    sides, ratios = priors.get("feature_maps", ()), priors.get("aspect_ratios", ())
    return {"label": arm.label, "changes": dict(arm.changes), "mAP": metrics["mAP"],
            "mAP_area": metrics.get("mAP_area"),
            "num_priors": sum(f * f * (2 + 2 * len(a)) for f, a in zip(sides, ratios)),
            "feature_maps": list(sides), "iterations": metrics["iterations"],
            "wall_seconds": metrics.get("wall_seconds"),
            "per_class_AP": {k: (None if v != v else v) for k, v in (metrics.get("per_class_AP") or {}).items()}}
            # (NaN: a class without val objects; None keeps ablation.json standard JSON)


# ---- the report ----------------------------------------------------------------------------

def table_rows(table, results):
    """[(name, result, delta in mAP points vs the reference or None, paper mAP or None,
    paper delta or None)] for the rows of ``table`` that have a result."""
    ref = results.get(table.reference)
    paper_ref = PAPER.get(table.reference) if table.paper_table else None
    rows = []
    for name in table.rows:
        if name not in results:
            continue
        r = results[name]
        delta = 100 * (r["mAP"] - ref["mAP"]) if ref else None
        paper = PAPER.get(name) if table.paper_table else None
        paper_delta = paper - paper_ref if paper is not None and paper_ref is not None else None
        rows.append((name, r, delta, paper, paper_delta))
    return rows


def _signed(x):
    return "" if x is None else f"{x:+.1f}"


def format_markdown(report):
    """The report (``make_report``'s dict) as Markdown: a heading, the conditions, three tables."""
    b = report["budget"]
    lines = [f"# Ablations on {b['data']}", "",
             f"Budget `{b['name']}`: {b['iters']} iterations of {b['batch_size']} images per arm, input "
             f"{b['input_size']} px, seed {b['seed']}; mAP: VOC07 11-point at IoU 0.5 on the whole val split. "
             f"Measured {report['date']} on {report['machine']}. One seed: small differences are noise.", ""]
    for table in TABLES:
        rows = table_rows(table, report["arms"])
        if not rows:
            continue
        lines += [f"## {table.title}", ""]
        head = "| arm | what changes | default boxes | mAP | vs reference |"
        rule = "|---|---|---:|---:|---:|"
        if table.paper_table:
            head += f" paper ({table.paper_table}, VOC07) | paper vs reference |"
            rule += "---:|---:|"
        lines += [head, rule]
        for name, r, delta, paper, paper_delta in rows:
            changes = ", ".join(f"`{k}={v}`" for k, v in r["changes"].items()) or "(the tiny-voc defaults)"
            mark = " (reference)" if name == table.reference else ""
            line = (f"| {r['label']}{mark} | {changes} | {r['num_priors']} | {r['mAP']:.3f} | "
                    f"{'' if name == table.reference else _signed(delta)} |")
            if table.paper_table:
                line += f" {'' if paper is None else f'{paper:.1f}'} | " \
                        f"{'' if name == table.reference else _signed(paper_delta)} |"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def plot_report(report):
    """One horizontal bar panel per table: tiny-voc's mAP difference to the table's reference
    (points), with the paper's difference beside it where there is one. Returns the Figure."""
    from . import viz  # noqa: F401 - picks a headless backend where there is no display
    import matplotlib.pyplot as plt

    tables = [t for t in TABLES if len(table_rows(t, report["arms"])) > 1]
    fig, axes = plt.subplots(len(tables) or 1, 1, figsize=(8, 1.2 + 0.45 * sum(len(t.rows) for t in tables)),
                             squeeze=False)
    for ax, table in zip(axes[:, 0], tables):
        rows = [row for row in table_rows(table, report["arms"]) if row[0] != table.reference]
        y = range(len(rows))
        ax.barh([i + 0.2 for i in y], [row[2] for row in rows], height=0.4, color="tab:blue",
                label="tiny-voc (this run)")
        if table.paper_table:
            ax.barh([i - 0.2 for i in y], [row[4] or 0 for row in rows], height=0.4, color="tab:gray",
                    label=f"paper ({table.paper_table}, VOC07)")
        ax.set_yticks(list(y), [row[0] for row in rows])
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.8)
        ref = report["arms"][table.reference]
        ax.set_title(f"{table.title}: vs {table.reference} (mAP {ref['mAP']:.3f})", fontsize=9)
        ax.set_xlabel("mAP difference to the reference (points)")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def make_report(base, results, budget):
    """The dict written to ablation.json: the budget, where it ran, every arm, the tables."""
    return {
        "budget": {"name": budget, "data": base.data or "tiny-voc", "iters": base.iters,
                   "batch_size": base.batch_size, "input_size": base.input_size or 128, "seed": base.seed},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {config.cores()} cores",
        "arms": results,
        "tables": [{"title": t.title, "reference": t.reference, "rows": list(t.rows),
                    "paper_table": t.paper_table} for t in TABLES],
        "paper": PAPER,
    }


def write_report(out, report):
    """ablation.json, ablation.md and ablation.png in ``out``; returns their paths."""
    from .viz import save_figure
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"ablation.{ext}") for ext in ("json", "md", "png")]
    with open(paths[0], "w") as f:
        json.dump(report, f, indent=1)
    with open(paths[1], "w") as f:
        f.write(format_markdown(report))
    save_figure(plot_report(report), paths[2])
    return paths


# ---- the command line ----------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a bad flag: one line, exit status 2 (minissd.cli)
        raise ConfigError(message)


def parse_args(argv=None):
    parser = _Parser(prog="python -m minissd.ablate",
                     description="Train the ablation arms (the paper's Tables 2 and 3, and the switches) "
                                 "with one seed and budget; write ablation.md/.json/.png.")
    parser.add_argument("--tiny-voc", action="store_true", help="train on tiny-voc (the default)")
    parser.add_argument("--data", default="", help="another dataset spec (voc:PATH, coco:..., yolo:...)")
    parser.add_argument("--data-dir", default="", help="where tiny-voc lives (default $MINISSD_DATA)")
    parser.add_argument("--quick", action="store_true", help=f"the quick budget: {BUDGETS['quick']}")
    parser.add_argument("--iters", type=int, default=0, help="iterations per arm (default: the budget's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="default runs/ablation (runs/ablation-quick with --quick)")
    parser.add_argument("--arms", default="", help="comma-separated arm names (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="print the arms and exit")
    args = parser.parse_args(argv)
    if args.iters < 0:
        raise ConfigError(f"--iters {args.iters}: must be >= 1 (or 0: the budget's)")
    if args.tiny_voc and args.data not in ("", "tiny-voc"):
        raise ConfigError(f"--tiny-voc and --data {args.data}: give one dataset")
    return args


def select_arms(names):
    """The arms named in a comma-separated string ("" : all); ConfigError for an unknown name."""
    if not names.strip():
        return list(ARMS)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in ARM_BY_NAME]
    if unknown:
        raise ConfigError(f"--arms: unknown arm {', '.join(unknown)}; choose from {', '.join(ARM_BY_NAME)}")
    return [ARM_BY_NAME[n] for n in dict.fromkeys(chosen)]


def main(argv=None):
    """``python -m minissd.ablate``: 0 when every arm finished and the report is written."""
    args = parse_args(argv)
    arms = select_arms(args.arms)
    if args.list:
        for arm in ARMS:
            print(f"{arm.name:18s} {arm.label}  {arm.changes or ''}"
                  + (f"  [not built: {', '.join(missing_fields(arm))}]" if missing_fields(arm) else ""))
        return 0
    if not args.arms:  # all arms: leave out those whose switch this checkout lacks, and say so
        for arm in arms:
            if missing_fields(arm):
                print(f"skipping arm {arm.name}: TrainConfig has no {', '.join(missing_fields(arm))}")
        arms = [arm for arm in arms if not missing_fields(arm)]
    budget = "quick" if args.quick else "default"
    out = args.out or ("runs/ablation-quick" if args.quick else "runs/ablation")
    base = base_config(args.data or "tiny-voc", args.data_dir, budget, args.iters, args.seed)
    with train.StopRequest() as stop:
        try:
            results, status = run_arms(base, arms, out, stop)
        except KeyboardInterrupt:
            print(f"\n{stop.message}", file=sys.stderr)
            return 130
    if status != 0:
        return status
    paths = write_report(out, make_report(base, results, budget))
    print(f"\n{format_markdown(make_report(base, results, budget))}\nwrote {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
