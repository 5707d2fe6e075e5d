"""The result record: what the toolkit answers for one utterance or audio file.

``lre score`` writes one record per utterance to ``attention.jsonl``, ``lre identify --json``
one per file to its output; ``lre plot`` and ``lre evaluate`` read them back. The JSON layout
(``docs/RECORDS.md``)::

    {"id": "utt1", "decision": "fi", "probability": 0.91,
     "posteriors": {"fi": 0.91, "sv": 0.09},
     "segments": [{"start": 0.0, "end": 1.1, "weight": 0.031,
                   "posteriors": {"fi": 0.8, "sv": 0.2}}, ...],
     "duration": 12.48, "calibrated": true, "chunks": 1}

and, when something about the input needs saying, ``"warnings": ["truncated: ..."]``.

Segment times are seconds of the original audio (VAD-removed frames still move later
segments along). :meth:`ResultRecord.from_dict` also reads the earlier layouts:
``attention.jsonl`` lines ``{"utt", "pred", "posteriors", "segments"}`` and identify lines
``{"source", "language", "top_k", "posteriors", "segments", "timeline", ...}``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lre.utils import LreError, atomic_open

if TYPE_CHECKING:  # only the attributes are used, so any object with them will do
    from lre.inference.chunks import UtteranceResult

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: The decision of an open-set system that rejects every language it knows.
UNKNOWN = "unknown"


@dataclass
class Segment:
    """One model segment (about 1 s of speech).

    Attributes:
        start, end: seconds in the original audio.
        weight: attention weight (the weights of a record sum to 1).
        posteriors: ``{lang: p}`` the segment's own language posteriors (the timeline),
            or None when they were not asked for.
        head_weights: the weight of each attention head (``weight`` is their mean; each
            head's weights sum to 1 over a record), or None for a model with one head.
    """

    start: float
    end: float
    weight: float
    posteriors: dict[str, float] | None = None
    head_weights: list[float] | None = None

    def to_dict(self, decimals: int = 4) -> dict[str, Any]:
        """``{"start", "end", "weight"[, "head_weights"][, "posteriors"]}``, times to ms, the
        rest to ``decimals``."""
        d: dict[str, Any] = {"start": round(float(self.start), 3),
                             "end": round(float(self.end), 3),
                             "weight": round(float(self.weight), decimals)}
        if self.head_weights is not None:
            d["head_weights"] = [round(float(w), decimals) for w in self.head_weights]
        if self.posteriors is not None:
            d["posteriors"] = _rounded(self.posteriors, decimals)
        return d


@dataclass
class Turn:
    """A stretch of speech in one language (``lre segment``; a line of an RTTM file).

    Attributes:
        start, end: seconds in the original audio.
        language: the language spoken.
        confidence: mean posterior of ``language`` over the turn's segments (1.0 for a
            reference turn).
    """

    start: float
    end: float
    language: str
    confidence: float = 1.0

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self, decimals: int = 4) -> dict[str, Any]:
        """``{"start", "end", "language", "confidence"}``, times to ms."""
        return {"start": round(float(self.start), 3), "end": round(float(self.end), 3),
                "language": self.language,
                "confidence": round(float(self.confidence), decimals)}


@dataclass
class ResultRecord:
    """The answer for one utterance (``lre score``) or file (``lre identify``).

    Attributes:
        id: utterance id, or the file as given on the command line.
        decision: a language, or ``"unknown"`` when the open-set threshold rejected all.
        posteriors: ``{lang: p}`` over the model's languages (calibrated when ``calibrated``).
        segments: the model's segments in time order.
        duration: seconds of audio, when known.
        calibrated: whether ``posteriors`` went through the model's calibration.
        chunks: how many chunks the input was processed in.
        source: the audio (path or ``cmd |``) when it differs from ``id``.
        warnings: what the answer's user should know about the input, one line each
            (e.g. a file that holds less audio than its header says).
        turns: the language turns (``lre segment``, ``lre identify --segments``), or None
            when they were not asked for.
    """

    id: str
    decision: str
    posteriors: dict[str, float]
    segments: list[Segment] = field(default_factory=list)
    duration: float | None = None
    calibrated: bool = False
    chunks: int = 1
    source: str | None = None
    warnings: list[str] = field(default_factory=list)
    turns: list[Turn] | None = None

    # -- views ----------------------------------------------------------------------------

    @property
    def language(self) -> str:
        """The decision (a language or ``"unknown"``)."""
        return self.decision

    @property
    def probability(self) -> float:
        """Posterior of the decision; for ``"unknown"`` the top posterior (0 if none)."""
        if self.decision in self.posteriors:
            return float(self.posteriors[self.decision])
        return max((float(p) for p in self.posteriors.values()), default=0.0)

    def top_k(self, k: int | None = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable languages ``[(lang, p), ...]``, best first (all for None);
        ties keep the order of ``posteriors``."""
        ranked = sorted(self.posteriors.items(), key=lambda kv: -kv[1])
        return [(lang, float(p)) for lang, p in (ranked if k is None else ranked[:max(k, 0)])]

    @property
    def timeline(self) -> list[dict[str, float]] | None:
        """Per-segment posteriors ``[{lang: p}, ...]`` when every segment has them, else None."""
        if not self.segments or any(s.posteriors is None for s in self.segments):
            return None
        return [dict(s.posteriors or {}) for s in self.segments]

    def timeline_array(self) -> tuple[np.ndarray, list[str]] | None:
        """The timeline as a ``(segments, langs)`` array with its column names (the
        languages of ``posteriors``, then any only the segments name), or None."""
        rows = self.timeline
        if rows is None:
            return None
        langs = list(self.posteriors)
        langs += sorted({lang for r in rows for lang in r} - set(langs))
        return np.array([[float(r.get(lang, 0.0)) for lang in langs] for r in rows]), langs

    # -- JSON -----------------------------------------------------------------------------

    def to_dict(self, decimals: int = 4) -> dict[str, Any]:
        """The JSON layout of ``docs/RECORDS.md``: times rounded to ms, probabilities and
        weights to ``decimals``; ``duration``, ``source`` and ``warnings`` only when known."""
        d: dict[str, Any] = {"id": self.id}
        if self.source is not None and self.source != self.id:
            d["source"] = self.source
        d.update({
            "decision": self.decision,
            "probability": round(self.probability, decimals),
            "posteriors": _rounded(self.posteriors, decimals),
            "segments": [s.to_dict(decimals) for s in self.segments],
        })
        if self.duration is not None:
            d["duration"] = round(float(self.duration), 3)
        d["calibrated"] = bool(self.calibrated)
        d["chunks"] = int(self.chunks)
        if self.warnings:
            d["warnings"] = [str(w) for w in self.warnings]
        if self.turns is not None:
            d["turns"] = [t.to_dict(decimals) for t in self.turns]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResultRecord:
        """Read a record in the current layout or either earlier one (module docstring).

        Raises:
            LreError: naming the record and the key that is missing or malformed.
        """
        if not isinstance(d, Mapping):
            raise LreError(f"expected a JSON object, got {type(d).__name__}")
        rid, source = _read_id(d)
        posteriors = _read_posteriors(d, rid)
        decision = d.get("decision", d.get("pred", d.get("language")))
        if decision is None:  # a record without one answered its top language
            decision = max(posteriors, key=lambda lang: posteriors[lang])
        segments = _read_segments(d, rid)
        timeline = _read_timeline(d, rid)
        if timeline is not None and all(s.posteriors is None for s in segments):
            if len(timeline) == len(segments):
                for seg, row in zip(segments, timeline, strict=True):
                    seg.posteriors = row
            else:
                log.warning("record '%s': timeline has %d rows for %d segments; ignored",
                            rid, len(timeline), len(segments))
        duration = d.get("duration")
        return cls(
            id=rid, decision=str(decision), posteriors=posteriors, segments=segments,
            duration=None if duration is None else _number(duration, rid, "duration"),
            calibrated=bool(d.get("calibrated", False)),
            chunks=int(_number(d.get("chunks", 1), rid, "chunks")),
            source=source,
            warnings=_read_warnings(d, rid),
            turns=_read_turns(d, rid),
        )

    @classmethod
    def from_result(
        cls,
        id: str,
        langs: Sequence[str],
        log_posteriors: np.ndarray,
        result: UtteranceResult,
        duration: float | None = None,
        calibrated: bool = False,
        decision: str | None = None,
        source: str | None = None,
        warnings: Sequence[str] = (),
    ) -> ResultRecord:
        """The record of one model result.

        Args:
            id: utterance id or file.
            langs: the ``L`` language names of the model's outputs.
            log_posteriors: ``(L,)`` the log-posteriors to report (calibrated when
                ``calibrated``; ``result.log_posteriors`` are the raw ones).
            result: has ``starts, ends, weights`` ``(K,)``, ``segment_log_posteriors``
                ``(K, L)`` or None, and ``chunks``.
            decision: the answer when it is not the top language (``"unknown"``).
            warnings: lines about the input to pass on to the user.
        """
        log_posteriors = np.asarray(log_posteriors, dtype=np.float64).reshape(-1)
        if len(log_posteriors) != len(langs):
            raise LreError(f"{id}: {len(log_posteriors)} posteriors for {len(langs)} languages")
        post = np.exp(log_posteriors)
        seg_post = getattr(result, "segment_log_posteriors", None)
        starts, ends, weights = (np.asarray(getattr(result, k), dtype=np.float64).reshape(-1)
                                 for k in ("starts", "ends", "weights"))
        if not len(starts) == len(ends) == len(weights):
            raise LreError(f"{id}: {len(starts)} starts, {len(ends)} ends and {len(weights)} "
                           f"weights")
        if seg_post is not None:
            seg_post = np.exp(np.asarray(seg_post, dtype=np.float64))
            if seg_post.shape != (len(starts), len(langs)):
                raise LreError(f"{id}: segment posteriors of shape {seg_post.shape}, expected "
                               f"{(len(starts), len(langs))}")
        heads = getattr(result, "head_weights", None)
        if heads is not None and np.shape(heads)[-1] != len(starts):
            raise LreError(f"{id}: head weights of shape {np.shape(heads)} for {len(starts)} "
                           "segments")
        segments = [
            Segment(float(s), float(e), float(w),
                    None if seg_post is None else dict(zip(langs, map(float, seg_post[k]),
                                                           strict=True)),
                    None if heads is None else [float(v) for v in np.asarray(heads)[:, k]])
            for k, (s, e, w) in enumerate(zip(starts, ends, weights, strict=True))
        ]
        return cls(
            id=str(id),
            decision=decision if decision is not None else langs[int(np.argmax(post))],
            posteriors=dict(zip(langs, map(float, post), strict=True)),
            segments=segments,
            duration=None if duration is None else float(duration),
            calibrated=bool(calibrated),
            chunks=int(getattr(result, "chunks", 1)),
            source=source,
            warnings=[str(w) for w in warnings],
        )


# ----------------------------------------------------------------------------------------
# reading the layouts
# ----------------------------------------------------------------------------------------


def _rounded(posteriors: Mapping[str, float], decimals: int) -> dict[str, float]:
    return {lang: round(float(p), decimals) for lang, p in posteriors.items()}


def _number(value: Any, rid: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise LreError(f"record '{rid}': '{key}' is not a number ({value!r})")
    return float(value)


def _read_id(d: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(id, source)``: ``id``, else ``utt`` (attention.jsonl), else ``source`` (identify)."""
    for key in ("id", "utt", "source"):
        if d.get(key) not in (None, ""):
            rid = str(d[key])
            source = d.get("source")
            return rid, None if source in (None, "", rid) else str(source)
    raise LreError("record has no 'id' (nor 'utt' or 'source')")


def _read_posteriors(d: Mapping[str, Any], rid: str) -> dict[str, float]:
    """``posteriors``, else the ``top_k`` pairs an identify line lists."""
    raw = d.get("posteriors")
    if raw is None and isinstance(d.get("top_k"), list):
        try:
            raw = {str(lang): p for lang, p in d["top_k"]}
        except (TypeError, ValueError):
            raise LreError(f"record '{rid}': 'top_k' is not a list of [lang, p] pairs") from None
    if not isinstance(raw, Mapping) or not raw:
        raise LreError(f"record '{rid}': no 'posteriors' object")
    return {str(lang): _number(p, rid, f"posteriors.{lang}") for lang, p in raw.items()}


def _read_warnings(d: Mapping[str, Any], rid: str) -> list[str]:
    raw = d.get("warnings", [])
    if not isinstance(raw, list) or not all(isinstance(w, str) for w in raw):
        raise LreError(f"record '{rid}': 'warnings' is not a list of strings")
    return list(raw)


def _read_turns(d: Mapping[str, Any], rid: str) -> list[Turn] | None:
    raw = d.get("turns")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise LreError(f"record '{rid}': 'turns' is not a list")
    turns = []
    for k, t in enumerate(raw):
        if not isinstance(t, Mapping) or not isinstance(t.get("language"), str):
            raise LreError(f"record '{rid}': turn {k} is not an object with a 'language'")
        for key in ("start", "end"):
            if key not in t:
                raise LreError(f"record '{rid}': turn {k} has no '{key}'")
        turns.append(Turn(_number(t["start"], rid, f"turns[{k}].start"),
                          _number(t["end"], rid, f"turns[{k}].end"), t["language"],
                          _number(t.get("confidence", 1.0), rid, f"turns[{k}].confidence")))
    return turns


def _read_segments(d: Mapping[str, Any], rid: str) -> list[Segment]:
    raw = d.get("segments")
    if not isinstance(raw, list):
        raise LreError(f"record '{rid}': no 'segments' list")
    segments = []
    for k, s in enumerate(raw):
        if not isinstance(s, Mapping):
            raise LreError(f"record '{rid}': segment {k} is not an object")
        for key in ("start", "end", "weight"):
            if key not in s:
                raise LreError(f"record '{rid}': segment {k} has no '{key}'")
        post = s.get("posteriors")
        if post is not None and not isinstance(post, Mapping):
            raise LreError(f"record '{rid}': segment {k} 'posteriors' is not an object")
        heads = s.get("head_weights")
        if heads is not None and not isinstance(heads, list):
            raise LreError(f"record '{rid}': segment {k} 'head_weights' is not a list")
        segments.append(Segment(
            _number(s["start"], rid, f"segments[{k}].start"),
            _number(s["end"], rid, f"segments[{k}].end"),
            _number(s["weight"], rid, f"segments[{k}].weight"),
            None if post is None else {str(lang): _number(p, rid, f"segments[{k}].posteriors")
                                       for lang, p in post.items()},
            None if heads is None else [_number(w, rid, f"segments[{k}].head_weights")
                                        for w in heads]))
    return segments


def _read_timeline(d: Mapping[str, Any], rid: str) -> list[dict[str, float]] | None:
    """A top-level ``timeline`` as rows ``{lang: p}``: a list of ``{"start", "end",
    "posteriors"}``, of ``{lang: p}``, or of number rows named by a ``langs`` list.
    Rows of log-posteriors (any negative value) become posteriors."""
    tl = d.get("timeline")
    if not isinstance(tl, list) or not tl:
        return None
    where = f"record '{rid}': 'timeline'"
    if all(isinstance(t, Mapping) and isinstance(t.get("posteriors"), Mapping) for t in tl):
        rows = [t["posteriors"] for t in tl]
    elif all(isinstance(t, Mapping) for t in tl):
        rows = tl
    elif isinstance(d.get("langs"), list) and all(isinstance(t, list) for t in tl):
        langs = [str(lang) for lang in d["langs"]]
        if any(len(t) != len(langs) for t in tl):
            raise LreError(f"{where} rows need one value per 'langs' entry ({len(langs)})")
        rows = [dict(zip(langs, t, strict=True)) for t in tl]
    else:
        raise LreError(f"{where} is neither segment objects nor number rows with 'langs'")
    langs = list(dict.fromkeys(str(lang) for r in rows for lang in r))
    try:
        matrix = np.array([[float(r.get(lang, 0.0)) for lang in langs] for r in rows])
    except (TypeError, ValueError):
        raise LreError(f"{where} holds a value that is not a number") from None
    if (matrix < 0).any():  # log-posteriors
        matrix = np.exp(matrix - matrix.max(axis=1, keepdims=True))
        matrix /= matrix.sum(axis=1, keepdims=True)
    return [dict(zip(langs, map(float, row), strict=True)) for row in matrix]


# ----------------------------------------------------------------------------------------
# files of records (JSON lines)
# ----------------------------------------------------------------------------------------


def read_records(path: PathLike, skip_invalid: bool = False) -> Iterator[ResultRecord]:
    """The records of a JSON-lines file, in file order (blank lines ignored).

    Raises:
        LreError: ``path: file not found``, or ``path:line: <problem>`` for a line that is
            not a record; with ``skip_invalid`` such lines are skipped and counted in one
            warning instead.
    """
    skipped = 0
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise LreError(f"{path}: file not found") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise LreError(f"not valid JSON ({e.msg})") from None
                record = ResultRecord.from_dict(d)
            except LreError as e:
                if not skip_invalid:
                    raise LreError(f"{path}:{lineno}: {e}") from None
                log.debug("%s:%d: %s", path, lineno, e)
                skipped += 1
                continue
            yield record
    if skipped:
        log.warning("%s: %d malformed lines skipped", path, skipped)


def find_record(path: PathLike, id: str | None = None) -> ResultRecord:
    """The record of ``id`` (its ``id`` or ``source``) in ``path``; without ``id`` the file
    must hold exactly one record."""
    found: list[ResultRecord] = []
    for record in read_records(path):
        if id is None:
            found.append(record)
        elif id in (record.id, record.source):
            return record
    if not found:
        raise LreError(f"{path}: no record" + (f" for '{id}'" if id is not None else ""))
    if len(found) > 1:
        raise LreError(f"{path}: {len(found)} records; choose one by id (--utt)")
    return found[0]


def write_records(path: PathLike, records: Iterable[ResultRecord], decimals: int = 4) -> Path:
    """Write ``records`` as JSON lines to ``path`` atomically (all of them or none)."""
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record.to_dict(decimals), ensure_ascii=False) + "\n")
    return path
