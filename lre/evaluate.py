"""Evaluate a scored test set: ``results.json``, ``report.md`` and plots (``lre evaluate``).

Reads, from a scores dir written by ``lre score``: ``scores.tsv`` (log-posteriors), ``llr.tsv``
(detection llrs; derived from the scores when absent) and ``attention.jsonl`` (optional),
and from the data dir: ``utt2lang`` and, when present, ``utt2dur`` (duration buckets) and
the audio (attention plots). Writes beside the scores:

- ``results.json``: every figure of :func:`lre.metrics.compute_metrics` for the whole set and
  per duration bucket, plus the list of utterances that were not scored. Rates and costs are
  fractions, Cllr in bits; a value that cannot be computed (or is infinite) is ``null``.
  When the scores dir has ``scores_raw.tsv`` (the model's scores before calibration),
  ``raw`` holds the main figures of those (:data:`RAW_FIGURES`, and C_primary), and
  ``calibration`` puts the figures calibration is meant to improve (pooled and multi-class
  Cllr, actual C_primary) calibrated beside raw, naming any that calibration made worse.
  ``open_set`` holds the figures of the "unknown" answers (the model's operating point,
  ``openset.tsv`` of ``lre score``, or ``--unknown-threshold``); with ``--inset`` (a set of
  other languages, e.g. ``test_oos``, against the in-set set ``test``) those of this set's
  out-of-set utterances against that set's in-set ones.
- ``report.md``: summary, per-language and confusion tables, open-set figures, the
  utterances that were not scored, and links to the plots (a set of other languages only:
  the open-set figures).
- ``confusion.png``, ``det.png`` and up to ``max_attention_plots`` ``attention_<utt>.png``.

``lre evaluate --conditions exp/hgru/test exp/hgru/test_noisy ... [--out exp/hgru]`` combines
evaluated sets into one conditions table (:func:`evaluate_conditions`): it reads each set's
``results.json`` and writes ``results.json`` and ``report.md`` in ``--out``.

An utterance of ``utt2lang`` missing from ``scores.tsv`` is an error in every decision-based
figure (no language was answered) and carries no information in score-based ones (flat
posteriors, llr 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lre.inference.records import ResultRecord, read_records
from lre.metrics import (
    DURATION_BUCKETS,
    compute_metrics,
    duration_bucket,
    json_ready,
    llr_from_logpost,
    log_softmax,
    read_scores,
)
from lre.utils import LreError, atomic_write_text

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: How many unscored utterances report.md lists by name (results.json lists all).
MAX_LISTED_MISSING = 50
#: The figures of the scores before calibration kept in results.json under ``raw``.
RAW_FIGURES = ("accuracy", "Cavg", "minCavg", "EER", "Cllr", "Cllr_mc")


# ----------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------


def _read_llr(path: Path, utts: list[str], langs: list[str],
              logpost: np.ndarray) -> tuple[np.ndarray, str]:
    """llr.tsv aligned to (utts, langs), or llrs derived from the log-posteriors."""
    if not path.exists():
        return llr_from_logpost(logpost), "derived from scores.tsv"
    llr_utts, llr_langs, llr = read_scores(path)
    if sorted(llr_langs) != sorted(langs):
        raise LreError(f"{path}: languages {' '.join(llr_langs)} differ from scores.tsv's "
                       f"{' '.join(langs)}")
    row = {u: i for i, u in enumerate(llr_utts)}
    missing = [u for u in utts if u not in row]
    if missing:
        log.warning("%s: %d scored utterances have no llr row (e.g. %s); deriving all llrs "
                    "from scores.tsv", path, len(missing), missing[0])
        return llr_from_logpost(logpost), "derived from scores.tsv"
    cols = [llr_langs.index(lang) for lang in langs]
    return llr[[row[u] for u in utts]][:, cols], "llr.tsv"


# ----------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------


@dataclass
class _Aligned:
    """The scores of every labelled utterance, in ``utt2lang`` order (``n`` rows).

    Unscored utterances get flat log-posteriors and llr 0, and ``scored`` False.
    """

    utts: list[str]
    logpost: np.ndarray  # (n, langs)
    llr: np.ndarray  # (n, langs)
    labels: np.ndarray  # (n,) language index, -1 for a language the model does not know
    scored: np.ndarray  # (n,) bool
    missing: list[str]  # labelled, not scored
    unlabelled: list[str]  # scored, not labelled


def _align(utts: list[str], langs: list[str], logpost: np.ndarray, llr: np.ndarray,
           utt2lang: Mapping[str, str], labels_path: Path) -> _Aligned:
    """Put the scored rows in the order of the labelled utterances; warn about the rest."""
    row_of = {u: i for i, u in enumerate(utts)}
    eval_utts = sorted(utt2lang, key=lambda u: u.encode("utf-8", "surrogateescape"))
    lang_index = {lang: i for i, lang in enumerate(langs)}
    n_eval = len(eval_utts)
    lp = np.full((n_eval, len(langs)), -math.log(len(langs)))
    lr = np.zeros((n_eval, len(langs)))
    scored = np.zeros(n_eval, dtype=bool)
    labels = np.full(n_eval, -1, dtype=np.int64)
    for k, utt in enumerate(eval_utts):
        labels[k] = lang_index.get(utt2lang[utt], -1)
        i = row_of.get(utt)
        if i is not None:
            lp[k], lr[k], scored[k] = logpost[i], llr[i], True
    missing = [u for u, s in zip(eval_utts, scored, strict=True) if not s]
    unlabelled = [u for u in utts if u not in utt2lang]
    if missing:
        log.warning("%d of %d utterances in %s have no scores; counted as errors (e.g. %s)",
                    len(missing), n_eval, labels_path, missing[0])
    if unlabelled:
        log.warning("%d scored utterances are not in %s; ignored (e.g. %s)",
                    len(unlabelled), labels_path, unlabelled[0])
    if n_eval == 0:
        raise LreError(f"{labels_path}: no utterances to evaluate")
    return _Aligned(eval_utts, lp, lr, labels, scored, missing, unlabelled)


@dataclass
class _OpenAnswers:
    """The scores dir's open-set answers, aligned like :class:`_Aligned` (``n`` rows).

    ``unknown`` and ``scores`` are None where the answers come from ``--unknown-threshold``
    or there are none (then the top posterior ranks the utterances).
    """

    unknown: np.ndarray | None  # (n,) bool
    scores: np.ndarray | None  # (n,) open-set scores, NaN for unscored utterances
    operating_point: dict[str, Any] | None

    def take(self, sel: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        return (None if self.unknown is None else self.unknown[sel],
                None if self.scores is None else self.scores[sel])


def _open_answers(scores_dir: Path, aligned: _Aligned,
                  unknown_threshold: float | None) -> _OpenAnswers:
    """``--unknown-threshold`` when given, else ``openset.tsv`` of ``lre score`` (when the
    model had an operating point), else none."""
    from lre.openset import OPENSET_SCORES, read_openset_scores

    if unknown_threshold is not None:
        return _OpenAnswers(None, None, {"method": "max_posterior",
                                         "threshold": unknown_threshold,
                                         "source": "--unknown-threshold"})
    read = read_openset_scores(scores_dir)
    if read is None:
        return _OpenAnswers(None, None, None)
    table, summary = read
    lacking = [u for u, s in zip(aligned.utts, aligned.scored, strict=True)
               if s and u not in table]
    if lacking:
        raise LreError(f"{scores_dir / OPENSET_SCORES}: no row for {len(lacking)} scored "
                       f"utterances (e.g. {lacking[0]}); score the set again")
    rows = [table.get(u, (math.nan, False)) for u in aligned.utts]
    return _OpenAnswers(np.array([r[1] for r in rows], dtype=bool),
                        np.array([r[0] for r in rows], dtype=np.float64), summary)


def _paired_open_set(aligned: _Aligned, answers: _OpenAnswers, langs: list[str],
                     inset: tuple[PathLike, PathLike], unknown_threshold: float | None
                     ) -> dict[str, Any]:
    """Open-set figures of this set's out-of-set utterances against the in-set utterances
    of another scored set of the same model (``inset``: its scores dir and data dir)."""
    from lre.data.tables import read_table
    from lre.metrics import open_set_metrics

    in_dir, in_data = Path(inset[0]), Path(inset[1])
    in_utts, in_langs, in_scores = read_scores(in_dir / "scores.tsv")
    if in_langs != langs:
        raise LreError(f"{in_dir / 'scores.tsv'}: languages {' '.join(in_langs)} differ from "
                       f"{' '.join(langs)}: not scored by the same model")
    in_logpost = log_softmax(in_scores)
    paired = _align(in_utts, langs, in_logpost, llr_from_logpost(in_logpost),
                    read_table(in_data / "utt2lang"), in_data / "utt2lang")
    in_answers = _open_answers(in_dir, paired, unknown_threshold)
    a, b = paired.labels >= 0, aligned.labels < 0
    if (answers.unknown is None) != (in_answers.unknown is None):
        raise LreError(f"{in_dir}: its open-set answers and this set's come from different "
                       "operating points (one has openset.tsv, the other not); score both "
                       "with the same model")
    unknown = scores = None
    if answers.unknown is not None:
        unknown = np.concatenate([in_answers.take(a)[0], answers.take(b)[0]])  # type: ignore
        scores = np.concatenate([in_answers.take(a)[1], answers.take(b)[1]])  # type: ignore
    out = open_set_metrics(
        np.concatenate([paired.logpost[a], aligned.logpost[b]]),
        np.concatenate([paired.labels[a], aligned.labels[b]]), len(langs), unknown_threshold,
        scored=np.concatenate([paired.scored[a], aligned.scored[b]]), unknown=unknown,
        open_scores=scores)
    return {**out, "inset_scores": str(in_dir), "num_in_set": int(a.sum())}


def _duration_buckets(aligned: _Aligned, langs: list[str], utt2dur: Mapping[str, float],
                      unknown_threshold: float | None, durations_path: Path,
                      answers: _OpenAnswers) -> dict[str, Any]:
    """:func:`compute_metrics` of each duration bucket that has utterances."""
    names = np.array([duration_bucket(utt2dur[u]) if u in utt2dur else ""
                      for u in aligned.utts])
    no_dur = int((names == "").sum())
    if no_dur:
        log.warning("%s: %d evaluated utterances have no duration; left out of the "
                    "duration buckets", durations_path, no_dur)
    buckets: dict[str, Any] = {}
    for name in DURATION_BUCKETS:
        sel = names == name
        if sel.any():
            unknown, scores = answers.take(sel)
            buckets[name] = compute_metrics(aligned.logpost[sel], aligned.labels[sel], langs,
                                            llr=aligned.llr[sel],
                                            unknown_threshold=unknown_threshold,
                                            scored=aligned.scored[sel], unknown=unknown,
                                            open_scores=scores)
    return buckets


def _raw_figures(path: Path, aligned: _Aligned, langs: list[str]) -> dict[str, Any] | None:
    """:data:`RAW_FIGURES` of the scores before calibration, aligned like the calibrated
    ones; None (with a warning) when they do not cover the same utterances."""
    raw_utts, raw_langs, raw = read_scores(path)
    if sorted(raw_langs) != sorted(langs):
        raise LreError(f"{path}: languages {' '.join(raw_langs)} differ from scores.tsv's "
                       f"{' '.join(langs)}")
    row = {u: i for i, u in enumerate(raw_utts)}
    wanted = [u for u, s in zip(aligned.utts, aligned.scored, strict=True) if s]
    lacking = [u for u in wanted if u not in row]
    if lacking:
        log.warning("%s: %d scored utterances have no row (e.g. %s); no raw figures",
                    path, len(lacking), lacking[0])
        return None
    cols = [raw_langs.index(lang) for lang in langs]
    logpost = aligned.logpost.copy()  # unscored rows stay flat
    sel = np.flatnonzero(aligned.scored)
    logpost[sel] = log_softmax(raw[[row[u] for u in wanted]][:, cols])
    figures = compute_metrics(logpost, aligned.labels, langs, llr=llr_from_logpost(logpost),
                              scored=aligned.scored)
    return {"scores": str(path), **{key: figures[key] for key in RAW_FIGURES},
            "nist": {"C_primary": figures["nist"]["C_primary"]}}


#: The figures calibration is meant to improve: (key, report.md label, getter).
_CALIBRATION_FIGURES: tuple[tuple[str, str, Any], ...] = (
    ("Cllr", "Cllr (bits, pooled)", lambda r: r.get("Cllr")),
    ("Cllr_mc", "Cllr multi-class (bits)", lambda r: r.get("Cllr_mc")),
    ("C_primary_act", "C_primary act",
     lambda r: r.get("nist", {}).get("C_primary", {}).get("actual")),
)


def calibration_effect(results: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """``{"figures": {key: {"calibrated", "raw"}}, "raised": [keys]}``: the figures of
    :data:`_CALIBRATION_FIGURES` of the calibrated and raw scores, and those that calibration
    made worse (higher by more than the 1e-4 that the tables' rounding to 6 decimals can
    make) on this set."""
    figures = {key: {"calibrated": get(results), "raw": get(raw)}
               for key, _, get in _CALIBRATION_FIGURES}
    raised = [key for key, f in figures.items()
              if f["calibrated"] is not None and f["raw"] is not None
              and not math.isnan(f["calibrated"]) and not math.isnan(f["raw"])
              and f["calibrated"] > f["raw"] + 1e-4]
    return {"figures": figures, "raised": raised}


def evaluate(
    scores_dir: PathLike,
    data_dir: PathLike,
    unknown_threshold: float | None = None,
    plots: bool = True,
    max_attention_plots: int = 3,
    decoder: Any = None,
    collar: float = 0.25,
    inset: tuple[PathLike, PathLike] | None = None,
) -> dict[str, Any]:
    """Compute all metrics of a scored set and write results.json, report.md and plots.

    The answers are "unknown" where ``lre score`` said so (``openset.tsv``, the model's
    operating point), or, with ``unknown_threshold``, where the top posterior is below it.
    ``inset`` (the scores dir and data dir of another set of the same model, e.g.
    ``exp/hgru/test`` and ``data/test``) makes the open-set figures those of this set's
    out-of-set utterances against that set's in-set ones: how a set of other languages
    (``test_oos``) is told from the test set.

    When the data dir holds a reference RTTM (``ref.rttm``), the language turns are decoded
    too (``decoder``: :class:`lre.segmentation.DecoderOptions`, default its defaults),
    written to ``turns.rttm`` and scored (``segmentation`` in results.json, ``collar``
    seconds either side of each reference boundary not scored).

    Returns the results dict (as written to ``results.json``, before NaN -> null).
    """
    from lre.data.datadir import read_float_map
    from lre.data.tables import read_table

    scores_dir, data_dir = Path(scores_dir), Path(data_dir)
    if unknown_threshold is not None and not 0.0 <= unknown_threshold <= 1.0:
        raise LreError(f"--unknown-threshold {unknown_threshold}: must be a posterior in [0, 1]")
    utts, langs, scores = read_scores(scores_dir / "scores.tsv")
    if len(langs) < 2:
        raise LreError(f"{scores_dir / 'scores.tsv'}: needs at least 2 language columns")
    logpost = log_softmax(scores)
    llr, llr_source = _read_llr(scores_dir / "llr.tsv", utts, langs, logpost)
    utt2lang = read_table(data_dir / "utt2lang")
    durations_path = data_dir / "utt2dur"
    utt2dur = read_float_map(durations_path) if durations_path.exists() else None
    # Every labelled utterance is evaluated; unscored ones count as errors.
    aligned = _align(utts, langs, logpost, llr, utt2lang, data_dir / "utt2lang")

    results: dict[str, Any] = {
        "scores": str(scores_dir / "scores.tsv"),
        "llr": llr_source,
        "data": str(data_dir),
        "langs": langs,
        "out_of_set_langs": sorted({utt2lang[u] for u in aligned.utts} - set(langs)),
        "missing": aligned.missing,
        "num_unlabelled_scores": len(aligned.unlabelled),
    }
    answers = _open_answers(scores_dir, aligned, unknown_threshold)
    results.update(compute_metrics(aligned.logpost, aligned.labels, langs, llr=aligned.llr,
                                   unknown_threshold=unknown_threshold, scored=aligned.scored,
                                   unknown=answers.unknown, open_scores=answers.scores))
    if inset is not None:
        results["open_set"] = _paired_open_set(aligned, answers, langs, inset,
                                               unknown_threshold)
    if "open_set" in results:
        results["open_set"]["operating_point"] = answers.operating_point
    results["duration_buckets"] = {} if utt2dur is None else _duration_buckets(
        aligned, langs, utt2dur, unknown_threshold, durations_path, answers)
    raw_path = scores_dir / "scores_raw.tsv"
    raw = _raw_figures(raw_path, aligned, langs) if raw_path.exists() else None
    if raw is not None:
        results["raw"] = raw
        results["calibration"] = calibration_effect(results, raw)
    from lre.segment import evaluate_segmentation

    segmentation = evaluate_segmentation(scores_dir, data_dir, aligned.utts, decoder, collar,
                                         plots=2 if plots else 0)
    if segmentation is not None:
        results["segmentation"] = segmentation

    sel = aligned.scored
    results["plots"] = _write_plots(
        results, scores_dir, data_dir, aligned.logpost[sel], aligned.llr[sel],
        aligned.labels[sel], [u for u, s in zip(aligned.utts, sel, strict=True) if s],
        max_attention_plots) if plots else {}
    atomic_write_text(scores_dir / "results.json",
                      json.dumps(json_ready(results), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(scores_dir / "report.md", render_report(results))
    log.info("wrote %s and %s", scores_dir / "results.json", scores_dir / "report.md")
    return results


def _write_plots(results: Mapping[str, Any], scores_dir: Path, data_dir: Path,
                 logpost: np.ndarray, llr: np.ndarray, labels: np.ndarray, utts: list[str],
                 max_attention_plots: int) -> dict[str, Any]:
    """confusion.png, det.png and a few attention plots; a failing plot is logged, not fatal."""
    from lre import plots

    langs = results["langs"]
    out: dict[str, Any] = {"attention": []}
    cm = results["confusion"]
    try:
        plots.plot_confusion(np.asarray(cm["matrix"]), cm["true"], scores_dir / "confusion.png",
                             pred_labels=cm["pred"])
        out["confusion"] = "confusion.png"
    except (LreError, ValueError) as e:
        log.warning("confusion plot not written: %s", e)
    inset = labels >= 0
    try:
        plots.plot_det(llr[inset], labels[inset], langs, scores_dir / "det.png",
                       title="DET curves per language (llr)")
        out["det"] = "det.png"
    except (LreError, ValueError) as e:
        log.warning("DET plot not written: %s", e)

    att_path = scores_dir / "attention.jsonl"
    if max_attention_plots <= 0 or not att_path.exists():
        return out
    records = {r.id: r for r in read_records(att_path, skip_invalid=True)}
    chosen = _choose_attention_utts(records, logpost, labels, utts, max_attention_plots)
    if not chosen:
        return out
    try:
        from lre.data.datadir import DataDir, load_utterance

        datadir = DataDir.load(data_dir)
    except (ImportError, LreError) as e:
        log.warning("attention plots not written: cannot read the audio of %s: %s", data_dir, e)
        return out
    label_of = dict(zip(utts, labels.tolist(), strict=True))
    for utt, why in chosen:
        name = f"attention_{re.sub(r'[^A-Za-z0-9._-]', '_', utt)}.png"
        true = langs[label_of[utt]] if label_of[utt] >= 0 else "out-of-set"
        try:
            wave = load_utterance(datadir, utt, sample_rate=16000)
            plots.plot_attention_record(records[utt], wave, 16000, scores_dir / name,
                                        title=f"{utt} (true {true})")
        except (LreError, ValueError, KeyError) as e:
            log.warning("%s: attention plot not written: %s", utt, e)
            continue
        out["attention"].append({"utt": utt, "file": name, "why": why})
    return out


def _choose_attention_utts(records: Mapping[str, ResultRecord], logpost: np.ndarray,
                           labels: np.ndarray, utts: list[str],
                           limit: int) -> list[tuple[str, str]]:
    """Pick instructive utterances: the most confident correct one, the most confident error,
    then the longest correct ones (most segments)."""
    have = [i for i, u in enumerate(utts) if u in records]
    if not have:
        return []
    top = logpost.max(axis=1)
    pred = logpost.argmax(axis=1)
    correct = [i for i in have if labels[i] >= 0 and pred[i] == labels[i]]
    wrong = [i for i in have if labels[i] >= 0 and pred[i] != labels[i]]
    chosen: list[tuple[str, str]] = []
    if correct:
        chosen.append((utts[max(correct, key=lambda i: top[i])], "most confident correct"))
    if wrong:
        chosen.append((utts[max(wrong, key=lambda i: top[i])], "most confident error"))
    by_length = sorted(correct, key=lambda i: -len(records[utts[i]].segments))
    for i in by_length:
        if len(chosen) >= limit:
            break
        if utts[i] not in {u for u, _ in chosen}:
            chosen.append((utts[i], "longest correct"))
    return chosen[:limit]


# ----------------------------------------------------------------------------------------
# report.md and the summary table
# ----------------------------------------------------------------------------------------


def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    if value is None:
        return "-"
    v = float(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v * scale:.{digits}f}"


#: (row name, getter, scale, digits) of the summary table.
_SUMMARY_ROWS: list[tuple[str, Any, float, int]] = [
    ("utterances", lambda r: r["num_utts"], 1.0, 0),
    ("accuracy (%)", lambda r: r["accuracy"], 100.0, 2),
    ("Cavg x100 (argmax, Kaldi lre07)", lambda r: r["Cavg"], 100.0, 2),
    ("min-Cavg x100 (OLR)", lambda r: r["minCavg"], 100.0, 2),
    ("EER (%, pooled)", lambda r: r["EER"], 100.0, 2),
    ("Cllr (bits, pooled)", lambda r: r["Cllr"], 1.0, 3),
    ("Cllr multi-class (bits)", lambda r: r["Cllr_mc"], 1.0, 3),
    ("NIST Cavg P=0.5 act/min", lambda r: (r["nist"]["Cavg@0.5"]["actual"],
                                           r["nist"]["Cavg@0.5"]["min"]), 1.0, 3),
    ("NIST Cavg P=0.1 act/min", lambda r: (r["nist"]["Cavg@0.1"]["actual"],
                                           r["nist"]["Cavg@0.1"]["min"]), 1.0, 3),
    ("C_primary act/min", lambda r: (r["nist"]["C_primary"]["actual"],
                                     r["nist"]["C_primary"]["min"]), 1.0, 3),
]


def _cell(getter: Any, res: Mapping[str, Any], scale: float, digits: int) -> str:
    value = getter(res)
    if isinstance(value, tuple):
        return " / ".join(_fmt(v, scale, digits) for v in value)
    return _fmt(value, scale, digits)


def summary_table(results: Mapping[str, Any]) -> str:
    """Markdown table of the main figures: all utterances, then each duration bucket."""
    columns = [("all", results)] + list(results.get("duration_buckets", {}).items())
    lines = ["| metric | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, getter, scale, digits in _SUMMARY_ROWS:
        cells = [_cell(getter, res, scale, digits) for _, res in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "open_set" in results:
        rows = [("open-set accuracy (%)", "accuracy", 100.0),
                ("OOS false accepts (%)", "oos_false_accept", 100.0),
                ("in-set Cavg x100 (with unknown)", "Cavg", 100.0),
                ("open-set Cavg x100 (OLR)", "Cavg_open", 100.0),
                ("unknown-detection EER (%)", "unknown_EER", 100.0)]
        for name, key, scale in rows:
            cells = [_fmt(res.get("open_set", {}).get(key), scale) for _, res in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _per_language_table(results: Mapping[str, Any]) -> str:
    lines = ["| language | utts | precision (%) | recall (%) | F1 (%) | Pmiss (%) | Pfa (%) "
             "| EER (%) | Cllr (bits) |", "|---|" + "---:|" * 8]
    for lang, e in results["per_language"].items():
        cells = [str(e["support"]), _fmt(e["precision"], 100), _fmt(e["recall"], 100),
                 _fmt(e["f1"], 100), _fmt(e.get("Pmiss"), 100), _fmt(e.get("Pfa"), 100),
                 _fmt(e.get("EER"), 100), _fmt(e.get("Cllr"), 1, 3)]
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _confusion_table(results: Mapping[str, Any]) -> str:
    cm = results["confusion"]
    matrix = np.asarray(cm["matrix"])
    pred = list(cm["pred"])
    if matrix.shape[1] > len(cm["true"]) and not matrix[:, -1].any():
        matrix, pred = matrix[:, :-1], pred[:-1]
    lines = ["| true \\ predicted | " + " | ".join(pred) + " |",
             "|---|" + "---:|" * len(pred)]
    for lang, row in zip(cm["true"], matrix, strict=True):
        lines.append(f"| {lang} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


#: (column name, results.json key, scale, digits) of the figures that calibration changes,
#: in the calibration section of report.md and the conditions table.
_FIGURE_COLUMNS: list[tuple[str, str, float, int]] = [
    ("accuracy (%)", "accuracy", 100.0, 2),
    ("Cavg x100", "Cavg", 100.0, 2),
    ("min-Cavg x100", "minCavg", 100.0, 2),
    ("EER (%)", "EER", 100.0, 2),
    ("Cllr (bits)", "Cllr", 1.0, 3),
]


def _calibration_section(results: Mapping[str, Any]) -> list[str]:
    """Lines of report.md comparing the calibrated scores with the raw ones, if known."""
    raw = results.get("raw")
    if not raw:
        return []
    lines = ["## Calibration", "",
             f"The same figures from the scores before calibration (`{raw['scores']}`).", "",
             "| figure | calibrated | raw |", "|---|---:|---:|"]
    for name, key, scale, digits in (c for c in _FIGURE_COLUMNS if c[1] != "Cllr"):
        lines.append(f"| {name} | {_fmt(results.get(key), scale, digits)} "
                     f"| {_fmt(raw.get(key), scale, digits)} |")
    for _, name, get in _CALIBRATION_FIGURES:
        lines.append(f"| {name} | {_fmt(get(results), 1.0, 3)} | {_fmt(get(raw), 1.0, 3)} |")
    raised = calibration_effect(results, raw)["raised"]
    labels = {key: name for key, name, _ in _CALIBRATION_FIGURES}
    if raised:
        lines += ["", "**Calibration makes " + ", ".join(labels[k] for k in raised)
                  + " worse on this set** than the raw scores: the dev set it was fitted on "
                  "does not match this one."]
    return [*lines, ""]


def _open_set_section(o: Mapping[str, Any]) -> list[str]:
    """report.md's open-set figures (:func:`lre.metrics.open_set_metrics`)."""
    op = o.get("operating_point")
    if op:
        how = (f"\"unknown\" when the {op['method']} score is below {op['threshold']:.6g} "
               f"({op.get('source', '?')}"
               + (f"; chosen to reject {op['inset_reject']:.0%} of in-set dev" if
                  op.get("inset_reject") is not None else "") + ")")
    else:
        how = "none: the model always answers one of its languages"
    against = (f" against the {o['num_in_set']} in-set utterances of `{o['inset_scores']}`"
               if o.get("inset_scores") else "")
    return ["## Open set", "",
            f"Operating point: {how}. Out-of-set utterances: {o['num_out_of_set']}{against}. "
            "Unknown-detection EER: in-set against out-of-set by the open-set score (the top "
            "posterior without an operating point); open-set Cavg: the OLR challenges' "
            "open-set cost, the out-of-set languages one more class (P_target 0.5), of the "
            "answers and at the best threshold on the log-posteriors (min).", "",
            *open_set_table(o)]


def open_set_table(o: Mapping[str, Any]) -> list[str]:
    """The lines of the open-set figures' table (and a blank one)."""
    return ["| figure | value |", "|---|---:|",
            f"| out-of-set answered unknown (%) | {_fmt(o.get('oos_unknown_rate'), 100)} |",
            f"| in-set answered right (%) | {_fmt(o['inset_accuracy'], 100)} |",
            f"| in-set answered unknown (%) | {_fmt(o['inset_unknown_rate'], 100)} |",
            f"| unknown-detection EER (%) | {_fmt(o.get('unknown_EER'), 100)} |",
            f"| open-set Cavg x100 (act / min) | {_fmt(o.get('Cavg_open'), 100)} / "
            f"{_fmt(o.get('minCavg_open'), 100)} |",
            f"| open-set accuracy (%) | {_fmt(o['accuracy'], 100)} |",
            f"| in-set Cavg x100 | {_fmt(o['Cavg'], 100)} |", ""]


def render_report(results: Mapping[str, Any]) -> str:
    """The Markdown report a person reads (plots are linked only when they were written)."""
    out = ["# Language recognition results", "",
           f"- scores: `{results['scores']}` (llr: {results['llr']})",
           f"- data: `{results['data']}`",
           f"- languages ({len(results['langs'])}): {', '.join(results['langs'])}",
           f"- utterances evaluated: {results['num_utts']} "
           f"({results['num_in_set']} of the model's languages, "
           f"{results['num_unscored']} not scored)", ""]
    if results["out_of_set_langs"]:
        out.insert(-1, "- out-of-set languages in the test data: "
                   + ", ".join(results["out_of_set_langs"]))
    if results["num_in_set"] == 0 and "open_set" in results:
        # Only other languages: the closed-set figures are empty, the open set is all.
        return "\n".join([*out, *_open_set_section(results["open_set"]),
                          *_missing_section(results["missing"])]).rstrip() + "\n"
    out += ["## Summary", "",
            "Accuracy, EER and per-language rates in %; Cavg (P_target 0.5, C_miss = C_fa = 1) "
            "times 100 in two forms: from argmax decisions (each utterance accepts only its "
            "top language), the figure of Kaldi's lre07 recipe, and min-Cavg, every trial "
            "accepted above one threshold on the log-posteriors, at the best threshold, as the "
            "OLR challenge's scoring script reports it (a minimum over a grid of thresholds; "
            "exact here); NIST costs normalised (1.0 = reject all) at "
            "Bayes thresholds log((1-P)/P) on the llrs (act) and at the best threshold (min); "
            "C_primary = their mean over P = 0.5 and 0.1; Cllr in bits (0 = perfect, "
            "1 = uninformative for pooled Cllr, log2(N) for multi-class).", "",
            summary_table(results)]
    out += _calibration_section(results)
    plots = results.get("plots", {})
    links = []
    if plots.get("confusion"):
        links.append(f"![Confusion matrix]({plots['confusion']})")
    if plots.get("det"):
        links.append(f"![DET curves]({plots['det']})")
    out += ["## Per language", "", _per_language_table(results),
            "## Confusion matrix", "", "Rows: true language; columns: decision.", "",
            _confusion_table(results)]
    if links:
        out += ["## Plots", "", *[line + "\n" for line in links]]
    if plots.get("attention"):
        out += ["## Attention over segments", "",
                "Waveform, spectrogram and the attention weight of each segment "
                "(dashed line: uniform weight).", ""]
        for item in plots["attention"]:
            out += [f"### {item['utt']} ({item['why']})", "",
                    f"![attention of {item['utt']}]({item['file']})", ""]
    if "open_set" in results:
        out += _open_set_section(results["open_set"])
    if "segmentation" in results:
        from lre.segment import segmentation_report

        out += segmentation_report(results["segmentation"])
    out += _missing_section(results["missing"])
    return "\n".join(out).rstrip() + "\n"


def _missing_section(missing: Sequence[str]) -> list[str]:
    if not missing:
        return []
    shown = missing[:MAX_LISTED_MISSING]
    more = len(missing) - len(shown)
    out = ["## Utterances without scores", "",
           f"{len(missing)} utterance(s) of utt2lang have no row in scores.tsv; they count as "
           "errors (no language answered).", "",
           *[f"- `{u}`" for u in shown]]
    if more:
        out.append(f"- ... and {more} more (all listed in results.json)")
    return [*out, ""]


# ----------------------------------------------------------------------------------------
# several evaluated sets: the conditions table
# ----------------------------------------------------------------------------------------


def _read_set_results(set_dir: Path) -> dict[str, Any]:
    path = set_dir / "results.json"
    if not path.is_file():
        raise LreError(f"{path}: no such file (evaluate the set first: "
                       f"lre evaluate --scores-dir {set_dir} --data DATA)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LreError(f"{path}: not a readable results file: {e}") from e
    lacking = [k for k in ("num_utts", *RAW_FIGURES[:-1], "per_language")
               if k not in results]
    if lacking:
        raise LreError(f"{path}: no {', '.join(lacking)} (not written by lre evaluate?)")
    return results


def _condition_names(set_dirs: list[Path], out_dir: Path) -> list[str]:
    """Each set's path relative to ``out_dir`` (``test``), else as given; unique."""
    names = []
    for d in set_dirs:
        rel = os.path.relpath(d, out_dir)
        names.append(str(d) if rel.startswith("..") else rel)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise LreError(f"--conditions: {name} is given twice")
        seen.add(name)
    return names


def _condition_entry(set_dir: Path, out_dir: Path, res: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one set in the combined results.json (read, not recomputed)."""
    entry: dict[str, Any] = {
        "results": os.path.relpath(set_dir / "results.json", out_dir),
        "report": os.path.relpath(set_dir / "report.md", out_dir),
        "data": res.get("data"),
        "num_utts": res["num_utts"],
    }
    entry.update({key: res.get(key) for key in RAW_FIGURES})
    if res.get("raw"):
        entry["raw"] = {key: res["raw"].get(key) for key in RAW_FIGURES}
    if res.get("open_set"):
        entry["open_set"] = {key: res["open_set"].get(key) for _, key in _OPEN_COLUMNS}
    return entry


#: (column name, results.json open_set key) of the conditions table, when a set has them.
_OPEN_COLUMNS: list[tuple[str, str]] = [
    ("in-set unknown (%)", "inset_unknown_rate"),
    ("OOS unknown (%)", "oos_unknown_rate"),
    ("unknown EER (%)", "unknown_EER"),
]


def conditions_out_dir(set_dirs: Sequence[PathLike]) -> Path:
    """Where the conditions table goes by default: the folder holding the sets."""
    parents = [os.path.dirname(os.path.normpath(d)) or "." for d in set_dirs]
    try:
        return Path(os.path.commonpath(parents))
    except ValueError:  # relative and absolute paths mixed
        return Path(os.path.commonpath([os.path.abspath(p) for p in parents]))


def evaluate_conditions(set_dirs: Sequence[PathLike],
                        out_dir: PathLike | None = None,
                        compare: Sequence[PathLike] = ()) -> dict[str, Any]:
    """One table of the test conditions: the figures of each evaluated set side by side.

    Each of ``set_dirs`` (``exp/hgru/test``, ``exp/hgru/test_noisy``, ...) holds the
    ``results.json`` and ``report.md`` of ``lre evaluate``; their figures are read, not
    recomputed. Writes ``results.json`` (per condition: utterances, accuracy, Cavg, min-Cavg,
    EER, Cllr, and ``raw`` the same before calibration when the set has them) and
    ``report.md`` (the conditions table, then each condition's per-language table) in
    ``out_dir``, by default the folder holding the sets. ``compare``: other systems' dirs
    with such a combined ``results.json`` (e.g. the subsystems of a fusion); their figures
    and these go side by side into ``systems`` and a table per figure in the report.

    Returns the combined results (as written, after NaN -> null).
    """
    dirs = [Path(d) for d in set_dirs]
    if not dirs:
        raise LreError("--conditions: no evaluated sets given")
    out = Path(out_dir) if out_dir is not None else conditions_out_dir(dirs)
    names = _condition_names(dirs, out)
    per_set = {name: _read_set_results(d) for name, d in zip(names, dirs, strict=True)}
    combined = json_ready({"conditions": {
        name: _condition_entry(d, out, per_set[name]) for name, d in zip(names, dirs, strict=True)
    }})
    if compare:
        combined["systems"] = _systems(out, combined["conditions"], compare)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json",
                      json.dumps(combined, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "report.md", render_conditions_report(combined, per_set))
    log.info("wrote %s and %s", out / "results.json", out / "report.md")
    return combined


def conditions_table(combined: Mapping[str, Any]) -> str:
    """Markdown table, one row per condition; ``a / b`` cells: calibrated / raw scores."""
    conditions = combined["conditions"]
    any_raw = any(c.get("raw") for c in conditions.values())
    suffix = " cal / raw" if any_raw else ""
    open_cols = _OPEN_COLUMNS if any(c.get("open_set") for c in conditions.values()) else []
    names = [name + suffix for name, *_ in _FIGURE_COLUMNS] + [name for name, _ in open_cols]
    lines = ["| condition | utts | " + " | ".join(names) + " |",
             "|---|" + "---:|" * (len(names) + 1)]
    for name, c in conditions.items():
        cells = [_fmt(c["num_utts"], 1.0, 0)]
        for _, key, scale, digits in _FIGURE_COLUMNS:
            cell = _fmt(c.get(key), scale, digits)
            if c.get("raw"):
                cell += " / " + _fmt(c["raw"].get(key), scale, digits)
            cells.append(cell)
        cells += [_fmt((c.get("open_set") or {}).get(key), 100.0) for _, key in open_cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _systems(out: Path, conditions: Mapping[str, Any],
             compare: Sequence[PathLike]) -> dict[str, dict[str, Any]]:
    """``{system: {condition: figures}}`` of this system (``out``'s name) and each of
    ``compare`` (its combined ``results.json``)."""
    systems = {out.name: dict(conditions)}
    for d in (Path(c) for c in compare):
        path = d / "results.json"
        try:
            other = json.loads(path.read_text(encoding="utf-8"))["conditions"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise LreError(f"{path}: no conditions table (run stage 4 of that model, or "
                           "lre evaluate --conditions ... --out "
                           f"{d})") from None
        name = d.name if d.name not in systems else str(d)
        systems[name] = other
    return systems


#: (title, results.json key, scale, digits, open-set figure) of the systems tables.
_SYSTEM_FIGURES: list[tuple[str, str, float, int, bool]] = [
    ("accuracy (%)", "accuracy", 100.0, 2, False),
    ("EER (%)", "EER", 100.0, 2, False),
    ("min-Cavg x100", "minCavg", 100.0, 2, False),
    ("Cllr (bits)", "Cllr", 1.0, 3, False),
    ("unknown EER (%)", "unknown_EER", 100.0, 2, True),
]


def systems_tables(systems: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown table per figure: rows the conditions of the first system, columns
    the systems (``-`` where a system lacks the condition or the figure)."""
    names = list(systems)
    conditions = list(next(iter(systems.values())))
    out = []
    for title, key, scale, digits, open_set in _SYSTEM_FIGURES:
        rows = []
        for cond in conditions:
            cells = [(systems[n].get(cond) or {}) for n in names]
            vals = [(c.get("open_set") or {}).get(key) if open_set else c.get(key)
                    for c in cells]
            if all(v is None for v in vals):
                continue
            rows.append(f"| {cond} | " + " | ".join(_fmt(v, scale, digits) for v in vals)
                        + " |")
        if rows:
            out += [f"{title}:", "", "| condition | " + " | ".join(names) + " |",
                    "|---|" + "---:|" * len(names), *rows, ""]
    return "\n".join(out)


def render_conditions_report(combined: Mapping[str, Any],
                             per_set: Mapping[str, Mapping[str, Any]]) -> str:
    """report.md of the conditions: their table, then each one's per-language table."""
    out = ["# Language recognition results by test condition", "",
           "Accuracy, EER in %; Cavg (P_target 0.5, C_miss = C_fa = 1) times 100 from argmax "
           "decisions (Kaldi lre07's figure), and min-Cavg at the best single threshold on "
           "the log-posteriors (the OLR challenge's figure); "
           "EER and Cllr pooled over languages, Cllr in bits. Where a cell holds two "
           "figures, the first is of the calibrated scores, the second of the raw ones.", "",
           conditions_table(combined)]
    if combined.get("systems"):
        out += ["## Systems side by side", "",
                "This system and those it is compared with (e.g. the subsystems of a "
                "fusion), on the same conditions, from their own reports.", "",
                systems_tables(combined["systems"])]
    for name, c in combined["conditions"].items():
        res = per_set[name]
        out += [f"## {name}", "",
                f"{c['num_utts']} utterances of `{c['data']}`; full report: "
                f"[{c['report']}]({c['report']}).", ""]
        if res.get("num_in_set", 1) == 0 and res.get("open_set"):
            out += ["Languages the model does not know only:", "",
                    *open_set_table(res["open_set"])]
        else:
            out.append(_per_language_table(res))
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------


def cli_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores-dir",
                        help="dir with scores.tsv (and llr.tsv, attention.jsonl) from lre score")
    parser.add_argument("--data", help="the scored data dir (utt2lang, utt2dur)")
    parser.add_argument("--unknown-threshold", type=float, default=None,
                        help="answer 'unknown' when the top posterior is below this "
                             "(instead of the answers of the model's open-set operating point, "
                             "openset.tsv); adds open-set figures")
    parser.add_argument("--inset", nargs=2, metavar=("SCORES_DIR", "DATA_DIR"), default=None,
                        help="open-set figures of this set's out-of-set utterances against the "
                             "in-set ones of another set of the same model, e.g. "
                             "--inset exp/hgru/test data/test for test_oos")
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument("--attention-plots", type=int, default=3,
                        help="how many utterances' attention to plot (default 3)")
    parser.add_argument("--conditions", nargs="+", metavar="DIR",
                        help="instead: combine evaluated sets (dirs with results.json, e.g. "
                             "exp/hgru/test exp/hgru/test_noisy) into one conditions table")
    parser.add_argument("--compare", nargs="+", default=(), metavar="DIR",
                        help="with --conditions: other systems' dirs with their conditions "
                             "results.json (e.g. exp/hgru exp/tdnn, the subsystems of a "
                             "fusion), tabulated side by side with this one")
    parser.add_argument("--out", default=None,
                        help="with --conditions: where results.json and report.md go "
                             "(default: the folder holding the sets)")
    from lre.segment import add_decoder_arguments

    seg = parser.add_argument_group("language turns (data dirs with a reference ref.rttm)")
    # a scores dir does not name its model, so nothing is read from a model dir here
    add_decoder_arguments(seg, from_model_dir=False)
    seg.add_argument("--collar", type=float, default=0.25,
                     help="seconds either side of a reference boundary not scored "
                          "(default %(default)s)")


def cli_evaluate(args: argparse.Namespace) -> int:
    if args.conditions:
        if args.scores_dir or args.data:
            raise LreError("--conditions combines evaluated sets: give it without "
                           "--scores-dir and --data")
        combined = evaluate_conditions(args.conditions, args.out, compare=args.compare)
        print(conditions_table(combined), end="")
        if combined.get("systems"):
            print("\n" + systems_tables(combined["systems"]), end="")
        out = Path(args.out) if args.out else conditions_out_dir(args.conditions)
        print(f"report: {out / 'report.md'}")
        return 0
    if not args.scores_dir or not args.data:
        raise LreError("give --scores-dir and --data (or --conditions DIR...)")
    from lre.segment import decoder_options

    results = evaluate(args.scores_dir, args.data, unknown_threshold=args.unknown_threshold,
                       plots=not args.no_plots, max_attention_plots=args.attention_plots,
                       decoder=decoder_options(args), collar=args.collar,
                       inset=tuple(args.inset) if args.inset else None)
    if results["num_in_set"] == 0 and "open_set" in results:  # other languages only
        print("\n".join(open_set_table(results["open_set"])), end="")
    else:
        print(summary_table(results), end="")
    print(f"report: {Path(args.scores_dir) / 'report.md'}")
    return 0
