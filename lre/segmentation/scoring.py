"""How well language turns match a reference: the segmentation metrics.

- Identification error rate (IER), as pyannote.metrics' ``IdentificationErrorRate`` and
  NIST's speaker-error tools compute it, with the language as the label and no mapping:
  over the scored time, ``IER = (missed + false alarm + confusion) / reference speech``.
  At each instant with ``r`` reference and ``h`` hypothesis turns, ``max(r - h, 0)`` is
  missed, ``max(h - r, 0)`` false alarm, and ``min(r, h) - correct`` confusion, where
  ``correct`` counts the labels both share. ``collar`` seconds either side of every
  reference turn's start and end are not scored (md-eval's collar; pyannote's ``collar``
  is the whole width, ``2 * collar``).
- Boundary error: for each reference switch (two consecutive reference turns of different
  languages; the switch is the pause between them, or their common boundary), the distance
  to the nearest detected switch of the same recording; 0 when a detected switch lies in
  the reference pause. Median and 90th percentile over the switches of recordings where
  anything was detected; switches of recordings with no detected switch are counted apart.
- Single-language recordings: the share of reference recordings in one language whose
  turns name one language (and the share that name the right one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lre.inference.records import Turn

Turns = Mapping[str, Sequence[Turn]]


def _collar_zones(ref: Sequence[Turn], collar: float) -> list[tuple[float, float]]:
    if collar <= 0:
        return []
    return [(t - collar, t + collar) for turn in ref for t in (turn.start, turn.end)]


def error_components(ref: Sequence[Turn], hyp: Sequence[Turn], collar: float = 0.0
                     ) -> dict[str, float]:
    """Seconds of ``reference``, ``missed``, ``false_alarm``, ``confusion`` and ``correct``
    speech of one recording (see the module docstring)."""
    zones = _collar_zones(ref, collar)
    times = sorted({x for t in (*ref, *hyp) for x in (t.start, t.end)}
                   | {x for z in zones for x in z})
    out = dict.fromkeys(("reference", "missed", "false_alarm", "confusion", "correct"), 0.0)
    for a, b in zip(times[:-1], times[1:], strict=True):
        mid, dur = (a + b) / 2, b - a
        if dur <= 0 or any(lo < mid < hi for lo, hi in zones):
            continue
        r = Counter(t.language for t in ref if t.start <= mid < t.end)
        h = Counter(t.language for t in hyp if t.start <= mid < t.end)
        nr, nh = sum(r.values()), sum(h.values())
        correct = sum((r & h).values())
        out["reference"] += nr * dur
        out["missed"] += max(nr - nh, 0) * dur
        out["false_alarm"] += max(nh - nr, 0) * dur
        out["confusion"] += (min(nr, nh) - correct) * dur
        out["correct"] += correct * dur
    return out


def identification_error(ref: Turns, hyp: Turns, files: Iterable[str] | None = None,
                         collar: float = 0.0) -> dict[str, float]:
    """Error components summed over ``files`` (default: every file of ``ref``) and the
    ``IER`` with its three parts as shares of the reference speech (NaN without any)."""
    names = list(ref) if files is None else list(files)
    total = dict.fromkeys(("reference", "missed", "false_alarm", "confusion", "correct"), 0.0)
    for name in names:
        for key, value in error_components(ref.get(name, ()), hyp.get(name, ()),
                                           collar).items():
            total[key] += value
    speech = total["reference"]

    def share(seconds: float) -> float:
        return seconds / speech if speech > 0 else float("nan")

    return {"IER": share(total["missed"] + total["false_alarm"] + total["confusion"]),
            "missed": share(total["missed"]), "false_alarm": share(total["false_alarm"]),
            "confusion": share(total["confusion"]),
            "reference_seconds": speech,
            **{f"{k}_seconds": total[k] for k in ("missed", "false_alarm", "confusion")}}


def switches(turns: Sequence[Turn]) -> list[tuple[float, float]]:
    """Each change of language between consecutive turns, as the interval between them
    (a point when they touch)."""
    ordered = sorted(turns, key=lambda t: (t.start, t.end))
    out = []
    for prev, nxt in zip(ordered[:-1], ordered[1:], strict=True):
        if prev.language != nxt.language:
            out.append((min(prev.end, nxt.start), max(prev.end, nxt.start)))
    return out


def boundary_errors(ref: Turns, hyp: Turns, files: Iterable[str] | None = None
                    ) -> dict[str, Any]:
    """Distance (seconds) from each reference switch to the nearest detected one."""
    names = list(ref) if files is None else list(files)
    distances: list[float] = []
    undetected = detected_total = 0
    for name in names:
        ref_sw, hyp_sw = switches(ref.get(name, ())), switches(hyp.get(name, ()))
        detected_total += len(hyp_sw)
        if not hyp_sw:
            undetected += len(ref_sw)
            continue
        for lo, hi in ref_sw:
            distances.append(min(max(0.0, a - hi, lo - b) for a, b in hyp_sw))
    d = np.array(distances)
    return {"median": float(np.median(d)) if len(d) else float("nan"),
            "p90": float(np.percentile(d, 90)) if len(d) else float("nan"),
            "within_0.5s": float((d <= 0.5).mean()) if len(d) else float("nan"),
            "reference_switches": len(d) + undetected,
            "in_recordings_without_detected_switch": undetected,
            "detected_switches": detected_total}


def single_language(ref: Turns, hyp: Turns, files: Iterable[str] | None = None
                    ) -> dict[str, Any]:
    """How the reference recordings of one language were segmented."""
    names = list(ref) if files is None else list(files)
    single = [n for n in names if len({t.language for t in ref.get(n, ())}) == 1]
    one = right = 0
    for name in single:
        found = {t.language for t in hyp.get(name, ())}
        if len(found) == 1:
            one += 1
            right += found == {ref[name][0].language}
    n = len(single)
    return {"recordings": n, "one_language": one / n if n else float("nan"),
            "one_language_right": right / n if n else float("nan")}


def segmentation_metrics(ref: Turns, hyp: Turns, files: Iterable[str] | None = None,
                         collar: float = 0.25) -> dict[str, Any]:
    """Every figure above for ``files`` (default: the reference's), for results.json:
    the IER with ``collar`` and without, boundary errors and single-language shares."""
    names = sorted(ref) if files is None else list(files)
    scored = identification_error(ref, hyp, names, collar)
    strict = identification_error(ref, hyp, names, 0.0)
    return {"recordings": len(names), "collar": collar, **scored, "IER_no_collar": strict["IER"],
            "boundary": boundary_errors(ref, hyp, names),
            "single_language": single_language(ref, hyp, names)}
