"""Plots: attention over segments, confusion matrices, DET curves, language turns
(``lre plot``).

Every ``*_figure`` function builds and returns a matplotlib ``Figure`` (for tests and
notebooks); the matching ``plot_*`` function saves it to PNG, SVG or PDF (chosen by the file
extension) and closes it. Matplotlib runs on the non-interactive Agg backend.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import mlab  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lre.inference.records import ResultRecord, find_record  # noqa: E402
from lre.utils import LreError, atomic_open  # noqa: E402

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

FORMATS = ("png", "svg", "pdf")
#: Highest number of languages drawn separately in a timeline; the rest are summed as "other".
TIMELINE_LANGS = 6
_DPI = 150


def save_figure(fig: Figure, out_path: PathLike) -> Path:
    """Save ``fig`` atomically as PNG/SVG/PDF according to the extension, then close it."""
    out_path = Path(out_path)
    fmt = out_path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        plt.close(fig)
        raise LreError(f"{out_path}: unsupported plot format '{out_path.suffix}' "
                       f"(use .png, .svg or .pdf)")
    try:
        with atomic_open(out_path, "wb") as f:
            fig.savefig(f, format=fmt, dpi=_DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out_path


# ----------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------


def _posterior_title(title: str | None, posteriors: Mapping[str, float] | None,
                     top_k: int, decision: str | None = None) -> str:
    parts = [title] if title else []
    if posteriors:
        ranked = sorted(posteriors.items(), key=lambda kv: -kv[1])
        pred, p = ranked[0]
        if decision is not None and decision != pred:  # e.g. "unknown" from the open set
            parts.append(f"answer {decision} (top {pred}, p = {p:.3f})")
        else:
            parts.append(f"predicted {pred} (p = {p:.3f})")
        if len(ranked) > 1:
            parts.append("top: " + ", ".join(f"{lang} {q:.3f}" for lang, q in ranked[:top_k]))
    return "  |  ".join(parts)


def _draw_waveform(ax: Any, wave: np.ndarray, sample_rate: int) -> None:
    """Waveform; long signals are drawn as a min/max envelope (a few thousand columns)."""
    n = len(wave)
    columns = 4000
    if n > 2 * columns:
        hop = math.ceil(n / columns)
        pad = (-n) % hop
        blocks = np.pad(wave, (0, pad)).reshape(-1, hop)
        t = (np.arange(len(blocks)) * hop + hop / 2) / sample_rate
        ax.fill_between(t, blocks.min(axis=1), blocks.max(axis=1), color="tab:blue", lw=0)
    else:
        ax.plot(np.arange(n) / sample_rate, wave, color="tab:blue", lw=0.6)
    peak = float(np.max(np.abs(wave))) if n else 1.0
    ax.set_ylim(-1.05 * max(peak, 1e-4), 1.05 * max(peak, 1e-4))
    ax.set_ylabel("amplitude")


def _draw_spectrogram(ax: Any, wave: np.ndarray, sample_rate: int) -> None:
    """Log-power spectrogram (32 ms Hann windows, 80 dB range), frequency in kHz."""
    nfft = 2 ** max(6, round(math.log2(0.032 * sample_rate)))
    if len(wave) < nfft:
        wave = np.pad(wave, (0, nfft - len(wave)))
    # Keep at most ~4000 columns so minutes of audio stay light.
    hop = max(nfft // 4, math.ceil(len(wave) / 4000))
    noverlap = max(nfft - hop, 0)
    spec, freqs, times = mlab.specgram(
        wave, NFFT=nfft, Fs=sample_rate, noverlap=noverlap, window=np.hanning(nfft),
        mode="psd")
    db = 10.0 * np.log10(np.maximum(spec, 1e-20))
    top = float(db.max())
    step = times[1] - times[0] if len(times) > 1 else nfft / sample_rate
    extent = (times[0] - step / 2, times[-1] + step / 2, freqs[0] / 1000, freqs[-1] / 1000)
    ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma",
              vmin=top - 80.0, vmax=top, interpolation="nearest")
    ax.set_ylabel("frequency (kHz)")


def _timeline_matrix(timeline: np.ndarray) -> np.ndarray:
    """Per-segment posteriors; log-posteriors (any negative value) are exponentiated."""
    timeline = np.asarray(timeline, dtype=np.float64)
    if (timeline < 0).any():
        timeline = np.exp(timeline - timeline.max(axis=1, keepdims=True))
    sums = timeline.sum(axis=1, keepdims=True)
    return timeline / np.where(sums > 0, sums, 1.0)


def attention_figure(
    wave: np.ndarray,
    sample_rate: int,
    segments: Sequence[Mapping[str, float]],
    title: str | None = None,
    posteriors: Mapping[str, float] | None = None,
    timeline: np.ndarray | None = None,
    langs: Sequence[str] | None = None,
    top_k: int = 3,
    decision: str | None = None,
) -> Figure:
    """Waveform, spectrogram and one attention-weight bar per segment over a shared time axis.

    Args:
        wave: ``(samples,)`` audio.
        sample_rate: samples per second of ``wave``.
        segments: ``[{"start", "end", "weight"}, ...]`` in seconds of ``wave``'s time.
        title: first part of the title (utterance id, file name).
        posteriors: ``{lang: p}``; the predicted language and the ``top_k`` posteriors go in
            the title.
        timeline: optional ``(segments, langs)`` per-segment posteriors (or log-posteriors)
            drawn as stacked bars, one per segment, the ``TIMELINE_LANGS`` most likely
            languages coloured and the rest summed as "other".
        langs: the timeline's column names.
        decision: the answer given (a language or ``"unknown"``), when it need not be the
            top posterior's language; the title says both.

    The attention axes (``fig.axes[2]``, label ``"attention"``) hold one bar per segment.
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if timeline is not None:
        timeline = _timeline_matrix(timeline)
        if timeline.shape[0] != len(segments):
            raise LreError(f"timeline has {timeline.shape[0]} rows for {len(segments)} segments")
        if langs is None or len(langs) != timeline.shape[1]:
            raise LreError("timeline needs one language name per column (langs)")
    rows = 4 if timeline is not None else 3
    ratios = [1.0, 1.6, 1.0] + ([1.2] if timeline is not None else [])
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.0 * rows + 0.6), sharex=True,
                             gridspec_kw={"height_ratios": ratios})
    ax_wave, ax_spec, ax_att = axes[:3]
    duration = max(len(wave) / sample_rate,
                   max((float(s["end"]) for s in segments), default=0.0))

    _draw_waveform(ax_wave, wave, sample_rate)
    _draw_spectrogram(ax_spec, wave, sample_rate)

    starts = np.array([float(s["start"]) for s in segments])
    ends = np.array([float(s["end"]) for s in segments])
    weights = np.array([float(s["weight"]) for s in segments])
    peak = float(weights.max()) if len(weights) else 1.0
    colours = plt.get_cmap("viridis")(weights / peak if peak > 0 else weights)
    bars = ax_att.bar(starts, weights, width=ends - starts, align="edge", color=colours,
                      edgecolor="black", linewidth=0.6, label="attention")
    for k, patch in enumerate(bars.patches):  # named groups in SVG output
        patch.set_gid(f"attention-segment-{k}")
    ax_att.set_label("attention")
    ax_att.set_ylabel("attention\nweight")
    ax_att.set_ylim(0, max(peak * 1.15, 1e-3))
    if len(segments) and len(segments) <= 40:
        uniform = 1.0 / len(segments)
        ax_att.axhline(uniform, color="grey", ls="--", lw=0.8)
        ax_att.text(duration, uniform, " uniform", va="center", ha="left", fontsize=8,
                    color="grey")
    for ax in (ax_wave, ax_spec):  # segment boundaries, faint, to relate bars and signal
        for x in np.unique(np.concatenate([starts, ends])):
            ax.axvline(x, color="white" if ax is ax_spec else "grey", lw=0.4, alpha=0.5)

    if timeline is not None:
        _draw_timeline(axes[3], timeline, list(langs), starts, ends)

    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, duration if duration > 0 else 1.0)
    for ax in axes:
        ax.grid(axis="x", alpha=0.25)
    fig.suptitle(_posterior_title(title, posteriors, top_k, decision), fontsize=11)
    fig.tight_layout()
    return fig


def _draw_timeline(ax: Any, timeline: np.ndarray, langs: list[str], starts: np.ndarray,
                   ends: np.ndarray) -> None:
    order = np.argsort(-timeline.max(axis=0), kind="stable")
    shown = list(order[:TIMELINE_LANGS])
    columns = [timeline[:, i] for i in shown]
    names = [langs[i] for i in shown]
    if len(order) > TIMELINE_LANGS:
        columns.append(timeline[:, order[TIMELINE_LANGS:]].sum(axis=1))
        names.append("other")
    colours = plt.get_cmap("tab10").colors
    bottom = np.zeros(len(starts))
    for k, (values, name) in enumerate(zip(columns, names, strict=True)):
        colour = "lightgrey" if name == "other" else colours[k % len(colours)]
        ax.bar(starts, values, width=ends - starts, bottom=bottom, align="edge", color=colour,
               edgecolor="white", linewidth=0.3, label=name)
        bottom += values
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(language)\nper segment")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def plot_attention(
    wave: np.ndarray,
    sample_rate: int,
    segments: Sequence[Mapping[str, float]],
    out_path: PathLike,
    title: str | None = None,
    posteriors: Mapping[str, float] | None = None,
    timeline: np.ndarray | None = None,
    langs: Sequence[str] | None = None,
    decision: str | None = None,
) -> Path:
    """Save :func:`attention_figure` to ``out_path`` (.png, .svg or .pdf)."""
    fig = attention_figure(wave, sample_rate, segments, title=title, posteriors=posteriors,
                           timeline=timeline, langs=langs, decision=decision)
    return save_figure(fig, out_path)


def plot_attention_record(
    record: ResultRecord | Mapping[str, Any],
    wave: np.ndarray,
    sample_rate: int,
    out_path: PathLike,
    title: str | None = None,
) -> Path:
    """Plot one result record (``attention.jsonl`` / ``lre identify --json`` line, as a
    :class:`~lre.inference.records.ResultRecord` or its dict) over its audio; the timeline
    is drawn when the record's segments carry posteriors."""
    if not isinstance(record, ResultRecord):
        record = ResultRecord.from_dict(record)
    timeline = record.timeline_array()
    matrix, langs = timeline if timeline is not None else (None, None)
    segments = [{"start": s.start, "end": s.end, "weight": s.weight} for s in record.segments]
    return plot_attention(wave, sample_rate, segments, out_path, title=title or record.id,
                          posteriors=record.posteriors, timeline=matrix, langs=langs,
                          decision=record.decision)


# ----------------------------------------------------------------------------------------
# confusion matrix and DET curves
# ----------------------------------------------------------------------------------------


def confusion_figure(
    matrix: np.ndarray,
    langs: Sequence[str],
    pred_labels: Sequence[str] | None = None,
    title: str | None = "Confusion matrix",
) -> Figure:
    """Heat map of a confusion matrix ``(true langs, predicted)``: colour = row share, text =
    count. ``pred_labels`` names the columns when they differ from ``langs`` (e.g. an extra
    ``unknown`` column; an all-zero extra column is dropped)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    pred_labels = list(pred_labels) if pred_labels is not None else list(langs)
    if matrix.shape != (len(langs), len(pred_labels)):
        raise LreError(f"confusion matrix shape {matrix.shape} does not match "
                       f"{len(langs)} x {len(pred_labels)} labels")
    while matrix.shape[1] > len(langs) and not matrix[:, -1].any():
        matrix, pred_labels = matrix[:, :-1], pred_labels[:-1]
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.where(rows > 0, rows, 1)
    size = max(4.0, 0.55 * max(matrix.shape) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(pred_labels)), pred_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(langs)), list(langs))
    ax.set_xlabel("predicted language")
    ax.set_ylabel("true language")
    if matrix.shape[0] * matrix.shape[1] <= 900:
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true language")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_confusion(matrix: np.ndarray, langs: Sequence[str], out: PathLike,
                   pred_labels: Sequence[str] | None = None,
                   title: str | None = "Confusion matrix") -> Path:
    """Save :func:`confusion_figure` to ``out``."""
    return save_figure(confusion_figure(matrix, langs, pred_labels, title), out)


_DET_TICKS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9]


def _labels_to_index(labels: Sequence[Any], langs: Sequence[str]) -> np.ndarray:
    labels = list(labels)
    if labels and isinstance(labels[0], str):
        index = {lang: i for i, lang in enumerate(langs)}
        return np.array([index.get(x, -1) for x in labels], dtype=np.int64)
    return np.asarray(labels, dtype=np.int64)


def det_figure(
    scores: np.ndarray,
    labels: Sequence[Any],
    langs: Sequence[str],
    title: str | None = "DET curves",
    pooled: bool = True,
) -> Figure:
    """DET curves (miss vs false-alarm probability on probit axes), one per language.

    ``scores`` ``(utts, langs)`` are llrs or log-posteriors; ``labels`` language indices or
    names (others are skipped). Language l's curve uses its column: target trials from its
    utterances, non-target trials from the others'. ``pooled`` adds the curve of all trials.
    """
    from scipy.stats import norm
    from sklearn.metrics import det_curve

    from lre.metrics import _finite_for_ranking, detection_trials, eer

    scores = np.asarray(scores, dtype=np.float64)
    lab = _labels_to_index(labels, langs)
    keep = lab >= 0
    scores, lab = scores[keep], lab[keep]
    lo = 0.0005

    def probit(p: np.ndarray) -> np.ndarray:
        return norm.ppf(np.clip(p, lo, 1 - lo))

    fig, ax = plt.subplots(figsize=(7, 6.4))
    colours = plt.get_cmap("tab10").colors
    dashes = ["-", "--", "-.", ":"]
    drawn = 0
    curves = [(name, lab == i, scores[:, i]) for i, name in enumerate(langs)]
    if pooled:
        is_target, flat = detection_trials(lab, scores)
        curves.append(("pooled", is_target, flat))
    for k, (name, is_target, col) in enumerate(curves):
        if is_target.all() or not is_target.any():
            continue
        # From the first threshold with no miss to the last with a false alarm; rates of 0
        # land on the axes' edges through the clipped probit.
        fpr, fnr, _ = det_curve(is_target, _finite_for_ranking(col))
        e = eer(is_target, col)
        style = {"color": "black", "lw": 2.2} if name == "pooled" else \
            {"color": colours[k % len(colours)], "lw": 1.4,
             "ls": dashes[(k // len(colours)) % len(dashes)]}
        ax.plot(probit(fpr), probit(fnr), label=f"{name} (EER {100 * e:.1f}%)", **style)
        drawn += 1
    ticks = probit(np.array(_DET_TICKS))
    names = [f"{100 * t:g}" for t in _DET_TICKS]
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlim(probit(np.array([lo]))[0], probit(np.array([0.95]))[0])
    ax.set_ylim(probit(np.array([lo]))[0], probit(np.array([0.95]))[0])
    ax.plot([-10, 10], [-10, 10], color="grey", ls=":", lw=0.8)  # EER line
    ax.set_xlabel("false-alarm probability (%)")
    ax.set_ylabel("miss probability (%)")
    ax.grid(alpha=0.3)
    if drawn > 8:  # many languages: the legend goes beside the axes, not over the curves
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    elif drawn:
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no language has both target and non-target trials",
                transform=ax.transAxes, ha="center")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_det(scores: np.ndarray, labels: Sequence[Any], langs: Sequence[str], out: PathLike,
             title: str | None = "DET curves") -> Path:
    """Save :func:`det_figure` to ``out``."""
    return save_figure(det_figure(scores, labels, langs, title), out)


# ----------------------------------------------------------------------------------------
# language turns
# ----------------------------------------------------------------------------------------

_LINE_STYLES = ["-", "--", "-.", ":"]
_SPEECH_ROW = "speech (VAD)"
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _draw_bands(ax: Any, rows: Sequence[tuple[str, Sequence[Any]]], colour_of: Mapping[str, Any]
                ) -> None:
    """One row of turns per ``(name, turns)``, top to bottom, each turn a box labelled with
    its language (readable without colour); the speech row's boxes go unlabelled."""
    for y, (name, turns) in enumerate(reversed(rows)):
        for t in turns:
            ax.add_patch(matplotlib.patches.Rectangle(
                (t.start, y + 0.12), t.end - t.start, 0.76, facecolor=colour_of[t.language],
                edgecolor="black", linewidth=0.8, alpha=0.85))
            if t.end - t.start > 0.35 and name != _SPEECH_ROW:
                ax.text((t.start + t.end) / 2, y + 0.5, t.language, ha="center", va="center",
                        fontsize=9, fontweight="bold", color="black",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6,
                              "alpha": 0.8})
    ax.set_yticks([y + 0.5 for y in range(len(rows))], [name for name, _ in reversed(rows)])
    ax.set_ylim(0, len(rows))


def segments_figure(
    record: ResultRecord,
    reference: Sequence[Any] | None = None,
    hypothesis: Sequence[Any] | None = None,
    speech: np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """Per-segment language posteriors of a record over time, with turn bands under them.

    Args:
        record: a result record whose segments carry posteriors.
        reference: reference turns (objects with ``start, end, language``), or None.
        hypothesis: decoded turns (default ``record.turns``).
        speech: ``(R, 2)`` speech regions in seconds, drawn as a band when given.
        title: default the record's id.

    The top axes draw one line per language (the :data:`TIMELINE_LANGS` most likely, and
    every language of a turn), point by point at segment centres, each with its own line
    style and marker; dotted vertical lines mark the reference switches.
    """
    table = record.timeline_array()
    if table is None:
        raise LreError(f"record '{record.id}': its segments have no posteriors to plot")
    post, langs = table
    hypothesis = record.turns if hypothesis is None else hypothesis
    named = [t.language for t in (*(reference or ()), *(hypothesis or ()))]
    order = [langs[i] for i in np.argsort(-post.max(axis=0), kind="stable")]
    shown = list(dict.fromkeys([*named, *order[:TIMELINE_LANGS]]))
    colours = plt.get_cmap("tab10").colors
    colour_of = {lang: colours[k % len(colours)] for k, lang in enumerate(shown)}
    rows = [(name, turns) for name, turns in (("reference", reference),
                                              ("decoded", hypothesis)) if turns is not None]
    if speech is not None:
        from lre.inference.records import Turn

        colour_of["speech"] = "lightgrey"
        rows.append((_SPEECH_ROW, [Turn(float(s), float(e), "speech") for s, e in speech]))
    fig, (ax, ax_b) = plt.subplots(2, 1, figsize=(11, 3.2 + 0.45 * max(len(rows), 1)),
                                   sharex=True,
                                   gridspec_kw={"height_ratios": [3.0, 0.45 * max(len(rows), 1)]})
    centres = np.array([(s.start + s.end) / 2 for s in record.segments])
    for k, lang in enumerate(shown):
        if lang not in langs:
            continue
        ax.plot(centres, post[:, langs.index(lang)], color=colour_of[lang], lw=1.6,
                ls=_LINE_STYLES[k % len(_LINE_STYLES)], marker=_MARKERS[k % len(_MARKERS)],
                ms=4, label=lang)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("P(language)\nper segment")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    if reference:
        from lre.segmentation.scoring import switches

        for lo, hi in switches(reference):
            for a in (ax, ax_b):
                a.axvspan(lo, hi, color="grey", alpha=0.25, lw=0) if hi > lo else \
                    a.axvline(lo, color="black", ls=":", lw=1.0)
    _draw_bands(ax_b, rows, colour_of)
    end = max([record.duration or 0.0, record.segments[-1].end if record.segments else 0.0,
               *[t.end for _, ts in rows for t in ts]])
    ax_b.set_xlim(0, end if end > 0 else 1.0)
    ax_b.set_xlabel("time (s)")
    fig.suptitle(title or record.id, fontsize=11)
    fig.tight_layout()
    return fig


def plot_segments(record: ResultRecord, out_path: PathLike, reference: Sequence[Any] | None = None,
                  hypothesis: Sequence[Any] | None = None, speech: np.ndarray | None = None,
                  title: str | None = None) -> Path:
    """Save :func:`segments_figure` to ``out_path`` (.png, .svg or .pdf)."""
    return save_figure(segments_figure(record, reference, hypothesis, speech, title), out_path)


# ----------------------------------------------------------------------------------------
# lre plot
# ----------------------------------------------------------------------------------------


def _scores_and_labels(scores_dir: PathLike, data_dir: PathLike,
                       use: str) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    from lre.data.tables import read_table
    from lre.metrics import read_scores

    name = "llr.tsv" if use == "llr" else "scores.tsv"
    utts, langs, matrix = read_scores(Path(scores_dir) / name)
    utt2lang = read_table(Path(data_dir) / "utt2lang")
    rows = [i for i, u in enumerate(utts) if u in utt2lang]
    if not rows:
        raise LreError(f"{Path(scores_dir) / name}: no scored utterance is in {data_dir}/utt2lang")
    return matrix[rows], [utt2lang[utts[i]] for i in rows], langs, [utts[i] for i in rows]


def cli_plot_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    att = sub.add_parser("attention", help="waveform, spectrogram and attention per segment",
                         description="Plot an utterance (from a data dir and attention.jsonl) "
                                     "or a file (an identify --json line and its audio).")
    att.add_argument("--attention", help="attention.jsonl written by lre score")
    att.add_argument("--utt", help="utterance id (or file name) of the record to plot")
    att.add_argument("--data", help="data dir holding the utterance's audio")
    att.add_argument("--json", help="JSON (one line) from lre identify --json")
    att.add_argument("--audio", help="audio file of the --json record")
    att.add_argument("--sample-rate", type=int, default=16000,
                     help="sample rate the audio is read at (default 16000)")
    att.add_argument("--out", required=True, help="output .png, .svg or .pdf")
    seg = sub.add_parser("segments", help="per-segment posteriors with reference and decoded "
                                          "language turns",
                         description="Plot a record's per-segment posteriors with its "
                                     "language turns (decoded with lre segment's defaults "
                                     "unless the record or --hyp has them) and the reference.")
    seg.add_argument("--records", required=True,
                     help="JSON lines: attention.jsonl, turns.jsonl or lre identify/segment "
                          "--json output")
    seg.add_argument("--utt", help="id of the record (needed when the file holds several)")
    seg.add_argument("--data", help="its data dir: speech regions (vad.scp) and reference "
                                    "(ref.rttm)")
    seg.add_argument("--ref", help="reference RTTM (default: the data dir's)")
    seg.add_argument("--hyp", help="decoded turns as RTTM (default: the record's, else decoded)")
    seg.add_argument("--out", required=True, help="output .png, .svg or .pdf")
    for kind, what in (("confusion", "confusion-matrix heat map"), ("det", "DET curves")):
        p = sub.add_parser(kind, help=f"{what} of a scored test set")
        p.add_argument("--scores-dir", required=True, help="dir with scores.tsv (and llr.tsv)")
        p.add_argument("--data", required=True, help="data dir with the utt2lang")
        p.add_argument("--out", default=None,
                       help=f"output file (default: SCORES_DIR/{kind}.png)")
        if kind == "det":
            p.add_argument("--use", choices=("llr", "scores"), default="llr",
                           help="plot llr.tsv (default) or scores.tsv")


def cli_plot(args: argparse.Namespace) -> int:
    if args.plot_kind == "attention":
        return _cli_plot_attention(args)
    if args.plot_kind == "segments":
        return _cli_plot_segments(args)
    out = args.out or str(Path(args.scores_dir) / f"{args.plot_kind}.png")
    if args.plot_kind == "det":
        use = args.use
        if use == "llr" and not (Path(args.scores_dir) / "llr.tsv").exists():
            use = "scores"
        scores, labels, langs, _ = _scores_and_labels(args.scores_dir, args.data, use)
        plot_det(scores, labels, langs, out, title=f"DET curves ({use})")
    else:
        from lre.metrics import argmax_decisions, confusion

        scores, labels, langs, _ = _scores_and_labels(args.scores_dir, args.data, "scores")
        lab = _labels_to_index(labels, langs)
        keep = lab >= 0
        cm = confusion(lab[keep], argmax_decisions(scores[keep]), len(langs))
        plot_confusion(cm, langs, out, pred_labels=[*langs, "unknown"])
    print(out)
    return 0


def _cli_plot_attention(args: argparse.Namespace) -> int:
    from lre.data.audio import load_audio

    if args.json:
        record = find_record(args.json, args.utt)
        audio = args.audio or record.source or record.id
        if not args.audio and record.source is None and not _names_audio(record.id):
            raise LreError(f"{args.json}: no --audio given and the record names no file")
        wave = load_audio(str(audio), sample_rate=args.sample_rate, name=str(audio))
        title = Path(str(audio)).name
    elif args.attention:
        if not args.utt or not args.data:
            raise LreError("lre plot attention --attention needs --utt and --data")
        from lre.data.datadir import DataDir, load_utterance

        record = find_record(args.attention, args.utt)
        wave = load_utterance(DataDir.load(args.data), args.utt, sample_rate=args.sample_rate)
        title = args.utt
    else:
        raise LreError("lre plot attention needs --attention/--utt/--data or --json/--audio")
    plot_attention_record(record, wave, args.sample_rate, args.out, title=title)
    print(args.out)
    return 0


def _cli_plot_segments(args: argparse.Namespace) -> int:
    from lre.segment import data_dir_speech, reference_rttm
    from lre.segmentation import read_rttm, record_turns
    from lre.segmentation.rttm import rttm_id

    record = find_record(args.records, args.utt)
    speech = data_dir_speech(args.data) if args.data else None
    regions = None if speech is None else speech.get(record.id)
    ref_path = args.ref or (reference_rttm(args.data) if args.data else None)
    reference = None
    if ref_path:
        reference = read_rttm(ref_path).get(rttm_id(record.id))
        if reference is None:
            raise LreError(f"{ref_path}: no turns of '{record.id}'")
    if args.hyp:
        hypothesis = read_rttm(args.hyp).get(rttm_id(record.id))
        if hypothesis is None:
            raise LreError(f"{args.hyp}: no turns of '{record.id}'")
    else:
        hypothesis = record.turns if record.turns is not None else record_turns(record, regions)
    plot_segments(record, args.out, reference=reference, hypothesis=hypothesis, speech=regions)
    print(args.out)
    return 0


def _names_audio(spec: str) -> bool:
    """Whether a record id can be read as audio: an existing file or a ``cmd |`` pipe."""
    return spec.rstrip().endswith("|") or Path(spec).is_file()
