"""Per-segment language posteriors -> language turns: the smoothing decoder.

The model scores one segment (about 1.1 s of speech) every second. A Viterbi search over an
HMM whose states are the languages turns that timeline into turns:

- emission of segment ``k`` in language ``l``: ``log p_k(l)`` (posteriors read as scaled
  likelihoods under a flat prior);
- a change of language costs ``switch_penalty`` nats, and a recording that changes at all
  ``mono_penalty`` more: the log prior odds of one language against a mix, which keeps a
  recording in one language unless its switch is worth more than any single one;
- a turn lasts at least ``min_turn`` seconds (``D = round(min_turn / hop)`` segments): each
  language has a chain of ``D`` duration states, and only the last of them may leave to
  another language. The last turn must be that long too, unless the recording is one turn.

Turns then become times. A switch between segments ``i`` and ``i+1`` lies halfway between
their centres, or, with ``refine="interpolate"``, where the difference of the two
languages' posteriors, interpolated linearly between the two centres, crosses zero (a
segment that straddles the switch leans towards the language holding more of it). The
longest pause of the speech (VAD) between the two centres takes the switch instead.
Finally each turn is cut to the speech regions, in which pauses shorter than ``min_gap``
count as speech: no turn covers a longer stretch of non-speech.

The settings that suit a model are chosen on a code-switched dev set (``lre segment
--sweep --save``) and kept beside it (``<model_dir>/segment.json``, format
``lre-decoder-1``), where ``lre segment``, ``lre identify --segments`` and
``Identifier.segment`` find them (:func:`model_decoder_options`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lre.inference.records import ResultRecord, Turn
from lre.utils import LreError, atomic_write_text

log = logging.getLogger(__name__)

#: The decoder settings chosen for a model, in its model dir.
DECODER = "segment.json"
DECODER_FORMAT = "lre-decoder-1"

#: How the boundary between two turns is placed (``DecoderOptions.refine``).
REFINEMENTS = ("none", "interpolate")
#: Shortest VAD pause that a switch between two segments moves into (seconds).
SNAP_PAUSE = 0.1
#: Pieces of a turn shorter than this, left where a boundary meets a pause, are dropped.
MIN_PIECE = 0.05
_FLOOR = 1e-10
#: Settings that files written before them lack: those read as the default.
_LATER_FIELDS = ("mono_penalty",)


@dataclass(frozen=True)
class DecoderOptions:
    """Settings of the decoder (seconds and nats).

    Attributes:
        switch_penalty: cost of a change of language, in nats of log-posterior.
        mono_penalty: extra cost, paid once, of a recording that changes language at all.
        min_turn: shortest turn, in seconds of segments (0 or one hop: no limit).
        min_gap: non-speech at least this long ends a turn; shorter pauses are bridged.
        refine: ``"none"`` (switches halfway between segment centres) or
            ``"interpolate"`` (where the posteriors cross between them).
    """

    # Chosen by `lre segment --sweep` on the embedded recipe's code-switched dev set (dev_cs)
    # scored by its default model: the lowest identification error rate of the grid there
    # (penalty 4: 11.0%, 1: 12.9%, 8: 11.3%; min turn 2 s beat 1 and 3 s).
    switch_penalty: float = 4.0
    min_turn: float = 2.0
    min_gap: float = 0.5
    refine: str = "interpolate"
    mono_penalty: float = 0.0

    def check(self) -> None:
        if not np.isfinite(self.switch_penalty) or self.switch_penalty < 0:
            raise LreError(f"switch penalty: must be >= 0, got {self.switch_penalty}")
        if not np.isfinite(self.mono_penalty) or self.mono_penalty < 0:
            raise LreError(f"mono penalty: must be >= 0, got {self.mono_penalty}")
        if not np.isfinite(self.min_turn) or self.min_turn < 0:
            raise LreError(f"min turn: must be >= 0 s, got {self.min_turn}")
        if not np.isfinite(self.min_gap) or self.min_gap < 0:
            raise LreError(f"min gap: must be >= 0 s, got {self.min_gap}")
        if self.refine not in REFINEMENTS:
            raise LreError(f"refine: unknown {self.refine!r} (choose {' or '.join(REFINEMENTS)})")


def save_decoder_options(path: str | os.PathLike, options: DecoderOptions,
                         chosen_on: Mapping[str, Any]) -> None:
    """Write the settings chosen for a model (and what chose them) as JSON, atomically."""
    spec = {"format": DECODER_FORMAT, **asdict(options), "chosen_on": dict(chosen_on)}
    atomic_write_text(path, json.dumps(spec, indent=2) + "\n")


def load_decoder_options(path: str | os.PathLike) -> DecoderOptions:
    """Read the settings of :func:`save_decoder_options`."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LreError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LreError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(spec, dict) or spec.get("format") != DECODER_FORMAT:
        raise LreError(f"{path}: not an lre decoder settings file (format != "
                       f"{DECODER_FORMAT})")
    names = [f.name for f in fields(DecoderOptions)]
    missing = [n for n in names if n not in spec and n not in _LATER_FIELDS]
    if missing:
        raise LreError(f"{path}: missing field(s) {', '.join(missing)}")
    try:
        options = DecoderOptions(**{n: type(getattr(DecoderOptions, n))(spec[n])
                                    for n in names if n in spec})
        options.check()
    except (TypeError, ValueError, LreError) as e:
        raise LreError(f"{path}: {e}") from None
    return options


def model_decoder_options(model_dir: str | os.PathLike) -> DecoderOptions:
    """The settings saved with a model (``<model_dir>/segment.json``), else the built-in
    defaults."""
    path = Path(model_dir) / DECODER
    if not path.is_file():
        return DecoderOptions()
    options = load_decoder_options(path)
    log.info("language turns: %s (%s)", path, options)
    return options


# ----------------------------------------------------------------------------------------
# speech regions
# ----------------------------------------------------------------------------------------


def speech_regions(voiced: np.ndarray, frame_shift: float, frame_length: float) -> np.ndarray:
    """Runs of voiced frames as ``(regions, 2)`` ``[start, end)`` seconds.

    Args:
        voiced: ``(frames,)`` bool VAD decision over the original frames (``vad.scp``).
        frame_shift, frame_length: frame ``i`` spans ``[i * shift, i * shift + length)``.
    """
    v = np.asarray(voiced).reshape(-1).astype(bool)
    if not v.any():
        return np.zeros((0, 2))
    edges = np.diff(np.concatenate([[0], v.astype(np.int8), [0]]))
    first, after = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    regions = np.stack([first * frame_shift, (after - 1) * frame_shift + frame_length], axis=1)
    return merge_gaps(regions, 0.0)


def speech_from_index(frame_index: np.ndarray, frame_shift: float, frame_length: float
                      ) -> np.ndarray:
    """:func:`speech_regions` of a model input's frame-to-time map (the kept frames)."""
    index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
    voiced = np.zeros(int(index.max()) + 1 if len(index) else 0, dtype=bool)
    voiced[index] = True
    return speech_regions(voiced, frame_shift, frame_length)


def merge_gaps(regions: np.ndarray, min_gap: float) -> np.ndarray:
    """``regions`` ``(R, 2)`` sorted, with gaps shorter than ``min_gap`` (and overlaps)
    joined."""
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 2)
    if len(regions) == 0:
        return regions
    regions = regions[np.argsort(regions[:, 0], kind="stable")]
    out = [list(regions[0])]
    for s, e in regions[1:]:
        if s - out[-1][1] < min_gap or s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return np.array(out)


# ----------------------------------------------------------------------------------------
# Viterbi
# ----------------------------------------------------------------------------------------


def viterbi_languages(log_post: np.ndarray, switch_penalty: float, min_segments: int,
                      mono_penalty: float = 0.0) -> np.ndarray:
    """The best language of each segment under the switch penalty and minimum run length.

    Args:
        log_post: ``(K, L)`` per-segment log-posteriors.
        switch_penalty: nats taken off a path at each change of language.
        min_segments: ``D >= 1``, the fewest segments of a run (of the last one too, unless
            the path never switches).
        mono_penalty: nats taken off a path that switches at all (once, at its first
            switch): the prior odds of a recording in one language against a mixed one.

    Returns:
        ``(K,)`` int language index per segment.

    States are ``(switched, language, d)``, ``d = min(run length, D) - 1``; a switch goes
    from ``(*, l, D-1)`` to ``(1, l', 0)``.
    """
    e = np.asarray(log_post, dtype=np.float64)
    num, langs = e.shape
    d_max = max(1, int(min_segments))
    shape = (2, langs, d_max)
    score = np.full(shape, -np.inf)
    score[0, :, 0] = e[0]
    back = np.zeros((num, *shape), dtype=np.int64)
    flat = np.arange(score.size).reshape(shape)
    for k in range(1, num):
        new = np.full(shape, -np.inf)
        arg = np.zeros(shape, dtype=np.int64)
        # a run goes on: d -> d + 1 (the last duration state loops)
        new[:, :, 1:] = score[:, :, :-1]
        arg[:, :, 1:] = flat[:, :, :-1]
        loop = score[:, :, -1] >= new[:, :, -1]
        new[:, :, -1] = np.where(loop, score[:, :, -1], new[:, :, -1])
        arg[:, :, -1] = np.where(loop, flat[:, :, -1], arg[:, :, -1])
        # a switch into (1, l', 0) from the best finished run of another language; the
        # first switch of a recording also pays the cost of its not being monolingual
        finished = score[:, :, -1] - np.array([[mono_penalty], [0.0]])
        ended = finished.max(axis=0)
        ended_from = flat[finished.argmax(axis=0), np.arange(langs), -1]
        order = np.argsort(-ended, kind="stable")
        best, second = order[0], order[1] if langs > 1 else order[0]
        src = np.where(np.arange(langs) == best, second, best)
        switched = np.where(np.arange(langs) == best, ended[second] if langs > 1 else -np.inf,
                            ended[best]) - switch_penalty
        take = switched > new[1, :, 0]
        new[1, :, 0] = np.where(take, switched, new[1, :, 0])
        arg[1, :, 0] = np.where(take, ended_from[src], arg[1, :, 0])
        score = new + e[k][None, :, None]
        back[k] = arg
    final = score.copy()
    final[1, :, :-1] = -np.inf  # the last run is a whole turn, unless it is the only one
    state = int(np.argmax(final))
    path = np.zeros(num, dtype=np.int64)
    for k in range(num - 1, -1, -1):
        path[k] = np.unravel_index(state, shape)[1]
        state = int(back[k].reshape(-1)[state])
    return path


# ----------------------------------------------------------------------------------------
# turns in time
# ----------------------------------------------------------------------------------------


def _centres(starts: np.ndarray, ends: np.ndarray, speech: np.ndarray | None) -> np.ndarray:
    """Each segment's centre: the middle of its speech (VAD pauses inside it skipped)."""
    if speech is None or len(speech) == 0:
        return (starts + ends) / 2
    # (K, R): the part of each speech region inside each segment
    lo = np.clip(speech[None, :, 0], starts[:, None], ends[:, None])
    hi = np.clip(speech[None, :, 1], starts[:, None], ends[:, None])
    spoken = np.maximum(hi - lo, 0.0)
    reached = np.cumsum(spoken, axis=1)
    half = reached[:, -1] / 2
    # the region in which half of the segment's speech is reached
    i = np.argmax(reached >= half[:, None], axis=1)
    rows = np.arange(len(starts))
    inside = lo[rows, i] + (half - (reached[rows, i] - spoken[rows, i]))
    return np.where(half > 0, inside, (starts + ends) / 2)


def _switch_time(post: np.ndarray, a: int, b: int, ci: float, cj: float, refine: str
                 ) -> float:
    """Where the switch from language ``a`` (segment centred ``ci``) to ``b`` (``cj``) lies."""
    if refine == "interpolate":
        qi, qj = post[0, a] - post[0, b], post[1, a] - post[1, b]
        if qi > 0 > qj:
            return ci + (cj - ci) * qi / (qi - qj)
    return (ci + cj) / 2


def _pause_between(t: float, lo: float, hi: float, speech: np.ndarray | None
                   ) -> tuple[float, float] | None:
    """The longest VAD pause of at least :data:`SNAP_PAUSE` between ``lo`` and ``hi`` (the
    one nearest ``t`` of equally long ones): a pause between utterances is longer than the
    pauses between words of one, so the longest is the likeliest switch."""
    if speech is None or len(speech) < 2:
        return None
    gaps = np.stack([speech[:-1, 1], speech[1:, 0]], axis=1)
    keep = (gaps[:, 1] - gaps[:, 0] >= SNAP_PAUSE) & (gaps[:, 1] > lo) & (gaps[:, 0] < hi)
    if not keep.any():
        return None
    gaps = gaps[keep]
    dist = np.maximum(gaps[:, 0] - t, 0) + np.maximum(t - gaps[:, 1], 0)
    g = gaps[int(np.lexsort((dist, -(gaps[:, 1] - gaps[:, 0])))[0])]
    return float(g[0]), float(g[1])


def _cut_to_speech(span: tuple[float, float], regions: np.ndarray) -> list[tuple[float, float]]:
    lo, hi = span
    pieces = []
    for s, e in regions:
        a, b = max(lo, s), min(hi, e)
        if b - a >= MIN_PIECE:
            pieces.append((float(a), float(b)))
    return pieces


def _confidence(post: np.ndarray, centres: np.ndarray, lang: int, run: slice,
                piece: tuple[float, float]) -> float:
    inside = (centres[run] >= piece[0]) & (centres[run] < piece[1])
    values = post[run, lang][inside] if inside.any() else post[run, lang]
    return float(values.mean())


def language_path(posteriors: np.ndarray, starts: np.ndarray,
                  options: DecoderOptions) -> np.ndarray:
    """The Viterbi language of each segment ``(K,)`` under ``options`` (switch and mono
    penalties, minimum turn; the settings that do not move the path are not read)."""
    hop = float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0
    min_segments = max(1, round(options.min_turn / hop)) if hop > 0 else 1
    return viterbi_languages(np.log(np.maximum(posteriors, _FLOOR)), options.switch_penalty,
                             min_segments, options.mono_penalty)


def decode_turns(
    posteriors: np.ndarray,
    langs: Sequence[str],
    starts: np.ndarray,
    ends: np.ndarray,
    speech: np.ndarray | None = None,
    options: DecoderOptions | None = None,
    path: np.ndarray | None = None,
) -> list[Turn]:
    """Language turns of one recording from its per-segment posteriors.

    Args:
        posteriors: ``(K, L)`` per-segment posteriors (rows summing to 1).
        langs: the ``L`` column names.
        starts, ends: ``(K,)`` segment spans in seconds of the original audio.
        speech: ``(R, 2)`` speech regions in seconds (:func:`speech_regions`), or None to
            take the segments' span as speech.
        options: decoder settings (default :class:`DecoderOptions`).
        path: :func:`language_path` of these posteriors under ``options``, when the caller
            has it already (a sweep over the settings that only place the turns in time).

    Returns:
        Turns in time order; none covers non-speech of ``min_gap`` or more.
    """
    opts = options or DecoderOptions()
    opts.check()
    post = np.asarray(posteriors, dtype=np.float64)
    starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    if post.ndim != 2 or post.shape != (len(starts), len(langs)) or len(ends) != len(starts):
        raise LreError(f"decoder: posteriors of shape {post.shape} for {len(starts)} segments "
                       f"and {len(langs)} languages")
    if len(starts) == 0:
        return []
    if path is None:
        path = language_path(post, starts, opts)
    speech = None if speech is None else merge_gaps(speech, 0.0)
    centres = _centres(starts, ends, speech)
    runs = np.flatnonzero(np.diff(path)) + 1
    bounds = [0, *runs.tolist(), len(path)]
    # Each run spans from the end of the switch before it to the start of the one after.
    edges: list[tuple[float, float]] = [(-np.inf, -np.inf)]
    for j in runs:
        i = j - 1
        t = _switch_time(post[[i, j]], path[i], path[j], centres[i], centres[j], opts.refine)
        pause = _pause_between(t, centres[i], centres[j], speech)
        edges.append(pause if pause is not None else (t, t))
    edges.append((np.inf, np.inf))
    regions = merge_gaps(speech if speech is not None else [[starts[0], ends[-1]]],
                         opts.min_gap)
    turns = []
    for r in range(len(bounds) - 1):
        run = slice(bounds[r], bounds[r + 1])
        lang = int(path[bounds[r]])
        for piece in _cut_to_speech((edges[r][1], edges[r + 1][0]), regions):
            turns.append(Turn(piece[0], piece[1], str(langs[lang]),
                              _confidence(post, centres, lang, run, piece)))
    return turns


def record_timeline(record: ResultRecord
                    ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray] | None:
    """``(posteriors (K, L), langs, starts (K,), ends (K,))`` of a result record's
    segments, None for a record without segments.

    Raises:
        LreError: the record's segments carry no posteriors.
    """
    table = record.timeline_array()
    if table is None:
        if not record.segments:
            return None
        raise LreError(f"record '{record.id}': its segments have no posteriors (score with "
                       "the timeline: lre score, lre identify --timeline)")
    post, langs = table
    starts = np.array([s.start for s in record.segments])
    ends = np.array([s.end for s in record.segments])
    return post, list(langs), starts, ends


def record_turns(record: ResultRecord, speech: np.ndarray | None = None,
                 options: DecoderOptions | None = None) -> list[Turn]:
    """:func:`decode_turns` of a result record's timeline (its segments' posteriors)."""
    timeline = record_timeline(record)
    return [] if timeline is None else decode_turns(*timeline, speech, options)
