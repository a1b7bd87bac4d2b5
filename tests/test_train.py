"""python -m minissd.train on a handful of tiny-voc images with a mini SSD (32x32 input): the
loss falls, the run writes its outputs, Ctrl-C saves and --resume continues exactly where the
run stopped, a non-finite loss stops the run keeping the last good checkpoint."""

import json
import multiprocessing
import os
import signal

import numpy as np
import pytest

from minissd import train, workers  # workers.share_step computes the loss
from minissd.checkpoint import read_checkpoint
from minissd.data import make_tiny_voc
from minissd.model import SSD, SSDConfig
from minissd.priors import PriorConfig

MINI = SSDConfig(
    name="mini",
    tables=((("conv", 8, 3, 2, 1, 1), "M", 16),   # 32 -> 16 -> 8: source 1
            ("M", 16),                             # 8 -> 4
            (("conv", 8, 1, 1, 0, 1), ("conv", 16, 3, 2, 1, 1))),  # 4 -> 2
    priors=PriorConfig.from_scales(32, (8, 4, 2), s_min=0.15, s_max=0.8, aspect_ratios=((2,),) * 3),
    batch_norm=True)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """8 train / 4 val tiny-voc images in VOC layout."""
    return str(make_tiny_voc(tmp_path_factory.mktemp("data") / "tiny-voc", n_train=8, n_val=4, workers=1))


@pytest.fixture(autouse=True)
def mini_model(monkeypatch):
    monkeypatch.setattr(train, "build_model", lambda name, num_classes, seed=0: SSD(MINI, num_classes, seed=seed))


def args(voc, out, *more):
    return ["--voc-root", voc, "--model", "tiny", "--out", str(out), "--batch-size", "4",
            "--workers", "0", "--warmup-iters", "2", "--lr", "0.05", "--eval-every", "0",
            "--log-every", "1", *more]


def weights(path):
    return read_checkpoint(path)[0]


def test_loss_falls_and_the_run_writes_its_outputs(voc, tmp_path, capsys):
    assert train.main(args(voc, tmp_path, "--iters", "24")) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    loss = np.array(metrics["history"]["loss_l"]) + np.array(metrics["history"]["loss_c"])
    assert len(loss) == 24
    assert loss[-4:].mean() < 0.7 * loss[:4].mean()  # a randomly initialised SSD starts far off
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert set(metrics["per_class_AP"]) == {"circle", "square", "triangle", "star", "cross", "ring"}
    assert set(metrics["profile_seconds"]) >= {"data", "match", "forward", "loss", "backward", "optimizer"}
    for name in ("checkpoint.npz", "curves.png", "detections.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert read_checkpoint(tmp_path / "checkpoint.npz")[2]["iteration"] == 24
    out = capsys.readouterr().out
    assert "val mAP" in out and "where the time went" in out


class StopAfter:
    """Stands in for the Ctrl-C handler: 'pressed' once ``n`` iterations have finished."""

    def __init__(self, n):
        self.n, self.checks = n, 0

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    @property
    def requested(self):
        self.checks += 1
        return self.checks >= self.n


def test_interrupt_then_resume_equals_an_uninterrupted_run(voc, tmp_path, monkeypatch):
    # straight: 6 iterations. Interrupted after 4 (an epoch boundary: 8 images, batch 4),
    # then --resume to 6: same data, same schedule, same weights.
    assert train.main(args(voc, tmp_path / "straight", "--iters", "6")) == 0
    monkeypatch.setattr(train, "StopRequest", StopAfter(4))
    assert train.main(args(voc, tmp_path / "split", "--iters", "6")) == 130
    _, _, meta = read_checkpoint(tmp_path / "split" / "checkpoint.npz")
    assert meta["iteration"] == 4
    assert not (tmp_path / "split" / "metrics.json").exists()  # stopped before the final eval
    monkeypatch.undo()
    monkeypatch.setattr(train, "build_model", lambda name, num_classes, seed=0: SSD(MINI, num_classes, seed=seed))
    assert train.main(args(voc, tmp_path / "split", "--iters", "6", "--resume")) == 0
    a, b = weights(tmp_path / "straight" / "checkpoint.npz"), weights(tmp_path / "split" / "checkpoint.npz")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    history = json.loads((tmp_path / "split" / "metrics.json").read_text())["history"]
    assert history["iteration"] == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(voc, tmp_path, monkeypatch):
    real_loss, calls = workers.multibox_loss, []

    def loss_then_ctrl_c(*a):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C during iteration 2
        return real_loss(*a)

    monkeypatch.setattr(workers, "multibox_loss", loss_then_ctrl_c)
    assert train.main(args(voc, tmp_path, "--iters", "50")) == 130
    assert read_checkpoint(tmp_path / "checkpoint.npz")[2]["iteration"] == 2  # iteration 2 finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(voc, tmp_path, monkeypatch, capsys):
    real_loss, calls = workers.multibox_loss, []

    def loss_goes_nan(*a):
        calls.append(1)
        loss_l, loss_c, dloc, dconf = real_loss(*a)
        return (float("nan") if len(calls) == 5 else loss_l), loss_c, dloc, dconf

    monkeypatch.setattr(workers, "multibox_loss", loss_goes_nan)
    rc = train.main(args(voc, tmp_path, "--iters", "10", "--eval-every", "2", "--eval-images", "2"))
    assert rc == 1
    assert "non-finite" in capsys.readouterr().err
    state, _, meta = read_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["iteration"] == 4  # the checkpoint of iteration 4, before the NaN at 5
    assert all(np.isfinite(v).all() for v in state.values())
    assert not (tmp_path / "metrics.json").exists()


def test_flags_come_from_the_config():
    cfg = train.parse_args(["--batch-size", "8", "--lr", "0.1", "--iters", "7", "--seed", "3"])
    assert (cfg.batch_size, cfg.lr, cfg.iters, cfg.seed, cfg.tiny_voc) == (8, 0.1, 7, 3, True)
    voc = train.parse_args(["--voc-root", "/x"])
    assert (voc.model, voc.lr, voc.schedule, voc.augment, voc.batch_size) == (
        "ssd300", 1e-3, "step", "ssd", 32)  # the paper's recipe
    assert train.parse_args(["--voc-root", "/x", "--model", "tiny"]).model == "tiny"
    with pytest.raises(SystemExit):
        train.parse_args(["--tiny-voc", "--voc-root", "/x"])
    with pytest.raises(SystemExit):
        train.parse_args(["--device", "tpu"])


def test_learning_rate_warms_up_then_anneals():
    cfg = train.TrainConfig(lr=0.1, warmup_iters=10)
    lr = train.learning_rate_schedule(cfg, iters=100)
    assert lr(0) == pytest.approx(0.1 / 3)  # warm-up starts at a third
    assert lr(10) == pytest.approx(0.1 * (1 + np.cos(np.pi * 0.1)) / 2 * 0.99 + 0.001)
    assert lr(99) < 0.01
    step = train.learning_rate_schedule(train.TrainConfig(lr=1e-3, schedule="step", milestones="50,80",
                                                          warmup_iters=0), iters=100)
    assert [step(0), step(50), step(80)] == pytest.approx([1e-3, 1e-4, 1e-5])


def test_cuda_device_without_a_gpu_fails_clearly(tmp_path, capsys):
    # without a GPU: require() names what is missing; on the simulator (the tests' default)
    # training would take hours. Either way the run stops at once with status 2, before
    # touching any data, instead of quietly training on the CPU or crawling.
    assert train.main(["--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    assert "--device cuda:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_step_shares_the_batch_only_when_each_share_keeps_eight_images(monkeypatch):
    monkeypatch.setattr(train, "num_threads", lambda: 4)
    started = []  # worker counts asked for (no process is started here)
    monkeypatch.setattr(train, "StepWorkers", lambda model, n, max_batch, loss_args: started.append(n) or n)
    model = SSD(MINI, 6)
    optimizer = train.SGD(list(model.parameters()), 0.01)
    workers = {B: train.TrainStep(model, optimizer, train.TrainConfig(batch_size=B)).workers for B in (4, 16, 24, 64)}
    assert workers == {4: None, 16: 2, 24: 3, 64: 4}  # None: everything in this process
    assert started == [2, 3, 4]


def test_a_run_with_two_worker_processes_keeps_their_batchnorm_statistics(voc, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "num_threads", lambda: 2)
    monkeypatch.setattr(train.TrainStep, "MIN_SHARE", 4)  # 8 images: two shares of 4
    assert train.main(args(voc, tmp_path, "--iters", "3", "--batch-size", "8")) == 0
    assert "2 worker processes" in capsys.readouterr().out
    assert multiprocessing.active_children() == []  # the workers ended with the run
    # this process never ran a training forward: its running statistics are the workers'
    saved = weights(tmp_path / "checkpoint.npz")
    means = [v for k, v in saved.items() if k.endswith("running_mean")]
    assert means and all(np.abs(m).max() > 0 for m in means)


def test_light_augmentation_curriculum_covers_the_first_epochs_then_the_papers():
    sched = train.augmentation_schedule(train.TrainConfig(light_first=0.4), MINI, epochs=10)
    names = [repr(sched(e)) for e in range(10)]
    assert all("expand" not in n for n in names[:4])  # epochs 0-3: colour + flip
    assert all("expand" in n and "crop" in n for n in names[4:])  # then zoom out and IoU crop too
    off = train.augmentation_schedule(train.TrainConfig(light_first=0.0), MINI, epochs=10)
    assert all("expand" in repr(off(e)) for e in range(10))
    light = train.augmentation_schedule(train.TrainConfig(augment="light", light_first=0.4), MINI, epochs=10)
    assert all("expand" not in repr(light(e)) for e in range(10))
