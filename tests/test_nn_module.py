"""Module plumbing: names, modes, zero_grad, state_dict round trip and its error messages."""

import numpy as np
import pytest

from minissd import nn


class Net(nn.Module):
    """A small net with a Sequential, a list of heads and a buffer-holding layer."""

    def __init__(self, rng):
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU())
        self.heads = [nn.Conv2d(4, 2, 1, rng=rng), nn.Conv2d(4, 3, 1, rng=rng)]


def test_dotted_names_like_pytorch(rng):
    net = Net(rng)
    assert [n for n, _ in net.named_parameters()] == [
        "features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
        "heads.0.weight", "heads.0.bias", "heads.1.weight", "heads.1.bias"]
    assert sorted(net.state_dict()) == sorted(
        [n for n, _ in net.named_parameters()] + ["features.1.running_mean", "features.1.running_var"])
    assert len(list(net.parameters())) == 8


def test_train_eval_reach_every_module(rng):
    net = Net(rng).eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_state_dict_round_trip_through_npz(rng, tmp_path):
    a, b = Net(rng), Net(rng)
    a.features[1].running_mean[...] = [1, 2, 3, 4]
    a.save(tmp_path / "net.npz")
    b.load_state_dict(tmp_path / "net.npz")
    for (name, x), (_, y) in zip(sorted(a.state_dict().items()), sorted(b.state_dict().items())):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert b.features[0].weight.data.dtype == np.float32


def test_load_errors_name_the_key(rng):
    net = Net(rng)
    state = net.state_dict()
    del state["heads.1.bias"]
    state["heads.2.bias"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"heads\.1\.bias.*heads\.2\.bias"):
        net.load_state_dict(state)
    state = net.state_dict()
    state["features.0.weight"] = np.zeros((4, 3, 5, 5))
    with pytest.raises(ValueError, match=r"features\.0\.weight.*\(4, 3, 5, 5\)"):
        net.load_state_dict(state)


def test_load_from_a_file_checks_every_header_before_reading(rng, tmp_path):
    """A forged file whose weight declares 400 MB in 16 bytes is refused, nothing inflated."""
    import io
    import tracemalloc
    import zipfile

    from minissd.errors import CheckpointError

    net = Net(rng)
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in net.state_dict().items():
            if name != "features.0.weight":
                buf = io.BytesIO()
                np.lib.format.write_array(buf, value)
                zf.writestr(name + ".npy", buf.getvalue())
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                   "shape": (10**8,)})
        zf.writestr("features.0.weight.npy", buf.getvalue() + bytes(16))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"forged\.npz.*features\.0\.weight"):
            net.load_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, peak  # np.load allocated the declared 400 MB first
    for name, value in net.state_dict().items():  # nothing was copied in
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_zero_grad_and_to_float64(rng):
    net = Net(rng)
    for p in net.parameters():
        p.grad[...] = 1
    net.zero_grad()
    assert all(np.all(p.grad == 0) for p in net.parameters())
    net.to(np.float64)
    assert all(p.data.dtype == np.float64 == p.grad.dtype for p in net.parameters())
    assert net.features[1].running_var.dtype == np.float64


def test_sequential_backward_and_first_layer_without_input_grad(rng):
    seq = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.ReLU(), nn.Conv2d(3, 2, 3, rng=rng)).to(np.float64)
    x = rng.standard_normal((2, 2, 5, 5))
    assert nn.gradcheck(seq, x) < 1e-6
    seq[0].needs_input_grad = False
    y = seq.forward(x)
    assert seq.backward(np.ones_like(y)) is None
    seq[2].needs_input_grad = False  # a layer in the middle may not drop the gradient
    seq.forward(x)
    with pytest.raises(RuntimeError, match="needs_input_grad"):
        seq.backward(np.ones_like(y))
