"""An existing Kaldi data dir -> an lre data dir (copied, checked, ``utt2lang`` added).

SRC is one data dir (it has ``wav.scp``), written to ``OUT/<name>`` (``--name``, default
SRC's folder name), or a folder of data dirs (``SRC/train``, ``SRC/dev`` ...), each written
to ``OUT/<its name>``. ``wav.scp``, ``segments``, ``utt2spk``, ``utt2dur`` and ``text`` are
carried over; features are not (they are recomputed by the feature stage).

The language of each utterance comes from (``--lang-from``):

* ``utt2lang`` -- the dir's own ``utt2lang``, or the file given with ``--utt2lang``;
* ``spk``      -- the speaker id (dirs whose ``utt2spk`` holds languages);
* ``spk-prefix`` / ``utt-prefix`` -- the speaker / utterance id up to the first ``--sep``
  (e.g. ``fi-spk01-0001`` -> ``fi``).

``--lang-map FILE`` renames labels afterwards. Lines that repeat an id, utterances missing
from a file, segments of unknown recordings and missing audio files are left out and
listed in ``OUT/<name>/prepare_skipped``; the result must pass ``lre validate``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from lre.data.audio import is_pipe
from lre.data.corpora.common import (
    PrepareReport,
    Skipped,
    Utterance,
    parse_lang_list,
    probe_audio,
    read_map_file,
    write_set,
)
from lre.data.datadir import Segment, parse_segment
from lre.data.tables import c_sorted, iter_table
from lre.utils import LreError

logger = logging.getLogger(__name__)

HELP = "an existing Kaldi data dir (copied and checked; utt2lang from a file or the ids)"

LANG_SOURCES = ("utt2lang", "spk", "spk-prefix", "utt-prefix")


def read_lenient(path: Path, skipped: list[Skipped]) -> dict[str, str]:
    """A Kaldi ``key value`` file, keeping the first line of a repeated id; problems go to
    ``skipped`` instead of raising (a data dir being imported may be a bit broken)."""
    out: dict[str, str] = {}
    for lineno, key, value in iter_table(path, require_value=False, unique=False):
        if not value:
            skipped.append(Skipped(f"{path.name}:{lineno}", f"no value for '{key}'"))
        elif key in out:
            skipped.append(Skipped(f"{path.name}:{lineno}", f"duplicate id '{key}'"))
        else:
            out[key] = value
    return out


def _read_segments(path: Path, skipped: list[Skipped]) -> dict[str, Segment] | None:
    """``segments`` of the dir being imported (None when it has none); bad lines skipped."""
    if not path.is_file():
        return None
    segments = {}
    for utt, value in read_lenient(path, skipped).items():
        try:
            segments[utt] = parse_segment(value)
        except ValueError as e:
            skipped.append(Skipped(utt, f"segments: {e}"))
    return segments


def _read_durations(path: Path, skipped: list[Skipped]) -> dict[str, float]:
    """``utt2dur`` of the dir being imported ({} when it has none); bad lines skipped."""
    durations: dict[str, float] = {}
    if path.is_file():
        for utt, value in read_lenient(path, skipped).items():
            try:
                durations[utt] = float(value)
            except ValueError:
                skipped.append(Skipped(utt, f"utt2dur: not a number: {value!r}"))
    return durations


def languages_for(utts: list[str], utt2spk: dict[str, str], lang_from: str, sep: str,
                  utt2lang: dict[str, str] | None) -> dict[str, str]:
    """utt -> language by the chosen rule (utterances it cannot label are left out)."""
    if lang_from == "utt2lang":
        assert utt2lang is not None
        return {u: utt2lang[u] for u in utts if u in utt2lang}
    if lang_from == "spk":
        return {u: utt2spk[u] for u in utts if u in utt2spk}
    out = {}
    for u in utts:
        key = utt2spk.get(u) if lang_from == "spk-prefix" else u
        if key is not None and sep in key:
            out[u] = key.split(sep, 1)[0]
    return out


def _source_languages(
    src: Path, utts: list[str], utt2spk: dict[str, str], lang_from: str | None,
    utt2lang_file: Path | None, sep: str, skipped: list[Skipped],
) -> tuple[str, dict[str, str]]:
    """The rule used (``--lang-from``, or ``utt2lang`` when there is one) and utt -> language."""
    own_utt2lang = src / "utt2lang"
    if lang_from is None:
        if utt2lang_file is not None or own_utt2lang.is_file():
            lang_from = "utt2lang"
        else:
            raise LreError(f"{src}: no utt2lang; give --utt2lang FILE or --lang-from "
                           f"{{{','.join(LANG_SOURCES[1:])}}}")
    utt2lang = None
    if lang_from == "utt2lang":
        lang_file = utt2lang_file or own_utt2lang
        if not lang_file.is_file():
            raise LreError(f"{lang_file}: utt2lang file not found")
        utt2lang = read_lenient(lang_file, skipped)
    return lang_from, languages_for(utts, utt2spk, lang_from, sep, utt2lang)


def _probe_recordings(
    items: list[Utterance], segments: dict[str, Segment], wav: dict[str, str], nj: int,
    probe: bool, desc: str, skipped: list[Skipped],
) -> list[Utterance]:
    """Probe each recording once (not once per segment); keep the utterances whose
    recording is usable, with open-ended segments' durations filled in."""
    recos = c_sorted({segments[it.utt].reco for it in items})
    probes = [Utterance(r, r, "", wav[r], source=None if is_pipe(wav[r]) else wav[r])
              for r in recos]
    good, bad = probe_audio(probes, nj=nj, min_duration=0.0, headers=probe, desc=desc)
    reasons = {b.item: b.reason for b in bad}
    reco_dur = {g.utt: g.duration for g in good}
    kept = []
    for it in items:
        seg = segments[it.utt]
        if seg.reco in reasons:
            skipped.append(Skipped(it.utt, reasons[seg.reco]))
            continue
        if seg.end < 0 and it.duration is None and reco_dur.get(seg.reco) is not None:
            it.duration = reco_dur[seg.reco] - seg.start
        kept.append(it)
    return kept


def import_dir(
    src: Path, out: Path, lang_from: str | None, utt2lang_file: Path | None, sep: str,
    lang_map: dict[str, str], langs: list[str] | None, nj: int, min_duration: float,
    probe: bool,
):
    """Import one data dir; returns its ``SetSummary`` and skipped items."""
    skipped: list[Skipped] = []
    wav = read_lenient(src / "wav.scp", skipped)
    segments = _read_segments(src / "segments", skipped)
    utts = c_sorted(segments if segments is not None else wav)
    utt2spk = read_lenient(src / "utt2spk", skipped) if (src / "utt2spk").is_file() else {}
    if not utt2spk:
        logger.info("%s: no utt2spk; each utterance is its own speaker", src)
    lang_from, langs_of = _source_languages(src, utts, utt2spk, lang_from, utt2lang_file, sep,
                                            skipped)
    durations = _read_durations(src / "utt2dur", skipped)
    text = read_lenient(src / "text", skipped) if (src / "text").is_file() else {}

    items: list[Utterance] = []
    for utt in utts:
        lang = langs_of.get(utt)
        if lang is None:
            skipped.append(Skipped(utt, f"no language ({lang_from})"))
            continue
        lang = lang_map.get(lang, lang)
        if langs is not None and lang not in langs:
            continue
        reco = segments[utt].reco if segments is not None else utt
        if reco not in wav:
            skipped.append(Skipped(utt, f"recording '{reco}' not in wav.scp"))
            continue
        duration = durations.get(utt)
        if segments is not None and duration is None and segments[utt].end >= 0:
            duration = segments[utt].end - segments[utt].start
        spec = wav[reco]
        items.append(Utterance(utt, utt2spk.get(utt, utt), lang, spec, duration,
                               text.get(utt), source=None if is_pipe(spec) else spec))

    if segments is None:
        items, bad = probe_audio(items, nj=nj, min_duration=min_duration, headers=probe,
                                 desc=src.name)
        skipped += bad
    else:
        items = _probe_recordings(items, segments, wav, nj, probe, src.name, skipped)
    summary = write_set(out, items, skipped, write_text=bool(text), require_spk_prefix=False,
                        segments=segments)
    return summary, skipped


def source_dirs(src: Path) -> list[Path]:
    """``src`` itself when it is a data dir, else its sub-folders that are."""
    if (src / "wav.scp").is_file():
        return [src]
    found = sorted(p for p in src.iterdir() if p.is_dir() and (p / "wav.scp").is_file())
    if not found:
        raise LreError(f"{src}: not a Kaldi data dir (no wav.scp), nor a folder of them")
    return found


def prepare_kaldi(
    src: str | os.PathLike,
    out: str | os.PathLike,
    name: str | None = None,
    lang_from: str | None = None,
    utt2lang: str | os.PathLike | None = None,
    sep: str = "-",
    lang_map: dict[str, str] | None = None,
    langs: list[str] | None = None,
    nj: int = 4,
    min_duration: float = 0.1,
    probe: bool = True,
) -> PrepareReport:
    """Import Kaldi data dir(s) from ``src`` into ``out/<name>`` (see the module doc)."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise LreError(f"{src}: Kaldi data dir not found")
    if lang_from is not None and lang_from not in LANG_SOURCES:
        raise LreError(f"--lang-from must be one of {', '.join(LANG_SOURCES)} (got {lang_from})")
    dirs = source_dirs(src)
    if name is not None and len(dirs) > 1:
        raise LreError(f"{src}: --name applies to a single data dir, found {len(dirs)}")
    if utt2lang is not None and len(dirs) > 1:
        raise LreError(f"{src}: --utt2lang applies to a single data dir, found {len(dirs)}")
    report = PrepareReport()
    for d in dirs:
        target = out / (name or d.name)
        if target.resolve() == d.resolve():
            raise LreError(f"{target}: output is the source dir; choose another OUT")
        summary, skipped = import_dir(
            d, target, lang_from, Path(utt2lang) if utt2lang else None, sep, lang_map or {},
            langs, nj, min_duration, probe)
        report.sets.append(summary)
        report.skipped += skipped
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="a Kaldi data dir, or a folder of data dirs")
    parser.add_argument("out", help="data root: writes OUT/<name> for each data dir")
    parser.add_argument("--name", default=None,
                        help="output set name for a single data dir (default: its folder name)")
    parser.add_argument("--lang-from", default=None, choices=LANG_SOURCES,
                        help="where languages come from (default: utt2lang when present)")
    parser.add_argument("--utt2lang", default=None, help="an 'utt lang' file to use")
    parser.add_argument("--sep", default="-",
                        help="separator ending the language prefix of ids (default '-')")
    parser.add_argument("--lang-map", default=None,
                        help="file of 'label new-label' lines to rename languages")
    parser.add_argument("--langs", default=None, help="comma-separated languages to keep")
    parser.add_argument("--nj", type=int, default=4, help="parallel header reads")
    parser.add_argument("--min-duration", type=float, default=0.1,
                        help="skip recordings shorter than this (s; default %(default)s)")
    parser.add_argument("--no-probe", action="store_true",
                        help="only check that audio files exist, do not open them")


def run(args: argparse.Namespace) -> PrepareReport:
    return prepare_kaldi(
        args.src, args.out, name=args.name, lang_from=args.lang_from, utt2lang=args.utt2lang,
        sep=args.sep,
        lang_map=read_map_file(args.lang_map, "language map") if args.lang_map else None,
        langs=parse_lang_list(args.langs), nj=args.nj, min_duration=args.min_duration,
        probe=not args.no_probe,
    )
