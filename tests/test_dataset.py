"""Data loading: whole-segment crops, determinism, bucketing, sharding, bad input."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from lre.dataset import (
    FeatureReader,
    LoaderConfig,
    SegmentGeometry,
    TrainBatchSampler,
    make_eval_loader,
    make_train_loader,
)
from lre.utils import LreError

REPO = Path(__file__).resolve().parents[1]
GEOM = SegmentGeometry(hop=100, span=110)

# Two sentences per language; each utterance is read by a different espeak voice variant.
TEXTS = {
    "en": ["The weather was cold and the children stayed inside all afternoon.",
           "She opened the window and listened to the birds in the garden."],
    "de": ["Das Wetter war kalt und die Kinder blieben den ganzen Nachmittag im Haus.",
           "Sie öffnete das Fenster und hörte den Vögeln im Garten zu."],
    "es": ["El tiempo era frío y los niños se quedaron en casa toda la tarde.",
           "Ella abrió la ventana y escuchó a los pájaros en el jardín."],
}
VARIANTS = ["m1", "f2"]
_CORPORA: dict[tuple, Path] = {}


def make_corpus(espeak_wav, cache: Path, dest: Path, langs=("en", "de", "es"),
                per_lang: int = 4, short_utt: bool = False) -> Path:
    """A real data dir at ``dest``: espeak-ng speech, then ``lre.features.compute_features``
    with the repository's fbank/VAD/CMVN configs. The audio and arks are made once per
    session under ``cache``; each caller gets its own copy of the data dir."""
    from lre.data.datadir import DataDir
    from lre.features import FeatureConfig, compute_features

    key = (tuple(langs), per_lang, short_utt)
    if key not in _CORPORA:
        base = cache / f"corpus{len(_CORPORA)}"
        wav_scp, utt2lang, utt2spk = {}, {}, {}
        for lang in langs:
            for i in range(per_lang):
                utt = f"{lang}-{i:02d}"
                wav = espeak_wav(lang, TEXTS[lang][i % 2], base / "wav" / f"{utt}.wav",
                                 voice_variant=VARIANTS[(i // 2) % 2], rate=150 + 15 * i)
                wav_scp[utt], utt2lang[utt], utt2spk[utt] = str(wav), lang, utt
        if short_utt:
            wav = espeak_wav("en", "Yes.", base / "wav" / "en-short.wav")
            wav_scp["en-short"], utt2lang["en-short"], utt2spk["en-short"] = (
                str(wav), "en", "en-short")
        DataDir(base / "data", wav_scp=wav_scp, utt2lang=utt2lang, utt2spk=utt2spk).write()
        config = FeatureConfig.from_files(REPO / "features" / "fbank.conf",
                                          REPO / "features" / "vad.conf",
                                          REPO / "features" / "cmvn.conf")
        compute_features(base / "data", config, nj=1, feat_dir=base / "feats")
        _CORPORA[key] = base / "data"
    shutil.copytree(_CORPORA[key], dest)  # feats.scp keeps pointing at the shared arks
    return dest


@pytest.fixture
def corpus(espeak_wav, tmp_path_factory, tmp_path):
    return make_corpus(espeak_wav, tmp_path_factory.getbasetemp(), tmp_path / "data")


# --------------------------------------------------------------------------------------------
# Geometry and the sampler (pure functions of the seed)


def test_geometry_whole_segments():
    assert [GEOM.frames(k) for k in (1, 2, 3, 4)] == [110, 210, 310, 410]
    assert [GEOM.segments(n) for n in (0, 109, 110, 209, 210, 409, 410)] == [0, 0, 1, 1, 2, 3, 4]
    assert [GEOM.seconds_to_segments(s) for s in (0.2, 2.0, 2.4, 2.6, 4.0)] == [1, 2, 2, 3, 4]


def _sampler(lengths, labels=None, **kw):
    labels = [0] * len(lengths) if labels is None else labels
    args = dict(batch_size=8, crop_segments=(2, 4), seed=3)
    args.update(kw)
    return TrainBatchSampler(lengths, labels, GEOM, **args)


def test_crops_are_whole_segments_inside_the_utterance():
    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 1500, size=300).tolist()
    sampler = _sampler(lengths)
    seen = Counter()
    for batch in sampler:
        for utt, start, frames in batch:
            seen[utt] += 1
            n = lengths[utt]
            assert 0 <= start and start + frames <= n
            if n >= 410:
                assert frames in (210, 310, 410)
            elif n >= 110:  # as many whole segments as the utterance has, at most the wanted
                assert frames in (110, 210, 310) and frames <= GEOM.frames(GEOM.segments(n))
                assert (frames - 110) % 100 == 0
            else:  # shorter than one segment: the whole utterance, padded later
                assert (start, frames) == (0, n)
    assert seen == Counter(range(300))  # every utterance exactly once per epoch
    all_frames = [r[2] for b in sampler for r in b if lengths[r[0]] >= 410]
    assert set(all_frames) == {210, 310, 410}


def test_sampler_is_deterministic_and_resumable():
    lengths = np.random.default_rng(1).integers(100, 1200, size=97).tolist()
    a, b = _sampler(lengths), _sampler(lengths)
    plans = []
    for epoch in (1, 2, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)
        plans.append(list(a))
    assert plans[0] != plans[1] != plans[2]
    other_seed = _sampler(lengths, seed=4)
    other_seed.set_epoch(1)
    assert list(other_seed) != plans[0]
    # A sampler restored from a state dict continues exactly where the first one was.
    a.set_epoch(2)
    restored = _sampler(lengths, seed=99)
    restored.load_state_dict(a.state_dict())
    assert list(restored) == plans[1]


def _padding_share(plan):
    padded = real = 0
    for batch in plan:
        longest = max(r[2] for r in batch)
        padded += longest * len(batch)
        real += sum(r[2] for r in batch)
    return 1 - real / padded


def test_length_bucketing_keeps_padding_low():
    rng = np.random.default_rng(2)
    # Many utterances shorter than the longest crop, so crop lengths really vary.
    lengths = np.concatenate([rng.integers(60, 420, 400), rng.integers(420, 1500, 400)]).tolist()
    bucketed = _padding_share(list(_sampler(lengths, bucket_pool=50)))
    unbucketed = _padding_share(list(_sampler(lengths, bucket_pool=1)))
    assert bucketed < 0.03
    assert unbucketed > 0.15
    # Bucketing reorders, it does not change the crops.
    crops = sorted(r for b in _sampler(lengths, bucket_pool=50) for r in b)
    assert crops == sorted(r for b in _sampler(lengths, bucket_pool=1) for r in b)


def test_language_balanced_sampling():
    labels = [0] * 30 + [1] * 6 + [2] * 4
    lengths = [500] * len(labels)
    sampler = _sampler(lengths, labels, balance="lang", batch_size=5)
    counts = Counter(labels[r[0]] for b in sampler for r in b)
    assert counts == {0: 14, 1: 14, 2: 14}
    minority = Counter(r[0] for b in sampler for r in b if labels[r[0]] == 2)
    assert sorted(minority.values()) == [3, 3, 4, 4]  # whole permutations before repeats


def test_distributed_shards_are_disjoint_and_even():
    lengths = np.random.default_rng(5).integers(200, 900, size=43).tolist()
    full = _sampler(lengths, batch_size=4)
    shards = [_sampler(lengths, batch_size=4, rank=r, world_size=2) for r in (0, 1)]
    plans = [list(s) for s in shards]
    assert len(plans[0]) == len(plans[1]) == 6  # 11 batches padded to 12
    whole = list(full)
    assert plans[0] == whole[0::2] and plans[1] == whole[1::2] + whole[:1]


# --------------------------------------------------------------------------------------------
# Real features


def test_reader_applies_vad_and_cmvn_from_feats_config(corpus):
    from lre.features import FeatureConfig, postprocess

    reader = FeatureReader(corpus)
    assert reader.feat_dim == 40
    feats_scp = kaldiio.load_scp(str(corpus / "feats.scp"))
    vad_scp = kaldiio.load_scp(str(corpus / "vad.scp"))
    config = FeatureConfig.from_dict(
        __import__("json").loads((corpus / "feats_config.json").read_text()))
    for utt in ("de-01", "es-03"):
        x, index = reader.read(utt)
        raw, vad = feats_scp[utt], vad_scp[utt] > 0.5
        ref, ref_index = postprocess(raw, vad, config)
        np.testing.assert_array_equal(x, ref)
        np.testing.assert_array_equal(index, ref_index)
        assert len(x) < len(raw) and vad[index].all()  # silence was dropped
        assert abs(float(x.mean())) < 0.2  # mean-normalised


def test_train_loader_batches_are_crops_of_the_features(corpus):
    lang2id = {"de": 0, "en": 1, "es": 2}
    config = LoaderConfig(batch_size=5, crop_min_seconds=1.0, crop_max_seconds=2.0)
    loader, sampler = make_train_loader(corpus, lang2id, GEOM, config, seed=7)
    sampler.set_epoch(1)
    plan = list(sampler)
    reader = FeatureReader(corpus)
    dataset = loader.dataset
    n_items = 0
    for batch, requests in zip(loader, plan, strict=True):
        assert batch.feats.shape[0] == len(requests) and batch.feats.shape[2] == 40
        assert batch.feats.shape[1] == max(r[2] for r in requests)
        for i, (utt_index, start, frames) in enumerate(requests):
            utt = dataset.utts[utt_index]
            assert batch.utts[i] == utt and frames in (110, 210)
            assert batch.labels[i].item() == lang2id[utt.split("-")[0]]
            x, _ = reader.read(utt)
            np.testing.assert_array_equal(batch.feats[i, :frames].numpy(), x[start:start + frames])
            assert batch.lengths[i].item() == frames
            assert not batch.feats[i, frames:].any()
            n_items += 1
    assert n_items == 12


def test_loader_workers_give_the_same_batches(corpus):
    lang2id = {"de": 0, "en": 1, "es": 2}
    out = []
    for workers in (0, 2):
        config = LoaderConfig(batch_size=4, num_workers=workers, cache="none")
        loader, sampler = make_train_loader(corpus, lang2id, GEOM, config, seed=1)
        sampler.set_epoch(2)
        out.append([(b.utts, b.feats, b.lengths) for b in loader])
    assert len(out[0]) == len(out[1]) == 3
    for (u0, f0, n0), (u1, f1, n1) in zip(*out, strict=True):
        assert u0 == u1 and torch.equal(f0, f1) and torch.equal(n0, n1)


def test_eval_loader_whole_utterances_longest_first(corpus):
    config = LoaderConfig(eval_max_frames=1500, eval_batch_size=3)
    loader = make_eval_loader(corpus, {"de": 0, "en": 1, "es": 2}, config)
    reader = FeatureReader(corpus)
    lengths, utts = [], []
    for batch in loader:
        assert batch.feats.shape[0] * batch.feats.shape[1] <= 1500 or len(batch) == 1
        assert len(batch) <= 3
        for i, utt in enumerate(batch.utts):
            x, index = reader.read(utt)
            n = batch.lengths[i].item()
            assert n == len(x)
            np.testing.assert_array_equal(batch.feats[i, :n].numpy(), x)
            np.testing.assert_array_equal(batch.frame_index[i].numpy(), index)
            lengths.append(n)
            utts.append(utt)
    assert sorted(utts) == sorted(loader.dataset.utts) and len(utts) == 12
    assert lengths == sorted(lengths, reverse=True)


# --------------------------------------------------------------------------------------------
# Bad input


def test_short_utterance_padded_or_skipped(espeak_wav, tmp_path_factory, tmp_path, caplog):
    data = make_corpus(espeak_wav, tmp_path_factory.getbasetemp(), tmp_path / "data",
                       langs=("en", "de"), per_lang=2, short_utt=True)
    short_len = len(FeatureReader(data).read("en-short")[0])
    assert 0 < short_len < 110
    lang2id = {"de": 0, "en": 1}
    with caplog.at_level(logging.INFO, logger="lre"):
        loader, sampler = make_train_loader(data, lang2id, GEOM, LoaderConfig(batch_size=8))
    assert "en-short" in loader.dataset.utts
    assert "1 utterance(s) shorter than one segment (110 frames) are padded" in caplog.text
    batch = next(iter(loader))
    i = batch.utts.index("en-short")
    assert batch.lengths[i].item() == short_len and batch.feats.shape[1] > short_len
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lre"):
        loader, _ = make_train_loader(data, lang2id, GEOM, LoaderConfig(short_utts="skip"))
    assert "en-short" not in loader.dataset.utts and len(loader.dataset) == 4
    assert "skipped 1 utterance(s) shorter than one segment (110 frames): en-short" in caplog.text


def _break_entry(data: Path, utt: str) -> Path:
    """Point ``utt``'s feats.scp entry past the end of a truncated copy of its ark."""
    lines = (data / "feats.scp").read_text().splitlines()
    out = []
    bad_ark = data / "broken.ark"
    for line in lines:
        key, spec = line.split(maxsplit=1)
        if key == utt:
            ark, offset = spec.rsplit(":", 1)
            bad_ark.write_bytes(Path(ark).read_bytes()[: int(offset) + 20])
            spec = f"{bad_ark}:{offset}"
        out.append(f"{key} {spec}")
    (data / "feats.scp").write_text("\n".join(out) + "\n")
    return bad_ark


def test_unreadable_entry_names_utterance_and_ark(corpus, caplog):
    bad_ark = _break_entry(corpus, "es-02")
    lang2id = {"de": 0, "en": 1, "es": 2}
    with pytest.raises(LreError) as err:
        make_train_loader(corpus, lang2id, GEOM, LoaderConfig())
    message = str(err.value)
    assert message.startswith("es-02: cannot read features from ") and str(bad_ark) in message
    assert "\n" not in message
    # Uncached: the error comes with the batch that needs it, as the same one-line message.
    loader, sampler = make_train_loader(corpus, lang2id, GEOM, LoaderConfig(cache="none"))
    errors = [e for batch in loader for e in batch.errors]
    assert len(errors) == 1 and errors[0].startswith("es-02: cannot read features")
    with caplog.at_level(logging.WARNING, logger="lre"):
        loader, _ = make_train_loader(corpus, lang2id, GEOM, LoaderConfig(bad_feats="skip"))
    assert "es-02" not in loader.dataset.utts and len(loader.dataset) == 11
    assert "skipped 1 utterance(s) with unreadable features: es-02" in caplog.text
    # A missing ark file is found before anything is read.
    (corpus / "broken.ark").unlink()
    with pytest.raises(LreError, match=r"^es-02: cannot read features: .*broken.ark: no such"):
        make_eval_loader(corpus, lang2id, LoaderConfig(cache="none"))


def test_missing_feats_scp_is_one_clear_error(tmp_path):
    (tmp_path / "utt2lang").write_text("a x\n")
    with pytest.raises(LreError, match=r"feats.scp: not found \(compute features first"):
        make_train_loader(tmp_path, {"x": 0}, GEOM, LoaderConfig())
