"""Stage 3 (lre score): score tables, LLRs, attention timing, chunks, calibration, bad input."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

from lre.cli import main
from lre.data.audio import load_audio
from lre.features import FeatureConfig, extract, postprocess
from lre.inference.chunks import chunk_bounds, combine_chunks
from lre.metrics import read_scores
from lre.models import build_model, load_model, save_model
from lre.score import score_datadir
from lre.utils import LreError

LANGS = ["de", "en", "fr"]
TINY = {"hidden1": 16, "hidden2": 16, "hidden3": 16, "attention": 8, "dense": 16}
TEXTS = {
    "de": ["Guten Morgen, wie geht es Ihnen heute?", "Das Wetter ist schön und warm."],
    "en": ["Good morning, how are you today?", "The weather is nice and warm."],
    "fr": ["Bonjour, comment allez-vous aujourd'hui?", "Il fait beau et chaud."],
}
SR = 16000
TONE_SECONDS, GAP_SECONDS = 2.5, 4.0
CHUNK_SECONDS = 6.0  # "long" is cut into chunks, every other utterance is not


def make_exp(path: Path, cfg: FeatureConfig, seed: int = 0) -> Path:
    """An experiment dir as training writes it: final.pt, feats_config.json, lang2id."""
    torch.manual_seed(seed)
    model = build_model("hgru", cfg.feat_dim, len(LANGS), TINY)
    path.mkdir(parents=True, exist_ok=True)
    save_model(path / "final.pt", model, LANGS)
    (path / "feats_config.json").write_text(json.dumps(cfg.to_dict()))
    (path / "lang2id").write_text("".join(f"{lang} {i}\n" for i, lang in enumerate(LANGS)))
    return path


def speak(lang: str, text: str, path: Path) -> np.ndarray:
    """espeak-ng speech as 16 kHz mono float32 (the module-scoped twin of ``espeak_wav``)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", lang, "-w", str(path), text], check=True,
                   capture_output=True)
    return load_audio(str(path), SR)


def tone_gap_tone(path: Path) -> Path:
    """Tone 2.5 s, exact silence 4 s, another tone 2.5 s (VAD keeps only the tones)."""
    t = np.arange(int(TONE_SECONDS * SR)) / SR
    audio = np.concatenate([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros(int(GAP_SECONDS * SR)),
                            0.5 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    sf.write(path, audio, SR, subtype="FLOAT")
    return path


def write_features(data: Path, audio: dict[str, np.ndarray], cfg: FeatureConfig) -> None:
    """feats.scp / vad.scp / utt2num_frames / feats_config.json as the feature stage writes."""
    data.mkdir(parents=True, exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as fw, \
            kaldiio.WriteHelper(f"ark,scp:{data}/vad.ark,{data}/vad.scp") as vw:
        for utt in sorted(audio):
            feats, vad = extract(audio[utt], cfg)
            fw(utt, feats)
            vw(utt, vad.astype(np.float32))
    (data / "utt2num_frames").write_text(
        "".join(f"{u} {len(extract(audio[u], cfg)[0])}\n" for u in sorted(audio)))
    (data / "feats_config.json").write_text(json.dumps(cfg.to_dict()))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A data dir with speech (one utterance long enough for 3 chunks) and tone/gap/tone."""
    tmp = tmp_path_factory.mktemp("score")
    cfg = FeatureConfig()
    audio: dict[str, np.ndarray] = {}
    for lang, texts in TEXTS.items():
        for i, text in enumerate(texts):
            audio[f"{lang}_{i}"] = speak(lang, text, tmp / "wav" / f"{lang}{i}.wav")
    audio["long"] = np.concatenate([audio[u] for u in sorted(audio)] * 3)
    audio["tones"], _ = sf.read(tone_gap_tone(tmp / "tones.wav"), dtype="float32")
    write_features(tmp / "data", audio, cfg)
    exp = make_exp(tmp / "exp", cfg)
    report = score_datadir(exp, tmp / "data", tmp / "out", max_chunk_seconds=CHUNK_SECONDS)
    return {"tmp": tmp, "exp": exp, "data": tmp / "data", "out": tmp / "out", "cfg": cfg,
            "audio": audio, "report": report}


def _model_on(setup, utt: str):
    """Model output on one utterance's post-processed features, straight from feats.scp."""
    data = setup["data"]
    feats = kaldiio.load_scp(str(data / "feats.scp"))[utt]
    vad = kaldiio.load_scp(str(data / "vad.scp"))[utt]
    x, index = postprocess(feats, vad, setup["cfg"])
    model, _ = load_model(setup["exp"] / "final.pt")
    return model, x, index


def test_tables_hold_every_utterance_and_language(setup):
    out = setup["out"]
    utts, langs, raw = read_scores(out / "scores_raw.tsv")
    assert utts == sorted(setup["audio"]) and langs == LANGS
    np.testing.assert_allclose(np.log(np.exp(raw).sum(axis=1)), 0.0, atol=1e-5)
    utts2, langs2, cal = read_scores(out / "scores.tsv")
    assert (utts2, langs2) == (utts, langs)
    np.testing.assert_array_equal(cal, raw)  # no calibration.json: the same scores
    assert setup["report"].scored == len(utts) and not setup["report"].failed
    assert not (out / "score_failed").exists()


def test_llr_matches_its_formula(setup):
    _, _, s = read_scores(setup["out"] / "scores.tsv")
    _, langs, llr = read_scores(setup["out"] / "llr.tsv")
    assert langs == LANGS
    n = len(LANGS)
    for i in range(len(s)):
        for lang in range(n):
            others = [math.exp(s[i, j]) for j in range(n) if j != lang]
            expected = s[i, lang] - math.log(sum(others) / (n - 1))
            assert abs(llr[i, lang] - expected) < 2e-5


def test_scores_equal_the_model_on_the_utterance(setup):
    utts, _, raw = read_scores(setup["out"] / "scores_raw.tsv")
    for utt in ("de_0", "fr_1", "tones"):
        model, x, _ = _model_on(setup, utt)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)[None], torch.tensor([len(x)])).logits[0]
        expected = torch.log_softmax(logits.double(), 0).numpy()
        np.testing.assert_allclose(raw[utts.index(utt)], expected, atol=2e-6)


def test_long_utterance_is_scored_in_chunks(setup):
    """Equal chunks of <= 6 s of speech; logits are the frame-weighted mean of the chunks'."""
    utts, _, raw = read_scores(setup["out"] / "scores_raw.tsv")
    model, x, index = _model_on(setup, "long")
    bounds = chunk_bounds(len(x), 600)
    assert len(bounds) >= 3 and max(e - s for s, e in bounds) <= 600
    logits = 0
    with torch.no_grad():
        for s, e in bounds:
            out = model(torch.from_numpy(x[s:e])[None], torch.tensor([e - s]))
            logits = logits + (e - s) / len(x) * out.logits[0].double()
    np.testing.assert_allclose(raw[utts.index("long")],
                               torch.log_softmax(logits, 0).numpy(), atol=2e-6)
    rec = next(json.loads(line) for line in (setup["out"] / "attention.jsonl").open()
               if json.loads(line)["id"] == "long")
    starts = [seg["start"] for seg in rec["segments"]]
    assert starts == sorted(starts)
    assert abs(sum(seg["weight"] for seg in rec["segments"]) - 1) < 2e-3
    duration = len(setup["audio"]["long"]) / SR
    assert rec["segments"][-1]["end"] > duration - 1.5  # the last chunk sits at the end


def test_attention_jsonl(setup):
    utts, langs, s = read_scores(setup["out"] / "scores.tsv")
    lines = (setup["out"] / "attention.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == utts
    for line, row in zip(lines, s, strict=True):
        rec = json.loads(line)
        assert set(rec) == {"id", "decision", "probability", "posteriors", "segments",
                            "calibrated", "chunks"}
        assert rec["decision"] == langs[int(np.argmax(row))]
        assert list(rec["posteriors"]) == LANGS
        np.testing.assert_allclose(list(rec["posteriors"].values()), np.exp(row), atol=6e-5)
        assert rec["segments"] and abs(sum(x["weight"] for x in rec["segments"]) - 1) < 2e-3
        duration = len(setup["audio"][rec["id"]]) / SR
        for seg in rec["segments"]:
            assert set(seg) == {"start", "end", "weight", "posteriors"}  # with the timeline
            assert list(seg["posteriors"]) == LANGS
            assert abs(sum(seg["posteriors"].values()) - 1) < 2e-4
            assert 0 <= seg["start"] < seg["end"] <= duration + 0.026


def test_attention_times_count_frames_removed_by_vad(setup):
    """Tone 2.5 s + silence 4 s + tone 2.5 s: VAD drops the silence; segments after it must
    start after it, at the times of their frames in the original audio."""
    rec = next(json.loads(line) for line in (setup["out"] / "attention.jsonl").open()
               if json.loads(line)["id"] == "tones")
    model, x, index = _model_on(setup, "tones")
    gap = (TONE_SECONDS, TONE_SECONDS + GAP_SECONDS)
    # VAD removed the gap (and nothing of the tones but their edges).
    assert len(x) < 0.6 * len(setup["audio"]["tones"]) / 160
    with torch.no_grad():
        out = model(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    spans = out.segment_frames[0][out.segment_mask[0]]
    expected = [(round(index[s] * 0.01, 3), round(index[min(e, len(x)) - 1] * 0.01 + 0.025, 3))
                for s, e in spans.tolist()]
    got = [(seg["start"], seg["end"]) for seg in rec["segments"]]
    assert got == expected
    for start, _ in got:
        assert not gap[0] + 0.03 < start < gap[1] - 0.03  # nothing starts inside the silence
    after = [s for s, _ in got if s >= gap[1] - 0.03]
    assert len(after) >= 2  # the second tone's segments sit after the silence...
    total = 2 * TONE_SECONDS + GAP_SECONDS
    assert got[-1][1] > total - 0.1  # ...up to the end of the audio (8 s), not at 4 s of speech
    assert got[0][0] < 0.05


def test_calibration_is_applied(setup, tmp_path):
    from lre.calibration import apply_calibration, save_calibration

    exp = setup["exp"]
    calib = {"format": "lre-calibration-1", "method": "affine", "langs": LANGS,
             "score_floor": -50.0, "alpha": 2.0, "beta": [0.5, -0.25, 0.0]}
    save_calibration(exp / "calibration.json", calib)
    try:
        rc = main(["score", "--model-dir", str(exp), "--data", str(setup["data"]),
                   "--out", str(tmp_path / "cal"), "--max-chunk-seconds", str(CHUNK_SECONDS)])
    finally:
        (exp / "calibration.json").unlink()
    assert rc == 0
    _, _, raw = read_scores(tmp_path / "cal" / "scores_raw.tsv")
    _, _, raw0 = read_scores(setup["out"] / "scores_raw.tsv")
    _, _, cal = read_scores(tmp_path / "cal" / "scores.tsv")
    np.testing.assert_array_equal(raw, raw0)
    np.testing.assert_allclose(cal, apply_calibration(calib, raw, LANGS), atol=2e-6)
    assert np.abs(cal - raw).max() > 0.1
    rec = json.loads((tmp_path / "cal" / "attention.jsonl").read_text().splitlines()[0])
    np.testing.assert_allclose(list(rec["posteriors"].values()), np.exp(cal[0]), atol=6e-5)


def test_unreadable_utterance_is_skipped_and_listed(setup, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("feats.scp", "vad.scp", "feats_config.json"):
        (data / name).write_text((setup["data"] / name).read_text())
    with (data / "feats.scp").open("a") as f:
        f.write(f"zz_broken {tmp_path}/missing.ark:17\n")
    with (data / "vad.scp").open("a") as f:
        f.write(f"zz_broken {tmp_path}/missing.ark:99\n")
    report = score_datadir(setup["exp"], data, tmp_path / "out",
                           max_chunk_seconds=CHUNK_SECONDS)
    assert list(report.failed) == ["zz_broken"]
    failed = (tmp_path / "out" / "score_failed").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith("zz_broken ")
    utts, _, _ = read_scores(tmp_path / "out" / "scores.tsv")
    assert utts == sorted(setup["audio"])


def test_features_of_another_kind_are_refused(setup, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "feats.scp").write_text((setup["data"] / "feats.scp").read_text())
    (data / "feats_config.json").write_text(json.dumps(FeatureConfig.default("fbank80")
                                                       .to_dict()))
    with pytest.raises(LreError, match="feat_dim=80"):
        score_datadir(setup["exp"], data, tmp_path / "out")


def test_combine_one_chunk_is_the_identity():
    from lre.inference.chunks import ChunkResult
    from lre.inference.runner import ChunkOutput

    out = ChunkOutput(np.array([0.3, -1.0, 2.0]), np.array([0.25, 0.75]),
                      np.array([[0, 110], [100, 150]]))
    res = combine_chunks([ChunkResult(out, np.array([0.0, 1.0]), np.array([1.1, 1.5]), 150)])
    np.testing.assert_array_equal(res.logits, out.logits)
    np.testing.assert_array_equal(res.weights, out.attention)
