"""minissd.config: every TrainConfig field is a flag; recipes are named and chosen only when
asked; every value that cannot train is refused up front, naming its flag (issue 19 item 10)."""

import pytest

from minissd import config
from minissd.config import RECIPES, TrainConfig, parse_args
from minissd.data.augment import AUGMENTATIONS
from minissd.errors import ConfigError
from minissd.model import MODELS


def test_flags_come_from_the_config():
    cfg = parse_args(["--batch-size", "8", "--lr", "0.1", "--iters", "7", "--seed", "3"])
    assert (cfg.batch_size, cfg.lr, cfg.iters, cfg.seed) == (8, 0.1, 7, 3)
    assert parse_args(["--loader-threads", "0", "--processes", "1"]).loader_threads == 0
    assert {f"--{f.replace('_', '-')}" for f in TrainConfig.__dataclass_fields__} >= {
        "--bn-group", "--processes", "--loader-threads", "--recipe", "--data", "--input-size", "--fit-priors"}


def test_no_flags_is_the_default_tiny_voc_run():
    cfg = parse_args([])
    assert cfg == TrainConfig(recipe="tiny-voc")  # the recipe is recorded by name
    assert (cfg.model, cfg.iters, cfg.batch_size, cfg.lr, cfg.bn_group, cfg.iou_threshold) == (
        "tiny", 3600, 16, 0.06, 8, 0.4)


def test_the_papers_recipe_runs_only_when_asked_for():
    # before: --voc-root silently switched to SSD300 for 120k iterations
    voc = parse_args(["--voc-root", "/x"])
    assert (voc.recipe, voc.model, voc.iters) == ("tiny-voc", "tiny", 3600)
    paper = parse_args(["--recipe", "paper", "--voc-root", "/x"])
    assert (paper.model, paper.lr, paper.schedule, paper.augment, paper.batch_size, paper.iters,
            paper.iou_threshold, paper.max_expand) == ("ssd300", 1e-3, "step", "ssd", 32, 120_000, 0.5, 4.0)
    assert parse_args(["--recipe", "paper", "--model", "tiny"]).model == "tiny"  # a flag wins over the recipe


def test_another_dataset_gets_its_own_output_folder():
    # never the default tiny-voc run's folder, whose checkpoint it would replace
    assert parse_args([]).out == "runs/tiny-voc"
    assert parse_args(["--voc-root", "/data/VOC2007"]).out == "runs/VOC2007"
    assert parse_args(["--data", "coco:/d/ann_{split}.json,/d/img"]).out == "runs/ann"
    assert parse_args(["--voc-root", "/data/VOC2007", "--out", "mine"]).out == "mine"
    assert parse_args(["--recipe", "paper", "--voc-root", "/x"]).out == "runs/voc"


def test_choices_come_from_the_registries():
    assert config.CHOICES["model"] == tuple(MODELS) and config.CHOICES["augment"] == tuple(AUGMENTATIONS)
    assert config.CHOICES["recipe"] == tuple(RECIPES)
    for flag, value in (("--model", "resnet"), ("--augment", "mixup"), ("--device", "tpu"), ("--recipe", "x")):
        with pytest.raises(ConfigError, match=f"{flag}"):
            parse_args([flag, value])


@pytest.mark.parametrize("argv, says", [
    (["--lr", "nan"], "--lr nan: must be a finite number"),
    (["--lr", "inf"], "--lr inf: must be a finite number"),
    (["--lr", "0"], "--lr 0.0: the learning rate must be > 0"),
    (["--lr", "abc"], "--lr: invalid float value: 'abc'"),
    (["--batch-size", "1"], "--batch-size 1: smaller than --bn-group 8"),
    (["--batch-size", "12"], "--batch-size 12: not a multiple of --bn-group 8"),
    (["--bn-group", "1", "--batch-size", "1"], "--bn-group 1: BatchNorm needs at least 2 images"),
    (["--processes", "3"], "--processes 3: a batch of 16 holds 2 BatchNorm group(s) of 8: at most 2"),
    (["--max-expand", "0.5"], "--max-expand 0.5: the zoom-out canvas is at least the image"),
    (["--milestones", "abc"], "--milestones 'abc': expected comma-separated iterations"),
    (["--milestones", "100,50"], "--milestones '100,50': iterations must be positive and increasing"),
    (["--iters", "0"], "--iters 0: must be >= 1"),
    (["--log-every", "0"], "--log-every 0: must be >= 1"),
    (["--eval-images", "0"], "--eval-images 0: must be >= 1"),
    (["--momentum", "1"], "--momentum 1.0: must be in [0, 1)"),
    (["--iou-threshold", "0"], "--iou-threshold 0.0: must be in (0, 1]"),
    (["--light-first", "1.5"], "--light-first 1.5: a fraction of the epochs"),
    (["--grad-clip", "-1"], "--grad-clip -1.0: must be >= 0"),
    (["--input-size", "-32"], "--input-size -32: must be > 0"),
    (["--tiny-voc", "--voc-root", "/x"], "choose one of --data, --voc-root and --tiny-voc"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_values_are_refused_up_front_naming_the_flag(argv, says):
    with pytest.raises(ConfigError) as err:
        parse_args(argv)
    assert says in str(err.value)


def test_good_edge_values_are_accepted():
    assert parse_args(["--batch-size", "2", "--bn-group", "2"]).batch_size == 2
    assert parse_args(["--iters", "0", "--epochs", "1.5"]).epochs == 1.5  # --epochs sets the length
    assert parse_args(["--max-expand", "1", "--grad-clip", "0", "--light-first", "0"]).max_expand == 1
    assert config.milestones(parse_args(["--schedule", "step", "--milestones", "80000, 100000"])) == (80000, 100000)


def test_the_batch_must_fit_in_the_training_set():
    cfg = TrainConfig(batch_size=16)
    config.check_against_data(cfg, 16)  # exactly one batch: fine
    with pytest.raises(ConfigError, match="--batch-size 16: the training set has only 15 image"):
        config.check_against_data(cfg, 15)  # before: ZeroDivisionError (no whole batch)


def test_step_processes_are_a_speed_setting_bounded_by_the_batchnorm_groups(monkeypatch):
    monkeypatch.setattr(config, "cores", lambda: 4)
    groups = {B: config.step_processes(TrainConfig(batch_size=B)) for B in (8, 16, 24, 64)}
    assert groups == {8: 1, 16: 2, 24: 3, 64: 4}  # min(cores, batch / bn_group)
    assert config.step_processes(TrainConfig(batch_size=64, processes=1)) == 1
    assert config.step_processes(TrainConfig(batch_size=64, device="cuda")) == 1


def test_iterations_from_epochs():
    assert config.total_iters(TrainConfig(iters=7), 100) == 7
    assert config.total_iters(TrainConfig(epochs=2.0, batch_size=16), 100) == 12  # round(200 / 16)


def test_time_estimate_scales_with_work_and_processes():
    cfg = TrainConfig()
    one = config.estimate_seconds(cfg, 3600, 142e6, 1)
    assert one == pytest.approx(3600 * 16 * 142e6 / config.MACS_PER_CORE_SECOND)
    assert config.estimate_seconds(cfg, 3600, 142e6, 2) == pytest.approx(one / 2)
    assert config.estimate_seconds(TrainConfig(device="cuda"), 3600, 142e6, 1) is None


def test_durations_read_in_a_person_s_units():
    assert [config.format_duration(s) for s in (40, 818, 3 * 3600 + 720, 1.19e7)] == [
        "40 s", "14 min", "3.2 h", "138 days"]


# ---- the switches implementations disagree on (docs/switches.md) -----------------------------------

def test_every_switch_is_a_flag_with_today_s_behaviour_as_default():
    cfg = parse_args([])
    assert (cfg.matching, cfg.conf_loss, cfg.crop, cfg.clip_priors, cfg.aspect_ratios, cfg.source_maps) == (
        "per-prediction", "hnm", "any", "center", "", "")
    assert set(config.SWITCHES) <= set(TrainConfig.__dataclass_fields__)
    assert config.model_layout(cfg) == {}  # the model as it always was
    cfg = parse_args(["--matching", "bipartite", "--conf-loss", "focal", "--crop", "never-reject",
                      "--clip-priors", "corner", "--aspect-ratios", "2;2,3;2,3;2;2", "--source-maps", "0,1"])
    assert (cfg.matching, cfg.conf_loss, cfg.crop) == ("bipartite", "focal", "never-reject")
    assert config.model_layout(cfg) == {"clip": "corner", "aspect_ratios": ((2,), (2, 3), (2, 3), (2,), (2,)),
                                        "source_maps": (0, 1)}
    assert config.describe(cfg)["crop"] == "never-reject"  # saved with the checkpoint and metrics


def test_aspect_ratio_syntax():
    parse = config.parse_aspect_ratios
    assert parse("1;1;1;1;1", 5) == ((),) * 5  # the two squares only
    assert parse("1", 5) == ((),) * 5 and parse("2,3", 3) == ((2, 3),) * 3  # one list: every map
    assert parse(" 2 ; 1,2 ;1.5", 3) == ((2,), (2,), (1.5,))  # 1 adds nothing (Caffe skips it)


@pytest.mark.parametrize("argv, says", [
    (["--crop", "most"], "--crop: invalid choice: 'most'"),
    (["--matching", "hungarian"], "--matching: invalid choice"),
    (["--conf-loss", "ohem"], "--conf-loss: invalid choice"),
    (["--clip-priors", "edges"], "--clip-priors: invalid choice"),
    (["--aspect-ratios", "2;2"], "--aspect-ratios '2;2': expected one list of ratios for every map or 5 lists"),
    (["--aspect-ratios", "2;x;2;2;2"], "--aspect-ratios '2;x;2;2;2': map 1: expected numbers"),
    (["--aspect-ratios", "0.5"], "map 0: ratios must be numbers >= 1"),
    (["--aspect-ratios", "2,2"], "map 0: a ratio is repeated"),
    (["--aspect-ratios", "2;;2;2;2"], "map 1: expected numbers"),
    (["--aspect-ratios", "inf"], "ratios must be numbers >= 1"),
    (["--source-maps", "0,5"], "--source-maps '0,5': indices go from 0 to 4 (tiny has 5 maps)"),
    (["--source-maps", "1,1"], "--source-maps '1,1': a map is named twice"),
    (["--source-maps", "2,0"], "--source-maps '2,0': give the maps in increasing order"),
    (["--source-maps", "0,,1"], "--source-maps '0,,1': expected map indices"),
    (["--model", "ssd300", "--aspect-ratios", "2;2;2;2;2"], "6 lists"),  # SSD300 has six maps
    (["--input-size", "256", "--source-maps", "6"], "indices go from 0 to 5"),  # tiny at 256 px: six
    (["--device", "cuda", "--matching", "bipartite"], "--matching 'bipartite': the GPU step matches per prediction only"),
    (["--device", "cuda", "--conf-loss", "all"], "--conf-loss 'all': the GPU step has only"),
])
def test_bad_switch_values_are_refused_naming_the_flag(argv, says):
    with pytest.raises(ConfigError) as err:
        parse_args(argv)
    assert says in str(err.value)


def test_configs_built_in_code_are_checked_too():
    import dataclasses
    with pytest.raises(ConfigError, match="--crop 'most': choose one of any, best, all, never-reject"):
        config.check(dataclasses.replace(TrainConfig(), crop="most"))
    config.check(TrainConfig())  # recipe "" (chosen later) is fine
    # the GPU honours the data and layout switches: its step takes the CPU model's default boxes
    config.check(TrainConfig(device="cuda", crop="all", clip_priors="none", source_maps="1", aspect_ratios="1"))


def test_a_resumed_run_keeps_its_switches():
    saved = config.describe(TrainConfig(crop="best", source_maps="0,1"))
    config.check_resume(TrainConfig(crop="best", source_maps="0,1", iters=9), saved)  # length may change
    with pytest.raises(ConfigError, match="--crop 'any': the checkpoint was trained with --crop 'best'"):
        config.check_resume(TrainConfig(source_maps="0,1"), saved)
    old = {k: v for k, v in config.describe(TrainConfig()).items() if k not in config.SWITCHES}
    config.check_resume(TrainConfig(), old)  # saved before the switches: their defaults
    with pytest.raises(ConfigError, match="--matching"):
        config.check_resume(TrainConfig(matching="bipartite"), old)
