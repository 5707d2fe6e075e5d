"""Real-corpus preparers, each on a tiny fixture built in the corpus's real layout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lre.cli import main as lre_main
from lre.data.corpora import prepare
from lre.data.corpora.common import SKIPPED_FILE
from lre.data.datadir import DataDir, load_utterance, read_segments, validate
from lre.data.tables import read_table
from lre.utils import LreError

REPO = Path(__file__).resolve().parents[1]


def write_audio(path: Path, seconds: float, freq: float = 220.0, sr: int = 16000,
                fmt: str | None = None, subtype: str | None = None) -> Path:
    """A real tone of ``seconds`` (any container soundfile writes: WAV, FLAC, MP3, OGG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    audio = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, audio, sr, format=fmt, subtype=subtype)
    return path


def skipped_reasons(d: Path) -> dict[str, str]:
    path = d / SKIPPED_FILE
    if not path.is_file():
        return {}
    return dict(line.split("\t", 1) for line in path.read_text().splitlines())


def assert_valid(d: Path) -> DataDir:
    assert validate(d) == [], f"{d}: {[str(p) for p in validate(d)]}"
    return DataDir.load(d)


# ---------------------------------------------------------------- VoxLingua107
def test_voxlingua107(tmp_path):
    src = tmp_path / "voxlingua107"
    for lang, freq in (("en", 200.0), ("fi", 300.0)):
        for v in range(3):  # three videos per language, two segments each
            for s in range(2):
                start = 10.0 * s
                name = f"vid{lang}{v}_-x__U__S{s}---{start:08.3f}-{start + 1.5 + v * 0.25:08.3f}"
                write_audio(src / lang / f"{name}.wav", 1.5 + v * 0.25, freq)
        write_audio(src / "dev" / lang / f"devvid{lang}__U__S0---0000.000-0002.000.wav", 2.0)
    (src / "fi" / "broken__U__S9---0001.000-0003.000.wav").write_bytes(b"RIFF....not audio")
    write_audio(src / "fi" / "odd name.wav", 1.0)  # not in the usual pattern: own speaker

    report = prepare("voxlingua107", src, tmp_path / "data", dev_per_lang=1, seed=3, nj=2)
    assert [s.name for s in report.sets] == ["train", "dev", "test"]
    train = assert_valid(tmp_path / "data" / "train")
    dev = assert_valid(tmp_path / "data" / "dev")
    test = assert_valid(tmp_path / "data" / "test")
    # ids: <lang>-<video>-<start>-<end>, video as speaker ('-' in a video id becomes '_')
    durations = {**train.utt2dur, **dev.utt2dur}
    assert durations["en-viden0__x-0000.000-0001.500"] == pytest.approx(1.5)
    assert durations["fi-vidfi2__x-0010.000-0012.000"] == pytest.approx(2.0)
    assert "fi-odd_name" in train.utts + dev.utts
    # the official dev set is the test set
    assert test.utts == ["en-devviden-0000.000-0002.000", "fi-devvidfi-0000.000-0002.000"]
    assert test.utt2lang == {"en-devviden-0000.000-0002.000": "en",
                             "fi-devvidfi-0000.000-0002.000": "fi"}
    # dev: whole videos held out of train, one video (2 segments) per language
    assert set(dev.utt2lang.values()) == {"en", "fi"}
    assert not set(dev.utt2spk.values()) & set(train.utt2spk.values())
    assert len(train) + len(dev) == 13
    for utt, spk in train.utt2spk.items():
        assert utt.startswith(spk)
        assert train.utt2dur[utt] == pytest.approx(sf.info(train.wav_scp[utt]).duration)
    reasons = skipped_reasons(tmp_path / "data" / "train")
    assert list(reasons) == ["fi-broken-0001.000-0003.000"]
    assert "unreadable audio" in reasons["fi-broken-0001.000-0003.000"]

    # without the official dev set, test is held out of train like dev
    (src / "dev").rename(tmp_path / "devset")
    prepare("voxlingua107", src, tmp_path / "data2", dev_per_lang=1, test_per_lang=1, seed=3)
    tr, dv, te = (DataDir.load(tmp_path / "data2" / s) for s in ("train", "dev", "test"))
    spk = [set(d.utt2spk.values()) for d in (tr, dv, te)]
    assert not spk[0] & spk[1] and not spk[0] & spk[2] and not spk[1] & spk[2]
    assert len(tr) + len(dv) + len(te) == 13


# ---------------------------------------------------------------- Common Voice
CV_HEADER = ("client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\t"
             "age\tgender\taccents\tvariant\tlocale\tsegment\n")


def cv_row(client: str, clip: str, sentence: str, locale: str) -> str:
    return f"{client}\t{clip}\tabc\t{sentence}\t\t2\t0\t\t\t\t\t{locale}\t\n"


def test_commonvoice(tmp_path):
    root = tmp_path / "cv-corpus-20.0"
    clients = {k: (k * 64)[:128] for k in "abcde"}  # 128-hex-char client ids
    rows = {"train": [("a", 1), ("a", 2), ("b", 3)], "dev": [("c", 4)], "test": [("d", 5)]}
    for locale in ("fi", "sv-SE"):
        d = root / locale
        durations = ["clip\tduration[ms]\n"]
        for split, entries in rows.items():
            lines = [CV_HEADER]
            for client, n in entries:
                clip = f"common_voice_{locale}_{n}.mp3"
                write_audio(d / "clips" / clip, 1.0 + 0.1 * n, fmt="MP3")
                durations.append(f"{clip}\t{int((1.0 + 0.1 * n) * 1000)}\n")
                lines.append(cv_row(clients[client], clip, f'Lause "{n}" tässä.', locale))
            if split == "train":  # a clip listed but missing from clips/
                lines.append(cv_row(clients["b"], f"common_voice_{locale}_99.mp3", "Puuttuu.",
                                    locale))
            (d / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
        (d / "clip_durations.tsv").write_text("".join(durations), encoding="utf-8")
        # validated.tsv: the train clips, one more clip of a new speaker, and dev/test clips
        extra = f"common_voice_{locale}_6.mp3"
        write_audio(d / "clips" / extra, 1.2, fmt="MP3")
        validated = [CV_HEADER] + [cv_row(clients[c], f"common_voice_{locale}_{n}.mp3", "x y",
                                          locale) for c, n in rows["train"] + rows["dev"]]
        validated.append(cv_row(clients["e"], extra, "Uusi lause.", locale))
        validated.append(cv_row(clients["c"], f"common_voice_{locale}_7.mp3", "dev speaker",
                                locale))
        (d / "validated.tsv").write_text("".join(validated), encoding="utf-8")

    out = tmp_path / "data"
    report = prepare("commonvoice", root, out, langs=["fi", "sv-SE"], lang_map={"sv-SE": "sv"})
    assert [s.name for s in report.sets] == ["train", "dev", "test"]
    train = assert_valid(out / "train")
    spk_a = clients["a"][:16]
    utt = f"{spk_a}-common_voice_fi_1"
    assert train.utt2spk[utt] == spk_a
    assert train.utt2lang[utt] == "fi"
    assert train.utt2lang[f"{spk_a}-common_voice_sv_SE_1"] == "sv"
    assert train.wav_scp[utt] == str(root / "fi" / "clips" / "common_voice_fi_1.mp3")
    assert train.utt2dur[utt] == pytest.approx(1.1, abs=0.06)  # real MP3 duration
    assert read_table(out / "train" / "text")[utt] == 'Lause "1" tässä.'
    assert len(train) == 6
    reasons = skipped_reasons(out / "train")
    assert set(reasons) == {f"{clients['b'][:16]}-common_voice_fi_99",
                            f"{clients['b'][:16]}-common_voice_sv_SE_99"}
    assert all("audio file not found" in r for r in reasons.values())
    assert len(DataDir.load(out / "dev")) == 2 and len(DataDir.load(out / "test")) == 2
    # the toolkit's loader reads the mp3 path from wav.scp
    audio = load_utterance(train, utt)
    assert abs(len(audio) / 16000 - 1.1) < 0.06 and np.abs(audio).max() > 0.2

    # --use-validated: all validated clips of speakers not in dev/test (and no dev/test clip)
    out2 = tmp_path / "data_validated"
    prepare("commonvoice", root / "fi", out2, use_validated=True)
    tv = DataDir.load(out2 / "train")
    assert sorted(tv.utts) == sorted(f"{clients[c][:16]}-common_voice_fi_{n}"
                                     for c, n in (("a", 1), ("a", 2), ("b", 3), ("e", 6)))
    assert set(tv.utt2lang.values()) == {"fi"}


# ---------------------------------------------------------------- FLEURS
def test_fleurs(tmp_path):
    root = tmp_path / "fleurs"
    n = 0
    for folder in ("fi_fi", "cmn_hans_cn"):
        for split in ("train", "dev", "test"):
            lines = []
            for k in range(2):
                n += 1
                name = f"{1000 + n}.wav"
                seconds = 1.0 + 0.25 * k
                write_audio(root / folder / "audio" / split / name, seconds)
                lines.append(f"{n}\t{name}\tRaw Text {n}.\traw text {n}\tr a w\t"
                             f"{int(seconds * 16000)}\t{'MALE' if k else 'FEMALE'}\n")
            if split == "dev":
                lines.append("broken line without columns\n")
            (root / folder / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    (root / "fi_fi" / "audio" / "test" / "1006.wav").write_bytes(b"")  # empty file
    out = tmp_path / "data"
    report = prepare("fleurs", root, out, nj=2)
    assert [s.name for s in report.sets] == ["train", "dev", "test"]
    train = assert_valid(out / "train")
    assert train.utts == ["cmn_hans_cn-1007", "cmn_hans_cn-1008", "fi_fi-1001", "fi_fi-1002"]
    assert train.utt2lang == {"cmn_hans_cn-1007": "cmn", "cmn_hans_cn-1008": "cmn",
                              "fi_fi-1001": "fi", "fi_fi-1002": "fi"}
    assert train.utt2spk["fi_fi-1001"] == "fi_fi-1001"  # no speaker ids in FLEURS
    assert train.utt2dur["fi_fi-1002"] == pytest.approx(1.25)
    assert read_table(out / "train" / "text")["fi_fi-1001"] == "Raw Text 1."
    dev_reasons = skipped_reasons(out / "dev")
    assert len(dev_reasons) == 2 and all("expected 7" in r for r in dev_reasons.values())
    test_reasons = skipped_reasons(out / "test")
    assert list(test_reasons) == ["fi_fi-1006"] and "1006.wav" in test_reasons["fi_fi-1006"]
    assert len(assert_valid(out / "test")) == 3
    # one language folder alone, labels mapped
    prepare("fleurs", root / "cmn_hans_cn", tmp_path / "zh", lang_map={"cmn_hans_cn": "zh"})
    assert set(read_table(tmp_path / "zh" / "dev" / "utt2lang").values()) == {"zh"}


# ---------------------------------------------------------------- one folder per language
def build_folders(root: Path) -> None:
    formats = [(".wav", None, None), (".flac", "FLAC", None), (".ogg", "OGG", "VORBIS"),
               (".mp3", "MP3", None)]
    for lang in ("de", "fi"):
        for s in range(5):
            for k, (ext, fmt, subtype) in enumerate(formats[:2] if s % 2 else formats):
                write_audio(root / lang / f"spk {s}" / "sess" / f"u{k}{ext}", 0.5 + 0.1 * k,
                            fmt=fmt, subtype=subtype)
    (root / "de" / "notes.txt").write_text("not audio")
    (root / "fi" / "spk 0" / "bad.wav").write_bytes(b"RIFF\x00\x00")


def test_folders_speaker_disjoint_split(tmp_path):
    root = tmp_path / "corpus"
    build_folders(root)
    out = tmp_path / "data"
    prepare("folders", root, out, ratios="0.6,0.2,0.2", speaker_from="dir", seed=1)
    sets = {s: assert_valid(out / s) for s in ("train", "dev", "test")}
    spks = {s: set(d.utt2spk.values()) for s, d in sets.items()}
    for lang in ("de", "fi"):  # 5 speakers per language -> 3 / 1 / 1
        assert [len({x for x in spks[s] if x.startswith(lang)}) for s in spks] == [3, 1, 1]
    assert not spks["train"] & spks["dev"] and not spks["train"] & spks["test"]
    every = {u for d in sets.values() for u in d.utts}
    assert {"de-spk_0-sess_u0", "de-spk_0-sess_u1", "de-spk_0-sess_u2",  # wav flac ogg mp3
            "de-spk_0-sess_u3"} <= every
    assert len(every) == 2 * (3 * 4 + 2 * 2)  # every file but the broken one
    all_reasons = {**skipped_reasons(out / "train"), **skipped_reasons(out / "dev"),
                   **skipped_reasons(out / "test")}
    assert list(all_reasons) == ["fi-spk_0-bad"]
    # same seed, same split; the language folder names the language
    again = tmp_path / "again"
    prepare("folders", root, again, ratios="0.6,0.2,0.2", speaker_from="dir", seed=1)
    for s in sets:
        assert (out / s / "utt2spk").read_text() == (again / s / "utt2spk").read_text()
        assert set(read_table(out / s / "utt2lang").values()) == {"de", "fi"}


def test_folders_random_split_without_speakers(tmp_path):
    root = tmp_path / "corpus"
    build_folders(root)
    out = tmp_path / "data"
    prepare("folders", root, out, ratios=(1, 0, 1), seed=0, langs=["de"])
    assert not (out / "dev").exists()
    train, test = assert_valid(out / "train"), assert_valid(out / "test")
    assert len(train) == len(test) == 8
    assert all(u == s for u, s in train.utt2spk.items())  # each file its own speaker
    assert "de-spk_0_sess_u0" in train.utts + test.utts  # ' ' and '/' become '_'
    assert all(u.startswith("de-spk_") for u in train.utts + test.utts)


# ---------------------------------------------------------------- Kaldi data dir
def test_kaldi_import(tmp_path):
    src = tmp_path / "kaldi" / "train"
    src.mkdir(parents=True)
    wavs = {f"fi-s1-{i}": write_audio(tmp_path / "wav" / f"fi{i}.wav", 1.0) for i in range(3)}
    wavs |= {f"de-s2-{i}": write_audio(tmp_path / "wav" / f"de{i}.wav", 1.0) for i in range(2)}
    lines = [f"{u} {p}" for u, p in wavs.items()]
    lines.append(f"fi-s1-0 {wavs['de-s2-0']}")  # repeated id: the first line wins
    lines.append(f"xx-s3-0 {tmp_path / 'wav' / 'missing.wav'}")
    lines.append("nolang 'sox -n -r 16000 -t wav - synth 1 sine 300 |'".replace("'", ""))
    (src / "wav.scp").write_text("\n".join(lines) + "\n")  # unsorted on purpose
    (src / "utt2spk").write_text("\n".join(f"{u} {u.rsplit('-', 1)[0]}" for u in wavs) + "\n")
    (src / "text").write_text("fi-s1-0 hei maailma\n")
    out = tmp_path / "data"
    prepare("kaldi", src, out, lang_from="utt-prefix")
    dd = assert_valid(out / "train")
    assert dd.utts == ["de-s2-0", "de-s2-1", "fi-s1-0", "fi-s1-1", "fi-s1-2"]
    assert dd.utt2lang["fi-s1-2"] == "fi" and dd.utt2lang["de-s2-1"] == "de"
    assert dd.wav_scp["fi-s1-0"] == str(wavs["fi-s1-0"])
    assert dd.utt2spk["de-s2-1"] == "de-s2"
    reasons = skipped_reasons(out / "train")
    assert "duplicate id 'fi-s1-0'" in reasons["wav.scp:6"]
    assert "audio file not found" in reasons["xx-s3-0"]
    assert reasons["nolang"] == "no language (utt-prefix)"
    assert read_table(out / "train" / "text") == {"fi-s1-0": "hei maailma"}

    # segments + an utt2lang file + a language map
    seg_src = tmp_path / "kaldi" / "dev"
    seg_src.mkdir()
    reco = write_audio(tmp_path / "wav" / "long.wav", 3.0)
    (seg_src / "wav.scp").write_text(f"rec1 {reco}\nrec2 {tmp_path / 'wav' / 'gone.wav'}\n")
    (seg_src / "segments").write_text("u1 rec1 0.0 1.5\nu2 rec1 1.5 -1\nu3 rec2 0 1\n")
    (seg_src / "utt2spk").write_text("u1 u1\nu2 u2\nu3 u3\n")
    (tmp_path / "u2l").write_text("u1 fin\nu2 swe\nu3 fin\n")
    (tmp_path / "map").write_text("fin fi\nswe sv\n")
    from lre.data.corpora.common import read_map_file

    prepare("kaldi", seg_src, out, utt2lang=tmp_path / "u2l",
            lang_map=read_map_file(tmp_path / "map"))
    dev = assert_valid(out / "dev")
    assert dev.utts == ["u1", "u2"]
    assert dev.utt2lang == {"u1": "fi", "u2": "sv"}
    assert read_segments(out / "dev" / "segments")["u2"].end == -1.0
    assert dev.utt2dur == {"u1": pytest.approx(1.5), "u2": pytest.approx(1.5)}
    assert list(dev.wav_scp) == ["rec1"]
    assert len(load_utterance(dev, "u2")) == 24000  # 1.5 s to the end of the 3 s recording
    assert "audio file not found" in skipped_reasons(out / "dev")["u3"]

    with pytest.raises(LreError, match="no utt2lang"):
        prepare("kaldi", src, tmp_path / "x")


# ---------------------------------------------------------------- command line
def test_cli_and_recipe_script(tmp_path):
    root = tmp_path / "corpus"
    build_folders(root)
    assert lre_main(["prepare", "folders", str(root), str(tmp_path / "a"), "--speaker-from",
                     "dir", "--ratios", "0.6,0.2,0.2", "--nj", "2"]) == 0
    assert validate(tmp_path / "a" / "dev") == []
    assert lre_main(["prepare", "fleurs", str(root), str(tmp_path / "b")]) == 1  # not FLEURS
    # the recipe script, called the way run.sh calls it (options first, data root last)
    proc = subprocess.run(
        ["bash", str(REPO / "recipes" / "folders" / "prepare.sh"), "--nj", "2", "--seed", "1",
         "--corpus", str(root), "--speaker-from", "dir", "--ratios", "0.6,0.2,0.2",
         str(tmp_path / "c")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for s in ("train", "dev", "test"):
        assert validate(tmp_path / "c" / s) == []
    proc = subprocess.run(["bash", str(REPO / "recipes" / "commonvoice" / "prepare.sh"),
                           str(tmp_path / "d")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--corpus" in proc.stderr
