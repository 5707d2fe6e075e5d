"""The "unknown" answer: open-set metrics by hand, the open-set scores and their operating
point (lre.openset), and the saved operating point in lre score, lre identify, lre evaluate
and run.sh stage 4."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.special import log_softmax, logsumexp
from test_score import LANGS, make_exp  # LANGS = de en fr

from lre import metrics
from lre.cli import main
from lre.data.datadir import DataDir
from lre.evaluate import conditions_table, evaluate, evaluate_conditions
from lre.features import FeatureConfig, compute_features
from lre.identify import Identifier, identify_files
from lre.inference.model_dir import load_trained_model
from lre.inference.records import read_records
from lre.languages import OTHER
from lre.openset import (
    FORMAT,
    OpenSet,
    OpenSetInputs,
    _mahalanobis,
    fit_openset,
    load_openset,
    open_set_scores,
    operating_threshold,
    save_openset,
    write_openset_scores,
)
from lre.score import run_datadir, score_datadir
from lre.utils import LreError

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


# ---------------------------------------------------------------------------- metrics
def test_open_set_cavg_by_hand():
    # en: u0 right, u1 unknown; fi: u2 right, u3 answered en; OOS: o0 answered en, o1 unknown
    labels = np.array([0, 0, 1, 1, -1, -1])
    decisions = np.array([0, -1, 1, 0, 0, -1])
    # Pmiss(en) = Pmiss(fi) = 1/2; Pfa(en, fi) = 1/2, Pfa(fi, en) = 0; Pfa(en, unk) = 1/2,
    # Pfa(fi, unk) = 0; N = 2 non-target classes each: P_nontarget = 0.5 / 2
    # C(en) = 0.5 * 0.5 + 0.25 * (0.5 + 0.5) = 0.5; C(fi) = 0.25 + 0 -> mean 0.375
    assert metrics.open_set_cavg(labels, decisions, 2) == pytest.approx(0.375)
    # without out-of-set utterances the open-set cost is not defined
    assert np.isnan(metrics.open_set_cavg(labels[:4], decisions[:4], 2))


def test_min_open_set_cavg_by_hand_and_the_curve_by_brute_force():
    labels = np.array([0, 1, -1])
    scores = np.array([[2.0, 0.0], [0.0, 2.0], [2.5, 1.0]])
    # t=0: all accepted: C = 0.25 (1 + 1) = 0.5 each; t=1: the OOS utterance accepts both:
    # 0.25; t=2: it accepts en: C(en) = 0.25, C(fi) = 0 -> 0.125; t=2.5: both targets missed
    # and the OOS one accepted for en: (0.75 + 0.5) / 2; t=inf: every target missed: 0.5
    thr, costs = metrics.open_set_cost_curve(labels, scores)
    assert thr.tolist() == [0.0, 1.0, 2.0, 2.5, np.inf]
    np.testing.assert_allclose(costs, [0.5, 0.25, 0.125, 0.625, 0.5])
    assert metrics.min_open_set_cavg(labels, scores) == (pytest.approx(0.125), 2.0)
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 4, size=80)
    scores = np.round(rng.normal(size=(80, 4)), 1)  # ties on purpose
    thr, costs = metrics.open_set_cost_curve(labels, scores, p_target=0.3)
    for t, c in zip(thr, costs, strict=True):
        assert c == pytest.approx(metrics.open_set_cost(labels, scores >= t, p_target=0.3))


def test_unknown_eer_by_hand():
    labels = np.array([0, 1, 0, -1, -1])
    # ranked: 0.9 in, 0.8 in, 0.5 OOS, 0.4 in, 0.3 OOS: the miss rate of the in-set and the
    # false-accept rate of the OOS meet at 1/3 between the thresholds 0.8 and 0.5
    assert metrics.unknown_eer(labels, np.array([0.9, 0.8, 0.4, 0.5, 0.3])) == pytest.approx(
        1 / 3)
    assert np.isnan(metrics.unknown_eer(labels[:3], np.array([0.9, 0.8, 0.4])))


def test_open_set_metrics_with_the_system_s_answers_and_an_all_oos_set():
    post = np.array([[.9, .1], [.6, .4], [.2, .8], [.7, .3], [.8, .2], [.3, .7]])
    labels = np.array([0, 0, 1, 1, -1, -1])
    unknown = np.array([False, True, False, False, False, True])
    scores = np.array([5.0, 1.0, 4.0, 3.0, 2.5, 0.5])
    o = metrics.compute_metrics(np.log(post), labels, ["en", "fi"], unknown=unknown,
                                open_scores=scores)["open_set"]
    assert o["oos_unknown_rate"] == 0.5 and o["inset_accuracy"] == 0.5
    assert o["inset_unknown_rate"] == 0.25 and o["accuracy"] == 0.5
    assert o["Cavg_open"] == pytest.approx(0.375)  # the decisions of the first test
    # ranked: 5, 4, 3 in, 2.5 OOS, 1 in, 0.5 OOS -> EER 1/4
    assert o["unknown_EER"] == pytest.approx(0.25)
    only_oos = metrics.compute_metrics(np.log(post[4:]), labels[4:], ["en", "fi"])
    assert only_oos["num_in_set"] == 0 and np.isnan(only_oos["accuracy"])
    assert only_oos["open_set"]["oos_false_accept"] == 1.0


# ---------------------------------------------------------------------------- the methods
def test_operating_threshold_and_mahalanobis_by_hand():
    scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert operating_threshold(scores, 0.2) == 1.5  # one of five below, halfway to the next
    assert operating_threshold(scores, 0.0) == 1.0  # none below
    params = {"means": np.array([[0.0, 0.0], [4.0, 0.0]]), "precision": np.diag([1.0, 4.0])}
    # e = (1, 1): d^2 = 1 + 4 = 5 to the first mean, 9 + 4 = 13 to the second
    np.testing.assert_allclose(_mahalanobis(params, np.array([[1.0, 1.0]])), [-5.0])


def _synthetic(rng: np.random.Generator, n_per: int, n_oos: int) -> tuple[OpenSetInputs,
                                                                          np.ndarray,
                                                                          OpenSetInputs]:
    """4 languages in 16 dimensions, a linear classifier that sees dimensions 0-3 only; the
    out-of-set points share a language's classifier dimensions (confident logits) but lie
    far away in the others, where the languages' embeddings never go."""
    means = np.zeros((4, 16))
    means[np.arange(4), np.arange(4)] = 3.0
    labels = np.repeat(np.arange(4), n_per)
    inset = means[labels] + rng.normal(scale=0.5, size=(len(labels), 16))
    oos = means[rng.integers(4, size=n_oos)] + rng.normal(scale=0.5, size=(n_oos, 16))
    oos[:, 4:] += rng.choice([-2.0, 2.0], size=(n_oos, 12))

    def inputs(e: np.ndarray) -> OpenSetInputs:
        logits = 3.0 * e[:, :4]
        return OpenSetInputs(log_softmax(logits, axis=1), logits, e)
    return inputs(inset), labels, inputs(oos)


def test_mahalanobis_beats_max_posterior_where_oos_lies_away_from_the_means():
    rng = np.random.default_rng(0)
    inset, labels, oos = _synthetic(rng, 40, 60)
    spec = fit_openset(inset, labels, oos, ["a", "b", "c", "d"], seed=1)
    cand = spec["selection"]["candidates"]
    assert spec["method"] == "mahalanobis"
    assert cand["mahalanobis"]["unknown_EER"] < 0.05 < cand["max_posterior"]["unknown_EER"]
    # the thresholds reject 5% of in-set dev (8 of 160), held out for mahalanobis
    assert all(c["inset_unknown_rate"] == pytest.approx(0.05) for c in cand.values())
    assert np.asarray(spec["params"]["means"]).shape == (4, 16)
    # on fresh draws: most out-of-set points unknown, most in-set ones kept
    test_in, _, test_oos = _synthetic(np.random.default_rng(7), 40, 60)
    maha = OpenSet(spec, "fit")
    assert maha.unknown(maha.scores(test_oos)).mean() > 0.9
    assert maha.unknown(maha.scores(test_in)).mean() < 0.12
    msp = OpenSet({**spec, "method": "max_posterior",
                   "threshold": cand["max_posterior"]["threshold"]}, "fit")
    assert msp.unknown(msp.scores(test_oos)).mean() < 0.3


def test_fit_refuses_what_it_cannot_do(caplog):
    rng = np.random.default_rng(0)
    inset, labels, oos = _synthetic(rng, 3, 10)  # 3 per language: no mahalanobis
    with caplog.at_level(logging.WARNING, logger="lre.openset"):
        spec = fit_openset(inset, labels, oos, ["a", "b", "c", "d"])
    assert set(spec["selection"]["candidates"]) == {"max_posterior", "energy"}
    assert "mahalanobis not tried: needs 5 in-set dev utterances" in caplog.text
    with pytest.raises(LreError, match="mahalanobis cannot be fitted"):
        fit_openset(inset, labels, oos, ["a", "b", "c", "d"], method="mahalanobis")
    with pytest.raises(LreError, match="unknown method 'best'"):
        fit_openset(inset, labels, oos, ["a", "b", "c", "d"], method="best")
    with pytest.raises(LreError, match=r"must be in \[0, 1\)"):
        fit_openset(inset, labels, oos, ["a", "b", "c", "d"], inset_reject=1.0)


def test_operating_point_file_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    inset, labels, oos = _synthetic(rng, 10, 10)
    spec = fit_openset(inset, labels, oos, ["a", "b", "c", "d"], method="mahalanobis")
    save_openset(tmp_path / "openset.json", spec)
    loaded = OpenSet.load(tmp_path / "openset.json")
    # stored to 7 significant digits: the scores move by far less than their spread
    np.testing.assert_allclose(loaded.scores(oos), OpenSet(spec, "x").scores(oos), rtol=1e-5)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**spec, "format": "other"}))
    with pytest.raises(LreError, match=f"bad.json: not an lre open-set file .format != {FORMAT}"):
        OpenSet.load(bad)
    bad.write_text(json.dumps({**spec, "params": {"means": [[0.0, 1.0]]}}))
    with pytest.raises(LreError, match="needs params.means and params.precision"):
        OpenSet.load(bad)
    bad.write_text("{")
    with pytest.raises(LreError, match="bad.json: not valid JSON"):
        OpenSet.load(bad)
    with pytest.raises(LreError, match="must be a posterior in"):
        OpenSet.top_posterior(1.5)


# ---------------------------------------------------------------------------- a tiny model
def _tone(rng: np.random.Generator, freq: float) -> np.ndarray:
    """2-3 s of a tone whose loudness moves, with a little noise."""
    t = np.arange(int(rng.uniform(2.0, 3.0) * SR)) / SR
    f = freq * rng.uniform(0.9, 1.1)
    audio = 0.3 * np.sin(2 * np.pi * f * t) * (1.2 + np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    return (audio + 0.02 * rng.normal(size=len(t))).astype(np.float32)


def _data_dir(path: Path, utts: dict[str, tuple[str, np.ndarray]]) -> Path:
    wavs = {}
    for utt, (_, audio) in utts.items():
        wavs[utt] = path / "wav" / f"{utt}.wav"
        wavs[utt].parent.mkdir(parents=True, exist_ok=True)
        sf.write(wavs[utt], audio, SR, subtype="FLOAT")
    DataDir(path, wav_scp={u: str(p) for u, p in wavs.items()},
            utt2lang={u: lang for u, (lang, _) in utts.items()},
            utt2spk={u: u.split("-")[0] for u in utts}).write()
    compute_features(path, FeatureConfig(), nj=1)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained tiny HGRU over de/en/fr; dev: 5 tones of each "language", dev_oos: 4."""
    tmp = tmp_path_factory.mktemp("openset")
    rng = np.random.default_rng(0)
    freqs = {"de": 220.0, "en": 440.0, "fr": 880.0, "xx": 1500.0}
    dev = {f"{lang}-{i}": (lang, _tone(rng, freqs[lang])) for lang in LANGS for i in range(5)}
    oos = {f"xx-{i}": ("xx", _tone(rng, freqs["xx"])) for i in range(4)}
    return {"exp": make_exp(tmp / "exp", FeatureConfig(), seed=1),
            "dev": _data_dir(tmp / "dev", dev), "dev_oos": _data_dir(tmp / "dev_oos", oos),
            "tmp": tmp}


def _energy_point(tiny, tmp_path: Path) -> tuple[Path, set[str]]:
    """A copy of the model dir with an energy operating point at the widest gap between the
    dev energies (nowhere near a score), and the dev utterances it answers unknown."""
    exp = tmp_path / "exp"
    shutil.copytree(tiny["exp"], exp)
    results, _, _ = run_datadir(load_trained_model(exp), tiny["dev"])
    energy = {u: float(logsumexp(r.logits)) for u, r in results.items()}
    s = np.sort(list(energy.values()))
    k = int(np.argmax(np.diff(s[3:-3]))) + 3  # a gap with utterances on either side
    thr = float((s[k] + s[k + 1]) / 2)
    save_openset(exp / "openset.json", {"format": FORMAT, "method": "energy", "threshold": thr})
    return exp, {u for u, e in energy.items() if e < thr}


def test_lre_openset_fit_on_the_dev_sets(tiny, tmp_path):
    out = tmp_path / "openset.json"
    assert main(["openset", "fit", "--model-dir", str(tiny["exp"]), "--dev", str(tiny["dev"]),
                 "--dev-oos", str(tiny["dev_oos"]), "--out", str(out)]) == 0
    spec = json.loads(out.read_text())
    assert spec["format"] == FORMAT and spec["dev"] == {"num_inset": 15, "num_oos": 4,
                                                        "oos_langs": ["xx"]}
    assert set(spec["selection"]["candidates"]) == {"max_posterior", "energy", "mahalanobis"}
    chosen = spec["selection"]["candidates"][spec["method"]]
    assert spec["threshold"] == chosen["threshold"]
    assert chosen["unknown_EER"] == min(c["unknown_EER"]
                                        for c in spec["selection"]["candidates"].values())
    # 15 in-set dev utterances: floor(0.75) = 0 rejected at 5%
    assert all(c["inset_unknown_rate"] == 0.0 for c in spec["selection"]["candidates"].values())


def test_score_and_identify_answer_with_the_saved_operating_point(tiny, tmp_path):
    exp, expected = _energy_point(tiny, tmp_path)
    assert 3 <= len(expected) <= 12
    score_datadir(exp, tiny["dev"], tmp_path / "scores")
    records = {r.id: r for r in read_records(tmp_path / "scores" / "attention.jsonl")}
    assert {u for u, r in records.items() if r.decision == "unknown"} == expected
    assert all(r.decision in LANGS for u, r in records.items() if u not in expected)
    rows = (tmp_path / "scores" / "openset.tsv").read_text().splitlines()
    assert rows[0] == "utt\tscore\tunknown" and len(rows) == 16
    assert {r.split("\t")[0] for r in rows[1:] if r.endswith("\t1")} == expected
    assert json.loads((tmp_path / "scores" / "openset.json").read_text())["method"] == "energy"
    # identify on the same audio: the same answers, by default
    ident = Identifier.from_pretrained(exp)
    wavs = {u: tiny["dev"] / "wav" / f"{u}.wav" for u in records}
    for utt, wav in wavs.items():
        assert ident.identify(wav).decision == records[utt].decision, utt
    # --unknown-threshold overrides it: the top posterior of 3 languages is below 1
    assert Identifier.from_pretrained(exp, unknown_threshold=1.0).identify(
        wavs["de-0"]).decision == "unknown"
    assert Identifier.from_pretrained(exp, unknown_threshold=0.0).identify(
        wavs[sorted(expected)[0]]).decision in LANGS
    score_datadir(exp, tiny["dev"], tmp_path / "scores", unknown_threshold=0.0)
    assert all(r.decision in LANGS for r in read_records(tmp_path / "scores" / "attention.jsonl"))
    summary = json.loads((tmp_path / "scores" / "openset.json").read_text())
    assert summary == {"method": "max_posterior", "threshold": 0.0,
                       "source": "--unknown-threshold"}


def test_identify_cli_prints_unknown(tiny, tmp_path, capsys):
    exp, expected = _energy_point(tiny, tmp_path)
    wav = tiny["dev"] / "wav" / f"{sorted(expected)[0]}.wav"
    assert main(["identify", "--model", str(exp), str(wav), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "unknown"
    assert main(["identify", "--model", str(exp), str(wav)]) == 0
    assert "->  unknown (none of the model's languages)" in capsys.readouterr().out


def test_a_model_without_operating_point_identifies_and_says_so_once(tiny, tmp_path, caplog):
    assert not (tiny["exp"] / "openset.json").exists()
    wavs = [str(tiny["dev"] / "wav" / f"{u}.wav") for u in ("de-0", "en-1", "fr-2")]
    out = tmp_path / "out.jsonl"
    with caplog.at_level(logging.INFO, logger="lre.openset"), open(out, "w") as f:
        assert identify_files(tiny["exp"], wavs, as_json=True, out=f) == 0
    said = [r for r in caplog.records if "no open-set operating point" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    answers = [json.loads(line)["decision"] for line in out.read_text().splitlines()]
    assert len(answers) == 3 and all(a in LANGS for a in answers)
    assert load_openset(tiny["exp"]) is None


# ---------------------------------------------------------------------------- evaluate
def _scored(tmp_path: Path, name: str, utts: dict[str, tuple[str, list[float], float]],
            threshold: float = 2.0) -> tuple[Path, Path]:
    """data/<name> and exp/hgru/<name> as lre score writes them with an energy operating
    point: utt -> (language, posteriors over en/fi, open-set score)."""
    langs = ["en", "fi"]
    data = tmp_path / "data" / name
    data.mkdir(parents=True)
    (data / "utt2lang").write_text("".join(f"{u} {lang}\n" for u, (lang, _, _) in utts.items()))
    scores = tmp_path / "exp" / "hgru" / name
    ids = sorted(utts)
    metrics.write_scores(scores / "scores.tsv", ids, langs, np.log([utts[u][1] for u in ids]))
    (scores / "attention.jsonl").write_text("")
    openset = OpenSet({"format": FORMAT, "method": "energy", "threshold": threshold,
                       "inset_reject": 0.05}, "exp/hgru/openset.json")
    write_openset_scores(scores, ids, openset, np.array([utts[u][2] for u in ids]))
    return scores, data


IN_SET = {"u0": ("en", [.9, .1], 5.0), "u1": ("en", [.6, .4], 1.0),
          "u2": ("fi", [.2, .8], 4.0), "u3": ("fi", [.7, .3], 3.0)}
OUT_OF_SET = {"o0": ("sv", [.8, .2], 2.5), "o1": ("ro", [.3, .7], 0.5)}


def test_evaluate_an_oos_set_against_the_in_set_test_set(tmp_path):
    test, test_data = _scored(tmp_path, "test", IN_SET)
    oos, oos_data = _scored(tmp_path, "test_oos", OUT_OF_SET)
    inset = evaluate(test, test_data, plots=False)["open_set"]
    assert inset["inset_unknown_rate"] == 0.25 and inset["inset_accuracy"] == 0.5
    assert inset["operating_point"]["method"] == "energy"
    res = evaluate(oos, oos_data, plots=False, inset=(test, test_data))
    o = res["open_set"]
    # the hand-computed figures of test_open_set_metrics_with_the_system_s_answers...
    assert o["oos_unknown_rate"] == 0.5 and o["inset_accuracy"] == 0.5
    assert o["unknown_EER"] == pytest.approx(0.25) and o["Cavg_open"] == pytest.approx(0.375)
    assert o["num_in_set"] == 4 and o["inset_scores"] == str(test)
    saved = json.loads((oos / "results.json").read_text())
    assert saved["open_set"]["unknown_EER"] == pytest.approx(0.25)
    md = (oos / "report.md").read_text()
    assert "## Summary" not in md and "| out-of-set answered unknown (%) | 50.00 |" in md
    assert "against the 4 in-set utterances" in md and "below 2 (exp/hgru/openset.json" in md
    # the conditions table gets the open-set columns
    combined = evaluate_conditions([test, oos])
    table = conditions_table(combined)
    assert "| in-set unknown (%) | OOS unknown (%) | unknown EER (%) |" in table
    assert "| test_oos | 2 |" in table and table.rstrip().endswith("| 25.00 | 50.00 | 25.00 |")
    # without openset.tsv on both sides the pairing is refused
    (test / "openset.tsv").unlink()
    with pytest.raises(LreError, match="different operating points"):
        evaluate(oos, oos_data, plots=False, inset=(test, test_data))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_run_sh_stage_4_tells_oos_sets_from_their_in_set_sets(tmp_path):
    test, _ = _scored(tmp_path, "test", IN_SET)
    _scored(tmp_path, "test_oos", OUT_OF_SET)
    exp = test.parent
    (exp / "dev").mkdir()
    (exp / "dev" / "attention.jsonl").write_text("")
    (exp / "calibration.json").write_text("{}")
    env = dict(os.environ, LRE_SKIP_APT="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "--data-dir", str(tmp_path / "data"), "--exp-dir",
         str(tmp_path / "exp"), "--stage", "3", "--stop-stage", "4", "--test-sets",
         "test test_oos"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no open-set operating point" in proc.stderr  # no data/dev_oos
    o = json.loads((exp / "test_oos" / "results.json").read_text())["open_set"]
    assert o["inset_scores"] == str(exp / "test") and o["unknown_EER"] == pytest.approx(0.25)
    assert "| test_oos | 2 |" in proc.stdout and "unknown EER (%)" in proc.stdout


def test_onnx_runner_gives_the_embedding_and_an_old_export_turns_the_open_set_off(
        tiny, tmp_path, monkeypatch, caplog):
    import lre.export
    from lre.export import OnnxRunner, onnx_bytes
    from lre.models import load_model

    exp = tmp_path / "exp"
    shutil.copytree(tiny["exp"], exp)
    model, meta = load_model(exp / "final.pt")
    runner = OnnxRunner(onnx_bytes(model, 40, {"langs": json.dumps(LANGS)}))
    x = [np.random.default_rng(0).normal(size=(n, 40)).astype(np.float32) for n in (300, 170)]
    torch_out = load_trained_model(exp).runner.run(x)
    assert runner.has_embedding
    for a, b in zip(runner.run(x), torch_out, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
    dim = len(torch_out[0].embedding)
    save_openset(exp / "openset.json", {  # every utterance is far from these means
        "format": FORMAT, "method": "mahalanobis", "threshold": 1e9,
        "params": {"means": np.zeros((3, dim)).tolist(), "precision": np.eye(dim).tolist()}})
    monkeypatch.setattr(lre.export, "load_onnx_runner", lambda *a, **k: runner)
    wav = tiny["dev"] / "wav" / "de-0.wav"
    assert Identifier.from_pretrained(exp, backend="onnx").identify(wav).decision == "unknown"
    runner.has_embedding = False  # as a file exported before the embedding was an output
    with caplog.at_level(logging.WARNING, logger="lre.identify"):
        ident = Identifier.from_pretrained(exp, backend="onnx")
    assert ident.openset is None and "has no embedding output" in caplog.text
    assert ident.identify(wav).decision in LANGS


# ------------------------------------------------------------------- the "other" class
def test_other_class_score_by_hand_and_fit_takes_it_where_it_separates():
    rng = np.random.default_rng(0)
    inset, labels, oos = _synthetic(rng, 20, 30)
    # an "other" logit that is low for in-set speech and high for out-of-set speech
    inset.other_logits = rng.normal(-3.0, 1.0, len(labels))
    oos.other_logits = rng.normal(6.0, 1.0, len(oos.logits))
    scores = open_set_scores("other_class", {}, inset)
    row = inset.logits[0]
    assert scores[0] == pytest.approx(np.log(np.exp(row).sum()) - inset.other_logits[0])
    spec = fit_openset(inset, labels, oos, ["a", "b", "c", "d"], seed=1)
    cand = spec["selection"]["candidates"]
    assert set(cand) == {"max_posterior", "energy", "other_class", "mahalanobis"}
    assert cand["other_class"]["unknown_EER"] < cand["max_posterior"]["unknown_EER"]
    # without the class it is not tried, and asking for it is one clear error
    inset.other_logits = oos.other_logits = None
    assert "other_class" in fit_openset(inset, labels, oos, ["a", "b", "c", "d"])[
        "selection"]["not_tried"]
    with pytest.raises(LreError, match="other_class cannot be fitted: the model has no 'other'"):
        fit_openset(inset, labels, oos, ["a", "b", "c", "d"], method="other_class")
    with pytest.raises(LreError, match="needs a model trained with an 'other' class"):
        open_set_scores("other_class", {}, inset)


@pytest.fixture(scope="module")
def with_other(tiny):
    """The tiny model's shape with one more output, the "other" class (C-sorted after the
    three languages, as training orders a train set labelled de/en/fr/other)."""
    import torch
    from test_score import TINY

    from lre.models import build_model, save_model

    exp = tiny["tmp"] / "exp_other"
    shutil.copytree(tiny["exp"], exp)
    torch.manual_seed(3)
    save_model(exp / "final.pt", build_model("hgru", 40, 4, TINY), [*LANGS, OTHER])
    return exp


def test_a_model_with_an_other_class_answers_its_languages_and_keeps_other_apart(
        tiny, with_other, tmp_path):
    from lre.inference.runner import TorchRunner
    from lre.models import load_model

    model = load_trained_model(with_other)
    assert model.langs == LANGS and model.calibrator.langs == LANGS
    x = [np.random.default_rng(0).normal(size=(n, 40)).astype(np.float32) for n in (300, 170)]
    raw = TorchRunner(load_model(with_other / "final.pt")[0], [*LANGS, OTHER]).run(
        x, timeline=True)
    for ours, full in zip(model.runner.run(x, timeline=True), raw, strict=True):
        np.testing.assert_allclose(ours.logits, full.logits[:3])
        assert ours.other_logit == pytest.approx(full.logits[3])
        np.testing.assert_allclose(ours.segment_logits, full.segment_logits[:, :3])
        assert full.other_logit is None
    # scored: posteriors over the three languages, the "other" logit beside them
    results, _, _ = run_datadir(model, tiny["dev"])
    for r in results.values():
        assert r.log_posteriors.shape == (3,) and r.other_logit is not None
        np.testing.assert_allclose(r.log_posteriors, log_softmax(r.logits), atol=1e-9)
    out = tmp_path / "openset.json"
    assert main(["openset", "fit", "--model-dir", str(with_other), "--dev", str(tiny["dev"]),
                 "--dev-oos", str(tiny["dev_oos"]), "--out", str(out), "--method",
                 "other_class"]) == 0
    spec = json.loads(out.read_text())
    assert spec["method"] == "other_class" and spec["langs"] == LANGS
    # identify answers a language or "unknown", never "other"
    shutil.copy(out, with_other / "openset.json")
    try:
        ident = Identifier.from_pretrained(with_other)
        assert ident.langs == LANGS
        answers = {ident.identify(p).decision for p in sorted((tiny["dev"] / "wav").glob("*"))}
        assert answers <= {*LANGS, "unknown"}
    finally:
        (with_other / "openset.json").unlink()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synth_recipe_adds_other_languages_to_train_under_one_label(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        ["bash", str(ROOT / "recipes" / "synth" / "prepare.sh"), "--langs", "en,fi",
         "--train-per-lang", "2", "--dev-per-lang", "0", "--test-per-lang", "0",
         "--no-progress", "--no-conditions", "--other-per-lang", "2",
         "--other-langs", "af,sk,fi,eo", "--oos-dev-langs", "sk", str(tmp_path / "data")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train_other: sk is a language of dev_oos or test_oos; left out" in proc.stderr
    assert "train_other: fi is a language of the corpus; left out" in proc.stderr
    train = DataDir.load(tmp_path / "data" / "train")
    by_lang: dict[str, list[str]] = {}
    for utt, lang in train.utt2lang.items():
        by_lang.setdefault(lang, []).append(utt)
    assert {k: len(v) for k, v in by_lang.items()} == {"en": 2, "fi": 2, OTHER: 4}
    assert sorted(u.split("-")[0] for u in by_lang[OTHER]) == ["af", "af", "eo", "eo"]
    assert not (tmp_path / "data" / "train_other").exists()
