"""What a feature set is: kind, Kaldi options, VAD, CMVN and SDC settings.

A :class:`FeatureConfig` is read from Kaldi-style ``--option=value`` files
(``features/*.conf``), written with the features as ``feats_config.json`` and stored with
every trained model, so the model always gets the features it was trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lre.config import merge, unknown_key_error
from lre.features.cmvn import KALDI_CMVN_DEFAULTS, CmvnOptions
from lre.features.encoders import ENCODER_KINDS, STATE_SAMPLES, EncoderOptions
from lre.features.kaldi import KALDI_DEFAULTS, KaldiOptions
from lre.features.sdc import SdcOptions
from lre.features.vad import KALDI_VAD_DEFAULTS, VadOptions
from lre.utils import LreError

FEATURE_KINDS = ("fbank", "mfcc", "mfcc_sdc", *ENCODER_KINDS)
CONFIG_FORMAT = "lre-features-1"

logger = logging.getLogger(__name__)

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

    ``kind``: ``"fbank"``, ``"mfcc"``, ``"mfcc_sdc"``, or a pretrained encoder's states:
    ``"whisper"`` (faster-whisper) or ``"transformers"``, set by ``encoder`` (see
    :mod:`lre.features.encoders`; 20 ms frames, VAD on the same grid). ``FeatureConfig()``
    is the shipped default, identical to ``features/fbank.conf`` + ``vad.conf`` +
    ``cmvn.conf``.
    """

    kind: str = "fbank"
    kaldi: KaldiOptions = KaldiOptions(num_mel_bins=40, dither=0.0)
    sdc: SdcOptions = SdcOptions()
    vad: VadOptions = VadOptions()
    cmvn: CmvnOptions = CmvnOptions()
    encoder: EncoderOptions = EncoderOptions()

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise LreError(f"feature type '{self.kind}' is not one of {', '.join(FEATURE_KINDS)}")
        if self.is_encoder:
            self.encoder.check(self.kind)
        else:
            self.kaldi.check(self.kind)
        self.sdc.check()
        self.vad.check()
        self.cmvn.check()

    # -- derived -----------------------------------------------------------------------

    @property
    def is_encoder(self) -> bool:
        """States of a pretrained encoder rather than Kaldi features."""
        return self.kind in ENCODER_KINDS

    @property
    def states_on_read(self) -> bool:
        """Encoder states that are not stored: readers compute them from the audio."""
        return self.is_encoder and self.encoder.storage == "none"

    @property
    def feat_dim(self) -> int:
        """Columns of the stored feature matrix (an encoder's: known once it is loaded)."""
        if self.is_encoder:
            return self.encoder.dim
        k = self.kaldi
        if self.kind == "fbank":
            return k.num_mel_bins + int(k.use_energy)
        if self.kind == "mfcc":
            return k.num_ceps
        return k.num_ceps * (self.sdc.num_blocks + 1)

    @property
    def frame_shift(self) -> float:
        """Seconds between frame starts (frame ``i`` starts at ``i * frame_shift``)."""
        if self.is_encoder:
            return STATE_SAMPLES / self.sample_rate
        return self.kaldi.window_shift / self.kaldi.sample_frequency

    @property
    def frame_length(self) -> float:
        """Seconds per frame (an encoder state is given the 20 ms it starts)."""
        if self.is_encoder:
            return self.frame_shift
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
        vad = (apply_conf(KALDI_VAD_DEFAULTS, read_conf(vad_conf), "compute-vad")
               if vad_conf is not None else VadOptions())
        cmvn = (apply_conf(KALDI_CMVN_DEFAULTS, read_conf(cmvn_conf), "cmvn")
                if cmvn_conf is not None else CmvnOptions())
        if kind in ENCODER_KINDS:
            encoder = apply_conf(EncoderOptions(), opts, f"the {kind} front end")
            return cls(kind=kind, vad=vad, cmvn=cmvn, encoder=encoder)
        ceps = [o for o in sdc_opts if o.name == "num-ceps"]
        kaldi = apply_conf(KALDI_DEFAULTS[kind], opts + ceps, "compute-*-feats")
        sdc = apply_conf(SdcOptions(), [o for o in sdc_opts if o.name != "num-ceps"],
                     "add-deltas-sdc")
        return cls(kind=kind, kaldi=kaldi, sdc=sdc, vad=vad, cmvn=cmvn)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``feats_config.json``); derived sizes are included for readers.
        Encoder options are written for encoder kinds only."""
        d = {
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
        if self.is_encoder:
            d["encoder"] = dataclasses.asdict(self.encoder)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_dict`; raises ``LreError`` on unknown or inconsistent keys."""
        if not isinstance(d, dict):
            raise LreError(f"feature config must be a JSON object, got {type(d).__name__}")
        if d.get("format", CONFIG_FORMAT) != CONFIG_FORMAT:
            raise LreError(f"feature config has format {d.get('format')!r}, "
                           f"expected {CONFIG_FORMAT!r}")
        known = ("format", "kind", "feat_dim", "sample_rate", "frame_shift", "frame_length",
                 "kaldi", "sdc", "vad", "cmvn", "encoder")
        for key in d:
            if key not in known:
                raise unknown_key_error("feature config", key, known)

        def part(name: str, cls_: type, default: Any) -> Any:
            values = d.get(name)
            if values is None:
                return default
            merged = dataclasses.asdict(default)
            merge(merged, values, "feature config", f"{name}.")
            return cls_(**merged)

        kind = d.get("kind", "fbank")
        cfg = cls(
            kind=kind,
            kaldi=part("kaldi", KaldiOptions, KALDI_DEFAULTS.get(kind, KaldiOptions())),
            sdc=part("sdc", SdcOptions, SdcOptions()),
            vad=part("vad", VadOptions, VadOptions()),
            cmvn=part("cmvn", CmvnOptions, CmvnOptions()),
            encoder=part("encoder", EncoderOptions, EncoderOptions()),
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
                         ("mfcc", "mfcc"), ("whisper", "whisper")):
        if stem.startswith(prefix):
            return kind
    raise LreError(f"{path}: cannot tell the feature type from the file name; add a line "
                   f"--feature-type=fbank|mfcc|mfcc_sdc|whisper|transformers")


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


def apply_conf(base: Any, options: Sequence[ConfOption], tool: str) -> Any:
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
