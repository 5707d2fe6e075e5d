"""Shared fixtures: real audio made on the spot (espeak-ng speech, tones with silence)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _resample_linear(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    n_out = int(round(len(x) * sr_out / sr_in))
    return np.interp(np.arange(n_out) * sr_in / sr_out, np.arange(len(x)), x).astype(np.float32)


@pytest.fixture
def espeak_wav() -> Callable[..., Path]:
    """Factory: ``make(lang, text, path, voice_variant=None, rate=None, sample_rate=16000)``.

    Speaks ``text`` with espeak-ng's ``lang`` voice into a 16-bit WAV at ``sample_rate``.
    """
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (tools/setup.sh installs it)")

    def make(
        lang: str,
        text: str,
        path: str | Path,
        voice_variant: str | None = None,
        rate: int | None = None,
        sample_rate: int = 16000,
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        voice = lang if voice_variant is None else f"{lang}+{voice_variant}"
        cmd = ["espeak-ng", "-v", voice, "-w", str(path)]
        if rate is not None:
            cmd += ["-s", str(rate)]
        subprocess.run([*cmd, text], check=True, capture_output=True)
        if sample_rate != 22050:
            audio, sr = sf.read(path, dtype="float32")
            sf.write(path, _resample_linear(audio, sr, sample_rate), sample_rate, subtype="PCM_16")
        return path

    return make


@pytest.fixture
def tone_wav() -> Callable[..., Path]:
    """Factory: ``make(path, seconds, freq=440, sr=16000, silence_before=0, silence_after=0)``.

    A sine tone at amplitude 0.5 framed by exact digital silence (in seconds).
    """

    def make(
        path: str | Path,
        seconds: float,
        freq: float = 440.0,
        sr: int = 16000,
        silence_before: float = 0.0,
        silence_after: float = 0.0,
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(round(seconds * sr))) / sr
        tone = 0.5 * np.sin(2 * np.pi * freq * t)
        audio = np.concatenate(
            [
                np.zeros(int(round(silence_before * sr))),
                tone,
                np.zeros(int(round(silence_after * sr))),
            ]
        ).astype(np.float32)
        sf.write(path, audio, sr, subtype="FLOAT")
        return path

    return make
