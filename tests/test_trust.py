"""Language subsets (--langs), language names, calibration beside raw in lre evaluate, the
Cavg wording, and the VoxLingua107 dev split of single-video languages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_score import LANGS, make_exp  # LANGS = de en fr

import lre
from lre import evaluate, metrics
from lre.cli import main
from lre.data.corpora import prepare
from lre.data.datadir import DataDir
from lre.features import FeatureConfig
from lre.inference.chunks import UtteranceResult
from lre.inference.model_dir import Calibrator
from lre.languages import check_subset, labelled, language_name, subset_log_posteriors
from lre.score import score_datadir, write_results
from lre.utils import LreError

SR = 16000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny untrained HGRU over de/en/fr and a 3 s two-tone file with some noise."""
    tmp = tmp_path_factory.mktemp("trust")
    exp = make_exp(tmp / "exp", FeatureConfig())
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    audio += 0.02 * rng.normal(size=len(t))
    sf.write(tmp / "a.wav", audio.astype(np.float32), SR)
    return {"exp": exp, "wav": tmp / "a.wav", "tmp": tmp}


# ---------------------------------------------------------------------------- subsets
def test_subset_renormalises_by_hand():
    post = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    sub = np.exp(subset_log_posteriors(np.log(post), LANGS, ["de", "fr"]))
    # 0.5 / (0.5 + 0.2), 0.2 / 0.7; 0.1 / 0.4, 0.3 / 0.4
    np.testing.assert_allclose(sub, [[5 / 7, 2 / 7], [0.25, 0.75]], atol=1e-12)
    assert check_subset(["fr", "de", "fr"], LANGS) == ["de", "fr"]  # the model's order
    with pytest.raises(LreError, match=r"^--langs: the model does not know xx, yy; its "
                                       r"languages: de en fr$"):
        check_subset(["de", "xx", "yy"], LANGS)
    with pytest.raises(LreError, match="at least two"):
        check_subset(["de"], LANGS)


def test_identify_with_langs_renormalises_the_calibrated_posteriors(model, tmp_path):
    from lre.calibration import save_calibration

    ident = lre.Identifier.from_pretrained(model["exp"])
    full = ident.identify(model["wav"], timeline=True)
    sub = ident.identify(model["wav"], timeline=True, langs=["fr", "de"])
    assert list(sub.posteriors) == ["de", "fr"]
    norm = full.posteriors["de"] + full.posteriors["fr"]
    assert sub.posteriors["de"] == pytest.approx(full.posteriors["de"] / norm, abs=1e-9)
    assert sub.posteriors["fr"] == pytest.approx(full.posteriors["fr"] / norm, abs=1e-9)
    assert sub.language == max(("de", "fr"), key=lambda lang: full.posteriors[lang])
    for a, b in zip(full.segments, sub.segments, strict=True):
        assert (a.start, a.end, a.weight) == (b.start, b.end, b.weight)
        s = a.posteriors["de"] + a.posteriors["fr"]
        assert b.posteriors == pytest.approx({"de": a.posteriors["de"] / s,
                                              "fr": a.posteriors["fr"] / s}, abs=1e-9)
    with pytest.raises(LreError, match="does not know es"):
        ident.identify(model["wav"], langs=["de", "es"])
    # with a calibration: the subset of the calibrated posteriors (alpha 2: p^2 renormalised)
    exp = tmp_path / "exp"
    exp.mkdir()
    for f in model["exp"].iterdir():
        (exp / f.name).write_bytes(f.read_bytes())
    save_calibration(exp / "calibration.json", {
        "format": "lre-calibration-1", "method": "affine", "langs": LANGS,
        "score_floor": -50.0, "alpha": 2.0, "beta": [0.0, 0.0, 0.0]})
    cal = lre.Identifier.from_pretrained(exp).identify(model["wav"], langs=["en", "fr"])
    p2 = {lang: full.posteriors[lang] ** 2 for lang in ("en", "fr")}
    assert cal.calibrated
    assert cal.posteriors == pytest.approx({k: v / sum(p2.values()) for k, v in p2.items()},
                                           abs=1e-9)


def test_cli_identify_langs_json_names_and_errors(model, capsys):
    rc = main(["identify", "--model", str(model["exp"]), str(model["wav"]), "--json",
               "--langs", "fr,de"])
    out, _ = capsys.readouterr()
    assert rc == 0
    rec = json.loads(out)
    assert list(rec["posteriors"]) == ["de", "fr"]  # codes in JSON
    assert sum(rec["posteriors"].values()) == pytest.approx(1.0, abs=2e-4)
    rc = main(["identify", "--model", str(model["exp"]), str(model["wav"])])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "de (German)" in out and "en (English)" in out and "fr (French)" in out
    rc = main(["identify", "--model", str(model["exp"]), str(model["wav"]), "--langs",
               "de,xx"])
    out, err = capsys.readouterr()
    assert rc == 1 and not out
    assert err.strip().splitlines() == ["lre identify: error: --langs: the model does not "
                                        "know xx; its languages: de en fr"]


def _result(log_post: np.ndarray) -> UtteranceResult:
    return UtteranceResult(logits=log_post, log_posteriors=log_post,
                           starts=np.array([0.0, 1.0]), ends=np.array([1.1, 2.1]),
                           weights=np.array([0.4, 0.6]),
                           segment_log_posteriors=np.vstack([log_post, log_post]))


def test_score_tables_with_langs_and_open_set_on_the_subset(tmp_path):
    """write_results with a subset: every table holds the renormalised subset; then
    lre evaluate's --unknown-threshold decides on the subset's posteriors."""
    post = {"u1": [0.6, 0.1, 0.3], "u2": [0.2, 0.3, 0.5], "u3": [0.4, 0.5, 0.1]}
    results = {u: _result(np.log(np.array(p))) for u, p in post.items()}
    out = tmp_path / "scores"
    write_results(out, LANGS, results, Calibrator(tmp_path / "no_model", LANGS),
                  subset=["de", "fr"])
    for name in ("scores.tsv", "scores_raw.tsv"):
        utts, langs, s = metrics.read_scores(out / name)
        assert langs == ["de", "fr"] and utts == ["u1", "u2", "u3"]
        # by hand: u1 .6/.9 .3/.9; u2 .2/.7 .5/.7; u3 .4/.5 .1/.5
        np.testing.assert_allclose(np.exp(s), [[2 / 3, 1 / 3], [2 / 7, 5 / 7], [0.8, 0.2]],
                                   atol=1e-6)
    rec = json.loads((out / "attention.jsonl").read_text().splitlines()[2])
    assert rec["decision"] == "de" and rec["posteriors"] == {"de": 0.8, "fr": 0.2}
    assert rec["segments"][0]["posteriors"] == {"de": 0.8, "fr": 0.2}
    # u3 speaks English, which is outside the subset: out-of-set for evaluate
    data = tmp_path / "data"
    data.mkdir()
    (data / "utt2lang").write_text("u1 de\nu2 fr\nu3 en\n")
    res = evaluate.evaluate(out, data, unknown_threshold=0.75, plots=False)
    assert res["langs"] == ["de", "fr"] and res["out_of_set_langs"] == ["en"]
    o = res["open_set"]
    # top posteriors 0.667 (u1 -> unknown), 0.714 (u2 -> unknown), 0.8 (u3 -> de, accepted)
    assert o["inset_unknown_rate"] == pytest.approx(1.0)
    assert o["oos_false_accept"] == pytest.approx(1.0)
    assert o["accuracy"] == pytest.approx(0.0)


def test_score_datadir_unknown_code_is_one_line(model, tmp_path):
    with pytest.raises(LreError) as e:
        score_datadir(model["exp"], tmp_path / "data", tmp_path / "out", langs="de,zz")
    assert str(e.value) == "--langs: the model does not know zz; its languages: de en fr"
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------- names
def test_language_names():
    assert language_name("fi") == "Finnish"
    assert language_name("pt_BR") == "Portuguese (BR)"
    assert language_name("zh-TW") == "Chinese (TW)"
    assert language_name("yue") == "Cantonese" and language_name("ceb") == "Cebuano"
    assert language_name("iw") == "Hebrew" and language_name("jw") == "Javanese"
    assert language_name("xx") == "xx" and language_name("unknown") == "unknown"
    assert labelled("sv") == "sv (Swedish)" and labelled("unknown") == "unknown"
    # every VoxLingua107 code has a name
    vox = ("ab af am ar as az ba be bg bn bo br bs ca ceb cs cy da de el en eo es et eu fa fi "
           "fo fr gl gn gu gv ha haw hi hr ht hu hy ia id is it iw ja jw ka kk km kn ko la lb "
           "ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa sco sd "
           "si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi war yi yo zh")
    assert [c for c in vox.split() if language_name(c) == c] == []


# ---------------------------------------------------------------------------- evaluate
def _scored(tmp_path: Path, cal: np.ndarray, raw: np.ndarray, labels: list[int],
            langs: list[str]) -> tuple[Path, Path]:
    utts = [f"u{i}" for i in range(len(labels))]
    scores = tmp_path / "exp" / "test"
    metrics.write_scores(scores / "scores.tsv", utts, langs, np.log(cal))
    metrics.write_scores(scores / "scores_raw.tsv", utts, langs, np.log(raw))
    data = tmp_path / "data"
    data.mkdir(parents=True)
    (data / "utt2lang").write_text("".join(f"{u} {langs[k]}\n"
                                           for u, k in zip(utts, labels, strict=True)))
    return scores, data


def test_evaluate_shows_calibration_that_hurts_beside_raw(tmp_path):
    labels = [0, 0, 1, 1]
    raw = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    cal = np.array([[0.99, 0.01], [0.9, 0.1], [0.1, 0.9], [0.95, 0.05]])  # over-confident
    scores, data = _scored(tmp_path, cal, raw, labels, ["en", "fi"])
    res = evaluate.evaluate(scores, data, plots=False)
    saved = json.loads((scores / "results.json").read_text())
    figs = saved["calibration"]["figures"]
    lab = np.array(labels)
    assert figs["Cllr_mc"]["raw"] == pytest.approx(metrics.cllr_multiclass(lab, np.log(raw)))
    assert figs["Cllr_mc"]["calibrated"] == pytest.approx(
        metrics.cllr_multiclass(lab, np.log(cal)))
    # the multi-class Cllr by hand: -1/2 [mean(log2 .8, log2 .6) + mean(log2 .7, log2 .45)]
    by_hand = -0.5 * (np.mean(np.log2([0.8, 0.6])) + np.mean(np.log2([0.7, 0.45])))
    assert figs["Cllr_mc"]["raw"] == pytest.approx(by_hand)
    assert figs["Cllr"]["raw"] == pytest.approx(res["raw"]["Cllr"])
    assert figs["C_primary_act"]["calibrated"] == res["nist"]["C_primary"]["actual"]
    assert figs["C_primary_act"]["raw"] == saved["raw"]["nist"]["C_primary"]["actual"]
    assert "Cllr_mc" in saved["calibration"]["raised"] and "Cllr" in saved["calibration"]["raised"]
    md = (scores / "report.md").read_text()
    assert "| C_primary act |" in md and "| Cllr multi-class (bits) |" in md
    assert "**Calibration makes Cllr (bits, pooled), Cllr multi-class (bits)" in md
    # a calibration that helps says nothing of the kind
    scores2, data2 = _scored(tmp_path / "b", raw, cal, labels, ["en", "fi"])
    evaluate.evaluate(scores2, data2, plots=False)
    assert "Calibration makes" not in (scores2 / "report.md").read_text()


def test_report_names_argmax_cavg_kaldi_lre07_and_min_cavg_olr(tmp_path):
    """Labels 0 0 1 1, posteriors (.9 .1) (.8 .2) (.3 .7) (.6 .4): argmax decisions 0 0 1 0
    give Pmiss = (0, 1/2) and one false alarm of 0 on language 1's utterances, so
    Cavg = 1/2 [0.5 * 1/2 + 0.5 * 1/2] = 0.25; at one threshold in (0.6, 0.7] only u3's
    target trial (0.4) is lost: min-Cavg = 1/2 [0.5 * 1/2] = 0.125."""
    post = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    scores, data = _scored(tmp_path, post, post, [0, 0, 1, 1], ["en", "fi"])
    res = evaluate.evaluate(scores, data, plots=False)
    assert res["Cavg"] == pytest.approx(0.25) and res["minCavg"] == pytest.approx(0.125)
    md = (scores / "report.md").read_text()
    assert "| Cavg x100 (argmax, Kaldi lre07) | 25.00 |" in md
    assert "| min-Cavg x100 (OLR) | 12.50 |" in md
    assert "Kaldi's lre07 recipe" in md and "OLR challenge's scoring script" in md
    assert "lre07 / OLR" not in md


# ---------------------------------------------------------------------------- VoxLingua107
def _vox_corpus(root: Path, videos: dict[str, list[int]]) -> Path:
    """``<code>/<video>__U__S<n>---<start>-<end>.wav`` tones; videos[lang] = utterances
    per video."""
    for k, (lang, per_video) in enumerate(videos.items()):
        for v, n in enumerate(per_video):
            for s in range(n):
                start = 10.0 * s
                name = f"vid{lang}{v}__U__S{s}---{start:08.3f}-{start + 1.0:08.3f}.wav"
                t = np.arange(SR) / SR
                path = root / lang / name
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 50 * k) * t)).astype(np.float32),
                         SR)
    return root


def test_voxlingua107_dev_split_by_utterance_for_single_video_languages(tmp_path, caplog):
    src = _vox_corpus(tmp_path / "vox", {"en": [2, 2, 2], "fi": [4], "sv": [1]})
    with caplog.at_level(logging.INFO, logger="lre.data.corpora.voxlingua107"):
        prepare("voxlingua107", src, tmp_path / "a", dev_per_lang=2, test_per_lang=1, seed=1)
    dev = DataDir.load(tmp_path / "a" / "dev")
    assert set(dev.utt2lang.values()) == {"en"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("dev: nothing held out for fi, sv (a single video each; --dev-split utterance"
               in w for w in warnings), warnings

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lre.data.corpora.voxlingua107"):
        prepare("voxlingua107", src, tmp_path / "b", dev_per_lang=2, test_per_lang=1, seed=1,
                dev_split="utterance")
    train, dev = (DataDir.load(tmp_path / "b" / s) for s in ("train", "dev"))
    langs = sorted(dev.utt2lang.values())
    assert langs == ["en", "en", "fi", "fi"]  # fi: 2 of its 4; sv: its one utterance trains
    assert not set(dev.utts) & set(train.utts)
    assert sorted(train.utt2lang.values()).count("fi") == 2
    assert "sv" in train.utt2lang.values()
    messages = [r.getMessage() for r in caplog.records]
    assert any("held out by utterance for the languages with a single video: fi (2 of 4)"
               in m for m in messages), messages
    assert any("nothing held out for sv (a single video each)" in m for m in messages)

    single = _vox_corpus(tmp_path / "single", {"en": [3], "fi": [3]})
    with pytest.raises(LreError, match="use --dev-split utterance"):
        prepare("voxlingua107", single, tmp_path / "c", dev_per_lang=2)
