"""THE feature pipeline: waveform -> raw features + VAD -> what the model sees.

Stage 1 (:mod:`lre.features.stage`) stores the output of :func:`extract` (raw features and
the VAD decision); the training reader, ``lre score`` and ``lre identify`` all turn them into
model input with :func:`postprocess` (voiced frames, per-utterance CMVN, sliding CMN), which
also gives each kept frame's index in the original frame sequence: the frame-to-time map
that keeps segment times in the original audio when VAD removed frames. Features are stored
RAW, so one set of stored features serves any normalisation and Kaldi tools see the same
matrices as ``compute-*-feats`` would write.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import torch

from lre.features import encoders
from lre.features.cmvn import sliding_cmn, utterance_cmvn
from lre.features.config import FeatureConfig
from lre.features.kaldi import extract_with_energy
from lre.features.sdc import shifted_deltas
from lre.features.vad import energy_vad
from lre.utils import LreError


def extract(
    wave: np.ndarray | torch.Tensor, config: FeatureConfig, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Raw features (no CMVN) and the energy-VAD decision of one waveform.

    Args:
        wave: ``(samples,)`` float in [-1, 1] at ``config.sample_rate``.
        config: feature options.
        seed: seeds the dither noise (only used when ``dither > 0``).

    Returns:
        ``(frames, feat_dim)`` float32 and ``(frames,)`` bool (True = voiced). Frame
        ``i`` covers ``[i * frame_shift, i * frame_shift + frame_length)`` seconds.
        For an encoder front end: its states, in windows of at most 30 s from the start.
    """
    if config.is_encoder:
        wave = np.asarray(wave, dtype=np.float32)
        return extract_blocks(lambda a, b: wave[a:b], len(wave), config)
    feats, energy = extract_with_energy(wave, config, seed)
    return feats, energy_vad(energy, config.vad)


def num_frames(config: FeatureConfig, num_samples: int) -> int:
    """Frames :func:`extract` gives for ``num_samples`` samples (0: too short for one)."""
    if config.is_encoder:
        return encoders.num_states(num_samples)
    if num_samples < config.kaldi.window_size:
        return 0
    return config.kaldi.num_frames(num_samples)


def _encoder_blocks(
    read: Callable[[int, int], np.ndarray], num_samples: int, config: FeatureConfig,
    states: bool = True,
) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`extract_blocks` for an encoder: one encoder window per read. Without
    ``states`` only the VAD is computed (no encoder pass) and the states are None."""
    enc = encoders.load_encoder(config.kind, config.encoder) if states else None
    size = config.encoder.window_samples
    feats, energy = [], []
    for start in encoders.window_starts(num_samples, config.encoder):
        wave = read(start, min(start + size, num_samples))
        if enc is not None:
            f, e = encoders.encode_window(enc, wave)
            feats.append(f)
        else:
            e = encoders.state_log_energy(wave)
        energy.append(e)
        if len(wave) < min(size, num_samples - start):
            break  # the recording ends early
    vad = energy_vad(np.concatenate(energy), config.vad) if energy else np.zeros(0, bool)
    if enc is None:
        return None, vad
    if not feats:
        return np.zeros((0, enc.dim), np.float32), vad
    return np.concatenate(feats), vad


def encoder_vad(wave: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """``(frames,)`` bool: the VAD :func:`extract` gives for an encoder front end, without
    running the encoder (the stage's work when the states are computed on read)."""
    wave = np.asarray(wave, dtype=np.float32)
    return _encoder_blocks(lambda a, b: wave[a:b], len(wave), config, states=False)[1]


def extract_blocks(
    read: Callable[[int, int], np.ndarray],
    num_samples: int,
    config: FeatureConfig,
    block_seconds: float = 60.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`extract` of a whole recording that is read block by block.

    Args:
        read: ``read(start, stop)`` gives samples ``[start, stop)`` of the recording at
            ``config.sample_rate`` (called with increasing ranges), or fewer where the
            recording ends before ``stop``.
        num_samples: length of the recording as far as known (e.g. from a file header);
            a read that comes back short shows the real length, and the recording ends there.
        block_seconds: audio per block; only one block is held at a time.

    Returns:
        What :func:`extract` gives on the samples that are there, all at once: every block is
        cut on whole frames of the whole recording's framing, and VAD (whose threshold
        depends on the mean energy) and the shifted deltas run on the joined frames. With
        dither the noise differs from a single call (each block draws its own). An encoder
        front end reads one encoder window (at most 30 s) per block instead.
    """
    if config.is_encoder:
        return _encoder_blocks(read, num_samples, config)
    kaldi = config.kaldi
    total = kaldi.num_frames(num_samples)
    block = max(1, round(block_seconds / config.frame_shift))
    feats, energy = [], []
    first = 0
    while first < total:
        end = min(first + block, total)
        start, stop, skip = kaldi.samples_of_frames(first, end, total, num_samples)
        wave = read(start, stop)
        if len(wave) < stop - start:
            # The recording ends early: frame it again on the length it really has. A block
            # starts where its first frame alone says, so only its end can move.
            num_samples = start + len(wave)
            total = kaldi.num_frames(num_samples)
            end = min(end, total)
            if end <= first:
                break
            start, stop, skip = kaldi.samples_of_frames(first, end, total, num_samples)
            wave = wave[: stop - start]
        f, e = extract_with_energy(wave, config, seed + len(feats), sdc=False)
        if len(f) < skip + end - first or (kaldi.snip_edges and len(f) != skip + end - first):
            raise LreError(f"samples {start}-{stop} gave {len(f) - skip} frames, "
                           f"expected {end - first}")
        feats.append(f[skip:skip + end - first])
        energy.append(e[skip:skip + end - first])
        first = end
    if not feats:
        return np.zeros((0, config.feat_dim), np.float32), np.zeros(0, bool)
    joined = np.concatenate(feats)
    if config.kind == "mfcc_sdc":
        joined = shifted_deltas(joined, config.sdc)
    return joined, energy_vad(np.concatenate(energy), config.vad)


def voiced(vad: np.ndarray) -> np.ndarray:
    """``(frames,)`` bool from a stored VAD decision (``vad.scp`` holds 0/1 floats)."""
    return np.asarray(vad).reshape(-1) > 0.5


def postprocess(
    feats: np.ndarray, vad: np.ndarray | None, config: FeatureConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Features as the model sees them: voiced frames, per-utterance CMVN, sliding CMN.

    Args:
        feats: ``(frames, feat_dim)`` raw features (``feats.scp``).
        vad: ``(frames,)`` voiced flags (``vad.scp``, 0/1 floats or bools), or None to
            keep every frame.
        config: its ``cmvn`` options say what to apply (see :class:`CmvnOptions`).

    Returns:
        ``(frames', feat_dim)`` float32 and ``(frames',)`` int64: for each kept frame,
        its index in the original frame sequence. ``frames' = 0`` when nothing is voiced.
    """
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2:
        raise LreError(f"postprocess: expected (frames, dim) features, got shape {feats.shape}")
    if vad is None:
        index = np.arange(len(feats), dtype=np.int64)
    else:
        keep = voiced(vad)
        if len(keep) != len(feats):
            raise LreError(f"postprocess: VAD has {len(keep)} frames, features have {len(feats)}")
        index = np.flatnonzero(keep).astype(np.int64)
    c = config.cmvn
    x = feats if c.before_vad else feats[index]
    if len(x) and (c.norm_means or c.norm_vars):
        x = utterance_cmvn(x, norm_vars=c.norm_vars)
    if len(x) and c.sliding_cmn:
        x = sliding_cmn(x, c.cmn_window, c.center, c.min_cmn_window, c.sliding_norm_vars)
    if c.before_vad:
        x = x[index]
    return np.ascontiguousarray(x, dtype=np.float32), index


def utterance_seed(utt: str) -> int:
    """Stable per-utterance seed for dither: the same on every run, job split and machine."""
    return zlib.crc32(utt.encode("utf-8"))


