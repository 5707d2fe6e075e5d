"""lre identify and the Python API: chunked reading, attention timing, bad files, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_score import LANGS, make_exp

import lre
from lre.cli import main
from lre.data.audio import load_audio, resample
from lre.data.audio_stream import AudioStream
from lre.features import FeatureConfig, KaldiOptions, extract, extract_with_energy, postprocess
from lre.features.pipeline import extract_blocks
from lre.identify import Identifier
from lre.inference.chunks import chunk_bounds
from lre.models import load_model
from lre.utils import LreError

SR = 16000


def speak(lang: str, text: str, path: Path) -> Path:
    """espeak-ng speech, written at espeak's own 22.05 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", lang, "-w", str(path), text], check=True,
                   capture_output=True)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identify")
    exp = make_exp(tmp / "exp", FeatureConfig())
    en = speak("en", "Good morning, how are you today? The weather is nice and warm.",
               tmp / "en.wav")
    fr = speak("fr", "Bonjour, comment allez-vous aujourd'hui? Il fait beau et chaud.",
               tmp / "fr.wav")
    # 44.1 kHz stereo (left: French, right: English, shifted) to exercise mono + resampling.
    a, b = load_audio(str(en), 44100), load_audio(str(fr), 44100)
    n = max(len(a), len(b))
    stereo = np.zeros((n, 2), dtype=np.float32)
    stereo[: len(b), 0], stereo[: len(a), 1] = b, a
    sf.write(tmp / "stereo44k.flac", stereo, 44100, subtype="PCM_24")
    # ~25 s at 16 kHz: speech, pauses, speech ... (three chunks of <= 10 s)
    en16, fr16 = load_audio(str(en), SR), load_audio(str(fr), SR)
    pause = np.zeros(int(0.7 * SR), dtype=np.float32)
    long = np.concatenate([en16, pause, fr16, pause] * 6)[: int(25 * SR)]
    long[-len(en16):] = en16  # end on speech
    sf.write(tmp / "long.wav", long, SR, subtype="FLOAT")
    return {"tmp": tmp, "exp": exp, "en": en, "fr": fr, "stereo": tmp / "stereo44k.flac",
            "long": tmp / "long.wav", "long_audio": long}


def test_python_api(env):
    ident = lre.Identifier.from_pretrained(env["exp"])
    r = ident.identify(env["en"], timeline=True)
    post = np.array(list(r.posteriors.values()))
    assert list(r.posteriors) == LANGS and abs(post.sum() - 1) < 1e-9
    assert r.language == LANGS[int(post.argmax())] and r.probability == post.max()
    assert len(r.top_k(2)) == 2 and r.top_k(2)[0] == (r.language, r.probability)
    assert r.top_k(2)[1][1] <= r.top_k(2)[0][1] and not r.calibrated
    assert r.duration == pytest.approx(sf.info(env["en"]).duration, abs=1e-9)
    assert r.segments and abs(sum(s.weight for s in r.segments) - 1) < 1e-6
    assert all(0 <= s.start < s.end <= r.duration + 0.026 for s in r.segments)
    assert len(r.timeline) == len(r.segments)
    for t in r.timeline:
        assert abs(sum(t.values()) - 1) < 1e-6
    d = json.loads(json.dumps(r.to_dict()))
    assert d["decision"] == r.language and len(d["segments"]) == len(r.segments)
    assert all(set(s) == {"start", "end", "weight", "posteriors"} for s in d["segments"])


def test_chunked_equals_unchunked_when_the_file_fits_one_chunk(env):
    """Streaming read (44.1 kHz stereo FLAC) + chunk machinery == the whole file at once."""
    exp = env["exp"]
    chunked = Identifier.from_pretrained(exp, chunk_seconds=60).identify(env["stereo"],
                                                                        timeline=True)
    whole = Identifier.from_pretrained(exp, chunk_seconds=None).identify(env["stereo"],
                                                                        timeline=True)
    assert chunked.chunks == 1
    assert chunked.posteriors == whole.posteriors
    assert chunked.segments == whole.segments and chunked.timeline == whole.timeline
    # The same audio given as an array of (samples, channels) at its own rate.
    stereo, sr = sf.read(env["stereo"], dtype="float32")
    arr = Identifier.from_pretrained(exp).identify(stereo, sample_rate=sr, timeline=True)
    assert arr.posteriors == whole.posteriors and arr.segments == whole.segments


def test_long_file_is_read_in_chunks_in_file_time(env):
    """25 s in chunks of <= 10 s: the whole file's features, VAD and CMVN (as stage 1 makes
    them), cut into equal chunks of voiced frames; segment times span the file, and the
    result is the speech-weighted combination of the model on each chunk."""
    ident = Identifier.from_pretrained(env["exp"], chunk_seconds=10)
    r = ident.identify(env["long"])
    cfg = ident.feats_config
    x, index = postprocess(*extract(env["long_audio"], cfg), cfg)
    bounds = chunk_bounds(len(x), 1000)
    assert r.chunks == len(bounds) >= 2 and r.duration == pytest.approx(25.0)
    starts = [s.start for s in r.segments]
    assert starts == sorted(starts) and starts[0] < 0.5
    assert r.segments[-1].end > 24.5
    assert abs(sum(s.weight for s in r.segments) - 1) < 1e-6  # float32 attention

    model, _ = load_model(env["exp"] / "final.pt")
    logits = 0.0
    with torch.no_grad():
        for s, e in bounds:
            out = model.eval()(torch.from_numpy(x[s:e])[None], torch.tensor([e - s]))
            logits = logits + (e - s) / len(x) * out.logits[0].double().numpy()
    expected = np.exp(logits - np.logaddexp.reduce(logits))
    np.testing.assert_allclose(list(r.posteriors.values()), expected, atol=1e-6)


@pytest.mark.parametrize("snip_edges", [True, False])
def test_chunk_features_are_the_whole_files_frames(env, tmp_path, snip_edges):
    """The samples read for a chunk give exactly the whole file's feature frames of that
    chunk, also without snip_edges (mirrored edges at the file's ends only); a chunked
    identify with such features runs through, its segments in order inside the file."""
    cfg = FeatureConfig(kaldi=KaldiOptions(num_mel_bins=40, dither=0.0,
                                           snip_edges=snip_edges))
    exp = make_exp(tmp_path / "exp", cfg)
    ident = Identifier.from_pretrained(exp, chunk_seconds=3)
    audio = env["long_audio"][: 10 * SR + 123]  # not a whole number of frames
    whole, _ = extract_with_energy(audio, cfg)
    total = len(whole)
    assert total == cfg.kaldi.num_frames(len(audio))
    bounds = chunk_bounds(total, 300)
    assert len(bounds) == 4
    naive_error = 0.0
    for f0, f1 in bounds:
        start, end, skip = cfg.kaldi.samples_of_frames(f0, f1, total, len(audio))
        feats, _ = extract_with_energy(audio[start:end], cfg)
        np.testing.assert_allclose(feats[skip:skip + f1 - f0], whole[f0:f1], atol=2e-4,
                                   err_msg=f"chunk {f0}-{f1}")
        if f0 > 0:  # reading from the chunk's first frame's hop instead
            naive, _ = extract_with_energy(audio[f0 * 160:end], cfg)
            naive_error = max(naive_error, float(np.abs(naive[0] - whole[f0]).max()))
    # without snip_edges that would mirror the first window of a chunk starting in speech
    assert (naive_error > 0.1) == (not snip_edges)
    # Block by block, the whole recording's features and VAD come out as from one call.
    blocks, vad_blocks = extract_blocks(lambda a, b: audio[a:b], len(audio), cfg, 3.0)
    ref, vad_ref = extract(audio, cfg)
    np.testing.assert_allclose(blocks, ref, atol=2e-4)
    np.testing.assert_array_equal(vad_blocks, vad_ref)
    chunked = ident.identify(audio)
    assert chunked.chunks == len(chunk_bounds(int(vad_ref.sum()), 300)) >= 3
    starts = [s.start for s in chunked.segments]
    assert starts == sorted(starts) and chunked.segments[-1].end <= len(audio) / SR + 0.03


def test_stream_reads_equal_whole_file_resampling(tmp_path):
    """Block reads with resampling equal resampling the whole file; memory stays bounded."""
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((44100 * 3 + 123, 2))).astype(np.float32)
    sf.write(tmp_path / "n.wav", x, 44100, subtype="FLOAT")
    ref = resample(x.mean(axis=1, dtype=np.float64).astype(np.float32), 44100, SR)
    with AudioStream(tmp_path / "n.wav", SR) as s:
        assert s.num_samples == len(ref)
        pieces, pos = [], 0
        for step in (7000, 16000, 333, 20000, 30000):
            pieces.append(s.read(pos, pos + step))
            # the range itself, the resampler's context and rounding to 441-sample periods
            assert len(s._buf) <= 44100 * step / SR + (2 * s._pad_periods + 2) * 441
            pos += step
    got = np.concatenate(pieces)
    assert len(got) == len(ref)
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_attention_times_skip_the_silence_vad_removed(env, tone_wav, tmp_path):
    """Tone + 4 s silence + tone: no segment starts in the silence, later ones after it."""
    t = np.arange(int(2.5 * SR)) / SR
    audio = np.concatenate([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros(4 * SR),
                            0.5 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    sf.write(tmp_path / "gap.wav", audio, SR, subtype="FLOAT")
    r = Identifier.from_pretrained(env["exp"]).identify(tmp_path / "gap.wav")
    starts = [s.start for s in r.segments]
    assert not any(2.53 < s < 6.47 for s in starts)
    assert sum(s >= 6.47 for s in starts) >= 2 and r.segments[-1].end > 8.9
    # A tone with silence only before it: segments start after the silence.
    r2 = Identifier.from_pretrained(env["exp"]).identify(
        tone_wav(tmp_path / "late.wav", 3.0, silence_before=2.0))
    assert r2.segments[0].start >= 1.94 and r2.segments[-1].end > 4.9


def test_bad_input_raises_one_line_errors(env, tmp_path):
    ident = Identifier.from_pretrained(env["exp"])
    (tmp_path / "text.wav").write_text("not audio at all\n")
    sf.write(tmp_path / "short.wav", np.zeros(400, np.float32) + 0.1, SR)
    sf.write(tmp_path / "silent.wav", np.zeros(3 * SR, np.float32), SR)
    for name, what in [("text.wav", "recognised audio format"), ("short.wav", "too short"),
                       ("missing.wav", "not found"), ("silent.wav", "no speech")]:
        with pytest.raises(LreError, match=what) as e:
            ident.identify(tmp_path / name)
        assert "\n" not in str(e.value) and str(tmp_path / name) in str(e.value)
    with pytest.raises(LreError, match="NaN"):
        ident.identify(np.full(SR, np.nan, dtype=np.float32))


def test_cli_reports_bad_files_and_answers_the_others(env, tmp_path, capsys):
    d = tmp_path / "dir"
    d.mkdir()
    shutil.copy(env["fr"], d / "fr.wav")
    (d / "notes.txt").write_text("not scanned")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
    scp = tmp_path / "list.scp"
    scp.write_text(f"utt_en {env['en']}\nutt_gone {tmp_path}/gone.flac\n")
    rc = main(["identify", "--model", str(env["exp"]), str(env["stereo"]),
               str(tmp_path / "broken.wav"), str(d), str(scp), "--json", "--timeline",
               "--top-k", "2"])
    out, err = capsys.readouterr()
    assert rc == 1
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r.get("source", r["id"]) for r in recs] == [str(env["stereo"]), str(d / "fr.wav"),
                                                        str(env["en"])]
    assert [r["id"] for r in recs] == [str(env["stereo"]), str(d / "fr.wav"), "utt_en"]
    for r in recs:
        assert r["decision"] in LANGS and len(r["posteriors"]) == len(LANGS)
        assert r["segments"] and all("posteriors" in seg for seg in r["segments"])
    lines = [x for x in err.splitlines() if x.startswith("lre identify: ")]
    assert len(lines) == 2  # one line per bad input (a summary line is logged as well)
    assert "broken.wav" in lines[0] and "gone.flac" in lines[1] and "utt_gone" in lines[1]

    rc = main(["identify", "--model", str(env["exp"]), str(env["en"]), "--top-k", "3"])
    out, err = capsys.readouterr()
    assert rc == 0 and "lre identify:" not in err
    assert "top-3:" in out and "attention |" in out and str(env["en"]) in out
