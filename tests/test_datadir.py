"""Kaldi data dirs: read/write, validate, fix, split, combine, subset and their CLI."""

from __future__ import annotations

import json
import os
import subprocess

import kaldiio
import numpy as np
import pytest

from lre.cli import main
from lre.data.datadir import (
    DataDir,
    Segment,
    combine,
    fix,
    load_utterance,
    read_segments,
    split,
    subset,
    subset_per_lang,
    validate,
)
from lre.data.tables import read_table, write_table
from lre.utils import LreError

UTTS = {  # utt -> (lang, speaker, tone frequency)
    "en_a1": ("en", "a", 300),
    "en_a2": ("en", "a", 350),
    "fi_b1": ("fi", "b", 400),
    "fi_b2": ("fi", "b", 450),
    "sv_c1": ("sv", "c", 500),
}


def make_dir(root, tone_wav, with_feats=False):
    """A valid data dir of five 0.5 s tones in three languages, optionally with features."""
    d = root / "data"
    wav_scp = {u: str(tone_wav(root / "wav" / f"{u}.wav", 0.5, freq=f))
               for u, (_, _, f) in UTTS.items()}
    dd = DataDir(d, wav_scp=wav_scp,
                 utt2lang={u: lang for u, (lang, _, _) in UTTS.items()},
                 utt2spk={u: spk for u, (_, spk, _) in UTTS.items()},
                 utt2dur=dict.fromkeys(UTTS, 0.5))
    if with_feats:
        rng = np.random.default_rng(0)
        feats_scp, vad_scp = {}, {}
        with kaldiio.WriteHelper(f"ark,scp:{root}/feats.ark,{root}/feats.scp") as w:
            for u in UTTS:
                w(u, rng.standard_normal((48, 4)).astype(np.float32))
        with kaldiio.WriteHelper(f"ark,scp:{root}/vad.ark,{root}/vad.scp") as w:
            for u in UTTS:
                w(u, np.ones(48, dtype=np.float32))
        feats_scp, vad_scp = read_table(root / "feats.scp"), read_table(root / "vad.scp")
        dd.feats_scp, dd.vad_scp = feats_scp, vad_scp
        dd.utt2num_frames = dict.fromkeys(UTTS, 48)
    dd.write()
    if with_feats:
        (d / "feats_config.json").write_text(json.dumps({"kind": "fbank"}))
    return d


def test_write_is_c_sorted_and_reads_back(tmp_path):
    keys = ["b", "a_1", "a-1", "A1", "a1", "\u00e4x", "Z", "a"]
    mapping = {k: f"v {i}" for i, k in enumerate(keys)}
    write_table(tmp_path / "f", mapping)
    lines = (tmp_path / "f").read_text("utf-8").splitlines()
    c_sorted = subprocess.run(["sort"], input="\n".join(lines) + "\n", capture_output=True,
                              text=True, env={**os.environ, "LC_ALL": "C"}, check=True).stdout
    assert lines == c_sorted.splitlines()
    want = ["A1", "Z", "a", "a-1", "a1", "a_1", "b", "\u00e4x"]
    assert [line.split()[0] for line in lines] == want
    assert read_table(tmp_path / "f") == mapping


def test_datadir_round_trip_with_segments(tmp_path, tone_wav):
    rec = tone_wav(tmp_path / "rec.wav", 2.0)
    dd = DataDir(tmp_path / "d", wav_scp={"rec": f"cat {rec} |"},
                 utt2lang={"u2": "fi", "u1": "en"}, utt2spk={"u2": "s1", "u1": "s1"},
                 segments={"u2": Segment("rec", 1.0, 2.0), "u1": Segment("rec", 0.0, 0.25)})
    dd.write()
    d = tmp_path / "d"
    assert (d / "segments").read_text() == "u1 rec 0 0.25\nu2 rec 1 2\n"
    assert (d / "spk2utt").read_text() == "s1 u1 u2\n"
    assert (d / "lang2utt").read_text() == "en u1\nfi u2\n"
    back = DataDir.load(d)
    assert back.utts == ["u1", "u2"] and back.langs == ["en", "fi"]
    assert back.segments == read_segments(d / "segments")
    assert back.audio_spec("u2") == (f"cat {rec} |", 1.0, 2.0)
    assert validate(d) == []
    assert load_utterance(back, "u1").shape == (4000,)


def test_read_errors_name_file_and_line(tmp_path):
    (tmp_path / "utt2lang").write_text("a en\nb fi\na sv\n")
    with pytest.raises(LreError, match=r"utt2lang:3: duplicate id 'a' \(first on line 1\)"):
        read_table(tmp_path / "utt2lang")
    (tmp_path / "segments").write_text("a rec 0 x\n")
    with pytest.raises(LreError, match=r"segments:1: segment 'a': start/end are not numbers"):
        read_segments(tmp_path / "segments")


def test_validate_accepts_a_good_dir(tmp_path, tone_wav, capsys):
    d = make_dir(tmp_path, tone_wav, with_feats=True)
    assert validate(d) == []
    assert main(["validate", str(d)]) == 0
    assert capsys.readouterr().out.strip() == f"{d}: OK (5 utterances, 3 languages)"


def test_broken_dir_validate_fix_validate(tmp_path, espeak_wav, capsys):
    d = tmp_path / "data"
    langs = {"en_a1": "en", "en_a2": "en", "fi_b1": "fi", "fi_b2": "fi", "sv_c1": "sv"}
    texts = {"en": "good morning", "fi": "hyvää huomenta", "sv": "god morgon"}
    wav_scp = {u: str(espeak_wav(lang, texts[lang], tmp_path / f"{u}.wav"))
               for u, lang in langs.items()}
    DataDir(d, wav_scp=wav_scp, utt2lang=langs,
            utt2spk={u: u.split("_")[1][0] for u in langs}).write()
    # Break it: utt2lang unsorted and missing fi_b2, a repeated line in utt2spk,
    # and the audio of sv_c1 deleted.
    (d / "utt2lang").write_text("en_a2 en\nen_a1 en\nfi_b1 fi\nsv_c1 sv\n")
    (d / "utt2spk").write_text("en_a1 a\nen_a1 a\nen_a2 a\nfi_b1 b\nfi_b2 b\nsv_c1 c\n")
    os.unlink(wav_scp["sv_c1"])
    original_utt2lang = (d / "utt2lang").read_bytes()

    problems = [str(p) for p in validate(d)]
    assert problems == [
        f"{d}/wav.scp:4: utterance 'fi_b2' has no entry in utt2lang",
        f"{d}/wav.scp:5: audio file does not exist: {wav_scp['sv_c1']}",
        f"{d}/utt2lang:2: not sorted in C byte order (LC_ALL=C sort): "
        "'en_a1' comes after 'en_a2'",
        f"{d}/utt2spk:2: duplicate id 'en_a1' (first on line 1)",
        f"{d}/lang2utt:2: language 'fi' disagrees with utt2lang: 1 not of this language "
        "(e.g. 'fi_b2')",
    ]
    assert main(["validate", str(d)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == problems

    assert main(["fix", str(d)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{d}: kept 3 of 5 utterances"
    assert "dropped 1: no entry in utt2lang (fi_b2)" in out
    assert "dropped 1: audio file does not exist (sv_c1)" in out
    assert "removed 1 repeated line(s)" in out
    (backup,) = (d / ".backup").iterdir()
    assert (backup / "utt2lang").read_bytes() == original_utt2lang
    dropped = (backup / "dropped").read_text().splitlines()
    assert [line.split("\t")[:2] for line in dropped] == [
        ["fi_b2", "no entry in utt2lang"], ["sv_c1", "audio file does not exist"]]
    assert (d / "utt2lang").read_text() == "en_a1 en\nen_a2 en\nfi_b1 fi\n"
    assert (d / "spk2utt").read_text() == "a en_a1 en_a2\nb fi_b1\n"
    assert validate(d) == []
    assert main(["validate", str(d)]) == 0
    assert "OK (3 utterances, 2 languages)" in capsys.readouterr().out
    # A second fix has nothing to do and makes no backup.
    report = fix(d)
    assert report.kept == report.total == 3 and report.rewritten == [] and report.backup is None


def test_segment_bounds_and_derived_files(tmp_path, tone_wav):
    rec = tone_wav(tmp_path / "rec.wav", 2.0)
    d = tmp_path / "d"
    d.mkdir()
    segs = {"u1": "r1 0 1", "u2": "r1 -0.5 1", "u3": "r1 1.5 1.0", "u4": "r1 1.0 3.0",
            "u5": "r2 0 1", "u6": "r1 1.0 2.3"}
    (d / "segments").write_text("".join(f"{u} {s}\n" for u, s in segs.items()))
    (d / "wav.scp").write_text(f"r1 {rec}\n")
    (d / "utt2lang").write_text("".join(f"{u} en\n" for u in segs))
    (d / "utt2spk").write_text("".join(f"{u} s\n" for u in segs))
    (d / "spk2utt").write_text("s u1 u2 u3 u4 u5\n")
    (d / "utt2dur").write_text("u1 0.7\nu2 1.5\nu3 1\nu4 2\nu5 1\nu6 1.3\n")
    problems = [str(p).replace(f"{d}/", "") for p in validate(d)]
    assert problems == [
        "segments:2: segment start -0.5 s is negative",
        "segments:3: segment end 1 s is not after its start 1.5 s",
        "segments:4: segment end 3 s is beyond the end of recording 'r1' (2.000 s)",
        "segments:5: recording 'r2' has no entry in wav.scp",
        "segments:6: segment end 2.3 s is beyond the end of recording 'r1' (2.000 s)",
        "spk2utt:1: speaker 's' disagrees with utt2spk: missing 1 (e.g. 'u6')",
        "utt2dur:1: duration 0.7 s of 'u1' disagrees with its segment (1 s)",
    ]
    report = fix(d)
    assert (report.kept, report.total) == (2, 6)
    assert report.dropped == {"u2": "invalid line in segments", "u3": "invalid line in segments",
                              "u4": "segment beyond the end of its recording",
                              "u5": "recording not in wav.scp"}
    assert (d / "segments").read_text() == "u1 r1 0 1\nu6 r1 1 2\n"
    assert (d / "utt2dur").read_text() == "u1 1\nu6 1\n"
    assert validate(d) == []


def test_feature_files_must_agree(tmp_path, tone_wav):
    d = make_dir(tmp_path, tone_wav, with_feats=True)
    lines = (d / "vad.scp").read_text().splitlines()
    (d / "vad.scp").write_text("\n".join(lines[:-1]) + "\n")
    (d / "feats_failed").write_text("fi_b2 too short\n")
    lines = (d / "feats.scp").read_text().splitlines()
    (d / "feats.scp").write_text("".join(f"{x}\n" for x in lines if not x.startswith("fi_b2")))
    (d / "utt2num_frames").write_text("".join(f"{u} 48\n" for u in UTTS if u != "fi_b2"))
    problems = [str(p).replace(f"{d}/", "") for p in validate(d)]
    assert problems == [
        "wav.scp:4: utterance 'fi_b2' has no entry in feats.scp "
        "(feature extraction failed: too short)",
        "feats.scp:4: utterance 'sv_c1' has no entry in vad.scp",
        "vad.scp:4: utterance 'fi_b2' has no entry in feats.scp",
    ]
    report = fix(d)
    assert report.dropped == {"fi_b2": "no features (feature extraction failed)",
                              "sv_c1": "no entry in vad.scp"}
    assert (report.kept, report.total) == (3, 5)
    assert validate(d) == []
    assert DataDir.load(d).utts == ["en_a1", "en_a2", "fi_b1"]


def test_split_is_balanced_contiguous_valid_and_reused(tmp_path, tone_wav):
    d = make_dir(tmp_path, tone_wav, with_feats=True)
    parts = split(d, 2)
    assert parts == [d / "split2" / "1", d / "split2" / "2"]
    loaded = [DataDir.load(p) for p in parts]
    assert [x.utts for x in loaded] == [["en_a1", "en_a2", "fi_b1"], ["fi_b2", "sv_c1"]]
    for part in parts:
        assert validate(part) == []
        assert (part / "feats_config.json").read_text() == (d / "feats_config.json").read_text()
    assert read_table(parts[1] / "feats.scp") == {u: read_table(d / "feats.scp")[u]
                                              for u in ["fi_b2", "sv_c1"]}
    stamp = (parts[0] / "utt2lang").stat().st_mtime_ns
    assert split(d, 2) == parts
    assert (parts[0] / "utt2lang").stat().st_mtime_ns == stamp  # reused, not rewritten
    subset(d, d, ["en_a1", "fi_b1", "sv_c1"])  # the source changes: the split is redone
    newer = max(p.stat().st_mtime_ns for p in d.iterdir() if p.is_file()) + 10**9
    os.utime(d / "utt2lang", ns=(newer, newer))
    assert [DataDir.load(p).utts for p in split(d, 2)] == [["en_a1", "fi_b1"], ["sv_c1"]]
    with pytest.raises(LreError, match="cannot split 3 utterances into 4 parts"):
        split(d, 4)


def test_subset_combine_round_trip(tmp_path, tone_wav, capsys):
    d = make_dir(tmp_path, tone_wav, with_feats=True)
    (tmp_path / "list").write_text("en_a2\nfi_b2 extra fields\nsv_c1\n")
    assert main(["subset", str(d), str(tmp_path / "a"), "--utt-list", str(tmp_path / "list")]) == 0
    subset(d, tmp_path / "b", ["en_a1", "fi_b1"])
    assert main(["combine", str(tmp_path / "c"), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{tmp_path}/c: 5 utterances, 3 languages"
    for name in ["wav.scp", "utt2lang", "utt2spk", "spk2utt", "lang2utt", "utt2dur",
                 "feats.scp", "vad.scp", "utt2num_frames", "feats_config.json"]:
        assert (tmp_path / "c" / name).read_bytes() == (d / name).read_bytes(), name
    with pytest.raises(LreError, match="duplicate utterance id 'en_a2'"):
        combine(tmp_path / "x", [tmp_path / "a", d])
    assert main(["combine", str(tmp_path / "x"), str(tmp_path / "a"), str(d)]) == 1

    assert main(["subset", str(d), str(tmp_path / "f"), "--first", "2"]) == 0
    assert DataDir.load(tmp_path / "f").utts == ["en_a1", "en_a2"]
    assert subset_per_lang(d, tmp_path / "p", 1).utts == ["en_a1", "fi_b1", "sv_c1"]
    with pytest.raises(LreError, match="1 requested utterances are not in the data dir"):
        subset(d, tmp_path / "y", ["nope"])


def test_combine_segmented_with_whole_file_dirs(tmp_path, tone_wav):
    rec = tone_wav(tmp_path / "rec.wav", 2.0)
    DataDir(tmp_path / "s", wav_scp={"rec": str(rec)}, utt2lang={"s1": "en", "s2": "en"},
            utt2spk={"s1": "x", "s2": "x"},
            segments={"s1": Segment("rec", 0, 1), "s2": Segment("rec", 1, 2)}).write()
    whole = tone_wav(tmp_path / "w.wav", 1.0, freq=700)
    DataDir(tmp_path / "w", wav_scp={"w1": str(whole)}, utt2lang={"w1": "fi"},
            utt2spk={"w1": "y"}).write()
    out = combine(tmp_path / "c", [tmp_path / "s", tmp_path / "w"])
    assert out.segments["w1"] == Segment("w1", 0.0, -1.0)
    assert validate(tmp_path / "c") == []
    np.testing.assert_array_equal(load_utterance(DataDir.load(tmp_path / "c"), "w1"),
                                  load_utterance(DataDir.load(tmp_path / "w"), "w1"))


def test_load_refuses_inconsistent_dir(tmp_path, tone_wav):
    d = make_dir(tmp_path, tone_wav)
    (d / "utt2spk").write_text("en_a1 a\n")
    with pytest.raises(LreError, match="4 utterances in wav.scp have no entry in utt2spk"):
        DataDir.load(d)


def test_validate_names_line_form_problems(tmp_path, tone_wav):
    d = make_dir(tmp_path, tone_wav)
    (d / "utt2lang").write_bytes(b"en_a1 en\r\nen_a2 en\n\nfi_b1 f\xeei\nfi_b2 fi\nsv_c1 sv\n")
    (d / "utt2dur").write_bytes(b"")
    problems = {str(p) for p in validate(d)}
    assert f"{d}/utt2lang:1: line ends with a carriage return (DOS line ending)" in problems
    assert f"{d}/utt2lang:3: empty line" in problems
    assert f"{d}/utt2lang:4: line is not valid UTF-8" in problems
    assert f"{d}/utt2dur: file is empty" in problems


def test_validate_checks_archives_of_ranged_ark_offsets(tmp_path, tone_wav):
    d = make_dir(tmp_path, tone_wav, with_feats=True)
    feats = read_table(d / "feats.scp")
    feats["en_a1"] = f"{tmp_path}/feats.ark:{feats['en_a1'].rsplit(':', 1)[1]}[0:9]"
    feats["fi_b1"] = f"{tmp_path}/gone.ark:12[0:9]"
    write_table(d / "feats.scp", feats)
    problems = [str(p) for p in validate(d)]
    assert problems == [f"{d}/feats.scp:3: archive does not exist: {tmp_path}/gone.ark "
                        "(1 entries)"]
