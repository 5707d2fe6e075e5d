"""The embedded recipe's test conditions: noisy, reverberant, telephone and human speech sets."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lre.augment import AugmentOptions, augment_data_dir, generated_rir, telephone
from lre.data.audio import load_audio
from lre.data.corpora import ktuberling
from lre.data.datadir import DataDir, validate
from lre.data.tables import read_table
from lre.utils import LreError

SR = 16000
REAL_SOUNDS = Path(ktuberling.DEFAULT_ROOT)


def _voiced(seconds: float, f0: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """Speech-like test audio: a harmonic tone with a syllable-rate envelope, (n,)."""
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    return (0.2 * wave * envelope / np.max(np.abs(wave))).astype(np.float32)


@pytest.fixture
def test_set(tmp_path: Path) -> Path:
    """A small 16-bit test set: 9 utterances of 1.5-2.5 s in three languages."""
    rng = np.random.default_rng(5)
    wav_scp, utt2lang, utt2spk = {}, {}, {}
    for i in range(9):
        lang = ("en", "fi", "ru")[i % 3]
        utt = f"{lang}-s{i}-test{i:02d}"
        path = tmp_path / "wav" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _voiced(rng.uniform(1.5, 2.5), 100 + 15 * i, rng), SR, subtype="PCM_16")
        wav_scp[utt], utt2lang[utt], utt2spk[utt] = str(path), lang, f"{lang}-s{i}"
    d = tmp_path / "data" / "test"
    DataDir(d, wav_scp=wav_scp, utt2lang=utt2lang, utt2spk=utt2spk).write()
    return d


def _desc_value(desc: str, key: str) -> str:
    m = re.search(rf"\b{key}=(\S+)", desc)
    assert m, (key, desc)
    return m.group(1)


# ------------------------------------------------------------------ noise
def test_noisy_mix_has_the_drawn_snr(test_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "data" / "test_noisy"
    augment_data_dir(test_set, out, AugmentOptions(noises=("white", "pink", "babble"),
                                                   snr=(0.0, 15.0), keep_original=False,
                                                   seed=1000))
    assert validate(out) == []
    dd, src = DataDir.load(out), DataDir.load(test_set)
    assert len(dd) == len(src) and all(u.startswith("noise-") for u in dd.utts)
    aug = read_table(out / "utt2aug")
    kinds = set()
    for utt in dd.utts:
        desc = aug[utt]
        target = float(_desc_value(desc, "snr"))
        assert 0.0 <= target <= 15.0
        kinds.add(_desc_value(desc, "type"))
        gain = float(_desc_value(desc, "gain")) if "gain=" in desc else 1.0
        clean = gain * load_audio(src.wav_scp[utt.removeprefix("noise-")], SR)
        noisy = load_audio(dd.wav_scp[utt], SR)
        noise = noisy - clean
        snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2.0))
        assert abs(snr - target) < 0.5, (utt, desc, snr)
    assert kinds <= {"white", "pink", "babble"} and len(kinds) >= 2


def test_babble_is_made_of_test_utterances_only(test_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "noisy"
    augment_data_dir(test_set, out, AugmentOptions(noises=("babble",), snr=(0.0, 15.0),
                                                   keep_original=False, seed=1000))
    src_utts = set(DataDir.load(test_set).utts)
    for utt, desc in read_table(out / "utt2aug").items():
        parts = _desc_value(desc, "src").split("+")
        assert parts and set(parts) <= src_utts - {utt.removeprefix("noise-")}


# ------------------------------------------------------------------ reverb
def _rt60_schroeder(h: np.ndarray, sr: int) -> float:
    """RT60 from the T20 fit (-5 to -25 dB) of the Schroeder backward integral of the
    reverberant tail (after the direct path)."""
    tail = h[int(np.argmax(np.abs(h))) + 1:].astype(np.float64)
    edc = np.cumsum((tail**2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    fit = np.flatnonzero((edc_db <= -5.0) & (edc_db >= -25.0))
    slope = np.polyfit(fit / sr, edc_db[fit], 1)[0]  # dB per second
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.3, 0.6, 0.9])
def test_generated_rir_has_its_rt60(rt60: float) -> None:
    for seed in range(3):
        h = generated_rir(rt60, SR, np.random.default_rng(seed))
        measured = _rt60_schroeder(h, SR)
        assert abs(measured - rt60) <= 0.2 * rt60, (rt60, seed, measured)


def test_reverb_set_draws_rt60_in_range(test_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "test_reverb"
    augment_data_dir(test_set, out, AugmentOptions(reverb=True, rt60=(0.3, 0.9),
                                                   keep_original=False, seed=1000))
    assert validate(out) == []
    drawn = [float(_desc_value(d, "rt60")) for d in read_table(out / "utt2aug").values()]
    assert len(drawn) == 9 and all(0.3 <= r <= 0.9 for r in drawn)
    assert len(set(drawn)) == len(drawn)


# ------------------------------------------------------------------ telephone
def _band_ratio_db(y: np.ndarray, sr: int) -> float:
    """Energy inside 300-3400 Hz over energy outside it, in dB (Welch spectrum)."""
    from scipy.signal import welch

    f, p = welch(y, sr, nperseg=2048)
    inside = (f >= 300) & (f <= 3400)
    return float(10 * np.log10(p[inside].sum() / p[~inside].sum()))


@pytest.mark.parametrize("codec", ["mulaw", "gsm", "opus"])
def test_telephone_band_for_each_codec(codec: str) -> None:
    rng = np.random.default_rng(0)
    white = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    assert _band_ratio_db(white, SR) < 0  # the input is wide band: most energy outside
    y = telephone(white, SR, codec)
    assert y.shape == white.shape and y.dtype == np.float32
    assert _band_ratio_db(y, SR) >= 20.0
    # The band itself comes through: within 6 dB of the input's in-band level.
    from scipy.signal import welch

    f, p_in = welch(white, SR, nperseg=2048)
    _, p_out = welch(y, SR, nperseg=2048)
    band = (f >= 400) & (f <= 3300)
    assert abs(10 * np.log10(p_out[band].sum() / p_in[band].sum())) < 6.0


def test_telephone_set_draws_a_codec_per_utterance(test_set: Path, tmp_path: Path) -> None:
    opts = AugmentOptions(telephone=True, tel_codecs=("mulaw", "gsm", "opus"),
                          keep_original=False, seed=1000)
    out = tmp_path / "test_tel"
    augment_data_dir(test_set, out, opts)
    assert validate(out) == []
    codecs = [_desc_value(d, "codec") for d in read_table(out / "utt2aug").values()]
    assert set(codecs) <= {"mu-law-8bit", "gsm-06.10", "opus-20kbps"} and len(set(codecs)) >= 2
    for path in DataDir.load(out).wav_scp.values():
        assert sf.info(path).samplerate == SR
    again = tmp_path / "again"
    augment_data_dir(test_set, again, opts)
    for utt, path in DataDir.load(out).wav_scp.items():
        assert Path(path).read_bytes() == (again / "wav" / f"{utt}.wav").read_bytes()


def test_telephone_codec_default_and_errors() -> None:
    assert AugmentOptions(telephone=True).tel_codecs == ("mulaw",)
    with pytest.raises(LreError, match=r"--tel-codecs: unknown codec 'amr'"):
        AugmentOptions(telephone=True, tel_codecs=("mulaw", "amr")).check()


def test_cli_tel_codecs(test_set: Path, tmp_path: Path) -> None:
    from lre.cli import main

    out = tmp_path / "tel"
    assert main(["augment", "--in", str(test_set), "--out", str(out), "--telephone",
                 "--tel-codecs", "gsm", "--no-original", "--seed", "4"]) == 0
    assert {_desc_value(d, "codec") for d in read_table(out / "utt2aug").values()} == {"gsm-06.10"}


# ------------------------------------------------------------------ human speech
def _word(path: Path, seconds: float, freq: float, sr: int, fmt: str) -> None:
    """A 'word': a tone of ``seconds`` between 0.3 s of digital silence either side."""
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))
    pad = np.zeros(int(0.3 * sr))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate([pad, tone, pad]).astype(np.float32), sr, format=fmt)


@pytest.fixture
def sounds(tmp_path: Path) -> Path:
    """A KTuberling-like sounds tree: en 80 words (OGG, 44.1 kHz), fi 11 words (WAV, 8 kHz),
    ca 20 words, and sr with its duplicate folder sr@latin; plus a .soundtheme file."""
    root = tmp_path / "sounds"
    rng = np.random.default_rng(2)
    layout = {"en": (80, 44100, "OGG", ".ogg"), "fi": (11, 8000, "WAV", ".wav"),
              "ca": (20, 22050, "OGG", ".ogg"), "sr": (8, 22050, "WAV", ".wav")}
    for lang, (n, sr, fmt, ext) in layout.items():
        for i in range(n):
            _word(root / lang / f"{lang}word{i:02d}{ext}", rng.uniform(0.4, 1.0),
                  rng.uniform(200, 900), sr, fmt)
    shutil.copytree(root / "sr", root / "sr@latin")
    (root / "en.soundtheme").write_text('<language code="en">\n</language>\n')
    return root


def _clip_seconds(path: str) -> float:
    info = sf.info(path)
    return info.frames / info.samplerate


def test_ktuberling_clips_and_oos_split(sounds: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    report = ktuberling.prepare_ktuberling(out, root=sounds, langs=["en", "fi", "de"],
                                           seed=1000, clips_per_lang=10, nj=1)
    assert [s.name for s in report.sets] == ["test_human", "test_human_oos"]
    human, oos = DataDir.load(out / "test_human"), DataDir.load(out / "test_human_oos")
    assert validate(out / "test_human") == [] and validate(out / "test_human_oos") == []
    assert set(human.utt2lang.values()) == {"en", "fi"}
    assert set(oos.utt2lang.values()) == {"ca", "sr"}
    for dd in (human, oos):
        for utt, lang in dd.utt2lang.items():
            assert utt.startswith(f"{lang}-ktuberling-")
            assert 3.0 <= _clip_seconds(dd.wav_scp[utt]) <= 6.0, utt
            assert sf.info(dd.wav_scp[utt]).samplerate == SR
    text = read_table(out / "test_human" / "text")
    for utt, words in text.items():
        lang = human.utt2lang[utt]
        assert all(w.startswith(f"{lang}word") for w in words.split())
        assert len(set(words.split())) == len(words.split())  # a word once per clip
    info = json.loads((out / "ktuberling_info.json").read_text())
    assert info["missing_known_langs"] == ["de"]
    langs = info["langs"]
    assert langs["sr"]["distinct_words"] == 8 and langs["sr"]["set"] == "test_human_oos"
    assert langs["en"] == {**langs["en"], "distinct_words": 80, "clips": 10,
                           "max_clips_per_word": 1}  # enough words: none heard twice
    assert langs["fi"]["clips"] == 10 and langs["fi"]["max_clips_per_word"] > 1
    fi_sets = [frozenset(text[u].split()) for u in human.utts if u.startswith("fi-")]
    assert len(set(fi_sets)) == len(fi_sets)  # reused words, never the same clip twice


def test_ktuberling_trims_silence_and_is_deterministic(sounds: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ktuberling.prepare_ktuberling(a, root=sounds, langs=["en"], seed=3, clips_per_lang=4, nj=1)
    ktuberling.prepare_ktuberling(b, root=sounds, langs=["en"], seed=3, clips_per_lang=4, nj=1)

    def digests(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((root / "wavs").rglob("*.wav"))}

    assert digests(a) == digests(b)
    # Each word's tone lasted 0.4-1.0 s inside 0.6 s of silence: after trimming, a clip is
    # its words' sound plus 0.1-0.3 s pauses, far shorter than the files' total length.
    dd = DataDir.load(a / "test_human")
    text = read_table(a / "test_human" / "text")
    for utt, path in dd.wav_scp.items():
        words = text[utt].split()
        files = [_clip_seconds(str(sounds / "en" / f"{w}.ogg")) for w in words]
        seconds = _clip_seconds(path)
        assert seconds < sum(files) - 0.4 * len(words)
        assert seconds > sum(f - 0.6 for f in files) + 0.1 * (len(words) - 1) - 0.05


def test_ktuberling_missing_package(tmp_path: Path) -> None:
    with pytest.raises(LreError, match=r"nowhere: KTuberling sounds not found .*ktuberling-data"):
        ktuberling.prepare_ktuberling(tmp_path / "data", root=tmp_path / "nowhere")


def test_ktuberling_cli(sounds: Path, tmp_path: Path) -> None:
    from lre.cli import main

    out = tmp_path / "data"
    assert main(["prepare", "ktuberling", "--out", str(out), "--root", str(sounds),
                 "--langs", "ca", "--clips-per-lang", "2", "--nj", "1"]) == 0
    assert set(DataDir.load(out / "test_human").utt2lang.values()) == {"ca"}
    assert set(DataDir.load(out / "test_human_oos").utt2lang.values()) == {"en", "fi", "sr"}


@pytest.mark.skipif(not REAL_SOUNDS.is_dir(),
                    reason="ktuberling-data is not installed (tools/setup.sh installs it)")
def test_ktuberling_real_recordings(tmp_path: Path) -> None:
    # A few real folders (OGG Vorbis at 44.1 kHz stereo, WAV at 8 kHz, Opus at 48 kHz, a
    # duplicated variant folder), copied so the test stays short.
    root = tmp_path / "sounds"
    folders = [f for f in ("en", "fi", "nn", "sr", "sr@latin") if (REAL_SOUNDS / f).is_dir()]
    for folder in folders:
        shutil.copytree(REAL_SOUNDS / folder, root / folder)
    out = tmp_path / "data"
    ktuberling.prepare_ktuberling(out, root=root, seed=1000, clips_per_lang=5, nj=1)
    human = DataDir.load(out / "test_human")
    assert validate(out / "test_human") == [] and validate(out / "test_human_oos") == []
    assert set(human.utt2lang.values()) == {"en", "fi"} & set(folders)
    oos = set(DataDir.load(out / "test_human_oos").utt2lang.values())
    assert oos == {"nn", "sr"} & set(folders)
    for path in human.wav_scp.values():
        assert 3.0 <= _clip_seconds(path) <= 6.0
    info = json.loads((out / "ktuberling_info.json").read_text())
    if "sr" in info["langs"]:
        assert info["langs"]["sr"]["distinct_words"] == len(list((REAL_SOUNDS / "sr").iterdir()))


# ------------------------------------------------------------------ the recipe's dev conditions


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synth_recipe_builds_dev_conditions_from_dev(tmp_path: Path) -> None:
    """prepare.sh makes dev_noisy, dev_reverb and dev_tel of every dev utterance (babble of
    dev utterances only, draws other than the test conditions'); --no-dev-conditions not."""
    root = Path(__file__).resolve().parents[1]

    def prepare(data: Path, *extra: str) -> None:
        proc = subprocess.run(
            ["bash", str(root / "recipes" / "synth" / "prepare.sh"), "--langs", "en,fi",
             "--train-per-lang", "1", "--dev-per-lang", "3", "--test-per-lang", "3",
             "--oos-per-lang", "0", "--ktuberling", str(tmp_path / "none"), "--no-progress",
             *extra, str(data)],
            cwd=root, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True,
            text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    data = tmp_path / "data"
    prepare(data)
    dev = set(DataDir.load(data / "dev").utt2lang)
    for kind in ("noisy", "reverb", "tel"):
        d = data / f"dev_{kind}"
        validate(d)
        aug = read_table(d / "utt2aug")
        sources = {u.split("-", 1)[1] for u in aug}
        assert sources == dev, kind
        if kind != "tel":  # other draws of SNR, noise and RIR than the test conditions'
            test_aug = read_table(data / f"test_{kind}" / "utt2aug")
            assert not set(aug.values()) & set(test_aug.values()), kind
    for desc in read_table(data / "dev_noisy" / "utt2aug").values():
        src = _desc_value(desc, "src")
        assert src == "-" or all(s in dev for s in src.split("+")), desc

    for kind in ("noisy", "reverb", "tel"):  # again (the corpus's WAVs kept), without them
        shutil.rmtree(data / f"dev_{kind}")
    prepare(data, "--no-dev-conditions")
    assert (data / "test_noisy").is_dir() and not (data / "dev_noisy").exists()
