"""Audio decoding: any format soundfile reads, any rate and channel count in, mono float32
at the requested rate out.

A ``wav.scp`` value is a path, a ``cmd args |`` pipe whose stdout is audio, or a Kaldi
``archive.ark:offset`` holding a WAV. Segments (``start``/``end`` seconds) read only the
frames they need when the source is a seekable file. Every failure is an ``AudioError``
with one line ``<utterance>: <cause>``. Reading the audio of a data dir's utterances
(``load_utterance``, ``iter_audio``) is part of ``lre.data.datadir``.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from lre.data.tables import parse_ark_offset
from lre.utils import LreError

logger = logging.getLogger(__name__)

# Kaldi's extract-segments accepts a segment end this far past the end of the audio
# (and clips it); further than that is an error.
MAX_OVERSHOOT = 0.5

class AudioError(LreError):
    """Audio that cannot be used, with a one-line message ``<name>: <cause>``."""


def is_pipe(spec: str) -> bool:
    """Whether a wav.scp value is a command whose stdout is the audio (``cmd args |``)."""
    return spec.rstrip().endswith("|")


def _short_cause(err: Exception) -> str:
    """libsndfile's message, shortened to a cause a person recognises."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    # soundfile prefixes "Error opening '<path>': " -- the path is already in the message.
    text = re.sub(r"^Error opening .*?: ", "", text).strip().rstrip(".")
    low = text.lower()
    if "format not recognised" in low or "unknown format" in low:
        return f"not a recognised audio format ({text})"
    if "no 'data' chunk" in low or "truncat" in low or "unexpected end" in low:
        return f"truncated or damaged header ({text})"
    return f"cannot decode audio ({text})"


def run_pipe(spec: str, name: str) -> bytes:
    """Run the command of a ``cmd args |`` spec and return its stdout (the audio bytes)."""
    cmd = spec.rstrip()[:-1].strip()
    if not cmd:
        raise AudioError(f"{name}: empty pipe command in {spec!r}")
    try:
        proc = subprocess.run(cmd, shell=True, capture_output=True, check=False)
    except OSError as e:
        raise AudioError(f"{name}: cannot run pipe command '{cmd}': {e}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = f": {err[-1].strip()}" if err else ""
        raise AudioError(
            f"{name}: pipe command failed with exit code {proc.returncode}: '{cmd}'{detail}"
        )
    if not proc.stdout:
        raise AudioError(f"{name}: pipe command produced no audio: '{cmd}'")
    return proc.stdout


def _open(spec: str, name: str) -> sf.SoundFile:
    """Open a path or pipe spec as a SoundFile (pipes are decoded from memory)."""
    if is_pipe(spec):
        data = run_pipe(spec, name)
        try:
            return sf.SoundFile(io.BytesIO(data))
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise AudioError(f"{name}: pipe output: {_short_cause(e)}") from None
    path = Path(spec)
    if not path.exists():
        ark = parse_ark_offset(spec)
        if ark is not None and Path(ark.ark).is_file():
            return _open_ark(spec, name)
        raise AudioError(f"{name}: audio file not found: {spec}")
    if path.is_dir():
        raise AudioError(f"{name}: is a directory, not an audio file: {spec}")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: empty file: {spec}")
    try:
        return sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{name}: {_short_cause(e)}: {spec}") from None


def _open_ark(spec: str, name: str) -> sf.SoundFile:
    """A WAV stored in a Kaldi archive (``foo.ark:1234``), via kaldiio."""
    import kaldiio

    try:
        rate, data = kaldiio.load_mat(spec)
    except Exception as e:  # kaldiio raises assorted errors for damaged archives
        raise AudioError(f"{name}: cannot read WAV from archive {spec}: {e}") from None
    if not isinstance(rate, int):
        raise AudioError(f"{name}: archive entry is not a WAV (a matrix?): {spec}")
    buf = io.BytesIO()
    sf.write(buf, np.asarray(data), rate, format="WAV", subtype="PCM_16")
    buf.seek(0)
    return sf.SoundFile(buf)


def _read_frames(f: sf.SoundFile, start: float, end: float | None, name: str) -> np.ndarray:
    """Frames ``[start, end)`` seconds of an open file, shape (frames, channels) float32."""
    sr, total = f.samplerate, f.frames
    first = int(round(start * sr))
    if start < 0:
        raise AudioError(f"{name}: segment start {start:g} s is negative")
    duration = total / sr
    if end is not None and end <= start:
        raise AudioError(f"{name}: segment end {end:g} s is not after its start {start:g} s")
    if first >= total:
        raise AudioError(
            f"{name}: segment start {start:g} s is at or beyond the end of the audio "
            f"({duration:.3f} s)"
        )
    if end is None:
        last = total
    else:
        if end > duration + MAX_OVERSHOOT:
            raise AudioError(
                f"{name}: segment end {end:g} s is beyond the end of the audio ({duration:.3f} s)"
            )
        last = min(total, int(round(end * sr)))
    try:
        if f.seekable():
            f.seek(first)
            data = f.read(last - first, dtype="float32", always_2d=True)
        else:
            data = f.read(dtype="float32", always_2d=True)[first:last]
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{name}: {_short_cause(e)}") from None
    return data


def to_mono(data: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) by averaging the channels."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    return data.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a mono (samples,) float32 signal with torchaudio's band-limited resampler."""
    if orig_rate == new_rate:
        return wave
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig_rate, new_rate)
    return out.numpy().astype(np.float32, copy=False)


def load_audio(
    spec: str,
    sample_rate: int = 16000,
    start: float = 0.0,
    end: float | None = None,
    name: str | None = None,
    min_seconds: float = 0.1,
) -> np.ndarray:
    """Load ``spec`` (path, ``cmd |`` pipe or ``ark:offset``) as mono float32 at ``sample_rate``.

    ``start``/``end`` select a segment in seconds (``end`` None or negative: to the end).
    Returns shape (samples,). Raises ``AudioError("<name>: <cause>")`` for a missing,
    empty, truncated or non-audio file, a failing pipe, NaN/inf samples, or audio shorter
    than ``min_seconds``.
    """
    name = spec if name is None else name
    if end is not None and end < 0:
        end = None
    with _open(spec, name) as f:
        rate = f.samplerate
        if f.frames <= 0 and f.seekable():
            raise AudioError(f"{name}: audio has no samples")
        data = _read_frames(f, start, end, name)
    return _finish(data, rate, sample_rate, name, min_seconds)


def _finish(
    data: np.ndarray, rate: int, sample_rate: int, name: str, min_seconds: float
) -> np.ndarray:
    """Checks shared by every source, then mono and resampling."""
    if data.shape[0] == 0:
        raise AudioError(f"{name}: audio has no samples")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise AudioError(f"{name}: contains {bad} NaN or infinite sample(s)")
    seconds = data.shape[0] / rate
    if seconds < min_seconds:
        raise AudioError(f"{name}: too short: {seconds:.3f} s (minimum {min_seconds:g} s)")
    return resample(to_mono(data), rate, sample_rate)


def read_recording(spec: str, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode all of ``spec`` once: ``(samples (frames, channels) float32, sample rate)``.

    For callers that cut several segments out of one recording (a pipe runs once).
    """
    name = spec if name is None else name
    with _open(spec, name) as f:
        return f.read(dtype="float32", always_2d=True), f.samplerate


def recording_segment(
    data: np.ndarray,
    rate: int,
    start: float = 0.0,
    end: float | None = None,
    sample_rate: int = 16000,
    name: str = "audio",
    min_seconds: float = 0.1,
) -> np.ndarray:
    """Segment ``[start, end)`` seconds of a decoded (frames, channels) recording.

    Returns mono float32 (samples,) at ``sample_rate``, with the same checks and errors
    as ``load_audio``.
    """
    if end is not None and end < 0:
        end = None
    cut, rate = _slice(data, rate, start, end, name)
    return _finish(cut, rate, sample_rate, name, min_seconds)


def _slice(
    data: np.ndarray, rate: int, start: float, end: float | None, name: str
) -> tuple[np.ndarray, int]:
    """Segment ``[start, end)`` seconds of an already decoded (frames, channels) array."""
    f = _ArrayFile(data, rate)
    return _read_frames(f, start, end, name), rate


class _ArrayFile:
    """The few SoundFile members ``_read_frames`` uses, over a decoded array."""

    def __init__(self, data: np.ndarray, rate: int) -> None:
        self._data, self.samplerate, self.frames = data, rate, data.shape[0]
        self._pos = 0

    def seekable(self) -> bool:
        return True

    def seek(self, frame: int) -> None:
        self._pos = frame

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True):
        stop = self.frames if frames < 0 else self._pos + frames
        return self._data[self._pos : stop]


def duration_seconds(spec: str, name: str | None = None) -> float:
    """Duration of a path or pipe in seconds (header only for seekable files)."""
    name = spec if name is None else name
    with _open(spec, name) as f:
        if f.seekable() and f.frames > 0:
            return f.frames / f.samplerate
        return f.read(dtype="float32", always_2d=True).shape[0] / f.samplerate


__all__ = [
    "AudioError",
    "duration_seconds",
    "is_pipe",
    "load_audio",
    "read_recording",
    "recording_segment",
    "resample",
    "run_pipe",
    "to_mono",
]
