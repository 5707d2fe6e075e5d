"""Baseline: a flat bidirectional GRU over frames with attention pooling over frames.

    x (B, T, D) -> BiGRU over all frames -> h (B, T, 2H)
    a_t = softmax_t(tanh(W h_t + b) . u) over real frames;  z = sum_t a_t h_t
    z -> dense ReLU -> linear -> language logits

Reported segments are fixed blocks of ``block_frames`` frames (1 s); the attention of a block
is the sum of its frames' attention, so it is the block's true share of the pooled vector.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lre.models.base import (
    AttentionPooling,
    BidirectionalGRU,
    LidModel,
    ModelOutput,
    block_layout,
    frame_mask,
    masked_softmax,
    require_dropout,
    require_positive,
    zero_padding,
)


class FlatBiGRU(LidModel):
    """Flat BiGRU baseline.

    Config keys: ``hidden`` (per direction), ``num_layers``, ``attention``, ``dense``,
    ``dropout`` (between GRU layers, on the GRU output and the dense layer), ``block_frames``
    (frames per reported segment).
    """

    name = "bigru"
    FRAME_SECONDS: ClassVar[dict[str, float]] = {"block_frames": 1.0}
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "hidden": 256,
        "num_layers": 1,
        "attention": 128,
        "dense": 512,
        "dropout": 0.1,
        "block_frames": 100,
    }

    def __init__(self, feat_dim: int, num_langs: int, config: dict[str, Any] | None = None):
        super().__init__(feat_dim, num_langs, config)
        c = self.config
        require_positive(self.name, c, "hidden", "num_layers", "attention", "dense",
                         "block_frames")
        require_dropout(self.name, c)
        self.block_frames = c["block_frames"]
        self.segment_hop = self.segment_span = self.block_frames
        self.min_frames = 1
        self.gru = BidirectionalGRU(feat_dim, c["hidden"], c["num_layers"], c["dropout"])
        self.dropout = nn.Dropout(c["dropout"])
        self.attention = AttentionPooling(2 * c["hidden"], c["attention"])
        self.classifier = nn.Sequential(
            nn.Linear(2 * c["hidden"], c["dense"]),
            nn.ReLU(),
            nn.Dropout(c["dropout"]),
            nn.Linear(c["dense"], num_langs),
        )

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(h (batch, frames, 2*hidden), frame mask (batch, frames), lengths (batch,))``;
        lengths are clipped to ``[1, frames]`` (an empty utterance reads as one zero frame)."""
        if feats.shape[1] == 0:
            feats = feats.new_zeros(feats.shape[0], 1, feats.shape[2])
        frames = feats.shape[1]
        lengths = lengths.to(device=feats.device, dtype=torch.int64).clamp(min=1)
        lengths = lengths.clamp(max=frames)
        x = zero_padding(feats, lengths)
        h = self.dropout(self.gru(x, lengths))
        return h, frame_mask(lengths, frames), lengths

    def _blocks(self, t: Tensor) -> Tensor:
        """``(batch, frames, ...)`` -> ``(batch, blocks, block_frames, ...)``, zero-padded."""
        frames = t.shape[1]
        blocks = (frames - 1) // self.block_frames + 1
        pad = blocks * self.block_frames - frames
        t = torch.cat([t, t.new_zeros((t.shape[0], pad, *t.shape[2:]))], dim=1)
        return t.reshape(t.shape[0], -1, self.block_frames, *t.shape[2:])

    def forward(self, feats: Tensor, lengths: Tensor, with_segments: bool = False
                ) -> ModelOutput:
        """``feats (batch, frames, feat_dim)``, ``lengths (batch,)`` -> :class:`ModelOutput`;
        attention per block = sum of the frame attention inside the block."""
        h, mask, lengths = self.encode(feats, lengths)
        pooled, weights = self.attention(h, mask)
        _, seg_mask, spans = block_layout(lengths, h.shape[1], self.block_frames)
        block_weights = self._blocks(weights).sum(dim=2)
        out = ModelOutput(self.classifier(pooled), block_weights, seg_mask, spans,
                          embedding=pooled)
        return self._add_segment_logits(out, feats, lengths) if with_segments else out

    def segment_logits(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``(batch, blocks, num_langs)`` of each block pooled on its own (attention
        renormalised inside the block); 0 on padding blocks."""
        h, _, lengths = self.encode(feats, lengths)
        _, seg_mask, _ = block_layout(lengths, h.shape[1], self.block_frames)
        scores = self._blocks(self.attention.scores(h))               # (B, K, F)
        in_block = frame_mask(lengths, scores.shape[1] * self.block_frames)
        weights = masked_softmax(scores, in_block.reshape(scores.shape))  # per block
        pooled = torch.einsum("bkf,bkfd->bkd", weights, self._blocks(h))
        logits = self.classifier(pooled)
        return torch.where(seg_mask[:, :, None], logits, torch.zeros((), dtype=logits.dtype,
                                                                     device=logits.device))
