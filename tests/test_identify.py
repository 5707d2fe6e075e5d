"""lre identify and the Python API: chunked reading, attention timing, bad files, CLI."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
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


# ----------------------------------------------------------------------------------------
# files that hold fewer samples than their header says
# ----------------------------------------------------------------------------------------


def _mp3_frame_bytes(header: bytes) -> int:
    """Bytes of an MPEG audio Layer III frame, from its 4-byte header."""
    h = int.from_bytes(header, "big")
    version, bitrate, rate, padding = (h >> 19) & 3, (h >> 12) & 15, (h >> 10) & 3, (h >> 9) & 1
    mpeg1 = version == 3
    kbps = ([0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320] if mpeg1
            else [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160])[bitrate]
    hz = {3: [44100, 48000, 32000], 2: [22050, 24000, 16000], 0: [11025, 12000, 8000]}[version]
    return (144 if mpeg1 else 72) * kbps * 1000 // hz[rate] + padding


def write_mp3(audio: np.ndarray, sr: int, path: Path) -> Path:
    """An MP3 from soundfile (libsndfile >= 1.1), else sox or ffmpeg, else skip."""
    wav = path.with_suffix(".src.wav")
    sf.write(wav, audio, sr, subtype="PCM_16")
    if "MP3" in sf.available_formats():
        sf.write(path, audio, sr, format="MP3")
    elif shutil.which("sox"):
        subprocess.run(["sox", str(wav), str(path)], check=True, capture_output=True)
    elif shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(path)],
                       check=True, capture_output=True)
    else:
        pytest.skip("no MP3 encoder (libsndfile < 1.1, no sox, no ffmpeg)")
    return path


def without_info_frame(mp3: Path, out: Path) -> Path:
    """The MP3 without its Xing/Info frame (still a valid stream, as many encoders write
    it): its length is then estimated from the bit rate, here far above the real one."""
    data = mp3.read_bytes()
    if data[:3] == b"ID3":  # skip an ID3v2 tag
        data = data[10 + int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big"):]
    size = _mp3_frame_bytes(data[:4])
    if b"Xing" not in data[:size] and b"Info" not in data[:size]:
        pytest.skip("the encoder wrote no Xing/Info frame")
    out.write_bytes(data[size:])
    return out


@pytest.fixture(scope="module")
def mp3s(env):
    """22.05 kHz MP3s whose header promises more samples than the decoder returns."""
    tmp = env["tmp"]
    speech, sr = sf.read(env["en"], dtype="float32")
    full = write_mp3(np.resize(speech, int(5.3 * sr)), sr, tmp / "full.mp3")
    no_info = without_info_frame(full, tmp / "no_info.mp3")
    cut = tmp / "cut.mp3"  # a Xing frame counting all, 70% of the stream there
    cut.write_bytes(full.read_bytes()[: int(0.7 * full.stat().st_size)])
    return {"no_info": no_info, "cut": cut}


@pytest.mark.parametrize("which", ["no_info", "cut"])
@pytest.mark.parametrize("chunk_seconds", [60, 2])
def test_mp3_shorter_than_its_header_is_identified_on_its_samples(env, mp3s, which,
                                                                  chunk_seconds):
    path = mp3s[which]
    decoded, sr = sf.read(path, dtype="float32")
    assert sr == 22050 and sf.info(path).frames > len(decoded) > sr
    r = Identifier.from_pretrained(env["exp"], chunk_seconds=chunk_seconds).identify(
        path, timeline=True)
    assert r.duration == pytest.approx(len(decoded) / sr, abs=1e-9)
    assert r.warnings == []  # an MP3's stated length is an estimate, not a promise
    # The same as on the samples stage 1 (and so lre score) decodes: load_audio, whole.
    whole = Identifier.from_pretrained(env["exp"], chunk_seconds=chunk_seconds).identify(
        load_audio(str(path), SR), sample_rate=SR, timeline=True)
    assert r.chunks == whole.chunks
    np.testing.assert_allclose(list(r.posteriors.values()), list(whole.posteriors.values()),
                               atol=1e-5)
    assert [s.start for s in r.segments] == [s.start for s in whole.segments]
    assert r.segments[-1].end <= r.duration + 0.03


@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize("real", [3 * SR + 90, 3 * SR + 250, 6 * SR - 50, 7 * SR + 1])
def test_blocks_stop_where_the_samples_do(env, snip_edges, real):
    """A recording said to be longer than it is: the blocks end with its samples, and the
    features and VAD are those of the samples there, whichever block the end falls in."""
    cfg = FeatureConfig(kaldi=KaldiOptions(num_mel_bins=40, dither=0.0,
                                           snip_edges=snip_edges))
    audio = env["long_audio"][:real]
    calls = []

    def read(a: int, b: int) -> np.ndarray:
        calls.append((a, b))
        return audio[a:b]

    feats, vad = extract_blocks(read, real + 5 * SR, cfg, block_seconds=3.0)
    ref, vad_ref = extract(audio, cfg)
    assert feats.shape == ref.shape
    np.testing.assert_allclose(feats, ref, atol=2e-4)
    np.testing.assert_array_equal(vad, vad_ref)
    assert all(a < real for a, _ in calls)  # no read past the end once it is known


def test_truncated_wav_is_identified_with_a_warning(env, tmp_path, capsys):
    """A WAV whose header promises 5.5 s but holds 0.5 s: the 0.5 s are identified, and
    the terminal line and the JSON record say the file is truncated."""
    speech = load_audio(str(env["en"]), SR)
    wav = tmp_path / "cut.wav"
    sf.write(wav, np.resize(speech, int(5.5 * SR)), SR, subtype="PCM_16")
    data = wav.read_bytes()
    assert data[36:40] == b"data"
    wav.write_bytes(data[: 44 + int(0.5 * SR) * 2])
    ident = Identifier.from_pretrained(env["exp"])
    r = ident.identify(wav)
    assert r.duration == pytest.approx(0.5)
    assert len(r.warnings) == 1 and "5.50 s" in r.warnings[0] and "0.50 s" in r.warnings[0]
    head = ident.identify(speech[: SR // 2])
    assert r.posteriors == pytest.approx(head.posteriors, abs=1e-6) and head.warnings == []

    assert main(["identify", "--model", str(env["exp"]), str(wav), str(env["en"])]) == 0
    out = capsys.readouterr().out.splitlines()
    first = [line for line in out if line.startswith(str(wav))]
    assert len(first) == 1 and "0.50 s" in first[0] and "warning: truncated" in first[0]
    assert not any("warning" in line for line in out if line.startswith(str(env["en"])))
    assert main(["identify", "--model", str(env["exp"]), str(wav), str(env["en"]),
                 "--json"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert recs[0]["warnings"] == r.warnings and "warnings" not in recs[1]


# ----------------------------------------------------------------------------------------
# a quiet terminal, a fast start
# ----------------------------------------------------------------------------------------


def test_identify_logs_only_warnings_unless_verbose(env, tmp_path, capsys):
    """The terminal gets the answers; INFO lines (the calibration file, the failed-input
    summary) only with -v; other commands keep logging INFO."""
    from lre.calibration import save_calibration

    exp = tmp_path / "exp"
    shutil.copytree(env["exp"], exp)
    save_calibration(exp / "calibration.json", {
        "format": "lre-calibration-1", "method": "affine", "langs": LANGS,
        "score_floor": -50.0, "alpha": 1.5, "beta": [0.0] * len(LANGS)})
    args = ["identify", "--model", str(exp), str(env["en"]), str(tmp_path / "gone.wav")]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert str(env["en"]) in out and "(uncalibrated)" not in out
    assert err.splitlines() == [f"lre identify: {tmp_path / 'gone.wav'}: no such file or "
                                "directory"]
    for verbose in (["-v", *args], [*args, "-v"]):
        assert main(verbose) == 1
        err = capsys.readouterr().err
        assert "calibration:" in err and "1 of 2 inputs failed" in err
    log = tmp_path / "identify.log"
    assert main(["--log-file", str(log), *args]) == 1
    assert "calibration:" not in capsys.readouterr().err and "calibration:" in log.read_text()
    from lre.data.datadir import DataDir

    DataDir(tmp_path / "data", wav_scp={"u1": str(env["en"])}, utt2lang={"u1": "en"},
            utt2spk={"u1": "s1"}).write()
    assert main(["combine", str(tmp_path / "both"), str(tmp_path / "data")]) == 0
    assert "INFO" in capsys.readouterr().err and logging.getLogger().level == logging.INFO


def test_identify_help_does_not_import_torch():
    code = ("import sys\nfrom lre.cli import main\ntry:\n    main(['identify', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "--backend" in out and out.splitlines()[-1] == "False"
