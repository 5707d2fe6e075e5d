"""Kaldi-compatible fbank / MFCC front end (``compute-fbank-feats`` / ``compute-mfcc-feats``).

Extraction follows Kaldi option by option, built from ``torchaudio.compliance.kaldi`` (mel
banks, window definitions) and torch FFTs. Long utterances are processed in blocks of whole
frames: with ``--snip-edges=true`` every frame depends only on its own samples (dither, DC
removal, pre-emphasis and windowing are all per frame), so blocking gives the same numbers as
one call while staying in the cache-friendly size where torch's FFT is fastest. Waveforms come
in as float in [-1, 1] (what :mod:`lre.data.audio` returns) and are scaled to the 16-bit
range, as Kaldi reads WAV files.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torchaudio.compliance.kaldi as ta_kaldi
import torchaudio.functional as ta_functional

from lre.features.sdc import shifted_deltas
from lre.utils import LreError

if TYPE_CHECKING:
    from lre.features.config import FeatureConfig

WINDOW_TYPES = ("povey", "hanning", "hamming", "rectangular", "blackman")
#: Kaldi reads 16-bit WAVs as integers; our audio is float in [-1, 1].
WAVE_SCALE = 32768.0
#: Frames per FFT block: ~5 s, where torch's batched FFT is fastest on one thread.
FFT_BLOCK_FRAMES = 512
_EPS = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class KaldiOptions:
    """Options of Kaldi's ``compute-fbank-feats`` / ``compute-mfcc-feats`` (same names with
    ``_`` for ``-``; times in milliseconds, frequencies in Hz). Defaults are Kaldi's
    fbank defaults; :meth:`FeatureConfig.default` gives the shipped configurations."""

    sample_frequency: float = 16000.0
    frame_length: float = 25.0
    frame_shift: float = 10.0
    dither: float = 1.0
    preemphasis_coefficient: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    blackman_coeff: float = 0.42
    snip_edges: bool = True
    num_mel_bins: int = 23
    low_freq: float = 20.0
    high_freq: float = 0.0
    vtln_low: float = 100.0
    vtln_high: float = -500.0
    vtln_warp: float = 1.0
    use_energy: bool = False
    energy_floor: float = 0.0
    raw_energy: bool = True
    htk_compat: bool = False
    use_log_fbank: bool = True
    use_power: bool = True
    subtract_mean: bool = False
    num_ceps: int = 13
    cepstral_lifter: float = 22.0

    @property
    def window_size(self) -> int:
        """Samples per frame."""
        return int(self.sample_frequency * self.frame_length * 0.001)

    @property
    def window_shift(self) -> int:
        """Samples between frame starts."""
        return int(self.sample_frequency * self.frame_shift * 0.001)

    @property
    def padded_window_size(self) -> int:
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi makes from ``num_samples`` samples."""
        size, shift = self.window_size, self.window_shift
        if self.snip_edges:
            return 0 if num_samples < size else 1 + (num_samples - size) // shift
        return (num_samples + shift // 2) // shift

    @property
    def window_reach(self) -> int:
        """Samples a frame's window starts before ``frame * window_shift`` (0 with
        ``snip_edges``; without it windows are centred and mirrored at the file's ends)."""
        return 0 if self.snip_edges else self.window_size // 2 - self.window_shift // 2

    def samples_of_frames(self, first: int, end: int, total: int, num_samples: int
                          ) -> tuple[int, int, int]:
        """``(start, stop, skip)``: the features of samples ``[start, stop)``, from frame
        ``skip`` on, are frames ``first..end-1`` of all ``total`` frames of a recording of
        ``num_samples`` samples.

        With ``snip_edges`` a frame's window lies inside the recording, so the samples of
        the frames suffice. Without it a block inside the recording starts ``skip`` frames
        early, so that its first wanted frame reads real samples instead of a mirror image,
        and ends where its last frame's window does; frames before ``skip`` and after
        ``end - first`` are dropped.
        """
        hop, win = self.window_shift, self.window_size
        if self.snip_edges:
            return first * hop, (end - 1) * hop + win, 0
        reach = self.window_reach
        skip = min(first, -(-reach // hop))
        stop = num_samples if end == total else min(num_samples, (end - 1) * hop - reach + win)
        return (first - skip) * hop, stop, skip

    def check(self, kind: str) -> None:
        nyquist = 0.5 * self.sample_frequency
        high = self.high_freq if self.high_freq > 0 else self.high_freq + nyquist
        problems = []
        if self.window_size < 2 or self.window_shift < 1:
            problems.append(f"frame length {self.frame_length} ms / shift {self.frame_shift} ms "
                            f"at {self.sample_frequency:g} Hz give no usable frame")
        elif self.padded_window_size % 2:
            problems.append("the (padded) frame length must be an even number of samples; use "
                            "--round-to-power-of-two=true or change --frame-length")
        if self.window_type not in WINDOW_TYPES:
            problems.append(f"--window-type={self.window_type} is not one of "
                            f"{', '.join(WINDOW_TYPES)}")
        if not 0.0 <= self.preemphasis_coefficient <= 1.0:
            problems.append("--preemphasis-coefficient must be in [0, 1]")
        if self.dither < 0:
            problems.append("--dither must be >= 0")
        if self.num_mel_bins <= 3:
            problems.append("--num-mel-bins must be > 3")
        if not (0.0 <= self.low_freq < nyquist and 0.0 < high <= nyquist and self.low_freq < high):
            problems.append(f"bad --low-freq={self.low_freq:g} / --high-freq={self.high_freq:g} "
                            f"for Nyquist {nyquist:g} Hz")
        if kind != "fbank":
            if self.num_ceps > self.num_mel_bins or self.num_ceps < 1:
                problems.append(f"--num-ceps={self.num_ceps} must be in 1..num-mel-bins "
                                f"({self.num_mel_bins})")
            if not self.use_log_fbank or not self.use_power:
                problems.append("MFCCs need --use-log-fbank=true and --use-power=true")
        if problems:
            raise LreError(f"{kind} options: " + "; ".join(problems))


#: Kaldi defaults per tool, which conf files override.
KALDI_DEFAULTS = {
    "fbank": KaldiOptions(),
    "mfcc": KaldiOptions(use_energy=True),
}
KALDI_DEFAULTS["mfcc_sdc"] = KALDI_DEFAULTS["mfcc"]


# ----------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------


class _Frontend:
    """Precomputed pieces of one Kaldi option set: window, mel banks, DCT and lifter."""

    def __init__(self, opts: KaldiOptions, kind: str) -> None:
        self.opts = opts
        self.mfcc = kind != "fbank"
        self.size, self.shift = opts.window_size, opts.window_shift
        self.padded = opts.padded_window_size
        # Float32 values (as Kaldi stores them) held in float64 for the float64 buffer.
        self.window = self._window(opts).to(torch.float32).to(torch.float64)
        self._local = threading.local()
        bins, _ = ta_kaldi.get_mel_banks(
            opts.num_mel_bins, self.padded, opts.sample_frequency, opts.low_freq,
            opts.high_freq, opts.vtln_low, opts.vtln_high, opts.vtln_warp,
        )
        # (padded/2 + 1, bins): Kaldi's banks leave the Nyquist bin out (zero weight).
        bins = torch.nn.functional.pad(bins.to(torch.float32), (0, 1))
        self.mel = bins.t().contiguous()
        if self.mfcc:
            dct = ta_functional.create_dct(opts.num_ceps, opts.num_mel_bins, "ortho")
            dct[:, 0] = math.sqrt(1.0 / opts.num_mel_bins)  # Kaldi's C0 scale
            if opts.cepstral_lifter != 0.0:
                i = torch.arange(opts.num_ceps, dtype=torch.float64)
                lifter = 1.0 + 0.5 * opts.cepstral_lifter * torch.sin(
                    math.pi * i / opts.cepstral_lifter)
                dct = dct * lifter.to(dct.dtype)[None, :]
            self.dct = dct.to(torch.float32).contiguous()
        self.log_energy_floor = (math.log(opts.energy_floor) if opts.energy_floor > 0.0
                                 else None)

    @staticmethod
    def _window(opts: KaldiOptions) -> torch.Tensor:
        # Computed in float64 like Kaldi's FeatureWindowFunction, then stored as float.
        n = opts.window_size
        i = torch.arange(n, dtype=torch.float64)
        a = 2 * math.pi / (n - 1)
        if opts.window_type == "hanning":
            return 0.5 - 0.5 * torch.cos(a * i)
        if opts.window_type == "hamming":
            return 0.54 - 0.46 * torch.cos(a * i)
        if opts.window_type == "povey":
            return (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
        if opts.window_type == "rectangular":
            return torch.ones(n, dtype=torch.float64)
        b = opts.blackman_coeff
        return b - 0.5 * torch.cos(a * i) + (0.5 - b) * torch.cos(2 * a * i)

    @property
    def base_dim(self) -> int:
        o = self.opts
        return o.num_ceps if self.mfcc else o.num_mel_bins + int(o.use_energy)

    def frames_view(self, wave: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(frames, window_size)`` strided view of the (edge-reflected) waveform."""
        o, size, shift = self.opts, self.size, self.shift
        n = wave.numel()
        m = o.num_frames(n)
        if m == 0:
            return wave.new_empty((0, size)), 0
        if not o.snip_edges:
            # Kaldi's reflection at the edges: sample -1 -> 0, -2 -> 1; n -> n-1, n+1 -> n-2.
            pad_left = o.window_reach
            end = (m - 1) * shift + size - pad_left  # one past the last sample read
            pad_right = max(0, end - n)
            if pad_left > n or pad_right > n:
                raise LreError(f"{n} samples are too few for --snip-edges=false framing")
            left = wave[:pad_left].flip(0) if pad_left > 0 else wave[:0]
            body = wave if pad_left >= 0 else wave[-pad_left:]
            right = wave[n - pad_right:].flip(0)
            wave = torch.cat([left, body, right])
        return wave.as_strided((m, size), (shift, 1)), m

    def _workspace(self, rows: int) -> dict[str, torch.Tensor]:
        """Per-thread scratch tensors for blocks of ``rows`` frames, reused across calls:
        fresh multi-megabyte buffers per block would cost more in page faults than the FFT."""
        ws = getattr(self._local, "ws", None)
        if ws is None or ws["frames"].shape[0] < rows:
            bins = self.padded // 2 + 1
            ws = {
                "frames": torch.empty((rows, self.size), dtype=torch.float32),
                "noise": torch.empty((rows, self.size), dtype=torch.float32),
                # Windowed frames, zero-padded to the FFT size (the padding stays zero).
                "window": torch.zeros((rows, self.padded), dtype=torch.float64),
                "spec": torch.empty((rows, bins), dtype=torch.complex128),
                "power64": torch.empty((rows, bins), dtype=torch.float64),
                "power": torch.empty((rows, bins), dtype=torch.float32),
                "mel": torch.empty((rows, self.opts.num_mel_bins), dtype=torch.float32),
            }
            self._local.ws = ws
        return ws

    def compute(
        self, wave: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(frames, base_dim)`` and log-energy ``(frames,)`` of a scaled waveform."""
        o = self.opts
        frames, m = self.frames_view(wave)
        out = torch.empty((m, self.base_dim), dtype=torch.float32)
        energy = torch.empty(m, dtype=torch.float32)
        if m == 0:
            return out, energy
        size, coeff = self.size, o.preemphasis_coefficient
        ws = self._workspace(min(m, FFT_BLOCK_FRAMES))
        n_mel = o.num_mel_bins
        mel_col = 1 if (o.use_energy and not o.htk_compat and not self.mfcc) else 0
        for a in range(0, m, FFT_BLOCK_FRAMES):
            b = min(m, a + FFT_BLOCK_FRAMES)
            r = b - a
            x = frames[a:b]
            if o.dither != 0.0:
                noise = torch.randn((r, size), generator=generator, out=ws["noise"][:r])
                x = torch.add(x, noise, alpha=o.dither, out=ws["frames"][:r])
            if o.remove_dc_offset:
                x = torch.sub(x, x.mean(dim=1, keepdim=True), out=ws["frames"][:r])
            if o.raw_energy:
                torch.log(torch.linalg.vecdot(x, x).clamp_min_(_EPS), out=energy[a:b])
            # Pre-emphasis and window in float32 as Kaldi, written into a float64 buffer:
            # the FFT runs in float64 because in float32 (Kaldi's and knf's too) bins holding
            # less than ~1e-7 of a loud frame's energy come out >1e-3 off in the log.
            w = ws["window"][:r]
            if coeff != 0.0:
                torch.sub(x[:, 1:], x[:, :-1], alpha=coeff, out=w[:, 1:size])
                torch.mul(x[:, 0], 1.0 - coeff, out=w[:, 0])
            else:
                w[:, :size] = x
            w[:, :size] *= self.window
            if not o.raw_energy:
                torch.log(torch.linalg.vecdot(w, w).clamp_min_(_EPS).to(torch.float32),
                          out=energy[a:b])
            spec = torch.fft.rfft(w, out=ws["spec"][:r])
            power64 = torch.mul(spec.real, spec.real, out=ws["power64"][:r])
            power64.addcmul_(spec.imag, spec.imag)  # |X|^2
            power = ws["power"][:r]
            power.copy_(power64)
            if not o.use_power:
                power.sqrt_()
            mel = torch.mm(power, self.mel, out=ws["mel"][:r])
            if o.use_log_fbank:
                mel.clamp_min_(_EPS).log_()
            if self.mfcc:
                torch.mm(mel, self.dct, out=out[a:b])
            else:
                out[a:b, mel_col : mel_col + n_mel] = mel
        if self.log_energy_floor is not None:
            energy.clamp_min_(self.log_energy_floor)
        if self.mfcc:
            if o.use_energy:
                out[:, 0] = energy
            if o.htk_compat:
                c0 = out[:, 0] if o.use_energy else out[:, 0] * math.sqrt(2.0)
                out = torch.cat([out[:, 1:], c0[:, None]], dim=1)
        elif o.use_energy:
            out[:, n_mel if o.htk_compat else 0] = energy
        if o.subtract_mean:
            out -= out.mean(dim=0, keepdim=True)
        return out, energy


@functools.lru_cache(maxsize=16)
def _frontend(opts: KaldiOptions, kind: str) -> _Frontend:
    return _Frontend(opts, "fbank" if kind == "fbank" else "mfcc")


def extract_with_energy(
    wave: np.ndarray | torch.Tensor, config: FeatureConfig, seed: int = 0, sdc: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Raw features and the per-frame log-energy that VAD uses.

    Args:
        wave: ``(samples,)`` float in [-1, 1] at ``config.sample_rate``.
        config: feature options.
        seed: seeds the dither noise (only used when ``dither > 0``).
        sdc: add the shifted deltas of ``mfcc_sdc`` (False: the MFCCs only, for a caller
            that computes them on a longer sequence).

    Returns:
        ``(frames, feat_dim)`` float32 features and ``(frames,)`` float32 log-energy;
        zero frames when the audio is shorter than one frame.
    """
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not torch.is_tensor(wave)
                        else wave, dtype=torch.float32)
    if x.dim() != 1:
        raise LreError(f"extract: expected a mono waveform (samples,), got shape "
                       f"{tuple(x.shape)}")
    x = x * WAVE_SCALE
    generator = None
    if config.kaldi.dither != 0.0:
        generator = torch.Generator().manual_seed(int(seed) & 0xFFFFFFFFFFFF)
    feats, energy = _frontend(config.kaldi, config.kind).compute(x, generator)
    feats_np = feats.numpy()
    if sdc and config.kind == "mfcc_sdc":
        feats_np = shifted_deltas(feats_np, config.sdc)
    return feats_np, energy.numpy()
