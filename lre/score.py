"""Stage 3: score a data dir with a trained model.

``lre score --model-dir exp/hgru --data data/test --out exp/hgru/test`` reads the raw
features of stage 1 (``feats.scp``, ``vad.scp``), applies the model's feature
post-processing (voiced frames, CMVN), runs the model in length-sorted batches and
writes into ``--out``:

- ``scores_raw.tsv``: log-posteriors of the model, header ``utt<TAB>lang...``;
- ``scores.tsv``: the same, calibrated when ``<model-dir>/calibration.json`` exists;
- ``llr.tsv``: detection log-likelihood ratios from ``scores.tsv`` under flat priors,
  ``llr(l) = log p(x|l) - log( 1/(N-1) sum_{j!=l} p(x|j) )``;
- ``attention.jsonl``: one object per utterance ``{"utt", "pred", "posteriors",
  "segments": [{"start", "end", "weight"}]}``, times in seconds of the utterance's
  original audio (frames removed by VAD still count);
- ``score_failed``: utterances that could not be scored, with the reason (only when any).

Utterances longer than ``max_chunk_seconds`` of voiced speech are cut into equal chunks
that go through the model separately, so memory stays bounded; chunk results are
combined by :func:`combine_chunks` (the same rule ``lre identify`` uses for long files).

This module also holds the inference core shared with :mod:`lre.identify`: running a
model (torch, or an ONNX session from :mod:`lre.export`) on a list of feature matrices,
mapping segment frame spans to seconds, and combining chunks.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lre.utils import LreError, atomic_open

logger = logging.getLogger(__name__)

FEATS_CONFIG = "feats_config.json"
CALIBRATION = "calibration.json"


# ----------------------------------------------------------------------------------------
# Model outputs per input and the runners that produce them
# ----------------------------------------------------------------------------------------


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
    """

    logits: np.ndarray
    attention: np.ndarray
    segment_frames: np.ndarray
    segment_logits: np.ndarray | None = None


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
) -> list[ChunkOutput]:
    """Cut batched model outputs into one :class:`ChunkOutput` per input, padding dropped.

    Args:
        logits: ``(batch, num_langs)``.
        attention: ``(batch, segments)``.
        segment_mask: ``(batch, segments)`` bool, True for real segments.
        segment_frames: ``(batch, segments, 2)``.
        segment_logits: ``(batch, segments, num_langs)`` or None.
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
            seg_logits = out.segment_logits
        return split_outputs(
            out.logits.float().cpu().numpy(),
            out.attention.float().cpu().numpy(),
            out.segment_mask.cpu().numpy(),
            out.segment_frames.cpu().numpy(),
            None if seg_logits is None else seg_logits.float().cpu().numpy(),
        )


# ----------------------------------------------------------------------------------------
# Segment times and chunk combination
# ----------------------------------------------------------------------------------------


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
    """

    logits: np.ndarray
    log_posteriors: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    weights: np.ndarray
    segment_log_posteriors: np.ndarray | None = None
    num_frames: int = 0
    chunks: int = 1


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable ``log_softmax`` in float64."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def combine_chunks(chunks: Sequence[ChunkResult]) -> UtteranceResult:
    """Combine the results of the chunks of one utterance into one result.

    Rule: chunk ``c`` with ``n_c`` voiced frames gets weight ``w_c = n_c / sum_j n_j``;
    the utterance logits are ``sum_c w_c logits_c`` and each segment's attention weight
    is ``w_c a_{c,k}``, so the weights still sum to 1 and a chunk's share of the decision
    equals its share of the speech. A chunk with no voiced frame is left out by the
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
    timeline = None
    if all(c.output.segment_logits is not None for c in chunks):
        timeline = log_softmax(np.concatenate([c.output.segment_logits for c in chunks]))
    return UtteranceResult(
        logits=np.asarray(logits, dtype=np.float64),
        log_posteriors=log_softmax(logits),
        starts=np.concatenate([c.starts for c in chunks]),
        ends=np.concatenate([c.ends for c in chunks]),
        weights=weights,
        segment_log_posteriors=timeline,
        num_frames=total,
        chunks=len(chunks),
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


# ----------------------------------------------------------------------------------------
# Scores, LLRs, calibration
# ----------------------------------------------------------------------------------------


class Calibrator:
    """Applies ``<model_dir>/calibration.json`` to log-posteriors, or nothing without one."""

    def __init__(self, model_dir: str | os.PathLike, langs: list[str]) -> None:
        self.path = Path(model_dir) / CALIBRATION
        self.langs = list(langs)
        self.calibration: Any = None
        if self.path.is_file():
            from lre import calibration as calib

            self.calibration = calib.load_calibration(self.path)
            logger.info("calibration: %s", self.path)

    @property
    def active(self) -> bool:
        return self.calibration is not None

    def __call__(self, log_post: np.ndarray) -> np.ndarray:
        """``(utts, langs)`` raw log-posteriors -> calibrated log-posteriors."""
        log_post = np.atleast_2d(np.asarray(log_post, dtype=np.float64))
        if self.calibration is None:
            return log_post
        from lre import calibration as calib

        return np.asarray(calib.apply_calibration(self.calibration, log_post, self.langs),
                          dtype=np.float64)


# ----------------------------------------------------------------------------------------
# Loading a trained model and its feature config
# ----------------------------------------------------------------------------------------


def load_feats_config(path: str | os.PathLike):
    """Read a ``feats_config.json`` into ``lre.features.FeatureConfig``."""
    from lre.features import FeatureConfig

    path = Path(path)
    try:
        return FeatureConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise LreError(f"{path}: cannot read feature config ({e})") from e


def check_feats_compatible(model_cfg: Any, data_cfg: Any, data_name: str) -> None:
    """Fail when the data dir's features cannot feed the model: kind, dims, framing.

    Other differences (e.g. mel range, dither) are logged as a warning: the features
    still fit but may score worse.
    """
    for attr in ("kind", "feat_dim", "sample_rate", "frame_shift", "frame_length"):
        a, b = getattr(model_cfg, attr), getattr(data_cfg, attr)
        if a != b:
            raise LreError(
                f"{data_name}: features have {attr}={b!r} but the model was trained on "
                f"{attr}={a!r}; recompute them with the model's feats_config.json"
            )
    md, dd = _flatten(model_cfg.to_dict()), _flatten(data_cfg.to_dict())
    diff = sorted(k for k in md.keys() | dd.keys() if md.get(k) != dd.get(k))
    if diff:
        logger.warning("%s: feature options differ from the model's: %s", data_name,
                       ", ".join(diff))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


@dataclass
class TrainedModel:
    """A model loaded from an experiment dir with all it needs to score audio."""

    runner: ModelRunner
    langs: list[str]
    feats_config: Any
    calibrator: Calibrator
    meta: dict


def load_trained_model(
    model_dir: str | os.PathLike, checkpoint: str = "final.pt", device: str = "cpu"
) -> TrainedModel:
    """Load ``<model_dir>/<checkpoint>``, its ``feats_config.json`` and calibration."""
    from lre.models import load_model

    model_dir = Path(model_dir)
    ckpt = Path(checkpoint) if os.path.isabs(checkpoint) else model_dir / checkpoint
    if not ckpt.is_file():
        raise LreError(f"{ckpt}: no such checkpoint (train the model first, or pick "
                       "another with --checkpoint)")
    fc = model_dir / FEATS_CONFIG
    if not fc.is_file():
        raise LreError(f"{fc}: missing; the model dir must hold the feature config it was "
                       "trained with")
    model, meta = load_model(ckpt, map_location="cpu")
    langs = list(meta["langs"])
    cfg = load_feats_config(fc)
    if int(meta.get("feat_dim", cfg.feat_dim)) != cfg.feat_dim:
        raise LreError(f"{ckpt}: model expects feat_dim={meta['feat_dim']} but {fc} gives "
                       f"{cfg.feat_dim}")
    return TrainedModel(
        runner=TorchRunner(model, langs, device=device),
        langs=langs,
        feats_config=cfg,
        calibrator=Calibrator(model_dir, langs),
        meta=meta,
    )


# ----------------------------------------------------------------------------------------
# Writing results
# ----------------------------------------------------------------------------------------


def attention_record(
    utt: str, langs: Sequence[str], log_post: np.ndarray, result: UtteranceResult
) -> dict:
    """The ``attention.jsonl`` object of one utterance (posteriors rounded to 4 decimals,
    times to 3, weights to 4)."""
    post = np.exp(log_post)
    return {
        "utt": utt,
        "pred": langs[int(np.argmax(log_post))],
        "posteriors": {lang: round(float(p), 4) for lang, p in zip(langs, post, strict=True)},
        "segments": [
            {"start": round(float(s), 3), "end": round(float(e), 3), "weight": round(float(w), 4)}
            for s, e, w in zip(result.starts, result.ends, result.weights, strict=True)
        ],
    }


def write_results(
    out_dir: str | os.PathLike,
    langs: list[str],
    results: dict[str, UtteranceResult],
    calibrator: Calibrator,
) -> dict[str, Path]:
    """Write ``scores_raw.tsv``, ``scores.tsv``, ``llr.tsv`` and ``attention.jsonl``."""
    from lre.scoring import llr_from_logpost, write_scores

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utts = sorted(results, key=lambda u: u.encode("utf-8"))
    raw = np.stack([results[u].log_posteriors for u in utts])
    cal = calibrator(raw)
    paths = {
        "scores_raw": out_dir / "scores_raw.tsv",
        "scores": out_dir / "scores.tsv",
        "llr": out_dir / "llr.tsv",
        "attention": out_dir / "attention.jsonl",
    }
    write_scores(paths["scores_raw"], utts, langs, raw)
    write_scores(paths["scores"], utts, langs, cal)
    write_scores(paths["llr"], utts, langs, llr_from_logpost(cal))
    with atomic_open(paths["attention"], "w", encoding="utf-8") as f:
        for i, u in enumerate(utts):
            rec = attention_record(u, langs, cal[i], results[u])
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return paths


# ----------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One model input: an utterance or a chunk of one."""

    utt: str
    feats: np.ndarray  # (frames, feat_dim)
    frame_index: np.ndarray  # (frames,) original frame of each input frame


@dataclass
class ScoreReport:
    """What :func:`score_datadir` did."""

    out_dir: Path
    scored: int
    failed: dict[str, str]
    calibrated: bool
    paths: dict[str, Path]


def _read_table(path: Path) -> dict[str, str]:
    from lre.data.datadir import read_kv

    return read_kv(path)


def _load_utterance(
    utt: str, feats_spec: str, vad_spec: str | None, cfg: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Raw features + VAD of one utterance -> post-processed features and frame index."""
    import kaldiio

    from lre.features import postprocess

    try:
        feats = np.asarray(kaldiio.load_mat(feats_spec), dtype=np.float32)
    except Exception as e:  # kaldiio raises many types for broken arks
        raise LreError(f"{utt}: cannot read features {feats_spec} ({e})") from e
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise LreError(f"{utt}: features have shape {feats.shape}, expected (frames, dim)")
    if feats.shape[1] != cfg.feat_dim:
        raise LreError(f"{utt}: features have dim {feats.shape[1]}, model expects "
                       f"{cfg.feat_dim}")
    if not np.isfinite(feats).all():
        raise LreError(f"{utt}: features contain NaN or inf")
    vad = None
    if vad_spec is not None:
        try:
            vad = np.asarray(kaldiio.load_mat(vad_spec)).reshape(-1) > 0.5
        except Exception as e:
            raise LreError(f"{utt}: cannot read VAD {vad_spec} ({e})") from e
        if len(vad) != len(feats):
            raise LreError(f"{utt}: VAD has {len(vad)} frames, features have {len(feats)}")
        if not vad.any():
            raise LreError(f"{utt}: no voiced frame after VAD")
    out, index = postprocess(feats, vad, cfg)
    if len(out) == 0:
        raise LreError(f"{utt}: no frame left after VAD")
    return np.asarray(out, dtype=np.float32), np.asarray(index, dtype=np.int64)


def score_datadir(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    checkpoint: str = "final.pt",
    batch_size: int = 32,
    max_batch_frames: int = 60000,
    max_chunk_seconds: float = 60.0,
    device: str = "cpu",
) -> ScoreReport:
    """Score every utterance of ``data_dir`` with the model in ``model_dir``.

    Args:
        model_dir: experiment dir (``<checkpoint>``, ``feats_config.json``, optional
            ``calibration.json``).
        data_dir: data dir with ``feats.scp`` (and ``vad.scp``; without it every frame
            is used) from the feature stage.
        out_dir: where the score files go.
        batch_size: most inputs per model call.
        max_batch_frames: most padded frames (batch x longest) per model call.
        max_chunk_seconds: voiced speech per model input; longer utterances are split
            into equal chunks and recombined (:func:`combine_chunks`).

    Utterances whose features cannot be read, or that have no voiced frame, are
    skipped, logged and listed in ``<out_dir>/score_failed``; the stage fails only when
    nothing could be scored.
    """
    from tqdm import tqdm

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    model = load_trained_model(model_dir, checkpoint, device=device)
    cfg = model.feats_config
    feats_scp = data_dir / "feats.scp"
    if not feats_scp.is_file():
        raise LreError(f"{feats_scp}: missing; run the feature stage (lre features) first")
    if (data_dir / FEATS_CONFIG).is_file():
        check_feats_compatible(cfg, load_feats_config(data_dir / FEATS_CONFIG), str(data_dir))
    else:
        logger.warning("%s: no %s; assuming the model's feature config", data_dir, FEATS_CONFIG)
    feats = _read_table(feats_scp)
    vad_scp = data_dir / "vad.scp"
    vads = _read_table(vad_scp) if vad_scp.is_file() else None
    if vads is None:
        logger.warning("%s: no vad.scp; scoring all frames", data_dir)
    # Longest first, so that length-sorted neighbours share a batch and a memory
    # problem shows at once rather than at the end.
    lengths: dict[str, int] = {}
    u2nf = data_dir / "utt2num_frames"
    if u2nf.is_file():
        for u, v in _read_table(u2nf).items():
            try:
                lengths[u] = int(v.split()[0])
            except (ValueError, IndexError):
                pass
    order = sorted(feats, key=lambda u: (-lengths.get(u, 0), u))
    max_chunk = max(1, int(round(max_chunk_seconds / cfg.frame_shift)))

    failed: dict[str, str] = {}
    results: dict[str, UtteranceResult] = {}
    pending: dict[str, list[ChunkResult | None]] = {}

    def items() -> Iterator[_Item]:
        for utt in tqdm(order, desc="score", unit="utt", disable=None):
            vad_spec = None
            if vads is not None:
                vad_spec = vads.get(utt)
                if vad_spec is None:
                    failed[utt] = "no entry in vad.scp"
                    logger.warning("%s: skipped: no entry in vad.scp", utt)
                    continue
            try:
                x, index = _load_utterance(utt, feats[utt], vad_spec, cfg)
            except LreError as e:
                failed[utt] = str(e).removeprefix(f"{utt}: ")
                logger.warning("skipped %s", e)
                continue
            bounds = chunk_bounds(len(x), max_chunk)
            pending[utt] = [None] * len(bounds)
            for s, e in bounds:
                yield _Item(utt, x[s:e], index[s:e])

    def run_batch(batch: list[_Item]) -> None:
        outs = model.runner.run([it.feats for it in batch])
        for it, out in zip(batch, outs, strict=True):
            starts, ends = segment_times(
                out.segment_frames, it.frame_index, cfg.frame_shift, cfg.frame_length
            )
            slots = pending[it.utt]
            slots[slots.index(None)] = ChunkResult(out, starts, ends, len(it.feats))
            if all(s is not None for s in slots):
                results[it.utt] = combine_chunks(slots)  # type: ignore[arg-type]
                del pending[it.utt]

    batch: list[_Item] = []
    for it in items():
        longest = max([len(it.feats)] + [len(b.feats) for b in batch])
        if batch and (len(batch) >= batch_size or longest * (len(batch) + 1) > max_batch_frames):
            run_batch(batch)
            batch = []
        batch.append(it)
    if batch:
        run_batch(batch)

    if failed:
        with atomic_open(out_dir / "score_failed", "w", encoding="utf-8") as f:
            for u in sorted(failed, key=lambda u: u.encode("utf-8")):
                f.write(f"{u} {failed[u]}\n")
        logger.warning("%d of %d utterances could not be scored; see %s", len(failed),
                       len(feats), out_dir / "score_failed")
    elif (out_dir / "score_failed").exists():
        (out_dir / "score_failed").unlink()
    if not results:
        raise LreError(f"{data_dir}: no utterance could be scored")
    paths = write_results(out_dir, model.langs, results, model.calibrator)
    logger.info("scored %d utterances into %s%s%s", len(results), out_dir,
                " (calibrated)" if model.calibrator.active else "",
                f"; {len(failed)} failed, listed in score_failed" if failed else "")
    return ScoreReport(out_dir, len(results), failed, model.calibrator.active, paths)


def cli_score_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="experiment dir, e.g. exp/hgru")
    parser.add_argument("--data", required=True, help="data dir with feats.scp (and vad.scp)")
    parser.add_argument("--out", required=True, help="output dir, e.g. exp/hgru/test")
    parser.add_argument("--checkpoint", default="final.pt",
                        help="checkpoint file in the model dir (default: final.pt)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per model call")
    parser.add_argument("--max-batch-frames", type=int, default=60000,
                        help="most padded frames per model call (bounds memory)")
    parser.add_argument("--max-chunk-seconds", type=float, default=60.0,
                        help="longer utterances are scored in chunks of this much speech")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")


def cli_score(args: argparse.Namespace) -> int:
    score_datadir(  # logs what it wrote
        args.model_dir,
        args.data,
        args.out,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        max_batch_frames=args.max_batch_frames,
        max_chunk_seconds=args.max_chunk_seconds,
        device=args.device,
    )
    return 0
