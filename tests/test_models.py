"""Models: shapes, masks, padding invariance, the batched HGRU levels against a plain loop,
segment spans, overfitting, model files, config errors."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lre.models import (
    LidModel,
    ModelOutput,
    available_models,
    build_model,
    default_config,
    load_model,
    save_model,
)
from lre.models.base import BidirectionalGRU
from lre.models.window_gru import window_gru_states
from lre.utils import LreError

D = 6
TINY = {
    "hgru": {"hidden1": 12, "hidden2": 10, "hidden3": 8, "attention": 6, "dense": 16},
    "bigru": {"hidden": 8, "attention": 6, "dense": 16},
    "tdnn": {"channels": 16, "stats_channels": 24, "embedding": 12},
}
IMPLS = ("native", "unrolled", "unrolled_shared")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (no thread-pool hand-offs per small op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name: str, langs: int = 3, seed: int = 0, **overrides) -> LidModel:
    torch.manual_seed(seed)
    model = build_model(name, D, langs, {**TINY[name], **overrides})
    if name == "tdnn":  # give batch norm non-trivial running statistics, then freeze them
        model.train()
        with torch.no_grad():
            model(torch.randn(4, 300, D) * 2 + 1, torch.tensor([300, 250, 120, 60]))
    return model.eval()


def rand(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, D, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------
# Shapes, masks, spans


@pytest.mark.parametrize("name", ["hgru", "bigru", "tdnn"])
def test_output_shapes_and_types(name):
    model = tiny(name, langs=4)
    x, lengths = rand(3, 523), torch.tensor([523, 300, 10])
    with torch.no_grad():
        out = model(x, lengths)
        seg = model.segment_logits(x, lengths)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (3, 4)
    k = out.attention.shape[1]
    assert k == 6  # ceil(523 / 100) segment columns
    assert out.segment_mask.shape == (3, k) and out.segment_mask.dtype == torch.bool
    assert out.segment_frames.shape == (3, k, 2) and out.segment_frames.dtype == torch.int64
    assert seg.shape == (3, k, 4)
    assert out.segment_logits is None


@pytest.mark.parametrize("name", ["hgru", "bigru", "tdnn"])
def test_forward_with_segments_equals_segment_logits(name):
    model = tiny(name, langs=4).eval()
    x, lengths = rand(3, 523), torch.tensor([523, 300, 10])
    with torch.no_grad():
        out = model(x, lengths, with_segments=True)
        plain = model(x, lengths)
        seg = model.segment_logits(x, lengths)
    torch.testing.assert_close(out.segment_logits, seg, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logits, plain.logits, atol=0, rtol=0)
    assert torch.isfinite(out.logits).all() and torch.isfinite(seg).all()
    # padding segments: exactly zero attention and zero segment logits
    assert (out.attention[~out.segment_mask] == 0).all()
    assert (seg[~out.segment_mask] == 0).all()
    torch.testing.assert_close(out.attention.sum(1), torch.ones(3), atol=1e-6, rtol=0)
    assert model.min_frames >= 1 and isinstance(model.config, dict)


def test_hgru_attention_masked_and_normalised():
    model = tiny("hgru")
    lengths = torch.tensor([1065, 1010, 1011, 523, 300, 154, 155, 50])
    x = rand(len(lengths), 1065)
    with torch.no_grad():
        out = model(x, lengths)
    # segment k is kept when it holds >= 55 real frames (half its 110), the first always
    assert out.segment_mask.sum(1).tolist() == [11, 10, 10, 5, 3, 1, 2, 1]
    att, mask = out.attention, out.segment_mask
    assert (att[~mask] == 0).all()  # exactly zero, not merely small
    assert (att[mask] > 0).all()
    torch.testing.assert_close(att.sum(1), torch.ones(len(lengths)), atol=1e-6, rtol=0)


def test_hgru_segment_frames_spans():
    model = tiny("hgru")
    x, lengths = rand(3, 523), torch.tensor([523, 250, 50])
    with torch.no_grad():
        out = model(x, lengths)
    real = [out.segment_frames[b][out.segment_mask[b]].tolist() for b in range(3)]
    assert real[0] == [[0, 110], [100, 210], [200, 310], [300, 410], [400, 510]]
    assert real[1] == [[0, 110], [100, 210]]     # [200, 250) has 50 < 55 real frames
    assert real[2] == [[0, 50]]                   # shorter than a segment: padded, one segment
    # a custom geometry: windows of 8 frames, shift 4, 5 windows per segment
    model = tiny("hgru", window=8, window_shift=4, segment_windows=5)
    assert (model.segment_hop, model.segment_span, model.min_frames) == (20, 24, 24)
    with torch.no_grad():
        out = model(rand(1, 64), torch.tensor([64]))
    assert out.segment_frames[0][out.segment_mask[0]].tolist() == [[0, 24], [20, 44], [40, 64]]


@pytest.mark.parametrize("name,overrides", [
    ("hgru", {}), ("hgru", {"window": 8, "window_shift": 4, "segment_windows": 5}),
    ("bigru", {}), ("tdnn", {"block_frames": 70}),
])
def test_geometry_attribute_is_what_the_forward_pass_does(name, overrides):
    """The geometry a model states from its config is the one its output spans follow."""
    model = tiny(name, **overrides)
    g = model.geometry(frame_shift=0.01)
    frames = g.frames(6)
    with torch.no_grad():
        out = model(rand(1, frames), torch.tensor([frames]))
    spans = out.segment_frames[0][out.segment_mask[0]].tolist()
    assert spans == [[k * g.hop, k * g.hop + g.span] for k in range(6)]
    assert g.segments(frames) == 6 and g.frames(1) == g.span


@pytest.mark.parametrize("name", ["bigru", "tdnn"])
def test_baseline_blocks(name):
    model = tiny(name)
    x, lengths = rand(2, 523), torch.tensor([523, 180])
    with torch.no_grad():
        out = model(x, lengths)
    assert out.segment_frames[0].tolist() == [[0, 100], [100, 200], [200, 300], [300, 400],
                                              [400, 500], [500, 523]]
    assert out.segment_frames[1][out.segment_mask[1]].tolist() == [[0, 100], [100, 180]]
    if name == "tdnn":  # statistics pooling weighs frames equally: block share of frames
        expected = torch.tensor([100, 100, 100, 100, 100, 23]) / 523
        torch.testing.assert_close(out.attention[0], expected)
        torch.testing.assert_close(out.attention[1, :2], torch.tensor([100 / 180, 80 / 180]))


def test_bigru_block_attention_is_frame_attention_summed():
    model = tiny("bigru")
    x, lengths = rand(2, 250), torch.tensor([250, 130])
    with torch.no_grad():
        out = model(x, lengths)
        h, mask, _ = model.encode(x, lengths)
        _, frame_att = model.attention(h, mask)
    assert (frame_att[1, 130:] == 0).all()
    expected = torch.stack([frame_att[:, 0:100].sum(1), frame_att[:, 100:200].sum(1),
                            frame_att[:, 200:].sum(1)], dim=1)
    torch.testing.assert_close(out.attention, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", ["hgru", "bigru", "tdnn"])
def test_single_segment_logits_equal_utterance_logits(name):
    """With one segment, its segment logits are the utterance logits (same classifier on the
    same pooled vector)."""
    model = tiny(name)
    x = rand(2, 100)
    lengths = torch.tensor([100, 90])
    with torch.no_grad():
        out = model(x, lengths)
        seg = model.segment_logits(x, lengths)
    assert seg.shape[1] == 1
    torch.testing.assert_close(seg[:, 0], out.logits, atol=1e-5, rtol=0)


def test_hgru_segment_logits_are_classifier_of_level3_states():
    model = tiny("hgru")
    x, lengths = rand(2, 400), torch.tensor([400, 260])
    with torch.no_grad():
        seg = model.segment_logits(x, lengths)
        h, mask, _ = model.encode(x, lengths)
        expected = model.classifier(h) * mask[:, :, None]
    torch.testing.assert_close(seg, expected, atol=0, rtol=0)


@pytest.mark.parametrize("name,frames", [("hgru", 5), ("hgru", 1), ("bigru", 1), ("tdnn", 3)])
def test_inputs_shorter_than_the_model_needs_are_padded(name, frames):
    model = tiny(name)
    with torch.no_grad():
        out = model(rand(2, frames), torch.tensor([frames, 1]))
        seg = model.segment_logits(rand(2, frames), torch.tensor([frames, 1]))
    assert out.segment_mask.tolist() == [[True], [True]]
    assert out.segment_frames[:, 0].tolist() == [[0, frames], [0, 1]]
    assert out.attention.tolist() == [[1.0], [1.0]]
    assert torch.isfinite(out.logits).all() and seg.shape == (2, 1, 3)


# ------------------------------------------------------------------------------------------
# Padding invariance


@pytest.mark.parametrize("name", ["hgru", "bigru", "tdnn"])
def test_padding_invariance(name):
    """An utterance scores the same alone and in a batch with longer ones, whatever the
    padding holds."""
    model = tiny(name)
    lengths = torch.tensor([730, 523, 260, 95, 12])
    x = rand(len(lengths), 730)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = float("nan")  # garbage in the padding must not leak
    with torch.no_grad():
        out = model(x, lengths)
        seg = model.segment_logits(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = model(x[b:b + 1, :n], lengths[b:b + 1])
            seg_alone = model.segment_logits(x[b:b + 1, :n], lengths[b:b + 1])
            k = alone.attention.shape[1]
            torch.testing.assert_close(alone.logits[0], out.logits[b], atol=1e-5, rtol=0)
            torch.testing.assert_close(alone.attention[0], out.attention[b, :k], atol=1e-5,
                                       rtol=0)
            assert (out.attention[b, k:] == 0).all()
            assert torch.equal(alone.segment_frames[0], out.segment_frames[b, :k])
            torch.testing.assert_close(seg_alone[0], seg[b, :k], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------
# The batched HGRU levels equal a plain per-segment loop


def loop_segment_vectors(model, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Levels 1-2 the slow obvious way: for every segment, every window through nn.GRU."""
    win, shift, per_seg = model.window, model.window_shift, model.segment_windows
    gru1, gru2 = model.window_gru.gru, model.segment_gru
    out = []
    for b, n in enumerate(lengths.tolist()):
        utt = torch.zeros(x.shape[1] + 1000, D)
        utt[:n] = x[b, :n]
        vecs = []
        for k in range(int(model.segment_counts(torch.tensor([n]))[0])):
            window_states = []
            for j in range(per_seg):
                start = k * model.segment_hop + j * shift
                _, hw = gru1(utt[None, start:start + win])
                window_states.append(hw[0, 0])
            _, hs = gru2(torch.stack(window_states)[None])
            vecs.append(hs[0, 0])
        out.append(torch.stack(vecs))
    return out


@pytest.mark.parametrize("geometry", [{}, {"window": 7, "window_shift": 3, "segment_windows": 4}])
def test_hgru_batched_levels_equal_per_segment_loop(geometry):
    model = tiny("hgru", **geometry)
    frames = 3 * model.segment_hop + 37
    lengths = torch.tensor([frames, frames - 25, model.segment_span, 17])
    x = rand(len(lengths), frames, seed=3)
    with torch.no_grad():
        expected = loop_segment_vectors(model, x, lengths)
        for impl in IMPLS:
            model.window_gru.impl = impl
            s, _ = model.segment_vectors(x, lengths)
            for b, ref in enumerate(expected):
                torch.testing.assert_close(s[b, :len(ref)], ref, atol=1e-5, rtol=0,
                                           msg=lambda m, impl=impl: f"{impl}: {m}")
    # the training path (gradients on) computes the same values
    model.window_gru.impl = "auto"
    s, _ = model.segment_vectors(x, lengths)
    assert s.requires_grad
    for b, ref in enumerate(expected):
        torch.testing.assert_close(s[b, :len(ref)].detach(), ref, atol=1e-5, rtol=0)


def test_hgru_level1_gradients_match_nn_gru():
    model = tiny("hgru")
    x, lengths = rand(3, 350, seed=4), torch.tensor([350, 222, 90])
    y = torch.tensor([0, 2, 1])
    grads = {}
    for impl in ("native", "unrolled", "unrolled_shared"):
        model.zero_grad()
        model.window_gru.impl = impl
        F.cross_entropy(model(x, lengths).logits, y).backward()
        grads[impl] = {k: p.grad.clone() for k, p in model.named_parameters()}
    for impl in ("unrolled", "unrolled_shared"):
        for k, g in grads["native"].items():
            torch.testing.assert_close(grads[impl][k], g, atol=1e-5, rtol=1e-4,
                                       msg=lambda m, k=k, impl=impl: f"{impl} {k}: {m}")
    assert grads["native"]["window_gru.gru.weight_hh_l0"].abs().sum() > 0


@pytest.mark.parametrize("pooling", ["last", "mean", "stats"])
@pytest.mark.parametrize("window,shift", [(20, 10), (7, 3), (10, 10)])
def test_window_gru_gradients_equal_nn_gru_in_float64(window, shift, pooling):
    """Every implementation (the hand-written backward of ``unrolled_shared`` included)
    gives nn.GRU's outputs and gradients for x, all weights and biases, to float64 rounding,
    with overlapping windows (view and gather layouts) and with disjoint ones (level 2),
    for the last state of each window and for the mean of its states."""
    torch.manual_seed(5)
    gru = torch.nn.GRU(D, 9, batch_first=True).double()
    with torch.no_grad():
        for p in gru.parameters():
            p.uniform_(-0.8, 0.8)  # large enough that the gates are far from linear
    windows = 6
    x0 = torch.randn(3, (windows - 1) * shift + window, D, dtype=torch.float64)
    # a loss touching every state (and the standard deviations)
    weight = torch.randn(3, windows, 18 if pooling == "stats" else 9, dtype=torch.float64)
    results = {}
    for impl in IMPLS:
        x = x0.clone().requires_grad_()
        gru.zero_grad()
        h = window_gru_states(gru, x, windows, window, shift, impl, pooling)
        (h * weight).sum().backward()
        results[impl] = [h.detach(), x.grad] + [p.grad.clone() for p in gru.parameters()]
    names = ["h", "x"] + [n for n, _ in gru.named_parameters()]
    for impl in ("unrolled", "unrolled_shared"):
        for name, got, ref in zip(names, results[impl], results["native"], strict=True):
            torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10,
                                       msg=lambda m, i=impl, n=name: f"{i} {n}: {m}")
    # the reference: nn.GRU on each window by itself
    with torch.no_grad():
        for n in range(windows):
            states, _ = gru(x0[:, n * shift:n * shift + window])
            want = {"last": states[:, -1], "mean": states.mean(1),
                    "stats": torch.cat([states.mean(1), states.std(1, correction=0)], 1)
                    }[pooling]
            torch.testing.assert_close(results["native"][0][:, n], want, atol=1e-12,
                                       rtol=1e-10)
    assert all(g.abs().sum() > 0 for g in results["native"][1:])


def test_bidirectional_gru_equals_per_utterance_nn_gru():
    torch.manual_seed(0)
    bigru = BidirectionalGRU(5, 4, num_layers=2)
    x = torch.randn(3, 7, 5)
    lengths = torch.tensor([7, 4, 1])
    with torch.no_grad():
        h = bigru(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            inp = x[b:b + 1, :n]
            for fwd, bwd in zip(bigru.forward_grus, bigru.backward_grus, strict=True):
                out_f, _ = fwd(inp)
                out_b, _ = bwd(inp.flip(1))
                inp = torch.cat([out_f, out_b.flip(1)], dim=2)
            torch.testing.assert_close(h[b, :n], inp[0], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------
# Learning


def test_tiny_hgru_overfits_separable_sequences():
    """Four classes that differ in which feature dims carry a slow oscillation."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    n_per, frames, classes = 4, 210, 4
    t = torch.arange(frames, dtype=torch.float32)
    xs, ys = [], []
    for c in range(classes):
        for _ in range(n_per):
            x = 0.5 * torch.randn(frames, D, generator=gen)
            phase = float(torch.rand((), generator=gen)) * 6.28
            x[:, c] += 1.5 * torch.sin(2 * np.pi * t / 25 + phase)
            x[:, (c + 1) % D] += 1.0
            xs.append(x)
            ys.append(c)
    x, y = torch.stack(xs), torch.tensor(ys)
    lengths = torch.full((len(y),), frames)
    model = build_model("hgru", D, classes, {"hidden1": 16, "hidden2": 16, "hidden3": 8,
                                             "attention": 8, "dense": 16, "dropout": 0.0})
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(model(x, lengths).logits, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.2
    assert losses[-1] < 0.1 * losses[0], losses
    model.eval()
    with torch.no_grad():
        assert (model(x, lengths).logits.argmax(1) == y).all()


# ------------------------------------------------------------------------------------------
# Model files


@pytest.mark.parametrize("name", ["hgru", "bigru", "tdnn"])
def test_save_load_round_trip(tmp_path, name):
    model = tiny(name, langs=3)
    path = tmp_path / "exp" / "final.pt"
    save_model(path, model, ["de", "en", "fi"], extra={"epoch": 7, "feats": {"kind": "fbank"}})
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "lre-model-1" and set(raw) == {
        "format", "model_name", "model_config", "feat_dim", "langs", "state_dict", "extra"}
    loaded, meta = load_model(path)
    assert not loaded.training
    assert meta["model_name"] == name and meta["langs"] == ["de", "en", "fi"]
    assert meta["feat_dim"] == D and meta["model_config"] == model.config
    assert meta["extra"] == {"epoch": 7, "feats": {"kind": "fbank"}} and "state_dict" not in meta
    x, lengths = rand(2, 260), torch.tensor([260, 140])
    with torch.no_grad():
        a, b = model(x, lengths, with_segments=True), loaded(x, lengths, with_segments=True)
    for ta, tb in zip(a, b, strict=True):
        assert (ta is None and tb is None) or torch.equal(ta, tb)


def test_model_file_errors(tmp_path):
    model = tiny("hgru")
    with pytest.raises(LreError, match="2 languages given for a model with 3 outputs"):
        save_model(tmp_path / "m.pt", model, ["a", "b"])
    with pytest.raises(LreError, match="cannot be stored"):
        save_model(tmp_path / "m.pt", model, ["a", "b", "c"], extra={"f": object()})
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(LreError, match="not found"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(LreError, match="junk.pt: not a readable lre model file"):
        load_model(tmp_path / "junk.pt")
    buf = io.BytesIO()
    torch.save({"format": "something-else"}, buf)
    (tmp_path / "other.pt").write_bytes(buf.getvalue())
    with pytest.raises(LreError, match="not an lre model file"):
        load_model(tmp_path / "other.pt")
    save_model(tmp_path / "ok.pt", model, ["a", "b", "c"])
    data = torch.load(tmp_path / "ok.pt", weights_only=True)
    data["model_config"]["hidden1"] = 20  # weights no longer fit the config
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(LreError, match="weights do not fit a hgru model"):
        load_model(tmp_path / "bad.pt")


# ------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize("name,config,message", [
    ("hgru", {"window_shift": 30}, r"window_shift \(30\) must not exceed window \(20\)"),
    ("hgru", {"window": 0}, "window must be at least 1"),
    ("hgru", {"segment_windows": 0}, "segment_windows must be at least 1"),
    ("hgru", {"hidden2": 0}, "hidden2 must be at least 1"),
    ("hgru", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ("hgru", {"last_segment_min_fraction": 0}, "last_segment_min_fraction"),
    ("hgru", {"windw": 20}, "unknown key 'windw'"),
    ("hgru", {"window": "wide"}, "window = 'wide' is not an integer"),
    ("hgru", {"window": 2.5}, "is not an integer"),
    ("bigru", {"hidden": 0}, "hidden must be at least 1"),
    ("tdnn", {"channels": -1}, "channels must be at least 1"),
])
def test_bad_config_raises_lre_error(name, config, message):
    with pytest.raises(LreError, match=message):
        build_model(name, D, 3, config)


def test_config_registry_and_coercion():
    assert available_models() == ["hgru", "bigru", "tdnn", "ecapa"]
    cfg = default_config("hgru")
    assert (cfg["hidden1"], cfg["hidden2"], cfg["hidden3"], cfg["attention"], cfg["dense"]) \
        == (256, 256, 256, 128, 512)
    cfg["hidden1"] = 1  # a copy: the defaults do not change
    assert default_config("hgru")["hidden1"] == 256
    model = build_model("hgru", D, 3, {"hidden1": "24", "dropout": "0.25"})  # --set strings
    assert model.config["hidden1"] == 24 and model.config["dropout"] == 0.25
    with pytest.raises(LreError, match="unknown model 'lstm'"):
        build_model("lstm", D, 3)
    with pytest.raises(LreError, match="feat_dim"):
        build_model("hgru", 0, 3)


def test_ecapa_optional():
    assert default_config("ecapa")["channels"] == [512, 512, 512, 512, 1536]
    if importlib.util.find_spec("speechbrain") is None:
        with pytest.raises(LreError, match=r"ecapa needs `pip install lre\[baselines\]`"):
            build_model("ecapa", D, 3)
        return
    model = build_model("ecapa", D, 3, {"channels": [16, 16, 16, 16, 48],
                                        "attention_channels": 8, "se_channels": 8,
                                        "embedding": 12}).eval()
    x, lengths = rand(2, 230), torch.tensor([230, 120])
    with torch.no_grad():
        out = model(x, lengths)
        seg = model.segment_logits(x, lengths)
    assert isinstance(out, ModelOutput) and out.logits.shape == (2, 3)
    assert seg.shape == (2, 3, 3)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(2))
    # a few real training steps fit two utterances
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    y = torch.tensor([0, 2])
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x, lengths).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
