"""Open-set recognition: when to answer "unknown" (``lre openset fit``).

A model knows its languages only; speech in any other gets one of them, often with a high
posterior. An *open-set score* ``s(x)`` says how much an utterance looks like one of the
model's languages (higher = more), and an *operating point* answers "unknown" when
``s(x) < threshold``. The scores (:data:`METHODS`, simplest first):

- ``max_posterior``: the top calibrated posterior, max_l P(l | x) (the usual baseline).
- ``energy``: logsumexp_l z_l(x) of the raw logits z (Liu et al., "Energy-based
  out-of-distribution detection", NeurIPS 2020): the softmax discards this offset, which
  is larger for inputs like the training data.
- ``other_class``: log P(in-set | x) / P(other | x) = logsumexp_l z_l(x) - z_other(x), for a
  model trained with an "other" class (:data:`lre.languages.OTHER`: utterances of languages
  the corpus lacks, disjoint from dev_oos's and test_oos's): the softmax over its languages
  and that class.
- ``mahalanobis``: -min_l (e - mu_l)^T P (e - mu_l) over the model's utterance embedding e
  (``ModelOutput.embedding``: the HGRU's attention-pooled vector), with the mean mu_l of
  each language and one shared covariance (its inverse P) of the dev embeddings around their
  language's mean, shrunk toward a scaled identity by Ledoit and Wolf's formula (Lee et al.,
  "A simple unified framework for detecting out-of-distribution samples", NeurIPS 2018).

:func:`fit_openset` runs on two dev sets of the model (never on test data): in-set dev
(``data/dev``, the model's languages) and out-of-set dev (``data/dev_oos``, other languages).
The threshold of each method rejects ``inset_reject`` (default 5%) of the in-set dev
utterances; ``mahalanobis``, whose means and covariance are fitted on in-set dev, gets its
in-set dev scores by k-fold cross-fitting (each fold scored with means and covariance of the
others, stratified by language), so that the threshold does not rest on scores of the very
utterances that made the means. ``auto`` (the default) takes the method with the lowest
unknown-detection EER (in-set dev against out-of-set dev: the whole ranking, steadier on a
few hundred utterances than the one point of the threshold); ties go to the one that answers
"unknown" for more of out-of-set dev at its threshold, then to the simpler method. The saved
operating point (``<model_dir>/openset.json``, format ``lre-openset-1``) holds the method,
its parameters, the threshold, and every candidate's figures on dev.

``lre score``, ``lre identify`` and :class:`lre.Identifier` use it by default
(:func:`load_openset`); ``--unknown-threshold P`` replaces it with ``max_posterior`` at P; a
model dir without one answers a language always and says so once in the log. ``lre score``
writes each utterance's open-set score beside the scores (``openset.tsv``: ``utt``,
``score``, ``unknown`` 1/0, and ``openset.json``: the operating point without parameters),
which ``lre evaluate`` reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import logsumexp

from lre.metrics import unknown_eer
from lre.utils import LreError, atomic_open, atomic_write_text, path_list

if TYPE_CHECKING:
    from lre.inference.chunks import UtteranceResult

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

FORMAT = "lre-openset-1"
#: The operating point in a model dir, and its summary beside scores.
OPENSET = "openset.json"
#: Each scored utterance's open-set score and answer, beside scores.tsv.
OPENSET_SCORES = "openset.tsv"
METHODS = ("max_posterior", "energy", "other_class", "mahalanobis")
DEFAULT_INSET_REJECT = 0.05
DEFAULT_FOLDS = 5
#: In-set dev utterances every language needs for ``mahalanobis`` (its mean).
MIN_PER_LANG = 5
#: Significant digits of the stored means and precision (float32 precision).
_DIGITS = 7


# ----------------------------------------------------------------------------------------
# inputs and scores
# ----------------------------------------------------------------------------------------


@dataclass
class OpenSetInputs:
    """What the open-set scores read, for ``n`` utterances.

    Attributes:
        log_posteriors: ``(n, langs)`` calibrated log-posteriors over all the model's
            languages.
        logits: ``(n, langs)`` the model's raw logits.
        embeddings: ``(n, dim)`` the model's utterance embeddings, or None when the runner
            gives none.
        other_logits: ``(n,)`` the logit of the model's "other" class, or None for a
            model without one.
    """

    log_posteriors: np.ndarray
    logits: np.ndarray
    embeddings: np.ndarray | None = None
    other_logits: np.ndarray | None = None

    @classmethod
    def from_results(cls, results: Sequence[UtteranceResult],
                     log_posteriors: np.ndarray) -> OpenSetInputs:
        """From the runner's results and their calibrated log-posteriors ``(n, langs)``."""
        embeddings = None
        if results and all(r.embedding is not None for r in results):
            embeddings = np.stack([np.asarray(r.embedding, np.float64) for r in results])
        other = None
        if results and all(r.other_logit is not None for r in results):
            other = np.array([r.other_logit for r in results], np.float64)
        return cls(np.atleast_2d(np.asarray(log_posteriors, np.float64)),
                   np.stack([np.asarray(r.logits, np.float64) for r in results]), embeddings,
                   other)

    def take(self, rows: np.ndarray) -> OpenSetInputs:
        """The inputs of ``rows`` (an index or bool array)."""
        return OpenSetInputs(self.log_posteriors[rows], self.logits[rows],
                             None if self.embeddings is None else self.embeddings[rows],
                             None if self.other_logits is None else self.other_logits[rows])


def fit_gaussians(embeddings: np.ndarray, labels: np.ndarray, num_langs: int
                  ) -> dict[str, Any]:
    """Language means ``(langs, dim)`` and the shared precision ``(dim, dim)`` of
    ``embeddings`` ``(n, dim)`` with ``labels`` ``(n,)`` (every language present): the
    Ledoit-Wolf covariance of each embedding's deviation from its language's mean."""
    from sklearn.covariance import LedoitWolf

    means = np.stack([embeddings[labels == k].mean(axis=0) for k in range(num_langs)])
    lw = LedoitWolf(assume_centered=True).fit(embeddings - means[labels])
    return {"means": means, "precision": lw.precision_, "shrinkage": float(lw.shrinkage_)}


def _mahalanobis(params: Mapping[str, Any], embeddings: np.ndarray) -> np.ndarray:
    """-min over languages of the squared Mahalanobis distance ``(n,)``."""
    means = np.asarray(params["means"], np.float64)
    prec = np.asarray(params["precision"], np.float64)
    ep = embeddings @ prec
    d2 = (np.einsum("nd,nd->n", ep, embeddings)[:, None] - 2.0 * ep @ means.T
          + np.einsum("ld,ld->l", means @ prec, means)[None, :])
    return -d2.min(axis=1)


def open_set_scores(method: str, params: Mapping[str, Any], inputs: OpenSetInputs
                    ) -> np.ndarray:
    """The open-set score ``(n,)`` of each utterance (higher = a known language)."""
    if method == "max_posterior":
        return np.exp(inputs.log_posteriors.max(axis=1))
    if method == "energy":
        return logsumexp(inputs.logits, axis=1)
    if method == "other_class":
        if inputs.other_logits is None:
            raise LreError("open set: other_class needs a model trained with an 'other' "
                           "class; this one has none")
        return logsumexp(inputs.logits, axis=1) - inputs.other_logits
    if method == "mahalanobis":
        if inputs.embeddings is None:
            raise LreError("open set: mahalanobis needs the model's utterance embedding, "
                           "which this model runner does not give")
        dim = np.asarray(params["means"]).shape[1]
        if inputs.embeddings.shape[1] != dim:
            raise LreError(f"open set: the model's embeddings have {inputs.embeddings.shape[1]}"
                           f" dimensions, the operating point's means {dim}")
        return _mahalanobis(params, inputs.embeddings)
    raise LreError(f"open set: unknown method {method!r} (choose from {', '.join(METHODS)})")


def operating_threshold(inset_scores: np.ndarray, inset_reject: float) -> float:
    """The threshold below which ``inset_reject`` of ``inset_scores`` lie (``k = floor(
    inset_reject n)`` of them, halfway between the k-th and the next; below all for k = 0)."""
    s = np.sort(np.asarray(inset_scores, np.float64))
    k = int(math.floor(inset_reject * len(s) + 1e-9))
    if k == 0:
        return float(s[0])
    return float((s[k - 1] + s[k]) / 2.0) if k < len(s) else float(np.inf)


# ----------------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------------


def _fit_params(method: str, inputs: OpenSetInputs, labels: np.ndarray, num_langs: int
                ) -> dict[str, Any]:
    return (fit_gaussians(inputs.embeddings, labels, num_langs)  # type: ignore[arg-type]
            if method == "mahalanobis" else {})


def _heldout_scores(method: str, inputs: OpenSetInputs, labels: np.ndarray, num_langs: int,
                    folds: int, seed: int) -> np.ndarray:
    """In-set dev scores of ``method`` that no fitted parameter has seen (cross-fitting)."""
    from lre.calibration import stratified_folds

    if method != "mahalanobis":
        return open_set_scores(method, {}, inputs)
    fold = stratified_folds(labels, folds, seed)
    out = np.empty(len(labels))
    for k in range(folds):
        test = fold == k
        if test.any():
            params = _fit_params(method, inputs.take(~test), labels[~test], num_langs)
            out[test] = open_set_scores(method, params, inputs.take(test))
    return out


def _candidates(inset: OpenSetInputs, labels: np.ndarray, langs: Sequence[str],
                folds: int) -> tuple[list[str], dict[str, str]]:
    """The methods that can be fitted, and why the others cannot."""
    counts = np.bincount(labels, minlength=len(langs))
    lacking = [lang for lang, c in zip(langs, counts, strict=True) if c < max(MIN_PER_LANG, folds)]
    skipped = {}
    if inset.other_logits is None:
        skipped["other_class"] = "the model has no 'other' class"
    if inset.embeddings is None:
        skipped["mahalanobis"] = "the model gives no utterance embedding"
    elif lacking:
        skipped["mahalanobis"] = (f"needs {max(MIN_PER_LANG, folds)} in-set dev utterances of "
                                  f"every language; fewer of {', '.join(lacking)}")
    return [m for m in METHODS if m not in skipped], skipped


def _candidate_figures(method: str, inset: OpenSetInputs, labels: np.ndarray,
                       oos: OpenSetInputs, num_langs: int, inset_reject: float, folds: int,
                       seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(figures on dev, parameters fitted on all in-set dev)`` of one method."""
    params = _fit_params(method, inset, labels, num_langs)
    held = _heldout_scores(method, inset, labels, num_langs, folds, seed)
    oos_scores = open_set_scores(method, params, oos)
    thr = operating_threshold(held, inset_reject)
    pooled = np.concatenate([np.zeros(len(held), np.int64), -np.ones(len(oos_scores), np.int64)])
    figures = {"threshold": thr,
               "oos_unknown_rate": float(np.mean(oos_scores < thr)),
               "inset_unknown_rate": float(np.mean(held < thr)),
               "unknown_EER": unknown_eer(pooled, np.concatenate([held, oos_scores]))}
    return figures, params


def _choose(figures: Mapping[str, Mapping[str, Any]]) -> str:
    """The lowest unknown-detection EER, then the most out-of-set dev answered unknown,
    then the simpler method."""
    def key(m: str) -> tuple[float, float, int]:
        eer = figures[m]["unknown_EER"]
        return (eer if eer == eer else 1.0, -figures[m]["oos_unknown_rate"], METHODS.index(m))
    return min(figures, key=key)


def fit_openset(
    inset: OpenSetInputs,
    labels: np.ndarray,
    oos: OpenSetInputs,
    langs: Sequence[str],
    method: str = "auto",
    inset_reject: float = DEFAULT_INSET_REJECT,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> dict[str, Any]:
    """Choose and fit an open-set operating point (module docstring).

    Args:
        inset: the in-set dev utterances' inputs; ``labels`` ``(n,)`` their language
            indices into ``langs`` (the model's languages).
        oos: the out-of-set dev utterances' inputs.
        method: ``auto`` or one of :data:`METHODS`.
        inset_reject: share of in-set dev utterances the threshold rejects.
        folds, seed: the cross-fitting of ``mahalanobis``.

    Returns the operating point as saved (:func:`save_openset`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if method != "auto" and method not in METHODS:
        raise LreError(f"open set: unknown method {method!r} (choose auto or one of "
                       f"{', '.join(METHODS)})")
    if not 0.0 <= inset_reject < 1.0:
        raise LreError(f"open set: the in-set share to reject must be in [0, 1), got "
                       f"{inset_reject}")
    if folds < 2:
        raise LreError(f"open set: cross-fitting needs at least 2 folds, got {folds}")
    if len(labels) == 0 or len(oos.logits) == 0:
        raise LreError("open set: needs in-set and out-of-set dev utterances")
    names, skipped = _candidates(inset, labels, langs, folds)
    for m, why in skipped.items():
        log.warning("open set: %s not tried: %s", m, why)
    if method != "auto" and method not in names:
        raise LreError(f"open set: {method} cannot be fitted: {skipped[method]}")
    figures, params = {}, {}
    for m in names:
        figures[m], params[m] = _candidate_figures(m, inset, labels, oos, len(langs),
                                                   inset_reject, folds, seed)
    chosen = _choose(figures) if method == "auto" else method
    return {
        "format": FORMAT,
        "method": chosen,
        "threshold": figures[chosen]["threshold"],
        "inset_reject": inset_reject,
        "langs": list(langs),
        "params": _stored(params[chosen]),
        "selection": {"asked": method, "folds": folds, "seed": seed,
                      "criterion": "the unknown-detection EER of dev against dev_oos, then "
                                   "the share of dev_oos answered unknown at the threshold, "
                                   "then the simpler method",
                      "candidates": figures, "not_tried": skipped},
        "dev": {"num_inset": int(len(labels)), "num_oos": int(len(oos.logits))},
    }


def _stored(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values (arrays to nested lists of ``_DIGITS`` digits)."""
    def value(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return np.vectorize(lambda x: float(f"{x:.{_DIGITS}g}"), otypes=[float])(v).tolist()
        return v
    return {k: value(v) for k, v in params.items()}


# ----------------------------------------------------------------------------------------
# the operating point: saved, loaded, applied
# ----------------------------------------------------------------------------------------


def save_openset(path: PathLike, spec: Mapping[str, Any]) -> None:
    """Write an operating point as JSON, atomically."""
    atomic_write_text(path, json.dumps(spec, indent=1) + "\n")


def _check_spec(spec: Any, path: PathLike) -> None:
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise LreError(f"{path}: not an lre open-set file (format != {FORMAT})")
    if spec.get("method") not in METHODS:
        raise LreError(f"{path}: unknown open-set method {spec.get('method')!r}")
    thr = spec.get("threshold")
    if isinstance(thr, bool) or not isinstance(thr, int | float) or math.isnan(thr):
        raise LreError(f"{path}: 'threshold' is not a number ({thr!r})")
    if spec["method"] == "mahalanobis":
        params = spec.get("params") or {}
        try:
            means = np.asarray(params["means"], np.float64)
            prec = np.asarray(params["precision"], np.float64)
        except (KeyError, TypeError, ValueError):
            raise LreError(f"{path}: mahalanobis needs params.means and params.precision "
                           "(numbers)") from None
        if means.ndim != 2 or prec.shape != (means.shape[1], means.shape[1]):
            raise LreError(f"{path}: means {means.shape} and precision {prec.shape} do not "
                           "fit (langs x dim, dim x dim)")


class OpenSet:
    """An operating point: "unknown" when the open-set score is below ``threshold``.

    Attributes:
        method, threshold, params: as in the saved file (module docstring).
        source: where it came from (a file, or ``--unknown-threshold``).
    """

    def __init__(self, spec: Mapping[str, Any], source: str) -> None:
        self.spec = dict(spec)
        self.method: str = spec["method"]
        self.threshold = float(spec["threshold"])
        self.params: dict[str, Any] = dict(spec.get("params") or {})
        if self.method == "mahalanobis":  # arrays once, not per call
            self.params = {k: np.asarray(v, np.float64) if k in ("means", "precision") else v
                           for k, v in self.params.items()}
        self.source = source

    @classmethod
    def load(cls, path: PathLike) -> OpenSet:
        """Read and check an operating point file."""
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except FileNotFoundError:
            raise LreError(f"{path}: file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise LreError(f"{path}: cannot read ({e})") from None
        except json.JSONDecodeError as e:
            raise LreError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        _check_spec(spec, path)
        return cls(spec, os.fspath(path))

    @classmethod
    def top_posterior(cls, threshold: float) -> OpenSet:
        """``max_posterior`` at ``threshold``: what ``--unknown-threshold`` asks for."""
        if isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
            raise LreError(f"--unknown-threshold {threshold}: must be a posterior in [0, 1]")
        return cls({"format": FORMAT, "method": "max_posterior",
                    "threshold": float(threshold)}, "--unknown-threshold")

    @property
    def needs_embedding(self) -> bool:
        return self.method == "mahalanobis"

    def scores(self, inputs: OpenSetInputs) -> np.ndarray:
        """Open-set score ``(n,)`` of each utterance."""
        return open_set_scores(self.method, self.params, inputs)

    def unknown(self, scores: np.ndarray) -> np.ndarray:
        """``(n,)`` True where the answer is "unknown"."""
        return np.asarray(scores, np.float64) < self.threshold

    def summary(self) -> dict[str, Any]:
        """The operating point without its parameters (what a scores dir keeps)."""
        out = {"method": self.method, "threshold": self.threshold, "source": self.source}
        if "inset_reject" in self.spec:
            out["inset_reject"] = self.spec["inset_reject"]
        return out

    def describe(self) -> str:
        return f"{self.method}, unknown below {self.threshold:.6g} ({self.source})"


def load_openset(model_dir: PathLike, unknown_threshold: float | None = None
                 ) -> OpenSet | None:
    """The operating point to answer with: ``max_posterior`` at ``unknown_threshold`` when
    given, else ``<model_dir>/openset.json``, else None (always a language; logged once)."""
    if unknown_threshold is not None:
        openset = OpenSet.top_posterior(unknown_threshold)
    else:
        path = Path(model_dir) / OPENSET
        if not path.is_file():
            log.info("%s: no open-set operating point (%s): every answer is one of the "
                     "model's languages (lre openset fit makes one)", model_dir, OPENSET)
            return None
        openset = OpenSet.load(path)
    log.info("open set: %s", openset.describe())
    return openset


def write_openset_scores(out_dir: PathLike, utts: Sequence[str], openset: OpenSet | None,
                         scores: np.ndarray | None) -> None:
    """``openset.tsv`` and ``openset.json`` in a scores dir; without an operating point,
    removes those of an earlier run (they would no longer describe the scores)."""
    out_dir = Path(out_dir)
    tsv, summary = out_dir / OPENSET_SCORES, out_dir / OPENSET
    if openset is None or scores is None:
        for path in (tsv, summary):
            path.unlink(missing_ok=True)
        return
    unknown = openset.unknown(scores)
    with atomic_open(tsv, "w", encoding="utf-8") as f:
        f.write("utt\tscore\tunknown\n")
        for utt, s, u in zip(utts, scores, unknown, strict=True):
            f.write(f"{utt}\t{float(s):.6g}\t{int(u)}\n")
    atomic_write_text(summary, json.dumps(openset.summary(), indent=1) + "\n")
    log.info("open set (%s): %d of %d utterances answered unknown", openset.method,
             int(unknown.sum()), len(utts))


def read_openset_scores(scores_dir: PathLike) -> tuple[dict[str, tuple[float, bool]],
                                                        dict[str, Any]] | None:
    """``({utt: (score, unknown)}, summary)`` of a scores dir, or None without them."""
    scores_dir = Path(scores_dir)
    tsv, summary_path = scores_dir / OPENSET_SCORES, scores_dir / OPENSET
    if not tsv.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LreError(f"{summary_path}: not readable beside {tsv.name} ({e})") from None
    lines = tsv.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t") != ["utt", "score", "unknown"]:
        raise LreError(f"{tsv}:1: header must be 'utt<TAB>score<TAB>unknown'")
    out: dict[str, tuple[float, bool]] = {}
    for lineno, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        try:
            if len(fields) != 3 or fields[2] not in ("0", "1"):
                raise ValueError
            out[fields[0]] = (float(fields[1]), fields[2] == "1")
        except ValueError:
            raise LreError(f"{tsv}:{lineno}: expected 'utt<TAB>score<TAB>0|1'") from None
    return out, summary


# ----------------------------------------------------------------------------------------
# lre openset fit
# ----------------------------------------------------------------------------------------


def _dev_inputs(model: Any, data_dir: list[Path], batch_size: int
                ) -> tuple[list[str], OpenSetInputs]:
    """Run the model on a data dir's features: its utterances and open-set inputs."""
    from lre.data.tables import c_sorted
    from lre.score import run_datadir

    results, failed, total = run_datadir(model, data_dir, batch_size=batch_size)
    if failed:
        log.warning("%s: %d of %d utterances could not be read; left out", data_dir[0],
                    len(failed), total)
    if not results:
        raise LreError(f"{data_dir[0]}: no utterance could be run through the model")
    utts = c_sorted(results)
    raw = np.stack([results[u].log_posteriors for u in utts])
    return utts, OpenSetInputs.from_results([results[u] for u in utts], model.calibrator(raw))


def _inset_rows(data_dir: Path, utts: list[str], langs: list[str]) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Rows of ``utts`` with a language of the model, and those languages' indices."""
    from lre.data.tables import read_table

    utt2lang = read_table(data_dir / "utt2lang")
    index = {lang: i for i, lang in enumerate(langs)}
    rows = [i for i, u in enumerate(utts) if utt2lang.get(u) in index]
    if len(rows) < len(utts):
        log.warning("%s: %d utterances without a language of the model; left out", data_dir,
                    len(utts) - len(rows))
    return np.array(rows, np.int64), np.array([index[utt2lang[utts[i]]] for i in rows],
                                              np.int64)


def openset_fit(
    model_dir: PathLike,
    dev: PathLike | Sequence[PathLike],
    dev_oos: PathLike | Sequence[PathLike],
    out: PathLike | None = None,
    method: str = "auto",
    inset_reject: float = DEFAULT_INSET_REJECT,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    checkpoint: str = "final.pt",
    device: str = "cpu",
    batch_size: int = 32,
) -> dict[str, Any]:
    """``lre openset fit``: run the model (with its calibration) on the in-set and the
    out-of-set dev data dirs, fit the operating point, write it (default
    ``<model_dir>/openset.json``). Utterances of ``dev_oos`` in a language the model knows
    are left out. Returns the operating point."""
    from lre.data.tables import read_table
    from lre.inference.model_dir import load_model_dir

    # a fusion of models of different front ends reads a data dir per model: the first
    # one's tables give the labels
    dev_dirs, oos_dirs = path_list(dev), path_list(dev_oos)
    dev, dev_oos = dev_dirs[0], oos_dirs[0]
    model = load_model_dir(model_dir, checkpoint, device=device)  # or a fusion dir
    utts, inset = _dev_inputs(model, dev_dirs, batch_size)
    rows, labels = _inset_rows(dev, utts, model.langs)
    oos_utts, oos = _dev_inputs(model, oos_dirs, batch_size)
    oos_lang = read_table(dev_oos / "utt2lang")
    keep = np.array([oos_lang.get(u) not in model.langs for u in oos_utts])
    if not keep.all():
        log.warning("%s: %d utterances of the model's languages; left out", dev_oos,
                    int((~keep).sum()))
    spec = fit_openset(inset.take(rows), labels, oos.take(keep), model.langs, method,
                       inset_reject, folds, seed)
    spec["dev"]["oos_langs"] = sorted({oos_lang[u] for u, k in zip(oos_utts, keep,
                                                                   strict=True)
                                       if k and u in oos_lang})
    spec["fit_on"] = {"model_dir": os.fspath(model_dir), "checkpoint": checkpoint,
                      "dev": os.fspath(dev), "dev_oos": os.fspath(dev_oos)}
    if len(dev_dirs) > 1:
        spec["fit_on"]["dev_per_model"] = [os.fspath(d) for d in dev_dirs]
        spec["fit_on"]["dev_oos_per_model"] = [os.fspath(d) for d in oos_dirs]
    out = Path(out) if out is not None else Path(model_dir) / OPENSET
    save_openset(out, spec)
    log.info("open set: %s (asked: %s), unknown below %.6g; on dev at that threshold: %s; "
             "wrote %s", spec["method"], method, spec["threshold"],
             "; ".join(f"{m} {f['oos_unknown_rate']:.1%} of dev_oos unknown, "
                       f"{f['inset_unknown_rate']:.1%} of dev, EER {f['unknown_EER']:.1%}"
                       for m, f in spec["selection"]["candidates"].items()), out)
    return spec


def cli_openset_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = sub.add_parser("fit", help="fit the operating point on dev and dev_oos",
                         description="Choose an open-set score and the threshold that answers "
                                     "'unknown' on in-set and out-of-set dev data; write "
                                     "<model-dir>/openset.json.")
    fit.add_argument("--model-dir", required=True, help="experiment dir, e.g. exp/hgru")
    fit.add_argument("--dev", required=True, nargs="+", metavar="DIR",
                     help="in-set dev data dir with features (a fusion of models of "
                          "different front ends: one per model)")
    fit.add_argument("--dev-oos", required=True, nargs="+", metavar="DIR",
                     help="out-of-set dev data dir (other languages) with features (the "
                          "same)")
    fit.add_argument("--out", default=None, help="default: <model-dir>/openset.json")
    fit.add_argument("--method", choices=("auto", *METHODS), default="auto",
                     help="auto (default): the one with the lowest EER of dev against dev_oos")
    fit.add_argument("--inset-reject", type=float, default=DEFAULT_INSET_REJECT,
                     help="share of in-set dev the threshold answers unknown "
                          "(default %(default)s)")
    fit.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                     help="cross-fitting folds of mahalanobis (default %(default)s)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    fit.add_argument("--checkpoint", default="final.pt")
    fit.add_argument("--device", default="cpu")


def cli_openset(args: argparse.Namespace) -> int:
    openset_fit(args.model_dir, args.dev, args.dev_oos, out=args.out, method=args.method,
                inset_reject=args.inset_reject, folds=args.folds, seed=args.seed,
                checkpoint=args.checkpoint, device=args.device)  # logs a summary
    return 0
