"""Multi-class score calibration fitted on dev scores (``lre calibrate``).

Two forms of multi-class logistic regression map raw scores ``s (langs,)`` (log-posteriors
or any log-domain scores) of one utterance to calibrated log-posteriors under flat priors:

- ``affine`` (default; the FoCal / BOSARIS multi-class calibration):
  ``logpost = log_softmax(alpha * s + beta)`` with one scale ``alpha`` and one offset per
  language ``beta_l``: N + 1 parameters, so a few dev utterances per language suffice. Fitted
  by L-BFGS (scipy) on the prior-weighted cross-entropy below.
- ``logreg``: scikit-learn ``LogisticRegression`` (multinomial, L2, ``class_weight=
  "balanced"``) on the score vector: ``logpost = log_softmax(W s + b)``, N^2 + N parameters;
  it can also undo systematic confusions between languages but wants more dev data.

Both minimise the multi-class Cllr (cross-entropy with every language weighted equally,
i.e. flat priors) on the dev set. Raw rows are first renormalised (log-softmax) and floored
at ``score_floor`` so that a log 0 does not make the fit infinite. If the fitted map would be
worse than the raw scores on dev (possible for ``logreg`` because of its regularisation),
the identity is kept and a warning says so.

The calibration is stored as JSON (``format: lre-calibration-1``) beside the model and
applied by :func:`apply_calibration` at scoring and identify time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax as _log_softmax

from lre.metrics import cllr_multiclass, log_softmax, read_scores
from lre.utils import LreError, atomic_write_text

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

FORMAT = "lre-calibration-1"
METHODS = ("affine", "logreg")
DEFAULT_SCORE_FLOOR = -50.0


def _prepare(scores: np.ndarray, floor: float) -> np.ndarray:
    """Raw scores ``(utts, langs)`` -> renormalised log-posteriors floored at ``floor``."""
    return np.maximum(log_softmax(scores), floor)


def _class_weights(labels: np.ndarray, num_langs: int) -> np.ndarray:
    """Per-utterance weights 1 / (N_present * n_label): every language counts equally."""
    counts = np.bincount(labels, minlength=num_langs).astype(np.float64)
    present = int((counts > 0).sum())
    return 1.0 / (present * counts[labels])


def _fit_affine(x: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Fit ``alpha, beta (langs,)`` minimising the weighted cross-entropy (nats)."""
    u, n = x.shape
    w = _class_weights(labels, n)
    rows = np.arange(u)
    onehot = np.zeros((u, n))
    onehot[rows, labels] = 1.0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        alpha, beta = theta[0], theta[1:]
        logp = _log_softmax(alpha * x + beta, axis=1)
        loss = -float(np.sum(w * logp[rows, labels]))
        resid = (onehot - np.exp(logp)) * w[:, None]  # d(-loss)/d(logit)
        grad_alpha = -float(np.sum(resid * x))
        grad_beta = -resid.sum(axis=0)
        return loss, np.concatenate([[grad_alpha], grad_beta])

    theta0 = np.concatenate([[1.0], np.zeros(n)])
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B")
    if not np.isfinite(res.fun):
        raise LreError(f"calibration: the affine fit did not converge ({res.message})")
    alpha, beta = float(res.x[0]), res.x[1:]
    return alpha, beta - beta.mean()  # offsets are defined up to a constant


def _fit_logreg(x: np.ndarray, labels: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Fit a multinomial LogisticRegression -> ``(coef (langs, langs), intercept (langs,))``."""
    from sklearn.linear_model import LogisticRegression

    n = x.shape[1]
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, labels)
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # two languages: sklearn stores the logit of class 1 only
        coef = np.vstack([np.zeros(n), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    return coef, intercept


def fit_calibration(
    scores: np.ndarray,
    labels: np.ndarray,
    langs: Sequence[str],
    method: str = "affine",
    score_floor: float = DEFAULT_SCORE_FLOOR,
    c: float = 1.0,
) -> dict[str, Any]:
    """Fit a calibration on dev scores ``(utts, langs)`` with language indices ``labels``.

    Every language needs at least one dev utterance (its offset cannot be learned otherwise).
    Returns the JSON-ready calibration dict (see :func:`apply_calibration`), including the dev
    multi-class Cllr before and after.
    """
    if method not in METHODS:
        raise LreError(f"calibration: unknown method '{method}' (choose from {', '.join(METHODS)})")
    langs = list(langs)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[1] != len(langs) or len(labels) != scores.shape[0]:
        raise LreError(f"calibration: scores {scores.shape} do not match {len(labels)} labels "
                       f"x {len(langs)} languages")
    counts = np.bincount(labels, minlength=len(langs))
    absent = [lang for lang, k in zip(langs, counts, strict=True) if k == 0]
    if absent:
        raise LreError(f"calibration: no dev utterances of language(s) {' '.join(absent)}; "
                       "every language needs some")
    x = _prepare(scores, score_floor)
    calib: dict[str, Any] = {"format": FORMAT, "method": method, "langs": langs,
                             "score_floor": score_floor}
    if method == "affine":
        alpha, beta = _fit_affine(x, labels)
        calib.update(alpha=alpha, beta=beta.tolist())
    else:
        coef, intercept = _fit_logreg(x, labels, c)
        calib.update(C=c, coef=coef.tolist(), intercept=intercept.tolist())

    raw = cllr_multiclass(labels, scores)
    cal = cllr_multiclass(labels, apply_calibration(calib, scores))
    if not cal <= raw:
        log.warning("calibration: the %s fit raises dev Cllr_mc from %.4f to %.4f bits; "
                    "keeping the scores as they are (identity)", method, raw, cal)
        calib = {"format": FORMAT, "method": "affine", "langs": langs,
                 "score_floor": score_floor, "alpha": 1.0, "beta": [0.0] * len(langs),
                 "fallback_from": method}
        cal = cllr_multiclass(labels, apply_calibration(calib, scores))
    calib["dev"] = {"num_utts": int(len(labels)), "Cllr_mc_raw": raw,
                    "Cllr_mc_calibrated": cal}
    return calib


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
    x = _prepare(scores, float(calib.get("score_floor", DEFAULT_SCORE_FLOOR)))
    if calib["method"] == "affine":
        logits = float(calib["alpha"]) * x + np.asarray(calib["beta"], dtype=np.float64)
    elif calib["method"] == "logreg":
        coef = np.asarray(calib["coef"], dtype=np.float64)
        logits = x @ coef.T + np.asarray(calib["intercept"], dtype=np.float64)
    else:
        raise LreError(f"calibration: unknown method '{calib['method']}'")
    out = _log_softmax(logits, axis=1)
    if langs is not None:
        out = out[:, [cal_langs.index(lang) for lang in langs]]
    return out[0] if single else out


def save_calibration(path: PathLike, calib: Mapping[str, Any]) -> None:
    """Write a calibration dict as JSON, atomically."""
    atomic_write_text(path, json.dumps(calib, indent=2) + "\n")


def load_calibration(path: PathLike) -> dict[str, Any]:
    """Read and check a calibration JSON file."""
    try:
        with open(path, encoding="utf-8") as f:
            calib = json.load(f)
    except FileNotFoundError:
        raise LreError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise LreError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(calib, dict) or calib.get("format") != FORMAT:
        raise LreError(f"{path}: not an lre calibration file (format != {FORMAT})")
    need = {"affine": ("alpha", "beta"), "logreg": ("coef", "intercept")}.get(calib.get("method"))
    if need is None:
        raise LreError(f"{path}: unknown calibration method {calib.get('method')!r}")
    missing = [k for k in ("langs", *need) if k not in calib]
    if missing:
        raise LreError(f"{path}: missing field(s) {', '.join(missing)}")
    return calib


def calibrate(
    scores_path: PathLike,
    data_dir: PathLike,
    out: PathLike,
    method: str = "affine",
    c: float = 1.0,
) -> dict[str, Any]:
    """Fit a calibration on a dev score table and the dev data dir's ``utt2lang``; save it.

    Utterances without a label, and labels outside the score table's languages, are skipped
    (counted in the log). Returns the calibration dict written to ``out``.
    """
    from lre.data.tables import read_table

    utts, langs, scores = read_scores(scores_path)
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
    calib = fit_calibration(scores[keep], np.asarray(labels), langs, method=method, c=c)
    calib["fit_on"] = {"scores": os.fspath(scores_path), "data": os.fspath(data_dir)}
    save_calibration(out, calib)
    dev = calib["dev"]
    log.info("calibration (%s) on %d dev utterances: Cllr_mc %.4f -> %.4f bits; wrote %s",
             calib["method"], dev["num_utts"], dev["Cllr_mc_raw"], dev["Cllr_mc_calibrated"],
             out)
    return calib


def cli_calibrate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores", required=True,
                        help="dev score table (scores_raw.tsv: raw log-posteriors)")
    parser.add_argument("--data", required=True, help="dev data dir (its utt2lang)")
    parser.add_argument("--out", required=True, help="calibration JSON to write")
    parser.add_argument("--method", choices=METHODS, default="affine",
                        help="affine: alpha*s + beta_l (default); logreg: full multinomial "
                             "logistic regression (scikit-learn)")
    parser.add_argument("--C", dest="c", type=float, default=1.0,
                        help="inverse L2 strength for --method logreg (default 1.0)")


def cli_calibrate(args: argparse.Namespace) -> int:
    calibrate(args.scores, args.data, args.out, method=args.method, c=args.c)  # logs a summary
    return 0
