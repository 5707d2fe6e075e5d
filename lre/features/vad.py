"""Energy voice activity detection, exactly as Kaldi's ``compute-vad``.

Kaldi decides from column 0 of MFCCs, which with Kaldi's default ``--use-energy=true``
is the frame's raw log-energy; :func:`lre.features.extract` passes that same log-energy
(computed on the same frames, whatever the feature type). The threshold is

    threshold = vad_energy_threshold + vad_energy_mean_scale * mean_t(log_energy)

and frame ``t`` is voiced when at least ``vad_proportion_threshold`` of the frames in
``[t - context, t + context]`` (those inside the utterance) are above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lre.utils import LreError


@dataclass(frozen=True)
class VadOptions:
    """Kaldi ``compute-vad`` options. Defaults: the values of ``features/vad.conf``."""

    vad_energy_threshold: float = 5.5
    vad_energy_mean_scale: float = 0.5
    vad_frames_context: int = 2
    vad_proportion_threshold: float = 0.12

    def check(self) -> None:
        if self.vad_energy_mean_scale < 0:
            raise LreError(f"vad: --vad-energy-mean-scale must be >= 0, got "
                           f"{self.vad_energy_mean_scale}")
        if self.vad_frames_context < 0:
            raise LreError(f"vad: --vad-frames-context must be >= 0, got "
                           f"{self.vad_frames_context}")
        if not 0.0 < self.vad_proportion_threshold < 1.0:
            raise LreError(f"vad: --vad-proportion-threshold must be in (0, 1), got "
                           f"{self.vad_proportion_threshold}")


#: Kaldi's defaults for ``compute-vad`` (a conf file overrides these).
KALDI_VAD_DEFAULTS = VadOptions(5.0, 0.5, 0, 0.6)


def energy_vad(log_energy: np.ndarray, opts: VadOptions = VadOptions()) -> np.ndarray:
    """Voiced/unvoiced decision per frame.

    Args:
        log_energy: ``(frames,)`` log-energy of each frame.
        opts: thresholds and context.

    Returns:
        ``(frames,)`` bool, True where voiced.
    """
    log_energy = np.asarray(log_energy, dtype=np.float32)
    num_frames = len(log_energy)
    if num_frames == 0:
        return np.zeros(0, dtype=bool)
    threshold = np.float32(opts.vad_energy_threshold)
    if opts.vad_energy_mean_scale != 0.0:
        threshold += np.float32(opts.vad_energy_mean_scale) * np.float32(
            log_energy.sum(dtype=np.float64) / num_frames
        )
    above = (log_energy > threshold).astype(np.int64)
    c = opts.vad_frames_context
    if c == 0:
        return above.astype(bool)
    # Counts over the window [t-c, t+c] clipped to the utterance, via prefix sums.
    csum = np.concatenate([[0], np.cumsum(above)])
    t = np.arange(num_frames)
    lo = np.maximum(t - c, 0)
    hi = np.minimum(t + c + 1, num_frames)
    num = csum[hi] - csum[lo]
    den = (hi - lo).astype(np.float32)
    # float32 product, as Kaldi compares ``num >= den * threshold`` in single precision.
    return num >= den * np.float32(opts.vad_proportion_threshold)


__all__ = ["KALDI_VAD_DEFAULTS", "VadOptions", "energy_vad"]
