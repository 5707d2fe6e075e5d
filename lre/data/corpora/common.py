"""Shared pieces of the corpus preparers: utterance records, audio probing, writing sets.

Every preparer turns a corpus into a list of ``Utterance`` records per set (train, dev,
test), probes the audio headers in parallel (so unreadable, empty or missing files are
skipped with a reason instead of failing a later stage), and writes one Kaldi data dir
per set with ``lre.data.datadir.DataDir``. Skipped items are listed in
``<set>/prepare_skipped`` (``item<TAB>reason``) and summarised in the log.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from lre.data.datadir import DataDir, Segment, validate
from lre.data.tables import write_table
from lre.utils import LreError, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
SKIPPED_FILE = "prepare_skipped"
# Only characters that sort after "-" (the separator between id parts), so that sorting by
# utterance and by speaker agree (Kaldi's utt2spk/spk2utt rule).
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")


@dataclass
class Utterance:
    """One utterance of a corpus: its ids, language, audio and (when known) duration."""

    utt: str
    spk: str
    lang: str
    audio: str  # a path, or a ``cmd args |`` pipe
    duration: float | None = None
    text: str | None = None
    source: str | None = None  # the file a pipe reads (checked for existence)


@dataclass
class Skipped:
    """An item left out of a data dir and why."""

    item: str
    reason: str


@dataclass
class SetSummary:
    """What was written for one set."""

    name: str
    path: Path
    utts: int
    langs: int
    speakers: int
    hours: float | None


@dataclass
class PrepareReport:
    """Result of a preparer: the sets written and the items skipped."""

    sets: list[SetSummary] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def table(self) -> str:
        """A small text table: set, utterances, languages, speakers, hours."""
        rows = [f"{'set':<10} {'utts':>8} {'langs':>6} {'spks':>7} {'hours':>8}  path"]
        for s in self.sets:
            hours = "-" if s.hours is None else f"{s.hours:.3f}"
            rows.append(
                f"{s.name:<10} {s.utts:>8} {s.langs:>6} {s.speakers:>7} {hours:>8}  {s.path}"
            )
        if self.skipped:
            rows.append(f"skipped {len(self.skipped)} items (see */{SKIPPED_FILE})")
        return "\n".join(rows)


def safe_id(text: str) -> str:
    """Turn a name into one Kaldi id part: letters, digits, ``.`` and ``_`` only, never empty.

    Runs of other characters (white space, slashes, ``-``) become ``_``; parts are then
    joined with ``-``.
    """
    out = _ID_UNSAFE.sub("_", text.strip()).strip("_")
    return out or "x"


def keyed_rng(seed: int, *keys: object) -> np.random.Generator:
    """A random generator keyed by ``seed`` and a path of names (e.g. split, language):
    the same keys give the same draws in every run, whatever else was drawn before."""
    words = [zlib.crc32(str(k).encode("utf-8")) for k in keys]
    return np.random.default_rng(np.random.SeedSequence([seed % (2**32), *words]))


def read_map_file(path: PathLike, what: str = "map") -> dict[str, str]:
    """Read a two-column ``key value`` file (e.g. a language-code map); ``#`` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise LreError(f"{path}: {what} file not found")
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise LreError(f"{path}:{lineno}: expected 'key value', got {line!r}")
        out[parts[0]] = parts[1]
    return out


def parse_lang_list(text: str | None) -> list[str] | None:
    """``"en,de, fi"`` -> ``["en", "de", "fi"]``; ``None``/empty -> ``None`` (all)."""
    if not text:
        return None
    langs = [x.strip() for x in text.split(",") if x.strip()]
    return langs or None


def _probe_one(item: Utterance, min_duration: float, headers: bool) -> Utterance | Skipped:
    is_pipe = item.audio.rstrip().endswith("|")
    source = item.source if is_pipe else item.audio
    if source is not None and not Path(source).is_file():
        return Skipped(item.utt, f"{source}: audio file not found")
    if is_pipe or not headers:
        return item  # decoding a pipe here would cost a full pass over the corpus
    path = Path(item.audio)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return Skipped(item.utt, f"{path}: unreadable audio ({str(e).splitlines()[0]})")
    if info.frames <= 0 or info.samplerate <= 0:
        return Skipped(item.utt, f"{path}: empty audio")
    duration = info.frames / info.samplerate
    if duration < min_duration:
        return Skipped(item.utt, f"{path}: too short ({duration:.3f} s < {min_duration} s)")
    item.duration = duration
    return item


def probe_audio(
    items: Sequence[Utterance], nj: int = 1, min_duration: float = 0.1, headers: bool = True,
    desc: str = "probe",
) -> tuple[list[Utterance], list[Skipped]]:
    """Check each item's audio (in ``nj`` threads): fill durations, skip bad files.

    A missing file is always skipped. With ``headers`` (the default) each file's header is
    also opened: an unreadable or empty file, or one shorter than ``min_duration`` seconds,
    is skipped with its reason, and the duration is filled in. Pipes are only checked for
    the file they read (``Utterance.source``).
    """
    from tqdm import tqdm

    kept: list[Utterance] = []
    skipped: list[Skipped] = []
    with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
        results = pool.map(lambda it: _probe_one(it, min_duration, headers), items,
                           chunksize=64)
        for res in tqdm(results, total=len(items), desc=desc, unit="file", leave=False,
                        disable=len(items) < 500):
            (skipped if isinstance(res, Skipped) else kept).append(res)
    return kept, skipped


def drop_duplicates(items: Iterable[Utterance]) -> tuple[list[Utterance], list[Skipped]]:
    """Keep the first utterance of each id; later ones are skipped as duplicates."""
    seen: dict[str, Utterance] = {}
    skipped = []
    for it in items:
        if it.utt in seen:
            skipped.append(Skipped(it.utt, f"{it.audio}: duplicate utterance id "
                                           f"(first: {seen[it.utt].audio})"))
        else:
            seen[it.utt] = it
    return list(seen.values()), skipped


def check_speaker_prefixes(items: Iterable[Utterance]) -> None:
    """Kaldi sorts utt2spk and spk2utt consistently only when each utt id starts with its
    speaker id; every preparer builds its ids that way, and this guards it."""
    for it in items:
        if not it.utt.startswith(it.spk):
            raise LreError(f"{it.utt}: utterance id does not start with its speaker id '{it.spk}'")


def write_set(
    out_dir: PathLike,
    items: Sequence[Utterance],
    skipped: Sequence[Skipped] = (),
    write_text: bool = True,
    require_spk_prefix: bool = True,
    segments: Mapping[str, Segment] | None = None,
) -> SetSummary:
    """Write ``items`` as a Kaldi data dir at ``out_dir`` (sorted, atomic) and check it.

    Writes wav.scp, utt2lang, utt2spk, spk2utt, lang2utt, utt2dur (when every item has a
    duration), ``text`` (the items' transcripts, when there are any and ``write_text``) and
    ``prepare_skipped`` (when items were skipped). With ``segments`` (utt -> Segment), each
    item's ``audio`` is its recording's wav.scp value and wav.scp is keyed by recording.
    Raises ``LreError`` when nothing is left
    or when ``lre validate`` finds a problem in what was written.
    """
    out_dir = Path(out_dir)
    if not items:
        reasons = Counter(s.reason.split(": ", 1)[-1] for s in skipped).most_common(3)
        hint = f" (skipped {len(skipped)}: {reasons})" if skipped else ""
        raise LreError(f"{out_dir}: no usable utterances{hint}")
    items, dups = drop_duplicates(items)
    skipped = [*skipped, *dups]
    if require_spk_prefix:
        check_speaker_prefixes(items)
    durations = {it.utt: it.duration for it in items}
    has_dur = all(d is not None for d in durations.values())
    if segments is not None:
        seg = {it.utt: segments[it.utt] for it in items}
        wav_scp = {seg[it.utt].reco: it.audio for it in items}
    else:
        seg, wav_scp = None, {it.utt: it.audio for it in items}
    DataDir(
        out_dir,
        wav_scp=wav_scp,
        segments=seg,
        utt2lang={it.utt: it.lang for it in items},
        utt2spk={it.utt: it.spk for it in items},
        utt2dur={u: round(float(d), 4) for u, d in durations.items()} if has_dur else None,
    ).write()
    text_path = out_dir / "text"
    if write_text and any(it.text for it in items):
        write_table(text_path, {it.utt: it.text for it in items if it.text})
    elif text_path.is_file():
        text_path.unlink()  # a stale transcript file would disagree with the new set
    skipped_path = out_dir / SKIPPED_FILE
    if skipped:
        lines = [f"{s.item}\t{s.reason}\n" for s in sorted(skipped, key=lambda s: s.item)]
        atomic_write_text(skipped_path, "".join(lines))
        for s in skipped[:5]:
            logger.warning("skipped %s: %s", s.item, s.reason)
        if len(skipped) > 5:
            logger.warning("... and %d more skipped items, listed in %s",
                           len(skipped) - 5, skipped_path)
    elif skipped_path.is_file():
        skipped_path.unlink()
    validate_written(out_dir)
    hours = sum(durations.values()) / 3600 if has_dur else None
    summary = SetSummary(
        name=out_dir.name,
        path=out_dir,
        utts=len(items),
        langs=len({it.lang for it in items}),
        speakers=len({it.spk for it in items}),
        hours=hours,
    )
    logger.info("wrote %s: %d utterances, %d languages, %d speakers%s", out_dir, summary.utts,
                summary.langs, summary.speakers,
                "" if hours is None else f", {hours:.3f} h")
    return summary


def validate_written(out_dir: Path) -> None:
    """Run ``lre validate`` on a freshly written dir; any problem is a bug worth stopping on."""
    problems = validate(out_dir)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        raise LreError(f"{out_dir}: written data dir does not validate ({len(problems)} "
                       f"problems): {shown}")


def add_common_arguments(parser: argparse.ArgumentParser, nj_default: int = 4) -> None:
    """Options shared by the real-corpus preparers."""
    parser.add_argument("--nj", type=int, default=nj_default,
                        help="parallel jobs for reading audio headers (default %(default)s)")
    parser.add_argument("--langs", default=None,
                        help="comma-separated language codes to keep (default: all)")
    parser.add_argument("--min-duration", type=float, default=0.1,
                        help="skip audio shorter than this many seconds (default %(default)s)")
    parser.add_argument("--no-probe", action="store_true",
                        help="do not open audio headers (faster on huge corpora; no utt2dur "
                             "unless the corpus lists durations, bad files are not detected)")


def finish(
    out: PathLike,
    sets: dict[str, list[Utterance]],
    skipped: dict[str, list[Skipped]] | None = None,
    nj: int = 1,
    min_duration: float = 0.1,
    probe: bool = True,
    require_spk_prefix: bool = True,
) -> PrepareReport:
    """Check the audio of each set and write the non-empty ones under ``out``.

    ``probe=False`` only checks that files exist (no header reads). Returns the report.
    """
    out = Path(out)
    skipped = skipped or {}
    report = PrepareReport()
    for name in sets:
        items = sets[name]
        set_skipped = list(skipped.get(name, []))
        if not items and not set_skipped:
            continue
        items, bad = probe_audio(items, nj=nj, min_duration=min_duration, headers=probe,
                                 desc=name)
        set_skipped += bad
        report.sets.append(write_set(out / name, items, set_skipped,
                                     require_spk_prefix=require_spk_prefix))
        report.skipped += set_skipped
    if not report.sets:
        raise LreError(f"{out}: no sets were written (no utterances found)")
    return report
