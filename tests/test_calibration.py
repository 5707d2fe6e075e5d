"""Calibration: fitted maps improve Cllr on mis-scaled scores; JSON round trip; CLI."""

from __future__ import annotations

import json

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


def test_affine_recovers_scale_and_offsets():
    labels, raw, true_logpost, bias = synthetic_dev()
    calib = calibration.fit_calibration(raw, labels, LANGS, method="affine")
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


def test_logreg_not_worse_than_raw_and_pooled_cllr_improves():
    labels, raw, _, _ = synthetic_dev(seed=1)
    calib = calibration.fit_calibration(raw, labels, LANGS, method="logreg")
    assert calib["method"] == "logreg"
    assert np.asarray(calib["coef"]).shape == (4, 4)
    cal = calibration.apply_calibration(calib, raw)
    assert metrics.cllr_multiclass(labels, cal) <= metrics.cllr_multiclass(labels, raw)
    before = metrics.pooled_cllr(labels, metrics.llr_from_logpost(metrics.log_softmax(raw)))
    after = metrics.pooled_cllr(labels, metrics.llr_from_logpost(cal))
    assert after < before


def test_well_calibrated_scores_stay_put_and_two_languages():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 800)
    z = rng.normal(size=800) + np.where(labels == 1, 1.0, -1.0)  # llr of class 1 = 2 z
    raw = np.stack([np.zeros(800), 2 * z], axis=1)
    for method in calibration.METHODS:
        calib = calibration.fit_calibration(raw, labels, ["a", "b"], method=method)
        cal = calibration.apply_calibration(calib, raw)
        assert metrics.cllr_multiclass(labels, cal) <= metrics.cllr_multiclass(labels, raw)
    calib = calibration.fit_calibration(raw, labels, ["a", "b"], method="affine")
    assert calib["alpha"] == pytest.approx(1.0, abs=0.15)


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


def test_every_language_needs_dev_data():
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(LreError, match="no dev utterances of language.*fi sv"):
        calibration.fit_calibration(np.zeros((4, 4)), labels, LANGS)


def test_cli_calibrate(tmp_path, capsys):
    labels, raw, _, _ = synthetic_dev(n=300)
    utts = [f"u{i:04d}" for i in range(len(labels))]
    scores = tmp_path / "dev" / "scores_raw.tsv"
    metrics.write_scores(scores, utts, LANGS, metrics.log_softmax(raw))
    data = tmp_path / "data" / "dev"
    utt2lang = {u: LANGS[k] for u, k in zip(utts, labels, strict=True)}
    utt2lang["zz_extra"] = "en"  # labelled but not scored: ignored
    write_table(data / "utt2lang", utt2lang)
    out = tmp_path / "exp" / "calibration.json"
    rc = main(["calibrate", "--scores", str(scores), "--data", str(data), "--out", str(out)])
    assert rc == 0
    calib = json.loads(out.read_text())
    assert calib["format"] == "lre-calibration-1" and calib["langs"] == LANGS
    assert calib["dev"]["num_utts"] == 300
    assert calib["dev"]["Cllr_mc_calibrated"] < calib["dev"]["Cllr_mc_raw"]
    captured = capsys.readouterr()
    assert "Cllr_mc" in captured.err and not captured.out  # said once, in the log
    # a bad data dir is a one-line error
    rc = main(["calibrate", "--scores", str(scores), "--data", str(tmp_path / "nope"),
               "--out", str(out)])
    assert rc == 1
    assert "utt2lang: file not found" in capsys.readouterr().err
