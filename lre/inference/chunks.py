"""Chunks of long inputs: the one chunking rule, segment times, combining chunk results.

An input longer than ``max_chunk_frames`` voiced frames is cut into the fewest equal chunks
(:func:`chunk_bounds`); each goes through the model on its own and the results are joined by
:func:`combine_chunks`. Segment spans in model frames become seconds of the original audio
through the frame-to-time map of :func:`lre.features.pipeline.postprocess`
(:func:`segment_times`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import log_softmax

if TYPE_CHECKING:
    from lre.inference.runner import ChunkOutput


def segment_times(
    segment_frames: np.ndarray,
    frame_index: np.ndarray,
    frame_shift: float,
    frame_length: float,
    offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end in seconds of each segment, in the time of the original audio.

    Args:
        segment_frames: ``(segments, 2)`` ``[start, end)`` spans in the model's input
            frames (voiced frames only).
        frame_index: ``(input_frames,)`` index of each input frame in the original frame
            sequence (from ``lre.features.postprocess``), so frames that VAD removed
            still move later segments along.
        frame_shift, frame_length: frame geometry in seconds.
        offset: seconds added to every time (start of the chunk in the file).

    Returns:
        ``starts, ends`` each ``(segments,)`` float64. Original frame ``i`` spans
        ``[i * shift, i * shift + length)``; a segment spans its first frame's start to
        its last real frame's end (frames the model padded do not count).
    """
    n = len(frame_index)
    if len(segment_frames) == 0:
        return np.zeros(0), np.zeros(0)
    first = np.clip(segment_frames[:, 0], 0, n - 1)
    last = np.clip(segment_frames[:, 1] - 1, first, n - 1)
    starts = frame_index[first] * frame_shift + offset
    ends = frame_index[last] * frame_shift + frame_length + offset
    return starts.astype(np.float64), ends.astype(np.float64)


@dataclass
class ChunkResult:
    """One chunk's model output with its segments placed in seconds of the original audio.

    ``num_frames`` is the number of voiced frames the model saw: the chunk's weight.
    """

    output: ChunkOutput
    starts: np.ndarray
    ends: np.ndarray
    num_frames: int


@dataclass
class UtteranceResult:
    """Combined model result for one utterance or file.

    Attributes:
        logits: ``(num_langs,)`` combined logits.
        log_posteriors: ``(num_langs,)`` ``log_softmax(logits)`` (uncalibrated).
        starts, ends, weights: ``(segments,)`` segment times in seconds and attention
            weights (summing to 1 over all segments of all chunks).
        segment_log_posteriors: ``(segments, num_langs)`` per-segment log-posteriors
            (language timeline) or None.
        num_frames: voiced frames seen by the model over all chunks.
        embedding: ``(dim,)`` the model's utterance vector, combined like the logits, or
            None when the runner gives none.
        head_weights: ``(heads, segments)`` each attention head's weights, combined like
            ``weights`` (their mean), or None for a model with one head.
        other_logit: the model's "other" logit (``ChunkOutput.other_logit``), combined
            like the logits, or None for a model without that class.
    """

    logits: np.ndarray
    log_posteriors: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    weights: np.ndarray
    segment_log_posteriors: np.ndarray | None = None
    num_frames: int = 0
    chunks: int = 1
    embedding: np.ndarray | None = None
    head_weights: np.ndarray | None = None
    other_logit: float | None = None


def combine_chunks(chunks: Sequence[ChunkResult]) -> UtteranceResult:
    """Combine the results of the chunks of one utterance into one result.

    Rule: chunk ``c`` with ``n_c`` voiced frames gets weight ``w_c = n_c / sum_j n_j``;
    the utterance logits (and embedding) are ``sum_c w_c logits_c`` and each segment's
    attention weight is ``w_c a_{c,k}``, so the weights still sum to 1 and a chunk's share
    of the decision equals its share of the speech. A chunk with no voiced frame is left out by the
    caller. With one chunk this is the identity: the result equals the model output.
    """
    if not chunks:
        raise ValueError("combine_chunks needs at least one chunk")
    total = sum(c.num_frames for c in chunks)
    if len(chunks) == 1:
        shares = [1.0]
    else:
        shares = [c.num_frames / total for c in chunks]
    logits = sum(s * c.output.logits for s, c in zip(shares, chunks, strict=True))
    weights = np.concatenate(
        [s * c.output.attention for s, c in zip(shares, chunks, strict=True)]
    )
    embedding = None
    if all(c.output.embedding is not None for c in chunks):
        embedding = np.asarray(sum(s * c.output.embedding
                                   for s, c in zip(shares, chunks, strict=True)), np.float64)
    heads = None
    if all(c.output.head_attention is not None for c in chunks):
        heads = np.concatenate([s * c.output.head_attention
                                for s, c in zip(shares, chunks, strict=True)], axis=1)
    other = None
    if all(c.output.other_logit is not None for c in chunks):
        other = float(sum(s * c.output.other_logit  # type: ignore[operator]
                          for s, c in zip(shares, chunks, strict=True)))
    timeline = None
    if all(c.output.segment_logits is not None for c in chunks):
        timeline = log_softmax(
            np.concatenate([c.output.segment_logits for c in chunks]).astype(np.float64), axis=-1)
    return UtteranceResult(
        logits=np.asarray(logits, dtype=np.float64),
        log_posteriors=log_softmax(np.asarray(logits, dtype=np.float64)),
        starts=np.concatenate([c.starts for c in chunks]),
        ends=np.concatenate([c.ends for c in chunks]),
        weights=weights,
        segment_log_posteriors=timeline,
        num_frames=total,
        chunks=len(chunks),
        embedding=embedding,
        head_weights=heads,
        other_logit=other,
    )


def chunk_bounds(num_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Split ``num_frames`` into the fewest equal chunks of at most ``max_frames`` each.

    Returns ``[start, end)`` pairs covering ``0..num_frames``. Equal chunks avoid a tiny
    last chunk that would be classified from almost nothing.
    """
    if num_frames <= max_frames:
        return [(0, num_frames)]
    n = math.ceil(num_frames / max_frames)
    size = math.ceil(num_frames / n)
    return [(s, min(s + size, num_frames)) for s in range(0, num_frames, size)]


def max_chunk_frames(max_chunk_seconds: float, frame_shift: float) -> int:
    """Voiced frames per model input for ``max_chunk_seconds`` of speech."""
    return max(1, int(round(max_chunk_seconds / frame_shift)))
