"""Audio loading: resampling, channel mixing, segments, pipes and every kind of bad input."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from lre.data.audio import AudioError, load_audio
from lre.data.datadir import DataDir, Segment, iter_audio, load_utterance


def _noise_wav(path, seconds, sr, channels=1, subtype="FLOAT", seed=0):
    rng = np.random.default_rng(seed)
    data = (0.3 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32)
    sf.write(path, data, sr, subtype=subtype)
    return data


def test_stereo_44k_to_16k_mono_matches_torchaudio(tmp_path):
    path = tmp_path / "stereo.wav"
    data = _noise_wav(path, 1.0, 44100, channels=2)
    got = load_audio(str(path), sample_rate=16000)
    mono = torch.from_numpy(data.mean(axis=1))
    want = AF.resample(mono, 44100, 16000).numpy()
    assert got.dtype == np.float32 and got.shape == (16000,)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_speech_at_22k_resampled(tmp_path, espeak_wav):
    path = espeak_wav("en", "hello world", tmp_path / "hello.wav", sample_rate=22050)
    raw, sr = sf.read(path, dtype="float32")
    assert sr == 22050
    got = load_audio(str(path), 16000)
    want = AF.resample(torch.from_numpy(raw), 22050, 16000).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(got).max() > 0.05  # real speech, not silence


def test_segment_reads_exact_samples(tmp_path):
    path = tmp_path / "rec.wav"
    data = _noise_wav(path, 3.0, 16000)[:, 0]
    got = load_audio(str(path), 16000, start=0.5, end=1.25)
    np.testing.assert_array_equal(got, data[8000:20000])
    to_end = load_audio(str(path), 16000, start=2.0, end=-1)
    np.testing.assert_array_equal(to_end, data[32000:])
    # Kaldi tolerates a small overshoot of the end and clips it.
    np.testing.assert_array_equal(load_audio(str(path), 16000, start=2.5, end=3.2), data[40000:])
    with pytest.raises(AudioError, match="beyond the end"):
        load_audio(str(path), 16000, start=2.5, end=4.0, name="seg")


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_pipe_specs_match_direct_reads(tmp_path):
    path = tmp_path / "rec.wav"
    _noise_wav(path, 1.0, 8000, subtype="PCM_16")
    direct = load_audio(str(path), 16000)
    via_cat = load_audio(f"cat {path} |", 16000)
    via_sox = load_audio(f"sox {path} -t wav - |", 16000)
    np.testing.assert_array_equal(via_cat, direct)
    np.testing.assert_array_equal(via_sox, direct)
    seg = load_audio(f"sox {path} -t wav - |", 8000, start=0.25, end=0.5)
    np.testing.assert_array_equal(seg, load_audio(str(path), 8000)[2000:4000])


def test_failing_pipe_names_exit_code(tmp_path):
    with pytest.raises(AudioError) as err:
        load_audio(f"cat {tmp_path}/nothing.wav |", name="utt7")
    msg = str(err.value)
    assert msg.startswith("utt7: pipe command failed with exit code 1")
    assert "\n" not in msg


def _bad_inputs(tmp_path):
    """utt -> spec for each kind of bad audio the loader must reject."""
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    good = tmp_path / "good.wav"
    _noise_wav(good, 1.0, 16000, subtype="PCM_16")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    text = tmp_path / "text.wav"
    text.write_text("this is not audio, just a text file renamed to .wav\n" * 20)
    nan = tmp_path / "nan.wav"
    samples = np.zeros(16000, dtype=np.float32)
    samples[100] = np.nan
    sf.write(nan, samples, 16000, subtype="FLOAT")
    short = tmp_path / "short.wav"
    _noise_wav(short, 0.05, 16000)
    return {
        "u_empty": (str(empty), "empty file"),
        "u_trunc": (str(truncated), "truncated or damaged header"),
        "u_text": (str(text), "not a recognised audio format"),
        "u_nan": (str(nan), "contains 1 NaN or infinite sample(s)"),
        "u_short": (str(short), "too short: 0.050 s (minimum 0.1 s)"),
        "u_missing": (str(tmp_path / "missing.wav"), "audio file not found"),
        "u_pipe": ("exit 3 |", "pipe command failed with exit code 3"),
    }


def test_bad_audio_one_line_errors(tmp_path):
    for utt, (spec, cause) in _bad_inputs(tmp_path).items():
        with pytest.raises(AudioError) as err:
            load_audio(spec, name=utt)
        msg = str(err.value)
        assert msg.startswith(f"{utt}: {cause}"), msg
        assert "\n" not in msg


def test_iter_audio_skips_lists_and_continues(tmp_path, tone_wav, caplog):
    bad = _bad_inputs(tmp_path)
    good = {f"g{i}": str(tone_wav(tmp_path / f"g{i}.wav", 0.5, freq=300 + 100 * i))
            for i in range(3)}
    wav_scp = {**{u: spec for u, (spec, _) in bad.items()}, **good}
    dd = DataDir(tmp_path / "data", wav_scp=wav_scp, utt2lang={u: "en" for u in wav_scp},
                 utt2spk={u: u for u in wav_scp})
    with caplog.at_level(logging.WARNING, logger="lre.data.datadir"):
        results = dict(iter_audio(dd, 16000))
    assert list(results) == dd.utts
    for utt in good:
        assert isinstance(results[utt], np.ndarray) and results[utt].shape == (8000,)
    for utt, (_, cause) in bad.items():
        assert isinstance(results[utt], AudioError)
        assert str(results[utt]).startswith(f"{utt}: {cause}")
    summary = caplog.records[-1].getMessage()
    assert summary.startswith(f"{len(bad)} of {len(wav_scp)} utterances could not be loaded")


def test_load_utterance_segments_from_pipe_recording(tmp_path):
    path = tmp_path / "rec.wav"
    data = _noise_wav(path, 2.0, 16000)[:, 0]
    segments = {"a": Segment("r", 0.0, 0.5), "b": Segment("r", 0.5, 1.5),
                "c": Segment("r", 1.5, -1)}
    dd = DataDir(tmp_path / "d", wav_scp={"r": f"cat {path} |"},
                 utt2lang=dict.fromkeys(segments, "fi"), utt2spk=dict.fromkeys(segments, "s"),
                 segments=segments)
    np.testing.assert_array_equal(load_utterance(dd, "b"), data[8000:24000])
    got = dict(iter_audio(dd))
    np.testing.assert_array_equal(np.concatenate([got["a"], got["b"], got["c"]]), data)
