"""Fusion of several systems' scores (``lre fuse``): linear logistic-regression fusion.

The standard of NIST LRE systems (FoCal / BOSARIS multi-class fusion). Each subsystem ``s``
(a trained model dir: the fbank HGRU, the TDNN, an HGRU over encoder states...) gives raw
log-posteriors, renormalised and floored as calibration does (``x_s``,
:mod:`lre.calibration`); the fused log-posteriors are

    log_softmax( sum_s alpha_s x_s + beta )

with one weight ``alpha_s >= 0`` per subsystem and one offset per language, fitted on dev
by the class-weighted multi-class cross-entropy (flat priors, Platt's smoothed targets) with
an L2 pull ``lambda (|alpha - 1/S|^2 + |beta|^2)`` toward equal weights (the mean of the
log-posteriors) and no offsets; ``lambda`` is chosen by cross-validation on dev, as for the
affine calibration. The fused scores are calibrated log-posteriors: a fusion needs no
calibration of its own.

:func:`fit_fusion` also estimates, by k-fold cross-validation on dev, the held-out
multi-class Cllr of the fusion and of every subsystem alone (raw, and affine-calibrated), so
``fusion.json`` (format ``lre-fusion-1``, in the fusion dir) says what fusing gains.

A fusion dir works wherever a model dir does: ``lre score --model-dir exp/fusion``,
``lre identify --model exp/fusion``, ``lre openset fit --model-dir exp/fusion`` and
``Identifier.from_pretrained("exp/fusion")`` run every subsystem on the same input and fuse
their results (:func:`fuse_results`): the posteriors as above; the segments and attention
weights are those of the first subsystem (the *lead*: list the HGRU first to keep its
attention over segments), the language timeline is fused on the lead's segments; the
embedding is the subsystems' concatenated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import log_softmax as _log_softmax

from lre.calibration import (
    DEFAULT_FOLDS,
    DEFAULT_SCORE_FLOOR,
    INNER_FOLDS,
    PENALTIES,
    _dev_labels,
    _heldout,
    _prepare,
    fit_linear,
    stratified_folds,
)
from lre.metrics import cllr_multiclass, read_scores
from lre.utils import LreError, atomic_write_text, path_list

if TYPE_CHECKING:
    from lre.inference.chunks import UtteranceResult
    from lre.inference.model_dir import TrainedModel

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

FORMAT = "lre-fusion-1"
#: The fusion file of a fusion dir.
FUSION = "fusion.json"


def is_fusion_dir(path: PathLike) -> bool:
    """Whether ``path`` is a fusion dir (holds ``fusion.json``) rather than a model dir."""
    return (Path(path) / FUSION).is_file()


# ----------------------------------------------------------------------------------------
# fitting and applying
# ----------------------------------------------------------------------------------------


def _stack(scores: Sequence[np.ndarray], floor: float) -> np.ndarray:
    """Subsystems' raw scores, each ``(utts, langs)`` -> prepared ``(S, utts, langs)``."""
    shapes = {np.shape(s) for s in scores}
    if len(shapes) != 1:
        raise LreError(f"fusion: the subsystems' score tables differ in shape: "
                       f"{', '.join(str(s) for s in sorted(shapes))}")
    return np.stack([_prepare(np.asarray(s, dtype=np.float64), floor) for s in scores])


def _fit(xs: np.ndarray, labels: np.ndarray, seed: int,
         penalty: float | None = None) -> dict[str, Any]:
    """Weights and offsets on prepared ``xs``; without a ``penalty`` the one of lowest inner
    cross-validated Cllr_mc (ties: the stronger, closer to equal weights)."""
    prior = np.full(len(xs), 1.0 / len(xs))
    cv: dict[str, float] = {}
    if penalty is None:
        for p in PENALTIES:
            cv[f"{p:g}"] = cllr_multiclass(labels, _heldout_fused(xs, labels, INNER_FOLDS,
                                                                  seed, p))
        penalty = min(PENALTIES, key=lambda p: (cv[f"{p:g}"], -p))
    alpha, beta = fit_linear(xs, labels, penalty, prior)
    out = {"weights": alpha.tolist(), "offsets": beta.tolist(), "penalty": penalty}
    if cv:
        out["penalty_cv"] = cv
    return out


def _heldout_fused(xs: np.ndarray, labels: np.ndarray, folds: int, seed: int,
                   penalty: float | None = None) -> np.ndarray:
    """Held-out fused log-posteriors ``(utts, langs)``: each fold fused with the weights
    fitted on the other folds (the penalty chosen inside them when not given)."""
    fold = stratified_folds(labels, folds, seed)
    out = np.empty(xs.shape[1:])
    for k in range(folds):
        test = fold == k
        if test.any():
            params = _fit(xs[:, ~test], labels[~test], seed, penalty)
            out[test] = _fused(params, xs[:, test])
    return out


def _fused(params: Mapping[str, Any], xs: np.ndarray) -> np.ndarray:
    alpha = np.asarray(params["weights"], dtype=np.float64)
    logits = np.tensordot(alpha, xs, axes=1) + np.asarray(params["offsets"], dtype=np.float64)
    return _log_softmax(logits, axis=1)


def fit_fusion(
    scores: Sequence[np.ndarray],
    labels: np.ndarray,
    langs: Sequence[str],
    names: Sequence[str],
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    score_floor: float = DEFAULT_SCORE_FLOOR,
) -> dict[str, Any]:
    """Fit the fusion of subsystems' raw dev scores (each ``(utts, langs)``, rows and
    columns aligned) with language indices ``labels``.

    Returns the JSON-ready fusion (without ``subsystems``' paths, which :func:`fuse` adds):
    ``names``, ``weights``, ``offsets``, ``penalty``, and ``selection``: held-out Cllr_mc
    by ``folds``-fold cross-validation of the fusion and of each subsystem raw and
    affine-calibrated.
    """
    if len(scores) < 2:
        raise LreError(f"fusion: needs at least two subsystems, got {len(scores)}")
    if len(names) != len(scores):
        raise LreError(f"fusion: {len(names)} names for {len(scores)} subsystems")
    labels = np.asarray(labels, dtype=np.int64)
    xs = _stack(scores, score_floor)
    if xs.shape[1] != len(labels) or xs.shape[2] != len(langs):
        raise LreError(f"fusion: scores {xs.shape[1:]} do not match {len(labels)} labels x "
                       f"{len(langs)} languages")
    absent = [lang for lang, k in zip(langs, np.bincount(labels, minlength=len(langs)),
                                      strict=True) if k < 2]
    if absent:
        raise LreError(f"fusion: fewer than 2 dev utterances of {', '.join(absent)}; the "
                       "fusion needs dev data of every language")
    folds = min(folds, len(labels))
    heldout = {"fusion": cllr_multiclass(labels, _heldout_fused(xs, labels, folds, seed))}
    for name, x in zip(names, xs, strict=True):
        heldout[f"{name} raw"] = cllr_multiclass(labels, x)
        heldout[f"{name} affine"] = cllr_multiclass(
            labels, _heldout("affine", x, labels, folds, seed))
    params = _fit(xs, labels, seed)
    fusion: dict[str, Any] = {"format": FORMAT, "names": list(names), **params,
                              "langs": list(langs), "score_floor": score_floor}
    fusion["selection"] = {"folds": folds, "seed": seed, "heldout_Cllr_mc": heldout}
    fusion["dev"] = {"num_utts": int(len(labels)),
                     "Cllr_mc_fused": cllr_multiclass(labels, _fused(params, xs))}
    return fusion


def apply_fusion(fusion: Mapping[str, Any], scores: Sequence[np.ndarray]) -> np.ndarray:
    """Fused log-posteriors ``(utts, langs)`` of the subsystems' raw scores (in the
    fusion's subsystem order, columns in its ``langs`` order); a single utterance
    ``(langs,)`` each gives ``(langs,)``."""
    if len(scores) != len(fusion["weights"]):
        raise LreError(f"fusion: {len(fusion['weights'])} subsystems, got scores of "
                       f"{len(scores)}")
    single = np.ndim(scores[0]) == 1
    xs = _stack([np.atleast_2d(s) for s in scores],
                float(fusion.get("score_floor", DEFAULT_SCORE_FLOOR)))
    if xs.shape[2] != len(fusion["langs"]):
        raise LreError(f"fusion: {len(fusion['langs'])} languages, scores have "
                       f"{xs.shape[2]} columns")
    out = _fused(fusion, xs)
    return out[0] if single else out


def on_segments(starts: np.ndarray, ends: np.ndarray, other_starts: np.ndarray,
                other_ends: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Another model's per-segment scores ``other (m, langs)`` on segments ``[other_starts,
    other_ends)`` carried onto segments ``[starts, ends)`` (``(k, langs)``): each segment
    gets the mean of the other's scores weighted by how many seconds they overlap, or the
    nearest of them (by centre) where none overlaps."""
    overlap = np.clip(np.minimum(ends[:, None], other_ends[None, :])
                      - np.maximum(starts[:, None], other_starts[None, :]), 0.0, None)
    total = overlap.sum(axis=1)
    none = total <= 0
    if none.any():
        centre, other_centre = (starts + ends) / 2, (other_starts + other_ends) / 2
        nearest = np.abs(centre[none, None] - other_centre[None, :]).argmin(axis=1)
        overlap[none] = 0.0
        overlap[none, nearest] = 1.0
        total = overlap.sum(axis=1)
    return (overlap / total[:, None]) @ other


def fuse_results(fusion: Mapping[str, Any],
                 results: Sequence[UtteranceResult]) -> UtteranceResult:
    """One utterance's subsystem results (same order as the fusion) -> the fused result:
    fused logits and log-posteriors; the lead's (first subsystem's) segments and attention;
    the language timeline on the lead's segments, fused by the same weights from every
    subsystem's timeline carried onto those segments (:func:`on_segments`; the lead's alone
    when another has none); the embeddings concatenated (None unless every subsystem gives
    one)."""
    lead = results[0]
    logpost = apply_fusion(fusion, [r.log_posteriors for r in results])
    embedding = None
    if all(r.embedding is not None for r in results):
        embedding = np.concatenate([np.asarray(r.embedding, np.float64).ravel()
                                    for r in results])
    timeline = lead.segment_log_posteriors
    if timeline is not None and len(timeline) and \
            all(r.segment_log_posteriors is not None and len(r.starts) for r in results):
        timeline = apply_fusion(fusion, [timeline] + [
            on_segments(lead.starts, lead.ends, r.starts, r.ends, r.segment_log_posteriors)
            for r in results[1:]])
    return dataclasses.replace(lead, logits=logpost, log_posteriors=logpost,
                               segment_log_posteriors=timeline, embedding=embedding)


# ----------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------


def save_fusion(path: PathLike, fusion: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(fusion, indent=2) + "\n")


def load_fusion(path: PathLike) -> dict[str, Any]:
    """Read and check ``fusion.json`` (the file, or the fusion dir holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / FUSION
    try:
        fusion = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LreError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LreError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(fusion, dict) or fusion.get("format") != FORMAT:
        raise LreError(f"{path}: not an lre fusion file (format != {FORMAT})")
    missing = [k for k in ("subsystems", "weights", "offsets", "langs") if k not in fusion]
    if missing:
        raise LreError(f"{path}: missing field(s) {', '.join(missing)}")
    if len(fusion["subsystems"]) != len(fusion["weights"]) or \
            len(fusion["offsets"]) != len(fusion["langs"]):
        raise LreError(f"{path}: {len(fusion['subsystems'])} subsystems with "
                       f"{len(fusion['weights'])} weights, {len(fusion['langs'])} languages "
                       f"with {len(fusion['offsets'])} offsets")
    return fusion


def subsystem_dirs(fusion_dir: PathLike, fusion: Mapping[str, Any]) -> list[Path]:
    """The subsystems' model dirs (stored relative to the fusion dir)."""
    return [Path(fusion_dir) / d for d in fusion["subsystems"]]


def _column_order(langs: Sequence[str], fusion_langs: Sequence[str], source: str) -> list[int]:
    """Indices that put ``langs`` columns in the fusion's order (same set required)."""
    if sorted(langs) != sorted(fusion_langs):
        raise LreError(f"{source}: languages {' '.join(langs)} differ from the fusion's "
                       f"{' '.join(fusion_langs)}")
    return [list(langs).index(lang) for lang in fusion_langs]


# ----------------------------------------------------------------------------------------
# a fusion dir as a model: lre score, lre openset fit
# ----------------------------------------------------------------------------------------


class AlreadyCalibrated:
    """The calibrator of a fusion: its fused log-posteriors are calibrated already."""

    active = True

    def __call__(self, log_post: np.ndarray) -> np.ndarray:
        return np.atleast_2d(np.asarray(log_post, dtype=np.float64))


@dataclasses.dataclass
class FusedModel:
    """The subsystems of a fusion dir, loaded, and the fusion (``langs`` in its order)."""

    fusion: dict[str, Any]
    subsystems: list[TrainedModel]
    langs: list[str]
    calibrator: AlreadyCalibrated


def load_fused_model(fusion_dir: PathLike, checkpoint: str = "final.pt",
                     device: str = "cpu") -> FusedModel:
    from lre.inference.model_dir import load_trained_model

    fusion = load_fusion(fusion_dir)
    models = [load_trained_model(d, checkpoint, device=device)
              for d in subsystem_dirs(fusion_dir, fusion)]
    for d, m in zip(fusion["subsystems"], models, strict=True):
        _column_order(m.langs, fusion["langs"], str(d))
    return FusedModel(fusion, models, list(fusion["langs"]), AlreadyCalibrated())


def in_language_order(result: UtteranceResult, langs: Sequence[str],
                      target: Sequence[str]) -> UtteranceResult:
    """A result over ``langs`` with its columns put in the ``target`` order (same set)."""
    if list(langs) == list(target):
        return result
    order = _column_order(langs, target, "subsystem")
    seg = result.segment_log_posteriors
    return dataclasses.replace(result, logits=result.logits[order],
                               log_posteriors=result.log_posteriors[order],
                               segment_log_posteriors=None if seg is None else seg[:, order])


def fuse_subsystem_results(fused: FusedModel, per_subsystem: Sequence[Mapping[str, Any]]
                           ) -> dict[str, UtteranceResult]:
    """``{utt: result}`` of every subsystem -> the fused ``{utt: result}`` of the
    utterances every subsystem has."""
    common = set(per_subsystem[0]).intersection(*per_subsystem[1:])
    return {u: fuse_results(fused.fusion, [in_language_order(r[u], m.langs, fused.langs)
                                           for r, m in zip(per_subsystem, fused.subsystems,
                                                           strict=True)])
            for u in per_subsystem[0] if u in common}


def data_dirs_for(models: int, data_dir: PathLike | Sequence[PathLike]) -> list[Path]:
    """One data dir per model of a fusion: the one given for all, or one each."""
    dirs = path_list(data_dir)
    if len(dirs) == 1:
        return dirs * models
    if len(dirs) != models:
        raise LreError(f"--data: give one data dir, or one per model of the fusion ({models}, "
                       f"got {len(dirs)})")
    return dirs


def run_fused_datadir(fused: FusedModel, data_dir: PathLike | Sequence[PathLike],
                      **options: Any) -> tuple[dict[str, UtteranceResult], dict[str, str], int]:
    """:func:`lre.score.run_datadir` of every subsystem on its data dir, fused: ``(results,
    failed, number of utterances)``; an utterance that failed in any subsystem fails."""
    from lre.score import run_datadir

    per, failed, total = [], {}, 0
    for model, d in zip(fused.subsystems, data_dirs_for(len(fused.subsystems), data_dir),
                           strict=True):
        results, bad, n = run_datadir(model, d, **options)
        per.append(results)
        failed.update({u: why for u, why in bad.items() if u not in failed})
        total = max(total, n)
    results = fuse_subsystem_results(fused, per)
    for u in set().union(*per) - set(results):
        failed.setdefault(u, "not scored by every subsystem of the fusion")
    return results, failed, total


# ----------------------------------------------------------------------------------------
# lre fuse
# ----------------------------------------------------------------------------------------


def _dev_scores(model_dirs: Sequence[Path], data_dirs: Sequence[Path],
                score_files: Sequence[PathLike] | None) -> tuple[list[str], list[str],
                                                                 list[np.ndarray]]:
    """The subsystems' raw dev scores on the utterances they share: ``(utts, langs,
    [scores (utts, langs)])``, columns in the first subsystem's language order."""
    tables: list[tuple[list[str], list[str], np.ndarray]] = []
    if score_files is not None:
        if len(score_files) != len(model_dirs):
            raise LreError(f"--scores: {len(score_files)} tables for {len(model_dirs)} "
                           "subsystems (one raw dev score table each, in the same order)")
        tables = [read_scores(f) for f in score_files]
    else:
        from lre.data.tables import c_sorted
        from lre.inference.model_dir import load_trained_model
        from lre.score import run_datadir

        for m, d in zip(model_dirs, data_dirs, strict=True):
            model = load_trained_model(m)
            results, failed, _ = run_datadir(model, d)
            if failed:
                log.warning("%s on %s: %d utterances could not be scored; left out", m, d,
                            len(failed))
            utts = c_sorted(results)
            tables.append((utts, model.langs,
                           np.stack([results[u].log_posteriors for u in utts])))
    langs = tables[0][1]
    common = set(tables[0][0]).intersection(*(set(t[0]) for t in tables[1:]))
    utts = [u for u in tables[0][0] if u in common]
    if len(utts) < len(tables[0][0]):
        log.warning("fusion: %d dev utterances are not scored by every subsystem; left out",
                    len(tables[0][0]) - len(utts))
    out = []
    for (t_utts, t_langs, t_scores), m in zip(tables, model_dirs, strict=True):
        row = {u: i for i, u in enumerate(t_utts)}
        order = _column_order(t_langs, langs, str(m))
        out.append(t_scores[[row[u] for u in utts]][:, order])
    return utts, list(langs), out


def fuse(
    model_dirs: Sequence[PathLike],
    data: PathLike | Sequence[PathLike],
    out_dir: PathLike,
    scores: Sequence[PathLike] | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> dict[str, Any]:
    """``lre fuse``: fit the fusion of the models in ``model_dirs`` on dev, write
    ``<out_dir>/fusion.json``. The dev scores are each model run on ``data`` (one dev data
    dir, or one per model for models of different front ends) unless ``scores`` gives
    their raw dev score tables (``scores_raw.tsv`` of ``lre score``); the labels are those
    of the (first) dev data dir. Returns the fusion."""
    model_dirs = [Path(m) for m in model_dirs]
    data_dirs = data_dirs_for(len(model_dirs), data)
    for m in model_dirs:
        if is_fusion_dir(m):
            raise LreError(f"{m}: is a fusion itself; fuse the models it fuses instead")
    utts, langs, tables = _dev_scores(model_dirs, data_dirs, scores)
    keep, labels = _dev_labels(scores[0] if scores else data_dirs[0], data_dirs[0], utts,
                               langs)
    names = [m.name for m in model_dirs]
    fusion = fit_fusion([t[keep] for t in tables], np.asarray(labels), langs, names,
                        folds=folds, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fusion["subsystems"] = [os.path.relpath(m.resolve(), out_dir.resolve()) for m in model_dirs]
    fusion["fit_on"] = {"data": [os.fspath(d) for d in data_dirs],
                        "scores": None if scores is None else [os.fspath(s) for s in scores]}
    save_fusion(out_dir / FUSION, fusion)
    cv = fusion["selection"]["heldout_Cllr_mc"]
    log.info("fusion of %s on %d dev utterances: weights %s, penalty %g; held-out Cllr_mc "
             "(%d-fold): %s bits; wrote %s", " + ".join(names), len(labels),
             " ".join(f"{w:.3f}" for w in fusion["weights"]), fusion["penalty"],
             fusion["selection"]["folds"], ", ".join(f"{k} {v:.4f}" for k, v in cv.items()),
             out_dir / FUSION)
    return fusion


def cli_fuse_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dirs", nargs="+", required=True, metavar="DIR",
                        help="the subsystems' model dirs, e.g. exp/hgru exp/tdnn (the first "
                             "one's attention and timeline are the fusion's)")
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR",
                        help="dev data dir with features (one, or one per model when their "
                             "front ends differ); its utt2lang gives the labels")
    parser.add_argument("--out", required=True, help="fusion dir to write, e.g. exp/fusion")
    parser.add_argument("--scores", nargs="+", default=None, metavar="TSV",
                        help="the models' raw dev score tables (scores_raw.tsv), one per "
                             "model, instead of running the models on --data")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                        help=f"cross-validation folds (default {DEFAULT_FOLDS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")


def cli_fuse(args: argparse.Namespace) -> int:
    fusion = fuse(args.model_dirs, args.data, args.out, scores=args.scores, folds=args.folds,
                  seed=args.seed)
    cv = fusion["selection"]["heldout_Cllr_mc"]
    print("held-out dev Cllr_mc (bits, cross-validated):")
    for name, value in cv.items():
        print(f"  {name:<24} {value:.4f}")
    print("weights: " + ", ".join(f"{n} {w:.3f}" for n, w in
                                  zip(fusion["names"], fusion["weights"], strict=True)))
    print(f"wrote {Path(args.out) / FUSION}")
    return 0
