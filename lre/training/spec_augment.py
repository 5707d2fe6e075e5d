"""On-the-fly augmentation of training crops: frequency warping and SpecAugment masks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lre.training.config import AugmentConfig

__all__ = ["augment_features"]


def _random_bands(count: int, widest: int, extent: torch.Tensor, size: int,
                  device: torch.device) -> torch.Tensor:
    """``(batch, size)`` bool: ``count`` random bands per row, each up to ``widest`` long and
    inside ``[0, extent[row])``."""
    batch = extent.shape[0]
    width = (torch.rand(batch, count, device=device) * (widest + 1)).long()
    room = (extent[:, None] - width).clamp(min=0) + 1
    start = (torch.rand(batch, count, device=device) * room).long()
    pos = torch.arange(size, device=device)[None, None, :]
    return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)


def _warp_frequency(feats: torch.Tensor, max_warp: float) -> torch.Tensor:
    """Each row's feature dim ``d`` read from ``d * alpha`` by linear interpolation,
    ``alpha`` uniform in ``[1 - max_warp, 1 + max_warp]``; ``feats (batch, frames, dim)``."""
    batch, frames, dim = feats.shape
    device = feats.device
    alpha = 1 + (torch.rand(batch, device=device) * 2 - 1) * max_warp
    pos = (torch.arange(dim, device=device)[None, :] * alpha[:, None]).clamp(max=dim - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=dim - 1)
    w = (pos - lo).to(feats.dtype)[:, None, :]

    def take(index: torch.Tensor) -> torch.Tensor:
        return torch.gather(feats, 2, index[:, None, :].expand(batch, frames, dim))

    return take(lo) * (1 - w) + take(hi) * w


def augment_features(feats: torch.Tensor, lengths: torch.Tensor,
                     settings: AugmentConfig | Mapping[str, Any]) -> torch.Tensor:
    """Random frequency warping and SpecAugment masks for a training batch.

    ``feats (batch, frames, feat_dim)``, ``lengths (batch,)``; returns a new tensor.
    ``settings`` is the ``augment:`` section (or a dict of its keys). Warping reads each
    row's feature dim ``d`` from ``d * alpha`` (linear interpolation, ``alpha`` uniform in
    ``[1 - freq_warp, 1 + freq_warp]``), a cheap stand-in for vocal tract length perturbation
    on mel-spaced features. Masks set bands of dims / spans of frames to 0, the mean after
    CMVN; time masks stay inside each utterance. Draws from torch's RNG, so a seed (and a
    resumed run) repeats it.
    """
    a = settings if isinstance(settings, AugmentConfig) else AugmentConfig.from_dict(
        settings, "augment")
    batch, frames, dim = feats.shape
    device = feats.device
    out = _warp_frequency(feats, a.freq_warp) if a.freq_warp > 0 else feats
    if a.freq_masks <= 0 and a.time_masks <= 0:
        return out
    keep = torch.ones(batch, frames, dim, dtype=torch.bool, device=device)
    if a.freq_masks > 0:
        band = _random_bands(a.freq_masks, a.freq_mask_width,
                             torch.full((batch,), dim, device=device), dim, device)
        keep &= ~band[:, None, :]
    if a.time_masks > 0:
        span = _random_bands(a.time_masks, a.time_mask_width, lengths.to(device), frames,
                             device)
        keep &= ~span[:, :, None]
    return out * keep
