"""minissd.model: the SSD network agrees with its default boxes, its flattening order is
default_boxes' order, its backward is the gradient (float64 finite differences), and
SSD300 has the paper's shapes."""

import numpy as np
import pytest

from minissd.model import SSD, SSD300_CONFIG, TINY_CONFIG, SSDConfig, ssd300_vgg16, ssd_tiny
from minissd.model.summary import layer_table
from minissd.nn import Module, rel_error
from minissd.priors import PriorConfig, default_boxes

# A micro SSD for exact gradient checks: 12x12 input, maps 3x3 and 2x2, BatchNorm and L2Norm.
# (BatchNorm over a 1x1 map of a 2-image batch would be ill-conditioned for finite differences:
# with 2 values per channel x_hat is +-1 whatever the input.)
MICRO = SSDConfig(
    name="micro",
    tables=((("conv", 3, 3, 2, 1, 1), "M", 4),  # 12 -> 6 -> 3
            (("conv", 3, 1, 1, 0, 1), ("conv", 4, 3, 2, 1, 1))),  # 3 -> 2
    priors=PriorConfig.from_scales(12, (3, 2), s_min=0.3, s_max=0.8, aspect_ratios=((2,), ())),
    batch_norm=True, l2norm_first=True)


class Joined(Module):
    """SSD with one output (loc and conf side by side) so that nn.gradcheck-style checks apply."""

    def __init__(self, ssd):
        self.ssd = ssd

    def forward(self, x):
        loc, conf = self.ssd.forward(x)
        return np.concatenate([loc, conf], axis=-1)  # (B, P, 4 + C + 1)

    def backward(self, g):
        return self.ssd.backward(np.ascontiguousarray(g[..., :4]), np.ascontiguousarray(g[..., 4:]))


def test_tiny_outputs_follow_its_default_boxes(rng):
    model = ssd_tiny(num_classes=6)
    P = len(default_boxes(TINY_CONFIG.priors))
    assert model.num_priors == P == TINY_CONFIG.priors.num_priors
    x = rng.standard_normal((2, 3, 128, 128)).astype(np.float32)
    loc, conf = model.forward(x)
    assert loc.shape == (2, P, 4) and conf.shape == (2, P, 7)
    assert loc.dtype == np.float32 and conf.dtype == np.float32
    # several source maps: SSD's multi-scale idea
    assert len(TINY_CONFIG.priors.feature_maps) >= 4


def test_head_flattening_is_default_boxes_order():
    # Zero every head weight and give head m the bias  m*1000 + channel: the output row of
    # prior p must then hold the channels of its box b = p % k on its map, in the order
    # 4 offsets, C+1 scores. A transposed flatten (column before row, or box before
    # position) puts other values in those rows.
    model = SSD(MICRO, num_classes=2)
    per_box = 4 + 2 + 1
    for m, conv in enumerate(model.heads.convs):
        conv.weight.data[...] = 0
        conv.bias.data[...] = m * 1000 + np.arange(conv.bias.data.size)
    loc, conf = model.eval().forward(np.zeros((1, 3, 12, 12), np.float32))
    out = np.concatenate([loc, conf], axis=-1)[0]  # (P, 7)
    start = 0
    for m, (f, k) in enumerate(zip(MICRO.priors.feature_maps, MICRO.priors.boxes_per_location)):
        for p in range(f * f * k):
            b = p % k  # position (row, column) = p // k, box b within the location
            np.testing.assert_array_equal(out[start + p], m * 1000 + b * per_box + np.arange(per_box))
        start += f * f * k
    assert start == len(out)


def test_head_flattening_puts_each_location_at_its_prior(rng):
    # A bump in the input under one location of the first map changes that location's rows
    # of conf the most. Cheaper stand-in: one head, weights zero except the centre tap,
    # so output (i, j) reads source (i, j) only; check the row of prior (i, j, box 0).
    model = SSD(MICRO, num_classes=2).eval()
    source = rng.standard_normal((1, 4, 3, 3))
    conv = model.heads.convs[0]
    conv.weight.data[...] = 0
    conv.weight.data[:, 0, 1, 1] = 1.0  # every output channel = channel 0 of the source, same place
    conv.bias.data[...] = 0
    loc, _ = model.heads.forward([source.astype(np.float32), np.zeros((1, 4, 2, 2), np.float32)])
    k = MICRO.priors.boxes_per_location[0]
    for i in range(3):
        for j in range(3):
            assert loc[0, (i * 3 + j) * k, 0] == pytest.approx(source[0, 0, i, j], rel=1e-6)


def test_backward_matches_finite_differences_float64(rng):
    model = SSD(MICRO, num_classes=2, seed=3)
    net = Joined(model).to(np.float64)
    x = rng.standard_normal((2, 3, 12, 12))
    g = rng.standard_normal(net.forward(x).shape)  # fixed upstream gradient of L = sum(out * g)
    net.zero_grad()
    net.forward(x)
    net.backward(g)
    h = 1e-6
    for name, p in net.named_parameters():
        # centred differences on (up to) 5 entries of each parameter: every layer is covered
        # while the test stays fast; the analytic gradient is compared on the same entries
        flat = p.data.reshape(-1)
        picks = rng.choice(flat.size, size=min(5, flat.size), replace=False)
        numeric = np.zeros(len(picks))
        for n, i in enumerate(picks):
            old = flat[i]
            flat[i] = old + h
            plus = np.sum(net.forward(x) * g)
            flat[i] = old - h
            minus = np.sum(net.forward(x) * g)
            flat[i] = old
            numeric[n] = (plus - minus) / (2 * h)
        assert rel_error(p.grad.reshape(-1)[picks], numeric) < 1e-6, name  # correct: ~1e-9
    # the L2Norm branch and both stages were really checked
    names = [n for n, _ in net.named_parameters()]
    assert "ssd.l2norm.weight" in names and any(n.startswith("ssd.stages.1") for n in names)


def test_backward_without_source_gradient_sum_fails(rng):
    # A wrong backward that forgets the gradient coming back from the next stage (keeps only
    # the head's) must be caught by the same check: the first stage's weights then differ.
    model = SSD(MICRO, num_classes=2, seed=3)
    net = Joined(model).to(np.float64)
    x = rng.standard_normal((2, 3, 12, 12))
    g = rng.standard_normal(net.forward(x).shape)
    net.zero_grad()
    net.forward(x)
    net.backward(g)
    right = model.stages[0][0].weight.grad.copy()
    # recompute with stage 1 cut off from stage 0
    net.zero_grad()
    net.forward(x)
    grads = model.heads.backward(np.ascontiguousarray(g[..., :4]), np.ascontiguousarray(g[..., 4:]))
    model.stages[1].backward(grads[1])
    model.stages[0].backward(model.l2norm.backward(grads[0]))
    assert rel_error(model.stages[0][0].weight.grad, right) > 1e-3  # far above the 1e-6 bar


def test_config_whose_priors_disagree_is_refused():
    wrong = SSDConfig(name="wrong", tables=MICRO.tables,
                      priors=PriorConfig.from_scales(12, (4, 1), s_min=0.3, s_max=0.8))
    with pytest.raises(ValueError, match="feature maps"):
        SSD(wrong, num_classes=2)


def test_bad_input_shape_is_refused():
    model = SSD(MICRO, num_classes=2)
    with pytest.raises(ValueError, match=r"\(B, 3, 12, 12\)"):
        model.forward(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="num_classes"):
        SSD(MICRO, num_classes=0)


def test_ssd300_shapes_match_the_paper():
    maps = SSD300_CONFIG.feature_maps()
    assert maps == [(38, 512), (19, 1024), (10, 512), (5, 256), (3, 256), (1, 256)]
    assert SSD300_CONFIG.priors.boxes_per_location == (4, 6, 6, 6, 4, 4)
    assert SSD300_CONFIG.priors.num_priors == 8732
    fields = SSD300_CONFIG.receptive_fields()
    assert fields[0] == (92, 8)  # conv4_3 of VGG16: 92-pixel receptive field, stride 8
    rows = layer_table(SSD300_CONFIG, num_classes=20)
    heads = [r for r in rows if r["name"].startswith("head")]
    assert [r["out"][0] for r in heads] == [k * (20 + 1 + 4) for k in (4, 6, 6, 6, 4, 4)]
    # 26,285,486 parameters: the count of ssd.pytorch's SSD300 for VOC (21 classes incl. bg)
    assert rows[-1]["params"] == 26_285_486
    # ~31 GMACs for one 300x300 image
    assert 30e9 < rows[-1]["macs"] < 32e9


def test_layer_table_counts_the_built_parameters():
    model = ssd_tiny(num_classes=6)
    built = sum(p.data.size for p in model.parameters())
    assert layer_table(TINY_CONFIG, 6)[-1]["params"] == built


@pytest.mark.slow
def test_ssd300_forward_backward_on_one_300x300_image(rng):
    model = ssd300_vgg16(num_classes=20)
    x = rng.standard_normal((1, 3, 300, 300)).astype(np.float32)
    loc, conf = model.forward(x)
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    model.zero_grad()
    model.backward(np.full_like(loc, 1e-3), np.full_like(conf, 1e-3))
    assert np.abs(model.l2norm.weight.grad).sum() > 0  # the conv4_3 branch got a gradient
    assert all(np.isfinite(p.grad).all() for p in model.parameters())
    assert np.abs(model.stages[0][0].weight.grad).sum() > 0  # and it reached conv1_1


# ---- the registry, the tiny family and configs read back -------------------------------------

import hashlib  # noqa: E402
import json  # noqa: E402

from minissd.errors import ConfigError  # noqa: E402
from minissd.model import MODELS, build_model, model_config, tiny_config  # noqa: E402


def _fingerprint(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def test_default_tiny_is_bit_identical_to_before_the_family():
    # Recorded from the code before input_size/prior_scales existed (2026-12-02): same
    # parameters for seed 0, same default boxes, same config, whichever way it is asked for.
    for model in (build_model("tiny", 20), build_model("tiny", 20, seed=0, input_size=128),
                  MODELS["tiny"](20), ssd_tiny(20)):
        assert model.config == TINY_CONFIG
        assert _fingerprint(model) == "51298d348ddc23f13be699bc90c780d8cae8cd8ca426770d2eb34364780f236a"
        assert hashlib.sha256(model.priors.tobytes()).hexdigest() == \
            "af6c4c4f7ed33c96e08164550b19c8e86d9f4c4fb74971db1ad2ddfddee7a152"
    # the saved dict: the same but for priors.clip, a bool before the clip modes ("center" was
    # true); a dict saved then still loads as the same config
    old = TINY_CONFIG.to_dict()
    assert old["priors"]["clip"] == "center"
    old["priors"]["clip"] = True
    assert hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest() == \
        "e0ecfa993c9ab79ec328649e93ee1a3e9b7b3eea6a390dbf9277fdb5ac504985"
    assert SSDConfig.from_dict(json.loads(json.dumps(old))) == TINY_CONFIG
    assert _fingerprint(build_model("tiny", 20, seed=1)) != _fingerprint(build_model("tiny", 20))


@pytest.mark.parametrize("size, maps", [(64, (8, 4, 2, 1)), (96, (12, 6, 3, 2, 1)),
                                        (256, (32, 16, 8, 4, 2, 1)), (384, (48, 24, 12, 6, 3, 2, 1))])
def test_tiny_family_maps_follow_the_input_size(size, maps):
    cfg = tiny_config(size)
    assert cfg.input_size == size and cfg.priors.feature_maps == maps
    assert tuple(f for f, _ in cfg.feature_maps()) == maps
    assert cfg.priors.steps == tuple(size / f for f in maps)
    # the tiny rule: 0.1 on the first map, then 0.2 .. 0.8 linearly
    np.testing.assert_allclose(np.array(cfg.priors.min_sizes) / size,
                               [0.1] + list(np.linspace(0.2, 0.8, len(maps) - 1)))
    assert SSDConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_tiny_256_runs_forward(rng):
    model = build_model("tiny", 3, input_size=256)
    loc, conf = model.eval().forward(rng.standard_normal((1, 3, 256, 256)).astype(np.float32))
    assert loc.shape == (1, model.num_priors, 4) and conf.shape == (1, model.num_priors, 4)


def test_prior_scales_reach_the_default_boxes():
    pairs = ((0.05, 0.1), (0.1, 0.4), (0.3, 0.5), (0.5, 0.9), (0.8, 1.0))
    model = build_model("tiny", 2, prior_scales=pairs)
    assert model.config.name == "tiny-fit"
    np.testing.assert_allclose(model.priors[0, 2:], [0.05, 0.05], rtol=1e-6)  # map 1: the s_k square
    np.testing.assert_allclose(model.priors[1, 2:], [np.sqrt(0.005)] * 2, rtol=1e-6)  # then sqrt(s t)
    chain = build_model("tiny", 2, prior_scales=(0.1, 0.2, 0.4, 0.6, 0.8))  # m values: the paper's chain
    np.testing.assert_allclose(chain.priors, ssd_tiny(2).priors, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="yolo"), "model: unknown name 'yolo'"),
    (dict(input_size=100), "input_size: expected a multiple of 16"),
    (dict(input_size=2048), "input_size: expected a multiple of 16"),
    (dict(name="ssd300", input_size=512), "input_size: ssd300 takes 300 px only"),
    (dict(prior_scales=(0.1, 0.2)), "prior scales: expected 5 or 6 values"),
    (dict(prior_scales=(0.3, 0.2, 0.4, 0.6, 0.8)), "must not decrease"),
    (dict(prior_scales=((0.2, 0.1),) * 5), "min <= max"),
    (dict(prior_scales=(0.1, 0.2, float("nan"), 0.6, 0.8)), "positive fractions"),
])
def test_bad_model_requests_name_what_is_wrong(kwargs, message):
    kwargs = {"name": "tiny", **kwargs}
    with pytest.raises(ConfigError, match=message):
        model_config(**kwargs)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("priors"), "missing field 'priors'"),
    (lambda d: d.pop("tables"), "missing field 'tables'"),
    (lambda d: d.update(colour=1), "unknown field 'colour'"),
    (lambda d: d.update(priors=[1, 2]), "field 'priors' is tuple, expected a dict"),
    (lambda d: d["priors"].update(shape=3), "unknown field priors.shape"),
    (lambda d: d["priors"].pop("steps") and d["priors"].update(steps=[8]), "field 'priors': .*steps"),
    (lambda d: d["priors"].update(feature_maps=[8, 4, 2, 1, 1]), "priors.feature_maps"),
    (lambda d: d.update(tables=[["Q"]]), "field 'tables'"),
    (lambda d: d.update(tables=3), "field 'tables' must be a list"),
])
def test_from_dict_names_the_missing_or_bad_field(change, message):
    d = json.loads(json.dumps(TINY_CONFIG.to_dict()))
    change(d)
    with pytest.raises(ConfigError, match=message):
        SSDConfig.from_dict(d, where="ck.npz model_config")
    with pytest.raises(ConfigError, match="expected a dict"):
        SSDConfig.from_dict([1])


# ---- the layout switches: --aspect-ratios and --source-maps (docs/switches.md) -----------------

from minissd.model import with_source_maps  # noqa: E402

TINY_CELLS = (256, 64, 16, 4, 1)  # 16x16, 8x8, 4x4, 2x2, 1x1 locations


def test_source_maps_keep_the_heads_and_the_priors_of_those_maps_only(rng):
    full, model = build_model("tiny", 3), build_model("tiny", 3, source_maps=(0, 1))
    assert model.config.priors.feature_maps == (16, 8) and len(model.heads.convs) == 2
    assert model.num_priors == 4 * 256 + 4 * 64 == 1280
    loc, conf = model.forward(rng.standard_normal((2, 3, 128, 128)).astype(np.float32))
    assert loc.shape == (2, 1280, 4) and conf.shape == (2, 1280, 4)
    # the same cells as the full model's first two maps ...
    np.testing.assert_array_equal(model.priors[:, :2], full.priors[:1280, :2])
    # ... with the scales spread again from 0.1 (map 0's) to 1.0 (the largest box's): 0.1, 0.55, 1.0
    np.testing.assert_allclose(model.priors[0, 2:], [0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(model.priors[1, 2:], [np.sqrt(0.1 * 0.55)] * 2, rtol=1e-6)
    np.testing.assert_allclose(model.priors[1024, 2:], [0.55, 0.55], rtol=1e-6)
    np.testing.assert_allclose(model.priors[1025, 2:], [np.sqrt(0.55)] * 2, rtol=1e-6)
    # the layers up to map 1 are the full model's, drawn from the same seed; the rest are gone
    assert len(model.stages) == 2
    for a, b in zip(model.stages[1].parameters(), full.stages[1].parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_a_map_without_a_head_is_joined_onto_the_next_stage(rng):
    model = build_model("tiny", 3, source_maps=(1,))  # map 8 alone, the paper's "conv7 alone"
    assert len(model.stages) == 1 and model.num_priors == 4 * 64
    assert model.config.tables[0] == TINY_CONFIG.tables[0] + TINY_CONFIG.tables[1]
    loc, _ = model.forward(rng.standard_normal((1, 3, 128, 128)).astype(np.float32))
    assert loc.shape == (1, 256, 4)
    # SSD300 without conv4_3 loses the L2Norm that only conv4_3's head used
    assert with_source_maps(SSD300_CONFIG, (1, 2)).l2norm_first is False
    assert with_source_maps(SSD300_CONFIG, (0, 1)).l2norm_first is True
    assert with_source_maps(TINY_CONFIG, (0, 1, 2, 3, 4)) is TINY_CONFIG  # every map: unchanged


@pytest.mark.parametrize("sources", [(0,), (1,)])
def test_backward_with_fewer_source_maps_matches_finite_differences(rng, sources):
    model = SSD(with_source_maps(MICRO, sources), num_classes=2, seed=3)
    net = Joined(model).to(np.float64)
    x = rng.standard_normal((2, 3, 12, 12))
    g = rng.standard_normal(net.forward(x).shape)
    net.zero_grad()
    net.forward(x)
    net.backward(g)
    h = 1e-6
    for name, p in net.named_parameters():
        flat = p.data.reshape(-1)
        for i in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + h
            plus = np.sum(net.forward(x) * g)
            flat[i] = old - h
            minus = np.sum(net.forward(x) * g)
            flat[i] = old
            assert rel_error(p.grad.reshape(-1)[i], (plus - minus) / (2 * h)) < 1e-6, name


def test_aspect_ratios_set_the_boxes_per_location_and_the_heads():
    squares = build_model("tiny", 3, aspect_ratios=((),) * 5)  # "1;1;1;1;1": the two squares only
    assert squares.config.priors.boxes_per_location == (2,) * 5
    assert squares.num_priors == 2 * sum(TINY_CELLS) == 682
    assert squares.heads.convs[0].weight.data.shape[0] == 2 * (4 + 3 + 1)  # k (4 + C + 1) filters
    paper = build_model("tiny", 3, aspect_ratios=((2,), (2, 3), (2, 3), (2,), (2,)))
    assert paper.config.priors.boxes_per_location == (4, 6, 6, 4, 4) and paper.num_priors == 1524
    # map 1's boxes at cell (0, 0): the squares, then 2:1, 1:2, 3:1, 1:3 at s = 0.2
    s, r2, r3 = 0.2, np.sqrt(2), np.sqrt(3)
    np.testing.assert_allclose(paper.priors[1024 + 2:1024 + 6, 2:],
                               [[s * r2, s / r2], [s / r2, s * r2], [s * r3, s / r3], [s / r3, s * r3]], rtol=1e-6)


def test_a_checkpoint_of_a_changed_layout_reloads(tmp_path, rng):
    from minissd.checkpoint import save_checkpoint
    from minissd.detect import load_model

    model = build_model("tiny", 2, seed=4, aspect_ratios=((),) * 5, source_maps=(1, 2), clip="corner")
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, extra={"classes": ["a", "b"], "model": "tiny",
                                        "model_config": model.config.to_dict()})
    again, classes = load_model(path)
    assert again.config == model.config and again.config.priors.clip == "corner" and classes == ["a", "b"]
    np.testing.assert_array_equal(again.priors, model.priors)
    x = rng.standard_normal((1, 3, 128, 128)).astype(np.float32)
    model.eval()
    for a, b in zip(model.forward(x), again.forward(x)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(source_maps=(5,)), "source_maps: expected increasing indices from 0 to 4"),
    (dict(source_maps=(1, 0)), "source_maps: expected increasing"),
    (dict(source_maps=(1, 1)), "each at most once"),
    (dict(source_maps=()), "source_maps"),
    (dict(aspect_ratios=((2,),) * 4), "aspect_ratios: expected one list of ratios per source map \\(5"),
    (dict(aspect_ratios=((0,),) * 5), "ratios must be > 0"),
    (dict(clip="edges"), "PriorConfig.clip"),
])
def test_bad_layouts_name_what_is_wrong(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        model_config("tiny", **kwargs)
