"""``lre score`` on a data dir and ``lre identify`` on the same audio give the same answer.

Both run stage 1's features (whole-recording VAD and CMVN), the same chunking of voiced
frames and the same model core, for a file that fits one chunk (20 s) and for files that do
not (150 s, 600 s).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_score import LANGS, make_exp

from lre.data.audio import load_audio
from lre.data.datadir import DataDir
from lre.features import FeatureConfig, compute_features
from lre.identify import Identifier
from lre.inference.records import read_records
from lre.metrics import read_scores
from lre.score import score_datadir

SR = 16000
SENTENCES = [
    ("en", "The weather is nice and warm today, so we walk to the market."),
    ("de", "Das Wetter ist heute schön und warm, wir gehen zum Markt."),
    ("fr", "Il fait beau et chaud aujourd'hui, nous allons au marché."),
    ("en", "Numbers like one hundred and twenty three are read aloud."),
]
DURATIONS = {"r020": 20.0, "r150": 150.0, "r600": 600.0}


def _recording(pieces: list[np.ndarray], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Speech pieces separated by 0.2-2.5 s of quiet noise, cut to ``seconds``."""
    out, n = [], 0
    while n < seconds * SR:
        gap = (1e-3 * rng.standard_normal(int(rng.uniform(0.2, 2.5) * SR))).astype(np.float32)
        piece = pieces[int(rng.integers(len(pieces)))] * rng.uniform(0.5, 1.0)
        out += [gap, piece.astype(np.float32)]
        n += len(gap) + len(piece)
    return np.concatenate(out)[: int(seconds * SR)]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    tmp = tmp_path_factory.mktemp("score_identify")
    pieces = []
    for i, (lang, text) in enumerate(SENTENCES):
        path = tmp / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", lang, "-w", str(path), text], check=True,
                       capture_output=True)
        pieces.append(load_audio(str(path), SR))
    rng = np.random.default_rng(0)
    wavs = {}
    for utt, seconds in DURATIONS.items():
        wavs[utt] = tmp / f"{utt}.wav"
        sf.write(wavs[utt], _recording(pieces, seconds, rng), SR, subtype="PCM_16")
    data = tmp / "data"
    DataDir(data, wav_scp={u: str(p) for u, p in wavs.items()},
            utt2lang=dict.fromkeys(wavs, "en"), utt2spk=dict.fromkeys(wavs, "spk")).write()
    cfg = FeatureConfig()
    compute_features(data, cfg, nj=1)
    exp = make_exp(tmp / "exp", cfg, seed=3)
    score_datadir(exp, data, tmp / "out")
    utts, langs, log_post = read_scores(tmp / "out" / "scores_raw.tsv")
    records = {r.id: r for r in read_records(tmp / "out" / "attention.jsonl")}
    assert langs == LANGS
    return {"exp": exp, "wavs": wavs, "scores": dict(zip(utts, log_post, strict=True)),
            "records": records}


@pytest.mark.parametrize("utt", sorted(DURATIONS))
def test_identify_gives_what_score_gives(scored, utt):
    r = Identifier.from_pretrained(scored["exp"]).identify(scored["wavs"][utt])
    scored_record = scored["records"][utt]
    assert r.chunks == scored_record.chunks and (r.chunks == 1) == (utt == "r020")
    ours = np.array([r.posteriors[lang] for lang in LANGS])
    theirs = np.exp(scored["scores"][utt])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    np.testing.assert_allclose(np.log(ours), scored["scores"][utt], atol=1e-4)
    assert [(round(s.start, 3), round(s.end, 3)) for s in r.segments] == \
        [(s.start, s.end) for s in scored_record.segments]
    np.testing.assert_allclose([s.weight for s in r.segments],
                               [s.weight for s in scored_record.segments], atol=1e-4)
    assert r.segments[-1].end > DURATIONS[utt] - 3.0


def test_decoded_input_is_the_stage_input(scored, tmp_path: Path):
    """A pipe in place of the file (decoded whole, not streamed) changes nothing."""
    wav = scored["wavs"]["r150"]
    streamed = Identifier.from_pretrained(scored["exp"]).identify(wav)
    piped = Identifier.from_pretrained(scored["exp"]).identify(f"cat {wav} |")
    assert piped.posteriors == pytest.approx(streamed.posteriors, abs=1e-6)
    assert [s.start for s in piped.segments] == [s.start for s in streamed.segments]
