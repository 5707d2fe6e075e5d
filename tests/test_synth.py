"""The embedded espeak-ng corpus: real text, speaker-disjoint splits, durations, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lre.data.corpora import synth
from lre.data.corpora.text import clean_phrase, load_phrases, parse_po
from lre.data.datadir import DataDir, load_utterance, validate
from lre.data.tables import read_table
from lre.utils import LreError

LANGS = ["en", "fi", "ru"]
COUNTS = {"train_per_lang": 2, "dev_per_lang": 2, "test_per_lang": 2}

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed (tools/setup.sh)")


def _make(out: Path, nj: int, seed: int = 7):
    return synth.prepare_synth(out, langs=LANGS, seed=seed, nj=nj, progress=False, **COUNTS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    report = _make(out, nj=2)
    assert [s.name for s in report.sets] == ["train", "dev", "test"]
    assert report.skipped == []
    return out


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.wav"))}


def test_sets_validate_and_hold_every_language(corpus):
    for split in synth.SPLITS:
        d = corpus / split
        assert validate(d) == [], f"{d} does not validate"
        dd = DataDir.load(d)
        assert len(dd) == len(LANGS) * 2
        assert sorted(set(dd.utt2lang.values())) == sorted(LANGS)
        for utt, lang in dd.utt2lang.items():
            assert utt.startswith(f"{lang}-")
            assert utt.startswith(dd.utt2spk[utt] + "-")  # Kaldi: utt id = speaker id + suffix
            path = Path(dd.wav_scp[utt])
            assert path.is_absolute()
            assert path.parent == corpus / "wavs" / split / lang


def test_audio_format_and_durations(corpus):
    for split in synth.SPLITS:
        dd = DataDir.load(corpus / split)
        for utt, spec in dd.wav_scp.items():
            info = sf.info(spec)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            seconds = info.frames / 16000
            assert 2.0 <= seconds <= 12.0, (utt, seconds)
            assert dd.utt2dur[utt] == pytest.approx(seconds, abs=1e-4)
            audio, _ = sf.read(spec, dtype="float32")
            # speech, not silence: the loudest 10 % of 25 ms frames are well above the noise
            frames = audio[: len(audio) // 400 * 400].reshape(-1, 400)
            rms = np.sqrt((frames**2).mean(axis=1))
            assert np.quantile(rms, 0.9) > 0.01
        # the toolkit's loader reads them back sample for sample
        utt = dd.utts[0]
        pcm, _ = sf.read(dd.wav_scp[utt], dtype="int16")
        np.testing.assert_array_equal(load_utterance(dd, utt), pcm.astype(np.float32) / 32768)


def test_splits_share_no_voice_variant(corpus):
    variants = {}
    for split in synth.SPLITS:
        spks = set(read_table(corpus / split / "utt2spk").values())
        # speaker id: <lang>-<variant>-p<pitch>-s<rate>
        variants[split] = {s.split("-")[1] for s in spks}
        assert all(len(s.split("-")) == 4 for s in spks)
    assert not variants["train"] & variants["dev"]
    assert not variants["train"] & variants["test"]
    assert not variants["dev"] & variants["test"]


def _decompose(text: str, pool: list[str]) -> list[str] | None:
    """Split ``text`` into phrases of ``pool`` as join_phrases() joined them, or None."""
    by_length = sorted(pool, key=len, reverse=True)

    def rest(t: str) -> list[str] | None:
        if not t:
            return []
        for p in by_length:
            for spoken in (p, p + "."):
                if t == spoken or t.startswith(spoken + " "):
                    tail = rest(t[len(spoken):].lstrip())
                    if tail is not None:
                        return [p, *tail]
        return None

    return rest(text)


def test_text_is_real_text_of_that_language(corpus):
    pools = {lang: load_phrases(synth.LANGUAGES[lang][0], english=lang == "en")
             for lang in LANGS}
    seen_phrases: dict[str, set[str]] = {}
    for split in synth.SPLITS:
        text = read_table(corpus / split / "text")
        utt2lang = read_table(corpus / split / "utt2lang")
        assert set(text) == set(utt2lang)
        for utt, sentence in text.items():
            lang = utt2lang[utt]
            phrases = _decompose(sentence, pools[lang])
            assert phrases, f"{utt}: text is not made of {lang} catalog phrases: {sentence!r}"
            others = [x for x in LANGS if x != lang]
            assert all(_decompose(sentence, pools[o]) is None for o in others)
            seen_phrases.setdefault(split, set()).update(phrases)
            # the WAV's sidecar holds the same text
            wav = Path(read_table(corpus / split / "wav.scp")[utt])
            assert wav.with_suffix(".txt").read_text(encoding="utf-8").strip() == sentence
    # the phrase pools of the splits are disjoint too
    assert not seen_phrases["train"] & seen_phrases["test"]
    assert not seen_phrases["dev"] & seen_phrases["test"]


def test_same_seed_same_bytes_any_nj_and_rerun_reuses(corpus, tmp_path):
    again = tmp_path / "again"
    _make(again, nj=1)  # other dir, other job count
    first, second = _digests(corpus / "wavs"), _digests(again / "wavs")
    assert first and first == second
    for split in synth.SPLITS:
        for name in ("utt2spk", "utt2lang", "utt2dur", "text"):
            assert (corpus / split / name).read_text() == (again / split / name).read_text()
    # a re-run keeps the WAVs already made (same files, untouched)
    mtimes = {p: p.stat().st_mtime_ns for p in again.rglob("*.wav")}
    _make(again, nj=2)
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*.wav")} == mtimes
    # another seed into the same folder is refused (its ids and audio would be mixed in)
    with pytest.raises(LreError, match="other settings"):
        _make(again, nj=1, seed=8)


def test_other_seed_other_corpus(corpus, tmp_path):
    other = tmp_path / "other"
    synth.prepare_synth(other, langs=["fi"], seed=8, nj=1, progress=False, train_per_lang=1,
                        dev_per_lang=0, test_per_lang=0)
    utt = next(iter(read_table(other / "train" / "text")))
    assert utt not in read_table(corpus / "train" / "text")


def test_missing_espeak_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(LreError, match=r"espeak-ng is not installed.*tools/setup\.sh"):
        synth.prepare_synth(tmp_path / "x", langs=["en"], progress=False)


def test_unknown_language_is_refused(tmp_path):
    with pytest.raises(LreError, match="unknown language.*xx"):
        synth.prepare_synth(tmp_path / "x", langs=["en", "xx"], progress=False)


def test_cut_at_pause_cuts_in_the_silence():
    sr = 16000
    tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr)).astype(np.float32)
    gap = np.zeros(int(0.3 * sr), dtype=np.float32)
    # 1 s tone, 0.3 s gap (1.0-1.3 s), 1 s tone, 0.3 s gap (2.3-2.6 s), 1 s tone = 3.6 s
    audio = np.concatenate([tone, gap, tone, gap, tone])
    out = synth.cut_at_pause(audio, sr, min_dur=0.5, max_dur=3.0)
    assert 2.3 * sr <= len(out) <= 2.6 * sr  # the last pause before 3 s
    assert np.abs(out[-160:]).max() < 1e-6  # cut in silence
    out = synth.cut_at_pause(audio, sr, min_dur=0.5, max_dur=2.0)
    assert 1.0 * sr <= len(out) <= 1.3 * sr


def test_po_parser_and_phrase_filter(tmp_path):
    po = tmp_path / "django.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: fi\\n"\n\n'
        '#, fuzzy\nmsgid "Fuzzy entry here"\nmsgstr "Epävarma käännös tässä"\n\n'
        'msgctxt "abbrev. month"\nmsgid "Jan."\nmsgstr "tammi"\n\n'
        'msgid "Enter a valid "\n"value."\nmsgstr ""\n"Syötä oikea "\n"arvo."\n\n'
        '#, python-format\nmsgid "%(count)s item"\nmsgid_plural "%(count)s items"\n'
        'msgstr[0] "%(count)s kohde"\nmsgstr[1] "%(count)s kohdetta"\n\n'
        '#~ msgid "Old entry text"\n#~ msgstr "Vanha merkintä"\n',
        encoding="utf-8",
    )
    entries = parse_po(po)
    assert [e.msgid for e in entries] == ["", "Fuzzy entry here", "Jan.", "Enter a valid value.",
                                          "%(count)s item", ""]
    assert entries[1].fuzzy and not entries[3].fuzzy
    assert entries[2].msgctxt == "abbrev. month"
    assert entries[3].msgstr == ["Syötä oikea arvo."]
    assert entries[4].msgid_plural == "%(count)s items" and len(entries[4].msgstr) == 2
    assert entries[5].obsolete
    assert clean_phrase("Syötä oikea arvo.") == "Syötä oikea arvo."
    assert clean_phrase("Valitse %s poistettavaksi") is None
    assert clean_phrase("Katso <a href='x'>ohje</a>") is None
    assert clean_phrase("Anna {name} tähän") is None
    assert clean_phrase("tammi") is None  # too short
    assert clean_phrase("Suodatin:") is None
    assert clean_phrase("Lisää uusi merkintä:") == "Lisää uusi merkintä"
    assert clean_phrase("Связь \"один к одному\"") == "Связь один к одному"


def test_default_counts_give_30_dev_and_test_utterances_per_language():
    import argparse
    import inspect

    assert synth.DEFAULT_COUNTS == {"train": 160, "dev": 30, "test": 30}
    params = inspect.signature(synth.prepare_synth).parameters
    assert params["dev_per_lang"].default == params["test_per_lang"].default == 30
    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    args = parser.parse_args(["--out", "x"])
    assert args.dev_per_lang == args.test_per_lang == 30
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "synth"
    for name in ("prepare.sh", "README.md"):
        text = (recipe / name).read_text(encoding="utf-8")
        assert "12 dev" not in text and "(default 12)" not in text
    assert "160 train / 30 dev / 30 test" in (recipe / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------ --train-voice-mix
MIX_ARGS = {"langs": ["en"], "train_per_lang": 4, "dev_per_lang": 1, "test_per_lang": 1,
            "seed": 5, "nj": 1, "progress": False}
# seed 5, en, 4/1/1 utterances, made before the option existed (espeak-ng 1.51, Django 5.2.19)
NO_MIX_IDS = ["en-Lee-p80-s178-train00000", "en-Lee-p80-s178-train00001",
              "en-Lee-p80-s178-train00002", "en-edward2-p33-s180-train00003",
              "en-f3-p63-s138-dev00000", "en-sandro-p54-s138-test00000"]
NO_MIX_AUDIO_SHA256 = "579b3f820dc1fb15"


def _corpus_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((out / "wavs").rglob("*.wav")):
        h.update(p.relative_to(out).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mix") / "data"
    synth.prepare_synth(out, train_voice_mix=40, utts_per_spk=1, **MIX_ARGS)
    return out


def test_voice_mix_0_is_the_corpus_without_it(tmp_path):
    out = tmp_path / "data"
    synth.prepare_synth(out, train_voice_mix=0, **MIX_ARGS)
    assert sorted(p.stem for p in (out / "wavs").rglob("*.wav")) == NO_MIX_IDS
    if synth.espeak_info()[0] == "1.51":
        assert _corpus_digest(out) == NO_MIX_AUDIO_SHA256
    assert not (out / "wavs" / "espeak-ng").exists()
    settings = json.loads((out / "wavs" / "synth_settings.json").read_text())
    assert "train_voice_mix" not in settings
    assert "train_voice_mix" not in json.loads((out / "synth_info.json").read_text())


def _train_variants() -> list[str]:
    return synth.partition(synth.espeak_variants(), 5, "variants")["train"]


def test_voice_mix_variants_lie_within_the_train_ranges(mixed):
    vdir = mixed / "wavs" / "espeak-ng" / "espeak-ng-data" / "voices" / "!v"
    info = json.loads((mixed / "synth_info.json").read_text())
    assert info["train_voice_mix"] == 40 and info["settings"]["train_voice_mix"] == 40
    _, data_dir = synth.espeak_info()
    ranges = synth.formant_ranges(data_dir / "voices" / "!v", _train_variants())
    assert [tuple(r) for r in info["formant_freq_ranges"].values()] == ranges
    # the ranges come from train's variants only: dev's or test's would widen some of them
    everything = synth.formant_ranges(data_dir / "voices" / "!v", synth.espeak_variants())
    assert ranges != everything
    for i in range(40):
        name = f"mix{i:03d}"
        text = (vdir / name).read_text(encoding="latin-1")
        freqs = synth.formant_frequencies(text)
        assert sorted(freqs) == list(range(9))
        assert all(lo <= freqs[k] <= hi for k, (lo, hi) in enumerate(ranges)), name
        assert freqs == dict(enumerate(info["mix_variants"][name]["formant_freq"]))
        # every other line is the base file's
        base = synth.read_variant(data_dir / "voices" / "!v", info["mix_variants"][name]["base"])
        assert info["mix_variants"][name]["base"] in _train_variants()
        keep = [ln for ln in base.splitlines() if not synth.FORMANT_LINE.match(ln)]
        assert [ln for ln in text.splitlines() if not synth.FORMANT_LINE.match(ln)] == keep
    # only the generated variants: espeak-ng drops voices past its list's 349 unannounced
    assert sorted(p.name for p in vdir.iterdir()) == sorted(info["mix_variants"])


def test_voice_mix_only_in_train_and_same_seed_same_corpus(mixed, tmp_path):
    spk_variants = {split: {s.split("-")[1] for s in read_table(mixed / split / "utt2spk").values()}
                    for split in synth.SPLITS}
    assert any(v.startswith("mix") for v in spk_variants["train"])
    assert not any(v.startswith("mix") for v in spk_variants["dev"] | spk_variants["test"])
    # dev and test are those of the corpus without the option
    assert {p.stem for p in (mixed / "wavs").rglob("*.wav") if "train" not in p.stem} == {
        u for u in NO_MIX_IDS if "train" not in u}
    again = tmp_path / "again"
    synth.prepare_synth(again, train_voice_mix=40, utts_per_spk=1, **MIX_ARGS)
    assert _digests(mixed / "wavs") == _digests(again / "wavs")
    for split in synth.SPLITS:
        assert (mixed / split / "utt2spk").read_text() == (again / split / "utt2spk").read_text()
    # another count into the same folder is refused
    with pytest.raises(LreError, match="other settings"):
        synth.prepare_synth(again, train_voice_mix=3, utts_per_spk=1, **MIX_ARGS)


def test_voice_mix_utterance_is_not_its_base_variant(mixed, tmp_path):
    info = json.loads((mixed / "synth_info.json").read_text())
    espeak_root = mixed / "wavs" / "espeak-ng"
    jobs = synth.plan_jobs(mixed, ["en"], {"train": 4, "dev": 1, "test": 1}, 5, 1, 2.0, 12.0,
                           synth.espeak_variants(), list(info["mix_variants"]),
                           str(espeak_root.resolve()))
    job = next(j for j in jobs if "+mix" in j.voice)
    assert job.espeak_path is not None
    assert all(j.espeak_path is None for j in jobs if "+mix" not in j.voice)
    mixed_audio, _ = sf.read(job.wav, dtype="int16")
    base = info["mix_variants"][job.voice.split("+")[1]]["base"]
    plain = dataclasses.replace(job, voice=f"en-us+{base}", espeak_path=None,
                                wav=str(tmp_path / "base.wav"))
    assert synth.synthesize(plain).error is None
    base_audio, _ = sf.read(plain.wav, dtype="int16")
    assert mixed_audio.shape != base_audio.shape or not np.array_equal(mixed_audio, base_audio)
    # without --path espeak-ng does not find the generated variant (and falls back silently)
    text = "Enter a valid value."
    found = synth.run_espeak(text, job.voice, 50, 170, 80, 0, job.espeak_path)
    missing = synth.run_espeak(text, job.voice, 50, 170, 80, 0)
    assert np.array_equal(missing, synth.run_espeak(text, "en-us", 50, 170, 80, 0))
    assert found.shape != missing.shape or not np.array_equal(found, missing)


def test_voice_mix_option_on_the_command_line_and_recipe():
    import argparse

    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    assert parser.parse_args(["--out", "x"]).train_voice_mix == 0
    assert parser.parse_args(["--out", "x", "--train-voice-mix", "12"]).train_voice_mix == 12
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "synth"
    assert "train_voice_mix" in (recipe / "prepare.sh").read_text(encoding="utf-8")
    assert "--train-voice-mix" in (recipe / "README.md").read_text(encoding="utf-8")


def test_many_generated_variants_are_all_spoken(tmp_path):
    """espeak-ng keeps a list of at most 349 voices: 120 generated variants beside the
    system's would push some out, and their utterances would fail."""
    report = synth.prepare_synth(tmp_path / "d", langs=["pl"], seed=3, nj=1, progress=False,
                                 train_per_lang=6, dev_per_lang=0, test_per_lang=0,
                                 utts_per_spk=1, train_voice_mix=120)
    assert not report.skipped and [(s.name, s.utts) for s in report.sets] == [("train", 6)]


def test_train_voices_sets_the_train_speakers_and_leaves_dev_and_test(tmp_path):
    """The small-corpus setting: two voices share train; dev and test are the usual ones."""
    pytest.importorskip("django")
    counts = {"train": 10, "dev": 4, "test": 4}
    variants = synth.espeak_variants()
    usual = synth.plan_jobs(tmp_path, ["en", "de"], counts, 0, 3, 2.0, 12.0, variants)
    small = synth.plan_jobs(tmp_path, ["en", "de"], counts, 0, 3, 2.0, 12.0, variants,
                            train_voices=2)
    for lang in ("en", "de"):
        spks = [j.spk for j in small if j.split == "train" and j.lang == lang]
        assert len(spks) == 10 and len(set(spks)) == 2 and spks.count(spks[0]) == 5
        assert len({j.spk for j in usual if j.split == "train" and j.lang == lang}) == 4
    assert [j for j in small if j.split != "train"] == [j for j in usual if j.split != "train"]
