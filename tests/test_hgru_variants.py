"""The HGRU and its variants (convolutional front, attentive statistics pooling, layer norm):
shapes and masks, padding invariance, the batched levels against a plain per-segment loop,
one segment scored alone, ONNX export with dynamic frames, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lre.models import build_model
from lre.models.hgru import HGRU
from lre.utils import LreError

D = 6
TINY = {"hidden1": 12, "hidden2": 10, "hidden3": 8, "attention": 6, "dense": 16}
VARIANTS = {
    "default": {},
    "stats": {"pooling": "stats"},
    "conv1": {"front": "conv", "front_channels": 7, "front_kernel": 3},
    "conv2": {"front": "conv", "front_channels": 7, "front_kernel": 5, "front_stride": 2},
    "deep": {"front": "conv", "front_layers": 3, "front_channels": 7, "front_stride": 2},
    "deepnorm": {"front": "conv", "front_layers": 2, "front_channels": 7, "front_stride": 2,
                 "front_norm": "layer"},
    "norm": {"layer_norm": True},
    "bi1": {"window_bidirectional": True},
    "winmean": {"window_pooling": "mean"},
    "winstats": {"window_pooling": "stats", "segment_pooling": "mean"},
    "heads3": {"attention_heads": 3, "segment_pooling": "mean"},
    "heads2stats": {"attention_heads": 2, "pooling": "stats"},
    "bi1mean": {"window_pooling": "mean", "window_bidirectional": True,
                "segment_pooling": "mean"},
    "bi2": {"segment_bidirectional": True},
    "segmean": {"segment_pooling": "mean"},
    "segstats": {"segment_pooling": "stats", "segment_bidirectional": True},
    "local1": {"timeline_context": 1},
    "local2": {"timeline_context": 2, "attention_heads": 2, "pooling": "stats",
               "front": "conv", "front_channels": 7, "front_stride": 2},
    # level-1 windows side by side (shift = window): 1 s segments of 5 windows, no overlap
    "tiled": {"window_shift": 20, "segment_windows": 5, "front": "conv", "front_channels": 7,
              "front_stride": 2, "front_norm": "layer", "segment_pooling": "mean"},
    "all": {"front": "conv", "front_channels": 5, "front_stride": 2, "pooling": "stats",
            "layer_norm": True, "segment_bidirectional": True, "window_bidirectional": True,
            "window_pooling": "stats"},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(variant: str, langs: int = 3, seed: int = 0) -> HGRU:
    torch.manual_seed(seed)
    model = build_model("hgru", D, langs, {**TINY, **VARIANTS[variant]})
    # non-trivial layer-norm parameters, so that a wrong placement shows
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def rand(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_masks(variant):
    model = tiny(variant, langs=4)
    lengths = torch.tensor([1065, 523, 300, 154, 50])
    x = rand(len(lengths), 1065)
    with torch.no_grad():
        out = model(x, lengths, with_segments=True)
    # a segment every hop frames, a trailing one when half its span is real (tiled: 154
    # frames hold a second 100-frame segment; 110-frame ones, not)
    c = model.config
    hop = c["segment_windows"] * c["window_shift"]
    span = (c["segment_windows"] - 1) * c["window_shift"] + c["window"]
    counts = [11, 5, 3, 2, 1] if variant == "tiled" else [11, 5, 3, 1, 1]
    k = out.attention.shape[1]
    assert out.logits.shape == (5, 4) and k == counts[0]
    assert out.segment_logits.shape == (5, k, 4)
    assert out.segment_mask.sum(1).tolist() == counts
    assert (out.attention[~out.segment_mask] == 0).all()
    assert (out.attention[out.segment_mask] > 0).all()
    assert (out.segment_logits[~out.segment_mask] == 0).all()
    torch.testing.assert_close(out.attention.sum(1), torch.ones(5), atol=1e-6, rtol=0)
    heads = model.config["attention_heads"]
    dim = heads * (4 if model.config["pooling"] == "stats" else 2) * TINY["hidden3"]
    assert out.embedding.shape == (5, dim)
    if heads > 1:  # each head a distribution over the real segments; attention their mean
        assert out.head_attention.shape == (5, heads, k)
        assert (out.head_attention[~out.segment_mask[:, None, :].expand(-1, heads, -1)]
                == 0).all()
        torch.testing.assert_close(out.head_attention.sum(2), torch.ones(5, heads),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(out.head_attention.mean(1), out.attention)
        assert not torch.allclose(out.head_attention[:, 0], out.head_attention[:, 1])
    else:
        assert out.head_attention is None
    # the geometry users read is in input frames whatever the front's stride
    assert (model.segment_hop, model.segment_span) == (hop, span)
    assert (hop, span) == ((100, 100) if variant == "tiled" else (100, 110))
    assert out.segment_frames[1][out.segment_mask[1]].tolist() == [
        [k * hop, k * hop + span] for k in range(5)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_invariance(variant):
    model = tiny(variant)
    lengths = torch.tensor([730, 523, 261, 95, 13])
    x = rand(len(lengths), 730)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = float("nan")
    with torch.no_grad():
        out = model(x, lengths, with_segments=True)
        for b, n in enumerate(lengths.tolist()):
            alone = model(x[b:b + 1, :n], lengths[b:b + 1], with_segments=True)
            k = alone.attention.shape[1]
            torch.testing.assert_close(alone.logits[0], out.logits[b], atol=1e-5, rtol=0)
            torch.testing.assert_close(alone.attention[0], out.attention[b, :k], atol=1e-5,
                                       rtol=0)
            torch.testing.assert_close(alone.segment_logits[0], out.segment_logits[b, :k],
                                       atol=1e-5, rtol=0)


def pool_window(gru: torch.nn.GRU, window: torch.Tensor, pooling: str) -> torch.Tensor:
    """What level 1 keeps of one window ``(1, steps, dim)``, by plain ``nn.GRU``."""
    states, last = gru(window)
    if pooling == "last":
        return last[0, 0]
    mean = states[0].mean(0)
    if pooling == "mean":
        return mean
    return torch.cat([mean, states[0].std(0, unbiased=False).clamp(min=1e-5 ** 0.5)])


def loop_segment_vectors(model: HGRU, x: torch.Tensor, lengths: torch.Tensor
                         ) -> list[torch.Tensor]:
    """Levels 1-2 the obvious way: the front over the utterance alone, then every window of
    every segment through ``nn.GRU`` on its own."""
    stride = model.front_stride
    win, shift = model.window // stride, model.window_shift // stride
    pooling1 = model.config["window_pooling"]
    out = []
    for b, n in enumerate(lengths.tolist()):
        utt = torch.zeros(1, x.shape[1] + 1000, D)
        utt[0, :n] = x[b, :n]
        for i, conv in enumerate(model.front or []):
            utt = torch.relu(conv(utt.transpose(1, 2))).transpose(1, 2)
            if model.front_norms is not None:
                utt = model.front_norms[i](utt)
            utt[:, -(-n // stride):] = 0
        vecs = []
        for k in range(int(model.segment_counts(torch.tensor([n]))[0])):
            states = []
            for j in range(model.segment_windows):
                start = (k * model.segment_hop) // stride + j * shift
                window = utt[:, start:start + win]
                vec = pool_window(model.window_gru.gru, window, pooling1)
                if model.window_gru_backward is not None:  # the window read backwards
                    vec = torch.cat([vec, pool_window(model.window_gru_backward.gru,
                                                      window.flip(1), pooling1)])
                states.append(model.window_norm(vec))
            seq, hs = model.segment_gru(torch.stack(states)[None])
            pooling = model.config["segment_pooling"]
            if pooling == "last":
                # both directions' final states when level 2 is bidirectional
                vec = torch.cat(list(hs[:, 0]))
            else:
                vec = seq[0].mean(0)
                if pooling == "stats":
                    vec = torch.cat([vec, seq[0].std(0, unbiased=False).clamp(min=1e-5 ** 0.5)])
            vecs.append(model.segment_norm(vec))
        out.append(torch.stack(vecs))
    return out


@pytest.mark.parametrize("variant", ["conv1", "conv2", "deep", "norm", "bi1", "bi2",
                                     "segmean", "segstats", "winmean", "winstats",
                                     "bi1mean", "tiled", "all"])
def test_batched_levels_equal_per_segment_loop(variant):
    model = tiny(variant)
    frames = 3 * model.segment_hop + 37
    lengths = torch.tensor([frames, frames - 25, model.segment_span, 17])
    x = rand(len(lengths), frames, seed=3)
    with torch.no_grad():
        expected = loop_segment_vectors(model, x, lengths)
        for impl in ("native", "unrolled", "unrolled_shared"):
            for level1 in (model.window_gru, model.window_gru_backward):
                if level1 is not None:
                    level1.impl = impl
            s, _ = model.segment_vectors(x, lengths)
            for b, ref in enumerate(expected):
                torch.testing.assert_close(s[b, :len(ref)], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_segment_scored_alone_is_the_utterance(variant):
    """A segment's logits are those of a one-segment utterance with the same state: with
    statistics pooling, mean ``h_k`` and the floor standard deviation."""
    model = tiny(variant)
    x, lengths = rand(2, 100), torch.tensor([100, 90])
    with torch.no_grad():
        out = model(x, lengths)
        seg = model.segment_logits(x, lengths)
    assert seg.shape[1] == 1
    torch.testing.assert_close(seg[:, 0], out.logits, atol=1e-5, rtol=0)


def test_stats_pooling_is_weighted_mean_and_std():
    model = tiny("stats")
    x, lengths = rand(2, 523), torch.tensor([523, 300])
    with torch.no_grad():
        h, mask, _ = model.encode(x, lengths)
        pooled, a = model.attention(h, mask)
    for b in range(2):
        k = int(mask[b].sum())
        w, hb = a[b, :k].double(), h[b, :k].double()
        mean = (w[:, None] * hb).sum(0)
        std = ((w[:, None] * (hb - mean) ** 2).sum(0)).clamp(min=1e-5).sqrt()
        torch.testing.assert_close(pooled[b].double(), torch.cat([mean, std]), atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize("context", [1, 2])
def test_local_timeline_is_the_crop_around_each_segment(context):
    """With ``timeline_context = c`` a segment's logits are the utterance logits of the
    ``2c + 1`` whole segments around it, cut out of the frames (moved inside the
    recording at its ends; the whole recording when it is shorter)."""
    model = tiny("local1" if context == 1 else "default")
    model.timeline_context = context
    hop, span, width = model.segment_hop, model.segment_span, 2 * context + 1
    lengths = torch.tensor([6 * hop + span - hop, 2 * hop + span - hop])   # 6 and 2 segments
    x = rand(2, int(lengths[0]), seed=5)
    with torch.no_grad():
        seg = model.segment_logits(x, lengths)
        out = model(x, lengths, with_segments=True)
        torch.testing.assert_close(out.segment_logits, seg)
        for b in range(len(lengths)):
            count = int(model.segment_counts(lengths[b:b + 1])[0])
            for k in range(count):
                first = max(0, min(k - context, count - width))
                last = min(count, first + width)
                crop = x[b:b + 1, first * hop:(last - 1) * hop + span]
                alone = model(crop, torch.tensor([crop.shape[1]])).logits[0]
                torch.testing.assert_close(seg[b, k], alone, atol=1e-5, rtol=0)
            assert (seg[b, count:] == 0).all()
    # the whole recording's states classified segment by segment are another thing
    model.timeline_context = 0
    with torch.no_grad():
        assert not torch.allclose(model.segment_logits(x, lengths)[0], seg[0], atol=1e-3)


class _WithSegments(torch.nn.Module):
    def __init__(self, model: HGRU):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        out = self.model(feats, lengths, with_segments=True)
        return out.logits, out.segment_logits


def test_onnx_export_of_the_local_timeline(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = tiny("local2")
    path = tmp_path / "hgru.onnx"
    with torch.no_grad():
        torch.onnx.export(_WithSegments(model).eval(), (rand(2, 330), torch.tensor([330, 200])),
                          str(path), input_names=["feats", "lengths"],
                          output_names=["logits", "segment_logits"],
                          dynamic_axes={"feats": {0: "batch", 1: "frames"},
                                        "lengths": {0: "batch"}}, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2, l2 = rand(3, 777, seed=9), torch.tensor([777, 500, 61])
    got = sess.run(None, {"feats": x2.numpy(), "lengths": l2.numpy()})
    with torch.no_grad():
        ref = model(x2, l2, with_segments=True)
    np.testing.assert_allclose(got[0], ref.logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], ref.segment_logits.numpy(), atol=1e-5)


@pytest.mark.parametrize("variant,impl", [("default", "auto"), ("stats", "auto"),
                                          ("deep", "auto"), ("bi1", "auto"),
                                          ("bi2", "auto"),
                                          ("segstats", "auto"), ("winmean", "auto"),
                                          ("winstats", "auto"), ("bi1mean", "native"),
                                          ("heads3", "auto"), ("heads2stats", "auto"),
                                          ("tiled", "auto"), ("all", "native")])
def test_onnx_export_matches_torch(tmp_path, variant, impl):
    """``impl="native"`` is what ``lre export`` traces."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = tiny(variant)
    for level1 in (model.window_gru, model.window_gru_backward):
        if level1 is not None:
            level1.impl = impl
    path = tmp_path / "hgru.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (rand(2, 330), torch.tensor([330, 200])), str(path),
                          input_names=["feats", "lengths"],
                          output_names=["logits", "attention", "mask", "frames"],
                          dynamic_axes={"feats": {0: "batch", 1: "frames"},
                                        "lengths": {0: "batch"}},
                          dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2, l2 = rand(3, 777, seed=9), torch.tensor([777, 500, 61])
    got = sess.run(None, {"feats": x2.numpy(), "lengths": l2.numpy()})
    with torch.no_grad():
        ref = model(x2, l2)
    np.testing.assert_allclose(got[0], ref.logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], ref.attention.numpy(), atol=1e-5)
    np.testing.assert_array_equal(got[3], ref.segment_frames.numpy())


@pytest.mark.parametrize("config,message", [
    ({"front": "cnn"}, "front must be one of none, conv"),
    ({"pooling": "max"}, "pooling must be one of attention, stats"),
    ({"segment_pooling": "max"}, "segment_pooling must be one of last, mean, stats"),
    ({"window_pooling": "max"}, "window_pooling must be one of last, mean, stats"),
    ({"attention_heads": 0}, "attention_heads must be at least 1"),
    ({"front": "conv", "front_kernel": 4}, "front_kernel must be odd"),
    ({"front": "conv", "front_norm": "batch"}, "front_norm must be one of none, layer"),
    ({"front": "conv", "front_stride": 3}, "must be multiples of front_stride"),
    ({"timeline_context": -1}, "timeline_context must be >= 0, got -1"),
])
def test_bad_variant_config(config, message):
    with pytest.raises(LreError, match=message):
        build_model("hgru", D, 3, config)


def test_head_weights_reach_the_record_through_chunks():
    """Several heads: the torch runner keeps each head's weights, chunks combine them like
    the attention (each head sums to 1 over the record, their mean is the weight), and
    they survive the JSON record."""
    from lre.inference.records import ResultRecord
    from lre.inference.runner import ModelInput, TorchRunner, run_utterances

    model = tiny("heads3")
    feats = rand(1, 730, seed=4)[0].numpy()
    item = ModelInput("u1", feats, np.arange(len(feats)))
    runner = TorchRunner(model, ["a", "b", "c"])
    (_, res), = run_utterances(runner, [item], 0.01, 0.025, max_chunk_frames=400,
                               timeline=True)
    assert res.chunks == 2 and res.head_weights.shape == (3, len(res.weights))
    np.testing.assert_allclose(res.head_weights.sum(1), np.ones(3), atol=1e-6)
    np.testing.assert_allclose(res.head_weights.mean(0), res.weights, atol=1e-9)
    rec = ResultRecord.from_result("u1", ["a", "b", "c"], res.log_posteriors, res)
    back = ResultRecord.from_dict(rec.to_dict())
    got = np.array([s.head_weights for s in back.segments]).T
    np.testing.assert_allclose(got, res.head_weights, atol=1e-4)
    one = tiny("segmean")  # one head: no head weights anywhere
    (_, res1), = run_utterances(TorchRunner(one, ["a", "b", "c"]), [item], 0.01, 0.025,
                                max_chunk_frames=400)
    assert res1.head_weights is None
    rec1 = ResultRecord.from_result("u1", ["a", "b", "c"], res1.log_posteriors, res1)
    assert "head_weights" not in rec1.to_dict()["segments"][0]
