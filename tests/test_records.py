"""Result records: one JSON layout written, the current and the earlier layouts read back,
and ``lre plot attention`` rendering files in each of them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from lre import plots
from lre.cli import main
from lre.data.datadir import DataDir
from lre.inference.records import (
    ResultRecord,
    Segment,
    find_record,
    read_records,
    write_records,
)
from lre.utils import LreError

SR = 16000
LANGS = ["fi", "sv", "en"]
SEGMENTS = [
    {"start": 0.5, "end": 1.6, "weight": 0.35},
    {"start": 1.5, "end": 2.0, "weight": 0.15},
    {"start": 3.0, "end": 4.1, "weight": 0.5},
]
SEGMENT_POSTERIORS = [{"fi": 0.7, "sv": 0.2, "en": 0.1}, {"fi": 0.5, "sv": 0.4, "en": 0.1},
                      {"fi": 0.1, "sv": 0.1, "en": 0.8}]
POSTERIORS = {"fi": 0.8, "sv": 0.15, "en": 0.05}


def old_attention_line(utt: str = "utt1") -> dict:
    """An ``attention.jsonl`` line in the layout ``lre score`` used to write."""
    return {"utt": utt, "pred": "fi", "posteriors": POSTERIORS, "segments": SEGMENTS}


def old_identify_line(source: str, timeline_layout: str | None) -> dict:
    """An ``lre identify --json`` line in the earlier layout, its timeline in one of the
    layouts that were accepted."""
    d = {"source": source, "language": "fi", "probability": 0.8,
         "top_k": [["fi", 0.8], ["sv", 0.15]], "posteriors": POSTERIORS,
         "segments": [dict(s) for s in SEGMENTS], "duration": 4.2, "calibrated": True,
         "chunks": 1}
    if timeline_layout == "segment-objects":
        d["timeline"] = [{"start": s["start"], "end": s["end"], "posteriors": p}
                         for s, p in zip(SEGMENTS, SEGMENT_POSTERIORS, strict=True)]
    elif timeline_layout == "posterior-objects":
        d["timeline"] = SEGMENT_POSTERIORS
    elif timeline_layout == "rows-with-langs":
        d["timeline"] = [[p[lang] for lang in LANGS] for p in SEGMENT_POSTERIORS]
        d["langs"] = LANGS
    elif timeline_layout == "log-rows-with-langs":
        d["timeline"] = [[float(np.log(p[lang])) for lang in LANGS] for p in SEGMENT_POSTERIORS]
        d["langs"] = LANGS
    elif timeline_layout == "per-segment":
        for s, p in zip(d["segments"], SEGMENT_POSTERIORS, strict=True):
            s["posteriors"] = p
    return d


TIMELINE_LAYOUTS = ["segment-objects", "posterior-objects", "rows-with-langs",
                    "log-rows-with-langs", "per-segment"]


def fake_result(timeline: bool = True) -> SimpleNamespace:
    """What the chunk combiner returns for one utterance (only the attributes records use)."""
    seg_lp = np.log(np.array([[p[lang] for lang in LANGS] for p in SEGMENT_POSTERIORS]))
    return SimpleNamespace(
        logits=np.zeros(3), log_posteriors=np.log(np.array([0.6, 0.3, 0.1])),
        starts=np.array([s["start"] for s in SEGMENTS]),
        ends=np.array([s["end"] for s in SEGMENTS]),
        weights=np.array([s["weight"] for s in SEGMENTS]),
        segment_log_posteriors=seg_lp if timeline else None, num_frames=380, chunks=2)


# ----------------------------------------------------------------------------------------
# the record
# ----------------------------------------------------------------------------------------


def test_from_result_to_dict_layout_and_rounding():
    log_post = np.log(np.array([0.123456789, 0.8, 0.076543211]))
    result = fake_result()
    result.starts = result.starts + 1e-5  # rounded away at ms
    rec = ResultRecord.from_result("a.wav", LANGS, log_post, result, duration=4.21349,
                                   calibrated=True)
    assert rec.decision == rec.language == "sv"
    assert rec.probability == pytest.approx(0.8)
    assert rec.top_k(2) == [("sv", pytest.approx(0.8)), ("fi", pytest.approx(0.123456789))]
    assert [lang for lang, _ in rec.top_k(None)] == ["sv", "fi", "en"]
    assert rec.chunks == 2 and rec.calibrated
    d = rec.to_dict()
    assert list(d) == ["id", "decision", "probability", "posteriors", "segments", "duration",
                       "calibrated", "chunks"]
    assert d["posteriors"] == {"fi": 0.1235, "sv": 0.8, "en": 0.0765}
    assert d["probability"] == 0.8 and d["duration"] == 4.213
    assert d["segments"][0] == {"start": 0.5, "end": 1.6, "weight": 0.35,
                                "posteriors": {"fi": 0.7, "sv": 0.2, "en": 0.1}}
    assert rec.to_dict(decimals=2)["posteriors"]["fi"] == 0.12
    json.dumps(d)  # plain JSON types only
    assert ResultRecord.from_dict(d) == ResultRecord.from_dict(json.loads(json.dumps(d)))
    back = ResultRecord.from_dict(d)
    assert back.to_dict() == d


def test_from_result_without_timeline_and_with_unknown():
    rec = ResultRecord.from_result("u1", LANGS, np.log([0.4, 0.35, 0.25]),
                                   fake_result(timeline=False), decision="unknown")
    assert rec.timeline is None and rec.timeline_array() is None
    assert rec.decision == "unknown" and rec.probability == pytest.approx(0.4)
    d = rec.to_dict()
    assert "duration" not in d and all("posteriors" not in s for s in d["segments"])
    assert d["decision"] == "unknown" and d["probability"] == 0.4


def test_warnings_are_written_only_when_there_are_some_and_read_back():
    rec = ResultRecord.from_result("cut.wav", LANGS, np.log([0.4, 0.35, 0.25]), fake_result(),
                                   duration=0.5, warnings=["truncated: header says 5.50 s"])
    d = rec.to_dict()
    assert list(d)[-1] == "warnings" and d["warnings"] == ["truncated: header says 5.50 s"]
    back = ResultRecord.from_dict(json.loads(json.dumps(d)))
    assert back.warnings == rec.warnings and back.to_dict() == d
    plain = ResultRecord.from_result("a.wav", LANGS, np.log([0.4, 0.35, 0.25]), fake_result())
    assert plain.warnings == [] and "warnings" not in plain.to_dict()
    assert ResultRecord.from_dict(plain.to_dict()).warnings == []
    with pytest.raises(LreError, match="record 'cut.wav': 'warnings' is not a list of strings"):
        ResultRecord.from_dict({**d, "warnings": "truncated"})


def test_from_result_checks_shapes():
    with pytest.raises(LreError, match="u1: 2 posteriors for 3 languages"):
        ResultRecord.from_result("u1", LANGS, np.log([0.5, 0.5]), fake_result())
    result = fake_result()
    result.segment_log_posteriors = result.segment_log_posteriors[:2]
    with pytest.raises(LreError, match=r"u1: segment posteriors of shape \(2, 3\)"):
        ResultRecord.from_result("u1", LANGS, np.log([0.4, 0.35, 0.25]), result)


def test_from_result_accepts_the_combined_result_dataclass():
    import importlib

    for name in ("lre.inference.chunks", "lre.score"):
        try:
            UtteranceResult = importlib.import_module(name).UtteranceResult  # noqa: N806
            break
        except (ImportError, AttributeError):
            continue
    else:
        pytest.fail("no UtteranceResult in lre.inference.chunks or lre.score")
    f = fake_result()
    result = UtteranceResult(logits=f.logits, log_posteriors=f.log_posteriors, starts=f.starts,
                             ends=f.ends, weights=f.weights,
                             segment_log_posteriors=f.segment_log_posteriors,
                             num_frames=f.num_frames, chunks=f.chunks)
    rec = ResultRecord.from_result("u1", LANGS, f.log_posteriors, result)
    assert rec.decision == "fi" and len(rec.segments) == 3 and rec.chunks == 2
    assert rec.timeline[1] == pytest.approx(SEGMENT_POSTERIORS[1])


def test_reads_old_attention_line():
    rec = ResultRecord.from_dict(old_attention_line())
    assert rec.id == "utt1" and rec.decision == "fi" and rec.source is None
    assert rec.posteriors == POSTERIORS
    assert rec.segments == [Segment(**s) for s in SEGMENTS]
    assert rec.duration is None and not rec.calibrated and rec.chunks == 1
    assert rec.to_dict()["id"] == "utt1"


@pytest.mark.parametrize("layout", TIMELINE_LAYOUTS)
def test_reads_old_identify_line_with_each_timeline_layout(layout):
    rec = ResultRecord.from_dict(old_identify_line("talk.wav", layout))
    assert rec.id == "talk.wav" and rec.source is None
    assert rec.language == "fi" and rec.probability == pytest.approx(0.8)
    assert rec.duration == 4.2 and rec.calibrated
    matrix, langs = rec.timeline_array()
    assert langs == LANGS
    expected = np.array([[p[lang] for lang in LANGS] for p in SEGMENT_POSTERIORS])
    np.testing.assert_allclose(matrix, expected, atol=1e-9)
    # written back in the one layout: the timeline rides on the segments
    d = rec.to_dict()
    assert "timeline" not in d and "top_k" not in d and "language" not in d
    assert d["segments"][2]["posteriors"] == pytest.approx({"fi": 0.1, "sv": 0.1, "en": 0.8})


def test_reads_old_identify_line_of_a_list_file():
    d = {"id": "utt7", **old_identify_line("/audio/7.flac", None)}
    rec = ResultRecord.from_dict(d)
    assert rec.id == "utt7" and rec.source == "/audio/7.flac"
    assert rec.to_dict()["source"] == "/audio/7.flac"
    no_posteriors = {k: v for k, v in d.items() if k != "posteriors"}
    assert ResultRecord.from_dict(no_posteriors).posteriors == {"fi": 0.8, "sv": 0.15}


def test_timeline_of_other_length_is_dropped():
    d = old_identify_line("a.wav", "posterior-objects")
    d["timeline"] = d["timeline"][:2]
    assert ResultRecord.from_dict(d).timeline is None


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("utt"), "record has no 'id' \\(nor 'utt' or 'source'\\)"),
    (lambda d: d.pop("segments"), "record 'utt1': no 'segments' list"),
    (lambda d: d.pop("posteriors"), "record 'utt1': no 'posteriors' object"),
    (lambda d: d["segments"][1].pop("end"), "record 'utt1': segment 1 has no 'end'"),
    (lambda d: d["segments"][0].update(weight="x"),
     "record 'utt1': 'segments\\[0\\].weight' is not a number"),
    (lambda d: d.update(timeline=[[0.5, 0.5]]), "'timeline' is neither segment objects"),
])
def test_from_dict_names_what_is_missing(change, message):
    d = json.loads(json.dumps(old_attention_line()))
    change(d)
    with pytest.raises(LreError, match=message):
        ResultRecord.from_dict(d)


# ----------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------


def test_write_read_find(tmp_path):
    recs = [ResultRecord.from_result(u, LANGS, np.log([0.2, 0.7, 0.1]), fake_result())
            for u in ("a", "b")]
    path = write_records(tmp_path / "out" / "attention.jsonl", recs)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b"]
    assert [r.id for r in read_records(path)] == ["a", "b"]
    assert find_record(path, "b").id == "b"
    with pytest.raises(LreError, match="2 records; choose one by id"):
        find_record(path)
    with pytest.raises(LreError, match="no record for 'c'"):
        find_record(path, "c")
    with pytest.raises(LreError, match="file not found"):
        find_record(tmp_path / "none.jsonl")

    def failing():
        yield recs[0]
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        write_records(path, failing())
    assert path.read_text(encoding="utf-8").splitlines() == lines  # old file left whole
    assert not [p for p in path.parent.iterdir() if p.name != path.name]


def test_read_records_errors_name_file_and_line(tmp_path, caplog):
    path = tmp_path / "attention.jsonl"
    good = json.dumps(old_attention_line())
    path.write_text(good + "\n\nnot json\n" + json.dumps({"utt": "x"}) + "\n[1]\n" + good
                    + "\n")
    with pytest.raises(LreError, match=r"attention.jsonl:3: not valid JSON"):
        list(read_records(path))
    with pytest.raises(LreError, match=r"attention.jsonl:3: not valid JSON"):
        find_record(path, "missing")
    assert find_record(path, "utt1").id == "utt1"  # the first match, before the bad line
    with caplog.at_level("WARNING"):
        assert [r.id for r in read_records(path, skip_invalid=True)] == ["utt1", "utt1"]
    assert "3 malformed lines skipped" in caplog.text
    path.write_text(good + "\n" + json.dumps({"utt": "x", "posteriors": {"fi": 1}}) + "\n")
    with pytest.raises(LreError, match=r"attention.jsonl:2: record 'x': no 'segments' list"):
        list(read_records(path))


# ----------------------------------------------------------------------------------------
# lre plot attention on files in the earlier layouts
# ----------------------------------------------------------------------------------------


@pytest.fixture
def plotted(monkeypatch):
    """Records what :func:`plots.plot_attention` was asked to draw, then draws it."""
    calls = []
    draw = plots.plot_attention

    def spy(wave, sample_rate, segments, out_path, **kw):
        calls.append({"segments": segments, **kw})
        return draw(wave, sample_rate, segments, out_path, **kw)

    monkeypatch.setattr(plots, "plot_attention", spy)
    return calls


@pytest.fixture
def tone(tmp_path):
    t = np.arange(int(4.2 * SR)) / SR
    wave = (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    wave[t < 0.5] = 0
    path = tmp_path / "talk.wav"
    sf.write(path, wave, SR, subtype="PCM_16")
    return path


def test_cli_plot_old_attention_jsonl(tmp_path, tone, plotted):
    data = tmp_path / "data"
    DataDir(data, wav_scp={"utt1": str(tone), "utt2": str(tone)},
            utt2lang={"utt1": "fi", "utt2": "sv"}, utt2spk={"utt1": "s", "utt2": "s"}).write()
    att = tmp_path / "attention.jsonl"
    att.write_text("\n".join(json.dumps(old_attention_line(u)) for u in ("utt2", "utt1")) + "\n")
    out = tmp_path / "utt1.png"
    assert main(["plot", "attention", "--attention", str(att), "--utt", "utt1", "--data",
                 str(data), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    (call,) = plotted
    assert call["segments"] == SEGMENTS and call["title"] == "utt1"
    assert call["posteriors"] == POSTERIORS and call["timeline"] is None


@pytest.mark.parametrize("layout", TIMELINE_LAYOUTS)
def test_cli_plot_old_identify_json_draws_its_timeline(tmp_path, tone, plotted, layout):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(old_identify_line(str(tone), layout)) + "\n")
    out = tmp_path / "file.svg"
    # no --audio: the record's file is the audio
    assert main(["plot", "attention", "--json", str(one), "--out", str(out)]) == 0
    assert "<svg" in out.read_text()
    (call,) = plotted
    assert call["title"] == "talk.wav" and call["langs"] == LANGS
    assert call["timeline"].shape == (3, 3)
    assert call["timeline"][2] == pytest.approx([0.1, 0.1, 0.8])


def test_cli_plot_json_needs_audio_when_the_record_names_none(tmp_path, capsys):
    att = tmp_path / "attention.jsonl"
    att.write_text(json.dumps(old_attention_line()) + "\n")
    assert main(["plot", "attention", "--json", str(att), "--out",
                 str(tmp_path / "a.png")]) == 1
    assert "no --audio given and the record names no file" in capsys.readouterr().err


def test_cli_plot_new_layout_of_a_list_file(tmp_path, tone, plotted):
    rec = ResultRecord.from_result("utt7", LANGS, np.log([0.6, 0.3, 0.1]), fake_result(),
                                   source=str(tone))
    path = write_records(tmp_path / "id.jsonl", [rec])
    assert main(["plot", "attention", "--json", str(path), "--utt", "utt7", "--out",
                 str(tmp_path / "a.png")]) == 0
    (call,) = plotted
    assert call["title"] == "talk.wav" and call["timeline"].shape == (3, 3)
