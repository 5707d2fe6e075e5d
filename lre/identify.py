"""Identify the language of audio files with a trained model (``lre identify``, Python API).

    >>> from lre import Identifier
    >>> ident = Identifier.from_pretrained("exp/hgru")
    >>> r = ident.identify("talk.flac", top_k=3, timeline=True)
    >>> r.language, r.probability, r.top_k, r.segments[:2]

Any sample rate, channel count and length: audio is mixed to mono and resampled to the
model's rate. Files longer than ``chunk_seconds`` (default 60 s) are read block by block
with soundfile and never held whole in memory (``cmd |`` pipes and archive entries are
decoded whole first, then processed the same way): each chunk gets its own features (cut
on whole frames, so a chunk's frame ``i`` is frame ``first + i`` of the file), VAD and
CMVN, and its own model call. Chunk results are combined by
:func:`lre.score.combine_chunks`: the file's logits are the average of the chunk logits
weighted by each chunk's number of voiced frames, and a segment's attention weight is its
chunk's share times its weight inside the chunk, so the weights of the whole file sum to 1
and every segment keeps its time in the file. A file that fits in one chunk gives exactly
what the model gives on the whole file.

``probability``, ``top_k`` and ``posteriors`` are calibrated when the model dir holds a
``calibration.json``; the per-segment timeline posteriors are the model's own (the
calibration is fitted on whole utterances, not 1 s segments).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lre.data.audio import resample as _resample
from lre.data.audio import to_mono as _to_mono
from lre.score import (
    Calibrator,
    ChunkResult,
    ModelRunner,
    chunk_bounds,
    combine_chunks,
    load_trained_model,
    segment_times,
)
from lre.utils import LreError

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph", ".aif", ".aiff",
                    ".aifc", ".au", ".w64", ".caf", ".rf64", ".nist"}
LIST_EXTENSIONS = {".scp", ".list", ".lst", ".txt"}
DEFAULT_CHUNK_SECONDS = 60.0
MIN_SECONDS = 0.1


# ----------------------------------------------------------------------------------------
# Audio read chunk by chunk, at the model's sample rate, mono
# ----------------------------------------------------------------------------------------


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
            raise NotStreamable(f"{self.name}: cannot read audio ({_short(e)})") from e
        self.sr_in = int(self._file.samplerate)
        self.frames_in = int(self._file.frames)
        if self.frames_in <= 0:
            self.close()
            raise LreError(f"{self.name}: audio has no samples")
        self.duration = self.frames_in / self.sr_in
        if self.duration < MIN_SECONDS:
            self.close()
            raise LreError(f"{self.name}: too short: {self.duration:.3f} s "
                           f"(minimum {MIN_SECONDS:g} s)")
        g = math.gcd(self.sr_in, sample_rate)
        self._p, self._q = self.sr_in // g, sample_rate // g  # input / output period
        self.num_samples = (
            self.frames_in
            if self._p == self._q
            else math.ceil(self.frames_in * self._q / self._p)
        )
        # Resampler context in input samples (torchaudio's sinc kernel half-width).
        width = math.ceil(6 * self._p / (min(self._p, self._q) * 0.99))
        self._pad_periods = 0 if self._p == self._q else math.ceil(width / self._p) + 1
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input sample index of _buf[0]

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
        have = self._buf_start + len(self._buf)
        if have < start:  # skip what no range needs
            self._file.seek(start)
            self._buf, self._buf_start, have = np.zeros(0, np.float32), start, start
        if end > have:
            try:
                block = self._file.read(end - have, dtype="float32", always_2d=True)
            except Exception as e:
                raise LreError(f"{self.name}: cannot read audio ({_short(e)})") from e
            block = _to_mono(block)
            if not np.isfinite(block).all():
                raise LreError(f"{self.name}: NaN or infinite samples")
            self._buf = np.concatenate([self._buf, block])
        return self._buf[start - self._buf_start : end - self._buf_start]

    def read(self, start: int, end: int) -> np.ndarray:
        """Output samples ``[start, end)`` at ``sample_rate``, ``(end - start,)`` float32."""
        end = min(end, self.num_samples)
        if self._p == self._q:
            return self._input(start, end)  # a view; the buffer is replaced, never written
        k0 = max(0, start // self._q - self._pad_periods)
        k1 = math.ceil(end / self._q) + self._pad_periods
        lo, hi = k0 * self._p, min(k1 * self._p, self.frames_in)
        y = _resample(self._input(lo, hi), self.sr_in, self.sample_rate)
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


def _short(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------


@dataclass
class IdentifyResult:
    """The language of one audio file or array.

    Attributes:
        source: the path (or ``"<array>"``).
        language: the most probable language.
        probability: its posterior (calibrated when the model has a calibration).
        top_k: ``[(lang, prob), ...]`` best first.
        posteriors: ``{lang: prob}`` for every language.
        segments: ``[{"start", "end", "weight"}, ...]``: seconds in the file, attention.
        timeline: ``[{"start", "end", "posteriors": {lang: prob}}, ...]`` per segment
            when asked for, else None.
        duration: seconds of audio.
        calibrated: whether the posteriors are calibrated.
        chunks: how many chunks the file was processed in.
    """

    source: str
    language: str
    probability: float
    top_k: list[tuple[str, float]]
    posteriors: dict[str, float]
    segments: list[dict[str, float]]
    timeline: list[dict[str, Any]] | None
    duration: float
    calibrated: bool = False
    chunks: int = 1

    def to_dict(self, decimals: int = 4) -> dict[str, Any]:
        """A JSON-ready dict, probabilities and weights rounded to ``decimals``, times to ms."""

        def r(x: float) -> float:
            return round(float(x), decimals)

        d = asdict(self)
        d["probability"] = r(self.probability)
        d["duration"] = round(self.duration, 3)
        d["top_k"] = [[lang, r(p)] for lang, p in self.top_k]
        d["posteriors"] = {k: r(v) for k, v in self.posteriors.items()}
        d["segments"] = [
            {"start": round(s["start"], 3), "end": round(s["end"], 3), "weight": r(s["weight"])}
            for s in self.segments
        ]
        if self.timeline is None:
            del d["timeline"]
        else:
            d["timeline"] = [
                {"start": round(t["start"], 3), "end": round(t["end"], 3),
                 "posteriors": {k: r(v) for k, v in t["posteriors"].items()}}
                for t in self.timeline
            ]
        return d


# ----------------------------------------------------------------------------------------
# The identifier
# ----------------------------------------------------------------------------------------


class Identifier:
    """Audio -> language posteriors, attention over segments and an optional timeline.

    Build it with :meth:`from_pretrained`. ``chunk_seconds`` bounds the audio processed
    at once (None: whole files at once).
    """

    def __init__(
        self,
        runner: ModelRunner,
        langs: list[str],
        feats_config: Any,
        calibrator: Calibrator | None = None,
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
    ) -> None:
        if chunk_seconds is not None and chunk_seconds < 1.0:
            raise LreError(f"chunk_seconds: must be at least 1 s, got {chunk_seconds}")
        self.runner = runner
        self.langs = list(langs)
        self.feats_config = feats_config
        self.calibrator = calibrator
        self.chunk_seconds = chunk_seconds
        self.sample_rate = int(feats_config.sample_rate)
        kaldi = feats_config.kaldi
        self.hop = int(kaldi.window_shift)  # samples
        self.win = int(kaldi.window_size)

    @classmethod
    def from_pretrained(
        cls,
        exp_dir: str | os.PathLike,
        checkpoint: str = "final.pt",
        backend: str = "torch",
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
        device: str = "cpu",
        num_threads: int | None = None,
    ) -> Identifier:
        """Load a trained model from an experiment dir (as ``lre train`` writes it).

        Args:
            exp_dir: holds ``<checkpoint>``, ``feats_config.json`` and optionally
                ``calibration.json`` and ``model.onnx`` (from ``lre export``).
            backend: ``"torch"`` or ``"onnx"`` (onnxruntime; uses ``model.onnx`` when it
                was exported from the same checkpoint, else exports in memory).
            chunk_seconds: longest audio processed at once; None for whole files.
            device: torch device (torch backend).
            num_threads: CPU threads of the onnxruntime session (onnx backend).
        """
        exp_dir = Path(exp_dir)
        if backend == "torch":
            tm = load_trained_model(exp_dir, checkpoint, device=device)
            return cls(tm.runner, tm.langs, tm.feats_config, tm.calibrator, chunk_seconds)
        if backend == "onnx":
            from lre.export import load_onnx_runner
            from lre.score import FEATS_CONFIG, load_feats_config

            runner = load_onnx_runner(exp_dir, checkpoint, num_threads=num_threads)
            cfg = load_feats_config(exp_dir / FEATS_CONFIG)
            return cls(runner, runner.langs, cfg, Calibrator(exp_dir, runner.langs),
                       chunk_seconds)
        raise LreError(f"backend: unknown {backend!r} (choose torch or onnx)")

    # -- inputs ---------------------------------------------------------------------------

    def _open(self, audio: Any, sample_rate: int | None, chunked: bool):
        """Any input -> a stream of mono samples at the model's rate."""
        if isinstance(audio, (str, os.PathLike)):
            spec = os.fspath(audio)
            if chunked and os.path.isfile(spec):
                try:
                    return AudioStream(spec, self.sample_rate)
                except NotStreamable as e:
                    # Not readable block-wise by soundfile: let load_audio try (and give
                    # its own precise message when it cannot either).
                    logger.debug("%s; trying load_audio", e)
            # Pipes (``cmd |``), archive entries (``foo.ark:12``) and formats only
            # load_audio decodes are read whole; the model still sees bounded chunks.
            from lre.data.audio import load_audio

            x = load_audio(spec, sample_rate=self.sample_rate, name=spec)
            return ArrayStream(x, spec, sample_rate=self.sample_rate)
        name = "<array>"
        if sample_rate is None:
            sample_rate = self.sample_rate
        x = array_to_mono(audio, name)
        duration = len(x) / sample_rate
        if duration < MIN_SECONDS:
            raise LreError(f"{name}: too short: {duration:.3f} s (minimum {MIN_SECONDS:g} s)")
        return ArrayStream(_resample(x, int(sample_rate), self.sample_rate), name,
                           duration=duration, sample_rate=self.sample_rate)

    def _num_frames(self, num_samples: int) -> int:
        return int(self.feats_config.kaldi.num_frames(num_samples))

    def chunk_samples(self, f0: int, f1: int, total: int, num_samples: int
                      ) -> tuple[int, int, int]:
        """``(start, end, skip)``: the features of samples ``[start, end)``, from frame
        ``skip`` on, are frames ``f0..f1-1`` of the whole file (Kaldi framing).

        With ``snip_edges`` a frame's window lies inside the file, so the samples of the
        chunk's frames suffice. Without it, frame ``i``'s window starts at
        ``i * hop - (win // 2 - hop // 2)`` and is mirrored at the file's ends only: a
        chunk inside the file starts ``skip`` frames early so that its first wanted frame
        reads real samples instead of a mirror image, and ends where its last frame's window
        does; frames before ``skip`` and after ``f1 - f0`` are dropped.
        """
        hop, win = self.hop, self.win
        if self.feats_config.kaldi.snip_edges:
            return f0 * hop, (f1 - 1) * hop + win, 0
        reach = win // 2 - hop // 2            # samples a window reaches before its frame
        skip = min(f0, -(-reach // hop))
        end = num_samples if f1 == total else min(num_samples, (f1 - 1) * hop - reach + win)
        return (f0 - skip) * hop, end, skip

    # -- the work ---------------------------------------------------------------------------

    def identify(
        self,
        audio: str | os.PathLike | np.ndarray | Any,
        sample_rate: int | None = None,
        top_k: int = 5,
        timeline: bool = False,
    ) -> IdentifyResult:
        """Identify the language of a file (path or ``cmd |``) or an array of samples.

        Args:
            audio: path, or samples ``(samples,)`` / ``(samples, channels)`` (numpy or torch).
            sample_rate: rate of an array (default: the model's); ignored for paths.
            top_k: languages in ``top_k``.
            timeline: also give per-segment language posteriors.

        Raises:
            LreError: unreadable audio, too short, or no speech found.
        """
        from lre.features import energy_vad, extract_with_energy, postprocess

        cfg = self.feats_config
        stream = self._open(audio, sample_rate, chunked=self.chunk_seconds is not None)
        try:
            total = self._num_frames(stream.num_samples)
            if total == 0:
                raise LreError(f"{stream.name}: too short for one feature frame")
            if self.chunk_seconds is None:
                bounds = [(0, total)]
            else:
                bounds = chunk_bounds(total, max(1, round(self.chunk_seconds / cfg.frame_shift)))
            parts: list[ChunkResult] = []
            for f0, f1 in bounds:
                start, end, skip = self.chunk_samples(f0, f1, total, stream.num_samples)
                feats, energy = extract_with_energy(stream.read(start, end), cfg)
                # The framing must match the whole file's (without snip_edges the samples
                # read may give a mirrored frame or two past the chunk, which are dropped).
                needed = skip + f1 - f0
                if len(feats) < needed or (cfg.kaldi.snip_edges and len(feats) != needed):
                    raise LreError(f"{stream.name}: chunk {f0}-{f1} gave {len(feats) - skip} "
                                   f"frames, expected {f1 - f0}")
                feats = feats[skip:skip + f1 - f0]
                vad = np.asarray(energy_vad(energy[skip:skip + f1 - f0], cfg.vad), dtype=bool)
                if not vad.any():
                    logger.debug("%s: no speech in %.1f-%.1f s", stream.name,
                                 f0 * cfg.frame_shift, f1 * cfg.frame_shift)
                    continue
                x, index = postprocess(feats, vad, cfg)
                if len(x) == 0:
                    continue
                out = self.runner.run([np.asarray(x, dtype=np.float32)], timeline=timeline)[0]
                starts, ends = segment_times(out.segment_frames, np.asarray(index) + f0,
                                             cfg.frame_shift, cfg.frame_length)
                parts.append(ChunkResult(out, starts, ends, len(x)))
            if not parts:
                raise LreError(f"{stream.name}: no speech found (VAD kept no frame)")
            return self._result(stream.name, stream.duration, combine_chunks(parts), top_k)
        finally:
            stream.close()

    def _result(self, source: str, duration: float, res, top_k: int) -> IdentifyResult:
        log_post = res.log_posteriors
        calibrated = self.calibrator is not None and self.calibrator.active
        if calibrated:
            log_post = self.calibrator(log_post)[0]
        post = np.exp(log_post)
        order = np.argsort(-post, kind="stable")
        langs = self.langs
        timeline = None
        if res.segment_log_posteriors is not None:
            timeline = [
                {"start": float(s), "end": float(e),
                 "posteriors": {lang: float(p) for lang, p in zip(langs, np.exp(lp),
                                                                  strict=True)}}
                for s, e, lp in zip(res.starts, res.ends, res.segment_log_posteriors,
                                    strict=True)
            ]
        return IdentifyResult(
            source=source,
            language=langs[int(order[0])],
            probability=float(post[order[0]]),
            top_k=[(langs[int(i)], float(post[i])) for i in order[: max(1, top_k)]],
            posteriors={lang: float(p) for lang, p in zip(langs, post, strict=True)},
            segments=[
                {"start": float(s), "end": float(e), "weight": float(w)}
                for s, e, w in zip(res.starts, res.ends, res.weights, strict=True)
            ],
            timeline=timeline,
            duration=float(duration),
            calibrated=calibrated,
            chunks=res.chunks,
        )

    def identify_many(
        self, sources: Sequence[str], top_k: int = 5, timeline: bool = False
    ) -> Iterator[tuple[str, IdentifyResult | LreError]]:
        """Identify each source in turn; a source that fails yields its error, not a raise."""
        for src in sources:
            try:
                yield src, self.identify(src, top_k=top_k, timeline=timeline)
            except LreError as e:
                yield src, e
            except Exception as e:  # one bad file must not stop the others
                logger.debug("%s", src, exc_info=True)
                yield src, LreError(f"{src}: {type(e).__name__}: {_short(e)}")


# ----------------------------------------------------------------------------------------
# Inputs from the command line
# ----------------------------------------------------------------------------------------


@dataclass
class Source:
    """One thing to identify: a display name and an audio path or ``cmd |`` spec."""

    name: str
    spec: str


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Source], list[str]]:
    """Files, dirs (scanned for audio files) and lists (``.scp``: ``utt path`` per line, or
    one path per line) -> sources to identify, and one error line per bad input."""
    sources: list[Source] = []
    errors: list[str] = []
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            found = sorted(
                (f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS),
                key=lambda f: str(f),
            )
            if not found:
                errors.append(f"{arg}: no audio files in this directory")
            sources.extend(Source(str(f), str(f)) for f in found)
        elif p.suffix.lower() in LIST_EXTENSIONS and p.is_file():
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                errors.append(f"{arg}: cannot read list ({_short(e)})")
                continue
            listed = 0
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(maxsplit=1)
                listed += 1
                if len(parts) == 1:
                    sources.append(Source(parts[0], parts[0]))
                elif os.path.exists(line) and not os.path.exists(parts[1]):
                    sources.append(Source(line, line))  # a path with a space in it
                else:
                    sources.append(Source(parts[0], parts[1].strip()))
            if not listed:
                errors.append(f"{arg}: empty list")
        elif p.exists():
            sources.append(Source(arg, arg))
        else:
            errors.append(f"{arg}: no such file or directory")
    return sources, errors


# ----------------------------------------------------------------------------------------
# Terminal output
# ----------------------------------------------------------------------------------------

_BARS = " ▁▂▃▄▅▆▇█"


def attention_bar(segments: Sequence[dict], width: int = 60) -> tuple[str, float]:
    """Attention weights as a bar of block characters, at most ``width`` wide.

    Returns the bar and the seconds each character covers (segments are binned by
    their start time when there are more than ``width``).
    """
    if not segments:
        return "", 0.0
    w = np.array([s["weight"] for s in segments])
    if len(w) > width:
        starts = np.array([s["start"] for s in segments])
        span = max(segments[-1]["end"], 1e-9)
        bins = np.minimum((starts / span * width).astype(int), width - 1)
        w = np.bincount(bins, weights=w, minlength=width)
        step = span / width
    elif len(segments) > 1:  # one character per segment: the mean spacing of their starts
        step = (segments[-1]["start"] - segments[0]["start"]) / (len(segments) - 1)
    else:
        step = segments[0]["end"] - segments[0]["start"]
    top = w.max() if w.max() > 0 else 1.0
    levels = np.ceil(w / top * (len(_BARS) - 1)).astype(int)
    return "".join(_BARS[i] for i in levels), step


def format_result(name: str, r: IdentifyResult, timeline: bool = False) -> str:
    """The terminal block of one result."""
    lines = [f"{name}  {r.duration:.2f} s  ->  {r.language}  {r.probability:.3f}"
             + ("" if r.calibrated else "  (uncalibrated)")]
    best = "  ".join(f"{lang} {p:.3f}" for lang, p in r.top_k)
    lines.append(f"  top-{len(r.top_k)}: {best}")
    if r.segments:
        bar, step = attention_bar(r.segments)
        peak = max(r.segments, key=lambda s: s["weight"])
        lines.append(f"  attention |{bar}| {len(r.segments)} segments, {step:.1f} s/char, "
                     f"peak {peak['weight']:.3f} at {peak['start']:.2f}-{peak['end']:.2f} s")
    if timeline and r.timeline:
        for t in r.timeline:
            best = sorted(t["posteriors"].items(), key=lambda kv: -kv[1])[:2]
            lines.append(f"    {t['start']:8.2f}-{t['end']:<8.2f} "
                         + "  ".join(f"{lang} {p:.2f}" for lang, p in best))
    return "\n".join(lines)


def _printable(text: str) -> str:
    enc = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(enc)
        return text
    except UnicodeEncodeError:
        table = {ord(c): str(i) for i, c in enumerate(_BARS) if i}
        table[ord(" ")] = " "
        return text.translate(table)


def cli_identify_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+",
                        help="audio files, dirs (scanned for audio), lists (.scp: 'utt path' "
                             "per line, or one path per line)")
    parser.add_argument("--model", required=True, help="experiment dir, e.g. exp/hgru")
    parser.add_argument("--checkpoint", default="final.pt", help="checkpoint in the model dir")
    parser.add_argument("--top-k", type=int, default=5, help="languages to list (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--timeline", action="store_true",
                        help="add per-segment language posteriors")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                        help="longer files are processed in chunks of this many seconds "
                             "(constant memory); 0: whole files")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")


def identify_files(
    model: str | os.PathLike,
    inputs: Sequence[str],
    checkpoint: str = "final.pt",
    top_k: int = 5,
    as_json: bool = False,
    timeline: bool = False,
    backend: str = "torch",
    chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
    device: str = "cpu",
    num_threads: int | None = None,
    out=None,
    err=None,
) -> int:
    """``lre identify`` as a function: prints results to ``out`` and one line per bad
    file to ``err``. Returns 0 when every input got an answer, else 1."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
    ident = Identifier.from_pretrained(model, checkpoint=checkpoint, backend=backend,
                                       chunk_seconds=chunk_seconds or None, device=device,
                                       num_threads=num_threads)
    sources, errors = expand_inputs(inputs)
    for e in errors:
        print(f"lre identify: {e}", file=err)
    failed = len(errors)
    for src in sources:
        try:
            res = ident.identify(src.spec, top_k=top_k, timeline=timeline)
        except Exception as e:  # report, keep going with the others
            if not isinstance(e, LreError):
                logger.debug("%s", src.spec, exc_info=True)
                e = LreError(f"{src.spec}: {type(e).__name__}: {_short(e)}")
            msg = str(e) if str(e).startswith(src.spec) else f"{src.spec}: {e}"
            if src.name != src.spec:
                msg = f"{src.name}: {msg}"
            print(f"lre identify: {msg}", file=err)
            failed += 1
            continue
        if as_json:
            d = res.to_dict()
            if src.name != src.spec:
                d = {"id": src.name, **d}
            print(json.dumps(d, ensure_ascii=False), file=out)
        else:
            print(_printable(format_result(src.name, res, timeline)), file=out)
        out.flush()
    if failed:
        logger.info("%d of %d inputs failed", failed, len(sources) + len(errors))
    return 1 if failed else 0


def cli_identify(args: argparse.Namespace) -> int:
    return identify_files(
        args.model,
        args.inputs,
        checkpoint=args.checkpoint,
        top_k=args.top_k,
        as_json=args.json,
        timeline=args.timeline,
        backend=args.backend,
        chunk_seconds=args.chunk_seconds,
        device=args.device,
        num_threads=args.threads,
    )
