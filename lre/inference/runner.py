"""Running a model on feature matrices: the one inference core of score and identify.

:func:`run_utterances` takes model inputs (the output of
:func:`lre.features.pipeline.postprocess`, one per utterance or file), cuts each into chunks
of at most ``max_chunk_frames`` voiced frames (:func:`lre.inference.chunks.chunk_bounds`),
runs them through a :class:`ModelRunner` in batches under a padded-frame budget, places every
segment in seconds of the original audio and combines the chunks of each utterance
(:func:`lre.inference.chunks.combine_chunks`). ``lre score`` feeds it from ``feats.scp``,
``lre identify`` from audio, so both give the same answer for the same audio.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lre.inference.chunks import (
    ChunkResult,
    UtteranceResult,
    chunk_bounds,
    combine_chunks,
    segment_times,
)
from lre.languages import OTHER


@dataclass
class ChunkOutput:
    """Model output for one input (an utterance or a chunk of one), padding removed.

    Attributes:
        logits: ``(num_langs,)`` language logits.
        attention: ``(segments,)`` attention weight of each real segment (sums to 1).
        segment_frames: ``(segments, 2)`` ``[start, end)`` span of each segment in the
            input frame sequence (after VAD); ``end`` may pass the last frame when the
            model padded the input.
        segment_logits: ``(segments, num_langs)`` per-segment logits, or None when the
            timeline was not asked for.
        embedding: ``(dim,)`` the model's utterance vector (``ModelOutput.embedding``), or
            None when the runner has none.
        head_attention: ``(heads, segments)`` each attention head's weights (``attention``
            is their mean), or None for a model with one head.
        other_logit: the logit of the model's "other" class (:data:`lre.languages.OTHER`),
            kept apart from the languages' by :class:`OtherClassRunner`; None without one.
    """

    logits: np.ndarray
    attention: np.ndarray
    segment_frames: np.ndarray
    segment_logits: np.ndarray | None = None
    embedding: np.ndarray | None = None
    head_attention: np.ndarray | None = None
    other_logit: float | None = None


class ModelRunner(Protocol):
    """Anything that maps feature matrices to :class:`ChunkOutput` (torch or ONNX)."""

    langs: list[str]

    def run(self, feats: Sequence[np.ndarray], timeline: bool = False) -> list[ChunkOutput]:
        """Run the model on ``feats`` (each ``(frames, feat_dim)``) as one padded batch."""
        ...


def pad_batch(feats: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``feats`` (each ``(frames_i, feat_dim)``) into ``(batch, max_frames, feat_dim)``.

    Returns the zero-padded float32 batch and the lengths ``(batch,)`` int64.
    """
    lengths = np.array([len(f) for f in feats], dtype=np.int64)
    dim = feats[0].shape[1]
    batch = np.zeros((len(feats), int(lengths.max()), dim), dtype=np.float32)
    for i, f in enumerate(feats):
        batch[i, : len(f)] = f
    return batch, lengths


def split_outputs(
    logits: np.ndarray,
    attention: np.ndarray,
    segment_mask: np.ndarray,
    segment_frames: np.ndarray,
    segment_logits: np.ndarray | None,
    embedding: np.ndarray | None = None,
    head_attention: np.ndarray | None = None,
) -> list[ChunkOutput]:
    """Cut batched model outputs into one :class:`ChunkOutput` per input, padding dropped.

    Args:
        logits: ``(batch, num_langs)``.
        attention: ``(batch, segments)``.
        segment_mask: ``(batch, segments)`` bool, True for real segments.
        segment_frames: ``(batch, segments, 2)``.
        segment_logits: ``(batch, segments, num_langs)`` or None.
        embedding: ``(batch, dim)`` or None.
        head_attention: ``(batch, heads, segments)`` or None.
    """
    outs = []
    mask = segment_mask.astype(bool)
    for b in range(logits.shape[0]):
        m = mask[b]
        outs.append(
            ChunkOutput(
                logits=logits[b].astype(np.float64),
                attention=attention[b][m].astype(np.float64),
                segment_frames=segment_frames[b][m].astype(np.int64),
                segment_logits=(
                    None if segment_logits is None else segment_logits[b][m].astype(np.float64)
                ),
                embedding=None if embedding is None else embedding[b].astype(np.float64),
                head_attention=(None if head_attention is None
                                else head_attention[b][:, m].astype(np.float64)),
            )
        )
    return outs


class TorchRunner:
    """Runs an ``LidModel`` in eval mode without gradients."""

    def __init__(self, model: Any, langs: list[str], device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.langs = list(langs)

    def run(self, feats: Sequence[np.ndarray], timeline: bool = False) -> list[ChunkOutput]:
        torch = self.torch
        batch, lengths = pad_batch(feats)
        x = torch.from_numpy(batch).to(self.device)
        n = torch.from_numpy(lengths).to(self.device)
        with torch.inference_mode():
            out = self.model(x, n, with_segments=timeline)
            seg_logits, embedding, heads = out.segment_logits, out.embedding, out.head_attention
        return split_outputs(
            out.logits.float().cpu().numpy(),
            out.attention.float().cpu().numpy(),
            out.segment_mask.cpu().numpy(),
            out.segment_frames.cpu().numpy(),
            None if seg_logits is None else seg_logits.float().cpu().numpy(),
            None if embedding is None else embedding.float().cpu().numpy(),
            None if heads is None else heads.float().cpu().numpy(),
        )


class OtherClassRunner:
    """A runner whose model has an "other" output (:data:`lre.languages.OTHER`, trained on
    speech in none of its languages): ``langs`` are the model's languages without it, and
    each output's logits (and segment logits) lose its column, which goes to
    ``ChunkOutput.other_logit``. The language posteriors are then the softmax over the
    languages alone, and "other" is an open-set score (:mod:`lre.openset`), not an answer.
    Everything else is the wrapped runner's (e.g. an ONNX runner's ``feat_dim``)."""

    def __init__(self, inner: ModelRunner) -> None:
        self.inner = inner
        self.index = list(inner.langs).index(OTHER)
        self.langs = [lang for lang in inner.langs if lang != OTHER]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, feats: Sequence[np.ndarray], timeline: bool = False) -> list[ChunkOutput]:
        k = self.index
        return [dataclasses.replace(
            o, logits=np.delete(o.logits, k), other_logit=float(o.logits[k]),
            segment_logits=(None if o.segment_logits is None
                            else np.delete(o.segment_logits, k, axis=1)))
            for o in self.inner.run(feats, timeline=timeline)]


def with_other_class(runner: Any) -> Any:
    """``runner`` in an :class:`OtherClassRunner` when its model has an "other" output."""
    return OtherClassRunner(runner) if OTHER in runner.langs else runner


@dataclass
class ModelInput:
    """One utterance (or file) as the model sees it.

    Attributes:
        id: utterance id or file name.
        feats: ``(frames, feat_dim)`` float32 post-processed features (voiced frames).
        frame_index: ``(frames,)`` int64 index of each frame in the original frame sequence.
    """

    id: str
    feats: np.ndarray
    frame_index: np.ndarray


@dataclass
class _Chunk:
    utt: str
    feats: np.ndarray
    frame_index: np.ndarray


def _batches(chunks: Iterable[_Chunk], batch_size: int, max_batch_frames: int
             ) -> Iterator[list[_Chunk]]:
    """Consecutive chunks grouped while the batch stays under both budgets."""
    batch: list[_Chunk] = []
    longest = 0
    for c in chunks:
        grown = max(longest, len(c.feats))
        if batch and (len(batch) >= batch_size or grown * (len(batch) + 1) > max_batch_frames):
            yield batch
            batch, grown = [], len(c.feats)
        batch.append(c)
        longest = grown
    if batch:
        yield batch


def run_utterances(
    runner: ModelRunner,
    inputs: Iterable[ModelInput],
    frame_shift: float,
    frame_length: float,
    max_chunk_frames: int,
    batch_size: int = 32,
    max_batch_frames: int = 60000,
    timeline: bool = False,
) -> Iterator[tuple[str, UtteranceResult]]:
    """``(id, result)`` for every input, in the order their last chunk was run.

    Args:
        runner: the model (torch or ONNX).
        inputs: model inputs; chunks of consecutive inputs share batches, so feed them
            sorted by length for little padding.
        frame_shift, frame_length: frame geometry in seconds (segment times).
        max_chunk_frames: most voiced frames per model input.
        batch_size, max_batch_frames: most inputs and padded frames per model call.
        timeline: also compute per-segment posteriors.
    """
    pending: dict[str, list[ChunkResult | None]] = {}

    def chunks() -> Iterator[_Chunk]:
        for item in inputs:
            bounds = chunk_bounds(len(item.feats), max_chunk_frames)
            pending[item.id] = [None] * len(bounds)
            for s, e in bounds:
                yield _Chunk(item.id, item.feats[s:e], item.frame_index[s:e])

    for batch in _batches(chunks(), batch_size, max_batch_frames):
        outs = runner.run([c.feats for c in batch], timeline=timeline)
        for c, out in zip(batch, outs, strict=True):
            starts, ends = segment_times(out.segment_frames, c.frame_index, frame_shift,
                                         frame_length)
            slots = pending[c.utt]
            slots[slots.index(None)] = ChunkResult(out, starts, ends, len(c.feats))
            if all(s is not None for s in slots):
                del pending[c.utt]
                yield c.utt, combine_chunks(slots)  # type: ignore[arg-type]
