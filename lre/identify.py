"""Identify the language of audio files with a trained model (``lre identify``, Python API).

    >>> from lre import Identifier
    >>> ident = Identifier.from_pretrained("exp/hgru")
    >>> r = ident.identify("talk.flac", timeline=True)
    >>> r.language, r.probability, r.top_k(3), r.segments[:2]

Any sample rate, channel count and length: audio is mixed to mono and resampled to the
model's rate. Files longer than ``chunk_seconds`` (default 60 s) are read block by block
with soundfile and never held whole in memory (``cmd |`` pipes and archive entries are
decoded whole first): the features of the whole file are made block by block, cut on the
whole file's frames, and VAD and CMVN run over the whole file, exactly as stage 1 and
``lre score`` do. From there the path is ``lre score``'s (:mod:`lre.inference.runner`):
inputs of more than ``chunk_seconds`` of voiced speech are cut into equal chunks, each
goes through the model, and the chunk results are combined, so ``lre identify`` on a file
and ``lre score`` on a data dir holding it give the same answer.

``probability``, ``top_k()`` and ``posteriors`` are calibrated when the model dir holds a
``calibration.json``; the per-segment timeline posteriors are the model's own (the
calibration is fitted on whole utterances, not 1 s segments). ``identify(...,
langs=["en", "de", "fr"])`` (``--langs en,de,fr``) answers among those languages only, their
posteriors renormalised over them (:mod:`lre.languages`). The terminal output names each
language by code and English name; JSON keeps the codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lre.data.audio import resample as _resample
from lre.data.audio_stream import (
    MIN_SECONDS,
    ArrayStream,
    AudioStream,
    NotStreamable,
    array_to_mono,
)
from lre.inference.records import UNKNOWN, ResultRecord, Segment
from lre.languages import (
    add_answer_options,
    check_subset,
    labelled,
    parse_langs,
    subset_log_posteriors,
    subset_result,
)
from lre.utils import LreError, error_cause

# The feature pipeline (torch), the model dir and the inference core (scipy) are imported
# where they are used: ``lre identify --help`` and argument errors answer at once.
if TYPE_CHECKING:
    from lre.inference.chunks import UtteranceResult
    from lre.inference.model_dir import Calibrator
    from lre.inference.runner import ModelInput, ModelRunner
    from lre.openset import OpenSet
    from lre.segmentation.decoder import DecoderOptions

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph", ".aif", ".aiff",
                    ".aifc", ".au", ".w64", ".caf", ".rf64", ".nist"}
LIST_EXTENSIONS = {".scp", ".list", ".lst", ".txt"}
DEFAULT_CHUNK_SECONDS = 60.0


# ----------------------------------------------------------------------------------------
# The identifier
# ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One input through a model: its name, duration (s), raw result, warnings about the
    audio, and the frame index of the model input (which frames VAD kept)."""

    name: str
    duration: float
    result: UtteranceResult
    warnings: list[str]
    frame_index: np.ndarray


class Identifier:
    """Audio -> language posteriors, attention over segments and an optional timeline.

    Build it with :meth:`from_pretrained`. ``chunk_seconds`` bounds the audio decoded at once
    and the voiced speech per model input (None: whole files at once). With ``openset``
    (:class:`lre.openset.OpenSet`) the decision is "unknown" where it rejects every language.
    """

    def __init__(
        self,
        runner: ModelRunner,
        langs: list[str],
        feats_config: Any,
        calibrator: Calibrator | None = None,
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
        openset: OpenSet | None = None,
        decoder: DecoderOptions | None = None,
    ) -> None:
        if chunk_seconds is not None and chunk_seconds < 1.0:
            raise LreError(f"chunk_seconds: must be at least 1 s, got {chunk_seconds}")
        self.runner = runner
        self.langs = list(langs)
        self.feats_config = feats_config
        self.calibrator = calibrator
        self.chunk_seconds = chunk_seconds
        self.sample_rate = int(feats_config.sample_rate)
        self.openset = openset
        #: the language-turn decoder's settings (the model dir's ``segment.json``, else the
        #: built-in defaults)
        self.decoder = decoder

    @classmethod
    def from_pretrained(
        cls,
        exp_dir: str | os.PathLike,
        checkpoint: str = "final.pt",
        backend: str = "torch",
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
        device: str = "cpu",
        num_threads: int | None = None,
        unknown_threshold: float | None = None,
    ) -> Identifier:
        """Load a trained model from an experiment dir (as ``lre train`` writes it).

        Args:
            exp_dir: holds ``<checkpoint>``, ``feats_config.json`` and optionally
                ``calibration.json``, ``openset.json`` (when to answer "unknown",
                :mod:`lre.openset`) and ``model.onnx`` (from ``lre export``).
            backend: ``"torch"`` or ``"onnx"`` (onnxruntime; uses ``model.onnx`` when it
                was exported from the same checkpoint, else exports in memory).
            chunk_seconds: longest audio processed at once; None for whole files.
            device: torch device (torch backend).
            num_threads: CPU threads of the onnxruntime session (onnx backend).
            unknown_threshold: answer "unknown" when the top posterior is below this,
                instead of ``openset.json``.
        """
        from lre.features.reader import FEATS_CONFIG, load_feats_config
        from lre.inference.model_dir import Calibrator, load_trained_model
        from lre.openset import load_openset

        exp_dir = Path(exp_dir)
        from lre.fusion import is_fusion_dir
        from lre.segmentation.decoder import model_decoder_options

        if is_fusion_dir(exp_dir):
            return FusedIdentifier.from_fusion_dir(
                exp_dir, checkpoint=checkpoint, backend=backend, chunk_seconds=chunk_seconds,
                device=device, num_threads=num_threads, unknown_threshold=unknown_threshold)
        decoder = model_decoder_options(exp_dir)
        if backend == "torch":
            tm = load_trained_model(exp_dir, checkpoint, device=device)
            return cls(tm.runner, tm.langs, tm.feats_config, tm.calibrator, chunk_seconds,
                       load_openset(exp_dir, unknown_threshold), decoder)
        if backend == "onnx":
            from lre.export import load_onnx_runner
            from lre.inference.runner import with_other_class

            runner = with_other_class(load_onnx_runner(exp_dir, checkpoint,
                                                       num_threads=num_threads))
            cfg = load_feats_config(exp_dir / FEATS_CONFIG)
            if runner.feat_dim is not None and runner.feat_dim != cfg.feat_dim:
                raise LreError(f"{exp_dir / 'model.onnx'}: model expects feat_dim="
                               f"{runner.feat_dim} but {exp_dir / FEATS_CONFIG} gives "
                               f"{cfg.feat_dim}")
            openset = load_openset(exp_dir, unknown_threshold)
            if openset is not None and openset.needs_embedding and not runner.has_embedding:
                logger.warning("%s has no embedding output (exported before it had one): "
                               "the open-set method %s cannot run, so no answer is "
                               "'unknown'; run lre export again", exp_dir / "model.onnx",
                               openset.method)
                openset = None
            return cls(runner, runner.langs, cfg, Calibrator(exp_dir, runner.langs),
                       chunk_seconds, openset, decoder)
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
            # load_audio decodes are read whole; features are still made block by block.
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

    # -- the work ---------------------------------------------------------------------------

    def model_input(self, stream: Any) -> ModelInput:
        """Stage 1's features of the whole stream (made block by block), then the feature
        pipeline: exactly what ``lre score`` reads back from ``feats.scp``/``vad.scp``.

        A stream that ends before its header said is taken as far as it goes (the stream's
        ``num_samples`` and ``duration`` then say how far)."""
        from lre.features.pipeline import extract_blocks, num_frames, postprocess
        from lre.inference.runner import ModelInput

        cfg = self.feats_config
        if num_frames(cfg, stream.num_samples) == 0:
            raise LreError(f"{stream.name}: too short for one feature frame")
        block = self.chunk_seconds or stream.num_samples / self.sample_rate + 1.0
        try:
            feats, vad = extract_blocks(stream.read, stream.num_samples, cfg,
                                        block_seconds=block)
        except LreError as e:
            if str(e).startswith(stream.name):
                raise
            raise LreError(f"{stream.name}: {e}") from e
        if stream.ended_early and stream.duration < MIN_SECONDS:
            raise LreError(f"{stream.name}: too short: {stream.duration:.3f} s of audio "
                           f"decoded, its header says {stream.header_duration:.3f} s "
                           f"(minimum {MIN_SECONDS:g} s)")
        if len(feats) == 0:
            raise LreError(f"{stream.name}: too short for one feature frame")
        if not vad.any():
            raise LreError(f"{stream.name}: no speech found (VAD kept no frame)")
        x, index = postprocess(feats, vad, cfg)
        return ModelInput(stream.name, x, index)

    @staticmethod
    def stream_warnings(stream: Any) -> list[str]:
        """What the answer's record should say about its audio: a file that holds less than
        its header says (truncated) was identified on the part that is there."""
        if not stream.ended_early:
            return []
        said, held = stream.header_duration, stream.duration
        if stream.length_is_estimate:
            # MP3 without a Xing/Info frame: the header's length is only a guess.
            logger.debug("%s: %.2f s decoded, the header estimated %.2f s", stream.name,
                         held, said)
            return []
        return [f"truncated: the header says {said:.2f} s, the file holds {held:.2f} s "
                "(identified on those)"]

    def identify(
        self,
        audio: str | os.PathLike | np.ndarray | Any,
        sample_rate: int | None = None,
        timeline: bool = False,
        turns: DecoderOptions | bool = False,
        langs: Sequence[str] | None = None,
    ) -> ResultRecord:
        """Identify the language of a file (path or ``cmd |``) or an array of samples.

        Args:
            audio: path, or samples ``(samples,)`` / ``(samples, channels)`` (numpy or torch).
            sample_rate: rate of an array (default: the model's); ignored for paths.
            timeline: also give per-segment language posteriors.
            turns: also give the language turns (``record.turns``), decoded from the
                timeline with these options (True: the model's, :attr:`decoder`); implies
                ``timeline``.
            langs: only these of the model's languages (at least two): the posteriors,
                and those of the timeline, renormalised over them
                (:mod:`lre.languages`).

        Raises:
            LreError: unreadable audio, too short, or no speech found; a code of
                ``langs`` that the model does not know.
        """
        cfg = self.feats_config
        timeline = timeline or turns is not False
        subset = None if langs is None else check_subset(langs, self.langs)
        run = self.run(audio, sample_rate, timeline)
        record = self._record(run.name, run.duration, run.result, run.warnings, subset)
        if turns is not False:
            from lre.segmentation.decoder import record_turns, speech_from_index

            speech = speech_from_index(run.frame_index, cfg.frame_shift, cfg.frame_length)
            record.turns = record_turns(record, speech, self.decoder if turns is True
                                        else turns)
        return record

    def run(self, audio: Any, sample_rate: int | None = None, timeline: bool = False) -> Run:
        """The model's raw result on one input (before calibration and open set)."""
        from lre.inference.chunks import max_chunk_frames
        from lre.inference.runner import run_utterances

        cfg = self.feats_config
        stream = self._open(audio, sample_rate, chunked=self.chunk_seconds is not None)
        try:
            item = self.model_input(stream)
            max_chunk = (len(item.feats) if self.chunk_seconds is None
                         else max_chunk_frames(self.chunk_seconds, cfg.frame_shift))
            [(_, res)] = run_utterances(self.runner, [item], cfg.frame_shift, cfg.frame_length,
                                        max_chunk, batch_size=1, timeline=timeline)
            return Run(stream.name, stream.duration, res, self.stream_warnings(stream),
                       item.frame_index)
        finally:
            stream.close()

    def segment(
        self,
        audio: str | os.PathLike | np.ndarray | Any,
        sample_rate: int | None = None,
        options: DecoderOptions | None = None,
    ) -> ResultRecord:
        """Where each language is spoken: :meth:`identify` with the timeline and the
        language turns (``record.turns``: start, end, language, confidence), none over
        non-speech. ``options`` are the decoder's (default: the model's, :attr:`decoder`)."""
        return self.identify(audio, sample_rate, timeline=True,
                             turns=options if options is not None else True)

    def _record(self, source: str, duration: float, res: UtteranceResult,
                warnings: Sequence[str] = (), subset: list[str] | None = None) -> ResultRecord:
        log_post = res.log_posteriors
        calibrated = self.calibrator is not None and self.calibrator.active
        if calibrated:
            log_post = self.calibrator(log_post)[0]
        decision = None
        if self.openset is not None:  # over all the model's languages, like calibration
            from lre.openset import OpenSetInputs

            scores = self.openset.scores(OpenSetInputs.from_results([res], log_post[None]))
            decision = UNKNOWN if self.openset.unknown(scores)[0] else None
        langs = self.langs
        if subset is not None:  # after calibration, which is over all the model's languages
            log_post = subset_log_posteriors(log_post, langs, subset)
            res, langs = subset_result(res, langs, subset), subset
        return ResultRecord.from_result(source, langs, log_post, res, duration=duration,
                                        calibrated=calibrated, warnings=warnings,
                                        decision=decision)

    def identify_many(
        self, sources: Sequence[str], timeline: bool = False,
        langs: Sequence[str] | None = None,
    ) -> Iterator[tuple[str, ResultRecord | LreError]]:
        """Identify each source in turn; a source that fails yields its error, not a raise."""
        for src in sources:
            try:
                yield src, self.identify(src, timeline=timeline, langs=langs)
            except LreError as e:
                yield src, e
            except Exception as e:  # one bad file must not stop the others
                logger.debug("%s", src, exc_info=True)
                yield src, LreError(f"{src}: {type(e).__name__}: {error_cause(e)}")


class FusedIdentifier(Identifier):
    """The identifier of a fusion dir (:mod:`lre.fusion`): every subsystem's identifier
    runs on the same audio (each with its own features) and their raw results are fused;
    segments, attention and timeline are the first subsystem's. The open-set operating
    point is the fusion dir's own."""

    def __init__(self, fusion: dict[str, Any], subsystems: list[Identifier],
                 openset: OpenSet | None = None, decoder: DecoderOptions | None = None
                 ) -> None:
        from lre.fusion import AlreadyCalibrated

        lead = subsystems[0]
        super().__init__(lead.runner, list(fusion["langs"]), lead.feats_config,
                         AlreadyCalibrated(), lead.chunk_seconds, openset,  # type: ignore[arg-type]
                         decoder)
        self.fusion = fusion
        self.subsystems = subsystems

    @classmethod
    def from_fusion_dir(cls, fusion_dir: str | os.PathLike, unknown_threshold: float | None
                        = None, **options: Any) -> FusedIdentifier:
        """Each subsystem as :meth:`Identifier.from_pretrained` loads it (``options``), with
        no calibration or open set of its own: the fusion replaces both, and the fusion
        dir's decoder settings are used."""
        from lre.fusion import load_fusion, subsystem_dirs
        from lre.openset import load_openset
        from lre.segmentation.decoder import model_decoder_options

        fusion = load_fusion(fusion_dir)
        subsystems = []
        for d in subsystem_dirs(fusion_dir, fusion):
            ident = Identifier.from_pretrained(d, **options)
            ident.calibrator, ident.openset = None, None
            subsystems.append(ident)
        return cls(fusion, subsystems, load_openset(fusion_dir, unknown_threshold),
                   model_decoder_options(fusion_dir))

    def run(self, audio: Any, sample_rate: int | None = None, timeline: bool = False) -> Run:
        from lre.fusion import fuse_results, in_language_order

        runs = [s.run(audio, sample_rate, timeline) for s in self.subsystems]
        results = [in_language_order(r.result, s.langs, self.langs) for s, r in
                   zip(self.subsystems, runs, strict=True)]
        lead = runs[0]
        return Run(lead.name, lead.duration, fuse_results(self.fusion, results), lead.warnings,
                   lead.frame_index)


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
                errors.append(f"{arg}: cannot read list ({error_cause(e)})")
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


def attention_bar(segments: Sequence[Segment], width: int = 60) -> tuple[str, float]:
    """Attention weights as a bar of block characters, at most ``width`` wide.

    Returns the bar and the seconds each character covers (segments are binned by
    their start time when there are more than ``width``).
    """
    if not segments:
        return "", 0.0
    w = np.array([s.weight for s in segments])
    if len(w) > width:
        starts = np.array([s.start for s in segments])
        span = max(segments[-1].end, 1e-9)
        bins = np.minimum((starts / span * width).astype(int), width - 1)
        w = np.bincount(bins, weights=w, minlength=width)
        step = span / width
    elif len(segments) > 1:  # one character per segment: the mean spacing of their starts
        step = (segments[-1].start - segments[0].start) / (len(segments) - 1)
    else:
        step = segments[0].end - segments[0].start
    top = w.max() if w.max() > 0 else 1.0
    levels = np.ceil(w / top * (len(_BARS) - 1)).astype(int)
    return "".join(_BARS[i] for i in levels), step


def format_result(name: str, r: ResultRecord, timeline: bool = False, top_k: int = 5) -> str:
    """The terminal block of one result (languages as code and English name)."""
    duration = r.duration or 0.0
    answer = (f"{labelled(r.language)}  {r.probability:.3f}" if r.language != UNKNOWN
              else "unknown (none of the model's languages)")
    lines = [f"{name}  {duration:.2f} s  ->  {answer}"
             + ("" if r.calibrated else "  (uncalibrated)")
             + "".join(f"  warning: {w}" for w in r.warnings)]
    ranked = r.top_k(max(1, top_k))
    best = "  ".join(f"{labelled(lang)} {p:.3f}" for lang, p in ranked)
    lines.append(f"  top-{len(ranked)}: {best}")
    if r.segments:
        bar, step = attention_bar(r.segments)
        peak = max(r.segments, key=lambda s: s.weight)
        lines.append(f"  attention |{bar}| {len(r.segments)} segments, {step:.1f} s/char, "
                     f"peak {peak.weight:.3f} at {peak.start:.2f}-{peak.end:.2f} s")
    if timeline:
        for seg in r.segments:
            if seg.posteriors is None:
                continue
            best2 = sorted(seg.posteriors.items(), key=lambda kv: -kv[1])[:2]
            lines.append(f"    {seg.start:8.2f}-{seg.end:<8.2f} "
                         + "  ".join(f"{lang} {p:.2f}" for lang, p in best2))
    if r.turns is not None:
        from lre.segment import turns_table

        lines.append(f"  turns ({len(r.turns)}):")
        lines += ["    " + row for row in turns_table(r.turns).splitlines()]
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
    parser.add_argument("--segments", action="store_true",
                        help="add the language turns (lre segment's decoder with the model's "
                             "settings, segment.json, else its defaults)")
    add_answer_options(parser)
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                        help="longer files are processed in chunks of this many seconds "
                             "(constant memory); 0: whole files")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    # SUPPRESS: given here or before the command, -v means the same (no default overrides).
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress to stderr (default: warnings and errors only)")


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
    segments: bool = False,
    langs: Sequence[str] | str | None = None,
    unknown_threshold: float | None = None,
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
                                       num_threads=num_threads,
                                       unknown_threshold=unknown_threshold)
    # Checked once, before any file: a code the model does not know is the one error.
    subset = None if langs is None else check_subset(parse_langs(langs) or [], ident.langs)
    sources, errors = expand_inputs(inputs)
    for e in errors:
        print(f"lre identify: {e}", file=err)
    failed = len(errors)
    for src in sources:
        try:
            res = ident.identify(src.spec, timeline=timeline, turns=segments, langs=subset)
        except Exception as e:  # report, keep going with the others
            if not isinstance(e, LreError):
                logger.debug("%s", src.spec, exc_info=True)
                e = LreError(f"{src.spec}: {type(e).__name__}: {error_cause(e)}")
            msg = str(e) if str(e).startswith(src.spec) else f"{src.spec}: {e}"
            if src.name != src.spec:
                msg = f"{src.name}: {msg}"
            print(f"lre identify: {msg}", file=err)
            failed += 1
            continue
        res.id, res.source = src.name, src.spec
        if as_json:
            print(json.dumps(res.to_dict(), ensure_ascii=False), file=out)
        else:
            print(_printable(format_result(src.name, res, timeline, top_k)), file=out)
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
        segments=args.segments,
        langs=args.langs,
        unknown_threshold=args.unknown_threshold,
    )
