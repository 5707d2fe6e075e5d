"""Feature extraction, VAD, CMVN and the feature stage, against Kaldi references."""

from __future__ import annotations

import dataclasses
import json

import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import pytest
import soundfile as sf

import lre.features as F
import lre.features.kaldi as FK
import lre.features.stage as FS
from lre.data.audio import load_audio
from lre.data.datadir import DataDir, load_utterance, validate
from lre.data.tables import read_table
from lre.features import FeatureConfig, KaldiOptions, compute_features, extract, postprocess
from lre.features.cmvn import CmvnOptions, sliding_cmn, utterance_cmvn
from lre.features.sdc import SdcOptions, shifted_deltas
from lre.features.vad import VadOptions
from lre.utils import LreError

# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _pink(n: int, seed: int) -> np.ndarray:
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spec / np.sqrt(f), n)
    return (y / y.std()).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """espeak-ng speech (16 kHz) over a pink-noise floor 30 dB below it.

    Every float32 FFT (Kaldi's, kaldi-native-fbank's) is accurate only to ~1e-7 of a
    frame's energy; espeak leaves the lowest mel bins almost empty, where two float32
    implementations then differ by more than 1e-3 in the log. Real recordings always
    have such a floor, and with it every bin is well conditioned.
    """
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "en.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(path),
                    "Language recognition needs features that match Kaldi exactly."],
                   check=True, capture_output=True)
    x = load_audio(str(path), 16000)
    rms = float(np.sqrt(np.mean(x**2)))
    return (x + rms * 10 ** (-30 / 20) * _pink(len(x), 0)).astype(np.float32)


def _frame_opts(o, k: KaldiOptions) -> None:
    o.frame_opts.dither = k.dither
    o.frame_opts.snip_edges = k.snip_edges
    o.frame_opts.samp_freq = k.sample_frequency
    o.mel_opts.num_bins = k.num_mel_bins
    o.use_energy = k.use_energy
    o.energy_floor = k.energy_floor


def knf_fbank(x: np.ndarray, k: KaldiOptions) -> np.ndarray:
    o = knf.FbankOptions()
    _frame_opts(o, k)
    fb = knf.OnlineFbank(o)
    fb.accept_waveform(k.sample_frequency, (x * 32768).astype(np.float32))
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


def knf_mfcc(x: np.ndarray, k: KaldiOptions) -> np.ndarray:
    o = knf.MfccOptions()
    _frame_opts(o, k)
    o.num_ceps = k.num_ceps
    o.cepstral_lifter = k.cepstral_lifter
    fb = knf.OnlineMfcc(o)
    fb.accept_waveform(k.sample_frequency, (x * 32768).astype(np.float32))
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


# ----------------------------------------------------------------------------------------
# extraction against kaldi-native-fbank
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kaldi", [
    KaldiOptions(num_mel_bins=40, dither=0.0),
    KaldiOptions(num_mel_bins=80, dither=0.0),
    KaldiOptions(num_mel_bins=40, dither=0.0, use_energy=True, snip_edges=False),
], ids=["fbank40", "fbank80", "fbank40-energy-nosnip"])
def test_fbank_matches_kaldi_native_fbank(speech, kaldi):
    ours, _ = extract(speech, FeatureConfig(kind="fbank", kaldi=kaldi))
    ref = knf_fbank(speech, kaldi)
    assert ours.shape == ref.shape == (kaldi.num_frames(len(speech)), FeatureConfig(
        kind="fbank", kaldi=kaldi).feat_dim)
    assert ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("kaldi", [
    FeatureConfig.default("mfcc").kaldi,
    KaldiOptions(num_mel_bins=30, num_ceps=20, use_energy=False, dither=0.0),
], ids=["mfcc13-energy", "mfcc20"])
def test_mfcc_matches_kaldi_native_fbank(speech, kaldi):
    ours, _ = extract(speech, FeatureConfig(kind="mfcc", kaldi=kaldi))
    ref = knf_mfcc(speech, kaldi)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3


def test_chunked_extraction_equals_one_call(speech, monkeypatch):
    long = np.tile(speech, 3)  # several blocks of FFT_BLOCK_FRAMES
    for cfg in (FeatureConfig(), FeatureConfig.default("mfcc_sdc"),
                FeatureConfig(kaldi=KaldiOptions(num_mel_bins=40, dither=0.0,
                                                 snip_edges=False, use_energy=True))):
        chunked, vad_chunked = extract(long, cfg)
        assert len(chunked) > 2 * FK.FFT_BLOCK_FRAMES
        monkeypatch.setattr(FK, "FFT_BLOCK_FRAMES", 10**9)
        whole, vad_whole = extract(long, cfg)
        monkeypatch.undo()
        np.testing.assert_array_equal(chunked, whole)
        np.testing.assert_array_equal(vad_chunked, vad_whole)


def test_dither_is_seeded_per_utterance(speech):
    cfg = FeatureConfig(kaldi=KaldiOptions(num_mel_bins=40, dither=1.0))
    a, _ = extract(speech, cfg, seed=7)
    b, _ = extract(speech, cfg, seed=7)
    c, _ = extract(speech, cfg, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a - c).max() < 1.0  # dither of 1 (16-bit units) on speech: small change


def test_too_short_gives_no_frames():
    feats, vad = extract(np.zeros(399, np.float32), FeatureConfig())
    assert feats.shape == (0, 40) and vad.shape == (0,)


# ----------------------------------------------------------------------------------------
# SDC, VAD, CMVN
# ----------------------------------------------------------------------------------------


def sdc_reference(c: np.ndarray, d: int, p: int, k: int) -> np.ndarray:
    """Kaldi add-deltas-sdc written out loop by loop."""
    t_max, n = c.shape
    norm = sum(j * j for j in range(-d, d + 1))
    out = np.zeros((t_max, n * (k + 1)))
    for t in range(t_max):
        out[t, :n] = c[t]
        for i in range(k):
            for j in range(-d, d + 1):
                src = min(max(t + j + i * p, 0), t_max - 1)
                out[t, (i + 1) * n : (i + 2) * n] += j * c[src] / norm
    return out


@pytest.mark.parametrize("d,p,k", [(1, 3, 7), (2, 2, 3)])
def test_sdc_matches_formula(d, p, k):
    c = np.array([[t * t % 7 - 3.0, 2.0 * t, (-1.0) ** t] for t in range(15)], np.float32)
    ours = shifted_deltas(c, SdcOptions(window=d, block_shift=p, num_blocks=k))
    assert ours.shape == (15, 3 * (k + 1))
    np.testing.assert_allclose(ours, sdc_reference(c, d, p, k), atol=1e-6)
    # One concrete value: frame 2, block 1 of 7-1-3-7 = (c[6] - c[4]) / 2.
    if (d, p, k) == (1, 3, 7):
        np.testing.assert_allclose(ours[2, 6:9], (c[6] - c[4]) / 2)


def test_mfcc_sdc_has_56_dims(speech):
    cfg = FeatureConfig.default("mfcc_sdc")
    feats, _ = extract(speech, cfg)
    assert cfg.feat_dim == 56 and feats.shape[1] == 56
    mfcc = knf_mfcc(speech, dataclasses.replace(cfg.kaldi, num_ceps=7))
    np.testing.assert_allclose(feats[:, :7], mfcc, atol=1e-3)
    np.testing.assert_allclose(feats, sdc_reference(feats[:, :7], 1, 3, 7), atol=1e-4)


@pytest.mark.parametrize("dither", [0.0, 1.0])
def test_vad_marks_exactly_the_tone_frames(tone_wav, tmp_path, dither):
    path = tone_wav(tmp_path / "t.wav", 1.0, freq=440, silence_before=1.0, silence_after=1.0)
    wave = load_audio(str(path), 16000)
    kaldi = KaldiOptions(num_mel_bins=40, dither=dither)
    # Frame i covers samples [160 i, 160 i + 400); the tone is samples [16000, 32000).
    n = kaldi.num_frames(len(wave))
    i = np.arange(n)
    tone = (160 * i + 400 > 16000) & (160 * i < 32000)
    assert tone.sum() == 102
    no_context = VadOptions(vad_frames_context=0, vad_proportion_threshold=0.6)
    _, vad = extract(wave, FeatureConfig(kaldi=kaldi, vad=no_context))
    np.testing.assert_array_equal(vad, tone)
    # vad.conf (context 2, proportion 0.12): one voiced frame within 2 frames suffices.
    _, vad = extract(wave, FeatureConfig(kaldi=kaldi))
    np.testing.assert_array_equal(vad, (160 * i + 400 + 320 > 16000) & (160 * i - 320 < 32000))


def sliding_reference(x: np.ndarray, window: int, center: bool, min_window: int,
                      norm_vars: bool) -> np.ndarray:
    """apply-cmvn-sliding, frame by frame as Kaldi's SlidingWindowCmnInternal."""
    t_max = len(x)
    out = np.zeros_like(x, dtype=np.float64)
    for t in range(t_max):
        if center:
            start = t - window // 2
            end = start + window
        else:
            start, end = t - window, t + 1
        if start < 0:
            end -= start
            start = 0
        if not center and end > t:
            end = max(t + 1, min_window)
        if end > t_max:
            start = max(start - (end - t_max), 0)
            end = t_max
        part = x[start:end].astype(np.float64)
        out[t] = x[t] - part.mean(axis=0)
        if norm_vars:
            if end - start == 1:
                out[t] = 0.0
            else:
                var = np.maximum((part**2).mean(axis=0) - part.mean(axis=0) ** 2, 1e-10)
                out[t] /= np.sqrt(var)
    return out


@pytest.mark.parametrize("frames", [40, 299, 1000])
@pytest.mark.parametrize("center,norm_vars", [(True, False), (False, False), (True, True),
                                              (False, True)])
def test_sliding_cmn_matches_reference(frames, center, norm_vars):
    rng = np.random.default_rng(frames)
    x = (rng.standard_normal((frames, 5)) * 3 + np.linspace(0, 20, frames)[:, None]).astype(
        np.float32)
    ours = sliding_cmn(x, cmn_window=300, center=center, min_window=100, norm_vars=norm_vars)
    ref = sliding_reference(x, 300, center, 100, norm_vars)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_utterance_cmvn():
    x = np.random.default_rng(0).normal(5.0, 3.0, (500, 4)).astype(np.float32)
    y = utterance_cmvn(x, norm_vars=True)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(utterance_cmvn(x), x - x.mean(axis=0), atol=1e-5)


def test_postprocess_keeps_original_frame_indices():
    t = 700
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((t, 3)).astype(np.float32)
    feats[:, 0] = np.arange(t)  # each row names its frame
    vad = (np.sin(np.arange(t) / 17.0) > -0.2).astype(np.float32)  # vad.scp gives floats
    keep = np.flatnonzero(vad)
    plain = FeatureConfig(cmvn=CmvnOptions(norm_means=False, norm_vars=False,
                                           sliding_cmn=False))
    out, index = postprocess(feats, vad, plain)
    assert index.dtype == np.int64
    np.testing.assert_array_equal(index, keep)
    np.testing.assert_array_equal(out[:, 0], keep.astype(np.float32))
    # Default: CMVN over the voiced frames, then sliding CMN; indices unchanged.
    out, index = postprocess(feats, vad, FeatureConfig())
    np.testing.assert_array_equal(index, keep)
    ref = sliding_reference(utterance_cmvn(feats[keep], norm_vars=True), 300, True, 100, False)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    # Kaldi recipes' order: normalise every frame, then select.
    before = FeatureConfig(cmvn=dataclasses.replace(CmvnOptions(), before_vad=True))
    out, index = postprocess(feats, vad, before)
    np.testing.assert_array_equal(index, keep)
    ref = sliding_reference(utterance_cmvn(feats, norm_vars=True), 300, True, 100, False)[keep]
    np.testing.assert_allclose(out, ref, atol=1e-4)
    out, index = postprocess(feats, None, plain)
    np.testing.assert_array_equal(index, np.arange(t))
    out, index = postprocess(feats, np.zeros(t), FeatureConfig())
    assert out.shape == (0, 3) and index.shape == (0,)


# ----------------------------------------------------------------------------------------
# configuration files
# ----------------------------------------------------------------------------------------


def test_shipped_conf_files_are_the_defaults(repo_root):
    conf = repo_root / "features"
    vad, cmvn = conf / "vad.conf", conf / "cmvn.conf"
    assert FeatureConfig.from_files(conf / "fbank.conf", vad, cmvn) == FeatureConfig()
    assert FeatureConfig.from_files(conf / "fbank80.conf", vad, cmvn) == FeatureConfig.default(
        "fbank80")
    assert FeatureConfig.from_files(conf / "mfcc.conf", vad, cmvn) == FeatureConfig.default(
        "mfcc")
    sdc = FeatureConfig.from_files(conf / "mfcc.conf", vad, cmvn, sdc_conf=conf / "sdc.conf")
    assert sdc == FeatureConfig.default("mfcc_sdc") and sdc.feat_dim == 56
    for cfg in (FeatureConfig(), sdc):
        assert FeatureConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    d = FeatureConfig().to_dict()
    assert (d["feat_dim"], d["sample_rate"], d["frame_shift"], d["frame_length"]) == (
        40, 16000, 0.01, 0.025)


def test_conf_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "fbank.conf"
    bad.write_text("# comment\n--num-mel-bins=40\n--num-mel-binz=80\n")
    with pytest.raises(LreError, match=r"fbank.conf:3: unknown option --num-mel-binz"):
        FeatureConfig.from_files(bad)
    bad.write_text("--use-energy=maybe\n")
    with pytest.raises(LreError, match=r"fbank.conf:1: --use-energy needs true or false"):
        FeatureConfig.from_files(bad)
    # Kaldi semantics: options left out keep Kaldi's defaults (23 bins, dither 1).
    bad.write_text("--frame-shift=10  # ms\n--verbose=2\n")
    cfg = FeatureConfig.from_files(bad)
    assert cfg.kaldi.num_mel_bins == 23 and cfg.kaldi.dither == 1.0
    with pytest.raises(LreError, match="not one of"):
        FeatureConfig.from_dict({"kind": "plp"})


@pytest.fixture
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------


@pytest.fixture
def small_data(tmp_path, espeak_wav):
    """Four espeak utterances and three bad ones (not audio, too short, silent)."""
    wavs = tmp_path / "wav"
    texts = {"en": "this is english speech for the feature test",
             "de": "das ist deutsche sprache fuer den test",
             "fr": "ceci est du francais pour le test",
             "fi": "tama on suomea testia varten"}
    wav_scp, utt2lang, utt2spk = {}, {}, {}
    for i, (lang, text) in enumerate(texts.items()):
        utt = f"s{i}-{lang}"
        wav_scp[utt] = str(espeak_wav(lang, text, wavs / f"{utt}.wav"))
        utt2lang[utt], utt2spk[utt] = lang, f"s{i}"
    (wavs / "junk.wav").write_bytes(b"RIFF but not really a wave file")
    sf.write(wavs / "short.wav", np.full(200, 0.1, np.float32), 16000)
    sf.write(wavs / "silent.wav", np.zeros(16000, np.float32), 16000)
    # One utterance through a pipe, as wav.scp allows.
    for utt, path in (("s9-junk", wavs / "junk.wav"), ("s9-short", wavs / "short.wav"),
                      ("s9-silent", wavs / "silent.wav")):
        wav_scp[utt], utt2lang[utt], utt2spk[utt] = str(path), "en", "s9"
    wav_scp["s0-en"] = f"cat {wav_scp['s0-en']} |"
    data = tmp_path / "data" / "train"
    DataDir(data, wav_scp=wav_scp, utt2lang=utt2lang, utt2spk=utt2spk).write()
    return data


def test_stage_writes_kaldi_readable_outputs(small_data, tmp_path):
    exp = tmp_path / "exp" / "make_feats" / "train"
    report = compute_features(small_data, FeatureConfig(), nj=2, log_dir=exp / "log",
                              max_fail_share=0.5)
    assert report.num_done == 4 and sorted(report.jobs_run) == [1, 2]
    feats = kaldiio.load_scp(str(small_data / "feats.scp"))
    vads = kaldiio.load_scp(str(small_data / "vad.scp"))
    frames = read_table(small_data / "utt2num_frames")
    assert sorted(feats) == sorted(vads) == sorted(frames) == ["s0-en", "s1-de", "s2-fr",
                                                                "s3-fi"]
    dd = DataDir.load(small_data)
    for utt in feats:
        wave = load_utterance(dd, utt, 16000)
        ref, ref_vad = extract(wave, FeatureConfig(), seed=F.utterance_seed(utt))
        mat, vad = feats[utt], vads[utt]
        assert mat.dtype == np.float32 and mat.shape == (int(frames[utt]), 40)
        np.testing.assert_array_equal(mat, ref)
        assert vad.dtype == np.float32 and vad.ndim == 1
        np.testing.assert_array_equal(vad, ref_vad.astype(np.float32))
        assert 0 < vad.sum() < len(vad)
    config = json.loads((small_data / "feats_config.json").read_text())
    assert FeatureConfig.from_dict(config) == FeatureConfig()
    failed = read_table(small_data / "feats_failed")
    assert sorted(failed) == ["s9-junk", "s9-short", "s9-silent"]
    assert "no voiced frame" in failed["s9-silent"]
    assert "short" in failed["s9-short"]
    logs = sorted(p.name for p in (exp / "log").iterdir())
    assert logs == ["make_feats.1.log", "make_feats.2.log"]
    log2 = (exp / "log" / "make_feats.2.log").read_text()
    assert log2.startswith("# ") and "lre.features.stage job" in log2
    assert "s9-silent" in log2 and "# Ended (code 0)" in log2
    # The validator accepts the outputs; it only names the skipped utterances, with why.
    problems = validate(small_data, check_audio=False)
    assert sorted(p.message.split("'")[1] for p in problems) == sorted(failed)
    assert all("feature extraction failed" in p.message for p in problems)

    # --nj 1 gives the same matrices.
    one = tmp_path / "one"
    import shutil

    shutil.copytree(small_data, one, ignore=shutil.ignore_patterns("data", "split*", "feats*",
                                                                   "vad.scp", "utt2num*"))
    compute_features(one, FeatureConfig(), nj=1, max_fail_share=0.5)
    feats1 = kaldiio.load_scp(str(one / "feats.scp"))
    assert sorted(feats1) == sorted(feats)
    for utt in feats:
        np.testing.assert_array_equal(feats1[utt], feats[utt])


def test_stage_resumes_only_missing_jobs(small_data, tmp_path):
    cfg = FeatureConfig.default("mfcc")
    first = compute_features(small_data, cfg, nj=3, max_fail_share=0.5)
    assert sorted(first.jobs_run) == [1, 2, 3]
    scp = (small_data / "feats.scp").read_bytes()
    vad = (small_data / "vad.scp").read_bytes()
    feat_dir = small_data / "data"
    # Job 2 "killed": its manifest and ark gone, a half-written temporary left behind.
    (feat_dir / "raw_mfcc_train.2.done.json").unlink()
    (feat_dir / "raw_mfcc_train.2.ark").unlink()
    (feat_dir / "raw_mfcc_train.2.ark.tmp").write_bytes(b"half a matrix")
    second = compute_features(small_data, cfg, nj=3, max_fail_share=0.5)
    assert second.jobs_run == [2] and second.jobs_reused == [1, 3]
    assert (small_data / "feats.scp").read_bytes() == scp
    assert (small_data / "vad.scp").read_bytes() == vad
    assert not list(feat_dir.glob("*.tmp"))
    mats = kaldiio.load_scp(str(small_data / "feats.scp"))
    assert all(m.shape[1] == 13 for m in mats.values())
    # Another config makes every job stale.
    third = compute_features(small_data, dataclasses.replace(
        cfg, kaldi=dataclasses.replace(cfg.kaldi, num_ceps=12)), nj=3, max_fail_share=0.5)
    assert sorted(third.jobs_run) == [1, 2, 3]


def test_stage_fails_when_too_many_utterances_fail(small_data):
    with pytest.raises(LreError, match=r"feats_failed: 3 of 7 utterances failed"):
        compute_features(small_data, FeatureConfig(), nj=1, max_fail_share=0.2)
    # The usable utterances are still written, with the failures listed.
    assert len(read_table(small_data / "feats.scp")) == 4
    assert len(read_table(small_data / "feats_failed")) == 3


def test_stage_reports_a_failing_job_with_its_log_tail(small_data, tmp_path):
    # A worker that crashes (a bug or a broken machine, not a bad utterance).
    cfg_dir = tmp_path / "feat"
    cfg_dir.mkdir()
    real = FS.run_job

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    FS.run_job = broken
    try:
        with pytest.raises(LreError) as err:
            compute_features(small_data, FeatureConfig(), nj=2, feat_dir=cfg_dir)
    finally:
        FS.run_job = real
    msg = str(err.value)
    assert "make_feats.1.log" in msg and "failed with exit code 1" in msg
    assert "disk on fire" in msg  # the tail of the log
    assert not (small_data / "feats.scp").exists()


def test_cli_features(small_data, tmp_path, monkeypatch, repo_root):
    from lre.cli import main

    monkeypatch.chdir(tmp_path)
    conf = repo_root / "features"
    rc = main(["features", str(small_data), "--feat-conf", str(conf / "mfcc.conf"),
               "--sdc-conf", str(conf / "sdc.conf"), "--nj", "2", "--max-fail-share", "0.5"])
    assert rc == 0
    assert (tmp_path / "exp" / "make_feats" / "train" / "log" / "make_feats.2.log").is_file()
    mats = kaldiio.load_scp(str(small_data / "feats.scp"))
    assert {m.shape[1] for m in mats.values()} == {56}
    assert FeatureConfig.from_dict(json.loads((small_data / "feats_config.json").read_text())
                                   ).kind == "mfcc_sdc"
    rc = main(["features", str(small_data), "--max-fail-share", "0.1"])
    assert rc == 1
