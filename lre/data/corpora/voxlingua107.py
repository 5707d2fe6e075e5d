"""VoxLingua107 -> Kaldi data dirs.

The corpus comes as one zip per language (``<code>.zip``, extracting to ``<code>/*.wav``) and
a separate ``dev.zip`` (extracting to ``dev/<code>/*.wav``). Files are named after the YouTube
video they were cut from, ``<video>__U__S<n>---<start>-<end>.wav`` (times in seconds), e.g.
``zzMQbpcUTS4__U__S49---0414.190-0425.750.wav``.

Sets written under OUT:

* ``train``: every training file, minus the held-out videos below;
* ``dev``: ``--dev-per-lang`` utterances per language held out from training, taken whole
  videos at a time (no video in both train and dev); a language with a single video has
  none, unless ``--dev-split utterance``, which holds out some of that video's utterances
  (at most half) and says so in the log;
* ``test``: the official dev set (``SRC/dev/<code>/``, or ``--official-dev DIR``) when
  present, else held out from training like ``dev`` (``--test-per-lang``).

The corpus has no speaker labels; the video stands in for the speaker (speaker id
``<code>-<video>``, utterance id ``<code>-<video>-<start>-<end>``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
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

HELP = "VoxLingua107 (one folder of WAVs per language code, dev/ for the official dev set)"

_NAME = re.compile(
    r"^(?P<video>.+?)(?:__U__S\d+)?---(?P<start>\d+(?:\.\d+)?)-(?P<end>\d+(?:\.\d+)?)$"
)
_CODE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]+)*$")  # ISO 639-1/3, maybe with a subtag
NOT_LANGUAGE_DIRS = {"dev", "test", "train", "eval", "meta", "shards"}
#: How dev is held out of training: whole videos only, or, for languages with a single
#: video, some of its utterances (``--dev-split``).
DEV_SPLITS = ("video", "utterance")


def parse_file_name(stem: str) -> tuple[str, str | None, str | None]:
    """``<video>__U__S<n>---<start>-<end>`` -> ``(video, start, end)``; when the name does
    not follow the pattern, ``(stem, None, None)``."""
    m = _NAME.match(stem)
    if m is None:
        return stem, None, None
    return m.group("video"), m.group("start"), m.group("end")


def scan_language_dirs(root: Path, lang_map: dict[str, str], langs: list[str] | None,
                       split: str) -> tuple[list[Utterance], list[Skipped]]:
    """Utterances of every ``<code>/*.wav`` folder under ``root``."""
    items: list[Utterance] = []
    skipped: list[Skipped] = []
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        code = lang_dir.name
        if code in NOT_LANGUAGE_DIRS or code.startswith("."):
            continue
        if not _CODE.match(code) and code not in lang_map:
            logger.warning("%s: not a language code folder; ignored (map it with --lang-map)",
                           lang_dir)
            continue
        lang = lang_map.get(code, code)
        if langs is not None and lang not in langs and code not in langs:
            continue
        for wav in sorted(lang_dir.rglob("*.wav")):
            video, start, end = parse_file_name(wav.stem)
            if start is None:
                utt = f"{safe_id(lang)}-{safe_id(wav.stem)}"
                spk = utt  # unknown video: the utterance is its own speaker
                duration = None
            else:
                spk = f"{safe_id(lang)}-{safe_id(video)}"
                utt = f"{spk}-{start}-{end}"
                duration = float(end) - float(start)
                if duration <= 0:
                    skipped.append(Skipped(str(wav), "end time before start time in the name"))
                    continue
            items.append(Utterance(utt, spk, lang, str(wav.resolve()), duration))
    if not items:
        logger.warning("%s: no <code>/*.wav files found for %s", root, split)
    return items, skipped


def hold_out(items: list[Utterance], per_lang: int, seed: int, what: str,
             by_utterance: bool = False) -> tuple[list[Utterance], list[Utterance]]:
    """Move whole speakers (videos) of each language out of ``items`` until about
    ``per_lang`` utterances per language are held out; the last video always stays.

    ``by_utterance``: a language with a single video gets some of its utterances held out
    instead (at most ``per_lang`` and half of them), so that it has dev data at all; those
    dev utterances then share their video with training ones. Returns ``(kept, held_out)``.
    """
    if per_lang <= 0:
        return items, []
    by_lang: dict[str, dict[str, list[Utterance]]] = defaultdict(lambda: defaultdict(list))
    for it in items:
        by_lang[it.lang][it.spk].append(it)
    held: set[str] = set()  # utterance ids
    alone, split = [], []
    for lang in c_sorted(by_lang):
        speakers = c_sorted(by_lang[lang])
        rng = keyed_rng(seed, what, lang)
        if len(speakers) < 2:
            utts = by_lang[lang][speakers[0]]
            take = min(per_lang, len(utts) // 2) if by_utterance else 0
            if take == 0:
                alone.append(lang)
                continue
            held.update(utts[int(i)].utt for i in rng.permutation(len(utts))[:take])
            split.append(f"{lang} ({take} of {len(utts)})")
            continue
        count = 0
        # Never take the last video of a language: training keeps at least one.
        for i in rng.permutation(len(speakers))[: len(speakers) - 1]:
            spk_utts = by_lang[lang][speakers[int(i)]]
            held.update(it.utt for it in spk_utts)
            count += len(spk_utts)
            if count >= per_lang:
                break
    if split:
        logger.info("%s: held out by utterance for the languages with a single video: %s; "
                    "their %s utterances share a video with training ones", what,
                    ", ".join(split), what)
    if alone:
        hint = "; --dev-split utterance holds some of their utterances out" \
            if what == "dev" and not by_utterance else ""
        logger.warning("%s: nothing held out for %s (a single video each%s)", what,
                       ", ".join(alone), hint)
    kept = [it for it in items if it.utt not in held]
    out = [it for it in items if it.utt in held]
    return kept, out


def prepare_voxlingua107(
    src: str | os.PathLike,
    out: str | os.PathLike,
    official_dev: str | os.PathLike | None = None,
    langs: list[str] | None = None,
    lang_map: dict[str, str] | None = None,
    dev_per_lang: int = 50,
    test_per_lang: int = 50,
    seed: int = 0,
    nj: int = 4,
    min_duration: float = 0.1,
    probe: bool = True,
    dev_split: str = "video",
) -> PrepareReport:
    """Write ``out/{train,dev,test}`` from an extracted VoxLingua107 at ``src``.

    ``src`` holds the language folders (or a ``train/`` folder holding them) and, when
    the dev set was extracted there, ``dev/``. See the module doc for the sets;
    ``dev_split="utterance"`` also holds out dev utterances of single-video languages.
    """
    if dev_split not in DEV_SPLITS:
        raise LreError(f"--dev-split: '{dev_split}' is not one of {', '.join(DEV_SPLITS)}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise LreError(f"{src}: VoxLingua107 folder not found")
    lang_map = lang_map or {}
    train_root = src / "train" if (src / "train").is_dir() else src
    dev_root = Path(official_dev) if official_dev is not None else src / "dev"
    if official_dev is not None and not dev_root.is_dir():
        raise LreError(f"{dev_root}: official dev folder not found")
    train, skipped_train = scan_language_dirs(train_root, lang_map, langs, "train")
    if not train:
        raise LreError(f"{train_root}: no <language code>/*.wav folders found")
    train, dev = hold_out(train, dev_per_lang, seed, "dev",
                          by_utterance=dev_split == "utterance")
    if not dev and dev_per_lang > 0:
        raise LreError(f"{train_root}: no language has two videos, so no dev set could be "
                       "held out by video; use --dev-split utterance")
    test_skipped: list[Skipped] = []
    if dev_root.is_dir():
        test, test_skipped = scan_language_dirs(dev_root, lang_map, langs, "test")
        logger.info("test = official dev set %s (%d files)", dev_root, len(test))
        leaked = {it.spk for it in test} & {it.spk for it in train + dev}
        if leaked:
            logger.warning("%d videos of the official dev set also appear in training data "
                           "(e.g. %s)", len(leaked), c_sorted(leaked)[0])
    else:
        logger.info("no official dev set at %s: test held out from training", dev_root)
        train, test = hold_out(train, test_per_lang, seed, "test")
    return finish(out, {"train": train, "dev": dev, "test": test},
                  {"train": skipped_train, "test": test_skipped}, nj=nj,
                  min_duration=min_duration, probe=probe)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="extracted VoxLingua107: <code>/*.wav folders (+ dev/)")
    parser.add_argument("out", help="data root: writes OUT/{train,dev,test}")
    parser.add_argument("--official-dev", default=None,
                        help="the extracted dev.zip folder (default: SRC/dev if present)")
    parser.add_argument("--dev-per-lang", type=int, default=50,
                        help="utterances per language held out from training as dev, whole "
                             "videos at a time (default %(default)s)")
    parser.add_argument("--dev-split", choices=DEV_SPLITS, default="video",
                        help="video (default): dev takes whole videos, so a language with a "
                             "single video has no dev data; utterance: such a language gets "
                             "some of its utterances held out for dev (same video as train)")
    parser.add_argument("--test-per-lang", type=int, default=50,
                        help="like --dev-per-lang, for test when there is no official dev set")
    parser.add_argument("--lang-map", default=None,
                        help="file of 'folder-code label' lines to rename language labels")
    parser.add_argument("--seed", type=int, default=0, help="seed for the held-out videos")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> PrepareReport:
    return prepare_voxlingua107(
        args.src, args.out, official_dev=args.official_dev, langs=parse_lang_list(args.langs),
        lang_map=read_map_file(args.lang_map, "language map") if args.lang_map else None,
        dev_per_lang=args.dev_per_lang, test_per_lang=args.test_per_lang, seed=args.seed,
        nj=args.nj, min_duration=args.min_duration, probe=not args.no_probe,
        dev_split=args.dev_split,
    )
