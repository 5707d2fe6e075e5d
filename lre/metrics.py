"""Language recognition metrics and the score-table format (stage 4).

Score tables (``scores.tsv``, ``scores_raw.tsv``, ``llr.tsv``) are tab-separated: a header
``utt<TAB>lang1<TAB>lang2...`` and one row per utterance. ``scores.tsv`` holds natural-log
posteriors, ``llr.tsv`` detection log-likelihood ratios (see :func:`llr_from_logpost`).

Conventions shared by every metric below:

- ``labels`` is an int array ``(utts,)`` of language indices into the model's language list;
  ``decisions`` the same for the system's answers, with ``-1`` meaning "no language" (an
  ``unknown`` answer in open-set mode, or an utterance the system never scored).
- A *trial* is a pair (utterance u, language l): a target trial when u is spoken in l, a
  non-target trial otherwise; the system *accepts* the trial when its score for l reaches the
  threshold (``score >= threshold``).
- Detection metrics (Cavg, EER, Cllr) use the *evaluated languages*: the model's languages
  with at least one test utterance. A language without test utterances has no miss rate and
  no false-alarm rate of its own, so it cannot enter the average (it can still cost through
  argmax decisions: an utterance decided as that language is a miss of its true language).
- Costs are fractions (0 = perfect); rates and accuracy are fractions in [0, 1]; Cllr in bits.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp

from lre.utils import LreError, atomic_open

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Duration buckets (name, lower bound inclusive, upper bound exclusive) in seconds; the last
#: bucket also holds exactly 10 s in ``3-10s`` because its lower bound is exclusive
#: (``<3 s``, ``3-10 s``, ``>10 s``).
DURATION_BUCKETS: tuple[str, ...] = ("<3s", "3-10s", ">10s")

#: P_target values of the NIST LRE primary cost (LRE 2015/2017): C_primary is their mean.
NIST_P_TARGETS: tuple[float, ...] = (0.5, 0.1)


# ----------------------------------------------------------------------------------------
# score tables
# ----------------------------------------------------------------------------------------


def read_scores(path: PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Read a score table -> ``(utts, langs, matrix (utts, langs) float64)``.

    ``-inf``/``inf`` are accepted (log 0 is -inf); NaN, a short row, a repeated utterance or
    language, or a header not starting with ``utt`` raises ``LreError`` naming file and line.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise LreError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LreError(f"{path}: is a directory, expected a score table") from None
    lines = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
    if not lines:
        raise LreError(f"{path}: empty score table (expected a header 'utt<TAB>lang...')")
    header = lines[0][1].rstrip("\r").split("\t")
    if header[0] != "utt" or len(header) < 2:
        raise LreError(f"{path}:1: header must be 'utt<TAB>lang1<TAB>lang2...', got {header[:4]}")
    langs = header[1:]
    if len(set(langs)) != len(langs):
        dup = sorted({x for x in langs if langs.count(x) > 1})
        raise LreError(f"{path}:1: repeated language column(s): {' '.join(dup)}")
    utts: list[str] = []
    seen: dict[str, int] = {}
    matrix = np.empty((len(lines) - 1, len(langs)), dtype=np.float64)
    for row, (lineno, line) in enumerate(lines[1:]):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(langs) + 1:
            raise LreError(
                f"{path}:{lineno}: expected {len(langs) + 1} tab-separated fields, "
                f"got {len(fields)}"
            )
        utt = fields[0]
        if utt in seen:
            raise LreError(f"{path}:{lineno}: utterance '{utt}' repeated (first on line "
                           f"{seen[utt]})")
        seen[utt] = lineno
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise LreError(f"{path}:{lineno}: '{utt}': a score is not a number") from None
        if any(math.isnan(v) for v in values):
            raise LreError(f"{path}:{lineno}: '{utt}': NaN score")
        matrix[row] = values
        utts.append(utt)
    return utts, langs, matrix


def write_scores(
    path: PathLike,
    utts: Sequence[str],
    langs: Sequence[str],
    matrix: np.ndarray,
    decimals: int = 6,
) -> None:
    """Write a score table atomically (header ``utt<TAB>langs...``, rows in the given order).

    ``matrix`` is ``(utts, langs)``; ``-inf`` is written as ``-inf``. NaN raises ``LreError``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(utts), len(langs)):
        raise LreError(
            f"{path}: score matrix shape {matrix.shape} does not match "
            f"{len(utts)} utterances x {len(langs)} languages"
        )
    for name in [*utts, *langs]:
        if not name or any(c in name for c in "\t\n\r"):
            raise LreError(f"{path}: invalid utterance/language name {name!r}")
    bad = np.isnan(matrix).any(axis=1)
    if bad.any():
        raise LreError(f"{path}: NaN scores for utterance '{utts[int(np.argmax(bad))]}'")
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("utt\t" + "\t".join(langs) + "\n")
        for utt, row in zip(utts, matrix, strict=True):
            f.write(utt + "\t" + "\t".join(_format_score(v, decimals) for v in row) + "\n")


def _format_score(value: float, decimals: int) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.{decimals}f}"
    return "0." + "0" * decimals if text == "-0." + "0" * decimals else text


# ----------------------------------------------------------------------------------------
# score transforms
# ----------------------------------------------------------------------------------------


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Row-normalise log-scores ``(utts, langs)`` to log-posteriors (flat priors).

    ``-inf`` entries stay ``-inf``; a row that is all ``-inf`` has no posterior and raises.
    """
    scores = np.asarray(scores, dtype=np.float64)
    norm = logsumexp(scores, axis=1, keepdims=True)
    if not np.isfinite(norm).all():
        row = int(np.argmax(~np.isfinite(norm[:, 0])))
        raise LreError(f"score row {row}: all scores are -inf (or one is +inf); no posterior")
    return scores - norm


def llr_from_logpost(logpost: np.ndarray) -> np.ndarray:
    """Detection log-likelihood ratios from log-posteriors ``(utts, langs)`` (natural log).

    Under flat priors the posterior is proportional to the likelihood, so for language l

        llr_l = log p(x|l) - log( 1/(N-1) sum_{j!=l} p(x|j) )
              = logpost_l - logsumexp_{j!=l} logpost_j + log(N - 1).

    The result does not change when a constant is added to a row. ``-inf`` log-posteriors
    give ``-inf`` llrs; a language whose competitors all have posterior 0 gets ``+inf``.
    """
    logpost = np.asarray(logpost, dtype=np.float64)
    if logpost.ndim != 2 or logpost.shape[1] < 2:
        raise LreError(f"llr needs at least 2 languages, got score shape {logpost.shape}")
    n = logpost.shape[1]
    llr = np.empty_like(logpost)
    others = np.ones(n, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for lang in range(n):
            others[lang] = False
            rest = logsumexp(logpost[:, others], axis=1)
            llr[:, lang] = logpost[:, lang] - rest + math.log(n - 1)
            others[lang] = True
    if np.isnan(llr).any():
        raise LreError("llr: a score row has no finite log-posterior")
    return llr


def argmax_decisions(scores: np.ndarray) -> np.ndarray:
    """Index of the best-scoring language per row ``(utts,)`` (first one on ties)."""
    return np.asarray(scores).argmax(axis=1).astype(np.int64)


def open_set_decisions(logpost: np.ndarray, threshold: float | None) -> np.ndarray:
    """Argmax decisions, with ``-1`` ("unknown") where the top posterior is below ``threshold``.

    ``threshold`` is a posterior probability in [0, 1]; ``None`` never answers unknown.
    """
    decisions = argmax_decisions(logpost)
    if threshold is None:
        return decisions
    top = np.exp(log_softmax(logpost).max(axis=1))
    decisions[top < threshold] = -1
    return decisions


# ----------------------------------------------------------------------------------------
# identification metrics
# ----------------------------------------------------------------------------------------


def accuracy(labels: np.ndarray, decisions: np.ndarray) -> float:
    """Fraction of utterances whose decision equals the label (``-1`` decisions are errors)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    return float(np.mean(labels == np.asarray(decisions)))


def per_language_prf(
    labels: np.ndarray, decisions: np.ndarray, num_langs: int
) -> dict[str, np.ndarray]:
    """Per-language precision, recall, F1 and support (scikit-learn), each ``(langs,)``.

    precision_l = |decided l and is l| / |decided l|, recall_l = |decided l and is l| / |is l|,
    F1 = 2 P R / (P + R); 0 where a denominator is 0. ``-1`` decisions count against recall.
    """
    from sklearn.metrics import precision_recall_fscore_support

    if len(labels) == 0:  # a set of out-of-set utterances only
        zeros = np.zeros(num_langs)
        return {"precision": zeros, "recall": zeros, "f1": zeros,
                "support": np.zeros(num_langs, dtype=np.int64)}
    p, r, f, s = precision_recall_fscore_support(
        labels, decisions, labels=list(range(num_langs)), zero_division=0
    )
    return {"precision": p, "recall": r, "f1": f, "support": s.astype(np.int64)}


def confusion(labels: np.ndarray, decisions: np.ndarray, num_langs: int) -> np.ndarray:
    """Confusion counts ``(langs, langs + 1)``: row = true language, column = decision.

    The last column counts ``-1`` decisions (unknown / not scored).
    """
    from sklearn.metrics import confusion_matrix

    if len(labels) == 0:
        return np.zeros((num_langs, num_langs + 1), dtype=np.int64)
    order = [*range(num_langs), -1]
    cm = confusion_matrix(labels, decisions, labels=order)
    return cm[:num_langs].astype(np.int64)


# ----------------------------------------------------------------------------------------
# detection costs
# ----------------------------------------------------------------------------------------


def evaluated_languages(labels: np.ndarray, num_langs: int) -> np.ndarray:
    """Indices of the languages with at least one utterance in ``labels``."""
    labels = np.asarray(labels)
    return np.flatnonzero(np.bincount(labels[labels >= 0], minlength=num_langs) > 0)


def detection_rates(
    labels: np.ndarray, accept: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates from an accept matrix.

    ``accept`` is bool ``(utts, langs)``: trial (u, l) accepted. Returns ``(langs_eval,
    p_miss (E,), p_fa (E, E))`` over the evaluated languages ``langs_eval`` (see module doc):
    ``p_miss[i]`` = share of language-l utterances whose trial for l is rejected,
    ``p_fa[i, j]`` = share of language-m utterances whose trial for l is accepted
    (l = langs_eval[i], m = langs_eval[j]; the diagonal is 0).
    """
    labels = np.asarray(labels)
    accept = np.asarray(accept, dtype=bool)
    langs_eval = evaluated_languages(labels, accept.shape[1])
    e = len(langs_eval)
    p_miss = np.zeros(e)
    p_fa = np.zeros((e, e))
    for j, m in enumerate(langs_eval):
        rows = accept[labels == m]  # utterances of language m
        rate = rows[:, langs_eval].mean(axis=0)  # share accepted per target language
        p_miss[j] = 1.0 - rate[j]
        p_fa[:, j] = rate
        p_fa[j, j] = 0.0
    return langs_eval, p_miss, p_fa


def average_cost(
    p_miss: np.ndarray, p_fa: np.ndarray, p_target: float = 0.5, normalized: bool = False
) -> float:
    """Average detection cost over target languages (C_miss = C_fa = 1).

    Cavg = 1/N sum_l [ P_target Pmiss(l) + (1 - P_target)/(N-1) sum_{m!=l} Pfa(l, m) ].
    With ``normalized`` the cost is divided by P_target (NIST LRE 2017:
    Pmiss(l) + beta/(N-1) sum Pfa(l, m), beta = (1 - P)/P), so 1.0 is the cost of rejecting
    every trial. With one evaluated language the false-alarm term is empty.
    """
    n = len(p_miss)
    if n == 0:
        return float("nan")
    fa = p_fa.sum(axis=1) / (n - 1) if n > 1 else np.zeros(n)
    cost = float(np.mean(p_target * p_miss + (1.0 - p_target) * fa))
    return cost / p_target if normalized else cost


def cavg(labels: np.ndarray, decisions: np.ndarray, num_langs: int) -> float:
    """Cavg for hard (argmax) decisions: the figure of Kaldi's lre07 recipe.

    Each utterance accepts exactly its decided language (none for ``-1``):
    Cavg = 1/N sum_l [0.5 Pmiss(l) + 0.5/(N-1) sum_{m!=l} Pfa(l, m)], a fraction in
    [0, 1]; 0 = perfect, 0.5 = rejecting everything.
    """
    decisions = np.asarray(decisions)
    accept = np.zeros((len(decisions), num_langs), dtype=bool)
    known = decisions >= 0
    accept[np.flatnonzero(known), decisions[known]] = True
    _, p_miss, p_fa = detection_rates(labels, accept)
    return average_cost(p_miss, p_fa, 0.5)


def cavg_at_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    p_target: float = 0.5,
    normalized: bool = False,
) -> float:
    """Cavg when every trial with ``score >= threshold`` is accepted (one global threshold)."""
    _, p_miss, p_fa = detection_rates(labels, np.asarray(scores) >= threshold)
    return average_cost(p_miss, p_fa, p_target, normalized)


def cost_curve(
    labels: np.ndarray,
    scores: np.ndarray,
    p_target: float = 0.5,
    normalized: bool = False,
    thresholds: np.ndarray | Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Average cost as a function of one global threshold -> ``(thresholds, costs)``.

    A trial (u, l) is accepted when ``scores[u, l] >= threshold`` (as OLR's compute_cavg
    does; its 20 bins are replaced by every distinct trial score, plus +inf = reject all,
    which makes the minimum exact). The cost is a weighted count of errors: a target trial of
    language l weighs P/(N n_l) when missed, a non-target trial of an utterance of language m
    weighs (1-P)/(N (N-1) n_m) when accepted, so summing gives :func:`average_cost`. One sort of
    all trials gives every threshold's cost.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    num_langs = scores.shape[1]
    langs_eval = evaluated_languages(labels, num_langs)
    n = len(langs_eval)
    if n == 0:
        return np.array([np.inf]), np.array([np.nan])
    keep = np.isin(labels, langs_eval)
    lab = labels[keep]
    sub = scores[keep][:, langs_eval]
    counts = np.bincount(lab, minlength=num_langs).astype(np.float64)
    is_target = lab[:, None] == langs_eval[None, :]
    w_miss = np.where(is_target, p_target / (n * counts[lab])[:, None], 0.0)
    fa_scale = (1.0 - p_target) / (n * (n - 1)) if n > 1 else 0.0
    w_fa = np.where(is_target, 0.0, fa_scale / counts[lab][:, None])
    thr, costs = _sweep(sub.ravel(), w_miss.ravel(), w_fa.ravel(), thresholds)
    if normalized:
        costs = costs / p_target
    return thr, costs


def _sweep(scores: np.ndarray, w_miss: np.ndarray, w_fa: np.ndarray,
           thresholds: np.ndarray | Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted errors of trials ``(T,)`` at each threshold: the ``w_miss`` of the rejected
    (``score < threshold``) plus the ``w_fa`` of the accepted; every distinct score and +inf
    when ``thresholds`` is None. One sort gives all thresholds."""
    order = np.argsort(scores, kind="stable")
    s_sorted = scores[order]
    cum_miss = np.concatenate([[0.0], np.cumsum(w_miss[order])])
    cum_fa = np.concatenate([[0.0], np.cumsum(w_fa[order])])
    if thresholds is None:
        thr = np.concatenate([np.unique(s_sorted), [np.inf]])
    else:
        thr = np.asarray(thresholds, dtype=np.float64)
    below = np.searchsorted(s_sorted, thr, side="left")  # trials with score < threshold
    return thr, cum_miss[below] + (cum_fa[-1] - cum_fa[below])


def min_cavg(
    labels: np.ndarray,
    scores: np.ndarray,
    p_target: float = 0.5,
    normalized: bool = False,
    thresholds: np.ndarray | Sequence[float] | None = None,
) -> tuple[float, float]:
    """Minimum of :func:`cost_curve` over one global threshold -> ``(min cost, threshold)``.

    With the defaults this is the Cavg the OLR challenge's scoring script reports (P_target
    0.5, not normalised, the minimum over one threshold for all trials; the script searches
    a grid of thresholds), exact over all thresholds unless ``thresholds`` restricts the
    search. Kaldi's lre07 figure is the argmax one, :func:`cavg`.
    """
    thr, costs = cost_curve(labels, scores, p_target, normalized, thresholds)
    if np.isnan(costs).all():
        return float("nan"), float("nan")
    best = int(np.nanargmin(costs))
    return float(costs[best]), float(thr[best])


def nist_cavg(labels: np.ndarray, llr: np.ndarray, p_target: float) -> dict[str, float]:
    """NIST LRE normalised Cavg at ``p_target`` from detection llrs ``(utts, langs)``.

    actual: trials accepted when llr >= log((1-P)/P) (the Bayes threshold for C_miss = C_fa = 1
    and calibrated llrs); min: the best single global threshold. Both normalised by P_target
    (1.0 = reject everything). Returns ``{"actual", "min", "min_threshold"}``.
    """
    bayes = math.log((1.0 - p_target) / p_target)
    actual = cavg_at_threshold(labels, llr, bayes, p_target, normalized=True)
    best, thr = min_cavg(labels, llr, p_target, normalized=True)
    return {"actual": actual, "min": best, "min_threshold": thr}


# ----------------------------------------------------------------------------------------
# open-set detection costs
# ----------------------------------------------------------------------------------------


def open_set_cost(labels: np.ndarray, accept: np.ndarray, p_target: float = 0.5) -> float:
    """Open-set Cavg of an accept matrix, the out-of-set languages being one more class.

    This is the cost of the OLR challenges' open-set tasks (AP18-OLR task 3, AP20-OLR
    task 2; their scoring script ``computeCavg_unknown.py``): the targets are the N evaluated
    languages; for each, the non-target classes are the N - 1 other languages and one
    "unknown" class holding every out-of-set utterance (label ``-1``), so that

        C(l) = P_target Pmiss(l) + (1 - P_target) / N [ sum_{m != l} Pfa(l, m) + Pfa(l, unk) ]

    with Pfa(l, unk) the share of out-of-set utterances whose trial for l is accepted, and
    Cavg = mean_l C(l) (C_miss = C_fa = 1, not normalised). An "unknown" answer accepts no
    trial: a miss for an in-set utterance, no false alarm for an out-of-set one. ``accept``
    is bool ``(utts, langs)``; NaN without in-set or without out-of-set utterances. (The
    script's targets are every language of its trial list; here, as for every cost in this
    module, those with test utterances.)
    """
    labels = np.asarray(labels)
    accept = np.asarray(accept, dtype=bool)
    oos = labels < 0
    langs_eval, p_miss, p_fa = detection_rates(labels, accept)
    n = len(langs_eval)
    if n == 0 or not oos.any():
        return float("nan")
    fa_unknown = accept[oos][:, langs_eval].mean(axis=0)
    cost = p_target * p_miss + (1.0 - p_target) / n * (p_fa.sum(axis=1) + fa_unknown)
    return float(cost.mean())


def open_set_cavg(labels: np.ndarray, decisions: np.ndarray, num_langs: int,
                  p_target: float = 0.5) -> float:
    """:func:`open_set_cost` of hard decisions: each utterance accepts its decided language,
    none when the decision is ``-1`` (unknown, or not scored)."""
    return open_set_cost(labels, _one_hot(np.asarray(decisions), num_langs), p_target)


def open_set_cost_curve(
    labels: np.ndarray,
    scores: np.ndarray,
    p_target: float = 0.5,
    thresholds: np.ndarray | Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`open_set_cost` when every trial with ``score >= threshold`` is accepted, as a
    function of one global threshold -> ``(thresholds, costs)`` (as ``computeCavg_unknown.py``
    sweeps its 20 bins; here every distinct score and +inf). As a weighted count of errors:
    a missed target trial of language l weighs P / (N n_l); an accepted non-target trial
    of an utterance of language m weighs (1 - P) / (N^2 n_m), of an out-of-set utterance
    (1 - P) / (N^2 n_oos). ``scores`` ``(utts, langs)``, e.g. log-posteriors."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    langs_eval = evaluated_languages(labels, scores.shape[1])
    n = len(langs_eval)
    oos = labels < 0
    if n == 0 or not oos.any():
        return np.array([np.inf]), np.array([np.nan])
    keep = np.isin(labels, langs_eval) | oos
    lab = labels[keep]
    sub = scores[keep][:, langs_eval]
    counts = np.bincount(lab[lab >= 0], minlength=scores.shape[1]).astype(np.float64)
    per_class = np.where(lab >= 0, counts[np.clip(lab, 0, None)], float(oos.sum()))
    is_target = lab[:, None] == langs_eval[None, :]
    w_miss = np.where(is_target, p_target / (n * per_class)[:, None], 0.0)
    w_fa = np.where(is_target, 0.0, (1.0 - p_target) / (n * n * per_class)[:, None])
    return _sweep(sub.ravel(), w_miss.ravel(), w_fa.ravel(), thresholds)


def min_open_set_cavg(labels: np.ndarray, scores: np.ndarray,
                      p_target: float = 0.5) -> tuple[float, float]:
    """Minimum of :func:`open_set_cost_curve` -> ``(min cost, threshold)``: the figure the
    OLR open-set scoring script reports (exact here, the script searches a grid)."""
    thr, costs = open_set_cost_curve(labels, scores, p_target)
    if np.isnan(costs).all():
        return float("nan"), float("nan")
    best = int(np.nanargmin(costs))
    return float(costs[best]), float(thr[best])


def unknown_eer(labels: np.ndarray, open_scores: np.ndarray) -> float:
    """EER of telling in-set utterances (label >= 0) from out-of-set ones (label -1) by an
    open-set score (higher = more like a language the model knows); NaN without both."""
    labels = np.asarray(labels)
    return eer(labels >= 0, np.asarray(open_scores, dtype=np.float64))


# ----------------------------------------------------------------------------------------
# EER and Cllr
# ----------------------------------------------------------------------------------------


def detection_trials(
    labels: np.ndarray, scores: np.ndarray, langs_eval: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pool all (utterance, language) trials -> ``(is_target bool (T,), score (T,))``.

    Only utterances and language columns of the evaluated languages take part.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if langs_eval is None:
        langs_eval = evaluated_languages(labels, scores.shape[1])
    keep = np.isin(labels, langs_eval)
    is_target = labels[keep][:, None] == np.asarray(langs_eval)[None, :]
    return is_target.ravel(), scores[keep][:, langs_eval].ravel()


def _finite_for_ranking(scores: np.ndarray) -> np.ndarray:
    """Replace +-inf by finite values beyond the finite range, keeping the order."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    span = max(hi - lo, 1.0)
    return np.clip(scores, lo - span, hi + span)


def eer(is_target: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate of binary trials, a fraction in [0, 1].

    From scikit-learn's ROC (every threshold kept): the miss rate 1 - TPR falls and the
    false-alarm rate FPR rises as the threshold drops; the EER is where the two meet, found
    by linear interpolation between the last ROC point with Pmiss > Pfa and the next one.
    NaN when there are no target or no non-target trials.
    """
    from sklearn.metrics import roc_curve

    is_target = np.asarray(is_target, dtype=bool)
    if is_target.all() or not is_target.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(is_target, _finite_for_ranking(scores), drop_intermediate=False)
    gap = (1.0 - tpr) - fpr  # 1 at the first point, -1 at the last
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def pooled_eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """EER over all pooled (utterance, evaluated language) trials of a score matrix."""
    is_target, flat = detection_trials(labels, scores)
    return eer(is_target, flat)


def cllr(is_target: np.ndarray, llr: np.ndarray) -> float:
    """Binary log-likelihood-ratio cost in bits (Brümmer & du Preez 2006).

    Cllr = 1/2 [ mean_target log2(1 + e^-llr) + mean_nontarget log2(1 + e^llr) ];
    0 is perfect, 1 is a system that always says llr = 0, more is worse than no system.
    """
    is_target = np.asarray(is_target, dtype=bool)
    llr = np.asarray(llr, dtype=np.float64)
    if is_target.all() or not is_target.any():
        return float("nan")
    c_tar = np.logaddexp(0.0, -llr[is_target]).mean()
    c_non = np.logaddexp(0.0, llr[~is_target]).mean()
    return float((c_tar + c_non) / (2.0 * math.log(2.0)))


def pooled_cllr(labels: np.ndarray, llr: np.ndarray) -> float:
    """:func:`cllr` over all pooled (utterance, evaluated language) trials of an llr matrix."""
    is_target, flat = detection_trials(labels, llr)
    return cllr(is_target, flat)


def cllr_multiclass(labels: np.ndarray, logpost: np.ndarray) -> float:
    """Multi-class Cllr (cross-entropy) in bits, with flat priors over evaluated languages.

    Cllr_mc = -1/N sum_l mean_{u in l} log2 P(l | x_u), the posteriors renormalised over all
    the model's languages. log2(N) is the cost of a system that always answers 1/N;
    0 is perfect; a true language with posterior 0 gives +inf.
    """
    labels = np.asarray(labels)
    logpost = log_softmax(logpost)
    langs_eval = evaluated_languages(labels, logpost.shape[1])
    if len(langs_eval) == 0:
        return float("nan")
    per_lang = []
    for lang in langs_eval:
        rows = np.flatnonzero(labels == lang)
        per_lang.append(-logpost[rows, lang].mean())
    return float(np.mean(per_lang) / math.log(2.0))


# ----------------------------------------------------------------------------------------
# duration buckets and the full set of metrics
# ----------------------------------------------------------------------------------------


def duration_bucket(seconds: float) -> str:
    """Bucket name for a duration: ``<3s`` (d < 3), ``3-10s`` (3 <= d <= 10), ``>10s``."""
    if seconds < 3.0:
        return "<3s"
    if seconds <= 10.0:
        return "3-10s"
    return ">10s"


def _nist_costs(labels: np.ndarray, llr: np.ndarray) -> dict[str, dict[str, float]]:
    """Normalised actual/min Cavg at each NIST P_target and their mean, C_primary.

    ``labels`` (utts,) in-set language indices, ``llr`` (utts, langs).
    """
    nist = {f"Cavg@{p:g}": nist_cavg(labels, llr, p) for p in NIST_P_TARGETS}
    nist["C_primary"] = {
        "actual": float(np.mean([nist[f"Cavg@{p:g}"]["actual"] for p in NIST_P_TARGETS])),
        "min": float(np.mean([nist[f"Cavg@{p:g}"]["min"] for p in NIST_P_TARGETS])),
    }
    return nist


def _per_language(
    langs: list[str],
    labels: np.ndarray,
    llr: np.ndarray,
    langs_eval: Sequence[int],
    prf: Mapping[str, np.ndarray],
    p_miss: np.ndarray,
    p_fa: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Support, precision, recall, F1 of every language; Pmiss, Pfa, EER and Cllr of those
    evaluated (with in-set test utterances). ``labels`` (utts,), ``llr`` (utts, langs)."""
    per_language: dict[str, dict[str, Any]] = {}
    eval_pos = {int(lang): i for i, lang in enumerate(langs_eval)}
    for i, name in enumerate(langs):
        entry: dict[str, Any] = {
            "support": int(prf["support"][i]),
            "precision": float(prf["precision"][i]),
            "recall": float(prf["recall"][i]),
            "f1": float(prf["f1"][i]),
        }
        if i in eval_pos:
            k = eval_pos[i]
            entry["Pmiss"] = float(p_miss[k])
            entry["Pfa"] = float(p_fa[k].sum() / (len(langs_eval) - 1)) if len(langs_eval) > 1 \
                else 0.0
            is_target = labels == i
            entry["EER"] = eer(is_target, llr[:, i])
            entry["Cllr"] = cllr(is_target, llr[:, i])
        per_language[name] = entry
    return per_language


def compute_metrics(
    logpost: np.ndarray,
    labels: np.ndarray,
    langs: Sequence[str],
    llr: np.ndarray | None = None,
    unknown_threshold: float | None = None,
    scored: np.ndarray | None = None,
    unknown: np.ndarray | None = None,
    open_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every metric for one set of utterances.

    Args:
        logpost: ``(utts, langs)`` log-posteriors (any row offset; renormalised here).
        labels: ``(utts,)`` language index, ``-1`` for a language outside ``langs``
            (out-of-set). Closed-set metrics use the in-set utterances only.
        langs: the model's languages (column names).
        llr: ``(utts, langs)`` detection llrs; computed from ``logpost`` when ``None``.
        unknown_threshold: posterior below which the answer is "unknown" (open-set figures).
        scored: ``(utts,)`` bool, False for utterances the system produced no score for:
            their decision is an error (``-1``); give them flat rows in ``logpost``/``llr``
            so that score-based metrics see "no information" for them.
        unknown, open_scores: the system's "unknown" answers and open-set scores
            (:func:`open_set_metrics`).

    Returns a JSON-ready dict: ``num_utts``, ``accuracy``, ``Cavg``, ``minCavg``,
    ``minCavg_threshold``, ``nist`` (normalised actual/min Cavg at P_target 0.5 and 0.1 and
    C_primary), ``EER``, ``Cllr``, ``Cllr_mc``, ``per_language``, ``confusion`` and, when
    out-of-set utterances exist or unknown answers are given, ``open_set``.
    """
    langs = list(langs)
    n = len(langs)
    logpost = log_softmax(logpost)
    labels = np.asarray(labels, dtype=np.int64)
    if llr is None:
        llr = llr_from_logpost(logpost)
    llr = np.asarray(llr, dtype=np.float64)
    scored = np.ones(len(labels), dtype=bool) if scored is None else np.asarray(scored, bool)

    decisions = argmax_decisions(logpost)
    decisions[~scored] = -1
    inset = labels >= 0
    lab, dec = labels[inset], decisions[inset]
    lp, lr = logpost[inset], llr[inset]

    langs_eval = evaluated_languages(lab, n)
    prf = per_language_prf(lab, dec, n)
    _, p_miss, p_fa = detection_rates(lab, _one_hot(dec, n))
    min_cost, min_thr = min_cavg(lab, lp)
    nist = _nist_costs(lab, lr)
    per_language = _per_language(langs, lab, lr, langs_eval, prf, p_miss, p_fa)
    cm = confusion(lab, dec, n)
    results: dict[str, Any] = {
        "num_utts": int(len(labels)),
        "num_in_set": int(inset.sum()),
        "num_unscored": int((~scored).sum()),
        "languages_evaluated": [langs[i] for i in langs_eval],
        "accuracy": accuracy(lab, dec),
        "Cavg": average_cost(p_miss, p_fa, 0.5),
        "minCavg": min_cost,
        "minCavg_threshold": min_thr,
        "nist": nist,
        "EER": pooled_eer(lab, lr),
        "Cllr": pooled_cllr(lab, lr),
        "Cllr_mc": cllr_multiclass(lab, lp),
        "per_language": per_language,
        "confusion": {
            "true": langs,
            "pred": [*langs, "unknown"],
            "matrix": cm.tolist(),
        },
    }
    if unknown_threshold is not None or unknown is not None or (~inset).any():
        results["open_set"] = open_set_metrics(
            logpost, labels, n, unknown_threshold, scored=scored, unknown=unknown,
            open_scores=open_scores,
        )
    return results


def open_set_metrics(
    logpost: np.ndarray,
    labels: np.ndarray,
    num_langs: int,
    unknown_threshold: float | None,
    scored: np.ndarray | None = None,
    unknown: np.ndarray | None = None,
    open_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """Open-set figures of argmax decisions with "unknown" answers.

    The answer is "unknown" where ``unknown`` ``(utts,)`` bool (the system's own answers,
    e.g. from :mod:`lre.openset`) says so; without it, where the top posterior is below
    ``unknown_threshold`` (None: never). ``open_scores`` ``(utts,)`` rank utterances from
    out-of-set to in-set (higher = a known language); default: the top posterior.

    - ``accuracy``: share of all utterances answered right (in-set: its language; out-of-set
      (label -1): "unknown"; an unscored utterance is never right).
    - ``oos_false_accept`` / ``oos_unknown_rate``: share of out-of-set utterances given a
      language / answered unknown (NaN if none; an unscored one is neither).
    - ``inset_accuracy`` and ``inset_unknown_rate``: share of in-set utterances that keep a
      right answer / are answered unknown.
    - ``Cavg``: argmax-style Cavg over in-set trials, an unknown answer being a miss of the
      true language and no false alarm.
    - ``Cavg_open``: :func:`open_set_cavg` of the decisions (OLR open-set Cavg, the
      out-of-set utterances one more class); ``minCavg_open`` its minimum over one threshold
      on the log-posteriors (:func:`min_open_set_cavg`, the OLR scoring script's figure).
    - ``unknown_EER``: :func:`unknown_eer` of ``open_scores`` over the scored utterances.
    """
    labels = np.asarray(labels)
    scored = np.ones(len(labels), bool) if scored is None else np.asarray(scored, bool)
    if unknown is None:
        decisions = open_set_decisions(logpost, unknown_threshold)
    else:
        decisions = argmax_decisions(logpost)
        decisions[np.asarray(unknown, dtype=bool)] = -1
    unknown = (decisions == -1) & scored  # answered "unknown" (unscored: no answer at all)
    decisions[~scored] = -1
    inset = labels >= 0
    correct = np.where(inset, decisions == labels, unknown)
    oos = ~inset
    if open_scores is None:
        open_scores = np.exp(log_softmax(logpost).max(axis=1))
    open_scores = np.asarray(open_scores, dtype=np.float64)
    return {
        "unknown_threshold": unknown_threshold,
        "num_out_of_set": int(oos.sum()),
        "accuracy": float(correct.mean()) if len(labels) else float("nan"),
        "oos_false_accept": float((decisions[oos] >= 0).mean()) if oos.any() else float("nan"),
        "oos_unknown_rate": float(unknown[oos].mean()) if oos.any() else float("nan"),
        "inset_accuracy": accuracy(labels[inset], decisions[inset]),
        "inset_unknown_rate": float(unknown[inset].mean()) if inset.any() else float("nan"),
        "Cavg": cavg(labels[inset], decisions[inset], num_langs),
        "Cavg_open": open_set_cavg(labels, decisions, num_langs),
        "minCavg_open": min_open_set_cavg(labels, logpost)[0],
        "unknown_EER": unknown_eer(labels[scored], open_scores[scored]),
    }


def _one_hot(decisions: np.ndarray, num_langs: int) -> np.ndarray:
    accept = np.zeros((len(decisions), num_langs), dtype=bool)
    known = decisions >= 0
    accept[np.flatnonzero(known), decisions[known]] = True
    return accept


def json_ready(value: Any) -> Any:
    """Make a metrics structure strict-JSON: numpy scalars to Python, NaN/inf to ``None``."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value
