"""Metrics against hand-computed values, llr against its formula, the score-table format."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lre import metrics
from lre.utils import LreError

# The reference vector: 3 languages, 8 utterances.
LABELS = np.array([0, 1, 1, 1, 0, 2, 1, 2])
POSTERIORS = np.array([
    [.1, .2, .9],  # lang 0 -> decided 2 (error)
    [.9, .2, 0],   # lang 1 -> 0 (error)
    [.1, .9, 0],   # lang 1 -> 1
    [.2, .8, .5],  # lang 1 -> 1
    [.6, .3, .1],  # lang 0 -> 0
    [.1, 0, .7],   # lang 2 -> 2
    [.1, 0, .7],   # lang 1 -> 2 (error)
    [.9, .1, 0],   # lang 2 -> 0 (error)
])


def known_scores() -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(POSTERIORS)  # log 0 = -inf


def test_known_vector_accuracy_cavg_min_cavg():
    scores = known_scores()
    decisions = metrics.argmax_decisions(scores)
    assert decisions.tolist() == [2, 0, 1, 1, 0, 2, 2, 0]
    assert metrics.accuracy(LABELS, decisions) == 0.5
    # Pmiss = 1/2 for every language; Pfa(0,1) = 1/4, Pfa(0,2) = 1/2, Pfa(1,*) = 0,
    # Pfa(2,0) = 1/2, Pfa(2,1) = 1/4:
    # Cavg = 1/3 [3 * 0.5 * 0.5 + 0.25 * (0.75 + 0 + 0.75)] = 0.375
    assert metrics.cavg(LABELS, decisions, 3) == pytest.approx(0.375, abs=1e-12)
    thresholds = np.log([.05, .4, .6, .95])
    best, thr = metrics.min_cavg(LABELS, scores, thresholds=thresholds)
    assert best == pytest.approx(0.375, abs=1e-12)
    assert thr == pytest.approx(math.log(.6))
    # Per threshold (accept when p >= t), by hand:
    #  t=.05: Pmiss (0, 1/4, 1/2), Pfa sums (2, 1.5, 1.5) -> 1/3 (0.375 + 1.25)   = 0.541667
    #  t=.40: Pmiss (1/2,1/2,1/2), Pfa sums (.75, 0, 1)   -> 1/3 (0.75 + 0.4375)  = 0.395833
    #  t=.60: Pmiss (1/2,1/2,1/2), Pfa sums (.75, 0, .75) -> 1/3 (0.75 + 0.375)   = 0.375
    #  t=.95: every trial rejected                        -> 1/3 (1.5)            = 0.5
    _, costs = metrics.cost_curve(LABELS, scores, thresholds=thresholds)
    assert costs == pytest.approx([13 / 24, 19 / 48, 0.375, 0.5], abs=1e-12)
    for t, c in zip(thresholds, costs, strict=True):
        assert metrics.cavg_at_threshold(LABELS, scores, t) == pytest.approx(c, abs=1e-12)
    # Over every threshold the minimum is the same here.
    assert metrics.min_cavg(LABELS, scores)[0] == pytest.approx(0.375, abs=1e-12)


def test_known_vector_prf_and_confusion():
    decisions = metrics.argmax_decisions(known_scores())
    cm = metrics.confusion(LABELS, decisions, 3)
    assert cm.tolist() == [[1, 0, 1, 0], [1, 2, 1, 0], [1, 0, 1, 0]]
    prf = metrics.per_language_prf(LABELS, decisions, 3)
    # decided 0: utts 1,4,7 (one right) -> P 1/3; decided 1: 2,3 -> P 1; decided 2: 0,5,6 -> 1/3
    assert prf["precision"] == pytest.approx([1 / 3, 1.0, 1 / 3])
    assert prf["recall"] == pytest.approx([0.5, 0.5, 0.5])
    assert prf["f1"] == pytest.approx([0.4, 2 / 3, 0.4])
    assert prf["support"].tolist() == [2, 4, 2]


def test_llr_matches_formula():
    rng = np.random.default_rng(3)
    post = rng.dirichlet(np.ones(4), size=20)
    llr = metrics.llr_from_logpost(np.log(post) + rng.normal(size=(20, 1)))  # row offset
    for u in range(20):
        for lang in range(4):
            others = [post[u, j] for j in range(4) if j != lang]
            expected = math.log(post[u, lang]) - math.log(sum(others) / 3)
            assert llr[u, lang] == pytest.approx(expected, abs=1e-10)


def test_llr_with_log_zero():
    llr = metrics.llr_from_logpost(known_scores())
    # row [.9, .2, 0]: llr_0 = log(.9 / mean(.2, 0)) = log 9; llr_1 = log(.2 / .45);
    # llr_2 = log 0 - ... = -inf
    assert llr[1, 0] == pytest.approx(math.log(9))
    assert llr[1, 1] == pytest.approx(math.log(.2 / .45))
    assert llr[1, 2] == -math.inf
    assert not np.isnan(llr).any()
    # two languages: llr_l = logpost_l - logpost_other
    two = metrics.llr_from_logpost(np.log([[.8, .2]]))
    assert two[0] == pytest.approx([math.log(4), -math.log(4)])


def test_nist_cavg_hand_computed():
    labels = np.array([0, 0, 1, 2])
    llr = np.array([[3.0, -1.0, 1.0],
                    [1.0, 0.5, -2.0],
                    [-1.0, 2.5, -3.0],
                    [2.5, -1.0, 0.2]])
    # P=0.5: Bayes threshold log(1) = 0 accepts llr >= 0. Pmiss = (0, 0, 0);
    # Pfa(0,2) = 1 (u3), Pfa(1,0) = 1/2 (u1), Pfa(2,0) = 1/2 (u0), others 0.
    # normalised Cavg = 1/3 sum_l [Pmiss + 1/2 sum_m Pfa] = 1/3 (0.5 + 0.25 + 0.25) = 1/3
    # P=0.1: threshold log 9 = 2.197, beta = 9. Accepted: (u0,l0), (u2,l1), (u3,l0).
    # Pmiss = (1/2, 0, 1); Pfa(0,2) = 1, others 0.
    # Cavg = 1/3 [(0.5 + 9/2 * 1) + 0 + 1] = 2
    # min over one threshold (target miss weight 1/(3 n_l), non-target weight beta/(6 n_m)):
    # P=0.5: best t = 0.2 -> misses 0, false alarms (u0,l2) 1/12 + (u1,l1) 1/12 + (u3,l0) 1/6
    #        = 1/3; P=0.1: best t = 3 -> misses (u1,l0) 1/6 + (u2,l1) 1/3 + (u3,l2) 1/3 = 5/6.
    r5 = metrics.nist_cavg(labels, llr, 0.5)
    r1 = metrics.nist_cavg(labels, llr, 0.1)
    assert r5["actual"] == pytest.approx(1 / 3)
    assert r1["actual"] == pytest.approx(2.0)
    assert r5["min"] == pytest.approx(1 / 3)
    assert r5["min_threshold"] == pytest.approx(0.2)
    assert r1["min"] == pytest.approx(5 / 6)
    assert r1["min_threshold"] == pytest.approx(3.0)
    logpost = np.log(np.full((4, 3), 1 / 3))  # decisions irrelevant here; llr given
    m = metrics.compute_metrics(logpost, labels, ["a", "b", "c"], llr=llr)
    assert m["nist"]["C_primary"]["actual"] == pytest.approx(7 / 6)
    assert m["nist"]["C_primary"]["min"] == pytest.approx(7 / 12)


def test_eer_hand_computed():
    # targets 4, 2, 0; non-targets 3, 1, -1, -2. Lowering the threshold through the sorted
    # scores gives (Pfa, Pmiss): (0,1) (0,2/3) (1/4,2/3) (1/4,1/3) (1/2,1/3) (1/2,0) ...
    # The curves cross between (1/4,1/3) and (1/2,1/3): Pmiss stays 1/3, Pfa reaches 1/3 at
    # a third of the way: EER = 1/4 + (1/3)(1/4) = 1/3.
    is_target = np.array([1, 0, 1, 0, 1, 0, 0], dtype=bool)
    scores = np.array([4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0])
    assert metrics.eer(is_target, scores) == pytest.approx(1 / 3)
    # Perfect separation -> 0; all targets below all non-targets -> 1.
    assert metrics.eer(np.array([1, 1, 0, 0], bool), np.array([2.0, 1, 0, -1])) == 0.0
    assert metrics.eer(np.array([0, 0, 1, 1], bool), np.array([2.0, 1, 0, -1])) == 1.0
    assert math.isnan(metrics.eer(np.array([1, 1], bool), np.array([0.0, 1.0])))
    # Pooled over the (utterance, language) trials of a 2-language matrix:
    # u0 (lang 0): T 4, N -1; u1 (lang 1): N 3, T 2; u2 (lang 0): T 1, N -2; u3: N 0, T -9.
    # Descending: 4T 3N 2T 1T 0N -1N -2N -9T -> (Pfa, Pmiss): (0,3/4) (1/4,3/4) (1/4,1/2)
    # (1/4,1/4): the rates meet exactly at that point, EER = 1/4.
    labels = np.array([0, 1, 0, 1])
    matrix = np.array([[4.0, -1.0], [3.0, 2.0], [1.0, -2.0], [0.0, -9.0]])
    assert metrics.pooled_eer(labels, matrix) == pytest.approx(0.25)


def test_cllr_hand_computed():
    # target llrs 0 and ln 3: log2(1 + 1) = 1 and log2(1 + 1/3) = log2(4/3);
    # non-target llrs -ln 3 and ln 3: log2(1 + 1/3) and log2(1 + 3) = 2.
    # Cllr = 1/2 [(1 + log2(4/3))/2 + (log2(4/3) + 2)/2] = 0.75 + 0.5 log2(4/3) = 0.957519
    is_target = np.array([1, 1, 0, 0], dtype=bool)
    llr = np.array([0.0, math.log(3), -math.log(3), math.log(3)])
    assert metrics.cllr(is_target, llr) == pytest.approx(0.75 + 0.5 * math.log2(4 / 3))
    assert metrics.cllr(is_target, np.zeros(4)) == pytest.approx(1.0)
    # multi-class: u0 (lang 0) p=.5 -> 1 bit; u1 (lang 1) p=.8 -> 0.321928; u2 (lang 1)
    # p=.5 -> 1 bit. Cllr_mc = 1/2 [1 + (0.321928 + 1)/2] = 0.830482
    labels = np.array([0, 1, 1])
    logpost = np.log([[.5, .5], [.2, .8], [.5, .5]])
    assert metrics.cllr_multiclass(labels, logpost) == pytest.approx(
        0.5 * (1 + (-math.log2(.8) + 1) / 2))
    # pooled binary Cllr from the 2-language llr (llr_l = logpost_l - logpost_other):
    # trials T 0, N 0, T ln4, N -ln4, T 0, N 0 -> T costs (1, log2(5/4), 1), N (1, log2 5/4, 1)
    expected = (2 + math.log2(1.25)) / 3
    assert metrics.pooled_cllr(labels, metrics.llr_from_logpost(logpost)) == pytest.approx(
        expected)
    # the true language with posterior 0 costs infinitely many bits
    assert metrics.cllr_multiclass(LABELS, known_scores()) == math.inf


def test_cost_curve_equals_brute_force():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, 60)
    scores = np.round(rng.normal(size=(60, 4)), 1)  # ties on purpose
    thr, costs = metrics.cost_curve(labels, scores, p_target=0.3, normalized=True)
    for t, c in zip(thr, costs, strict=True):
        assert c == pytest.approx(
            metrics.cavg_at_threshold(labels, scores, t, p_target=0.3, normalized=True))


def test_open_set_and_unscored():
    # 4 in-set utterances of 2 languages + 2 out-of-set (label -1); threshold 0.7.
    post = np.array([[.9, .1], [.6, .4], [.2, .8], [.3, .7], [.95, .05], [.5, .5]])
    labels = np.array([0, 0, 1, 1, -1, -1])
    m = metrics.compute_metrics(np.log(post), labels, ["a", "b"], unknown_threshold=0.7)
    # decisions: 0, unknown, 1, 1 (0.7 >= 0.7), 0 (OOS accepted), unknown (OOS rejected)
    o = m["open_set"]
    assert o["accuracy"] == pytest.approx(4 / 6)
    assert o["oos_false_accept"] == pytest.approx(0.5)
    assert o["inset_accuracy"] == pytest.approx(0.75)
    assert o["inset_unknown_rate"] == pytest.approx(0.25)
    # in-set Cavg: Pmiss(a) = 1/2, Pmiss(b) = 0, no false alarms -> 1/2 (0.5 * 0.5) = 0.125
    assert o["Cavg"] == pytest.approx(0.125)
    # closed-set figures use the in-set utterances and argmax decisions
    assert m["accuracy"] == 1.0
    assert m["num_in_set"] == 4
    # an unscored utterance is an error in decisions
    m2 = metrics.compute_metrics(np.log(post[:4]), labels[:4], ["a", "b"],
                                 scored=np.array([True, False, True, True]))
    assert m2["accuracy"] == 0.75
    assert m2["confusion"]["matrix"] == [[1, 0, 1], [0, 2, 0]]


def test_duration_buckets():
    assert [metrics.duration_bucket(d) for d in (0.5, 2.999, 3.0, 10.0, 10.01)] == [
        "<3s", "<3s", "3-10s", "3-10s", ">10s"]


def test_scores_roundtrip_and_errors(tmp_path):
    path = tmp_path / "scores.tsv"
    scores = known_scores()
    utts = [f"utt{i}" for i in range(8)]
    metrics.write_scores(path, utts, ["en", "fi", "sv"], scores)
    text = path.read_text().splitlines()
    assert text[0] == "utt\ten\tfi\tsv"
    assert text[2].split("\t")[3] == "-inf"
    u, langs, matrix = metrics.read_scores(path)
    assert u == utts and langs == ["en", "fi", "sv"]
    np.testing.assert_allclose(matrix, scores, atol=5e-7)
    bad = tmp_path / "bad.tsv"
    bad.write_text("utt\ten\tfi\nu1\t-0.1\n")
    with pytest.raises(LreError, match=r"bad.tsv:2: expected 3"):
        metrics.read_scores(bad)
    bad.write_text("utt\ten\tfi\nu1\t-0.1\tnan\n")
    with pytest.raises(LreError, match=r"bad.tsv:2: 'u1': NaN"):
        metrics.read_scores(bad)
    bad.write_text("id\ten\tfi\n")
    with pytest.raises(LreError, match="header"):
        metrics.read_scores(bad)
    bad.write_text("utt\ten\tfi\nu1\t0\t0\nu1\t0\t0\n")
    with pytest.raises(LreError, match="repeated"):
        metrics.read_scores(bad)
    with pytest.raises(LreError, match="NaN"):
        metrics.write_scores(bad, ["u"], ["a", "b"], np.array([[0.0, np.nan]]))
