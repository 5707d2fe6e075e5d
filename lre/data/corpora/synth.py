"""The embedded default corpus: real text of each language spoken by espeak-ng.

``lre prepare synth --out data`` writes ``data/{train,dev,test}`` (Kaldi data dirs) and the
16 kHz 16-bit mono WAVs under ``data/wavs/<split>/<lang>/``. Text comes from Django's
translation catalogs (``lre.data.corpora.text``). A *speaker* is an espeak-ng voice variant
(``-v <lang>+<variant>``) with a base pitch and speaking rate; each utterance also varies
pitch, rate, amplitude and word gap a little around its speaker's base. The variant list
is partitioned between train, dev and test, so the splits share no voice, and the phrase
pool of each language is partitioned too, so they share no sentence. ``--train-voice-mix N``
gives train N more variants (``mix000``...) made from its own: a copy of a train variant with
each formant's frequency drawn within the range the train variants span, written into a copy
of espeak-ng-data under ``wavs/espeak-ng/``.

Everything is drawn from random generators keyed by (seed, split, language, index): the
same seed gives the same text, speakers and audio bytes whatever ``--nj`` is, and asking
for more utterances keeps the ones already made (generation skips WAVs that exist).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lre.data.corpora.common import PrepareReport, Skipped, Utterance, keyed_rng, write_set
from lre.data.corpora.text import django_version, load_phrases
from lre.utils import LreError, atomic_open, atomic_write_text

logger = logging.getLogger(__name__)

HELP = "synthesize the embedded multilingual corpus with espeak-ng (no download)"

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
SPLITS = ("train", "dev", "test")
# Share of each language's phrase pool (and of the voice variants) that each split draws from.
SPLIT_SHARES = {"train": 0.6, "dev": 0.2, "test": 0.2}
DEFAULT_LANGS = ("en", "de", "fr", "es", "it", "pt", "nl", "da", "ru", "uk", "pl", "cs", "fi", "hu")
DEFAULT_COUNTS = {"train": 160, "dev": 30, "test": 30}

# lang code -> (Django locale, espeak-ng voice). English text is Django's source strings.
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("en", "en-us"),
    "de": ("de", "de"),
    "fr": ("fr", "fr-fr"),
    "es": ("es", "es"),
    "it": ("it", "it"),
    "pt": ("pt", "pt"),
    "nl": ("nl", "nl"),
    "da": ("da", "da"),
    "ru": ("ru", "ru"),
    "uk": ("uk", "uk"),
    "pl": ("pl", "pl"),
    "cs": ("cs", "cs"),
    "fi": ("fi", "fi"),
    "hu": ("hu", "hu"),
    "sv": ("sv", "sv"),
    "nb": ("nb", "nb"),
    "ro": ("ro", "ro"),
    "tr": ("tr", "tr"),
    "el": ("el", "el"),
    "bg": ("bg", "bg"),
    "hr": ("hr", "hr"),
    "sk": ("sk", "sk"),
    "sl": ("sl", "sl"),
    "sr": ("sr", "sr"),
    "et": ("et", "et"),
    "lv": ("lv", "lv"),
    "lt": ("lt", "lt"),
    "ca": ("ca", "ca"),
    "eu": ("eu", "eu"),
    "ga": ("ga", "ga"),
    "is": ("is", "is"),
    "sq": ("sq", "sq"),
    "id": ("id", "id"),
    "vi": ("vi", "vi"),
    "pt-br": ("pt_BR", "pt-br"),
    "af": ("af", "af"),
    "az": ("az", "az"),
    "be": ("be", "be"),
    "bn": ("bn", "bn"),
    "cy": ("cy", "cy"),
    "eo": ("eo", "eo"),
    "fa": ("fa", "fa"),
    "gd": ("gd", "gd"),
    "he": ("he", "he"),
    "hy": ("hy", "hy"),
    "ka": ("ka", "ka"),
    "kk": ("kk", "kk"),
    "ko": ("ko", "ko"),
    "mk": ("mk", "mk"),
    "ms": ("ms", "ms"),
    "sw": ("sw", "sw"),
}

# Speaker and per-utterance variation (espeak-ng units: pitch 0-99, rate in words/minute,
# amplitude 0-200, word gap in 10 ms units).
PITCH_RANGE = (20, 80)
RATE_RANGE = (135, 195)
AMPLITUDE_RANGE = (40, 95)  # louder makes several variants clip
PITCH_JITTER = 6
RATE_JITTER = 10
AMPLITUDE_JITTER = 8
WORD_GAP_CHOICES = (0, 0, 0, 1, 2)
NOISE_FLOOR = 2e-4  # about -74 dBFS of white noise, so silence is not exact digital zero
MAX_ATTEMPTS = 8
PHRASES_PER_PLAN = 40
N_FORMANTS = 9  # espeak-ng voice files set formants 0..8
MIX_PREFIX = "mix"
FORMANT_LINE = re.compile(r"^(\s*formant\s+)(\d+)(\s+)(-?\d+)(.*)$")


@dataclass
class SynthJob:
    """Everything one worker needs to make one utterance (picklable, fully determined)."""

    utt: str
    spk: str
    lang: str
    split: str
    voice: str  # espeak-ng "-v" value, e.g. "fi+m3"
    pitch: int
    rate: int
    amplitude: int
    word_gap: int
    target: float  # seconds the utterance aims at
    phrases: list[str]
    wav: str
    min_dur: float
    max_dur: float
    noise_seed: int
    espeak_path: str | None = None  # espeak-ng --path (holds espeak-ng-data); None: system


@dataclass
class SynthResult:
    utt: str
    duration: float | None = None
    text: str | None = None
    error: str | None = None
    truncated: bool = False
    reused: bool = False


# ------------------------------------------------------------------ espeak-ng
def espeak_binary() -> str:
    """Path of espeak-ng; raises a clear ``LreError`` when it is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise LreError(
            "espeak-ng is not installed: the embedded corpus is synthesized with it; run "
            "tools/setup.sh (or: sudo apt-get install espeak-ng)"
        )
    return exe


def espeak_info() -> tuple[str, Path]:
    """``(version, data directory)`` of the installed espeak-ng."""
    out = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True,
                         check=False).stdout
    m = re.search(r"eSpeak NG text-to-speech:\s*(\S+)\s+Data at:\s*(.+)", out)
    if not m:
        raise LreError(f"espeak-ng --version: unexpected output {out.strip()[:80]!r}")
    return m.group(1), Path(m.group(2).strip())


def espeak_variants(data_dir: Path | None = None) -> list[str]:
    """The voice variants in espeak-ng-data/voices/!v, sorted (m1..m8, f1..f5, klatt...)."""
    if data_dir is None:
        _, data_dir = espeak_info()
    vdir = data_dir / "voices" / "!v"
    if not vdir.is_dir():
        raise LreError(f"{vdir}: espeak-ng voice variants not found (espeak-ng-data incomplete?)")
    names = sorted(p.name for p in vdir.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(names) < len(SPLITS):
        raise LreError(f"{vdir}: only {len(names)} voice variants, need at least {len(SPLITS)}")
    return names


def espeak_voices() -> set[str]:
    """Language voice names espeak-ng knows (first column of ``espeak-ng --voices``)."""
    out = subprocess.run([espeak_binary(), "--voices"], capture_output=True, text=True,
                         check=False).stdout
    names = set()
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            names.add(fields[1])
            names.update(re.findall(r"\(([^ )]+) \d+\)", line))
    return names


def run_espeak(text: str, voice: str, pitch: int, rate: int, amplitude: int,
               word_gap: int, espeak_path: str | None = None) -> np.ndarray:
    """Speak ``text``; returns float32 samples at espeak-ng's native 22050 Hz.
    ``espeak_path`` is the folder holding the espeak-ng-data to use (None: the system's)."""
    cmd = [espeak_binary(), "-v", voice, "-p", str(pitch), "-s", str(rate), "-a",
           str(amplitude), "-g", str(word_gap), "-b", "1", "--stdout", "--stdin"]
    if espeak_path is not None:
        cmd.insert(1, f"--path={espeak_path}")
    # Text on stdin: a phrase starting with "-" must not be read as an option.
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False,
                          timeout=120)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"espeak-ng -v {voice} failed (rc {proc.returncode}): "
                           f"{err[0] if err else 'no audio'}")
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if sr != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {sr} Hz audio, expected {ESPEAK_RATE}")
    return audio


def to_16k(audio: np.ndarray) -> np.ndarray:
    """22050 Hz -> 16000 Hz with a polyphase filter (320/441; deterministic)."""
    from scipy.signal import resample_poly

    return resample_poly(audio.astype(np.float64), 320, 441).astype(np.float32)


# ------------------------------------------------------------------ one utterance
def join_phrases(phrases: list[str]) -> str:
    """Concatenate phrases into one text, ending each with a sentence stop for a pause."""
    parts = []
    for p in phrases:
        parts.append(p if p[-1] in ".!?;。" else p + ".")
    return " ".join(parts)


PAUSE_SECONDS = 0.35  # espeak-ng's pause after a sentence, roughly


def select_phrases(target: float, phrases: list[str], chars_per_second: float,
                   max_dur: float) -> list[int]:
    """Indices of the phrases to speak, in plan order, so the text lasts about ``target``
    seconds at ``chars_per_second``. A phrase that would push the estimate past 90% of
    ``max_dur`` is passed over for a later, shorter one."""
    def seconds(p: str) -> float:
        return (len(p) + 2) / chars_per_second + PAUSE_SECONDS

    chosen: list[int] = []
    total = 0.0
    for i, p in enumerate(phrases):
        d = seconds(p)
        if total + d > 0.9 * max_dur:
            continue
        if total + d >= target:
            # Take this last phrase only when that lands closer to the target.
            if not chosen or total + d - target <= target - total:
                chosen.append(i)
            return chosen
        chosen.append(i)
        total += d
    if not chosen:  # every phrase alone is too long by the estimate: take the shortest
        chosen = [min(range(len(phrases)), key=lambda i: len(phrases[i]))]
    return chosen


def cut_at_pause(audio: np.ndarray, sr: int, min_dur: float, max_dur: float) -> np.ndarray:
    """Shorten ``audio`` to at most ``max_dur`` s, cutting in the last of the quietest 20 ms
    stretches between ``min_dur`` and ``max_dur`` (a pause between words), with a 10 ms
    fade-out."""
    hop = int(0.01 * sr)
    lo, hi = int(min_dur * sr) // hop, int(max_dur * sr) // hop - 2
    frames = audio[: (len(audio) // hop) * hop].reshape(-1, hop)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    smooth = np.convolve(energy, np.ones(2) / 2, mode="same")
    if hi > lo:
        window = smooth[lo:hi]
        # The latest frame as quiet as the quietest one (within a factor for the noise
        # floor): keep as much speech as fits.
        quiet = np.flatnonzero(window <= window.min() * 4.0 + 1e-10)
        cut = (lo + int(quiet[-1])) * hop
    else:
        cut = int(max_dur * sr) - hop
    out = audio[:cut].copy()
    fade = min(hop, len(out))
    out[len(out) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def synthesize(job: SynthJob) -> SynthResult:
    """Make one utterance WAV (atomically) within [min_dur, max_dur]; skip if it exists."""
    wav, txt = Path(job.wav), Path(job.wav).with_suffix(".txt")
    if wav.is_file() and txt.is_file():
        try:
            info = sf.info(str(wav))
            if info.samplerate == SAMPLE_RATE and info.frames > 0:
                return SynthResult(job.utt, info.frames / SAMPLE_RATE,
                                   txt.read_text(encoding="utf-8").strip(), reused=True)
        except (sf.LibsndfileError, RuntimeError, OSError):
            pass  # broken leftover: make it again
    try:
        audio, text, truncated = _fit_duration(job)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return SynthResult(job.utt, error=str(e))
    rng = np.random.default_rng(job.noise_seed)
    audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * np.float32(NOISE_FLOOR)
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    wav.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(txt, text + "\n")
    with atomic_open(wav, "wb") as f:
        sf.write(f, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return SynthResult(job.utt, len(pcm) / SAMPLE_RATE, text, truncated=truncated)


def _fit_duration(job: SynthJob) -> tuple[np.ndarray, str, bool]:
    # Speaking rate in characters/second: first guessed from the espeak-ng rate (words per
    # minute at ~6.5 characters per word incl. space), then measured on each attempt and
    # the phrases chosen again with it.
    cps = job.rate * 6.5 / 60.0
    chosen = select_phrases(job.target, job.phrases, cps, job.max_dur)
    tried: dict[tuple[int, ...], np.ndarray] = {}
    for _ in range(MAX_ATTEMPTS):
        key = tuple(chosen)
        if key in tried:
            break
        text = join_phrases([job.phrases[i] for i in chosen])
        audio = to_16k(run_espeak(text, job.voice, job.pitch, job.rate, job.amplitude,
                                  job.word_gap, job.espeak_path))
        tried[key] = audio
        dur = len(audio) / SAMPLE_RATE
        if job.min_dur <= dur <= job.max_dur:
            return audio, text, False
        cps = max(len(text) / max(dur, 0.1), 1.0)
        new = select_phrases(job.target, job.phrases, cps, job.max_dur)
        if tuple(new) in tried:  # the estimate repeats itself: step by one phrase instead
            if dur > job.max_dur:
                new = chosen[:-1] or chosen
            else:
                rest = [i for i in range(len(job.phrases)) if i not in chosen]
                if rest:  # the shortest phrase left is the least likely to overshoot
                    new = chosen + [min(rest, key=lambda i: len(job.phrases[i]))]
        chosen = new
    # No choice of phrases fits (a single very long phrase, say): take the shortest attempt
    # that is long enough and cut it at a pause.
    long_enough = [k for k, a in tried.items() if len(a) >= job.min_dur * SAMPLE_RATE]
    if not long_enough:
        raise RuntimeError(f"{job.utt}: could not reach {job.min_dur} s with "
                           f"{len(job.phrases)} phrases")
    key = min(long_enough, key=lambda k: len(tried[k]))
    audio = tried[key]
    if len(audio) > job.max_dur * SAMPLE_RATE:
        audio = cut_at_pause(audio, SAMPLE_RATE, job.min_dur, job.max_dur)
    return audio, join_phrases([job.phrases[i] for i in key]), True


# ------------------------------------------------------------------ generated variants
def formant_frequencies(text: str) -> dict[int, int]:
    """Formant number -> frequency % of the ``formant`` lines of a voice variant file."""
    freqs = {}
    for line in text.splitlines():
        m = FORMANT_LINE.match(line)
        if m:
            freqs[int(m.group(2))] = int(m.group(4))
    return freqs


def read_variant(vdir: Path, name: str) -> str:
    # latin-1 gives back every byte of the file unchanged when written again.
    return (vdir / name).read_text(encoding="latin-1")


def formant_ranges(vdir: Path, names: list[str]) -> list[tuple[int, int]]:
    """``(min, max)`` frequency % of formants 0..8 over the variant files ``names`` in
    ``vdir`` (100, espeak-ng's default, where a file has no line for a formant)."""
    per_file = [formant_frequencies(read_variant(vdir, n)) for n in names]
    return [(min(f.get(k, 100) for f in per_file), max(f.get(k, 100) for f in per_file))
            for k in range(N_FORMANTS)]


def mix_variant_text(base: str, freqs: list[int]) -> str:
    """``base`` (a variant file) with formant k's frequency % set to ``freqs[k]``; strength,
    width and every other line are kept. A formant it has no line for gets one with
    strength and width 100 (espeak-ng's defaults)."""
    lines, seen = [], set()
    for line in base.splitlines():
        m = FORMANT_LINE.match(line)
        if m and int(m.group(2)) < N_FORMANTS:
            k = int(m.group(2))
            seen.add(k)
            line = f"{m.group(1)}{k}{m.group(3)}{freqs[k]}{m.group(5)}"
        lines.append(line)
    lines += [f"formant {k} {freqs[k]} 100 100" for k in range(N_FORMANTS) if k not in seen]
    return "\n".join(lines) + "\n"


def make_mix_variants(seed: int, count: int, vdir: Path, train_variants: list[str]
                      ) -> tuple[dict[str, str], list[tuple[int, int]], dict[str, dict]]:
    """``count`` generated variants ``mix000``...: each a random train variant with every
    formant frequency drawn uniformly (integer %) within the train variants' range.

    Returns (name -> file text, the formant ranges, name -> {"base", "formant_freq"}).
    """
    ranges = formant_ranges(vdir, train_variants)
    texts, info = {}, {}
    for i in range(count):
        rng = keyed_rng(seed, "mix", i)
        base = train_variants[int(rng.integers(len(train_variants)))]
        freqs = [int(rng.integers(lo, hi + 1)) for lo, hi in ranges]
        name = f"{MIX_PREFIX}{i:03d}"
        texts[name] = mix_variant_text(read_variant(vdir, base), freqs)
        info[name] = {"base": base, "formant_freq": freqs}
    return texts, ranges, info


def copy_espeak_data(data_dir: Path, espeak_root: Path) -> Path:
    """``espeak_root/espeak-ng-data``, a copy of ``data_dir`` made once (into a temporary
    folder, then renamed, so an interrupted copy never counts as done)."""
    target = espeak_root / "espeak-ng-data"
    if not target.is_dir():
        espeak_root.mkdir(parents=True, exist_ok=True)
        tmp = espeak_root / f".espeak-ng-data.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(data_dir, tmp, symlinks=True)
        try:
            tmp.rename(target)
        except OSError:  # another run finished the same copy first
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():
                raise
    return target


def install_mix_variants(espeak_root: Path, texts: dict[str, str]) -> None:
    """Make the copy's ``voices/!v`` hold exactly the generated variant files (unchanged
    files are left alone). The system's variants go: espeak-ng lists at most 349 voices and
    drops the rest unannounced, and only jobs with a generated variant use the copy."""
    vdir = espeak_root / "espeak-ng-data" / "voices" / "!v"
    for path in vdir.iterdir():
        if path.is_file() and path.name not in texts:
            path.unlink()
    for name, text in texts.items():
        path = vdir / name
        if not path.is_file() or path.read_text(encoding="latin-1") != text:
            with atomic_open(path, "w", encoding="latin-1", newline="\n") as f:
                f.write(text)


def check_mix_voice(espeak_root: Path, voice: str, name: str, base: str) -> None:
    """Raise ``LreError`` unless espeak-ng speaks variant ``name`` from ``espeak_root``
    differently from its base variant (espeak-ng falls back silently to the plain voice
    when it cannot find a variant)."""
    text = "The quick brown fox jumps over the lazy dog."
    try:
        mixed = run_espeak(text, f"{voice}+{name}", 50, 175, 80, 0, str(espeak_root))
        plain = run_espeak(text, f"{voice}+{base}", 50, 175, 80, 0, None)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        raise LreError(f"{espeak_root}: espeak-ng cannot speak generated variant {name}: {e}"
                       ) from e
    if mixed.shape == plain.shape and np.array_equal(mixed, plain):
        raise LreError(f"{espeak_root}: generated variant {name} sounds like its base {base} "
                       "(espeak-ng did not read it)")


# ------------------------------------------------------------------ planning
def partition(items: list[str], seed: int, what: str) -> dict[str, list[str]]:
    """Shuffle ``items`` by seed and cut them into train/dev/test by ``SPLIT_SHARES``."""
    order = [items[i] for i in keyed_rng(seed, what).permutation(len(items))]
    n = len(order)
    n_dev = max(1, round(n * SPLIT_SHARES["dev"]))
    n_test = max(1, round(n * SPLIT_SHARES["test"]))
    n_train = n - n_dev - n_test
    if n_train < 1:
        raise LreError(f"{what}: {n} items cannot be shared between train, dev and test")
    return {"train": sorted(order[:n_train]), "dev": sorted(order[n_train:n_train + n_dev]),
            "test": sorted(order[n_train + n_dev:])}


def speaker_of(seed: int, split: str, lang: str, index: int,
               variants: list[str]) -> tuple[str, int, int, int]:
    """``(variant, base pitch, base rate, base amplitude)`` of speaker ``index``."""
    rng = keyed_rng(seed, "speaker", split, lang, index)
    variant = variants[int(rng.integers(len(variants)))]
    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
    amplitude = int(rng.integers(AMPLITUDE_RANGE[0], AMPLITUDE_RANGE[1] + 1))
    return variant, pitch, rate, amplitude


def speaker_id(lang: str, variant: str, pitch: int, rate: int) -> str:
    """``<lang>-<variant>-p<pitch>-s<rate>``; the variant keeps only letters and digits so
    that every id character sorts after the ``-`` separator (Kaldi's utt/spk prefix rule)."""
    clean = re.sub(r"[^A-Za-z0-9]", "", variant) or "v"
    return f"{lang}-{clean}-p{pitch:02d}-s{rate:03d}"


def plan_jobs(
    out: Path, langs: list[str], counts: dict[str, int], seed: int, utts_per_spk: int,
    min_dur: float, max_dur: float, variants: list[str],
    extra_train_variants: Sequence[str] = (), espeak_path: str | None = None,
    train_voices: int = 0,
) -> list[SynthJob]:
    """Every utterance of the corpus, fully determined by the seed (no audio made yet).

    ``extra_train_variants`` join train's share of ``variants``; espeak-ng finds them in the
    espeak-ng-data under ``espeak_path``. ``train_voices > 0``: train has that many speakers
    per language (sharing its utterances) instead of one per ``utts_per_spk``; dev and test
    stay as they are.
    """
    variant_split = partition(variants, seed, "variants")
    variant_split["train"] = variant_split["train"] + list(extra_train_variants)
    extra = set(extra_train_variants)
    wav_root = out.resolve() / "wavs"
    jobs: list[SynthJob] = []
    for lang in langs:
        locale, voice = LANGUAGES[lang]
        pool = load_phrases(locale, english=(lang == "en"))
        if len(pool) < 20:
            raise LreError(f"{lang}: only {len(pool)} usable phrases in Django's '{locale}' "
                           "catalogs")
        phrase_split = partition(pool, seed, f"phrases-{lang}")
        for split in SPLITS:
            split_pool = phrase_split[split]
            for i in range(counts[split]):
                k = (i * train_voices // counts[split] if split == "train" and train_voices
                     else i // utts_per_spk)
                variant, pitch0, rate0, amp0 = speaker_of(seed, split, lang, k,
                                                          variant_split[split])
                spk = speaker_id(lang, variant, pitch0, rate0)
                utt = f"{spk}-{split}{i:05d}"
                rng = keyed_rng(seed, "utt", split, lang, i)
                pitch = int(np.clip(pitch0 + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 99))
                rate = int(rate0 + rng.integers(-RATE_JITTER, RATE_JITTER + 1))
                amplitude = int(amp0 + rng.integers(-AMPLITUDE_JITTER, AMPLITUDE_JITTER + 1))
                word_gap = int(WORD_GAP_CHOICES[int(rng.integers(len(WORD_GAP_CHOICES)))])
                target = float(rng.uniform(min_dur + 0.5, max_dur - 1.0))
                take = min(PHRASES_PER_PLAN, len(split_pool))
                phrases = [split_pool[j] for j in rng.choice(len(split_pool), take, replace=False)]
                jobs.append(SynthJob(
                    utt=utt, spk=spk, lang=lang, split=split, voice=f"{voice}+{variant}",
                    pitch=pitch, rate=rate, amplitude=amplitude, word_gap=word_gap,
                    target=target, phrases=phrases,
                    wav=str(wav_root / split / lang / f"{utt}.wav"),
                    min_dur=min_dur, max_dur=max_dur,
                    noise_seed=int(rng.integers(2**31)),
                    espeak_path=espeak_path if variant in extra else None,
                ))
    return jobs


def _settings_fingerprint(seed: int, min_dur: float, max_dur: float, utts_per_spk: int,
                          espeak_version: str, variants: list[str],
                          train_voice_mix: int = 0) -> dict:
    settings = {
        "seed": seed,
        "min_dur": min_dur,
        "max_dur": max_dur,
        "utts_per_spk": utts_per_spk,
        "espeak_ng": espeak_version,
        "django": django_version(),
        "variants_sha1": hashlib.sha1("\n".join(variants).encode()).hexdigest()[:12],
    }
    if train_voice_mix > 0:  # absent at 0, so corpora made without the option still match
        settings["train_voice_mix"] = train_voice_mix
    return settings


def _check_settings(wav_root: Path, settings: dict) -> None:
    """Refuse to mix WAVs made with other settings into this corpus (ids would clash)."""
    path = wav_root / "synth_settings.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if old != settings:
            diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items()
                             if not old or old.get(k) != v) if isinstance(old, dict) else "?"
            raise LreError(f"{wav_root}: made with other settings ({diff}); use another --out "
                           f"or remove {wav_root}")
    else:
        atomic_write_text(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------ the corpus
def _check_request(langs: list[str], counts: dict[str, int], utts_per_spk: int,
                   min_dur: float, max_dur: float, train_voice_mix: int = 0) -> None:
    """Raise ``LreError`` for an unknown language or impossible durations or counts."""
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        raise LreError(f"unknown language(s) {', '.join(unknown)} for the synthetic corpus "
                       f"(available: {', '.join(sorted(LANGUAGES))})")
    if not 0.5 <= min_dur < max_dur - 2.0:
        raise LreError(f"durations: need 0.5 <= min_dur < max_dur - 2 (got {min_dur}, {max_dur})")
    if utts_per_spk < 1:
        raise LreError(f"utts_per_spk must be >= 1 (got {utts_per_spk})")
    if any(c < 0 for c in counts.values()) or not any(counts.values()):
        raise LreError(f"utterance counts must be >= 0 and not all 0: {counts}")
    if not 0 <= train_voice_mix <= 999:
        raise LreError(f"train_voice_mix must be between 0 and 999 (got {train_voice_mix})")


def _setup_voice_mix(wav_root: Path, seed: int, count: int, data_dir: Path,
                     variants: list[str], voice: str) -> tuple[list[str], str, dict]:
    """Make the ``count`` generated train variants in a copy of espeak-ng-data under
    ``wav_root/espeak-ng`` and check that espeak-ng speaks one; returns (their names, the
    ``--path`` for espeak-ng, what to record in synth_info.json)."""
    train_variants = partition(variants, seed, "variants")["train"]
    texts, ranges, made = make_mix_variants(seed, count, data_dir / "voices" / "!v",
                                            train_variants)
    espeak_root = wav_root / "espeak-ng"
    copy_espeak_data(data_dir, espeak_root)
    install_mix_variants(espeak_root, texts)
    first = next(iter(made))
    check_mix_voice(espeak_root, voice, first, made[first]["base"])
    logger.info("%d generated train variants in %s", count, espeak_root)
    info = {"train_voice_mix": count,
            "formant_freq_ranges": {str(k): list(r) for k, r in enumerate(ranges)},
            "mix_variants": made}
    return list(texts), str(espeak_root), info


def _synthesize_all(jobs: list[SynthJob], nj: int, progress: bool) -> dict[str, SynthResult]:
    """Run every job (in ``nj`` processes when ``nj`` > 1); utt -> result."""
    from tqdm import tqdm

    results: dict[str, SynthResult] = {}
    bar = tqdm(total=len(jobs), desc="synth", unit="utt", disable=not progress)
    if nj <= 1:
        for job in jobs:
            results[job.utt] = synthesize(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=nj) as pool:
            chunk = max(1, min(16, math.ceil(len(jobs) / (nj * 8))))
            for res in pool.map(synthesize, jobs, chunksize=chunk):
                results[res.utt] = res
                bar.update()
    bar.close()
    return results


def _write_sets(out: Path, jobs: list[SynthJob], results: Mapping[str, SynthResult]
                ) -> PrepareReport:
    """Write ``out/<split>`` for each split with jobs; failed utterances are skipped."""
    report = PrepareReport()
    for split in SPLITS:
        split_jobs = [j for j in jobs if j.split == split]
        if not split_jobs:
            continue
        items, skipped = [], []
        for job in split_jobs:
            res = results[job.utt]
            if res.error is not None or res.duration is None:
                skipped.append(Skipped(job.utt, f"{job.wav}: {res.error}"))
                continue
            items.append(Utterance(job.utt, job.spk, job.lang, job.wav, res.duration, res.text))
        report.sets.append(write_set(out / split, items, skipped))
        report.skipped += skipped
    return report


def prepare_synth(
    out: str | os.PathLike,
    langs: list[str] | None = None,
    train_per_lang: int = DEFAULT_COUNTS["train"],
    dev_per_lang: int = DEFAULT_COUNTS["dev"],
    test_per_lang: int = DEFAULT_COUNTS["test"],
    seed: int = 0,
    nj: int = 2,
    utts_per_spk: int = 3,
    min_dur: float = 2.0,
    max_dur: float = 12.0,
    progress: bool = True,
    train_voice_mix: int = 0,
    train_voices: int = 0,
) -> PrepareReport:
    """Synthesize the corpus into ``out/{train,dev,test}`` and ``out/wavs/``.

    Returns the report (sets written, failed utterances). Utterances whose WAV exists are
    reused; ``nj`` espeak-ng processes run at once. ``train_voice_mix`` generated voice
    variants join train's (see ``make_mix_variants``; 0: none). Raises ``LreError`` when
    espeak-ng or Django is missing, a language is unknown, or more than 5% of utterances
    fail.
    """
    out = Path(out)
    langs = list(DEFAULT_LANGS) if not langs else list(dict.fromkeys(langs))
    counts = {"train": train_per_lang, "dev": dev_per_lang, "test": test_per_lang}
    _check_request(langs, counts, utts_per_spk, min_dur, max_dur, train_voice_mix)
    if not 0 <= train_voices <= train_per_lang:
        raise LreError(f"train_voices must be in 0..{train_per_lang} (got {train_voices})")
    version, data_dir = espeak_info()
    known_voices = espeak_voices()
    missing = [lang for lang in langs if LANGUAGES[lang][1] not in known_voices]
    if missing:
        raise LreError(f"espeak-ng {version} has no voice for {', '.join(missing)}")
    variants = espeak_variants(data_dir)
    wav_root = out.resolve() / "wavs"
    wav_root.mkdir(parents=True, exist_ok=True)
    _check_settings(wav_root, _settings_fingerprint(seed, min_dur, max_dur, utts_per_spk,
                                                    version, variants, train_voice_mix))
    mix_names: list[str] = []
    espeak_path, mix_info = None, {}
    if train_voice_mix > 0:
        mix_names, espeak_path, mix_info = _setup_voice_mix(
            wav_root, seed, train_voice_mix, data_dir, variants, LANGUAGES[langs[0]][1])
    jobs = plan_jobs(out, langs, counts, seed, utts_per_spk, min_dur, max_dur, variants,
                     mix_names, espeak_path, train_voices)
    logger.info("synthesizing %d utterances (%s) in %d languages with %d jobs", len(jobs),
                ", ".join(f"{s} {counts[s]}/lang" for s in SPLITS), len(langs), nj)
    start = time.perf_counter()
    results = _synthesize_all(jobs, nj, progress)
    elapsed = time.perf_counter() - start
    made = sum(1 for r in results.values() if not r.reused and r.error is None)
    truncated = sum(1 for r in results.values() if r.truncated)
    logger.info("made %d new utterances, reused %d, in %.1f s (%d cut at a pause)", made,
                sum(r.reused for r in results.values()), elapsed, truncated)

    report = _write_sets(out, jobs, results)
    if len(report.skipped) > 0.05 * len(jobs):
        raise LreError(f"{out}: {len(report.skipped)} of {len(jobs)} utterances failed "
                       f"(first: {report.skipped[0].item}: {report.skipped[0].reason})")
    info = {"settings": json.loads((wav_root / "synth_settings.json").read_text()),
            "langs": langs, "counts": counts, **mix_info, "seconds": round(elapsed, 2),
            "sets": [{k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()}
                     for s in report.sets]}
    atomic_write_text(out / "synth_info.json", json.dumps(info, indent=1) + "\n")
    return report


# ------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="data root: writes OUT/{train,dev,test} "
                        "and OUT/wavs/")
    parser.add_argument("--langs", default=",".join(DEFAULT_LANGS),
                        help=f"comma-separated languages (default: %(default)s; available: "
                             f"{','.join(sorted(LANGUAGES))})")
    parser.add_argument("--train-per-lang", type=int, default=DEFAULT_COUNTS["train"])
    parser.add_argument("--dev-per-lang", type=int, default=DEFAULT_COUNTS["dev"])
    parser.add_argument("--test-per-lang", type=int, default=DEFAULT_COUNTS["test"])
    parser.add_argument("--utts-per-spk", type=int, default=3,
                        help="utterances per synthetic speaker (default %(default)s)")
    parser.add_argument("--min-dur", type=float, default=2.0, help="shortest utterance (s)")
    parser.add_argument("--max-dur", type=float, default=12.0, help="longest utterance (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-voice-mix", type=int, default=0, metavar="N",
                        help="N generated voice variants join train's: a train variant with "
                             "formant frequencies drawn within the train variants' range "
                             "(default %(default)s: none)")
    parser.add_argument("--train-voices", type=int, default=0, metavar="N",
                        help="N speakers per language in train, sharing its utterances (a "
                             "small-corpus setting with --train-per-lang, e.g. 2 voices and "
                             "44 utterances: about 5 minutes); dev and test are unchanged "
                             "(default %(default)s: one speaker per --utts-per-spk)")
    parser.add_argument("--nj", type=int, default=2, help="parallel espeak-ng processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> PrepareReport:
    return prepare_synth(
        args.out,
        langs=[x.strip() for x in args.langs.split(",") if x.strip()],
        train_per_lang=args.train_per_lang,
        dev_per_lang=args.dev_per_lang,
        test_per_lang=args.test_per_lang,
        seed=args.seed,
        nj=args.nj,
        utts_per_spk=args.utts_per_spk,
        min_dur=args.min_dur,
        max_dur=args.max_dur,
        progress=not args.no_progress,
        train_voice_mix=args.train_voice_mix,
        train_voices=args.train_voices,
    )
