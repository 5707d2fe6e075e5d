"""FLEURS -> Kaldi data dirs.

FLEURS (``google/fleurs``) has one folder per language, named ``<lang>_<region>``
(``fi_fi``, ``en_us``, ``cmn_hans_cn`` ...), each with ``train.tsv``, ``dev.tsv``,
``test.tsv`` and ``audio/<split>/*.wav`` (16 kHz, from ``audio/<split>.tar.gz``). The
TSVs have no header; each line is

    id  file-name  raw-transcription  transcription  characters  num-samples  gender

where ``id`` is the FLoRes sentence (read by several speakers, so not unique) and
``file-name`` the recording. FLEURS gives no speaker ids, so each recording is its own
speaker (Kaldi's convention): utterance id ``<folder>-<file name without .wav>``. The
language label is the folder code's first part (``fi_fi`` -> ``fi``, ``cmn_hans_cn`` ->
``cmn``) unless ``--lang-map`` says otherwise (keys: folder codes).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

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

HELP = "FLEURS (<lang>_<region>/{train,dev,test}.tsv + audio/<split>/*.wav)"

SPLITS = ("train", "dev", "test")
COLUMNS = ("id", "file", "raw_transcription", "transcription", "characters", "num_samples",
           "gender")
SAMPLE_RATE = 16000


def language_of(folder: str, lang_map: dict[str, str]) -> str:
    """``fi_fi`` -> ``fi`` (or the map's label for the folder code)."""
    if folder in lang_map:
        return lang_map[folder]
    return folder.split("_")[0].lower()


def language_dirs(src: Path) -> list[Path]:
    """Language folders under ``src`` (or ``src`` itself when it is one)."""
    def is_lang(p: Path) -> bool:
        return any((p / f"{s}.tsv").is_file() for s in SPLITS)

    if is_lang(src):
        return [src]
    found = sorted(p for p in src.iterdir() if p.is_dir() and is_lang(p))
    if not found and (src / "data").is_dir():  # the Hugging Face repository layout
        found = sorted(p for p in (src / "data").iterdir() if p.is_dir() and is_lang(p))
    return found


def read_split(lang_dir: Path, split: str, lang: str,
               ) -> tuple[list[Utterance], list[Skipped]]:
    """Utterances of one ``<split>.tsv``; malformed lines are skipped with their reason."""
    tsv = lang_dir / f"{split}.tsv"
    items: list[Utterance] = []
    skipped: list[Skipped] = []
    if not tsv.is_file():
        logger.warning("%s: missing; no %s data for %s", tsv, split, lang_dir.name)
        return items, skipped
    audio_dir = lang_dir / "audio" / split
    try:
        lines = tsv.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LreError(f"{tsv}: cannot read: {e}") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < len(COLUMNS):
            skipped.append(Skipped(f"{tsv}:{lineno}",
                                   f"expected {len(COLUMNS)} tab-separated columns, got "
                                   f"{len(fields)}"))
            continue
        row = dict(zip(COLUMNS, fields[: len(COLUMNS)], strict=True))
        name = row["file"].strip()
        if not name:
            skipped.append(Skipped(f"{tsv}:{lineno}", "empty file-name column"))
            continue
        try:
            duration: float | None = int(row["num_samples"]) / SAMPLE_RATE
        except ValueError:
            duration = None
        utt = f"{safe_id(lang_dir.name)}-{safe_id(Path(name).stem)}"
        text = " ".join(row["raw_transcription"].split()) or None
        items.append(Utterance(utt, utt, lang, str((audio_dir / name).resolve()), duration, text))
    return items, skipped


def prepare_fleurs(
    src: str | os.PathLike,
    out: str | os.PathLike,
    langs: list[str] | None = None,
    lang_map: dict[str, str] | None = None,
    nj: int = 4,
    min_duration: float = 0.1,
    probe: bool = True,
) -> PrepareReport:
    """Write ``out/{train,dev,test}`` from FLEURS language folder(s) at ``src``.

    ``langs`` selects by folder code (``fi_fi``) or by label (``fi``).
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise LreError(f"{src}: FLEURS folder not found")
    lang_map = lang_map or {}
    dirs = language_dirs(src)
    if langs is not None:
        dirs = [d for d in dirs if d.name in langs or language_of(d.name, lang_map) in langs]
    if not dirs:
        raise LreError(f"{src}: no FLEURS language folders (<lang>_<region>/train.tsv) found"
                       + (f" for {','.join(langs)}" if langs else ""))
    labels: dict[str, str] = {}
    sets: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    skipped: dict[str, list[Skipped]] = {s: [] for s in SPLITS}
    for lang_dir in dirs:
        lang = language_of(lang_dir.name, lang_map)
        if lang in labels:
            logger.warning("%s and %s both map to language '%s'", labels[lang], lang_dir.name,
                           lang)
        labels.setdefault(lang, lang_dir.name)
        for split in SPLITS:
            items, bad = read_split(lang_dir, split, lang)
            sets[split] += items
            skipped[split] += bad
    return finish(out, sets, skipped, nj=nj, min_duration=min_duration, probe=probe)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="FLEURS root (language folders) or one language folder")
    parser.add_argument("out", help="data root: writes OUT/{train,dev,test}")
    parser.add_argument("--lang-map", default=None,
                        help="file of 'folder-code label' lines, e.g. 'cmn_hans_cn zh'")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> PrepareReport:
    return prepare_fleurs(
        args.src, args.out, langs=parse_lang_list(args.langs),
        lang_map=read_map_file(args.lang_map, "language map") if args.lang_map else None,
        nj=args.nj, min_duration=args.min_duration, probe=not args.no_probe,
    )
