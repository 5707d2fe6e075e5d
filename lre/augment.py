"""Data augmentation for training data, Kaldi style: a new data dir with new utterance ids.

``lre augment --in data/train --out data/train_aug --speed 0.9,1.1 --noise white,pink,babble
--snr 5:20 --reverb --telephone`` writes ``data/train_aug`` with the original utterances
(unless ``--no-original``) and, for each source utterance, one copy per perturbation:

========================  ==================================================================
``sp<f>-<utt>``           speed perturbation by factor ``f`` (tempo and pitch, like
                          ``sox speed``): band-limited resampling, duration / ``f``
``noise-<utt>``           additive noise at an SNR drawn uniformly from ``--snr``; the type
                          is drawn per utterance from ``--noise``: ``white``, ``pink``,
                          ``babble`` (3-7 other training utterances summed, from a
                          pool of ``--babble-pool`` of them, 64 by default), ``musan`` (a
                          file from ``--musan DIR``; ``musan-music``, ``musan-noise``,
                          ``musan-speech`` restrict to that MUSAN sub-folder)
``reverb-<utt>``          convolution with a room impulse response: a file from
                          ``--rir-list`` when given, else a generated one (direct path plus
                          an exponentially decaying noise tail with RT60 drawn from
                          ``--rt60``), aligned on the direct path and scaled to the input's
                          level
``tel-<utt>``             telephone channel: 8 kHz, 300-3400 Hz band-pass, a codec drawn
                          per utterance from ``--tel-codecs`` (``mulaw``: 8-bit mu-law,
                          the default; ``gsm``: GSM 06.10; ``opus``: Opus ~20 kbit/s),
                          back to the data rate
========================  ==================================================================

Speakers get the same prefix (``sp0.9-<spk>``), so utterance ids still begin with their
speaker id and the dir sorts consistently. Augmented audio is written as 16-bit WAVs under
``<out>/wav/``; ``utt2uniq`` maps every utterance to its source (Kaldi's convention, to keep
copies of one recording on the same side of a split) and ``utt2aug`` says what was done.
Everything random is drawn from ``--seed``, the perturbation and the utterance id, so the
same seed gives byte-identical audio whatever the order or subset processed. A re-run with
the same options reuses the WAVs already written. ``--nj N`` writes the copies in N worker
processes; the output does not depend on N.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from lre.utils import LreError, atomic_open, atomic_write_text, limit_threads

if TYPE_CHECKING:
    from lre.data.datadir import DataDir, Segment

logger = logging.getLogger(__name__)

NOISE_TYPES = ("white", "pink", "babble", "musan", "musan-music", "musan-noise", "musan-speech")
AUDIO_SUFFIXES = (".wav", ".flac", ".sph", ".ogg")
BABBLE_POOL = 64  # utterances loaded once to build babble from, unless --babble-pool
OPTIONS_FILE = ".augment_options.json"
TEL_CODECS = ("mulaw", "gsm", "opus")
TEL_CODEC_NAMES = {"mulaw": "mu-law-8bit", "gsm": "gsm-06.10", "opus": "opus-20kbps"}
TEL_RATE = 8000
OPUS_COMPRESSION = 0.95  # libsndfile's scale: 0 = highest bit rate, 1 = lowest (~6 kbit/s)


@dataclass(frozen=True)
class AugmentOptions:
    """What :func:`augment_data_dir` makes; every random draw comes from ``seed``."""

    speeds: tuple[float, ...] = ()
    noises: tuple[str, ...] = ()
    snr: tuple[float, float] = (5.0, 20.0)
    babble_pool: int = BABBLE_POOL
    musan: str | None = None
    reverb: bool = False
    rir_list: str | None = None
    rt60: tuple[float, float] = (0.2, 0.8)
    telephone: bool = False
    tel_codecs: tuple[str, ...] = ("mulaw",)
    keep_original: bool = True
    seed: int = 0
    sample_rate: int = 16000

    def check(self) -> None:
        for f in self.speeds:
            if not 0.5 <= f <= 2.0 or f == 1.0:
                raise LreError(f"--speed: factor {f:g} must be in [0.5, 2] and not 1")
        for n in self.noises:
            if n not in NOISE_TYPES:
                raise LreError(f"--noise: unknown type '{n}' (one of {', '.join(NOISE_TYPES)})")
            if n.startswith("musan") and not self.musan:
                raise LreError(f"--noise {n} needs --musan DIR")
        if self.babble_pool < 2:
            raise LreError(f"--babble-pool: need at least 2 utterances, got {self.babble_pool}")
        lo, hi = self.snr
        if not lo <= hi:
            raise LreError(f"--snr: low end {lo:g} is above high end {hi:g}")
        lo, hi = self.rt60
        if not 0.05 <= lo <= hi <= 3.0:
            raise LreError(f"--rt60: need 0.05 <= low <= high <= 3 seconds, got {lo:g}:{hi:g}")
        if self.rir_list and not self.reverb:
            raise LreError("--rir-list needs --reverb")
        _check_codecs(self.tel_codecs)
        if not (self.speeds or self.noises or self.reverb or self.telephone):
            raise LreError("nothing to do: give --speed, --noise, --reverb or --telephone")

    @property
    def kinds(self) -> list[str]:
        """Prefix of each copy, in output order."""
        out = [speed_prefix(f) for f in self.speeds]
        if self.noises:
            out.append("noise")
        if self.reverb:
            out.append("reverb")
        if self.telephone:
            out.append("tel")
        return out


def _check_codecs(codecs: tuple[str, ...]) -> None:
    """Raise ``LreError`` for an unknown codec or one this libsndfile cannot write."""
    if not codecs:
        raise LreError("--tel-codecs: give at least one codec")
    needs = {"gsm": ("WAV", "GSM610"), "opus": ("OGG", "OPUS")}
    for codec in codecs:
        if codec not in TEL_CODECS:
            raise LreError(f"--tel-codecs: unknown codec '{codec}' (one of "
                           f"{', '.join(TEL_CODECS)})")
        if codec in needs and needs[codec][1] not in sf.available_subtypes(needs[codec][0]):
            raise LreError(f"--tel-codecs {codec}: libsndfile {sf.__libsndfile_version__} "
                           f"cannot write {needs[codec][0]} {needs[codec][1]}")


def speed_prefix(factor: float) -> str:
    return f"sp{factor:g}"


@dataclass
class AugmentReport:
    out: Path
    num_sources: int
    num_utts: int
    reused: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.out}: {self.num_utts} utterances from {self.num_sources} sources "
                f"({self.reused} WAVs reused, {len(self.failed)} sources unreadable)")


# ----------------------------------------------------------------------------------------
# Signal operations (all on mono float32 numpy arrays at one sample rate)
# ----------------------------------------------------------------------------------------


def rng_for(seed: int, kind: str, utt: str) -> np.random.Generator:
    """The random stream of one copy of one utterance: independent of processing order."""
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), zlib.crc32(utt.encode())])


def change_speed(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play ``factor`` times faster (pitch moves too), as ``sox speed``: resample the
    signal read at ``sample_rate * factor`` back to ``sample_rate``. Length ~ n / factor."""
    import torch
    import torchaudio.functional as AF

    orig = int(round(sample_rate * factor))
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), orig,
                      sample_rate)
    return out.numpy().astype(np.float32, copy=False)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with a 1/f power spectrum (FFT-shaped white noise)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spec / np.sqrt(f), n)
    return (y / (y.std() + 1e-12)).astype(np.float32)


def fit_length(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` looped (when shorter) and cut at a random offset to exactly ``n`` samples."""
    if len(x) == 0:
        return np.zeros(n, np.float32)
    if len(x) < n:
        x = np.tile(x, int(math.ceil(n / len(x))) + 1)
    start = int(rng.integers(0, len(x) - n + 1))
    return x[start : start + n]


def add_noise(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean + g * noise`` with ``g`` set so that 10 log10(P_clean / P_noise) = snr_db."""
    p_clean, p_noise = power(clean), power(noise)
    if p_clean == 0.0 or p_noise == 0.0:
        return clean.copy()
    gain = math.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))
    return (clean + gain * noise).astype(np.float32)


def generated_rir(rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A room impulse response: direct path at 0, then after a short gap an exponentially
    decaying Gaussian tail whose energy falls 60 dB in ``rt60`` seconds; the
    direct-to-reverberant ratio is drawn from [0, 10] dB."""
    n = max(int(rt60 * sample_rate), int(0.05 * sample_rate))
    gap = int(rng.uniform(0.002, 0.010) * sample_rate)
    t = np.arange(n - gap) / sample_rate
    tail = rng.standard_normal(n - gap) * np.exp(-3.0 * math.log(10.0) * t / rt60)
    drr_db = rng.uniform(0.0, 10.0)
    h = np.zeros(n)
    h[gap:] = tail
    h[0] = math.sqrt(np.sum(tail**2) * 10 ** (drr_db / 10))
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir`` aligned on its direct path (largest tap), same length and
    level (RMS) as the input."""
    from scipy.signal import fftconvolve

    peak = int(np.argmax(np.abs(rir)))
    y = fftconvolve(wave.astype(np.float64), rir.astype(np.float64))[peak : peak + len(wave)]
    p_in, p_out = power(wave), power(y)
    if p_out > 0:
        y *= math.sqrt(p_in / p_out)
    return y.astype(np.float32)


@functools.lru_cache(maxsize=1)
def telephone_band_taps() -> np.ndarray:
    """Linear-phase FIR band-pass at 8 kHz for the telephone band: flat (within 0.1 dB)
    over 400-3300 Hz, at least 50 dB down below 300 Hz and above 3400 Hz. Shape (255,)."""
    from scipy.signal import firwin

    return firwin(255, [350.0, 3350.0], pass_zero=False, window=("kaiser", 5.0),
                  fs=TEL_RATE)


def _telephone_band(x: np.ndarray) -> np.ndarray:
    """``x`` (n,) at 8 kHz through :func:`telephone_band_taps`, centred (no delay)."""
    from scipy.signal import fftconvolve

    return fftconvolve(x.astype(np.float64), telephone_band_taps(), mode="same")


def _codec_round_trip(x: np.ndarray, codec: str) -> np.ndarray:
    """Encode and decode ``x`` (n,) at 8 kHz in [-1, 1] with ``codec``; same length."""
    import io

    if codec == "mulaw":
        import torch
        import torchaudio.functional as AF

        t = torch.from_numpy(np.clip(x, -1.0, 1.0).astype(np.float32))
        return AF.mu_law_decoding(AF.mu_law_encoding(t, 256), 256).numpy()
    buf = io.BytesIO()
    if codec == "gsm":
        sf.write(buf, x, TEL_RATE, format="WAV", subtype="GSM610")
    else:
        sf.write(buf, x, TEL_RATE, format="OGG", subtype="OPUS",
                 compression_level=OPUS_COMPRESSION)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    if y.ndim > 1:
        y = y.mean(axis=1)
    # GSM pads to whole 20 ms frames: cut back to the input's length.
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]


def _resample_poly(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy's Kaiser-windowed filter): a few times faster than a
    sinc resampler of the same sharpness, and the band-pass that follows removes what it
    lets through near 4 kHz."""
    from scipy.signal import resample_poly

    if rate_in == rate_out:
        return x
    g = math.gcd(rate_in, rate_out)
    return resample_poly(x, rate_out // g, rate_in // g)


def telephone(wave: np.ndarray, sample_rate: int, codec: str = "mulaw") -> np.ndarray:
    """Telephone channel: resampled to 8 kHz, 300-3400 Hz band-pass, encoded and decoded
    with ``codec`` (``mulaw``: 8-bit G.711 mu-law; ``gsm``: GSM 06.10 full rate; ``opus``:
    Opus at about 20 kbit/s), band-passed again (the receiving side), back to
    ``sample_rate``. ``wave`` (n,) -> (n,)."""

    if codec not in TEL_CODECS:
        raise LreError(f"--tel-codecs: unknown codec '{codec}' (one of {', '.join(TEL_CODECS)})")
    x = np.ascontiguousarray(wave, np.float64)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak > 0:
        x = x * (0.9 / peak)  # the codecs cover [-1, 1]
    x8 = _resample_poly(x, sample_rate, TEL_RATE)
    x8 = _codec_round_trip(_telephone_band(x8), codec)
    y = _resample_poly(_telephone_band(x8), TEL_RATE, sample_rate).astype(np.float32)
    if peak > 0:
        y *= peak / 0.9
    if len(y) < len(wave):
        y = np.pad(y, (0, len(wave) - len(y)))
    return y[: len(wave)]


def _limit(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Scale down (never clip) audio that would exceed 16-bit full scale; returns the gain."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= 0.99:
        return x, 1.0
    gain = 0.99 / peak
    return x * gain, gain


# ----------------------------------------------------------------------------------------
# Noise and RIR sources
# ----------------------------------------------------------------------------------------


def read_rir_list(path: str | os.PathLike) -> list[str]:
    """Paths of a RIR list: one path per line, or Kaldi's ``--rir-id X --room-id Y PATH``
    lines (the last field is the path); relative paths are taken from the list's folder
    when they do not exist as given."""
    path = Path(path)
    if not path.is_file():
        raise LreError(f"{path}: RIR list not found")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        p = Path(line.split()[-1])
        if not p.is_absolute() and not p.exists():
            p = path.parent / p
        if not p.is_file():
            raise LreError(f"{path}:{lineno}: RIR file not found: {p}")
        out.append(str(p))
    if not out:
        raise LreError(f"{path}: no RIR files listed")
    return out


def musan_files(root: str | os.PathLike, kind: str) -> list[str]:
    """Audio files under a MUSAN-style folder (``music/``, ``noise/``, ``speech/``)."""
    root = Path(root)
    if not root.is_dir():
        raise LreError(f"{root}: --musan folder not found")
    sub = root / kind.split("-", 1)[1] if "-" in kind else root
    files = sorted(str(p) for p in sub.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise LreError(f"{sub}: no audio files ({', '.join(AUDIO_SUFFIXES)}) for --noise {kind}")
    return files


class _Sources:
    """Lazily loaded noise material shared by all utterances."""

    def __init__(self, dd, opts: AugmentOptions, utts: list[str]) -> None:
        self.dd, self.opts = dd, opts
        self.utts = utts
        self._babble: dict[str, np.ndarray] | None = None
        self._files: dict[str, list[str]] = {}
        self._audio: dict[str, np.ndarray] = {}
        self._rirs: list[str] | None = None

    def babble_pool(self) -> dict[str, np.ndarray]:
        if self._babble is None:
            from lre.data.datadir import iter_audio

            rng = np.random.default_rng([self.opts.seed, zlib.crc32(b"babble-pool")])
            pick = sorted(rng.permutation(len(self.utts))[:self.opts.babble_pool].tolist())
            chosen = [self.utts[i] for i in pick]
            self._babble = {}
            for utt, wave in iter_audio(self.dd, self.opts.sample_rate, chosen):
                if not isinstance(wave, Exception) and power(wave) > 0:
                    self._babble[utt] = wave / math.sqrt(power(wave))
            if len(self._babble) < 2:
                raise LreError(f"{self.dd.path}: babble needs at least 2 readable utterances")
        return self._babble

    def babble(self, utt: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        pool = self.babble_pool()
        others = [u for u in pool if u != utt]
        k = min(int(rng.integers(3, 8)), len(others))
        chosen = [others[i] for i in sorted(rng.choice(len(others), size=k, replace=False))]
        mix = np.zeros(n, np.float32)
        for u in chosen:
            mix += fit_length(pool[u], n, rng)
        return mix, "+".join(chosen)

    def file_audio(self, path: str) -> np.ndarray:
        from lre.data.audio import load_audio

        if path not in self._audio:
            if len(self._audio) > 256:
                self._audio.clear()
            self._audio[path] = load_audio(path, self.opts.sample_rate, min_seconds=0.0)
        return self._audio[path]

    def musan(self, kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if kind not in self._files:
            self._files[kind] = musan_files(self.opts.musan, kind)
        files = self._files[kind]
        path = files[int(rng.integers(len(files)))]
        return fit_length(self.file_audio(path), n, rng), Path(path).name

    def rir(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if self.opts.rir_list:
            if self._rirs is None:
                self._rirs = read_rir_list(self.opts.rir_list)
            path = self._rirs[int(rng.integers(len(self._rirs)))]
            return self.file_audio(path), f"rir={Path(path).name}"
        rt60 = float(rng.uniform(*self.opts.rt60))
        return generated_rir(rt60, self.opts.sample_rate, rng), f"rt60={rt60:.3f}"


def perturb(
    kind: str, utt: str, wave: np.ndarray, opts: AugmentOptions, sources: _Sources
) -> tuple[np.ndarray, str]:
    """One augmented copy of ``wave`` and a description of what was done."""
    sr = opts.sample_rate
    rng = rng_for(opts.seed, kind, utt)
    if kind.startswith("sp"):
        factor = float(kind[2:])
        return change_speed(wave, factor, sr), f"speed factor={factor:g}"
    if kind == "noise":
        noise_type = opts.noises[int(rng.integers(len(opts.noises)))]
        snr = float(rng.uniform(*opts.snr))
        n = len(wave)
        if noise_type == "white":
            noise, source = rng.standard_normal(n).astype(np.float32), "-"
        elif noise_type == "pink":
            noise, source = pink_noise(n, rng), "-"
        elif noise_type == "babble":
            noise, source = sources.babble(utt, n, rng)
        else:
            noise, source = sources.musan(noise_type, n, rng)
        return add_noise(wave, noise, snr), f"noise type={noise_type} snr={snr:.2f} src={source}"
    if kind == "reverb":
        rir, what = sources.rir(rng)
        return reverberate(wave, rir), f"reverb {what}"
    if kind == "tel":
        codec = opts.tel_codecs[int(rng.integers(len(opts.tel_codecs)))]
        return (telephone(wave, sr, codec),
                f"telephone band=300-3400 rate=8000 codec={TEL_CODEC_NAMES[codec]}")
    raise LreError(f"unknown augmentation '{kind}'")


# ----------------------------------------------------------------------------------------
# The data dir
# ----------------------------------------------------------------------------------------


@dataclass
class _Copy:
    """One augmented copy written (or found) under ``<out>/wav``."""

    utt: str
    desc: str
    num_samples: int
    reused: bool


# What the parts of one augmentation share, set once per process by _start_worker: the
# noise sources (with the source dir, the options, every source utterance id for babble and
# the material loaded so far) and the folder the WAVs go to.
_worker: tuple[_Sources, Path] | None = None


def _start_worker(src: str, wav_dir: str, opts: AugmentOptions, all_utts: list[str],
                  threads: int | None = 1) -> None:
    from lre.data.datadir import DataDir

    if threads is not None:  # in a worker process: the processes are the parallelism
        limit_threads(threads)
    global _worker
    _worker = (_Sources(DataDir.load(src), opts, all_utts), Path(wav_dir))


def _augment_part(part: list[str], previous: dict[str, str]
                  ) -> list[tuple[str, float, list[_Copy]] | tuple[str, str]]:
    """Write the copies of the source utterances ``part`` (after :func:`_start_worker`).

    Returns per source utterance, in order, ``(utt, seconds, copies)`` or, when it cannot
    be read, ``(utt, error)``. Every random draw depends only on the seed, the kind of copy
    and the utterance id, so how the utterances are split into parts changes no byte.
    """
    from lre.data.datadir import iter_audio

    assert _worker is not None, "_start_worker first"
    sources, wav_dir = _worker
    opts = sources.opts
    results: list[tuple[str, float, list[_Copy]] | tuple[str, str]] = []
    for utt, wave in iter_audio(sources.dd, opts.sample_rate, part):
        if isinstance(wave, Exception):
            results.append((utt, str(wave)))
            continue
        copies = []
        for kind in opts.kinds:
            new = f"{kind}-{utt}"
            path = wav_dir / f"{new}.wav"
            if new in previous and path.is_file():
                copies.append(_Copy(new, previous[new], sf.info(str(path)).frames, True))
                continue
            audio, desc = perturb(kind, utt, wave, opts, sources)
            audio, gain = _limit(audio)
            if gain != 1.0:
                desc += f" gain={gain:.4f}"
            with atomic_open(path, "wb") as f:
                sf.write(f, audio, opts.sample_rate, format="WAV", subtype="PCM_16")
            copies.append(_Copy(new, desc, len(audio), False))
        results.append((utt, len(wave) / opts.sample_rate, copies))
    return results


def _run_parts(src: Path, wav_dir: Path, opts: AugmentOptions, utts: list[str],
               previous: dict[str, str], nj: int, out: Path
               ) -> list[tuple[str, float, list[_Copy]] | tuple[str, str]]:
    """:func:`_augment_part` over all ``utts``, in ``nj`` processes when ``nj`` > 1;
    results in the order of ``utts``."""
    nj = max(1, min(nj, len(utts)))
    # Parts of at most 50 utterances: progress shows, and the processes finish together.
    size = max(1, min(50, math.ceil(len(utts) / nj)))
    parts = [utts[i:i + size] for i in range(0, len(utts), size)]

    # Each part gets the earlier run's descriptions of its own copies ("<kind>-<utt>").
    by_source: dict[str, dict[str, str]] = {}
    for new, desc in previous.items():
        by_source.setdefault(new.partition("-")[2], {})[new] = desc

    def args(part: list[str]) -> tuple[list[str], dict[str, str]]:
        return part, {k: v for utt in part for k, v in by_source.get(utt, {}).items()}

    results: list[tuple[str, float, list[_Copy]] | tuple[str, str]] = []
    step = max(200, len(utts) // 20)  # about 20 progress lines at most
    logged = 0

    def progress(part_results: list) -> None:
        nonlocal logged
        results.extend(part_results)
        if len(results) - logged >= step or len(results) == len(utts):
            logged = len(results)
            logger.info("%s: %d of %d source utterances", out, logged, len(utts))

    start = (str(src), str(wav_dir), opts, utts)
    if nj == 1:
        global _worker
        _start_worker(*start, threads=None)
        try:
            for part in parts:
                progress(_augment_part(*args(part)))
        finally:
            _worker = None  # and with it the noise material
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked copy of a process that has started torch threads can deadlock.
    with ProcessPoolExecutor(nj, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=start) as pool:
        for future in [pool.submit(_augment_part, *args(part)) for part in parts]:
            progress(future.result())
    return results


@dataclass
class _AugmentedTables:
    """The tables of the augmented data dir, filled one source utterance at a time."""

    wav_scp: dict[str, str] = field(default_factory=dict)
    utt2lang: dict[str, str] = field(default_factory=dict)
    utt2spk: dict[str, str] = field(default_factory=dict)
    utt2dur: dict[str, float] = field(default_factory=dict)
    utt2uniq: dict[str, str] = field(default_factory=dict)
    utt2aug: dict[str, str] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)

    def add_original(self, dd: DataDir, utt: str, seconds: float) -> None:
        """The source utterance itself, pointing at its own audio."""
        spec, _, _ = dd.audio_spec(utt)
        if dd.segments is not None:
            seg = dd.segments[utt]
            self.segments[utt] = seg
            self.wav_scp[seg.reco] = dd.wav_scp[seg.reco]
        else:
            self.wav_scp[utt] = spec
        self.utt2lang[utt], self.utt2spk[utt] = dd.utt2lang[utt], dd.utt2spk[utt]
        self.utt2uniq[utt] = utt
        self.utt2dur[utt] = seconds
        self.utt2aug[utt] = "original"

    def add_copy(
        self, dd: DataDir, utt: str, copy: _Copy, wav_dir: Path, opts: AugmentOptions
    ) -> None:
        """One augmented copy of ``utt``; its speaker is the source's, prefixed by the kind."""
        from lre.data.datadir import Segment

        new, kind = copy.utt, copy.utt[: -len(utt) - 1]
        seconds = copy.num_samples / opts.sample_rate
        if dd.segments is not None and opts.keep_original:
            if new in dd.wav_scp:
                raise LreError(f"{dd.path}: recording id '{new}' clashes with a new utterance id")
            self.segments[new] = Segment(new, 0.0, seconds)
        self.wav_scp[new] = str(wav_dir / f"{new}.wav")
        self.utt2lang[new] = dd.utt2lang[utt]
        self.utt2spk[new] = f"{kind}-{dd.utt2spk[utt]}"
        self.utt2dur[new] = seconds
        self.utt2uniq[new] = utt
        self.utt2aug[new] = copy.desc


def _previous_descriptions(out: Path, options_json: str) -> dict[str, str]:
    """``utt2aug`` of an earlier run with the same options (its WAVs are reused), else {}."""
    from lre.data.tables import read_table

    options = out / OPTIONS_FILE
    if options.is_file() and options.read_text() == options_json and (out / "utt2aug").is_file():
        return read_table(out / "utt2aug")
    return {}


def _write_augmented(src: Path, out: Path, tables: _AugmentedTables,
                     report: AugmentReport) -> None:
    """Write the data dir ``out`` with ``utt2uniq``/``utt2aug``/``augment_failed``; validate."""
    from lre.data.datadir import DataDir, validate
    from lre.data.tables import write_table

    DataDir(out, wav_scp=tables.wav_scp, utt2lang=tables.utt2lang, utt2spk=tables.utt2spk,
            segments=tables.segments if tables.segments else None,
            utt2dur={u: round(d, 4) for u, d in tables.utt2dur.items()}).write()
    write_table(out / "utt2uniq", tables.utt2uniq)
    write_table(out / "utt2aug", tables.utt2aug)
    failed_path = out / "augment_failed"
    if report.failed:
        write_table(failed_path, {u: m.removeprefix(f"{u}: ") for u, m in report.failed.items()})
        logger.warning("%s: %d unreadable source utterance(s) skipped, listed in %s",
                       src, len(report.failed), failed_path)
    else:
        failed_path.unlink(missing_ok=True)
    for stale in ("feats.scp", "vad.scp", "utt2num_frames", "feats_failed", "feats_config.json"):
        (out / stale).unlink(missing_ok=True)
    problems = validate(out, check_audio=False)
    if problems:
        raise LreError(f"{out}: augmented data dir does not validate: {problems[0]}"
                       + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def augment_data_dir(
    src: str | os.PathLike, out: str | os.PathLike, opts: AugmentOptions, nj: int = 1
) -> AugmentReport:
    """Write the augmented data dir ``out`` from ``src`` (see the module docstring), with
    ``nj`` worker processes (the output does not depend on ``nj``).

    Unreadable source utterances are skipped (listed in ``out/augment_failed``); the
    result is validated before returning.
    """
    from lre.data.datadir import DataDir

    opts.check()
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise LreError(f"{out}: the output dir must differ from the input dir")
    if nj < 1:
        raise LreError(f"--nj must be at least 1, got {nj}")
    dd = DataDir.load(src)
    utts = dd.utts
    if not utts:
        raise LreError(f"{src}: no utterances")
    wav_dir = (out / "wav").absolute()
    wav_dir.mkdir(parents=True, exist_ok=True)
    options_json = json.dumps(dataclasses.asdict(opts), sort_keys=True)
    previous = _previous_descriptions(out, options_json)
    atomic_write_text(out / OPTIONS_FILE, "")  # invalid until this run completes
    report = AugmentReport(out=out, num_sources=len(utts), num_utts=0)

    tables = _AugmentedTables()
    for result in _run_parts(src, wav_dir, opts, utts, previous, nj, out):
        utt = result[0]
        if len(result) == 2:
            report.failed[utt] = result[1]
            continue
        _, seconds, copies = result
        if opts.keep_original:
            tables.add_original(dd, utt, seconds)
        for copy in copies:
            report.reused += copy.reused
            tables.add_copy(dd, utt, copy, wav_dir, opts)
    if not tables.utt2lang:
        raise LreError(f"{src}: no readable utterance to augment")
    _write_augmented(src, out, tables, report)
    atomic_write_text(out / OPTIONS_FILE, options_json)
    report.num_utts = len(tables.utt2lang)
    logger.info("%s", report.summary())
    return report


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def _range(text: str, what: str) -> tuple[float, float]:
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise LreError(f"{what}: expected LOW:HIGH (or one number), got '{text}'") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise LreError(f"{what}: expected LOW:HIGH, got '{text}'")
    return parts[0], parts[1]


def _list(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def cli_augment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="src", required=True, help="source data dir (data/train)")
    parser.add_argument("--out", required=True, help="output data dir (data/train_aug)")
    parser.add_argument("--speed", default=None, help="speed factors, e.g. 0.9,1.1")
    parser.add_argument("--noise", default=None,
                        help=f"noise types drawn per utterance: {','.join(NOISE_TYPES)}")
    parser.add_argument("--snr", default="5:20", help="SNR range in dB, LOW:HIGH (default 5:20)")
    parser.add_argument("--babble-pool", type=int, default=BABBLE_POOL,
                        help=f"source utterances babble is drawn from (default {BABBLE_POOL}; "
                             "they are held in memory)")
    parser.add_argument("--musan", default=None,
                        help="MUSAN folder (music/, noise/, speech/); adds noise type musan")
    parser.add_argument("--reverb", action="store_true", help="add a reverberated copy")
    parser.add_argument("--rir-list", default=None,
                        help="RIR files (one path per line, or Kaldi rir_list lines); "
                             "default: generated RIRs")
    parser.add_argument("--rt60", default="0.2:0.8",
                        help="RT60 range in seconds of generated RIRs (default 0.2:0.8)")
    parser.add_argument("--telephone", action="store_true", help="add a telephone-band copy")
    parser.add_argument("--tel-codecs", default="mulaw",
                        help=f"codecs of the telephone copy, one drawn per utterance: "
                             f"{','.join(TEL_CODECS)} (default mulaw)")
    parser.add_argument("--no-original", action="store_true",
                        help="leave the original utterances out of the output")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=1,
                        help="worker processes (default 1); the output does not depend on it")


def cli_augment(args: argparse.Namespace) -> int:
    try:
        speeds = tuple(float(f) for f in _list(args.speed))
    except ValueError:
        raise LreError(f"--speed: expected numbers like 0.9,1.1, got '{args.speed}'") from None
    noises = _list(args.noise)
    if args.musan and not any(n.startswith("musan") for n in noises):
        noises.append("musan")
    opts = AugmentOptions(
        speeds=speeds, noises=tuple(noises), snr=_range(args.snr, "--snr"),
        babble_pool=args.babble_pool,
        musan=args.musan, reverb=args.reverb or bool(args.rir_list), rir_list=args.rir_list,
        rt60=_range(args.rt60, "--rt60"), telephone=args.telephone,
        tel_codecs=tuple(_list(args.tel_codecs)),
        keep_original=not args.no_original, seed=args.seed, sample_rate=args.sample_rate,
    )
    augment_data_dir(args.src, args.out, opts, nj=args.nj)  # logs its report's summary
    return 0


__all__ = [
    "AugmentOptions",
    "AugmentReport",
    "add_noise",
    "augment_data_dir",
    "change_speed",
    "generated_rir",
    "pink_noise",
    "read_rir_list",
    "reverberate",
    "telephone",
    "telephone_band_taps",
]
