"""Evaluate a scored test set: ``results.json``, ``report.md`` and plots (``lre evaluate``).

Reads, from a scores dir written by ``lre score``: ``scores.tsv`` (log-posteriors), ``llr.tsv``
(detection llrs; derived from the scores when absent) and ``attention.jsonl`` (optional),
and from the data dir: ``utt2lang`` and, when present, ``utt2dur`` (duration buckets) and
the audio (attention plots). Writes beside the scores:

- ``results.json``: every figure of :func:`lre.metrics.compute_metrics` for the whole set and
  per duration bucket, plus the list of utterances that were not scored. Rates and costs are
  fractions, Cllr in bits; a value that cannot be computed (or is infinite) is ``null``.
  When the scores dir has ``scores_raw.tsv`` (the model's scores before calibration),
  ``raw`` holds the main figures of those (:data:`RAW_FIGURES`).
- ``report.md``: summary, per-language and confusion tables, open-set figures, the
  utterances that were not scored, and links to the plots.
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


def _duration_buckets(aligned: _Aligned, langs: list[str], utt2dur: Mapping[str, float],
                      unknown_threshold: float | None, durations_path: Path) -> dict[str, Any]:
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
            buckets[name] = compute_metrics(aligned.logpost[sel], aligned.labels[sel], langs,
                                            llr=aligned.llr[sel],
                                            unknown_threshold=unknown_threshold,
                                            scored=aligned.scored[sel])
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
    return {"scores": str(path), **{key: figures[key] for key in RAW_FIGURES}}


def evaluate(
    scores_dir: PathLike,
    data_dir: PathLike,
    unknown_threshold: float | None = None,
    plots: bool = True,
    max_attention_plots: int = 3,
) -> dict[str, Any]:
    """Compute all metrics of a scored set and write results.json, report.md and plots.

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
    results.update(compute_metrics(aligned.logpost, aligned.labels, langs, llr=aligned.llr,
                                   unknown_threshold=unknown_threshold, scored=aligned.scored))
    results["duration_buckets"] = {} if utt2dur is None else _duration_buckets(
        aligned, langs, utt2dur, unknown_threshold, durations_path)
    raw_path = scores_dir / "scores_raw.tsv"
    raw = _raw_figures(raw_path, aligned, langs) if raw_path.exists() else None
    if raw is not None:
        results["raw"] = raw

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
    ("Cavg x100 (argmax)", lambda r: r["Cavg"], 100.0, 2),
    ("min-Cavg x100", lambda r: r["minCavg"], 100.0, 2),
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
                ("in-set Cavg x100 (with unknown)", "Cavg", 100.0)]
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
    for name, key, scale, digits in [*_FIGURE_COLUMNS,
                                     ("Cllr multi-class (bits)", "Cllr_mc", 1.0, 3)]:
        lines.append(f"| {name} | {_fmt(results.get(key), scale, digits)} "
                     f"| {_fmt(raw.get(key), scale, digits)} |")
    return [*lines, ""]


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
    out += ["## Summary", "",
            "Accuracy, EER and per-language rates in %; Cavg (Kaldi lre07 / OLR: P_target 0.5, "
            "C_miss = C_fa = 1) times 100, from argmax decisions and at the best single "
            "threshold on the log-posteriors; NIST costs normalised (1.0 = reject all) at "
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
        o = results["open_set"]
        thr = o["unknown_threshold"]
        thr_text = thr if thr is not None else "none (always answers a language)"
        out += ["## Open set", "",
                f"Unknown threshold: {thr_text}; out-of-set utterances: {o['num_out_of_set']}.", "",
                "| figure | value |", "|---|---:|",
                f"| open-set accuracy (%) | {_fmt(o['accuracy'], 100)} |",
                f"| out-of-set false accepts (%) | {_fmt(o['oos_false_accept'], 100)} |",
                f"| in-set accuracy (%) | {_fmt(o['inset_accuracy'], 100)} |",
                f"| in-set answered unknown (%) | {_fmt(o['inset_unknown_rate'], 100)} |",
                f"| in-set Cavg x100 | {_fmt(o['Cavg'], 100)} |", ""]
    missing = results["missing"]
    if missing:
        shown = missing[:MAX_LISTED_MISSING]
        more = len(missing) - len(shown)
        out += ["## Utterances without scores", "",
                f"{len(missing)} utterance(s) of utt2lang have no row in scores.tsv; they count as "
                "errors (no language answered).", "",
                *[f"- `{u}`" for u in shown]]
        if more:
            out.append(f"- ... and {more} more (all listed in results.json)")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


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
    return entry


def conditions_out_dir(set_dirs: Sequence[PathLike]) -> Path:
    """Where the conditions table goes by default: the folder holding the sets."""
    parents = [os.path.dirname(os.path.normpath(d)) or "." for d in set_dirs]
    try:
        return Path(os.path.commonpath(parents))
    except ValueError:  # relative and absolute paths mixed
        return Path(os.path.commonpath([os.path.abspath(p) for p in parents]))


def evaluate_conditions(set_dirs: Sequence[PathLike],
                        out_dir: PathLike | None = None) -> dict[str, Any]:
    """One table of the test conditions: the figures of each evaluated set side by side.

    Each of ``set_dirs`` (``exp/hgru/test``, ``exp/hgru/test_noisy``, ...) holds the
    ``results.json`` and ``report.md`` of ``lre evaluate``; their figures are read, not
    recomputed. Writes ``results.json`` (per condition: utterances, accuracy, Cavg, min-Cavg,
    EER, Cllr, and ``raw`` the same before calibration when the set has them) and
    ``report.md`` (the conditions table, then each condition's per-language table) in
    ``out_dir``, by default the folder holding the sets.

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
    lines = ["| condition | utts | " + " | ".join(name + suffix for name, *_ in _FIGURE_COLUMNS)
             + " |", "|---|" + "---:|" * (len(_FIGURE_COLUMNS) + 1)]
    for name, c in conditions.items():
        cells = [_fmt(c["num_utts"], 1.0, 0)]
        for _, key, scale, digits in _FIGURE_COLUMNS:
            cell = _fmt(c.get(key), scale, digits)
            if c.get("raw"):
                cell += " / " + _fmt(c["raw"].get(key), scale, digits)
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_conditions_report(combined: Mapping[str, Any],
                             per_set: Mapping[str, Mapping[str, Any]]) -> str:
    """report.md of the conditions: their table, then each one's per-language table."""
    out = ["# Language recognition results by test condition", "",
           "Accuracy, EER in %; Cavg (Kaldi lre07 / OLR: P_target 0.5, C_miss = C_fa = 1) "
           "times 100, from argmax decisions, and min-Cavg at the best single threshold; "
           "EER and Cllr pooled over languages, Cllr in bits. Where a cell holds two "
           "figures, the first is of the calibrated scores, the second of the raw ones.", "",
           conditions_table(combined)]
    for name, c in combined["conditions"].items():
        res = per_set[name]
        out += [f"## {name}", "",
                f"{c['num_utts']} utterances of `{c['data']}`; full report: "
                f"[{c['report']}]({c['report']}).", "",
                _per_language_table(res)]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------


def cli_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores-dir",
                        help="dir with scores.tsv (and llr.tsv, attention.jsonl) from lre score")
    parser.add_argument("--data", help="the scored data dir (utt2lang, utt2dur)")
    parser.add_argument("--unknown-threshold", type=float, default=None,
                        help="answer 'unknown' when the top posterior is below this; adds "
                             "open-set figures")
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument("--attention-plots", type=int, default=3,
                        help="how many utterances' attention to plot (default 3)")
    parser.add_argument("--conditions", nargs="+", metavar="DIR",
                        help="instead: combine evaluated sets (dirs with results.json, e.g. "
                             "exp/hgru/test exp/hgru/test_noisy) into one conditions table")
    parser.add_argument("--out", default=None,
                        help="with --conditions: where results.json and report.md go "
                             "(default: the folder holding the sets)")


def cli_evaluate(args: argparse.Namespace) -> int:
    if args.conditions:
        if args.scores_dir or args.data:
            raise LreError("--conditions combines evaluated sets: give it without "
                           "--scores-dir and --data")
        combined = evaluate_conditions(args.conditions, args.out)
        print(conditions_table(combined), end="")
        out = Path(args.out) if args.out else conditions_out_dir(args.conditions)
        print(f"report: {out / 'report.md'}")
        return 0
    if not args.scores_dir or not args.data:
        raise LreError("give --scores-dir and --data (or --conditions DIR...)")
    results = evaluate(args.scores_dir, args.data, unknown_threshold=args.unknown_threshold,
                       plots=not args.no_plots, max_attention_plots=args.attention_plots)
    print(summary_table(results), end="")
    print(f"report: {Path(args.scores_dir) / 'report.md'}")
    return 0
