"""python -m minissd.ablate: each arm is the config it says (default boxes counted by hand),
the report is computed right from given results, an interrupted ablation continues where it
stopped, and a tiny end-to-end run writes the three outputs."""

import dataclasses
import json
import os

import pytest

from minissd import ablate, cli, config
from minissd.ablate_arms import ARM_BY_NAME, ARMS, PAPER, TABLES
from minissd.data import make_tiny_voc
from minissd.errors import ConfigError

# tiny's maps at 128 px: 16, 8, 4, 2, 1 -> 256 + 64 + 16 + 4 + 1 = 341 locations
CELLS = (256, 64, 16, 4, 1)


def priors_of(name):
    cfg = ablate.arm_config(ablate.base_config(), ARM_BY_NAME[name], "out")
    return ablate.arm_shape(cfg, 6)[0]


def test_every_arm_is_the_base_config_with_its_changes_only():
    base = ablate.base_config(budget="quick", seed=3)
    for arm in ARMS:
        cfg = ablate.arm_config(base, arm, "runs/x")
        assert cfg.out == os.path.join("runs/x", arm.name)
        changed = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)}
        assert changed - {"out"} == {k for k, v in arm.changes.items() if getattr(base, k) != v}, arm.name
        assert cfg.seed == 3 and cfg.iters == base.iters  # the same seed and budget for every arm


def test_the_budgets_differ_only_in_length_and_input():
    quick, default = ablate.base_config(budget="quick"), ablate.base_config()
    assert default.iters == 1000 and quick.iters < default.iters
    assert ablate.base_config(iters=7).iters == 7
    assert default.eval_every == 0  # each arm is evaluated once, at the end, on the whole val split


def test_default_box_counts_worked_by_hand():
    # tiny-voc's default: {1, 1', 2, 1/2} = 4 boxes per location -> 4 * 341
    assert priors_of("default") == 4 * 341 == 1364
    # the paper's rule adds {3, 1/3} on maps 2 and 3: 6 boxes at 64 + 16 locations
    assert priors_of("full") == 4 * 256 + 6 * 64 + 6 * 16 + 4 * 4 + 4 * 1 == 1524
    # without {1/3, 3}: 160 fewer, the count the paper's Table 2 column 3 loses
    assert priors_of("full") - priors_of("default") == 2 * (64 + 16)
    # squares only: 2 per location
    assert priors_of("squares-only") == 2 * 341
    # source maps: the finest kept; the paper's ratios still on maps 2 and 3
    assert priors_of("maps-0123") == 1524 - 4 * 1
    assert priors_of("maps-01") == 4 * 256 + 6 * 64


def test_the_network_loses_its_heads_with_its_maps():
    full = ablate.arm_config(ablate.base_config(), ARM_BY_NAME["full"], "o")
    alone = ablate.arm_config(ablate.base_config(), ARM_BY_NAME["maps-1"], "o")
    assert ablate.arm_shape(alone, 6)[1] < ablate.arm_shape(full, 6)[1]  # fewer multiply-adds


def test_every_table_names_known_arms_reference_first():
    for table in TABLES:
        assert table.rows[0] == table.reference
        assert set(table.rows) <= set(ARM_BY_NAME)
    assert set(PAPER) <= set(ARM_BY_NAME)
    assert PAPER["full"] - PAPER["no-extended-aug"] == pytest.approx(8.8)  # the paper's "8.8%"


def test_unknown_arms_and_fields_are_refused_naming_them():
    with pytest.raises(ConfigError, match="--arms: unknown arm nope"):
        ablate.select_arms("default,nope")
    assert [a.name for a in ablate.select_arms("bipartite, default,bipartite")] == ["bipartite", "default"]
    bad = dataclasses.replace(ARM_BY_NAME["default"], name="bad", changes={"no_such_field": 1})
    with pytest.raises(ConfigError, match="arm bad: no_such_field"):
        ablate.arm_config(ablate.base_config(), bad, "o")


def test_bad_flags_are_one_line_errors(capsys):
    assert cli.run(ablate.main, ["--iters", "many"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--iters" in err
    assert cli.run(ablate.main, ["--arms", "nope"]) == 2
    assert "unknown arm nope" in capsys.readouterr().err


def fake_results():
    def arm(name, m):
        return {"label": ARM_BY_NAME[name].label, "changes": dict(ARM_BY_NAME[name].changes), "mAP": m,
                "mAP_area": m, "num_priors": 1364, "feature_maps": [16, 8, 4, 2, 1], "iterations": 5,
                "wall_seconds": 1.0, "per_class_AP": {}}
    return {"full": arm("full", 0.700), "no-extended-aug": arm("no-extended-aug", 0.612),
            "default": arm("default", 0.650), "bipartite": arm("bipartite", 0.665)}


def test_the_report_on_given_results(tmp_path):
    report = ablate.make_report(ablate.base_config(budget="quick"), fake_results(), "quick")
    rows = {r[0]: r for r in ablate.table_rows(TABLES[0], report["arms"])}
    assert list(rows) == ["full", "no-extended-aug", "default"]  # squares-only has no result: left out
    assert rows["no-extended-aug"][2] == pytest.approx(-8.8)     # (0.612 - 0.700) * 100
    assert rows["no-extended-aug"][4] == pytest.approx(65.5 - 74.3)
    assert rows["default"][2] == pytest.approx(-5.0)
    switches = {r[0]: r for r in ablate.table_rows(TABLES[2], report["arms"])}
    assert switches["bipartite"][2] == pytest.approx(1.5) and switches["bipartite"][3] is None
    assert ablate.table_rows(TABLES[1], report["arms"])[0][0] == "full"  # only the reference

    text = ablate.format_markdown(report)
    assert "| 0.612 | -8.8 | 65.5 | -8.8 |" in text
    assert "| 0.665 | +1.5 |" in text
    assert "Budget `quick`" in text and "seed 0" in text

    paths = ablate.write_report(str(tmp_path), report)
    assert [os.path.basename(p) for p in paths] == ["ablation.json", "ablation.md", "ablation.png"]
    assert json.loads((tmp_path / "ablation.json").read_text())["arms"]["default"]["mAP"] == 0.650
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_a_folder_of_another_config_is_refused_not_overwritten(tmp_path):
    cfg = ablate.arm_config(ablate.base_config(), ARM_BY_NAME["default"], str(tmp_path))
    assert ablate.arm_state(cfg) == "new"
    os.makedirs(cfg.out)
    other = config.describe(dataclasses.replace(cfg, iters=cfg.iters + 1))
    (tmp_path / "default" / "metrics.json").write_text(json.dumps({"config": other}))
    with pytest.raises(ConfigError, match="another config.*iters"):
        ablate.arm_state(cfg)
    same = config.describe(dataclasses.replace(cfg, processes=1, loader_threads=0))  # speed only
    (tmp_path / "default" / "metrics.json").write_text(json.dumps({"config": same}))
    assert ablate.arm_state(cfg) == "done"


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """8 train / 4 val tiny-voc images in VOC layout."""
    return str(make_tiny_voc(tmp_path_factory.mktemp("data") / "tiny-voc", n_train=8, n_val=4, workers=1))


class NoStop:
    requested, deferring, message = "", False, ""


def test_a_tiny_ablation_writes_its_report_and_resumes(voc, tmp_path, capsys):
    base = dataclasses.replace(ablate.base_config(data=f"voc:{voc}", iters=2), batch_size=4, bn_group=4,
                               warmup_iters=1, loader_threads=0, log_every=1)
    arms = ablate.select_arms("full,default,bipartite")
    results, status = ablate.run_arms(base, arms, str(tmp_path), NoStop())
    assert status == 0 and list(results) == ["full", "default", "bipartite"]
    assert results["full"]["num_priors"] == 1524 and results["default"]["num_priors"] == 1364
    assert all(0 <= r["mAP"] <= 1 and r["iterations"] == 2 for r in results.values())
    paths = ablate.write_report(str(tmp_path), ablate.make_report(base, results, "test"))
    assert all(os.path.getsize(p) > 0 for p in paths)
    assert "| arm |" in (tmp_path / "ablation.md").read_text()
    out = capsys.readouterr().out
    assert "[1/3] full" in out and "about" in out  # progress and the estimate up front

    # a second call finds every arm finished: nothing is trained again
    again, status = ablate.run_arms(base, arms, str(tmp_path), NoStop())
    assert status == 0 and again == results
    assert "done before" in capsys.readouterr().out

    # an arm killed after its checkpoint, before its metrics: continued, not retrained
    os.remove(tmp_path / "default" / "metrics.json")
    again, status = ablate.run_arms(base, arms, str(tmp_path), NoStop())
    assert status == 0 and again["default"]["mAP"] == results["default"]["mAP"]
    out = capsys.readouterr().out
    assert "continuing" in out and "no training left, evaluating" in out
