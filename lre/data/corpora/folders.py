"""Any corpus laid out as one folder per language -> Kaldi data dirs.

    <root>/<lang>/**/*.{wav,flac,mp3,ogg}

With ``--speaker-from dir`` the first folder level under each language names the speaker
(``<root>/<lang>/<speaker>/**/*.wav``); otherwise each file is its own speaker. The files
of each language are split into train/dev/test by ``--ratios`` (default 0.8,0.1,0.1), at
random for a ``--seed``: by file, or by speaker (``--split-by speaker``, the default when
speakers are known) so that no speaker is in two sets.

Ids: speaker ``<lang>-<speaker>``, utterance ``<speaker id>-<path under the speaker or
language folder, without extension>`` (characters other than letters, digits, ``.`` and
``_`` become ``_``).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import defaultdict
from pathlib import Path

from lre.data.corpora.common import (
    PrepareReport,
    Skipped,
    Utterance,
    add_common_arguments,
    finish,
    keyed_rng,
    parse_lang_list,
    read_map_file,
    safe_id,
)
from lre.data.tables import c_sorted
from lre.utils import LreError

logger = logging.getLogger(__name__)

HELP = "a generic corpus: <root>/<lang>/**/*.{wav,flac,mp3,ogg}, split by ratio"

SETS = ("train", "dev", "test")
EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


def parse_ratios(text: str | tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> normalised (train, dev, test) shares."""
    try:
        values = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise LreError(f"--ratios: not numbers: {text!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise LreError(f"--ratios: need three shares >= 0 for train,dev,test (got {text!r})")
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split ``n`` units by ``ratios`` (largest remainder), giving every set with a share
    at least one unit while there are units enough."""
    wanted = [n * r for r in ratios]
    counts = [int(w) for w in wanted]
    for i in sorted(range(3), key=lambda i: wanted[i] - counts[i], reverse=True):
        if sum(counts) < n:
            counts[i] += 1
    for i in range(3):
        if ratios[i] > 0 and counts[i] == 0:
            donor = max(range(3), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def scan(root: Path, speaker_from: str, lang_map: dict[str, str], langs: list[str] | None,
         extensions: tuple[str, ...]) -> list[Utterance]:
    """Every audio file under ``root/<lang>/`` as an ``Utterance`` (no audio read yet)."""
    items: list[Utterance] = []
    exts = {e.lower() for e in extensions}
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        lang = lang_map.get(lang_dir.name, lang_dir.name)
        if langs is not None and lang not in langs and lang_dir.name not in langs:
            continue
        files = sorted(p for p in lang_dir.rglob("*") if p.suffix.lower() in exts and p.is_file())
        for f in files:
            rel = f.relative_to(lang_dir)
            if speaker_from == "dir" and len(rel.parts) > 1:
                spk = f"{safe_id(lang)}-{safe_id(rel.parts[0])}"
                rest = Path(*rel.parts[1:]).with_suffix("")
                utt = f"{spk}-{safe_id(rest.as_posix())}"
            else:
                utt = f"{safe_id(lang)}-{safe_id(rel.with_suffix('').as_posix())}"
                spk = utt
            items.append(Utterance(utt, spk, lang, str(f.resolve())))
    return items


def split_items(items: list[Utterance], ratios: tuple[float, float, float], by: str,
                seed: int) -> dict[str, list[Utterance]]:
    """Per language, shuffle units (files or speakers) by seed and cut them by ``ratios``."""
    out: dict[str, list[Utterance]] = {s: [] for s in SETS}
    by_lang: dict[str, dict[str, list[Utterance]]] = defaultdict(lambda: defaultdict(list))
    for it in items:
        by_lang[it.lang][it.spk if by == "speaker" else it.utt].append(it)
    for lang in c_sorted(by_lang):
        units = c_sorted(by_lang[lang])
        order = [units[int(i)] for i in keyed_rng(seed, "split", lang).permutation(len(units))]
        counts = allocate(len(units), ratios)
        if by == "speaker" and any(r > 0 and c == 0 for r, c in zip(ratios, counts, strict=True)):
            logger.warning("%s: %d speaker(s) cannot fill every set; some sets get none",
                           lang, len(units))
        start = 0
        for name, count in zip(SETS, counts, strict=True):
            for unit in order[start:start + count]:
                out[name] += by_lang[lang][unit]
            start += count
    return out


def prepare_folders(
    src: str | os.PathLike,
    out: str | os.PathLike,
    ratios: str | tuple[float, float, float] = (0.8, 0.1, 0.1),
    speaker_from: str = "none",
    split_by: str | None = None,
    seed: int = 0,
    langs: list[str] | None = None,
    lang_map: dict[str, str] | None = None,
    extensions: tuple[str, ...] = EXTENSIONS,
    nj: int = 4,
    min_duration: float = 0.1,
    probe: bool = True,
) -> PrepareReport:
    """Write ``out/{train,dev,test}`` (sets with a zero ratio are not written)."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise LreError(f"{src}: corpus folder not found")
    if speaker_from not in ("none", "dir"):
        raise LreError(f"--speaker-from must be none or dir (got {speaker_from!r})")
    split_by = split_by or ("speaker" if speaker_from == "dir" else "utt")
    if split_by not in ("utt", "speaker"):
        raise LreError(f"--split-by must be utt or speaker (got {split_by!r})")
    shares = parse_ratios(ratios)
    items = scan(src, speaker_from, lang_map or {}, langs, extensions)
    if not items:
        raise LreError(f"{src}: no audio files ({', '.join(extensions)}) in <lang>/ folders")
    logger.info("%s: %d files in %d languages", src, len(items), len({it.lang for it in items}))
    sets = split_items(items, shares, split_by, seed)
    skipped: dict[str, list[Skipped]] = {}
    return finish(out, {k: v for k, v in sets.items() if v}, skipped, nj=nj,
                  min_duration=min_duration, probe=probe)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="corpus root holding one folder per language")
    parser.add_argument("out", help="data root: writes OUT/{train,dev,test}")
    parser.add_argument("--ratios", default="0.8,0.1,0.1",
                        help="train,dev,test shares per language (default %(default)s)")
    parser.add_argument("--speaker-from", default="none", choices=("none", "dir"),
                        help="'dir': the first folder under each language is the speaker")
    parser.add_argument("--split-by", default=None, choices=("utt", "speaker"),
                        help="split files at random or whole speakers (default: speaker when "
                             "--speaker-from dir, else utt)")
    parser.add_argument("--extensions", default=",".join(EXTENSIONS),
                        help="audio file extensions (default %(default)s)")
    parser.add_argument("--lang-map", default=None,
                        help="file of 'folder label' lines to rename language labels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> PrepareReport:
    exts = tuple(e if e.startswith(".") else f".{e}"
                 for e in (x.strip() for x in args.extensions.split(",")) if e)
    return prepare_folders(
        args.src, args.out, ratios=args.ratios, speaker_from=args.speaker_from,
        split_by=args.split_by, seed=args.seed, langs=parse_lang_list(args.langs),
        lang_map=read_map_file(args.lang_map, "language map") if args.lang_map else None,
        extensions=exts, nj=args.nj, min_duration=args.min_duration, probe=not args.no_probe,
    )
