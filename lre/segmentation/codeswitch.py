"""A code-switched test set made from a data dir: recordings that change language.

``lre prepare codeswitch --in data/test --out data/test_cs --seed 2000`` writes a data dir
of ``--recordings`` recordings (default 120), each 2-4 utterances of the input joined end to
end: three in four switch language at every join (each utterance in another language), the
rest are controls in one language. A join is either immediate or a pause of 0-1 s of quiet
noise (half of each). Each utterance is first trimmed to its speech (10 ms frames within
40 dB of its loudest), so the reference turns start and end where the speech does.

Written: ``wav/<reco>.wav`` (16-bit), ``wav.scp``, ``utt2lang`` (the language with the most
speech: the set is also an ordinary test set), ``utt2spk`` (each recording its own
speaker), ``utt2dur``, and ``ref.rttm``, the reference turns (joined utterances of one
language with no pause between them make one turn). Every draw comes from ``--seed``
and the recording's index: the same seed and input give the same set.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lre.data.corpora.common import PrepareReport, Utterance, keyed_rng, write_set
from lre.data.datadir import DataDir, load_utterance
from lre.inference.records import Turn
from lre.segmentation.rttm import write_rttm
from lre.utils import LreError, atomic_open

logger = logging.getLogger(__name__)

HELP = "join utterances of a data dir into code-switched recordings with a reference RTTM"

REFERENCE = "ref.rttm"
PIECES = (2, 4)
PAUSE = (0.0, 1.0)
NO_PAUSE_SHARE = 0.5
SINGLE_SHARE = 0.25
TRIM_DB = 40.0
PAUSE_NOISE = 2e-4  # the embedded corpus's noise floor (about -74 dBFS)


@dataclass
class Plan:
    """One recording: its source utterances, their languages and the pauses between."""

    reco: str
    utts: list[str]
    langs: list[str]
    pauses: list[float]


def speech_extent(wave: np.ndarray, sample_rate: int, db: float = TRIM_DB) -> tuple[int, int]:
    """``[first, last)`` samples of the 10 ms frames within ``db`` of the loudest frame."""
    hop = max(1, sample_rate // 100)
    n = len(wave) // hop
    if n == 0:
        return 0, len(wave)
    rms = np.sqrt(np.mean(wave[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-db / 20))
    return int(loud[0] * hop), int(min((loud[-1] + 1) * hop, len(wave)))


def plan_recordings(utt2lang: dict[str, str], recordings: int, seed: int,
                    single_share: float = SINGLE_SHARE) -> list[Plan]:
    """What each recording is made of (module docstring); utterances are used in a
    shuffled order per language, each once before any is used again."""
    by_lang: dict[str, list[str]] = {}
    for utt in sorted(utt2lang):
        by_lang.setdefault(utt2lang[utt], []).append(utt)
    langs = sorted(by_lang)
    if len(langs) < 2:
        raise LreError(f"code-switched recordings need 2 or more languages, got {langs}")
    queues = {lang: [] for lang in langs}
    rounds = dict.fromkeys(langs, 0)

    def take(lang: str, used: set[str]) -> str:
        for _ in range(2):
            for i, utt in enumerate(queues[lang]):
                if utt not in used:
                    return queues[lang].pop(i)
            rng = keyed_rng(seed, "order", lang, rounds[lang])
            rounds[lang] += 1
            queues[lang] += [by_lang[lang][i] for i in rng.permutation(len(by_lang[lang]))]
        return queues[lang].pop(0)  # fewer utterances than pieces: one repeats

    n_single = round(recordings * single_share)
    kinds = keyed_rng(seed, "kinds").permutation([True] * n_single
                                                 + [False] * (recordings - n_single))
    plans = []
    for r, single in enumerate(kinds):
        rng = keyed_rng(seed, "recording", r)
        n = int(rng.integers(PIECES[0], PIECES[1] + 1))
        if single:
            order = [langs[int(rng.integers(len(langs)))]] * n
        else:
            n = min(n, len(langs))
            order = [langs[i] for i in rng.choice(len(langs), size=n, replace=False)]
        pauses = [0.0 if rng.random() < NO_PAUSE_SHARE else float(rng.uniform(*PAUSE))
                  for _ in range(n - 1)]
        used: set[str] = set()
        utts = []
        for lang in order:
            utts.append(take(lang, used))
            used.add(utts[-1])
        name = "-".join(dict.fromkeys(order))
        plans.append(Plan(f"cs{r:04d}-{name}", utts, order, pauses))
    return plans


def _join(plan: Plan, dd: DataDir, sample_rate: int, seed: int
          ) -> tuple[np.ndarray, list[Turn]]:
    """The recording's samples and its reference turns."""
    rng = keyed_rng(seed, "pause", plan.reco)
    pieces: list[np.ndarray] = []
    turns: list[Turn] = []
    at = 0
    for k, (utt, lang) in enumerate(zip(plan.utts, plan.langs, strict=True)):
        if k:
            gap = int(round(plan.pauses[k - 1] * sample_rate))
            pieces.append((PAUSE_NOISE * rng.standard_normal(gap)).astype(np.float32))
            at += gap
        wave = load_utterance(dd, utt, sample_rate=sample_rate)
        first, last = speech_extent(wave, sample_rate)
        pieces.append(wave[first:last].astype(np.float32))
        start, end = at / sample_rate, (at + last - first) / sample_rate
        if turns and turns[-1].language == lang and turns[-1].end >= start:
            turns[-1] = Turn(turns[-1].start, end, lang)
        else:
            turns.append(Turn(start, end, lang))
        at += last - first
    return np.concatenate(pieces), turns


def majority_language(turns: Sequence[Turn]) -> str:
    """The language with the most speech (the first of them on a tie)."""
    total: dict[str, float] = {}
    for t in turns:
        total[t.language] = total.get(t.language, 0.0) + t.duration
    return max(total, key=lambda lang: (total[lang], -list(total).index(lang)))


def prepare_codeswitch(
    src: str | os.PathLike,
    out: str | os.PathLike,
    recordings: int = 120,
    seed: int = 2000,
    sample_rate: int = 16000,
    single_share: float = SINGLE_SHARE,
) -> PrepareReport:
    """Write the code-switched set ``out`` from the utterances of data dir ``src``
    (module docstring). At most one recording per source utterance is made."""
    src, out = Path(src), Path(out)
    dd = DataDir.load(src)
    if recordings < 1:
        raise LreError(f"--recordings must be at least 1, got {recordings}")
    if not 0.0 <= single_share <= 1.0:
        raise LreError(f"--single-share must be in [0, 1], got {single_share}")
    if recordings > len(dd):
        logger.info("%s: %d utterances; making %d recordings, not %d", src, len(dd), len(dd),
                    recordings)
        recordings = len(dd)
    plans = plan_recordings(dd.utt2lang, recordings, seed, single_share)
    items, reference = [], {}
    wav_dir = out / "wav"
    for plan in plans:
        wave, turns = _join(plan, dd, sample_rate, seed)
        path = wav_dir / f"{plan.reco}.wav"
        with atomic_open(path, "wb") as f:
            sf.write(f, wave, sample_rate, format="WAV", subtype="PCM_16")
        reference[plan.reco] = turns
        items.append(Utterance(plan.reco, plan.reco, majority_language(turns),
                               str(path.resolve()), duration=len(wave) / sample_rate))
    report = PrepareReport(sets=[write_set(out, items)])
    write_rttm(out / REFERENCE, {reco: reference[reco] for reco in sorted(reference)})
    switched = sum(len({t.language for t in ts}) > 1 for ts in reference.values())
    logger.info("%s: %d recordings (%d switch language, %d in one), reference %s", out,
                len(plans), switched, len(plans) - switched, out / REFERENCE)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="src", required=True,
                        help="data dir whose utterances are joined (e.g. data/test)")
    parser.add_argument("--out", required=True, help="the new data dir (e.g. data/test_cs)")
    parser.add_argument("--recordings", type=int, default=120,
                        help="recordings to make (default %(default)s; at most one per "
                             "source utterance)")
    parser.add_argument("--single-share", type=float, default=SINGLE_SHARE,
                        help="share of single-language control recordings "
                             "(default %(default)s)")
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--sample-rate", type=int, default=16000)


def run(args: argparse.Namespace) -> PrepareReport:
    return prepare_codeswitch(args.src, args.out, recordings=args.recordings, seed=args.seed,
                              sample_rate=args.sample_rate, single_share=args.single_share)
