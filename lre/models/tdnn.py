"""Baseline: the x-vector TDNN (Snyder et al., "X-vectors: robust DNN embeddings for speaker
recognition", ICASSP 2018; used for language recognition in "Spoken language recognition
using x-vectors", Odyssey 2018).

    frame1  context [t-2, t+2]        -> channels
    frame2  context {t-2, t, t+2}     -> channels
    frame3  context {t-3, t, t+3}     -> channels
    frame4  context {t}               -> channels
    frame5  context {t}               -> stats_channels
    stats   mean and standard deviation over the utterance's frames -> 2 * stats_channels
    segment6, segment7  affine + ReLU + batch norm -> embedding
    output  linear -> language logits

Each frame layer is affine + ReLU + batch norm (Kaldi's order). The network sees 7 frames of
context on each side, so an input of ``T`` frames gives ``T - 14`` frame-level outputs.
Statistics pooling weighs every frame equally; the reported segments are fixed blocks of
``block_frames`` frames whose attention is their share of the utterance's frames. In training,
the frame layers' batch statistics include the padding of shorter utterances (as in Kaldi's
and SpeechBrain's recipes; length bucketing keeps it small); in eval mode padding has no
effect on an utterance's outputs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lre.models.base import (
    LidModel,
    ModelOutput,
    block_layout,
    require_dropout,
    require_positive,
    zero_padding,
)

# (kernel size, dilation) of frame1..frame5: contexts [-2,2], {-2,0,2}, {-3,0,3}, {0}, {0}.
FRAME_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))
CONTEXT = sum((k - 1) // 2 * d for k, d in FRAME_LAYERS)  # 7 frames each side


class _BatchNorm(nn.BatchNorm1d):
    """Batch norm that uses its running statistics for a one-row training batch (where batch
    statistics do not exist) instead of failing."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1 and x.dim() == 2:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        return super().forward(x)


def _frame_layer(inp: int, out: int, kernel: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(inp, out, kernel, dilation=dilation), nn.ReLU(),
                         nn.BatchNorm1d(out))


class XVectorTDNN(LidModel):
    """x-vector TDNN baseline.

    Config keys: ``channels`` (frame1..frame4 width, 512), ``stats_channels`` (frame5 width,
    1500), ``embedding`` (segment6/segment7 width, 512), ``dropout`` (before the output
    layer), ``block_frames`` (frames per reported segment), ``std_floor`` (variance floor of
    the pooled standard deviation).
    """

    name = "tdnn"
    FRAME_SECONDS: ClassVar[dict[str, float]] = {"block_frames": 1.0}
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "channels": 512,
        "stats_channels": 1500,
        "embedding": 512,
        "dropout": 0.0,
        "block_frames": 100,
        "std_floor": 1e-5,
    }

    def __init__(self, feat_dim: int, num_langs: int, config: dict[str, Any] | None = None):
        super().__init__(feat_dim, num_langs, config)
        c = self.config
        require_positive(self.name, c, "channels", "stats_channels", "embedding",
                         "block_frames")
        require_dropout(self.name, c)
        self.block_frames = c["block_frames"]
        self.segment_hop = self.segment_span = self.block_frames
        self.context = CONTEXT
        self.min_frames = 2 * CONTEXT + 1
        widths = [feat_dim] + [c["channels"]] * 4 + [c["stats_channels"]]
        self.frame_layers = nn.Sequential(*(
            _frame_layer(widths[i], widths[i + 1], k, d)
            for i, (k, d) in enumerate(FRAME_LAYERS)))
        e = c["embedding"]
        self.segment6 = nn.Sequential(nn.Linear(2 * c["stats_channels"], e), nn.ReLU(),
                                      _BatchNorm(e))
        self.segment7 = nn.Sequential(nn.Linear(e, e), nn.ReLU(), _BatchNorm(e))
        self.output = nn.Sequential(nn.Dropout(c["dropout"]), nn.Linear(e, num_langs))

    def frame_outputs(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Frame-level network.

        Returns ``(y (batch, stats_channels, frames - 14), valid (batch,) number of real
        output frames (>= 1), lengths (batch,) clipped to [1, frames])``; output frame ``j``
        is centred on input frame ``j + 7``. Inputs shorter than 15 frames are zero-padded.
        """
        frames = feats.shape[1]
        lengths = lengths.to(device=feats.device, dtype=torch.int64).clamp(min=1)
        lengths = lengths.clamp(max=max(frames, 1) if isinstance(frames, int) else frames)
        x = zero_padding(feats, lengths)
        if isinstance(frames, int) and frames < self.min_frames:
            x = F.pad(x, (0, 0, 0, self.min_frames - frames))
        y = self.frame_layers(x.transpose(1, 2))
        valid = torch.clamp(lengths - 2 * self.context, min=1)
        return y, valid, lengths

    def _pool(self, y: Tensor, weights: Tensor) -> Tensor:
        """Mean and standard deviation of ``y (B, C, J)`` under frame weights ``(B, S, J)``
        that sum to 1 over ``J`` -> ``(B, S, 2C)``."""
        mean = torch.einsum("bsj,bcj->bsc", weights, y)
        sq = torch.einsum("bsj,bcj->bsc", weights, y * y)
        var = torch.clamp(sq - mean * mean, min=self.config["std_floor"])
        return torch.cat([mean, var.sqrt()], dim=2)

    def _classify(self, stats: Tensor) -> Tensor:
        """``(rows, 2 * stats_channels)`` -> logits ``(rows, num_langs)``."""
        return self.output(self.segment7(self.segment6(stats)))

    def forward(self, feats: Tensor, lengths: Tensor, with_segments: bool = False
                ) -> ModelOutput:
        """``feats (batch, frames, feat_dim)``, ``lengths (batch,)`` -> :class:`ModelOutput`;
        attention of a block = its share of the utterance's frames."""
        y, valid, lengths = self.frame_outputs(feats, lengths)
        j = torch.arange(y.shape[2], device=y.device)
        w = (j[None, :] < valid[:, None]).to(y.dtype) / valid[:, None].to(y.dtype)
        stats = self._pool(y, w[:, None, :])[:, 0]
        _, mask, spans = block_layout(lengths, feats.shape[1], self.block_frames)
        share = (spans[:, :, 1] - spans[:, :, 0]).to(y.dtype) / lengths[:, None].to(y.dtype)
        xvector = self.segment6(stats)  # the embedding; _classify's first layer
        out = ModelOutput(self.output(self.segment7(xvector)), share, mask, spans,
                          embedding=xvector)
        return self._add_segment_logits(out, feats, lengths) if with_segments else out

    def segment_logits(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``(batch, blocks, num_langs)`` from the statistics of the output frames
        centred inside each block (at least one frame each); 0 on padding blocks."""
        y, valid, lengths = self.frame_outputs(feats, lengths)
        _, mask, spans = block_layout(lengths, feats.shape[1], self.block_frames)
        last = (valid - 1)[:, None]
        lo = torch.minimum((spans[:, :, 0] - self.context).clamp(min=0), last)
        hi = torch.minimum(torch.maximum(spans[:, :, 1] - self.context, lo + 1),
                           valid[:, None])
        j = torch.arange(y.shape[2], device=y.device)[None, None, :]
        sel = ((j >= lo[:, :, None]) & (j < hi[:, :, None])).to(y.dtype)
        sel = sel / sel.sum(dim=2, keepdim=True)
        stats = self._pool(y, sel)                                      # (B, K, 2C)
        logits = self._classify(stats.reshape(-1, stats.shape[2]))
        logits = logits.reshape(stats.shape[0], stats.shape[1], -1)
        return torch.where(mask[:, :, None], logits, torch.zeros((), dtype=logits.dtype,
                                                                 device=logits.device))
