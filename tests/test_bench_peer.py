"""python -m minissd.bench peer: the install message without PyTorch, the tables worked by hand,
the timing loop's interleaving, and minissd's side of the per-layer profile (all torch-free).

The PyTorch twin itself is checked only where a developer asks for it, with PyTorch installed
(``pip install -e ".[peer]"``) and ``MINISSD_TEST_PEER=1``: the suite and CI never import
torch, even on a machine where someone installed it by hand."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minissd.bench
from minissd import nn
from minissd.bench import peer
from minissd.model import ssd_tiny
from minissd.step import LossConfig

needs_peer = pytest.mark.skipif(os.environ.get("MINISSD_TEST_PEER") != "1",
                                reason="the PyTorch twin is checked only with MINISSD_TEST_PEER=1 "
                                       "(the suite never imports torch)")


def small_batch(rng, B=2, S=64):
    """B images of S x S and one or two boxes each (corner form, labels in 1..3)."""
    images = rng.standard_normal((B, 3, S, S)).astype(np.float32)
    boxes, labels = [], []
    for b in range(B):
        k = 1 + b % 2
        c, s = rng.uniform(0.3, 0.7, (k, 2)), rng.uniform(0.2, 0.5, (k, 2))
        boxes.append(np.concatenate([c - s / 2, c + s / 2], axis=1).clip(0, 1).astype(np.float32))
        labels.append(rng.integers(1, 4, k))
    return images, boxes, labels


def small_model(group=2):
    model = ssd_tiny(3, input_size=64).train()  # maps 8, 4, 2, 1: the tiny family, fast
    nn.set_batchnorm_group(model, group)
    return model


# ---- without PyTorch ---------------------------------------------------------------------------------

def test_without_torch_it_says_how_to_install_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delitem(sys.modules, "minissd.bench.torch_twin", raising=False)
    monkeypatch.delattr(minissd.bench, "torch_twin", raising=False)
    assert peer.load_twin() is None
    assert peer.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and 'pip install -e ".[peer]"' in captured.err


def test_importing_the_bench_does_not_import_torch():
    code = "import sys, minissd.bench.peer, minissd.bench.__main__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---- the tables, worked by hand ------------------------------------------------------------------------

def test_rates_table_is_medians_and_their_ratio():
    rows = [dict(measure="whole step", batch=16, ours=("2 worker processes", [80.0, 100.0, 90.0]),
                 theirs=("BN groups of 8", [100.0, 120.0, 110.0]))]
    table = peer.format_rates(rows).splitlines()
    # medians 90 and 110: ratio 90 / 110 = 0.818
    assert table[2] == ("| whole step | 16 | 2 worker processes | 90.0 [80-100] | BN groups of 8 | "
                        "110.0 [100-120] | 0.82 |")


def test_stage_table_in_milliseconds_with_total():
    table = peer.format_stages({"minissd": {"data": 0.001, "forward": 0.020, "backward": 0.030}})
    assert table.splitlines()[2] == "| minissd | 1.0 | 0.0 | 20.0 | 0.0 | 30.0 | 0.0 | 51.0 |"


PROFILE_ROWS = [("stage0.0", "conv", "conv a"), ("stage0.1", "BatchNorm", "bn"), ("loss", "loss", "loss")]
PROFILE_RESULTS = {"stage0.0": {"minissd": (0.003, 0.005), "PyTorch": (0.001, 0.001)},
                   "stage0.1": {"minissd": (0.001, 0.001), "PyTorch": (0.001, 0.001)},
                   "loss": {"minissd": (0.002, 0.0), "PyTorch": (0.002, 0.0)}}


def test_profile_ratios_kinds_and_gaps_by_hand():
    text = peer.format_profile(PROFILE_ROWS, PROFILE_RESULTS, ["minissd", "PyTorch"])
    lines = text.splitlines()
    # the conv: 3 + 5 = 8 ms against 1 + 1 = 2 ms: 4x the time, 6 ms lost
    assert "| stage0.0 | conv a | 3.00 | 5.00 | 1.00 | 1.00 | 4.00x |" in lines
    assert "| stage0.1 | bn | 1.00 | 1.00 | 1.00 | 1.00 | 1.00x |" in lines
    assert "| conv | 1 | 8.00 | 2.00 | 4.00x | +6.00 |" in lines
    assert "| total | 3 | 12.00 | 6.00 | 2.00x | +6.00 |" in lines  # 8 + 2 + 2 against 2 + 2 + 2
    gaps = lines[lines.index("largest gaps (minissd - PyTorch, ms per step):") + 1:]
    assert gaps[0].split()[0] == "stage0.0" and "+6.00 ms (4.00x)" in gaps[0]


def test_profile_of_one_side_has_no_ratios():
    one = {name: {"minissd": r["minissd"]} for name, r in PROFILE_RESULTS.items()}
    text = peer.format_profile(PROFILE_ROWS, one, ["minissd"])
    assert "| total | 3 | 12.00 |" in text and "ratio" not in text and "gaps" not in text


# ---- the timing loop -----------------------------------------------------------------------------------

def test_interleaved_runs_take_turns_and_report_per_call_stage_times():
    calls = []

    def a(times):
        calls.append("a")

    def b(times):
        calls.append("b")
        times["x"] = times.get("x", 0.0) + 1.0

    res = peer.interleaved({"a": a, "b": b}, rounds=2, steps=3, warmup=1)
    assert calls == ["a", "b"] + (["a"] * 3 + ["b"] * 3) * 2  # warm-up, then round after round
    assert len(res["a"]) == len(res["b"]) == 2
    assert all(stages == {"x": 1.0} for _, stages in res["b"])  # 3 seconds over 3 calls


def test_run_profile_alternates_sides_layer_by_layer():
    calls = []

    def task(side, name):
        def run():
            calls.append((side, name))
            return 1.0, 2.0
        return run

    sides = {s: [(n, task(s, n)) for n in ("l1", "l2")] for s in ("minissd", "other")}
    res = peer.run_profile(sides, reps=2)
    assert calls[:4] == [("minissd", "l1"), ("other", "l1"), ("minissd", "l2"), ("other", "l2")]
    assert len(calls) == 3 * 4  # a warm-up round and 2 timed rounds
    assert res["l2"]["other"] == (1.0, 2.0)
    with pytest.raises(ValueError, match="other tasks"):
        peer.run_profile({"a": [("l1", task("a", "l1"))], "b": [("l2", task("b", "l2"))]}, reps=1)


# ---- minissd's side of the per-layer profile ----------------------------------------------------------

def test_capture_keeps_each_layers_real_input(rng):
    model = small_model()
    images, boxes, labels = small_batch(rng)
    capture = peer.capture_layers(model, images, boxes, labels, LossConfig())
    loc, conf = model.forward(images)  # the network as a whole: the same outputs
    np.testing.assert_allclose(capture.loc, loc, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(capture.conf, conf, rtol=1e-6, atol=1e-7)
    assert capture.inputs["stage0.0"] is images
    x = capture.inputs["stage0.0"]
    for layer, name in zip(model.stages[0], ("stage0.0", "stage0.1", "stage0.2")):  # conv, BN, ReLU
        np.testing.assert_allclose(capture.inputs[name], x, rtol=1e-6)
        x = layer.forward(x)
    assert capture.grads["head0"].shape == capture.head_outputs[0].shape
    assert capture.dconf.shape == conf.shape and np.abs(capture.dconf).max() > 0


def test_profile_covers_every_layer_once_and_leaves_the_model_as_it_was(rng):
    model = small_model()
    images, boxes, labels = small_batch(rng)
    capture = peer.capture_layers(model, images, boxes, labels, LossConfig())
    rows = peer.profile_rows(model, capture)
    layers = [layer for stage in model.stages for layer in stage]
    kinds = [kind for _, kind, _ in rows]
    assert kinds.count("conv") == sum(isinstance(layer, nn.Conv2d) for layer in layers)
    assert kinds.count("BatchNorm") == kinds.count("ReLU") == kinds.count("conv")
    assert kinds.count("pool") == sum(isinstance(layer, nn.MaxPool2d) for layer in layers)
    assert kinds.count("head conv") == len(model.heads.convs)
    assert kinds[-3:] == ["heads flatten+concat", "loss", "optimizer"]
    assert rows[0] == ("stage0.0", "conv", "conv 3x3/2 3->16 @64x64")  # the first conv, by shape
    tasks = peer.minissd_profile_tasks(model, capture, LossConfig(), 10.0)
    assert [name for name, _ in tasks] == [name for name, _, _ in rows]
    results = peer.run_profile({"minissd": tasks}, reps=1)
    for name, kind, _ in rows:
        forward, backward = results[name]["minissd"]
        assert forward > 0 and (backward > 0) == (kind not in ("loss", "optimizer"))
    for conv in model.heads.convs:  # the flatten task's stubs are gone again
        assert "forward" not in vars(conv) and "backward" not in vars(conv)
    assert "| total |" in peer.format_profile(rows, results, ["minissd"])


# ---- the twin (PyTorch), only on request -------------------------------------------------------------

@needs_peer
def test_twin_has_every_weight_and_computes_what_minissd_computes(rng):
    pytest.importorskip("torch")
    from minissd.bench import torch_twin
    model = small_model(group=2)
    twin = torch_twin.make_twin(model)
    pairs = torch_twin.tensor_pairs(model, twin, buffers=False)
    assert len(pairs) == len(list(model.parameters())) == len(list(twin.parameters()))
    assert all(tuple(p.data.shape) == tuple(t.shape) for _, p, t in pairs)
    images, boxes, labels = small_batch(rng, B=4)  # two BatchNorm groups
    a = torch_twin.check_agreement(model, images, boxes, labels, LossConfig())
    assert max(a["outputs"], a["loss"], a["gradients"], a["buffers"]) < peer.AGREE


@needs_peer
def test_grouped_batchnorm_is_minissds_and_not_the_whole_batchs(rng):
    torch = pytest.importorskip("torch")
    from minissd.bench import torch_twin
    x = rng.standard_normal((4, 3, 5, 5))
    ours = nn.BatchNorm2d(3, group=2, dtype=np.float64)
    y = ours.forward(x)
    grouped = torch_twin.GroupedBatchNorm2d(3, group=2).double()
    np.testing.assert_allclose(grouped(torch.from_numpy(x)).detach().numpy(), y, atol=1e-12)
    np.testing.assert_allclose(grouped.running_mean.numpy(), ours.running_mean, atol=1e-12)
    np.testing.assert_allclose(grouped.running_var.numpy(), ours.running_var, atol=1e-12)
    whole = torch_twin.GroupedBatchNorm2d(3, group=None).double()
    assert np.abs(whole(torch.from_numpy(x)).detach().numpy() - y).max() > 1e-3
