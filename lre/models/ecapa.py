"""Baseline: ECAPA-TDNN (Desplanques et al., Interspeech 2020) from SpeechBrain.

A thin wrapper over ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`` (the optional extra
``pip install lre[baselines]``) with a linear language layer on its embedding. SpeechBrain's
attentive statistics pooling sees the true lengths (as relative lengths); its convolutions
pad the batch as SpeechBrain does, so a short utterance batched with long ones can differ
slightly from the same utterance alone. Reported segments are fixed blocks of
``block_frames`` frames weighted by their share of the utterance's frames;
``segment_logits`` classifies each block on its own.
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
    require,
    require_dropout,
    require_positive,
    zero_padding,
)
from lre.utils import LreError

INSTALL_HINT = "ecapa needs `pip install lre[baselines]`"


def _ecapa_class() -> type[nn.Module]:
    try:
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    except ImportError as e:
        raise LreError(f"{INSTALL_HINT} (speechbrain is not installed: {e})") from None
    return ECAPA_TDNN


class EcapaTDNN(LidModel):
    """SpeechBrain ECAPA-TDNN with a linear language layer.

    Config keys are SpeechBrain's (``channels``, ``kernel_sizes``, ``dilations``,
    ``attention_channels``, ``res2net_scale``, ``se_channels``), plus ``embedding``
    (SpeechBrain's ``lin_neurons``), ``dropout`` (before the language layer) and
    ``block_frames``.
    """

    name = "ecapa"
    FRAME_SECONDS: ClassVar[dict[str, float]] = {"block_frames": 1.0}
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "channels": [512, 512, 512, 512, 1536],
        "kernel_sizes": [5, 3, 3, 3, 1],
        "dilations": [1, 2, 3, 4, 1],
        "attention_channels": 128,
        "res2net_scale": 8,
        "se_channels": 128,
        "embedding": 192,
        "dropout": 0.0,
        "block_frames": 100,
    }

    def __init__(self, feat_dim: int, num_langs: int, config: dict[str, Any] | None = None):
        super().__init__(feat_dim, num_langs, config)
        c = self.config
        n = len(c["channels"])
        require(self.name, n >= 3, f"channels needs at least 3 layers, got {n}")
        require(self.name, len(c["kernel_sizes"]) == n and len(c["dilations"]) == n,
                f"channels, kernel_sizes and dilations need the same length "
                f"({n}, {len(c['kernel_sizes'])}, {len(c['dilations'])})")
        for key in ("channels", "kernel_sizes", "dilations"):
            require(self.name, all(v >= 1 for v in c[key]), f"{key} must all be >= 1")
        require_positive(self.name, c, "attention_channels", "res2net_scale", "se_channels",
                         "embedding", "block_frames")
        require(self.name, all(ch % c["res2net_scale"] == 0 for ch in c["channels"][1:-1]),
                f"res2net_scale ({c['res2net_scale']}) must divide the channels of the "
                f"SE-Res2Net layers {c['channels'][1:-1]}")
        require_dropout(self.name, c)
        self.block_frames = c["block_frames"]
        self.segment_hop = self.segment_span = self.block_frames
        # SpeechBrain pads 'same' by reflection, which needs more frames than the widest pad.
        self.min_frames = max((k - 1) * d // 2 for k, d in
                              zip(c["kernel_sizes"], c["dilations"], strict=True)) + 1
        ecapa = _ecapa_class()
        self.encoder = ecapa(
            input_size=feat_dim,
            lin_neurons=c["embedding"],
            channels=list(c["channels"]),
            kernel_sizes=list(c["kernel_sizes"]),
            dilations=list(c["dilations"]),
            attention_channels=c["attention_channels"],
            res2net_scale=c["res2net_scale"],
            se_channels=c["se_channels"],
        )
        self.output = nn.Sequential(nn.Dropout(c["dropout"]), nn.Linear(c["embedding"],
                                                                         num_langs))

    def _logits(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x (rows, frames, feat_dim)`` zero beyond ``lengths (rows,)`` (>= 1) -> logits."""
        return self.output(self._embedding(x, lengths))

    def _embedding(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The ECAPA embedding ``(rows, embedding)`` of ``x`` as :meth:`_logits` takes it."""
        frames = x.shape[1]
        if frames < self.min_frames:
            x = F.pad(x, (0, 0, 0, self.min_frames - frames))
        relative = lengths.to(x.dtype) / x.shape[1]
        return self.encoder(x, lengths=relative).squeeze(1)

    def _prepare(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        lengths = lengths.to(device=feats.device, dtype=torch.int64).clamp(min=1)
        lengths = lengths.clamp(max=max(int(feats.shape[1]), 1))
        return zero_padding(feats, lengths), lengths

    def forward(self, feats: Tensor, lengths: Tensor, with_segments: bool = False
                ) -> ModelOutput:
        """``feats (batch, frames, feat_dim)``, ``lengths (batch,)`` -> :class:`ModelOutput`."""
        x, lengths = self._prepare(feats, lengths)
        _, mask, spans = block_layout(lengths, feats.shape[1], self.block_frames)
        share = (spans[:, :, 1] - spans[:, :, 0]).to(x.dtype) / lengths[:, None].to(x.dtype)
        embedding = self._embedding(x, lengths)
        out = ModelOutput(self.output(embedding), share, mask, spans, embedding=embedding)
        return self._add_segment_logits(out, feats, lengths) if with_segments else out

    def segment_logits(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``(batch, blocks, num_langs)`` of each block classified on its own."""
        x, lengths = self._prepare(feats, lengths)
        _, mask, spans = block_layout(lengths, feats.shape[1], self.block_frames)
        b, k = mask.shape
        pad = k * self.block_frames - x.shape[1]
        blocks = F.pad(x, (0, 0, 0, pad)).reshape(b * k, self.block_frames, x.shape[2])
        sizes = (spans[:, :, 1] - spans[:, :, 0]).clamp(min=1).reshape(-1)
        logits = self._logits(blocks, sizes).reshape(b, k, -1)
        return torch.where(mask[:, :, None], logits, torch.zeros((), dtype=logits.dtype,
                                                                 device=logits.device))
