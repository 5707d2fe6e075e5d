"""Kaldi-compatible features: fbank / MFCC / MFCC+SDC, energy VAD, CMVN, and the feature stage.

Extraction follows Kaldi's ``compute-fbank-feats`` / ``compute-mfcc-feats`` option by
option, built from ``torchaudio.compliance.kaldi`` (mel banks, window definitions) and
torch FFTs. Long utterances are processed in chunks of whole frames: with
``--snip-edges=true`` every frame depends only on its own samples (dither, DC removal,
pre-emphasis and windowing are all per frame), so chunking gives the same numbers as one
call while staying in the cache-friendly size where torch's FFT is fastest. Waveforms come
in as float in [-1, 1] (what :mod:`lre.data.audio` returns) and are scaled to the 16-bit
range, as Kaldi reads WAV files.

Features are stored RAW (no CMVN). :func:`postprocess` applies VAD selection, per-utterance
CMVN and sliding CMN when features are read, so one set of stored features serves any
normalisation and Kaldi tools see the same matrices as ``compute-*-feats`` would write.

The stage (:func:`compute_features`, ``lre features``, ``features/make_feats.sh``) splits a
data dir into ``--nj`` parts, runs one job per part through ``--cmd`` (see
:mod:`lre.parallel`), and merges the per-job ark/scp files into ``feats.scp``, ``vad.scp``,
``utt2num_frames``, ``feats_config.json`` and ``feats_failed``. Every job commits its
outputs atomically; a re-run redoes only the jobs that did not finish.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kaldiio
import numpy as np
import torch
import torchaudio.compliance.kaldi as ta_kaldi
import torchaudio.functional as ta_functional

from lre.cmvn import KALDI_CMVN_DEFAULTS, CmvnOptions, sliding_cmn, utterance_cmvn
from lre.sdc import SdcOptions, shifted_deltas
from lre.utils import LreError, atomic_write_text
from lre.vad import KALDI_VAD_DEFAULTS, VadOptions, energy_vad

logger = logging.getLogger(__name__)

FEATURE_KINDS = ("fbank", "mfcc", "mfcc_sdc")
WINDOW_TYPES = ("povey", "hanning", "hamming", "rectangular", "blackman")
CONFIG_FORMAT = "lre-features-1"
#: Kaldi reads 16-bit WAVs as integers; our audio is float in [-1, 1].
WAVE_SCALE = 32768.0
#: Frames per chunk: ~5 s, where torch's batched FFT is fastest on one thread.
CHUNK_FRAMES = 512
_EPS = float(torch.finfo(torch.float32).eps)
#: Files the stage writes into the data dir.
STAGE_OUTPUTS = ("feats.scp", "vad.scp", "utt2num_frames", "feats_failed", "feats_config.json")


# ----------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------


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

# Kaldi options that do not change the features computed here: accepted and ignored.
_IGNORED_OPTIONS = {
    "allow-downsample", "allow-upsample", "max-feature-vectors", "output-format",
    "verbose", "write-utt2dur", "write-utt2num-frames", "compress", "compression-method",
}
# Kaldi options that would change the features but are not supported here.
_UNSUPPORTED_OPTIONS = {
    "channel": "audio is mixed down to mono when loaded",
    "min-duration": "utterances shorter than one frame are skipped instead",
    "utt2spk": "per-speaker VTLN is not supported",
    "vtln-map": "per-speaker VTLN is not supported",
    "debug-mel": "debug output is not supported",
    "energy-floor-log": "not a Kaldi option",
}


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that defines the features: type, Kaldi options, SDC, VAD and CMVN.

    ``kind``: ``"fbank"``, ``"mfcc"`` or ``"mfcc_sdc"``. ``FeatureConfig()`` is the shipped
    default, identical to ``features/fbank.conf`` + ``vad.conf`` + ``cmvn.conf``.
    """

    kind: str = "fbank"
    kaldi: KaldiOptions = KaldiOptions(num_mel_bins=40, dither=0.0)
    sdc: SdcOptions = SdcOptions()
    vad: VadOptions = VadOptions()
    cmvn: CmvnOptions = CmvnOptions()

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise LreError(f"feature type '{self.kind}' is not one of {', '.join(FEATURE_KINDS)}")
        self.kaldi.check(self.kind)
        self.sdc.check()
        self.vad.check()
        self.cmvn.check()

    # -- derived -----------------------------------------------------------------------

    @property
    def feat_dim(self) -> int:
        """Columns of the stored feature matrix."""
        k = self.kaldi
        if self.kind == "fbank":
            return k.num_mel_bins + int(k.use_energy)
        if self.kind == "mfcc":
            return k.num_ceps
        return k.num_ceps * (self.sdc.num_blocks + 1)

    @property
    def frame_shift(self) -> float:
        """Seconds between frame starts (frame ``i`` starts at ``i * frame_shift``)."""
        return self.kaldi.window_shift / self.kaldi.sample_frequency

    @property
    def frame_length(self) -> float:
        """Seconds per frame."""
        return self.kaldi.window_size / self.kaldi.sample_frequency

    @property
    def sample_rate(self) -> int:
        return int(round(self.kaldi.sample_frequency))

    # -- construction ------------------------------------------------------------------

    @classmethod
    def default(cls, kind: str = "fbank") -> FeatureConfig:
        """The shipped configuration of a feature type (``features/<type>.conf``).

        ``fbank``: 40 log-mel bins; ``fbank80``: 80; ``mfcc``: Kaldi's 13 MFCCs with
        energy; ``mfcc_sdc``: 7 MFCCs + SDC 7-1-3-7 (56 dims). All without dither.
        """
        if kind == "fbank80":
            return cls(kind="fbank", kaldi=KaldiOptions(num_mel_bins=80, dither=0.0))
        if kind == "fbank":
            return cls()
        if kind == "mfcc":
            return cls(kind="mfcc", kaldi=KaldiOptions(use_energy=True, dither=0.0))
        if kind == "mfcc_sdc":
            return cls(kind="mfcc_sdc", kaldi=KaldiOptions(use_energy=True, dither=0.0,
                                                           num_ceps=7))
        raise LreError(f"unknown feature type '{kind}' (fbank, fbank80, mfcc, mfcc_sdc)")

    @classmethod
    def from_files(
        cls,
        feat_conf: str | os.PathLike,
        vad_conf: str | os.PathLike | None = None,
        cmvn_conf: str | os.PathLike | None = None,
        sdc_conf: str | os.PathLike | None = None,
        kind: str | None = None,
    ) -> FeatureConfig:
        """Read Kaldi ``--option=value`` conf files.

        The feature type is ``kind``, else a ``--feature-type=`` line in ``feat_conf``,
        else ``mfcc_sdc`` when ``sdc_conf`` is given, else the file name (``fbank*``,
        ``mfcc*``, ``sdc*``). Options a file leaves out keep Kaldi's defaults for that
        tool; a missing ``vad_conf``/``cmvn_conf`` gives the shipped defaults
        (``features/vad.conf``, ``features/cmvn.conf``). ``sdc_conf`` holds
        ``add-deltas-sdc`` options (``--window``, ``--block-shift``, ``--num-blocks``) and
        may set ``--num-ceps`` (the N of N-d-P-k).
        """
        opts = read_conf(feat_conf)
        explicit = [o for o in opts if o.name == "feature-type"]
        opts = [o for o in opts if o.name != "feature-type"]
        if kind is None and explicit:
            kind = explicit[-1].value
        sdc_opts = read_conf(sdc_conf) if sdc_conf is not None else []
        if kind is None:
            kind = "mfcc_sdc" if sdc_conf is not None else _kind_from_name(Path(feat_conf))
        if kind == "fbank80":
            kind = "fbank"
        if kind not in FEATURE_KINDS:
            raise LreError(f"{feat_conf}: feature type '{kind}' is not one of "
                           f"{', '.join(FEATURE_KINDS)}")
        if sdc_conf is not None and kind != "mfcc_sdc":
            raise LreError(f"{sdc_conf}: SDC needs MFCCs, but {feat_conf} gives {kind}")
        ceps = [o for o in sdc_opts if o.name == "num-ceps"]
        kaldi = _apply(KALDI_DEFAULTS[kind], opts + ceps, "compute-*-feats")
        sdc = _apply(SdcOptions(), [o for o in sdc_opts if o.name != "num-ceps"],
                     "add-deltas-sdc")
        vad = (_apply(KALDI_VAD_DEFAULTS, read_conf(vad_conf), "compute-vad")
               if vad_conf is not None else VadOptions())
        cmvn = (_apply(KALDI_CMVN_DEFAULTS, read_conf(cmvn_conf), "cmvn")
                if cmvn_conf is not None else CmvnOptions())
        return cls(kind=kind, kaldi=kaldi, sdc=sdc, vad=vad, cmvn=cmvn)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``feats_config.json``); derived sizes are included for readers."""
        return {
            "format": CONFIG_FORMAT,
            "kind": self.kind,
            "feat_dim": self.feat_dim,
            "sample_rate": self.sample_rate,
            "frame_shift": self.frame_shift,
            "frame_length": self.frame_length,
            "kaldi": dataclasses.asdict(self.kaldi),
            "sdc": dataclasses.asdict(self.sdc),
            "vad": dataclasses.asdict(self.vad),
            "cmvn": dataclasses.asdict(self.cmvn),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_dict`; raises ``LreError`` on unknown or inconsistent keys."""
        if not isinstance(d, dict):
            raise LreError(f"feature config must be a JSON object, got {type(d).__name__}")
        if d.get("format", CONFIG_FORMAT) != CONFIG_FORMAT:
            raise LreError(f"feature config has format {d.get('format')!r}, "
                           f"expected {CONFIG_FORMAT!r}")
        known = {"format", "kind", "feat_dim", "sample_rate", "frame_shift", "frame_length",
                 "kaldi", "sdc", "vad", "cmvn"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LreError(f"feature config has unknown keys: {', '.join(unknown)}")

        def part(name: str, cls_: type, default: Any) -> Any:
            values = d.get(name)
            if values is None:
                return default
            names = {f.name for f in dataclasses.fields(cls_)}
            bad = sorted(set(values) - names)
            if bad:
                raise LreError(f"feature config '{name}' has unknown options: {', '.join(bad)}")
            return dataclasses.replace(default, **values)

        kind = d.get("kind", "fbank")
        cfg = cls(
            kind=kind,
            kaldi=part("kaldi", KaldiOptions, KALDI_DEFAULTS.get(kind, KaldiOptions())),
            sdc=part("sdc", SdcOptions, SdcOptions()),
            vad=part("vad", VadOptions, VadOptions()),
            cmvn=part("cmvn", CmvnOptions, CmvnOptions()),
        )
        if "feat_dim" in d and int(d["feat_dim"]) != cfg.feat_dim:
            raise LreError(f"feature config says feat_dim={d['feat_dim']} but its options give "
                           f"{cfg.feat_dim}")
        return cfg

    def digest(self) -> str:
        """Short hash of the options: job outputs made with other options are stale."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def _kind_from_name(path: Path) -> str:
    stem = path.name.lower()
    for prefix, kind in (("mfcc_sdc", "mfcc_sdc"), ("sdc", "mfcc_sdc"), ("fbank", "fbank"),
                         ("mfcc", "mfcc")):
        if stem.startswith(prefix):
            return kind
    raise LreError(f"{path}: cannot tell the feature type from the file name; add a line "
                   f"--feature-type=fbank|mfcc|mfcc_sdc")


# ----------------------------------------------------------------------------------------
# Kaldi conf files
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfOption:
    """One ``--name=value`` line of a conf file (``where`` = ``file:line`` for errors)."""

    name: str
    value: str
    where: str


def read_conf(path: str | os.PathLike, _seen: frozenset[Path] = frozenset()) -> list[ConfOption]:
    """Options of a Kaldi conf file, in order; ``#`` starts a comment; ``--config=FILE``
    includes another file (relative to this one when not found as given)."""
    path = Path(path)
    if not path.is_file():
        raise LreError(f"{path}: config file not found")
    real = path.resolve()
    if real in _seen:
        raise LreError(f"{path}: config file includes itself")
    out: list[ConfOption] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{lineno}"
        if not line.startswith("--") or len(line.split()) != 1:
            raise LreError(f"{where}: expected one option of the form --name=value, "
                           f"got '{line}'")
        name, _, value = line[2:].partition("=")
        if not name:
            raise LreError(f"{where}: empty option name")
        if name == "config":
            inc = Path(value)
            if not inc.is_file() and not inc.is_absolute():
                inc = path.parent / value
            out.extend(read_conf(inc, _seen | {real}))
            continue
        out.append(ConfOption(name, value, where))
    return out


def _parse_bool(text: str) -> bool | None:
    t = text.strip().lower()
    if t in ("true", "t", "1", ""):
        return True
    if t in ("false", "f", "0"):
        return False
    return None


def _apply(base: Any, options: Sequence[ConfOption], tool: str) -> Any:
    """Override fields of the frozen options dataclass ``base`` from conf options."""
    fields = {f.name: f for f in dataclasses.fields(base)}
    types = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for opt in options:
        key = opt.name.replace("-", "_")
        if key not in fields:
            if opt.name in _IGNORED_OPTIONS:
                logger.debug("%s: --%s does not affect the features; ignored", opt.where, opt.name)
                continue
            if opt.name in _UNSUPPORTED_OPTIONS:
                raise LreError(f"{opt.where}: --{opt.name} is not supported "
                               f"({_UNSUPPORTED_OPTIONS[opt.name]})")
            allowed = ", ".join("--" + n.replace("_", "-") for n in fields)
            raise LreError(f"{opt.where}: unknown option --{opt.name} for {tool} "
                           f"(known: {allowed})")
        kind = types[key]
        if kind is bool:
            value: Any = _parse_bool(opt.value)
            if value is None:
                raise LreError(f"{opt.where}: --{opt.name} needs true or false, "
                               f"got '{opt.value}'")
        elif kind is int:
            try:
                value = int(opt.value)
            except ValueError:
                raise LreError(f"{opt.where}: --{opt.name} needs an integer, "
                               f"got '{opt.value}'") from None
        elif kind is float:
            try:
                value = float(opt.value)
            except ValueError:
                raise LreError(f"{opt.where}: --{opt.name} needs a number, "
                               f"got '{opt.value}'") from None
            if not math.isfinite(value):
                raise LreError(f"{opt.where}: --{opt.name} must be finite")
        else:
            value = opt.value
        changes[key] = value
    return dataclasses.replace(base, **changes)


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
            pad_left = size // 2 - shift // 2
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
        """Per-thread scratch tensors for chunks of ``rows`` frames, reused across calls:
        fresh multi-megabyte buffers per chunk would cost more in page faults than the FFT."""
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
        ws = self._workspace(min(m, CHUNK_FRAMES))
        n_mel = o.num_mel_bins
        mel_col = 1 if (o.use_energy and not o.htk_compat and not self.mfcc) else 0
        for a in range(0, m, CHUNK_FRAMES):
            b = min(m, a + CHUNK_FRAMES)
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
    wave: np.ndarray | torch.Tensor, config: FeatureConfig, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Raw features and the per-frame log-energy that VAD uses.

    Args:
        wave: ``(samples,)`` float in [-1, 1] at ``config.sample_rate``.
        config: feature options.
        seed: seeds the dither noise (only used when ``dither > 0``).

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
    if config.kind == "mfcc_sdc":
        feats_np = shifted_deltas(feats_np, config.sdc)
    return feats_np, energy.numpy()


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
    """
    feats, energy = extract_with_energy(wave, config, seed)
    return feats, energy_vad(energy, config.vad)


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
        keep = np.asarray(vad).reshape(-1) > 0.5
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


# ----------------------------------------------------------------------------------------
# The stage: one job
# ----------------------------------------------------------------------------------------


@dataclass
class JobPaths:
    """Files of job ``index`` of data set ``name`` in ``feat_dir`` (Kaldi-like names)."""

    feat_dir: Path
    kind: str
    name: str
    index: int

    def _p(self, stem: str, ext: str) -> Path:
        return self.feat_dir / f"{stem}_{self.name}.{self.index}.{ext}"

    @property
    def feats_ark(self) -> Path:
        return self._p(f"raw_{self.kind}", "ark")

    @property
    def feats_scp(self) -> Path:
        return self._p(f"raw_{self.kind}", "scp")

    @property
    def vad_ark(self) -> Path:
        return self._p("vad", "ark")

    @property
    def vad_scp(self) -> Path:
        return self._p("vad", "scp")

    @property
    def manifest(self) -> Path:
        """The job is complete iff this matches and the four ark/scp files exist."""
        return self._p(f"raw_{self.kind}", "done.json")

    def all(self) -> list[Path]:
        return [self.feats_ark, self.feats_scp, self.vad_ark, self.vad_scp, self.manifest]

    def remove_temporaries(self) -> None:
        for final in self.all():
            for tmp in self.feat_dir.glob(f".{final.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
            Path(f"{final}.tmp").unlink(missing_ok=True)


def _utts_digest(utts: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(utts).encode("utf-8")).hexdigest()[:16]


def _scp_line(utt: str, ark: Path, pos: int) -> str:
    return f"{utt} {ark}:{pos}\n"


def run_job(
    split_dir: str | os.PathLike,
    config: FeatureConfig,
    feat_dir: str | os.PathLike,
    name: str,
    index: int,
) -> dict[str, Any]:
    """Compute features for one part of a split data dir and commit them atomically.

    Writes ``raw_<kind>_<name>.<index>.{ark,scp}``, ``vad_<name>.<index>.{ark,scp}`` and
    the manifest ``raw_<kind>_<name>.<index>.done.json`` (frame counts, failures), each
    by atomic rename; the arks first, then the rest.
    Bad utterances are skipped with a one-line reason in the log. Returns the manifest.
    """
    from lre.data.audio import AudioError, iter_audio
    from lre.data.datadir import DataDir

    torch.set_num_threads(1)  # jobs are the unit of parallelism, as in Kaldi
    start_wall, start_cpu = time.time(), time.process_time()
    feat_dir = Path(feat_dir).absolute()
    feat_dir.mkdir(parents=True, exist_ok=True)
    paths = JobPaths(feat_dir, config.kind, name, index)
    paths.remove_temporaries()
    dd = DataDir.load(split_dir)
    utts = dd.utts
    min_samples = config.kaldi.window_size
    failed: dict[str, str] = {}
    num_frames: dict[str, int] = {}
    feats_lines: list[str] = []
    vad_lines: list[str] = []
    audio_seconds = 0.0
    feats_tmp, vad_tmp = Path(f"{paths.feats_ark}.tmp"), Path(f"{paths.vad_ark}.tmp")
    logger.info("job %d: %d utterances from %s", index, len(utts), split_dir)
    try:
        with open(feats_tmp, "wb") as fark, open(vad_tmp, "wb") as vark:
            for n, (utt, wave) in enumerate(
                # Any length is read; shorter than one frame is rejected below, by name.
                iter_audio(dd, sample_rate=config.sample_rate, min_seconds=0.0), 1
            ):
                if isinstance(wave, AudioError):
                    # iter_audio has logged the one-line reason already.
                    failed[utt] = _reason(utt, str(wave))
                    continue
                audio_seconds += len(wave) / config.sample_rate
                if config.kaldi.num_frames(len(wave)) == 0 or len(wave) < min_samples:
                    failed[utt] = (f"shorter than one frame ({len(wave)} samples < "
                                   f"{min_samples})")
                    logger.warning("skipping %s: %s", utt, failed[utt])
                    continue
                feats, vad = extract(wave, config, seed=utterance_seed(utt))
                if not vad.any():
                    failed[utt] = f"no voiced frame after energy VAD ({len(vad)} frames)"
                    logger.warning("skipping %s: %s", utt, failed[utt])
                    continue
                head = len(utt.encode("utf-8")) + 1  # kaldiio writes "<utt> " first
                feats_lines.append(_scp_line(utt, paths.feats_ark, fark.tell() + head))
                kaldiio.save_ark(fark, {utt: feats})
                vad_lines.append(_scp_line(utt, paths.vad_ark, vark.tell() + head))
                kaldiio.save_ark(vark, {utt: vad.astype(np.float32)})
                num_frames[utt] = len(feats)
                if n % 500 == 0:
                    logger.info("job %d: %d of %d utterances", index, n, len(utts))
            fark.flush()
            vark.flush()
            _concurrently([lambda: os.fsync(fark.fileno()), lambda: os.fsync(vark.fileno())])
        os.replace(feats_tmp, paths.feats_ark)
        os.replace(vad_tmp, paths.vad_ark)
        manifest = {
            "config": config.digest(),
            "utts": _utts_digest(utts),
            "num_utts": len(utts),
            "num_frames": num_frames,
            "failed": failed,
            "audio_seconds": round(audio_seconds, 3),
            "cpu_seconds": round(time.process_time() - start_cpu, 3),
            "wall_seconds": round(time.time() - start_wall, 3),
        }
        # The three small files are written side by side: a job counts as done only when
        # its manifest AND all four ark/scp files exist (see _read_manifest), so their
        # order does not matter, and each is complete or absent (atomic rename).
        _concurrently([
            lambda: atomic_write_text(paths.feats_scp, "".join(feats_lines)),
            lambda: atomic_write_text(paths.vad_scp, "".join(vad_lines)),
            lambda: atomic_write_text(paths.manifest,
                                      json.dumps(manifest, indent=1, sort_keys=True) + "\n"),
        ])
    except BaseException:
        feats_tmp.unlink(missing_ok=True)
        vad_tmp.unlink(missing_ok=True)
        raise
    logger.info(
        "job %d done: %d utterances, %d skipped, %.1f s of audio in %.2f CPU s (%.0fx real time)",
        index, len(num_frames), len(failed), audio_seconds, manifest["cpu_seconds"],
        audio_seconds / max(manifest["cpu_seconds"], 1e-9),
    )
    return manifest


def _reason(utt: str, message: str) -> str:
    """``"<utt>: <cause>"`` -> ``"<cause>"`` (feats_failed holds ``utt cause``)."""
    prefix = f"{utt}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _read_manifest(paths: JobPaths, config: FeatureConfig, utts: Sequence[str]) -> dict | None:
    """The job's manifest when it is complete for this config and these utterances."""
    try:
        manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("config") != config.digest() or manifest.get("utts") != _utts_digest(utts):
        return None
    if not all(p.is_file() for p in (paths.feats_ark, paths.feats_scp, paths.vad_ark,
                                     paths.vad_scp)):
        return None
    return manifest


# ----------------------------------------------------------------------------------------
# The stage: split, run, merge
# ----------------------------------------------------------------------------------------


@dataclass
class FeatureReport:
    """What :func:`compute_features` did."""

    data_dir: Path
    num_utts: int
    num_done: int
    failed: dict[str, str] = field(default_factory=dict)
    jobs_run: list[int] = field(default_factory=list)
    jobs_reused: list[int] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.data_dir}: features for {self.num_done} of {self.num_utts} utterances "
                f"({len(self.failed)} failed; jobs run {len(self.jobs_run)}, reused "
                f"{len(self.jobs_reused)}; {self.audio_seconds:.1f} s of audio in "
                f"{self.wall_seconds:.1f} s)")


def compute_features(
    data_dir: str | os.PathLike,
    config: FeatureConfig | None = None,
    nj: int = 1,
    cmd: str = "",
    feat_dir: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    max_fail_share: float = 0.1,
    force: bool = False,
) -> FeatureReport:
    """The feature stage for one data dir.

    Splits ``data_dir`` into ``nj`` parts (``split{nj}/{i}``), runs one
    ``python -m lre.features job`` per part through ``cmd`` (local when empty; see
    :func:`lre.parallel.run_jobs`), with logs ``log_dir/make_feats.<i>.log``, and merges
    the results into ``data_dir``: ``feats.scp``, ``vad.scp`` (0/1 float vectors),
    ``utt2num_frames``, ``feats_config.json`` and, when some failed, ``feats_failed``.

    Jobs whose outputs are complete for this config are reused unless ``force``.
    Defaults: ``feat_dir = data_dir/data``, ``log_dir = data_dir/log`` (Kaldi's).

    Raises:
        LreError: a job failed (message names its log and ends with its tail), or more
            than ``max_fail_share`` of the utterances could not be processed (the outputs
            for the others are written first).
    """
    from lre.data.datadir import DataDir, c_sorted, split, write_kv
    from lre.parallel import Job, run_jobs

    config = FeatureConfig() if config is None else config
    t0 = time.time()
    data_dir = Path(data_dir)
    # Outputs of an earlier run are stale from here on (and a run killed while merging
    # may have left them disagreeing with each other, which DataDir.load rejects).
    for stale in STAGE_OUTPUTS:
        (data_dir / stale).unlink(missing_ok=True)
    dd = DataDir.load(data_dir)
    utts = dd.utts
    if not utts:
        raise LreError(f"{data_dir}: no utterances")
    name = data_dir.resolve().name
    feat_dir = (data_dir / "data" if feat_dir is None else Path(feat_dir)).absolute()
    log_dir = (data_dir / "log" if log_dir is None else Path(log_dir)).absolute()
    feat_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    nj = max(1, min(int(nj), len(utts)))
    parts = split(data_dir, nj)
    config_json = feat_dir / f"raw_{config.kind}_{name}.config.json"
    config_text = json.dumps(config.to_dict(), indent=2) + "\n"
    if not config_json.is_file() or config_json.read_text(encoding="utf-8") != config_text:
        atomic_write_text(config_json, config_text)

    report = FeatureReport(data_dir=data_dir, num_utts=len(utts), num_done=0)
    manifests: dict[int, dict] = {}
    jobs: list[Job] = []
    for i, part in enumerate(parts, 1):
        paths = JobPaths(feat_dir, config.kind, name, i)
        done = None if force else _read_manifest(paths, config, DataDir.load(part).utts)
        if done is not None:
            manifests[i] = done
            report.jobs_reused.append(i)
            continue
        for p in paths.all():
            p.unlink(missing_ok=True)
        jobs.append(Job(
            index=i,
            module="lre.features",
            argv=["job", "--config", str(config_json), "--feat-dir", str(feat_dir),
                  "--name", name, "--index", str(i), str(part.absolute())],
            log=log_dir / f"make_feats.{i}.log",
        ))
    if report.jobs_reused:
        logger.info("%s: %d of %d jobs already done, reusing them", data_dir,
                    len(report.jobs_reused), nj)

    def on_done(result: Any) -> None:
        paths = JobPaths(feat_dir, config.kind, name, result.index)
        try:
            m = json.loads(paths.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        logger.info("make_feats job %d/%d done in %.1f s: %d utterances, %d skipped, "
                    "%.0f s of audio", result.index, nj, result.seconds, len(m["num_frames"]),
                    len(m["failed"]), m["audio_seconds"])

    if jobs:
        if not cmd.strip() or cmd.strip() == "local":
            # Local jobs are forked from this process: build the mel banks and run torch's
            # kernels once here, so that no job pays for that set-up again.
            extract(np.random.default_rng(0).standard_normal(
                4 * config.kaldi.window_size).astype(np.float32) * 0.01, config)
        run_jobs(jobs, cmd=cmd, on_done=on_done, what=f"make_feats {name}")
        for job in jobs:
            paths = JobPaths(feat_dir, config.kind, name, job.index)
            part_utts = DataDir.load(parts[job.index - 1]).utts
            m = _read_manifest(paths, config, part_utts)
            if m is None:
                raise LreError(f"{job.log}: job {job.index} exited cleanly but left no "
                               f"complete output in {feat_dir}")
            manifests[job.index] = m
            report.jobs_run.append(job.index)

    # Merge (sorted, so a resumed run gives byte-identical files).
    feats: dict[str, str] = {}
    vads: dict[str, str] = {}
    frames: dict[str, int] = {}
    for i in range(1, nj + 1):
        paths = JobPaths(feat_dir, config.kind, name, i)
        feats.update(_read_scp(paths.feats_scp))
        vads.update(_read_scp(paths.vad_scp))
        frames.update(manifests[i]["num_frames"])
        report.failed.update(manifests[i]["failed"])
        report.audio_seconds += float(manifests[i].get("audio_seconds", 0.0))
    if set(feats) != set(frames) or set(vads) != set(frames):
        raise LreError(f"{feat_dir}: job outputs of {name} disagree (scp vs manifest); "
                       f"re-run with --force")
    failed_path = data_dir / "feats_failed"
    failed_path.unlink(missing_ok=True)
    _concurrently([
        lambda: write_kv(data_dir / "feats.scp", feats),
        lambda: write_kv(data_dir / "vad.scp", vads),
        lambda: write_kv(data_dir / "utt2num_frames", frames),
        lambda: write_kv(failed_path, report.failed) if report.failed else None,
        lambda: atomic_write_text(data_dir / "feats_config.json", config_text),
    ])
    _remove_stale_jobs(feat_dir, config.kind, name, nj)
    report.num_done = len(feats)
    report.wall_seconds = time.time() - t0
    logger.info("%s", report.summary())
    if report.failed:
        shown = c_sorted(report.failed)[:5]
        logger.warning("%s: %d utterance(s) skipped, listed in %s: %s%s", data_dir,
                       len(report.failed), failed_path,
                       "; ".join(f"{u} ({report.failed[u]})" for u in shown),
                       " ..." if len(report.failed) > len(shown) else "")
    share = len(report.failed) / len(utts)
    if share > max_fail_share:
        raise LreError(f"{failed_path}: {len(report.failed)} of {len(utts)} utterances failed "
                       f"({share:.0%} > --max-fail-share {max_fail_share:.0%})")
    return report


def _remove_stale_jobs(feat_dir: Path, kind: str, name: str, nj: int) -> None:
    """Delete job files of an earlier run with more jobs (indices above ``nj``)."""
    for pattern in (f"raw_{kind}_{name}.*.*", f"vad_{name}.*.*"):
        for path in feat_dir.glob(pattern):
            rest = path.name.split(f"_{name}.", 1)[1]
            index, _, ext = rest.partition(".")
            if index.isdigit() and int(index) > nj and ext in ("ark", "scp", "done.json"):
                path.unlink(missing_ok=True)


def _concurrently(tasks: Sequence[Any]) -> None:
    """Run small I/O tasks side by side: each atomic write waits on its own fsync."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


def _read_scp(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        if key:
            out[key] = value.strip()
    return out


# ----------------------------------------------------------------------------------------
# Command line: `lre features` and the job worker `python -m lre.features job`
# ----------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> FeatureConfig:
    """The FeatureConfig named by ``--feature-type`` / ``--*-conf`` options."""
    if args.feat_conf is None:
        if args.sdc_conf is not None:
            raise LreError("--sdc-conf needs --feat-conf (an MFCC config)")
        cfg = FeatureConfig.default(args.feature_type)
        if args.vad_conf is not None or args.cmvn_conf is not None:
            vad = (_apply(KALDI_VAD_DEFAULTS, read_conf(args.vad_conf), "compute-vad")
                   if args.vad_conf else cfg.vad)
            cmvn = (_apply(KALDI_CMVN_DEFAULTS, read_conf(args.cmvn_conf), "cmvn")
                    if args.cmvn_conf else cfg.cmvn)
            cfg = dataclasses.replace(cfg, vad=vad, cmvn=cmvn)
        return cfg
    kind = args.feature_type if args.feature_type_given else None
    return FeatureConfig.from_files(args.feat_conf, args.vad_conf, args.cmvn_conf,
                                    args.sdc_conf, kind=kind)


class _TypeAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        namespace.feature_type = values
        namespace.feature_type_given = True


def cli_features_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="data dir (data/<set>)")
    parser.add_argument("exp", nargs="?", default=None,
                        help="stage dir; job logs go to EXP/log (default exp/make_feats/<set>)")
    parser.add_argument("feat_dir", nargs="?", default=None,
                        help="where the ark/scp files go (default <data>/data)")
    parser.add_argument("--feature-type", default="fbank", action=_TypeAction,
                        choices=["fbank", "fbank80", "mfcc", "mfcc_sdc"],
                        help="shipped configuration to use when --feat-conf is not given")
    parser.set_defaults(feature_type_given=False)
    parser.add_argument("--feat-conf", default=None,
                        help="Kaldi fbank/mfcc conf file (e.g. features/fbank.conf)")
    parser.add_argument("--vad-conf", default=None, help="compute-vad conf (features/vad.conf)")
    parser.add_argument("--cmvn-conf", default=None, help="CMVN conf (features/cmvn.conf)")
    parser.add_argument("--sdc-conf", default=None,
                        help="add-deltas-sdc conf (features/sdc.conf); implies mfcc_sdc")
    parser.add_argument("--nj", type=int, default=1, help="parallel jobs")
    parser.add_argument("--cmd", default="",
                        help="job runner: empty = local; a prefix such as 'srun -n1'; or a "
                             "Kaldi script such as queue.pl (called as CMD LOG COMMAND)")
    parser.add_argument("--max-fail-share", type=float, default=0.1,
                        help="fail when more than this share of utterances is skipped")
    parser.add_argument("--force", action="store_true", help="recompute every job")


def cli_features(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    data = Path(args.data)
    exp = Path(args.exp) if args.exp else Path("exp") / "make_feats" / data.resolve().name
    # compute_features logs its report's summary
    compute_features(data, config, nj=args.nj, cmd=args.cmd, feat_dir=args.feat_dir,
                     log_dir=exp / "log", max_fail_share=args.max_fail_share, force=args.force)
    return 0


def _job_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lre.features job",
                                description="one job of the feature stage (one split part)")
    p.add_argument("split_dir")
    p.add_argument("--config", required=True, help="feats_config.json of the stage")
    p.add_argument("--feat-dir", required=True)
    p.add_argument("--name", required=True, help="data set name used in file names")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory in this (worker) process instead of returning it.

    Every utterance allocates arrays of the same few sizes (audio, frames, spectra); by
    default glibc hands each back to the kernel and the next utterance faults the pages
    in again, which costs the job a fifth of its time. Not glibc: nothing to do.
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 64 << 20)
        libc.mallopt(m_trim_threshold, 256 << 20)
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lre.features job ...``: the worker each stage job runs."""
    from lre.utils import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "job":
        print("usage: python -m lre.features job --config FILE --feat-dir DIR --name NAME "
              "--index I SPLIT_DIR   (the stage itself is `lre features`)", file=sys.stderr)
        return 2
    args = _job_parser().parse_args(argv[1:])
    setup_logging(None, args.verbose)
    _keep_freed_memory()
    try:
        with open(args.config, encoding="utf-8") as f:
            config = FeatureConfig.from_dict(json.load(f))
        run_job(args.split_dir, config, args.feat_dir, args.name, args.index)
    except LreError as e:
        logger.error("%s", e)
        return 1
    return 0


__all__ = [
    "CmvnOptions",
    "FeatureConfig",
    "FeatureReport",
    "KaldiOptions",
    "SdcOptions",
    "VadOptions",
    "compute_features",
    "extract",
    "extract_with_energy",
    "postprocess",
    "read_conf",
    "run_job",
    "utterance_seed",
]


if __name__ == "__main__":
    sys.exit(main())
