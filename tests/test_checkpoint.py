"""minissd.checkpoint: a round trip restores model, optimizer, iteration, config and RNG; writes
are atomic; a file holding pickled objects, a missing file or a mismatched model is refused."""

import json
import os
import stat

import numpy as np
import pytest

from minissd.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint,
                                remove_stale_temporaries, save_checkpoint)
from minissd.nn import SGD, BatchNorm2d, Conv2d, ReLU, Sequential


def small_net(seed):
    rng = np.random.default_rng(seed)
    return Sequential(Conv2d(3, 4, 3, padding=1, bias=False, rng=rng), BatchNorm2d(4), ReLU(),
                      Conv2d(4, 2, 1, rng=rng))


def trained_a_little(seed=0):
    net = small_net(seed)
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32)
    for _ in range(2):  # two steps: momentum buffers and BatchNorm running stats are non-trivial
        net.zero_grad()
        y = net.forward(x)
        net.backward(np.ones_like(y))
        opt.step()
    return net, opt


def test_round_trip_restores_everything(tmp_path):
    net, opt = trained_a_little()
    rng = np.random.default_rng(7)
    rng.random(3)  # advance the stream: the saved state is mid-stream
    path = save_checkpoint(tmp_path / "run" / "ckpt.npz", net, opt, iteration=42,
                           config={"lr": 0.1, "name": "x"}, rng=rng, extra={"history": [1.5, 2.5]})
    expected_next = rng.random(4)

    net2, opt2 = small_net(seed=99), None
    opt2 = SGD(net2.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng2 = np.random.default_rng(123)
    meta = load_checkpoint(path, net2, opt2, rng2)

    assert meta["iteration"] == 42 and meta["config"] == {"lr": 0.1, "name": "x"}
    assert meta["extra"] == {"history": [1.5, 2.5]}
    for (k, a), (k2, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)  # weights and BatchNorm running statistics
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(v, opt2.state_dict()[k])  # momentum buffers
    np.testing.assert_array_equal(rng2.random(4), expected_next)  # the same random stream


def test_dataclass_config_is_stored_as_json(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        lr: float = 0.05
        model: str = "tiny"

    net, _ = trained_a_little()
    save_checkpoint(tmp_path / "c.npz", net, config=Cfg())
    _, _, meta = read_checkpoint(tmp_path / "c.npz")
    assert meta["config"] == {"lr": 0.05, "model": "tiny"}


def test_interrupted_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    net, opt = trained_a_little()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, net, opt, iteration=1)
    before = path.read_bytes()

    def crash(f, **arrays):  # the write dies halfway through (Ctrl-C, disk full...)
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, net, opt, iteration=2)
    assert path.read_bytes() == before  # the previous checkpoint is intact
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # and no temporary file is left behind
    monkeypatch.undo()
    assert read_checkpoint(path)[2]["iteration"] == 1


def test_pickled_content_is_refused(tmp_path):
    # an .npz holding an object array needs pickle to load: never accepted
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array(json.dumps({"iteration": 0})), payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="evil.npz"):
        read_checkpoint(path)


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="bad.npz"):
        read_checkpoint(tmp_path / "bad.npz")
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    with pytest.raises(CheckpointError, match="meta"):
        read_checkpoint(tmp_path / "weights.npz")


def test_checkpoint_of_another_model_is_refused(tmp_path):
    net, _ = trained_a_little()
    save_checkpoint(tmp_path / "c.npz", net)
    rng = np.random.default_rng(0)
    other = Sequential(Conv2d(3, 8, 3, rng=rng))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "c.npz", other)


def test_checkpoint_gets_the_umask_permissions_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c.npz", small_net(0))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


# ---- leftovers of a killed write ---------------------------------------------------------------

def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    # What a kill -9 during savez_atomic leaves: its temporary file, today's name (a dead
    # writer's pid) and the name versions before 2026-12-02 used (".tmp-" + 8 characters).
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = [tmp_path / f".minissd-tmp-{dead}-abcd1234.npz", tmp_path / ".tmp-x1y2z3_q.npz"]
    live = tmp_path / f".minissd-tmp-{os.getppid()}-abcd1234.npz"  # a running writer's: kept
    theirs = [tmp_path / n for n in ("checkpoint.npz", ".tmp-notes.txt", "tmp-abcd1234.npz",
                                     ".tmp-abcd12345.npz", ".minissd-tmp-abcd1234.npz")]
    for p in stale + [live] + theirs:
        p.write_bytes(b"x" * 100)
    removed = remove_stale_temporaries(tmp_path)
    assert removed == sorted(str(p) for p in stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [live] + theirs)
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_a_write_killed_midway_leaves_a_temporary_that_the_next_start_removes(tmp_path, monkeypatch):
    # savez_atomic's own temporary name is one that remove_stale_temporaries recognises.
    net = small_net(0)
    seen = []

    def die(f, **arrays):  # the process "dies" after the temporary file exists
        seen.extend(p.name for p in tmp_path.iterdir())
        raise SystemExit("killed")
    monkeypatch.setattr(np, "savez", die)
    with pytest.raises(SystemExit):
        save_checkpoint(tmp_path / "c.npz", net)
    monkeypatch.undo()
    (name,) = seen
    (tmp_path / name).write_bytes(b"half")  # as kill -9 would have left it (no cleanup ran)
    assert remove_stale_temporaries(tmp_path) == [str(tmp_path / name)]


# ---- hostile and damaged files ---------------------------------------------------------------

GiB = 2**30


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A ~5 MB .npz whose 'model/0.weight' entry inflates to 1 GiB of zeros (honest headers)."""
    import zipfile

    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("meta.npy", "w") as f:
            np.lib.format.write_array(f, np.array(json.dumps({"iteration": 0})))
        with zf.open("model/0.weight.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (GiB // 4,)})
            chunk = bytes(2**22)
            for _ in range(GiB // len(chunk)):
                f.write(chunk)
    assert os.path.getsize(path) < 8 * 2**20
    return path


@pytest.mark.parametrize("how", ["read", "load into a model"])
def test_a_small_file_with_a_huge_entry_is_refused_before_inflating(bomb, how):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="bomb.npz") as err:
            if how == "read":
                read_checkpoint(bomb)
            else:
                load_checkpoint(bomb, small_net(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak  # NumPy reports its buffers to tracemalloc: 1 GiB before the fix
    assert ("zip bomb" in str(err.value)) if how == "read" else ("does not fit" in str(err.value))


def test_an_entry_that_declares_more_than_it_holds_is_refused(tmp_path):
    import zipfile

    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.npy", _npy_bytes(np.array(json.dumps({"iteration": 0}))))
        import io

        buf = io.BytesIO()  # a header declaring 40 MB, followed by 16 bytes of data
        np.lib.format.write_array_header_1_0(
            buf, {"descr": "<f4", "fortran_order": False, "shape": (10**7,)})
        zf.writestr("model/w.npy", buf.getvalue() + bytes(16))
    with pytest.raises(CheckpointError, match="forged.npz: entry 'model/w' declares"):
        read_checkpoint(path)


def _npy_bytes(array):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("meta, message", [
    ("{not json", "'meta' entry is not JSON"),
    ("[1, 2, 3]", "'meta' entry is JSON list, expected an object"),
    ('{"iteration": "seven"}', "meta['iteration'] is 'seven', expected an integer"),
    ('{"iteration": 1, "extra": [1]}', "meta['extra'] is [1], expected an object"),
])
def test_bad_meta_is_a_named_error(tmp_path, meta, message):
    path = tmp_path / "c.npz"
    np.savez(path, meta=np.array(meta))
    with pytest.raises(CheckpointError, match=f"c.npz: .*{_re(message)}"):
        read_checkpoint(path)


def _re(text):
    import re

    return re.escape(text)
