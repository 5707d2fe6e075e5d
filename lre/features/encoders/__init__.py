"""Pretrained speech encoders as a feature front end: audio -> encoder hidden states.

A pretrained encoder (Whisper through faster-whisper/CTranslate2, or a Hugging Face
transformers model: wav2vec2, XLS-R, MMS, HuBERT, WavLM, Whisper) replaces the fbank front
end of stage 1; its states are stored in ``feats.scp`` like any feature matrix, so training,
scoring and identify are unchanged.

Framing: every encoder here gives one state per 20 ms (320 samples at 16 kHz). Audio is
encoded in windows of at most ``window_seconds`` (30 s, what Whisper was trained on) that
start at whole multiples of the window from the start of the recording, so a recording's
states are the same whether it is encoded at once (stage 1) or read window by window
(``lre identify`` on a long file), and never depend on another utterance. State ``j`` of a
recording covers samples ``[320 j, 320 j + 320)``; the energy VAD is computed on the same
20 ms grid so that every state has a voiced/unvoiced flag.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lre.features.kaldi import WAVE_SCALE
from lre.utils import LreError

#: Feature kinds of this front end (``--feature-type`` in the conf file).
ENCODER_KINDS = ("whisper", "transformers")
#: Samples per encoder state at 16 kHz (20 ms): Whisper and wav2vec2-family alike.
STATE_SAMPLES = 320
SAMPLE_RATE = 16000
COMPUTE_TYPES = ("auto", "int8", "int8_float32", "int8_float16", "float16", "float32")
STORAGE = ("float32", "compressed", "none")


@dataclass(frozen=True)
class EncoderOptions:
    """Options of an encoder front end (``features/whisper_base.conf`` style files).

    ``model``: a directory (faster-whisper's layout for ``whisper``, a transformers
    checkpoint for ``transformers``) or a name that ``lre pretrained`` installs
    (``whisper-base``). ``layer``: ``last``, a hidden-state index (0 = the input
    embeddings; for ``whisper`` a layer other than the last runs in torch from the same
    weights, ``encoders/whisper_layers.py``) or several joined by ``,`` or a range ``a-b``,
    whose mean is taken. ``pad_to_window``: pad every window to ``window_seconds`` before
    encoding (as Whisper's decoder expects) instead of encoding only the audio there is.
    ``layer_norm``: normalise each chosen hidden state per state to zero mean and unit
    variance over its values (no learned scale or shift, as S3PRL's featurizer does) before
    the mean: a middle layer's values are not normalised by the encoder itself.
    ``storage``: ``float32`` or Kaldi's ``compressed`` matrices (1 byte per value), or
    ``none``: stage 1 stores only the VAD and the readers encode the audio of ``wav.scp``
    when they read an utterance (for corpora whose states would not fit on disk).
    ``sha256`` and ``dim`` are filled in when the encoder is loaded and recorded in
    ``feats_config.json``: a model dir's features and a later identify use the same weights.
    """

    model: str = "whisper-base"
    layer: str = "last"
    compute_type: str = "int8"
    device: str = "auto"
    threads: int = 0
    pad_to_window: bool = False
    layer_norm: bool = False
    window_seconds: float = 30.0
    storage: str = "compressed"
    sha256: str = ""
    dim: int = 0

    def check(self, kind: str) -> None:
        problems = []
        if kind not in ENCODER_KINDS:
            problems.append(f"feature type '{kind}' is not an encoder ({', '.join(ENCODER_KINDS)})")
        if not self.model:
            problems.append("--model is empty")
        if self.compute_type not in COMPUTE_TYPES:
            problems.append(f"--compute-type={self.compute_type} is not one of "
                            f"{', '.join(COMPUTE_TYPES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"--device={self.device} is not one of auto, cpu, cuda")
        if self.storage not in STORAGE:
            problems.append(f"--storage={self.storage} is not one of {', '.join(STORAGE)}")
        if self.threads < 0:
            problems.append("--threads must be >= 0")
        whole = self.window_seconds * SAMPLE_RATE / STATE_SAMPLES
        if not 0 < self.window_seconds <= 30 or abs(whole - round(whole)) > 1e-6:
            problems.append(f"--window-seconds={self.window_seconds:g} must be in (0, 30] and a "
                            "whole number of 20 ms states")
        try:
            self.layers()
        except LreError as e:
            problems.append(str(e))
        if problems:
            raise LreError(f"{kind} options: " + "; ".join(problems))

    def layers(self) -> tuple[int, ...]:
        """Hidden-state indices to average; ``()`` for the last layer."""
        text = self.layer.strip()
        if text == "last":
            return ()
        try:
            if "-" in text[1:] and "," not in text:
                lo, hi = (int(t) for t in text.split("-", 1))
                if not 0 <= lo <= hi:
                    raise ValueError
                return tuple(range(lo, hi + 1))
            return tuple(int(t) for t in text.split(","))
        except ValueError:
            raise LreError(f"--layer={self.layer}: expected last, an index, a list a,b,c or "
                           "a range a-b") from None

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * SAMPLE_RATE))

    def resolved(self, sha256: str, dim: int) -> EncoderOptions:
        return dataclasses.replace(self, sha256=sha256, dim=dim)


class SpeechEncoder(Protocol):
    """A loaded encoder: one window of audio -> its states."""

    sha256: str
    dim: int

    def states(self, wave: np.ndarray, num_states: int) -> np.ndarray:
        """``(num_states, dim)`` float32 states of ``wave`` ``(samples,)`` at 16 kHz."""
        ...


def num_states(num_samples: int) -> int:
    """Encoder states of ``num_samples`` samples: one per started 20 ms (0 below 10 ms)."""
    if num_samples < STATE_SAMPLES // 2:
        return 0
    return math.ceil(num_samples / STATE_SAMPLES)


def state_log_energy(wave: np.ndarray) -> np.ndarray:
    """``(num_states(len(wave)),)`` Kaldi-style raw log-energy of each 20 ms state: the DC
    offset removed, on the int16 scale of Kaldi's features, so that ``features/vad.conf``
    thresholds mean what they mean for fbank."""
    n = num_states(len(wave))
    if n == 0:
        return np.zeros(0, np.float32)
    padded = np.zeros(n * STATE_SAMPLES, np.float64)
    padded[: len(wave)] = np.asarray(wave, np.float64) * WAVE_SCALE
    frames = padded.reshape(n, STATE_SAMPLES)
    # The last frame may be partly padding: its mean and energy are over its real samples.
    real = np.full(n, STATE_SAMPLES)
    real[-1] = len(wave) - (n - 1) * STATE_SAMPLES
    mean = frames.sum(axis=1) / real
    centred = frames - mean[:, None]
    centred[-1, real[-1]:] = 0.0
    energy = (centred ** 2).sum(axis=1) * (STATE_SAMPLES / real)
    return np.log(np.maximum(energy, np.finfo(np.float32).eps)).astype(np.float32)


_CACHE: dict[tuple, SpeechEncoder] = {}


def load_encoder(kind: str, options: EncoderOptions) -> SpeechEncoder:
    """The encoder of ``options``, loaded once per process (and checked against its
    recorded checksum, when there is one)."""
    # A model loaded before a fork (a loader worker) is not used by the child: the key
    # holds the process id.
    key = (os.getpid(), kind, options.model, options.layer, options.compute_type, options.device,
           options.threads, options.pad_to_window, options.window_seconds, options.layer_norm)
    enc = _CACHE.get(key)
    if enc is None:
        if kind == "whisper" and options.layers():
            # CTranslate2 returns only the last layer: the others run in torch.
            from lre.features.encoders.whisper_layers import WhisperLayersEncoder
            enc = WhisperLayersEncoder(options)
        elif kind == "whisper":
            from lre.features.encoders.whisper import WhisperEncoder
            enc = WhisperEncoder(options)
        else:
            from lre.features.encoders.hf import TransformersEncoder
            enc = TransformersEncoder(options)
        _CACHE[key] = enc
    if options.sha256 and options.sha256 != enc.sha256:
        raise LreError(f"encoder {options.model}: its weights have SHA-256 {enc.sha256[:12]}..., "
                       f"but these features were made with {options.sha256[:12]}...")
    return enc


def resolve(kind: str, options: EncoderOptions) -> EncoderOptions:
    """``options`` with the checksum and state size of the encoder they name filled in.

    The encoder is loaded to find them, then dropped: stage jobs are forked from the process
    that calls this, and a forked copy of a loaded CTranslate2 model is not safe to use.
    """
    enc = load_encoder(kind, options)
    out = options.resolved(enc.sha256, enc.dim)
    _CACHE.clear()
    return out


def mean_of_layers(hidden, layers: tuple[int, ...], layer_norm: bool):
    """The mean of ``hidden[i]`` (torch tensors ``(..., dim)``) over ``layers``, each first
    normalised over its last axis when ``layer_norm`` (``EncoderOptions.layer_norm``)."""
    import torch

    chosen = [hidden[i] for i in layers]
    if layer_norm:
        chosen = [torch.nn.functional.layer_norm(h, h.shape[-1:]) for h in chosen]
    return torch.stack(chosen).mean(0)


def encode_window(enc: SpeechEncoder, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States ``(n, dim)`` and log-energies ``(n,)`` of one window (``n = num_states``)."""
    n = num_states(len(wave))
    if n == 0:
        return np.zeros((0, enc.dim), np.float32), np.zeros(0, np.float32)
    states = enc.states(np.asarray(wave, np.float32), n)
    if states.shape != (n, enc.dim):
        raise LreError(f"the encoder gave {states.shape[0]} states of {states.shape[-1]} values "
                       f"for {len(wave)} samples; expected {n} of {enc.dim}")
    return states, state_log_energy(wave)


def window_starts(num_samples: int, options: EncoderOptions) -> range:
    """First sample of each encoder window of a recording of ``num_samples``."""
    return range(0, max(num_samples, 0), options.window_samples)
