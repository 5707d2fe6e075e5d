"""Fusion of subsystems (lre fuse): the fit by hand and by its gradient, what fusing gains on
held-out scores, and a fusion dir scored by lre score, identified by lre identify and given
an open-set operating point like a model dir."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.special import log_softmax
from test_openset import _data_dir, _tone
from test_score import LANGS, make_exp  # LANGS = de en fr

from lre import calibration
from lre.cli import main
from lre.features import FeatureConfig
from lre.fusion import FORMAT, apply_fusion, fit_fusion, fuse_results, load_fusion, on_segments
from lre.identify import Identifier
from lre.inference.chunks import UtteranceResult
from lre.inference.model_dir import load_trained_model
from lre.inference.records import read_records
from lre.metrics import cllr_multiclass, read_scores
from lre.score import run_datadir
from lre.utils import LreError


def _complementary(rng: np.random.Generator, n: int = 60, langs: int = 4):
    """Two systems' log-posteriors: A tells languages 0-1 apart from the others, B tells
    each pair apart (0 from 1, 2 from 3): only together do they know the language."""
    labels = np.repeat(np.arange(langs), n // langs)
    group = labels // 2  # A's knowledge
    within = labels % 2  # B's knowledge
    a = rng.normal(0, 1, (len(labels), langs))
    b = rng.normal(0, 1, (len(labels), langs))
    a[np.arange(len(labels)), 2 * group] += 3
    a[np.arange(len(labels)), 2 * group + 1] += 3
    b[np.arange(len(labels)), within] += 3
    b[np.arange(len(labels)), within + 2] += 3
    return labels, log_softmax(a, axis=1), log_softmax(b, axis=1)


def test_linear_objective_gradient_and_hessian_of_two_systems():
    rng = np.random.default_rng(0)
    labels, a, b = _complementary(rng, 24)
    xs = np.stack([a, b])
    w, t = calibration._class_weights(labels, 4), calibration._targets(labels, 4)
    prior = np.array([0.5, 0.5])
    theta = np.array([0.7, 1.3, 0.2, -0.1, 0.3, -0.4])
    loss, grad, hess = calibration.linear_objective(theta, xs, t, w, 0.1, prior)
    eps = 1e-6
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = eps
        up, down = (calibration.linear_objective(theta + s * e, xs, t, w, 0.1, prior)
                    for s in (1, -1))
        assert (up[0] - down[0]) / (2 * eps) == pytest.approx(grad[i], abs=1e-6)
        np.testing.assert_allclose((up[1] - down[1]) / (2 * eps), hess[i], atol=1e-5)
    # the loss by hand: class-weighted cross-entropy + the pull toward (prior, 0)
    z = 0.7 * a + 1.3 * b + theta[2:]
    by_hand = -np.sum(w[:, None] * t * log_softmax(z, axis=1))
    by_hand += 0.1 * ((0.7 - 0.5) ** 2 + (1.3 - 0.5) ** 2 + np.sum(theta[2:] ** 2))
    assert loss == pytest.approx(by_hand, rel=1e-12)


def test_fusion_beats_each_subsystem_on_held_out_scores_and_is_deterministic():
    rng = np.random.default_rng(1)
    labels, a, b = _complementary(rng)
    langs = ["w", "x", "y", "z"]
    fusion = fit_fusion([a, b], labels, langs, ["A", "B"], seed=3)
    cv = fusion["selection"]["heldout_Cllr_mc"]
    assert set(cv) == {"fusion", "A raw", "A affine", "B raw", "B affine"}
    assert cv["fusion"] < 0.5 * min(cv["A affine"], cv["B affine"], cv["A raw"], cv["B raw"])
    assert all(w > 0.3 for w in fusion["weights"])
    assert fusion == fit_fusion([a, b], labels, langs, ["A", "B"], seed=3)
    # applied: log_softmax(alpha_A x_A + alpha_B x_B + beta), by hand
    (wa, wb), beta = fusion["weights"], np.array(fusion["offsets"])
    np.testing.assert_allclose(apply_fusion(fusion, [a, b]),
                               log_softmax(wa * a + wb * b + beta, axis=1), atol=1e-12)
    np.testing.assert_allclose(apply_fusion(fusion, [a[0], b[0]]),
                               log_softmax(wa * a[0] + wb * b[0] + beta), atol=1e-12)


def test_a_system_of_noise_gets_little_weight():
    rng = np.random.default_rng(2)
    labels, a, _ = _complementary(rng, 80)
    good = a.copy()
    good[np.arange(len(labels)), labels] += 2.0  # A made to know the language
    noise = log_softmax(rng.normal(0, 2, good.shape), axis=1)
    fusion = fit_fusion([log_softmax(good, axis=1), noise], labels, list("abcd"),
                        ["good", "noise"])
    w_good, w_noise = fusion["weights"]
    assert w_noise < 0.25 * w_good
    cv = fusion["selection"]["heldout_Cllr_mc"]
    assert cv["fusion"] <= cv["good affine"] + 0.05


def test_timelines_are_fused_on_the_lead_segments():
    lead_starts, lead_ends = np.array([0.0, 1.0, 2.0, 5.0]), np.array([1.1, 2.1, 3.1, 6.0])
    starts, ends = np.array([0.0, 1.5]), np.array([1.5, 3.0])
    other = np.log(np.array([[0.9, 0.1], [0.2, 0.8]]))
    got = on_segments(lead_starts, lead_ends, starts, ends, other)
    # [0, 1.1): the first only; [1, 2.1): 0.5 s of the first, 0.6 s of the second;
    # [2, 3.1): the second only; [5, 6): none overlaps, the nearest centre is the second's
    expected = np.stack([other[0], (0.5 * other[0] + 0.6 * other[1]) / 1.1, other[1],
                         other[1]])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    fusion = {"weights": [0.6, 0.5], "offsets": [0.1, -0.1], "langs": ["a", "b"]}
    lead_tl = np.log(np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5], [0.1, 0.9]]))
    res = [UtteranceResult(logits=lead_tl[0], log_posteriors=lead_tl[0], starts=lead_starts,
                           ends=lead_ends, weights=np.full(4, 0.25),
                           segment_log_posteriors=lead_tl),
           UtteranceResult(logits=other[0], log_posteriors=other[0], starts=starts, ends=ends,
                           weights=np.full(2, 0.5), segment_log_posteriors=other)]
    fused = fuse_results(fusion, res)
    np.testing.assert_allclose(fused.segment_log_posteriors, log_softmax(
        0.6 * lead_tl + 0.5 * expected + np.array([0.1, -0.1]), axis=1), atol=1e-12)
    np.testing.assert_allclose(fused.log_posteriors, log_softmax(
        0.6 * lead_tl[0] + 0.5 * other[0] + np.array([0.1, -0.1])), atol=1e-12)
    assert fused.weights.tolist() == [0.25] * 4 and fused.starts is lead_starts
    res[1].segment_log_posteriors = None  # one without a timeline: the lead's as it is
    assert fuse_results(fusion, res).segment_log_posteriors is lead_tl


def test_fit_fusion_errors_are_one_line():
    labels = np.array([0, 0, 1, 1])
    x = np.log(np.full((4, 2), 0.5))
    with pytest.raises(LreError, match="at least two subsystems"):
        fit_fusion([x], labels, ["a", "b"], ["A"])
    with pytest.raises(LreError, match="fewer than 2 dev utterances of b"):
        fit_fusion([x, x], np.array([0, 0, 0, 1]), ["a", "b"], ["A", "B"])
    with pytest.raises(LreError, match="differ in shape"):
        fit_fusion([x, x[:3]], labels, ["a", "b"], ["A", "B"])


# ---------------------------------------------------------------------------- fusion dirs
@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    """Two untrained tiny HGRUs over de/en/fr (different seeds); dev: 5 tones of each
    "language", dev_oos: 4 of another; a fusion dir of the two fitted on dev."""
    tmp = tmp_path_factory.mktemp("fusion")
    rng = np.random.default_rng(0)
    freqs = {"de": 220.0, "en": 440.0, "fr": 880.0, "xx": 1500.0}
    dev = {f"{lang}-{i}": (lang, _tone(rng, freqs[lang])) for lang in LANGS for i in range(5)}
    oos = {f"xx-{i}": ("xx", _tone(rng, freqs["xx"])) for i in range(4)}
    cfg = FeatureConfig()
    a, b = make_exp(tmp / "exp" / "a", cfg, seed=1), make_exp(tmp / "exp" / "b", cfg, seed=2)
    out = {"a": a, "b": b, "dev": _data_dir(tmp / "dev", dev),
           "dev_oos": _data_dir(tmp / "dev_oos", oos), "tmp": tmp,
           "fusion": tmp / "exp" / "fusion"}
    assert main(["fuse", "--model-dirs", str(a), str(b), "--data", str(out["dev"]),
                 "--out", str(out["fusion"])]) == 0
    return out


def test_lre_fuse_writes_a_fusion_dir(systems, capsys):
    fusion = load_fusion(systems["fusion"])
    assert fusion["format"] == FORMAT and fusion["names"] == ["a", "b"]
    assert fusion["subsystems"] == ["../a", "../b"]  # relative: the exp dir can move
    assert fusion["langs"] == LANGS and fusion["dev"]["num_utts"] == 15
    # fitted from the models' raw dev score tables instead: the same fusion
    for name in ("a", "b"):
        main(["score", "--model-dir", str(systems[name]), "--data", str(systems["dev"]),
              "--out", str(systems["tmp"] / name)])
    out = systems["tmp"] / "from_tables"
    assert main(["fuse", "--model-dirs", str(systems["a"]), str(systems["b"]), "--data",
                 str(systems["dev"]), "--out", str(out), "--scores",
                 str(systems["tmp"] / "a" / "scores_raw.tsv"),
                 str(systems["tmp"] / "b" / "scores_raw.tsv")]) == 0
    again = load_fusion(out)
    np.testing.assert_allclose(again["weights"], fusion["weights"], atol=1e-4)
    assert "held-out dev Cllr_mc" in capsys.readouterr().out


def test_score_a_fusion_dir_equals_the_fusion_of_the_subsystems_scores(systems, tmp_path):
    fusion = load_fusion(systems["fusion"])
    assert main(["score", "--model-dir", str(systems["fusion"]), "--data",
                 str(systems["dev"]), "--out", str(tmp_path / "fused")]) == 0
    per = []
    for name in ("a", "b"):
        results, _, _ = run_datadir(load_trained_model(systems[name]), systems["dev"],
                                    timeline=True)
        per.append(results)
    utts, langs, fused = read_scores(tmp_path / "fused" / "scores.tsv")
    assert langs == LANGS
    expected = apply_fusion(fusion, [np.stack([r[u].log_posteriors for u in utts])
                                     for r in per])
    np.testing.assert_allclose(fused, expected, atol=2e-6)  # the table's 6 decimals
    # the records: fused posteriors, the lead's (first subsystem's) segments and attention
    for rec in read_records(tmp_path / "fused" / "attention.jsonl"):
        lead = per[0][rec.id]
        assert rec.calibrated
        np.testing.assert_allclose([s.weight for s in rec.segments], lead.weights, atol=1e-4)
        assert [s.start for s in rec.segments] == pytest.approx(list(lead.starts), abs=1e-4)
    assert cllr_multiclass(np.array([LANGS.index(u.split("-")[0]) for u in utts]),
                           fused) < 2.0


def test_identify_with_a_fusion_dir_is_the_path_of_score(systems):
    fusion = load_fusion(systems["fusion"])
    wav = systems["dev"] / "wav" / "en-0.wav"
    fused = Identifier.from_pretrained(systems["fusion"]).identify(wav, timeline=True)
    raw = [Identifier.from_pretrained(systems[n]).run(wav).result.log_posteriors
           for n in ("a", "b")]
    expected = np.exp(apply_fusion(fusion, raw))
    assert [fused.posteriors[lang] for lang in LANGS] == pytest.approx(list(expected),
                                                                       abs=1e-9)
    assert fused.calibrated
    rc = main(["identify", "--model", str(systems["fusion"]), str(wav), "--json",
               "--langs", "de,fr"])
    assert rc == 0


def test_openset_fit_on_a_fusion_dir_and_errors(systems, tmp_path, capsys):
    exp = tmp_path / "fusion"
    shutil.copytree(systems["fusion"], exp)
    spec_file = json.loads((exp / "fusion.json").read_text())
    spec_file["subsystems"] = [str(systems["a"]), str(systems["b"])]
    (exp / "fusion.json").write_text(json.dumps(spec_file))
    assert main(["openset", "fit", "--model-dir", str(exp), "--dev", str(systems["dev"]),
                 "--dev-oos", str(systems["dev_oos"])]) == 0
    spec = json.loads((exp / "openset.json").read_text())
    # the embedding of a fusion: both subsystems' concatenated, so mahalanobis is a candidate
    assert set(spec["selection"]["candidates"]) == {"max_posterior", "energy", "mahalanobis"}
    assert main(["score", "--model-dir", str(exp), "--data", str(systems["dev_oos"]),
                 "--out", str(tmp_path / "oos")]) == 0
    assert (tmp_path / "oos" / "openset.tsv").is_file()
    capsys.readouterr()
    # one line naming the file and the problem
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "fusion.json").write_text('{"format": "lre-fusion-1"}')
    assert main(["score", "--model-dir", str(tmp_path / "bad"), "--data",
                 str(systems["dev"]), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lre score: error: {tmp_path / 'bad' / 'fusion.json'}: missing field(s) "
                   "subsystems, weights, offsets, langs"]
    assert main(["fuse", "--model-dirs", str(systems["a"]), str(systems["fusion"]),
                 "--data", str(systems["dev"]), "--out", str(tmp_path / "y")]) == 1
    assert "is a fusion itself" in capsys.readouterr().err


def test_a_fusion_needs_the_same_languages(systems, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(systems["b"], other)
    (other / "lang2id").write_text("de 0\nen 1\nes 2\n")
    from lre.models import load_model, save_model

    model, _ = load_model(other / "final.pt")
    save_model(other / "final.pt", model, ["de", "en", "es"])
    assert main(["fuse", "--model-dirs", str(systems["a"]), str(other), "--data",
                 str(systems["dev"]), "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ from the fusion's" in err[0], err
