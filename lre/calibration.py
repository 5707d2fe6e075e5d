"""Multi-class score calibration fitted on dev scores (``lre calibrate``).

Raw scores ``s (langs,)`` of one utterance (log-posteriors or any log-domain scores) are first
renormalised (log-softmax) and floored at ``score_floor`` (so that a log 0 does not make a
fit infinite): ``x``. The methods map ``x`` to calibrated log-posteriors under flat priors:

- ``none``: the scores as they are (renormalised).
- ``temperature``: ``log_softmax(x / T)``, one temperature ``T > 0``; it changes how sure
  the scores are, never which language is on top.
- ``affine`` (the FoCal / BOSARIS multi-class calibration, with a prior):
  ``log_softmax(alpha * x + beta)`` with one scale and one offset per language, fitted with
  an L2 penalty ``lambda ((alpha - 1)^2 + |beta|^2)`` that pulls it toward the identity;
  ``lambda`` is chosen by cross-validation on dev (:data:`PENALTIES`).
- ``logreg``: scikit-learn ``LogisticRegression`` (multinomial, L2, balanced classes) on
  ``x``: ``log_softmax(W x + b)``; it can undo confusions but wants much more dev data.

Each fit minimises the multi-class Cllr (cross-entropy with every dev language weighted
equally, i.e. flat priors) against Platt's smoothed targets (:func:`_targets`). ``auto``
(the default) estimates each candidate's multi-class Cllr on held-out dev scores by k-fold
cross-validation (stratified by language, the folds drawn from ``seed``) and takes the
simplest candidate within one standard error of the best (the standard error of the paired
difference on the same utterances, at least ``tolerance``): ``none`` is kept unless a
method lowers held-out Cllr by more than chance would, so a calibration is never worse
than the raw scores on held-out dev data, and a gain seen on a few dev utterances only is
not taken.

A method that cannot be fitted is not tried, and one warning says why: ``affine`` and
``logreg`` need at least :data:`MIN_PER_LANG` dev utterances of every language of the model
(an offset is not learned from nothing), ``temperature`` needs dev utterances of two
languages. A dev set lacking some of the model's languages therefore gets ``temperature``
or ``none``.

The calibration is stored as JSON (``format: lre-calibration-1``) beside the model with
every candidate's held-out Cllr and the choice, and applied by :func:`apply_calibration` at
scoring and identify time (files written before ``none``/``temperature`` existed still load).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax as _log_softmax

from lre.metrics import cllr_multiclass, log_softmax, read_scores
from lre.utils import LreError, atomic_write_text

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

FORMAT = "lre-calibration-1"
#: Methods a calibration file can hold, simplest first (``auto`` picks among the first three).
FITTED = ("none", "temperature", "affine", "logreg")
AUTO_CANDIDATES = ("none", "temperature", "affine")
METHODS = ("auto", *FITTED)
DEFAULT_SCORE_FLOOR = -50.0
DEFAULT_FOLDS = 5
#: The least held-out Cllr_mc (bits) a more complex method must gain over a simpler one to
#: be chosen (the standard error of that gain, when larger, is the bar).
DEFAULT_TOLERANCE = 1e-3
#: Penalty strengths of ``affine`` tried by cross-validation (the loss is a mean, in nats).
PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Dev utterances every language of the model needs for ``affine`` / ``logreg``.
MIN_PER_LANG = 5
#: Folds of the inner cross-validation that chooses the affine penalty.
INNER_FOLDS = 3
#: Bounds of the temperature (a scale of 0.01-100 on the log-posteriors).
_LOG_T_BOUND = math.log(100.0)


# ----------------------------------------------------------------------------------------
# fits
# ----------------------------------------------------------------------------------------


def _prepare(scores: np.ndarray, floor: float) -> np.ndarray:
    """Raw scores ``(utts, langs)`` -> renormalised log-posteriors floored at ``floor``."""
    return np.maximum(log_softmax(scores), floor)


def _class_weights(labels: np.ndarray, num_langs: int) -> np.ndarray:
    """Per-utterance weights 1 / (N_present * n_label): every language counts equally."""
    counts = np.bincount(labels, minlength=num_langs).astype(np.float64)
    present = int((counts > 0).sum())
    return 1.0 / (present * counts[labels])


def _targets(labels: np.ndarray, num_langs: int) -> np.ndarray:
    """Target posteriors ``(utts, langs)``: ``1 - e`` for the true language, ``e / (N - 1)``
    for each other, ``e = 1 / (utts + 2)``: Platt's (1999) smoothed targets. After ``n``
    right answers and no error the odds of the next are ``n + 1`` to 1, not certainty, so a
    dev set without errors cannot push the calibration to infinite confidence; with much dev
    data the targets are the labels."""
    eps = 1.0 / (len(labels) + 2.0)
    t = np.full((len(labels), num_langs), eps / max(num_langs - 1, 1))
    t[np.arange(len(labels)), labels] = 1.0 - eps
    return t


def _weighted_ce(logits: np.ndarray, targets: np.ndarray, w: np.ndarray) -> float:
    """Class-weighted cross-entropy (nats) of ``logits (utts, langs)`` against ``targets``."""
    return -float(np.sum(w[:, None] * targets * _log_softmax(logits, axis=1)))


def _fit_temperature(x: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` minimising the weighted cross-entropy of ``x / T``."""
    w, t = _class_weights(labels, x.shape[1]), _targets(labels, x.shape[1])
    res = minimize_scalar(lambda log_t: _weighted_ce(x * math.exp(-log_t), t, w),
                          bounds=(-_LOG_T_BOUND, _LOG_T_BOUND), method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


def linear_objective(theta: np.ndarray, xs: np.ndarray, t: np.ndarray, w: np.ndarray,
                     penalty: float, prior: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, gradient and Hessian of the penalised linear score map at
    ``theta = (alpha_1..alpha_S, beta)``: logits ``z = sum_s alpha_s xs[s] + beta`` of
    ``xs (S, utts, langs)`` (one score table per system; ``S = 1`` is the affine
    calibration), penalty ``lambda (|alpha - prior|^2 + |beta|^2)``.

    With ``p = softmax(z)``, the loss of utterance u has gradient ``w_u (p_u - t_u)`` and
    Hessian ``w_u (diag p_u - p_u p_u^T)`` in ``z``; the chain rule (``dz/dalpha_s =
    xs[s]_u``, ``dz/dbeta = I``) gives those in ``theta``.
    """
    num = len(xs)
    alpha, beta = theta[:num], theta[num:]
    logp = _log_softmax(np.tensordot(alpha, xs, axes=1) + beta, axis=1)
    p = np.exp(logp)
    loss = -float(np.sum(w[:, None] * t * logp))
    loss += penalty * (float((alpha - prior) @ (alpha - prior)) + float(beta @ beta))
    gz = w[:, None] * (p - t)
    grad = np.concatenate([np.einsum("ul,sul->s", gz, xs) + 2.0 * penalty * (alpha - prior),
                           gz.sum(axis=0) + 2.0 * penalty * beta])
    px = np.einsum("ul,sul->su", p, xs)  # (S, utts): p-weighted mean of each system's x
    wp = w[:, None] * p
    h_aa = np.einsum("ul,sul,rul->sr", wp, xs, xs) - np.einsum("u,su,ru->sr", w, px, px)
    h_ab = np.einsum("ul,sul->sl", wp, xs) - np.einsum("ul,su->sl", wp, px)
    h_bb = np.diag(wp.sum(axis=0)) - p.T @ wp
    hess = np.block([[h_aa, h_ab], [h_ab.T, h_bb]])
    hess += 2.0 * penalty * np.eye(len(theta))
    return loss, grad, hess


def fit_linear(xs: np.ndarray, labels: np.ndarray, penalty: float,
               prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``alpha (S,), beta (langs,)`` minimising the weighted cross-entropy of
    ``sum_s alpha_s xs[s] + beta`` plus the L2 pull toward ``(prior, 0)``
    (:func:`linear_objective`), by Newton's method (the penalised loss is strictly convex)
    with a backtracking line search; every ``alpha_s`` is kept >= 0, as a negative scale
    would turn a system's ranking upside down."""
    num, n = len(xs), xs.shape[2]
    w, t = _class_weights(labels, n), _targets(labels, n)
    theta = np.concatenate([np.asarray(prior, dtype=np.float64), np.zeros(n)])
    loss, grad, hess = linear_objective(theta, xs, t, w, penalty, prior)
    for _ in range(100):
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while True:
            cand = theta - size * step
            cand[:num] = np.maximum(cand[:num], 0.0)
            new = linear_objective(cand, xs, t, w, penalty, prior)
            if new[0] <= loss + 1e-12 or size < 1e-10:
                break
            size /= 2.0
        converged = loss - new[0] < 1e-12 * max(1.0, abs(loss))
        theta, (loss, grad, hess) = cand, new
        if converged:
            break
    if not np.isfinite(loss):
        raise LreError("calibration: the linear fit did not converge")
    beta = theta[num:]
    return theta[:num].copy(), beta - beta.mean()  # offsets are defined up to a constant


def _affine_objective(theta: np.ndarray, x: np.ndarray, t: np.ndarray, w: np.ndarray,
                      penalty: float) -> tuple[float, np.ndarray, np.ndarray]:
    """:func:`linear_objective` of one system pulled toward the identity (``alpha = 1``)."""
    return linear_objective(theta, x[None], t, w, penalty, np.ones(1))


def _fit_affine(x: np.ndarray, labels: np.ndarray, penalty: float) -> tuple[float, np.ndarray]:
    """``alpha, beta (langs,)`` of the affine calibration: :func:`fit_linear` of one
    system with the identity prior."""
    alpha, beta = fit_linear(x[None], labels, penalty, np.ones(1))
    return float(alpha[0]), beta


def _fit_logreg(x: np.ndarray, labels: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Fit a multinomial LogisticRegression -> ``(coef (langs, langs), intercept (langs,))``."""
    from sklearn.linear_model import LogisticRegression

    n = x.shape[1]
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, labels)
    coef = np.zeros((n, n))
    intercept = np.zeros(n)
    classes = np.asarray(model.classes_)
    if len(classes) == 2:  # sklearn stores the logit of the second class only
        coef[classes[1]], intercept[classes[1]] = model.coef_[0], model.intercept_[0]
    else:
        coef[classes], intercept[classes] = model.coef_, model.intercept_
    return coef, intercept


def _logits(params: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """The calibrated logits of prepared scores ``x (utts, langs)``."""
    method = params["method"]
    if method == "temperature":
        return x / float(params["temperature"])
    if method == "affine":
        return float(params["alpha"]) * x + np.asarray(params["beta"], dtype=np.float64)
    if method == "logreg":
        coef = np.asarray(params["coef"], dtype=np.float64)
        return x @ coef.T + np.asarray(params["intercept"], dtype=np.float64)
    raise LreError(f"calibration: unknown method '{method}'")


# ----------------------------------------------------------------------------------------
# cross-validation
# ----------------------------------------------------------------------------------------


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index ``(utts,)`` in ``[0, folds)``: each language's utterances shuffled (from
    ``seed``) and dealt round the folds, continuing where the previous language stopped,
    so that every fold holds about the same share of each language and of the whole."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    start = 0
    for lang in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == lang))
        out[rows] = (start + np.arange(len(rows))) % folds
        start += len(rows)
    return out


def _heldout(method: str, x: np.ndarray, labels: np.ndarray, folds: int, seed: int,
             **options: Any) -> np.ndarray:
    """Held-out calibrated log-posteriors ``(utts, langs)``: each fold calibrated by
    ``method`` fitted on the other folds (:func:`_fit_params` with ``options``)."""
    fold = stratified_folds(labels, folds, seed)
    heldout = np.empty_like(x)
    for k in range(folds):
        test = fold == k
        if test.any():
            params = _fit_params(method, x[~test], labels[~test], seed, **options)
            heldout[test] = _apply_prepared(params, x[test])
    return heldout


def _heldout_cllr(method: str, x: np.ndarray, labels: np.ndarray, folds: int, seed: int,
                  **options: Any) -> float:
    return cllr_multiclass(labels, _heldout(method, x, labels, folds, seed, **options))


def _difference_se(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Standard error (bits) of the difference of two multi-class Cllrs computed on the
    same utterances, from their per-utterance costs ``a, b (utts,)``: Cllr_mc is a mean
    over languages of means over their utterances, so the variance of the difference is
    ``sum_l var_l(a - b) / (N^2 n_l)``."""
    d = np.asarray(a) - np.asarray(b)
    if not np.isfinite(d).all():
        return math.inf
    langs = np.unique(labels)
    var = 0.0
    for lang in langs:
        dl = d[labels == lang]
        if len(dl) > 1:
            var += float(np.var(dl, ddof=1)) / len(dl)
    return math.sqrt(var) / len(langs)


def _apply_prepared(params: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    if params["method"] == "none":
        return log_softmax(x)
    return _log_softmax(_logits(params, x), axis=1)


def _fit_affine_cv(x: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    """Affine map with the penalty of lowest inner cross-validated Cllr (ties: the stronger
    penalty, closer to the identity), refitted on all of ``x``."""
    cv = {p: _heldout_cllr("affine", x, labels, INNER_FOLDS, seed, penalty=p)
          for p in PENALTIES}
    best = min(cv, key=lambda p: (cv[p], -p))
    return {**_fit_params("affine", x, labels, seed, penalty=best),
            "penalty_cv": {f"{p:g}": cv[p] for p in PENALTIES}}


def _fit_params(method: str, x: np.ndarray, labels: np.ndarray, seed: int, c: float = 1.0,
                penalty: float | None = None) -> dict[str, Any]:
    """Fit ``method`` on prepared scores ``x`` -> its parameters (``affine`` without a
    ``penalty`` chooses one by cross-validation)."""
    if method == "none":
        return {"method": "none"}
    if method == "temperature":
        return {"method": "temperature", "temperature": _fit_temperature(x, labels)}
    if method == "affine":
        if penalty is None:
            return _fit_affine_cv(x, labels, seed)
        alpha, beta = _fit_affine(x, labels, penalty)
        return {"method": "affine", "alpha": alpha, "beta": beta.tolist(), "penalty": penalty}
    if method == "logreg":
        coef, intercept = _fit_logreg(x, labels, c)
        return {"method": "logreg", "C": c, "coef": coef.tolist(),
                "intercept": intercept.tolist()}
    raise LreError(f"calibration: unknown method '{method}' (choose from {', '.join(METHODS)})")


# ----------------------------------------------------------------------------------------
# choosing and fitting
# ----------------------------------------------------------------------------------------


def _unfittable(langs: Sequence[str], counts: np.ndarray) -> tuple[dict[str, str], str | None]:
    """Methods that cannot be fitted on dev data with these per-language ``counts``, with
    the reason, and the one warning line saying so (None when every method fits)."""
    absent = [lang for lang, k in zip(langs, counts, strict=True) if k == 0]
    few = [f"{lang} ({k})" for lang, k in zip(langs, counts, strict=True) if 0 < k < MIN_PER_LANG]
    parts = []
    if absent:
        parts.append(f"no dev utterances of {', '.join(absent)}")
    if few:
        parts.append(f"fewer than {MIN_PER_LANG} of {', '.join(few)}")
    if not parts:
        return {}, None
    why = "; ".join(parts)
    out = {"affine": why, "logreg": why}
    if int((counts > 0).sum()) < 2 or int(counts.sum()) < 4:
        out["temperature"] = f"{why}; too little to fit even a temperature"
        return out, f"calibration: {why}: too few to fit any calibration; using none"
    return out, f"calibration: {why}: choosing between none and temperature only"


def _choose(labels: np.ndarray, heldout: Mapping[str, np.ndarray],
            tolerance: float) -> tuple[str, dict[str, float], dict[str, float]]:
    """The simplest candidate whose held-out Cllr_mc is within one standard error (of the
    paired difference, at least ``tolerance``) of the best one's: ``none`` (the raw
    scores) unless another method lowers held-out Cllr by more than chance would.

    Returns the choice, every candidate's held-out Cllr_mc and its standard error against
    the best."""
    cv = {m: cllr_multiclass(labels, lp) for m, lp in heldout.items()}
    finite = [m for m in cv if math.isfinite(cv[m])]
    if not finite:
        return "none", cv, {}
    best = min(finite, key=lambda m: cv[m])
    rows = np.arange(len(labels))
    costs = {m: -lp[rows, labels] / math.log(2.0) for m, lp in heldout.items()}
    se = {m: _difference_se(labels, costs[m], costs[best]) for m in finite}
    chosen = next(m for m in FITTED
                  if m in finite and cv[m] <= cv[best] + max(tolerance, se[m]))
    return chosen, cv, se


def fit_calibration(
    scores: np.ndarray,
    labels: np.ndarray,
    langs: Sequence[str],
    method: str = "auto",
    score_floor: float = DEFAULT_SCORE_FLOOR,
    c: float = 1.0,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Fit a calibration on dev scores ``(utts, langs)`` with language indices ``labels``.

    ``method="auto"`` chooses among :data:`AUTO_CANDIDATES` by ``folds``-fold cross-validation
    (module doc); a named method is fitted as asked when the dev data allow it, else ``auto``
    chooses among the methods that can be fitted (one warning). Returns the JSON-ready
    calibration dict (see :func:`apply_calibration`), with ``selection`` (every candidate's
    held-out Cllr_mc and the choice) and ``dev`` (Cllr_mc of the raw and calibrated dev scores).
    """
    if method not in METHODS:
        raise LreError(f"calibration: unknown method '{method}' (choose from {', '.join(METHODS)})")
    if folds < 2:
        raise LreError(f"calibration: --folds must be at least 2, got {folds}")
    langs = list(langs)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[1] != len(langs) or len(labels) != scores.shape[0]:
        raise LreError(f"calibration: scores {scores.shape} do not match {len(labels)} labels "
                       f"x {len(langs)} languages")
    counts = np.bincount(labels, minlength=len(langs))
    skipped, warning = _unfittable(langs, counts)
    asked = method if method != "auto" and method not in skipped else None
    if warning and asked is None:
        log.warning("%s%s", warning, f" (asked for {method})" if method in skipped else "")
    x = _prepare(scores, score_floor)
    folds = min(folds, len(labels))
    candidates = [m for m in AUTO_CANDIDATES if m not in skipped] if asked is None \
        else list(dict.fromkeys(["none", asked]))
    heldout = {m: _heldout(m, x, labels, folds, seed, c=c) for m in candidates}
    chosen, cv, se = _choose(labels, heldout, tolerance)
    chosen = chosen if asked is None else asked
    if asked is not None and cv[asked] > cv["none"]:
        log.warning("calibration: %s raises the held-out dev Cllr_mc from %.4f to %.4f "
                    "bits; fitted as asked", asked, cv["none"], cv[asked])
    params = _fit_params(chosen, x, labels, seed, c=c)
    calib: dict[str, Any] = {"format": FORMAT, **params, "langs": langs,
                             "score_floor": score_floor}
    calib["selection"] = {
        "requested": method, "folds": folds, "seed": seed, "tolerance": tolerance,
        "heldout_Cllr_mc": cv, "standard_error": se, "not_fitted": dict(skipped),
        "chosen": chosen,
    }
    calib["dev"] = {"num_utts": int(len(labels)), "Cllr_mc_raw": cllr_multiclass(labels, scores),
                    "Cllr_mc_calibrated": cllr_multiclass(labels,
                                                          apply_calibration(calib, scores))}
    return calib


# ----------------------------------------------------------------------------------------
# applying, files
# ----------------------------------------------------------------------------------------


def apply_calibration(
    calib: Mapping[str, Any] | PathLike,
    scores: np.ndarray,
    langs: Sequence[str] | None = None,
) -> np.ndarray:
    """Calibrated log-posteriors ``(utts, langs)`` from raw scores ``(utts, langs)``.

    ``calib`` is a calibration dict or the path of its JSON file. When ``langs`` (the score
    columns) is given, columns are matched by name and the result keeps that column order.
    """
    if not isinstance(calib, Mapping):
        calib = load_calibration(calib)
    scores = np.asarray(scores, dtype=np.float64)
    single = scores.ndim == 1
    if single:
        scores = scores[None, :]
    cal_langs = list(calib["langs"])
    if langs is not None:
        langs = list(langs)
        if sorted(langs) != sorted(cal_langs):
            raise LreError(f"calibration: languages {' '.join(cal_langs)} do not match the "
                           f"scores' {' '.join(langs)}")
        order = [langs.index(lang) for lang in cal_langs]
        scores = scores[:, order]
    elif scores.shape[1] != len(cal_langs):
        raise LreError(f"calibration: {len(cal_langs)} languages, scores have "
                       f"{scores.shape[1]} columns")
    if calib["method"] == "none":
        out = log_softmax(scores)
    else:
        x = _prepare(scores, float(calib.get("score_floor", DEFAULT_SCORE_FLOOR)))
        out = _log_softmax(_logits(calib, x), axis=1)
    if langs is not None:
        out = out[:, [cal_langs.index(lang) for lang in langs]]
    return out[0] if single else out


def save_calibration(path: PathLike, calib: Mapping[str, Any]) -> None:
    """Write a calibration dict as JSON, atomically."""
    atomic_write_text(path, json.dumps(calib, indent=2) + "\n")


#: The fields each stored method needs besides ``langs``.
_NEEDS = {"none": (), "temperature": ("temperature",), "affine": ("alpha", "beta"),
          "logreg": ("coef", "intercept")}


def load_calibration(path: PathLike) -> dict[str, Any]:
    """Read and check a calibration JSON file (any version this module has written)."""
    try:
        with open(path, encoding="utf-8") as f:
            calib = json.load(f)
    except FileNotFoundError:
        raise LreError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise LreError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(calib, dict) or calib.get("format") != FORMAT:
        raise LreError(f"{path}: not an lre calibration file (format != {FORMAT})")
    need = _NEEDS.get(calib.get("method"))
    if need is None:
        raise LreError(f"{path}: unknown calibration method {calib.get('method')!r}")
    missing = [k for k in ("langs", *need) if k not in calib]
    if missing:
        raise LreError(f"{path}: missing field(s) {', '.join(missing)}")
    if calib["method"] == "temperature" and not float(calib["temperature"]) > 0:
        raise LreError(f"{path}: temperature must be positive, got {calib['temperature']}")
    return calib


def _dev_labels(scores_path: PathLike, data_dir: PathLike, utts: list[str],
                langs: list[str]) -> tuple[list[int], list[int]]:
    """Rows of the score table with a known language, and those languages' indices.

    Utterances without a label, and labels outside the score table's languages, are skipped
    (counted in the log)."""
    from lre.data.tables import read_table

    utt2lang = read_table(os.path.join(os.fspath(data_dir), "utt2lang"))
    lang_index = {lang: i for i, lang in enumerate(langs)}
    keep, labels, unlabelled, out_of_set = [], [], [], []
    for row, utt in enumerate(utts):
        lang = utt2lang.get(utt)
        if lang is None:
            unlabelled.append(utt)
        elif lang not in lang_index:
            out_of_set.append(utt)
        else:
            keep.append(row)
            labels.append(lang_index[lang])
    if unlabelled:
        log.warning("%s: %d scored utterances have no utt2lang entry, skipped (e.g. %s)",
                    scores_path, len(unlabelled), unlabelled[0])
    if out_of_set:
        log.warning("%s: %d utterances of languages the model does not know, skipped (e.g. %s)",
                    scores_path, len(out_of_set), out_of_set[0])
    if not keep:
        raise LreError(f"{scores_path}: no scored utterance has a known language in {data_dir}")
    return keep, labels


def calibrate(
    scores_path: PathLike,
    data_dir: PathLike,
    out: PathLike,
    method: str = "auto",
    c: float = 1.0,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a calibration on a dev score table and the dev data dir's ``utt2lang``; save it.

    Returns the calibration dict written to ``out``.
    """
    utts, langs, scores = read_scores(scores_path)
    keep, labels = _dev_labels(scores_path, data_dir, utts, langs)
    calib = fit_calibration(scores[keep], np.asarray(labels), langs, method=method, c=c,
                            folds=folds, seed=seed)
    calib["fit_on"] = {"scores": os.fspath(scores_path), "data": os.fspath(data_dir)}
    save_calibration(out, calib)
    sel, dev = calib["selection"], calib["dev"]
    cv = ", ".join(f"{m} {v:.4f}" for m, v in sel["heldout_Cllr_mc"].items())
    log.info("calibration: %s (asked: %s) on %d dev utterances; held-out Cllr_mc by %d-fold "
             "cross-validation: %s bits; dev Cllr_mc %.4f -> %.4f; wrote %s", calib["method"],
             method, dev["num_utts"], sel["folds"], cv, dev["Cllr_mc_raw"],
             dev["Cllr_mc_calibrated"], out)
    return calib


def cli_calibrate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores", required=True,
                        help="dev score table (scores_raw.tsv: raw log-posteriors)")
    parser.add_argument("--data", required=True, help="dev data dir (its utt2lang)")
    parser.add_argument("--out", required=True, help="calibration JSON to write")
    parser.add_argument("--method", choices=METHODS, default="auto",
                        help="auto (default): none, temperature or affine by the held-out "
                             "Cllr of cross-validation on dev (none unless another lowers it "
                             "by more than its standard error); none; temperature: one "
                             "scale; affine: scale and "
                             "per-language offsets with a prior toward the identity; logreg: "
                             "full multinomial logistic regression (scikit-learn)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                        help=f"cross-validation folds, stratified by language (default "
                             f"{DEFAULT_FOLDS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    parser.add_argument("--C", dest="c", type=float, default=1.0,
                        help="inverse L2 strength for --method logreg (default 1.0)")


def cli_calibrate(args: argparse.Namespace) -> int:
    calibrate(args.scores, args.data, args.out, method=args.method, c=args.c,  # logs a summary
              folds=args.folds, seed=args.seed)
    return 0
