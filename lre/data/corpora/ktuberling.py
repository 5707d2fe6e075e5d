"""Real human speech: the recorded words of KTuberling (Debian package ``ktuberling-data``).

``lre prepare ktuberling --out data`` reads ``/usr/share/ktuberling/sounds/<folder>/`` (one
native speaker per language saying 11-210 single words: "ball", "hat", "nose" ...), trims
each word of its leading and trailing silence, levels it, and joins the words of each
language into 3-6 s clips with 0.1-0.3 s pauses. It writes two Kaldi data dirs:

    data/test_human      the languages the recognizer knows (``--langs``)
    data/test_human_oos  every other language of the package (out of set)

with the clips as 16 kHz 16-bit WAVs under ``data/wavs/<set>/<lang>/``, ``text`` holding the
words of each clip, and ``data/ktuberling_info.json`` saying per language how many distinct
words and clips there are. Folder names are the package's locale codes; variants of one
language (``sr``, ``sr@latin``) share its code and identical recordings are kept once.

Each language aims at ``--clips-per-lang`` clips. A clip takes the least used words first
(random among equals), so a word is heard in a second clip only once every word of its
language has been used, which happens only in languages with too few words for that many
clips; no two clips hold the same set of words. Everything random is drawn from ``--seed``
and the language: the same seed gives the same clips, byte for byte.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lre.data.corpora.common import (
    PrepareReport,
    Utterance,
    keyed_rng,
    parse_lang_list,
    safe_id,
    write_set,
)
from lre.utils import LreError, atomic_open, atomic_write_text

logger = logging.getLogger(__name__)

HELP = "real human speech: KTuberling's recorded words (Debian ktuberling-data) as 3-6 s clips"

DEFAULT_ROOT = "/usr/share/ktuberling/sounds"
EXTENSIONS = (".ogg", ".opus", ".wav", ".flac")
SAMPLE_RATE = 16000
KNOWN_SET, OOS_SET = "test_human", "test_human_oos"
CLIP_SECONDS = (3.0, 6.0)
TARGET_SECONDS = (3.5, 5.5)  # what a clip aims at, inside CLIP_SECONDS
GAP_SECONDS = (0.1, 0.3)
CLIPS_PER_LANG = 30
TRIM_DB = 35.0  # a 10 ms frame this far below the word's loudest frame is silence
TRIM_MARGIN = 0.02  # seconds kept either side of the speech
MIN_WORD_SECONDS = 0.15
WORD_RMS = 0.05  # every word levelled to about -26 dBFS: one speaker, one loudness
NOISE_FLOOR = 2e-4  # the pauses are not exact digital zero
INFO_FILE = "ktuberling_info.json"


def folder_language(folder: str) -> str:
    """A sounds folder's language code: ``sr@latin`` -> ``sr``, ``pt_BR`` -> ``pt-br``."""
    return folder.split("@", 1)[0].replace("_", "-").lower()


def default_known_langs() -> list[str]:
    """The languages of the embedded corpus by default: those a default model knows."""
    from lre.data.corpora.synth import DEFAULT_LANGS

    return list(DEFAULT_LANGS)


def scan_sounds(root: Path) -> dict[str, list[Path]]:
    """Language code -> its word files (sorted); a recording found in two folders of one
    language (``sr`` and ``sr@latin``) is kept once."""
    if not root.is_dir():
        raise LreError(f"{root}: KTuberling sounds not found (Debian package ktuberling-data; "
                       "tools/setup.sh installs it)")
    out: dict[str, list[Path]] = {}
    seen: dict[str, set[str]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        lang = folder_language(folder.name)
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS):
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            if digest in seen.setdefault(lang, set()):
                continue
            seen[lang].add(digest)
            out.setdefault(lang, []).append(path)
    if not out:
        raise LreError(f"{root}: no word recordings ({', '.join(EXTENSIONS)}) in its folders")
    return out


def trim_and_level(wave: np.ndarray, sr: int) -> np.ndarray:
    """``wave`` (n,) without its leading and trailing silence (10 ms frames more than
    ``TRIM_DB`` below the loudest, ``TRIM_MARGIN`` kept), scaled to RMS ``WORD_RMS`` with
    the peak at most 0.9. Returns (m,), empty when nothing is above the threshold."""
    hop = int(0.01 * sr)
    n_frames = len(wave) // hop
    if n_frames == 0:
        return wave[:0]
    energy = np.mean(wave[: n_frames * hop].astype(np.float64).reshape(n_frames, hop) ** 2,
                     axis=1)
    if energy.max() <= 0:
        return wave[:0]
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-TRIM_DB / 10))
    margin = int(TRIM_MARGIN * sr)
    start = max(0, int(loud[0]) * hop - margin)
    end = min(len(wave), (int(loud[-1]) + 1) * hop + margin)
    word = wave[start:end].astype(np.float64)
    word *= WORD_RMS / np.sqrt(np.mean(word**2))
    peak = np.max(np.abs(word))
    if peak > 0.9:
        word *= 0.9 / peak
    return word.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _resampling_filter(rate: int) -> tuple[int, int, np.ndarray]:
    """``(up, down, FIR taps)`` taking ``rate`` to 16 kHz: scipy's ``resample_poly``
    default design (Kaiser window, beta 5), made once per source rate."""
    from scipy.signal import firwin

    g = math.gcd(rate, SAMPLE_RATE)
    up, down = SAMPLE_RATE // g, rate // g
    width = max(up, down)
    return up, down, firwin(20 * width + 1, 1.0 / width, window=("kaiser", 5.0))


def load_words(files: list[Path]) -> list[tuple[str, np.ndarray]]:
    """``(word, samples at 16 kHz)`` of each readable file, trimmed and levelled; files
    that cannot be read or hold under ``MIN_WORD_SECONDS`` of sound are left out."""
    from scipy.signal import resample_poly

    from lre.data.audio import AudioError, read_recording, to_mono

    words = []
    for path in files:
        try:
            data, rate = read_recording(str(path))
        except AudioError as e:
            logger.warning("skipped %s", e)
            continue
        wave = to_mono(data)
        if rate != SAMPLE_RATE and len(wave):
            # Polyphase resampling: ~10x faster than torchaudio's for 44.1 kHz sources,
            # which matters over the package's ~2000 files.
            up, down, taps = _resampling_filter(rate)
            wave = resample_poly(wave, up, down, window=taps).astype(np.float32)
        word = trim_and_level(wave, SAMPLE_RATE)
        if len(word) >= MIN_WORD_SECONDS * SAMPLE_RATE:
            words.append((path.stem, word))
        else:
            logger.warning("skipped %s: under %g s of sound", path, MIN_WORD_SECONDS)
    return words


def _pick_words(lengths: np.ndarray, uses: np.ndarray, gaps: np.ndarray, target: float,
                rng: np.random.Generator) -> list[int]:
    """Word indices of one clip: least used first (random among equals), each word once,
    stopping at ``target`` seconds without passing the clip's maximum. Words of the next
    use count are only taken when the least used ones cannot fill a clip."""
    order = np.lexsort((rng.random(len(lengths)), uses))
    max_len = CLIP_SECONDS[1] * SAMPLE_RATE
    for level in np.unique(uses):
        chosen: list[int] = []
        total = 0
        for i in order:
            if uses[i] > level:
                continue
            extra = lengths[i] + (gaps[len(chosen) - 1] if chosen else 0)
            if total + extra > max_len:
                continue
            chosen.append(int(i))
            total += extra
            if total >= target * SAMPLE_RATE:
                return chosen
        if total >= CLIP_SECONDS[0] * SAMPLE_RATE:
            return chosen
    return []


def make_clips(words: list[tuple[str, np.ndarray]], n_clips: int, rng: np.random.Generator
               ) -> tuple[list[tuple[list[str], np.ndarray]], np.ndarray]:
    """Up to ``n_clips`` clips of 3-6 s from ``words``: ``[(word names, samples (n,))]``
    and how often each word was used. No two clips hold the same set of words; fewer
    clips come back when the words cannot make more."""
    lengths = np.array([len(w) for _, w in words])
    uses = np.zeros(len(words), dtype=np.int64)
    clips: list[tuple[list[str], np.ndarray]] = []
    seen: set[frozenset[int]] = set()
    for _ in range(n_clips):
        for _attempt in range(20):
            target = rng.uniform(*TARGET_SECONDS)
            gaps = np.round(rng.uniform(*GAP_SECONDS, size=len(words)) * SAMPLE_RATE)
            chosen = _pick_words(lengths, uses, gaps.astype(np.int64), target, rng)
            if chosen and frozenset(chosen) not in seen:
                break
        else:
            break
        seen.add(frozenset(chosen))
        uses[chosen] += 1
        parts = []
        for k, i in enumerate(chosen):
            if k:
                parts.append(np.zeros(int(gaps[k - 1]), np.float32))
            parts.append(words[i][1])
        audio = np.concatenate(parts)
        audio += rng.standard_normal(len(audio)).astype(np.float32) * np.float32(NOISE_FLOOR)
        clips.append(([words[i][0] for i in chosen], audio))
    return clips, uses


@dataclass
class LanguageClips:
    """What one language gave: its set, word count and clips written."""

    lang: str
    set_name: str
    files: int
    words: int
    clips: list[Utterance]
    max_uses: int


def _write_language(out: Path, lang: str, set_name: str, files: list[Path], n_clips: int,
                    seed: int) -> LanguageClips:
    """Make and write the clips of one language; their ``Utterance`` records."""
    words = load_words(files)
    clips, uses = make_clips(words, n_clips, keyed_rng(seed, "ktuberling", lang))
    spk = f"{safe_id(lang)}-ktuberling"
    wav_dir = out.resolve() / "wavs" / set_name / lang
    wav_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for index, (names, audio) in enumerate(clips):
        utt = f"{spk}-clip{index:03d}"
        path = wav_dir / f"{utt}.wav"
        pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
        with atomic_open(path, "wb") as f:
            sf.write(f, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        items.append(Utterance(utt, spk, lang, str(path), len(pcm) / SAMPLE_RATE,
                               " ".join(names)))
    if not clips:
        logger.warning("%s: its %d words make no clip of %g s or more; left out", lang,
                       len(words), CLIP_SECONDS[0])
    return LanguageClips(lang, set_name, len(files), len(words), items,
                         int(uses.max()) if len(uses) else 0)


def prepare_ktuberling(
    out: str | os.PathLike,
    root: str | os.PathLike = DEFAULT_ROOT,
    langs: list[str] | None = None,
    seed: int = 0,
    clips_per_lang: int = CLIPS_PER_LANG,
    nj: int = 2,
) -> PrepareReport:
    """Write ``out/test_human`` (languages in ``langs``, default the embedded corpus's),
    ``out/test_human_oos`` (every other language) and ``out/ktuberling_info.json``, with
    ``nj`` processes (one language at a time each; the output does not depend on ``nj``).

    Raises ``LreError`` when the sounds folder is missing or holds no recordings.
    """
    out, root = Path(out), Path(root)
    known = set(langs or default_known_langs())
    if clips_per_lang < 1:
        raise LreError(f"--clips-per-lang must be at least 1, got {clips_per_lang}")
    sounds = scan_sounds(root)
    jobs = [(out, lang, KNOWN_SET if lang in known else OOS_SET, files, clips_per_lang, seed)
            for lang, files in sorted(sounds.items())]
    if nj > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a forked copy of a process that has started torch threads can deadlock.
        with ProcessPoolExecutor(min(nj, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_write_language, *zip(*jobs, strict=True)))
    else:
        results = [_write_language(*job) for job in jobs]
    report = PrepareReport()
    for set_name in (KNOWN_SET, OOS_SET):
        items = [u for r in results if r.set_name == set_name for u in r.clips]
        if items:
            report.sets.append(write_set(out / set_name, items))
        else:
            logger.warning("%s: no language of %s for this set; not written", set_name, root)
    info = {"root": str(root), "seed": seed, "clips_per_lang": clips_per_lang,
            "known_langs": sorted(known),
            "missing_known_langs": sorted(known - set(sounds)),
            "langs": {r.lang: {"set": r.set_name, "files": r.files, "distinct_words": r.words,
                               "clips": len(r.clips), "max_clips_per_word": r.max_uses,
                               "seconds": round(sum(u.duration or 0.0 for u in r.clips), 2)}
                      for r in results}}
    atomic_write_text(out / INFO_FILE, json.dumps(info, indent=1) + "\n")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True,
                        help=f"data root: writes OUT/{KNOWN_SET}, OUT/{OOS_SET}, OUT/wavs/")
    parser.add_argument("--root", default=DEFAULT_ROOT,
                        help="KTuberling's sounds folder (default %(default)s)")
    parser.add_argument("--langs", default=None,
                        help=f"languages the recognizer knows, comma-separated; they go to "
                             f"{KNOWN_SET}, the others to {OOS_SET} (default: the embedded "
                             "corpus's default languages)")
    parser.add_argument("--clips-per-lang", type=int, default=CLIPS_PER_LANG,
                        help="clips each language aims at (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=2,
                        help="parallel processes, one language each (default %(default)s)")


def run(args: argparse.Namespace) -> PrepareReport:
    return prepare_ktuberling(args.out, root=args.root, langs=parse_lang_list(args.langs),
                              seed=args.seed, clips_per_lang=args.clips_per_lang, nj=args.nj)
