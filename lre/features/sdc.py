"""Shifted delta cepstra (SDC), exactly as Kaldi's ``add-deltas-sdc``.

SDC with parameters N-d-P-k (classic 7-1-3-7): for each frame ``t`` of an ``N``-dim
cepstral sequence ``c``, block ``i = 0..k-1`` is the delta

    delta_i(t) = sum_{j=-d..d} j * c(t + j + i*P) / sum_{j=-d..d} j^2

Kaldi's output row is ``[c(t), delta_0(t), ..., delta_{k-1}(t)]`` (``N * (k + 1)``
dims: 56 for 7-1-3-7). Frame indices outside the utterance are clamped to the first or
last frame, as Kaldi's ``ShiftedDeltaFeatures`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SdcOptions:
    """Kaldi ``add-deltas-sdc`` options (d, P, k of N-d-P-k; N is the MFCC's ``num_ceps``)."""

    window: int = 1  # d: delta window half-width
    block_shift: int = 3  # P: frames between blocks
    num_blocks: int = 7  # k: number of delta blocks

    def check(self) -> None:
        from lre.utils import LreError

        if not 0 < self.window < 1000:
            raise LreError(f"sdc: --window must be in 1..999, got {self.window}")
        if self.block_shift < 1:
            raise LreError(f"sdc: --block-shift must be >= 1, got {self.block_shift}")
        if self.num_blocks < 1:
            raise LreError(f"sdc: --num-blocks must be >= 1, got {self.num_blocks}")


def shifted_deltas(feats: np.ndarray, opts: SdcOptions = SdcOptions()) -> np.ndarray:
    """Append SDC blocks to ``feats``.

    Args:
        feats: ``(frames, N)`` cepstra.
        opts: window ``d``, block shift ``P``, number of blocks ``k``.

    Returns:
        ``(frames, N * (k + 1))`` float32: the input then ``k`` shifted-delta blocks.
    """
    feats = np.asarray(feats, dtype=np.float32)
    num_frames, dim = feats.shape
    out = np.empty((num_frames, dim * (opts.num_blocks + 1)), dtype=np.float32)
    out[:, :dim] = feats
    if num_frames == 0:
        return out
    d = opts.window
    normalizer = float(sum(j * j for j in range(-d, d + 1)))
    t = np.arange(num_frames)
    for i in range(opts.num_blocks):
        block = out[:, (i + 1) * dim : (i + 2) * dim]
        block[:] = 0.0
        # Kaldi adds the taps in order j = -d..d (skipping j = 0, whose scale is 0).
        for j in range(-d, d + 1):
            if j == 0:
                continue
            rows = np.clip(t + j + i * opts.block_shift, 0, num_frames - 1)
            block += np.float32(j / normalizer) * feats[rows]
    return out


__all__ = ["SdcOptions", "shifted_deltas"]
