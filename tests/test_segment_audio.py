"""Language turns of real audio: switch points known to the sample, the real feature
pipeline and VAD, the segment geometry of the HGRU, and a stand-in for the model that tells
the two "languages" (a low and a high tone) apart from the features, so that every number
checked follows from the audio alone. Also the code-switched set builder, ``lre segment``'s
RTTM, and stage 4 on a set with a reference RTTM."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_score import make_exp

from lre.cli import main
from lre.data.datadir import DataDir, validate
from lre.features import FeatureConfig, compute_features
from lre.features.cmvn import CmvnOptions
from lre.identify import Identifier
from lre.inference.records import ResultRecord, Turn, read_records, write_records
from lre.inference.runner import ChunkOutput
from lre.metrics import write_scores
from lre.segment import SWEEP, data_dir_speech, decoder_options, sweep, turns_of_records
from lre.segmentation import DecoderOptions, read_rttm, record_turns, write_rttm
from lre.segmentation.codeswitch import prepare_codeswitch, speech_extent
from lre.segmentation.decoder import load_decoder_options, model_decoder_options
from lre.segmentation.rttm import format_rttm
from lre.segmentation.scoring import identification_error, segmentation_metrics
from lre.utils import LreError

SR = 16000
TONES = {"lo": 300.0, "hi": 3000.0}
HOP, SPAN, LAST = 100, 110, 55  # the HGRU's segments at 10 ms frames


#: Features without normalisation, so that a tone's mel bands keep their level.
FEATS = FeatureConfig(cmvn=CmvnOptions(norm_means=False, norm_vars=False, sliding_cmn=False))


class ToneRunner:
    """A model runner that answers "lo" or "hi" from each segment's log-mel energies: the
    frames' loudest low band minus their loudest high band (about +-22 for a pure tone),
    averaged over the segment and divided by 5, as logits: a segment that holds both tones
    leans towards the one it holds more of."""

    langs = ["hi", "lo"]

    def run(self, feats: Sequence[np.ndarray], timeline: bool = False) -> list[ChunkOutput]:
        outs = []
        for x in feats:
            n = len(x)
            count = max(1, (n - LAST) // HOP + 1)
            frames = np.array([[k * HOP, min(k * HOP + SPAN, n)] for k in range(count)])
            diff = x[:, :12].max(axis=1) - x[:, 20:].max(axis=1)
            lean = np.array([diff[s:e].mean() for s, e in frames]) / 5.0
            logits = np.stack([-lean, lean], axis=1)
            outs.append(ChunkOutput(logits.mean(axis=0), np.full(count, 1 / count), frames,
                                    logits if timeline else None))
        return outs


def tone(lang: str, seconds: float) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.4 * np.sin(2 * np.pi * TONES[lang] * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


@pytest.fixture
def switching_wav(tmp_path: Path) -> Path:
    """lo 0-4.0 s, a 0.7 s pause, hi 4.7-8.2 s, then straight on lo 8.2-11.2 s."""
    audio = np.concatenate([tone("lo", 4.0), silence(0.7), tone("hi", 3.5), tone("lo", 3.0)])
    path = tmp_path / "switch.wav"
    sf.write(path, audio, SR, subtype="FLOAT")
    return path


def test_turns_of_audio_with_known_switch_points(switching_wav: Path):
    ident = Identifier(ToneRunner(), ToneRunner.langs, FEATS)
    r = ident.segment(switching_wav, options=DecoderOptions(refine="interpolate"))
    assert [t.language for t in r.turns] == ["lo", "hi", "lo"]
    (a, b, c) = r.turns
    # The pause is non-speech: the turns end and start at the VAD's edges of it.
    assert a.start == pytest.approx(0.0, abs=0.03) and a.end == pytest.approx(4.0, abs=0.05)
    assert b.start == pytest.approx(4.7, abs=0.05)
    # The switch without pause at 8.2 s falls inside segment 7 (voiced frames 700-810:
    # 7.7-8.8 s): the crossing of the posteriors finds it, halfway between centres does not.
    assert b.end == c.start == pytest.approx(8.2, abs=0.3)
    assert c.end == pytest.approx(11.2, abs=0.05)
    plain = ident.segment(switching_wav, options=DecoderOptions(refine="none"))
    assert abs(plain.turns[1].end - 8.2) > 0.35
    assert abs(plain.turns[1].end - 8.2) > abs(b.end - 8.2) + 0.2
    assert r.timeline is not None and json.loads(json.dumps(r.to_dict()))["turns"][1][
        "language"] == "hi"


def test_lre_segment_writes_rttm_that_reads_back(tmp_path: Path, switching_wav: Path, capsys):
    """The CLI on a (randomly initialised) model dir: the RTTM it writes parses into the
    turns of its JSON records, and the table names every turn."""
    exp = make_exp(tmp_path / "exp", FeatureConfig())
    rttm = tmp_path / "out.rttm"
    assert main(["segment", "--model", str(exp), str(switching_wav), "--rttm", str(rttm),
                 "--min-turn", "0", "--switch-penalty", "0"]) == 0
    table = capsys.readouterr().out
    assert main(["segment", "--model", str(exp), str(switching_wav), "--json",
                 "--min-turn", "0", "--switch-penalty", "0"]) == 0
    record = json.loads(capsys.readouterr().out)
    parsed = read_rttm(rttm)[str(switching_wav)]
    assert [(t.start, t.end, t.language) for t in parsed] == \
        [(t["start"], t["end"], t["language"]) for t in record["turns"]]
    assert f"{len(parsed)} turns" in table and all(t.language in table for t in parsed)
    # Bare records (lre identify --timeline --json) carry no VAD: their turns span the
    # segments, pauses included.
    lines = tmp_path / "records.jsonl"
    lines.write_text(json.dumps(record) + "\n")
    assert main(["segment", "--records", str(lines), "--rttm", "-", "--min-turn", "0",
                 "--switch-penalty", "0"]) == 0
    bare = record_turns(ResultRecord.from_dict(record), None, DecoderOptions(0.0, 0.0))
    assert capsys.readouterr().out == format_rttm(str(switching_wav), bare)
    assert bare[0].start == record["turns"][0]["start"]
    assert bare[-1].end == pytest.approx(record["segments"][-1]["end"])
    assert main(["identify", "--model", str(exp), str(switching_wav), "--segments"]) == 0
    assert "turns (" in capsys.readouterr().out


def test_pyannote_reads_our_rttm(tmp_path: Path):
    """Where pyannote is installed (it is not a dependency), its reader agrees with ours."""
    util = pytest.importorskip("pyannote.database.util")
    turns = {"a": [Turn(0.0, 4.25, "en"), Turn(4.8, 9.125, "fi")]}
    write_rttm(tmp_path / "x.rttm", turns)
    loaded = util.load_rttm(tmp_path / "x.rttm")["a"]
    assert [(round(s.start, 3), round(s.end, 3), label)
            for s, _, label in loaded.itertracks(yield_label=True)] == \
        [(0.0, 4.25, "en"), (4.8, 9.125, "fi")]
    # and its identification error rate is ours (pyannote's collar is the whole width)
    metric = pytest.importorskip("pyannote.metrics.identification")
    write_rttm(tmp_path / "h.rttm", {"a": [Turn(0.0, 5.0, "en"), Turn(5.0, 8.0, "fi")]})
    hyp = util.load_rttm(tmp_path / "h.rttm")["a"]
    ier = metric.IdentificationErrorRate(collar=0.5)(loaded, hyp)
    assert ier == pytest.approx(identification_error(turns, read_rttm(tmp_path / "h.rttm"),
                                                     collar=0.25)["IER"])


def make_source_dir(root: Path) -> Path:
    """A data dir of tone "utterances", 3 per language, 1.5-3 s, framed by silence."""
    wav, lang = {}, {}
    for k, name in enumerate(["lo", "hi"] * 3):
        utt = f"{name}-s{k}-u{k}"
        path = root / "wav" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.concatenate([silence(0.3), tone(name, 1.5 + 0.3 * k), silence(0.2)]),
                 SR, subtype="PCM_16")
        wav[utt], lang[utt] = str(path), name
    DataDir(root / "src", wav_scp=wav, utt2lang=lang, utt2spk={u: u[:5] for u in wav}).write()
    return root / "src"


def test_code_switched_set_is_deterministic_and_matches_its_audio(tmp_path: Path):
    src = make_source_dir(tmp_path)
    prepare_codeswitch(src, tmp_path / "a", recordings=6, seed=2000, single_share=1 / 3)
    prepare_codeswitch(src, tmp_path / "b", recordings=6, seed=2000, single_share=1 / 3)
    assert not validate(tmp_path / "a", check_audio=True)
    a, b = DataDir.load(tmp_path / "a"), DataDir.load(tmp_path / "b")
    assert a.utts == b.utts and len(a.utts) == 6
    for utt in a.utts:
        assert Path(a.wav_scp[utt]).read_bytes() == Path(b.wav_scp[utt]).read_bytes()
    ref = read_rttm(tmp_path / "a" / "ref.rttm")
    assert (tmp_path / "a" / "ref.rttm").read_bytes() == (tmp_path / "b" / "ref.rttm").read_bytes()
    single = [u for u in a.utts if len({t.language for t in ref[u]}) == 1]
    assert len(single) == 2
    for utt in a.utts:
        audio, sr = sf.read(a.wav_scp[utt])
        turns = ref[utt]
        # Trimmed pieces: the recording starts and ends with speech, and each turn's edges
        # are the tones' edges (loud inside, quiet 20 ms outside).
        assert turns[0].start == 0.0 and turns[-1].end == pytest.approx(len(audio) / sr,
                                                                         abs=1e-3)
        for t in turns:
            inside = audio[int(t.start * sr) + 80:int(t.end * sr) - 80]
            assert np.abs(inside).max() > 0.3
        for prev, nxt in zip(turns[:-1], turns[1:], strict=True):
            gap = audio[int(prev.end * sr) + 40:int(nxt.start * sr) - 40]
            assert nxt.start >= prev.end and (len(gap) == 0 or np.abs(gap).max() < 0.01)
        majority = max({t.language for t in turns},
                       key=lambda lang: sum(t.duration for t in turns if t.language == lang))
        assert a.utt2lang[utt] == majority
    assert speech_extent(tone("lo", 1.0), SR) == (0, SR)


def test_stage_4_scores_the_turns_of_a_set_with_a_reference(tmp_path: Path):
    """A code-switched set of tones, features and VAD by stage 1, records as stage 3 writes
    them (the tone runner through the identify path): lre evaluate adds the segmentation
    figures, turns.rttm, a plot and a report section."""
    src = make_source_dir(tmp_path)
    data = tmp_path / "cs"
    prepare_codeswitch(src, data, recordings=6, seed=7, single_share=1 / 3)
    compute_features(data, FEATS, nj=1)
    ident = Identifier(ToneRunner(), ToneRunner.langs, FEATS)
    dd = DataDir.load(data)
    records = []
    for utt in dd.utts:
        r = ident.identify(dd.wav_scp[utt], timeline=True)
        r.id, r.source = utt, None
        records.append(r)
    scores = tmp_path / "exp" / "cs"
    write_records(scores / "attention.jsonl", records)
    write_scores(scores / "scores.tsv", [r.id for r in records], ToneRunner.langs,
                 np.log([[r.posteriors[lang] for lang in ToneRunner.langs] for r in records]))
    # The data dir's VAD gives the same turns as the audio's own (identify --segments).
    speech = data_dir_speech(data)
    ref = read_rttm(data / "ref.rttm")
    hyp = turns_of_records(records, speech)
    direct = {u: ident.segment(dd.wav_scp[u]).turns for u in dd.utts}
    assert hyp == direct
    assert segmentation_metrics(ref, hyp, collar=0.25)["IER"] < 0.1

    assert main(["evaluate", "--scores-dir", str(scores), "--data", str(data),
                 "--attention-plots", "0"]) == 0
    results = json.loads((scores / "results.json").read_text())
    seg = results["segmentation"]
    # evaluate reads the records back (times to ms, posteriors to 4 decimals)
    stored = turns_of_records(read_records(scores / "attention.jsonl"), speech)
    assert seg["recordings"] == 6 and seg["IER"] == pytest.approx(
        segmentation_metrics(ref, stored, collar=0.25)["IER"], abs=1e-9)
    assert seg["IER"] == pytest.approx(segmentation_metrics(ref, hyp, collar=0.25)["IER"],
                                       abs=0.01)
    assert seg["single_language"]["one_language"] == 1.0
    assert seg["boundary"]["median"] < 0.3
    written = read_rttm(scores / "turns.rttm")
    assert sorted(written) == sorted(stored)
    for u, ts in stored.items():
        assert [t.language for t in written[u]] == [t.language for t in ts]
        np.testing.assert_allclose([(t.start, t.end) for t in written[u]],
                                   [(t.start, t.end) for t in ts], atol=1.1e-3)
    report = (scores / "report.md").read_text()
    assert "## Language segmentation" in report
    assert seg["plots"] and (scores / seg["plots"][0]["file"]).stat().st_size > 10000
    # lre plot segments draws the same from the files
    out = tmp_path / "plot.png"
    assert main(["plot", "segments", "--records", str(scores / "attention.jsonl"),
                 "--utt", dd.utts[0], "--data", str(data), "--out", str(out)]) == 0
    assert out.stat().st_size > 10000
    # --sweep: the decoder's settings on a set with a reference
    assert main(["segment", "--scores-dir", str(scores), "--data", str(data), "--sweep"]) == 0
    # --save keeps the best row with a model; its turns then use it, the command line wins
    saved = tmp_path / "exp" / "segment.json"
    assert main(["segment", "--scores-dir", str(scores), "--data", str(data), "--sweep",
                 "--save", str(saved)]) == 0
    spec = json.loads(saved.read_text())
    assert spec["format"] == "lre-decoder-1"
    rows = sweep(list(read_records(scores / "attention.jsonl")), speech, ref)
    best = rows[0]
    # two worker processes share the grid: the same rows in the same order
    shared = sweep(list(read_records(scores / "attention.jsonl")), speech, ref, nj=2)
    assert [list(r) for r in shared] == [list(r) for r in rows]
    np.testing.assert_array_equal([list(r.values()) for r in shared],
                                  [list(r.values()) for r in rows])  # NaN where no switch
    assert {k: spec[k] for k in SWEEP} == {k: best[k] for k in SWEEP}
    assert spec["chosen_on"]["figures"]["IER"] == best["IER"]
    opts = load_decoder_options(saved)
    assert opts == DecoderOptions(**{k: best[k] for k in SWEEP})
    assert model_decoder_options(tmp_path / "exp") == opts
    assert model_decoder_options(tmp_path) == DecoderOptions()  # none saved: the defaults
    older = tmp_path / "older.json"  # a file from before the mono penalty: 0 for it
    older.write_text(json.dumps({k: v for k, v in spec.items() if k != "mono_penalty"}))
    assert load_decoder_options(older) == replace(opts, mono_penalty=0.0)
    args = argparse.Namespace(decoder=str(saved), switch_penalty=0.5, min_turn=None,
                              min_gap=None, refine=None)
    assert decoder_options(args) == replace(opts, switch_penalty=0.5)
    assert main(["evaluate", "--scores-dir", str(scores), "--data", str(data),
                 "--attention-plots", "0", "--no-plots", "--decoder", str(saved)]) == 0
    seg = json.loads((scores / "results.json").read_text())["segmentation"]
    assert seg["decoder"] == {k: spec[k] for k in SWEEP}
    # an identifier decodes its turns with its model's settings (from_pretrained loads
    # them: model_decoder_options of the model dir)
    wav = dd.wav_scp[dd.utts[0]]
    ident.decoder = replace(opts, min_turn=0.0, switch_penalty=0.0)
    assert ident.segment(wav).turns == ident.identify(wav, turns=ident.decoder).turns
    assert ident.identify(wav, turns=True).turns == ident.segment(wav).turns
    saved.write_text('{"format": "lre-decoder-1", "switch_penalty": -1, "min_turn": 1, '
                     '"min_gap": 0.5, "refine": "none"}')
    with pytest.raises(LreError, match=r"segment.json: switch penalty: must be >= 0"):
        load_decoder_options(saved)
    assert main(["segment", "--scores-dir", str(scores), "--data", str(data), "--save",
                 str(saved)]) == 1  # --save goes with --sweep
