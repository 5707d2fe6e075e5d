"""Mozilla Common Voice -> Kaldi data dirs.

A release (``cv-corpus-<version>/``) holds one folder per locale, each with ``train.tsv``,
``dev.tsv``, ``test.tsv`` (the official, speaker-disjoint splits), ``validated.tsv`` and
others, ``clip_durations.tsv`` (newer releases) and ``clips/*.mp3``. The TSVs have a header
line; the columns used are ``client_id`` (an anonymous speaker hash), ``path`` (the clip's
file name in ``clips/``), ``sentence`` and ``locale`` (when present).

SRC may be the release folder (every locale in it, or those given by ``--langs``) or one
locale folder. Speaker id: the first 16 hex digits of ``client_id``; utterance id:
``<speaker>-<clip name without .mp3>``. The language label is the locale code
(``fi``, ``sv-SE``, ``zh-CN`` ...), renamed with ``--lang-map``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

import soundfile as sf

from lre.data.corpora.common import (
    PrepareReport,
    Skipped,
    Utterance,
    add_common_arguments,
    finish,
    parse_lang_list,
    read_map_file,
    safe_id,
)
from lre.utils import LreError

logger = logging.getLogger(__name__)

HELP = "Mozilla Common Voice (per-locale train/dev/test.tsv + clips/*.mp3)"

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
SPEAKER_ID_CHARS = 16


def mp3_reader(mode: str = "auto") -> str:
    """How wav.scp reads the mp3 clips: ``"path"`` (soundfile decodes MP3: libsndfile >= 1.1)
    or ``"ffmpeg"`` (a ``ffmpeg ... |`` pipe). ``"auto"`` picks the first that works here."""
    if mode not in ("auto", "path", "ffmpeg"):
        raise LreError(f"--mp3 must be auto, path or ffmpeg (got {mode!r})")
    has_sf_mp3 = "MP3" in sf.available_formats()
    if mode == "auto":
        if has_sf_mp3:
            return "path"
        if shutil.which("ffmpeg"):
            return "ffmpeg"
        raise LreError(f"soundfile here (libsndfile {sf.__libsndfile_version__}) cannot read "
                       "MP3 and ffmpeg is not installed: install ffmpeg or libsndfile >= 1.1")
    if mode == "path" and not has_sf_mp3:
        raise LreError(f"--mp3 path: libsndfile {sf.__libsndfile_version__} cannot read MP3")
    return mode


def audio_entry(clip: Path, reader: str) -> str:
    """The wav.scp value for one clip."""
    if reader == "path":
        return str(clip)
    return f"ffmpeg -nostdin -loglevel error -i {shlex.quote(str(clip))} -ac 1 -ar 16000 -f wav - |"


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a Common Voice TSV (header line; no quoting: sentences contain quotes)."""
    csv.field_size_limit(sys.maxsize)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            rows = list(reader)
            fields = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LreError(f"{path}: cannot read TSV: {e}") from None
    missing = [c for c in ("client_id", "path") if c not in fields]
    if missing:
        raise LreError(f"{path}: missing column(s) {', '.join(missing)} (header: "
                       f"{' '.join(fields)[:120]})")
    return rows


def read_clip_durations(locale_dir: Path) -> dict[str, float]:
    """``clip_durations.tsv`` (clip name -> seconds) when the release has it, else empty."""
    path = locale_dir / "clip_durations.tsv"
    if not path.is_file():
        return {}
    out = {}
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            try:
                out[row["clip"]] = float(row["duration[ms]"]) / 1000.0
            except (KeyError, TypeError, ValueError):
                continue
    return out


def locale_dirs(src: Path, langs: list[str] | None) -> list[Path]:
    """The locale folders under ``src`` (or ``src`` itself when it is one)."""
    def is_locale(p: Path) -> bool:
        return any((p / f).is_file() for f in (*SPLIT_FILES.values(), "validated.tsv"))

    if is_locale(src):
        return [src]
    dirs = sorted(p for p in src.iterdir() if p.is_dir() and is_locale(p))
    if langs is not None:
        dirs = [p for p in dirs if p.name in langs]
    if not dirs:
        raise LreError(f"{src}: no Common Voice locale folders (with train/dev/test.tsv) found"
                       + (f" for {','.join(langs)}" if langs else ""))
    return dirs


def rows_to_utterances(rows: list[dict[str, str]], tsv: Path, locale_dir: Path, lang: str,
                       reader: str, durations: dict[str, float],
                       ) -> tuple[list[Utterance], list[Skipped]]:
    items, skipped = [], []
    for lineno, row in enumerate(rows, 2):
        clip_name = (row.get("path") or "").strip()
        client = (row.get("client_id") or "").strip()
        if not clip_name:
            skipped.append(Skipped(f"{tsv}:{lineno}", "empty 'path' column"))
            continue
        stem = safe_id(Path(clip_name).stem)
        if client:
            spk = safe_id(client[:SPEAKER_ID_CHARS])
            utt = f"{spk}-{stem}"
        else:
            utt = spk = f"{safe_id(lang)}-{stem}"  # no speaker: the clip is its own speaker
        clip = (locale_dir / "clips" / clip_name).resolve()
        sentence = " ".join((row.get("sentence") or "").split()) or None
        items.append(Utterance(utt, spk, lang, audio_entry(clip, reader),
                               durations.get(clip_name), sentence, source=str(clip)))
    return items, skipped


def prepare_commonvoice(
    src: str | os.PathLike,
    out: str | os.PathLike,
    langs: list[str] | None = None,
    lang_map: dict[str, str] | None = None,
    use_validated: bool = False,
    mp3: str = "auto",
    nj: int = 4,
    min_duration: float = 0.1,
    probe: bool = True,
) -> PrepareReport:
    """Write ``out/{train,dev,test}`` from Common Voice locale folder(s) at ``src``.

    ``use_validated`` trains on every validated clip whose speaker is not in dev or test
    (the official ``train.tsv`` keeps only a few clips per sentence).
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise LreError(f"{src}: Common Voice folder not found")
    lang_map = lang_map or {}
    reader = mp3_reader(mp3)
    sets: dict[str, list[Utterance]] = {name: [] for name in SPLIT_FILES}
    skipped: dict[str, list[Skipped]] = {name: [] for name in SPLIT_FILES}
    for locale_dir in locale_dirs(src, langs):
        locale = locale_dir.name
        durations = read_clip_durations(locale_dir)
        rows: dict[str, list[dict[str, str]]] = {}
        for name, fname in SPLIT_FILES.items():
            tsv = locale_dir / fname
            rows[name] = read_tsv(tsv) if tsv.is_file() else []
            if not tsv.is_file():
                logger.warning("%s: missing; no %s data for %s", tsv, name, locale)
        if use_validated:
            validated = locale_dir / "validated.tsv"
            if not validated.is_file():
                raise LreError(f"{validated}: not found (needed by --use-validated)")
            held = {r.get("path") for n in ("dev", "test") for r in rows[n]}
            held_spk = {r.get("client_id") for n in ("dev", "test") for r in rows[n]}
            rows["train"] = [r for r in read_tsv(validated)
                             if r.get("path") not in held and r.get("client_id") not in held_spk]
        for name in SPLIT_FILES:
            if not rows[name]:
                continue
            # The folder is the locale; a row's 'locale' column, when present, agrees with it.
            lang = lang_map.get(locale, locale)
            items, bad = rows_to_utterances(rows[name], locale_dir / SPLIT_FILES[name],
                                            locale_dir, lang, reader, durations)
            sets[name] += items
            skipped[name] += bad
            logger.info("%s %s: %d clips", locale, name, len(items))
    return finish(out, sets, skipped, nj=nj, min_duration=min_duration, probe=probe)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="Common Voice release folder (locale folders) or one locale")
    parser.add_argument("out", help="data root: writes OUT/{train,dev,test}")
    parser.add_argument("--lang-map", default=None,
                        help="file of 'locale label' lines, e.g. 'sv-SE sv'")
    parser.add_argument("--use-validated", action="store_true",
                        help="train on all validated clips of speakers not in dev/test")
    parser.add_argument("--mp3", default="auto", choices=("auto", "path", "ffmpeg"),
                        help="wav.scp entries: plain paths read by soundfile (libsndfile >= "
                             "1.1) or ffmpeg pipes (default: auto)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> PrepareReport:
    return prepare_commonvoice(
        args.src, args.out, langs=parse_lang_list(args.langs),
        lang_map=read_map_file(args.lang_map, "language map") if args.lang_map else None,
        use_validated=args.use_validated, mp3=args.mp3, nj=args.nj,
        min_duration=args.min_duration, probe=not args.no_probe,
    )
