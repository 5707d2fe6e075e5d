"""Calibration: fitted maps against known answers, the cross-validated choice that never
makes held-out scores worse, dev sets lacking languages, old files, the CLI."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from lre import calibration, metrics
from lre.cli import main
from lre.data.tables import write_table
from lre.utils import LreError

LANGS = ["de", "en", "fi", "sv"]


def synthetic_dev(n: int = 2000, seed: int = 0):
    """Scores whose true log-likelihoods are known.

    z ~ N(d * e_y, I) in N dims: log p(z | l) = d z_l + const, so the true log-posterior is
    log_softmax(d z). The "system" reports 4 d z + bias: over-confident and biased, so the
    ideal affine calibration is alpha = 1/4, beta = -bias/4 (up to a constant).
    """
    rng = np.random.default_rng(seed)
    d = 1.5
    labels = rng.integers(0, len(LANGS), n)
    z = rng.normal(size=(n, len(LANGS)))
    z[np.arange(n), labels] += d
    bias = np.array([2.0, 0.0, -1.0, 3.0])
    true_logpost = metrics.log_softmax(d * z)
    raw = 4 * d * z + bias
    return labels, raw, true_logpost, bias


def separable(n: int, seed: int, scale: float, d: float = 3.5):
    """Near-separable scores (98-100% right), balanced languages, no bias: the true
    log-posterior is d z, the system says ``scale`` times it."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(LANGS)
    z = rng.normal(size=(n, len(LANGS)))
    z[np.arange(n), labels] += d
    return labels, scale * d * z


def test_affine_recovers_scale_and_offsets():
    labels, raw, true_logpost, bias = synthetic_dev()
    calib = calibration.fit_calibration(raw, labels, LANGS, method="affine")
    assert calib["method"] == "affine" and calib["penalty"] in calibration.PENALTIES
    assert calib["alpha"] == pytest.approx(0.25, abs=0.02)
    expected_beta = -bias / 4 - np.mean(-bias / 4)
    np.testing.assert_allclose(calib["beta"], expected_beta, atol=0.12)
    dev = calib["dev"]
    cal = metrics.cllr_multiclass(labels, calibration.apply_calibration(calib, raw))
    assert cal == pytest.approx(dev["Cllr_mc_calibrated"])
    raw_cllr = metrics.cllr_multiclass(labels, raw)
    assert dev["Cllr_mc_raw"] == pytest.approx(raw_cllr)
    assert cal < raw_cllr - 0.3  # mis-scaled scores cost a lot
    # close to the cost of the true posteriors (the best any calibration can do)
    assert cal == pytest.approx(metrics.cllr_multiclass(labels, true_logpost), abs=0.02)


def test_affine_newton_fit_is_the_minimum_of_its_objective():
    """The penalised fit is a stationary point: its gradient (checked against finite
    differences) is zero there, and the penalty pulls alpha toward 1, beta toward 0."""
    labels, raw, _, _ = synthetic_dev(n=300, seed=4)
    x = calibration._prepare(raw, calibration.DEFAULT_SCORE_FLOOR)
    w, t = calibration._class_weights(labels, 4), calibration._targets(labels, 4)
    theta = np.array([0.7, 0.3, -0.2, 0.1, 0.5])
    loss, grad, hess = calibration._affine_objective(theta, x, t, w, 0.1)
    for i in range(5):
        e = np.zeros(5)
        e[i] = 1e-6
        up, down = (calibration._affine_objective(theta + s * e, x, t, w, 0.1) for s in (1, -1))
        assert (up[0] - down[0]) / 2e-6 == pytest.approx(grad[i], abs=1e-6)
        np.testing.assert_allclose((up[1] - down[1]) / 2e-6, hess[i], atol=1e-5)
    fits = [calibration._fit_affine(x, labels, p) for p in (0.001, 1.0, 100.0)]
    for (alpha, beta), p in zip(fits, (0.001, 1.0, 100.0), strict=True):
        opt = np.concatenate([[alpha], beta])
        assert np.abs(calibration._affine_objective(opt, x, t, w, p)[1]).max() < 1e-6
    alphas = [a for a, _ in fits]
    assert alphas[0] < alphas[1] < alphas[2] < 1.0 and alphas[2] > 0.95
    assert np.abs(fits[2][1]).max() < 0.05


@pytest.mark.parametrize("scale", [3.0, 0.05])
def test_near_separable_dev_picks_temperature_or_none_and_never_hurts(scale):
    """Over-confident (x3) and under-confident (x0.05) near-separable scores: the choice is
    temperature or none, its held-out dev Cllr is not above the raw scores', and on fresh
    scores of the same system calibration does not raise Cllr_mc either."""
    for seed in range(3):
        labels, raw = separable(120, seed, scale)
        calib = calibration.fit_calibration(raw, labels, LANGS, seed=seed)
        sel = calib["selection"]
        assert calib["method"] in ("none", "temperature"), sel
        assert sel["chosen"] == calib["method"] and sel["requested"] == "auto"
        assert set(sel["heldout_Cllr_mc"]) == {"none", "temperature", "affine"}
        cv = sel["heldout_Cllr_mc"]
        assert cv["none"] == pytest.approx(metrics.cllr_multiclass(labels, raw))
        assert cv[calib["method"]] <= cv["none"]
        test_labels, test_raw = separable(4000, 100 + seed, scale)
        raw_cllr = metrics.cllr_multiclass(test_labels, test_raw)
        cal_cllr = metrics.cllr_multiclass(
            test_labels, calibration.apply_calibration(calib, test_raw))
        assert cal_cllr <= raw_cllr + 1e-9
        if scale < 1:  # scores 20 times too timid: sharpening them is a large gain
            assert calib["method"] == "temperature" and cal_cllr < raw_cllr / 5
        # temperature keeps every decision
        np.testing.assert_array_equal(
            calibration.apply_calibration(calib, test_raw).argmax(1), test_raw.argmax(1))


def test_temperature_recovers_a_known_scale():
    labels, raw, true_logpost, _ = synthetic_dev(n=3000, seed=5)
    raw = 4 * true_logpost  # 4 times too confident, no bias
    calib = calibration.fit_calibration(raw, labels, LANGS, method="temperature")
    assert calib["temperature"] == pytest.approx(4.0, rel=0.1)
    out = calibration.apply_calibration(calib, raw)
    np.testing.assert_allclose(out, metrics.log_softmax(raw / calib["temperature"]),
                               atol=1e-12)


def test_choice_is_deterministic_for_the_seed():
    labels, raw, _, _ = synthetic_dev(n=200, seed=3)
    a = calibration.fit_calibration(raw, labels, LANGS, seed=7)
    b = calibration.fit_calibration(raw, labels, LANGS, seed=7)
    assert json.dumps(a) == json.dumps(b)
    c = calibration.fit_calibration(raw, labels, LANGS, seed=8)
    assert c["selection"]["heldout_Cllr_mc"] != a["selection"]["heldout_Cllr_mc"]
    # the folds: stratified by language, every fold about the same size
    folds = calibration.stratified_folds(labels, 5, seed=7)
    np.testing.assert_array_equal(folds, calibration.stratified_folds(labels, 5, seed=7))
    for lang in range(4):
        per_fold = np.bincount(folds[labels == lang], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1


def test_biased_scores_choose_affine_which_beats_raw_on_fresh_data():
    labels, raw, _, _ = synthetic_dev(n=400, seed=6)
    calib = calibration.fit_calibration(raw, labels, LANGS)
    cv = calib["selection"]["heldout_Cllr_mc"]
    assert calib["method"] == "affine", cv
    assert cv["affine"] < cv["temperature"] < cv["none"]
    assert set(calib["penalty_cv"]) == {f"{p:g}" for p in calibration.PENALTIES}
    test_labels, test_raw, _, _ = synthetic_dev(n=4000, seed=60)
    assert metrics.cllr_multiclass(test_labels, calibration.apply_calibration(calib, test_raw)) \
        < metrics.cllr_multiclass(test_labels, test_raw) - 0.5


def test_dev_lacking_languages_gets_temperature_or_none_and_one_warning(caplog):
    labels, raw = separable(60, 0, 0.05)
    keep = labels < 2  # only de and en in dev
    with caplog.at_level(logging.WARNING, logger="lre.calibration"):
        calib = calibration.fit_calibration(raw[keep], labels[keep], LANGS, method="affine")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "no dev utterances of fi, sv" in warnings[0] and "(asked for affine)" in warnings[0]
    assert calib["method"] == "temperature"  # timid scores: worth sharpening
    assert set(calib["selection"]["not_fitted"]) == {"affine", "logreg"}
    assert set(calib["selection"]["heldout_Cllr_mc"]) == {"none", "temperature"}
    # the absent languages still get calibrated posteriors (one scale for all)
    out = calibration.apply_calibration(calib, raw)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0)
    # too few even for a temperature: none
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lre.calibration"):
        calib = calibration.fit_calibration(raw[:3], labels[:3], LANGS)
    assert calib["method"] == "none"
    [warning] = [r.getMessage() for r in caplog.records]
    assert "too few to fit any calibration" in warning and "sv" in warning
    np.testing.assert_allclose(calibration.apply_calibration(calib, raw),
                               metrics.log_softmax(raw), atol=1e-12)


def test_well_calibrated_scores_stay_put_and_two_languages():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    z = rng.normal(size=400) + np.where(labels == 1, 1.0, -1.0)  # llr of class 1 = 2 z
    raw = np.stack([np.zeros(400), 2 * z], axis=1)
    for method in calibration.METHODS:
        calib = calibration.fit_calibration(raw, labels, ["a", "b"], method=method)
        cal = calibration.apply_calibration(calib, raw)
        assert metrics.cllr_multiclass(labels, cal) <= metrics.cllr_multiclass(labels, raw) + 1e-3
    assert calibration.fit_calibration(raw, labels, ["a", "b"])["method"] == "none"
    calib = calibration.fit_calibration(raw, labels, ["a", "b"], method="affine")
    assert calib["alpha"] == pytest.approx(1.0, abs=0.15)


def test_logreg_not_worse_than_raw_and_pooled_cllr_improves():
    labels, raw, _, _ = synthetic_dev(n=800, seed=1)
    calib = calibration.fit_calibration(raw, labels, LANGS, method="logreg")
    assert calib["method"] == "logreg"
    assert np.asarray(calib["coef"]).shape == (4, 4)
    cal = calibration.apply_calibration(calib, raw)
    assert metrics.cllr_multiclass(labels, cal) <= metrics.cllr_multiclass(labels, raw)
    before = metrics.pooled_cllr(labels, metrics.llr_from_logpost(metrics.log_softmax(raw)))
    after = metrics.pooled_cllr(labels, metrics.llr_from_logpost(cal))
    assert after < before


def test_save_load_apply_by_column_name(tmp_path):
    labels, raw, _, _ = synthetic_dev(n=400)
    calib = calibration.fit_calibration(raw, labels, LANGS)
    path = tmp_path / "calibration.json"
    calibration.save_calibration(path, calib)
    loaded = calibration.load_calibration(path)
    direct = calibration.apply_calibration(calib, raw)
    np.testing.assert_allclose(calibration.apply_calibration(path, raw), direct)
    perm = [2, 0, 3, 1]
    permuted = calibration.apply_calibration(loaded, raw[:, perm], [LANGS[i] for i in perm])
    np.testing.assert_allclose(permuted, direct[:, perm], atol=1e-12)
    # one row as a vector; -inf raw scores are floored, not NaN
    row = calibration.apply_calibration(loaded, np.array([0.0, -np.inf, -1.0, -2.0]))
    assert row.shape == (4,) and np.isfinite(row).all()
    np.testing.assert_allclose(np.exp(row).sum(), 1.0)
    with pytest.raises(LreError, match="do not match"):
        calibration.apply_calibration(loaded, raw[:, :3], LANGS[:3])
    path.write_text('{"format": "something"}')
    with pytest.raises(LreError, match="not an lre calibration"):
        calibration.load_calibration(path)
    path.write_text(json.dumps({"format": calibration.FORMAT, "method": "temperature",
                                "langs": LANGS, "temperature": -1}))
    with pytest.raises(LreError, match="temperature must be positive"):
        calibration.load_calibration(path)


def test_files_written_before_the_cross_validated_choice_still_apply(tmp_path):
    """The layout of earlier versions: affine without a penalty or selection, and logreg."""
    old = {"format": "lre-calibration-1", "method": "affine", "langs": ["en", "fi", "ru"],
           "score_floor": -50.0, "alpha": 2.0, "beta": [0.5, -0.25, -0.25],
           "dev": {"num_utts": 6, "Cllr_mc_raw": 1.57, "Cllr_mc_calibrated": 1.10}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(old))
    raw = np.log(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    expected = metrics.log_softmax(2.0 * raw + np.array([0.5, -0.25, -0.25]))
    np.testing.assert_allclose(calibration.apply_calibration(path, raw), expected, atol=1e-12)
    old_logreg = {"format": "lre-calibration-1", "method": "logreg", "langs": ["a", "b"],
                  "score_floor": -50.0, "C": 1.0, "coef": [[0, 0], [1.0, -1.0]],
                  "intercept": [0.0, 0.5], "fallback_from": None}
    path.write_text(json.dumps(old_logreg))
    x = np.log(np.array([[0.7, 0.3]]))
    logits = np.array([[0.0, x[0, 0] - x[0, 1] + 0.5]])
    np.testing.assert_allclose(calibration.apply_calibration(path, x),
                               metrics.log_softmax(logits), atol=1e-12)


def _dev_dir(tmp_path, labels, raw, langs=LANGS):
    utts = [f"u{i:04d}" for i in range(len(labels))]
    scores = tmp_path / "dev" / "scores_raw.tsv"
    metrics.write_scores(scores, utts, langs, metrics.log_softmax(raw))
    data = tmp_path / "data" / "dev"
    utt2lang = {u: langs[k] for u, k in zip(utts, labels, strict=True)}
    utt2lang["zz_extra"] = "en"  # labelled but not scored: ignored
    write_table(data / "utt2lang", utt2lang)
    return scores, data


def test_cli_calibrate(tmp_path, capsys):
    labels, raw, _, _ = synthetic_dev(n=300)
    scores, data = _dev_dir(tmp_path, labels, raw)
    out = tmp_path / "exp" / "calibration.json"
    rc = main(["calibrate", "--scores", str(scores), "--data", str(data), "--out", str(out),
               "--seed", "3", "--folds", "4"])
    assert rc == 0
    calib = json.loads(out.read_text())
    assert calib["format"] == "lre-calibration-1" and calib["langs"] == LANGS
    assert calib["dev"]["num_utts"] == 300
    assert calib["dev"]["Cllr_mc_calibrated"] < calib["dev"]["Cllr_mc_raw"]
    sel = calib["selection"]
    assert sel["seed"] == 3 and sel["folds"] == 4 and sel["chosen"] == calib["method"]
    captured = capsys.readouterr()
    assert "held-out Cllr_mc" in captured.err and not captured.out  # said once, in the log
    # a bad data dir is a one-line error
    rc = main(["calibrate", "--scores", str(scores), "--data", str(tmp_path / "nope"),
               "--out", str(out)])
    assert rc == 1
    assert "utt2lang: file not found" in capsys.readouterr().err


def test_cli_calibrate_on_a_dev_set_without_some_languages(tmp_path, capsys):
    """What stopped stage 3 before: dev has no fi or sv utterance. Now: a calibration that
    can be fitted, and one warning naming them."""
    labels, raw = separable(40, 1, 0.05)
    keep = labels < 2
    scores, data = _dev_dir(tmp_path, labels[keep], raw[keep])
    out = tmp_path / "calibration.json"
    rc = main(["calibrate", "--scores", str(scores), "--data", str(data), "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "no dev utterances of fi, sv" in err
    calib = json.loads(out.read_text())
    assert calib["method"] in ("none", "temperature")
    assert math.isfinite(calib["selection"]["heldout_Cllr_mc"]["none"])


def test_a_gain_within_one_standard_error_keeps_the_raw_scores():
    """labels 0 0 1 1; per-utterance costs a = (1, 2, 1, 1), b = (0, 0, 0, 2) bits: the
    differences (1, 2) and (1, -1) have variances 0.5 and 2 within their languages, so the
    standard error of the Cllr difference is sqrt(0.5/2 + 2/2) / 2 = 0.559."""
    labels = np.array([0, 0, 1, 1])
    se = calibration._difference_se(labels, np.array([1.0, 2, 1, 1]), np.array([0.0, 0, 0, 2]))
    assert se == pytest.approx(math.sqrt(1.25) / 2)

    labels = np.array([0, 0, 0, 1, 1, 1])

    def heldout(p_true: list[float]) -> np.ndarray:
        """Two-language log-posteriors giving the true language ``p_true``."""
        p = np.array(p_true)
        out = np.log(np.stack([p, 1 - p], axis=1))
        out[labels == 1] = out[labels == 1][:, ::-1]
        return out

    # A gain on one utterance, small losses on the others: lower held-out Cllr on
    # average, but by less than its standard error; the raw scores are kept.
    none = heldout([0.5] * 6)
    lucky = heldout([0.48] * 5 + [0.9])
    chosen, cv, se = calibration._choose(labels, {"none": none, "temperature": lucky}, 1e-3)
    gain = cv["none"] - cv["temperature"]
    assert 0.05 < gain < se["none"]
    assert chosen == "none"
    # the same gain on every utterance is taken
    steady = heldout([0.6] * 6)
    chosen, cv, se = calibration._choose(labels, {"none": none, "temperature": steady}, 1e-3)
    assert se["none"] == pytest.approx(0.0, abs=1e-12) and chosen == "temperature"
