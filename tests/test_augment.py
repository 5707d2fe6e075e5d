"""Augmentation: valid Kaldi data dirs, new ids, measured SNR and speed, determinism."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import soundfile as sf

from lre.augment import AugmentOptions, augment_data_dir, generated_rir
from lre.data.audio import load_audio
from lre.data.datadir import DataDir, load_utterance, validate
from lre.data.tables import read_table
from lre.utils import LreError

SR = 16000


@pytest.fixture
def src(tmp_path, espeak_wav, tone_wav):
    """Three quiet espeak utterances, a 440 Hz tone, and one unreadable file."""
    wavs = tmp_path / "src_wav"
    wav_scp, utt2lang, utt2spk = {}, {}, {}
    for i, (lang, text) in enumerate([("en", "augmented speech is still speech"),
                                      ("de", "die sprache bleibt erhalten"),
                                      ("fr", "la langue reste la meme")]):
        utt = f"s{i}-{lang}"
        path = espeak_wav(lang, text, wavs / f"{utt}.wav")
        audio, _ = sf.read(path, dtype="float32")
        sf.write(path, 0.25 * audio / np.abs(audio).max(), SR, subtype="PCM_16")
        wav_scp[utt], utt2lang[utt], utt2spk[utt] = str(path), lang, f"s{i}"
    wav_scp["s3-tone"] = str(tone_wav(wavs / "tone.wav", 1.5, freq=440.0))
    audio, _ = sf.read(wav_scp["s3-tone"], dtype="float32")
    sf.write(wav_scp["s3-tone"], 0.25 * audio / np.abs(audio).max(), SR, subtype="PCM_16")
    utt2lang["s3-tone"], utt2spk["s3-tone"] = "xx", "s3"
    (wavs / "bad.wav").write_bytes(b"definitely not audio")
    wav_scp["s4-bad"], utt2lang["s4-bad"], utt2spk["s4-bad"] = str(wavs / "bad.wav"), "en", "s4"
    d = tmp_path / "data" / "train"
    DataDir(d, wav_scp=wav_scp, utt2lang=utt2lang, utt2spk=utt2spk).write()
    return d


GOOD = ["s0-en", "s1-de", "s2-fr", "s3-tone"]


def _peak_freq(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


def test_augmented_dir_is_valid_with_new_ids(src, tmp_path):
    out = tmp_path / "data" / "train_aug"
    opts = AugmentOptions(speeds=(0.9, 1.1), noises=("white", "pink", "babble"), reverb=True,
                          telephone=True, seed=3)
    report = augment_data_dir(src, out, opts)
    assert validate(out) == []
    dd = DataDir.load(out)
    prefixes = ["sp0.9", "sp1.1", "noise", "reverb", "tel"]
    expected = set(GOOD) | {f"{p}-{u}" for p in prefixes for u in GOOD}
    assert set(dd.utts) == expected and report.num_utts == len(expected)
    failed = read_table(out / "augment_failed")
    assert failed == {"s4-bad": failed["s4-bad"]}
    uniq = read_table(out / "utt2uniq")
    aug = read_table(out / "utt2aug")
    for utt in dd.utts:
        source = uniq[utt]
        assert source in GOOD and dd.utt2lang[utt] == dd.utt2lang[source]
        prefix = utt[: -len(source)]
        assert dd.utt2spk[utt] == prefix + dd.utt2spk[source]
        assert dd.utt2spk[utt] == utt.split("-")[0] or utt.startswith(dd.utt2spk[utt] + "-")
    assert aug["s0-en"] == "original" and aug["reverb-s0-en"].startswith("reverb rt60=")
    assert aug["tel-s0-en"].startswith("telephone")

    # Speed: duration divided by the factor; a 440 Hz tone moves to 440 * factor.
    tone = load_utterance(dd, "s3-tone")
    for factor in (0.9, 1.1):
        fast = load_utterance(dd, f"sp{factor:g}-s3-tone")
        assert abs(len(fast) - len(tone) / factor) <= 2
        assert abs(dd.utt2dur[f"sp{factor:g}-s3-tone"] - len(tone) / factor / SR) < 1e-3
        assert abs(_peak_freq(fast) - 440 * factor) < 3
    # Same length for the other copies; telephone removes the band above 3.4 kHz.
    for utt in GOOD:
        clean = load_utterance(dd, utt)
        for p in ("noise", "reverb", "tel"):
            assert len(load_utterance(dd, f"{p}-{utt}")) == len(clean)
    clean = load_utterance(dd, "s0-en")
    tel = load_utterance(dd, "tel-s0-en")

    def high_band(x):
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / SR)
        return spec[f > 4200].sum() / spec.sum()

    assert high_band(clean) > 1e-3
    assert high_band(tel) < 1e-3 * high_band(clean)


@pytest.mark.parametrize("noise", ["white", "pink", "babble"])
def test_noise_snr_is_in_range(src, tmp_path, noise):
    out = tmp_path / f"aug_{noise}"
    augment_data_dir(src, out, AugmentOptions(noises=(noise,), snr=(5.0, 20.0), seed=11,
                                              keep_original=False))
    dd = DataDir.load(out)
    aug = read_table(out / "utt2aug")
    orig = DataDir.load(src)
    assert sorted(dd.utts) == [f"noise-{u}" for u in GOOD]
    snrs = []
    for utt in GOOD:
        clean = load_utterance(orig, utt)
        noisy = load_utterance(dd, f"noise-{utt}")
        measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2)
                                 / np.mean((noisy - clean).astype(np.float64) ** 2))
        wanted = float(re.search(r"snr=([\d.]+)", aug[f"noise-{utt}"]).group(1))
        assert f"type={noise}" in aug[f"noise-{utt}"] and "gain=" not in aug[f"noise-{utt}"]
        assert 5.0 - 0.05 <= measured <= 20.0 + 0.05
        assert abs(measured - wanted) < 0.05
        snrs.append(measured)
    assert np.ptp(snrs) > 0.5  # drawn per utterance, not one fixed value
    if noise == "babble":
        # Babble is made of the other utterances, never of the utterance itself.
        for utt in GOOD:
            assert utt not in aug[f"noise-{utt}"].split("src=")[1].split("+")


def test_babble_pool_bounds_the_babble_sources(src, tmp_path):
    def sources(pool: int) -> set[str]:
        out = tmp_path / f"pool{pool}"
        augment_data_dir(src, out, AugmentOptions(noises=("babble",), babble_pool=pool, seed=4,
                                                  keep_original=False))
        return {u for desc in read_table(out / "utt2aug").values()
                for u in desc.split("src=")[1].split()[0].split("+")}

    assert sources(64) == set(GOOD)  # three others for each of the four
    assert len(sources(3)) <= 3 and sources(3) < set(GOOD)
    with pytest.raises(LreError, match="--babble-pool"):
        AugmentOptions(noises=("babble",), babble_pool=1).check()


def test_same_seed_same_audio(src, tmp_path):
    opts = AugmentOptions(speeds=(0.9,), noises=("white", "babble"), reverb=True, seed=5)
    a = augment_data_dir(src, tmp_path / "a", opts)
    b = augment_data_dir(src, tmp_path / "b", opts)
    c = augment_data_dir(src, tmp_path / "c", dataclasses.replace(opts, seed=6))
    assert a.num_utts == b.num_utts == c.num_utts
    for utt in ["sp0.9-s0-en", "noise-s1-de", "reverb-s2-fr"]:
        bytes_a = (tmp_path / "a" / "wav" / f"{utt}.wav").read_bytes()
        assert bytes_a == (tmp_path / "b" / "wav" / f"{utt}.wav").read_bytes()
        if not utt.startswith("sp"):  # speed perturbation is not random
            assert bytes_a != (tmp_path / "c" / "wav" / f"{utt}.wav").read_bytes()
    assert (tmp_path / "a" / "utt2aug").read_text() == (tmp_path / "b" / "utt2aug").read_text()
    # A re-run with the same options reuses the WAVs and writes the same dir.
    again = augment_data_dir(src, tmp_path / "a", opts)
    assert again.reused == 3 * len(GOOD)
    assert (tmp_path / "a" / "utt2aug").read_text() == (tmp_path / "b" / "utt2aug").read_text()


def test_worker_processes_write_the_same_dir(src, tmp_path):
    """--nj 2 (spawned workers, parts of the utterance list) == --nj 1, byte for byte, with
    the unreadable source still listed; a re-run reuses every WAV the workers wrote."""
    opts = AugmentOptions(speeds=(1.1,), noises=("pink", "babble"), telephone=True, seed=2)
    one = augment_data_dir(src, tmp_path / "one", opts, nj=1)
    two = augment_data_dir(src, tmp_path / "two", opts, nj=2)
    assert one.num_utts == two.num_utts == 4 * len(GOOD)
    assert list(two.failed) == ["s4-bad"]
    for name in ("utt2lang", "utt2spk", "utt2dur", "utt2uniq", "utt2aug", "augment_failed"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    wavs = sorted(p.name for p in (tmp_path / "one" / "wav").iterdir())
    assert len(wavs) == 3 * len(GOOD)
    assert wavs == sorted(p.name for p in (tmp_path / "two" / "wav").iterdir())
    for name in wavs:
        assert ((tmp_path / "one" / "wav" / name).read_bytes()
                == (tmp_path / "two" / "wav" / name).read_bytes()), name
    again = augment_data_dir(src, tmp_path / "two", opts, nj=1)
    assert again.reused == 3 * len(GOOD)
    with pytest.raises(LreError, match="--nj must be at least 1"):
        augment_data_dir(src, tmp_path / "zero", opts, nj=0)


def test_real_rir_is_aligned_on_its_direct_path(src, tmp_path):
    rir = np.zeros(800, np.float32)
    rir[40] = 1.0  # a pure delay: the reverberated copy must equal the input
    sf.write(tmp_path / "delay.wav", rir, SR, subtype="FLOAT")
    (tmp_path / "rir_list").write_text(
        "--rir-id delay --room-id room1 delay.wav\n")
    out = tmp_path / "rev"
    augment_data_dir(src, out, AugmentOptions(reverb=True, rir_list=str(tmp_path / "rir_list"),
                                              keep_original=False))
    dd, orig = DataDir.load(out), DataDir.load(src)
    for utt in GOOD:
        np.testing.assert_allclose(load_utterance(dd, f"reverb-{utt}"),
                                   load_utterance(orig, utt), atol=2e-4)
    assert read_table(out / "utt2aug")["reverb-s0-en"] == "reverb rir=delay.wav"


def test_generated_rir_decays_with_rt60():
    rng = np.random.default_rng(0)
    h = generated_rir(0.5, SR, rng)
    assert np.argmax(np.abs(h)) == 0 and abs(np.sum(h**2) - 1) < 1e-5
    energy = np.convolve(h[1:].astype(np.float64) ** 2, np.ones(400), "valid")
    # Energy 60 dB down over 0.5 s: about 12 dB per 0.1 s along the tail.
    e1, e2 = energy[int(0.05 * SR)], energy[int(0.25 * SR)]
    assert 15 < 10 * np.log10(e1 / e2) < 33


def test_cli_augment_and_errors(src, tmp_path):
    from lre.cli import main

    out = tmp_path / "cli_aug"
    assert main(["augment", "--in", str(src), "--out", str(out), "--speed", "1.1",
                 "--telephone", "--seed", "2"]) == 0
    assert set(DataDir.load(out).utts) == set(GOOD) | {f"{p}-{u}" for p in ("sp1.1", "tel")
                                                        for u in GOOD}
    assert main(["augment", "--in", str(src), "--out", str(out), "--noise", "musan"]) == 1
    with pytest.raises(LreError, match="nothing to do"):
        augment_data_dir(src, out, AugmentOptions())
    with pytest.raises(LreError, match="must differ"):
        augment_data_dir(src, src, AugmentOptions(telephone=True))
    assert load_audio(str(out / "wav" / "tel-s0-en.wav"), SR).dtype == np.float32


def test_musan_noise_and_segmented_source(tmp_path, tone_wav):
    from lre.data.datadir import Segment

    # One recording holding two utterances (segments), noise from a MUSAN-like folder.
    reco = tone_wav(tmp_path / "reco.wav", 2.0, freq=300.0, silence_before=0.5)
    d = tmp_path / "seg"
    DataDir(d, wav_scp={"r1": str(reco)}, utt2lang={"r1-a": "xx", "r1-b": "yy"},
            utt2spk={"r1-a": "r1", "r1-b": "r1"},
            segments={"r1-a": Segment("r1", 0.0, 1.2), "r1-b": Segment("r1", 1.2, 2.5)}).write()
    musan = tmp_path / "musan"
    rng = np.random.default_rng(0)
    for kind in ("music", "noise"):
        (musan / kind).mkdir(parents=True)
        sf.write(musan / kind / f"{kind}-0001.wav", 0.1 * rng.standard_normal(3000), SR)
    out = tmp_path / "seg_aug"
    augment_data_dir(d, out, AugmentOptions(noises=("musan-music",), musan=str(musan),
                                            telephone=True, seed=1))
    assert validate(out) == []
    dd = DataDir.load(out)
    assert dd.segments["r1-a"] == Segment("r1", 0.0, 1.2)
    assert dd.segments["noise-r1-b"] == Segment("noise-r1-b", 0.0, 1.3)
    assert abs(dd.utt2dur["tel-r1-a"] - 1.2) < 1e-3
    aug = read_table(out / "utt2aug")
    assert "type=musan-music" in aug["noise-r1-a"] and "src=music-0001.wav" in aug["noise-r1-a"]
    noisy, clean = load_utterance(dd, "noise-r1-b"), load_utterance(dd, "r1-b")
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert 5 - 0.05 <= snr <= 20 + 0.05


def test_telephone_codecs_are_drawn_and_part_of_the_options(src, tmp_path):
    """mu-law stays the default; with several codecs each copy says which one it got, and
    a re-run with other codecs makes the copies again instead of reusing them."""
    out = tmp_path / "tel"
    augment_data_dir(src, out, AugmentOptions(telephone=True, keep_original=False, seed=1))
    aug = read_table(out / "utt2aug")
    assert {d.rsplit("codec=", 1)[1] for d in aug.values()} == {"mu-law-8bit"}
    opts = AugmentOptions(telephone=True, tel_codecs=("gsm", "opus"), keep_original=False,
                          seed=1)
    report = augment_data_dir(src, out, opts)
    assert report.reused == 0
    aug = read_table(out / "utt2aug")
    assert {d.rsplit("codec=", 1)[1] for d in aug.values()} <= {"gsm-06.10", "opus-20kbps"}
    for utt in GOOD:
        tel = load_audio(str(out / "wav" / f"tel-{utt}.wav"), SR)
        assert len(tel) == len(load_utterance(DataDir.load(src), utt, SR))
    assert augment_data_dir(src, out, opts).reused == len(GOOD)
