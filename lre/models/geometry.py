"""Segment geometry: how a model cuts its input frames into the segments it reports.

Every model has one (:meth:`lre.models.base.LidModel.geometry`, from its config): training
crops are whole numbers of segments of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentGeometry:
    """How a model cuts frames into segments: segment ``k`` spans frames
    ``[k * hop, k * hop + span)`` (the HGRU's defaults: hop 100, span 110 at 10 ms)."""

    hop: int
    span: int
    frame_shift: float = 0.01

    def frames(self, segments: int | np.ndarray) -> int | np.ndarray:
        """Frames needed for ``segments`` whole segments (elementwise for arrays)."""
        return (segments - 1) * self.hop + self.span

    def segments(self, frames: int | np.ndarray) -> int | np.ndarray:
        """Whole segments in ``frames`` frames, 0 when shorter than one segment (elementwise
        for arrays)."""
        whole = np.maximum((np.asarray(frames) - self.span) // self.hop + 1, 0)
        return int(whole) if whole.ndim == 0 else whole

    def seconds_to_segments(self, seconds: float) -> int:
        """Nearest whole number of segments (at least 1) to ``seconds`` of speech."""
        return max(1, round(seconds / (self.hop * self.frame_shift)))
