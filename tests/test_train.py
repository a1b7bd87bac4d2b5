"""python -m minissd.train on a handful of tiny-voc images with a mini SSD (32x32 input): the
loss falls, the run writes its outputs, Ctrl-C and SIGTERM save and --resume continues exactly
where the run stopped; and what goes wrong never costs the last good checkpoint: a non-finite
loss, weights that blow up, a step worker that dies, any other error in the loop."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from minissd import step, train
from minissd.checkpoint import read_checkpoint
from minissd.data import make_tiny_voc
from minissd.errors import CheckpointError, ConfigError
from minissd.model import SSD, SSDConfig, build_model, model_config
from minissd.priors import PriorConfig

MINI = SSDConfig(
    name="mini",
    tables=((("conv", 8, 3, 2, 1, 1), "M", 16),   # 32 -> 16 -> 8: source 1
            ("M", 16),                             # 8 -> 4
            (("conv", 8, 1, 1, 0, 1), ("conv", 16, 3, 2, 1, 1))),  # 4 -> 2
    priors=PriorConfig.from_scales(32, (8, 4, 2), s_min=0.15, s_max=0.8, aspect_ratios=((2,),) * 3),
    batch_norm=True)


def mini_ssd(name, num_classes, seed=0, **options):
    return SSD(MINI, num_classes, seed=seed)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """8 train / 4 val tiny-voc images in VOC layout."""
    return str(make_tiny_voc(tmp_path_factory.mktemp("data") / "tiny-voc", n_train=8, n_val=4, workers=1))


@pytest.fixture(autouse=True)
def mini_model(monkeypatch):
    monkeypatch.setattr(train, "build_model", mini_ssd)


def args(voc, out, *more):
    return ["--voc-root", voc, "--model", "tiny", "--out", str(out), "--batch-size", "4",
            "--bn-group", "4", "--loader-threads", "0", "--warmup-iters", "2", "--lr", "0.05",
            "--eval-every", "0", "--log-every", "1", *more]


def weights(path):
    return read_checkpoint(path)[0]


def iteration_saved(out):
    return read_checkpoint(os.path.join(out, "checkpoint.npz"))[2]["iteration"]


def on_call(n, action, real=step.forward_backward):
    """A stand-in for step.forward_backward that does ``action()`` on its n-th call (1-based)."""
    calls = []

    def forward_backward(*a, **kw):
        calls.append(1)
        if len(calls) == n:
            action()
        return real(*a, **kw)
    return forward_backward


def test_loss_falls_and_the_run_writes_its_outputs(voc, tmp_path, capsys):
    assert train.main(args(voc, tmp_path, "--iters", "24")) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    loss = np.array(metrics["history"]["loss_l"]) + np.array(metrics["history"]["loss_c"])
    assert len(loss) == 24
    assert loss[-4:].mean() < 0.7 * loss[:4].mean()  # a randomly initialised SSD starts far off
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert set(metrics["per_class_AP"]) == {"circle", "square", "triangle", "star", "cross", "ring"}
    assert set(metrics["profile_seconds"]) >= {"data", "match", "forward", "loss", "backward", "optimizer"}
    assert metrics["config"]["bn_group"] == 4 and metrics["config"]["recipe"] == "tiny-voc"
    for name in ("checkpoint.npz", "curves.png", "detections.png"):
        assert (tmp_path / name).stat().st_size > 0
    _, _, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["iteration"] == 24 and meta["extra"]["model_config"]["name"] == "mini"
    out = capsys.readouterr().out
    assert "recipe tiny-voc: model tiny, input 32x32" in out and "24 iterations of 4" in out
    assert "val mAP" in out and "where the time went" in out


class StopAfter:
    """Stands in for the Ctrl-C handler: 'pressed' once ``n`` iterations have finished."""

    def __init__(self, n):
        self.n, self.checks, self.deferring = n, 0, False

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    @property
    def requested(self):
        self.checks += 1
        return "SIGINT" if self.checks >= self.n else ""


def test_interrupt_then_resume_equals_an_uninterrupted_run(voc, tmp_path, monkeypatch):
    # straight: 6 iterations. Interrupted after 4 (an epoch boundary: 8 images, batch 4),
    # then --resume to 6: same data, same schedule, same weights.
    assert train.main(args(voc, tmp_path / "straight", "--iters", "6")) == 0
    monkeypatch.setattr(train, "StopRequest", StopAfter(4))
    assert train.main(args(voc, tmp_path / "split", "--iters", "6")) == 130
    assert iteration_saved(tmp_path / "split") == 4
    assert not (tmp_path / "split" / "metrics.json").exists()  # stopped before the final eval
    monkeypatch.undo()
    monkeypatch.setattr(train, "build_model", mini_ssd)
    assert train.main(args(voc, tmp_path / "split", "--iters", "6", "--resume")) == 0
    a, b = weights(tmp_path / "straight" / "checkpoint.npz"), weights(tmp_path / "split" / "checkpoint.npz")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    history = json.loads((tmp_path / "split" / "metrics.json").read_text())["history"]
    assert history["iteration"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_a_checkpoint_and_exit_cleanly(voc, tmp_path, monkeypatch, capsys,
                                                                signum, status):
    # the signal arrives during iteration 2: the iteration finishes, is saved, the run stops
    # (before: SIGTERM killed the run with -15 and no checkpoint)
    monkeypatch.setattr(step, "forward_backward", on_call(2, lambda: os.kill(os.getpid(), signum)))
    assert train.main(args(voc, tmp_path, "--iters", "50")) == status
    assert iteration_saved(tmp_path) == 2
    assert "--resume" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ctrl_c_before_the_first_iteration_says_so_in_one_line(voc, tmp_path, monkeypatch, capsys):
    real = train.make_model

    def building_then_ctrl_c(*a):
        os.kill(os.getpid(), signal.SIGINT)  # while the model is being built
        return real(*a)

    monkeypatch.setattr(train, "make_model", building_then_ctrl_c)
    assert train.main(args(voc, tmp_path / "run", "--iters", "5")) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted before the first iteration" in err
    assert not (tmp_path / "run").exists()  # no empty output folder left behind


def test_ctrl_c_during_the_final_evaluation_stops_at_once_and_resume_evaluates(voc, tmp_path, monkeypatch, capsys):
    real = train.outputs.validate

    def validate_then_ctrl_c(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(train.outputs, "validate", validate_then_ctrl_c)
    assert train.main(args(voc, tmp_path, "--iters", "3")) == 130
    assert "interrupted during the final evaluation" in capsys.readouterr().err.strip().splitlines()[-1]
    assert iteration_saved(tmp_path) == 3 and not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(train.outputs, "validate", real)
    assert train.main(args(voc, tmp_path, "--iters", "3", "--resume")) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["iterations"] == 3


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(voc, tmp_path, monkeypatch, capsys):
    real_loss, calls = step.multibox_loss, []

    def loss_goes_nan(*a, **kw):
        calls.append(1)
        loss_l, loss_c, dloc, dconf = real_loss(*a, **kw)
        return (float("nan") if len(calls) == 5 else loss_l), loss_c, dloc, dconf

    monkeypatch.setattr(step, "multibox_loss", loss_goes_nan)
    rc = train.main(args(voc, tmp_path, "--iters", "10", "--eval-every", "2", "--eval-images", "2"))
    assert rc == 1
    assert "non-finite" in capsys.readouterr().err
    state, _, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["iteration"] == 4  # the checkpoint of iteration 4, before the NaN at 5
    assert all(np.isfinite(v).all() for v in state.values())
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.parametrize("spoil, at_step, iters", [(1e30, 4, 6), (np.nan, 3, 3)])
def test_blown_up_weights_never_reach_a_checkpoint(voc, tmp_path, monkeypatch, capsys, spoil, at_step, iters):
    # issue 19.3: an SGD step leaves weights of 1e30 (step 4, just before the periodic evaluation
    # and checkpoint at 4) or NaN (step 3, before the final checkpoint) from a finite loss.
    # Before: the 1e30 weights were saved over the good checkpoint of iteration 2 (and the
    # evaluation crashed on them), the NaN ones at the end.
    class SpoiledSGD(train.SGD):
        steps = 0

        def step(self):
            super().step()
            SpoiledSGD.steps += 1
            if SpoiledSGD.steps == at_step:
                self.params[0].data[...] = spoil

    monkeypatch.setattr(train, "SGD", SpoiledSGD)
    rc = train.main(args(voc, tmp_path, "--iters", str(iters), "--eval-every", "2", "--eval-images", "2"))
    assert rc == 1
    assert "No checkpoint was written with these weights" in capsys.readouterr().err
    state, _, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["iteration"] == 2  # the last good one
    assert all(np.isfinite(v).all() and np.abs(v).max() < train.WEIGHT_LIMIT for v in state.values())


def test_a_dead_worker_stops_the_run_after_saving_the_last_good_state(voc, tmp_path, monkeypatch, capsys):
    # issue 19.4: before, "training worker 0 died" stopped the run and nothing was saved
    def dies():
        raise train.WorkerError("training worker 0 died (exit code -9)")

    monkeypatch.setattr(step, "forward_backward", on_call(3, dies))
    assert train.main(args(voc, tmp_path, "--iters", "10")) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (the progress bar is above it)
    assert last.startswith("stopped: training worker 0 died") and "checkpoint of iteration 2 saved" in last
    assert iteration_saved(tmp_path) == 2


def test_a_real_worker_killed_mid_run_stops_it_with_the_last_good_state_saved(voc, tmp_path, monkeypatch, capsys):
    # two step processes (a batch of 4 in BatchNorm groups of 2); worker 1 is killed -9 just
    # before the 3rd step: the run stops with exit status 1 and the state after 2 iterations
    class KilledWorkers(train.Workers):
        calls = 0

        def forward_backward(self, *a, **kw):
            KilledWorkers.calls += 1
            if KilledWorkers.calls == 3:
                os.kill(self._procs[1].pid, signal.SIGKILL)
                self._procs[1].join(timeout=10)
            return super().forward_backward(*a, **kw)

    monkeypatch.setattr(train, "Workers", KilledWorkers)
    assert train.main(args(voc, tmp_path, "--iters", "10", "--bn-group", "2", "--processes", "2")) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("stopped: ") and "checkpoint of iteration 2 saved" in last
    assert iteration_saved(tmp_path) == 2
    assert multiprocessing.active_children() == []  # no worker left behind


def test_one_or_two_step_processes_train_the_same_weights(voc, tmp_path):
    # the process count is a speed setting: BatchNorm groups of 2 either way (issue 13)
    for n in (1, 2):
        assert train.main(args(voc, tmp_path / str(n), "--iters", "3", "--bn-group", "2",
                               "--processes", str(n))) == 0
    a, b = weights(tmp_path / "1" / "checkpoint.npz"), weights(tmp_path / "2" / "checkpoint.npz")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_input_size_and_fitted_priors_are_saved_with_the_model(voc, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "build_model", build_model)  # the real tiny family, at 64 px
    assert train.main(args(voc, tmp_path, "--iters", "1", "--input-size", "64", "--fit-priors")) == 0
    assert "fitted default-box scales" in capsys.readouterr().out
    saved = read_checkpoint(tmp_path / "checkpoint.npz")[2]["extra"]["model_config"]
    default = model_config("tiny", 64).to_dict()
    assert saved["priors"]["image_size"] == 64
    assert saved["priors"] != default["priors"]  # the fitted sizes, not the formula's
    rebuilt = SSD(SSDConfig.from_dict(saved), 6)  # evaluate/detect rebuild exactly this network
    assert rebuilt.num_priors == SSD(model_config("tiny", 64), 6).num_priors


def test_loader_processes_and_the_decode_cache_train_like_threads(voc, tmp_path):
    # loader processes are a speed setting: the same batches, so the same weights
    assert train.main(args(voc, tmp_path / "threads", "--iters", "2")) == 0
    assert train.main(args(voc, tmp_path / "procs", "--iters", "2", "--loader-processes", "1")) == 0
    a, b = weights(tmp_path / "threads" / "checkpoint.npz"), weights(tmp_path / "procs" / "checkpoint.npz")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert multiprocessing.active_children() == []
    assert train.main(args(voc, tmp_path / "cache", "--iters", "2", "--decode-cache", "64")) == 0
    assert json.loads((tmp_path / "cache" / "metrics.json").read_text())["config"]["decode_cache"] == 64


def test_any_error_in_the_loop_saves_first_and_keeps_its_traceback(voc, tmp_path, monkeypatch, capsys):
    def bug():
        raise RuntimeError("a bug in the step")

    monkeypatch.setattr(step, "forward_backward", on_call(3, bug))
    with pytest.raises(RuntimeError, match="a bug in the step"):
        train.main(args(voc, tmp_path, "--iters", "10"))
    assert iteration_saved(tmp_path) == 2
    assert "checkpoint of iteration 2 saved" in capsys.readouterr().err


def test_resume_on_a_finished_run_trains_nothing_and_records_no_extra_iteration(voc, tmp_path):
    assert train.main(args(voc, tmp_path, "--iters", "4")) == 0
    before = weights(tmp_path / "checkpoint.npz")
    assert train.main(args(voc, tmp_path, "--iters", "4", "--resume")) == 0
    assert iteration_saved(tmp_path) == 4  # before: 5, an iteration that never ran
    for name, value in weights(tmp_path / "checkpoint.npz").items():
        np.testing.assert_array_equal(value, before[name])
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert history["iteration"] == [1, 2, 3, 4] and history["eval_iteration"] == [4]


def test_resume_without_a_checkpoint_says_so_before_loading_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "open_datasets", None)  # would fail if it were reached
    with pytest.raises(CheckpointError, match="--resume: .*checkpoint.npz: checkpoint file not found"):
        train.main(["--resume", "--out", str(tmp_path)])


def test_a_batch_larger_than_the_training_set_is_refused_by_name(voc, tmp_path):
    with pytest.raises(ConfigError, match="--batch-size 16: the training set has only 8"):
        train.main(args(voc, tmp_path, "--iters", "2", "--batch-size", "16"))


def test_data_spec_and_the_old_voc_root_flag_train_the_same(voc, tmp_path):
    assert train.main(args(voc, tmp_path / "old", "--iters", "2")) == 0
    new = args(voc, tmp_path / "new", "--iters", "2")
    new[new.index("--voc-root"):new.index("--voc-root") + 2] = ["--data", f"voc:{voc}"]
    assert train.main(new) == 0
    a, b = weights(tmp_path / "old" / "checkpoint.npz"), weights(tmp_path / "new" / "checkpoint.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_stale_temporary_checkpoints_are_removed_at_start(voc, tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"")  # not a temporary: kept as it is
    stale = tmp_path / ".tmp-abcd1234.npz"  # an older version's temporary name
    stale.write_bytes(b"half a checkpoint")
    assert train.main(args(voc, tmp_path, "--iters", "1")) == 0
    assert not stale.exists()


def test_the_command_line_prints_bad_flags_as_one_line_with_status_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "minissd.train", "--lr", "nan", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --lr nan: must be a finite number"
    assert not (tmp_path / "r").exists()


def test_learning_rate_warms_up_then_anneals():
    cfg = train.config.TrainConfig(lr=0.1, warmup_iters=10)
    lr = train.learning_rate_schedule(cfg, iters=100)
    assert lr(0) == pytest.approx(0.1 / 3)  # warm-up starts at a third
    assert lr(10) == pytest.approx(0.1 * (1 + np.cos(np.pi * 0.1)) / 2 * 0.99 + 0.001)
    assert lr(99) < 0.01
    step_lr = train.learning_rate_schedule(train.config.TrainConfig(lr=1e-3, schedule="step", milestones="50,80",
                                                                    warmup_iters=0), iters=100)
    assert [step_lr(0), step_lr(50), step_lr(80)] == pytest.approx([1e-3, 1e-4, 1e-5])


def test_cuda_device_without_a_gpu_fails_clearly(tmp_path):
    # without a GPU: require() names what is missing; on the simulator (the tests' default)
    # training would take hours. Either way the run stops at once, before touching any data,
    # instead of quietly training on the CPU or crawling.
    with pytest.raises(ConfigError, match="--device cuda:"):
        train.main(["--device", "cuda", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_light_augmentation_curriculum_covers_the_first_epochs_then_the_papers():
    TrainConfig = train.config.TrainConfig
    sched = train.augmentation_schedule(TrainConfig(light_first=0.4), MINI, epochs=10)
    names = [repr(sched(e)) for e in range(10)]
    assert all("expand" not in n for n in names[:4])  # epochs 0-3: colour + flip
    assert all("expand" in n and "crop" in n for n in names[4:])  # then zoom out and IoU crop too
    off = train.augmentation_schedule(TrainConfig(light_first=0.0), MINI, epochs=10)
    assert all("expand" in repr(off(e)) for e in range(10))
    light = train.augmentation_schedule(TrainConfig(augment="light", light_first=0.4), MINI, epochs=10)
    assert all("expand" not in repr(light(e)) for e in range(10))


def test_the_switches_reach_the_model_and_the_data_and_a_resumed_run_keeps_them(voc, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "build_model", build_model)  # the real tiny family, at 64 px: maps 8, 4, 2, 1
    switches = ["--input-size", "64", "--aspect-ratios", "1", "--source-maps", "0,1", "--clip-priors", "corner",
                "--crop", "best", "--fit-priors"]
    assert train.main(args(voc, tmp_path, "--iters", "1", *switches)) == 0
    meta = read_checkpoint(tmp_path / "checkpoint.npz")[2]
    assert {k: meta["config"][k] for k in ("crop", "aspect_ratios", "source_maps", "clip_priors")} == {
        "crop": "best", "aspect_ratios": "1", "source_maps": "0,1", "clip_priors": "corner"}
    priors = meta["extra"]["model_config"]["priors"]
    assert priors["feature_maps"] == [8, 4] and priors["aspect_ratios"] == [[], []] and priors["clip"] == "corner"
    model = SSD(SSDConfig.from_dict(meta["extra"]["model_config"]), 6)
    assert model.num_priors == 2 * (64 + 16)  # two squares per location on the 8x8 and 4x4 maps
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["config"]["crop"] == "best"
    # --resume with the same switches continues; with another crop rule it is refused, by name
    assert train.main(args(voc, tmp_path, "--iters", "2", "--resume", *switches)) == 0
    assert iteration_saved(tmp_path) == 2
    with pytest.raises(ConfigError, match="--crop 'any': the checkpoint was trained with --crop 'best'"):
        train.main(args(voc, tmp_path, "--iters", "3", "--resume", *switches[:-3], "--fit-priors"))


def test_the_matching_and_loss_switches_reach_the_step(voc, tmp_path, monkeypatch):
    # Before: train.py built LossConfig from three of its fields, so --matching and --conf-loss
    # were saved with the checkpoint while every step matched per prediction and mined.
    # (With step processes, test_workers checks that the workers get every field.)
    calls = []
    real_match, real_loss = step.match_batch, step.multibox_loss
    monkeypatch.setattr(step, "match_batch", lambda *a, **kw: calls.append(kw["rule"]) or real_match(*a, **kw))
    monkeypatch.setattr(step, "multibox_loss",
                        lambda *a, **kw: calls.append(kw["conf_loss"]) or real_loss(*a, **kw))
    assert train.main(args(voc, tmp_path, "--iters", "2", "--processes", "1",
                           "--matching", "bipartite", "--conf-loss", "focal")) == 0
    assert calls == ["bipartite", "focal"] * 2


def test_the_crop_rule_reaches_the_training_transform():
    from minissd.config import TrainConfig
    from minissd.model import TINY_CONFIG
    schedule = train.augmentation_schedule(TrainConfig(crop="all", light_first=0.5), TINY_CONFIG, 10)
    assert "random_iou_crop" not in repr(schedule(0))  # the light epochs first: no crop at all
    crop = [s for s in schedule(9).steps if getattr(s, "func", s).__name__ == "random_iou_crop"]
    assert len(crop) == 1 and crop[0].keywords == {"rule": "all"}
