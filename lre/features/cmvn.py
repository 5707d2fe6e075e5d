"""Cepstral mean (and variance) normalisation, per utterance and over a sliding window.

* :func:`utterance_cmvn` is Kaldi's ``apply-cmvn`` with per-utterance statistics
  (``compute-cmvn-stats`` on the utterance itself).
* :func:`sliding_cmn` is Kaldi's ``apply-cmvn-sliding``: each frame is normalised with
  the mean (and optionally the variance) of a window of ``cmn_window`` frames around it
  (``center``) or ending at it, shifted to stay inside the utterance; sums in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lre.utils import LreError

#: Kaldi's variance floor in apply-cmvn-sliding (and close to apply-cmvn's).
VARIANCE_FLOOR = 1.0e-10


@dataclass(frozen=True)
class CmvnOptions:
    """How features are normalised when they are read (defaults: ``features/cmvn.conf``).

    ``norm_means``/``norm_vars``: per-utterance CMVN (``apply-cmvn``), then, when
    ``sliding_cmn``, ``apply-cmvn-sliding`` with ``cmn_window``, ``center``,
    ``min_cmn_window`` and ``sliding_norm_vars`` (Kaldi's ``--norm-vars`` of that tool).
    ``before_vad``: normalise all frames, then drop unvoiced ones (Kaldi's recipes'
    order); by default statistics come from the voiced frames only.
    """

    norm_means: bool = True
    norm_vars: bool = True
    sliding_cmn: bool = True
    cmn_window: int = 300
    center: bool = True
    min_cmn_window: int = 100
    sliding_norm_vars: bool = False
    before_vad: bool = False

    def check(self) -> None:
        if self.norm_vars and not self.norm_means:
            raise LreError("cmvn: --norm-vars=true needs --norm-means=true (as in apply-cmvn)")
        if self.cmn_window <= 0:
            raise LreError(f"cmvn: --cmn-window must be > 0, got {self.cmn_window}")
        if self.sliding_cmn and not self.center and not (
            0 < self.min_cmn_window <= self.cmn_window
        ):
            raise LreError(
                f"cmvn: --min-cmn-window must be in 1..cmn-window ({self.cmn_window}), "
                f"got {self.min_cmn_window}"
            )


#: Kaldi's tool defaults (apply-cmvn; apply-cmvn-sliding), which a conf file overrides.
KALDI_CMVN_DEFAULTS = CmvnOptions(
    norm_means=True,
    norm_vars=False,
    sliding_cmn=True,
    cmn_window=600,
    center=False,
    min_cmn_window=100,
    sliding_norm_vars=False,
    before_vad=False,
)


def utterance_cmvn(feats: np.ndarray, norm_vars: bool = False) -> np.ndarray:
    """Subtract the utterance mean (and divide by its standard deviation).

    Args:
        feats: ``(frames, dim)``.
        norm_vars: also scale each dimension to unit variance (variance floored).

    Returns:
        ``(frames, dim)`` float32.
    """
    out = np.array(feats, dtype=np.float64)  # a copy, normalised in place
    if len(out) == 0:
        return out.astype(np.float32)
    out -= out.mean(axis=0)
    if norm_vars:
        var = np.maximum((out * out).mean(axis=0), VARIANCE_FLOOR)
        out /= np.sqrt(var)
    return out.astype(np.float32)


def sliding_windows(
    num_frames: int, cmn_window: int, center: bool, min_window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of the normalisation window of every frame, as in
    Kaldi's ``SlidingWindowCmnInternal``; two ``(frames,)`` int64 arrays."""
    t = np.arange(num_frames, dtype=np.int64)
    if center:
        start = t - cmn_window // 2
        end = start + cmn_window
    else:
        start = t - cmn_window
        end = t + 1
    # Shift the window right when it starts before the utterance.
    shift = np.where(start < 0, -start, 0)
    start, end = start + shift, end + shift
    if not center:
        end = np.where(end > t, np.maximum(t + 1, min_window), end)
    # Shift it left when it ends after the utterance (but never before frame 0).
    over = np.maximum(end - num_frames, 0)
    start = np.maximum(start - over, 0)
    end = end - over
    return start, end


def sliding_cmn(
    feats: np.ndarray,
    cmn_window: int = 300,
    center: bool = True,
    min_window: int = 100,
    norm_vars: bool = False,
) -> np.ndarray:
    """Kaldi ``apply-cmvn-sliding``.

    Args:
        feats: ``(frames, dim)``.
        cmn_window: window length in frames.
        center: window centred on the frame (else it ends at the frame).
        min_window: shortest window at the start when not centred.
        norm_vars: also normalise the variance inside the window.

    Returns:
        ``(frames, dim)`` float32.
    """
    x = np.asarray(feats, dtype=np.float64)
    num_frames = len(x)
    if num_frames == 0:
        return x.astype(np.float32)
    start, end = sliding_windows(num_frames, cmn_window, center, min_window)
    count = (end - start).astype(np.float64)[:, None]
    csum = np.zeros((num_frames + 1, x.shape[1]))
    np.cumsum(x, axis=0, out=csum[1:])
    # In place where the arithmetic allows: a long recording holds several float64 copies.
    window_mean = csum[end]
    window_mean -= csum[start]
    window_mean /= count
    if norm_vars:
        np.cumsum(x * x, axis=0, out=csum[1:])
        var = csum[end]
        var -= csum[start]
        var /= count
        var -= window_mean ** 2
        out = x - window_mean
        out /= np.sqrt(np.maximum(var, VARIANCE_FLOOR))
        # Kaldi outputs zeros where the window is a single frame.
        out[count[:, 0] == 1] = 0.0
        return out.astype(np.float32)
    del csum
    x = x.copy() if x is feats else x
    x -= window_mean
    return x.astype(np.float32)


__all__ = [
    "KALDI_CMVN_DEFAULTS",
    "CmvnOptions",
    "sliding_cmn",
    "sliding_windows",
    "utterance_cmvn",
]
