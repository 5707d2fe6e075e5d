"""Kaldi data directories: read, write, validate, fix, split, combine and subset.

A data dir holds one entry per line, ``key value...``, sorted by key in C byte order
(``LC_ALL=C sort``) with unique keys:

    wav.scp         utt path | utt cmd args |      (keyed by recording when ``segments`` exists)
    segments        utt reco start end             (seconds; end -1 = to the end of the recording)
    utt2lang        utt lang
    utt2spk         utt spk
    spk2utt         spk utt1 utt2 ...              (derived from utt2spk)
    lang2utt        lang utt1 utt2 ...             (derived from utt2lang)
    utt2dur         utt seconds
    feats.scp, vad.scp, utt2num_frames             (written by the feature stage)

The tables are read and written by ``lre.data.tables``; this module checks how they fit
together, and reads an utterance's audio through ``lre.data.audio`` (``load_utterance``,
``iter_audio``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lre.data.audio import (
    MAX_OVERSHOOT,
    AudioError,
    is_pipe,
    load_audio,
    read_recording,
    recording_segment,
)
from lre.data.tables import (
    c_sort_key,
    c_sorted,
    format_number,
    iter_table,
    parse_ark_offset,
    read_table,
    read_table_lines,
    table_text,
    write_table,
    write_text,
)
from lre.utils import LreError, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

# Files keyed by utterance that the DataDir object carries besides utt2lang/utt2spk.
UTT_FEATURE_FILES = ("feats.scp", "vad.scp", "utt2num_frames")
REQUIRED_FILES = ("wav.scp", "utt2lang", "utt2spk")


class Segment(NamedTuple):
    """One ``segments`` line: the utterance is ``reco`` from ``start`` to ``end`` seconds.

    ``end`` is ``-1.0`` (Kaldi's convention) when the segment runs to the end of the recording.
    """

    reco: str
    start: float
    end: float


def parse_segment(value: str) -> Segment:
    """Parse the value part of a ``segments`` line: ``reco start end``."""
    fields = value.split()
    if len(fields) != 3:
        raise ValueError(f"expected 'utt reco start end', got {len(fields) + 1} fields")
    try:
        start, end = float(fields[1]), float(fields[2])
    except ValueError:
        raise ValueError(f"start/end are not numbers: {fields[1]!r} {fields[2]!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError("start/end must be finite numbers")
    return Segment(fields[0], start, end)


def read_segments(path: PathLike) -> dict[str, Segment]:
    """Read a Kaldi ``segments`` file into ``{utt: Segment(reco, start, end)}``."""
    out: dict[str, Segment] = {}
    for lineno, utt, value in iter_table(path):
        try:
            out[utt] = parse_segment(value)
        except ValueError as e:
            raise LreError(f"{path}:{lineno}: segment '{utt}': {e}") from None
    return out


def write_segments(path: PathLike, segments: Mapping[str, Segment]) -> None:
    """Write ``{utt: Segment}`` as a Kaldi ``segments`` file (sorted, atomic)."""
    write_table(path, {u: (s.reco, float(s.start), float(s.end)) for u, s in segments.items()})


def read_float_map(path: PathLike) -> dict[str, float]:
    """Read ``key number`` lines (utt2dur, reco2dur) into floats."""
    out = {}
    for lineno, key, value in iter_table(path):
        try:
            out[key] = float(value)
        except ValueError:
            raise LreError(f"{path}:{lineno}: '{key}': not a number: {value!r}") from None
    return out


def read_int_map(path: PathLike) -> dict[str, int]:
    """Read ``key integer`` lines (utt2num_frames)."""
    out = {}
    for lineno, key, value in iter_table(path):
        try:
            out[key] = int(value)
        except ValueError:
            raise LreError(f"{path}:{lineno}: '{key}': not an integer: {value!r}") from None
    return out


def invert(mapping: Mapping[str, str]) -> dict[str, list[str]]:
    """``utt2spk`` -> ``spk2utt``: each value to its keys in C order."""
    out: dict[str, list[str]] = {}
    for key in c_sorted(mapping):
        out.setdefault(mapping[key], []).append(key)
    return out


class DataDir:
    """A Kaldi data directory held in memory.

    ``wav_scp`` maps recording ids (when ``segments`` is set) or utterance ids to a path
    or ``cmd |`` pipe. ``utts`` is the sorted list of utterance ids.
    """

    def __init__(
        self,
        path: PathLike,
        wav_scp: Mapping[str, str] | None = None,
        utt2lang: Mapping[str, str] | None = None,
        utt2spk: Mapping[str, str] | None = None,
        segments: Mapping[str, Segment] | None = None,
        utt2dur: Mapping[str, float] | None = None,
        feats_scp: Mapping[str, str] | None = None,
        vad_scp: Mapping[str, str] | None = None,
        utt2num_frames: Mapping[str, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.wav_scp: dict[str, str] = dict(wav_scp or {})
        self.utt2lang: dict[str, str] = dict(utt2lang or {})
        self.utt2spk: dict[str, str] = dict(utt2spk or {})
        self.segments: dict[str, Segment] | None = (
            None if segments is None else {u: Segment(*s) for u, s in segments.items()}
        )
        self.utt2dur: dict[str, float] | None = None if utt2dur is None else dict(utt2dur)
        self.feats_scp: dict[str, str] | None = None if feats_scp is None else dict(feats_scp)
        self.vad_scp: dict[str, str] | None = None if vad_scp is None else dict(vad_scp)
        self.utt2num_frames: dict[str, int] | None = (
            None if utt2num_frames is None else dict(utt2num_frames)
        )

    # ----------------------------------------------------------------- reading
    @classmethod
    def load(cls, path: PathLike) -> DataDir:
        """Read a data dir; raises ``LreError`` when required files are missing or disagree.

        Required: ``wav.scp``, ``utt2lang``, ``utt2spk``. Optional: ``segments``,
        ``utt2dur``, ``feats.scp``, ``vad.scp``, ``utt2num_frames``.
        """
        path = Path(path)
        if not path.is_dir():
            raise LreError(f"{path}: not a directory")
        for name in REQUIRED_FILES:
            if not (path / name).is_file():
                raise LreError(f"{path}: {name} is missing (a data dir needs wav.scp, utt2lang, "
                               "utt2spk)")

        def optional(name, reader):
            return reader(path / name) if (path / name).is_file() else None

        dd = cls(
            path,
            wav_scp=read_table(path / "wav.scp"),
            utt2lang=read_table(path / "utt2lang"),
            utt2spk=read_table(path / "utt2spk"),
            segments=optional("segments", read_segments),
            utt2dur=optional("utt2dur", read_float_map),
            feats_scp=optional("feats.scp", read_table),
            vad_scp=optional("vad.scp", read_table),
            utt2num_frames=optional("utt2num_frames", read_int_map),
        )
        dd.check()
        return dd

    def check(self) -> None:
        """Raise ``LreError`` when the utterance-keyed maps disagree (first difference named)."""
        utts = set(self.utts)
        for name, mapping in (("utt2lang", self.utt2lang), ("utt2spk", self.utt2spk)):
            _check_same_keys(self.path, name, mapping, utts, self._utt_source())
        if self.segments is not None:
            missing = [u for u, s in self.segments.items() if s.reco not in self.wav_scp]
            if missing:
                reco = self.segments[c_sorted(missing)[0]].reco
                raise LreError(
                    f"{self.path}: {len(missing)} segments refer to recordings not in wav.scp "
                    f"(e.g. '{reco}'); run `lre validate {self.path}` / `lre fix {self.path}`"
                )
        if self.utt2dur is not None:
            _check_same_keys(self.path, "utt2dur", self.utt2dur, utts, self._utt_source())
        # Feature files describe the same utterances as each other (the feature stage may
        # have skipped a few that failed; `lre fix` drops those from the dir).
        if self.feats_scp is not None:
            feat_utts = set(self.feats_scp)
            extra = feat_utts - utts
            if extra:
                raise LreError(
                    f"{self.path}: feats.scp has {len(extra)} utterances not in the data dir "
                    f"(e.g. '{c_sorted(extra)[0]}'); run `lre fix {self.path}`"
                )
            for name in ("vad_scp", "utt2num_frames"):
                mapping = getattr(self, name)
                if mapping is not None:
                    fname = "vad.scp" if name == "vad_scp" else name
                    _check_same_keys(self.path, fname, mapping, feat_utts, "feats.scp")

    def _utt_source(self) -> str:
        return "segments" if self.segments is not None else "wav.scp"

    @property
    def utts(self) -> list[str]:
        """Utterance ids in C byte order (from ``segments`` when present, else ``wav.scp``)."""
        return c_sorted(self.segments if self.segments is not None else self.wav_scp)

    @property
    def langs(self) -> list[str]:
        """The distinct language labels in C byte order."""
        return c_sorted(set(self.utt2lang.values()))

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        return invert(self.utt2spk)

    @property
    def lang2utt(self) -> dict[str, list[str]]:
        return invert(self.utt2lang)

    def __len__(self) -> int:
        return len(self.utts)

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r}, {len(self)} utterances, {len(self.langs)} languages)"

    def audio_spec(self, utt: str) -> tuple[str, float, float | None]:
        """``(wav.scp value, start seconds, end seconds or None for 'to the end')`` of ``utt``."""
        if self.segments is not None:
            seg = self.segments.get(utt)
            if seg is None:
                raise LreError(f"{utt}: not in {self.path / 'segments'}")
            spec = self.wav_scp.get(seg.reco)
            if spec is None:
                raise LreError(f"{utt}: recording '{seg.reco}' not in {self.path / 'wav.scp'}")
            return spec, seg.start, (None if seg.end < 0 else seg.end)
        spec = self.wav_scp.get(utt)
        if spec is None:
            raise LreError(f"{utt}: not in {self.path / 'wav.scp'}")
        return spec, 0.0, None

    def recordings_of(self, utts: Iterable[str]) -> set[str]:
        """The wav.scp keys the given utterances need."""
        if self.segments is None:
            return set(utts)
        return {self.segments[u].reco for u in utts}

    # ----------------------------------------------------------------- writing
    def subset(self, utts: Iterable[str], path: PathLike | None = None) -> DataDir:
        """A new DataDir (at ``path``, default this one's) holding only ``utts``."""
        keep = set(utts)
        unknown = keep - set(self.utts)
        if unknown:
            raise LreError(
                f"{self.path}: {len(unknown)} requested utterances are not in the data dir "
                f"(e.g. {', '.join(c_sorted(unknown)[:3])})"
            )

        def pick(mapping):
            return None if mapping is None else {k: v for k, v in mapping.items() if k in keep}

        recos = self.recordings_of(keep)
        return DataDir(
            self.path if path is None else path,
            wav_scp={k: v for k, v in self.wav_scp.items() if k in recos},
            utt2lang=pick(self.utt2lang),
            utt2spk=pick(self.utt2spk),
            segments=pick(self.segments),
            utt2dur=pick(self.utt2dur),
            feats_scp=pick(self.feats_scp),
            vad_scp=pick(self.vad_scp),
            utt2num_frames=pick(self.utt2num_frames),
        )

    def write(self, path: PathLike | None = None) -> Path:
        """Write every file (incl. ``spk2utt`` and ``lang2utt``) sorted and atomically.

        Optional per-utterance files this object does not carry (``segments``, ``utt2dur``,
        feature files) are removed from the target dir so that no stale file disagrees
        with the new ones. Returns the directory written.
        """
        out = Path(self.path if path is None else path)
        out.mkdir(parents=True, exist_ok=True)
        write_table(out / "wav.scp", self.wav_scp)
        write_table(out / "utt2lang", self.utt2lang)
        write_table(out / "utt2spk", self.utt2spk)
        write_table(out / "spk2utt", self.spk2utt)
        write_table(out / "lang2utt", self.lang2utt)
        optional: dict[str, Mapping | None] = {
            "segments": self.segments,
            "utt2dur": self.utt2dur,
            "feats.scp": self.feats_scp,
            "vad.scp": self.vad_scp,
            "utt2num_frames": self.utt2num_frames,
        }
        for name, mapping in optional.items():
            if mapping is None:
                stale = out / name
                if stale.is_file():
                    stale.unlink()
            elif name == "segments":
                write_segments(out / name, mapping)
            else:
                write_table(out / name, mapping)
        return out


def _check_same_keys(
    path: Path, name: str, mapping: Mapping[str, object], utts: set[str], source: str
) -> None:
    keys = set(mapping)
    missing, extra = utts - keys, keys - utts
    if missing:
        raise LreError(
            f"{path}: {len(missing)} utterances in {source} have no entry in {name} "
            f"(e.g. '{c_sorted(missing)[0]}'); run `lre validate {path}` / `lre fix {path}`"
        )
    if extra:
        raise LreError(
            f"{path}: {name} has {len(extra)} utterances not in {source} "
            f"(e.g. '{c_sorted(extra)[0]}'); run `lre validate {path}` / `lre fix {path}`"
        )


# --------------------------------------------------------------------------- audio

def load_utterance(
    datadir: DataDir, utt: str, sample_rate: int = 16000, min_seconds: float = 0.1
) -> np.ndarray:
    """One utterance of a data dir as mono float32 (samples,), honouring ``segments``."""
    spec, start, end = datadir.audio_spec(utt)
    return load_audio(spec, sample_rate, start, end, name=utt, min_seconds=min_seconds)


def iter_audio(
    datadir: DataDir,
    sample_rate: int = 16000,
    utts: Iterable[str] | None = None,
    min_seconds: float = 0.1,
) -> Iterator[tuple[str, np.ndarray | AudioError]]:
    """Yield ``(utt, samples (samples,))`` for each utterance, or ``(utt, AudioError)``.

    Never raises for a bad utterance: the error is yielded, logged as a warning, and the
    iteration carries on; a summary of the failures is logged at the end. Consecutive
    segments of the same pipe recording run the command once.
    """
    utts = datadir.utts if utts is None else list(utts)
    cache: tuple[str, np.ndarray, int] | None = None  # last decoded pipe recording
    failed: list[str] = []
    for utt in utts:
        try:
            spec, start, end = datadir.audio_spec(utt)
            if datadir.segments is not None and is_pipe(spec):
                if cache is None or cache[0] != spec:
                    cache = None
                    cache = (spec, *read_recording(spec, utt))
                wave = recording_segment(cache[1], cache[2], start, end, sample_rate, utt,
                                         min_seconds)
            else:
                wave = load_audio(spec, sample_rate, start, end, name=utt, min_seconds=min_seconds)
        except LreError as e:
            err = e if isinstance(e, AudioError) else AudioError(str(e))
            logger.warning("skipping %s", err)
            failed.append(utt)
            yield utt, err
            continue
        yield utt, wave
    if failed:
        logger.warning(
            "%d of %d utterances could not be loaded: %s%s",
            len(failed),
            len(utts),
            " ".join(failed[:10]),
            " ..." if len(failed) > 10 else "",
        )


# --------------------------------------------------------------------------- validate

class Problem(NamedTuple):
    """One problem in a data dir; ``str()`` gives ``file:line: message`` (line may be None)."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class _Line(NamedTuple):
    lineno: int
    key: str
    value: str


class _Scan:
    """A leniently read Kaldi file: every line with a key, and what was wrong with the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self.lines: list[_Line] = []  # lines with a key and a valid value, in file order
        self.first: dict[str, _Line] = {}  # first valid line per key
        self.invalid: dict[str, tuple[int, str]] = {}  # key -> (line, what is wrong)
        self.conflicts: dict[str, int] = {}  # key -> line of a repeat with another value
        self.duplicates = 0  # repeated lines with the same value (harmless copies)

    @functools.cached_property
    def keys(self) -> set[str]:
        """Every key the file mentions, valid or not (read only after the scan is complete)."""
        return set(self.first) | set(self.invalid)

    def line_of(self, key: str) -> int | None:
        if key in self.first:
            return self.first[key].lineno
        if key in self.invalid:
            return self.invalid[key][0]
        return None


def _check_one_token(value: str) -> str | None:
    n = len(value.split())
    return None if n == 1 else f"expected one value after the id, got {n}"


def _check_positive_number(value: str) -> str | None:
    try:
        x = float(value)
    except ValueError:
        return f"not a number: {value!r}"
    return None if math.isfinite(x) and x > 0 else f"expected a positive duration, got {value}"


def _check_positive_int(value: str) -> str | None:
    try:
        x = int(value)
    except ValueError:
        return f"not an integer: {value!r}"
    return None if x > 0 else f"expected a positive frame count, got {value}"


def _check_segment(value: str) -> str | None:
    try:
        seg = parse_segment(value)
    except ValueError as e:
        return str(e)
    if seg.start < 0:
        return f"segment start {format_number(seg.start)} s is negative"
    if seg.end != -1 and seg.end <= seg.start:
        return (f"segment end {format_number(seg.end)} s is not after its start "
                f"{format_number(seg.start)} s")
    return None


# Known files and the check each line's value must pass (None: any non-empty value).
FILE_CHECKS = {
    "wav.scp": None,
    "segments": _check_segment,
    "utt2lang": _check_one_token,
    "utt2spk": _check_one_token,
    "spk2utt": None,
    "lang2utt": None,
    "utt2dur": _check_positive_number,
    "reco2dur": _check_positive_number,
    "feats.scp": None,
    "vad.scp": None,
    "utt2num_frames": _check_positive_int,
}

# Segment ends may overshoot the recording by this much before validate complains
# (rounding of times written with 2 decimals); fix clips overshoots up to the loader's limit.
SEGMENT_TOLERANCE = 0.02
# utt2dur may disagree with segment end - start by this much.
DURATION_TOLERANCE = 0.01


def _scan(path: Path, check, problems: list[Problem]) -> _Scan:
    """Read ``path`` line by line, recording every problem in ``problems``."""
    scan = _Scan(path)
    file = str(path)
    prev_key: bytes | None = None
    prev_text = ""
    unsorted: list[tuple[int, str, str]] = []
    raw_lines = read_table_lines(path)
    if not any(raw.text.strip() for raw in raw_lines):
        problems.append(Problem(file, None, "file is empty"))
        return scan
    for lineno, line, form_problems in raw_lines:
        problems.extend(Problem(file, lineno, message) for message in form_problems)
        if not line.strip():
            problems.append(Problem(file, lineno, "empty line"))
            continue
        if line[0].isspace():
            problems.append(Problem(file, lineno, "line starts with whitespace"))
        parts = line.strip().split(maxsplit=1)
        key = parts[0]
        key_bytes = c_sort_key(key)
        if prev_key is not None and key_bytes < prev_key:
            unsorted.append((lineno, key, prev_text))
        prev_key, prev_text = key_bytes, key
        if len(parts) < 2:
            problems.append(Problem(file, lineno, f"malformed line: '{key}' has no value"))
            scan.invalid.setdefault(key, (lineno, "malformed line (no value)"))
            continue
        value = parts[1].strip()
        if key in scan.first or key in scan.invalid:
            first = scan.line_of(key)
            same = key in scan.first and scan.first[key].value == value
            problems.append(Problem(
                file, lineno,
                f"duplicate id '{key}' (first on line {first})"
                + ("" if same else " with a different value"),
            ))
            if same:
                scan.duplicates += 1
            else:
                scan.conflicts.setdefault(key, lineno)
            continue
        error = check(value) if check is not None else None
        if error is not None:
            problems.append(Problem(file, lineno, error))
            scan.invalid[key] = (lineno, error)
            continue
        entry = _Line(lineno, key, value)
        scan.lines.append(entry)
        scan.first[key] = entry
    if unsorted:
        lineno, key, prev = unsorted[0]
        more = f" ({len(unsorted)} lines out of order)" if len(unsorted) > 1 else ""
        problems.append(Problem(
            file, lineno,
            f"not sorted in C byte order (LC_ALL=C sort): '{key}' comes after '{prev}'{more}",
        ))
    return scan


def _scan_dir(path: Path, problems: list[Problem]) -> dict[str, _Scan]:
    scans = {}
    for name, check in FILE_CHECKS.items():
        if (path / name).is_file():
            scans[name] = _scan(path / name, check, problems)
    return scans


def _utt_files(scans: Mapping[str, _Scan]) -> list[str]:
    """The utterance-keyed files that must all list the same utterances, present ones only."""
    source = "segments" if "segments" in scans else "wav.scp"
    names = [source, "utt2lang", "utt2spk", "utt2dur", "feats.scp"]
    return [n for n in names if n in scans]


def _read_feats_failed(path: Path) -> dict[str, str]:
    """``feats_failed`` (utt + reason, written by the feature stage), when present."""
    if not (path / "feats_failed").is_file():
        return {}
    lines = iter_table(path / "feats_failed", require_value=False, unique=False)
    return {line.key: line.value or "failed" for line in lines}


def _audio_status(spec: str) -> str | None:
    """Why a plain-path wav.scp value cannot be read (None: exists, or a pipe)."""
    if is_pipe(spec):
        return None
    path = Path(spec)
    if not path.exists():
        ark = parse_ark_offset(spec)
        if ark is not None and Path(ark.ark).is_file():
            return None
        return f"audio file does not exist: {spec}"
    if path.is_file() and path.stat().st_size == 0:
        return f"audio file is empty: {spec}"
    return None


def _recording_durations(
    path: Path, scans: Mapping[str, _Scan], check_audio: bool
) -> dict[str, float]:
    """Duration in seconds of each recording segments refer to, where it can be known cheaply."""
    out: dict[str, float] = {}
    if "reco2dur" in scans:
        out.update({k: float(v.value) for k, v in scans["reco2dur"].first.items()})
    if not check_audio or "segments" not in scans or "wav.scp" not in scans:
        return out
    import soundfile as sf

    used = {line.value.split()[0] for line in scans["segments"].first.values()}
    for reco in used - set(out):
        entry = scans["wav.scp"].first.get(reco)
        if entry is None or is_pipe(entry.value) or not Path(entry.value).is_file():
            continue
        try:
            info = sf.info(entry.value)
        except Exception:  # not audio: the loader reports it with the utterance's name
            continue
        if info.frames > 0:
            out[reco] = info.frames / info.samplerate
    return out


def validate(path: PathLike, check_audio: bool = True) -> list[Problem]:
    """Every problem of the data dir at ``path``, each with its file and line.

    Checks: required files present, lines well formed, keys sorted in C byte order and
    unique, the same utterances in every utterance-keyed file, recordings of ``segments``
    in ``wav.scp``, plain audio paths exist and are not empty (``check_audio``), segment
    bounds (and against the recording's duration when known), ``utt2dur`` against
    segments, ``spk2utt``/``lang2utt`` against ``utt2spk``/``utt2lang``, and
    ``feats.scp``/``vad.scp``/``utt2num_frames`` against each other.
    Returns an empty list for a valid dir.
    """
    d = Path(path)
    if not d.is_dir():
        return [Problem(str(d), None, "not a directory")]
    problems: list[Problem] = []
    scans = _scan_dir(d, problems)
    for name in REQUIRED_FILES:
        if name not in scans:
            problems.append(Problem(str(d / name), None, "required file is missing"))
    _check_utterances(d, scans, problems)
    _check_recordings(d, scans, problems, check_audio)
    for inverse, forward, what in (("spk2utt", "utt2spk", "speaker"),
                                   ("lang2utt", "utt2lang", "language")):
        if inverse in scans and forward in scans:
            _check_inverse(scans[inverse], scans[forward], what, problems)
    _check_features(d, scans, problems)
    order = {name: i for i, name in enumerate(FILE_CHECKS)}
    problems.sort(key=lambda p: (order.get(Path(p.file).name, len(order)), p.file, p.line or 0))
    return problems


def _check_utterances(d: Path, scans: Mapping[str, _Scan], problems: list[Problem]) -> None:
    names = _utt_files(scans)
    failed = _read_feats_failed(d) if "feats.scp" in scans else {}
    seen: set[str] = set()
    for name in names:
        for utt in c_sorted(scans[name].keys - seen):
            seen.add(utt)
            for other in names:
                if utt in scans[other].keys:
                    continue
                message = f"utterance '{utt}' has no entry in {other}"
                if other == "feats.scp" and utt in failed:
                    message += f" (feature extraction failed: {failed[utt]})"
                problems.append(Problem(str(scans[name].path), scans[name].line_of(utt), message))


def _check_recordings(
    d: Path, scans: Mapping[str, _Scan], problems: list[Problem], check_audio: bool
) -> None:
    wav = scans.get("wav.scp")
    if wav is None:
        return
    if check_audio:
        for entry in wav.lines:
            if wav.first.get(entry.key) is entry:
                status = _audio_status(entry.value)
                if status:
                    problems.append(Problem(str(wav.path), entry.lineno, status))
    seg = scans.get("segments")
    if seg is None:
        return
    durations = _recording_durations(d, scans, check_audio)
    utt2dur = scans.get("utt2dur")
    for entry in seg.lines:
        if seg.first.get(entry.key) is not entry:
            continue
        s = parse_segment(entry.value)
        if s.reco not in wav.keys:
            problems.append(Problem(str(seg.path), entry.lineno,
                                    f"recording '{s.reco}' has no entry in wav.scp"))
        total = durations.get(s.reco)
        if total is not None and s.end > total + SEGMENT_TOLERANCE:
            problems.append(Problem(
                str(seg.path), entry.lineno,
                f"segment end {format_number(s.end)} s is beyond the end of recording "
                f"'{s.reco}' ({total:.3f} s)",
            ))
        if total is not None and s.start >= total:
            problems.append(Problem(
                str(seg.path), entry.lineno,
                f"segment start {format_number(s.start)} s is beyond the end of recording "
                f"'{s.reco}' ({total:.3f} s)",
            ))
        expected = (s.end if s.end >= 0 else total or 0.0) - s.start
        dur_line = utt2dur.first.get(entry.key) if utt2dur is not None else None
        if dur_line is not None and (s.end >= 0 or total is not None):
            if abs(float(dur_line.value) - expected) > DURATION_TOLERANCE:
                problems.append(Problem(
                    str(utt2dur.path), dur_line.lineno,
                    f"duration {dur_line.value} s of '{entry.key}' disagrees with its segment "
                    f"({format_number(expected)} s)",
                ))


def _check_inverse(inverse: _Scan, forward: _Scan, what: str, problems: list[Problem]) -> None:
    expected = invert({k: line.value for k, line in forward.first.items()})
    for label, line in inverse.first.items():
        listed = line.value.split()
        want = expected.get(label)
        if want is None:
            problems.append(Problem(str(inverse.path), line.lineno,
                                    f"{what} '{label}' has no utterances in {forward.name}"))
        elif set(listed) != set(want):
            missing = c_sorted(set(want) - set(listed))
            extra = c_sorted(set(listed) - set(want))
            detail = []
            if missing:
                detail.append(f"missing {len(missing)} (e.g. '{missing[0]}')")
            if extra:
                detail.append(f"{len(extra)} not of this {what} (e.g. '{extra[0]}')")
            problems.append(Problem(
                str(inverse.path), line.lineno,
                f"{what} '{label}' disagrees with {forward.name}: {', '.join(detail)}",
            ))
        elif listed != want:
            problems.append(Problem(str(inverse.path), line.lineno,
                                    f"utterances of {what} '{label}' are not sorted or repeated"))
    for label in c_sorted(set(expected) - inverse.keys):
        first_utt = expected[label][0]
        problems.append(Problem(str(forward.path), forward.line_of(first_utt),
                                f"{what} '{label}' has no entry in {inverse.name}"))


def _states_on_read(d: Path) -> bool:
    """The feature stage stored only the VAD: encoder states are computed when read."""
    from lre.features.reader import FEATS_CONFIG, load_feats_config

    if not (d / FEATS_CONFIG).is_file():
        return False
    try:
        return load_feats_config(d / FEATS_CONFIG).states_on_read
    except LreError:
        return False  # an unreadable config is not this check's problem


def _check_features(d: Path, scans: Mapping[str, _Scan], problems: list[Problem]) -> None:
    feats = scans.get("feats.scp")
    if feats is None and _states_on_read(d):
        feats = scans.get("vad.scp")  # the utterances that have features
    for name in ("vad.scp", "utt2num_frames"):
        other = scans.get(name)
        if other is None or other is feats:
            continue
        if feats is None:
            problems.append(Problem(str(other.path), None, "present without feats.scp"))
            continue
        for utt in c_sorted(feats.keys - other.keys):
            problems.append(Problem(str(feats.path), feats.line_of(utt),
                                    f"utterance '{utt}' has no entry in {name}"))
        for utt in c_sorted(other.keys - feats.keys):
            problems.append(Problem(str(other.path), other.line_of(utt),
                                    f"utterance '{utt}' has no entry in {feats.path.name}"))
    for name in ("feats.scp", "vad.scp"):
        scan = scans.get(name)
        if scan is None:
            continue
        missing: dict[str, list[int]] = {}
        for entry in scan.first.values():
            spec = parse_ark_offset(entry.value)
            ark = spec.ark if spec is not None else entry.value
            if not Path(ark).exists():
                missing.setdefault(ark, []).append(entry.lineno)
        for ark, lines in missing.items():
            problems.append(Problem(str(scan.path), lines[0],
                                    f"archive does not exist: {ark} ({len(lines)} entries)"))


# --------------------------------------------------------------------------- fix

@dataclass
class FixReport:
    """What ``fix`` did: ``kept`` of ``total`` utterances; ``dropped`` utt -> reason."""

    path: Path
    total: int
    kept: int
    dropped: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    backup: Path | None = None

    def reasons(self) -> dict[str, list[str]]:
        """Dropped utterances grouped by reason, largest group first."""
        groups: dict[str, list[str]] = {}
        for utt in c_sorted(self.dropped):
            groups.setdefault(self.dropped[utt], []).append(utt)
        return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))

    def summary(self, max_ids: int = 5) -> str:
        lines = [f"{self.path}: kept {self.kept} of {self.total} utterances"]
        for reason, utts in self.reasons().items():
            shown = ", ".join(utts[:max_ids]) + (", ..." if len(utts) > max_ids else "")
            lines.append(f"  dropped {len(utts)}: {reason} ({shown})")
        lines += [f"  {note}" for note in self.notes]
        if self.rewritten:
            lines.append(f"  rewrote {', '.join(self.rewritten)}")
        else:
            lines.append("  nothing to change")
        if self.backup is not None:
            lines.append(f"  originals backed up to {self.backup}"
                         + (f" (dropped utterances listed in {self.backup / 'dropped'})"
                            if self.dropped else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def fix(path: PathLike, check_audio: bool = True) -> FixReport:
    """Make the data dir at ``path`` valid by keeping the consistent intersection.

    Keeps the utterances that have a valid entry in every utterance-keyed file (and,
    with ``check_audio``, an existing non-empty audio file for plain paths), re-sorts
    every file, removes repeated lines, rewrites ``spk2utt``/``lang2utt``, filters other
    ``utt2*``/``spk2*``/``reco2*`` files and ``text``. The originals go to
    ``DIR/.backup/<time>/`` together with ``dropped`` (utt, reason, detail). A missing
    ``utt2spk`` is created with each utterance as its own speaker (Kaldi's convention).
    """
    d = Path(path)
    if not d.is_dir():
        raise LreError(f"{d}: not a directory")
    for name in ("wav.scp", "utt2lang"):
        if not (d / name).is_file():
            raise LreError(f"{d / name}: missing; a data dir cannot be repaired without it")
    scans = _scan_dir(d, [])
    notes: list[str] = []
    if "utt2spk" not in scans:
        notes.append("utt2spk was missing: each utterance is now its own speaker")
    names = _utt_files(scans) + [n for n in ("vad.scp", "utt2num_frames") if n in scans]
    universe: set[str] = set()
    for name in names:
        universe |= scans[name].keys
    reasons = _inconsistent_utterances(d, scans, names, universe)
    bad_audio = _bad_recordings(scans["wav.scp"], check_audio)
    segments: dict[str, Segment] = {}
    if "segments" in scans:
        segments = _checked_segments(d, scans, bad_audio, reasons, notes, check_audio)
    else:
        for utt, why in bad_audio.items():
            if utt in universe:
                reasons.setdefault(utt, why)
    kept = set(universe) - set(reasons)
    if not kept:
        report = FixReport(d, len(universe), 0, {u: r for u, (r, _) in reasons.items()})
        raise LreError(f"{d}: no utterance is consistent across the files; nothing changed\n"
                       + report.summary())

    texts = _fixed_texts(d, scans, kept, segments, notes)
    duplicates = sum(scans[n].duplicates for n in scans)
    if duplicates:
        notes.append(f"removed {duplicates} repeated line(s)")
    changed = [name for name, text in texts.items()
               if not (d / name).is_file() or (d / name).read_bytes() != text.encode("utf-8")]
    report = FixReport(
        d, len(universe), len(kept),
        dropped={u: r for u, (r, _) in reasons.items()},
        details={u: det for u, (_, det) in reasons.items()},
        rewritten=changed, notes=notes,
    )
    if changed:
        report.backup = _backup(d, [n for n in changed if (d / n).is_file()], report)
        for name in changed:
            write_text(d / name, texts[name])
    logger.debug("%s", report.summary())
    return report


def _inconsistent_utterances(
    d: Path, scans: Mapping[str, _Scan], names: list[str], universe: set[str]
) -> dict[str, tuple[str, str]]:
    """``utt -> (reason, detail)`` for utterances with a bad, repeated or missing entry."""
    reasons: dict[str, tuple[str, str]] = {}
    failed = _read_feats_failed(d)
    for name in names:
        scan = scans[name]
        for utt, lineno in scan.conflicts.items():
            reasons.setdefault(utt, (f"repeated in {name} with different values",
                                     f"{name}:{lineno}"))
        for utt, (lineno, error) in scan.invalid.items():
            reasons.setdefault(utt, (f"invalid line in {name}", f"{name}:{lineno}: {error}"))
    for utt in universe:
        for name in names:
            if utt not in scans[name].keys:
                if name == "feats.scp" and utt in failed:
                    why = ("no features (feature extraction failed)", failed[utt])
                else:
                    why = (f"no entry in {name}", "")
                reasons.setdefault(utt, why)
    return reasons


def _bad_recordings(wav: _Scan, check_audio: bool) -> dict[str, tuple[str, str]]:
    """``wav.scp key -> (reason, detail)`` for recordings that cannot be used."""
    bad: dict[str, tuple[str, str]] = {}
    for reco in wav.conflicts:
        bad[reco] = ("recording repeated in wav.scp with different values", reco)
    for reco, (lineno, error) in wav.invalid.items():
        bad[reco] = ("invalid line in wav.scp", f"wav.scp:{lineno}: {error}")
    if check_audio:
        for reco, entry in wav.first.items():
            status = _audio_status(entry.value)
            if status:
                bad.setdefault(reco, (status.split(":")[0], entry.value))
    return bad


def _checked_segments(
    d: Path,
    scans: Mapping[str, _Scan],
    bad_audio: Mapping[str, tuple[str, str]],
    reasons: dict[str, tuple[str, str]],
    notes: list[str],
    check_audio: bool,
) -> dict[str, Segment]:
    """Every segment, ends clipped to their recording; unusable ones added to ``reasons``."""
    wav = scans["wav.scp"]
    durations = _recording_durations(d, scans, check_audio)
    segments: dict[str, Segment] = {}
    clipped = 0
    for utt, entry in scans["segments"].first.items():
        seg = parse_segment(entry.value)
        total = durations.get(seg.reco)
        if seg.reco not in wav.keys:
            reasons.setdefault(utt, ("recording not in wav.scp", seg.reco))
        elif seg.reco in bad_audio:
            reasons.setdefault(utt, bad_audio[seg.reco])
        elif total is not None and (seg.start >= total or seg.end > total + MAX_OVERSHOOT):
            reasons.setdefault(utt, ("segment beyond the end of its recording",
                                     f"{entry.value} (recording {total:.3f} s)"))
        elif total is not None and seg.end > total:
            seg = seg._replace(end=total)
            clipped += 1
        segments[utt] = seg
    if clipped:
        notes.append(f"clipped {clipped} segment ends to the end of their recording")
    return segments


def _fixed_texts(
    d: Path,
    scans: Mapping[str, _Scan],
    kept: set[str],
    segments: Mapping[str, Segment],
    notes: list[str],
) -> dict[str, str]:
    """New contents of every file ``fix`` rewrites."""

    def values(name: str, keys: set[str]) -> dict[str, str]:
        return {k: e.value for k, e in scans[name].first.items() if k in keys}

    texts: dict[str, str] = {}
    utt2lang = values("utt2lang", kept)
    utt2spk = values("utt2spk", kept) if "utt2spk" in scans else {u: u for u in kept}
    if "segments" in scans:
        kept_segments = {u: segments[u] for u in kept}
        recos = {s.reco for s in kept_segments.values()}
        texts["segments"] = table_text(
            {u: (s.reco, float(s.start), float(s.end)) for u, s in kept_segments.items()})
    else:
        recos = kept
    texts["wav.scp"] = table_text(values("wav.scp", recos))
    texts["utt2lang"] = table_text(utt2lang)
    texts["utt2spk"] = table_text(utt2spk)
    texts["spk2utt"] = table_text(invert(utt2spk))
    texts["lang2utt"] = table_text(invert(utt2lang))
    if "utt2dur" in scans:
        utt2dur: dict[str, object] = dict(values("utt2dur", kept))
        corrected = 0
        for utt, seg in segments.items():
            if utt in kept and seg.end >= 0:
                expected = seg.end - seg.start
                if abs(float(utt2dur[utt]) - expected) > DURATION_TOLERANCE:
                    utt2dur[utt] = float(expected)
                    corrected += 1
        if corrected:
            notes.append(f"corrected {corrected} utt2dur entries from segments")
        texts["utt2dur"] = table_text(utt2dur)
    feat_utts = set(scans["feats.scp"].first) & kept if "feats.scp" in scans else set()
    for name in ("feats.scp", "vad.scp", "utt2num_frames"):
        if name in scans:
            texts[name] = table_text(values(name, feat_utts))
    if "reco2dur" in scans:
        texts["reco2dur"] = table_text(values("reco2dur", recos))
    # Other Kaldi files keyed by utterance, speaker or recording are filtered too.
    speakers = set(utt2spk.values())
    for extra in sorted(d.iterdir()):
        name = extra.name
        if name in texts or name in FILE_CHECKS or name.startswith(".") or not extra.is_file():
            continue
        if name.startswith("utt2") or name == "text":
            keys = kept
        elif name.startswith("spk2") or name == "cmvn.scp":
            keys = speakers
        elif name.startswith("reco2"):
            keys = recos
        else:
            continue
        scan = _scan(extra, None, [])
        texts[name] = table_text({k: e.value for k, e in scan.first.items() if k in keys})
    return texts


def _backup(d: Path, names: list[str], report: FixReport) -> Path:
    """Copy ``names`` to a fresh ``d/.backup/<time>/`` and list the dropped utterances there."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = d / ".backup" / stamp
    n = 1
    while backup.exists():
        n += 1
        backup = d / ".backup" / f"{stamp}.{n}"
    backup.mkdir(parents=True)
    for name in names:
        shutil.copy2(d / name, backup / name)
    lines = [f"{u}\t{report.dropped[u]}\t{report.details.get(u, '')}".rstrip("\t") + "\n"
             for u in c_sorted(report.dropped)]
    write_text(backup / "dropped", "".join(lines))
    return backup


# --------------------------------------------------------------------------- split / combine

def _source_files(d: Path) -> list[Path]:
    names = [*REQUIRED_FILES, "segments", "utt2dur", *UTT_FEATURE_FILES, "feats_config.json"]
    return [d / n for n in names if (d / n).is_file()]


def split(path: PathLike, n: int) -> list[Path]:
    """Split the data dir by utterance into ``DIR/split{n}/{1..n}`` (Kaldi layout).

    Parts are contiguous runs of the sorted utterances whose sizes differ by at most one;
    each is a complete data dir (``segments``, ``wav.scp`` restricted to its recordings,
    feature files and ``feats_config.json`` when present). An existing split newer than
    every source file is reused. Returns the part directories in order.
    """
    d = Path(path)
    if n < 1:
        raise LreError(f"{d}: cannot split into {n} parts")
    out = d / f"split{n}"
    parts = [out / str(i) for i in range(1, n + 1)]
    marker = out / ".complete"
    sources = _source_files(d)
    if marker.is_file() and all((p / "wav.scp").is_file() for p in parts):
        newest = max(p.stat().st_mtime_ns for p in sources) if sources else 0
        same_files = marker.read_text("utf-8").split() == [p.name for p in sources]
        if same_files and marker.stat().st_mtime_ns >= newest:
            logger.info("%s: reusing the existing split", out)
            return parts
    dd = DataDir.load(d)
    utts = dd.utts
    if n > len(utts):
        raise LreError(f"{d}: cannot split {len(utts)} utterances into {n} parts")
    if marker.exists():
        marker.unlink()
    base, extra = divmod(len(utts), n)
    start = 0
    for i, part in enumerate(parts):
        size = base + (1 if i < extra else 0)
        part_utts = utts[start:start + size]
        start += size
        dd.subset(part_utts, part).write()
        _copy_feats_config(d, part, dd)
    atomic_write_text(marker, " ".join(p.name for p in sources) + "\n")
    logger.info("%s: split %d utterances into %d parts", d, len(utts), n)
    return parts


def _copy_feats_config(src: Path, out: Path, dd: DataDir) -> None:
    config = src / "feats_config.json"
    target = out / "feats_config.json"
    if dd.feats_scp is not None and config.is_file():
        if config.resolve() != target.resolve():
            atomic_write_text(target, config.read_text("utf-8"))
    elif target.is_file():
        target.unlink()


def combine(out: PathLike, inputs: Iterable[PathLike]) -> DataDir:
    """Combine data dirs into ``out``; duplicate utterance ids across inputs are an error.

    When some inputs have ``segments`` and others not, the others become whole-recording
    segments (recording id = utterance id). ``utt2dur`` and the feature files are kept
    only when every input has them; features also need the same ``feats_config.json``.
    """
    out = Path(out)
    dirs = [DataDir.load(p) for p in inputs]
    if not dirs:
        raise LreError(f"{out}: nothing to combine (no input data dirs)")
    owner: dict[str, Path] = {}
    for dd in dirs:
        for utt in dd.utts:
            if utt in owner:
                raise LreError(
                    f"{out}: duplicate utterance id '{utt}' in {owner[utt]} and {dd.path}")
            owner[utt] = dd.path
    any_segments = any(dd.segments is not None for dd in dirs)
    wav_scp: dict[str, str] = {}
    wav_owner: dict[str, Path] = {}
    segments: dict[str, Segment] = {}
    for dd in dirs:
        for reco, spec in dd.wav_scp.items():
            if reco in wav_scp and wav_scp[reco] != spec:
                raise LreError(f"{out}: recording '{reco}' differs between {wav_owner[reco]} "
                               f"and {dd.path}")
            wav_scp[reco], wav_owner[reco] = spec, dd.path
        if any_segments:
            if dd.segments is not None:
                segments.update(dd.segments)
            else:
                segments.update({u: Segment(u, 0.0, -1.0) for u in dd.utts})

    def merged(attr: str) -> dict | None:
        maps = [getattr(dd, attr) for dd in dirs]
        if all(m is not None for m in maps):
            return {k: v for m in maps for k, v in m.items()}
        if any(m is not None for m in maps):
            logger.warning("%s: not every input has %s; the combined dir will not", out, attr)
        return None

    feats = merged("feats_scp")
    configs = {(dd.path / "feats_config.json").read_text("utf-8")
               if (dd.path / "feats_config.json").is_file() else None for dd in dirs}
    if feats is not None and len(configs) > 1:
        raise LreError(f"{out}: the inputs' features were made with different configs "
                       "(feats_config.json differs); recompute them with one config")
    result = DataDir(
        out,
        wav_scp=wav_scp,
        utt2lang={k: v for dd in dirs for k, v in dd.utt2lang.items()},
        utt2spk={k: v for dd in dirs for k, v in dd.utt2spk.items()},
        segments=segments if any_segments else None,
        utt2dur=merged("utt2dur"),
        feats_scp=feats,
        vad_scp=merged("vad_scp") if feats is not None else None,
        utt2num_frames=merged("utt2num_frames") if feats is not None else None,
    )
    result.write()
    _copy_feats_config(dirs[0].path, out, result)
    logger.info("%s: combined %d utterances from %d dirs", out, len(result), len(dirs))
    return result


def subset(src: PathLike, out: PathLike, utts: Iterable[str]) -> DataDir:
    """Copy the utterances ``utts`` of the data dir ``src`` into a new data dir ``out``."""
    dd = DataDir.load(src)
    result = dd.subset(utts, out)
    result.write()
    _copy_feats_config(dd.path, Path(out), result)
    logger.info("%s: %d of %d utterances of %s", out, len(result), len(dd), src)
    return result


def subset_first(src: PathLike, out: PathLike, n: int) -> DataDir:
    """The first ``n`` utterances (C order) of ``src`` as a new data dir ``out``."""
    return subset(src, out, DataDir.load(src).utts[:max(n, 0)])


def subset_per_lang(src: PathLike, out: PathLike, n: int) -> DataDir:
    """The first ``n`` utterances (C order) of each language of ``src`` as a data dir ``out``."""
    dd = DataDir.load(src)
    return subset(src, out, [u for utts in dd.lang2utt.values() for u in utts[:max(n, 0)]])


def read_utt_list(path: PathLike) -> list[str]:
    """First field of each non-blank line of ``path`` (a Kaldi utterance list)."""
    return [line.key for line in iter_table(path, require_value=False, unique=False)]


# --------------------------------------------------------------------------- CLI

def cli_validate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="data dir to check")
    parser.add_argument("--no-audio-check", action="store_true",
                        help="do not check that audio files exist")


def cli_validate(args: argparse.Namespace) -> int:
    problems = validate(args.dir, check_audio=not args.no_audio_check)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s); `lre fix {args.dir}` keeps the "
              "consistent part", file=sys.stderr)
        return 1
    dd = DataDir.load(args.dir)
    print(f"{args.dir}: OK ({len(dd)} utterances, {len(dd.langs)} languages)")
    return 0


def cli_fix_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="data dir to repair in place (originals go to DIR/.backup/)")
    parser.add_argument("--no-audio-check", action="store_true",
                        help="keep utterances whose audio file does not exist")


def cli_fix(args: argparse.Namespace) -> int:
    report = fix(args.dir, check_audio=not args.no_audio_check)
    print(report.summary())
    return 0


def cli_split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="data dir to split")
    parser.add_argument("n", type=int, help="number of parts (DIR/splitN/1..N)")


def cli_split(args: argparse.Namespace) -> int:
    parts = split(args.dir, args.n)
    print(f"{Path(args.dir) / f'split{args.n}'}: {len(parts)} parts")
    return 0


def cli_combine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output data dir")
    parser.add_argument("inputs", nargs="+", help="data dirs to combine")


def cli_combine(args: argparse.Namespace) -> int:
    dd = combine(args.out, args.inputs)
    print(f"{args.out}: {len(dd)} utterances, {len(dd.langs)} languages")
    return 0


def cli_subset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="source data dir")
    parser.add_argument("out", help="output data dir")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--utt-list", help="file whose first field per line is an utterance id")
    group.add_argument("--first", type=int, help="the first N utterances")
    group.add_argument("--per-lang", type=int, help="the first N utterances of each language")


def cli_subset(args: argparse.Namespace) -> int:
    if args.utt_list is not None:
        dd = subset(args.src, args.out, read_utt_list(args.utt_list))
    elif args.first is not None:
        dd = subset_first(args.src, args.out, args.first)
    else:
        dd = subset_per_lang(args.src, args.out, args.per_lang)
    print(f"{args.out}: {len(dd)} utterances, {len(dd.langs)} languages")
    return 0
