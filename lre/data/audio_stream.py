"""Audio read in blocks: a file of any length at the model's rate, mono, in constant memory.

:class:`AudioStream` reads increasing sample ranges of a file with soundfile and resamples
them so that the samples equal those of resampling the whole file at once;
:class:`ArrayStream` gives the same interface over audio already in memory.

A file's header states its length, but decoders may return fewer samples: MP3 without a
Xing/Info frame has its length estimated from the bit rate, and a truncated file holds less
than its header says. The stream then learns the real end from the first read that comes
back short: ``num_samples`` and ``duration`` shrink to the samples that are there, reads
beyond them return nothing, and ``header_duration`` keeps what the header said.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from lre.data.audio import resample as _resample
from lre.data.audio import to_mono as _to_mono
from lre.utils import LreError, error_cause

#: Shortest audio taken, in seconds.
MIN_SECONDS = 0.1


def _wav_declared_frames(path: str | os.PathLike) -> int | None:
    """Sample frames the ``data`` chunk of a RIFF WAV header declares, or None when the
    header does not say (no ``fmt``/``data`` chunk, or the 0 / 0xFFFFFFFF size of a WAV
    written to a pipe)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            for _ in range(64):  # chunks before "data": fmt, fact, LIST, ...
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                size = int.from_bytes(chunk[4:], "little")
                if chunk[:4] == b"data":
                    if block_align <= 0 or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                body = f.read(size + (size & 1)) if chunk[:4] == b"fmt " else b""
                if chunk[:4] == b"fmt ":
                    block_align = int.from_bytes(body[12:14], "little")
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None
    return None


class NotStreamable(LreError):
    """soundfile cannot open the file (another decoder may still read it whole)."""


class AudioStream:
    """Mono audio at ``sample_rate`` read in increasing ``[start, end)`` sample ranges.

    Only what the current range needs is held in memory (plus a little context for
    the resampler), so a file of any length is read in constant memory. The samples
    equal those of resampling the whole file at once: reads start on whole resampling
    periods (``sr_in / gcd`` input samples) with a period of context on each side.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, name: str | None = None):
        import soundfile as sf

        self.name = name or str(path)
        self.sample_rate = sample_rate
        try:
            self._file = sf.SoundFile(str(path))
        except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError
            raise NotStreamable(f"{self.name}: cannot read audio ({error_cause(e)})") from e
        self.sr_in = int(self._file.samplerate)
        #: Input samples of the file: the header's count until a read finds the real end.
        self.frames_in = int(self._file.frames)
        if self.frames_in <= 0:
            self.close()
            raise LreError(f"{self.name}: audio has no samples")
        self.duration = self.frames_in / self.sr_in
        # libsndfile counts the frames a cut WAV holds; its header says how many it should.
        declared = _wav_declared_frames(path) if str(self._file.format) == "WAV" else None
        self.header_duration = max(self.frames_in, declared or 0) / self.sr_in
        if self.duration < MIN_SECONDS:
            self.close()
            raise LreError(f"{self.name}: too short: {self.duration:.3f} s "
                           f"(minimum {MIN_SECONDS:g} s)")
        #: MPEG audio without a Xing/Info frame states only an estimate of its length.
        self.length_is_estimate = str(self._file.format).upper() == "MP3"
        g = math.gcd(self.sr_in, sample_rate)
        self._p, self._q = self.sr_in // g, sample_rate // g  # input / output period
        self.num_samples = self._output_length(self.frames_in)
        # Resampler context in input samples (torchaudio's sinc kernel half-width).
        width = math.ceil(6 * self._p / (min(self._p, self._q) * 0.99))
        self._pad_periods = 0 if self._p == self._q else math.ceil(width / self._p) + 1
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input sample index of _buf[0]

    def _output_length(self, frames_in: int) -> int:
        """Samples at ``sample_rate`` of ``frames_in`` input samples (as resampling the
        whole file gives)."""
        return frames_in if self._p == self._q else math.ceil(frames_in * self._q / self._p)

    @property
    def ended_early(self) -> bool:
        """Whether the file turned out shorter than its header says."""
        return self.duration < self.header_duration

    def _found_end(self, frames_in: int) -> None:
        """A read came back short: the file ends after ``frames_in`` input samples."""
        self.frames_in = frames_in
        self.num_samples = self._output_length(frames_in)
        self.duration = frames_in / self.sr_in

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _input(self, start: int, end: int) -> np.ndarray:
        """Input samples ``[start, end)`` (mono), reading forward; ``start`` never decreases."""
        if start < self._buf_start:
            raise ValueError("AudioStream reads forward only")
        drop = min(start - self._buf_start, len(self._buf))
        self._buf = self._buf[drop:]
        self._buf_start += drop
        end = min(end, self.frames_in)
        have = self._buf_start + len(self._buf)
        if have < start < end:  # skip what no range needs
            try:
                self._file.seek(start)
            except Exception as e:
                raise LreError(f"{self.name}: cannot seek to sample {start} ({error_cause(e)})"
                               ) from e
            self._buf, self._buf_start, have = np.zeros(0, np.float32), start, start
        if end > have:
            try:
                block = self._file.read(end - have, dtype="float32", always_2d=True)
            except Exception as e:
                raise LreError(f"{self.name}: cannot read audio ({error_cause(e)})") from e
            block = _to_mono(block)
            if not np.isfinite(block).all():
                raise LreError(f"{self.name}: NaN or infinite samples")
            self._buf = np.concatenate([self._buf, block])
            if len(block) < end - have:
                self._found_end(have + len(block))
        return self._buf[max(0, start - self._buf_start) : max(0, end - self._buf_start)]

    def read(self, start: int, end: int) -> np.ndarray:
        """Output samples ``[start, end)`` at ``sample_rate``, float32 ``(end - start,)``, or
        fewer where the file ends first (``num_samples`` then says where it ended)."""
        end = min(end, self.num_samples)
        if start >= end:
            return np.zeros(0, np.float32)
        if self._p == self._q:
            return self._input(start, end)  # a view; the buffer is replaced, never written
        k0 = max(0, start // self._q - self._pad_periods)
        k1 = math.ceil(end / self._q) + self._pad_periods
        x = self._input(k0 * self._p, min(k1 * self._p, self.frames_in))
        end = min(end, self.num_samples)  # the read may have found the end
        if start >= end:
            return np.zeros(0, np.float32)
        y = _resample(x, self.sr_in, self.sample_rate)
        t0 = k0 * self._q
        return np.ascontiguousarray(y[start - t0 : end - t0], dtype=np.float32)


class ArrayStream:
    """The :class:`AudioStream` interface over audio already in memory."""

    def __init__(self, audio: np.ndarray, name: str, duration: float | None = None,
                 sample_rate: int = 16000) -> None:
        self.name = name
        self.audio = audio
        self.sample_rate = sample_rate
        self.num_samples = len(audio)
        self.duration = len(audio) / sample_rate if duration is None else duration
        self.header_duration = self.duration
        self.length_is_estimate = False
        self.ended_early = False  # the samples are all in memory: their count is exact

    def read(self, start: int, end: int) -> np.ndarray:
        return self.audio[start:end]

    def close(self) -> None:
        pass


def array_to_mono(audio: Any, name: str = "<array>") -> np.ndarray:
    """An array of samples ``(samples,)``, ``(samples, channels)`` or ``(channels, samples)``
    (few channels, many samples) -> mono float32 ``(samples,)``."""
    try:
        import torch

        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
    except ImportError:
        pass
    x = np.asarray(audio)
    if x.ndim == 2 and x.shape[0] < x.shape[1] and x.shape[0] <= 16:
        x = x.T  # (channels, samples) as torchaudio gives it
    if x.ndim not in (1, 2) or x.size == 0:
        raise LreError(f"{name}: expected audio of shape (samples,) or (samples, channels), "
                       f"got {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = _to_mono(x)
    if not np.isfinite(x).all():
        raise LreError(f"{name}: NaN or infinite samples")
    return x
